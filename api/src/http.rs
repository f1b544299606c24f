//! The router, its shared state, `/health`.

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{delete, get, patch, post};
use tokio::sync::Semaphore;
use vigil_engine::Engine;
use vigil_query::QueryEngine;

use crate::auth::Authenticator;
use crate::metrics::{HttpMetrics, render_metrics};
use crate::quic::QuicStats;
use crate::{analytics, query, store, write};

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
    pub(crate) auth: Arc<Authenticator>,
}

impl AppState {
    pub fn new(
        engine: Arc<Engine>,
        query: Arc<QueryEngine>,
        auth: Arc<Authenticator>,
        config: HttpConfig,
    ) -> Arc<Self> {
        Self::with_quic(engine, query, auth, config, Arc::default())
    }

    /// [`AppState::new`], with the QUIC listener's counters for `/metrics`.
    pub fn with_quic(
        engine: Arc<Engine>,
        query: Arc<QueryEngine>,
        auth: Arc<Authenticator>,
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
            auth,
        })
    }

    /// The side store.
    pub(crate) fn db(&self) -> &vigil_relational::Db {
        self.auth.db()
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
        .route("/api/v1/openapi.json", get(openapi))
        .route(
            "/api/v1/systems",
            get(store::systems).post(store::report_system),
        )
        .route(
            "/api/v1/systems/{id}",
            get(store::system)
                .patch(store::patch_system)
                .delete(store::delete_system),
        )
        .route(
            "/api/v1/systems/{id}/alert-settings",
            get(store::system_settings).put(store::set_system_settings),
        )
        .route(
            "/api/v1/alert-settings",
            get(store::global_settings).put(store::set_global_settings),
        )
        .route(
            "/api/v1/alerts",
            get(store::alerts).post(store::raise_alert),
        )
        .route("/api/v1/alerts/{id}", get(store::alert))
        .route(
            "/api/v1/alerts/{id}/acknowledge",
            post(store::acknowledge_alert),
        )
        .route("/api/v1/alerts/{id}/resolve", post(store::resolve_alert))
        .route("/api/v1/alerts/{id}/ticket", post(store::alert_ticket))
        .route("/api/v1/cases", get(store::cases).post(store::create_case))
        .route(
            "/api/v1/cases/{id}",
            get(store::case).patch(store::patch_case),
        )
        .route(
            "/api/v1/cases/{id}/events",
            get(store::case_events).post(store::link_event),
        )
        .route(
            "/api/v1/cases/{id}/events/{event_id}",
            delete(store::unlink_event),
        )
        .route(
            "/api/v1/cases/{id}/notes",
            get(store::case_notes).post(store::add_case_note),
        )
        .route("/api/v1/cases/{id}/tags", post(store::tag_case))
        .route(
            "/api/v1/tickets",
            get(store::tickets).post(store::create_ticket),
        )
        .route(
            "/api/v1/tickets/{id}",
            get(store::ticket).patch(store::patch_ticket),
        )
        .route(
            "/api/v1/tickets/{id}/comments",
            get(store::comments).post(store::add_comment),
        )
        .route("/api/v1/comments/{id}", patch(store::edit_comment))
        .route("/api/v1/comments/{id}/history", get(store::comment_history))
        .route("/api/v1/links", get(store::links).post(store::add_link))
        .route("/api/v1/links/{id}", delete(store::remove_link))
        .route("/api/v1/audit", get(store::audit))
        .route("/api/v1/audit/verify", get(store::verify_audit))
        .route("/api/v1/users", get(store::users).post(store::create_user))
        .route("/api/v1/users/{id}", patch(store::patch_user))
        .route(
            "/api/v1/tokens",
            get(store::tokens).post(store::create_token),
        )
        .route("/api/v1/tokens/{id}", delete(store::revoke_token))
        // Every route: a token whose role the route admits (deny by default).
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            crate::auth::require,
        ))
        // Bodies are limited by the handlers themselves (before and after gzip).
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

async fn openapi() -> Json<serde_json::Value> {
    Json(crate::routes::openapi())
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
