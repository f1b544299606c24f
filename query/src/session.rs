//! The query engine: one DataFusion session over the store, read-only SQL, and the
//! limits every query runs under.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::dataframe::DataFrame;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::TaskContext;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::memory::MemoryStream;
use datafusion::physical_plan::{ExecutionPlan, execute_stream};
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use futures::{Stream, StreamExt};
use vigil_engine::Engine;

use crate::error::QueryError;
use crate::last_value::LastValueRule;
use crate::newest_first::NewestFirst;
use crate::scan::rows_read;
use crate::table::VigilSchema;

/// Limits and settings of the query engine.
#[derive(Debug, Clone)]
pub struct QueryConfig {
    /// Memory all running queries may hold together; beyond it a query spills (sorts)
    /// or fails with "resources exhausted". Default 512 MiB.
    pub memory_limit: usize,
    /// A query running longer is cancelled. Default 60 s.
    pub timeout: Duration,
    /// A result with more rows fails; default 1,000,000.
    pub max_rows: usize,
    /// Threads a query may use; default the number of cores.
    pub target_partitions: usize,
    /// A query whose scans read fewer rows than this runs in one partition: planning and
    /// running it in parallel (repartitioning, merging, a reader per partition) costs more
    /// than it saves. Default 524,288 (four row groups): on 2 cores a TSBS query reading
    /// 272,883 rows of ten fields ran as fast in one partition as in two, and those reading
    /// fewer 20–30 % faster. 0 runs every query in parallel.
    pub parallel_rows: u64,
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            memory_limit: 512 * 1024 * 1024,
            timeout: Duration::from_secs(60),
            max_rows: 1_000_000,
            target_partitions: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            parallel_rows: 524_288,
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    started: AtomicU64,
    failed: AtomicU64,
    running: AtomicUsize,
}

/// Runs SQL over an [`Engine`].
pub struct QueryEngine {
    engine: Arc<Engine>,
    ctx: SessionContext,
    config: QueryConfig,
    counters: Arc<Counters>,
}

impl QueryEngine {
    pub fn new(engine: Arc<Engine>, config: QueryConfig) -> Result<Self, QueryError> {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(config.memory_limit, 1.0)
            .build_arc()?;
        let mut session = SessionConfig::new()
            .with_information_schema(true)
            .with_target_partitions(config.target_partitions.max(1));
        // Late materialisation: filters run on their own columns first, and the other
        // columns are decoded only for the rows that pass (a one-host query decodes
        // one host's values, not a row group's).
        let parquet = &mut session.options_mut().execution.parquet;
        parquet.pushdown_filters = true;
        parquet.reorder_filters = true;
        // The store writes no bloom filters: looking for them costs every file opening.
        parquet.bloom_filter_on_read = false;
        // No predicate cache (the filter columns' decoded values kept for the output): a
        // one-host query reads a few hundred rows of each page, and copying and
        // counting the cached batches costs more than decoding `time` twice: without it the
        // 12-hour single-host TSBS queries take 12–14 % less CPU (means of six noisy
        // passes), and full scans no measurable difference.
        parquet.max_predicate_cache_size = Some(0);
        let ctx = SessionContext::new_with_config_rt(session, runtime);
        let catalog = ctx
            .catalog("datafusion")
            .ok_or_else(|| QueryError::Internal("no default catalog".into()))?;
        ctx.register_udf(crate::functions::DateBin::udf());
        crate::recurrence::register(&ctx, &engine);
        catalog.register_schema(
            "public",
            Arc::new(VigilSchema {
                engine: Arc::clone(&engine),
            }),
        )?;
        ctx.add_analyzer_rule(Arc::new(LastValueRule));
        Ok(Self {
            engine,
            ctx,
            config,
            counters: Arc::default(),
        })
    }

    pub fn config(&self) -> &QueryConfig {
        &self.config
    }

    /// The DataFusion session (for tests and tools; user SQL goes through
    /// [`QueryEngine::execute`]).
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// Queries started, failed, and running now.
    pub fn stats(&self) -> (u64, u64, usize) {
        (
            self.counters.started.load(Ordering::Relaxed),
            self.counters.failed.load(Ordering::Relaxed),
            self.counters.running.load(Ordering::Relaxed),
        )
    }

    /// Plans and starts `sql`. The stream stops with an error at the timeout or past the
    /// row cap; dropping it cancels the query.
    pub async fn execute(&self, sql: &str) -> Result<QueryStream, QueryError> {
        self.counters.started.fetch_add(1, Ordering::Relaxed);
        let result = self.start(sql).await;
        if result.is_err() {
            self.counters.failed.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    async fn start(&self, sql: &str) -> Result<QueryStream, QueryError> {
        let started = Instant::now();
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let timeout = self.config.timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let plan = async {
            let df = self.ctx.sql_with_options(sql, options).await.map_err(|e| {
                let e = QueryError::from(e);
                match e {
                    QueryError::Sql(m) if m.contains("not supported") && is_write(sql) => {
                        QueryError::ReadOnly(m)
                    }
                    other => other,
                }
            })?;
            if let Some(stream) = self.newest_first(&df).await? {
                return Ok(stream);
            }
            // The row cap is counted by `QueryStream` as rows stream out, not planned as
            // a `LIMIT`: DataFusion turns every sort under a limit into a top-k heap of
            // cap + 1 rows, which made ordered queries 5–10 % slower (BENCHMARKS.md).
            let (physical, task) = self.physical_plan(df).await?;
            Ok::<_, QueryError>(execute_stream(physical, task)?)
        };
        let inner = tokio::time::timeout_at(deadline, plan)
            .await
            .map_err(|_| QueryError::Timeout(timeout))??;
        self.counters.running.fetch_add(1, Ordering::Relaxed);
        Ok(QueryStream {
            schema: inner.schema(),
            inner,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            timeout,
            rows: 0,
            max_rows: self.config.max_rows,
            done: false,
            started,
            counters: Arc::clone(&self.counters),
        })
    }

    /// The physical plan of `df` as [`QueryEngine::execute`] runs it, and its task
    /// context. The logical plan is optimised once; its physical plan is made in one
    /// partition first, and kept when its scans read fewer than
    /// [`QueryConfig::parallel_rows`] rows; otherwise it is made again with every
    /// partition (a millisecond or so, against a query that reads that many rows).
    /// `EXPLAIN` shows the plan its query would run.
    pub async fn physical_plan(
        &self,
        df: DataFrame,
    ) -> Result<(Arc<dyn ExecutionPlan>, Arc<TaskContext>), QueryError> {
        let (state, plan) = df.into_parts();
        let plan = state.optimize(&plan)?;
        let physical = async |state: &SessionState, plan: &LogicalPlan| {
            state
                .query_planner()
                .create_physical_plan(plan, state)
                .await
        };
        if state.config().target_partitions() > 1 {
            let mut single = state.clone();
            single
                .config_mut()
                .options_mut()
                .execution
                .target_partitions = 1;
            let small = |p: &Arc<dyn ExecutionPlan>| {
                rows_read(p).is_some_and(|rows| rows < self.config.parallel_rows)
            };
            match &plan {
                // Its query's plan decides (and one that fails to plan shows its error
                // in the explanation, whichever way).
                LogicalPlan::Explain(explain) => {
                    if physical(&single, &explain.plan)
                        .await
                        .is_ok_and(|p| small(&p))
                    {
                        return Ok((physical(&single, &plan).await?, single.task_ctx()));
                    }
                }
                _ => {
                    let p = physical(&single, &plan).await?;
                    if small(&p) {
                        return Ok((p, single.task_ctx()));
                    }
                }
            }
        }
        Ok((physical(&state, &plan).await?, state.task_ctx()))
    }

    /// Runs `df` newest first when it has that shape (see [`crate::newest_first`]) and
    /// returns its answer; `None` when it has not, or when the bound reached the table's
    /// oldest row (then it runs as written).
    async fn newest_first(
        &self,
        df: &DataFrame,
    ) -> Result<Option<SendableRecordBatchStream>, QueryError> {
        let Some(newest_first) = NewestFirst::detect(df.logical_plan()) else {
            return Ok(None);
        };
        let Some((oldest, newest)) = self.engine.time_bounds(&newest_first.table) else {
            return Ok(None);
        };
        for bound in newest_first.bounds(oldest, newest) {
            let plan = newest_first.bounded(df.logical_plan(), bound)?;
            let batches = DataFrame::new(self.ctx.state(), plan).collect().await?;
            let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
            tracing::debug!(table = newest_first.table, bound, rows, "newest first");
            if rows >= newest_first.fetch() {
                // The bounded plan's output schema: what the query as written would give.
                let schema = batches[0].schema();
                return Ok(Some(Box::pin(MemoryStream::try_new(
                    batches, schema, None,
                )?)));
            }
        }
        Ok(None)
    }

    /// Runs `sql` to the end and returns every batch.
    pub async fn collect(&self, sql: &str) -> Result<Vec<RecordBatch>, QueryError> {
        let mut stream = self.execute(sql).await?;
        let mut out = Vec::new();
        while let Some(b) = stream.next().await {
            out.push(b?);
        }
        Ok(out)
    }
}

fn is_write(sql: &str) -> bool {
    let first = sql
        .trim_start()
        .split(|c: char| c.is_whitespace() || c == '(')
        .next()
        .unwrap_or("")
        .to_ascii_uppercase();
    matches!(
        first.as_str(),
        "INSERT"
            | "UPDATE"
            | "DELETE"
            | "CREATE"
            | "DROP"
            | "ALTER"
            | "SET"
            | "TRUNCATE"
            | "COPY"
            | "BEGIN"
            | "COMMIT"
            | "ROLLBACK"
            | "PREPARE"
            | "EXECUTE"
            | "DEALLOCATE"
            | "RESET"
    )
}

/// The result of a query as a stream of batches, under the query's timeout and row cap.
pub struct QueryStream {
    inner: SendableRecordBatchStream,
    schema: SchemaRef,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
    rows: usize,
    max_rows: usize,
    done: bool,
    started: Instant,
    counters: Arc<Counters>,
}

impl QueryStream {
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// Rows returned so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Time since the query was submitted.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    fn fail(&mut self, e: QueryError) -> Poll<Option<Result<RecordBatch, QueryError>>> {
        self.done = true;
        self.counters.failed.fetch_add(1, Ordering::Relaxed);
        Poll::Ready(Some(Err(e)))
    }
}

impl Stream for QueryStream {
    type Item = Result<RecordBatch, QueryError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            let t = self.timeout;
            return self.fail(QueryError::Timeout(t));
        }
        match self.inner.poll_next_unpin(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => self.fail(QueryError::from(e)),
            Poll::Ready(Some(Ok(batch))) => {
                self.rows += batch.num_rows();
                if self.rows > self.max_rows {
                    let n = self.max_rows;
                    return self.fail(QueryError::TooManyRows(n));
                }
                Poll::Ready(Some(Ok(batch)))
            }
        }
    }
}

impl Drop for QueryStream {
    fn drop(&mut self) {
        self.counters.running.fetch_sub(1, Ordering::Relaxed);
    }
}
