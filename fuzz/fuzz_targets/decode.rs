//! Any bytes, any length: decode must not panic, must refuse anything that
//! is not 72 bytes, and whatever it accepts must encode back to the same
//! bytes (reserved bytes aside) and format to a row that parses back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmstats::wire;

fuzz_target!(|data: &[u8]| {
    match wire::decode(data, false) {
        Ok(stat) => {
            assert_eq!(data.len(), wire::DATAGRAM_LEN);
            let again = wire::encode(&stat);
            assert_eq!(&again[..14], &data[..14]);
            assert_eq!(&again[16..], &data[16..]);
            let mut row = Vec::new();
            wire::push_row(&mut row, 1, &stat);
            let text = std::str::from_utf8(&row).unwrap();
            let back = wire::parse_row(text.trim_end()).unwrap();
            assert_eq!(back.stat, stat);
        }
        Err(reason) => {
            if data.len() != wire::DATAGRAM_LEN {
                assert_eq!(reason, wire::Reject::BadLength);
            }
        }
    }
});
