//! Hostile input and overload against the real aggregator, and hostile
//! files against the report: nothing that arrives hurts it, nothing it
//! accepted is lost, every loss is counted, and a crafted file costs what
//! its size can need. (A crash is in `shutdown.rs`, the descriptor limit
//! in `aggregator.rs`.)

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use vmstats::wire::{self, Reject};

/// Junk of every kind the issue names, plus random bytes, with the reason
/// each must be counted under.
fn junk(n: usize, seed: u64) -> Vec<(Vec<u8>, Reject)> {
    let valid = wire::encode(&stat(0)).to_vec();
    let mut x = seed;
    let mut rand = move || {
        // xorshift: enough to vary bytes, no dependency.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..n)
        .map(|i| {
            let mut d = valid.clone();
            let reason = match i % 12 {
                0 => return (vec![], Reject::BadLength),
                1 => return (vec![0x56], Reject::BadLength),
                2 => return (valid[..71].to_vec(), Reject::BadLength),
                3 => {
                    d.push(0);
                    Reject::BadLength
                }
                4 => return (vec![0xAB; 1500], Reject::BadLength),
                5 => return (vec![0x56; 65_507], Reject::BadLength),
                6 => {
                    d[1] = b'm';
                    Reject::BadMagic
                }
                7 => {
                    d[4] = 2 + (rand() % 254) as u8;
                    Reject::BadVersion
                }
                8 => {
                    d[5] = 1 << (1 + rand() % 7);
                    Reject::BadField
                }
                9 => {
                    // interval 0 / > 3600, vcpus 0, percentages > 100 %.
                    match rand() % 4 {
                        0 => d[6..8].copy_from_slice(&0u16.to_be_bytes()),
                        1 => d[6..8].copy_from_slice(&3601u16.to_be_bytes()),
                        2 => d[12..14].copy_from_slice(&0u16.to_be_bytes()),
                        _ => d[32..34].copy_from_slice(&10_001u16.to_be_bytes()),
                    }
                    Reject::BadField
                }
                _ => {
                    let len = if i % 12 == 10 {
                        72
                    } else {
                        (rand() % 200) as usize
                    };
                    let bytes: Vec<u8> = (0..len).map(|_| rand() as u8).collect();
                    let reason = wire::decode(&bytes, false).expect_err("random bytes are junk");
                    return (bytes, reason);
                }
            };
            (d, reason)
        })
        .collect()
}

#[test]
fn junk_is_counted_by_reason_never_written_and_costs_no_memory() {
    let dir = tempfile::tempdir().unwrap();
    let agg = Aggregator::start(dir.path(), &[]);
    let sock = vm_socket("127.30.0.1");
    let junk = junk(120_000, 0x9E37_79B9);
    let mut expected: BTreeMap<&str, u64> = BTreeMap::new();
    for (_, r) in &junk {
        *expected.entry(r.name()).or_default() += 1;
    }
    // Valid datagrams between the junk, every 100th place.
    let mut stream = Vec::new();
    let mut valid = 0u64;
    for (i, (bytes, _)) in junk.into_iter().enumerate() {
        if i % 100 == 0 {
            stream.push(wire::encode(&stat(valid)).to_vec());
            valid += 1;
        }
        stream.push(bytes);
    }
    let (warm, rest) = stream.split_at(20_000);
    send_paced(&sock, agg.addr, warm, 30_000);
    std::thread::sleep(Duration::from_millis(300));
    let rss_before = rss_kib(agg.pid());
    send_paced(&sock, agg.addr, rest, 30_000);
    std::thread::sleep(Duration::from_millis(300));
    let rss_after = rss_kib(agg.pid());
    let done = agg.stop();
    assert!(done.success, "{}", done.stderr);
    assert_eq!(
        done.counter("kernel_drops"),
        0,
        "the test outran the aggregator"
    );
    for (reason, n) in &expected {
        assert_eq!(done.counter(reason), *n, "{reason}");
    }
    assert_eq!(done.counter("accepted"), valid);
    let rows = read_rows(&dir.path().join("127.30.0.1.csv"));
    let seqs: Vec<u64> = rows.iter().map(|r| r.stat.seq).collect();
    assert_eq!(seqs, (0..valid).collect::<Vec<_>>());
    assert_eq!(count_files_and_rows(dir.path()), (1, valid as usize));
    // 100,000 junk datagrams later, memory is where it was (slack for the
    // allocator and the one VM's buffer).
    assert!(
        rss_after < rss_before + 4096,
        "RSS grew from {rss_before} to {rss_after} KiB"
    );
}

/// The fuzzer's corpus (fuzz/corpus/decode, grown by scripts/fuzz.sh) replayed
/// through the same checks as the fuzz target, on every test run.
#[test]
fn fuzz_corpus_replays_cleanly() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/decode");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        wire::check_decode(&data);
        n += 1;
    }
    assert!(n >= 8, "corpus has {n} inputs");
}

#[test]
fn max_vms_caps_new_sources_but_keeps_known_ones() {
    let dir = tempfile::tempdir().unwrap();
    let agg = Aggregator::start(dir.path(), &["--max-vms", "3"]);
    let socks: Vec<_> = (1..=5)
        .map(|i| vm_socket(&format!("127.31.0.{i}")))
        .collect();
    for seq in 0..4 {
        for s in &socks {
            send(s, agg.addr, &stat(seq));
        }
    }
    let done = agg.stop();
    assert_eq!(done.counter("vm_limit"), 8);
    assert_eq!(done.counter("accepted"), 12);
    assert_eq!(count_files_and_rows(dir.path()), (3, 12));
}

#[test]
fn overload_is_counted_so_the_accounting_closes() {
    let dir = tempfile::tempdir().unwrap();
    // A tiny socket buffer and queue, flooded flat out: both kinds of drop.
    let agg = Aggregator::start(
        dir.path(),
        &["--recv-buffer", "64k", "--queue-batches", "1"],
    );
    load(agg.port(), 100, "max", 200_000, "127.32.0.1", &[]);
    // Loopback hands a flood's last datagrams to ksoftirqd, which on a
    // machine busy with the other tests can run after the stop's 100 ms
    // of quiet: then they are neither received nor dropped when the
    // counters are read (80 of 200,000 were, once). Wait for them.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let done = agg.stop();
    let (_, rows) = count_files_and_rows(dir.path());
    let rejected = done.counter("rejected");
    let overload = done.counter("dropped_overload");
    let kernel = done.counter("kernel_drops");
    assert!(
        overload + kernel > 0,
        "no overload happened: {}",
        done.stderr
    );
    assert_eq!(rows as u64, done.counter("accepted"));
    assert_eq!(
        rows as u64 + rejected + overload + kernel,
        200_000,
        "{}",
        done.stderr
    );
}

/// `udp-aggregator report` over `dir` (JSON, 14 days before `as_of`):
/// (success, stdout, stderr, peak resident KiB). The peak is the child's
/// own `VmHWM`, read every 5 ms while it runs: its rusage would include
/// this test process's pages, which a spawned child shares until it execs.
fn report_measured(dir: &std::path::Path, as_of: &str) -> (bool, String, String, u64) {
    use std::io::Read;
    let mut child = Command::new(AGGREGATOR)
        .args([
            "report",
            "--report-format",
            "json",
            "--as-of",
            as_of,
            "--data-dir",
        ])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            r.read_to_string(&mut text).unwrap();
            text
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let mut peak_kib = 0;
    let status = loop {
        peak_kib = peak_kib.max(status_kib(child.id() as i32, "VmHWM").unwrap_or(0));
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    (
        status.success(),
        out.join().unwrap(),
        err.join().unwrap(),
        peak_kib,
    )
}

#[test]
fn hostile_cache_entries_and_gzip_parts_cost_what_their_files_can_need() {
    let dir = tempfile::tempdir().unwrap();
    write_history(dir.path(), 2, "1");
    let as_of = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        .to_string();
    let (ok, truth, stderr, _) = report_measured(dir.path(), &as_of);
    assert!(ok, "{stderr}");
    // Each cache entry grown (sparse) to 3 GB: not read whole, rebuilt.
    for entry in std::fs::read_dir(dir.path().join(".vmstats")).unwrap() {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(entry.unwrap().path())
            .unwrap();
        f.set_len(3 << 30).unwrap();
    }
    let (ok, after, stderr, peak_kib) = report_measured(dir.path(), &as_of);
    assert!(ok, "{stderr}");
    assert_eq!(after, truth);
    assert!(
        peak_kib < 256 << 10,
        "a 3 GB entry was read whole: {peak_kib} KiB resident"
    );
    // A rotated part of 100 MB of newlines, gzipped to ~100 kB: read up to
    // 64 times its size, with a warning, not inflated whole each report.
    let bomb = dir.path().join("127.1.0.1.csv.2.gz");
    let made = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{{ printf '%s' '{}'; head -c 100000000 /dev/zero | tr '\\0' '\\n'; }} | gzip -1 > {}",
            wire::CSV_HEADER.trim_end(),
            bomb.display()
        ))
        .status()
        .unwrap();
    assert!(made.success());
    let (ok, _, stderr, peak_kib) = report_measured(dir.path(), &as_of);
    assert!(ok, "{stderr}");
    assert!(peak_kib < 256 << 10, "{peak_kib} KiB resident");
    assert!(
        stderr.contains(&format!(
            "warning: {}: inflates to more than 64 times its size; the rest of it is left out",
            bomb.display()
        )),
        "{stderr}"
    );
}
