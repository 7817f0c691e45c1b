//! Keeping the summary cache current while the aggregator runs, so its exit
//! report reads only the rows of the last moments.
//!
//! After ten minutes at 500,000 datagrams/s the files hold 300 M rows
//! (about 30 GB); an exit report that read them all would take a minute
//! after SIGTERM. Instead a thread brings every file's cache entry up to
//! date every `--cache-refresh` (30 s by default): it reads what the
//! workers appended since its last pass, from the page cache, at nice 10 so
//! the receive path keeps its CPU. The exit report then finds every entry
//! current but for the last pass's rows.

use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::stop::Stop;

use super::cache::{self, CacheDirs};
use super::scan::{self, Window};
use super::summary::Accumulator;

/// The refresh thread; [`Refresher::stop`] ends it between two files.
pub struct Refresher {
    stop: Stop,
    handle: JoinHandle<()>,
}

impl Refresher {
    /// Starts refreshing `data_dir`'s cache every `every` for a report
    /// over `window` (before the time of each pass).
    pub fn start(
        data_dir: PathBuf,
        window: Option<Duration>,
        every: Duration,
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
                    refresh(&dirs, window, &stop);
                    next = Instant::now() + every;
                }
            })?;
        let stop = rx.recv().expect("the refresh thread sends its stop first");
        Ok(Refresher { stop, handle })
    }

    /// Ends the pass in progress after its current file and waits for it.
    pub fn stop(self) {
        self.stop.request();
        let _ = self.handle.join();
    }
}

/// One pass: every file's entry brought up to date, until `stop`.
fn refresh(dirs: &[PathBuf], window: Option<Duration>, stop: &Stop) {
    let window = Window::before(crate::unix_ms(), window);
    let vms = match scan::vm_files(dirs) {
        Ok(vms) => vms,
        Err(e) => {
            crate::log_line(&format!("warning: summary cache refresh: {e}"));
            return;
        }
    };
    let caches = CacheDirs::open(dirs);
    let mut acc = Accumulator::default();
    cache::with_writer(&caches, |writes| {
        for part in vms.values().flatten() {
            if stop.requested() {
                return;
            }
            // A file that cannot be read now is the exit report's to name.
            let _ = cache::segments(part, &window, &caches, &mut acc, &writes);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refresh_fills_the_cache_and_stops_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let now = crate::unix_ms();
        let cfg = crate::config::SimConfig {
            count: 3,
            days: 1.0,
            ..crate::config::SimConfig::default()
        };
        crate::sim::history::write(&cfg, dir.path(), now).unwrap();
        let r =
            Refresher::start(dir.path().to_path_buf(), None, Duration::from_millis(10)).unwrap();
        let cache = dir.path().join(cache::DIR_NAME);
        let filled = || std::fs::read_dir(&cache).map_or(0, |d| d.count()) == 3;
        let started = Instant::now();
        while !filled() && started.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(filled(), "no cache entries after {:?}", started.elapsed());
        let stopping = Instant::now();
        r.stop();
        assert!(stopping.elapsed() < Duration::from_secs(5));
    }
}
