//! The agent allocates nothing per sample after the first: readings, the
//! datagram, the send and the printed line all reuse their buffers. A
//! counting global allocator sees every allocation of this process (this
//! file holds one test, so nothing else runs beside it).
//!
//! A device that appears on the machine mid-run (a container's veth, a
//! loop disk) is learned once, with a few allocations; other processes on
//! a CI host do that, so the claim is checked over three rounds and one
//! quiet round must allocate nothing. A per-sample allocation shows in
//! every round.

mod common;

use common::counting::{Counting, allocations};
use std::path::PathBuf;

use vmstats::agent::sampler::{Roots, Sampler};
use vmstats::agent::{print_line, stat_of};
use vmstats::wire;

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn sampling_sending_and_printing_allocate_nothing_after_the_first() {
    let mut sampler = Sampler::new(&Roots {
        proc: PathBuf::from("/proc"),
        sys: PathBuf::from("/sys"),
    });
    let sink = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(sink.local_addr().unwrap()).unwrap();
    let mut line = String::with_capacity(256);
    let mut step = |n: u64| {
        if let Some(sample) = sampler.sample(n * 10).unwrap() {
            let stat = stat_of(&sample, 1, n, 1, false);
            socket.send(&wire::encode(&stat)).unwrap();
            line.clear();
            print_line(&mut line, &stat);
        }
    };
    // The first readings size the buffers and learn the devices.
    for n in 0..3 {
        step(n);
    }
    let mut rounds = Vec::new();
    for round in 0..3u64 {
        let before = allocations();
        for n in 0..500 {
            step(3 + round * 500 + n);
        }
        rounds.push(allocations() - before);
        if rounds.last() == Some(&0) {
            return;
        }
    }
    panic!("allocations in three rounds of 500 samples: {rounds:?}");
}
