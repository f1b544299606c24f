//! The HTTPS listener (`vigil serve --http-tls`) on a loopback socket.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use vigil_api::quic::{QuicConfig, server_identity};
use vigil_api::tls::{TlsListener, https_server_config, load_roots};

#[tokio::test]
async fn a_client_that_never_finishes_its_handshake_holds_up_nobody() {
    let dir = tempfile::tempdir().unwrap();
    let identity = server_identity(&QuicConfig::default(), dir.path()).unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let listener = TlsListener::new(tcp, https_server_config(&identity).unwrap()).unwrap();
    let app = Router::new().route("/", get(|| async { "ok" }));
    tokio::spawn(async move { axum::serve(listener, app).await });

    // Connects and sends nothing: its handshake waits in its own task.
    let _silent = TcpStream::connect(addr).await.unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(load_roots(&identity.cert_path).unwrap())
    .with_no_client_auth();
    let connector = TlsConnector::from(Arc::new(config));
    let answer = tokio::time::timeout(Duration::from_secs(5), async {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let mut tls = connector.connect(name, tcp).await.unwrap();
        tls.write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        tls.read_to_string(&mut answer).await.unwrap();
        answer
    })
    .await
    .expect("the second client was served while the first said nothing");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("ok"), "{answer}");
}

#[tokio::test]
async fn a_file_without_certificates_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.pem");
    std::fs::write(&path, "not a certificate\n").unwrap();
    let err = load_roots(&path).unwrap_err().to_string();
    assert!(
        err.contains("empty.pem") && err.contains("no certificate"),
        "{err}"
    );
}
