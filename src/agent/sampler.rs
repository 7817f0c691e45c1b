//! Reads the machine once per interval and turns two readings into one
//! sample: the kernel's counters are totals since boot, the datagram wants
//! what happened during the interval.
//!
//! Counters misbehave on real machines (users of every peer agent filed
//! bugs): iowait and idle going backwards, steal jumping after a live
//! migration, devices hot-plugged or removed, an interface re-created with
//! a new ifindex, a counter reset. The rules here, for every counter:
//!
//! * a delta is never negative: a counter that went backwards restarts its
//!   baseline, and that interval counts 0 for it;
//! * a delta is never absurd: one larger than the interval could hold (CPU
//!   ticks beyond 4x the CPUs' time, bytes beyond 50 GB/s per device) is
//!   treated like a reset;
//! * a device that appears (or comes back as a new device: another ifindex
//!   or device number) starts from its first reading; one that vanishes
//!   just stops counting.
//!
//! In a container the machine-wide files are the host's (`/proc/stat`,
//! `/proc/diskstats`, `/proc/meminfo`), so they would describe the wrong
//! machine. A container is recognised by its cgroup v2 root (what the agent
//! sees at `<sys>/fs/cgroup`) having `cpu.max` or `memory.max`, which a real
//! root cgroup never has; there the figures come from the cgroup: CPU from
//! `cpu.stat` usage against the quota (or the online CPUs), memory as the
//! working set against `memory.max`, disk from `io.stat`, and network from
//! every interface but `lo` (a container's interfaces are all virtual ends
//! of its own traffic).
//!
//! Every file stays open and is read again from its start at each sample
//! (procfs and sysfs make the text anew at every read from offset 0): the
//! open, a path walk through sysfs symlinks, was a third of what a sample
//! cost. A counted interface keeps its `ifindex` file open too; when the
//! interface is deleted that file fails to read, which is how a
//! re-created interface is told from the old one. After the first reading
//! nothing here allocates: file contents go into one reused buffer, and a
//! device's name and paths are built only when the device first appears.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use super::procfs::{self, CPU_FIELDS, IDLE, IOWAIT};

/// Where the kernel's files are: `/proc` and `/sys`, or a container's view
/// of the host's, or a test's fixture tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roots {
    pub proc: PathBuf,
    pub sys: PathBuf,
}

/// A file the agent needs could not be read or made sense of.
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    #[error("cannot read {path} (check --proc-root/--sys-root): {error}")]
    Read { path: PathBuf, error: io::Error },
    #[error("{path} is malformed: {what}")]
    Malformed { path: PathBuf, what: &'static str },
}

/// What one interval comes to, in the datagram's units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sample {
    pub vcpus: u16,
    pub mem_mib: u32,
    pub cpu_pct_x100: u16,
    pub mem_pct_x100: u16,
    pub net_rx_bytes: u64,
    pub net_tx_bytes: u64,
    pub disk_read_bytes: u64,
    pub disk_write_bytes: u64,
}

/// Bytes per second one device may plausibly move (400 Gbit/s); more in an
/// interval is a counter jump, not traffic.
const MAX_DEVICE_BYTES_PER_S: u64 = 50_000_000_000;

/// `/proc/diskstats` counts 512-byte sectors whatever the device's own
/// sector size.
const SECTOR: u64 = 512;

/// Room the read buffer starts with: `/proc/stat` of a 64-CPU machine.
const BUF_START: usize = 32 << 10;

/// The longest kernel file read: far above `/proc/stat` of a machine with
/// thousands of CPUs or `/proc/net/dev` with thousands of interfaces, and
/// a bound for a file that never ends (one linked to `/dev/zero`).
const MAX_FILE: usize = 16 << 20;

/// The most `ifindex` files kept open. Past it (a host with thousands of
/// interfaces) an interface's file is opened for each reading and closed
/// again, so the agent's descriptors stay few whatever the host holds.
const MAX_OPEN_ID_FILES: usize = 64;

/// A kernel file kept open and read again from its start each time.
#[derive(Debug)]
struct KernelFile {
    path: PathBuf,
    file: Option<File>,
    /// Kept open between readings (false: opened and closed each time).
    keep: bool,
}

impl KernelFile {
    fn new(path: PathBuf) -> KernelFile {
        KernelFile {
            path,
            file: None,
            keep: true,
        }
    }

    /// A file opened for each reading and closed after it.
    fn transient(path: PathBuf) -> KernelFile {
        KernelFile {
            keep: false,
            ..KernelFile::new(path)
        }
    }

    /// The file's current text, in `buf`. A failed read of the open file
    /// (its device went away, the file was replaced) reopens it once.
    fn read<'b>(&mut self, buf: &'b mut Vec<u8>) -> io::Result<&'b str> {
        let len = match self.file.as_ref().map(|f| read_from_start(f, buf)) {
            Some(Ok(len)) => len,
            _ => {
                let file = File::open(&self.path)?;
                let len = read_from_start(&file, buf)?;
                self.file = Some(file);
                len
            }
        };
        std::str::from_utf8(&buf[..len])
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not text"))
    }

    fn read_required<'b>(&mut self, buf: &'b mut Vec<u8>) -> Result<&'b str, SampleError> {
        self.read(buf).map_err(|error| SampleError::Read {
            path: self.path.clone(),
            error,
        })
    }

    /// A one-number file (`ifindex`) from the open file only: `None` when
    /// it no longer reads, i.e. its device is gone.
    fn read_number(&mut self) -> Option<u64> {
        let mut small = [0u8; 32];
        let file = match &self.file {
            Some(f) => f,
            None => self.file.insert(File::open(&self.path).ok()?),
        };
        let read = file.read_at(&mut small, 0);
        if read.is_err() || !self.keep {
            self.file = None;
        }
        std::str::from_utf8(&small[..read.ok()?])
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

/// Reads `file` from offset 0 into `buf` (whose whole length is room; it
/// grows only when the file outgrows it) and returns the bytes read. A
/// short read is the end: procfs, sysfs and local files all fill what they
/// are given until then. A file longer than [`MAX_FILE`] is an error.
fn read_from_start(file: &File, buf: &mut Vec<u8>) -> io::Result<usize> {
    let mut len = 0;
    loop {
        if buf.len() - len < 1024 {
            if buf.len() >= MAX_FILE {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("longer than {} MiB", MAX_FILE >> 20),
                ));
            }
            buf.resize((buf.len() * 2).clamp(BUF_START, MAX_FILE), 0);
        }
        let room = buf.len() - len;
        let n = file.read_at(&mut buf[len..], len as u64)?;
        len += n;
        if n < room {
            return Ok(len);
        }
    }
}

/// One counter's last value.
#[derive(Debug, Clone, Copy, Default)]
struct Baseline(u64);

impl Baseline {
    /// The difference from the last value, or 0 when the counter went
    /// backwards or jumped by more than `max`; the new value is the
    /// baseline either way.
    fn advance(&mut self, now: u64, max: u64) -> u64 {
        let delta = now.checked_sub(self.0).filter(|d| *d <= max).unwrap_or(0);
        self.0 = now;
        delta
    }
}

/// A network interface or block device, as last seen.
#[derive(Debug)]
struct Device {
    name: String,
    /// ifindex, or major << 32 | minor: another value is another device.
    id: u64,
    /// Counted: a real NIC or a whole disk.
    counted: bool,
    /// A counted interface's `ifindex` file, kept open.
    id_file: Option<KernelFile>,
    a: Baseline,
    b: Baseline,
    seen: bool,
}

/// What stands under a device name now.
struct Identity {
    id: u64,
    counted: bool,
    id_file: Option<KernelFile>,
}

/// The devices of one kind.
#[derive(Debug, Default)]
struct Devices(Vec<Device>);

impl Devices {
    fn begin(&mut self) {
        for d in &mut self.0 {
            d.seen = false;
        }
    }

    /// Forgets the devices this reading did not list.
    fn end(&mut self) {
        self.0.retain(|d| d.seen);
    }

    /// The deltas of device `name` since the last reading. `id_now` says
    /// which device a known one is now (`None`: the one we knew is gone);
    /// `identify` is asked about a device that is new, or new under an old
    /// name, and returns `None` when it is already gone again. Such a
    /// device, and one not counted, gives (0, 0).
    fn observe(
        &mut self,
        name: &str,
        (a, b): (u64, u64),
        max: u64,
        id_now: impl FnOnce(&mut Device) -> Option<u64>,
        identify: impl FnOnce() -> Option<Identity>,
    ) -> (u64, u64) {
        let known = self.0.iter().position(|d| d.name == name);
        if let Some(i) = known {
            let d = &mut self.0[i];
            if id_now(d) == Some(d.id) {
                d.seen = true;
                let deltas = (d.a.advance(a, max), d.b.advance(b, max));
                return if d.counted { deltas } else { (0, 0) };
            }
        }
        let Some(who) = identify() else {
            return (0, 0);
        };
        let fresh = Device {
            name: String::new(),
            id: who.id,
            counted: who.counted,
            id_file: who.id_file,
            a: Baseline(a),
            b: Baseline(b),
            seen: true,
        };
        match known {
            Some(i) => {
                let name = std::mem::take(&mut self.0[i].name);
                self.0[i] = Device { name, ..fresh };
            }
            None => self.0.push(Device {
                name: name.to_string(),
                ..fresh
            }),
        }
        (0, 0)
    }
}

/// A container's cgroup v2 files (see the module docs).
#[derive(Debug)]
struct Cgroup {
    cpu_max: KernelFile,
    memory_max: KernelFile,
    cpu_stat: KernelFile,
    memory_current: KernelFile,
    memory_stat: KernelFile,
    io_stat: KernelFile,
    usage: Baseline,
    io: (Baseline, Baseline),
}

/// What the cgroup v2 root in view is, decided at the first reading (a
/// process's view of it does not change while it runs).
#[derive(Debug)]
enum View {
    Undecided,
    Machine,
    Container(Box<Cgroup>),
}

/// A container's limits as they are now (`docker update` changes them).
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// cpu.max quota and period, microseconds.
    cpu_quota: Option<(u64, u64)>,
    /// memory.max, bytes.
    mem_max: Option<u64>,
}

/// Reads the machine and keeps what the next delta needs.
pub struct Sampler {
    stat: KernelFile,
    meminfo: KernelFile,
    net_dev: KernelFile,
    diskstats: KernelFile,
    sys: PathBuf,
    view: View,
    clock_ticks: u64,
    buf: Vec<u8>,
    cpu: [Baseline; CPU_FIELDS],
    nets: Devices,
    disks: Devices,
    /// Monotonic ms of the last reading; `None` before the first.
    last_ms: Option<u64>,
}

impl Sampler {
    pub fn new(roots: &Roots) -> Sampler {
        Sampler {
            stat: KernelFile::new(roots.proc.join("stat")),
            meminfo: KernelFile::new(roots.proc.join("meminfo")),
            net_dev: KernelFile::new(roots.proc.join("net/dev")),
            diskstats: KernelFile::new(roots.proc.join("diskstats")),
            sys: roots.sys.clone(),
            view: View::Undecided,
            clock_ticks: crate::sys::clock_ticks_per_second(),
            buf: vec![0; BUF_START],
            cpu: [Baseline::default(); CPU_FIELDS],
            nets: Devices::default(),
            disks: Devices::default(),
            last_ms: None,
        }
    }

    /// Takes a reading at `now_ms` (a monotonic clock). The first gives no
    /// sample, only the baseline; each later one the interval since the
    /// one before.
    pub fn sample(&mut self, now_ms: u64) -> Result<Option<Sample>, SampleError> {
        let elapsed_ms = self.last_ms.map(|last| now_ms.saturating_sub(last).max(1));
        self.last_ms = Some(now_ms);
        let elapsed = elapsed_ms.unwrap_or(1);
        if let View::Undecided = self.view {
            self.view = self.decide_view();
        }
        let limits = self.limits();
        let (online, cpu_pct_x100) = self.cpu(elapsed, limits)?;
        let (mem_mib, mem_pct_x100) = self.memory(limits)?;
        let max_bytes = MAX_DEVICE_BYTES_PER_S.saturating_mul(elapsed) / 1000;
        let (net_rx_bytes, net_tx_bytes) = self.network(max_bytes, limits.is_some())?;
        let (disk_read_bytes, disk_write_bytes) = match &mut self.view {
            View::Container(cg) => cgroup_io(cg, &mut self.buf, max_bytes),
            _ => self.disks(max_bytes)?,
        };
        let quota_cpus = limits
            .and_then(|l| l.cpu_quota)
            .map(|(quota, period)| quota.div_ceil(period));
        let vcpus = quota_cpus.map_or(u64::from(online), |q| q.min(u64::from(online)));
        Ok(elapsed_ms.map(|_| Sample {
            vcpus: vcpus.clamp(1, u64::from(u16::MAX)) as u16,
            mem_mib,
            cpu_pct_x100,
            mem_pct_x100,
            net_rx_bytes,
            net_tx_bytes,
            disk_read_bytes,
            disk_write_bytes,
        }))
    }

    /// A container if its cgroup root has `cpu.max` or `memory.max`.
    fn decide_view(&mut self) -> View {
        let dir = self.sys.join("fs/cgroup");
        let file = |name: &str| KernelFile::new(dir.join(name));
        let mut cg = Cgroup {
            cpu_max: file("cpu.max"),
            memory_max: file("memory.max"),
            cpu_stat: file("cpu.stat"),
            memory_current: file("memory.current"),
            memory_stat: file("memory.stat"),
            io_stat: file("io.stat"),
            usage: Baseline::default(),
            io: (Baseline::default(), Baseline::default()),
        };
        let limited =
            cg.cpu_max.read(&mut self.buf).is_ok() || cg.memory_max.read(&mut self.buf).is_ok();
        if limited {
            View::Container(Box::new(cg))
        } else {
            View::Machine
        }
    }

    /// The container's limits now, or `None` outside a container.
    fn limits(&mut self) -> Option<Limits> {
        let View::Container(cg) = &mut self.view else {
            return None;
        };
        let cpu_quota = cg
            .cpu_max
            .read(&mut self.buf)
            .ok()
            .and_then(procfs::parse_cpu_max);
        let mem_max = cg
            .memory_max
            .read(&mut self.buf)
            .ok()
            .and_then(procfs::parse_number);
        Some(Limits { cpu_quota, mem_max })
    }

    /// Online CPUs and the CPU busy share over `elapsed_ms`: from
    /// `/proc/stat` on a VM; in a container, its cgroup's own CPU time
    /// against what its quota (or the online CPUs) allowed.
    fn cpu(&mut self, elapsed_ms: u64, limits: Option<Limits>) -> Result<(u32, u16), SampleError> {
        let text = self.stat.read_required(&mut self.buf)?;
        let stat = procfs::parse_stat(text).ok_or_else(|| SampleError::Malformed {
            path: self.stat.path.clone(),
            what: "no aggregate `cpu` line",
        })?;
        let online = stat.online.max(1);
        // All CPUs' time in the interval, in ticks, with room for skew.
        let max_ticks =
            (elapsed_ms * u64::from(online) * self.clock_ticks / 1000 + u64::from(online)) * 4
                + 100;
        let mut deltas = [0u64; CPU_FIELDS];
        for (i, d) in deltas.iter_mut().enumerate() {
            *d = self.cpu[i].advance(stat.ticks[i], max_ticks);
        }
        let total: u64 = deltas.iter().sum();
        let idle = deltas[IDLE] + deltas[IOWAIT];
        let mut pct = share_x100(total - idle, total);
        if let (Some(limits), View::Container(cg)) = (limits, &mut self.view)
            && let Some(usage) = cg
                .cpu_stat
                .read(&mut self.buf)
                .ok()
                .and_then(|t| procfs::parse_keyed(t, "usage_usec"))
        {
            let elapsed_us = elapsed_ms * 1000;
            let max_us = elapsed_us * u64::from(online) * 4 + 100_000;
            let used_us = cg.usage.advance(usage, max_us);
            // CPU time the container could have had: quota/period CPUs.
            let (quota, period) = limits.cpu_quota.unwrap_or((u64::from(online), 1));
            let allowed_us = elapsed_us.saturating_mul(quota) / period;
            pct = share_x100(used_us, allowed_us);
        }
        Ok((online, pct))
    }

    /// Memory size in MiB and the share in use: (MemTotal - MemAvailable)
    /// of MemTotal on a VM; in a container its working set (memory.current
    /// less inactive file pages, as the kubelet counts it) of memory.max,
    /// or of MemTotal when that is lower.
    fn memory(&mut self, limits: Option<Limits>) -> Result<(u32, u16), SampleError> {
        let text = self.meminfo.read_required(&mut self.buf)?;
        let (total_kib, available_kib) =
            procfs::parse_meminfo(text).ok_or_else(|| SampleError::Malformed {
                path: self.meminfo.path.clone(),
                what: "no MemTotal",
            })?;
        // Checked: a malformed or hostile meminfo must not wrap to 1 MiB.
        let (mut total, mut used) = (
            total_kib.saturating_mul(1024),
            total_kib.saturating_sub(available_kib).saturating_mul(1024),
        );
        if let (Some(limits), View::Container(cg)) = (limits, &mut self.view) {
            let current = cg
                .memory_current
                .read(&mut self.buf)
                .ok()
                .and_then(procfs::parse_number);
            let inactive = cg
                .memory_stat
                .read(&mut self.buf)
                .ok()
                .and_then(|t| procfs::parse_keyed(t, "inactive_file"))
                .unwrap_or(0);
            if let Some(current) = current {
                total = limits
                    .mem_max
                    .filter(|m| *m > 0)
                    .map_or(total, |m| m.min(total));
                used = current.saturating_sub(inactive).min(total);
            }
        }
        let mib = (total >> 20).clamp(1, u64::from(u32::MAX)) as u32;
        Ok((mib, share_x100(used, total)))
    }

    /// Bytes received and sent by real interfaces: those backed by a
    /// device (`/sys/class/net/X/device`: virtio-net, a physical NIC), not
    /// lo, veth, bridges, tunnels or bonds over counted NICs; in a
    /// container, every interface but lo.
    fn network(&mut self, max_bytes: u64, in_container: bool) -> Result<(u64, u64), SampleError> {
        let Sampler {
            net_dev,
            sys,
            buf,
            nets,
            ..
        } = self;
        let text = net_dev.read_required(buf)?;
        let (mut rx, mut tx) = (0u64, 0u64);
        let mut open_ids = nets
            .0
            .iter()
            .filter(|d| d.id_file.as_ref().is_some_and(|f| f.keep))
            .count();
        nets.begin();
        procfs::for_each_interface(text, |name, rx_now, tx_now| {
            let id_now = |d: &mut Device| match &mut d.id_file {
                Some(f) => f.read_number(),
                None => Some(d.id),
            };
            let identify = || {
                let dir = sys.join("class/net").join(name);
                let counted = if in_container {
                    name != "lo"
                } else {
                    dir.join("device").exists()
                };
                let path = dir.join("ifindex");
                let mut id_file = if counted && open_ids < MAX_OPEN_ID_FILES {
                    open_ids += 1;
                    KernelFile::new(path)
                } else {
                    KernelFile::transient(path)
                };
                let id = id_file.read_number()?;
                Some(Identity {
                    id,
                    counted,
                    id_file: counted.then_some(id_file),
                })
            };
            let (drx, dtx) = nets.observe(name, (rx_now, tx_now), max_bytes, id_now, identify);
            rx = rx.saturating_add(drx);
            tx = tx.saturating_add(dtx);
        });
        nets.end();
        Ok((rx, tx))
    }

    /// Bytes read and written by whole disks (`/sys/block/X/device`: vda,
    /// sda, nvme0n1), not partitions, loop, ram, zram or device-mapper
    /// devices, so no I/O is counted twice.
    fn disks(&mut self, max_bytes: u64) -> Result<(u64, u64), SampleError> {
        let Sampler {
            diskstats,
            sys,
            buf,
            disks,
            ..
        } = self;
        let text = diskstats.read_required(buf)?;
        let (mut read, mut written) = (0u64, 0u64);
        disks.begin();
        procfs::for_each_disk(text, |name, dev, r, w| {
            let identify = || {
                Some(Identity {
                    id: dev,
                    counted: sys.join("block").join(name).join("device").exists(),
                    id_file: None,
                })
            };
            let max = max_bytes / SECTOR;
            let (dr, dw) = disks.observe(name, (r, w), max, |_| Some(dev), identify);
            read = read.saturating_add(dr);
            written = written.saturating_add(dw);
        });
        disks.end();
        Ok((read.saturating_mul(SECTOR), written.saturating_mul(SECTOR)))
    }
}

/// A container's bytes read and written, from its cgroup's `io.stat`
/// (0 where the io controller is not enabled).
fn cgroup_io(cg: &mut Cgroup, buf: &mut Vec<u8>, max_bytes: u64) -> (u64, u64) {
    let (read, written) = cg.io_stat.read(buf).map_or((0, 0), procfs::parse_io_stat);
    (
        cg.io.0.advance(read, max_bytes),
        cg.io.1.advance(written, max_bytes),
    )
}

/// `part` of `whole` in hundredths of a percent, rounded, at most 100 %.
fn share_x100(part: u64, whole: u64) -> u16 {
    if whole == 0 {
        return 0;
    }
    let x = (u128::from(part) * 10_000 + u128::from(whole) / 2) / u128::from(whole);
    x.min(10_000) as u16
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn a_baseline_never_goes_negative_or_absurd() {
        let mut b = Baseline(100);
        assert_eq!(b.advance(150, 1000), 50);
        assert_eq!(b.advance(120, 1000), 0, "went backwards: restart");
        assert_eq!(b.advance(130, 1000), 10, "from the new baseline");
        assert_eq!(b.advance(1_000_000, 1000), 0, "a jump beyond the bound");
        assert_eq!(b.advance(1_000_500, 1000), 500);
    }

    #[test]
    fn shares_round_and_cap() {
        assert_eq!(share_x100(1, 3), 3333);
        assert_eq!(share_x100(2, 3), 6667);
        assert_eq!(share_x100(5, 0), 0);
        assert_eq!(share_x100(7, 5), 10_000);
        assert_eq!(share_x100(u64::MAX, u64::MAX), 10_000);
    }

    /// Observes a device whose id is known up front (as disks are).
    fn see(
        devs: &mut Devices,
        name: &str,
        id: u64,
        counters: (u64, u64),
        counted: bool,
    ) -> (u64, u64) {
        let identify = || {
            Some(Identity {
                id,
                counted,
                id_file: None,
            })
        };
        devs.observe(name, counters, 1 << 40, |_| Some(id), identify)
    }

    #[test]
    fn devices_start_from_their_first_reading_and_vanish_quietly() {
        let mut devs = Devices::default();
        devs.begin();
        assert_eq!(see(&mut devs, "eth0", 2, (100, 50), true), (0, 0));
        devs.end();
        devs.begin();
        assert_eq!(see(&mut devs, "eth0", 2, (300, 80), true), (200, 30));
        assert_eq!(see(&mut devs, "lo", 1, (5, 5), false), (0, 0));
        devs.end();
        devs.begin();
        assert_eq!(see(&mut devs, "lo", 1, (9, 9), false), (0, 0));
        // eth0 re-created with a new id: a new device, from scratch.
        assert_eq!(see(&mut devs, "eth0", 7, (10, 10), true), (0, 0));
        devs.end();
        devs.begin();
        assert_eq!(see(&mut devs, "eth0", 7, (15, 12), true), (5, 2));
        devs.end(); // lo vanished
        assert_eq!(devs.0.len(), 1);
    }

    #[test]
    fn an_open_file_is_read_afresh_from_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "one\n").unwrap();
        let mut f = KernelFile::new(path.clone());
        let mut buf = Vec::new();
        assert_eq!(f.read(&mut buf).unwrap(), "one\n");
        // Longer than the buffer's first size: it grows to fit.
        let long = "x".repeat(BUF_START * 3);
        std::fs::write(&path, &long).unwrap();
        assert_eq!(f.read(&mut buf).unwrap(), long);
        let mut id = KernelFile::new(dir.path().join("n"));
        assert_eq!(id.read_number(), None, "no file yet");
        std::fs::write(dir.path().join("n"), "7\n").unwrap();
        assert_eq!(id.read_number(), Some(7));
    }

    impl Sampler {
        /// Points every kept-open file at the next reading's fixture tree,
        /// as if the kernel had moved on: state (baselines, devices, the
        /// view) is kept, open files are reopened at the new paths.
        fn move_to(&mut self, roots: &Roots) {
            self.stat = KernelFile::new(roots.proc.join("stat"));
            self.meminfo = KernelFile::new(roots.proc.join("meminfo"));
            self.net_dev = KernelFile::new(roots.proc.join("net/dev"));
            self.diskstats = KernelFile::new(roots.proc.join("diskstats"));
            self.sys = roots.sys.clone();
            let net = roots.sys.join("class/net");
            for d in &mut self.nets.0 {
                if d.id_file.is_some() {
                    d.id_file = Some(KernelFile::new(net.join(&d.name).join("ifindex")));
                }
            }
            if let View::Container(cg) = &mut self.view {
                let dir = roots.sys.join("fs/cgroup");
                for (file, name) in [
                    (&mut cg.cpu_max, "cpu.max"),
                    (&mut cg.memory_max, "memory.max"),
                    (&mut cg.cpu_stat, "cpu.stat"),
                    (&mut cg.memory_current, "memory.current"),
                    (&mut cg.memory_stat, "memory.stat"),
                    (&mut cg.io_stat, "io.stat"),
                ] {
                    *file = KernelFile::new(dir.join(name));
                }
            }
        }
    }

    fn fixture(case: &str, reading: u32) -> Roots {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/agent")
            .join(case);
        let own_sys = dir.join(format!("{reading}/sys"));
        Roots {
            proc: dir.join(format!("{reading}/proc")),
            sys: if own_sys.exists() {
                own_sys
            } else {
                dir.join("sys")
            },
        }
    }

    /// Samples `case` reading by reading, 10 s apart.
    fn samples(case: &str, readings: u32) -> Vec<Sample> {
        let mut sampler = Sampler::new(&fixture(case, 0));
        assert_eq!(
            sampler.sample(1_000).unwrap(),
            None,
            "the first reading is the baseline"
        );
        (1..readings)
            .map(|n| {
                sampler.move_to(&fixture(case, n));
                sampler
                    .sample(1_000 + u64::from(n) * 10_000)
                    .unwrap()
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn a_two_vcpu_virtio_vm_gives_the_exact_datagram() {
        let sample = samples("vm", 2)[0];
        // cpu: user 300 + system 100 + softirq 10 + steal 5 busy of 835
        // ticks (guest's 7 are inside user already) = 49.70 %; memory
        // 512000 of 2048000 kB = 25 %; eth0 only (lo and veth0 have no
        // device); vda only (not its partition, dm-0 or loop0).
        let stat = crate::agent::stat_of(&sample, 0xC0FF_EE01, 0, 60, false);
        let expected = crate::wire::Stat {
            flags: 0,
            interval_s: 60,
            boot_id: 0xC0FF_EE01,
            vcpus: 2,
            seq: 0,
            timestamp_ms: stat.timestamp_ms,
            cpu_pct_x100: 4970,
            mem_pct_x100: 2500,
            mem_mib: 2000,
            net_rx_bytes: 1_048_576,
            net_tx_bytes: 524_288,
            disk_read_bytes: 4096,
            disk_write_bytes: 65_536,
        };
        assert_eq!(stat, expected);
        assert_eq!(
            crate::wire::decode(&crate::wire::encode(&stat), false),
            Ok(expected)
        );
    }

    #[test]
    fn a_cgroup_v2_container_is_measured_against_its_own_limits() {
        let sample = samples("container", 2)[0];
        assert_eq!(
            sample,
            Sample {
                // cpu.max 150000/100000: 1.5 CPUs, rounded up.
                vcpus: 2,
                // memory.max 1 GiB, below the host's 16 GB.
                mem_mib: 1024,
                // 3 s of CPU in 10 s of a 1.5-CPU quota.
                cpu_pct_x100: 2000,
                // 600 MiB current less 88 MiB inactive file, of 1 GiB.
                mem_pct_x100: 5000,
                // eth0 is a veth, but in a container it is the traffic.
                net_rx_bytes: 1000,
                net_tx_bytes: 2500,
                // io.stat, not the host's diskstats.
                disk_read_bytes: 4096,
                disk_write_bytes: 65_536,
            }
        );
    }

    #[test]
    fn misbehaving_counters_never_give_negative_or_absurd_deltas() {
        let got = samples("misbehaving", 3);
        // Reading 1: iowait went backwards and steal jumped by 10^12 ticks
        // (both count 0: 500 busy of 1000); eth0 came back with a new
        // ifindex and eth1's rx reset (both count 0; eth1's tx still
        // counts); vdb appeared (0 until its second reading).
        assert_eq!(
            got[0],
            Sample {
                vcpus: 2,
                mem_mib: 4000,
                cpu_pct_x100: 5000,
                mem_pct_x100: 2500,
                net_rx_bytes: 0,
                net_tx_bytes: 1000,
                disk_read_bytes: 4096,
                disk_write_bytes: 65_536,
            }
        );
        // Reading 2: every counter from its new baseline; vda vanished and
        // just stopped counting.
        assert_eq!(
            got[1],
            Sample {
                vcpus: 2,
                mem_mib: 4000,
                cpu_pct_x100: 2000,
                mem_pct_x100: 2500,
                net_rx_bytes: 1200,
                net_tx_bytes: 1000,
                disk_read_bytes: 4096,
                disk_write_bytes: 65_536,
            }
        );
    }

    #[test]
    fn an_unreadable_or_malformed_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let roots = Roots {
            proc: dir.path().join("proc"),
            sys: dir.path().join("sys"),
        };
        let err = Sampler::new(&roots).sample(0).unwrap_err();
        assert!(err.to_string().starts_with(&format!(
            "cannot read {}/proc/stat (check --proc-root/--sys-root): ",
            dir.path().display()
        )));
        std::fs::create_dir_all(&roots.proc).unwrap();
        std::fs::write(roots.proc.join("stat"), "intr 1 2\n\0\0junk").unwrap();
        let err = Sampler::new(&roots).sample(0).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("stat is malformed: no aggregate `cpu` line"),
            "{err}"
        );
    }
}
