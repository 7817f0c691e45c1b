//! The verdict on each VM: a category and the typed reasons that decided
//! it, with their numbers. No text here: the renderers turn a [`Reason`]
//! into words, so a rule never depends on how it is displayed.
//!
//! vmstats' categories, first match wins (thresholds are flags, see
//! [`Thresholds`]): INSUFFICIENT_DATA, SILENT, IDLE, OVERSIZED,
//! UNDERSIZED, OK. The vendors' rules ([`Rule`]; `docs/policies.md` quotes
//! each and says where this data makes us approximate) share the first two
//! gates and then say IDLE, OVERSIZED (Azure only) or OK.

use crate::config::{Policy, Prices, Thresholds};

use super::summary::{DaySummary, VmSummary};

/// The verdict's category.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Category {
    // Declared in the table's order: reclaimable first.
    Idle,
    Oversized,
    Undersized,
    Silent,
    InsufficientData,
    Ok,
}

impl Category {
    pub const ALL: [Category; 6] = [
        Category::Idle,
        Category::Oversized,
        Category::Undersized,
        Category::Silent,
        Category::InsufficientData,
        Category::Ok,
    ];

    /// The name in every output: `IDLE`, `INSUFFICIENT_DATA`, ...
    pub fn name(self) -> &'static str {
        match self {
            Category::InsufficientData => "INSUFFICIENT_DATA",
            Category::Silent => "SILENT",
            Category::Idle => "IDLE",
            Category::Oversized => "OVERSIZED",
            Category::Undersized => "UNDERSIZED",
            Category::Ok => "OK",
        }
    }
}

/// One fact behind a verdict, with the figure and the threshold it met.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reason {
    TooFewSamples {
        samples: u64,
        min: u64,
    },
    /// No datagram for this long, more than `intervals` of the VM's
    /// (most frequent) interval.
    Quiet {
        quiet_ms: u64,
        intervals: u32,
        interval_s: u16,
    },
    CpuP95Below {
        p95: f64,
        limit: f64,
    },
    NetP95Below {
        bps: f64,
        limit: f64,
    },
    DiskP95Below {
        bps: f64,
        limit: f64,
    },
    CpuP99AtMost {
        p99: f64,
        limit: f64,
    },
    MemMaxAtMost {
        max: f64,
        limit: f64,
    },
    CpuP95Above {
        p95: f64,
        limit: f64,
    },
    MemMaxAbove {
        max: f64,
        limit: f64,
        /// Samples at that peak: 1 says one datagram decided it.
        samples: u64,
    },
    /// Nothing to change: the figures an operator looks at first.
    WithinBounds {
        cpu_p95: f64,
        mem_max: f64,
    },
    /// AWS: days with daily average CPU <= 10 % and network I/O <= 5 MB.
    AwsLowDays {
        days: u64,
        of_days: u64,
        min_days: u64,
    },
    /// Azure shutdown: CPU p95 under 3 %...
    AzureCpuP95Below {
        p95: f64,
        limit: f64,
    },
    /// ...the highest CPU of the last 3 days at most 2 %...
    AzureRecentCpuMax {
        max: f64,
        limit: f64,
    },
    /// ...and outbound traffic under 2 % of an assumed 1 Gbit/s link (we
    /// compare rx + tx: an upper bound on outbound).
    AzureNetBelow {
        bps: f64,
        limit: f64,
    },
    /// Azure resize: the load fits a SKU half the size at Azure's targets
    /// (p95 CPU <= 40 %, p99 memory <= 60 % after halving).
    AzureFitsHalf {
        cpu_p95: f64,
        mem_p99: f64,
    },
    /// GCP: shares of samples under its idle lines.
    GcpIdleShares {
        cpu: f64,
        rx: f64,
        tx: f64,
    },
}

impl Reason {
    /// A stable name for machines (the JSON `code`).
    pub fn code(&self) -> &'static str {
        match self {
            Reason::TooFewSamples { .. } => "too_few_samples",
            Reason::Quiet { .. } => "quiet",
            Reason::CpuP95Below { .. } => "cpu_p95_below",
            Reason::NetP95Below { .. } => "net_p95_below",
            Reason::DiskP95Below { .. } => "disk_p95_below",
            Reason::CpuP99AtMost { .. } => "cpu_p99_at_most",
            Reason::MemMaxAtMost { .. } => "mem_max_at_most",
            Reason::CpuP95Above { .. } => "cpu_p95_above",
            Reason::MemMaxAbove { .. } => "mem_max_above",
            Reason::WithinBounds { .. } => "within_bounds",
            Reason::AwsLowDays { .. } => "aws_low_utilization_days",
            Reason::AzureCpuP95Below { .. } => "azure_cpu_p95_below",
            Reason::AzureRecentCpuMax { .. } => "azure_recent_cpu_max",
            Reason::AzureNetBelow { .. } => "azure_network_below",
            Reason::AzureFitsHalf { .. } => "azure_fits_half_size",
            Reason::GcpIdleShares { .. } => "gcp_idle_shares",
        }
    }
}

/// A category and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub category: Category,
    pub reasons: Vec<Reason>,
}

fn verdict(category: Category, reasons: Vec<Reason>) -> Verdict {
    Verdict { category, reasons }
}

/// One policy's rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    Vmstats,
    Aws,
    Azure,
    Gcp,
}

impl Rule {
    pub fn name(self) -> &'static str {
        match self {
            Rule::Vmstats => "vmstats",
            Rule::Aws => "aws",
            Rule::Azure => "azure",
            Rule::Gcp => "gcp",
        }
    }

    /// The rules `--policy` asks for; the first decides the category.
    pub fn of(policy: Policy) -> &'static [Rule] {
        match policy {
            Policy::Vmstats => &[Rule::Vmstats],
            Policy::Aws => &[Rule::Aws],
            Policy::Azure => &[Rule::Azure],
            Policy::Gcp => &[Rule::Gcp],
            Policy::All => &[Rule::Vmstats, Rule::Aws, Rule::Azure, Rule::Gcp],
        }
    }
}

/// Judges one VM by `rule` at `as_of_ms`.
pub fn judge_by(rule: Rule, vm: &VmSummary, t: &Thresholds, as_of_ms: u64) -> Verdict {
    if let Some(v) = gate(vm, t, as_of_ms) {
        return v;
    }
    match rule {
        Rule::Vmstats => vmstats(vm, t),
        Rule::Aws => aws(vm),
        Rule::Azure => azure(vm, as_of_ms),
        Rule::Gcp => gcp(vm),
    }
}

/// Judges one VM by vmstats' rules at `as_of_ms`.
pub fn judge(vm: &VmSummary, t: &Thresholds, as_of_ms: u64) -> Verdict {
    judge_by(Rule::Vmstats, vm, t, as_of_ms)
}

/// Too little data, or quiet: no rule can judge it. SILENT is judged
/// against the VM's most frequent interval, so one datagram claiming a
/// 3600 s interval cannot keep a quiet VM out of it for hours.
fn gate(vm: &VmSummary, t: &Thresholds, as_of_ms: u64) -> Option<Verdict> {
    if vm.samples < t.min_samples {
        let r = Reason::TooFewSamples {
            samples: vm.samples,
            min: t.min_samples,
        };
        return Some(verdict(Category::InsufficientData, vec![r]));
    }
    let quiet_ms = as_of_ms.saturating_sub(vm.last_seen_ms);
    let limit_ms = u64::from(t.silent_intervals) * u64::from(vm.interval_s) * 1000;
    if !vm.stopped && quiet_ms > limit_ms {
        let r = Reason::Quiet {
            quiet_ms,
            intervals: t.silent_intervals,
            interval_s: vm.interval_s,
        };
        return Some(verdict(Category::Silent, vec![r]));
    }
    None
}

fn within_bounds(vm: &VmSummary) -> Verdict {
    let r = Reason::WithinBounds {
        cpu_p95: vm.cpu_p95,
        mem_max: vm.mem_max,
    };
    verdict(Category::Ok, vec![r])
}

fn vmstats(vm: &VmSummary, t: &Thresholds) -> Verdict {
    if vm.cpu_p95 < t.idle_cpu_pct
        && vm.net_p95_bps < t.idle_net_bps
        && vm.disk_p95_bps < t.idle_disk_bps
    {
        return verdict(
            Category::Idle,
            vec![
                Reason::CpuP95Below {
                    p95: vm.cpu_p95,
                    limit: t.idle_cpu_pct,
                },
                Reason::NetP95Below {
                    bps: vm.net_p95_bps,
                    limit: t.idle_net_bps,
                },
                Reason::DiskP95Below {
                    bps: vm.disk_p95_bps,
                    limit: t.idle_disk_bps,
                },
            ],
        );
    }
    if vm.cpu_p99 <= t.oversized_cpu_pct && vm.mem_max <= t.oversized_mem_pct {
        return verdict(
            Category::Oversized,
            vec![
                Reason::CpuP99AtMost {
                    p99: vm.cpu_p99,
                    limit: t.oversized_cpu_pct,
                },
                Reason::MemMaxAtMost {
                    max: vm.mem_max,
                    limit: t.oversized_mem_pct,
                },
            ],
        );
    }
    if vm.cpu_p95 > t.undersized_cpu_pct {
        let r = Reason::CpuP95Above {
            p95: vm.cpu_p95,
            limit: t.undersized_cpu_pct,
        };
        return verdict(Category::Undersized, vec![r]);
    }
    if vm.mem_max > t.undersized_mem_pct {
        let r = Reason::MemMaxAbove {
            max: vm.mem_max,
            limit: t.undersized_mem_pct,
            samples: vm.mem_max_samples,
        };
        return verdict(Category::Undersized, vec![r]);
    }
    within_bounds(vm)
}

/// Trusted Advisor's line: a day whose average CPU is at most 10 % and
/// whose network I/O is at most 5 MB, on 4 days or more.
const AWS_DAY_CPU_PCT: f64 = 10.0;
const AWS_DAY_NET_BYTES: u64 = 5_000_000;
const AWS_MIN_DAYS: u64 = 4;

fn aws(vm: &VmSummary) -> Verdict {
    let low = vm
        .days
        .iter()
        .filter(|d| d.cpu_avg <= AWS_DAY_CPU_PCT && d.net_bytes <= AWS_DAY_NET_BYTES)
        .count() as u64;
    if low >= AWS_MIN_DAYS {
        let r = Reason::AwsLowDays {
            days: low,
            of_days: vm.days.len() as u64,
            min_days: AWS_MIN_DAYS,
        };
        return verdict(Category::Idle, vec![r]);
    }
    within_bounds(vm)
}

/// Azure Advisor's shutdown lines, and the link speed its outbound share
/// is taken of (the VM's own is not in the datagram).
const AZURE_CPU_P95_PCT: f64 = 3.0;
const AZURE_RECENT_CPU_PCT: f64 = 2.0;
const AZURE_RECENT_DAYS: u64 = 3;
const AZURE_ASSUMED_LINK_BPS: f64 = 125_000_000.0;
const AZURE_NET_SHARE: f64 = 0.02;
/// Its resize targets for user-facing load, met after halving the VM.
const AZURE_TARGET_CPU_P95: f64 = 40.0;
const AZURE_TARGET_MEM_P99: f64 = 60.0;

fn azure(vm: &VmSummary, as_of_ms: u64) -> Verdict {
    let today = as_of_ms / super::summary::DAY_MS;
    let recent_max = vm
        .days
        .iter()
        .filter(|d| d.day + AZURE_RECENT_DAYS > today)
        .map(|d| d.cpu_max)
        .fold(0.0, f64::max);
    let net_limit = AZURE_ASSUMED_LINK_BPS * AZURE_NET_SHARE;
    if vm.cpu_p95 < AZURE_CPU_P95_PCT
        && recent_max <= AZURE_RECENT_CPU_PCT
        && vm.net_p95_bps < net_limit
    {
        return verdict(
            Category::Idle,
            vec![
                Reason::AzureCpuP95Below {
                    p95: vm.cpu_p95,
                    limit: AZURE_CPU_P95_PCT,
                },
                Reason::AzureRecentCpuMax {
                    max: recent_max,
                    limit: AZURE_RECENT_CPU_PCT,
                },
                Reason::AzureNetBelow {
                    bps: vm.net_p95_bps,
                    limit: net_limit,
                },
            ],
        );
    }
    // Half the vCPUs doubles the CPU share; half the memory doubles its.
    if vm.vcpus >= 2
        && vm.cpu_p95 * 2.0 <= AZURE_TARGET_CPU_P95
        && vm.mem_p99 * 2.0 <= AZURE_TARGET_MEM_P99
    {
        let r = Reason::AzureFitsHalf {
            cpu_p95: vm.cpu_p95,
            mem_p99: vm.mem_p99,
        };
        return verdict(Category::Oversized, vec![r]);
    }
    within_bounds(vm)
}

/// Google's idle VM recommender: CPU under 0.03 vCPU for 97 % of the time,
/// received under 2,000 B/s and sent under 1,000 B/s for 95 %.
const GCP_CPU_SHARE: f64 = 0.97;
const GCP_NET_SHARE: f64 = 0.95;

fn gcp(vm: &VmSummary) -> Verdict {
    let n = vm.samples.max(1) as f64;
    let (cpu, rx, tx) = (
        vm.gcp_cpu_low as f64 / n,
        vm.gcp_rx_low as f64 / n,
        vm.gcp_tx_low as f64 / n,
    );
    if cpu >= GCP_CPU_SHARE && rx >= GCP_NET_SHARE && tx >= GCP_NET_SHARE {
        let r = Reason::GcpIdleShares { cpu, rx, tx };
        return verdict(Category::Idle, vec![r]);
    }
    within_bounds(vm)
}

/// What a verdict would save a month at `prices`: all of an IDLE VM (it can
/// go), half of an OVERSIZED one (the advice is to halve it), nothing
/// otherwise.
pub fn monthly_savings(vm: &VmSummary, category: Category, prices: Prices) -> f64 {
    let share = match category {
        Category::Idle => 1.0,
        Category::Oversized => 0.5,
        _ => return 0.0,
    };
    let cost =
        f64::from(vm.vcpus) * prices.vcpu_month + f64::from(vm.mem_mib) / 1024.0 * prices.gib_month;
    cost * share
}

/// Whether a day looks idle by the IDLE thresholds: its CPU p95 and its
/// average network and disk rates under them.
pub fn idle_day(day: &DaySummary, t: &Thresholds) -> bool {
    day.cpu_p95 < t.idle_cpu_pct
        && day.net_bps() < t.idle_net_bps
        && day.disk_bps() < t.idle_disk_bps
}
