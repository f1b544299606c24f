//! The last-value cache against a model: whatever the writes, flushes, restarts and
//! retention passes, `Engine::last_rows` is the newest row of every series.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, Int32Type, TimestampNanosecondType};
use proptest::prelude::*;
use vigil_engine::{Engine, EngineConfig, MockTimeProvider};

use crate::{NOW, write};

#[derive(Debug, Clone)]
enum Op {
    /// Series, time, value.
    Write(Vec<(u8, i64, u8)>),
    Flush,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop::collection::vec((0u8..4, 0i64..6, any::<u8>()), 1..6).prop_map(Op::Write),
        2 => Just(Op::Flush),
        1 => Just(Op::Reopen),
    ]
}

fn open_with(dir: &Path, max_series: usize) -> Engine {
    let config = EngineConfig {
        data_dir: dir.to_path_buf(),
        background_flush: false,
        last_value_max_series: max_series,
        ..EngineConfig::default()
    };
    Engine::open(config, Arc::new(MockTimeProvider::new(NOW))).unwrap()
}

/// Series → (time, value) of `last_rows("m")`.
fn last(engine: &Engine) -> BTreeMap<String, (i64, f64)> {
    let Some(rows) = engine.last_rows("m").unwrap() else {
        return BTreeMap::new();
    };
    decode(&rows)
}

fn decode(rows: &RecordBatch) -> BTreeMap<String, (i64, f64)> {
    let host = rows
        .column_by_name("host")
        .unwrap()
        .as_dictionary::<Int32Type>();
    let hosts = host.values().as_string::<i32>();
    let time = rows
        .column_by_name("time")
        .unwrap()
        .as_primitive::<TimestampNanosecondType>();
    let v = rows
        .column_by_name("v")
        .unwrap()
        .as_primitive::<Float64Type>();
    let mut out = BTreeMap::new();
    for i in 0..rows.num_rows() {
        let key = hosts.value(host.keys().value(i) as usize).to_string();
        assert!(
            out.insert(key, (time.value(i), v.value(i))).is_none(),
            "one row per series"
        );
    }
    out
}

fn run(ops: &[Op], max_series: usize) {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut engine = open_with(dir.path(), max_series);
    // (series, time) → value, later write wins.
    let mut model: BTreeMap<(String, i64), f64> = BTreeMap::new();
    for op in ops {
        match op {
            Op::Write(points) => {
                let body: String = points
                    .iter()
                    .map(|(s, t, v)| format!("m,host=h{s} v={v} {t}\n"))
                    .collect();
                rt.block_on(write(&engine, &body)).unwrap();
                for (s, t, v) in points {
                    model.insert((format!("h{s}"), *t), f64::from(*v));
                }
            }
            Op::Flush => engine.flush().unwrap(),
            Op::Reopen => {
                engine.shutdown().unwrap();
                drop(engine);
                engine = open_with(dir.path(), max_series);
            }
        }
        let mut expected: BTreeMap<String, (i64, f64)> = BTreeMap::new();
        for ((s, t), v) in &model {
            // Ascending time per series: the last one seen is the newest.
            expected.insert(s.clone(), (*t, *v));
        }
        assert_eq!(last(&engine), expected, "after {op:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn last_rows_are_the_newest_row_of_every_series(ops in prop::collection::vec(op(), 1..12)) {
        run(&ops, 1000);
    }

    #[test]
    fn tables_past_the_series_limit_are_read_in_full(ops in prop::collection::vec(op(), 1..8)) {
        run(&ops, 2);
    }
}

#[tokio::test]
async fn retention_makes_the_cache_forget_dropped_rows() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_with(dir.path(), 1000);
    const DAY: i64 = 86_400_000_000_000;
    write(&engine, &format!("m,host=a v=1 {DAY}\nm,host=b v=2 {DAY}"))
        .await
        .unwrap();
    engine.flush().unwrap();
    write(&engine, &format!("m,host=a v=3 {}", 2 * DAY))
        .await
        .unwrap();
    engine.flush().unwrap();
    assert_eq!(last(&engine)["a"], (2 * DAY, 3.0));
    let newest_file = engine.manifest().tables["m"]
        .files
        .iter()
        .find(|f| f.partition == "1970-01-03")
        .unwrap()
        .path
        .clone();
    assert!(engine.replace_files("m", &[newest_file], None).unwrap());
    let after = last(&engine);
    assert_eq!(after["a"], (DAY, 1.0), "the row of the dropped day is gone");
    assert_eq!(after["b"], (DAY, 2.0));
}

#[tokio::test]
async fn buffered_rows_win_over_files_and_new_columns_read_as_null_before() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_with(dir.path(), 1000);
    write(&engine, "m,host=a v=1 5").await.unwrap();
    engine.flush().unwrap();
    write(&engine, "m,host=a v=2,w=7i 5").await.unwrap();
    let rows = engine.last_rows("m").unwrap().unwrap();
    assert_eq!(decode(&rows)["a"], (5, 2.0), "the later write of (a, 5)");
    let w = rows.column_by_name("w").unwrap();
    assert!(!w.is_null(0));
    assert!(engine.last_rows("events").unwrap().is_none());
    assert!(engine.last_rows("nope").unwrap().is_none());
}
