//! `vigil serve`: opens the engine, serves HTTP, flushes on SIGTERM or ctrl-c.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use tracing_subscriber::EnvFilter;
use vigil_api::{AppState, router};
use vigil_engine::{Engine, SystemTimeProvider};
use vigil_query::{Lifecycle, QueryEngine};
use vigil_wal::Durability;

use crate::config::ServeArgs;

pub(crate) fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.resolve()?;
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&config.log).context("invalid log filter")?)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    if config.engine.wal.durability == Durability::None {
        tracing::warn!(
            "WAL durability is 'none': acknowledged writes can be lost on a crash (benchmarks only)"
        );
    }
    let engine =
        Engine::open(config.engine.clone(), Arc::new(SystemTimeProvider)).with_context(|| {
            format!(
                "opening data directory {}",
                config.engine.data_dir.display()
            )
        })?;
    let engine = Arc::new(engine);
    let query = Arc::new(
        QueryEngine::new(Arc::clone(&engine), config.query.clone())
            .context("starting the query engine")?,
    );
    let stop_lifecycle = Arc::new(AtomicBool::new(false));
    let lifecycle = Lifecycle::new(Arc::clone(&engine), config.lifecycle.clone())
        .context("starting compaction and retention")?
        .spawn(Arc::clone(&stop_lifecycle))
        .context("starting the lifecycle thread")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("vigil-worker")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.http_addr)
            .await
            .with_context(|| format!("binding HTTP address {}", config.http_addr))?;
        tracing::info!(
            http = %listener.local_addr().unwrap_or(config.http_addr),
            data_dir = %config.engine.data_dir.display(),
            "vigil {} listening",
            env!("CARGO_PKG_VERSION")
        );
        let app = router(AppState::new(
            Arc::clone(&engine),
            query,
            config.http.clone(),
        ));
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown_signal())
            .await
            .context("HTTP server failed")
    })?;
    stop_lifecycle.store(true, Ordering::SeqCst);
    let _ = lifecycle.join();
    tracing::info!("shutting down: flushing the write buffer to Parquet");
    engine.shutdown().context("flushing at shutdown")?;
    tracing::info!("shutdown complete");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
