//! The HTML report in a real browser: Debian's Chromium, headless, loads
//! the page, clicks a header (through the page's own handler, driven by
//! the URL fragment), and the rendered DOM is checked: rows, charts, the
//! sort, the filter. Skipped, with a message, where Chromium is absent
//! (`.ci/run` installs it).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

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
    dump_url(browser, &format!("file://{}#{fragment}", page.display()))
}

/// The DOM after load of `url`.
fn dump_url(browser: &Path, url: &str) -> String {
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
    .arg(url);
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

/// Three VMs, 10 datagrams each `interval_s` apart by their own account:
/// CPU 30 % (127.39.0.1), 3 % (.2, idle) and 60 % (.3).
fn send_three_vms(to: SocketAddr, interval_s: u16) {
    for (ip, cpu) in [
        ("127.39.0.1", 3000u16),
        ("127.39.0.2", 300),
        ("127.39.0.3", 6000),
    ] {
        let sock = vm_socket(ip);
        for seq in 0..10 {
            let s = Stat {
                cpu_pct_x100: cpu,
                interval_s,
                net_rx_bytes: 100,
                net_tx_bytes: 100,
                disk_read_bytes: 0,
                disk_write_bytes: 0,
                ..stat(seq)
            };
            send(&sock, to, &s);
        }
    }
}

#[test]
fn the_html_report_renders_sorts_and_filters_in_chromium() {
    let Some(browser) = chromium() else {
        skip("chromium is not installed (apt-get install chromium)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let agg = Aggregator::start(dir.path(), &[]);
    send_three_vms(agg.addr, 1);
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

/// A GET of `path` with `headers`: the answer's head and its body.
fn get(addr: SocketAddr, path: &str, headers: &str) -> (String, Vec<u8>) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: vmstats\r\n{headers}\r\n").unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let at = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    (
        String::from_utf8_lossy(&all[..at]).into_owned(),
        all[at..].to_vec(),
    )
}

/// The live aggregator's own page, served from its latest refresh: every
/// VM shown, sorted by a header click, filtered by category, in Chromium;
/// gzip when asked, 304 for a page the client has, each VM's series.
#[test]
fn the_served_report_loads_sorts_and_filters_in_chromium() {
    let Some(browser) = chromium() else {
        skip("chromium is not installed (apt-get install chromium)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut agg = Aggregator::start(dir.path(), &HTTP_AND_REFRESH);
    let http = agg.metrics_addr();
    let (head, _) = get(http, "/", "");
    assert!(
        head.starts_with("HTTP/1.1 503"),
        "before the first pass: {head}"
    );
    // A minute apart: not SILENT for the test's length.
    send_three_vms(agg.addr, 60);
    // The next passes see the rows once they are in the files.
    let started = Instant::now();
    loop {
        let (head, body) = get(http, "/report.json", "");
        if head.starts_with("HTTP/1.1 200") {
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
            if json["summary"]["vms"] == 3 {
                break;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no report of 3 VMs"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let url = format!("http://{http}/");
    let order = |dom: &str| -> Vec<String> { rows(dom).into_iter().map(|(ip, _)| ip).collect() };
    let dom = dump_url(&browser, &url);
    assert_eq!(order(&dom).len(), 3, "every VM shown");
    let dom = dump_url(&browser, &format!("{url}#click=th-cpu-p95"));
    assert_eq!(order(&dom), ["127.39.0.2", "127.39.0.1", "127.39.0.3"]);
    let dom = dump_url(&browser, &format!("{url}#category=IDLE"));
    let shown: Vec<String> = rows(&dom)
        .into_iter()
        .filter(|(_, shown)| *shown)
        .map(|(ip, _)| ip)
        .collect();
    assert_eq!(shown, ["127.39.0.2"]);

    // gzip when asked, with a validator; the same validator gets 304.
    let (head, body) = get(http, "/", "Accept-Encoding: br, gzip;q=0.8\r\n");
    assert!(head.contains("Content-Encoding: gzip"), "{head}");
    let mut html = String::new();
    flate2::read::GzDecoder::new(&body[..])
        .read_to_string(&mut html)
        .unwrap();
    assert!(html.contains("127.39.0.3"));
    let etag_of = |head: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix("ETag: "))
            .expect("an ETag")
            .to_string()
    };
    // A pass every 200 ms makes a new page (and tag): asked right after,
    // the page is almost always still the one the client has.
    let mut etag = etag_of(&head);
    let not_modified = (0..20).any(|_| {
        let (head, body) = get(http, "/", &format!("If-None-Match: {etag}\r\n"));
        if head.starts_with("HTTP/1.1 304") {
            assert!(body.is_empty());
            return true;
        }
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        etag = etag_of(&head);
        false
    });
    assert!(not_modified, "never 304 for the page the client has");
    // A VM's daily series; a VM not in the report, a bad address.
    let (head, body) = get(http, "/vm/127.39.0.2.json", "");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let vm: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(vm["ip"], "127.39.0.2");
    assert_eq!(vm["days"].as_array().unwrap().len(), 1);
    assert_eq!(vm["finding"], "IDLE");
    assert!(
        get(http, "/vm/10.9.9.9.json", "")
            .0
            .starts_with("HTTP/1.1 404")
    );
    assert!(
        get(http, "/vm/nonsense.json", "")
            .0
            .starts_with("HTTP/1.1 404")
    );
    assert!(agg.stop().success);
}
