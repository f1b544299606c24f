//! `/metrics` in the Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use vigil_engine::EngineStats;

/// Counters of the HTTP layer.
#[derive(Debug, Default)]
pub(crate) struct HttpMetrics {
    pub(crate) write_ok: AtomicU64,
    pub(crate) write_rejected: AtomicU64,
    pub(crate) write_overloaded: AtomicU64,
    pub(crate) write_failed: AtomicU64,
    pub(crate) body_bytes: AtomicU64,
}

impl HttpMetrics {
    pub(crate) fn count(&self, status: u16, bytes: usize) {
        let c = match status {
            200..=299 => &self.write_ok,
            503 | 429 => &self.write_overloaded,
            400..=499 => &self.write_rejected,
            _ => &self.write_failed,
        };
        c.fetch_add(1, Ordering::Relaxed);
        self.body_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

/// `queries` is (started, failed, running) of the query engine.
pub(crate) fn render_metrics(
    s: &EngineStats,
    h: &HttpMetrics,
    queries: (u64, u64, usize),
    quic: &crate::quic::QuicStats,
) -> String {
    let mut out = String::with_capacity(2048);
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    metric(
        "vigil_rows_written_total",
        "counter",
        "Rows acknowledged since start.",
        s.rows_written,
    );
    metric(
        "vigil_writes_total",
        "counter",
        "Write requests committed since start.",
        s.writes,
    );
    metric(
        "vigil_flushes_total",
        "counter",
        "Buffer flushes to Parquet.",
        s.flushes,
    );
    metric(
        "vigil_flush_errors_total",
        "counter",
        "Failed flush attempts.",
        s.flush_errors,
    );
    metric(
        "vigil_parquet_files_written_total",
        "counter",
        "Parquet files written.",
        s.parquet_files_written,
    );
    metric(
        "vigil_event_duplicates_total",
        "counter",
        "Events not stored because an equal one was stored within the dedup window.",
        s.event_duplicates,
    );
    metric(
        "vigil_dedup_keys",
        "gauge",
        "Dedup keys held in memory.",
        s.dedup_keys as u64,
    );
    metric(
        "vigil_event_clusters",
        "gauge",
        "Message templates (clusters) learned by the grouper.",
        s.event_clusters as u64,
    );
    metric(
        "vigil_parquet_files",
        "gauge",
        "Parquet files in the manifest.",
        s.parquet_files as u64,
    );
    metric(
        "vigil_buffer_rows",
        "gauge",
        "Rows in the in-memory buffer.",
        s.buffered_rows as u64,
    );
    metric(
        "vigil_buffer_bytes",
        "gauge",
        "Bytes in the in-memory buffer.",
        s.buffered_bytes as u64,
    );
    metric(
        "vigil_flushing_bytes",
        "gauge",
        "Bytes being flushed.",
        s.flushing_bytes as u64,
    );
    metric(
        "vigil_buffer_limit_bytes",
        "gauge",
        "Buffer size past which writes are refused.",
        s.max_buffer_bytes as u64,
    );
    metric(
        "vigil_decode_slots",
        "gauge",
        "Writes that may be decoded at once (--decoders).",
        s.decode_slots as u64,
    );
    metric(
        "vigil_decode_slots_busy",
        "gauge",
        "Decode slots taken by writes being decoded or by a flush.",
        s.decode_slots_busy as u64,
    );
    metric(
        "vigil_wal_durable_lsn",
        "gauge",
        "Highest durable WAL sequence number.",
        s.wal_durable_lsn,
    );
    metric(
        "vigil_checkpoint_lsn",
        "gauge",
        "WAL sequence number persisted in Parquet.",
        s.checkpoint_lsn,
    );
    metric(
        "vigil_wal_poisoned",
        "gauge",
        "1 when the WAL refuses writes after an I/O failure.",
        u64::from(s.wal_poisoned.is_some()),
    );
    let q = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    metric(
        "vigil_quic_connections",
        "gauge",
        "Agents connected over QUIC now.",
        quic.connections.load(Ordering::Relaxed) as u64,
    );
    metric(
        "vigil_quic_connections_total",
        "counter",
        "QUIC connections accepted since start.",
        q(&quic.connections_total),
    );
    metric(
        "vigil_quic_refused_auth_total",
        "counter",
        "QUIC handshakes refused for a bad token.",
        q(&quic.refused_auth),
    );
    metric(
        "vigil_quic_batches_total",
        "counter",
        "Batches received over QUIC.",
        q(&quic.batches),
    );
    metric(
        "vigil_quic_rows_total",
        "counter",
        "Rows stored from QUIC batches.",
        q(&quic.rows),
    );
    metric(
        "vigil_quic_duplicate_batches_total",
        "counter",
        "Resent QUIC batches acknowledged without storing them again.",
        q(&quic.duplicates),
    );
    metric(
        "vigil_quic_rejected_batches_total",
        "counter",
        "QUIC batches rejected for bad data.",
        q(&quic.rejected),
    );
    metric(
        "vigil_quic_busy_total",
        "counter",
        "QUIC batches refused because the write buffer was full.",
        q(&quic.busy),
    );
    metric(
        "vigil_quic_batch_bytes",
        "gauge",
        "Bytes of QUIC batches read and not yet decoded (at most the batch memory, 128 MiB).",
        q(&quic.batch_bytes),
    );
    metric(
        "vigil_queries_total",
        "counter",
        "SQL queries started.",
        queries.0,
    );
    metric(
        "vigil_query_errors_total",
        "counter",
        "SQL queries that failed.",
        queries.1,
    );
    metric(
        "vigil_queries_running",
        "gauge",
        "SQL queries running now.",
        queries.2 as u64,
    );
    metric(
        "vigil_http_write_body_bytes_total",
        "counter",
        "Write request body bytes received.",
        h.body_bytes.load(Ordering::Relaxed),
    );
    let _ = writeln!(
        out,
        "# HELP vigil_http_writes_total Write requests by outcome.\n# TYPE vigil_http_writes_total counter"
    );
    for (outcome, c) in [
        ("ok", &h.write_ok),
        ("rejected", &h.write_rejected),
        ("overloaded", &h.write_overloaded),
        ("failed", &h.write_failed),
    ] {
        let _ = writeln!(
            out,
            "vigil_http_writes_total{{outcome=\"{outcome}\"}} {}",
            c.load(Ordering::Relaxed)
        );
    }
    out
}
