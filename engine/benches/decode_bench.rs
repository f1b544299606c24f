//! Decoding a write request (criterion, one thread: figures are per core).
//!
//! `prepare_5000_lines`: [`Engine::prepare_line_protocol`] on one request of 5,000 lines of
//! TSBS devops cpu data (10 tags, 10 integer fields, 4,000 hosts), the work a server thread
//! does per request before the WAL: decoding, building Arrow arrays, checking types and
//! encoding the WAL record. Throughput in lines/s.
//!
//! `cargo bench -p vigil-engine --bench decode_bench`

use std::fmt::Write;
use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vigil_engine::{Engine, EngineConfig, Precision, SystemTimeProvider};

/// 5,000 lines as the load generator writes them: one time step of hosts 0..4,000, then
/// the first 1,000 of the next.
fn tsbs_lines() -> String {
    let mut body = String::new();
    for i in 0..5_000u64 {
        let host = i % 4_000;
        let step = i / 4_000;
        let _ = write!(
            body,
            "cpu,hostname=host_{host},region=region-{},datacenter=dc-{},rack={},os=Ubuntu{},\
             arch=x{},team={},service={},service_version={},service_environment={} ",
            host % 9,
            host % 27,
            host % 100,
            host % 3,
            host % 2,
            host % 4,
            host % 20,
            host % 2,
            host % 3,
        );
        for (f, name) in [
            "usage_user",
            "usage_system",
            "usage_idle",
            "usage_nice",
            "usage_iowait",
            "usage_irq",
            "usage_softirq",
            "usage_steal",
            "usage_guest",
            "usage_guest_nice",
        ]
        .iter()
        .enumerate()
        {
            let sep = if f == 0 { "" } else { "," };
            let _ = write!(
                body,
                "{sep}{name}={}i",
                (host * 7 + f as u64 * 13 + step) % 101
            );
        }
        let _ = writeln!(
            body,
            " {}",
            1_451_606_400_000_000_000u64 + step * 10_000_000_000
        );
    }
    body
}

fn prepare(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = EngineConfig {
        data_dir: dir.path().to_path_buf(),
        background_flush: false,
        ..EngineConfig::default()
    };
    let engine = Engine::open(config, Arc::new(SystemTimeProvider)).expect("engine");
    let body = tsbs_lines();
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(5_000));
    g.bench_function("prepare_5000_lines", |b| {
        b.iter(|| {
            black_box(
                engine
                    .prepare_line_protocol(body.as_bytes(), Precision::Nanoseconds)
                    .expect("valid lines"),
            )
        })
    });
    g.finish();
}

criterion_group!(benches, prepare);
criterion_main!(benches);
