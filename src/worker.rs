//! A worker: buffers its VMs' rows and flushes them to their files.
//!
//! Rows are formatted into a per-VM buffer as batches arrive and written out
//! with one `write` when the buffer reaches `flush_bytes` or its oldest row
//! is `flush_interval` old. Deadlines are kept in a FIFO, at most one entry
//! per VM: the interval is the same for every VM, so deadlines are pushed in
//! order and the due ones are at the front; a tick costs what is due, not a
//! scan of 100,000 buffers. A VM's entry is made when its buffer gets a row
//! and it has none; when it comes due, whatever the VM holds is written (a
//! busy VM that flushed by size meanwhile just writes early), so no row
//! waits longer than the interval and the queue never outgrows the VMs.
//!
//! A failed write keeps the rows (up to a bound) and retries at the next
//! deadline, so a full or failing disk loses nothing until the bound forces
//! it, and every loss is counted.

use std::collections::VecDeque;

// foldhash: several times faster than SipHash on a 17-byte key, and still
// randomly seeded, so spoofed source addresses cannot be chosen to collide.
use foldhash::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use hdrhistogram::Histogram;

use crate::dispatch::{Msg, Record};
use crate::stats::Stats;
use crate::store::{FileStore, Opened};
use crate::wire;

/// Per-worker settings, derived from the aggregator config.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub data_dir: PathBuf,
    pub flush_bytes: usize,
    pub flush_interval: Duration,
    pub max_open_files: usize,
    /// Bytes of rows this worker may hold before it stops taking batches.
    pub max_buffered: usize,
}

/// What a buffer flushed by age keeps. A buffer flushed because it was full
/// keeps all its capacity (its VM is busy and refills it at once, so steady
/// state allocates nothing); one flushed by age shrinks to this, so a VM
/// that was once busy does not pin `flush_bytes` for good.
const KEEP_CAPACITY: usize = 4 * wire::MAX_ROW_LEN;

/// Longest stretch of flushing before the worker looks at its channel again.
const FLUSH_SLICE: Duration = Duration::from_millis(5);

/// Messages taken from the channel between two flush slices.
const MESSAGES_PER_ROUND: usize = 64;

/// How many times `flush_bytes` a VM may hold while its writes fail.
const RETRY_BUFFERS: usize = 4;

#[derive(Default)]
struct VmBuf {
    buf: Vec<u8>,
    rows: u64,
    /// Wall-clock receive time of the oldest buffered row.
    oldest_recv_ms: u64,
    /// The VM has an entry in `due`.
    queued: bool,
    /// Worker-clock time of the last write-error log line for this VM.
    error_logged_ms: Option<u64>,
}

/// Receive-to-disk latencies of one worker, ms, recorded once per flush for
/// all its rows at the age of the oldest (an upper bound for each row).
pub type LatencyHistogram = Histogram<u64>;

pub fn new_latency_histogram() -> LatencyHistogram {
    Histogram::new_with_max(3_600_000, 3).expect("static bounds are valid")
}

pub struct Worker {
    cfg: WorkerConfig,
    store: FileStore,
    vms: HashMap<IpAddr, VmBuf>,
    due: VecDeque<(IpAddr, u64)>,
    /// Bytes in all VM buffers together.
    buffered: usize,
    stats: Arc<Stats>,
    latency: LatencyHistogram,
    start: Instant,
}

impl Worker {
    pub fn new(cfg: WorkerConfig, stats: Arc<Stats>) -> Self {
        let store = FileStore::new(cfg.data_dir.clone(), cfg.max_open_files);
        Worker {
            cfg,
            store,
            vms: HashMap::default(),
            due: VecDeque::new(),
            buffered: 0,
            stats,
            latency: new_latency_histogram(),
            start: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Serves `rx` until every sender is gone, then flushes and fsyncs all
    /// it holds and returns its latency histogram.
    pub fn run(mut self, rx: Receiver<Msg>, recycle: Sender<Vec<Record>>) -> LatencyHistogram {
        let interval_ms = self.cfg.flush_interval.as_millis() as u64;
        loop {
            // Flushing is done in slices between messages: when files are
            // slow (first creation of 100,000 files, a cold LRU), due VMs
            // wait a little longer and gather more rows per write, while
            // the channel keeps being drained.
            let backlog = self.flush_due(FLUSH_SLICE);
            let mut held_off = false;
            if self.buffered > self.cfg.max_buffered {
                // Files cannot keep up: write the oldest buffers first. If
                // memory is still over the bound (the disk is failing), take
                // a trickle of batches only, so the channel fills and the
                // receive loop counts what it cannot queue.
                self.flush_oldest(self.cfg.max_buffered / 4 * 3);
                held_off = self.buffered > self.cfg.max_buffered;
                if held_off {
                    std::thread::sleep(FLUSH_SLICE);
                }
            }
            let wait = match self.due.front() {
                _ if backlog => 0,
                Some(&(_, due)) => due.saturating_sub(self.now_ms()),
                None => interval_ms,
            };
            let first = match rx.recv_timeout(Duration::from_millis(wait)) {
                Ok(msg) => msg,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            self.handle(first, &recycle);
            // Take what is already queued before the next flush slice, so
            // ingest (cheap) keeps ahead of files (slow when many are new).
            let more = if held_off { 0 } else { MESSAGES_PER_ROUND - 1 };
            for _ in 0..more {
                match rx.try_recv() {
                    Ok(msg) => self.handle(msg, &recycle),
                    Err(_) => break,
                }
            }
        }
        self.flush_all();
        let lost: u64 = self.vms.values().map(|vm| vm.rows).sum();
        if lost > 0 {
            eprintln!("error: {lost} rows could not be written before exit");
            self.stats.dropped_write_error.fetch_add(lost, Relaxed);
        }
        if let Err(e) = self.store.sync_open() {
            eprintln!("error: fsync of data files failed: {e}");
        }
        self.latency
    }

    fn handle(&mut self, msg: Msg, recycle: &Sender<Vec<Record>>) {
        match msg {
            Msg::Batch(mut batch) => {
                self.ingest(&batch);
                batch.clear();
                // The receive loop may be gone or stocked up: then the
                // vector is simply freed.
                let _ = recycle.try_send(batch);
            }
            Msg::Reopen => {
                self.flush_all();
                let before = self.store.open_count();
                self.store.close_all();
                track_open_files(&self.stats, &self.store, before);
            }
        }
    }

    /// Appends the rows of a batch to their VMs' buffers.
    pub fn ingest(&mut self, batch: &[Record]) {
        let now = self.now_ms();
        let deadline = now + self.cfg.flush_interval.as_millis() as u64;
        for rec in batch {
            let vm = self.vms.entry(rec.ip).or_insert_with(|| {
                self.stats.vms_known.fetch_add(1, Relaxed);
                VmBuf::default()
            });
            if vm.rows == 0 {
                vm.oldest_recv_ms = rec.recv_ms;
                vm.buf.reserve(wire::MAX_ROW_LEN);
            }
            if !vm.queued {
                vm.queued = true;
                self.due.push_back((rec.ip, deadline));
            }
            let before = vm.buf.len();
            wire::push_row(&mut vm.buf, rec.recv_ms, &rec.stat);
            self.buffered += vm.buf.len() - before;
            vm.rows += 1;
            if vm.buf.len() >= self.cfg.flush_bytes {
                self.flush_vm(rec.ip, now);
            }
        }
    }

    /// Flushes the VMs whose deadline has passed, for at most `slice`;
    /// true when some are still due.
    pub fn flush_due(&mut self, slice: Duration) -> bool {
        let start = Instant::now();
        let now = self.now_ms();
        let mut flushed = 0u32;
        while let Some(&(ip, due)) = self.due.front() {
            if due > now {
                return false;
            }
            flushed += 1;
            if flushed.is_multiple_of(32) && start.elapsed() >= slice {
                return true;
            }
            self.due.pop_front();
            self.flush_entry(ip, now);
        }
        false
    }

    /// Takes a VM's `due` entry and writes what it holds.
    fn flush_entry(&mut self, ip: IpAddr, now: u64) {
        if let Some(vm) = self.vms.get_mut(&ip) {
            vm.queued = false;
            if vm.rows > 0 {
                self.flush_vm(ip, now);
            }
        }
    }

    /// Flushes the oldest buffers, due or not, until at most `target`
    /// bytes are buffered or every VM was tried once (failed writes queue
    /// their VM again, so the queue alone would not end).
    fn flush_oldest(&mut self, target: usize) {
        let now = self.now_ms();
        for _ in 0..self.due.len() {
            if self.buffered <= target {
                break;
            }
            let Some((ip, _)) = self.due.pop_front() else {
                break;
            };
            self.flush_entry(ip, now);
        }
    }

    /// Flushes every buffer (shutdown, reopen).
    pub fn flush_all(&mut self) {
        let now = self.now_ms();
        let ips: Vec<IpAddr> = self
            .vms
            .iter()
            .filter(|(_, vm)| vm.rows > 0)
            .map(|(ip, _)| *ip)
            .collect();
        for ip in ips {
            self.flush_vm(ip, now);
        }
    }

    fn flush_vm(&mut self, ip: IpAddr, now: u64) {
        let Some(vm) = self.vms.get_mut(&ip) else {
            return;
        };
        if vm.rows == 0 {
            return;
        }
        let open_before = self.store.open_count();
        let result = self.store.append(ip, &vm.buf);
        track_open_files(&self.stats, &self.store, open_before);
        match result {
            Ok(opened) => {
                if let Some(Opened::Repaired(cut)) = opened {
                    eprintln!(
                        "warning: {}: cut a torn last row ({cut} bytes) before appending",
                        self.store.path_of(ip).display()
                    );
                }
                self.stats.rows_written.fetch_add(vm.rows, Relaxed);
                self.stats
                    .bytes_written
                    .fetch_add(vm.buf.len() as u64, Relaxed);
                self.buffered -= vm.buf.len();
                let age = crate::unix_ms().saturating_sub(vm.oldest_recv_ms);
                self.latency.saturating_record_n(age, vm.rows);
                vm.rows = 0;
                let full = vm.buf.len() >= self.cfg.flush_bytes;
                vm.buf.clear();
                if !full {
                    vm.buf.shrink_to(KEEP_CAPACITY);
                }
            }
            Err(err) => {
                self.stats.write_errors.fetch_add(1, Relaxed);
                let interval_ms = self.cfg.flush_interval.as_millis() as u64;
                let quiet = vm
                    .error_logged_ms
                    .is_some_and(|t| now < t + interval_ms.max(1000));
                if !quiet {
                    eprintln!("error: {err} (rows kept, will retry)");
                    vm.error_logged_ms = Some(now);
                }
                // Rows that reached the file whole are done; keep the rest.
                let done = vm.buf[..err.written]
                    .iter()
                    .rposition(|b| *b == b'\n')
                    .map_or(0, |p| p + 1);
                let written_rows = count_rows(&vm.buf[..done]);
                vm.buf.drain(..done);
                self.buffered -= done;
                vm.rows -= written_rows;
                self.stats.rows_written.fetch_add(written_rows, Relaxed);
                self.stats.bytes_written.fetch_add(done as u64, Relaxed);
                let cap = RETRY_BUFFERS * self.cfg.flush_bytes;
                if vm.buf.len() > cap {
                    // Drop the oldest whole rows until the rest fits.
                    let excess = vm.buf.len() - cap;
                    let cut = vm.buf[excess..]
                        .iter()
                        .position(|b| *b == b'\n')
                        .map_or(vm.buf.len(), |p| excess + p + 1);
                    let dropped = count_rows(&vm.buf[..cut]);
                    vm.buf.drain(..cut);
                    self.buffered -= cut;
                    vm.rows -= dropped;
                    self.stats.dropped_write_error.fetch_add(dropped, Relaxed);
                }
                if vm.rows > 0 && !vm.queued {
                    vm.queued = true;
                    self.due.push_back((ip, now + interval_ms));
                }
            }
        }
    }
}

/// Each worker adds its own change, so the shared gauge is the sum.
fn track_open_files(stats: &Stats, store: &FileStore, before: usize) {
    let after = store.open_count() as u64;
    stats
        .files_open
        .fetch_add(after.wrapping_sub(before as u64), Relaxed);
}

fn count_rows(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|b| **b == b'\n').count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Stat;
    use std::path::Path;

    fn worker(dir: &Path, flush_bytes: usize, interval_ms: u64) -> Worker {
        let cfg = WorkerConfig {
            data_dir: dir.to_path_buf(),
            flush_bytes,
            flush_interval: Duration::from_millis(interval_ms),
            max_open_files: 8,
            max_buffered: 1 << 20,
        };
        Worker::new(cfg, Arc::new(Stats::default()))
    }

    fn records(ip: &str, seqs: std::ops::Range<u64>) -> Vec<Record> {
        let ip: IpAddr = ip.parse().unwrap();
        seqs.map(|seq| Record {
            ip,
            recv_ms: 1_000 + seq,
            stat: Stat {
                seq,
                interval_s: 60,
                vcpus: 1,
                ..Stat::default()
            },
        })
        .collect()
    }

    fn rows_in(path: &Path) -> usize {
        std::fs::read_to_string(path).map_or(0, |t| t.lines().count().saturating_sub(1))
    }

    #[test]
    fn a_full_buffer_is_written_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = worker(dir.path(), 256, 60_000);
        w.ingest(&records("127.5.0.1", 0..3));
        // Three rows of ~40 bytes reach 256 bytes only with more.
        assert_eq!(rows_in(&dir.path().join("127.5.0.1.csv")), 0);
        w.ingest(&records("127.5.0.1", 3..8));
        assert!(rows_in(&dir.path().join("127.5.0.1.csv")) >= 6);
        assert_eq!(w.stats.vms_known.load(Relaxed), 1);
    }

    #[test]
    fn an_old_buffer_is_written_when_due_and_not_before() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = worker(dir.path(), 1 << 20, 30);
        w.ingest(&records("127.5.0.2", 0..5));
        assert!(!w.flush_due(FLUSH_SLICE));
        assert_eq!(rows_in(&dir.path().join("127.5.0.2.csv")), 0);
        std::thread::sleep(Duration::from_millis(40));
        w.flush_due(FLUSH_SLICE);
        assert_eq!(rows_in(&dir.path().join("127.5.0.2.csv")), 5);
        assert_eq!(w.stats.rows_written.load(Relaxed), 5);
        assert_eq!(w.buffered, 0);
        assert!(w.latency.len() == 5);
    }

    #[test]
    fn failed_writes_keep_rows_and_retry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("127.5.0.3.csv");
        // Every write to /dev/full fails with ENOSPC: a disk that is full.
        std::os::unix::fs::symlink("/dev/full", &path).unwrap();
        let mut w = worker(dir.path(), 1 << 20, 10);
        w.ingest(&records("127.5.0.3", 0..4));
        w.flush_all();
        assert_eq!(w.stats.write_errors.load(Relaxed), 1);
        assert_eq!(w.stats.rows_written.load(Relaxed), 0);
        assert_eq!(w.vms[&"127.5.0.3".parse().unwrap()].rows, 4);
        // The disk is back.
        std::fs::remove_file(&path).unwrap();
        std::thread::sleep(Duration::from_millis(15));
        w.flush_due(FLUSH_SLICE);
        assert_eq!(rows_in(&path), 4);
        assert_eq!(w.stats.rows_written.load(Relaxed), 4);
        assert_eq!(w.stats.dropped_write_error.load(Relaxed), 0);
    }

    #[test]
    fn the_retry_buffer_is_bounded_and_drops_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("127.5.0.4.csv");
        std::os::unix::fs::symlink("/dev/full", &path).unwrap();
        let mut w = worker(dir.path(), 256, 60_000);
        w.ingest(&records("127.5.0.4", 0..100));
        let held = w.vms[&"127.5.0.4".parse().unwrap()].rows;
        let dropped = w.stats.dropped_write_error.load(Relaxed);
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
                tx.send(Msg::Batch(records(&ip, round * 10..round * 10 + 10)))
                    .unwrap();
            }
        }
        drop(tx);
        w.run(rx, rtx);
        assert!(stats.write_errors.load(Relaxed) > 0);
        assert_eq!(stats.rows_written.load(Relaxed), 0);
        // Every row is accounted for as lost to the failing disk.
        assert_eq!(stats.dropped_write_error.load(Relaxed), 150);
    }

    #[test]
    fn run_flushes_everything_when_the_channel_closes() {
        let dir = tempfile::tempdir().unwrap();
        let w = worker(dir.path(), 1 << 20, 60_000);
        let stats = Arc::clone(&w.stats);
        let (tx, rx) = crossbeam_channel::bounded(4);
        let (rtx, rrx) = crossbeam_channel::bounded(4);
        tx.send(Msg::Batch(records("127.5.0.5", 0..10))).unwrap();
        tx.send(Msg::Reopen).unwrap();
        tx.send(Msg::Batch(records("127.5.0.6", 0..7))).unwrap();
        drop(tx);
        let latency = w.run(rx, rtx);
        assert_eq!(latency.len(), 17);
        assert_eq!(rows_in(&dir.path().join("127.5.0.5.csv")), 10);
        assert_eq!(rows_in(&dir.path().join("127.5.0.6.csv")), 7);
        assert_eq!(stats.rows_written.load(Relaxed), 17);
        // Emptied batches went back for reuse.
        assert_eq!(rrx.len(), 2);
        assert!(rrx.try_recv().unwrap().is_empty());
    }
}
