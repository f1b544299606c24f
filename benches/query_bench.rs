//! Query benchmark: the TSBS devops queries of `queries/tsbs/` over a compacted data
//! directory, next to DuckDB over the same rows in one Parquet file.
//!
//! ```text
//! cargo bench --bench ingest_load -- generate --rows 17280000 --hosts 4000 --out /tmp/tsbs-12h.lp
//! cargo bench --bench ingest_load -- vigil --file /tmp/tsbs-12h.lp --data-dir /tmp/vigil-12h
//! cargo bench --bench query_bench -- --data-dir /tmp/vigil-12h --runs 10
//! ```
//!
//! The data directory is compacted first (one file per partition), then every query runs
//! once to warm up and `--runs` times; the table gives median and p95 latency of the whole
//! query (planning, execution, collecting every row). Peak RSS is measured over the query
//! runs only. With `--duckdb` (the default) the same queries run in DuckDB
//! (`benches/duckdb_tsbs.py`, `pip install duckdb`) over the compacted Parquet file.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use futures::StreamExt;
use vigil_engine::{Engine, EngineConfig, SystemTimeProvider};
use vigil_query::{Lifecycle, LifecycleConfig, QueryConfig, QueryEngine};

/// The server's allocator (`src/main.rs`), so that queries here allocate as they do there.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
struct Args {
    /// A data directory written by the ingest benchmark.
    #[arg(long)]
    data_dir: PathBuf,
    #[arg(long, default_value = "queries/tsbs")]
    queries: PathBuf,
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Skip DuckDB.
    #[arg(long)]
    no_duckdb: bool,
    /// Only queries whose name contains this.
    #[arg(long)]
    only: Option<String>,
    /// Print each query's `EXPLAIN ANALYZE` (after its timed runs).
    #[arg(long)]
    explain: bool,
    /// Print where each query's time goes (median of `--runs`): SQL to logical plan,
    /// optimisation and physical planning, execution.
    #[arg(long)]
    phases: bool,
    /// Only plan each query (SQL to physical plan) `--runs` times, without executing it,
    /// and print the median: a loop to profile the planner with.
    #[arg(long)]
    plan_only: bool,
    /// Threads (partitions) a query may use; default the number of cores.
    #[arg(long)]
    partitions: Option<usize>,
}

struct Timing {
    rows: usize,
    /// The warm-up run (caches cold).
    first: Duration,
    median: Duration,
    p95: Duration,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse_from(std::env::args().filter(|a| a != "--bench"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let engine = Arc::new(Engine::open(
        EngineConfig {
            data_dir: args.data_dir.clone(),
            background_flush: false,
            ..EngineConfig::default()
        },
        Arc::new(SystemTimeProvider),
    )?);
    engine.flush()?;
    let lifecycle = Lifecycle::new(Arc::clone(&engine), LifecycleConfig::default())?;
    let started = Instant::now();
    let compacted = runtime.block_on(lifecycle.run_once(0, true, &AtomicBool::new(false)))?;
    let manifest = engine.manifest();
    let files: Vec<_> = manifest
        .tables
        .get("cpu")
        .map(|t| t.files.clone())
        .unwrap_or_default();
    let rows: u64 = files.iter().map(|f| f.rows).sum();
    eprintln!(
        "compacted {compacted} partitions in {:.1} s: table cpu has {} files, {rows} rows",
        started.elapsed().as_secs_f64(),
        files.len()
    );
    if files.len() != 1 {
        bail!("expected one compacted file for cpu, found {}", files.len());
    }
    let parquet = args.data_dir.join(&files[0].path);

    // Default memory limit; no row cap or timeout in the way of the big answers.
    let query = QueryEngine::new(
        Arc::clone(&engine),
        QueryConfig {
            max_rows: 1_000_000_000,
            timeout: Duration::from_secs(3600),
            target_partitions: args
                .partitions
                .unwrap_or(QueryConfig::default().target_partitions),
            ..QueryConfig::default()
        },
    )?;
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&args.queries)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .filter(|p| {
            args.only.as_deref().is_none_or(|o| {
                p.file_stem()
                    .is_some_and(|s| s.to_string_lossy().contains(o))
            })
        })
        .collect();
    paths.sort();
    // Peak RSS from here on.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let mut vigil = Vec::new();
    for path in &paths {
        let name = path
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let sql = std::fs::read_to_string(path)?;
        if args.plan_only {
            runtime.block_on(plan_only(&query, &name, &sql, args.runs))?;
            continue;
        }
        let t = runtime
            .block_on(time_query(&query, &sql, args.runs))
            .with_context(|| format!("query {name}"))?;
        eprintln!(
            "vigil  {name:<24} rows {:>7}  first {:>9.2} ms  median {:>9.2} ms  p95 {:>9.2} ms",
            t.rows,
            ms(t.first),
            ms(t.median),
            ms(t.p95)
        );
        if args.explain {
            runtime.block_on(explain(&query, &sql))?;
        }
        if args.phases {
            runtime.block_on(phases(&query, &sql, args.runs))?;
        }
        vigil.push((name, t));
    }
    let peak_rss = peak_rss_mib();

    let mut duck = std::collections::HashMap::new();
    if !args.no_duckdb {
        let out = std::process::Command::new("python3")
            .arg("benches/duckdb_tsbs.py")
            .arg(&parquet)
            .arg(&args.queries)
            .arg(args.runs.to_string())
            .output()
            .context("running python3 benches/duckdb_tsbs.py")?;
        if !out.status.success() {
            bail!(
                "DuckDB run failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let v: serde_json::Value = serde_json::from_str(line)?;
            let name = v["query"].as_str().unwrap_or_default().to_string();
            eprintln!("duckdb {line}");
            duck.insert(name, v);
        }
    }

    println!(
        "\n{rows} rows, {} bytes in one Parquet file; {} runs per query\n",
        files[0].size_bytes, args.runs
    );
    println!(
        "| query | rows | Vigil first run | Vigil median | Vigil p95 | DuckDB median | DuckDB p95 | median ≤ DuckDB |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---|");
    for (name, t) in &vigil {
        let d = duck.get(name);
        let dm = d.and_then(|v| v["median_ms"].as_f64());
        let dp = d.and_then(|v| v["p95_ms"].as_f64());
        let drows = d.and_then(|v| v["rows"].as_u64());
        if let Some(dr) = drows
            && dr as usize != t.rows
        {
            eprintln!(
                "warning: {name}: Vigil returned {} rows, DuckDB {dr}",
                t.rows
            );
        }
        println!(
            "| {name} | {} | {:.1} ms | {:.1} ms | {:.1} ms | {} | {} | {} |",
            t.rows,
            ms(t.first),
            ms(t.median),
            ms(t.p95),
            dm.map_or("–".into(), |v| format!("{v:.1} ms")),
            dp.map_or("–".into(), |v| format!("{v:.1} ms")),
            dm.map_or("–", |v| if ms(t.median) <= v { "yes" } else { "no" }),
        );
    }
    println!("\npeak RSS while querying: {peak_rss} MiB");
    Ok(())
}

async fn time_query(query: &QueryEngine, sql: &str, runs: usize) -> anyhow::Result<Timing> {
    let mut times = Vec::with_capacity(runs);
    let mut rows = 0;
    let mut first = Duration::ZERO;
    for i in 0..=runs {
        let t = Instant::now();
        let mut stream = query.execute(sql).await?;
        let mut n = 0;
        while let Some(b) = stream.next().await {
            n += b?.num_rows();
        }
        if i > 0 {
            times.push(t.elapsed());
        } else {
            first = t.elapsed();
        }
        rows = n;
    }
    times.sort();
    let p95 = times[((times.len() - 1) as f64 * 0.95).round() as usize];
    Ok(Timing {
        rows,
        first,
        median: times[times.len() / 2],
        p95,
    })
}

async fn explain(query: &QueryEngine, sql: &str) -> anyhow::Result<()> {
    let mut stream = query.execute(&format!("EXPLAIN ANALYZE {sql}")).await?;
    while let Some(b) = stream.next().await {
        let b = b?;
        // Columns: plan_type, plan.
        for row in 0..b.num_rows() {
            for col in b.columns() {
                eprintln!("{}", arrow::util::display::array_value_to_string(col, row)?);
            }
        }
    }
    Ok(())
}

/// Plans `sql` `runs` times without executing it and prints the median.
async fn plan_only(query: &QueryEngine, name: &str, sql: &str, runs: usize) -> anyhow::Result<()> {
    let ctx = query.context();
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        query.physical_plan(ctx.sql(sql).await?).await?;
        times.push(t.elapsed());
    }
    times.sort();
    eprintln!(
        "plan   {name:<24} median {:>9.3} ms",
        ms(times[times.len() / 2])
    );
    Ok(())
}

/// Medians of the planning and execution phases, planned as the query engine plans (one
/// partition or all, [`QueryEngine::physical_plan`]) but without its limits and rewrites.
async fn phases(query: &QueryEngine, sql: &str, runs: usize) -> anyhow::Result<()> {
    let ctx = query.context();
    let mut logical = Vec::new();
    let mut physical = Vec::new();
    let mut execution = Vec::new();
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        let df = ctx.sql(sql).await?;
        logical.push(t.elapsed());
        let t = Instant::now();
        let (plan, task) = query.physical_plan(df).await?;
        physical.push(t.elapsed());
        let t = Instant::now();
        datafusion::physical_plan::collect(plan, task).await?;
        execution.push(t.elapsed());
    }
    for v in [&mut logical, &mut physical, &mut execution] {
        v.sort();
    }
    let mid = |v: &Vec<Duration>| ms(v[v.len() / 2]);
    eprintln!(
        "       phases: SQL to logical plan {:.2} ms, optimise + physical plan {:.2} ms, execute {:.2} ms",
        mid(&logical),
        mid(&physical),
        mid(&execution)
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn peak_rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024)
}
