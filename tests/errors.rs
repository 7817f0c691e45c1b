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
fn a_bad_catalog_names_its_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("sizes.csv");
    std::fs::write(
        &catalog,
        "name,vcpus,mem_gib,price_month\nm.large,2,8,70.08\nm.xlarge,four,16,140.16\n",
    )
    .unwrap();
    let c = catalog.to_str().unwrap();
    let want = format!("catalog {c} (--catalog), line 3, column vcpus: `four` is not");
    let d = dir.path().to_str().unwrap();
    // The collector refuses to start (not to report at exit)...
    fails_with(
        &["--listen", "127.0.0.1:0", "--data-dir", d, "--catalog", c],
        &want,
    );
    // ...and the report command says the same.
    fails_with(&["report", "--data-dir", d, "--catalog", c], &want);
    fails_with(
        &["report", "--data-dir", d, "--catalog", "/nonexistent.csv"],
        "cannot read catalog /nonexistent.csv (--catalog)",
    );
    fails_with(
        &["report", "--data-dir", d, "--cpu-percentile", "0"],
        "--cpu-percentile",
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

#[test]
fn a_data_dir_that_is_a_file_or_holds_no_vm_file_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, "x").unwrap();
    let f = file.to_str().unwrap();
    fails_with(
        &["--listen", "127.0.0.1:0", "--data-dir", f],
        &format!("data dir {f} (--data-dir) cannot be used: it exists and is not a directory"),
    );
    fails_with(&["report", "--data-dir", f], "Not a directory");
    // An empty dir, or one of other files: an error, and nothing created.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    std::fs::write(empty.join("notes.txt"), "x").unwrap();
    let e = empty.to_str().unwrap();
    fails_with(
        &["report", "--data-dir", e],
        &format!("no VM file (<address>.csv) in {e} (--data-dir): nothing to report"),
    );
    let names: Vec<_> = std::fs::read_dir(&empty)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["notes.txt"], "the report created nothing");
}

#[test]
fn the_simulator_resolves_a_name_or_says_it_needs_one_with_an_ipv4_address() {
    let out = Command::new(common::VMSIM)
        .args([
            "--server",
            "nohost.invalid:9999",
            "--count",
            "1",
            "--total",
            "1",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`nohost.invalid:9999` is not IPV4:PORT nor HOST:PORT with an IPv4 address"),
        "{err}"
    );
    let sink = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sink.local_addr().unwrap().port();
    let out = Command::new(common::VMSIM)
        .args(["--server", &format!("localhost:{port}"), "--count", "1"])
        .args(["--total", "1", "--no-final"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut buf = [0u8; 128];
    sink.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    assert!(
        sink.recv(&mut buf).is_ok(),
        "localhost resolved to the sink"
    );
}

#[test]
fn every_binary_says_which_build_it_is() {
    for bin in [AGGREGATOR, common::VMSIM, common::VMAGENT] {
        let out = Command::new(bin).arg("--version").output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{bin}");
        assert!(
            text.contains(concat!(" ", env!("CARGO_PKG_VERSION"), " (commit "))
                && text.contains(" build, "),
            "{bin}: {text}"
        );
    }
}
