//! Turning decoded lines into Arrow record batches, one per table and daily partition.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, RecordBatch, StringBuilder,
    StringDictionaryBuilder, TimestampNanosecondArray, UInt64Builder,
};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{Field, Int32Type, Schema};

use crate::error::{Error, LineError, Result};
use crate::line_protocol::{FieldValue, Line};
use crate::schema::{ColumnKind, EVENTS_TABLE, FieldType, TIME_COLUMN, validate_name};

/// Nanoseconds in a day.
pub(crate) const DAY_NANOS: i64 = 86_400 * 1_000_000_000;

/// Rows of one table within one day.
#[derive(Debug, Clone)]
pub struct TableBatch {
    pub table: String,
    /// Days since the Unix epoch (UTC) of every row's `time`.
    pub day: i32,
    pub batch: RecordBatch,
}

/// A metric table's new rows before they are split by day, with where each column first
/// appeared (for error messages).
pub(crate) struct MetricBatch {
    pub(crate) table: String,
    pub(crate) batch: RecordBatch,
    pub(crate) first_line: HashMap<String, usize>,
}

enum Builder {
    Tag(StringDictionaryBuilder<Int32Type>),
    F64(Float64Builder),
    I64(Int64Builder),
    U64(UInt64Builder),
    Bool(BooleanBuilder),
    Str(StringBuilder),
}

impl Builder {
    fn new(kind: ColumnKind, rows: usize) -> Self {
        match kind {
            ColumnKind::Field(FieldType::Float) => Self::F64(Float64Builder::with_capacity(rows)),
            ColumnKind::Field(FieldType::Integer) => Self::I64(Int64Builder::with_capacity(rows)),
            ColumnKind::Field(FieldType::Unsigned) => Self::U64(UInt64Builder::with_capacity(rows)),
            ColumnKind::Field(FieldType::Boolean) => {
                Self::Bool(BooleanBuilder::with_capacity(rows))
            }
            ColumnKind::Field(FieldType::String) | ColumnKind::Text => {
                Self::Str(StringBuilder::with_capacity(rows, rows * 8))
            }
            ColumnKind::Tag | ColumnKind::Time => Self::Tag(StringDictionaryBuilder::new()),
        }
    }

    fn append_null(&mut self) {
        match self {
            Self::Tag(b) => b.append_null(),
            Self::F64(b) => b.append_null(),
            Self::I64(b) => b.append_null(),
            Self::U64(b) => b.append_null(),
            Self::Bool(b) => b.append_null(),
            Self::Str(b) => b.append_null(),
        }
    }

    fn append_tag(&mut self, v: &str) {
        if let Self::Tag(b) = self {
            b.append_value(v);
        }
    }

    fn append_field(&mut self, v: &FieldValue<'_>) {
        match (self, v) {
            (Self::F64(b), FieldValue::F64(x)) => b.append_value(*x),
            (Self::I64(b), FieldValue::I64(x)) => b.append_value(*x),
            (Self::U64(b), FieldValue::U64(x)) => b.append_value(*x),
            (Self::Bool(b), FieldValue::Bool(x)) => b.append_value(*x),
            (Self::Str(b), FieldValue::Str(x)) => b.append_value(x),
            // Types were checked before building; a mismatch cannot reach here.
            (b, _) => b.append_null(),
        }
    }

    fn finish(self) -> ArrayRef {
        match self {
            Self::Tag(mut b) => Arc::new(b.finish()),
            Self::F64(mut b) => Arc::new(b.finish()),
            Self::I64(mut b) => Arc::new(b.finish()),
            Self::U64(mut b) => Arc::new(b.finish()),
            Self::Bool(mut b) => Arc::new(b.finish()),
            Self::Str(mut b) => Arc::new(b.finish()),
        }
    }
}

fn field_type(v: &FieldValue<'_>) -> FieldType {
    match v {
        FieldValue::F64(_) => FieldType::Float,
        FieldValue::I64(_) => FieldType::Integer,
        FieldValue::U64(_) => FieldType::Unsigned,
        FieldValue::Bool(_) => FieldType::Boolean,
        FieldValue::Str(_) => FieldType::String,
    }
}

/// The columns one table's lines use, in table order, checked for conflicts in the batch.
struct Columns {
    table: String,
    cols: Vec<(String, ColumnKind)>,
    index: HashMap<String, usize>,
    first_line: HashMap<String, usize>,
}

impl Columns {
    fn new(table: &str) -> Self {
        Self {
            table: table.to_string(),
            cols: Vec::new(),
            index: HashMap::new(),
            first_line: HashMap::new(),
        }
    }

    fn see(&mut self, name: &str, kind: ColumnKind, line: usize) -> Result<()> {
        if let Some(&i) = self.index.get(name) {
            let existing = self.cols[i].1;
            if existing != kind {
                return Err(Error::TypeConflict {
                    table: self.table.clone(),
                    column: name.into(),
                    existing: format!("{existing} (line {})", self.first_line[name]),
                    attempted: kind.to_string(),
                    line,
                });
            }
            return Ok(());
        }
        if name == TIME_COLUMN {
            return Err(Error::Parse(LineError {
                line,
                column: 0,
                reason: format!("'{TIME_COLUMN}' cannot be a tag or field name"),
            }));
        }
        validate_name(name, "column")?;
        self.index.insert(name.into(), self.cols.len());
        self.first_line.insert(name.into(), line);
        self.cols.push((name.into(), kind));
        Ok(())
    }

    /// Orders columns as tables do: tags, fields, each by name.
    fn sorted(mut self) -> Self {
        self.cols.sort_by(|a, b| {
            ((a.1 != ColumnKind::Tag), &a.0).cmp(&((b.1 != ColumnKind::Tag), &b.0))
        });
        self.index = self
            .cols
            .iter()
            .enumerate()
            .map(|(i, c)| (c.0.clone(), i))
            .collect();
        self
    }
}

/// Builds one batch per measurement, in order of first appearance. Lines without a
/// timestamp get `default_time`.
pub(crate) fn build_metric_batches(
    lines: &[Line<'_>],
    default_time: i64,
) -> Result<Vec<MetricBatch>> {
    let mut order: Vec<&str> = Vec::new();
    let mut groups: HashMap<&str, Vec<&Line<'_>>> = HashMap::new();
    for line in lines {
        let m = line.measurement.as_ref();
        groups
            .entry(m)
            .or_insert_with(|| {
                order.push(m);
                Vec::new()
            })
            .push(line);
    }
    order
        .into_iter()
        .map(|table| build_table(table, &groups[table], default_time))
        .collect()
}

fn build_table(table: &str, lines: &[&Line<'_>], default_time: i64) -> Result<MetricBatch> {
    if table == EVENTS_TABLE {
        return Err(Error::InvalidName {
            name: table.into(),
            reason: "'events' is reserved for the events table; write events to /api/v1/events"
                .into(),
        });
    }
    validate_name(table, "measurement")?;
    let mut cols = Columns::new(table);
    for l in lines {
        for (k, _) in &l.tags {
            cols.see(k, ColumnKind::Tag, l.line_no)?;
        }
        for (k, v) in &l.fields {
            cols.see(k, ColumnKind::Field(field_type(v)), l.line_no)?;
        }
    }
    let cols = cols.sorted();
    let rows = lines.len();
    let mut builders: Vec<Builder> = cols
        .cols
        .iter()
        .map(|(_, k)| Builder::new(*k, rows))
        .collect();
    let mut filled = vec![usize::MAX; builders.len()];
    let mut times = Vec::with_capacity(rows);
    for (row, l) in lines.iter().enumerate() {
        for (k, v) in &l.tags {
            let i = cols.index[k.as_ref()];
            builders[i].append_tag(v);
            filled[i] = row;
        }
        for (k, v) in &l.fields {
            let i = cols.index[k.as_ref()];
            builders[i].append_field(v);
            filled[i] = row;
        }
        for (i, b) in builders.iter_mut().enumerate() {
            if filled[i] != row {
                b.append_null();
            }
        }
        times.push(l.timestamp.unwrap_or(default_time));
    }
    let mut fields: Vec<Field> = cols
        .cols
        .iter()
        .map(|(n, k)| Field::new(n, k.data_type(), true))
        .collect();
    fields.push(Field::new(TIME_COLUMN, ColumnKind::Time.data_type(), false));
    let mut arrays: Vec<ArrayRef> = builders.into_iter().map(Builder::finish).collect();
    arrays.push(Arc::new(
        TimestampNanosecondArray::from(times).with_timezone("UTC"),
    ));
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)?;
    Ok(MetricBatch {
        table: table.to_string(),
        batch,
        first_line: cols.first_line,
    })
}

/// Splits a batch into one batch per UTC day of its `time` column.
pub(crate) fn split_by_day(table: &str, batch: RecordBatch) -> Result<Vec<TableBatch>> {
    let days = day_column(&batch)?;
    let first = days.first().copied().unwrap_or(0);
    if days.iter().all(|&d| d == first) {
        return Ok(vec![TableBatch {
            table: table.to_string(),
            day: first,
            batch,
        }]);
    }
    let mut distinct: Vec<i32> = days.clone();
    distinct.sort_unstable();
    distinct.dedup();
    distinct
        .into_iter()
        .map(|day| {
            let mask = arrow::array::BooleanArray::from(
                days.iter().map(|&d| d == day).collect::<Vec<_>>(),
            );
            Ok(TableBatch {
                table: table.to_string(),
                day,
                batch: filter_record_batch(&batch, &mask)?,
            })
        })
        .collect()
}

fn day_column(batch: &RecordBatch) -> Result<Vec<i32>> {
    let time = batch
        .column_by_name(TIME_COLUMN)
        .and_then(|c| c.as_any().downcast_ref::<TimestampNanosecondArray>())
        .ok_or_else(|| {
            Error::Arrow(arrow::error::ArrowError::SchemaError(
                "batch has no time column".into(),
            ))
        })?;
    Ok(time.values().iter().map(|t| day_of(*t)).collect())
}

/// UTC day number of a nanosecond timestamp.
pub(crate) fn day_of(nanos: i64) -> i32 {
    nanos.div_euclid(DAY_NANOS) as i32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::line_protocol::{Precision, parse_lines};
    use arrow::util::pretty::pretty_format_batches;

    fn build(body: &str) -> Result<Vec<MetricBatch>> {
        let lines: Vec<_> = parse_lines(body, Precision::Nanoseconds)
            .map(|l| l.unwrap())
            .collect();
        build_metric_batches(&lines, 7)
    }

    #[test]
    fn one_batch_per_measurement_with_nulls_for_missing_columns() {
        let out =
            build("cpu,host=a u=1 10\nmem,host=a free=3i 10\ncpu,host=b,dc=x s=\"hi\" 20\ncpu u=2")
                .unwrap();
        assert_eq!(out.len(), 2);
        let text = pretty_format_batches(&[out[0].batch.clone()])
            .unwrap()
            .to_string();
        let expected = "\
+----+------+----+-----+--------------------------------+
| dc | host | s  | u   | time                           |
+----+------+----+-----+--------------------------------+
|    | a    |    | 1.0 | 1970-01-01T00:00:00.000000010Z |
| x  | b    | hi |     | 1970-01-01T00:00:00.000000020Z |
|    |      |    | 2.0 | 1970-01-01T00:00:00.000000007Z |
+----+------+----+-----+--------------------------------+";
        assert_eq!(text, expected);
    }

    #[test]
    fn conflicting_types_in_one_batch_name_table_column_and_lines() {
        let err = build("cpu f=1\ncpu f=2i").err().unwrap();
        let msg = err.to_string();
        assert!(msg.contains("'cpu'") && msg.contains("'f'"), "{msg}");
        assert!(
            msg.contains("float field (line 1)") && msg.contains("integer field in line 2"),
            "{msg}"
        );
        assert!(build("cpu,f=a x=1\ncpu f=2").is_err(), "tag then field");
        assert!(build("cpu time=1").is_err());
        assert!(build("events x=1").is_err());
    }

    #[test]
    fn splits_by_utc_day() {
        let day = DAY_NANOS;
        let body = format!(
            "m f=1 {}\nm f=2 {}\nm f=3 {}\nm f=4 -1",
            day - 1,
            day,
            3 * day
        );
        let b = build(&body).unwrap().remove(0);
        let parts = split_by_day("m", b.batch).unwrap();
        let got: Vec<_> = parts.iter().map(|p| (p.day, p.batch.num_rows())).collect();
        assert_eq!(got, [(-1, 1), (0, 1), (1, 1), (3, 1)]);
    }
}
