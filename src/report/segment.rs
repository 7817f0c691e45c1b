//! Per-day segments: a file's rows of one UTC day summarized apart, so a
//! report merges the days its window covers instead of reading their rows
//! again (the [`cache`](super::cache) keeps them between reports, and
//! [`merge`](super::merge) puts a VM's together).
//!
//! A day wholly inside the window is taken whole; a day the window cuts
//! (its first day, and its last when `--as-of` is in the past) is read
//! again from its byte range, starting where the window does. Merging is
//! exact under the conditions [`Accumulator::absorb`] checks; when they do
//! not hold (a datagram held in two data dirs, a duplicate across
//! midnight) the VM is read row by row, as a report without segments would.

use super::scan::Window;
use super::summary::{Accumulator, DAY_MS, SegmentBounds, TimeOrder};

/// The shortest row a file can hold: each of the header's fields at least
/// one byte, with its comma or newline.
pub const MIN_ROW_BYTES: u64 = 2 * 14;

/// One file's rows of one UTC day.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Segment {
    /// Days since the Unix epoch.
    pub day: u64,
    /// Where its rows lie in the (uncompressed) file: from the first one's
    /// start to the last one's end.
    pub first_byte: u64,
    pub end_byte: u64,
    /// The earliest and latest receive time among its rows.
    pub min_ms: u64,
    pub max_ms: u64,
    /// The rows' summary ([`Accumulator::encode`]).
    #[serde(with = "serde_bytes")]
    pub state: Vec<u8>,
}

/// What a window makes of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cover {
    Whole,
    Cut,
    Outside,
}

impl Segment {
    /// What its stored state may claim: its day, and no more rows than its
    /// bytes can hold (a crafted entry claiming 2^64 rows is refused, not
    /// allocated for).
    pub fn bounds(&self) -> SegmentBounds {
        SegmentBounds {
            day: self.day,
            max_rows: (self.end_byte - self.first_byte) / MIN_ROW_BYTES + 1,
            max_lines: self.end_byte,
        }
    }
}

pub fn cover(seg: &Segment, w: &Window) -> Cover {
    let after_start = |ms: u64| w.from_ms.is_none_or(|from| ms > from);
    if after_start(seg.min_ms) && seg.max_ms <= w.as_of_ms {
        Cover::Whole
    } else if !after_start(seg.max_ms) || seg.min_ms > w.as_of_ms {
        Cover::Outside
    } else {
        Cover::Cut
    }
}

/// Builds a file's segments from its lines in file order, adding to the
/// segments it already has (the cached ones, when a live file grew).
pub struct Builder<'a> {
    acc: &'a mut Accumulator,
    segments: Vec<Segment>,
    /// The day `acc` holds, without its state yet.
    open: Option<Segment>,
    /// Bad lines before the first row: they go to its day.
    pending_bad: u64,
    /// A cached segment that would not decode: the caller starts over.
    broken: bool,
    order: TimeOrder,
}

impl<'a> Builder<'a> {
    pub fn new(acc: &'a mut Accumulator, segments: Vec<Segment>) -> Builder<'a> {
        // Rows appended to a cached file follow its last day's rows.
        let order = TimeOrder::after(segments.last().map(|s| s.max_ms));
        Builder {
            acc,
            segments,
            open: None,
            pending_bad: 0,
            broken: false,
            order,
        }
    }

    /// Takes the line from `start` to `end`: a row, or `None` for a line
    /// that is not one.
    pub fn line(&mut self, row: Option<crate::wire::Row>, start: u64, end: u64) {
        let Some(row) = row else {
            match self.open {
                Some(_) => self.acc.add_bad_row(),
                None => self.pending_bad += 1,
            }
            return;
        };
        let day = row.recv_ms / DAY_MS;
        if self.open.as_ref().is_none_or(|s| s.day != day) {
            self.close();
            self.open_day(day, start);
        }
        for _ in 0..std::mem::take(&mut self.pending_bad) {
            self.acc.add_bad_row();
        }
        self.acc.add_after(&row, &mut self.order);
        let seg = self.open.as_mut().expect("a day was opened above");
        seg.min_ms = seg.min_ms.min(row.recv_ms);
        seg.max_ms = seg.max_ms.max(row.recv_ms);
        seg.first_byte = seg.first_byte.min(start);
        seg.end_byte = seg.end_byte.max(end);
    }

    fn open_day(&mut self, day: u64, start: u64) {
        self.acc.reset();
        // Sorted by day: a search, not a scan (a file of rows each on its
        // own day made this quadratic).
        let seg = match self.segments.binary_search_by_key(&day, |s| s.day) {
            Ok(i) => {
                let seg = self.segments.remove(i);
                self.broken |= self.acc.absorb(&seg.state, seg.bounds()).is_err();
                seg
            }
            Err(_) => Segment {
                day,
                first_byte: start,
                end_byte: start,
                min_ms: u64::MAX,
                max_ms: 0,
                state: Vec::new(),
            },
        };
        self.open = Some(seg);
    }

    fn close(&mut self) {
        if let Some(mut seg) = self.open.take() {
            seg.state.clear();
            self.acc.encode(&mut seg.state);
            let i = self.segments.partition_point(|s| s.day < seg.day);
            self.segments.insert(i, seg);
        }
    }

    /// The segments by day, or `None` when a cached one was broken.
    pub fn finish(mut self) -> Option<Vec<Segment>> {
        self.close();
        (!self.broken).then_some(self.segments)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Row, Stat};

    fn seg(min_ms: u64, max_ms: u64) -> Segment {
        Segment {
            day: min_ms / DAY_MS,
            first_byte: 0,
            end_byte: 0,
            min_ms,
            max_ms,
            state: Vec::new(),
        }
    }

    #[test]
    fn a_window_takes_whole_days_and_cuts_its_edges() {
        let w = Window {
            from_ms: Some(10 * DAY_MS + 500),
            as_of_ms: 12 * DAY_MS + 100,
        };
        // (first row, last row) as ms into day 10, and what the window makes of them.
        for (min, max, expect) in [
            (0, 400, Cover::Outside),
            (0, 900, Cover::Cut),
            (DAY_MS, DAY_MS + 900, Cover::Whole),
            (2 * DAY_MS, 2 * DAY_MS + 100, Cover::Whole),
            (2 * DAY_MS, 2 * DAY_MS + 101, Cover::Cut),
            (3 * DAY_MS, 3 * DAY_MS + 1, Cover::Outside),
        ] {
            let day10 = 10 * DAY_MS;
            assert_eq!(
                cover(&seg(day10 + min, day10 + max), &w),
                expect,
                "{min}..{max}"
            );
        }
    }

    fn row(recv_ms: u64, boot_id: u32, seq: u64, cpu: u16, vcpus: u16) -> Row {
        Row {
            recv_ms,
            stat: Stat {
                interval_s: 600,
                boot_id,
                vcpus,
                seq,
                cpu_pct_x100: cpu,
                mem_pct_x100: cpu / 2,
                mem_mib: 4096,
                net_rx_bytes: u64::from(cpu) * 977,
                disk_write_bytes: seq * 13,
                ..Stat::default()
            },
            verified: false,
        }
    }

    /// The merged segments of files must say exactly what reading their
    /// rows in order says, whatever the days, boots, sizes and losses.
    #[test]
    fn merged_days_equal_rows_read_in_order() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        let mut exact = 0;
        for _ in 0..200 {
            // Two files (a rotated part and the live one) of one VM.
            let mut files: Vec<Vec<Row>> = vec![Vec::new(), Vec::new()];
            let mut ms = 40 * DAY_MS + rng.random_range(0..DAY_MS);
            let (mut boot, mut seq) = (1u32, 0u64);
            for file in &mut files {
                for _ in 0..rng.random_range(1..400) {
                    ms += rng.random_range(1..3_600_000);
                    match rng.random_range(0..100) {
                        0 => (boot, seq) = (boot + 1, 0),
                        1..=3 => seq += rng.random_range(2..5),
                        _ => seq += 1,
                    }
                    let vcpus = if rng.random_range(0..50) == 0 { 4 } else { 2 };
                    file.push(row(ms, boot, seq, rng.random_range(0..10_001), vcpus));
                    // A duplicate and a late datagram within the day.
                    if rng.random_range(0..150) == 0 {
                        file.push(row(ms + 1, boot, seq, 5, vcpus));
                    }
                    if rng.random_range(0..150) == 0 && seq > 2 {
                        file.push(row(ms + 1, boot, seq - 2, 5, vcpus));
                    }
                }
            }
            let from = 40 * DAY_MS + rng.random_range(0..4 * DAY_MS);
            let window = Window {
                from_ms: Some(from),
                as_of_ms: ms - rng.random_range(0..DAY_MS),
            };
            let ip: std::net::IpAddr = "127.0.0.9".parse().unwrap();
            let mut in_order = Accumulator::default();
            let mut merged = Accumulator::default();
            let mut part = Accumulator::default();
            let mut mergeable = true;
            for rows in &files {
                in_order.start_file();
                for r in rows.iter().filter(|r| window.contains(r.recv_ms)) {
                    in_order.add(r);
                }
                // Segments of the file's rows in the window.
                let mut b = Builder::new(&mut part, Vec::new());
                for (i, r) in rows.iter().enumerate() {
                    if window.contains(r.recv_ms) {
                        b.line(
                            Some(*r),
                            i as u64 * MIN_ROW_BYTES,
                            (i as u64 + 1) * MIN_ROW_BYTES,
                        );
                    }
                }
                merged.start_file();
                for s in b.finish().unwrap() {
                    mergeable &= merged.absorb(&s.state, s.bounds()).is_ok();
                }
            }
            if mergeable {
                assert_eq!(
                    crate::report::fixtures::finish(&merged, ip),
                    crate::report::fixtures::finish(&in_order, ip)
                );
                exact += 1;
            }
        }
        // Most histories merge; the rest are read in order by the report.
        assert!(exact > 100, "{exact} of 200 merged");
    }
}
