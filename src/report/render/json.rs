//! JSON, with the fields named as the cloud advisors name theirs (finding,
//! reasons, lookback_days, utilization), serialized by serde.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{advice, date_of_day, reason_figures, reason_text, reasons_text};
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
    estimated_monthly_savings: Option<f64>,
}

#[derive(Serialize)]
struct Vm<'a> {
    ip: String,
    finding: &'static str,
    advice: &'static str,
    /// Every applied policy's finding (one with `--policy` other than all).
    findings_by_policy: BTreeMap<&'static str, &'static str>,
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
    Vm {
        ip: v.ip.to_string(),
        finding: r.verdict.category.name(),
        advice: advice(r.verdict.category),
        findings_by_policy: std::iter::once((rule, &r.verdict))
            .chain(r.others.iter().map(|(rule, v)| (*rule, v)))
            .map(|(rule, v)| (rule.name(), v.category.name()))
            .collect(),
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
            estimated_monthly_savings: r.priced.then_some(t.savings),
        },
        vms: r.vms.iter().map(|v| vm(v, r.rules[0])).collect(),
    };
    let mut text = serde_json::to_string_pretty(&doc).expect("the report serializes");
    text.push('\n');
    text
}
