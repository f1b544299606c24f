//! `POST /api/v1/query` and `GET /api/v1/query`: SQL in, rows out in the format asked
//! for, streamed batch by batch.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Limited};
use parquet::arrow::ArrowWriter;
use serde::Deserialize;
use vigil_query::QueryError;

use crate::error::ApiError;
use crate::http::AppState;

/// Largest SQL request body.
const MAX_SQL_BYTES: usize = 1024 * 1024;

/// Result formats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Format {
    /// A JSON array of row objects.
    #[default]
    Json,
    /// One JSON object per line.
    Ndjson,
    /// CSV with a header line.
    Csv,
    /// An Arrow IPC stream.
    Arrow,
    /// A Parquet file.
    Parquet,
}

impl Format {
    fn parse(s: &str) -> Result<Self, ApiError> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "json" => Self::Json,
            "ndjson" | "jsonl" => Self::Ndjson,
            "csv" => Self::Csv,
            "arrow" => Self::Arrow,
            "parquet" => Self::Parquet,
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown format '{other}': expected json, ndjson, csv, arrow or parquet"
                )));
            }
        })
    }

    fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::Ndjson => "application/x-ndjson",
            Self::Csv => "text/csv; charset=utf-8",
            Self::Arrow => "application/vnd.apache.arrow.stream",
            Self::Parquet => "application/vnd.apache.parquet",
        }
    }
}

/// `GET` parameters, and the `POST` JSON body.
#[derive(Debug, Deserialize)]
pub(crate) struct QueryParams {
    sql: Option<String>,
    format: Option<String>,
}

pub(crate) async fn query_get(
    State(state): State<Arc<AppState>>,
    Query(params): Query<QueryParams>,
) -> Response {
    let result = async {
        let sql = params
            .sql
            .ok_or_else(|| ApiError::bad_request("missing query parameter 'sql'"))?;
        let format = params.format.as_deref().map(Format::parse).transpose()?;
        run(&state, &sql, format.unwrap_or_default()).await
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// The body is `{"sql": "...", "format": "..."}` (`Content-Type: application/json`), or
/// the SQL text itself with the format in `?format=`.
pub(crate) async fn query_post(
    State(state): State<Arc<AppState>>,
    Query(params): Query<QueryParams>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        let bytes = Limited::new(body, MAX_SQL_BYTES)
            .collect()
            .await
            .map_err(|_| ApiError::too_large(MAX_SQL_BYTES))?
            .to_bytes();
        let is_json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        let (sql, format) = if is_json {
            let req: QueryParams = serde_json::from_slice(&bytes)
                .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
            (req.sql, req.format.or(params.format))
        } else {
            let text = String::from_utf8(bytes.to_vec())
                .map_err(|_| ApiError::bad_request("SQL is not valid UTF-8"))?;
            (Some(text), params.format)
        };
        let sql = sql
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| ApiError::bad_request("missing 'sql'"))?;
        let format = format.as_deref().map(Format::parse).transpose()?;
        run(&state, &sql, format.unwrap_or_default()).await
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        let (status, code) = match &e {
            QueryError::Sql(_) => (StatusCode::BAD_REQUEST, "sql_error"),
            QueryError::ReadOnly(_) => (StatusCode::FORBIDDEN, "read_only"),
            QueryError::ResourcesExhausted(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "resources_exhausted")
            }
            QueryError::TooManyRows(_) => (StatusCode::UNPROCESSABLE_ENTITY, "too_many_rows"),
            QueryError::Timeout(_) => (StatusCode::SERVICE_UNAVAILABLE, "timeout"),
            QueryError::Internal(_) => {
                tracing::error!(error = %e, "query failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal error")
            }
        };
        ApiError::new(status, code, e.to_string())
    }
}

pub(crate) async fn run(state: &AppState, sql: &str, format: Format) -> Result<Response, ApiError> {
    let mut stream = state.query.execute(sql).await.map_err(|e| {
        tracing::debug!(error = %e, "query refused");
        ApiError::from(e)
    })?;
    // Errors before the first rows get a proper status; later ones end the body early.
    let first = stream.next().await.transpose()?;
    let mut encoder = Encoder::new(format, stream.schema())?;
    let mut head = encoder.start()?;
    if let Some(batch) = &first {
        head.extend_from_slice(&encoder.batch(batch)?);
    }
    let body = futures_util::stream::unfold(
        (Some(stream), Some(encoder), Some(head)),
        |(mut stream, mut encoder, mut pending)| async move {
            if let Some(bytes) = pending.take() {
                return Some((Ok(Bytes::from(bytes)), (stream, encoder, None)));
            }
            let (s, enc) = (stream.as_mut()?, encoder.as_mut()?);
            let chunk = match s.next().await {
                Some(Ok(batch)) => enc.batch(&batch),
                Some(Err(e)) => {
                    tracing::warn!(error = %e, rows = s.rows(), "query failed while streaming");
                    return Some((
                        Err(std::io::Error::other(e.to_string())),
                        (None, None, None),
                    ));
                }
                None => {
                    let end = enc.finish();
                    tracing::debug!(
                        rows = s.rows(),
                        elapsed_ms = s.elapsed().as_millis() as u64,
                        "query done"
                    );
                    stream = None;
                    encoder = None;
                    end
                }
            };
            Some(match chunk {
                Ok(bytes) => (Ok(Bytes::from(bytes)), (stream, encoder, None)),
                Err(e) => (Err(std::io::Error::other(e.message)), (None, None, None)),
            })
        },
    );
    let mut resp = Response::new(Body::from_stream(body));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    Ok(resp)
}

/// Turns batches into bytes of one format, incrementally.
enum Encoder {
    Json { first: bool },
    Ndjson,
    Csv { header: bool, schema: SchemaRef },
    Arrow(arrow::ipc::writer::StreamWriter<Vec<u8>>),
    Parquet(Option<ArrowWriter<Vec<u8>>>),
}

fn encode_err(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal error",
        format!("encoding the result failed: {e}"),
    )
}

impl Encoder {
    fn new(format: Format, schema: SchemaRef) -> Result<Self, ApiError> {
        Ok(match format {
            Format::Json => Self::Json { first: true },
            Format::Ndjson => Self::Ndjson,
            Format::Csv => Self::Csv {
                header: true,
                schema: Arc::clone(&schema),
            },
            Format::Arrow => Self::Arrow(
                arrow::ipc::writer::StreamWriter::try_new(Vec::new(), &schema)
                    .map_err(encode_err)?,
            ),
            Format::Parquet => {
                let props = parquet::file::properties::WriterProperties::builder()
                    .set_compression(parquet::basic::Compression::SNAPPY)
                    .build();
                Self::Parquet(Some(
                    ArrowWriter::try_new(Vec::new(), schema, Some(props)).map_err(encode_err)?,
                ))
            }
        })
    }

    fn start(&mut self) -> Result<Vec<u8>, ApiError> {
        Ok(match self {
            Self::Json { .. } => b"[".to_vec(),
            Self::Arrow(w) => std::mem::take(w.get_mut()),
            _ => Vec::new(),
        })
    }

    fn batch(&mut self, batch: &RecordBatch) -> Result<Vec<u8>, ApiError> {
        if batch.num_rows() == 0 {
            return Ok(Vec::new());
        }
        match self {
            Self::Json { first } => {
                let lines = ndjson(batch)?;
                let mut out = Vec::with_capacity(lines.len() + 1);
                for line in lines.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                    if !*first {
                        out.push(b',');
                    }
                    *first = false;
                    out.extend_from_slice(line);
                }
                Ok(out)
            }
            Self::Ndjson => ndjson(batch),
            Self::Csv { header, .. } => {
                let mut w = arrow::csv::WriterBuilder::new()
                    .with_header(*header)
                    .build(Vec::new());
                *header = false;
                w.write(batch).map_err(encode_err)?;
                Ok(w.into_inner())
            }
            Self::Arrow(w) => {
                w.write(batch).map_err(encode_err)?;
                Ok(std::mem::take(w.get_mut()))
            }
            Self::Parquet(w) => {
                let Some(w) = w.as_mut() else {
                    return Ok(Vec::new());
                };
                w.write(batch).map_err(encode_err)?;
                if w.in_progress_size() > 16 * 1024 * 1024 {
                    w.flush().map_err(encode_err)?;
                }
                Ok(std::mem::take(w.inner_mut()))
            }
        }
    }

    fn finish(&mut self) -> Result<Vec<u8>, ApiError> {
        match self {
            Self::Json { .. } => Ok(b"]".to_vec()),
            Self::Ndjson => Ok(Vec::new()),
            // A result without rows still has its header line.
            Self::Csv {
                header: true,
                schema,
            } => {
                let mut w = arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(Vec::new());
                w.write(&RecordBatch::new_empty(Arc::clone(schema)))
                    .map_err(encode_err)?;
                Ok(w.into_inner())
            }
            Self::Csv { .. } => Ok(Vec::new()),
            Self::Arrow(w) => {
                w.finish().map_err(encode_err)?;
                Ok(std::mem::take(w.get_mut()))
            }
            Self::Parquet(w) => match w.take() {
                Some(mut w) => {
                    w.finish().map_err(encode_err)?;
                    Ok(std::mem::take(w.inner_mut()))
                }
                None => Ok(Vec::new()),
            },
        }
    }
}

fn ndjson(batch: &RecordBatch) -> Result<Vec<u8>, ApiError> {
    let mut w = arrow::json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, arrow::json::writer::LineDelimited>(Vec::new());
    w.write(batch).map_err(encode_err)?;
    w.finish().map_err(encode_err)?;
    Ok(w.into_inner())
}
