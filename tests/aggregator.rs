//! End-to-end tests of `udp-aggregator` (and `udp-vmsim` as its load): the
//! real binaries on port 0, a temp dir each.

mod common;

use std::time::Duration;

use common::*;
use vmstats::wire::{self, Stat};

#[test]
fn five_vms_twenty_datagrams_each_land_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let agg = Aggregator::start(dir.path(), &[]);
    let vms: Vec<_> = (1..=5)
        .map(|i| vm_socket(&format!("127.2.0.{i}")))
        .collect();
    let mut sent: Vec<Vec<Stat>> = vec![Vec::new(); 5];
    for seq in 0..20 {
        for (i, sock) in vms.iter().enumerate() {
            let mut s = stat(seq);
            s.vcpus = i as u16 + 1;
            s.cpu_pct_x100 = (seq * 100 + i as u64) as u16;
            s.mem_pct_x100 = 10_000 - seq as u16;
            s.net_rx_bytes = u64::MAX - seq;
            s.flags = u8::from(seq == 19);
            send(sock, agg.addr, &s);
            sent[i].push(s);
        }
    }
    let done = agg.stop();
    assert!(done.success, "{}", done.stderr);
    assert_eq!(done.counter("accepted"), 100);
    assert_eq!(done.counter("rows_written"), 100);
    let (files, _) = count_files_and_rows(dir.path());
    assert_eq!(files, 5);
    for (i, expected) in sent.iter().enumerate() {
        let path = dir.path().join(format!("127.2.0.{}.csv", i + 1));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(wire::CSV_HEADER));
        assert_eq!(text.matches(wire::CSV_HEADER).count(), 1);
        let rows = read_rows(&path);
        assert_eq!(rows.len(), 20);
        let got: Vec<Stat> = rows.iter().map(|r| r.stat).collect();
        assert_eq!(&got, expected);
        let now = vmstats::unix_ms();
        assert!(
            rows.iter()
                .all(|r| r.recv_ms <= now && r.recv_ms + 60_000 > now)
        );
    }
}

#[test]
fn a_thousand_vms_from_distinct_addresses_lose_no_row() {
    let dir = tempfile::tempdir().unwrap();
    let agg = Aggregator::start(dir.path(), &[]);
    // Round-robin: 10,000 datagrams over 1000 VMs is 10 each, seq 0..9.
    load(agg.port(), 1000, "5000", 10_000, "127.10.0.1", &[]);
    let done = agg.stop();
    assert_eq!(done.counter("accepted"), 10_000, "{}", done.stderr);
    assert_eq!(count_files_and_rows(dir.path()), (1000, 10_000));
    let rows = read_rows(&dir.path().join("127.10.3.231.csv"));
    let seqs: Vec<u64> = rows.iter().map(|r| r.stat.seq).collect();
    assert_eq!(seqs, (0..10).collect::<Vec<u64>>());
}

#[test]
fn two_receivers_share_the_port_and_keep_one_file_per_vm() {
    let dir = tempfile::tempdir().unwrap();
    let mut agg = Aggregator::start(
        dir.path(),
        &["--receivers", "2", "--metrics-listen", "127.0.0.1:0"],
    );
    assert!(
        agg.first_line().contains("2 receivers"),
        "{}",
        agg.first_line()
    );
    let metrics = agg.metrics_addr();
    // 200 VMs, each from its own address and port: the kernel spreads the
    // 4-tuples over both sockets.
    let socks: Vec<_> = (1..=200)
        .map(|i| vm_socket(&format!("127.43.0.{i}")))
        .collect();
    for seq in 0..25 {
        for sock in &socks {
            send(sock, agg.addr, &stat(seq));
        }
    }
    let text = || http_get(metrics, "/metrics").1;
    assert!(wait_until(Duration::from_secs(10), || metric(
        &text(),
        "vmstats_datagrams_received_total"
    ) == Some(5000.0)));
    let per = |r: &str| {
        metric(
            &text(),
            &format!("vmstats_receiver_datagrams_total{{receiver=\"{r}\"}}"),
        )
    };
    let (r0, r1) = (per("0").unwrap(), per("1").unwrap());
    assert_eq!(r0 + r1, 5000.0);
    assert!(
        r0 > 0.0 && r1 > 0.0,
        "one receiver took everything: {r0} / {r1}"
    );
    let done = agg.stop();
    assert!(done.success, "{}", done.stderr);
    // One writer per VM whichever socket its datagrams came in on.
    assert_eq!(count_files_and_rows(dir.path()), (200, 5000));
    let seqs: Vec<u64> = read_rows(&dir.path().join("127.43.0.77.csv"))
        .iter()
        .map(|r| r.stat.seq)
        .collect();
    assert_eq!(seqs, (0..25).collect::<Vec<u64>>());
}

#[test]
fn a_second_collector_with_several_receivers_is_refused_the_port() {
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = Aggregator::start(one.path(), &["--receivers", "2"]);
    let listen = first.addr.to_string();
    let mut cmd = std::process::Command::new(AGGREGATOR);
    cmd.args(["--listen", &listen, "--receivers", "2", "--data-dir"])
        .arg(two.path());
    let out = run_with_limit(cmd, Duration::from_secs(10));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the second one started: {stderr}");
    assert!(
        stderr.contains(&format!("another process already listens on {listen}")),
        "{stderr}"
    );
    // The first one keeps the whole fleet.
    let sock = vm_socket("127.43.1.1");
    send(&sock, first.addr, &stat(0));
    let done = first.stop();
    assert_eq!(done.counter("accepted"), 1, "{}", done.stderr);
}

#[test]
fn sigterm_while_datagrams_flow_keeps_every_accepted_row() {
    let dir = tempfile::tempdir().unwrap();
    let agg = Aggregator::start(dir.path(), &["--flush-interval", "5s"]);
    let mut sim = std::process::Command::new(VMSIM)
        .args([
            "--server",
            &agg.addr.to_string(),
            "--count",
            "200",
            "--rate",
            "20000",
        ])
        .args(["--duration", "20s", "--src-base", "127.11.0.1"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let done = agg.stop();
    let _ = sim.kill();
    let _ = sim.wait();
    assert!(done.success, "{}", done.stderr);
    let accepted = done.counter("accepted");
    assert!(accepted > 1000, "too little traffic to test: {accepted}");
    let (_, rows) = count_files_and_rows(dir.path());
    assert_eq!(rows as u64, accepted);
}

#[test]
fn restart_appends_without_a_second_header() {
    let dir = tempfile::tempdir().unwrap();
    let sock = vm_socket("127.2.1.1");
    for round in 0..2u64 {
        let agg = Aggregator::start(dir.path(), &[]);
        for seq in 0..5 {
            send(&sock, agg.addr, &stat(round * 5 + seq));
        }
        assert!(agg.stop().success);
    }
    let path = dir.path().join("127.2.1.1.csv");
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.matches("recv_ms,").count(), 1);
    let seqs: Vec<u64> = read_rows(&path).iter().map(|r| r.stat.seq).collect();
    assert_eq!(seqs, (0..10).collect::<Vec<u64>>());
}

#[test]
fn each_rejection_reason_is_counted_and_never_written() {
    let dir = tempfile::tempdir().unwrap();
    let agg = Aggregator::start(dir.path(), &["--allow", "127.3.0.0/16"]);
    let good = vm_socket("127.3.0.1");
    let valid = wire::encode(&stat(1));
    let mut bad_magic = valid;
    bad_magic[0] = b'X';
    let mut bad_version = valid;
    bad_version[4] = 2;
    let mut bad_field = valid;
    bad_field[5] = 0x04;
    good.send_to(&valid[..71], agg.addr).unwrap();
    good.send_to(&[0u8; 1500], agg.addr).unwrap();
    good.send_to(&bad_magic, agg.addr).unwrap();
    good.send_to(&bad_version, agg.addr).unwrap();
    good.send_to(&bad_field, agg.addr).unwrap();
    vm_socket("127.4.0.1").send_to(&valid, agg.addr).unwrap();
    good.send_to(&valid, agg.addr).unwrap();
    let done = agg.stop();
    for (reason, n) in [
        ("bad_length", 2),
        ("bad_magic", 1),
        ("bad_version", 1),
        ("bad_field", 1),
        ("not_allowed", 1),
    ] {
        assert_eq!(done.counter(reason), n, "{reason}");
    }
    assert_eq!(done.counter("received"), 7);
    assert_eq!(done.counter("accepted"), 1);
    assert_eq!(count_files_and_rows(dir.path()), (1, 1));
    assert!(!dir.path().join("127.4.0.1.csv").exists());
}

#[test]
fn ipv6_listener_names_mapped_sources_by_their_ipv4_address() {
    let dir = tempfile::tempdir().unwrap();
    let agg = Aggregator::start_on("[::]:0", dir.path(), &[]);
    let to_v4 = std::net::SocketAddr::from(([127, 0, 0, 1], agg.port()));
    let to_v6 = std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, agg.port()));
    send(&vm_socket("127.2.2.2"), to_v4, &stat(0));
    send(&vm_socket("::1"), to_v6, &stat(0));
    let done = agg.stop();
    assert_eq!(done.counter("accepted"), 2, "{}", done.stderr);
    assert_eq!(read_rows(&dir.path().join("127.2.2.2.csv")).len(), 1);
    assert_eq!(read_rows(&dir.path().join("__1.csv")).len(), 1);
}

#[test]
fn simulated_vms_count_from_zero_and_end_with_the_final_flag() {
    let dir = tempfile::tempdir().unwrap();
    let agg = Aggregator::start(dir.path(), &[]);
    vmsim(
        agg.port(),
        &[
            "--count",
            "5",
            "--interval",
            "100ms",
            "--duration",
            "1s",
            "--src-base",
            "127.12.0.1",
        ],
    );
    let done = agg.stop();
    assert!(done.success);
    for i in 1..=5 {
        let rows = read_rows(&dir.path().join(format!("127.12.0.{i}.csv")));
        assert!(rows.len() >= 8, "{} rows", rows.len());
        let seqs: Vec<u64> = rows.iter().map(|r| r.stat.seq).collect();
        assert_eq!(seqs, (0..rows.len() as u64).collect::<Vec<_>>());
        assert!(rows.iter().all(|r| r.stat.boot_id == rows[0].stat.boot_id));
        let finals: Vec<bool> = rows.iter().map(|r| r.stat.is_final()).collect();
        assert_eq!(finals.iter().filter(|f| **f).count(), 1);
        assert!(finals[finals.len() - 1]);
        assert_eq!(rows[0].stat.interval_s, 1);
    }
    // The report at exit found a fifth of them idle.
    assert!(done.stdout.contains("5 VMs: 1 idle"), "{}", done.stdout);
}

#[test]
fn report_file_takes_the_report_off_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("report.csv");
    let data = dir.path().join("data");
    let agg = Aggregator::start(
        &data,
        &[
            "--report-format",
            "csv",
            "--report-file",
            file.to_str().unwrap(),
        ],
    );
    for seq in 0..6 {
        send(&vm_socket("127.2.3.1"), agg.addr, &stat(seq));
    }
    let done = agg.stop();
    assert!(done.success, "{}", done.stderr);
    assert_eq!(done.stdout, "");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.starts_with("ip,finding,"), "{text}");
    assert!(text.contains("\n127.2.3.1,OVERSIZED,shrink,"), "{text}");
}

#[test]
fn discard_counts_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let agg = Aggregator::start(&data, &["--discard"]);
    assert!(agg.first_line().contains("discard"), "{}", agg.first_line());
    load(agg.port(), 10, "max", 640, "127.13.0.1", &["--gso", "16"]);
    let done = agg.stop();
    assert!(done.success, "{}", done.stderr);
    assert_eq!(done.counter("received"), 640);
    assert_eq!(done.counter("accepted"), 0);
    assert!(!data.exists());
    assert_eq!(done.stdout, "");
}

#[test]
fn gso_sends_arrive_as_separate_datagrams_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let agg = Aggregator::start(dir.path(), &[]);
    load(agg.port(), 3, "max", 96, "127.14.0.1", &["--gso", "16"]);
    let done = agg.stop();
    assert_eq!(done.counter("accepted"), 96);
    for i in 1..=3 {
        let seqs: Vec<u64> = read_rows(&dir.path().join(format!("127.14.0.{i}.csv")))
            .iter()
            .map(|r| r.stat.seq)
            .collect();
        assert_eq!(seqs, (0..32).collect::<Vec<_>>());
    }
}

#[test]
fn duration_stops_by_itself_and_prints_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let agg = Aggregator::start(
        dir.path(),
        &["--duration", "300ms", "--report-format", "json"],
    );
    let done = agg.wait();
    assert!(done.success, "{}", done.stderr);
    let json: serde_json::Value = serde_json::from_str(&done.stdout).unwrap();
    assert!(json["as_of_ms"].as_u64().is_some(), "{}", done.stdout);
    assert_eq!(json["lookback_days"], 14.0);
    assert_eq!(json["summary"]["vms"], 0);
}

#[test]
fn ten_thousand_vms_under_256_open_files() {
    let dir = tempfile::tempdir().unwrap();
    let cmd = with_nofile_limit(
        256,
        &format!(
            "{AGGREGATOR} --listen 127.0.0.1:0 --data-dir {} --flush-interval 100ms --workers 1",
            dir.path().display()
        ),
    );
    let agg = Aggregator::from_command(cmd, dir.path());
    // 256 less the 64 kept for sockets and stdio.
    assert!(
        agg.first_line().contains(" 192 open files each"),
        "{}",
        agg.first_line()
    );
    load(agg.port(), 10000, "10000", 20_000, "127.35.0.1", &[]);
    let done = agg.stop();
    assert!(done.success, "{}", done.stderr);
    assert_eq!(done.counter("accepted"), 20_000, "{}", done.stderr);
    assert_eq!(count_files_and_rows(dir.path()), (10_000, 20_000));
}
