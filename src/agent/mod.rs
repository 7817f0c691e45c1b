//! `udp-vmagent`: runs on a VM (or container, or host) and pushes its real
//! figures to the aggregator in the contract's datagram.
//!
//! Once per interval it reads the kernel's counters ([`sampler`], with the
//! parsers in [`procfs`]), turns the difference from the last reading into
//! a [`Stat`], and sends it to every `--server` ([`send`]). The first
//! datagram goes one interval after the start (a difference needs two
//! readings); the start itself is delayed by a random part of an interval
//! so a fleet rebooting together does not report in the same second. On
//! SIGTERM or SIGINT (or `--duration`) it reads once more and sends the
//! part interval with the final flag, then returns.
//!
//! It must cost nothing on every VM of a fleet: one thread, no allocation
//! per sample after the first, sleeping between samples.

pub mod procfs;
pub mod sampler;
pub mod send;

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{Duration, Instant};

use crate::config::{AgentConfig, ConfigError};
use crate::stop::Stop;
use crate::wire::{self, Stat};
use sampler::{Roots, Sample, SampleError, Sampler};
use send::Servers;

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Sample(#[from] SampleError),
    #[error(
        "no datagram reached any --server: {samples} sample(s), {send_errors} send error(s); check the address and that the aggregator listens"
    )]
    NothingDelivered { samples: u64, send_errors: u64 },
    #[error(transparent)]
    Key(#[from] crate::auth::KeyFileError),
}

/// What a finished agent did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AgentSummary {
    pub samples: u64,
    /// Samples that at least one server's socket took.
    pub delivered: u64,
    pub send_errors: u64,
    pub sample_errors: u64,
    /// Whether any `--server` was given (`--print` alone sends nothing).
    pub has_servers: bool,
}

impl AgentSummary {
    /// A run that sampled and had servers but got no datagram to any of
    /// them failed, whatever it printed: the operator's check ("it
    /// arrives") must not pass on a typo in `--server`.
    pub fn outcome(&self) -> Result<(), AgentError> {
        if self.has_servers && self.samples > 0 && self.delivered == 0 {
            return Err(AgentError::NothingDelivered {
                samples: self.samples,
                send_errors: self.send_errors,
            });
        }
        Ok(())
    }
}

/// `udp-vmagent: samples=… delivered=… send_errors=… sample_errors=…`.
pub fn summary_line(r: &AgentSummary) -> String {
    format!(
        "udp-vmagent: samples={} delivered={} send_errors={} sample_errors={}",
        r.samples, r.delivered, r.send_errors, r.sample_errors
    )
}

/// At most one line a minute about failed readings.
const SAMPLE_ERROR_LOG_EVERY: Duration = Duration::from_secs(60);

/// Runs until `stop` is requested or `--duration` passes; must be called on
/// the thread `stop` was made for. Only a failure of the very first
/// reading is an error: later ones are counted and logged, and the agent
/// goes on.
pub fn run(cfg: &AgentConfig, stop: &Stop) -> Result<AgentSummary, AgentError> {
    cfg.validate()?;
    // Read first, before anything else can fail or privileges matter.
    let key = cfg
        .key_file
        .as_deref()
        .map(crate::auth::read_vm_key)
        .transpose()?;
    let started = Instant::now();
    let monotonic_ms = || started.elapsed().as_millis() as u64;
    let deadline = cfg.duration.map(|d| started + d);
    let mut sampler = Sampler::new(&Roots {
        proc: cfg.proc_root.clone(),
        sys: cfg.sys_root.clone(),
    });
    // The first reading checks every path before the agent settles in.
    sampler.sample(monotonic_ms())?;
    let jitter = if cfg.no_jitter {
        Duration::ZERO
    } else {
        cfg.interval.mul_f64(rand::random::<f64>())
    };
    let boot_id: u32 = rand::random();
    let mut summary = AgentSummary {
        has_servers: !cfg.servers.is_empty(),
        ..AgentSummary::default()
    };
    let mut to: Vec<&str> = cfg.servers.iter().map(String::as_str).collect();
    if cfg.print {
        to.push("stdout");
    }
    // Before the servers are resolved, so a warning about one follows the
    // line that says what the agent is doing.
    crate::log_line(&format!(
        "udp-vmagent: boot_id {boot_id}, every {:?} to {}{}, first in {:.1}s",
        cfg.interval,
        to.join(", "),
        key.as_ref().map_or(String::new(), |k| format!(
            " (version 2, key id {})",
            k.key_id()
        )),
        (jitter + cfg.interval).as_secs_f64(),
    ));
    let mut servers = Servers::new(&cfg.servers);
    let mut stopped = wait(stop, started + jitter, deadline);
    if !stopped {
        // The baseline is taken after the jitter, one interval before the
        // first datagram.
        sampler.sample(monotonic_ms())?;
    }
    let mut next = Instant::now() + cfg.interval;
    let mut line = String::with_capacity(256);
    let mut seq = 0u64;
    let mut sample_errors = crate::RateLimited::new(SAMPLE_ERROR_LOG_EVERY);
    let interval_s = wire::interval_field(cfg.interval);
    while !stopped {
        stopped = wait(stop, next, deadline);
        match sampler.sample(monotonic_ms()) {
            Ok(Some(sample)) => {
                let stat = stat_of(&sample, boot_id, seq, interval_s, stopped);
                seq += 1;
                summary.samples += 1;
                let sent = match &key {
                    Some(key) => servers.send(&key.encode(&stat)),
                    None => servers.send(&wire::encode(&stat)),
                };
                if sent > 0 {
                    summary.delivered += 1;
                }
                if cfg.print {
                    line.clear();
                    print_line(&mut line, &stat);
                    let _ = std::io::stdout().lock().write_all(line.as_bytes());
                }
            }
            Ok(None) => {}
            Err(e) => {
                summary.sample_errors += 1;
                sample_errors.log(|held| {
                    format!(
                        "udp-vmagent: warning: sample skipped: {e}{}",
                        crate::held_back_note(held)
                    )
                });
            }
        }
        // A late wake-up (a suspended VM) skips the missed intervals
        // instead of sending them in a burst.
        next += cfg.interval;
        let now = Instant::now();
        if next <= now {
            next = now + cfg.interval;
        }
    }
    summary.send_errors = servers.errors();
    Ok(summary)
}

/// Sleeps until `until`; true when a stop came (a signal, or `deadline`).
fn wait(stop: &Stop, until: Instant, deadline: Option<Instant>) -> bool {
    let until = deadline.map_or(until, |d| d.min(until));
    stop.sleep_until(until) || deadline.is_some_and(|d| Instant::now() >= d)
}

/// The datagram for one sample.
pub fn stat_of(s: &Sample, boot_id: u32, seq: u64, interval_s: u16, last: bool) -> Stat {
    Stat {
        flags: if last { wire::FLAG_FINAL } else { 0 },
        interval_s,
        boot_id,
        vcpus: s.vcpus,
        seq,
        timestamp_ms: crate::unix_ms(),
        cpu_pct_x100: s.cpu_pct_x100,
        mem_pct_x100: s.mem_pct_x100,
        mem_mib: s.mem_mib,
        net_rx_bytes: s.net_rx_bytes,
        net_tx_bytes: s.net_tx_bytes,
        disk_read_bytes: s.disk_read_bytes,
        disk_write_bytes: s.disk_write_bytes,
    }
}

/// `--print`: one readable `key=value` line per sample, into a reused
/// buffer.
pub fn print_line(out: &mut String, s: &Stat) {
    let pct = |x: u16| (x / 100, x % 100);
    let (cpu, cpu_frac) = pct(s.cpu_pct_x100);
    let (mem, mem_frac) = pct(s.mem_pct_x100);
    let _ = writeln!(
        out,
        "ts_ms={} seq={} vcpus={} cpu={cpu}.{cpu_frac:02}% mem={mem}.{mem_frac:02}% mem_mib={} net_rx={} net_tx={} disk_read={} disk_write={} final={}",
        s.timestamp_ms,
        s.seq,
        s.vcpus,
        s.mem_mib,
        s.net_rx_bytes,
        s.net_tx_bytes,
        s.disk_read_bytes,
        s.disk_write_bytes,
        u8::from(s.is_final()),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_print_line_is_key_value_with_two_decimals() {
        let mut line = String::new();
        print_line(&mut line, &wire::TEST_VECTOR);
        assert_eq!(
            line,
            "ts_ms=1764110400123 seq=41 vcpus=4 cpu=7.25% mem=31.50% mem_mib=8192 net_rx=1048576 net_tx=524288 disk_read=4096 disk_write=65536 final=0\n"
        );
    }

    #[test]
    fn a_stat_carries_the_sample_and_the_final_flag() {
        let s = Sample {
            vcpus: 2,
            mem_mib: 2048,
            cpu_pct_x100: 5000,
            mem_pct_x100: 2500,
            net_rx_bytes: 1,
            net_tx_bytes: 2,
            disk_read_bytes: 3,
            disk_write_bytes: 4,
        };
        let stat = stat_of(&s, 7, 3, 60, true);
        assert!(stat.is_final());
        assert_eq!((stat.boot_id, stat.seq, stat.interval_s), (7, 3, 60));
        assert_eq!(wire::decode(&wire::encode(&stat), false), Ok(stat));
    }
}
