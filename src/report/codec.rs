//! The summary cache entry's header fields (which file, which bytes, the
//! probes, where each segment lies): LEB128 varints written to a
//! `Vec<u8>` and read back from a slice that may be anything (the cache
//! lives in the data dir, which the report trusts no more than the CSV
//! files), so every read is bounds-checked and fails with [`Corrupt`]
//! rather than panicking or allocating what a length field claims. The
//! segments' own state is serde's (`summary/stored.rs`).

/// A cache file that does not decode; the report rebuilds its part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Corrupt;

/// Appends `v` as a varint (7 bits a byte, low first).
pub fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends `Some(v)` as 1 then `v`, `None` as 0.
pub fn put_opt(out: &mut Vec<u8>, v: Option<u64>) {
    match v {
        Some(v) => {
            out.push(1);
            put(out, v);
        }
        None => out.push(0),
    }
}

/// Reads what [`put`] and [`put_opt`] wrote.
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

    pub fn get_opt(&mut self) -> Result<Option<u64>, Corrupt> {
        if self.get_opt_flag()? {
            self.get().map(Some)
        } else {
            Ok(None)
        }
    }

    /// The 0 or 1 byte that says whether an optional value follows.
    fn get_opt_flag(&mut self) -> Result<bool, Corrupt> {
        match self.take(1)? {
            [0] => Ok(false),
            [1] => Ok(true),
            _ => Err(Corrupt),
        }
    }

    /// A count of items each at least one byte long: no count can claim
    /// more items than bytes are left, so no loop or allocation runs away.
    pub fn get_len(&mut self) -> Result<usize, Corrupt> {
        let n = self.get()?;
        if n > self.bytes.len() as u64 {
            return Err(Corrupt);
        }
        Ok(n as usize)
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], Corrupt> {
        if n > self.bytes.len() {
            return Err(Corrupt);
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
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
        put_opt(&mut out, None);
        put_opt(&mut out, Some(5));
        let mut r = Reader::new(&out);
        for v in [0, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            assert_eq!(r.get(), Ok(v));
        }
        assert_eq!(r.get_opt(), Ok(None));
        assert_eq!(r.get_opt(), Ok(Some(5)));
        assert!(r.is_empty());
        assert_eq!(r.get(), Err(Corrupt));
        // Eleven continuation bytes, a length past the end, a wide value.
        assert_eq!(Reader::new(&[0xff; 11]).get(), Err(Corrupt));
        assert_eq!(Reader::new(&[5, 1]).get_len(), Err(Corrupt));
        assert_eq!(Reader::new(&[2]).get_opt(), Err(Corrupt));
    }
}
