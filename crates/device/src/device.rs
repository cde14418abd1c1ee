//! [`Device`]: one enrolled store, driven by a front end.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use automerge::ChangeHash;
use sellsync_model::{
    ActivityId, ActivityKind, AuditEntry, Catalog, Choice, Conflict, CrmReach, DeviceId, Edit,
    FieldKey, Projection, RecordChoice, RecordDoc, RecordId, RecordKind, RecordState,
    RefusalTarget, Slot, UserId, Value, parse_input,
};
use sellsync_service::net::{self, NetConfig, NetError, SharedNode};
use sellsync_service::{DEFAULT_CACHE_BUDGET, Node, NodeError, credential, token};
use sellsync_store::{NodeIdentity, NotificationFilter, Role, Store, StoreRead};
use sellsync_sync::{Limits, Session};

use crate::changes::{ChangeCallback, ChangeStream, Hub};
use crate::error::{DeviceError, closed_error, node_error, panic_text, resolve_error};

/// The document cache budget of a device opened with [`DeviceConfig::low_memory`] (and no
/// explicit budget): small enough for a phone in the background.
pub const LOW_MEMORY_CACHE_BUDGET: usize = 16 << 20;

/// The key-value entry holding the PEM certificate a device trusts for its hub (the same entry
/// `sellsync device init --ca` writes).
const HUB_CA_KEY: &str = "device/hub_ca_pem";

/// The key-value entry holding the time (ms since the epoch, little-endian) of the last hub
/// round that finished.
const LAST_HUB_SYNC_KEY: &str = "device/last_hub_sync_ms";

/// How to open a device's store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceConfig {
    /// The store file, at a path the app chooses (its private files directory).
    pub path: PathBuf,
    /// The memory budget of the document cache, in bytes (default: the service's
    /// [`DEFAULT_CACHE_BUDGET`], or [`LOW_MEMORY_CACHE_BUDGET`] with `low_memory`).
    pub cache_budget: Option<usize>,
    /// Pick a small cache budget when none is given.
    pub low_memory: bool,
}

impl DeviceConfig {
    /// A configuration with the default budget.
    pub fn new(path: impl Into<PathBuf>) -> DeviceConfig {
        DeviceConfig {
            path: path.into(),
            cache_budget: None,
            low_memory: false,
        }
    }

    /// The document cache budget this configuration picks.
    pub fn budget(&self) -> usize {
        match (self.cache_budget, self.low_memory) {
            (Some(b), _) => b,
            (None, true) => LOW_MEMORY_CACHE_BUDGET,
            (None, false) => DEFAULT_CACHE_BUDGET,
        }
    }
}

/// What enrolling a store with a hub needs (what `sellsync hub token` printed, and where the
/// hub listens).
#[derive(Clone, PartialEq, Eq)]
pub struct Enrolment {
    /// The hub's URL, `ws://HOST:PORT/` or `wss://HOST:PORT/`.
    pub hub_url: String,
    /// The enrolment token, `<hub>.<user>.<device>.<secret>`.
    pub token: String,
    /// The certificate (PEM) to trust for a `wss://` hub: the hub's own, or its authority's.
    pub ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for Enrolment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a secret: never in logs.
        f.debug_struct("Enrolment")
            .field("hub_url", &self.hub_url)
            .field("ca_pem", &self.ca_pem.as_ref().map(Vec::len))
            .finish_non_exhaustive()
    }
}

/// What [`Device::enrol_with`] did.
#[derive(Debug)]
pub struct Enrolled {
    /// The enrolled device, open.
    pub device: Device,
    /// The first hub round, which checked the enrolment: its report, or why the hub could not
    /// be reached now ([`DeviceError::Unreachable`] or [`DeviceError::Timeout`]; the token is
    /// then checked at the first [`Device::sync_hub`]).
    pub first_round: Result<SyncReport, DeviceError>,
    /// Where the store found at the path was moved (another enrolment's, or a damaged one).
    pub kept_aside: Option<PathBuf>,
}

/// What was at a store's path before an enrolment wrote, so that a refused one can be undone.
enum Prior {
    /// No file, or a store never enrolled (empty): undoing removes the file.
    Fresh,
    /// This device's store, enrolled before with this identity and hub certificate: its
    /// records stay, and undoing writes both back.
    Enrolled(NodeIdentity, Option<Vec<u8>>),
    /// Another enrolment's store, or a damaged one, moved aside to this path: undoing moves it
    /// back.
    MovedAside(PathBuf),
}

/// One line of a list of deals or contacts.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RecordSummary {
    /// The record.
    pub id: RecordId,
    /// Deal or contact.
    pub kind: RecordKind,
    /// Live, deleted, or deleted while others edited it.
    pub state: RecordState,
    /// Its name (a contact without one: first and last name).
    pub name: Option<String>,
    /// `owner_id`.
    pub owner: Option<UserId>,
    /// A deal's `stage_id`.
    pub stage: Option<u64>,
    /// A deal's `value` (absent while it is in conflict).
    pub value: Option<Value>,
    /// Open conflicts on the record.
    pub open_conflicts: usize,
}

/// The open conflicts of one record.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RecordConflicts {
    /// The record.
    pub record: RecordId,
    /// Deal or contact.
    pub kind: RecordKind,
    /// Every open conflict, record conflict first.
    pub conflicts: Vec<OpenConflict>,
}

/// One open conflict, with the base value of a field conflict.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct OpenConflict {
    /// The conflict; a field conflict lists its candidates (value, who, from which device,
    /// when, and the operation that wrote it).
    pub conflict: Conflict,
    /// For a field conflict, the value both sides started from: the field's value as each
    /// candidate's author saw it when writing (the document at the parents of the change that
    /// wrote the candidate), when they all saw the same one. `Some(Value::Null)`: the field had
    /// no value then. `None`: not a field conflict, or the authors started from different
    /// values (or from a value itself in conflict).
    pub base: Option<Value>,
}

/// A notification for this device's user: a value of theirs that gave way.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NotificationDetail {
    /// Its stable key, from the record, the field and the losing operation (one notification
    /// per lost value per record).
    pub id: String,
    /// The user told (this device's user).
    pub to: UserId,
    /// The record.
    pub record: RecordId,
    /// The field.
    pub slot: Slot,
    /// The policy tier that decided.
    pub policy: String,
    /// The value this user wrote.
    pub yours: Value,
    /// The value kept.
    pub kept: Value,
    /// Who wrote the kept value.
    pub kept_by: UserId,
    /// When (ms since the epoch).
    pub kept_at: i64,
}

/// A stored notification.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DeviceNotification {
    /// Its id (for [`Device::dismiss`]).
    pub id: u64,
    /// When it was stored (ms since the epoch).
    pub created_at_ms: i64,
    /// Dismissed already.
    pub read: bool,
    /// What it says; `None` for a notification this version cannot read.
    pub detail: Option<NotificationDetail>,
}

/// What one sync round did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SyncReport {
    /// The peer that answered.
    pub peer: Option<DeviceId>,
    /// Records that received changes, each once, in id order.
    pub changed: Vec<RecordId>,
    /// Records the hub said this user may no longer see.
    pub revoked: Vec<RecordId>,
    /// The catalog (stages, users, sources, custom fields, the hub's reach to the CRM)
    /// received changes: [`Device::catalog`] and [`Device::status`] say what it holds now.
    pub catalog_changed: bool,
    /// Frames and bytes each way.
    pub frames_sent: u64,
    /// Frames received.
    pub frames_received: u64,
    /// Bytes sent.
    pub bytes_sent: u64,
    /// Bytes received.
    pub bytes_received: u64,
}

/// Where the device stands with its hub.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SyncStatus {
    /// Records changed here that the hub does not hold as they are: their heads differ from
    /// the heads this device last knew it shares with the hub (its sync state with the hub).
    /// A record the hub no longer accepts from this device (access revoked) stays counted.
    pub pending_changes: usize,
    /// When the last hub round finished (ms since the epoch).
    pub last_hub_sync_ms: Option<i64>,
    /// What the hub last said of its reach to the CRM (Zendesk Sell).
    pub crm_reach: Option<CrmReach>,
    /// Open conflicts of every record.
    pub open_conflicts: usize,
}

/// Ids of new records and activities: a random prefix drawn at open and a counter, so that two
/// creates in one millisecond, or on two devices, never share an id.
#[derive(Debug)]
struct Ids {
    prefix: u64,
    next: AtomicU64,
}

impl Ids {
    fn new() -> Ids {
        Ids {
            prefix: rand::random(),
            next: AtomicU64::new(1),
        }
    }

    fn make(&self, what: &str) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{what}-{:016x}-{n:x}", self.prefix)
    }

    fn record(&self, kind: RecordKind) -> Result<RecordId, DeviceError> {
        self.make(kind.as_str())
            .parse()
            .map_err(|e: sellsync_model::BadId| DeviceError::Internal {
                reason: e.to_string(),
            })
    }

    fn activity(&self, kind: ActivityKind) -> Result<ActivityId, DeviceError> {
        let what = match kind {
            ActivityKind::Note => "note",
            ActivityKind::Task => "task",
            ActivityKind::Call => "call",
        };
        self.make(what)
            .parse()
            .map_err(|e: sellsync_model::BadId| DeviceError::Internal {
                reason: e.to_string(),
            })
    }
}

#[derive(Debug)]
struct Inner {
    node: SharedNode,
    store: Arc<Store>,
    path: PathBuf,
    /// The hub this device is enrolled with (from its token).
    hub: Option<DeviceId>,
    ids: Ids,
    /// The feed seq up to which changes were reported to subscribers.
    reported: Mutex<u64>,
    changes: Hub,
}

/// A rep's device: an enrolled store, with its node, behind one lock.
///
/// `Send + Sync`, and cheap to clone (clones share the device). Reads and edits block on the
/// store (file I/O, one fsync per edit): from async code, call them on a blocking thread. The
/// sync rounds are async and run their blocking steps on tokio's blocking pool, so they need a
/// tokio runtime. Calls from several threads queue on the device's lock.
///
/// The store stays open, and locked against other processes and handles, until the last clone
/// is dropped.
#[derive(Debug, Clone)]
pub struct Device {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs `f`, turning a panic inside (automerge, redb) into [`DeviceError::Internal`].
fn guard<R>(f: impl FnOnce() -> Result<R, DeviceError>) -> Result<R, DeviceError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| {
        Err(DeviceError::Internal {
            reason: format!("panic: {}", panic_text(&*p)),
        })
    })
}

fn internal(e: impl std::fmt::Display) -> DeviceError {
    DeviceError::Internal {
        reason: e.to_string(),
    }
}

fn field<'a>(p: &'a Projection, name: &str) -> Option<&'a Value> {
    p.record
        .fields
        .iter()
        .find(|(k, _)| k.to_string() == name)
        .map(|(_, v)| v)
}

fn text(v: Option<&Value>) -> Option<String> {
    match v {
        None | Some(Value::Null) => None,
        Some(Value::Text(s)) if s.is_empty() => None,
        Some(v) => Some(v.to_string()),
    }
}

fn summary(p: &Projection) -> RecordSummary {
    let name = text(field(p, "name")).or_else(|| {
        let parts: Vec<String> = [field(p, "first_name"), field(p, "last_name")]
            .into_iter()
            .filter_map(text)
            .collect();
        (!parts.is_empty()).then(|| parts.join(" "))
    });
    let reference = |name| match field(p, name) {
        Some(Value::Ref(r)) => Some(*r),
        _ => None,
    };
    RecordSummary {
        id: p.record.id.clone(),
        kind: p.record.kind,
        state: p.record.state,
        name,
        owner: reference("owner_id").map(UserId),
        stage: reference("stage_id"),
        value: field(p, "value").cloned(),
        open_conflicts: p.conflicts.len(),
    }
}

/// Checks a hub URL as far as it can be without the hub: `ws://` or `wss://`, a host, and if
/// given a port number.
fn check_hub_url(url: &str) -> Result<(), DeviceError> {
    let bad = |reason: String| DeviceError::BadEnrolment {
        what: "hub_url",
        reason,
    };
    let rest = url
        .strip_prefix("ws://")
        .or_else(|| url.strip_prefix("wss://"))
        .ok_or_else(|| bad(format!("{url:?} does not start with ws:// or wss://")))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (h, Some(p)),
        _ => (authority, None),
    };
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._[]:".contains(c));
    if !host_ok {
        return Err(bad(format!("{url:?} has no valid host name or address")));
    }
    if let Some(p) = port
        && p.parse::<u16>().is_err()
    {
        return Err(bad(format!("{p:?} is not a port number (1 to 65535)")));
    }
    Ok(())
}

/// Ids once each, in id order, the catalog left out.
fn unique(ids: &[RecordId]) -> Vec<RecordId> {
    let mut v: Vec<RecordId> = ids
        .iter()
        .filter(|i| i.as_str() != sellsync_service::CATALOG_ID)
        .cloned()
        .collect();
    v.sort();
    v.dedup();
    v
}

/// How many records (the catalog left out) have heads other than those shared with `hub`.
fn pending(read: &impl StoreRead, hub: &DeviceId) -> Result<usize, DeviceError> {
    let ids: Vec<RecordId> = read
        .changed_since(0, usize::MAX)?
        .into_iter()
        .filter(|e| e.kind != "catalog")
        .map(|e| e.record)
        .collect();
    let states = read.sync_states(hub, &ids)?;
    let mut n = 0;
    for (id, state) in ids.iter().zip(states) {
        let mut heads = read.doc_heads(id)?.unwrap_or_default();
        let mut shared = state
            .and_then(|b| automerge::sync::State::decode(&b).ok())
            .map(|s| s.shared_heads)
            .unwrap_or_default();
        heads.sort();
        shared.sort();
        if heads != shared {
            n += 1;
        }
    }
    Ok(n)
}

/// The conflicts of record `id`, each with its base value (see [`OpenConflict::base`]).
fn with_bases(
    n: &mut Node,
    id: &RecordId,
    conflicts: Vec<Conflict>,
) -> Result<Vec<OpenConflict>, DeviceError> {
    if !conflicts
        .iter()
        .any(|c| matches!(c, Conflict::Field { .. }))
    {
        return Ok(conflicts
            .into_iter()
            .map(|conflict| OpenConflict {
                conflict,
                base: None,
            })
            .collect());
    }
    let device = n.id().clone();
    let catalog = n.replica_ref().catalog().clone();
    let policy = n.replica_ref().policy().clone();
    let doc = n
        .replica()
        .docs()
        .with_doc(id, |d| d.clone())?
        .ok_or_else(|| DeviceError::NoSuchRecord { id: id.clone() })?;
    let rd = RecordDoc::from_automerge(doc, &device).map_err(internal)?;
    // Each change as (actor, first op, last op, parents): a candidate's op is `counter@actor`.
    let changes: Vec<(String, u64, u64, Vec<ChangeHash>)> = rd
        .automerge()
        .get_changes_meta(&[])
        .into_iter()
        .map(|m| (m.actor.to_hex_string(), m.start_op, m.max_op, m.deps))
        .collect();
    let parents_of = |op: &str| -> Option<&Vec<ChangeHash>> {
        let (counter, actor) = op.split_once('@')?;
        let counter: u64 = counter.parse().ok()?;
        changes
            .iter()
            .find(|(a, start, max, _)| a == actor && (*start..=*max).contains(&counter))
            .map(|(.., deps)| deps)
    };
    // What `slot` held at `heads`: its one value, `Null` if none, `None` if several.
    let mut seen_at: BTreeMap<Vec<ChangeHash>, BTreeMap<String, Option<Value>>> = BTreeMap::new();
    let mut value_at =
        |heads: &Vec<ChangeHash>, slot: &Slot| -> Result<Option<Value>, DeviceError> {
            let per_slot = seen_at.entry(heads.clone()).or_default();
            if let Some(v) = per_slot.get(&slot.to_string()) {
                return Ok(v.clone());
            }
            let fork = rd.fork_at(heads, &device).map_err(internal)?;
            let found = fork.field_candidates(&catalog, &policy, slot);
            let v = match found.as_slice() {
                [] => Some(Value::Null),
                [one] => Some(one.value.clone()),
                _ => None,
            };
            per_slot.insert(slot.to_string(), v.clone());
            Ok(v)
        };
    let mut out = Vec::with_capacity(conflicts.len());
    for conflict in conflicts {
        let base = match &conflict {
            Conflict::Field {
                slot, candidates, ..
            } => {
                let mut seen: Option<Option<Value>> = None;
                let mut agree = true;
                for c in candidates {
                    let v = match parents_of(&c.op) {
                        Some(heads) => value_at(heads, slot)?,
                        None => None,
                    };
                    match &seen {
                        None => seen = Some(v),
                        Some(prev) if *prev == v => {}
                        Some(_) => agree = false,
                    }
                }
                if agree { seen.flatten() } else { None }
            }
            _ => None,
        };
        out.push(OpenConflict { conflict, base });
    }
    Ok(out)
}

/// Reports what a sync round wrote even when its future is dropped before it returns.
struct ReportOnDrop(Device);

impl Drop for ReportOnDrop {
    fn drop(&mut self) {
        if let Err(e) = self.0.report_changes() {
            tracing::warn!("reporting changes after a sync round: {e}");
        }
    }
}

impl Device {
    /// Opens an enrolled store.
    ///
    /// Errors: [`DeviceError::StoreLocked`] when another process or an open `Device` holds the
    /// file (it is not waited for), [`DeviceError::NotEnrolled`] when there is no file or the
    /// store was never enrolled, [`DeviceError::NotADevice`] for a hub's store,
    /// [`DeviceError::Damaged`] for a damaged one.
    ///
    /// The grant the hub handed last (access rules, LAN credential) is loaded; one that no
    /// longer verifies is logged and left until the next hub round replaces it.
    pub fn open(config: DeviceConfig) -> Result<Device, DeviceError> {
        guard(|| Device::open_inner(&config))
    }

    /// [`Device::open`], waiting up to `wait` while another process or handle holds the store
    /// (a front end that serves LAN peers from another process holds it only during each
    /// session). [`DeviceError::StoreLocked`] once `wait` has passed.
    pub fn open_waiting(config: DeviceConfig, wait: Duration) -> Result<Device, DeviceError> {
        let deadline = std::time::Instant::now() + wait;
        loop {
            match Device::open(config.clone()) {
                Err(DeviceError::StoreLocked { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                other => return other,
            }
        }
    }

    /// The device's node on `store` (opened at `config.path`): a device's, with its budget and
    /// the stored grant.
    fn node_of(config: &DeviceConfig, store: Arc<Store>) -> Result<Node, DeviceError> {
        let path = &config.path;
        if store.was_repaired() {
            tracing::warn!(
                "{} was damaged and has been repaired; its latest changes may be gone: sync with \
                 the hub",
                path.display()
            );
        }
        let mut node = Node::open(store, None).map_err(|e| match e {
            NodeError::NoIdentity => DeviceError::NotEnrolled { path: path.clone() },
            e => node_error(e, None),
        })?;
        if node.identity().role != Role::Device {
            return Err(DeviceError::NotADevice { path: path.clone() });
        }
        node.replica().docs().set_budget(config.budget());
        if let Err(e) = credential::enable_peer_auth(&mut node) {
            tracing::warn!("the stored grant is unusable ({e}); sync with the hub to renew it");
        }
        Ok(node)
    }

    fn open_inner(config: &DeviceConfig) -> Result<Device, DeviceError> {
        let path = config.path.clone();
        let store = Arc::new(Store::open_existing(&path)?);
        let node = Device::node_of(config, store.clone())?;
        let hub = node
            .identity()
            .hub_token
            .as_deref()
            .and_then(|t| token::parse(t).ok())
            .map(|e| e.hub);
        let reported = store.read()?.feed_head()?;
        Ok(Device {
            inner: Arc::new(Inner {
                node: Arc::new(Mutex::new(node)),
                store,
                path,
                hub,
                ids: Ids::new(),
                reported: Mutex::new(reported),
                changes: Hub::default(),
            }),
        })
    }

    /// Enrols a new store at `config.path` with a hub, then opens it: what `sellsync device
    /// init` does (the hub URL, the token and the certificate are checked first; nothing is
    /// written when one is refused). The hub certificate given is pinned in the store.
    ///
    /// The token is not verified with the hub here (this call makes no connection): the first
    /// [`Device::sync_hub`] does that (and refuses with [`DeviceError::Auth`]);
    /// [`Device::enrol_checked`] asks the hub at once when it can be reached. Enrolling an
    /// already enrolled store again is refused ([`DeviceError::AlreadyEnrolled`]);
    /// [`Device::enrol_with`] with `force` enrols it again.
    pub fn enrol(config: DeviceConfig, enrolment: Enrolment) -> Result<Device, DeviceError> {
        guard(|| {
            let prior = Device::write_enrolment(&config.path, &enrolment, false)?;
            Device::open_inner(&config).inspect_err(|_| {
                let _ = Device::undo_enrolment(&config.path, prior);
            })
        })
    }

    /// [`Device::enrol`], then one hub round (bounded by `timeout`) to check the enrolment
    /// with the hub, as `sellsync device init` does. A hub that refuses the token
    /// ([`DeviceError::Auth`]), or whose catalog does not list the token's user
    /// ([`DeviceError::BadEnrolment`]), undoes the enrolment: the new store is removed. A hub
    /// that cannot be reached now leaves the device enrolled, unchecked (`None`): its first
    /// [`Device::sync_hub`] checks the token.
    pub async fn enrol_checked(
        config: DeviceConfig,
        enrolment: Enrolment,
        timeout: Duration,
    ) -> Result<(Device, Option<SyncReport>), DeviceError> {
        let done = Device::enrol_with(config, enrolment, false, timeout).await?;
        Ok((done.device, done.first_round.ok()))
    }

    /// [`Device::enrol_checked`], and with `force` enrols again a store that is enrolled
    /// already (or damaged), as `sellsync device init --force` does: a store of the same
    /// device and user keeps its records (its identity, token and pinned certificate are
    /// replaced); any other store (another enrolment's, or a damaged one) is moved aside first,
    /// to `PATH.replaced-MS` or `PATH.damaged-MS` ([`Enrolled::kept_aside`]). A refusal by the
    /// hub puts back what was there. A hub's store is refused ([`DeviceError::NotADevice`]);
    /// without `force`, an enrolled store is [`DeviceError::AlreadyEnrolled`] and a damaged
    /// one [`DeviceError::Damaged`].
    pub async fn enrol_with(
        config: DeviceConfig,
        enrolment: Enrolment,
        force: bool,
        timeout: Duration,
    ) -> Result<Enrolled, DeviceError> {
        let path = config.path.clone();
        let prior = guard(|| Device::write_enrolment(&path, &enrolment, force))?;
        let kept_aside = match &prior {
            Prior::MovedAside(p) => Some(p.clone()),
            _ => None,
        };
        let device = match guard(|| Device::open_inner(&config)) {
            Ok(d) => d,
            Err(e) => {
                Device::undo_enrolment(&path, prior)?;
                return Err(e);
            }
        };
        let refused = match device.sync_hub(timeout).await {
            Ok(report) => match device.check_user_listed() {
                Ok(()) => {
                    return Ok(Enrolled {
                        device,
                        first_round: Ok(report),
                        kept_aside,
                    });
                }
                Err(e) => e,
            },
            Err(e @ (DeviceError::Unreachable { .. } | DeviceError::Timeout { .. })) => {
                return Ok(Enrolled {
                    device,
                    first_round: Err(e),
                    kept_aside,
                });
            }
            Err(e) => e,
        };
        // The only handle: dropping it closes the store, which can then be put back.
        drop(device);
        Device::undo_enrolment(&path, prior)?;
        Err(refused)
    }

    /// [`DeviceError::BadEnrolment`] when the hub's catalog lists users and not this one.
    fn check_user_listed(&self) -> Result<(), DeviceError> {
        let user = self.user()?;
        let catalog = self.catalog()?;
        if catalog.loaded && !catalog.users.is_empty() && !catalog.users.contains_key(&user.0) {
            let known: Vec<String> = catalog
                .users
                .values()
                .map(|u| format!("{} ({})", u.name, u.id))
                .collect();
            return Err(DeviceError::BadEnrolment {
                what: "token",
                reason: format!(
                    "the token is for user {}, whom the hub's catalog does not list (it lists \
                     {}); ask for a token of one of them",
                    user.0,
                    known.join(", ")
                ),
            });
        }
        Ok(())
    }

    /// Looks at what is at `path` and makes room for the enrolment of `enrolled`; returns what
    /// was there.
    fn make_room(
        path: &Path,
        enrolled: &token::Enrollment,
        force: bool,
    ) -> Result<Prior, DeviceError> {
        if !path.exists() {
            return Ok(Prior::Fresh);
        }
        let why_aside = match Store::open_existing(path) {
            Ok(store) => {
                let read = store.read()?;
                let Some(identity) = read.identity()? else {
                    return Ok(Prior::Fresh);
                };
                if identity.role != Role::Device {
                    return Err(DeviceError::NotADevice {
                        path: path.to_owned(),
                    });
                }
                if !force {
                    return Err(DeviceError::AlreadyEnrolled {
                        path: path.to_owned(),
                    });
                }
                if identity.device_id == enrolled.device && identity.user_id == enrolled.user {
                    let ca = read.kv_get(HUB_CA_KEY)?;
                    return Ok(Prior::Enrolled(identity, ca));
                }
                "replaced"
            }
            Err(sellsync_store::StoreError::Damaged { .. }) if force => "damaged",
            Err(e) => return Err(e.into()),
        };
        let mut aside = path.as_os_str().to_owned();
        aside.push(format!(".{why_aside}-{}", net::now_ms()));
        let aside = PathBuf::from(aside);
        std::fs::rename(path, &aside).map_err(|e| DeviceError::Internal {
            reason: format!(
                "moving {} aside to {}: {e}",
                path.display(),
                aside.display()
            ),
        })?;
        Ok(Prior::MovedAside(aside))
    }

    /// Puts back what [`Device::make_room`] found.
    fn undo_enrolment(path: &Path, prior: Prior) -> Result<(), DeviceError> {
        let io = |what: String| {
            move |e: std::io::Error| DeviceError::Internal {
                reason: format!("{what}: {e}"),
            }
        };
        match prior {
            Prior::Fresh => {
                std::fs::remove_file(path).map_err(io(format!("removing {}", path.display())))?
            }
            Prior::Enrolled(identity, ca) => {
                let store = Store::open_existing(path)?;
                store.write(|w| {
                    w.set_identity(&identity)?;
                    match &ca {
                        Some(pem) => w.kv_put(HUB_CA_KEY, pem)?,
                        None => {
                            w.kv_remove(HUB_CA_KEY)?;
                        }
                    }
                    Ok(())
                })?;
            }
            Prior::MovedAside(aside) => {
                std::fs::remove_file(path).map_err(io(format!("removing {}", path.display())))?;
                std::fs::rename(&aside, path)
                    .map_err(io(format!("moving {} back", aside.display())))?;
            }
        }
        Ok(())
    }

    /// Checks the enrolment, makes room for it (see [`Device::enrol_with`]) and writes it;
    /// returns what was at `path` before.
    fn write_enrolment(path: &Path, e: &Enrolment, force: bool) -> Result<Prior, DeviceError> {
        check_hub_url(&e.hub_url)?;
        let enrolled = token::parse(&e.token).map_err(|b| DeviceError::BadEnrolment {
            what: "token",
            reason: b.to_string(),
        })?;
        let secret = token::secret_of(&enrolled.token);
        if secret.len() != 64 || !secret.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(DeviceError::BadEnrolment {
                what: "token",
                reason: format!(
                    "the token's secret is {} character(s) long; a token printed by `sellsync \
                     hub token` ends in 64 hex digits: copy it whole",
                    secret.chars().count()
                ),
            });
        }
        match &e.ca_pem {
            Some(pem) => {
                net::tls_connector_pem(pem).map_err(|t| DeviceError::BadEnrolment {
                    what: "ca_pem",
                    reason: t.to_string(),
                })?;
            }
            None if e.hub_url.starts_with("wss://") => {
                return Err(DeviceError::BadEnrolment {
                    what: "ca_pem",
                    reason: "a wss:// hub needs the certificate to trust: the hub's own (PEM), \
                             or its authority's"
                        .into(),
                });
            }
            None => {}
        }
        let prior = Device::make_room(path, &enrolled, force)?;
        let identity = NodeIdentity {
            device_id: enrolled.device.clone(),
            user_id: enrolled.user,
            role: Role::Device,
            hub_url: Some(e.hub_url.clone()),
            hub_token: Some(enrolled.token.clone()),
        };
        let kept = matches!(prior, Prior::Enrolled(..));
        let written = (|| -> Result<(), DeviceError> {
            let store = Store::open(path)?;
            let now_ms = net::now_ms();
            store.write(|w| {
                w.set_identity(&identity)?;
                match &e.ca_pem {
                    Some(pem) => w.kv_put(HUB_CA_KEY, pem)?,
                    None => {
                        w.kv_remove(HUB_CA_KEY)?;
                    }
                }
                if !kept {
                    // A new store for a device id that may have synced before (a rebuilt or
                    // re-created store): the hub holds a checkpoint into the old store's feed,
                    // which counted one per change. Starting the feed at the time in
                    // microseconds puts every change of this store above any seq an earlier
                    // one reached.
                    let micros = u64::try_from(now_ms).unwrap_or(0).saturating_mul(1000);
                    w.raise_feed_floor(micros)?;
                }
                Ok(())
            })?;
            // The device's own key pair, certified by the hub at each sync (kept on a
            // re-enrolment).
            credential::load_or_create_key(&store, credential::DEVICE_KEY).map_err(internal)?;
            Ok(())
        })();
        if let Err(err) = written {
            Device::undo_enrolment(path, prior)?;
            return Err(err);
        }
        Ok(prior)
    }

    /// Runs `f` on the node under the device's lock; a panic inside becomes an error.
    fn with_node<R>(
        &self,
        f: impl FnOnce(&mut Node) -> Result<R, DeviceError>,
    ) -> Result<R, DeviceError> {
        guard(|| {
            let mut node = lock(&self.inner.node);
            f(&mut node)
        })
    }

    /// [`Device::with_node`] for a call that writes: the records it changed are reported to
    /// subscribers once the lock is released.
    fn writing<R>(
        &self,
        f: impl FnOnce(&mut Node) -> Result<R, DeviceError>,
    ) -> Result<R, DeviceError> {
        let out = self.with_node(f);
        if let Err(e) = self.report_changes() {
            tracing::warn!("reporting changes: {e}");
        }
        out
    }

    /// Tells subscribers of every record written since the last report (from the store's feed).
    fn report_changes(&self) -> Result<(), DeviceError> {
        let ids = guard(|| {
            let mut reported = lock(&self.inner.reported);
            let read = self.inner.store.read()?;
            let head = read.feed_head()?;
            if head <= *reported {
                return Ok(Vec::new());
            }
            let entries = read.changed_since(*reported, usize::MAX)?;
            *reported = head;
            Ok(entries
                .into_iter()
                .filter(|e| e.kind != "catalog")
                .map(|e| e.record)
                .collect::<Vec<_>>())
        })?;
        self.inner.changes.publish(&unique(&ids));
        Ok(())
    }

    /// The memory budget of the document cache in use, in bytes.
    pub fn cache_budget(&self) -> Result<usize, DeviceError> {
        self.with_node(|n| Ok(n.replica().docs().budget()))
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// This device's id.
    pub fn id(&self) -> Result<DeviceId, DeviceError> {
        self.with_node(|n| Ok(n.id().clone()))
    }

    /// The hub this device is enrolled with (from its token).
    pub fn hub_id(&self) -> Option<DeviceId> {
        self.inner.hub.clone()
    }

    /// The hub URL given at enrolment.
    pub fn hub_url(&self) -> Result<Option<String>, DeviceError> {
        self.with_node(|n| Ok(n.identity().hub_url.clone()))
    }

    /// Whether LAN peers accept this device's own credential (from the hub's last grant) now:
    /// [`DeviceError::Auth`] saying why not (none yet, expired, not for this device). Peers
    /// check it as this device checks theirs; a front end can say so before dialing.
    pub fn check_lan_credential(&self) -> Result<(), DeviceError> {
        self.with_node(|n| match n.replica_ref().peer_auth() {
            None => Err(DeviceError::Auth {
                reason: "no LAN credential yet: sync with the hub first".into(),
            }),
            Some(auth) => auth
                .trust
                .check(&auth.credential, n.id(), net::now_ms())
                .map(|_| ())
                .map_err(|reason| DeviceError::Auth { reason }),
        })
    }

    /// The user this device acts for.
    pub fn user(&self) -> Result<UserId, DeviceError> {
        self.with_node(|n| Ok(n.user()))
    }

    // ---- sync ----

    /// One bounded round with the hub: sends this device's changes, receives what its user
    /// may see, and the hub's grant. `timeout` bounds the whole round (connection included).
    ///
    /// Cancel-safe: the round applies what it receives per flight (each message is applied and
    /// persisted in one store transaction on the blocking pool, which finishes even when this
    /// future is dropped), so a timeout or a dropped future leaves the store consistent, holding
    /// every flight received so far; the rest comes with the next round. Records changed by a
    /// cut-short round are reported to subscribers when the future is dropped (or, for a flight
    /// still being applied then, with the next call that writes).
    ///
    /// Errors: [`DeviceError::Timeout`], [`DeviceError::Auth`] (token revoked or unknown, a
    /// certificate that is not the pinned one), [`DeviceError::Unreachable`] (no connection,
    /// or lost mid-round), [`DeviceError::SyncFailed`] for other protocol failures.
    pub async fn sync_hub(&self, timeout: Duration) -> Result<SyncReport, DeviceError> {
        self.hub_round(None, timeout).await
    }

    /// [`Device::sync_hub`] with the hub at `url` for this round, when it moved from the URL
    /// given at enrolment (checked as at enrolment: [`DeviceError::BadEnrolment`] on
    /// `hub_url`). The enrolled URL stays as it is.
    pub async fn sync_hub_at(
        &self,
        url: &str,
        timeout: Duration,
    ) -> Result<SyncReport, DeviceError> {
        check_hub_url(url)?;
        self.hub_round(Some(url.to_owned()), timeout).await
    }

    async fn hub_round(
        &self,
        moved: Option<String>,
        timeout: Duration,
    ) -> Result<SyncReport, DeviceError> {
        let (url, cfg, tls) = self.with_node(|n| {
            let url = match moved {
                Some(url) => url,
                None => n
                    .identity()
                    .hub_url
                    .clone()
                    .ok_or_else(|| DeviceError::NotEnrolled {
                        path: self.inner.path.clone(),
                    })?,
            };
            let cfg = credential::hub_dial_config(n, Limits::default()).map_err(internal)?;
            let tls = match n.store().read()?.kv_get(HUB_CA_KEY)? {
                Some(pem) => Some(net::tls_connector_pem(&pem).map_err(internal)?),
                None => None,
            };
            if url.starts_with("wss://") && tls.is_none() {
                return Err(DeviceError::BadEnrolment {
                    what: "ca_pem",
                    reason: format!("{url} is a TLS hub and this device trusts no certificate"),
                });
            }
            Ok((url, cfg, tls))
        })?;
        let report = self.round(&url, Session::dial(cfg), tls, timeout).await?;
        let now = net::now_ms();
        let store = self.inner.store.clone();
        tokio::task::spawn_blocking(move || {
            store.write(|w| w.kv_put(LAST_HUB_SYNC_KEY, &now.to_le_bytes()))
        })
        .await
        .map_err(internal)??;
        Ok(report)
    }

    /// One bounded round with a LAN peer (a device serving at `url`, `wss://HOST:PORT/`), as
    /// [`Device::sync_hub`]. Needs one hub round first (the hub's grant holds the LAN
    /// credential). `peer`, if given, is the device expected to answer.
    pub async fn sync_peer(
        &self,
        url: &str,
        peer: Option<DeviceId>,
        timeout: Duration,
    ) -> Result<SyncReport, DeviceError> {
        if !url.starts_with("wss://") {
            return Err(DeviceError::Invalid {
                field: "url".into(),
                reason: format!("{url:?}: LAN peers are dialed at wss://HOST:PORT/"),
            });
        }
        let cfg = self.with_node(|n| {
            credential::lan_dial_config(n, peer, Limits::default()).map_err(|e| DeviceError::Auth {
                reason: format!("no usable LAN credential ({e}): sync with the hub first"),
            })
        })?;
        let tls = net::lan_tls_connector().map_err(internal)?;
        self.round(url, Session::dial(cfg), Some(tls), timeout)
            .await
    }

    /// Serves LAN peers (devices of the same hub dialing [`Device::sync_peer`]) on `listener`
    /// over TLS with this device's own certificate, until `shutdown` resolves. Each peer
    /// proves its credential from the hub, and receives only records its user may see.
    ///
    /// Needs one hub round first (the grant holds the LAN credential): else
    /// [`DeviceError::Auth`] at once. Records changed by served sessions are reported to
    /// subscribers within half a second. The device stays usable meanwhile (sessions and
    /// calls queue on its lock).
    pub async fn serve_lan(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), DeviceError> {
        let (make, tls) = self.with_node(Device::lan_sessions)?;
        let extras = net::Extras {
            tls: Some(tls),
            health: None,
        };
        let serving = net::serve_nodes(
            listener,
            net::Nodes::Held(self.inner.node.clone()),
            make,
            NetConfig::default(),
            extras,
            shutdown,
        );
        let reporting = async {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                let me = self.clone();
                let _ = tokio::task::spawn_blocking(move || me.report_changes()).await;
            }
        };
        tokio::select! {
            () = serving => {}
            () = reporting => {}
        }
        self.report_changes()
    }

    /// How sessions with LAN peers are accepted (this device's credential from its last grant,
    /// a fresh nonce each), and the TLS acceptor with its own certificate.
    fn lan_sessions(
        n: &mut Node,
    ) -> Result<
        (
            impl Fn() -> Session + Send + Sync + 'static + use<>,
            tokio_rustls::TlsAcceptor,
        ),
        DeviceError,
    > {
        let no_credential = |e: credential::CredentialError| DeviceError::Auth {
            reason: format!("no usable LAN credential ({e}): sync with the hub first"),
        };
        let base = credential::lan_accept_config(n, Limits::default()).map_err(no_credential)?;
        let tls = credential::lan_tls_acceptor(n).map_err(no_credential)?;
        let make = move || {
            let mut cfg = base.clone();
            cfg.nonce = credential::nonce().unwrap_or_else(|e| {
                // Without randomness the session runs with no nonce, which refuses every dialer.
                tracing::warn!("cannot draw a nonce: {e}");
                Vec::new()
            });
            Session::accept(cfg)
        };
        Ok((make, tls))
    }

    /// Serves LAN peers as [`Device::serve_lan`], without holding the store between sessions:
    /// it is opened (waiting up to `wait` for its lock) when a peer connects and closed when
    /// the last session ends, so that other processes (the CLI's other commands) can open it
    /// meanwhile. The store and this device's LAN credential are checked at once (the errors
    /// of [`Device::open`], and [`DeviceError::Auth`] before the first hub round); the future
    /// returned serves on `listener` until `shutdown` resolves. The credential presented is the
    /// one held now. No change observation (no [`Device`] stays open to observe).
    pub fn serve_lan_leased<F: std::future::Future<Output = ()>>(
        config: DeviceConfig,
        wait: Duration,
        listener: tokio::net::TcpListener,
        shutdown: F,
    ) -> Result<impl std::future::Future<Output = ()> + use<F>, DeviceError> {
        let device = Device::open_waiting(config.clone(), wait)?;
        let (make, tls) = device.with_node(Device::lan_sessions)?;
        drop(device);
        let nodes = net::Nodes::Leased(Arc::new(net::NodeLease::new(move || {
            let store = Store::open_existing_waiting(&config.path, wait)
                .map_err(|e| DeviceError::from(e).to_string())?;
            Device::node_of(&config, Arc::new(store)).map_err(|e| e.to_string())
        })));
        let extras = net::Extras {
            tls: Some(tls),
            health: None,
        };
        Ok(net::serve_nodes(
            listener,
            nodes,
            make,
            NetConfig::default(),
            extras,
            shutdown,
        ))
    }

    async fn round(
        &self,
        url: &str,
        session: Session,
        tls: Option<tokio_rustls::TlsConnector>,
        timeout: Duration,
    ) -> Result<SyncReport, DeviceError> {
        // Reports what the round wrote however it ends (returned, failed or dropped).
        let _report = ReportOnDrop(self.clone());
        // The transport's own idle bound stays as it is: `timeout` bounds the whole round.
        let cfg = NetConfig::default();
        let dialed = tokio::time::timeout(
            timeout,
            net::dial_tls(url, self.inner.node.clone(), session, cfg, tls),
        )
        .await;
        let out = match dialed {
            Err(_) => return Err(DeviceError::Timeout { after: timeout }),
            Ok(Err(NetError::Connect { url, reason })) => {
                return Err(DeviceError::Unreachable { url, reason });
            }
            Ok(Err(e @ NetError::Tls { .. })) => {
                // The transport's sentence says what to check (a plain ws:// hub, the pinned
                // certificate).
                return Err(DeviceError::Auth {
                    reason: e.to_string(),
                });
            }
            Ok(Err(e)) => return Err(internal(e)),
            Ok(Ok(out)) => out,
        };
        if let Some(reason) = &out.closed {
            return Err(closed_error(reason, url));
        }
        if let Some(e) = &out.error {
            return Err(DeviceError::Internal {
                reason: format!("applying the round: {e}"),
            });
        }
        Ok(SyncReport {
            peer: out.peer.map(|p| p.node),
            changed: unique(&out.changed),
            catalog_changed: out
                .changed
                .iter()
                .any(|i| i.as_str() == sellsync_service::CATALOG_ID),
            revoked: unique(&out.revoked),
            frames_sent: out.frames_sent,
            frames_received: out.frames_received,
            bytes_sent: out.bytes_sent,
            bytes_received: out.bytes_received,
        })
    }

    // ---- reads ----

    fn summaries(&self, kind: RecordKind) -> Result<Vec<RecordSummary>, DeviceError> {
        self.with_node(|n| {
            let mut out = Vec::new();
            for (id, stored) in n.records().map_err(|e| node_error(e, None))? {
                if stored != kind.as_str() {
                    continue;
                }
                if let Some(p) = n.project(&id).map_err(|e| node_error(e, Some(&id)))? {
                    out.push(summary(&p));
                }
            }
            Ok(out)
        })
    }

    /// Every record of `kind` held, projected (fields, tags, activities, conflicts), in id
    /// order: for front ends that show more than [`RecordSummary`] holds.
    pub fn projections(&self, kind: RecordKind) -> Result<Vec<Projection>, DeviceError> {
        self.with_node(|n| {
            let mut out = Vec::new();
            for (id, stored) in n.records().map_err(|e| node_error(e, None))? {
                if stored != kind.as_str() {
                    continue;
                }
                if let Some(p) = n.project(&id).map_err(|e| node_error(e, Some(&id)))? {
                    out.push(p);
                }
            }
            Ok(out)
        })
    }

    /// The deals held, in id order.
    pub fn deals(&self) -> Result<Vec<RecordSummary>, DeviceError> {
        self.summaries(RecordKind::Deal)
    }

    /// The contacts held, in id order.
    pub fn contacts(&self) -> Result<Vec<RecordSummary>, DeviceError> {
        self.summaries(RecordKind::Contact)
    }

    fn project(n: &mut Node, id: &RecordId) -> Result<Projection, DeviceError> {
        n.project(id)
            .map_err(|e| node_error(e, Some(id)))?
            .ok_or_else(|| DeviceError::NoSuchRecord { id: id.clone() })
    }

    /// One record as projected: fields, tags, notes, tasks and calls, open conflicts,
    /// notifications and audit trail.
    pub fn record(&self, id: &RecordId) -> Result<Projection, DeviceError> {
        self.with_node(|n| Device::project(n, id))
    }

    /// Every record with open conflicts, in id order.
    pub fn conflicts(&self) -> Result<Vec<RecordConflicts>, DeviceError> {
        self.with_node(|n| {
            let mut ids: Vec<RecordId> = n
                .store()
                .read()?
                .all_conflicts()?
                .into_iter()
                .map(|(id, _)| id)
                .collect();
            ids.sort();
            let mut out = Vec::new();
            for id in ids {
                let Some(p) = n.project(&id).map_err(|e| node_error(e, Some(&id)))? else {
                    continue;
                };
                if !p.conflicts.is_empty() {
                    let conflicts = with_bases(n, &id, p.conflicts)?;
                    out.push(RecordConflicts {
                        record: id,
                        kind: p.record.kind,
                        conflicts,
                    });
                }
            }
            Ok(out)
        })
    }

    /// Every record with open conflicts, each projected once (its fields, for its name; its
    /// conflicts, without their bases), in id order: what an inbox lists, at about half the
    /// cost of [`Device::conflicts`].
    pub fn conflicted_records(&self) -> Result<Vec<Projection>, DeviceError> {
        self.with_node(|n| {
            let ids: Vec<RecordId> = n
                .store()
                .read()?
                .all_conflicts()?
                .into_iter()
                .map(|(id, _)| id)
                .collect();
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                match n.project(&id).map_err(|e| node_error(e, Some(&id)))? {
                    Some(p) if !p.conflicts.is_empty() => out.push(p),
                    _ => {}
                }
            }
            Ok(out)
        })
    }

    /// The open conflicts of one record, with the base of each field conflict (empty when it
    /// has none).
    pub fn record_conflicts(&self, id: &RecordId) -> Result<Vec<OpenConflict>, DeviceError> {
        self.with_node(|n| {
            let p = Device::project(n, id)?;
            with_bases(n, id, p.conflicts)
        })
    }

    /// Notifications for this device's user (`unread`: only those not dismissed), oldest first.
    pub fn notifications(&self, unread: bool) -> Result<Vec<DeviceNotification>, DeviceError> {
        self.with_node(|n| {
            let list = n.store().read()?.notifications(&NotificationFilter {
                user: Some(n.user()),
                unread_only: unread,
                ..NotificationFilter::default()
            })?;
            Ok(list
                .into_iter()
                .map(|s| DeviceNotification {
                    id: s.id,
                    created_at_ms: s.created_at_ms,
                    read: s.read,
                    detail: serde_json::from_slice(&s.body).ok(),
                })
                .collect())
        })
    }

    /// Marks notification `id` read.
    pub fn dismiss(&self, id: u64) -> Result<(), DeviceError> {
        self.with_node(|n| {
            let mine = n.store().read()?.notifications(&NotificationFilter {
                user: Some(n.user()),
                ..NotificationFilter::default()
            })?;
            if !mine.iter().any(|s| s.id == id) {
                return Err(DeviceError::Invalid {
                    field: "notification".into(),
                    reason: format!("no notification {id} for this device's user"),
                });
            }
            n.store().write(|w| w.mark_notification_read(id))?;
            Ok(())
        })
    }

    /// The audit trail of a record, oldest first.
    pub fn audit(&self, id: &RecordId) -> Result<Vec<AuditEntry>, DeviceError> {
        self.with_node(|n| Ok(Device::project(n, id)?.audit))
    }

    /// The catalog the hub shared (stages, users, sources, loss reasons, custom fields); empty
    /// (`loaded` false) before the first hub round.
    pub fn catalog(&self) -> Result<Catalog, DeviceError> {
        self.with_node(|n| Ok(n.replica_ref().catalog().clone()))
    }

    /// Parses a person's text for a field of a `kind` record into its typed value, as the
    /// catalog defines it (e.g. `value` `"1200 EUR"`): for front ends that take text.
    pub fn parse_value(
        &self,
        kind: RecordKind,
        field: &str,
        input: &str,
    ) -> Result<(FieldKey, Value), DeviceError> {
        let key: FieldKey = field.parse().map_err(|reason| DeviceError::Invalid {
            field: field.to_owned(),
            reason,
        })?;
        let value = self.with_node(|n| {
            parse_input(n.replica_ref().catalog(), kind, None, &key, input)
                .map_err(DeviceError::from)
        })?;
        Ok((key, value))
    }

    /// Where the device stands with its hub.
    pub fn status(&self) -> Result<SyncStatus, DeviceError> {
        self.with_node(|n| {
            let read = n.store().read()?;
            let pending_changes = match &self.inner.hub {
                Some(hub) => pending(&read, hub)?,
                None => 0,
            };
            let last_hub_sync_ms = read
                .kv_get(LAST_HUB_SYNC_KEY)?
                .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
                .map(i64::from_le_bytes);
            let mut open_conflicts = 0;
            for (_, view) in read.all_conflicts()? {
                open_conflicts +=
                    serde_json::from_slice::<Vec<serde_json::Value>>(&view).map_or(0, |v| v.len());
            }
            drop(read);
            let crm_reach = n.crm_reach().map_err(|e| node_error(e, None))?;
            Ok(SyncStatus {
                pending_changes,
                last_hub_sync_ms,
                crm_reach,
                open_conflicts,
            })
        })
    }

    // ---- change observation ----

    /// A subscription to the records changed from now on, by a local edit, a sync round or a
    /// resolution made through this device (or any of its clones).
    pub fn subscribe(&self) -> ChangeStream {
        self.inner.changes.subscribe()
    }

    /// Calls `f` with the records changed by each edit, sync round or resolution from now on.
    /// `f` runs on the thread that made the change, after the device's lock is released (it
    /// may call the device). A panic in `f` is caught and logged; the device carries on.
    pub fn on_change(&self, f: ChangeCallback) {
        self.inner.changes.on_change(f);
    }

    // ---- edits ----

    fn create(
        &self,
        kind: RecordKind,
        id: Option<RecordId>,
        mut fields: Vec<(FieldKey, Value)>,
    ) -> Result<RecordId, DeviceError> {
        let id = match id {
            Some(id) => id,
            None => self.inner.ids.record(kind)?,
        };
        self.writing(|n| {
            if !fields.iter().any(|(k, _)| k.to_string() == "owner_id") {
                let owner: FieldKey = "owner_id".parse().map_err(internal)?;
                fields.push((owner, Value::Ref(n.user().0)));
            }
            n.create(kind, &id, fields, net::now_ms())
                .map_err(|e| node_error(e, Some(&id)))
        })?;
        Ok(id)
    }

    /// Creates a deal with its fields (`name` required; `owner_id` defaults to this device's
    /// user). Returns its new id, unique across devices and calls.
    pub fn create_deal(&self, fields: Vec<(FieldKey, Value)>) -> Result<RecordId, DeviceError> {
        self.create(RecordKind::Deal, None, fields)
    }

    /// [`Device::create_deal`] under an id the caller chose (e.g. one typed by a person).
    /// An id this device holds already is refused ([`DeviceError::Invalid`] on `id`).
    pub fn create_deal_with_id(
        &self,
        id: RecordId,
        fields: Vec<(FieldKey, Value)>,
    ) -> Result<RecordId, DeviceError> {
        self.create(RecordKind::Deal, Some(id), fields)
    }

    /// Creates a contact, as [`Device::create_deal`].
    pub fn create_contact(&self, fields: Vec<(FieldKey, Value)>) -> Result<RecordId, DeviceError> {
        self.create(RecordKind::Contact, None, fields)
    }

    fn apply(&self, id: &RecordId, message: &str, edits: &[Edit]) -> Result<(), DeviceError> {
        self.writing(|n| {
            n.apply(id, message, edits, net::now_ms())
                .map_err(|e| node_error(e, Some(id)))
        })
    }

    /// Sets fields of a record (`Value::Null` clears one), as one action: all or nothing.
    pub fn set(&self, id: &RecordId, fields: Vec<(FieldKey, Value)>) -> Result<(), DeviceError> {
        let edits: Vec<Edit> = fields.into_iter().map(|(k, v)| Edit::Set(k, v)).collect();
        self.apply(id, "set", &edits)
    }

    /// Adds a note; returns its id.
    pub fn note(&self, id: &RecordId, text: &str) -> Result<ActivityId, DeviceError> {
        let note = self.inner.ids.activity(ActivityKind::Note)?;
        self.apply(
            id,
            "note",
            &[Edit::AddNote {
                id: note.clone(),
                content: text.to_owned(),
            }],
        )?;
        Ok(note)
    }

    /// Adds a tag (nothing if present).
    pub fn tag(&self, id: &RecordId, tag: &str) -> Result<(), DeviceError> {
        self.apply(id, "tags", &[Edit::AddTag(tag.to_owned())])
    }

    /// Removes a tag (nothing if absent).
    pub fn untag(&self, id: &RecordId, tag: &str) -> Result<(), DeviceError> {
        self.apply(id, "tags", &[Edit::RemoveTag(tag.to_owned())])
    }

    /// Adds and removes tags, in the order given, as one action (all or nothing); returns the
    /// record's tags after it.
    pub fn change_tags(
        &self,
        id: &RecordId,
        changes: &[TagChange],
    ) -> Result<Vec<String>, DeviceError> {
        let edits: Vec<Edit> = changes
            .iter()
            .map(|c| match c {
                TagChange::Add(t) => Edit::AddTag(t.clone()),
                TagChange::Remove(t) => Edit::RemoveTag(t.clone()),
            })
            .collect();
        self.apply(id, "tags", &edits)?;
        Ok(self.record(id)?.record.tags.into_iter().collect())
    }

    /// Changes the text of an existing note.
    pub fn set_note_text(
        &self,
        id: &RecordId,
        note: &ActivityId,
        text: &str,
    ) -> Result<(), DeviceError> {
        self.apply(
            id,
            "note",
            &[Edit::SetNoteText {
                id: note.clone(),
                text: text.to_owned(),
            }],
        )
    }

    /// Sets fields of an existing task or call (`Value::Null` clears one), as one action.
    pub fn edit_activity(
        &self,
        id: &RecordId,
        activity: &ActivityId,
        fields: Vec<(FieldKey, Value)>,
    ) -> Result<(), DeviceError> {
        let edits: Vec<Edit> = fields
            .into_iter()
            .map(|(field, value)| Edit::SetActivity {
                id: activity.clone(),
                field,
                value,
            })
            .collect();
        self.apply(id, "activity", &edits)
    }

    /// Deletes a note, task or call of a record.
    pub fn delete_activity(&self, id: &RecordId, activity: &ActivityId) -> Result<(), DeviceError> {
        self.apply(
            id,
            "delete an activity",
            &[Edit::DeleteActivity(activity.clone())],
        )
    }

    fn activity(
        &self,
        id: &RecordId,
        kind: ActivityKind,
        fields: Vec<(FieldKey, Value)>,
    ) -> Result<ActivityId, DeviceError> {
        let a = self.inner.ids.activity(kind)?;
        self.apply(
            id,
            "activity",
            &[Edit::AddActivity {
                id: a.clone(),
                kind,
                fields,
            }],
        )?;
        Ok(a)
    }

    /// Adds a task with its fields (e.g. `content`, `due_date`); returns its id.
    pub fn task(
        &self,
        id: &RecordId,
        fields: Vec<(FieldKey, Value)>,
    ) -> Result<ActivityId, DeviceError> {
        self.activity(id, ActivityKind::Task, fields)
    }

    /// Logs a call with its fields; returns its id.
    pub fn call(
        &self,
        id: &RecordId,
        fields: Vec<(FieldKey, Value)>,
    ) -> Result<ActivityId, DeviceError> {
        self.activity(id, ActivityKind::Call, fields)
    }

    /// Deletes a record.
    pub fn delete(&self, id: &RecordId) -> Result<(), DeviceError> {
        self.apply(id, "delete", &[Edit::DeleteRecord])
    }

    // ---- resolve ----

    /// Settles the field conflict on `slot` of record `id` against its candidates as they are
    /// now (`Mine`, `Theirs`, `Pick(n)` counting from 1 as listed, or a new `Value`).
    pub fn resolve_field(
        &self,
        id: &RecordId,
        slot: &Slot,
        choice: Choice,
    ) -> Result<(), DeviceError> {
        self.resolve_field_seen(id, slot, None, choice)
    }

    /// [`Device::resolve_field`] against the candidates the person saw (their `op`s, from
    /// [`Device::conflicts`]): if the conflict changed since (a sync brought another value),
    /// nothing is written and [`DeviceError::Conflict`] says to look again.
    pub fn resolve_field_seen(
        &self,
        id: &RecordId,
        slot: &Slot,
        seen: Option<Vec<String>>,
        choice: Choice,
    ) -> Result<(), DeviceError> {
        let target = format!("{slot} of {id}");
        self.writing(|n| {
            let p = Device::project(n, id)?;
            let now: Option<Vec<String>> = p.conflicts.iter().find_map(|c| match c {
                Conflict::Field {
                    slot: s,
                    candidates,
                    ..
                } if s == slot => Some(candidates.iter().map(|c| c.op.clone()).collect()),
                _ => None,
            });
            let Some(now) = now else {
                return Err(DeviceError::NoConflict { target });
            };
            let seen = seen.unwrap_or(now);
            let mut why = None;
            let done = n.act(id, net::now_ms(), |rd, ctx| {
                rd.resolve_field(ctx, slot, &seen, choice).map_err(|e| {
                    why = Some(e);
                    NodeError::Refused(String::new())
                })
            });
            match (done, why) {
                (Ok(_), _) => Ok(()),
                (Err(_), Some(e)) => Err(resolve_error(e, &target)),
                (Err(e), None) => Err(node_error(e, Some(id))),
            }
        })
    }

    /// Settles the record conflict of `id` (deleted while others edited it): restore it with
    /// their edits, or confirm the delete.
    pub fn resolve_record(&self, id: &RecordId, choice: RecordChoice) -> Result<(), DeviceError> {
        let target = format!("record {id}");
        self.writing(|n| {
            let p = Device::project(n, id)?;
            let seen: Option<Vec<String>> = p.conflicts.iter().find_map(|c| match c {
                Conflict::Record {
                    deleted_by,
                    restored_by,
                    ..
                } => Some(
                    deleted_by
                        .iter()
                        .chain(restored_by)
                        .map(|c| c.op.clone())
                        .collect(),
                ),
                _ => None,
            });
            let Some(seen) = seen else {
                return Err(DeviceError::NoConflict { target });
            };
            let mut why = None;
            let done = n.act(id, net::now_ms(), |rd, ctx| {
                rd.resolve_record(ctx, &seen, choice).map_err(|e| {
                    why = Some(e);
                    NodeError::Refused(String::new())
                })
            });
            match (done, why) {
                (Ok(_), _) => Ok(()),
                (Err(_), Some(e)) => Err(resolve_error(e, &target)),
                (Err(e), None) => Err(node_error(e, Some(id))),
            }
        })
    }

    /// Discards this device's copy of a record under a record-level permission conflict (the
    /// hub no longer takes it from this device: access revoked, or it holds a change the hub
    /// refused, such as one relayed from a device revoked before it was received). The record
    /// goes back to what the hub last vouched for, and the next [`Device::sync_hub`] brings it
    /// up to date; a record the hub never sent is removed. What this device wrote in it since
    /// is dropped (the conflict lists it: copy it first). Returns whether a copy stays
    /// (`false`: removed). [`DeviceError::NoConflict`] when the record has no such conflict.
    pub fn discard_copy(&self, id: &RecordId) -> Result<bool, DeviceError> {
        let target = format!("record {id}");
        let kept = self.writing(|n| {
            let p = Device::project(n, id)?;
            if !p
                .conflicts
                .iter()
                .any(|c| matches!(c, Conflict::Permission { slot: None, .. }))
            {
                return Err(DeviceError::NoConflict { target });
            }
            n.discard_local(id, net::now_ms())
                .map_err(|e| node_error(e, Some(id)))
        })?;
        if !kept {
            // A removed record leaves no feed entry to report it by.
            self.inner.changes.publish(std::slice::from_ref(id));
        }
        Ok(kept)
    }

    // ---- what the CRM refused ----

    /// Fixes a value the CRM refused (a validation or permission conflict on `slot`, or a
    /// refused task or call whose field `slot` is) by writing `value`; the bridge sends it
    /// with its next round. [`DeviceError::NoConflict`] when nothing was refused there.
    pub fn fix_refused_value(
        &self,
        id: &RecordId,
        slot: &Slot,
        value: Value,
    ) -> Result<(), DeviceError> {
        let p = self.record(id)?;
        let refused = p.conflicts.iter().any(|c| match c {
            Conflict::Validation { slot: s, .. } | Conflict::Permission { slot: Some(s), .. } => {
                s == slot
            }
            Conflict::Refused {
                activity: Some(a), ..
            } => slot.activity.as_ref() == Some(a),
            _ => false,
        });
        if !refused {
            return Err(DeviceError::NoConflict {
                target: format!("{slot} of {id}"),
            });
        }
        let edit = match &slot.activity {
            Some(a) => Edit::SetActivity {
                id: a.clone(),
                field: slot.field.clone(),
                value,
            },
            None => Edit::Set(slot.field.clone(), value),
        };
        self.apply(id, "fix a refused value", &[edit])
    }

    /// Whether the CRM refused note, task or call `activity` of the record projected as `p`.
    fn refused_activity(p: &Projection, activity: &ActivityId) -> bool {
        p.conflicts
            .iter()
            .any(|c| matches!(c, Conflict::Refused { activity: Some(r), .. } if r == activity))
    }

    /// Fixes the text of a note the CRM refused; the bridge sends it with its next round.
    /// [`DeviceError::NoConflict`] when the CRM did not refuse that note.
    pub fn fix_refused_note(
        &self,
        id: &RecordId,
        note: &ActivityId,
        text: &str,
    ) -> Result<(), DeviceError> {
        if !Device::refused_activity(&self.record(id)?, note) {
            return Err(DeviceError::NoConflict {
                target: format!("{note} of {id}"),
            });
        }
        self.apply(
            id,
            "fix a refused note",
            &[Edit::SetNoteText {
                id: note.clone(),
                text: text.to_owned(),
            }],
        )
    }

    /// Whether the CRM refused note, task or call `activity` of record `id`.
    pub fn is_refused_activity(
        &self,
        id: &RecordId,
        activity: &ActivityId,
    ) -> Result<bool, DeviceError> {
        Ok(Device::refused_activity(&self.record(id)?, activity))
    }

    /// Sends what the CRM refused (the record, a field, or a note, task or call) again as it
    /// is, with the bridge's next round. [`DeviceError::NoConflict`] when nothing was refused
    /// there.
    pub fn retry_refused(&self, id: &RecordId, target: &RefusalTarget) -> Result<(), DeviceError> {
        let name = match target {
            RefusalTarget::Record => format!("record {id}"),
            RefusalTarget::Field(slot) => format!("{slot} of {id}"),
            RefusalTarget::Activity(a) => format!("{a} of {id}"),
        };
        self.writing(|n| {
            Device::project(n, id)?;
            let mut why = None;
            let done = n.act(id, net::now_ms(), |rd, ctx| {
                rd.retry_refused(ctx, target).map_err(|e| {
                    why = Some(e);
                    NodeError::Refused(String::new())
                })
            });
            match (done, why) {
                (Ok(_), _) => Ok(()),
                (Err(_), Some(e)) => Err(resolve_error(e, &name)),
                (Err(e), None) => Err(node_error(e, Some(id))),
            }
        })
    }
}

/// One change of [`Device::change_tags`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagChange {
    /// Add the tag (nothing if present).
    Add(String),
    /// Remove the tag (nothing if absent).
    Remove(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_inside_becomes_an_internal_error() {
        let out: Result<(), DeviceError> = guard(|| panic!("automerge failed"));
        match out {
            Err(DeviceError::Internal { reason }) => assert!(reason.contains("automerge failed")),
            other => panic!("expected Internal, got {other:?}"),
        }
        assert!(matches!(guard(|| Ok(1)), Ok(1)));
    }

    #[test]
    fn ids_of_two_devices_and_of_one_device_differ() {
        let (a, b) = (Ids::new(), Ids::new());
        let ra = a.record(RecordKind::Deal).unwrap();
        let rb = b.record(RecordKind::Deal).unwrap();
        assert_ne!(ra, rb);
        assert_ne!(ra, a.record(RecordKind::Deal).unwrap());
        assert!(ra.as_str().starts_with("deal-"));
        let n = a.activity(ActivityKind::Note).unwrap();
        assert!(n.as_str().starts_with("note-"));
    }

    #[test]
    fn hub_urls_are_checked_without_the_hub() {
        for ok in [
            "ws://10.0.0.5:7070/",
            "wss://hub.example/",
            "ws://[::1]:7070/",
        ] {
            assert!(check_hub_url(ok).is_ok(), "{ok}");
        }
        for bad in ["http://h/", "ws://", "ws://h:99999/", "ws://h st/"] {
            assert!(
                matches!(
                    check_hub_url(bad),
                    Err(DeviceError::BadEnrolment {
                        what: "hub_url",
                        ..
                    })
                ),
                "{bad}"
            );
        }
    }
}
