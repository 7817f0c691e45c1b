//! Who may write: the allow-list and the cap on distinct VMs.
//!
//! Both are checked in the receive loop, before a datagram is accepted, so a
//! refused source never gets a file, a buffer or a worker's attention. The
//! cap exists because UDP source addresses are trivially spoofed: without
//! it, a flood from random addresses would create a file and per-VM state
//! for each, until the disk or memory gave out.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

/// Why a source was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Outside every `--allow` block (the contract's `not_allowed`).
    NotAllowed,
    /// A new VM beyond `--max-vms` (counted as `vm_limit`).
    VmLimit,
}

type IpSet = HashSet<IpAddr, foldhash::fast::RandomState>;

/// The shared set; a panic while holding it cannot leave it half-changed
/// (an insert either happened or not), so a poisoned lock is still good.
fn lock(set: &Mutex<IpSet>) -> MutexGuard<'_, IpSet> {
    set.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One receive loop's admission. With several receivers (`--receivers`)
/// the cap is the fleet's, so the VMs admitted are shared; each loop keeps
/// its own copy of those it has seen, so a known VM costs a lookup and no
/// lock, and the shared set is taken only on a VM's first datagram at that
/// loop.
pub struct Admission {
    allow: Vec<Cidr>,
    max_vms: usize,
    seen_here: IpSet,
    admitted: Arc<Mutex<IpSet>>,
}

impl Admission {
    pub fn new(allow: Vec<Cidr>, max_vms: usize) -> Self {
        Admission {
            allow,
            max_vms,
            seen_here: IpSet::default(),
            admitted: Arc::default(),
        }
    }

    /// Another receive loop's admission, sharing this one's cap.
    pub fn share(&self) -> Self {
        Admission {
            allow: self.allow.clone(),
            max_vms: self.max_vms,
            seen_here: IpSet::default(),
            admitted: Arc::clone(&self.admitted),
        }
    }

    /// Admits `ip` (already canonical) or says why not. A known VM is
    /// always admitted, so the cap never cuts off a VM that has a file.
    pub fn check(&mut self, ip: IpAddr) -> Result<(), Refusal> {
        if !self.allow.is_empty() && !self.allow.iter().any(|c| c.contains(ip)) {
            return Err(Refusal::NotAllowed);
        }
        if self.seen_here.contains(&ip) {
            return Ok(());
        }
        let mut admitted = lock(&self.admitted);
        if !admitted.contains(&ip) {
            if admitted.len() >= self.max_vms {
                return Err(Refusal::VmLimit);
            }
            admitted.insert(ip);
        }
        drop(admitted);
        self.seen_here.insert(ip);
        Ok(())
    }

    /// Distinct VMs admitted so far, by every receive loop.
    pub fn vms(&self) -> usize {
        lock(&self.admitted).len()
    }
}

/// An address block for `--allow`: `10.0.0.0/8`, `fd00::/8`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` (already canonical: IPv4-mapped sources as IPv4) is inside.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{text}` is not an address or CIDR block"))?;
        let addr = crate::wire::canonical_ip(addr);
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{text}` has a prefix length outside 0..={max}"))?,
        };
        Ok(Cidr { addr, prefix })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        let net: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains("10.1.200.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(!net.contains("fd00::1".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("1.2.3.4".parse().unwrap()));
        let one: Cidr = "fd00::5".parse().unwrap();
        assert!(one.contains("fd00::5".parse().unwrap()));
        assert!(!one.contains("fd00::6".parse().unwrap()));
        let mapped: Cidr = "::ffff:127.0.0.1".parse().unwrap();
        assert!(mapped.contains("127.0.0.1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("banana/8".parse::<Cidr>().is_err());
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn empty_allow_list_admits_all() {
        let mut a = Admission::new(vec![], 10);
        assert_eq!(a.check(ip("203.0.113.9")), Ok(()));
        assert_eq!(a.check(ip("fd00::1")), Ok(()));
    }

    #[test]
    fn allow_list_refuses_outsiders() {
        let mut a = Admission::new(
            vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()],
            10,
        );
        assert_eq!(a.check(ip("10.9.9.9")), Ok(()));
        assert_eq!(a.check(ip("fd12::1")), Ok(()));
        assert_eq!(a.check(ip("11.0.0.1")), Err(Refusal::NotAllowed));
        assert_eq!(a.check(ip("fe80::1")), Err(Refusal::NotAllowed));
        assert_eq!(a.vms(), 2);
    }

    #[test]
    fn receive_loops_share_one_cap() {
        let mut a = Admission::new(vec![], 2);
        let mut b = a.share();
        assert_eq!(a.check(ip("127.0.0.1")), Ok(()));
        assert_eq!(b.check(ip("127.0.0.2")), Ok(()));
        assert_eq!(b.check(ip("127.0.0.3")), Err(Refusal::VmLimit));
        // A VM admitted by one loop is known to the other.
        assert_eq!(a.check(ip("127.0.0.2")), Ok(()));
        assert_eq!((a.vms(), b.vms()), (2, 2));
    }

    #[test]
    fn cap_keeps_known_vms_and_refuses_new_ones() {
        let mut a = Admission::new(vec![], 2);
        assert_eq!(a.check(ip("127.0.0.1")), Ok(()));
        assert_eq!(a.check(ip("127.0.0.2")), Ok(()));
        assert_eq!(a.check(ip("127.0.0.3")), Err(Refusal::VmLimit));
        assert_eq!(a.check(ip("127.0.0.1")), Ok(()));
        assert_eq!(a.vms(), 2);
    }
}
