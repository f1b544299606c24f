//! The events side of the ingest load generator: log messages of 14 systems (the grouping
//! corpus, `engine/tests/grouping/corpus.txt`) as NDJSON events, loaded into a server with
//! fingerprinting and deduplication on, then into one with both off.

use std::io::{BufWriter, Write};
use std::path::Path;

#[path = "../../engine/tests/grouping/corpus.rs"]
mod corpus;

use super::{LoadArgs, RssSampler, load_server, progress_bar, spawn_vigil, tokio_runtime};

/// Writes `rows` unique events (each has its own `n`), one per 10 ms from 2026-01-01.
pub(super) fn generate(rows: u64, out: &Path) -> anyhow::Result<()> {
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(out)?);
    let progress = progress_bar(rows, "generating");
    let start_ms: u64 = 1_767_225_600_000;
    let mut n = 0u64;
    let mut seed = 1;
    let severities = ["info", "info", "info", "warning", "error"];
    'outer: loop {
        for (i, line) in corpus::generate(seed, 200).into_iter().enumerate() {
            if n == rows {
                break 'outer;
            }
            let event = serde_json::json!({
                "time": format!("{}", chrono_ms(start_ms + n * 10)),
                "severity": severities[i % severities.len()],
                "service": line.system,
                "system_id": format!("host-{}", n % 200),
                "message": line.message,
                "n": n,
            });
            serde_json::to_writer(&mut w, &event)?;
            w.write_all(b"\n")?;
            n += 1;
            progress.inc(1);
        }
        seed += 1;
    }
    w.flush()?;
    progress.finish_and_clear();
    println!("wrote {n} events to {}", out.display());
    Ok(())
}

fn chrono_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// Loads the events into a fresh server with fingerprinting and dedup on, then into one
/// with both off, and prints the slowdown.
pub(super) fn run(load: LoadArgs, serve_args: Vec<String>) -> anyhow::Result<()> {
    let rt = tokio_runtime();
    let lines = super::count_lines(&load.file)?;
    let mut rates = Vec::new();
    for (name, extra) in [
        ("grouping + dedup on", vec![]),
        (
            "grouping + dedup off",
            vec!["--grouping", "false", "--dedup-window", "0s"],
        ),
    ] {
        let dir = tempfile::tempdir()?;
        let mut args = serve_args.clone();
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut s = spawn_vigil(dir.path(), &args)?;
        let rss = RssSampler::start(s.pid);
        let mut report = rt.block_on(load_server(
            &load,
            lines,
            &format!("{}/api/v1/events", s.url),
            None,
            Some(&s),
        ))?;
        super::quic::stop(&mut s)?;
        report.peak_rss = rss.stop();
        report.print(name);
        println!();
        rates.push(report.rows as f64 / report.elapsed.as_secs_f64());
    }
    println!(
        "fingerprinting + dedup cost: {:.1} % slower ({:.0} against {:.0} events/s; target at most 15 %)",
        (1.0 - rates[0] / rates[1]) * 100.0,
        rates[0],
        rates[1]
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates() {
        assert_eq!(
            super::chrono_ms(1_767_225_600_000),
            "2026-01-01T00:00:00.000Z"
        );
    }
}
