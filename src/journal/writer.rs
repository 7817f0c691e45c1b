//! A worker's journal thread: appends sealed chunks to the current segment,
//! syncs them, says how far is durable, and drops segments whose rows are
//! all in their files.
//!
//! It runs beside the worker so that a sync (tens of ms on a busy disk)
//! never holds up ingest: the worker keeps formatting rows while the last
//! chunk goes to disk. Dropping segments has a thread of its own (the
//! cleaner): its `syncfs` writes back every VM file written since the last
//! one, seconds of disk time at 100,000 VMs, and must not hold up the
//! next chunk's sync meanwhile.
//!
//! Segments are written with direct I/O when the filesystem takes it
//! (ext4 and XFS do, tmpfs does not): each chunk goes from the worker's
//! aligned buffer to the disk, padded with empty lines to a 4 KiB boundary.
//! Through the page cache, the copy into it took an eighth of the
//! collector's CPU at a million rows a second, and the kernel then wrote the
//! same pages back beside the VM files' write-back. `--no-sync` keeps the
//! page cache: it asks for speed, not for the disk to be waited on.
//!
//! A journal that cannot be written (a full disk) must not stop the VM
//! files: the failed chunk is marked durable anyway, so its rows still go
//! to their files, and the failure is counted (`journal_errors`) and logged
//! at most once a second; the segment it tore is cut back and closed.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use super::{Chunk, Message};
use crate::stats::{Counter, Stats};

/// How a data dir's journal is written.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The journal directory (made by [`replay`](super::replay)).
    pub dir: PathBuf,
    /// Permissions of segment files: the rows' own.
    pub file_mode: u32,
    /// `fdatasync` each chunk and `syncfs` before dropping a segment;
    /// false with `--no-sync`.
    pub sync: bool,
    /// A segment is closed once it holds this many bytes.
    pub segment_bytes: u64,
}

/// A segment is closed at this size: at 100,000 rows/s a worker fills one
/// every few seconds, so the journal's disk use follows the file interval
/// closely, while a restart's replay reads at most a few of them per
/// worker beyond that.
pub const SEGMENT_BYTES: u64 = 64 << 20;

struct Segment {
    path: PathBuf,
    /// The newest chunk it holds.
    last_chunk: u64,
    bytes: u64,
}

struct Open {
    file: File,
    segment: Segment,
}

struct Writer {
    worker: usize,
    settings: Settings,
    stats: Arc<Stats>,
    durable: Arc<AtomicU64>,
    closed_newest: Arc<AtomicU64>,
    open: Option<Open>,
    /// Whether segments are opened with direct I/O (every write whole
    /// blocks): until the filesystem refuses it once, which happens only
    /// with no segment open, so it also says how the open one was opened.
    direct: bool,
    closed: VecDeque<Segment>,
    /// Segments whose rows are all in their files, to be synced and
    /// removed.
    cleaner: Sender<Vec<Segment>>,
    errors: crate::RateLimited,
}

pub(super) fn spawn(
    worker: usize,
    settings: Settings,
    stats: Arc<Stats>,
    rx: Receiver<Message>,
    spare: Sender<Chunk>,
    durable: Arc<AtomicU64>,
    closed_newest: Arc<AtomicU64>,
) -> io::Result<JoinHandle<()>> {
    let (cleaner, released) = crossbeam_channel::unbounded();
    let cleaning = spawn_cleaner(worker, settings.clone(), Arc::clone(&stats), released)?;
    let direct = settings.sync && crate::sys::DIRECT_IO != 0;
    let mut w = Writer {
        worker,
        direct,
        settings,
        stats,
        durable,
        closed_newest,
        open: None,
        closed: VecDeque::new(),
        cleaner,
        errors: crate::RateLimited::new(Duration::from_secs(1)),
    };
    std::thread::Builder::new()
        .name(format!("vmstats-journal-{worker}"))
        .spawn(move || {
            for msg in rx {
                match msg {
                    Message::Chunk(mut chunk) => {
                        w.write(&mut chunk);
                        chunk.bytes.clear();
                        chunk.received.clear();
                        let _ = spare.try_send(chunk);
                    }
                    Message::Release(below) => w.release(below),
                    Message::Barrier(done) => {
                        let _ = done.send(());
                    }
                }
            }
            w.errors.flush(held_back_line);
            drop(w);
            cleaning.join().expect("the journal cleaner panicked");
        })
}

fn held_back_line(held: u64) -> String {
    format!("error: {held} more journal errors not shown (at most one line a second)")
}

/// The cleaner: syncs the filesystem (unless `--no-sync`) and removes each
/// batch of released segments; a failed sync keeps the batch on disk, so a
/// restart replays it (nothing twice) rather than losing its rows.
fn spawn_cleaner(
    worker: usize,
    settings: Settings,
    stats: Arc<Stats>,
    released: Receiver<Vec<Segment>>,
) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("vmstats-journal-clean-{worker}"))
        .spawn(move || {
            let mut errors = crate::RateLimited::new(Duration::from_secs(1));
            for batch in released {
                if settings.sync {
                    let synced =
                        crate::sys::sync_filesystem_at(&settings.dir);
                    if let Err(e) = synced {
                        stats.add(Counter::JournalErrors, 1);
                        let dir = settings.dir.display().to_string();
                        errors.log(|held| {
                            format!(
                                "error: cannot sync the files of {dir}: {e} (journal segments kept){}",
                                crate::held_back_note(held)
                            )
                        });
                        continue;
                    }
                }
                for segment in &batch {
                    remove(&stats, segment);
                }
            }
            errors.flush(held_back_line);
        })
}

impl Writer {
    fn write(&mut self, chunk: &mut Chunk) {
        if !chunk.bytes.is_empty()
            && let Err(e) = self.append(chunk)
        {
            self.stats.add(Counter::JournalErrors, 1);
            let dir = self.settings.dir.display().to_string();
            self.errors.log(|held| {
                format!(
                    "error: cannot write the journal in {dir}: {e} (its rows still go to their files, but a crash before then loses them){}",
                    crate::held_back_note(held)
                )
            });
        }
        self.durable.store(chunk.number + 1, Ordering::Release);
        let now = crate::unix_ms();
        for (ms, rows) in &chunk.received {
            self.stats.latency.observe(now.saturating_sub(*ms), *rows);
        }
    }

    /// Appends and syncs one chunk, opening a segment first when none is.
    fn append(&mut self, chunk: &mut Chunk) -> io::Result<()> {
        if self.open.is_none() {
            self.open = Some(self.create(chunk.number)?);
        }
        let open = self.open.as_mut().expect("opened above");
        if self.direct {
            chunk.bytes.pad_to_block(b'\n');
        }
        let result = open.file.write_all(&chunk.bytes).and_then(|()| {
            if self.settings.sync {
                open.file.sync_data()
            } else {
                Ok(())
            }
        });
        if let Err(e) = result {
            // Cut what the failed write left, so a replay finds whole lines
            // only, and start a new segment with the next chunk.
            let _ = open.file.set_len(open.segment.bytes);
            let refused = self.direct && refuses_direct(&e);
            self.close_open();
            if refused {
                // Opened, but not written so (an alignment this disk does
                // not take): the chunk goes to a buffered segment instead.
                self.direct = false;
                return self.append(chunk);
            }
            return Err(e);
        }
        let len = chunk.bytes.len() as u64;
        open.segment.bytes += len;
        open.segment.last_chunk = chunk.number;
        self.stats.add(Counter::JournalBytes, len);
        if open.segment.bytes >= self.settings.segment_bytes {
            self.close_open();
        }
        Ok(())
    }

    fn create(&mut self, first_chunk: u64) -> io::Result<Open> {
        let path = self
            .settings
            .dir
            .join(super::segment_name(self.worker, first_chunk));
        let open = |direct: bool| {
            let direct = if direct { crate::sys::DIRECT_IO } else { 0 };
            OpenOptions::new()
                .append(true)
                .create_new(true)
                .mode(self.settings.file_mode)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | direct)
                .open(&path)
        };
        let file = match open(self.direct) {
            Err(e) if self.direct && refuses_direct(&e) => {
                self.direct = false;
                open(false)?
            }
            opened => opened?,
        };
        if self.settings.sync {
            // The new name must survive a power loss with the rows in it.
            File::open(&self.settings.dir)?.sync_all()?;
        }
        self.stats.add(Counter::JournalSegments, 1);
        Ok(Open {
            file,
            segment: Segment {
                path,
                last_chunk: first_chunk,
                bytes: 0,
            },
        })
    }

    /// Moves the open segment (if it holds anything) to the closed ones.
    fn close_open(&mut self) {
        if let Some(open) = self.open.take() {
            if open.segment.bytes == 0 {
                remove(&self.stats, &open.segment);
            } else {
                self.closed.push_back(open.segment);
            }
        }
        self.publish_closed();
    }

    fn publish_closed(&self) {
        let newest = self.closed.front().map_or(u64::MAX, |s| s.last_chunk);
        self.closed_newest.store(newest, Ordering::Relaxed);
    }

    /// Hands every segment whose chunks are all below `below` (their rows
    /// are in their files), the open one included, to the cleaner.
    fn release(&mut self, below: u64) {
        if self
            .open
            .as_ref()
            .is_some_and(|o| o.segment.last_chunk < below)
        {
            self.close_open();
        }
        let n = self
            .closed
            .iter()
            .take_while(|s| s.last_chunk < below)
            .count();
        if n == 0 {
            return;
        }
        let batch: Vec<Segment> = self.closed.drain(..n).collect();
        // The cleaner ends only after this writer.
        let _ = self.cleaner.send(batch);
        self.publish_closed();
    }
}

/// A filesystem's refusal of direct I/O, at the open or at a write (an
/// alignment the disk does not take): `EINVAL`.
fn refuses_direct(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EINVAL)
}

fn remove(stats: &Stats, segment: &Segment) {
    if let Err(e) = std::fs::remove_file(&segment.path) {
        crate::log_line(&format!(
            "warning: cannot remove journal segment {}: {e}",
            segment.path.display()
        ));
    }
    stats.add(Counter::JournalSegments, 1u64.wrapping_neg());
    stats.add(Counter::JournalBytes, segment.bytes.wrapping_neg());
}
