//! Starting and stopping the real `vigil` binary on a free loopback port.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) url: String,
    pub(crate) quic: std::net::SocketAddr,
    /// The data directory's admin token, read once the server is up.
    pub(crate) token: String,
    data_dir: std::path::PathBuf,
    /// Served with `--http-tls`: clients trust the data directory's certificate.
    https: bool,
}

/// An HTTP client that sends `token` with every request.
pub(crate) fn client_with_token(token: &str, timeout: Option<Duration>) -> reqwest::Client {
    token_client(token, timeout).build().unwrap()
}

fn token_client(token: &str, timeout: Option<Duration>) -> reqwest::ClientBuilder {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().unwrap(),
    );
    let mut b = reqwest::Client::builder().default_headers(headers);
    if let Some(t) = timeout {
        b = b.timeout(t);
    }
    b
}

/// A loopback port free for both TCP and UDP, below the kernel's ephemeral range.
///
/// Tests restart servers on the port they first got. A port from the ephemeral range (what
/// binding port 0 returns) can meanwhile become the local end of some client's connection,
/// and the restarted server then fails with "address in use". Ports below the range are
/// never handed out that way; each call in a process returns a different one.
pub(crate) fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768)
        .clamp(12000, 65535);
    let span = low - 10000;
    // Different test processes start at different places in the span.
    let start = std::process::id().wrapping_mul(7919) % span;
    for _ in 0..span {
        let port = (10000 + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok()
        {
            return port;
        }
    }
    panic!("no free loopback port below {low}");
}

impl Server {
    /// Starts `vigil serve` and waits until `/health` answers.
    pub(crate) async fn start(data_dir: &Path, port: u16, extra: &[&str]) -> Server {
        Self::start_with_quic(data_dir, port, free_port(), extra).await
    }

    /// [`Server::start`] with QUIC on `quic_port`.
    pub(crate) async fn start_with_quic(
        data_dir: &Path,
        port: u16,
        quic_port: u16,
        extra: &[&str],
    ) -> Server {
        let quic = std::net::SocketAddr::from(([127, 0, 0, 1], quic_port));
        let child = Command::new(env!("CARGO_BIN_EXE_vigil"))
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--http-addr")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--quic-addr")
            .arg(quic.to_string())
            .args(extra)
            .env("VIGIL_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("vigil binary starts");
        let https = extra.contains(&"--http-tls");
        let scheme = if https { "https" } else { "http" };
        let mut server = Server {
            child,
            url: format!("{scheme}://127.0.0.1:{port}"),
            quic,
            token: String::new(),
            data_dir: data_dir.to_path_buf(),
            https,
        };
        server.wait_healthy().await;
        server
    }

    /// An HTTP client sending the admin token (and trusting the server's certificate).
    pub(crate) fn client(&self) -> reqwest::Client {
        let mut b = token_client(&self.token, None);
        if self.https {
            let pem = std::fs::read(self.data_dir.join("tls/server.crt")).unwrap();
            b = b
                .tls_built_in_root_certs(false)
                .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap());
        }
        b.build().unwrap()
    }

    /// `GET path` with the admin token, its answer as JSON.
    pub(crate) async fn get_json(&self, path: &str) -> serde_json::Value {
        let resp = self
            .client()
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "GET {path}: {}", resp.status());
        resp.json().await.unwrap()
    }

    async fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let token_file = self.data_dir.join("admin.token");
        while Instant::now() < deadline {
            // Under --http-tls the certificate appears after the token.
            let cert_ready = !self.https || self.data_dir.join("tls/server.crt").exists();
            if let Ok(token) = std::fs::read_to_string(&token_file)
                && cert_ready
            {
                self.token = token.trim().to_string();
                let client = self.client();
                if let Ok(r) = client.get(format!("{}/health", self.url)).send().await
                    && r.status().is_success()
                {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("server at {} did not become healthy", self.url);
    }

    /// SIGKILL: no flush, no cleanup.
    pub(crate) fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM and wait for the graceful exit.
    pub(crate) fn terminate(mut self) {
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        assert!(status.success(), "graceful shutdown failed: {status}");
    }
}

impl Drop for Server {
    /// A test that panics must not leave its server running (it would also hold the
    /// test's output pipe open).
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
