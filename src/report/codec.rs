//! The varints of a segment's count lists (LEB128: 7 bits a byte, low
//! first), the one part of the summary cache still hand-coded because it
//! is most of its bytes and read on every report (`summary/counts.rs`
//! says why), and [`Corrupt`], what a cache file that does not decode is.
//! The rest of an entry is serde's (`cache.rs`, `summary/stored.rs`).
//! What is read may be anything (the cache lives in the data dir, which
//! the report trusts no more than the CSV files), so every read is
//! bounds-checked and fails with [`Corrupt`] rather than panicking.

/// A cache file that does not decode; the report rebuilds its part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Corrupt;

/// Appends `v` as a varint.
pub fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads what [`put`] wrote.
pub struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes }
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub fn get(&mut self) -> Result<u64, Corrupt> {
        // Most values are one or two bytes: counts of 1, small deltas.
        match *self.bytes {
            [b, ..] if b < 0x80 => {
                self.bytes = &self.bytes[1..];
                return Ok(u64::from(b));
            }
            [b0, b1, ..] if b1 < 0x80 => {
                self.bytes = &self.bytes[2..];
                return Ok(u64::from(b0 & 0x7f) | u64::from(b1) << 7);
            }
            _ => {}
        }
        let mut v = 0u64;
        for (i, b) in self.bytes.iter().enumerate().take(10) {
            let bits = u64::from(b & 0x7f);
            if i == 9 && bits > 1 {
                return Err(Corrupt);
            }
            v |= bits << (7 * i);
            if b & 0x80 == 0 {
                self.bytes = &self.bytes[i + 1..];
                return Ok(v);
            }
        }
        Err(Corrupt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_junk() {
        let mut out = Vec::new();
        for v in [0, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            put(&mut out, v);
        }
        let mut r = Reader::new(&out);
        for v in [0, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            assert_eq!(r.get(), Ok(v));
        }
        assert!(r.is_empty());
        assert_eq!(r.get(), Err(Corrupt));
        // Eleven continuation bytes; a tenth byte past 64 bits; cut short.
        assert_eq!(Reader::new(&[0xff; 11]).get(), Err(Corrupt));
        let mut wide = vec![0xff; 9];
        wide.push(0x02);
        assert_eq!(Reader::new(&wide).get(), Err(Corrupt));
        assert_eq!(Reader::new(&[0x80, 0x80]).get(), Err(Corrupt));
    }
}
