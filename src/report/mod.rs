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
//!    [`Reason`]s with their numbers, and [`rightsize`]: the size each
//!    rule recommends (from `catalog`, the operator's price list, when
//!    given), its risk and what it saves, all by the checked [`Settings`];
//! 5. [`render`]: the table, JSON, CSV and HTML forms of the same
//!    [`Report`].

mod cache;
pub use cache::DIR_NAME as CACHE_DIR;
pub use cache::checksum_of as fingerprint;
pub mod catalog;
mod codec;
pub mod days;
mod merge;
pub mod policy;
mod refresh;
pub mod render;
pub mod rightsize;
pub mod scan;
mod segment;
pub mod served;
mod settings;
pub mod summary;

use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::config::{OfflineReportConfig, ReportFormat};
use crate::stop::Stop;

pub use catalog::CatalogError;
pub use policy::{Category, Reason, Rule, Verdict};
pub use refresh::Refresher;
pub use scan::Window;
pub use settings::Settings;
pub use summary::{DaySummary, VmSummary};

/// A report that could not be built or written, with the path at fault.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
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
    /// Estimated monthly saving by the deciding verdict (negative: what
    /// growing costs), when its prices are known.
    pub savings: Option<f64>,
}

impl VmReport {
    /// The VM judged by every rule `s` applies, at `as_of_ms`.
    pub fn new(vm: VmSummary, s: &Settings, as_of_ms: u64) -> VmReport {
        let rules = Rule::of(s.policy);
        let verdict = policy::judge_by(rules[0], &vm, s, as_of_ms);
        let others = rules[1..]
            .iter()
            .map(|r| (*r, policy::judge_by(*r, &vm, s, as_of_ms)))
            .collect();
        let savings = if s.prices.priced() {
            policy::monthly_savings(&verdict)
        } else {
            None
        };
        let day_idle = vm
            .days
            .iter()
            .map(|d| policy::idle_day(d, &s.thresholds))
            .collect();
        VmReport {
            vm,
            verdict,
            others,
            day_idle,
            savings,
        }
    }

    /// Whether the deciding verdict moves the VM to another size.
    pub fn moves(&self) -> bool {
        self.verdict.move_target().is_some()
    }

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
    /// Whether savings were estimated (prices or a catalog given).
    pub priced: bool,
    /// Ordered by category (reclaimable first), then address. Boxed: at a
    /// million VMs, joining the reading threads' lists and sorting them
    /// moved 720 MB of reports where it now moves 8 MB of pointers.
    pub vms: Vec<Box<VmReport>>,
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
    /// VMs whose recommended size is another than today's.
    pub moves: u64,
    /// Estimated monthly savings of the fleet: reclaimed and shrunk VMs
    /// (0 without prices)...
    pub savings: f64,
    /// ...and what growing the undersized ones costs.
    pub growth_cost: f64,
}

impl Report {
    pub fn new(summaries: Vec<VmSummary>, s: &Settings, window: Window) -> Report {
        let vms = summaries
            .into_iter()
            .map(|vm| Box::new(VmReport::new(vm, s, window.as_of_ms)))
            .collect();
        Report::of(vms, s, window)
    }

    /// The report of VMs already judged by `s` (on the reading threads).
    fn of(mut vms: Vec<Box<VmReport>>, s: &Settings, window: Window) -> Report {
        // Addresses are unique: an unstable sort gives the one order.
        vms.sort_unstable_by_key(|v| (v.verdict.category, v.vm.ip));
        let totals = totals_of(&vms);
        Report {
            window,
            rules: Rule::of(s.policy),
            priced: s.prices.priced(),
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
fn totals_of(vms: &[Box<VmReport>]) -> Totals {
    vms.iter()
        .fold(Totals::default(), |t, v| t.plus(&Totals::of(v)))
}

impl Totals {
    /// One VM's part of the totals.
    fn of(v: &VmReport) -> Totals {
        let idle = v.verdict.category == Category::Idle;
        let held = |x: u64| if idle { x } else { 0 };
        let d = &v.vm.datagrams;
        Totals {
            lost: d.lost,
            duplicates: d.duplicates,
            out_of_order: d.out_of_order,
            restarts: d.restarts,
            seq_jumps: d.seq_jumps,
            recv_backwards: d.recv_backwards,
            reclaimable_vcpus: held(u64::from(v.vm.size.vcpus)),
            reclaimable_mem_mib: held(u64::from(v.vm.size.mem_mib)),
            moves: u64::from(v.moves()),
            savings: v.savings.unwrap_or(0.0).max(0.0),
            growth_cost: -v.savings.unwrap_or(0.0).min(0.0),
        }
    }

    fn plus(self, o: &Totals) -> Totals {
        Totals {
            lost: self.lost.saturating_add(o.lost),
            duplicates: self.duplicates.saturating_add(o.duplicates),
            out_of_order: self.out_of_order.saturating_add(o.out_of_order),
            restarts: self.restarts.saturating_add(o.restarts),
            seq_jumps: self.seq_jumps.saturating_add(o.seq_jumps),
            recv_backwards: self.recv_backwards.saturating_add(o.recv_backwards),
            reclaimable_vcpus: self.reclaimable_vcpus.saturating_add(o.reclaimable_vcpus),
            reclaimable_mem_mib: self
                .reclaimable_mem_mib
                .saturating_add(o.reclaimable_mem_mib),
            moves: self.moves + o.moves,
            savings: self.savings + o.savings,
            growth_cost: self.growth_cost + o.growth_cost,
        }
    }
}

/// What a pass over the VMs keeps of each one's report: all of them (a
/// report to render), or only what the metrics show ([`Tally`]: the
/// refresher's, which at a million VMs would otherwise hold a gigabyte of
/// reports it never shows).
trait Keep: Default + Send {
    fn keep(&mut self, vm: VmReport);
    fn join(&mut self, other: Self);
}

impl Keep for Vec<Box<VmReport>> {
    fn keep(&mut self, vm: VmReport) {
        self.push(Box::new(vm));
    }

    fn join(&mut self, other: Self) {
        if self.is_empty() {
            *self = other;
        } else {
            self.extend(other);
        }
    }
}

/// VMs per category and the totals, VM by VM.
#[derive(Default)]
struct Tally {
    vms: [u64; Category::ALL.len()],
    totals: Totals,
}

impl Keep for Tally {
    fn keep(&mut self, vm: VmReport) {
        let at = Category::ALL.iter().position(|c| *c == vm.verdict.category);
        self.vms[at.expect("every category is in ALL")] += 1;
        self.totals = self.totals.plus(&Totals::of(&vm));
    }

    fn join(&mut self, other: Self) {
        for (n, m) in self.vms.iter_mut().zip(other.vms) {
            *n += m;
        }
        self.totals = self.totals.plus(&other.totals);
    }
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
    settings: &Settings,
    as_of_ms: u64,
) -> Result<Report, ReportError> {
    build_all(data_dirs, settings, as_of_ms, Files::MayBeNone)
}

/// [`build`] on all cores, with or without VM files required.
fn build_all(
    data_dirs: &[PathBuf],
    settings: &Settings,
    as_of_ms: u64,
    files: Files,
) -> Result<Report, ReportError> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) * READERS_PER_CORE;
    let built =
        build_with::<Vec<Box<VmReport>>>(data_dirs, settings, as_of_ms, threads, None, files)?;
    let (vms, window) = built.expect("a report without a stop is never stopped");
    Ok(Report::of(vms, settings, window))
}

/// The report of `data_dirs` on one thread, or `None` when `stop` came
/// first: what the refresher serves.
fn report_with(
    data_dirs: &[PathBuf],
    settings: &Settings,
    as_of_ms: u64,
    stop: &Stop,
) -> Result<Option<Report>, ReportError> {
    let built = in_background::<Vec<Box<VmReport>>>(data_dirs, settings, as_of_ms, stop)?;
    Ok(built.map(|(vms, window)| Report::of(vms, settings, window)))
}

/// The figures of the report of `data_dirs` (keeping no VM's report), or
/// `None` when `stop` came first: what the refresher publishes.
fn figures_with(
    data_dirs: &[PathBuf],
    settings: &Settings,
    as_of_ms: u64,
    stop: &Stop,
) -> Result<Option<Figures>, ReportError> {
    let built = in_background::<Tally>(data_dirs, settings, as_of_ms, stop)?;
    Ok(built.map(|(tally, window)| Figures {
        as_of_ms: window.as_of_ms,
        vms: tally.vms,
        totals: tally.totals,
    }))
}

/// Whether data dirs without any VM file are an error (`report` over a
/// wrong dir) or an empty report (an aggregator that received nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Files {
    Required,
    MayBeNone,
}

/// The refresher's pass: one reading thread, given up at `stop`.
fn in_background<K: Keep>(
    data_dirs: &[PathBuf],
    settings: &Settings,
    as_of_ms: u64,
    stop: &Stop,
) -> Result<Option<(K, Window)>, ReportError> {
    build_with::<K>(
        data_dirs,
        settings,
        as_of_ms,
        1,
        Some(stop),
        Files::MayBeNone,
    )
}

/// [`build`] on `threads` reading threads, keeping what `K` keeps of each
/// VM, given up (`None`) when `stop` is requested before every VM was read.
fn build_with<K: Keep>(
    data_dirs: &[PathBuf],
    settings: &Settings,
    as_of_ms: u64,
    threads: usize,
    stop: Option<&Stop>,
    files: Files,
) -> Result<Option<(K, Window)>, ReportError> {
    let window = Window::before(as_of_ms, settings.window);
    let probe = policy::Probe { settings, as_of_ms };
    let vms = scan::vm_files(data_dirs)?;
    if vms.is_empty() && files == Files::Required {
        let dirs: Vec<String> = data_dirs.iter().map(|d| d.display().to_string()).collect();
        return Err(ReportError::NoVmFiles {
            dirs: dirs.join(", "),
        });
    }
    let caches = cache::CacheDirs::open(data_dirs, &scan::dirs_with_files(&vms));
    let judged = cache::with_writer(&caches, stop, |writes| {
        summarize_all::<K>(&vms, &window, &probe, &caches, writes, threads, stop)
    });
    if stop.is_some_and(Stop::requested) {
        return Ok(None);
    }
    Ok(Some((judged, window)))
}

/// Reading threads per core: with the files cold the scan waits on the
/// disk, and more reads in flight keep it busy; warm, the extra threads
/// cost nothing measurable.
const READERS_PER_CORE: usize = 2;

/// Every VM's summary, judged and kept by `K`, on `threads` threads: each
/// takes the next VM off a shared counter, so a few long histories do not
/// leave a core idle, and memory stays one VM's summary per thread. Stops
/// taking VMs when `stop` is requested.
fn summarize_all<K: Keep>(
    vms: &[(IpAddr, Vec<scan::Part>)],
    window: &Window,
    probe: &policy::Probe,
    caches: &cache::CacheDirs,
    writes: crossbeam_channel::Sender<cache::EntryWrite>,
    threads: usize,
    stop: Option<&Stop>,
) -> K {
    let next = AtomicUsize::new(0);
    let threads = threads.clamp(1, vms.len().max(1));
    let quiet = crate::is_quiet();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    crate::quietly(quiet, || {
                        let mut done = K::default();
                        let mut scratch = merge::Scratch::new(writes.clone());
                        while let Some((ip, parts)) = vms.get(next.fetch_add(1, Ordering::Relaxed))
                        {
                            if stop.is_some_and(Stop::requested) {
                                break;
                            }
                            let vm = merge::summarize_vm(
                                *ip,
                                parts,
                                window,
                                probe,
                                caches,
                                &mut scratch,
                            );
                            if let Some(vm) = vm {
                                done.keep(VmReport::new(vm, probe.settings, window.as_of_ms));
                            }
                        }
                        done
                    })
                })
            })
            .collect();
        handles.into_iter().fold(K::default(), |mut all, h| {
            all.join(h.join().expect("a report thread panicked"));
            all
        })
    })
}

/// `udp-aggregator report`: the report of a data dir, from its files alone.
pub fn offline(cfg: &OfflineReportConfig) -> Result<(), ReportError> {
    let settings = Settings::new(&cfg.report)?;
    let as_of = cfg.as_of.unwrap_or_else(crate::unix_ms);
    // An empty or mistaken dir is an error, not an empty table.
    let report = build_all(&cfg.data_dirs, &settings, as_of, Files::Required)?;
    let written = write(&report, cfg.report.format, cfg.report.file.as_deref());
    // The command exits next, and the system takes the memory back at
    // once: freeing a million reports one allocation at a time took half
    // a second of the cached million-VM report.
    std::mem::forget(report);
    written
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
mod fixtures;

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::render::{render, summary_line};
    use super::summary::Accumulator;
    use super::*;
    use crate::config::{Policy, ReportFormat};
    use crate::wire::{self, Row};

    #[test]
    fn fleet_totals_saturate() {
        let mut a = summary_of(&steady(20, 310, 6000, 410, 0));
        a.datagrams.lost = u64::MAX - 1;
        a.size.vcpus = u16::MAX;
        let mut b = a.clone();
        b.ip = "127.1.0.2".parse().unwrap();
        b.datagrams.lost = 5;
        let r = Report::new(vec![a, b], &settings(Policy::Vmstats, None), window());
        let t = r.totals();
        assert_eq!(t.lost, u64::MAX);
        assert_eq!(t.reclaimable_vcpus, 2 * u64::from(u16::MAX));
    }

    #[test]
    fn report_lists_idle_first_and_sums_up() {
        let r = sample_report();
        let cats: Vec<Category> = r.vms.iter().map(|v| v.verdict.category).collect();
        assert_eq!(cats, [Category::Idle, Category::Undersized, Category::Ok]);
        assert_eq!(
            summary_line(&r),
            "3 VMs: 1 idle, 0 oversized, 1 undersized, 0 silent, 0 insufficient data, 1 ok; reclaimable now: 8 vCPUs, 16.0 GiB; 1 to resize"
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
        let r = build(&dirs(&dir), &report_cfg(None), AS_OF).unwrap();
        assert_eq!(r.vms.len(), 1);
        assert_eq!(r.vms[0].vm.datagrams.samples, 6);
        assert_eq!(r.vms[0].vm.datagrams.bad_rows, 1);
        assert_eq!(r.vms[0].verdict.category, Category::Idle);
    }

    #[test]
    fn a_vm_proven_by_some_rows_is_judged_by_those_alone() {
        let dir = tempfile::tempdir().unwrap();
        let mut text = wire::CSV_HEADER.as_bytes().to_vec();
        // A busy VM sending version 2, and 40 forged "idle" version 1 rows
        // for its address (another boot, so none is a duplicate).
        for r in steady(20, 9000, 5000, 50_000, 0) {
            wire::push_row_of(&mut text, r.recv_ms, &r.stat, true);
        }
        for mut r in steady(40, 100, 5000, 0, 0) {
            r.stat.boot_id = 99;
            wire::push_row_of(&mut text, r.recv_ms + 100, &r.stat, false);
        }
        std::fs::write(dir.path().join("127.1.0.1.csv"), &text).unwrap();
        let r = build(&dirs(&dir), &report_cfg(None), AS_OF).unwrap();
        let v = &r.vms[0];
        let d = &v.vm.datagrams;
        assert_eq!(
            (d.samples, d.authenticated, d.unauthenticated_rows),
            (20, 20, 40)
        );
        assert_eq!(v.verdict.category, Category::Undersized, "not IDLE");
        assert_eq!(v.vm.utilization.cpu_p95, 90.0);
        // Cached, the same.
        assert_eq!(build(&dirs(&dir), &report_cfg(None), AS_OF).unwrap(), r);
        let table = render(&r, ReportFormat::Table);
        assert!(table.contains("(40 rows without proof ignored)"), "{table}");
        // A VM with no verified row is judged on what it has, unless the
        // report requires proof.
        let other = tempfile::tempdir().unwrap();
        let plain = file_text(&steady(20, 100, 5000, 0, 0));
        std::fs::write(other.path().join("127.1.0.2.csv"), plain).unwrap();
        let r = build(&dirs(&other), &report_cfg(None), AS_OF).unwrap();
        assert_eq!(r.vms[0].verdict.category, Category::Idle);
        assert_eq!(r.vms[0].vm.datagrams.authenticated, 0);
        let strict = Settings::new(&crate::config::ReportConfig {
            require_auth: true,
            window: crate::config::Lookback::All,
            ..crate::config::ReportConfig::default()
        })
        .unwrap();
        assert!(build(&dirs(&other), &strict, AS_OF).unwrap().vms.is_empty());
        let r = build(&dirs(&dir), &strict, AS_OF).unwrap();
        assert_eq!(r.vms[0].vm.datagrams.samples, 20);
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
        assert_eq!(r.vms[0].vm.datagrams.samples, 10);
        assert_eq!(r.vms[0].verdict.category, Category::Idle);
        let r = build(&dirs(&dir), &report_cfg(None), AS_OF).unwrap();
        assert_eq!(r.vms[0].vm.datagrams.samples, 20);
        // Nothing after --as-of: a report of the past is repeatable.
        let r = build(&dirs(&dir), &report_cfg(None), AS_OF - 86_400_000).unwrap();
        assert_eq!(r.vms[0].vm.datagrams.samples, 10);
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
        assert_eq!(
            (
                vm.datagrams.samples,
                vm.datagrams.lost,
                vm.datagrams.duplicates
            ),
            (30, 0, 0)
        );
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
        assert_eq!(vm.datagrams.samples, 20, "every datagram once");
        assert_eq!(vm.datagrams.lost, 0, "what one missed, the other has");
        assert_eq!(vm.datagrams.duplicates, 1, "only the repeat within A");
        assert_eq!(
            vm.datagrams.out_of_order, 0,
            "a repeat is a duplicate, not also late"
        );
        let only_a = build(&dirs(&a), &report_cfg(None), AS_OF).unwrap();
        assert_eq!(
            (
                only_a.vms[0].vm.datagrams.samples,
                only_a.vms[0].vm.datagrams.lost
            ),
            (19, 1)
        );
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
        let r = Report::new(vec![vm], &settings(Policy::Vmstats, None), window());
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
        let (a, b) = (
            crate::report::fixtures::finish(&seeking, ip).unwrap(),
            crate::report::fixtures::finish(&full, ip).unwrap(),
        );
        assert_eq!(a.datagrams.samples, 24 * 60);
        assert_eq!(a, b);
    }
}
