//! Parquet metadata stays cached between queries: footers with their page indexes.

use crate::common::{Store, one_file, text};

#[tokio::test]
async fn the_metadata_cache_keeps_each_files_page_index() {
    let s = one_file().await;
    // A time filter that the page index can answer, twice: the second query opens the
    // file from the cache.
    let sql = "SELECT count(*) FROM cpu WHERE time >= '1970-01-01T00:00:10Z' AND host = 'h1'";
    for _ in 0..2 {
        s.query.collect(sql).await.unwrap();
    }
    let cache = s
        .query
        .context()
        .runtime_env()
        .cache_manager
        .get_file_metadata_cache();
    let entries = cache.list_entries();
    assert_eq!(entries.len(), 1, "one file, one cache entry: {entries:?}");
    for (path, entry) in entries {
        let info = entry.value.file_metadata.extra_info();
        assert_eq!(
            info.get("page_index").map(String::as_str),
            Some("true"),
            "{path}: {info:?}"
        );
        assert!(entry.hits >= 1, "{path}: the second query read the cache");
    }
}

/// The answer to `sql` run twice: the first run opens the file (and caches its metadata),
/// the second plans with the cached metadata and must answer the same.
async fn cold_then_warm(s: &Store, sql: &str) -> String {
    let cold = text(&s.query.collect(sql).await.unwrap());
    let warm = text(&s.query.collect(sql).await.unwrap());
    assert_eq!(cold, warm);
    warm
}

/// The byte range of the one file that `EXPLAIN sql` shows.
async fn planned_range(s: &Store, sql: &str) -> (u64, u64) {
    let plan = text(&s.query.collect(&format!("EXPLAIN {sql}")).await.unwrap());
    let file = plan
        .split_whitespace()
        .find(|w| w.contains(".parquet:"))
        .unwrap_or_else(|| panic!("no file range in the plan: {plan}"));
    let range = file
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches([']', '}', ',']);
    let (start, end) = range.split_once("..").unwrap();
    let number = |n: &str| -> u64 { n.parse().unwrap_or_else(|e| panic!("{file}: {e}")) };
    (number(start), number(end))
}

/// With the metadata cached, a time-filtered scan reads only the byte range of the row
/// groups that its time range keeps, and answers as before.
#[tokio::test]
async fn a_time_filter_narrows_the_scan_to_its_row_groups() {
    let s = one_file().await;
    let sql = "SELECT count(*) AS n, sum(v) AS s FROM cpu WHERE time >= '1970-01-01T00:00:30Z'";
    let answer = cold_then_warm(&s, sql).await;
    assert!(answer.contains("| 10 | 345 |"), "{answer}");
    let (start, end) = planned_range(&s, sql).await;
    assert!(
        start > 4,
        "the range skips the early row groups: {start}..{end}"
    );
    assert!(end > start, "{start}..{end}");
}

/// Filters on other columns narrow the range the same way: the rows of the last host sit
/// in the file's last row groups.
#[tokio::test]
async fn a_host_filter_narrows_the_scan_to_its_row_groups() {
    let s = one_file().await;
    let sql = "SELECT count(*) AS n, sum(v) AS s FROM cpu WHERE host = 'h2'";
    let answer = cold_then_warm(&s, sql).await;
    // v = i for i = 2, 5, ..., 38.
    assert!(answer.contains("| 13 | 260 |"), "{answer}");
    let (start, end) = planned_range(&s, sql).await;
    assert!(
        start > 4,
        "the range skips the other hosts' row groups: {start}..{end}"
    );
    let (all_start, all_end) = planned_range(&s, "SELECT count(*) FROM cpu WHERE v >= 0").await;
    assert_eq!(
        all_start, 4,
        "a filter every row group may match keeps the whole file"
    );
    assert_eq!(end, all_end, "h2 runs to the end of the file");
}

/// Files are read from memory maps. A file cut short behind the store's back, after its
/// footer was cached, fails the query with an error naming the file and the bytes asked
/// for (never a read past the end), and the next query over intact data still runs.
#[tokio::test]
async fn a_file_cut_short_fails_the_query_naming_it() {
    let s = one_file().await;
    let sql = "SELECT count(*) AS n, sum(v) AS s FROM cpu";
    assert!(cold_then_warm(&s, sql).await.contains("| 40 | 780 |"));
    let snapshot = s.engine.snapshot("cpu").unwrap().unwrap();
    let path = snapshot.files[0].path().to_path_buf();
    // Past the magic number and into the first column chunk.
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(16).unwrap();
    drop(file);

    let err = s.query.collect(sql).await.unwrap_err().to_string();
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(
        err.contains("are past the end of the file (16 bytes)"),
        "{err}"
    );

    s.write_lines("mem v=1i 1\n").await.unwrap();
    let answer = text(&s.query.collect("SELECT v FROM mem").await.unwrap());
    assert!(answer.contains("| 1 |"), "{answer}");
}
