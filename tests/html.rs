//! The HTML report in a real browser: Debian's Chromium, headless, loads
//! the page, clicks a header (through the page's own handler, driven by
//! the URL fragment), and the rendered DOM is checked: rows, charts, the
//! sort, the filter. Skipped, with a message, where Chromium is absent
//! (`.ci/run` installs it).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use vmstats::wire::Stat;

fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser"].iter().find_map(|name| {
        let out = Command::new("which").arg(name).output().ok()?;
        out.status
            .success()
            .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    })
}

/// The DOM after load, for `page` with URL fragment `fragment`.
fn dump_dom(browser: &Path, page: &Path, fragment: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(browser);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .arg("--dump-dom")
    .arg(format!("file://{}#{fragment}", page.display()));
    let out = run_with_limit(cmd, Duration::from_secs(90));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// VM addresses in the order their rows stand in `dom`, with whether each
/// is shown.
fn rows(dom: &str) -> Vec<(String, bool)> {
    dom.split("<tr data-cat=")
        .skip(1)
        .map(|row| {
            let shown = !row[..row.find('>').unwrap()].contains("display: none");
            let ip = row.split("<td data-v=\"").nth(1).unwrap();
            (ip[..ip.find('"').unwrap()].to_string(), shown)
        })
        .collect()
}

#[test]
fn the_html_report_renders_sorts_and_filters_in_chromium() {
    let Some(browser) = chromium() else {
        skip("chromium is not installed (apt-get install chromium)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let agg = Aggregator::start(dir.path(), &[]);
    // Three VMs: CPU 30 %, 3 %, 60 %.
    for (ip, cpu) in [
        ("127.39.0.1", 3000u16),
        ("127.39.0.2", 300),
        ("127.39.0.3", 6000),
    ] {
        let sock = vm_socket(ip);
        for seq in 0..10 {
            let s = Stat {
                cpu_pct_x100: cpu,
                interval_s: 1,
                net_rx_bytes: 100,
                net_tx_bytes: 100,
                disk_read_bytes: 0,
                disk_write_bytes: 0,
                ..stat(seq)
            };
            send(&sock, agg.addr, &s);
        }
    }
    assert!(agg.stop().success);
    let page = dir.path().join("report.html");
    let os = |s: &'static str| std::ffi::OsStr::new(s);
    report_with(&[
        os("--report-format"),
        os("html"),
        os("--policy"),
        os("all"),
        os("--price-vcpu-month"),
        os("20"),
        os("--data-dir"),
        dir.path().as_os_str(),
        os("--report-file"),
        page.as_os_str(),
    ]);

    // As written: idle first (the report's order).
    let dom = dump_dom(&browser, &page, "");
    let order: Vec<String> = rows(&dom).into_iter().map(|(ip, _)| ip).collect();
    assert_eq!(order[0], "127.39.0.2", "{order:?}");
    assert_eq!(dom.matches("<svg class=\"chart\"").count(), 3);
    // One day of data each: dots in a frame, three series per chart.
    assert_eq!(dom.matches("<rect class=\"frame\"").count(), 3);
    assert_eq!(dom.matches("<circle class=").count(), 9);
    assert!(dom.contains("id=\"savings\""));
    assert!(dom.contains("<th id=\"th-datagrams\">Lost/dup/ooo/rst</th>"));
    assert!(
        dom.contains("<td data-v=\"0\">0/0/0/0</td>"),
        "no per-VM accounting"
    );
    assert_eq!(
        dom.matches("3 VMs: ").count(),
        0,
        "the summary once, as cards"
    );

    // A click on "CPU p95 %" sorts ascending; a second click, descending.
    let dom = dump_dom(&browser, &page, "click=th-cpu-p95");
    let order: Vec<String> = rows(&dom).into_iter().map(|(ip, _)| ip).collect();
    assert_eq!(order, ["127.39.0.2", "127.39.0.1", "127.39.0.3"]);
    assert!(
        dom.contains("<th id=\"th-cpu-p95\" aria-sort=\"ascending\">"),
        "{dom}"
    );

    // The category filter hides the rest.
    let dom = dump_dom(&browser, &page, "category=IDLE");
    let shown: Vec<String> = rows(&dom)
        .into_iter()
        .filter(|(_, shown)| *shown)
        .map(|(ip, _)| ip)
        .collect();
    assert_eq!(shown, ["127.39.0.2"]);
    assert!(dom.contains("<span id=\"shown\">1</span>"));
}
