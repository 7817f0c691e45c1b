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
//! After the first reading nothing here allocates: file contents go into
//! one reused buffer, paths into one reused path, and a device's name is
//! copied only when the device is first seen.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

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
    a: Baseline,
    b: Baseline,
    seen: bool,
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

    /// The deltas of a counted device since the last reading; (0, 0) for
    /// one that is new, new under an old name, or not counted. `counted`
    /// is asked only when the device is new.
    fn observe(
        &mut self,
        name: &str,
        id: u64,
        (a, b): (u64, u64),
        max: u64,
        counted: impl FnOnce() -> bool,
    ) -> (u64, u64) {
        match self.0.iter_mut().find(|d| d.name == name) {
            Some(d) if d.id == id => {
                d.seen = true;
                let deltas = (d.a.advance(a, max), d.b.advance(b, max));
                if d.counted { deltas } else { (0, 0) }
            }
            Some(d) => {
                *d = Device {
                    name: std::mem::take(&mut d.name),
                    id,
                    counted: counted(),
                    a: Baseline(a),
                    b: Baseline(b),
                    seen: true,
                };
                (0, 0)
            }
            None => {
                self.0.push(Device {
                    name: name.to_string(),
                    id,
                    counted: counted(),
                    a: Baseline(a),
                    b: Baseline(b),
                    seen: true,
                });
                (0, 0)
            }
        }
    }
}

/// What the cgroup v2 root in view says: `None` on a VM or host (a real
/// root cgroup has no limits), the container's limits otherwise.
#[derive(Debug, Clone, Copy, Default)]
struct Container {
    /// cpu.max quota and period, microseconds.
    cpu_quota: Option<(u64, u64)>,
    /// memory.max, bytes.
    mem_max: Option<u64>,
}

/// Reads the machine and keeps what the next delta needs.
pub struct Sampler {
    stat: PathBuf,
    meminfo: PathBuf,
    net_dev: PathBuf,
    diskstats: PathBuf,
    sys: PathBuf,
    cgroup: PathBuf,
    clock_ticks: u64,
    buf: Vec<u8>,
    scratch: PathBuf,
    cpu: [Baseline; CPU_FIELDS],
    cgroup_usage: Baseline,
    cgroup_io: (Baseline, Baseline),
    nets: Devices,
    disks: Devices,
    /// Monotonic ms of the last reading; `None` before the first.
    last_ms: Option<u64>,
}

impl Sampler {
    pub fn new(roots: &Roots) -> Sampler {
        Sampler {
            stat: roots.proc.join("stat"),
            meminfo: roots.proc.join("meminfo"),
            net_dev: roots.proc.join("net/dev"),
            diskstats: roots.proc.join("diskstats"),
            sys: roots.sys.clone(),
            cgroup: roots.sys.join("fs/cgroup"),
            clock_ticks: crate::sys::clock_ticks_per_second(),
            buf: Vec::with_capacity(16 << 10),
            scratch: PathBuf::with_capacity(256),
            cpu: [Baseline::default(); CPU_FIELDS],
            cgroup_usage: Baseline::default(),
            cgroup_io: (Baseline::default(), Baseline::default()),
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
        let container = self.container();
        let (online, cpu_pct_x100) = self.cpu(elapsed, container)?;
        let (mem_mib, mem_pct_x100) = self.memory(container)?;
        let max_bytes = MAX_DEVICE_BYTES_PER_S.saturating_mul(elapsed) / 1000;
        let (net_rx_bytes, net_tx_bytes) = self.network(max_bytes, container.is_some())?;
        let (disk_read_bytes, disk_write_bytes) = match container {
            Some(_) => self.cgroup_io(max_bytes),
            None => self.disks(max_bytes)?,
        };
        let quota_cpus = container
            .and_then(|c| c.cpu_quota)
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

    /// The container's limits, or `None` outside a container.
    fn container(&mut self) -> Option<Container> {
        let path = with(&mut self.scratch, &self.cgroup, &["cpu.max"]);
        let cpu = read_optional(path, &mut self.buf).map(procfs::parse_cpu_max);
        let path = with(&mut self.scratch, &self.cgroup, &["memory.max"]);
        let mem = read_optional(path, &mut self.buf).map(procfs::parse_number);
        (cpu.is_some() || mem.is_some()).then(|| Container {
            cpu_quota: cpu.flatten(),
            mem_max: mem.flatten(),
        })
    }

    /// Online CPUs and the CPU busy share over `elapsed_ms`: from
    /// `/proc/stat` on a VM; in a container, its cgroup's own CPU time
    /// against what its quota (or the online CPUs) allowed.
    fn cpu(
        &mut self,
        elapsed_ms: u64,
        container: Option<Container>,
    ) -> Result<(u32, u16), SampleError> {
        let text = read_required(&self.stat, &mut self.buf)?;
        let stat = procfs::parse_stat(text).ok_or_else(|| SampleError::Malformed {
            path: self.stat.clone(),
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
        if let Some(c) = container {
            let path = with(&mut self.scratch, &self.cgroup, &["cpu.stat"]);
            if let Some(usage) = read_optional(path, &mut self.buf)
                .and_then(|t| procfs::parse_keyed(t, "usage_usec"))
            {
                let elapsed_us = elapsed_ms * 1000;
                let max_us = elapsed_us * u64::from(online) * 4 + 100_000;
                let used_us = self.cgroup_usage.advance(usage, max_us);
                // CPU time the container could have had: quota/period CPUs.
                let (quota, period) = c.cpu_quota.unwrap_or((u64::from(online), 1));
                let allowed_us = elapsed_us.saturating_mul(quota) / period;
                pct = share_x100(used_us, allowed_us);
            }
        }
        Ok((online, pct))
    }

    /// Memory size in MiB and the share in use: (MemTotal - MemAvailable)
    /// of MemTotal on a VM; in a container its working set (memory.current
    /// less inactive file pages, as the kubelet counts it) of memory.max,
    /// or of MemTotal when that is lower.
    fn memory(&mut self, container: Option<Container>) -> Result<(u32, u16), SampleError> {
        let text = read_required(&self.meminfo, &mut self.buf)?;
        let (total_kib, available_kib) =
            procfs::parse_meminfo(text).ok_or_else(|| SampleError::Malformed {
                path: self.meminfo.clone(),
                what: "no MemTotal",
            })?;
        let (mut total, mut used) = (total_kib * 1024, (total_kib - available_kib) * 1024);
        if let Some(c) = container {
            let path = with(&mut self.scratch, &self.cgroup, &["memory.current"]);
            let current = read_optional(path, &mut self.buf).and_then(procfs::parse_number);
            let path = with(&mut self.scratch, &self.cgroup, &["memory.stat"]);
            let inactive = read_optional(path, &mut self.buf)
                .and_then(|t| procfs::parse_keyed(t, "inactive_file"))
                .unwrap_or(0);
            if let Some(current) = current {
                total = c.mem_max.filter(|m| *m > 0).map_or(total, |m| m.min(total));
                used = current.saturating_sub(inactive).min(total);
            }
        }
        let mib = (total >> 20).clamp(1, u64::from(u32::MAX)) as u32;
        Ok((mib, share_x100(used, total)))
    }

    /// A container's bytes read and written, from its cgroup's `io.stat`
    /// (0 where the io controller is not enabled).
    fn cgroup_io(&mut self, max_bytes: u64) -> (u64, u64) {
        let path = with(&mut self.scratch, &self.cgroup, &["io.stat"]);
        let (read, written) =
            read_optional(path, &mut self.buf).map_or((0, 0), procfs::parse_io_stat);
        let (r, w) = &mut self.cgroup_io;
        (r.advance(read, max_bytes), w.advance(written, max_bytes))
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
            scratch,
            nets,
            ..
        } = self;
        let text = read_required(net_dev, buf)?;
        let (mut rx, mut tx) = (0u64, 0u64);
        nets.begin();
        procfs::for_each_interface(text, |name, rx_now, tx_now| {
            let path = with(scratch, sys, &["class/net", name, "ifindex"]);
            // Gone between the two reads: seen next time, as new.
            let Some(ifindex) = read_small_number(path) else {
                return;
            };
            let (drx, dtx) = nets.observe(name, ifindex, (rx_now, tx_now), max_bytes, || {
                if in_container {
                    name != "lo"
                } else {
                    with(scratch, sys, &["class/net", name, "device"]).exists()
                }
            });
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
            scratch,
            disks,
            ..
        } = self;
        let text = read_required(diskstats, buf)?;
        let (mut read, mut written) = (0u64, 0u64);
        disks.begin();
        procfs::for_each_disk(text, |name, dev, r, w| {
            let (dr, dw) = disks.observe(name, dev, (r, w), max_bytes / SECTOR, || {
                with(scratch, sys, &["block", name, "device"]).exists()
            });
            read = read.saturating_add(dr);
            written = written.saturating_add(dw);
        });
        disks.end();
        Ok((read.saturating_mul(SECTOR), written.saturating_mul(SECTOR)))
    }
}

/// `part` of `whole` in hundredths of a percent, rounded, at most 100 %.
fn share_x100(part: u64, whole: u64) -> u16 {
    if whole == 0 {
        return 0;
    }
    let x = (u128::from(part) * 10_000 + u128::from(whole) / 2) / u128::from(whole);
    x.min(10_000) as u16
}

/// `base` joined with `parts`, built in the reused `scratch`.
fn with<'a>(scratch: &'a mut PathBuf, base: &Path, parts: &[&str]) -> &'a Path {
    scratch.as_mut_os_string().clear();
    scratch.push(base);
    for p in parts {
        scratch.push(p);
    }
    scratch
}

/// Reads a whole file into `buf` (reused) as text.
fn read_text<'b>(path: &Path, buf: &'b mut Vec<u8>) -> io::Result<&'b str> {
    buf.clear();
    File::open(path)?.read_to_end(buf)?;
    std::str::from_utf8(buf).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not text"))
}

fn read_required<'b>(path: &Path, buf: &'b mut Vec<u8>) -> Result<&'b str, SampleError> {
    read_text(path, buf).map_err(|error| SampleError::Read {
        path: path.to_path_buf(),
        error,
    })
}

/// A file that may not exist (cgroup limits): `None` when it cannot be read.
fn read_optional<'b>(path: &Path, buf: &'b mut Vec<u8>) -> Option<&'b str> {
    read_text(path, buf).ok()
}

/// A small one-number sysfs file, read without touching the heap.
fn read_small_number(path: &Path) -> Option<u64> {
    let mut small = [0u8; 32];
    let n = File::open(path).ok()?.read(&mut small).ok()?;
    std::str::from_utf8(&small[..n]).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn devices_start_from_their_first_reading_and_vanish_quietly() {
        let mut devs = Devices::default();
        devs.begin();
        assert_eq!(devs.observe("eth0", 2, (100, 50), 1 << 40, || true), (0, 0));
        devs.end();
        devs.begin();
        assert_eq!(
            devs.observe("eth0", 2, (300, 80), 1 << 40, || true),
            (200, 30)
        );
        assert_eq!(devs.observe("lo", 1, (5, 5), 1 << 40, || false), (0, 0));
        devs.end();
        devs.begin();
        assert_eq!(
            devs.observe("lo", 1, (9, 9), 1 << 40, || unreachable!()),
            (0, 0)
        );
        // eth0 re-created with a new ifindex: a new device, from scratch.
        assert_eq!(devs.observe("eth0", 7, (10, 10), 1 << 40, || true), (0, 0));
        devs.end();
        devs.begin();
        assert_eq!(devs.observe("eth0", 7, (15, 12), 1 << 40, || true), (5, 2));
        devs.end(); // lo vanished
        assert_eq!(devs.0.len(), 1);
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
                let roots = fixture(case, n);
                sampler.stat = roots.proc.join("stat");
                sampler.meminfo = roots.proc.join("meminfo");
                sampler.net_dev = roots.proc.join("net/dev");
                sampler.diskstats = roots.proc.join("diskstats");
                sampler.cgroup = roots.sys.join("fs/cgroup");
                sampler.sys = roots.sys;
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
