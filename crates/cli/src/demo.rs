//! `sellsync demo`: the whole system in one process, over loopback sockets. A Zendesk Sell
//! simulator, a hub with its bridge (the only writer to Zendesk), and two devices; a rep edits
//! offline while a colleague edits in Zendesk; what merges, what resolves by tier, what is a
//! conflict; the rep resolves; the bridge pushes; the final Zendesk record and the audit trail.
//!
//! `--faults P --seed N` runs the same story with the simulator failing P of the requests
//! (429 bursts, 5xx, latency, answers dropped after the write committed); `--json` prints the
//! final Zendesk state, so that runs can be compared.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use chrono::{DateTime, Utc};
use sellsync_bridge::run::Limits as PushLimits;
use sellsync_hub_bridge::{Bridge, BridgeConfig, Crm, Progress, ZendeskHttp};
use sellsync_model::{
    ActivityKind, AuditEntry, Catalog, Choice, Chosen, Conflict, Edit, FieldKey, Money, Projection,
    RecordId, Slot, UserId, Value,
};
use sellsync_service::net::{self, NetConfig, Outcome, SharedNode};
use sellsync_service::{Acl, Node, NodeError, credential, token};
use sellsync_sim::{Fault, FaultConfig, FaultRule, Sim, SimConfig, demo_data};
use sellsync_store::{NodeIdentity, Role as StoreRole, Store};
use sellsync_sync::{AcceptConfig, Limits, Role, Session};
use serde_json::{Value as Json, json};

/// Options of the demo.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Options {
    /// Share of requests the simulator fails (0 to 1).
    pub(crate) faults: f64,
    /// Seed of the simulator's fault injection.
    pub(crate) seed: u64,
    /// Print the final Zendesk state as JSON on stdout (the story goes to stderr).
    pub(crate) json: bool,
}

fn key(s: &str) -> FieldKey {
    FieldKey::std(s)
}

pub(crate) fn clock(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map_or_else(|| ms.to_string(), |t| t.format("%H:%M:%S").to_string())
}

struct Narrator {
    json: bool,
}

impl Narrator {
    fn say(&self, line: impl AsRef<str>) {
        if self.json {
            eprintln!("{}", line.as_ref());
        } else {
            println!("{}", line.as_ref());
        }
    }
}

/// A device in the story: its node and how it reaches the hub.
struct Device {
    name: &'static str,
    node: SharedNode,
    url: String,
}

impl Device {
    async fn sync(&self) -> Result<Outcome> {
        let dial = self.with(|n| credential::hub_dial_config(n, Limits::default()))?;
        let out = net::dial(
            &self.url,
            self.node.clone(),
            Session::dial(dial),
            NetConfig::default(),
        )
        .await?;
        if let Some(reason) = &out.closed {
            bail!("{}: sync did not complete: {reason:?}", self.name);
        }
        Ok(out)
    }

    fn with<R>(&self, f: impl FnOnce(&mut Node) -> R) -> R {
        let mut n = self.node.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut n)
    }

    fn project(&self, id: &RecordId) -> Result<Projection> {
        self.with(|n| n.project(id))?
            .with_context(|| format!("{} does not hold {id}", self.name))
    }
}

/// One audit entry as a line: the slot, its tier, what was chosen by whom and when, and every
/// candidate with its author.
pub(crate) fn audit_line(e: &AuditEntry, names: &Names<'_>) -> String {
    let show = |v: &Value| {
        e.slot
            .as_ref()
            .map_or_else(|| v.to_string(), |s: &Slot| names.show(&s.field, v))
    };
    let chosen = match &e.chosen {
        Chosen::Value(v) => show(v),
        Chosen::Restore => "restore".into(),
        Chosen::Delete => "delete".into(),
    };
    let who = e.by.map_or_else(
        || "automatically".to_owned(),
        |u| format!("by {}", names.user(u)),
    );
    let candidates: Vec<String> = e
        .candidates
        .iter()
        .map(|c| format!("{} ({})", show(&c.value), names.user(c.by)))
        .collect();
    format!(
        "{} [{}] chose {chosen} {who} at {}; candidates: {}",
        e.slot
            .as_ref()
            .map_or_else(|| "record".to_owned(), ToString::to_string),
        e.policy,
        clock(e.at),
        candidates.join(", ")
    )
}

/// How values read for people: stage and user names from the catalog.
pub(crate) struct Names<'a>(pub(crate) &'a Catalog);

impl Names<'_> {
    pub(crate) fn user(&self, id: UserId) -> String {
        if id == sellsync_bridge::pull::CRM_USER {
            // Zendesk itself, where it does not say which of its users made a change.
            return "Zendesk".to_owned();
        }
        self.0
            .users
            .get(&id.0)
            .map_or_else(|| format!("user {id}"), |u| u.name.clone())
    }

    pub(crate) fn show(&self, field: &FieldKey, v: &Value) -> String {
        match (field.name(), v) {
            ("stage_id", Value::Ref(id)) => self
                .0
                .stages
                .get(id)
                .map_or(v.to_string(), |s| s.name.clone()),
            ("owner_id", Value::Ref(id)) => self.user(UserId(*id)),
            _ => v.to_string(),
        }
    }
}

/// The simulator's users as an access file (and its text): admins, and one team per team name.
fn acl_of(sim: &Sim) -> Result<(Acl, String)> {
    let tokens = sim.tokens();
    let admins: Vec<u64> = tokens
        .iter()
        .filter(|t| t.role == "admin")
        .map(|t| t.user_id)
        .collect();
    let teams: BTreeSet<String> = tokens.iter().filter_map(|t| t.team.clone()).collect();
    let mut text = format!("admins = {admins:?}\n");
    for (i, team) in teams.iter().enumerate() {
        let members: Vec<u64> = tokens
            .iter()
            .filter(|t| t.team.as_deref() == Some(team.as_str()) && t.role != "admin")
            .map(|t| t.user_id)
            .collect();
        text.push_str(&format!(
            "[[teams]]\nid = {}\nmembers = {members:?}\n",
            i + 1
        ));
    }
    Ok((Acl::from_toml(&text)?, text))
}

fn faults(share: f64, seed: u64) -> FaultConfig {
    // One rule per kind of fault, each a quarter of the share, on every API route.
    let p = (share / 4.0).clamp(0.0, 0.25);
    let rule = |fault| FaultRule {
        route: "*".into(),
        fault,
        probability: p,
        skip: 0,
        times: None,
    };
    FaultConfig {
        seed,
        rules: vec![
            rule(Fault::Latency { ms: 40 }),
            rule(Fault::RateLimit { burst: 2 }),
            rule(Fault::Error { status: 503 }),
            rule(Fault::DropAfterWrite),
        ],
    }
}

/// Zendesk's web app as a colleague uses it: a person saving again until it took.
async fn web_app(
    url: &str,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Json,
) -> Result<()> {
    let http = reqwest::Client::new();
    for _ in 0..30 {
        let r = http
            .request(method.clone(), format!("{url}{path}"))
            .bearer_auth(token)
            .json(&json!({ "data": body }))
            .send()
            .await;
        match r {
            Ok(resp) if resp.status().is_success() => return Ok(()),
            Ok(resp) if resp.status().is_client_error() && resp.status() != 429 => {
                bail!("Zendesk refused the colleague's edit: {}", resp.status())
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    bail!("Zendesk kept failing the colleague's edit")
}

/// How many objects of a kind the account holds (every page).
async fn count_all(url: &str, token: &str, what: &str) -> Result<usize> {
    let mut n = 0;
    for page in 1..1000 {
        let j = get_json(url, token, &format!("/v2/{what}?page={page}&per_page=100")).await?;
        let items = j["items"].as_array().map_or(0, Vec::len);
        n += items;
        if items < 100 {
            return Ok(n);
        }
    }
    bail!("too many {what}")
}

async fn get_json(url: &str, token: &str, path: &str) -> Result<Json> {
    let http = reqwest::Client::new();
    for _ in 0..30 {
        if let Ok(resp) = http
            .get(format!("{url}{path}"))
            .bearer_auth(token)
            .send()
            .await
            && resp.status().is_success()
        {
            return Ok(resp.json().await?);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("could not read {path}")
}

/// Runs the story; an error if any step does not end as the story says.
pub(crate) fn run(opts: Options) -> Result<()> {
    sellsync_hub_bridge::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(story(opts))
}

#[allow(clippy::too_many_lines)]
async fn story(opts: Options) -> Result<()> {
    let t = Narrator { json: opts.json };
    let dir = tempfile::tempdir()?;

    // 1. Zendesk Sell (simulated) on loopback.
    let sim = Sim::new(demo_data(), SimConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let crm_url = format!("http://{}", listener.local_addr()?);
    let (stop_sim, sim_stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(sellsync_sim::serve(listener, sim.clone(), async move {
        let _ = sim_stopped.await;
    }));
    let tokens = sim.tokens();
    let admin = tokens
        .iter()
        .find(|t| t.role == "admin")
        .context("the demo account has an admin")?
        .clone();
    let north: Vec<_> = tokens
        .iter()
        .filter(|t| t.team.as_deref() == Some("North"))
        .cloned()
        .collect();
    ensure!(north.len() >= 2, "the demo account has two North reps");
    let (rep, mate) = (north[0].clone(), north[1].clone());
    t.say("sellsync demo: Zendesk Sell (simulated), a hub with its bridge, two devices; all on");
    t.say("loopback sockets in this process.");
    t.say("");
    t.say(format!(
        "1. Zendesk Sell simulator at {crm_url} (demo account: pipeline, 50 deals, contacts, notes)."
    ));
    if opts.faults > 0.0 {
        sim.set_faults(faults(opts.faults, opts.seed))
            .map_err(anyhow::Error::msg)?;
        t.say(format!(
            "   It fails {:.0}% of requests (429 bursts, 503s, latency, answers lost after the write), seed {}.",
            opts.faults * 100.0,
            opts.seed
        ));
    }

    // 2. The hub, its bridge, the import.
    let store = Arc::new(Store::open(dir.path().join("hub.redb"))?);
    Node::init(
        &store,
        &NodeIdentity {
            device_id: "hub".parse()?,
            user_id: UserId(0),
            role: StoreRole::Hub,
            hub_url: None,
            hub_token: None,
        },
    )?;
    let (acl, acl_text) = acl_of(&sim)?;
    let mut hub_node = Node::open(store.clone(), Some(acl))?;
    // Devices get grants (peer credentials and the access rules) as from a real hub.
    let issuer = credential::Issuer::load(
        &store,
        hub_node.id().clone(),
        acl_text,
        credential::DEFAULT_CREDENTIAL_TTL_MS,
    )?;
    hub_node.replica().set_issuer(Some(issuer));
    let hub: SharedNode = Arc::new(Mutex::new(hub_node));
    let crm = ZendeskHttp::new(&crm_url, &admin.token, 0.0, Duration::from_secs(10))?;
    let bridge = Bridge::new(
        crm,
        hub.clone(),
        BridgeConfig {
            crm_url: crm_url.clone(),
            limits: PushLimits {
                base_ms: 20,
                cap_ms: 500,
                max_attempts: 12,
                ..PushLimits::default()
            },
            ..BridgeConfig::default()
        },
    );
    let ws = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hub_url = format!("ws://{}/", ws.local_addr()?);
    let accept = AcceptConfig {
        node: "hub".parse()?,
        role: Role::Hub,
        token: Vec::new(),
        mutual: false,
        nonce: Vec::new(),
        limits: Limits::default(),
    };
    let (stop_hub, hub_stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(net::serve(
        ws,
        hub.clone(),
        move || Session::accept(accept.clone()),
        NetConfig::default(),
        async move {
            let _ = hub_stopped.await;
        },
    ));
    t.say(format!(
        "2. The hub listens at {hub_url}; its bridge imports Zendesk as {}:",
        admin.name
    ));
    let imported = bridge
        .import(&|p| {
            if let Progress::Objects { what, done } = p {
                tracing::debug!("import: {done} {what}");
            }
        })
        .await?;
    t.say(format!(
        "   {} deals and contacts, {} notes, tasks and calls, and the catalog, in {} requests.",
        imported.records, imported.activities, imported.requests
    ));
    bridge.pull().await?;

    // 3. Two devices enrol and sync.
    let mut devices = Vec::new();
    for (step, who, name) in [("3.", &rep, "bea-phone"), ("  ", &mate, "carl-laptop")] {
        let device: sellsync_model::DeviceId = name.parse()?;
        let issued =
            store.write(|w| w.issue_token(UserId(who.user_id), &device, net::now_ms(), None))?;
        let tok = token::format(&"hub".parse()?, UserId(who.user_id), &device, &issued.token);
        let dstore = Arc::new(Store::open(dir.path().join(format!("{name}.redb")))?);
        Node::init(
            &dstore,
            &NodeIdentity {
                device_id: device.clone(),
                user_id: UserId(who.user_id),
                role: StoreRole::Device,
                hub_url: Some(hub_url.clone()),
                hub_token: Some(tok.clone()),
            },
        )?;
        credential::load_or_create_key(&dstore, credential::DEVICE_KEY)?;
        let node: SharedNode = Arc::new(Mutex::new(Node::open(dstore, None)?));
        let d = Device {
            name,
            node,
            url: hub_url.clone(),
        };
        let out = d.sync().await?;
        let held = d.with(|n| n.records())?.len();
        t.say(format!(
            "{step} {}'s device {name} enrols and syncs: {held} records it may see ({} B in {} frames).",
            who.name, out.bytes_received, out.frames_received
        ));
        devices.push(d);
    }
    let (phone, laptop) = (&devices[0], &devices[1]);
    let catalog = phone.with(|n| n.replica_ref().catalog().clone());
    let names = Names(&catalog);

    // The deal: Bea's first deal.
    let deals = phone.with(|n| n.records())?;
    let mut target = None;
    for (id, kind) in &deals {
        if kind != "deal" {
            continue;
        }
        let p = phone.project(id)?;
        if p.record.fields.get(&key("owner_id")) == Some(&Value::Ref(rep.user_id)) {
            target = Some((id.clone(), p));
            break;
        }
    }
    let (id, before) = target.context("Bea owns a deal")?;
    let crm_id = phone
        .with(|n| n.project(&id))?
        .and_then(|p| p.record.crm_id)
        .context("the deal has a Zendesk id")?;
    let value_of = |p: &Projection, f: &str| {
        p.record
            .fields
            .get(&key(f))
            .map_or("-".to_owned(), |v| names.show(&key(f), v))
    };
    t.say(format!(
        "   The deal: \"{}\" (Zendesk {crm_id}): value {} {}, stage {}, closing {}, tags {{{}}}.",
        value_of(&before, "name"),
        value_of(&before, "value"),
        value_of(&before, "currency"),
        value_of(&before, "stage_id"),
        value_of(&before, "estimated_close_date"),
        before
            .record
            .tags
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    ));

    // 4. Bea, offline.
    let stages: Vec<u64> = catalog.stages.keys().copied().collect();
    let current_stage = match before.record.fields.get(&key("stage_id")) {
        Some(Value::Ref(s)) => *s,
        _ => stages[0],
    };
    let others: Vec<u64> = stages
        .iter()
        .copied()
        .filter(|s| {
            *s != current_stage
                && catalog
                    .stages
                    .get(s)
                    .is_some_and(|st| !["Won", "Lost", "Unqualified"].contains(&st.name.as_str()))
        })
        .collect();
    ensure!(others.len() >= 2, "the pipeline has two other open stages");
    let (bea_stage, web_stage) = (others[0], others[1]);
    let now = net::now_ms();
    phone.with(|n| {
        n.apply(
            &id,
            "at the trade fair",
            &[
                Edit::Set(key("value"), Value::Money(Money::from_cents(1_800_000))),
                Edit::Set(key("stage_id"), Value::Ref(bea_stage)),
                Edit::Set(
                    key("estimated_close_date"),
                    Value::Date("2027-02-15".parse()?),
                ),
                Edit::AddTag("fair".into()),
                Edit::AddNote {
                    id: "note-fair-1".parse()?,
                    content: "Met Jo at the booth: they want 3 more seats.".into(),
                },
                Edit::AddActivity {
                    id: "task-fair-1".parse()?,
                    kind: ActivityKind::Task,
                    fields: vec![(key("content"), Value::Text("Send the revised quote".into()))],
                },
            ],
            now,
        )
        .map_err(anyhow::Error::from)
    })?;
    t.say(format!(
        "4. {} goes offline at a trade fair: value 18000.00, stage {}, close 2027-02-15, tag fair,\n   a note and a task.",
        rep.name,
        names.show(&key("stage_id"), &Value::Ref(bea_stage))
    ));

    // 5. A colleague in Zendesk's web app.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut tags: Vec<String> = before.record.tags.iter().cloned().collect();
    tags.push("priority".into());
    web_app(
        &crm_url,
        &admin.token,
        reqwest::Method::PUT,
        &format!("/v2/deals/{crm_id}"),
        json!({
            "value": "16500.00",
            "stage_id": web_stage,
            "estimated_close_date": "2027-03-01",
            "tags": tags,
        }),
    )
    .await?;
    t.say(format!(
        "5. Meanwhile {} edits the deal in Zendesk: value 16500.00, stage {}, close 2027-03-01, tag priority.",
        admin.name,
        names.show(&key("stage_id"), &Value::Ref(web_stage))
    ));
    let pulled = bridge.pull().await?;
    t.say(format!(
        "   The bridge pulls it ({} record(s) changed), on the deal's shadow: concurrent with Bea's edits.",
        pulled.changed.len()
    ));

    // 6. Bea reconnects.
    phone.sync().await?;
    let pushed = bridge.push().await?;
    phone.sync().await?;
    let p = phone.project(&id)?;
    t.say(format!(
        "6. {} reconnects. Her phone and the hub exchange changes; the bridge pushes {} operation(s).",
        rep.name,
        pushed.pushed.len()
    ));
    t.say(format!(
        "   merged by themselves: tags {{{}}}",
        p.record.tags.iter().cloned().collect::<Vec<_>>().join(", ")
    ));
    for a in &p.record.activities {
        let what = a
            .content
            .clone()
            .or_else(|| a.fields.get(&key("content")).map(ToString::to_string))
            .unwrap_or_default();
        t.say(format!(
            "                         {} by {}: {what}",
            a.kind,
            names.user(a.created_by)
        ));
    }
    for n in &p.notifications {
        t.say(format!(
            "   notify tier: {} resolved to {} ({}, the later edit); {} is told {} was not kept",
            n.slot,
            n.kept,
            names.user(n.kept_by),
            names.user(n.to),
            n.yours
        ));
    }
    let mut seen = Vec::new();
    for c in &p.conflicts {
        if let Conflict::Field {
            slot,
            tier,
            candidates,
        } = c
        {
            t.say(format!(
                "   CONFLICT on {slot} ({tier} tier): not pushed until someone decides"
            ));
            for (i, cand) in candidates.iter().enumerate() {
                t.say(format!(
                    "     [{}] {:>12}  by {:<12} on {:<12} at {}",
                    i + 1,
                    names.show(&slot.field, &cand.value),
                    names.user(cand.by),
                    cand.device.as_str(),
                    clock(cand.at)
                ));
            }
            seen.push((
                slot.clone(),
                candidates.iter().map(|c| c.op.clone()).collect::<Vec<_>>(),
            ));
        }
    }
    ensure!(
        seen.iter().any(|(s, _)| s.field == key("value"))
            && seen.iter().any(|(s, _)| s.field == key("stage_id")),
        "value and stage should be in conflict: {:?}",
        p.conflicts
    );

    // 7. Bea resolves.
    let now = net::now_ms();
    for (slot, ops) in &seen {
        let choice = if slot.field == key("value") {
            Choice::Value(Value::Money(Money::from_cents(1_750_000)))
        } else {
            Choice::Mine
        };
        phone.with(|n| {
            n.act(&id, now, |rd, ctx| {
                rd.resolve_field(ctx, slot, ops, choice)
                    .map_err(|e| NodeError::Refused(e.to_string()))
            })
        })?;
    }
    t.say(format!(
        "7. {} decides: value 17500.00 (the price she agreed with Jo), her stage {}.",
        rep.name,
        names.show(&key("stage_id"), &Value::Ref(bea_stage))
    ));
    phone.sync().await?;
    let pushed = bridge.push().await?;
    t.say(format!(
        "   The hub receives the resolution; the bridge pushes {} operation(s) ({} requests).",
        pushed.pushed.len(),
        pushed.requests
    ));
    laptop.sync().await?;
    let seen_by_mate = laptop.project(&id)?;
    ensure!(
        seen_by_mate.conflicts.is_empty(),
        "the colleague's laptop still shows conflicts: {:?}",
        seen_by_mate.conflicts
    );
    t.say(format!(
        "8. {}'s laptop syncs: same deal, no conflicts, value {}.",
        mate.name,
        value_of(&seen_by_mate, "value")
    ));

    // 9. Zendesk now, and the audit trail.
    let deal =
        get_json(&crm_url, &admin.token, &format!("/v2/deals/{crm_id}")).await?["data"].clone();
    let notes = get_json(
        &crm_url,
        &admin.token,
        &format!("/v2/notes?resource_type=deal&resource_id={crm_id}&per_page=100"),
    )
    .await?;
    let tasks = get_json(
        &crm_url,
        &admin.token,
        &format!("/v2/tasks?resource_type=deal&resource_id={crm_id}&per_page=100"),
    )
    .await?;
    let contents = |page: &Json| -> Vec<String> {
        let mut v: Vec<String> = page["items"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|i| i["data"]["content"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    let mut final_tags: Vec<String> = deal["tags"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    final_tags.sort();
    let final_state = json!({
        "deal": {
            "id": crm_id,
            "name": deal["name"],
            "value": deal["value"],
            "currency": deal["currency"],
            "stage_id": deal["stage_id"],
            "estimated_close_date": deal["estimated_close_date"],
            "tags": final_tags,
        },
        "notes": contents(&notes),
        "tasks": contents(&tasks),
        "account": {
            "deals": count_all(&crm_url, &admin.token, "deals").await?,
            "contacts": count_all(&crm_url, &admin.token, "contacts").await?,
            "notes": count_all(&crm_url, &admin.token, "notes").await?,
            "tasks": count_all(&crm_url, &admin.token, "tasks").await?,
        },
    });
    t.say("9. The deal in Zendesk now:");
    for f in [
        "name",
        "value",
        "currency",
        "stage_id",
        "estimated_close_date",
    ] {
        let shown = match (f, &deal[f]) {
            ("stage_id", Json::Number(n)) => n
                .as_u64()
                .map_or(n.to_string(), |s| names.show(&key(f), &Value::Ref(s))),
            (_, Json::String(s)) => s.clone(),
            (_, v) => v.to_string(),
        };
        t.say(format!("     {f:<22} {shown}"));
    }
    t.say(format!("     {:<22} {}", "tags", final_tags.join(", ")));
    for n in contents(&notes) {
        t.say(format!("     {:<22} {n}", "note"));
    }
    for n in contents(&tasks) {
        t.say(format!("     {:<22} {n}", "task"));
    }
    let hub_view = {
        let mut n = hub.lock().unwrap_or_else(|e| e.into_inner());
        n.project(&id)?.context("the hub holds the deal")?
    };
    t.say("   Audit trail (every decision, automatic or not):");
    for e in &hub_view.audit {
        t.say(format!("     {}", audit_line(e, &names)));
    }
    if opts.faults > 0.0 {
        let mut by: std::collections::BTreeMap<String, u64> = Default::default();
        for r in sim.counters().routes.values() {
            for (status, n) in &r.by_status {
                if status == "dropped" || status == "429" || status.starts_with('5') {
                    *by.entry(status.clone()).or_default() += n;
                }
            }
        }
        let shown: Vec<String> = by.iter().map(|(k, v)| format!("{v} {k}")).collect();
        t.say(format!(
            "   Faults Zendesk injected along the way: {}.",
            if shown.is_empty() {
                "none".to_owned()
            } else {
                shown.join(", ")
            }
        ));
    }
    let status = bridge.status();
    t.say(format!(
        "   The bridge sent {} requests to Zendesk in all; errors recorded: {}.",
        bridge.crm().calls(),
        status.errors.len()
    ));

    // The story's promises, checked.
    ensure!(
        deal["value"] == json!(17500) || deal["value"] == json!("17500.00"),
        "Zendesk value: {}",
        deal["value"]
    );
    ensure!(
        deal["stage_id"] == json!(bea_stage),
        "Zendesk stage: {}",
        deal["stage_id"]
    );
    ensure!(
        deal["estimated_close_date"] == json!("2027-03-01"),
        "close date: {}",
        deal["estimated_close_date"]
    );
    ensure!(
        final_tags.contains(&"priority".to_owned()) && final_tags.contains(&"fair".to_owned()),
        "tags: {final_tags:?}"
    );
    ensure!(
        contents(&notes)
            .iter()
            .filter(|n| n.starts_with("Met Jo"))
            .count()
            == 1,
        "the note should be in Zendesk once: {:?}",
        contents(&notes)
    );
    ensure!(
        contents(&tasks)
            .iter()
            .filter(|n| n.starts_with("Send the revised"))
            .count()
            == 1,
        "the task should be in Zendesk once: {:?}",
        contents(&tasks)
    );
    t.say("");
    t.say(
        "Nothing was lost: the note, task and tags merged by themselves, the close date resolved",
    );
    t.say("by time with a notification, and value and stage waited for a person before going out.");
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&final_state)?);
    }
    let _ = stop_hub.send(());
    let _ = stop_sim.send(());
    Ok(())
}
