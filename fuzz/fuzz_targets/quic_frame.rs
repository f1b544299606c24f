//! Arbitrary bytes as the body of a `vigil/1` QUIC frame (after its length prefix): a
//! frame or an error, never a panic; a decoded frame encodes back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The codec has no dependencies: compiled in directly, so that this target does not
// build the whole API crate (and DataFusion with it).
#[path = "../../api/src/protocol.rs"]
#[allow(dead_code, unreachable_pub)]
mod protocol;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = protocol::Frame::decode(data) {
        let bytes = frame.to_bytes();
        assert_eq!(&bytes[4..], data, "{frame:?} re-encodes differently");
    }
});
