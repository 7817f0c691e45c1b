//! The network loop: one mio-driven thread that takes datagrams off the
//! socket in batches, stamps `recv_ms`, validates them and hands the accepted
//! ones to the dispatcher.
//!
//! It does nothing else per datagram: no formatting, no file, no lock, no
//! allocation. Everything slow happens in the workers, so the socket is
//! drained as fast as the kernel fills it. Counts are kept in plain locals
//! and published to the shared [`Stats`] once per wake-up. It never blocks:
//! not on a full worker queue (counted drop), not on a SIGHUP (a
//! [`ReopenSignal`] the workers read).
//!
//! At a stop the loop keeps receiving until the socket has been quiet for
//! 100 ms (what was sent before the stop may still be in the kernel's
//! queues; at most 500 ms, as a fleet that keeps sending is never quiet),
//! then freezes it (connected to a peer that never sends, so the
//! kernel queues nothing new for it and refuses later datagrams as it
//! would at a closed port); then everything the kernel already queued is
//! taken and written, all within [`SHUTDOWN_DRAIN`]. What
//! that leaves is read and counted as kernel drops, so the books close:
//! sent = accepted + rejected + vm_limit + dropped + kernel drops.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Protocol, Socket, Type};

use crate::admission::{Admission, Refusal};
use crate::auth::Keyring;
use crate::dispatch::{Dispatcher, LINGER, Record, RecvMs, ReopenSignal};
use crate::stats::{self, Counter, Stats};
use crate::sys::{self, RecvBatch};
use crate::wire::{self, Reject};

const SOCKET: Token = Token(0);

/// Longest sleep in `poll`: how quickly a stop, a reopen or a status line is
/// noticed when no traffic arrives.
const IDLE_TICK: Duration = Duration::from_millis(50);

/// Batches taken per wake-up before the loop looks at its flags again.
const BATCHES_PER_WAKE: usize = 256;

/// How long a stop keeps taking what the kernel queued before it: a full
/// 256 MiB buffer (about 350,000 datagrams) takes well under a second here.
/// Past it, what is left is counted unread, not written.
pub const SHUTDOWN_DRAIN: Duration = Duration::from_secs(5);

/// How long the socket must stay quiet at a stop before it is frozen: on
/// loopback, and on a busy host, what was sent before the stop can still
/// be in the kernel's queues for a few milliseconds.
const SETTLE: Duration = Duration::from_millis(100);

/// The longest the settling lasts: a fleet that keeps sending is never
/// quiet, and what it sends after the stop is not the stop's to take.
const SETTLE_AT_MOST: Duration = Duration::from_millis(500);

/// Longest the unread rest is counted for after [`SHUTDOWN_DRAIN`]: reading
/// without looking runs at millions of datagrams a second.
const COUNT_UNREAD: Duration = Duration::from_secs(1);

/// Flags the process's signal handlers (or a test) set to steer the loop.
#[derive(Debug, Clone, Default)]
pub struct Control {
    pub stop: Arc<AtomicBool>,
    pub reopen: Arc<AtomicBool>,
}

/// A bound socket and what the kernel granted.
pub struct Bound {
    pub socket: UdpSocket,
    pub local: SocketAddr,
    /// SO_RCVBUF as the kernel reports it (Linux doubles the asked size).
    pub recv_buffer: usize,
}

/// Binds the listening socket: dual-stack for an IPv6 address, non-blocking,
/// with the receive buffer asked as large as `recv_buffer` (forced past
/// `net.core.rmem_max` where the process may), and with `SO_REUSEPORT` when
/// `shared` (one of several receivers on the same port). Returns what it
/// got.
pub fn bind(listen: SocketAddr, recv_buffer: usize, shared: bool) -> io::Result<Bound> {
    let socket = Socket::new(
        Domain::for_address(listen),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    if listen.is_ipv6() {
        // `[::]` also takes IPv4 traffic, as IPv4-mapped sources.
        socket.set_only_v6(false)?;
    }
    socket.set_nonblocking(true)?;
    if shared {
        socket.set_reuse_port(true)?;
    }
    // A refused size is not fatal: the kernel's default still works.
    let _ = socket.set_recv_buffer_size(recv_buffer);
    let mut got = socket.recv_buffer_size().unwrap_or(0);
    if got < recv_buffer && sys::force_recv_buffer(&socket, recv_buffer).is_ok() {
        got = socket.recv_buffer_size().unwrap_or(got);
    }
    socket.bind(&listen.into())?;
    let std_sock: std::net::UdpSocket = socket.into();
    let local = std_sock.local_addr()?;
    Ok(Bound {
        socket: UdpSocket::from_std(std_sock),
        local,
        recv_buffer: got,
    })
}

/// Counts not yet published to [`Stats`].
#[derive(Default)]
struct Local {
    received: u64,
    rejected: [u64; Reject::ALL.len()],
    vm_limit: u64,
}

/// What SIGHUP does: every worker reopens its files, and the fleet keys
/// (`--auth-keys`) are reread.
#[derive(Debug, Clone, Default)]
pub struct Hangup {
    pub reopen: ReopenSignal,
    pub keyring: Option<Arc<Keyring>>,
}

/// The network loop of one socket.
pub struct NetLoop {
    socket: UdpSocket,
    poll: Poll,
    batch: RecvBatch,
    dispatcher: Dispatcher,
    hangup: Hangup,
    admission: Admission,
    stats: Arc<Stats>,
    /// Count and drop: the bare receive loop that benchmarks measure against.
    discard: bool,
    /// Which of the receive loops this is; the first prints the status.
    index: usize,
    local: Local,
    /// The socket's kernel drop counter at the last look (it wraps at 2^32).
    kernel_drops: Option<u32>,
    /// Receive errors, at most one line per 10 s.
    errors: crate::RateLimited,
}

impl NetLoop {
    pub fn new(
        mut socket: UdpSocket,
        dispatcher: Dispatcher,
        hangup: Hangup,
        admission: Admission,
        stats: Arc<Stats>,
        discard: bool,
        index: usize,
    ) -> io::Result<Self> {
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut socket, SOCKET, Interest::READABLE)?;
        Ok(NetLoop {
            kernel_drops: sys::socket_drops(&socket),
            socket,
            poll,
            batch: RecvBatch::new(),
            dispatcher,
            hangup,
            admission,
            stats,
            discard,
            index,
            local: Local::default(),
            errors: crate::RateLimited::new(Duration::from_secs(10)),
        })
    }

    /// Runs until `ctl.stop` is set or `deadline` passes, printing a status
    /// line every `stats_interval`, then takes what the socket already holds.
    /// On return every accepted datagram has been handed to the workers; the
    /// socket closes with the loop.
    pub fn run(mut self, ctl: &Control, deadline: Option<Instant>, stats_interval: Duration) {
        let mut events = Events::with_capacity(8);
        let mut more = false;
        let mut last_status = Instant::now();
        let mut prev = self.stats.snapshot();
        loop {
            if ctl.stop.load(Relaxed) || deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            if ctl.reopen.swap(false, Relaxed) {
                crate::log_line("reopening data files (SIGHUP)");
                self.hangup.reopen.raise();
                if let Some(keys) = &self.hangup.keyring {
                    keys.reload_logged();
                }
            }
            if self.index == 0 && last_status.elapsed() >= stats_interval {
                let now = self.stats.snapshot();
                let secs = last_status.elapsed().as_secs_f64();
                crate::log_line(&stats::status_line(&now, &prev, secs));
                if now[Counter::VmLimit] > prev[Counter::VmLimit] {
                    crate::log_line(&format!(
                        "warning: {} datagrams from new sources refused: {} VMs is the --max-vms cap",
                        now[Counter::VmLimit] - prev[Counter::VmLimit],
                        self.admission.vms()
                    ));
                }
                prev = now;
                last_status = Instant::now();
            }
            // With datagrams still waiting, only look; else sleep until one
            // comes or a lingering batch is due.
            let timeout = if more {
                Duration::ZERO
            } else if self.dispatcher.has_pending() {
                LINGER
            } else {
                IDLE_TICK
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout))
                && e.kind() != io::ErrorKind::Interrupted
            {
                self.log_error("poll", &e);
            }
            more = self.drain(BATCHES_PER_WAKE);
            self.dispatcher.tick(Instant::now());
            self.publish();
        }
        self.shut_down();
    }

    /// Takes what is still arriving until the socket has been quiet for
    /// [`SETTLE`] (datagrams sent before the stop may still be on their way
    /// through the kernel), then freezes it and takes what it holds; all of
    /// it within [`SHUTDOWN_DRAIN`], after which the rest is counted unread.
    /// Then hands over the last batches.
    fn shut_down(&mut self) {
        let until = Instant::now() + SHUTDOWN_DRAIN;
        self.dispatcher.wait_for_room_until(until);
        self.settle(until);
        if let Err(e) = self.freeze() {
            self.log_error("freeze", &e);
        }
        while self.drain(BATCHES_PER_WAKE) {
            self.dispatcher.tick(Instant::now());
            self.publish();
            if Instant::now() >= until {
                let left = self.count_unread();
                crate::log_line(&format!(
                    "warning: {left} datagrams still queued after {}s of shutdown drain, counted as kernel drops",
                    SHUTDOWN_DRAIN.as_secs()
                ));
                self.stats.add(Counter::KernelDrops, left);
                break;
            }
        }
        self.dispatcher.flush();
        self.publish();
    }

    /// Receives until nothing has come for [`SETTLE`], [`SETTLE_AT_MOST`]
    /// has passed, or `until` has.
    fn settle(&mut self, until: Instant) {
        let until = until.min(Instant::now() + SETTLE_AT_MOST);
        let mut events = Events::with_capacity(8);
        let mut last_arrival = Instant::now();
        while last_arrival.elapsed() < SETTLE && Instant::now() < until {
            let before = self.local.received;
            let more = self.drain(BATCHES_PER_WAKE);
            if self.local.received != before {
                last_arrival = Instant::now();
            }
            self.dispatcher.tick(Instant::now());
            self.publish();
            if !more {
                let wait = SETTLE.saturating_sub(last_arrival.elapsed());
                if let Err(e) = self.poll.poll(&mut events, Some(wait))
                    && e.kind() != io::ErrorKind::Interrupted
                {
                    self.log_error("poll", &e);
                }
            }
        }
    }

    /// Connects the socket to its own port on loopback, a peer that never
    /// sends: the kernel keeps what it queued but queues nothing new.
    fn freeze(&mut self) -> io::Result<()> {
        let local = self.socket.local_addr()?;
        let peer = match local.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        self.socket.connect(SocketAddr::new(peer, local.port()))
    }

    /// Reads what is left without looking at it, and says how many there
    /// were. The frozen socket gets nothing new, so this ends when it is
    /// empty; should the freeze have failed under a flood, [`COUNT_UNREAD`]
    /// bounds it all the same.
    fn count_unread(&mut self) -> u64 {
        let until = Instant::now() + COUNT_UNREAD;
        let mut n = 0;
        while Instant::now() < until {
            match sys::recv_batch(&self.socket, &mut self.batch) {
                Ok(got) => n += got as u64,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        n
    }

    /// Reads batches until the socket is empty (false) or `budget` batches
    /// are taken with datagrams still waiting (true).
    fn drain(&mut self, budget: usize) -> bool {
        for _ in 0..budget {
            match sys::recv_batch(&self.socket, &mut self.batch) {
                Ok(_) => self.take_batch(),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // ICMP errors and the like: not ours to stop for.
                    self.log_error("receive", &e);
                    return false;
                }
            }
        }
        true
    }

    fn take_batch(&mut self) {
        if self.discard {
            self.local.received += self.batch.len() as u64;
            return;
        }
        let recv_ms = RecvMs(crate::unix_ms());
        for i in 0..self.batch.len() {
            let (src, payload, truncated) = self.batch.get(i);
            self.local.received += 1;
            let ip = wire::canonical_ip(src);
            let (stat, signed) = match wire::decode_datagram(payload, truncated) {
                Ok(decoded) => decoded,
                Err(reason) => {
                    self.local.rejected[reason.index()] += 1;
                    continue;
                }
            };
            match self.admission.check(ip) {
                Ok(()) => self.dispatcher.push(Record {
                    ip,
                    recv_ms,
                    stat,
                    signed,
                }),
                Err(Refusal::NotAllowed) => self.local.rejected[Reject::NotAllowed.index()] += 1,
                Err(Refusal::VmLimit) => self.local.vm_limit += 1,
            }
        }
    }

    fn publish(&mut self) {
        let local = std::mem::take(&mut self.local);
        self.stats.add(Counter::Received, local.received);
        if let Some(mine) = self.stats.receiver_received.get(self.index) {
            mine.fetch_add(local.received, Relaxed);
        }
        for (i, n) in local.rejected.iter().enumerate() {
            if *n > 0 {
                self.stats.rejected[i].fetch_add(*n, Relaxed);
            }
        }
        self.stats.add(Counter::VmLimit, local.vm_limit);
        if let (Some(last), Some(now)) = (self.kernel_drops, sys::socket_drops(&self.socket)) {
            self.stats
                .add(Counter::KernelDrops, u64::from(now.wrapping_sub(last)));
            self.kernel_drops = Some(now);
        }
        self.dispatcher.publish(&self.stats);
    }

    fn log_error(&mut self, what: &str, e: &io::Error) {
        self.errors.log(|held| {
            format!(
                "warning: {what} error on the UDP socket: {e}{}",
                crate::held_back_note(held)
            )
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossbeam_channel::bounded;

    #[test]
    fn a_reopen_with_every_queue_full_never_blocks_the_loop() {
        let bound = bind("127.0.0.1:0".parse().unwrap(), 1 << 16, false).unwrap();
        // One queue slot, taken, and no worker to empty it: a stalled disk.
        let (tx, _rx) = bounded(1);
        tx.try_send(Vec::new()).unwrap();
        let (_recycle_tx, recycle_rx) = bounded(1);
        let reopen = ReopenSignal::default();
        let net_loop = NetLoop::new(
            bound.socket,
            Dispatcher::new(vec![tx], recycle_rx),
            Hangup {
                reopen: reopen.clone(),
                keyring: None,
            },
            Admission::new(Vec::new(), 10),
            Arc::new(Stats::default()),
            false,
            0,
        )
        .unwrap();
        let ctl = Control::default();
        ctl.reopen.store(true, Relaxed);
        let started = Instant::now();
        net_loop.run(
            &ctl,
            Some(started + Duration::from_millis(200)),
            Duration::from_secs(60),
        );
        assert!(started.elapsed() < Duration::from_secs(3));
        assert_eq!(reopen.generation(), 1);
        assert!(!ctl.reopen.load(Relaxed));
    }
}
