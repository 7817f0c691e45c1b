//! Which size a VM should be, what that would save, and what it risks: the
//! advisors' answer (a target size, its projected utilization, a
//! performance risk, the money), from the VM's own demand and the
//! operator's own prices.
//!
//! A policy sizes by a [`Sizer`]: the CPU figure it sizes for (a percentile
//! of vCPUs busy), the headroom on it and on the memory peak, and whether
//! a growing trend raises them. The need becomes a target: the smallest
//! power of two of vCPUs and of GiB without a catalog, the cheapest
//! catalog entry that holds it with one (and the next two as options).
//! Each size shown carries its risk: the share of the window's samples it
//! would not have held ([`Demand`]'s counts, exact).

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::catalog::{Catalog, Entry};
use super::summary::{DAY_MS, DaySummary, Demand, VmSummary};
use crate::config::{Prices, Rightsizing};

/// How one policy turns demand into a need.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sizer {
    /// The percentile of vCPUs busy that CPU is sized for.
    pub cpu_percentile: f64,
    /// What the CPU figure and the memory peak are multiplied by.
    pub cpu_factor: f64,
    pub mem_factor: f64,
    /// Size for the trend's projection at this horizon when it is higher.
    pub trend_horizon: Option<Duration>,
}

impl Sizer {
    /// vmstats' rule: its flags.
    pub fn vmstats(r: &Rightsizing) -> Sizer {
        Sizer {
            cpu_percentile: r.cpu_percentile,
            cpu_factor: 1.0 + r.cpu_headroom / 100.0,
            mem_factor: 1.0 + r.mem_headroom / 100.0,
            trend_horizon: Some(r.trend_horizon),
        }
    }

    /// Compute Optimizer's defaults: CPU at P99.5 with 20 % headroom,
    /// memory with 20 %, no trend.
    pub const AWS: Sizer = Sizer {
        cpu_percentile: 99.5,
        cpu_factor: 1.2,
        mem_factor: 1.2,
        trend_horizon: None,
    };

    /// Azure Advisor's user-facing targets: P95 CPU at most 40 % and the
    /// memory peak at most 60 % of the new size.
    pub const AZURE: Sizer = Sizer {
        cpu_percentile: 95.0,
        cpu_factor: 1.0 / 0.4,
        mem_factor: 1.0 / 0.6,
        trend_horizon: None,
    };

    /// The VM's demand at this sizer's percentile.
    fn cpu_observed(&self, d: &Demand) -> f64 {
        if self.cpu_percentile == 95.0 {
            d.cpu_p95
        } else if self.cpu_percentile == 99.5 {
            d.cpu_p995
        } else {
            d.cpu_at
        }
    }
}

/// Days of data a trend needs before it may change a size.
pub const TREND_MIN_DAYS: usize = 7;

/// What one dimension needs, and how it was found.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Need {
    /// The window's figure: vCPUs busy at the percentile, or GiB in use at
    /// the peak.
    pub observed: f64,
    /// The trend's figure at the horizon, when higher (it then decides).
    pub projected: Option<f64>,
    pub factor: f64,
    /// `max(observed, projected) x factor`.
    pub need: f64,
}

impl Need {
    fn new(observed: f64, projected: Option<f64>, factor: f64) -> Need {
        let projected = projected.filter(|p| *p > observed);
        Need {
            observed,
            projected,
            factor,
            need: projected.unwrap_or(observed) * factor,
        }
    }
}

/// The least-squares lines through the daily CPU demand and memory peak.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Trend {
    pub days: usize,
    pub horizon_days: f64,
    pub cpu_vcpus_per_day: f64,
    pub mem_gib_per_day: f64,
    /// Whether the projection raised the need.
    pub cpu_decided: bool,
    pub mem_decided: bool,
}

/// A line `a + b x` fitted to (x, y) by least squares; `None` when every
/// x is the same. Two passes over the points, nothing allocated.
fn fit<I: Iterator<Item = (f64, f64)> + Clone>(points: I) -> Option<(f64, f64)> {
    let n = points.clone().count() as f64;
    let (mx, my) = points
        .clone()
        .fold((0.0, 0.0), |(sx, sy), (x, y)| (sx + x / n, sy + y / n));
    let (sxy, sxx) = points.fold((0.0, 0.0), |(sxy, sxx), (x, y)| {
        (sxy + (x - mx) * (y - my), sxx + (x - mx) * (x - mx))
    });
    (sxx > 0.0).then(|| {
        let b = sxy / sxx;
        (my - b * mx, b)
    })
}

/// Each day's figure at its middle; the projection at `as_of + horizon`.
fn project(days: &[DaySummary], y: impl Fn(&DaySummary) -> f64, at_day: f64) -> (f64, f64) {
    let points = days.iter().map(|d| (d.day as f64 + 0.5, y(d)));
    let (a, b) = fit(points).unwrap_or((0.0, 0.0));
    (b, a + b * at_day)
}

/// A size: a catalog entry's, or a bare vCPUs and GiB.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Size {
    pub name: Option<Arc<str>>,
    pub vcpus: u32,
    pub mem_gib: f64,
    pub price_month: Option<f64>,
}

impl Size {
    /// A catalog entry as a size.
    fn of(e: &Entry) -> Size {
        Size {
            name: Some(e.name.clone()),
            vcpus: e.vcpus,
            mem_gib: e.mem_gib,
            price_month: Some(e.price_month),
        }
    }

    fn holds(&self, cpu: &Need, mem: &Need) -> bool {
        f64::from(self.vcpus) >= cpu.need && self.mem_gib >= mem.need
    }

    fn same_shape(&self, other: &Size) -> bool {
        self.vcpus == other.vcpus && self.mem_gib == other.mem_gib
    }
}

/// How likely a size is to be short, as Compute Optimizer grades it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RiskLevel {
    VeryLow,
    Low,
    Medium,
    High,
    VeryHigh,
}

impl RiskLevel {
    /// The level of a share of samples over: none, up to 0.5 %, 2 %, 5 %,
    /// more.
    pub fn of(share: f64) -> RiskLevel {
        match share {
            s if s <= 0.0 => RiskLevel::VeryLow,
            s if s <= 0.005 => RiskLevel::Low,
            s if s <= 0.02 => RiskLevel::Medium,
            s if s <= 0.05 => RiskLevel::High,
            _ => RiskLevel::VeryHigh,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            RiskLevel::VeryLow => "very low",
            RiskLevel::Low => "low",
            RiskLevel::Medium => "medium",
            RiskLevel::High => "high",
            RiskLevel::VeryHigh => "very high",
        }
    }
}

/// The share of samples a size would not have held, and its level.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Risk {
    pub share: f64,
    pub level: RiskLevel,
}

/// The window's demand in percent of a size.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Projected {
    pub cpu_p95: f64,
    pub cpu_max: f64,
    pub mem_max: f64,
}

/// One size a VM could move to.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SizeOption {
    #[serde(flatten)]
    pub size: Size,
    pub projected_utilization: Projected,
    pub performance_risk: Risk,
}

/// What one policy recommends for a VM.
#[derive(Debug, Clone, PartialEq)]
pub struct Recommendation {
    pub current: Size,
    /// The first option; `None` when no catalog entry holds the need.
    pub target: Option<Size>,
    /// Up to three sizes that hold the need, cheapest first.
    pub options: Vec<SizeOption>,
    pub cpu: Need,
    pub mem: Need,
    /// With enough days and a sizer that follows trends.
    pub trend: Option<Trend>,
    /// The current size's risk: samples it did not hold, which only a VM
    /// resized within the window (or past its figures' bound) can have.
    pub current_risk: Risk,
    /// One sample alone holds the memory peak, and without it the target
    /// would have less memory: one (perhaps forged) datagram decided it.
    pub mem_peak_alone: bool,
}

impl Recommendation {
    /// The current size does not hold the need: the VM should grow.
    pub fn grows(&self) -> bool {
        !self.current.holds(&self.cpu, &self.mem)
    }

    /// The target is another size than today's.
    pub fn moves(&self) -> bool {
        self.target
            .as_ref()
            .is_some_and(|t| !t.same_shape(&self.current))
    }

    /// Current price minus the target's: what moving saves a month
    /// (negative: what growing costs). `None` without both prices.
    pub fn saving(&self) -> Option<f64> {
        let target = self.target.as_ref()?;
        Some(self.current.price_month? - target.price_month?)
    }
}

/// The rightsizing side of a report's settings: the catalog, if any, and
/// the prices of a vCPU and a GiB.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PriceList {
    pub catalog: Option<Arc<Catalog>>,
    pub prices: Option<Prices>,
}

impl PriceList {
    /// Whether any money can be shown.
    pub fn priced(&self) -> bool {
        self.catalog.is_some() || self.prices.is_some()
    }

    /// A size of `vcpus` and `mem_gib`: its catalog entry when there is
    /// one, else priced per unit (when prices were given).
    fn size(&self, vcpus: u32, mem_gib: f64) -> Size {
        if let Some(e) = self.catalog.as_ref().and_then(|c| c.find(vcpus, mem_gib)) {
            // The VM's own memory figure, not the entry's (within 2 %).
            return Size {
                mem_gib,
                ..Size::of(e)
            };
        }
        Size {
            name: None,
            vcpus,
            mem_gib,
            price_month: self
                .prices
                .map(|p| f64::from(vcpus) * p.vcpu_month + mem_gib * p.gib_month),
        }
    }

    /// The sizes that hold both needs, cheapest first: up to three catalog
    /// entries, or the power-of-two size (never larger than today in a
    /// dimension today's already holds).
    fn fits(&self, cpu: &Need, mem: &Need, current: &Size) -> Vec<Size> {
        if let Some(catalog) = &self.catalog {
            return catalog
                .entries()
                .iter()
                .filter(|e| f64::from(e.vcpus) >= cpu.need && e.mem_gib >= mem.need)
                .take(MAX_OPTIONS)
                .map(Size::of)
                .collect();
        }
        let vcpus = power_of_two_at_least(cpu.need);
        let vcpus = if f64::from(current.vcpus) >= cpu.need {
            vcpus.min(u64::from(current.vcpus))
        } else {
            vcpus
        };
        let gib = power_of_two_at_least(mem.need) as f64;
        let gib = if current.mem_gib >= mem.need {
            gib.min(current.mem_gib)
        } else {
            gib
        };
        let vcpus = u32::try_from(vcpus).unwrap_or(u32::MAX);
        vec![self.size(vcpus, gib)]
    }
}

/// Options shown per VM, as Compute Optimizer shows.
pub const MAX_OPTIONS: usize = 3;

/// The smallest power of two at or above `x`, at least 1. A need that is a
/// whole number within float error of one is that number.
fn power_of_two_at_least(x: f64) -> u64 {
    let whole = (x - 1e-9).ceil().max(1.0);
    (whole.min(2f64.powi(62)) as u64).next_power_of_two()
}

/// The VM's needs by `sizer` at `as_of_ms`, and the trend behind them.
fn needs(vm: &VmSummary, sizer: &Sizer, as_of_ms: u64) -> (Need, Need, Option<Trend>) {
    let d = &vm.demand;
    let cpu_observed = sizer.cpu_observed(d);
    let trend = sizer
        .trend_horizon
        .filter(|_| vm.days.len() >= TREND_MIN_DAYS)
        .map(|horizon| {
            let at = (as_of_ms as f64 + horizon.as_millis() as f64) / DAY_MS as f64;
            let (cpu_slope, cpu_at) = project(&vm.days, |d| d.cpu_demand, at);
            let (mem_slope, mem_at) = project(&vm.days, |d| d.mem_in_use_gib, at);
            (
                Trend {
                    days: vm.days.len(),
                    horizon_days: horizon.as_secs_f64() / 86_400.0,
                    cpu_vcpus_per_day: cpu_slope,
                    mem_gib_per_day: mem_slope,
                    cpu_decided: cpu_at > cpu_observed,
                    mem_decided: mem_at > d.mem_max_gib,
                },
                cpu_at,
                mem_at,
            )
        });
    let cpu = Need::new(cpu_observed, trend.map(|t| t.1), sizer.cpu_factor);
    let mem = Need::new(d.mem_max_gib, trend.map(|t| t.2), sizer.mem_factor);
    (cpu, mem, trend.map(|t| t.0))
}

/// The VM's size today: its most frequent in the window.
fn current(vm: &VmSummary, prices: &PriceList) -> Size {
    prices.size(
        u32::from(vm.size.vcpus),
        f64::from(vm.size.mem_mib) / 1024.0,
    )
}

/// What a sizer makes of a VM before its risks are known: the needs,
/// today's size and the sizes that hold the needs.
struct Plan {
    cpu: Need,
    mem: Need,
    trend: Option<Trend>,
    current: Size,
    fits: Vec<Size>,
}

fn plan(vm: &VmSummary, sizer: &Sizer, prices: &PriceList, as_of_ms: u64) -> Plan {
    let (cpu, mem, trend) = needs(vm, sizer, as_of_ms);
    let current = current(vm, prices);
    let fits = prices.fits(&cpu, &mem, &current);
    Plan {
        cpu,
        mem,
        trend,
        current,
        fits,
    }
}

/// The sizes whose risk a recommendation by `sizer` will show: today's and
/// the options.
pub fn sizes_shown(
    vm: &VmSummary,
    sizer: &Sizer,
    prices: &PriceList,
    as_of_ms: u64,
) -> Vec<(u32, f64)> {
    let p = plan(vm, sizer, prices, as_of_ms);
    p.fits
        .iter()
        .chain([&p.current])
        .map(|s| (s.vcpus, s.mem_gib))
        .collect()
}

/// What `sizer` recommends for the VM at `as_of_ms`.
pub fn recommend(
    vm: &VmSummary,
    sizer: &Sizer,
    prices: &PriceList,
    as_of_ms: u64,
) -> Recommendation {
    let Plan {
        cpu,
        mem,
        trend,
        current,
        fits,
    } = plan(vm, sizer, prices, as_of_ms);
    let d = &vm.demand;
    let risk = |s: &Size| {
        // Every size shown was probed when the summary was made.
        let share = d
            .over_at(s.vcpus, s.mem_gib)
            .map_or(0.0, |o| o.share(d.samples));
        Risk {
            share,
            level: RiskLevel::of(share),
        }
    };
    let pct = |busy: f64, of: f64| busy / of * 100.0;
    let mem_peak_alone = d.mem_max_samples == 1 && mem.projected.is_none() && {
        let without = Need::new(d.mem_next_gib, None, mem.factor);
        let mem_of = |sizes: &[Size]| sizes.first().map(|s| s.mem_gib);
        mem_of(&prices.fits(&cpu, &without, &current)) < mem_of(&fits)
    };
    let options: Vec<SizeOption> = fits
        .into_iter()
        .map(|size| SizeOption {
            projected_utilization: Projected {
                cpu_p95: pct(d.cpu_p95, f64::from(size.vcpus)),
                cpu_max: pct(d.cpu_max, f64::from(size.vcpus)),
                mem_max: pct(d.mem_max_gib, size.mem_gib),
            },
            performance_risk: risk(&size),
            size,
        })
        .collect();
    Recommendation {
        current_risk: risk(&current),
        current,
        target: options.first().map(|o| o.size.clone()),
        options,
        cpu,
        mem,
        trend,
        mem_peak_alone,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Policy, ReportConfig};
    use crate::report::fixtures::*;
    use crate::report::render::{reasons_text, recommendation_text};
    use crate::report::{Category, Report, Rule, Settings, VmReport, Window};
    use crate::wire::Row;

    #[test]
    fn powers_of_two_hold_the_need() {
        let p: Vec<u64> = [0.0, 0.3, 1.0, 1.0000000001, 3.7, 4.0, 11.8]
            .iter()
            .map(|x| power_of_two_at_least(*x))
            .collect();
        assert_eq!(p, [1, 1, 1, 1, 4, 4, 16]);
    }

    #[test]
    fn a_line_through_the_days() {
        let (a, b) = fit([(0.5, 1.0), (1.5, 2.0), (2.5, 3.0)].into_iter()).unwrap();
        assert!((a - 0.5).abs() < 1e-12 && (b - 1.0).abs() < 1e-12);
        assert_eq!(fit([(1.0, 1.0), (1.0, 2.0)].into_iter()), None);
    }

    #[test]
    fn risk_levels_are_compute_optimizers_steps() {
        let levels: Vec<RiskLevel> = [0.0, 0.001, 0.005, 0.0051, 0.02, 0.05, 0.051]
            .iter()
            .map(|s| RiskLevel::of(*s))
            .collect();
        use RiskLevel::*;
        assert_eq!(levels, [VeryLow, Low, Low, Medium, Medium, High, VeryHigh]);
    }

    // The rule, row by row, on fixture histories with exact expectations.

    /// `n` rows a minute apart on a VM of `vcpus` and `mem_gib`, the i-th
    /// at `shape(i)` = (cpu x100, mem x100), with traffic enough not to be
    /// idle.
    fn vm_rows(n: u64, vcpus: u16, mem_gib: u32, shape: impl Fn(u64) -> (u16, u16)) -> Vec<Row> {
        (0..n)
            .map(|i| {
                let (cpu, mem) = shape(i);
                let mut r = row(i, cpu, mem, 50_000, 0);
                r.recv_ms = AS_OF - (n - i) * 60_000;
                r.stat.vcpus = vcpus;
                r.stat.mem_mib = mem_gib * 1024;
                r
            })
            .collect()
    }

    fn cfg() -> ReportConfig {
        ReportConfig::default()
    }

    fn with(cfg: ReportConfig) -> Settings {
        Settings::new(&cfg).unwrap()
    }

    /// A catalog file of these lines (after the header) and settings
    /// that read it.
    fn catalog(lines: &[&str], mut cfg: ReportConfig) -> (tempfile::TempDir, Settings) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sizes.csv");
        let text = format!("name,vcpus,mem_gib,price_month\n{}\n", lines.join("\n"));
        std::fs::write(&path, text).unwrap();
        cfg.rightsizing.catalog = Some(path);
        (dir, with(cfg))
    }

    /// The report of one VM's `rows` by `s` at `as_of`.
    fn judged(rows: &[Row], s: &Settings, as_of: u64) -> VmReport {
        let vm = summary_with(rows, s, as_of);
        let r = Report::new(vec![vm], s, Window::before(as_of, None));
        *r.vms.into_iter().next().unwrap()
    }

    /// 199 samples at 25 % of 4 vCPUs (1 busy) and one at 100 % (4 busy),
    /// 25 % of 16 GiB in use (4 GiB).
    fn one_spike() -> Vec<Row> {
        vm_rows(200, 4, 16, |i| (if i == 100 { 10_000 } else { 2500 }, 2500))
    }

    #[test]
    fn cpu_is_the_percentile_of_vcpus_busy_with_headroom() {
        let v = judged(&one_spike(), &with(cfg()), AS_OF);
        let rec = v.verdict.recommendation.as_ref().unwrap();
        // P99.5 of 200 is the 199th: 1 vCPU busy; x 1.2 = 1.2 -> 2.
        assert_eq!(
            (rec.cpu.observed, rec.cpu.factor, rec.cpu.need),
            (1.0, 1.2, 1.2)
        );
        assert_eq!(v.vm.demand.cpu_max, 4.0);
        // 4 GiB at the peak x 1.2 = 4.8 -> 8.
        assert_eq!(rec.mem.observed, 4.0);
        assert!((rec.mem.need - 4.8).abs() < 1e-12);
        let target = rec.target.as_ref().unwrap();
        assert_eq!(
            (target.vcpus, target.mem_gib, target.name.clone()),
            (2, 8.0, None)
        );
        assert_eq!(v.verdict.category, Category::Oversized);
        assert_eq!(
            reasons_text(&v.verdict.reasons),
            "cpu p99.5 1.0 vCPUs x 1.2 = 1.2 -> 2 vCPUs, mem max 4.0 GiB x 1.2 = 4.8 -> 8 GiB"
        );
        // The spike is 1 sample of 200 over 2 vCPUs: 0.5 %, low.
        let option = &rec.options[0];
        assert_eq!(option.performance_risk.share, 0.005);
        assert_eq!(option.performance_risk.level, RiskLevel::Low);
        assert_eq!(
            option.projected_utilization,
            Projected {
                cpu_p95: 50.0,
                cpu_max: 200.0,
                mem_max: 50.0
            }
        );
        assert_eq!(rec.current_risk.level, RiskLevel::VeryLow);
        // The flags move it: P90 with 100 % headroom is 2.0 -> 2; 250 %
        // is 3.5 -> 4 vCPUs, today's.
        let mut c = cfg();
        c.rightsizing.cpu_percentile = 90.0;
        c.rightsizing.cpu_headroom = 250.0;
        c.rightsizing.mem_headroom = 0.0;
        let v = judged(&one_spike(), &with(c), AS_OF);
        let rec = v.verdict.recommendation.as_ref().unwrap();
        assert_eq!((rec.cpu.need, rec.mem.need), (3.5, 4.0));
        let target = rec.target.as_ref().unwrap();
        assert_eq!((target.vcpus, target.mem_gib), (4, 4.0));
        assert_eq!(v.verdict.category, Category::Oversized, "memory shrinks");
    }

    #[test]
    fn one_sample_at_the_peak_is_said_only_when_it_decides() {
        // Memory creeping up: one sample holds the peak (5.3 GiB), but the
        // one below it needs the same 8 GiB.
        let creeping = vm_rows(20, 4, 16, |i| (2500, 3000 + i as u16 * 10));
        let v = judged(&creeping, &with(cfg()), AS_OF);
        assert!(!v.verdict.recommendation.as_ref().unwrap().mem_peak_alone);
        assert!(!reasons_text(&v.verdict.reasons).contains("one sample"));
        // One datagram at 90 % of 16 GiB among 30 %: 17.3 GiB -> 32 rather
        // than 8.
        let mut spiked = creeping.clone();
        spiked[7].stat.mem_pct_x100 = 9000;
        let v = judged(&spiked, &with(cfg()), AS_OF);
        assert_eq!(v.verdict.category, Category::Undersized);
        assert!(
            reasons_text(&v.verdict.reasons)
                .contains("mem max 14.4 GiB (one sample) x 1.2 = 17.3 -> 32 GiB"),
            "{:?}",
            reasons_text(&v.verdict.reasons)
        );
    }

    #[test]
    fn the_cpu_percentile_is_a_flag() {
        // 90 samples at 1 vCPU busy, 10 at 3: P90 is 1, P99.5 is 3.
        let rows = vm_rows(100, 4, 16, |i| {
            (if i % 10 == 0 { 7500 } else { 2500 }, 2500)
        });
        let need = |pct: f64| {
            let mut c = cfg();
            c.rightsizing.cpu_percentile = pct;
            let v = judged(&rows, &with(c), AS_OF);
            let rec = v.verdict.recommendation.unwrap();
            (rec.cpu.observed, rec.target.unwrap().vcpus)
        };
        assert_eq!(need(99.5), (3.0, 4));
        assert_eq!(need(90.0), (1.0, 2));
        assert_eq!(need(91.0), (3.0, 4));
    }

    #[test]
    fn demand_counts_each_sample_at_the_size_it_ran_at() {
        // 100 samples at 50 % of 8 vCPUs (4 busy), then resized to 2 vCPUs
        // and 100 at 50 % (1 busy). Percent alone would say 50 % of the
        // most frequent size; demand says 4 vCPUs at the p99.5.
        let mut rows = vm_rows(200, 8, 16, |_| (5000, 2500));
        for r in &mut rows[100..] {
            r.stat.vcpus = 2;
        }
        let v = judged(&rows, &with(cfg()), AS_OF);
        assert_eq!(v.vm.demand.cpu_p995, 4.0);
        assert_eq!(v.vm.demand.cpu_p95, 4.0);
        let rec = v.verdict.recommendation.as_ref().unwrap();
        assert_eq!(rec.target.as_ref().unwrap().vcpus, 8);
        // The most frequent size is a tie broken to the larger: 8 vCPUs.
        assert_eq!(rec.current.vcpus, 8);
        assert_eq!(
            v.verdict.category,
            Category::Oversized,
            "memory: 4.8 -> 8 GiB"
        );
    }

    /// Fourteen days of a 4-vCPU, 16-GiB VM, 24 rows a day ending at
    /// [`FORTNIGHT_END`], day `d` at `shape(d)` = (cpu x100, mem x100).
    fn days(n: u64, shape: impl Fn(u64) -> (u16, u16)) -> Vec<Row> {
        let first_day = FORTNIGHT_END / summary::DAY_MS + 1 - n;
        let mut rows = Vec::new();
        for d in 0..n {
            let (cpu, mem) = shape(d);
            for h in 0..24 {
                let mut r = row(d * 24 + h, cpu, mem, 50_000, 0);
                r.recv_ms = (first_day + d) * summary::DAY_MS + h * 3_600_000;
                r.stat.interval_s = 3600;
                r.stat.vcpus = 4;
                rows.push(r);
            }
        }
        rows
    }

    use crate::report::summary;

    #[test]
    fn a_growing_vm_is_sized_for_its_trend() {
        // vCPUs busy grow 0.1 a day from 1.0 (25 % + 2.5 points a day).
        let growing = days(14, |d| (2500 + 250 * d as u16, 2500));
        let s = with(cfg());
        let v = judged(&growing, &s, FORTNIGHT_END);
        let rec = v.verdict.recommendation.as_ref().unwrap();
        // Observed: the last day's 2.3 busy. The line through the days'
        // middles reaches 1.0 + 0.1 x 43.5 = 5.35 thirty days after the
        // end of day 14; x 1.2 = 6.42 -> 8 vCPUs, more than today's 4.
        assert!((rec.cpu.observed - 2.3).abs() < 1e-9);
        let projected = rec.cpu.projected.unwrap();
        assert!((projected - 5.35).abs() < 1e-6, "{projected}");
        let trend = rec.trend.unwrap();
        assert!((trend.cpu_vcpus_per_day - 0.1).abs() < 1e-9);
        assert!(trend.cpu_decided && !trend.mem_decided);
        assert_eq!(rec.target.as_ref().unwrap().vcpus, 8);
        assert_eq!(v.verdict.category, Category::Undersized);
        let codes: Vec<&str> = v.verdict.reasons.iter().map(|r| r.code()).collect();
        assert_eq!(codes, ["cpu_need", "mem_need", "trend"]);
        assert_eq!(
            reasons_text(&v.verdict.reasons),
            "cpu p99.5 2.3 vCPUs, trend 5.3 x 1.2 = 6.4 -> 8 vCPUs, \
             mem max 4.0 GiB x 1.2 = 4.8 -> 8 GiB, \
             trend +0.100 vCPUs/day, +0.000 GiB/day, projected 30 days ahead"
        );
        // Six days are too few for a trend: 1.5 busy x 1.2 = 1.8 -> 2.
        let short = days(6, |d| (2500 + 250 * d as u16, 2500));
        let v = judged(&short, &s, FORTNIGHT_END);
        let rec = v.verdict.recommendation.as_ref().unwrap();
        assert_eq!((rec.trend, rec.cpu.projected), (None, None));
        assert_eq!(rec.target.as_ref().unwrap().vcpus, 2);
        // A shrinking VM is sized for what it did, not for less.
        let shrinking = days(14, |d| (6000 - 250 * d as u16, 2500));
        let v = judged(&shrinking, &s, FORTNIGHT_END);
        let rec = v.verdict.recommendation.as_ref().unwrap();
        assert_eq!(rec.cpu.projected, None);
        assert_eq!(rec.cpu.observed, 2.4, "the first day's 60 % of 4");
        assert!(!rec.trend.unwrap().cpu_decided);
        // AWS's rule has no trend: 2.3 x 1.2 = 2.76 -> 4 vCPUs, today's, and
        // only memory shrinks (4.8 -> 8 GiB).
        let aws = judged(
            &growing,
            &with(ReportConfig {
                policy: Policy::Aws,
                ..cfg()
            }),
            FORTNIGHT_END,
        );
        let rec = aws.verdict.recommendation.as_ref().unwrap();
        assert_eq!(rec.trend, None);
        assert_eq!(rec.target.as_ref().unwrap().vcpus, 4);
        assert_eq!(aws.verdict.category, Category::Oversized);
    }

    #[test]
    fn without_a_catalog_a_dimension_today_holds_never_grows() {
        // 6 vCPUs and 12 GiB: 4.8 vCPUs and 11.5 GiB needed. The powers of
        // two above are 8 and 16, larger than today's, which hold it.
        let rows = vm_rows(20, 6, 12, |_| (6667, 8000));
        let v = judged(&rows, &with(cfg()), AS_OF);
        let rec = v.verdict.recommendation.as_ref().unwrap();
        let t = rec.target.as_ref().unwrap();
        assert_eq!((t.vcpus, t.mem_gib), (6, 12.0));
        assert_eq!(v.verdict.category, Category::Ok);
        assert_eq!(
            recommendation_text(&v.verdict, v.savings),
            "6 vCPU/12 GiB, keep, risk very low"
        );
    }

    const LADDER: [&str; 6] = [
        "c.large,2,4,62.05",
        "m.large,2,8,70.08",
        "r.large,2,16,91.98",
        "m.xlarge,4,16,140.16",
        "m2.xlarge,4,16,140.16",
        "m.2xlarge,8,32,280.32",
    ];

    #[test]
    fn a_catalog_gives_the_cheapest_fit_and_two_more_options() {
        let (_dir, s) = catalog(&LADDER, cfg());
        // 1 busy, 4 GiB: needs 1.2 vCPUs, 4.8 GiB. c.large's 4 GiB is too
        // little; m.large is the cheapest that holds it.
        let v = judged(&one_spike(), &s, AS_OF);
        let rec = v.verdict.recommendation.as_ref().unwrap();
        let names: Vec<&str> = rec
            .options
            .iter()
            .map(|o| o.size.name.as_deref().unwrap())
            .collect();
        assert_eq!(names, ["m.large", "r.large", "m.xlarge"]);
        assert_eq!(
            rec.current.name.as_deref(),
            Some("m.xlarge"),
            "ties: the name"
        );
        assert_eq!(rec.current.price_month, Some(140.16));
        assert_eq!(v.savings, Some(140.16 - 70.08));
        assert_eq!(
            recommendation_text(&v.verdict, v.savings),
            "4 vCPU/16 GiB (m.xlarge) -> 2 vCPU/8 GiB (m.large), risk low, saves 70.08"
        );
        let risks: Vec<RiskLevel> = rec
            .options
            .iter()
            .map(|o| o.performance_risk.level)
            .collect();
        assert_eq!(risks, [RiskLevel::Low, RiskLevel::Low, RiskLevel::VeryLow]);
        assert_eq!(rec.options[1].projected_utilization.mem_max, 25.0);
    }

    #[test]
    fn a_vm_the_catalog_does_not_hold_is_undersized_without_a_target() {
        let (_dir, s) = catalog(&LADDER, cfg());
        // 90 % of 16 vCPUs: 14.4 busy, 17.3 needed; nothing has 18.
        let rows = vm_rows(20, 16, 64, |_| (9000, 2500));
        let v = judged(&rows, &s, AS_OF);
        let rec = v.verdict.recommendation.as_ref().unwrap();
        assert_eq!((rec.target.as_ref(), rec.options.len()), (None, 0));
        assert_eq!(v.verdict.category, Category::Undersized);
        assert_eq!(v.verdict.reasons.last().unwrap().code(), "no_fit");
        // Not in the catalog and no unit prices: no money.
        assert_eq!((rec.current.name.as_ref(), v.savings), (None, None));
        assert_eq!(
            recommendation_text(&v.verdict, v.savings),
            "16 vCPU/64 GiB -> no catalog size fits"
        );
    }

    #[test]
    fn growing_costs_and_idle_saves_all() {
        let mut c = cfg();
        c.price_vcpu_month = Some(10.0);
        let (_dir, s) = catalog(&LADDER, c);
        // 90 % of 2 vCPUs, 1.8 busy: 2.16 -> m.xlarge (4 vCPUs, 16 GiB,
        // the cheapest with 4) from c.large (2, 4 GiB): 78.11 more.
        let busy = vm_rows(20, 2, 4, |_| (9000, 5000));
        let v = judged(&busy, &s, AS_OF);
        assert_eq!(v.verdict.category, Category::Undersized);
        let saving = v.savings.unwrap();
        assert!((saving - (62.05 - 140.16)).abs() < 1e-9, "{saving}");
        assert_eq!(
            recommendation_text(&v.verdict, v.savings),
            "2 vCPU/4 GiB (c.large) -> 4 vCPU/16 GiB (m.xlarge), risk very low, costs 78.11"
        );
        // An idle VM saves its whole price: 3 vCPUs are in no entry, so
        // per unit (10 a vCPU, no memory price): 30.
        let mut idle = vm_rows(20, 3, 8, |_| (100, 2500));
        for r in &mut idle {
            r.stat.net_rx_bytes = 0;
        }
        let v = judged(&idle, &s, AS_OF);
        assert_eq!(v.verdict.category, Category::Idle);
        assert_eq!(v.savings, Some(30.0));
        let r = Report::new(
            vec![summary_with(&busy, &s, AS_OF), {
                let mut vm = summary_with(&idle, &s, AS_OF);
                vm.ip = "127.1.0.2".parse().unwrap();
                vm
            }],
            &s,
            Window::before(AS_OF, None),
        );
        let t = r.totals();
        assert_eq!((t.savings, t.moves), (30.0, 1));
        assert!((t.growth_cost - 78.11).abs() < 1e-9);
    }

    #[test]
    fn azure_sizes_to_its_targets_and_all_shows_each_policys() {
        // p95 1 vCPU busy must be <= 40 %: 2.5 -> 4 vCPUs; 4 GiB <= 60 %:
        // 6.67 -> 8 GiB. vmstats: 2 vCPUs, 8 GiB; AWS the same (P99.5,
        // 20 %).
        let s = with(ReportConfig {
            policy: Policy::All,
            ..cfg()
        });
        let v = judged(&one_spike(), &s, AS_OF);
        let target = |rec: &Option<Recommendation>| {
            let t = rec.as_ref().unwrap().target.clone().unwrap();
            (t.vcpus, t.mem_gib)
        };
        assert_eq!(target(&v.verdict.recommendation), (2, 8.0));
        let by: Vec<(Rule, Option<(u32, f64)>)> = v
            .others
            .iter()
            .map(|(r, v)| {
                (
                    *r,
                    v.recommendation.as_ref().map(|_| target(&v.recommendation)),
                )
            })
            .collect();
        assert_eq!(
            by,
            [
                (Rule::Aws, Some((2, 8.0))),
                (Rule::Azure, Some((4, 8.0))),
                (Rule::Gcp, None)
            ]
        );
        let azure = &v.others[1].1;
        assert_eq!(azure.category, Category::Oversized, "memory 16 -> 8 GiB");
        let rec = azure.recommendation.as_ref().unwrap();
        assert!((rec.cpu.need - 2.5).abs() < 1e-12 && (rec.mem.need - 4.0 / 0.6).abs() < 1e-12);
    }
}
