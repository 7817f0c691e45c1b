//! One VM's unwritten rows: the bytes and how many rows they hold, kept
//! together so no caller can change one without the other. Every method that
//! removes rows returns what it removed ([`Taken`]), and the worker moves its
//! totals by exactly that.

use crate::dispatch::RecvMs;

/// Rows and bytes a buffer gave up (written, or dropped).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Taken {
    pub rows: u64,
    pub bytes: usize,
}

/// Below this capacity a buffer grows by exactly the row it takes.
const EXACT_UP_TO: usize = 1024;

#[derive(Debug, Default)]
pub struct RowBuf {
    bytes: Vec<u8>,
    rows: u64,
    /// Receive time of the oldest row still held.
    oldest: RecvMs,
}

impl RowBuf {
    /// Appends one formatted row (see [`crate::wire::push_row_of`]). Below
    /// [`EXACT_UP_TO`] the buffer grows by exactly the row: a VM every 10 s
    /// holds six rows in a file interval, and room for one more row each
    /// (or doubling) left a million VMs 250 to 500 bytes idle apiece.
    /// Beyond it the buffer doubles, so a busy VM filling --flush-bytes
    /// reallocates row by row only up to 1 KiB, a few times after (and,
    /// flushed full, keeps the capacity).
    pub fn push(&mut self, recv: RecvMs, row: &[u8]) {
        if self.rows == 0 {
            self.oldest = recv;
        }
        let cap = self.bytes.capacity();
        if cap - self.bytes.len() < row.len() {
            let grow = match cap < EXACT_UP_TO {
                true => row.len(),
                false => cap,
            };
            self.bytes.reserve_exact(grow);
        }
        self.bytes.extend_from_slice(row);
        self.rows += 1;
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    pub fn oldest(&self) -> RecvMs {
        self.oldest
    }

    /// The first `written` bytes reached the file: removes the whole rows
    /// among them (a row cut by a failed write stays, to be written again
    /// once the store has cut the torn copy from the file).
    pub fn consume(&mut self, written: usize) -> Taken {
        if written >= self.bytes.len() {
            let taken = Taken {
                rows: self.rows,
                bytes: self.bytes.len(),
            };
            self.bytes.clear();
            self.rows = 0;
            return taken;
        }
        let end = self.bytes[..written]
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |p| p + 1);
        self.remove_front(end)
    }

    /// Drops the oldest whole rows until at most `cap` bytes remain.
    pub fn trim_oldest(&mut self, cap: usize) -> Taken {
        if self.bytes.len() <= cap {
            return Taken::default();
        }
        let excess = self.bytes.len() - cap;
        let end = self.bytes[excess..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(self.bytes.len(), |p| excess + p + 1);
        self.remove_front(end)
    }

    /// Lets go of the capacity of an emptied buffer.
    pub fn free(&mut self) {
        debug_assert!(self.bytes.is_empty());
        self.bytes = Vec::new();
    }

    fn remove_front(&mut self, end: usize) -> Taken {
        let rows = self.bytes[..end].iter().filter(|b| **b == b'\n').count() as u64;
        self.bytes.drain(..end);
        self.rows -= rows;
        // A row starts with its receive time: the new oldest is read off
        // the first row left (a VM that always keeps its newest row back
        // for the journal would otherwise age forever).
        let mut digits = self.bytes.iter().take_while(|b| b.is_ascii_digit());
        let first = digits.try_fold(0u64, |ms, d| {
            ms.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        });
        if let Some(ms) = first
            && rows > 0
            && !self.bytes.is_empty()
        {
            self.oldest = RecvMs(ms);
        }
        Taken { rows, bytes: end }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{self, Stat};

    fn filled(n: u64) -> RowBuf {
        let mut buf = RowBuf::default();
        for seq in 0..n {
            let stat = Stat {
                seq,
                ..Stat::default()
            };
            push(&mut buf, RecvMs(1000 + seq), &stat);
        }
        buf
    }

    fn push(buf: &mut RowBuf, recv: RecvMs, stat: &Stat) {
        let mut row = Vec::new();
        wire::push_row_of(&mut row, recv.0, stat, false);
        buf.push(recv, &row);
    }

    fn seqs(buf: &RowBuf) -> Vec<u64> {
        std::str::from_utf8(buf.bytes())
            .unwrap()
            .lines()
            .map(|l| wire::parse_row(l).unwrap().stat.seq)
            .collect()
    }

    #[test]
    fn small_buffers_grow_by_the_row_and_large_ones_double() {
        let six = filled(6);
        assert_eq!(six.bytes.capacity(), six.bytes().len(), "no room idle");
        // Past EXACT_UP_TO a buffer doubles: one of 16 KiB is at most
        // twice its rows, and got there in a few reallocations more than
        // one per row up to EXACT_UP_TO.
        let mut big = RowBuf::default();
        let (mut grew, mut rows_small) = (0, 0);
        while big.len() < 16 << 10 {
            let cap = big.bytes.capacity();
            rows_small += usize::from(cap < EXACT_UP_TO);
            push(&mut big, RecvMs(1), &Stat::default());
            grew += usize::from(big.bytes.capacity() != cap);
        }
        assert!(big.bytes.capacity() <= 2 * big.bytes().len());
        assert!(grew <= rows_small + 4, "{grew} reallocations");
    }

    #[test]
    fn push_counts_rows_and_bytes_and_remembers_the_oldest() {
        let buf = filled(3);
        assert_eq!(buf.rows(), 3);
        assert_eq!(buf.oldest(), RecvMs(1000));
        assert_eq!(seqs(&buf), [0, 1, 2]);
    }

    #[test]
    fn consume_all_empties_and_reports_everything() {
        let mut buf = filled(4);
        let len = buf.len();
        assert_eq!(
            buf.consume(len),
            Taken {
                rows: 4,
                bytes: len
            }
        );
        assert!(buf.is_empty());
        assert_eq!(buf.len(), 0);
        // The next row starts a new oldest.
        push(&mut buf, RecvMs(5000), &Stat::default());
        assert_eq!(buf.oldest(), RecvMs(5000));
    }

    #[test]
    fn a_partial_write_removes_only_whole_rows() {
        let mut buf = filled(4);
        let first_row = buf.bytes().iter().position(|b| *b == b'\n').unwrap() + 1;
        let len = buf.len();
        // One whole row and part of the second reached the file.
        let taken = buf.consume(first_row + 3);
        assert_eq!(
            taken,
            Taken {
                rows: 1,
                bytes: first_row
            }
        );
        assert_eq!(buf.len(), len - first_row);
        assert_eq!(buf.rows(), 3);
        assert_eq!(seqs(&buf), [1, 2, 3]);
        assert_eq!(buf.oldest(), RecvMs(1001), "the oldest left");
        // Nothing whole: nothing removed.
        assert_eq!(buf.consume(2), Taken::default());
        assert_eq!(buf.rows(), 3);
    }

    #[test]
    fn trim_oldest_keeps_the_newest_whole_rows_under_the_cap() {
        let mut buf = filled(10);
        let len = buf.len();
        assert_eq!(buf.trim_oldest(len), Taken::default());
        let taken = buf.trim_oldest(len / 2);
        assert!(buf.len() <= len / 2);
        assert_eq!(taken.bytes + buf.len(), len);
        assert_eq!(taken.rows + buf.rows(), 10);
        let kept = seqs(&buf);
        assert_eq!(kept.len() as u64, buf.rows());
        assert_eq!(*kept.last().unwrap(), 9);
        assert_eq!(buf.trim_oldest(0).rows, kept.len() as u64);
        assert!(buf.is_empty());
    }
}
