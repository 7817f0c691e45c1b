//! The report as text: a table and an HTML page for people, JSON and CSV
//! for tools. Each format is one file; the words for a [`Reason`] and the
//! shared number formats live here, so every format says the same thing
//! the same way.

mod csv;
mod html;
mod json;
mod table;

use std::fmt::Write as _;

use crate::config::ReportFormat;

use super::rightsize::Size;
use super::{Category, Reason, Report, Verdict};

/// The report in the chosen format.
pub fn render(r: &Report, format: ReportFormat) -> String {
    match format {
        ReportFormat::Table => table::render(r),
        ReportFormat::Json => json::render(r),
        ReportFormat::Csv => csv::render(r),
        ReportFormat::Html => html::render(r),
    }
}

/// Below this many VMs a report renders on one thread: threads would cost
/// more than they save.
const PARALLEL_FROM: usize = 10_000;

/// `f` over `items` cut into one contiguous run per core (with the run's
/// index), the results in order: at a million VMs the table and the CSV
/// are a million rows each, seconds of one core while the others waited
/// for the exit.
fn in_parallel<T: Sync, R: Send>(items: &[T], f: impl Fn(usize, &[T]) -> R + Sync) -> Vec<R> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if items.len() < PARALLEL_FROM || cores == 1 {
        return vec![f(0, items)];
    }
    let runs: Vec<&[T]> = items.chunks(items.len().div_ceil(cores)).collect();
    each_on_a_thread(&runs, |i, run| f(i, run))
}

/// The runs' text one after the other, each freed once appended to the
/// first (which a large allocation extends in place), so the report is
/// not held twice over.
fn joined(runs: Vec<String>) -> String {
    let mut runs = runs.into_iter();
    let mut all = runs.next().unwrap_or_default();
    runs.for_each(|run| all.push_str(&run));
    all
}

/// `f` over each of `runs` on a thread of its own (inline when there is
/// one), the results in order.
fn each_on_a_thread<T: Sync, R: Send>(runs: &[T], f: impl Fn(usize, &T) -> R + Sync) -> Vec<R> {
    if let [run] = runs {
        return vec![f(0, run)];
    }
    std::thread::scope(|scope| {
        let f = &f;
        let handles: Vec<_> = runs
            .iter()
            .enumerate()
            .map(|(i, run)| scope.spawn(move || f(i, run)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a render thread panicked"))
            .collect()
    })
}

/// One VM of `r` as JSON, its daily series included.
pub fn render_vm_json(r: &Report, vm: &super::VmReport) -> String {
    json::render_vm(r, vm)
}

/// What to do about a VM in its category.
pub fn advice(c: Category) -> &'static str {
    match c {
        Category::InsufficientData => "wait",
        Category::Silent => "check the VM",
        Category::Idle => "reclaim",
        Category::Oversized => "shrink",
        Category::Undersized => "grow",
        Category::Ok => "keep",
    }
}

fn summary_word(c: Category) -> &'static str {
    match c {
        Category::InsufficientData => "insufficient data",
        Category::Silent => "silent",
        Category::Idle => "idle",
        Category::Oversized => "oversized",
        Category::Undersized => "undersized",
        Category::Ok => "ok",
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

/// How long ago, roughly: `42s ago`, `5m ago`, `3h ago`.
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

/// A UTC day number (days since 1970-01-01) as `YYYY-MM-DD`, by the
/// proleptic Gregorian calendar (Hinnant's days-to-civil algorithm).
pub fn date_of_day(day: u64) -> String {
    let z = day as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Unix ms as `YYYY-MM-DD HH:MM` (UTC).
pub fn fmt_utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (h, m) = ((secs % 86_400) / 3600, (secs % 3600) / 60);
    format!("{} {h:02}:{m:02}", date_of_day(secs / 86_400))
}

/// One reason in words.
pub fn reason_text(r: &Reason) -> String {
    match *r {
        Reason::TooFewSamples { samples, min } => format!("{samples} samples < {min}"),
        Reason::Quiet {
            quiet_ms,
            intervals,
            interval_s,
        } => format!(
            "nothing for {:.0} s > {intervals} x {interval_s} s interval",
            quiet_ms as f64 / 1000.0
        ),
        Reason::CpuP95Below { p95, limit } => format!("p95 cpu {p95:.1}% < {limit}%"),
        Reason::NetP95Below { bps, .. } => format!("net {}", fmt_rate(bps)),
        Reason::DiskP95Below { bps, .. } => format!("disk {}", fmt_rate(bps)),
        Reason::CpuNeed {
            percentile,
            observed,
            projected,
            factor,
            need,
            target,
        } => format!(
            "cpu p{} {} vCPUs{} x {} = {} -> {}",
            Num(percentile),
            Fig(observed),
            Projection(projected),
            Num((factor * 100.0).round() / 100.0),
            Fig(need),
            Target(target.map(|v| (f64::from(v), if v == 1 { "vCPU" } else { "vCPUs" })))
        ),
        Reason::MemNeed {
            observed,
            projected,
            factor,
            need,
            target,
            alone,
        } => format!(
            // A peak on one sample could be one forged v1 datagram: say so.
            "mem max {} GiB{}{} x {} = {} -> {}",
            Fig(observed),
            if alone { " (one sample)" } else { "" },
            Projection(projected),
            Num((factor * 100.0).round() / 100.0),
            Fig(need),
            Target(target.map(|g| (g, "GiB")))
        ),
        Reason::Trend {
            cpu_vcpus_per_day,
            mem_gib_per_day,
            horizon_days,
        } => format!(
            "trend {cpu_vcpus_per_day:+.3} vCPUs/day, {mem_gib_per_day:+.3} GiB/day, projected {horizon_days:.0} days ahead"
        ),
        Reason::NoFit => "no catalog size holds it".to_string(),
        Reason::WithinBounds { cpu_p95, mem_max } => {
            format!("p95 cpu {cpu_p95:.1}%, max mem {mem_max:.1}%")
        }
        Reason::AwsLowDays {
            days,
            of_days,
            min_days,
        } => format!(
            "{days} of {of_days} days at <= 10% daily cpu and <= 5 MB network (>= {min_days})"
        ),
        Reason::AzureCpuP95Below { p95, limit } => format!("p95 cpu {p95:.1}% < {limit}%"),
        Reason::AzureRecentCpuMax { max, limit } => {
            format!("max cpu of the last 3 days {max:.1}% <= {limit}%")
        }
        Reason::AzureNetBelow { bps, limit } => {
            format!("net {} < {}", fmt_rate(bps), fmt_rate(limit))
        }
        Reason::GcpIdleShares { cpu, rx, tx } => format!(
            "cpu < 0.03 vCPU {:.1}% of samples (>= 97%), rx < 2000 B/s {:.1}%, tx < 1000 B/s {:.1}% (>= 95%)",
            cpu * 100.0,
            rx * 100.0,
            tx * 100.0
        ),
    }
}

/// The share of a VM's samples from verified datagrams: `100%`, `0%`.
pub fn auth_share(d: &crate::report::summary::Datagrams) -> String {
    format!(
        "{:.0}%",
        d.authenticated as f64 * 100.0 / d.samples.max(1) as f64
    )
}

/// `4 vCPU/16 GiB`, or with its catalog name `2 vCPU/8 GiB (m6i.large)`.
pub fn size_text(s: &Size) -> String {
    let mut text = format!("{} vCPU/{} GiB", s.vcpus, Num(s.mem_gib));
    if let Some(name) = &s.name {
        let _ = write!(text, " ({name})");
    }
    text
}

/// What a verdict recommends, in one line: `4 vCPU/16 GiB -> 2 vCPU/8 GiB
/// (m6i.large), risk low, saves 70.08`; `-` for a VM no rule sized.
pub fn recommendation_text(v: &Verdict, savings: Option<f64>) -> String {
    let Some(rec) = &v.recommendation else {
        return "-".to_string();
    };
    let now = size_text(&rec.current);
    let mut text = match (v.category, &rec.target) {
        (Category::Idle, _) => format!("{now} -> reclaim"),
        (Category::Oversized | Category::Undersized, Some(target)) => {
            let risk = rec.options[0].performance_risk.level;
            format!("{now} -> {}, risk {}", size_text(target), risk.name())
        }
        (_, None) => format!("{now} -> no catalog size fits"),
        _ => format!("{now}, keep, risk {}", rec.current_risk.level.name()),
    };
    match savings {
        Some(s) if s > 0.0 => {
            let _ = write!(text, ", saves {s:.2}");
        }
        Some(s) if s < 0.0 => {
            let _ = write!(text, ", costs {:.2}", -s);
        }
        _ => {}
    }
    text
}

/// A vendor's finding beside vmstats': its category, and its target when
/// it would move the VM (`OVERSIZED -> 2 vCPU/8 GiB`).
pub fn finding_text(v: &Verdict) -> String {
    let name = v.category.name();
    match v.move_target() {
        Some(target) => format!("{name} -> {}", size_text(target)),
        None => name.to_string(),
    }
}

/// A figure to three places without trailing zeros: `99.5`, `95`, `0.5`,
/// `16`, `1.67` (written straight into the text: the table writes a few
/// per VM, for a million VMs).
struct Num(f64);

impl std::fmt::Display for Num {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        // Display prints the shortest form that reads back the same.
        write!(f, "{}", (self.0 * 1000.0).round() / 1000.0)
    }
}

/// A vCPU or GiB figure: one decimal, two below 1 (`0.25`, `3.7`).
struct Fig(f64);

impl std::fmt::Display for Fig {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        if self.0 < 1.0 {
            write!(f, "{:.2}", self.0)
        } else {
            write!(f, "{:.1}", self.0)
        }
    }
}

/// `, trend 4.2` when the projection decided.
struct Projection(Option<f64>);

impl std::fmt::Display for Projection {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self.0 {
            Some(p) => write!(f, ", trend {}", Fig(p)),
            None => Ok(()),
        }
    }
}

/// A target and its unit (`4 vCPUs`, `16 GiB`), or `none`.
struct Target(Option<(f64, &'static str)>);

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self.0 {
            Some((v, unit)) => write!(f, "{} {unit}", Num(v)),
            None => f.write_str("none"),
        }
    }
}

/// A verdict's reasons in words, one sentence.
pub fn reasons_text(reasons: &[Reason]) -> String {
    let texts: Vec<String> = reasons.iter().map(reason_text).collect();
    texts.join(", ")
}

/// The figure and threshold of a reason, for machines.
fn reason_figures(r: &Reason) -> (f64, Option<f64>) {
    match *r {
        Reason::TooFewSamples { samples, min } => (samples as f64, Some(min as f64)),
        Reason::Quiet {
            quiet_ms,
            intervals,
            interval_s,
        } => (
            quiet_ms as f64 / 1000.0,
            Some(f64::from(intervals) * f64::from(interval_s)),
        ),
        Reason::CpuP95Below { p95, limit } => (p95, Some(limit)),
        Reason::NetP95Below { bps, limit } | Reason::DiskP95Below { bps, limit } => {
            (bps, Some(limit))
        }
        Reason::CpuNeed { need, target, .. } => (need, target.map(f64::from)),
        Reason::MemNeed { need, target, .. } => (need, target),
        Reason::Trend {
            cpu_vcpus_per_day, ..
        } => (cpu_vcpus_per_day, None),
        Reason::NoFit => (0.0, None),
        Reason::WithinBounds { cpu_p95, .. } => (cpu_p95, None),
        Reason::AwsLowDays { days, min_days, .. } => (days as f64, Some(min_days as f64)),
        Reason::AzureCpuP95Below { p95, limit } => (p95, Some(limit)),
        Reason::AzureRecentCpuMax { max, limit } => (max, Some(limit)),
        Reason::AzureNetBelow { bps, limit } => (bps, Some(limit)),
        Reason::GcpIdleShares { cpu, .. } => (cpu, Some(0.97)),
    }
}

/// `N VMs: x idle, y oversized, ...` plus what the idle VMs hold.
pub fn summary_line(r: &Report) -> String {
    let mut out = format!("{} VMs:", r.vms.len());
    for (i, c) in Category::ALL.iter().enumerate() {
        let sep = if i == 0 { " " } else { ", " };
        let _ = write!(out, "{sep}{} {}", r.count(*c), summary_word(*c));
    }
    let t = r.totals();
    if t.reclaimable_vcpus > 0 {
        let _ = write!(
            out,
            "; reclaimable now: {} vCPUs, {:.1} GiB",
            t.reclaimable_vcpus,
            t.reclaimable_mem_mib as f64 / 1024.0
        );
    }
    if t.moves > 0 {
        let _ = write!(out, "; {} to resize", t.moves);
    }
    if r.priced {
        let _ = write!(out, "; estimated savings {:.2} a month", t.savings);
        if t.growth_cost > 0.0 {
            let _ = write!(out, ", growing costs {:.2}", t.growth_cost);
        }
    }
    out
}

/// `datagrams: N lost, ...`: the sequence totals as a line, and rows whose
/// receive time went backwards when there are any (the collector's clock
/// stepped back: the window was then found by reading those files whole).
pub fn seq_line(r: &Report) -> String {
    let t = r.totals();
    let mut line = format!(
        "datagrams: {} lost, {} duplicated, {} out of order, {} seq jumps; {} agent restarts",
        t.lost, t.duplicates, t.out_of_order, t.seq_jumps, t.restarts
    );
    if t.recv_backwards > 0 {
        let _ = write!(
            line,
            "; {} rows received before the row ahead of them (the collector's clock stepped back)",
            t.recv_backwards
        );
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_format_in_si_units() {
        assert_eq!(fmt_rate(0.0), "0 B/s");
        assert_eq!(fmt_rate(410.4), "410 B/s");
        assert_eq!(fmt_rate(12_345.0), "12.3 kB/s");
        assert_eq!(fmt_rate(4_560_000.0), "4.6 MB/s");
    }

    #[test]
    fn utc_times() {
        assert_eq!(fmt_utc(0), "1970-01-01 00:00");
        assert_eq!(fmt_utc(1_764_110_400_123), "2025-11-25 22:40");
    }

    #[test]
    fn ages_round_down_to_a_readable_unit() {
        assert_eq!(fmt_age(59_999), "59s ago");
        assert_eq!(fmt_age(300_000), "5m ago");
        assert_eq!(fmt_age(3 * 3_600_000), "3h ago");
    }

    #[test]
    fn every_reason_has_words_and_figures() {
        let r = Reason::Quiet {
            quiet_ms: 181_000,
            intervals: 3,
            interval_s: 60,
        };
        assert_eq!(reason_text(&r), "nothing for 181 s > 3 x 60 s interval");
        assert_eq!(reason_figures(&r), (181.0, Some(180.0)));
        let both = [
            Reason::CpuNeed {
                percentile: 99.5,
                observed: 3.1,
                projected: None,
                factor: 1.2,
                need: 3.72,
                target: Some(4),
            },
            Reason::MemNeed {
                observed: 9.8,
                projected: None,
                factor: 1.2,
                need: 11.76,
                target: Some(16.0),
                alone: false,
            },
        ];
        assert_eq!(
            reasons_text(&both),
            "cpu p99.5 3.1 vCPUs x 1.2 = 3.7 -> 4 vCPUs, mem max 9.8 GiB x 1.2 = 11.8 -> 16 GiB"
        );
        assert_eq!(reason_figures(&both[0]), (3.72, Some(4.0)));
    }

    use crate::config::{Policy, Prices, ReportFormat};
    use crate::report::fixtures::*;
    use crate::report::policy::Rule;
    use crate::report::{Category, Report, Window};

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
    fn a_fleet_rendered_on_every_core_reads_as_each_vm_alone() {
        let sample = sample_report();
        let s = settings(Policy::Vmstats, None);
        let vms: Vec<_> = (0..PARALLEL_FROM as u32 + 7)
            .map(|i| {
                let mut vm = sample.vms[i as usize % 3].vm.clone();
                vm.ip = std::net::Ipv4Addr::from(0x7f10_0000 + i).into();
                vm
            })
            .collect();
        let fleet = Report::new(vms, &s, window());
        let alone = |v: &crate::report::VmReport, format| {
            let one = Report::new(vec![v.vm.clone()], &s, window());
            render(&one, format).lines().nth(1).unwrap().to_string()
        };
        let words = |l: &str| l.split_whitespace().collect::<Vec<_>>().join(" ");
        let csv = render(&fleet, ReportFormat::Csv);
        let table = render(&fleet, ReportFormat::Table);
        let (csv, table): (Vec<&str>, Vec<&str>) = (csv.lines().collect(), table.lines().collect());
        assert_eq!(csv.len(), fleet.vms.len() + 1);
        assert_eq!(table.len(), fleet.vms.len() + 3);
        assert!(csv[0].starts_with("ip,finding,"), "{}", csv[0]);
        let advice_at = table[0].find("ADVICE: REASON").unwrap();
        for (i, v) in fleet.vms.iter().enumerate() {
            assert_eq!(csv[i + 1], alone(v, ReportFormat::Csv), "csv row {i}");
            let row = table[i + 1];
            assert_eq!(
                words(row),
                words(&alone(v, ReportFormat::Table)),
                "table row {i}"
            );
            // Every row padded to the fleet's columns, not its run's.
            let b = row.as_bytes();
            assert!(
                b[advice_at - 1] == b' ' && b[advice_at] != b' ',
                "table row {i}: {row}"
            );
        }
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
        let empty = Report::new(vec![], &settings(Policy::Vmstats, None), window());
        assert_eq!(render(&empty, ReportFormat::Csv), "");
    }

    #[test]
    fn day_numbers_become_dates() {
        assert_eq!(date_of_day(0), "1970-01-01");
        assert_eq!(date_of_day(20_418), "2025-11-26");
        assert_eq!(date_of_day(11_016), "2000-02-29");
    }

    #[test]
    fn policy_all_shows_where_they_disagree() {
        // 1 % of 4 vCPUs, 1.1 kB/s: idle for vmstats and Azure; 95 MB a
        // day is no low day for AWS, which would shrink it instead; 0.04
        // vCPU is too busy for Google.
        let vm = fortnight(|_| (100, 3_600_000, 360_000));
        let end = Window::before(FORTNIGHT_END, None);
        let r = Report::new(vec![vm], &settings(Policy::All, None), end);
        let v = &r.vms[0];
        assert_eq!(v.verdict.category, Category::Idle, "vmstats decides");
        let others: Vec<(Rule, Category)> =
            v.others.iter().map(|(r, v)| (*r, v.category)).collect();
        assert_eq!(
            others,
            [
                (Rule::Aws, Category::Oversized),
                (Rule::Azure, Category::Idle),
                (Rule::Gcp, Category::Ok)
            ]
        );
        let table = render(&r, ReportFormat::Table);
        let head = table.lines().next().unwrap();
        assert!(
            head.starts_with("VM         CATEGORY  AWS                        AZURE  GCP  SAMPLES"),
            "{head}"
        );
        assert!(
            table.contains("  OVERSIZED -> 1 vCPU/4 GiB  IDLE  "),
            "{table}"
        );
        let json: serde_json::Value =
            serde_json::from_str(&render(&r, ReportFormat::Json)).unwrap();
        assert_eq!(json["policy"], "vmstats");
        assert_eq!(json["vms"][0]["findings_by_policy"]["gcp"], "OK");
        assert_eq!(json["vms"][0]["findings_by_policy"]["aws"], "OVERSIZED");
        assert_eq!(json["vms"][0]["targets_by_policy"]["aws"]["vcpus"], 1);
        assert!(json["vms"][0]["targets_by_policy"]["gcp"].is_null());
        let csv = render(&r, ReportFormat::Csv);
        assert!(csv.lines().next().unwrap().ends_with(",aws,azure,gcp"));
        assert!(
            csv.lines().nth(1).unwrap().ends_with(",OVERSIZED,IDLE,OK"),
            "{csv}"
        );
    }

    #[test]
    fn csv_and_json_carry_every_count_of_the_summary() {
        let vm = fortnight(|_| (100, 1_000, 1_000));
        let end = Window::before(FORTNIGHT_END, None);
        let r = Report::new(vec![vm], &settings(Policy::Vmstats, None), end);
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
        let r = Report::new(vec![idle, busy], &settings(Policy::All, prices), end);
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
        // The busy VM grows 1 point a day: sized for its trend, 8 vCPUs
        // and 4 GiB, drawn across its chart (CPU at the top edge, memory
        // at a quarter of today's 16 GiB).
        assert!(page.contains("<th id=\"th-recommendation\">Recommendation</th>"));
        assert!(
            page.contains("4 vCPU/16 GiB -&gt; 8 vCPU/4 GiB, risk very low, costs 28.00"),
            "{page}"
        );
        assert!(page.contains("<line class=\"tcpu\" x1=\"0\" y1=\"0.0\""));
        assert!(page.contains("<line class=\"tmem\" x1=\"0\" y1=\"27.0\""));
        assert!(page.contains("<div class=\"card\" id=\"moves\"><b>1</b>VMs to resize</div>"));
        assert!(page.contains("id=\"growth-cost\"><b>28.00</b>"));
    }

    #[test]
    fn a_one_day_chart_is_framed_dots_not_a_flat_line() {
        let mut one_day = summary_of(&[row(0, 4000, 2000, 0, 0), row(1, 6000, 2000, 0, 0)]);
        assert_eq!(one_day.days.len(), 1);
        one_day.ip = "127.1.0.3".parse().unwrap();
        let r = Report::new(
            vec![one_day, fortnight(|_| (100, 1_000, 1_000))],
            &settings(Policy::Vmstats, None),
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
}
