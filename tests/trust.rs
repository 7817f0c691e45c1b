//! Nothing in the data dir is trusted: symlinks, FIFOs and devices planted
//! under a VM's file name are refused (never followed, never read, never
//! written), and what the aggregator creates is private.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use common::*;

#[test]
fn planted_links_and_fifos_are_refused_and_the_exit_says_what_was_lost() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    std::fs::write(&victim, "precious\nhalf a line").unwrap();
    std::os::unix::fs::symlink(&victim, dir.path().join("127.40.0.1.csv")).unwrap();
    mkfifo(&dir.path().join("127.40.0.2.csv"));
    let agg = Aggregator::start(dir.path(), &[]);
    for (ip, n) in [("127.40.0.1", 10), ("127.40.0.2", 10), ("127.40.0.3", 5)] {
        let sock = vm_socket(ip);
        for seq in 0..n {
            send(&sock, agg.addr, &stat(seq));
        }
    }
    // Retried every flush interval: still one log line per refused VM.
    std::thread::sleep(Duration::from_millis(500));
    let done = agg.stop();
    assert!(
        !done.success,
        "rows were lost, yet exit 0:\n{}",
        done.stderr
    );
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "precious\nhalf a line"
    );
    assert_eq!(
        done.stderr
            .matches("not a regular file (a symlink)")
            .count(),
        1,
        "{}",
        done.stderr
    );
    assert_eq!(
        done.stderr.matches("not a regular file (a FIFO)").count(),
        1,
        "{}",
        done.stderr
    );
    assert_eq!(done.counter("files_refused"), 2);
    assert_eq!(done.counter("dropped_write_error"), 20);
    let last = done.stderr.lines().last().unwrap();
    assert!(
        last.contains("not every accepted row is on disk: 20 rows lost")
            && last.contains("127.40.0.1.csv: 10")
            && last.contains("127.40.0.2.csv: 10"),
        "{last}"
    );
    // The good VM is unharmed, and the report (which must not block on
    // the FIFO) was printed with it.
    assert_eq!(read_rows(&dir.path().join("127.40.0.3.csv")).len(), 5);
    assert!(done.stdout.contains("127.40.0.3"), "{}", done.stdout);
}

#[test]
fn the_report_neither_hangs_on_a_fifo_nor_reads_dev_zero() {
    let dir = tempfile::tempdir().unwrap();
    mkfifo(&dir.path().join("127.41.0.1.csv"));
    std::os::unix::fs::symlink("/dev/zero", dir.path().join("127.41.0.2.csv")).unwrap();
    let mut row = Vec::new();
    vmstats::wire::push_row(&mut row, 1_764_110_400_200, &stat(0));
    let text = format!(
        "{}{}",
        vmstats::wire::CSV_HEADER,
        String::from_utf8(row).unwrap()
    );
    std::fs::write(dir.path().join("127.41.0.3.csv"), text).unwrap();
    let mut cmd = Command::new(AGGREGATOR);
    cmd.args([
        "report",
        "--report-format",
        "json",
        "--window",
        "all",
        "--data-dir",
    ])
    .arg(dir.path());
    let out = run_with_limit(cmd, Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let vms = json["vms"].as_array().unwrap();
    assert_eq!(vms.len(), 1, "{json}");
    assert_eq!(vms[0]["ip"], "127.41.0.3");
    assert!(stderr.contains("a FIFO, not a regular file"), "{stderr}");
    assert!(stderr.contains("a symlink, not a regular file"), "{stderr}");
}

#[test]
fn a_new_data_dir_is_0750_and_files_0640_unless_told() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("new/data");
    let agg = Aggregator::start(&dir, &[]);
    send(&vm_socket("127.42.0.1"), agg.addr, &stat(0));
    let other = root.path().join("other");
    let agg2 = Aggregator::start(&other, &["--file-mode", "600"]);
    send(&vm_socket("127.42.0.1"), agg2.addr, &stat(0));
    assert!(agg.stop().success);
    assert!(agg2.stop().success);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    // The umask may take bits away, never add them.
    assert_eq!(mode(&dir) | 0o022, 0o750 | 0o022, "{:o}", mode(&dir));
    assert_eq!(mode(&dir.join("127.42.0.1.csv")) | 0o022, 0o640 | 0o022);
    assert_eq!(mode(&other.join("127.42.0.1.csv")), 0o600);
}
