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
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::UNIX_EPOCH;

use crossbeam_channel::Sender;

use crate::sys;

use super::ReportError;
use serde::{Deserialize, Serialize};

use super::codec::Corrupt;
use super::scan::{self, Part, Window};
use super::segment::{Builder, Segment};
use super::summary::Accumulator;

/// The cache's directory inside a data dir.
pub const DIR_NAME: &str = ".vmstats";

const MAGIC: &[u8] = b"vmstats summary cache 8\n";

/// Bytes of each probe of a plain file kept to recognize it.
const TAIL: u64 = 32;

/// Probes spread over a plain file's covered bytes, besides its last
/// [`TAIL`]: a file rewritten in place but for its end fails them.
const PROBES: u64 = 8;

/// An entry larger than this plus [`ENTRY_BYTES_PER_BYTE`] times its
/// file's (inflated) bytes cannot be one of ours: it is not read.
const ENTRY_BASE: u64 = 64 << 10;

/// An entry's bytes per byte of the rows it sums up, at most: a row is at
/// least [`MIN_ROW_BYTES`](super::segment::MIN_ROW_BYTES) long and adds
/// less than four times that to a segment.
const ENTRY_BYTES_PER_BYTE: u64 = 4;

/// One data dir's `.vmstats`, opened once: every entry is opened, written
/// and removed through this handle (`openat`, `unlinkat`), so swapping the
/// directory for a symlink while a report runs leads nowhere else.
struct CacheDir {
    path: PathBuf,
    handle: File,
}

/// Each data dir's cache directory, or `None` where there is none.
pub struct CacheDirs {
    dirs: HashMap<PathBuf, Option<Arc<CacheDir>>>,
    warned: AtomicBool,
}

impl CacheDirs {
    /// Finds or makes `.vmstats` (mode 0750) in each data dir that holds a
    /// VM file (`with_files`: a dir with none gets nothing created in it);
    /// a data dir where that fails, or where `.vmstats` is not a plain
    /// directory (a symlink planted there), goes without, with one note.
    pub fn open(data_dirs: &[PathBuf], with_files: &HashSet<&Path>) -> CacheDirs {
        let dirs = data_dirs
            .iter()
            .map(|dir| {
                let path = dir.join(DIR_NAME);
                let cache = if with_files.contains(dir.as_path()) {
                    match open_cache_dir(&path) {
                        Ok(cache) => Some(Arc::new(cache)),
                        Err(e) => {
                            crate::log_line(&format!(
                                "note: no summary cache in {}: {e}; every report reads all rows",
                                path.display()
                            ));
                            None
                        }
                    }
                } else {
                    None
                };
                (dir.clone(), cache)
            })
            .collect();
        CacheDirs {
            dirs,
            warned: AtomicBool::new(false),
        }
    }

    /// The cache directory of `part` and its entry's name.
    fn entry_of(&self, part: &Path, meta: &fs::Metadata) -> Option<(&Arc<CacheDir>, String)> {
        let dir = self.dirs.get(part.parent()?)?.as_ref()?;
        Some((dir, entry_name(meta.dev(), meta.ino())))
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
    /// or deleted). The names are listed by path but removed through the
    /// directory's handle: whatever the path leads to now, only entries of
    /// this cache can go.
    pub fn prune(&self, parts: &[&Part]) {
        let live: HashSet<String> = parts
            .iter()
            .filter_map(|p| fs::symlink_metadata(&p.path).ok())
            .map(|m| entry_name(m.dev(), m.ino()))
            .collect();
        for dir in self.dirs.values().flatten() {
            let Ok(entries) = fs::read_dir(&dir.path) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                if name.ends_with(".sum") && !live.contains(name) {
                    let _ = sys::unlink_at(&dir.handle, name);
                }
            }
        }
    }

    /// Drops the entry of `part` (it held a segment that would not merge
    /// as stored), so the next report builds it again.
    pub fn forget(&self, part: &Part, file: &File) {
        let Ok(meta) = file.metadata() else { return };
        if let Some((dir, name)) = self.entry_of(&part.path, &meta) {
            let _ = sys::unlink_at(&dir.handle, &name);
        }
    }
}

fn entry_name(dev: u64, ino: u64) -> String {
    format!("{dev}-{ino}.sum")
}

/// Makes `path` if missing and opens it as a directory without following
/// a symlink.
fn open_cache_dir(path: &Path) -> io::Result<CacheDir> {
    match fs::DirBuilder::new().mode(0o750).create(path) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    let handle = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP | libc::ENOTDIR) => io::Error::other("not a directory"),
            _ => e,
        })?;
    Ok(CacheDir {
        path: path.to_path_buf(),
        handle,
    })
}

/// What the cache knows of one file (serde's, written by postcard between
/// the magic line and the checksum).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    dev: u64,
    ino: u64,
    gzip: bool,
    /// The file's length and mtime (ns) when it was read: a gzip part must
    /// keep both, a plain file that did not grow its mtime.
    len: u64,
    mtime_ns: u64,
    /// It holds every row received after this: the start of the window
    /// of the report that built it, when that report began reading past
    /// the header (`None`: all rows).
    complete_after_ms: Option<u64>,
    /// The end of the last whole line read.
    covered: u64,
    /// Probes of the bytes before `covered` (plain files, [`probes_of`]).
    #[serde(with = "serde_bytes")]
    probes: Vec<u8>,
    segments: Vec<Segment>,
}

fn mtime_ns(meta: &fs::Metadata) -> u64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as u64)
}

/// [`PROBES`] runs of [`TAIL`] bytes spread over a plain file's first
/// `covered` bytes, and its last [`TAIL`]: one small `pread` each.
fn probes_of(file: &File, covered: u64) -> io::Result<Vec<u8>> {
    let n = covered.min(TAIL);
    let mut out = vec![0; ((PROBES + 1) * n) as usize];
    let starts = (0..PROBES).map(|i| (covered - n) / PROBES * i);
    for (chunk, at) in out
        .chunks_mut(n.max(1) as usize)
        .zip(starts.chain([covered - n]))
    {
        file.read_exact_at(chunk, at)?;
    }
    Ok(out)
}

impl Entry {
    /// Whether it still describes `file` and holds every row `window` needs.
    fn fits(&self, file: &File, meta: &fs::Metadata, gzip: bool, window: &Window) -> bool {
        let same_file = self.dev == meta.dev() && self.ino == meta.ino() && self.gzip == gzip;
        let unchanged = if gzip {
            self.len == meta.len() && self.mtime_ns == mtime_ns(meta)
        } else if meta.len() == self.covered {
            // Not grown: not written since, unless rewritten in place.
            self.mtime_ns == mtime_ns(meta)
        } else {
            meta.len() > self.covered
                && probes_of(file, self.covered).is_ok_and(|p| p == self.probes)
        };
        let early_enough = match (self.complete_after_ms, window.from_ms) {
            (None, _) => true,
            (Some(after), Some(from)) => from >= after,
            (Some(_), None) => false,
        };
        same_file && unchanged && early_enough
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = postcard::to_extend(self, MAGIC.to_vec()).expect("a Vec takes any bytes");
        let sum = checksum(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        out
    }

    /// The entry in `bytes`, refused unless its checksum matches and every
    /// segment lies in the covered bytes, in its own day, in day order.
    fn decode(bytes: &[u8]) -> Result<Entry, Corrupt> {
        let (bytes, sum) = bytes.split_last_chunk::<8>().ok_or(Corrupt)?;
        if checksum(bytes) != u64::from_le_bytes(*sum) {
            return Err(Corrupt);
        }
        let body = bytes.strip_prefix(MAGIC).ok_or(Corrupt)?;
        let (entry, rest) = postcard::take_from_bytes::<Entry>(body).map_err(|_| Corrupt)?;
        if !rest.is_empty() || entry.probes.len() as u64 > (PROBES + 1) * TAIL {
            return Err(Corrupt);
        }
        let mut day_before = None;
        for s in &entry.segments {
            let ordered = day_before.is_none_or(|d| d < s.day);
            let in_file = s.first_byte <= s.end_byte && s.end_byte <= entry.covered;
            let in_day = s.min_ms <= s.max_ms
                && s.min_ms / super::summary::DAY_MS == s.day
                && s.max_ms / super::summary::DAY_MS == s.day;
            if !(ordered && in_file && in_day) {
                return Err(Corrupt);
            }
            day_before = Some(s.day);
        }
        Ok(entry)
    }
}

/// The entry `name` in `dir`, if it is a regular file with no other link
/// (a hard link planted there could be anyone's file), no larger than
/// `max_len`, and decodes.
fn load(dir: &CacheDir, name: &str, max_len: u64) -> Option<Entry> {
    let file = sys::open_at(&dir.handle, name, libc::O_RDONLY | libc::O_NONBLOCK, 0).ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() || meta.nlink() != 1 || meta.len() > max_len {
        return None;
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max_len).read_to_end(&mut bytes).ok()?;
    Entry::decode(&bytes).ok()
}

/// The largest entry a part of `len` bytes (compressed when `gzip`) can
/// need.
fn max_entry_len(len: u64, gzip: bool) -> u64 {
    let rows_bytes = if gzip { scan::max_inflated(len) } else { len };
    ENTRY_BASE.saturating_add(rows_bytes.saturating_mul(ENTRY_BYTES_PER_BYTE))
}

/// Writes `bytes` over the entry `name` in place: a new file (and inode)
/// per write would make ext4 search its inode bitmaps past the ones just
/// freed, which cost more than the report itself when every live file's
/// entry is rewritten. A reader racing the write, or a crash in it, sees a
/// checksum that does not match, and rebuilds. Anything but a regular file
/// with one link at the name (a symlink, a FIFO, a hard link to a file
/// elsewhere) is removed, never written through.
fn store_entry(dir: &CacheDir, name: &str, bytes: &[u8]) -> io::Result<()> {
    let existing = match sys::open_at(&dir.handle, name, libc::O_WRONLY | libc::O_NONBLOCK, 0) {
        Ok(file) => {
            let meta = file.metadata()?;
            if meta.is_file() && meta.nlink() == 1 {
                Some(file)
            } else {
                drop(file);
                sys::unlink_at(&dir.handle, name)?;
                None
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        // A symlink (ELOOP), a directory, a socket: not ours to follow.
        Err(_) => {
            sys::unlink_at(&dir.handle, name)?;
            None
        }
    };
    let file = match existing {
        Some(file) => file,
        None => {
            let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL;
            sys::open_at(&dir.handle, name, flags, 0o640)?
        }
    };
    file.write_all_at(bytes, 0)?;
    file.set_len(bytes.len() as u64)
}

/// Entries waiting for the writer, at most: a few MB.
const WRITES_QUEUED: usize = 256;

/// An entry to write: the cache directory that holds it, its name, and
/// its bytes.
pub struct EntryWrite {
    dir: Arc<CacheDir>,
    name: String,
    bytes: Vec<u8>,
}

/// Runs `f` with a sender of entries to write, and a thread writing them
/// until `f` returns and its sender is dropped. One thread creates the
/// files: readers that each created their own spent more time waiting on
/// the directory's lock than writing.
pub fn with_writer<R>(caches: &CacheDirs, f: impl FnOnce(Sender<EntryWrite>) -> R) -> R {
    let quiet = crate::is_quiet();
    std::thread::scope(|scope| {
        let (writes, entries) = crossbeam_channel::bounded::<EntryWrite>(WRITES_QUEUED);
        scope.spawn(move || {
            crate::quietly(quiet, || {
                for w in entries {
                    if let Err(e) = store_entry(&w.dir, &w.name, &w.bytes) {
                        caches.warn_once("write", &w.dir.path.join(&w.name), &e);
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
    writes: &Sender<EntryWrite>,
) -> Result<Option<(File, Vec<Segment>)>, ReportError> {
    let path = &part.path;
    let err = |error| ReportError::File {
        path: path.to_path_buf(),
        error,
    };
    let Some((file, meta)) = scan::open_part(part, window)? else {
        return Ok(None);
    };
    let at = caches.entry_of(path, &meta);
    let cached = at
        .as_ref()
        .and_then(|(dir, name)| load(dir, name, max_entry_len(meta.len(), part.gzip)))
        .filter(|e| e.fits(&file, &meta, part.gzip, window));
    let entry = match cached {
        Some(e) if part.gzip || e.covered == meta.len() => return Ok(Some((file, e.segments))),
        Some(e) => extend(e, part, &file, acc).map_err(err)?,
        None => None,
    };
    let entry = match entry {
        Some(e) => e,
        None => build(part, file.try_clone().map_err(err)?, &meta, window, acc).map_err(err)?,
    };
    let entry = Entry {
        len: meta.len(),
        mtime_ns: mtime_ns(&meta),
        probes: if part.gzip {
            Vec::new()
        } else {
            probes_of(&file, entry.covered).map_err(err)?
        },
        ..entry
    };
    if let Some((dir, name)) = at {
        // The writer is gone only if it panicked; the report goes on.
        let _ = writes.send(EntryWrite {
            dir: Arc::clone(dir),
            name,
            bytes: entry.encode(),
        });
    }
    Ok(Some((file, entry.segments)))
}

/// The entry with the rows appended to its file since; `None` when a
/// cached segment does not decode (the file is then read again).
fn extend(
    entry: Entry,
    part: &Part,
    file: &File,
    acc: &mut Accumulator,
) -> io::Result<Option<Entry>> {
    let reader = scan::reader_at(file, part, entry.covered, None)?;
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
    let (reader, header_end, start) = scan::rows_from(file, part, meta.len(), window)?;
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
        probes: Vec::new(),
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
            probes: b"0,0\n".to_vec(),
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
