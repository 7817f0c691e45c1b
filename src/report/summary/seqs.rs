//! Sequence numbers per boot, as ranges: what is new, a duplicate or out
//! of order, and what is lost between the ranges.

use std::collections::HashMap;

use super::Unmergeable;

/// Ranges of seq seen in a VM's rows, over all its boots, before the cap.
pub(super) const MAX_RANGES: usize = 1 << 16;

/// One boot's seq numbers: sorted, disjoint, non-touching inclusive ranges
/// (one range while nothing is lost), the rows taken and, within a file,
/// the highest seq so far.
#[derive(Debug, Default)]
pub(super) struct Boot {
    pub(super) ranges: Vec<(u64, u64)>,
    pub(super) max: u64,
    pub(super) rows: u64,
}

/// What inserting a seq found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Seen {
    New,
    Duplicate,
    /// Past [`MAX_RANGES`]: neither stored nor known to be new.
    Untracked,
}

impl Boot {
    pub(super) fn insert(&mut self, s: u64, ranges_left: usize) -> Seen {
        join_range(&mut self.ranges, (s, s), ranges_left > 0)
    }

    /// Whether `seq` comes after a higher seq of this boot in the file.
    pub(super) fn behind(&self, seq: u64) -> bool {
        self.rows > 0 && seq < self.max
    }

    /// Takes `rows` more rows whose highest seq is `max`.
    pub(super) fn take(&mut self, max: u64, rows: u64) {
        self.max = if self.rows == 0 {
            max
        } else {
            self.max.max(max)
        };
        self.rows = self.rows.saturating_add(rows);
    }
}

/// Joins `(a, b)` into sorted, disjoint, non-touching ranges, merging
/// touching ones. An overlap with a range already there is a duplicate and
/// changes nothing; a range that would stand alone is added only when
/// `may_add` (else it is untracked).
pub(super) fn join_range(ranges: &mut Vec<(u64, u64)>, (a, b): (u64, u64), may_add: bool) -> Seen {
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

/// Joins a range of a segment into `ranges`; an overlap means the two
/// hold the same (boot_id, seq), which merging cannot count exactly.
pub(super) fn insert_range(
    ranges: &mut Vec<(u64, u64)>,
    range: (u64, u64),
) -> Result<(), Unmergeable> {
    match join_range(ranges, range, true) {
        Seen::Duplicate => Err(Unmergeable::Overlap),
        Seen::New | Seen::Untracked => Ok(()),
    }
}

/// The boots of a VM (or of one file) and the ranges they hold in all,
/// which each insert keeps: the cap on ranges is checked against it.
#[derive(Debug, Default)]
pub(super) struct Seqs {
    boots: HashMap<u32, Boot>,
    ranges: usize,
}

impl Seqs {
    pub(super) fn clear(&mut self) {
        self.boots.clear();
        self.ranges = 0;
    }

    /// Takes `seq` of boot `id`: a range of its own only while fewer than
    /// [`MAX_RANGES`] are held. Returns what it found and the boot.
    pub(super) fn insert(&mut self, id: u32, seq: u64) -> (Seen, &mut Boot) {
        let left = MAX_RANGES.saturating_sub(self.ranges);
        let boot = self.boots.entry(id).or_default();
        let before = boot.ranges.len();
        let seen = boot.insert(seq, left);
        self.ranges = self.ranges + boot.ranges.len() - before;
        (seen, boot)
    }

    /// Joins a segment's range of boot `id` ([`insert_range`]).
    pub(super) fn join(&mut self, id: u32, range: (u64, u64)) -> Result<(), Unmergeable> {
        let boot = self.boots.entry(id).or_default();
        let before = boot.ranges.len();
        insert_range(&mut boot.ranges, range)?;
        self.ranges = self.ranges + boot.ranges.len() - before;
        Ok(())
    }

    pub(super) fn boot(&mut self, id: u32) -> &mut Boot {
        self.boots.entry(id).or_default()
    }

    pub(super) fn get(&self, id: u32) -> Option<&Boot> {
        self.boots.get(&id)
    }

    pub(super) fn len(&self) -> usize {
        self.boots.len()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&u32, &Boot)> {
        self.boots.iter()
    }

    /// More ranges than the cap: merged figures could then differ from
    /// reading the rows in order.
    pub(super) fn over_cap(&self) -> bool {
        self.ranges > MAX_RANGES
    }
}
