//! The exact percent counts (CPU and memory, 0.01 % steps) and the rate
//! histograms (network and disk) of a summary, and how a segment stores
//! them: (value, count) pairs whose counts are bounded by the segment's
//! rows.

use std::borrow::Cow;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::report::codec::{Corrupt, Reader, put};
use crate::wire::MAX_PCT_X100;

/// The nearest rank of percentile `p` among `n` values (1-based, at least
/// 1): every percentile of the report is taken this way.
pub(super) fn nearest_rank(p: f64, n: u64) -> u64 {
    ((p / 100.0) * n as f64).ceil().max(1.0) as u64
}

/// Exact counts of a percentage in 0.01 % steps, with a bit per value
/// seen so that scans and resets visit only those: a VM's day is a few
/// hundred values spread over thousands of steps, and walking the steps
/// between them was a sixth of a cached million-VM report.
pub(super) struct PctCounts {
    counts: Box<[u64]>,
    /// Bit `v % 64` of word `v / 64` set when `counts[v] > 0`.
    seen: Box<[u64]>,
    pub(super) n: u64,
    lo: usize,
    hi: usize,
}

impl PctCounts {
    pub(super) fn new() -> PctCounts {
        let values = usize::from(MAX_PCT_X100) + 1;
        PctCounts {
            counts: vec![0; values].into_boxed_slice(),
            seen: vec![0; values.div_ceil(64)].into_boxed_slice(),
            n: 0,
            lo: 0,
            hi: 0,
        }
    }

    pub(super) fn add_n(&mut self, x100: u16, count: u64) {
        let i = usize::from(x100.min(MAX_PCT_X100));
        if self.n == 0 {
            (self.lo, self.hi) = (i, i);
        } else {
            (self.lo, self.hi) = (self.lo.min(i), self.hi.max(i));
        }
        self.counts[i] = self.counts[i].saturating_add(count);
        self.seen[i / 64] |= 1 << (i % 64);
        self.n = self.n.saturating_add(count);
    }

    pub(super) fn add(&mut self, x100: u16) {
        self.add_n(x100, 1);
    }

    /// The values seen and their counts, lowest first.
    pub(super) fn seen(&self) -> Seen<'_> {
        Seen {
            counts: self,
            word: self.lo / 64,
            bits: if self.n == 0 {
                0
            } else {
                self.seen[self.lo / 64]
            },
            last: if self.n == 0 { 0 } else { self.hi / 64 },
        }
    }

    pub(super) fn reset(&mut self) {
        if self.n > 0 {
            for word in self.lo / 64..=self.hi / 64 {
                let mut bits = std::mem::take(&mut self.seen[word]);
                while bits != 0 {
                    self.counts[word * 64 + bits.trailing_zeros() as usize] = 0;
                    bits &= bits - 1;
                }
            }
        }
        self.n = 0;
    }

    /// The values (in hundredths) at nearest-rank percentiles `ps`
    /// (ascending); 0 when empty.
    pub(super) fn ranked<const N: usize>(&self, ps: [f64; N]) -> [usize; N] {
        let ranks = ps.map(|p| nearest_rank(p, self.n));
        let mut out = [0; N];
        let mut next = 0;
        let mut seen = 0;
        for (value, count) in self.seen() {
            seen += count;
            while next < N && seen >= ranks[next] {
                out[next] = value;
                next += 1;
            }
            if next == N {
                break;
            }
        }
        out
    }

    /// [`PctCounts::ranked`] at percentiles in any order.
    pub(super) fn ranked_any<const N: usize>(&self, ps: [f64; N]) -> [usize; N] {
        let mut order: [usize; N] = std::array::from_fn(|i| i);
        order.sort_by(|a, b| ps[*a].total_cmp(&ps[*b]));
        let values = self.ranked(order.map(|i| ps[i]));
        let mut out = [0; N];
        for (value, i) in values.into_iter().zip(order) {
            out[i] = value;
        }
        out
    }

    /// The highest value seen (hundredths), its count, and the next value
    /// below it (0 when none).
    pub(super) fn top(&self) -> (usize, u64, usize) {
        if self.n == 0 {
            return (0, 0, 0);
        }
        let (word, bit) = (self.hi / 64, self.hi % 64);
        let mut below = (self.seen[word] & ((1 << bit) - 1), word);
        while below.0 == 0 && below.1 > self.lo / 64 {
            below = (self.seen[below.1 - 1], below.1 - 1);
        }
        let below = match below {
            (0, _) => 0,
            (bits, word) => word * 64 + 63 - bits.leading_zeros() as usize,
        };
        (self.hi, self.counts[self.hi], below)
    }

    /// How many values are `from` or higher.
    pub(super) fn count_from(&self, from: usize) -> u64 {
        if self.n == 0 || from > self.hi {
            return 0;
        }
        self.counts[from.max(self.lo)..=self.hi].iter().sum()
    }

    pub(super) fn max(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.hi as f64 / 100.0
        }
    }
}

/// [`PctCounts::seen`]: the set bits of its words from `lo`'s to `hi`'s.
pub(super) struct Seen<'a> {
    counts: &'a PctCounts,
    word: usize,
    bits: u64,
    last: usize,
}

impl Iterator for Seen<'_> {
    type Item = (usize, u64);

    fn next(&mut self) -> Option<(usize, u64)> {
        while self.bits == 0 {
            if self.word >= self.last {
                return None;
            }
            self.word += 1;
            self.bits = self.counts.seen[self.word];
        }
        let v = self.word * 64 + self.bits.trailing_zeros() as usize;
        self.bits &= self.bits - 1;
        Some((v, self.counts.counts[v]))
    }
}

/// Rates, bytes/s, to 3 significant digits (0.1 %).
pub(super) fn rate_histogram() -> Histogram<u64> {
    Histogram::new(3).expect("3 significant digits is valid")
}

/// Values held before they go into a histogram: up to this many a
/// segment's few rates are kept as they are (walking a histogram's buckets
/// to store it costs more than all its rows), past it memory stays bounded.
pub(super) const RATES_HELD: usize = 1 << 16;

/// Network or disk rates: the values themselves while few, then an HDR
/// histogram (see [`RATES_HELD`]).
pub(super) struct Rates {
    values: Vec<u64>,
    spilled: Histogram<u64>,
}

impl Rates {
    pub(super) fn new() -> Rates {
        Rates {
            values: Vec::new(),
            spilled: rate_histogram(),
        }
    }

    pub(super) fn add_n(&mut self, v: u64, n: u64) {
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

    pub(super) fn reset(&mut self) {
        self.values.clear();
        if !self.spilled.is_empty() {
            self.spilled.reset();
        }
    }

    /// All of them in one histogram.
    pub(super) fn histogram(&self) -> Histogram<u64> {
        let mut h = self.spilled.clone();
        for v in &self.values {
            record(&mut h, *v);
        }
        h
    }

    /// The nearest-rank p95 as the low end of its bucket: exact below
    /// 2,048, within 0.1 % above. Values not yet in the histogram are
    /// ranked directly, as the histogram would (same rank, same bucket).
    pub(super) fn p95(&self) -> f64 {
        if !self.spilled.is_empty() {
            let h = self.histogram();
            return h.lowest_equivalent(h.value_at_quantile(0.95)) as f64;
        }
        if self.values.is_empty() {
            return 0.0;
        }
        let rank = nearest_rank(95.0, self.values.len() as u64) as usize;
        let mut values = self.values.clone();
        let (_, v, _) = values.select_nth_unstable(rank - 1);
        self.spilled.lowest_equivalent(*v) as f64
    }

    /// (bucket, count) pairs, each bucket by its number ([`bucket_of`]):
    /// a VM's rates of a day lie in a few hundred buckets, so the steps
    /// between them take one byte where the steps between the values took
    /// two or three. Read back, each becomes its bucket's highest value,
    /// which ranks the same as the values it held.
    pub(super) fn stored(&mut self) -> StoredCounts<'static> {
        if !self.spilled.is_empty() {
            let h = self.histogram();
            return StoredCounts::of(
                h.iter_recorded()
                    .map(|b| (bucket_of(b.value_iterated_to()), b.count_at_value())),
            );
        }
        self.values.sort_unstable();
        StoredCounts::of(
            self.values
                .chunk_by(|a, b| bucket_of(*a) == bucket_of(*b))
                .map(|run| (bucket_of(run[0]), run.len() as u64)),
        )
    }

    pub(super) fn absorb(&mut self, stored: &StoredCounts, max_rows: u64) -> Result<(), Corrupt> {
        let mut beyond = false;
        stored.each(max_rows, |bucket, n| match bucket_high(bucket) {
            Some(v) => self.add_n(v, n),
            None => beyond = true,
        })?;
        if beyond { Err(Corrupt) } else { Ok(()) }
    }
}

/// Values below this are their own bucket in a 3-digit histogram
/// ([`rate_histogram`]); past it each power of two is split in 1,024.
const EXACT_BELOW: u64 = 2048;

/// The number of `v`'s bucket in [`rate_histogram`], counting from 0 up:
/// `v` itself below [`EXACT_BELOW`], then 1,024 buckets per power of two
/// (at most 56,319, 2^64 - 1's).
pub(super) fn bucket_of(v: u64) -> u64 {
    if v < EXACT_BELOW {
        return v;
    }
    let shift = u64::from(63 - v.leading_zeros()) - 10;
    (shift << 10) + (v >> shift)
}

/// The highest value of bucket `b` ([`bucket_of`]), or `None` past the
/// last.
pub(super) fn bucket_high(b: u64) -> Option<u64> {
    if b < EXACT_BELOW {
        return Some(b);
    }
    let shift = (b >> 10) - 1;
    let sub = b - (shift << 10);
    let high = (u128::from(sub) + 1).checked_shl(shift as u32)?;
    u64::try_from(high - 1).ok()
}

/// Records `v`, growing the histogram's range as needed (its
/// `saturating_record` would clamp to the range it has instead).
pub(super) fn record(h: &mut Histogram<u64>, v: u64) {
    if h.record(v).is_err() {
        h.saturating_record(v);
    }
}

/// Bytes first set aside for a [`StoredCounts`].
const STORED_CAPACITY: usize = 64;

/// Sorted (value, count) pairs as a segment stores them: LEB128 varints,
/// each value as its step from the one before, shifted left by one with
/// the low bit set when a count follows (without it the count is 1). Most
/// values of a day's rows are seen once, so most pairs take one byte
/// where a separate count made them two or three: the counts were a
/// third of the summary store. The pairs are a byte string that the
/// derived state borrows. They are most of a segment (a few hundred a
/// day), so they are read in one tight pass that folds them straight into
/// the counts: through serde, one allocation and one trait call per pair
/// made the cached 10,000-VM report 21 % slower.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct StoredCounts<'a>(#[serde(borrow)] Cow<'a, [u8]>);

impl StoredCounts<'_> {
    /// From (value, count) pairs in ascending value, each below 2^63.
    pub(super) fn of(pairs: impl Iterator<Item = (u64, u64)>) -> StoredCounts<'static> {
        // A day's counts take tens to a few hundred bytes: grown from
        // empty, each took five or more reallocations, most of the 13 % of
        // an exit report's samples in malloc at a million VMs.
        let mut out = Vec::with_capacity(STORED_CAPACITY);
        let mut prev = 0;
        for (v, c) in pairs {
            let step = v - prev;
            debug_assert!(step < 1 << 63, "percent steps and bucket numbers are small");
            if c == 1 {
                put(&mut out, step << 1);
            } else {
                put(&mut out, step << 1 | 1);
                put(&mut out, c);
            }
            prev = v;
        }
        StoredCounts(Cow::Owned(out))
    }

    /// Calls `f` with each (value, count); the counts may add up to
    /// `max_rows` at most, and no value may pass 2^64.
    pub(super) fn each(&self, max_rows: u64, mut f: impl FnMut(u64, u64)) -> Result<(), Corrupt> {
        let r = &mut Reader::new(&self.0);
        let (mut v, mut total) = (0u64, 0u64);
        while !r.is_empty() {
            let tag = r.get()?;
            v = v.checked_add(tag >> 1).ok_or(Corrupt)?;
            let n = if tag & 1 == 1 { r.get()? } else { 1 };
            total = total
                .checked_add(n)
                .filter(|t| *t <= max_rows)
                .ok_or(Corrupt)?;
            f(v, n);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The counts agree with the values as a sorted list: what is seen,
        /// the ranks, the top and the one below it, and a reset leaves
        /// nothing behind for the next VM.
        #[test]
        fn counts_agree_with_the_sorted_values(
            first in proptest::collection::vec(0..=MAX_PCT_X100 + 5, 0..300),
            then in proptest::collection::vec(0..=MAX_PCT_X100 + 5, 0..300),
        ) {
            let mut c = PctCounts::new();
            for values in [first, then] {
                c.reset();
                let mut sorted: Vec<usize> =
                    values.iter().map(|v| usize::from(*v.min(&MAX_PCT_X100))).collect();
                sorted.sort_unstable();
                for v in &values {
                    c.add(*v);
                }
                let mut runs: Vec<(usize, u64)> = Vec::new();
                for v in &sorted {
                    match runs.last_mut() {
                        Some((last, n)) if last == v => *n += 1,
                        _ => runs.push((*v, 1)),
                    }
                }
                proptest::prop_assert_eq!(c.seen().collect::<Vec<_>>(), runs.clone());
                let at = |p: f64| {
                    if sorted.is_empty() { 0 } else { sorted[nearest_rank(p, c.n) as usize - 1] }
                };
                proptest::prop_assert_eq!(c.ranked_any([99.0, 50.0, 100.0]), [at(99.0), at(50.0), at(100.0)]);
                let top = match runs.as_slice() {
                    [] => (0, 0, 0),
                    [(v, n)] => (*v, *n, 0),
                    [.., (below, _), (v, n)] => (*v, *n, *below),
                };
                proptest::prop_assert_eq!(c.top(), top);
            }
        }
    }

    #[test]
    fn bucket_numbers_name_the_histograms_buckets_and_nothing_past_them() {
        let h = rate_histogram();
        let mut last = None;
        for b in 0..=56_319 {
            let high = bucket_high(b).expect("a bucket up to 2^64 - 1's");
            assert_eq!(bucket_of(high), b);
            assert_eq!(h.highest_equivalent(high), high, "bucket {b}");
            assert_eq!(bucket_of(h.lowest_equivalent(high)), b, "bucket {b}");
            assert!(last.is_none_or(|l| l < high));
            last = Some(high);
        }
        assert_eq!(last, Some(u64::MAX));
        for b in [56_320, 1 << 20, u64::MAX] {
            assert_eq!(bucket_high(b), None);
        }
    }

    #[test]
    fn pairs_of_one_take_a_byte_and_any_count_round_trips() {
        let pairs = [(3, 1), (40, 1), (41, 7), (2000, 1), (56_319, u64::MAX - 20)];
        let stored = StoredCounts::of(pairs.into_iter());
        // 3<<1, 37<<1, 1<<1|1 and 7, 1959<<1 (two bytes), 54319<<1|1 (three), then ten.
        assert_eq!(stored.0.len(), 1 + 1 + 2 + 2 + 3 + 10);
        let mut back = Vec::new();
        stored.each(u64::MAX, |v, n| back.push((v, n))).unwrap();
        assert_eq!(back, pairs);
        assert_eq!(stored.each(u64::MAX - 11, |_, _| ()), Err(Corrupt));
    }

    #[test]
    fn rates_come_back_as_their_buckets_and_junk_buckets_are_refused() {
        let mut r = Rates::new();
        for v in [0, 5, 5, 2047, 2048, 2049, 1 << 40, u64::MAX] {
            r.add_n(v, 1);
        }
        let p95 = r.p95();
        let stored = r.stored();
        let mut back = Rates::new();
        back.absorb(&stored, 8).unwrap();
        let h = rate_histogram();
        let mut want: Vec<u64> = [0, 5, 5, 2047, 2049, 2049, 1 << 40, u64::MAX]
            .map(|v| h.highest_equivalent(v))
            .to_vec();
        want.sort_unstable();
        back.values.sort_unstable();
        assert_eq!(back.values, want);
        assert_eq!(back.p95(), p95);
        let junk = StoredCounts::of([(56_320, 1)].into_iter());
        assert_eq!(Rates::new().absorb(&junk, 1), Err(Corrupt));
    }
}
