//! Arbitrary text through the line protocol decoder: points or errors, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_engine::{Precision, parse_lines};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        for precision in [Precision::Nanoseconds, Precision::Seconds] {
            for line in parse_lines(text, precision) {
                let _ = line;
            }
        }
    }
});
