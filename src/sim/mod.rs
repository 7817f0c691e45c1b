//! The VM simulator and load generator behind `udp-vmsim`.
//!
//! One process plays every VM. Each VM has its own source address (the i-th
//! after `--src-base`), chosen per datagram with `IP_PKTINFO` on one shared
//! socket, so 100,000 VMs need one descriptor, not 100,000 (see [`sys`]).
//!
//! Sends follow one schedule: datagram `g` goes to VM `g mod count` at
//! `g / rate` seconds. In the default mode the rate is `count / interval`,
//! which spreads the VMs' phases evenly over the interval and sends each VM
//! once per interval; `--rate` and `--total` turn the same loop into a load
//! generator. The schedule is absolute, so a late wake-up is caught up in
//! the next batch and the achieved rate stays on target.
//!
//! VM behaviour is deterministic from `--seed`: the profile of VM `i` is
//! `PROFILES[(i + seed) % 5]` (so exactly a fifth are idle whenever the count
//! is a multiple of five), and its values drift as a mean-reverting walk.
//!
//! [`sys`]: crate::sys

pub mod history;

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

use crate::config::{ConfigError, Rate, SimConfig};
use crate::sys::{self, BATCH, Outgoing};
use crate::wire::{self, DATAGRAM_LEN, FLAG_FINAL, SIGNED_LEN, Stat, VmKey};

/// How a simulated VM behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// CPU mostly under 10 %, little network and disk.
    Idle,
    /// Middling, stable load.
    Steady,
    /// CPU above 80 %.
    Busy,
    /// Low, with rare spikes.
    Bursty,
    /// Low CPU and memory on many vCPUs.
    Oversized,
}

pub const PROFILES: [Profile; 5] = [
    Profile::Idle,
    Profile::Steady,
    Profile::Busy,
    Profile::Bursty,
    Profile::Oversized,
];

/// Base levels a profile drifts around: CPU %, memory %, network B/s, disk B/s.
struct Levels {
    cpu: f64,
    mem: f64,
    net: f64,
    disk: f64,
}

/// One simulated VM.
#[derive(Debug, Clone)]
pub struct SimVm {
    pub src: Ipv4Addr,
    pub profile: Profile,
    pub vcpus: u16,
    pub mem_mib: u32,
    pub boot_id: u32,
    pub seq: u64,
    /// Sends version 2 with this key (`--fleet-key`).
    key: Option<VmKey>,
    rng: SmallRng,
    base: [f64; 4],
    level: [f64; 4],
}

impl SimVm {
    /// The VM sending version 2 under `key`.
    pub fn signing(mut self, key: VmKey) -> SimVm {
        self.key = Some(key);
        self
    }

    /// The VM's next datagram into `out` (72 or 92 bytes: its length).
    fn encode_next(&mut self, out: &mut [u8], interval_s: u16, now_ms: u64, last: bool) -> usize {
        let stat = self.next_stat(interval_s, now_ms, last);
        match &self.key {
            Some(key) => {
                out[..SIGNED_LEN].copy_from_slice(&key.encode(&stat));
                SIGNED_LEN
            }
            None => {
                out[..DATAGRAM_LEN].copy_from_slice(&wire::encode(&stat));
                DATAGRAM_LEN
            }
        }
    }

    /// VM `index` of a run seeded with `seed`; `boot_id` is per run.
    pub fn new(index: u32, src: Ipv4Addr, seed: u64, boot_id: u32) -> SimVm {
        let profile = PROFILES[((u64::from(index) + seed) % PROFILES.len() as u64) as usize];
        let mut rng =
            SmallRng::seed_from_u64(seed ^ u64::from(index).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let (vcpus, mib_per_cpu): (u16, u32) = match profile {
            Profile::Oversized => ([16, 32, 48, 64][rng.random_range(0..4)], 4096),
            _ => (
                [1, 2, 4, 8, 16][rng.random_range(0..5)],
                [2048, 4096, 8192][rng.random_range(0..3)],
            ),
        };
        let l = match profile {
            Profile::Idle => Levels {
                cpu: rng.random_range(1.0..5.0),
                mem: rng.random_range(20.0..60.0),
                net: rng.random_range(200.0..1500.0),
                disk: rng.random_range(0.0..20_000.0),
            },
            Profile::Steady => Levels {
                cpu: rng.random_range(30.0..60.0),
                mem: rng.random_range(50.0..75.0),
                net: rng.random_range(50e3..500e3),
                disk: rng.random_range(200e3..2e6),
            },
            Profile::Busy => Levels {
                cpu: rng.random_range(85.0..95.0),
                mem: rng.random_range(60.0..85.0),
                net: rng.random_range(1e6..20e6),
                disk: rng.random_range(1e6..30e6),
            },
            Profile::Bursty => Levels {
                cpu: rng.random_range(3.0..8.0),
                mem: rng.random_range(40.0..70.0),
                net: rng.random_range(5e3..50e3),
                disk: rng.random_range(50e3..500e3),
            },
            Profile::Oversized => Levels {
                cpu: rng.random_range(8.0..25.0),
                mem: rng.random_range(10.0..30.0),
                net: rng.random_range(10e3..100e3),
                disk: rng.random_range(100e3..1e6),
            },
        };
        let base = [l.cpu, l.mem, l.net, l.disk];
        SimVm {
            key: None,
            src,
            profile,
            vcpus,
            mem_mib: u32::from(vcpus) * mib_per_cpu,
            boot_id,
            seq: 0,
            rng,
            base,
            level: base,
        }
    }

    /// The next sample: each level takes a step back toward its base plus
    /// noise (CPU and memory ±5 % of the base, I/O ±20 %); bursty VMs spike
    /// now and then.
    pub fn next_stat(&mut self, interval_s: u16, now_ms: u64, last: bool) -> Stat {
        const NOISE: [f64; 4] = [0.05, 0.05, 0.2, 0.2];
        for ((level, base), amp) in self.level.iter_mut().zip(self.base).zip(NOISE) {
            let noise = self.rng.random_range(-amp..amp) * base;
            *level = (*level + 0.2 * (base - *level) + noise).max(0.0);
        }
        let mut cpu = self.level[0];
        if self.profile == Profile::Bursty && self.rng.random_bool(0.02) {
            cpu = self.rng.random_range(70.0..100.0);
        }
        let pct = |v: f64| (v * 100.0).round().clamp(0.0, 10_000.0) as u16;
        let per_interval = |bps: f64| (bps * f64::from(interval_s)) as u64;
        let net = per_interval(self.level[2]);
        let disk = per_interval(self.level[3]);
        let stat = Stat {
            flags: if last { FLAG_FINAL } else { 0 },
            interval_s,
            boot_id: self.boot_id,
            vcpus: self.vcpus,
            seq: self.seq,
            timestamp_ms: now_ms,
            cpu_pct_x100: pct(cpu),
            mem_pct_x100: pct(self.level[1].min(100.0)),
            mem_mib: self.mem_mib,
            net_rx_bytes: net * 3 / 5,
            net_tx_bytes: net - net * 3 / 5,
            disk_read_bytes: disk / 3,
            disk_write_bytes: disk - disk / 3,
        };
        self.seq += 1;
        stat
    }
}

/// Datagrams that should have gone out `elapsed` into a run at `rate`/s,
/// the first one at time zero.
pub fn due_by(elapsed: Duration, rate: f64) -> u64 {
    (elapsed.as_secs_f64() * rate).floor() as u64 + 1
}

/// When datagram number `n` (0-based) is due at `rate`/s.
pub fn due_at(n: u64, rate: f64) -> Duration {
    Duration::from_secs_f64(n as f64 / rate)
}

/// What a simulator run did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SimSummary {
    /// Datagrams sent, final ones included.
    pub sent: u64,
    /// Of which final-flag datagrams.
    pub finals: u64,
    pub send_errors: u64,
    /// Time of the paced phase (finals excluded), seconds.
    pub elapsed_s: f64,
}

impl SimSummary {
    /// Achieved rate of the paced phase.
    pub fn rate(&self) -> f64 {
        if self.elapsed_s > 0.0 {
            (self.sent - self.finals) as f64 / self.elapsed_s
        } else {
            0.0
        }
    }
}

/// The one-line summary a run ends with.
pub fn summary_line(r: &SimSummary) -> String {
    format!(
        "udp-vmsim: sent={} finals={} send_errors={} elapsed_s={:.2} rate={:.0}/s",
        r.sent,
        r.finals,
        r.send_errors,
        r.elapsed_s,
        r.rate()
    )
}

/// Why the simulator could not run.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot write history to {path} (--write-dir): {error}")]
    History {
        path: std::path::PathBuf,
        error: std::io::Error,
    },
    #[error(transparent)]
    Keys(#[from] crate::auth::KeyFileError),
    #[error("cannot open the sending socket: {0}")]
    Socket(io::Error),
}

/// Lowest rate the final datagrams go out at, so stopping 100,000 VMs takes
/// seconds even when their interval spreads them over minutes.
const MIN_FINAL_RATE: f64 = 10_000.0;

/// Longest sleep between looks at the stop flag.
const MAX_NAP: Duration = Duration::from_millis(50);

struct Transmitter {
    socket: UdpSocket,
    dst: SocketAddrV4,
    /// Datagrams of one VM per send (UDP GSO); 1 sends each on its own.
    gso: usize,
    /// Bytes of each datagram: 72, or 92 for version 2.
    len: usize,
    summary: SimSummary,
    /// Send errors, at most one line per 5 s.
    errors: crate::RateLimited,
}

impl Transmitter {
    /// Sends `parts` (source, datagrams) laid out back to back in `buf`.
    fn send(&mut self, buf: &[u8], parts: &[(Ipv4Addr, usize)]) {
        let mut off = 0;
        let msgs: Vec<Outgoing> = parts
            .iter()
            .map(|&(src, n)| {
                let payload = &buf[off..off + n * self.len];
                off += payload.len();
                let segment = if n > 1 { self.len as u16 } else { 0 };
                Outgoing {
                    src,
                    payload,
                    segment,
                }
            })
            .collect();
        let sent_msgs = match sys::send_batch(&self.socket, self.dst, &msgs) {
            Ok(n) => n,
            Err(e) => {
                let dst = self.dst;
                self.errors.log(|held| {
                    format!(
                        "warning: send to {dst} failed: {e}{}",
                        crate::held_back_note(held)
                    )
                });
                0
            }
        };
        let sent: usize = parts[..sent_msgs].iter().map(|p| p.1).sum();
        let all: usize = parts.iter().map(|p| p.1).sum();
        self.summary.sent += sent as u64;
        self.summary.send_errors += (all - sent) as u64;
    }
}

/// One stretch of sending: how many, how fast, and whether these are the
/// VMs' final datagrams.
struct Phase {
    count: Option<u64>,
    /// Datagrams/s in total; infinite for flat out.
    rate: f64,
    last: bool,
}

/// Sends a phase's datagrams, VM 0 onward round-robin (`gso` consecutive
/// datagrams per VM when that many are due), until done or `stop`.
fn paced(
    sender: &mut Transmitter,
    vms: &mut [SimVm],
    phase: Phase,
    interval_s: u16,
    stop: &dyn Fn() -> bool,
) {
    let Phase { count, rate, last } = phase;
    let per_vm = if last { 1 } else { sender.gso };
    let most = BATCH * per_vm;
    let mut buf = vec![0u8; most * sender.len];
    let mut parts = Vec::with_capacity(BATCH);
    let mut next = 0;
    let start = Instant::now();
    let mut done = 0u64;
    while count.is_none_or(|c| done < c) && !stop() {
        let mut due = if rate.is_finite() {
            due_by(start.elapsed(), rate).saturating_sub(done)
        } else {
            most as u64
        };
        if let Some(c) = count {
            due = due.min(c - done);
        }
        if due == 0 {
            let wait = due_at(done, rate).saturating_sub(start.elapsed());
            std::thread::sleep(wait.min(MAX_NAP));
            continue;
        }
        let n = (due as usize).min(most);
        let now_ms = crate::unix_ms();
        parts.clear();
        let mut left = n;
        let mut off = 0;
        while left > 0 {
            let take = left.min(per_vm);
            let vm = &mut vms[next];
            for _ in 0..take {
                off += vm.encode_next(&mut buf[off..], interval_s, now_ms, last);
            }
            parts.push((vm.src, take));
            next = (next + 1) % vms.len();
            left -= take;
        }
        sender.send(&buf[..off], &parts);
        done += n as u64;
    }
}

/// Runs the simulator until `--duration`, `--total` or `stop`, then sends
/// every VM's final datagram (unless `--no-final`).
pub fn run(cfg: &SimConfig, stop: &AtomicBool) -> Result<SimSummary, SimError> {
    cfg.validate()?;
    let std::net::IpAddr::V4(base) = cfg.src_base else {
        unreachable!("validate() accepts IPv4 only");
    };
    let std::net::SocketAddr::V4(dst) = cfg.server else {
        unreachable!("validate() accepts IPv4 only");
    };
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).map_err(SimError::Socket)?;
    let run_boot: u32 = rand::random();
    let vms_base = u32::from(base);
    let fleet = cfg
        .fleet_key
        .as_deref()
        .map(crate::auth::read_fleet_key)
        .transpose()?;
    let mut vms: Vec<SimVm> = (0..cfg.count)
        .map(|i| {
            let boot = run_boot ^ i.wrapping_mul(0x2545_F491);
            let src = Ipv4Addr::from(vms_base + i);
            let vm = SimVm::new(i, src, cfg.seed, boot);
            match &fleet {
                Some((id, key)) => vm.signing(VmKey::derive(*id, key, src.into())),
                None => vm,
            }
        })
        .collect();
    let interval_s = cfg.interval_s();
    let rate = match cfg.rate {
        Rate::Interval => f64::from(cfg.count) / cfg.interval.as_secs_f64(),
        Rate::PerSecond(r) => r,
        Rate::Max => f64::INFINITY,
    };
    let mut sender = Transmitter {
        socket,
        dst,
        gso: cfg.gso,
        len: if fleet.is_some() {
            SIGNED_LEN
        } else {
            DATAGRAM_LEN
        },
        summary: SimSummary::default(),
        errors: crate::RateLimited::new(Duration::from_secs(5)),
    };
    let started = Instant::now();
    let deadline = cfg.duration.map(|d| started + d);
    let stopped = || stop.load(Relaxed) || deadline.is_some_and(|d| Instant::now() >= d);
    let run = Phase {
        count: cfg.total,
        rate,
        last: false,
    };
    paced(&mut sender, &mut vms, run, interval_s, &stopped);
    sender.summary.elapsed_s = started.elapsed().as_secs_f64();
    if !cfg.no_final {
        let before = sender.summary.sent;
        // Finals go out even after Ctrl-C: they are how a VM says goodbye.
        let finals = Phase {
            count: Some(u64::from(cfg.count)),
            rate: rate.max(MIN_FINAL_RATE),
            last: true,
        };
        paced(&mut sender, &mut vms, finals, interval_s, &|| false);
        sender.summary.finals = sender.summary.sent - before;
    }
    Ok(sender.summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(index: u32, seed: u64) -> SimVm {
        SimVm::new(index, Ipv4Addr::new(127, 1, 0, 1), seed, 42)
    }

    #[test]
    fn a_fifth_are_idle_and_profiles_follow_the_seed() {
        let idle = (0..100)
            .filter(|i| vm(*i, 7).profile == Profile::Idle)
            .count();
        assert_eq!(idle, 20);
        assert_ne!(vm(0, 1).profile, vm(0, 2).profile);
    }

    #[test]
    fn same_seed_same_values() {
        let (mut a, mut b) = (vm(3, 9), vm(3, 9));
        for _ in 0..50 {
            assert_eq!(a.next_stat(60, 1, false), b.next_stat(60, 1, false));
        }
    }

    #[test]
    fn every_sample_is_valid_and_seq_counts_from_zero() {
        for i in 0..25 {
            let mut v = vm(i, 1);
            for n in 0..200 {
                let s = v.next_stat(60, 1_700_000_000_000, n == 199);
                assert_eq!(s.seq, n);
                assert_eq!(wire::decode(&wire::encode(&s), false), Ok(s));
                assert_eq!(s.is_final(), n == 199);
            }
        }
    }

    #[test]
    fn idle_vms_stay_mostly_under_ten_percent() {
        let mut v = (0..5)
            .map(|i| vm(i, 0))
            .find(|v| v.profile == Profile::Idle)
            .unwrap();
        let stats: Vec<Stat> = (0..500).map(|_| v.next_stat(60, 0, false)).collect();
        let low = stats.iter().filter(|s| s.cpu_pct_x100 < 1000).count();
        assert!(low >= 475, "{low}");
        let net_bps = stats
            .iter()
            .map(|s| (s.net_rx_bytes + s.net_tx_bytes) / 60)
            .max()
            .unwrap();
        assert!(net_bps < 3000, "{net_bps}");
    }

    #[test]
    fn oversized_vms_are_big_and_quiet() {
        let v = (0..5)
            .map(|i| vm(i, 0))
            .find(|v| v.profile == Profile::Oversized)
            .unwrap();
        assert!(v.vcpus >= 16);
        let busy = (0..5)
            .map(|i| vm(i, 0))
            .find(|v| v.profile == Profile::Busy)
            .unwrap();
        let mut busy = busy;
        let s = busy.next_stat(60, 0, false);
        assert!(s.cpu_pct_x100 > 7000, "{}", s.cpu_pct_x100);
    }

    #[test]
    fn schedule_is_even() {
        assert_eq!(due_by(Duration::ZERO, 1000.0), 1);
        assert_eq!(due_by(Duration::from_millis(999), 1000.0), 1000);
        assert_eq!(due_by(Duration::from_secs(1), 5.0 / 60.0), 1);
        assert_eq!(due_by(Duration::from_secs(12), 5.0 / 60.0), 2);
        assert_eq!(due_at(3, 2.0), Duration::from_millis(1500));
    }

    #[test]
    fn summary_reports_the_paced_rate() {
        let r = SimSummary {
            sent: 1005,
            finals: 5,
            send_errors: 0,
            elapsed_s: 2.0,
        };
        assert_eq!(
            summary_line(&r),
            "udp-vmsim: sent=1005 finals=5 send_errors=0 elapsed_s=2.00 rate=500/s"
        );
    }
}
