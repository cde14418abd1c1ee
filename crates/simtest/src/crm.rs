//! A [`Crm`] that calls the simulator's router in process (no sockets), with connection faults
//! the harness decides: a request dropped before it reaches the simulator (nothing happens), a
//! request whose answer is dropped after the simulator committed it, and a cut (the bridge's
//! process dies while waiting for this answer).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::body::Body;
use sellsync_bridge::zendesk::{self, HttpResponse, Method};
use sellsync_bridge::{CrmError, CrmRequest, CrmResponse};
use sellsync_hub_bridge::Crm;
use tower::ServiceExt;

/// Connection faults pending for the next requests.
#[derive(Debug, Default, Clone)]
pub struct ConnFaults {
    /// Writes (POST, PUT, DELETE) still to drop before the simulator sees them.
    pub drop_before_writes: u32,
    /// Writes still to commit and then drop the answer of.
    pub drop_after_writes: u32,
    /// Requests still to answer before the bridge's process is cut (`None`: no cut planned).
    pub cut_after: Option<u32>,
}

/// The shared control of one [`InProcessCrm`] and its clones.
#[derive(Debug, Default)]
pub struct CrmControl {
    faults: Mutex<ConnFaults>,
    /// Set once a cut happened; the harness then drops the bridge's future.
    cut: tokio::sync::Notify,
}

impl CrmControl {
    /// Replaces the pending connection faults.
    pub fn set(&self, faults: ConnFaults) {
        *self.faults.lock().unwrap_or_else(PoisonError::into_inner) = faults;
    }

    /// Waits until a request hit the planned cut.
    pub async fn cut(&self) {
        self.cut.notified().await;
    }
}

/// What to do with one request.
enum Fate {
    Answer,
    DropBefore,
    DropAfter,
    Cut,
}

/// The simulator's router, called in process.
#[derive(Debug, Clone)]
pub struct InProcessCrm {
    router: axum::Router,
    auth: String,
    calls: Arc<AtomicU64>,
    control: Arc<CrmControl>,
}

/// Percent-encodes a query component as `ZendeskHttp` does.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b':' | b',' => {
                out.push(b as char);
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Sends one HTTP description to `router` as `token`'s user and reads the whole answer.
pub async fn send(
    router: &axum::Router,
    token: &str,
    h: &zendesk::HttpRequest,
) -> Result<HttpResponse, String> {
    let mut uri = h.path.clone();
    if !h.query.is_empty() {
        let q: Vec<String> = h
            .query
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect();
        uri = format!("{uri}?{}", q.join("&"));
    }
    let mut b = axum::http::Request::builder()
        .method(h.method.as_str())
        .uri(uri)
        .header("Authorization", format!("Bearer {token}"))
        .header("Accept", "application/json");
    for (k, v) in &h.headers {
        b = b.header(k, v);
    }
    let body = match &h.body {
        Some(bytes) => {
            b = b.header("Content-Type", "application/json");
            Body::from(bytes.clone())
        }
        None => Body::empty(),
    };
    let req = b.body(body).map_err(|e| e.to_string())?;
    let resp = router
        .clone()
        .oneshot(req)
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 26)
        .await
        .map_err(|e| e.to_string())?;
    Ok(HttpResponse {
        status,
        headers,
        body: bytes.to_vec(),
    })
}

impl InProcessCrm {
    /// A CRM over `router`, authenticated with `token`.
    pub fn new(router: axum::Router, token: &str, control: Arc<CrmControl>) -> InProcessCrm {
        InProcessCrm {
            router,
            auth: token.to_owned(),
            calls: Arc::new(AtomicU64::new(0)),
            control,
        }
    }

    fn fate(&self, write: bool) -> Fate {
        let mut f = self
            .control
            .faults
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(left) = f.cut_after.as_mut() {
            if *left == 0 {
                f.cut_after = None;
                return Fate::Cut;
            }
            *left -= 1;
        }
        if write && f.drop_before_writes > 0 {
            f.drop_before_writes -= 1;
            return Fate::DropBefore;
        }
        if write && f.drop_after_writes > 0 {
            f.drop_after_writes -= 1;
            return Fate::DropAfter;
        }
        Fate::Answer
    }
}

impl Crm for InProcessCrm {
    async fn call(&self, req: &CrmRequest) -> Result<CrmResponse, CrmError> {
        let h = zendesk::request(req);
        let write = !matches!(h.method, Method::Get);
        let fate = self.fate(write);
        self.calls.fetch_add(1, Ordering::Relaxed);
        match fate {
            Fate::Cut => {
                // The process dies here: the answer never comes. The harness drops this future.
                self.control.cut.notify_one();
                std::future::pending::<()>().await;
                Err(CrmError::Transport("cut".into()))
            }
            Fate::DropBefore => Err(CrmError::Transport(
                "connection dropped before the request was sent".into(),
            )),
            Fate::DropAfter => {
                let _ = send(&self.router, &self.auth, &h).await;
                Err(CrmError::Transport(
                    "connection dropped before the answer arrived".into(),
                ))
            }
            Fate::Answer => {
                let resp = send(&self.router, &self.auth, &h)
                    .await
                    .map_err(CrmError::Transport)?;
                zendesk::response(req, &resp)
            }
        }
    }

    fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
}
