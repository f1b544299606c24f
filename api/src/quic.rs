//! The QUIC ingest server (`vigil/1`, specified in `docs/protocol.md`).
//!
//! A connection starts with a control stream carrying `HELLO` (token, agent id) and
//! `WELCOME`. Each further bidirectional stream is one channel: `OPEN`, `RESUME` (the
//! highest sequence already stored), then `BATCH` frames answered in order by `ACK`,
//! `REJECT`, `BUSY` or `ERROR`. Batches of a stream are submitted to the engine in order
//! while earlier ones wait for their fsync, so a stream keeps several batches in flight.
//! Memory per connection is bounded by the QUIC windows and the stream limits set here;
//! batches read and not yet decoded share one budget across connections
//! ([`QuicConfig::batch_memory`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use quinn::crypto::rustls::QuicServerConfig;
use quinn::{Endpoint, RecvStream, SendStream, VarInt};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use vigil_engine::{Delivery, Engine, Error as EngineError, Origin, ShipTicket};

use crate::auth::Authenticator;
use crate::protocol::{self, DecodeError, Format, Frame, code};
use crate::routes::Access;

/// Settings of the QUIC listener.
#[derive(Debug, Clone)]
pub struct QuicConfig {
    /// UDP address; default `127.0.0.1:7071`.
    pub addr: SocketAddr,
    /// Certificate chain and key (PEM). Without them, a self-signed certificate is
    /// created on first start in `<data-dir>/tls/` and reused afterwards.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM): mutual TLS.
    pub client_ca: Option<PathBuf>,
    /// Largest frame accepted (the `length` field); default 8 MiB.
    pub max_frame: u32,
    /// Batches a client may send on a stream before their answers; default 8.
    pub max_in_flight: u16,
    /// Streams (channels) a connection may have open at once; default 16.
    pub max_streams: u32,
    /// Connections at once; more are refused. Default 4,096.
    pub max_connections: usize,
    /// Bytes a peer may send on one stream / one connection ahead of the server's reads.
    pub stream_window: u32,
    pub connection_window: u32,
    /// Close connections silent for this long (agents send keep-alives); default 60 s.
    pub idle_timeout: Duration,
    /// Bytes of `BATCH` frames held between reading and decoding, across all
    /// connections; default 128 MiB. A stream whose next frame does not fit waits before
    /// reading it, and QUIC flow control then holds its agent back.
    pub batch_memory: usize,
    /// Time a frame's data may take to arrive once its length has (the frame holds its
    /// share of `batch_memory` meanwhile); default 30 s.
    pub frame_timeout: Duration,
    /// How often a connection's token is checked again after `WELCOME`: a connection
    /// whose token was revoked or expired (or lost the right to ingest) is closed.
    /// Default 10 s.
    pub token_recheck: Duration,
}

impl Default for QuicConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 7071)),
            cert: None,
            key: None,
            client_ca: None,
            max_frame: protocol::DEFAULT_MAX_FRAME,
            max_in_flight: protocol::DEFAULT_MAX_IN_FLIGHT,
            max_streams: 16,
            max_connections: 4096,
            stream_window: 1024 * 1024,
            connection_window: 2 * 1024 * 1024,
            idle_timeout: Duration::from_secs(60),
            batch_memory: 128 << 20,
            frame_timeout: Duration::from_secs(30),
            token_recheck: Duration::from_secs(10),
        }
    }
}

/// Bytes a connection may send before its HELLO is accepted: a HELLO (at most 64 KiB)
/// and some. Unauthenticated peers thus hold at most this much each in the server's
/// receive buffers, not the whole connection window.
const PRE_HELLO_WINDOW: u32 = 128 * 1024;

/// Counters of the QUIC listener, for `/metrics`.
#[derive(Debug, Default)]
pub struct QuicStats {
    pub connections: AtomicUsize,
    pub connections_total: AtomicU64,
    pub refused_auth: AtomicU64,
    pub batches: AtomicU64,
    pub duplicates: AtomicU64,
    pub rejected: AtomicU64,
    pub busy: AtomicU64,
    pub rows: AtomicU64,
    /// Bytes of `BATCH` frames read (or being read) and not yet decoded.
    pub batch_bytes: AtomicU64,
}

/// Errors starting the listener.
#[derive(Debug, thiserror::Error)]
pub enum QuicError {
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("I/O error on {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}/udp: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The server certificate in use and its SHA-256 fingerprint (`AB:CD:...`).
pub struct ServerIdentity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub fingerprint: String,
    /// Where the certificate is (for clients to pin with `--ca`).
    pub cert_path: PathBuf,
}

/// Path of the self-signed certificate in a data directory.
pub fn self_signed_cert_path(data_dir: &Path) -> PathBuf {
    data_dir.join("tls").join("server.crt")
}

/// Loads the configured certificate, or the data directory's self-signed one (created
/// on first use, for `localhost`, `127.0.0.1` and `::1`).
pub fn server_identity(config: &QuicConfig, data_dir: &Path) -> Result<ServerIdentity, QuicError> {
    let (cert_path, key_path) = match (&config.cert, &config.key) {
        (Some(c), Some(k)) => (c.clone(), k.clone()),
        (None, None) => {
            let cert = self_signed_cert_path(data_dir);
            let key = data_dir.join("tls").join("server.key");
            if !cert.exists() || !key.exists() {
                create_self_signed(&cert, &key)?;
            }
            (cert, key)
        }
        _ => {
            return Err(QuicError::Tls(
                "give both a certificate and its key, or neither".into(),
            ));
        }
    };
    let (chain, key) = load_identity(&cert_path, &key_path)?;
    Ok(ServerIdentity {
        fingerprint: fingerprint(&chain[0]),
        chain,
        key,
        cert_path,
    })
}

/// A certificate chain (PEM, at least one certificate) and its private key (PEM): a
/// server's identity, or a client's for mutual TLS.
pub fn load_identity(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), QuicError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| QuicError::Tls(format!("{}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(QuicError::Tls(format!(
            "{}: no certificate in the file",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| QuicError::Tls(format!("{}: {e}", key.display())))?;
    Ok((chain, key))
}

/// SHA-256 of a certificate's DER bytes, as colon-separated hex.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
    digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn create_self_signed(cert: &Path, key: &Path) -> Result<(), QuicError> {
    let names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    let certified =
        rcgen::generate_simple_self_signed(names).map_err(|e| QuicError::Tls(e.to_string()))?;
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| QuicError::Io { path, source }
    };
    if let Some(dir) = cert.parent() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    write_private(key, certified.signing_key.serialize_pem().as_bytes()).map_err(io(key))?;
    std::fs::write(cert, certified.cert.pem()).map_err(io(cert))?;
    tracing::info!(cert = %cert.display(), "created a self-signed TLS certificate");
    Ok(())
}

/// Writes a file readable by its owner only.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// A client configuration trusting the certificates in `ca` (PEM), offering `alpn`
/// (normally [`protocol::ALPN`]), with an optional client certificate for mutual TLS,
/// sending keep-alives every 10 s, and discovering the path MTU up to [`MAX_UDP_PAYLOAD`].
pub fn client_config(
    ca: &Path,
    alpn: &[u8],
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<quinn::ClientConfig, QuicError> {
    let roots = crate::tls::load_roots(ca)?;
    let builder = tls13_client(crypto_provider())?.with_root_certificates(roots);
    finish_client_config(builder, alpn, identity)
}

/// [`client_config`] trusting the one server certificate whose SHA-256 [`fingerprint`] is
/// `pin` (colon-separated hex as the server logs it; colons and case do not matter),
/// whoever issued it and whatever names it holds: for a self-signed server certificate
/// known by the fingerprint alone.
pub fn pinned_client_config(
    pin: &str,
    alpn: &[u8],
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<quinn::ClientConfig, QuicError> {
    let hex: String = pin.chars().filter(|c| *c != ':').collect();
    let sha256 = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
        .filter(|d| d.len() == 32)
        .ok_or_else(|| {
            QuicError::Tls(format!(
                "'{pin}' is not a SHA-256 fingerprint (32 bytes in hex, as the server logs it)"
            ))
        })?;
    let provider = crypto_provider();
    let verifier = Pinned {
        sha256,
        algorithms: provider.signature_verification_algorithms,
    };
    let builder = tls13_client(provider)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    finish_client_config(builder, alpn, identity)
}

fn tls13_client(
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier>, QuicError> {
    rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| QuicError::Tls(e.to_string()))
}

/// Trusts the server certificate with a given SHA-256, and checks that the server holds
/// its key (the handshake signature) like any other verifier.
#[derive(Debug)]
struct Pinned {
    sha256: Vec<u8>,
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let digest = ring::digest::digest(&ring::digest::SHA256, end_entity.as_ref());
        if digest.as_ref() == self.sha256.as_slice() {
            return Ok(rustls::client::danger::ServerCertVerified::assertion());
        }
        let message = format!(
            "the server's certificate has fingerprint {}, not the pinned one",
            fingerprint(end_entity)
        );
        // (`General`, not `InvalidCertificate`: the peer sees the reason plainly.)
        Err(rustls::Error::General(message))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The rest of a client configuration: client certificate, ALPN, transport.
fn finish_client_config(
    builder: rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert>,
    alpn: &[u8],
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<quinn::ClientConfig, QuicError> {
    let mut tls = match identity {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| QuicError::Tls(e.to_string()))?,
        None => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![alpn.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| QuicError::Tls(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport
        .keep_alive_interval(Some(Duration::from_secs(10)))
        .mtu_discovery_config(Some(mtu_discovery()));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// ring's TLS 1.3 cipher suites, AES-128-GCM first.
///
/// rustls offers AES-256-GCM first; every QUIC packet is encrypted, and AES-128's 10
/// rounds against AES-256's 14 make the bulk of a batch's bytes cheaper to seal and open
/// on both ends. The server picks by this order, not the client's.
fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::crypto::ring::cipher_suite;
    Arc::new(rustls::crypto::CryptoProvider {
        cipher_suites: vec![
            cipher_suite::TLS13_AES_128_GCM_SHA256,
            cipher_suite::TLS13_AES_256_GCM_SHA384,
            cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        ],
        ..rustls::crypto::ring::default_provider()
    })
}

/// A server's TLS 1.3 configuration: its certificate `chain` and `key`, `alpn`, the
/// cipher order of [`crypto_provider`] (the server's, not the client's), and client
/// certificates required when `client_ca` (PEM) is given.
pub(crate) fn server_tls(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_ca: Option<&Path>,
    alpn: &[u8],
) -> Result<rustls::ServerConfig, QuicError> {
    let provider = crypto_provider();
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| QuicError::Tls(e.to_string()))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let roots = crate::tls::load_roots(ca)?;
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| QuicError::Tls(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut tls = builder
        .with_single_cert(chain, key)
        .map_err(|e| QuicError::Tls(e.to_string()))?;
    tls.alpn_protocols = vec![alpn.to_vec()];
    tls.ignore_client_order = true;
    Ok(tls)
}

/// The largest UDP payload an endpoint accepts (the `max_udp_payload_size` it advertises)
/// and MTU discovery tries.
///
/// quinn's defaults stop at 1,472 bytes (a 1,500-byte Ethernet MTU). Loopback and
/// jumbo-frame networks carry more, and every QUIC packet is encrypted, acknowledged and
/// tracked on its own, so larger packets cost both ends less per byte; where the path is
/// smaller, discovery settles below this bound (probes that do not arrive are not retried
/// for a minute). Not higher: with segmentation offload quinn hands the kernel up to 10
/// packets per `sendmsg`, Linux refuses a call of more than 64 KiB (`EMSGSIZE`, which
/// quinn counts as sent and then as lost), and the losses make quinn fall back to 1,200
/// bytes. 10 × 6,500 stays under the limit.
pub const MAX_UDP_PAYLOAD: u16 = 6_500;

fn endpoint_config() -> quinn::EndpointConfig {
    let mut config = quinn::EndpointConfig::default();
    config
        .max_udp_payload_size(MAX_UDP_PAYLOAD)
        .expect("within 1200..=65527");
    config
}

fn mtu_discovery() -> quinn::MtuDiscoveryConfig {
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(MAX_UDP_PAYLOAD);
    mtu
}

/// A client endpoint bound to `bind` using `config` for its connections, with the
/// socket buffers of a server's.
pub fn client_endpoint(bind: SocketAddr, config: quinn::ClientConfig) -> std::io::Result<Endpoint> {
    let socket = udp_socket(bind)?;
    let mut endpoint = Endpoint::new(
        endpoint_config(),
        None,
        socket,
        Arc::new(quinn::TokioRuntime),
    )?;
    endpoint.set_default_client_config(config);
    Ok(endpoint)
}

/// Bytes the kernel may queue on an endpoint's UDP socket each way.
///
/// Linux's default (208 KiB) holds about 140 full-size packets: a burst from many agents
/// overflows it, the kernel drops the rest, and QUIC takes the drops for congestion and
/// slows every sender down. Linux caps the request at `net.core.rmem_max` / `wmem_max`.
const SOCKET_BUFFER: usize = 4 << 20;

/// A UDP socket bound to `addr` with 4 MiB kernel buffers each way, for an
/// endpoint (or [`Endpoint::rebind`]).
pub fn udp_socket(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if let Err(e) = socket.set_recv_buffer_size(SOCKET_BUFFER) {
        tracing::warn!(%addr, "could not enlarge the UDP receive buffer: {e}");
    }
    if let Err(e) = socket.set_send_buffer_size(SOCKET_BUFFER) {
        tracing::warn!(%addr, "could not enlarge the UDP send buffer: {e}");
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// The QUIC listener: bound, not yet accepting.
pub struct QuicServer {
    endpoint: Endpoint,
    engine: Arc<Engine>,
    tokens: Arc<Authenticator>,
    config: QuicConfig,
    stats: Arc<QuicStats>,
}

impl QuicServer {
    /// Binds the UDP socket with the TLS identity and transport limits of `config`.
    pub fn bind(
        config: QuicConfig,
        identity: ServerIdentity,
        engine: Arc<Engine>,
        tokens: Arc<Authenticator>,
        stats: Arc<QuicStats>,
    ) -> Result<Self, QuicError> {
        let tls = server_tls(
            identity.chain,
            identity.key,
            config.client_ca.as_deref(),
            protocol::ALPN,
        )?;
        let crypto = QuicServerConfig::try_from(tls).map_err(|e| QuicError::Tls(e.to_string()))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let mut transport = quinn::TransportConfig::default();
        // Until its HELLO is accepted, a connection may open only the control stream and
        // send little: [`Conn::run`] raises both limits after WELCOME.
        transport
            .mtu_discovery_config(Some(mtu_discovery()))
            .max_concurrent_bidi_streams(VarInt::from_u32(1))
            .max_concurrent_uni_streams(VarInt::from_u32(0))
            .stream_receive_window(VarInt::from_u32(config.stream_window))
            .receive_window(VarInt::from_u32(
                PRE_HELLO_WINDOW.min(config.connection_window),
            ))
            .send_window(u64::from(config.connection_window))
            .max_idle_timeout(Some(
                quinn::IdleTimeout::try_from(config.idle_timeout)
                    .map_err(|e| QuicError::Tls(format!("idle timeout: {e}")))?,
            ));
        server.transport_config(Arc::new(transport));
        let bind_err = |source| QuicError::Bind {
            addr: config.addr,
            source,
        };
        let socket = udp_socket(config.addr).map_err(bind_err)?;
        let endpoint = Endpoint::new(
            endpoint_config(),
            Some(server),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(bind_err)?;
        Ok(Self {
            endpoint,
            engine,
            tokens,
            config,
            stats,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// Accepts connections until `shutdown` resolves, then closes them.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let Self {
            endpoint,
            engine,
            tokens,
            config,
            stats,
        } = self;
        let budget = Budget::new(
            config.batch_memory,
            config.frame_timeout,
            Arc::clone(&stats),
        );
        let config = Arc::new(config);
        tokio::pin!(shutdown);
        loop {
            let incoming = tokio::select! {
                _ = &mut shutdown => break,
                i = endpoint.accept() => match i {
                    Some(i) => i,
                    None => break,
                },
            };
            if stats.connections.load(Ordering::Relaxed) >= config.max_connections {
                tracing::warn!(remote = %incoming.remote_address(), "QUIC connection refused: too many connections");
                incoming.refuse();
                continue;
            }
            let conn = Conn {
                engine: Arc::clone(&engine),
                tokens: Arc::clone(&tokens),
                config: Arc::clone(&config),
                stats: Arc::clone(&stats),
                budget: budget.clone(),
            };
            tokio::spawn(async move {
                let remote = incoming.remote_address();
                match incoming.await {
                    Ok(connection) => conn.run(connection).await,
                    Err(e) => tracing::debug!(%remote, error = %e, "QUIC handshake failed"),
                }
            });
        }
        endpoint.close(
            VarInt::from_u32(u32::from(code::UNAVAILABLE)),
            b"server shutting down",
        );
        endpoint.wait_idle().await;
    }
}

struct Conn {
    engine: Arc<Engine>,
    tokens: Arc<Authenticator>,
    config: Arc<QuicConfig>,
    stats: Arc<QuicStats>,
    budget: Budget,
}

/// [`QuicConfig::batch_memory`] as permits, one per byte, and the time a frame holding
/// some may take to arrive.
#[derive(Clone)]
struct Budget {
    bytes: Arc<Semaphore>,
    total: u32,
    frame_timeout: Duration,
    stats: Arc<QuicStats>,
}

impl Budget {
    fn new(bytes: usize, frame_timeout: Duration, stats: Arc<QuicStats>) -> Self {
        let total = u32::try_from(bytes.clamp(1, Semaphore::MAX_PERMITS)).unwrap_or(u32::MAX);
        Self {
            bytes: Arc::new(Semaphore::new(total as usize)),
            total,
            frame_timeout,
            stats,
        }
    }

    /// Waits until `len` bytes are free (the whole budget, for a frame larger than it)
    /// and holds them until the returned guard is dropped.
    async fn hold(&self, len: u32) -> Held {
        let permit = Arc::clone(&self.bytes)
            .acquire_many_owned(len.min(self.total))
            .await
            .expect("the budget's semaphore is never closed");
        self.stats
            .batch_bytes
            .fetch_add(u64::from(len), Ordering::Relaxed);
        Held {
            _permit: permit,
            len,
            stats: Arc::clone(&self.stats),
        }
    }
}

/// A frame's share of the batch budget, counted in [`QuicStats::batch_bytes`].
struct Held {
    _permit: OwnedSemaphorePermit,
    len: u32,
    stats: Arc<QuicStats>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.stats
            .batch_bytes
            .fetch_sub(u64::from(self.len), Ordering::Relaxed);
    }
}

/// Decrements the open-connection gauge when the connection ends.
struct Gauge(Arc<QuicStats>);

impl Drop for Gauge {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Conn {
    async fn run(self, connection: quinn::Connection) {
        self.stats.connections.fetch_add(1, Ordering::Relaxed);
        self.stats.connections_total.fetch_add(1, Ordering::Relaxed);
        let _gauge = Gauge(Arc::clone(&self.stats));
        let remote = connection.remote_address();
        let (agent, token) = match tokio::time::timeout(
            Duration::from_secs(10),
            self.handshake(&connection),
        )
        .await
        {
            Ok(Ok(admitted)) => admitted,
            Ok(Err((code, message))) => {
                tracing::info!(%remote, code, %message, "QUIC handshake refused");
                // Give the ERROR frame a moment to reach the client (closing at once
                // would discard it), then close with its code.
                let _ = tokio::time::timeout(Duration::from_secs(1), connection.closed()).await;
                connection.close(VarInt::from_u32(u32::from(code)), message.as_bytes());
                return;
            }
            Err(_) => {
                connection.close(
                    VarInt::from_u32(u32::from(code::UNEXPECTED)),
                    b"no HELLO within 10 s",
                );
                return;
            }
        };
        tracing::info!(%remote, %agent, "agent connected");
        connection.set_receive_window(VarInt::from_u32(self.config.connection_window));
        connection.set_max_concurrent_bi_streams(VarInt::from_u32(self.config.max_streams + 1));
        let agent: Arc<str> = agent.into();
        let mut recheck = tokio::time::interval(self.config.token_recheck);
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        recheck.tick().await;
        let mut unchecked = false;
        loop {
            let accepted = tokio::select! {
                accepted = connection.accept_bi() => accepted,
                _ = recheck.tick() => {
                    match self.check_token(&token).await {
                        Ok(_) => unchecked = false,
                        // The side store failed, not the token: the connection goes on,
                        // and says so once per outage.
                        Err(Refusal { store_error: Some(e), .. }) => {
                            if !std::mem::replace(&mut unchecked, true) {
                                tracing::warn!(agent = %agent, error = %e, "cannot check an agent's token again; its connection goes on");
                            }
                        }
                        Err(Refusal { message, store_error: None }) => {
                            tracing::info!(%remote, agent = %agent, %message, "closing an agent's connection: its token no longer admits it");
                            self.stats.refused_auth.fetch_add(1, Ordering::Relaxed);
                            connection.close(
                                VarInt::from_u32(u32::from(code::UNAUTHORIZED)),
                                message.as_bytes(),
                            );
                            return;
                        }
                    }
                    continue;
                }
            };
            let (send, recv) = match accepted {
                Ok(s) => s,
                Err(e) => {
                    tracing::info!(%remote, agent = %agent, reason = %e, "agent disconnected");
                    return;
                }
            };
            let channel = Channel {
                engine: Arc::clone(&self.engine),
                config: Arc::clone(&self.config),
                stats: Arc::clone(&self.stats),
                budget: self.budget.clone(),
                agent: Arc::clone(&agent),
            };
            let agent = Arc::clone(&agent);
            tokio::spawn(async move {
                if let Err(e) = channel.run(send, recv).await {
                    tracing::debug!(agent = %agent, error = %e.message, "channel closed");
                }
            });
        }
    }

    /// The principal of `token` if it may ingest. A refusal carries a `store_error` when
    /// the side store failed (the token may be good), none when the token is unknown,
    /// revoked, expired or of the wrong role.
    async fn check_token(&self, token: &str) -> Result<vigil_relational::Principal, Refusal> {
        match self.tokens.authenticate(token).await {
            Ok(p) if Access::Ingest.allows(p.role) => Ok(p),
            Ok(p) => Err(Refusal {
                message: format!(
                    "role {} may not ingest (needs {})",
                    p.role,
                    Access::Ingest.roles()
                ),
                store_error: None,
            }),
            Err(vigil_relational::Error::Unauthenticated) => Err(Refusal {
                message: "unknown, revoked or expired token".into(),
                store_error: None,
            }),
            Err(e) => Err(Refusal {
                message: "the token could not be checked; see the server log".into(),
                store_error: Some(e.to_string()),
            }),
        }
    }

    /// Reads `HELLO` on the first stream, checks version, token and agent id, answers
    /// `WELCOME`: the agent id and token admitted. The stream then stays open for
    /// `INVENTORY` until the connection ends.
    async fn handshake(
        &self,
        connection: &quinn::Connection,
    ) -> Result<(String, String), (u16, String)> {
        let (mut send, mut recv) = connection
            .accept_bi()
            .await
            .map_err(|e| (code::UNEXPECTED, e.to_string()))?;
        let frame = read_frame(&mut recv, 64 * 1024)
            .await
            .map_err(|e| (e.code, e.message))?
            .ok_or((code::UNEXPECTED, "stream ended before HELLO".to_string()))?;
        let Frame::Hello {
            version,
            token,
            agent,
        } = frame
        else {
            return Err((code::UNEXPECTED, "the first frame must be HELLO".into()));
        };
        let mut principal = None;
        let refusal = if version != protocol::VERSION {
            Some((
                code::VERSION,
                format!(
                    "protocol version {version} is not supported; this server speaks {}",
                    protocol::VERSION
                ),
            ))
        } else if let Some(refused) = match self.check_token(&token).await {
            Ok(p) => {
                principal = Some(p);
                None
            }
            Err(refusal) => {
                if let Some(e) = &refusal.store_error {
                    tracing::error!(error = %e, "side store error checking a QUIC token");
                }
                Some(refusal.message)
            }
        } {
            self.stats.refused_auth.fetch_add(1, Ordering::Relaxed);
            Some((code::UNAUTHORIZED, refused))
        } else {
            protocol::check_agent(&agent)
                .err()
                .map(|e| (e.code, e.message))
        };
        if let Some((code, message)) = refusal {
            let frame = Frame::Error {
                code,
                message: message.clone(),
            };
            let _ = write_frame(&mut send, &frame).await;
            let _ = send.finish();
            return Err((code, message));
        }
        write_frame(
            &mut send,
            &Frame::Welcome {
                version: protocol::VERSION,
                max_frame: self.config.max_frame,
                max_in_flight: self.config.max_in_flight,
            },
        )
        .await
        .map_err(|e| (code::UNEXPECTED, e.message))?;
        let mut principal = principal.expect("an admitted HELLO has a principal");
        principal.ip_address = Some(connection.remote_address().ip().to_string());
        principal.user_agent = Some(format!("vigil-quic/{agent}"));
        let db = self.tokens.db().clone();
        let max_frame = self.config.max_frame;
        tokio::spawn(control_stream(send, recv, principal, db, max_frame));
        Ok((agent, token))
    }
}

/// Why a token does not admit a connection.
struct Refusal {
    message: String,
    /// The side store failed (the token itself may be good): its error.
    store_error: Option<String>,
}

/// The control stream after `WELCOME`: `INVENTORY` frames register the agent's machine in
/// the systems registry (answered `REGISTERED`, or `REJECT` with sequence 0).
async fn control_stream(
    mut send: SendStream,
    mut recv: RecvStream,
    by: vigil_relational::Principal,
    db: vigil_relational::Db,
    max_frame: u32,
) {
    loop {
        let frame = match read_frame(&mut recv, max_frame).await {
            Ok(Some(f)) => f,
            Ok(None) | Err(_) => return,
        };
        let answer = match frame {
            Frame::Inventory { hostname, json } => {
                match serde_json::from_slice::<vigil_relational::Inventory>(&json) {
                    Err(e) => Frame::Reject {
                        seq: 0,
                        code: code::BAD_DATA,
                        message: format!("inventory JSON: {e}"),
                    },
                    Ok(inventory) => match db.upsert_system(&by, &hostname, &inventory).await {
                        Ok(system) => Frame::Registered {
                            system_id: u64::try_from(system.id).unwrap_or_default(),
                        },
                        Err(e @ vigil_relational::Error::Invalid { .. }) => Frame::Reject {
                            seq: 0,
                            code: code::BAD_DATA,
                            message: e.to_string(),
                        },
                        Err(e) => {
                            tracing::error!(error = %e, "registering a system");
                            Frame::Reject {
                                seq: 0,
                                code: code::UNAVAILABLE,
                                message: "the systems registry is unavailable; see the server log"
                                    .into(),
                            }
                        }
                    },
                }
            }
            other => {
                let frame = Frame::Error {
                    code: code::UNEXPECTED,
                    message: format!("{} is not allowed on the control stream", other.name()),
                };
                let _ = write_frame(&mut send, &frame).await;
                return;
            }
        };
        if write_frame(&mut send, &answer).await.is_err() {
            return;
        }
    }
}

/// One stream: one channel of one agent.
struct Channel {
    engine: Arc<Engine>,
    config: Arc<QuicConfig>,
    stats: Arc<QuicStats>,
    budget: Budget,
    agent: Arc<str>,
}

/// An answer on its way: ready now, or once a batch is durable.
enum Pending {
    Now(Frame),
    Ticket {
        seq: u64,
        rows: usize,
        ticket: ShipTicket,
    },
}

impl Channel {
    async fn run(self, mut send: SendStream, mut recv: RecvStream) -> Result<(), DecodeError> {
        let max = self.config.max_frame;
        let channel = match read_frame(&mut recv, max).await? {
            Some(Frame::Open { channel }) => channel,
            Some(_) => {
                return self
                    .fail(
                        &mut send,
                        code::UNEXPECTED,
                        "a stream must start with OPEN".into(),
                    )
                    .await;
            }
            None => return Ok(()),
        };
        let stored_seq = self.engine.shipped_seq(&self.agent, channel);
        write_frame(
            &mut send,
            &Frame::Resume {
                channel,
                stored_seq,
            },
        )
        .await?;
        // Answers leave in the order of the batches; at most max_in_flight wait.
        let (tx, mut rx) = mpsc::channel::<Pending>(usize::from(self.config.max_in_flight.max(1)));
        let stats = Arc::clone(&self.stats);
        let writer = tokio::spawn(async move {
            while let Some(p) = rx.recv().await {
                let frame = match p {
                    Pending::Now(f) => f,
                    Pending::Ticket { seq, rows, ticket } => match ticket.wait().await {
                        Ok(Delivery::Stored(_)) => {
                            stats.rows.fetch_add(rows as u64, Ordering::Relaxed);
                            Frame::Ack {
                                seq,
                                duplicate: false,
                                rows: rows as u32,
                            }
                        }
                        Ok(Delivery::Duplicate { .. }) => {
                            stats.duplicates.fetch_add(1, Ordering::Relaxed);
                            Frame::Ack {
                                seq,
                                duplicate: true,
                                rows: 0,
                            }
                        }
                        Err(e) => Frame::Error {
                            code: code::UNAVAILABLE,
                            message: format!("batch {seq} could not be stored: {e}"),
                        },
                    },
                };
                let last = matches!(frame, Frame::Busy { .. } | Frame::Error { .. });
                if write_frame(&mut send, &frame).await.is_err() || last {
                    break;
                }
            }
            let _ = send.finish();
            // Let the peer read the last answers before the stream state goes.
            let _ = send.stopped().await;
        });
        loop {
            let next = read_frame_within(&mut recv, max, Some(&self.budget))
                .await
                .and_then(|read| read.map(next_batch).transpose());
            let (seq, format, body, held) = match next {
                Ok(Some(batch)) => batch,
                Ok(None) => break,
                // The stream cannot go on: its ERROR is the last answer.
                Err(e) => {
                    let _ = tx
                        .send(Pending::Now(Frame::Error {
                            code: e.code,
                            message: e.message,
                        }))
                        .await;
                    break;
                }
            };
            self.stats.batches.fetch_add(1, Ordering::Relaxed);
            let (pending, stop) = self.submit(channel, seq, format, body, held).await;
            if tx.send(pending).await.is_err() || stop {
                break;
            }
        }
        drop(tx);
        let _ = writer.await;
        Ok(())
    }

    /// Decodes and submits one batch; its share of the batch memory (`held`) is given
    /// back once it is decoded. `true` with the answer: stop reading the stream (the batch
    /// could not be stored for a reason that may pass; later batches must not overtake it).
    async fn submit(
        &self,
        channel: u32,
        seq: u64,
        format: Format,
        body: Vec<u8>,
        held: Option<Held>,
    ) -> (Pending, bool) {
        let slot = match self.engine.decode_slot().await {
            Ok(slot) => slot,
            Err(e) => return self.refused(seq, e),
        };
        let engine = Arc::clone(&self.engine);
        let prepared = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let _held = held;
            match format {
                Format::LineProtocol(p) => engine.prepare_line_protocol(&body, p.into()),
                Format::Events => engine.prepare_events(&body),
            }
        })
        .await;
        let prepared = match prepared {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => return self.refused(seq, e),
            Err(e) => {
                return (
                    Pending::Now(Frame::Error {
                        code: code::UNAVAILABLE,
                        message: format!("batch {seq}: {e}"),
                    }),
                    true,
                );
            }
        };
        let rows = prepared.rows();
        let origin = Origin {
            agent: self.agent.to_string(),
            channel,
            seq,
        };
        match self.engine.ship(prepared, &origin) {
            Ok(ticket) => (Pending::Ticket { seq, rows, ticket }, false),
            Err(e) => self.refused(seq, e),
        }
    }

    /// The answer to a batch the engine would not take, and whether the stream stops:
    /// bad data is rejected (the stream goes on); anything that may pass stops the
    /// stream, so that no later batch overtakes this one.
    fn refused(&self, seq: u64, e: EngineError) -> (Pending, bool) {
        match e {
            EngineError::Overloaded { .. } => {
                self.stats.busy.fetch_add(1, Ordering::Relaxed);
                (
                    Pending::Now(Frame::Busy {
                        seq,
                        retry_after_ms: 500,
                    }),
                    true,
                )
            }
            e if e.is_client_error() => (self.reject(seq, &e), false),
            e => (
                Pending::Now(Frame::Error {
                    code: code::UNAVAILABLE,
                    message: format!("batch {seq} could not be stored: {e}"),
                }),
                true,
            ),
        }
    }

    fn reject(&self, seq: u64, e: &EngineError) -> Pending {
        self.stats.rejected.fetch_add(1, Ordering::Relaxed);
        Pending::Now(Frame::Reject {
            seq,
            code: code::BAD_DATA,
            message: e.to_string(),
        })
    }

    async fn fail(
        &self,
        send: &mut SendStream,
        code: u16,
        message: String,
    ) -> Result<(), DecodeError> {
        write_frame(send, &Frame::Error { code, message }).await?;
        let _ = send.finish();
        Ok(())
    }
}

/// A frame read on a channel after `OPEN`: a `BATCH` numbered from 1, or the error
/// that ends the stream.
fn next_batch(
    (frame, held): (Frame, Option<Held>),
) -> Result<(u64, Format, Vec<u8>, Option<Held>), DecodeError> {
    match frame {
        // RESUME says 0 when nothing is stored: a batch 0 would be taken for a resend
        // and never stored.
        Frame::Batch { seq: 0, .. } => Err(DecodeError {
            code: code::MALFORMED,
            message: "batch sequence 0: sequences start at 1".into(),
        }),
        Frame::Batch { seq, format, body } => Ok((seq, format, body, held)),
        _ => Err(DecodeError {
            code: code::UNEXPECTED,
            message: "only BATCH frames may follow OPEN".into(),
        }),
    }
}

/// Reads one frame; `None` when the stream ends cleanly at a frame boundary.
///
/// Not cancel-safe: dropped in the middle of a frame (a `select!` whose other branch
/// won), it loses the part already read and the stream no longer starts at a frame.
/// A reader that waits on other things at the same time uses a [`FrameReader`].
pub async fn read_frame(recv: &mut RecvStream, max: u32) -> Result<Option<Frame>, DecodeError> {
    Ok(read_frame_within(recv, max, None)
        .await?
        .map(|(frame, _)| frame))
}

/// [`read_frame`], holding the frame's length of `budget` from before its data is read
/// until the returned permit is dropped; the data must then arrive within the budget's
/// frame timeout.
async fn read_frame_within(
    recv: &mut RecvStream,
    max: u32,
    budget: Option<&Budget>,
) -> Result<Option<(Frame, Option<Held>)>, DecodeError> {
    let mut len = [0u8; 4];
    match recv.read_exact(&mut len).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(quinn::ReadExactError::FinishedEarly(n)) => {
            return Err(DecodeError {
                code: code::MALFORMED,
                message: format!("stream ended inside a frame length ({n} of 4 bytes)"),
            });
        }
        Err(quinn::ReadExactError::ReadError(e)) => {
            return Err(DecodeError {
                code: code::UNEXPECTED,
                message: e.to_string(),
            });
        }
    }
    let len = u32::from_be_bytes(len);
    check_length(len, max)?;
    let Some(budget) = budget else {
        return Ok(Some((read_frame_data(recv, len).await?, None)));
    };
    let held = budget.hold(len).await;
    match tokio::time::timeout(budget.frame_timeout, read_frame_data(recv, len)).await {
        Ok(frame) => Ok(Some((frame?, Some(held)))),
        Err(_) => Err(DecodeError {
            code: code::MALFORMED,
            message: format!(
                "the data of a frame of {len} bytes did not arrive within {} s",
                budget.frame_timeout.as_secs_f64()
            ),
        }),
    }
}

/// A frame's `length` field against the limit `max`.
fn check_length(len: u32, max: u32) -> Result<(), DecodeError> {
    if len > max {
        return Err(DecodeError {
            code: code::TOO_LARGE,
            message: format!("frame of {len} bytes exceeds the limit of {max} bytes"),
        });
    }
    if len == 0 {
        return Err(DecodeError {
            code: code::MALFORMED,
            message: "frame length 0: a frame has at least a type byte".into(),
        });
    }
    Ok(())
}

/// The frame of `len` bytes whose length prefix has been read.
async fn read_frame_data(recv: &mut RecvStream, len: u32) -> Result<Frame, DecodeError> {
    // A BATCH frame's data (most of the bytes) goes straight into its own buffer: one copy
    // out of quinn's, no zeroing, no second copy when decoding. The copy is kept on
    // purpose: quinn's chunks are views of whole received datagram batches (up to 64 KiB),
    // so keeping them until the batch is decoded would let a peer that pads its packets
    // pin many times the batch memory budget.
    let head_len = (len as usize).min(protocol::BATCH_HEADER);
    let mut head = [0u8; protocol::BATCH_HEADER];
    let ended = |e: &dyn std::fmt::Display| DecodeError {
        code: code::MALFORMED,
        message: format!("stream ended inside a frame of {len} bytes: {e}"),
    };
    recv.read_exact(&mut head[..head_len])
        .await
        .map_err(|e| ended(&e))?;
    let rest = read_bytes(recv, len as usize - head_len)
        .await
        .map_err(|e| ended(&e))?;
    if head[0] == protocol::kind::BATCH && head_len == protocol::BATCH_HEADER {
        let (seq, format) = protocol::batch_header(&head[1..])?;
        return Ok(Frame::Batch {
            seq,
            format,
            body: rest,
        });
    }
    let mut body = head[..head_len].to_vec();
    body.extend_from_slice(&rest);
    Frame::decode(&body)
}

/// Reads the frames of a stream, and can be cancelled: bytes of a frame not yet whole
/// stay in its buffer, so [`FrameReader::next`] may be dropped at any point (as one
/// branch of a `select!`) and called again without losing any.
pub struct FrameReader {
    recv: RecvStream,
    max: u32,
    buf: Vec<u8>,
}

impl FrameReader {
    /// Read ahead of the current frame at most this much.
    const READ_AHEAD: usize = 64 * 1024;

    /// Frames of `recv`, each of at most `max` bytes.
    pub fn new(recv: RecvStream, max: u32) -> Self {
        Self {
            recv,
            max,
            buf: Vec::new(),
        }
    }

    /// The next frame; `None` when the stream ends cleanly at a frame boundary. Errors
    /// as [`read_frame`]'s. Cancel-safe.
    pub async fn next(&mut self) -> Result<Option<Frame>, DecodeError> {
        loop {
            let mut want = 4;
            if let Some(head) = self.buf.first_chunk::<4>() {
                let len = u32::from_be_bytes(*head);
                check_length(len, self.max)?;
                want = 4 + len as usize;
                if self.buf.len() >= want {
                    let frame = Frame::decode(&self.buf[4..want]);
                    self.buf.drain(..want);
                    return frame.map(Some);
                }
            }
            // `read_chunk` is cancel-safe, and the chunk joins the buffer before any
            // other await.
            let room = (want - self.buf.len()).max(Self::READ_AHEAD);
            match self.recv.read_chunk(room, true).await {
                Ok(Some(chunk)) => self.buf.extend_from_slice(&chunk.bytes),
                Ok(None) if self.buf.is_empty() => return Ok(None),
                Ok(None) => {
                    return Err(DecodeError {
                        code: code::MALFORMED,
                        message: format!(
                            "stream ended inside a frame ({} of {want} bytes)",
                            self.buf.len()
                        ),
                    });
                }
                Err(e) => {
                    return Err(DecodeError {
                        code: code::UNEXPECTED,
                        message: e.to_string(),
                    });
                }
            }
        }
    }
}

/// Reads exactly `n` bytes into a new buffer.
async fn read_bytes(recv: &mut RecvStream, n: usize) -> Result<Vec<u8>, quinn::ReadExactError> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match recv.read_chunk(n - out.len(), true).await {
            Ok(Some(chunk)) => out.extend_from_slice(&chunk.bytes),
            Ok(None) => return Err(quinn::ReadExactError::FinishedEarly(out.len())),
            Err(e) => return Err(quinn::ReadExactError::ReadError(e)),
        }
    }
    Ok(out)
}

/// Writes a `BATCH` frame of `payload` without copying the payload: quinn keeps the
/// chunks it is given ([`write_frame`] copies it into the encoded frame, and the stream
/// copies that again).
pub async fn write_batch(
    send: &mut SendStream,
    seq: u64,
    format: Format,
    payload: Bytes,
) -> Result<(), DecodeError> {
    let head = protocol::batch_head(seq, format, payload.len()).ok_or_else(|| DecodeError {
        code: code::TOO_LARGE,
        message: format!("a batch of {} bytes does not fit in a frame", payload.len()),
    })?;
    send.write_all_chunks(&mut [Bytes::copy_from_slice(&head), payload])
        .await
        .map_err(|e| DecodeError {
            code: code::UNEXPECTED,
            message: e.to_string(),
        })
}

/// Writes one frame.
pub async fn write_frame(send: &mut SendStream, frame: &Frame) -> Result<(), DecodeError> {
    send.write_all(&frame.to_bytes())
        .await
        .map_err(|e| DecodeError {
            code: code::UNEXPECTED,
            message: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The socket asks for [`SOCKET_BUFFER`]; Linux grants up to `net.core.rmem_max` /
    /// `wmem_max` (and reports twice the granted size, for its bookkeeping).
    #[cfg(target_os = "linux")]
    #[test]
    fn udp_sockets_get_large_buffers() {
        let limit = |name: &str| -> usize {
            std::fs::read_to_string(format!("/proc/sys/net/core/{name}"))
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0)
        };
        let socket = udp_socket(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        let socket = socket2::SockRef::from(&socket);
        let default = limit("rmem_default");
        let receive = socket.recv_buffer_size().unwrap();
        assert!(
            receive >= SOCKET_BUFFER.min(limit("rmem_max")),
            "receive buffer {receive} bytes"
        );
        assert!(
            receive > default,
            "receive buffer {receive} bytes, default {default}"
        );
        let send = socket.send_buffer_size().unwrap();
        assert!(
            send >= SOCKET_BUFFER.min(limit("wmem_max")),
            "send buffer {send} bytes"
        );
    }
}
