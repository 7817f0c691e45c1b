//! One UTC day of a VM: its samples, CPU counts in 0.1 % steps (a day in
//! 4 KB), peaks and bytes, for the report's daily figures and charts, and
//! the day's demand, which the rightsizing trend is fitted to.

use std::collections::BTreeMap;

use crate::wire::MAX_PCT_X100;

/// One UTC day of a VM.
#[derive(Debug, Clone, PartialEq)]
pub struct DaySummary {
    /// Days since the Unix epoch.
    pub day: u64,
    pub samples: u64,
    pub cpu_avg: f64,
    /// Within 0.1 point (counts per 0.1 % step).
    pub cpu_p95: f64,
    pub cpu_max: f64,
    pub mem_max: f64,
    pub net_bytes: u64,
    pub disk_bytes: u64,
    /// Seconds the day's samples cover (samples x their intervals), which
    /// turns its byte counts into rates.
    pub covered_s: u64,
    /// vCPUs busy at the report's CPU percentile: the day's percentile of
    /// CPU (within 0.1 point) times the most vCPUs it ran with (exact for
    /// a day without a resize; a resize day is taken at its larger size).
    pub cpu_demand: f64,
    /// The most memory in use, GiB (exact).
    pub mem_in_use_gib: f64,
}

impl DaySummary {
    pub fn net_bps(&self) -> f64 {
        self.net_bytes as f64 / self.covered_s.max(1) as f64
    }

    pub fn disk_bps(&self) -> f64 {
        self.disk_bytes as f64 / self.covered_s.max(1) as f64
    }
}

/// Buckets of a day's CPU counts: 0.1 % steps keep a day at 4 KB.
pub(super) const DAY_CPU_BUCKETS: usize = 1001;

/// A VM's days, their accumulators kept for the next VM when it is done:
/// a new day's 4 kB of counts, zeroed by the allocator, took fresh pages
/// for each of a million VMs (a sixteenth of a cached report).
#[derive(Default)]
pub(super) struct Days {
    by_day: BTreeMap<u64, DayAcc>,
    spare: Vec<DayAcc>,
}

impl Days {
    pub(super) fn of(&mut self, day: u64) -> &mut DayAcc {
        let spare = &mut self.spare;
        self.by_day
            .entry(day)
            .or_insert_with(|| spare.pop().unwrap_or_else(DayAcc::new))
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&u64, &DayAcc)> {
        self.by_day.iter()
    }

    pub(super) fn len(&self) -> usize {
        self.by_day.len()
    }

    pub(super) fn clear(&mut self) {
        while let Some((_, mut acc)) = self.by_day.pop_first() {
            acc.clear();
            self.spare.push(acc);
        }
    }
}

pub(super) struct DayAcc {
    pub(super) samples: u64,
    pub(super) cpu: Box<[u32]>,
    pub(super) cpu_sum: u64,
    pub(super) cpu_max: u16,
    pub(super) mem_max: u16,
    pub(super) net_bytes: u64,
    pub(super) disk_bytes: u64,
    pub(super) covered_s: u64,
    pub(super) vcpus: u16,
    /// Memory in use at its peak, in hundredths of a percent of a MiB.
    pub(super) mem_in_use_x100: u64,
}

impl DayAcc {
    pub(super) fn new() -> DayAcc {
        DayAcc::with_counts(vec![0; DAY_CPU_BUCKETS].into_boxed_slice())
    }

    /// A day of no samples over `cpu`, all zero.
    fn with_counts(cpu: Box<[u32]>) -> DayAcc {
        DayAcc {
            samples: 0,
            cpu,
            cpu_sum: 0,
            cpu_max: 0,
            mem_max: 0,
            net_bytes: 0,
            disk_bytes: 0,
            covered_s: 0,
            vcpus: 0,
            mem_in_use_x100: 0,
        }
    }

    fn clear(&mut self) {
        let mut cpu = std::mem::take(&mut self.cpu);
        cpu.fill(0);
        *self = DayAcc::with_counts(cpu);
    }

    /// One row's figures; `secs` is its interval.
    pub(super) fn add(&mut self, s: &crate::wire::Stat, secs: u64) {
        self.samples += 1;
        self.cpu[usize::from(s.cpu_pct_x100.min(MAX_PCT_X100) / 10)] += 1;
        self.cpu_sum += u64::from(s.cpu_pct_x100);
        self.cpu_max = self.cpu_max.max(s.cpu_pct_x100);
        self.mem_max = self.mem_max.max(s.mem_pct_x100);
        self.net_bytes = self
            .net_bytes
            .saturating_add(s.net_rx_bytes.saturating_add(s.net_tx_bytes));
        self.disk_bytes = self
            .disk_bytes
            .saturating_add(s.disk_read_bytes.saturating_add(s.disk_write_bytes));
        self.covered_s = self.covered_s.saturating_add(secs);
        self.vcpus = self.vcpus.max(s.vcpus);
        self.mem_in_use_x100 = self
            .mem_in_use_x100
            .max(u64::from(s.mem_pct_x100) * u64::from(s.mem_mib));
    }

    /// The day's nearest-rank CPU percentile in percent (0.1 % steps) at
    /// `p`. The report asks for high ones (p95, p99.5), so the buckets are
    /// walked down from the day's peak: a few of them, not a thousand.
    fn cpu_percentile(&self, p: f64) -> f64 {
        // The value at rank r is the highest bucket with at least
        // samples - r + 1 samples at or above it.
        let rank = super::counts::nearest_rank(p, self.samples);
        let want = self.samples + 1 - rank.min(self.samples);
        let top = usize::from(self.cpu_max.min(MAX_PCT_X100) / 10);
        let mut seen = 0u64;
        let bucket = self.cpu[..=top].iter().rposition(|c| {
            seen += u64::from(*c);
            seen >= want
        });
        bucket.unwrap_or(0) as f64 / 10.0
    }

    /// The day's figures; its demand at `cpu_percentile`.
    pub(super) fn finish(&self, day: u64, cpu_percentile: f64) -> DaySummary {
        DaySummary {
            day,
            samples: self.samples,
            cpu_avg: self.cpu_sum as f64 / self.samples.max(1) as f64 / 100.0,
            cpu_p95: self.cpu_percentile(95.0),
            cpu_max: f64::from(self.cpu_max) / 100.0,
            mem_max: f64::from(self.mem_max) / 100.0,
            net_bytes: self.net_bytes,
            disk_bytes: self.disk_bytes,
            covered_s: self.covered_s,
            cpu_demand: self.cpu_percentile(cpu_percentile) / 100.0 * f64::from(self.vcpus),
            mem_in_use_gib: self.mem_in_use_x100 as f64 / 10_000.0 / 1024.0,
        }
    }
}
