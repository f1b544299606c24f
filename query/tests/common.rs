//! A store with its query engine and lifecycle in a temporary directory.

use std::sync::Arc;

use vigil_engine::{
    Engine, EngineConfig, MockTimeProvider, Precision, SystemTimeProvider, TimeProvider,
};
use vigil_query::{Lifecycle, LifecycleConfig, QueryConfig, QueryEngine};
use vigil_wal::{Durability, WalConfig};

pub(crate) struct Store {
    pub(crate) engine: Arc<Engine>,
    pub(crate) query: QueryEngine,
    pub(crate) lifecycle: Lifecycle,
    /// The engine's clock: the time of opening until a test sets it.
    pub(crate) clock: Arc<MockTimeProvider>,
    pub(crate) _dir: tempfile::TempDir,
}

impl Store {
    pub(crate) fn new(query: QueryConfig, lifecycle: LifecycleConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = EngineConfig {
            data_dir: dir.path().to_path_buf(),
            wal: WalConfig {
                durability: Durability::None,
                ..WalConfig::default()
            },
            background_flush: false,
            // Small row groups, so that files have several and pruning shows.
            row_group_rows: 4,
            ..EngineConfig::default()
        };
        let clock = Arc::new(MockTimeProvider::new(SystemTimeProvider.now_nanos()));
        let engine = Arc::new(Engine::open(config, Arc::clone(&clock) as Arc<_>).unwrap());
        Self {
            clock,
            query: QueryEngine::new(Arc::clone(&engine), query).unwrap(),
            lifecycle: Lifecycle::new(Arc::clone(&engine), lifecycle).unwrap(),
            engine,
            _dir: dir,
        }
    }

    pub(crate) fn default() -> Self {
        Self::new(QueryConfig::default(), LifecycleConfig::default())
    }

    pub(crate) async fn write_lines(&self, body: &str) -> Result<usize, vigil_engine::Error> {
        let w = self
            .engine
            .prepare_line_protocol(body.as_bytes(), Precision::Nanoseconds)?;
        Ok(self.engine.commit(w).await?.rows)
    }

    pub(crate) async fn write_events(&self, body: &str) -> Result<usize, vigil_engine::Error> {
        let w = self.engine.prepare_events(body.as_bytes())?;
        Ok(self.engine.commit(w).await?.rows)
    }
}

/// A store with one file: 40 rows of 3 hosts (`cpu,host=h{i % 3} v={i}i`), one a second
/// from the epoch, in row groups of 4 rows.
pub(crate) async fn one_file() -> Store {
    let s = Store::default();
    load_one_file(&s).await;
    s
}

/// Writes [`one_file`]'s rows into `s` and flushes them.
pub(crate) async fn load_one_file(s: &Store) {
    let mut body = String::new();
    for i in 0..40_i64 {
        body.push_str(&format!(
            "cpu,host=h{} v={i}i {}\n",
            i % 3,
            i * 1_000_000_000
        ));
    }
    s.write_lines(&body).await.unwrap();
    s.engine.flush().unwrap();
}

/// Query answers as a table, for assertions on their text.
pub(crate) fn text(batches: &[arrow::array::RecordBatch]) -> String {
    arrow::util::pretty::pretty_format_batches(batches)
        .unwrap()
        .to_string()
}
