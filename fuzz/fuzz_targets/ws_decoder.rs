//! `cargo +nightly fuzz run ws_decoder`: the RFC 6455 decoder, both roles, small and large
//! limits, the stream cut at fuzzer-chosen points (`crosswire_protocol::fuzzing::ws_decoder`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    crosswire_protocol::fuzzing::ws_decoder(data);
});
