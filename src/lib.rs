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
//! 3. [`worker`]: the worker formats rows into the VM's buffer and flushes
//!    it through the [`store`], which owns the per-VM files;
//! 4. [`report`]: the reclamation report is built from those files.
//!
//! [`aggregator`] wires these together for one run, [`stats`] counts what
//! happened ([`metrics`] serves the counts to Prometheus), [`config`] holds the validated settings and [`sim`] is the VM
//! simulator and load generator. [`agent`] is the other end: what runs on
//! a real VM and sends its real figures; [`stop`] ends its sleeps (and the
//! report cache refresh's) at once.

pub mod admission;
pub mod agent;
pub mod aggregator;
pub mod config;
pub mod dispatch;
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

/// Wall-clock time as Unix milliseconds (the contract's time unit).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
