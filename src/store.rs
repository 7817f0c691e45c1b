//! The per-VM file store: one append-only CSV file per VM under the data dir.
//!
//! A worker owns one store, and every VM belongs to exactly one worker, so no
//! file is ever shared and nothing here locks. Files stay open between
//! flushes, up to a cap (least recently used closes first), because 100,000
//! VMs cannot all be open under a 1024-descriptor limit.
//!
//! Nothing in the data dir is trusted: a collector often runs as root, and
//! anyone who can write the dir could plant a symlink or a FIFO named like a
//! VM file. Files are opened with `O_NOFOLLOW | O_NONBLOCK` and refused
//! unless `fstat` says they are regular files ([`OpenError::NotRegular`]).
//!
//! Every open, first or after an eviction or a SIGHUP, checks the file.
//! Where our last write left it is remembered as a [`Mark`] (device, inode,
//! length): a file that still matches needs nothing more, which keeps the
//! reopen of an evicted file at `open` + `fstat`. Anything else (logrotate
//! moved it and created an empty one, it was truncated, replaced, or a
//! crash tore its last row) gets the full treatment: the header on an empty
//! file, the torn tail cut back to the last newline.

use std::collections::VecDeque;

// foldhash: several times faster than SipHash on a 17-byte key, and still
// randomly seeded, so spoofed source addresses cannot be chosen to collide.
use foldhash::HashMap;
use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::IpAddr;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::wire;

/// Permissions of new VM files: VM statistics are nobody else's business.
pub const DEFAULT_FILE_MODE: u32 = 0o640;

/// Why a VM file could not be opened for appending.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Something other than a regular file stands at the VM's path (a
    /// symlink, FIFO, directory, device): it is never written.
    #[error("not a regular file ({0}); refusing to write to it")]
    NotRegular(&'static str),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// A write that failed after `written` bytes of the buffer reached the file.
#[derive(Debug, thiserror::Error)]
#[error("cannot append to {path}: {error}")]
pub struct AppendError {
    pub path: PathBuf,
    pub written: usize,
    pub error: OpenError,
}

impl AppendError {
    /// The file is not a regular file: retrying will not help until someone
    /// removes what stands there.
    pub fn is_refusal(&self) -> bool {
        matches!(self.error, OpenError::NotRegular(_))
    }
}

/// What opening a VM file found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// Created or found empty: header written.
    New,
    /// Existing file, ready to append.
    Existing,
    /// Existing file whose torn last line (this many bytes) was cut.
    Repaired(u64),
}

/// Which file a VM's rows went to and how long our last write left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mark {
    dev: u64,
    ino: u64,
    len: u64,
}

impl Mark {
    fn of(meta: &Metadata) -> Mark {
        Mark {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
        }
    }
}

/// What a non-regular file is, for the refusal's message.
pub fn kind_of(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_symlink() {
        "a symlink"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else {
        "not a plain file"
    }
}

/// Opens `path` without following a symlink or blocking on a FIFO, and
/// returns it with its metadata only if it is a regular file. The report
/// reads through this too, so a planted FIFO or `/dev/zero` link can neither
/// hang it nor feed it endless bytes.
pub fn open_regular(path: &Path, opts: &mut OpenOptions) -> Result<(File, Metadata), OpenError> {
    let file = opts
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            // O_NOFOLLOW on a symlink fails with ELOOP, a directory opened
            // for writing with EISDIR: say what stands there.
            Some(libc::ELOOP) => OpenError::NotRegular("a symlink"),
            Some(libc::EISDIR) => OpenError::NotRegular("a directory"),
            _ => OpenError::Io(e),
        })?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(OpenError::NotRegular(kind_of(&meta)));
    }
    Ok((file, meta))
}

/// Opens a VM file for appending (created with `mode`), checks it against
/// `mark`, and applies the contract's file rules where it does not match.
fn open_vm_file(
    path: &Path,
    mode: u32,
    mark: Option<Mark>,
) -> Result<(File, Opened, Mark), OpenError> {
    let (mut file, meta) = open_regular(
        path,
        OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(mode),
    )?;
    let found = Mark::of(&meta);
    if mark == Some(found) && found.len > 0 {
        return Ok((file, Opened::Existing, found));
    }
    let len = found.len;
    let how = if len == 0 {
        file.write_all(wire::CSV_HEADER.as_bytes())?;
        Opened::New
    } else {
        let keep = end_of_last_line(&mut file, len)?;
        if keep == len {
            Opened::Existing
        } else {
            file.set_len(keep)?;
            if keep == 0 {
                // Not even the header survived whole.
                file.write_all(wire::CSV_HEADER.as_bytes())?;
            }
            Opened::Repaired(len - keep)
        }
    };
    let mark = Mark::of(&file.metadata()?);
    Ok((file, how, mark))
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

/// How many leading bytes of `rows` (whole lines) the file's last `len`
/// bytes end with: the longest prefix of `rows` that is also the file's
/// tail, starting at a line of the file.
fn present_prefix(file: &File, len: u64, rows: &[u8]) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    // One byte more than the rows, to see the newline before a match.
    let n = len.min(rows.len() as u64 + 1) as usize;
    let mut tail = vec![0u8; n];
    file.read_exact_at(&mut tail, len - n as u64)?;
    // The first line start whose rest is a prefix of `rows` is the longest.
    let found = (1..tail.len())
        .filter(|p| tail[p - 1] == b'\n')
        .find(|p| rows.starts_with(&tail[*p..]));
    Ok(found.map_or(0, |p| tail.len() - p))
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
    mark: Mark,
}

/// One worker's open VM files, capped, closed least recently used first.
pub struct FileStore {
    dir: PathBuf,
    cap: usize,
    mode: u32,
    open: HashMap<IpAddr, OpenFile>,
    /// Use order: (ip, stamp) pushed on every use. Stale entries (the IP was
    /// used again later, or closed) are skipped when evicting and dropped
    /// when the queue is compacted, so eviction is amortised O(1).
    lru: VecDeque<(IpAddr, u64)>,
    clock: u64,
    /// Where our last write left the files that are closed now.
    closed: HashMap<IpAddr, Mark>,
}

impl FileStore {
    pub fn new(dir: PathBuf, cap: usize, mode: u32) -> Self {
        FileStore {
            dir,
            cap: cap.max(1),
            mode,
            open: HashMap::default(),
            lru: VecDeque::new(),
            clock: 0,
            closed: HashMap::default(),
        }
    }

    pub fn path_of(&self, ip: IpAddr) -> PathBuf {
        self.dir.join(wire::file_name(ip))
    }

    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    /// The inode of the VM's file when we last had it open, if we did: the
    /// order in which many appends are best made (see `Worker::flush_all`).
    pub fn inode_of(&self, ip: IpAddr) -> Option<u64> {
        let mark = self.open.get(&ip).map(|f| &f.mark);
        mark.or_else(|| self.closed.get(&ip)).map(|m| m.ino)
    }

    /// Appends `data` (whole rows) to the VM's file with one `write` in the
    /// common case. Returns what opening found when the file was not open.
    pub fn append(&mut self, ip: IpAddr, data: &[u8]) -> Result<Option<Opened>, AppendError> {
        let opened = self.ensure_open(ip)?;
        self.write_open(ip, data)?;
        Ok(opened)
    }

    /// Appends the rows of `rows` that the file does not already end with
    /// (the journal's replay: a crash may have come after some of a VM's
    /// journaled rows reached its file, always a prefix of them). Returns
    /// the bytes of `rows` that were already there, and what opening found.
    pub fn append_missing(
        &mut self,
        ip: IpAddr,
        rows: &[u8],
    ) -> Result<(usize, Option<Opened>), AppendError> {
        let opened = self.ensure_open(ip)?;
        let entry = self.open.get(&ip).expect("opened above");
        let present = match opened {
            Some(Opened::New) => 0,
            _ => present_prefix(&entry.file, entry.mark.len, rows).map_err(|e| AppendError {
                path: self.path_of(ip),
                written: 0,
                error: OpenError::Io(e),
            })?,
        };
        self.write_open(ip, &rows[present..])?;
        Ok((present, opened))
    }

    /// Opens the VM's file unless it is open (closing the least recently
    /// used one beyond the cap), and marks it used.
    fn ensure_open(&mut self, ip: IpAddr) -> Result<Option<Opened>, AppendError> {
        let mut opened = None;
        if !self.open.contains_key(&ip) {
            while self.open.len() >= self.cap {
                self.evict_one();
            }
            let path = self.path_of(ip);
            let mark = self.closed.remove(&ip);
            let (file, how, mark) =
                open_vm_file(&path, self.mode, mark).map_err(|error| AppendError {
                    path,
                    written: 0,
                    error,
                })?;
            self.open.insert(
                ip,
                OpenFile {
                    file,
                    stamp: 0,
                    mark,
                },
            );
            opened = Some(how);
        }
        self.clock += 1;
        let stamp = self.clock;
        self.lru.push_back((ip, stamp));
        if self.lru.len() > 2 * self.cap + 64 {
            self.compact();
        }
        self.open.get_mut(&ip).expect("opened above").stamp = stamp;
        Ok(opened)
    }

    /// Writes `data` to the VM's open file.
    fn write_open(&mut self, ip: IpAddr, data: &[u8]) -> Result<(), AppendError> {
        let entry = self.open.get_mut(&ip).expect("the caller opened it");
        match write_counted(&mut entry.file, data) {
            Ok(()) => {
                entry.mark.len += data.len() as u64;
                Ok(())
            }
            Err((written, error)) => {
                // A write cut short (a full disk) leaves part of a row: cut
                // it now, since a stop while the disk stays full would leave
                // it there, and the contract allows a torn row only after a
                // crash. Best effort: the next open cuts it otherwise.
                let whole = data[..written]
                    .iter()
                    .rposition(|b| *b == b'\n')
                    .map_or(0, |p| p + 1);
                if whole < written {
                    let _ = entry.file.set_len(entry.mark.len + whole as u64);
                }
                Err(self.fail(ip, whole, error))
            }
        }
    }

    /// Closes the file after a failed write and forgets its mark, so the
    /// next attempt reopens it with the full check and cuts whatever torn
    /// row the failure left.
    fn fail(&mut self, ip: IpAddr, written: usize, error: io::Error) -> AppendError {
        if let Some(f) = self.open.remove(&ip) {
            crate::sys::close_file(f.file);
        }
        AppendError {
            path: self.path_of(ip),
            written,
            error: OpenError::Io(error),
        }
    }

    fn close(&mut self, ip: IpAddr) {
        if let Some(f) = self.open.remove(&ip) {
            crate::sys::close_file(f.file);
            self.closed.insert(ip, f.mark);
        }
    }

    fn evict_one(&mut self) {
        while let Some((ip, stamp)) = self.lru.pop_front() {
            if self.open.get(&ip).is_some_and(|f| f.stamp == stamp) {
                self.close(ip);
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
    /// A file moved away by logrotate no longer matches its mark at the
    /// path, so the file found there is checked in full.
    pub fn close_all(&mut self) {
        let ips: Vec<IpAddr> = self.open.keys().copied().collect();
        for ip in ips {
            self.close(ip);
        }
        self.lru.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([127, 3, 0, n])
    }

    fn store(dir: &Path, cap: usize) -> FileStore {
        FileStore::new(dir.into(), cap, DEFAULT_FILE_MODE)
    }

    fn open_path(path: &Path) -> Opened {
        open_vm_file(path, DEFAULT_FILE_MODE, None).unwrap().1
    }

    #[test]
    fn new_file_gets_header_once_and_mode_0640() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = store(dir.path(), 4);
        assert_eq!(store.append(ip(1), b"a\n").unwrap(), Some(Opened::New));
        assert_eq!(store.append(ip(1), b"b\n").unwrap(), None);
        store.close_all();
        assert_eq!(store.append(ip(1), b"c\n").unwrap(), Some(Opened::Existing));
        let path = dir.path().join("127.3.0.1.csv");
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text, format!("{}a\nb\nc\n", wire::CSV_HEADER));
        let mode = fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode & !0o022, 0o640 & !0o022, "{mode:o}");
    }

    #[test]
    fn torn_tail_is_cut_before_appending() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("127.3.0.2.csv");
        fs::write(&path, format!("{}row1\nrow2-half", wire::CSV_HEADER)).unwrap();
        let mut store = store(dir.path(), 4);
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
        assert_eq!(open_path(&path), Opened::Repaired(10));
        assert_eq!(fs::read_to_string(&path).unwrap(), wire::CSV_HEADER);
    }

    #[test]
    fn long_torn_tail_spanning_chunks_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("127.3.0.4.csv");
        let tail = "x".repeat(10_000);
        fs::write(&path, format!("{}ok\n{tail}", wire::CSV_HEADER)).unwrap();
        assert_eq!(open_path(&path), Opened::Repaired(10_000));
    }

    #[test]
    fn open_files_are_capped_least_recent_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = store(dir.path(), 2);
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
        let mut store = store(dir.path(), 1);
        store.append(ip(5), b"a\n").unwrap();
        store.append(ip(6), b"b\n").unwrap(); // evicts ip(5), mark kept
        fs::remove_file(dir.path().join("127.3.0.5.csv")).unwrap();
        assert_eq!(store.append(ip(5), b"c\n").unwrap(), Some(Opened::New));
        let text = fs::read_to_string(dir.path().join("127.3.0.5.csv")).unwrap();
        assert_eq!(text, format!("{}c\n", wire::CSV_HEADER));
    }

    #[test]
    fn an_evicted_file_replaced_by_an_empty_one_gets_its_header() {
        // logrotate's `create`: move the file away, create an empty one,
        // before the store has been told (no SIGHUP yet).
        let dir = tempfile::tempdir().unwrap();
        let mut store = store(dir.path(), 1);
        let path = dir.path().join("127.3.0.7.csv");
        store.append(ip(7), b"a\n").unwrap();
        store.append(ip(8), b"b\n").unwrap(); // evicts ip(7)
        fs::rename(&path, dir.path().join("127.3.0.7.csv.1")).unwrap();
        File::create(&path).unwrap();
        assert_eq!(store.append(ip(7), b"c\n").unwrap(), Some(Opened::New));
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            format!("{}c\n", wire::CSV_HEADER)
        );
    }

    #[test]
    fn a_file_that_changed_behind_our_back_is_checked_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = store(dir.path(), 1);
        let path = dir.path().join("127.3.0.9.csv");
        store.append(ip(9), b"a\n").unwrap();
        store.append(ip(10), b"b\n").unwrap(); // evicts ip(9)
        // Someone appended half a row: the mark no longer matches.
        fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"torn")
            .unwrap();
        assert_eq!(
            store.append(ip(9), b"c\n").unwrap(),
            Some(Opened::Repaired(4))
        );
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            format!("{}a\nc\n", wire::CSV_HEADER)
        );
    }

    #[test]
    fn symlinks_fifos_and_dirs_are_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, "precious\nhalf").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("127.3.0.11.csv")).unwrap();
        let fifo = dir.path().join("127.3.0.12.csv");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        fs::create_dir(dir.path().join("127.3.0.13.csv")).unwrap();
        let mut store = store(dir.path(), 4);
        for (n, kind) in [(11, "a symlink"), (12, "a FIFO"), (13, "a directory")] {
            let err = store.append(ip(n), b"x\n").unwrap_err();
            assert!(err.is_refusal(), "{err}");
            assert!(err.to_string().contains(kind), "{err}");
            assert_eq!(err.written, 0);
        }
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\nhalf");
        assert_eq!(store.open_count(), 0);
    }

    #[test]
    fn unwritable_dir_reports_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("gone");
        let mut store = store(&missing, 2);
        let err = store.append(ip(9), b"x\n").unwrap_err();
        assert_eq!(err.written, 0);
        assert!(!err.is_refusal());
        assert!(err.to_string().contains("gone/127.3.0.9.csv"), "{err}");
    }
}
