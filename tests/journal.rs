//! The journal against the real binary: a kill -9 after rows were synced
//! but before any reached its file, then a restart on the same data dir,
//! must leave every synced row in its file exactly once, even when the
//! first replay was itself cut short; a clean stop leaves no journal.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Aggregator, http_get, metric, read_rows, send, signal, stat, vm_socket, wait_until};
use vmstats::journal;
use vmstats::wire;

const VMS: [&str; 4] = ["127.6.0.1", "127.6.0.2", "127.6.0.3", "127.6.0.4"];
const SEQS: u64 = 50;

fn segments(data: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(journal::dir_of(data))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

#[test]
fn a_kill_after_the_journal_sync_loses_nothing_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut agg = Aggregator::start(
        dir.path(),
        &["--file-interval", "1h", "--metrics-listen", "127.0.0.1:0"],
    );
    let metrics = agg.metrics_addr();
    let to = format!("127.0.0.1:{}", agg.port()).parse().unwrap();
    let socks: Vec<_> = VMS.iter().map(|ip| vm_socket(ip)).collect();
    for seq in 0..SEQS {
        for sock in &socks {
            send(sock, to, &stat(seq));
        }
    }
    let total = SEQS as f64 * VMS.len() as f64;
    let scrape = |name: &str| metric(&http_get(metrics, "/metrics").1, name).unwrap_or(-1.0);
    assert!(
        wait_until(Duration::from_secs(20), || {
            scrape("vmstats_receive_to_disk_seconds_count") == total
        }),
        "not every row became durable"
    );
    // Durable in the journal, in no file yet (the file interval is an hour).
    assert_eq!(scrape("vmstats_rows_written_total"), 0.0);
    assert!(scrape("vmstats_journal_bytes") > 0.0);
    assert_eq!(scrape("vmstats_journal_segments"), 1.0);
    signal(agg.pid(), "KILL");
    let killed = agg.wait();
    assert!(!killed.success);
    let left = segments(dir.path());
    assert_eq!(left.len(), 1, "{left:?}");

    // A first replay that died after writing ten of the first VM's rows
    // and half of the eleventh.
    let journal = std::fs::read_to_string(&left[0]).unwrap();
    let mut partial = wire::CSV_HEADER.to_string();
    let mut first = journal
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("{} ", VMS[0])));
    for _ in 0..10 {
        partial.push_str(first.next().unwrap());
        partial.push('\n');
    }
    partial.push_str(&first.next().unwrap()[..12]);
    std::fs::write(dir.path().join(format!("{}.csv", VMS[0])), partial).unwrap();

    let mut again = Aggregator::start(dir.path(), &["--duration", "1s"]);
    let replayed = again
        .wait_for_line("replayed the journal", Duration::from_secs(20))
        .expect("a replay line");
    assert!(
        replayed.contains("1 segments, 200 rows of 4 VMs, 190 appended, 10 already in their files"),
        "{replayed}"
    );
    let done = again.wait();
    assert!(done.success, "{}", done.stderr);
    assert!(
        done.stderr.contains("cut a torn last row"),
        "{}",
        done.stderr
    );
    for ip in VMS {
        let seqs: Vec<u64> = read_rows(&dir.path().join(format!("{ip}.csv")))
            .iter()
            .map(|r| r.stat.seq)
            .collect();
        assert_eq!(seqs, (0..SEQS).collect::<Vec<_>>(), "{ip}");
    }
    assert!(
        segments(dir.path()).is_empty(),
        "a clean stop empties the journal"
    );
}

#[test]
fn a_clean_stop_leaves_the_files_whole_and_no_journal() {
    let dir = tempfile::tempdir().unwrap();
    let agg = Aggregator::start(dir.path(), &["--file-interval", "1h", "--no-sync"]);
    let to = format!("127.0.0.1:{}", agg.port()).parse().unwrap();
    let sock = vm_socket(VMS[1]);
    for seq in 0..SEQS {
        send(&sock, to, &stat(seq));
    }
    let path = dir.path().join(format!("{}.csv", VMS[1]));
    // Rows wait for their file interval in memory and in the journal...
    assert!(wait_until(Duration::from_secs(10), || {
        segments(dir.path())
            .iter()
            .any(|s| std::fs::metadata(s).is_ok_and(|m| m.len() > 0))
    }));
    assert!(!path.exists());
    // ...and a stop writes them all.
    let done = agg.stop();
    assert!(done.success, "{}", done.stderr);
    assert_eq!(done.counter("rows_written"), SEQS);
    assert!(
        done.stderr.contains("receive_to_file_ms p50="),
        "{}",
        done.stderr
    );
    assert_eq!(read_rows(&path).len() as u64, SEQS);
    assert!(segments(dir.path()).is_empty());
}
