//! What the order of a stop's appends costs the disk: a few rows appended to
//! each of a million small files, then one `syncfs`, once in the files'
//! inode order and once shuffled, taking turns. That is what a collector's
//! stop does at a million VMs (`Worker::flush_all`), without the collector:
//! the floor its stop stands on.
//!
//! `cargo bench --bench stop_order -- DIR [FILES] [ROUNDS]`: DIR (made here,
//! and removed at the end) on the filesystem to measure; 1,000,000 files of
//! 3,700 bytes (37 rows) by default, 600 bytes (six rows) appended to each
//! per pass, 2 rounds of both orders. One untimed pass first takes every
//! file into its second block, so no timed pass allocates one.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::seq::SliceRandom;
use vmstats::{sys, wire};

const FILE_BYTES: usize = 3_700;
const APPEND_BYTES: usize = 600;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let Some(dir) = args.first().map(PathBuf::from) else {
        eprintln!("usage: cargo bench --bench stop_order -- DIR [FILES] [ROUNDS]");
        std::process::exit(2);
    };
    let number = |at: usize, default: usize| {
        args.get(at).map_or(default, |a| {
            a.parse().unwrap_or_else(|_| panic!("not a count: {a}"))
        })
    };
    let (files, rounds) = (number(1, 1_000_000), number(2, 2));
    assert!(!dir.exists(), "{} exists: give a new dir", dir.display());
    fs::create_dir_all(&dir).expect("the bench dir");

    let started = Instant::now();
    let body = vec![b'7'; FILE_BYTES];
    let paths: Vec<PathBuf> = (0..files)
        .map(|i| {
            dir.join(wire::file_name(
                Ipv4Addr::from(0x7f01_0000 + i as u32).into(),
            ))
        })
        .collect();
    for path in &paths {
        fs::write(path, &body).expect("a bench file");
    }
    sync(&dir);
    println!(
        "# {files} files of {FILE_BYTES} bytes made and synced in {:.1} s; {APPEND_BYTES} bytes appended to each per pass",
        started.elapsed().as_secs_f64()
    );

    let mut by_inode: Vec<(u64, &Path)> = paths
        .iter()
        .map(|p| (fs::metadata(p).expect("a bench file").ino(), p.as_path()))
        .collect();
    by_inode.sort_unstable();
    let in_order: Vec<&Path> = by_inode.into_iter().map(|(_, p)| p).collect();
    let mut shuffled = in_order.clone();
    shuffled.shuffle(&mut rand::rng());

    pass(&dir, &in_order);
    let (mut ordered_s, mut shuffled_s) = (0.0, 0.0);
    for round in 1..=rounds {
        for (name, order, total) in [
            ("inode order", &in_order, &mut ordered_s),
            ("shuffled", &shuffled, &mut shuffled_s),
        ] {
            let (written, synced) = pass(&dir, order);
            *total += synced;
            println!("round {round} {name:<12} appended {written:5.1} s, synced {synced:5.1} s");
        }
    }
    println!(
        "# shuffled over inode order, appended and synced: {:.2}",
        shuffled_s / ordered_s
    );
    fs::remove_dir_all(&dir).expect("removing the bench dir");
}

/// Appends to every file in `order`, then syncs: the seconds to the last
/// append and to the end of the sync.
fn pass(dir: &Path, order: &[&Path]) -> (f64, f64) {
    let row = [b'8'; APPEND_BYTES];
    let started = Instant::now();
    for path in order {
        let mut file = OpenOptions::new()
            .append(true)
            .open(path)
            .expect("a bench file");
        file.write_all(&row).expect("an append");
    }
    let written = started.elapsed().as_secs_f64();
    sync(dir);
    (written, started.elapsed().as_secs_f64())
}

/// One `syncfs` of the filesystem holding `dir`, as the collector's stop.
fn sync(dir: &Path) {
    sys::sync_filesystem_at(dir).expect("syncfs of the bench dir");
}
