//! Retention and compaction policy.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use vigil_query::{LifecycleConfig, QueryConfig, Retention};

use crate::common::Store;

const DAY: i64 = 86_400 * 1_000_000_000;

async fn count(s: &Store, table: &str) -> String {
    let b = s
        .query
        .collect(&format!("SELECT count(*) AS n FROM {table}"))
        .await
        .unwrap();
    arrow::util::display::ArrayFormatter::try_new(
        b[0].column(0),
        &arrow::util::display::FormatOptions::default(),
    )
    .unwrap()
    .value(0)
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_whole_days_past_the_ttl_per_table() {
    let retention = Retention {
        default: Some(Duration::from_secs(2 * 86_400)),
        tables: HashMap::from([("keep".to_string(), None)]),
    };
    let s = Store::new(
        QueryConfig::default(),
        LifecycleConfig {
            retention,
            ..LifecycleConfig::default()
        },
    );
    // Days 0..5, one file per day and table.
    for day in 0..5 {
        let t = day * DAY + 1000;
        s.write_lines(&format!("m,h=a v={day} {t}\nkeep,h=a v={day} {t}"))
            .await
            .unwrap();
        s.engine.flush().unwrap();
    }
    let old_file = s.engine.snapshot("m").unwrap().unwrap().files[0]
        .path()
        .to_path_buf();
    // "Now" is day 5 at noon: with a TTL of 2 days the cutoff is day 3 at noon, so days
    // 0, 1 and 2 ended before it; day 3 straddles it and stays.
    let now = 5 * DAY + DAY / 2;
    assert_eq!(s.lifecycle.apply_retention(now).unwrap(), 3);
    assert_eq!(count(&s, "m").await, "2");
    assert_eq!(count(&s, "keep").await, "5");
    let left: Vec<i64> = s.engine.manifest().tables["m"]
        .files
        .iter()
        .map(|f| f.min_time / DAY)
        .collect();
    assert_eq!(left, [3, 4]);
    assert!(!old_file.exists(), "dropped file still on disk");
    // Nothing more to drop.
    assert_eq!(s.lifecycle.apply_retention(now).unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_waits_for_enough_files_in_todays_partition() {
    let s = Store::new(
        QueryConfig::default(),
        LifecycleConfig {
            max_files: 3,
            ..LifecycleConfig::default()
        },
    );
    let stop = AtomicBool::new(false);
    let today = 10 * DAY;
    for i in 0..2 {
        s.write_lines(&format!("m,h=a v={i} {}", today + i))
            .await
            .unwrap();
        s.engine.flush().unwrap();
    }
    // Today's partition with two files: not yet.
    assert_eq!(
        s.lifecycle
            .run_once(today + DAY / 2, false, &stop)
            .await
            .unwrap(),
        0
    );
    s.write_lines(&format!("m,h=a v=2 {}", today + 2))
        .await
        .unwrap();
    s.engine.flush().unwrap();
    // Three files: compacted.
    assert_eq!(
        s.lifecycle
            .run_once(today + DAY / 2, false, &stop)
            .await
            .unwrap(),
        1
    );
    assert_eq!(s.engine.manifest().tables["m"].files.len(), 1);
    // An earlier day is compacted from two files.
    s.write_lines(&format!("m,h=a v=9 {}", today + 5))
        .await
        .unwrap();
    s.engine.flush().unwrap();
    assert_eq!(
        s.lifecycle
            .run_once(today + DAY / 2, false, &stop)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        s.lifecycle
            .run_once(today + 3 * DAY, false, &stop)
            .await
            .unwrap(),
        1
    );
    assert_eq!(count(&s, "m").await, "4");
}
