//! One aggregator run, start to exit, in three steps:
//!
//! 1. [`start`]: check the data dir, bind, start the workers and build the
//!    network loop;
//! 2. the network loop runs until a signal or `--duration`;
//! 3. [`finish`]: shut down in the order that loses nothing accepted (the
//!    loop has already stopped receiving and handed over its last batches;
//!    the workers drain their channels and write their files), print the
//!    counters, build the report from the files while the filesystem is
//!    synced (once for every file) and the journals empty, and say so,
//!    with an error, when an accepted row is not on disk.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, DirBuilder, OpenOptions};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::bounded;

use crate::admission::Admission;
use crate::auth::{Keyring, Verifier};
use crate::config::{AggregatorConfig, ConfigError};
use crate::dispatch::{Batch, Dispatcher, ReopenSignal};
use crate::journal;
use crate::metrics::{self, MetricsServer};
use crate::net_loop::{self, Hangup, NetLoop};
use crate::report::{self, ReportError};
use crate::stats::{self, Latency, Snapshot, Stats};
use crate::sys;
use crate::worker::{Worker, WorkerConfig, WorkerOutcome};

/// Why the aggregator could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum AggregatorError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr} (--listen): {error}")]
    Bind { addr: SocketAddr, error: io::Error },
    #[error(
        "another process already listens on {addr} (--listen): {others} socket(s) not ours share the port through SO_REUSEPORT and would take part of the fleet; stop it or pick another port"
    )]
    PortShared { addr: SocketAddr, others: usize },
    #[error("data dir {path} (--data-dir) cannot be used: {error}")]
    DataDir { path: PathBuf, error: io::Error },
    #[error("cannot serve metrics on {addr} (--metrics-listen): {error}")]
    MetricsBind { addr: SocketAddr, error: io::Error },
    #[error("cannot start: {0}")]
    Start(io::Error),
    #[error("cannot sync data dir {path}: {error}")]
    Sync { path: PathBuf, error: io::Error },
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error(transparent)]
    Keys(#[from] crate::auth::KeyFileError),
    #[error(transparent)]
    Journal(#[from] journal::JournalError),
    #[error("not every accepted row is on disk: {0}")]
    Lost(Losses),
}

/// What did not reach the disk, and where.
#[derive(Debug, Default)]
pub struct Losses {
    /// Rows given up, by file.
    pub rows: BTreeMap<PathBuf, u64>,
}

/// Files named in the error line before the rest is summed up.
const LOSSES_NAMED: usize = 5;

impl Losses {
    pub fn total_rows(&self) -> u64 {
        self.rows.values().fold(0, |a, n| a.saturating_add(*n))
    }

    fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

impl fmt::Display for Losses {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let named: Vec<String> = self
            .rows
            .iter()
            .take(LOSSES_NAMED)
            .map(|(path, n)| format!("{}: {n}", path.display()))
            .collect();
        let more = self.rows.len().saturating_sub(LOSSES_NAMED);
        let tail = if more > 0 {
            format!(", and {more} more files")
        } else {
            String::new()
        };
        write!(
            f,
            "{} rows lost ({}{tail})",
            self.total_rows(),
            named.join(", ")
        )
    }
}

/// What a finished run counted.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub local: SocketAddr,
    pub counters: Snapshot,
    pub latency: Latency,
    pub elapsed_s: f64,
}

/// Descriptors kept back from the file cap for sockets, stdio, the report
/// refresh's reads and the like; the metrics endpoint's come on top.
const RESERVED_FDS: u64 = 64;

/// Permissions of a data dir the aggregator creates: VM statistics are
/// nobody else's business.
const DATA_DIR_MODE: u32 = 0o750;

/// Creates the data dir and proves a file can be created in it, so a bad
/// `--data-dir` fails at startup rather than at the first flush. The probe
/// has a random name and is created exclusively without following links,
/// so nothing planted in the dir can make this write anywhere else.
fn prepare_data_dir(path: &Path) -> Result<(), AggregatorError> {
    let err = |error| AggregatorError::DataDir {
        path: path.to_path_buf(),
        error,
    };
    // A file in the way would otherwise read "File exists".
    if path.exists() && !path.is_dir() {
        return Err(err(io::Error::new(
            io::ErrorKind::NotADirectory,
            "it exists and is not a directory",
        )));
    }
    DirBuilder::new()
        .recursive(true)
        .mode(DATA_DIR_MODE)
        .create(path)
        .map_err(err)?;
    let probe = path.join(format!(".vmstats-probe-{:016x}", rand::random::<u64>()));
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(&probe)
        .map_err(err)?;
    fs::remove_file(&probe).map_err(err)?;
    Ok(())
}

/// Open files each worker may hold: the explicit cap, or what the
/// descriptor limit leaves once the reserve is set aside.
fn files_per_worker(cfg: &AggregatorConfig) -> usize {
    if let Some(n) = cfg.max_open_files {
        return n;
    }
    let limit = sys::raise_nofile_limit().unwrap_or(1024);
    let endpoint = if cfg.metrics_listen.is_some() {
        metrics::DESCRIPTORS
    } else {
        0
    };
    let reserved = RESERVED_FDS + endpoint;
    let usable = limit.saturating_sub(reserved).max(cfg.workers as u64);
    (usable / cfg.workers as u64) as usize
}

/// A run between [`start`] and [`finish`].
pub struct Started {
    pub local: SocketAddr,
    /// One per `--receivers`, each on its own socket of the same port.
    pub net_loops: Vec<NetLoop>,
    workers: Vec<JoinHandle<WorkerOutcome>>,
    refresher: Option<report::Refresher>,
    /// The exit report's settings, checked (and its catalog read) at start.
    report: report::Settings,
    pub metrics: Option<MetricsServer>,
    stats: Arc<Stats>,
    started: Instant,
}

/// Runs the aggregator until `ctl.stop` is set or `--duration` passes, then
/// writes the report and returns the counters. Every accepted datagram is
/// on disk (written and synced) when this returns `Ok`; when one is not,
/// the error says how many and where.
pub fn run(cfg: &AggregatorConfig, ctl: &net_loop::Control) -> Result<RunSummary, AggregatorError> {
    let started = start(cfg)?;
    let deadline = cfg.duration.map(|d| started.started + d);
    let Started {
        local,
        net_loops,
        workers,
        refresher,
        report,
        metrics,
        stats,
        started,
    } = started;
    // Each returns after its last batch is handed over; dropping a loop
    // closes its socket and channels, and the last one's closing is the
    // workers' signal.
    let receivers = run_receivers(net_loops, ctl, deadline, cfg);
    let stopping = Instant::now();
    if let Some(r) = refresher {
        r.stop();
    }
    let summary =
        receivers.and_then(|()| finish(cfg, &report, local, workers, &stats, started, stopping));
    if let Some(m) = metrics {
        m.stop();
    }
    summary
}

/// Runs the first receive loop here and the others on threads of their
/// own, until every one has returned.
fn run_receivers(
    net_loops: Vec<NetLoop>,
    ctl: &net_loop::Control,
    deadline: Option<Instant>,
    cfg: &AggregatorConfig,
) -> Result<(), AggregatorError> {
    let mut loops = net_loops.into_iter();
    let first = loops.next().expect("at least one receiver");
    let mut others = Vec::new();
    for (i, l) in loops.enumerate() {
        let ctl_i = ctl.clone();
        let interval = cfg.stats_interval;
        let spawned = std::thread::Builder::new()
            .name(format!("vmstats-recv-{}", i + 1))
            .spawn(move || l.run(&ctl_i, deadline, interval));
        match spawned {
            Ok(handle) => others.push(handle),
            Err(e) => {
                // Stop the ones running, so that nothing is left behind.
                ctl.stop.store(true, std::sync::atomic::Ordering::SeqCst);
                others
                    .into_iter()
                    .for_each(|h| h.join().expect("a receiver panicked"));
                return Err(AggregatorError::Start(e));
            }
        }
    }
    first.run(ctl, deadline, cfg.stats_interval);
    for h in others {
        h.join().expect("a receiver panicked");
    }
    Ok(())
}

/// Checks the data dir, binds, and starts the workers and the network loop
/// (the discard baseline keeps only the socket and the loop).
pub fn start(cfg: &AggregatorConfig) -> Result<Started, AggregatorError> {
    cfg.validate()?;
    let report = report::Settings::new(&cfg.report)?;
    let keyring = match &cfg.auth_keys {
        Some(path) => Some(Arc::new(Keyring::load(path)?)),
        None => None,
    };
    let files_cap = if cfg.discard {
        0
    } else {
        prepare_data_dir(&cfg.data_dir)?;
        files_per_worker(cfg)
    };
    let (sockets, local, recv_buffer) = bind_sockets(cfg)?;
    crate::log_line(&listening_line(cfg, local, files_cap, recv_buffer));
    if !cfg.discard {
        // Before anything is read off the socket (the kernel queues what
        // comes meanwhile): the journal's rows are older.
        let replayed = journal::replay(
            &cfg.data_dir,
            cfg.file_mode,
            files_cap * cfg.workers,
            !cfg.no_sync,
        )?;
        if let Some(line) = replayed.line() {
            crate::log_line(&line);
        }
    }
    if let Some(ring) = &keyring {
        let ids: Vec<u32> = ring.keys().keys().copied().collect();
        let v1 = if cfg.report.require_auth {
            "refused (--require-auth)"
        } else {
            "still accepted"
        };
        crate::log_line(&format!(
            "udp-aggregator: version 2 verified with key ids {ids:?}; version 1 {v1}"
        ));
    }
    if recv_buffer < cfg.recv_buffer {
        crate::log_line(&format!(
            "warning: the kernel granted a {recv_buffer} byte receive buffer, {} were asked (--recv-buffer); raise net.core.rmem_max or run as root to avoid drops in bursts",
            cfg.recv_buffer
        ));
    }
    let started = Instant::now();
    let workers = if cfg.discard { 0 } else { cfg.workers };
    let stats = Arc::new(Stats::new(workers, cfg.receivers));
    // The endpoint first: a port already taken stops the start before
    // anything runs.
    let published = report::Published::default();
    // The report's pages are kept only for a listener to serve them.
    let served = cfg
        .metrics_listen
        .map(|_| report::served::Served::default());
    let metrics = start_metrics(cfg, &stats, &published, served.clone())?;
    let reopen = ReopenSignal::default();
    let (recycle_tx, recycle_rx) = bounded::<Batch>(workers * cfg.queue_batches);
    let verifier = || {
        let skew = cfg.auth_max_skew.as_millis().try_into().unwrap_or(u64::MAX);
        Verifier::new(keyring.clone(), cfg.report.require_auth, skew)
    };
    let (senders, handles) = start_workers(
        cfg,
        workers,
        files_cap,
        &stats,
        &reopen,
        &recycle_tx,
        verifier,
    )?;
    let admission = Admission::new(cfg.allow.clone(), cfg.max_vms);
    let mut net_loops = Vec::with_capacity(sockets.len());
    for (i, socket) in sockets.into_iter().enumerate() {
        let net_loop = NetLoop::new(
            socket,
            Dispatcher::new(senders.clone(), recycle_rx.clone()),
            Hangup {
                reopen: reopen.clone(),
                keyring: keyring.clone(),
            },
            admission.share(),
            Arc::clone(&stats),
            cfg.discard,
            i,
        )
        .map_err(AggregatorError::Start)?;
        net_loops.push(net_loop);
    }
    drop(senders);
    let refresher = match cfg.cache_refresh {
        every if cfg.discard || every.is_zero() => None,
        every => Some(
            report::Refresher::start(
                cfg.data_dir.clone(),
                report.clone(),
                every,
                published,
                served,
            )
            .map_err(AggregatorError::Start)?,
        ),
    };
    Ok(Started {
        local,
        net_loops,
        workers: handles,
        refresher,
        report,
        metrics,
        stats,
        started,
    })
}

/// One socket per receive loop, all on the port the first one got (port
/// 0 picks one), refused when another process shares that port; with the
/// address bound and the receive buffer granted.
fn bind_sockets(
    cfg: &AggregatorConfig,
) -> Result<(Vec<mio::net::UdpSocket>, SocketAddr, usize), AggregatorError> {
    let shared = cfg.receivers > 1;
    let bound = net_loop::bind(cfg.listen, cfg.recv_buffer, shared).map_err(|error| {
        AggregatorError::Bind {
            addr: cfg.listen,
            error,
        }
    })?;
    let (local, recv_buffer) = (bound.local, bound.recv_buffer);
    let mut sockets = vec![bound.socket];
    for _ in 1..cfg.receivers {
        let next = net_loop::bind(local, cfg.recv_buffer, shared)
            .map_err(|error| AggregatorError::Bind { addr: local, error })?;
        sockets.push(next.socket);
    }
    // SO_REUSEPORT lets any process of the same user join the group and
    // take a share of the VMs unseen; a socket on our address that is not
    // ours means a second collector.
    if shared {
        let ours: Vec<&mio::net::UdpSocket> = sockets.iter().collect();
        let others = sys::foreign_port_sharers(&ours).map_err(AggregatorError::Start)?;
        if others > 0 {
            return Err(AggregatorError::PortShared {
                addr: local,
                others,
            });
        }
    }
    Ok((sockets, local, recv_buffer))
}

/// The `/metrics` endpoint, when `--metrics-listen` asks for one.
fn start_metrics(
    cfg: &AggregatorConfig,
    stats: &Arc<Stats>,
    published: &report::Published,
    served: Option<report::served::Served>,
) -> Result<Option<MetricsServer>, AggregatorError> {
    let Some(addr) = cfg.metrics_listen else {
        return Ok(None);
    };
    let source = metrics::Source {
        stats: Arc::clone(stats),
        published: published.clone(),
    };
    let server = MetricsServer::start(addr, source, served.unwrap_or_default())
        .map_err(|error| AggregatorError::MetricsBind { addr, error })?;
    crate::log_line(&format!(
        "udp-aggregator: metrics on http://{}/metrics, the report on http://{}/",
        server.local, server.local
    ));
    Ok(Some(server))
}

/// The worker threads, each with its queue: the queues' senders (for the
/// dispatchers) and the threads.
type WorkerThreads = (
    Vec<crossbeam_channel::Sender<Batch>>,
    Vec<JoinHandle<WorkerOutcome>>,
);

fn start_workers(
    cfg: &AggregatorConfig,
    workers: usize,
    files_cap: usize,
    stats: &Arc<Stats>,
    reopen: &ReopenSignal,
    recycle: &crossbeam_channel::Sender<Batch>,
    verifier: impl Fn() -> Verifier,
) -> Result<WorkerThreads, AggregatorError> {
    let mut senders = Vec::with_capacity(workers);
    let mut handles = Vec::with_capacity(workers);
    for id in 0..workers {
        let (tx, rx) = bounded::<Batch>(cfg.queue_batches);
        senders.push(tx);
        let worker = Worker::new(
            WorkerConfig {
                id,
                data_dir: cfg.data_dir.clone(),
                file_mode: cfg.file_mode,
                flush_bytes: cfg.flush_bytes,
                flush_interval: cfg.flush_interval,
                file_interval: cfg.file_interval,
                max_flush_delay: cfg.max_flush_delay(),
                journal: journal::Settings {
                    dir: journal::dir_of(&cfg.data_dir),
                    file_mode: cfg.file_mode,
                    sync: !cfg.no_sync,
                    segment_bytes: journal::SEGMENT_BYTES,
                },
                max_open_files: files_cap,
                max_buffered: cfg.max_buffered / cfg.workers,
            },
            Arc::clone(stats),
            reopen.clone(),
        )
        .map_err(AggregatorError::Start)?
        .verifying(verifier());
        let recycle = recycle.clone();
        let handle = std::thread::Builder::new()
            .name(format!("vmstats-worker-{id}"))
            .spawn(move || worker.run(rx, recycle))
            .map_err(AggregatorError::Start)?;
        handles.push(handle);
    }
    Ok((senders, handles))
}

/// The first stderr line: scripts and tests read the bound address off it.
fn listening_line(
    cfg: &AggregatorConfig,
    local: SocketAddr,
    files: usize,
    rcvbuf: usize,
) -> String {
    if cfg.discard {
        format!(
            "udp-aggregator: listening on {local} (discard: receive and count only, receive buffer {rcvbuf} bytes)"
        )
    } else {
        format!(
            "udp-aggregator: listening on {local} (data dir {}, {} workers, {files} open files each, {} receivers, receive buffer {rcvbuf} bytes each)",
            cfg.data_dir.display(),
            cfg.workers,
            cfg.receivers,
        )
    }
}

/// After the network loop has returned: waits for the workers to write
/// their files, prints the counters, writes the report while the files
/// are synced, and reports any loss.
fn finish(
    cfg: &AggregatorConfig,
    settings: &report::Settings,
    local: SocketAddr,
    workers: Vec<JoinHandle<WorkerOutcome>>,
    stats: &Stats,
    started: Instant,
    stopping: Instant,
) -> Result<RunSummary, AggregatorError> {
    let mut losses = Losses::default();
    let mut journals = Vec::with_capacity(workers.len());
    for h in workers {
        let outcome = h.join().expect("a worker panicked");
        for (ip, n) in outcome.lost {
            losses.rows.insert(vm_path(&cfg.data_dir, ip), n);
        }
        journals.push(outcome.journal);
    }
    let counters = stats.snapshot();
    let latency = stats.latency.figures();
    let file_latency = stats.file_latency.figures();
    let elapsed_s = started.elapsed().as_secs_f64();
    eprint!(
        "{}",
        stats::summary(&counters, elapsed_s, &latency, &file_latency)
    );
    if cfg.discard {
        journals.into_iter().for_each(journal::Emptying::wait);
    } else {
        report_while_syncing(cfg, settings, journals, stopping)?;
    }
    if !losses.is_empty() {
        return Err(AggregatorError::Lost(losses));
    }
    Ok(RunSummary {
        local,
        counters,
        latency,
        elapsed_s,
    })
}

/// The exit report, built while the filesystem is synced and the journals
/// empty (the report reads the page cache, the sync waits on the disk: at
/// a million VMs 27 s and 6 to 12 s, one after the other before), then a
/// line saying where the stop went, from the end of receiving (what a
/// service manager's stop timeout must cover). A failed sync is the error
/// over a failed report: it is what decides whether rows are safe.
fn report_while_syncing(
    cfg: &AggregatorConfig,
    settings: &report::Settings,
    journals: Vec<journal::Emptying>,
    stopping: Instant,
) -> Result<(), AggregatorError> {
    let written_ms = stopping.elapsed().as_millis();
    std::thread::scope(|scope| {
        let synced = scope.spawn(|| {
            let synced = sys::sync_filesystem_at(&cfg.data_dir);
            (synced, stopping.elapsed().as_millis())
        });
        let dirs = [cfg.data_dir.clone()];
        let reported = report::build(&dirs, settings, crate::unix_ms())
            .and_then(|r| report::write(&r, cfg.report.format, cfg.report.file.as_deref()));
        let reported_ms = stopping.elapsed().as_millis();
        journals.into_iter().for_each(journal::Emptying::wait);
        let (synced, synced_ms) = synced.join().expect("the sync thread panicked");
        crate::log_line(&format!(
            "stop: files_written_ms={written_ms} report_ms={reported_ms} synced_ms={synced_ms} journal_empty_ms={}",
            stopping.elapsed().as_millis()
        ));
        synced.map_err(|error| AggregatorError::Sync {
            path: cfg.data_dir.clone(),
            error,
        })?;
        Ok(reported?)
    })
}

fn vm_path(dir: &Path, ip: IpAddr) -> PathBuf {
    dir.join(crate::wire::file_name(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn losses_name_files_and_sum_up_the_rest() {
        let mut l = Losses::default();
        for n in 1..=7u8 {
            l.rows
                .insert(PathBuf::from(format!("d/127.0.0.{n}.csv")), 10);
        }
        l.rows.insert(PathBuf::from("d/x.csv"), u64::MAX);
        assert_eq!(l.total_rows(), u64::MAX);
        let text = l.to_string();
        assert!(
            text.starts_with(&format!("{} rows lost (d/127.0.0.1.csv: 10, ", u64::MAX)),
            "{text}"
        );
        assert!(text.ends_with(", and 3 more files)"), "{text}");
    }

    #[test]
    fn the_probe_never_follows_a_planted_link() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, "keep me").unwrap();
        // Whatever names were planted, the probe's is random and exclusive.
        for n in 0..4 {
            std::os::unix::fs::symlink(&victim, dir.path().join(format!(".vmstats-probe-{n}")))
                .unwrap();
        }
        prepare_data_dir(dir.path()).unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep me");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 5);
    }

    #[test]
    fn a_new_data_dir_is_0750() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("a/b");
        prepare_data_dir(&data).unwrap();
        let mode = fs::metadata(&data).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & !0o022, 0o750 & !0o022, "{mode:o}");
    }
}
