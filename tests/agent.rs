//! The real agent: against fixture trees, against the real aggregator on
//! loopback with this machine's real figures, and against servers that do
//! not answer.

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use common::*;

fn agent(args: &[&str]) -> Command {
    let mut cmd = Command::new(VMAGENT);
    cmd.args(args);
    cmd
}

/// (MemTotal - MemAvailable) / MemTotal, percent, as the kernel says now.
fn mem_used_pct() -> f64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kib = |key: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .unwrap()
            .parse()
            .unwrap()
    };
    let total = kib("MemTotal:");
    (total - kib("MemAvailable:")) / total * 100.0
}

#[test]
fn the_real_agent_reports_this_machine_to_the_real_aggregator() {
    let dir = tempfile::tempdir().unwrap();
    let agg = Aggregator::start(dir.path(), &[]);
    let server = format!("127.0.0.1:{}", agg.port());
    let mut child = agent(&["--server", &server, "--interval", "1s", "--no-jitter"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let path = dir.path().join("127.0.0.1.csv");
    let rows = || {
        std::fs::read_to_string(&path)
            .map(|t| t.lines().count().saturating_sub(1))
            .unwrap_or(0)
    };
    assert!(
        wait_until(Duration::from_secs(10), || rows() >= 2),
        "no rows from the agent"
    );
    let expected_mem = mem_used_pct();

    // One busy loop on one core of this machine's CPUs.
    let busy_from = vmstats::unix_ms();
    let spinning = Arc::new(AtomicBool::new(true));
    let spin = Arc::clone(&spinning);
    let spinner = std::thread::spawn(move || {
        let mut x = 0u64;
        while spin.load(Relaxed) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
    });
    std::thread::sleep(Duration::from_millis(4500));
    spinning.store(false, Relaxed);
    spinner.join().unwrap();
    let busy_to = vmstats::unix_ms();

    signal(child.id() as i32, "TERM");
    let status = child.wait().unwrap();
    assert!(status.success());
    let done = agg.stop();
    assert!(done.success, "{}", done.stderr);
    let rows = read_rows(&path);
    let cores = std::thread::available_parallelism().unwrap().get();
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r.stat.seq, i as u64);
        assert_eq!(usize::from(r.stat.vcpus), cores, "vcpus is what nproc says");
        assert_eq!(r.stat.interval_s, 1);
    }
    assert!(
        rows.last().unwrap().stat.is_final(),
        "the last datagram has the final flag"
    );
    let first = &rows[1].stat;
    let mem = f64::from(first.mem_pct_x100) / 100.0;
    assert!(
        (mem - expected_mem).abs() <= 1.0,
        "mem {mem} vs {expected_mem}"
    );
    // Samples whose whole interval lay inside the busy stretch.
    let busy: Vec<f64> = rows
        .iter()
        .filter(|r| r.recv_ms >= busy_from + 1100 && r.recv_ms + 100 <= busy_to)
        .map(|r| f64::from(r.stat.cpu_pct_x100) / 100.0)
        .collect();
    assert!(!busy.is_empty(), "no sample inside the busy stretch");
    let mut sorted = busy.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let share = 100.0 / cores as f64;
    assert!(
        (share * 0.8..=share * 1.2).contains(&median),
        "one busy core of {cores} gave cpu {busy:?}"
    );
}

#[test]
fn print_mode_reads_a_fixture_tree_and_ends_with_the_final_flag() {
    let (proc, sys) = agent_fixture("vm", 0);
    let out = agent(&[
        "--print",
        "--interval",
        "100ms",
        "--no-jitter",
        "--duration",
        "450ms",
    ])
    .arg("--proc-root")
    .arg(&proc)
    .arg("--sys-root")
    .arg(&sys)
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.starts_with("udp-vmagent: boot_id ") && stderr.contains(" every 100ms to stdout, "),
        "the start line says where samples go: {stderr}"
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines.len() >= 3, "{stdout}");
    // The same tree twice: nothing moved, memory and size as the files say.
    for l in &lines {
        assert!(
            l.contains(" vcpus=2 cpu=0.00% mem=25.00% mem_mib=2000 net_rx=0 net_tx=0 disk_read=0 disk_write=0 "),
            "{l}"
        );
    }
    assert!(lines.last().unwrap().ends_with("final=1"), "{stdout}");
    assert!(lines[0].contains(" seq=0 "), "{stdout}");
}

#[test]
fn bad_values_and_unreadable_files_are_named() {
    let cases: [(&[&str], &str); 4] = [
        (
            &["--print", "--proc-root", "/nonexistent"],
            "cannot read /nonexistent/stat (check --proc-root",
        ),
        (
            &["--server", "nohost"],
            "invalid value for --server: `nohost` is not HOST:PORT",
        ),
        (
            &[],
            "invalid value for --server: give at least one aggregator",
        ),
        (
            &["--print", "--interval", "2h"],
            "invalid value for --interval",
        ),
    ];
    for (args, needle) in cases {
        let out = agent(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    }
}

#[test]
fn unreachable_servers_never_stop_it_and_two_servers_both_get_everything() {
    let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (agg_a, agg_b) = (
        Aggregator::start(a.path(), &[]),
        Aggregator::start(b.path(), &[]),
    );
    let out = agent(&["--interval", "100ms", "--no-jitter", "--duration", "1s"])
        .args(["--server", &format!("127.0.0.1:{closed_port}")])
        .args(["--server", &format!("localhost:{}", agg_a.port())])
        .args(["--server", &format!("127.0.0.1:{}", agg_b.port())])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        stderr.matches("cannot send to").count(),
        1,
        "at most one line a minute: {stderr}"
    );
    let errors: u64 = stderr
        .split("send_errors=")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(errors >= 3, "{stderr}");
    assert!(agg_a.stop().success && agg_b.stop().success);
    let seqs = |dir: &std::path::Path| -> Vec<u64> {
        read_rows(&dir.join("127.0.0.1.csv"))
            .iter()
            .map(|r| r.stat.seq)
            .collect()
    };
    let (sa, sb) = (seqs(a.path()), seqs(b.path()));
    assert!(sa.len() >= 8, "{sa:?}");
    assert_eq!(sa, sb);
}

/// A copy of the `vm` fixture's first reading (`proc`, `sys`) that `change`
/// may make hostile.
fn hostile_tree(change: impl FnOnce(&std::path::Path, &std::path::Path)) -> tempfile::TempDir {
    let (proc, sys) = agent_fixture("vm", 0);
    let dir = tempfile::tempdir().unwrap();
    for (from, to) in [(proc, "proc"), (sys, "sys")] {
        let ok = Command::new("cp")
            .arg("-r")
            .arg(&from)
            .arg(dir.path().join(to))
            .status()
            .unwrap()
            .success();
        assert!(ok, "cp -r {}", from.display());
    }
    change(&dir.path().join("proc"), &dir.path().join("sys"));
    dir
}

/// The agent printing three readings of `tree` with at most 256
/// descriptors: (exit status, stdout, stderr).
fn print_tree(tree: &std::path::Path) -> (bool, String, String) {
    let cmd = with_nofile_limit(
        256,
        &format!(
            "{VMAGENT} --print --interval 100ms --no-jitter --duration 250ms --proc-root {0}/proc --sys-root {0}/sys",
            tree.display()
        ),
    );
    let out = run_with_limit(cmd, Duration::from_secs(30));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_hostile_machine_tree_gives_bounded_readings_or_a_named_error() {
    // 2,000 real NICs under a 256-descriptor limit: the agent keeps 64
    // ifindex files open and reads the rest afresh.
    let nics = hostile_tree(|proc, sys| {
        let mut dev = std::fs::read_to_string(proc.join("net/dev")).unwrap();
        for i in 0..2000 {
            dev.push_str(&format!(" nic{i}: 100 1 0 0 0 0 0 0 100 1 0 0 0 0 0 0\n"));
            let d = sys.join(format!("class/net/nic{i}"));
            std::fs::create_dir_all(d.join("device")).unwrap();
            std::fs::write(d.join("ifindex"), format!("{}\n", 100 + i)).unwrap();
        }
        std::fs::write(proc.join("net/dev"), dev).unwrap();
    });
    let (ok, stdout, stderr) = print_tree(nics.path());
    assert!(ok, "{stderr}");
    assert!(stdout.lines().count() >= 2, "{stdout}");
    // MemTotal of 2^55 kB does not wrap to a 1 MiB machine.
    let huge = hostile_tree(|proc, _| {
        let text = std::fs::read_to_string(proc.join("meminfo")).unwrap();
        let text = text.replace(
            "MemTotal:       2048000 kB",
            "MemTotal: 36028797018963968 kB",
        );
        std::fs::write(proc.join("meminfo"), text).unwrap();
    });
    let (ok, stdout, stderr) = print_tree(huge.path());
    assert!(ok, "{stderr}");
    assert!(stdout.contains(" mem_mib=4294967295 "), "{stdout}");
    // A stat that never ends is refused by name, not read until memory
    // runs out.
    let endless = hostile_tree(|proc, _| {
        std::fs::remove_file(proc.join("stat")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", proc.join("stat")).unwrap();
    });
    let (ok, _, stderr) = print_tree(endless.path());
    assert!(!ok);
    assert!(
        stderr.contains(&format!(
            "cannot read {}/proc/stat",
            endless.path().display()
        )) && stderr.contains("longer than 16 MiB"),
        "{stderr}"
    );
}

#[test]
fn a_bounded_run_that_reached_no_server_fails_after_saying_what_it_tried() {
    let mut cmd = agent(&[
        "--server",
        "collector.example.invalid:9999",
        "--interval",
        "100ms",
        "--no-jitter",
        "--duration",
        "350ms",
    ]);
    cmd.stdin(Stdio::null());
    let out = run_with_limit(cmd, Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(
        lines[0].starts_with("udp-vmagent: boot_id ")
            && lines[0].contains(" to collector.example.invalid:9999, "),
        "the start line comes first: {stderr}"
    );
    assert!(
        lines[1].contains("warning: cannot send to collector.example.invalid:9999"),
        "{stderr}"
    );
    assert!(
        lines
            .last()
            .unwrap()
            .starts_with("udp-vmagent: error: no datagram reached any --server: "),
        "{stderr}"
    );
}
