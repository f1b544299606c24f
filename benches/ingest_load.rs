//! HTTP ingest load generator: TSBS "devops cpu-only" data as line protocol.
//!
//! Measures, for a server under several concurrent connections: rows/s and MB/s sustained,
//! acknowledgement latency p50/p99/max per request, the server's peak RSS, and (for Vigil)
//! bytes per row of the Parquet files after the final flush (and, with `--compact`, after
//! compacting every partition).
//!
//! Data (deterministic, seed 1): measurement `cpu`; tags hostname, region, datacenter, rack,
//! os, arch, team, service, service_version, service_environment as TSBS draws them per host;
//! fields usage_user … usage_guest_nice, each a random walk clamped to 0..100, written as
//! integers (`58i`); one row per host every 10 s from 2016-01-01T00:00:00Z, all hosts per step.
//!
//! ```text
//! cargo bench --bench ingest_load -- generate --rows 10000000 --hosts 4000 --out /tmp/tsbs-cpu.lp
//! cargo bench --bench ingest_load -- vigil --file /tmp/tsbs-cpu.lp --connections 4
//! cargo bench --bench ingest_load -- external --file /tmp/tsbs-cpu.lp --url http://127.0.0.1:8428/write --pid $(pidof victoria-metrics)
//! cargo bench --bench ingest_load -- quic --file /tmp/tsbs-cpu.lp --connections 4 --idle 1000 --active 100
//! cargo bench --bench ingest_load -- generate-events --rows 2000000 --out /tmp/events.ndjson
//! cargo bench --bench ingest_load -- events --file /tmp/events.ndjson --connections 4
//! ```
//!
//! `events` loads NDJSON events into a fresh server with fingerprinting and dedup on, then
//! into one started with `--grouping false --dedup-window 0s`, and prints the slowdown.
//!
//! `quic` loads one fresh server over QUIC (`vigil/1`, one agent per connection, 8 batches
//! in flight) and another over HTTP with the same data and connection count, then measures
//! the server's resident memory with `--idle` connected agents that send nothing and its
//! peak with `--active` agents loading it. `--https` adds a load over HTTPS (`--http-tls`,
//! TLS 1.3 with the same certificate), where both transports encrypt; `--rounds N` loads
//! over each transport N times, turning the order every round, and prints the medians.
//!
//! `VIGIL_BENCH_SERVER_LOG=FILE` keeps the server's log (level info: flushes with their rows and
//! duration) in `FILE`; each server started rewrites it.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Write the TSBS cpu-only data set as line protocol.
    Generate {
        #[arg(long, default_value_t = 10_000_000)]
        rows: u64,
        #[arg(long, default_value_t = 4000)]
        hosts: u64,
        #[arg(long)]
        out: PathBuf,
    },
    /// Start the `vigil` binary on a fresh data directory and load it.
    Vigil {
        #[command(flatten)]
        load: LoadArgs,
        /// Extra flags for `vigil serve`.
        #[arg(long, allow_hyphen_values = true, num_args = 0..)]
        serve_args: Vec<String>,
        /// Data directory (default: a fresh temporary directory).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// After the final flush, compact every partition (as the background lifecycle
        /// would) and report bytes per row again.
        #[arg(long)]
        compact: bool,
    },
    /// QUIC against HTTP on fresh servers, then memory with idle and active agents.
    Quic {
        #[command(flatten)]
        load: LoadArgs,
        /// Idle agent connections for the memory figure.
        #[arg(long, default_value_t = 1000)]
        idle: usize,
        /// Active agents for the memory figure.
        #[arg(long, default_value_t = 100)]
        active: usize,
        /// Load over HTTP first, then over QUIC (to see whether the order matters).
        #[arg(long)]
        http_first: bool,
        /// Load over HTTPS (`vigil serve --http-tls`) too.
        #[arg(long)]
        https: bool,
        /// Load over each transport this many times, the order turned by one place every
        /// round, then print each one's median.
        #[arg(long, default_value_t = 1)]
        rounds: usize,
        /// Extra flags for `vigil serve`.
        #[arg(long, allow_hyphen_values = true, num_args = 0..)]
        serve_args: Vec<String>,
    },
    /// Write NDJSON events (log messages of 14 systems) for the `events` load.
    GenerateEvents {
        #[arg(long, default_value_t = 2_000_000)]
        rows: u64,
        #[arg(long)]
        out: PathBuf,
    },
    /// Events into a server with fingerprinting and dedup on, then with both off.
    Events {
        #[command(flatten)]
        load: LoadArgs,
        /// Extra flags for `vigil serve`.
        #[arg(long, allow_hyphen_values = true, num_args = 0..)]
        serve_args: Vec<String>,
    },
    /// Load an already running server (e.g. VictoriaMetrics at /write).
    External {
        #[command(flatten)]
        load: LoadArgs,
        #[arg(long)]
        url: String,
        /// Server process id, to read its peak RSS.
        #[arg(long)]
        pid: Option<u32>,
    },
}

#[derive(clap::Args, Clone)]
struct LoadArgs {
    #[arg(long)]
    file: PathBuf,
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Lines per request.
    #[arg(long, default_value_t = 5000)]
    batch: usize,
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; ignore it.
    let args = std::env::args().filter(|a| a != "--bench");
    match Cli::parse_from(args).command {
        Cmd::Generate { rows, hosts, out } => generate(rows, hosts, &out),
        Cmd::Vigil {
            load,
            serve_args,
            data_dir,
            compact,
        } => run_vigil(load, serve_args, data_dir, compact),
        Cmd::Quic {
            load,
            idle,
            active,
            http_first,
            https,
            rounds,
            serve_args,
        } => quic::run(load, idle, active, http_first, https, rounds, serve_args),
        Cmd::GenerateEvents { rows, out } => events::generate(rows, &out),
        Cmd::Events { load, serve_args } => events::run(load, serve_args),
        Cmd::External { load, url, pid } => {
            let lines = count_lines(&load.file)?;
            let r = tokio_runtime().block_on(load_server(&load, lines, &url, pid, None))?;
            r.print("external");
            Ok(())
        }
    }
}

const REGIONS: [(&str, [&str; 3]); 9] = [
    ("us-east-1", ["us-east-1a", "us-east-1b", "us-east-1c"]),
    ("us-west-1", ["us-west-1a", "us-west-1b", "us-west-1c"]),
    ("us-west-2", ["us-west-2a", "us-west-2b", "us-west-2c"]),
    ("eu-west-1", ["eu-west-1a", "eu-west-1b", "eu-west-1c"]),
    (
        "eu-central-1",
        ["eu-central-1a", "eu-central-1b", "eu-central-1c"],
    ),
    (
        "ap-southeast-1",
        ["ap-southeast-1a", "ap-southeast-1b", "ap-southeast-1c"],
    ),
    (
        "ap-southeast-2",
        ["ap-southeast-2a", "ap-southeast-2b", "ap-southeast-2c"],
    ),
    (
        "ap-northeast-1",
        ["ap-northeast-1a", "ap-northeast-1b", "ap-northeast-1c"],
    ),
    ("sa-east-1", ["sa-east-1a", "sa-east-1b", "sa-east-1c"]),
];
const FIELDS: [&str; 10] = [
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
];
const START_NS: i64 = 1_451_606_400_000_000_000; // 2016-01-01T00:00:00Z
const STEP_NS: i64 = 10_000_000_000;

fn host_tags(i: u64, rng: &mut StdRng) -> String {
    let (region, dcs) = REGIONS[rng.random_range(0..REGIONS.len())];
    let os = ["Ubuntu16.10", "Ubuntu16.04LTS", "Ubuntu15.10"][rng.random_range(0..3)];
    let arch = ["x64", "x86"][rng.random_range(0..2)];
    let team = ["SF", "NYC", "LON", "CHI"][rng.random_range(0..4)];
    let env = ["production", "staging", "test"][rng.random_range(0..3)];
    format!(
        "cpu,hostname=host_{i},region={region},datacenter={},rack={},os={os},arch={arch},team={team},service={},service_version={},service_environment={env}",
        dcs[rng.random_range(0..3)],
        rng.random_range(0..100),
        rng.random_range(0..20),
        rng.random_range(0..2),
    )
}

fn generate(rows: u64, hosts: u64, out: &Path) -> anyhow::Result<()> {
    let mut rng = StdRng::seed_from_u64(1);
    let tags: Vec<String> = (0..hosts).map(|i| host_tags(i, &mut rng)).collect();
    let mut walk: Vec<[f64; 10]> = (0..hosts)
        .map(|_| std::array::from_fn(|_| rng.random_range(0.0..100.0)))
        .collect();
    let mut w = BufWriter::with_capacity(1 << 20, File::create(out)?);
    let mut line = String::with_capacity(512);
    let progress = progress_bar(rows, "generating");
    for n in 0..rows {
        if n % 100_000 == 0 {
            progress.set_position(n);
        }
        let host = (n % hosts) as usize;
        let ts = START_NS + (n / hosts) as i64 * STEP_NS;
        line.clear();
        line.push_str(&tags[host]);
        for (f, name) in FIELDS.iter().enumerate() {
            let v = &mut walk[host][f];
            *v = (*v + rng.random_range(-1.0..1.0)).clamp(0.0, 100.0);
            line.push(if f == 0 { ' ' } else { ',' });
            line.push_str(name);
            line.push('=');
            line.push_str(&(*v as i64).to_string());
            line.push('i');
        }
        line.push(' ');
        line.push_str(&ts.to_string());
        line.push('\n');
        w.write_all(line.as_bytes())?;
    }
    w.flush()?;
    progress.finish_and_clear();
    let size = std::fs::metadata(out)?.len();
    println!(
        "wrote {rows} rows for {hosts} hosts to {} ({:.1} bytes/row)",
        out.display(),
        size as f64 / rows as f64
    );
    Ok(())
}

/// A bar on stderr counting rows, with rate and ETA; hidden when stderr is not a terminal.
fn progress_bar(total: u64, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:40}] {human_pos}/{human_len} rows, {per_sec}, ETA {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(what.to_string());
    bar
}

/// Rows in a line protocol file (its newlines).
fn count_lines(path: &Path) -> anyhow::Result<u64> {
    let mut reader = BufReader::with_capacity(1 << 20, File::open(path)?);
    let mut n = 0;
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok(n);
        }
        n += buf.iter().filter(|&&b| b == b'\n').count() as u64;
        let len = buf.len();
        reader.consume(len);
    }
}

fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

struct Report {
    rows: u64,
    bytes: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
    retries: u64,
    peak_rss: Option<u64>,
}

impl Report {
    fn print(&self, name: &str) {
        let secs = self.elapsed.as_secs_f64();
        println!("target:            {name}");
        println!("rows:              {}", self.rows);
        println!("elapsed:           {secs:.2} s");
        println!("rows/s:            {:.0}", self.rows as f64 / secs);
        println!("MB/s (body):       {:.1}", self.bytes as f64 / secs / 1e6);
        println!(
            "ack latency:       p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} requests, {} retried after 503)",
            self.latency.value_at_quantile(0.5) as f64 / 1000.0,
            self.latency.value_at_quantile(0.99) as f64 / 1000.0,
            self.latency.max() as f64 / 1000.0,
            self.latency.len(),
            self.retries
        );
        if let Some(rss) = self.peak_rss {
            println!("server peak RSS:   {:.0} MiB", rss as f64 / 1048576.0);
        }
    }
}

/// Reads the file (of `lines` lines) in batches of `batch` lines and posts them over
/// `connections` connections. For a `vigil` server, its admin token goes in
/// `Authorization: Bearer` and HTTPS trusts its certificate; other servers get neither.
async fn load_server(
    args: &LoadArgs,
    lines: u64,
    url: &str,
    pid: Option<u32>,
    vigil: Option<&Spawned>,
) -> anyhow::Result<Report> {
    let token = vigil.map(|s| s.token.clone());
    let ca = vigil.and_then(|s| s.ca.clone());
    let progress = progress_bar(lines, "loading");
    let (tx, rx) = mpmc::bounded(args.connections * 2);
    let file = args.file.clone();
    let batch = args.batch;
    let reader = std::thread::spawn(move || read_batches(&file, batch, tx));
    let rows = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let retries = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.connections {
        let (rx, url) = (rx.clone(), url.to_string());
        let (rows, bytes, retries) = (Arc::clone(&rows), Arc::clone(&bytes), Arc::clone(&retries));
        let (progress, ca) = (progress.clone(), ca.clone());
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(t) = &token {
            headers.insert(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {t}").parse().expect("token header"),
            );
        }
        tasks.push(tokio::spawn(async move {
            let client = http_client(ca.as_deref())
                .pool_max_idle_per_host(1)
                .default_headers(headers)
                .build()
                .expect("client");
            let mut hist = Histogram::<u64>::new(3).expect("histogram");
            while let Ok((n, body)) = rx.recv_async().await {
                let t = Instant::now();
                loop {
                    let resp = client
                        .post(&url)
                        .body(body.clone())
                        .send()
                        .await
                        .expect("request sent");
                    if resp.status().as_u16() == 503 || resp.status().as_u16() == 429 {
                        retries.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                    assert!(
                        resp.status().is_success(),
                        "status {}: {}",
                        resp.status(),
                        resp.text().await.unwrap_or_default()
                    );
                    break;
                }
                hist.record(t.elapsed().as_micros() as u64).expect("record");
                rows.fetch_add(n, Ordering::Relaxed);
                bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
                progress.inc(n);
            }
            hist
        }));
    }
    let mut latency = Histogram::<u64>::new(3)?;
    for t in tasks {
        latency.add(t.await?)?;
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
        peak_rss: pid.and_then(peak_rss),
    })
}

type Batch = (u64, Bytes);

mod mpmc {
    //! tokio's mpsc has one consumer; share it behind a mutex for several.
    use std::sync::Arc;
    use tokio::sync::{Mutex, mpsc};

    pub(crate) type Sender<T> = mpsc::Sender<T>;

    pub(crate) struct Receiver<T>(Arc<Mutex<mpsc::Receiver<T>>>);

    impl<T> Clone for Receiver<T> {
        fn clone(&self) -> Self {
            Self(Arc::clone(&self.0))
        }
    }

    impl<T> Receiver<T> {
        pub(crate) async fn recv_async(&self) -> Result<T, ()> {
            self.0.lock().await.recv().await.ok_or(())
        }
    }

    pub(crate) fn bounded<T>(cap: usize) -> (Sender<T>, Receiver<T>) {
        let (tx, rx) = mpsc::channel(cap);
        (tx, Receiver(Arc::new(Mutex::new(rx))))
    }
}

fn read_batches(path: &Path, batch: usize, tx: mpmc::Sender<Batch>) -> anyhow::Result<()> {
    let mut reader = BufReader::with_capacity(1 << 20, File::open(path)?);
    let mut buf = Vec::with_capacity(batch * 400);
    loop {
        buf.clear();
        let mut n = 0;
        while n < batch && reader.read_until(b'\n', &mut buf)? > 0 {
            n += 1;
        }
        if n == 0 {
            return Ok(());
        }
        if tx
            .blocking_send((n as u64, Bytes::copy_from_slice(&buf)))
            .is_err()
        {
            return Ok(());
        }
    }
}

/// Keeps reading a process's peak RSS until it exits (VmHWM vanishes with the process).
struct RssSampler {
    peak: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<()>,
}

impl RssSampler {
    fn start(pid: u32) -> Self {
        let peak = Arc::new(AtomicU64::new(0));
        let p = Arc::clone(&peak);
        let thread = std::thread::spawn(move || {
            while let Some(rss) = peak_rss(pid) {
                p.fetch_max(rss, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Self { peak, thread }
    }

    fn stop(self) -> Option<u64> {
        let _ = self.thread.join();
        Some(self.peak.load(Ordering::Relaxed)).filter(|&p| p > 0)
    }
}

/// VmHWM of a process, in bytes.
fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// A `vigil serve` child on free ports.
/// An HTTP client builder trusting `ca` (PEM) for HTTPS.
fn http_client(ca: Option<&Path>) -> reqwest::ClientBuilder {
    let builder = reqwest::Client::builder();
    match ca {
        None => builder,
        Some(ca) => {
            let pem = std::fs::read(ca).expect("the server's certificate");
            builder
                .tls_built_in_root_certs(false)
                .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("PEM"))
        }
    }
}

struct Spawned {
    child: Child,
    pid: u32,
    /// `https://…` when started with `--http-tls`.
    url: String,
    /// The certificate HTTPS clients trust (with `--http-tls`).
    ca: Option<PathBuf>,
    quic: std::net::SocketAddr,
    /// The data directory's admin token.
    token: String,
}

/// A server still running when its handle goes (the load failed, or panicked) is
/// killed, so that no run leaves one behind.
impl Drop for Spawned {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn spawn_vigil(dir: &Path, serve_args: &[String]) -> anyhow::Result<Spawned> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let quic = std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?;
    let log = std::env::var_os("VIGIL_BENCH_SERVER_LOG");
    let child: Child = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["serve", "--http-addr", &format!("127.0.0.1:{port}")])
        .args(["--quic-addr", &quic.to_string()])
        .arg("--data-dir")
        .arg(dir)
        .args(serve_args)
        .env("VIGIL_LOG", if log.is_some() { "info" } else { "warn" })
        .stdout(Stdio::null())
        .stderr(match &log {
            Some(path) => Stdio::from(std::fs::File::create(path)?),
            None => Stdio::null(),
        })
        .spawn()?;
    // Held from here on, so that an error below stops the server too.
    let https = serve_args.iter().any(|a| a == "--http-tls");
    let mut spawned = Spawned {
        pid: child.id(),
        child,
        url: format!(
            "{}://127.0.0.1:{port}",
            if https { "https" } else { "http" }
        ),
        ca: https.then(|| dir.join("tls").join("server.crt")),
        quic,
        token: String::new(),
    };
    let health = format!("{}/health", spawned.url);
    tokio_runtime().block_on(async {
        for _ in 0..500 {
            // The certificate exists once the server is up far enough to listen.
            let ready = spawned.ca.as_deref().is_none_or(Path::exists);
            if ready
                && http_client(spawned.ca.as_deref())
                    .build()
                    .expect("HTTP client")
                    .get(&health)
                    .send()
                    .await
                    .is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    spawned.token = std::fs::read_to_string(dir.join("admin.token"))?
        .trim()
        .to_string();
    Ok(spawned)
}

fn run_vigil(
    load: LoadArgs,
    serve_args: Vec<String>,
    data_dir: Option<PathBuf>,
    compact: bool,
) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = data_dir.unwrap_or_else(|| tmp.path().to_path_buf());
    let mut server = spawn_vigil(&dir, &serve_args)?;
    let (pid, url) = (server.pid, server.url.clone());
    let rt = tokio_runtime();
    let rss = RssSampler::start(pid);
    let lines = count_lines(&load.file)?;
    let mut report = rt.block_on(load_server(
        &load,
        lines,
        &format!("{url}/api/v1/write"),
        None,
        Some(&server),
    ))?;
    // Graceful stop flushes the buffer; then measure the files.
    let flush_start = Instant::now();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    server.child.wait()?;
    report.peak_rss = rss.stop();
    report.print("vigil");
    println!(
        "final flush:       {:.2} s",
        flush_start.elapsed().as_secs_f64()
    );
    let (files, bytes) = parquet_bytes(&dir.join("tables"));
    println!(
        "on disk (Parquet): {files} files, {:.1} MB, {:.2} bytes/row",
        bytes as f64 / 1e6,
        bytes as f64 / report.rows.max(1) as f64
    );
    if compact {
        let started = Instant::now();
        let partitions = compact_all(&dir, &rt)?;
        let (files, bytes) = parquet_bytes(&dir.join("tables"));
        println!(
            "after compaction:  {files} files, {:.1} MB, {:.2} bytes/row ({partitions} partitions in {:.1} s)",
            bytes as f64 / 1e6,
            bytes as f64 / report.rows.max(1) as f64,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// Compacts every partition of the stopped server's data directory, in process.
fn compact_all(dir: &Path, rt: &tokio::runtime::Runtime) -> anyhow::Result<usize> {
    use vigil_engine::{Engine, EngineConfig, SystemTimeProvider};
    use vigil_query::{Lifecycle, LifecycleConfig};
    let engine = std::sync::Arc::new(Engine::open(
        EngineConfig {
            data_dir: dir.to_path_buf(),
            background_flush: false,
            ..EngineConfig::default()
        },
        std::sync::Arc::new(SystemTimeProvider),
    )?);
    let lifecycle = Lifecycle::new(std::sync::Arc::clone(&engine), LifecycleConfig::default())?;
    let stop = std::sync::atomic::AtomicBool::new(false);
    let compacted = rt.block_on(lifecycle.run_once(0, true, &stop))?;
    engine.shutdown()?;
    Ok(compacted)
}

#[path = "ingest_load/events.rs"]
mod events;
#[path = "ingest_load/quic.rs"]
mod quic;

fn parquet_bytes(dir: &Path) -> (u64, u64) {
    let mut files = 0;
    let mut bytes = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                files += 1;
                bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
    }
    (files, bytes)
}
