//! Linux: the batched receive and send, and the socket and filesystem
//! calls only Linux has.

use super::{BATCH, Outgoing, RECV_BUF_LEN, RecvBatch};
use std::fs::File;
use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::ptr;

/// The kernel-facing half of a [`RecvBatch`]. The pointers in `hdrs` are
/// rebuilt before every call rather than kept, so moving the batch is safe.
pub struct RawRecv {
    hdrs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    names: Vec<libc::sockaddr_storage>,
}

// SAFETY: the raw pointers inside (`mmsghdr.msg_iov`, `iovec.iov_base`,
// `msg_name`) point only into buffers of the same `RecvBatch`, are
// rebuilt before every call and never read after it; no other thread
// holds them, so a receive loop may move to a thread of its own
// (`--receivers`).
unsafe impl Send for RawRecv {}

impl RawRecv {
    pub fn new() -> Self {
        // SAFETY: mmsghdr, iovec and sockaddr_storage are plain C structs
        // for which all-zero bytes are a valid (empty) value.
        unsafe {
            RawRecv {
                hdrs: vec![mem::zeroed(); BATCH],
                iovs: vec![mem::zeroed(); BATCH],
                names: vec![mem::zeroed(); BATCH],
            }
        }
    }
}

fn source_of(name: &libc::sockaddr_storage) -> IpAddr {
    match name.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in,
            // and sockaddr_storage is large and aligned enough for it.
            let sin = unsafe { &*(name as *const _ as *const libc::sockaddr_in) };
            IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe { &*(name as *const _ as *const libc::sockaddr_in6) };
            IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr))
        }
        _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    }
}

/// Receives up to [`BATCH`] datagrams with one `recvmmsg`, without
/// blocking. `Err(WouldBlock)` when none is waiting.
pub fn recv_batch(socket: &mio::net::UdpSocket, batch: &mut RecvBatch) -> io::Result<usize> {
    batch.filled = 0;
    let raw = &mut batch.raw;
    for i in 0..BATCH {
        raw.iovs[i] = libc::iovec {
            iov_base: batch.bufs[i].as_mut_ptr().cast(),
            iov_len: RECV_BUF_LEN,
        };
        let hdr = &mut raw.hdrs[i].msg_hdr;
        hdr.msg_name = (&mut raw.names[i] as *mut libc::sockaddr_storage).cast();
        hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        hdr.msg_iov = &mut raw.iovs[i];
        hdr.msg_iovlen = 1;
        hdr.msg_control = ptr::null_mut();
        hdr.msg_controllen = 0;
        hdr.msg_flags = 0;
        raw.hdrs[i].msg_len = 0;
    }
    // SAFETY: every header points at live buffers owned by `batch`
    // (names, iovecs, payload arrays) whose sizes are the lengths given,
    // and `batch` is borrowed mutably for the whole call.
    let n = unsafe {
        libc::recvmmsg(
            socket.as_raw_fd(),
            raw.hdrs.as_mut_ptr(),
            BATCH as libc::c_uint,
            libc::MSG_DONTWAIT,
            ptr::null_mut(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    for i in 0..n {
        let hdr = &raw.hdrs[i];
        batch.lens[i] = (hdr.msg_len as usize).min(RECV_BUF_LEN);
        batch.truncated[i] = hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        batch.sources[i] = source_of(&raw.names[i]);
    }
    batch.filled = n;
    Ok(n)
}

/// Room for an `IP_PKTINFO` and a `UDP_SEGMENT` control message, 8-byte
/// aligned as cmsghdr needs.
type SendCmsgs = [u64; 8];

/// Sends `msgs` to `dst` with as few `sendmmsg` calls as it takes, each
/// datagram from its own source address (`IP_PKTINFO`). The socket must be
/// bound to the unspecified address. Returns how many were sent: fewer
/// than `msgs.len()` when a send failed after some went out, `Err` when
/// none did.
pub fn send_batch(socket: &UdpSocket, dst: SocketAddrV4, msgs: &[Outgoing]) -> io::Result<usize> {
    let mut sent = 0;
    for chunk in msgs.chunks(BATCH) {
        let mut name = sockaddr_v4(dst);
        let mut iovs: [libc::iovec; BATCH] =
            // SAFETY: all-zero is a valid iovec.
            unsafe { mem::zeroed() };
        let mut cmsgs: [SendCmsgs; BATCH] = [[0; 8]; BATCH];
        // SAFETY: all-zero is a valid mmsghdr.
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { mem::zeroed() };
        for (i, m) in chunk.iter().enumerate() {
            prepare_send(
                &mut hdrs[i].msg_hdr,
                &mut iovs[i],
                &mut cmsgs[i],
                &mut name,
                m,
            );
        }
        let mut off = 0;
        while off < chunk.len() {
            // SAFETY: hdrs[off..chunk.len()] point at `name`, `iovs`,
            // `cmsgs` and the caller's payloads, all alive for the call.
            let n = unsafe {
                libc::sendmmsg(
                    socket.as_raw_fd(),
                    hdrs[off..].as_mut_ptr(),
                    (chunk.len() - off) as libc::c_uint,
                    0,
                )
            };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // Report what went out; the error shows again on the next call.
                if sent + off > 0 {
                    return Ok(sent + off);
                }
                return Err(err);
            }
            off += n as usize;
        }
        sent += chunk.len();
    }
    Ok(sent)
}

/// Points `hdr` at `m`'s payload (through `iov`), the destination `name`,
/// and control messages in `cmsg`: the source address (`IP_PKTINFO`) and,
/// for a GSO buffer, its segment size (`UDP_SEGMENT`).
fn prepare_send(
    hdr: &mut libc::msghdr,
    iov: &mut libc::iovec,
    cmsg: &mut SendCmsgs,
    name: &mut libc::sockaddr_in,
    m: &Outgoing,
) {
    // SAFETY: CMSG_SPACE is a pure size computation.
    let (info_space, seg_space) = unsafe {
        (
            libc::CMSG_SPACE(mem::size_of::<libc::in_pktinfo>() as u32) as usize,
            libc::CMSG_SPACE(mem::size_of::<u16>() as u32) as usize,
        )
    };
    assert!(info_space + seg_space <= mem::size_of::<SendCmsgs>());
    *iov = libc::iovec {
        iov_base: m.payload.as_ptr() as *mut libc::c_void,
        iov_len: m.payload.len(),
    };
    hdr.msg_name = (name as *mut libc::sockaddr_in).cast();
    hdr.msg_namelen = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    hdr.msg_iov = iov;
    hdr.msg_iovlen = 1;
    hdr.msg_control = cmsg.as_mut_ptr().cast();
    let gso = m.segment > 0;
    hdr.msg_controllen = (info_space + if gso { seg_space } else { 0 }) as _;
    // SAFETY: msg_control points at msg_controllen writable, aligned bytes,
    // room for the pktinfo cmsg and, with GSO, the segment-size cmsg after
    // it, so CMSG_FIRSTHDR/CMSG_NXTHDR return non-null headers whose
    // CMSG_DATA lies inside.
    unsafe {
        let info_hdr = libc::CMSG_FIRSTHDR(hdr);
        (*info_hdr).cmsg_level = libc::IPPROTO_IP;
        (*info_hdr).cmsg_type = libc::IP_PKTINFO;
        (*info_hdr).cmsg_len = libc::CMSG_LEN(mem::size_of::<libc::in_pktinfo>() as u32) as _;
        let info = libc::in_pktinfo {
            ipi_ifindex: 0,
            ipi_spec_dst: libc::in_addr {
                s_addr: u32::from(m.src).to_be(),
            },
            ipi_addr: libc::in_addr { s_addr: 0 },
        };
        ptr::write_unaligned(libc::CMSG_DATA(info_hdr).cast::<libc::in_pktinfo>(), info);
        if gso {
            let seg = libc::CMSG_NXTHDR(hdr, info_hdr);
            (*seg).cmsg_level = libc::SOL_UDP;
            (*seg).cmsg_type = libc::UDP_SEGMENT;
            (*seg).cmsg_len = libc::CMSG_LEN(mem::size_of::<u16>() as u32) as _;
            ptr::write_unaligned(libc::CMSG_DATA(seg).cast::<u16>(), m.segment);
        }
    }
}

fn sockaddr_v4(a: SocketAddrV4) -> libc::sockaddr_in {
    // SAFETY: all-zero is a valid sockaddr_in (it also zeroes sin_zero).
    let mut sin: libc::sockaddr_in = unsafe { mem::zeroed() };
    sin.sin_family = libc::AF_INET as libc::sa_family_t;
    sin.sin_port = a.port().to_be();
    sin.sin_addr.s_addr = u32::from(*a.ip()).to_be();
    sin
}

fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: the option value is a live c_int and its size is given.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `SO_RCVBUFFORCE`: a receive buffer above `net.core.rmem_max`, allowed
/// to root (CAP_NET_ADMIN) only.
pub fn force_recv_buffer(socket: &socket2::Socket, bytes: usize) -> io::Result<()> {
    let bytes = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    setsockopt_int(
        socket.as_raw_fd(),
        libc::SOL_SOCKET,
        libc::SO_RCVBUFFORCE,
        bytes,
    )
}

/// Datagrams the kernel dropped on this socket because its receive
/// buffer was full (`SO_MEMINFO`, Linux 4.6+; the count is 32 bits and
/// wraps).
pub fn socket_drops(socket: &mio::net::UdpSocket) -> Option<u32> {
    // SK_MEMINFO_VARS is 9 on every kernel that has SO_MEMINFO; a newer
    // kernel copies only what fits.
    let mut info = [0u32; 9];
    let mut len = mem::size_of_val(&info) as libc::socklen_t;
    // SAFETY: `info` is writable for `len` bytes and `len` is a valid
    // socklen_t the kernel may lower.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MEMINFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    let idx = libc::SK_MEMINFO_DROPS as usize;
    (rc == 0 && len as usize >= (idx + 1) * 4).then(|| info[idx])
}

/// Flushes every dirty page of the filesystem holding `file` with one
/// `syncfs`, which covers files the store already closed (LRU) as well as
/// new directory entries.
pub fn sync_filesystem(file: &File) -> io::Result<()> {
    // SAFETY: the descriptor is valid while `file` is borrowed.
    if unsafe { libc::syncfs(file.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The open flag for writes that go from the caller's memory to the disk,
/// past the page cache (`O_DIRECT`): lengths, offsets and memory aligned
/// to the disk's logical block.
pub const DIRECT_IO: libc::c_int = libc::O_DIRECT;

/// Closing needs no sync here: [`sync_filesystem`] reaches closed files.
pub fn close_file(file: File) {
    drop(file);
}

/// Lowers the calling thread's CPU priority to nice 10, for background
/// work that must not take the receive path's time (the summary cache's
/// refresh). Best effort: nothing happens where it fails.
pub fn lower_thread_priority() {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    // SAFETY: setpriority with a thread id only changes that thread's nice
    // value (Linux keeps nice per thread); a failure is harmless.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10) };
}

/// How many UDP sockets of other owners are bound to the same address and
/// port as `ours` (sockets of one `SO_REUSEPORT` group, which the kernel
/// splits traffic between). Linux reads `/proc/net/udp` and `udp6`; other
/// platforms answer 0.
pub fn foreign_port_sharers(ours: &[&mio::net::UdpSocket]) -> io::Result<usize> {
    let mut inodes = Vec::with_capacity(ours.len());
    for socket in ours {
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: the descriptor is open for the borrow's length and fstat
        // writes a whole `stat` into the buffer it is given.
        if unsafe { libc::fstat(socket.as_raw_fd(), st.as_mut_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fstat returned 0, so it filled the struct.
        inodes.push(unsafe { st.assume_init() }.st_ino);
    }
    let mut foreign = 0;
    for table in ["/proc/net/udp", "/proc/net/udp6"] {
        match std::fs::read_to_string(table) {
            Ok(text) => foreign += foreign_in_table(&text, &inodes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(foreign)
}

/// In one `/proc/net/udp` table: the sockets not in `ours` whose local
/// address (hex address and port, as the table writes it) is one of ours.
fn foreign_in_table(text: &str, ours: &[u64]) -> usize {
    // Columns: sl local_address rem_address st tx:rx tr:tm retrnsmt uid
    // timeout inode ...
    let rows: Vec<(&str, u64)> = text
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            Some((*cols.get(1)?, cols.get(9)?.parse().ok()?))
        })
        .collect();
    let addresses: Vec<&str> = rows
        .iter()
        .filter(|(_, inode)| ours.contains(inode))
        .map(|(addr, _)| *addr)
        .collect();
    rows.iter()
        .filter(|(addr, inode)| !ours.contains(inode) && addresses.contains(addr))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_of_others_on_our_address_and_port_are_counted() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  1: 0100007F:270F 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 101 2 0 0
  2: 0100007F:270F 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 102 2 0 0
  3: 0100007F:270F 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 201 2 0 0
  4: 0200007F:270F 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 301 2 0 0
  5: 0100007F:2710 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 401 2 0 0
";
        // 201 shares 127.0.0.1:9999 with us; 301 (another address) and 401
        // (another port) take none of our traffic.
        assert_eq!(foreign_in_table(table, &[101, 102]), 1);
        assert_eq!(foreign_in_table(table, &[101, 102, 201]), 0);
        assert_eq!(foreign_in_table(table, &[999]), 0);
    }
}
