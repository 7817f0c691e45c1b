//! Availability from existing parts: an agent with two `--server`s feeds
//! two aggregators; each of them is down for part of the run, and the
//! report over both data dirs still has every datagram, once.

mod common;

use std::ffi::OsStr;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const VMAGENT: &str = env!("CARGO_BIN_EXE_udp-vmagent");

/// (samples, lost, duplicates) of the one VM in the report over `dirs`.
fn datagrams(dirs: &[&std::path::Path]) -> (u64, u64, u64) {
    let mut args: Vec<&OsStr> = ["--report-format", "json", "--window", "all"]
        .iter()
        .map(OsStr::new)
        .collect();
    for d in dirs {
        args.extend([OsStr::new("--data-dir"), d.as_os_str()]);
    }
    let json: serde_json::Value = serde_json::from_slice(&report_with(&args)).unwrap();
    assert_eq!(json["summary"]["vms"], 1, "{json}");
    let d = &json["vms"][0]["datagrams"];
    let n = |k: &str| d[k].as_u64().unwrap();
    (n("samples"), n("lost"), n("duplicates"))
}

#[test]
fn each_aggregator_down_for_a_while_loses_nothing_from_the_merged_view() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let agg_a = Aggregator::start(a.path(), &[]);
    let agg_b = Aggregator::start(b.path(), &[]);
    let port_a = agg_a.port();
    let agent = Command::new(VMAGENT)
        .args(["--interval", "50ms", "--no-jitter", "--duration", "6s"])
        .args(["--server", &format!("127.0.0.1:{port_a}")])
        .args(["--server", &format!("127.0.0.1:{}", agg_b.port())])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A goes down at 1 s and comes back on its port at 2 s; B goes down
    // for good at 3 s, with 3 s of the run to go. Between them every
    // moment is covered.
    std::thread::sleep(Duration::from_secs(1));
    assert!(agg_a.stop().success);
    std::thread::sleep(Duration::from_secs(1));
    let agg_a = Aggregator::start_on(&format!("127.0.0.1:{port_a}"), a.path(), &[]);
    std::thread::sleep(Duration::from_secs(1));
    assert!(agg_b.stop().success);
    let out = agent.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let samples: u64 = stderr
        .split("samples=")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no samples= in {stderr}"));
    assert!(agg_a.stop().success);
    // Each alone has a hole; together, every sample once.
    let (alone_a, lost_a, _) = datagrams(&[a.path()]);
    let (alone_b, lost_b, _) = datagrams(&[b.path()]);
    assert!(lost_a > 0 && alone_a < samples, "A: {alone_a} of {samples}");
    assert!(
        alone_b < samples,
        "B: {alone_b} of {samples} (lost {lost_b})"
    );
    assert_eq!(datagrams(&[a.path(), b.path()]), (samples, 0, 0));
}
