//! Reading a data dir: which files are VM files, and each file's rows in
//! the report's window, read without trusting the file.
//!
//! Files are opened through the store's check ([`store::open_regular`]:
//! no symlink followed, no FIFO waited on, regular files only) and read a
//! bounded line at a time, so a planted FIFO cannot hang the report and an
//! endless line cannot grow its memory.

use std::fs::OpenOptions;
use std::io::{self, BufRead, BufReader};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::store::{self, OpenError};
use crate::wire;

use super::ReportError;
use super::summary::{Accumulator, VmSummary};

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

/// Reads the next line into `line`, holding at most [`MAX_LINE`] bytes.
fn next_line(reader: &mut impl BufRead, line: &mut Vec<u8>) -> io::Result<Line> {
    line.clear();
    let mut too_long = false;
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            let started = too_long || !line.is_empty();
            return Ok(if started { Line::Torn } else { Line::Eof });
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
        if end.is_some() {
            return Ok(if too_long { Line::TooLong } else { Line::Whole });
        }
    }
}

/// The VM files of a data dir, with their VMs' addresses.
pub fn vm_files(data_dir: &Path) -> Result<Vec<(IpAddr, PathBuf)>, ReportError> {
    let dir_err = |error| ReportError::DataDir {
        path: data_dir.to_path_buf(),
        error,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(data_dir).map_err(dir_err)? {
        let entry = entry.map_err(dir_err)?;
        let name = entry.file_name();
        if let Some(ip) = name.to_str().and_then(wire::ip_from_file_name) {
            files.push((ip, entry.path()));
        }
    }
    Ok(files)
}

/// Reads one VM file's rows in `window` into its summary: header checked,
/// torn last line skipped (the contract allows one after a crash), bad
/// lines counted. `Ok(None)` for a file with no rows in the window, or one
/// that is not a regular file (a symlink, FIFO or device planted in the
/// data dir is never read).
pub fn summarize_file(
    path: &Path,
    ip: IpAddr,
    window: &Window,
) -> Result<Option<VmSummary>, ReportError> {
    let err = |error| ReportError::File {
        path: path.to_path_buf(),
        error,
    };
    let file = match store::open_regular(path, OpenOptions::new().read(true)) {
        Ok((file, _)) => file,
        Err(OpenError::NotRegular(kind)) => {
            crate::log_line(&format!(
                "warning: {}: {kind}, not a regular file; left out of the report",
                path.display()
            ));
            return Ok(None);
        }
        Err(OpenError::Io(e)) => return Err(err(e)),
    };
    let mut reader = BufReader::new(file);
    let mut acc = Accumulator::default();
    let mut line = Vec::with_capacity(MAX_LINE);
    let header = wire::CSV_HEADER.trim_end().as_bytes();
    let mut first = true;
    loop {
        match next_line(&mut reader, &mut line).map_err(err)? {
            Line::Eof | Line::Torn => break,
            Line::TooLong => acc.add_bad_row(),
            Line::Whole if std::mem::take(&mut first) => {
                if line != header {
                    return Err(err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "first line is not the vmstats header",
                    )));
                }
            }
            Line::Whole => match std::str::from_utf8(&line).map(wire::parse_row) {
                Ok(Ok(row)) if window.contains(row.recv_ms) => acc.add(&row),
                Ok(Ok(_)) => {}
                _ => acc.add_bad_row(),
            },
        }
    }
    if acc.bad_rows() > 0 {
        crate::log_line(&format!(
            "warning: {}: {} malformed lines skipped",
            path.display(),
            acc.bad_rows()
        ));
    }
    Ok(acc.finish(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_bounded_and_torn_ends_seen() {
        let long = "x".repeat(MAX_LINE + 1);
        let text = format!("a,b\n{long}\nc\ntorn");
        let mut r = io::BufReader::with_capacity(16, text.as_bytes());
        let mut line = Vec::new();
        assert_eq!(next_line(&mut r, &mut line).unwrap(), Line::Whole);
        assert_eq!(line, b"a,b");
        assert_eq!(next_line(&mut r, &mut line).unwrap(), Line::TooLong);
        assert!(line.len() <= MAX_LINE);
        assert_eq!(next_line(&mut r, &mut line).unwrap(), Line::Whole);
        assert_eq!(line, b"c");
        assert_eq!(next_line(&mut r, &mut line).unwrap(), Line::Torn);
        assert_eq!(next_line(&mut r, &mut line).unwrap(), Line::Eof);
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
        for (ip, path) in vm_files(dir.path()).unwrap() {
            assert_eq!(summarize_file(&path, ip, &all).unwrap(), None);
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
        let vm = summarize_file(&path, "127.6.0.3".parse().unwrap(), &all).unwrap();
        assert!(vm.is_none_or(|v| v.bad_rows == 1));
    }
}
