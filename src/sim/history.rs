//! A history without the wait: writes the files an aggregator would have
//! written for `--count` simulated VMs reporting every `--interval` over
//! the last `--days`, straight to contract files in `--write-dir`. Tests
//! and benchmarks of the report cover 14 days this way in seconds.
//!
//! Each VM keeps its simulator profile (idle, steady, busy, bursty,
//! oversized by index and seed), its phase within the interval, and one
//! boot for the whole history; rows are received 50 ms after their sample.

use std::fs::{DirBuilder, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::config::SimConfig;
use crate::store::DEFAULT_FILE_MODE;
use crate::wire;

use super::{SimError, SimVm};

/// What a history run wrote.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistorySummary {
    pub vms: u32,
    pub rows: u64,
    pub bytes: u64,
    pub elapsed_s: f64,
}

/// `udp-vmsim: wrote vms=... rows=... bytes=... elapsed_s=...`.
pub fn summary_line(r: &HistorySummary) -> String {
    format!(
        "udp-vmsim: wrote vms={} rows={} bytes={} elapsed_s={:.2}",
        r.vms, r.rows, r.bytes, r.elapsed_s
    )
}

/// Delay between a sample and its receipt.
const ARRIVAL_MS: u64 = 50;

/// Writes every VM's history ending at `now_ms` into `dir`, on all cores.
/// A VM file that exists already is an error: appending an invented past
/// to real data would corrupt both.
pub fn write(cfg: &SimConfig, dir: &Path, now_ms: u64) -> Result<HistorySummary, SimError> {
    cfg.validate()?;
    let err = |error: io::Error| SimError::History {
        path: dir.to_path_buf(),
        error,
    };
    DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(dir)
        .map_err(err)?;
    let std::net::IpAddr::V4(base) = cfg.src_base else {
        unreachable!("validate() insists on IPv4");
    };
    let started = Instant::now();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    let per = cfg.count.div_ceil(threads);
    let results: Vec<Result<(u64, u64), SimError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (from, to) = (t * per, ((t + 1) * per).min(cfg.count));
                scope.spawn(move || {
                    let mut totals = (0u64, 0u64);
                    for i in from..to {
                        let src = Ipv4Addr::from(u32::from(base) + i);
                        let (rows, bytes) = write_vm(cfg, dir, i, src, now_ms)?;
                        totals.0 += rows;
                        totals.1 += bytes;
                    }
                    Ok(totals)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a history thread panicked"))
            .collect()
    });
    let mut summary = HistorySummary {
        vms: cfg.count,
        ..HistorySummary::default()
    };
    for r in results {
        let (rows, bytes) = r?;
        summary.rows += rows;
        summary.bytes += bytes;
    }
    summary.elapsed_s = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// One VM's file: its rows from `now_ms - days` to `now_ms`.
fn write_vm(
    cfg: &SimConfig,
    dir: &Path,
    index: u32,
    src: Ipv4Addr,
    now_ms: u64,
) -> Result<(u64, u64), SimError> {
    let path: PathBuf = dir.join(wire::file_name(src.into()));
    let err = |error: io::Error| SimError::History {
        path: path.clone(),
        error,
    };
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(DEFAULT_FILE_MODE)
        .open(&path)
        .map_err(err)?;
    let mut out = BufWriter::with_capacity(256 << 10, file);
    out.write_all(wire::CSV_HEADER.as_bytes()).map_err(err)?;
    let interval_ms = (cfg.interval.as_millis() as u64).max(1);
    let span_ms = (cfg.days * 86_400_000.0) as u64;
    // Phases spread evenly over the interval, as live VMs' are.
    let phase = u64::from(index) * interval_ms / u64::from(cfg.count);
    let boot_id = (u64::from(index) ^ cfg.seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) as u32;
    let mut vm = SimVm::new(index, src, cfg.seed, boot_id);
    let interval_s = cfg.interval_s();
    let mut row = Vec::with_capacity(wire::MAX_ROW_LEN);
    let (mut rows, mut bytes) = (0u64, wire::CSV_HEADER.len() as u64);
    let mut t = now_ms.saturating_sub(span_ms) + phase;
    while t + ARRIVAL_MS <= now_ms {
        let stat = vm.next_stat(interval_s, t, false);
        row.clear();
        wire::push_row(&mut row, t + ARRIVAL_MS, &stat);
        out.write_all(&row).map_err(err)?;
        rows += 1;
        bytes += row.len() as u64;
        t += interval_ms;
    }
    out.flush().map_err(err)?;
    Ok((rows, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_fortnight_of_files_reads_back_as_valid_rows() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = SimConfig {
            count: 5,
            interval: Duration::from_secs(3600),
            days: 14.0,
            ..SimConfig::default()
        };
        let now = 40 * 86_400_000;
        let r = write(&cfg, dir.path(), now).unwrap();
        assert_eq!(r.vms, 5);
        assert_eq!(r.rows, 5 * 14 * 24);
        for i in 1..=5u8 {
            let path = dir.path().join(format!("127.1.0.{i}.csv"));
            let text = std::fs::read_to_string(&path).unwrap();
            let mut lines = text.lines();
            assert_eq!(lines.next().unwrap(), wire::CSV_HEADER.trim_end());
            let rows: Vec<wire::Row> = lines.map(|l| wire::parse_row(l).unwrap()).collect();
            assert_eq!(rows.len(), 14 * 24);
            assert!(
                rows.windows(2)
                    .all(|w| w[1].recv_ms == w[0].recv_ms + 3_600_000)
            );
            assert!(
                rows.iter()
                    .all(|r| r.recv_ms <= now && r.stat.interval_s == 3600)
            );
            assert!(rows.iter().enumerate().all(|(n, r)| r.stat.seq == n as u64));
        }
        // Never over existing data.
        let again = write(&cfg, dir.path(), now).unwrap_err();
        assert!(again.to_string().contains("127.1.0.1.csv"), "{again}");
    }
}
