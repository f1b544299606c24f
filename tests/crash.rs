//! Kill -9 the server at random moments under concurrent writers, with compaction running
//! all the time: every acknowledged row must be present exactly once afterwards, in the
//! files and in SQL answers.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arrow::array::{Array, AsArray, Int64Array};
use arrow::datatypes::Int32Type;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use rand::Rng;
use std::sync::Mutex;

use crate::server::{Server, free_port};

const CYCLES: usize = 20;
const WRITERS: u64 = 4;
const LINES_PER_BATCH: u64 = 50;

/// (writer, seq) pairs acknowledged by the server.
type Acked = Arc<Mutex<Vec<(u64, u64)>>>;

async fn writer(
    url: String,
    token: String,
    w: u64,
    next_seq: Arc<AtomicU64>,
    acked: Acked,
    stop: Arc<AtomicBool>,
) {
    let client = crate::server::client_with_token(&token, Some(Duration::from_secs(5)));
    while !stop.load(Ordering::Relaxed) {
        let first = next_seq.fetch_add(LINES_PER_BATCH, Ordering::Relaxed);
        let body: String = (first..first + LINES_PER_BATCH)
            .map(|s| {
                format!(
                    "crash,writer=w{w} seq={s}i,v={}.5 {}\n",
                    s % 97,
                    1_700_000_000_000_000_000 + s as i64 * 1000
                )
            })
            .collect();
        match client
            .post(format!("{url}/api/v1/write"))
            .body(body)
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => {
                acked
                    .lock()
                    .unwrap()
                    .extend((first..first + LINES_PER_BATCH).map(|s| (w, s)));
            }
            Ok(r) if r.status() == 503 => tokio::time::sleep(Duration::from_millis(20)).await,
            Ok(r) => panic!("unexpected status {}", r.status()),
            // The server was killed mid-request: not acknowledged, so not counted.
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_under_load_loses_no_acknowledged_row() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // Small flushes so that crashes also hit flushes, checkpoints and WAL truncation, and
    // compaction of every partition with two files, so that they hit compactions too.
    let args = [
        "--lifecycle-interval",
        "50ms",
        "--compaction-max-files",
        "2",
        "--flush-size",
        "64KiB",
        "--max-buffer-size",
        "64MiB",
        "--flush-age",
        "200ms",
        "--wal-segment-size",
        "64KiB",
    ];
    let acked: Acked = Arc::default();
    let seqs: Vec<Arc<AtomicU64>> = (0..WRITERS).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let mut rng = rand::rng();
    for _cycle in 0..CYCLES {
        let server = Server::start(dir.path(), port, &args).await;
        let stop = Arc::new(AtomicBool::new(false));
        let tasks: Vec<_> = (0..WRITERS)
            .map(|w| {
                tokio::spawn(writer(
                    server.url.clone(),
                    server.token.clone(),
                    w,
                    Arc::clone(&seqs[w as usize]),
                    Arc::clone(&acked),
                    Arc::clone(&stop),
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..600))).await;
        server.kill9();
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await.unwrap();
        }
    }
    let server = Server::start(dir.path(), port, &args).await;
    let answer: serde_json::Value = server
        .client()
        .post(format!("{}/api/v1/query", server.url))
        .json(&serde_json::json!({"sql": "SELECT (SELECT count(*) FROM crash) AS n, (SELECT count(*) FROM (SELECT DISTINCT writer, seq FROM crash)) AS d"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    server.terminate();

    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 1000,
        "only {} rows acknowledged: the test did not load the server",
        acked.len()
    );
    let stored = read_rows(dir.path());
    let duplicated: Vec<_> = stored.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(
        duplicated.is_empty(),
        "rows stored more than once: {duplicated:?}"
    );
    let missing: Vec<_> = acked
        .iter()
        .filter(|k| !stored.contains_key(k))
        .take(5)
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged rows lost, e.g. {missing:?}",
        acked.iter().filter(|k| !stored.contains_key(k)).count()
    );
    assert_eq!(
        answer[0]["n"],
        stored.len(),
        "SQL count differs from the files"
    );
    assert_eq!(answer[0]["d"], stored.len(), "SQL sees a row twice");
    let listed = count_files(&dir.path().join("tables"));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("manifest")).unwrap()).unwrap();
    let in_manifest = manifest["tables"]["crash"]["files"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(
        listed, in_manifest,
        "files on disk that the manifest does not list"
    );
    eprintln!(
        "{CYCLES} kill -9 cycles: {} rows acknowledged, {} stored",
        acked.len(),
        stored.len()
    );
}

fn count_files(dir: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        n += if p.is_dir() { count_files(&p) } else { 1 };
    }
    n
}

/// (writer, seq) → how many times it is stored, across the manifest's Parquet files.
fn read_rows(dir: &Path) -> HashMap<(u64, u64), usize> {
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest")).unwrap()).unwrap();
    let mut out = HashMap::new();
    for f in manifest["tables"]["crash"]["files"].as_array().unwrap() {
        let path = dir.join(f["path"].as_str().unwrap());
        let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path).unwrap())
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let writers = batch
                .column_by_name("writer")
                .unwrap()
                .as_dictionary::<Int32Type>();
            let names = writers.values().as_string::<i32>();
            let seqs = batch
                .column_by_name("seq")
                .unwrap()
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap();
            for i in 0..batch.num_rows() {
                let name = names.value(writers.keys().value(i) as usize);
                let w: u64 = name.trim_start_matches('w').parse().unwrap();
                assert!(!seqs.is_null(i));
                *out.entry((w, seqs.value(i) as u64)).or_insert(0) += 1;
            }
        }
    }
    out
}
