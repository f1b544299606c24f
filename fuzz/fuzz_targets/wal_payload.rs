//! Arbitrary bytes as the payload of an engine WAL record: batches or an error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = vigil_engine::decode_payload(1, data);
});
