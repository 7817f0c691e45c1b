//! Micro-benchmarks of the per-datagram work, without sockets: decode and
//! validate, row formatting, and a worker ingesting batches in-process.
//! `cargo bench --bench pipeline`; the end-to-end figures come from
//! `scripts/loadtest.sh`.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vmstats::dispatch::Record;
use vmstats::stats::Stats;
use vmstats::wire::{self, Stat};
use vmstats::worker::{Worker, WorkerConfig};

fn sample(seq: u64) -> Stat {
    Stat {
        seq,
        ..wire::TEST_VECTOR
    }
}

fn decode(c: &mut Criterion) {
    let bytes = wire::encode(&sample(41));
    let mut g = c.benchmark_group("wire");
    g.throughput(Throughput::Elements(1));
    g.bench_function("decode+validate", |b| {
        b.iter(|| wire::decode(black_box(&bytes), false))
    });
    // Version 2: decode, then the tag checked with the VM's key (derived
    // once and kept, as a worker keeps it), and a VM key's derivation (what
    // a datagram from an address not yet verified costs as well).
    let ip: IpAddr = "10.20.0.15".parse().unwrap();
    let fleet: [u8; 32] = std::array::from_fn(|i| i as u8);
    let key = wire::VmKey::derive(7, &fleet, ip);
    let signed = key.encode(&sample(41));
    g.bench_function("decode+verify v2", |b| {
        b.iter(|| {
            let (stat, claim) = wire::decode_datagram(black_box(&signed), false).unwrap();
            key.verify(&stat, &claim.unwrap())
        })
    });
    let (stat, claim) = wire::decode_datagram(&signed, false).unwrap();
    let claim = claim.unwrap();
    g.bench_function("verify v2 tag", |b| {
        b.iter(|| key.verify(black_box(&stat), black_box(&claim)))
    });
    g.bench_function("derive VM key", |b| {
        b.iter(|| wire::VmKey::derive(7, black_box(&fleet), black_box(ip)))
    });
    let mut junk = bytes;
    junk[5] = 0x80;
    g.bench_function("decode bad_field", |b| {
        b.iter(|| wire::decode(black_box(&junk), false))
    });
    let stat = sample(41);
    let mut out = Vec::with_capacity(4096);
    g.bench_function("format row", |b| {
        b.iter(|| {
            out.clear();
            wire::push_row(&mut out, black_box(1_764_110_400_200), black_box(&stat));
        })
    });
    g.finish();
}

fn ingest(c: &mut Criterion) {
    const VMS: u32 = 1000;
    let dir = tempfile::tempdir().unwrap();
    let journal_dir = vmstats::journal::dir_of(dir.path());
    std::fs::create_dir_all(&journal_dir).unwrap();
    let mut worker = Worker::new(
        WorkerConfig {
            id: 0,
            data_dir: dir.path().to_path_buf(),
            file_mode: vmstats::store::DEFAULT_FILE_MODE,
            flush_bytes: 32 << 10,
            // The journal as a worker runs it (rows reach their files only
            // once it holds them), unsynced: this times the CPU, not the disk.
            flush_interval: Duration::from_millis(10),
            file_interval: Duration::from_secs(3600),
            max_flush_delay: Duration::from_secs(3600),
            journal: vmstats::journal::Settings {
                dir: journal_dir,
                file_mode: vmstats::store::DEFAULT_FILE_MODE,
                sync: false,
                segment_bytes: vmstats::journal::SEGMENT_BYTES,
            },
            max_open_files: 2000,
            max_buffered: 1 << 30,
        },
        Arc::new(Stats::default()),
        vmstats::dispatch::ReopenSignal::default(),
    )
    .unwrap();
    // A batch as the receive loop sends it: 256 records of different VMs.
    let mut n = 0u32;
    let mut batch = || -> Vec<Record> {
        (0..256)
            .map(|_| {
                n = n.wrapping_add(1);
                Record {
                    ip: IpAddr::V4(Ipv4Addr::from(0x7f01_0000 + n % VMS)),
                    recv_ms: vmstats::dispatch::RecvMs(1_764_110_400_200),
                    stat: sample(u64::from(n / VMS)),
                    signed: None,
                }
            })
            .collect()
    };
    let batches: Vec<Vec<Record>> = (0..64).map(|_| batch()).collect();
    let mut g = c.benchmark_group("worker");
    g.throughput(Throughput::Elements(256));
    let mut i = 0;
    g.bench_function("ingest 256 (1000 VMs, flush by size)", |b| {
        b.iter(|| {
            worker.ingest(&batches[i % batches.len()]);
            worker.seal_if_due();
            i += 1;
        })
    });
    g.finish();
}

criterion_group!(benches, decode, ingest);
criterion_main!(benches);
