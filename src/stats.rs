//! Counters shared by the receive loop and the workers, and their text.
//!
//! Writers add whole batches, never single datagrams: the receive loop
//! publishes its counts once per poll wake-up, and each worker adds once per
//! flush to the totals the workers share (rows and bytes written, errors,
//! open files), so the relaxed atomics cost nothing measurable per datagram.
//! Readers take a [`Snapshot`], and the status and summary lines are pure
//! functions of snapshots, tested without I/O.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use hdrhistogram::Histogram;

use crate::wire::Reject;

/// Every counter of a run, named once: the status and summary lines and
/// `/metrics` all take a counter's key, name and help from
/// [`Counter::describe`], so adding one is a variant, its line in
/// [`Counter::ALL`] and its description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// Datagrams taken off the socket.
    Received,
    /// Valid datagrams a worker took: version 1, or version 2 verified
    /// (counted by the worker, after its checks, so no count ever goes
    /// down).
    Accepted,
    /// Valid datagrams dropped because a worker's queue was full.
    DroppedOverload,
    /// Valid datagrams from new sources beyond `--max-vms`.
    VmLimit,
    /// Datagrams the kernel dropped on the socket (receive buffer full).
    KernelDrops,
    RowsWritten,
    BytesWritten,
    WriteErrors,
    /// Rows given up after write errors filled a VM's retry buffer, or
    /// still unwritten at exit.
    DroppedWriteError,
    /// VMs whose file was something other than a regular file (refused).
    FilesRefused,
    FilesOpen,
    VmsKnown,
    /// Batches waiting in the worker channels, sampled by the receive loop.
    QueueDepth,
    /// Bytes in the journal's segments, all workers together.
    JournalBytes,
    JournalSegments,
    /// Journal writes, syncs or segment drops that failed.
    JournalErrors,
}

/// How `/metrics` shows a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Series {
    /// A series of its own (`_total` is added to a counter's name).
    Own {
        name: &'static str,
        help: &'static str,
        gauge: bool,
    },
    /// One `cause` of `vmstats_datagrams_dropped`.
    Dropped { cause: &'static str },
    /// Not at all: shown per worker instead.
    PerWorker,
}

/// A counter's names: its key in the status and summary lines, and its
/// series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Description {
    pub key: &'static str,
    pub series: Series,
}

impl Counter {
    pub const ALL: [Counter; 16] = [
        Counter::Received,
        Counter::Accepted,
        Counter::DroppedOverload,
        Counter::VmLimit,
        Counter::KernelDrops,
        Counter::RowsWritten,
        Counter::BytesWritten,
        Counter::WriteErrors,
        Counter::DroppedWriteError,
        Counter::FilesRefused,
        Counter::FilesOpen,
        Counter::VmsKnown,
        Counter::QueueDepth,
        Counter::JournalBytes,
        Counter::JournalSegments,
        Counter::JournalErrors,
    ];

    pub const fn describe(self) -> Description {
        const fn own(key: &'static str, name: &'static str, help: &'static str) -> Description {
            Description {
                key,
                series: Series::Own {
                    name,
                    help,
                    gauge: false,
                },
            }
        }
        const fn gauge(key: &'static str, name: &'static str, help: &'static str) -> Description {
            Description {
                key,
                series: Series::Own {
                    name,
                    help,
                    gauge: true,
                },
            }
        }
        const fn dropped(key: &'static str, cause: &'static str) -> Description {
            Description {
                key,
                series: Series::Dropped { cause },
            }
        }
        match self {
            Counter::Received => own(
                "received",
                "vmstats_datagrams_received",
                "Datagrams taken off the socket.",
            ),
            Counter::Accepted => own(
                "accepted",
                "vmstats_datagrams_accepted",
                "Valid datagrams handed to a worker.",
            ),
            Counter::DroppedOverload => dropped("dropped_overload", "queue_full"),
            Counter::VmLimit => dropped("vm_limit", "vm_limit"),
            Counter::KernelDrops => dropped("kernel_drops", "kernel"),
            Counter::RowsWritten => own(
                "rows_written",
                "vmstats_rows_written",
                "Rows written to VM files.",
            ),
            Counter::BytesWritten => own(
                "bytes_written",
                "vmstats_bytes_written",
                "Bytes written to VM files.",
            ),
            Counter::WriteErrors => own(
                "write_errors",
                "vmstats_write_errors",
                "Failed writes (rows kept and retried).",
            ),
            Counter::DroppedWriteError => dropped("dropped_write_error", "write_error"),
            Counter::FilesRefused => own(
                "files_refused",
                "vmstats_files_refused",
                "VM paths refused as not regular files.",
            ),
            Counter::FilesOpen => gauge("files_open", "vmstats_files_open", "VM files held open."),
            Counter::VmsKnown => gauge("vms", "vmstats_vms", "VMs (source addresses) seen."),
            Counter::QueueDepth => Description {
                key: "queue",
                series: Series::PerWorker,
            },
            Counter::JournalBytes => gauge(
                "journal_bytes",
                "vmstats_journal_bytes",
                "Bytes in the journal's segments (rows not yet in their VM files, or not yet synced there).",
            ),
            Counter::JournalSegments => gauge(
                "journal_segments",
                "vmstats_journal_segments",
                "Journal segment files.",
            ),
            Counter::JournalErrors => own(
                "journal_errors",
                "vmstats_journal_errors",
                "Journal writes, syncs or segment drops that failed (rows still go to their files).",
            ),
        }
    }

    pub const fn key(self) -> &'static str {
        self.describe().key
    }
}

/// Live counters of one aggregator run.
#[derive(Debug, Default)]
pub struct Stats {
    counts: [AtomicU64; Counter::ALL.len()],
    pub rejected: [AtomicU64; Reject::ALL.len()],
    /// Each worker's queue depth (empty when built with `default()`).
    pub worker_queues: Box<[AtomicU64]>,
    /// Datagrams received by each receive loop (`--receivers`).
    pub receiver_received: Box<[AtomicU64]>,
    /// Receive to durable: the journal synced (or, with `--no-sync`,
    /// written).
    pub latency: Latencies,
    /// Receive to the VM's own file.
    pub file_latency: Latencies,
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

    /// Adds `n` (wrapping: a gauge's fall is added as its two's complement).
    pub fn add(&self, c: Counter, n: u64) {
        self.counts[c as usize].fetch_add(n, Relaxed);
    }

    /// Sets a gauge sampled whole (the queue depth).
    pub fn set(&self, c: Counter, v: u64) {
        self.counts[c as usize].store(v, Relaxed);
    }

    pub fn get(&self, c: Counter) -> u64 {
        self.counts[c as usize].load(Relaxed)
    }

    /// Counts `n` datagrams refused for `reason` after the receive loop
    /// (a worker's verification).
    pub fn refuse(&self, reason: Reject, n: u64) {
        self.rejected[reason.index()].fetch_add(n, Relaxed);
    }
}

/// Upper bounds (ms) of the latency buckets: from a journal sync that
/// finds rows waiting a few ms to a file write a minute after (the file
/// interval) or two (a failing disk).
pub const LATENCY_BOUNDS_MS: [u64; 14] = [
    5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 25_000, 60_000, 120_000,
];

/// A latency of every row, ms: one histogram that the journal threads add
/// to once per chunk (each run of rows received in the same ms at its own
/// age) and the workers once per file write (all its rows at the age of
/// the oldest, an upper bound for each), read by `/metrics` as buckets and
/// by the exit summary as percentiles. The lock is taken once per chunk or
/// write, never per datagram.
#[derive(Debug)]
pub struct Latencies(Mutex<Recorded>);

#[derive(Debug)]
struct Recorded {
    histogram: Histogram<u64>,
    /// Exact, for the Prometheus sum (the histogram's values are within
    /// 0.1 %).
    sum_ms: u64,
}

/// The latencies as Prometheus buckets: per-bucket counts (not
/// cumulative, the last for everything above the bounds), sum and count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LatencySnapshot {
    pub counts: [u64; LATENCY_BOUNDS_MS.len() + 1],
    pub sum_ms: u64,
    pub count: u64,
}

impl Default for Latencies {
    fn default() -> Latencies {
        // Up to an hour, three significant digits: exact below 2,048 ms.
        let histogram = Histogram::new_with_max(3_600_000, 3).expect("static bounds are valid");
        Latencies(Mutex::new(Recorded {
            histogram,
            sum_ms: 0,
        }))
    }
}

impl Latencies {
    fn recorded(&self) -> std::sync::MutexGuard<'_, Recorded> {
        // A worker that panicked while holding it left whole counts.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `rows` rows written `ms` after they were received.
    pub fn observe(&self, ms: u64, rows: u64) {
        let mut r = self.recorded();
        r.histogram.saturating_record_n(ms, rows);
        r.sum_ms = r.sum_ms.saturating_add(ms.saturating_mul(rows));
    }

    /// The buckets of [`LATENCY_BOUNDS_MS`]: a value is in the first
    /// bucket whose bound is at least its histogram bucket's low end.
    pub fn snapshot(&self) -> LatencySnapshot {
        let r = self.recorded();
        let mut counts = [0u64; LATENCY_BOUNDS_MS.len() + 1];
        for v in r.histogram.iter_recorded() {
            let ms = r.histogram.lowest_equivalent(v.value_iterated_to());
            counts[LATENCY_BOUNDS_MS.partition_point(|b| *b < ms)] += v.count_at_value();
        }
        LatencySnapshot {
            counts,
            sum_ms: r.sum_ms,
            count: r.histogram.len(),
        }
    }

    /// Median, 99th percentile and maximum.
    pub fn figures(&self) -> Latency {
        let r = self.recorded();
        Latency {
            p50_ms: r.histogram.value_at_quantile(0.5),
            p99_ms: r.histogram.value_at_quantile(0.99),
            max_ms: r.histogram.max(),
        }
    }
}

/// A plain copy of [`Stats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    counts: [u64; Counter::ALL.len()],
    pub rejected: [u64; Reject::ALL.len()],
}

impl Stats {
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            counts: std::array::from_fn(|i| self.counts[i].load(Relaxed)),
            rejected: std::array::from_fn(|i| self.rejected[i].load(Relaxed)),
        }
    }
}

impl Snapshot {
    /// A snapshot holding `values` (tests, and the exit summary's sums).
    pub fn of(values: &[(Counter, u64)], rejected: [u64; Reject::ALL.len()]) -> Snapshot {
        let mut s = Snapshot {
            rejected,
            ..Snapshot::default()
        };
        for (c, v) in values {
            s.counts[*c as usize] = *v;
        }
        s
    }

    pub fn get(&self, c: Counter) -> u64 {
        self.counts[c as usize]
    }

    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().sum()
    }
}

impl std::ops::Index<Counter> for Snapshot {
    type Output = u64;

    fn index(&self, c: Counter) -> &u64 {
        &self.counts[c as usize]
    }
}

/// ` key=value` for each counter.
fn push_counters(out: &mut String, s: &Snapshot, counters: &[Counter]) {
    for c in counters {
        let _ = write!(out, " {}={}", c.key(), s[*c]);
    }
}

fn push_rejects(out: &mut String, s: &Snapshot) {
    for r in Reject::ALL {
        let _ = write!(out, " {}={}", r.name(), s.rejected[r.index()]);
    }
}

/// The periodic one-line status: totals plus the receive rate since `prev`.
pub fn status_line(now: &Snapshot, prev: &Snapshot, elapsed_s: f64) -> String {
    use Counter::*;
    let received = now[Received] - prev[Received];
    let rate = if elapsed_s > 0.0 {
        received as f64 / elapsed_s
    } else {
        0.0
    };
    let mut out = format!("status: rate={rate:.0}/s");
    push_counters(&mut out, now, &[Received, Accepted]);
    let _ = write!(out, " rejected={}", now.rejected_total());
    push_counters(
        &mut out,
        now,
        &[
            DroppedOverload,
            KernelDrops,
            VmLimit,
            RowsWritten,
            VmsKnown,
            FilesOpen,
            QueueDepth,
            WriteErrors,
            JournalBytes,
            JournalSegments,
            JournalErrors,
        ],
    );
    if now.rejected_total() > 0 {
        out.push_str(" (");
        push_rejects(&mut out, now);
        out.push_str(" )");
    }
    out
}

/// Latency figures of a run, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Latency {
    pub p50_ms: u64,
    pub p99_ms: u64,
    pub max_ms: u64,
}

/// The multi-line summary printed at exit, one `key=value` group a line so
/// scripts can pick a figure with grep.
/// `disk` is receive to durable, `file` receive to the VM's file.
pub fn summary(s: &Snapshot, elapsed_s: f64, disk: &Latency, file: &Latency) -> String {
    use Counter::*;
    let mut out = String::from("summary:");
    push_counters(&mut out, s, &[Received, Accepted]);
    let _ = write!(out, " rejected={}", s.rejected_total());
    push_counters(&mut out, s, &[DroppedOverload, VmLimit, KernelDrops]);
    let _ = writeln!(out, " elapsed_s={elapsed_s:.1}");
    out.push_str("summary: rejected_by_reason:");
    push_rejects(&mut out, s);
    out.push_str("\nsummary:");
    push_counters(
        &mut out,
        s,
        &[
            RowsWritten,
            BytesWritten,
            WriteErrors,
            DroppedWriteError,
            FilesRefused,
            VmsKnown,
        ],
    );
    let _ = writeln!(
        out,
        "\nsummary: receive_to_disk_ms p50={} p99={} max={} receive_to_file_ms p50={} p99={} max={}",
        disk.p50_ms, disk.p99_ms, disk.max_ms, file.p50_ms, file.p99_ms, file.max_ms
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Snapshot {
        use Counter::*;
        Snapshot::of(
            &[
                (Received, 1500),
                (Accepted, 1490),
                (RowsWritten, 1490),
                (BytesWritten, 150_000),
                (VmsKnown, 5),
                (FilesOpen, 5),
            ],
            [4, 3, 2, 1, 0, 0, 0, 0, 0],
        )
    }

    #[test]
    fn status_line_shows_rate_and_reasons() {
        let prev = Snapshot::of(&[(Counter::Received, 500)], [0; Reject::ALL.len()]);
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
        let file = Latency {
            p50_ms: 30_000,
            p99_ms: 59_000,
            max_ms: 60_001,
        };
        let text = summary(&sample(), 12.34, &lat, &file);
        assert_eq!(text.lines().count(), 4);
        assert!(text.contains(
            "accepted=1490 rejected=10 dropped_overload=0 vm_limit=0 kernel_drops=0 elapsed_s=12.3"
        ));
        assert!(text.contains("bad_field=1 not_allowed=0"));
        assert!(text.contains("rows_written=1490 bytes_written=150000 write_errors=0"));
        assert!(text.contains(
            "receive_to_disk_ms p50=3 p99=990 max=1003 receive_to_file_ms p50=30000 p99=59000 max=60001"
        ));
    }

    #[test]
    fn every_counter_has_one_key_and_shows_in_a_line() {
        let keys: std::collections::HashSet<&str> = Counter::ALL.iter().map(|c| c.key()).collect();
        assert_eq!(keys.len(), Counter::ALL.len(), "a key named twice");
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i, "ALL is in declaration order");
        }
        let s = sample();
        let lines = format!(
            "{}\n{}",
            status_line(&s, &Snapshot::default(), 1.0),
            summary(&s, 1.0, &Latency::default(), &Latency::default())
        );
        for c in Counter::ALL {
            assert!(
                lines.contains(&format!(" {}=", c.key())),
                "{c:?} is in no line"
            );
        }
    }
}
