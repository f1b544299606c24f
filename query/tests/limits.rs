//! Safety limits (memory, time, rows, cancellation) and the lifetime of replaced files.

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use futures::StreamExt;
use vigil_query::{LifecycleConfig, QueryConfig, QueryError};

use crate::common::Store;

fn store(config: QueryConfig) -> Store {
    Store::new(config, LifecycleConfig::default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_over_the_memory_limit_fails_and_the_next_one_runs() {
    let s = store(QueryConfig {
        memory_limit: 4 * 1024 * 1024,
        ..QueryConfig::default()
    });
    let err = s
        .query
        .collect(
            "SELECT count(*) FROM generate_series(1, 2000000) a \
             JOIN generate_series(1, 2000000) b ON a.value = b.value",
        )
        .await
        .unwrap_err();
    assert!(matches!(err, QueryError::ResourcesExhausted(_)), "{err:?}");
    assert!(err.to_string().starts_with("resources exhausted"), "{err}");
    let ok = s.query.collect("SELECT 1 AS one").await.unwrap();
    assert_eq!(ok[0].num_rows(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_past_its_timeout_is_cancelled() {
    let s = store(QueryConfig {
        timeout: Duration::from_millis(300),
        ..QueryConfig::default()
    });
    let started = Instant::now();
    let err = s
        .query
        .collect("SELECT sum(value) FROM generate_series(1, 100000000000)")
        .await
        .unwrap_err();
    assert!(matches!(err, QueryError::Timeout(_)), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(s.query.stats().2, 0, "no query left running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_are_capped_in_rows() {
    let s = store(QueryConfig {
        max_rows: 10,
        ..QueryConfig::default()
    });
    let rows: usize = s
        .query
        .collect("SELECT * FROM generate_series(1, 10)")
        .await
        .unwrap()
        .iter()
        .map(|b| b.num_rows())
        .sum();
    assert_eq!(rows, 10);
    // Also when the rows come out of a sort.
    for sql in [
        "SELECT * FROM generate_series(1, 11)",
        "SELECT value FROM generate_series(1, 11) ORDER BY value DESC",
    ] {
        let err = s.query.collect(sql).await.unwrap_err();
        assert!(matches!(err, QueryError::TooManyRows(10)), "{sql}: {err:?}");
    }
}

/// Dropping a query's stream (as the HTTP server does when the client goes away) stops
/// its work: the memory its operators reserved is returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_stream_cancels_the_query() {
    let s = store(QueryConfig::default());
    let pool = std::sync::Arc::clone(&s.query.context().runtime_env().memory_pool);
    let mut stream = s
        .query
        .execute("SELECT value FROM generate_series(1, 2000000000) ORDER BY value DESC")
        .await
        .unwrap();
    let poller = tokio::spawn(async move {
        let _ = stream.next().await;
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while pool.reserved() == 0 {
        assert!(Instant::now() < deadline, "the sort never reserved memory");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(s.query.stats().2, 1);
    poller.abort();
    let _ = poller.await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while pool.reserved() != 0 {
        assert!(
            Instant::now() < deadline,
            "memory still reserved after cancel"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(s.query.stats().2, 0);
}

/// A compaction replaces files that a running query reads; they stay on disk until the
/// query ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_files_live_until_their_last_reader_ends() {
    let s = store(QueryConfig::default());
    s.write_lines("m,h=a v=1 10\nm,h=b v=2 10").await.unwrap();
    s.engine.flush().unwrap();
    s.write_lines("m,h=a v=3 10").await.unwrap();
    s.engine.flush().unwrap();
    let old: Vec<_> = s
        .engine
        .snapshot("m")
        .unwrap()
        .unwrap()
        .files
        .iter()
        .map(|f| f.path().to_path_buf())
        .collect();
    assert_eq!(old.len(), 2);
    let mut reader = s
        .query
        .execute("SELECT h, v FROM m ORDER BY h")
        .await
        .unwrap();
    let stop = AtomicBool::new(false);
    assert_eq!(s.lifecycle.run_once(0, true, &stop).await.unwrap(), 1);
    assert_eq!(s.engine.manifest().file_paths().count(), 1);
    assert!(
        old.iter().all(|p| p.exists()),
        "deleted under a running query"
    );
    // The running query still answers from the old files, deduplicated.
    let mut rows = Vec::new();
    while let Some(b) = reader.next().await {
        let b = b.unwrap();
        let f = arrow::util::display::ArrayFormatter::try_new(
            b.column(1),
            &arrow::util::display::FormatOptions::default(),
        )
        .unwrap();
        rows.extend((0..b.num_rows()).map(|i| f.value(i).to_string()));
    }
    assert_eq!(rows, ["3.0", "2.0"]);
    drop(reader);
    assert!(
        old.iter().all(|p| !p.exists()),
        "replaced files not deleted"
    );
    let after = s.query.collect("SELECT sum(v) AS s FROM m").await.unwrap();
    assert_eq!(
        arrow::util::pretty::pretty_format_batches(&after)
            .unwrap()
            .to_string(),
        "+-----+\n| s   |\n+-----+\n| 5.0 |\n+-----+"
    );
}
