//! Routing accepted datagrams to the worker that owns their VM.
//!
//! A VM's worker is a pure function of its address, so one VM's rows are
//! always written by one thread, in receive order, with no lock on its file.
//! Records travel in batches: one channel operation carries up to
//! [`BATCH_RECORDS`] datagrams, and emptied batch vectors come back to the
//! receive loop through a recycle channel, so steady state allocates nothing.
//!
//! The channels are bounded and the receive loop never blocks on them: a
//! batch that does not fit is dropped and counted as `dropped_overload`. A
//! blocked receive loop would only move the loss into the kernel, uncounted
//! by us, while also starving the status line and shutdown handling.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, SendTimeoutError, Sender, TrySendError};

use crate::stats::{Counter, Stats};
use crate::wire::{Signed, Stat};

/// Records per batch: large enough to amortise a channel operation, small
/// enough that a batch's latency is negligible when traffic is light.
pub const BATCH_RECORDS: usize = 256;

/// How long a partly filled batch may wait for more records. Without it a
/// moderate rate (a few per wake-up) would send many tiny batches and fill
/// the bounded queues by count long before they fill by records.
pub const LINGER: Duration = Duration::from_millis(2);

/// The aggregator's wall clock at receipt, Unix ms: the row's `recv_ms`.
/// Its own type, so it is never mixed up with a worker's monotonic
/// deadline clock ([`WorkerMs`](crate::worker::WorkerMs)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct RecvMs(pub u64);

/// One accepted datagram, stamped on receipt; a version 2 one with its
/// claim, which the VM's worker verifies (it holds the VM's replay state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    pub ip: IpAddr,
    pub recv_ms: RecvMs,
    pub stat: Stat,
    pub signed: Option<Signed>,
}

/// What travels to a worker: records of its VMs, in receive order.
pub type Batch = Vec<Record>;

/// Asks every worker to close its files and reopen them on next use
/// (SIGHUP, log rotation). A generation counter rather than a message: the
/// receive loop raises it without ever waiting for room in a full queue,
/// and each worker acts once on every change it sees.
#[derive(Debug, Clone, Default)]
pub struct ReopenSignal(Arc<AtomicU64>);

impl ReopenSignal {
    pub fn raise(&self) {
        self.0.fetch_add(1, Relaxed);
    }

    pub fn generation(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// Index of the worker that owns `ip` among `workers`.
pub fn worker_of(ip: IpAddr, workers: usize) -> usize {
    let key: u64 = match ip {
        IpAddr::V4(v4) => u64::from(u32::from(v4)),
        IpAddr::V6(v6) => {
            let x = u128::from(v6);
            (x as u64) ^ ((x >> 64) as u64)
        }
    };
    // Fibonacci hashing spreads consecutive addresses (127.1.0.1, .2, ...)
    // evenly over the workers; the high bits are the well-mixed ones.
    let h = key.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (((h >> 32) * workers as u64) >> 32) as usize
}

/// The receive loop's side of the worker channels.
pub struct Dispatcher {
    senders: Vec<Sender<Batch>>,
    pending: Vec<Batch>,
    recycle: Receiver<Batch>,
    /// When the receive loop first saw records pending and not yet sent.
    pending_since: Option<Instant>,
    /// At shutdown, once the socket is frozen, a full queue is waited on
    /// until then rather than dropped: nothing new can arrive meanwhile.
    patient_until: Option<Instant>,
    /// Dropped since the last [`Dispatcher::publish`].
    dropped: u64,
}

impl Dispatcher {
    pub fn new(senders: Vec<Sender<Batch>>, recycle: Receiver<Batch>) -> Self {
        let pending = senders
            .iter()
            .map(|_| Vec::with_capacity(BATCH_RECORDS))
            .collect();
        Dispatcher {
            senders,
            pending,
            recycle,
            pending_since: None,
            patient_until: None,
            dropped: 0,
        }
    }

    /// Queues one record for its worker, sending the batch once it is full.
    pub fn push(&mut self, rec: Record) {
        let w = worker_of(rec.ip, self.senders.len());
        self.pending[w].push(rec);
        if self.pending[w].len() >= BATCH_RECORDS {
            self.send(w);
        }
    }

    /// Whether records wait in partly filled batches.
    pub fn has_pending(&self) -> bool {
        self.pending.iter().any(|p| !p.is_empty())
    }

    /// Sends the partly filled batches once they have waited [`LINGER`]
    /// (the receive loop calls this once per wake-up).
    pub fn tick(&mut self, now: Instant) {
        if !self.has_pending() {
            self.pending_since = None;
            return;
        }
        let since = *self.pending_since.get_or_insert(now);
        if now.duration_since(since) >= LINGER {
            self.flush();
        }
    }

    /// Sends every partly filled batch.
    pub fn flush(&mut self) {
        self.pending_since = None;
        for w in 0..self.pending.len() {
            if !self.pending[w].is_empty() {
                self.send(w);
            }
        }
    }

    /// From now on, wait for room in a full queue until `until` instead of
    /// dropping (the shutdown drain of a frozen socket).
    pub fn wait_for_room_until(&mut self, until: Instant) {
        self.patient_until = Some(until);
    }

    fn send(&mut self, w: usize) {
        // An empty Vec costs nothing; a fresh batch is fetched only once
        // this one is gone, so an overloaded queue does not churn vectors.
        let batch = std::mem::take(&mut self.pending[w]);
        let n = batch.len() as u64;
        let sent = match self.patient_until {
            None => self.senders[w].try_send(batch).map_err(|e| match e {
                TrySendError::Full(b) | TrySendError::Disconnected(b) => b,
            }),
            Some(until) => self.senders[w]
                .send_deadline(batch, until)
                .map_err(|e| match e {
                    SendTimeoutError::Timeout(b) | SendTimeoutError::Disconnected(b) => b,
                }),
        };
        match sent {
            Ok(()) => {
                self.pending[w] = self
                    .recycle
                    .try_recv()
                    .unwrap_or_else(|_| Vec::with_capacity(BATCH_RECORDS));
            }
            Err(mut batch) => {
                self.dropped += n;
                // Reuse the refused vector as the next pending batch.
                batch.clear();
                self.pending[w] = batch;
            }
        }
    }

    /// Adds the counts since the last call to `stats`, and samples the
    /// queue depth.
    pub fn publish(&mut self, stats: &Stats) {
        stats.add(Counter::DroppedOverload, self.dropped);
        self.dropped = 0;
        let mut depth = 0;
        for (i, sender) in self.senders.iter().enumerate() {
            if let Some(queue) = stats.worker_queues.get(i) {
                queue.store(sender.len() as u64, Relaxed);
            }
            depth += sender.len() as u64;
        }
        stats.set(Counter::QueueDepth, depth);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossbeam_channel::bounded;
    use std::net::Ipv4Addr;

    fn rec(n: u32) -> Record {
        Record {
            ip: IpAddr::V4(Ipv4Addr::from(0x7f01_0000 + n)),
            recv_ms: RecvMs(1),
            stat: Stat::default(),
            signed: None,
        }
    }

    #[test]
    fn same_ip_same_worker_and_spread_even() {
        let mut per = [0usize; 4];
        for n in 0..4000 {
            let ip = rec(n).ip;
            let w = worker_of(ip, 4);
            assert_eq!(w, worker_of(ip, 4));
            per[w] += 1;
        }
        for count in per {
            assert!((800..1200).contains(&count), "{per:?}");
        }
        assert_eq!(worker_of("fd00::1".parse().unwrap(), 1), 0);
    }

    #[test]
    fn full_queue_drops_and_counts_never_blocks() {
        let (tx, rx) = bounded(1);
        let (_rtx, rrx) = bounded(4);
        let mut d = Dispatcher::new(vec![tx], rrx);
        let stats = Stats::default();
        for n in 0..3 {
            d.push(rec(n));
        }
        d.flush(); // fills the one slot
        d.push(rec(9));
        d.flush(); // no room: dropped, not blocked
        d.publish(&stats);
        assert_eq!(stats.get(Counter::DroppedOverload), 1);
        assert_eq!(stats.get(Counter::QueueDepth), 1);
        assert_eq!(rx.try_recv().unwrap().len(), 3);
    }

    #[test]
    fn partial_batches_linger_then_go() {
        let (tx, rx) = bounded(8);
        let (_rtx, rrx) = bounded(4);
        let mut d = Dispatcher::new(vec![tx], rrx);
        let t0 = Instant::now();
        d.tick(t0);
        d.push(rec(1));
        d.tick(t0);
        d.push(rec(2));
        d.tick(t0 + LINGER / 2);
        assert_eq!(rx.len(), 0);
        d.tick(t0 + LINGER);
        assert_eq!(rx.len(), 1);
        assert!(!d.has_pending());
    }

    #[test]
    fn full_batches_go_without_flush() {
        let (tx, rx) = bounded(8);
        let (_rtx, rrx) = bounded(4);
        let mut d = Dispatcher::new(vec![tx], rrx);
        for n in 0..BATCH_RECORDS as u32 {
            d.push(rec(n));
        }
        assert_eq!(rx.len(), 1);
    }
}
