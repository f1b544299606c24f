use std::sync::Arc;

use vigil_engine::{Engine, EngineConfig, Error, Manifest, MockTimeProvider};

use crate::{NOW, config, open, pretty, read_table, write};

#[tokio::test]
async fn flush_writes_sorted_deduplicated_parquet_and_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    write(&engine, "cpu,host=b u=1 20\ncpu,host=a u=2 10")
        .await
        .unwrap();
    write(&engine, "cpu,host=b u=3 20\ncpu,host=a,dc=x v=1i 10")
        .await
        .unwrap();
    engine.flush().unwrap();
    let m = engine.manifest();
    assert_eq!(m.checkpoint_lsn, 2);
    let text = pretty(&read_table(dir.path(), &m, "cpu"));
    assert!(text.contains("| x  | a    |     | 1 |"), "{text}");
    assert_eq!(
        text.matches("| b ").count(),
        1,
        "later write of (b, 20) replaced the first:\n{text}"
    );
    assert!(text.contains("| 3.0 |"), "{text}");
    assert_eq!(m.tables["cpu"].files[0].partition, "1970-01-01");
}

#[tokio::test]
async fn unflushed_writes_survive_a_restart_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = open(dir.path());
        write(&engine, "m,h=a f=1 1").await.unwrap();
        engine.flush().unwrap();
        write(&engine, "m,h=a f=2 2\nm,h=a g=\"s\" 3")
            .await
            .unwrap();
        // Simulate a crash: no shutdown flush. Forget the engine without dropping it.
        std::mem::forget(engine);
    }
    // The forgotten engine still holds the directory lock; a real crash releases it.
    // Take a copy of the directory, as a crash would leave it.
    let copy = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), copy.path());
    let engine = open(copy.path());
    assert_eq!(
        engine.stats().buffered_rows,
        2,
        "WAL replay restored the unflushed rows"
    );
    assert_eq!(engine.catalog().table("m").unwrap().columns().len(), 4);
    engine.shutdown().unwrap();
    let m = Manifest::load(copy.path()).unwrap();
    let text = pretty(&read_table(copy.path(), &m, "m"));
    assert_eq!(text.matches("| a ").count(), 3, "{text}");
    drop(engine);
    // A second restart replays nothing: everything is behind the checkpoint.
    let engine = open(copy.path());
    assert_eq!(engine.stats().buffered_rows, 0);
}

pub(crate) fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    for entry in walk(from) {
        let rel = entry.strip_prefix(from).unwrap();
        if rel.to_str() == Some("LOCK") {
            continue;
        }
        let target = to.join(rel);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(&entry, &target).unwrap();
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn type_conflict_across_requests_names_table_column_and_types() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    write(&engine, "cpu usage=1").await.unwrap();
    let err = write(&engine, "cpu ok=1\ncpu usage=\"high\"")
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::TypeConflict { line: 2, .. }), "{msg}");
    assert!(
        msg.contains("'cpu'")
            && msg.contains("'usage'")
            && msg.contains("float")
            && msg.contains("string"),
        "{msg}"
    );
    // Nothing of the rejected request was stored, not even its good line or new column.
    assert_eq!(engine.stats().buffered_rows, 1);
    assert!(
        engine
            .catalog()
            .table("cpu")
            .unwrap()
            .column("ok")
            .is_none()
    );
}

#[tokio::test]
async fn a_bad_line_rejects_the_whole_request() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    let err = write(&engine, "cpu a=1\ncpu b=\ncpu c=1\ncpu d=x")
        .await
        .unwrap_err();
    match err {
        Error::ParseMany { count, errors, .. } => {
            assert_eq!(count, 2);
            assert_eq!((errors[0].line, errors[1].line), (2, 4));
        }
        other => panic!("{other}"),
    }
    assert_eq!(engine.stats().buffered_rows, 0);
    assert_eq!(engine.stats().wal_durable_lsn, 0, "nothing reached the WAL");
}

#[tokio::test]
async fn writes_past_the_buffer_limit_are_refused_until_a_flush() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = EngineConfig {
        flush_bytes: 1,
        max_buffer_bytes: 1,
        background_flush: false,
        ..config(dir.path())
    };
    let engine = Engine::open(cfg, Arc::new(MockTimeProvider::new(NOW))).unwrap();
    write(&engine, "m f=1 1").await.unwrap();
    let err = write(&engine, "m f=2 2").await.unwrap_err();
    assert!(matches!(err, Error::Overloaded { limit: 1, .. }), "{err}");
    engine.flush().unwrap();
    write(&engine, "m f=3 3").await.unwrap();
}

#[tokio::test]
async fn events_are_stored_with_their_schema() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    let p = engine
        .prepare_events(br#"[{"message":"boom","severity":"ERR","service":"db","time":"2023-11-14T22:13:20Z"},{"message":"ok"}]"#)
        .unwrap();
    assert_eq!(engine.commit(p).await.unwrap().rows, 2);
    engine.flush().unwrap();
    let m = engine.manifest();
    let files = &m.tables["events"].files;
    assert_eq!(files.len(), 1);
    let text = pretty(&read_table(dir.path(), &m, "events"));
    assert!(
        text.contains("boom") && text.contains("| error    | db "),
        "{text}"
    );
}

#[tokio::test]
async fn unlisted_parquet_files_are_removed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = open(dir.path());
        write(&engine, "m f=1 1").await.unwrap();
        engine.shutdown().unwrap();
    }
    let stray = dir
        .path()
        .join("tables/m/1970-01-01/0000000000000099.parquet");
    std::fs::write(&stray, b"half a file").unwrap();
    std::fs::write(dir.path().join("manifest.tmp"), b"{").unwrap();
    let _engine = open(dir.path());
    assert!(!stray.exists());
    assert!(!dir.path().join("manifest.tmp").exists());
    assert!(
        dir.path()
            .join("tables/m/1970-01-01/0000000000000001.parquet")
            .exists()
    );
}

#[tokio::test]
async fn a_second_engine_cannot_open_the_same_directory() {
    let dir = tempfile::tempdir().unwrap();
    let _first = open(dir.path());
    let err = Engine::open(config(dir.path()), Arc::new(MockTimeProvider::new(NOW)))
        .err()
        .unwrap();
    assert!(err.to_string().contains("in use"), "{err}");
}

#[tokio::test]
async fn concurrent_writers_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(open(dir.path()));
    let mut tasks = Vec::new();
    for w in 0..8 {
        let engine = Arc::clone(&engine);
        tasks.push(tokio::spawn(async move {
            for i in 0..50 {
                let body = format!("m,w=w{w} f={i} {}", i + 1);
                write(&engine, &body).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    engine.flush().unwrap();
    let m = engine.manifest();
    let rows: usize = read_table(dir.path(), &m, "m")
        .iter()
        .map(|b| b.num_rows())
        .sum();
    assert_eq!(rows, 400);
    assert_eq!(m.checkpoint_lsn, 400);
}

#[tokio::test]
async fn shipped_batches_are_stored_once_across_restarts() {
    use vigil_engine::{Delivery, Origin};
    async fn ship(engine: &Engine, channel: u32, seq: u64, body: &str) -> Delivery {
        let write = engine
            .prepare_line_protocol(body.as_bytes(), vigil_engine::Precision::Nanoseconds)
            .unwrap();
        let origin = Origin {
            agent: "agent-a".into(),
            channel,
            seq,
        };
        engine.commit_shipped(write, &origin).await.unwrap()
    }
    fn stored(d: Delivery) -> bool {
        matches!(d, Delivery::Stored(_))
    }
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = open(dir.path());
        assert!(stored(ship(&engine, 0, 1, "m,h=a f=1 1").await));
        assert!(stored(ship(&engine, 0, 2, "m,h=a f=2 2").await));
        assert_eq!(
            ship(&engine, 0, 2, "m,h=a f=2 2").await,
            Delivery::Duplicate { stored_seq: 2 }
        );
        assert_eq!(
            ship(&engine, 0, 1, "m,h=a f=1 1").await,
            Delivery::Duplicate { stored_seq: 2 }
        );
        // Channels are independent.
        assert!(stored(ship(&engine, 1, 1, "m,h=b f=1 1").await));
        std::mem::forget(engine);
    }
    // After a crash, the WAL replay remembers the sequences.
    let copy = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), copy.path());
    {
        let engine = open(copy.path());
        assert_eq!(engine.shipped_seq("agent-a", 0), 2);
        assert!(!stored(ship(&engine, 0, 2, "m,h=a f=2 2").await));
        // Flushed: the manifest remembers them once the WAL is truncated.
        engine.shutdown().unwrap();
    }
    let engine = open(copy.path());
    assert_eq!(engine.manifest().shipped["agent-a"][&1], 1);
    assert_eq!(engine.stats().buffered_rows, 0);
    assert!(!stored(ship(&engine, 1, 1, "m,h=b f=1 1").await));
    assert!(stored(ship(&engine, 0, 3, "m,h=a f=3 3").await));
    engine.shutdown().unwrap();
    let m = Manifest::load(copy.path()).unwrap();
    let text = pretty(&read_table(copy.path(), &m, "m"));
    assert_eq!(text.matches("| a ").count(), 3, "{text}");
    assert_eq!(text.matches("| b ").count(), 1, "{text}");
}

/// Sort order of the table's files, as column names, from the Parquet footer.
fn sorting_columns(dir: &std::path::Path, m: &Manifest, table: &str) -> Vec<Vec<String>> {
    m.tables[table]
        .files
        .iter()
        .map(|f| {
            let file = std::fs::File::open(dir.join(&f.path)).unwrap();
            let reader = parquet::file::reader::SerializedFileReader::new(file).unwrap();
            let meta = parquet::file::reader::FileReader::metadata(&reader);
            let schema = meta.file_metadata().schema_descr();
            meta.row_group(0)
                .sorting_columns()
                .unwrap()
                .iter()
                .map(|c| schema.column(c.column_idx as usize).name().to_string())
                .collect()
        })
        .collect()
}

#[tokio::test]
async fn files_use_small_pages_lz4_for_numbers_and_zstd_for_text() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    // One series, more rows than two pages hold.
    let rows = 2 * vigil_engine::DATA_PAGE_ROWS + 100;
    let body: String = (0..rows)
        .map(|i| format!("cpu,host=a u={i}i,load=0.5,note=\"up\" {}\n", i * 1_000_000))
        .collect();
    write(&engine, &body).await.unwrap();
    engine.flush().unwrap();
    let m = engine.manifest();
    let file = std::fs::File::open(dir.path().join(&m.tables["cpu"].files[0].path)).unwrap();
    let options = parquet::file::serialized_reader::ReadOptionsBuilder::new()
        .with_page_index()
        .build();
    let reader =
        parquet::file::reader::SerializedFileReader::new_with_options(file, options).unwrap();
    let meta = parquet::file::reader::FileReader::metadata(&reader);
    assert_eq!(meta.num_row_groups(), 1);
    let group = meta.row_group(0);
    let codec = |name: &str| {
        let column = group
            .columns()
            .iter()
            .find(|c| c.column_path().string() == name)
            .unwrap_or_else(|| panic!("no column {name}"));
        column.compression().to_string()
    };
    assert_eq!(codec("host"), "LZ4_RAW");
    assert_eq!(codec("time"), "LZ4_RAW");
    assert_eq!(codec("u"), "LZ4_RAW");
    assert_eq!(codec("load"), "LZ4_RAW");
    assert!(codec("note").starts_with("ZSTD"), "{}", codec("note"));
    // Every column's pages hold at most DATA_PAGE_ROWS rows.
    let offsets = meta.offset_index().expect("offset index")[0].clone();
    for (column, index) in group.columns().iter().zip(&offsets) {
        let starts: Vec<i64> = index
            .page_locations()
            .iter()
            .map(|p| p.first_row_index)
            .chain([rows as i64])
            .collect();
        assert_eq!(starts.len(), 4, "{}: {starts:?}", column.column_path());
        assert!(
            starts
                .windows(2)
                .all(|w| w[1] - w[0] <= vigil_engine::DATA_PAGE_ROWS as i64),
            "{}: {starts:?}",
            column.column_path()
        );
    }
    engine.shutdown().unwrap();
}

#[tokio::test]
async fn the_first_flush_fixes_the_series_key_order_for_good() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = open(dir.path());
        // Three hosts in one dc: host leads the key, so one host's rows are one run.
        write(
            &engine,
            "cpu,dc=b,host=h2 u=1 10\ncpu,dc=a,host=h3 u=2 10\ncpu,dc=b,host=h1 u=3 10\ncpu,dc=b,host=h1 u=4 5",
        )
        .await
        .unwrap();
        engine.flush().unwrap();
        let m = engine.manifest();
        assert_eq!(
            m.tables["cpu"].schema.sort_key(),
            Some(&["host".to_string(), "dc".to_string()][..])
        );
        // The default time slice (one hour) is recorded with it.
        assert_eq!(
            m.tables["cpu"].schema.time_slice(),
            Some(vigil_engine::TIME_SLICE_NANOS)
        );
        assert_eq!(
            sorting_columns(dir.path(), &m, "cpu"),
            [["host", "dc", "time"]]
        );
        let text = pretty(&read_table(dir.path(), &m, "cpu"));
        assert_eq!(hosts_in(&text, 2), ["h1", "h1", "h2", "h3"], "{text}");
        engine.shutdown().unwrap();
    }
    // After a restart, with dc now the most varied tag and a new tag, the order stays:
    // the recorded tags first, the new one after them.
    let engine = open(dir.path());
    write(
        &engine,
        "cpu,dc=c,host=h1,az=1 u=1 20\ncpu,dc=d,host=h1 u=1 20\ncpu,dc=e,host=h1 u=1 20",
    )
    .await
    .unwrap();
    engine.flush().unwrap();
    let m = engine.manifest();
    assert_eq!(
        sorting_columns(dir.path(), &m, "cpu"),
        [vec!["host", "dc", "time"], vec!["host", "dc", "az", "time"]]
    );
}

#[tokio::test]
async fn a_table_stored_before_key_orders_were_recorded_keeps_sorting_tags_by_name() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = open(dir.path());
        write(&engine, "cpu,dc=b,host=h2 u=1 10\ncpu,dc=b,host=h1 u=1 10")
            .await
            .unwrap();
        engine.flush().unwrap();
        engine.shutdown().unwrap();
    }
    // Make the manifest look like one written before the key order was recorded.
    let path = dir.path().join("manifest");
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    json["tables"]["cpu"]["schema"]
        .as_object_mut()
        .unwrap()
        .remove("sort_key")
        .expect("the manifest records the key");
    json["tables"]["cpu"]["schema"]
        .as_object_mut()
        .unwrap()
        .remove("time_slice_ns")
        .expect("the manifest records the time slice");
    std::fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
    let engine = open(dir.path());
    write(&engine, "cpu,dc=a,host=h3 u=1 20").await.unwrap();
    engine.flush().unwrap();
    let m = engine.manifest();
    assert_eq!(m.tables["cpu"].schema.sort_key(), None);
    assert_eq!(m.tables["cpu"].schema.time_slice(), None);
    assert_eq!(
        sorting_columns(dir.path(), &m, "cpu")[1],
        ["dc", "host", "time"]
    );
}

#[tokio::test]
async fn tables_created_without_time_slices_sort_by_series_then_time() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(
        EngineConfig {
            time_slice: None,
            ..config(dir.path())
        },
        Arc::new(MockTimeProvider::new(NOW)),
    )
    .unwrap();
    // h2 in hour 0, h1 in hour 1: by series first, h1 leads.
    let hour = 3_600_000_000_000i64;
    write(
        &engine,
        &format!("cpu,host=h2 u=1 10\ncpu,host=h1 u=2 {hour}"),
    )
    .await
    .unwrap();
    engine.flush().unwrap();
    let m = engine.manifest();
    assert_eq!(m.tables["cpu"].schema.time_slice(), None);
    let text = pretty(&read_table(dir.path(), &m, "cpu"));
    assert_eq!(hosts_in(&text, 1), ["h1", "h2"], "{text}");
}

/// The host names (`h…`) in column `column` of a pretty-printed table, in row order.
fn hosts_in(text: &str, column: usize) -> Vec<&str> {
    text.lines()
        .filter_map(|l| l.split('|').nth(column).map(str::trim))
        .filter(|h| h.starts_with('h') && *h != "host")
        .collect()
}

#[tokio::test]
async fn decode_slots_admit_that_many_writes_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(
        Engine::open(
            EngineConfig {
                decoders: 2,
                background_flush: false,
                ..config(dir.path())
            },
            Arc::new(MockTimeProvider::new(NOW)),
        )
        .unwrap(),
    );
    let first = engine.decode_slot().await.unwrap();
    let second = engine.decode_slot().await.unwrap();
    assert_eq!(engine.stats().decode_slots_busy, 2);
    // A third writer waits until a slot is given back.
    let waiting = tokio::spawn({
        let engine = Arc::clone(&engine);
        async move { engine.decode_slot().await.map(|_| ()) }
    });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(!waiting.is_finished(), "a third decode ran beside two");
    drop(first);
    tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
        .await
        .expect("the waiting writer got the freed slot")
        .unwrap()
        .unwrap();
    drop(second);
    assert_eq!(engine.stats().decode_slots_busy, 0);
    assert!(
        EngineConfig {
            decoders: 0,
            ..config(dir.path())
        }
        .validate()
        .is_err()
    );
}
