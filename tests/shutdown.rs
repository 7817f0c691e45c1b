//! The exit tells the truth: exit 0 only when every accepted datagram is on
//! disk, and the books close at shutdown even when the socket is full; a
//! crash (kill -9) leaves files that parse and that a restart appends to.

mod common;

use std::process::Command;

use common::*;

/// `chattr +i` (or -i) on `path`; false where the filesystem has no such
/// attribute.
fn chattr(flag: &str, path: &std::path::Path) -> bool {
    Command::new("chattr")
        .arg(flag)
        .arg(path)
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn an_immutable_vm_file_makes_the_exit_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("127.43.0.1.csv");
    std::fs::write(&path, vmstats::wire::CSV_HEADER).unwrap();
    if !chattr("+i", &path) {
        skip("chattr +i is not available here (needs root and ext4/xfs/btrfs)");
        return;
    }
    let agg = Aggregator::start(dir.path(), &[]);
    let sock = vm_socket("127.43.0.1");
    for seq in 0..10 {
        send(&sock, agg.addr, &stat(seq));
    }
    let done = agg.stop();
    chattr("-i", &path);
    assert!(!done.success, "{}", done.stderr);
    assert_eq!(done.counter("accepted"), 10);
    assert_eq!(done.counter("rows_written"), 0);
    assert_eq!(done.counter("dropped_write_error"), 10);
    assert!(done.counter("write_errors") >= 1);
    let last = done.stderr.lines().last().unwrap();
    assert!(
        last.starts_with(
            "udp-aggregator: error: not every accepted row is on disk: 10 rows lost ("
        ) && last.contains("127.43.0.1.csv: 10)"),
        "{last}"
    );
}

#[test]
fn a_full_socket_at_shutdown_is_drained_and_every_datagram_counted() {
    let dir = tempfile::tempdir().unwrap();
    let agg = Aggregator::start(dir.path(), &[]);
    // Stopped, the aggregator reads nothing: the flood waits in its socket
    // (more than the old fixed drain of 4096 x 64 datagrams), or is dropped
    // by the kernel, counted, once the buffer is full.
    signal(agg.pid(), "STOP");
    let total: u64 = 400_000;
    load(
        agg.port(),
        100,
        "max",
        total,
        "127.44.0.1",
        &["--gso", "64"],
    );
    signal(agg.pid(), "TERM");
    signal(agg.pid(), "CONT");
    let done = agg.wait();
    assert!(done.success, "{}", done.stderr);
    let (_, rows) = count_files_and_rows(dir.path());
    let rows = rows as u64;
    let kernel = done.counter("kernel_drops");
    let overload = done.counter("dropped_overload");
    eprintln!("rows {rows} kernel_drops {kernel} dropped_overload {overload}");
    assert_eq!(rows, done.counter("accepted"));
    assert_eq!(done.counter("rejected"), 0);
    assert_eq!(rows + overload + kernel, total, "{}", done.stderr);
    assert!(
        rows > 4096 * 64,
        "only {rows} datagrams were queued: the test shows nothing"
    );
}

/// A small tmpfs mounted on a temp dir, unmounted when dropped; `None`
/// where mounting is not allowed (not root, or a sandbox without it).
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0750")])
            .arg("tmpfs")
            .arg(dir.path())
            .output()
            .is_ok_and(|o| o.status.success());
        ok.then_some(SmallDisk { dir })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn a_stop_while_the_disk_is_full_leaves_no_partial_row() {
    let Some(disk) = SmallDisk::mount("96k") else {
        skip("cannot mount a tmpfs here (needs root)");
        return;
    };
    let agg = Aggregator::start(disk.dir.path(), &["--cache-refresh", "0"]);
    // 8 VMs, far more rows than 96 KiB hold: writes fail part way.
    load(agg.port(), 8, "4000", 4000, "127.44.0.1", &[]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let done = agg.stop();
    assert!(!done.success, "the disk was full: {}", done.stderr);
    assert!(done.counter("write_errors") > 0, "{}", done.stderr);
    let mut files = 0;
    for entry in std::fs::read_dir(disk.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "csv") {
            let bytes = std::fs::read(&path).unwrap();
            // Empty when the journal filled the disk before the file's
            // header could be written: no row, so no partial one.
            assert!(
                bytes.is_empty() || bytes.last() == Some(&b'\n'),
                "{} ends in a partial row",
                path.display()
            );
            files += 1;
        }
    }
    assert_eq!(files, 8);
}

#[test]
fn kill_9_leaves_parsable_files_and_a_restart_appends_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let agg = Aggregator::start(dir.path(), &["--flush-interval", "200ms"]);
    load(agg.port(), 50, "5000", 10_000, "127.33.0.1", &[]);
    signal(agg.pid(), "KILL");
    drop(agg);
    // Every file parses (a torn last line is allowed after a crash) and
    // what is missing is at most the last flush interval's worth.
    let mut on_disk = 0;
    for i in 0..50u32 {
        let ip = std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(127, 33, 0, 1)) + i);
        let path = dir.path().join(format!("{ip}.csv"));
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for line in text.split_inclusive('\n').skip(1) {
            if line.ends_with('\n') {
                vmstats::wire::parse_row(line.trim_end()).expect("whole rows parse");
                on_disk += 1;
            }
        }
    }
    // Files trail by the file interval (200 ms here) plus the wait for the
    // journal's sync (up to the flush interval): 400 ms, doubled for a
    // loaded machine. What the files lack, the journal has (below).
    let missing = 10_000 - on_disk;
    assert!(
        missing <= 5000 * 800 / 1000,
        "{missing} rows lost, more than a flush interval"
    );

    // The restart first appends what the journal holds beyond the files.
    let agg = Aggregator::start(dir.path(), &[]);
    load(agg.port(), 50, "5000", 500, "127.33.0.1", &[]);
    let done = agg.stop();
    assert!(done.success);
    // read_rows asserts one header and no torn line anywhere.
    let (files, rows) = count_files_and_rows(dir.path());
    assert_eq!(files, 50);
    assert!(
        (on_disk + 500..=10_500).contains(&rows),
        "{rows} rows, {on_disk} before the restart"
    );
    for entry in std::fs::read_dir(dir.path()).unwrap().flatten() {
        if entry.path().extension().is_some_and(|e| e == "csv") {
            let rows = read_rows(&entry.path());
            let unique: std::collections::HashSet<(u32, u64)> =
                rows.iter().map(|r| (r.stat.boot_id, r.stat.seq)).collect();
            assert_eq!(
                unique.len(),
                rows.len(),
                "{}: a row twice",
                entry.path().display()
            );
        }
    }
}
