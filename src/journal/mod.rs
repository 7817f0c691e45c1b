//! The journal: every accepted row, appended in arrival order to one
//! sequential file per worker, so that what makes a row durable is one
//! write and one `fdatasync` per `--flush-interval` for the whole worker,
//! whatever the number of VMs. The per-VM files are then written in large
//! batches (every `--file-interval`), off the durability path: PostgreSQL's
//! WAL and Prometheus's head block make the same trade.
//!
//! How a row moves, and why each step is in this order:
//!
//! 1. The worker formats the row into its VM's buffer and copies it, with
//!    the VM's address in front, into the journal's open *chunk* (see
//!    [`Journal::push`]).
//! 2. Every `--flush-interval` the worker seals the chunk and hands it to
//!    this worker's journal thread ([`writer`]), which appends it to the
//!    current segment and syncs it; only then is the chunk *durable*.
//! 3. A VM's rows go to its file only once the chunk that holds them is
//!    durable. So whatever any crash leaves in a VM file beyond the rows of
//!    dropped segments is a prefix of the VM's rows in the journal, which is
//!    what makes the replay exact ([`replay`]).
//! 4. A segment is dropped once every row in it is in its file and the
//!    files are synced (`syncfs`, one call for the whole filesystem rather
//!    than one `fsync` per VM).
//!
//! A clean stop writes every buffer to its file, syncs and removes every
//! segment: the CSV files alone are then the whole history. An aggregator
//! that starts on a data dir with segments left appends what they hold to
//! the VM files, each row once, before it receives anything.
//!
//! The segment format is ours (the contract only says the journal lives
//! under `<data-dir>/.vmstats/`): one line per row, the VM's address, a
//! space and the row exactly as its VM file gets it. A chunk written with
//! direct I/O (see [`writer`]) ends in empty lines up to a 4 KiB boundary;
//! a reader skips them. A line that does not parse, or lacks its newline,
//! is a torn tail and ends the segment, as a torn last row ends a CSV file.

mod block_buf;
mod replay;
mod writer;

pub use replay::{JournalError, Replayed, replay};
pub use writer::{SEGMENT_BYTES, Settings};

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, bounded};

use self::block_buf::BlockBuf;
use crate::dispatch::RecvMs;
use crate::stats::Stats;

/// The journal's directory inside a data dir's `.vmstats`.
pub const DIR_NAME: &str = "journal";

/// Segment files end so; the rest of the name is the worker and the first
/// chunk it holds, in hex, so names sort in write order.
const SUFFIX: &str = ".journal";

/// Where a data dir's journal lives.
pub fn dir_of(data_dir: &Path) -> PathBuf {
    data_dir.join(crate::report::CACHE_DIR).join(DIR_NAME)
}

fn segment_name(worker: usize, first_chunk: u64) -> String {
    format!("{worker:04}-{first_chunk:016x}{SUFFIX}")
}

/// Appends one journal line: `<address> <row>` (the row ends in `\n`).
/// Once per datagram: an IPv4 address goes through `itoa`, as the row
/// does, rather than `fmt::Display`.
fn push_line(out: &mut BlockBuf, ip: IpAddr, row: &[u8]) {
    match ip {
        IpAddr::V4(v4) => {
            let mut n = itoa::Buffer::new();
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                out.extend_from_slice(n.format(octet).as_bytes());
            }
        }
        IpAddr::V6(_) => {
            use std::io::Write;
            let _ = write!(out, "{ip}");
        }
    }
    out.push(b' ');
    out.extend_from_slice(row);
}

/// The VM and row of one journal line (without its newline), or `None`
/// when it is not one: a torn or garbled tail.
fn parse_line(line: &[u8]) -> Option<(IpAddr, &[u8])> {
    let space = line.iter().position(|b| *b == b' ')?;
    let ip: IpAddr = std::str::from_utf8(&line[..space]).ok()?.parse().ok()?;
    let row = &line[space + 1..];
    crate::wire::parse_row(row).ok()?;
    Some((ip, row))
}

/// Rows sealed together: the journal's unit of writing and syncing.
struct Chunk {
    number: u64,
    bytes: BlockBuf,
    /// Receive times of its rows, one entry per run of equal times (rows
    /// arrive in receive order, so runs are long), for the latency figures.
    received: Vec<(u64, u64)>,
}

enum Message {
    Chunk(Chunk),
    /// Every row of the chunks before this one is in its VM file: segments
    /// that hold nothing newer may go.
    Release(u64),
    /// Answered once everything sent before it is done.
    Barrier(Sender<()>),
}

/// A worker's side of its journal: the open chunk, and what the journal
/// thread has made durable.
pub struct Journal {
    open: Chunk,
    tx: Sender<Message>,
    /// Chunks written, emptied, for reuse: a steady worker allocates none.
    spare: Receiver<Chunk>,
    /// Chunks below this number are durable.
    durable: Arc<AtomicU64>,
    /// The last chunk of the oldest closed segment (`u64::MAX` when none):
    /// when not `MAX`, a release may free a segment.
    closed: Arc<AtomicU64>,
    thread: JoinHandle<()>,
}

impl Journal {
    /// Starts worker `worker`'s journal thread, writing segments by
    /// `settings`.
    pub fn start(worker: usize, settings: Settings, stats: Arc<Stats>) -> std::io::Result<Journal> {
        // Up to 8 chunks (4 s) in flight: a sync slowed by the cleaner's
        // write-back is absorbed. A disk slower than that holds the worker
        // up, so its queue fills and the receive loop counts what it cannot
        // take, rather than memory growing.
        let (tx, rx) = bounded(8);
        let (spare_tx, spare) = bounded(10);
        let durable = Arc::new(AtomicU64::new(0));
        let closed = Arc::new(AtomicU64::new(u64::MAX));
        let thread = writer::spawn(
            worker,
            settings,
            stats,
            rx,
            spare_tx,
            Arc::clone(&durable),
            Arc::clone(&closed),
        )?;
        Ok(Journal {
            open: Chunk {
                number: 0,
                bytes: BlockBuf::new(),
                received: Vec::new(),
            },
            tx,
            spare,
            durable,
            closed,
            thread,
        })
    }

    /// The chunk rows pushed now go to.
    pub fn chunk(&self) -> u64 {
        self.open.number
    }

    /// Chunks below this number are durable.
    pub fn durable(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    /// Whether a closed segment waits for its rows to reach their files.
    pub fn has_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed) != u64::MAX
    }

    /// Adds one row of `ip`, received at `recv`, to the open chunk.
    pub fn push(&mut self, ip: IpAddr, row: &[u8], recv: RecvMs) {
        push_line(&mut self.open.bytes, ip, row);
        match self.open.received.last_mut() {
            Some((ms, n)) if *ms == recv.0 => *n += 1,
            _ => self.open.received.push((recv.0, 1)),
        }
    }

    /// Hands the open chunk to the journal thread and opens the next one
    /// (an empty chunk costs the thread no write, only its durable mark).
    pub fn seal(&mut self) {
        let number = self.open.number + 1;
        let next = match self.spare.try_recv() {
            Ok(spare) => Chunk { number, ..spare },
            Err(_) => Chunk {
                number,
                bytes: BlockBuf::with_capacity(self.open.bytes.capacity()),
                received: Vec::new(),
            },
        };
        let chunk = std::mem::replace(&mut self.open, next);
        // The thread only ends after `finish`, which consumes this.
        let _ = self.tx.send(Message::Chunk(chunk));
    }

    /// Says that every row of the chunks before `chunk` is in its file.
    pub fn release(&self, chunk: u64) {
        let _ = self.tx.send(Message::Release(chunk));
    }

    /// Seals the open chunk and waits until it is durable, so that every
    /// row pushed so far may go to its file.
    pub fn seal_and_wait(&mut self) {
        self.seal();
        let (tx, rx) = bounded(1);
        if self.tx.send(Message::Barrier(tx)).is_ok() {
            let _ = rx.recv();
        }
    }

    /// Releases what is in files (`chunk`, as for [`Journal::release`]),
    /// and lets the journal thread end once it has done so (synced the
    /// files, then removed the segments): with every row in its file, the
    /// journal is left empty. Returned at once, so that the stop's report
    /// reads the files while the disk takes them (at a million VMs, a
    /// sync of 4 to 20 s and a report of about 26).
    pub fn finish(self, chunk: u64) -> Emptying {
        self.release(chunk);
        let Journal { tx, thread, .. } = self;
        drop(tx);
        Emptying(thread)
    }
}

/// A journal ending: [`Emptying::wait`] returns once it is empty of every
/// row that reached its file (or kept what a failed sync left unsafe).
#[must_use = "the journal is empty only once waited for"]
#[derive(Debug)]
pub struct Emptying(JoinHandle<()>);

impl Emptying {
    pub fn wait(self) {
        self.0.join().expect("the journal thread panicked");
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::OpenOptionsExt;

    use super::*;

    #[test]
    fn a_line_is_the_address_and_the_row_as_written() {
        let mut row = Vec::new();
        let stat = crate::wire::Stat {
            seq: 7,
            interval_s: 10,
            vcpus: 2,
            ..crate::wire::Stat::default()
        };
        crate::wire::push_row_of(&mut row, 1_000, &stat, true);
        let mut line = BlockBuf::new();
        push_line(&mut line, "fd00::5".parse().unwrap(), &row);
        assert!(line.starts_with(b"fd00::5 1000,"));
        let mut v4 = BlockBuf::new();
        push_line(&mut v4, "10.200.0.15".parse().unwrap(), &row);
        assert!(v4.starts_with(b"10.200.0.15 1000,"));
        let (ip, parsed) = parse_line(&line[..line.len() - 1]).unwrap();
        assert_eq!(ip, "fd00::5".parse::<IpAddr>().unwrap());
        assert_eq!(parsed, &row[..row.len() - 1]);
        // Torn anywhere, or garbled (a power loss may leave zeros), it is
        // not a line.
        for cut in [3, 10, line.len() - 5] {
            assert!(parse_line(&line[..cut]).is_none(), "cut at {cut}");
        }
        assert!(parse_line(&[0u8; 40]).is_none());
        assert!(parse_line(b"10.0.0.1 not,a,row").is_none());
    }

    /// Where the filesystem takes direct I/O (ext4 under /tmp here) and
    /// where it does not (tmpfs under /dev/shm): the rows read back as they
    /// were pushed, a direct segment is whole blocks, and a finished journal
    /// is empty.
    #[test]
    fn segments_hold_the_rows_written_directly_or_not() {
        let mut dirs = vec![tempfile::tempdir().unwrap()];
        dirs.extend(tempfile::tempdir_in("/dev/shm").ok());
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        for dir in &dirs {
            let probe = dir.path().join("probe");
            let direct = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(crate::sys::DIRECT_IO)
                .open(&probe)
                .is_ok()
                && crate::sys::DIRECT_IO != 0;
            std::fs::remove_file(&probe).ok();
            let settings = Settings {
                dir: dir.path().to_path_buf(),
                file_mode: 0o640,
                sync: true,
                segment_bytes: SEGMENT_BYTES,
            };
            let mut journal = Journal::start(0, settings, Arc::new(Stats::new(1, 1))).unwrap();
            let mut want = Vec::new();
            for (chunk, seqs) in [(0..700u64), (700..701), (701..1500)]
                .into_iter()
                .enumerate()
            {
                for seq in seqs {
                    let stat = crate::wire::Stat {
                        seq,
                        interval_s: 10,
                        vcpus: 2,
                        ..crate::wire::Stat::default()
                    };
                    let mut row = Vec::new();
                    crate::wire::push_row_of(&mut row, 1_000 + seq, &stat, true);
                    journal.push(ip, &row, RecvMs(1_000 + chunk as u64));
                    want.extend_from_slice(&row);
                }
                journal.seal_and_wait();
            }
            let segments: Vec<_> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            assert_eq!(segments.len(), 1, "{segments:?}");
            let bytes = std::fs::read(&segments[0]).unwrap();
            let mut by_vm = foldhash::HashMap::default();
            assert_eq!(replay::read_segment(&bytes, &mut by_vm), (1500, 0));
            assert_eq!(by_vm[&ip], want);
            let lines = want.len() + 1500 * "10.1.2.3 ".len();
            if direct {
                assert_eq!(bytes.len() % block_buf::BLOCK, 0);
                assert!(bytes.len() > lines);
            } else {
                assert_eq!(bytes.len(), lines);
            }
            let all = journal.chunk();
            journal.finish(all).wait();
            assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        }
    }
}
