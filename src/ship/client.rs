//! Sending the spool over QUIC: connect, `HELLO`, one channel stream, batches in order
//! with several in flight, acknowledgements back; on any failure, reconnect with backoff
//! and send again from the first unacknowledged batch.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use parking_lot::Mutex;
use quinn::{Endpoint, VarInt};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::Notify;
use vigil_api::protocol::{self, Frame, code};
use vigil_api::quic::{
    FrameReader, client_config, client_endpoint, pinned_client_config, read_frame, udp_socket,
    write_batch, write_frame,
};

use super::Stats;
use super::input::valid_line;
use super::spool::Spool;

/// The channel `vigil ship` sends on: one ordered stream for all its inputs.
pub(crate) const CHANNEL: u32 = 0;

pub(crate) struct Client {
    pub(crate) endpoint: Endpoint,
    /// The server as given (`host:port`), resolved again for every connection (its
    /// address may change); of several addresses, each failure moves on to the next.
    pub(crate) server: String,
    pub(crate) next_address: AtomicUsize,
    pub(crate) server_name: String,
    pub(crate) token: String,
    pub(crate) agent: String,
    pub(crate) spool: Arc<Mutex<Spool>>,
    pub(crate) notify: Arc<Notify>,
    pub(crate) stats: Arc<Stats>,
    /// Hostname and inventory JSON, registered on every connection (`--host-metrics`).
    pub(crate) inventory: Option<(String, Vec<u8>)>,
}

/// What the server's `WELCOME` allows.
struct Limits {
    in_flight: usize,
    /// Largest frame (its `length` field).
    frame: usize,
}

/// How a session (or one stream of it) ended.
enum End {
    /// Input finished and everything is acknowledged.
    Finished,
    /// The server's buffer is full: reopen the channel on the same connection after this
    /// long.
    Busy(Duration),
    /// Reconnect after this long.
    Retry(Duration, String),
}

/// How the agent trusts the server.
pub(crate) enum Trust {
    /// The certificates in this file (PEM).
    Ca(PathBuf),
    /// The certificate with this SHA-256 fingerprint.
    Fingerprint(String),
}

/// A QUIC client endpoint trusting the server as `trust` says, presenting `identity`
/// (certificate chain and key) if the server asks for one (mutual TLS), on a socket of the
/// address family `server` resolves to now (IPv4 if it does not resolve yet; a session
/// rebinds it when the family changes).
pub(crate) fn endpoint(
    trust: &Trust,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    server: &str,
) -> anyhow::Result<Endpoint> {
    let config = match trust {
        Trust::Ca(ca) => client_config(ca, protocol::ALPN, identity)?,
        Trust::Fingerprint(pin) => pinned_client_config(pin, protocol::ALPN, identity)?,
    };
    let ipv6 = server
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .is_some_and(|a| a.is_ipv6());
    client_endpoint(any_address(ipv6), config).context("opening a UDP socket")
}

/// The unspecified address of a family, port 0.
fn any_address(ipv6: bool) -> SocketAddr {
    if ipv6 {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    }
}

impl Client {
    /// Sends until the input is finished and every batch is acknowledged.
    pub(crate) async fn run(self) -> anyhow::Result<()> {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.session(&mut backoff).await {
                Ok(End::Finished) => return Ok(()),
                // (A session reopens its channel itself after BUSY.)
                Ok(End::Busy(wait)) => tokio::time::sleep(wait).await,
                Ok(End::Retry(wait, why)) => {
                    self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                    *self.stats.last_error.lock() = Some(why);
                    let wait = wait.max(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    tokio::time::sleep(wait).await;
                }
                Err(fatal) => return Err(fatal),
            }
        }
    }

    /// Registers this machine in the server's systems registry (failures are reported,
    /// not fatal: the data still flows).
    async fn register(
        &self,
        send: &mut quinn::SendStream,
        recv: &mut quinn::RecvStream,
        hostname: &str,
        json: &[u8],
    ) {
        let frame = Frame::Inventory {
            hostname: hostname.to_string(),
            json: json.to_vec(),
        };
        let answer = async {
            write_frame(send, &frame).await?;
            read_frame(recv, 1 << 20).await
        };
        match tokio::time::timeout(Duration::from_secs(5), answer).await {
            Ok(Ok(Some(Frame::Registered { system_id }))) => {
                if !self.stats.registered.swap(true, Ordering::Relaxed) {
                    eprintln!("vigil ship: registered as system {system_id}");
                }
            }
            Ok(Ok(Some(Frame::Reject { message, .. }))) => {
                eprintln!("vigil ship: the server refused the inventory: {message}");
            }
            Ok(Ok(other)) => {
                eprintln!("vigil ship: unexpected answer to INVENTORY: {other:?}");
            }
            Ok(Err(e)) => eprintln!("vigil ship: sending the inventory: {e}"),
            Err(_) => eprintln!("vigil ship: no answer to INVENTORY within 5 s"),
        }
    }

    fn input_done(&self) -> bool {
        self.stats.input_done.load(Ordering::SeqCst)
    }

    /// A connection to the server's current address: `Err` for a configuration that
    /// cannot work, `Ok(Err(why))` for a failure worth trying again.
    async fn connect(&self) -> anyhow::Result<Result<quinn::Connection, String>> {
        let addrs: Vec<SocketAddr> = match tokio::net::lookup_host(self.server.as_str()).await {
            Ok(addrs) => addrs.collect(),
            Err(e) => return Ok(Err(format!("resolving {}: {e}", self.server))),
        };
        if addrs.is_empty() {
            return Ok(Err(format!("{} resolves to no address", self.server)));
        }
        let addr = addrs[self.next_address.load(Ordering::Relaxed) % addrs.len()];
        let local = self
            .endpoint
            .local_addr()
            .context("the agent's UDP socket")?;
        if local.is_ipv6() != addr.is_ipv6() {
            // No connection is open between sessions: the socket can change family.
            let socket = match udp_socket(any_address(addr.is_ipv6())) {
                Ok(socket) => socket,
                Err(e) => return Ok(Err(format!("opening a UDP socket for {addr}: {e}"))),
            };
            if let Err(e) = self.endpoint.rebind(socket) {
                return Ok(Err(format!("opening a UDP socket for {addr}: {e}")));
            }
        }
        let connecting = self
            .endpoint
            .connect(addr, &self.server_name)
            .with_context(|| format!("cannot connect to {addr}"))?;
        Ok(
            match tokio::time::timeout(Duration::from_secs(10), connecting).await {
                Ok(Ok(conn)) => Ok(conn),
                Ok(Err(e)) => Err(format!("connecting to {addr}: {e}")),
                Err(_) => Err(format!("connecting to {addr}: no answer in 10 s")),
            },
        )
    }

    async fn session(&self, backoff: &mut Duration) -> anyhow::Result<End> {
        let retry = |e: &dyn std::fmt::Display| Ok(End::Retry(Duration::ZERO, e.to_string()));
        let conn = match self.connect().await? {
            Ok(conn) => conn,
            Err(why) => {
                self.next_address.fetch_add(1, Ordering::Relaxed);
                return retry(&why);
            }
        };
        let (mut ctl_send, mut ctl_recv) = match conn.open_bi().await {
            Ok(s) => s,
            Err(e) => return retry(&e),
        };
        let hello = Frame::Hello {
            version: protocol::VERSION,
            token: self.token.clone(),
            agent: self.agent.clone(),
        };
        if let Err(e) = write_frame(&mut ctl_send, &hello).await {
            return retry(&e);
        }
        let limits = match read_frame(&mut ctl_recv, 1 << 20).await {
            Ok(Some(Frame::Welcome {
                max_in_flight,
                max_frame,
                ..
            })) => Limits {
                in_flight: usize::from(max_in_flight.max(1)),
                frame: max_frame as usize,
            },
            Ok(Some(Frame::Error {
                code: code::UNAUTHORIZED | code::VERSION | code::BAD_AGENT,
                message,
            })) => {
                bail!("the server refused the agent: {message}");
            }
            Ok(Some(f)) => return retry(&format!("unexpected answer to HELLO: {f:?}")),
            Ok(None) => return retry(&"the server closed the handshake"),
            Err(e) => return retry(&e),
        };
        if let Some((hostname, json)) = &self.inventory {
            self.register(&mut ctl_send, &mut ctl_recv, hostname, json)
                .await;
        }
        *backoff = Duration::from_millis(100);
        self.stats.connected.store(true, Ordering::Relaxed);
        let result = loop {
            match self.channel(&conn, &limits).await {
                // The server finished the stream after BUSY; the connection goes on.
                Ok(End::Busy(wait)) => tokio::time::sleep(wait).await,
                other => break other,
            }
        };
        self.stats.connected.store(false, Ordering::Relaxed);
        match &result {
            Ok(End::Finished) => {
                conn.close(VarInt::from_u32(0), b"done");
                self.endpoint.wait_idle().await;
            }
            _ => conn.close(VarInt::from_u32(0), b"reconnecting"),
        }
        result
    }

    /// Opens the channel on a new stream of `conn` and sends on it until input is done,
    /// the server is busy, or the stream fails.
    async fn channel(&self, conn: &quinn::Connection, limits: &Limits) -> anyhow::Result<End> {
        let retry = |e: &dyn std::fmt::Display| Ok(End::Retry(Duration::ZERO, e.to_string()));
        let (mut send, recv) = match conn.open_bi().await {
            Ok(s) => s,
            Err(e) => return retry(&e),
        };
        if let Err(e) = write_frame(&mut send, &Frame::Open { channel: CHANNEL }).await {
            return retry(&e);
        }
        // The answers are read while waiting for new input too: a cancel-safe reader.
        let mut recv = FrameReader::new(recv, 1 << 20);
        let stored = match recv.next().await {
            Ok(Some(Frame::Resume { stored_seq, .. })) => stored_seq,
            Ok(Some(f)) => return retry(&format!("unexpected answer to OPEN: {f:?}")),
            Ok(None) => return retry(&"the server closed the stream"),
            Err(e) => return retry(&e),
        };
        self.spool.lock().number_after(stored);
        self.ack_through(stored);
        let result = self.pump(&mut send, &mut recv, stored, limits).await;
        if let Ok(End::Finished) = result {
            let _ = send.finish();
        }
        result
    }

    fn ack_through(&self, seq: u64) {
        let mut spool = self.spool.lock();
        let before = spool.unacked().0;
        spool.ack_through(seq);
        let after = spool.unacked().0;
        self.stats
            .batches_acked
            .fetch_add((before - after) as u64, Ordering::Relaxed);
    }

    async fn pump(
        &self,
        send: &mut quinn::SendStream,
        recv: &mut FrameReader,
        stored: u64,
        limits: &Limits,
    ) -> anyhow::Result<End> {
        let max_in_flight = limits.in_flight;
        let retry = |e: &dyn std::fmt::Display| Ok(End::Retry(Duration::ZERO, e.to_string()));
        let mut sent_upto = stored.max(
            self.spool
                .lock()
                .first_unacked()
                .map_or(stored, |s| s.saturating_sub(1)),
        );
        let mut in_flight = 0usize;
        // Set when a write fails: the server stopped reading the stream (after BUSY or
        // ERROR), and its answers to the batches already sent are still to be read.
        let mut write_failed: Option<String> = None;
        loop {
            if write_failed.is_none() && in_flight < max_in_flight {
                let records = self
                    .spool
                    .lock()
                    .after(sent_upto, max_in_flight - in_flight);
                for r in records {
                    let format = match protocol::Format::from_byte(r.format) {
                        Some(f) => f,
                        None => bail!("spool record {} has unknown format {}", r.seq, r.format),
                    };
                    // Sending it would only get ERROR TOO_LARGE, again and again.
                    if protocol::BATCH_HEADER + r.body.len() > limits.frame {
                        bail!(
                            "batch {} is {} bytes, over the server's frame limit of {} bytes: it cannot be sent, and waits in the spool",
                            r.seq,
                            r.body.len(),
                            limits.frame
                        );
                    }
                    if let Err(e) = write_batch(send, r.seq, format, r.body.clone()).await {
                        write_failed = Some(e.to_string());
                        break;
                    }
                    sent_upto = r.seq;
                    in_flight += 1;
                    self.stats.batches_sent.fetch_add(1, Ordering::Relaxed);
                    self.stats
                        .lines_sent
                        .fetch_add(r.lines as u64, Ordering::Relaxed);
                }
            }
            if in_flight == 0 {
                if let Some(e) = write_failed {
                    return retry(&e);
                }
                if self.input_done() && self.spool.lock().unacked().0 == 0 {
                    return Ok(End::Finished);
                }
            }
            let notified = self.notify.notified();
            tokio::select! {
                frame = recv.next(), if in_flight > 0 => match frame {
                    Ok(Some(Frame::Ack { seq, .. })) => {
                        in_flight -= 1;
                        self.ack_through(seq);
                    }
                    Ok(Some(Frame::Reject { seq, message, .. })) => {
                        in_flight -= 1;
                        self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                        // A failure to keep the lines stops the agent with the batch
                        // still spooled: acknowledging later batches would drop it.
                        let salvaged = self.spool.lock().salvage(seq, valid_line).with_context(|| {
                            format!("the server refused batch {seq} ({message}), and its lines could not be set aside")
                        })?;
                        let what = match salvaged {
                            Some(s) => {
                                self.stats.lines_aside.fetch_add(s.set_aside as u64, Ordering::Relaxed);
                                match s.resent {
                                    Some((new, n)) => format!(
                                        "{} bad lines are set aside in {}, the other {n} go again as batch {new}",
                                        s.set_aside,
                                        s.path.display()
                                    ),
                                    None => format!("its {} lines are set aside in {}", s.set_aside, s.path.display()),
                                }
                            }
                            None => "not resent".into(),
                        };
                        eprintln!("vigil ship: the server refused batch {seq}: {message}; {what}");
                    }
                    Ok(Some(Frame::Busy { retry_after_ms, .. })) => {
                        self.stats.busy.fetch_add(1, Ordering::Relaxed);
                        // At least 100 ms, whatever the server says: no tight loop.
                        let wait = Duration::from_millis(u64::from(retry_after_ms).max(100));
                        return Ok(End::Busy(wait));
                    }
                    Ok(Some(Frame::Error { message, .. })) => return retry(&message),
                    Ok(Some(f)) => return retry(&format!("unexpected frame {f:?}")),
                    Ok(None) => return retry(&"the server closed the stream"),
                    Err(e) => return retry(&e),
                },
                () = notified, if write_failed.is_none() => {}
                () = tokio::time::sleep(Duration::from_millis(200)), if write_failed.is_none() => {}
            }
        }
    }
}
