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

/// A run of rows' cells in one string, each cell ending where `ends`
/// says and each row's first cell at `rows`: three allocations a run
/// where a string a cell made fifteen million at a million VMs, and a
/// string a row still took a million allocations and their fresh pages
/// (a sixth of a cached report's time, then a twentieth).
struct Cells {
    text: String,
    ends: Vec<usize>,
    rows: Vec<usize>,
}

impl Cells {
    /// Room for `rows` rows of about a table line each.
    fn with_rows(rows: usize) -> Cells {
        Cells {
            text: String::with_capacity(rows * 256),
            ends: Vec::with_capacity(rows * HEAD.len()),
            rows: Vec::with_capacity(rows),
        }
    }

    /// Starts the next row.
    fn row(&mut self) {
        self.rows.push(self.ends.len());
    }

    fn push(&mut self, cell: std::fmt::Arguments) {
        let _ = self.text.write_fmt(cell);
        self.end();
    }

    /// Ends the cell written into `text` since the last.
    fn end(&mut self) {
        self.ends.push(self.text.len());
    }

    fn len(&self) -> usize {
        self.rows.len()
    }

    /// Row `i`'s cells.
    fn cells(&self, i: usize) -> impl ExactSizeIterator<Item = &str> {
        let last = self.rows.get(i + 1).copied().unwrap_or(self.ends.len());
        (self.rows[i]..last).map(|c| {
            let start = if c == 0 { 0 } else { self.ends[c - 1] };
            &self.text[start..self.ends[c]]
        })
    }
}

/// `r`'s row, appended to `c`.
fn row(c: &mut Cells, r: &VmReport, as_of_ms: u64) {
    let v = &r.vm;
    c.row();
    c.push(format_args!("{}", v.ip));
    c.push(format_args!("{}", r.verdict.category.name()));
    for (_, other) in &r.others {
        c.push(format_args!("{}", finding_text(other)));
    }
    c.push(format_args!("{}", v.datagrams.samples));
    c.push(format_args!("{}", super::auth_share(&v.datagrams)));
    c.push(format_args!("{}/{}", r.idle_days(), v.days.len()));
    c.push(format_args!("{}", v.size.vcpus));
    c.push(format_args!("{}", v.size.mem_mib));
    let u = &v.utilization;
    c.push(format_args!(
        "{:.1}/{:.1}/{:.1}/{:.1}",
        u.cpu_p50, u.cpu_p95, u.cpu_p99, u.cpu_max
    ));
    c.push(format_args!("{:.1}/{:.1}", u.mem_p95, u.mem_max));
    c.push(format_args!("{}", fmt_rate(u.net_p95_bps)));
    c.push(format_args!("{}", fmt_rate(u.disk_p95_bps)));
    let d = &v.datagrams;
    c.push(format_args!(
        "{}/{}/{}/{}",
        d.lost, d.duplicates, d.out_of_order, d.restarts
    ));
    c.push(format_args!(
        "{}",
        fmt_age(as_of_ms.saturating_sub(v.last_seen_ms))
    ));
    c.push(format_args!(
        "{}",
        recommendation_text(&r.verdict, r.savings)
    ));
    let _ = write!(
        c.text,
        "{}: {}",
        advice(r.verdict.category),
        reasons_text(&r.verdict.reasons)
    );
    if v.size.size_changes > 0 {
        let when = v.size.last_size_change_ms.map_or(String::new(), |t| {
            format!(", last {}", fmt_age(as_of_ms.saturating_sub(t)))
        });
        let _ = write!(
            c.text,
            " (size changed {} times{when}; the most frequent is shown)",
            v.size.size_changes
        );
    }
    if d.seq_jumps > 0 {
        let _ = write!(c.text, " ({} seq jumps)", d.seq_jumps);
    }
    if d.unauthenticated_rows > 0 {
        let _ = write!(
            c.text,
            " ({} rows without proof ignored)",
            d.unauthenticated_rows
        );
    }
    c.end();
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
fn line<'a>(
    out: &mut String,
    cells: impl ExactSizeIterator<Item = &'a str>,
    widths: &[usize],
    right: &[bool],
) {
    let start = out.len();
    let n = cells.len();
    for (i, cell) in cells.enumerate() {
        if i + 1 == n {
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
    let runs: Vec<Cells> = super::in_parallel(&r.vms, |_, vms| {
        let mut c = Cells::with_rows(vms.len());
        for v in vms {
            row(&mut c, v, r.window.as_of_ms);
        }
        c
    });
    let mut widths: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for run in &runs {
        for i in 0..run.len() {
            for (w, cell) in widths.iter_mut().zip(run.cells(i)) {
                *w = (*w).max(cell.len());
            }
        }
    }
    let right: Vec<bool> = head.iter().map(|h| RIGHT.contains(h)).collect();
    let line_len = widths.iter().sum::<usize>() + 64;
    let lines = super::each_on_a_thread(&runs, |i, run| {
        let mut out = String::with_capacity((run.len() + 1) * line_len);
        if i == 0 {
            line(&mut out, head.iter().copied(), &widths, &right);
        }
        for row in 0..run.len() {
            line(&mut out, run.cells(row), &widths, &right);
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
