//! Parsers of the kernel's text files: `/proc/stat`, `/proc/meminfo`,
//! `/proc/net/dev`, `/proc/diskstats` and the cgroup v2 interface files.
//!
//! Pure functions over text, so every format quirk is unit-tested without a
//! kernel, and none of them allocates: per-device lines are handed to a
//! callback as borrowed slices. A malformed line is skipped (or the whole
//! file reported malformed when the figure the agent needs is missing);
//! nothing here can panic on what a file holds.

/// `/proc/stat`'s aggregate `cpu` line, in USER_HZ ticks: user, nice,
/// system, idle, iowait, irq, softirq, steal. guest and guest_nice are
/// already inside user and nice, so they are not read at all.
pub const CPU_FIELDS: usize = 8;

/// Index of idle and iowait among [`CPU_FIELDS`].
pub const IDLE: usize = 3;
pub const IOWAIT: usize = 4;

/// What `/proc/stat` says about the CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuStat {
    pub ticks: [u64; CPU_FIELDS],
    /// `cpuN` lines: the online CPUs.
    pub online: u32,
}

/// Parses `/proc/stat`; `None` without an aggregate `cpu` line. Kernels
/// older than the steal field give fewer numbers: the missing ones are 0.
pub fn parse_stat(text: &str) -> Option<CpuStat> {
    let mut out = CpuStat::default();
    let mut found = false;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("cpu") else {
            continue;
        };
        if rest.starts_with(' ') {
            let mut fields = rest.split_ascii_whitespace();
            for slot in out.ticks.iter_mut() {
                match fields.next() {
                    Some(f) => *slot = f.parse().ok()?,
                    None => break,
                }
            }
            found = true;
        } else if rest.starts_with(|c: char| c.is_ascii_digit()) {
            out.online += 1;
        }
    }
    found.then_some(out)
}

/// MemTotal and MemAvailable, in KiB. Kernels before 3.14 have no
/// MemAvailable: MemFree + Buffers + Cached stands in, as `free` did then.
pub fn parse_meminfo(text: &str) -> Option<(u64, u64)> {
    let (mut total, mut available) = (None, None);
    let (mut free, mut buffers, mut cached) = (0, 0, 0);
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let Some(kib) = value
            .split_ascii_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
        else {
            continue;
        };
        match key {
            "MemTotal" => total = Some(kib),
            "MemAvailable" => available = Some(kib),
            "MemFree" => free = kib,
            "Buffers" => buffers = kib,
            "Cached" => cached = kib,
            _ => {}
        }
    }
    let total = total.filter(|t| *t > 0)?;
    let available = available.unwrap_or(free + buffers + cached);
    Some((total, available.min(total)))
}

/// Calls `f(name, rx_bytes, tx_bytes)` for each interface line of
/// `/proc/net/dev` (the first two lines are headers; a large counter may
/// touch the colon, `eth0:123`).
pub fn for_each_interface(text: &str, mut f: impl FnMut(&str, u64, u64)) {
    for line in text.lines().skip(2) {
        let Some((name, counters)) = line.split_once(':') else {
            continue;
        };
        let mut fields = counters.split_ascii_whitespace();
        let rx = fields.next().and_then(|v| v.parse().ok());
        // rx: bytes packets errs drop fifo frame compressed multicast
        let tx = fields.nth(7).and_then(|v| v.parse().ok());
        if let (Some(rx), Some(tx)) = (rx, tx) {
            f(name.trim(), rx, tx);
        }
    }
}

/// Calls `f(name, device_number, sectors_read, sectors_written)` for each
/// line of `/proc/diskstats` (`major minor name reads merged sectors ms
/// writes merged sectors ...`). The device number (major << 32 | minor)
/// tells a re-created device from the one that had its name before.
pub fn for_each_disk(text: &str, mut f: impl FnMut(&str, u64, u64, u64)) {
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let major = fields.next().and_then(|v| v.parse::<u32>().ok());
        let minor = fields.next().and_then(|v| v.parse::<u32>().ok());
        let name = fields.next();
        let read = fields.nth(2).and_then(|v| v.parse().ok());
        let written = fields.nth(3).and_then(|v| v.parse().ok());
        if let (Some(major), Some(minor), Some(name), Some(read), Some(written)) =
            (major, minor, name, read, written)
        {
            f(
                name,
                u64::from(major) << 32 | u64::from(minor),
                read,
                written,
            );
        }
    }
}

/// cgroup v2 `cpu.max` (`QUOTA PERIOD`, or `max PERIOD` for no quota):
/// the quota and period in microseconds.
pub fn parse_cpu_max(text: &str) -> Option<(u64, u64)> {
    let mut fields = text.split_ascii_whitespace();
    let quota = fields.next()?.parse::<u64>().ok()?;
    let period = fields.next()?.parse::<u64>().ok()?;
    (quota > 0 && period > 0).then_some((quota, period))
}

/// cgroup v2 `memory.max` (bytes, or `max`), or any one-number file such
/// as `memory.current`.
pub fn parse_number(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// The value of `key` in a flat keyed file (`memory.stat`, `cpu.stat`:
/// `key value` per line).
pub fn parse_keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

/// cgroup v2 `io.stat`: bytes read and written, summed over its devices
/// (`MAJ:MIN rbytes=N wbytes=N rios=N ...` per line).
pub fn parse_io_stat(text: &str) -> (u64, u64) {
    let (mut read, mut written) = (0u64, 0u64);
    for field in text.split_ascii_whitespace() {
        let Some((key, value)) = field.split_once('=') else {
            continue;
        };
        let Ok(n) = value.parse::<u64>() else {
            continue;
        };
        match key {
            "rbytes" => read = read.saturating_add(n),
            "wbytes" => written = written.saturating_add(n),
            _ => {}
        }
    }
    (read, written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_takes_the_aggregate_line_and_counts_cpus() {
        let text = "cpu  10 1 20 300 4 0 5 6 7 8\ncpu0 5 0 10 150 2 0 2 3 0 0\ncpu1 5 1 10 150 2 0 3 3 7 8\nintr 1 2 3\nctxt 9\n";
        let s = parse_stat(text).unwrap();
        assert_eq!(s.ticks, [10, 1, 20, 300, 4, 0, 5, 6]);
        assert_eq!(s.online, 2);
    }

    #[test]
    fn stat_of_an_old_kernel_and_of_junk() {
        let s = parse_stat("cpu  1 2 3 4\ncpu0 1 2 3 4\n").unwrap();
        assert_eq!(s.ticks, [1, 2, 3, 4, 0, 0, 0, 0]);
        assert_eq!(parse_stat("intr 5\n"), None);
        assert_eq!(parse_stat("cpu  1 banana 3\n"), None);
        assert_eq!(parse_stat(""), None);
    }

    #[test]
    fn meminfo_prefers_available_and_falls_back() {
        let text = "MemTotal:       16000 kB\nMemFree:  1000 kB\nMemAvailable:   12000 kB\nBuffers: 10 kB\n";
        assert_eq!(parse_meminfo(text), Some((16000, 12000)));
        let old = "MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 50 kB\nCached: 250 kB\n";
        assert_eq!(parse_meminfo(old), Some((1000, 400)));
        assert_eq!(parse_meminfo("MemFree: 5 kB\n"), None);
        assert_eq!(parse_meminfo("MemTotal: 0 kB\n"), None);
        // Available can never exceed total.
        assert_eq!(
            parse_meminfo("MemTotal: 10 kB\nMemAvailable: 20 kB\n"),
            Some((10, 10))
        );
    }

    #[test]
    fn net_dev_lines_with_and_without_a_gap_after_the_colon() {
        let text = "Inter-|   Receive |  Transmit\n face |bytes packets|bytes\n    lo: 100 1 0 0 0 0 0 0 200 2 0 0 0 0 0 0\n  eth0:12345678901 9 0 0 0 0 0 0 42 1 0 0 0 0 0 0\n  bad: 1 2\n";
        let mut seen = Vec::new();
        for_each_interface(text, |n, rx, tx| seen.push((n.to_string(), rx, tx)));
        assert_eq!(
            seen,
            [("lo".into(), 100, 200), ("eth0".into(), 12_345_678_901, 42)]
        );
    }

    #[test]
    fn diskstats_sectors_and_device_numbers() {
        let text = " 254       0 vda 37450 8844 4842322 45391 937763 1325443 22635720 246766 0 89440\n 254       1 vda1 1 0 8 0 2 0 16 0 0 0\n junk line\n";
        let mut seen = Vec::new();
        for_each_disk(text, |n, dev, r, w| seen.push((n.to_string(), dev, r, w)));
        assert_eq!(
            seen,
            [
                ("vda".into(), 254 << 32, 4_842_322, 22_635_720),
                ("vda1".into(), (254 << 32) | 1, 8, 16)
            ]
        );
    }

    #[test]
    fn cgroup_files() {
        assert_eq!(parse_cpu_max("150000 100000\n"), Some((150_000, 100_000)));
        assert_eq!(parse_cpu_max("max 100000\n"), None);
        assert_eq!(parse_number("max\n"), None);
        assert_eq!(parse_number("1073741824\n"), Some(1 << 30));
        let stat = "anon 10\nfile 20\ninactive_file 300\nactive_file 4\n";
        assert_eq!(parse_keyed(stat, "inactive_file"), Some(300));
        assert_eq!(parse_keyed(stat, "file"), Some(20));
        assert_eq!(parse_keyed(stat, "missing"), None);
        assert_eq!(
            parse_keyed("usage_usec 12345\nuser_usec 1\n", "usage_usec"),
            Some(12_345)
        );
        let io =
            "254:0 rbytes=4096 wbytes=100 rios=1 wios=2 dbytes=0 dios=0\n8:0 rbytes=1 wbytes=x\n";
        assert_eq!(parse_io_stat(io), (4097, 100));
        assert_eq!(parse_io_stat(""), (0, 0));
    }
}
