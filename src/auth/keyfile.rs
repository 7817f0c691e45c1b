//! Key files (`PROTOCOL.md` 1b): one key a line, the decimal key id, one
//! space, 64 hex digits; blank lines and `#` comments ignored. The same
//! format holds the aggregator's fleet keys and an agent's VM key. A file
//! that others may read is refused, as ssh refuses a private key.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A key file that cannot be used, naming the file and line.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read key file {path} ({flag}): {error}")]
    Read {
        path: PathBuf,
        flag: &'static str,
        error: std::io::Error,
    },
    #[error(
        "key file {path} ({flag}) is readable by group or others (mode {mode:o}): chmod 600 it"
    )]
    Exposed {
        path: PathBuf,
        flag: &'static str,
        mode: u32,
    },
    #[error("key file {path} ({flag}), line {line}: {why}")]
    Line {
        path: PathBuf,
        flag: &'static str,
        line: usize,
        why: String,
    },
    #[error("key file {path} ({flag}) holds no key")]
    Empty { path: PathBuf, flag: &'static str },
    #[error("key file {path} ({flag}) has no key id {key_id} (--key-id)")]
    NoKeyId {
        path: PathBuf,
        flag: &'static str,
        key_id: u32,
    },
    #[error("key file {path} (--key-file) holds {count} keys: a VM's holds its one key")]
    Several { path: PathBuf, count: usize },
    #[error("the operating system's random source failed: {0}")]
    Random(String),
}

/// Reads the keys of `path` (`flag` names it in errors): key id -> bytes.
pub fn read(path: &Path, flag: &'static str) -> Result<BTreeMap<u32, [u8; 32]>, KeyFileError> {
    let read_err = |error| KeyFileError::Read {
        path: path.to_path_buf(),
        flag,
        error,
    };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    if meta.mode() & 0o077 != 0 {
        return Err(KeyFileError::Exposed {
            path: path.to_path_buf(),
            flag,
            mode: meta.mode() & 0o7777,
        });
    }
    let text = std::fs::read_to_string(path).map_err(read_err)?;
    let keys = parse(&text).map_err(|(line, why)| KeyFileError::Line {
        path: path.to_path_buf(),
        flag,
        line,
        why,
    })?;
    if keys.is_empty() {
        return Err(KeyFileError::Empty {
            path: path.to_path_buf(),
            flag,
        });
    }
    Ok(keys)
}

/// The keys of a key file's text; on error, the line and why.
pub fn parse(text: &str) -> Result<BTreeMap<u32, [u8; 32]>, (usize, String)> {
    let mut keys = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (id, hex) = line
            .split_once(' ')
            .ok_or_else(|| (line_no, "want `<key id> <64 hex digits>`".to_string()))?;
        let id: u32 = id
            .parse()
            .map_err(|_| (line_no, format!("`{id}` is not a key id (0..=4294967295)")))?;
        let bytes = unhex(hex.trim()).ok_or_else(|| {
            (
                line_no,
                "the key is not 64 hex digits (32 bytes)".to_string(),
            )
        })?;
        if keys.insert(id, bytes).is_some() {
            return Err((line_no, format!("key id {id} appears twice")));
        }
    }
    Ok(keys)
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    let digits = text.as_bytes();
    if digits.len() != 64 {
        return None;
    }
    let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; 32];
    for (i, pair) in digits.chunks(2).enumerate() {
        out[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

/// One key file line: `7 000102...1f`.
pub fn line(key_id: u32, bytes: &[u8; 32]) -> String {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{key_id} {hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const VECTOR: &str = "7 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn lines_parse_and_print_back() {
        let text = format!("# fleet keys\n\n{VECTOR}\n  8 {}  \n", "ff".repeat(32));
        let keys = parse(&text).unwrap();
        let want: [u8; 32] = std::array::from_fn(|i| i as u8);
        assert_eq!(keys[&7], want);
        assert_eq!(keys[&8], [0xff; 32]);
        assert_eq!(line(7, &want), VECTOR);
    }

    #[test]
    fn bad_lines_name_their_number() {
        assert_eq!(parse("# x\nseven 00").unwrap_err().0, 2);
        assert!(parse("7 0011").unwrap_err().1.contains("64 hex digits"));
        assert!(parse("7").unwrap_err().1.contains("<key id>"));
        let twice = format!("{VECTOR}\n{VECTOR}\n");
        assert_eq!(
            parse(&twice).unwrap_err(),
            (2, "key id 7 appears twice".into())
        );
        assert!(parse(&VECTOR.replace('a', "g")).is_err());
    }

    #[test]
    fn a_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fleet.keys");
        std::fs::write(&path, format!("{VECTOR}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = read(&path, "--auth-keys").unwrap_err().to_string();
        assert!(
            err.contains("readable by group or others (mode 640)"),
            "{err}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read(&path, "--auth-keys").unwrap().len(), 1);
        std::fs::write(&path, "# nothing\n").unwrap();
        assert!(
            read(&path, "--auth-keys")
                .unwrap_err()
                .to_string()
                .contains("holds no key")
        );
    }
}
