//! One UTC day of a VM: its samples, CPU counts in 0.1 % steps (a day in
//! 4 KB), peaks and bytes, for the report's daily figures and charts.

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

pub(super) struct DayAcc {
    pub(super) samples: u64,
    pub(super) cpu: Box<[u32]>,
    pub(super) cpu_sum: u64,
    pub(super) cpu_max: u16,
    pub(super) mem_max: u16,
    pub(super) net_bytes: u64,
    pub(super) disk_bytes: u64,
    pub(super) covered_s: u64,
}

impl DayAcc {
    pub(super) fn new() -> DayAcc {
        DayAcc {
            samples: 0,
            cpu: vec![0; DAY_CPU_BUCKETS].into_boxed_slice(),
            cpu_sum: 0,
            cpu_max: 0,
            mem_max: 0,
            net_bytes: 0,
            disk_bytes: 0,
            covered_s: 0,
        }
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
    }

    pub(super) fn finish(&self, day: u64) -> DaySummary {
        let rank = (0.95 * self.samples as f64).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        let p95 = self
            .cpu
            .iter()
            .position(|c| {
                seen += u64::from(*c);
                seen >= rank
            })
            .unwrap_or(0);
        DaySummary {
            day,
            samples: self.samples,
            cpu_avg: self.cpu_sum as f64 / self.samples.max(1) as f64 / 100.0,
            cpu_p95: p95 as f64 / 10.0,
            cpu_max: f64::from(self.cpu_max) / 100.0,
            mem_max: f64::from(self.mem_max) / 100.0,
            net_bytes: self.net_bytes,
            disk_bytes: self.disk_bytes,
            covered_s: self.covered_s,
        }
    }
}
