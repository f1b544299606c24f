//! `vigil-wal`: the write-ahead log under Vigil's ingest path.
//!
//! A log is a directory of numbered segment files. Each record is framed with its
//! length, kind, log sequence number (LSN) and two xxh3 checksums; the byte format is
//! specified in `docs/wal-format.md`.
//!
//! Invariants this crate keeps:
//! - LSNs are dense and increasing: record `n + 1` is written after record `n`.
//! - [`AppendTicket::wait`] resolves `Ok` only once the record, and every record before
//!   it, is on stable storage (in [`Durability::Fsync`] mode).
//! - Concurrent appenders share one fsync (group commit).
//! - After a failed write or fsync the log is poisoned: every later append fails.
//! - Recovery truncates a torn tail and refuses corruption before it (see [`RecoveryMode`]).

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod config;
mod error;
mod format;
mod recovery;
mod storage;
mod writer;

pub use config::{Durability, RecoveryMode, WalConfig};
pub use error::{Error, Result};
pub use format::{
    FRAME_HEADER_LEN, MAX_PAYLOAD_LEN, SEGMENT_HEADER_LEN, decode_frame, encode_frame,
};
pub use recovery::RecoveryReport;
pub use storage::{FsStorage, SegmentFile, Storage};
pub use writer::{AppendTicket, Wal};
