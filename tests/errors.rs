//! Startup errors: one clear line naming the flag or path, non-zero exit.

mod common;

use std::process::Command;

use common::AGGREGATOR;

fn fails_with(args: &[&str], needle: &str) {
    let out = Command::new(AGGREGATOR).args(args).output().unwrap();
    assert!(!out.status.success(), "{args:?} succeeded");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(needle), "{args:?}: {err}");
}

#[test]
fn bad_flag_values_name_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    fails_with(&["--data-dir", d, "--workers", "0"], "--workers");
    fails_with(
        &["--data-dir", d, "--flush-interval", "soon"],
        "--flush-interval",
    );
    fails_with(&["--data-dir", d, "--listen", "localhost"], "--listen");
    fails_with(&["--data-dir", d, "--allow", "10.0.0.0/40"], "--allow");
    fails_with(
        &["--data-dir", d, "--idle-cpu-pct", "150"],
        "--idle-cpu-pct",
    );
}

#[test]
fn a_port_in_use_names_the_address() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    fails_with(
        &[
            "--listen",
            &addr,
            "--data-dir",
            dir.path().to_str().unwrap(),
        ],
        &format!("cannot listen on {addr} (--listen): Address already in use"),
    );
}

#[test]
fn an_unusable_data_dir_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, "x").unwrap();
    let bad = file.join("data");
    fails_with(
        &[
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            bad.to_str().unwrap(),
        ],
        &format!("data dir {} (--data-dir) cannot be used", bad.display()),
    );
}

#[test]
fn report_of_a_missing_dir_names_it() {
    let out = Command::new(AGGREGATOR)
        .args(["report", "--data-dir", "/nonexistent/vmstats"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot read data dir /nonexistent/vmstats")
    );
}
