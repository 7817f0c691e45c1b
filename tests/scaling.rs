//! The DuckDB query of `docs/scaling.md`, run as written over two data
//! dirs, says what `udp-aggregator report` says (skipped, with a message,
//! where Python's duckdb module is missing; `.ci/run` installs it).

mod common;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::process::{Command, Stdio};

use common::*;

/// The SQL between the doc's markers, without its code fence.
fn documented_query() -> String {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/scaling.md")).unwrap();
    let start = doc.find("<!-- duckdb-query -->").expect("start marker");
    let end = doc.find("<!-- /duckdb-query -->").expect("end marker");
    doc[start..end]
        .lines()
        .filter(|l| !l.starts_with("<!--") && !l.starts_with("```"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_documented_duckdb_query_agrees_with_the_report() {
    if !Command::new("python3")
        .args(["-c", "import duckdb"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        skip("python3 has no duckdb module (pip install duckdb)");
        return;
    }
    // Two aggregators' copies of the same three VMs: the second holds the
    // same rows, which must count once.
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_history(a.path(), 3, "2");
    for entry in std::fs::read_dir(a.path()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), b.path().join(entry.file_name())).unwrap();
    }
    let dirs = format!(
        "['{}/*.csv*', '{}/*.csv*']",
        a.path().display(),
        b.path().display()
    );
    let sql = documented_query().replace("$DIRS", &dirs);
    let script = "import duckdb, json, sys\n\
        rows = duckdb.sql(sys.stdin.read()).fetchall()\n\
        print(json.dumps([[r[0], r[1], float(r[2]), float(r[3]), float(r[4])] for r in rows]))";
    let mut python = Command::new("python3");
    python.args(["-c", script]);
    let out = run_with_stdin(python, sql.as_bytes()).expect("python3 runs");
    assert!(out.status.success(), "duckdb failed on:\n{sql}");
    let duck: Vec<(String, u64, f64, f64, f64)> = serde_json::from_slice(&out.stdout).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&report_with(&[
        OsStr::new("--report-format"),
        OsStr::new("json"),
        OsStr::new("--data-dir"),
        a.path().as_os_str(),
        OsStr::new("--data-dir"),
        b.path().as_os_str(),
    ]))
    .unwrap();
    let report: BTreeMap<String, (u64, f64, f64, f64)> = json["vms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let u = &v["utilization"];
            let f = |k: &str| u[k].as_f64().unwrap();
            let samples = v["datagrams"]["samples"].as_u64().unwrap();
            let ip = v["ip"].as_str().unwrap().to_string();
            (ip, (samples, f("cpu_p95"), f("cpu_max"), f("mem_max")))
        })
        .collect();
    assert_eq!(duck.len(), 3);
    for (vm, samples, cpu_p95, cpu_max, mem_max) in duck {
        assert_eq!(
            report.get(&vm),
            Some(&(samples, cpu_p95, cpu_max, mem_max)),
            "{vm}"
        );
    }
}
