//! Authenticated datagrams (version 2) end to end: the real aggregator,
//! agent and simulator on loopback, keys made by `udp-aggregator keys`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use vmstats::wire::{self, Stat, TEST_VECTOR, VmKey};

/// PROTOCOL.md's fleet key 7 (bytes 0x00..0x1f), in a 0600 file.
fn fleet_file(dir: &Path, ids: &[u32]) -> PathBuf {
    let path = dir.join("fleet.keys");
    let text: String = ids
        .iter()
        .map(|id| format!("{id} {}\n", fleet_hex(*id)))
        .collect();
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn fleet_bytes(id: u32) -> [u8; 32] {
    std::array::from_fn(|i| i as u8 ^ (id as u8).wrapping_sub(7))
}

fn fleet_hex(id: u32) -> String {
    fleet_bytes(id).iter().map(|b| format!("{b:02x}")).collect()
}

fn key_of(id: u32, ip: &str) -> VmKey {
    VmKey::derive(id, &fleet_bytes(id), ip.parse().unwrap())
}

fn now_stat(seq: u64) -> Stat {
    Stat {
        seq,
        timestamp_ms: vmstats::unix_ms(),
        ..TEST_VECTOR
    }
}

#[test]
fn the_test_vector_lands_flagged_and_every_forgery_is_refused_unwritten() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let keys = fleet_file(dir.path(), &[7]);
    let k = keys.to_str().unwrap();
    // The test vector's 2025 timestamp is far off: a skew that takes it.
    let agg = Aggregator::start(&data, &["--auth-keys", k, "--auth-max-skew", "1000d"]);
    let vm = "127.30.0.15";
    let sock = vm_socket(vm);
    let mine = key_of(7, vm);
    sock.send_to(&mine.encode(&TEST_VECTOR), agg.addr).unwrap();
    // Refused, each under its reason.
    let next = Stat {
        seq: 42,
        ..TEST_VECTOR
    };
    sock.send_to(&mine.encode(&TEST_VECTOR), agg.addr).unwrap(); // replayed
    sock.send_to(&key_of(7, "127.30.0.16").encode(&next), agg.addr)
        .unwrap(); // bad_auth
    sock.send_to(&VmKey::new(8, [1; 32]).encode(&next), agg.addr)
        .unwrap(); // bad_auth
    let mut flipped = mine.encode(&next);
    flipped[33] ^= 1;
    sock.send_to(&flipped, agg.addr).unwrap(); // bad_auth
    std::thread::sleep(Duration::from_millis(300));
    let done = agg.stop();
    assert!(done.success, "{}", done.stderr);
    assert_eq!(done.counter("accepted"), 1, "{}", done.stderr);
    assert_eq!(done.counter("bad_auth"), 3);
    assert_eq!(done.counter("replayed"), 1);
    assert_eq!(done.counter("rows_written"), 1);
    let text = std::fs::read_to_string(data.join(format!("{vm}.csv"))).unwrap();
    let row = text.lines().nth(1).unwrap();
    let (recv, rest) = row.split_once(',').unwrap();
    assert!(recv.parse::<u64>().is_ok());
    assert_eq!(
        rest,
        "1764110400123,3237998081,41,60,4,8192,7.25,31.50,1048576,524288,4096,65536,256"
    );
    assert_eq!(text.lines().count(), 2, "nothing refused was written");
}

#[test]
fn require_auth_refuses_version_1_stale_and_replays_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let keys = fleet_file(dir.path(), &[7]);
    let k = keys.to_str().unwrap();
    let agg = Aggregator::start(
        &data,
        &["--auth-keys", k, "--require-auth", "--auth-max-skew", "60s"],
    );
    let vm = "127.30.1.1";
    let sock = vm_socket(vm);
    let key = key_of(7, vm);
    let boot1 = |seq| Stat {
        boot_id: 1,
        ..now_stat(seq)
    };
    for seq in 0..3 {
        sock.send_to(&key.encode(&boot1(seq)), agg.addr).unwrap();
    }
    // The agent restarts (new boot_id, a later clock), then its old boot's
    // datagram is replayed.
    std::thread::sleep(Duration::from_millis(20));
    let boot2 = Stat {
        boot_id: 2,
        ..now_stat(0)
    };
    sock.send_to(&key.encode(&boot2), agg.addr).unwrap();
    sock.send_to(&key.encode(&boot1(1)), agg.addr).unwrap(); // replayed
    send(&sock, agg.addr, &now_stat(9)); // unauthenticated
    let old = Stat {
        timestamp_ms: vmstats::unix_ms() - 120_000,
        ..boot1(5)
    };
    sock.send_to(&key.encode(&old), agg.addr).unwrap(); // stale
    std::thread::sleep(Duration::from_millis(300));
    let done = agg.stop();
    assert!(done.success, "{}", done.stderr);
    assert_eq!(
        (
            done.counter("accepted"),
            done.counter("replayed"),
            done.counter("unauthenticated"),
            done.counter("stale")
        ),
        (4, 1, 1, 1),
        "{}",
        done.stderr
    );
    let rows = read_rows(&data.join(format!("{vm}.csv")));
    assert_eq!(rows.len(), 4);
    assert!(rows.iter().all(|r| r.verified));
}

#[test]
fn keys_rotate_by_sighup_without_losing_a_datagram() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let keys = fleet_file(dir.path(), &[7]);
    let mut agg = Aggregator::start(&data, &["--auth-keys", keys.to_str().unwrap()]);
    let vm = "127.30.2.1";
    let sock = vm_socket(vm);
    let (old, new) = (key_of(7, vm), key_of(8, vm));
    let to = agg.addr;
    let mut seq = 0;
    let mut send_with = |key: &VmKey, n: u64| {
        for _ in 0..n {
            sock.send_to(&key.encode(&now_stat(seq)), to).unwrap();
            seq += 1;
        }
    };
    send_with(&old, 10);
    send_with(&new, 1); // id 8 is not held yet: bad_auth
    // Taken (and refused) before the keys change.
    std::thread::sleep(Duration::from_millis(300));
    // Add id 8, move the agent over, then remove id 7.
    fleet_file(dir.path(), &[7, 8]);
    signal(agg.pid(), "HUP");
    assert!(
        agg.wait_for_line("key ids [7, 8]", Duration::from_secs(10))
            .is_some()
    );
    send_with(&old, 10);
    send_with(&new, 10);
    // Verified before id 7 goes: a datagram still queued in its worker when
    // the keys change is checked against the keys then held.
    std::thread::sleep(Duration::from_millis(300));
    fleet_file(dir.path(), &[8]);
    signal(agg.pid(), "HUP");
    assert!(
        agg.wait_for_line("key ids [8]", Duration::from_secs(10))
            .is_some()
    );
    send_with(&new, 10);
    send_with(&old, 1); // id 7 is gone: bad_auth
    std::thread::sleep(Duration::from_millis(300));
    // A keys file broken at a HUP keeps the keys held, and says why.
    std::fs::write(&keys, "8 junk\n").unwrap();
    signal(agg.pid(), "HUP");
    assert!(
        agg.wait_for_line("the keys held before are kept", Duration::from_secs(10))
            .is_some()
    );
    send_with(&new, 5);
    std::thread::sleep(Duration::from_millis(300));
    let done = agg.stop();
    assert!(done.success, "{}", done.stderr);
    assert_eq!(done.counter("bad_auth"), 2, "{}", done.stderr);
    assert_eq!(done.counter("accepted"), 45);
    assert_eq!(read_rows(&data.join(format!("{vm}.csv"))).len(), 45);
}

/// What the aggregator says when it will not start with `keys`.
fn refused_start(dir: &Path, keys: &Path) -> String {
    let out = Command::new(AGGREGATOR)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.join("data"))
        .arg("--auth-keys")
        .arg(keys)
        .output()
        .unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn an_exposed_keys_file_stops_the_start_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let keys = fleet_file(dir.path(), &[7]);
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = refused_start(dir.path(), &keys);
    assert!(
        err.contains(&format!(
            "key file {} (--auth-keys) is readable by group or others",
            keys.display()
        )),
        "{err}"
    );
    std::fs::write(&keys, "7 00\n").unwrap();
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(refused_start(dir.path(), &keys).contains("line 1: the key is not 64 hex digits"));
}

/// `udp-aggregator keys ...`'s one line.
fn keys_cmd(args: &[&str]) -> String {
    let out = succeeded(Command::new(AGGREGATOR).arg("keys").args(args));
    String::from_utf8(out.stdout)
        .unwrap()
        .trim_end()
        .to_string()
}

#[test]
fn keys_new_and_derive_make_what_the_agent_and_simulator_send_with() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = keys_cmd(&["new", "--key-id", "3"]);
    assert_eq!(fresh.len(), 2 + 64);
    assert_ne!(
        fresh,
        keys_cmd(&["new", "--key-id", "3"]),
        "random each time"
    );
    // derive gives PROTOCOL.md's K_vm for 10.20.0.15 under fleet key 7.
    let keys = fleet_file(dir.path(), &[7]);
    let derived = keys_cmd(&[
        "derive",
        "--auth-keys",
        keys.to_str().unwrap(),
        "--key-id",
        "7",
        "--ip",
        "10.20.0.15",
    ]);
    assert_eq!(
        derived,
        "7 3f51a9e2cbb68dca4df90de7339d66d1b8343db1a5670b68f3063b9d2d25feef"
    );
    // The agent, with its derived key, against --require-auth.
    let data = dir.path().join("data");
    let agg = Aggregator::start(
        &data,
        &["--auth-keys", keys.to_str().unwrap(), "--require-auth"],
    );
    let vm_key = dir.path().join("vm.key");
    let line = keys_cmd(&[
        "derive",
        "--auth-keys",
        keys.to_str().unwrap(),
        "--key-id",
        "7",
        "--ip",
        "127.0.0.1",
    ]);
    std::fs::write(&vm_key, format!("{line}\n")).unwrap();
    std::fs::set_permissions(&vm_key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (proc_root, sys_root) = agent_fixture("vm", 0);
    let agent = succeeded(
        Command::new(VMAGENT)
            .args([
                "--server",
                &agg.addr.to_string(),
                "--interval",
                "200ms",
                "--no-jitter",
            ])
            .args(["--duration", "1s", "--proc-root"])
            .arg(&proc_root)
            .arg("--sys-root")
            .arg(&sys_root)
            .arg("--key-file")
            .arg(&vm_key),
    );
    assert!(String::from_utf8_lossy(&agent.stderr).contains("(version 2, key id 7)"));
    // And the simulator, deriving each VM's key from the fleet key.
    // (vmsim insists the simulator succeeded.)
    vmsim(
        agg.port(),
        &[
            "--count",
            "20",
            "--total",
            "60",
            "--rate",
            "1000",
            "--fleet-key",
            keys.to_str().unwrap(),
        ],
    );
    std::thread::sleep(Duration::from_millis(300));
    let done = agg.stop();
    assert!(done.success, "{}", done.stderr);
    assert_eq!(done.counter("rejected"), 0, "{}", done.stderr);
    let agent_rows = read_rows(&data.join("127.0.0.1.csv"));
    assert!(agent_rows.len() >= 4 && agent_rows.iter().all(|r| r.verified));
    // 60 datagrams and 20 finals from the simulator, all verified.
    let (files, rows) = count_files_and_rows(&data);
    assert_eq!((files, rows), (21, agent_rows.len() + 80));
}

#[test]
fn a_forged_idle_history_does_not_make_a_busy_vm_idle() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let keys = fleet_file(dir.path(), &[7]);
    let agg = Aggregator::start(
        &data,
        &[
            "--auth-keys",
            keys.to_str().unwrap(),
            "--report-format",
            "json",
        ],
    );
    let vm = "127.30.3.1";
    let sock = vm_socket(vm);
    let key = key_of(7, vm);
    for seq in 0..10 {
        let busy = Stat {
            cpu_pct_x100: 9000,
            interval_s: 1,
            ..now_stat(seq)
        };
        sock.send_to(&key.encode(&busy), agg.addr).unwrap();
    }
    // A forger on the same address sends 50 idle version 1 datagrams.
    for seq in 0..50 {
        let idle = Stat {
            cpu_pct_x100: 100,
            interval_s: 1,
            boot_id: 666,
            ..now_stat(seq)
        };
        sock.send_to(&wire::encode(&idle), agg.addr).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    let done = agg.stop();
    assert!(done.success, "{}", done.stderr);
    let json: serde_json::Value = serde_json::from_str(&done.stdout).unwrap();
    let v = &json["vms"][0];
    assert_eq!(v["finding"], "UNDERSIZED", "{v}");
    assert_eq!(v["datagrams"]["samples"], 10);
    assert_eq!(v["datagrams"]["authenticated"], 10);
    assert_eq!(v["datagrams"]["unauthenticated_rows"], 50);
}
