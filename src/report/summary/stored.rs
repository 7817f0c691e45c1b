//! A segment's state as the summary cache keeps it, and how one is merged
//! into a VM's summary.
//!
//! The state is a plain struct with serde's derive, written by postcard
//! (varints, no names): a new field is a line here and its two uses below.
//! Nothing in a stored segment is trusted: the cache entry around it has a
//! checksum but no key, so every count is checked against what the
//! segment's bytes can hold ([`SegmentBounds`]), every range and sum is
//! checked for overflow, and the day must be the segment's.

use serde::{Deserialize, Serialize};

use super::counts::StoredCounts;
use super::{Accumulator, SegmentBounds, Unmergeable, count_value};
use crate::report::codec::Corrupt;
use crate::wire::{MAX_PCT_X100, Row};

/// What an accumulator that read one segment's rows holds.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Stored<'a> {
    capped: bool,
    /// CPU and memory counts per size (the VM's are their sum).
    #[serde(borrow)]
    by_size: Vec<StoredSize<'a>>,
    #[serde(borrow)]
    net: StoredCounts<'a>,
    #[serde(borrow)]
    disk: StoredCounts<'a>,
    boots: Vec<StoredBoot>,
    duplicates: u64,
    out_of_order: u64,
    gcp_low: [u64; 3],
    intervals: Vec<(u16, u64)>,
    sizes: Vec<((u16, u32), u64)>,
    /// The first row's size and receive time.
    first: Option<((u16, u32), u64)>,
    /// The last row's size.
    size: Option<(u16, u32)>,
    size_changes: u64,
    last_size_change_ms: Option<u64>,
    first_seen_ms: Option<u64>,
    last: Option<Row>,
    bad_rows: u64,
    recv_backwards: u64,
    /// Rows from verified datagrams.
    verified: u64,
    /// The segment's day; its samples and CPU counts are `cpu`'s.
    day: Option<StoredDay>,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredSize<'a> {
    /// `None`: sizes past the bound, counted together.
    size: Option<(u16, u32)>,
    #[serde(borrow)]
    cpu: StoredCounts<'a>,
    #[serde(borrow)]
    mem: StoredCounts<'a>,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredBoot {
    id: u32,
    /// The highest seq in the file so far.
    max: u64,
    rows: u64,
    /// (first seq, seqs after it): a range of one is (s, 0).
    ranges: Vec<(u64, u64)>,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredDay {
    day: u64,
    cpu_max: u16,
    mem_max: u16,
    net_bytes: u64,
    disk_bytes: u64,
    covered_s: u64,
    vcpus: u16,
    mem_in_use_x100: u64,
}

/// `n`, refused past `max` (what the segment's bytes can hold).
fn bounded(n: u64, max: u64) -> Result<u64, Corrupt> {
    if n <= max { Ok(n) } else { Err(Corrupt) }
}

fn pct(v: u64) -> u16 {
    v.min(u64::from(MAX_PCT_X100)) as u16
}

impl Accumulator {
    /// The state of an accumulator that read one file (one segment of it),
    /// appended to `out` in the form [`Accumulator::absorb`] takes.
    pub fn encode(&mut self, out: &mut Vec<u8>) {
        debug_assert!(self.days.len() <= 1, "a segment holds one day");
        let (net, disk) = (self.net.stored(), self.disk.stored());
        let boots = self
            .seqs
            .iter()
            .map(|(id, boot)| StoredBoot {
                id: *id,
                max: self.file_seqs.get(*id).map_or(boot.max, |b| b.max),
                rows: boot.rows,
                ranges: boot.ranges.iter().map(|(a, b)| (*a, b - a)).collect(),
            })
            .collect();
        let stored = Stored {
            capped: self.capped,
            by_size: self
                .by_size
                .used()
                .map(|at| StoredSize {
                    size: at.size,
                    cpu: StoredCounts::of(at.cpu.seen().map(|(v, c)| (v as u64, c))),
                    mem: StoredCounts::of(at.mem.seen().map(|(v, c)| (v as u64, c))),
                })
                .collect(),
            net,
            disk,
            boots,
            duplicates: self.duplicates,
            out_of_order: self.out_of_order,
            gcp_low: self.gcp_low,
            intervals: self.intervals.iter().map(|(k, n)| (*k, *n)).collect(),
            sizes: self.sizes.iter().map(|(k, n)| (*k, *n)).collect(),
            first: self.first,
            size: self.size,
            size_changes: self.size_changes,
            last_size_change_ms: self.last_size_change_ms,
            first_seen_ms: self.first_seen_ms,
            last: self.last,
            bad_rows: self.bad_rows,
            recv_backwards: self.recv_backwards,
            verified: self.verified,
            day: self.days.iter().next().map(|(day, acc)| StoredDay {
                day: *day,
                cpu_max: acc.cpu_max,
                mem_max: acc.mem_max,
                net_bytes: acc.net_bytes,
                disk_bytes: acc.disk_bytes,
                covered_s: acc.covered_s,
                vcpus: acc.vcpus,
                mem_in_use_x100: acc.mem_in_use_x100,
            }),
        };
        *out = postcard::to_extend(&stored, std::mem::take(out)).expect("a Vec takes any bytes");
    }

    /// Adds an encoded segment that follows what was added so far in the
    /// current file (call [`Accumulator::start_file`] first for a segment
    /// of another file). On error the accumulator is left part-merged:
    /// the caller starts the VM over.
    pub fn absorb(&mut self, segment: &[u8], bounds: SegmentBounds) -> Result<(), Unmergeable> {
        let (st, rest) = postcard::take_from_bytes::<Stored>(segment).map_err(|_| Corrupt)?;
        if !rest.is_empty() {
            return Err(Unmergeable::Corrupt);
        }
        let max_rows = bounds.max_rows;
        self.capped |= st.capped;
        self.absorb_sizes(&st.by_size, max_rows)?;
        self.net.absorb(&st.net, max_rows)?;
        self.disk.absorb(&st.disk, max_rows)?;
        self.absorb_seqs(&st.boots, max_rows)?;
        self.duplicates = self
            .duplicates
            .saturating_add(bounded(st.duplicates, max_rows)?);
        self.out_of_order = self
            .out_of_order
            .saturating_add(bounded(st.out_of_order, max_rows)?);
        for (n, more) in self.gcp_low.iter_mut().zip(st.gcp_low) {
            *n = n.saturating_add(bounded(more, max_rows)?);
        }
        for (interval, n) in &st.intervals {
            let n = bounded(*n, max_rows)?;
            self.capped |= !count_value(&mut self.intervals, *interval, n);
        }
        for (size, n) in &st.sizes {
            let n = bounded(*n, max_rows)?;
            self.capped |= !count_value(&mut self.sizes, *size, n);
        }
        if let Some((size, ms)) = st.first {
            self.follow_size(size, ms);
        }
        if let Some(size) = st.size {
            self.size = Some(size);
        }
        self.size_changes = self
            .size_changes
            .saturating_add(bounded(st.size_changes, max_rows)?);
        if let Some(ms) = st.last_size_change_ms {
            self.last_size_change_ms = Some(ms);
        }
        if let Some(ms) = st.first_seen_ms {
            self.seen_at(ms);
        }
        if let Some(row) = st.last {
            self.keep_latest(row);
        }
        self.bad_rows = self
            .bad_rows
            .saturating_add(bounded(st.bad_rows, bounds.max_lines)?);
        self.recv_backwards = self
            .recv_backwards
            .saturating_add(bounded(st.recv_backwards, max_rows)?);
        self.verified = self
            .verified
            .saturating_add(bounded(st.verified, max_rows)?);
        if let Some(day) = &st.day {
            self.absorb_day(day, bounds.day)?;
        }
        Ok(())
    }

    /// A segment's counts per size, into the VM's and its size's, and held
    /// for its day. Together they may count at most `max_rows` samples.
    fn absorb_sizes(&mut self, sizes: &[StoredSize], max_rows: u64) -> Result<(), Unmergeable> {
        self.held.clear();
        let (mut cpu_rows, mut mem_rows) = (0u64, 0u64);
        for stored in sizes {
            let (at, own) = self.by_size.of_stored(stored.size);
            // As when the rows are read: past the bound, counted apart.
            self.capped |= !own;
            stored.cpu.each(max_rows, |v, c| {
                let v = pct(v);
                at.cpu.add_n(v, c);
                self.held.push((v, c));
                cpu_rows = cpu_rows.saturating_add(c);
            })?;
            stored.mem.each(max_rows, |v, c| {
                at.mem.add_n(pct(v), c);
                mem_rows = mem_rows.saturating_add(c);
            })?;
        }
        bounded(cpu_rows.max(mem_rows), max_rows)?;
        Ok(())
    }

    /// A segment's boots: each range joined to the VM's and the file's.
    fn absorb_seqs(&mut self, boots: &[StoredBoot], max_rows: u64) -> Result<(), Unmergeable> {
        for b in boots {
            let rows = bounded(b.rows, max_rows)?;
            // Both exist from here on, as a boot with no range would.
            self.seqs.boot(b.id);
            self.file_seqs.boot(b.id);
            let mut lowest = None;
            for (a, len) in &b.ranges {
                let range = (*a, a.checked_add(*len).ok_or(Corrupt)?);
                lowest = Some(lowest.map_or(*a, |l: u64| l.min(*a)));
                self.seqs.join(b.id, range)?;
                self.file_seqs.join(b.id, range)?;
            }
            let in_file = self.file_seqs.boot(b.id);
            if lowest.is_some_and(|l| in_file.behind(l)) {
                return Err(Unmergeable::Interleaved);
            }
            in_file.take(b.max, rows);
            let global = self.seqs.boot(b.id);
            global.rows = global.rows.saturating_add(rows);
            self.capped |= self.seqs.over_cap() || self.file_seqs.over_cap();
        }
        Ok(())
    }

    /// A segment's day, which must be the one the segment lies in: its
    /// samples and CPU counts are the segment's (held while absorbing
    /// them), the rest stored apart.
    fn absorb_day(&mut self, d: &StoredDay, want: u64) -> Result<(), Unmergeable> {
        if d.day != want {
            return Err(Unmergeable::Corrupt);
        }
        let acc = self.days.of(d.day);
        for (v, c) in &self.held {
            acc.samples = acc.samples.saturating_add(*c);
            let bucket = &mut acc.cpu[usize::from(*v / 10)];
            *bucket = bucket.saturating_add((*c).min(u64::from(u32::MAX)) as u32);
            acc.cpu_sum = acc.cpu_sum.saturating_add(u64::from(*v).saturating_mul(*c));
        }
        acc.cpu_max = acc.cpu_max.max(d.cpu_max);
        acc.mem_max = acc.mem_max.max(d.mem_max);
        acc.net_bytes = acc.net_bytes.saturating_add(d.net_bytes);
        acc.disk_bytes = acc.disk_bytes.saturating_add(d.disk_bytes);
        acc.covered_s = acc.covered_s.saturating_add(d.covered_s);
        acc.vcpus = acc.vcpus.max(d.vcpus);
        acc.mem_in_use_x100 = acc.mem_in_use_x100.max(d.mem_in_use_x100);
        Ok(())
    }
}
