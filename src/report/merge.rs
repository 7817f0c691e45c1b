//! One VM's summary from its files' per-day segments: the days the window
//! covers merged from their stored state, the days it cuts read again, and
//! the VM read row by row where merging would not be exact.
//!
//! This is where the cache (which keeps segments) and the segments (which
//! a file's rows are built into) meet, so neither needs the other.

use std::net::IpAddr;

use crossbeam_channel::Sender;

use super::cache::{self, CacheDirs};
use super::policy::Probe;
use super::scan::{self, Found, Part, Window};
use super::segment::{Cover, Segment, cover};
use super::summary::{Accumulator, DAY_MS, TimeOrder, Unmergeable, VmSummary};

/// Per-thread state, reused from VM to VM.
pub struct Scratch {
    vm: Accumulator,
    part: Accumulator,
    writes: Sender<cache::EntryWrite>,
}

impl Scratch {
    /// Sending cache entries to be written to `writes`.
    pub fn new(writes: Sender<cache::EntryWrite>) -> Scratch {
        Scratch {
            vm: Accumulator::default(),
            part: Accumulator::default(),
            writes,
        }
    }
}

/// One VM's summary over `window` from all its parts, or `None` when no
/// row of it lies in the window: the parts' segments (cached where the
/// cache is current) merged, the days the window cuts read again. A part
/// that cannot be read is named on stderr and left out.
pub fn summarize_vm(
    ip: IpAddr,
    parts: &[Part],
    window: &Window,
    probe: &Probe,
    caches: &CacheDirs,
    scratch: &mut Scratch,
) -> Option<VmSummary> {
    scratch.vm.reset();
    for part in parts {
        let read = cache::segments(part, window, caches, &mut scratch.part, &scratch.writes);
        let (mut found, segments) = match read {
            Ok(Some(read)) => read,
            Ok(None) => continue,
            Err(e) => {
                crate::log_line(&format!("warning: {e}; file left out of the report"));
                continue;
            }
        };
        scratch.vm.start_file();
        match merge_part(part, &mut found, &segments, window, scratch) {
            Ok(()) => {}
            Err(why) => {
                if why == Some(Unmergeable::Corrupt) {
                    // A stored day that fails its checks: build it anew next time.
                    caches.forget(part, &found.meta, &scratch.writes);
                }
                // Merging would not be exact: read the VM's rows in order.
                return scan::read_vm(ip, parts, window, probe, false)
                    .and_then(|vm| trusted(vm, ip, parts, window, probe));
            }
        }
    }
    if scratch.vm.capped() {
        return scan::read_vm(ip, parts, window, probe, false)
            .and_then(|vm| trusted(vm, ip, parts, window, probe));
    }
    let vm = scratch.vm.finish(ip, probe)?;
    trusted(vm, ip, parts, window, probe)
}

/// The VM judged by what was proven: when some of its rows in the window
/// are verified (or the report requires it), its unverified rows claim
/// its address without proof, so it is read again without them. Rare
/// (an attack, or agents moving to version 2), so the slow way is fine.
fn trusted(
    vm: VmSummary,
    ip: IpAddr,
    parts: &[Part],
    window: &Window,
    probe: &Probe,
) -> Option<VmSummary> {
    let d = &vm.datagrams;
    let proven = d.authenticated > 0 || probe.settings.require_auth;
    if proven && d.authenticated < d.samples {
        return scan::read_vm(ip, parts, window, probe, true);
    }
    Some(vm)
}

/// Adds a part's segments in the window to `scratch.vm`; on error, why a
/// segment would not merge (`None`: its cut day could not be read).
fn merge_part(
    part: &Part,
    found: &mut Found,
    segments: &[Segment],
    window: &Window,
    scratch: &mut Scratch,
) -> Result<(), Option<Unmergeable>> {
    for seg in segments {
        match cover(seg, window) {
            Cover::Outside => {}
            Cover::Whole => scratch.vm.absorb(&seg.state, seg.bounds()).map_err(Some)?,
            Cover::Cut => read_cut(found, part, seg, window, &mut scratch.vm).map_err(|e| {
                crate::log_line(&format!(
                    "warning: cannot read {}: {e}",
                    part.path.display()
                ));
                None
            })?,
        }
    }
    Ok(())
}

/// Adds a segment's rows inside the window to `acc`, read from its file:
/// in a plain file from where the window begins (a binary search within
/// the segment's bytes). Added as rows, in file order, after the file's
/// segments before it: exactly what reading the file in order does.
fn read_cut(
    found: &mut Found,
    part: &Part,
    seg: &Segment,
    window: &Window,
    acc: &mut Accumulator,
) -> std::io::Result<()> {
    let file = found.file(part)?;
    let start = match window.from_ms {
        Some(from) if !part.gzip => scan::window_start(file, seg.first_byte, seg.end_byte, from)?,
        _ => seg.first_byte,
    };
    let reader = scan::reader_at(file, part, start, Some(seg.end_byte))?;
    let mut order = TimeOrder::default();
    scan::each_line(reader, start, seg.end_byte, |row, _, _| match row {
        Some(row) if row.recv_ms / DAY_MS == seg.day && window.contains(row.recv_ms) => {
            acc.add_after(&row, &mut order)
        }
        Some(_) => {}
        None => acc.add_bad_row(),
    })?;
    Ok(())
}
