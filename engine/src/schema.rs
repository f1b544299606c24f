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

/// The columns of a table: tags (sorted by name), then fields (sorted), then `time`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSchema {
    columns: Vec<Column>,
}

impl TableSchema {
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// Names of the tag columns, in sort order: the series key.
    pub fn tag_names(&self) -> impl Iterator<Item = &str> {
        self.columns
            .iter()
            .filter(|c| c.kind == ColumnKind::Tag)
            .map(|c| c.name.as_str())
    }

    pub fn arrow_schema(&self) -> SchemaRef {
        let fields: Vec<Field> = self
            .columns
            .iter()
            .map(|c| Field::new(&c.name, c.kind.data_type(), c.kind != ColumnKind::Time))
            .collect();
        Arc::new(Schema::new(fields))
    }

    /// A metric table's schema from the columns of an Arrow schema.
    #[cfg(test)]
    pub(crate) fn from_metric_arrow(schema: &Schema) -> Self {
        let mut s = Self { columns: vec![] };
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
            .or_insert_with(|| TableSchema { columns: vec![] });
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
        let mut s = TableSchema { columns: vec![] };
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
        let mut s = TableSchema { columns: vec![] };
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
}
