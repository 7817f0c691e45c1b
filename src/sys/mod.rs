//! Platform syscalls, one file per platform as quinn-udp keeps them:
//! `linux.rs` has the batched calls (`recvmmsg`, `sendmmsg` with
//! `IP_PKTINFO`/`UDP_SEGMENT`), the forced receive buffer, the socket's drop
//! count, `syncfs`, a thread's priority and who else holds a UDP port;
//! `fallback.rs` the portable versions of the same signatures, slower but
//! correct; `unix.rs` what every Unix has (the open-file limit, `openat` and
//! `unlinkat` for the summary cache, the clock tick). The rest of the crate
//! never mentions a platform: the only `cfg`s are here, choosing the file.
//!
//! The batched calls are where the collector's speed comes from (one syscall
//! per up to [`BATCH`] datagrams).

use std::net::IpAddr;
use std::path::Path;

#[cfg_attr(target_os = "linux", path = "linux.rs")]
#[cfg_attr(not(target_os = "linux"), path = "fallback.rs")]
mod imp;
mod unix;

pub use imp::{
    DIRECT_IO, close_file, force_recv_buffer, foreign_port_sharers, lower_thread_priority,
    recv_batch, send_batch, socket_drops, sync_filesystem,
};
pub use unix::{clock_ticks_per_second, open_at, raise_nofile_limit, unlink_at};

/// Syncs the filesystem that holds `path` (one `syncfs`, whatever the
/// number of files written on it).
pub fn sync_filesystem_at(path: &Path) -> std::io::Result<()> {
    sync_filesystem(&std::fs::File::open(path)?)
}

/// Datagrams per batched syscall. 64 is where `recvmmsg` stops paying back on
/// this class of machine (quinn-udp and rsyslog use 32 to 64).
pub const BATCH: usize = 64;

/// Bytes kept of each received datagram. Anything longer than a valid
/// datagram is rejected on its length alone, so the kernel may cut it: the
/// cut is reported as `truncated` and costs no copy of a 64 KiB payload.
pub const RECV_BUF_LEN: usize = 128;

/// Reusable storage for one batch of received datagrams.
pub struct RecvBatch {
    bufs: Vec<[u8; RECV_BUF_LEN]>,
    lens: Vec<usize>,
    truncated: Vec<bool>,
    sources: Vec<IpAddr>,
    filled: usize,
    raw: imp::RawRecv,
}

impl RecvBatch {
    pub fn new() -> Self {
        RecvBatch {
            bufs: vec![[0; RECV_BUF_LEN]; BATCH],
            lens: vec![0; BATCH],
            truncated: vec![false; BATCH],
            sources: vec![IpAddr::from([0, 0, 0, 0]); BATCH],
            filled: 0,
            raw: imp::RawRecv::new(),
        }
    }

    /// Datagrams held since the last [`recv_batch`].
    pub fn len(&self) -> usize {
        self.filled
    }

    pub fn is_empty(&self) -> bool {
        self.filled == 0
    }

    /// Source address, payload (at most [`RECV_BUF_LEN`] bytes) and whether
    /// the kernel cut the payload to fit, of datagram `i`.
    pub fn get(&self, i: usize) -> (IpAddr, &[u8], bool) {
        (
            self.sources[i],
            &self.bufs[i][..self.lens[i]],
            self.truncated[i],
        )
    }
}

impl Default for RecvBatch {
    fn default() -> Self {
        Self::new()
    }
}

/// Datagrams to send from a chosen local IPv4 address: one, or with
/// `segment` > 0 several of that size back to back, sent as one UDP GSO
/// buffer (`UDP_SEGMENT`) that the kernel splits.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    pub src: std::net::Ipv4Addr,
    pub payload: &'a [u8],
    pub segment: u16,
}

/// Fills `batch` one datagram at a time from `recv` (which reads one into
/// the buffer it is given and returns its full length and source) until
/// the batch is full or `recv` fails. Datagrams
/// already in the batch are kept when an error comes mid-batch: the error
/// (or the empty socket) shows again on the next call. The portable
/// fallback's loop, compiled on Linux too so its tests run here.
#[cfg(any(test, not(target_os = "linux")))]
fn fill_batch(
    batch: &mut RecvBatch,
    mut recv: impl FnMut(&mut [u8]) -> std::io::Result<(usize, std::net::SocketAddr)>,
) -> std::io::Result<usize> {
    // Room for the largest datagram, so a long one is seen as long (and
    // flagged) where the platform has no MSG_TRUNC.
    let mut scratch = [0u8; 65_536];
    batch.filled = 0;
    while batch.filled < BATCH {
        let i = batch.filled;
        match recv(&mut scratch) {
            Ok((n, from)) => {
                let kept = n.min(RECV_BUF_LEN);
                batch.bufs[i][..kept].copy_from_slice(&scratch[..kept]);
                batch.lens[i] = kept;
                batch.truncated[i] = n > RECV_BUF_LEN;
                batch.sources[i] = from.ip();
                batch.filled += 1;
            }
            Err(_) if batch.filled > 0 => break,
            Err(e) => return Err(e),
        }
    }
    Ok(batch.filled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::net::SocketAddr;

    #[test]
    fn an_error_mid_batch_keeps_what_was_received() {
        let from: SocketAddr = "127.8.0.1:5000".parse().unwrap();
        let data = [7u8; 72];
        let mut batch = RecvBatch::new();
        let mut calls = 0;
        let got = fill_batch(&mut batch, |buf| {
            calls += 1;
            if calls <= 3 {
                buf[..72].copy_from_slice(&data);
                Ok((72, from))
            } else {
                Err(io::Error::from(io::ErrorKind::ConnectionRefused))
            }
        });
        assert_eq!(got.unwrap(), 3);
        assert_eq!(batch.len(), 3);
        assert_eq!(batch.get(2), (from.ip(), &data[..], false));
        // With nothing received first, the error is the answer.
        let err = fill_batch(&mut batch, |_| {
            Err(io::Error::from(io::ErrorKind::WouldBlock))
        });
        assert_eq!(err.unwrap_err().kind(), io::ErrorKind::WouldBlock);
        assert!(batch.is_empty());
    }

    #[test]
    fn long_datagrams_are_cut_and_flagged() {
        let from: SocketAddr = "127.8.0.1:5000".parse().unwrap();
        let data = [1u8; 1500];
        let mut batch = RecvBatch::new();
        let mut left = 1;
        fill_batch(&mut batch, |buf| {
            if left == 0 {
                return Err(io::Error::from(io::ErrorKind::WouldBlock));
            }
            left -= 1;
            buf[..1500].copy_from_slice(&data);
            Ok((1500, from))
        })
        .unwrap();
        let (_, payload, truncated) = batch.get(0);
        assert_eq!(payload.len(), RECV_BUF_LEN);
        assert!(truncated);
    }
}
