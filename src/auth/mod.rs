//! Authenticated datagrams (`PROTOCOL.md` 1b): which fleet keys the
//! aggregator holds, and, per worker, which VM sent what.
//!
//! A VM proves its datagrams with a key derived from a fleet key and its
//! own address, so it can speak for no other address; the aggregator
//! derives the same key from the source it sees. What a datagram must pass
//! (in the contract's order, after version 1's checks): a known key id and
//! a matching tag (`bad_auth`), a timestamp within `--auth-max-skew` of the
//! receive time (`stale`), and a (boot_id, seq) never accepted before
//! (`replayed`, see [`replay`]).
//!
//! What a recording of the traffic still allows: nothing new. A recorded
//! datagram sent again is refused as replayed while the aggregator runs,
//! and as stale once it is older than the skew. After an aggregator
//! restart, a recording younger than the skew is accepted once more: its
//! row is a second copy of the same (boot_id, seq), which the report
//! counts once. A forged datagram costs the aggregator two HMACs (the VM
//! key's derivation and the tag) and no state: a VM's entry is made only
//! once one of its datagrams verified.
//!
//! Modules: `keyfile` (the key file format), `replay` (the window per
//! boot), `verifier` (a worker's checks and its VMs' state).

pub mod keyfile;
pub mod replay;
mod verifier;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};

pub use keyfile::KeyFileError;
pub use verifier::Verifier;

/// Fleet keys by key id.
pub type FleetKeys = BTreeMap<u32, [u8; 32]>;

/// `udp-aggregator keys new`: a fresh fleet key line, 32 bytes from the
/// operating system's random source.
pub fn new_key_line(key_id: u32) -> Result<String, KeyFileError> {
    use rand::TryRng;
    let mut bytes = [0u8; 32];
    rand::rngs::SysRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| KeyFileError::Random(e.to_string()))?;
    Ok(keyfile::line(key_id, &bytes))
}

/// `udp-aggregator keys derive`: the key line of the VM at `ip` under
/// fleet key `key_id` of `fleet_file`, as that VM's agent holds it.
pub fn vm_key_line(fleet_file: &Path, key_id: u32, ip: IpAddr) -> Result<String, KeyFileError> {
    let keys = keyfile::read(fleet_file, "--auth-keys")?;
    let fleet = keys.get(&key_id).ok_or(KeyFileError::NoKeyId {
        path: fleet_file.to_path_buf(),
        flag: "--auth-keys",
        key_id,
    })?;
    let key = crate::wire::VmKey::derive(key_id, fleet, ip);
    Ok(keyfile::line(key_id, key.bytes()))
}

/// An agent's VM key (`--key-file`): the file's one key.
pub fn read_vm_key(path: &Path) -> Result<crate::wire::VmKey, KeyFileError> {
    let keys = keyfile::read(path, "--key-file")?;
    if keys.len() > 1 {
        return Err(KeyFileError::Several {
            path: path.to_path_buf(),
            count: keys.len(),
        });
    }
    let (id, bytes) = newest(&keys);
    Ok(crate::wire::VmKey::new(id, *bytes))
}

/// A simulator's fleet key (`--fleet-key`): the file's key with the
/// highest id (the newest, during a rotation).
pub fn read_fleet_key(path: &Path) -> Result<(u32, [u8; 32]), KeyFileError> {
    let keys = keyfile::read(path, "--fleet-key")?;
    let (id, bytes) = newest(&keys);
    Ok((id, *bytes))
}

/// The key with the highest id of a key file read (never empty).
fn newest(keys: &FleetKeys) -> (u32, &[u8; 32]) {
    let (id, bytes) = keys
        .iter()
        .next_back()
        .expect("a key file read holds a key");
    (*id, bytes)
}

/// The aggregator's fleet keys (`--auth-keys`), reread on SIGHUP: the new
/// set replaces the old whole, and each worker picks it up at its next
/// batch (a generation counter, so the receive path never waits on it).
#[derive(Debug)]
pub struct Keyring {
    path: PathBuf,
    keys: RwLock<Arc<FleetKeys>>,
    generation: AtomicU64,
}

impl Keyring {
    /// Reads `path`; a file that cannot be read, parsed, or that others
    /// may read is an error naming it (and the line).
    pub fn load(path: &Path) -> Result<Keyring, KeyFileError> {
        let keys = keyfile::read(path, "--auth-keys")?;
        Ok(Keyring {
            path: path.to_path_buf(),
            keys: RwLock::new(Arc::new(keys)),
            generation: AtomicU64::new(0),
        })
    }

    /// Rereads the file. On error the keys stay as they were and the error
    /// says why; on success, the key ids now held.
    pub fn reload(&self) -> Result<Vec<u32>, KeyFileError> {
        let keys = keyfile::read(&self.path, "--auth-keys")?;
        let ids = keys.keys().copied().collect();
        *self.keys.write().expect("no panic holds it") = Arc::new(keys);
        self.generation.fetch_add(1, Relaxed);
        Ok(ids)
    }

    /// Changes on every successful reload.
    pub fn generation(&self) -> u64 {
        self.generation.load(Relaxed)
    }

    pub fn keys(&self) -> Arc<FleetKeys> {
        Arc::clone(&self.keys.read().expect("no panic holds it"))
    }

    /// Rereads the keys on SIGHUP, saying on stderr what it now holds or
    /// why it kept the old ones.
    pub fn reload_logged(&self) {
        match self.reload() {
            Ok(ids) => crate::log_line(&format!(
                "auth keys reread from {} (SIGHUP): key ids {ids:?}",
                self.path.display()
            )),
            Err(e) => crate::log_line(&format!("warning: {e}; the keys held before are kept")),
        }
    }
}
