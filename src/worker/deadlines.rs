//! When each VM's buffer is due, in a FIFO with at most one entry per VM.
//!
//! Entries are pushed with `now + delay`; while the delay is constant they
//! are in deadline order, so the due ones are at the front and a tick costs
//! what is due, not a scan of 100,000 buffers. When the delay is stretched
//! or relaxed (see the worker), a later entry may fall due before an earlier
//! one; it then waits for the front at most, which is never more than the
//! longest delay in force.

use std::collections::VecDeque;
use std::net::IpAddr;

/// The worker's own clock: milliseconds since it started (monotonic). It
/// times flush deadlines only; rows carry the wall-clock
/// [`RecvMs`](crate::dispatch::RecvMs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct WorkerMs(pub u64);

impl WorkerMs {
    pub fn plus_ms(self, ms: u64) -> WorkerMs {
        WorkerMs(self.0.saturating_add(ms))
    }

    pub fn ms_until(self, later: WorkerMs) -> u64 {
        later.0.saturating_sub(self.0)
    }
}

#[derive(Debug, Default)]
pub struct Deadlines {
    fifo: VecDeque<(IpAddr, WorkerMs)>,
}

impl Deadlines {
    /// Queues `ip` to be flushed at `at`. The caller keeps one entry per VM.
    pub fn push(&mut self, ip: IpAddr, at: WorkerMs) {
        self.fifo.push_back((ip, at));
    }

    /// The front entry's VM if it is due at `now`.
    pub fn pop_due(&mut self, now: WorkerMs) -> Option<IpAddr> {
        match self.fifo.front() {
            Some(&(ip, at)) if at <= now => {
                self.fifo.pop_front();
                Some(ip)
            }
            _ => None,
        }
    }

    /// The front entry's VM, due or not (flushing oldest first under
    /// memory pressure).
    pub fn pop_front(&mut self) -> Option<IpAddr> {
        self.fifo.pop_front().map(|(ip, _)| ip)
    }

    /// When the front entry is due.
    pub fn next(&self) -> Option<WorkerMs> {
        self.fifo.front().map(|&(_, at)| at)
    }

    pub fn len(&self) -> usize {
        self.fifo.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fifo.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, n])
    }

    #[test]
    fn due_entries_come_out_in_order_and_no_sooner() {
        let mut d = Deadlines::default();
        d.push(ip(1), WorkerMs(10));
        d.push(ip(2), WorkerMs(20));
        assert_eq!(d.next(), Some(WorkerMs(10)));
        assert_eq!(d.pop_due(WorkerMs(9)), None);
        assert_eq!(d.pop_due(WorkerMs(25)), Some(ip(1)));
        assert_eq!(d.pop_due(WorkerMs(25)), Some(ip(2)));
        assert_eq!(d.pop_due(WorkerMs(25)), None);
        assert!(d.is_empty());
    }

    #[test]
    fn a_later_entry_due_earlier_waits_for_the_front() {
        let mut d = Deadlines::default();
        d.push(ip(1), WorkerMs(100));
        d.push(ip(2), WorkerMs(50));
        assert_eq!(d.pop_due(WorkerMs(60)), None);
        assert_eq!(d.pop_front(), Some(ip(1)));
        assert_eq!(d.pop_due(WorkerMs(60)), Some(ip(2)));
    }

    #[test]
    fn worker_clock_arithmetic_saturates() {
        assert_eq!(WorkerMs(u64::MAX).plus_ms(5), WorkerMs(u64::MAX));
        assert_eq!(WorkerMs(10).ms_until(WorkerMs(4)), 0);
        assert_eq!(WorkerMs(4).ms_until(WorkerMs(10)), 6);
    }
}
