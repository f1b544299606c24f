//! The QUIC listener in process: back-pressure (`BUSY`) when the write buffer is full.

use std::sync::Arc;
use std::time::Duration;

use vigil_api::auth::Authenticator;
use vigil_api::protocol::{self, Format, Frame, Precision, code};
use vigil_api::quic::{
    QuicConfig, QuicServer, QuicStats, client_config, read_frame, server_identity, write_frame,
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

/// With the buffer over its limit (and no flusher to drain it), a batch gets `BUSY`, the
/// server ends the stream, nothing of it is stored, and the connection goes on: a new
/// stream resumes after the last stored batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_buffer_answers_busy_and_the_stream_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(
        Engine::open(
            EngineConfig {
                data_dir: dir.path().to_path_buf(),
                background_flush: false,
                flush_bytes: 1,
                max_buffer_bytes: 1,
                ..EngineConfig::default()
            },
            Arc::new(MockTimeProvider::new(1_700_000_000_000_000_000)),
        )
        .unwrap(),
    );
    let db = Db::open_sqlite(dir.path()).await.unwrap();
    let (_, token) = db
        .create_token(&Principal::system(), "agent", Role::Agent, None, None, None)
        .await
        .unwrap();
    let config = QuicConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        ..QuicConfig::default()
    };
    let identity = server_identity(&config, dir.path()).unwrap();
    let cert = identity.cert_path.clone();
    let server = QuicServer::bind(
        config,
        identity,
        Arc::clone(&engine),
        Arc::new(Authenticator::new(db)),
        Arc::new(QuicStats::default()),
    )
    .unwrap();
    let addr = server.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.run(async {
        let _ = stop_rx.await;
    }));

    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(client_config(&cert, protocol::ALPN, None).unwrap());
    let conn = endpoint.connect(addr, "127.0.0.1").unwrap().await.unwrap();
    let (mut ctl_send, mut ctl_recv) = conn.open_bi().await.unwrap();
    let hello = Frame::Hello {
        version: protocol::VERSION,
        token,
        agent: "busy-agent".into(),
    };
    write_frame(&mut ctl_send, &hello).await.unwrap();
    assert!(matches!(
        next(&mut ctl_recv).await,
        Some(Frame::Welcome { .. })
    ));

    let open = |conn: quinn::Connection| async move {
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        write_frame(&mut send, &Frame::Open { channel: 1 })
            .await
            .unwrap();
        let Some(Frame::Resume { stored_seq, .. }) = next(&mut recv).await else {
            panic!("expected RESUME");
        };
        (send, recv, stored_seq)
    };
    let (mut send, mut recv, stored) = open(conn.clone()).await;
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
    let (mut send, mut recv, stored) = open(conn.clone()).await;
    assert_eq!(stored, 1);
    write_frame(&mut send, &batch(2)).await.unwrap();
    assert!(matches!(
        next(&mut recv).await,
        Some(Frame::Busy { seq: 2, .. })
    ));
    // Draining the buffer lets it through.
    engine.flush().unwrap();
    let (mut send, mut recv, _) = open(conn.clone()).await;
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
    let _ = stop_tx.send(());
    serving.await.unwrap();
}
