//! Helpers for integration tests: start the real binaries on port 0 with a
//! temp dir each, send datagrams from chosen loopback addresses, read the
//! files back.

#![allow(dead_code)] // each test binary uses its own subset

pub mod counting;

use std::io::{BufRead, BufReader, Read};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use vmstats::wire::{self, Row, Stat};

pub const AGGREGATOR: &str = env!("CARGO_BIN_EXE_udp-aggregator");
pub const VMSIM: &str = env!("CARGO_BIN_EXE_udp-vmsim");

/// A running `udp-aggregator`.
pub struct Aggregator {
    child: Child,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    /// The first stderr line, already read to learn the address.
    first_line: String,
    /// Lines taken off `rest` by [`Aggregator::wait_for_line`].
    seen: Vec<String>,
    rest: mpsc::Receiver<String>,
}

impl Aggregator {
    /// Starts the aggregator on `127.0.0.1:0` writing to `data_dir`, with
    /// extra flags, and waits for its bound address.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Aggregator {
        Self::start_on("127.0.0.1:0", data_dir, extra)
    }

    /// As [`Aggregator::start`] on another address. Syncs the journal
    /// every 100 ms unless `extra` says otherwise, and writes the files as
    /// often (so a test can read them live) unless `extra` sets
    /// `--file-interval`.
    pub fn start_on(listen: &str, data_dir: &Path, extra: &[&str]) -> Aggregator {
        let mut cmd = Command::new(AGGREGATOR);
        cmd.args(["--listen", listen, "--data-dir"])
            .arg(data_dir)
            .args(["--stats-interval", "1s"]);
        let flush = match extra.iter().position(|a| *a == "--flush-interval") {
            Some(i) => extra[i + 1],
            None => {
                cmd.args(["--flush-interval", "100ms"]);
                "100ms"
            }
        };
        if !extra.contains(&"--file-interval") {
            cmd.args(["--file-interval", flush]);
        }
        cmd.args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Self::from_command(cmd, data_dir)
    }

    /// Starts a prepared command (piped stdout and stderr) that runs the
    /// aggregator, e.g. under `sh -c 'ulimit -n ...; exec ...'`.
    pub fn from_command(mut cmd: Command, data_dir: &Path) -> Aggregator {
        let mut child = cmd.spawn().expect("start udp-aggregator");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let first_line = lines.next().expect("a first stderr line").unwrap();
        let addr = first_line
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {first_line:?}"));
        // Keep draining stderr so the child never blocks on a full pipe.
        let (tx, rest) = mpsc::channel();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Aggregator {
            child,
            addr,
            data_dir: data_dir.to_path_buf(),
            first_line,
            seen: Vec::new(),
            rest,
        }
    }

    /// The first stderr line (after the first) containing `needle`, waiting
    /// up to `limit` for it.
    pub fn wait_for_line(&mut self, needle: &str, limit: Duration) -> Option<String> {
        if let Some(line) = self.seen.iter().find(|l| l.contains(needle)) {
            return Some(line.clone());
        }
        let until = std::time::Instant::now() + limit;
        while let Some(left) = until.checked_duration_since(std::time::Instant::now()) {
            let line = self.rest.recv_timeout(left).ok()?;
            self.seen.push(line.clone());
            if line.contains(needle) {
                return Some(line);
            }
        }
        None
    }

    /// The metrics endpoint's address, from its stderr line.
    pub fn metrics_addr(&mut self) -> SocketAddr {
        let line = self
            .wait_for_line("metrics on http://", Duration::from_secs(10))
            .expect("a metrics line");
        let at = line.find("http://").unwrap() + "http://".len();
        line[at..].split('/').next().unwrap().parse().unwrap()
    }

    pub fn first_line(&self) -> &str {
        &self.first_line
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends SIGTERM and waits for the exit; stderr holds every line.
    pub fn stop(self) -> Finished {
        signal(self.pid(), "TERM");
        self.wait()
    }

    /// Waits for the process to end by itself (`--duration`).
    pub fn wait(mut self) -> Finished {
        let mut stdout = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .unwrap();
        let status = self.child.wait().unwrap();
        let mut stderr = self.first_line.clone() + "\n";
        for line in &self.seen {
            stderr.push_str(line);
            stderr.push('\n');
        }
        while let Ok(line) = self.rest.recv_timeout(Duration::from_secs(5)) {
            stderr.push_str(&line);
            stderr.push('\n');
        }
        Finished {
            success: status.success(),
            stdout,
            stderr,
        }
    }
}

impl Drop for Aggregator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a finished aggregator printed.
#[derive(Debug)]
pub struct Finished {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// The value of `key=` in the exit summary.
    pub fn counter(&self, key: &str) -> u64 {
        let pat = format!(" {key}=");
        self.stderr
            .lines()
            .filter(|l| l.starts_with("summary:"))
            .find_map(|l| {
                let at = l.find(&pat)? + pat.len();
                l[at..].split(' ').next()?.parse().ok()
            })
            .unwrap_or_else(|| panic!("no {key} in summary:\n{}", self.stderr))
    }
}

/// Sends a signal with kill(1), keeping the tests free of unsafe code.
pub fn signal(pid: i32, name: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{name} {pid}");
}

/// A socket bound to a loopback source address, as one VM.
pub fn vm_socket(ip: &str) -> UdpSocket {
    let ip: IpAddr = ip.parse().unwrap();
    UdpSocket::bind((ip, 0)).expect("bind a loopback source address")
}

/// A valid stat with the given seq, otherwise the protocol's test vector.
pub fn stat(seq: u64) -> Stat {
    Stat {
        seq,
        timestamp_ms: wire::TEST_VECTOR.timestamp_ms + seq,
        ..wire::TEST_VECTOR
    }
}

pub fn send(sock: &UdpSocket, to: SocketAddr, s: &Stat) {
    sock.send_to(&wire::encode(s), to).unwrap();
}

/// Every row of a VM file, after checking its header line; a torn last line
/// fails the test (the aggregator exited cleanly, so there must be none).
pub fn read_rows(path: &Path) -> Vec<Row> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        text.ends_with('\n'),
        "{} ends in a torn line",
        path.display()
    );
    let mut lines = text.lines();
    assert_eq!(
        lines.next().map(|h| format!("{h}\n")).as_deref(),
        Some(wire::CSV_HEADER)
    );
    lines.map(|l| wire::parse_row(l).unwrap()).collect()
}

/// Number of `.csv` files in a data dir and rows in them.
pub fn count_files_and_rows(dir: &Path) -> (usize, usize) {
    let mut files = 0;
    let mut rows = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "csv") {
            files += 1;
            rows += read_rows(&path).len();
        }
    }
    (files, rows)
}

/// Runs `udp-vmsim` to completion against `port` with extra flags.
pub fn vmsim(port: u16, extra: &[&str]) -> Output {
    succeeded(
        Command::new(VMSIM)
            .args(["--server", &format!("127.0.0.1:{port}")])
            .args(extra),
    )
}

/// Polls until `cond` holds or `limit` passes; true if it held.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// Resident memory of a process, KiB (Linux /proc).
pub fn rss_kib(pid: i32) -> u64 {
    status_kib(pid, "VmRSS").expect("VmRSS in /proc status")
}

/// A `kB` figure of `/proc/<pid>/status` (`VmRSS`, `VmHWM`), `None` once
/// the process is gone.
pub fn status_kib(pid: i32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// `command_line` (a program and its arguments, as a shell reads them)
/// run with at most `limit` open files, its output piped.
pub fn with_nofile_limit(limit: u32, command_line: &str) -> Command {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &format!("ulimit -n {limit} && exec {command_line}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Sends `datagrams` from `sock`, about `per_sec` a second, so a debug
/// build under a parallel test run is not flooded into kernel drops.
pub fn send_paced(sock: &UdpSocket, to: SocketAddr, datagrams: &[Vec<u8>], per_sec: u64) {
    let start = std::time::Instant::now();
    for (i, d) in datagrams.iter().enumerate() {
        sock.send_to(d, to).unwrap();
        if i % 64 == 63 {
            let due = Duration::from_secs_f64((i + 1) as f64 / per_sec as f64);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
}

/// `udp-vmsim` as a load: `total` datagrams round-robin over `count` VMs
/// sending from `src_base` on, at `rate` (datagrams/s or `max`), without
/// final datagrams; asserts every one was sent.
pub fn load(port: u16, count: u32, rate: &str, total: u64, src_base: &str, extra: &[&str]) {
    let (count, total) = (count.to_string(), total.to_string());
    let mut args = vec!["--count", &count, "--rate", rate, "--total", &total];
    args.extend(["--no-final", "--src-base", src_base]);
    args.extend(extra);
    let out = vmsim(port, &args);
    let said = String::from_utf8_lossy(&out.stdout);
    let expected = format!("sent={total} finals=0 send_errors=0");
    assert!(said.contains(&expected), "{said}");
}

/// Runs a prepared command to its end, killing it if it takes longer than
/// `limit` (a test of "never hangs" must not hang itself).
pub fn run_with_limit(mut cmd: Command, limit: Duration) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the command");
    let pid = child.id() as i32;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("wait for the command"),
        Err(_) => {
            signal(pid, "KILL");
            panic!("the command ran past {limit:?}");
        }
    }
}

/// Makes a FIFO at `path` (mkfifo(1), keeping the tests free of unsafe code).
pub fn mkfifo(path: &Path) {
    let ok = Command::new("mkfifo").arg(path).status().unwrap().success();
    assert!(ok, "mkfifo {}", path.display());
}

/// Says on the test run's own output, past the harness's capture, that a
/// check was skipped and why (a tool this machine lacks): one line, so a
/// passing run shows what it did not check.
pub fn skip(why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "skipped: {why}");
}

pub const VMAGENT: &str = env!("CARGO_BIN_EXE_udp-vmagent");

/// A fixture tree of the agent's: `/proc` of reading `n` and `/sys`.
pub fn agent_fixture(case: &str, n: u32) -> (PathBuf, PathBuf) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/agent")
        .join(case);
    let own_sys = dir.join(format!("{n}/sys"));
    let sys = if own_sys.exists() {
        own_sys
    } else {
        dir.join("sys")
    };
    (dir.join(format!("{n}/proc")), sys)
}

/// Runs `cmd` to its end and insists it succeeded, showing its stderr if
/// not.
pub fn succeeded(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("start the command");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `udp-aggregator report` with `args`, insists it succeeded (showing
/// its stderr if not) and returns its stdout.
pub fn report_with(args: &[&std::ffi::OsStr]) -> Vec<u8> {
    succeeded(Command::new(AGGREGATOR).arg("report").args(args)).stdout
}

/// A plain HTTP GET of `path` from `addr`: the status code and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: vmstats\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

/// The value of the sample line `name` (with its labels) in metrics text.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Aggregator flags for an HTTP listener on a free loopback port and the
/// report refreshed (its figures and pages) every 200 ms.
pub const HTTP_AND_REFRESH: [&str; 4] = [
    "--metrics-listen",
    "127.0.0.1:0",
    "--cache-refresh",
    "200ms",
];

/// Writes `days` of history for `count` VMs into `dir`, ending now, with
/// `udp-vmsim --write-dir` (10-minute interval).
pub fn write_history(dir: &Path, count: u32, days: &str) {
    let count = count.to_string();
    succeeded(
        Command::new(VMSIM)
            .args(["--count", &count, "--interval", "10m", "--days", days])
            .arg("--write-dir")
            .arg(dir),
    );
}

/// Runs `cmd` with `input` on its stdin and its stdout and stderr taken;
/// `None` when it cannot be started (a tool that is not installed).
pub fn run_with_stdin(mut cmd: Command, input: &[u8]) -> Option<Output> {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    child.stdin.take().unwrap().write_all(input).unwrap();
    Some(child.wait_with_output().unwrap())
}
