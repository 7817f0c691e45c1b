//! The verdict on each VM: a category and the typed reasons that decided
//! it, with their numbers. No text here: the renderers turn a [`Reason`]
//! into words, so a rule never depends on how it is displayed.
//!
//! Categories, first match wins (thresholds are flags, see [`Thresholds`]):
//! INSUFFICIENT_DATA, SILENT, IDLE, OVERSIZED, UNDERSIZED, OK.

use crate::config::{Prices, Thresholds};

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
    },
    /// Nothing to change: the figures an operator looks at first.
    WithinBounds {
        cpu_p95: f64,
        mem_max: f64,
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

/// Judges one VM against the thresholds at `as_of_ms`. SILENT is judged
/// against the VM's most frequent interval, so one datagram claiming a
/// 3600 s interval cannot keep a quiet VM out of it for hours.
pub fn judge(vm: &VmSummary, t: &Thresholds, as_of_ms: u64) -> Verdict {
    if vm.samples < t.min_samples {
        let r = Reason::TooFewSamples {
            samples: vm.samples,
            min: t.min_samples,
        };
        return verdict(Category::InsufficientData, vec![r]);
    }
    let quiet_ms = as_of_ms.saturating_sub(vm.last_seen_ms);
    let limit_ms = u64::from(t.silent_intervals) * u64::from(vm.interval_s) * 1000;
    if !vm.stopped && quiet_ms > limit_ms {
        let r = Reason::Quiet {
            quiet_ms,
            intervals: t.silent_intervals,
            interval_s: vm.interval_s,
        };
        return verdict(Category::Silent, vec![r]);
    }
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
        };
        return verdict(Category::Undersized, vec![r]);
    }
    let r = Reason::WithinBounds {
        cpu_p95: vm.cpu_p95,
        mem_max: vm.mem_max,
    };
    verdict(Category::Ok, vec![r])
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
