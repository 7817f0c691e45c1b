//! vmstats: a collector of virtual machine statistics.
//!
//! VMs push fixed-size UDP datagrams; the aggregator keeps one append-only
//! file per VM and reports which VMs could be reclaimed. A datagram's way
//! through the crate, module by module:
//!
//! 1. [`net_loop`]: the mio network loop takes datagrams off the socket in
//!    batches ([`sys`] holds `recvmmsg` and its portable fallback), stamps
//!    them, validates them against the contract in [`wire`] and checks the
//!    source against [`admission`] (allow-list, VM cap);
//! 2. [`dispatch`]: accepted records go, in batches over bounded channels,
//!    to the one worker that owns their VM (source IP);
//! 3. [`worker`]: the worker verifies version 2 datagrams against [`auth`]
//!    (the fleet keys, each VM's key and replay window), formats rows into
//!    the VM's buffer and flushes it through the [`store`], which owns the
//!    per-VM files;
//! 4. [`report`]: the reclamation report is built from those files.
//!
//! [`aggregator`] wires these together for one run, [`stats`] counts what
//! happened, each counter named once ([`metrics`] serves the counts to
//! Prometheus), [`config`] holds the validated settings and [`sim`] is the
//! VM simulator and load generator. [`agent`] is the other end: what runs
//! on a real VM and sends its real figures; [`stop`] ends its sleeps (and
//! the report cache refresh's) at once. Log lines go through [`log_line`],
//! and a line that may repeat through a [`RateLimited`].

pub mod admission;
pub mod agent;
pub mod aggregator;
pub mod auth;
pub mod config;
pub mod dispatch;
pub mod export;
pub mod journal;
pub mod metrics;
pub mod net_loop;
pub mod report;
pub mod sim;
pub mod stats;
pub mod stop;
pub mod store;
pub mod sys;
pub mod wire;
pub mod worker;

thread_local! {
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// What `--version` prints: the crate's version and the build it came
/// from (see `build.rs`), so a bug report names the exact binary.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("VMSTATS_BUILD"), ")");

/// Runs `f` with [`log_line`] silenced on this thread when `quiet` (a
/// background pass over the data dir every 30 s would otherwise repeat the
/// same warnings, which the exit report names anyway). Threads it spawns
/// pass [`is_quiet`] on.
pub fn quietly<R>(quiet: bool, f: impl FnOnce() -> R) -> R {
    let was = QUIET.replace(quiet);
    let r = f();
    QUIET.set(was);
    r
}

/// Whether this thread's [`log_line`]s are silenced.
pub fn is_quiet() -> bool {
    QUIET.get()
}

/// Writes one line to stderr with a single `write`, so a script polling the
/// log (for the bound port, for status figures) never reads half a line;
/// `eprintln!` writes a formatted line in pieces.
pub fn log_line(line: &str) {
    use std::io::Write;
    if is_quiet() {
        return;
    }
    // Under the unit-test harness through its capture: a passing test that
    // provokes an error on purpose stays quiet, a failing one shows it.
    if cfg!(test) {
        eprintln!("{line}");
        return;
    }
    let mut text = String::with_capacity(line.len() + 1);
    text.push_str(line);
    text.push('\n');
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// A line that may repeat (a socket error, a full disk, a server that does
/// not answer), written with [`log_line`] at most once per `every`: those in
/// between are counted, and the next line is told how many were held back.
#[derive(Debug)]
pub struct RateLimited {
    every: std::time::Duration,
    last: Option<std::time::Instant>,
    held_back: u64,
}

impl RateLimited {
    pub const fn new(every: std::time::Duration) -> RateLimited {
        RateLimited {
            every,
            last: None,
            held_back: 0,
        }
    }

    /// Writes `line(held_back)` when a line is due, else counts this one.
    pub fn log(&mut self, line: impl FnOnce(u64) -> String) {
        let now = std::time::Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < self.every)
        {
            self.held_back += 1;
            return;
        }
        log_line(&line(self.held_back));
        self.held_back = 0;
        self.last = Some(now);
    }

    /// Writes `line(held_back)` if any were held back since the last line
    /// (at the end of a run, so none goes unsaid).
    pub fn flush(&mut self, line: impl FnOnce(u64) -> String) {
        if self.held_back > 0 {
            log_line(&line(self.held_back));
            self.held_back = 0;
        }
    }
}

/// `" (N more since the last such line)"`, or nothing when none were held
/// back: the tail of a [`RateLimited`] line.
pub fn held_back_note(held_back: u64) -> String {
    if held_back == 0 {
        String::new()
    } else {
        format!(" ({held_back} more since the last such line)")
    }
}

/// Wall-clock time as Unix milliseconds (the contract's time unit).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_rate_limited_line_is_written_once_per_period_and_counts_the_rest() {
        let mut log = RateLimited::new(Duration::from_secs(3600));
        let mut written = Vec::new();
        for _ in 0..4 {
            log.log(|held| {
                written.push(held);
                String::new()
            });
        }
        assert_eq!(written, [0], "one line, then held back");
        let mut said = None;
        log.flush(|held| {
            said = Some(held);
            String::new()
        });
        assert_eq!(said, Some(3));
        let mut again = None;
        log.flush(|held| {
            again = Some(held);
            String::new()
        });
        assert_eq!(again, None, "nothing held back any more");
        // A zero period writes every line.
        let mut every = RateLimited::new(Duration::ZERO);
        let mut n = 0;
        for _ in 0..3 {
            every.log(|_| {
                n += 1;
                String::new()
            });
        }
        assert_eq!(n, 3);
        assert_eq!(held_back_note(0), "");
        assert_eq!(held_back_note(2), " (2 more since the last such line)");
    }
}
