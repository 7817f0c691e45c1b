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
//!
//! The state is one [`Accumulator`]; its parts have rooms of their own:
//! `counts` (exact percent counts and rate histograms), `demand` (those
//! counts per size, which make vCPUs busy and memory in use exact),
//! `seqs` (boots and their seq ranges), `day` (one UTC day's figures), and
//! `stored` (a segment's state as the cache keeps it, and how one is
//! merged).

mod counts;
mod day;
mod demand;
mod seqs;
mod stored;

use std::collections::HashMap;
use std::net::IpAddr;

use super::codec::Corrupt;
use crate::wire::Row;
use counts::Rates;
pub use day::DaySummary;
use day::Days;
use demand::BySize;
pub use demand::{Demand, Over, Probe};
pub use seqs::jump_bound;
use seqs::{Seen, Seqs};

/// What one VM's rows say, before any verdict. Its groups are what the
/// JSON report shows under the same names (it serializes them as they
/// are, so a field added here is in the report).
#[derive(Debug, Clone, PartialEq)]
pub struct VmSummary {
    pub ip: IpAddr,
    pub size: SizeSummary,
    pub utilization: Utilization,
    pub datagrams: Datagrams,
    /// vCPUs busy and memory in use, for rightsizing.
    pub demand: Demand,
    /// Samples under GCP's idle lines: CPU below 0.03 vCPU, received below
    /// 2,000 B/s, sent below 1,000 B/s (see `policy`).
    pub gcp_cpu_low: u64,
    pub gcp_rx_low: u64,
    pub gcp_tx_low: u64,
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    /// The latest row carries the final flag, from a boot seen before it:
    /// the agent stopped on purpose.
    pub stopped: bool,
    /// Per UTC day with data, oldest first.
    pub days: Vec<DaySummary>,
}

/// The most frequent size and interval in the window, and its changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SizeSummary {
    pub vcpus: u16,
    pub mem_mib: u32,
    pub interval_s: u16,
    /// Times the size differed from the row before, and when it last did.
    pub size_changes: u64,
    pub last_size_change_ms: Option<u64>,
}

/// Percentiles of the window's samples (nearest rank; CPU and memory
/// exact, rates within 0.1 %).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Utilization {
    pub cpu_p50: f64,
    pub cpu_p95: f64,
    pub cpu_p99: f64,
    pub cpu_max: f64,
    pub mem_p95: f64,
    pub mem_max: f64,
    /// p95 of (net rx + tx) / interval, bytes/s.
    pub net_p95_bps: f64,
    /// p95 of (disk read + write) / interval, bytes/s.
    pub disk_p95_bps: f64,
}

/// What the VM's sequence numbers and lines say about its datagrams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Datagrams {
    /// Distinct (boot_id, seq) rows in the window.
    pub samples: u64,
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
    /// Lines of the files that are not rows (torn last line excluded).
    pub bad_rows: u64,
    /// Rows received earlier than the row before them in their file: the
    /// aggregator's clock stepped back (a boot before NTP), or an edit.
    pub recv_backwards: u64,
    /// Of `samples`, those from verified version 2 datagrams.
    pub authenticated: u64,
    /// Rows without the verified flag left out: the VM has verified rows
    /// in the window (or the report requires them), so rows claiming its
    /// address without proof are counted here and ignored everywhere else.
    pub unauthenticated_rows: u64,
}

/// Milliseconds in a day: days are UTC days of the receive time.
pub const DAY_MS: u64 = 86_400_000;

/// GCP's idle lines (its idle VM recommender's defaults): 0.03 vCPU, as
/// cpu% x vCPUs in hundredths; received and sent bytes per second.
const GCP_CPU_X100: u64 = 300;
const GCP_RX_BPS: u64 = 2000;
const GCP_TX_BPS: u64 = 1000;

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
    /// CPU and memory counts per size the samples ran at (the VM's are
    /// their sum).
    by_size: BySize,
    net: Rates,
    disk: Rates,
    /// Every file's seqs together: what counts once.
    seqs: Seqs,
    /// This file's seqs: what is a duplicate or out of order.
    file_seqs: Seqs,
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
    /// Rows taken that are verified, and (when only those are taken) the
    /// others left out.
    verified: u64,
    only_verified: bool,
    unverified_skipped: u64,
    days: Days,
    /// A bound was reached (seq ranges, distinct sizes or intervals): the
    /// figures are still right for these rows, but merging them with
    /// others' could differ from reading all rows in order.
    capped: bool,
    /// The CPU counts of the segment being absorbed, for its day (read
    /// once, used twice).
    held: Vec<(u16, u64)>,
}

impl Default for Accumulator {
    fn default() -> Self {
        Accumulator {
            by_size: BySize::default(),
            net: Rates::new(),
            disk: Rates::new(),
            seqs: Seqs::default(),
            file_seqs: Seqs::default(),
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
            verified: 0,
            only_verified: false,
            unverified_skipped: 0,
            days: Days::default(),
            capped: false,
            held: Vec::new(),
        }
    }
}

impl Accumulator {
    /// The rows that follow come from another file.
    pub fn start_file(&mut self) {
        self.file_seqs.clear();
        self.size = None;
    }

    pub fn add(&mut self, row: &Row) {
        let s = &row.stat;
        if self.only_verified && !row.verified {
            self.unverified_skipped = self.unverified_skipped.saturating_add(1);
            return;
        }
        if !self.take_seq(s) {
            return;
        }
        self.verified += u64::from(row.verified);
        let secs = u64::from(s.interval_s.max(1));
        self.add_figures(s, secs);
        self.days.of(row.recv_ms / DAY_MS).add(s, secs);
        let size = (s.vcpus, s.mem_mib);
        if !count_value(&mut self.intervals, s.interval_s, 1)
            | !count_value(&mut self.sizes, size, 1)
        {
            self.capped = true;
        }
        self.follow_size(size, row.recv_ms);
        self.size = Some(size);
        self.seen_at(row.recv_ms);
        self.keep_latest(*row);
    }

    /// Takes the row's (boot_id, seq): false when it is a duplicate here,
    /// or the same datagram already taken from another file.
    fn take_seq(&mut self, s: &crate::wire::Stat) -> bool {
        let (seen, in_file) = self.file_seqs.insert(s.boot_id, s.seq);
        match seen {
            Seen::Duplicate => {
                self.duplicates = self.duplicates.saturating_add(1);
                return false;
            }
            Seen::Untracked => self.capped = true,
            Seen::New => {}
        }
        if in_file.behind(s.seq) {
            self.out_of_order = self.out_of_order.saturating_add(1);
        }
        in_file.take(s.seq, 1);
        let (seen, boot) = self.seqs.insert(s.boot_id, s.seq);
        match seen {
            Seen::Duplicate => return false,
            Seen::Untracked => self.capped = true,
            Seen::New => {}
        }
        boot.rows += 1;
        true
    }

    /// CPU and memory counts, network and disk rates, GCP's idle lines.
    fn add_figures(&mut self, s: &crate::wire::Stat, secs: u64) {
        let (at, own) = self.by_size.of((s.vcpus, s.mem_mib));
        at.cpu.add(s.cpu_pct_x100);
        at.mem.add(s.mem_pct_x100);
        self.capped |= !own;
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
    }

    /// A row (or a segment's first row) of `size` at `ms` follows the
    /// rows before it in its file: another size than theirs is a change.
    fn follow_size(&mut self, size: (u16, u32), ms: u64) {
        if self.size.is_some_and(|was| was != size) {
            self.size_changes = self.size_changes.saturating_add(1);
            self.last_size_change_ms = Some(ms);
        }
        self.first.get_or_insert((size, ms));
    }

    fn seen_at(&mut self, ms: u64) {
        self.first_seen_ms = Some(self.first_seen_ms.map_or(ms, |f| f.min(ms)));
    }

    /// The latest row by receive time is the one the VM's state comes from.
    fn keep_latest(&mut self, row: Row) {
        if self.last.is_none_or(|last| row.recv_ms >= last.recv_ms) {
            self.last = Some(row);
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

    /// `None` when no row was added. Demand and each day's are taken at
    /// `probe`'s CPU percentile, and the samples over the sizes it names
    /// counted.
    pub fn finish(&self, ip: IpAddr, probe: &dyn Probe) -> Option<VmSummary> {
        let last = self.last?;
        let first_seen_ms = self.first_seen_ms.unwrap_or(last.recv_ms);
        let interval_s = most_frequent(&self.intervals).unwrap_or(last.stat.interval_s);
        let (vcpus, mem_mib) =
            most_frequent(&self.sizes).unwrap_or((last.stat.vcpus, last.stat.mem_mib));
        let bound = jump_bound(last.recv_ms.saturating_sub(first_seen_ms), interval_s);
        let (mut lost, mut seq_jumps) = (0u64, 0u64);
        for (_, boot) in self.seqs.iter() {
            for pair in boot.ranges.windows(2) {
                let gap = pair[1].0 - pair[0].1 - 1;
                if gap <= bound {
                    lost = lost.saturating_add(gap);
                } else {
                    seq_jumps += 1;
                }
            }
        }
        let pct = probe.cpu_percentile();
        let figures = self.by_size.figures(pct);
        let [cpu_p50, cpu_p95, cpu_p99, cpu_max] = figures.cpu;
        let [mem_p95, mem_max] = figures.mem;
        let own_boot = self
            .seqs
            .get(last.stat.boot_id)
            .is_some_and(|b| b.rows >= 2);
        let mut vm = VmSummary {
            ip,
            size: SizeSummary {
                vcpus,
                mem_mib,
                interval_s,
                size_changes: self.size_changes,
                last_size_change_ms: self.last_size_change_ms,
            },
            utilization: Utilization {
                cpu_p50,
                cpu_p95,
                cpu_p99,
                cpu_max,
                mem_p95,
                mem_max,
                net_p95_bps: self.net.p95(),
                disk_p95_bps: self.disk.p95(),
            },
            datagrams: Datagrams {
                samples: figures.samples,
                lost,
                duplicates: self.duplicates,
                out_of_order: self.out_of_order,
                restarts: (self.seqs.len() as u64).saturating_sub(1),
                seq_jumps,
                bad_rows: self.bad_rows,
                recv_backwards: self.recv_backwards,
                authenticated: self.verified,
                unauthenticated_rows: self.unverified_skipped,
            },
            demand: figures.demand,
            gcp_cpu_low: self.gcp_low[0],
            gcp_rx_low: self.gcp_low[1],
            gcp_tx_low: self.gcp_low[2],
            first_seen_ms,
            last_seen_ms: last.recv_ms,
            stopped: last.stat.is_final() && own_boot,
            days: self
                .days
                .iter()
                .map(|(day, acc)| acc.finish(*day, pct))
                .collect(),
        };
        vm.demand.over = self.by_size.over(&probe.sizes(&vm));
        Some(vm)
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

/// Segments: the rows of one file on one UTC day, summarized apart so the
/// report can keep them (the summary cache) and merge the days a window
/// covers without reading their rows again. Merging is exact when the
/// segments share no (boot_id, seq) and, within a file, each segment's
/// seqs follow the ones before it; anything else is [`Unmergeable`].
impl Accumulator {
    /// Empties it for reuse, touching only what was used.
    pub fn reset(&mut self) {
        self.by_size.reset();
        self.net.reset();
        self.disk.reset();
        self.seqs.clear();
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
        self.verified = 0;
        self.only_verified = false;
        self.unverified_skipped = 0;
        self.days.clear();
        self.capped = false;
    }

    /// Whether a bound was reached: merged figures could then differ from
    /// reading the rows in order.
    pub fn capped(&self) -> bool {
        self.capped
    }

    /// Takes only rows from verified datagrams from here on, counting the
    /// others (a VM proven by some of its rows: the rest claim its
    /// address without proof).
    pub fn only_verified(&mut self) {
        self.only_verified = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::codec::{Reader, put};
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
                verified: false,
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
            let _ = crate::report::fixtures::finish(&acc, "127.0.0.1".parse().unwrap());
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
            format!("{:?}", crate::report::fixtures::finish(&merged, ip)),
            format!("{:?}", crate::report::fixtures::finish(&direct, ip))
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
        let pairs = counts::StoredCounts::of([(1, 5), (2, u64::MAX - 3)].into_iter());
        assert_eq!(r.absorb(&pairs, u64::MAX), Err(Corrupt));
        // Within the total but past what the bytes can hold.
        let pairs = counts::StoredCounts::of([(7, 1 << 40)].into_iter());
        assert_eq!(r.absorb(&pairs, 1 << 20), Err(Corrupt));
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

    use crate::report::fixtures::*;

    #[test]
    fn percentiles_are_nearest_rank_and_exact() {
        let rows: Vec<Row> = (1..=100).map(|s| row(s, s as u16 * 100, 0, s, 0)).collect();
        let vm = summary_of(&rows);
        assert_eq!(
            (
                vm.utilization.cpu_p50,
                vm.utilization.cpu_p95,
                vm.utilization.cpu_p99,
                vm.utilization.cpu_max
            ),
            (50.0, 95.0, 99.0, 100.0)
        );
        assert_eq!(vm.utilization.net_p95_bps, 95.0);
        assert_eq!(
            summary_of(&[row(0, 777, 0, 0, 0)]).utilization.cpu_p95,
            7.77
        );
    }

    #[test]
    fn loss_duplicates_reorder_and_restarts() {
        let mut rows: Vec<Row> = [0, 1, 3, 2, 2, 5]
            .iter()
            .map(|s| row(*s, 0, 0, 0, 0))
            .collect();
        // A restart: new boot_id, seq from 0 again, no loss across it.
        for s in 0..3 {
            let mut r = row(s, 0, 0, 0, 0);
            r.stat.boot_id = 8;
            rows.push(r);
        }
        let vm = summary_of(&rows);
        assert_eq!(
            vm.datagrams.samples, 8,
            "the repeated (boot_id, seq) counts once"
        );
        assert_eq!(vm.datagrams.lost, 1); // seq 4
        assert_eq!(vm.datagrams.duplicates, 1); // second 2
        assert_eq!(vm.datagrams.out_of_order, 1); // 2 after 3
        assert_eq!(vm.datagrams.restarts, 1);
        assert_eq!(vm.datagrams.seq_jumps, 0);
    }

    #[test]
    fn rates_divide_by_the_interval() {
        let mut r = row(0, 0, 0, 0, 0);
        r.stat.interval_s = 10;
        r.stat.net_rx_bytes = 30_000;
        r.stat.net_tx_bytes = 10_000;
        r.stat.disk_write_bytes = u64::MAX;
        r.stat.disk_read_bytes = 5;
        let vm = summary_of(&[r]);
        assert_eq!(vm.utilization.net_p95_bps, 4000.0);
        // Within the histogram's 0.1 %.
        let expected = u64::MAX as f64 / 10.0;
        assert!(
            (vm.utilization.disk_p95_bps - expected).abs() / expected < 0.001,
            "{}",
            vm.utilization.disk_p95_bps
        );
    }

    #[test]
    fn one_datagram_claiming_a_huge_size_is_not_the_size() {
        let mut rows = steady(20, 310, 6000, 410, 0);
        rows[5].stat.vcpus = 65_535;
        rows[5].stat.mem_mib = u32::MAX;
        let vm = summary_of(&rows);
        assert_eq!((vm.size.vcpus, vm.size.mem_mib), (8, 16_384));
        assert_eq!(vm.size.size_changes, 2, "to the spoofed size and back");
        assert_eq!(vm.size.last_size_change_ms, Some(rows[6].recv_ms));
    }

    #[test]
    fn a_seq_of_two_to_the_64_is_a_jump_not_trillions_lost() {
        let mut rows = steady(10, 0, 0, 0, 0);
        let mut spoof = row(10, 0, 0, 0, 0);
        spoof.stat.seq = u64::MAX;
        rows.push(spoof);
        let vm = summary_of(&rows);
        assert_eq!(vm.datagrams.lost, 0);
        assert_eq!(vm.datagrams.seq_jumps, 1);
        // A plausible gap is still loss: 10 intervals of 60 s span 600 s.
        let mut rows = steady(3, 0, 0, 0, 0);
        let mut late = row(20, 0, 0, 0, 0);
        late.recv_ms += 20 * 60_000;
        rows.push(late);
        let vm = summary_of(&rows);
        assert_eq!((vm.datagrams.lost, vm.datagrams.seq_jumps), (17, 0));
    }

    #[test]
    fn a_repeated_datagram_counts_once_in_every_figure() {
        let mut rows = steady(10, 310, 6000, 410, 0);
        for _ in 0..30 {
            let mut copy = row(4, 9900, 9900, 0, 0);
            copy.recv_ms += 1;
            rows.push(copy);
        }
        let vm = summary_of(&rows);
        assert_eq!(vm.datagrams.samples, 10);
        assert_eq!(vm.datagrams.duplicates, 30);
        assert_eq!(
            vm.utilization.cpu_max, 3.1,
            "the copies never reached the percentiles"
        );
    }
}
