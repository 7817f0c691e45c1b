//! Where each UTC day's rows lie: for every day with rows in a window,
//! the byte ranges of the VM files that hold them and a fingerprint of
//! what they hold, from the summary store (built where it is missing, as
//! a report builds it). The export reads a day again only when its
//! fingerprint changed, and then only that day's bytes.
//!
//! A day's fingerprint is a sum of one hash per (file, day) segment: its
//! VM, its file's device and inode, its bytes and its summarized state,
//! and the window's start when the window cuts the day. A row appended,
//! changed or removed changes the segment's bytes or state; a file
//! rotated keeps its inode (and so the fingerprint); a file replaced does
//! not. The sum does not depend on the order the VMs were read in.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::ReportError;
use super::cache::{self, CacheDirs};
use super::scan::{self, Part, Window};
use super::segment::{Cover, cover};
use super::summary::{Accumulator, DAY_MS};
use crate::wire::Row;

/// The bytes `[first_byte, end_byte)` of a VM's part `part` (an index into
/// its parts in [`DayPlan::vms`]) that hold rows of one day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Piece {
    pub vm: usize,
    pub part: usize,
    pub first_byte: u64,
    pub end_byte: u64,
}

/// One day's pieces, in VM and part order, and its fingerprint.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Day {
    pub fingerprint: u64,
    pub pieces: Vec<Piece>,
}

/// Every VM's files, and the days the window holds rows of.
pub struct DayPlan {
    pub window: Window,
    pub vms: Vec<(IpAddr, Vec<Part>)>,
    /// By day number (days since the Unix epoch).
    pub days: BTreeMap<u64, Day>,
}

/// The plan of `data_dirs` over `window`, on `threads` threads. A part
/// that cannot be read is named on stderr and left out.
pub fn plan(data_dirs: &[PathBuf], window: Window, threads: usize) -> Result<DayPlan, ReportError> {
    let vms = scan::vm_files(data_dirs)?;
    let caches = CacheDirs::open(data_dirs, &scan::dirs_with_files(&vms));
    let days = Mutex::new(BTreeMap::<u64, Day>::new());
    let next = AtomicUsize::new(0);
    let quiet = crate::is_quiet();
    cache::with_writer(&caches, None, |writes| {
        std::thread::scope(|scope| {
            for _ in 0..threads.clamp(1, vms.len().max(1)) {
                let writes = writes.clone();
                let (vms, days, next, caches) = (&vms, &days, &next, &caches);
                scope.spawn(move || {
                    crate::quietly(quiet, || {
                        let mut acc = Accumulator::default();
                        let mut found = Vec::new();
                        loop {
                            let vm = next.fetch_add(1, Ordering::Relaxed);
                            let Some((ip, parts)) = vms.get(vm) else {
                                break;
                            };
                            for (part, p) in parts.iter().enumerate() {
                                let read = cache::segments(p, &window, caches, &mut acc, &writes);
                                let (part_found, segments) = match read {
                                    Ok(Some(read)) => read,
                                    Ok(None) => continue,
                                    Err(e) => {
                                        crate::log_line(&format!(
                                            "warning: {e}; file left out of the export"
                                        ));
                                        continue;
                                    }
                                };
                                let meta = &part_found.meta;
                                for seg in &segments {
                                    let cut = match cover(seg, &window) {
                                        Cover::Outside => continue,
                                        Cover::Whole => 0,
                                        Cover::Cut => window.from_ms.unwrap_or(0),
                                    };
                                    let print = cache::checksum_of(&[
                                        &ip_bytes(*ip),
                                        &meta.dev().to_le_bytes(),
                                        &meta.ino().to_le_bytes(),
                                        &seg.first_byte.to_le_bytes(),
                                        &seg.end_byte.to_le_bytes(),
                                        &cut.to_le_bytes(),
                                        &seg.state,
                                    ]);
                                    let piece = Piece {
                                        vm,
                                        part,
                                        first_byte: seg.first_byte,
                                        end_byte: seg.end_byte,
                                    };
                                    found.push((seg.day, print, piece));
                                }
                            }
                        }
                        let mut days = days.lock().expect("no panic holds it");
                        for (day, print, piece) in found {
                            let d = days.entry(day).or_default();
                            d.fingerprint = d.fingerprint.wrapping_add(print);
                            d.pieces.push(piece);
                        }
                    })
                });
            }
        })
    });
    let mut days = days.into_inner().expect("no panic holds it");
    for d in days.values_mut() {
        d.pieces.sort_unstable();
    }
    Ok(DayPlan { window, vms, days })
}

fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

/// Calls `f` with each row of `piece` received on `day` and inside
/// `window`, in file order (duplicates included: the caller keeps the
/// first of each datagram). A part that cannot be read is an error.
pub fn each_row(
    part: &Part,
    piece: &Piece,
    day: u64,
    window: &Window,
    mut f: impl FnMut(&Row),
) -> Result<(), ReportError> {
    let err = |error| ReportError::File {
        path: part.path.clone(),
        error,
    };
    let Some((file, _)) = scan::open_regular_part(part)? else {
        return Ok(());
    };
    let reader =
        scan::reader_at(&file, part, piece.first_byte, Some(piece.end_byte)).map_err(err)?;
    scan::each_line(reader, piece.first_byte, piece.end_byte, |row, _, _| {
        if let Some(row) = row
            && row.recv_ms / DAY_MS == day
            && window.contains(row.recv_ms)
        {
            f(&row);
        }
    })
    .map_err(err)?;
    Ok(())
}
