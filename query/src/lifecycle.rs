//! The storage lifecycle: compaction and retention, in the background.
//!
//! Compaction merges the Parquet files of a partition into one file sorted like every
//! file of the table (time slice, series, time; see `TableSchema::time_slice`), through the same merge the query scan uses, so "the later write wins" is
//! applied physically. The new file is written beside the old ones, then one atomic
//! manifest change swaps them; the old files are deleted once no running query reads
//! them. A crash at any point leaves either the old files or the new one listed, and
//! the start-up cleanup removes the other.
//!
//! Retention drops whole partitions (days) that ended before `now - ttl`.
//!
//! Both run on one thread with its own single-threaded runtime and memory pool, so they
//! take at most one core and a bounded amount of memory, whatever the data size.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::physical_plan::execute_stream;
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::StreamExt;
use vigil_engine::{EVENTS_TABLE, Engine, TableSnapshot};

use crate::error::QueryError;
use crate::table::{Source, SourceData, merge_plan, sort_key};

const DAY_NANOS: i64 = 86_400 * 1_000_000_000;

/// How long each table's data is kept.
#[derive(Debug, Clone, Default)]
pub struct Retention {
    /// For tables without their own setting; `None` keeps data forever.
    pub default: Option<Duration>,
    /// Per table; `None` keeps that table's data forever.
    pub tables: HashMap<String, Option<Duration>>,
}

impl Retention {
    pub fn ttl(&self, table: &str) -> Option<Duration> {
        self.tables.get(table).copied().unwrap_or(self.default)
    }
}

/// Settings of compaction and retention.
#[derive(Debug, Clone)]
pub struct LifecycleConfig {
    /// How often to look for work; default 60 s.
    pub interval: Duration,
    /// A partition of an earlier day is compacted once it has two files or more; today's
    /// partition (still being written) once it has this many. Default 8.
    pub max_files: usize,
    /// Memory the compaction may use; default 256 MiB.
    pub memory_limit: usize,
    pub retention: Retention,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(60),
            max_files: 8,
            memory_limit: 256 * 1024 * 1024,
            retention: Retention::default(),
        }
    }
}

/// Counters since start, for `/metrics`.
#[derive(Debug, Default)]
pub struct LifecycleStats {
    pub compactions: AtomicU64,
    pub files_compacted: AtomicU64,
    pub partitions_dropped: AtomicU64,
    pub errors: AtomicU64,
}

/// Compaction and retention of one engine.
pub struct Lifecycle {
    engine: Arc<Engine>,
    ctx: SessionContext,
    config: LifecycleConfig,
    stats: Arc<LifecycleStats>,
}

impl Lifecycle {
    pub fn new(engine: Arc<Engine>, config: LifecycleConfig) -> Result<Self, QueryError> {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(config.memory_limit, 1.0)
            .build_arc()?;
        let ctx = SessionContext::new_with_config_rt(
            SessionConfig::new().with_target_partitions(1),
            runtime,
        );
        Ok(Self {
            engine,
            ctx,
            config,
            stats: Arc::default(),
        })
    }

    pub fn stats(&self) -> Arc<LifecycleStats> {
        Arc::clone(&self.stats)
    }

    /// Starts the background thread: every `interval`, retention then compaction, until
    /// `stop` is set.
    pub fn spawn(self, stop: Arc<AtomicBool>) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("vigil-lifecycle".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "lifecycle runtime failed to start");
                        return;
                    }
                };
                let mut next = Instant::now() + self.config.interval;
                while !stop.load(Ordering::SeqCst) {
                    if Instant::now() < next {
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_nanos() as i64)
                        .unwrap_or(0);
                    if let Err(e) = rt.block_on(self.run_once(now, false, &stop)) {
                        self.stats.errors.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(error = %e, "compaction or retention failed; will retry");
                    }
                    next = Instant::now() + self.config.interval;
                }
            })
    }

    /// One pass: retention, then compaction of every partition that needs it (with
    /// `force`, of every partition with more than one file). Returns the number of
    /// partitions compacted.
    pub async fn run_once(
        &self,
        now_nanos: i64,
        force: bool,
        stop: &AtomicBool,
    ) -> Result<usize, QueryError> {
        self.apply_retention(now_nanos)?;
        let today = now_nanos.div_euclid(DAY_NANOS);
        let mut compacted = 0;
        for table in self.engine.table_names() {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let Some(snapshot) = self.snapshot(&table)? else {
                continue;
            };
            let mut by_partition: HashMap<String, Vec<usize>> = HashMap::new();
            for (i, f) in snapshot.files.iter().enumerate() {
                by_partition
                    .entry(f.meta().partition.clone())
                    .or_default()
                    .push(i);
            }
            let mut partitions: Vec<_> = by_partition.into_iter().collect();
            partitions.sort();
            for (partition, files) in partitions {
                let day = snapshot.files[files[0]]
                    .meta()
                    .min_time
                    .div_euclid(DAY_NANOS);
                let due = files.len() >= 2
                    && (force || day < today || files.len() >= self.config.max_files.max(2));
                if !due || stop.load(Ordering::SeqCst) {
                    continue;
                }
                if self.compact(&snapshot, &partition, &files, stop).await? {
                    compacted += 1;
                }
            }
        }
        Ok(compacted)
    }

    fn snapshot(&self, table: &str) -> Result<Option<TableSnapshot>, QueryError> {
        self.engine
            .snapshot(table)
            .map_err(|e| QueryError::Internal(e.to_string()))
    }

    /// Drops every partition of a table with a TTL that ended before `now - ttl`.
    pub fn apply_retention(&self, now_nanos: i64) -> Result<usize, QueryError> {
        let mut dropped = 0;
        for table in self.engine.table_names() {
            let Some(ttl) = self.config.retention.ttl(&table) else {
                continue;
            };
            let cutoff = now_nanos.saturating_sub(ttl.as_nanos().min(i64::MAX as u128) as i64);
            let manifest = self.engine.manifest();
            let Some(t) = manifest.tables.get(&table) else {
                continue;
            };
            let expired: Vec<String> = t
                .files
                .iter()
                .filter(|f| {
                    (f.min_time.div_euclid(DAY_NANOS) + 1).saturating_mul(DAY_NANOS) <= cutoff
                })
                .map(|f| f.path.clone())
                .collect();
            if expired.is_empty() {
                continue;
            }
            let partitions: std::collections::BTreeSet<&str> = t
                .files
                .iter()
                .filter(|f| expired.contains(&f.path))
                .map(|f| f.partition.as_str())
                .collect();
            if self
                .engine
                .replace_files(&table, &expired, None)
                .map_err(|e| QueryError::Internal(e.to_string()))?
            {
                tracing::info!(table, partitions = ?partitions, files = expired.len(), "retention dropped partitions");
                self.stats
                    .partitions_dropped
                    .fetch_add(partitions.len() as u64, Ordering::Relaxed);
                dropped += partitions.len();
            }
        }
        Ok(dropped)
    }

    /// Merges `files` (indices into `snapshot.files`, all of `partition`) into one. Gives
    /// up (deleting its unfinished file) when `stop` is set.
    async fn compact(
        &self,
        snapshot: &TableSnapshot,
        partition: &str,
        files: &[usize],
        stop: &AtomicBool,
    ) -> Result<bool, QueryError> {
        let started = Instant::now();
        let internal = |e: vigil_engine::Error| QueryError::Internal(e.to_string());
        let inputs: Vec<Source> = Source::all(&TableSnapshot {
            name: snapshot.name.clone(),
            schema: snapshot.schema.clone(),
            files: files
                .iter()
                .map(|&i| Arc::clone(&snapshot.files[i]))
                .collect(),
            buffered: Vec::new(),
        });
        let paths: Vec<String> = inputs
            .iter()
            .filter_map(|s| match &s.data {
                SourceData::File(f) => Some(f.meta().path.clone()),
                SourceData::Buffer(_) => None,
            })
            .collect();
        let max_lsn = inputs.iter().map(|s| s.rank).max().unwrap_or(0);
        let rows_in: u64 = inputs.iter().map(|s| s.rows).sum();
        let schema = snapshot.schema.arrow_schema();
        let key = sort_key(snapshot, &schema);
        let all: Vec<usize> = (0..schema.fields().len()).collect();
        let plan = merge_plan(
            &self.ctx.state(),
            &schema,
            &key,
            inputs,
            None,
            &all,
            snapshot.name != EVENTS_TABLE,
        )?;
        let mut writer = self
            .engine
            .partition_writer(&snapshot.name, partition)
            .map_err(internal)?;
        let mut stream = execute_stream(plan, self.ctx.task_ctx())?;
        while let Some(batch) = stream.next().await {
            if stop.load(Ordering::SeqCst) {
                writer.abandon();
                return Ok(false);
            }
            let batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    writer.abandon();
                    return Err(e.into());
                }
            };
            if let Err(e) = writer.write(&batch, max_lsn) {
                writer.abandon();
                return Err(internal(e));
            }
        }
        let meta = writer.finish().map_err(internal)?;
        let (rows_out, bytes_out) = meta
            .as_ref()
            .map(|m| (m.rows, m.size_bytes))
            .unwrap_or((0, 0));
        let new_path = meta.as_ref().map(|m| m.path.clone());
        let swapped = self
            .engine
            .replace_files(&snapshot.name, &paths, meta)
            .map_err(internal)?;
        if !swapped {
            // A retention pass removed an input meanwhile; the new file is not listed.
            if let Some(p) = new_path {
                let _ = std::fs::remove_file(self.engine.data_dir().join(p));
            }
            return Ok(false);
        }
        self.stats.compactions.fetch_add(1, Ordering::Relaxed);
        self.stats
            .files_compacted
            .fetch_add(paths.len() as u64, Ordering::Relaxed);
        tracing::info!(
            table = snapshot.name,
            partition,
            files = paths.len(),
            rows_in,
            rows_out,
            bytes_out,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "compacted"
        );
        Ok(true)
    }
}
