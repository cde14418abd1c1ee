//! The WebSocket transport: one protocol [`Session`] per connection, frames as binary messages.
//!
//! Invariants:
//! - Each session event is handled on the blocking pool with the node locked, so the store is
//!   only touched from blocking code and one session step at a time.
//! - A frame larger than the session's limit is refused by the WebSocket layer (message and
//!   frame size caps) before it is buffered whole; a text message, or bytes the session cannot
//!   decode, end that connection only.
//! - Every wait on the network is bounded by [`NetConfig::idle_timeout`].

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use sellsync_model::RecordId;
use sellsync_store::StoreRead;
use sellsync_sync::{CloseReason, Effect, Effects, Event, Limits, Peer, Role, Session};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::node::{Node, NodeError};

/// The clock of the shell, in unix ms (the pure crates take time as an argument).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Transport settings.
#[derive(Debug, Clone, Copy)]
pub struct NetConfig {
    /// The session's frame limits.
    pub limits: Limits,
    /// The longest wait for the peer's next message.
    pub idle_timeout: Duration,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            limits: Limits::default(),
            idle_timeout: Duration::from_secs(30),
        }
    }
}

impl NetConfig {
    fn ws(&self) -> WebSocketConfig {
        WebSocketConfig::default()
            .max_message_size(Some(self.limits.max_frame))
            .max_frame_size(Some(self.limits.max_frame))
    }
}

/// What one connection did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The authenticated peer, if the handshake got that far.
    pub peer: Option<Peer>,
    /// Documents that received changes from the peer.
    pub changed: Vec<RecordId>,
    /// Documents the hub said this node's user may no longer see.
    pub revoked: Vec<RecordId>,
    /// Frames sent and received.
    pub frames_sent: u64,
    /// Frames received.
    pub frames_received: u64,
    /// Bytes of frames sent.
    pub bytes_sent: u64,
    /// Bytes of frames received.
    pub bytes_received: u64,
    /// The exchange completed.
    pub finished: bool,
    /// Why it ended early, if it did.
    pub closed: Option<CloseReason>,
    /// A failure of this node while carrying out effects (storage).
    pub error: Option<String>,
}

/// Errors of the transport itself (before a session runs).
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The WebSocket connection could not be made.
    #[error("cannot connect to {url}: {reason}")]
    Connect {
        /// The URL dialed.
        url: String,
        /// Why.
        reason: String,
    },
    /// The connection was made but the TLS handshake failed: the hub serves no TLS, or its
    /// certificate is not the one trusted.
    #[error(
        "TLS handshake with {url} failed: {reason} (a hub started without --tls-cert serves plain \
         ws://; otherwise the certificate trusted (--ca at init) is not the hub's or its authority's)"
    )]
    Tls {
        /// The URL dialed.
        url: String,
        /// What the TLS layer reported.
        reason: String,
    },
    /// The blocking pool failed (the runtime is shutting down).
    #[error("runtime: {0}")]
    Runtime(String),
}

/// TLS material that could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("TLS setup: {0}")]
pub struct TlsError(String);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS acceptor for the hub listener from PEM files: a certificate chain and its private key.
pub fn tls_acceptor(
    cert_pem: &std::path::Path,
    key_pem: &std::path::Path,
) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert_pem)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError(format!("{}: {e}", cert_pem.display())))?;
    if certs.is_empty() {
        return Err(TlsError(format!("{}: no certificate", cert_pem.display())));
    }
    let key = PrivateKeyDer::from_pem_file(key_pem)
        .map_err(|e| TlsError(format!("{}: {e}", key_pem.display())))?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError(e.to_string()))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// The label of the TLS exporter that gives a connection's channel binding (RFC 9266,
/// `tls-exporter`).
const CHANNEL_BINDING_LABEL: &[u8] = b"EXPORTER-Channel-Binding";

/// The channel binding of a TLS 1.3 connection: 32 bytes that both ends of this connection,
/// and nobody else, compute from its secrets. Empty when the export fails (a LAN handshake
/// over the connection then fails: the other end binds other bytes).
fn channel_binding<D>(conn: &rustls::ConnectionCommon<D>) -> Vec<u8> {
    conn.export_keying_material(vec![0u8; 32], CHANNEL_BINDING_LABEL, None)
        .unwrap_or_default()
}

/// The TLS acceptor of a device serving LAN peers: TLS 1.3 only, with a self-signed
/// certificate made from the device's own key (`pkcs8`, the Ed25519 key its hub certified).
///
/// What authenticates the device is not the certificate: it is the LAN handshake inside the
/// channel, whose signed transcripts bind the channel (see [`channel_binding`]).
pub fn lan_tls_acceptor(pkcs8: &[u8]) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let key_pair = rcgen::KeyPair::try_from(pkcs8).map_err(|e| TlsError(e.to_string()))?;
    let cert = rcgen::CertificateParams::new(vec!["sellsync-lan-peer".to_owned()])
        .and_then(|params| params.self_signed(&key_pair))
        .map_err(|e| TlsError(e.to_string()))?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8.to_vec()));
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key)
        .map_err(|e| TlsError(e.to_string()))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// The TLS connector of a device dialing a LAN peer: TLS 1.3 only; any certificate is taken
/// whose handshake signature verifies, because the peer proves who it is inside the channel
/// (its hub-signed credential and its signature over a transcript that binds this channel).
pub fn lan_tls_connector() -> Result<tokio_rustls::TlsConnector, TlsError> {
    let provider = provider();
    let verifier = ProvenInsideTheChannel {
        provider: provider.clone(),
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// A LAN peer's certificate check: the handshake signature must verify with the certificate's
/// key (so the channel's secrets are shared with the certificate's holder); who that holder is
/// is proven by the LAN handshake that runs inside the channel and binds it.
#[derive(Debug)]
struct ProvenInsideTheChannel {
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for ProvenInsideTheChannel {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &rustls::pki_types::CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        // Never offered: the connector speaks TLS 1.3 only.
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A TLS connector for `wss://` URLs trusting the certificates of a PEM file (the hub's own
/// certificate, or the authority that signed it).
pub fn tls_connector(ca_pem: &std::path::Path) -> Result<tokio_rustls::TlsConnector, TlsError> {
    let pem = std::fs::read(ca_pem).map_err(|e| TlsError(format!("{}: {e}", ca_pem.display())))?;
    tls_connector_pem(&pem).map_err(|e| TlsError(format!("{}: {}", ca_pem.display(), e.0)))
}

/// [`tls_connector`] from the PEM text itself.
///
/// Each certificate is trusted two ways: as an authority (the hub's certificate must chain to
/// it and name the host dialed), and pinned (a hub presenting exactly this certificate is
/// accepted as it is). Pinning is what makes the hub's own self-signed certificate work, made
/// by any tool: `openssl req -x509` marks it as an authority, which path validation alone
/// refuses as a server's certificate (`CaUsedAsEndEntity`).
pub fn tls_connector_pem(pem: &[u8]) -> Result<tokio_rustls::TlsConnector, TlsError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError(e.to_string()))?;
    for c in &certs {
        roots.add(c.clone()).map_err(|e| TlsError(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(TlsError("no certificate".into()));
    }
    let provider = provider();
    let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| TlsError(e.to_string()))?;
    let verifier = PinnedOrChained {
        pinned: certs,
        chained: webpki,
        provider: provider.clone(),
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// Accepts a server certificate that is byte for byte one of `pinned`, or else one that
/// `chained` (path validation to the same certificates as roots) accepts. Handshake signatures
/// are always verified against the presented certificate's key.
#[derive(Debug)]
struct PinnedOrChained {
    pinned: Vec<rustls::pki_types::CertificateDer<'static>>,
    chained: Arc<rustls::client::WebPkiServerVerifier>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for PinnedOrChained {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if self
            .pinned
            .iter()
            .any(|p| p.as_ref() == end_entity.as_ref())
        {
            return Ok(rustls::client::danger::ServerCertVerified::assertion());
        }
        self.chained
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A node shared by the connections of one process.
pub type SharedNode = Arc<Mutex<Node>>;

fn lock(node: &SharedNode) -> MutexGuard<'_, Node> {
    // A panic while holding the lock leaves the node in a state every store call still checks.
    node.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

enum Ev {
    Opened,
    Frame(Vec<u8>),
    Closed,
}

/// Carries out the effects that touch the node: persists advanced checkpoints, refreshes
/// the views of changed documents, flags records whose access was revoked, and verifies and
/// keeps a hub's grant. Returns the changed documents and the last failure.
pub fn carry_out(node: &mut Node, fx: &Effects, now_ms: i64) -> (Vec<RecordId>, Option<String>) {
    let mut err = None;
    let mut changed = Vec::new();
    for e in &fx.effects {
        let r: Result<(), NodeError> = match e {
            Effect::CheckpointAdvanced { peer, checkpoint } => node
                .replica_ref()
                .set_checkpoint(peer, *checkpoint)
                .map_err(NodeError::from),
            Effect::DocumentsChanged(ids) => {
                changed.extend(ids.iter().cloned());
                node.refresh(ids, now_ms)
            }
            Effect::AccessRevoked(ids) => node.access_revoked(ids, now_ms),
            Effect::Granted(bytes) => crate::credential::take_grant(node, bytes)
                .map_err(|e| NodeError::Refused(format!("grant refused: {e}"))),
            _ => Ok(()),
        };
        if let Err(e) = r {
            err = Some(e.to_string());
        }
    }
    (changed, err)
}

/// Handles one event on the blocking pool and carries out its effects (checkpoints,
/// refreshed views).
async fn step(
    node: &SharedNode,
    mut session: Session,
    ev: Ev,
    out: &mut Outcome,
) -> Result<(Session, Effects), NetError> {
    let node = node.clone();
    let (session, fx, err, changed) = tokio::task::spawn_blocking(move || {
        let now = now_ms();
        let mut n = lock(&node);
        n.replica().set_now(now);
        let event = match &ev {
            Ev::Opened => Event::Opened,
            Ev::Frame(f) => Event::Received(f),
            Ev::Closed => Event::Closed,
        };
        let fx = session.handle(n.replica(), event);
        let (changed, err) = carry_out(&mut n, &fx, now);
        (session, fx, err, changed)
    })
    .await
    .map_err(|e| NetError::Runtime(e.to_string()))?;
    if let Some(e) = err {
        tracing::warn!("after a sync step: {e}");
        out.error = Some(e);
    }
    out.changed.extend(changed);
    for e in &fx.effects {
        match e {
            Effect::Authenticated(p) => out.peer = Some(p.clone()),
            Effect::AccessRevoked(ids) => out.revoked.extend(ids.iter().cloned()),
            Effect::Finished => out.finished = true,
            Effect::Close(reason) => {
                tracing::info!("closing connection: {reason:?}");
                out.closed = Some(reason.clone());
            }
            Effect::Ignored { doc, reason } => tracing::debug!("ignored {doc}: {reason:?}"),
            _ => {}
        }
    }
    Ok((session, fx))
}

/// Runs `session` over `ws` to its end. The dialer's session is opened here.
pub async fn run_session<S>(
    mut ws: WebSocketStream<S>,
    node: SharedNode,
    session: Session,
    dialer: bool,
    cfg: NetConfig,
) -> Result<Outcome, NetError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut out = Outcome::default();
    let mut session = session;
    let mut ev = if dialer { Some(Ev::Opened) } else { None };
    loop {
        if let Some(e) = ev.take() {
            let (s, fx) = step(&node, session, e, &mut out).await?;
            session = s;
            let ended = fx.ended();
            let mut send_failed = false;
            for f in fx.send {
                out.frames_sent += 1;
                out.bytes_sent += f.len() as u64;
                if ws.send(Message::Binary(f.into())).await.is_err() {
                    send_failed = true;
                    break;
                }
            }
            if ended {
                let _ = ws.close(None).await;
                break;
            }
            if send_failed {
                let (s, _) = step(&node, session, Ev::Closed, &mut out).await?;
                session = s;
                drop(session);
                break;
            }
        }
        let next = tokio::time::timeout(cfg.idle_timeout, ws.next()).await;
        ev = Some(match next {
            Ok(Some(Ok(Message::Binary(b)))) => {
                out.frames_received += 1;
                out.bytes_received += b.len() as u64;
                Ev::Frame(b.to_vec())
            }
            // A text message is not a frame: hand it to the decoder, which refuses it.
            Ok(Some(Ok(Message::Text(t)))) => Ev::Frame(t.as_bytes().to_vec()),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)))) => continue,
            Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Err(_) => Ev::Closed,
            Ok(Some(Err(e))) => {
                tracing::info!("connection error: {e}");
                Ev::Closed
            }
        });
        if matches!(ev, Some(Ev::Closed)) {
            let (_s, _) = step(&node, session, Ev::Closed, &mut out).await?;
            if out.closed.is_none() && !out.finished {
                out.closed = Some(CloseReason::ConnectionLost);
            }
            break;
        }
    }
    Ok(out)
}

/// Dials `url` and runs one session to its end. A `wss://` URL needs `tls`, the connector
/// trusting the hub's certificate.
pub async fn dial(
    url: &str,
    node: SharedNode,
    session: Session,
    cfg: NetConfig,
) -> Result<Outcome, NetError> {
    dial_tls(url, node, session, cfg, None).await
}

fn connect_error(url: &str, reason: impl std::fmt::Display) -> NetError {
    NetError::Connect {
        url: url.to_owned(),
        reason: reason.to_string(),
    }
}

/// [`dial`], with a TLS connector for `wss://` URLs.
pub async fn dial_tls(
    url: &str,
    node: SharedNode,
    mut session: Session,
    cfg: NetConfig,
    tls: Option<tokio_rustls::TlsConnector>,
) -> Result<Outcome, NetError> {
    if let Some(rest) = url.strip_prefix("wss://") {
        let connector = tls.ok_or_else(|| connect_error(url, "wss:// needs a CA certificate"))?;
        let authority = rest.split('/').next().unwrap_or(rest);
        let host = match authority.rsplit_once(':') {
            Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
            _ => authority,
        };
        let addr = if authority.contains(':') {
            authority.to_owned()
        } else {
            format!("{authority}:443")
        };
        let server_name = rustls::pki_types::ServerName::try_from(
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
        )
        .map_err(|e| connect_error(url, e))?;
        let connect = async {
            let tcp = tokio::net::TcpStream::connect(&addr)
                .await
                .map_err(|e| connect_error(url, e))?;
            let _ = tcp.set_nodelay(true);
            let tls = connector
                .connect(server_name, tcp)
                .await
                .map_err(|e| NetError::Tls {
                    url: url.to_owned(),
                    reason: e.to_string(),
                })?;
            let binding = channel_binding(tls.get_ref().1);
            tokio_tungstenite::client_async_with_config(url, tls, Some(cfg.ws()))
                .await
                .map(|(ws, _)| (ws, binding))
                .map_err(|e| connect_error(url, e))
        };
        let (ws, binding) = tokio::time::timeout(cfg.idle_timeout, connect)
            .await
            .map_err(|_| connect_error(url, "timed out"))??;
        session.bind_channel(binding);
        return run_session(ws, node, session, true, cfg).await;
    }
    let connect = tokio_tungstenite::connect_async_with_config(url, Some(cfg.ws()), true);
    let (ws, _) = tokio::time::timeout(cfg.idle_timeout, connect)
        .await
        .map_err(|_| connect_error(url, "timed out"))?
        .map_err(|e| connect_error(url, e))?;
    run_session(ws, node, session, true, cfg).await
}

/// Accepts connections on `listener` until `shutdown` resolves, running one session per
/// connection built by `make_session`. Each connection's outcome is logged.
pub async fn serve(
    listener: TcpListener,
    node: SharedNode,
    make_session: impl Fn() -> Session + Send + Sync + 'static,
    cfg: NetConfig,
    shutdown: impl std::future::Future<Output = ()>,
) {
    serve_tls(listener, node, make_session, cfg, None, shutdown).await;
}

/// Why a connection ended, in a few words, for the log.
fn outcome_words(o: &Outcome) -> String {
    match (&o.closed, o.finished) {
        (_, true) => format!("finished, {} document(s) changed", o.changed.len()),
        (Some(reason), false) => format!("closed: {reason:?}"),
        (None, false) => "ended early".to_owned(),
    }
}

async fn accept_one<S>(
    stream: S,
    addr: std::net::SocketAddr,
    node: SharedNode,
    session: Session,
    cfg: NetConfig,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let handshake = tokio_tungstenite::accept_async_with_config(stream, Some(cfg.ws()));
    let ws = match tokio::time::timeout(cfg.idle_timeout, handshake).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            tracing::info!(%addr, "websocket handshake failed: {e}");
            return;
        }
        Err(_) => {
            tracing::info!(%addr, "websocket handshake timed out");
            return;
        }
    };
    match run_session(ws, node.clone(), session, false, cfg).await {
        Ok(o) => {
            // A hub counts each finished sync of a device in its conflict figures.
            if let Some(peer) = o
                .peer
                .as_ref()
                .filter(|p| o.finished && p.role == Role::Device)
            {
                let touched = o.changed.clone();
                let device = peer.node.clone();
                let counted = tokio::task::spawn_blocking(move || {
                    lock(&node).count_sync(&device, &touched, now_ms())
                })
                .await;
                if let Ok(Err(e)) = counted {
                    tracing::warn!(%addr, "counting the sync: {e}");
                }
            }
            // Who it was (as authenticated, not as claimed) and how it ended.
            let device = o.peer.as_ref().map(|p| p.node.to_string());
            let user = o.peer.as_ref().and_then(|p| p.user).map(|u| u.0);
            let device = device.as_deref().unwrap_or("unauthenticated");
            let outcome = outcome_words(&o);
            if o.finished {
                tracing::info!(%addr, device, user, outcome, "session ended");
            } else {
                tracing::warn!(%addr, device, user, outcome, "session ended");
            }
        }
        Err(e) => tracing::warn!(%addr, "session failed: {e}"),
    }
}

/// Where a listener's sessions find their node.
#[derive(Clone)]
pub enum Nodes {
    /// One node, open for as long as the listener runs (the hub).
    Held(SharedNode),
    /// A node opened when a connection arrives and closed when the last session using it ends,
    /// so that the store is free between sessions (a device serving LAN peers while its user
    /// reads and edits with other commands).
    Leased(Arc<NodeLease>),
}

impl std::fmt::Debug for Nodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Nodes::Held(_) => f.write_str("Nodes::Held"),
            Nodes::Leased(_) => f.write_str("Nodes::Leased"),
        }
    }
}

/// Opens a node for the sessions that need it and shares it among concurrent ones.
///
/// Invariant: at most one node (one open store) exists per lease; it lives exactly as long as
/// some session holds it.
pub struct NodeLease {
    open: Box<dyn Fn() -> Result<Node, String> + Send + Sync>,
    current: Mutex<std::sync::Weak<Mutex<Node>>>,
}

impl std::fmt::Debug for NodeLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeLease")
    }
}

impl NodeLease {
    /// A lease opening nodes with `open` (which may wait for the store's lock).
    pub fn new(open: impl Fn() -> Result<Node, String> + Send + Sync + 'static) -> NodeLease {
        NodeLease {
            open: Box::new(open),
            current: Mutex::new(std::sync::Weak::new()),
        }
    }

    /// The node of the sessions running now, or a freshly opened one (blocking).
    pub fn node(&self) -> Result<SharedNode, String> {
        let mut current = self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(node) = current.upgrade() {
            return Ok(node);
        }
        let node = Arc::new(Mutex::new((self.open)()?));
        *current = Arc::downgrade(&node);
        Ok(node)
    }
}

impl Nodes {
    async fn node(&self) -> Result<SharedNode, String> {
        match self {
            Nodes::Held(n) => Ok(n.clone()),
            Nodes::Leased(lease) => {
                let lease = lease.clone();
                tokio::task::spawn_blocking(move || lease.node())
                    .await
                    .map_err(|e| e.to_string())?
            }
        }
    }
}

/// The extra part of a `/healthz` answer (the hub adds its bridge's), computed per request.
pub type HealthExtra = Arc<dyn Fn() -> serde_json::Map<String, serde_json::Value> + Send + Sync>;

/// What a listener serves besides sessions.
#[derive(Clone, Default)]
pub struct Extras {
    /// Serve `wss://` with this acceptor (connections failing the TLS handshake are dropped).
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Added to the `/healthz` answer.
    pub health: Option<HealthExtra>,
}

impl std::fmt::Debug for Extras {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Extras")
            .field("tls", &self.tls.is_some())
            .field("health", &self.health.is_some())
            .finish()
    }
}

/// The longest HTTP request head read before deciding between `/healthz` and a WebSocket.
const MAX_REQUEST_HEAD: usize = 8 * 1024;

/// A stream whose first bytes were already read: they are read again first.
struct Replayed<S> {
    head: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Replayed<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.pos < self.head.len() {
            let n = (self.head.len() - self.pos).min(buf.remaining());
            let pos = self.pos;
            buf.put_slice(&self.head[pos..pos + n]);
            self.pos += n;
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Replayed<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The path of an HTTP request head's first line (`GET /healthz HTTP/1.1` gives `/healthz`).
fn request_path(head: &[u8]) -> Option<&str> {
    let line = head.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    let _method = parts.next()?;
    let target = parts.next()?;
    Some(target.split('?').next().unwrap_or(target))
}

/// The `/healthz` answer: the store is readable (for a held node), plus the extras.
async fn health_answer(nodes: &Nodes, extra: Option<&HealthExtra>) -> (u16, serde_json::Value) {
    let store = match nodes {
        Nodes::Held(node) => {
            let node = node.clone();
            let check = tokio::task::spawn_blocking(move || {
                let n = lock(&node);
                let store = n.store();
                drop(n);
                store.read().and_then(|r| r.identity()).map(|_| ())
            });
            match check.await {
                Ok(Ok(())) => serde_json::Value::from("ok"),
                Ok(Err(e)) => serde_json::Value::from(e.to_string()),
                Err(e) => serde_json::Value::from(e.to_string()),
            }
        }
        // Opened only for sessions: nothing to check between them.
        Nodes::Leased(_) => serde_json::Value::from("opened per session"),
    };
    let failing = store != "ok" && store != "opened per session";
    let mut body = serde_json::Map::new();
    body.insert(
        "status".into(),
        serde_json::Value::from(if failing { "failing" } else { "ok" }),
    );
    body.insert("store".into(), store);
    if let Some(extra) = extra {
        body.extend(extra());
    }
    (
        if failing { 503 } else { 200 },
        serde_json::Value::Object(body),
    )
}

/// Serves one accepted connection: a `GET /healthz` gets the health answer; anything else is
/// a WebSocket handshake for one session.
async fn connection<S>(
    mut stream: S,
    addr: std::net::SocketAddr,
    nodes: Nodes,
    session: Session,
    cfg: NetConfig,
    health: Option<HealthExtra>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut head = Vec::new();
    let read_head = async {
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST_HEAD {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
            // An HTTP request starts with its method in capitals; anything else (a TLS client
            // hello on a plain listener, say) is closed at once, so that the client learns at
            // once that this listener does not speak its protocol.
            if head.first().is_some_and(|b| !b.is_ascii_uppercase()) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "not an HTTP request (a TLS client on a plain listener?)",
                ));
            }
        }
        Ok::<(), std::io::Error>(())
    };
    match tokio::time::timeout(cfg.idle_timeout, read_head).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::info!(%addr, "connection error before a request: {e}");
            return;
        }
        Err(_) => {
            tracing::info!(%addr, "no request before the idle timeout");
            return;
        }
    }
    if request_path(&head) == Some("/healthz") {
        let (code, body) = health_answer(&nodes, health.as_ref()).await;
        let body = body.to_string();
        let reason = if code == 200 {
            "OK"
        } else {
            "Service Unavailable"
        };
        let answer = format!(
            "HTTP/1.1 {code} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(answer.as_bytes()).await;
        let _ = stream.shutdown().await;
        return;
    }
    let node = match nodes.node().await {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(%addr, "cannot open the store for this session: {e}");
            return;
        }
    };
    let stream = Replayed {
        head,
        pos: 0,
        inner: stream,
    };
    accept_one(stream, addr, node, session, cfg).await;
}

/// [`serve`], over TLS when `tls` is given (connections failing the TLS handshake are dropped).
pub async fn serve_tls(
    listener: TcpListener,
    node: SharedNode,
    make_session: impl Fn() -> Session + Send + Sync + 'static,
    cfg: NetConfig,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let extras = Extras { tls, health: None };
    serve_nodes(
        listener,
        Nodes::Held(node),
        make_session,
        cfg,
        extras,
        shutdown,
    )
    .await;
}

/// Accepts connections on `listener` until `shutdown` resolves. Each connection is either a
/// `GET /healthz` (answered with `{"status", "store", ...}` and closed) or one session on a
/// node from `nodes`, built by `make_session`; its end is logged with the device and user it
/// authenticated and its outcome.
pub async fn serve_nodes(
    listener: TcpListener,
    nodes: Nodes,
    make_session: impl Fn() -> Session + Send + Sync + 'static,
    cfg: NetConfig,
    extras: Extras,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let make_session = Arc::new(make_session);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            a = listener.accept() => a,
        };
        let (stream, addr) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                continue;
            }
        };
        let nodes = nodes.clone();
        let make_session = make_session.clone();
        let Extras { tls, health } = extras.clone();
        tokio::spawn(async move {
            let mut session = make_session();
            match tls {
                None => connection(stream, addr, nodes, session, cfg, health).await,
                Some(acceptor) => {
                    match tokio::time::timeout(cfg.idle_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => {
                            session.bind_channel(channel_binding(s.get_ref().1));
                            connection(s, addr, nodes, session, cfg, health).await
                        }
                        Ok(Err(e)) => tracing::info!(%addr, "TLS handshake failed: {e}"),
                        Err(_) => tracing::info!(%addr, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
}
