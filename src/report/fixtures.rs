//! What the report's unit tests build their VMs and reports from: rows
//! of a known shape, their summary and verdict, a fortnight of days, and
//! files on disk.

use std::path::PathBuf;

use super::policy::{self, Probe, Reason, Rule};
use super::render::reasons_text;
use super::summary::{self, Accumulator, VmSummary};
use super::{Category, Report, Settings, Window};
use crate::config::{Policy, Prices, ReportConfig};
use crate::wire::{self, Row, Stat};

pub(crate) const AS_OF: u64 = 1_000_000_000;

pub(crate) fn window() -> Window {
    Window::before(AS_OF, None)
}

pub(crate) fn row(seq: u64, cpu_x100: u16, mem_x100: u16, net: u64, disk: u64) -> Row {
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
        verified: false,
    }
}

/// The settings of `--policy` and per-unit `prices`, every other flag at
/// its default.
pub(crate) fn settings(policy: Policy, prices: Option<Prices>) -> Settings {
    Settings::new(&ReportConfig {
        policy,
        price_vcpu_month: prices.map(|p| p.vcpu_month),
        price_gib_month: prices.map(|p| p.gib_month),
        ..ReportConfig::default()
    })
    .unwrap()
}

/// The summary of `rows` as a report by `settings` at `as_of_ms` makes it.
pub(crate) fn summary_with(rows: &[Row], settings: &Settings, as_of_ms: u64) -> VmSummary {
    let mut acc = Accumulator::default();
    rows.iter().for_each(|r| acc.add(r));
    let probe = Probe { settings, as_of_ms };
    acc.finish("127.1.0.1".parse().unwrap(), &probe).unwrap()
}

/// Every policy's probe at [`AS_OF`], owning its settings.
pub(crate) struct AllRules(Settings);

impl summary::Probe for AllRules {
    fn cpu_percentile(&self) -> f64 {
        self.0.rightsizing.cpu_percentile
    }

    fn sizes(&self, vm: &VmSummary) -> Vec<(u32, f64)> {
        let probe = Probe {
            settings: &self.0,
            as_of_ms: AS_OF,
        };
        summary::Probe::sizes(&probe, vm)
    }
}

pub(crate) fn probe() -> AllRules {
    AllRules(settings(Policy::All, None))
}

/// `acc`'s summary as [`summary_of`] makes it.
pub(crate) fn finish(acc: &Accumulator, ip: std::net::IpAddr) -> Option<VmSummary> {
    acc.finish(ip, &probe())
}

/// The summary of `rows`, probed for every policy's sizes (no catalog).
pub(crate) fn summary_of(rows: &[Row]) -> VmSummary {
    summary_with(rows, &settings(Policy::All, None), AS_OF)
}

pub(crate) fn category_of(rows: &[Row]) -> (Category, String) {
    let v = policy::judge(&summary_of(rows), &settings(Policy::Vmstats, None), AS_OF);
    (v.category, reasons_text(&v.reasons))
}

pub(crate) fn steady(n: u64, cpu: u16, mem: u16, net: u64, disk: u64) -> Vec<Row> {
    (0..n).map(|s| row(s, cpu, mem, net, disk)).collect()
}

pub(crate) fn sample_report() -> Report {
    let idle = summary_of(&steady(20, 310, 6000, 410, 0));
    let mut busy = summary_of(&steady(20, 9100, 5000, 50_000, 0));
    busy.ip = "fd00::5".parse().unwrap();
    let mut ok = summary_of(&steady(20, 5000, 6000, 50_000, 0));
    ok.ip = "127.1.0.0".parse().unwrap();
    Report::new(
        vec![ok, busy, idle],
        &settings(Policy::Vmstats, None),
        window(),
    )
}

pub(crate) fn dirs(dir: &tempfile::TempDir) -> Vec<PathBuf> {
    vec![dir.path().to_path_buf()]
}

pub(crate) fn report_cfg(window: Option<std::time::Duration>) -> Settings {
    Settings::new(&ReportConfig {
        window: window.map_or(crate::config::Lookback::All, crate::config::Lookback::Last),
        ..ReportConfig::default()
    })
    .unwrap()
}

/// A VM file holding `rows`, with the header.
pub(crate) fn file_text(rows: &[Row]) -> Vec<u8> {
    let mut text = wire::CSV_HEADER.as_bytes().to_vec();
    for r in rows {
        wire::push_row(&mut text, r.recv_ms, &r.stat);
    }
    text
}

pub(crate) fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// The end of [`fortnight`]'s last day, the moment it is judged at.
pub(crate) const FORTNIGHT_END: u64 = 34 * summary::DAY_MS - 1;

/// 14 days of a 4-vCPU VM, 24 rows a day (hourly), ending at
/// FORTNIGHT_END; `day_shape(day)` gives that day's cpu x100 and per-row
/// rx and tx bytes.
pub(crate) fn fortnight(day_shape: impl Fn(u64) -> (u16, u64, u64)) -> VmSummary {
    let first_day = FORTNIGHT_END / summary::DAY_MS - 13;
    let mut rows = Vec::new();
    for d in 0..14u64 {
        let (cpu, rx, tx) = day_shape(d);
        for h in 0..24u64 {
            let recv_ms = (first_day + d) * summary::DAY_MS + h * 3_600_000;
            let mut r = row(d * 24 + h, cpu, 2000, 0, 0);
            r.recv_ms = recv_ms;
            r.stat.interval_s = 3600;
            r.stat.vcpus = 4;
            r.stat.net_rx_bytes = rx;
            r.stat.net_tx_bytes = tx;
            rows.push(r);
        }
    }
    summary_with(&rows, &settings(Policy::All, None), FORTNIGHT_END)
}

pub(crate) fn finding(rule: Rule, vm: &VmSummary) -> (Category, Vec<Reason>) {
    let v = policy::judge_by(rule, vm, &settings(Policy::All, None), FORTNIGHT_END);
    (v.category, v.reasons)
}
