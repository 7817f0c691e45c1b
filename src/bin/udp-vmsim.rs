//! `udp-vmsim`: parse flags into a validated config, run the simulator,
//! print its summary, map the outcome to an exit code.

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use vmstats::config::{Rate, SimConfig, parse_duration, parse_rate};

/// Simulates VMs that report their statistics to udp-aggregator, each from
/// its own source address; with --rate/--total, a load generator.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// Number of VMs.
    #[arg(long, default_value_t = 5)]
    count: u32,
    /// Each VM reports once per interval (500ms, 1s, 2m...).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    interval: Duration,
    /// The aggregator's address.
    #[arg(long, default_value = "127.0.0.1:9999")]
    server: SocketAddr,
    /// Stop after this long (default: until Ctrl-C).
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Source address of VM 0; VM i sends from the i-th address after it.
    #[arg(long, default_value = "127.1.0.1")]
    src_base: IpAddr,
    /// Seed of the VMs' profiles and values.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Datagrams/s in total instead of once per interval, or `max`.
    #[arg(long, value_parser = parse_rate)]
    rate: Option<Rate>,
    /// Stop after this many datagrams (final ones not counted).
    #[arg(long)]
    total: Option<u64>,
    /// Do not send the final-flag datagram of each VM at the end.
    #[arg(long)]
    no_final: bool,
    /// Send K consecutive datagrams of one VM as one UDP GSO send
    /// (UDP_SEGMENT), for a sender that is not the bottleneck.
    #[arg(long, value_name = "K", default_value_t = 1)]
    gso: usize,
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let cfg = SimConfig {
        count: cli.count,
        interval: cli.interval,
        server: cli.server,
        duration: cli.duration,
        src_base: cli.src_base,
        seed: cli.seed,
        rate: cli.rate.unwrap_or(Rate::Interval),
        total: cli.total,
        no_final: cli.no_final,
        gso: cli.gso,
    };
    cfg.validate()?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("cannot install signal handlers")?;
    }
    let report = vmstats::sim::run(&cfg, &stop)?;
    println!("{}", vmstats::sim::summary_line(&report));
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("udp-vmsim: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
