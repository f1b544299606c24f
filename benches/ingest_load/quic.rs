//! The QUIC side of the ingest load generator: agents speaking `vigil/1` directly.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use vigil_api::protocol::{self, Format, Frame, Precision};
use vigil_api::quic::{
    FrameReader, client_config, client_endpoint, read_frame, write_batch, write_frame,
};

use super::{
    LoadArgs, Report, RssSampler, load_server, mpmc, progress_bar, read_batches, spawn_vigil,
    tokio_runtime,
};

pub(super) fn run(
    load: LoadArgs,
    idle: usize,
    active: usize,
    http_first: bool,
    https: bool,
    rounds: usize,
    serve_args: Vec<String>,
) -> anyhow::Result<()> {
    let rt = tokio_runtime();
    // Counted once, before any CPU is measured (reading the file is not part of a load).
    let lines = super::count_lines(&load.file)?;
    // 1. and 2. Throughput over each transport, each load on a fresh server, same data
    // and connections. The order turns by one place every round, so that each transport
    // goes first as often as the others (the first load of a run tends to be slower).
    let mut transports = vec![Transport::Quic, Transport::Http];
    if https {
        transports.push(Transport::Https);
    }
    if http_first {
        transports.rotate_left(1);
    }
    let mut results: Vec<(Transport, f64)> = Vec::new();
    for round in 0..rounds.max(1) {
        let mut order = transports.clone();
        order.rotate_left(round % transports.len());
        for transport in order {
            let mut args = serve_args.clone();
            if transport == Transport::Https {
                args.push("--http-tls".into());
            }
            let rows_per_s = throughput(&rt, &load, lines, &args, transport)?;
            results.push((transport, rows_per_s));
        }
    }
    if rounds > 1 {
        summary(&transports, &results);
    }
    // 3. Memory with idle agents, then peak with active ones.
    let dir = tempfile::tempdir()?;
    let mut s = spawn_vigil(dir.path(), &serve_args)?;
    let base = current_rss(s.pid).unwrap_or(0);
    let conns = rt.block_on(idle_agents(idle, dir.path(), s.quic))?;
    std::thread::sleep(Duration::from_secs(2));
    let with_idle = current_rss(s.pid).unwrap_or(0);
    println!(
        "idle agents:       {} connected; server RSS {:.0} MiB (before: {:.0} MiB)",
        conns.len(),
        with_idle as f64 / 1048576.0,
        base as f64 / 1048576.0
    );
    drop(conns);
    if active == 0 {
        stop(&mut s)?;
        return Ok(());
    }
    let rss = RssSampler::start(s.pid);
    let busy = rt.block_on(load_quic(&load, lines, active, dir.path(), s.quic))?;
    stop(&mut s)?;
    println!(
        "active agents:     {active} loading ({:.0} rows/s, {} batches resent after BUSY); server peak RSS {:.0} MiB",
        busy.rows as f64 / busy.elapsed.as_secs_f64(),
        busy.retries,
        rss.stop().unwrap_or(0) as f64 / 1048576.0
    );
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Quic,
    Http,
    /// HTTP over TLS 1.3 (`vigil serve --http-tls`).
    Https,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::Quic => "QUIC",
            Transport::Http => "HTTP",
            Transport::Https => "HTTPS",
        }
    }
}

/// Loads a fresh server over `transport`, prints the report with the CPU time both sides
/// used, and returns the rows per second.
fn throughput(
    rt: &tokio::runtime::Runtime,
    load: &LoadArgs,
    lines: u64,
    serve_args: &[String],
    transport: Transport,
) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let mut s = spawn_vigil(dir.path(), serve_args)?;
    let rss = RssSampler::start(s.pid);
    let cpu = CpuMeter::start(s.pid);
    let mut report = if transport == Transport::Quic {
        rt.block_on(load_quic(load, lines, load.connections, dir.path(), s.quic))?
    } else {
        let url = format!("{}/api/v1/write", s.url);
        rt.block_on(load_server(load, lines, &url, None, Some(&s)))?
    };
    let cpu = cpu.stop();
    stop(&mut s)?;
    report.peak_rss = rss.stop();
    report.print(&format!("vigil over {}", transport.name()));
    cpu.print(report.rows);
    println!();
    Ok(report.rows as f64 / report.elapsed.as_secs_f64())
}

/// Median rows/s of each transport over the rounds, and QUIC's against each other.
fn summary(transports: &[Transport], results: &[(Transport, f64)]) {
    let median = |t: Transport| {
        let mut v: Vec<f64> = results
            .iter()
            .filter(|(r, _)| *r == t)
            .map(|(_, x)| *x)
            .collect();
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => 0.0,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    };
    let quic = median(Transport::Quic);
    for &t in transports {
        let all: Vec<String> = results
            .iter()
            .filter(|(r, _)| *r == t)
            .map(|(_, x)| format!("{x:.0}"))
            .collect();
        let against = match t {
            Transport::Quic => String::new(),
            _ => format!(" (QUIC: {:.0} %)", 100.0 * quic / median(t)),
        };
        println!(
            "median {:<5}       {:.0} rows/s of {}{against}",
            t.name(),
            median(t),
            all.join(", ")
        );
    }
    println!();
}

pub(super) fn stop(s: &mut super::Spawned) -> anyhow::Result<()> {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(s.pid as i32, libc::SIGTERM) };
    s.child.wait()?;
    Ok(())
}

/// CPU time (user + system) of the server and of this load generator over a load.
struct CpuMeter {
    server: u32,
    at_start: (f64, f64),
}

impl CpuMeter {
    fn start(server: u32) -> Self {
        Self {
            server,
            at_start: (cpu_seconds(&server.to_string()), cpu_seconds("self")),
        }
    }

    fn stop(self) -> CpuUsed {
        CpuUsed {
            server: cpu_seconds(&self.server.to_string()) - self.at_start.0,
            generator: cpu_seconds("self") - self.at_start.1,
        }
    }
}

/// CPU seconds used over a load.
struct CpuUsed {
    server: f64,
    generator: f64,
}

impl CpuUsed {
    fn print(&self, rows: u64) {
        let per_m = 1e6 / rows.max(1) as f64;
        println!(
            "CPU per 1M rows:   server {:.2} s, load generator {:.2} s",
            self.server * per_m,
            self.generator * per_m
        );
    }
}

/// CPU seconds (user + system) process `pid` (or `self`) has used; 0 if unreadable.
fn cpu_seconds(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // utime and stime are fields 14 and 15; the command name (field 2) is in parentheses
    // and may hold spaces, so count from its end (field 3 is the first after it).
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (ticks(11) + ticks(12)) / hz
}

fn current_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn endpoint(data_dir: &Path) -> anyhow::Result<quinn::Endpoint> {
    let config = client_config(&data_dir.join("tls/server.crt"), protocol::ALPN, None)?;
    let endpoint = client_endpoint("127.0.0.1:0".parse()?, config)?;
    Ok(endpoint)
}

async fn connect(
    endpoint: &quinn::Endpoint,
    server: SocketAddr,
    token: &str,
    agent: &str,
) -> anyhow::Result<quinn::Connection> {
    let conn = endpoint.connect(server, "127.0.0.1")?.await?;
    let (mut send, mut recv) = conn.open_bi().await?;
    let hello = Frame::Hello {
        version: protocol::VERSION,
        token: token.into(),
        agent: agent.into(),
    };
    write_frame(&mut send, &hello).await?;
    match read_frame(&mut recv, 1 << 20).await? {
        Some(Frame::Welcome { .. }) => {}
        other => anyhow::bail!("expected WELCOME, got {other:?}"),
    }
    // The control stream stays open with the connection.
    std::mem::forget((send, recv));
    Ok(conn)
}

async fn idle_agents(
    n: usize,
    data_dir: &Path,
    server: SocketAddr,
) -> anyhow::Result<Vec<quinn::Connection>> {
    let token = std::fs::read_to_string(data_dir.join("admin.token"))?;
    // A few client sockets, many connections each.
    let endpoints: Vec<quinn::Endpoint> = (0..8)
        .map(|_| endpoint(data_dir))
        .collect::<Result<_, _>>()?;
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        conns.push(
            connect(
                &endpoints[i % 8],
                server,
                token.trim(),
                &format!("idle-{i}"),
            )
            .await?,
        );
    }
    Ok(conns)
}

/// Loads the server with `agents` agents, each one QUIC connection and one channel with
/// 8 batches in flight, resending from the first unacknowledged batch after BUSY.
async fn load_quic(
    args: &LoadArgs,
    lines: u64,
    agents: usize,
    data_dir: &Path,
    server: SocketAddr,
) -> anyhow::Result<Report> {
    let token = std::fs::read_to_string(data_dir.join("admin.token"))?
        .trim()
        .to_string();
    let progress = progress_bar(lines, "QUIC");
    let (tx, rx) = mpmc::bounded(agents * 2);
    let file = args.file.clone();
    let batch = args.batch;
    let reader = std::thread::spawn(move || read_batches(&file, batch, tx));
    let rows = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let retries = Arc::new(AtomicU64::new(0));
    let endpoint = endpoint(data_dir)?;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for a in 0..agents {
        let rx = rx.clone();
        let (rows, bytes, retries) = (Arc::clone(&rows), Arc::clone(&bytes), Arc::clone(&retries));
        let progress = progress.clone();
        let endpoint = endpoint.clone();
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            let conn = connect(&endpoint, server, &token, &format!("load-{a}")).await?;
            let mut hist = Histogram::<u64>::new(3)?;
            let mut seq = 0u64;
            let mut inflight: VecDeque<(u64, u64, Bytes, Instant)> = VecDeque::new();
            let mut done = false;
            'stream: loop {
                let (mut send, recv) = conn.open_bi().await?;
                write_frame(&mut send, &Frame::Open { channel: 0 }).await?;
                // Answers are read in a `select!`: a cancel-safe reader.
                let mut recv = FrameReader::new(recv, 1 << 20);
                let Some(Frame::Resume { .. }) = recv.next().await? else {
                    anyhow::bail!("no RESUME");
                };
                let mut broken = false;
                for (s, _, body, _) in &inflight {
                    if write_batch(&mut send, *s, LP_NS, body.clone()).await.is_err() {
                        broken = true;
                        break;
                    }
                }
                loop {
                    if broken {
                        // The server stopped reading (after BUSY): take the answers it
                        // sent, then resend the rest on a new stream.
                        while let Ok(Some(Frame::Ack { .. })) = recv.next().await {
                            if let Some((_, n, body, t)) = inflight.pop_front() {
                                hist.record(t.elapsed().as_micros() as u64)?;
                                rows.fetch_add(n, Ordering::Relaxed);
                                bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
                                progress.inc(n);
                            }
                        }
                        retries.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue 'stream;
                    }
                    if done && inflight.is_empty() {
                        let _ = send.finish();
                        break 'stream;
                    }
                    tokio::select! {
                        next = rx.recv_async(), if !done && inflight.len() < 8 => match next {
                            Ok((n, body)) => {
                                seq += 1;
                                inflight.push_back((seq, n, body.clone(), Instant::now()));
                                broken = write_batch(&mut send, seq, LP_NS, body).await.is_err();
                            }
                            Err(()) => done = true,
                        },
                        answer = recv.next(), if !inflight.is_empty() => match answer.unwrap_or(None) {
                            Some(Frame::Ack { seq: s, .. }) => {
                                let Some((f, n, body, t)) = inflight.pop_front() else {
                                    anyhow::bail!("ACK {s} with nothing in flight");
                                };
                                anyhow::ensure!(f == s, "ACK {s}, expected {f}");
                                hist.record(t.elapsed().as_micros() as u64)?;
                                rows.fetch_add(n, Ordering::Relaxed);
                                bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
                                progress.inc(n);
                            }
                            Some(Frame::Busy { retry_after_ms, .. }) => {
                                retries.fetch_add(1, Ordering::Relaxed);
                                tokio::time::sleep(Duration::from_millis(u64::from(retry_after_ms).min(100))).await;
                                continue 'stream;
                            }
                            None => broken = true,
                            other => anyhow::bail!("unexpected answer {other:?}"),
                        },
                    }
                }
            }
            if a == 0 {
                let stats = conn.stats();
                println!(
                    "agent 0:           path MTU {} bytes, {} UDP sends, {} receives",
                    stats.path.current_mtu, stats.udp_tx.ios, stats.udp_rx.ios
                );
            }
            conn.close(0u32.into(), b"done");
            Ok::<_, anyhow::Error>(hist)
        }));
    }
    let mut latency = Histogram::<u64>::new(3)?;
    for t in tasks {
        latency.add(t.await??)?;
    }
    let elapsed = start.elapsed();
    progress.finish_and_clear();
    reader.join().expect("reader thread")?;
    Ok(Report {
        rows: rows.load(Ordering::Relaxed),
        bytes: bytes.load(Ordering::Relaxed),
        elapsed,
        latency,
        retries: retries.load(Ordering::Relaxed),
        peak_rss: None,
    })
}

const LP_NS: Format = Format::LineProtocol(Precision::Nanoseconds);
