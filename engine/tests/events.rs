//! Fingerprints, dedup and recurrence of events across writes, flushes, crashes and
//! restarts.

use std::path::Path;
use std::sync::Arc;

use vigil_engine::{
    BUCKET_NANOS, Engine, EngineConfig, MockTimeProvider, RecurrenceQuery, RecurrenceStatus,
};

use crate::NOW;
use crate::engine::copy_dir;

const MINUTE: i64 = 60_000_000_000;

fn open_at(dir: &Path, clock: &Arc<MockTimeProvider>) -> Engine {
    let config = EngineConfig {
        data_dir: dir.to_path_buf(),
        background_flush: false,
        ..EngineConfig::default()
    };
    Engine::open(config, Arc::clone(clock) as Arc<_>).unwrap()
}

/// Writes NDJSON events; returns (stored, duplicates).
async fn events(engine: &Engine, body: &str) -> (usize, usize) {
    let p = engine.prepare_events(body.as_bytes()).unwrap();
    let s = engine.commit(p).await.unwrap();
    (s.rows, s.duplicates)
}

/// A crash: the engine is forgotten (no shutdown flush) and its directory copied as
/// the crash would leave it.
fn crash(engine: Engine, dir: &Path) -> tempfile::TempDir {
    std::mem::forget(engine);
    let copy = tempfile::tempdir().unwrap();
    copy_dir(dir, copy.path());
    copy
}

fn fingerprint_of(engine: &Engine, sample_contains: &str) -> u64 {
    engine
        .fingerprints()
        .into_iter()
        .find(|(_, s, _)| s.sample.contains(sample_contains))
        .map(|(fp, _, _)| fp)
        .unwrap_or_else(|| panic!("no fingerprint with a sample like '{sample_contains}'"))
}

#[tokio::test]
async fn duplicates_are_stored_once_within_the_window_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(MockTimeProvider::new(NOW));
    let engine = open_at(dir.path(), &clock);
    let body =
        "{\"event_id\":\"a\",\"message\":\"one\"}\n{\"message\":\"two\",\"service\":\"s\"}\n";
    assert_eq!(events(&engine, body).await, (2, 0));
    assert_eq!(events(&engine, body).await, (0, 2), "same id, same content");
    let reordered = "{\"service\":\"s\",\"message\":\"two\"}\n{\"message\":\"two\",\"service\":\"s\",\"x\":1}\n";
    assert_eq!(
        events(&engine, reordered).await,
        (1, 1),
        "key order does not matter"
    );
    assert_eq!(engine.stats().event_duplicates, 3);

    // Crash before any flush: the WAL replay restores the keys.
    let copy = crash(engine, dir.path());
    let engine = open_at(copy.path(), &clock);
    assert_eq!(events(&engine, body).await, (0, 2));
    // Flush (keys now in a key file), then restart.
    engine.flush().unwrap();
    drop(engine);
    let engine = open_at(copy.path(), &clock);
    assert_eq!(events(&engine, body).await, (0, 2));
    // After the window, the same event is new again.
    clock.set(NOW + 15 * MINUTE);
    assert_eq!(events(&engine, body).await, (2, 0));
    engine.flush().unwrap();
    drop(engine);
    let engine = open_at(copy.path(), &clock);
    assert_eq!(events(&engine, body).await, (0, 2));
}

#[tokio::test]
async fn a_dropped_write_gives_its_dedup_keys_back() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(MockTimeProvider::new(NOW));
    let engine = open_at(dir.path(), &clock);
    let body = "{\"event_id\":\"z\",\"message\":\"m\"}";
    let prepared = engine.prepare_events(body.as_bytes()).unwrap();
    drop(prepared);
    assert_eq!(
        events(&engine, body).await,
        (1, 0),
        "not a duplicate of a write never made"
    );
}

#[tokio::test]
async fn fingerprints_are_stable_across_crashes_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(MockTimeProvider::new(NOW));
    let engine = open_at(dir.path(), &clock);
    events(&engine, "{\"message\":\"user alice logged in from 10.0.0.1\"}\n{\"message\":\"user bob logged in from 10.0.0.2\"}").await;
    let fp = fingerprint_of(&engine, "alice");
    assert_eq!(engine.fingerprints().len(), 1, "one group");

    let copy = crash(engine, dir.path());
    let engine = open_at(copy.path(), &clock);
    events(
        &engine,
        "{\"message\":\"user carol logged in from 10.0.0.3\"}",
    )
    .await;
    assert_eq!(
        engine.fingerprints().len(),
        1,
        "the replayed cluster took carol"
    );
    engine.flush().unwrap();
    drop(engine);

    let engine = open_at(copy.path(), &clock);
    events(
        &engine,
        "{\"message\":\"user dave logged in from 10.0.0.4\"}",
    )
    .await;
    let all = engine.fingerprints();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].0, fp);
    assert_eq!(all[0].1.count, 4);
    let info = all[0].2.as_ref().unwrap();
    assert_eq!(info.template, "user <*> logged in from <*>");
    assert_eq!(info.version, vigil_engine::GROUPING_VERSION);
}

#[tokio::test]
async fn recurrence_is_the_same_after_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(MockTimeProvider::new(NOW));
    let engine = open_at(dir.path(), &clock);
    let at = |minutes_ago: i64| (NOW - minutes_ago * MINUTE) / 1_000_000_000;
    let mut body = String::new();
    for m in [50, 40, 5, 4, 3, 2] {
        body.push_str(&format!(
            "{{\"time\":{},\"message\":\"disk sda{m} full\",\"service\":\"db\",\"system_id\":\"h{}\"}}\n",
            at(m),
            m % 2
        ));
    }
    body.push_str(&format!(
        "{{\"time\":{},\"message\":\"fan failure\"}}\n",
        at(1)
    ));
    events(&engine, &body).await;
    let q = RecurrenceQuery {
        now: NOW,
        since: 30 * MINUTE,
        bucket: 10 * MINUTE,
        escalation: 2.0,
    };
    let before = engine.recurrence(&q);
    assert_eq!(before.len(), 2);
    assert_eq!(before[0].count, 4);
    assert_eq!(before[0].previous_count, 2);
    assert_eq!(before[0].status, RecurrenceStatus::Escalating);
    assert_eq!(before[0].systems, ["h0", "h1"]);
    assert_eq!(before[0].services, ["db"]);
    assert_eq!(before[0].buckets, [0, 0, 4]);
    assert_eq!(before[1].status, RecurrenceStatus::New);

    let copy = crash(engine, dir.path());
    let engine = open_at(copy.path(), &clock);
    assert_eq!(engine.recurrence(&q), before, "after WAL replay");
    engine.flush().unwrap();
    drop(engine);
    let engine = open_at(copy.path(), &clock);
    assert_eq!(engine.recurrence(&q), before, "after a checkpoint");
    events(
        &engine,
        &format!("{{\"time\":{},\"message\":\"fan failure\",\"n\":2}}", at(1)),
    )
    .await;
    let after = engine.recurrence(&q);
    assert_eq!(after[1].count, 2);
    assert_eq!(
        after[1].first_seen / BUCKET_NANOS,
        (NOW - MINUTE) / BUCKET_NANOS
    );
}

#[tokio::test]
async fn a_corrupt_state_file_stops_start_up_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(MockTimeProvider::new(NOW));
    {
        let engine = open_at(dir.path(), &clock);
        events(&engine, "{\"message\":\"x\"}").await;
        engine.shutdown().unwrap();
    }
    let state_dir = dir.path().join(vigil_engine::EVENTS_STATE_DIR);
    let state = std::fs::read_dir(&state_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".bin"))
        .unwrap();
    let mut bytes = std::fs::read(&state).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    std::fs::write(&state, bytes).unwrap();
    let err = Engine::open(
        EngineConfig {
            data_dir: dir.path().to_path_buf(),
            ..EngineConfig::default()
        },
        clock as Arc<_>,
    )
    .err()
    .expect("corrupt state refused");
    let text = err.to_string();
    assert!(
        text.contains("checksum mismatch") && text.contains("state-"),
        "{text}"
    );
}
