//! Restart after a crash: the journal's rows go to their VM files, each
//! exactly once, before the aggregator receives anything.
//!
//! Exactly once follows from the order the journal keeps (see the module
//! above): a VM's rows reach its file only after they are durable in the
//! journal, and in journal order, so whatever a crash left in the file of
//! the rows still journaled is a prefix of them. The replay appends the
//! rest ([`FileStore::append_missing`]), after the store has cut a row the
//! crash tore. A crash during the replay leaves the segments in place, and
//! the next replay finds more of each prefix in the files: nothing is
//! written twice. The segments are removed only once the files are synced.
//!
//! The one case it cannot see: logrotate moving a VM's file between the
//! crash and the restart. The replayed rows then start the new file, and
//! those already in the rotated part appear twice; the report counts each
//! (`boot_id`, `seq`) once, so its figures do not change.

use std::collections::hash_map::Entry;
use std::fs::{self, DirBuilder, OpenOptions};
use std::io;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use foldhash::HashMap;

use super::{SUFFIX, parse_line};
use crate::store::{FileStore, Opened};

/// Why the journal could not be replayed: the aggregator does not start,
/// since receiving before the journal is in the files would put new rows
/// before older ones.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal directory {path} cannot be used: {error}")]
    Dir { path: PathBuf, error: io::Error },
    #[error("cannot read journal segment {path}: {error}")]
    Read { path: PathBuf, error: io::Error },
    #[error("cannot sync data dir {path} after replaying the journal: {error}")]
    Sync { path: PathBuf, error: io::Error },
}

/// What a replay did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Replayed {
    pub segments: usize,
    /// Rows the segments held.
    pub rows: u64,
    /// Of those, rows already in their files.
    pub present: u64,
    pub vms: usize,
    /// Bytes of torn segment tails left out.
    pub torn_bytes: u64,
    /// Rows whose file could not be written, by file (logged each).
    pub lost: Vec<(PathBuf, u64)>,
}

impl Replayed {
    /// The log line, or `None` when there was nothing to replay.
    pub fn line(&self) -> Option<String> {
        if self.segments == 0 {
            return None;
        }
        let torn = if self.torn_bytes > 0 {
            format!("; cut a torn tail of {} bytes", self.torn_bytes)
        } else {
            String::new()
        };
        let lost: u64 = self.lost.iter().map(|(_, n)| n).sum();
        let lost = if lost > 0 {
            format!("; {lost} rows could not be written (named above)")
        } else {
            String::new()
        };
        Some(format!(
            "udp-aggregator: replayed the journal of an unclean stop: {} segments, {} rows of {} VMs, {} appended, {} already in their files{torn}{lost}",
            self.segments,
            self.rows,
            self.vms,
            self.rows - self.present,
            self.present,
        ))
    }
}

/// Makes the journal directory (and `.vmstats`) if missing, refusing
/// anything but a plain directory at either path.
fn make_dir(path: &Path) -> Result<(), JournalError> {
    let err = |error| JournalError::Dir {
        path: path.to_path_buf(),
        error,
    };
    for dir in [path.parent().expect("journal dir has a parent"), path] {
        match DirBuilder::new().mode(0o750).create(dir) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(err(e)),
            _ => {}
        }
        let meta = fs::symlink_metadata(dir).map_err(err)?;
        if !meta.is_dir() {
            return Err(err(io::Error::other(format!(
                "{} is not a directory",
                dir.display()
            ))));
        }
    }
    Ok(())
}

/// The segment files of `dir`, in write order.
fn segments(dir: &Path) -> Result<Vec<PathBuf>, JournalError> {
    let err = |error| JournalError::Dir {
        path: dir.to_path_buf(),
        error,
    };
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(err)? {
        let entry = entry.map_err(err)?;
        if entry.file_name().to_string_lossy().ends_with(SUFFIX) {
            found.push(entry.path());
        }
    }
    found.sort();
    Ok(found)
}

/// A segment's bytes, read through the same no-symlink, regular-file-only
/// open as the VM files.
fn read_segment_file(path: &Path) -> io::Result<Vec<u8>> {
    let (mut file, _) =
        crate::store::open_regular(path, OpenOptions::new().read(true)).map_err(|e| match e {
            crate::store::OpenError::Io(e) => e,
            other => io::Error::other(other.to_string()),
        })?;
    let mut bytes = Vec::new();
    io::Read::read_to_end(&mut file, &mut bytes)?;
    Ok(bytes)
}

/// Adds a segment's lines to `by_vm`; returns its rows and the bytes of a
/// torn tail.
pub(super) fn read_segment(bytes: &[u8], by_vm: &mut HashMap<IpAddr, Vec<u8>>) -> (u64, u64) {
    let mut rows = 0;
    let mut at = 0;
    while let Some(end) = bytes[at..].iter().position(|b| *b == b'\n') {
        if end == 0 {
            // A direct write's padding.
            at += 1;
            continue;
        }
        let Some((ip, row)) = parse_line(&bytes[at..at + end]) else {
            break;
        };
        let buf = match by_vm.entry(ip) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(Vec::new()),
        };
        buf.extend_from_slice(row);
        buf.push(b'\n');
        rows += 1;
        at += end + 1;
    }
    (rows, (bytes.len() - at) as u64)
}

/// Appends what `data_dir`'s journal holds to the VM files (new files get
/// `file_mode`, at most `max_open` are open at once), syncs them unless
/// `sync` is false, and removes the segments. Makes the journal directory
/// when there is none.
pub fn replay(
    data_dir: &Path,
    file_mode: u32,
    max_open: usize,
    sync: bool,
) -> Result<Replayed, JournalError> {
    let dir = super::dir_of(data_dir);
    make_dir(&dir)?;
    let paths = segments(&dir)?;
    let mut done = Replayed {
        segments: paths.len(),
        ..Replayed::default()
    };
    if paths.is_empty() {
        return Ok(done);
    }
    let mut by_vm: HashMap<IpAddr, Vec<u8>> = HashMap::default();
    for path in &paths {
        let bytes = read_segment_file(path).map_err(|error| JournalError::Read {
            path: path.clone(),
            error,
        })?;
        let (rows, torn) = read_segment(&bytes, &mut by_vm);
        done.rows += rows;
        if torn > 0 {
            crate::log_line(&format!(
                "warning: {}: cut a torn tail ({torn} bytes) of the journal",
                path.display()
            ));
            done.torn_bytes += torn;
        }
    }
    done.vms = by_vm.len();
    let mut store = FileStore::new(data_dir.to_path_buf(), max_open, file_mode);
    for (ip, rows) in &by_vm {
        match store.append_missing(*ip, rows) {
            Ok((present, opened)) => {
                if let Some(Opened::Repaired(cut)) = opened {
                    crate::log_line(&format!(
                        "warning: {}: cut a torn last row ({cut} bytes) before replaying",
                        store.path_of(*ip).display()
                    ));
                }
                done.present += newlines(&rows[..present]);
            }
            Err(e) => {
                let unwritten = newlines(&rows[e.written.min(rows.len())..]);
                crate::log_line(&format!("error: replaying the journal: {e}"));
                done.lost.push((store.path_of(*ip), unwritten));
            }
        }
    }
    store.close_all();
    if sync {
        let synced = crate::sys::sync_filesystem_at(data_dir);
        synced.map_err(|error| JournalError::Sync {
            path: data_dir.to_path_buf(),
            error,
        })?;
    }
    for path in &paths {
        fs::remove_file(path).map_err(|error| JournalError::Dir {
            path: path.clone(),
            error,
        })?;
    }
    if sync {
        let _ = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(&dir)
            .and_then(|d| d.sync_all());
    }
    Ok(done)
}

fn newlines(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|b| **b == b'\n').count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::block_buf::BlockBuf;
    use crate::wire::{self, Stat};

    fn row(seq: u64) -> Vec<u8> {
        let stat = Stat {
            seq,
            interval_s: 10,
            vcpus: 1,
            ..Stat::default()
        };
        let mut out = Vec::new();
        wire::push_row_of(&mut out, 1_000 + seq, &stat, false);
        out
    }

    fn seqs_in(path: &Path) -> Vec<u64> {
        let text = fs::read_to_string(path).unwrap();
        assert!(text.starts_with(wire::CSV_HEADER), "{text}");
        text.lines()
            .skip(1)
            .map(|l| wire::parse_row(l).unwrap().stat.seq)
            .collect()
    }

    /// A data dir as a crash leaves it: two segments of worker 0, the
    /// second torn; 10.0.0.1's file holds its first two journaled rows and
    /// half the third, 10.0.0.2's file holds an older row only, and
    /// 10.0.0.3 has no file yet.
    fn crashed() -> tempfile::TempDir {
        let data = tempfile::tempdir().unwrap();
        let dir = super::super::dir_of(data.path());
        fs::create_dir_all(&dir).unwrap();
        let mut first = BlockBuf::new();
        let mut second = BlockBuf::new();
        for seq in 1..=4 {
            for ip in ["10.0.0.1", "10.0.0.2", "10.0.0.3"] {
                let seg = if seq <= 2 { &mut first } else { &mut second };
                super::super::push_line(seg, ip.parse().unwrap(), &row(seq));
                // The first segment as direct writes leave it: each chunk
                // padded with empty lines.
                if seq <= 2 {
                    seg.pad_to_block(b'\n');
                }
            }
        }
        second.extend_from_slice(b"10.0.0.1 1005,0,0");
        fs::write(dir.join(super::super::segment_name(0, 0)), &first[..]).unwrap();
        fs::write(dir.join(super::super::segment_name(0, 2)), &second[..]).unwrap();
        let mut one = wire::CSV_HEADER.as_bytes().to_vec();
        one.extend(row(1));
        one.extend(row(2));
        one.extend(&row(3)[..7]);
        fs::write(data.path().join("10.0.0.1.csv"), one).unwrap();
        let mut two = wire::CSV_HEADER.as_bytes().to_vec();
        two.extend(row(0));
        fs::write(data.path().join("10.0.0.2.csv"), two).unwrap();
        data
    }

    #[test]
    fn every_journaled_row_lands_once_and_the_journal_empties() {
        let data = crashed();
        let done = replay(data.path(), 0o640, 8, true).unwrap();
        assert_eq!(done.segments, 2);
        assert_eq!((done.rows, done.present, done.vms), (12, 2, 3));
        assert_eq!(done.torn_bytes, "10.0.0.1 1005,0,0".len() as u64);
        assert!(done.lost.is_empty());
        assert_eq!(seqs_in(&data.path().join("10.0.0.1.csv")), [1, 2, 3, 4]);
        assert_eq!(seqs_in(&data.path().join("10.0.0.2.csv")), [0, 1, 2, 3, 4]);
        assert_eq!(seqs_in(&data.path().join("10.0.0.3.csv")), [1, 2, 3, 4]);
        let journal = super::super::dir_of(data.path());
        assert_eq!(fs::read_dir(journal).unwrap().count(), 0);
        let line = done.line().unwrap();
        assert!(
            line.contains("2 segments, 12 rows of 3 VMs, 10 appended, 2 already"),
            "{line}"
        );
        // Nothing left: a second start replays nothing.
        assert_eq!(replay(data.path(), 0o640, 8, true).unwrap().line(), None);
    }

    #[test]
    fn a_replay_cut_short_and_run_again_writes_nothing_twice() {
        let data = crashed();
        // The first replay got 10.0.0.3's rows 1..3 out (and tore row 3)
        // before the machine died: the segments are all still there.
        let mut three = wire::CSV_HEADER.as_bytes().to_vec();
        three.extend(row(1));
        three.extend(row(2));
        three.extend(&row(3)[..9]);
        fs::write(data.path().join("10.0.0.3.csv"), three).unwrap();
        let done = replay(data.path(), 0o640, 1, false).unwrap();
        assert_eq!(done.present, 4);
        for ip in ["10.0.0.1", "10.0.0.3"] {
            assert_eq!(
                seqs_in(&data.path().join(format!("{ip}.csv"))),
                [1, 2, 3, 4]
            );
        }
    }

    #[test]
    fn a_file_that_cannot_be_written_is_named_and_the_others_replayed() {
        let data = crashed();
        fs::remove_file(data.path().join("10.0.0.2.csv")).unwrap();
        fs::create_dir(data.path().join("10.0.0.2.csv")).unwrap();
        let done = replay(data.path(), 0o640, 8, true).unwrap();
        assert_eq!(done.lost.len(), 1);
        assert_eq!(done.lost[0].1, 4);
        assert!(done.line().unwrap().contains("4 rows could not be written"));
        assert_eq!(seqs_in(&data.path().join("10.0.0.3.csv")), [1, 2, 3, 4]);
    }

    #[test]
    fn something_planted_as_the_journal_dir_is_refused() {
        let data = tempfile::tempdir().unwrap();
        fs::create_dir(data.path().join(crate::report::CACHE_DIR)).unwrap();
        std::os::unix::fs::symlink("/tmp", super::super::dir_of(data.path())).unwrap();
        let err = replay(data.path(), 0o640, 8, true).unwrap_err();
        assert!(err.to_string().contains("is not a directory"), "{err}");
    }
}
