//! The report's summary cache (`<data-dir>/.vmstats/`): it changes no
//! figure, it is used, and a file that grew, shrank, was rotated or was
//! rewritten in place, or a planted entry, never makes it say what the
//! files do not.

mod common;

use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::*;

/// The JSON report of `dir` over 14 days before `as_of`.
fn report(dir: &Path, as_of: u64) -> String {
    let as_of = as_of.to_string();
    let args: Vec<&OsStr> = vec![
        OsStr::new("--report-format"),
        OsStr::new("json"),
        OsStr::new("--as-of"),
        OsStr::new(&as_of),
        OsStr::new("--data-dir"),
        dir.as_os_str(),
    ];
    String::from_utf8(report_with(&args)).unwrap()
}

/// The report with the cache deleted first: what the files alone say.
fn fresh_report(dir: &Path, as_of: u64) -> String {
    let _ = std::fs::remove_dir_all(dir.join(".vmstats"));
    report(dir, as_of)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Rewrites the first row's CPU field with another value of the same
/// width, in place: only a report that reads the row again sees it.
fn change_first_cpu_in_place(path: &Path) {
    let text = std::fs::read_to_string(path).unwrap();
    let header = text.find('\n').unwrap() + 1;
    let row_end = header + text[header..].find('\n').unwrap();
    let fields: Vec<&str> = text[header..row_end].split(',').collect();
    let cpu_at = vmstats::wire::CSV_HEADER
        .trim_end()
        .split(',')
        .position(|f| f == "cpu_pct")
        .unwrap();
    let old = fields[cpu_at];
    let new: String = old
        .chars()
        .map(|c| {
            if c.is_ascii_digit() {
                if c == '9' { '8' } else { '9' }
            } else {
                c
            }
        })
        .collect();
    let mut row: Vec<String> = fields.iter().map(|f| f.to_string()).collect();
    row[cpu_at] = new;
    let mut out = text[..header].to_string();
    out.push_str(&row.join(","));
    out.push_str(&text[row_end..]);
    assert_eq!(out.len(), text.len());
    std::fs::write(path, out).unwrap();
}

#[test]
fn a_cached_report_says_what_the_files_say_and_is_used() {
    let dir = tempfile::tempdir().unwrap();
    write_history(dir.path(), 20, "3");
    let as_of = now_ms();
    let first = report(dir.path(), as_of);
    assert_eq!(names_in(&dir.path().join(".vmstats")), ["summaries.0"]);
    let store = dir.path().join(".vmstats/summaries.0");
    let written = std::fs::metadata(&store).unwrap().modified().unwrap();
    assert_eq!(report(dir.path(), as_of), first);
    let rewritten = std::fs::metadata(&store).unwrap().modified().unwrap();
    assert_eq!(
        written, rewritten,
        "a report over unchanged files rewrote the store"
    );
    // The cache is what the second report read: a change the file's size,
    // probes and mtime do not show (the mtime put back) stays unseen until
    // the cache is deleted.
    let vm = dir.path().join("127.1.0.1.csv");
    let mtime = std::fs::metadata(&vm).unwrap().modified().unwrap();
    change_first_cpu_in_place(&vm);
    let file = std::fs::File::options().write(true).open(&vm).unwrap();
    file.set_modified(mtime).unwrap();
    let window_all = |d: &Path| {
        String::from_utf8(report_with(&[
            OsStr::new("--report-format"),
            OsStr::new("json"),
            OsStr::new("--window"),
            OsStr::new("all"),
            OsStr::new("--as-of"),
            OsStr::new(&as_of.to_string()),
            OsStr::new("--data-dir"),
            d.as_os_str(),
        ]))
        .unwrap()
    };
    let cached = window_all(dir.path());
    let cached_again = window_all(dir.path());
    assert_eq!(cached, cached_again);
    let _ = std::fs::remove_dir_all(dir.path().join(".vmstats"));
    assert_ne!(window_all(dir.path()), cached, "the cache was not used");
}

#[test]
fn a_file_rewritten_in_place_to_the_same_length_and_tail_is_read_again() {
    let dir = tempfile::tempdir().unwrap();
    write_history(dir.path(), 3, "2");
    let as_of = now_ms() + 3_600_000;
    let before = report(dir.path(), as_of);
    // The same inode, length and last bytes; only the first row's CPU.
    change_first_cpu_in_place(&dir.path().join("127.1.0.2.csv"));
    let cached = report(dir.path(), as_of);
    assert_ne!(cached, before, "the rewrite was not seen");
    assert_eq!(
        fresh_report(dir.path(), as_of),
        cached,
        "cached and fresh differ"
    );
}

#[test]
fn grown_shrunk_rotated_and_rewritten_files_are_read_again() {
    let dir = tempfile::tempdir().unwrap();
    write_history(dir.path(), 4, "2");
    let as_of = now_ms() + 3_600_000;
    report(dir.path(), as_of);
    // Grown: rows appended (and a torn line, left for later).
    let live = dir.path().join("127.1.0.1.csv");
    let rows = std::fs::read_to_string(&live).unwrap();
    let last = rows.lines().last().unwrap().to_string();
    let later: Vec<String> = last.split(',').map(String::from).collect();
    let mut appended = String::new();
    for k in 1..=3u64 {
        let mut row = later.clone();
        row[0] = (as_of - 3_600_000 + k * 1000).to_string();
        let seq: u64 = row[3].parse().unwrap();
        row[3] = (seq + k).to_string();
        appended.push_str(&row.join(","));
        appended.push('\n');
    }
    appended.push_str("17");
    let mut text = rows.clone();
    text.push_str(&appended);
    std::fs::write(&live, &text).unwrap();
    assert_eq!(report(dir.path(), as_of), fresh_report(dir.path(), as_of));
    // Shrunk (copytruncate), then grown past its old length with others.
    report(dir.path(), as_of);
    let other = std::fs::read_to_string(dir.path().join("127.1.0.2.csv")).unwrap();
    std::fs::write(&live, &other[..other.len() / 2]).unwrap();
    let halved = report(dir.path(), as_of);
    assert_eq!(halved, fresh_report(dir.path(), as_of));
    std::fs::write(&live, &other).unwrap();
    assert_eq!(report(dir.path(), as_of), fresh_report(dir.path(), as_of));
    // Rotated: moved to .1 (its entry follows the inode), a new live file.
    report(dir.path(), as_of);
    let vm3 = dir.path().join("127.1.0.3.csv");
    std::fs::rename(&vm3, dir.path().join("127.1.0.3.csv.1")).unwrap();
    std::fs::write(&vm3, vmstats::wire::CSV_HEADER).unwrap();
    let rotated = report(dir.path(), as_of);
    assert_eq!(rotated, fresh_report(dir.path(), as_of));
    // The entry of a file gone is removed: the store shrinks by about a
    // fifth (4 entries of 5 left: 127.1.0.1, .2, .3 and .3's rotated part).
    let cache = dir.path().join(".vmstats");
    let before = std::fs::metadata(current_store(&cache)).unwrap().len();
    std::fs::remove_file(dir.path().join("127.1.0.4.csv")).unwrap();
    report(dir.path(), as_of);
    let after = std::fs::metadata(current_store(&cache)).unwrap().len();
    assert!(after < before * 9 / 10, "{after} bytes, {before} before");
}

/// The copy of the store written last.
fn current_store(cache: &Path) -> std::path::PathBuf {
    ["summaries.0", "summaries.1"]
        .iter()
        .map(|name| cache.join(name))
        .filter(|p| p.exists())
        .max_by_key(|p| std::fs::metadata(p).unwrap().modified().unwrap())
        .expect("a store")
}

/// The names in `dir`, sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn what_earlier_versions_left_is_removed_and_the_copies_alternate() {
    let dir = tempfile::tempdir().unwrap();
    write_history(dir.path(), 2, "1");
    let as_of = now_ms();
    let truth = fresh_report(dir.path(), as_of);
    let cache = dir.path().join(".vmstats");
    // The per-file entries and the single store of earlier versions.
    std::fs::write(cache.join("64768-1234.sum"), "an older version's entry").unwrap();
    std::fs::write(cache.join("summaries"), "an older version's store").unwrap();
    std::fs::write(cache.join("summaries.tmp.1.0"), "half of one").unwrap();
    // A changed file, so that the store is written again: the other copy.
    let vm = dir.path().join("127.1.0.1.csv");
    let text = std::fs::read_to_string(&vm).unwrap();
    std::fs::write(&vm, &text[..text.len() / 2]).unwrap();
    let changed = report(dir.path(), as_of);
    assert_ne!(changed, truth);
    assert_eq!(names_in(&cache), ["summaries.0", "summaries.1"]);
    assert_eq!(report(dir.path(), as_of), changed);
}

#[test]
fn planted_and_broken_entries_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    write_history(dir.path(), 3, "1");
    let as_of = now_ms();
    let truth = report(dir.path(), as_of);
    let cache = dir.path().join(".vmstats");
    let store = cache.join("summaries.0");
    let good = std::fs::read(&store).unwrap();
    // The store cut short, flipped in its footer, its index or an entry,
    // or not a store at all, then a link to elsewhere, each time the only
    // copy: each time the same report, and a store of our own written.
    let outside = tempfile::NamedTempFile::new().unwrap();
    let other = cache.join("summaries.1");
    for case in 0..5 {
        let _ = std::fs::remove_file(&other);
        let mut bytes = good.clone();
        match case {
            0 => bytes.truncate(bytes.len() / 2),
            1 => {
                let at = bytes.len() - 40;
                bytes[at] ^= 0x5a;
            }
            2 => {
                let at = bytes.len() - 48;
                bytes[at] ^= 0x5a;
            }
            3 => bytes[40] ^= 0x5a,
            _ => bytes = b"vmstats summary store 3\n".repeat(3),
        }
        std::fs::write(&store, &bytes).unwrap();
        assert_eq!(report(dir.path(), as_of), truth, "case {case}");
    }
    let _ = std::fs::remove_file(&other);
    std::fs::remove_file(&store).unwrap();
    std::os::unix::fs::symlink(outside.path(), &store).unwrap();
    assert_eq!(report(dir.path(), as_of), truth);
    assert_eq!(
        std::fs::read(outside.path()).unwrap(),
        b"",
        "a link was followed"
    );
    assert!(std::fs::symlink_metadata(&store).unwrap().is_file());
    // `.vmstats` itself a link to elsewhere: not used, nothing written there.
    std::fs::remove_dir_all(&cache).unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    // Someone's own `.sum` file there, which a prune must not take.
    std::fs::write(elsewhere.path().join("1-2.sum"), "theirs").unwrap();
    std::os::unix::fs::symlink(elsewhere.path(), &cache).unwrap();
    assert_eq!(report(dir.path(), as_of), truth);
    let left: Vec<_> = std::fs::read_dir(elsewhere.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["1-2.sum"]);
    assert_eq!(
        std::fs::read(elsewhere.path().join("1-2.sum")).unwrap(),
        b"theirs"
    );
}

#[test]
fn an_entry_hard_linked_to_a_file_elsewhere_is_never_written() {
    let dir = tempfile::tempdir().unwrap();
    write_history(dir.path(), 3, "1");
    let as_of = now_ms();
    let truth = report(dir.path(), as_of);
    // The same filesystem (a hard link needs it), outside the data dir.
    let victim = tempfile::NamedTempFile::new_in(dir.path().parent().unwrap()).unwrap();
    std::fs::write(victim.path(), "a file someone else owns\n").unwrap();
    let store = dir.path().join(".vmstats/summaries.0");
    std::fs::remove_file(&store).unwrap();
    std::fs::hard_link(victim.path(), &store).unwrap();
    assert_eq!(report(dir.path(), as_of), truth);
    assert_eq!(std::fs::metadata(&store).unwrap().nlink(), 1);
    assert_eq!(
        std::fs::read(victim.path()).unwrap(),
        b"a file someone else owns\n",
        "an entry with another link was written through"
    );
}
