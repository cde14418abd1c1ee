//! The adapter boundary's I/O side: a [`Crm`] answers [`CrmRequest`]s. [`ZendeskHttp`] is the
//! Zendesk Sell v2 implementation (reqwest with rustls): it only moves the pure core's HTTP
//! descriptions ([`sellsync_bridge::zendesk`]) and paces requests under the token's budget.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sellsync_bridge::zendesk::{self, HttpResponse, Method};
use sellsync_bridge::{CrmError, CrmRequest, CrmResponse};
use tokio::sync::Mutex;
use tokio::time::Instant;

/// A CRM the bridge talks to. Implementations never panic on what the network sends: every
/// failure is a [`CrmError`], and [`CrmError::Transport`] means the outcome is unknown.
pub trait Crm: Send + Sync {
    /// Sends one request and reads its answer.
    fn call(
        &self,
        req: &CrmRequest,
    ) -> impl std::future::Future<Output = Result<CrmResponse, CrmError>> + Send;

    /// Requests sent so far (for status and benchmarks).
    fn calls(&self) -> u64;
}

/// Why a backend could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The base URL is not http(s)://host[:port][/path].
    #[error("bad CRM URL {url:?}: {reason}")]
    Url {
        /// The URL given.
        url: String,
        /// Why.
        reason: String,
    },
    /// The token is empty or holds characters a header cannot carry.
    #[error("bad CRM token: {0}")]
    Token(&'static str),
    /// The HTTP client could not be built.
    #[error("HTTP client: {0}")]
    Client(String),
}

/// Spaces requests so that at most `per_second` start in any second (the token's budget; Zendesk
/// allows 36,000 an hour, i.e. 10 a second). Shared by every task of one bridge.
#[derive(Debug)]
pub struct Pacer {
    interval: Option<Duration>,
    next: Mutex<Option<Instant>>,
}

impl Pacer {
    /// A pacer for `per_second` requests a second; 0 means no limit.
    pub fn new(per_second: f64) -> Pacer {
        let interval = (per_second.is_finite() && per_second > 0.0)
            .then(|| Duration::from_secs_f64(1.0 / per_second));
        Pacer {
            interval,
            next: Mutex::new(None),
        }
    }

    /// Waits for this request's turn.
    pub async fn wait(&self) {
        let Some(interval) = self.interval else {
            return;
        };
        let at = {
            let mut next = self.next.lock().await;
            let now = Instant::now();
            let at = next.map_or(now, |n| n.max(now));
            *next = Some(at + interval);
            at
        };
        tokio::time::sleep_until(at).await;
    }
}

/// Installs ring as the process's rustls crypto provider, which reqwest's rustls backend needs
/// before any client is built (sellsync builds it without a default provider). Installing
/// twice is harmless: the first one stays.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Zendesk Sell v2 over HTTPS (or HTTP for the simulator on loopback).
#[derive(Debug, Clone)]
pub struct ZendeskHttp {
    client: reqwest::Client,
    base: String,
    auth: String,
    pacer: Arc<Pacer>,
    calls: Arc<AtomicU64>,
}

/// Percent-encodes a query component (RFC 3986 unreserved characters stay; `:` and `,` too,
/// which Sell's `sort_by` and id lists use).
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

/// The base URL without a trailing slash, checked.
fn check_base(url: &str) -> Result<String, BackendError> {
    let bad = |reason: &str| BackendError::Url {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| bad("must start with https:// or http://"))?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(bad("no host"));
    }
    if url.contains(['?', '#', ' ']) {
        return Err(bad("no query, fragment or spaces allowed"));
    }
    let base = url.trim_end_matches('/');
    // The API lives under /v2; a base that already ends with it is accepted as well.
    Ok(base.strip_suffix("/v2").unwrap_or(base).to_owned())
}

impl ZendeskHttp {
    /// A client for the account at `base_url` (e.g. `https://api.getbase.com`), with `token`
    /// (an OAuth access token or personal access token), at most `per_second` requests a second
    /// (0: no limit), each with `timeout`.
    pub fn new(
        base_url: &str,
        token: &str,
        per_second: f64,
        timeout: Duration,
    ) -> Result<ZendeskHttp, BackendError> {
        let base = check_base(base_url)?;
        let token = token.trim();
        if token.is_empty() {
            return Err(BackendError::Token("empty"));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(BackendError::Token(
                "only visible ASCII characters are allowed",
            ));
        }
        install_crypto_provider();
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("sellsync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| BackendError::Client(e.to_string()))?;
        Ok(ZendeskHttp {
            client,
            base,
            auth: format!("Bearer {token}"),
            pacer: Arc::new(Pacer::new(per_second)),
            calls: Arc::new(AtomicU64::new(0)),
        })
    }

    async fn send(&self, req: &CrmRequest) -> Result<HttpResponse, CrmError> {
        let h = zendesk::request(req);
        let mut url = format!("{}{}", self.base, h.path);
        if !h.query.is_empty() {
            let q: Vec<String> = h
                .query
                .iter()
                .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
                .collect();
            url.push('?');
            url.push_str(&q.join("&"));
        }
        let method = match h.method {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
            Method::Put => reqwest::Method::PUT,
            Method::Delete => reqwest::Method::DELETE,
        };
        let mut b = self
            .client
            .request(method, &url)
            .header("Authorization", &self.auth)
            .header("Accept", "application/json");
        for (k, v) in &h.headers {
            b = b.header(k, v);
        }
        if let Some(body) = h.body {
            b = b.header("Content-Type", "application/json").body(body);
        }
        self.pacer.wait().await;
        self.calls.fetch_add(1, Ordering::Relaxed);
        let resp = b
            .send()
            .await
            .map_err(|e| CrmError::Transport(error_chain(&e)))?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect();
        let body = resp
            .bytes()
            .await
            .map_err(|e| CrmError::Transport(error_chain(&e)))?
            .to_vec();
        Ok(HttpResponse {
            status,
            headers,
            body,
        })
    }
}

/// An error and its causes on one line (reqwest's top-level message alone says little).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cur = c.source();
    }
    out
}

impl Crm for ZendeskHttp {
    async fn call(&self, req: &CrmRequest) -> Result<CrmResponse, CrmError> {
        let resp = self.send(req).await?;
        zendesk::response(req, &resp)
    }

    fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_checked() {
        assert_eq!(
            check_base("https://api.getbase.com/").unwrap(),
            "https://api.getbase.com"
        );
        assert_eq!(
            check_base("http://127.0.0.1:9000/v2").unwrap(),
            "http://127.0.0.1:9000"
        );
        for bad in ["api.getbase.com", "ftp://x", "https://", "https://x/?a=1"] {
            assert!(check_base(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tokens_are_checked() {
        let t = Duration::from_secs(1);
        assert!(matches!(
            ZendeskHttp::new("http://127.0.0.1:1", "  ", 0.0, t),
            Err(BackendError::Token(_))
        ));
        assert!(matches!(
            ZendeskHttp::new("http://127.0.0.1:1", "a\nb", 0.0, t),
            Err(BackendError::Token(_))
        ));
        assert!(ZendeskHttp::new("http://127.0.0.1:1", "abc", 0.0, t).is_ok());
    }

    #[test]
    fn query_components_are_encoded() {
        assert_eq!(encode("updated_at:desc"), "updated_at:desc");
        assert_eq!(encode("a b&c=d"), "a%20b%26c%3Dd");
        assert_eq!(encode("1,2"), "1,2");
        assert_eq!(encode("é"), "%C3%A9");
    }

    #[tokio::test(start_paused = true)]
    async fn the_pacer_spaces_requests() {
        let p = Pacer::new(10.0);
        let start = Instant::now();
        for _ in 0..5 {
            p.wait().await;
        }
        // Four intervals of 100 ms after the first request (virtual time).
        assert_eq!(start.elapsed(), Duration::from_millis(400));
        let unlimited = Pacer::new(0.0);
        let start = Instant::now();
        unlimited.wait().await;
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
