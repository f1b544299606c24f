//! Arbitrary bytes as the payload of an engine WAL record (kind 1 batches, kind 2 shipped
//! batches): batches or an error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = vigil_engine::decode_payload(1, data);
    if let Ok((_, rest)) = vigil_engine::decode_origin(1, data) {
        let _ = vigil_engine::decode_payload(1, rest);
    }
});
