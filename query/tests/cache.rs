//! Parquet metadata stays cached between queries: footers with their page indexes.

use crate::common::Store;

#[tokio::test]
async fn the_metadata_cache_keeps_each_files_page_index() {
    let s = Store::default();
    let mut body = String::new();
    for i in 0..40_i64 {
        body.push_str(&format!(
            "cpu,host=h{} v={i}i {}\n",
            i % 3,
            i * 1_000_000_000
        ));
    }
    s.write_lines(&body).await.unwrap();
    s.engine.flush().unwrap();
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
