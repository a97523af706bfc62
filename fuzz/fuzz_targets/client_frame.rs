//! `cargo +nightly fuzz run client_frame`: the client JSON frame parser on arbitrary text
//! (`crosswire_protocol::fuzzing::client_frame`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Arbitrary bytes made into UTF-8 text, as a WebSocket text message is.
    let text = String::from_utf8_lossy(data);
    let _ = crosswire_protocol::fuzzing::client_frame(&text);
});
