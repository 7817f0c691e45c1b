//! Who may write: the allow-list and the cap on distinct VMs.
//!
//! Both are checked in the receive loop, before a datagram is accepted, so a
//! refused source never gets a file, a buffer or a worker's attention. The
//! cap exists because UDP source addresses are trivially spoofed: without
//! it, a flood from random addresses would create a file and per-VM state
//! for each, until the disk or memory gave out.

use std::collections::HashSet;
use std::net::IpAddr;

use crate::config::Cidr;

/// Why a source was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Outside every `--allow` block (the contract's `not_allowed`).
    NotAllowed,
    /// A new VM beyond `--max-vms` (counted as `vm_limit`).
    VmLimit,
}

pub struct Admission {
    allow: Vec<Cidr>,
    max_vms: usize,
    known: HashSet<IpAddr, foldhash::fast::RandomState>,
}

impl Admission {
    pub fn new(allow: Vec<Cidr>, max_vms: usize) -> Self {
        Admission {
            allow,
            max_vms,
            known: HashSet::default(),
        }
    }

    /// Admits `ip` (already canonical) or says why not. A known VM is
    /// always admitted, so the cap never cuts off a VM that has a file.
    pub fn check(&mut self, ip: IpAddr) -> Result<(), Refusal> {
        if !self.allow.is_empty() && !self.allow.iter().any(|c| c.contains(ip)) {
            return Err(Refusal::NotAllowed);
        }
        if self.known.contains(&ip) {
            return Ok(());
        }
        if self.known.len() >= self.max_vms {
            return Err(Refusal::VmLimit);
        }
        self.known.insert(ip);
        Ok(())
    }

    /// Distinct VMs admitted so far.
    pub fn vms(&self) -> usize {
        self.known.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn cap_keeps_known_vms_and_refuses_new_ones() {
        let mut a = Admission::new(vec![], 2);
        assert_eq!(a.check(ip("127.0.0.1")), Ok(()));
        assert_eq!(a.check(ip("127.0.0.2")), Ok(()));
        assert_eq!(a.check(ip("127.0.0.3")), Err(Refusal::VmLimit));
        assert_eq!(a.check(ip("127.0.0.1")), Ok(()));
        assert_eq!(a.vms(), 2);
    }
}
