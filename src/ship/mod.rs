//! `vigil ship`: the agent. Reads stdin or tails files, batches lines, spools every
//! batch durably, and sends the spool to a server over QUIC until each batch is
//! acknowledged. Every line read reaches the store once, across restarts of either side.

mod client;
mod input;
mod spool;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use crossbeam_channel::RecvTimeoutError;
use parking_lot::Mutex;
use serde_json::{Map, Value};
use tokio::sync::Notify;
use vigil_api::auth::admin_token_path;
use vigil_api::protocol::{Format, Precision};
use vigil_api::quic::{load_identity, self_signed_cert_path};

use input::{Input, LineFormat, Shaper};
use spool::{FilePos, Spool};

/// Flags of `vigil ship`.
#[derive(Debug, clap::Args)]
pub(crate) struct ShipArgs {
    /// Files to tail; stdin when none.
    pub(crate) files: Vec<PathBuf>,
    /// Server QUIC address.
    #[arg(long, env = "VIGIL_SERVER", default_value = "127.0.0.1:7071")]
    pub(crate) server: String,
    /// How to read lines.
    #[arg(long, value_enum, default_value = "text")]
    pub(crate) format: LineFormat,
    /// Line-protocol timestamp precision: ns, us, ms or s.
    #[arg(long, default_value = "ns")]
    pub(crate) precision: String,
    /// `service` of events that lack one.
    #[arg(long)]
    pub(crate) service: Option<String>,
    /// `environment` of events that lack one.
    #[arg(long)]
    pub(crate) environment: Option<String>,
    /// `component` of events that lack one.
    #[arg(long)]
    pub(crate) component: Option<String>,
    /// `system_id` of events that lack one.
    #[arg(long)]
    pub(crate) system_id: Option<String>,
    /// `event_type` of events that lack one.
    #[arg(long)]
    pub(crate) event_type: Option<String>,
    /// CA certificate (PEM) to trust the server with, e.g. its self-signed certificate.
    #[arg(long)]
    pub(crate) ca: Option<PathBuf>,
    /// Trust the server whose certificate has this SHA-256 fingerprint (as `vigil serve`
    /// logs it at start), instead of --ca.
    #[arg(long, conflicts_with = "ca")]
    pub(crate) server_fingerprint: Option<String>,
    /// Client certificate chain (PEM) for a server that requires mutual TLS
    /// (`vigil serve --quic-client-ca`).
    #[arg(long, requires = "key")]
    pub(crate) cert: Option<PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(long, requires = "cert")]
    pub(crate) key: Option<PathBuf>,
    /// The server's data directory, when it runs on this machine: its certificate and
    /// admin token are taken from there.
    #[arg(long)]
    pub(crate) data_dir: Option<PathBuf>,
    /// Token to send [default: DATA_DIR/admin.token].
    #[arg(long, env = "VIGIL_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// Spool directory: batches wait here until acknowledged, and lines the server
    /// refused are kept in its rejected.* files.
    #[arg(long, env = "VIGIL_SPOOL", default_value = "vigil-spool")]
    pub(crate) spool: PathBuf,
    /// Agent id [default: HOSTNAME-RANDOM, made on first start and kept in the spool].
    #[arg(long)]
    pub(crate) agent_id: Option<String>,
    /// Send a batch at this many lines...
    #[arg(long, default_value_t = 5000)]
    pub(crate) batch_lines: usize,
    /// ... or this many bytes (at most 4 MiB) ...
    #[arg(long, default_value = "1MiB")]
    pub(crate) batch_size: bytesize::ByteSize,
    /// ... or when its first line is this old.
    #[arg(long, default_value = "200ms")]
    pub(crate) batch_wait: humantime::Duration,
    /// Keep only the first this many bytes of a longer line (at most 1 MiB).
    #[arg(long, default_value = "1MiB")]
    pub(crate) max_line_size: bytesize::ByteSize,
    /// Stop reading new lines while this much is spooled and unacknowledged.
    #[arg(long, default_value = "256MiB")]
    pub(crate) spool_limit: bytesize::ByteSize,
    /// Read files to their end and exit once everything is acknowledged, instead of
    /// following them.
    #[arg(long)]
    pub(crate) once: bool,
    /// Also send this machine's metrics (`system` measurement) at this interval.
    #[arg(long)]
    pub(crate) host_metrics: Option<humantime::Duration>,
}

/// Largest `--max-line-size` and `--batch-size`: see [`run`].
const MAX_LINE_LIMIT: u64 = 1 << 20;
const MAX_BATCH_LIMIT: u64 = 4 << 20;

/// Counters shown in the status line.
#[derive(Debug)]
pub(crate) struct Stats {
    pub(crate) started: Instant,
    pub(crate) lines_read: AtomicU64,
    pub(crate) batches_spooled: AtomicU64,
    pub(crate) batches_sent: AtomicU64,
    pub(crate) lines_sent: AtomicU64,
    pub(crate) batches_acked: AtomicU64,
    pub(crate) rejected: AtomicU64,
    /// Lines of batches the server refused, kept in the spool's rejected files.
    pub(crate) lines_aside: AtomicU64,
    /// Lines longer than `--max-line-size`, sent cut.
    pub(crate) lines_cut: AtomicU64,
    pub(crate) busy: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    pub(crate) connected: AtomicBool,
    pub(crate) input_done: AtomicBool,
    /// The systems registry accepted this machine (`--host-metrics`).
    pub(crate) registered: AtomicBool,
    pub(crate) last_error: Mutex<Option<String>>,
    /// Inputs that could not be read, and why.
    pub(crate) unreadable: Mutex<Vec<String>>,
}

pub(crate) fn run(args: ShipArgs) -> anyhow::Result<()> {
    let Some((host, port)) = args.server.rsplit_once(':') else {
        bail!(
            "invalid server address '{}' (expected host:port)",
            args.server
        );
    };
    if port.parse::<u16>().is_err() || host.is_empty() {
        bail!(
            "invalid server address '{}' (expected host:port)",
            args.server
        );
    }
    let server_name = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let trust = match (&args.server_fingerprint, &args.ca, &args.data_dir) {
        (Some(pin), _, _) => client::Trust::Fingerprint(pin.clone()),
        (None, Some(ca), _) => client::Trust::Ca(ca.clone()),
        (None, None, Some(dir)) => client::Trust::Ca(self_signed_cert_path(dir)),
        (None, None, None) => bail!(
            "give --ca (the server's certificate), --server-fingerprint (as the server logs it) or --data-dir (the server's data directory)"
        ),
    };
    let token = match (&args.token, &args.data_dir) {
        (Some(t), _) => t.clone(),
        (None, Some(dir)) => std::fs::read_to_string(admin_token_path(dir))
            .with_context(|| format!("reading the admin token in {}", dir.display()))?
            .trim()
            .to_string(),
        (None, None) => bail!("give --token (or VIGIL_TOKEN) or --data-dir"),
    };
    let format = match args.format {
        LineFormat::Lp => Format::LineProtocol(match args.precision.as_str() {
            "ns" | "n" => Precision::Nanoseconds,
            "us" | "u" => Precision::Microseconds,
            "ms" => Precision::Milliseconds,
            "s" => Precision::Seconds,
            other => bail!("invalid precision '{other}': expected ns, us, ms or s"),
        }),
        LineFormat::Ndjson | LineFormat::Text => Format::Events,
    };
    let format_byte = format.to_byte();
    let (max_line, batch_size) = (args.max_line_size.as_u64(), args.batch_size.as_u64());
    // A batch holds at most --batch-size, or one line alone; as an event, a line may
    // take up to 6 times its bytes (JSON escapes). Both limits keep it within the
    // server's 8 MiB frames.
    if max_line == 0 || max_line > MAX_LINE_LIMIT {
        bail!(
            "--max-line-size {} is out of range: 1 B to 1 MiB",
            args.max_line_size
        );
    }
    if batch_size == 0 || batch_size > MAX_BATCH_LIMIT {
        bail!(
            "--batch-size {} is out of range: 1 B to 4 MiB",
            args.batch_size
        );
    }
    let max_line = max_line as usize;
    let mut fields = Map::new();
    for (k, v) in [
        ("service", &args.service),
        ("environment", &args.environment),
        ("component", &args.component),
        ("system_id", &args.system_id),
        ("event_type", &args.event_type),
    ] {
        if let Some(v) = v {
            fields.insert(k.into(), Value::String(v.clone()));
        }
    }
    let shaper = Shaper {
        kind: args.format,
        fields,
    };
    let spool = Spool::open(&args.spool)?;
    let agent = match &args.agent_id {
        Some(a) => a.clone(),
        None => agent_id(&args.spool)?,
    };
    vigil_api::protocol::check_agent(&agent).map_err(|e| anyhow::anyhow!(e.message))?;
    let positions = spool.positions().clone();
    let spool = Arc::new(Mutex::new(spool));
    let stats = Arc::new(Stats {
        started: Instant::now(),
        lines_read: AtomicU64::new(0),
        batches_spooled: AtomicU64::new(0),
        batches_sent: AtomicU64::new(0),
        lines_sent: AtomicU64::new(0),
        batches_acked: AtomicU64::new(0),
        rejected: AtomicU64::new(0),
        lines_aside: AtomicU64::new(0),
        lines_cut: AtomicU64::new(0),
        busy: AtomicU64::new(0),
        reconnects: AtomicU64::new(0),
        connected: AtomicBool::new(false),
        input_done: AtomicBool::new(false),
        registered: AtomicBool::new(false),
        last_error: Mutex::new(None),
        unreadable: Mutex::new(Vec::new()),
    });
    let notify = Arc::new(Notify::new());
    let stop = Arc::new(AtomicBool::new(false));

    // Readers → batcher.
    let (tx, rx) = crossbeam_channel::bounded::<Input>(64 * 1024);
    let gate = Arc::new(input::Gate::default());
    let mut readers = 0;
    if args.files.is_empty() {
        let (tx, stop, gate) = (tx.clone(), Arc::clone(&stop), Arc::clone(&gate));
        std::thread::spawn(move || input::read_stdin(tx, max_line, &stop, &gate));
        readers += 1;
    }
    for path in &args.files {
        let key = path.to_string_lossy().to_string();
        let start = positions.get(&key).copied();
        let (tx, stop, gate) = (tx.clone(), Arc::clone(&stop), Arc::clone(&gate));
        let (path, follow) = (path.clone(), !args.once);
        std::thread::spawn(move || input::tail(path, start, follow, max_line, stop, gate, tx));
        readers += 1;
    }
    if let Some(every) = args.host_metrics {
        let tx = tx.clone();
        let stop = Arc::clone(&stop);
        let every: Duration = every.into();
        std::thread::spawn(move || host_metrics(every, stop, tx));
    }
    drop(tx);
    // The batcher's error (the spool cannot be written) stops the agent.
    let (failed_tx, failed) = tokio::sync::oneshot::channel::<anyhow::Error>();
    let batcher = {
        let spool = Arc::clone(&spool);
        let stats = Arc::clone(&stats);
        let notify = Arc::clone(&notify);
        let limits = Limits {
            lines: args.batch_lines.max(1),
            bytes: args.batch_size.as_u64() as usize,
            max_line,
            wait: args.batch_wait.into(),
            spool: args.spool_limit.as_u64() as usize,
        };
        let metrics_shaper = Shaper {
            kind: LineFormat::Lp,
            fields: Map::new(),
        };
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let spooled = batch_loop(
                rx,
                &gate,
                readers,
                &shaper,
                &metrics_shaper,
                format_byte,
                &limits,
                &spool,
                &stats,
                &notify,
                &stop,
            );
            if let Err(e) = spooled {
                let _ = failed_tx.send(e);
            }
        })
    };
    let status = {
        let stats = Arc::clone(&stats);
        let spool = Arc::clone(&spool);
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || status_loop(&stats, &spool, &stop))
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        let identity = match (&args.cert, &args.key) {
            (Some(cert), Some(key)) => Some(load_identity(cert, key)?),
            _ => None,
        };
        let endpoint = client::endpoint(&trust, identity, &args.server)?;
        let client = client::Client {
            endpoint,
            server: args.server.clone(),
            next_address: AtomicUsize::new(0),
            server_name,
            token,
            agent: agent.clone(),
            spool: Arc::clone(&spool),
            notify: Arc::clone(&notify),
            stats: Arc::clone(&stats),
            inventory: args.host_metrics.is_some().then(inventory),
        };
        tokio::select! {
            result = client.run() => result.map(|()| false),
            () = crate::serve::shutdown_signal() => Ok(true),
            Ok(e) = failed => Err(e),
        }
    });
    // Readers and the batcher stop; what was read is spooled first.
    stop.store(true, Ordering::SeqCst);
    let _ = status.join();
    let _ = batcher.join();
    // Batches read and not acknowledged (spooled for the next start).
    let waiting = spool.lock().unacked().0;
    let finished = matches!(result, Ok(false)) && waiting == 0;
    print_status(
        &stats,
        &spool,
        Some(if finished { "done:" } else { "stopped:" }),
    );
    let mut unstored = std::mem::take(&mut *stats.unreadable.lock());
    match stats.lines_aside.load(Ordering::Relaxed) {
        0 => {}
        n => unstored.push(format!(
            "{n} lines the server refused were not stored: they are kept in {}",
            args.spool.join("rejected.*").display()
        )),
    }
    match result? {
        true if waiting > 0 => bail!(
            "stopped by a signal: {waiting} batches wait in the spool {} and are sent on the next start",
            args.spool.display()
        ),
        _ if !unstored.is_empty() => bail!("{}", unstored.join("; ")),
        _ => Ok(()),
    }
}

/// The agent id kept in the spool, made on first start.
fn agent_id(spool: &std::path::Path) -> anyhow::Result<String> {
    let path = spool.join("agent.id");
    if let Ok(id) = std::fs::read_to_string(&path)
        && !id.trim().is_empty()
    {
        return Ok(id.trim().to_string());
    }
    let host = sysinfo::System::host_name().unwrap_or_else(|| "agent".into());
    let host: String = host
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(100)
        .collect();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let suffix = xxhash_rust::xxh3::xxh3_64(format!("{nanos}{}", std::process::id()).as_bytes());
    let id = format!("{host}-{:08x}", suffix as u32);
    std::fs::write(&path, format!("{id}\n"))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(id)
}

struct Limits {
    lines: usize,
    bytes: usize,
    max_line: usize,
    wait: Duration,
    spool: usize,
}

/// Collects lines into batches and spools them.
/// The batch being filled.
#[derive(Default)]
struct Open {
    body: Vec<u8>,
    lines: usize,
    /// Where each file is read up to after the batch's last line.
    positions: Vec<(String, FilePos)>,
}

#[allow(clippy::too_many_arguments)]
fn batch_loop(
    rx: crossbeam_channel::Receiver<Input>,
    gate: &input::Gate,
    mut readers: usize,
    shaper: &Shaper,
    metrics: &Shaper,
    format: u8,
    limits: &Limits,
    spool: &Mutex<Spool>,
    stats: &Stats,
    notify: &Notify,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let mut open = Open {
        body: Vec::with_capacity(limits.bytes + 4096),
        ..Open::default()
    };
    let mut first: Option<Instant> = None;
    let flush = |open: &mut Open| {
        if open.lines == 0 && open.positions.is_empty() {
            return Ok::<(), anyhow::Error>(());
        }
        // Back-pressure: wait while too much is unacknowledged (unless stopping: then
        // everything read goes to the spool).
        while spool.lock().unacked().1 > limits.spool && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
        }
        Spool::append_shared(
            spool,
            format,
            std::mem::take(&mut open.body),
            open.lines,
            &open.positions,
        )?;
        stats.batches_spooled.fetch_add(1, Ordering::Relaxed);
        open.lines = 0;
        open.positions.clear();
        notify.notify_one();
        Ok(())
    };
    loop {
        let next = if stop.load(Ordering::Relaxed) {
            // Stopping: spool what the readers hand over until none is in the middle of
            // handing over a chunk, then end.
            match rx.try_recv() {
                Ok(input) => Ok(input),
                Err(_) if gate.close_if(|| rx.is_empty()) => break,
                Err(_) => rx.recv_timeout(Duration::from_millis(10)),
            }
        } else {
            let wait = first.map_or(limits.wait, |t| limits.wait.saturating_sub(t.elapsed()));
            rx.recv_timeout(wait.min(Duration::from_millis(100)))
        };
        match next {
            Ok(Input::Line {
                source,
                text,
                pos,
                cut,
            }) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as i64);
                let shaper = if source.as_deref() == Some(HOST_METRICS) {
                    metrics
                } else {
                    shaper
                };
                let lp_ns = Format::LineProtocol(Precision::Nanoseconds).to_byte();
                if source.as_deref() == Some(HOST_METRICS) && format != lp_ns {
                    // Metrics are line protocol; a batch holds one format.
                    flush(&mut open)?;
                    let mut lp = Vec::new();
                    metrics.push(&mut lp, &text, None, now);
                    Spool::append_shared(spool, lp_ns, lp, 1, &[])?;
                    notify.notify_one();
                    continue;
                }
                let before = open.body.len();
                shaper.push(&mut open.body, &text, source.as_deref(), now);
                if before > 0 && open.body.len() > limits.bytes {
                    // The line would take the batch past --batch-size: it starts the
                    // next one, so that a batch stays within a frame.
                    let line = open.body.split_off(before);
                    flush(&mut open)?;
                    open.body = line;
                    first = None;
                }
                open.lines += 1;
                if cut && stats.lines_cut.fetch_add(1, Ordering::Relaxed) == 0 {
                    eprintln!(
                        "vigil ship: a line of {} is longer than --max-line-size: only its first {} bytes are sent",
                        source.as_deref().unwrap_or("stdin"),
                        limits.max_line
                    );
                }
                stats.lines_read.fetch_add(1, Ordering::Relaxed);
                if let (Some(src), Some(pos)) = (source, pos) {
                    match open.positions.iter_mut().find(|(p, _)| **p == *src) {
                        Some(slot) => slot.1 = pos,
                        None => open.positions.push((src.to_string(), pos)),
                    }
                }
                first.get_or_insert_with(Instant::now);
                if open.lines >= limits.lines || open.body.len() >= limits.bytes {
                    flush(&mut open)?;
                    first = None;
                }
            }
            Ok(Input::Done(unreadable)) => {
                stats.unreadable.lock().extend(unreadable);
                readers = readers.saturating_sub(1);
                if readers == 0 {
                    break;
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                if first.is_some_and(|t| t.elapsed() >= limits.wait) {
                    flush(&mut open)?;
                    first = None;
                }
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    flush(&mut open)?;
    stats.input_done.store(true, Ordering::SeqCst);
    notify.notify_one();
    Ok(())
}

/// Source name of the host-metrics lines.
const HOST_METRICS: &str = "\0host-metrics";

/// This machine's inventory for the systems registry: its hostname and the JSON of an
/// `INVENTORY` frame (`docs/protocol.md`).
fn inventory() -> (String, Vec<u8>) {
    use sysinfo::{Disks, System};
    let sys = System::new_all();
    let host = System::host_name().unwrap_or_else(|| "unknown".into());
    let disk_total: u64 = Disks::new_with_refreshed_list()
        .iter()
        .map(sysinfo::Disk::total_space)
        .sum();
    let gib = |b: u64| (b as f64 / (1u64 << 30) as f64 * 10.0).round() / 10.0;
    let os = format!(
        "{} {}",
        System::name().unwrap_or_default(),
        System::os_version().unwrap_or_default()
    );
    let json = serde_json::json!({
        "os_name": os.trim(),
        "cpu_name": sys.cpus().first().map(|c| c.brand().trim().to_string()),
        "cpu_cores": sys.cpus().len(),
        "total_memory_gb": gib(sys.total_memory()),
        "total_disk_gb": gib(disk_total),
        "agent_version": concat!("vigil-ship/", env!("CARGO_PKG_VERSION")),
    });
    eprintln!("vigil ship: host {host}: {json}");
    (host, json.to_string().into_bytes())
}

/// Collects this machine's metrics as `system` line protocol.
fn host_metrics(every: Duration, stop: Arc<AtomicBool>, tx: crossbeam_channel::Sender<Input>) {
    use sysinfo::{Disks, Networks, System};
    let mut sys = System::new_all();
    let mut networks = Networks::new_with_refreshed_list();
    let host = System::host_name().unwrap_or_else(|| "unknown".into());
    let host_tag: String = host
        .chars()
        .map(|c| if matches!(c, ' ' | ',' | '=') { '_' } else { c })
        .collect();
    let source: Arc<str> = HOST_METRICS.into();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(every.min(Duration::from_secs(1)));
        sys.refresh_all();
        networks.refresh(true);
        let disks = Disks::new_with_refreshed_list();
        let (total, free) = disks.iter().fold((0u64, 0u64), |(t, f), d| {
            (t + d.total_space(), f + d.available_space())
        });
        let (sent, recv) = networks.iter().fold((0u64, 0u64), |(s, r), (_, n)| {
            (s + n.total_transmitted(), r + n.total_received())
        });
        let mem_total = sys.total_memory().max(1);
        let line = format!(
            "system,hostname={host_tag} cpu_usage={:.2},memory_percent={:.2},memory_used={}u,disk_usage={:.2},disk_free={}u,network_sent={}u,network_recv={}u,process_count={}u,uptime_seconds={}u",
            sys.global_cpu_usage(),
            sys.used_memory() as f64 * 100.0 / mem_total as f64,
            sys.used_memory(),
            if total == 0 {
                0.0
            } else {
                (total - free) as f64 * 100.0 / total as f64
            },
            free,
            sent,
            recv,
            sys.processes().len(),
            System::uptime(),
        );
        if tx
            .send(Input::Line {
                source: Some(Arc::clone(&source)),
                text: line,
                pos: None,
                cut: false,
            })
            .is_err()
        {
            return;
        }
        let mut slept = Duration::from_secs(1).min(every);
        while slept < every && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(200));
            slept += Duration::from_millis(200);
        }
    }
}

fn status_loop(stats: &Stats, spool: &Mutex<Spool>, stop: &AtomicBool) {
    let tty = std::io::stderr().is_terminal();
    let every = if tty {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(10)
    };
    let mut last = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        if last.elapsed() >= every {
            last = Instant::now();
            print_status(stats, spool, None);
        }
    }
}

/// The status line; `last`: the final one, headed by how the agent ended.
fn print_status(stats: &Stats, spool: &Mutex<Spool>, last: Option<&str>) {
    let started = stats.started;
    let (unacked, bytes) = spool.lock().unacked();
    let read = stats.lines_read.load(Ordering::Relaxed);
    let rate = read as f64 / started.elapsed().as_secs_f64().max(0.001);
    let line = format!(
        "{} read {read} lines ({rate:.0}/s), sent {} batches, acked {}, spooled {unacked} ({} KiB), rejected {}{}{}{}{}",
        match last {
            Some(end) => end,
            None if stats.connected.load(Ordering::Relaxed) => "connected",
            None => "disconnected",
        },
        stats.batches_sent.load(Ordering::Relaxed),
        stats.batches_acked.load(Ordering::Relaxed),
        bytes / 1024,
        stats.rejected.load(Ordering::Relaxed),
        match stats.lines_aside.load(Ordering::Relaxed) {
            0 => String::new(),
            n => format!(", {n} lines set aside"),
        },
        match stats.lines_cut.load(Ordering::Relaxed) {
            0 => String::new(),
            n => format!(", {n} long lines cut"),
        },
        match stats.busy.load(Ordering::Relaxed) {
            0 => String::new(),
            n => format!(", server busy {n} times"),
        },
        stats
            .last_error
            .lock()
            .as_deref()
            .filter(|_| !stats.connected.load(Ordering::Relaxed))
            .map(|e| format!(", last error: {e}"))
            .unwrap_or_default(),
    );
    if std::io::stderr().is_terminal() && last.is_none() {
        eprint!("\r\x1b[2K{line}");
    } else {
        eprintln!(
            "{}{line}",
            if std::io::stderr().is_terminal() {
                "\r\x1b[2K"
            } else {
                ""
            }
        );
    }
}
