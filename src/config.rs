//! Validated settings for the aggregator, the report and the simulator.
//!
//! Each setting is declared once, here: its flag, default, help text and
//! parser sit on the field (clap derives the command line from these
//! structs), and `Default` is that same command line parsed with no flags,
//! so a default cannot drift between the CLI and the library. `validate`
//! checks what a single parser cannot (ranges, one flag against another);
//! the core calls it before it uses a config, so a bad value fails at
//! startup with a message naming its flag.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::admission::Cidr;

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

/// A config with every flag at its default: the command line parsed with
/// no arguments.
pub fn defaults<T: clap::Args + clap::FromArgMatches>() -> T {
    let cmd = T::augment_args(clap::Command::new("defaults"));
    let matches = cmd
        .try_get_matches_from(["defaults"])
        .expect("every flag has a default");
    T::from_arg_matches(&matches).expect("defaults parse")
}

/// Where the per-VM files go unless `--data-dir` says otherwise.
pub const DEFAULT_DATA_DIR: &str = "vmstats-data";

/// `--server` of the simulator: an IPv4 address and port, or a name whose
/// first IPv4 address is taken (the simulated VMs send from 127/8).
pub fn parse_ipv4_server(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    use std::net::ToSocketAddrs;
    let need = || format!("`{text}` is not IPV4:PORT nor HOST:PORT with an IPv4 address");
    let addrs = text
        .to_socket_addrs()
        .map_err(|e| format!("{} ({e})", need()))?;
    addrs.into_iter().find(SocketAddr::is_ipv4).ok_or_else(need)
}

/// Parses `500ms`, `1s`, `2m`, `1h`, `14d` (a bare number is seconds).
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
        "d" => value * 86_400.0,
        _ => {
            return Err(format!(
                "`{text}` has unknown unit `{unit}` (use ms, s, m, h or d)"
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

/// Parses `--window`: a duration (`14d`, `36h`) or `all`.
pub fn parse_window(text: &str) -> Result<Lookback, String> {
    if text.eq_ignore_ascii_case("all") {
        return Ok(Lookback::All);
    }
    match parse_duration(text)? {
        d if d.is_zero() => Err(format!(
            "`{text}` is an empty window (use all for everything)"
        )),
        d => Ok(Lookback::Last(d)),
    }
}

/// How far back a report looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookback {
    /// The last this long before `--as-of`.
    Last(Duration),
    /// Every row, however old.
    All,
}

impl Lookback {
    pub fn length(self) -> Option<Duration> {
        match self {
            Lookback::Last(d) => Some(d),
            Lookback::All => None,
        }
    }
}

/// Parses a file mode in octal: `640`, `0640`, `0o640`.
pub fn parse_mode(text: &str) -> Result<u32, String> {
    let digits = text.trim().trim_start_matches("0o");
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if mode <= 0o777 => Ok(mode),
        _ => Err(format!("`{text}` is not an octal file mode (e.g. 640)")),
    }
}

/// Output format of the reclamation report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ReportFormat {
    #[default]
    Table,
    Json,
    Csv,
    /// One self-contained page: summary, sortable table, daily charts.
    Html,
}

/// Whose rules judge the VMs (`docs/policies.md` quotes each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Policy {
    /// vmstats' own categories, every threshold a flag.
    #[default]
    Vmstats,
    /// AWS Trusted Advisor's low-utilization check.
    Aws,
    /// Azure Advisor's shutdown and resize rules.
    Azure,
    /// Google Cloud's idle VM recommender.
    Gcp,
    /// vmstats' verdict, plus one column per vendor.
    All,
}

/// Thresholds of the reclamation categories (see `report`).
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct Thresholds {
    /// INSUFFICIENT_DATA below this many samples.
    #[arg(long, default_value_t = 5)]
    pub min_samples: u64,
    /// SILENT after this many of the VM's intervals without a datagram (and
    /// no final flag).
    #[arg(long, default_value_t = 3)]
    pub silent_intervals: u32,
    /// IDLE: p95 CPU below this percentage...
    #[arg(long, default_value_t = 10.0, value_name = "PCT")]
    pub idle_cpu_pct: f64,
    /// ...and p95 network rx+tx below this many bytes/s...
    #[arg(long, default_value_t = 3000.0, value_name = "BYTES_PER_S")]
    pub idle_net_bps: f64,
    /// ...and p95 disk read+write below this many bytes/s.
    #[arg(long, default_value_t = 100_000.0, value_name = "BYTES_PER_S")]
    pub idle_disk_bps: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        defaults()
    }
}

impl Thresholds {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(0.0..=100.0).contains(&self.idle_cpu_pct) {
            let why = format!("{} is not a percentage in 0..=100", self.idle_cpu_pct);
            return Err(invalid("--idle-cpu-pct", why));
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

/// How OVERSIZED and UNDERSIZED VMs are sized (vmstats' policy; the
/// vendors' have their own figures, see `docs/policies.md`).
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct Rightsizing {
    /// CPU is sized for this percentile of vCPUs busy (cpu% x vCPUs of
    /// each sample) over the window...
    #[arg(long, default_value_t = 99.5, value_name = "PCT")]
    pub cpu_percentile: f64,
    /// ...plus this much headroom, in percent.
    #[arg(long, default_value_t = 20.0, value_name = "PCT")]
    pub cpu_headroom: f64,
    /// Memory is sized for its peak in use plus this much headroom, in
    /// percent.
    #[arg(long, default_value_t = 20.0, value_name = "PCT")]
    pub mem_headroom: f64,
    /// With 7 days of data or more, a VM whose daily demand grows is sized
    /// for the trend's projection this long after --as-of.
    #[arg(long, default_value = "30d", value_parser = parse_duration, value_name = "DUR")]
    pub trend_horizon: Duration,
    /// Sizes and monthly prices to choose targets from: a CSV with the
    /// header name,vcpus,mem_gib,price_month (more columns are ignored).
    /// Without it, targets are powers of two of vCPUs and GiB.
    #[arg(long, value_name = "FILE")]
    pub catalog: Option<PathBuf>,
}

impl Rightsizing {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.cpu_percentile > 0.0 && self.cpu_percentile <= 100.0) {
            let why = format!("{} is not a percentile in (0, 100]", self.cpu_percentile);
            return Err(invalid("--cpu-percentile", why));
        }
        for (flag, v) in [
            ("--cpu-headroom", self.cpu_headroom),
            ("--mem-headroom", self.mem_headroom),
        ] {
            if !(0.0..=1000.0).contains(&v) {
                return Err(invalid(
                    flag,
                    format!("{v} is not a headroom in 0..=1000 %"),
                ));
            }
        }
        if self.trend_horizon > Duration::from_secs(3650 * 86_400) {
            return Err(invalid("--trend-horizon", "is more than ten years"));
        }
        Ok(())
    }
}

/// What the report covers, and how and where it is written.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct ReportConfig {
    /// Rows received in this long before --as-of (the advisors' lookback:
    /// 14d), or `all`.
    #[arg(long, default_value = "14d", value_parser = parse_window, value_name = "DUR|all")]
    pub window: Lookback,
    /// Whose rules decide the verdict; `all` shows every vendor's beside
    /// vmstats'.
    #[arg(long, value_enum, default_value_t = Policy::Vmstats)]
    pub policy: Policy,
    #[command(flatten)]
    pub thresholds: Thresholds,
    #[command(flatten)]
    pub rightsizing: Rightsizing,
    /// Monthly price of one vCPU: with it (or --price-gib-month, or
    /// --catalog), each VM gets an estimated monthly saving and the fleet
    /// a total. Sizes not in the catalog are priced per unit.
    #[arg(long, value_name = "PRICE")]
    pub price_vcpu_month: Option<f64>,
    /// Monthly price of one GiB of memory.
    #[arg(long, value_name = "PRICE")]
    pub price_gib_month: Option<f64>,
    /// Trust only authenticated (version 2) datagrams: the collector
    /// refuses version 1 as unauthenticated, and the report ignores every
    /// row without the verified flag.
    #[arg(long)]
    pub require_auth: bool,
    /// Report format.
    #[arg(long = "report-format", value_enum, default_value_t = ReportFormat::Table)]
    pub format: ReportFormat,
    /// Write the report to this file instead of stdout.
    #[arg(long = "report-file", value_name = "PATH")]
    pub file: Option<PathBuf>,
}

impl Default for ReportConfig {
    fn default() -> Self {
        defaults()
    }
}

/// What a vCPU and a GiB of memory cost a month.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prices {
    pub vcpu_month: f64,
    pub gib_month: f64,
}

impl ReportConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.thresholds.validate()?;
        self.rightsizing.validate()?;
        for (flag, v) in [
            ("--price-vcpu-month", self.price_vcpu_month),
            ("--price-gib-month", self.price_gib_month),
        ] {
            if let Some(v) = v
                && !(v >= 0.0 && v.is_finite())
            {
                return Err(invalid(flag, format!("{v} is not a price >= 0")));
            }
        }
        Ok(())
    }

    /// The prices, when either was given (the other is then 0).
    pub fn prices(&self) -> Option<Prices> {
        (self.price_vcpu_month.is_some() || self.price_gib_month.is_some()).then(|| Prices {
            vcpu_month: self.price_vcpu_month.unwrap_or(0.0),
            gib_month: self.price_gib_month.unwrap_or(0.0),
        })
    }
}

/// `udp-aggregator keys`: the key lines of `--auth-keys` and of each VM's
/// `--key-file` (PROTOCOL.md 1b).
#[derive(Debug, Clone, PartialEq, clap::Subcommand)]
pub enum KeysCommand {
    /// Print a fresh fleet key line (32 bytes from the operating system's
    /// random source), to add to the --auth-keys file.
    New {
        #[arg(long, value_name = "N")]
        key_id: u32,
    },
    /// Print the key line of the VM at --ip under fleet key --key-id: what
    /// that VM's agent --key-file holds (give the address the collector
    /// sees, which behind NAT is not the VM's own).
    Derive {
        #[arg(long, value_name = "FILE")]
        auth_keys: PathBuf,
        #[arg(long, value_name = "N")]
        key_id: u32,
        #[arg(long, value_name = "ADDR")]
        ip: IpAddr,
    },
}

/// `udp-aggregator report`: the report from the files alone.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct OfflineReportConfig {
    /// Directory of the per-VM files (repeatable: VMs found in several are
    /// merged by address, each datagram counted once).
    #[arg(long = "data-dir", default_value = DEFAULT_DATA_DIR, value_name = "DIR")]
    pub data_dirs: Vec<PathBuf>,
    /// The window ends here (Unix ms) instead of now; SILENT is judged
    /// against it.
    #[arg(long, value_name = "UNIX_MS")]
    pub as_of: Option<u64>,
    #[command(flatten)]
    pub report: ReportConfig,
}

/// `udp-aggregator export`: the data dirs as Parquet datasets.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct ExportConfig {
    /// Directory of the per-VM files (repeatable, merged by address as the
    /// report merges them).
    #[arg(long = "data-dir", default_value = DEFAULT_DATA_DIR, value_name = "DIR")]
    pub data_dirs: Vec<PathBuf>,
    /// Where the datasets go: `rows/date=YYYY-MM-DD/<shard>.parquet` and
    /// `vm_days/date=YYYY-MM-DD/<shard>.parquet`. Shards exported into the
    /// same directory make one dataset.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Rows received in this long before --as-of, or `all`.
    #[arg(long, default_value = "all", value_parser = parse_window, value_name = "DUR|all")]
    pub window: Lookback,
    /// The window ends here (Unix ms) instead of now.
    #[arg(long, value_name = "UNIX_MS")]
    pub as_of: Option<u64>,
    /// This export's name in file names (letters, digits, `-`, `_`; at
    /// most 64): one per collector exporting into the same --out. Default:
    /// derived from the data dirs' absolute paths.
    #[arg(long, value_name = "NAME")]
    pub shard: Option<String>,
    /// What makes a day idle in `vm_days` (as the report judges it).
    #[command(flatten)]
    pub thresholds: Thresholds,
}

impl ExportConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.thresholds.validate()?;
        if let Some(name) = &self.shard {
            let plain = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
            if name.is_empty() || name.len() > 64 || !name.chars().all(plain) {
                let why = format!("{name:?} is not 1 to 64 letters, digits, `-` or `_`");
                return Err(invalid("--shard", why));
            }
        }
        Ok(())
    }
}

/// Everything `udp-aggregator` needs to run.
#[derive(Debug, Clone, clap::Args)]
pub struct AggregatorConfig {
    /// UDP address to listen on; `[::]:PORT` takes IPv4 and IPv6; port 0
    /// picks a free one (printed on the first stderr line).
    #[arg(long, default_value = "0.0.0.0:9999")]
    pub listen: SocketAddr,
    /// Directory of the per-VM files (created 0750 if missing).
    #[arg(long, default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Permissions of new VM files, octal.
    #[arg(long, default_value = "640", value_parser = parse_mode, value_name = "MODE")]
    pub file_mode: u32,
    /// Writer threads (default: cores - 1, at least 1); a VM always
    /// belongs to the same one.
    #[arg(long, default_value_t = default_workers())]
    pub workers: usize,
    /// Receive threads, each with its own socket on --listen
    /// (SO_REUSEPORT: the kernel spreads senders over them by address and
    /// port); all hand each VM to the same worker.
    #[arg(long, default_value_t = 1)]
    pub receivers: usize,
    /// Append a VM's buffer to its file once it holds this many bytes
    /// (65536, 64k, 4m), even before --file-interval.
    #[arg(long, default_value = "32k", value_parser = parse_size, value_name = "SIZE")]
    pub flush_bytes: usize,
    /// Write and sync the journal this often (500ms, 1s, 2m): what a crash
    /// or a power loss can lose.
    #[arg(long, default_value = "1s", value_parser = parse_duration, value_name = "DUR")]
    pub flush_interval: Duration,
    /// Append a VM's rows to its file once its oldest row is this old: how
    /// late a reader of the live files sees a VM, and how many rows one
    /// file write carries (a VM every 10 s: 6 at the default).
    #[arg(long, default_value = "60s", value_parser = parse_duration, value_name = "DUR")]
    pub file_interval: Duration,
    /// Write the journal without syncing it: a kill -9 still loses nothing
    /// the kernel took, a power loss may lose everything not yet written
    /// back (up to 30 s on Linux's defaults), for less disk time.
    #[arg(long)]
    pub no_sync: bool,
    /// Let a worker whose file writes fall behind stretch its file
    /// interval up to this (default: never beyond --file-interval), so each
    /// open carries more rows; the journal keeps them durable meanwhile.
    #[arg(long, value_parser = parse_duration, value_name = "DUR")]
    pub max_flush_delay: Option<Duration>,
    /// Period of the status line on stderr.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DUR")]
    pub stats_interval: Duration,
    /// Serve HTTP on this TCP address, e.g. 127.0.0.1:9108 (default: off):
    /// Prometheus metrics (`/metrics`, `/healthz`) and the report of the
    /// latest --cache-refresh pass (`/`, `/report.json`,
    /// `/vm/<address>.json`), which shows the fleet's inventory: keep it on
    /// loopback or behind an authenticating proxy.
    #[arg(long, visible_alias = "http-listen", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// Bring the report's summary cache (<data-dir>/.vmstats) up to date
    /// this often while running, at low priority, so the exit report reads
    /// only the rows since; 0 = never.
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DUR")]
    pub cache_refresh: Duration,
    /// Stop by itself after this long (default: run until SIGINT/SIGTERM).
    #[arg(long, value_parser = parse_duration, value_name = "DUR")]
    pub duration: Option<Duration>,
    /// Socket receive buffer to ask the kernel for: a cap on queued
    /// datagrams, not an allocation.
    #[arg(long, default_value = "256m", value_parser = parse_size, value_name = "SIZE")]
    pub recv_buffer: usize,
    /// Batches (of up to 256 datagrams) each worker's queue holds before
    /// the receive loop drops, counted as dropped_overload.
    #[arg(long, default_value_t = 1024, value_name = "N")]
    pub queue_batches: usize,
    /// Rows not yet in their files that all workers together may hold in
    /// memory (a million VMs every 10 s fill about 700 MB in a 60 s file
    /// interval).
    #[arg(long, default_value = "1g", value_parser = parse_size, value_name = "SIZE")]
    pub max_buffered: usize,
    /// Open files per worker (default: from the open-file limit, raised to
    /// the hard limit, 64 kept back).
    #[arg(long, value_name = "N")]
    pub max_open_files: Option<usize>,
    /// Accept only sources in this block (repeatable, IPv4 or IPv6;
    /// default: all); others are counted as not_allowed.
    #[arg(long = "allow", value_name = "CIDR")]
    pub allow: Vec<Cidr>,
    /// Fleet keys, one `<key id> <64 hex digits>` a line (mode 0600; see
    /// `udp-aggregator keys new`): version 2 datagrams are verified with
    /// them and their rows flagged 256. SIGHUP rereads the file.
    #[arg(long, value_name = "FILE")]
    pub auth_keys: Option<PathBuf>,
    /// A version 2 datagram whose timestamp is further than this from its
    /// receive time is refused as stale.
    #[arg(long, default_value = "300s", value_parser = parse_duration, value_name = "DUR")]
    pub auth_max_skew: Duration,
    /// Distinct sources that may get a file; datagrams from new sources
    /// beyond it are counted as vm_limit.
    #[arg(long, default_value_t = 1_000_000, value_name = "N")]
    pub max_vms: usize,
    /// Receive and count only, writing nothing: the bare receive loop the
    /// load test measures the aggregator against.
    #[arg(long)]
    pub discard: bool,
    #[command(flatten)]
    pub report: ReportConfig,
}

impl Default for AggregatorConfig {
    fn default() -> Self {
        defaults()
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
        if !(1..=64).contains(&self.receivers) {
            return Err(invalid(
                "--receivers",
                format!("{} is not in 1..=64", self.receivers),
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
        if self.file_interval < self.flush_interval
            || self.file_interval > Duration::from_secs(3600)
        {
            return Err(invalid(
                "--file-interval",
                "must be between --flush-interval and 1h",
            ));
        }
        if let Some(max) = self.max_flush_delay
            && (max < self.file_interval || max > Duration::from_secs(3600))
        {
            return Err(invalid(
                "--max-flush-delay",
                "must be between --file-interval and 1h",
            ));
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
        if self.file_mode & 0o600 != 0o600 {
            return Err(invalid(
                "--file-mode",
                format!(
                    "{:o} does not let the aggregator read and write its files",
                    self.file_mode
                ),
            ));
        }
        self.report.validate()
    }

    /// The longest a row may wait for its file: `--max-flush-delay`, or
    /// the file interval when it is not set.
    pub fn max_flush_delay(&self) -> Duration {
        self.max_flush_delay.unwrap_or(self.file_interval)
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

/// Parses `--rate`: a positive number of datagrams/s, `max`, or
/// `interval` (each VM once per interval).
pub fn parse_rate(text: &str) -> Result<Rate, String> {
    if text.eq_ignore_ascii_case("max") {
        return Ok(Rate::Max);
    }
    if text.eq_ignore_ascii_case("interval") {
        return Ok(Rate::Interval);
    }
    match text.parse::<f64>() {
        Ok(r) if r > 0.0 && r.is_finite() => Ok(Rate::PerSecond(r)),
        _ => Err(format!(
            "`{text}` is not a positive rate, `max` or `interval`"
        )),
    }
}

/// Everything `udp-vmsim` needs to run.
#[derive(Debug, Clone, clap::Args)]
pub struct SimConfig {
    /// Number of VMs.
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub count: u32,
    /// Each VM reports once per interval (500ms, 1s, 2m...).
    #[arg(long, default_value = "60s", value_parser = parse_duration, value_name = "DUR")]
    pub interval: Duration,
    /// The aggregator's address (IPv4:PORT, or a name that resolves to an
    /// IPv4 address).
    #[arg(long, default_value = "127.0.0.1:9999", value_parser = parse_ipv4_server, value_name = "HOST:PORT")]
    pub server: SocketAddr,
    /// Stop after this long, then every VM sends a last datagram with the
    /// final flag (default: until Ctrl-C).
    #[arg(long, value_parser = parse_duration, value_name = "DUR")]
    pub duration: Option<Duration>,
    /// Source address of VM 0; VM i sends from the i-th address after it
    /// (all of 127/8 is loopback).
    #[arg(long, default_value = "127.1.0.1", value_name = "IP")]
    pub src_base: IpAddr,
    /// Seed of the VMs' profiles and values.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Datagrams/s in total (round-robin over the VMs), `max`, or
    /// `interval`: each VM once per --interval.
    #[arg(long, default_value = "interval", value_parser = parse_rate, value_name = "N|max|interval")]
    pub rate: Rate,
    /// Stop after this many datagrams (final ones not counted).
    #[arg(long, value_name = "N")]
    pub total: Option<u64>,
    /// Send no final-flag datagram at the end.
    #[arg(long)]
    pub no_final: bool,
    /// Send version 2: each VM's datagrams tagged with the key derived
    /// from this fleet key file's (newest) key and the VM's source address.
    #[arg(long, value_name = "FILE")]
    pub fleet_key: Option<PathBuf>,
    /// Send K consecutive datagrams of one VM as one UDP GSO buffer
    /// (UDP_SEGMENT): a sender that is not the bottleneck.
    #[arg(long, default_value_t = 1, value_name = "K")]
    pub gso: usize,
    /// Send nothing: write the files an aggregator would have written for
    /// these VMs over the last --days, into this directory.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["rate", "total", "duration", "gso", "no_final"])]
    pub write_dir: Option<PathBuf>,
    /// With --write-dir: how many days of history (fractions allowed).
    #[arg(long, default_value_t = 14.0, value_name = "DAYS")]
    pub days: f64,
}

impl Default for SimConfig {
    fn default() -> Self {
        defaults()
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
        if !(self.days > 0.0 && self.days <= 3650.0) {
            return Err(invalid(
                "--days",
                format!("{} is not in (0, 3650]", self.days),
            ));
        }
        Ok(())
    }

    /// The `interval_s` field this run sends.
    pub fn interval_s(&self) -> u16 {
        crate::wire::interval_field(self.interval)
    }
}

/// Everything `udp-vmagent` needs to run.
#[derive(Debug, Clone, clap::Args)]
pub struct AgentConfig {
    /// Aggregator to send to, HOST:PORT (repeatable: every datagram goes to
    /// each). Names are resolved at start and again after a failed send.
    #[arg(long = "server", value_name = "HOST:PORT")]
    pub servers: Vec<String>,
    /// Reporting interval (500ms, 10s, 1m; the datagram says whole seconds).
    #[arg(long, default_value = "60s", value_parser = parse_duration, value_name = "DUR")]
    pub interval: Duration,
    /// Take the first reading at once instead of after a random part of
    /// one interval (the first datagram still comes one interval later:
    /// it is the difference of two readings).
    #[arg(long)]
    pub no_jitter: bool,
    /// Where procfs is mounted (a container may see the host's elsewhere).
    #[arg(long, default_value = "/proc", value_name = "DIR")]
    pub proc_root: PathBuf,
    /// Where sysfs is mounted (cgroup v2 limits are read under fs/cgroup).
    #[arg(long, default_value = "/sys", value_name = "DIR")]
    pub sys_root: PathBuf,
    /// Write each sample as one key=value line on stdout (as well as
    /// sending it, or instead with no --server).
    #[arg(long)]
    pub print: bool,
    /// Stop after this long, sending the last part interval with the final
    /// flag (default: run until SIGTERM or SIGINT).
    #[arg(long, value_parser = parse_duration, value_name = "DUR")]
    pub duration: Option<Duration>,
    /// Send version 2, authenticated with this VM key (one `<key id> <64
    /// hex digits>` line, mode 0600: `udp-aggregator keys derive` makes it
    /// for the address the collector sees).
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        defaults()
    }
}

impl AgentConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.servers.is_empty() && !self.print {
            return Err(invalid(
                "--server",
                "give at least one aggregator (or --print to only print)",
            ));
        }
        for s in &self.servers {
            let port = s
                .rsplit_once(':')
                .map(|(host, port)| (host, port.parse::<u16>()));
            if !matches!(port, Some((host, Ok(p))) if !host.is_empty() && p > 0) {
                return Err(invalid("--server", format!("`{s}` is not HOST:PORT")));
            }
        }
        if self.interval < Duration::from_millis(1) || self.interval > Duration::from_secs(3600) {
            return Err(invalid("--interval", "must be between 1ms and 1h"));
        }
        if self.duration == Some(Duration::ZERO) {
            return Err(invalid("--duration", "must be more than 0"));
        }
        Ok(())
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
        assert_eq!(parse_duration("14d"), Ok(Duration::from_secs(14 * 86_400)));
        assert!(parse_duration("1w").is_err());
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
    fn rates() {
        assert_eq!(parse_rate("max"), Ok(Rate::Max));
        assert_eq!(parse_rate("interval"), Ok(Rate::Interval));
        assert_eq!(parse_rate("2500"), Ok(Rate::PerSecond(2500.0)));
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("fast").is_err());
    }

    #[test]
    fn windows() {
        assert_eq!(
            parse_window("14d"),
            Ok(Lookback::Last(Duration::from_secs(14 * 86_400)))
        );
        assert_eq!(parse_window("ALL"), Ok(Lookback::All));
        assert!(parse_window("0s").is_err());
        assert!(parse_window("forever").is_err());
        assert_eq!(
            ReportConfig::default().window.length(),
            Some(Duration::from_secs(14 * 86_400))
        );
    }

    #[test]
    fn prices_are_optional_and_checked() {
        let cfg = ReportConfig::default();
        assert_eq!(cfg.prices(), None);
        let cfg = ReportConfig {
            price_gib_month: Some(3.5),
            ..ReportConfig::default()
        };
        let p = cfg.prices().unwrap();
        assert_eq!((p.vcpu_month, p.gib_month), (0.0, 3.5));
        let bad = ReportConfig {
            price_vcpu_month: Some(-1.0),
            ..ReportConfig::default()
        };
        assert_eq!(bad.validate().unwrap_err().flag, "--price-vcpu-month");
    }

    #[test]
    fn modes() {
        assert_eq!(parse_mode("640"), Ok(0o640));
        assert_eq!(parse_mode("0o600"), Ok(0o600));
        assert!(parse_mode("888").is_err());
        assert!(parse_mode("7777").is_err());
    }

    #[test]
    fn defaults_are_the_command_lines() {
        let cfg = AggregatorConfig::default();
        assert_eq!(cfg.flush_interval, Duration::from_secs(1));
        assert_eq!(cfg.file_interval, Duration::from_secs(60));
        assert_eq!(cfg.max_flush_delay(), Duration::from_secs(60));
        assert!(!cfg.no_sync);
        assert_eq!(cfg.file_mode, 0o640);
        assert_eq!(cfg.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(cfg.report.thresholds.idle_cpu_pct, 10.0);
        assert_eq!(SimConfig::default().rate, Rate::Interval);
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
        let cfg = AggregatorConfig {
            max_flush_delay: Some(Duration::from_millis(10)),
            ..AggregatorConfig::default()
        };
        assert_eq!(cfg.validate().unwrap_err().flag, "--max-flush-delay");
        let cfg = AggregatorConfig {
            file_interval: Duration::from_millis(500),
            ..AggregatorConfig::default()
        };
        assert_eq!(cfg.validate().unwrap_err().flag, "--file-interval");
        let cfg = AggregatorConfig {
            file_mode: 0o200,
            ..AggregatorConfig::default()
        };
        assert_eq!(cfg.validate().unwrap_err().flag, "--file-mode");
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
    fn agent_errors_name_the_flag() {
        let cfg = AgentConfig::default();
        assert_eq!(cfg.validate().unwrap_err().flag, "--server");
        let ok = AgentConfig {
            servers: vec!["agg.example:9999".into(), "[::1]:9999".into()],
            ..AgentConfig::default()
        };
        assert!(ok.validate().is_ok());
        for bad in ["agg.example", "agg.example:0", ":9999", "host:port"] {
            let cfg = AgentConfig {
                servers: vec![bad.into()],
                ..AgentConfig::default()
            };
            assert_eq!(cfg.validate().unwrap_err().flag, "--server", "{bad}");
        }
        let cfg = AgentConfig {
            print: true,
            interval: Duration::from_secs(7200),
            ..AgentConfig::default()
        };
        assert_eq!(cfg.validate().unwrap_err().flag, "--interval");
        assert_eq!(AgentConfig::default().interval, Duration::from_secs(60));
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
