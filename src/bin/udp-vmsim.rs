//! `udp-vmsim`: parse flags into the library's config, run the simulator,
//! print its summary, map the outcome to an exit code.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use clap::Parser;
use vmstats::config::SimConfig;

/// Simulates VMs that report their statistics to udp-aggregator, each from
/// its own source address; with --rate/--total, a load generator.
#[derive(Parser)]
#[command(version = vmstats::VERSION)]
struct Cli {
    #[command(flatten)]
    sim: SimConfig,
}

fn run(cfg: SimConfig) -> anyhow::Result<()> {
    if let Some(dir) = &cfg.write_dir {
        let summary = vmstats::sim::history::write(&cfg, dir, vmstats::unix_ms())?;
        println!("{}", vmstats::sim::history::summary_line(&summary));
        return Ok(());
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("cannot install signal handlers")?;
    }
    let summary = vmstats::sim::run(&cfg, &stop)?;
    println!("{}", vmstats::sim::summary_line(&summary));
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse().sim) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("udp-vmsim: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
