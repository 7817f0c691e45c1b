//! Any bytes, any length: the decoder's contract, `wire::check_decode`
//! (the tests replay this target's corpus through the same function).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| vmstats::wire::check_decode(data));
