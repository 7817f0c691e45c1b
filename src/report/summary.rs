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

use super::codec::{Corrupt, Reader, put, put_opt};
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
    /// Samples at `mem_max`: 1 says the peak rests on a single datagram.
    pub mem_max_samples: u64,
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
    /// Rows received earlier than the row before them in their file: the
    /// aggregator's clock stepped back (a boot before NTP), or an edit.
    pub recv_backwards: u64,
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

/// Exact counts of a percentage in 0.01 % steps, with the range of values
/// seen so that scans and resets touch only that range.
struct PctCounts {
    counts: Box<[u64]>,
    n: u64,
    lo: usize,
    hi: usize,
}

impl PctCounts {
    fn new() -> PctCounts {
        PctCounts {
            counts: vec![0; usize::from(MAX_PCT_X100) + 1].into_boxed_slice(),
            n: 0,
            lo: 0,
            hi: 0,
        }
    }

    fn add_n(&mut self, x100: u16, count: u64) {
        let i = usize::from(x100.min(MAX_PCT_X100));
        if self.n == 0 {
            (self.lo, self.hi) = (i, i);
        } else {
            (self.lo, self.hi) = (self.lo.min(i), self.hi.max(i));
        }
        self.counts[i] = self.counts[i].saturating_add(count);
        self.n = self.n.saturating_add(count);
    }

    fn add(&mut self, x100: u16) {
        self.add_n(x100, 1);
    }

    /// The values seen and their counts, lowest first.
    fn seen(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        let range = if self.n == 0 {
            0..0
        } else {
            self.lo..self.hi + 1
        };
        self.counts[range.clone()]
            .iter()
            .zip(range)
            .filter(|(c, _)| **c > 0)
            .map(|(c, v)| (v, *c))
    }

    fn reset(&mut self) {
        if self.n > 0 {
            self.counts[self.lo..=self.hi].fill(0);
        }
        self.n = 0;
    }

    /// Nearest-rank percentiles, in percent, in one pass (`ps` ascending).
    fn percentiles<const N: usize>(&self, ps: [f64; N]) -> [f64; N] {
        let ranks = ps.map(|p| ((p / 100.0) * self.n as f64).ceil().max(1.0) as u64);
        let mut out = [0.0; N];
        let mut next = 0;
        let mut seen = 0;
        for (value, count) in self.seen() {
            seen += count;
            while next < N && seen >= ranks[next] {
                out[next] = value as f64 / 100.0;
                next += 1;
            }
            if next == N {
                break;
            }
        }
        out
    }

    fn max(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.hi as f64 / 100.0
        }
    }

    /// How many values equal the highest.
    fn at_max(&self) -> u64 {
        if self.n == 0 { 0 } else { self.counts[self.hi] }
    }
}

/// Rates, bytes/s, to 3 significant digits (0.1 %).
fn rate_histogram() -> Histogram<u64> {
    Histogram::new(3).expect("3 significant digits is valid")
}

/// Values held before they go into a histogram: up to this many a
/// segment's few rates are kept as they are (walking a histogram's buckets
/// to store it costs more than all its rows), past it memory stays bounded.
const RATES_HELD: usize = 1 << 16;

/// Network or disk rates: the values themselves while few, then an HDR
/// histogram (see [`RATES_HELD`]).
struct Rates {
    values: Vec<u64>,
    spilled: Histogram<u64>,
}

impl Rates {
    fn new() -> Rates {
        Rates {
            values: Vec::new(),
            spilled: rate_histogram(),
        }
    }

    fn add_n(&mut self, v: u64, n: u64) {
        if (self.values.len() as u64).saturating_add(n) > RATES_HELD as u64 {
            if self.spilled.record_n(v, n).is_err() {
                self.spilled.saturating_record_n(v, n);
            }
        } else if n == 1 {
            self.values.push(v);
        } else {
            self.values.extend(std::iter::repeat_n(v, n as usize));
        }
    }

    fn reset(&mut self) {
        self.values.clear();
        if !self.spilled.is_empty() {
            self.spilled.reset();
        }
    }

    /// All of them in one histogram.
    fn histogram(&self) -> Histogram<u64> {
        let mut h = self.spilled.clone();
        for v in &self.values {
            record(&mut h, *v);
        }
        h
    }

    /// The nearest-rank p95 as the low end of its bucket: exact below
    /// 2,048, within 0.1 % above. Values not yet in the histogram are
    /// ranked directly, as the histogram would (same rank, same bucket).
    fn p95(&self) -> f64 {
        if !self.spilled.is_empty() {
            let h = self.histogram();
            return h.lowest_equivalent(h.value_at_quantile(0.95)) as f64;
        }
        if self.values.is_empty() {
            return 0.0;
        }
        let rank = ((0.95 * self.values.len() as f64).ceil() as usize).max(1);
        let mut values = self.values.clone();
        let (_, v, _) = values.select_nth_unstable(rank - 1);
        self.spilled.lowest_equivalent(*v) as f64
    }

    /// (bucket, count) pairs, each bucket named by its highest value. The
    /// values held become their buckets' highest, which ranks them the same.
    fn encode(&mut self, out: &mut Vec<u8>) {
        if !self.spilled.is_empty() {
            let h = self.histogram();
            let pairs = || {
                h.iter_recorded()
                    .map(|b| (b.value_iterated_to(), b.count_at_value()))
            };
            return put_counts(out, pairs().count(), pairs());
        }
        for v in &mut self.values {
            *v = self.spilled.highest_equivalent(*v);
        }
        self.values.sort_unstable();
        let runs = || {
            self.values
                .chunk_by(|a, b| a == b)
                .map(|run| (run[0], run.len() as u64))
        };
        put_counts(out, runs().count(), runs());
    }

    fn absorb(&mut self, r: &mut Reader, max_rows: u64) -> Result<(), Corrupt> {
        get_counts(r, max_rows, |v, n| self.add_n(v, n))
    }
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
        join_range(&mut self.ranges, (s, s), ranges_left > 0)
    }
}

/// Joins `(a, b)` into sorted, disjoint, non-touching ranges, merging
/// touching ones. An overlap with a range already there is a duplicate and
/// changes nothing; a range that would stand alone is added only when
/// `may_add` (else it is untracked).
fn join_range(ranges: &mut Vec<(u64, u64)>, (a, b): (u64, u64), may_add: bool) -> Seen {
    let i = ranges.partition_point(|r| r.1 < a);
    if ranges.get(i).is_some_and(|r| r.0 <= b) {
        return Seen::Duplicate;
    }
    let joins_prev = i > 0 && ranges[i - 1].1.checked_add(1) == Some(a);
    let joins_next = ranges.get(i).is_some_and(|r| b.checked_add(1) == Some(r.0));
    match (joins_prev, joins_next) {
        (true, true) => {
            ranges[i - 1].1 = ranges[i].1;
            ranges.remove(i);
        }
        (true, false) => ranges[i - 1].1 = b,
        (false, true) => ranges[i].0 = a,
        (false, false) if !may_add => return Seen::Untracked,
        (false, false) => ranges.insert(i, (a, b)),
    }
    Seen::New
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

/// Counts `n` more of `key`; false when the map is full and `key` new.
fn count_value<K: std::hash::Hash + Eq>(map: &mut HashMap<K, u64>, key: K, n: u64) -> bool {
    let len = map.len();
    match map.get_mut(&key) {
        Some(c) => *c = c.saturating_add(n),
        None if len < MAX_DISTINCT => {
            map.insert(key, n);
        }
        None => return false,
    }
    true
}

/// The most frequent key; ties go to the larger key, so the choice does
/// not depend on the map's order.
fn most_frequent<K: Copy + Ord>(map: &HashMap<K, u64>) -> Option<K> {
    map.iter().max_by_key(|(k, n)| (**n, **k)).map(|(k, _)| *k)
}

/// Follows the receive times of a file's rows in file order: the
/// aggregator writes them in the order it received them, so a row earlier
/// than the one before it means its clock stepped back (a boot before NTP)
/// or the file was edited; such rows are counted and shown.
#[derive(Debug, Default)]
pub struct TimeOrder {
    last_ms: Option<u64>,
}

impl TimeOrder {
    /// Following a row received at `last_ms` (a cached day's last).
    pub fn after(last_ms: Option<u64>) -> TimeOrder {
        TimeOrder { last_ms }
    }

    /// Takes the next row's receive time: true when it is earlier than
    /// the row before it.
    fn steps_back(&mut self, recv_ms: u64) -> bool {
        let back = self.last_ms.is_some_and(|last| recv_ms < last);
        self.last_ms = Some(recv_ms);
        back
    }

    /// Takes the receive time of a row that is not added (outside the
    /// window), so the next one is compared with it.
    pub fn follow(&mut self, recv_ms: u64) {
        self.last_ms = Some(recv_ms);
    }
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
    net: Rates,
    disk: Rates,
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
    /// The first row's size and receive time (what a segment that follows
    /// another of the same file compares with the size before it).
    first: Option<((u16, u32), u64)>,
    first_seen_ms: Option<u64>,
    last: Option<Row>,
    bad_rows: u64,
    recv_backwards: u64,
    days: BTreeMap<u64, DayAcc>,
    /// A bound was reached (seq ranges, distinct sizes or intervals): the
    /// figures are still right for these rows, but merging them with
    /// others' could differ from reading all rows in order.
    capped: bool,
    /// The CPU counts of the segment being absorbed, for its day.
    held: Vec<(u16, u64)>,
}

impl Default for Accumulator {
    fn default() -> Self {
        Accumulator {
            cpu: PctCounts::new(),
            mem: PctCounts::new(),
            net: Rates::new(),
            disk: Rates::new(),
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
            first: None,
            first_seen_ms: None,
            last: None,
            bad_rows: 0,
            recv_backwards: 0,
            days: BTreeMap::new(),
            capped: false,
            held: Vec::new(),
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
        match in_file.insert(s.seq, left) {
            Seen::Duplicate => {
                self.duplicates = self.duplicates.saturating_add(1);
                return;
            }
            Seen::Untracked => self.capped = true,
            Seen::New => {}
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
        match boot.insert(s.seq, MAX_RANGES.saturating_sub(self.ranges)) {
            Seen::Duplicate => return,
            Seen::Untracked => self.capped = true,
            Seen::New => {}
        }
        self.ranges = self.ranges + boot.ranges.len() - before;
        boot.rows += 1;

        self.cpu.add(s.cpu_pct_x100);
        self.mem.add(s.mem_pct_x100);
        let secs = u64::from(s.interval_s.max(1));
        let net = s.net_rx_bytes.saturating_add(s.net_tx_bytes) / secs;
        let disk = s.disk_read_bytes.saturating_add(s.disk_write_bytes) / secs;
        self.net.add_n(net, 1);
        self.disk.add_n(disk, 1);
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
        let size = (s.vcpus, s.mem_mib);
        if !count_value(&mut self.intervals, s.interval_s, 1)
            | !count_value(&mut self.sizes, size, 1)
        {
            self.capped = true;
        }
        self.first.get_or_insert((size, row.recv_ms));
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

    /// Adds `row`, the next in its file after the rows `order` followed,
    /// counting it when it was received earlier than the row before it.
    pub fn add_after(&mut self, row: &Row, order: &mut TimeOrder) {
        if order.steps_back(row.recv_ms) {
            self.recv_backwards = self.recv_backwards.saturating_add(1);
        }
        self.add(row);
    }

    /// `None` when no row was added.
    pub fn finish(&self, ip: IpAddr) -> Option<VmSummary> {
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
        let [cpu_p50, cpu_p95, cpu_p99] = self.cpu.percentiles([50.0, 95.0, 99.0]);
        let [mem_p95, mem_p99] = self.mem.percentiles([95.0, 99.0]);
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
            cpu_p50,
            cpu_p95,
            cpu_p99,
            cpu_max: self.cpu.max(),
            mem_p95,
            mem_p99,
            mem_max: self.mem.max(),
            mem_max_samples: self.mem.at_max(),
            gcp_cpu_low: self.gcp_low[0],
            gcp_rx_low: self.gcp_low[1],
            gcp_tx_low: self.gcp_low[2],
            net_p95_bps: self.net.p95(),
            disk_p95_bps: self.disk.p95(),
            lost,
            duplicates: self.duplicates,
            out_of_order: self.out_of_order,
            restarts: (self.boots.len() as u64).saturating_sub(1),
            seq_jumps,
            first_seen_ms,
            last_seen_ms: last.recv_ms,
            stopped: last.stat.is_final() && own_boot,
            bad_rows: self.bad_rows,
            recv_backwards: self.recv_backwards,
            days: self
                .days
                .iter()
                .map(|(day, acc)| acc.finish(*day))
                .collect(),
        })
    }
}

/// Why a segment cannot be merged into a summary exactly: its rows share a
/// (boot_id, seq) with rows already taken, or interleave with the seqs
/// before them in the same file, or it does not decode. The report then
/// reads the VM's rows in order instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmergeable {
    Overlap,
    Interleaved,
    Corrupt,
}

impl From<Corrupt> for Unmergeable {
    fn from(_: Corrupt) -> Self {
        Unmergeable::Corrupt
    }
}

/// `n` sorted (value, count) pairs as deltas of value and counts.
fn put_counts(out: &mut Vec<u8>, n: usize, pairs: impl Iterator<Item = (u64, u64)>) {
    put(out, n as u64);
    let mut prev = 0;
    for (v, c) in pairs {
        put(out, v - prev);
        put(out, c);
        prev = v;
    }
}

/// Calls `f` with each pair [`put_counts`] wrote; the counts may add up
/// to `max_rows` at most.
fn get_counts(r: &mut Reader, max_rows: u64, mut f: impl FnMut(u64, u64)) -> Result<(), Corrupt> {
    let (mut v, mut total) = (0u64, 0u64);
    for _ in 0..r.get_len()? {
        v = v.checked_add(r.get()?).ok_or(Corrupt)?;
        let n = r.get()?;
        total = total
            .checked_add(n)
            .filter(|t| *t <= max_rows)
            .ok_or(Corrupt)?;
        f(v, n);
    }
    Ok(())
}

/// What a stored segment may claim, from where it lies in its file: its
/// day, and at most as many rows as its bytes can hold. Every count
/// decoded is checked against these, so a crafted entry with a valid
/// checksum is refused rather than trusted (or allowed to overflow).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentBounds {
    pub day: u64,
    pub max_rows: u64,
    /// Lines that are not rows can be one byte each, and those before a
    /// file's first row count in its first day: as many as the bytes up to
    /// the segment's end.
    pub max_lines: u64,
}

/// A count decoded from a segment, refused past `max` (what the
/// segment's bytes can hold).
fn get_count(r: &mut Reader, max: u64) -> Result<u64, Corrupt> {
    r.get()
        .and_then(|n| if n <= max { Ok(n) } else { Err(Corrupt) })
}

/// Encodes the fields of a row the summary keeps.
fn put_row(out: &mut Vec<u8>, row: &Row) {
    let s = &row.stat;
    for v in [
        row.recv_ms,
        u64::from(s.flags),
        u64::from(s.interval_s),
        u64::from(s.boot_id),
        u64::from(s.vcpus),
        s.seq,
        s.timestamp_ms,
        u64::from(s.cpu_pct_x100),
        u64::from(s.mem_pct_x100),
        u64::from(s.mem_mib),
        s.net_rx_bytes,
        s.net_tx_bytes,
        s.disk_read_bytes,
        s.disk_write_bytes,
    ] {
        put(out, v);
    }
}

fn get_row(r: &mut Reader) -> Result<Row, Corrupt> {
    Ok(Row {
        recv_ms: r.get()?,
        stat: crate::wire::Stat {
            flags: r.get_as()?,
            interval_s: r.get_as()?,
            boot_id: r.get_as()?,
            vcpus: r.get_as()?,
            seq: r.get()?,
            timestamp_ms: r.get()?,
            cpu_pct_x100: r.get_as()?,
            mem_pct_x100: r.get_as()?,
            mem_mib: r.get_as()?,
            net_rx_bytes: r.get()?,
            net_tx_bytes: r.get()?,
            disk_read_bytes: r.get()?,
            disk_write_bytes: r.get()?,
        },
    })
}

fn put_size(out: &mut Vec<u8>, size: (u16, u32)) {
    put(out, u64::from(size.0));
    put(out, u64::from(size.1));
}

fn get_size(r: &mut Reader) -> Result<(u16, u32), Corrupt> {
    Ok((r.get_as()?, r.get_as()?))
}

/// Joins a range of a segment into `ranges`; an overlap means the two
/// hold the same (boot_id, seq), which merging cannot count exactly.
fn insert_range(ranges: &mut Vec<(u64, u64)>, range: (u64, u64)) -> Result<(), Unmergeable> {
    match join_range(ranges, range, true) {
        Seen::Duplicate => Err(Unmergeable::Overlap),
        Seen::New | Seen::Untracked => Ok(()),
    }
}

/// Segments: the rows of one file on one UTC day, summarized apart so the
/// report can keep them (the summary cache) and merge the days a window
/// covers without reading their rows again. Merging is exact when the
/// segments share no (boot_id, seq) and, within a file, each segment's
/// seqs follow the ones before it; anything else is [`Unmergeable`].
impl Accumulator {
    /// Empties it for reuse, touching only what was used.
    pub fn reset(&mut self) {
        self.cpu.reset();
        self.mem.reset();
        self.net.reset();
        self.disk.reset();
        self.boots.clear();
        self.ranges = 0;
        self.start_file();
        self.duplicates = 0;
        self.out_of_order = 0;
        self.gcp_low = [0; 3];
        self.intervals.clear();
        self.sizes.clear();
        self.size_changes = 0;
        self.last_size_change_ms = None;
        self.first = None;
        self.first_seen_ms = None;
        self.last = None;
        self.bad_rows = 0;
        self.recv_backwards = 0;
        self.days.clear();
        self.capped = false;
    }

    /// Whether a bound was reached: merged figures could then differ from
    /// reading the rows in order.
    pub fn capped(&self) -> bool {
        self.capped
    }

    /// The state of an accumulator that read one file (one segment of it),
    /// in the form [`Accumulator::absorb`] takes.
    pub fn encode(&mut self, out: &mut Vec<u8>) {
        put(out, u64::from(self.capped));
        for counts in [&self.cpu, &self.mem] {
            let pairs = || counts.seen().map(|(v, c)| (v as u64, c));
            put_counts(out, pairs().count(), pairs());
        }
        self.net.encode(out);
        self.disk.encode(out);
        put(out, self.boots.len() as u64);
        for (id, boot) in &self.boots {
            let max = self.file_boots.get(id).map_or(boot.max, |b| b.max);
            put(out, u64::from(*id));
            put(out, max);
            put(out, boot.rows);
            put(out, boot.ranges.len() as u64);
            for (a, b) in &boot.ranges {
                put(out, *a);
                put(out, b - a);
            }
        }
        put(out, self.duplicates);
        put(out, self.out_of_order);
        self.gcp_low.iter().for_each(|n| put(out, *n));
        put(out, self.intervals.len() as u64);
        for (interval, n) in &self.intervals {
            put(out, u64::from(*interval));
            put(out, *n);
        }
        put(out, self.sizes.len() as u64);
        for (size, n) in &self.sizes {
            put_size(out, *size);
            put(out, *n);
        }
        match self.first {
            Some((size, ms)) => {
                out.push(1);
                put_size(out, size);
                put(out, ms);
            }
            None => out.push(0),
        }
        match self.size {
            Some(size) => {
                out.push(1);
                put_size(out, size);
            }
            None => out.push(0),
        }
        put(out, self.size_changes);
        put_opt(out, self.last_size_change_ms);
        put_opt(out, self.first_seen_ms);
        match &self.last {
            Some(row) => {
                out.push(1);
                put_row(out, row);
            }
            None => out.push(0),
        }
        put(out, self.bad_rows);
        put(out, self.recv_backwards);
        // A segment is one day: its samples and CPU counts are the ones
        // above, so only the rest of the day's figures are stored.
        debug_assert!(self.days.len() <= 1, "a segment holds one day");
        out.push(u8::from(!self.days.is_empty()));
        if let Some((day, acc)) = self.days.iter().next() {
            put(out, *day);
            for v in [
                u64::from(acc.cpu_max),
                u64::from(acc.mem_max),
                acc.net_bytes,
                acc.disk_bytes,
                acc.covered_s,
            ] {
                put(out, v);
            }
        }
    }

    /// Adds an encoded segment that follows what was added so far in the
    /// current file (call [`Accumulator::start_file`] first for a segment
    /// of another file). On error the accumulator is left part-merged:
    /// the caller starts the VM over.
    pub fn absorb(&mut self, segment: &[u8], bounds: SegmentBounds) -> Result<(), Unmergeable> {
        let max_rows = bounds.max_rows;
        let r = &mut Reader::new(segment);
        self.capped |= r.get()? != 0;
        self.held.clear();
        get_counts(r, max_rows, |v, c| {
            let v = v.min(u64::from(MAX_PCT_X100)) as u16;
            self.cpu.add_n(v, c);
            self.held.push((v, c));
        })?;
        get_counts(r, max_rows, |v, c| {
            self.mem.add_n(v.min(u64::from(MAX_PCT_X100)) as u16, c)
        })?;
        self.net.absorb(r, max_rows)?;
        self.disk.absorb(r, max_rows)?;
        for _ in 0..r.get_len()? {
            let id: u32 = r.get_as()?;
            let (max, rows) = (r.get()?, get_count(r, max_rows)?);
            let in_file = self.file_boots.entry(id).or_default();
            let global = self.boots.entry(id).or_default();
            let mut lowest = None;
            for _ in 0..r.get_len()? {
                let a = r.get()?;
                let b = a.checked_add(r.get()?).ok_or(Corrupt)?;
                lowest = Some(lowest.map_or(a, |l: u64| l.min(a)));
                let before = global.ranges.len();
                insert_range(&mut global.ranges, (a, b))?;
                self.ranges = self.ranges + global.ranges.len() - before;
                let before = in_file.ranges.len();
                insert_range(&mut in_file.ranges, (a, b))?;
                self.file_ranges = self.file_ranges + in_file.ranges.len() - before;
            }
            if in_file.rows > 0 && lowest.is_some_and(|l| l < in_file.max) {
                return Err(Unmergeable::Interleaved);
            }
            in_file.max = if in_file.rows == 0 {
                max
            } else {
                in_file.max.max(max)
            };
            in_file.rows = in_file.rows.saturating_add(rows);
            global.rows = global.rows.saturating_add(rows);
            self.capped |= self.ranges > MAX_RANGES || self.file_ranges > MAX_RANGES;
        }
        self.duplicates = self.duplicates.saturating_add(get_count(r, max_rows)?);
        self.out_of_order = self.out_of_order.saturating_add(get_count(r, max_rows)?);
        for n in &mut self.gcp_low {
            *n = n.saturating_add(get_count(r, max_rows)?);
        }
        for _ in 0..r.get_len()? {
            let (interval, n) = (r.get_as()?, get_count(r, max_rows)?);
            self.capped |= !count_value(&mut self.intervals, interval, n);
        }
        for _ in 0..r.get_len()? {
            let (size, n) = (get_size(r)?, get_count(r, max_rows)?);
            self.capped |= !count_value(&mut self.sizes, size, n);
        }
        if r.get_opt_flag()? {
            let (size, ms) = (get_size(r)?, r.get()?);
            if self.size.is_some_and(|was| was != size) {
                self.size_changes = self.size_changes.saturating_add(1);
                self.last_size_change_ms = Some(ms);
            }
            self.first.get_or_insert((size, ms));
        }
        if r.get_opt_flag()? {
            self.size = Some(get_size(r)?);
        }
        self.size_changes = self.size_changes.saturating_add(get_count(r, max_rows)?);
        if let Some(ms) = r.get_opt()? {
            self.last_size_change_ms = Some(ms);
        }
        if let Some(ms) = r.get_opt()? {
            self.first_seen_ms = Some(self.first_seen_ms.map_or(ms, |f| f.min(ms)));
        }
        if r.get_opt_flag()? {
            let row = get_row(r)?;
            if self.last.is_none_or(|last| row.recv_ms >= last.recv_ms) {
                self.last = Some(row);
            }
        }
        self.bad_rows = self
            .bad_rows
            .saturating_add(get_count(r, bounds.max_lines)?);
        self.recv_backwards = self.recv_backwards.saturating_add(get_count(r, max_rows)?);
        if r.get_opt_flag()? {
            let day = r.get()?;
            if day != bounds.day {
                return Err(Unmergeable::Corrupt);
            }
            let acc = self.days.entry(day).or_insert_with(DayAcc::new);
            for (v, c) in &self.held {
                acc.samples = acc.samples.saturating_add(*c);
                let bucket = &mut acc.cpu[usize::from(*v / 10)];
                *bucket = bucket.saturating_add((*c).min(u64::from(u32::MAX)) as u32);
                acc.cpu_sum = acc.cpu_sum.saturating_add(u64::from(*v).saturating_mul(*c));
            }
            acc.cpu_max = acc.cpu_max.max(r.get_as()?);
            acc.mem_max = acc.mem_max.max(r.get_as()?);
            acc.net_bytes = acc.net_bytes.saturating_add(r.get()?);
            acc.disk_bytes = acc.disk_bytes.saturating_add(r.get()?);
            acc.covered_s = acc.covered_s.saturating_add(r.get()?);
        }
        if !r.is_empty() {
            return Err(Unmergeable::Corrupt);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Stat, TEST_VECTOR};
    use proptest::prelude::*;

    /// `n` rows of one boot, a minute apart, on day 20,000.
    fn rows(n: u64, cpu: u16, net: u64) -> Vec<Row> {
        (0..n)
            .map(|i| Row {
                recv_ms: 20_000 * DAY_MS + i * 60_000,
                stat: Stat {
                    seq: i,
                    cpu_pct_x100: cpu,
                    net_rx_bytes: net * i,
                    ..TEST_VECTOR
                },
            })
            .collect()
    }

    fn segment_of(rows: &[Row]) -> Vec<u8> {
        let mut acc = Accumulator::default();
        for r in rows {
            acc.add(r);
        }
        let mut out = Vec::new();
        acc.encode(&mut out);
        out
    }

    fn bounds(rows: u64) -> SegmentBounds {
        SegmentBounds {
            day: 20_000,
            max_rows: rows,
            max_lines: rows,
        }
    }

    /// The varints of an encoded segment.
    fn values_of(segment: &[u8]) -> Vec<u64> {
        let r = &mut Reader::new(segment);
        let mut values = Vec::new();
        while !r.is_empty() {
            values.push(r.get().unwrap());
        }
        values
    }

    fn segment_from(values: &[u64]) -> Vec<u8> {
        let mut out = Vec::new();
        for v in values {
            put(&mut out, *v);
        }
        out
    }

    /// Absorbs `segment` into a fresh accumulator and summarizes it: a
    /// refusal is fine, a panic is the bug.
    fn absorb_and_finish(segment: &[u8], b: SegmentBounds) -> bool {
        let mut acc = Accumulator::default();
        let ok = acc.absorb(segment, b).is_ok();
        if ok {
            let _ = acc.finish("127.0.0.1".parse().unwrap());
        }
        ok
    }

    #[test]
    fn a_segment_read_back_gives_the_rows_summary() {
        let rows = rows(50, 4200, 1000);
        let mut direct = Accumulator::default();
        for r in &rows {
            direct.add(r);
        }
        let mut merged = Accumulator::default();
        merged.absorb(&segment_of(&rows), bounds(50)).unwrap();
        let ip = "127.0.0.1".parse().unwrap();
        assert_eq!(
            format!("{:?}", merged.finish(ip)),
            format!("{:?}", direct.finish(ip))
        );
        // More rows than the segment's bytes can hold, or another day:
        // refused.
        assert!(merged.absorb(&segment_of(&rows), bounds(49)).is_err());
        let other_day = SegmentBounds {
            day: 20_001,
            ..bounds(50)
        };
        assert!(
            Accumulator::default()
                .absorb(&segment_of(&rows), other_day)
                .is_err()
        );
    }

    #[test]
    fn rate_counts_that_overflow_are_refused_not_allocated() {
        // The audit's pairs (1, 5), (2, 2^64 - 4): their total wraps.
        let mut r = Rates::new();
        let bytes = segment_from(&[2, 1, 5, 1, u64::MAX - 3]);
        assert_eq!(r.absorb(&mut Reader::new(&bytes), u64::MAX), Err(Corrupt));
        // Within the total but past what the bytes can hold.
        let bytes = segment_from(&[1, 7, 1 << 40]);
        assert_eq!(r.absorb(&mut Reader::new(&bytes), 1 << 20), Err(Corrupt));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// Any value of a real segment replaced by any other (small,
        /// huge, or at the edges of the integer) is refused or merged;
        /// never a panic, an overflow or a huge allocation.
        #[test]
        fn a_segment_with_any_one_value_changed_never_panics(
            n in 1u64..40,
            cpu in 0u16..=10_000,
            at in any::<prop::sample::Index>(),
            to in prop_oneof![0u64..300, any::<u64>(), (0u64..8).prop_map(|k| u64::MAX - k)],
        ) {
            let mut values = values_of(&segment_of(&rows(n, cpu, 4096)));
            let i = at.index(values.len());
            values[i] = to;
            absorb_and_finish(&segment_from(&values), bounds(n));
        }

        /// Random well-formed varint streams, as a crafted entry with a
        /// recomputed checksum would hold.
        #[test]
        fn any_stream_of_values_never_panics(
            values in prop::collection::vec(
                prop_oneof![0u64..4, 0u64..300, any::<u64>(), (0u64..8).prop_map(|k| u64::MAX - k)],
                0..80,
            ),
            max_rows in prop_oneof![0u64..100, any::<u64>()],
        ) {
            absorb_and_finish(&segment_from(&values), bounds(max_rows));
        }
    }
}
