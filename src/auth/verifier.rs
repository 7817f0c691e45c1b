//! A worker's verification: each datagram of its VMs checked against the
//! keys and the VM's replay window. State is made only for a VM whose
//! datagram verified, so forged traffic from any number of addresses
//! allocates nothing.

use std::net::IpAddr;
use std::sync::Arc;

use foldhash::HashMap;

use super::replay::Replay;
use super::{FleetKeys, Keyring};
use crate::wire::{Reject, Signed, Stat, VmKey};

/// One VM's verified state: its key (derived once per key set) and the
/// (boot_id, seq) it sent.
struct VmAuth {
    key: VmKey,
    /// The key set `key` was derived under.
    generation: u64,
    replay: Replay,
}

/// A worker's checks of version 2 datagrams, and whether version 1 is
/// still taken.
pub struct Verifier {
    ring: Option<Arc<Keyring>>,
    generation: u64,
    keys: Arc<FleetKeys>,
    vms: HashMap<IpAddr, VmAuth>,
    require: bool,
    max_skew_ms: u64,
}

impl Verifier {
    /// With `ring` (`--auth-keys`), version 2 is verified; without, every
    /// version 2 datagram is `bad_auth`. `require` refuses version 1.
    pub fn new(ring: Option<Arc<Keyring>>, require: bool, max_skew_ms: u64) -> Verifier {
        let keys = ring.as_ref().map(|r| r.keys()).unwrap_or_default();
        let generation = ring.as_ref().map_or(0, |r| r.generation());
        Verifier {
            ring,
            generation,
            keys,
            vms: HashMap::default(),
            require,
            max_skew_ms,
        }
    }

    /// Checks one datagram from `ip` received at `recv_ms`: whether its row
    /// is verified, or why it is refused.
    pub fn check(
        &mut self,
        ip: IpAddr,
        recv_ms: u64,
        stat: &Stat,
        signed: Option<&Signed>,
    ) -> Result<bool, Reject> {
        let Some(signed) = signed else {
            return if self.require {
                Err(Reject::Unauthenticated)
            } else {
                Ok(false)
            };
        };
        self.refresh();
        let generation = self.generation;
        // One lookup: the VM's entry, if one of its datagrams verified.
        let vm = self.vms.get_mut(&ip);
        let known = vm
            .as_ref()
            .is_some_and(|v| v.generation == generation && v.key.key_id() == signed.key_id);
        // A key not kept (a new VM, another id, a reread key set) is derived
        // here and kept only once its datagram verified.
        let derived = if known {
            None
        } else {
            let fleet = self.keys.get(&signed.key_id).ok_or(Reject::BadAuth)?;
            Some(VmKey::derive(signed.key_id, fleet, ip))
        };
        let key = match (&derived, &vm) {
            (Some(key), _) => key,
            (None, Some(v)) => &v.key,
            (None, None) => unreachable!("a key is known only with its VM"),
        };
        if !key.verify(stat, signed) {
            return Err(Reject::BadAuth);
        }
        if stat.timestamp_ms.abs_diff(recv_ms) > self.max_skew_ms {
            return Err(Reject::Stale);
        }
        match vm {
            Some(vm) => {
                if !vm.replay.take(stat.boot_id, stat.seq, stat.timestamp_ms) {
                    return Err(Reject::Replayed);
                }
                if let Some(key) = derived {
                    (vm.key, vm.generation) = (key, generation);
                }
            }
            None => {
                let vm = VmAuth {
                    key: derived.expect("a VM not known has its key derived"),
                    generation,
                    replay: Replay::first(stat.boot_id, stat.seq, stat.timestamp_ms),
                };
                self.vms.insert(ip, vm);
            }
        }
        Ok(true)
    }

    /// Takes the keys reread since the last look (SIGHUP).
    fn refresh(&mut self) {
        if let Some(ring) = &self.ring {
            let now = ring.generation();
            if now != self.generation {
                self.keys = ring.keys();
                self.generation = now;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{self, TEST_VECTOR};

    fn ring(dir: &tempfile::TempDir, ids: &[u32]) -> Arc<Keyring> {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.path().join("fleet.keys");
        let text: String = ids
            .iter()
            .map(|id| format!("{}\n", super::super::keyfile::line(*id, &[*id as u8; 32])))
            .collect();
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        Arc::new(Keyring::load(&path).unwrap())
    }

    fn signed(id: u32, ip: &str, stat: &Stat) -> (Stat, Signed) {
        let key = VmKey::derive(id, &[id as u8; 32], ip.parse().unwrap());
        let bytes = key.encode(stat);
        let (s, signed) = wire::decode_datagram(&bytes, false).unwrap();
        (s, signed.unwrap())
    }

    #[test]
    fn each_rule_refuses_under_its_reason() {
        let dir = tempfile::tempdir().unwrap();
        let mut v = Verifier::new(Some(ring(&dir, &[1])), false, 300_000);
        let ip: IpAddr = "10.20.0.15".parse().unwrap();
        let at = TEST_VECTOR.timestamp_ms;
        let (s, sig) = signed(1, "10.20.0.15", &TEST_VECTOR);
        assert_eq!(v.check(ip, at, &s, Some(&sig)), Ok(true));
        assert_eq!(v.check(ip, at, &s, Some(&sig)), Err(Reject::Replayed));
        assert_eq!(
            v.check(ip, at, &s, None),
            Ok(false),
            "version 1 still taken"
        );
        // Another VM's key, an unknown id, a flipped bit, a stale clock.
        let (s, sig) = signed(
            1,
            "10.20.0.16",
            &Stat {
                seq: 42,
                ..TEST_VECTOR
            },
        );
        assert_eq!(v.check(ip, at, &s, Some(&sig)), Err(Reject::BadAuth));
        let (s, sig) = signed(
            2,
            "10.20.0.15",
            &Stat {
                seq: 43,
                ..TEST_VECTOR
            },
        );
        assert_eq!(v.check(ip, at, &s, Some(&sig)), Err(Reject::BadAuth));
        let (mut s, sig) = signed(
            1,
            "10.20.0.15",
            &Stat {
                seq: 44,
                ..TEST_VECTOR
            },
        );
        s.cpu_pct_x100 ^= 1;
        assert_eq!(v.check(ip, at, &s, Some(&sig)), Err(Reject::BadAuth));
        let (s, sig) = signed(
            1,
            "10.20.0.15",
            &Stat {
                seq: 45,
                ..TEST_VECTOR
            },
        );
        assert_eq!(
            v.check(ip, at + 300_001, &s, Some(&sig)),
            Err(Reject::Stale)
        );
        assert_eq!(v.check(ip, at + 300_000, &s, Some(&sig)), Ok(true));
        let mut strict = Verifier::new(None, true, 300_000);
        assert_eq!(strict.check(ip, at, &s, None), Err(Reject::Unauthenticated));
        assert_eq!(
            strict.check(ip, at, &s, Some(&sig)),
            Err(Reject::BadAuth),
            "no keys"
        );
    }

    #[test]
    fn forged_datagrams_leave_no_state() {
        let dir = tempfile::tempdir().unwrap();
        let mut v = Verifier::new(Some(ring(&dir, &[1])), false, u64::MAX);
        let (s, sig) = signed(1, "10.0.0.1", &TEST_VECTOR);
        for i in 0..1000u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0b00_0000 + i));
            assert_eq!(v.check(ip, 0, &s, Some(&sig)), Err(Reject::BadAuth));
        }
        assert!(v.vms.is_empty());
    }

    #[test]
    fn a_reread_key_set_is_taken_at_the_next_datagram() {
        let dir = tempfile::tempdir().unwrap();
        let keys = ring(&dir, &[1]);
        let mut v = Verifier::new(Some(Arc::clone(&keys)), false, u64::MAX);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let (s, sig) = signed(2, "10.0.0.1", &TEST_VECTOR);
        assert_eq!(v.check(ip, 0, &s, Some(&sig)), Err(Reject::BadAuth));
        // Rotation: id 2 added (and 1 kept, for agents not yet moved).
        let _ = ring(&dir, &[1, 2]);
        keys.reload().unwrap();
        assert_eq!(v.check(ip, 0, &s, Some(&sig)), Ok(true));
        // A file that no longer parses keeps the keys held.
        std::fs::write(dir.path().join("fleet.keys"), "junk\n").unwrap();
        assert!(keys.reload().is_err());
        let (s, sig) = signed(
            1,
            "10.0.0.1",
            &Stat {
                seq: 42,
                ..TEST_VECTOR
            },
        );
        assert_eq!(v.check(ip, 0, &s, Some(&sig)), Ok(true));
    }
}
