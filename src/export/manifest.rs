//! What an export wrote, per shard: `<out>/_vmstats/<shard>.json`, the
//! fingerprint of each day's rows when its files were written, so the next
//! export writes only the days whose rows changed. Engines skip it: Hive,
//! Spark and Trino ignore names that begin with `_`, and the datasets'
//! globs (`rows/*/*.parquet`) never reach it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ExportError;

/// The directory of the manifests, in `--out`.
pub const DIR_NAME: &str = "_vmstats";

const VERSION: u32 = 1;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub shard: String,
    /// By date (`YYYY-MM-DD`).
    pub days: BTreeMap<String, DayRecord>,
}

/// A day as it was last written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayRecord {
    /// Hexadecimal: JSON readers round integers past 2^53.
    pub fingerprint: String,
    pub rows: u64,
    pub vms: u64,
}

/// Where `shard`'s manifest lies in `out`.
pub fn path_of(out: &Path, shard: &str) -> PathBuf {
    out.join(DIR_NAME).join(format!("{shard}.json"))
}

impl Manifest {
    /// The manifest at `path`, empty when there is none yet.
    pub fn load(path: &Path, shard: &str) -> Result<Manifest, ExportError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Manifest {
                    version: VERSION,
                    shard: shard.to_string(),
                    days: BTreeMap::new(),
                });
            }
            Err(error) => {
                let path = path.to_path_buf();
                return Err(ExportError::Write { path, error });
            }
        };
        let bad = |why: String| ExportError::Manifest {
            path: path.to_path_buf(),
            why,
        };
        let m: Manifest = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        if m.version != VERSION || m.shard != shard {
            return Err(bad(format!(
                "version {} of shard {:?}, expected version {VERSION} of {shard:?}",
                m.version, m.shard
            )));
        }
        Ok(m)
    }

    /// Writes it to `path` under a temporary name, then renames it.
    pub fn save(&self, path: &Path) -> Result<(), ExportError> {
        let err = |error| ExportError::Write {
            path: path.to_path_buf(),
            error,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(self).expect("a manifest serializes");
        std::fs::write(&tmp, text).map_err(err)?;
        std::fs::rename(&tmp, path).map_err(err)
    }
}
