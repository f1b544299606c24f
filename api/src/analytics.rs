//! Dashboard routes: `GET /api/v1/recurrence` (what keeps happening) and
//! `GET /api/v1/trends` (min/avg/max/count of a metric field per time bucket).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use vigil_engine::{BUCKET_NANOS, ColumnKind, FieldType, RecurrenceQuery, TIME_COLUMN};
use vigil_query::parse_duration;

use crate::error::ApiError;
use crate::http::AppState;
use crate::query::{Format, run};

const DAY_NANOS: i64 = 86_400_000_000_000;
/// Most buckets one answer may hold.
const MAX_BUCKETS: i64 = 10_000;

fn duration_param(value: Option<&str>, name: &str, default: i64) -> Result<i64, ApiError> {
    let Some(text) = value else {
        return Ok(default);
    };
    let nanos = parse_duration(text).map_err(|e| {
        ApiError::bad_request(format!(
            "'{name}' must be a duration such as 1h or 15m: {e}"
        ))
    })?;
    if nanos <= 0 {
        return Err(ApiError::bad_request(format!("'{name}' must be positive")));
    }
    Ok(nanos)
}

fn rfc3339(nanos: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(nanos)
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// Parameters of `GET /api/v1/recurrence`.
#[derive(Debug, Deserialize)]
pub(crate) struct RecurrenceParams {
    since: Option<String>,
    bucket: Option<String>,
    limit: Option<usize>,
    status: Option<String>,
    escalation: Option<f64>,
}

/// `since` (default 24h), `bucket` (default since/24, at least a minute), `limit`
/// (default 50), `status` (only fingerprints with this status), `escalation` (default 2).
pub(crate) async fn recurrence(
    State(state): State<Arc<AppState>>,
    Query(p): Query<RecurrenceParams>,
) -> Result<Response, ApiError> {
    let since = duration_param(p.since.as_deref(), "since", DAY_NANOS)?;
    let bucket = duration_param(
        p.bucket.as_deref(),
        "bucket",
        (since / 24).max(BUCKET_NANOS),
    )?;
    if bucket > since || since / bucket > MAX_BUCKETS {
        return Err(ApiError::bad_request(format!(
            "'bucket' must be at most 'since' and give at most {MAX_BUCKETS} buckets"
        )));
    }
    let escalation = p.escalation.unwrap_or(2.0);
    if !(escalation.is_finite() && escalation > 0.0) {
        return Err(ApiError::bad_request(
            "'escalation' must be a positive number",
        ));
    }
    if let Some(s) = &p.status
        && !["new", "escalating", "ongoing", "quiet"].contains(&s.as_str())
    {
        return Err(ApiError::bad_request(format!(
            "unknown status '{s}': expected new, escalating, ongoing or quiet"
        )));
    }
    let limit = p.limit.unwrap_or(50).min(10_000);
    let now = state.engine.now_nanos();
    let query = RecurrenceQuery {
        now,
        since,
        bucket,
        escalation,
    };
    let engine = Arc::clone(&state.engine);
    let rows = tokio::task::spawn_blocking(move || engine.recurrence(&query))
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error",
                e.to_string(),
            )
        })?;
    let fingerprints: Vec<serde_json::Value> = rows
        .iter()
        .filter(|r| p.status.as_deref().is_none_or(|s| r.status.as_str() == s))
        .take(limit)
        .map(|r| {
            serde_json::json!({
                "fingerprint": format!("{:016x}", r.fingerprint),
                "template": r.template,
                "sample_message": r.sample,
                "count": r.count,
                "rate": r.rate,
                "previous_count": r.previous_count,
                "status": r.status.as_str(),
                "first_seen": rfc3339(r.first_seen),
                "last_seen": rfc3339(r.last_seen),
                "services": r.services,
                "systems": r.systems,
                "buckets": r.buckets,
            })
        })
        .collect();
    Ok(Json(serde_json::json!({
        "now": rfc3339(now),
        "since_seconds": since / 1_000_000_000,
        "bucket_seconds": bucket / 1_000_000_000,
        "fingerprints": fingerprints,
    }))
    .into_response())
}

/// Parameters of `GET /api/v1/trends`.
#[derive(Debug, Deserialize)]
pub(crate) struct TrendParams {
    table: Option<String>,
    field: Option<String>,
    bucket: Option<String>,
    since: Option<String>,
    by: Option<String>,
}

/// `table` and `field` (a numeric field), `bucket` (default 1m, whole seconds), `since`
/// (default 1h), `by` (a tag, optional): rows of bucket start, the tag's value, and
/// min/avg/max/count of the field, oldest first.
pub(crate) async fn trends(
    State(state): State<Arc<AppState>>,
    Query(p): Query<TrendParams>,
) -> Result<Response, ApiError> {
    let table = p
        .table
        .ok_or_else(|| ApiError::bad_request("missing query parameter 'table'"))?;
    let field = p
        .field
        .ok_or_else(|| ApiError::bad_request("missing query parameter 'field'"))?;
    let schema = state.engine.table_schema(&table).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no table '{table}'"),
        )
    })?;
    match schema.column(&field).map(|c| &c.kind) {
        Some(ColumnKind::Field(FieldType::Float | FieldType::Integer | FieldType::Unsigned)) => {}
        Some(_) => {
            return Err(ApiError::bad_request(format!(
                "'{field}' of table '{table}' is not a numeric field"
            )));
        }
        None => {
            return Err(ApiError::bad_request(format!(
                "table '{table}' has no column '{field}'"
            )));
        }
    }
    if let Some(by) = &p.by
        && !matches!(schema.column(by).map(|c| &c.kind), Some(ColumnKind::Tag))
    {
        return Err(ApiError::bad_request(format!(
            "'by' must be a tag of table '{table}'; '{by}' is not"
        )));
    }
    let since = duration_param(p.since.as_deref(), "since", 3_600_000_000_000)?;
    let bucket = duration_param(p.bucket.as_deref(), "bucket", BUCKET_NANOS)?;
    if bucket % 1_000_000_000 != 0 || bucket > since || since / bucket > MAX_BUCKETS {
        return Err(ApiError::bad_request(format!(
            "'bucket' must be whole seconds, at most 'since', and give at most {MAX_BUCKETS} buckets"
        )));
    }
    let now = state.engine.now_nanos();
    let sql = trend_sql(&table, &field, p.by.as_deref(), bucket, now - since, now);
    run(&state, &sql, Format::Json).await
}

fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn trend_sql(
    table: &str,
    field: &str,
    by: Option<&str>,
    bucket: i64,
    from: i64,
    to: i64,
) -> String {
    let f = ident(field);
    let (by_select, by_group) = match by {
        Some(tag) => (format!(", {} AS {}", ident(tag), ident(tag)), ", 2"),
        None => (String::new(), ""),
    };
    format!(
        "SELECT date_bin(INTERVAL '{secs} seconds', {time}, TIMESTAMP '1970-01-01T00:00:00Z') AS bucket\
         {by_select}, min({f}) AS min, avg({f}) AS avg, max({f}) AS max, count({f}) AS count \
         FROM {table} WHERE {time} >= TIMESTAMP '{from}' AND {time} < TIMESTAMP '{to}' \
         GROUP BY 1{by_group} ORDER BY 1{by_group}",
        secs = bucket / 1_000_000_000,
        time = ident(TIME_COLUMN),
        table = ident(table),
        from = rfc3339(from),
        to = rfc3339(to),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trend_sql_quotes_names() {
        let sql = trend_sql(
            "c\"pu",
            "usage",
            Some("host"),
            60_000_000_000,
            0,
            3_600_000_000_000,
        );
        assert!(sql.contains("FROM \"c\"\"pu\""), "{sql}");
        assert!(sql.contains("INTERVAL '60 seconds'"), "{sql}");
        assert!(sql.contains("GROUP BY 1, 2"), "{sql}");
        assert!(sql.contains("TIMESTAMP '1970-01-01T01:00:00Z'"), "{sql}");
    }
}
