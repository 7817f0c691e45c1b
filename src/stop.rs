//! Stopping a thread that sleeps between rounds of work (the agent between
//! samples, the report's cache refresh between passes) at once, without a
//! poll.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// How a thread is told to stop, and how it sleeps until then: a flag and
/// an unpark, so a sleep is one futex wait and a stop ends it at once. (A
/// channel receive with a deadline spins before it sleeps: at a 10 ms
/// interval that was a tenth of the agent's CPU.)
#[derive(Debug, Clone)]
pub struct Stop {
    flag: Arc<AtomicBool>,
    sleeper: std::thread::Thread,
}

impl Stop {
    /// A stop for the calling thread, the one that will sleep.
    pub fn for_current_thread() -> Stop {
        Stop {
            flag: Arc::new(AtomicBool::new(false)),
            sleeper: std::thread::current(),
        }
    }

    /// Whether a stop was requested.
    pub fn requested(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Asks the sleeper to finish and return (from a signal thread, the
    /// aggregator's shutdown, or a test).
    pub fn request(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.sleeper.unpark();
    }

    /// Sleeps until `until`; true when a stop came first.
    pub fn sleep_until(&self, until: Instant) -> bool {
        loop {
            if self.requested() {
                return true;
            }
            let now = Instant::now();
            if now >= until {
                return false;
            }
            std::thread::park_timeout(until - now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_stop_wakes_the_sleeper_at_once() {
        let stop = Stop::for_current_thread();
        let other = stop.clone();
        let started = Instant::now();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            other.request();
        });
        assert!(stop.sleep_until(started + Duration::from_secs(30)));
        assert!(started.elapsed() < Duration::from_secs(10));
        let idle = Stop::for_current_thread();
        assert!(!idle.sleep_until(Instant::now() + Duration::from_millis(20)));
    }
}
