//! `udp-aggregator export` read by the engines themselves: DuckDB (Python
//! `duckdb`) and ClickHouse (Python `chdb`, the embedded engine) run the
//! queries of `docs/scaling.md` as written over the Parquet datasets and
//! say what `udp-aggregator report` says; a second export over the same
//! files writes nothing, a new or changed day only that day. Engine tests
//! skip, with a message, where the module is missing (`.ci/run` installs
//! both).

mod common;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::SystemTime;

use common::*;

/// A fixed end for both the export and the report.
fn as_of() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        + 60_000
}

/// `udp-aggregator export` of `dirs` into `out`; its summary line's fields.
fn export(dirs: &[&Path], out: &Path, as_of: u64) -> BTreeMap<String, String> {
    let mut cmd = Command::new(AGGREGATOR);
    cmd.arg("export").arg("--out").arg(out);
    cmd.args(["--as-of", &as_of.to_string()]);
    for d in dirs {
        cmd.arg("--data-dir").arg(d);
    }
    let out = succeeded(&mut cmd);
    let line = String::from_utf8(out.stdout).unwrap();
    line.trim()
        .strip_prefix("export: ")
        .expect("the summary line")
        .split(' ')
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// The JSON report of `dirs` over all their rows to `as_of`.
fn report(dirs: &[&Path], as_of: u64) -> serde_json::Value {
    let as_of = as_of.to_string();
    let mut args: Vec<&OsStr> = [
        "--report-format",
        "json",
        "--window",
        "all",
        "--as-of",
        &as_of,
    ]
    .map(OsStr::new)
    .to_vec();
    for d in dirs {
        args.push(OsStr::new("--data-dir"));
        args.push(d.as_os_str());
    }
    serde_json::from_slice(&report_with(&args)).unwrap()
}

/// Writes `days` of history of `count` VMs from `base` on (10-minute
/// interval) into `dir`.
fn history(dir: &Path, count: u32, days: &str, base: &str) {
    succeeded(
        Command::new(VMSIM)
            .args(["--count", &count.to_string(), "--interval", "10m"])
            .args(["--days", days, "--src-base", base, "--write-dir"])
            .arg(dir),
    );
}

/// The SQL of `docs/scaling.md` between `<!-- NAME -->` and `<!-- /NAME -->`,
/// without its code fence.
fn documented(name: &str) -> String {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/scaling.md")).unwrap();
    let start = doc.find(&format!("<!-- {name} -->")).expect("start marker");
    let end = doc.find(&format!("<!-- /{name} -->")).expect("end marker");
    doc[start..end]
        .lines()
        .filter(|l| !l.starts_with("<!--") && !l.starts_with("```"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// An engine, and how its queries name the two datasets.
#[derive(Clone, Copy, Debug)]
enum Engine {
    DuckDb,
    ClickHouse,
}

impl Engine {
    fn module(self) -> &'static str {
        match self {
            Engine::DuckDb => "duckdb",
            Engine::ClickHouse => "chdb",
        }
    }

    fn available(self) -> bool {
        let found = Command::new("python3")
            .args(["-c", &format!("import {}", self.module())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            skip(&format!(
                "python3 has no {} module (pip install {})",
                self.module(),
                self.module()
            ));
        }
        found
    }

    /// The dataset `name` of `out` as this engine reads a directory of
    /// Parquet files.
    fn table(self, out: &Path, name: &str) -> String {
        let glob = format!("{}/{name}/*/*.parquet", out.display());
        match self {
            Engine::DuckDb => format!("read_parquet('{glob}')"),
            Engine::ClickHouse => format!("file('{glob}', Parquet)"),
        }
    }

    /// Runs `sql` (its `$ROWS` and `$VM_DAYS` naming `out`'s datasets):
    /// each result row as its first column and the rest as numbers.
    fn query(self, sql: &str, out: &Path) -> Vec<(String, Vec<f64>)> {
        let sql = sql
            .replace("$ROWS", &self.table(out, "rows"))
            .replace("$VM_DAYS", &self.table(out, "vm_days"));
        let script = "import json, sys\n\
            engine, sql = sys.argv[1], sys.stdin.read()\n\
            if engine == 'duckdb':\n\
            \x20   import duckdb\n\
            \x20   rows = duckdb.sql(sql).fetchall()\n\
            else:\n\
            \x20   import chdb\n\
            \x20   rows = json.loads(str(chdb.query(sql, 'JSONCompact')))['data']\n\
            print(json.dumps([[str(r[0])] + [float(x) for x in r[1:]] for r in rows]))";
        let mut python = Command::new("python3");
        python.args(["-c", script, self.module()]);
        let done = run_with_stdin(python, sql.as_bytes()).expect("python3 runs");
        assert!(
            done.status.success(),
            "{self:?} failed on:\n{sql}\n{}",
            String::from_utf8_lossy(&done.stderr)
        );
        let rows: Vec<Vec<serde_json::Value>> = serde_json::from_slice(&done.stdout).unwrap();
        rows.into_iter()
            .map(|r| {
                let vm = r[0].as_str().unwrap().to_string();
                (vm, r[1..].iter().map(|x| x.as_f64().unwrap()).collect())
            })
            .collect()
    }
}

/// Per VM: samples, CPU p95 and max, memory max, as the report says.
fn report_figures(json: &serde_json::Value) -> BTreeMap<String, Vec<f64>> {
    json["vms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let u = &v["utilization"];
            let samples = v["datagrams"]["samples"].as_f64().unwrap();
            let f = |k: &str| u[k].as_f64().unwrap();
            let figures = vec![samples, f("cpu_p95"), f("cpu_max"), f("mem_max")];
            (v["ip"].as_str().unwrap().to_string(), figures)
        })
        .collect()
}

/// Per VM: idle days and days with data, as the report says.
fn report_idle_days(json: &serde_json::Value) -> BTreeMap<String, Vec<f64>> {
    json["vms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let days = vec![
                v["idle_days"].as_f64().unwrap(),
                v["days_with_data"].as_f64().unwrap(),
            ];
            (v["ip"].as_str().unwrap().to_string(), days)
        })
        .collect()
}

fn by_vm(rows: Vec<(String, Vec<f64>)>) -> BTreeMap<String, Vec<f64>> {
    rows.into_iter().collect()
}

fn engines_agree_with_the_report(engine: Engine) {
    if !engine.available() {
        return;
    }
    let (data, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    history(data.path(), 4, "3", "127.1.0.1");
    // A rotated, compressed part beside a live one: read as the report
    // reads it.
    let live = data.path().join("127.1.0.1.csv");
    let text = std::fs::read_to_string(&live).unwrap();
    let cut = text[..text.len() / 2].rfind('\n').unwrap() + 1;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &text.as_bytes()[..cut]).unwrap();
    std::fs::write(data.path().join("127.1.0.1.csv.1.gz"), gz.finish().unwrap()).unwrap();
    let header = vmstats::wire::CSV_HEADER;
    std::fs::write(&live, format!("{header}{}", &text[cut..])).unwrap();
    let at = as_of();
    let done = export(&[data.path()], out.path(), at);
    assert_eq!(done["vms"], "4");
    let json = report(&[data.path()], at);
    let samples: f64 = report_figures(&json).values().map(|f| f[0]).sum();
    assert_eq!(done["rows"].parse::<f64>().unwrap(), samples);
    let figures = by_vm(engine.query(&documented("per-vm-query"), out.path()));
    assert_eq!(figures, report_figures(&json), "{engine:?}");
}

#[test]
fn duckdb_reads_what_the_report_says() {
    engines_agree_with_the_report(Engine::DuckDb);
}

#[test]
fn clickhouse_reads_what_the_report_says() {
    engines_agree_with_the_report(Engine::ClickHouse);
}

/// Three shards exported one by one into one directory: the fleet's idle
/// days per VM in one query, as the report over the three data dirs says.
fn the_fleet_query_over_three_shards(engine: Engine) {
    if !engine.available() {
        return;
    }
    let shards: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let out = tempfile::tempdir().unwrap();
    let at = as_of();
    for (i, shard) in shards.iter().enumerate() {
        history(shard.path(), 3, "2", &format!("127.{}.0.1", i + 3));
        export(&[shard.path()], out.path(), at);
    }
    let dirs: Vec<&Path> = shards.iter().map(|s| s.path()).collect();
    let idle = by_vm(engine.query(&documented("fleet-idle-days-query"), out.path()));
    assert_eq!(idle.len(), 9);
    assert_eq!(idle, report_idle_days(&report(&dirs, at)), "{engine:?}");
}

#[test]
fn duckdb_fleet_query_over_three_shards() {
    the_fleet_query_over_three_shards(Engine::DuckDb);
}

#[test]
fn clickhouse_fleet_query_over_three_shards() {
    the_fleet_query_over_three_shards(Engine::ClickHouse);
}

/// Every Parquet file under `out` and its modification time.
fn files(out: &Path) -> BTreeMap<PathBuf, SystemTime> {
    let mut found = BTreeMap::new();
    for dataset in ["rows", "vm_days"] {
        for day in std::fs::read_dir(out.join(dataset)).unwrap() {
            for f in std::fs::read_dir(day.unwrap().path()).unwrap() {
                let f = f.unwrap();
                found.insert(f.path(), f.metadata().unwrap().modified().unwrap());
            }
        }
    }
    found
}

#[test]
fn a_second_export_writes_nothing_and_a_change_only_its_day() {
    let (data, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    history(data.path(), 3, "2", "127.1.0.1");
    let at = as_of();
    let first = export(&[data.path()], out.path(), at);
    let days: usize = first["days"].parse().unwrap();
    assert!(days >= 2, "{first:?}");
    assert_eq!(first["days_written"], first["days"]);
    let before = files(out.path());
    assert_eq!(before.len(), 2 * days, "{before:?}");
    let manifest_written = || {
        let mut manifests = std::fs::read_dir(out.path().join("_vmstats")).unwrap();
        let manifest = manifests.next().unwrap().unwrap();
        manifest.metadata().unwrap().modified().unwrap()
    };
    let manifest_before = manifest_written();
    let second = export(&[data.path()], out.path(), at);
    assert_eq!(second["days_written"], "0", "{second:?}");
    assert_eq!(files(out.path()), before, "a file was rewritten");
    assert_eq!(
        manifest_written(),
        manifest_before,
        "the manifest was rewritten"
    );
    // A late row of the last day: that day's two files only.
    let live = data.path().join("127.1.0.2.csv");
    let text = std::fs::read_to_string(&live).unwrap();
    let last = text.lines().last().unwrap();
    let mut fields: Vec<String> = last.split(',').map(String::from).collect();
    fields[0] = (fields[0].parse::<u64>().unwrap() + 1).to_string();
    fields[3] = (fields[3].parse::<u64>().unwrap() + 1).to_string();
    std::fs::write(&live, format!("{text}{}\n", fields.join(","))).unwrap();
    let third = export(&[data.path()], out.path(), at);
    assert_eq!(third["days_written"], "1", "{third:?}");
    let after = files(out.path());
    let changed: Vec<_> = after
        .iter()
        .filter(|(path, t)| before.get(*path) != Some(*t))
        .map(|(path, _)| path.clone())
        .collect();
    assert_eq!(changed.len(), 2, "{changed:?}");
    let date = |p: &Path| p.parent().unwrap().file_name().unwrap().to_owned();
    assert_eq!(
        date(&changed[0]),
        date(&changed[1]),
        "rows and vm_days of one day"
    );
    // No temporary file left beside them.
    let hidden = after.keys().filter(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'))
    });
    assert_eq!(hidden.count(), 0);
}

#[test]
fn a_bad_shard_name_and_an_empty_data_dir_are_clear_errors() {
    let (data, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let run = |args: &[&str]| {
        let done = Command::new(AGGREGATOR)
            .arg("export")
            .arg("--data-dir")
            .arg(data.path())
            .arg("--out")
            .arg(out.path())
            .args(args)
            .output()
            .unwrap();
        assert!(!done.status.success());
        String::from_utf8(done.stderr).unwrap()
    };
    assert!(run(&["--shard", "../x"]).contains("--shard"));
    assert!(run(&[]).contains("--data-dir"));
}
