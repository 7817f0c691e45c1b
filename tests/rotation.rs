//! Log rotation: SIGHUP closes every file, and every (re)open checks what
//! it finds, so logrotate's move-and-create pattern never produces a file
//! without a header, nor loses or doubles a row, even when the open-file
//! cap makes the aggregator reopen files between rotation and signal.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn sighup_reopens_files_for_log_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let agg = Aggregator::start(dir.path(), &[]);
    let sock = vm_socket("127.34.0.1");
    let path = dir.path().join("127.34.0.1.csv");
    for seq in 0..5 {
        send(&sock, agg.addr, &stat(seq));
    }
    assert!(wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(&path).is_ok_and(|t| t.lines().count() == 6)
    }));
    // logrotate's create pattern: move the file, then signal.
    let rotated = dir.path().join("127.34.0.1.csv.1");
    std::fs::rename(&path, &rotated).unwrap();
    send(&sock, agg.addr, &stat(5)); // lands in the moved file
    std::thread::sleep(Duration::from_millis(50));
    signal(agg.pid(), "HUP");
    std::thread::sleep(Duration::from_millis(300));
    for seq in 6..10 {
        send(&sock, agg.addr, &stat(seq));
    }
    let done = agg.stop();
    assert!(
        done.stderr.contains("reopening data files (SIGHUP)"),
        "{}",
        done.stderr
    );
    let old: Vec<u64> = read_rows(&rotated).iter().map(|r| r.stat.seq).collect();
    let new: Vec<u64> = read_rows(&path).iter().map(|r| r.stat.seq).collect();
    assert_eq!(old, (0..6).collect::<Vec<_>>());
    assert_eq!(new, (6..10).collect::<Vec<_>>());
}

#[test]
fn logrotate_create_under_one_open_file_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // One open file for all VMs: every flush of another VM evicts, so each
    // VM's file is reopened between logrotate's create and the SIGHUP.
    let agg = Aggregator::start(dir.path(), &["--max-open-files", "1", "--workers", "1"]);
    let ips: Vec<String> = (1..=5).map(|n| format!("127.45.0.{n}")).collect();
    let socks: Vec<_> = ips.iter().map(|ip| vm_socket(ip)).collect();
    let per_vm = 60u64;
    for seq in 0..per_vm {
        for sock in &socks {
            send(sock, agg.addr, &stat(seq));
        }
        std::thread::sleep(Duration::from_millis(10));
        if seq == 20 {
            // logrotate `create`: move each file, create an empty one in
            // its place, and signal only a while later.
            for ip in &ips {
                let path = dir.path().join(format!("{ip}.csv"));
                std::fs::rename(&path, dir.path().join(format!("{ip}.csv.1"))).unwrap();
                std::fs::File::create(&path).unwrap();
            }
        }
        if seq == 40 {
            signal(agg.pid(), "HUP");
        }
    }
    let done = agg.stop();
    assert!(done.success, "{}", done.stderr);
    for ip in &ips {
        // read_rows insists on the header and on whole rows.
        let old = read_rows(&dir.path().join(format!("{ip}.csv.1")));
        let new = read_rows(&dir.path().join(format!("{ip}.csv")));
        let seqs: Vec<u64> = old.iter().chain(&new).map(|r| r.stat.seq).collect();
        assert_eq!(seqs, (0..per_vm).collect::<Vec<_>>(), "{ip}");
        assert!(!new.is_empty() && !old.is_empty(), "{ip}");
    }
}
