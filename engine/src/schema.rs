//! Table schemas: schema on write for metrics, the fixed `events` schema.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Name of the events table.
pub const EVENTS_TABLE: &str = "events";
/// Name of the time column of every table.
pub const TIME_COLUMN: &str = "time";

/// Type of a metric field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    Float,
    Integer,
    Unsigned,
    Boolean,
    String,
}

impl FieldType {
    fn data_type(self) -> DataType {
        match self {
            Self::Float => DataType::Float64,
            Self::Integer => DataType::Int64,
            Self::Unsigned => DataType::UInt64,
            Self::Boolean => DataType::Boolean,
            Self::String => DataType::Utf8,
        }
    }
}

/// What a column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "type", rename_all = "lowercase")]
pub enum ColumnKind {
    /// A tag (metrics) or a dimension (events): dictionary-encoded text.
    Tag,
    Field(FieldType),
    /// Plain nullable text of the events table.
    Text,
    Time,
}

impl fmt::Display for ColumnKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tag => f.write_str("tag"),
            Self::Field(t) => write!(f, "{} field", format!("{t:?}").to_lowercase()),
            Self::Text => f.write_str("text"),
            Self::Time => f.write_str("time"),
        }
    }
}

/// The Arrow type of the time column.
pub(crate) fn time_type() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

/// The Arrow type of tag columns.
pub(crate) fn tag_type() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

impl ColumnKind {
    pub fn data_type(self) -> DataType {
        match self {
            Self::Tag => tag_type(),
            Self::Field(t) => t.data_type(),
            Self::Text => DataType::Utf8,
            Self::Time => time_type(),
        }
    }

    /// The column kind of an Arrow field, for metric tables.
    pub(crate) fn of_metric_field(field: &Field) -> Option<Self> {
        Some(match field.data_type() {
            DataType::Dictionary(..) => Self::Tag,
            DataType::Timestamp(..) => Self::Time,
            DataType::Float64 => Self::Field(FieldType::Float),
            DataType::Int64 => Self::Field(FieldType::Integer),
            DataType::UInt64 => Self::Field(FieldType::Unsigned),
            DataType::Boolean => Self::Field(FieldType::Boolean),
            DataType::Utf8 => Self::Field(FieldType::String),
            _ => return None,
        })
    }
}

/// One column of a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    #[serde(flatten)]
    pub kind: ColumnKind,
}

/// The columns of a table: tags (sorted by name), then fields (sorted), then `time`; and
/// the order of the tags in the series key, by which the table's rows are sorted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSchema {
    columns: Vec<Column>,
    /// Tags that lead the series key, in this order; the other tags follow by name. Fixed
    /// by the table's first flush ([`choose_sort_key`]) and never changed after, so that
    /// every file and buffer of the table is sorted the same way. Absent (tables written
    /// before the key was recorded): every tag by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sort_key: Option<Vec<String>>,
    /// Width of the time slices that lead the sort order of a metric table's files and
    /// buffers, in nanoseconds: rows sort by (slice of `time`, series, `time`), and no
    /// Parquet row group spans two slices. Recorded with the series key at the table's
    /// first flush ([`TIME_SLICE_NANOS`]). Absent (tables written before slices, and
    /// `events`): rows sort by (series, `time`) alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    time_slice_ns: Option<i64>,
}

/// The default time slice of new metric tables: one hour. A query over the last minutes
/// reads the row groups of one slice; one series over an hour is one run in one row group.
pub const TIME_SLICE_NANOS: i64 = 3_600 * 1_000_000_000;

impl TableSchema {
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// Names of the tag columns, in sort order: the series key. The tags of the recorded
    /// sort key come first, in its order; the others follow by name.
    pub fn tag_names(&self) -> impl Iterator<Item = &str> {
        let lead = self.sort_key.as_deref().unwrap_or_default();
        let is_tag = |n: &str| self.column(n).is_some_and(|c| c.kind == ColumnKind::Tag);
        let leading = lead.iter().map(String::as_str).filter(move |n| is_tag(n));
        let rest = self
            .columns
            .iter()
            .filter(|c| c.kind == ColumnKind::Tag && !lead.contains(&c.name))
            .map(|c| c.name.as_str());
        leading.chain(rest)
    }

    /// The recorded leading tags of the series key; `None` until the first flush.
    pub fn sort_key(&self) -> Option<&[String]> {
        self.sort_key.as_deref()
    }

    /// The width of the table's time slices in nanoseconds; `None` when rows sort by
    /// series then time alone.
    pub fn time_slice(&self) -> Option<i64> {
        self.time_slice_ns.filter(|&w| w > 0)
    }

    /// The slice of `time` (nanoseconds): `time` divided by the slice width, rounded
    /// down; 0 for every row when the table has no slices.
    pub fn slice_of(&self, time: i64) -> i64 {
        self.time_slice().map_or(0, |w| time.div_euclid(w))
    }

    pub fn arrow_schema(&self) -> SchemaRef {
        let fields: Vec<Field> = self
            .columns
            .iter()
            .map(|c| Field::new(&c.name, c.kind.data_type(), c.kind != ColumnKind::Time))
            .collect();
        Arc::new(Schema::new(fields))
    }

    /// The schema with time slices of `width` nanoseconds.
    #[cfg(test)]
    pub(crate) fn with_time_slice(mut self, width: i64) -> Self {
        self.time_slice_ns = Some(width);
        self
    }

    /// A metric table's schema from the columns of an Arrow schema.
    #[cfg(test)]
    pub(crate) fn from_metric_arrow(schema: &Schema) -> Self {
        let mut s = Self {
            columns: vec![],
            sort_key: None,
            time_slice_ns: None,
        };
        for f in schema.fields() {
            if let Some(kind) = ColumnKind::of_metric_field(f) {
                s.add(Column {
                    name: f.name().clone(),
                    kind,
                });
            }
        }
        s
    }

    /// Adds a column in its sorted place; the caller has checked it is new.
    pub(crate) fn add(&mut self, column: Column) {
        let rank = |k: &ColumnKind| match k {
            ColumnKind::Tag => 0,
            ColumnKind::Field(_) | ColumnKind::Text => 1,
            ColumnKind::Time => 2,
        };
        let at = self
            .columns
            .iter()
            .position(|c| {
                (rank(&c.kind), c.name.as_str()) > (rank(&column.kind), column.name.as_str())
            })
            .unwrap_or(self.columns.len());
        self.columns.insert(at, column);
    }
}

/// The fixed schema of the events table.
pub fn events_schema() -> &'static TableSchema {
    static SCHEMA: LazyLock<TableSchema> = LazyLock::new(|| {
        let col = |name: &str, kind| Column {
            name: name.into(),
            kind,
        };
        TableSchema {
            columns: vec![
                col(TIME_COLUMN, ColumnKind::Time),
                col("ingested_at", ColumnKind::Time),
                col("event_id", ColumnKind::Text),
                col("severity", ColumnKind::Tag),
                col("service", ColumnKind::Tag),
                col("component", ColumnKind::Tag),
                col("environment", ColumnKind::Tag),
                col("system_id", ColumnKind::Tag),
                col("event_type", ColumnKind::Tag),
                col("message", ColumnKind::Text),
                col("template", ColumnKind::Text),
                col("fingerprint", ColumnKind::Field(FieldType::Unsigned)),
                col("attributes", ColumnKind::Text),
            ],
            sort_key: None,
            time_slice_ns: None,
        }
    });
    &SCHEMA
}

/// Schemas of every table, keyed by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    tables: BTreeMap<String, TableSchema>,
}

impl Catalog {
    pub fn table(&self, name: &str) -> Option<&TableSchema> {
        if name == EVENTS_TABLE {
            return Some(events_schema());
        }
        self.tables.get(name)
    }

    pub fn tables(&self) -> impl Iterator<Item = (&str, &TableSchema)> {
        self.tables.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Checks the columns of a metric batch against the table, naming the first conflict.
    /// `first_line` tells the line where a column first appeared, for the message.
    pub(crate) fn check(
        &self,
        table: &str,
        batch: &Schema,
        first_line: &dyn Fn(&str) -> usize,
    ) -> Result<()> {
        let Some(existing) = self.tables.get(table) else {
            return Ok(());
        };
        for f in batch.fields() {
            let Some(kind) = ColumnKind::of_metric_field(f) else {
                continue;
            };
            if let Some(col) = existing.column(f.name())
                && col.kind != kind
            {
                return Err(Error::TypeConflict {
                    table: table.into(),
                    column: f.name().clone(),
                    existing: col.kind.to_string(),
                    attempted: kind.to_string(),
                    line: first_line(f.name()),
                });
            }
        }
        Ok(())
    }

    /// Widens a metric table by the columns of `batch` that it lacks.
    pub(crate) fn register(&mut self, table: &str, batch: &Schema) {
        let schema = self
            .tables
            .entry(table.to_string())
            .or_insert_with(|| TableSchema {
                columns: vec![],
                sort_key: None,
                time_slice_ns: None,
            });
        for f in batch.fields() {
            if schema.column(f.name()).is_none()
                && let Some(kind) = ColumnKind::of_metric_field(f)
            {
                schema.add(Column {
                    name: f.name().clone(),
                    kind,
                });
            }
        }
    }

    pub(crate) fn insert(&mut self, table: String, schema: TableSchema) {
        self.tables.insert(table, schema);
    }

    /// Records the series key order of metric table `table`, and with it the width of
    /// the table's time slices in nanoseconds (`None`: none), unless it has a key already.
    pub(crate) fn set_sort_key(&mut self, table: &str, key: Vec<String>, time_slice: Option<i64>) {
        if let Some(schema) = self.tables.get_mut(table)
            && schema.sort_key.is_none()
        {
            schema.sort_key = Some(key);
            schema.time_slice_ns = time_slice;
        }
    }
}

/// The series key order for a metric table, from rows of its first flush: tags by number
/// of distinct values, most first, ties by name. The most selective tag (a host or device
/// name, typically) then leads, so that the rows of one of its values are one run in a
/// file and a query for it reads one row group and a few pages; the other tags, usually
/// attributes of it, cost little either way (their runs stay long).
///
/// Distinct values are counted over the chunks' dictionaries (each chunk's tag columns are
/// dictionary arrays holding the values the chunk uses).
pub(crate) fn choose_sort_key<'a>(
    schema: &TableSchema,
    chunks: impl IntoIterator<Item = &'a arrow::array::RecordBatch>,
) -> Vec<String> {
    use arrow::array::AsArray;
    use arrow::datatypes::Int32Type;
    use std::collections::HashSet;

    let tags: Vec<&str> = schema
        .columns
        .iter()
        .filter(|c| c.kind == ColumnKind::Tag)
        .map(|c| c.name.as_str())
        .collect();
    let mut distinct: Vec<HashSet<&str>> = vec![HashSet::new(); tags.len()];
    for chunk in chunks {
        for (i, tag) in tags.iter().enumerate() {
            let Some(dict) = chunk
                .column_by_name(tag)
                .and_then(|c| c.as_dictionary_opt::<Int32Type>())
            else {
                continue;
            };
            if let Some(values) = dict.values().as_string_opt::<i32>() {
                distinct[i].extend(values.iter().flatten());
            }
        }
    }
    let mut order: Vec<(usize, &str)> = tags
        .iter()
        .zip(&distinct)
        .map(|(t, d)| (d.len(), *t))
        .collect();
    order.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    order.into_iter().map(|(_, t)| t.to_string()).collect()
}

/// Checks a metric table or column name.
pub(crate) fn validate_name(name: &str, what: &str) -> Result<()> {
    let reason = if name.is_empty() {
        format!("{what} name is empty")
    } else if name.len() > 255 {
        format!("{what} name is longer than 255 bytes")
    } else if name.chars().any(char::is_control) {
        format!("{what} name contains a control character")
    } else {
        return Ok(());
    };
    Err(Error::InvalidName {
        name: name.chars().take(64).collect(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_stay_sorted() {
        let mut s = TableSchema {
            columns: vec![],
            sort_key: None,
            time_slice_ns: None,
        };
        for (n, k) in [
            ("time", ColumnKind::Time),
            ("z", ColumnKind::Field(FieldType::Float)),
            ("host", ColumnKind::Tag),
            ("a", ColumnKind::Field(FieldType::Integer)),
            ("dc", ColumnKind::Tag),
        ] {
            s.add(Column {
                name: n.into(),
                kind: k,
            });
        }
        let names: Vec<_> = s.columns().iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["dc", "host", "a", "z", "time"]);
        assert_eq!(s.tag_names().collect::<Vec<_>>(), ["dc", "host"]);
    }

    #[test]
    fn catalog_serializes_readably() {
        let mut s = TableSchema {
            columns: vec![],
            sort_key: None,
            time_slice_ns: None,
        };
        s.add(Column {
            name: "f".into(),
            kind: ColumnKind::Field(FieldType::Float),
        });
        s.add(Column {
            name: "h".into(),
            kind: ColumnKind::Tag,
        });
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(
            json,
            r#"{"columns":[{"name":"h","kind":"tag"},{"name":"f","kind":"field","type":"float"}]}"#
        );
        assert_eq!(serde_json::from_str::<TableSchema>(&json).unwrap(), s);
    }

    #[test]
    fn the_most_varied_tag_leads_the_series_key_and_later_tags_follow_by_name() {
        use arrow::array::{DictionaryArray, RecordBatch};
        use arrow::datatypes::Int32Type;

        let mut s = TableSchema {
            columns: vec![],
            sort_key: None,
            time_slice_ns: None,
        };
        for n in ["dc", "host", "rack"] {
            s.add(Column {
                name: n.into(),
                kind: ColumnKind::Tag,
            });
        }
        let dict = |v: &[&str]| -> arrow::array::ArrayRef {
            Arc::new(v.iter().copied().collect::<DictionaryArray<Int32Type>>())
        };
        let chunk = |dc: &[&str], host: &[&str], rack: &[&str]| {
            RecordBatch::try_from_iter([
                ("dc", dict(dc)),
                ("host", dict(host)),
                ("rack", dict(rack)),
            ])
            .unwrap()
        };
        // Over two chunks: 3 hosts, 2 racks, 1 dc (the dc column absent from one chunk).
        let a = chunk(&["x", "x"], &["h1", "h2"], &["r1", "r1"]);
        let b = RecordBatch::try_from_iter([
            ("host", dict(&["h2", "h3"])),
            ("rack", dict(&["r1", "r2"])),
        ])
        .unwrap();
        let key = choose_sort_key(&s, [&a, &b]);
        assert_eq!(key, ["host", "rack", "dc"]);

        let mut catalog = Catalog::default();
        catalog.insert("cpu".into(), s);
        catalog.set_sort_key("cpu", key, Some(TIME_SLICE_NANOS));
        assert_eq!(
            catalog.table("cpu").unwrap().time_slice(),
            Some(TIME_SLICE_NANOS)
        );
        // Recorded once: a later choice does not replace it.
        catalog.set_sort_key("cpu", vec!["dc".into()], None);
        let mut t = catalog.table("cpu").unwrap().clone();
        t.add(Column {
            name: "az".into(),
            kind: ColumnKind::Tag,
        });
        t.add(Column {
            name: "zone".into(),
            kind: ColumnKind::Tag,
        });
        assert_eq!(
            t.tag_names().collect::<Vec<_>>(),
            ["host", "rack", "dc", "az", "zone"]
        );
        let json = serde_json::to_string(&t).unwrap();
        assert!(
            json.ends_with(r#""sort_key":["host","rack","dc"],"time_slice_ns":3600000000000}"#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<TableSchema>(&json).unwrap(), t);
    }
}
