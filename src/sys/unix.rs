//! What every Unix offers alike: the open-file limit, `openat`/`unlinkat`
//! relative to a directory handle, and the clock tick of `/proc/stat`.

/// Raises the soft open-file limit to the hard limit and returns the limit
/// now in force (`None` where the platform has no such limit).
pub fn raise_nofile_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit; failure leaves the old limit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim = raised;
        }
    }
    Some(lim.rlim_cur)
}

/// Opens `name` in the directory `dir` (`openat`) with `flags` (and
/// `mode` when it creates), never following a symlink at the name: the
/// summary cache works only through its directory's handle, so a `.vmstats`
/// swapped for a link while a report runs leads nowhere else. A name with a
/// `/` is refused: it could leave the directory.
pub fn open_at(
    dir: &std::fs::File,
    name: &str,
    flags: libc::c_int,
    mode: u32,
) -> std::io::Result<std::fs::File> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let name = plain_name(name)?;
    let flags = flags | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NOCTTY;
    // SAFETY: `dir` is an open descriptor for the call's duration and
    // `name` a NUL-terminated string; the mode is passed as openat's
    // variadic unsigned argument.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags, mode as libc::c_uint) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}

/// Removes `name` from the directory `dir` (`unlinkat`): a link planted
/// there is removed, not followed.
pub fn unlink_at(dir: &std::fs::File, name: &str) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let name = plain_name(name)?;
    // SAFETY: `dir` is an open descriptor, `name` NUL-terminated.
    if unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn plain_name(name: &str) -> std::io::Result<std::ffi::CString> {
    let refused = || std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a plain file name");
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(refused());
    }
    std::ffi::CString::new(name).map_err(|_| refused())
}

/// USER_HZ: the unit of `/proc/stat`'s CPU times (100 on every Linux
/// build in practice, but the kernel says so here).
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as u64 } else { 100 }
}
