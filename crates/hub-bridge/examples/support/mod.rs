//! What the bridge examples share: a simulator on loopback, a hub node on a temporary store, a
//! bridge between them, and a plain HTTP client that acts as Zendesk's web app.
//!
//! Each example uses a part of it.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use sellsync_bridge::run::Limits;
use sellsync_hub_bridge::{Bridge, BridgeConfig, Crm, ZendeskHttp};
use sellsync_model::{Edit, FieldKey, RecordId, UserId};
use sellsync_service::Node;
use sellsync_service::net::SharedNode;
use sellsync_sim::{Sim, SimConfig, token_for};
use sellsync_store::{NodeIdentity, Role, Store};
use serde_json::{Value as Json, json};

/// The admin user of the demo account; the bridge's token is theirs.
pub(crate) const ADMIN: u64 = 2;

/// A simulator, a hub node and a bridge over loopback HTTP.
pub(crate) struct World<C> {
    pub(crate) sim: Sim,
    pub(crate) url: String,
    pub(crate) node: SharedNode,
    pub(crate) bridge: Bridge<C>,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Starts a simulator serving `sim` on 127.0.0.1 (an ephemeral port).
pub(crate) async fn serve(sim: &Sim) -> anyhow::Result<(String, tokio::sync::oneshot::Sender<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(sellsync_sim::serve(listener, sim.clone(), async move {
        let _ = stopped.await;
    }));
    Ok((url, stop))
}

/// A hub node on a fresh store in `dir`.
pub(crate) fn hub_node(dir: &std::path::Path) -> anyhow::Result<SharedNode> {
    let store = Arc::new(Store::open(dir.join("hub.redb"))?);
    Node::init(
        &store,
        &NodeIdentity {
            device_id: "hub".parse()?,
            user_id: UserId(0),
            role: Role::Hub,
            hub_url: None,
            hub_token: None,
        },
    )?;
    Ok(Arc::new(Mutex::new(Node::open(
        store,
        Some(sellsync_service::Acl::default()),
    )?)))
}

/// The bridge's configuration in these examples: the default limits (Zendesk-like backoff).
pub(crate) fn config(url: &str) -> BridgeConfig {
    BridgeConfig {
        crm_url: url.to_owned(),
        limits: Limits::default(),
        ..BridgeConfig::default()
    }
}

/// A world whose bridge paces itself at `per_second` (0: unpaced) over the simulator `sim`.
pub(crate) async fn world(sim: Sim, per_second: f64) -> anyhow::Result<World<ZendeskHttp>> {
    let (url, stop) = serve(&sim).await?;
    let dir = tempfile::tempdir()?;
    let node = hub_node(dir.path())?;
    let crm = ZendeskHttp::new(&url, &token_for(ADMIN), per_second, Duration::from_secs(30))?;
    let bridge = Bridge::new(crm, node.clone(), config(&url));
    Ok(World::assemble(sim, url, node, bridge, dir, stop))
}

impl<C: Crm> World<C> {
    /// Puts the parts together (for a bridge over another [`Crm`]).
    pub(crate) fn assemble(
        sim: Sim,
        url: String,
        node: SharedNode,
        bridge: Bridge<C>,
        dir: tempfile::TempDir,
        stop: tokio::sync::oneshot::Sender<()>,
    ) -> World<C> {
        install_crypto();
        World {
            sim,
            url,
            node,
            bridge,
            http: reqwest::Client::new(),
            _dir: dir,
            _stop: stop,
        }
    }

    /// Runs `f` on the hub node.
    pub(crate) fn on_node<R>(&self, f: impl FnOnce(&mut Node) -> R) -> anyhow::Result<R> {
        let mut n = self
            .node
            .lock()
            .map_err(|_| anyhow::anyhow!("the hub node's lock is poisoned"))?;
        Ok(f(&mut n))
    }

    /// A rep's edit reaching the hub.
    pub(crate) fn edit(&self, id: &RecordId, edits: &[Edit]) -> anyhow::Result<()> {
        self.on_node(|n| n.apply(id, "a rep's edit", edits, now()))?
            .with_context(|| format!("edit {id}"))
    }
}

/// Zendesk's web app as `user`: plain HTTP requests to the simulator.
#[derive(Debug, Clone)]
pub(crate) struct WebApp {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl WebApp {
    /// The web app of `user` against the simulator at `url`.
    pub(crate) fn new(url: &str, user: u64) -> WebApp {
        install_crypto();
        WebApp {
            http: reqwest::Client::new(),
            url: url.to_owned(),
            token: token_for(user),
        }
    }

    /// One request; a non-2xx answer is an error.
    pub(crate) async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Json>,
    ) -> anyhow::Result<Json> {
        let mut b = self
            .http
            .request(method.clone(), format!("{}{path}", self.url))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            b = b.json(&json!({ "data": body }));
        }
        let resp = b.send().await?;
        let status = resp.status();
        let text = resp.text().await?;
        if !status.is_success() {
            bail!("{method} {path}: {status}: {text}");
        }
        if text.is_empty() {
            return Ok(Json::Null);
        }
        Ok(serde_json::from_str(&text)?)
    }

    /// A deal as Zendesk holds it.
    pub(crate) async fn deal(&self, crm_id: u64) -> anyhow::Result<Json> {
        Ok(self
            .api(reqwest::Method::GET, &format!("/v2/deals/{crm_id}"), None)
            .await?["data"]
            .clone())
    }

    /// Changes only the given attributes of a deal (what the web app sends on a save).
    pub(crate) async fn update_deal(&self, crm_id: u64, body: Json) -> anyhow::Result<Json> {
        Ok(self
            .api(
                reqwest::Method::PUT,
                &format!("/v2/deals/{crm_id}"),
                Some(body),
            )
            .await?["data"]
            .clone())
    }

    /// Creates a deal; its CRM id.
    pub(crate) async fn create_deal(&self, body: Json) -> anyhow::Result<u64> {
        let made = self
            .api(reqwest::Method::POST, "/v2/deals", Some(body))
            .await?;
        made["data"]["id"]
            .as_u64()
            .context("the created deal has no id")
    }
}

impl<C> World<C> {
    /// The web app of the bridge's own user (the admin).
    pub(crate) fn web(&self) -> WebApp {
        WebApp {
            http: self.http.clone(),
            url: self.url.clone(),
            token: token_for(ADMIN),
        }
    }
}

/// reqwest's rustls backend needs a crypto provider before any client is built.
pub(crate) fn install_crypto() {
    sellsync_hub_bridge::backend::install_crypto_provider();
}

/// Now, in ms since the epoch.
pub(crate) fn now() -> i64 {
    sellsync_service::net::now_ms()
}

/// A standard field's key.
pub(crate) fn key(s: &str) -> FieldKey {
    FieldKey::std(s)
}

/// The local id of a deal first seen in Zendesk.
pub(crate) fn deal_id(crm_id: u64) -> anyhow::Result<RecordId> {
    Ok(format!("zd-{crm_id}").parse()?)
}

/// A simulator on the demo account, rate-limited like Zendesk (36,000 requests an hour per
/// token) unless `rate_limit_per_hour` says otherwise.
pub(crate) fn sim(rate_limit_per_hour: u64) -> Sim {
    Sim::new(
        sellsync_sim::demo_data(),
        SimConfig {
            rate_limit_per_hour,
            ..SimConfig::default()
        },
    )
}
