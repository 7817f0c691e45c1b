//! HTML: one self-contained file (styles, script and charts inline, nothing
//! fetched, so it opens on an air-gapped laptop). The fleet summary on top;
//! a table that sorts by any column (click its header) and filters by
//! category; per VM its recommended size (current -> target, the risk,
//! the money), a small framed chart of its daily CPU p95 and max and
//! memory max over the window with the target's capacity drawn across it
//! (inline SVG; one day is drawn as dots, since a line needs two), its
//! datagram accounting, when it was last seen, and the reason in words.
//!
//! The page reads two things from its URL's fragment, so a headless
//! browser can drive it without a remote-control protocol:
//! `#click=ID` clicks the element with that id once the page has loaded
//! (a real click event, through the same handler as a person's), and
//! `#category=IDLE` sets the filter.

use std::fmt::Write as _;

use super::{
    advice, date_of_day, finding_text, fmt_age, fmt_rate, reasons_text, recommendation_text,
    seq_line,
};
use crate::report::{Category, Report, VmReport};

/// Escapes text for HTML content and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const CHART_W: f64 = 140.0;
const CHART_H: f64 = 36.0;

/// Height on the chart of a percentage (0 at the bottom, 100 at the top).
fn y_of(pct: f64) -> f64 {
    CHART_H - pct.clamp(0.0, 100.0) / 100.0 * CHART_H
}

/// One daily series of class `class`: a line over the days, or with one
/// day a dot in the middle (a one-point line would not show, and a flat
/// line across reads as a divider).
fn series(class: &str, values: &[f64]) -> String {
    if let [only] = values {
        return format!(
            "<circle class=\"{class}\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\"/>",
            CHART_W / 2.0,
            y_of(*only)
        );
    }
    let step = CHART_W / (values.len().max(2) - 1) as f64;
    let mut points = String::new();
    for (i, v) in values.iter().enumerate() {
        let _ = write!(points, "{:.1},{:.1} ", i as f64 * step, y_of(*v));
    }
    format!(
        "<polyline class=\"{class}\" points=\"{}\"/>",
        points.trim_end()
    )
}

/// The target's CPU and memory capacity as lines across the chart, in
/// percent of today's size (above 100 % they sit on the top edge), so the
/// reader sees the daily figures fit under them.
fn target_lines(r: &VmReport) -> String {
    let (Some(rec), Some(target)) = (&r.verdict.recommendation, r.verdict.move_target()) else {
        return String::new();
    };
    let cpu = f64::from(target.vcpus) / f64::from(rec.current.vcpus.max(1)) * 100.0;
    let mem = target.mem_gib / rec.current.mem_gib.max(f64::MIN_POSITIVE) * 100.0;
    let line = |class: &str, pct: f64| {
        format!(
            "<line class=\"{class}\" x1=\"0\" y1=\"{y:.1}\" x2=\"{CHART_W}\" y2=\"{y:.1}\"/>",
            y = y_of(pct)
        )
    };
    format!("{}{}", line("tcpu", cpu), line("tmem", mem))
}

/// The VM's daily CPU p95 (solid), CPU max (dotted) and memory max chart.
fn chart(r: &VmReport) -> String {
    let days = &r.vm.days;
    if days.is_empty() {
        return String::new();
    }
    let p95: Vec<f64> = days.iter().map(|d| d.cpu_p95).collect();
    let max: Vec<f64> = days.iter().map(|d| d.cpu_max).collect();
    let mem: Vec<f64> = days.iter().map(|d| d.mem_max).collect();
    let mut title = String::new();
    for d in days {
        let _ = writeln!(
            title,
            "{}: cpu p95 {:.1}%, max {:.1}%; mem max {:.1}%",
            date_of_day(d.day),
            d.cpu_p95,
            d.cpu_max,
            d.mem_max
        );
    }
    if let Some(target) = r.verdict.move_target() {
        let _ = write!(title, "target {}", super::size_text(target));
    }
    // A frame (0 and 100 %) and a 50 % line make it read as a chart.
    format!(
        "<svg class=\"chart\" width=\"{CHART_W}\" height=\"{CHART_H}\" viewBox=\"-1 -1 {} {}\" role=\"img\"><title>{}</title>\
<rect class=\"frame\" x=\"0\" y=\"0\" width=\"{CHART_W}\" height=\"{CHART_H}\"/>\
<line class=\"grid\" x1=\"0\" y1=\"{:.1}\" x2=\"{CHART_W}\" y2=\"{:.1}\"/>{}{}{}{}</svg>",
        CHART_W + 2.0,
        CHART_H + 2.0,
        esc(title.trim_end()),
        y_of(50.0),
        y_of(50.0),
        series("cpumax", &max),
        series("mem", &mem),
        series("cpu", &p95),
        target_lines(r),
    )
}

/// One cell: shown text, and the value the column sorts by.
fn cell(text: &str, sort: impl std::fmt::Display) -> String {
    format!(
        "<td data-v=\"{}\">{}</td>",
        esc(&sort.to_string()),
        esc(text)
    )
}

const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}\
h1{font-size:1.3em}\
.cards{display:flex;flex-wrap:wrap;gap:.6em;margin:.8em 0}\
.card{border:1px solid #ccc;border-radius:6px;padding:.4em .8em}\
.card b{display:block;font-size:1.4em}\
table{border-collapse:collapse;width:100%}\
th,td{border-bottom:1px solid #e4e4e4;padding:.25em .5em;text-align:left;vertical-align:middle}\
th{cursor:pointer;background:#f4f4f4;position:sticky;top:0;user-select:none}\
th[aria-sort=ascending]::after{content:' \\25B2'}th[aria-sort=descending]::after{content:' \\25BC'}\
td.n{text-align:right}\
.IDLE{color:#0a6}.OVERSIZED{color:#06a}.UNDERSIZED{color:#c40}.SILENT{color:#a0a}.INSUFFICIENT_DATA{color:#888}\
svg.chart polyline{fill:none;stroke-width:1.5}\
svg.chart .frame{fill:#fafafa;stroke:#ccc;stroke-width:1}svg.chart .grid{stroke:#e0e0e0;stroke-width:1}\
svg.chart .cpu{stroke:#1565c0}svg.chart .cpumax{stroke:#5c8fd6;stroke-dasharray:4 2}svg.chart .mem{stroke:#ef6c00}\
svg.chart .tcpu{stroke:#1565c0;stroke-width:1;stroke-dasharray:1 2}svg.chart .tmem{stroke:#ef6c00;stroke-width:1;stroke-dasharray:1 2}\
svg.chart circle{stroke:none}svg.chart circle.cpu{fill:#1565c0}svg.chart circle.cpumax{fill:#5c8fd6}svg.chart circle.mem{fill:#ef6c00}\
.legend span{margin-right:1em}";

const SCRIPT: &str = r#"(function () {
  var table = document.getElementById('vms');
  var body = table.tBodies[0];
  function value(row, i) {
    var v = row.cells[i].getAttribute('data-v');
    var n = parseFloat(v);
    return isNaN(n) ? v : n;
  }
  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, i) {
    th.addEventListener('click', function () {
      var asc = th.getAttribute('aria-sort') !== 'ascending';
      Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) { h.removeAttribute('aria-sort'); });
      th.setAttribute('aria-sort', asc ? 'ascending' : 'descending');
      // Each row's key once, then one move of all rows: at 10,000 rows
      // reading attributes in the comparator and a reflow per row cost
      // seconds.
      var keyed = Array.prototype.map.call(body.rows, function (r) { return [value(r, i), r]; });
      keyed.sort(function (a, b) {
        var x = a[0], y = b[0];
        var c = (typeof x === 'number' && typeof y === 'number') ? x - y : (x < y ? -1 : x > y ? 1 : 0);
        return asc ? c : -c;
      });
      var moved = document.createDocumentFragment();
      keyed.forEach(function (k) { moved.appendChild(k[1]); });
      body.appendChild(moved);
    });
  });
  var filter = document.getElementById('category');
  function apply() {
    var want = filter.value, shown = 0;
    Array.prototype.forEach.call(body.rows, function (r) {
      var on = want === 'all' || r.getAttribute('data-cat') === want;
      r.style.display = on ? '' : 'none';
      if (on) shown++;
    });
    document.getElementById('shown').textContent = shown;
  }
  filter.addEventListener('change', apply);
  var hash = decodeURIComponent(location.hash.slice(1));
  hash.split('&').forEach(function (kv) {
    var p = kv.split('=');
    if (p[0] === 'category') { filter.value = p[1]; apply(); }
    if (p[0] === 'click') { var el = document.getElementById(p[1]); if (el) el.click(); }
  });
})();"#;

pub fn render(r: &Report) -> String {
    let t = r.totals();
    let mut out = String::with_capacity(4096 + r.vms.len() * 1200);
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width\">");
    out.push_str("<title>vmstats reclamation report</title><style>");
    out.push_str(STYLE);
    out.push_str("</style></head><body>\n<h1>vmstats reclamation report</h1>\n<p>");
    let window = match r.window.lookback_days() {
        Some(days) => format!("the {days:.0} days before"),
        None => "everything up to".to_string(),
    };
    let _ = write!(
        out,
        "Policy <b>{}</b>; rows received in {window} {} UTC.</p>\n<div class=\"cards\">",
        esc(r.rules[0].name()),
        esc(&super::fmt_utc(r.window.as_of_ms)),
    );
    let _ = write!(
        out,
        "<div class=\"card\" id=\"total-vms\"><b>{}</b>VMs</div>",
        r.vms.len()
    );
    for c in Category::ALL {
        let _ = write!(
            out,
            "<div class=\"card {0}\" id=\"card-{0}\"><b>{1}</b>{2}</div>",
            c.name(),
            r.count(c),
            esc(super::summary_word(c))
        );
    }
    let _ = write!(
        out,
        "<div class=\"card\" id=\"reclaimable\"><b>{} vCPUs, {:.1} GiB</b>reclaimable now</div>",
        t.reclaimable_vcpus,
        t.reclaimable_mem_mib as f64 / 1024.0
    );
    if r.priced {
        let _ = write!(
            out,
            "<div class=\"card\" id=\"savings\"><b>{:.2}</b>estimated savings a month</div>",
            t.savings
        );
        if t.growth_cost > 0.0 {
            let _ = write!(
                out,
                "<div class=\"card\" id=\"growth-cost\"><b>{:.2}</b>a month to grow the undersized</div>",
                t.growth_cost
            );
        }
    }
    let _ = write!(
        out,
        "<div class=\"card\" id=\"moves\"><b>{}</b>VMs to resize</div>",
        t.moves
    );
    // The cards are the summary; the datagram totals are not in them.
    out.push_str("</div>\n<p id=\"datagrams\">");
    out.push_str(&esc(&seq_line(r)));
    out.push_str(
        "</p>\n<p><label>Category <select id=\"category\"><option value=\"all\">all</option>",
    );
    for c in Category::ALL {
        let _ = write!(out, "<option value=\"{0}\">{0}</option>", c.name());
    }
    let _ = writeln!(
        out,
        "</select></label> <span id=\"shown\">{}</span> shown. <span class=\"legend\">Chart, per day: \
<span style=\"color:#1565c0\">CPU p95</span><span style=\"color:#5c8fd6\">CPU max (dashed)</span>\
<span style=\"color:#ef6c00\">memory max</span> (0-100 % of today's size, line at 50 %; dotted: the target's capacity)</span></p>",
        r.vms.len()
    );
    let mut head: Vec<(&str, &str)> = vec![("th-vm", "VM"), ("th-category", "Category")];
    for (i, rule) in r.rules[1..].iter().enumerate() {
        head.push((["th-p1", "th-p2", "th-p3"][i.min(2)], rule.name()));
    }
    head.extend([
        ("th-samples", "Samples"),
        ("th-auth", "Auth"),
        ("th-idle-days", "Idle days"),
        ("th-vcpus", "vCPUs"),
        ("th-mem-mib", "MiB"),
        ("th-cpu-p95", "CPU p95 %"),
        ("th-cpu-max", "CPU max %"),
        ("th-mem-max", "Mem max %"),
        ("th-net", "Net p95"),
        ("th-disk", "Disk p95"),
        ("th-datagrams", "Lost/dup/ooo/rst"),
        ("th-seen", "Seen"),
    ]);
    if r.priced {
        head.push(("th-savings", "Save/month"));
    }
    head.extend([
        ("th-recommendation", "Recommendation"),
        ("th-chart", "Daily"),
        ("th-reason", "Advice: reason"),
    ]);
    out.push_str("<table id=\"vms\"><thead><tr>");
    for (id, label) in &head {
        let _ = write!(out, "<th id=\"{id}\">{}</th>", esc(label));
    }
    out.push_str("</tr></thead><tbody>\n");
    for v in &r.vms {
        let s = &v.vm;
        let cat = v.verdict.category.name();
        let _ = write!(out, "<tr data-cat=\"{cat}\">");
        out.push_str(&cell(&s.ip.to_string(), s.ip));
        let _ = write!(out, "<td class=\"{cat}\" data-v=\"{cat}\">{cat}</td>");
        for (_, other) in &v.others {
            let name = other.category.name();
            let text = esc(&finding_text(other));
            let _ = write!(out, "<td class=\"{name}\" data-v=\"{name}\">{text}</td>");
        }
        out.push_str(&cell(&s.datagrams.samples.to_string(), s.datagrams.samples));
        out.push_str(&cell(
            &super::auth_share(&s.datagrams),
            s.datagrams.authenticated,
        ));
        let idle = format!("{}/{}", v.idle_days(), s.days.len());
        out.push_str(&cell(&idle, v.idle_days()));
        out.push_str(&cell(&s.size.vcpus.to_string(), s.size.vcpus));
        out.push_str(&cell(&s.size.mem_mib.to_string(), s.size.mem_mib));
        out.push_str(&cell(
            &format!("{:.1}", s.utilization.cpu_p95),
            s.utilization.cpu_p95,
        ));
        out.push_str(&cell(
            &format!("{:.1}", s.utilization.cpu_max),
            s.utilization.cpu_max,
        ));
        out.push_str(&cell(
            &format!("{:.1}", s.utilization.mem_max),
            s.utilization.mem_max,
        ));
        out.push_str(&cell(
            &fmt_rate(s.utilization.net_p95_bps),
            s.utilization.net_p95_bps,
        ));
        out.push_str(&cell(
            &fmt_rate(s.utilization.disk_p95_bps),
            s.utilization.disk_p95_bps,
        ));
        let datagrams = format!(
            "{}/{}/{}/{}",
            s.datagrams.lost,
            s.datagrams.duplicates,
            s.datagrams.out_of_order,
            s.datagrams.restarts
        );
        out.push_str(&cell(&datagrams, s.datagrams.lost));
        let age = r.window.as_of_ms.saturating_sub(s.last_seen_ms);
        out.push_str(&cell(&fmt_age(age), age));
        if let Some(saved) = v.savings {
            out.push_str(&cell(&format!("{saved:.2}"), saved));
        }
        let target = v
            .verdict
            .recommendation
            .as_ref()
            .and_then(|rec| rec.target.as_ref());
        out.push_str(&cell(
            &recommendation_text(&v.verdict, v.savings),
            target.map_or(0, |t| t.vcpus),
        ));
        let _ = write!(
            out,
            "<td data-v=\"{}\">{}</td>",
            s.utilization.cpu_p95,
            chart(v)
        );
        let reason = format!(
            "{}: {}",
            advice(v.verdict.category),
            reasons_text(&v.verdict.reasons)
        );
        out.push_str(&cell(&reason, &reason));
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table>\n<script>");
    out.push_str(SCRIPT);
    out.push_str("</script>\n</body></html>\n");
    out
}
