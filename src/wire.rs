//! The wire and file contract (`PROTOCOL.md`, versions 1 and 2), in one
//! place.
//!
//! Everything that knows a byte offset, a valid range, a rejection reason, the
//! CSV header or how an IP becomes a file name lives here, so the rest of the
//! crate cannot drift from the contract. Decoding is a pure function over a
//! byte slice: it never allocates and never panics, whatever the input.
//! Version 2's cryptography is here too (the VM key's derivation, the tag),
//! as the contract defines it; which keys exist and which (boot_id, seq)
//! were seen is `auth`'s.

use std::fmt;
use std::net::IpAddr;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Size of every valid version 1 stat datagram.
pub const DATAGRAM_LEN: usize = 72;
/// Size of a version 2 datagram: the body, a key id and a 16-byte tag.
pub const SIGNED_LEN: usize = 92;
/// The bytes the tag covers: the body and the key id.
pub const SIGNED_BODY_LEN: usize = 76;
/// `VMST` in ASCII.
pub const MAGIC: [u8; 4] = *b"VMST";
/// Version 1: the plain datagram.
pub const VERSION: u8 = 1;
/// Version 2: the authenticated datagram.
pub const VERSION_SIGNED: u8 = 2;
/// What the `flags` column adds for a row from a verified version 2
/// datagram (a reader testing bit 0 for the final flag is unaffected).
pub const ROW_FLAG_VERIFIED: u16 = 256;
/// Flags bit 0: the VM agent is stopping and this is its last report.
pub const FLAG_FINAL: u8 = 0x01;
/// Largest reporting interval a sender may announce, in seconds.
pub const MAX_INTERVAL_S: u16 = 3600;
/// 100.00 % in hundredths of a percent.
pub const MAX_PCT_X100: u16 = 10_000;

/// First line of every per-VM file.
pub const CSV_HEADER: &str = "recv_ms,ts_ms,boot_id,seq,interval_s,vcpus,mem_mib,cpu_pct,mem_pct,net_rx_bytes,net_tx_bytes,disk_read_bytes,disk_write_bytes,flags\n";

/// Upper bound of one formatted row: 8 u64 of at most 20 digits, smaller
/// fields, two percentages and 13 commas. Row buffers reserve this much so a
/// row never reallocates mid-format.
pub const MAX_ROW_LEN: usize = 256;

/// The contract's test vector (PROTOCOL.md, section 1) as it must decode.
/// Tests and benchmarks build their records on it.
pub const TEST_VECTOR: Stat = Stat {
    flags: 0,
    interval_s: 60,
    boot_id: 3_237_998_081,
    vcpus: 4,
    seq: 41,
    timestamp_ms: 1_764_110_400_123,
    cpu_pct_x100: 725,
    mem_pct_x100: 3150,
    mem_mib: 8192,
    net_rx_bytes: 1_048_576,
    net_tx_bytes: 524_288,
    disk_read_bytes: 4096,
    disk_write_bytes: 65_536,
};

/// One decoded, validated stat datagram. (Serde is for the report's
/// summary cache, which keeps a VM's latest row; the wire and file forms
/// are the functions here.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Stat {
    pub flags: u8,
    pub interval_s: u16,
    pub boot_id: u32,
    pub vcpus: u16,
    pub seq: u64,
    pub timestamp_ms: u64,
    pub cpu_pct_x100: u16,
    pub mem_pct_x100: u16,
    pub mem_mib: u32,
    pub net_rx_bytes: u64,
    pub net_tx_bytes: u64,
    pub disk_read_bytes: u64,
    pub disk_write_bytes: u64,
}

impl Stat {
    /// Whether the sender marked this as its last report before stopping.
    pub fn is_final(&self) -> bool {
        self.flags & FLAG_FINAL != 0
    }
}

/// The `interval_s` field for a sender's interval: whole seconds, rounded
/// up, within 1..=3600 (the contract has no sub-second interval).
pub fn interval_field(interval: std::time::Duration) -> u16 {
    let s = interval.as_millis().div_ceil(1000);
    s.clamp(1, u128::from(MAX_INTERVAL_S)) as u16
}

/// The decoder's contract on any bytes, as the fuzz target and the replay
/// of its corpus in the tests both check it (one function, so the two
/// cannot drift): never a panic; anything but 72 or 92 bytes refused for its
/// length; what is accepted encodes back to the same bytes (the reserved
/// ones aside) and formats to a row that parses back to it. Panics on a
/// violation. Cold: it is for tests and the fuzzer, not the receive path.
#[cold]
pub fn check_decode(data: &[u8]) {
    match decode_datagram(data, false) {
        Ok((stat, signed)) => {
            let len = if signed.is_some() {
                SIGNED_LEN
            } else {
                DATAGRAM_LEN
            };
            assert_eq!(data.len(), len);
            let again = encode(&stat);
            assert_eq!(&again[..4], &data[..4]);
            assert_eq!(&again[5..14], &data[5..14]);
            assert_eq!(&again[16..DATAGRAM_LEN], &data[16..DATAGRAM_LEN]);
            let mut row = Vec::new();
            push_row(&mut row, 1, &stat);
            let text = std::str::from_utf8(&row).expect("a row is text");
            let back = parse_row(text.trim_end()).expect("a row parses back");
            assert_eq!(back.stat, stat);
        }
        Err(reason) => {
            if data.len() != DATAGRAM_LEN && data.len() != SIGNED_LEN {
                assert_eq!(reason, Reject::BadLength);
            }
        }
    }
}

/// Why a datagram was refused, in the order `PROTOCOL.md` checks them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reject {
    BadLength,
    BadMagic,
    BadVersion,
    BadField,
    NotAllowed,
    Unauthenticated,
    BadAuth,
    Stale,
    Replayed,
}

impl Reject {
    /// Every reason, in check order; indexes counters.
    pub const ALL: [Reject; 9] = [
        Reject::BadLength,
        Reject::BadMagic,
        Reject::BadVersion,
        Reject::BadField,
        Reject::NotAllowed,
        Reject::Unauthenticated,
        Reject::BadAuth,
        Reject::Stale,
        Reject::Replayed,
    ];

    /// The reason's name as `PROTOCOL.md` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Reject::BadLength => "bad_length",
            Reject::BadMagic => "bad_magic",
            Reject::BadVersion => "bad_version",
            Reject::BadField => "bad_field",
            Reject::NotAllowed => "not_allowed",
            Reject::Unauthenticated => "unauthenticated",
            Reject::BadAuth => "bad_auth",
            Reject::Stale => "stale",
            Reject::Replayed => "replayed",
        }
    }

    /// Position in [`Reject::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

/// A version 2 datagram's claim, for the caller to verify: its key id and
/// tag, and the reserved bytes (covered by the tag, so kept as sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signed {
    pub reserved: u16,
    pub key_id: u32,
    pub tag: [u8; 16],
}

/// Decodes and validates one payload: the fields, and for version 2 its
/// claim, not yet verified (that needs the keys and the source address:
/// [`VmKey::verify`]). `truncated` says the kernel cut the datagram to fit
/// the receive buffer, so its true length is larger than `payload.len()`.
///
/// The allow-list (`not_allowed`) and version 2's checks are the caller's:
/// they depend on the source address and on state, not on the bytes.
pub fn decode_datagram(payload: &[u8], truncated: bool) -> Result<(Stat, Option<Signed>), Reject> {
    if truncated || (payload.len() != DATAGRAM_LEN && payload.len() != SIGNED_LEN) {
        return Err(Reject::BadLength);
    }
    if payload[0..4] != MAGIC {
        return Err(Reject::BadMagic);
    }
    let signed = match (payload[4], payload.len()) {
        (VERSION, DATAGRAM_LEN) => None,
        (VERSION_SIGNED, SIGNED_LEN) => {
            let mut tag = [0u8; 16];
            tag.copy_from_slice(&payload[SIGNED_BODY_LEN..SIGNED_LEN]);
            Some(Signed {
                reserved: be16(payload, 14),
                key_id: be32(payload, DATAGRAM_LEN),
                tag,
            })
        }
        _ => return Err(Reject::BadVersion),
    };
    let stat = Stat {
        flags: payload[5],
        interval_s: be16(payload, 6),
        boot_id: be32(payload, 8),
        vcpus: be16(payload, 12),
        seq: be64(payload, 16),
        timestamp_ms: be64(payload, 24),
        cpu_pct_x100: be16(payload, 32),
        mem_pct_x100: be16(payload, 34),
        mem_mib: be32(payload, 36),
        net_rx_bytes: be64(payload, 40),
        net_tx_bytes: be64(payload, 48),
        disk_read_bytes: be64(payload, 56),
        disk_write_bytes: be64(payload, 64),
    };
    if stat.flags & !FLAG_FINAL != 0
        || stat.interval_s == 0
        || stat.interval_s > MAX_INTERVAL_S
        || stat.vcpus == 0
        || stat.cpu_pct_x100 > MAX_PCT_X100
        || stat.mem_pct_x100 > MAX_PCT_X100
    {
        return Err(Reject::BadField);
    }
    Ok((stat, signed))
}

/// [`decode_datagram`]'s fields alone: for readers that trust the sender
/// (tests, tools); the receive path verifies version 2's claim.
///
/// ```
/// use vmstats::wire::{self, Reject, Stat};
///
/// let sent = Stat { interval_s: 60, vcpus: 4, seq: 41, cpu_pct_x100: 725, ..Stat::default() };
/// let bytes = wire::encode(&sent);
/// assert_eq!(wire::decode(&bytes, false), Ok(sent));
/// assert_eq!(wire::decode(&bytes[..71], false), Err(Reject::BadLength));
///
/// let mut row = Vec::new();
/// wire::push_row(&mut row, 1_764_110_400_200, &sent);
/// assert!(row.starts_with(b"1764110400200,0,0,41,60,4,0,7.25,0.00,"));
/// ```
pub fn decode(payload: &[u8], truncated: bool) -> Result<Stat, Reject> {
    decode_datagram(payload, truncated).map(|(stat, _)| stat)
}

/// A VM's key, ready to tag and verify: HMAC-SHA-256 keyed once (the
/// key's inner and outer blocks hashed at derivation, not per datagram).
#[derive(Clone)]
pub struct VmKey {
    key_id: u32,
    bytes: [u8; 32],
    mac: Hmac<Sha256>,
}

impl fmt::Debug for VmKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the bytes: a key must not reach a log by a {:?}.
        write!(f, "VmKey {{ key_id: {} }}", self.key_id)
    }
}

impl VmKey {
    /// The key of the VM at `ip` under fleet key `key_id`:
    /// `HMAC-SHA-256(fleet, "vmstats v2 vm key " || ip)`, `ip` as text
    /// (an IPv4-mapped IPv6 address as its IPv4 address).
    pub fn derive(key_id: u32, fleet: &[u8; 32], ip: IpAddr) -> VmKey {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(fleet).expect("any key length");
        mac.update(b"vmstats v2 vm key ");
        // An address is at most 39 characters: formatted on the stack.
        let mut text = [0u8; 64];
        let len = {
            use std::io::Write;
            let mut cursor = std::io::Cursor::new(&mut text[..]);
            write!(cursor, "{}", canonical_ip(ip)).expect("an address fits in 64 bytes");
            cursor.position() as usize
        };
        mac.update(&text[..len]);
        VmKey::new(key_id, mac.finalize().into_bytes().into())
    }

    /// A VM key as its key file holds it.
    pub fn new(key_id: u32, bytes: [u8; 32]) -> VmKey {
        VmKey {
            key_id,
            bytes,
            mac: <Hmac<Sha256> as Mac>::new_from_slice(&bytes).expect("any key length"),
        }
    }

    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    pub fn bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    /// The 16-byte tag of the 76 signed bytes.
    fn tag(&self, body: &[u8; SIGNED_BODY_LEN]) -> [u8; 16] {
        let mut mac = self.mac.clone();
        mac.update(body);
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; 16];
        tag.copy_from_slice(&full[..16]);
        tag
    }

    /// Whether `signed` is this key's tag over `stat` as sent, compared in
    /// constant time.
    pub fn verify(&self, stat: &Stat, signed: &Signed) -> bool {
        let body = signed_body(stat, signed.reserved, signed.key_id);
        let mut mac = self.mac.clone();
        mac.update(&body);
        mac.verify_truncated_left(&signed.tag).is_ok()
    }

    /// The 92 bytes of `stat` as version 2 under this key.
    pub fn encode(&self, stat: &Stat) -> [u8; SIGNED_LEN] {
        let body = signed_body(stat, 0, self.key_id);
        let mut out = [0u8; SIGNED_LEN];
        out[..SIGNED_BODY_LEN].copy_from_slice(&body);
        out[SIGNED_BODY_LEN..].copy_from_slice(&self.tag(&body));
        out
    }
}

/// The bytes a version 2 tag covers: the body with version 2 and the
/// reserved bytes as sent, then the key id.
fn signed_body(stat: &Stat, reserved: u16, key_id: u32) -> [u8; SIGNED_BODY_LEN] {
    let mut body = [0u8; SIGNED_BODY_LEN];
    body[..DATAGRAM_LEN].copy_from_slice(&encode(stat));
    body[4] = VERSION_SIGNED;
    body[14..16].copy_from_slice(&reserved.to_be_bytes());
    body[DATAGRAM_LEN..].copy_from_slice(&key_id.to_be_bytes());
    body
}

/// Encodes a record as the 72 wire bytes (reserved bytes are 0). Encoding
/// does not validate: tests and fuzzers use it to build invalid datagrams too.
pub fn encode(stat: &Stat) -> [u8; DATAGRAM_LEN] {
    let mut b = [0u8; DATAGRAM_LEN];
    b[0..4].copy_from_slice(&MAGIC);
    b[4] = VERSION;
    b[5] = stat.flags;
    b[6..8].copy_from_slice(&stat.interval_s.to_be_bytes());
    b[8..12].copy_from_slice(&stat.boot_id.to_be_bytes());
    b[12..14].copy_from_slice(&stat.vcpus.to_be_bytes());
    b[16..24].copy_from_slice(&stat.seq.to_be_bytes());
    b[24..32].copy_from_slice(&stat.timestamp_ms.to_be_bytes());
    b[32..34].copy_from_slice(&stat.cpu_pct_x100.to_be_bytes());
    b[34..36].copy_from_slice(&stat.mem_pct_x100.to_be_bytes());
    b[36..40].copy_from_slice(&stat.mem_mib.to_be_bytes());
    b[40..48].copy_from_slice(&stat.net_rx_bytes.to_be_bytes());
    b[48..56].copy_from_slice(&stat.net_tx_bytes.to_be_bytes());
    b[56..64].copy_from_slice(&stat.disk_read_bytes.to_be_bytes());
    b[64..72].copy_from_slice(&stat.disk_write_bytes.to_be_bytes());
    b
}

/// The address that names a VM: an IPv4-mapped IPv6 source is its IPv4 address.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// File name of a VM's data: dotted quad for IPv4, RFC 5952 text with `:`
/// replaced by `_` for IPv6 (std's `Display` is RFC 5952). Built only from
/// the parsed address, never from payload bytes.
pub fn file_name(ip: IpAddr) -> String {
    match canonical_ip(ip) {
        IpAddr::V4(v4) => format!("{v4}.csv"),
        IpAddr::V6(v6) => format!("{}.csv", v6.to_string().replace(':', "_")),
    }
}

/// The inverse of [`file_name`]: `None` for a name that is not a VM file.
pub fn ip_from_file_name(name: &str) -> Option<IpAddr> {
    let stem = name.strip_suffix(".csv")?;
    if stem.contains(':') {
        return None;
    }
    let ip: IpAddr = stem.replace('_', ":").parse().ok()?;
    // Only the canonical spelling names a VM file; `::ffff:1.2.3.4` or
    // uncompressed IPv6 text would be a second name for the same VM.
    (file_name(ip) == name).then_some(ip)
}

/// One part of a VM's history in a data dir, as the contract names them:
/// the live file `<ip>.csv`, or a part logrotate moved aside: `<ip>.csv.1`,
/// `<ip>.csv.2.gz`, `<ip>.csv-20261126`, `<ip>.csv-20261126.gz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilePart {
    pub ip: IpAddr,
    pub gzip: bool,
    pub rotated: bool,
}

/// What part of which VM's history a file name is; `None` for any other
/// name.
pub fn file_part(name: &str) -> Option<FilePart> {
    let at = name.find(".csv")? + ".csv".len();
    let ip = ip_from_file_name(&name[..at])?;
    let suffix = &name[at..];
    let (rest, gzip) = match suffix.strip_suffix(".gz") {
        Some(rest) => (rest, true),
        None => (suffix, false),
    };
    let numbered = |s: &str, extra: &[char]| {
        !s.is_empty() && s.chars().all(|c| c.is_ascii_digit() || extra.contains(&c))
    };
    let rotated = match (rest.strip_prefix('.'), rest.strip_prefix('-')) {
        _ if rest.is_empty() => false,
        (Some(n), _) if numbered(n, &[]) => true,
        (_, Some(date)) if numbered(date, &['-']) => true,
        _ => return None,
    };
    // A compressed live file is no name logrotate gives.
    (rotated || !gzip).then_some(FilePart { ip, gzip, rotated })
}

/// Appends a hundredths value as a percentage with exactly two decimals.
fn push_pct(out: &mut Vec<u8>, x100: u16) {
    let mut ints = itoa::Buffer::new();
    out.extend_from_slice(ints.format(x100 / 100).as_bytes());
    let frac = x100 % 100;
    out.extend_from_slice(&[b'.', b'0' + (frac / 10) as u8, b'0' + (frac % 10) as u8]);
}

/// Appends the CSV row of one accepted datagram, newline included. Uses
/// `itoa` because this runs once per datagram and `write!` through
/// `fmt::Display` costs several times more.
pub fn push_row(out: &mut Vec<u8>, recv_ms: u64, s: &Stat) {
    push_row_of(out, recv_ms, s, false);
}

/// [`push_row`] of a datagram, verified (version 2) or not.
pub fn push_row_of(out: &mut Vec<u8>, recv_ms: u64, s: &Stat, verified: bool) {
    let mut n = itoa::Buffer::new();
    let field = |out: &mut Vec<u8>, text: &str| {
        out.extend_from_slice(text.as_bytes());
        out.push(b',');
    };
    field(out, n.format(recv_ms));
    field(out, n.format(s.timestamp_ms));
    field(out, n.format(s.boot_id));
    field(out, n.format(s.seq));
    field(out, n.format(s.interval_s));
    field(out, n.format(s.vcpus));
    field(out, n.format(s.mem_mib));
    push_pct(out, s.cpu_pct_x100);
    out.push(b',');
    push_pct(out, s.mem_pct_x100);
    out.push(b',');
    field(out, n.format(s.net_rx_bytes));
    field(out, n.format(s.net_tx_bytes));
    field(out, n.format(s.disk_read_bytes));
    field(out, n.format(s.disk_write_bytes));
    let flags = u16::from(s.flags) + if verified { ROW_FLAG_VERIFIED } else { 0 };
    out.extend_from_slice(n.format(flags).as_bytes());
    out.push(b'\n');
}

/// A row read back from a VM file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Row {
    pub recv_ms: u64,
    pub stat: Stat,
    /// From a verified version 2 datagram (`flags` + 256 in the file).
    pub verified: bool,
}

/// Why a line of a VM file could not be read as a row.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RowError {
    #[error("expected 14 comma-separated fields, found {0}")]
    FieldCount(usize),
    #[error("field `{field}` is not a valid value: {text:?}")]
    Field { field: &'static str, text: String },
}

const FIELDS: [&str; 14] = [
    "recv_ms",
    "ts_ms",
    "boot_id",
    "seq",
    "interval_s",
    "vcpus",
    "mem_mib",
    "cpu_pct",
    "mem_pct",
    "net_rx_bytes",
    "net_tx_bytes",
    "disk_read_bytes",
    "disk_write_bytes",
    "flags",
];

fn field_error(idx: usize, text: &[u8]) -> RowError {
    RowError::Field {
        field: FIELDS[idx],
        text: String::from_utf8_lossy(text).into_owned(),
    }
}

/// Parses decimal digits (nothing else: no sign, no space) into `T`. By
/// hand on bytes: the report parses every row of every file, and
/// `str::parse` after `str::split` was a third of its time.
fn parse_num<T: TryFrom<u64>>(idx: usize, text: &[u8]) -> Result<T, RowError> {
    if text.is_empty() {
        return Err(field_error(idx, text));
    }
    let mut v = 0u64;
    for b in text {
        let digit = b.wrapping_sub(b'0');
        v = match v
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(digit)))
        {
            Some(v) if digit <= 9 => v,
            _ => return Err(field_error(idx, text)),
        };
    }
    T::try_from(v).map_err(|_| field_error(idx, text))
}

/// Parses `12.34` (exactly two decimals, at most 100.00) into hundredths.
fn parse_pct(idx: usize, text: &[u8]) -> Result<u16, RowError> {
    let bad = || field_error(idx, text);
    let dot = text.iter().position(|b| *b == b'.').ok_or_else(bad)?;
    let (int, frac) = (&text[..dot], &text[dot + 1..]);
    if frac.len() != 2 {
        return Err(bad());
    }
    let int: u16 = parse_num(idx, int).map_err(|_| bad())?;
    let frac: u16 = parse_num(idx, frac).map_err(|_| bad())?;
    let v = int.checked_mul(100).and_then(|v| v.checked_add(frac));
    v.filter(|v| *v <= MAX_PCT_X100).ok_or_else(bad)
}

/// Parses one CSV row (without its newline), the inverse of [`push_row`].
pub fn parse_row(line: impl AsRef<[u8]>) -> Result<Row, RowError> {
    let mut f: [&[u8]; 14] = [&[]; 14];
    let mut count = 0;
    for part in line.as_ref().split(|b| *b == b',') {
        if count < f.len() {
            f[count] = part;
        }
        count += 1;
    }
    if count != f.len() {
        return Err(RowError::FieldCount(count));
    }
    // The datagram's flags (a byte) plus 256 for a verified one.
    let flags: u16 = parse_num(13, f[13])?;
    if flags > ROW_FLAG_VERIFIED | 0xff {
        return Err(field_error(13, f[13]));
    }
    Ok(Row {
        recv_ms: parse_num(0, f[0])?,
        stat: Stat {
            timestamp_ms: parse_num(1, f[1])?,
            boot_id: parse_num(2, f[2])?,
            seq: parse_num(3, f[3])?,
            interval_s: parse_num(4, f[4])?,
            vcpus: parse_num(5, f[5])?,
            mem_mib: parse_num(6, f[6])?,
            cpu_pct_x100: parse_pct(7, f[7])?,
            mem_pct_x100: parse_pct(8, f[8])?,
            net_rx_bytes: parse_num(9, f[9])?,
            net_tx_bytes: parse_num(10, f[10])?,
            disk_read_bytes: parse_num(11, f[11])?,
            disk_write_bytes: parse_num(12, f[12])?,
            flags: (flags & 0xff) as u8,
        },
        verified: flags & ROW_FLAG_VERIFIED != 0,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    pub(crate) const VECTOR_HEX: &str = "564d5354 0100003c c0ffee01 00040000 0000000000000029 0000019abd2c7a7b \
         02d5 0c4e 00002000 0000000000100000 0000000000080000 0000000000001000 \
         0000000000010000";

    fn unhex(text: &str) -> Vec<u8> {
        let hex: String = text.split_whitespace().collect();
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    }

    /// PROTOCOL.md 1b: fleet key 7 = 00 01 .. 1f.
    fn fleet_key() -> [u8; 32] {
        std::array::from_fn(|i| i as u8)
    }

    #[test]
    fn version_2_test_vectors() {
        let key = VmKey::derive(7, &fleet_key(), "10.20.0.15".parse().unwrap());
        assert_eq!(
            key.bytes().to_vec(),
            unhex("3f51a9e2cbb68dca4df90de7339d66d1b8343db1a5670b68f3063b9d2d25feef")
        );
        let v6 = VmKey::derive(7, &fleet_key(), "fd00::5".parse().unwrap());
        assert_eq!(
            v6.bytes().to_vec(),
            unhex("a17c9a8b6efb5eafa90e8971d4e6bf51b43646482cc6a7843889f3e53df41a38")
        );
        let mapped = VmKey::derive(7, &fleet_key(), "::ffff:10.20.0.15".parse().unwrap());
        assert_eq!(mapped.bytes(), key.bytes(), "a mapped address is its IPv4");
        let body = VECTOR_HEX.replacen("0100003c", "0200003c", 1);
        let want = unhex(&format!("{body} 00000007 657abe380c35a163bc0bdb12ed0a4737"));
        let bytes = key.encode(&TEST_VECTOR);
        assert_eq!(bytes.to_vec(), want);
        let (stat, signed) = decode_datagram(&bytes, false).unwrap();
        assert_eq!(stat, TEST_VECTOR);
        let signed = signed.unwrap();
        assert_eq!(signed.key_id, 7);
        assert!(key.verify(&stat, &signed));
        assert!(!v6.verify(&stat, &signed), "another address's key");
        // Every bit of the signed bytes is covered.
        for bit in 0..SIGNED_LEN * 8 {
            let mut flipped = bytes;
            flipped[bit / 8] ^= 1 << (bit % 8);
            if let Ok((s, Some(sig))) = decode_datagram(&flipped, false) {
                assert!(!key.verify(&s, &sig), "bit {bit}");
            }
        }
        // The reserved bytes are signed as sent.
        let mut odd = bytes;
        odd[15] = 1;
        let (s, sig) = decode_datagram(&odd, false).unwrap();
        assert!(!key.verify(&s, &sig.unwrap()));
    }

    #[test]
    fn versions_and_lengths_must_match() {
        let key = VmKey::derive(7, &fleet_key(), "10.20.0.15".parse().unwrap());
        let v2 = key.encode(&TEST_VECTOR);
        let mut v2_short = vector_bytes();
        v2_short[4] = VERSION_SIGNED;
        assert_eq!(
            decode(&v2_short, false),
            Err(Reject::BadVersion),
            "2 in 72 bytes"
        );
        let mut v1_long = v2;
        v1_long[4] = VERSION;
        assert_eq!(
            decode(&v1_long, false),
            Err(Reject::BadVersion),
            "1 in 92 bytes"
        );
        assert_eq!(decode(&v2[..91], false), Err(Reject::BadLength));
        assert_eq!(decode(&v2, true), Err(Reject::BadLength));
    }

    #[test]
    fn verified_rows_add_256_to_the_flags_column() {
        let mut row = Vec::new();
        push_row_of(&mut row, 1_764_110_400_200, &TEST_VECTOR, true);
        let text = String::from_utf8(row.clone()).unwrap();
        assert!(text.ends_with(",65536,256\n"), "{text}");
        let back = parse_row(text.trim_end()).unwrap();
        assert!(back.verified);
        assert_eq!(back.stat, TEST_VECTOR);
        let last = Stat {
            flags: FLAG_FINAL,
            ..TEST_VECTOR
        };
        row.clear();
        push_row_of(&mut row, 1, &last, true);
        let back = parse_row(std::str::from_utf8(&row).unwrap().trim_end()).unwrap();
        assert!(back.verified && back.stat.is_final());
        assert!(parse_row(text.trim_end().replace(",256", ",512")).is_err());
    }

    pub(crate) fn vector_bytes() -> Vec<u8> {
        let hex: String = VECTOR_HEX.split_whitespace().collect();
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    }

    const VECTOR_ROW: &str = "1764110400200,1764110400123,3237998081,41,60,4,8192,7.25,31.50,1048576,524288,4096,65536,0\n";

    #[test]
    fn test_vector_decodes() {
        let bytes = vector_bytes();
        assert_eq!(bytes.len(), DATAGRAM_LEN);
        assert_eq!(decode(&bytes, false), Ok(TEST_VECTOR));
    }

    #[test]
    fn test_vector_encodes() {
        assert_eq!(encode(&TEST_VECTOR).to_vec(), vector_bytes());
    }

    #[test]
    fn test_vector_row() {
        let mut out = Vec::new();
        push_row(&mut out, 1_764_110_400_200, &TEST_VECTOR);
        assert_eq!(String::from_utf8(out).unwrap(), VECTOR_ROW);
    }

    #[test]
    fn row_parses_back() {
        let row = parse_row(VECTOR_ROW.trim_end()).unwrap();
        assert_eq!(row.recv_ms, 1_764_110_400_200);
        assert_eq!(row.stat, TEST_VECTOR);
    }

    #[test]
    fn reserved_bytes_are_ignored() {
        let mut bytes = vector_bytes();
        bytes[14] = 0xAB;
        bytes[15] = 0xCD;
        assert_eq!(decode(&bytes, false), Ok(TEST_VECTOR));
    }

    #[test]
    fn rejects_bad_length() {
        let bytes = vector_bytes();
        for len in [0, 1, 71] {
            assert_eq!(decode(&bytes[..len], false), Err(Reject::BadLength));
        }
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(decode(&long, false), Err(Reject::BadLength));
        // A 72-byte prefix of a longer datagram, cut by the kernel.
        assert_eq!(decode(&bytes, true), Err(Reject::BadLength));
    }

    #[test]
    fn rejects_bad_magic() {
        let mut bytes = vector_bytes();
        bytes[3] = b'X';
        assert_eq!(decode(&bytes, false), Err(Reject::BadMagic));
    }

    #[test]
    fn rejects_bad_version() {
        let mut bytes = vector_bytes();
        for v in [0, 2, 255] {
            bytes[4] = v;
            assert_eq!(decode(&bytes, false), Err(Reject::BadVersion));
        }
    }

    #[test]
    fn rejects_bad_field() {
        let cases: [fn(&mut Stat); 7] = [
            |s| s.flags = 0x02,
            |s| s.flags = 0x81,
            |s| s.interval_s = 0,
            |s| s.interval_s = 3601,
            |s| s.vcpus = 0,
            |s| s.cpu_pct_x100 = 10_001,
            |s| s.mem_pct_x100 = u16::MAX,
        ];
        for mutate in cases {
            let mut s = TEST_VECTOR;
            mutate(&mut s);
            assert_eq!(decode(&encode(&s), false), Err(Reject::BadField), "{s:?}");
        }
    }

    #[test]
    fn accepts_the_edges_of_every_range() {
        let mut s = TEST_VECTOR;
        s.flags = FLAG_FINAL;
        s.interval_s = 3600;
        s.vcpus = 1;
        s.cpu_pct_x100 = 10_000;
        s.mem_pct_x100 = 0;
        assert_eq!(decode(&encode(&s), false), Ok(s));
        s.interval_s = 1;
        assert_eq!(decode(&encode(&s), false), Ok(s));
    }

    #[test]
    fn first_broken_rule_wins() {
        // Wrong magic and wrong version: counted as bad_magic only.
        let mut bytes = vector_bytes();
        bytes[0] = 0;
        bytes[4] = 9;
        assert_eq!(decode(&bytes, false), Err(Reject::BadMagic));
        // Wrong version and bad field: bad_version.
        let mut s = TEST_VECTOR;
        s.vcpus = 0;
        let mut bytes = encode(&s);
        bytes[4] = 2;
        assert_eq!(decode(&bytes, false), Err(Reject::BadVersion));
    }

    #[test]
    fn percentages_have_two_decimals() {
        for (x100, text) in [(0, "0.00"), (5, "0.05"), (725, "7.25"), (10_000, "100.00")] {
            let mut out = Vec::new();
            push_pct(&mut out, x100);
            assert_eq!(out, text.as_bytes());
            assert_eq!(parse_pct(7, text.as_bytes()), Ok(x100));
        }
        for bad in ["7.2", "7", "100.01", "-1.00", "1.0x", ""] {
            assert!(parse_pct(7, bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn longest_row_fits_the_reserve() {
        let s = Stat {
            flags: 255,
            interval_s: u16::MAX,
            boot_id: u32::MAX,
            vcpus: u16::MAX,
            seq: u64::MAX,
            timestamp_ms: u64::MAX,
            cpu_pct_x100: 10_000,
            mem_pct_x100: 10_000,
            mem_mib: u32::MAX,
            net_rx_bytes: u64::MAX,
            net_tx_bytes: u64::MAX,
            disk_read_bytes: u64::MAX,
            disk_write_bytes: u64::MAX,
        };
        let mut out = Vec::new();
        push_row(&mut out, u64::MAX, &s);
        assert!(out.len() <= MAX_ROW_LEN, "{}", out.len());
    }

    #[test]
    fn parse_row_names_the_bad_field() {
        let err = parse_row("1,2,3,4,5,6,7,8.00,9.00,10,11,12,x,0").unwrap_err();
        assert_eq!(
            err.to_string(),
            "field `disk_write_bytes` is not a valid value: \"x\""
        );
        assert_eq!(parse_row("1,2,3"), Err(RowError::FieldCount(3)));
    }

    #[test]
    fn file_names_follow_the_contract() {
        let v4 = IpAddr::V4(Ipv4Addr::new(127, 1, 0, 7));
        assert_eq!(file_name(v4), "127.1.0.7.csv");
        let v6: IpAddr = "fd00::5".parse().unwrap();
        assert_eq!(file_name(v6), "fd00__5.csv");
        let mapped = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
        assert_eq!(file_name(mapped), "10.0.0.1.csv");
        assert_eq!(file_name(IpAddr::V6(Ipv6Addr::LOCALHOST)), "__1.csv");
    }

    #[test]
    fn file_names_parse_back_only_when_canonical() {
        for name in ["127.1.0.7.csv", "fd00__5.csv", "__1.csv"] {
            let ip = ip_from_file_name(name).unwrap();
            assert_eq!(file_name(ip), name);
        }
        for name in [
            "notes.txt",
            "127.1.0.7",
            "fd00_0_0_0_0_0_0_5.csv",
            "__ffff_10.0.0.1.csv",
            "x.csv",
        ] {
            assert_eq!(ip_from_file_name(name), None, "{name}");
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn valid_stat() -> impl Strategy<Value = Stat> {
            (
                (
                    0u8..=1,
                    1u16..=MAX_INTERVAL_S,
                    any::<u32>(),
                    1u16..=u16::MAX,
                    any::<u64>(),
                ),
                (
                    any::<u64>(),
                    0u16..=MAX_PCT_X100,
                    0u16..=MAX_PCT_X100,
                    any::<u32>(),
                ),
                (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()),
            )
                .prop_map(
                    |(
                        (flags, interval_s, boot_id, vcpus, seq),
                        (ts, cpu, mem, mib),
                        (rx, tx, rd, wr),
                    )| Stat {
                        flags,
                        interval_s,
                        boot_id,
                        vcpus,
                        seq,
                        timestamp_ms: ts,
                        cpu_pct_x100: cpu,
                        mem_pct_x100: mem,
                        mem_mib: mib,
                        net_rx_bytes: rx,
                        net_tx_bytes: tx,
                        disk_read_bytes: rd,
                        disk_write_bytes: wr,
                    },
                )
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            #[test]
            fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300), cut in any::<bool>()) {
                let verdict = decode(&bytes, cut);
                if (bytes.len() != DATAGRAM_LEN && bytes.len() != SIGNED_LEN) || cut {
                    prop_assert_eq!(verdict, Err(Reject::BadLength));
                }
            }

            #[test]
            fn decode_of_72_random_bytes_is_total(bytes in proptest::array::uniform32(any::<u8>()), tail in proptest::collection::vec(any::<u8>(), 40)) {
                // The magic forced right, so the deeper checks are reached.
                let mut d = [bytes.as_slice(), tail.as_slice()].concat();
                d[0..4].copy_from_slice(&MAGIC);
                d[4] = VERSION;
                if let Ok(s) = decode(&d, false) {
                    prop_assert_eq!(&encode(&s)[16..], &d[16..]);
                }
            }

            #[test]
            fn every_valid_record_round_trips(s in valid_stat()) {
                prop_assert_eq!(decode(&encode(&s), false), Ok(s));
                let mut row = Vec::new();
                push_row(&mut row, 17, &s);
                prop_assert!(row.len() <= MAX_ROW_LEN);
                let text = std::str::from_utf8(&row).unwrap();
                let back = parse_row(text.trim_end_matches('\n')).unwrap();
                prop_assert_eq!(back, Row { recv_ms: 17, stat: s, verified: false });
            }

            #[test]
            fn parse_row_never_panics(line in "[0-9.,x-]{0,120}") {
                let _ = parse_row(&line);
            }
        }
    }

    #[test]
    fn rotated_parts_belong_to_their_vm() {
        let ip: IpAddr = "127.1.0.7".parse().unwrap();
        let part = |gzip, rotated| Some(FilePart { ip, gzip, rotated });
        assert_eq!(file_part("127.1.0.7.csv"), part(false, false));
        assert_eq!(file_part("127.1.0.7.csv.1"), part(false, true));
        assert_eq!(file_part("127.1.0.7.csv.2.gz"), part(true, true));
        assert_eq!(file_part("127.1.0.7.csv-20261126"), part(false, true));
        assert_eq!(file_part("127.1.0.7.csv-20261126.gz"), part(true, true));
        let v6 = file_part("fd00__5.csv.3").map(|p| p.ip);
        assert_eq!(v6, Some("fd00::5".parse().unwrap()));
        for other in [
            "127.1.0.7.csv.gz",
            "127.1.0.7.csv.old",
            "127.1.0.7.csv.1.bak",
            "127.1.0.7.csv-",
            "127.1.0.7.csvx",
            "notes.csv.1",
            "127.1.0.7.txt",
        ] {
            assert_eq!(file_part(other), None, "{other}");
        }
    }
}
