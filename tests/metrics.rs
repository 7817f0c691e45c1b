//! The Prometheus endpoint (`--metrics-listen`): what it counts, that
//! Prometheus's own checker accepts it, and that hostile HTTP clients
//! neither block the collector nor grow it.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use vmstats::wire;

fn threads_of(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap()
}

#[test]
fn a_scrape_counts_what_happened_and_promtool_accepts_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut agg = Aggregator::start(dir.path(), &HTTP_AND_REFRESH);
    let metrics = agg.metrics_addr();
    for (i, ip) in ["127.41.0.1", "127.41.0.2", "127.41.0.3"]
        .iter()
        .enumerate()
    {
        let sock = vm_socket(ip);
        for seq in 0..10 + i as u64 {
            send(&sock, agg.addr, &stat(seq));
        }
        // A datagram with a wrong magic: rejected, counted by reason.
        let mut bad = wire::encode(&stat(99)).to_vec();
        bad[0] ^= 0xff;
        sock.send_to(&bad, agg.addr).unwrap();
    }
    let (status, text) = http_get(metrics, "/healthz");
    assert_eq!((status, text.as_str()), (200, "ok\n"));
    let scrape = || http_get(metrics, "/metrics").1;
    let mut text = scrape();
    let started = Instant::now();
    while (metric(&text, "vmstats_rows_written_total") != Some(33.0)
        || !text.contains("vmstats_report_vms{"))
        && started.elapsed() < Duration::from_secs(20)
    {
        std::thread::sleep(Duration::from_millis(100));
        text = scrape();
    }
    let expect = [
        ("vmstats_datagrams_received_total", 36.0),
        ("vmstats_datagrams_accepted_total", 33.0),
        (
            "vmstats_datagrams_rejected_total{reason=\"bad_magic\"}",
            3.0,
        ),
        ("vmstats_datagrams_dropped_total{cause=\"queue_full\"}", 0.0),
        ("vmstats_rows_written_total", 33.0),
        ("vmstats_vms", 3.0),
        ("vmstats_receive_to_disk_seconds_count", 33.0),
        ("vmstats_report_vms{category=\"insufficient_data\"}", 0.0),
    ];
    for (name, value) in expect {
        assert_eq!(metric(&text, name), Some(value), "{name} in:\n{text}");
    }
    let categorized: f64 = text
        .lines()
        .filter(|l| l.starts_with("vmstats_report_vms{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(categorized, 3.0, "{text}");
    assert!(text.contains("# TYPE vmstats_receive_to_disk_seconds histogram"));
    assert!(text.contains("vmstats_build_info{version=\""));
    // Prometheus's own checker, where Debian's prometheus package is.
    let mut promtool = Command::new("promtool");
    promtool.args(["check", "metrics"]);
    match run_with_stdin(promtool, text.as_bytes()) {
        None => skip("promtool not installed (apt install prometheus)"),
        Some(out) => assert!(
            out.status.success(),
            "promtool check metrics:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
    assert!(agg.stop().success);
}

#[test]
fn hostile_http_clients_neither_block_the_collector_nor_grow_it() {
    let dir = tempfile::tempdir().unwrap();
    // The served report too, refreshed meanwhile: its pages are behind
    // the same limits.
    let mut agg = Aggregator::start(dir.path(), &HTTP_AND_REFRESH);
    let metrics = agg.metrics_addr();
    let written = || {
        metric(
            &http_get(metrics, "/metrics").1,
            "vmstats_rows_written_total",
        )
    };
    // The collector's own buffers and files first, so that what follows
    // measures the endpoint.
    load(agg.port(), 100, "20000", 10_000, "127.42.0.1", &[]);
    assert!(wait_until(Duration::from_secs(20), || written() == Some(10_000.0)));
    let (rss_before, threads_before) = (rss_kib(agg.pid()), threads_of(agg.pid()));
    // 300 connections that never send a byte, one that never ends its
    // header, and one that sends a 1 MB header.
    let idle: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(metrics).unwrap())
        .collect();
    let mut dribble = TcpStream::connect(metrics).unwrap();
    dribble.write_all(b"GET / HTTP/1.1\r\nX-Slow: ").unwrap();
    let mut huge = TcpStream::connect(metrics).unwrap();
    huge.write_all(b"GET /report.json HTTP/1.1\r\nX-Big: ")
        .unwrap();
    let megabyte = vec![b'a'; 1 << 20];
    // The server stops reading at its bound and answers 431: the write
    // may then fail, which is the point.
    let _ = huge.write_all(&megabyte);
    // Meanwhile the collector takes datagrams, and a scrape still works.
    load(agg.port(), 100, "20000", 10_000, "127.42.0.1", &[]);
    for _ in 0..20 {
        let _ = dribble.write_all(b"a");
        std::thread::sleep(Duration::from_millis(20));
    }
    let started = Instant::now();
    let (status, text) = http_get(metrics, "/metrics");
    assert_eq!(status, 200);
    let (page, html) = http_get(metrics, "/");
    assert_eq!(page, 200, "{html}");
    assert!(html.contains("127.42.0.1"));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(
        wait_until(Duration::from_secs(20), || written() == Some(20_000.0)),
        "rows written: {:?}\n{text}",
        written()
    );
    let (rss_after, threads_after) = (rss_kib(agg.pid()), threads_of(agg.pid()));
    // A refresh pass runs on two threads of its own (its reader and the
    // store's writer), there or not at either count; 300 clients holding
    // a thread each would be 300.
    assert!(
        threads_after <= threads_before + 2,
        "a thread per connection: {threads_before} then {threads_after}"
    );
    // The endpoint holds at most 64 connections of at most 8 KiB each.
    assert!(
        rss_after < rss_before + 16 * 1024,
        "RSS grew from {rss_before} to {rss_after} KiB"
    );
    drop(idle);
    let done = agg.stop();
    assert!(done.success);
    assert_eq!(done.counter("rows_written"), 20_000);
}

/// A scrape that fails instead of panicking: the status, 0 for none.
fn try_scrape(addr: std::net::SocketAddr) -> u16 {
    use std::io::Read;
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return 0;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
    if s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").is_err() {
        return 0;
    }
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn the_endpoint_outlives_running_out_of_descriptors() {
    let dir = tempfile::tempdir().unwrap();
    // 300 descriptors; the one worker takes its share of files from 400 VMs.
    let cmd = with_nofile_limit(
        300,
        &format!(
            "{AGGREGATOR} --listen 127.0.0.1:0 --data-dir {} --workers 1 --flush-interval 100ms --metrics-listen 127.0.0.1:0",
            dir.path().display()
        ),
    );
    let mut agg = Aggregator::from_command(cmd, dir.path());
    let metrics = agg.metrics_addr();
    load(agg.port(), 400, "4000", 8000, "127.43.0.1", &[]);
    // More connections than the endpoint may hold, held for a while.
    let held: Vec<TcpStream> = (0..200)
        .filter_map(|_| TcpStream::connect_timeout(&metrics, Duration::from_secs(1)).ok())
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    drop(held);
    let ok = (0..10).filter(|_| try_scrape(metrics) == 200).count();
    assert_eq!(ok, 10, "scrapes answered after the descriptors came back");
    let done = agg.stop();
    assert!(done.success, "{}", done.stderr);
    assert_eq!(done.counter("rows_written"), 8000);
}
