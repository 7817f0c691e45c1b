//! The wire and file contract (`PROTOCOL.md`, version 1), in one place.
//!
//! Everything that knows a byte offset, a valid range, a rejection reason, the
//! CSV header or how an IP becomes a file name lives here, so the rest of the
//! crate cannot drift from the contract. Decoding is a pure function over a
//! byte slice: it never allocates and never panics, whatever the input.

use std::fmt;
use std::net::IpAddr;

/// Size of every valid stat datagram.
pub const DATAGRAM_LEN: usize = 72;
/// `VMST` in ASCII.
pub const MAGIC: [u8; 4] = *b"VMST";
/// The only protocol version this crate speaks.
pub const VERSION: u8 = 1;
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
/// cannot drift): never a panic; anything but 72 bytes refused for its
/// length; what is accepted encodes back to the same bytes (the reserved
/// ones aside) and formats to a row that parses back to it. Panics on a
/// violation. Cold: it is for tests and the fuzzer, not the receive path.
#[cold]
pub fn check_decode(data: &[u8]) {
    match decode(data, false) {
        Ok(stat) => {
            assert_eq!(data.len(), DATAGRAM_LEN);
            let again = encode(&stat);
            assert_eq!(&again[..14], &data[..14]);
            assert_eq!(&again[16..], &data[16..]);
            let mut row = Vec::new();
            push_row(&mut row, 1, &stat);
            let text = std::str::from_utf8(&row).expect("a row is text");
            let back = parse_row(text.trim_end()).expect("a row parses back");
            assert_eq!(back.stat, stat);
        }
        Err(reason) => {
            if data.len() != DATAGRAM_LEN {
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
}

impl Reject {
    /// Every reason, in check order; indexes counters.
    pub const ALL: [Reject; 5] = [
        Reject::BadLength,
        Reject::BadMagic,
        Reject::BadVersion,
        Reject::BadField,
        Reject::NotAllowed,
    ];

    /// The reason's name as `PROTOCOL.md` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Reject::BadLength => "bad_length",
            Reject::BadMagic => "bad_magic",
            Reject::BadVersion => "bad_version",
            Reject::BadField => "bad_field",
            Reject::NotAllowed => "not_allowed",
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

/// Decodes and validates one payload. `truncated` says the kernel cut the
/// datagram to fit the receive buffer, so its true length is larger than
/// `payload.len()` (a receive path may use buffers just over 72 bytes).
///
/// The allow-list (`not_allowed`) is the caller's check: it depends on the
/// source address, not on the bytes.
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
    if truncated || payload.len() != DATAGRAM_LEN {
        return Err(Reject::BadLength);
    }
    if payload[0..4] != MAGIC {
        return Err(Reject::BadMagic);
    }
    if payload[4] != VERSION {
        return Err(Reject::BadVersion);
    }
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
    Ok(stat)
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
    out.extend_from_slice(n.format(s.flags).as_bytes());
    out.push(b'\n');
}

/// A row read back from a VM file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Row {
    pub recv_ms: u64,
    pub stat: Stat,
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
            flags: parse_num(13, f[13])?,
        },
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    pub(crate) const VECTOR_HEX: &str = "564d5354 0100003c c0ffee01 00040000 0000000000000029 0000019abd2c7a7b \
         02d5 0c4e 00002000 0000000000100000 0000000000080000 0000000000001000 \
         0000000000010000";

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
                if bytes.len() != DATAGRAM_LEN || cut {
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
                prop_assert_eq!(back, Row { recv_ms: 17, stat: s });
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
