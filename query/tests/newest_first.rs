//! Time slices and newest-first answers over data that spans many hours: overwrites
//! across files, buffer and compaction keep "later write wins", and a query for the
//! newest buckets answers exactly what the query as written answers.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;

use arrow::array::RecordBatch;

use crate::common::{Store, text};

const MINUTE: i64 = 60_000_000_000;

/// A small deterministic generator (xorshift), so that failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Writes sparse data over ~10 hours in four rounds (three flushed to files, one left
/// in the buffer), with overwrites of earlier rows; returns the model: (host, time) →
/// last value written.
async fn load(s: &Store) -> BTreeMap<(u64, i64), i64> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut model = BTreeMap::new();
    for round in 0..4 {
        let mut body = String::new();
        for _ in 0..400 {
            let host = rng.next(3);
            // Minutes 0..600 with long gaps: only some ranges are written.
            let minute =
                [rng.next(40), 200 + rng.next(30), 590 + rng.next(10)][rng.next(3) as usize];
            let t = minute as i64 * MINUTE + rng.next(6) as i64 * 10_000_000_000;
            let v = rng.next(1000) as i64 - round * 7;
            model.insert((host, t), v);
            body.push_str(&format!("cpu,host=h{host} v={v}i {t}\n"));
        }
        s.write_lines(&body).await.unwrap();
        if round < 3 {
            s.engine.flush().unwrap();
        }
    }
    model
}

async fn check_against_model(s: &Store, model: &BTreeMap<(u64, i64), i64>) {
    let mut per_host: BTreeMap<u64, (i64, i64)> = BTreeMap::new();
    for ((h, _), v) in model {
        let e = per_host.entry(*h).or_default();
        e.0 += 1;
        e.1 += v;
    }
    let want: Vec<String> = per_host
        .iter()
        .map(|(h, (n, sum))| format!("h{h} {n} {sum}"))
        .collect();
    let got = s
        .query
        .collect("SELECT host, count(*) AS n, sum(v) AS s FROM cpu GROUP BY host ORDER BY host")
        .await
        .unwrap();
    let got: Vec<String> = text(&got)
        .lines()
        .skip(3)
        .filter(|l| l.starts_with('|'))
        .map(|l| {
            l.split('|')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    assert_eq!(got, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn later_write_wins_across_slices_files_buffer_and_compaction() {
    let s = Store::default();
    let model = load(&s).await;
    check_against_model(&s, &model).await;
    // The overlapping sources are merged as they are sorted (hour, series, time): the
    // plan deduplicates without sorting anything again.
    let plan = text(&s.query.collect("EXPLAIN SELECT * FROM cpu").await.unwrap());
    assert!(plan.contains("DedupExec"), "{plan}");
    assert!(!plan.contains("SortExec"), "{plan}");
    let stop = AtomicBool::new(false);
    assert_eq!(s.lifecycle.run_once(0, true, &stop).await.unwrap(), 1);
    check_against_model(&s, &model).await;
    s.engine.flush().unwrap();
    check_against_model(&s, &model).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newest_buckets_are_those_of_the_query_as_written() {
    let s = Store::default();
    load(&s).await;
    let queries = [
        // The TSBS shape: the newest minutes before a time.
        "SELECT date_bin(INTERVAL '1 minute', time) AS minute, max(v) AS m FROM cpu \
         WHERE time < '1970-01-01T03:25:00Z' GROUP BY minute ORDER BY minute DESC LIMIT 5",
        // More buckets than the first bound holds, across the gaps.
        "SELECT date_bin(INTERVAL '1 minute', time) AS minute, count(*) AS n FROM cpu \
         GROUP BY minute ORDER BY minute DESC LIMIT 50",
        // Grouped by host as well; OFFSET; a tie-break for a stable order.
        "SELECT host, date_bin(INTERVAL '10 minutes', time) AS b, sum(v) AS s FROM cpu \
         GROUP BY host, b ORDER BY b DESC, host LIMIT 7 OFFSET 3",
        // HAVING drops buckets.
        "SELECT date_bin(INTERVAL '1 minute', time) AS minute, count(*) AS n FROM cpu \
         GROUP BY minute HAVING count(*) > 8 ORDER BY minute DESC LIMIT 4",
        // A field filter, an odd stride, an upper bound written the other way round.
        "SELECT date_bin(INTERVAL '7 minutes', time) AS b, \
         min(v) AS lo FROM cpu WHERE v > 500 AND '1970-01-01T09:00:00Z' >= time \
         GROUP BY b ORDER BY b DESC LIMIT 3",
        // More buckets than exist: the query runs as written.
        "SELECT date_bin(INTERVAL '1 hour', time) AS h, count(*) AS n FROM cpu \
         GROUP BY h ORDER BY h DESC LIMIT 100",
        // Nothing before the bound.
        "SELECT date_bin(INTERVAL '1 minute', time) AS minute, count(*) AS n FROM cpu \
         WHERE time < '1970-01-01T00:00:00Z' GROUP BY minute ORDER BY minute DESC LIMIT 5",
    ];
    for sql in queries {
        let newest_first = s.query.collect(sql).await.unwrap();
        let as_written = s
            .query
            .context()
            .sql(sql)
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert_eq!(text(&newest_first), text(&as_written), "{sql}");
    }
    // The first query really has five answers (not a vacuous comparison).
    let first = s.query.collect(queries[0]).await.unwrap();
    assert_eq!(first.iter().map(RecordBatch::num_rows).sum::<usize>(), 5);
}
