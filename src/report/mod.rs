//! The reclamation report: which VMs are idle, oversized or undersized.
//!
//! It is built from the per-VM files alone, both at the aggregator's exit
//! and by `udp-aggregator report --data-dir`, so the live table and a second
//! opinion read the same bytes through the same code and cannot disagree,
//! and the aggregator keeps no per-VM statistics in memory while it runs.
//! A report's way, module by module:
//!
//! 1. [`scan`]: each VM's files (its live file and rotated parts, in one
//!    data dir or several), read without trusting them, for the rows in
//!    the [`Window`] (`--window`, default 14 days, before `--as-of`);
//! 2. [`summary`]: rows folded into a [`VmSummary`] in bounded memory
//!    (exact CPU and memory percentiles; nothing one spoofed datagram says
//!    taken at its word);
//! 3. `segment`: each file's rows summarized per UTC day, so a report
//!    merges the days its window covers and reads again only the days it
//!    cuts; `cache` keeps those segments under `<data-dir>/.vmstats/`
//!    between reports (derived data: deleting it costs only time),
//!    `merge` puts a VM's segments together into its summary, and
//!    [`Refresher`] keeps them current while the aggregator runs;
//! 4. [`policy`]: the [`Verdict`] on each VM, a category and typed
//!    [`Reason`]s with their numbers;
//! 5. [`render`]: the table, JSON, CSV and HTML forms of the same
//!    [`Report`].

mod cache;
mod codec;
mod merge;
pub mod policy;
mod refresh;
pub mod render;
pub mod scan;
mod segment;
pub mod summary;

use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::config::{OfflineReportConfig, Policy, Prices, ReportConfig, ReportFormat, Thresholds};
use crate::stop::Stop;

pub use policy::{Category, Reason, Rule, Verdict};
pub use refresh::Refresher;
pub use scan::Window;
pub use summary::{DaySummary, VmSummary};

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
    #[error("no VM file (<address>.csv) in {dirs} (--data-dir): nothing to report")]
    NoVmFiles { dirs: String },
}

/// One VM's line of the report.
#[derive(Debug, Clone, PartialEq)]
pub struct VmReport {
    pub vm: VmSummary,
    /// The deciding policy's verdict.
    pub verdict: Verdict,
    /// With `--policy all`: each vendor's verdict beside it.
    pub others: Vec<(Rule, Verdict)>,
    /// Whether it looked idle, for each of `vm.days`.
    pub day_idle: Vec<bool>,
    /// Estimated monthly saving, when prices were given.
    pub savings: Option<f64>,
}

impl VmReport {
    /// Days (of those with data) on which it looked idle.
    pub fn idle_days(&self) -> u64 {
        self.day_idle.iter().filter(|idle| **idle).count() as u64
    }
}

/// The whole report.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The rows it covers; SILENT is judged against its end.
    pub window: Window,
    /// The rules applied; the first decides each VM's category.
    pub rules: &'static [Rule],
    /// Whether savings were estimated (prices given).
    pub priced: bool,
    /// Ordered by category (reclaimable first), then address.
    pub vms: Vec<VmReport>,
    /// Summed once here; every renderer reads them.
    totals: Totals,
}

/// Fleet totals. Every sum saturates: a spoofed figure of 2^64-1 must not
/// wrap a total around to something that looks plausible.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    pub lost: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub restarts: u64,
    pub seq_jumps: u64,
    /// Rows received earlier than the row before them in a file.
    pub recv_backwards: u64,
    /// What the IDLE VMs hold.
    pub reclaimable_vcpus: u64,
    pub reclaimable_mem_mib: u64,
    /// Estimated monthly savings of the fleet (0 without prices).
    pub savings: f64,
}

impl Report {
    pub fn new(
        summaries: Vec<VmSummary>,
        t: &Thresholds,
        policy: Policy,
        prices: Option<Prices>,
        window: Window,
    ) -> Report {
        let rules = Rule::of(policy);
        let mut vms: Vec<VmReport> = summaries
            .into_iter()
            .map(|vm| {
                let verdict = policy::judge_by(rules[0], &vm, t, window.as_of_ms);
                let others = rules[1..]
                    .iter()
                    .map(|r| (*r, policy::judge_by(*r, &vm, t, window.as_of_ms)))
                    .collect();
                let savings = prices.map(|p| policy::monthly_savings(&vm, verdict.category, p));
                let day_idle = vm.days.iter().map(|d| policy::idle_day(d, t)).collect();
                VmReport {
                    vm,
                    verdict,
                    others,
                    day_idle,
                    savings,
                }
            })
            .collect();
        vms.sort_by_key(|v| (v.verdict.category, v.vm.ip));
        let totals = totals_of(&vms);
        Report {
            window,
            rules,
            priced: prices.is_some(),
            vms,
            totals,
        }
    }

    pub fn count(&self, c: Category) -> usize {
        self.vms.iter().filter(|v| v.verdict.category == c).count()
    }

    pub fn totals(&self) -> Totals {
        self.totals
    }
}

/// The fleet's totals over its VMs' reports.
fn totals_of(vms: &[VmReport]) -> Totals {
    vms.iter().fold(Totals::default(), |t, v| {
        let idle = v.verdict.category == Category::Idle;
        let held = |x: u64| if idle { x } else { 0 };
        Totals {
            lost: t.lost.saturating_add(v.vm.lost),
            duplicates: t.duplicates.saturating_add(v.vm.duplicates),
            out_of_order: t.out_of_order.saturating_add(v.vm.out_of_order),
            restarts: t.restarts.saturating_add(v.vm.restarts),
            seq_jumps: t.seq_jumps.saturating_add(v.vm.seq_jumps),
            recv_backwards: t.recv_backwards.saturating_add(v.vm.recv_backwards),
            reclaimable_vcpus: t
                .reclaimable_vcpus
                .saturating_add(held(u64::from(v.vm.vcpus))),
            reclaimable_mem_mib: t
                .reclaimable_mem_mib
                .saturating_add(held(u64::from(v.vm.mem_mib))),
            savings: t.savings + v.savings.unwrap_or(0.0),
        }
    })
}

/// What a report says in numbers, for the metrics endpoint.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Figures {
    /// When the window ended.
    pub as_of_ms: u64,
    /// VMs in each of [`Category::ALL`].
    pub vms: [u64; Category::ALL.len()],
    pub totals: Totals,
}

impl Report {
    pub fn figures(&self) -> Figures {
        Figures {
            as_of_ms: self.window.as_of_ms,
            vms: Category::ALL.map(|c| self.count(c) as u64),
            totals: self.totals(),
        }
    }
}

/// The figures of the latest report the aggregator made while running
/// (`None` before the first), shared with the metrics endpoint.
pub type Published = std::sync::Arc<std::sync::Mutex<Option<Figures>>>;

/// Builds the report of every VM in `data_dirs` (merged by address), over
/// the configured window before `as_of_ms`. Files that cannot be read are
/// reported on stderr and left out, so one bad file hides nothing else.
pub fn build(
    data_dirs: &[PathBuf],
    cfg: &ReportConfig,
    as_of_ms: u64,
) -> Result<Report, ReportError> {
    build_all(data_dirs, cfg, as_of_ms, Files::MayBeNone)
}

/// [`build`] on all cores, with or without VM files required.
fn build_all(
    data_dirs: &[PathBuf],
    cfg: &ReportConfig,
    as_of_ms: u64,
    files: Files,
) -> Result<Report, ReportError> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) * READERS_PER_CORE;
    let report = build_with(data_dirs, cfg, as_of_ms, threads, None, files)?;
    Ok(report.expect("a report without a stop is never stopped"))
}

/// Whether data dirs without any VM file are an error (`report` over a
/// wrong dir) or an empty report (an aggregator that received nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Files {
    Required,
    MayBeNone,
}

/// [`build`] on `threads` reading threads, given up (`None`) when `stop`
/// is requested before every VM was read.
fn build_with(
    data_dirs: &[PathBuf],
    cfg: &ReportConfig,
    as_of_ms: u64,
    threads: usize,
    stop: Option<&Stop>,
    files: Files,
) -> Result<Option<Report>, ReportError> {
    let window = Window::before(as_of_ms, cfg.window.length());
    let vms: Vec<_> = scan::vm_files(data_dirs)?.into_iter().collect();
    if vms.is_empty() && files == Files::Required {
        let dirs: Vec<String> = data_dirs.iter().map(|d| d.display().to_string()).collect();
        return Err(ReportError::NoVmFiles {
            dirs: dirs.join(", "),
        });
    }
    let with_files: std::collections::HashSet<&Path> = vms
        .iter()
        .flat_map(|(_, parts)| parts.iter().filter_map(|p| p.path.parent()))
        .collect();
    let caches = cache::CacheDirs::open(data_dirs, &with_files);
    let summaries = cache::with_writer(&caches, |writes| {
        summarize_all(&vms, &window, &caches, writes, threads, stop)
    });
    caches.prune(&vms.iter().flat_map(|(_, parts)| parts).collect::<Vec<_>>());
    if stop.is_some_and(Stop::requested) {
        return Ok(None);
    }
    Ok(Some(Report::new(
        summaries,
        &cfg.thresholds,
        cfg.policy,
        cfg.prices(),
        window,
    )))
}

/// Reading threads per core: with the files cold the scan waits on the
/// disk, and more reads in flight keep it busy; warm, the extra threads
/// cost nothing measurable.
const READERS_PER_CORE: usize = 2;

/// Every VM's summary, on `threads` threads: each takes the next VM off a
/// shared counter, so a few long histories do not leave a core idle, and
/// memory stays one VM's summary per thread. Stops taking VMs when `stop`
/// is requested.
fn summarize_all(
    vms: &[(IpAddr, Vec<scan::Part>)],
    window: &Window,
    caches: &cache::CacheDirs,
    writes: crossbeam_channel::Sender<cache::EntryWrite>,
    threads: usize,
    stop: Option<&Stop>,
) -> Vec<VmSummary> {
    let next = AtomicUsize::new(0);
    let threads = threads.clamp(1, vms.len().max(1));
    let quiet = crate::is_quiet();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    crate::quietly(quiet, || {
                        let mut done = Vec::new();
                        let mut scratch = merge::Scratch::new(writes.clone());
                        while let Some((ip, parts)) = vms.get(next.fetch_add(1, Ordering::Relaxed))
                        {
                            if stop.is_some_and(Stop::requested) {
                                break;
                            }
                            done.extend(merge::summarize_vm(
                                *ip,
                                parts,
                                window,
                                caches,
                                &mut scratch,
                            ));
                        }
                        done
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a report thread panicked"))
            .collect()
    })
}

/// `udp-aggregator report`: the report of a data dir, from its files alone.
pub fn offline(cfg: &OfflineReportConfig) -> Result<(), ReportError> {
    cfg.report.validate()?;
    let as_of = cfg.as_of.unwrap_or_else(crate::unix_ms);
    // An empty or mistaken dir is an error, not an empty table.
    let report = build_all(&cfg.data_dirs, &cfg.report, as_of, Files::Required)?;
    write(&report, cfg.report.format, cfg.report.file.as_deref())
}

/// Writes the rendered report to `file`, or stdout when `None`.
pub fn write(r: &Report, format: ReportFormat, file: Option<&Path>) -> Result<(), ReportError> {
    let text = render::render(r, format);
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
    use super::render::{reasons_text, render, summary_line};
    use super::summary::Accumulator;
    use super::*;
    use crate::wire::{self, Row, Stat};

    const AS_OF: u64 = 1_000_000_000;

    fn window() -> Window {
        Window::before(AS_OF, None)
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
        let v = policy::judge(&summary_of(rows), &Thresholds::default(), AS_OF);
        (v.category, reasons_text(&v.reasons))
    }

    fn steady(n: u64, cpu: u16, mem: u16, net: u64, disk: u64) -> Vec<Row> {
        (0..n).map(|s| row(s, cpu, mem, net, disk)).collect()
    }

    #[test]
    fn percentiles_are_nearest_rank_and_exact() {
        let rows: Vec<Row> = (1..=100).map(|s| row(s, s as u16 * 100, 0, s, 0)).collect();
        let vm = summary_of(&rows);
        assert_eq!(
            (vm.cpu_p50, vm.cpu_p95, vm.cpu_p99, vm.cpu_max),
            (50.0, 95.0, 99.0, 100.0)
        );
        assert_eq!(vm.net_p95_bps, 95.0);
        assert_eq!(summary_of(&[row(0, 777, 0, 0, 0)]).cpu_p95, 7.77);
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
        // One row's peak decides, and the reason says it rests on one
        // sample (it could be one forged version 1 datagram).
        let mut rows = steady(20, 5000, 5000, 50_000, 0);
        rows[3].stat.mem_pct_x100 = 9500;
        let (c, why) = category_of(&rows);
        assert_eq!(
            (c, why.as_str()),
            (Category::Undersized, "max mem 95.0% > 90% (one sample)")
        );
        rows[7].stat.mem_pct_x100 = 9500;
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
        let v = policy::judge(&vm, &Thresholds::default(), AS_OF);
        assert_eq!(v.category, Category::Idle);
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
        assert_eq!(vm.samples, 8, "the repeated (boot_id, seq) counts once");
        assert_eq!(vm.lost, 1); // seq 4
        assert_eq!(vm.duplicates, 1); // second 2
        assert_eq!(vm.out_of_order, 1); // 2 after 3
        assert_eq!(vm.restarts, 1);
        assert_eq!(vm.seq_jumps, 0);
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
        // Within the histogram's 0.1 %.
        let expected = u64::MAX as f64 / 10.0;
        assert!(
            (vm.disk_p95_bps - expected).abs() / expected < 0.001,
            "{}",
            vm.disk_p95_bps
        );
    }

    // Section 6 of the report issue: one spoofed datagram must not change
    // a verdict.

    #[test]
    fn one_datagram_claiming_a_long_interval_does_not_keep_a_vm_from_silent() {
        let mut rows = steady(10, 5000, 5000, 10_000, 0);
        for r in &mut rows {
            r.recv_ms = AS_OF - 181_000;
        }
        rows[9].stat.interval_s = 3600;
        let vm = summary_of(&rows);
        assert_eq!(vm.interval_s, 60, "the most frequent interval");
        assert_eq!(category_of(&rows).0, Category::Silent);
    }

    #[test]
    fn a_final_flag_from_another_boot_does_not_count() {
        let mut rows = steady(10, 5000, 5000, 10_000, 0);
        for r in &mut rows {
            r.recv_ms = AS_OF - 181_000;
        }
        let mut spoof = row(10, 5000, 5000, 10_000, 0);
        spoof.recv_ms = AS_OF - 181_000;
        spoof.stat.flags = wire::FLAG_FINAL;
        spoof.stat.boot_id = 0xBAD;
        rows.push(spoof);
        assert!(!summary_of(&rows).stopped);
        assert_eq!(category_of(&rows).0, Category::Silent);
    }

    #[test]
    fn one_datagram_claiming_a_huge_size_is_not_the_size() {
        let mut rows = steady(20, 310, 6000, 410, 0);
        rows[5].stat.vcpus = 65_535;
        rows[5].stat.mem_mib = u32::MAX;
        let vm = summary_of(&rows);
        assert_eq!((vm.vcpus, vm.mem_mib), (8, 16_384));
        assert_eq!(vm.size_changes, 2, "to the spoofed size and back");
        assert_eq!(vm.last_size_change_ms, Some(rows[6].recv_ms));
    }

    #[test]
    fn a_seq_of_two_to_the_64_is_a_jump_not_trillions_lost() {
        let mut rows = steady(10, 0, 0, 0, 0);
        let mut spoof = row(10, 0, 0, 0, 0);
        spoof.stat.seq = u64::MAX;
        rows.push(spoof);
        let vm = summary_of(&rows);
        assert_eq!(vm.lost, 0);
        assert_eq!(vm.seq_jumps, 1);
        // A plausible gap is still loss: 10 intervals of 60 s span 600 s.
        let mut rows = steady(3, 0, 0, 0, 0);
        let mut late = row(20, 0, 0, 0, 0);
        late.recv_ms += 20 * 60_000;
        rows.push(late);
        let vm = summary_of(&rows);
        assert_eq!((vm.lost, vm.seq_jumps), (17, 0));
    }

    #[test]
    fn a_repeated_datagram_counts_once_in_every_figure() {
        let mut rows = steady(10, 310, 6000, 410, 0);
        for _ in 0..30 {
            let mut copy = row(4, 9900, 9900, 0, 0);
            copy.recv_ms += 1;
            rows.push(copy);
        }
        let vm = summary_of(&rows);
        assert_eq!(vm.samples, 10);
        assert_eq!(vm.duplicates, 30);
        assert_eq!(vm.cpu_max, 3.1, "the copies never reached the percentiles");
    }

    #[test]
    fn fleet_totals_saturate() {
        let mut a = summary_of(&steady(20, 310, 6000, 410, 0));
        a.lost = u64::MAX - 1;
        a.vcpus = u16::MAX;
        let mut b = a.clone();
        b.ip = "127.1.0.2".parse().unwrap();
        b.lost = 5;
        let r = Report::new(
            vec![a, b],
            &Thresholds::default(),
            Policy::Vmstats,
            None,
            window(),
        );
        let t = r.totals();
        assert_eq!(t.lost, u64::MAX);
        assert_eq!(t.reclaimable_vcpus, 2 * u64::from(u16::MAX));
    }

    fn sample_report() -> Report {
        let idle = summary_of(&steady(20, 310, 6000, 410, 0));
        let mut busy = summary_of(&steady(20, 9100, 5000, 50_000, 0));
        busy.ip = "fd00::5".parse().unwrap();
        let mut ok = summary_of(&steady(20, 5000, 6000, 50_000, 0));
        ok.ip = "127.1.0.0".parse().unwrap();
        Report::new(
            vec![ok, busy, idle],
            &Thresholds::default(),
            Policy::Vmstats,
            None,
            window(),
        )
    }

    #[test]
    fn report_lists_idle_first_and_sums_up() {
        let r = sample_report();
        let cats: Vec<Category> = r.vms.iter().map(|v| v.verdict.category).collect();
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
            "datagrams: 0 lost, 0 duplicated, 0 out of order, 0 seq jumps; 0 agent restarts"
        );
    }

    #[test]
    fn json_names_fields_as_the_advisors_do() {
        let text = render(&sample_report(), ReportFormat::Json);
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["as_of_ms"], AS_OF);
        assert_eq!(json["lookback_days"], serde_json::Value::Null);
        assert_eq!(json["summary"]["vms"], 3);
        assert_eq!(json["summary"]["idle"], 1);
        let vm = &json["vms"][0];
        assert_eq!(vm["ip"], "127.1.0.1");
        assert_eq!(vm["finding"], "IDLE");
        assert_eq!(vm["advice"], "reclaim");
        assert_eq!(vm["reasons"][0]["code"], "cpu_p95_below");
        assert_eq!(vm["reasons"][0]["value"], 3.1);
        assert_eq!(vm["reasons"][0]["threshold"], 10.0);
        assert_eq!(vm["reason"], "p95 cpu 3.1% < 10%, net 410 B/s, disk 0 B/s");
        assert_eq!(vm["utilization"]["cpu_p95"], 3.1);
        assert_eq!(vm["size"]["vcpus"], 8);
        assert_eq!(vm["datagrams"]["samples"], 20);
        assert_eq!(vm["stopped"], false);
    }

    #[test]
    fn csv_quotes_reasons_with_commas() {
        let text = render(&sample_report(), ReportFormat::Csv);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(
            lines[0].starts_with("ip,finding,advice,reason,samples,"),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].starts_with(
                "127.1.0.1,IDLE,reclaim,\"p95 cpu 3.1% < 10%, net 410 B/s, disk 0 B/s\",20,1,1,8,16384,"
            ),
            "{}",
            lines[1]
        );
        let empty = Report::new(
            vec![],
            &Thresholds::default(),
            Policy::Vmstats,
            None,
            window(),
        );
        assert_eq!(render(&empty, ReportFormat::Csv), "");
    }

    fn dirs(dir: &tempfile::TempDir) -> Vec<PathBuf> {
        vec![dir.path().to_path_buf()]
    }

    fn report_cfg(window: Option<std::time::Duration>) -> ReportConfig {
        ReportConfig {
            window: window.map_or(crate::config::Lookback::All, crate::config::Lookback::Last),
            ..ReportConfig::default()
        }
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
        let r = build(&dirs(&dir), &report_cfg(None), AS_OF).unwrap();
        assert_eq!(r.vms.len(), 1);
        assert_eq!(r.vms[0].vm.samples, 6);
        assert_eq!(r.vms[0].vm.bad_rows, 1);
        assert_eq!(r.vms[0].verdict.category, Category::Idle);
    }

    #[test]
    fn the_window_takes_only_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let mut text = wire::CSV_HEADER.as_bytes().to_vec();
        // 10 busy rows two days ago, then 10 idle rows in the last hour.
        for mut r in steady(10, 9500, 5000, 50_000, 0) {
            r.stat.boot_id = 6;
            wire::push_row(&mut text, r.recv_ms - 2 * 86_400_000, &r.stat);
        }
        for r in steady(10, 310, 5000, 410, 0) {
            wire::push_row(&mut text, r.recv_ms, &r.stat);
        }
        std::fs::write(dir.path().join("127.1.0.1.csv"), text).unwrap();
        let day = Some(std::time::Duration::from_secs(86_400));
        let r = build(&dirs(&dir), &report_cfg(day), AS_OF).unwrap();
        assert_eq!(r.vms[0].vm.samples, 10);
        assert_eq!(r.vms[0].verdict.category, Category::Idle);
        let r = build(&dirs(&dir), &report_cfg(None), AS_OF).unwrap();
        assert_eq!(r.vms[0].vm.samples, 20);
        // Nothing after --as-of: a report of the past is repeatable.
        let r = build(&dirs(&dir), &report_cfg(None), AS_OF - 86_400_000).unwrap();
        assert_eq!(r.vms[0].vm.samples, 10);
        assert_eq!(r.vms[0].verdict.category, Category::Silent);
    }

    #[test]
    fn a_file_without_header_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("127.1.0.9.csv");
        std::fs::write(&path, "hello\n").unwrap();
        let part = scan::Part { path, gzip: false };
        let mut acc = Accumulator::default();
        let err = scan::read_part(&part, &window(), &mut acc).unwrap_err();
        assert!(err.to_string().contains("127.1.0.9.csv"), "{err}");
        let nope = [dir.path().join("nope")];
        let missing = build(&nope, &report_cfg(None), 0).unwrap_err();
        assert!(
            missing.to_string().starts_with("cannot read data dir"),
            "{missing}"
        );
    }

    /// A VM file holding `rows`, with the header.
    fn file_text(rows: &[Row]) -> Vec<u8> {
        let mut text = wire::CSV_HEADER.as_bytes().to_vec();
        for r in rows {
            wire::push_row(&mut text, r.recv_ms, &r.stat);
        }
        text
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(bytes).unwrap();
        gz.finish().unwrap()
    }

    #[test]
    fn rotated_parts_and_gzip_are_one_history() {
        let dir = tempfile::tempdir().unwrap();
        let rows = steady(30, 310, 5000, 410, 0);
        let d = dir.path();
        std::fs::write(d.join("127.1.0.1.csv.2.gz"), gzip(&file_text(&rows[..10]))).unwrap();
        std::fs::write(d.join("127.1.0.1.csv-20261125"), file_text(&rows[10..20])).unwrap();
        std::fs::write(d.join("127.1.0.1.csv"), file_text(&rows[20..])).unwrap();
        let r = build(&dirs(&dir), &report_cfg(None), AS_OF).unwrap();
        assert_eq!(r.vms.len(), 1);
        let vm = &r.vms[0].vm;
        assert_eq!((vm.samples, vm.lost, vm.duplicates), (30, 0, 0));
    }

    #[test]
    fn a_part_last_written_before_the_window_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("127.1.0.1.csv.1");
        // Junk that would fail the header check, were it read.
        std::fs::write(&old, "not a vmstats file\n").unwrap();
        let long_ago =
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(AS_OF - 3 * 86_400_000);
        std::fs::File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
        std::fs::write(
            dir.path().join("127.1.0.1.csv"),
            file_text(&steady(6, 310, 5000, 410, 0)),
        )
        .unwrap();
        let part = scan::Part {
            path: old,
            gzip: false,
        };
        let day = Window::before(AS_OF, Some(std::time::Duration::from_secs(86_400)));
        assert!(scan::read_part(&part, &day, &mut Accumulator::default()).is_ok());
        assert!(scan::read_part(&part, &window(), &mut Accumulator::default()).is_err());
    }

    #[test]
    fn two_data_dirs_count_each_datagram_once() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let rows = steady(20, 310, 5000, 410, 0);
        // Each aggregator missed a different datagram; A also got one twice.
        let mut in_a: Vec<Row> = rows.iter().filter(|r| r.stat.seq != 5).copied().collect();
        in_a.push(rows[7]);
        let in_b: Vec<Row> = rows.iter().filter(|r| r.stat.seq != 12).copied().collect();
        std::fs::write(a.path().join("127.1.0.1.csv"), file_text(&in_a)).unwrap();
        std::fs::write(b.path().join("127.1.0.1.csv"), file_text(&in_b)).unwrap();
        let both = [a.path().to_path_buf(), b.path().to_path_buf()];
        let r = build(&both, &report_cfg(None), AS_OF).unwrap();
        assert_eq!(r.vms.len(), 1);
        let vm = &r.vms[0].vm;
        assert_eq!(vm.samples, 20, "every datagram once");
        assert_eq!(vm.lost, 0, "what one missed, the other has");
        assert_eq!(vm.duplicates, 1, "only the repeat within A");
        assert_eq!(vm.out_of_order, 0, "a repeat is a duplicate, not also late");
        let only_a = build(&dirs(&a), &report_cfg(None), AS_OF).unwrap();
        assert_eq!((only_a.vms[0].vm.samples, only_a.vms[0].vm.lost), (19, 1));
    }

    #[test]
    fn savings_are_all_of_an_idle_vm_and_half_of_an_oversized_one() {
        let idle = summary_of(&steady(20, 310, 6000, 410, 0));
        let mut over = summary_of(&steady(20, 2200, 3100, 50_000, 0));
        over.ip = "127.1.0.2".parse().unwrap();
        let mut ok = summary_of(&steady(20, 5000, 6000, 50_000, 0));
        ok.ip = "127.1.0.3".parse().unwrap();
        // 8 vCPUs at 20 and 16 GiB at 2.5 a month: 200 a VM.
        let prices = Prices {
            vcpu_month: 20.0,
            gib_month: 2.5,
        };
        let r = Report::new(
            vec![idle, over, ok],
            &Thresholds::default(),
            Policy::Vmstats,
            Some(prices),
            window(),
        );
        let saved: Vec<Option<f64>> = r.vms.iter().map(|v| v.savings).collect();
        assert_eq!(saved, [Some(200.0), Some(100.0), Some(0.0)]);
        assert_eq!(r.totals().savings, 300.0);
        assert!(
            summary_line(&r).ends_with("; estimated savings 300.00 a month"),
            "{}",
            summary_line(&r)
        );
        let table = render(&r, ReportFormat::Table);
        assert!(table.lines().next().unwrap().contains("SAVE/MONTH"));
        let json: serde_json::Value =
            serde_json::from_str(&render(&r, ReportFormat::Json)).unwrap();
        assert_eq!(json["vms"][0]["estimated_monthly_savings"], 200.0);
        assert_eq!(json["summary"]["estimated_monthly_savings"], 300.0);
        // Without prices, no money anywhere.
        let plain = sample_report();
        assert!(!render(&plain, ReportFormat::Table).contains("SAVE"));
        let json: serde_json::Value =
            serde_json::from_str(&render(&plain, ReportFormat::Json)).unwrap();
        assert!(json["vms"][0]["estimated_monthly_savings"].is_null());
    }

    #[test]
    fn each_utc_day_has_its_figures_and_idle_days_are_counted() {
        // Three days of a VM: busy, idle, idle (10 rows a day).
        let day0 = (AS_OF / summary::DAY_MS - 3) * summary::DAY_MS;
        let mut rows = Vec::new();
        for (d, cpu) in [(0u64, 9000u16), (1, 300), (2, 310)] {
            for i in 0..10 {
                let mut r = row(d * 10 + i, cpu, 2000 + i as u16, 100, 0);
                r.recv_ms = day0 + d * summary::DAY_MS + i * 60_000;
                rows.push(r);
            }
        }
        let vm = summary_of(&rows);
        assert_eq!(vm.days.len(), 3);
        assert_eq!(vm.days[0].day, day0 / summary::DAY_MS);
        assert_eq!(
            (vm.days[0].samples, vm.days[0].cpu_p95, vm.days[0].cpu_max),
            (10, 90.0, 90.0)
        );
        assert_eq!(vm.days[1].cpu_avg, 3.0);
        assert_eq!(vm.days[2].mem_max, 20.09);
        // 100 B/s for 10 minutes a day: 60,000 bytes, still 100 B/s.
        assert_eq!(
            (vm.days[1].net_bytes, vm.days[1].net_bps()),
            (60_000, 100.0)
        );
        let r = Report::new(
            vec![vm],
            &Thresholds::default(),
            Policy::Vmstats,
            None,
            window(),
        );
        assert_eq!(r.vms[0].idle_days(), 2);
        let table = render(&r, ReportFormat::Table);
        assert!(table.lines().nth(1).unwrap().contains(" 2/3 "), "{table}");
        let json: serde_json::Value =
            serde_json::from_str(&render(&r, ReportFormat::Json)).unwrap();
        assert_eq!(json["vms"][0]["idle_days"], 2);
        assert_eq!(json["vms"][0]["days_with_data"], 3);
        assert_eq!(json["vms"][0]["days"][1]["idle"], true);
        assert_eq!(json["vms"][0]["days"][0]["cpu_p95"], 90.0);
        assert_eq!(
            json["vms"][0]["days"][0]["date"],
            render::date_of_day(day0 / summary::DAY_MS)
        );
    }

    #[test]
    fn day_numbers_become_dates() {
        assert_eq!(render::date_of_day(0), "1970-01-01");
        assert_eq!(render::date_of_day(20_418), "2025-11-26");
        assert_eq!(render::date_of_day(11_016), "2000-02-29");
    }

    /// The end of [`fortnight`]'s last day, the moment it is judged at.
    const FORTNIGHT_END: u64 = 34 * summary::DAY_MS - 1;

    /// 14 days of a 4-vCPU VM, 24 rows a day (hourly), ending at
    /// FORTNIGHT_END; `day_shape(day)` gives that day's cpu x100 and per-row
    /// rx and tx bytes.
    fn fortnight(day_shape: impl Fn(u64) -> (u16, u64, u64)) -> VmSummary {
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
        summary_of(&rows)
    }

    fn finding(rule: Rule, vm: &VmSummary) -> (Category, Vec<Reason>) {
        let v = policy::judge_by(rule, vm, &Thresholds::default(), FORTNIGHT_END);
        (v.category, v.reasons)
    }

    #[test]
    fn aws_wants_four_low_days_of_average_cpu_and_network() {
        // Four quiet days (5 % CPU, 100 kB a day), ten busy ones.
        let quiet = |d: u64| {
            if d < 4 {
                (500, 2_000, 2_000)
            } else {
                (6000, 1_000_000, 1_000_000)
            }
        };
        let (c, reasons) = finding(Rule::Aws, &fortnight(quiet));
        assert_eq!(c, Category::Idle);
        assert_eq!(
            reasons,
            [Reason::AwsLowDays {
                days: 4,
                of_days: 14,
                min_days: 4
            }]
        );
        let three = |d: u64| {
            if d < 3 {
                (500, 2_000, 2_000)
            } else {
                (6000, 1_000_000, 1_000_000)
            }
        };
        assert_eq!(finding(Rule::Aws, &fortnight(three)).0, Category::Ok);
        // 5 MB a day is the line: 24 rows of 250 kB are 6 MB, not low.
        let chatty = |_| (500, 125_000, 125_000);
        assert_eq!(finding(Rule::Aws, &fortnight(chatty)).0, Category::Ok);
    }

    #[test]
    fn azure_wants_p95_under_3_and_a_quiet_last_three_days() {
        let idle = |_| (100, 1_000, 1_000);
        let (c, reasons) = finding(Rule::Azure, &fortnight(idle));
        assert_eq!(c, Category::Idle);
        assert_eq!(reasons.len(), 3);
        // A 2.5 % day yesterday (7 % of the samples, so the p95): under
        // the 3 % line, over the 2 % one of the last three days. The load
        // fits half the VM, so Azure would resize it instead.
        let busy_yesterday = |d: u64| {
            if d == 12 {
                (250, 1_000, 1_000)
            } else {
                (100, 1_000, 1_000)
            }
        };
        let (c, reasons) = finding(Rule::Azure, &fortnight(busy_yesterday));
        assert_eq!(c, Category::Oversized);
        assert_eq!(
            reasons,
            [Reason::AzureFitsHalf {
                cpu_p95: 2.5,
                mem_p99: 20.0
            }]
        );
        assert_eq!(
            finding(Rule::Azure, &fortnight(|_| (5000, 1_000, 1_000))).0,
            Category::Ok
        );
    }

    #[test]
    fn gcp_counts_vcpus_and_each_direction_of_traffic() {
        // 0.5 % of 4 vCPUs is 0.02 vCPU: idle by Google's line.
        let (c, _) = finding(Rule::Gcp, &fortnight(|_| (50, 3_600_000, 360_000)));
        assert_eq!(c, Category::Idle);
        // 1 % of 4 vCPUs is 0.04 vCPU: not idle for Google, yet idle for
        // vmstats (p95 1 % < 10 %, 1.1 kB/s): the policies disagree.
        let vm = fortnight(|_| (100, 3_600_000, 360_000));
        assert_eq!(finding(Rule::Gcp, &vm).0, Category::Ok);
        assert_eq!(finding(Rule::Vmstats, &vm).0, Category::Idle);
        // Sent traffic has its own line: 1,000 B/s.
        let sending = fortnight(|_| (50, 3_600_000, 7_200_000));
        assert_eq!(finding(Rule::Gcp, &sending).0, Category::Ok);
    }

    #[test]
    fn policy_all_shows_where_they_disagree() {
        // 1 % of 4 vCPUs, 1.1 kB/s: idle for vmstats and Azure; 95 MB a
        // day is no low day for AWS; 0.04 vCPU is too busy for Google.
        let vm = fortnight(|_| (100, 3_600_000, 360_000));
        let end = Window::before(FORTNIGHT_END, None);
        let r = Report::new(vec![vm], &Thresholds::default(), Policy::All, None, end);
        let v = &r.vms[0];
        assert_eq!(v.verdict.category, Category::Idle, "vmstats decides");
        let others: Vec<(Rule, Category)> =
            v.others.iter().map(|(r, v)| (*r, v.category)).collect();
        assert_eq!(
            others,
            [
                (Rule::Aws, Category::Ok),
                (Rule::Azure, Category::Idle),
                (Rule::Gcp, Category::Ok)
            ]
        );
        let table = render(&r, ReportFormat::Table);
        let head = table.lines().next().unwrap();
        assert!(
            head.starts_with("VM         CATEGORY  AWS  AZURE  GCP  SAMPLES"),
            "{head}"
        );
        let json: serde_json::Value =
            serde_json::from_str(&render(&r, ReportFormat::Json)).unwrap();
        assert_eq!(json["policy"], "vmstats");
        assert_eq!(json["vms"][0]["findings_by_policy"]["gcp"], "OK");
        assert_eq!(json["vms"][0]["findings_by_policy"]["aws"], "OK");
        let csv = render(&r, ReportFormat::Csv);
        assert!(csv.lines().next().unwrap().ends_with(",aws,azure,gcp"));
        assert!(
            csv.lines().nth(1).unwrap().ends_with(",OK,IDLE,OK"),
            "{csv}"
        );
    }

    #[test]
    fn csv_and_json_carry_every_count_of_the_summary() {
        let vm = fortnight(|_| (100, 1_000, 1_000));
        let end = Window::before(FORTNIGHT_END, None);
        let r = Report::new(vec![vm], &Thresholds::default(), Policy::Vmstats, None, end);
        let csv = render(&r, ReportFormat::Csv);
        let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
        let json: serde_json::Value =
            serde_json::from_str(&render(&r, ReportFormat::Json)).unwrap();
        let datagrams = &json["vms"][0]["datagrams"];
        for key in [
            "lost",
            "duplicates",
            "out_of_order",
            "restarts",
            "seq_jumps",
            "bad_rows",
            "recv_backwards",
        ] {
            assert!(header.contains(&key), "CSV lacks {key}: {header:?}");
            assert!(datagrams.get(key).is_some(), "JSON lacks {key}");
        }
        assert!(header.contains(&"last_size_change_ms"), "{header:?}");
        assert!(header.contains(&"size_changes"), "{header:?}");
    }

    #[test]
    fn html_is_one_page_with_rows_charts_and_no_outside_fetch() {
        let idle = fortnight(|_| (100, 1_000, 1_000));
        let mut busy = fortnight(|d| (5000 + d as u16 * 100, 1_000_000, 1_000_000));
        busy.ip = "127.1.0.2".parse().unwrap();
        let end = Window::before(
            FORTNIGHT_END,
            Some(std::time::Duration::from_secs(14 * 86_400)),
        );
        let prices = Some(Prices {
            vcpu_month: 10.0,
            gib_month: 1.0,
        });
        let r = Report::new(
            vec![idle, busy],
            &Thresholds::default(),
            Policy::All,
            prices,
            end,
        );
        let page = render(&r, ReportFormat::Html);
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert_eq!(page.matches("<tr data-cat=").count(), 2);
        assert_eq!(page.matches("<svg class=\"chart\"").count(), 2);
        assert!(page.contains("id=\"savings\""));
        assert!(page.contains("<th id=\"th-p1\">aws</th>"));
        // Nothing from outside: no URL to load a script, style or font from.
        for outside in ["http://", "https://", "src=", "@import", "url("] {
            assert!(!page.contains(outside), "{outside}");
        }
        // Text is escaped.
        assert!(!page.contains("<= 40"), "a raw < in text");
        // The summary once (the cards), the datagram totals once; each VM
        // with its accounting and when it was last seen.
        assert!(
            !page.contains("2 VMs: "),
            "the summary line repeats the cards"
        );
        assert_eq!(page.matches("datagrams: 0 lost").count(), 1);
        assert!(page.contains("<th id=\"th-datagrams\">Lost/dup/ooo/rst</th>"));
        assert!(page.contains("<th id=\"th-seen\">Seen</th>"));
        assert!(page.contains("<td data-v=\"0\">0/0/0/0</td>"));
    }

    #[test]
    fn a_one_day_chart_is_framed_dots_not_a_flat_line() {
        let mut one_day = summary_of(&[row(0, 4000, 2000, 0, 0), row(1, 6000, 2000, 0, 0)]);
        assert_eq!(one_day.days.len(), 1);
        one_day.ip = "127.1.0.3".parse().unwrap();
        let r = Report::new(
            vec![one_day, fortnight(|_| (100, 1_000, 1_000))],
            &Thresholds::default(),
            Policy::Vmstats,
            None,
            Window::before(FORTNIGHT_END, None),
        );
        let page = render(&r, ReportFormat::Html);
        let chart_of = |ip: &str| {
            let row = &page[page.find(&format!("<td data-v=\"{ip}\">")).unwrap()..];
            row[row.find("<svg").unwrap()..row.find("</svg>").unwrap()].to_string()
        };
        let one = chart_of("127.1.0.3");
        assert!(one.contains("<rect class=\"frame\""), "{one}");
        assert_eq!(one.matches("<circle ").count(), 3, "{one}");
        assert!(!one.contains("<polyline"), "{one}");
        let many = chart_of("127.1.0.1");
        assert_eq!(many.matches("<polyline ").count(), 3, "{many}");
        assert!(!many.contains("<circle"), "{many}");
    }

    #[test]
    fn a_one_day_window_reads_about_a_fourteenth_of_fourteen_days() {
        let dir = tempfile::tempdir().unwrap();
        let now = 40 * summary::DAY_MS;
        let cfg = crate::config::SimConfig {
            count: 1,
            interval: std::time::Duration::from_secs(60),
            days: 14.0,
            ..crate::config::SimConfig::default()
        };
        crate::sim::history::write(&cfg, dir.path(), now).unwrap();
        let path = dir.path().join("127.1.0.1.csv");
        let len = std::fs::metadata(&path).unwrap().len();
        let day = Window::before(now, Some(std::time::Duration::from_secs(86_400)));
        let plain = scan::Part {
            path: path.clone(),
            gzip: false,
        };
        let mut seeking = Accumulator::default();
        let read = scan::read_part(&plain, &day, &mut seeking).unwrap();
        assert!(
            read < len / 14 + 2 * scan::SEEK_SPAN,
            "read {read} of {len}"
        );
        // The same rows as a full read (gzip cannot seek).
        let gz_path = dir.path().join("127.1.0.1.csv.1.gz");
        std::fs::write(&gz_path, gzip(&std::fs::read(&path).unwrap())).unwrap();
        let packed = scan::Part {
            path: gz_path,
            gzip: true,
        };
        let mut full = Accumulator::default();
        let header = wire::CSV_HEADER.len() as u64;
        assert!(scan::read_part(&packed, &day, &mut full).unwrap() >= len - header);
        let ip = "127.1.0.1".parse().unwrap();
        let (a, b) = (seeking.finish(ip).unwrap(), full.finish(ip).unwrap());
        assert_eq!(a.samples, 24 * 60);
        assert_eq!(a, b);
    }
}
