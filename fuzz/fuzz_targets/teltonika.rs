#![no_main]
//! Placeholder target; the decoder's owner writes the real one.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|_data: &[u8]| {});
