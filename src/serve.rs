//! `vigil serve`: opens the engine, serves HTTP, flushes on SIGTERM or ctrl-c.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use axum::serve::ListenerExt;
use tracing_subscriber::EnvFilter;
use vigil_api::auth::{Authenticator, admin_token_path, load_or_create_admin_token};
use vigil_api::quic::{QuicServer, QuicStats, server_identity};
use vigil_api::tls::{TlsListener, https_server_config};
use vigil_api::{AppState, router};
use vigil_engine::{Engine, SystemTimeProvider};
use vigil_query::{Lifecycle, QueryEngine};
use vigil_relational::{Db, Role, SQLITE_FILE};
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
    let data_dir = config.engine.data_dir.clone();
    let (admin_token, created) = load_or_create_admin_token(&data_dir)
        .with_context(|| format!("admin token in {}", data_dir.display()))?;
    if created {
        // Shown once; it stays readable by its owner in the data directory.
        eprintln!(
            "admin token (also in {}): {admin_token}",
            admin_token_path(&data_dir).display()
        );
    }
    let side_store = runtime.block_on(open_side_store(
        &data_dir,
        config.relational_url.as_deref(),
        &admin_token,
        &config.tokens,
    ))?;
    let auth = Arc::new(Authenticator::new(side_store.clone()));
    let identity = server_identity(&config.quic, &data_dir).context("QUIC TLS certificate")?;
    let quic_stats = Arc::new(QuicStats::default());
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.http_addr)
            .await
            .with_context(|| format!("binding HTTP address {}", config.http_addr))?;
        let cert_path = identity.cert_path.clone();
        let fingerprint = identity.fingerprint.clone();
        let https = match config.http_tls {
            true => Some(https_server_config(&identity).context("HTTPS certificate")?),
            false => None,
        };
        let quic = QuicServer::bind(
            config.quic.clone(),
            identity,
            Arc::clone(&engine),
            Arc::clone(&auth),
            Arc::clone(&quic_stats),
        )
        .context("starting the QUIC listener")?;
        tracing::info!(
            http = %listener.local_addr().unwrap_or(config.http_addr),
            scheme = if https.is_some() { "https" } else { "http" },
            quic = %quic.local_addr().unwrap_or(config.quic.addr),
            cert = %cert_path.display(),
            fingerprint = %fingerprint,
            data_dir = %data_dir.display(),
            "vigil {} listening",
            env!("CARGO_PKG_VERSION")
        );
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let quic_task = tokio::spawn(quic.run(async move {
            let mut rx = stop_rx;
            let _ = rx.wait_for(|s| *s).await;
        }));
        let app = router(AppState::with_quic(
            Arc::clone(&engine),
            query,
            auth,
            config.http.clone(),
            quic_stats,
        ));
        // `tap_io` gives both listeners axum's `SocketAddr` connect info, which the
        // audit trail records.
        let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
        let served = match https {
            None => {
                let listener = listener.tap_io(|tcp| {
                    let _ = tcp.set_nodelay(true);
                });
                axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown_signal())
                    .await
            }
            Some(tls) => {
                let listener = TlsListener::new(listener, tls)
                    .context("starting the HTTPS listener")?
                    .tap_io(|_| ());
                axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown_signal())
                    .await
            }
        }
        .context("HTTP server failed");
        let _ = stop_tx.send(true);
        let _ = quic_task.await;
        served
    })?;
    stop_lifecycle.store(true, Ordering::SeqCst);
    let _ = lifecycle.join();
    tracing::info!("shutting down: flushing the write buffer to Parquet");
    runtime.block_on(side_store.close());
    engine.shutdown().context("flushing at shutdown")?;
    tracing::info!("shutdown complete");
    Ok(())
}

/// Opens the side store (applying its migrations) and registers the data directory's admin
/// token and the configured agent tokens in it.
async fn open_side_store(
    data_dir: &std::path::Path,
    url: Option<&str>,
    admin_token: &str,
    agent_tokens: &[String],
) -> anyhow::Result<Db> {
    let db = Db::open(data_dir, url).await.with_context(|| match url {
        Some(_) => "opening the side store on PostgreSQL (--relational-url)".to_string(),
        None => format!(
            "opening the side store {}",
            data_dir.join(SQLITE_FILE).display()
        ),
    })?;
    db.ensure_token("admin (data directory)", Role::Admin, admin_token)
        .await
        .context("registering the admin token in the side store")?;
    for (i, token) in agent_tokens.iter().enumerate() {
        db.ensure_token(&format!("agent (--token {})", i + 1), Role::Agent, token)
            .await
            .context("registering a --token in the side store")?;
    }
    tracing::info!(backend = db.backend(), "side store ready");
    Ok(db)
}

/// SIGINT (ctrl-c) or SIGTERM.
pub(crate) async fn shutdown_signal() {
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
