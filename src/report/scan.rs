//! Reading data dirs: which files hold which VM's history, and their rows
//! in the report's window, read without trusting the files.
//!
//! A VM's history is its live file plus the parts logrotate moved aside
//! (`<ip>.csv.1`, `<ip>.csv.2.gz`, `<ip>.csv-20261126.gz`), in one data dir
//! or several (`--data-dir` repeated: two aggregators fed by the same
//! agents, or shards). A part last written before the window began holds
//! no row of it and is not read. Files are opened through the store's check ([`store::open_regular`]:
//! no symlink followed, no FIFO waited on, regular files only) and read a
//! bounded line at a time, so a planted FIFO cannot hang the report and an
//! endless line cannot grow its memory.

use std::collections::HashSet;
use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom};
use std::net::IpAddr;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use flate2::read::MultiGzDecoder;

use crate::store::{self, OpenError};
use crate::wire;

use super::ReportError;
use super::summary::{Accumulator, Probe, TimeOrder, VmSummary};

/// The rows a report covers: received after `from_ms` (`None`: from the
/// first) and no later than `as_of_ms`, by the aggregator's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from_ms: Option<u64>,
    pub as_of_ms: u64,
}

impl Window {
    /// The `length` (`None`: everything) before `as_of_ms`.
    pub fn before(as_of_ms: u64, length: Option<Duration>) -> Window {
        Window {
            from_ms: length.map(|d| as_of_ms.saturating_sub(d.as_millis() as u64)),
            as_of_ms,
        }
    }

    pub fn contains(&self, recv_ms: u64) -> bool {
        recv_ms <= self.as_of_ms && self.from_ms.is_none_or(|from| recv_ms > from)
    }

    /// The window's length in days, as the advisors state their lookback.
    pub fn lookback_days(&self) -> Option<f64> {
        self.from_ms
            .map(|from| (self.as_of_ms - from) as f64 / 86_400_000.0)
    }
}

/// Longest line the report takes in: a row is at most
/// [`wire::MAX_ROW_LEN`] bytes, so anything longer is junk, skipped without
/// being held in memory.
const MAX_LINE: usize = 4 * wire::MAX_ROW_LEN;

/// A line buffer's first capacity: a row's longest. Not [`MAX_LINE`]: a
/// block of 1 KiB or more makes glibc's malloc consolidate every small
/// block freed since, and a report allocating one per file spent a fifth
/// of its reading threads' time there at a million VMs.
const LINE_CAPACITY: usize = wire::MAX_ROW_LEN;

/// What [`next_line`] found.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// A whole line, in the buffer without its newline.
    Whole,
    /// A line longer than [`MAX_LINE`], skipped.
    TooLong,
    /// The end of the file came before a newline (a torn last line).
    Torn,
    Eof,
}

/// Reads the next line into `line`, holding at most [`MAX_LINE`] bytes;
/// returns what it found and the bytes it consumed.
fn next_line(reader: &mut impl BufRead, line: &mut Vec<u8>) -> io::Result<(Line, u64)> {
    line.clear();
    let mut too_long = false;
    let mut consumed = 0u64;
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            let started = too_long || !line.is_empty();
            let kind = if started { Line::Torn } else { Line::Eof };
            return Ok((kind, consumed));
        }
        let (chunk, end) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (&buf[..i], Some(i + 1)),
            None => (buf, None),
        };
        if !too_long && line.len() + chunk.len() <= MAX_LINE {
            line.extend_from_slice(chunk);
        } else {
            too_long = true;
            line.clear();
        }
        let used = end.unwrap_or(buf.len());
        reader.consume(used);
        consumed += used as u64;
        if end.is_some() {
            let kind = if too_long { Line::TooLong } else { Line::Whole };
            return Ok((kind, consumed));
        }
    }
}

/// One file of a VM's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub path: PathBuf,
    pub gzip: bool,
}

/// Every VM's files in `dirs`, in address order (each VM's in a stable
/// order). Gathered as they come and sorted once: a million inserts into a
/// map, in the directory's hash order, cost the report a second of one
/// core before its reading threads could start.
pub fn vm_files(dirs: &[PathBuf]) -> Result<Vec<(IpAddr, Vec<Part>)>, ReportError> {
    let mut found: Vec<(IpAddr, Part)> = Vec::new();
    for dir in dirs {
        let dir_err = |error| ReportError::DataDir {
            path: dir.clone(),
            error,
        };
        for entry in std::fs::read_dir(dir).map_err(dir_err)? {
            let entry = entry.map_err(dir_err)?;
            let name = entry.file_name();
            if let Some(part) = name.to_str().and_then(wire::file_part) {
                let path = entry.path();
                found.push((
                    part.ip,
                    Part {
                        path,
                        gzip: part.gzip,
                    },
                ));
            }
        }
    }
    found.sort_unstable_by(|(a, pa), (b, pb)| a.cmp(b).then_with(|| pa.path.cmp(&pb.path)));
    let mut vms: Vec<(IpAddr, Vec<Part>)> = Vec::new();
    for (ip, part) in found {
        match vms.last_mut() {
            Some((last, parts)) if *last == ip => parts.push(part),
            _ => vms.push((ip, vec![part])),
        }
    }
    Ok(vms)
}

/// The directories holding any of `vms`' files: a million parts in a
/// few dirs, so a parent is hashed only when it is not the last one's.
pub fn dirs_with_files(vms: &[(IpAddr, Vec<Part>)]) -> HashSet<&Path> {
    let mut dirs = HashSet::new();
    let mut last: Option<&Path> = None;
    for (_, parts) in vms {
        for dir in parts.iter().filter_map(|p| p.path.parent()) {
            if last.is_none_or(|l| l.as_os_str() != dir.as_os_str()) {
                dirs.insert(dir);
                last = Some(dir);
            }
        }
    }
    dirs
}

/// One VM's summary over `window` from all its parts, or `None` when no
/// row of it lies in the window (or, `only_verified`, no verified row). A
/// part that cannot be read is named on stderr and left out; the VM's
/// other parts still count.
pub fn read_vm(
    ip: IpAddr,
    parts: &[Part],
    window: &Window,
    probe: &dyn Probe,
    only_verified: bool,
) -> Option<VmSummary> {
    let mut acc = Accumulator::default();
    if only_verified {
        acc.only_verified();
    }
    for part in parts {
        if let Err(e) = read_part(part, window, &mut acc) {
            crate::log_line(&format!("warning: {e}; file left out of the report"));
        }
    }
    acc.finish(ip, probe)
}

/// Adds a part's rows in `window` to `acc`: header checked, torn last line
/// skipped (the contract allows one after a crash), bad lines counted. A
/// part that is not a regular file (a symlink, FIFO or device planted in
/// the data dir) is never read. In a plain file the read starts where the
/// window does ([`window_start`]). Returns the bytes of rows read.
pub fn read_part(part: &Part, window: &Window, acc: &mut Accumulator) -> Result<u64, ReportError> {
    let path = &part.path;
    let err = |error| ReportError::File {
        path: path.to_path_buf(),
        error,
    };
    let Some((file, meta)) = open_part(part, window)? else {
        return Ok(0);
    };
    acc.start_file();
    let bad_before = acc.bad_rows();
    let (reader, _, start) = rows_from(file, part, meta.len(), window).map_err(err)?;
    let mut order = TimeOrder::default();
    let end = each_line(reader, start, u64::MAX, |row, _, _| match row {
        Some(row) if window.contains(row.recv_ms) => acc.add_after(&row, &mut order),
        Some(row) => order.follow(row.recv_ms),
        None => acc.add_bad_row(),
    })
    .map_err(err)?;
    let bad = acc.bad_rows() - bad_before;
    if bad > 0 {
        crate::log_line(&format!(
            "warning: {}: {bad} malformed lines skipped",
            path.display()
        ));
    }
    Ok(end - start)
}

/// Opens a part for reading through the store's check, or `None` (with a
/// warning) for something that is not a regular file, and `None` for a
/// part last written before `window` began.
pub fn open_part(part: &Part, window: &Window) -> Result<Option<(File, Metadata)>, ReportError> {
    let opened = open_regular_part(part)?;
    Ok(opened.filter(|(_, meta)| !written_before(meta, window)))
}

/// Opens a part for reading through the store's check, or `None` (with a
/// warning) for something that is not a regular file.
pub fn open_regular_part(part: &Part) -> Result<Option<(File, Metadata)>, ReportError> {
    let (file, meta) = match store::open_regular(&part.path, OpenOptions::new().read(true)) {
        Ok(opened) => opened,
        Err(OpenError::NotRegular(kind)) => {
            not_regular(part, kind);
            return Ok(None);
        }
        Err(OpenError::Io(error)) => {
            let path = part.path.clone();
            return Err(ReportError::File { path, error });
        }
    };
    Ok(Some((file, meta)))
}

/// A part found to be a regular file by its metadata (not following a
/// symlink), opened only when its bytes are read: a report whose cache is
/// current reads none of them, and at a million VMs each open and close
/// cost as much as looking up and reading the file's cache entry.
pub struct Found {
    pub meta: Metadata,
    file: Option<File>,
}

impl Found {
    /// `part`'s metadata, or `None` (with a warning) for something that is
    /// not a regular file.
    pub fn stat(part: &Part) -> Result<Option<Found>, ReportError> {
        let meta = std::fs::symlink_metadata(&part.path).map_err(|error| ReportError::File {
            path: part.path.clone(),
            error,
        })?;
        if !meta.is_file() {
            not_regular(part, store::kind_of(&meta));
            return Ok(None);
        }
        Ok(Some(Found { meta, file: None }))
    }

    /// The file, opened through the store's check on first use; an error
    /// if what is there now is not the file [`Found::stat`] saw.
    pub fn file(&mut self, part: &Part) -> io::Result<&File> {
        if self.file.is_none() {
            let (file, now) = store::open_regular(&part.path, OpenOptions::new().read(true))
                .map_err(|e| match e {
                    OpenError::NotRegular(kind) => io::Error::other(format!("now {kind}")),
                    OpenError::Io(e) => e,
                })?;
            if (now.dev(), now.ino()) != (self.meta.dev(), self.meta.ino()) {
                return Err(io::Error::other("replaced while the report read it"));
            }
            self.file = Some(file);
        }
        Ok(self.file.as_ref().expect("opened above"))
    }
}

/// Says on stderr that `part` is `kind`, not a regular file, and is left out.
fn not_regular(part: &Part, kind: &str) {
    crate::log_line(&format!(
        "warning: {}: {kind}, not a regular file; left out of the report",
        part.path.display()
    ));
}

/// Whether a file was last written before `window` began: rows are
/// received before they are written, so it holds none of the window's.
pub fn written_before(meta: &Metadata, window: &Window) -> bool {
    let written_ms = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64);
    matches!((window.from_ms, written_ms), (Some(from), Some(written)) if written <= from)
}

/// Inflated bytes a gzip part may hold per compressed byte: CSV rows of
/// real figures compress 5 to 10 times; a part past this is not a rotated
/// VM file but a decompression bomb, and its rest is left out.
pub const MAX_INFLATE_RATIO: u64 = 64;

/// Inflated bytes read of a gzip part of `len` bytes, at most (1 MiB at
/// least, for tiny parts).
pub fn max_inflated(len: u64) -> u64 {
    len.saturating_mul(MAX_INFLATE_RATIO).max(1 << 20)
}

/// A gzip part's rows, inflated no further than [`max_inflated`]; where it
/// goes on, the rest is left out with one warning naming the file.
struct Inflate<R> {
    inner: MultiGzDecoder<R>,
    /// Bytes it may still give; `None` once the cap was reached.
    left: Option<u64>,
    path: PathBuf,
}

impl<R: io::Read> Inflate<R> {
    fn new(inner: R, len: u64, path: &Path) -> Inflate<R> {
        Inflate {
            inner: MultiGzDecoder::new(inner),
            left: Some(max_inflated(len)),
            path: path.to_path_buf(),
        }
    }
}

impl<R: io::Read> io::Read for Inflate<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.left {
            None => Ok(0),
            Some(0) => {
                self.left = None;
                if self.inner.read(&mut [0u8; 1])? > 0 {
                    crate::log_line(&format!(
                        "warning: {}: inflates to more than {MAX_INFLATE_RATIO} times its size; the rest of it is left out",
                        self.path.display()
                    ));
                }
                Ok(0)
            }
            Some(left) => {
                let room = buf.len().min(left.min(usize::MAX as u64) as usize);
                let n = self.inner.read(&mut buf[..room])?;
                self.left = Some(left - n as u64);
                Ok(n)
            }
        }
    }
}

/// A reader of a file's rows, its header checked, standing where the rows
/// of `window` begin: in a plain file found by [`window_start`], in a
/// gzip one (which cannot seek) right after the header. Returns the
/// reader, the header's end and the offset it stands at.
pub fn rows_from(
    file: File,
    part: &Part,
    len: u64,
    window: &Window,
) -> io::Result<(Box<dyn BufRead>, u64, u64)> {
    if part.gzip {
        let inflate = Inflate::new(file, len, &part.path);
        let mut reader = BufReader::with_capacity(READ_BUF, inflate);
        let header_end = check_header(&mut reader)?;
        return Ok((Box::new(reader), header_end, header_end));
    }
    let mut reader = BufReader::with_capacity(READ_BUF, file);
    let header_end = check_header(&mut reader)?;
    let start = match window.from_ms {
        Some(from) => window_start(reader.get_ref(), header_end, len, from)?,
        None => header_end,
    };
    if start > header_end {
        reader.seek(SeekFrom::Start(start))?;
    }
    Ok((Box::new(reader), header_end, start))
}

/// Reads the first line and insists it is the header; returns its length.
fn check_header(reader: &mut impl BufRead) -> io::Result<u64> {
    let mut line = Vec::with_capacity(LINE_CAPACITY);
    let header = wire::CSV_HEADER.trim_end().as_bytes();
    match next_line(reader, &mut line)?.0 {
        Line::Whole if line == header => Ok(wire::CSV_HEADER.len() as u64),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "first line is not the vmstats header",
        )),
    }
}

/// Bytes asked of the kernel per read: larger reads than the default 8 KiB
/// help a cold scan, while a window's seek still skips most of a file.
const READ_BUF: usize = 32 << 10;

/// Probes closer together than this end the search: the rest is read. A
/// page: each probe is one small `pread`, so a few more of them cost less
/// than reading a larger span of a VM's small daily share.
pub const SEEK_SPAN: u64 = 4 << 10;

/// Where in a plain file (rows in receive order from `lo` to `len`) the
/// rows received after `from_ms` begin: a binary search on receive time,
/// ending one probe span before it, so rows that a stepped clock left a
/// little out of order are still read (the window filter drops those
/// outside). Each probe reads three consecutive rows and decides by the
/// middle one; when they are out of order, or a probe contradicts what
/// the earlier ones found (one row from a clock stepped back, past the
/// middle, would otherwise send the search past half the file), the search
/// gives up and the file is read from `lo`. Always a row's start.
pub fn window_start(file: &File, lo: u64, len: u64, from_ms: u64) -> io::Result<u64> {
    let first = lo;
    let (mut lo, mut hi) = (lo, len);
    // The receive times known at the search's bounds.
    let (mut lo_ms, mut hi_ms) = (0u64, u64::MAX);
    let mut probe = [0u8; 4 * wire::MAX_ROW_LEN];
    while hi - lo > SEEK_SPAN {
        let mid = lo + (hi - lo) / 2;
        let n = file.read_at(&mut probe, mid)?;
        let Some([(_, a), (second, b), (_, c)]) = three_rows(&probe[..n]) else {
            break; // a row that does not parse: stop here and read on
        };
        if !(lo_ms <= a && a <= b && b <= c && c <= hi_ms) {
            return Ok(first);
        }
        if b <= from_ms {
            (lo, lo_ms) = (mid + second as u64, b);
        } else {
            (hi, hi_ms) = (mid, a);
        }
    }
    Ok(lo)
}

/// The first three whole rows after the first newline of `bytes`: each
/// one's offset in `bytes` and receive time.
fn three_rows(bytes: &[u8]) -> Option<[(usize, u64); 3]> {
    let mut at = bytes.iter().position(|b| *b == b'\n')? + 1;
    let mut out = [(0, 0); 3];
    for slot in &mut out {
        let rest = bytes.get(at..)?;
        let line_end = rest.iter().position(|b| *b == b'\n')?;
        let comma = rest[..line_end].iter().position(|b| *b == b',')?;
        let ms = std::str::from_utf8(&rest[..comma]).ok()?.parse().ok()?;
        *slot = (at, ms);
        at += line_end + 1;
    }
    Some(out)
}

/// Calls `f` with each whole line of `reader`, which stands at byte `pos`
/// of the (uncompressed) file, a line's start, until a line would start at
/// or past `until`: the row the line holds (`None` when it is not a row)
/// and where the line starts and ends. Returns where the last whole line
/// ended: a torn last line is left for a later read.
pub fn each_line(
    mut reader: impl BufRead,
    mut pos: u64,
    until: u64,
    mut f: impl FnMut(Option<wire::Row>, u64, u64),
) -> io::Result<u64> {
    let mut line = Vec::with_capacity(LINE_CAPACITY);
    while pos < until {
        let (kind, used) = next_line(&mut reader, &mut line)?;
        let start = pos;
        match kind {
            Line::Eof | Line::Torn => break,
            Line::TooLong => f(None, start, start + used),
            Line::Whole => {
                f(wire::parse_row(&line).ok(), start, start + used);
            }
        }
        pos += used;
    }
    Ok(pos)
}

/// A reader of a file's rows from byte `pos` (uncompressed) to `end`
/// (`None`: its end): a seek in a plain file, reading no further than
/// `end`; a decompress-and-skip in a gzip one.
pub fn reader_at<'a>(
    file: &'a File,
    part: &Part,
    pos: u64,
    end: Option<u64>,
) -> io::Result<Box<dyn BufRead + 'a>> {
    if part.gzip {
        let inflate = Inflate::new(file, file.metadata()?.len(), &part.path);
        let mut reader = BufReader::with_capacity(READ_BUF, inflate);
        io::copy(&mut io::Read::take(&mut reader, pos), &mut io::sink())?;
        return Ok(Box::new(reader));
    }
    let mut file = file;
    file.seek(SeekFrom::Start(pos))?;
    let len = end.map_or(u64::MAX, |end| end.saturating_sub(pos));
    let capacity = len.min(READ_BUF as u64) as usize;
    Ok(Box::new(BufReader::with_capacity(
        capacity,
        io::Read::take(file, len),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures::probe;

    #[test]
    fn lines_are_bounded_and_torn_ends_seen() {
        let long = "x".repeat(MAX_LINE + 1);
        let text = format!("a,b\n{long}\nc\ntorn");
        let mut r = io::BufReader::with_capacity(16, text.as_bytes());
        let mut line = Vec::new();
        assert_eq!(next_line(&mut r, &mut line).unwrap(), (Line::Whole, 4));
        assert_eq!(line, b"a,b");
        let long_len = MAX_LINE as u64 + 2;
        assert_eq!(
            next_line(&mut r, &mut line).unwrap(),
            (Line::TooLong, long_len)
        );
        assert!(line.len() <= MAX_LINE);
        assert_eq!(next_line(&mut r, &mut line).unwrap(), (Line::Whole, 2));
        assert_eq!(line, b"c");
        assert_eq!(next_line(&mut r, &mut line).unwrap(), (Line::Torn, 4));
        assert_eq!(next_line(&mut r, &mut line).unwrap(), (Line::Eof, 0));
    }

    #[test]
    fn a_window_is_open_at_its_start_and_closed_at_as_of() {
        let w = Window::before(100_000, Some(Duration::from_secs(10)));
        assert_eq!(w.from_ms, Some(90_000));
        assert!(!w.contains(90_000));
        assert!(w.contains(90_001));
        assert!(w.contains(100_000));
        assert!(!w.contains(100_001));
        let all = Window::before(100_000, None);
        assert!(all.contains(0) && !all.contains(100_001));
        assert_eq!(all.lookback_days(), None);
        let days = Window::before(14 * 86_400_000, Some(Duration::from_secs(14 * 86_400)));
        assert_eq!(days.lookback_days(), Some(14.0));
    }

    #[test]
    fn planted_fifos_and_links_are_left_out_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("127.6.0.1.csv");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        std::os::unix::fs::symlink("/dev/zero", dir.path().join("127.6.0.2.csv")).unwrap();
        let all = Window::before(u64::MAX, None);
        let vms = vm_files(&[dir.path().to_path_buf()]).unwrap();
        assert_eq!(vms.len(), 2);
        for (ip, parts) in vms {
            assert_eq!(read_vm(ip, &parts, &all, &probe(), false), None);
        }
    }

    #[test]
    fn one_endless_line_costs_no_memory_and_is_a_bad_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("127.6.0.3.csv");
        let mut text = wire::CSV_HEADER.to_string();
        text.push_str(&"9".repeat(1 << 20));
        text.push('\n');
        std::fs::write(&path, text).unwrap();
        let all = Window::before(u64::MAX, None);
        let part = Part { path, gzip: false };
        let vm = read_vm("127.6.0.3".parse().unwrap(), &[part], &all, &probe(), false);
        assert!(vm.is_none_or(|v| v.datagrams.bad_rows == 1));
    }
}
