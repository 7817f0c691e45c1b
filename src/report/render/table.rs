//! The table: one aligned line per VM, then the fleet's summary lines.

use std::fmt::Write as _;

use super::{
    advice, finding_text, fmt_age, fmt_rate, reasons_text, recommendation_text, seq_line,
    summary_line,
};
use crate::report::{Report, Rule, VmReport};

const HEAD: [&str; 15] = [
    "VM",
    "CATEGORY",
    "SAMPLES",
    "AUTH",
    "IDLE_DAYS",
    "VCPU",
    "MEM_MIB",
    "CPU% p50/p95/p99/max",
    "MEM% p95/max",
    "NET p95",
    "DISK p95",
    "LOST/DUP/OOO/RST",
    "SEEN",
    "RECOMMENDATION",
    "ADVICE: REASON",
];

/// Columns aligned to the right (numbers).
const RIGHT: [&str; 5] = ["SAMPLES", "AUTH", "IDLE_DAYS", "VCPU", "MEM_MIB"];

fn cells(r: &VmReport, as_of_ms: u64) -> Vec<String> {
    let v = &r.vm;
    let mut advice_text = format!(
        "{}: {}",
        advice(r.verdict.category),
        reasons_text(&r.verdict.reasons)
    );
    if v.size.size_changes > 0 {
        let when = v.size.last_size_change_ms.map_or(String::new(), |t| {
            format!(", last {}", fmt_age(as_of_ms.saturating_sub(t)))
        });
        let _ = write!(
            advice_text,
            " (size changed {} times{when}; the most frequent is shown)",
            v.size.size_changes
        );
    }
    if v.datagrams.seq_jumps > 0 {
        let _ = write!(advice_text, " ({} seq jumps)", v.datagrams.seq_jumps);
    }
    if v.datagrams.unauthenticated_rows > 0 {
        let _ = write!(
            advice_text,
            " ({} rows without proof ignored)",
            v.datagrams.unauthenticated_rows
        );
    }
    let mut cells = vec![
        v.ip.to_string(),
        r.verdict.category.name().to_string(),
        v.datagrams.samples.to_string(),
        super::auth_share(&v.datagrams),
        format!("{}/{}", r.idle_days(), v.days.len()),
        v.size.vcpus.to_string(),
        v.size.mem_mib.to_string(),
        format!(
            "{:.1}/{:.1}/{:.1}/{:.1}",
            v.utilization.cpu_p50,
            v.utilization.cpu_p95,
            v.utilization.cpu_p99,
            v.utilization.cpu_max
        ),
        format!("{:.1}/{:.1}", v.utilization.mem_p95, v.utilization.mem_max),
        fmt_rate(v.utilization.net_p95_bps),
        fmt_rate(v.utilization.disk_p95_bps),
        format!(
            "{}/{}/{}/{}",
            v.datagrams.lost,
            v.datagrams.duplicates,
            v.datagrams.out_of_order,
            v.datagrams.restarts
        ),
        fmt_age(as_of_ms.saturating_sub(v.last_seen_ms)),
        recommendation_text(&r.verdict, r.savings),
        advice_text,
    ];
    for (i, (_, other)) in r.others.iter().enumerate() {
        cells.insert(OTHERS_AT + i, finding_text(other));
    }
    cells
}

/// Where `--policy all` puts one column per vendor: after CATEGORY.
const OTHERS_AT: usize = 2;

/// A vendor column's header: `AWS`, `AZURE`, `GCP`.
fn rule_header(rule: Rule) -> &'static str {
    match rule {
        Rule::Vmstats => "VMSTATS",
        Rule::Aws => "AWS",
        Rule::Azure => "AZURE",
        Rule::Gcp => "GCP",
    }
}

/// One line of cells padded to `widths` (the last one as it is), pushed
/// straight onto `out`: at a million VMs the table is a million lines.
fn line<S: AsRef<str>>(out: &mut String, cells: &[S], widths: &[usize], right: &[bool]) {
    let start = out.len();
    for (i, cell) in cells.iter().enumerate() {
        let cell = cell.as_ref();
        if i + 1 == cells.len() {
            out.push_str(cell);
            break;
        }
        let pad = widths[i].saturating_sub(cell.len());
        if right[i] {
            out.extend(std::iter::repeat_n(' ', pad));
            out.push_str(cell);
        } else {
            out.push_str(cell);
            out.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str("  ");
    }
    let kept = out[start..].trim_end().len();
    out.truncate(start + kept);
    out.push('\n');
}

pub fn render(r: &Report) -> String {
    let mut head = HEAD.to_vec();
    for (i, rule) in r.rules[1..].iter().enumerate() {
        head.insert(OTHERS_AT + i, rule_header(*rule));
    }
    let runs: Vec<Vec<Vec<String>>> = super::in_parallel(&r.vms, |_, vms| {
        vms.iter().map(|v| cells(v, r.window.as_of_ms)).collect()
    });
    let mut widths: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for row in runs.iter().flatten() {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let right: Vec<bool> = head.iter().map(|h| RIGHT.contains(h)).collect();
    let line_len = widths.iter().sum::<usize>() + 64;
    let lines = super::each_on_a_thread(&runs, |i, rows| {
        let mut out = String::with_capacity((rows.len() + 1) * line_len);
        if i == 0 {
            line(&mut out, &head, &widths, &right);
        }
        for row in rows {
            line(&mut out, row, &widths, &right);
        }
        out
    });
    drop(runs);
    let mut out = super::joined(lines);
    out.push_str(&summary_line(r));
    out.push('\n');
    out.push_str(&seq_line(r));
    out.push('\n');
    out
}
