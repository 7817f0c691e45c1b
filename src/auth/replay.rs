//! Which (boot_id, seq) of a VM were accepted: a sliding window per boot,
//! as IPsec's anti-replay window (RFC 4303 3.4.3) keeps one per SA, for the
//! VM's current boot and the one before it. A boot_id not among them is a
//! new boot only when its timestamp is past everything accepted from the
//! VM: an agent's clock moves on across a restart, a recording does not,
//! so an old boot replayed is refused however many boots ago it was.

/// Seqs below a boot's highest that the window still tells apart.
pub const WINDOW: u64 = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Boot {
    id: u32,
    highest: u64,
    /// Bit i: `highest - i` was accepted.
    seen: u64,
}

impl Boot {
    fn new(id: u32, seq: u64) -> Boot {
        Boot {
            id,
            highest: seq,
            seen: 1,
        }
    }

    /// Whether `seq` may be accepted (new, within the window).
    fn fresh(&self, seq: u64) -> bool {
        if seq > self.highest {
            return true;
        }
        let back = self.highest - seq;
        back < WINDOW && self.seen & (1 << back) == 0
    }

    fn take(&mut self, seq: u64) {
        if seq > self.highest {
            let ahead = seq - self.highest;
            self.seen = if ahead >= WINDOW {
                0
            } else {
                self.seen << ahead
            };
            self.seen |= 1;
            self.highest = seq;
        } else {
            self.seen |= 1 << (self.highest - seq);
        }
    }
}

/// One VM's accepted (boot_id, seq).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    now: Boot,
    before: Option<Boot>,
    /// The latest timestamp accepted, any boot.
    latest_ms: u64,
}

impl Replay {
    /// A VM's state after its first accepted datagram.
    pub fn first(boot_id: u32, seq: u64, ts_ms: u64) -> Replay {
        Replay {
            now: Boot::new(boot_id, seq),
            before: None,
            latest_ms: ts_ms,
        }
    }

    /// Takes (boot_id, seq) sent at `ts_ms`: false when it was accepted
    /// before or is too old to tell (the caller refuses it as `replayed`).
    pub fn take(&mut self, boot_id: u32, seq: u64, ts_ms: u64) -> bool {
        let boot = if self.now.id == boot_id {
            &mut self.now
        } else if let Some(before) = self.before.as_mut().filter(|b| b.id == boot_id) {
            before
        } else if ts_ms > self.latest_ms {
            self.before = Some(self.now);
            self.now = Boot::new(boot_id, seq);
            self.latest_ms = ts_ms;
            return true;
        } else {
            return false;
        };
        if !boot.fresh(seq) {
            return false;
        }
        boot.take(seq);
        self.latest_ms = self.latest_ms.max(ts_ms);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_seq_once_within_the_window() {
        let mut r = Replay::first(1, 100, 1000);
        assert!(!r.take(1, 100, 1000), "the same datagram again");
        assert!(r.take(1, 102, 1002));
        assert!(r.take(1, 101, 1001), "late but new");
        assert!(!r.take(1, 101, 1001));
        assert!(r.take(1, 300, 1300));
        assert!(
            r.take(1, 237, 1237),
            "63 below the highest: still told apart"
        );
        assert!(!r.take(1, 236, 1236), "64 below: too old to tell");
        assert!(!r.take(1, 102, 1002));
    }

    #[test]
    fn restarts_keep_the_boot_before_and_refuse_older_ones() {
        let mut r = Replay::first(1, 0, 1000);
        assert!(r.take(1, 1, 1001));
        // The agent restarts: a new boot, later clock.
        assert!(r.take(2, 0, 2000));
        assert!(!r.take(1, 1, 1001), "the previous boot's datagram replayed");
        assert!(
            r.take(1, 2, 1002),
            "a late one of the previous boot, never seen"
        );
        assert!(r.take(3, 0, 3000));
        // Boot 1 is two boots back now; its clock is behind: a recording.
        assert!(!r.take(1, 3, 1003));
        assert!(!r.take(9, 0, 2500), "an unknown boot from the past");
        assert!(r.take(2, 1, 2001), "the boot before the current one");
    }
}
