//! `udp-aggregator`: parse flags into a validated config, run the library,
//! map the outcome to an exit code. Nothing else lives here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use vmstats::config::{
    AggregatorConfig, Cidr, ReportConfig, ReportFormat, Thresholds, default_workers,
    parse_duration, parse_size,
};
use vmstats::receiver::Control;

/// Collects VM statistics datagrams over UDP into one CSV file per VM and
/// reports which VMs could be reclaimed.
#[derive(Parser)]
#[command(version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Build the reclamation report from the files of a data dir alone.
    Report {
        #[arg(long, default_value = "vmstats-data")]
        data_dir: PathBuf,
        /// Judge SILENT against this time (Unix ms) instead of now.
        #[arg(long)]
        as_of: Option<u64>,
        #[command(flatten)]
        report: ReportArgs,
    },
}

#[derive(Args)]
struct RunArgs {
    /// Address to listen on; `[::]:PORT` takes IPv4 and IPv6; port 0 picks one.
    #[arg(long, default_value = "0.0.0.0:9999")]
    listen: SocketAddr,
    /// Directory of the per-VM files (created if missing).
    #[arg(long, default_value = "vmstats-data")]
    data_dir: PathBuf,
    /// Worker threads (default: cores - 1, at least 1).
    #[arg(long, default_value_t = default_workers())]
    workers: usize,
    /// Flush a VM's buffer at this size.
    #[arg(long, default_value = "32k", value_parser = parse_size)]
    flush_bytes: usize,
    /// Flush a VM's buffer when its oldest row is this old.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    flush_interval: Duration,
    /// Period of the status line on stderr.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    stats_interval: Duration,
    /// Stop after this long (default: run until SIGINT or SIGTERM).
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Socket receive buffer to ask the kernel for.
    #[arg(long, default_value = "256m", value_parser = parse_size)]
    recv_buffer: usize,
    /// Batches (of up to 256 datagrams) each worker's queue holds.
    #[arg(long, default_value_t = 1024)]
    queue_batches: usize,
    /// Unwritten rows all workers together may hold in memory.
    #[arg(long, default_value = "256m", value_parser = parse_size)]
    max_buffered: usize,
    /// Open files per worker (default: from the open-file limit).
    #[arg(long)]
    max_open_files: Option<usize>,
    /// Accept only sources in this CIDR block (repeatable; default: all).
    #[arg(long = "allow", value_name = "CIDR")]
    allow: Vec<Cidr>,
    /// Distinct source addresses that may get a file; datagrams from new
    /// sources beyond it are counted as vm_limit.
    #[arg(long, default_value_t = 1_000_000)]
    max_vms: usize,
    /// Receive and count only, writing nothing: the bare receive loop the
    /// load test measures the aggregator against.
    #[arg(long)]
    discard: bool,
    /// Write the report here instead of stdout.
    #[arg(long)]
    report_file: Option<PathBuf>,
    #[command(flatten)]
    report: ReportArgs,
}

/// Report format and thresholds, shared by the run and `report`.
#[derive(Args)]
struct ReportArgs {
    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    report_format: ReportFormat,
    /// INSUFFICIENT_DATA below this many samples.
    #[arg(long, default_value_t = 5)]
    min_samples: u64,
    /// SILENT after this many intervals without data (and no final flag).
    #[arg(long, default_value_t = 3)]
    silent_intervals: u32,
    /// IDLE: p95 CPU below this %.
    #[arg(long, default_value_t = 10.0)]
    idle_cpu_pct: f64,
    /// IDLE: p95 network rx+tx below this many bytes/s.
    #[arg(long, default_value_t = 3000.0)]
    idle_net_bps: f64,
    /// IDLE: p95 disk read+write below this many bytes/s.
    #[arg(long, default_value_t = 100_000.0)]
    idle_disk_bps: f64,
    /// OVERSIZED: p99 CPU at or below this %.
    #[arg(long, default_value_t = 40.0)]
    oversized_cpu_pct: f64,
    /// OVERSIZED: max memory at or below this %.
    #[arg(long, default_value_t = 40.0)]
    oversized_mem_pct: f64,
    /// UNDERSIZED: p95 CPU above this %.
    #[arg(long, default_value_t = 80.0)]
    undersized_cpu_pct: f64,
    /// UNDERSIZED: max memory above this %.
    #[arg(long, default_value_t = 90.0)]
    undersized_mem_pct: f64,
}

impl ReportArgs {
    fn config(&self, file: Option<PathBuf>) -> ReportConfig {
        ReportConfig {
            thresholds: Thresholds {
                min_samples: self.min_samples,
                silent_intervals: self.silent_intervals,
                idle_cpu_pct: self.idle_cpu_pct,
                idle_net_bps: self.idle_net_bps,
                idle_disk_bps: self.idle_disk_bps,
                oversized_cpu_pct: self.oversized_cpu_pct,
                oversized_mem_pct: self.oversized_mem_pct,
                undersized_cpu_pct: self.undersized_cpu_pct,
                undersized_mem_pct: self.undersized_mem_pct,
            },
            format: self.report_format,
            file,
        }
    }
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let cfg = AggregatorConfig {
        listen: args.listen,
        data_dir: args.data_dir,
        workers: args.workers,
        flush_bytes: args.flush_bytes,
        flush_interval: args.flush_interval,
        stats_interval: args.stats_interval,
        duration: args.duration,
        recv_buffer: args.recv_buffer,
        queue_batches: args.queue_batches,
        max_buffered: args.max_buffered,
        max_open_files: args.max_open_files,
        allow: args.allow,
        max_vms: args.max_vms,
        discard: args.discard,
        report: args.report.config(args.report_file),
    };
    cfg.validate()?;
    let ctl = Control::default();
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&ctl.stop))
            .context("cannot install signal handlers")?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&ctl.reopen))
        .context("cannot install signal handlers")?;
    vmstats::aggregator::run(&cfg, &ctl)?;
    Ok(())
}

fn report(data_dir: PathBuf, as_of: Option<u64>, args: ReportArgs) -> anyhow::Result<()> {
    let cfg = args.config(None);
    cfg.thresholds.validate()?;
    let as_of = as_of.unwrap_or_else(vmstats::unix_ms);
    let report = vmstats::report::build(&data_dir, &cfg.thresholds, as_of)?;
    vmstats::report::write(&report, cfg.format, None)?;
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Report {
            data_dir,
            as_of,
            report: args,
        }) => report(data_dir, as_of, args),
        None => run(cli.run),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("udp-aggregator: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
