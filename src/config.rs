//! Validated settings for the aggregator, the report and the simulator.
//!
//! The binaries parse flags into these structs and call `validate`; the core
//! only ever sees a checked config, so a bad value fails at startup with a
//! message naming its flag instead of misbehaving at datagram one million.
//! The value parsers here (durations, sizes, CIDRs) are the ones the binaries
//! hand to clap, so the CLI and the library agree on every spelling.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// A setting that cannot work, named by its command-line flag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value for {flag}: {why}")]
pub struct ConfigError {
    pub flag: &'static str,
    pub why: String,
}

fn invalid(flag: &'static str, why: impl Into<String>) -> ConfigError {
    ConfigError {
        flag,
        why: why.into(),
    }
}

/// Parses `500ms`, `1s`, `2m`, `1h` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (num, unit) = text.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (e.g. 500ms, 1s, 2m, 1h)"))?;
    let secs = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => {
            return Err(format!(
                "`{text}` has unknown unit `{unit}` (use ms, s, m or h)"
            ));
        }
    };
    if !secs.is_finite() || secs > 1e9 {
        return Err(format!("`{text}` is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses a byte size: `65536`, `64k`/`64KiB`, `4m`/`4MiB`, `1g`/`1GiB`.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: usize = num
        .parse()
        .map_err(|_| format!("`{text}` is not a size (e.g. 65536, 64k, 4m)"))?;
    let mult: usize = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        _ => {
            return Err(format!(
                "`{text}` has unknown unit `{unit}` (use k, m or g)"
            ));
        }
    };
    value
        .checked_mul(mult)
        .ok_or_else(|| format!("`{text}` is out of range"))
}

/// An address block for `--allow`: `10.0.0.0/8`, `fd00::/8`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` (already canonical: IPv4-mapped sources as IPv4) is inside.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{text}` is not an address or CIDR block"))?;
        let addr = crate::wire::canonical_ip(addr);
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{text}` has a prefix length outside 0..={max}"))?,
        };
        Ok(Cidr { addr, prefix })
    }
}

/// Output format of the reclamation report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ReportFormat {
    #[default]
    Table,
    Json,
    Csv,
}

/// Thresholds of the reclamation categories (see `report`).
#[derive(Debug, Clone, PartialEq)]
pub struct Thresholds {
    /// INSUFFICIENT_DATA below this many samples.
    pub min_samples: u64,
    /// SILENT after this many of the VM's intervals without a datagram.
    pub silent_intervals: u32,
    /// IDLE: p95 CPU below this percentage...
    pub idle_cpu_pct: f64,
    /// ...and p95 network rx+tx below this many bytes/s...
    pub idle_net_bps: f64,
    /// ...and p95 disk read+write below this many bytes/s.
    pub idle_disk_bps: f64,
    /// OVERSIZED: p99 CPU at or below this percentage...
    pub oversized_cpu_pct: f64,
    /// ...and max memory at or below this percentage.
    pub oversized_mem_pct: f64,
    /// UNDERSIZED: p95 CPU above this percentage...
    pub undersized_cpu_pct: f64,
    /// ...or max memory above this percentage.
    pub undersized_mem_pct: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            min_samples: 5,
            silent_intervals: 3,
            idle_cpu_pct: 10.0,
            idle_net_bps: 3000.0,
            idle_disk_bps: 100_000.0,
            oversized_cpu_pct: 40.0,
            oversized_mem_pct: 40.0,
            undersized_cpu_pct: 80.0,
            undersized_mem_pct: 90.0,
        }
    }
}

impl Thresholds {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let pcts = [
            ("--idle-cpu-pct", self.idle_cpu_pct),
            ("--oversized-cpu-pct", self.oversized_cpu_pct),
            ("--oversized-mem-pct", self.oversized_mem_pct),
            ("--undersized-cpu-pct", self.undersized_cpu_pct),
            ("--undersized-mem-pct", self.undersized_mem_pct),
        ];
        for (flag, v) in pcts {
            if !(0.0..=100.0).contains(&v) {
                return Err(invalid(flag, format!("{v} is not a percentage in 0..=100")));
            }
        }
        for (flag, v) in [
            ("--idle-net-bps", self.idle_net_bps),
            ("--idle-disk-bps", self.idle_disk_bps),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(invalid(flag, format!("{v} is not a rate >= 0")));
            }
        }
        if self.silent_intervals == 0 {
            return Err(invalid("--silent-intervals", "must be at least 1"));
        }
        Ok(())
    }
}

/// How and where the report is written.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReportConfig {
    pub thresholds: Thresholds,
    pub format: ReportFormat,
    /// Write the report here instead of stdout.
    pub file: Option<PathBuf>,
}

/// Everything `udp-aggregator` needs to run.
#[derive(Debug, Clone)]
pub struct AggregatorConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub workers: usize,
    /// Flush a VM's buffer once it holds this many bytes.
    pub flush_bytes: usize,
    /// Flush a VM's buffer once its oldest row is this old.
    pub flush_interval: Duration,
    pub stats_interval: Duration,
    /// Stop by itself after this long (else on SIGINT/SIGTERM only).
    pub duration: Option<Duration>,
    /// SO_RCVBUF to ask for.
    pub recv_buffer: usize,
    /// Batches each worker's channel holds before the receive loop drops.
    pub queue_batches: usize,
    /// Bytes of unwritten rows all workers together may hold.
    pub max_buffered: usize,
    /// Open files per worker; `None` derives it from RLIMIT_NOFILE.
    pub max_open_files: Option<usize>,
    /// Sources allowed to report; empty allows all.
    pub allow: Vec<Cidr>,
    /// Distinct VMs (source addresses) that may get a file.
    pub max_vms: usize,
    /// Receive and count only (the benchmarks' bare baseline).
    pub discard: bool,
    pub report: ReportConfig,
}

impl Default for AggregatorConfig {
    fn default() -> Self {
        AggregatorConfig {
            listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 9999)),
            data_dir: PathBuf::from("vmstats-data"),
            workers: default_workers(),
            flush_bytes: 32 << 10,
            flush_interval: Duration::from_secs(1),
            stats_interval: Duration::from_secs(10),
            duration: None,
            recv_buffer: 256 << 20,
            queue_batches: 1024,
            max_buffered: 256 << 20,
            max_open_files: None,
            allow: Vec::new(),
            max_vms: 1_000_000,
            discard: false,
            report: ReportConfig::default(),
        }
    }
}

/// One worker per core beside the receive loop's, at least one.
pub fn default_workers() -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    cores.saturating_sub(1).max(1)
}

impl AggregatorConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=256).contains(&self.workers) {
            return Err(invalid(
                "--workers",
                format!("{} is not in 1..=256", self.workers),
            ));
        }
        if !(crate::wire::MAX_ROW_LEN..=64 << 20).contains(&self.flush_bytes) {
            return Err(invalid(
                "--flush-bytes",
                format!(
                    "{} is not in {}..=64MiB",
                    self.flush_bytes,
                    crate::wire::MAX_ROW_LEN
                ),
            ));
        }
        if self.flush_interval < Duration::from_millis(1)
            || self.flush_interval > Duration::from_secs(3600)
        {
            return Err(invalid("--flush-interval", "must be between 1ms and 1h"));
        }
        if self.stats_interval < Duration::from_millis(100) {
            return Err(invalid("--stats-interval", "must be at least 100ms"));
        }
        if self.duration == Some(Duration::ZERO) {
            return Err(invalid("--duration", "must be more than 0"));
        }
        if self.queue_batches == 0 {
            return Err(invalid("--queue-batches", "must be at least 1"));
        }
        if self.max_buffered < self.workers * self.flush_bytes {
            return Err(invalid(
                "--max-buffered",
                format!(
                    "must be at least --workers x --flush-bytes ({})",
                    self.workers * self.flush_bytes
                ),
            ));
        }
        if self.max_vms == 0 {
            return Err(invalid("--max-vms", "must be at least 1"));
        }
        if self.max_open_files == Some(0) {
            return Err(invalid("--max-open-files", "must be at least 1"));
        }
        self.report.thresholds.validate()
    }
}

/// How `udp-vmsim` paces its sends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    /// Each VM once per `--interval` (the VMs' phases spread evenly).
    Interval,
    /// This many datagrams per second in total, round-robin over the VMs.
    PerSecond(f64),
    /// As fast as the socket takes them.
    Max,
}

/// Parses `--rate`: a positive number of datagrams/s, or `max`.
pub fn parse_rate(text: &str) -> Result<Rate, String> {
    if text.eq_ignore_ascii_case("max") {
        return Ok(Rate::Max);
    }
    match text.parse::<f64>() {
        Ok(r) if r > 0.0 && r.is_finite() => Ok(Rate::PerSecond(r)),
        _ => Err(format!("`{text}` is not a positive rate or `max`")),
    }
}

/// Everything `udp-vmsim` needs to run.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub count: u32,
    pub interval: Duration,
    pub server: SocketAddr,
    pub duration: Option<Duration>,
    pub src_base: IpAddr,
    pub seed: u64,
    pub rate: Rate,
    /// Stop after this many datagrams (finals not included).
    pub total: Option<u64>,
    /// Send no final-flag datagram at the end.
    pub no_final: bool,
    /// Consecutive datagrams of one VM per send, as one UDP GSO buffer.
    pub gso: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            count: 5,
            interval: Duration::from_secs(60),
            server: SocketAddr::from((Ipv4Addr::LOCALHOST, 9999)),
            duration: None,
            src_base: IpAddr::V4(Ipv4Addr::new(127, 1, 0, 1)),
            seed: 1,
            rate: Rate::Interval,
            total: None,
            no_final: false,
            gso: 1,
        }
    }
}

impl SimConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=1_000_000).contains(&self.count) {
            return Err(invalid(
                "--count",
                format!("{} is not in 1..=1000000", self.count),
            ));
        }
        if self.interval < Duration::from_millis(1) || self.interval > Duration::from_secs(3600) {
            return Err(invalid("--interval", "must be between 1ms and 1h"));
        }
        let IpAddr::V4(base) = self.src_base else {
            return Err(invalid("--src-base", "must be an IPv4 address"));
        };
        if !self.server.is_ipv4() {
            return Err(invalid("--server", "must be an IPv4 address:port"));
        }
        let last = u64::from(u32::from(base)) + u64::from(self.count) - 1;
        if last > u64::from(u32::MAX) {
            return Err(invalid("--src-base", "too high for --count addresses"));
        }
        if self.duration == Some(Duration::ZERO) {
            return Err(invalid("--duration", "must be more than 0"));
        }
        if !(1..=64).contains(&self.gso) {
            return Err(invalid("--gso", format!("{} is not in 1..=64", self.gso)));
        }
        if self.total == Some(0) {
            return Err(invalid("--total", "must be at least 1"));
        }
        Ok(())
    }

    /// The `interval_s` field this run sends: the interval in whole seconds,
    /// at least 1 (the protocol has no sub-second interval).
    pub fn interval_s(&self) -> u16 {
        let s = self.interval.as_millis().div_ceil(1000);
        s.clamp(1, u128::from(crate::wire::MAX_INTERVAL_S)) as u16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("1d").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64k"), Ok(65536));
        assert_eq!(parse_size("4MiB"), Ok(4 << 20));
        assert!(parse_size("4x").is_err());
        assert!(parse_size("99999999999999999999g").is_err());
    }

    #[test]
    fn cidrs() {
        let net: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains("10.1.200.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(!net.contains("fd00::1".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("1.2.3.4".parse().unwrap()));
        let one: Cidr = "fd00::5".parse().unwrap();
        assert!(one.contains("fd00::5".parse().unwrap()));
        assert!(!one.contains("fd00::6".parse().unwrap()));
        let mapped: Cidr = "::ffff:127.0.0.1".parse().unwrap();
        assert!(mapped.contains("127.0.0.1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("banana/8".parse::<Cidr>().is_err());
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("max"), Ok(Rate::Max));
        assert_eq!(parse_rate("2500"), Ok(Rate::PerSecond(2500.0)));
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("fast").is_err());
    }

    #[test]
    fn aggregator_errors_name_the_flag() {
        let cfg = AggregatorConfig {
            workers: 0,
            ..AggregatorConfig::default()
        };
        let err = cfg.validate().unwrap_err();
        assert_eq!(err.flag, "--workers");
        assert_eq!(
            err.to_string(),
            "invalid value for --workers: 0 is not in 1..=256"
        );
        let mut cfg = AggregatorConfig::default();
        cfg.report.thresholds.idle_cpu_pct = 120.0;
        assert_eq!(cfg.validate().unwrap_err().flag, "--idle-cpu-pct");
        assert!(AggregatorConfig::default().validate().is_ok());
    }

    #[test]
    fn sim_errors_name_the_flag() {
        let cfg = SimConfig {
            src_base: "::1".parse().unwrap(),
            ..SimConfig::default()
        };
        assert_eq!(cfg.validate().unwrap_err().flag, "--src-base");
        let cfg = SimConfig {
            src_base: "255.255.255.250".parse().unwrap(),
            count: 100,
            ..SimConfig::default()
        };
        assert_eq!(cfg.validate().unwrap_err().flag, "--src-base");
        assert!(SimConfig::default().validate().is_ok());
    }

    #[test]
    fn interval_field_rounds_up_to_a_second() {
        let mut cfg = SimConfig::default();
        assert_eq!(cfg.interval_s(), 60);
        cfg.interval = Duration::from_millis(500);
        assert_eq!(cfg.interval_s(), 1);
        cfg.interval = Duration::from_millis(1500);
        assert_eq!(cfg.interval_s(), 2);
    }
}
