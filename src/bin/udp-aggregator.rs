//! `udp-aggregator`: parse flags into the library's config, run it, map the
//! outcome to an exit code. Nothing else lives here: every flag, default and
//! check is declared on the config in `vmstats::config`.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use vmstats::config::{AggregatorConfig, ExportConfig, KeysCommand, OfflineReportConfig};
use vmstats::net_loop::Control;

/// Collects VM statistics datagrams over UDP into one CSV file per VM and
/// reports which VMs could be reclaimed.
#[derive(Parser)]
#[command(version = vmstats::VERSION, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: AggregatorConfig,
}

#[derive(Subcommand)]
enum Command {
    /// Build the reclamation report from the files of a data dir alone.
    Report(OfflineReportConfig),
    /// Write the data dirs as Parquet datasets (rows, vm_days) partitioned
    /// by UTC day, for DuckDB, ClickHouse, Trino or Spark; only the days
    /// that changed since the last export.
    Export(ExportConfig),
    /// Make fleet keys and derive VM keys (authenticated datagrams).
    #[command(subcommand)]
    Keys(KeysCommand),
}

fn keys(cmd: KeysCommand) -> anyhow::Result<()> {
    let line = match cmd {
        KeysCommand::New { key_id } => vmstats::auth::new_key_line(key_id)?,
        KeysCommand::Derive {
            auth_keys,
            key_id,
            ip,
        } => vmstats::auth::vm_key_line(&auth_keys, key_id, ip)?,
    };
    println!("{line}");
    Ok(())
}

fn export(cfg: &ExportConfig) -> anyhow::Result<()> {
    let done = vmstats::export::export(cfg)?;
    println!("{}", vmstats::export::summary_line(&done));
    Ok(())
}

fn run(cfg: AggregatorConfig) -> anyhow::Result<()> {
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Report(cfg)) => vmstats::report::offline(&cfg).map_err(anyhow::Error::from),
        Some(Command::Export(cfg)) => export(&cfg),
        Some(Command::Keys(cmd)) => keys(cmd),
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
