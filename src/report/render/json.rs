//! JSON, with the fields named as the cloud advisors name theirs (finding,
//! reasons, lookback_days, utilization), serialized by serde.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{advice, date_of_day, reason_figures, reason_text, reasons_text};
use crate::report::rightsize::{Need, Risk, Size, SizeOption, Trend};
use crate::report::summary::{Datagrams, SizeSummary, Utilization};
use crate::report::{Category, Report, Rule, VmReport};

#[derive(Serialize)]
struct Document<'a> {
    /// The rules whose verdict is each VM's finding.
    policy: &'static str,
    as_of_ms: u64,
    window_start_ms: Option<u64>,
    lookback_days: Option<f64>,
    summary: Summary,
    vms: Vec<Vm<'a>>,
}

#[derive(Serialize)]
struct Summary {
    vms: usize,
    idle: usize,
    oversized: usize,
    undersized: usize,
    silent: usize,
    insufficient_data: usize,
    ok: usize,
    reclaimable_vcpus: u64,
    reclaimable_mem_mib: u64,
    lost: u64,
    duplicates: u64,
    out_of_order: u64,
    seq_jumps: u64,
    restarts: u64,
    recv_backwards: u64,
    /// VMs whose recommended size is another than today's.
    resize: u64,
    estimated_monthly_savings: Option<f64>,
    /// What growing the undersized VMs costs a month.
    estimated_monthly_growth_cost: Option<f64>,
}

#[derive(Serialize)]
struct Vm<'a> {
    ip: String,
    finding: &'static str,
    advice: &'static str,
    /// Every applied policy's finding (one with `--policy` other than all).
    findings_by_policy: BTreeMap<&'static str, &'static str>,
    /// And its target size (null: none, or the rule does not size).
    targets_by_policy: BTreeMap<&'static str, Option<&'a Size>>,
    /// The deciding policy's sizing; null for a VM it could not judge.
    recommendation: Option<RecommendationOut<'a>>,
    reasons: Vec<ReasonOut>,
    reason: String,
    size: &'a SizeSummary,
    utilization: &'a Utilization,
    datagrams: &'a Datagrams,
    idle_days: u64,
    days_with_data: usize,
    days: Vec<Day>,
    estimated_monthly_savings: Option<f64>,
    last_seen_ms: u64,
    stopped: bool,
}

#[derive(Serialize)]
struct RecommendationOut<'a> {
    current: &'a Size,
    target: Option<&'a Size>,
    options: &'a [SizeOption],
    cpu_need_vcpus: f64,
    mem_need_gib: f64,
    /// How each need was found: the window's figure, the trend's
    /// projection when it decided, the factor.
    cpu: &'a Need,
    mem: &'a Need,
    trend: Option<&'a Trend>,
    current_performance_risk: &'a Risk,
    estimated_monthly_savings: Option<f64>,
}

#[derive(Serialize)]
struct Day {
    date: String,
    samples: u64,
    cpu_avg: f64,
    cpu_p95: f64,
    cpu_max: f64,
    mem_max: f64,
    net_bytes: u64,
    disk_bytes: u64,
    idle: bool,
}

#[derive(Serialize)]
struct ReasonOut {
    code: &'static str,
    value: f64,
    threshold: Option<f64>,
    text: String,
}

fn vm(r: &VmReport, rule: Rule) -> Vm<'_> {
    let v = &r.vm;
    let verdicts =
        || std::iter::once((rule, &r.verdict)).chain(r.others.iter().map(|(rule, v)| (*rule, v)));
    Vm {
        ip: v.ip.to_string(),
        finding: r.verdict.category.name(),
        advice: advice(r.verdict.category),
        findings_by_policy: verdicts()
            .map(|(rule, v)| (rule.name(), v.category.name()))
            .collect(),
        targets_by_policy: verdicts()
            .map(|(rule, v)| {
                let target = v.recommendation.as_ref().and_then(|r| r.target.as_ref());
                (rule.name(), target)
            })
            .collect(),
        recommendation: r
            .verdict
            .recommendation
            .as_ref()
            .map(|rec| RecommendationOut {
                current: &rec.current,
                target: rec.target.as_ref(),
                options: &rec.options,
                cpu_need_vcpus: rec.cpu.need,
                mem_need_gib: rec.mem.need,
                cpu: &rec.cpu,
                mem: &rec.mem,
                trend: rec.trend.as_ref(),
                current_performance_risk: &rec.current_risk,
                estimated_monthly_savings: r.savings,
            }),
        reasons: r
            .verdict
            .reasons
            .iter()
            .map(|reason| {
                let (value, threshold) = reason_figures(reason);
                ReasonOut {
                    code: reason.code(),
                    value,
                    threshold,
                    text: reason_text(reason),
                }
            })
            .collect(),
        reason: reasons_text(&r.verdict.reasons),
        size: &v.size,
        utilization: &v.utilization,
        datagrams: &v.datagrams,
        idle_days: r.idle_days(),
        days_with_data: v.days.len(),
        days: v
            .days
            .iter()
            .zip(&r.day_idle)
            .map(|(d, idle)| Day {
                date: date_of_day(d.day),
                samples: d.samples,
                cpu_avg: (d.cpu_avg * 100.0).round() / 100.0,
                cpu_p95: d.cpu_p95,
                cpu_max: d.cpu_max,
                mem_max: d.mem_max,
                net_bytes: d.net_bytes,
                disk_bytes: d.disk_bytes,
                idle: *idle,
            })
            .collect(),
        estimated_monthly_savings: r.savings,
        last_seen_ms: v.last_seen_ms,
        stopped: v.stopped,
    }
}

/// One VM's object of the report, its daily series included: what the
/// served `/vm/<address>.json` answers.
pub fn render_vm(r: &Report, v: &VmReport) -> String {
    serde_json::to_string_pretty(&vm(v, r.rules[0])).expect("a report serializes")
}

pub fn render(r: &Report) -> String {
    let t = r.totals();
    let doc = Document {
        policy: r.rules[0].name(),
        as_of_ms: r.window.as_of_ms,
        window_start_ms: r.window.from_ms,
        lookback_days: r.window.lookback_days(),
        summary: Summary {
            vms: r.vms.len(),
            idle: r.count(Category::Idle),
            oversized: r.count(Category::Oversized),
            undersized: r.count(Category::Undersized),
            silent: r.count(Category::Silent),
            insufficient_data: r.count(Category::InsufficientData),
            ok: r.count(Category::Ok),
            reclaimable_vcpus: t.reclaimable_vcpus,
            reclaimable_mem_mib: t.reclaimable_mem_mib,
            lost: t.lost,
            duplicates: t.duplicates,
            out_of_order: t.out_of_order,
            seq_jumps: t.seq_jumps,
            restarts: t.restarts,
            recv_backwards: t.recv_backwards,
            resize: t.moves,
            estimated_monthly_savings: r.priced.then_some(t.savings),
            estimated_monthly_growth_cost: r.priced.then_some(t.growth_cost),
        },
        vms: r.vms.iter().map(|v| vm(v, r.rules[0])).collect(),
    };
    let mut text = serde_json::to_string_pretty(&doc).expect("the report serializes");
    text.push('\n');
    text
}
