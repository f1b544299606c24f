//! Byte layout of segments and frames (specified in `docs/wal-format.md`).
//!
//! All integers are little-endian.

use xxhash_rust::xxh3::xxh3_64;

/// First eight bytes of every segment file.
pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"VIGILWAL";
/// Version of the segment and frame layout.
pub(crate) const FORMAT_VERSION: u32 = 1;
/// Length of the segment header.
pub const SEGMENT_HEADER_LEN: usize = 32;
/// Length of a frame header; the payload follows it.
pub const FRAME_HEADER_LEN: usize = 32;
/// Largest payload a frame may carry (256 MiB).
pub const MAX_PAYLOAD_LEN: usize = 256 * 1024 * 1024;
/// Suffix of segment file names.
pub(crate) const SEGMENT_SUFFIX: &str = ".wal";

/// Name of the segment whose first record has `first_lsn`.
pub(crate) fn segment_name(first_lsn: u64) -> String {
    format!("{first_lsn:020}{SEGMENT_SUFFIX}")
}

/// The first LSN encoded in a segment file name, if `name` is one.
pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

pub(crate) fn encode_segment_header(first_lsn: u64) -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[0..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&first_lsn.to_le_bytes());
    let sum = xxh3_64(&h[0..24]);
    h[24..32].copy_from_slice(&sum.to_le_bytes());
    h
}

/// Checks a segment header and returns its first LSN.
pub(crate) fn decode_segment_header(bytes: &[u8]) -> Result<u64, String> {
    if bytes.len() < SEGMENT_HEADER_LEN {
        return Err(format!(
            "segment header is {} bytes, expected {SEGMENT_HEADER_LEN}",
            bytes.len()
        ));
    }
    if bytes[0..8] != SEGMENT_MAGIC {
        return Err("bad segment magic".into());
    }
    if read_u64(bytes, 24) != xxh3_64(&bytes[0..24]) {
        return Err("segment header checksum mismatch".into());
    }
    let version = read_u32(bytes, 8);
    if version != FORMAT_VERSION {
        return Err(format!("unsupported segment format version {version}"));
    }
    Ok(read_u64(bytes, 16))
}

/// Appends one frame carrying `payload` to `out`.
pub fn encode_frame(out: &mut Vec<u8>, lsn: u64, kind: u8, payload: &[u8]) {
    let mut h = [0u8; FRAME_HEADER_LEN];
    h[0..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    h[4] = kind;
    h[8..16].copy_from_slice(&lsn.to_le_bytes());
    h[16..24].copy_from_slice(&xxh3_64(payload).to_le_bytes());
    let header_sum = xxh3_64(&h[0..24]);
    h[24..32].copy_from_slice(&header_sum.to_le_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(payload);
}

/// A frame read back from a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub lsn: u64,
    pub kind: u8,
    pub payload: &'a [u8],
}

impl Frame<'_> {
    /// Bytes the frame occupies in the segment.
    pub fn encoded_len(&self) -> usize {
        FRAME_HEADER_LEN + self.payload.len()
    }
}

/// Why bytes do not hold a valid frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The bytes end before the frame does.
    Incomplete,
    /// The bytes are long enough but wrong.
    Invalid(&'static str),
}

/// Decodes the frame at the start of `bytes`. Never panics, whatever the bytes.
pub fn decode_frame(bytes: &[u8]) -> Result<Frame<'_>, FrameError> {
    if bytes.len() < FRAME_HEADER_LEN {
        return Err(FrameError::Incomplete);
    }
    if read_u64(bytes, 24) != xxh3_64(&bytes[0..24]) {
        return Err(FrameError::Invalid("frame header checksum mismatch"));
    }
    let len = read_u32(bytes, 0) as usize;
    let kind = bytes[4];
    if kind == 0 {
        return Err(FrameError::Invalid("frame kind 0 is reserved"));
    }
    if bytes[5..8] != [0, 0, 0] {
        return Err(FrameError::Invalid(
            "reserved frame header bytes are not zero",
        ));
    }
    if len > MAX_PAYLOAD_LEN {
        return Err(FrameError::Invalid("frame length exceeds the maximum"));
    }
    let Some(payload) = bytes.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + len) else {
        return Err(FrameError::Incomplete);
    };
    if read_u64(bytes, 16) != xxh3_64(payload) {
        return Err(FrameError::Invalid("frame payload checksum mismatch"));
    }
    Ok(Frame {
        lsn: read_u64(bytes, 8),
        kind,
        payload,
    })
}

fn read_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn read_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trip() {
        let mut buf = Vec::new();
        encode_frame(&mut buf, 42, 7, b"hello");
        let f = decode_frame(&buf).unwrap();
        assert_eq!((f.lsn, f.kind, f.payload), (42, 7, &b"hello"[..]));
        assert_eq!(f.encoded_len(), buf.len());
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let mut buf = Vec::new();
        encode_frame(&mut buf, 1, 1, b"some payload bytes");
        for bit in 0..buf.len() * 8 {
            let mut b = buf.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(
                decode_frame(&b).is_err(),
                "flip of bit {bit} went unnoticed"
            );
        }
    }

    #[test]
    fn every_prefix_is_incomplete_or_invalid() {
        let mut buf = Vec::new();
        encode_frame(&mut buf, 1, 1, b"payload");
        for n in 0..buf.len() {
            assert!(decode_frame(&buf[..n]).is_err());
        }
    }

    #[test]
    fn segment_names() {
        assert_eq!(parse_segment_name(&segment_name(17)), Some(17));
        assert_eq!(parse_segment_name("17.wal"), None);
        assert_eq!(parse_segment_name("00000000000000000017.tmp"), None);
    }

    #[test]
    fn segment_header_round_trip() {
        let h = encode_segment_header(99);
        assert_eq!(decode_segment_header(&h), Ok(99));
        let mut bad = h;
        bad[17] ^= 1;
        assert!(decode_segment_header(&bad).is_err());
    }
}
