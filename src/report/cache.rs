//! The summary store: each data file's per-day [`Segment`]s, kept in one
//! store per data dir (`<data-dir>/.vmstats/summaries.0` and `.1`), so
//! that a report over data it has seen reads only what was appended since
//! (and the days its window cuts).
//!
//! One store, not a file per VM file: at a million VMs an entry per file
//! cost a million opens per report and a 4 KiB block for a few hundred
//! bytes (3.9 GB of cache for 290 MB of CSV). A store is the entries one
//! after another, then an index of them sorted by file, then a footer that
//! says where the index is and the store's generation; a report reads the
//! index once and each entry it needs with one `pread`.
//!
//! Two copies, each rewritten in place: a report reads the valid copy of
//! the higher generation and writes the next generation over the other,
//! sequentially (the entries it built, and the ones still current copied
//! across from the copy it read), its footer last. Rewriting in place
//! reuses the copy's disk blocks: a new file per pass (written beside and
//! renamed over) allocated hundreds of MB at a million VMs, and the
//! journal's `fdatasync` queued behind the writeback of the new blocks
//! (ext4 without a journal, here), holding accepted rows back from the
//! disk for up to 138 s (`benches/runs/2026-12-03/issue17/`). A reader never
//! takes the copy being written (its old footer says the older
//! generation, or is overwritten and fails to decode); a report killed
//! while writing leaves that copy invalid or older, and the other intact.
//!
//! Everything in it is derived from the CSV files: deleting the directory
//! loses nothing but time. An entry is keyed by the file's device and
//! inode, so logrotate's renames (`<ip>.csv` to `<ip>.csv.1` to
//! `<ip>.csv.2`) keep it; it is used only while the file still matches it:
//!
//! - a plain file must be at least as long as the bytes the entry covers,
//!   and hold at [`PROBES`] places and at the end of those bytes what it
//!   held then (a file truncated, rewritten or replaced under the same
//!   inode fails this and is read again);
//! - a gzip part must have the same length and modification time;
//! - an entry built for a window that began later than this report's (it
//!   skipped the rows before) is rebuilt from the earlier start.
//!
//! The store is as trusted as the files beside it, which is not at all: it
//! is opened without following links, its index and every entry decoded
//! with every length checked ([`codec`](super::codec)) and their checksums
//! compared; a store that does not decode is not used and an entry that
//! does not is rebuilt. When the directory cannot be made (a read-only
//! data dir) the report runs without it, saying so once.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write as _};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::UNIX_EPOCH;

use crossbeam_channel::Sender;
use serde::{Deserialize, Serialize};

use crate::stop::Stop;
use crate::sys;

use super::ReportError;
use super::codec::Corrupt;
use super::scan::{self, Found, Part, Window};
use super::segment::{Builder, Segment};
use super::summary::Accumulator;

/// The cache's directory inside a data dir.
pub const DIR_NAME: &str = ".vmstats";

/// The store's two copies in [`DIR_NAME`].
pub const STORE_NAMES: [&str; 2] = ["summaries.0", "summaries.1"];

const MAGIC: &[u8] = b"vmstats summary store 3\n";

/// The footer: the index's offset, its slots, the store's generation, the
/// checksum of the index and the generation, and this.
const FOOTER_MAGIC: &[u8; 8] = b"vmstore\n";
const FOOTER_LEN: u64 = 40;

/// An index slot: device, inode, offset (u64 each) and length (u32).
const SLOT_LEN: u64 = 28;

/// Slots a store may index, at most (64 M files; 1.8 GB of index): a
/// planted footer claiming more is refused before anything is allocated.
const MAX_SLOTS: u64 = 1 << 26;

/// Bytes of each probe of a plain file kept to recognize it.
const TAIL: u64 = 32;

/// Probes spread over a plain file's covered bytes, besides its last
/// [`TAIL`]: a file rewritten in place but for its end fails them.
const PROBES: u64 = 4;

/// An entry larger than this plus [`ENTRY_BYTES_PER_BYTE`] times its
/// file's (inflated) bytes cannot be one of ours: it is not read.
const ENTRY_BASE: u64 = 64 << 10;

/// An entry's bytes per byte of the rows it sums up, at most: a row is at
/// least [`MIN_ROW_BYTES`](super::segment::MIN_ROW_BYTES) long and adds
/// less than four times that to a segment.
const ENTRY_BYTES_PER_BYTE: u64 = 4;

/// One data dir's `.vmstats`, opened once: the store is opened, written
/// and renamed through this handle (`openat`, `renameat`), so swapping the
/// directory for a symlink while a report runs leads nowhere else.
struct CacheDir {
    id: usize,
    path: PathBuf,
    handle: File,
    /// The store as it was when the report began.
    store: Option<Store>,
}

/// Each data dir's cache directory, where it has one.
pub struct CacheDirs {
    /// Data dir and its cache's index in `list`: a few, searched in order
    /// (hashing a path, component by component, once per VM file cost
    /// more than the look-up saved).
    by_path: Vec<(PathBuf, usize)>,
    list: Vec<CacheDir>,
    warned: AtomicBool,
}

impl CacheDirs {
    /// Finds or makes `.vmstats` (mode 0750) in each data dir that holds a
    /// VM file (`with_files`: a dir with none gets nothing created in it)
    /// and reads its store's index; a data dir where that fails, or where
    /// `.vmstats` is not a plain directory (a symlink planted there), goes
    /// without, with one note.
    pub fn open(data_dirs: &[PathBuf], with_files: &HashSet<&Path>) -> CacheDirs {
        let mut caches = CacheDirs {
            by_path: Vec::new(),
            list: Vec::new(),
            warned: AtomicBool::new(false),
        };
        for dir in data_dirs {
            let known = caches.by_path.iter().any(|(d, _)| d == dir);
            if !with_files.contains(dir.as_path()) || known {
                continue;
            }
            let path = dir.join(DIR_NAME);
            match open_cache_dir(&path) {
                Ok(handle) => {
                    let id = caches.list.len();
                    let store = Store::open(&handle);
                    caches.list.push(CacheDir {
                        id,
                        path,
                        handle,
                        store,
                    });
                    caches.by_path.push((dir.clone(), id));
                }
                Err(e) => crate::log_line(&format!(
                    "note: no summary cache in {}: {e}; every report reads all rows",
                    path.display()
                )),
            }
        }
        caches
    }

    /// The cache directory of `part`.
    fn dir_of(&self, part: &Path) -> Option<&CacheDir> {
        let parent = part.parent()?;
        let (_, id) = self.by_path.iter().find(|(d, _)| d == parent)?;
        self.list.get(*id)
    }

    fn warn_once(&self, what: &str, path: &Path, e: &io::Error) {
        if !self.warned.swap(true, Ordering::Relaxed) {
            crate::log_line(&format!(
                "warning: cannot {what} summary cache {}: {e}; the report goes on without it",
                path.display()
            ));
        }
    }

    /// Leaves the entry of `part` out of the next store (it held a segment
    /// that would not merge as stored), so the next report builds it again.
    pub fn forget(&self, part: &Part, meta: &fs::Metadata, writes: &Sender<EntryWrite>) {
        let Some(dir) = self.dir_of(&part.path) else {
            return;
        };
        let _ = writes.send(EntryWrite::new(dir, meta, Write::Forget));
    }
}

/// Makes `path` if missing and opens it as a directory without following
/// a symlink.
fn open_cache_dir(path: &Path) -> io::Result<File> {
    match fs::DirBuilder::new().mode(0o750).create(path) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP | libc::ENOTDIR) => io::Error::other("not a directory"),
            _ => e,
        })
}

/// Where one file's entry lies in a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    dev: u64,
    ino: u64,
    offset: u64,
    len: u32,
}

impl Slot {
    fn key(&self) -> (u64, u64) {
        (self.dev, self.ino)
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.dev.to_le_bytes());
        out.extend_from_slice(&self.ino.to_le_bytes());
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.len.to_le_bytes());
    }

    fn decode(b: &[u8]) -> Slot {
        let word = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
        Slot {
            dev: word(0),
            ino: word(8),
            offset: word(16),
            len: u32::from_le_bytes(b[24..28].try_into().expect("4 bytes")),
        }
    }
}

/// A store, opened: its file and its index, sorted by file.
struct Store {
    file: File,
    slots: Vec<Slot>,
    near: Near,
    generation: u64,
    /// Which of [`STORE_NAMES`] it is.
    copy: usize,
}

impl Store {
    /// The current store in `dir`: of the copies that decode, the one of
    /// the higher generation; `None` when neither does.
    fn open(dir: &File) -> Option<Store> {
        (0..STORE_NAMES.len())
            .filter_map(|copy| Store::open_copy(dir, copy))
            .max_by_key(|s| s.generation)
    }

    /// One copy, or `None` when it is missing, not a regular file with one
    /// link (a hard link planted there could be anyone's file), or its
    /// footer or index does not decode.
    fn open_copy(dir: &File, copy: usize) -> Option<Store> {
        let flags = libc::O_RDONLY | libc::O_NONBLOCK;
        let file = sys::open_at(dir, STORE_NAMES[copy], flags, 0).ok()?;
        let meta = file.metadata().ok()?;
        if !meta.is_file() || meta.nlink() != 1 {
            return None;
        }
        let (slots, generation) = Store::index(&file, meta.len()).ok()?;
        Some(Store {
            file,
            near: Near::of(&slots),
            slots,
            generation,
            copy,
        })
    }

    fn index(file: &File, len: u64) -> Result<(Vec<Slot>, u64), Corrupt> {
        let body = MAGIC.len() as u64;
        if len < body + FOOTER_LEN {
            return Err(Corrupt);
        }
        let mut head = vec![0; MAGIC.len()];
        let mut foot = [0u8; FOOTER_LEN as usize];
        file.read_exact_at(&mut head, 0).map_err(|_| Corrupt)?;
        file.read_exact_at(&mut foot, len - FOOTER_LEN)
            .map_err(|_| Corrupt)?;
        let word = |at: usize| u64::from_le_bytes(foot[at..at + 8].try_into().expect("8 bytes"));
        let (index_at, count, generation, sum) = (word(0), word(8), word(16), word(24));
        let index_len = count.checked_mul(SLOT_LEN).ok_or(Corrupt)?;
        let fits = index_at >= body
            && index_at
                .checked_add(index_len)
                .and_then(|e| e.checked_add(FOOTER_LEN))
                == Some(len);
        if head != MAGIC || &foot[32..] != FOOTER_MAGIC || count > MAX_SLOTS || !fits {
            return Err(Corrupt);
        }
        let mut index = vec![0; index_len as usize];
        file.read_exact_at(&mut index, index_at)
            .map_err(|_| Corrupt)?;
        if index_checksum(&index, generation) != sum {
            return Err(Corrupt);
        }
        let slots: Vec<Slot> = index
            .chunks_exact(SLOT_LEN as usize)
            .map(Slot::decode)
            .collect();
        let in_body = |s: &Slot| s.offset >= body && s.offset + u64::from(s.len) <= index_at;
        let sorted = slots.windows(2).all(|w| w[0].key() < w[1].key());
        if !sorted || !slots.iter().all(in_body) {
            return Err(Corrupt);
        }
        Ok((slots, generation))
    }

    fn find(&self, key: (u64, u64)) -> Option<Slot> {
        let range = self.near.range(key).unwrap_or(0..self.slots.len());
        let slots = &self.slots[range];
        let at = slots.binary_search_by_key(&key, Slot::key).ok()?;
        Some(slots[at])
    }

    /// The entry at `slot`, if no longer than `max_len`, decoding, and of
    /// the file the slot names.
    fn read(&self, slot: Slot, max_len: u64) -> Option<Entry> {
        if u64::from(slot.len) > max_len {
            return None;
        }
        let mut bytes = vec![0; slot.len as usize];
        self.file.read_exact_at(&mut bytes, slot.offset).ok()?;
        Entry::decode(&bytes)
            .ok()
            .filter(|e| (e.dev, e.ino) == slot.key())
    }
}

/// Where in the sorted slots a file's key can be, so a look-up searches a
/// few slots, not all: over a million slots each look-up's binary search
/// missed the CPU cache twenty times, the costliest step of a cached report.
/// The inode range of the most common device's slots is cut into
/// buckets, up to [`NEAR_BUCKETS_PER_SLOT`] a slot; other keys are
/// searched in full.
#[derive(Debug, Default)]
struct Near {
    dev: u64,
    /// The device's smallest inode number.
    lo: u64,
    /// An inode's bucket is `(ino - lo) >> shift`.
    shift: u32,
    /// Bucket `b` is `slots[starts[b]..starts[b + 1]]`.
    starts: Vec<u32>,
}

/// Buckets a slot, at most (4 bytes each). Inode numbers come in dense
/// runs with wide gaps (here a million VM files over nine million inode
/// numbers), so buckets of four slots on average over the range held 64
/// each where the files were, and the look-up was still the cached
/// report's costliest symbol; four buckets a slot leave a few slots in
/// each.
const NEAR_BUCKETS_PER_SLOT: usize = 4;

impl Near {
    fn of(slots: &[Slot]) -> Near {
        // The longest run of one device (slots sort by device first).
        let (mut best, mut at) = (0..0, 0);
        while at < slots.len() {
            let end = at + slots[at..].partition_point(|s| s.dev == slots[at].dev);
            if end - at > best.len() {
                best = at..end;
            }
            at = end;
        }
        if best.is_empty() {
            return Near::default();
        }
        let (lo, hi) = (slots[best.start].ino, slots[best.end - 1].ino);
        let want = (best.len() * NEAR_BUCKETS_PER_SLOT) as u64;
        let mut shift = 0;
        while shift < 63 && ((hi - lo) >> shift) + 1 > want {
            shift += 1;
        }
        let buckets = ((hi - lo) >> shift) + 1;
        let mut starts = Vec::with_capacity(buckets as usize + 1);
        let mut i = best.start;
        for bucket in 0..buckets {
            while i < best.end && (slots[i].ino - lo) >> shift < bucket {
                i += 1;
            }
            starts.push(i as u32);
        }
        starts.push(best.end as u32);
        Near {
            dev: slots[best.start].dev,
            lo,
            shift,
            starts,
        }
    }

    /// The slots `key` can be among, or `None` when it is of another
    /// device (then any). Every slot of the bucketed device lies within
    /// its inode range, so a key outside it (a file created since the
    /// store was written, as often as not) is found absent at once.
    fn range(&self, (dev, ino): (u64, u64)) -> Option<std::ops::Range<usize>> {
        if dev != self.dev || self.starts.is_empty() {
            return None;
        }
        let bucket = ino
            .checked_sub(self.lo)
            .and_then(|d| usize::try_from(d >> self.shift).ok());
        let found = bucket.and_then(|b| Some(*self.starts.get(b)?..*self.starts.get(b + 1)?));
        Some(found.map_or(0..0, |r| r.start as usize..r.end as usize))
    }
}

impl CacheDir {
    /// The stored entry of the file `meta` describes, no longer than
    /// `max_len`.
    fn load(&self, meta: &fs::Metadata, max_len: u64) -> Option<Entry> {
        let store = self.store.as_ref()?;
        store.read(store.find((meta.dev(), meta.ino()))?, max_len)
    }
}

/// What the store knows of one file (serde's, written by postcard and
/// followed by its checksum).
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
    /// What the bytes before `covered` held where they are probed (plain
    /// files).
    probes: Probes,
    segments: Vec<Segment>,
}

fn mtime_ns(meta: &fs::Metadata) -> u64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Checksums of a plain file's probes, 32 bits each (a probe is there to
/// notice a rewrite, not to resist forgery), in place of the 160 bytes
/// probed: [`PROBES`] runs of [`TAIL`] bytes spread over its first
/// [`span_of`] bytes, and its last [`TAIL`] before the bytes covered. The
/// spread stays where it is while a file grows (until it doubles), so an
/// entry brought up to date reads only the new tail: with the check of the
/// old ones that is six `pread`s a file, where eight probes spread over
/// all the covered bytes cost eighteen (a million of them each exit report
/// at a million VMs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Probes {
    spread: u32,
    tail: u32,
}

/// The bytes the spread probes cover: the largest power of two within
/// `covered`.
fn span_of(covered: u64) -> u64 {
    match covered {
        0 => 0,
        c => 1 << c.ilog2(),
    }
}

impl Probes {
    /// The probes of a plain file's first `covered` bytes.
    fn of(file: &Fetched, covered: u64) -> io::Result<Probes> {
        let span = span_of(covered);
        let n = span.min(TAIL);
        let mut runs = [0u8; (PROBES * TAIL) as usize];
        for (i, run) in runs.chunks_mut(TAIL as usize).enumerate() {
            let at = (span - n) / PROBES * i as u64;
            file.read_exact_at(&mut run[..n as usize], at)?;
        }
        Ok(Probes {
            spread: checksum(&runs) as u32,
            tail: tail_of(file, covered)?,
        })
    }

    /// The probes of the file grown from `before` bytes (where these were
    /// taken, and found to hold) to `covered`.
    fn grown(self, file: &Fetched, before: u64, covered: u64) -> io::Result<Probes> {
        if span_of(covered) != span_of(before) {
            return Probes::of(file, covered);
        }
        Ok(Probes {
            spread: self.spread,
            tail: tail_of(file, covered)?,
        })
    }
}

/// The checksum of the last [`TAIL`] bytes before `covered`.
fn tail_of(file: &Fetched, covered: u64) -> io::Result<u32> {
    let n = covered.min(TAIL);
    let mut tail = [0u8; TAIL as usize];
    file.read_exact_at(&mut tail[..n as usize], covered - n)?;
    Ok(checksum(&tail[..n as usize]) as u32)
}

/// The bytes of a plain file that a pass reads, fetched with one `pread`
/// where they are few: the whole file while it is small, else from its
/// last covered [`TAIL`] to its end (the old tail probe, the new rows, the
/// new tail). At a million VMs each grown by a few rows since the last
/// pass (every exit report), those were seven reads a file, and the
/// syscalls were half the report's time.
struct Fetched<'a> {
    file: &'a File,
    /// Where `bytes` begin in the file.
    from: u64,
    /// `None` when nothing was fetched.
    bytes: Option<Vec<u8>>,
}

/// Files up to this long are fetched whole.
const FETCH_WHOLE: u64 = 16 << 10;

/// Grown by more than this, a file's new rows are streamed instead.
const FETCH_MAX: u64 = 64 << 10;

impl<'a> Fetched<'a> {
    /// What a pass over `file`, `len` bytes long with `covered` of them
    /// summed up already, reads of it. A file cut short meanwhile leaves
    /// fewer bytes, as reading it piece by piece would.
    fn new(file: &'a File, covered: u64, len: u64) -> io::Result<Fetched<'a>> {
        let from = if len <= FETCH_WHOLE {
            0
        } else {
            covered.saturating_sub(TAIL).min(len)
        };
        if len - from > FETCH_MAX {
            return Ok(Fetched::none(file));
        }
        let mut bytes = vec![0; (len - from) as usize];
        let mut got = 0;
        while got < bytes.len() {
            match file.read_at(&mut bytes[got..], from + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        bytes.truncate(got);
        Ok(Fetched {
            file,
            from,
            bytes: Some(bytes),
        })
    }

    /// Nothing fetched: every read goes to the file.
    fn none(file: &'a File) -> Fetched<'a> {
        Fetched {
            file,
            from: 0,
            bytes: None,
        }
    }

    /// The fetched bytes from `at` on (never past the length `new` took).
    fn rest(&self, at: u64) -> Option<&[u8]> {
        let start = usize::try_from(at.checked_sub(self.from)?).ok()?;
        self.bytes.as_ref()?.get(start..)
    }

    /// The fetched bytes from `at` to `end`, when they were all fetched.
    fn slice(&self, at: u64, end: u64) -> Option<&[u8]> {
        self.rest(at)?
            .get(..usize::try_from(end.checked_sub(at)?).ok()?)
    }

    fn read_exact_at(&self, buf: &mut [u8], at: u64) -> io::Result<()> {
        match self.slice(at, at + buf.len() as u64) {
            Some(held) => {
                buf.copy_from_slice(held);
                Ok(())
            }
            None => self.file.read_exact_at(buf, at),
        }
    }
}

impl Entry {
    /// Whether it describes the file `meta` does, unchanged since, and
    /// holds every row `window` needs: known without reading the file.
    fn current(&self, meta: &fs::Metadata, gzip: bool, window: &Window) -> bool {
        // A plain file not grown was not written since, unless rewritten
        // in place; a gzip part is never appended to.
        let len = if gzip { self.len } else { self.covered };
        self.describes(meta, gzip, window) && meta.len() == len && self.mtime_ns == mtime_ns(meta)
    }

    /// Whether it describes plain `file`, grown since by appends alone (its
    /// probes hold), and holds every row `window` needs.
    fn grown_into(&self, file: &Fetched, meta: &fs::Metadata, gzip: bool, window: &Window) -> bool {
        self.describes(meta, gzip, window)
            && !gzip
            && meta.len() > self.covered
            && Probes::of(file, self.covered).is_ok_and(|p| p == self.probes)
    }

    fn describes(&self, meta: &fs::Metadata, gzip: bool, window: &Window) -> bool {
        let same_file = self.dev == meta.dev() && self.ino == meta.ino() && self.gzip == gzip;
        let early_enough = match (self.complete_after_ms, window.from_ms) {
            (None, _) => true,
            (Some(after), Some(from)) => from >= after,
            (Some(_), None) => false,
        };
        same_file && early_enough
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = postcard::to_allocvec(self).expect("a Vec takes any bytes");
        let sum = checksum(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        out
    }

    /// The entry in `bytes`, refused unless its checksum matches and every
    /// segment lies in the covered bytes, in its own day, in day order.
    fn decode(bytes: &[u8]) -> Result<Entry, Corrupt> {
        let (body, sum) = bytes.split_last_chunk::<8>().ok_or(Corrupt)?;
        if checksum(body) != u64::from_le_bytes(*sum) {
            return Err(Corrupt);
        }
        let (entry, rest) = postcard::take_from_bytes::<Entry>(body).map_err(|_| Corrupt)?;
        if !rest.is_empty() {
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

/// The largest entry a part of `len` bytes (compressed when `gzip`) can
/// need.
fn max_entry_len(len: u64, gzip: bool) -> u64 {
    let rows_bytes = if gzip { scan::max_inflated(len) } else { len };
    ENTRY_BASE.saturating_add(rows_bytes.saturating_mul(ENTRY_BYTES_PER_BYTE))
}

/// Entries waiting for the writer, at most: a few MB.
const WRITES_QUEUED: usize = 256;

/// What the next store holds of one file.
pub struct EntryWrite {
    dir: usize,
    key: (u64, u64),
    what: Write,
}

enum Write {
    /// This entry, new or brought up to date.
    Put(Vec<u8>),
    /// The last store's entry, still current (or not needed by this
    /// report's window, but still the file's).
    Keep,
    /// Nothing: the last store's entry would not merge.
    Forget,
}

impl EntryWrite {
    fn new(dir: &CacheDir, meta: &fs::Metadata, what: Write) -> EntryWrite {
        EntryWrite {
            dir: dir.id,
            key: (meta.dev(), meta.ino()),
            what,
        }
    }
}

/// The next store's file: the other copy, being rewritten in place.
struct Out {
    copy: usize,
    file: BufWriter<File>,
    written: u64,
}

/// One data dir's next store, as the writer builds it.
struct NextStore<'a> {
    dir: &'a CacheDir,
    /// The copy being written, once an entry is.
    out: Option<Out>,
    /// Each file's new slot, or `None` for the last store's entry kept.
    slots: HashMap<(u64, u64), Option<Slot>>,
    forgot: bool,
    failed: bool,
}

impl<'a> NextStore<'a> {
    fn new(dir: &'a CacheDir) -> NextStore<'a> {
        NextStore {
            dir,
            out: None,
            // Sized for every entry of the last store coming back: at a
            // million VMs, growing it rehashed a million keys on the way.
            slots: HashMap::with_capacity(dir.store.as_ref().map_or(0, |s| s.slots.len())),
            forgot: false,
            failed: false,
        }
    }

    fn take(&mut self, w: EntryWrite, caches: &CacheDirs) {
        match w.what {
            Write::Put(bytes) => match self.append(&bytes) {
                Ok(offset) => {
                    let (dev, ino) = w.key;
                    let len = bytes.len() as u32;
                    self.slots.insert(
                        w.key,
                        Some(Slot {
                            dev,
                            ino,
                            offset,
                            len,
                        }),
                    );
                }
                Err(e) => self.fail(caches, &e),
            },
            Write::Keep => {
                self.slots.entry(w.key).or_insert(None);
            }
            Write::Forget => {
                self.slots.remove(&w.key);
                self.forgot = true;
            }
        }
    }

    fn fail(&mut self, caches: &CacheDirs, e: &io::Error) {
        if !self.failed {
            self.failed = true;
            let copy = self.out.as_ref().map_or(0, |o| o.copy);
            caches.warn_once("write", &self.dir.path.join(STORE_NAMES[copy]), e);
        }
    }

    /// Appends an entry's bytes to the next store (opening the copy the
    /// current one is not, at the first) and returns where they begin.
    fn append(&mut self, bytes: &[u8]) -> io::Result<u64> {
        if self.failed {
            return Err(io::Error::other("an earlier write failed"));
        }
        if self.out.is_none() {
            let copy = self.dir.store.as_ref().map_or(0, |s| 1 - s.copy);
            let mut file =
                BufWriter::with_capacity(1 << 20, open_copy_for_writing(self.dir, copy)?);
            file.write_all(MAGIC)?;
            self.out = Some(Out {
                copy,
                file,
                written: MAGIC.len() as u64,
            });
        }
        let out = self.out.as_mut().expect("opened above");
        out.file.write_all(bytes)?;
        let at = out.written;
        out.written += bytes.len() as u64;
        Ok(at)
    }

    /// Publishes the store, unless nothing changed since the last one, or
    /// `stop` was requested (the report is given up; the last store stays).
    fn finish(mut self, caches: &CacheDirs, stop: Option<&Stop>) {
        let old = self.dir.store.as_ref();
        let kept: Vec<Slot> = self
            .slots
            .iter()
            .filter(|(_, new)| new.is_none())
            .filter_map(|(key, _)| old.and_then(|o| o.find(*key)))
            .collect();
        let put = self.slots.values().filter(|s| s.is_some()).count();
        let unchanged = put == 0 && !self.forgot && kept.len() == old.map_or(0, |o| o.slots.len());
        if self.failed || unchanged || stop.is_some_and(Stop::requested) {
            self.discard();
            return;
        }
        match self.publish(kept) {
            Ok(()) => self.remove_leftovers(),
            Err(e) => {
                self.fail(caches, &e);
                self.discard();
            }
        }
    }

    /// Copies the kept entries across, then writes the index and the
    /// footer (the next generation) and cuts the copy to its new length.
    fn publish(&mut self, mut kept: Vec<Slot>) -> io::Result<()> {
        kept.sort_by_key(|s| s.offset);
        let mut slots: Vec<Slot> = self.slots.values().flatten().copied().collect();
        if let Some(old) = &self.dir.store {
            let mut bytes = Vec::new();
            for slot in kept {
                bytes.resize(slot.len as usize, 0);
                old.file.read_exact_at(&mut bytes, slot.offset)?;
                let offset = self.append(&bytes)?;
                slots.push(Slot { offset, ..slot });
            }
        }
        if self.out.is_none() {
            // Every entry forgotten or gone: an empty store.
            self.append(&[])?;
        }
        slots.sort_by_key(Slot::key);
        let generation = self.dir.store.as_ref().map_or(0, |s| s.generation) + 1;
        let mut index = Vec::with_capacity(slots.len() * SLOT_LEN as usize + FOOTER_LEN as usize);
        for s in &slots {
            s.encode(&mut index);
        }
        let sum = index_checksum(&index, generation);
        let out = self.out.as_mut().expect("made above");
        index.extend_from_slice(&out.written.to_le_bytes());
        index.extend_from_slice(&(slots.len() as u64).to_le_bytes());
        index.extend_from_slice(&generation.to_le_bytes());
        index.extend_from_slice(&sum.to_le_bytes());
        index.extend_from_slice(FOOTER_MAGIC);
        out.file.write_all(&index)?;
        out.file.flush()?;
        out.file
            .get_ref()
            .set_len(out.written + index.len() as u64)?;
        self.out = None;
        Ok(())
    }

    /// Leaves the copy being written empty (it decodes as no store), so
    /// the other stays the current one.
    fn discard(&mut self) {
        if let Some(out) = self.out.take()
            && let Ok(file) = out.file.into_inner()
        {
            let _ = file.set_len(0);
        }
    }

    /// Removes what older versions left: entries of the per-file cache
    /// (`<dev>-<ino>.sum`) and the single store (`summaries`, and its
    /// `summaries.tmp.*`). Listed by path, removed through the directory's
    /// handle: whatever the path leads to now, only this cache's files go.
    fn remove_leftovers(&self) {
        let Ok(entries) = fs::read_dir(&self.dir.path) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(".sum") || name == "summaries" || name.starts_with("summaries.tmp.") {
                let _ = sys::unlink_at(&self.dir.handle, name);
            }
        }
    }
}

/// Opens `copy` of the store to rewrite it in place. Anything but a
/// regular file with one link at its name (a symlink, a FIFO, a hard link
/// to a file elsewhere) is removed, never written through, and a copy
/// made in its place.
fn open_copy_for_writing(dir: &CacheDir, copy: usize) -> io::Result<File> {
    let name = STORE_NAMES[copy];
    match sys::open_at(&dir.handle, name, libc::O_WRONLY | libc::O_NONBLOCK, 0) {
        Ok(file) => {
            let meta = file.metadata()?;
            if meta.is_file() && meta.nlink() == 1 {
                return Ok(file);
            }
            drop(file);
            sys::unlink_at(&dir.handle, name)?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        // A symlink (ELOOP), a directory, a socket: not ours to follow.
        Err(_) => sys::unlink_at(&dir.handle, name)?,
    }
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL;
    sys::open_at(&dir.handle, name, flags, 0o640)
}

/// The checksum of an index and the generation it belongs to.
fn index_checksum(index: &[u8], generation: u64) -> u64 {
    checksum_of(&[index, &generation.to_le_bytes()])
}

/// Runs `f` with a sender of entries for the next stores, and a thread
/// writing them until `f` returns and its sender is dropped, then
/// publishing each data dir's store (unless `stop` was requested). One
/// thread writes, sequentially, while the readers read.
pub fn with_writer<R>(
    caches: &CacheDirs,
    stop: Option<&Stop>,
    f: impl FnOnce(Sender<EntryWrite>) -> R,
) -> R {
    let quiet = crate::is_quiet();
    std::thread::scope(|scope| {
        let (writes, entries) = crossbeam_channel::bounded::<EntryWrite>(WRITES_QUEUED);
        scope.spawn(move || {
            crate::quietly(quiet, || {
                let mut next: Vec<NextStore> = caches.list.iter().map(NextStore::new).collect();
                for w in entries {
                    if let Some(store) = next.get_mut(w.dir) {
                        store.take(w, caches);
                    }
                }
                for store in next {
                    store.finish(caches, stop);
                }
            })
        });
        f(writes)
    })
}

/// The [`checksum`] of `parts` one after another (a day's fingerprint in
/// [`days`](super::days)).
pub fn checksum_of(parts: &[&[u8]]) -> u64 {
    checksum(&parts.concat())
}

/// A checksum of an entry, an index or a file's probes (not against
/// forgery: the files beside it can be forged as easily; against a torn
/// or interleaved write).
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
/// the part as found, for reading the days the window cuts (a part whose
/// entry is current is not opened); `None` for a part not read (not a
/// regular file, or last written before the window).
pub fn segments(
    part: &Part,
    window: &Window,
    caches: &CacheDirs,
    acc: &mut Accumulator,
    writes: &Sender<EntryWrite>,
) -> Result<Option<(Found, Vec<Segment>)>, ReportError> {
    let path = &part.path;
    let err = |error| ReportError::File {
        path: path.to_path_buf(),
        error,
    };
    let Some(mut found) = Found::stat(part)? else {
        return Ok(None);
    };
    let meta = found.meta.clone();
    let at = caches.dir_of(path);
    // The writer is gone only if it panicked; the report goes on.
    let send = |what| at.map(|dir| writes.send(EntryWrite::new(dir, &meta, what)));
    if scan::written_before(&meta, window) {
        send(Write::Keep);
        return Ok(None);
    }
    let cached = at.and_then(|dir| dir.load(&meta, max_entry_len(meta.len(), part.gzip)));
    let cached = match cached {
        Some(e) if e.current(&meta, part.gzip, window) => {
            send(Write::Keep);
            return Ok(Some((found, e.segments)));
        }
        cached => cached,
    };
    let file = found.file(part).map_err(err)?;
    let fetched = match (part.gzip, &cached) {
        (true, _) => Fetched::none(file),
        (false, cached) => {
            let covered = cached.as_ref().map_or(0, |e| e.covered.min(meta.len()));
            Fetched::new(file, covered, meta.len()).map_err(err)?
        }
    };
    let cached = cached.filter(|e| e.grown_into(&fetched, &meta, part.gzip, window));
    // Where the cached entry's probes were taken, and found to hold.
    let probed = cached.as_ref().map(|e| (e.covered, e.probes));
    let entry = match cached {
        Some(e) => extend(e, part, &fetched, meta.len(), acc).map_err(err)?,
        None => None,
    };
    let entry = match entry {
        Some(e) => e,
        None => build(part, file.try_clone().map_err(err)?, &meta, window, acc).map_err(err)?,
    };
    let probes = match (part.gzip, probed) {
        (true, _) => Probes::default(),
        (false, Some((before, p))) => p.grown(&fetched, before, entry.covered).map_err(err)?,
        (false, None) => Probes::of(&fetched, entry.covered).map_err(err)?,
    };
    let entry = Entry {
        len: meta.len(),
        mtime_ns: mtime_ns(&meta),
        probes,
        ..entry
    };
    send(Write::Put(entry.encode()));
    Ok(Some((found, entry.segments)))
}

/// The entry with the rows appended to its file since, up to `len` (its
/// length when opened: the read buffer is then the size of the new rows,
/// a few hundred bytes, not 32 KiB per file, each of which made glibc
/// consolidate its free blocks, as [`scan`]'s line buffers did); `None`
/// when a cached segment does not decode (the file is then read again).
fn extend(
    entry: Entry,
    part: &Part,
    file: &Fetched,
    len: u64,
    acc: &mut Accumulator,
) -> io::Result<Option<Entry>> {
    let mut builder = Builder::new(acc, entry.segments);
    let line = |row, start, end| builder.line(row, start, end);
    // The new rows as fetched (to `len`, or where the file was cut).
    let covered = match file.rest(entry.covered) {
        Some(rows) => scan::each_line(rows, entry.covered, u64::MAX, line)?,
        None => {
            let reader = scan::reader_at(file.file, part, entry.covered, Some(len))?;
            scan::each_line(reader, entry.covered, u64::MAX, line)?
        }
    };
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
        probes: Probes::default(),
        segments: builder.finish().unwrap_or_default(),
    })
}

/// The entries in the store in `cache`, `None` when it has none.
#[cfg(test)]
pub fn entries_in(cache: &Path) -> Option<usize> {
    Some(Store::open(&open_cache_dir(cache).ok()?)?.slots.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_look_up_finds_every_slot_by_its_bucket_and_nothing_else() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let slot = |dev, ino| Slot {
            dev,
            ino,
            offset: ino,
            len: 1,
        };
        // Most files on one device, in clusters as ext4 hands inodes out,
        // a few on two others, one at the far end of the inode range.
        let mut slots: Vec<Slot> = (0..5000)
            .map(|i| slot(64769, 1_000_000 * (i % 3) + rng.random_range(0..40_000)))
            .chain((0..50).map(|i| slot(9, i * 7)))
            .chain([slot(64769, u64::MAX), slot(u64::MAX, 3)])
            .collect();
        slots.sort_by_key(Slot::key);
        slots.dedup_by_key(|s| s.key());
        let file = tempfile::tempfile().unwrap();
        let store = Store {
            file,
            near: Near::of(&slots),
            slots: slots.clone(),
            generation: 1,
            copy: 0,
        };
        assert_eq!(store.near.dev, 64769);
        assert!(store.near.starts.len() <= NEAR_BUCKETS_PER_SLOT * slots.len() + 1);
        for s in &slots {
            assert_eq!(store.find(s.key()), Some(*s), "{:?}", s.key());
        }
        for key in [(64769, 40_001), (64769, 0), (9, 8), (1, 1), (u64::MAX, 4)] {
            assert_eq!(
                store.find(key).is_some(),
                slots.iter().any(|s| s.key() == key)
            );
        }
        assert_eq!(Near::of(&[]).range((1, 1)), None);
        // Dense runs of inodes with wide gaps, as ext4 hands them out (nine
        // inode numbers a file over the range, as measured): a few slots a
        // bucket, not the 64 of buckets sized by the range's average.
        let runs: Vec<Slot> = [0, 20_000, 50_000]
            .iter()
            .flat_map(|start| (start + 1..start + 2001).map(|ino| slot(64769, ino)))
            .collect();
        let near = Near::of(&runs);
        let widest = runs
            .iter()
            .map(|s| near.range(s.key()).unwrap().len())
            .max();
        assert!(widest.unwrap() <= 4, "{widest:?}");
    }

    /// A temp file and `n` numbered lines to write into it.
    fn file_and_lines(n: u32) -> (File, Vec<u8>) {
        let lines = (0..n).flat_map(|i| format!("{i},row\n").into_bytes());
        (tempfile::tempfile().unwrap(), lines.collect())
    }

    #[test]
    fn probes_keep_their_spread_as_a_file_grows_and_see_a_rewrite() {
        let (f, rows) = file_and_lines(3_000);
        f.write_all_at(&rows[..10_000], 0).unwrap();
        let read = Fetched::none(&f);
        let before = Probes::of(&read, 10_000).unwrap();
        // Grown within its span (8 KiB), and past it.
        for len in [10_100, 17_000] {
            f.write_all_at(&rows[10_000..len], 10_000).unwrap();
            let grown = before.grown(&read, 10_000, len as u64).unwrap();
            assert_eq!(grown, Probes::of(&read, len as u64).unwrap(), "at {len}");
            assert_eq!(grown.spread == before.spread, len < 16_384, "at {len}");
            f.set_len(10_000).unwrap();
        }
        // A byte rewritten under a probe, or at the covered end.
        for at in [0, (8192 - TAIL) / PROBES * (PROBES - 1), 9_999] {
            let mut b = [0u8];
            f.read_exact_at(&mut b, at).unwrap();
            f.write_all_at(&[b[0] ^ 1], at).unwrap();
            assert_ne!(Probes::of(&read, 10_000).unwrap(), before, "at {at}");
            f.write_all_at(&b, at).unwrap();
        }
        assert_eq!(Probes::of(&read, 10_000).unwrap(), before);
    }

    #[test]
    fn a_fetch_reads_what_the_file_holds_and_no_more() {
        let (f, rows) = file_and_lines(20_000);
        f.write_all_at(&rows, 0).unwrap();
        let len = rows.len() as u64;
        let direct = Fetched::none(&f);
        // Small enough to fetch whole; large, from the last covered tail;
        // grown by too much to fetch at all.
        for (size, covered, fetched_from) in [
            (FETCH_WHOLE, 9_000, Some(0)),
            (len, len - 5_000, Some(len - 5_000 - TAIL)),
            (len, len - FETCH_MAX - 1, None),
        ] {
            f.set_len(size).unwrap();
            f.write_all_at(&rows[..size as usize], 0).unwrap();
            let fetched = Fetched::new(&f, covered, size).unwrap();
            assert_eq!(fetched.bytes.as_ref().map(|_| fetched.from), fetched_from);
            assert_eq!(
                Probes::of(&fetched, covered).unwrap(),
                Probes::of(&direct, covered).unwrap()
            );
            let end = fetched_from.map(|_| size);
            assert_eq!(
                fetched.slice(covered, size),
                end.map(|e| &rows[covered as usize..e as usize])
            );
            // Before what was fetched, or past the file's end: not held.
            assert_eq!(fetched.slice(covered, size + 1), None);
            let mut past = [0u8; 4];
            assert!(fetched.read_exact_at(&mut past, size - 2).is_err());
        }
        // A file cut short after its length was taken: what is left.
        f.set_len(1_000).unwrap();
        let cut = Fetched::new(&f, 500, 4_000).unwrap();
        assert_eq!(cut.slice(0, 1_000), Some(&rows[..1_000]));
        assert_eq!(cut.slice(500, 4_000), None);
    }

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
            probes: Probes { spread: 6, tail: 7 },
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
