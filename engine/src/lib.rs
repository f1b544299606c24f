//! `vigil-engine`: Vigil's columnar store.
//!
//! Writes are decoded (line protocol or events JSON), checked against the table schemas,
//! logged in the WAL as one record per request, and kept in an in-memory Arrow buffer.
//! A background flusher writes the buffer to sorted, deduplicated Parquet files in daily
//! partitions and replaces the manifest (files, schemas, WAL checkpoint) atomically; the
//! WAL is then truncated behind the checkpoint. Recovery is manifest + WAL replay.
//!
//! Invariants:
//! - A write is acknowledged only once its WAL record is durable.
//! - A request is stored whole or not at all.
//! - Every WAL record at or below the manifest's checkpoint is in the manifest's files.
//! - Metrics: `(series, time)` is unique; the later write wins.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod batch;
mod buffer;
mod config;
mod dedup;
mod engine;
mod error;
mod event_state;
mod events;
mod grouping;
mod last_values;
mod line_protocol;
mod manifest;
mod payload;
mod persist;
mod recurrence;
mod schema;
mod series;
mod snapshot;
mod time;

pub use batch::TableBatch;
pub use config::EngineConfig;
pub use engine::{
    DecodeSlot, Delivery, Engine, EngineStats, PreparedWrite, ShipTicket, WriteSummary,
};
pub use error::{Error, LineError, Result};
pub use event_state::{EVENTS_STATE_DIR, EventsConfig};
pub use events::{Event, normalise_severity, parse_events};
pub use grouping::{
    DEFAULT_PLACEHOLDER, DrainConfig, GROUPING_VERSION, GroupInfo, Grouped, Grouper, WILDCARD,
    custom_fingerprint, fingerprint_of, template,
};
pub use last_values::newest_rows;
pub use line_protocol::{FieldValue, Line, Precision, parse_lines};
pub use manifest::{FileMeta, MANIFEST_FILE, Manifest, TableManifest};
pub use payload::{
    KIND_SHIPPED_BATCHES, KIND_TABLE_BATCHES, Origin, decode as decode_payload, decode_origin,
    encode as encode_payload, encode_origin,
};
pub use persist::{DATA_PAGE_ROWS, PartitionWriter, partition_name, table_dir_name};
pub use recurrence::{
    BUCKET_NANOS, Buckets, FingerprintStats, MAX_FINGERPRINTS, MAX_LISTED, Recurrence,
    RecurrenceQuery, RecurrenceRow, RecurrenceStatus,
};
pub use schema::{
    Catalog, Column, ColumnKind, EVENTS_TABLE, FieldType, TIME_COLUMN, TIME_SLICE_NANOS,
    TableSchema, events_schema,
};
pub use snapshot::{BufferedPartition, DataFile, TableSnapshot};
pub use time::{MockTimeProvider, SystemTimeProvider, TimeProvider};
