//! The shape of a scan's physical plan.

use vigil_query::{LifecycleConfig, QueryConfig};

use crate::common::{Store, load_one_file, one_file, text};

/// A column that only the filter reads is not read for the output: the projection above
/// the scan moves below it, into the Parquet source and the buffer's filter, which then
/// produce only the columns asked for.
#[tokio::test]
async fn a_column_only_the_filter_reads_is_not_read_for_the_output() {
    let s = one_file().await;
    // And rows still in memory, in a later day: a file and a buffer under the scan.
    s.write_lines("cpu,host=h1 v=100i 86400000000000\ncpu,host=h2 v=200i 86400000000000\n")
        .await
        .unwrap();
    let sql = "SELECT sum(v) AS s FROM cpu WHERE host = 'h1'";
    let answer = text(&s.query.collect(sql).await.unwrap());
    // h1 has i = 1, 4, …, 37 (sum 247) and 100 in memory.
    assert!(answer.contains("| 347 |"), "{answer}");
    let plan = text(&s.query.collect(&format!("EXPLAIN {sql}")).await.unwrap());
    let lines: Vec<&str> = plan.lines().collect();
    let scan = lines
        .iter()
        .position(|l| l.contains("VigilScanExec"))
        .unwrap_or_else(|| panic!("no scan: {plan}"));
    assert!(
        !lines[scan - 1].contains("ProjectionExec"),
        "no projection left above the scan: {plan}"
    );
    // Below the scan: the file's source reads `v` alone (its filter reads `host` by
    // itself), and the buffer's filter hands on `v` alone.
    let file = lines[scan..]
        .iter()
        .find(|l| l.contains(".parquet"))
        .unwrap_or_else(|| panic!("no file: {plan}"));
    assert!(file.contains("projection=[v],"), "{plan}");
    assert!(file.contains("predicate=host"), "{plan}");
    let buffer = lines[scan..]
        .iter()
        .find(|l| l.contains("FilterExec"))
        .unwrap_or_else(|| panic!("no filter over the buffer: {plan}"));
    assert!(buffer.contains("projection=[v@"), "{plan}");
}

/// A query that reads few rows is planned and run in one partition; with
/// `parallel_rows` 0 the same query runs in two, and answers the same.
#[tokio::test]
async fn a_small_query_runs_in_one_partition() {
    let sql = "SELECT host, max(v) AS m FROM cpu GROUP BY host ORDER BY host";
    let mut answers = Vec::new();
    for parallel_rows in [QueryConfig::default().parallel_rows, 0] {
        let s = Store::new(
            QueryConfig {
                parallel_rows,
                target_partitions: 2,
                ..QueryConfig::default()
            },
            LifecycleConfig::default(),
        );
        load_one_file(&s).await;
        let plan = text(&s.query.collect(&format!("EXPLAIN {sql}")).await.unwrap());
        let analyzed = text(
            &s.query
                .collect(&format!("EXPLAIN ANALYZE {sql}"))
                .await
                .unwrap(),
        );
        for p in [&plan, &analyzed] {
            if parallel_rows == 0 {
                assert!(p.contains("mode=FinalPartitioned"), "{p}");
            } else {
                assert!(p.contains("AggregateExec: mode=Single"), "{p}");
                assert!(!p.contains("RepartitionExec"), "{p}");
            }
        }
        answers.push(text(&s.query.collect(sql).await.unwrap()));
    }
    assert_eq!(answers[0], answers[1]);
    assert!(answers[0].contains("| h2   | 38 |"), "{}", answers[0]);
}
