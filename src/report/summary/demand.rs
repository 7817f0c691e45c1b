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
use super::counts::{PctCounts, nearest_rank};

/// Distinct sizes whose counts a VM keeps: a VM resized more often than
/// this within the window is rare; past it (a spoofer claiming a new size
/// in each datagram) new sizes' samples are counted apart, in the VM's
/// CPU and memory figures but not in its demand, and the summary is
/// marked capped.
pub(super) const MAX_SIZES: usize = 8;

/// CPU and memory counts of the samples taken at one size (`None`: the
/// samples of sizes past [`MAX_SIZES`]).
pub(super) struct SizeCounts {
    pub(super) size: Option<(u16, u32)>,
    pub(super) cpu: PctCounts,
    pub(super) mem: PctCounts,
}

impl SizeCounts {
    fn new(size: Option<(u16, u32)>) -> SizeCounts {
        SizeCounts {
            size,
            cpu: PctCounts::new(),
            mem: PctCounts::new(),
        }
    }
}

/// Every sample's CPU and memory counts, per size: the VM's own figures
/// are their sum (one size's counts as they are). Slots are kept across
/// resets: each holds two 80 kB count arrays, allocated once per reading
/// thread.
pub(super) struct BySize {
    /// `slots[..used]` in use, then the rest (`size: None`) at `MAX_SIZES`.
    slots: Vec<SizeCounts>,
    used: usize,
}

impl Default for BySize {
    fn default() -> Self {
        BySize {
            slots: vec![SizeCounts::new(None)],
            used: 0,
        }
    }
}

impl BySize {
    /// The counts of `size`, and whether they are its own (false: the
    /// [`MAX_SIZES`] others are held, and they go to the rest).
    pub(super) fn of(&mut self, size: (u16, u32)) -> (&mut SizeCounts, bool) {
        let rest = self.slots.len() - 1;
        if let Some(i) = self.slots[..self.used]
            .iter()
            .position(|s| s.size == Some(size))
        {
            return (&mut self.slots[i], true);
        }
        if self.used == MAX_SIZES {
            return (&mut self.slots[rest], false);
        }
        if self.used == rest {
            self.slots.insert(rest, SizeCounts::new(None));
        }
        let slot = &mut self.slots[self.used];
        slot.size = Some(size);
        self.used += 1;
        (slot, true)
    }

    /// The counts of a stored size (`None`: the rest).
    pub(super) fn of_stored(&mut self, size: Option<(u16, u32)>) -> (&mut SizeCounts, bool) {
        match size {
            Some(size) => self.of(size),
            None => (self.slots.last_mut().expect("the rest is last"), false),
        }
    }

    /// The sizes in use, then the rest when it holds any sample.
    pub(super) fn used(&self) -> impl Iterator<Item = &SizeCounts> {
        let rest = self.slots.last().filter(|r| r.cpu.n > 0);
        self.slots[..self.used].iter().chain(rest)
    }

    /// The sizes in use: what demand is made of.
    fn sized(&self) -> &[SizeCounts] {
        &self.slots[..self.used]
    }

    pub(super) fn reset(&mut self) {
        for s in &mut self.slots[..self.used] {
            s.cpu.reset();
            s.mem.reset();
        }
        let rest = self.slots.last_mut().expect("the rest is last");
        rest.cpu.reset();
        rest.mem.reset();
        self.used = 0;
    }

    /// The VM's CPU and memory counts over every size: one size's as they
    /// are, several summed (a resized VM's, once per summary).
    pub(super) fn all(&self) -> All<'_> {
        let mut used = self.used();
        match (used.next(), used.next()) {
            (None, _) => All::One(self.slots.last().expect("the rest is last")),
            (Some(one), None) => All::One(one),
            (Some(_), Some(_)) => {
                let mut sum = SizeCounts::new(None);
                for s in self.used() {
                    s.cpu.seen().for_each(|(v, c)| sum.cpu.add_n(v as u16, c));
                    s.mem.seen().for_each(|(v, c)| sum.mem.add_n(v as u16, c));
                }
                All::Summed(Box::new(sum))
            }
        }
    }

    /// Every sample's CPU demand in hundredths of a percent of one vCPU
    /// (`cpu_x100 x vcpus`).
    fn cpu_demand(&self) -> Scaled<'_> {
        self.scaled(|s| (&s.cpu, u64::from(s.size.map_or(0, |s| s.0))))
    }

    /// Every sample's memory in use in hundredths of a percent of a MiB
    /// (`mem_x100 x mem_mib`).
    fn mem_in_use(&self) -> Scaled<'_> {
        self.scaled(|s| (&s.mem, u64::from(s.size.map_or(0, |s| s.1))))
    }

    /// The counts of every size, each scaled by its factor: one size's
    /// counts read in place (the common case, no allocation), several
    /// merged into one ascending list.
    fn scaled(&self, of: impl Fn(&SizeCounts) -> (&PctCounts, u64)) -> Scaled<'_> {
        if let [one] = self.sized() {
            let (counts, factor) = of(one);
            return Scaled::One(counts, factor);
        }
        let mut out: Vec<(u64, u64)> = self
            .sized()
            .iter()
            .flat_map(|s| {
                let (counts, factor) = of(s);
                counts.seen().map(move |(v, c)| (v as u64 * factor, c))
            })
            .collect();
        out.sort_unstable();
        Scaled::Many(out)
    }

    /// The VM's CPU and memory percentiles and its demand, `cpu_percentile`
    /// among them. With one size (the common case) demand is its CPU
    /// counts times its vCPUs, so one pass over the counts gives both.
    pub(super) fn figures(&self, cpu_percentile: f64) -> Figures {
        let all = self.all();
        let ps = [50.0, 95.0, 99.0, 99.5, cpu_percentile];
        let [p50, p95, p99, p995, at] = all.cpu.ranked_any(ps);
        let [mem_p95] = all.mem.ranked([95.0]);
        let pct = |v: usize| v as f64 / 100.0;
        let demand = match (self.sized(), &all) {
            ([one], All::One(_)) => {
                let f = u64::from(one.size.map_or(0, |s| s.0));
                self.demand([p95, p995, at].map(|v| v as u64 * f), cpu_percentile)
            }
            _ => self.demand(
                self.cpu_demand().ranked([95.0, 99.5, cpu_percentile]),
                cpu_percentile,
            ),
        };
        Figures {
            cpu: [pct(p50), pct(p95), pct(p99), all.cpu.max()],
            mem: [pct(mem_p95), all.mem.max()],
            samples: all.cpu.n,
            demand,
        }
    }

    /// The demand figures, given vCPUs busy (hundredths) at p95, p99.5
    /// and `cpu_percentile`.
    fn demand(&self, [p95, p995, at]: [u64; 3], cpu_percentile: f64) -> Demand {
        let cpu = self.cpu_demand();
        let (cpu_max, _, _) = cpu.top();
        let (mem_max, at_max, mem_next) = self.mem_in_use().top();
        Demand {
            cpu_percentile,
            cpu_p95: vcpus_of(p95),
            cpu_p995: vcpus_of(p995),
            cpu_at: vcpus_of(at),
            cpu_max: vcpus_of(cpu_max),
            mem_max_gib: gib_of(mem_max),
            mem_max_samples: at_max,
            mem_next_gib: gib_of(mem_next),
            samples: cpu.total(),
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
            .map(|&(vcpus, mem_gib)| Over {
                vcpus,
                mem_gib,
                cpu: cpu.above(|v| v > u64::from(vcpus) * ONE_X100),
                mem: mem.above(|v| v as f64 > mem_gib * 1024.0 * ONE_X100 as f64),
            })
            .collect()
    }
}

/// A VM's CPU and memory percentiles (p50, p95, p99, max; p95, max, in
/// percent) and its demand.
pub(super) struct Figures {
    pub(super) cpu: [f64; 4],
    pub(super) mem: [f64; 2],
    pub(super) samples: u64,
    pub(super) demand: Demand,
}

/// A VM's CPU and memory counts over all its sizes.
pub(super) enum All<'a> {
    One(&'a SizeCounts),
    Summed(Box<SizeCounts>),
}

impl std::ops::Deref for All<'_> {
    type Target = SizeCounts;

    fn deref(&self) -> &SizeCounts {
        match self {
            All::One(s) => s,
            All::Summed(s) => s,
        }
    }
}

/// One dimension's values over every size a VM ran at, ascending.
enum Scaled<'a> {
    /// One size: its counts, and what each value is multiplied by.
    One(&'a PctCounts, u64),
    /// Several: (value, count) merged.
    Many(Vec<(u64, u64)>),
}

impl Scaled<'_> {
    fn total(&self) -> u64 {
        match self {
            Scaled::One(counts, _) => counts.n,
            Scaled::Many(list) => list.iter().map(|(_, c)| c).sum(),
        }
    }

    /// Nearest-rank values at `ps` (in any order); 0 when empty.
    fn ranked<const N: usize>(&self, ps: [f64; N]) -> [u64; N] {
        match self {
            Scaled::One(counts, f) => counts.ranked_any(ps).map(|v| v as u64 * f),
            Scaled::Many(list) => {
                let n = self.total();
                ps.map(|p| {
                    let rank = nearest_rank(p, n);
                    let mut seen = 0;
                    list.iter()
                        .find(|(_, c)| {
                            seen += c;
                            seen >= rank
                        })
                        .map_or(0, |(v, _)| *v)
                })
            }
        }
    }

    /// The highest value, its count, and the next value below it.
    fn top(&self) -> (u64, u64, u64) {
        match self {
            Scaled::One(counts, f) => {
                let (hi, n, below) = counts.top();
                (hi as u64 * f, n, below as u64 * f)
            }
            Scaled::Many(list) => {
                let top = list.last().copied().unwrap_or((0, 0));
                // Equal values of two sizes are separate entries.
                let at_top: u64 = list
                    .iter()
                    .rev()
                    .take_while(|(v, _)| *v == top.0)
                    .map(|(_, c)| c)
                    .sum();
                let below = list
                    .iter()
                    .rev()
                    .find(|(v, _)| *v < top.0)
                    .map_or(0, |(v, _)| *v);
                (top.0, at_top, below)
            }
        }
    }

    /// Samples whose value passes `over` (true from some value on).
    fn above(&self, over: impl Fn(u64) -> bool) -> u64 {
        match self {
            Scaled::One(counts, f) => {
                // The first value (in hundredths) whose scaled value
                // passes, by bisection over 0..=100 %.
                let (mut lo, mut hi) = (0, usize::from(crate::wire::MAX_PCT_X100) + 1);
                while lo < hi {
                    let mid = (lo + hi) / 2;
                    if over(mid as u64 * f) {
                        hi = mid;
                    } else {
                        lo = mid + 1;
                    }
                }
                counts.count_from(lo)
            }
            Scaled::Many(list) => {
                let first = list.partition_point(|(v, _)| !over(*v));
                list[first..].iter().map(|(_, c)| c).sum()
            }
        }
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
        let (s, _) = by.of(size);
        cpu.iter().for_each(|(v, n)| s.cpu.add_n(*v, *n));
        mem.iter().for_each(|(v, n)| s.mem.add_n(*v, *n));
        by
    }

    #[test]
    fn demand_is_percent_times_vcpus_across_sizes() {
        // 90 samples at 50 % of 4 vCPUs (2 busy), 10 at 50 % of 8 (4 busy).
        let mut by = counts((4, 8192), &[(5000, 90)], &[(5000, 90)]);
        let (big, _) = by.of((8, 16_384));
        big.cpu.add_n(5000, 10);
        big.mem.add_n(2500, 10);
        let d = by.figures(90.0).demand;
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
    fn sizes_past_the_bound_count_in_the_vm_but_not_in_demand() {
        let mut by = BySize::default();
        for v in 1..=MAX_SIZES as u16 {
            let (s, own) = by.of((v, 1024));
            assert!(own);
            s.cpu.add(100);
        }
        let (rest, own) = by.of((99, 1024));
        assert!(!own);
        rest.cpu.add(9000);
        assert!(by.of((3, 1024)).1, "a size already held");
        let f = by.figures(100.0);
        assert_eq!((f.samples, f.demand.samples), (9, 8), "not in its demand");
        assert_eq!(f.demand.cpu_max, 0.08, "1 % of 8 vCPUs");
        assert_eq!(f.cpu[3], 90.0, "the VM's own maximum");
        by.reset();
        assert_eq!(by.used().count(), 0);
        assert!(by.of((99, 1024)).1, "room again after a reset");
    }
}
