//! Keeping the summary cache current while the aggregator runs, so its exit
//! report reads only the rows of the last moments, and publishing what the
//! report says meanwhile (VMs per category, losses) for the metrics.
//!
//! After ten minutes at 500,000 datagrams/s the files hold 300 M rows
//! (about 30 GB); an exit report that read them all would take a minute
//! after SIGTERM. Instead a thread builds the report every
//! `--cache-refresh` (30 s by default), which brings every file's cache
//! entry up to date: it reads what the workers appended since its last
//! pass, from the page cache, on one thread at nice 10 so the receive path
//! keeps its CPU, and without a word on stderr (the exit report names any
//! file it cannot read). The exit report then finds every entry current
//! but for the last pass's rows.

use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::stop::Stop;

use std::sync::Arc;

use super::served::{Pages, Served};
use super::{Published, Settings};

/// The refresh thread; [`Refresher::stop`] ends it between two VMs.
pub struct Refresher {
    stop: Stop,
    handle: JoinHandle<()>,
}

impl Refresher {
    /// Starts building `data_dir`'s report by `settings` every `every`,
    /// publishing its figures to `published` and, with `served`, the
    /// report itself for the HTTP listener's pages (which then holds every
    /// VM's report between passes; without it a pass keeps only counts).
    pub fn start(
        data_dir: PathBuf,
        settings: Settings,
        every: Duration,
        published: Published,
        served: Option<Served>,
    ) -> std::io::Result<Refresher> {
        let (tx, rx) = std::sync::mpsc::channel::<Stop>();
        let handle = std::thread::Builder::new()
            .name("vmstats-cache".into())
            .spawn(move || {
                let stop = Stop::for_current_thread();
                if tx.send(stop.clone()).is_err() {
                    return;
                }
                crate::sys::lower_thread_priority();
                let dirs = [data_dir];
                let mut next = Instant::now() + every;
                while !stop.sleep_until(next) {
                    let as_of = crate::unix_ms();
                    let figures = crate::quietly(true, || match &served {
                        None => super::figures_with(&dirs, &settings, as_of, &stop),
                        Some(served) => {
                            let built = super::report_with(&dirs, &settings, as_of, &stop)?;
                            Ok(built.map(|report| {
                                let figures = report.figures();
                                let pages = Arc::new(Pages::new(report));
                                *served.lock().expect("no panic holds it") = Some(pages);
                                figures
                            }))
                        }
                    });
                    if let Ok(Some(figures)) = figures {
                        *published.lock().expect("no panic holds it") = Some(figures);
                    }
                    next = Instant::now() + every;
                }
            })?;
        let stop = rx.recv().expect("the refresh thread sends its stop first");
        Ok(Refresher { stop, handle })
    }

    /// Ends the pass in progress after its current VM and waits for it.
    pub fn stop(self) {
        self.stop.request();
        let _ = self.handle.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refresh_fills_the_cache_publishes_and_stops_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let sim = crate::config::SimConfig {
            count: 3,
            days: 1.0,
            ..crate::config::SimConfig::default()
        };
        crate::sim::history::write(&sim, dir.path(), crate::unix_ms()).unwrap();
        let published = Published::default();
        let settings = Settings::new(&crate::config::ReportConfig::default()).unwrap();
        let every = Duration::from_millis(10);
        let served = Served::default();
        let r = Refresher::start(
            dir.path().to_path_buf(),
            settings,
            every,
            published.clone(),
            Some(served.clone()),
        )
        .unwrap();
        let started = Instant::now();
        while published.lock().unwrap().is_none() && started.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let figures = published.lock().unwrap().expect("published");
        assert_eq!(figures.vms.iter().sum::<u64>(), 3);
        let pages = served
            .lock()
            .unwrap()
            .clone()
            .expect("the pages published with them");
        assert!(pages.json().body.starts_with(b"{"));
        let cache = dir.path().join(super::super::cache::DIR_NAME);
        assert_eq!(super::super::cache::entries_in(&cache), Some(3));
        let stopping = Instant::now();
        r.stop();
        assert!(stopping.elapsed() < Duration::from_secs(5));
    }
}
