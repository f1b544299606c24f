//! QUIC ingest end to end: the protocol's answers to good and bad input, and `vigil ship`
//! delivering every line exactly once while the server is killed and restarted.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::Rng;
use rustls::pki_types::CertificateDer;
use vigil_api::protocol::{self, Format, Frame, Precision, code};
use vigil_api::quic::{client_config, read_frame, write_frame};

use crate::server::{Server, free_port};

fn client(data_dir: &Path, alpn: &[u8]) -> quinn::Endpoint {
    client_with(data_dir, alpn, None)
}

/// A client endpoint trusting the server's certificate, with an optional client
/// certificate (DER chain, PKCS#8 key).
fn client_with(
    data_dir: &Path,
    alpn: &[u8],
    identity: Option<(
        Vec<CertificateDer<'static>>,
        rustls::pki_types::PrivateKeyDer<'static>,
    )>,
) -> quinn::Endpoint {
    let config = client_config(&data_dir.join("tls/server.crt"), alpn, identity).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(config);
    endpoint
}

fn admin_token(data_dir: &Path) -> String {
    std::fs::read_to_string(data_dir.join("admin.token"))
        .unwrap()
        .trim()
        .to_string()
}

/// Connects and says HELLO; returns the connection and the server's answer.
async fn hello(
    server: &Server,
    data_dir: &Path,
    token: &str,
    agent: &str,
) -> (quinn::Connection, Option<Frame>) {
    let endpoint = client(data_dir, protocol::ALPN);
    let conn = endpoint
        .connect(server.quic, "127.0.0.1")
        .unwrap()
        .await
        .unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    write_frame(
        &mut send,
        &Frame::Hello {
            version: protocol::VERSION,
            token: token.into(),
            agent: agent.into(),
        },
    )
    .await
    .unwrap();
    let answer = read_frame(&mut recv, 1 << 20).await.ok().flatten();
    // Keep the control stream open for the connection's life.
    std::mem::forget((send, recv));
    (conn, answer)
}

async fn channel(conn: &quinn::Connection, ch: u32) -> (quinn::SendStream, quinn::RecvStream, u64) {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    write_frame(&mut send, &Frame::Open { channel: ch })
        .await
        .unwrap();
    match read_frame(&mut recv, 1 << 20).await.unwrap() {
        Some(Frame::Resume { stored_seq, .. }) => (send, recv, stored_seq),
        other => panic!("expected RESUME, got {other:?}"),
    }
}

fn lp(seq: u64, body: &str) -> Frame {
    Frame::Batch {
        seq,
        format: Format::LineProtocol(Precision::Nanoseconds),
        body: body.as_bytes().to_vec(),
    }
}

async fn answer(recv: &mut quinn::RecvStream) -> Frame {
    tokio::time::timeout(Duration::from_secs(10), read_frame(recv, 1 << 20))
        .await
        .expect("an answer within 10 s")
        .unwrap()
        .expect("an answer, not the end of the stream")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_answers_good_and_bad_input_and_the_server_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), free_port(), &[]).await;
    let token = admin_token(dir.path());

    // Wrong token: ERROR UNAUTHORIZED, then the connection closes with that code.
    let (conn, answer_) = hello(&server, dir.path(), "wrong", "agent-1").await;
    assert!(
        matches!(
            answer_,
            Some(Frame::Error {
                code: code::UNAUTHORIZED,
                ..
            })
        ),
        "{answer_:?}"
    );
    let reason = conn.closed().await;
    assert!(
        matches!(&reason, quinn::ConnectionError::ApplicationClosed(c) if c.error_code == quinn::VarInt::from_u32(4)),
        "{reason:?}"
    );

    // A bad agent id.
    let (_conn, answer_) = hello(&server, dir.path(), &token, "bad agent").await;
    assert!(
        matches!(
            answer_,
            Some(Frame::Error {
                code: code::BAD_AGENT,
                ..
            })
        ),
        "{answer_:?}"
    );

    // Wrong ALPN: the TLS handshake fails.
    let endpoint = client(dir.path(), b"http/1.1");
    let refused = endpoint.connect(server.quic, "127.0.0.1").unwrap().await;
    assert!(
        refused.is_err(),
        "a connection without the vigil/1 ALPN was accepted"
    );

    // A good session.
    let (conn, welcome) = hello(&server, dir.path(), &token, "agent-1").await;
    let Some(Frame::Welcome { max_frame, .. }) = welcome else {
        panic!("expected WELCOME, got {welcome:?}");
    };
    let (mut send, mut recv, stored) = channel(&conn, 7).await;
    assert_eq!(stored, 0);
    write_frame(&mut send, &lp(1, "q,h=a v=1 1\nq,h=a v=2 2\n"))
        .await
        .unwrap();
    write_frame(&mut send, &lp(2, "q,h=a v=oops 3\n"))
        .await
        .unwrap();
    write_frame(&mut send, &lp(3, "q,h=b v=3 3\n"))
        .await
        .unwrap();
    write_frame(&mut send, &lp(1, "q,h=a v=1 1\nq,h=a v=2 2\n"))
        .await
        .unwrap();
    assert_eq!(
        answer(&mut recv).await,
        Frame::Ack {
            seq: 1,
            duplicate: false,
            rows: 2
        }
    );
    match answer(&mut recv).await {
        Frame::Reject {
            seq: 2,
            code: code::BAD_DATA,
            message,
        } => {
            assert!(message.contains("line 1"), "{message}")
        }
        other => panic!("expected REJECT of batch 2, got {other:?}"),
    }
    assert_eq!(
        answer(&mut recv).await,
        Frame::Ack {
            seq: 3,
            duplicate: false,
            rows: 1
        }
    );
    assert_eq!(
        answer(&mut recv).await,
        Frame::Ack {
            seq: 1,
            duplicate: true,
            rows: 0
        },
        "a resend is acknowledged, not stored"
    );

    // An unknown frame type ends its stream with ERROR MALFORMED...
    let (mut send2, mut recv2, stored) = channel(&conn, 8).await;
    assert_eq!(stored, 0);
    send2.write_all(&[0, 0, 0, 1, 0x77]).await.unwrap();
    assert!(matches!(
        answer(&mut recv2).await,
        Frame::Error {
            code: code::MALFORMED,
            ..
        }
    ));
    // ... an oversized one with ERROR TOO_LARGE ...
    let (mut send3, mut recv3, _) = channel(&conn, 9).await;
    send3
        .write_all(&(max_frame + 1).to_be_bytes())
        .await
        .unwrap();
    assert!(matches!(
        answer(&mut recv3).await,
        Frame::Error {
            code: code::TOO_LARGE,
            ..
        }
    ));
    // ... a batch numbered 0 (RESUME's "nothing stored") with ERROR MALFORMED ...
    let (mut send5, mut recv5, _) = channel(&conn, 10).await;
    write_frame(&mut send5, &lp(0, "q v=1 1\n")).await.unwrap();
    match answer(&mut recv5).await {
        Frame::Error {
            code: code::MALFORMED,
            message,
        } => assert!(message.contains("start at 1"), "{message}"),
        other => panic!("expected ERROR for batch 0, got {other:?}"),
    }
    // ... a stream not starting with OPEN with ERROR UNEXPECTED ...
    let (mut send4, mut recv4) = conn.open_bi().await.unwrap();
    write_frame(&mut send4, &lp(1, "q v=1 1\n")).await.unwrap();
    assert!(matches!(
        answer(&mut recv4).await,
        Frame::Error {
            code: code::UNEXPECTED,
            ..
        }
    ));
    // ... and the connection's first channel still works.
    write_frame(&mut send, &lp(4, "q,h=c v=4 4\n"))
        .await
        .unwrap();
    assert_eq!(
        answer(&mut recv).await,
        Frame::Ack {
            seq: 4,
            duplicate: false,
            rows: 1
        }
    );
    send.finish().unwrap();

    // The server remembers the channel's sequence across a restart.
    let port = server.url.rsplit(':').next().unwrap().parse().unwrap();
    let quic_port = server.quic.port();
    drop(conn);
    server.kill9();
    let server = Server::start_with_quic(dir.path(), port, quic_port, &[]).await;
    let (conn, _) = hello(&server, dir.path(), &token, "agent-1").await;
    let (_s, _r, stored) = channel(&conn, 7).await;
    assert_eq!(stored, 4);
    assert_eq!(count(&server, "SELECT count(*) AS n FROM q").await, 4);
    let metrics = metrics(&server).await;
    assert!(metrics.contains("vigil_quic_connections 1"), "{metrics}");
    server.terminate();
}

/// `vigil ship` against `quic`, trusting the server of `data_dir`, on `spool`; its
/// output discarded.
fn ship_command(data_dir: &Path, spool: &Path, quic: std::net::SocketAddr) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vigil"));
    command
        .arg("ship")
        .arg("--server")
        .arg(quic.to_string())
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--spool")
        .arg(spool)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

fn ship(
    data_dir: &Path,
    spool: &Path,
    file: &Path,
    quic: std::net::SocketAddr,
) -> std::process::Child {
    ship_with(data_dir, spool, file, quic, &[])
}

/// [`ship`] with `extra` arguments.
fn ship_with(
    data_dir: &Path,
    spool: &Path,
    file: &Path,
    quic: std::net::SocketAddr,
    extra: &[&str],
) -> std::process::Child {
    ship_command(data_dir, spool, quic)
        .arg("--format")
        .arg("text")
        .arg("--service")
        .arg("crash")
        .arg("--once")
        .args(extra)
        .arg(file)
        .spawn()
        .expect("vigil ship starts")
}

/// Lines in the crash test; `VIGIL_SHIP_TEST_LINES` overrides.
fn lines() -> usize {
    std::env::var("VIGIL_SHIP_TEST_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ship_delivers_every_line_once_through_server_and_agent_kills() {
    let n = lines();
    let dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("app.log");
    let mut text = String::with_capacity(n * 24);
    for i in 0..n {
        text.push_str(&format!("request {i} done\n"));
    }
    std::fs::write(&file, text).unwrap();
    let spool = work.path().join("spool");
    let (port, quic_port) = (free_port(), free_port());
    // Small buffers so that the kills also hit flushes and checkpoints.
    let args = ["--flush-size", "4MiB", "--flush-age", "1s"];
    let mut server = Server::start_with_quic(dir.path(), port, quic_port, &args).await;
    let mut agent = ship(dir.path(), &spool, &file, server.quic);
    let mut rng = rand::rng();
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut server_kills = 0;
    let mut agent_killed = false;
    let status = loop {
        assert!(
            Instant::now() < deadline,
            "vigil ship did not finish in 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..1200))).await;
        if let Some(status) = agent.try_wait().unwrap() {
            break status;
        }
        if server_kills < 3 {
            server.kill9();
            server_kills += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
            server = Server::start_with_quic(dir.path(), port, quic_port, &args).await;
        } else if !agent_killed {
            agent.kill().unwrap();
            agent.wait().unwrap();
            agent_killed = true;
            agent = ship(dir.path(), &spool, &file, server.quic);
        }
    };
    assert!(status.success(), "vigil ship failed: {status}");
    assert!(
        server_kills >= 1,
        "the agent finished before any kill: make the file longer"
    );
    let sql = |what: &str| format!("SELECT {what} AS n FROM events WHERE service = 'crash'");
    let stored = count(&server, &sql("count(*)")).await;
    let distinct = count(&server, &sql("count(DISTINCT message)")).await;
    server.terminate();
    assert_eq!(distinct, n as i64, "every line arrived");
    assert_eq!(stored, n as i64, "no line arrived twice");
    eprintln!(
        "shipped {n} lines through {server_kills} server kills (agent killed: {agent_killed})"
    );
}

/// With a write buffer that keeps filling up, the server answers BUSY again and again;
/// `vigil ship` waits and reopens its channel on the same connection, and every line is
/// stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ship_waits_out_busy_on_the_same_connection() {
    let n = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("busy.log");
    write_lines(&file, "busy line", n, false);
    let args = [
        "--max-buffer-size",
        "64KiB",
        "--flush-size",
        "32KiB",
        "--flush-age",
        "1s",
    ];
    let server = Server::start(dir.path(), free_port(), &args).await;
    let mut agent = ship_with(
        dir.path(),
        &work.path().join("spool"),
        &file,
        server.quic,
        &["--batch-lines", "1000"],
    );
    finishes(&mut agent, Duration::from_secs(120)).await;
    let sql = |what: &str| format!("SELECT {what} AS n FROM events WHERE service = 'crash'");
    assert_eq!(
        count(&server, &sql("count(DISTINCT message)")).await,
        n as i64
    );
    assert_eq!(count(&server, &sql("count(*)")).await, n as i64);
    let metrics = metrics(&server).await;
    let metric = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {metrics}"))
    };
    assert!(metric("vigil_quic_busy_total") >= 1, "{metrics}");
    assert_eq!(metric("vigil_quic_connections_total"), 1, "{metrics}");
    server.terminate();
}

/// A line longer than `--max-line-size` is sent cut, a file without any newline is read
/// in bounded memory, and the lines around them arrive whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ship_cuts_overlong_lines() {
    let dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("long.log");
    let long = "x".repeat(3 << 20);
    std::fs::write(&file, format!("before\n{long}\nafter\n{long}")).unwrap();
    let server = Server::start(dir.path(), free_port(), &[]).await;
    let mut agent = ship_with(
        dir.path(),
        &work.path().join("spool"),
        &file,
        server.quic,
        &["--max-line-size", "64KiB", "--batch-size", "100KiB"],
    );
    finishes(&mut agent, Duration::from_secs(60)).await;
    let sql = |what: &str, filter: &str| {
        format!("SELECT {what} AS n FROM events WHERE service = 'crash' {filter}")
    };
    assert_eq!(count(&server, &sql("count(*)", "")).await, 4);
    assert_eq!(
        count(
            &server,
            &sql("count(*)", "AND message IN ('before', 'after')")
        )
        .await,
        2
    );
    assert_eq!(
        count(
            &server,
            &sql(
                "count(*)",
                "AND message LIKE 'x%' AND length(message) = 65536"
            )
        )
        .await,
        2
    );
    server.terminate();
}

/// Lines `vigil ship` has read from stdin but not yet batched are spooled when it gets
/// SIGTERM (it exits saying they wait), and its next start sends them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ship_spools_what_it_read_when_stopped() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let spool = work.path().join("spool");
    let server = Server::start(dir.path(), free_port(), &[]).await;
    let agent = |stdin: Stdio| {
        ship_command(dir.path(), &spool, server.quic)
            .args(["--service", "stopped", "--batch-wait", "60s"])
            .stdin(stdin)
            .spawn()
            .expect("vigil ship starts")
    };
    let mut first = agent(Stdio::piped());
    let mut input = first.stdin.take().unwrap();
    for i in 0..100 {
        writeln!(input, "stopped line {i}").unwrap();
    }
    input.flush().unwrap();
    // The lines wait in the open batch (60 s) while stdin stays open.
    tokio::time::sleep(Duration::from_secs(1)).await;
    sigterm(&first);
    let status = exits(&mut first, Duration::from_secs(20)).await;
    assert!(!status.success(), "exits with an error while batches wait");
    drop(input);
    let sql = "SELECT count(*) AS n FROM events WHERE service = 'stopped'";
    assert_eq!(count(&server, sql).await, 0, "nothing was sent yet");
    let mut second = agent(Stdio::null());
    finishes(&mut second, Duration::from_secs(30)).await;
    assert_eq!(count(&server, sql).await, 100);
    server.terminate();
}

/// Stopped while a shipper keeps writing to its stdin, `vigil ship` stops reading, exits
/// promptly, and spools every line it took from the pipe: the lines stored after the next
/// start and the lines left in the pipe add up to the lines written, each stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ship_stopped_mid_stream_keeps_every_line_it_took() {
    use std::io::{Read, Write};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let spool = work.path().join("spool");
    let server = Server::start(dir.path(), free_port(), &[]).await;
    let agent = |stdin: Stdio| {
        ship_command(dir.path(), &spool, server.quic)
            .args(["--service", "midstream"])
            .stdin(stdin)
            .spawn()
            .expect("vigil ship starts")
    };
    let (reader, mut writer) = std::io::pipe().unwrap();
    // The test keeps a read end of its own, to count what the agent left in the pipe.
    let mut rest = reader.try_clone().unwrap();
    let mut first = agent(Stdio::from(reader));
    // A shipper writing 500-line chunks without pause, for at most 60 s.
    let writing = Arc::new(AtomicBool::new(true));
    let shipper = {
        let writing = Arc::clone(&writing);
        std::thread::spawn(move || {
            let (mut written, start) = (0usize, Instant::now());
            while writing.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(60) {
                let chunk: String = (written..written + 500)
                    .map(|i| format!("midstream line {i}\n"))
                    .collect();
                writer.write_all(chunk.as_bytes()).unwrap();
                written += 500;
            }
            written
        })
    };
    let sql = "SELECT count(*) AS n FROM events WHERE service = 'midstream'";
    let started = Instant::now();
    while count(&server, sql).await == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "nothing arrived"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sigterm(&first);
    exits(&mut first, Duration::from_secs(10)).await;
    // The agent is gone: stop the shipper and read what it left in the pipe.
    writing.store(false, Ordering::Relaxed);
    let drain = std::thread::spawn(move || {
        let mut left = Vec::new();
        rest.read_to_end(&mut left).unwrap();
        left.iter().filter(|b| **b == b'\n').count()
    });
    let written = shipper.join().unwrap();
    let left = drain.join().unwrap();
    let mut second = agent(Stdio::null());
    finishes(&mut second, Duration::from_secs(60)).await;
    let stored = count(&server, sql).await as usize;
    let distinct = count(
        &server,
        "SELECT count(DISTINCT message) AS n FROM events WHERE service = 'midstream'",
    )
    .await as usize;
    assert_eq!(distinct, stored, "a line was stored twice");
    assert_eq!(
        stored + left,
        written,
        "{written} lines written, {left} left in the pipe, {stored} stored"
    );
    server.terminate();
}

/// `vigil ship --once` ships the files it can read and exits with an error naming the
/// one it cannot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ship_once_fails_for_a_file_it_cannot_read() {
    let dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), free_port(), &[]).await;
    let file = work.path().join("present.log");
    write_lines(&file, "present", 10, false);
    let missing = work.path().join("missing.log");
    let out = ship_command(dir.path(), &work.path().join("spool"), server.quic)
        .args(["--service", "present", "--once"])
        .arg(&file)
        .arg(&missing)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot read {}", missing.display())),
        "{stderr}"
    );
    let sql = "SELECT count(*) AS n FROM events WHERE service = 'present'";
    assert_eq!(count(&server, sql).await, 10);
    server.terminate();
}

/// One bad line does not cost its batch: when the server refuses a batch, `vigil ship`
/// sets the lines that are bad on their own aside, in the spool's rejected file, and
/// sends the rest again. A batch refused with no such line (a field type conflict) goes
/// there whole. The exit status says that not everything was stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ship_sets_aside_what_the_server_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), free_port(), &[]).await;
    let file = work.path().join("metrics.lp");
    std::fs::write(
        &file,
        "aside,h=a v=1i 1\n\
         aside,h=a v=oops 2\n\
         aside,h=a v=3i 3\n\
         aside,h=a v=4i 4\n\
         aside,h=a v=5.5 5\n\
         aside,h=a v=6i 6\n\
         aside,h=a v=7i 7\n",
    )
    .unwrap();
    let spool = work.path().join("spool");
    let out = ship_command(dir.path(), &spool, server.quic)
        .args(["--format", "lp", "--batch-lines", "2", "--once"])
        .arg(&file)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("3 lines the server refused were not stored"),
        "{stderr}"
    );
    // Batches: (1, oops) refused, then 1 again alone; (3, 4); (5.5, 6) refused whole for
    // mixing a float and an integer; (7).
    assert_eq!(count(&server, "SELECT count(*) AS n FROM aside").await, 4);
    assert_eq!(
        count(&server, "SELECT sum(v) AS n FROM aside").await,
        1 + 3 + 4 + 7
    );
    assert_eq!(
        std::fs::read_to_string(spool.join("rejected.lp")).unwrap(),
        "aside,h=a v=oops 2\naside,h=a v=5.5 5\naside,h=a v=6i 6\n"
    );
    server.terminate();
}

/// A file rotated while the agent was stopped: after its restart the agent finds the old
/// file under its new name by its inode, reads the lines written to it meanwhile, then the
/// new file from its start; every line once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ship_finishes_a_file_rotated_while_it_was_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), free_port(), &[]).await;
    let file = work.path().join("app.log");
    let spool = work.path().join("spool");
    let agent = || {
        ship_command(dir.path(), &spool, server.quic)
            .args(["--service", "restarted", "--batch-wait", "50ms"])
            .arg(&file)
            .spawn()
            .expect("vigil ship starts")
    };
    // (A batch whose acknowledgement the agent had not read yet waits in the spool and
    // is resent after the restart: stored once all the same.)
    let stop = |mut agent: std::process::Child| async move {
        sigterm(&agent);
        exits(&mut agent, Duration::from_secs(20)).await;
    };
    let sql = "SELECT count(*) AS n FROM events WHERE service = 'restarted'";
    write_lines(&file, "before", 100, false);
    let first = agent();
    wait_for(&server, sql, 100).await;
    stop(first).await;
    // Meanwhile: 50 more lines, then the file is rotated and a new one begun.
    write_lines(&file, "while-stopped", 50, true);
    std::fs::rename(&file, work.path().join("app.log.1")).unwrap();
    write_lines(&file, "after", 30, false);
    let second = agent();
    wait_for(&server, sql, 180).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop(second).await;
    assert_eq!(count(&server, sql).await, 180);
    let distinct = "SELECT count(DISTINCT message) AS n FROM events WHERE service = 'restarted'";
    assert_eq!(count(&server, distinct).await, 180);
    server.terminate();
}

/// A new spool for an agent id the server already knows (say, a container that lost its
/// volume but keeps `--agent-id`) numbers its batches above the old ones: batches it
/// spooled before it could connect are stored, not taken for resends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_spool_for_a_known_agent_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let (port, quic_port) = (free_port(), free_port());
    let server = Server::start_with_quic(dir.path(), port, quic_port, &[]).await;
    let quic = server.quic;
    let ship_as_web1 = |file: &str, spool: &str| {
        let path = work.path().join(file);
        write_lines(&path, file, 10, false);
        ship_with(
            dir.path(),
            &work.path().join(spool),
            &path,
            quic,
            &["--agent-id", "web1"],
        )
    };
    finishes(
        &mut ship_as_web1("first", "spool-1"),
        Duration::from_secs(30),
    )
    .await;
    server.terminate();
    // The second spool batches its file while the server is down.
    let mut second = ship_as_web1("second", "spool-2");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let server = Server::start_with_quic(dir.path(), port, quic_port, &[]).await;
    finishes(&mut second, Duration::from_secs(60)).await;
    let sql = "SELECT count(*) AS n FROM events WHERE service = 'crash'";
    assert_eq!(count(&server, sql).await, 20, "both files arrived");
    server.terminate();
}

/// Waits for a `vigil ship --once` to exit, successfully, within `limit`.
async fn finishes(agent: &mut std::process::Child, limit: Duration) {
    let status = exits(agent, limit).await;
    assert!(status.success(), "vigil ship failed: {status}");
}

/// Asks `vigil ship` to stop, as systemd or ctrl-c would.
fn sigterm(agent: &std::process::Child) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
}

/// Waits for `vigil ship` to exit within `limit`.
async fn exits(agent: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = agent.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "vigil ship did not exit within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn metrics(server: &Server) -> String {
    server
        .client()
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn count(server: &Server, sql: &str) -> i64 {
    let v: serde_json::Value = server
        .client()
        .post(format!("{}/api/v1/query", server.url))
        .json(&serde_json::json!({ "sql": sql }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v.get(0)
        .and_then(|r| r.get("n"))
        .and_then(serde_json::Value::as_i64)
        .unwrap_or(0)
}

async fn wait_for(server: &Server, sql: &str, want: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = count(server, sql).await;
        if n == want {
            return;
        }
        assert!(n < want, "{sql}: {n} rows, more than the {want} expected");
        assert!(
            Instant::now() < deadline,
            "{sql}: {n} rows after 30 s, expected {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn write_lines(path: &Path, prefix: &str, n: usize, append: bool) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(path)
        .unwrap();
    for i in 0..n {
        writeln!(f, "{prefix} {i}").unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ship_follows_rotation_and_truncation_and_sends_host_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), free_port(), &[]).await;
    let file = work.path().join("app.log");
    write_lines(&file, "first-file-line", 100, false);
    let mut agent = ship_command(dir.path(), &work.path().join("spool"), server.quic)
        .args([
            "--service",
            "rot",
            "--batch-wait",
            "50ms",
            "--host-metrics",
            "1s",
        ])
        .arg(&file)
        .spawn()
        .unwrap();
    let sql = "SELECT count(*) AS n FROM events WHERE service = 'rot'";
    wait_for(&server, sql, 100).await;
    // Rotation: the file is renamed and a new one takes its name.
    std::fs::rename(&file, work.path().join("app.log.1")).unwrap();
    write_lines(&file, "second-file-line", 50, false);
    wait_for(&server, sql, 150).await;
    // Truncation: the file shrinks below what was read and grows again.
    write_lines(&file, "c", 20, false);
    wait_for(&server, sql, 170).await;
    assert_eq!(
        count(
            &server,
            "SELECT count(DISTINCT message) AS n FROM events WHERE message LIKE 'c %'"
        )
        .await,
        20
    );
    // Host metrics arrive as the `system` measurement.
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(
        &server,
        "SELECT count(*) AS n FROM information_schema.tables WHERE table_name = 'system'",
    )
    .await
        == 0
    {
        assert!(
            Instant::now() < deadline,
            "no system measurement after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let n = count(
        &server,
        "SELECT count(*) AS n FROM system WHERE hostname IS NOT NULL AND cpu_usage >= 0 AND memory_percent > 0 AND process_count > 0 AND uptime_seconds >= 0 AND disk_free >= 0 AND network_recv >= 0",
    )
    .await;
    assert!(n >= 1, "system rows with every field: {n}");
    // ... and the machine is in the systems registry, with its inventory.
    let systems = server.get_json("/api/v1/systems").await;
    let items = systems["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{systems}");
    assert!(items[0]["cpu_cores"].as_i64().unwrap() > 0, "{systems}");
    assert!(
        items[0]["agent_version"]
            .as_str()
            .unwrap()
            .starts_with("vigil-ship/"),
        "{systems}"
    );
    agent.kill().unwrap();
    agent.wait().unwrap();
    server.terminate();
}

/// On loopback, MTU discovery takes an agent's packets past Ethernet's 1,472 bytes, up to
/// the endpoints' bound (fewer packets to encrypt and acknowledge per batch).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_agents_send_packets_larger_than_ethernets() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), free_port(), &[]).await;
    let token = admin_token(dir.path());
    let (conn, welcome) = hello(&server, dir.path(), &token, "mtu-agent").await;
    assert!(
        matches!(welcome, Some(Frame::Welcome { .. })),
        "{welcome:?}"
    );
    let (mut send, mut recv, _) = channel(&conn, 1).await;
    let line = "mtu,host=a v=1 1\n".repeat(4_000);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seq = 0;
    while conn.stats().path.current_mtu <= 1_472 && Instant::now() < deadline {
        seq += 1;
        write_frame(&mut send, &lp(seq, &line)).await.unwrap();
        assert!(matches!(answer(&mut recv).await, Frame::Ack { .. }));
    }
    let mtu = conn.stats().path.current_mtu;
    assert!(
        mtu > 1_472 && mtu <= vigil_api::quic::MAX_UDP_PAYLOAD,
        "path MTU {mtu} after {seq} batches"
    );
}

/// `vigil ship --server-fingerprint` trusts the server by the fingerprint it logs, with no
/// certificate file; a server with another certificate is refused, naming its fingerprint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ship_trusts_a_server_by_its_fingerprint() {
    use rustls::pki_types::pem::PemObject;
    let dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), free_port(), &[]).await;
    let cert = CertificateDer::pem_file_iter(dir.path().join("tls").join("server.crt"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let pin = vigil_api::quic::fingerprint(&cert);
    let token = admin_token(dir.path());
    let file = work.path().join("pinned.log");
    write_lines(&file, "pinned", 10, false);
    let ship = |pin: &str, spool: &str| {
        Command::new(env!("CARGO_BIN_EXE_vigil"))
            .arg("ship")
            .arg("--server")
            .arg(server.quic.to_string())
            .args(["--server-fingerprint", pin, "--token", &token, "--spool"])
            .arg(work.path().join(spool))
            .args(["--service", "pinned", "--once"])
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // Lower case and without colons is the same fingerprint.
    finishes(
        &mut ship(&pin.replace(':', "").to_lowercase(), "spool-1"),
        Duration::from_secs(30),
    )
    .await;
    let sql = "SELECT count(*) AS n FROM events WHERE service = 'pinned'";
    assert_eq!(count(&server, sql).await, 10);
    let other = "AB:".repeat(31) + "AB";
    let refused = ship(&other, "spool-2");
    tokio::time::sleep(Duration::from_secs(2)).await;
    sigterm(&refused);
    let out = refused.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("the server's certificate has fingerprint {pin}")),
        "{stderr}"
    );
    assert_eq!(count(&server, sql).await, 10);
    server.terminate();
}

/// With `--quic-client-ca` a client without a certificate from that CA is refused, one
/// with it is welcomed, and `vigil ship` presents one with `--cert` and `--key`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_requires_a_client_certificate_from_the_ca() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let work = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let ca_path = work.path().join("ca.pem");
    std::fs::write(&ca_path, ca_cert.pem()).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let client_key = KeyPair::generate().unwrap();
    let client_cert = CertificateParams::new(vec!["agent-1".to_string()])
        .unwrap()
        .signed_by(&client_key, &issuer)
        .unwrap();
    let identity = || {
        (
            vec![client_cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(client_key.serialize_der().into()),
        )
    };

    let dir = tempfile::tempdir().unwrap();
    let ca_arg = ca_path.to_string_lossy().to_string();
    let server = Server::start(dir.path(), free_port(), &["--quic-client-ca", &ca_arg]).await;
    let token = admin_token(dir.path());
    let hello_with = |endpoint: quinn::Endpoint| {
        let token = token.clone();
        let addr = server.quic;
        async move {
            let conn = endpoint.connect(addr, "127.0.0.1").unwrap().await?;
            let (mut send, mut recv) = conn.open_bi().await?;
            let hello = Frame::Hello {
                version: protocol::VERSION,
                token,
                agent: "agent-1".into(),
            };
            // Refused after the handshake, the connection may already be gone here.
            if write_frame(&mut send, &hello).await.is_err() {
                return Ok(None);
            }
            Ok::<_, quinn::ConnectionError>(read_frame(&mut recv, 1 << 20).await.ok().flatten())
        }
    };
    // Without a client certificate the server refuses the handshake (TLS 1.3 checks the
    // client's certificate after the client thinks it is connected: the first exchange fails).
    let refused = hello_with(client(dir.path(), protocol::ALPN)).await;
    assert!(
        !matches!(refused, Ok(Some(Frame::Welcome { .. }))),
        "a client without a certificate was welcomed: {refused:?}"
    );
    let welcomed = hello_with(client_with(dir.path(), protocol::ALPN, Some(identity()))).await;
    assert!(
        matches!(welcomed, Ok(Some(Frame::Welcome { .. }))),
        "{welcomed:?}"
    );
    // `vigil ship` presents its certificate with --cert and --key.
    let (cert, key) = (work.path().join("agent.pem"), work.path().join("agent.key"));
    std::fs::write(&cert, client_cert.pem()).unwrap();
    std::fs::write(&key, client_key.serialize_pem()).unwrap();
    let file = work.path().join("mtls.log");
    write_lines(&file, "mtls", 10, false);
    let mut agent = ship_command(dir.path(), &work.path().join("spool"), server.quic)
        .args(["--service", "mtls", "--once", "--cert"])
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .arg(&file)
        .spawn()
        .unwrap();
    finishes(&mut agent, Duration::from_secs(30)).await;
    let sql = "SELECT count(*) AS n FROM events WHERE service = 'mtls'";
    assert_eq!(count(&server, sql).await, 10);
    server.terminate();
}
