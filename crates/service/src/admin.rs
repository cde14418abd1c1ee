//! The hub's admin commands (issue a token, revoke, list devices, reload the access file) and
//! the local channel that carries them to a running hub.
//!
//! The commands are functions of a hub store, so the CLI runs the same code whether it reaches
//! a running hub through its channel or opens a stopped hub's store itself.
//!
//! The channel is a Unix socket next to the store, `<store>.admin.sock`:
//! - it is created with mode 0600 (bound under a temporary name, restricted, then renamed into
//!   place, so it is never reachable with wider permissions), and a connection is served only
//!   if the peer process runs as the socket's owner (the kernel's peer credentials): the hub's
//!   own OS user, who may open the store file anyway;
//! - one request per connection: a JSON line [`AdminRequest`], answered by a JSON line
//!   [`AdminAnswer`]; a request that does not parse is answered with an error and changes
//!   nothing;
//! - the socket file is removed when the hub stops; a stale one left by a crash is replaced at
//!   the next start.

#[cfg(unix)]
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sellsync_model::{DeviceId, UserId};
use sellsync_store::{Store, StoreError, StoreRead, TokenInfo};
use serde::{Deserialize, Serialize};

use crate::net::SharedNode;
use crate::node::Node;

/// The admin socket of a hub store: `<store>.admin.sock`.
pub fn socket_path(store: &Path) -> PathBuf {
    let mut s = store.as_os_str().to_owned();
    s.push(".admin.sock");
    PathBuf::from(s)
}

/// The longest request line read (a request is a few hundred bytes).
const MAX_REQUEST: u64 = 64 * 1024;

/// How long either side waits for the other.
const CHANNEL_TIMEOUT: Duration = Duration::from_secs(30);

/// One admin command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum AdminRequest {
    /// Issue a device token.
    Token {
        /// The user the device acts for.
        user: u64,
        /// The device's id.
        device: String,
        /// Seconds until the token expires (`None`: never).
        expires_in: Option<i64>,
    },
    /// Revoke one token, or every live token of a device.
    Revoke {
        /// The token's id.
        token_id: Option<String>,
        /// The device.
        device: Option<String>,
    },
    /// List the devices the hub issued tokens to.
    Devices,
    /// Read the hub's access file again and apply it to the next sessions.
    ReloadAcl,
    /// The organisation's conflict figures ([`crate::stats`]).
    Stats,
}

/// The answer to one admin command: its result as JSON, or why it was refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminAnswer {
    /// Done; the command's result.
    Ok(serde_json::Value),
    /// Refused or failed; nothing changed.
    Error(String),
}

/// An admin command that could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The request is not valid (an id, a missing argument).
    #[error("{0}")]
    Invalid(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The channel failed (the hub stopped meanwhile, a timeout).
    #[error("admin channel {path}: {reason}")]
    Channel {
        /// The socket.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// A token just issued: what `hub token` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedOut {
    /// The enrollment token to hand to the device (shown once).
    pub token: String,
    /// Its id, for revoking.
    pub token_id: String,
    /// The user.
    pub user: u64,
    /// The device.
    pub device: String,
    /// The hub's node id.
    pub hub: String,
    /// When it expires (unix ms), if ever.
    pub expires_at_ms: Option<i64>,
}

/// One device the hub issued tokens to, with its tokens (revoked and expired ones included).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceEntry {
    /// The device id.
    pub device: String,
    /// The user of its newest token.
    pub user: u64,
    /// Whether one of its tokens is still accepted (not revoked, not expired).
    pub live: bool,
    /// Its tokens, oldest first.
    pub tokens: Vec<TokenInfo>,
    /// When it last finished a sync with this hub (ms), if ever.
    #[serde(default)]
    pub last_sync_ms: Option<i64>,
}

/// Issues a device token on a hub store at `now_ms`.
pub fn issue_token(
    store: &Store,
    user: u64,
    device: &str,
    expires_in: Option<i64>,
    now_ms: i64,
) -> Result<IssuedOut, AdminError> {
    let hub = store
        .read()?
        .identity()?
        .ok_or_else(|| AdminError::Invalid("the store has no hub identity".into()))?
        .device_id;
    let device: DeviceId = device
        .parse()
        .map_err(|e| AdminError::Invalid(format!("device id {device:?}: {e}")))?;
    if expires_in.is_some_and(|s| s < 0) {
        return Err(AdminError::Invalid(
            "a token cannot expire in the past (--expires-in must be 0 or more)".into(),
        ));
    }
    let expires = expires_in.map(|s| now_ms.saturating_add(s.saturating_mul(1000)));
    let issued = store.write(|w| w.issue_token(UserId(user), &device, now_ms, expires))?;
    Ok(IssuedOut {
        token: crate::token::format(&hub, UserId(user), &device, &issued.token),
        token_id: issued.info.token_id,
        user,
        device: device.as_str().to_owned(),
        hub: hub.as_str().to_owned(),
        expires_at_ms: expires,
    })
}

/// Revokes one token by id, or every live token of a device; returns how many.
pub fn revoke(
    store: &Store,
    token_id: Option<&str>,
    device: Option<&str>,
    now_ms: i64,
) -> Result<usize, AdminError> {
    match (token_id, device) {
        (Some(id), _) => Ok(usize::from(store.write(|w| w.revoke_token(id, now_ms))?)),
        (None, Some(d)) => {
            let d: DeviceId = d
                .parse()
                .map_err(|e| AdminError::Invalid(format!("device id {d:?}: {e}")))?;
            Ok(store.write(|w| w.revoke_device_tokens(&d, now_ms))?)
        }
        (None, None) => Err(AdminError::Invalid("give --token-id or --device".into())),
    }
}

/// Every device the hub issued tokens to, in id order.
pub fn devices(store: &Store, now_ms: i64) -> Result<Vec<DeviceEntry>, AdminError> {
    let mut by_device: std::collections::BTreeMap<String, Vec<TokenInfo>> = Default::default();
    for t in store.read()?.tokens()? {
        by_device
            .entry(t.device.as_str().to_owned())
            .or_default()
            .push(t);
    }
    let last_sync = crate::stats::last_syncs(&store.read()?)?;
    Ok(by_device
        .into_iter()
        .map(|(device, tokens)| DeviceEntry {
            last_sync_ms: last_sync.get(&device).copied(),
            user: tokens.last().map_or(0, |t| t.user.0),
            live: tokens.iter().any(|t| {
                t.revoked_at_ms.is_none() && t.expires_at_ms.is_none_or(|exp| now_ms < exp)
            }),
            device,
            tokens,
        })
        .collect())
}

/// After the access rules changed: every record is announced again in the hub's change feed,
/// so that each device's next session offers it and a record a device may now see reaches it
/// although it did not change (a document the device already holds costs a heads exchange, no
/// more). Returns how many records.
pub fn reannounce_records(store: &Store) -> Result<usize, AdminError> {
    let records: Vec<_> = store
        .read()?
        .changed_since(0, usize::MAX)?
        .into_iter()
        .map(|e| e.record)
        .collect();
    store.write(|w| {
        for r in &records {
            w.reannounce_doc(r)?;
        }
        Ok(())
    })?;
    Ok(records.len())
}

/// How a running hub reloads its access file: reads and applies it, or says why not (the hub
/// keeps its rules then). Returns a description of what is now in force.
pub type ReloadAcl = Arc<dyn Fn(&mut Node) -> Result<String, String> + Send + Sync>;

/// Carries out one request on the hub's node.
pub fn handle(node: &mut Node, reload_acl: &ReloadAcl, req: &AdminRequest) -> AdminAnswer {
    let now = crate::net::now_ms();
    let store = node.store();
    let result = match req {
        AdminRequest::Token {
            user,
            device,
            expires_in,
        } => issue_token(&store, *user, device, *expires_in, now).map(|o| json(&o)),
        AdminRequest::Revoke { token_id, device } => {
            revoke(&store, token_id.as_deref(), device.as_deref(), now)
                .map(|n| serde_json::json!({ "revoked": n }))
        }
        AdminRequest::Devices => devices(&store, now).map(|d| json(&d)),
        AdminRequest::ReloadAcl => reload_acl(node)
            .map(|what| serde_json::json!({ "reloaded": what }))
            .map_err(AdminError::Invalid),
        AdminRequest::Stats => node
            .stats()
            .map(|s| json(&s))
            .map_err(|e| AdminError::Invalid(e.to_string())),
    };
    match result {
        Ok(v) => AdminAnswer::Ok(v),
        Err(e) => AdminAnswer::Error(e.to_string()),
    }
}

fn command_name(req: &AdminRequest) -> &'static str {
    match req {
        AdminRequest::Token { .. } => "token",
        AdminRequest::Revoke { .. } => "revoke",
        AdminRequest::Devices => "devices",
        AdminRequest::ReloadAcl => "reload-acl",
        AdminRequest::Stats => "stats",
    }
}

fn json(v: &impl Serialize) -> serde_json::Value {
    // Plain data always serialises.
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

#[cfg(unix)]
/// Sends `req` to the hub listening on `socket`. `Ok(None)` when no hub listens there (no
/// socket, or a stale one): the caller may open the store itself.
pub fn call(socket: &Path, req: &AdminRequest) -> Result<Option<AdminAnswer>, AdminError> {
    use std::os::unix::net::UnixStream;
    let channel = |reason: String| AdminError::Channel {
        path: socket.to_owned(),
        reason,
    };
    let mut stream = match UnixStream::connect(socket) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(channel(e.to_string())),
    };
    let _ = stream.set_read_timeout(Some(CHANNEL_TIMEOUT));
    let _ = stream.set_write_timeout(Some(CHANNEL_TIMEOUT));
    let mut line = serde_json::to_vec(req).map_err(|e| channel(e.to_string()))?;
    line.push(b'\n');
    stream
        .write_all(&line)
        .map_err(|e| channel(e.to_string()))?;
    let mut answer = String::new();
    BufReader::new(stream.take(MAX_REQUEST))
        .read_line(&mut answer)
        .map_err(|e| channel(e.to_string()))?;
    if answer.is_empty() {
        return Err(channel(
            "the hub closed the channel without answering".into(),
        ));
    }
    serde_json::from_str(&answer)
        .map(Some)
        .map_err(|e| channel(format!("unreadable answer: {e}")))
}

#[cfg(unix)]
/// A bound admin socket: serves requests until dropped with [`AdminSocket::serve`]'s shutdown,
/// and removes its file when dropped.
#[derive(Debug)]
pub struct AdminSocket {
    listener: tokio::net::UnixListener,
    path: PathBuf,
}

#[cfg(unix)]
impl Drop for AdminSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(unix)]
impl AdminSocket {
    /// Binds the admin socket of the store at `store` (must run inside a tokio runtime). A stale
    /// socket file (no hub answers on it) is replaced; a live one is an error.
    pub fn bind(store: &Path) -> Result<AdminSocket, AdminError> {
        use std::os::unix::fs::PermissionsExt;
        let path = socket_path(store);
        let channel = |reason: String| AdminError::Channel {
            path: path.clone(),
            reason,
        };
        if std::os::unix::net::UnixStream::connect(&path).is_ok() {
            return Err(channel("another hub answers on it".into()));
        }
        let _ = std::fs::remove_file(&path);
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".{}.tmp", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let _ = std::fs::remove_file(&tmp);
        let listener = tokio::net::UnixListener::bind(&tmp).map_err(|e| channel(e.to_string()))?;
        let restricted = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = restricted {
            let _ = std::fs::remove_file(&tmp);
            return Err(channel(e.to_string()));
        }
        Ok(AdminSocket { listener, path })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Answers requests on the hub's node until `shutdown` resolves.
    pub async fn serve(
        self,
        node: SharedNode,
        reload_acl: ReloadAcl,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        use std::os::unix::fs::MetadataExt;
        tokio::pin!(shutdown);
        let owner = std::fs::metadata(&self.path).map(|m| m.uid()).ok();
        loop {
            let accepted = tokio::select! {
                _ = &mut shutdown => break,
                a = self.listener.accept() => a,
            };
            let Ok((stream, _)) = accepted else { continue };
            // The socket's mode already keeps other users out; the peer's uid is checked too,
            // in case the file's permissions were widened after it was made.
            let peer = stream.peer_cred().map(|c| c.uid()).ok();
            if owner.is_none() || peer != owner {
                tracing::warn!(?peer, "admin channel: refused a process of another user");
                continue;
            }
            let node = node.clone();
            let reload_acl = reload_acl.clone();
            tokio::spawn(async move {
                if let Err(e) = answer_one(stream, node, reload_acl).await {
                    tracing::warn!("admin channel: {e}");
                }
            });
        }
    }
}

#[cfg(unix)]
async fn answer_one(
    stream: tokio::net::UnixStream,
    node: SharedNode,
    reload_acl: ReloadAcl,
) -> std::io::Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = tokio::io::BufReader::new(read.take(MAX_REQUEST));
    let read = tokio::time::timeout(CHANNEL_TIMEOUT, reader.read_line(&mut line)).await;
    let answer = match read {
        Err(_) => AdminAnswer::Error("no request before the timeout".into()),
        Ok(Err(e)) => AdminAnswer::Error(format!("unreadable request: {e}")),
        Ok(Ok(_)) => match serde_json::from_str::<AdminRequest>(&line) {
            Err(e) => AdminAnswer::Error(format!("not an admin request: {e}")),
            Ok(req) => {
                let cmd = command_name(&req);
                let answer = tokio::task::spawn_blocking(move || {
                    let mut n = node
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    handle(&mut n, &reload_acl, &req)
                })
                .await;
                let answer = answer.unwrap_or_else(|e| AdminAnswer::Error(e.to_string()));
                // The answer itself is not logged: it may hold a new token's secret.
                match &answer {
                    AdminAnswer::Ok(_) => tracing::info!(cmd, "admin command done"),
                    AdminAnswer::Error(e) => tracing::warn!(cmd, "admin command refused: {e}"),
                }
                answer
            }
        },
    };
    let mut bytes = serde_json::to_vec(&answer).unwrap_or_default();
    bytes.push(b'\n');
    write.write_all(&bytes).await?;
    write.shutdown().await
}
