//! What a VM asks of its size: vCPUs busy (`cpu% x vCPUs`) and memory in
//! use (`mem% x MiB`), exact. A sample's demand depends on the size it ran
//! at, which changes only when the VM is resized, so the CPU and memory
//! counts are kept per size (a few per VM; [`MAX_SIZES`] at most): any
//! percentile of demand and any size's share of samples over it come out
//! exact from them, in memory bounded by the sizes, not the samples.
//!
//! The report asks two things: the percentiles and peaks its rules size by
//! ([`Demand`], at [`Accumulator::finish`](super::Accumulator::finish)),
//! and, for the sizes it will show, how many samples each would not have
//! held (a [`Probe`] names them once the figures are known), so the counts
//! themselves never leave the accumulator.

use serde::Serialize;

use super::VmSummary;
use super::counts::PctCounts;

/// Distinct sizes whose counts a VM keeps: a VM resized more often than
/// this within the window is rare; past it (a spoofer claiming a new size
/// in each datagram) new sizes' samples are left out of the demand, and
/// the summary is marked capped.
pub(super) const MAX_SIZES: usize = 8;

/// CPU and memory counts of the samples taken at one size.
pub(super) struct SizeCounts {
    pub(super) size: (u16, u32),
    pub(super) cpu: PctCounts,
    pub(super) mem: PctCounts,
}

/// Counts per size. Slots are kept across resets: each holds two 80 kB
/// count arrays, allocated once per reading thread.
#[derive(Default)]
pub(super) struct BySize {
    slots: Vec<SizeCounts>,
    used: usize,
}

impl BySize {
    /// The counts of `size`; `None` when [`MAX_SIZES`] others are held.
    pub(super) fn of(&mut self, size: (u16, u32)) -> Option<&mut SizeCounts> {
        if let Some(i) = self.slots[..self.used].iter().position(|s| s.size == size) {
            return Some(&mut self.slots[i]);
        }
        if self.used == MAX_SIZES {
            return None;
        }
        if self.used == self.slots.len() {
            self.slots.push(SizeCounts {
                size,
                cpu: PctCounts::new(),
                mem: PctCounts::new(),
            });
        }
        let slot = &mut self.slots[self.used];
        slot.size = size;
        self.used += 1;
        Some(slot)
    }

    pub(super) fn used(&self) -> &[SizeCounts] {
        &self.slots[..self.used]
    }

    pub(super) fn reset(&mut self) {
        for s in &mut self.slots[..self.used] {
            s.cpu.reset();
            s.mem.reset();
        }
        self.used = 0;
    }

    /// Every sample's CPU demand in hundredths of a percent of one vCPU
    /// (`cpu_x100 x vcpus`), with its count, lowest first.
    fn cpu_demand(&self) -> Vec<(u64, u64)> {
        self.merged(|s| (&s.cpu, u64::from(s.size.0)))
    }

    /// Every sample's memory in use in hundredths of a percent of a MiB
    /// (`mem_x100 x mem_mib`), with its count, lowest first.
    fn mem_in_use(&self) -> Vec<(u64, u64)> {
        self.merged(|s| (&s.mem, u64::from(s.size.1)))
    }

    /// The counts of every size scaled by its factor, in one ascending
    /// list (one size is already in order; more are sorted).
    fn merged(&self, of: impl Fn(&SizeCounts) -> (&PctCounts, u64)) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = self
            .used()
            .iter()
            .flat_map(|s| {
                let (counts, factor) = of(s);
                counts.seen().map(move |(v, c)| (v as u64 * factor, c))
            })
            .collect();
        if self.used > 1 {
            out.sort_unstable();
        }
        out
    }

    /// The window's demand figures, at `cpu_percentile` and the fixed
    /// percentiles the vendors' rules use.
    pub(super) fn demand(&self, cpu_percentile: f64) -> Demand {
        let cpu = self.cpu_demand();
        let mem = self.mem_in_use();
        let [cpu_p95, cpu_p995, cpu_at] = ranked(&cpu, [95.0, 99.5, cpu_percentile]);
        let last = |list: &[(u64, u64)]| list.last().map_or(0, |(v, _)| *v);
        Demand {
            cpu_percentile,
            cpu_p95: vcpus_of(cpu_p95),
            cpu_p995: vcpus_of(cpu_p995),
            cpu_at: vcpus_of(cpu_at),
            cpu_max: vcpus_of(last(&cpu)),
            mem_max_gib: gib_of(last(&mem)),
            mem_max_samples: mem.last().map_or(0, |(_, c)| *c),
            mem_next_gib: gib_of(mem.iter().rev().nth(1).map_or(0, |(v, _)| *v)),
            samples: cpu.iter().map(|(_, c)| c).sum(),
            over: Vec::new(),
        }
    }

    /// For each of `sizes` (vCPUs, GiB), the samples whose CPU demand
    /// exceeds its vCPUs or whose memory in use exceeds its memory.
    pub(super) fn over(&self, sizes: &[(u32, f64)]) -> Vec<Over> {
        let cpu = self.cpu_demand();
        let mem = self.mem_in_use();
        sizes
            .iter()
            .map(|&(vcpus, mem_gib)| {
                let cpu_over = above(&cpu, |v| v > u64::from(vcpus) * ONE_X100);
                let mem_over = above(&mem, |v| v as f64 > mem_gib * 1024.0 * ONE_X100 as f64);
                Over {
                    vcpus,
                    mem_gib,
                    cpu: cpu_over,
                    mem: mem_over,
                }
            })
            .collect()
    }
}

/// 100 % in hundredths of a percent.
const ONE_X100: u64 = 10_000;

fn vcpus_of(demand_x100: u64) -> f64 {
    demand_x100 as f64 / ONE_X100 as f64
}

fn gib_of(in_use_x100: u64) -> f64 {
    in_use_x100 as f64 / ONE_X100 as f64 / 1024.0
}

/// Nearest-rank values of an ascending (value, count) list at `ps`
/// (ascending percents); 0 for an empty list.
fn ranked<const N: usize>(list: &[(u64, u64)], ps: [f64; N]) -> [u64; N] {
    let n: u64 = list.iter().map(|(_, c)| c).sum();
    ps.map(|p| {
        let rank = ((p / 100.0) * n as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        list.iter()
            .find(|(_, c)| {
                seen += c;
                seen >= rank
            })
            .map_or(0, |(v, _)| *v)
    })
}

/// Samples of an ascending list whose value passes `over` (true from some
/// value on).
fn above(list: &[(u64, u64)], over: impl Fn(u64) -> bool) -> u64 {
    let first = list.partition_point(|(v, _)| !over(*v));
    list[first..].iter().map(|(_, c)| c).sum()
}

/// A VM's demand over the window (vCPUs busy, GiB in use), and what the
/// sizes its report shows would not have held.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Demand {
    /// The percentile `cpu_at` is taken at (`--cpu-percentile`).
    pub cpu_percentile: f64,
    pub cpu_p95: f64,
    pub cpu_p995: f64,
    pub cpu_at: f64,
    pub cpu_max: f64,
    pub mem_max_gib: f64,
    /// Samples at that peak, and the highest value below it: whether one
    /// datagram alone decides the memory a VM needs.
    pub mem_max_samples: u64,
    pub mem_next_gib: f64,
    /// Samples counted (all but those of sizes past [`MAX_SIZES`]).
    pub samples: u64,
    /// The sizes the [`Probe`] asked for, with their samples over.
    #[serde(skip)]
    pub over: Vec<Over>,
}

impl Demand {
    /// The samples `size` would not have held, if it was probed.
    pub fn over_at(&self, vcpus: u32, mem_gib: f64) -> Option<&Over> {
        self.over
            .iter()
            .find(|o| o.vcpus == vcpus && o.mem_gib == mem_gib)
    }
}

/// Samples over one size: CPU demand above its vCPUs, memory in use above
/// its memory.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Over {
    pub vcpus: u32,
    pub mem_gib: f64,
    pub cpu: u64,
    pub mem: u64,
}

impl Over {
    /// The share of `samples` over on either count. Exact when one count
    /// is 0, which it is for every size the rules recommend (each holds
    /// the memory peak); otherwise the sum, an upper bound, since a
    /// sample over on both is counted twice (the counts per dimension
    /// keep no joint distribution).
    pub fn share(&self, samples: u64) -> f64 {
        let over = self.cpu.saturating_add(self.mem).min(samples);
        over as f64 / samples.max(1) as f64
    }
}

/// What the report's rules ask of a VM's demand: the CPU percentile they
/// size by, and, given its figures, the sizes (vCPUs, GiB) whose risk they
/// will show.
pub trait Probe: Sync {
    fn cpu_percentile(&self) -> f64;
    fn sizes(&self, vm: &VmSummary) -> Vec<(u32, f64)>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(size: (u16, u32), cpu: &[(u16, u64)], mem: &[(u16, u64)]) -> BySize {
        let mut by = BySize::default();
        let s = by.of(size).unwrap();
        cpu.iter().for_each(|(v, n)| s.cpu.add_n(*v, *n));
        mem.iter().for_each(|(v, n)| s.mem.add_n(*v, *n));
        by
    }

    #[test]
    fn demand_is_percent_times_vcpus_across_sizes() {
        // 90 samples at 50 % of 4 vCPUs (2 busy), 10 at 50 % of 8 (4 busy).
        let mut by = counts((4, 8192), &[(5000, 90)], &[(5000, 90)]);
        let big = by.of((8, 16_384)).unwrap();
        big.cpu.add_n(5000, 10);
        big.mem.add_n(2500, 10);
        let d = by.demand(90.0);
        assert_eq!((d.cpu_p95, d.cpu_at, d.cpu_max), (4.0, 2.0, 4.0));
        assert_eq!(d.mem_max_gib, 4.0, "50 % of 8 GiB, 25 % of 16 GiB");
        assert_eq!(d.samples, 100);
        let over = by.over(&[(2, 4.0), (3, 2.0), (4, 64.0)]);
        assert_eq!((over[0].cpu, over[0].mem), (10, 0));
        assert_eq!((over[1].cpu, over[1].mem), (10, 100));
        assert_eq!(over[1].share(100), 1.0, "an upper bound, capped");
        assert_eq!(over[2].share(100), 0.0, "4 busy does not exceed 4");
    }

    #[test]
    fn sizes_past_the_bound_are_not_counted() {
        let mut by = BySize::default();
        for v in 1..=MAX_SIZES as u16 {
            by.of((v, 1024)).unwrap().cpu.add(100);
        }
        assert!(by.of((99, 1024)).is_none());
        assert!(by.of((3, 1024)).is_some(), "a size already held");
        by.reset();
        assert!(by.used().is_empty());
        assert!(by.of((99, 1024)).is_some(), "room again after a reset");
    }
}
