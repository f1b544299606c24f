//! Arbitrary bytes through the WAL frame decoder: an error, never a panic; a decoded
//! frame re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = vigil_wal::decode_frame(data) {
        let mut out = Vec::new();
        vigil_wal::encode_frame(&mut out, frame.lsn, frame.kind, frame.payload);
        assert_eq!(&out[..], &data[..frame.encoded_len()]);
    }
});
