//! The reclamation report end to end: hand-built VMs that land in each
//! category, and the live report agreeing with `report --data-dir`.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use vmstats::wire::{FLAG_FINAL, Stat};

/// `n` samples of one shape, 1 s interval, from `ip`.
fn send_series(agg: &Aggregator, ip: &str, n: u64, shape: impl Fn(u64) -> Stat) {
    let sock = vm_socket(ip);
    for seq in 0..n {
        let mut s = shape(seq);
        s.seq = seq;
        s.interval_s = 1;
        send(&sock, agg.addr, &s);
    }
}

fn shaped(cpu_x100: u16, mem_x100: u16, net_bps: u64, disk_bps: u64) -> impl Fn(u64) -> Stat {
    move |seq| Stat {
        cpu_pct_x100: cpu_x100,
        mem_pct_x100: mem_x100,
        net_rx_bytes: net_bps / 2,
        net_tx_bytes: net_bps - net_bps / 2,
        disk_read_bytes: disk_bps,
        disk_write_bytes: 0,
        ..stat(seq)
    }
}

fn category_of(json: &serde_json::Value, ip: &str) -> String {
    json["vms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["ip"] == ip)
        .unwrap_or_else(|| panic!("{ip} not in report"))["finding"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn each_category_and_live_equals_offline() {
    let dir = tempfile::tempdir().unwrap();
    let agg = Aggregator::start(dir.path(), &["--report-format", "json"]);
    // SILENT: 1 s interval, no final flag, then nothing for over 3 s.
    send_series(&agg, "127.20.0.6", 10, shaped(5000, 5000, 50_000, 0));
    std::thread::sleep(Duration::from_millis(3500));
    send_series(&agg, "127.20.0.1", 10, shaped(310, 6000, 410, 0));
    send_series(&agg, "127.20.0.2", 10, shaped(2200, 3100, 50_000, 0));
    send_series(&agg, "127.20.0.3", 10, shaped(9100, 5000, 50_000, 0));
    send_series(&agg, "127.20.0.4", 10, shaped(5000, 6000, 50_000, 0));
    send_series(&agg, "127.20.0.5", 3, shaped(100, 100, 0, 0));
    // Quiet long ago too, but it said goodbye: judged on its data (IDLE).
    send_series(&agg, "127.20.0.7", 10, |seq| Stat {
        flags: if seq == 9 { FLAG_FINAL } else { 0 },
        ..shaped(100, 2000, 100, 0)(seq)
    });
    let done = agg.stop();
    assert!(done.success, "{}", done.stderr);
    let live: serde_json::Value = serde_json::from_str(&done.stdout).unwrap();
    let expected = [
        ("127.20.0.1", "IDLE"),
        ("127.20.0.2", "OVERSIZED"),
        ("127.20.0.3", "UNDERSIZED"),
        ("127.20.0.4", "OK"),
        ("127.20.0.5", "INSUFFICIENT_DATA"),
        ("127.20.0.6", "SILENT"),
        ("127.20.0.7", "IDLE"),
    ];
    for (ip, cat) in expected {
        assert_eq!(category_of(&live, ip), cat, "{ip}");
    }
    assert_eq!(live["summary"]["idle"], 2);

    // The same files, read again by the report command at the same moment.
    let as_of = live["as_of_ms"].to_string();
    let out = Command::new(AGGREGATOR)
        .args([
            "report",
            "--report-format",
            "json",
            "--as-of",
            &as_of,
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), done.stdout);

    // And the table form says the same, idle first.
    let out = Command::new(AGGREGATOR)
        .args(["report", "--as-of", &as_of, "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let table = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[1].starts_with("127.20.0.1  IDLE"), "{table}");
    assert!(
        lines[1].ends_with("reclaim: p95 cpu 3.1% < 10%, net 410 B/s, disk 0 B/s"),
        "{table}"
    );
    assert_eq!(
        lines[lines.len() - 2],
        "7 VMs: 2 idle, 1 oversized, 1 undersized, 1 silent, 1 insufficient data, 1 ok; reclaimable now: 8 vCPUs, 16.0 GiB; 2 to resize"
    );
}

#[test]
fn thresholds_are_flags() {
    let dir = tempfile::tempdir().unwrap();
    let agg = Aggregator::start(dir.path(), &[]);
    // Half of 4 vCPUs busy (x 1.2 = 2.4, so 4) and 60 % of 8 GiB (5.8, so 8).
    send_series(&agg, "127.21.0.1", 10, shaped(5000, 6000, 410, 0));
    assert!(agg.stop().success);
    let report = |extra: &[&str]| {
        let out = Command::new(AGGREGATOR)
            .args(["report", "--report-format", "csv", "--data-dir"])
            .arg(dir.path())
            .args(extra)
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    assert!(report(&[]).contains("127.21.0.1,OK,"));
    assert!(report(&["--idle-cpu-pct", "60"]).contains("127.21.0.1,IDLE,"));
    assert!(report(&["--min-samples", "11"]).contains("127.21.0.1,INSUFFICIENT_DATA,"));
    // 2 busy x 2.5 = 5 vCPUs: more than today's 4.
    assert!(report(&["--cpu-headroom", "150"]).contains("127.21.0.1,UNDERSIZED,grow,"));
    assert!(report(&["--mem-headroom", "100"]).contains("127.21.0.1,UNDERSIZED,grow,"));
}

/// A VM file of 200 rows a minute apart before `as_of` on a 4-vCPU,
/// 16-GiB VM: 1 vCPU busy (one sample at 4), 5 GiB in use.
fn write_m6i_xlarge(dir: &std::path::Path, as_of: u64) {
    let mut text = vmstats::wire::CSV_HEADER.as_bytes().to_vec();
    for i in 0..200u64 {
        let s = Stat {
            vcpus: 4,
            mem_mib: 16_384,
            cpu_pct_x100: if i == 100 { 10_000 } else { 2500 },
            mem_pct_x100: 3125,
            net_rx_bytes: 3_000_000,
            ..stat(i)
        };
        vmstats::wire::push_row(&mut text, as_of - (200 - i) * 60_000, &s);
    }
    std::fs::write(dir.join("127.22.0.1.csv"), text).unwrap();
}

#[test]
fn the_example_catalog_names_the_target_its_risk_and_the_money() {
    let dir = tempfile::tempdir().unwrap();
    // Now: a part last written before the window would not be read.
    let as_of = vmstats::unix_ms();
    write_m6i_xlarge(dir.path(), as_of);
    let catalog =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/catalog-example.csv");
    let report = |format: &str| {
        let out = report_with(&[
            "--data-dir".as_ref(),
            dir.path().as_os_str(),
            "--as-of".as_ref(),
            as_of.to_string().as_ref(),
            "--catalog".as_ref(),
            catalog.as_os_str(),
            "--report-format".as_ref(),
            format.as_ref(),
        ]);
        String::from_utf8(out).unwrap()
    };
    // P99.5 1 vCPU x 1.2 and 5 GiB x 1.2 = 6: m6i.large (2, 8 GiB) is the
    // cheapest that holds it; the one minute at 4 vCPUs is 0.5 %: low.
    let table = report("table");
    assert!(
        table.contains(
            "4 vCPU/16 GiB (m6i.xlarge) -> 2 vCPU/8 GiB (m6i.large), risk low, saves 70.08"
        ),
        "{table}"
    );
    assert!(
        table.contains("; 1 to resize; estimated savings 70.08 a month"),
        "{table}"
    );
    let json: serde_json::Value = serde_json::from_str(&report("json")).unwrap();
    let rec = &json["vms"][0]["recommendation"];
    let names: Vec<&str> = rec["options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["m6i.large", "r6i.large", "c6i.xlarge"]);
    assert_eq!(rec["target"]["price_month"], 70.08);
    assert_eq!(rec["options"][0]["performance_risk"]["level"], "low");
    assert_eq!(rec["options"][0]["performance_risk"]["share"], 0.005);
    assert_eq!(rec["options"][0]["projected_utilization"]["cpu_max"], 200.0);
    assert_eq!(rec["cpu_need_vcpus"], 1.2);
    assert_eq!(rec["estimated_monthly_savings"], 140.16 - 70.08);
    assert!(rec["trend"].is_null(), "one day of data");
    let csv = report("csv");
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let head = reader.headers().unwrap().clone();
    let row = reader.records().next().unwrap().unwrap();
    let col = |name: &str| &row[head.iter().position(|h| h == name).unwrap()];
    assert_eq!(
        (col("target_name"), col("target_vcpus"), col("risk_level")),
        ("m6i.large", "2", "low")
    );
}

#[test]
fn seq_accounting_sees_skips_repeats_reorders_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let agg = Aggregator::start(dir.path(), &["--report-format", "json"]);
    let sock = vm_socket("127.36.0.1");
    // seq 0 1 2 4 3 3 7 (lost 5 and 6, 3 late and twice), then a restart.
    for seq in [0, 1, 2, 4, 3, 3, 7] {
        send(&sock, agg.addr, &stat(seq));
    }
    for seq in 0..3 {
        let mut s = stat(seq);
        s.boot_id = 0xB007;
        send(&sock, agg.addr, &s);
    }
    let done = agg.stop();
    let json: serde_json::Value = serde_json::from_str(&done.stdout).unwrap();
    let vm = &json["vms"][0]["datagrams"];
    // The repeated 3 counts once: 9 distinct rows.
    assert_eq!(vm["samples"], 9);
    assert_eq!(vm["lost"], 2);
    assert_eq!(vm["duplicates"], 1);
    assert_eq!(vm["out_of_order"], 1);
    assert_eq!(vm["restarts"], 1);
    assert_eq!(json["summary"]["lost"], 2);
    assert_eq!(json["summary"]["restarts"], 1);
}

#[test]
fn one_spoofed_datagram_changes_no_verdict_and_no_total() {
    let dir = tempfile::tempdir().unwrap();
    let agg = Aggregator::start(dir.path(), &["--report-format", "json"]);
    // An idle VM, then one forged datagram from its address: another boot,
    // a huge size, a 3600 s interval, the last seq there is, a final flag.
    send_series(&agg, "127.37.0.1", 20, shaped(310, 6000, 410, 0));
    let forged = Stat {
        flags: FLAG_FINAL,
        interval_s: 3600,
        boot_id: 0xF00D,
        vcpus: u16::MAX,
        mem_mib: u32::MAX,
        seq: u64::MAX,
        ..shaped(310, 6000, 410, 0)(0)
    };
    send(&vm_socket("127.37.0.1"), agg.addr, &forged);
    let done = agg.stop();
    assert!(done.success, "{}", done.stderr);
    let json: serde_json::Value = serde_json::from_str(&done.stdout).unwrap();
    let vm = &json["vms"][0];
    assert_eq!(vm["finding"], "IDLE");
    assert_eq!(vm["size"]["vcpus"], 4, "the test vector's size, not 65535");
    assert_eq!(vm["size"]["interval_s"], 1);
    assert_eq!(vm["stopped"], false, "a final flag from another boot");
    assert_eq!(vm["datagrams"]["lost"], 0);
    assert_eq!(json["summary"]["reclaimable_vcpus"], 4);
}

#[test]
fn two_aggregators_fed_the_same_datagrams_report_each_once() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let agg_a = Aggregator::start(a.path(), &[]);
    let agg_b = Aggregator::start(b.path(), &[]);
    let sock = vm_socket("127.38.0.1");
    for seq in 0..20 {
        // A misses seq 5, B misses seq 12; everything else reaches both.
        if seq != 5 {
            send(&sock, agg_a.addr, &stat(seq));
        }
        if seq != 12 {
            send(&sock, agg_b.addr, &stat(seq));
        }
    }
    assert!(agg_a.stop().success && agg_b.stop().success);
    let os = |s: &'static str| std::ffi::OsStr::new(s);
    let stdout = report_with(&[
        os("--report-format"),
        os("json"),
        os("--window"),
        os("all"),
        os("--data-dir"),
        a.path().as_os_str(),
        os("--data-dir"),
        b.path().as_os_str(),
    ]);
    let json: serde_json::Value = serde_json::from_slice(&stdout).unwrap();
    assert_eq!(json["summary"]["vms"], 1);
    let d = &json["vms"][0]["datagrams"];
    assert_eq!(
        (d["samples"].as_u64(), d["lost"].as_u64()),
        (Some(20), Some(0))
    );
    assert_eq!(d["duplicates"], 0);
}

#[test]
fn one_row_out_of_time_order_hides_nothing_and_is_counted() {
    // 4,000 rows 20 s apart within one UTC day, CPU 90 % then 1 %; the
    // row just past the byte midpoint says it was received 1 ms after the
    // epoch (a clock stepped back). A window search trusting that row
    // skips half the file and calls the VM idle.
    let dir = tempfile::tempdir().unwrap();
    let start = 20_416 * 86_400_000u64;
    let mut file = vmstats::wire::CSV_HEADER.as_bytes().to_vec();
    for i in 0..4000u64 {
        let stat = Stat {
            seq: i,
            interval_s: 20,
            cpu_pct_x100: if i < 2000 { 9000 } else { 100 },
            ..vmstats::wire::TEST_VECTOR
        };
        vmstats::wire::push_row(&mut file, start + i * 20_000, &stat);
    }
    // Rewritten in place to the same width; the midpoint of the rows'
    // bytes, where a search starts.
    let header = vmstats::wire::CSV_HEADER.len();
    let mid = header + (file.len() - header) / 2;
    let at = mid + file[mid..].iter().position(|b| *b == b'\n').unwrap() + 1;
    file[at..at + 13].copy_from_slice(b"0000000000001");
    std::fs::write(dir.path().join("127.38.0.1.csv"), &file).unwrap();
    let as_of = (start + 4000 * 20_000).to_string();
    let report_of = |args: &[&str]| -> Vec<u8> {
        let mut all: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
        all.extend(["--as-of", &as_of, "--data-dir"].map(std::ffi::OsStr::new));
        all.push(dir.path().as_os_str());
        report_with(&all)
    };
    let json_of = |window: &str| -> serde_json::Value {
        serde_json::from_slice(&report_of(&["--report-format", "json", "--window", window]))
            .unwrap()
    };
    // The last 12 hours: rows 1,840 to 3,999 but the one dated 1970, 160
    // of them at 90 %. Once with no summary cache (a plain file stands
    // where it would go), once through it.
    std::fs::write(dir.path().join(".vmstats"), "").unwrap();
    let scanned = json_of("12h");
    std::fs::remove_file(dir.path().join(".vmstats")).unwrap();
    let cached = json_of("12h");
    assert_eq!(scanned, cached);
    // The second time through the cache, the day the window cuts is
    // searched rather than read whole.
    assert_eq!(json_of("12h"), cached);
    let vm = &cached["vms"][0];
    assert_eq!(
        vm["datagrams"]["samples"], 2158,
        "the window's rows, all of them"
    );
    assert_eq!(vm["finding"], "UNDERSIZED");
    let all = json_of("all");
    assert_eq!(all["vms"][0]["datagrams"]["samples"], 4000);
    // The count is of rows in the window: the 1970 row is in the whole
    // file's, not in the last 12 hours'.
    assert_eq!(vm["datagrams"]["recv_backwards"], 0);
    assert_eq!(all["vms"][0]["datagrams"]["recv_backwards"], 1);
    assert_eq!(all["summary"]["recv_backwards"], 1);
    let table = String::from_utf8(report_of(&["--window", "all"])).unwrap();
    assert!(
        table.contains(
            "; 1 rows received before the row ahead of them (the collector's clock stepped back)"
        ),
        "{table}"
    );
}
