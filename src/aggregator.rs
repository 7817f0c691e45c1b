//! One aggregator run, start to exit: check the data dir, bind, start the
//! workers, run the network loop, then shut down in the order that loses
//! nothing accepted: stop receiving, hand over the last batches, let the
//! workers drain their channels and flush, sync the filesystem, and only
//! then build the report from the files.

use std::fs::{self, File};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::bounded;

use crate::admission::Admission;
use crate::config::{AggregatorConfig, ConfigError};
use crate::dispatch::{Dispatcher, Msg};
use crate::receiver::{self, Control, Receiver};
use crate::report::{self, ReportError};
use crate::stats::{self, Latency, Snapshot, Stats};
use crate::sys;
use crate::worker::{Worker, WorkerConfig, new_latency_histogram};

/// Why the aggregator could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum AggregatorError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr} (--listen): {error}")]
    Bind { addr: SocketAddr, error: io::Error },
    #[error("data dir {path} (--data-dir) cannot be used: {error}")]
    DataDir { path: PathBuf, error: io::Error },
    #[error("cannot start: {0}")]
    Start(io::Error),
    #[error("cannot sync data dir {path}: {error}")]
    Sync { path: PathBuf, error: io::Error },
    #[error(transparent)]
    Report(#[from] ReportError),
}

/// What a finished run counted.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub local: SocketAddr,
    pub counters: Snapshot,
    pub latency: Latency,
    pub elapsed_s: f64,
}

/// Descriptors kept back from the file cap for sockets, stdio and the like.
const RESERVED_FDS: u64 = 64;

/// Creates the data dir and proves a file can be created in it, so a bad
/// `--data-dir` fails at startup rather than at the first flush.
fn prepare_data_dir(path: &Path) -> Result<(), AggregatorError> {
    let err = |error| AggregatorError::DataDir {
        path: path.to_path_buf(),
        error,
    };
    fs::create_dir_all(path).map_err(err)?;
    let probe = path.join(".vmstats-write-probe");
    File::create(&probe).map_err(err)?;
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
    let usable = limit.saturating_sub(RESERVED_FDS).max(cfg.workers as u64);
    (usable / cfg.workers as u64) as usize
}

/// Runs the aggregator until `ctl.stop` is set or `--duration` passes, then
/// writes the report and returns the counters. Every accepted datagram is
/// on disk (written and synced) when this returns `Ok`.
pub fn run(cfg: &AggregatorConfig, ctl: &Control) -> Result<RunSummary, AggregatorError> {
    cfg.validate()?;
    // The discard baseline keeps the socket setup and receive loop and
    // drops everything after the count: no decode, worker or file.
    let workers = if cfg.discard { 0 } else { cfg.workers };
    if !cfg.discard {
        prepare_data_dir(&cfg.data_dir)?;
    }
    let files_cap = if cfg.discard {
        0
    } else {
        files_per_worker(cfg)
    };
    let bound =
        receiver::bind(cfg.listen, cfg.recv_buffer).map_err(|error| AggregatorError::Bind {
            addr: cfg.listen,
            error,
        })?;
    crate::log_line(&if cfg.discard {
        format!(
            "udp-aggregator: listening on {} (discard: receive and count only, receive buffer {} bytes)",
            bound.local, bound.recv_buffer
        )
    } else {
        format!(
            "udp-aggregator: listening on {} (data dir {}, {} workers, {} open files each, receive buffer {} bytes)",
            bound.local,
            cfg.data_dir.display(),
            cfg.workers,
            files_cap,
            bound.recv_buffer
        )
    });
    if bound.recv_buffer < cfg.recv_buffer {
        eprintln!(
            "warning: the kernel granted a {} byte receive buffer, {} were asked (--recv-buffer); raise net.core.rmem_max or run as root to avoid drops in bursts",
            bound.recv_buffer, cfg.recv_buffer
        );
    }

    let started = Instant::now();
    let stats = Arc::new(Stats::default());
    let (recycle_tx, recycle_rx) = bounded(workers * cfg.queue_batches);
    let mut senders = Vec::with_capacity(workers);
    let mut handles = Vec::with_capacity(workers);
    for id in 0..workers {
        let (tx, rx) = bounded::<Msg>(cfg.queue_batches);
        senders.push(tx);
        let worker = Worker::new(
            WorkerConfig {
                data_dir: cfg.data_dir.clone(),
                flush_bytes: cfg.flush_bytes,
                flush_interval: cfg.flush_interval,
                max_open_files: files_cap,
                max_buffered: cfg.max_buffered / cfg.workers,
            },
            Arc::clone(&stats),
        );
        let recycle = recycle_tx.clone();
        let handle = std::thread::Builder::new()
            .name(format!("vmstats-worker-{id}"))
            .spawn(move || worker.run(rx, recycle))
            .map_err(AggregatorError::Start)?;
        handles.push(handle);
    }
    drop(recycle_tx);

    let dispatcher = Dispatcher::new(senders, recycle_rx);
    let admission = Admission::new(cfg.allow.clone(), cfg.max_vms);
    let receiver = Receiver::new(
        bound.socket,
        dispatcher,
        admission,
        Arc::clone(&stats),
        cfg.discard,
    )
    .map_err(AggregatorError::Start)?;
    let deadline = cfg.duration.map(|d| started + d);
    // Returns after the last batch is handed over; dropping the receiver
    // closes the socket and the channels, which is the workers' signal.
    receiver.run(ctl, deadline, cfg.stats_interval);

    let mut latency = new_latency_histogram();
    for h in handles {
        let worker_latency = h.join().expect("a worker panicked");
        latency.add(&worker_latency).expect("same bounds");
    }
    if !cfg.discard {
        let dir = File::open(&cfg.data_dir).and_then(|d| sys::sync_filesystem(&d));
        dir.map_err(|error| AggregatorError::Sync {
            path: cfg.data_dir.clone(),
            error,
        })?;
    }

    let counters = stats.snapshot();
    let latency = Latency {
        p50_ms: latency.value_at_quantile(0.5),
        p99_ms: latency.value_at_quantile(0.99),
        max_ms: latency.max(),
    };
    let elapsed_s = started.elapsed().as_secs_f64();
    eprint!("{}", stats::summary(&counters, elapsed_s, &latency));
    if !cfg.discard {
        let report = report::build(&cfg.data_dir, &cfg.report.thresholds, crate::unix_ms())?;
        report::write(&report, cfg.report.format, cfg.report.file.as_deref())?;
    }
    Ok(RunSummary {
        local: bound.local,
        counters,
        latency,
        elapsed_s,
    })
}
