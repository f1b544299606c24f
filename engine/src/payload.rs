//! Payloads of the WAL records the engine writes (specified in `docs/wal-format.md`).
//!
//! Kind [`KIND_TABLE_BATCHES`]: one write request's rows, all or nothing.
//!
//! ```text
//! u8  version = 1
//! u32 count
//! count × { u16 name_len, name (UTF-8), i32 day, u32 ipc_len, Arrow IPC stream (LZ4 frame buffers) }
//! ```
//! Kind [`KIND_SHIPPED_BATCHES`]: a batch an agent shipped, with where it came from, so
//! that replay restores the highest sequence stored per agent channel.
//!
//! ```text
//! u16 agent_len, agent (UTF-8), u32 channel, u64 seq, then a kind 1 payload
//! ```
//! Integers are little-endian.

use std::io::Cursor;

use arrow::array::RecordBatch;
use arrow::ipc::CompressionType;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::{IpcWriteOptions, StreamWriter};

use crate::batch::TableBatch;
use crate::error::{Error, Result};

/// WAL record kind holding [`TableBatch`]es.
pub const KIND_TABLE_BATCHES: u8 = 1;
/// WAL record kind holding an agent's batch: its [`Origin`], then [`TableBatch`]es.
pub const KIND_SHIPPED_BATCHES: u8 = 2;

/// Where a shipped batch came from: an agent, one of its channels (an independent
/// ordered stream of batches, such as one tailed file) and the batch's sequence number
/// in that channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub agent: String,
    pub channel: u32,
    pub seq: u64,
}

/// Prefixes a kind 1 payload with `origin`, making a kind 2 payload.
pub fn encode_origin(origin: &Origin, batches_payload: &[u8]) -> Vec<u8> {
    let agent = origin.agent.as_bytes();
    let mut out = Vec::with_capacity(14 + agent.len() + batches_payload.len());
    out.extend_from_slice(&(agent.len() as u16).to_le_bytes());
    out.extend_from_slice(agent);
    out.extend_from_slice(&origin.channel.to_le_bytes());
    out.extend_from_slice(&origin.seq.to_le_bytes());
    out.extend_from_slice(batches_payload);
    out
}

/// Splits a kind 2 payload into its origin and its kind 1 payload.
pub fn decode_origin(lsn: u64, bytes: &[u8]) -> Result<(Origin, &[u8])> {
    let bad = |reason: &str| Error::BadRecord {
        lsn,
        reason: format!("shipped batch header: {reason}"),
    };
    let mut r = Reader { bytes, pos: 0 };
    let len = r.u16().ok_or_else(|| bad("truncated"))? as usize;
    let agent = std::str::from_utf8(r.take(len).ok_or_else(|| bad("truncated agent"))?)
        .map_err(|_| bad("agent is not UTF-8"))?
        .to_string();
    let channel = r.u32().ok_or_else(|| bad("truncated channel"))?;
    let seq = r.take(8).ok_or_else(|| bad("truncated sequence"))?;
    let seq = u64::from_le_bytes(seq.try_into().map_err(|_| bad("truncated sequence"))?);
    Ok((
        Origin {
            agent,
            channel,
            seq,
        },
        &bytes[r.pos..],
    ))
}
const VERSION: u8 = 1;

/// Encodes batches as one WAL payload.
pub fn encode(batches: &[TableBatch]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(1024);
    out.push(VERSION);
    out.extend_from_slice(&(batches.len() as u32).to_le_bytes());
    let options =
        IpcWriteOptions::default().try_with_compression(Some(CompressionType::LZ4_FRAME))?;
    for tb in batches {
        let name = tb.table.as_bytes();
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(name);
        out.extend_from_slice(&tb.day.to_le_bytes());
        let len_at = out.len();
        out.extend_from_slice(&[0; 4]);
        let mut writer =
            StreamWriter::try_new_with_options(&mut out, &tb.batch.schema(), options.clone())?;
        writer.write(&tb.batch)?;
        writer.finish()?;
        drop(writer);
        let ipc_len = (out.len() - len_at - 4) as u32;
        out[len_at..len_at + 4].copy_from_slice(&ipc_len.to_le_bytes());
    }
    Ok(out)
}

/// Decodes a payload written by [`encode`]. Never panics, whatever the bytes.
pub fn decode(lsn: u64, bytes: &[u8]) -> Result<Vec<TableBatch>> {
    let bad = |reason: String| Error::BadRecord { lsn, reason };
    let mut r = Reader { bytes, pos: 0 };
    let version = r.take(1).ok_or_else(|| bad("empty payload".into()))?[0];
    if version != VERSION {
        return Err(bad(format!("unsupported payload version {version}")));
    }
    let count = r.u32().ok_or_else(|| bad("truncated count".into()))?;
    let mut out = Vec::new();
    for i in 0..count {
        let truncated = || bad(format!("batch {i} is truncated"));
        let name_len = r.u16().ok_or_else(truncated)? as usize;
        let name = std::str::from_utf8(r.take(name_len).ok_or_else(truncated)?)
            .map_err(|_| bad(format!("batch {i} table name is not UTF-8")))?
            .to_string();
        let day = r.u32().ok_or_else(truncated)? as i32;
        let ipc_len = r.u32().ok_or_else(truncated)? as usize;
        let ipc = r.take(ipc_len).ok_or_else(truncated)?;
        let reader =
            StreamReader::try_new(Cursor::new(ipc), None).map_err(|e| bad(e.to_string()))?;
        for batch in reader {
            let batch: RecordBatch = batch.map_err(|e| bad(e.to_string()))?;
            out.push(TableBatch {
                table: name.clone(),
                day,
                batch,
            });
        }
    }
    if r.pos != bytes.len() {
        return Err(bad("trailing bytes after the last batch".into()));
    }
    Ok(out)
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.bytes.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::build_metric_batches;
    use crate::line_protocol::Precision;

    #[test]
    fn round_trip() {
        let mb = build_metric_batches(
            "cpu,host=a u=1,s=\"x\" 10\ncpu,host=b u=2",
            Precision::Nanoseconds,
            5,
        )
        .unwrap()
        .remove(0);
        let tb = vec![TableBatch {
            table: "cpu".into(),
            day: 3,
            batch: mb.batch,
        }];
        let bytes = encode(&tb).unwrap();
        let back = decode(1, &bytes).unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!((back[0].table.as_str(), back[0].day), ("cpu", 3));
        assert_eq!(back[0].batch, tb[0].batch);
        for n in 0..bytes.len() {
            assert!(decode(1, &bytes[..n]).is_err(), "prefix {n} decoded");
        }
        let origin = Origin {
            agent: "agent-1".into(),
            channel: 7,
            seq: 42,
        };
        let shipped = encode_origin(&origin, &bytes);
        let (o, rest) = decode_origin(1, &shipped).unwrap();
        assert_eq!((o, rest), (origin, &bytes[..]));
        for n in 0..14 {
            assert!(
                decode_origin(1, &shipped[..n]).is_err(),
                "prefix {n} decoded"
            );
        }
    }
}
