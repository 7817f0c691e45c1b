//! `udp-aggregator export`: a data dir as the Parquet datasets the engines
//! read (DuckDB, ClickHouse, Trino, Spark), partitioned by UTC day:
//!
//! - `rows/date=YYYY-MM-DD/<shard>.parquet`: every accepted datagram of
//!   the day, each (`boot_id`, `seq`) of a VM once, typed
//!   ([`parquet`](self::parquet) has the schemas);
//! - `vm_days/date=YYYY-MM-DD/<shard>.parquet`: each VM's day as the
//!   report summarizes it (samples, CPU average, p95 and max, memory max,
//!   bytes, the idle flag, the day's size): small enough to ship from
//!   every shard to one place.
//!
//! Incremental: the summary store says which bytes of which files hold
//! each day ([`days`](crate::report::days)) and a fingerprint of them; a
//! day whose fingerprint is the one in the shard's [`manifest`] (and whose
//! files are there) is not read or written again. A day that changed
//! (rows appended, a late row, a second data dir merged) is written
//! whole under a temporary name and renamed over the old file, so a
//! reader sees one or the other. Days the window no longer reaches are
//! left as they are: an export with a short window adds to the dataset,
//! it does not trim it.
//!
//! A datagram received twice on two different days (a replay across
//! midnight) is in each day's `rows`, where the report counts it once:
//! each day is written from that day's bytes alone.

pub mod manifest;
mod parquet;

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use ::parquet::data_type::ByteArray;
use ::parquet::errors::ParquetError;

use crate::config::{ConfigError, ExportConfig, ReportConfig};
use crate::report::days::{self, Day, DayPlan};
use crate::report::render::date_of_day;
use crate::report::summary::{self, Accumulator};
use crate::report::{ReportError, Settings, Window, policy};

use self::manifest::{DayRecord, Manifest};
use self::parquet::{RowsFile, VmDaysFile};

/// The datasets' directories in `--out`.
pub const ROWS: &str = "rows";
pub const VM_DAYS: &str = "vm_days";

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error("cannot write {path} (--out): {error}")]
    Write { path: PathBuf, error: io::Error },
    #[error("cannot write {path} (--out): {error}")]
    Parquet { path: PathBuf, error: ParquetError },
    #[error("{path}: not this shard's export manifest ({why}); remove it to export anew")]
    Manifest { path: PathBuf, why: String },
}

/// What an export did.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Exported {
    pub shard: String,
    pub vms: usize,
    /// Days with rows in the window.
    pub days: usize,
    /// Of those, the days written (new or changed).
    pub days_written: usize,
    /// Rows and VM-days in the days written.
    pub rows: u64,
    pub vm_days: u64,
    pub elapsed_s: f64,
}

/// The line `udp-aggregator export` prints.
pub fn summary_line(e: &Exported) -> String {
    format!(
        "export: shard={} vms={} days={} days_written={} days_unchanged={} rows={} vm_days={} elapsed_s={:.2}",
        e.shard,
        e.vms,
        e.days,
        e.days_written,
        e.days - e.days_written,
        e.rows,
        e.vm_days,
        e.elapsed_s
    )
}

/// Exports `cfg.data_dirs` into `cfg.out`.
pub fn export(cfg: &ExportConfig) -> Result<Exported, ExportError> {
    let started = Instant::now();
    cfg.validate()?;
    let shard = match &cfg.shard {
        Some(name) => name.clone(),
        None => default_shard(&cfg.data_dirs),
    };
    let settings = Settings::new(&ReportConfig {
        thresholds: cfg.thresholds.clone(),
        ..ReportConfig::default()
    })?;
    let as_of = cfg.as_of.unwrap_or_else(crate::unix_ms);
    let window = Window::before(as_of, cfg.window.length());
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let plan = days::plan(&cfg.data_dirs, window, threads)?;
    if plan.vms.is_empty() {
        let dirs: Vec<String> = cfg
            .data_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        return Err(ReportError::NoVmFiles {
            dirs: dirs.join(", "),
        }
        .into());
    }
    let manifest_path = manifest::path_of(&cfg.out, &shard);
    let mut manifest = Manifest::load(&manifest_path, &shard)?;
    // The idle flag depends on the thresholds: other thresholds, other days.
    let settings_print = crate::report::fingerprint(&[format!("{:?}", cfg.thresholds).as_bytes()]);
    let out = Out {
        dir: &cfg.out,
        shard: &shard,
    };
    let dirty: Vec<(u64, &Day, String)> = plan
        .days
        .iter()
        .map(|(day, d)| (*day, d, fingerprint_hex(d.fingerprint ^ settings_print)))
        .filter(|(day, _, print)| {
            let date = date_of_day(*day);
            let same = manifest
                .days
                .get(&date)
                .is_some_and(|r| &r.fingerprint == print);
            !(same && out.path(ROWS, &date).is_file() && out.path(VM_DAYS, &date).is_file())
        })
        .collect();
    let written = Mutex::new(Vec::new());
    let next = AtomicUsize::new(0);
    let quiet = crate::is_quiet();
    std::thread::scope(|scope| {
        for _ in 0..threads.clamp(1, dirty.len().max(1)) {
            scope.spawn(|| {
                crate::quietly(quiet, || {
                    while let Some((day, d, print)) =
                        dirty.get(next.fetch_add(1, Ordering::Relaxed))
                    {
                        let result = write_day(&plan, *day, d, &settings, &out);
                        let mut w = written.lock().expect("no panic holds it");
                        w.push(result.map(|record| (date_of_day(*day), record, print.clone())));
                    }
                })
            });
        }
    });
    let (mut rows, mut vm_days) = (0, 0);
    let mut first_error = None;
    for result in written.into_inner().expect("no panic holds it") {
        match result {
            Ok((date, mut record, print)) => {
                rows += record.rows;
                vm_days += record.vms;
                record.fingerprint = print;
                manifest.days.insert(date, record);
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    // The days written are recorded even when another failed; with none
    // written the manifest stays as it was, like every other file.
    if !dirty.is_empty() {
        manifest.save(&manifest_path)?;
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    Ok(Exported {
        shard,
        vms: plan.vms.len(),
        days: plan.days.len(),
        days_written: dirty.len(),
        rows,
        vm_days,
        elapsed_s: started.elapsed().as_secs_f64(),
    })
}

/// The shard's name when none is given: a hash of the data dirs' absolute
/// paths, the same on every export of the same dirs.
fn default_shard(data_dirs: &[PathBuf]) -> String {
    let mut paths: Vec<u8> = Vec::new();
    for dir in data_dirs {
        let abs = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
        paths.extend_from_slice(abs.as_os_str().as_encoded_bytes());
        paths.push(0);
    }
    format!(
        "shard-{}",
        fingerprint_hex(crate::report::fingerprint(&[&paths]))
    )
}

fn fingerprint_hex(print: u64) -> String {
    format!("{print:016x}")
}

/// Where one shard's files go.
struct Out<'a> {
    dir: &'a Path,
    shard: &'a str,
}

impl Out<'_> {
    fn path(&self, dataset: &str, date: &str) -> PathBuf {
        self.dir
            .join(dataset)
            .join(format!("date={date}"))
            .join(format!("{}.parquet", self.shard))
    }

    /// The path of `dataset`'s file of `date`, its directory made.
    fn make(&self, dataset: &str, date: &str) -> Result<PathBuf, ExportError> {
        let path = self.path(dataset, date);
        let dir = path.parent().expect("a file in a directory");
        std::fs::create_dir_all(dir).map_err(|error| ExportError::Write {
            path: dir.to_path_buf(),
            error,
        })?;
        Ok(path)
    }
}

/// What `vm_days` asks of a VM-day's summary: its day, not the sizes the
/// report's rules would show, which would rightsize every VM-day (each
/// rule's catalog search) for figures the export throws away.
struct DaysOnly {
    cpu_percentile: f64,
}

impl summary::Probe for DaysOnly {
    fn cpu_percentile(&self) -> f64 {
        self.cpu_percentile
    }

    fn sizes(&self, _: &summary::VmSummary) -> Vec<(u32, f64)> {
        Vec::new()
    }
}

/// Writes one day's two files from its pieces: each VM's rows of the day,
/// its datagrams once each (the first read, in the report's part order),
/// and its day's summary. Returns the rows and VMs written.
fn write_day(
    plan: &DayPlan,
    day: u64,
    d: &Day,
    settings: &Settings,
    out: &Out,
) -> Result<DayRecord, ExportError> {
    let date = date_of_day(day);
    let rows_path = out.make(ROWS, &date)?;
    let days_path = out.make(VM_DAYS, &date)?;
    let parquet_err = |path: &Path| {
        let path = path.to_path_buf();
        move |error| ExportError::Parquet { path, error }
    };
    let mut rows = RowsFile::create(&rows_path).map_err(parquet_err(&rows_path))?;
    let mut vm_days = VmDaysFile::create(&days_path).map_err(parquet_err(&days_path))?;
    let probe = DaysOnly {
        cpu_percentile: settings.rightsizing.cpu_percentile,
    };
    let mut record = DayRecord {
        fingerprint: String::new(),
        rows: 0,
        vms: 0,
    };
    let mut seen = HashSet::new();
    let mut acc = Accumulator::default();
    for pieces in d.pieces.chunk_by(|a, b| a.vm == b.vm) {
        let (ip, parts) = &plan.vms[pieces[0].vm];
        let name = ByteArray::from(ip.to_string().as_str());
        seen.clear();
        acc.reset();
        let mut part_before = None;
        for piece in pieces {
            let part = &parts[piece.part];
            if part_before != Some(piece.part) {
                acc.start_file();
                part_before = Some(piece.part);
            }
            let mut failed = None;
            let read = days::each_row(part, piece, day, &plan.window, |row| {
                if failed.is_none() && seen.insert((row.stat.boot_id, row.stat.seq)) {
                    acc.add(row);
                    record.rows += 1;
                    if let Err(e) = rows.push(&name, row) {
                        failed = Some(e);
                    }
                }
            });
            if let Some(e) = failed {
                return Err(parquet_err(&rows_path)(e));
            }
            if let Err(e) = read {
                crate::log_line(&format!("warning: {e}; file left out of the export"));
            }
        }
        let Some(vm) = acc.finish(*ip, &probe) else {
            continue;
        };
        if let Some(summary) = vm.days.iter().find(|s| s.day == day) {
            let idle = policy::idle_day(summary, &settings.thresholds);
            vm_days
                .push(&name, summary, idle, &vm.size)
                .map_err(parquet_err(&days_path))?;
            record.vms += 1;
        }
    }
    rows.finish().map_err(parquet_err(&rows_path))?;
    vm_days.finish().map_err(parquet_err(&days_path))?;
    Ok(record)
}
