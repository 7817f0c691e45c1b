//! What ships in packaging/ is accepted by the tools that will read it:
//! `systemd-analyze verify` for every unit, `logrotate --debug` for the
//! rotation snippet. Each check says so and skips where its tool is absent
//! (`.ci/run` installs them).

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

fn tool(name: &str) -> bool {
    Command::new("which")
        .arg(name)
        .output()
        .is_ok_and(|o| o.status.success())
}

fn packaging(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("packaging")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_unit_passes_systemd_analyze_verify() {
    if !tool("systemd-analyze") {
        skip("systemd-analyze is not installed (apt-get install systemd)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The export's timer is verified with the service it starts.
    std::fs::write(
        dir.path().join("vmstats-export.timer"),
        packaging("vmstats-export.timer"),
    )
    .unwrap();
    for (unit, binary, timer) in [
        ("udp-aggregator.service", AGGREGATOR, None),
        ("udp-vmagent.service", VMAGENT, None),
        (
            "vmstats-export.service",
            AGGREGATOR,
            Some("vmstats-export.timer"),
        ),
    ] {
        // The units name the installed path; verify needs the binary to
        // exist, so point them at the one just built.
        let name = Path::new(binary).file_name().unwrap().to_str().unwrap();
        let installed = format!("/usr/local/bin/{name}");
        let text = packaging(unit).replace(&installed, binary);
        assert_ne!(text, packaging(unit), "{unit} does not start {installed}");
        let path = dir.path().join(unit);
        std::fs::write(&path, text).unwrap();
        let mut verify = Command::new("systemd-analyze");
        verify.args(["verify", "--man=no"]).arg(&path);
        if let Some(timer) = timer {
            verify.arg(dir.path().join(timer));
        }
        let out = verify.output().unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        // Whatever it says about this unit is a finding (messages about
        // the host's other units are not ours).
        let ours: Vec<&str> = said
            .lines()
            .filter(|l| l.contains(unit) || timer.is_some_and(|t| l.contains(t)))
            .collect();
        assert!(out.status.success() && ours.is_empty(), "{unit}: {said}");
    }
}

#[test]
fn the_logrotate_snippet_parses_and_names_parts_as_the_report_reads_them() {
    let text = packaging("vmstats.logrotate");
    // The report reads <ip>.csv-YYYYMMDD[.gz]; the aggregator makes new files.
    for needed in [
        "dateext",
        "dateformat -%Y%m%d",
        "nocreate",
        "delaycompress",
        "systemctl reload udp-aggregator",
    ] {
        assert!(text.contains(needed), "{needed}");
    }
    assert!(vmstats::wire::file_part("10.0.0.1.csv-20261126").is_some());
    assert!(vmstats::wire::file_part("10.0.0.1.csv-20261126.gz").is_some());
    if !tool("logrotate") {
        skip("logrotate is not installed (apt-get install logrotate)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("vmstats.conf");
    std::fs::write(&conf, &text).unwrap();
    let out = Command::new("logrotate")
        .arg("--debug")
        .arg("--state")
        .arg(dir.path().join("state"))
        .arg(&conf)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !said.contains("error:"), "{said}");
}
