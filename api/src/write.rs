//! Write handlers: line protocol (native and InfluxDB-compatible) and events.

use std::borrow::Cow;
use std::io::Read;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{Buf, Bytes};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::Deserialize;
use vigil_engine::{Precision, WriteSummary};

use crate::error::ApiError;
use crate::http::AppState;

/// Query parameters of `POST /api/v1/write`.
#[derive(Debug, Deserialize)]
pub(crate) struct NativeParams {
    precision: Option<String>,
}

/// Query parameters of InfluxDB 1.x `POST /write` (`db`, `rp`, `precision`, `u`, `p`,
/// `consistency`) and 2.x `POST /api/v2/write` (`org`, `orgID`, `bucket`, `precision`).
/// Vigil has one namespace: only `precision` changes anything; `u`/`p` are checked once
/// the side store's tokens exist.
#[derive(Debug, Deserialize)]
#[allow(dead_code)]
pub(crate) struct InfluxParams {
    db: Option<String>,
    rp: Option<String>,
    u: Option<String>,
    p: Option<String>,
    consistency: Option<String>,
    org: Option<String>,
    #[serde(rename = "orgID")]
    org_id: Option<String>,
    bucket: Option<String>,
    precision: Option<String>,
}

#[derive(Debug, Clone, Copy)]
enum Payload {
    Lines(Precision),
    Events,
}

fn precision(p: Option<&str>) -> Result<Precision, ApiError> {
    match p {
        None | Some("") => Ok(Precision::Nanoseconds),
        Some(s) => Precision::parse(s).ok_or_else(|| {
            ApiError::bad_request(format!(
                "invalid precision '{s}': expected one of ns, us, ms, s (or n, u, m, h)"
            ))
        }),
    }
}

pub(crate) async fn write_v1_native(
    State(state): State<Arc<AppState>>,
    Query(q): Query<NativeParams>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let p = precision(q.precision.as_deref())?;
    let summary = ingest(&state, &headers, body, Payload::Lines(p)).await?;
    Ok(Json(serde_json::json!({ "rows": summary.rows })).into_response())
}

/// `POST /write` and `POST /api/v2/write`: 204 on success, as InfluxDB answers.
pub(crate) async fn write_influx(
    State(state): State<Arc<AppState>>,
    Query(q): Query<InfluxParams>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let p = precision(q.precision.as_deref())?;
    ingest(&state, &headers, body, Payload::Lines(p)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(crate) async fn write_events(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let summary = ingest(&state, &headers, body, Payload::Events).await?;
    let body = serde_json::json!({ "accepted": summary.rows, "duplicates": summary.duplicates });
    Ok(Json(body).into_response())
}

/// Reads, decompresses, decodes and commits a write, counting its outcome.
async fn ingest(
    state: &Arc<AppState>,
    headers: &HeaderMap,
    body: Body,
    payload: Payload,
) -> Result<WriteSummary, ApiError> {
    let mut bytes_read = 0;
    let result = ingest_inner(state, headers, body, payload, &mut bytes_read).await;
    let status = match &result {
        Ok(_) => 204,
        Err(e) => e.status.as_u16(),
    };
    state.metrics.count(status, bytes_read);
    result
}

async fn ingest_inner(
    state: &Arc<AppState>,
    headers: &HeaderMap,
    body: Body,
    payload: Payload,
    bytes_read: &mut usize,
) -> Result<WriteSummary, ApiError> {
    let limit = state.config.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::too_large(limit));
    }
    let gzip = match headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?"))
    {
        None | Some("identity") => false,
        Some(v) if v.eq_ignore_ascii_case("gzip") => true,
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported encoding",
                format!("Content-Encoding '{other}' is not supported; use gzip or none"),
            ));
        }
    };
    // Hold memory for the body (and its decompressed form) before reading it.
    let kib = declared.unwrap_or(limit).min(limit) * if gzip { 2 } else { 1 } / 1024 + 1;
    let permits = u32::try_from(kib).unwrap_or(u32::MAX);
    let _permit = state
        .inflight
        .try_acquire_many(permits)
        .map_err(|_| ApiError::overloaded("too many request bytes in flight; retry later"))?;
    let raw = read_body(body, limit).await?;
    *bytes_read = raw.iter().map(Bytes::len).sum();
    let engine = Arc::clone(&state.engine);
    let slot = engine.decode_slot().await?;
    let prepared = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let raw = if gzip {
            vec![Bytes::from(gunzip(&joined(&raw), limit)?)]
        } else {
            raw
        };
        match payload {
            // Decoded where the body's chunks lie, without joining them.
            Payload::Lines(p) => engine.prepare_line_protocol_chunks(&raw, p),
            Payload::Events => engine.prepare_events(&joined(&raw)),
        }
        .map_err(ApiError::from)
    })
    .await
    .map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error",
            format!("decoder task failed: {e}"),
        )
    })??;
    Ok(state.engine.commit(prepared).await?)
}

/// `chunks` as one buffer: borrowed when there is one chunk.
fn joined(chunks: &[Bytes]) -> Cow<'_, [u8]> {
    match chunks {
        [one] => Cow::Borrowed(one),
        _ => Cow::Owned(chunks.concat()),
    }
}

/// A body whose frames average less than this is joined into one buffer.
const MIN_AVERAGE_CHUNK: usize = 4096;

/// The body, in the chunks it arrived in.
async fn read_body(body: Body, limit: usize) -> Result<Vec<Bytes>, ApiError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => {
            let mut buf = collected.aggregate();
            let len = buf.remaining();
            let mut chunks = Vec::new();
            while buf.has_remaining() {
                // The front chunk whole: taken without a copy.
                let front = buf.chunk().len();
                chunks.push(buf.copy_to_bytes(front));
            }
            // Many small frames (a body sent in tiny chunks) are joined, so that the
            // pieces to decode stay few and the frames' buffers are let go.
            if chunks.len() > 1 + len / MIN_AVERAGE_CHUNK {
                chunks = vec![Bytes::from(chunks.concat())];
            }
            Ok(chunks)
        }
        Err(e) if e.is::<LengthLimitError>() => Err(ApiError::too_large(limit)),
        Err(e) => Err(ApiError::bad_request(format!(
            "could not read the request body: {e}"
        ))),
    }
}

fn gunzip(raw: &[u8], limit: usize) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::with_capacity(raw.len() * 4);
    let mut decoder = flate2::read::GzDecoder::new(raw).take(limit as u64 + 1);
    decoder
        .read_to_end(&mut out)
        .map_err(|e| ApiError::bad_request(format!("invalid gzip body: {e}")))?;
    if out.len() > limit {
        return Err(ApiError::too_large(limit));
    }
    Ok(out)
}
