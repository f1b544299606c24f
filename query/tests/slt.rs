//! Runs every `tests/slt/*.slt` file with the `sqllogictest` crate.
//!
//! Besides SQL, a file may use these statements:
//! - `WRITE LINES` followed by line protocol (nanosecond timestamps) on the next lines;
//! - `WRITE EVENTS` followed by NDJSON events;
//! - `WRITE FILE <path>`: line protocol from a file under `tests/slt/`;
//! - `CLOCK <RFC 3339 time>`: sets the engine's clock (ingest time, dedup window, the
//!   "now" of `recurrence()`);
//! - `FLUSH`: buffer to Parquet; `COMPACT`: compact every partition with several files;
//! - `EXPLAIN SCAN <query>`: the `VigilScanExec` lines of the plan (files and buffered
//!   days read and pruned);
//! - `EXPLAIN PRUNING <query>`: runs the query and reports, per Parquet scan, how many
//!   row groups its statistics pruned.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use arrow::array::RecordBatch;
use arrow::datatypes::DataType;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use sqllogictest::{DBOutput, DefaultColumnType};
use vigil_query::{LifecycleConfig, QueryConfig};

use crate::common::Store;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct SltError(String);

fn err(e: impl std::fmt::Display) -> SltError {
    SltError(e.to_string())
}

struct VigilDb {
    store: Store,
}

fn strip_word<'a>(text: &'a str, word: &str) -> Option<&'a str> {
    let head = text.get(..word.len())?;
    head.eq_ignore_ascii_case(word).then(|| &text[word.len()..])
}

fn slt_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/slt")
}

#[async_trait::async_trait]
impl sqllogictest::AsyncDB for VigilDb {
    type Error = SltError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SltError> {
        let text = sql.trim();
        if let Some(body) = strip_word(text, "WRITE LINES") {
            let rows = self
                .store
                .write_lines(body.trim_start())
                .await
                .map_err(err)?;
            return Ok(DBOutput::StatementComplete(rows as u64));
        }
        if let Some(body) = strip_word(text, "WRITE EVENTS") {
            let rows = self
                .store
                .write_events(body.trim_start())
                .await
                .map_err(err)?;
            return Ok(DBOutput::StatementComplete(rows as u64));
        }
        if let Some(path) = strip_word(text, "WRITE FILE") {
            let body = std::fs::read_to_string(slt_dir().join(path.trim())).map_err(err)?;
            let rows = self.store.write_lines(&body).await.map_err(err)?;
            return Ok(DBOutput::StatementComplete(rows as u64));
        }
        if let Some(at) = strip_word(text, "CLOCK") {
            let at = chrono::DateTime::parse_from_rfc3339(at.trim()).map_err(err)?;
            let nanos = at
                .timestamp_nanos_opt()
                .ok_or_else(|| err("clock out of range"))?;
            self.store.clock.set(nanos);
            return Ok(DBOutput::StatementComplete(0));
        }
        if text.eq_ignore_ascii_case("FLUSH") {
            self.store.engine.flush().map_err(err)?;
            return Ok(DBOutput::StatementComplete(0));
        }
        if text.eq_ignore_ascii_case("COMPACT") {
            let stop = AtomicBool::new(false);
            let n = self
                .store
                .lifecycle
                .run_once(0, true, &stop)
                .await
                .map_err(err)?;
            return Ok(DBOutput::StatementComplete(n as u64));
        }
        if let Some(query) = strip_word(text, "EXPLAIN SCAN") {
            let batches = self
                .store
                .query
                .collect(&format!("EXPLAIN {query}"))
                .await
                .map_err(err)?;
            let lines = plan_lines(&batches)
                .into_iter()
                .filter_map(|l| l.split_once("VigilScanExec: ").map(|(_, r)| r.to_string()))
                .map(|l| vec![l])
                .collect();
            return Ok(DBOutput::Rows {
                types: vec![DefaultColumnType::Text],
                rows: lines,
            });
        }
        if let Some(query) = strip_word(text, "EXPLAIN PRUNING") {
            let batches = self
                .store
                .query
                .collect(&format!("EXPLAIN ANALYZE {query}"))
                .await
                .map_err(err)?;
            let mut rows = Vec::new();
            for line in plan_lines(&batches) {
                if let Some((_, r)) = line.split_once("VigilScanExec: ") {
                    rows.push(vec![r.split(", metrics").next().unwrap_or(r).to_string()]);
                }
                if let Some(pos) = line.find("row_groups_pruned_statistics=") {
                    let rest = &line[pos..];
                    let end = rest.find([',', ']']).unwrap_or(rest.len());
                    rows.push(vec![rest[..end].trim().to_string()]);
                }
            }
            return Ok(DBOutput::Rows {
                types: vec![DefaultColumnType::Text],
                rows,
            });
        }
        let batches = self.store.query.collect(text).await.map_err(err)?;
        Ok(to_output(&batches)?)
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "vigil"
    }

    async fn sleep(dur: std::time::Duration) {
        tokio::time::sleep(dur).await;
    }
}

/// The plan text of an `EXPLAIN` answer, line by line.
fn plan_lines(batches: &[RecordBatch]) -> Vec<String> {
    let mut out = Vec::new();
    for b in batches {
        let Some(col) = b.column_by_name("plan") else {
            continue;
        };
        let f = ArrayFormatter::try_new(col, &FormatOptions::default()).unwrap();
        for i in 0..b.num_rows() {
            out.extend(f.value(i).to_string().lines().map(|l| l.trim().to_string()));
        }
    }
    out
}

fn to_output(batches: &[RecordBatch]) -> Result<DBOutput<DefaultColumnType>, SltError> {
    let Some(first) = batches.first() else {
        return Ok(DBOutput::Rows {
            types: vec![],
            rows: vec![],
        });
    };
    let types = first
        .schema()
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64 => DefaultColumnType::Integer,
            DataType::Float32 | DataType::Float64 | DataType::Decimal128(..) => {
                DefaultColumnType::FloatingPoint
            }
            _ => DefaultColumnType::Text,
        })
        .collect();
    let options = FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    for b in batches {
        let formatters = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c, &options))
            .collect::<Result<Vec<_>, _>>()
            .map_err(err)?;
        for i in 0..b.num_rows() {
            rows.push(
                formatters
                    .iter()
                    .map(|f| {
                        let s = f.value(i).to_string();
                        if s.is_empty() { "(empty)".into() } else { s }
                    })
                    .collect(),
            );
        }
    }
    Ok(DBOutput::Rows { types, rows })
}

/// Like the default validator, but numbers match within a relative 1e-9, so that an
/// average summed in another order still matches.
fn tolerant_validator(
    normalizer: sqllogictest::Normalizer,
    actual: &[Vec<String>],
    expected: &[String],
) -> bool {
    if expected.iter().any(|l| l.contains("<slt:ignore>")) {
        return sqllogictest::default_validator(normalizer, actual, expected);
    }
    let actual: Vec<String> = actual
        .iter()
        .map(|row| row.iter().map(normalizer).collect::<Vec<_>>().join(" "))
        .collect();
    actual.len() == expected.len()
        && actual.iter().zip(expected).all(|(a, e)| {
            let (a, e) = (a.split_ascii_whitespace(), e.split_ascii_whitespace());
            a.clone().count() == e.clone().count()
                && a.zip(e).all(|(x, y)| {
                    x == y
                        || match (x.parse::<f64>(), y.parse::<f64>()) {
                            (Ok(x), Ok(y)) => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0),
                            _ => false,
                        }
                })
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_logic_tests() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(slt_dir())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "slt"))
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no .slt files in {}",
        slt_dir().display()
    );
    let only = std::env::var("SLT").ok();
    let mut failures = Vec::new();
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        if only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        // A fresh store per file, twice: as configured (these small queries run in one
        // partition) and with every query in two partitions, as large ones run.
        for (mode, parallel_rows) in [("one partition", None), ("two partitions", Some(0))] {
            let mut runner = sqllogictest::Runner::new(|| async move {
                let defaults = QueryConfig::default();
                let query = QueryConfig {
                    parallel_rows: parallel_rows.unwrap_or(defaults.parallel_rows),
                    target_partitions: 2,
                    ..defaults
                };
                Ok(VigilDb {
                    store: Store::new(query, LifecycleConfig::default()),
                })
            });
            runner.with_validator(tolerant_validator);
            if let Err(e) = runner.run_file_async(file).await {
                failures.push(format!("{name} ({mode}): {e}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
