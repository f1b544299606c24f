//! The router, its shared state, `/health`.

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use tokio::sync::Semaphore;
use vigil_engine::Engine;
use vigil_query::QueryEngine;

use crate::metrics::{HttpMetrics, render_metrics};
use crate::quic::QuicStats;
use crate::{analytics, query, write};

/// Settings of the HTTP server.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Largest request body, after gzip decompression; default 64 MiB.
    pub max_body_bytes: usize,
    /// Request bodies held in memory at once, summed; default 256 MiB. Past it, writes get
    /// 503 with `Retry-After`.
    pub max_inflight_bytes: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 * 1024 * 1024,
            max_inflight_bytes: 256 * 1024 * 1024,
        }
    }
}

/// State shared by the handlers.
pub struct AppState {
    pub(crate) engine: Arc<Engine>,
    pub(crate) query: Arc<QueryEngine>,
    pub(crate) config: HttpConfig,
    /// One permit per KiB of request body in flight.
    pub(crate) inflight: Semaphore,
    pub(crate) metrics: HttpMetrics,
    pub(crate) quic: Arc<QuicStats>,
}

impl AppState {
    pub fn new(engine: Arc<Engine>, query: Arc<QueryEngine>, config: HttpConfig) -> Arc<Self> {
        Self::with_quic(engine, query, config, Arc::default())
    }

    /// [`AppState::new`], with the QUIC listener's counters for `/metrics`.
    pub fn with_quic(
        engine: Arc<Engine>,
        query: Arc<QueryEngine>,
        config: HttpConfig,
        quic: Arc<QuicStats>,
    ) -> Arc<Self> {
        let permits = (config.max_inflight_bytes / 1024).max(1);
        Arc::new(Self {
            engine,
            query,
            inflight: Semaphore::new(permits),
            config,
            metrics: HttpMetrics::default(),
            quic,
        })
    }
}

/// All HTTP routes.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/api/v1/write", post(write::write_v1_native))
        .route("/write", post(write::write_influx))
        .route("/api/v2/write", post(write::write_influx))
        .route("/api/v1/events", post(write::write_events))
        .route(
            "/api/v1/query",
            get(query::query_get).post(query::query_post),
        )
        .route("/api/v1/recurrence", get(analytics::recurrence))
        .route("/api/v1/trends", get(analytics::trends))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        // Bodies are limited by the handlers themselves (before and after gzip).
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

async fn health(State(state): State<Arc<AppState>>) -> Response {
    let stats = state.engine.stats();
    let (status, text) = match &stats.wal_poisoned {
        Some(_) => (StatusCode::SERVICE_UNAVAILABLE, "fail"),
        None => (StatusCode::OK, "pass"),
    };
    let body = serde_json::json!({
        "status": text,
        "version": env!("CARGO_PKG_VERSION"),
        "wal_poisoned": stats.wal_poisoned,
        "last_flush_error": stats.last_flush_error,
        "buffered_rows": stats.buffered_rows,
        "buffered_bytes": stats.buffered_bytes,
        "checkpoint_lsn": stats.checkpoint_lsn,
        "wal_durable_lsn": stats.wal_durable_lsn,
    });
    (status, Json(body)).into_response()
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        render_metrics(
            &state.engine.stats(),
            &state.metrics,
            state.query.stats(),
            &state.quic,
        ),
    )
}
