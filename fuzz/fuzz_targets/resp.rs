//! `cargo +nightly fuzz run resp`: the RESP2 reply decoder of the Redis subscribe connection,
//! with Redis's limits and with small ones (`crosswire_redis::fuzzing::resp`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    crosswire_redis::fuzzing::resp(data);
});
