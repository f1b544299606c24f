//! Turning decoded lines into Arrow record batches, one per table and daily partition.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::NullBufferBuilder;
use arrow::array::{
    ArrayRef, BooleanBuilder, DictionaryArray, Float64Builder, Int32Array, Int64Builder,
    RecordBatch, StringArray, StringBuilder, TimestampNanosecondArray, UInt64Builder,
};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{Field, Int32Type, Schema};

use crate::error::{Error, LineError, Result};
use crate::line_protocol::{FieldValue, Line, Precision, for_each_line};
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

/// A tag column: dictionary keys per row, and the distinct values borrowed from the
/// request body (owned only when unescaped). Each row costs one hash lookup of a string
/// already in the body; nothing is copied until the batch is finished.
struct TagBuilder<'a> {
    index: HashMap<Cow<'a, str>, i32, foldhash::fast::RandomState>,
    values: Vec<Cow<'a, str>>,
    keys: Vec<i32>,
    nulls: NullBufferBuilder,
}

impl<'a> TagBuilder<'a> {
    fn new(rows: usize) -> Self {
        Self {
            index: HashMap::default(),
            values: Vec::new(),
            keys: Vec::with_capacity(rows),
            nulls: NullBufferBuilder::new(rows),
        }
    }

    #[expect(
        clippy::ptr_arg,
        reason = "a borrowed value is kept as borrowed from the body, not copied"
    )]
    fn append(&mut self, v: &Cow<'a, str>) {
        let key = match self.index.get(v.as_ref()) {
            Some(&k) => k,
            None => {
                // A request holds far fewer than 2^31 distinct values (the body limit).
                let k = self.values.len() as i32;
                self.values.push(v.clone());
                self.index.insert(v.clone(), k);
                k
            }
        };
        self.keys.push(key);
        self.nulls.append_non_null();
    }

    fn append_nulls(&mut self, n: usize) {
        self.keys.extend(std::iter::repeat_n(0, n));
        self.nulls.append_n_nulls(n);
    }

    fn finish(mut self) -> Result<ArrayRef> {
        let keys = Int32Array::new(self.keys.into(), self.nulls.finish());
        let values = StringArray::from_iter_values(self.values.iter().map(|v| v.as_ref()));
        Ok(Arc::new(DictionaryArray::<Int32Type>::try_new(
            keys,
            Arc::new(values),
        )?))
    }
}

enum Builder<'a> {
    Tag(TagBuilder<'a>),
    F64(Float64Builder),
    I64(Int64Builder),
    U64(UInt64Builder),
    Bool(BooleanBuilder),
    Str(StringBuilder),
}

impl<'a> Builder<'a> {
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
            ColumnKind::Tag | ColumnKind::Time => Self::Tag(TagBuilder::new(rows)),
        }
    }

    fn append_null(&mut self) {
        match self {
            Self::Tag(b) => b.append_nulls(1),
            Self::F64(b) => b.append_null(),
            Self::I64(b) => b.append_null(),
            Self::U64(b) => b.append_null(),
            Self::Bool(b) => b.append_null(),
            Self::Str(b) => b.append_null(),
        }
    }

    fn append_nulls(&mut self, n: usize) {
        match self {
            Self::Tag(b) => b.append_nulls(n),
            Self::F64(b) => b.append_nulls(n),
            Self::I64(b) => b.append_nulls(n),
            Self::U64(b) => b.append_nulls(n),
            Self::Bool(b) => b.append_nulls(n),
            Self::Str(b) => {
                for _ in 0..n {
                    b.append_null();
                }
            }
        }
    }

    #[expect(clippy::ptr_arg, reason = "see TagBuilder::append")]
    fn append_tag(&mut self, v: &Cow<'a, str>) {
        if let Self::Tag(b) = self {
            b.append(v);
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

    fn finish(self) -> Result<ArrayRef> {
        Ok(match self {
            Self::Tag(b) => b.finish()?,
            Self::F64(mut b) => Arc::new(b.finish()),
            Self::I64(mut b) => Arc::new(b.finish()),
            Self::U64(mut b) => Arc::new(b.finish()),
            Self::Bool(mut b) => Arc::new(b.finish()),
            Self::Str(mut b) => Arc::new(b.finish()),
        })
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

/// A column being built: its values so far and bookkeeping for the current row.
struct ColumnBuilder<'a> {
    name: String,
    kind: ColumnKind,
    builder: Builder<'a>,
    first_line: usize,
    /// Row (+1) that last wrote this column; tells repeats and missing values apart.
    stamp: usize,
    /// Position, in its line, of the last occurrence of the field (the one kept).
    pos: usize,
}

/// Builds one table's columns in a single pass over its lines.
///
/// Lines of one writer usually name their tags and fields in the same order, so the column
/// at each key position is remembered from the previous line and checked first: one string
/// comparison instead of a hash lookup per key.
struct TableBuilder<'a> {
    table: String,
    rows: usize,
    times: Vec<i64>,
    cols: Vec<ColumnBuilder<'a>>,
    index: HashMap<String, usize>,
    tag_guess: Vec<usize>,
    field_guess: Vec<usize>,
}

impl<'a> TableBuilder<'a> {
    fn new(table: &str, rows: usize) -> Self {
        Self {
            table: table.to_string(),
            rows,
            times: Vec::with_capacity(rows),
            cols: Vec::new(),
            index: HashMap::new(),
            tag_guess: Vec::new(),
            field_guess: Vec::new(),
        }
    }

    /// The column for `name` at key position `pos`, created (with nulls for earlier rows)
    /// when new; refuses a kind that differs from the column's.
    fn column(
        &mut self,
        tag: bool,
        pos: usize,
        name: &str,
        kind: ColumnKind,
        line: usize,
        row: usize,
    ) -> Result<usize> {
        let guesses = if tag {
            &mut self.tag_guess
        } else {
            &mut self.field_guess
        };
        let i = match guesses.get(pos) {
            Some(&g) if self.cols[g].name == name => g,
            _ => {
                let i = match self.index.get(name) {
                    Some(&i) => i,
                    None => self.add(name, kind, line, row)?,
                };
                let guesses = if tag {
                    &mut self.tag_guess
                } else {
                    &mut self.field_guess
                };
                if guesses.len() <= pos {
                    guesses.resize(pos + 1, i);
                }
                guesses[pos] = i;
                i
            }
        };
        let col = &self.cols[i];
        if col.kind != kind {
            return Err(Error::TypeConflict {
                table: self.table.clone(),
                column: name.into(),
                existing: format!("{} (line {})", col.kind, col.first_line),
                attempted: kind.to_string(),
                line,
            });
        }
        Ok(i)
    }

    fn add(&mut self, name: &str, kind: ColumnKind, line: usize, row: usize) -> Result<usize> {
        if name == TIME_COLUMN {
            return Err(Error::Parse(LineError {
                line,
                column: 0,
                reason: format!("'{TIME_COLUMN}' cannot be a tag or field name"),
            }));
        }
        validate_name(name, "column")?;
        let mut builder = Builder::new(kind, self.rows);
        builder.append_nulls(row);
        self.index.insert(name.to_string(), self.cols.len());
        self.cols.push(ColumnBuilder {
            name: name.to_string(),
            kind,
            builder,
            first_line: line,
            stamp: 0,
            pos: 0,
        });
        Ok(self.cols.len() - 1)
    }

    fn push(&mut self, line: &Line<'a>, field_cols: &mut Vec<usize>) -> Result<()> {
        let row = self.times.len();
        let stamp = row + 1;
        for (pos, (k, v)) in line.tags.iter().enumerate() {
            let i = self.column(true, pos, k, ColumnKind::Tag, line.line_no, row)?;
            let col = &mut self.cols[i];
            if col.stamp == stamp {
                return Err(Error::Parse(LineError {
                    line: line.line_no,
                    column: 0,
                    reason: format!("duplicate tag key '{k}'"),
                }));
            }
            col.stamp = stamp;
            col.builder.append_tag(v);
        }
        // A repeated field keeps its last value: find the columns first, then append once.
        field_cols.clear();
        for (pos, (k, v)) in line.fields.iter().enumerate() {
            let i = self.column(
                false,
                pos,
                k,
                ColumnKind::Field(field_type(v)),
                line.line_no,
                row,
            )?;
            let col = &mut self.cols[i];
            col.stamp = stamp;
            col.pos = pos;
            field_cols.push(i);
        }
        for (pos, ((_, v), &i)) in line.fields.iter().zip(field_cols.iter()).enumerate() {
            if self.cols[i].pos == pos {
                self.cols[i].builder.append_field(v);
            }
        }
        for col in &mut self.cols {
            if col.stamp != stamp {
                col.builder.append_null();
            }
        }
        Ok(())
    }

    /// The batch, columns in table order (tags, then fields, each by name, then time).
    fn finish(mut self) -> Result<MetricBatch> {
        self.cols.sort_by(|a, b| {
            ((a.kind != ColumnKind::Tag), &a.name).cmp(&((b.kind != ColumnKind::Tag), &b.name))
        });
        let mut fields = Vec::with_capacity(self.cols.len() + 1);
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(self.cols.len() + 1);
        let mut first_line = HashMap::with_capacity(self.cols.len());
        for col in self.cols {
            fields.push(Field::new(&col.name, col.kind.data_type(), true));
            arrays.push(col.builder.finish()?);
            first_line.insert(col.name, col.first_line);
        }
        fields.push(Field::new(TIME_COLUMN, ColumnKind::Time.data_type(), false));
        arrays.push(Arc::new(
            TimestampNanosecondArray::from(self.times).with_timezone("UTC"),
        ));
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)?;
        Ok(MetricBatch {
            table: self.table,
            batch,
            first_line,
        })
    }
}

/// [`build_metric_batches_of`] a body in one piece.
#[cfg(test)]
pub(crate) fn build_metric_batches(
    text: &str,
    precision: Precision,
    default_time: i64,
) -> Result<Vec<MetricBatch>> {
    build_metric_batches_of(&[text], precision, default_time)
}

/// Decodes line protocol and builds one batch per measurement, in order of first
/// appearance, without keeping the decoded lines. The body comes in `pieces`, each but
/// the last ending with a newline. Lines without a timestamp get `default_time`. Every
/// malformed line is reported (up to 100), and then nothing is built.
pub(crate) fn build_metric_batches_of(
    pieces: &[&str],
    precision: Precision,
    default_time: i64,
) -> Result<Vec<MetricBatch>> {
    let capacity = pieces
        .iter()
        .map(|p| memchr::memchr_iter(b'\n', p.as_bytes()).count())
        .sum::<usize>()
        + 1;
    let mut tables: Vec<TableBuilder> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut current = usize::MAX;
    let mut errors = Vec::new();
    let mut field_cols = Vec::new();
    for_each_line(pieces, precision, |parsed| {
        let line = match parsed {
            Ok(line) if errors.is_empty() => line,
            // After the first bad line, only look for more bad lines.
            Ok(_) => return Ok(()),
            Err(e) => {
                errors.push(e);
                return Ok(());
            }
        };
        let m = line.measurement.as_ref();
        if tables.get(current).is_none_or(|t| t.table != m) {
            current = match index.get(m) {
                Some(&i) => i,
                None => {
                    check_table_name(m)?;
                    index.insert(m.to_string(), tables.len());
                    tables.push(TableBuilder::new(m, capacity));
                    tables.len() - 1
                }
            };
        }
        let t = &mut tables[current];
        t.push(line, &mut field_cols)?;
        t.times.push(line.timestamp.unwrap_or(default_time));
        Ok(())
    })?;
    if !errors.is_empty() {
        return Err(Error::from_line_errors(errors));
    }
    tables.into_iter().map(TableBuilder::finish).collect()
}

fn check_table_name(table: &str) -> Result<()> {
    if table == EVENTS_TABLE {
        return Err(Error::InvalidName {
            name: table.into(),
            reason: "'events' is reserved for the events table; write events to /api/v1/events"
                .into(),
        });
    }
    validate_name(table, "measurement")
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
    let time = crate::persist::time_column(batch).ok_or_else(|| {
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
    use arrow::util::pretty::pretty_format_batches;

    fn build(body: &str) -> Result<Vec<MetricBatch>> {
        build_metric_batches(body, Precision::Nanoseconds, 7)
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
        let dup = build("cpu,a=1,a=2 f=1").err().unwrap().to_string();
        assert!(
            dup.contains("line 1") && dup.contains("duplicate tag key 'a'"),
            "{dup}"
        );
        let both = build("cpu,a=1 a=2").err().unwrap().to_string();
        assert!(
            both.contains("column 'a': tag (line 1)") && both.contains("float field in line 1"),
            "{both}"
        );
        assert!(build("events x=1").is_err());
    }

    #[test]
    fn a_repeated_field_keeps_its_last_value() {
        let b = build("m f=1,g=1,f=2\nm g=3,f=4").unwrap().remove(0).batch;
        let f = b
            .column_by_name("f")
            .unwrap()
            .as_any()
            .downcast_ref::<arrow::array::Float64Array>()
            .unwrap();
        assert_eq!(f.values().to_vec(), vec![2.0, 4.0]);
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
