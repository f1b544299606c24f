//! Recurrence analytics in SQL: the `fingerprints` table, the `recurrence(since, bucket)`
//! table function, and the UDFs `fingerprint_hex(u64)` and `template(text)`.
//!
//! Both tables are read from the engine's recurrence statistics, which are maintained at
//! ingest, so they answer without scanning `events`.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Array, ListBuilder, RecordBatch, StringArray, StringBuilder,
    TimestampNanosecondArray, UInt32Array, UInt64Array, UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{DataFusionError, Result, ScalarValue, plan_err};
use datafusion::datasource::MemTable;
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::logical_expr::{ColumnarValue, Expr, Volatility, create_udf};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use vigil_engine::{Engine, RecurrenceQuery, RecurrenceRow};

/// Name of the fingerprints table.
pub const FINGERPRINTS_TABLE: &str = "fingerprints";

/// Registers the table function and the UDFs in `ctx`.
pub(crate) fn register(ctx: &SessionContext, engine: &Arc<Engine>) {
    ctx.register_udtf(
        "recurrence",
        Arc::new(RecurrenceFunction {
            engine: Arc::clone(engine),
        }),
    );
    ctx.register_udf(create_udf(
        "fingerprint_hex",
        vec![DataType::UInt64],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(fingerprint_hex),
    ));
    ctx.register_udf(create_udf(
        "template",
        vec![DataType::Utf8],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(template),
    ));
}

fn fingerprint_hex(args: &[ColumnarValue]) -> Result<ColumnarValue> {
    map_to_text(
        args,
        "fingerprint_hex",
        "a UInt64",
        |values: &UInt64Array| {
            values
                .iter()
                .map(|v| v.map(|v| format!("{v:016x}")))
                .collect()
        },
    )
}

fn template(args: &[ColumnarValue]) -> Result<ColumnarValue> {
    map_to_text(args, "template", "a Utf8 text", |values: &StringArray| {
        values
            .iter()
            .map(|v| v.map(vigil_engine::template))
            .collect()
    })
}

/// Applies `f` to the one argument of a text-valued UDF named `name`, which takes `what`.
fn map_to_text<A: 'static>(
    args: &[ColumnarValue],
    name: &str,
    what: &str,
    f: impl Fn(&A) -> StringArray,
) -> Result<ColumnarValue> {
    let [arg] = args else {
        return plan_err!("{name} takes one argument");
    };
    let array = arg.to_array(1)?;
    let values = array
        .as_any()
        .downcast_ref::<A>()
        .ok_or_else(|| DataFusionError::Plan(format!("{name} takes {what}")))?;
    scalar_if_scalar(arg, Arc::new(f(values)))
}

fn scalar_if_scalar(arg: &ColumnarValue, out: ArrayRef) -> Result<ColumnarValue> {
    match arg {
        ColumnarValue::Scalar(_) => {
            Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?))
        }
        ColumnarValue::Array(_) => Ok(ColumnarValue::Array(out)),
    }
}

fn utc_time() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

fn list_of(item: DataType) -> DataType {
    DataType::List(Arc::new(Field::new("item", item, true)))
}

fn fingerprints_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("fingerprint", DataType::UInt64, false),
        Field::new("template", DataType::Utf8, false),
        Field::new("sample_message", DataType::Utf8, false),
        Field::new("count", DataType::UInt64, false),
        Field::new("first_seen", utc_time(), false),
        Field::new("last_seen", utc_time(), false),
        Field::new("services", list_of(DataType::Utf8), false),
        Field::new("systems", list_of(DataType::Utf8), false),
        Field::new("grouping_version", DataType::UInt32, true),
    ]))
}

fn recurrence_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("fingerprint", DataType::UInt64, false),
        Field::new("template", DataType::Utf8, false),
        Field::new("sample_message", DataType::Utf8, false),
        Field::new("count", DataType::UInt64, false),
        Field::new("rate", DataType::Float64, false),
        Field::new("previous_count", DataType::UInt64, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("first_seen", utc_time(), false),
        Field::new("last_seen", utc_time(), false),
        Field::new("services", list_of(DataType::Utf8), false),
        Field::new("systems", list_of(DataType::Utf8), false),
        Field::new("buckets", list_of(DataType::UInt64), false),
    ]))
}

fn strings<'a>(lists: impl Iterator<Item = &'a [String]>) -> ArrayRef {
    let mut b = ListBuilder::new(StringBuilder::new());
    for list in lists {
        for s in list {
            b.values().append_value(s);
        }
        b.append(true);
    }
    Arc::new(b.finish())
}

fn times(values: impl Iterator<Item = i64>) -> ArrayRef {
    Arc::new(TimestampNanosecondArray::from_iter_values(values).with_timezone("UTC"))
}

/// The `fingerprints` table, read from the engine at each scan.
pub(crate) fn fingerprints_batch(engine: &Engine) -> Result<RecordBatch> {
    let rows = engine.fingerprints();
    let services: Vec<Vec<String>> = rows
        .iter()
        .map(|(_, s, _)| s.services.iter().cloned().collect())
        .collect();
    let systems: Vec<Vec<String>> = rows
        .iter()
        .map(|(_, s, _)| s.systems.iter().cloned().collect())
        .collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.0))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(
            |(_, s, info)| info.as_ref().map_or(&s.template, |i| &i.template),
        ))),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| &r.1.sample),
        )),
        Arc::new(UInt64Array::from_iter_values(
            rows.iter().map(|r| r.1.count),
        )),
        times(rows.iter().map(|r| r.1.first_seen)),
        times(rows.iter().map(|r| r.1.last_seen)),
        strings(services.iter().map(Vec::as_slice)),
        strings(systems.iter().map(Vec::as_slice)),
        Arc::new(UInt32Array::from_iter(
            rows.iter().map(|r| r.2.as_ref().map(|i| i.version)),
        )),
    ];
    Ok(RecordBatch::try_new(fingerprints_schema(), columns)?)
}

fn recurrence_batch(rows: &[RecurrenceRow]) -> Result<RecordBatch> {
    let mut buckets = ListBuilder::new(UInt64Builder::new());
    for r in rows {
        buckets.values().append_slice(&r.buckets);
        buckets.append(true);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(UInt64Array::from_iter_values(
            rows.iter().map(|r| r.fingerprint),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| &r.template),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| &r.sample),
        )),
        Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.count))),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.rate))),
        Arc::new(UInt64Array::from_iter_values(
            rows.iter().map(|r| r.previous_count),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.status.as_str()),
        )),
        times(rows.iter().map(|r| r.first_seen)),
        times(rows.iter().map(|r| r.last_seen)),
        strings(rows.iter().map(|r| r.services.as_slice())),
        strings(rows.iter().map(|r| r.systems.as_slice())),
        Arc::new(buckets.finish()),
    ];
    Ok(RecordBatch::try_new(recurrence_schema(), columns)?)
}

/// `recurrence(since [, bucket [, escalation]])`: per fingerprint seen in the last
/// `since` or the window before it, its count, rate per bucket, previous count, status
/// and counts per bucket, busiest first. `since` and `bucket` are durations as text
/// (`'24h'`, `'15m'`) or intervals; `bucket` defaults to a sixtieth of `since` rounded
/// up to a minute, `escalation` (the ratio that makes a fingerprint escalating) to 2.
struct RecurrenceFunction {
    engine: Arc<Engine>,
}

impl std::fmt::Debug for RecurrenceFunction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecurrenceFunction")
    }
}

impl TableFunctionImpl for RecurrenceFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        if exprs.is_empty() || exprs.len() > 3 {
            return plan_err!(
                "recurrence takes (since [, bucket [, escalation]]), e.g. recurrence('24h', '1h')"
            );
        }
        let since = duration_arg(&exprs[0], "since")?;
        let bucket = match exprs.get(1) {
            Some(e) => duration_arg(e, "bucket")?,
            None => (since / 60).max(vigil_engine::BUCKET_NANOS),
        };
        let escalation = match exprs.get(2) {
            Some(e) => number_arg(e, "escalation")?,
            None => 2.0,
        };
        if bucket > since {
            return plan_err!("recurrence: bucket must not be longer than since");
        }
        if since / bucket.max(1) > 100_000 {
            return plan_err!("recurrence: more than 100000 buckets; choose a longer bucket");
        }
        let query = RecurrenceQuery {
            now: self.engine.now_nanos(),
            since,
            bucket,
            escalation,
        };
        let batch = recurrence_batch(&self.engine.recurrence(&query))?;
        Ok(Arc::new(MemTable::try_new(
            batch.schema(),
            vec![vec![batch]],
        )?))
    }
}

/// A duration argument: text like `'24h'` / `'90s'`, or an interval.
fn duration_arg(expr: &Expr, name: &str) -> Result<i64> {
    let nanos = match expr {
        Expr::Literal(ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)), _) => {
            parse_duration(s).map_err(|e| {
                DataFusionError::Plan(format!("recurrence: {name} '{s}' is not a duration: {e}"))
            })?
        }
        Expr::Literal(ScalarValue::IntervalMonthDayNano(Some(v)), _) if v.months == 0 => {
            i64::from(v.days) * 86_400_000_000_000 + v.nanoseconds
        }
        Expr::Literal(ScalarValue::IntervalDayTime(Some(v)), _) => {
            i64::from(v.days) * 86_400_000_000_000 + i64::from(v.milliseconds) * 1_000_000
        }
        other => {
            return plan_err!(
                "recurrence: {name} must be a duration such as '24h' or INTERVAL '1 hour', not {other}"
            );
        }
    };
    if nanos <= 0 {
        return plan_err!("recurrence: {name} must be positive");
    }
    Ok(nanos)
}

fn number_arg(expr: &Expr, name: &str) -> Result<f64> {
    let value = match expr {
        Expr::Literal(ScalarValue::Float64(Some(v)), _) => *v,
        Expr::Literal(ScalarValue::Int64(Some(v)), _) => *v as f64,
        other => return plan_err!("recurrence: {name} must be a number, not {other}"),
    };
    if !(value.is_finite() && value > 0.0) {
        return plan_err!("recurrence: {name} must be a positive number");
    }
    Ok(value)
}

/// Parses `90s`, `15m`, `24h`, `7d`, `1h30m` into nanoseconds.
pub fn parse_duration(text: &str) -> Result<i64, String> {
    let d = humantime::parse_duration(text.trim()).map_err(|e| e.to_string())?;
    i64::try_from(d.as_nanos()).map_err(|_| "too long".to_string())
}

/// The `fingerprints` table: the engine's statistics as of each scan.
pub(crate) struct FingerprintsTable {
    pub(crate) engine: Arc<Engine>,
}

impl std::fmt::Debug for FingerprintsTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FingerprintsTable")
    }
}

#[async_trait]
impl TableProvider for FingerprintsTable {
    fn schema(&self) -> SchemaRef {
        fingerprints_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let batch = fingerprints_batch(&self.engine)?;
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            fingerprints_schema(),
            projection.cloned(),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s").unwrap(), 90_000_000_000);
        assert_eq!(parse_duration("1h30m").unwrap(), 5_400_000_000_000);
        assert!(parse_duration("soon").is_err());
    }
}
