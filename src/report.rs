//! The reclamation report: which VMs are idle, oversized or undersized.
//!
//! It is built from the per-VM files alone, both at the aggregator's exit and
//! by `udp-aggregator report --data-dir`, so the live table and a second
//! opinion read the same bytes through the same code and cannot disagree,
//! and the aggregator keeps no per-VM statistics in memory while it runs.
//! Files are read one at a time, so memory is bounded by the largest VM's
//! history, not by the number of VMs; that also makes every percentile exact
//! (nearest rank over the sorted samples) rather than bucketed.
//!
//! Categories, first match wins (thresholds are flags, see [`Thresholds`]):
//! INSUFFICIENT_DATA, SILENT, IDLE, OVERSIZED, UNDERSIZED, OK.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::config::{OfflineReportConfig, ReportFormat, Thresholds};
use crate::store::{self, OpenError};
use crate::wire::{self, Row};

/// A report that could not be built or written, with the path at fault.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot read data dir {path}: {error}")]
    DataDir { path: PathBuf, error: io::Error },
    #[error("cannot read {path}: {error}")]
    File { path: PathBuf, error: io::Error },
    #[error("cannot write report to {path} (--report-file): {error}")]
    Write { path: PathBuf, error: io::Error },
}

/// The verdict on one VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Category {
    // Declared in the table's order: reclaimable first.
    Idle,
    Oversized,
    Undersized,
    Silent,
    InsufficientData,
    Ok,
}

impl Category {
    pub const ALL: [Category; 6] = [
        Category::Idle,
        Category::Oversized,
        Category::Undersized,
        Category::Silent,
        Category::InsufficientData,
        Category::Ok,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Category::InsufficientData => "INSUFFICIENT_DATA",
            Category::Silent => "SILENT",
            Category::Idle => "IDLE",
            Category::Oversized => "OVERSIZED",
            Category::Undersized => "UNDERSIZED",
            Category::Ok => "OK",
        }
    }

    pub fn advice(self) -> &'static str {
        match self {
            Category::InsufficientData => "wait",
            Category::Silent => "check the VM",
            Category::Idle => "reclaim",
            Category::Oversized => "halve vCPUs / memory",
            Category::Undersized => "grow",
            Category::Ok => "keep",
        }
    }

    fn summary_word(self) -> &'static str {
        match self {
            Category::InsufficientData => "insufficient data",
            Category::Silent => "silent",
            Category::Idle => "idle",
            Category::Oversized => "oversized",
            Category::Undersized => "undersized",
            Category::Ok => "ok",
        }
    }
}

/// What one VM's rows say, before any verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct VmSummary {
    pub ip: IpAddr,
    pub samples: u64,
    /// From the latest row: the VM's size now.
    pub vcpus: u16,
    pub mem_mib: u32,
    pub interval_s: u16,
    pub cpu_p50: f64,
    pub cpu_p95: f64,
    pub cpu_p99: f64,
    pub cpu_max: f64,
    pub mem_p95: f64,
    pub mem_max: f64,
    /// p95 of (net rx + tx) / interval, bytes/s.
    pub net_p95_bps: f64,
    /// p95 of (disk read + write) / interval, bytes/s.
    pub disk_p95_bps: f64,
    /// Gaps in seq within a boot.
    pub lost: u64,
    /// Rows whose (boot_id, seq) was already seen.
    pub duplicates: u64,
    /// Rows that arrived after a higher seq of the same boot.
    pub out_of_order: u64,
    /// New boot_ids after the first.
    pub restarts: u64,
    pub last_seen_ms: u64,
    /// The latest row carries the final flag: the agent stopped on purpose.
    pub stopped: bool,
    /// Lines of the file that are not rows (torn last line excluded).
    pub bad_rows: u64,
}

/// Nearest-rank percentile of sorted values.
fn percentile<T: Copy>(sorted: &[T], p: f64) -> T {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Folds a VM's rows, in file order, into its summary.
#[derive(Default)]
pub struct Accumulator {
    cpu: Vec<u16>,
    mem: Vec<u16>,
    net: Vec<f64>,
    disk: Vec<f64>,
    /// Per boot: every seq seen and the highest so far.
    boots: HashMap<u32, (Vec<u64>, u64)>,
    out_of_order: u64,
    last: Option<Row>,
    last_seen_ms: u64,
    bad_rows: u64,
}

impl Accumulator {
    pub fn add(&mut self, row: &Row) {
        let s = &row.stat;
        self.cpu.push(s.cpu_pct_x100);
        self.mem.push(s.mem_pct_x100);
        let secs = f64::from(s.interval_s.max(1));
        self.net
            .push(s.net_rx_bytes.saturating_add(s.net_tx_bytes) as f64 / secs);
        self.disk
            .push(s.disk_read_bytes.saturating_add(s.disk_write_bytes) as f64 / secs);
        let (seqs, max) = self.boots.entry(s.boot_id).or_insert((Vec::new(), s.seq));
        if s.seq < *max {
            self.out_of_order += 1;
        }
        *max = (*max).max(s.seq);
        seqs.push(s.seq);
        self.last_seen_ms = self.last_seen_ms.max(row.recv_ms);
        self.last = Some(*row);
    }

    pub fn add_bad_row(&mut self) {
        self.bad_rows += 1;
    }

    /// `None` when no row was added.
    pub fn finish(mut self, ip: IpAddr) -> Option<VmSummary> {
        let last = self.last?;
        self.cpu.sort_unstable();
        self.mem.sort_unstable();
        self.net.sort_unstable_by(f64::total_cmp);
        self.disk.sort_unstable_by(f64::total_cmp);
        let (mut lost, mut duplicates) = (0u64, 0u64);
        for (seqs, _) in self.boots.values_mut() {
            seqs.sort_unstable();
            let distinct = 1 + seqs.windows(2).filter(|w| w[0] != w[1]).count() as u64;
            duplicates += seqs.len() as u64 - distinct;
            let span = (seqs[seqs.len() - 1] - seqs[0]).saturating_add(1);
            lost += span - distinct;
        }
        let pct = |v: u16| f64::from(v) / 100.0;
        Some(VmSummary {
            ip,
            samples: self.cpu.len() as u64,
            vcpus: last.stat.vcpus,
            mem_mib: last.stat.mem_mib,
            interval_s: last.stat.interval_s,
            cpu_p50: pct(percentile(&self.cpu, 50.0)),
            cpu_p95: pct(percentile(&self.cpu, 95.0)),
            cpu_p99: pct(percentile(&self.cpu, 99.0)),
            cpu_max: pct(self.cpu[self.cpu.len() - 1]),
            mem_p95: pct(percentile(&self.mem, 95.0)),
            mem_max: pct(self.mem[self.mem.len() - 1]),
            net_p95_bps: percentile(&self.net, 95.0),
            disk_p95_bps: percentile(&self.disk, 95.0),
            lost,
            duplicates,
            out_of_order: self.out_of_order,
            restarts: self.boots.len() as u64 - 1,
            last_seen_ms: self.last_seen_ms,
            stopped: last.stat.is_final(),
            bad_rows: self.bad_rows,
        })
    }
}

/// Formats bytes/s in SI units, as the thresholds are given.
pub fn fmt_rate(bps: f64) -> String {
    if bps < 1000.0 {
        format!("{bps:.0} B/s")
    } else if bps < 1e6 {
        format!("{:.1} kB/s", bps / 1e3)
    } else if bps < 1e9 {
        format!("{:.1} MB/s", bps / 1e6)
    } else {
        format!("{:.1} GB/s", bps / 1e9)
    }
}

/// The category of a VM and the figures that decided it.
pub fn categorize(vm: &VmSummary, t: &Thresholds, as_of_ms: u64) -> (Category, String) {
    if vm.samples < t.min_samples {
        return (
            Category::InsufficientData,
            format!("{} samples < {}", vm.samples, t.min_samples),
        );
    }
    let quiet_ms = as_of_ms.saturating_sub(vm.last_seen_ms);
    let limit_ms = u64::from(t.silent_intervals) * u64::from(vm.interval_s) * 1000;
    if !vm.stopped && quiet_ms > limit_ms {
        return (
            Category::Silent,
            format!(
                "nothing for {:.0} s > {} x {} s interval",
                quiet_ms as f64 / 1000.0,
                t.silent_intervals,
                vm.interval_s
            ),
        );
    }
    if vm.cpu_p95 < t.idle_cpu_pct
        && vm.net_p95_bps < t.idle_net_bps
        && vm.disk_p95_bps < t.idle_disk_bps
    {
        return (
            Category::Idle,
            format!(
                "p95 cpu {:.1}% < {}%, net {}, disk {}",
                vm.cpu_p95,
                t.idle_cpu_pct,
                fmt_rate(vm.net_p95_bps),
                fmt_rate(vm.disk_p95_bps)
            ),
        );
    }
    if vm.cpu_p99 <= t.oversized_cpu_pct && vm.mem_max <= t.oversized_mem_pct {
        return (
            Category::Oversized,
            format!(
                "p99 cpu {:.1}% <= {}%, max mem {:.1}% <= {}%",
                vm.cpu_p99, t.oversized_cpu_pct, vm.mem_max, t.oversized_mem_pct
            ),
        );
    }
    if vm.cpu_p95 > t.undersized_cpu_pct {
        return (
            Category::Undersized,
            format!("p95 cpu {:.1}% > {}%", vm.cpu_p95, t.undersized_cpu_pct),
        );
    }
    if vm.mem_max > t.undersized_mem_pct {
        return (
            Category::Undersized,
            format!("max mem {:.1}% > {}%", vm.mem_max, t.undersized_mem_pct),
        );
    }
    (
        Category::Ok,
        format!("p95 cpu {:.1}%, max mem {:.1}%", vm.cpu_p95, vm.mem_max),
    )
}

/// One VM's line of the report.
#[derive(Debug, Clone, PartialEq)]
pub struct VmReport {
    pub vm: VmSummary,
    pub category: Category,
    pub reason: String,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The moment SILENT is judged against (Unix ms).
    pub as_of_ms: u64,
    /// Ordered by category (reclaimable first), then address.
    pub vms: Vec<VmReport>,
}

impl Report {
    pub fn new(summaries: Vec<VmSummary>, t: &Thresholds, as_of_ms: u64) -> Report {
        let mut vms: Vec<VmReport> = summaries
            .into_iter()
            .map(|vm| {
                let (category, reason) = categorize(&vm, t, as_of_ms);
                VmReport {
                    vm,
                    category,
                    reason,
                }
            })
            .collect();
        vms.sort_by_key(|v| (v.category, v.vm.ip));
        Report { as_of_ms, vms }
    }

    pub fn count(&self, c: Category) -> usize {
        self.vms.iter().filter(|v| v.category == c).count()
    }
}

/// Longest line the report takes in: a row is at most
/// [`wire::MAX_ROW_LEN`] bytes, so anything longer is junk, skipped without
/// being held in memory (a planted file of one endless line cannot grow the
/// report's memory).
const MAX_LINE: usize = 4 * wire::MAX_ROW_LEN;

/// What [`next_line`] found.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// A whole line, in the buffer without its newline.
    Whole,
    /// A line longer than [`MAX_LINE`], skipped.
    TooLong,
    /// The end of the file came before a newline (a torn last line).
    Torn,
    Eof,
}

/// Reads the next line into `line`, holding at most [`MAX_LINE`] bytes.
fn next_line(reader: &mut impl BufRead, line: &mut Vec<u8>) -> io::Result<Line> {
    line.clear();
    let mut too_long = false;
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            let started = too_long || !line.is_empty();
            return Ok(if started { Line::Torn } else { Line::Eof });
        }
        let (chunk, end) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (&buf[..i], Some(i + 1)),
            None => (buf, None),
        };
        if !too_long && line.len() + chunk.len() <= MAX_LINE {
            line.extend_from_slice(chunk);
        } else {
            too_long = true;
            line.clear();
        }
        let used = end.unwrap_or(buf.len());
        reader.consume(used);
        if end.is_some() {
            return Ok(if too_long { Line::TooLong } else { Line::Whole });
        }
    }
}

/// Reads one VM file into its summary: header checked, torn last line
/// skipped (the contract allows one after a crash), bad lines counted.
/// `Ok(None)` for a file with no rows, or one that is not a regular file
/// (a symlink, FIFO or device planted in the data dir is never read).
pub fn summarize_file(path: &Path, ip: IpAddr) -> Result<Option<VmSummary>, ReportError> {
    let err = |error| ReportError::File {
        path: path.to_path_buf(),
        error,
    };
    let file = match store::open_regular(path, std::fs::OpenOptions::new().read(true)) {
        Ok((file, _)) => file,
        Err(OpenError::NotRegular(kind)) => {
            crate::log_line(&format!(
                "warning: {}: {kind}, not a regular file; left out of the report",
                path.display()
            ));
            return Ok(None);
        }
        Err(OpenError::Io(e)) => return Err(err(e)),
    };
    let mut reader = BufReader::new(file);
    let mut acc = Accumulator::default();
    let mut line = Vec::with_capacity(MAX_LINE);
    let header = wire::CSV_HEADER.trim_end().as_bytes();
    let mut first = true;
    loop {
        match next_line(&mut reader, &mut line).map_err(err)? {
            Line::Eof | Line::Torn => break,
            Line::TooLong => acc.add_bad_row(),
            Line::Whole if std::mem::take(&mut first) => {
                if line != header {
                    return Err(err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "first line is not the vmstats header",
                    )));
                }
            }
            Line::Whole => match std::str::from_utf8(&line).map(wire::parse_row) {
                Ok(Ok(row)) => acc.add(&row),
                _ => acc.add_bad_row(),
            },
        }
    }
    Ok(acc.finish(ip))
}

/// `udp-aggregator report`: the report of a data dir, from its files alone.
pub fn offline(cfg: &OfflineReportConfig) -> Result<(), ReportError> {
    cfg.report.thresholds.validate()?;
    let as_of = cfg.as_of.unwrap_or_else(crate::unix_ms);
    let report = build(&cfg.data_dir, &cfg.report.thresholds, as_of)?;
    write(&report, cfg.report.format, cfg.report.file.as_deref())
}

/// Builds the report of every VM file in `data_dir`. Files that cannot be
/// read are reported on stderr and left out, so one bad file does not hide
/// the other VMs.
pub fn build(data_dir: &Path, t: &Thresholds, as_of_ms: u64) -> Result<Report, ReportError> {
    let dir_err = |error| ReportError::DataDir {
        path: data_dir.to_path_buf(),
        error,
    };
    let mut summaries = Vec::new();
    for entry in std::fs::read_dir(data_dir).map_err(dir_err)? {
        let entry = entry.map_err(dir_err)?;
        let name = entry.file_name();
        let Some(ip) = name.to_str().and_then(wire::ip_from_file_name) else {
            continue;
        };
        match summarize_file(&entry.path(), ip) {
            Ok(Some(vm)) => {
                if vm.bad_rows > 0 {
                    eprintln!(
                        "warning: {}: {} malformed lines skipped",
                        entry.path().display(),
                        vm.bad_rows
                    );
                }
                summaries.push(vm);
            }
            Ok(None) => {}
            Err(e) => eprintln!("warning: {e}; file left out of the report"),
        }
    }
    Ok(Report::new(summaries, t, as_of_ms))
}

/// `N VMs: x idle, y oversized, ...` plus what the idle VMs hold.
pub fn summary_line(r: &Report) -> String {
    let mut out = format!("{} VMs:", r.vms.len());
    for (i, c) in Category::ALL.iter().enumerate() {
        let sep = if i == 0 { " " } else { ", " };
        let _ = write!(out, "{sep}{} {}", r.count(*c), c.summary_word());
    }
    let idle = r.vms.iter().filter(|v| v.category == Category::Idle);
    let (cpus, mib) = idle.fold((0u64, 0u64), |(c, m), v| {
        (c + u64::from(v.vm.vcpus), m + u64::from(v.vm.mem_mib))
    });
    if cpus > 0 {
        let _ = write!(
            out,
            "; reclaimable now: {cpus} vCPUs, {:.1} GiB",
            mib as f64 / 1024.0
        );
    }
    out
}

/// Sequence accounting summed over every VM.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeqTotals {
    pub lost: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub restarts: u64,
}

impl Report {
    pub fn seq_totals(&self) -> SeqTotals {
        self.vms
            .iter()
            .fold(SeqTotals::default(), |t, v| SeqTotals {
                lost: t.lost + v.vm.lost,
                duplicates: t.duplicates + v.vm.duplicates,
                out_of_order: t.out_of_order + v.vm.out_of_order,
                restarts: t.restarts + v.vm.restarts,
            })
    }
}

/// `datagrams: N lost, ...`: the sequence totals as a line.
pub fn seq_line(r: &Report) -> String {
    let t = r.seq_totals();
    format!(
        "datagrams: {} lost, {} duplicated, {} out of order; {} agent restarts",
        t.lost, t.duplicates, t.out_of_order, t.restarts
    )
}

fn fmt_age(ms: u64) -> String {
    let s = ms / 1000;
    if s < 120 {
        format!("{s}s ago")
    } else if s < 7200 {
        format!("{}m ago", s / 60)
    } else {
        format!("{}h ago", s / 3600)
    }
}

const TABLE_HEAD: [&str; 12] = [
    "VM",
    "CATEGORY",
    "SAMPLES",
    "VCPU",
    "MEM_MIB",
    "CPU% p50/p95/p99/max",
    "MEM% p95/max",
    "NET p95",
    "DISK p95",
    "LOST/DUP/OOO/RST",
    "SEEN",
    "ADVICE: REASON",
];

fn table_cells(r: &VmReport, as_of_ms: u64) -> [String; 12] {
    let v = &r.vm;
    [
        v.ip.to_string(),
        r.category.name().to_string(),
        v.samples.to_string(),
        v.vcpus.to_string(),
        v.mem_mib.to_string(),
        format!(
            "{:.1}/{:.1}/{:.1}/{:.1}",
            v.cpu_p50, v.cpu_p95, v.cpu_p99, v.cpu_max
        ),
        format!("{:.1}/{:.1}", v.mem_p95, v.mem_max),
        fmt_rate(v.net_p95_bps),
        fmt_rate(v.disk_p95_bps),
        format!(
            "{}/{}/{}/{}",
            v.lost, v.duplicates, v.out_of_order, v.restarts
        ),
        fmt_age(as_of_ms.saturating_sub(v.last_seen_ms)),
        format!("{}: {}", r.category.advice(), r.reason),
    ]
}

fn render_table(r: &Report) -> String {
    let rows: Vec<[String; 12]> = r.vms.iter().map(|v| table_cells(v, r.as_of_ms)).collect();
    let mut widths = TABLE_HEAD.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let mut l = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else if (2..=4).contains(&i) {
                let _ = write!(l, "{cell:>w$}  ", w = widths[i]);
            } else {
                let _ = write!(l, "{cell:<w$}  ", w = widths[i]);
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&TABLE_HEAD);
    for row in &rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        line(&cells);
    }
    out.push_str(&summary_line(r));
    out.push('\n');
    out.push_str(&seq_line(r));
    out.push('\n');
    out
}

/// Escapes a string for a JSON string literal.
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Field names and values of one VM, shared by the JSON and CSV forms.
fn fields(r: &VmReport) -> [(&'static str, String); 21] {
    let v = &r.vm;
    [
        ("ip", v.ip.to_string()),
        ("category", r.category.name().to_string()),
        ("advice", r.category.advice().to_string()),
        ("reason", r.reason.clone()),
        ("samples", v.samples.to_string()),
        ("vcpus", v.vcpus.to_string()),
        ("mem_mib", v.mem_mib.to_string()),
        ("cpu_p50", format!("{:.2}", v.cpu_p50)),
        ("cpu_p95", format!("{:.2}", v.cpu_p95)),
        ("cpu_p99", format!("{:.2}", v.cpu_p99)),
        ("cpu_max", format!("{:.2}", v.cpu_max)),
        ("mem_p95", format!("{:.2}", v.mem_p95)),
        ("mem_max", format!("{:.2}", v.mem_max)),
        ("net_p95_bps", format!("{:.1}", v.net_p95_bps)),
        ("disk_p95_bps", format!("{:.1}", v.disk_p95_bps)),
        ("lost", v.lost.to_string()),
        ("duplicates", v.duplicates.to_string()),
        ("out_of_order", v.out_of_order.to_string()),
        ("restarts", v.restarts.to_string()),
        ("last_seen_ms", v.last_seen_ms.to_string()),
        ("stopped", v.stopped.to_string()),
    ]
}

/// Fields that are text in JSON; the rest are numbers or booleans.
const TEXT_FIELDS: [&str; 4] = ["ip", "category", "advice", "reason"];

fn render_json(r: &Report) -> String {
    let mut out = format!(
        "{{\"as_of_ms\":{},\"summary\":{{\"vms\":{}",
        r.as_of_ms,
        r.vms.len()
    );
    for c in Category::ALL {
        let _ = write!(
            out,
            ",{}:{}",
            json_str(&c.name().to_ascii_lowercase()),
            r.count(c)
        );
    }
    let t = r.seq_totals();
    let _ = write!(
        out,
        ",\"lost\":{},\"duplicates\":{},\"out_of_order\":{},\"restarts\":{}",
        t.lost, t.duplicates, t.out_of_order, t.restarts
    );
    out.push_str("},\"vms\":[");
    for (i, v) in r.vms.iter().enumerate() {
        out.push_str(if i == 0 { "\n{" } else { ",\n{" });
        for (j, (name, value)) in fields(v).iter().enumerate() {
            let value = if TEXT_FIELDS.contains(name) {
                json_str(value)
            } else {
                value.clone()
            };
            let _ = write!(out, "{}\"{name}\":{value}", if j == 0 { "" } else { "," });
        }
        out.push('}');
    }
    out.push_str("\n]}\n");
    out
}

fn csv_cell(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn render_csv(r: &Report) -> String {
    let mut out = String::new();
    let Some(first) = r.vms.first() else {
        return out;
    };
    let names: Vec<&str> = fields(first).iter().map(|(n, _)| *n).collect();
    out.push_str(&names.join(","));
    out.push('\n');
    for v in &r.vms {
        let cells: Vec<String> = fields(v).iter().map(|(_, val)| csv_cell(val)).collect();
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}

/// The report in the chosen format.
pub fn render(r: &Report, format: ReportFormat) -> String {
    match format {
        ReportFormat::Table => render_table(r),
        ReportFormat::Json => render_json(r),
        ReportFormat::Csv => render_csv(r),
    }
}

/// Writes the rendered report to `file`, or stdout when `None`.
pub fn write(r: &Report, format: ReportFormat, file: Option<&Path>) -> Result<(), ReportError> {
    let text = render(r, format);
    match file {
        Some(path) => std::fs::write(path, text).map_err(|error| ReportError::Write {
            path: path.to_path_buf(),
            error,
        }),
        None => {
            use std::io::Write;
            let mut out = io::stdout().lock();
            out.write_all(text.as_bytes())
                .and_then(|()| out.flush())
                .map_err(|error| ReportError::Write {
                    path: PathBuf::from("<stdout>"),
                    error,
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Stat;

    const AS_OF: u64 = 1_000_000_000;

    #[test]
    fn lines_are_bounded_and_torn_ends_seen() {
        let long = "x".repeat(MAX_LINE + 1);
        let text = format!("a,b\n{long}\nc\ntorn");
        let mut r = io::BufReader::with_capacity(16, text.as_bytes());
        let mut line = Vec::new();
        assert_eq!(next_line(&mut r, &mut line).unwrap(), Line::Whole);
        assert_eq!(line, b"a,b");
        assert_eq!(next_line(&mut r, &mut line).unwrap(), Line::TooLong);
        assert!(line.len() <= MAX_LINE);
        assert_eq!(next_line(&mut r, &mut line).unwrap(), Line::Whole);
        assert_eq!(line, b"c");
        assert_eq!(next_line(&mut r, &mut line).unwrap(), Line::Torn);
        assert_eq!(next_line(&mut r, &mut line).unwrap(), Line::Eof);
    }

    #[test]
    fn planted_fifos_and_links_are_left_out_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("127.6.0.1.csv");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        std::os::unix::fs::symlink("/dev/zero", dir.path().join("127.6.0.2.csv")).unwrap();
        let report = build(dir.path(), &Thresholds::default(), AS_OF).unwrap();
        assert!(report.vms.is_empty());
    }

    #[test]
    fn one_endless_line_costs_no_memory_and_is_a_bad_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("127.6.0.3.csv");
        let mut text = wire::CSV_HEADER.to_string();
        text.push_str(&"9".repeat(1 << 20));
        text.push('\n');
        std::fs::write(&path, text).unwrap();
        let vm = summarize_file(&path, "127.6.0.3".parse().unwrap()).unwrap();
        assert!(vm.is_none_or(|v| v.bad_rows == 1));
    }

    fn row(seq: u64, cpu_x100: u16, mem_x100: u16, net: u64, disk: u64) -> Row {
        Row {
            recv_ms: AS_OF - 60_000 + seq,
            stat: Stat {
                interval_s: 60,
                boot_id: 7,
                vcpus: 8,
                seq,
                cpu_pct_x100: cpu_x100,
                mem_pct_x100: mem_x100,
                mem_mib: 16_384,
                net_rx_bytes: net * 60,
                disk_read_bytes: disk * 60,
                ..Stat::default()
            },
        }
    }

    fn summary_of(rows: &[Row]) -> VmSummary {
        let mut acc = Accumulator::default();
        rows.iter().for_each(|r| acc.add(r));
        acc.finish("127.1.0.1".parse().unwrap()).unwrap()
    }

    fn category_of(rows: &[Row]) -> (Category, String) {
        categorize(&summary_of(rows), &Thresholds::default(), AS_OF)
    }

    fn steady(n: u64, cpu: u16, mem: u16, net: u64, disk: u64) -> Vec<Row> {
        (0..n).map(|s| row(s, cpu, mem, net, disk)).collect()
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 95.0), 95);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&[7], 95.0), 7);
    }

    #[test]
    fn too_few_samples_is_insufficient_data() {
        let (c, why) = category_of(&steady(4, 100, 1000, 0, 0));
        assert_eq!(c, Category::InsufficientData);
        assert_eq!(why, "4 samples < 5");
    }

    #[test]
    fn quiet_without_final_flag_is_silent() {
        let mut rows = steady(10, 5000, 5000, 10_000, 0);
        for r in &mut rows {
            r.recv_ms = AS_OF - 181_000;
        }
        let (c, why) = category_of(&rows);
        assert_eq!(c, Category::Silent);
        assert_eq!(why, "nothing for 181 s > 3 x 60 s interval");
        // The same VM that said goodbye is judged on its data.
        rows.last_mut().unwrap().stat.flags = wire::FLAG_FINAL;
        assert_eq!(category_of(&rows).0, Category::Ok);
    }

    #[test]
    fn low_cpu_network_and_disk_is_idle() {
        let (c, why) = category_of(&steady(20, 310, 6000, 410, 0));
        assert_eq!(c, Category::Idle);
        assert_eq!(why, "p95 cpu 3.1% < 10%, net 410 B/s, disk 0 B/s");
    }

    #[test]
    fn idle_cpu_with_traffic_is_not_idle() {
        // CPU low, but a 5 kB/s network: a quiet server, not an idle one.
        let (c, _) = category_of(&steady(20, 310, 2000, 5000, 0));
        assert_eq!(c, Category::Oversized);
        let (c, _) = category_of(&steady(20, 310, 6000, 0, 200_000));
        assert_eq!(c, Category::Ok);
    }

    #[test]
    fn memory_does_not_decide_idle() {
        assert_eq!(category_of(&steady(20, 100, 9900, 0, 0)).0, Category::Idle);
    }

    #[test]
    fn low_cpu_and_memory_is_oversized() {
        let (c, why) = category_of(&steady(20, 2200, 3100, 50_000, 0));
        assert_eq!(c, Category::Oversized);
        assert_eq!(why, "p99 cpu 22.0% <= 40%, max mem 31.0% <= 40%");
    }

    #[test]
    fn busy_cpu_or_full_memory_is_undersized() {
        let (c, why) = category_of(&steady(20, 9100, 5000, 50_000, 0));
        assert_eq!(
            (c, why.as_str()),
            (Category::Undersized, "p95 cpu 91.0% > 80%")
        );
        let mut rows = steady(20, 5000, 5000, 50_000, 0);
        rows[3].stat.mem_pct_x100 = 9500;
        let (c, why) = category_of(&rows);
        assert_eq!(
            (c, why.as_str()),
            (Category::Undersized, "max mem 95.0% > 90%")
        );
    }

    #[test]
    fn middling_is_ok() {
        let (c, why) = category_of(&steady(20, 5000, 6000, 50_000, 0));
        assert_eq!(
            (c, why.as_str()),
            (Category::Ok, "p95 cpu 50.0%, max mem 60.0%")
        );
    }

    #[test]
    fn a_spike_in_the_top_five_percent_does_not_stop_idle() {
        let mut rows = steady(40, 200, 5000, 100, 0);
        rows[10].stat.cpu_pct_x100 = 9900;
        rows[20].stat.cpu_pct_x100 = 9900;
        let vm = summary_of(&rows);
        assert_eq!(vm.cpu_max, 99.0);
        assert_eq!(vm.cpu_p95, 2.0);
        assert_eq!(
            categorize(&vm, &Thresholds::default(), AS_OF).0,
            Category::Idle
        );
    }

    #[test]
    fn loss_duplicates_reorder_and_restarts() {
        let mut rows: Vec<Row> = [0, 1, 3, 2, 2, 5]
            .iter()
            .map(|s| row(*s, 0, 0, 0, 0))
            .collect();
        // A restart: new boot_id, seq from 0 again, no loss across it.
        for s in 0..3 {
            let mut r = row(s, 0, 0, 0, 0);
            r.stat.boot_id = 8;
            rows.push(r);
        }
        let vm = summary_of(&rows);
        assert_eq!(vm.samples, 9);
        assert_eq!(vm.lost, 1); // seq 4
        assert_eq!(vm.duplicates, 1); // second 2
        assert_eq!(vm.out_of_order, 2); // 2 after 3, twice
        assert_eq!(vm.restarts, 1);
    }

    #[test]
    fn rates_divide_by_the_interval() {
        let mut r = row(0, 0, 0, 0, 0);
        r.stat.interval_s = 10;
        r.stat.net_rx_bytes = 30_000;
        r.stat.net_tx_bytes = 10_000;
        r.stat.disk_write_bytes = u64::MAX;
        r.stat.disk_read_bytes = 5;
        let vm = summary_of(&[r]);
        assert_eq!(vm.net_p95_bps, 4000.0);
        assert_eq!(vm.disk_p95_bps, u64::MAX as f64 / 10.0);
    }

    #[test]
    fn rates_format_in_si_units() {
        assert_eq!(fmt_rate(0.0), "0 B/s");
        assert_eq!(fmt_rate(410.4), "410 B/s");
        assert_eq!(fmt_rate(12_345.0), "12.3 kB/s");
        assert_eq!(fmt_rate(4_560_000.0), "4.6 MB/s");
    }

    fn sample_report() -> Report {
        let idle = summary_of(&steady(20, 310, 6000, 410, 0));
        let mut busy = summary_of(&steady(20, 9100, 5000, 50_000, 0));
        busy.ip = "fd00::5".parse().unwrap();
        let mut ok = summary_of(&steady(20, 5000, 6000, 50_000, 0));
        ok.ip = "127.1.0.0".parse().unwrap();
        Report::new(vec![ok, busy, idle], &Thresholds::default(), AS_OF)
    }

    #[test]
    fn report_lists_idle_first_and_sums_up() {
        let r = sample_report();
        let cats: Vec<Category> = r.vms.iter().map(|v| v.category).collect();
        assert_eq!(cats, [Category::Idle, Category::Undersized, Category::Ok]);
        assert_eq!(
            summary_line(&r),
            "3 VMs: 1 idle, 0 oversized, 1 undersized, 0 silent, 0 insufficient data, 1 ok; reclaimable now: 8 vCPUs, 16.0 GiB"
        );
    }

    #[test]
    fn table_is_aligned_with_reasons() {
        let text = render(&sample_report(), ReportFormat::Table);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 6);
        assert!(
            lines[0].starts_with("VM         CATEGORY    SAMPLES"),
            "{}",
            lines[0]
        );
        assert!(lines[1].starts_with("127.1.0.1  IDLE"), "{}", lines[1]);
        assert!(lines[1].ends_with("reclaim: p95 cpu 3.1% < 10%, net 410 B/s, disk 0 B/s"));
        assert!(lines[1].contains("3.1/3.1/3.1/3.1"), "{}", lines[1]);
        assert!(lines[2].starts_with("fd00::5    UNDERSIZED"));
        let col = lines[0].find("SAMPLES").unwrap() + "SAMPLES".len();
        assert!(lines.iter().take(4).all(|l| l.as_bytes()[col - 1] != b' '));
        assert!(lines[4].starts_with("3 VMs: 1 idle"));
        assert_eq!(
            lines[5],
            "datagrams: 0 lost, 0 duplicated, 0 out of order; 0 agent restarts"
        );
    }

    #[test]
    fn json_escapes_and_lists_every_vm() {
        assert_eq!(json_str("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
        let text = render(&sample_report(), ReportFormat::Json);
        assert!(text.starts_with(&format!(
            "{{\"as_of_ms\":{AS_OF},\"summary\":{{\"vms\":3,\"idle\":1,"
        )));
        assert_eq!(text.matches("\"ip\":").count(), 3);
        assert!(text.contains("\"category\":\"IDLE\",\"advice\":\"reclaim\""));
        assert!(text.contains("\"cpu_p95\":3.10,"));
        assert!(text.contains("\"stopped\":false}"));
    }

    #[test]
    fn csv_quotes_reasons_with_commas() {
        let text = render(&sample_report(), ReportFormat::Csv);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[0].starts_with("ip,category,advice,reason,samples,"));
        assert!(lines[1].starts_with(
            "127.1.0.1,IDLE,reclaim,\"p95 cpu 3.1% < 10%, net 410 B/s, disk 0 B/s\",20,8,16384,"
        ));
        assert_eq!(
            render(
                &Report::new(vec![], &Thresholds::default(), 0),
                ReportFormat::Csv
            ),
            ""
        );
    }

    #[test]
    fn files_skip_torn_tail_and_count_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("127.1.0.1.csv");
        let mut text = wire::CSV_HEADER.as_bytes().to_vec();
        for r in steady(6, 310, 6000, 410, 0) {
            wire::push_row(&mut text, r.recv_ms, &r.stat);
        }
        text.extend_from_slice(b"garbage\n");
        text.extend_from_slice(b"1764110400200,17641104");
        std::fs::write(&path, text).unwrap();
        std::fs::write(dir.path().join("README.txt"), "not a VM").unwrap();
        let r = build(dir.path(), &Thresholds::default(), AS_OF).unwrap();
        assert_eq!(r.vms.len(), 1);
        assert_eq!(r.vms[0].vm.samples, 6);
        assert_eq!(r.vms[0].vm.bad_rows, 1);
        assert_eq!(r.vms[0].category, Category::Idle);
    }

    #[test]
    fn a_file_without_header_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("127.1.0.9.csv");
        std::fs::write(&path, "hello\n").unwrap();
        let err = summarize_file(&path, "127.1.0.9".parse().unwrap()).unwrap_err();
        assert!(err.to_string().contains("127.1.0.9.csv"), "{err}");
        let missing = build(&dir.path().join("nope"), &Thresholds::default(), 0).unwrap_err();
        assert!(
            missing.to_string().starts_with("cannot read data dir"),
            "{missing}"
        );
    }
}
