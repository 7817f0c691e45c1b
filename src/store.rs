//! The per-VM file store: one append-only CSV file per VM under the data dir.
//!
//! A worker owns one store, and every VM belongs to exactly one worker, so no
//! file is ever shared and nothing here locks. Files stay open between
//! flushes, up to a cap (least recently used closes first), because 100,000
//! VMs cannot all be open under a 1024-descriptor limit while reopening on
//! every flush would cost two syscalls per write.
//!
//! Opening a file is where the contract's file rules are kept: a new file
//! gets the header, and a file whose last line is torn (a crash mid-write) is
//! cut back to its last newline first, so a row is never glued onto half a row.

use std::collections::VecDeque;

// foldhash: several times faster than SipHash on a 17-byte key, and still
// randomly seeded, so spoofed source addresses cannot be chosen to collide.
use foldhash::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::wire;

/// A write that failed after `written` bytes of the buffer reached the file.
#[derive(Debug, thiserror::Error)]
#[error("cannot append to {path}: {error}")]
pub struct AppendError {
    pub path: PathBuf,
    pub written: usize,
    pub error: io::Error,
}

/// What opening a VM file found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// Created, header written.
    New,
    /// Existing file, ready to append.
    Existing,
    /// Existing file whose torn last line (this many bytes) was cut.
    Repaired(u64),
}

/// Opens `path` for appending and applies the contract's file rules.
pub fn open_vm_file(path: &Path) -> io::Result<(File, Opened)> {
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)?;
    let len = file.metadata()?.len();
    if len == 0 {
        file.write_all(wire::CSV_HEADER.as_bytes())?;
        return Ok((file, Opened::New));
    }
    let keep = end_of_last_line(&mut file, len)?;
    if keep == len {
        return Ok((file, Opened::Existing));
    }
    file.set_len(keep)?;
    if keep == 0 {
        // Not even the header survived whole.
        file.write_all(wire::CSV_HEADER.as_bytes())?;
    }
    Ok((file, Opened::Repaired(len - keep)))
}

/// Opens a file this store already checked, for appending only; `None`
/// when that fails (moved away, deleted...), so the caller takes the full
/// path of [`open_vm_file`], which recreates or repairs it.
fn reopen_for_append(path: &Path) -> Option<File> {
    OpenOptions::new().append(true).open(path).ok()
}

/// Offset just past the file's last newline (0 when it has none).
fn end_of_last_line(file: &mut File, len: u64) -> io::Result<u64> {
    let mut chunk = [0u8; 4096];
    let mut end = len;
    while end > 0 {
        let start = end.saturating_sub(chunk.len() as u64);
        let buf = &mut chunk[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(buf)?;
        if let Some(pos) = buf.iter().rposition(|b| *b == b'\n') {
            return Ok(start + pos as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// `write_all` that says how much was written before an error.
fn write_counted(file: &mut File, data: &[u8]) -> Result<(), (usize, io::Error)> {
    let mut written = 0;
    while written < data.len() {
        match file.write(&data[written..]) {
            Ok(0) => {
                let e = io::Error::new(io::ErrorKind::WriteZero, "write returned 0");
                return Err((written, e));
            }
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err((written, e)),
        }
    }
    Ok(())
}

struct OpenFile {
    file: File,
    /// Matches the newest `lru` entry of this IP; older entries are stale.
    stamp: u64,
}

/// One worker's open VM files, capped, closed least recently used first.
pub struct FileStore {
    dir: PathBuf,
    cap: usize,
    open: HashMap<IpAddr, OpenFile>,
    /// Use order: (ip, stamp) pushed on every use. Stale entries (the IP was
    /// used again later, or closed) are skipped when evicting and dropped
    /// when the queue is compacted, so eviction is amortised O(1).
    lru: VecDeque<(IpAddr, u64)>,
    clock: u64,
    /// VMs whose file this store opened and has left ending in a newline.
    /// Reopening one after an eviction is a bare append-open: no header or
    /// tail to check, half the syscalls, which is what 100,000 VMs over a
    /// few thousand descriptors spend their time on.
    verified: HashSet<IpAddr>,
}

impl FileStore {
    pub fn new(dir: PathBuf, cap: usize) -> Self {
        FileStore {
            dir,
            cap: cap.max(1),
            open: HashMap::default(),
            lru: VecDeque::new(),
            clock: 0,
            verified: HashSet::default(),
        }
    }

    pub fn path_of(&self, ip: IpAddr) -> PathBuf {
        self.dir.join(wire::file_name(ip))
    }

    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    /// Appends `data` (whole rows) to the VM's file with one `write` in the
    /// common case. Returns what opening found when the file was not open.
    pub fn append(&mut self, ip: IpAddr, data: &[u8]) -> Result<Option<Opened>, AppendError> {
        let mut opened = None;
        if !self.open.contains_key(&ip) {
            while self.open.len() >= self.cap {
                self.evict_one();
            }
            let path = self.path_of(ip);
            let reopened = if self.verified.contains(&ip) {
                reopen_for_append(&path)
            } else {
                None
            };
            let (file, how) = match reopened {
                Some(file) => (file, Opened::Existing),
                None => open_vm_file(&path).map_err(|error| AppendError {
                    path,
                    written: 0,
                    error,
                })?,
            };
            self.verified.insert(ip);
            self.open.insert(ip, OpenFile { file, stamp: 0 });
            opened = Some(how);
        }
        self.clock += 1;
        let stamp = self.clock;
        self.open.get_mut(&ip).expect("opened above").stamp = stamp;
        self.lru.push_back((ip, stamp));
        if self.lru.len() > 2 * self.cap + 64 {
            self.compact();
        }
        let entry = self.open.get_mut(&ip).expect("opened above");
        match write_counted(&mut entry.file, data) {
            Ok(()) => Ok(opened),
            Err((written, error)) => Err(self.fail(ip, written, error)),
        }
    }

    /// Closes the file after a failed write, so the next attempt reopens it
    /// and cuts whatever torn row the failure left.
    fn fail(&mut self, ip: IpAddr, written: usize, error: io::Error) -> AppendError {
        self.verified.remove(&ip);
        if let Some(f) = self.open.remove(&ip) {
            crate::sys::close_file(f.file);
        }
        AppendError {
            path: self.path_of(ip),
            written,
            error,
        }
    }

    fn evict_one(&mut self) {
        while let Some((ip, stamp)) = self.lru.pop_front() {
            if self.open.get(&ip).is_some_and(|f| f.stamp == stamp) {
                let f = self.open.remove(&ip).expect("checked above");
                crate::sys::close_file(f.file);
                return;
            }
        }
    }

    /// Rebuilds the use queue from the open files alone.
    fn compact(&mut self) {
        let mut live: Vec<(IpAddr, u64)> = self.open.iter().map(|(ip, f)| (*ip, f.stamp)).collect();
        live.sort_unstable_by_key(|(_, stamp)| *stamp);
        self.lru = live.into();
    }

    /// Closes every file; the next append reopens it (SIGHUP, log rotation).
    pub fn close_all(&mut self) {
        for (_, f) in self.open.drain() {
            crate::sys::close_file(f.file);
        }
        self.lru.clear();
        // Rotation may have moved or replaced any file: check each again.
        self.verified.clear();
    }

    /// fsyncs every open file.
    pub fn sync_open(&mut self) -> io::Result<()> {
        for f in self.open.values() {
            f.file.sync_data()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([127, 3, 0, n])
    }

    #[test]
    fn new_file_gets_header_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = FileStore::new(dir.path().into(), 4);
        assert_eq!(store.append(ip(1), b"a\n").unwrap(), Some(Opened::New));
        assert_eq!(store.append(ip(1), b"b\n").unwrap(), None);
        store.close_all();
        assert_eq!(store.append(ip(1), b"c\n").unwrap(), Some(Opened::Existing));
        let text = fs::read_to_string(dir.path().join("127.3.0.1.csv")).unwrap();
        assert_eq!(text, format!("{}a\nb\nc\n", wire::CSV_HEADER));
    }

    #[test]
    fn torn_tail_is_cut_before_appending() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("127.3.0.2.csv");
        fs::write(&path, format!("{}row1\nrow2-half", wire::CSV_HEADER)).unwrap();
        let mut store = FileStore::new(dir.path().into(), 4);
        assert_eq!(
            store.append(ip(2), b"row3\n").unwrap(),
            Some(Opened::Repaired(9))
        );
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text, format!("{}row1\nrow3\n", wire::CSV_HEADER));
    }

    #[test]
    fn torn_header_is_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("127.3.0.3.csv");
        fs::write(&path, "recv_ms,ts").unwrap();
        let (_, how) = open_vm_file(&path).unwrap();
        assert_eq!(how, Opened::Repaired(10));
        assert_eq!(fs::read_to_string(&path).unwrap(), wire::CSV_HEADER);
    }

    #[test]
    fn long_torn_tail_spanning_chunks_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("127.3.0.4.csv");
        let tail = "x".repeat(10_000);
        fs::write(&path, format!("{}ok\n{tail}", wire::CSV_HEADER)).unwrap();
        let (_, how) = open_vm_file(&path).unwrap();
        assert_eq!(how, Opened::Repaired(10_000));
    }

    #[test]
    fn open_files_are_capped_least_recent_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = FileStore::new(dir.path().into(), 2);
        store.append(ip(1), b"1\n").unwrap();
        store.append(ip(2), b"2\n").unwrap();
        store.append(ip(1), b"1\n").unwrap();
        // ip(2) is least recently used: opening ip(3) closes it.
        store.append(ip(3), b"3\n").unwrap();
        assert_eq!(store.open_count(), 2);
        assert_eq!(store.append(ip(1), b"1\n").unwrap(), None);
        assert_eq!(store.append(ip(2), b"2\n").unwrap(), Some(Opened::Existing));
        for _ in 0..1000 {
            store.append(ip(1), b"1\n").unwrap();
        }
        assert!(store.lru.len() <= 2 * 2 + 64 + 1);
        let text = fs::read_to_string(dir.path().join("127.3.0.2.csv")).unwrap();
        assert_eq!(text, format!("{}2\n2\n", wire::CSV_HEADER));
    }

    #[test]
    fn a_file_deleted_behind_our_back_gets_its_header_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = FileStore::new(dir.path().into(), 1);
        store.append(ip(5), b"a\n").unwrap();
        store.append(ip(6), b"b\n").unwrap(); // evicts ip(5), still verified
        fs::remove_file(dir.path().join("127.3.0.5.csv")).unwrap();
        assert_eq!(store.append(ip(5), b"c\n").unwrap(), Some(Opened::New));
        let text = fs::read_to_string(dir.path().join("127.3.0.5.csv")).unwrap();
        assert_eq!(text, format!("{}c\n", wire::CSV_HEADER));
    }

    #[test]
    fn unwritable_dir_reports_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("gone");
        let mut store = FileStore::new(missing.clone(), 2);
        let err = store.append(ip(9), b"x\n").unwrap_err();
        assert_eq!(err.written, 0);
        assert!(err.to_string().contains("gone/127.3.0.9.csv"), "{err}");
    }
}
