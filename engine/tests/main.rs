//! Integration tests of `vigil-engine`: write, flush, restart, recover.

mod engine;
mod events;
mod grouping;
mod last_values;
mod line_protocol;

use std::path::Path;
use std::sync::Arc;

use arrow::array::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use vigil_engine::{Engine, EngineConfig, MockTimeProvider};

const NOW: i64 = 1_700_000_000_000_000_000;

fn config(dir: &Path) -> EngineConfig {
    EngineConfig {
        data_dir: dir.to_path_buf(),
        ..EngineConfig::default()
    }
}

fn open(dir: &Path) -> Engine {
    Engine::open(config(dir), Arc::new(MockTimeProvider::new(NOW))).unwrap()
}

async fn write(engine: &Engine, body: &str) -> vigil_engine::Result<vigil_engine::WriteSummary> {
    let prepared =
        engine.prepare_line_protocol(body.as_bytes(), vigil_engine::Precision::Nanoseconds)?;
    engine.commit(prepared).await
}

/// Every row of a table across the manifest's files, in file order.
fn read_table(
    dir: &Path,
    engine_manifest: &vigil_engine::Manifest,
    table: &str,
) -> Vec<RecordBatch> {
    let Some(t) = engine_manifest.tables.get(table) else {
        return vec![];
    };
    t.files
        .iter()
        .flat_map(|f| {
            let file = std::fs::File::open(dir.join(&f.path)).unwrap();
            ParquetRecordBatchReaderBuilder::try_new(file)
                .unwrap()
                .build()
                .unwrap()
                .map(|b| b.unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn pretty(batches: &[RecordBatch]) -> String {
    batches
        .iter()
        .map(|b| {
            arrow::util::pretty::pretty_format_batches(std::slice::from_ref(b))
                .unwrap()
                .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}
