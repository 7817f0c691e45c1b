//! `udp-vmagent`: parse flags into the library's config, run the agent until
//! SIGTERM/SIGINT, print its summary, map the outcome to an exit code.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use vmstats::config::AgentConfig;
use vmstats::stop::Stop;

/// Runs on a VM (or container, or host) and sends its real CPU, memory,
/// network and disk figures to udp-aggregator once per interval.
#[derive(Parser)]
#[command(version = vmstats::VERSION)]
struct Cli {
    #[command(flatten)]
    agent: AgentConfig,
}

fn run(cfg: AgentConfig) -> anyhow::Result<()> {
    // A signal wakes the agent's sleep, so it sends its final datagram at
    // once rather than at the next interval.
    let stop = Stop::for_current_thread();
    let on_signal = stop.clone();
    let mut signals = Signals::new([SIGINT, SIGTERM]).context("cannot install signal handlers")?;
    std::thread::Builder::new()
        .name("signals".into())
        .stack_size(64 << 10)
        .spawn(move || {
            for _ in signals.forever() {
                on_signal.request();
            }
        })
        .context("cannot start the signal thread")?;
    let summary = vmstats::agent::run(&cfg, &stop)?;
    eprintln!("{}", vmstats::agent::summary_line(&summary));
    Ok(summary.outcome()?)
}

fn main() -> ExitCode {
    match run(Cli::parse().agent) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("udp-vmagent: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
