//! The summary cache: each data file's per-day [`Segment`]s, kept under
//! `<data-dir>/.vmstats/` so that a report over data it has seen reads
//! only what was appended since (and the days its window cuts).
//!
//! Everything in it is derived from the CSV files: deleting the directory
//! loses nothing but time. An entry is named by the file's device and
//! inode, so logrotate's renames (`<ip>.csv` to `<ip>.csv.1` to
//! `<ip>.csv.2`) keep it; it is used only while the file still matches it:
//!
//! - a plain file must be at least as long as the bytes the entry covers,
//!   and end those bytes with the same last 32 (a file truncated, rewritten
//!   or replaced under the same inode fails this and is read again);
//! - a gzip part must have the same length and modification time;
//! - an entry built for a window that began later than this report's (it
//!   skipped the rows before) is rebuilt from the earlier start.
//!
//! The cache is as trusted as the files beside it, which is not at all:
//! entries are opened without following links, decoded with every length
//! checked ([`codec`](super::codec)) and its checksum compared, and one
//! that does not decode is rebuilt: a report running beside another, or
//! beside the aggregator's own, at worst reads its part again. When the
//! directory cannot be made (a read-only data dir) the report runs
//! without it, saying so once.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::UNIX_EPOCH;

use crossbeam_channel::Sender;

use crate::store::{self, OpenError};

use super::ReportError;
use super::codec::{self, Corrupt, Reader};
use super::scan::{self, Part, Window};
use super::segment::{Builder, Segment};
use super::summary::Accumulator;

/// The cache's directory inside a data dir.
pub const DIR_NAME: &str = ".vmstats";

const MAGIC: &[u8] = b"vmstats summary cache 2\n";

/// Bytes of a plain file's covered end kept to recognize it.
const TAIL: u64 = 32;

/// Each data dir's cache directory, or `None` where there is none.
pub struct CacheDirs {
    dirs: HashMap<PathBuf, Option<PathBuf>>,
    warned: AtomicBool,
}

impl CacheDirs {
    /// Finds or makes `.vmstats` (mode 0750) in each data dir; a data dir
    /// where that fails, or where `.vmstats` is not a plain directory (a
    /// symlink planted there), goes without, with one warning.
    pub fn open(data_dirs: &[PathBuf]) -> CacheDirs {
        let dirs = data_dirs
            .iter()
            .map(|dir| {
                let path = dir.join(DIR_NAME);
                let made = match fs::symlink_metadata(&path) {
                    Ok(meta) if meta.file_type().is_dir() => Ok(()),
                    Ok(_) => Err(io::Error::other("not a directory")),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        fs::DirBuilder::new().mode(0o750).create(&path)
                    }
                    Err(e) => Err(e),
                };
                let cache = match made {
                    Ok(()) => Some(path),
                    Err(e) => {
                        crate::log_line(&format!(
                            "note: no summary cache in {}: {e}; every report reads all rows",
                            path.display()
                        ));
                        None
                    }
                };
                (dir.clone(), cache)
            })
            .collect();
        CacheDirs {
            dirs,
            warned: AtomicBool::new(false),
        }
    }

    fn entry_path(&self, part: &Path, meta: &fs::Metadata) -> Option<PathBuf> {
        let dir = self.dirs.get(part.parent()?)?.as_ref()?;
        Some(dir.join(format!("{}-{}.sum", meta.dev(), meta.ino())))
    }

    fn warn_once(&self, what: &str, path: &Path, e: &io::Error) {
        if !self.warned.swap(true, Ordering::Relaxed) {
            crate::log_line(&format!(
                "warning: cannot {what} summary cache {}: {e}; the report goes on without it",
                path.display()
            ));
        }
    }

    /// Removes entries of files no longer in the data dirs (rotated away
    /// or deleted).
    pub fn prune(&self, parts: &[&Part]) {
        let live: HashSet<String> = parts
            .iter()
            .filter_map(|p| fs::symlink_metadata(&p.path).ok())
            .map(|m| format!("{}-{}.sum", m.dev(), m.ino()))
            .collect();
        for dir in self.dirs.values().flatten() {
            let Ok(entries) = fs::read_dir(dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                if name.ends_with(".sum") && !live.contains(name) {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
    }
}

/// What the cache knows of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    dev: u64,
    ino: u64,
    gzip: bool,
    /// A gzip part's length and mtime (ns), which must not change.
    len: u64,
    mtime_ns: u64,
    /// It holds every row received after this: the start of the window
    /// of the report that built it, when that report began reading past
    /// the header (`None`: all rows).
    complete_after_ms: Option<u64>,
    /// The end of the last whole line read.
    covered: u64,
    /// The bytes before `covered` (plain files).
    tail: Vec<u8>,
    segments: Vec<Segment>,
}

fn mtime_ns(meta: &fs::Metadata) -> u64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as u64)
}

fn tail_of(file: &File, covered: u64) -> io::Result<Vec<u8>> {
    let n = covered.min(TAIL);
    let mut tail = vec![0; n as usize];
    file.read_exact_at(&mut tail, covered - n)?;
    Ok(tail)
}

impl Entry {
    /// Whether it still describes `file` and holds every row `window` needs.
    fn fits(&self, file: &File, meta: &fs::Metadata, gzip: bool, window: &Window) -> bool {
        let same_file = self.dev == meta.dev() && self.ino == meta.ino() && self.gzip == gzip;
        let unchanged = if gzip {
            self.len == meta.len() && self.mtime_ns == mtime_ns(meta)
        } else {
            meta.len() >= self.covered && tail_of(file, self.covered).is_ok_and(|t| t == self.tail)
        };
        let early_enough = match (self.complete_after_ms, window.from_ms) {
            (None, _) => true,
            (Some(after), Some(from)) => from >= after,
            (Some(_), None) => false,
        };
        same_file && unchanged && early_enough
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        for v in [
            self.dev,
            self.ino,
            u64::from(self.gzip),
            self.len,
            self.mtime_ns,
        ] {
            codec::put(&mut out, v);
        }
        codec::put_opt(&mut out, self.complete_after_ms);
        codec::put(&mut out, self.covered);
        codec::put(&mut out, self.tail.len() as u64);
        out.extend_from_slice(&self.tail);
        codec::put(&mut out, self.segments.len() as u64);
        for s in &self.segments {
            for v in [s.day, s.first_byte, s.end_byte, s.min_ms, s.max_ms] {
                codec::put(&mut out, v);
            }
            codec::put(&mut out, s.state.len() as u64);
            out.extend_from_slice(&s.state);
        }
        let sum = checksum(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Result<Entry, Corrupt> {
        let (bytes, sum) = bytes.split_last_chunk::<8>().ok_or(Corrupt)?;
        if checksum(bytes) != u64::from_le_bytes(*sum) {
            return Err(Corrupt);
        }
        let body = bytes.strip_prefix(MAGIC).ok_or(Corrupt)?;
        let r = &mut Reader::new(body);
        let (dev, ino) = (r.get()?, r.get()?);
        let gzip = match r.get()? {
            0 => false,
            1 => true,
            _ => return Err(Corrupt),
        };
        let (len, mtime_ns) = (r.get()?, r.get()?);
        let complete_after_ms = r.get_opt()?;
        let covered = r.get()?;
        let n = r.get_len()?;
        let tail = r.take(n)?.to_vec();
        let mut segments = Vec::new();
        for _ in 0..r.get_len()? {
            let (day, first_byte, end_byte, min_ms, max_ms) =
                (r.get()?, r.get()?, r.get()?, r.get()?, r.get()?);
            let n = r.get_len()?;
            let state = r.take(n)?.to_vec();
            if segments.last().is_some_and(|s: &Segment| s.day >= day) {
                return Err(Corrupt);
            }
            segments.push(Segment {
                day,
                first_byte,
                end_byte,
                min_ms,
                max_ms,
                state,
            });
        }
        if !r.is_empty() {
            return Err(Corrupt);
        }
        Ok(Entry {
            dev,
            ino,
            gzip,
            len,
            mtime_ns,
            complete_after_ms,
            covered,
            tail,
            segments,
        })
    }
}

fn load(path: &Path) -> Option<Entry> {
    let (mut file, _) = store::open_regular(path, OpenOptions::new().read(true)).ok()?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).ok()?;
    Entry::decode(&bytes).ok()
}

/// Writes `entry` over the old one in place: a new file (and inode) per
/// write would make ext4 search its inode bitmaps past the ones just
/// freed, which cost more than the report itself when every live file's
/// entry is rewritten. A reader racing the write, or a crash in it, sees a
/// checksum that does not match, and rebuilds. Something other than a
/// regular file planted at the entry's name is removed (not followed).
fn store_entry(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let opened = match store::open_regular(path, OpenOptions::new().write(true)) {
        Err(OpenError::NotRegular(_)) => {
            fs::remove_file(path)?;
            Err(io::ErrorKind::NotFound.into())
        }
        Err(OpenError::Io(e)) => Err(e),
        Ok((file, _)) => Ok(file),
    };
    let file = match opened {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let mut opts = OpenOptions::new();
            opts.write(true).create_new(true).mode(0o640);
            store::open_regular(path, &mut opts)
                .map_err(|e| io::Error::other(e.to_string()))?
                .0
        }
        other => other?,
    };
    file.write_all_at(bytes, 0)?;
    file.set_len(bytes.len() as u64)
}

/// Entries waiting for the writer, at most: a few MB.
const WRITES_QUEUED: usize = 256;

/// An entry to write: where, and its bytes.
pub type Write = (PathBuf, Vec<u8>);

/// Runs `f` with a sender of entries to write, and a thread writing them
/// until `f` returns and its sender is dropped. One thread creates the
/// files: readers that each created their own spent more time waiting on
/// the directory's lock than writing.
pub fn with_writer<R>(caches: &CacheDirs, f: impl FnOnce(Sender<Write>) -> R) -> R {
    let quiet = crate::is_quiet();
    std::thread::scope(|scope| {
        let (writes, entries) = crossbeam_channel::bounded::<Write>(WRITES_QUEUED);
        scope.spawn(move || {
            crate::quietly(quiet, || {
                for (path, bytes) in entries {
                    if let Err(e) = store_entry(&path, &bytes) {
                        caches.warn_once("write", &path, &e);
                    }
                }
            })
        });
        f(writes)
    })
}

/// A checksum of an entry (not against forgery: the files beside it can be
/// forged as easily; against a torn or interleaved write).
fn checksum(bytes: &[u8]) -> u64 {
    const K: u64 = 0x0000_0100_0000_01b3;
    let mut h = 0x9e37_79b9_7f4a_7c15 ^ bytes.len() as u64;
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        let w = u64::from_le_bytes(w.try_into().expect("chunks of 8"));
        h = (h ^ w).wrapping_mul(K).rotate_left(29);
    }
    for b in words.remainder() {
        h = (h ^ u64::from(*b)).wrapping_mul(K);
    }
    h
}

/// A part's segments, holding at least every row of it in `window`: the
/// cached ones, brought up to date with the rows appended since, or built
/// from the file (from where the window begins) and cached. Returned with
/// the file, opened, for reading the days the window cuts; `None` for a
/// part not read (not a regular file, or last written before the window).
pub fn segments(
    part: &Part,
    window: &Window,
    caches: &CacheDirs,
    acc: &mut Accumulator,
    writes: &Sender<Write>,
) -> Result<Option<(File, Vec<Segment>)>, ReportError> {
    let path = &part.path;
    let err = |error| ReportError::File {
        path: path.to_path_buf(),
        error,
    };
    let Some((file, meta)) = scan::open_part(part, window)? else {
        return Ok(None);
    };
    let entry_path = caches.entry_path(path, &meta);
    let cached = entry_path
        .as_deref()
        .and_then(load)
        .filter(|e| e.fits(&file, &meta, part.gzip, window));
    let entry = match cached {
        Some(e) if part.gzip || e.covered == meta.len() => return Ok(Some((file, e.segments))),
        Some(e) => extend(e, &file, acc).map_err(err)?,
        None => None,
    };
    let entry = match entry {
        Some(e) => e,
        None => build(part, file.try_clone().map_err(err)?, &meta, window, acc).map_err(err)?,
    };
    let entry = Entry {
        tail: if part.gzip {
            Vec::new()
        } else {
            tail_of(&file, entry.covered).map_err(err)?
        },
        ..entry
    };
    if let Some(at) = entry_path {
        // The writer is gone only if it panicked; the report goes on.
        let _ = writes.send((at, entry.encode()));
    }
    Ok(Some((file, entry.segments)))
}

/// The entry with the rows appended to its file since; `None` when a
/// cached segment does not decode (the file is then read again).
fn extend(entry: Entry, file: &File, acc: &mut Accumulator) -> io::Result<Option<Entry>> {
    let reader = scan::reader_at(file, false, entry.covered, None)?;
    let mut builder = Builder::new(acc, entry.segments);
    let covered = scan::each_line(reader, entry.covered, u64::MAX, |row, start, end| {
        builder.line(row, start, end)
    })?;
    Ok(builder.finish().map(|segments| Entry {
        covered,
        segments,
        ..entry
    }))
}

/// A new entry for `file`, read from where `window` begins.
fn build(
    part: &Part,
    file: File,
    meta: &fs::Metadata,
    window: &Window,
    acc: &mut Accumulator,
) -> io::Result<Entry> {
    let (reader, header_end, start) = scan::rows_from(file, part.gzip, meta.len(), window)?;
    let mut builder = Builder::new(acc, Vec::new());
    let covered = scan::each_line(reader, start, u64::MAX, |row, s, e| builder.line(row, s, e))?;
    Ok(Entry {
        dev: meta.dev(),
        ino: meta.ino(),
        gzip: part.gzip,
        len: meta.len(),
        mtime_ns: mtime_ns(meta),
        complete_after_ms: window.from_ms.filter(|_| start > header_end),
        covered,
        tail: Vec::new(),
        segments: builder.finish().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_junk_is_refused() {
        let entry = Entry {
            dev: 1,
            ino: 2,
            gzip: false,
            len: 300,
            mtime_ns: 4,
            complete_after_ms: Some(5),
            covered: 290,
            tail: b"0,0\n".to_vec(),
            segments: vec![Segment {
                day: 3,
                first_byte: 10,
                end_byte: 290,
                min_ms: 3 * 86_400_000,
                max_ms: 3 * 86_400_000 + 9,
                state: vec![1, 2, 3],
            }],
        };
        let bytes = entry.encode();
        assert_eq!(Entry::decode(&bytes), Ok(entry));
        for cut in 0..bytes.len() {
            assert_eq!(Entry::decode(&bytes[..cut]), Err(Corrupt), "cut at {cut}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(Entry::decode(&long), Err(Corrupt));
    }
}
