//! Counters shared by the receive loop and the workers, and their text.
//!
//! Writers add whole batches, never single datagrams: the receive loop
//! publishes its counts once per poll wake-up, and each worker adds once per
//! flush to the totals the workers share (rows and bytes written, errors,
//! open files), so the relaxed atomics cost nothing measurable per datagram.
//! Readers take a [`Snapshot`], and the status and summary lines are pure
//! functions of snapshots, tested without I/O.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::wire::Reject;

/// Live counters of one aggregator run.
#[derive(Debug, Default)]
pub struct Stats {
    pub received: AtomicU64,
    pub accepted: AtomicU64,
    pub rejected: [AtomicU64; Reject::ALL.len()],
    /// Valid datagrams dropped because a worker's queue was full.
    pub dropped_overload: AtomicU64,
    /// Valid datagrams from new sources beyond `--max-vms`.
    pub vm_limit: AtomicU64,
    /// Datagrams the kernel dropped on the socket (receive buffer full).
    pub kernel_drops: AtomicU64,
    pub rows_written: AtomicU64,
    pub bytes_written: AtomicU64,
    pub write_errors: AtomicU64,
    /// Rows given up after write errors filled a VM's retry buffer, or
    /// still unwritten at exit.
    pub dropped_write_error: AtomicU64,
    /// VMs whose file was something other than a regular file (refused).
    pub files_refused: AtomicU64,
    pub files_open: AtomicU64,
    pub vms_known: AtomicU64,
    /// Batches waiting in the worker channels, sampled by the receive loop.
    pub queue_depth: AtomicU64,
    /// The same, per worker (empty when built with `default()`).
    pub worker_queues: Box<[AtomicU64]>,
    /// Datagrams received by each receive loop (`--receivers`).
    pub receiver_received: Box<[AtomicU64]>,
    /// Receive-to-disk latency of the rows written, as the workers flush.
    pub latency: LatencyBuckets,
}

impl Stats {
    /// Counters for a run with `workers` workers and `receivers` receive
    /// loops.
    pub fn new(workers: usize, receivers: usize) -> Stats {
        let zeros = |n| (0..n).map(|_| AtomicU64::new(0)).collect();
        Stats {
            worker_queues: zeros(workers),
            receiver_received: zeros(receivers),
            ..Stats::default()
        }
    }
}

/// Upper bounds (ms) of the receive-to-disk buckets: from a flush that
/// finds rows waiting a few ms to one that a failing disk holds for a
/// minute.
pub const LATENCY_BOUNDS_MS: [u64; 12] = [
    5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 60_000,
];

/// A cumulative-when-read histogram of receive-to-disk latency: counts per
/// bucket (the last for everything above the bounds), their sum and count.
/// A worker adds once per flush, for all the rows it wrote.
#[derive(Debug, Default)]
pub struct LatencyBuckets {
    counts: [AtomicU64; LATENCY_BOUNDS_MS.len() + 1],
    sum_ms: AtomicU64,
    count: AtomicU64,
}

/// A copy of [`LatencyBuckets`]: per-bucket counts (not cumulative), sum
/// and count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LatencySnapshot {
    pub counts: [u64; LATENCY_BOUNDS_MS.len() + 1],
    pub sum_ms: u64,
    pub count: u64,
}

impl LatencyBuckets {
    /// `rows` rows written `ms` after they were received.
    pub fn observe(&self, ms: u64, rows: u64) {
        let i = LATENCY_BOUNDS_MS.partition_point(|b| *b < ms);
        self.counts[i].fetch_add(rows, Relaxed);
        self.sum_ms.fetch_add(ms.saturating_mul(rows), Relaxed);
        self.count.fetch_add(rows, Relaxed);
    }

    pub fn snapshot(&self) -> LatencySnapshot {
        LatencySnapshot {
            counts: std::array::from_fn(|i| self.counts[i].load(Relaxed)),
            sum_ms: self.sum_ms.load(Relaxed),
            count: self.count.load(Relaxed),
        }
    }
}

/// A plain copy of [`Stats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub received: u64,
    pub accepted: u64,
    pub rejected: [u64; Reject::ALL.len()],
    pub dropped_overload: u64,
    pub vm_limit: u64,
    pub kernel_drops: u64,
    pub rows_written: u64,
    pub bytes_written: u64,
    pub write_errors: u64,
    pub dropped_write_error: u64,
    pub files_refused: u64,
    pub files_open: u64,
    pub vms_known: u64,
    pub queue_depth: u64,
}

impl Stats {
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            received: self.received.load(Relaxed),
            accepted: self.accepted.load(Relaxed),
            rejected: std::array::from_fn(|i| self.rejected[i].load(Relaxed)),
            dropped_overload: self.dropped_overload.load(Relaxed),
            vm_limit: self.vm_limit.load(Relaxed),
            kernel_drops: self.kernel_drops.load(Relaxed),
            rows_written: self.rows_written.load(Relaxed),
            bytes_written: self.bytes_written.load(Relaxed),
            write_errors: self.write_errors.load(Relaxed),
            dropped_write_error: self.dropped_write_error.load(Relaxed),
            files_refused: self.files_refused.load(Relaxed),
            files_open: self.files_open.load(Relaxed),
            vms_known: self.vms_known.load(Relaxed),
            queue_depth: self.queue_depth.load(Relaxed),
        }
    }
}

impl Snapshot {
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().sum()
    }
}

fn push_rejects(out: &mut String, s: &Snapshot) {
    for r in Reject::ALL {
        let _ = write!(out, " {}={}", r.name(), s.rejected[r.index()]);
    }
}

/// The periodic one-line status: totals plus the receive rate since `prev`.
pub fn status_line(now: &Snapshot, prev: &Snapshot, elapsed_s: f64) -> String {
    let rate = if elapsed_s > 0.0 {
        (now.received - prev.received) as f64 / elapsed_s
    } else {
        0.0
    };
    let mut out = format!(
        "status: rate={rate:.0}/s received={} accepted={} rejected={} dropped_overload={} kernel_drops={} vm_limit={} written={} vms={} files_open={} queue={} write_errors={}",
        now.received,
        now.accepted,
        now.rejected_total(),
        now.dropped_overload,
        now.kernel_drops,
        now.vm_limit,
        now.rows_written,
        now.vms_known,
        now.files_open,
        now.queue_depth,
        now.write_errors,
    );
    if now.rejected_total() > 0 {
        out.push_str(" (");
        push_rejects(&mut out, now);
        out.push_str(" )");
    }
    out
}

/// Receive-to-disk latency figures of a run, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Latency {
    pub p50_ms: u64,
    pub p99_ms: u64,
    pub max_ms: u64,
}

/// The multi-line summary printed at exit, one `key=value` group a line so
/// scripts can pick a figure with grep.
pub fn summary(s: &Snapshot, elapsed_s: f64, latency: &Latency) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "summary: received={} accepted={} rejected={} dropped_overload={} vm_limit={} kernel_drops={} elapsed_s={elapsed_s:.1}",
        s.received,
        s.accepted,
        s.rejected_total(),
        s.dropped_overload,
        s.vm_limit,
        s.kernel_drops,
    );
    out.push_str("summary: rejected_by_reason:");
    push_rejects(&mut out, s);
    out.push('\n');
    let _ = writeln!(
        out,
        "summary: rows_written={} bytes_written={} write_errors={} dropped_write_error={} files_refused={} vms={}",
        s.rows_written,
        s.bytes_written,
        s.write_errors,
        s.dropped_write_error,
        s.files_refused,
        s.vms_known,
    );
    let _ = writeln!(
        out,
        "summary: receive_to_disk_ms p50={} p99={} max={}",
        latency.p50_ms, latency.p99_ms, latency.max_ms
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Snapshot {
        Snapshot {
            received: 1500,
            accepted: 1490,
            rejected: [4, 3, 2, 1, 0],
            rows_written: 1490,
            bytes_written: 150_000,
            vms_known: 5,
            files_open: 5,
            ..Snapshot::default()
        }
    }

    #[test]
    fn status_line_shows_rate_and_reasons() {
        let prev = Snapshot {
            received: 500,
            ..Snapshot::default()
        };
        let line = status_line(&sample(), &prev, 2.0);
        assert!(
            line.starts_with("status: rate=500/s received=1500 accepted=1490 rejected=10 "),
            "{line}"
        );
        assert!(
            line.contains("bad_length=4 bad_magic=3 bad_version=2 bad_field=1 not_allowed=0"),
            "{line}"
        );
    }

    #[test]
    fn status_line_omits_reasons_when_none() {
        let line = status_line(&Snapshot::default(), &Snapshot::default(), 0.0);
        assert!(line.contains("rate=0/s"));
        assert!(!line.contains("bad_length"));
    }

    #[test]
    fn summary_has_every_counter() {
        let lat = Latency {
            p50_ms: 3,
            p99_ms: 990,
            max_ms: 1003,
        };
        let text = summary(&sample(), 12.34, &lat);
        assert_eq!(text.lines().count(), 4);
        assert!(text.contains(
            "accepted=1490 rejected=10 dropped_overload=0 vm_limit=0 kernel_drops=0 elapsed_s=12.3"
        ));
        assert!(text.contains("bad_field=1 not_allowed=0"));
        assert!(text.contains("rows_written=1490 bytes_written=150000 write_errors=0"));
        assert!(text.contains("p50=3 p99=990 max=1003"));
    }
}
