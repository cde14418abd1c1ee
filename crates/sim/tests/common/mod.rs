//! Starts a simulator on 127.0.0.1:0 and talks to it over real HTTP.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use reqwest::{Client, Method, Response};
use sellsync_sim::{Sim, SimConfig, SimData};
use serde_json::Value;
use tokio::sync::oneshot;

/// A running simulator; stops when dropped.
pub struct Running {
    pub base: String,
    pub sim: Sim,
    pub client: Client,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub const ADMIN: u64 = 2;

pub async fn start_with(data: SimData, config: SimConfig) -> Running {
    let sim = Sim::new(data, config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    let (tx, rx) = oneshot::channel::<()>();
    let served = sim.clone();
    tokio::spawn(async move {
        let _ = sellsync_sim::serve(listener, served, async {
            let _ = rx.await;
        })
        .await;
    });
    // reqwest is built without a default TLS provider; plain HTTP still needs one installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    Running {
        base: format!("http://{addr}"),
        sim,
        client,
        stop: Some(tx),
    }
}

pub async fn start() -> Running {
    start_with(sellsync_sim::demo_data(), SimConfig::default()).await
}

/// The token of a demo user by name.
pub fn token_of(r: &Running, name: &str) -> String {
    r.sim
        .tokens()
        .into_iter()
        .find(|t| t.name == name)
        .map(|t| t.token)
        .expect("demo user")
}

pub fn admin_token(_: &Running) -> String {
    sellsync_sim::token_for(ADMIN)
}

impl Running {
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> Response {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().await.expect("request")
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let res = self.call(Method::GET, path, &admin_token(self), None).await;
        split(res).await
    }

    pub async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        split(
            self.call(Method::PUT, path, &admin_token(self), Some(body))
                .await,
        )
        .await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        split(
            self.call(Method::POST, path, &admin_token(self), Some(body))
                .await,
        )
        .await
    }

    pub async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> u16 {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().await.expect("admin request").status().as_u16()
    }

    /// First deal id of the demo set owned by `owner`.
    pub async fn deal_owned_by(&self, owner: u64) -> u64 {
        let (_, body) = self
            .get(&format!("/v2/deals?owner_id={owner}&per_page=1"))
            .await;
        body["items"][0]["data"]["id"]
            .as_u64()
            .expect("a deal of that owner")
    }
}

pub async fn split(res: Response) -> (u16, Value) {
    let status = res.status().as_u16();
    let text = res.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Asserts the Zendesk error envelope and that `logref` equals `X-Request-Id`.
pub async fn expect_error(res: Response, status: u16, code: &str) -> Value {
    assert_eq!(res.status().as_u16(), status);
    let rid = res
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let ct = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert!(ct.contains("application/json"), "content-type {ct}");
    let body: sellsync_api::ErrorEnvelope = res.json().await.expect("error envelope");
    assert_eq!(Some(body.meta.logref.clone()), rid, "logref = X-Request-Id");
    assert!(body.meta.http_status.starts_with(&status.to_string()));
    assert!(
        code.is_empty() || body.errors.iter().any(|e| e.error.code == code),
        "{body:?} has {code}"
    );
    serde_json::to_value(body).unwrap_or(Value::Null)
}
