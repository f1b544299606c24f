//! Grouping and recurrence benchmarks (criterion, one thread: figures are per core).
//!
//! - `group`: masking + clustering + fingerprint of messages from the grouping corpus
//!   (`tests/grouping/corpus.txt`, 14 systems, about 23,000 messages), with a warm grouper:
//!   the steady state of ingest. Throughput in messages/s.
//! - `mask`: the masking normaliser alone (`template()` in SQL).
//! - `recurrence_top50_24h`: `Engine::recurrence` over statistics of 10,000,000 events
//!   spread over 24 hours across 2,000 fingerprints, then the top 50, as
//!   `GET /api/v1/recurrence?since=24h&limit=50` asks it.
//!
//! `cargo bench -p vigil-engine --bench grouping_bench`

#[path = "../tests/grouping/corpus.rs"]
mod corpus;

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vigil_engine::{Grouper, Recurrence, RecurrenceQuery};

fn group(c: &mut Criterion) {
    let lines = corpus::generate(7, 200);
    let grouper = Grouper::default();
    for l in &lines {
        grouper.group(Some(l.system), None, &l.message, None);
    }
    let mut g = c.benchmark_group("grouping");
    g.throughput(Throughput::Elements(lines.len() as u64));
    g.bench_function("group", |b| {
        b.iter(|| {
            for l in &lines {
                black_box(grouper.group(Some(l.system), None, &l.message, None));
            }
        })
    });
    g.bench_function("mask", |b| {
        b.iter(|| {
            for l in &lines {
                black_box(vigil_engine::template(&l.message));
            }
        })
    });
    g.finish();
}

fn recurrence(c: &mut Criterion) {
    const EVENTS: u64 = 10_000_000;
    const FINGERPRINTS: u64 = 2_000;
    const DAY: i64 = 86_400_000_000_000;
    let now = 1_800_000_000_000_000_000;
    let mut rng = corpus::Rng::new(3);
    let mut r = Recurrence::default();
    let services = ["api", "db", "web", "auth"];
    let systems: Vec<String> = (0..50).map(|i| format!("host-{i}")).collect();
    for _ in 0..EVENTS {
        // Skewed: a few fingerprints are most of the events.
        let fp = rng.below(FINGERPRINTS).min(rng.below(FINGERPRINTS));
        let t = now - (rng.below(DAY as u64) as i64);
        r.add_event(
            fp,
            t,
            "sample message",
            "template <*>",
            Some(services[(fp % 4) as usize]),
            Some(&systems[rng.below(50) as usize]),
        );
    }
    let q = RecurrenceQuery {
        now,
        since: DAY,
        bucket: DAY / 24,
        escalation: 2.0,
    };
    let mut g = c.benchmark_group("recurrence");
    g.sample_size(20);
    g.bench_function("top50_24h_10M_events", |b| {
        b.iter(|| {
            let rows = r.query(black_box(&q));
            black_box(rows.into_iter().take(50).count())
        })
    });
    g.finish();
}

criterion_group!(benches, group, recurrence);
criterion_main!(benches);
