//! The QUIC ingest protocol, `vigil/1`: frames and their encoding, shared by the server
//! and by `vigil ship`. `docs/protocol.md` specifies it byte by byte.
//!
//! Every frame is `u32 length` (big-endian; the bytes that follow it), `u8 type`, then
//! the type's fields. Integers are big-endian; strings are UTF-8 with a `u16` length.

use std::fmt;

/// ALPN protocol name.
pub const ALPN: &[u8] = b"vigil/1";
/// Protocol version carried in `HELLO` and `WELCOME`.
pub const VERSION: u16 = 1;
/// Largest frame the server accepts unless configured otherwise (the `length` field).
pub const DEFAULT_MAX_FRAME: u32 = 8 * 1024 * 1024;
/// Batches a client may have sent on one stream without their answer.
pub const DEFAULT_MAX_IN_FLIGHT: u16 = 8;
/// Longest agent id, bytes.
pub const MAX_AGENT_LEN: usize = 128;

/// Frame types.
pub mod kind {
    pub const HELLO: u8 = 0x01;
    pub const WELCOME: u8 = 0x02;
    pub const OPEN: u8 = 0x03;
    pub const RESUME: u8 = 0x04;
    pub const BATCH: u8 = 0x05;
    pub const ACK: u8 = 0x06;
    pub const REJECT: u8 = 0x07;
    pub const BUSY: u8 = 0x08;
    pub const ERROR: u8 = 0x09;
    pub const INVENTORY: u8 = 0x0a;
    pub const REGISTERED: u8 = 0x0b;
}

/// Error codes of `REJECT` and `ERROR` frames, and QUIC application close codes.
pub mod code {
    /// The frame could not be decoded (wrong length, unknown type, bad field).
    pub const MALFORMED: u16 = 1;
    /// A frame arrived where the protocol does not allow it.
    pub const UNEXPECTED: u16 = 2;
    /// The protocol version is not supported.
    pub const VERSION: u16 = 3;
    /// Token missing, unknown or expired.
    pub const UNAUTHORIZED: u16 = 4;
    /// The frame is longer than the server's limit.
    pub const TOO_LARGE: u16 = 5;
    /// The batch's rows are invalid (parse error, type conflict): it is not stored and
    /// must not be sent again.
    pub const BAD_DATA: u16 = 6;
    /// The server cannot store now (WAL failure, shutting down): retry later.
    pub const UNAVAILABLE: u16 = 7;
    /// The agent id is empty, too long or has characters outside `[A-Za-z0-9._:-]`.
    pub const BAD_AGENT: u16 = 8;
}

/// Payload formats of a `BATCH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// InfluxDB line protocol, with the timestamp precision.
    LineProtocol(Precision),
    /// Events as NDJSON or a JSON array.
    Events,
}

/// Line-protocol timestamp precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    Nanoseconds,
    Microseconds,
    Milliseconds,
    Seconds,
}

impl From<Precision> for vigil_engine::Precision {
    fn from(p: Precision) -> Self {
        match p {
            Precision::Nanoseconds => Self::Nanoseconds,
            Precision::Microseconds => Self::Microseconds,
            Precision::Milliseconds => Self::Milliseconds,
            Precision::Seconds => Self::Seconds,
        }
    }
}

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Hello {
        version: u16,
        token: String,
        agent: String,
    },
    Welcome {
        version: u16,
        max_frame: u32,
        max_in_flight: u16,
    },
    Open {
        channel: u32,
    },
    Resume {
        channel: u32,
        stored_seq: u64,
    },
    Batch {
        seq: u64,
        format: Format,
        body: Vec<u8>,
    },
    Ack {
        seq: u64,
        duplicate: bool,
        rows: u32,
    },
    Reject {
        seq: u64,
        code: u16,
        message: String,
    },
    Busy {
        seq: u64,
        retry_after_ms: u32,
    },
    Error {
        code: u16,
        message: String,
    },
    /// On the control stream: the agent's machine, for the systems registry.
    Inventory {
        hostname: String,
        /// A JSON object of the inventory fields (`docs/protocol.md`).
        json: Vec<u8>,
    },
    /// The answer to `INVENTORY`: the system's id in the registry.
    Registered {
        system_id: u64,
    },
}

/// Why bytes are not a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub code: u16,
    pub message: String,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DecodeError {}

fn malformed(message: impl Into<String>) -> DecodeError {
    DecodeError {
        code: code::MALFORMED,
        message: message.into(),
    }
}

impl Format {
    /// The `format` byte of a `BATCH`.
    pub fn to_byte(self) -> u8 {
        match self {
            Format::LineProtocol(Precision::Nanoseconds) => 1,
            Format::LineProtocol(Precision::Microseconds) => 2,
            Format::LineProtocol(Precision::Milliseconds) => 3,
            Format::LineProtocol(Precision::Seconds) => 4,
            Format::Events => 5,
        }
    }

    /// The format of a `BATCH` `format` byte; `None` for an unknown one.
    pub fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            1 => Format::LineProtocol(Precision::Nanoseconds),
            2 => Format::LineProtocol(Precision::Microseconds),
            3 => Format::LineProtocol(Precision::Milliseconds),
            4 => Format::LineProtocol(Precision::Seconds),
            5 => Format::Events,
            _ => return None,
        })
    }
}

impl Frame {
    /// The frame type's name, as in `docs/protocol.md` (for messages: a frame's fields
    /// can be megabytes).
    pub fn name(&self) -> &'static str {
        match self {
            Frame::Hello { .. } => "HELLO",
            Frame::Welcome { .. } => "WELCOME",
            Frame::Open { .. } => "OPEN",
            Frame::Resume { .. } => "RESUME",
            Frame::Batch { .. } => "BATCH",
            Frame::Ack { .. } => "ACK",
            Frame::Reject { .. } => "REJECT",
            Frame::Busy { .. } => "BUSY",
            Frame::Error { .. } => "ERROR",
            Frame::Inventory { .. } => "INVENTORY",
            Frame::Registered { .. } => "REGISTERED",
        }
    }

    /// Appends the frame, length prefix included, to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; 4]);
        match self {
            Frame::Hello {
                version,
                token,
                agent,
            } => {
                out.push(kind::HELLO);
                out.extend_from_slice(&version.to_be_bytes());
                put_str(out, token);
                put_str(out, agent);
            }
            Frame::Welcome {
                version,
                max_frame,
                max_in_flight,
            } => {
                out.push(kind::WELCOME);
                out.extend_from_slice(&version.to_be_bytes());
                out.extend_from_slice(&max_frame.to_be_bytes());
                out.extend_from_slice(&max_in_flight.to_be_bytes());
            }
            Frame::Open { channel } => {
                out.push(kind::OPEN);
                out.extend_from_slice(&channel.to_be_bytes());
            }
            Frame::Resume {
                channel,
                stored_seq,
            } => {
                out.push(kind::RESUME);
                out.extend_from_slice(&channel.to_be_bytes());
                out.extend_from_slice(&stored_seq.to_be_bytes());
            }
            Frame::Batch { seq, format, body } => {
                out.push(kind::BATCH);
                out.extend_from_slice(&seq.to_be_bytes());
                out.push(format.to_byte());
                out.extend_from_slice(body);
            }
            Frame::Ack {
                seq,
                duplicate,
                rows,
            } => {
                out.push(kind::ACK);
                out.extend_from_slice(&seq.to_be_bytes());
                out.push(u8::from(*duplicate));
                out.extend_from_slice(&rows.to_be_bytes());
            }
            Frame::Reject { seq, code, message } => {
                out.push(kind::REJECT);
                out.extend_from_slice(&seq.to_be_bytes());
                out.extend_from_slice(&code.to_be_bytes());
                put_str(out, message);
            }
            Frame::Busy {
                seq,
                retry_after_ms,
            } => {
                out.push(kind::BUSY);
                out.extend_from_slice(&seq.to_be_bytes());
                out.extend_from_slice(&retry_after_ms.to_be_bytes());
            }
            Frame::Error { code, message } => {
                out.push(kind::ERROR);
                out.extend_from_slice(&code.to_be_bytes());
                put_str(out, message);
            }
            Frame::Inventory { hostname, json } => {
                out.push(kind::INVENTORY);
                put_str(out, hostname);
                out.extend_from_slice(json);
            }
            Frame::Registered { system_id } => {
                out.push(kind::REGISTERED);
                out.extend_from_slice(&system_id.to_be_bytes());
            }
        }
        let len = (out.len() - start - 4) as u32;
        out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    }

    /// The frame's bytes, length prefix included.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    /// Decodes one frame from `body`: the bytes after the length prefix (type first).
    /// Never panics, whatever the bytes.
    pub fn decode(body: &[u8]) -> Result<Frame, DecodeError> {
        let mut r = Reader {
            bytes: body,
            pos: 0,
        };
        let t = r.u8()?;
        let frame = match t {
            kind::HELLO => Frame::Hello {
                version: r.u16()?,
                token: r.string("token")?,
                agent: r.string("agent")?,
            },
            kind::WELCOME => Frame::Welcome {
                version: r.u16()?,
                max_frame: r.u32()?,
                max_in_flight: r.u16()?,
            },
            kind::OPEN => Frame::Open { channel: r.u32()? },
            kind::RESUME => Frame::Resume {
                channel: r.u32()?,
                stored_seq: r.u64()?,
            },
            kind::BATCH => {
                let (seq, format) = batch_header(r.take(BATCH_HEADER - 1)?)?;
                let body = r.rest().to_vec();
                Frame::Batch { seq, format, body }
            }
            kind::ACK => Frame::Ack {
                seq: r.u64()?,
                duplicate: match r.u8()? {
                    0 => false,
                    1 => true,
                    b => return Err(malformed(format!("ack status {b} is not 0 or 1"))),
                },
                rows: r.u32()?,
            },
            kind::REJECT => Frame::Reject {
                seq: r.u64()?,
                code: r.u16()?,
                message: r.string("message")?,
            },
            kind::BUSY => Frame::Busy {
                seq: r.u64()?,
                retry_after_ms: r.u32()?,
            },
            kind::ERROR => Frame::Error {
                code: r.u16()?,
                message: r.string("message")?,
            },
            kind::INVENTORY => Frame::Inventory {
                hostname: r.string("hostname")?,
                json: r.rest().to_vec(),
            },
            kind::REGISTERED => Frame::Registered {
                system_id: r.u64()?,
            },
            other => return Err(malformed(format!("unknown frame type 0x{other:02x}"))),
        };
        if r.pos != body.len() {
            return Err(malformed(format!(
                "{} bytes after the end of a frame of type 0x{t:02x}",
                body.len() - r.pos
            )));
        }
        Ok(frame)
    }
}

/// Checks an agent id: 1 to 128 bytes of `[A-Za-z0-9._:-]`.
pub fn check_agent(agent: &str) -> Result<(), DecodeError> {
    let ok = !agent.is_empty()
        && agent.len() <= MAX_AGENT_LEN
        && agent
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(DecodeError {
            code: code::BAD_AGENT,
            message: format!(
                "agent id '{}' must be 1 to {MAX_AGENT_LEN} bytes of [A-Za-z0-9._:-]",
                agent.chars().take(MAX_AGENT_LEN + 8).collect::<String>()
            ),
        })
    }
}

/// Bytes of a BATCH frame before its data: type, sequence, format.
pub const BATCH_HEADER: usize = 10;

/// The bytes of a BATCH frame before a payload of `payload_len` bytes: length prefix, type,
/// sequence, format. Followed by the payload they are what [`Frame::Batch`] encodes to, so
/// a sender can hand the payload to the stream as it is. `None` when the frame would be
/// longer than a `u32` length can say.
pub fn batch_head(seq: u64, format: Format, payload_len: usize) -> Option<[u8; 4 + BATCH_HEADER]> {
    let len = u32::try_from(BATCH_HEADER.checked_add(payload_len)?).ok()?;
    let mut head = [0u8; 4 + BATCH_HEADER];
    head[..4].copy_from_slice(&len.to_be_bytes());
    head[4] = kind::BATCH;
    head[5..13].copy_from_slice(&seq.to_be_bytes());
    head[13] = format.to_byte();
    Some(head)
}

/// The sequence and format of a BATCH frame, from the 9 bytes after its type.
pub fn batch_header(bytes: &[u8]) -> Result<(u64, Format), DecodeError> {
    let mut r = Reader { bytes, pos: 0 };
    let seq = r.u64()?;
    let f = r.u8()?;
    let format =
        Format::from_byte(f).ok_or_else(|| malformed(format!("unknown batch format {f}")))?;
    Ok((seq, format))
}

/// A string field; one longer than a `u16` can count is cut at the last character
/// boundary that fits, so that it stays UTF-8.
fn put_str(out: &mut Vec<u8>, s: &str) {
    let bytes = &s.as_bytes()[..s.floor_char_boundary(u16::MAX as usize)];
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        match end {
            Some(end) => {
                let s = &self.bytes[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(malformed(format!(
                "frame ends after {} bytes, {} more expected",
                self.bytes.len(),
                self.pos + n - self.bytes.len()
            ))),
        }
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    fn string(&mut self, what: &str) -> Result<String, DecodeError> {
        let n = self.u16()? as usize;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| malformed(format!("{what} is not UTF-8")))
    }

    fn rest(&mut self) -> &'a [u8] {
        let s = &self.bytes[self.pos..];
        self.pos = self.bytes.len();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames() -> Vec<Frame> {
        vec![
            Frame::Hello {
                version: VERSION,
                token: "tok".into(),
                agent: "host-1".into(),
            },
            Frame::Welcome {
                version: VERSION,
                max_frame: DEFAULT_MAX_FRAME,
                max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            },
            Frame::Open { channel: 3 },
            Frame::Resume {
                channel: 3,
                stored_seq: 41,
            },
            Frame::Batch {
                seq: 42,
                format: Format::LineProtocol(Precision::Milliseconds),
                body: b"cpu v=1 1".to_vec(),
            },
            Frame::Batch {
                seq: 43,
                format: Format::Events,
                body: Vec::new(),
            },
            Frame::Ack {
                seq: 42,
                duplicate: true,
                rows: 1,
            },
            Frame::Reject {
                seq: 43,
                code: code::BAD_DATA,
                message: "line 1: bad".into(),
            },
            Frame::Busy {
                seq: 44,
                retry_after_ms: 250,
            },
            Frame::Error {
                code: code::UNAUTHORIZED,
                message: "unknown token".into(),
            },
            Frame::Inventory {
                hostname: "web-1".into(),
                json: br#"{"cpu_cores":8}"#.to_vec(),
            },
            Frame::Registered { system_id: 12 },
        ]
    }

    #[test]
    fn every_frame_round_trips_and_no_prefix_decodes_to_another() {
        for f in frames() {
            let bytes = f.to_bytes();
            let len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
            assert_eq!(len, bytes.len() - 4);
            assert_eq!(Frame::decode(&bytes[4..]).unwrap(), f);
            // A batch body (an inventory's JSON) is "the rest", so shorter ones still decode.
            if !matches!(f, Frame::Batch { .. } | Frame::Inventory { .. }) {
                for n in 0..bytes.len() - 4 {
                    assert!(Frame::decode(&bytes[4..4 + n]).is_err(), "{f:?} prefix {n}");
                }
            }
        }
    }

    #[test]
    fn an_overlong_message_is_cut_at_a_character_boundary() {
        // 65,536 bytes, one more than a u16 counts; byte 65,535 is inside the last '€'.
        let message = format!("a{}", "€".repeat(21_845));
        let f = Frame::Error { code: 1, message };
        let bytes = f.to_bytes();
        let Frame::Error { message, .. } = Frame::decode(&bytes[4..]).unwrap() else {
            panic!("an ERROR frame");
        };
        assert_eq!(message, format!("a{}", "€".repeat(21_844)));
    }

    #[test]
    fn a_batch_head_and_its_payload_are_the_encoded_frame() {
        for f in frames() {
            if let Frame::Batch { seq, format, body } = &f {
                let mut bytes = batch_head(*seq, *format, body.len()).unwrap().to_vec();
                bytes.extend_from_slice(body);
                assert_eq!(bytes, f.to_bytes());
            }
        }
    }

    #[test]
    fn the_spec_example_bytes() {
        // docs/protocol.md shows these bytes.
        let open = Frame::Open { channel: 1 }.to_bytes();
        assert_eq!(open, [0, 0, 0, 5, 0x03, 0, 0, 0, 1]);
        let ack = Frame::Ack {
            seq: 7,
            duplicate: false,
            rows: 2,
        }
        .to_bytes();
        assert_eq!(
            ack,
            [0, 0, 0, 14, 0x06, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0, 2]
        );
    }

    #[test]
    fn bad_input_names_what_is_wrong() {
        assert!(
            Frame::decode(&[])
                .unwrap_err()
                .message
                .contains("frame ends")
        );
        assert!(Frame::decode(&[0x77]).unwrap_err().message.contains("0x77"));
        let mut batch = Frame::Batch {
            seq: 1,
            format: Format::Events,
            body: vec![],
        }
        .to_bytes();
        batch[4 + 9] = 9;
        assert!(
            Frame::decode(&batch[4..])
                .unwrap_err()
                .message
                .contains("format 9")
        );
        assert!(check_agent("host-1.example:a_b").is_ok());
        assert_eq!(check_agent("").unwrap_err().code, code::BAD_AGENT);
        assert!(check_agent("a b").is_err());
        assert!(check_agent(&"x".repeat(129)).is_err());
    }
}
