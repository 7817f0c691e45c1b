//! The report as the HTTP listener serves it (`/`, `/report.json`,
//! `/vm/<address>.json`): the report of the refresher's latest pass, kept
//! whole, each page rendered once on its first request after that pass
//! (with its gzip form), so a request costs a lookup and a copy, and no
//! request ever builds a report or touches the receive path.
//!
//! The page of a fleet is the fleet's inventory: serve it on loopback or
//! behind an authenticating proxy (`docs/design.md`).

use std::collections::HashMap;
use std::io::Write as _;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};

use crate::config::ReportFormat;

use super::Report;
use super::render;

/// A rendered page: its body, gzipped, and its type.
pub struct Page {
    pub body: Vec<u8>,
    pub gzip: Vec<u8>,
    pub content_type: &'static str,
}

impl Page {
    fn new(body: String, content_type: &'static str) -> Page {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(body.as_bytes())
            .expect("a Vec takes any bytes");
        Page {
            gzip: gz.finish().expect("a Vec takes any bytes"),
            body: body.into_bytes(),
            content_type,
        }
    }
}

/// The pages of one report.
pub struct Pages {
    report: Report,
    by_ip: HashMap<IpAddr, usize>,
    html: OnceLock<Page>,
    json: OnceLock<Page>,
}

/// The latest pages (`None` before the refresher's first pass), shared by
/// the refresher and the HTTP listener.
pub type Served = Arc<Mutex<Option<Arc<Pages>>>>;

impl Pages {
    pub fn new(report: Report) -> Pages {
        let by_ip = report
            .vms
            .iter()
            .enumerate()
            .map(|(i, v)| (v.vm.ip, i))
            .collect();
        Pages {
            report,
            by_ip,
            html: OnceLock::new(),
            json: OnceLock::new(),
        }
    }

    /// The validator of every page of this report: a new pass, a new tag.
    pub fn etag(&self) -> String {
        format!("\"vmstats-{}\"", self.report.window.as_of_ms)
    }

    pub fn html(&self) -> &Page {
        self.html.get_or_init(|| {
            let text = render::render(&self.report, ReportFormat::Html);
            Page::new(text, "text/html; charset=utf-8")
        })
    }

    pub fn json(&self) -> &Page {
        self.json.get_or_init(|| {
            let text = render::render(&self.report, ReportFormat::Json);
            Page::new(text, "application/json")
        })
    }

    /// The VM at `ip`, with its daily series; `None` for one not in it.
    pub fn vm(&self, ip: IpAddr) -> Option<Page> {
        let vm = &self.report.vms[*self.by_ip.get(&ip)?];
        Some(Page::new(
            render::render_vm_json(&self.report, vm),
            "application/json",
        ))
    }
}
