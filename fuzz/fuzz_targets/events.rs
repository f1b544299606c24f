//! Arbitrary bytes through the events decoder: events or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = vigil_engine::parse_events(data, 0);
});
