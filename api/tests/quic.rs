//! The QUIC listener in process: back-pressure (`BUSY`) when the write buffer is full, and
//! the batch memory all connections share.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use vigil_api::auth::Authenticator;
use vigil_api::protocol::{self, Format, Frame, Precision, code};
use vigil_api::quic::{
    FrameReader, QuicConfig, QuicServer, QuicStats, client_config, read_frame, server_identity,
    write_frame,
};
use vigil_engine::{Engine, EngineConfig, MockTimeProvider};
use vigil_relational::{Db, Principal, Role};

async fn next(recv: &mut quinn::RecvStream) -> Option<Frame> {
    tokio::time::timeout(Duration::from_secs(10), read_frame(recv, 1 << 20))
        .await
        .expect("an answer within 10 s")
        .unwrap()
}

fn batch(seq: u64) -> Frame {
    Frame::Batch {
        seq,
        format: Format::LineProtocol(Precision::Nanoseconds),
        body: format!("busy v={seq} {seq}").into_bytes(),
    }
}

/// An engine in `dir` without a background flusher, `config` filling in the rest.
fn engine(dir: &std::path::Path, config: EngineConfig) -> Arc<Engine> {
    let config = EngineConfig {
        data_dir: dir.to_path_buf(),
        background_flush: false,
        ..config
    };
    let clock = Arc::new(MockTimeProvider::new(1_700_000_000_000_000_000));
    Arc::new(Engine::open(config, clock).unwrap())
}

/// Opens channel 1 on a new stream: its streams and the sequence already stored.
async fn open(conn: &quinn::Connection) -> (quinn::SendStream, quinn::RecvStream, u64) {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    write_frame(&mut send, &Frame::Open { channel: 1 })
        .await
        .unwrap();
    let Some(Frame::Resume { stored_seq, .. }) = next(&mut recv).await else {
        panic!("expected RESUME");
    };
    (send, recv, stored_seq)
}

/// A QUIC listener on a free port over `engine`, with a token for agents.
struct Serving {
    addr: std::net::SocketAddr,
    cert: std::path::PathBuf,
    token: String,
    token_id: i64,
    auth: Arc<Authenticator>,
    stats: Arc<QuicStats>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Serving {
    async fn start(dir: &std::path::Path, engine: Arc<Engine>, config: QuicConfig) -> Self {
        let db = Db::open_sqlite(dir).await.unwrap();
        let (row, token) = db
            .create_token(&Principal::system(), "agent", Role::Agent, None, None, None)
            .await
            .unwrap();
        let auth = Arc::new(Authenticator::new(db));
        let config = QuicConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            ..config
        };
        let identity = server_identity(&config, dir).unwrap();
        let cert = identity.cert_path.clone();
        let stats = Arc::new(QuicStats::default());
        let server = QuicServer::bind(
            config,
            identity,
            engine,
            Arc::clone(&auth),
            Arc::clone(&stats),
        )
        .unwrap();
        let addr = server.local_addr().unwrap();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stop_rx.await;
        }));
        Self {
            addr,
            cert,
            token,
            token_id: row.id,
            auth,
            stats,
            stop,
            task,
        }
    }

    /// A client endpoint on a free port that trusts this server.
    fn endpoint(&self) -> quinn::Endpoint {
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        endpoint
            .set_default_client_config(client_config(&self.cert, protocol::ALPN, None).unwrap());
        endpoint
    }

    /// A new connection, before its HELLO.
    async fn connect(&self) -> quinn::Connection {
        self.connect_from(&self.endpoint()).await
    }

    async fn connect_from(&self, endpoint: &quinn::Endpoint) -> quinn::Connection {
        endpoint
            .connect(self.addr, "127.0.0.1")
            .unwrap()
            .await
            .unwrap()
    }

    /// Sends HELLO as `agent`, with the agent token.
    async fn say_hello(&self, ctl_send: &mut quinn::SendStream, agent: &str) {
        let hello = Frame::Hello {
            version: protocol::VERSION,
            token: self.token.clone(),
            agent: agent.into(),
        };
        write_frame(ctl_send, &hello).await.unwrap();
    }

    /// A new connection that has said HELLO as `agent`, and its control stream.
    async fn hello(
        &self,
        agent: &str,
    ) -> (quinn::Connection, quinn::SendStream, quinn::RecvStream) {
        self.hello_from(&self.endpoint(), agent).await
    }

    async fn hello_from(
        &self,
        endpoint: &quinn::Endpoint,
        agent: &str,
    ) -> (quinn::Connection, quinn::SendStream, quinn::RecvStream) {
        let conn = self.connect_from(endpoint).await;
        let (mut ctl_send, mut ctl_recv) = conn.open_bi().await.unwrap();
        self.say_hello(&mut ctl_send, agent).await;
        assert!(matches!(
            next(&mut ctl_recv).await,
            Some(Frame::Welcome { .. })
        ));
        (conn, ctl_send, ctl_recv)
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap();
    }
}

/// With the buffer over its limit (and no flusher to drain it), a batch gets `BUSY`, the
/// server ends the stream, nothing of it is stored, and the connection goes on: a new
/// stream resumes after the last stored batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_buffer_answers_busy_and_the_stream_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(
        dir.path(),
        EngineConfig {
            flush_bytes: 1,
            max_buffer_bytes: 1,
            ..EngineConfig::default()
        },
    );
    let server = Serving::start(dir.path(), Arc::clone(&engine), QuicConfig::default()).await;
    let (conn, mut ctl_send, mut ctl_recv) = server.hello("busy-agent").await;
    let (mut send, mut recv, stored) = open(&conn).await;
    assert_eq!(stored, 0);
    // The first batch fills the buffer past its 1-byte limit; it is stored.
    write_frame(&mut send, &batch(1)).await.unwrap();
    assert!(matches!(
        next(&mut recv).await,
        Some(Frame::Ack {
            seq: 1,
            duplicate: false,
            rows: 1
        })
    ),);
    // The next one is refused with BUSY, and the server ends the stream.
    write_frame(&mut send, &batch(2)).await.unwrap();
    match next(&mut recv).await {
        Some(Frame::Busy {
            seq: 2,
            retry_after_ms,
        }) => assert!(retry_after_ms > 0),
        other => panic!("expected BUSY for batch 2, got {other:?}"),
    }
    assert_eq!(next(&mut recv).await, None, "the stream ends after BUSY");
    // The connection goes on: a new stream resumes after batch 1, and batch 2 is still
    // refused while the buffer stays full.
    let (mut send, mut recv, stored) = open(&conn).await;
    assert_eq!(stored, 1);
    write_frame(&mut send, &batch(2)).await.unwrap();
    assert!(matches!(
        next(&mut recv).await,
        Some(Frame::Busy { seq: 2, .. })
    ));
    // Draining the buffer lets it through.
    engine.flush().unwrap();
    let (mut send, mut recv, _) = open(&conn).await;
    write_frame(&mut send, &batch(2)).await.unwrap();
    assert!(matches!(
        next(&mut recv).await,
        Some(Frame::Ack {
            seq: 2,
            duplicate: false,
            ..
        })
    ));
    // A bad frame type on the control stream ends only that stream.
    write_frame(&mut ctl_send, &Frame::Open { channel: 9 })
        .await
        .unwrap();
    assert!(matches!(
        next(&mut ctl_recv).await,
        Some(Frame::Error {
            code: code::UNEXPECTED,
            ..
        })
    ));
    conn.close(0u32.into(), b"done");
    server.stop().await;
}

/// `BATCH` data waiting to be decoded shares one budget across connections: while one
/// agent's half-sent frame holds most of it, another agent's batch waits unread, and goes
/// through once the first frame is complete and decoded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_memory_is_one_budget_for_all_connections() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path(), EngineConfig::default());
    let config = QuicConfig {
        batch_memory: 1_000,
        ..QuicConfig::default()
    };
    let server = Serving::start(dir.path(), engine, config).await;
    let lines = |n: u64, tag: &str| -> Vec<u8> {
        (1..=n)
            .map(|i| format!("budget,agent={tag} v={i} {i}\n"))
            .collect::<String>()
            .into_bytes()
    };
    let frame = |body: Vec<u8>| {
        Frame::Batch {
            seq: 1,
            format: Format::LineProtocol(Precision::Nanoseconds),
            body,
        }
        .to_bytes()
    };

    // Agent a: a frame of about 920 bytes, all but its last 10 bytes sent.
    let (conn_a, _ctl_a, _) = server.hello("agent-a").await;
    let (mut send_a, mut recv_a, _) = open(&conn_a).await;
    let big = frame(lines(40, "a"));
    assert!((800..1_000).contains(&big.len()), "{}", big.len());
    let (first, last) = big.split_at(big.len() - 10);
    send_a.write_all(first).await.unwrap();
    // Until the server has read a's frame length, b could take the budget first.
    let held = || server.stats.batch_bytes.load(Ordering::Relaxed);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while held() != big.len() as u64 - 4 {
        assert!(
            std::time::Instant::now() < deadline,
            "a's frame holds no budget after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Agent b: a whole frame of about 350 bytes does not fit beside it.
    let (conn_b, _ctl_b, _) = server.hello("agent-b").await;
    let (mut send_b, mut recv_b, _) = open(&conn_b).await;
    let small = frame(lines(15, "b"));
    assert!((300..600).contains(&small.len()), "{}", small.len());
    send_b.write_all(&small).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(500), read_frame(&mut recv_b, 1 << 20))
            .await
            .is_err(),
        "agent b's batch was answered while agent a's held the budget"
    );
    assert_eq!(
        held(),
        big.len() as u64 - 4,
        "a's frame, length prefix aside"
    );

    // The rest of a's frame: a is stored, then b.
    send_a.write_all(last).await.unwrap();
    assert!(matches!(
        next(&mut recv_a).await,
        Some(Frame::Ack {
            seq: 1,
            rows: 40,
            ..
        })
    ));
    assert!(matches!(
        next(&mut recv_b).await,
        Some(Frame::Ack {
            seq: 1,
            rows: 15,
            ..
        })
    ));
    assert_eq!(held(), 0);
    conn_a.close(0u32.into(), b"done");
    conn_b.close(0u32.into(), b"done");
    server.stop().await;
}

/// A frame whose data stops coming gets `ERROR MALFORMED` after the frame timeout, and
/// the batch memory it held goes back: another agent's batch is then stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_frame_times_out_and_gives_its_memory_back() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path(), EngineConfig::default());
    let config = QuicConfig {
        batch_memory: 100,
        frame_timeout: Duration::from_millis(300),
        ..QuicConfig::default()
    };
    let server = Serving::start(dir.path(), engine, config).await;
    // Agent a announces a frame of 1,000 bytes (more than the whole budget) and sends 20.
    let (conn_a, _ctl_a, _) = server.hello("agent-a").await;
    let (mut send_a, mut recv_a, _) = open(&conn_a).await;
    let stalled = batch(1).to_bytes();
    let mut announced = 1_000u32.to_be_bytes().to_vec();
    announced.extend_from_slice(&stalled[4..20]);
    send_a.write_all(&announced).await.unwrap();
    match next(&mut recv_a).await {
        Some(Frame::Error { code, message }) => {
            assert_eq!(code, code::MALFORMED);
            assert!(message.contains("did not arrive"), "{message}");
        }
        other => panic!("expected ERROR for the stalled frame, got {other:?}"),
    }
    // Agent b's batch fits again.
    let (conn_b, _ctl_b, _) = server.hello("agent-b").await;
    let (mut send_b, mut recv_b, _) = open(&conn_b).await;
    write_frame(&mut send_b, &batch(1)).await.unwrap();
    assert!(matches!(
        next(&mut recv_b).await,
        Some(Frame::Ack {
            seq: 1,
            duplicate: false,
            rows: 1
        })
    ));
    conn_a.close(0u32.into(), b"done");
    conn_b.close(0u32.into(), b"done");
    server.stop().await;
}

/// Until its HELLO is accepted a connection has its control stream only: another stream
/// waits, and opens once WELCOME has raised the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_open_only_after_welcome() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path(), EngineConfig::default());
    let server = Serving::start(dir.path(), engine, QuicConfig::default()).await;
    let conn = server.connect().await;
    let (mut ctl_send, mut ctl_recv) = conn.open_bi().await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), conn.open_bi())
            .await
            .is_err(),
        "a second stream opened before HELLO"
    );
    server.say_hello(&mut ctl_send, "agent-early").await;
    assert!(matches!(
        next(&mut ctl_recv).await,
        Some(Frame::Welcome { .. })
    ));
    let (_send, _recv, stored) = tokio::time::timeout(Duration::from_secs(5), open(&conn))
        .await
        .expect("a channel opens after WELCOME");
    assert_eq!(stored, 0);
    conn.close(0u32.into(), b"done");
    server.stop().await;
}

/// Channels of one connection do not wait for each other: while channel 1 has sent only
/// part of a batch, channel 2's batches are stored and acknowledged, and channel 1's batch
/// goes through once its last bytes arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_channel_does_not_hold_up_another() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path(), EngineConfig::default());
    let server = Serving::start(dir.path(), Arc::clone(&engine), QuicConfig::default()).await;
    let (conn, _ctl_send, _ctl_recv) = server.hello("two-channels").await;
    let (mut slow_send, mut slow_recv, _) = open(&conn).await;
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    write_frame(&mut send, &Frame::Open { channel: 2 })
        .await
        .unwrap();
    assert!(matches!(
        next(&mut recv).await,
        Some(Frame::Resume { channel: 2, .. })
    ));
    let slow = batch(1).to_bytes();
    slow_send.write_all(&slow[..slow.len() - 2]).await.unwrap();
    for seq in 1..=3 {
        write_frame(&mut send, &batch(seq)).await.unwrap();
        assert!(matches!(
            next(&mut recv).await,
            Some(Frame::Ack { seq: acked, duplicate: false, rows: 1 }) if acked == seq
        ));
    }
    slow_send.write_all(&slow[slow.len() - 2..]).await.unwrap();
    assert!(matches!(
        next(&mut slow_recv).await,
        Some(Frame::Ack {
            seq: 1,
            duplicate: false,
            rows: 1
        })
    ));
    conn.close(0u32.into(), b"done");
    server.stop().await;
}

/// Revoking a token closes the connections it admitted (at the next check of the token),
/// with `UNAUTHORIZED` as the close code; a new connection with it is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_closes_its_connections() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path(), EngineConfig::default());
    let config = QuicConfig {
        token_recheck: Duration::from_millis(200),
        ..QuicConfig::default()
    };
    let server = Serving::start(dir.path(), engine, config).await;
    let (conn, _ctl_send, _ctl_recv) = server.hello("revoked-agent").await;
    let (mut send, mut recv, _) = open(&conn).await;
    write_frame(&mut send, &batch(1)).await.unwrap();
    assert!(matches!(
        next(&mut recv).await,
        Some(Frame::Ack { seq: 1, .. })
    ));
    // Still admitted after several checks.
    tokio::time::sleep(Duration::from_millis(700)).await;
    write_frame(&mut send, &batch(2)).await.unwrap();
    assert!(matches!(
        next(&mut recv).await,
        Some(Frame::Ack { seq: 2, .. })
    ));
    server
        .auth
        .db()
        .revoke_token(&Principal::system(), server.token_id)
        .await
        .unwrap();
    server.auth.forget();
    let reason = tokio::time::timeout(Duration::from_secs(5), conn.closed())
        .await
        .expect("the connection closes after the revocation");
    assert!(
        matches!(&reason, quinn::ConnectionError::ApplicationClosed(c)
            if c.error_code == quinn::VarInt::from_u32(u32::from(code::UNAUTHORIZED))),
        "{reason:?}"
    );
    let conn = server.connect().await;
    let (mut ctl_send, mut ctl_recv) = conn.open_bi().await.unwrap();
    server.say_hello(&mut ctl_send, "revoked-agent").await;
    assert!(matches!(
        next(&mut ctl_recv).await,
        Some(Frame::Error {
            code: code::UNAUTHORIZED,
            ..
        })
    ));
    server.stop().await;
}

/// An agent whose address changes (a new port, as after a NAT rebinding, or a new
/// network) keeps its connection: the channel it had open goes on from the new address,
/// with no new handshake and nothing resent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_survives_an_address_change() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path(), EngineConfig::default());
    let server = Serving::start(dir.path(), Arc::clone(&engine), QuicConfig::default()).await;
    let endpoint = server.endpoint();
    let (conn, _ctl_send, _ctl_recv) = server.hello_from(&endpoint, "roaming-agent").await;
    let (mut send, mut recv, _) = open(&conn).await;
    let before = endpoint.local_addr().unwrap();
    for seq in 1..=6 {
        if seq == 4 {
            endpoint
                .rebind(std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
                .unwrap();
            assert_ne!(endpoint.local_addr().unwrap(), before);
        }
        write_frame(&mut send, &batch(seq)).await.unwrap();
        match next(&mut recv).await {
            Some(Frame::Ack {
                seq: acked,
                duplicate: false,
                rows: 1,
            }) if acked == seq => {}
            other => panic!("expected ACK of batch {seq}, got {other:?}"),
        }
    }
    assert_eq!(server.stats.connections_total.load(Ordering::Relaxed), 1);
    assert_eq!(server.stats.batches.load(Ordering::Relaxed), 6);
    assert_eq!(server.stats.duplicates.load(Ordering::Relaxed), 0);
    conn.close(0u32.into(), b"done");
    server.stop().await;
}

/// A frame that arrives in two parts, with the read dropped in between (a `select!` whose
/// timer fired), is still read whole by a [`FrameReader`], and so is the frame after it:
/// nothing already read is lost when its future goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_reader_may_be_cancelled_inside_a_frame() {
    let dir = tempfile::tempdir().unwrap();
    let identity = server_identity(&QuicConfig::default(), dir.path()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(identity.chain, identity.key)
        .unwrap();
    tls.alpn_protocols = vec![protocol::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
    let server = quinn::Endpoint::server(
        quinn::ServerConfig::with_crypto(Arc::new(crypto)),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    let addr = server.local_addr().unwrap();
    let ack = Frame::Ack {
        seq: 7,
        duplicate: false,
        rows: 5000,
    };
    let busy = Frame::Busy {
        seq: 8,
        retry_after_ms: 500,
    };
    let (first, second) = (ack.to_bytes(), busy.to_bytes());
    // A peer that sends three bytes of the first frame, then, 300 ms later, the rest of
    // it and the second frame.
    let peer = tokio::spawn(async move {
        let conn = server.accept().await.unwrap().await.unwrap();
        let (mut send, mut recv) = conn.accept_bi().await.unwrap();
        let mut opened = [0u8; 1];
        recv.read_exact(&mut opened).await.unwrap();
        send.write_all(&first[..3]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        send.write_all(&first[3..]).await.unwrap();
        send.write_all(&second).await.unwrap();
        send.finish().unwrap();
        let _ = send.stopped().await;
    });
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(
        client_config(&identity.cert_path, protocol::ALPN, None).unwrap(),
    );
    let conn = endpoint.connect(addr, "127.0.0.1").unwrap().await.unwrap();
    let (mut send, recv) = conn.open_bi().await.unwrap();
    send.write_all(&[0]).await.unwrap();
    let mut reader = FrameReader::new(recv, 1 << 20);
    let mut frames = Vec::new();
    let mut cancelled = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while frames.len() < 2 && tokio::time::Instant::now() < deadline {
        tokio::select! {
            frame = reader.next() => frames.push(frame.unwrap().unwrap()),
            () = tokio::time::sleep(Duration::from_millis(50)) => cancelled += 1,
        }
    }
    assert_eq!(frames, [ack, busy]);
    assert!(
        cancelled >= 3,
        "the read was dropped {cancelled} times while the frame was incomplete"
    );
    assert_eq!(reader.next().await.unwrap(), None, "then the stream ends");
    peer.await.unwrap();
}
