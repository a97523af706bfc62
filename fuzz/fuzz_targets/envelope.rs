//! `cargo +nightly fuzz run envelope`: the cluster envelope codec with compression off, on,
//! and on with a small limit (`crosswire_protocol::fuzzing::envelope`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    crosswire_protocol::fuzzing::envelope(data);
});
