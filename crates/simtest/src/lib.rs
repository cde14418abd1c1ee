//! The whole-system seeded simulation (see `docs/testing.md`, "Whole-system simulation").
//!
//! One process runs the Zendesk simulator (its router called in process), a hub node with its
//! bridge, and 2 to 6 devices of users in two teams plus an admin, on redb stores in a temporary
//! directory. A [`Scenario`] is a seed and a list of [`Step`]s drawn from it; [`run`] executes
//! the steps in order (device actions, Zendesk web-app actions, syncs with the hub and over the
//! LAN possibly cut after any frame, bridge rounds possibly cut at any request, faults, crashes,
//! replaced and revoked devices, owner moves, hub restarts), then stops the faults, syncs
//! everyone until quiet and checks the system invariants ([`check`]).
//!
//! Steps name devices and records by index and pick values by number; each is resolved against
//! the state of the run when it executes, so that any sub-list of a scenario's steps is a valid
//! scenario too (which is what [`shrink`] relies on).
//!
//! Time: devices and sessions run on a simulated clock (`T0` plus one second a step). The
//! simulator stamps `updated_at` and the bridge stamps its status from the wall clock, and
//! tokens, nonces and keys are random; none of these changes which steps run or what they
//! decide, so a seed replays the same run.

pub mod crm;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sellsync_bridge::mapping;
use sellsync_bridge::run::Limits;
use sellsync_bridge::zendesk::{HttpRequest, Method};
use sellsync_hub_bridge::{Bridge, BridgeConfig, PushReport};
use sellsync_model::{
    ActivityKind, AssumeLive, Choice, Chosen, Conflict, Edit, FieldKey, Money, ProjectCtx,
    Projection, PushAction, RecordChoice, RecordDoc, RecordId, RecordKind, Slot, UserId, Value,
};
use sellsync_service::credential::{self, Issuer};
use sellsync_service::net::{self, SharedNode};
use sellsync_service::{Acl, Node, NodeError, token};
use sellsync_sim::{Fault, FaultConfig, FaultRule, Sim, SimConfig, demo_data, token_for};
use sellsync_store::{NodeIdentity, NotificationFilter, Role as StoreRole, Store, StoreRead};
use sellsync_sync::{AcceptConfig, DialConfig, Effect, Effects, Event, Role, Session};
use serde_json::{Value as Json, json};

use crate::crm::{ConnFaults, CrmControl, InProcessCrm};

/// The simulated clock's start (2026-11-18), before any wall-clock time the simulator stamps.
const T0: i64 = 1_795_000_000_000;
/// The simulator's admin user (the bridge's token user).
const ADMIN: u64 = 2;
/// Bridge rounds and sync passes at most while settling.
const SETTLE_ROUNDS: usize = 12;
/// Frames one session may exchange at most.
const MAX_FLIGHTS: usize = 60;
/// Records most edits pick from (the first ones in id order).
const HOT_RECORDS: usize = 3;
/// Tags devices and web users draw from.
const TAGS: &[&str] = &["hot-lead", "fair", "renewal", "vip"];

/// One step of a scenario. Indices (`dev`, `pick`, ...) are taken modulo what exists when the
/// step runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A device creates a deal or a contact owned by its user.
    Create { dev: u8, contact: bool },
    /// A device edits a record it holds.
    Edit {
        dev: u8,
        pick: u32,
        what: u8,
        arg: u32,
    },
    /// A device resolves a conflict it holds.
    Resolve { dev: u8, pick: u32, choice: u8 },
    /// A user of the Zendesk web app changes a record (as that user, over the API).
    Web {
        user: u8,
        pick: u32,
        what: u8,
        arg: u32,
    },
    /// A device syncs with the hub; the connection may be cut after `cut` frames.
    HubSync { dev: u8, cut: Option<u8> },
    /// Two devices sync over the LAN; the connection may be cut after `cut` frames.
    Lan { a: u8, b: u8, cut: Option<u8> },
    /// A bridge round (pull, push); the hub's process may be cut at request `cut`.
    BridgeRound { cut: Option<u8> },
    /// Simulator faults on the next requests: 429 bursts or 5xx answers.
    SimFault { kind: u8, seed: u32 },
    /// The next write is dropped before it reaches Zendesk, or after it committed.
    ConnFault { after: bool },
    /// A device's process dies: its in-memory objects go, its store is opened again.
    CrashDevice { dev: u8 },
    /// A device is replaced: a new store and token for the same user and device name.
    ReplaceDevice { dev: u8 },
    /// A device's tokens are revoked on the hub.
    RevokeDevice { dev: u8 },
    /// The hub's process restarts (node and bridge dropped, store opened again).
    RestartHub,
    /// A hostile device writes a forged change straight into its own store (no edit API): a
    /// value claiming another user, an audit entry claiming another's decision, an audit entry
    /// deleted, or a catalog write. Nobody else may ever hold it.
    Forge { dev: u8, pick: u32, what: u8 },
}

/// A seeded scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The seed it was drawn from.
    pub seed: u64,
    /// The user of each device (index = device number).
    pub device_users: Vec<u8>,
    /// The steps, in order.
    pub steps: Vec<Step>,
}

/// The users of the demo data set: the admin, then two reps of team North, two of South.
/// `user` indices in steps and `device_users` index this list.
#[derive(Debug, Clone)]
struct Users {
    /// Simulator user ids; `[0]` is the admin.
    ids: Vec<u64>,
    /// Team of each rep (by user id).
    teams: BTreeMap<u64, u64>,
}

impl Scenario {
    /// Draws a scenario of `steps` steps from `seed`.
    pub fn generate(seed: u64, steps: usize) -> Scenario {
        let mut rng = StdRng::seed_from_u64(seed);
        let devices = rng.random_range(2..=6usize);
        // The first two devices are reps of different teams; the rest anyone (0 = the admin).
        let mut device_users = vec![rng.random_range(1..=2u8), rng.random_range(3..=4u8)];
        while device_users.len() < devices {
            device_users.push(rng.random_range(0..=4u8));
        }
        let n = devices as u8;
        let cut = |rng: &mut StdRng| rng.random_bool(0.3).then(|| rng.random_range(0..8u8));
        // Most edits, on devices and in the web app, write one of the fields both sides write
        // (name, value, close date or email: the lww, manual and notify tiers), so that writes meet.
        let contested = |rng: &mut StdRng| {
            if rng.random_bool(0.6) {
                [0u8, 1, 5][rng.random_range(0..3)]
            } else {
                rng.random()
            }
        };
        let mut out = Vec::with_capacity(steps);
        for _ in 0..steps {
            let dev = rng.random_range(0..n);
            let w = rng.random_range(0..100u32);
            let step = match w {
                0..=7 => Step::Create {
                    dev,
                    contact: rng.random_bool(0.3),
                },
                8..=33 => Step::Edit {
                    dev,
                    pick: rng.random(),
                    what: contested(&mut rng),
                    arg: rng.random(),
                },
                34..=39 => Step::Resolve {
                    dev,
                    pick: rng.random(),
                    choice: rng.random(),
                },
                40..=52 => Step::Web {
                    user: rng.random_range(0..25),
                    pick: rng.random(),
                    what: contested(&mut rng),
                    arg: rng.random(),
                },
                53..=66 => Step::HubSync {
                    dev,
                    cut: cut(&mut rng),
                },
                67..=74 => Step::Lan {
                    a: dev,
                    b: rng.random_range(0..n),
                    cut: cut(&mut rng),
                },
                75..=85 => Step::BridgeRound {
                    cut: rng.random_bool(0.25).then(|| rng.random_range(0..40u8)),
                },
                86..=88 => Step::SimFault {
                    kind: rng.random(),
                    seed: rng.random(),
                },
                89..=90 => Step::ConnFault {
                    after: rng.random(),
                },
                91..=93 => Step::CrashDevice { dev },
                94 => Step::ReplaceDevice { dev },
                95 => Step::RevokeDevice { dev },
                96 => Step::Forge {
                    dev,
                    pick: rng.random(),
                    what: rng.random(),
                },
                _ => Step::RestartHub,
            };
            out.push(step);
        }
        Scenario {
            seed,
            device_users,
            steps: out,
        }
    }
}

/// A device of the run.
struct Device {
    name: String,
    user: u64,
    path: PathBuf,
    /// `None` while crashed (reopened at its next step).
    node: Option<Node>,
    generation: u32,
    /// Its tokens were revoked: it can no longer sync with the hub until replaced.
    revoked: bool,
    /// Records this device's store holds a forgery of (its copy stays apart: every message
    /// about it is refused whole); `None` in the set stands for the catalog, whose forgery
    /// changes how this device reads every record.
    forged: BTreeSet<Option<RecordId>>,
    /// Records whose copy its user discarded (see [`World::discard_refused`]).
    discarded: BTreeSet<RecordId>,
}

/// The hub's process: its node and bridge.
struct Hub {
    node: SharedNode,
    bridge: Bridge<InProcessCrm>,
}

/// Everything of one run.
struct World {
    rt: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
    sim: Sim,
    router: axum::Router,
    control: Arc<CrmControl>,
    users: Users,
    acl: Acl,
    acl_toml: String,
    hub: Option<Hub>,
    devices: Vec<Device>,
    now: i64,
    /// Unique markers in created names and texts (to find duplicates in Zendesk).
    marker: u64,
    trace: Vec<String>,
    /// The last settling push (what it left waiting or gave up).
    last_push: Option<PushReport>,
    /// Every forged change: by which device, in which document.
    forgeries: Vec<(usize, u32, RecordId, automerge::ChangeHash)>,
    /// Every edit, create and resolution a device was told succeeded (see `no_lost_update`).
    acknowledged: Vec<Acknowledged>,
    /// Devices (by name) that were revoked or replaced at some point: changes they made may
    /// stay refused (see [`World::discard_refused`]).
    retired: BTreeSet<String>,
}

/// A device action that succeeded, and the changes it made.
#[derive(Debug, Clone)]
struct Acknowledged {
    device: usize,
    generation: u32,
    record: RecordId,
    what: String,
    changes: Vec<automerge::ChangeHash>,
}

fn lock(node: &SharedNode) -> std::sync::MutexGuard<'_, Node> {
    node.lock().unwrap_or_else(PoisonError::into_inner)
}

fn key(s: &str) -> FieldKey {
    FieldKey::std(s)
}

/// The index `pick` names among `len` things: mostly one of the first few (in id order, so
/// that devices and web users often touch the same records and their writes meet), else any.
fn hot_pick(pick: u32, len: usize) -> usize {
    let pick = pick as usize;
    if pick % 10 < 7 {
        (pick / 10) % len.min(HOT_RECORDS)
    } else {
        pick % len
    }
}

/// What a run found: the invariants each violated, with details.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The seed.
    pub seed: u64,
    /// Each violation: `invariant: detail`.
    pub violations: Vec<String>,
    /// The executed steps with what each did.
    pub trace: Vec<String>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "seed {} failed:", self.seed)?;
        for v in self.violations.iter().take(12) {
            writeln!(f, "  {v}")?;
        }
        if self.violations.len() > 12 {
            writeln!(f, "  ... {} more", self.violations.len() - 12)?;
        }
        writeln!(f, "trace ({} steps):", self.trace.len())?;
        let skip = self.trace.len().saturating_sub(60);
        if skip > 0 {
            writeln!(f, "  ... {skip} earlier steps")?;
        }
        for t in &self.trace[skip..] {
            writeln!(f, "  {t}")?;
        }
        Ok(())
    }
}

/// Panics seen in any thread since the hook was installed (a bridge task panics on a blocking
/// thread, where `catch_unwind` on the run does not see it).
static PANICS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn count_panics() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            previous(info);
        }));
    });
}

/// Runs `scenario` and checks the invariants; returns the trace of a passing run. A panic
/// anywhere (product code included, any thread) is a failure of the "no panic" invariant.
pub fn run(scenario: &Scenario) -> Result<Vec<String>, Failure> {
    let trace = Arc::new(Mutex::new(Vec::<String>::new()));
    let shared = trace.clone();
    count_panics();
    let panics_before = PANICS.load(std::sync::atomic::Ordering::SeqCst);
    let scenario_copy = scenario.clone();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        run_inner(&scenario_copy, &shared)
    }));
    let trace = trace.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let panicked = PANICS.load(std::sync::atomic::Ordering::SeqCst) - panics_before;
    let violations = match outcome {
        Ok(Ok(())) if panicked == 0 => return Ok(trace),
        Ok(Ok(())) => vec![format!("no panic: {panicked} panics in other threads")],
        Ok(Err(mut v)) => {
            if panicked > 0 {
                v.insert(0, format!("no panic: {panicked} panics in other threads"));
            }
            v
        }
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "a panic".into());
            vec![format!("no panic: {msg}")]
        }
    };
    Err(Failure {
        seed: scenario.seed,
        violations,
        trace,
    })
}

fn run_inner(scenario: &Scenario, trace: &Arc<Mutex<Vec<String>>>) -> Result<(), Vec<String>> {
    let mut w = World::new(scenario).map_err(|e| vec![format!("setup: {e}")])?;
    for (i, step) in scenario.steps.iter().enumerate() {
        w.now += 1000;
        let what = w.step(step);
        let line = format!("{i}: {step:?} -> {what}");
        w.trace.push(line.clone());
        trace
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(line);
    }
    let settled = w.settle();
    trace
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(format!("settle: {settled}"));
    let violations = w.check();
    if let Some(line) = w.trace.last() {
        trace
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(line.clone());
    }
    if violations.is_empty() {
        Ok(())
    } else {
        Err(violations)
    }
}

impl World {
    fn new(scenario: &Scenario) -> Result<World, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .map_err(|e| e.to_string())?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let sim = Sim::new(
            demo_data(),
            SimConfig {
                rate_limit_per_hour: 0,
                ..SimConfig::default()
            },
        );
        let router = sellsync_sim::app(sim.clone());
        let control = Arc::new(CrmControl::default());
        let mut w = World {
            rt,
            dir,
            sim,
            router,
            control,
            users: Users {
                ids: Vec::new(),
                teams: BTreeMap::new(),
            },
            acl: Acl::default(),
            acl_toml: String::new(),
            hub: None,
            devices: Vec::new(),
            now: T0,
            marker: 0,
            trace: Vec::new(),
            last_push: None,
            forgeries: Vec::new(),
            acknowledged: Vec::new(),
            retired: BTreeSet::new(),
        };
        w.users = w.read_users()?;
        w.acl_toml = w.users.acl_toml();
        w.acl = Acl::from_toml(&w.acl_toml).map_err(|e| e.to_string())?;
        let store = Arc::new(Store::open(w.hub_path()).map_err(|e| e.to_string())?);
        Node::init(
            &store,
            &NodeIdentity {
                device_id: "hub".parse().map_err(|_| "hub id")?,
                user_id: UserId(0),
                role: StoreRole::Hub,
                hub_url: None,
                hub_token: None,
            },
        )
        .map_err(|e| e.to_string())?;
        drop(store);
        w.open_hub()?;
        let hub = w.hub.as_ref().ok_or("no hub")?;
        w.rt.block_on(hub.bridge.import(&|_| {}))
            .map_err(|e| format!("import: {e}"))?;
        for (i, u) in scenario.device_users.iter().enumerate() {
            let user = w.users.ids[usize::from(*u) % w.users.ids.len()];
            let name = format!("dev{i}-u{user}");
            let path = w.dir.path().join(format!("{name}-0.redb"));
            w.devices.push(Device {
                name,
                user,
                path,
                node: None,
                generation: 0,
                revoked: false,
                forged: BTreeSet::new(),
                discarded: BTreeSet::new(),
            });
            w.enroll(i)?;
            // Every device starts from one whole sync with the hub (its records and its grant).
            let first = w.hub_sync(i, None)?;
            w.trace
                .push(format!("setup: device {i} user {user}: {first}"));
        }
        Ok(w)
    }

    fn hub_path(&self) -> PathBuf {
        self.dir.path().join("hub.redb")
    }

    /// The demo data's users and teams, as the simulator lists them.
    fn read_users(&self) -> Result<Users, String> {
        let (status, body) = self.web(ADMIN, Method::Get, "/v2/users?per_page=100", None);
        if status != 200 {
            return Err(format!("list users: {status}"));
        }
        let mut ids = vec![ADMIN];
        let mut teams = BTreeMap::new();
        let mut names: BTreeMap<String, u64> = BTreeMap::new();
        for item in body["items"].as_array().into_iter().flatten() {
            let u = &item["data"];
            let (Some(id), Some(team)) = (u["id"].as_u64(), u["team_name"].as_str()) else {
                continue;
            };
            if id == ADMIN || u["role"] != "user" {
                continue;
            }
            let next = names.len() as u64 + 1;
            let t = *names.entry(team.to_owned()).or_insert(next);
            ids.push(id);
            teams.insert(id, t);
        }
        if ids.len() != 5 || names.len() != 2 {
            return Err(format!("expected 4 reps in 2 teams, got {ids:?} {names:?}"));
        }
        Ok(Users { ids, teams })
    }

    /// Calls the simulator as user `user` (the web app), without connection faults.
    fn web(&self, user: u64, method: Method, path_query: &str, body: Option<Json>) -> (u16, Json) {
        let (path, query) = match path_query.split_once('?') {
            Some((p, q)) => (
                p.to_owned(),
                q.split('&')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
            ),
            None => (path_query.to_owned(), Vec::new()),
        };
        let h = HttpRequest {
            method,
            path,
            query,
            headers: Vec::new(),
            body: body.map(|b| json!({ "data": b }).to_string().into_bytes()),
        };
        match self
            .rt
            .block_on(crm::send(&self.router, &token_for(user), &h))
        {
            Ok(r) => (
                r.status,
                serde_json::from_slice(&r.body).unwrap_or(Json::Null),
            ),
            Err(e) => (0, Json::String(e)),
        }
    }

    fn open_hub(&mut self) -> Result<(), String> {
        let store = Arc::new(Store::open(self.hub_path()).map_err(|e| e.to_string())?);
        let mut node =
            Node::open(store.clone(), Some(self.acl.clone())).map_err(|e| e.to_string())?;
        let issuer = Issuer::load(
            &store,
            node.id().clone(),
            self.acl_toml.clone(),
            credential::DEFAULT_CREDENTIAL_TTL_MS,
        )
        .map_err(|e| e.to_string())?;
        node.replica().set_issuer(Some(issuer));
        let node: SharedNode = Arc::new(Mutex::new(node));
        let crm = InProcessCrm::new(self.router.clone(), &token_for(ADMIN), self.control.clone());
        let config = BridgeConfig {
            crm_url: "http://simulator.in-process".into(),
            limits: Limits {
                base_ms: 1,
                cap_ms: 20,
                ..Limits::default()
            },
            // The settle phase stands for a quiet time longer than the delete sweep's period
            // (15 minutes by default): the bridge sweeps at every pull here.
            delete_sweep_every: std::time::Duration::ZERO,
            ..BridgeConfig::default()
        };
        let bridge = Bridge::new(crm, node.clone(), config);
        self.hub = Some(Hub { node, bridge });
        Ok(())
    }

    fn hub_node(&self) -> SharedNode {
        // The hub is open between steps: only `RestartHub` closes it, and opens it again.
        self.hub
            .as_ref()
            .map(|h| h.node.clone())
            .expect("the hub is open between steps")
    }

    /// Gives device `i` a fresh store and a new token (its old tokens revoked).
    fn enroll(&mut self, i: usize) -> Result<(), String> {
        let hub = self.hub_node();
        let d = &mut self.devices[i];
        let dev: sellsync_model::DeviceId = d.name.parse().map_err(|_| "device id")?;
        let hub_id = lock(&hub).id().clone();
        let issued = lock(&hub)
            .store()
            .write(|w| {
                w.revoke_device_tokens(&dev, self.now)?;
                w.issue_token(UserId(d.user), &dev, self.now, None)
            })
            .map_err(|e| e.to_string())?;
        let full = token::format(&hub_id, UserId(d.user), &dev, &issued.token);
        if d.generation > 0 {
            self.retired.insert(d.name.clone());
        }
        d.node = None;
        d.generation += 1;
        d.path = self
            .dir
            .path()
            .join(format!("{}-{}.redb", d.name, d.generation));
        let store = Arc::new(Store::open(&d.path).map_err(|e| e.to_string())?);
        Node::init(
            &store,
            &NodeIdentity {
                device_id: dev,
                user_id: UserId(d.user),
                role: StoreRole::Device,
                hub_url: None,
                hub_token: Some(full),
            },
        )
        .map_err(|e| e.to_string())?;
        d.node = Some(Node::open(store, None).map_err(|e| e.to_string())?);
        d.revoked = false;
        d.forged.clear();
        d.discarded.clear();
        Ok(())
    }

    /// Device `i`'s node, reopened from its store if it crashed.
    fn device(&mut self, i: usize) -> Result<&mut Node, String> {
        let d = &mut self.devices[i];
        if d.node.is_none() {
            let store = Arc::new(Store::open(&d.path).map_err(|e| format!("reopen: {e}"))?);
            let mut node = Node::open(store, None).map_err(|e| format!("reopen: {e}"))?;
            // What a device process does when it starts: load its grant, if it has one.
            credential::enable_peer_auth(&mut node).map_err(|e| format!("grant: {e}"))?;
            d.node = Some(node);
        }
        d.node.as_mut().ok_or_else(|| "no node".into())
    }

    fn next_marker(&mut self) -> u64 {
        self.marker += 1;
        self.marker
    }

    fn step(&mut self, step: &Step) -> String {
        let n = self.devices.len();
        let r = match *step {
            Step::Create { dev, contact } => self.create(usize::from(dev) % n, contact),
            Step::Edit {
                dev,
                pick,
                what,
                arg,
            } => self.edit(usize::from(dev) % n, pick, what, arg),
            Step::Resolve { dev, pick, choice } => {
                // The first device from `dev` on that shows a conflict resolves one.
                let from = usize::from(dev) % n;
                let mut out = Ok("no conflict".to_owned());
                for k in 0..n {
                    let i = (from + k) % n;
                    out = self
                        .resolve(i, pick, choice)
                        .map(|r| format!("device {i}: {r}"));
                    if !matches!(&out, Ok(r) if r.ends_with("no conflict")) {
                        break;
                    }
                }
                out
            }
            Step::Web {
                user,
                pick,
                what,
                arg,
            } => self.web_action(user, pick, what, arg),
            Step::HubSync { dev, cut } => self.hub_sync(usize::from(dev) % n, cut),
            Step::Lan { a, b, cut } => self.lan(usize::from(a) % n, usize::from(b) % n, cut),
            Step::BridgeRound { cut } => self.bridge_round(cut),
            Step::SimFault { kind, seed } => self.sim_fault(kind, seed),
            Step::ConnFault { after } => {
                self.control.set(ConnFaults {
                    drop_before_writes: u32::from(!after),
                    drop_after_writes: u32::from(after),
                    cut_after: None,
                });
                Ok("armed".into())
            }
            Step::CrashDevice { dev } => {
                self.devices[usize::from(dev) % n].node = None;
                Ok("crashed".into())
            }
            Step::ReplaceDevice { dev } => self
                .enroll(usize::from(dev) % n)
                .map(|_| "new store".into()),
            Step::RevokeDevice { dev } => self.revoke(usize::from(dev) % n),
            Step::RestartHub => {
                self.hub = None;
                self.open_hub().map(|_| "restarted".into())
            }
            Step::Forge { dev, pick, what } => self.forge(usize::from(dev) % n, pick, what),
        };
        r.unwrap_or_else(|e| format!("error: {e}"))
    }

    /// The heads of device `i`'s copy of `id` (empty when it holds none).
    fn device_heads(&mut self, i: usize, id: &RecordId) -> Vec<automerge::ChangeHash> {
        self.device(i)
            .ok()
            .and_then(|n| {
                n.replica()
                    .docs()
                    .with_doc(id, |d| d.get_heads())
                    .ok()
                    .flatten()
            })
            .unwrap_or_default()
    }

    /// Records that device `i` was told `what` succeeded on `id`: the changes since `before`.
    fn acknowledge(
        &mut self,
        i: usize,
        id: &RecordId,
        before: &[automerge::ChangeHash],
        what: String,
    ) {
        let changes: Vec<automerge::ChangeHash> = self
            .device(i)
            .ok()
            .and_then(|n| {
                n.replica()
                    .docs()
                    .with_doc(id, |d| {
                        d.get_changes(before).iter().map(|c| c.hash()).collect()
                    })
                    .ok()
                    .flatten()
            })
            .unwrap_or_default();
        if !changes.is_empty() {
            let generation = self.devices[i].generation;
            self.acknowledged.push(Acknowledged {
                device: i,
                generation,
                record: id.clone(),
                what,
                changes,
            });
        }
    }

    /// Device `i` forges a change in a record it holds (or in the catalog), bypassing the edit
    /// API, as a rep with a modified app would.
    fn forge(&mut self, i: usize, pick: u32, what: u8) -> Result<String, String> {
        use automerge::transaction::Transactable;
        use automerge::{ObjType, ROOT, ReadDoc};
        let now = self.now;
        let admin = self.users.ids[0];
        let held = self.held(i)?;
        let (id, kind) = match what % 4 {
            3 => (
                sellsync_service::CATALOG_ID.parse().map_err(|_| "id")?,
                "catalog".to_owned(),
            ),
            _ if held.is_empty() => return Ok("nothing to forge".into()),
            _ => {
                let (id, kind, _) = &held[hot_pick(pick, held.len())];
                (id.clone(), kind.clone())
            }
        };
        let root_map = |d: &automerge::Automerge, key: &str| match d.get(ROOT, key) {
            Ok(Some((automerge::Value::Object(ObjType::Map), obj))) => Some(obj),
            _ => None,
        };
        let node = self.device(i)?;
        let mut forged: Option<(String, automerge::ChangeHash)> = None;
        node.replica()
            .docs()
            .with_doc_mut(&id, &kind, |d| {
                let before = d.get_heads();
                let (fields, audit) = (root_map(d, "fields"), root_map(d, "audit"));
                let first_entry = audit
                    .as_ref()
                    .and_then(|a| d.keys(a).next().map(|k| k.to_string()));
                let mut tx = d.transaction();
                let what_done = match what % 4 {
                    0 => fields.map(|fields| {
                        let reg = json!(["Forged by a modified app", now, admin, "admin-web"]);
                        let _ = tx.put(&fields, "name", reg.to_string());
                        "a name claiming the admin"
                    }),
                    1 | 2 => audit.map(|audit| match &first_entry {
                        Some(first) if what % 4 == 2 => {
                            let _ = tx.delete(&audit, first.as_str());
                            "an audit entry deleted"
                        }
                        _ => {
                            let entry = json!({
                                "id": "forged", "policy": "manual", "candidates": [],
                                "chosen": {"value": {"text": "x"}},
                                "by": admin, "device": "admin-web", "at": now,
                            });
                            let _ = tx.put(&audit, "forged", entry.to_string());
                            "an audit entry claiming the admin"
                        }
                    }),
                    _ => Some({
                        let _ = tx.put(ROOT, "forged", "a catalog write");
                        "a catalog write"
                    }),
                };
                tx.commit();
                if let (Some(done), [hash]) = (what_done, d.get_changes(&before).as_slice()) {
                    forged = Some((done.to_owned(), hash.hash()));
                }
            })
            .map_err(|e| e.to_string())?;
        let Some((done, hash)) = forged else {
            return Ok(format!("nothing to forge in {id}"));
        };
        let in_catalog = id.as_str() == sellsync_service::CATALOG_ID;
        self.devices[i]
            .forged
            .insert((!in_catalog).then(|| id.clone()));
        let generation = self.devices[i].generation;
        self.forgeries.push((i, generation, id.clone(), hash));
        Ok(format!("forged {done} in {id}"))
    }

    fn create(&mut self, i: usize, contact: bool) -> Result<String, String> {
        let m = self.next_marker();
        let user = self.devices[i].user;
        let node = self.device(i)?;
        let stage = node.replica_ref().catalog().stages.keys().next().copied();
        let (kind, id, fields) = if contact {
            (
                RecordKind::Contact,
                format!("c-new-{m}"),
                vec![
                    (key("name"), Value::Text(format!("Org sim#{m}"))),
                    (key("is_organization"), Value::Bool(true)),
                    (key("owner_id"), Value::Ref(user)),
                ],
            )
        } else {
            let mut f = vec![
                (key("name"), Value::Text(format!("Deal sim#{m}"))),
                (
                    key("value"),
                    Value::Money(Money::from_cents(100_000 + i64::try_from(m).unwrap_or(0))),
                ),
                (key("currency"), Value::Text("USD".into())),
                (key("owner_id"), Value::Ref(user)),
            ];
            if let Some(s) = stage {
                f.push((key("stage_id"), Value::Ref(s)));
            }
            (RecordKind::Deal, format!("d-new-{m}"), f)
        };
        let id: RecordId = id.parse().map_err(|_| "record id")?;
        let now = self.now;
        let node = self.device(i)?;
        node.create(kind, &id, fields, now)
            .map_err(|e| format!("refused: {e}"))?;
        self.acknowledge(i, &id, &[], format!("create {id}"));
        Ok(format!("created {id}"))
    }

    /// Records device `i` holds that its user may edit (not flagged as revoked), in id order.
    fn held(&mut self, i: usize) -> Result<Vec<(RecordId, String, Projection)>, String> {
        let node = self.device(i)?;
        let mut out = Vec::new();
        for (id, kind) in node.records().map_err(|e| e.to_string())? {
            if let Ok(Some(p)) = node.project(&id) {
                out.push((id, kind, p));
            }
        }
        // Deals first (they have the most to write), then contacts, each in id order.
        out.sort_by(|a, b| (a.1 != "deal", &a.0).cmp(&(b.1 != "deal", &b.0)));
        Ok(out)
    }

    fn edit(&mut self, i: usize, pick: u32, what: u8, arg: u32) -> Result<String, String> {
        let held = self.held(i)?;
        if held.is_empty() {
            return Ok("nothing held".into());
        }
        let (id, kind, p) = held[hot_pick(pick, held.len())].clone();
        let m = self.next_marker();
        let node = self.device(i)?;
        let stages: Vec<u64> = node
            .replica_ref()
            .catalog()
            .stages
            .keys()
            .copied()
            .collect();
        let users: Vec<u64> = self.users.ids.clone();
        let deal = kind == "deal";
        let activity_of = |k: ActivityKind| {
            p.record
                .activities
                .iter()
                .filter(|a| a.kind == k)
                .map(|a| a.id.clone())
                .collect::<Vec<_>>()
        };
        let notes = activity_of(ActivityKind::Note);
        let day = |arg: u32| chrono_date(2027, 1 + arg % 12, 1 + arg % 28);
        let edits: Vec<Edit> = match what % 16 {
            0 => vec![Edit::Set(
                key("name"),
                Value::Text(format!("Renamed sim#{m}")),
            )],
            1 if deal => vec![Edit::Set(
                key("value"),
                Value::Money(Money::from_cents(i64::from(arg % 1_000_000) * 100)),
            )],
            2 if deal && !stages.is_empty() => {
                vec![Edit::Set(
                    key("stage_id"),
                    Value::Ref(stages[arg as usize % stages.len()]),
                )]
            }
            // A stage the catalog does not have: a validation conflict at once.
            3 if deal => vec![Edit::Set(
                key("stage_id"),
                Value::Ref(900_000 + u64::from(arg % 7)),
            )],
            // A currency Zendesk refuses: a validation conflict from the CRM.
            4 if deal => vec![Edit::Set(
                key("currency"),
                Value::Text(["EUR", "USD", "ISK"][arg as usize % 3].into()),
            )],
            5 if deal => vec![Edit::Set(
                key("estimated_close_date"),
                Value::Date(day(arg)),
            )],
            5 => vec![Edit::Set(
                key("email"),
                Value::Text(format!("u{m}@example.invalid")),
            )],
            6 => vec![Edit::AddTag(TAGS[arg as usize % TAGS.len()].into())],
            7 => vec![Edit::RemoveTag(TAGS[arg as usize % TAGS.len()].into())],
            8 if deal => vec![Edit::AddNote {
                id: format!("n-sim-{m}").parse().map_err(|_| "note id")?,
                content: format!("Note sim#{m}"),
            }],
            9 if deal && !notes.is_empty() => vec![Edit::SpliceNote {
                id: notes[arg as usize % notes.len()].clone(),
                pos: 0,
                delete: 0,
                insert: format!("[{m}] "),
            }],
            10 if deal => vec![Edit::AddActivity {
                id: format!("t-sim-{m}").parse().map_err(|_| "task id")?,
                kind: ActivityKind::Task,
                fields: vec![(key("content"), Value::Text(format!("Task sim#{m}")))],
            }],
            11 if deal => vec![Edit::AddActivity {
                id: format!("k-sim-{m}").parse().map_err(|_| "call id")?,
                kind: ActivityKind::Call,
                fields: vec![
                    (key("summary"), Value::Text(format!("Call sim#{m}"))),
                    (key("duration"), Value::Int(i64::from(arg % 3600))),
                ],
            }],
            12 => vec![Edit::DeleteRecord],
            // An owner this user may or may not see: an ACL change made from a device.
            13 => vec![Edit::Set(
                key("owner_id"),
                Value::Ref(users[arg as usize % users.len()]),
            )],
            // Values the device must refuse: a wrong type, an unknown field.
            14 => vec![Edit::Set(key("value"), Value::Text("a lot".into()))],
            15 => vec![Edit::Set(key("no_such_field"), Value::Bool(true))],
            _ if deal => vec![Edit::Set(key("hot"), Value::Bool(arg.is_multiple_of(2)))],
            _ => vec![Edit::Set(
                key("description"),
                Value::Text(format!("Text {m}")),
            )],
        };
        let now = self.now;
        let before = self.device_heads(i, &id);
        let node = self.device(i)?;
        let desc = format!("{id} {edits:?}");
        match node.apply(&id, "a simulated edit", &edits, now) {
            Ok(()) => {
                self.acknowledge(i, &id, &before, short(&desc));
                Ok(format!("ok {}", short(&desc)))
            }
            Err(e) => Ok(format!(
                "refused {}: {}",
                short(&desc),
                short(&e.to_string())
            )),
        }
    }

    fn resolve(&mut self, i: usize, pick: u32, choice: u8) -> Result<String, String> {
        let held = self.held(i)?;
        let open: Vec<(RecordId, Conflict)> = held
            .into_iter()
            .flat_map(|(id, _, p)| p.conflicts.into_iter().map(move |c| (id.clone(), c)))
            .collect();
        if open.is_empty() {
            return Ok("no conflict".into());
        }
        let (id, conflict) = open[pick as usize % open.len()].clone();
        let now = self.now;
        let before = self.device_heads(i, &id);
        let node = self.device(i)?;
        let stages: Vec<u64> = node
            .replica_ref()
            .catalog()
            .stages
            .keys()
            .copied()
            .collect();
        let r = match &conflict {
            Conflict::Field {
                slot, candidates, ..
            } => {
                let seen: Vec<String> = candidates.iter().map(|c| c.op.clone()).collect();
                let c = match choice % 4 {
                    0 => Choice::Mine,
                    1 => Choice::Theirs,
                    2 => Choice::Pick(1 + usize::from(choice / 4) % candidates.len().max(1)),
                    _ => Choice::Value(candidates.first().map_or(Value::Null, |c| c.value.clone())),
                };
                let what = format!("field {slot} {c:?}");
                let slot = slot.clone();
                node.act(&id, now, |rd, ctx| {
                    rd.resolve_field(ctx, &slot, &seen, c)
                        .map_err(|e| NodeError::Refused(e.to_string()))
                })
                .map(|_| what)
            }
            Conflict::Record {
                deleted_by,
                restored_by,
                ..
            } => {
                let seen: Vec<String> = deleted_by
                    .iter()
                    .chain(restored_by)
                    .map(|c| c.op.clone())
                    .collect();
                let c = if choice.is_multiple_of(2) {
                    RecordChoice::Restore
                } else {
                    RecordChoice::ConfirmDelete
                };
                let what = format!("record {c:?}");
                node.act(&id, now, |rd, ctx| {
                    rd.resolve_record(ctx, &seen, c)
                        .map_err(|e| NodeError::Refused(e.to_string()))
                })
                .map(|_| what)
            }
            Conflict::Validation { slot, .. } if slot.activity.is_none() => {
                let value = match slot.field.to_string().as_str() {
                    "stage_id" if !stages.is_empty() => {
                        Value::Ref(stages[usize::from(choice) % stages.len()])
                    }
                    "currency" => Value::Text("USD".into()),
                    _ => Value::Null,
                };
                let edits = [Edit::Set(slot.field.clone(), value)];
                node.apply(&id, "a fix", &edits, now)
                    .map(|_| format!("fixed {:?}", edits[0]))
            }
            other => return Ok(format!("left {}", short(&format!("{other:?}")))),
        };
        Ok(match r {
            Ok(what) => {
                self.acknowledge(i, &id, &before, format!("resolve {id} {what}"));
                format!("{id}: {what}")
            }
            Err(e) => format!("{id}: refused {}", short(&e.to_string())),
        })
    }

    /// The hub's records that Zendesk knows, with their CRM ids, in id order.
    fn mapped(&self) -> Vec<(RecordId, String, u64)> {
        let hub = self.hub_node();
        let n = lock(&hub);
        let Ok(records) = n.records() else {
            return Vec::new();
        };
        let Ok(read) = n.store().read() else {
            return Vec::new();
        };
        let mut out: Vec<(RecordId, String, u64)> = records
            .into_iter()
            .filter_map(|(id, kind)| {
                let crm = read.crm_id(&id).ok().flatten()?;
                Some((id, kind, crm.id))
            })
            .collect();
        // Deals first, as devices pick.
        out.sort_by(|a, b| (a.1 != "deal", &a.0).cmp(&(b.1 != "deal", &b.0)));
        out
    }

    fn web_action(&mut self, user: u8, pick: u32, what: u8, arg: u32) -> Result<String, String> {
        let mapped = self.mapped();
        if mapped.is_empty() {
            return Ok("nothing in Zendesk".into());
        }
        // Mostly a record some device holds (picked as that device picks), so that web and
        // device writes meet.
        let dev = usize::from(user) % self.devices.len();
        let held: BTreeSet<RecordId> = match self.device(dev) {
            Ok(n) => n
                .records()
                .unwrap_or_default()
                .into_iter()
                .map(|(id, _)| id)
                .collect(),
            Err(_) => BTreeSet::new(),
        };
        let near: Vec<(RecordId, String, u64)> = mapped
            .iter()
            .filter(|(id, _, _)| held.contains(id))
            .cloned()
            .collect();
        let from = if near.is_empty() || pick.is_multiple_of(5) {
            &mapped
        } else {
            &near
        };
        let (id, kind, crm_id) = from[hot_pick(pick / 5, from.len())].clone();
        // The admin, the record's owner (most web edits), or any rep (who may be refused).
        let owner = lock(&self.hub_node())
            .project(&id)
            .ok()
            .flatten()
            .and_then(|p| match p.record.fields.get(&key("owner_id")) {
                Some(Value::Ref(o)) => Some(*o),
                _ => None,
            });
        let user = match (user % 5, owner) {
            (0, _) | (1..=3, None) => ADMIN,
            (1..=3, Some(o)) => o,
            _ => self.users.ids[usize::from(user / 5) % self.users.ids.len()],
        };
        let m = self.next_marker();
        let res = if kind == "deal" { "deals" } else { "contacts" };
        let path = format!("/v2/{res}/{crm_id}");
        let (method, path, body) = match what % 9 {
            0 => (
                Method::Put,
                path,
                Some(json!({"name": format!("Web sim#{m}")})),
            ),
            1 if kind == "deal" => (
                Method::Put,
                path,
                Some(json!({"value": format!("{}.00", arg % 100_000)})),
            ),
            2 if kind == "deal" => {
                let stages: Vec<u64> = lock(&self.hub_node())
                    .replica_ref()
                    .catalog()
                    .stages
                    .keys()
                    .copied()
                    .collect();
                let s = stages
                    .get(arg as usize % stages.len().max(1))
                    .copied()
                    .unwrap_or(0);
                (Method::Put, path, Some(json!({"stage_id": s})))
            }
            3 => (
                Method::Put,
                path,
                Some(json!({"tags": [TAGS[arg as usize % TAGS.len()]]})),
            ),
            // The owner moves (possibly to another team): an ACL change.
            4 => {
                let to = self.users.ids[arg as usize % self.users.ids.len()];
                (Method::Put, path, Some(json!({"owner_id": to})))
            }
            5 if kind == "deal" => (
                Method::Put,
                path,
                Some(
                    json!({"estimated_close_date": format!("2027-0{}-1{}", 1 + arg % 9, arg % 10)}),
                ),
            ),
            5 => (
                Method::Put,
                path,
                Some(json!({"email": format!("web{m}@example.invalid")})),
            ),
            6 if kind == "deal" => (
                Method::Post,
                "/v2/notes".to_owned(),
                Some(
                    json!({"resource_type": "deal", "resource_id": crm_id, "content": format!("Web note sim#{m}")}),
                ),
            ),
            7 if arg.is_multiple_of(3) => (Method::Delete, path, None),
            _ if kind == "deal" => (
                Method::Put,
                path,
                Some(json!({"hot": arg.is_multiple_of(2)})),
            ),
            _ => (
                Method::Put,
                path,
                Some(json!({"description": format!("Web text {m}")})),
            ),
        };
        let desc = format!(
            "as {user} {} {path} {}",
            method.as_str(),
            body.clone().unwrap_or(Json::Null)
        );
        let (status, _) = self.web(user, method, &path, body);
        Ok(format!("{id}: {} -> {status}", short(&desc)))
    }

    fn sim_fault(&mut self, kind: u8, seed: u32) -> Result<String, String> {
        let fault = match kind % 4 {
            0 => Fault::RateLimit {
                burst: 1 + u64::from(kind / 4) % 3,
            },
            1 => Fault::Error { status: 500 },
            2 => Fault::Error { status: 503 },
            _ => Fault::Latency { ms: 200 },
        };
        let config = FaultConfig {
            seed: u64::from(seed),
            rules: vec![FaultRule {
                route: "*".into(),
                fault,
                probability: 0.5,
                skip: u64::from(seed % 5),
                times: Some(1 + u64::from(seed % 4)),
            }],
        };
        self.sim.set_faults(config)?;
        Ok(format!("{fault:?}"))
    }

    fn revoke(&mut self, i: usize) -> Result<String, String> {
        let hub = self.hub_node();
        let dev: sellsync_model::DeviceId =
            self.devices[i].name.parse().map_err(|_| "device id")?;
        let now = self.now;
        let n = lock(&hub)
            .store()
            .write(|w| w.revoke_device_tokens(&dev, now))
            .map_err(|e| e.to_string())?;
        self.devices[i].revoked = true;
        self.retired.insert(self.devices[i].name.clone());
        Ok(format!("{n} tokens revoked"))
    }

    fn hub_sync(&mut self, i: usize, cut: Option<u8>) -> Result<String, String> {
        let hub = self.hub_node();
        let now = self.now;
        let node = self.device(i)?;
        let dial = credential::hub_dial_config(node, sellsync_sync::Limits::default())
            .map_err(|e| e.to_string())?;
        let mut h = lock(&hub);
        let accept = AcceptConfig {
            node: h.id().clone(),
            role: Role::Hub,
            token: Vec::new(),
            mutual: false,
            nonce: Vec::new(),
            limits: sellsync_sync::Limits::default(),
        };
        Ok(pump(node, dial, &mut h, accept, now, cut))
    }

    fn lan(&mut self, a: usize, b: usize, cut: Option<u8>) -> Result<String, String> {
        if a == b {
            return Ok("same device".into());
        }
        let now = self.now;
        // Both nodes open, then borrowed apart.
        self.device(a)?;
        self.device(b)?;
        let (x, y) = if a < b {
            let (l, r) = self.devices.split_at_mut(b);
            (&mut l[a], &mut r[0])
        } else {
            let (l, r) = self.devices.split_at_mut(a);
            (&mut r[0], &mut l[b])
        };
        let (Some(dialer), Some(acceptor)) = (x.node.as_mut(), y.node.as_mut()) else {
            return Err("not open".into());
        };
        let limits = sellsync_sync::Limits::default();
        let Ok(dial) = credential::lan_dial_config(dialer, None, limits) else {
            return Ok("dialer has no grant".into());
        };
        let Ok(accept) = credential::lan_accept_config(acceptor, limits) else {
            return Ok("acceptor has no grant".into());
        };
        Ok(pump(dialer, dial, acceptor, accept, now, cut))
    }

    fn bridge_round(&mut self, cut: Option<u8>) -> Result<String, String> {
        let Some(hub) = self.hub.as_ref() else {
            return Err("no hub".into());
        };
        self.control.set(ConnFaults {
            cut_after: cut.map(u32::from),
            ..ConnFaults::default()
        });
        let control = self.control.clone();
        let outcome = self.rt.block_on(async {
            tokio::select! {
                r = hub.bridge.round() => Some(r),
                () = control.cut() => None,
            }
        });
        self.control.set(ConnFaults::default());
        match outcome {
            None => {
                // The hub's process died mid-round: everything in memory goes.
                self.hub = None;
                self.open_hub()?;
                Ok("cut; hub restarted".into())
            }
            Some(Ok((pull, push))) => {
                let s = format!(
                    "pulled {}{} pushed {} refused {} gave up {} waiting {}",
                    pull.changed.len(),
                    if pull.sync_api { "" } else { " (polling)" },
                    push.pushed.len(),
                    push.refused.len(),
                    push.gave_up.len(),
                    push.waiting.len()
                );
                self.last_push = Some(push);
                Ok(s)
            }
            Some(Err(e)) => Ok(format!("failed: {}", short(&e.to_string()))),
        }
    }

    /// Feed heads of the hub and every live device: unchanged across a pass means quiet.
    fn heads(&mut self) -> Vec<u64> {
        let mut out = vec![
            lock(&self.hub_node())
                .store()
                .read()
                .and_then(|r| r.feed_head())
                .unwrap_or(0),
        ];
        for i in 0..self.devices.len() {
            if self.devices[i].revoked {
                continue;
            }
            let head = self
                .device(i)
                .ok()
                .and_then(|n| n.store().read().and_then(|r| r.feed_head()).ok());
            out.push(head.unwrap_or(0));
        }
        out
    }

    /// Faults stop; bridge rounds and hub syncs of every live device until nothing moves.
    fn settle(&mut self) -> String {
        self.control.set(ConnFaults::default());
        let _ = self.sim.set_faults(FaultConfig::default());
        let quiet = self.settle_rounds();
        // What a user does with a copy the hub no longer takes because it holds someone
        // else's refused change: discard it, and sync again.
        let discarded = self.discard_refused();
        if discarded.is_empty() {
            return quiet;
        }
        let again = self.settle_rounds();
        format!("{quiet}; discarded {discarded:?}; {again}")
    }

    /// Device by device, every copy under a record-level permission conflict that the hub
    /// still lets its user see and that holds a change the hub lacks by a device that was
    /// revoked or replaced (a change the hub may refuse by design): its user discards it
    /// ([`Node::discard_local`]). Returns what was discarded, by device.
    fn discard_refused(&mut self) -> Vec<(usize, RecordId)> {
        use automerge::ReadDoc;
        let hub = self.hub_node();
        let mut out = Vec::new();
        for i in 0..self.devices.len() {
            if self.devices[i].revoked || self.devices[i].forged.contains(&None) {
                continue;
            }
            let user = UserId(self.devices[i].user);
            let retired = self.retired.clone();
            let now = self.now;
            let Ok(held) = self.held(i) else { continue };
            for (id, _, p) in held {
                let flagged = p
                    .conflicts
                    .iter()
                    .any(|c| matches!(c, Conflict::Permission { slot: None, .. }));
                if !flagged || self.devices[i].forged.contains(&Some(id.clone())) {
                    continue;
                }
                let at_hub = {
                    let mut h = lock(&hub);
                    let doc = h.replica().docs().with_doc(&id, |d| d.clone());
                    match doc {
                        Ok(Some(doc)) if h.replica_ref().visible_to(user, &doc) => Some(doc),
                        _ => None,
                    }
                };
                let Some(at_hub) = at_hub else { continue };
                let Ok(node) = self.device(i) else { continue };
                let by_retired = node
                    .replica()
                    .docs()
                    .with_doc(&id, |d| {
                        d.get_changes(&[]).iter().any(|c| {
                            at_hub.get_change_by_hash(&c.hash()).is_none()
                                && sellsync_service::signed::author_of(c)
                                    .is_some_and(|a| retired.contains(a.as_str()))
                        })
                    })
                    .ok()
                    .flatten()
                    .unwrap_or(false);
                if by_retired && node.discard_local(&id, now).is_ok() {
                    self.devices[i].discarded.insert(id.clone());
                    out.push((i, id));
                }
            }
        }
        out
    }

    fn settle_rounds(&mut self) -> String {
        let mut before = self.heads();
        for round in 0..SETTLE_ROUNDS {
            self.now += 1000;
            let bridge = self.bridge_round(None).unwrap_or_else(|e| e);
            for i in 0..self.devices.len() {
                if !self.devices[i].revoked {
                    let r = self.hub_sync(i, None).unwrap_or_else(|e| e);
                    if round + 1 == SETTLE_ROUNDS {
                        self.trace.push(format!("settle sync {i}: {r}"));
                    }
                }
            }
            let after = self.heads();
            let pushed = self.last_push.as_ref().map_or(0, |p| p.pushed.len());
            if after == before && pushed == 0 {
                return format!("quiet after {} rounds ({bridge})", round + 1);
            }
            before = after;
        }
        "not quiet".into()
    }

    /// The invariants, each violation as `invariant: detail`.
    fn check(&mut self) -> Vec<String> {
        let mut v = Vec::new();
        let settled_line = self
            .trace
            .iter()
            .rev()
            .find(|l| l.starts_with("settle"))
            .cloned();
        let _ = settled_line;
        let hub = self.hub_node();
        if hub.is_poisoned() {
            v.push("no poisoned lock: the hub's node lock is poisoned".into());
        }
        // The hub's records: projection (as bytes), push view, who may see it.
        struct HubRecord {
            kind: String,
            projection: Projection,
            bytes: String,
            push: sellsync_model::PushView,
            crm_id: Option<u64>,
            visible: BTreeSet<u64>,
        }
        let mut records: BTreeMap<RecordId, HubRecord> = BTreeMap::new();
        {
            let mut h = lock(&hub);
            let ids = h.records().unwrap_or_default();
            let node = h.id().clone();
            let catalog = h.replica_ref().catalog().clone();
            let policy = h.replica_ref().policy().clone();
            for (id, kind) in ids {
                let Ok(Some(doc)) = h.replica().docs().with_doc(&id, |d| d.clone()) else {
                    v.push(format!("convergence: hub cannot read {id}"));
                    continue;
                };
                let visible: BTreeSet<u64> = self
                    .users
                    .ids
                    .iter()
                    .copied()
                    .filter(|u| h.replica_ref().visible_to(UserId(*u), &doc))
                    .collect();
                let Ok(rd) = RecordDoc::from_automerge(doc, &node) else {
                    v.push(format!("convergence: hub's {id} is not a record"));
                    continue;
                };
                let projection = rd.project(&ProjectCtx {
                    catalog: &catalog,
                    policy: &policy,
                    directory: &AssumeLive,
                });
                let push = rd.push_view(&projection);
                let bytes = serde_json::to_string(&projection).unwrap_or_default();
                let crm_id = h
                    .store()
                    .read()
                    .ok()
                    .and_then(|r| r.crm_id(&id).ok().flatten())
                    .map(|c| c.id);
                records.insert(
                    id,
                    HubRecord {
                        kind,
                        projection,
                        bytes,
                        push,
                        crm_id,
                        visible,
                    },
                );
            }
        }
        // Convergence and access, device by device.
        let live: Vec<usize> = (0..self.devices.len())
            .filter(|i| !self.devices[*i].revoked)
            .collect();
        let mut seen_by: BTreeMap<RecordId, Vec<usize>> = BTreeMap::new();
        for &i in &live {
            let user = self.devices[i].user;
            // A device's own forgeries keep its copies apart, by design (see `authorship`).
            let forged = self.devices[i].forged.clone();
            if forged.contains(&None) {
                continue;
            }
            let held = match self.held(i) {
                Ok(h) => h,
                Err(e) => {
                    v.push(format!("convergence: device {i} unreadable: {e}"));
                    continue;
                }
            };
            let held: BTreeMap<RecordId, Projection> =
                held.into_iter().map(|(id, _, p)| (id, p)).collect();
            for (id, r) in &records {
                if !r.visible.contains(&user) || forged.contains(&Some(id.clone())) {
                    continue;
                }
                match held.get(id) {
                    None => v.push(format!("convergence: device {i} (user {user}) lacks {id}")),
                    Some(p) => {
                        let bytes = serde_json::to_string(p).unwrap_or_default();
                        if bytes != r.bytes {
                            v.push(format!(
                                "convergence: device {i} (user {user}) differs on {id}: {}",
                                first_difference(&bytes, &r.bytes)
                            ));
                        } else {
                            seen_by.entry(id.clone()).or_default().push(i);
                        }
                    }
                }
            }
            for (id, p) in &held {
                let visible = records.get(id).is_some_and(|r| r.visible.contains(&user));
                // Kept here with a permission conflict, by design: access revoked, or a record
                // the hub refused (an owner this user may not assign). It no longer syncs.
                let flagged = p
                    .conflicts
                    .iter()
                    .any(|c| matches!(c, Conflict::Permission { slot: None, .. }));
                if !records.contains_key(id) && !flagged {
                    v.push(format!(
                        "convergence: device {i} holds {id}, which the hub lacks"
                    ));
                } else if !visible && !flagged {
                    v.push(format!(
                        "access: device {i} (user {user}) holds {id} it may not see, unflagged"
                    ));
                }
            }
        }
        // Zendesk agrees, and no wedge.
        let catalog = lock(&hub).replica_ref().catalog().clone();
        for (id, r) in &records {
            let open = !r.projection.conflicts.is_empty();
            let differs = self.zendesk_differs(id, r.kind.as_str(), r.crm_id, &r.push, &catalog);
            if open {
                // Someone allowed to see it must hold it with its conflict (to resolve it), if
                // the scenario has a live device of such a user at all.
                let allowed: Vec<usize> = live
                    .iter()
                    .copied()
                    .filter(|i| r.visible.contains(&self.devices[*i].user))
                    .filter(|i| {
                        let forged = &self.devices[*i].forged;
                        !forged.contains(&None) && !forged.contains(&Some(id.clone()))
                    })
                    .collect();
                let want = serde_json::to_value(&r.projection.conflicts).unwrap_or_default();
                let shown = allowed
                    .iter()
                    .any(|&i| self.inbox(i, id).as_ref() == Some(&want));
                if !allowed.is_empty() && !shown {
                    v.push(format!(
                        "no wedge: {id} has open conflicts no device of an allowed user shows in its inbox"
                    ));
                }
            } else if let Some(d) = differs {
                v.push(format!("zendesk agrees: {id} (no open conflict): {d}"));
                v.push(format!(
                    "no wedge: {id} differs from Zendesk without an open conflict"
                ));
            }
        }
        if let Some(p) = &self.last_push {
            for (op, e) in &p.gave_up {
                if records
                    .get(&op.record)
                    .is_none_or(|r| r.projection.conflicts.is_empty())
                {
                    v.push(format!(
                        "no wedge: {} given up without a conflict: {e}",
                        op.record
                    ));
                }
            }
            for (rec, why) in &p.waiting {
                if records
                    .get(rec)
                    .is_none_or(|r| r.projection.conflicts.is_empty())
                {
                    v.push(format!("no wedge: {rec} waits without a conflict: {why}"));
                }
            }
        }
        v.extend(self.duplicates());
        v.extend(self.authorship());
        v.extend(self.no_lost_update());
        let (mut lost_values, mut told) = (0usize, 0usize);
        // Notifications: each value lost automatically (notify and keep-server tiers, from the
        // audit trail) is told once to its author, on each of that author's devices.
        for (id, r) in &records {
            let mut expected: BTreeMap<(String, u64, String), BTreeSet<String>> = BTreeMap::new();
            for e in &r.projection.audit {
                if e.policy != "notify" && e.policy != "keep-server" {
                    continue;
                }
                let (Some(slot), Chosen::Value(kept), Some(op)) =
                    (&e.slot, &e.chosen, &e.chosen_op)
                else {
                    continue;
                };
                for c in e
                    .candidates
                    .iter()
                    .filter(|c| &c.op != op && c.value != *kept)
                {
                    let value = serde_json::to_string(&c.value).unwrap_or_default();
                    expected
                        .entry((slot.to_string(), c.by.0, value))
                        .or_default()
                        .insert(c.op.clone());
                }
            }
            for ((slot, to, value), ops) in expected {
                lost_values += ops.len();
                for &i in seen_by.get(id).into_iter().flatten() {
                    if self.devices[i].user != to {
                        continue;
                    }
                    told += 1;
                    let got = self.notifications(i, id, &slot, to, &value);
                    if got != ops.len() {
                        v.push(format!(
                            "notifications: device {i} (user {to}) has {got} for {id} {slot} = {value}, {} values lost",
                            ops.len()
                        ));
                    }
                }
            }
        }
        let conflicts: usize = records.values().map(|r| r.projection.conflicts.len()).sum();
        let audited: usize = records.values().map(|r| r.projection.audit.len()).sum();
        self.trace.push(format!(
            "checked: {} records, {conflicts} open conflicts, {audited} audit entries, \
             {lost_values} values lost automatically, {told} checks of their notifications",
            records.len()
        ));
        v
    }

    /// No lost update: every change of an edit, create or resolution a device was told succeeded is at the
    /// hub, unless that device's copy stays apart by design: it was revoked or replaced (a wiped
    /// phone), its record carries a record-level permission conflict (kept with its offline
    /// edits, no longer synced), or it forged the record.
    fn no_lost_update(&mut self) -> Vec<String> {
        use automerge::ReadDoc;
        let mut v = Vec::new();
        let hub = self.hub_node();
        for a in self.acknowledged.clone() {
            let d = &self.devices[a.device];
            if d.revoked
                || d.generation != a.generation
                || d.forged.contains(&None)
                || d.forged.contains(&Some(a.record.clone()))
                || d.discarded.contains(&a.record)
            {
                continue;
            }
            let kept_apart = self
                .device(a.device)
                .ok()
                .and_then(|n| n.project(&a.record).ok().flatten())
                .is_some_and(|p| {
                    p.conflicts
                        .iter()
                        .any(|c| matches!(c, Conflict::Permission { slot: None, .. }))
                });
            if kept_apart {
                continue;
            }
            let missing = lock(&hub)
                .replica()
                .docs()
                .with_doc(&a.record, |doc| {
                    a.changes
                        .iter()
                        .filter(|h| doc.get_change_by_hash(h).is_none())
                        .count()
                })
                .ok()
                .flatten()
                .unwrap_or(a.changes.len());
            if missing > 0 {
                v.push(format!(
                    "no lost update: device {} was told {} succeeded; {missing} of its {} changes never reached the hub",
                    a.device,
                    a.what,
                    a.changes.len()
                ));
            }
        }
        v
    }

    /// Authorship: no forged change reached the hub or any other device (or the forger's own
    /// replacement store).
    fn authorship(&mut self) -> Vec<String> {
        use automerge::ReadDoc;
        let mut v = Vec::new();
        let forgeries = self.forgeries.clone();
        let has = |node: &mut Node, id: &RecordId, hash: &automerge::ChangeHash| {
            node.replica()
                .docs()
                .with_doc(id, |d| d.get_change_by_hash(hash).is_some())
                .ok()
                .flatten()
                .unwrap_or(false)
        };
        let hub = self.hub_node();
        for (forger, generation, id, hash) in &forgeries {
            if has(&mut lock(&hub), id, hash) {
                v.push(format!(
                    "authorship: the hub holds device {forger}'s forged change in {id}"
                ));
            }
            for j in 0..self.devices.len() {
                if j == *forger && self.devices[j].generation == *generation {
                    continue;
                }
                if let Ok(node) = self.device(j)
                    && has(node, id, hash)
                {
                    v.push(format!(
                        "authorship: device {j} holds device {forger}'s forged change in {id}"
                    ));
                }
            }
        }
        v
    }

    /// The conflicts device `i` shows for `record` in its inbox (the stored view), if any.
    fn inbox(&mut self, i: usize, record: &RecordId) -> Option<Json> {
        let node = self.device(i).ok()?;
        let bytes = node.store().read().ok()?.conflicts(record).ok()??;
        serde_json::from_slice(&bytes).ok()
    }

    /// How many notifications device `i` stored for `to` about `record`'s `slot` losing `value`.
    fn notifications(
        &mut self,
        i: usize,
        record: &RecordId,
        slot: &str,
        to: u64,
        value: &str,
    ) -> usize {
        let Ok(node) = self.device(i) else { return 0 };
        let Ok(list) = node.store().read().and_then(|r| {
            r.notifications(&NotificationFilter {
                user: Some(UserId(to)),
                ..NotificationFilter::default()
            })
        }) else {
            return 0;
        };
        list.iter()
            .filter_map(|n| serde_json::from_slice::<Json>(&n.body).ok())
            .filter(|b| {
                b["record"] == record.as_str()
                    && slot_text(&b["slot"]).as_deref() == Some(slot)
                    && serde_json::to_string(&b["yours"]).ok().as_deref() == Some(value)
            })
            .count()
    }

    /// How Zendesk differs from the hub's push view of a record, if it does.
    fn zendesk_differs(
        &self,
        id: &RecordId,
        kind: &str,
        crm_id: Option<u64>,
        push: &sellsync_model::PushView,
        catalog: &sellsync_model::Catalog,
    ) -> Option<String> {
        let res = if kind == "deal" { "deals" } else { "contacts" };
        let Some(crm_id) = crm_id else {
            return (push.action == PushAction::Upsert).then(|| "never created in Zendesk".into());
        };
        let (status, body) = self.web(ADMIN, Method::Get, &format!("/v2/{res}/{crm_id}"), None);
        match (push.action, status) {
            (PushAction::Delete, 404) | (PushAction::Hold, _) => None,
            (PushAction::Delete, s) => Some(format!("deleted on the hub, Zendesk answers {s}")),
            (PushAction::Upsert, 404) => Some("live on the hub, deleted in Zendesk".into()),
            (PushAction::Upsert, 200) => {
                let rk = if kind == "deal" {
                    RecordKind::Deal
                } else {
                    RecordKind::Contact
                };
                let image = match mapping::record_image(rk, &body["data"], catalog) {
                    Ok((_, image)) => image,
                    Err(e) => return Some(format!("Zendesk's object does not map: {e}")),
                };
                let mut diffs = Vec::new();
                let keys: BTreeSet<&FieldKey> =
                    push.fields.keys().chain(image.fields.keys()).collect();
                for k in keys {
                    let ours = push.fields.get(k).cloned().unwrap_or(Value::Null);
                    let theirs = image.get(k);
                    if ours != theirs && !push.held.contains_key(&k.to_string()) {
                        diffs.push(format!("{k}: hub {ours:?}, Zendesk {theirs:?}"));
                    }
                }
                if push.tags != image.tags {
                    diffs.push(format!(
                        "tags: hub {:?}, Zendesk {:?}",
                        push.tags, image.tags
                    ));
                }
                let _ = id;
                (!diffs.is_empty()).then(|| short(&diffs.join("; ")))
            }
            (_, s) => Some(format!("Zendesk answers {s}")),
        }
    }

    /// Objects Zendesk holds more than once (one marker, two objects).
    fn duplicates(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (res, field) in [
            ("deals", "name"),
            ("contacts", "name"),
            ("notes", "content"),
            ("tasks", "content"),
            ("calls", "summary"),
        ] {
            let mut count: BTreeMap<String, u32> = BTreeMap::new();
            for page in 1..100 {
                let (status, body) = self.web(
                    ADMIN,
                    Method::Get,
                    &format!("/v2/{res}?page={page}&per_page=100"),
                    None,
                );
                let items = body["items"].as_array().cloned().unwrap_or_default();
                if status != 200 {
                    out.push(format!("zendesk agrees: listing {res} answered {status}"));
                    break;
                }
                for it in &items {
                    if let Some(text) = it["data"][field].as_str()
                        && let Some(m) = marker_of(text)
                    {
                        *count.entry(m).or_default() += 1;
                    }
                }
                if items.len() < 100 {
                    break;
                }
            }
            for (m, n) in count {
                if n > 1 {
                    out.push(format!(
                        "zendesk agrees: {n} {res} carry marker {m} (a duplicate)"
                    ));
                }
            }
        }
        out
    }
}

/// The `sim#N` marker of a created object's name or text (a record renamed or a note edited
/// keeps or drops it; only objects created with one carry it).
fn marker_of(text: &str) -> Option<String> {
    let at = text.find("sim#")?;
    let digits: String = text[at + 4..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    (!digits.is_empty()).then(|| {
        format!(
            "{}#{digits}",
            &text[..at].split_whitespace().next().unwrap_or("")
        )
    })
}

fn slot_text(v: &Json) -> Option<String> {
    let slot: Slot = serde_json::from_value(v.clone()).ok()?;
    Some(slot.to_string())
}

fn chrono_date(y: i32, m: u32, d: u32) -> chrono::NaiveDate {
    chrono::NaiveDate::from_ymd_opt(y, m, d).unwrap_or_default()
}

/// At most 200 characters of `s`.
fn short(s: &str) -> String {
    if s.chars().count() <= 200 {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(200).collect::<String>())
    }
}

/// Where two renderings first differ, with some context.
fn first_difference(a: &str, b: &str) -> String {
    let at = a
        .char_indices()
        .zip(b.chars())
        .find(|((_, x), y)| x != y)
        .map_or(a.len().min(b.len()), |((i, _), _)| i);
    let from = a[..at].char_indices().rev().nth(60).map_or(0, |(i, _)| i);
    let tail = |s: &str| {
        s.get(from..)
            .unwrap_or("")
            .chars()
            .take(160)
            .collect::<String>()
    };
    format!("device …{} | hub …{}", tail(a), tail(b))
}

fn closed(fx: &Effects) -> Option<String> {
    fx.effects.iter().find_map(|e| match e {
        Effect::Close(r) => Some(format!("{r:?}")),
        _ => None,
    })
}

/// Runs one session in process between `dialer` and `acceptor`, frame by frame, at `now`.
/// With `cut`, the connection drops after that many frames (both sides see it close).
fn pump(
    dialer: &mut Node,
    dial: DialConfig,
    acceptor: &mut Node,
    accept: AcceptConfig,
    now: i64,
    cut: Option<u8>,
) -> String {
    let mut d = Session::dial(dial);
    let mut a = Session::accept(accept);
    dialer.replica().set_now(now);
    acceptor.replica().set_now(now);
    let mut errors = Vec::new();
    let mut note = |r: Option<String>| {
        if let Some(e) = r {
            errors.push(e);
        }
    };
    let fx = d.handle(dialer.replica(), Event::Opened);
    note(net::carry_out(dialer, &fx, now).1);
    let mut close_seen = closed(&fx);
    let mut to_a = fx.send;
    let mut to_d: Vec<Vec<u8>> = Vec::new();
    let mut frames = 0u32;
    let limit = cut.map(u32::from);
    let mut was_cut = false;
    'flights: for _ in 0..MAX_FLIGHTS {
        for f in std::mem::take(&mut to_a) {
            if limit.is_some_and(|l| frames >= l) {
                was_cut = true;
                break 'flights;
            }
            frames += 1;
            let fx = a.handle(acceptor.replica(), Event::Received(&f));
            note(net::carry_out(acceptor, &fx, now).1);
            close_seen = close_seen.or(closed(&fx));
            to_d.extend(fx.send);
        }
        for f in std::mem::take(&mut to_d) {
            if limit.is_some_and(|l| frames >= l) {
                was_cut = true;
                break 'flights;
            }
            frames += 1;
            let fx = d.handle(dialer.replica(), Event::Received(&f));
            note(net::carry_out(dialer, &fx, now).1);
            close_seen = close_seen.or(closed(&fx));
            to_a.extend(fx.send);
        }
        if to_a.is_empty() && to_d.is_empty() {
            break;
        }
    }
    if was_cut || !(d.is_ended() && a.is_ended()) {
        let fx = d.handle(dialer.replica(), Event::Closed);
        note(net::carry_out(dialer, &fx, now).1);
        let fx = a.handle(acceptor.replica(), Event::Closed);
        note(net::carry_out(acceptor, &fx, now).1);
    }
    let mut out = format!(
        "{frames} frames{}{}",
        if was_cut { ", cut" } else { "" },
        close_seen
            .map(|r| format!(", closed: {}", short(&r)))
            .unwrap_or_default()
    );
    if !errors.is_empty() {
        out.push_str(&format!(", errors: {}", short(&errors.join("; "))));
    }
    out
}

impl Users {
    fn acl_toml(&self) -> String {
        let mut s = format!("admins = [{}]\n", self.ids[0]);
        for team in [1u64, 2] {
            let members: Vec<String> = self
                .teams
                .iter()
                .filter(|(_, t)| **t == team)
                .map(|(u, _)| u.to_string())
                .collect();
            s.push_str(&format!(
                "[[teams]]\nid = {team}\nmembers = [{}]\n",
                members.join(", ")
            ));
        }
        s
    }
}

/// Drops steps while the scenario still fails (first halves, then single steps), for at most
/// `budget` runs. Returns the smallest failing scenario found and its failure.
pub fn shrink(scenario: &Scenario, first: Failure, budget: usize) -> (Scenario, Failure) {
    let mut best = scenario.clone();
    let mut failure = first;
    let mut runs = 0;
    let mut chunk = best.steps.len() / 2;
    while chunk >= 1 && runs < budget {
        let mut i = 0;
        let mut progressed = false;
        while i < best.steps.len() && runs < budget {
            let mut candidate = best.clone();
            let end = (i + chunk).min(candidate.steps.len());
            candidate.steps.drain(i..end);
            runs += 1;
            match run(&candidate) {
                Err(f) => {
                    best = candidate;
                    failure = f;
                    progressed = true;
                }
                Ok(_) => i += chunk,
            }
        }
        if !progressed {
            chunk /= 2;
        }
    }
    (best, failure)
}
