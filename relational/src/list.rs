//! Lists with filters on indexed columns, a choice of sort order, and keyset ("cursor")
//! pagination: a page ends with an opaque cursor naming the sort value and id of its last
//! row, and the next page starts strictly after it, so pages neither skip nor repeat rows
//! when rows are added meanwhile.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;

use crate::audit::hex;
use crate::error::{Error, Result};
use crate::{Db, dispatch};

/// Rows per page unless asked; the most a page holds.
pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 1000;

/// One page of a list.
#[derive(Debug, Clone, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// What a list request asks: filters by parameter name, sort (`name` ascending, `-name`
/// descending), cursor and limit.
#[derive(Debug, Clone, Default)]
pub struct ListParams {
    pub filters: BTreeMap<String, String>,
    pub sort: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<i64>,
}

impl ListParams {
    /// Splits query parameters into `sort`, `cursor`, `limit` and filters.
    pub fn from_query(mut params: BTreeMap<String, String>) -> Result<Self> {
        let limit = match params.remove("limit") {
            None => None,
            Some(l) => Some(
                l.parse::<i64>()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| {
                        Error::invalid("limit", format!("'{l}': expected 1 to {MAX_LIMIT}"))
                    })?,
            ),
        };
        Ok(Self {
            sort: params.remove("sort"),
            cursor: params.remove("cursor"),
            limit,
            filters: params,
        })
    }

    pub fn filter(mut self, name: &str, value: impl ToString) -> Self {
        self.filters.insert(name.to_string(), value.to_string());
        self
    }
}

/// How a filter compares its column.
#[derive(Debug, Clone, Copy)]
pub enum FilterKind {
    /// Equal to an integer.
    Int,
    /// Equal to text; when `choices` is not empty, one of them.
    Text(&'static [&'static str]),
    /// `true` or `false`; `any` lifts the filter (for filters with a default).
    Bool,
    /// Column at or after an RFC 3339 time.
    Since,
    /// Column before an RFC 3339 time.
    Until,
}

/// A filter: query parameter, SQL column, kind, value used when the parameter is absent.
#[derive(Debug, Clone, Copy)]
pub struct Filter {
    pub param: &'static str,
    pub column: &'static str,
    pub kind: FilterKind,
    pub default: Option<&'static str>,
}

const fn filter(param: &'static str, column: &'static str, kind: FilterKind) -> Filter {
    Filter {
        param,
        column,
        kind,
        default: None,
    }
}

/// The type of a sort key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Int,
    Text,
    Time,
}

/// A sort order: name, SQL expression (non-null), type.
#[derive(Debug, Clone, Copy)]
pub struct Sort {
    pub name: &'static str,
    pub expr: &'static str,
    pub kind: KeyKind,
}

/// A listable table.
#[derive(Debug)]
pub struct Resource {
    pub name: &'static str,
    pub table: &'static str,
    pub columns: &'static str,
    pub filters: &'static [Filter],
    pub sorts: &'static [Sort],
    /// `-created_at` style.
    pub default_sort: &'static str,
}

impl Resource {
    /// The query parameters a list of this resource accepts, for docs and errors.
    pub fn params(&self) -> Vec<&'static str> {
        self.filters.iter().map(|f| f.param).collect()
    }

    pub fn sort_names(&self) -> Vec<&'static str> {
        self.sorts.iter().map(|s| s.name).collect()
    }
}

const ID: Sort = Sort {
    name: "id",
    expr: "id",
    kind: KeyKind::Int,
};
const CREATED: Sort = Sort {
    name: "created_at",
    expr: "created_at",
    kind: KeyKind::Time,
};
const UPDATED: Sort = Sort {
    name: "updated_at",
    expr: "updated_at",
    kind: KeyKind::Time,
};

pub const TICKETS: Resource = Resource {
    name: "tickets",
    table: "tickets",
    columns: crate::tickets::TICKET_COLUMNS,
    filters: &[
        filter(
            "status",
            "status",
            FilterKind::Text(&["open", "in_progress", "waiting", "resolved", "closed"]),
        ),
        filter(
            "status_category",
            "status_category",
            FilterKind::Text(&["todo", "in_progress", "done"]),
        ),
        filter("priority", "priority", FilterKind::Text(&crate::PRIORITIES)),
        filter(
            "issue_type",
            "issue_type",
            FilterKind::Text(&crate::ISSUE_TYPES),
        ),
        filter("assignee_id", "assignee_id", FilterKind::Int),
        filter("reporter_id", "reporter_id", FilterKind::Int),
        filter("system_id", "system_id", FilterKind::Int),
        filter("alert_id", "alert_id", FilterKind::Int),
        filter("project_id", "project_id", FilterKind::Int),
        filter("created_since", "created_at", FilterKind::Since),
        filter("created_until", "created_at", FilterKind::Until),
    ],
    sorts: &[
        ID,
        CREATED,
        UPDATED,
        Sort {
            name: "priority",
            expr: "CAST(CASE priority WHEN 'low' THEN 0 WHEN 'medium' THEN 1 WHEN 'high' THEN 2 \
                   ELSE 3 END AS BIGINT)",
            kind: KeyKind::Int,
        },
    ],
    default_sort: "-id",
};

pub const ALERTS: Resource = Resource {
    name: "alerts",
    table: "alerts",
    columns: crate::systems::ALERT_COLUMNS,
    filters: &[
        filter(
            "status",
            "status",
            FilterKind::Text(&["firing", "acknowledged", "resolved"]),
        ),
        filter(
            "severity",
            "severity",
            FilterKind::Text(&["CRITICAL", "WARNING", "INFO"]),
        ),
        filter("system_id", "system_id", FilterKind::Int),
        filter("alert_type", "alert_type", FilterKind::Text(&[])),
        filter("created_since", "created_at", FilterKind::Since),
        filter("created_until", "created_at", FilterKind::Until),
    ],
    sorts: &[
        ID,
        CREATED,
        Sort {
            name: "severity",
            expr: "CAST(CASE severity WHEN 'INFO' THEN 0 WHEN 'WARNING' THEN 1 ELSE 2 END AS BIGINT)",
            kind: KeyKind::Int,
        },
    ],
    default_sort: "-id",
};

pub const CASES: Resource = Resource {
    name: "cases",
    table: "cases",
    columns: crate::cases::CASE_COLUMNS,
    filters: &[
        filter("status", "status", FilterKind::Text(&crate::CASE_STATUSES)),
        filter("assigned_to", "assigned_to", FilterKind::Int),
        filter("created_by", "created_by", FilterKind::Int),
        filter("created_since", "created_at", FilterKind::Since),
        filter("created_until", "created_at", FilterKind::Until),
    ],
    sorts: &[ID, CREATED, UPDATED],
    default_sort: "-id",
};

pub const SYSTEMS: Resource = Resource {
    name: "systems",
    table: "systems",
    columns: crate::systems::SYSTEM_COLUMNS,
    filters: &[
        Filter {
            param: "is_active",
            column: "is_active",
            kind: FilterKind::Bool,
            default: Some("true"),
        },
        filter("hostname", "hostname", FilterKind::Text(&[])),
    ],
    sorts: &[
        ID,
        CREATED,
        Sort {
            name: "hostname",
            expr: "hostname",
            kind: KeyKind::Text,
        },
    ],
    default_sort: "hostname",
};

pub const AUDIT: Resource = Resource {
    name: "audit",
    table: "audit_log",
    columns: crate::audit::AUDIT_COLUMNS,
    filters: &[
        filter("actor", "actor", FilterKind::Text(&[])),
        filter("action", "action", FilterKind::Text(&[])),
        filter("target_type", "target_type", FilterKind::Text(&[])),
        filter("target_id", "target_id", FilterKind::Text(&[])),
        filter(
            "outcome",
            "outcome",
            FilterKind::Text(&["allowed", "denied"]),
        ),
        filter("since", "created_at", FilterKind::Since),
        filter("until", "created_at", FilterKind::Until),
    ],
    sorts: &[ID],
    default_sort: "-id",
};

/// A row type a list can build on either backend.
pub trait FromRows: Sized {
    fn from_sqlite(row: &SqliteRow) -> Result<Self>;
    fn from_postgres(row: &PgRow) -> Result<Self>;
}

/// Implements [`FromRows`] with a `from_row!`-style macro that works on both row types.
#[macro_export]
#[doc(hidden)]
macro_rules! from_rows {
    ($ty:ty, $mac:ident) => {
        impl $crate::list::FromRows for $ty {
            fn from_sqlite(r: &sqlx::sqlite::SqliteRow) -> $crate::Result<Self> {
                Ok($mac!(r))
            }
            fn from_postgres(r: &sqlx::postgres::PgRow) -> $crate::Result<Self> {
                Ok($mac!(r))
            }
        }
    };
}

/// A bound value.
#[derive(Debug, Clone)]
enum Bind {
    Int(i64),
    Text(String),
    Bool(bool),
    Time(DateTime<Utc>),
}

fn parse_time(field: &'static str, v: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(v)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            Error::invalid(
                field,
                format!("'{v}' is not an RFC 3339 time ({e}); e.g. 2026-11-23T06:00:00Z"),
            )
        })
}

fn bad_cursor() -> Error {
    Error::invalid(
        "cursor",
        "not a cursor of this list and sort order; start again without it",
    )
}

/// `[sort, value, id]` as JSON, hex-encoded.
fn encode_cursor(sort: &str, value: &Value, id: i64) -> String {
    hex(json!([sort, value, id]).to_string().as_bytes())
}

fn decode_cursor(cursor: &str, sort: &str, kind: KeyKind) -> Result<(Bind, i64)> {
    let bytes = (0..cursor.len())
        .step_by(2)
        .map(|i| {
            cursor
                .get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(bad_cursor)?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|_| bad_cursor())?;
    let (Some(s), Some(value), Some(id)) = (
        v.get(0).and_then(Value::as_str),
        v.get(1),
        v.get(2).and_then(Value::as_i64),
    ) else {
        return Err(bad_cursor());
    };
    if s != sort {
        return Err(bad_cursor());
    }
    let value = match kind {
        KeyKind::Int => Bind::Int(value.as_i64().ok_or_else(bad_cursor)?),
        KeyKind::Text => Bind::Text(value.as_str().ok_or_else(bad_cursor)?.to_string()),
        KeyKind::Time => Bind::Time(
            value
                .as_str()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .ok_or_else(bad_cursor)?
                .with_timezone(&Utc),
        ),
    };
    Ok((value, id))
}

/// The SQL of one page and its bound values, in placeholder order.
struct Plan {
    sql: String,
    binds: Vec<Bind>,
    sort: Sort,
    sort_name: String,
    limit: i64,
}

fn plan(resource: &Resource, params: &ListParams, extra_where: Option<&str>) -> Result<Plan> {
    for name in params.filters.keys() {
        if !resource.filters.iter().any(|f| f.param == name) {
            let known = resource.params();
            return Err(Error::Invalid {
                field: "query",
                reason: format!(
                    "unknown parameter '{name}' for {}; filters: {}; also sort, cursor, limit",
                    resource.name,
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            });
        }
    }
    let mut binds = Vec::new();
    let mut conds: Vec<String> = extra_where.map(str::to_string).into_iter().collect();
    for f in resource.filters {
        let Some(value) = params
            .filters
            .get(f.param)
            .map(String::as_str)
            .or(f.default)
        else {
            continue;
        };
        let field = f.param;
        let (op, bind) = match f.kind {
            FilterKind::Int => (
                "=",
                Bind::Int(value.parse().map_err(|_| Error::Invalid {
                    field: "query",
                    reason: format!("{field}: '{value}' is not an integer"),
                })?),
            ),
            FilterKind::Text(choices) => {
                if !choices.is_empty() && !choices.contains(&value) {
                    return Err(Error::Invalid {
                        field: "query",
                        reason: format!(
                            "{field}: '{value}': expected one of {}",
                            choices.join(", ")
                        ),
                    });
                }
                ("=", Bind::Text(value.to_string()))
            }
            FilterKind::Bool => match value {
                "any" => continue,
                "true" => ("=", Bind::Bool(true)),
                "false" => ("=", Bind::Bool(false)),
                _ => {
                    return Err(Error::Invalid {
                        field: "query",
                        reason: format!("{field}: '{value}': expected true, false or any"),
                    });
                }
            },
            FilterKind::Since => (">=", Bind::Time(parse_time("query", value)?)),
            FilterKind::Until => ("<", Bind::Time(parse_time("query", value)?)),
        };
        binds.push(bind);
        conds.push(format!("{} {op} ${}", f.column, binds.len()));
    }
    let sort_text = params.sort.as_deref().unwrap_or(resource.default_sort);
    let (desc, name) = match sort_text.strip_prefix('-') {
        Some(n) => (true, n),
        None => (false, sort_text),
    };
    let sort = *resource
        .sorts
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| Error::Invalid {
            field: "sort",
            reason: format!(
                "'{sort_text}': {} sort by {} (prefix - for descending)",
                resource.name,
                resource.sort_names().join(", ")
            ),
        })?;
    let (cmp, dir) = if desc { ("<", "DESC") } else { (">", "ASC") };
    if let Some(cursor) = &params.cursor {
        let (value, id) = decode_cursor(cursor, sort_text, sort.kind)?;
        binds.push(value);
        binds.push(Bind::Int(id));
        let n = binds.len();
        if sort.expr == "id" {
            binds.pop();
            conds.push(format!("id {cmp} ${}", n - 1));
        } else {
            conds.push(format!("({}, id) {cmp} (${}, ${n})", sort.expr, n - 1));
        }
    }
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    binds.push(Bind::Int(limit + 1));
    let where_clause = if conds.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conds.join(" AND "))
    };
    let order = if sort.expr == "id" {
        format!("id {dir}")
    } else {
        format!("{} {dir}, id {dir}", sort.expr)
    };
    let sql = format!(
        "SELECT {}, {} AS sort_key FROM {}{where_clause} ORDER BY {order} LIMIT ${}",
        resource.columns,
        sort.expr,
        resource.table,
        binds.len()
    );
    Ok(Plan {
        sql,
        binds,
        sort,
        sort_name: sort_text.to_string(),
        limit,
    })
}

macro_rules! sort_value {
    ($row:expr, $kind:expr) => {{
        let r = $row;
        match $kind {
            KeyKind::Int => json!(r.try_get::<i64, _>("sort_key")?),
            KeyKind::Text => json!(r.try_get::<String, _>("sort_key")?),
            KeyKind::Time => json!(r.try_get::<DateTime<Utc>, _>("sort_key")?.to_rfc3339()),
        }
    }};
}

impl Db {
    /// One page of `resource` (its rows as `T`), filtered and sorted as `params` ask.
    /// `extra_where` is a fixed condition of the caller (no user text).
    pub async fn list<T: FromRows>(
        &self,
        resource: &Resource,
        params: &ListParams,
        extra_where: Option<&str>,
    ) -> Result<Page<T>> {
        let plan = plan(resource, params, extra_where)?;
        let limit = usize::try_from(plan.limit).unwrap_or(usize::MAX);
        dispatch!(self, pool => {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(plan.sql.clone()));
            for b in &plan.binds {
                q = match b {
                    Bind::Int(v) => q.bind(*v),
                    Bind::Text(v) => q.bind(v.clone()),
                    Bind::Bool(v) => q.bind(*v),
                    Bind::Time(v) => q.bind(*v),
                };
            }
            let rows = q.fetch_all(pool.ex()).await?;
            let more = rows.len() > limit;
            let rows = &rows[..rows.len().min(limit)];
            let next_cursor = match rows.last() {
                Some(last) if more => Some(encode_cursor(
                    &plan.sort_name,
                    &sort_value!(last, plan.sort.kind),
                    last.try_get::<i64, _>("id")?,
                )),
                _ => None,
            };
            let items = rows.iter().map(FromRowAny::from_row_any).collect::<Result<Vec<T>>>()?;
            Ok(Page { items, next_cursor })
        })
    }
}

/// Picks the backend's row conversion.
trait FromRowAny<R> {
    fn from_row_any(row: &R) -> Result<Self>
    where
        Self: Sized;
}

impl<T: FromRows> FromRowAny<SqliteRow> for T {
    fn from_row_any(row: &SqliteRow) -> Result<Self> {
        T::from_sqlite(row)
    }
}

impl<T: FromRows> FromRowAny<PgRow> for T {
    fn from_row_any(row: &PgRow) -> Result<Self> {
        T::from_postgres(row)
    }
}
