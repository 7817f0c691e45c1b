//! What one VM's rows in the window add up to, in memory that does not grow
//! with the rows: CPU and memory percentiles from exact counts per value
//! (they are 0.01 % steps, 0..=10000, so 10,001 counters hold any number
//! of samples exactly), network and disk rates from an HDR histogram
//! (within 0.1 %), and sequence numbers as ranges per boot.
//!
//! Nothing one datagram says is taken at its word (an outside audit
//! spoofed single datagrams into verdicts): the VM's interval and size are
//! the most frequent ones over the window, a duplicated (boot_id, seq) is
//! counted once, a forward seq gap larger than the time the rows span could
//! hold is a `seq_jump` rather than millions of losses, a final flag counts
//! only from the VM's own boot, and every total saturates.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use hdrhistogram::Histogram;

use crate::wire::{MAX_PCT_X100, Row};

/// What one VM's rows say, before any verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct VmSummary {
    pub ip: IpAddr,
    /// Distinct (boot_id, seq) rows in the window.
    pub samples: u64,
    /// The most frequent size and interval in the window.
    pub vcpus: u16,
    pub mem_mib: u32,
    pub interval_s: u16,
    /// Times the size differed from the row before, and when it last did.
    pub size_changes: u64,
    pub last_size_change_ms: Option<u64>,
    pub cpu_p50: f64,
    pub cpu_p95: f64,
    pub cpu_p99: f64,
    pub cpu_max: f64,
    pub mem_p95: f64,
    pub mem_p99: f64,
    pub mem_max: f64,
    /// Samples under GCP's idle lines: CPU below 0.03 vCPU, received below
    /// 2,000 B/s, sent below 1,000 B/s (see `policy`).
    pub gcp_cpu_low: u64,
    pub gcp_rx_low: u64,
    pub gcp_tx_low: u64,
    /// p95 of (net rx + tx) / interval, bytes/s.
    pub net_p95_bps: f64,
    /// p95 of (disk read + write) / interval, bytes/s.
    pub disk_p95_bps: f64,
    /// Gaps in seq within a boot (each at most the bound of a seq jump).
    pub lost: u64,
    /// Rows whose (boot_id, seq) was already seen.
    pub duplicates: u64,
    /// Rows that arrived after a higher seq of the same boot.
    pub out_of_order: u64,
    /// New boot_ids after the first.
    pub restarts: u64,
    /// Forward seq gaps too large to be loss (see [`jump_bound`]).
    pub seq_jumps: u64,
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    /// The latest row carries the final flag, from a boot seen before it:
    /// the agent stopped on purpose.
    pub stopped: bool,
    /// Lines of the files that are not rows (torn last line excluded).
    pub bad_rows: u64,
    /// Per UTC day with data, oldest first.
    pub days: Vec<DaySummary>,
}

/// Milliseconds in a day: days are UTC days of the receive time.
pub const DAY_MS: u64 = 86_400_000;

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
const DAY_CPU_BUCKETS: usize = 1001;

struct DayAcc {
    samples: u64,
    cpu: Box<[u32]>,
    cpu_sum: u64,
    cpu_max: u16,
    mem_max: u16,
    net_bytes: u64,
    disk_bytes: u64,
    covered_s: u64,
}

impl DayAcc {
    fn new() -> DayAcc {
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

    fn finish(&self, day: u64) -> DaySummary {
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

/// GCP's idle lines (its idle VM recommender's defaults): 0.03 vCPU, as
/// cpu% x vCPUs in hundredths; received and sent bytes per second.
const GCP_CPU_X100: u64 = 300;
const GCP_RX_BPS: u64 = 2000;
const GCP_TX_BPS: u64 = 1000;

/// Exact counts of a percentage in 0.01 % steps.
struct PctCounts {
    counts: Box<[u64]>,
    n: u64,
}

impl PctCounts {
    fn new() -> PctCounts {
        PctCounts {
            counts: vec![0; usize::from(MAX_PCT_X100) + 1].into_boxed_slice(),
            n: 0,
        }
    }

    fn add(&mut self, x100: u16) {
        self.counts[usize::from(x100.min(MAX_PCT_X100))] += 1;
        self.n += 1;
    }

    /// Nearest-rank percentile, in percent.
    fn percentile(&self, p: f64) -> f64 {
        let rank = ((p / 100.0) * self.n as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (value, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return value as f64 / 100.0;
            }
        }
        0.0
    }

    fn max(&self) -> f64 {
        self.counts
            .iter()
            .rposition(|c| *c > 0)
            .map_or(0.0, |v| v as f64 / 100.0)
    }
}

/// Rates, bytes/s, to 3 significant digits (0.1 %).
fn rate_histogram() -> Histogram<u64> {
    Histogram::new(3).expect("3 significant digits is valid")
}

/// The nearest-rank p95 as the low end of its bucket: exact below 2,048,
/// within 0.1 % above.
fn p95(h: &Histogram<u64>) -> f64 {
    h.lowest_equivalent(h.value_at_quantile(0.95)) as f64
}

/// Records `v`, growing the histogram's range as needed (its
/// `saturating_record` would clamp to the range it has instead).
fn record(h: &mut Histogram<u64>, v: u64) {
    if h.record(v).is_err() {
        h.saturating_record(v);
    }
}

/// Ranges of seq seen in a VM's rows, over all its boots, before the cap.
const MAX_RANGES: usize = 1 << 16;

/// One boot's seq numbers: sorted, disjoint, non-touching inclusive ranges
/// (one range while nothing is lost), the rows taken and, within a file,
/// the highest seq so far.
#[derive(Debug, Default)]
struct Boot {
    ranges: Vec<(u64, u64)>,
    max: u64,
    rows: u64,
}

/// What inserting a seq found.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    New,
    Duplicate,
    /// Past [`MAX_RANGES`]: neither stored nor known to be new.
    Untracked,
}

impl Boot {
    fn insert(&mut self, s: u64, ranges_left: usize) -> Seen {
        let i = self.ranges.partition_point(|r| r.1 < s);
        if self.ranges.get(i).is_some_and(|r| r.0 <= s) {
            return Seen::Duplicate;
        }
        let joins_prev = i > 0 && self.ranges[i - 1].1.checked_add(1) == Some(s);
        let joins_next = self
            .ranges
            .get(i)
            .is_some_and(|r| s.checked_add(1) == Some(r.0));
        match (joins_prev, joins_next) {
            (true, true) => {
                self.ranges[i - 1].1 = self.ranges[i].1;
                self.ranges.remove(i);
            }
            (true, false) => self.ranges[i - 1].1 = s,
            (false, true) => self.ranges[i].0 = s,
            (false, false) if ranges_left == 0 => return Seen::Untracked,
            (false, false) => self.ranges.insert(i, (s, s)),
        }
        Seen::New
    }
}

/// The largest forward seq gap counted as loss: twice the intervals the
/// VM's rows span, plus 100 for clock skew and bursts. A real gap of g
/// datagrams needs g intervals to pass; a larger one is a restarted counter
/// or a spoofed datagram (one seq of 2^64-1 once reported 1.8e19 lost).
pub fn jump_bound(span_ms: u64, interval_s: u16) -> u64 {
    let intervals = span_ms / (u64::from(interval_s.max(1)) * 1000);
    intervals.saturating_mul(2).saturating_add(100)
}

/// Distinct values counted for the most-frequent choice, at most: a
/// spoofer cannot grow the map past this (later values are not counted).
const MAX_DISTINCT: usize = 4096;

fn count_value<K: std::hash::Hash + Eq>(map: &mut HashMap<K, u64>, key: K) {
    let len = map.len();
    match map.get_mut(&key) {
        Some(n) => *n += 1,
        None if len < MAX_DISTINCT => {
            map.insert(key, 1);
        }
        None => {}
    }
}

/// The most frequent key; ties go to the larger key, so the choice does
/// not depend on the map's order.
fn most_frequent<K: Copy + Ord>(map: &HashMap<K, u64>) -> Option<K> {
    map.iter().max_by_key(|(k, n)| (**n, **k)).map(|(k, _)| *k)
}

/// Folds a VM's rows into its summary, file by file: its live file and
/// rotated parts, from one data dir or several (two aggregators fed by the
/// same agents, or shards). Within a file rows are in receive order, so a
/// repeated (boot_id, seq) there is a duplicate and a lower seq is out of
/// order; across files a (boot_id, seq) already taken is the same datagram
/// held twice, counted once and not called a duplicate.
pub struct Accumulator {
    cpu: PctCounts,
    mem: PctCounts,
    net: Histogram<u64>,
    disk: Histogram<u64>,
    /// Every file's seqs together: what counts once.
    boots: HashMap<u32, Boot>,
    ranges: usize,
    /// This file's seqs: what is a duplicate or out of order.
    file_boots: HashMap<u32, Boot>,
    file_ranges: usize,
    duplicates: u64,
    out_of_order: u64,
    gcp_low: [u64; 3],
    intervals: HashMap<u16, u64>,
    sizes: HashMap<(u16, u32), u64>,
    size: Option<(u16, u32)>,
    size_changes: u64,
    last_size_change_ms: Option<u64>,
    first_seen_ms: Option<u64>,
    last: Option<Row>,
    bad_rows: u64,
    days: BTreeMap<u64, DayAcc>,
}

impl Default for Accumulator {
    fn default() -> Self {
        Accumulator {
            cpu: PctCounts::new(),
            mem: PctCounts::new(),
            net: rate_histogram(),
            disk: rate_histogram(),
            boots: HashMap::new(),
            ranges: 0,
            file_boots: HashMap::new(),
            file_ranges: 0,
            duplicates: 0,
            out_of_order: 0,
            gcp_low: [0; 3],
            intervals: HashMap::new(),
            sizes: HashMap::new(),
            size: None,
            size_changes: 0,
            last_size_change_ms: None,
            first_seen_ms: None,
            last: None,
            bad_rows: 0,
            days: BTreeMap::new(),
        }
    }
}

impl Accumulator {
    /// The rows that follow come from another file.
    pub fn start_file(&mut self) {
        self.file_boots.clear();
        self.file_ranges = 0;
        self.size = None;
    }

    pub fn add(&mut self, row: &Row) {
        let s = &row.stat;
        let in_file = self.file_boots.entry(s.boot_id).or_default();
        let before = in_file.ranges.len();
        let left = MAX_RANGES.saturating_sub(self.file_ranges);
        if in_file.insert(s.seq, left) == Seen::Duplicate {
            self.duplicates = self.duplicates.saturating_add(1);
            return;
        }
        self.file_ranges = self.file_ranges + in_file.ranges.len() - before;
        if in_file.rows > 0 && s.seq < in_file.max {
            self.out_of_order = self.out_of_order.saturating_add(1);
        }
        in_file.max = if in_file.rows == 0 {
            s.seq
        } else {
            in_file.max.max(s.seq)
        };
        in_file.rows += 1;

        let boot = self.boots.entry(s.boot_id).or_default();
        let before = boot.ranges.len();
        if boot.insert(s.seq, MAX_RANGES.saturating_sub(self.ranges)) == Seen::Duplicate {
            return;
        }
        self.ranges = self.ranges + boot.ranges.len() - before;
        boot.rows += 1;

        self.cpu.add(s.cpu_pct_x100);
        self.mem.add(s.mem_pct_x100);
        let secs = u64::from(s.interval_s.max(1));
        let net = s.net_rx_bytes.saturating_add(s.net_tx_bytes) / secs;
        let disk = s.disk_read_bytes.saturating_add(s.disk_write_bytes) / secs;
        record(&mut self.net, net);
        record(&mut self.disk, disk);
        // 0.03 vCPU is 3 % of one vCPU: cpu% x vCPUs < 3.
        let used_x100 = u64::from(s.cpu_pct_x100) * u64::from(s.vcpus);
        let lows = [
            used_x100 < GCP_CPU_X100,
            s.net_rx_bytes / secs < GCP_RX_BPS,
            s.net_tx_bytes / secs < GCP_TX_BPS,
        ];
        for (count, low) in self.gcp_low.iter_mut().zip(lows) {
            *count += u64::from(low);
        }
        let day = self
            .days
            .entry(row.recv_ms / DAY_MS)
            .or_insert_with(DayAcc::new);
        day.samples += 1;
        day.cpu[usize::from(s.cpu_pct_x100.min(MAX_PCT_X100) / 10)] += 1;
        day.cpu_sum += u64::from(s.cpu_pct_x100);
        day.cpu_max = day.cpu_max.max(s.cpu_pct_x100);
        day.mem_max = day.mem_max.max(s.mem_pct_x100);
        day.net_bytes = day
            .net_bytes
            .saturating_add(s.net_rx_bytes.saturating_add(s.net_tx_bytes));
        day.disk_bytes = day
            .disk_bytes
            .saturating_add(s.disk_read_bytes.saturating_add(s.disk_write_bytes));
        day.covered_s = day.covered_s.saturating_add(secs);
        count_value(&mut self.intervals, s.interval_s);
        let size = (s.vcpus, s.mem_mib);
        count_value(&mut self.sizes, size);
        if self.size.is_some_and(|was| was != size) {
            self.size_changes = self.size_changes.saturating_add(1);
            self.last_size_change_ms = Some(row.recv_ms);
        }
        self.size = Some(size);
        self.first_seen_ms = Some(
            self.first_seen_ms
                .map_or(row.recv_ms, |f| f.min(row.recv_ms)),
        );
        if self.last.is_none_or(|last| row.recv_ms >= last.recv_ms) {
            self.last = Some(*row);
        }
    }

    pub fn add_bad_row(&mut self) {
        self.bad_rows = self.bad_rows.saturating_add(1);
    }

    pub fn bad_rows(&self) -> u64 {
        self.bad_rows
    }

    /// `None` when no row was added.
    pub fn finish(self, ip: IpAddr) -> Option<VmSummary> {
        let last = self.last?;
        let first_seen_ms = self.first_seen_ms.unwrap_or(last.recv_ms);
        let interval_s = most_frequent(&self.intervals).unwrap_or(last.stat.interval_s);
        let (vcpus, mem_mib) =
            most_frequent(&self.sizes).unwrap_or((last.stat.vcpus, last.stat.mem_mib));
        let bound = jump_bound(last.recv_ms.saturating_sub(first_seen_ms), interval_s);
        let (mut lost, mut seq_jumps) = (0u64, 0u64);
        for boot in self.boots.values() {
            for pair in boot.ranges.windows(2) {
                let gap = pair[1].0 - pair[0].1 - 1;
                if gap <= bound {
                    lost = lost.saturating_add(gap);
                } else {
                    seq_jumps += 1;
                }
            }
        }
        let own_boot = self
            .boots
            .get(&last.stat.boot_id)
            .is_some_and(|b| b.rows >= 2);
        Some(VmSummary {
            ip,
            samples: self.cpu.n,
            vcpus,
            mem_mib,
            interval_s,
            size_changes: self.size_changes,
            last_size_change_ms: self.last_size_change_ms,
            cpu_p50: self.cpu.percentile(50.0),
            cpu_p95: self.cpu.percentile(95.0),
            cpu_p99: self.cpu.percentile(99.0),
            cpu_max: self.cpu.max(),
            mem_p95: self.mem.percentile(95.0),
            mem_p99: self.mem.percentile(99.0),
            mem_max: self.mem.max(),
            gcp_cpu_low: self.gcp_low[0],
            gcp_rx_low: self.gcp_low[1],
            gcp_tx_low: self.gcp_low[2],
            net_p95_bps: p95(&self.net),
            disk_p95_bps: p95(&self.disk),
            lost,
            duplicates: self.duplicates,
            out_of_order: self.out_of_order,
            restarts: (self.boots.len() as u64).saturating_sub(1),
            seq_jumps,
            first_seen_ms,
            last_seen_ms: last.recv_ms,
            stopped: last.stat.is_final() && own_boot,
            bad_rows: self.bad_rows,
            days: self
                .days
                .iter()
                .map(|(day, acc)| acc.finish(*day))
                .collect(),
        })
    }
}
