//! Every platform but Linux: one syscall per datagram, a socket per source
//! address, and no-ops where the platform has no such knob. Same signatures
//! as `linux.rs`.

use super::{Outgoing, RecvBatch};
use std::fs::File;
use std::io;
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};

/// One `recv_from` per datagram until the batch is full or the socket is
/// drained; same contract as the Linux `recvmmsg` version.
pub fn recv_batch(socket: &mio::net::UdpSocket, batch: &mut RecvBatch) -> io::Result<usize> {
    super::fill_batch(batch, |buf| socket.recv_from(buf))
}

/// Without `IP_PKTINFO`, each datagram goes out of a socket bound to its
/// source address, and without GSO one by one: slow, but every VM still
/// has its own address.
pub fn send_batch(_socket: &UdpSocket, dst: SocketAddrV4, msgs: &[Outgoing]) -> io::Result<usize> {
    for (i, m) in msgs.iter().enumerate() {
        let size = match m.segment {
            0 => m.payload.len().max(1),
            s => usize::from(s),
        };
        let sent = UdpSocket::bind(SocketAddr::from((m.src, 0))).and_then(|s| {
            m.payload
                .chunks(size)
                .try_for_each(|d| s.send_to(d, dst).map(drop))
        });
        if let Err(e) = sent {
            return if i > 0 { Ok(i) } else { Err(e) };
        }
    }
    Ok(msgs.len())
}

/// No portable way to read the socket's drop count.
pub fn socket_drops(_socket: &mio::net::UdpSocket) -> Option<u32> {
    None
}

pub fn force_recv_buffer(_socket: &socket2::Socket, _bytes: usize) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "SO_RCVBUFFORCE is Linux-only",
    ))
}

/// Without `syncfs`, only this directory handle is synced here; the
/// files themselves are synced as they close ([`close_file`]) and by the
/// store before exit.
pub fn sync_filesystem(dir: &File) -> io::Result<()> {
    dir.sync_all()
}

/// No direct I/O here: a file opened with this (none) is written through
/// the page cache, as any other.
pub const DIRECT_IO: libc::c_int = 0;

/// A file closed by the store is synced first: no later call reaches it.
pub fn close_file(file: File) {
    let _ = file.sync_data();
}

/// Nothing to hold: the portable receive needs no kernel-facing buffers.
pub struct RawRecv;

impl RawRecv {
    pub fn new() -> Self {
        RawRecv
    }
}

pub fn lower_thread_priority() {}

/// Without `/proc/net/udp` the port's other holders cannot be seen.
pub fn foreign_port_sharers(_ours: &[&mio::net::UdpSocket]) -> io::Result<usize> {
    Ok(0)
}
