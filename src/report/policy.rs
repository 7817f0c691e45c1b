//! The verdict on each VM: a category and the typed reasons that decided
//! it, with their numbers. No text here: the renderers turn a [`Reason`]
//! into words, so a rule never depends on how it is displayed.
//!
//! vmstats' categories, first match wins (thresholds are flags, see
//! [`Thresholds`]): INSUFFICIENT_DATA, SILENT, IDLE, then by the VM's
//! recommended size ([`rightsize`]): UNDERSIZED when today's size does not
//! hold the need, OVERSIZED when the target is another size, else OK. The
//! vendors' rules ([`Rule`]; `docs/policies.md` quotes each and says where
//! this data makes us approximate) share the first two gates, then apply
//! their own idle line and (AWS and Azure) their own sizing figures.

use crate::config::{Policy, Thresholds};

use super::rightsize::{self, Recommendation, Sizer};
use super::settings::Settings;
use super::summary::{self, DaySummary, VmSummary};

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
    /// CPU's need: vCPUs busy at `percentile` (or the trend's projection,
    /// when higher) times `factor`, and the vCPUs of the target.
    CpuNeed {
        percentile: f64,
        observed: f64,
        projected: Option<f64>,
        factor: f64,
        need: f64,
        target: Option<u32>,
    },
    /// Memory's: the peak in use, GiB (or the projection), times `factor`.
    MemNeed {
        observed: f64,
        projected: Option<f64>,
        factor: f64,
        need: f64,
        target: Option<f64>,
        /// One sample alone holds the peak and decides the target.
        alone: bool,
    },
    /// The daily demand grows: the need is the projection at the horizon.
    Trend {
        cpu_vcpus_per_day: f64,
        mem_gib_per_day: f64,
        horizon_days: f64,
    },
    /// No catalog entry holds the need.
    NoFit,
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
            Reason::CpuNeed { .. } => "cpu_need",
            Reason::MemNeed { .. } => "mem_need",
            Reason::Trend { .. } => "trend",
            Reason::NoFit => "no_fit",
            Reason::WithinBounds { .. } => "within_bounds",
            Reason::AwsLowDays { .. } => "aws_low_utilization_days",
            Reason::AzureCpuP95Below { .. } => "azure_cpu_p95_below",
            Reason::AzureRecentCpuMax { .. } => "azure_recent_cpu_max",
            Reason::AzureNetBelow { .. } => "azure_network_below",
            Reason::GcpIdleShares { .. } => "gcp_idle_shares",
        }
    }
}

/// A category, why, and the size the rule recommends (for every VM past
/// the gates; an IDLE VM's is what it would need were it kept).
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub category: Category,
    pub reasons: Vec<Reason>,
    pub recommendation: Option<Recommendation>,
}

impl Verdict {
    /// The size the verdict moves the VM to: its target, when it is
    /// OVERSIZED or UNDERSIZED and the target is another size (an IDLE VM
    /// goes rather than moves).
    pub fn move_target(&self) -> Option<&rightsize::Size> {
        if !matches!(self.category, Category::Oversized | Category::Undersized) {
            return None;
        }
        let rec = self.recommendation.as_ref()?;
        rec.target.as_ref().filter(|_| rec.moves())
    }
}

fn verdict(category: Category, reasons: Vec<Reason>) -> Verdict {
    Verdict {
        category,
        reasons,
        recommendation: None,
    }
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

    /// How the rule sizes a VM; `None`: it only finds idle ones.
    pub fn sizer(self, s: &Settings) -> Option<Sizer> {
        match self {
            Rule::Vmstats => Some(Sizer::vmstats(&s.rightsizing)),
            Rule::Aws => Some(Sizer::AWS),
            Rule::Azure => Some(Sizer::AZURE),
            Rule::Gcp => None,
        }
    }
}

/// Judges one VM by `rule` at `as_of_ms`.
pub fn judge_by(rule: Rule, vm: &VmSummary, s: &Settings, as_of_ms: u64) -> Verdict {
    let t = &s.thresholds;
    if let Some(v) = gate(vm, t, as_of_ms) {
        return v;
    }
    let idle = match rule {
        Rule::Vmstats => vmstats_idle(vm, t),
        Rule::Aws => aws_idle(vm),
        Rule::Azure => azure_idle(vm, as_of_ms),
        Rule::Gcp => gcp_idle(vm),
    };
    let Some(sizer) = rule.sizer(s) else {
        return idle.unwrap_or_else(|| within_bounds(vm));
    };
    let rec = rightsize::recommend(vm, &sizer, &s.prices, as_of_ms);
    let mut v = idle.unwrap_or_else(|| sized(&rec, &sizer));
    v.recommendation = Some(rec);
    v
}

/// Judges one VM by vmstats' rules at `as_of_ms`.
pub fn judge(vm: &VmSummary, s: &Settings, as_of_ms: u64) -> Verdict {
    judge_by(Rule::Vmstats, vm, s, as_of_ms)
}

/// The category a recommendation gives, and the figures that decided it.
fn sized(rec: &Recommendation, sizer: &Sizer) -> Verdict {
    let category = if rec.grows() {
        Category::Undersized
    } else if rec.moves() {
        Category::Oversized
    } else {
        Category::Ok
    };
    let target = rec.target.as_ref();
    let mut reasons = vec![
        Reason::CpuNeed {
            percentile: sizer.cpu_percentile,
            observed: rec.cpu.observed,
            projected: rec.cpu.projected,
            factor: rec.cpu.factor,
            need: rec.cpu.need,
            target: target.map(|t| t.vcpus),
        },
        Reason::MemNeed {
            observed: rec.mem.observed,
            projected: rec.mem.projected,
            factor: rec.mem.factor,
            need: rec.mem.need,
            target: target.map(|t| t.mem_gib),
            alone: rec.mem_peak_alone,
        },
    ];
    if let Some(t) = rec.trend.filter(|t| t.cpu_decided || t.mem_decided) {
        reasons.push(Reason::Trend {
            cpu_vcpus_per_day: t.cpu_vcpus_per_day,
            mem_gib_per_day: t.mem_gib_per_day,
            horizon_days: t.horizon_days,
        });
    }
    if target.is_none() {
        reasons.push(Reason::NoFit);
    }
    verdict(category, reasons)
}

/// What the rules of `s` ask of a VM's demand when it is summarized at
/// `as_of_ms`: the sizes each rule will show, so their risk is counted.
pub struct Probe<'a> {
    pub settings: &'a Settings,
    pub as_of_ms: u64,
}

impl summary::Probe for Probe<'_> {
    fn cpu_percentile(&self) -> f64 {
        self.settings.rightsizing.cpu_percentile
    }

    fn sizes(&self, vm: &VmSummary) -> Vec<(u32, f64)> {
        let s = self.settings;
        Rule::of(s.policy)
            .iter()
            .filter_map(|r| r.sizer(s))
            .flat_map(|sizer| rightsize::sizes_shown(vm, &sizer, &s.prices, self.as_of_ms))
            .collect()
    }
}

/// Too little data, or quiet: no rule can judge it. SILENT is judged
/// against the VM's most frequent interval, so one datagram claiming a
/// 3600 s interval cannot keep a quiet VM out of it for hours.
fn gate(vm: &VmSummary, t: &Thresholds, as_of_ms: u64) -> Option<Verdict> {
    if vm.datagrams.samples < t.min_samples {
        let r = Reason::TooFewSamples {
            samples: vm.datagrams.samples,
            min: t.min_samples,
        };
        return Some(verdict(Category::InsufficientData, vec![r]));
    }
    let quiet_ms = as_of_ms.saturating_sub(vm.last_seen_ms);
    let limit_ms = u64::from(t.silent_intervals) * u64::from(vm.size.interval_s) * 1000;
    if !vm.stopped && quiet_ms > limit_ms {
        let r = Reason::Quiet {
            quiet_ms,
            intervals: t.silent_intervals,
            interval_s: vm.size.interval_s,
        };
        return Some(verdict(Category::Silent, vec![r]));
    }
    None
}

fn within_bounds(vm: &VmSummary) -> Verdict {
    let r = Reason::WithinBounds {
        cpu_p95: vm.utilization.cpu_p95,
        mem_max: vm.utilization.mem_max,
    };
    verdict(Category::Ok, vec![r])
}

/// vmstats' idle line: CPU, network and disk p95 all under theirs.
fn vmstats_idle(vm: &VmSummary, t: &Thresholds) -> Option<Verdict> {
    let u = &vm.utilization;
    let idle = u.cpu_p95 < t.idle_cpu_pct
        && u.net_p95_bps < t.idle_net_bps
        && u.disk_p95_bps < t.idle_disk_bps;
    idle.then(|| {
        verdict(
            Category::Idle,
            vec![
                Reason::CpuP95Below {
                    p95: u.cpu_p95,
                    limit: t.idle_cpu_pct,
                },
                Reason::NetP95Below {
                    bps: u.net_p95_bps,
                    limit: t.idle_net_bps,
                },
                Reason::DiskP95Below {
                    bps: u.disk_p95_bps,
                    limit: t.idle_disk_bps,
                },
            ],
        )
    })
}

/// Trusted Advisor's line: a day whose average CPU is at most 10 % and
/// whose network I/O is at most 5 MB, on 4 days or more.
const AWS_DAY_CPU_PCT: f64 = 10.0;
const AWS_DAY_NET_BYTES: u64 = 5_000_000;
const AWS_MIN_DAYS: u64 = 4;

fn aws_idle(vm: &VmSummary) -> Option<Verdict> {
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
        return Some(verdict(Category::Idle, vec![r]));
    }
    None
}

/// Azure Advisor's shutdown lines, and the link speed its outbound share
/// is taken of (the VM's own is not in the datagram).
const AZURE_CPU_P95_PCT: f64 = 3.0;
const AZURE_RECENT_CPU_PCT: f64 = 2.0;
const AZURE_RECENT_DAYS: u64 = 3;
const AZURE_ASSUMED_LINK_BPS: f64 = 125_000_000.0;
const AZURE_NET_SHARE: f64 = 0.02;

fn azure_idle(vm: &VmSummary, as_of_ms: u64) -> Option<Verdict> {
    let today = as_of_ms / summary::DAY_MS;
    let recent_max = vm
        .days
        .iter()
        .filter(|d| d.day + AZURE_RECENT_DAYS > today)
        .map(|d| d.cpu_max)
        .fold(0.0, f64::max);
    let net_limit = AZURE_ASSUMED_LINK_BPS * AZURE_NET_SHARE;
    if vm.utilization.cpu_p95 < AZURE_CPU_P95_PCT
        && recent_max <= AZURE_RECENT_CPU_PCT
        && vm.utilization.net_p95_bps < net_limit
    {
        return Some(verdict(
            Category::Idle,
            vec![
                Reason::AzureCpuP95Below {
                    p95: vm.utilization.cpu_p95,
                    limit: AZURE_CPU_P95_PCT,
                },
                Reason::AzureRecentCpuMax {
                    max: recent_max,
                    limit: AZURE_RECENT_CPU_PCT,
                },
                Reason::AzureNetBelow {
                    bps: vm.utilization.net_p95_bps,
                    limit: net_limit,
                },
            ],
        ));
    }
    None
}

/// Google's idle VM recommender: CPU under 0.03 vCPU for 97 % of the time,
/// received under 2,000 B/s and sent under 1,000 B/s for 95 %.
const GCP_CPU_SHARE: f64 = 0.97;
const GCP_NET_SHARE: f64 = 0.95;

fn gcp_idle(vm: &VmSummary) -> Option<Verdict> {
    let n = vm.datagrams.samples.max(1) as f64;
    let (cpu, rx, tx) = (
        vm.gcp_cpu_low as f64 / n,
        vm.gcp_rx_low as f64 / n,
        vm.gcp_tx_low as f64 / n,
    );
    if cpu >= GCP_CPU_SHARE && rx >= GCP_NET_SHARE && tx >= GCP_NET_SHARE {
        let r = Reason::GcpIdleShares { cpu, rx, tx };
        return Some(verdict(Category::Idle, vec![r]));
    }
    None
}

/// What a verdict would save a month: all of an IDLE VM's price (it can
/// go), today's price minus the target's otherwise (negative: what
/// growing costs); `None` where a price is unknown.
pub fn monthly_savings(v: &Verdict) -> Option<f64> {
    let rec = v.recommendation.as_ref()?;
    match v.category {
        Category::Idle => rec.current.price_month,
        Category::Oversized | Category::Undersized => rec.saving(),
        _ => Some(0.0),
    }
}

/// Whether a day looks idle by the IDLE thresholds: its CPU p95 and its
/// average network and disk rates under them.
pub fn idle_day(day: &DaySummary, t: &Thresholds) -> bool {
    day.cpu_p95 < t.idle_cpu_pct
        && day.net_bps() < t.idle_net_bps
        && day.disk_bps() < t.idle_disk_bps
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Policy, Prices, ReportFormat};
    use crate::report::fixtures::*;
    use crate::report::policy;
    use crate::report::render::{reasons_text, render, summary_line};
    use crate::report::{Category, Report};
    use crate::wire;

    #[test]
    fn too_few_samples_is_insufficient_data() {
        let (c, why) = category_of(&steady(4, 100, 1000, 0, 0));
        assert_eq!(c, Category::InsufficientData);
        assert_eq!(why, "4 samples < 5");
    }

    #[test]
    fn quiet_without_final_flag_is_silent() {
        let mut rows = steady(10, 5000, 5000, 10_000, 0);
        for r in &mut rows {
            r.recv_ms = AS_OF - 181_000;
        }
        let (c, why) = category_of(&rows);
        assert_eq!(c, Category::Silent);
        assert_eq!(why, "nothing for 181 s > 3 x 60 s interval");
        // The same VM that said goodbye is judged on its data.
        rows.last_mut().unwrap().stat.flags = wire::FLAG_FINAL;
        assert_eq!(category_of(&rows).0, Category::Ok);
    }

    #[test]
    fn low_cpu_network_and_disk_is_idle() {
        let (c, why) = category_of(&steady(20, 310, 6000, 410, 0));
        assert_eq!(c, Category::Idle);
        assert_eq!(why, "p95 cpu 3.1% < 10%, net 410 B/s, disk 0 B/s");
    }

    #[test]
    fn idle_cpu_with_traffic_is_not_idle() {
        // CPU low, but a 5 kB/s network: a quiet server, not an idle one.
        let (c, _) = category_of(&steady(20, 310, 2000, 5000, 0));
        assert_eq!(c, Category::Oversized);
        // Or a disk at 200 kB/s: the VM is kept, but at a smaller size.
        let (c, why) = category_of(&steady(20, 310, 6000, 0, 200_000));
        assert_eq!(c, Category::Oversized);
        assert_eq!(
            why,
            "cpu p99.5 0.25 vCPUs x 1.2 = 0.30 -> 1 vCPU, mem max 9.6 GiB x 1.2 = 11.5 -> 16 GiB"
        );
    }

    #[test]
    fn memory_does_not_decide_idle() {
        assert_eq!(category_of(&steady(20, 100, 9900, 0, 0)).0, Category::Idle);
    }

    #[test]
    fn low_cpu_and_memory_is_oversized() {
        let (c, why) = category_of(&steady(20, 2200, 3100, 50_000, 0));
        assert_eq!(c, Category::Oversized);
        // 22 % of 8 vCPUs and 31 % of 16 GiB, with 20 % headroom each.
        assert_eq!(
            why,
            "cpu p99.5 1.8 vCPUs x 1.2 = 2.1 -> 4 vCPUs, mem max 5.0 GiB x 1.2 = 6.0 -> 8 GiB"
        );
    }

    #[test]
    fn busy_cpu_or_full_memory_is_undersized() {
        let (c, why) = category_of(&steady(20, 9100, 5000, 50_000, 0));
        assert_eq!(
            (c, why.as_str()),
            (
                Category::Undersized,
                "cpu p99.5 7.3 vCPUs x 1.2 = 8.7 -> 16 vCPUs, mem max 8.0 GiB x 1.2 = 9.6 -> 16 GiB"
            )
        );
        // One row's peak decides, and the reason says it rests on one
        // sample (it could be one forged version 1 datagram).
        let mut rows = steady(20, 5000, 5000, 50_000, 0);
        rows[3].stat.mem_pct_x100 = 9500;
        let (c, why) = category_of(&rows);
        assert_eq!(
            (c, why.as_str()),
            (
                Category::Undersized,
                "cpu p99.5 4.0 vCPUs x 1.2 = 4.8 -> 8 vCPUs, mem max 15.2 GiB (one sample) x 1.2 = 18.2 -> 32 GiB"
            )
        );
        rows[7].stat.mem_pct_x100 = 9500;
        let (c, why) = category_of(&rows);
        assert_eq!(c, Category::Undersized);
        assert!(
            why.ends_with("mem max 15.2 GiB x 1.2 = 18.2 -> 32 GiB"),
            "{why}"
        );
    }

    #[test]
    fn middling_is_ok() {
        let (c, why) = category_of(&steady(20, 5000, 6000, 50_000, 0));
        assert_eq!(
            (c, why.as_str()),
            (
                Category::Ok,
                "cpu p99.5 4.0 vCPUs x 1.2 = 4.8 -> 8 vCPUs, mem max 9.6 GiB x 1.2 = 11.5 -> 16 GiB"
            )
        );
    }

    #[test]
    fn a_spike_in_the_top_five_percent_does_not_stop_idle() {
        let mut rows = steady(40, 200, 5000, 100, 0);
        rows[10].stat.cpu_pct_x100 = 9900;
        rows[20].stat.cpu_pct_x100 = 9900;
        let vm = summary_of(&rows);
        assert_eq!(vm.utilization.cpu_max, 99.0);
        assert_eq!(vm.utilization.cpu_p95, 2.0);
        let v = policy::judge(&vm, &settings(Policy::Vmstats, None), AS_OF);
        assert_eq!(v.category, Category::Idle);
    }

    // Section 6 of the report issue: one spoofed datagram must not change
    // a verdict.

    #[test]
    fn one_datagram_claiming_a_long_interval_does_not_keep_a_vm_from_silent() {
        let mut rows = steady(10, 5000, 5000, 10_000, 0);
        for r in &mut rows {
            r.recv_ms = AS_OF - 181_000;
        }
        rows[9].stat.interval_s = 3600;
        let vm = summary_of(&rows);
        assert_eq!(vm.size.interval_s, 60, "the most frequent interval");
        assert_eq!(category_of(&rows).0, Category::Silent);
    }

    #[test]
    fn a_final_flag_from_another_boot_does_not_count() {
        let mut rows = steady(10, 5000, 5000, 10_000, 0);
        for r in &mut rows {
            r.recv_ms = AS_OF - 181_000;
        }
        let mut spoof = row(10, 5000, 5000, 10_000, 0);
        spoof.recv_ms = AS_OF - 181_000;
        spoof.stat.flags = wire::FLAG_FINAL;
        spoof.stat.boot_id = 0xBAD;
        rows.push(spoof);
        assert!(!summary_of(&rows).stopped);
        assert_eq!(category_of(&rows).0, Category::Silent);
    }

    #[test]
    fn savings_are_all_of_an_idle_vm_and_the_step_down_of_an_oversized_one() {
        let idle = summary_of(&steady(20, 310, 6000, 410, 0));
        let mut over = summary_of(&steady(20, 2200, 3100, 50_000, 0));
        over.ip = "127.1.0.2".parse().unwrap();
        let mut ok = summary_of(&steady(20, 5000, 6000, 50_000, 0));
        ok.ip = "127.1.0.3".parse().unwrap();
        // 8 vCPUs at 20 and 16 GiB at 2.5 a month: 200 a VM; the oversized
        // one fits 4 vCPUs and 8 GiB, 100.
        let prices = Prices {
            vcpu_month: 20.0,
            gib_month: 2.5,
        };
        let r = Report::new(
            vec![idle, over, ok],
            &settings(Policy::Vmstats, Some(prices)),
            window(),
        );
        let saved: Vec<Option<f64>> = r.vms.iter().map(|v| v.savings).collect();
        assert_eq!(saved, [Some(200.0), Some(100.0), Some(0.0)]);
        assert_eq!(r.totals().savings, 300.0);
        assert!(
            summary_line(&r).ends_with("; estimated savings 300.00 a month"),
            "{}",
            summary_line(&r)
        );
        let table = render(&r, ReportFormat::Table);
        assert!(
            table.contains("  8 vCPU/16 GiB -> 4 vCPU/8 GiB, risk very low, saves 100.00  "),
            "{table}"
        );
        assert!(table.contains("  8 vCPU/16 GiB -> reclaim, saves 200.00  "));
        let json: serde_json::Value =
            serde_json::from_str(&render(&r, ReportFormat::Json)).unwrap();
        assert_eq!(json["vms"][0]["estimated_monthly_savings"], 200.0);
        assert_eq!(json["summary"]["estimated_monthly_savings"], 300.0);
        // Without prices, no money anywhere.
        let plain = sample_report();
        assert!(!render(&plain, ReportFormat::Table).contains("saves"));
        let json: serde_json::Value =
            serde_json::from_str(&render(&plain, ReportFormat::Json)).unwrap();
        assert!(json["vms"][0]["estimated_monthly_savings"].is_null());
    }

    #[test]
    fn aws_wants_four_low_days_of_average_cpu_and_network() {
        // Four quiet days (5 % CPU, 100 kB a day), ten busy ones.
        let quiet = |d: u64| {
            if d < 4 {
                (500, 2_000, 2_000)
            } else {
                (6000, 1_000_000, 1_000_000)
            }
        };
        let (c, reasons) = finding(Rule::Aws, &fortnight(quiet));
        assert_eq!(c, Category::Idle);
        assert_eq!(
            reasons,
            [Reason::AwsLowDays {
                days: 4,
                of_days: 14,
                min_days: 4
            }]
        );
        let three = |d: u64| {
            if d < 3 {
                (500, 2_000, 2_000)
            } else {
                (6000, 1_000_000, 1_000_000)
            }
        };
        // Not idle, so Compute Optimizer sizes it: 60 % of 4 vCPUs is
        // 2.4 busy (x 1.2 = 2.9, so 4 stay), but 3.2 GiB of 16 fits in 4.
        let (c, reasons) = finding(Rule::Aws, &fortnight(three));
        assert_eq!(c, Category::Oversized);
        assert_eq!(
            reasons_text(&reasons),
            "cpu p99.5 2.4 vCPUs x 1.2 = 2.9 -> 4 vCPUs, mem max 3.2 GiB x 1.2 = 3.8 -> 4 GiB"
        );
        // 5 MB a day is the line: 24 rows of 250 kB are 6 MB, not low.
        let chatty = |_| (500, 125_000, 125_000);
        assert_ne!(finding(Rule::Aws, &fortnight(chatty)).0, Category::Idle);
    }

    #[test]
    fn azure_wants_p95_under_3_and_a_quiet_last_three_days() {
        let idle = |_| (100, 1_000, 1_000);
        let (c, reasons) = finding(Rule::Azure, &fortnight(idle));
        assert_eq!(c, Category::Idle);
        assert_eq!(reasons.len(), 3);
        // A 2.5 % day yesterday (7 % of the samples, so the p95): under
        // the 3 % line, over the 2 % one of the last three days. Azure
        // sizes it instead: 0.1 vCPU at p95 is 40 % of 0.25, and 3.2 GiB
        // at its peak 60 % of 5.3.
        let busy_yesterday = |d: u64| {
            if d == 12 {
                (250, 1_000, 1_000)
            } else {
                (100, 1_000, 1_000)
            }
        };
        let (c, reasons) = finding(Rule::Azure, &fortnight(busy_yesterday));
        assert_eq!(c, Category::Oversized);
        assert_eq!(
            reasons_text(&reasons),
            "cpu p95 0.10 vCPUs x 2.5 = 0.25 -> 1 vCPU, mem max 3.2 GiB x 1.67 = 5.3 -> 8 GiB"
        );
        // 2 vCPUs busy is 40 % of 5: more than today's 4.
        assert_eq!(
            finding(Rule::Azure, &fortnight(|_| (5000, 1_000, 1_000))).0,
            Category::Undersized
        );
    }

    #[test]
    fn gcp_counts_vcpus_and_each_direction_of_traffic() {
        // 0.5 % of 4 vCPUs is 0.02 vCPU: idle by Google's line.
        let (c, _) = finding(Rule::Gcp, &fortnight(|_| (50, 3_600_000, 360_000)));
        assert_eq!(c, Category::Idle);
        // 1 % of 4 vCPUs is 0.04 vCPU: not idle for Google, yet idle for
        // vmstats (p95 1 % < 10 %, 1.1 kB/s): the policies disagree.
        let vm = fortnight(|_| (100, 3_600_000, 360_000));
        assert_eq!(finding(Rule::Gcp, &vm).0, Category::Ok);
        assert_eq!(finding(Rule::Vmstats, &vm).0, Category::Idle);
        // Sent traffic has its own line: 1,000 B/s.
        let sending = fortnight(|_| (50, 3_600_000, 7_200_000));
        assert_eq!(finding(Rule::Gcp, &sending).0, Category::Ok);
    }
}
