//! A worker: journals its VMs' rows and writes them to their files in
//! batches.
//!
//! Rows are formatted into a per-VM [`RowBuf`] as batches arrive and copied
//! into the worker's [`Journal`], which makes them durable every
//! `--flush-interval` with one write and one sync for all VMs. A VM's rows
//! go to its file with one `write` when the buffer reaches `flush_bytes` or
//! its oldest row has waited the file delay, but never before the journal
//! holds them durably: that order is what lets a restart replay the journal
//! exactly once (see [`crate::journal`]). Deadlines live in [`Deadlines`],
//! at most one entry per VM: made when a buffer gets a row and has none;
//! when it comes due, whatever the VM holds durably is written, so the
//! queue never outgrows the VMs. A VM none of whose due rows were durable
//! yet (the journal's sync was slow) waits a flush interval in a second
//! queue, not a whole file delay more.
//!
//! The file delay is `--file-interval`. With `--max-flush-delay` above it,
//! a worker whose file writes fall behind (a million VMs, each reopening
//! its file per write) doubles its delay, up to that bound, so each open
//! carries more rows; once it keeps up, the delay relaxes back. Either way
//! the journal, not the delay, bounds what a crash loses.
//!
//! A failed write keeps the rows (up to a bound) and retries at the next
//! deadline, so a full or failing disk loses nothing until the bound forces
//! it, and every loss is counted and named at exit ([`WorkerOutcome`]).

mod deadlines;
mod rows;

pub use deadlines::{Deadlines, WorkerMs};
pub use rows::{RowBuf, Taken};

use std::collections::BTreeMap;
use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
// foldhash: several times faster than SipHash on a 17-byte key, and still
// randomly seeded, so spoofed source addresses cannot be chosen to collide.
use foldhash::HashMap;

use crate::auth::Verifier;
use crate::dispatch::{Batch, ReopenSignal};
use crate::journal::{self, Journal};
use crate::stats::{Counter, Stats};
use crate::store::{AppendError, FileStore, Opened};
use crate::wire::{self, Reject};

/// Per-worker settings, derived from the aggregator config.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Which worker: names its journal segments.
    pub id: usize,
    pub data_dir: PathBuf,
    /// Permissions of new VM files.
    pub file_mode: u32,
    pub flush_bytes: usize,
    /// How often the journal is written and synced.
    pub flush_interval: Duration,
    /// How long a VM's rows wait for their file.
    pub file_interval: Duration,
    /// Longest the file delay may stretch to under pressure (at least
    /// `file_interval`; equal means never stretch).
    pub max_flush_delay: Duration,
    /// Where and how the journal is written.
    pub journal: journal::Settings,
    pub max_open_files: usize,
    /// Bytes of rows this worker may hold before it stops taking batches.
    pub max_buffered: usize,
}

/// Longest stretch of flushing before the worker looks at its channel again.
const FLUSH_SLICE: Duration = Duration::from_millis(5);

/// Batches taken from the channel between two flush slices.
const BATCHES_PER_ROUND: usize = 64;

/// How many times `flush_bytes` a VM may hold while its writes fail.
const RETRY_BUFFERS: usize = 4;

/// How often, at most, the worker looks for the oldest chunk its VMs still
/// hold, so the journal can drop the segments before it (a scan of every
/// VM: cheap once a second, wasteful per batch).
const RELEASE_EVERY_MS: u64 = 1_000;

/// Longest sleep with nothing due: how soon a SIGHUP reopen is noticed.
const IDLE_WAIT: Duration = Duration::from_millis(100);

/// How often the flush delay is stretched or relaxed: long enough to see
/// whether the last change helped, short enough to follow a load step.
const ADAPT_EVERY_MS: u64 = 100;

/// At most one write-error line per worker per this many ms; the ones held
/// back are counted in the next line (a dead disk under 100,000 VMs must not
/// turn into 100,000 log lines a second).
const ERROR_LOG_EVERY: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Vm {
    rows: RowBuf,
    /// The journal chunk of the newest rows held.
    epoch: u64,
    /// Bytes at the front of `rows` from chunks before `epoch`.
    split: usize,
    /// The journal chunk of the newest row before `split`: when it is
    /// durable and `epoch` is not, those rows may go to the file already
    /// (a VM every 10 s has its last row in the open chunk one time in
    /// twenty, and its older rows then waited a whole file delay more).
    before_split: u64,
    /// The journal chunk of the oldest row held.
    oldest_chunk: u64,
    /// The VM has an entry in `due`.
    queued: bool,
    /// Its file was found to be something other than a regular file, and
    /// that was logged (once).
    refused: bool,
}

impl Vm {
    /// Notes that its next row goes into journal chunk `chunk`.
    fn enter_chunk(&mut self, chunk: u64) {
        if self.rows.is_empty() {
            self.oldest_chunk = chunk;
            self.epoch = chunk;
            self.split = 0;
        } else if self.epoch != chunk {
            self.split = self.rows.len();
            self.before_split = self.epoch;
            self.epoch = chunk;
        }
    }

    /// How many bytes at the front of its rows are in journal chunks below
    /// `durable` (synced).
    fn durable_len(&self, durable: u64) -> usize {
        if self.epoch < durable {
            self.rows.len()
        } else if self.before_split < durable {
            self.split
        } else {
            0
        }
    }
}

/// What a worker hands back when its channel closes.
#[derive(Debug)]
pub struct WorkerOutcome {
    /// Accepted rows given up, by VM (its retry bound overflowed while its
    /// file failed, or the file still failed at exit).
    pub lost: BTreeMap<IpAddr, u64>,
    /// Its journal, syncing the files and then emptying.
    pub journal: journal::Emptying,
}

/// The flush delay in force and the evidence for changing it.
struct FlushDelay {
    ms: u64,
    min_ms: u64,
    max_ms: u64,
    /// Flushing fell behind since the last adjustment.
    behind: bool,
    adjusted: WorkerMs,
}

impl FlushDelay {
    fn new(min: Duration, max: Duration) -> Self {
        let min_ms = min.as_millis() as u64;
        FlushDelay {
            ms: min_ms,
            min_ms,
            max_ms: (max.as_millis() as u64).max(min_ms),
            behind: false,
            adjusted: WorkerMs(0),
        }
    }

    /// Doubles the delay after a period in which flushing fell behind,
    /// takes a quarter off after one in which it kept up.
    fn observe(&mut self, behind: bool, now: WorkerMs) {
        self.behind |= behind;
        if self.max_ms == self.min_ms || self.adjusted.ms_until(now) < ADAPT_EVERY_MS {
            return;
        }
        self.ms = if self.behind {
            self.ms.saturating_mul(2).min(self.max_ms)
        } else {
            (self.ms - self.ms / 4).max(self.min_ms)
        };
        self.behind = false;
        self.adjusted = now;
    }
}

pub struct Worker {
    cfg: WorkerConfig,
    store: FileStore,
    vms: HashMap<IpAddr, Vm>,
    due: Deadlines,
    /// The row being formatted, before it goes to its VM's buffer and the
    /// journal (reused: no allocation per datagram).
    row: Vec<u8>,
    /// VMs whose due rows the journal had yet to sync, retried a flush
    /// interval later (their own FIFO: in `due` they would wait behind
    /// entries a whole file delay out).
    unsynced: Deadlines,
    /// Bytes in all VM buffers together.
    buffered: usize,
    delay: FlushDelay,
    stats: Arc<Stats>,
    lost: BTreeMap<IpAddr, u64>,
    reopen: ReopenSignal,
    reopen_seen: u64,
    /// Version 2's checks, and whether version 1 is taken.
    verifier: Verifier,
    journal: Journal,
    /// When the open journal chunk is sealed next.
    next_seal: WorkerMs,
    released: WorkerMs,
    errors: crate::RateLimited,
    start: Instant,
}

impl Worker {
    /// A worker with its journal thread started.
    pub fn new(cfg: WorkerConfig, stats: Arc<Stats>, reopen: ReopenSignal) -> io::Result<Self> {
        let store = FileStore::new(cfg.data_dir.clone(), cfg.max_open_files, cfg.file_mode);
        let journal = Journal::start(cfg.id, cfg.journal.clone(), Arc::clone(&stats))?;
        Ok(Worker {
            verifier: Verifier::new(None, false, u64::MAX),
            delay: FlushDelay::new(cfg.file_interval, cfg.max_flush_delay),
            journal,
            next_seal: WorkerMs(seal_every_ms(cfg.flush_interval)),
            released: WorkerMs(0),
            reopen_seen: reopen.generation(),
            reopen,
            cfg,
            store,
            vms: HashMap::default(),
            due: Deadlines::default(),
            unsynced: Deadlines::default(),
            row: Vec::with_capacity(wire::MAX_ROW_LEN),
            buffered: 0,
            stats,
            lost: BTreeMap::new(),
            errors: crate::RateLimited::new(ERROR_LOG_EVERY),
            start: Instant::now(),
        })
    }

    fn now(&self) -> WorkerMs {
        WorkerMs(self.start.elapsed().as_millis() as u64)
    }

    /// Serves `rx` until every sender is gone, then writes all it holds to
    /// the files and says what it could not write.
    pub fn run(mut self, rx: Receiver<Batch>, recycle: Sender<Batch>) -> WorkerOutcome {
        loop {
            self.reopen_if_asked();
            self.seal_if_due();
            // Flushing is done in slices between batches: when files are
            // slow (first creation of 100,000 files, a cold LRU), due VMs
            // wait a little longer and gather more rows per write, while
            // the channel keeps being drained.
            let backlog = self.flush_due(FLUSH_SLICE);
            let now = self.now();
            self.delay.observe(backlog, now);
            let held_off = self.relieve_memory();
            let next = self
                .next_due()
                .map_or(self.next_seal, |at| at.min(self.next_seal));
            let wait = match backlog {
                true => Duration::ZERO,
                false => Duration::from_millis(now.ms_until(next)).min(IDLE_WAIT),
            };
            match rx.recv_timeout(wait) {
                Ok(batch) => self.take(batch, &recycle),
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            }
            // Take what is already queued before the next flush slice, so
            // ingest (cheap) keeps ahead of files (slow when many are new).
            let more = if held_off { 0 } else { BATCHES_PER_ROUND - 1 };
            for _ in 0..more {
                match rx.try_recv() {
                    Ok(batch) => self.take(batch, &recycle),
                    Err(_) => break,
                }
            }
        }
        self.finish()
    }

    /// Makes what is held durable, writes it to the files, counts what
    /// could not be, and lets the journal empty itself of all that is in
    /// the files (its cleaner syncs the filesystem first: one `syncfs`
    /// covers every file, where an fsync per open file cost 20,000 device
    /// flushes, about 2.5 s, at a million VMs, and missed the closed ones).
    fn finish(mut self) -> WorkerOutcome {
        self.journal.seal_and_wait();
        self.flush_all();
        self.errors.flush(|held| {
            format!("error: {held} more write errors not shown (at most one line a second)")
        });
        for (ip, vm) in &self.vms {
            if !vm.rows.is_empty() {
                *self.lost.entry(*ip).or_default() += vm.rows.rows();
                self.stats.add(Counter::DroppedWriteError, vm.rows.rows());
            }
        }
        let keep = self.oldest_chunk_held();
        let journal = self.journal.finish(keep);
        WorkerOutcome {
            lost: self.lost,
            journal,
        }
    }

    /// Seals the journal's chunk twice a flush interval, and lets it drop
    /// the segments whose rows are all in their files (the run loop's, and
    /// a benchmark's, call between batches).
    pub fn seal_if_due(&mut self) {
        let now = self.now();
        if now < self.next_seal {
            return;
        }
        self.journal.seal();
        self.next_seal = now.plus_ms(seal_every_ms(self.cfg.flush_interval));
        if self.journal.has_closed() && self.released.ms_until(now) >= RELEASE_EVERY_MS {
            self.released = now;
            self.journal.release(self.oldest_chunk_held());
        }
    }

    /// The oldest journal chunk a VM still holds rows of (every row of the
    /// chunks before it is in its file), or the open chunk.
    fn oldest_chunk_held(&self) -> u64 {
        self.vms
            .values()
            .filter(|vm| !vm.rows.is_empty())
            .map(|vm| vm.oldest_chunk)
            .min()
            .unwrap_or(self.journal.chunk())
    }

    fn take(&mut self, mut batch: Batch, recycle: &Sender<Batch>) {
        self.ingest(&batch);
        batch.clear();
        // The receive loop may be gone or stocked up: then the vector is
        // simply freed.
        let _ = recycle.try_send(batch);
    }

    /// Closes every file once per SIGHUP, after writing what is held to
    /// the files as they were.
    fn reopen_if_asked(&mut self) {
        let generation = self.reopen.generation();
        if generation == self.reopen_seen {
            return;
        }
        self.reopen_seen = generation;
        // Everything held goes to the files as they were, so all of it
        // must be durable first.
        self.journal.seal_and_wait();
        self.flush_all();
        let before = self.store.open_count();
        self.store.close_all();
        track_open_files(&self.stats, &self.store, before);
    }

    /// When rows pile up beyond the memory bound (files cannot keep up),
    /// writes the oldest buffers first. If memory is still over the bound
    /// (the disk is failing), pauses and returns true: the caller then
    /// takes a trickle of batches only, so the channel fills and the
    /// receive loop counts what it cannot queue.
    fn relieve_memory(&mut self) -> bool {
        if self.buffered <= self.cfg.max_buffered {
            return false;
        }
        self.flush_oldest(self.cfg.max_buffered / 4 * 3);
        let held_off = self.buffered > self.cfg.max_buffered;
        if held_off {
            std::thread::sleep(FLUSH_SLICE);
        }
        held_off
    }

    /// Appends the rows of a batch to their VMs' buffers.
    /// Verifies datagrams with `verifier` (`--auth-keys`, `--require-auth`).
    pub fn verifying(mut self, verifier: Verifier) -> Self {
        self.verifier = verifier;
        self
    }

    pub fn ingest(&mut self, batch: &[crate::dispatch::Record]) {
        let now = self.now();
        let deadline = now.plus_ms(self.delay.ms);
        let mut refused = [0u64; Reject::ALL.len()];
        let chunk = self.journal.chunk();
        for rec in batch {
            let verified =
                match self
                    .verifier
                    .check(rec.ip, rec.recv_ms.0, &rec.stat, rec.signed.as_ref())
                {
                    Ok(verified) => verified,
                    Err(reason) => {
                        refused[reason.index()] += 1;
                        continue;
                    }
                };
            let vm = self.vms.entry(rec.ip).or_insert_with(|| {
                self.stats.add(Counter::VmsKnown, 1);
                Vm::default()
            });
            if !vm.queued {
                vm.queued = true;
                self.due.push(rec.ip, deadline);
            }
            vm.enter_chunk(chunk);
            self.row.clear();
            wire::push_row_of(&mut self.row, rec.recv_ms.0, &rec.stat, verified);
            vm.rows.push(rec.recv_ms, &self.row);
            self.buffered += self.row.len();
            self.journal.push(rec.ip, &self.row, rec.recv_ms);
            if vm.rows.len() >= self.cfg.flush_bytes {
                self.flush_vm(rec.ip, now);
            }
        }
        let refused_n: u64 = refused.iter().sum();
        self.stats
            .add(Counter::Accepted, batch.len() as u64 - refused_n);
        for (reason, n) in Reject::ALL.iter().zip(refused) {
            if n > 0 {
                self.stats.refuse(*reason, n);
            }
        }
    }

    /// Flushes the VMs whose deadline has passed, for at most `slice`;
    /// true when some are still due.
    pub fn flush_due(&mut self, slice: Duration) -> bool {
        let start = Instant::now();
        let now = self.now();
        let mut flushed = 0u32;
        loop {
            flushed += 1;
            if flushed.is_multiple_of(32) && start.elapsed() >= slice {
                return self.next_due().is_some_and(|at| at <= now);
            }
            let Some(ip) = self.due.pop_due(now).or_else(|| self.unsynced.pop_due(now)) else {
                return false;
            };
            self.flush_entry(ip, now);
        }
    }

    /// The earliest deadline in either queue.
    fn next_due(&self) -> Option<WorkerMs> {
        self.due
            .next()
            .into_iter()
            .chain(self.unsynced.next())
            .min()
    }

    /// Takes a VM's `due` entry and writes what it holds.
    fn flush_entry(&mut self, ip: IpAddr, now: WorkerMs) {
        if let Some(vm) = self.vms.get_mut(&ip) {
            vm.queued = false;
            self.flush_vm(ip, now);
        }
    }

    /// Flushes the oldest buffers, due or not, until at most `target`
    /// bytes are buffered or every VM was tried once (failed writes queue
    /// their VM again, so the queue alone would not end).
    fn flush_oldest(&mut self, target: usize) {
        let now = self.now();
        for _ in 0..self.due.len() {
            if self.buffered <= target {
                break;
            }
            let Some(ip) = self.due.pop_front() else {
                break;
            };
            self.flush_entry(ip, now);
        }
    }

    /// Flushes every buffer (shutdown, reopen), in the order of the files'
    /// inodes: the kernel writes dirty files back in the order they were
    /// dirtied, and files made one after another lie one after another, so
    /// a million appends in inode order reach the disk as nearly sequential
    /// writes, where the map's order made them random (a million appends
    /// and a sync: 7.8 to 8.1 s in inode order, 13.8 to 14.0 s shuffled;
    /// `benches/stop_order.rs`).
    pub fn flush_all(&mut self) {
        let now = self.now();
        for ip in self.held_in_inode_order() {
            self.flush_vm(ip, now);
        }
    }

    /// The VMs holding rows, by their files' inodes; those whose file was
    /// never opened (its inode unknown) last, by address.
    fn held_in_inode_order(&self) -> Vec<IpAddr> {
        let mut held: Vec<(u64, IpAddr)> = self
            .vms
            .iter()
            .filter(|(_, vm)| !vm.rows.is_empty())
            .map(|(ip, _)| (self.store.inode_of(*ip).unwrap_or(u64::MAX), *ip))
            .collect();
        held.sort_unstable();
        held.into_iter().map(|(_, ip)| ip).collect()
    }

    /// Writes what a VM holds durably in the journal. Whatever reached the
    /// file is accounted as written; after a failure the rest is kept under
    /// the retry bound (the oldest rows beyond it are dropped, counted) and
    /// retried one file delay later, as are rows the journal has yet to
    /// make durable.
    fn flush_vm(&mut self, ip: IpAddr, now: WorkerMs) {
        let Some(vm) = self.vms.get_mut(&ip) else {
            return;
        };
        if vm.rows.is_empty() {
            return;
        }
        let ready = vm.durable_len(self.journal.durable());
        let full = vm.rows.len() >= self.cfg.flush_bytes;
        let mut failed = false;
        if ready > 0 {
            let oldest = vm.rows.oldest();
            let open_before = self.store.open_count();
            let result = self.store.append(ip, &vm.rows.bytes()[..ready]);
            track_open_files(&self.stats, &self.store, open_before);
            let written = match result {
                Ok(opened) => {
                    if let Some(Opened::Repaired(cut)) = opened {
                        crate::log_line(&format!(
                            "warning: {}: cut a torn last row ({cut} bytes) before appending",
                            self.store.path_of(ip).display()
                        ));
                    }
                    ready
                }
                Err(err) => {
                    failed = true;
                    write_failed(&self.stats, &mut self.errors, &mut vm.refused, &err)
                }
            };
            let done = vm.rows.consume(written);
            vm.split = vm.split.saturating_sub(done.bytes);
            self.buffered -= done.bytes;
            self.stats.add(Counter::RowsWritten, done.rows);
            self.stats.add(Counter::BytesWritten, done.bytes as u64);
            if done.rows > 0 {
                let age = crate::unix_ms().saturating_sub(oldest.0);
                self.stats.file_latency.observe(age, done.rows);
                if !failed {
                    // What is left came in the newest chunk.
                    vm.oldest_chunk = vm.epoch;
                }
            }
        }
        if vm.rows.is_empty() {
            vm.refused = false;
            // A buffer flushed because it was full keeps its capacity (its
            // VM is busy and refills it at once); one flushed by age is
            // freed: its VM sends rarely, and a million such VMs would
            // otherwise each pin a buffer between their file writes.
            if !full {
                vm.rows.free();
            }
            return;
        }
        if failed {
            let dropped = vm.rows.trim_oldest(RETRY_BUFFERS * self.cfg.flush_bytes);
            vm.split = vm.split.saturating_sub(dropped.bytes);
            self.buffered -= dropped.bytes;
            if dropped.rows > 0 {
                self.stats.add(Counter::DroppedWriteError, dropped.rows);
                *self.lost.entry(ip).or_default() += dropped.rows;
            }
        }
        if !vm.queued {
            vm.queued = true;
            // Rows kept only because the journal had yet to sync them are
            // as old as the delay already: they go once it has.
            if ready == 0 && !failed {
                let wait = self.cfg.flush_interval.as_millis() as u64;
                self.unsynced.push(ip, now.plus_ms(wait));
            } else {
                self.due.push(ip, now.plus_ms(self.delay.ms));
            }
        }
    }
}

/// How often the journal's chunk is sealed: half the flush interval, so a
/// row waits at most that for the seal and has the other half for the
/// write and sync, and is durable within `--flush-interval`.
fn seal_every_ms(flush_interval: Duration) -> u64 {
    (flush_interval.as_millis() as u64 / 2).max(1)
}

/// A failed append: counted, and said once for a file that is refused
/// (not a regular file), at most once a second for other errors. Returns
/// the bytes that did reach the file.
fn write_failed(
    stats: &Stats,
    errors: &mut crate::RateLimited,
    refused: &mut bool,
    err: &AppendError,
) -> usize {
    stats.add(Counter::WriteErrors, 1);
    if err.is_refusal() {
        if !*refused {
            *refused = true;
            stats.add(Counter::FilesRefused, 1);
            crate::log_line(&format!(
                "error: {err} (rows kept in memory, never written elsewhere)"
            ));
        }
    } else {
        errors.log(|held| {
            format!(
                "error: {err} (rows kept, will retry){}",
                crate::held_back_note(held)
            )
        });
    }
    err.written
}

/// Each worker adds its own change, so the shared gauge is the sum.
fn track_open_files(stats: &Stats, store: &FileStore, before: usize) {
    let after = store.open_count() as u64;
    stats.add(Counter::FilesOpen, after.wrapping_sub(before as u64));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::{Record, RecvMs};
    use crate::wire::Stat;
    use std::path::Path;

    /// A worker whose files are written `interval_ms` after a row came (or
    /// at `flush_bytes`), its journal synced each ms.
    fn worker(dir: &Path, flush_bytes: usize, interval_ms: u64) -> Worker {
        let journal_dir = journal::dir_of(dir);
        std::fs::create_dir_all(&journal_dir).unwrap();
        let cfg = WorkerConfig {
            id: 0,
            data_dir: dir.to_path_buf(),
            file_mode: crate::store::DEFAULT_FILE_MODE,
            flush_bytes,
            flush_interval: Duration::from_millis(1),
            file_interval: Duration::from_millis(interval_ms),
            max_flush_delay: Duration::from_millis(interval_ms),
            journal: journal::Settings {
                dir: journal_dir,
                file_mode: crate::store::DEFAULT_FILE_MODE,
                sync: true,
                segment_bytes: journal::SEGMENT_BYTES,
            },
            max_open_files: 8,
            max_buffered: 1 << 20,
        };
        Worker::new(cfg, Arc::new(Stats::default()), ReopenSignal::default()).unwrap()
    }

    /// Ingests `rows` and makes them durable, as a flush interval would.
    fn ingest_durably(w: &mut Worker, rows: &[Record]) {
        w.ingest(rows);
        w.journal.seal_and_wait();
    }

    fn records(ip: &str, seqs: std::ops::Range<u64>) -> Vec<Record> {
        let ip: IpAddr = ip.parse().unwrap();
        seqs.map(|seq| Record {
            ip,
            recv_ms: RecvMs(1_000 + seq),
            stat: Stat {
                seq,
                interval_s: 60,
                vcpus: 1,
                ..Stat::default()
            },
            signed: None,
        })
        .collect()
    }

    fn rows_in(path: &Path) -> usize {
        std::fs::read_to_string(path).map_or(0, |t| t.lines().count().saturating_sub(1))
    }

    #[test]
    fn a_full_buffer_is_written_at_once_but_not_before_it_is_durable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("127.5.0.1.csv");
        let mut w = worker(dir.path(), 256, 60_000);
        ingest_durably(&mut w, &records("127.5.0.1", 0..3));
        // Three rows of ~40 bytes reach 256 bytes only with more.
        assert_eq!(rows_in(&path), 0);
        w.ingest(&records("127.5.0.1", 3..8));
        // Full, but rows 3..8 are not in the journal yet: only 0..3 go.
        assert_eq!(rows_in(&path), 3);
        w.journal.seal_and_wait();
        w.ingest(&records("127.5.0.1", 8..20));
        assert_eq!(rows_in(&path), 8);
        assert_eq!(w.stats.get(Counter::VmsKnown), 1);
        // The journal holds the durable rows 0..8, each after its address
        // (its chunks padded to whole blocks if written directly), and
        // its gauge is its size on disk.
        let file_rows = std::fs::metadata(&path).unwrap().len() - wire::CSV_HEADER.len() as u64;
        let prefix = "127.5.0.1 ".len() as u64;
        let on_disk: u64 = std::fs::read_dir(crate::journal::dir_of(dir.path()))
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert_eq!(w.stats.get(Counter::JournalBytes), on_disk);
        assert!(on_disk >= file_rows + 8 * prefix, "{on_disk}");
    }

    #[test]
    fn a_stop_appends_in_the_files_inode_order_new_files_last() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        // More VMs than open files (8), so most marks are of closed files.
        let mut w = worker(dir.path(), 1 << 20, 60_000);
        let ips: Vec<String> = (1..=40).map(|n| format!("127.5.1.{n}")).collect();
        for ip in &ips {
            ingest_durably(&mut w, &records(ip, 0..1));
        }
        w.flush_all();
        for ip in ips
            .iter()
            .chain([&"127.5.2.2".to_string(), &"127.5.2.1".to_string()])
        {
            ingest_durably(&mut w, &records(ip, 1..2));
        }
        let mut expected: Vec<(u64, IpAddr)> = ips
            .iter()
            .map(|ip| {
                let path = dir.path().join(format!("{ip}.csv"));
                (std::fs::metadata(path).unwrap().ino(), ip.parse().unwrap())
            })
            .collect();
        expected.sort_unstable();
        let mut expected: Vec<IpAddr> = expected.into_iter().map(|(_, ip)| ip).collect();
        expected.extend(["127.5.2.1", "127.5.2.2"].map(|ip| ip.parse::<IpAddr>().unwrap()));
        assert_eq!(w.held_in_inode_order(), expected);
        w.flush_all();
        assert_eq!(rows_in(&dir.path().join("127.5.1.40.csv")), 2);
        assert_eq!(rows_in(&dir.path().join("127.5.2.1.csv")), 1);
    }

    #[test]
    fn an_old_buffer_is_written_when_due_and_not_before() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = worker(dir.path(), 1 << 20, 30);
        ingest_durably(&mut w, &records("127.5.0.2", 0..5));
        assert!(!w.flush_due(FLUSH_SLICE));
        assert_eq!(rows_in(&dir.path().join("127.5.0.2.csv")), 0);
        std::thread::sleep(Duration::from_millis(40));
        w.flush_due(FLUSH_SLICE);
        assert_eq!(rows_in(&dir.path().join("127.5.0.2.csv")), 5);
        assert_eq!(w.stats.get(Counter::RowsWritten), 5);
        assert_eq!(w.buffered, 0);
        assert!(w.stats.latency.snapshot().count == 5);
    }

    #[test]
    fn the_rows_before_the_split_are_durable_once_their_chunk_is() {
        let mut vm = Vm::default();
        for (seq, chunk) in [(0, 3), (1, 3), (2, 5)] {
            vm.enter_chunk(chunk);
            let mut row = Vec::new();
            wire::push_row_of(&mut row, seq, &Stat::default(), false);
            vm.rows.push(RecvMs(seq), &row);
        }
        assert_eq!(vm.durable_len(3), 0, "chunk 3 not synced yet");
        // Chunk 4 is synced, 5 (the newest row's) is not: the two older
        // rows may go.
        assert_eq!(vm.durable_len(4), vm.split);
        assert_eq!(vm.durable_len(5), vm.split);
        assert_eq!(vm.durable_len(6), vm.rows.len());
    }

    #[test]
    fn a_due_buffer_writes_its_durable_rows_and_retries_the_rest_soon() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = worker(dir.path(), 1 << 20, 300);
        ingest_durably(&mut w, &records("127.5.0.8", 0..3));
        // The newest row is in the open chunk, the older ones are synced.
        w.ingest(&records("127.5.0.8", 3..4));
        // Another VM has nothing synced at all.
        w.ingest(&records("127.5.0.9", 0..2));
        std::thread::sleep(Duration::from_millis(350));
        w.flush_due(FLUSH_SLICE);
        assert_eq!(rows_in(&dir.path().join("127.5.0.8.csv")), 3);
        assert_eq!(rows_in(&dir.path().join("127.5.0.9.csv")), 0);
        // Once synced, the held rows go within a flush interval (1 ms
        // here), not a whole file delay (300 ms) later.
        w.journal.seal_and_wait();
        std::thread::sleep(Duration::from_millis(5));
        w.flush_due(FLUSH_SLICE);
        assert_eq!(rows_in(&dir.path().join("127.5.0.9.csv")), 2);
        assert_eq!(rows_in(&dir.path().join("127.5.0.8.csv")), 3);
    }

    #[test]
    fn failed_writes_keep_rows_and_retry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("127.5.0.3.csv");
        // Every write to /dev/full fails with ENOSPC: a disk that is full.
        std::os::unix::fs::symlink("/dev/full", &path).unwrap();
        let mut w = worker(dir.path(), 1 << 20, 10);
        ingest_durably(&mut w, &records("127.5.0.3", 0..4));
        w.flush_all();
        assert_eq!(w.stats.get(Counter::WriteErrors), 1);
        assert_eq!(w.stats.get(Counter::RowsWritten), 0);
        assert_eq!(w.vms[&"127.5.0.3".parse().unwrap()].rows.rows(), 4);
        // The disk is back.
        std::fs::remove_file(&path).unwrap();
        std::thread::sleep(Duration::from_millis(15));
        w.flush_due(FLUSH_SLICE);
        assert_eq!(rows_in(&path), 4);
        assert_eq!(w.stats.get(Counter::RowsWritten), 4);
        assert_eq!(w.stats.get(Counter::DroppedWriteError), 0);
    }

    #[test]
    fn the_retry_buffer_is_bounded_and_drops_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("127.5.0.4.csv");
        std::os::unix::fs::symlink("/dev/full", &path).unwrap();
        let mut w = worker(dir.path(), 256, 60_000);
        for tens in 0..10 {
            ingest_durably(&mut w, &records("127.5.0.4", tens * 10..tens * 10 + 10));
        }
        let held = w.vms[&"127.5.0.4".parse().unwrap()].rows.rows();
        let dropped = w.stats.get(Counter::DroppedWriteError);
        assert!(held > 0 && dropped > 0, "held {held}, dropped {dropped}");
        assert_eq!(held + dropped, 100);
        assert!(w.buffered <= RETRY_BUFFERS * 256 + wire::MAX_ROW_LEN);
        std::fs::remove_file(&path).unwrap();
        w.flush_all();
        // What was kept is the newest rows, in order.
        let text = std::fs::read_to_string(&path).unwrap();
        let seqs: Vec<u64> = text
            .lines()
            .skip(1)
            .map(|l| wire::parse_row(l).unwrap().stat.seq)
            .collect();
        assert_eq!(seqs, ((100 - held)..100).collect::<Vec<_>>());
    }

    #[test]
    fn a_dead_disk_over_the_memory_bound_neither_hangs_nor_hides_loss() {
        let dir = tempfile::tempdir().unwrap();
        for n in 1..=3 {
            let path = dir.path().join(format!("127.5.1.{n}.csv"));
            std::os::unix::fs::symlink("/dev/full", path).unwrap();
        }
        let mut w = worker(dir.path(), 256, 10);
        w.cfg.max_buffered = 1024;
        let stats = Arc::clone(&w.stats);
        let (tx, rx) = crossbeam_channel::bounded(64);
        let (rtx, _rrx) = crossbeam_channel::bounded(64);
        for n in 1..=3 {
            for round in 0..5 {
                let ip = format!("127.5.1.{n}");
                tx.send(records(&ip, round * 10..round * 10 + 10)).unwrap();
            }
        }
        drop(tx);
        let outcome = w.run(rx, rtx);
        outcome.journal.wait();
        assert!(stats.get(Counter::WriteErrors) > 0);
        assert_eq!(stats.get(Counter::RowsWritten), 0);
        // Every row is accounted for as lost, and named by VM.
        assert_eq!(stats.get(Counter::DroppedWriteError), 150);
        assert_eq!(outcome.lost.len(), 3);
        assert!(
            outcome.lost.values().all(|n| *n == 50),
            "{:?}",
            outcome.lost
        );
        // Refused files are counted once per VM, however often retried.
        assert_eq!(stats.get(Counter::FilesRefused), 3);
    }

    #[test]
    fn run_flushes_everything_when_the_channel_closes() {
        let dir = tempfile::tempdir().unwrap();
        let w = worker(dir.path(), 1 << 20, 60_000);
        let stats = Arc::clone(&w.stats);
        let (tx, rx) = crossbeam_channel::bounded(4);
        let (rtx, rrx) = crossbeam_channel::bounded(4);
        tx.send(records("127.5.0.5", 0..10)).unwrap();
        tx.send(records("127.5.0.6", 0..7)).unwrap();
        drop(tx);
        let outcome = w.run(rx, rtx);
        outcome.journal.wait();
        assert_eq!(stats.latency.snapshot().count, 17);
        assert!(outcome.lost.is_empty());
        assert_eq!(rows_in(&dir.path().join("127.5.0.5.csv")), 10);
        assert_eq!(rows_in(&dir.path().join("127.5.0.6.csv")), 7);
        assert_eq!(stats.get(Counter::RowsWritten), 17);
        // Emptied batches went back for reuse.
        assert_eq!(rrx.len(), 2);
        assert!(rrx.try_recv().unwrap().is_empty());
    }

    #[test]
    fn a_reopen_signal_is_acted_on_once_and_rotation_gets_a_header() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = worker(dir.path(), 1 << 20, 60_000);
        let signal = w.reopen.clone();
        let path = dir.path().join("127.5.0.7.csv");
        ingest_durably(&mut w, &records("127.5.0.7", 0..3));
        w.flush_all();
        std::fs::rename(&path, dir.path().join("127.5.0.7.csv.1")).unwrap();
        // Held rows go to the file they were bound for, then all close.
        ingest_durably(&mut w, &records("127.5.0.7", 3..4));
        signal.raise();
        w.reopen_if_asked();
        assert_eq!(rows_in(&dir.path().join("127.5.0.7.csv.1")), 4);
        assert_eq!(w.store.open_count(), 0);
        ingest_durably(&mut w, &records("127.5.0.7", 4..6));
        w.flush_all();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(wire::CSV_HEADER));
        assert_eq!(rows_in(&path), 2);
        // Nothing new to act on.
        w.reopen_if_asked();
        assert_eq!(w.store.open_count(), 1);
    }

    #[test]
    fn the_flush_delay_stretches_when_behind_and_relaxes_after() {
        let mut d = FlushDelay::new(Duration::from_secs(1), Duration::from_secs(5));
        d.observe(true, WorkerMs(50));
        assert_eq!(d.ms, 1000, "adjusts once per period only");
        d.observe(false, WorkerMs(100));
        assert_eq!(d.ms, 2000, "the period saw flushing fall behind");
        d.observe(true, WorkerMs(200));
        d.observe(true, WorkerMs(300));
        assert_eq!(d.ms, 5000, "never past the user's bound");
        for t in 4..40 {
            d.observe(false, WorkerMs(t * 100));
        }
        assert_eq!(d.ms, 1000, "back to the flush interval");
        let mut fixed = FlushDelay::new(Duration::from_secs(1), Duration::from_secs(1));
        fixed.observe(true, WorkerMs(1000));
        assert_eq!(fixed.ms, 1000, "no --max-flush-delay: never stretches");
    }
}
