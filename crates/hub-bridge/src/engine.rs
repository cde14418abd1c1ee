//! The bridge's loop on the hub: import, pull, push. Every decision comes from the pure core
//! (`sellsync-bridge`); this module sends the requests and makes the core's writes durable.
//!
//! Invariants:
//! - A record's document, its shadow, the CRM id index and the push checkpoint that an answer
//!   moves change in one store transaction (see [`crate::records`]).
//! - The push checkpoint is durable before each request goes out, so that after a crash a
//!   create that may have been applied is looked up before it is sent again.
//! - A Sync API item is acknowledged only after the transaction that applied it committed;
//!   items that could not be applied (yet) are not acknowledged and come again.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use sellsync_bridge::mapping::{self, CatalogPages};
use sellsync_bridge::pull::{self, bridge_device};
use sellsync_bridge::push::{self, OpKind, PushInput, Target};
use sellsync_bridge::run::{Event, Limits, PushRun};
use sellsync_bridge::sync::{SyncEvent, SyncRun};
use sellsync_bridge::{CrmError, CrmRequest, CrmResponse, Resource};
use sellsync_model::{
    ActivityKind, AssumeLive, Author, EditCtx, FlagKind, ProjectCtx, RecordDoc, RecordId,
    RecordKind, UserId,
};
use sellsync_service::net::{SharedNode, now_ms};
use sellsync_service::{Node, root_kind};
use sellsync_store::{CrmId, DocBatch, StoreError, StoreRead};
use serde_json::Value as Json;

use crate::BridgeError;
use crate::backend::Crm;
use crate::records::{self, Applied, Basis, shadow_of, with_record};
use crate::status::{self, BridgeStatus, ReachChange, RunSummary, STATUS_KEY};

const RUN_KEY: &str = "bridge/push_run";
const PENDING_KEY: &str = "bridge/pending";
const PUSH_SEQ_KEY: &str = "bridge/push_seq";
const SYNC_DEVICE_KEY: &str = "bridge/sync_device";
const PULL_MODE_KEY: &str = "bridge/pull_mode";
const IMPORTED_KEY: &str = "bridge/imported_at";
/// When the catalog was last read (ms).
const CATALOG_AT_KEY: &str = "bridge/catalog_at";
/// When polling last swept for deletes (ms).
const SWEPT_AT_KEY: &str = "bridge/poll/swept_at";
/// Most pages read of one resource in one step (100 per page: a million objects).
const MAX_PAGES: u32 = 10_000;
/// Most requests of one Sync API pull.
const MAX_SYNC_STEPS: u32 = 100_000;
/// Push rounds in one step (a record that moved in the CRM is pulled, then planned again).
const PUSH_ROUNDS: usize = 3;

/// How a bridge runs.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// The CRM's base URL (shown in the status).
    pub crm_url: String,
    /// Retry limits and the request budget of one push.
    pub limits: Limits,
    /// Items per list page (1 to 100).
    pub page_size: u32,
    /// Where to keep a copy of the status (readable while the hub runs).
    pub status_file: Option<PathBuf>,
    /// How often the catalog (stages, users, loss reasons, sources, custom fields) is read
    /// again; it is also read at once when the CRM refuses a value naming a catalog entry.
    pub catalog_every: Duration,
    /// Polling only (the Sync API reports deletes): how often the ids of every resource are
    /// listed to find objects deleted in the CRM.
    pub delete_sweep_every: Duration,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        BridgeConfig {
            crm_url: String::new(),
            limits: Limits::default(),
            page_size: 100,
            status_file: None,
            catalog_every: Duration::from_secs(600),
            delete_sweep_every: Duration::from_secs(900),
        }
    }
}

/// Progress of an import, for a progress bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Reading the catalog.
    Catalog,
    /// Objects of one kind read so far.
    Objects {
        /// `contacts`, `deals`, `notes`, `tasks` or `calls`.
        what: &'static str,
        /// How many so far.
        done: u64,
    },
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Contacts and deals written.
    pub records: u64,
    /// Notes, tasks and calls written.
    pub activities: u64,
    /// Objects left out, with the reason.
    pub skipped: Vec<String>,
    /// Requests sent.
    pub requests: u64,
}

/// What a pull did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullReport {
    /// Records whose documents the CRM's changes were written into.
    pub changed: Vec<RecordId>,
    /// Objects applied.
    pub applied: u64,
    /// Objects that could not be applied yet (not acknowledged; they come again).
    pub deferred: Vec<String>,
    /// Whether the Sync API was used (else polling).
    pub sync_api: bool,
}

/// What a push did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PushReport {
    /// Operations that took effect in the CRM.
    pub pushed: Vec<push::PlannedOp>,
    /// Operations refused (422 / 403), flagged in their documents.
    pub refused: Vec<(push::PlannedOp, CrmError)>,
    /// Records found deleted in the CRM (a record conflict in their documents).
    pub gone: Vec<RecordId>,
    /// Records that had moved in the CRM: pulled, then planned again.
    pub moved: Vec<RecordId>,
    /// Operations given up for this step (kept for the next).
    pub gave_up: Vec<(push::PlannedOp, CrmError)>,
    /// Records waiting (a parent without a CRM id yet).
    pub waiting: Vec<(RecordId, String)>,
    /// Requests sent.
    pub requests: u64,
}

/// The bridge on a hub node.
#[derive(Debug)]
pub struct Bridge<C> {
    crm: C,
    node: SharedNode,
    config: BridgeConfig,
    user: Mutex<Option<UserId>>,
    status: Mutex<BridgeStatus>,
    /// Set when the CRM refused a value that names a catalog entry: read the catalog next.
    catalog_stale: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock leaves plain data that every use still checks.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn jitter() -> f64 {
    rand::random::<f64>()
}

fn kind_of_resource(r: Resource) -> Option<Result<RecordKind, ActivityKind>> {
    match r {
        Resource::Deal => Some(Ok(RecordKind::Deal)),
        Resource::Contact => Some(Ok(RecordKind::Contact)),
        Resource::Note => Some(Err(ActivityKind::Note)),
        Resource::Task => Some(Err(ActivityKind::Task)),
        Resource::Call => Some(Err(ActivityKind::Call)),
        _ => None,
    }
}

/// One object to apply: its kind (if known), whether the CRM deleted it, the object.
#[derive(Debug, Clone)]
struct Incoming {
    resource: Option<Resource>,
    deleted: bool,
    data: Json,
}

/// How applying one object ended.
#[derive(Debug)]
enum ItemOutcome {
    /// Applied to this record's document; `true` when that wrote something.
    Applied(RecordId, bool),
    /// Not kept by design (acknowledge).
    Ignored(String),
    /// Not applied; it must come again (do not acknowledge).
    Deferred(String),
}

fn apply_one(b: &mut DocBatch<'_, '_>, basis: &Basis, item: &Incoming, now: i64) -> ItemOutcome {
    let Some(kind) = item.resource.and_then(kind_of_resource) else {
        return ItemOutcome::Ignored(format!("{:?} is not kept", item.resource));
    };
    let crm_id = item.data.get("id").and_then(Json::as_u64);
    let before = b.store().feed_head().ok();
    let r = match (kind, item.deleted, crm_id) {
        (_, true, None) => return ItemOutcome::Deferred("a delete without an id".into()),
        (Ok(k), true, Some(id)) => records::apply_record_delete(b, basis, k, id, now),
        (Ok(k), false, _) => records::apply_record(b, basis, k, &item.data, now),
        (Err(k), true, Some(id)) => records::apply_activity_delete(b, basis, k, id, now),
        (Err(k), false, _) => records::apply_activity(b, basis, k, &item.data, now),
    };
    let what = format!(
        "{}{}",
        item.resource.map_or("object".into(), |r| format!("{r:?}")),
        crm_id.map(|i| format!(" {i}")).unwrap_or_default()
    );
    match r {
        Ok(Applied::Record(id)) => {
            let wrote = before.is_none() || b.store().feed_head().ok() != before;
            ItemOutcome::Applied(id, wrote)
        }
        Ok(Applied::Later(why)) => ItemOutcome::Deferred(format!("{what}: {why}")),
        Ok(Applied::Skipped(why)) => ItemOutcome::Ignored(format!("{what}: {why}")),
        Err(e) => ItemOutcome::Deferred(format!("{what}: {e}")),
    }
}

fn read_json<T: serde::de::DeserializeOwned>(
    r: &impl StoreRead,
    key: &str,
) -> Result<Option<T>, BridgeError> {
    match r.kv_get(key)? {
        None => Ok(None),
        Some(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| BridgeError::Corrupt(format!("{key}: {e}"))),
    }
}

fn json_bytes(v: &impl serde::Serialize) -> Vec<u8> {
    // Serialising plain data cannot fail.
    serde_json::to_vec(v).expect("serialises")
}

impl<C: Crm> Bridge<C> {
    /// A bridge writing into `node` (the hub) and talking to `crm`.
    /// The status history kept in the store (the last import, pull and push, errors, when the
    /// CRM was last reached) carries on: a restarted hub or a `bridge sync` adds to it.
    pub fn new(crm: C, node: SharedNode, config: BridgeConfig) -> Bridge<C> {
        let stored = lock(&node)
            .store()
            .read()
            .map_err(BridgeError::from)
            .and_then(|r| read_json::<BridgeStatus>(&r, STATUS_KEY));
        let mut status = match stored {
            Ok(s) => s.unwrap_or_default(),
            Err(e) => {
                tracing::warn!("the stored bridge status does not read ({e}); starting afresh");
                BridgeStatus::default()
            }
        };
        status.crm_url.clone_from(&config.crm_url);
        Bridge {
            crm,
            node,
            config,
            user: Mutex::new(None),
            status: Mutex::new(status),
            catalog_stale: AtomicBool::new(false),
        }
    }

    /// The CRM backend.
    pub fn crm(&self) -> &C {
        &self.crm
    }

    /// The current status.
    pub fn status(&self) -> BridgeStatus {
        let mut s = lock(&self.status).clone();
        s.requests = self.crm.calls();
        s
    }

    async fn on_node<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Node) -> R + Send + 'static,
    ) -> Result<R, BridgeError> {
        let node = self.node.clone();
        tokio::task::spawn_blocking(move || {
            let mut n = lock(&node);
            f(&mut n)
        })
        .await
        .map_err(|e| BridgeError::Runtime(e.to_string()))
    }

    /// Sends one request, and keeps in the status whether the CRM answered. An outage (a
    /// dropped connection, a timeout, a 5xx) is logged at warn when it begins and when it ends;
    /// during one, the status is saved at every failure, so that `bridge status` shows it.
    async fn call(&self, req: &CrmRequest) -> Result<CrmResponse, CrmError> {
        let res = self.crm.call(req).await;
        let now = now_ms();
        let change = {
            let mut st = lock(&self.status);
            match &res {
                Err(e @ (CrmError::Transport(_) | CrmError::Server { .. })) => {
                    st.crm_reach.failed(now, e.to_string())
                }
                _ => st.crm_reach.answered(now),
            }
        };
        match change {
            ReachChange::Same => {}
            ReachChange::Lost => {
                if let Err(e) = &res {
                    tracing::warn!("{} unreachable: {e}; retrying", self.crm_name());
                }
                self.save_status().await;
                self.publish_reach().await;
            }
            ReachChange::StillLost => self.save_status().await,
            ReachChange::Back(retries) => {
                tracing::warn!(
                    "{} reachable again after {retries} retr{}",
                    self.crm_name(),
                    if retries == 1 { "y" } else { "ies" }
                );
                self.save_status().await;
                self.publish_reach().await;
            }
        }
        res
    }

    fn crm_name(&self) -> String {
        if self.config.crm_url.is_empty() {
            "the CRM".to_owned()
        } else {
            format!("the CRM at {}", self.config.crm_url)
        }
    }

    /// Sends an idempotent request (a read), retrying rate limits, server errors and dropped
    /// connections with backoff.
    async fn call_retrying(&self, req: &CrmRequest) -> Result<CrmResponse, CrmError> {
        let l = self.config.limits;
        let mut attempt = 0;
        loop {
            match self.call(req).await {
                Err(e)
                    if (e.is_transient() || matches!(e, CrmError::Transport(_)))
                        && attempt < l.max_attempts =>
                {
                    let ms = push::backoff_ms(attempt, l.base_ms, l.cap_ms, jitter());
                    attempt += 1;
                    tracing::debug!("{e}; retrying in {ms} ms");
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                other => return other,
            }
        }
    }

    /// The CRM user the token acts as (asked once).
    pub async fn crm_user(&self) -> Result<UserId, BridgeError> {
        if let Some(u) = *lock(&self.user) {
            return Ok(u);
        }
        let data = match self.call_retrying(&CrmRequest::CurrentUser).await? {
            CrmResponse::One(d) => d,
            other => {
                return Err(CrmError::Malformed(format!("users/self answered {other:?}")).into());
            }
        };
        let id = data
            .get("id")
            .and_then(Json::as_u64)
            .ok_or_else(|| CrmError::Malformed("users/self without an id".into()))?;
        *lock(&self.user) = Some(UserId(id));
        lock(&self.status).crm_user = Some(id);
        Ok(UserId(id))
    }

    async fn list_page(
        &self,
        resource: Resource,
        page: u32,
        sort_by: &str,
    ) -> Result<(Vec<Json>, bool), BridgeError> {
        let req = CrmRequest::List {
            resource,
            page,
            per_page: self.config.page_size.clamp(1, 100),
            filters: Vec::new(),
            sort_by: Some(sort_by.to_owned()),
        };
        match self.call_retrying(&req).await? {
            CrmResponse::Page { items, more } => Ok((items, more)),
            other => Err(CrmError::Malformed(format!("a list answered {other:?}")).into()),
        }
    }

    async fn list_typed<T: serde::de::DeserializeOwned>(
        &self,
        resource: Resource,
    ) -> Result<Vec<T>, BridgeError> {
        let mut out = Vec::new();
        for page in 1..=MAX_PAGES {
            let (items, more) = self.list_page(resource, page, "id").await?;
            for i in items {
                out.push(serde_json::from_value(i).map_err(|e| {
                    CrmError::Malformed(format!("{resource:?} does not read: {e}"))
                })?);
            }
            if !more {
                break;
            }
        }
        Ok(out)
    }

    /// Applies objects in one transaction (records before activities, so that a note finds a
    /// deal of the same page) and refreshes the hub's views of what changed.
    async fn apply_items(
        &self,
        items: Vec<Incoming>,
    ) -> Result<Vec<(usize, ItemOutcome)>, BridgeError> {
        self.crm_user().await?;
        self.on_node(move |n| {
            let basis = Basis::of(n);
            let now = now_ms();
            let mut order: Vec<usize> = (0..items.len()).collect();
            order.sort_by_key(|&i| {
                items[i]
                    .resource
                    .map_or(3, |r| if r.push_rank() < 2 { 0 } else { 1 })
            });
            let outcomes = n.replica().docs().batch(|b| {
                Ok(order
                    .iter()
                    .map(|&i| (i, apply_one(b, &basis, &items[i], now)))
                    .collect::<Vec<_>>())
            })?;
            let changed: Vec<RecordId> = outcomes
                .iter()
                .filter_map(|(_, o)| match o {
                    ItemOutcome::Applied(id, true) => Some(id.clone()),
                    _ => None,
                })
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            n.refresh(&changed, now)?;
            Ok::<_, BridgeError>(outcomes)
        })
        .await?
    }

    async fn kv_get(&self, key: &'static str) -> Result<Option<Vec<u8>>, BridgeError> {
        self.on_node(move |n| n.store().read()?.kv_get(key).map_err(BridgeError::from))
            .await?
    }

    async fn kv_put(&self, key: &'static str, value: Vec<u8>) -> Result<(), BridgeError> {
        self.on_node(move |n| {
            n.store()
                .write(|w| w.kv_put(key, &value))
                .map_err(BridgeError::from)
        })
        .await?
    }

    /// Whether an import has completed on this store.
    pub async fn imported(&self) -> Result<bool, BridgeError> {
        Ok(self.kv_get(IMPORTED_KEY).await?.is_some())
    }

    /// Imports the catalog and every deal, contact, note, task and call, page by page.
    /// Idempotent: objects already held are updated on their shadow basis.
    pub async fn import(
        &self,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<ImportReport, BridgeError> {
        let started = now_ms();
        let calls = self.crm.calls();
        let result = self.import_inner(progress).await;
        let mut summary = RunSummary {
            started_ms: started,
            ended_ms: now_ms(),
            requests: self.crm.calls() - calls,
            ..RunSummary::default()
        };
        match &result {
            Ok(r) => {
                summary.done = r.records + r.activities;
                summary.waiting = r.skipped.len() as u64;
                summary.result = "ok".into();
                self.kv_put(IMPORTED_KEY, json_bytes(&summary.ended_ms))
                    .await?;
            }
            Err(e) => {
                summary.result = e.to_string();
                lock(&self.status).error(now_ms(), "import", None, e.to_string());
            }
        }
        lock(&self.status).last_import = Some(summary);
        self.save_status().await;
        result.map(|mut r| {
            r.requests = self.crm.calls() - calls;
            r
        })
    }

    async fn import_inner(
        &self,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<ImportReport, BridgeError> {
        self.crm_user().await?;
        progress(Progress::Catalog);
        self.pull_catalog().await?;
        let mut report = ImportReport::default();
        for (resource, what) in [
            (Resource::Contact, "contacts"),
            (Resource::Deal, "deals"),
            (Resource::Note, "notes"),
            (Resource::Task, "tasks"),
            (Resource::Call, "calls"),
        ] {
            let mut done = 0u64;
            for page in 1..=MAX_PAGES {
                let (items, more) = self.list_page(resource, page, "id").await?;
                done += items.len() as u64;
                let incoming = items
                    .into_iter()
                    .map(|data| Incoming {
                        resource: Some(resource),
                        deleted: false,
                        data,
                    })
                    .collect();
                for (_, o) in self.apply_items(incoming).await? {
                    match o {
                        ItemOutcome::Applied(..) if resource.push_rank() < 2 => {
                            report.records += 1;
                        }
                        ItemOutcome::Applied(..) => report.activities += 1,
                        ItemOutcome::Ignored(why) | ItemOutcome::Deferred(why) => {
                            report.skipped.push(why);
                        }
                    }
                }
                progress(Progress::Objects { what, done });
                if !more {
                    break;
                }
            }
        }
        Ok(report)
    }

    /// Reads the whole catalog (seven lists) and writes what changed into the catalog document,
    /// which devices receive; when anything changed, every record is validated again on the hub
    /// and, once they receive it, on the devices. Returns whether the catalog changed.
    pub async fn pull_catalog(&self) -> Result<bool, BridgeError> {
        let pages = CatalogPages {
            pipelines: self.list_typed(Resource::Pipeline).await?,
            stages: self.list_typed(Resource::Stage).await?,
            users: self.list_typed(Resource::User).await?,
            loss_reasons: self.list_typed(Resource::LossReason).await?,
            sources: self.list_typed(Resource::DealSource).await?,
            deal_fields: self.list_typed(Resource::DealCustomFields).await?,
            contact_fields: self.list_typed(Resource::ContactCustomFields).await?,
        };
        let catalog = mapping::catalog_of(&pages);
        let changed = self
            .on_node(move |n| {
                let now = now_ms();
                let changed = *n.replica_ref().catalog() != catalog;
                n.write_catalog(&catalog, now)?;
                n.store()
                    .write(|w| w.kv_put(CATALOG_AT_KEY, &json_bytes(&now)))?;
                if changed {
                    // Values pulls had to refuse under the old catalog may be accepted now.
                    let basis = Basis::of(n);
                    let ids: Vec<RecordId> = n.records()?.into_iter().map(|(id, _)| id).collect();
                    let written = n
                        .replica()
                        .docs()
                        .batch(|b| records::retry_refused(b, &basis, &ids, now))?;
                    n.refresh(&written, now)?;
                }
                Ok::<_, BridgeError>(changed)
            })
            .await??;
        self.catalog_stale.store(false, Ordering::Relaxed);
        if changed {
            tracing::info!("the CRM's catalog changed; devices receive it with their next sync");
        }
        Ok(changed)
    }

    /// Whether the catalog is due to be read again: [`BridgeConfig::catalog_every`] after the
    /// last read, or at once after the CRM refused a value that names a catalog entry.
    async fn catalog_due(&self) -> Result<bool, BridgeError> {
        if self.catalog_stale.load(Ordering::Relaxed) {
            return Ok(true);
        }
        let last: Option<i64> = self
            .on_node(|n| read_json(&n.store().read()?, CATALOG_AT_KEY))
            .await??;
        let every = i64::try_from(self.config.catalog_every.as_millis()).unwrap_or(i64::MAX);
        Ok(last.is_none_or(|at| now_ms().saturating_sub(at) >= every))
    }

    async fn sync_device(&self) -> Result<String, BridgeError> {
        if let Some(b) = self.kv_get(SYNC_DEVICE_KEY).await? {
            return Ok(String::from_utf8_lossy(&b).into_owned());
        }
        let id = uuid::Uuid::new_v4().to_string();
        self.kv_put(SYNC_DEVICE_KEY, id.clone().into_bytes())
            .await?;
        Ok(id)
    }

    /// Brings the CRM's changes into the documents: through the Sync API, or by polling
    /// `sort_by=updated_at:desc` when the token has no sync scope.
    pub async fn pull(&self) -> Result<PullReport, BridgeError> {
        let started = now_ms();
        let calls = self.crm.calls();
        let polling = self.kv_get(PULL_MODE_KEY).await?.as_deref() == Some(b"poll");
        let result = if polling {
            self.poll().await
        } else {
            self.pull_sync().await
        };
        let mut summary = RunSummary {
            started_ms: started,
            ended_ms: now_ms(),
            requests: self.crm.calls() - calls,
            ..RunSummary::default()
        };
        {
            let mut st = lock(&self.status);
            match &result {
                Ok(r) => {
                    summary.done = r.applied;
                    summary.waiting = r.deferred.len() as u64;
                    summary.result = "ok".into();
                    st.pull_mode = if r.sync_api { "sync" } else { "poll" }.into();
                    for d in &r.deferred {
                        st.error(now_ms(), "pull", None, d.clone());
                    }
                }
                Err(e) => {
                    summary.result = e.to_string();
                    st.error(now_ms(), "pull", None, e.to_string());
                }
            }
            st.last_pull = Some(summary);
        }
        self.save_status().await;
        self.publish_reach().await;
        result
    }

    async fn pull_sync(&self) -> Result<PullReport, BridgeError> {
        let device = self.sync_device().await?;
        let mut run = SyncRun::with_limits(&device, self.config.limits);
        let mut report = PullReport {
            sync_api: true,
            ..PullReport::default()
        };
        let mut first = true;
        for _ in 0..MAX_SYNC_STEPS {
            let Some(req) = run.next_request() else { break };
            let res = self.call(&req).await;
            match run.on_result(res, jitter()) {
                SyncEvent::Items(items) => {
                    let incoming: Vec<Incoming> = items
                        .iter()
                        .map(|i| Incoming {
                            resource: i.resource,
                            deleted: i.deleted,
                            data: i.data.clone(),
                        })
                        .collect();
                    let mut keys = Vec::new();
                    if !incoming.is_empty() {
                        for (i, o) in self.apply_items(incoming).await? {
                            match o {
                                ItemOutcome::Applied(id, wrote) => {
                                    report.applied += 1;
                                    if wrote && !report.changed.contains(&id) {
                                        report.changed.push(id);
                                    }
                                    keys.push(items[i].ack_key.clone());
                                }
                                ItemOutcome::Ignored(_) => keys.push(items[i].ack_key.clone()),
                                ItemOutcome::Deferred(why) => report.deferred.push(why),
                            }
                        }
                    }
                    // The transaction that applied them has committed: acknowledge.
                    run.durable(keys);
                }
                SyncEvent::Backoff(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
                SyncEvent::Done => break,
                SyncEvent::Failed(CrmError::Forbidden(why) | CrmError::NotFound(why)) if first => {
                    tracing::info!("the Sync API is not available ({why}); polling instead");
                    self.kv_put(PULL_MODE_KEY, b"poll".to_vec()).await?;
                    return self.poll().await;
                }
                SyncEvent::Failed(e) => return Err(e.into()),
            }
            first = false;
        }
        // The Sync API reports the delete of an object only to a device that acknowledged it
        // once: what was imported by listing, or created by this bridge, and deleted before a
        // drain delivered it to this device is never reported. So a Sync API bridge sweeps the
        // ids too: after its first drain, then on the same timer as a polling one
        // ([`BridgeConfig::delete_sweep_every`]).
        self.sweep_deletes(&mut report).await?;
        Ok(report)
    }

    /// Polling: each resource newest first until the last seen `updated_at`. Deletes are not
    /// visible this way (the Sync API reports them).
    async fn poll(&self) -> Result<PullReport, BridgeError> {
        let mut report = PullReport::default();
        for resource in [
            Resource::Contact,
            Resource::Deal,
            Resource::Note,
            Resource::Task,
            Resource::Call,
        ] {
            let key: &'static str = match resource {
                Resource::Contact => "bridge/poll/contact",
                Resource::Deal => "bridge/poll/deal",
                Resource::Note => "bridge/poll/note",
                Resource::Task => "bridge/poll/task",
                _ => "bridge/poll/call",
            };
            let mark = self
                .kv_get(key)
                .await?
                .map(|b| String::from_utf8_lossy(&b).into_owned());
            let mut newest = mark.clone();
            let mut clean = true;
            for page in 1..=MAX_PAGES {
                let (items, more) = self.list_page(resource, page, "updated_at:desc").await?;
                let mut batch = Vec::new();
                let mut reached = false;
                for data in items {
                    let at = data
                        .get("updated_at")
                        .and_then(Json::as_str)
                        .map(str::to_owned);
                    // Same format (RFC 3339, UTC) throughout: text order is time order.
                    if let (Some(m), Some(a)) = (&mark, &at)
                        && a < m
                    {
                        reached = true;
                        break;
                    }
                    if at > newest {
                        newest = at;
                    }
                    batch.push(Incoming {
                        resource: Some(resource),
                        deleted: false,
                        data,
                    });
                }
                for (_, o) in self.apply_items(batch).await? {
                    match o {
                        ItemOutcome::Applied(id, wrote) => {
                            report.applied += 1;
                            if wrote && !report.changed.contains(&id) {
                                report.changed.push(id);
                            }
                        }
                        ItemOutcome::Ignored(_) => {}
                        ItemOutcome::Deferred(why) => {
                            clean = false;
                            report.deferred.push(why);
                        }
                    }
                }
                if reached || !more {
                    break;
                }
            }
            // The mark moves only when everything up to it was applied.
            if clean && let Some(n) = newest {
                self.kv_put(key, n.into_bytes()).await?;
            }
        }
        self.sweep_deletes(&mut report).await?;
        Ok(report)
    }

    /// Polling sees no deletes (and the Sync API misses some, see `pull_sync`), so every
    /// [`BridgeConfig::delete_sweep_every`] the ids of each resource are listed (100 per request) and compared with those the hub holds; an id no
    /// longer listed whose read answers 404 is written as a CRM delete (on its shadow basis: a
    /// record conflict where devices edited it). The sweep time moves only when every resource
    /// was swept.
    async fn sweep_deletes(&self, report: &mut PullReport) -> Result<(), BridgeError> {
        let last: Option<i64> = self
            .on_node(|n| read_json(&n.store().read()?, SWEPT_AT_KEY))
            .await??;
        let every = i64::try_from(self.config.delete_sweep_every.as_millis()).unwrap_or(i64::MAX);
        if last.is_some_and(|at| now_ms().saturating_sub(at) < every) {
            return Ok(());
        }
        let started = now_ms();
        for resource in [
            Resource::Note,
            Resource::Task,
            Resource::Call,
            Resource::Deal,
            Resource::Contact,
        ] {
            let known = self.on_node(move |n| known_crm_ids(n, resource)).await??;
            if known.is_empty() {
                continue;
            }
            let mut listed = BTreeSet::new();
            for page in 1..=MAX_PAGES {
                let (items, more) = self.list_page(resource, page, "id").await?;
                listed.extend(
                    items
                        .iter()
                        .filter_map(|d| d.get("id").and_then(Json::as_u64)),
                );
                if !more {
                    break;
                }
            }
            let mut deletes = Vec::new();
            for id in pull::unlisted(&known, &listed) {
                match self.call_retrying(&CrmRequest::Get { resource, id }).await {
                    Err(CrmError::NotFound(_)) => deletes.push(Incoming {
                        resource: Some(resource),
                        deleted: true,
                        data: serde_json::json!({ "id": id }),
                    }),
                    // Still there (the list skipped it), or not readable now: not a delete.
                    Ok(_) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            if deletes.is_empty() {
                continue;
            }
            tracing::info!("{} {resource:?}(s) deleted in the CRM", deletes.len());
            for (i, o) in self.apply_items(deletes.clone()).await? {
                match o {
                    ItemOutcome::Applied(id, wrote) => {
                        if let Some(Ok(kind)) = kind_of_resource(resource)
                            && let Some(crm_id) = deletes[i].data.get("id").and_then(Json::as_u64)
                        {
                            let key = format!("{}{crm_id}", records::gone_prefix(kind));
                            self.on_node(move |n| n.store().write(|w| w.kv_put(&key, b"")))
                                .await??;
                        }
                        report.applied += 1;
                        if wrote && !report.changed.contains(&id) {
                            report.changed.push(id);
                        }
                    }
                    ItemOutcome::Ignored(_) => {}
                    ItemOutcome::Deferred(why) => report.deferred.push(why),
                }
            }
        }
        self.kv_put(SWEPT_AT_KEY, json_bytes(&started)).await
    }

    /// Plans a push of every record changed since the last plan (and those left waiting) and
    /// stores it as the checkpoint. `None` when there is nothing to send.
    async fn plan(&self, report: &mut PushReport) -> Result<Option<PushRun>, BridgeError> {
        let limits = self.config.limits;
        let (run, waiting) = self
            .on_node(move |n| {
                let store = n.store();
                let view = store.read()?;
                let since: u64 = read_json(&view, PUSH_SEQ_KEY)?.unwrap_or(0);
                let head = view.feed_head()?;
                let mut ids: BTreeSet<RecordId> = view
                    .changed_since(since, usize::MAX)?
                    .into_iter()
                    .filter(|e| e.kind != "catalog")
                    .map(|e| e.record)
                    .collect();
                let pending: BTreeSet<RecordId> =
                    read_json(&view, PENDING_KEY)?.unwrap_or_default();
                ids.extend(pending);
                let device = n.id().clone();
                let catalog = n.replica_ref().catalog().clone();
                let policy = n.replica_ref().policy().clone();
                let mut owned = Vec::new();
                for id in &ids {
                    let Some(doc) = n.replica().docs().with_doc(id, |d| d.clone())? else {
                        continue;
                    };
                    if root_kind(&doc).as_deref() == Some("catalog") {
                        continue;
                    }
                    let rd = match RecordDoc::from_automerge(doc, &device) {
                        Ok(rd) => rd,
                        Err(e) => {
                            tracing::warn!("push: {id} is not a record: {e}");
                            continue;
                        }
                    };
                    let p = rd.project(&ProjectCtx {
                        catalog: &catalog,
                        policy: &policy,
                        directory: &AssumeLive,
                    });
                    owned.push((rd.push_view(&p), shadow_of(&view, id)?, push::heads_of(&rd)));
                }
                let inputs: Vec<PushInput<'_>> = owned
                    .iter()
                    .map(|(v, s, h)| PushInput {
                        view: v,
                        shadow: s.as_ref(),
                        heads: h,
                    })
                    .collect();
                let plan = push::plan(&inputs, &|r| view.crm_id(r).ok().flatten().map(|c| c.id));
                let waiting = plan.waiting.clone();
                let still: BTreeSet<RecordId> = waiting.iter().map(|(r, _)| r.clone()).collect();
                let run = PushRun::new(plan, limits);
                drop(view);
                store.write(|w| {
                    if run.remaining() > 0 {
                        w.kv_put(RUN_KEY, &json_bytes(&run))?;
                    }
                    w.kv_put(PENDING_KEY, &json_bytes(&still))?;
                    w.kv_put(PUSH_SEQ_KEY, &json_bytes(&head))
                })?;
                Ok::<_, BridgeError>((run, waiting))
            })
            .await??;
        report.waiting = waiting;
        Ok((run.remaining() > 0).then_some(run))
    }

    /// Pushes every resolved change to the CRM: resumes an interrupted push from its checkpoint
    /// first, then plans what changed since. Records that moved in the CRM meanwhile are pulled
    /// and planned again.
    pub async fn push(&self) -> Result<PushReport, BridgeError> {
        let started = now_ms();
        let calls = self.crm.calls();
        let mut report = PushReport::default();
        let result = self.push_inner(&mut report).await;
        report.requests = self.crm.calls() - calls;
        let queue = self
            .on_node(|n| {
                let view = n.store().read()?;
                let pending: BTreeSet<RecordId> =
                    read_json(&view, PENDING_KEY)?.unwrap_or_default();
                let in_progress = view.kv_get(RUN_KEY)?.is_some();
                Ok::<_, BridgeError>((pending.len() as u64, in_progress))
            })
            .await?;
        {
            let mut st = lock(&self.status);
            let mut summary = RunSummary {
                started_ms: started,
                ended_ms: now_ms(),
                done: report.pushed.len() as u64,
                refused: report.refused.len() as u64,
                waiting: (report.waiting.len() + report.gave_up.len() + report.moved.len()) as u64,
                requests: report.requests,
                result: "ok".into(),
            };
            if let Err(e) = &result {
                summary.result = e.to_string();
                st.error(now_ms(), "push", None, e.to_string());
            }
            for (op, e) in report.refused.iter().chain(&report.gave_up) {
                st.error(now_ms(), "push", Some(op.record.to_string()), e.to_string());
            }
            if let Ok((queue, in_progress)) = queue {
                st.queue = queue;
                st.push_in_progress = in_progress;
            }
            st.last_push = Some(summary);
        }
        self.save_status().await;
        self.publish_reach().await;
        result.map(|()| report)
    }

    async fn push_inner(&self, report: &mut PushReport) -> Result<(), BridgeError> {
        self.crm_user().await?;
        for _ in 0..PUSH_ROUNDS {
            let saved: Option<PushRun> = self
                .on_node(|n| read_json(&n.store().read()?, RUN_KEY))
                .await??;
            let run = match saved {
                Some(mut run) => {
                    run.resume();
                    run
                }
                None => match self.plan(report).await? {
                    Some(run) => run,
                    None => return Ok(()),
                },
            };
            let moved_before = report.moved.len();
            let created_before = records_created(report);
            self.drive(run, report).await?;
            // Another round when a record moved in the CRM (pulled, to be planned again), or when
            // records were created that others' operations wait for (a restored deal's notes).
            let created = records_created(report) > created_before && !report.waiting.is_empty();
            if report.moved.len() == moved_before && !created {
                break;
            }
        }
        Ok(())
    }

    /// Sends a run's requests in order, the checkpoint durable before each.
    async fn drive(&self, mut run: PushRun, report: &mut PushReport) -> Result<(), BridgeError> {
        while let Some(req) = run.next_request() {
            // The checkpoint says the request is out before it is.
            let checkpoint = json_bytes(&run);
            self.kv_put(RUN_KEY, checkpoint).await?;
            let res = self.call(&req).await;
            for event in run.on_result(res, jitter()) {
                if let Event::Backoff(ms) = event {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    continue;
                }
                run = self.record_event(event, run, report).await?;
            }
        }
        // Done (or out of budget: what is left is planned again next time).
        let left = run.remaining();
        self.on_node(move |n| {
            n.store().write(|w| {
                w.kv_remove(RUN_KEY)?;
                Ok(())
            })
        })
        .await??;
        if left > 0 {
            tracing::warn!("push stopped with {left} operation(s) left (request budget)");
        }
        Ok(())
    }

    /// Writes what an answer means into the record's document and shadow, together with the
    /// run's next checkpoint.
    async fn record_event(
        &self,
        event: Event,
        run: PushRun,
        report: &mut PushReport,
    ) -> Result<PushRun, BridgeError> {
        let user = self.crm_user().await?;
        let (run, outcome) = self
            .on_node(move |n| {
                let mut run = run;
                let basis = Basis::of(n);
                let now = now_ms();
                let author = Author {
                    user,
                    device: bridge_device(),
                };
                let ectx = EditCtx {
                    author: &author,
                    now_ms: now,
                    catalog: &basis.catalog,
                    policy: &basis.policy,
                };
                let wctx = basis.wctx(now);
                let record = match &event {
                    Event::Pushed { op, .. }
                    | Event::Moved { op, .. }
                    | Event::Refused { op, .. }
                    | Event::Gone { op }
                    | Event::GaveUp { op, .. }
                    | Event::Held { op, .. } => op.record.clone(),
                    Event::Backoff(_) => return Ok((run, None)),
                };
                let mut failure: Option<BridgeError> = None;
                n.replica().docs().batch(|b| {
                    let mut pending: BTreeSet<RecordId> = read_json(b.store(), PENDING_KEY)
                        .ok()
                        .flatten()
                        .unwrap_or_default();
                    match &event {
                        Event::Pushed { op, data } => {
                            let r = with_record(b, &basis.device, &record, |doc, shadow| {
                                push::on_success(doc, shadow, op, data, &wctx)?;
                                Ok(())
                            })?;
                            if let Some(Err(e)) = r {
                                failure = Some(e);
                            } else {
                                record_ids(b, op, data)?;
                            }
                        }
                        Event::Refused { op, error } => {
                            let (kind, field, message) = match error {
                                CrmError::Validation { field, message } => {
                                    (FlagKind::Validation, field.clone(), message.clone())
                                }
                                other => (FlagKind::Permission, None, other.to_string()),
                            };
                            let r = with_record(b, &basis.device, &record, |doc, _| {
                                Ok(push::on_refused(
                                    doc,
                                    op,
                                    kind,
                                    field.as_deref(),
                                    &message,
                                    &ectx,
                                )?)
                            })?;
                            match r {
                                Some(Ok(Some(f))) => {
                                    if let Some(rest) = push::without_field(op, &f) {
                                        run.retry_first(rest);
                                    }
                                }
                                Some(Err(e)) => failure = Some(e),
                                _ => {}
                            }
                        }
                        Event::Gone { op } => {
                            let mut before = None;
                            let r = with_record(b, &basis.device, &record, |doc, shadow| {
                                before = shadow.clone();
                                push::on_gone(doc, shadow, op, &wctx)?;
                                Ok(shadow.is_none())
                            })?;
                            match (r, before) {
                                (Some(Ok(true)), Some(old)) => records::forget_crm_copy(b, &old)?,
                                (Some(Err(e)), _) => failure = Some(e),
                                _ => {}
                            }
                        }
                        Event::Moved { op, data } => {
                            match records::apply_record(b, &basis, op.kind, data, now) {
                                Ok(_) => {}
                                Err(BridgeError::Store(e)) => return Err(e),
                                Err(e) => failure = Some(e),
                            }
                            pending.insert(record.clone());
                        }
                        Event::GaveUp { .. } | Event::Held { .. } => {
                            pending.insert(record.clone());
                        }
                        Event::Backoff(_) => {}
                    }
                    let w = b.store();
                    w.kv_put(PENDING_KEY, &json_bytes(&pending))?;
                    w.kv_put(RUN_KEY, &json_bytes(&run))?;
                    Ok(())
                })?;
                n.refresh(std::slice::from_ref(&record), now)?;
                Ok::<_, BridgeError>((run, Some((event, failure))))
            })
            .await??;
        if let Some((event, failure)) = outcome {
            if let Some(e) = failure {
                let record = match &event {
                    Event::Pushed { op, .. }
                    | Event::Moved { op, .. }
                    | Event::Refused { op, .. }
                    | Event::Gone { op }
                    | Event::GaveUp { op, .. }
                    | Event::Held { op, .. } => Some(op.record.to_string()),
                    Event::Backoff(_) => None,
                };
                tracing::warn!("push: recording an answer failed: {e}");
                lock(&self.status).error(now_ms(), "push", record, e.to_string());
            }
            match event {
                Event::Pushed { op, .. } => report.pushed.push(op),
                Event::Refused { op, error } => {
                    if let CrmError::Validation {
                        field: Some(field), ..
                    } = &error
                        && mapping::names_catalog(field)
                    {
                        // The catalog may have changed under the value: read it at once.
                        self.catalog_stale.store(true, Ordering::Relaxed);
                    }
                    report.refused.push((op, error));
                }
                Event::Gone { op } => report.gone.push(op.record),
                Event::Moved { op, .. } => report.moved.push(op.record),
                Event::GaveUp { op, error } => report.gave_up.push((op, error)),
                Event::Held { op, reason } => report.waiting.push((op.record, reason)),
                Event::Backoff(_) => {}
            }
        }
        Ok(run)
    }

    /// Tells devices, through the catalog document, when the CRM last answered and since when
    /// it has not (at once when an outage begins or ends, else at most once a minute). A
    /// failure is logged, not fatal.
    async fn publish_reach(&self) {
        let reach = lock(&self.status).crm_reach.published();
        let r = self
            .on_node(move |n| {
                let stored = n.crm_reach()?.unwrap_or_default();
                if !status::worth_publishing(&stored, &reach) {
                    return Ok(false);
                }
                n.write_crm_reach(&reach, now_ms())
            })
            .await;
        if let Ok(Err(e)) = r {
            tracing::warn!("could not tell devices whether the CRM answers: {e}");
        }
    }

    /// Writes the status into the store and the status file. A failure is logged, not fatal:
    /// the status is a report, not state.
    async fn save_status(&self) {
        let status = self.status();
        let file = self.config.status_file.clone();
        let bytes = json_bytes(&status);
        let r = self
            .on_node(move |n| n.store().write(|w| w.kv_put(STATUS_KEY, &bytes)))
            .await;
        if !matches!(r, Ok(Ok(()))) {
            tracing::warn!("could not store the bridge status");
        }
        if let Some(path) = file
            && let Err(e) = status::write_file(&path, &status)
        {
            tracing::warn!("could not write {}: {e}", path.display());
        }
    }

    /// Reads the catalog when it is due. A failure is kept in the status and the round goes
    /// on with the catalog it has (the next round tries again).
    async fn catalog_if_due(&self) {
        let r = match self.catalog_due().await {
            Ok(true) => self.pull_catalog().await.map(|_| ()),
            Ok(false) => return,
            Err(e) => Err(e),
        };
        if let Err(e) = r {
            tracing::warn!("reading the CRM's catalog failed: {e}");
            lock(&self.status).error(now_ms(), "catalog", None, e.to_string());
            self.save_status().await;
        }
    }

    /// Whether a push was interrupted (its checkpoint is stored).
    pub async fn push_in_progress(&self) -> Result<bool, BridgeError> {
        Ok(self.kv_get(RUN_KEY).await?.is_some())
    }

    /// One round: an interrupted push is finished first (a create whose answer was lost must
    /// be found and mapped before a pull could take it for a record made in Zendesk), then a
    /// pull, then a push. Returns the pull and the last push.
    pub async fn round(&self) -> Result<(PullReport, PushReport), BridgeError> {
        let mut earlier = None;
        if self.push_in_progress().await? {
            earlier = Some(self.push().await?);
        }
        self.catalog_if_due().await;
        let pulled = self.pull().await?;
        let mut pushed = self.push().await?;
        if self.catalog_stale.load(Ordering::Relaxed) {
            // A refusal named a catalog entry: devices learn the new catalog this round.
            self.catalog_if_due().await;
        }
        if let Some(e) = earlier {
            let mut all = e;
            all.pushed.append(&mut pushed.pushed);
            all.refused.append(&mut pushed.refused);
            all.gone.append(&mut pushed.gone);
            all.moved.append(&mut pushed.moved);
            all.gave_up.append(&mut pushed.gave_up);
            all.waiting = pushed.waiting;
            all.requests += pushed.requests;
            pushed = all;
        }
        Ok((pulled, pushed))
    }

    /// Runs the bridge until `shutdown`: an import if none completed yet, then a pull and a
    /// push every `every`. Errors are logged and kept in the status; the loop goes on.
    pub async fn run(&self, every: Duration, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let step = async {
                if !self.imported().await? {
                    self.import(&|_| {}).await?;
                }
                self.round().await?;
                Ok::<(), BridgeError>(())
            };
            tokio::select! {
                _ = &mut shutdown => return,
                r = step => if let Err(e) = r {
                    tracing::warn!("bridge: {e}");
                },
            }
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }
}

/// How many records this push created in the CRM.
fn records_created(report: &PushReport) -> usize {
    report
        .pushed
        .iter()
        .filter(|op| op.target == Target::Record && op.op == OpKind::Create)
        .count()
}

/// The CRM ids of `resource` that the hub holds: records through the CRM id index, notes,
/// tasks and calls through the activity index.
fn known_crm_ids(n: &Node, resource: Resource) -> Result<BTreeSet<u64>, BridgeError> {
    let view = n.store().read()?;
    let mut ids = BTreeSet::new();
    match kind_of_resource(resource) {
        Some(Ok(kind)) => {
            let gone = ids_under(&view, &records::gone_prefix(kind))?;
            for (record, k) in n.records()? {
                if k != kind.as_str() {
                    continue;
                }
                if let Some(c) = view.crm_id(&record)?
                    && !gone.contains(&c.id)
                {
                    ids.insert(c.id);
                }
            }
        }
        Some(Err(kind)) => ids = ids_under(&view, &records::activity_prefix(kind))?,
        None => {}
    }
    Ok(ids)
}

/// The numbers that end the kv keys under `prefix`.
fn ids_under(view: &impl StoreRead, prefix: &str) -> Result<BTreeSet<u64>, BridgeError> {
    Ok(view
        .kv_prefix(prefix)?
        .into_iter()
        .filter_map(|(key, _)| key.strip_prefix(prefix)?.parse().ok())
        .collect())
}

/// After a successful create: the record's CRM id in the index, or the activity's parent in
/// the activity index. After a record's delete: its CRM id leaves the index.
fn record_ids(
    b: &mut DocBatch<'_, '_>,
    op: &push::PlannedOp,
    data: &Json,
) -> Result<(), StoreError> {
    let crm_id = data.get("id").and_then(Json::as_u64);
    match (&op.target, op.op, crm_id) {
        (Target::Record, OpKind::Create, Some(id)) => b.store().map_crm_id(
            &op.record,
            &CrmId {
                kind: op.kind.as_str().to_owned(),
                id,
            },
        ),
        (Target::Activity { kind, .. }, OpKind::Create, Some(id)) => b.store().kv_put(
            &records::activity_key(*kind, id),
            op.record.as_str().as_bytes(),
        ),
        (Target::Record, OpKind::Delete, _) => b.store().unmap_crm_id(&op.record).map(|_| ()),
        _ => Ok(()),
    }
}
