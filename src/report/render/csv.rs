//! CSV: one flat row per VM, written by the csv crate (quoting is its job).

use serde::Serialize;

use super::{advice, reasons_text};
use crate::report::rightsize::RiskLevel;
use crate::report::{Report, Rule, VmReport};

#[derive(Serialize)]
struct Row {
    ip: String,
    finding: &'static str,
    advice: &'static str,
    reason: String,
    samples: u64,
    idle_days: u64,
    days_with_data: usize,
    vcpus: u16,
    mem_mib: u32,
    interval_s: u16,
    size_changes: u64,
    last_size_change_ms: Option<u64>,
    cpu_p50: f64,
    cpu_p95: f64,
    cpu_p99: f64,
    cpu_max: f64,
    mem_p95: f64,
    mem_max: f64,
    net_p95_bps: f64,
    disk_p95_bps: f64,
    /// The deciding policy's sizing (empty for a VM it could not judge).
    current_name: Option<String>,
    current_mem_gib: Option<f64>,
    current_price_month: Option<f64>,
    target_name: Option<String>,
    target_vcpus: Option<u32>,
    target_mem_gib: Option<f64>,
    target_price_month: Option<f64>,
    cpu_need_vcpus: Option<f64>,
    mem_need_gib: Option<f64>,
    risk_share: Option<f64>,
    risk_level: Option<RiskLevel>,
    trend_decided: Option<bool>,
    estimated_monthly_savings: Option<f64>,
    lost: u64,
    duplicates: u64,
    out_of_order: u64,
    restarts: u64,
    seq_jumps: u64,
    recv_backwards: u64,
    bad_rows: u64,
    authenticated: u64,
    unauthenticated_rows: u64,
    last_seen_ms: u64,
    stopped: bool,
    /// Each vendor's finding with `--policy all`, else empty; last, so the
    /// columns before them do not move with the policy.
    aws: Option<&'static str>,
    azure: Option<&'static str>,
    gcp: Option<&'static str>,
}

fn row(r: &VmReport) -> Row {
    let v = &r.vm;
    let rec = r.verdict.recommendation.as_ref();
    let target = rec.and_then(|rec| rec.target.as_ref());
    let risk = rec
        .and_then(|rec| rec.options.first())
        .map(|o| o.performance_risk);
    let by = |rule: Rule| {
        r.others
            .iter()
            .find(|(other, _)| *other == rule)
            .map(|(_, verdict)| verdict.category.name())
    };
    Row {
        ip: v.ip.to_string(),
        finding: r.verdict.category.name(),
        advice: advice(r.verdict.category),
        reason: reasons_text(&r.verdict.reasons),
        samples: v.datagrams.samples,
        idle_days: r.idle_days(),
        days_with_data: v.days.len(),
        vcpus: v.size.vcpus,
        mem_mib: v.size.mem_mib,
        interval_s: v.size.interval_s,
        size_changes: v.size.size_changes,
        last_size_change_ms: v.size.last_size_change_ms,
        cpu_p50: v.utilization.cpu_p50,
        cpu_p95: v.utilization.cpu_p95,
        cpu_p99: v.utilization.cpu_p99,
        cpu_max: v.utilization.cpu_max,
        mem_p95: v.utilization.mem_p95,
        mem_max: v.utilization.mem_max,
        net_p95_bps: v.utilization.net_p95_bps,
        disk_p95_bps: v.utilization.disk_p95_bps,
        current_name: rec.and_then(|rec| rec.current.name.as_deref().map(str::to_string)),
        current_mem_gib: rec.map(|rec| rec.current.mem_gib),
        current_price_month: rec.and_then(|rec| rec.current.price_month),
        target_name: target.and_then(|t| t.name.as_deref().map(str::to_string)),
        target_vcpus: target.map(|t| t.vcpus),
        target_mem_gib: target.map(|t| t.mem_gib),
        target_price_month: target.and_then(|t| t.price_month),
        cpu_need_vcpus: rec.map(|rec| rec.cpu.need),
        mem_need_gib: rec.map(|rec| rec.mem.need),
        risk_share: risk.map(|r| r.share),
        risk_level: risk.map(|r| r.level),
        trend_decided: rec.map(|rec| rec.trend.is_some_and(|t| t.cpu_decided || t.mem_decided)),
        estimated_monthly_savings: r.savings,
        lost: v.datagrams.lost,
        duplicates: v.datagrams.duplicates,
        out_of_order: v.datagrams.out_of_order,
        restarts: v.datagrams.restarts,
        seq_jumps: v.datagrams.seq_jumps,
        recv_backwards: v.datagrams.recv_backwards,
        bad_rows: v.datagrams.bad_rows,
        authenticated: v.datagrams.authenticated,
        unauthenticated_rows: v.datagrams.unauthenticated_rows,
        last_seen_ms: v.last_seen_ms,
        stopped: v.stopped,
        aws: by(Rule::Aws),
        azure: by(Rule::Azure),
        gcp: by(Rule::Gcp),
    }
}

pub fn render(r: &Report) -> String {
    let runs = super::in_parallel(&r.vms, |i, vms| {
        // The header once, before the first run's rows.
        let mut w = csv::WriterBuilder::new()
            .has_headers(i == 0)
            .from_writer(Vec::new());
        for v in vms {
            w.serialize(row(v)).expect("a row serializes into memory");
        }
        let bytes = w.into_inner().expect("writing to memory cannot fail");
        String::from_utf8(bytes).expect("the rows are UTF-8")
    });
    super::joined(runs)
}
