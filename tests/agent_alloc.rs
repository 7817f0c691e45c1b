//! The agent allocates nothing per sample after the first: readings, the
//! datagram, the send and the printed line all reuse their buffers. A
//! counting global allocator sees every allocation of this process (this
//! file holds one test, so nothing else runs beside it).

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use vmstats::agent::sampler::{Roots, Sampler};
use vmstats::agent::{print_line, stat_of};
use vmstats::wire;

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is passed to the system allocator unchanged; the
// counter has no effect on the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

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
    let before = ALLOCS.load(Relaxed);
    for n in 3..503 {
        step(n);
    }
    let during = ALLOCS.load(Relaxed) - before;
    assert_eq!(during, 0, "{during} allocations in 500 samples");
}
