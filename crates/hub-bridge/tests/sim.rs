//! The bridge on a hub store against the simulator over real loopback HTTP.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sellsync_bridge::run::Limits;
use sellsync_hub_bridge::{Bridge, BridgeConfig, Crm, ZendeskHttp};
use sellsync_model::{
    Choice, Conflict, Edit, FieldKey, Money, RecordId, RecordKind, RecordState, UserId, Value,
};
use sellsync_service::net::SharedNode;
use sellsync_service::{Acl, Node, NodeError};
use sellsync_sim::{Fault, FaultConfig, FaultRule, Kind, Sim, SimConfig, demo_data, token_for};
use sellsync_store::{NodeIdentity, Role, Store, StoreRead};
use serde_json::{Value as Json, json};

const ADMIN: u64 = 2;

struct World {
    sim: Sim,
    url: String,
    node: SharedNode,
    bridge: Bridge<ZendeskHttp>,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn world(config: SimConfig) -> World {
    world_with(config, |_| {}).await
}

async fn world_with(config: SimConfig, bridge_config: impl FnOnce(&mut BridgeConfig)) -> World {
    let sim = Sim::new(demo_data(), config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(sellsync_sim::serve(listener, sim.clone(), async move {
        let _ = stopped.await;
    }));
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path().join("hub.redb")).unwrap());
    Node::init(
        &store,
        &NodeIdentity {
            device_id: "hub".parse().unwrap(),
            user_id: UserId(0),
            role: Role::Hub,
            hub_url: None,
            hub_token: None,
        },
    )
    .unwrap();
    let node: SharedNode = Arc::new(Mutex::new(Node::open(store, Some(Acl::default())).unwrap()));
    let crm = ZendeskHttp::new(&url, &token_for(ADMIN), 0.0, Duration::from_secs(10)).unwrap();
    let mut config = BridgeConfig {
        crm_url: url.clone(),
        limits: Limits {
            base_ms: 5,
            cap_ms: 50,
            ..Limits::default()
        },
        ..BridgeConfig::default()
    };
    bridge_config(&mut config);
    let bridge = Bridge::new(crm, node.clone(), config);
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

impl World {
    async fn api(&self, method: reqwest::Method, path: &str, body: Option<Json>) -> Json {
        let mut b = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(token_for(ADMIN));
        if let Some(body) = body {
            b = b.json(&json!({ "data": body }));
        }
        let resp = b.send().await.unwrap();
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        resp.json().await.unwrap_or(Json::Null)
    }

    async fn deal(&self, crm_id: u64) -> Json {
        self.api(reqwest::Method::GET, &format!("/v2/deals/{crm_id}"), None)
            .await["data"]
            .clone()
    }

    async fn all(&self, what: &str) -> Vec<Json> {
        let mut out = Vec::new();
        for page in 1..100 {
            let j = self
                .api(
                    reqwest::Method::GET,
                    &format!("/v2/{what}?page={page}&per_page=100"),
                    None,
                )
                .await;
            let items = j["items"].as_array().cloned().unwrap_or_default();
            let n = items.len();
            out.extend(items.into_iter().map(|i| i["data"].clone()));
            if n < 100 {
                break;
            }
        }
        out
    }

    fn on_node<R>(&self, f: impl FnOnce(&mut Node) -> R) -> R {
        let mut n = self.node.lock().unwrap();
        f(&mut n)
    }

    fn edit(&self, id: &RecordId, edits: &[Edit]) {
        self.on_node(|n| n.apply(id, "a rep's edit", edits, now()))
            .unwrap();
    }

    fn conflicts(&self, id: &RecordId) -> Vec<Conflict> {
        self.on_node(|n| n.project(id)).unwrap().unwrap().conflicts
    }
}

fn now() -> i64 {
    sellsync_service::net::now_ms()
}

fn key(s: &str) -> FieldKey {
    FieldKey::std(s)
}

fn deal_id(crm_id: u64) -> RecordId {
    format!("zd-{crm_id}").parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_is_whole_and_idempotent_and_leaves_nothing_to_push() {
    let w = world(SimConfig::default()).await;
    let r = w.bridge.import(&|_| {}).await.unwrap();
    assert_eq!(r.records, 90, "{:?}", r.skipped);
    assert!(r.activities > 0);
    let held = w.on_node(|n| n.records()).unwrap();
    assert_eq!(held.iter().filter(|(_, k)| k == "deal").count(), 50);
    assert!(w.on_node(|n| n.replica_ref().catalog().loaded));
    // Again: nothing new, nothing to push.
    let again = w.bridge.import(&|_| {}).await.unwrap();
    assert_eq!(again.records, 90);
    assert_eq!(w.on_node(|n| n.records()).unwrap().len(), held.len());
    let p = w.bridge.push().await.unwrap();
    assert!(p.pushed.is_empty(), "{:?}", p.pushed);
    // A pull right after an import writes nothing new either.
    w.bridge.pull().await.unwrap();
    assert!(w.bridge.push().await.unwrap().pushed.is_empty());
    let st = w.bridge.status();
    assert_eq!(st.crm_user, Some(ADMIN));
    assert_eq!(st.last_import.unwrap().result, "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_edits_meet_a_zendesk_change_as_a_conflict_and_the_resolution_goes_out() {
    let w = world(SimConfig::default()).await;
    w.bridge.import(&|_| {}).await.unwrap();
    w.bridge.pull().await.unwrap();
    let crm_id = w.all("deals").await[0]["id"].as_u64().unwrap();
    let id = deal_id(crm_id);
    // A rep's offline edits reach the hub.
    w.edit(
        &id,
        &[
            Edit::Set(key("value"), Value::Money(Money::from_cents(4_200_000))),
            Edit::Set(key("name"), Value::Text("Renamed offline".into())),
            Edit::AddTag("fair".into()),
            Edit::AddNote {
                id: "n-offline-1".parse().unwrap(),
                content: "Met at the fair".into(),
            },
        ],
    );
    // A colleague changes the value and a tag in Zendesk.
    w.api(
        reqwest::Method::PUT,
        &format!("/v2/deals/{crm_id}"),
        Some(json!({"value": "39000.00", "tags": ["web"]})),
    )
    .await;
    let pulled = w.bridge.pull().await.unwrap();
    assert!(pulled.changed.contains(&id), "{pulled:?}");
    let conflicts = w.conflicts(&id);
    let value_conflict = conflicts.iter().find_map(|c| match c {
        Conflict::Field {
            slot, candidates, ..
        } if slot.field == key("value") => Some(candidates.clone()),
        _ => None,
    });
    let candidates = value_conflict.expect("a value conflict");
    assert_eq!(candidates.len(), 2);
    // The push sends the name, the merged tags and the note; never the value.
    let p = w.bridge.push().await.unwrap();
    assert!(p.refused.is_empty() && p.gave_up.is_empty(), "{p:?}");
    let deal = w.deal(crm_id).await;
    assert_eq!(deal["name"], "Renamed offline");
    assert_eq!(deal["value"], 39000);
    let tags: Vec<&str> = deal["tags"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Json::as_str)
        .collect();
    assert!(tags.contains(&"fair") && tags.contains(&"web"), "{tags:?}");
    let notes = w.all("notes").await;
    let ours: Vec<_> = notes
        .iter()
        .filter(|n| n["content"] == "Met at the fair")
        .collect();
    assert_eq!(ours.len(), 1);
    // The rep resolves: their value. It goes out on the next push.
    let seen: Vec<String> = candidates.iter().map(|c| c.op.clone()).collect();
    w.on_node(|n| {
        n.act(&id, now(), |rd, ctx| {
            rd.resolve_field(
                ctx,
                &sellsync_model::Slot {
                    activity: None,
                    field: key("value"),
                },
                &seen,
                Choice::Value(Value::Money(Money::from_cents(4_100_000))),
            )
            .map_err(|e| NodeError::Refused(e.to_string()))
        })
    })
    .unwrap();
    let p = w.bridge.push().await.unwrap();
    assert_eq!(p.pushed.len(), 1, "{p:?}");
    assert_eq!(w.deal(crm_id).await["value"], 41000);
    assert!(w.conflicts(&id).is_empty());
    // Nothing more, and still exactly one note.
    assert!(w.bridge.push().await.unwrap().pushed.is_empty());
    w.bridge.pull().await.unwrap();
    assert!(w.bridge.push().await.unwrap().pushed.is_empty());
    assert_eq!(
        w.all("notes")
            .await
            .iter()
            .filter(|n| n["content"] == "Met at the fair")
            .count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_whose_answer_is_lost_is_made_once_and_a_422_is_a_conflict() {
    let w = world(SimConfig::default()).await;
    w.bridge.import(&|_| {}).await.unwrap();
    let stage = w.on_node(|n| {
        *n.replica_ref()
            .catalog()
            .stages
            .keys()
            .next()
            .expect("a stage")
    });
    let id: RecordId = "deal-offline-1".parse().unwrap();
    w.on_node(|n| {
        n.create(
            RecordKind::Deal,
            &id,
            vec![
                (key("name"), Value::Text("Made on a plane".into())),
                (key("value"), Value::Money(Money::from_cents(125_000))),
                (key("currency"), Value::Text("EUR".into())),
                (key("stage_id"), Value::Ref(stage)),
            ],
            now(),
        )
    })
    .unwrap();
    w.sim
        .set_faults(FaultConfig {
            seed: 1,
            rules: vec![FaultRule {
                route: "POST /v2/deals".into(),
                fault: Fault::DropAfterWrite,
                probability: 1.0,
                skip: 0,
                times: Some(1),
            }],
        })
        .unwrap();
    let p = w.bridge.push().await.unwrap();
    assert_eq!(p.pushed.len(), 1, "{p:?}");
    let made: Vec<Json> = w
        .all("deals")
        .await
        .into_iter()
        .filter(|d| d["name"] == "Made on a plane")
        .collect();
    assert_eq!(made.len(), 1);
    let crm_id = made[0]["id"].as_u64().unwrap();
    let mapped = w
        .on_node(|n| n.store().read().unwrap().crm_id(&id).unwrap())
        .unwrap();
    assert_eq!(mapped.id, crm_id);
    // A value Zendesk refuses: flagged on the field, the rest still goes.
    w.edit(
        &id,
        &[
            Edit::Set(key("currency"), Value::Text("ISK".into())),
            Edit::Set(key("hot"), Value::Bool(true)),
        ],
    );
    let p = w.bridge.push().await.unwrap();
    assert_eq!(p.refused.len(), 1, "{p:?}");
    assert_eq!(w.deal(crm_id).await["hot"], true);
    assert!(w.conflicts(&id).iter().any(|c| matches!(c,
        Conflict::Validation { slot, .. } if slot.field == key("currency"))));
    let st = w.bridge.status();
    assert!(
        st.errors.iter().any(|e| e.message.contains("refused")),
        "{st:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_api_failures_are_retried_and_polling_sees_changes_too() {
    let w = world(SimConfig::default()).await;
    w.bridge.import(&|_| {}).await.unwrap();
    w.sim
        .set_faults(FaultConfig {
            seed: 1,
            rules: vec![FaultRule {
                route: "POST /v2/sync/start".into(),
                fault: Fault::Error { status: 503 },
                probability: 1.0,
                skip: 0,
                times: Some(2),
            }],
        })
        .unwrap();
    // Transient failures of the Sync API are retried, not a reason to poll.
    let r = w.bridge.pull().await.unwrap();
    assert!(r.sync_api);
    let crm_id = w.all("deals").await[1]["id"].as_u64().unwrap();
    w.api(
        reqwest::Method::PUT,
        &format!("/v2/deals/{crm_id}"),
        Some(json!({"name": "Changed in Zendesk"})),
    )
    .await;
    let r = w.bridge.pull().await.unwrap();
    assert!(r.changed.contains(&deal_id(crm_id)));
    // The pull mode a token without sync scope ends up in: polling newest first.
    w.on_node(|n| n.store().write(|wr| wr.kv_put("bridge/pull_mode", b"poll")))
        .unwrap();
    w.api(
        reqwest::Method::PUT,
        &format!("/v2/deals/{crm_id}"),
        Some(json!({"name": "Changed in Zendesk again"})),
    )
    .await;
    let r = w.bridge.pull().await.unwrap();
    assert!(!r.sync_api);
    assert!(r.changed.contains(&deal_id(crm_id)), "{r:?}");
    // A second poll finds nothing newer than its mark.
    let r = w.bridge.pull().await.unwrap();
    assert!(r.changed.is_empty(), "{r:?}");
    let p = w.on_node(|n| n.project(&deal_id(crm_id))).unwrap().unwrap();
    assert_eq!(
        p.record.fields.get(&key("name")),
        Some(&Value::Text("Changed in Zendesk again".into()))
    );
    assert!(w.bridge.crm().calls() > 0);
}

/// Zendesk's stages by name.
fn stage_named(sim: &Sim, name: &str) -> u64 {
    let data = sim.dump();
    data.tables[&Kind::Stage]
        .iter()
        .find(|(_, r)| r.data.get("name").and_then(Json::as_str) == Some(name))
        .map(|(id, _)| *id)
        .unwrap()
}

/// Changes Zendesk's stages as an admin would in its settings: `remove` goes, `add` comes.
fn change_stages(sim: &Sim, remove: u64, add: &str) -> u64 {
    let mut data = sim.dump();
    let stages = data.tables.get_mut(&Kind::Stage).unwrap();
    let mut row = stages.remove(&remove).unwrap();
    let id = data.next_id;
    data.next_id += 1;
    row.data.insert("id".into(), json!(id));
    row.data.insert("name".into(), json!(add));
    data.tables.get_mut(&Kind::Stage).unwrap().insert(id, row);
    sim.seed(data);
    id
}

/// The conflicts view devices list (as stored, not projected afresh).
fn stored_conflicts(w: &World, id: &RecordId) -> Vec<Json> {
    w.on_node(|n| n.store().read().unwrap().conflicts(id).unwrap())
        .map(|b| serde_json::from_slice(&b).unwrap())
        .unwrap_or_default()
}

fn set_stage(w: &World, id: &RecordId, stage: u64) -> Result<(), NodeError> {
    w.on_node(|n| {
        n.apply(
            id,
            "stage",
            &[Edit::Set(key("stage_id"), Value::Ref(stage))],
            now(),
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_changes_in_zendesk_are_pulled_and_open_edits_are_validated_again() {
    let w = world_with(SimConfig::default(), |c| c.catalog_every = Duration::ZERO).await;
    w.bridge.import(&|_| {}).await.unwrap();
    let deals = w.all("deals").await;
    let (a, b) = (
        deal_id(deals[0]["id"].as_u64().unwrap()),
        deal_id(deals[1]["id"].as_u64().unwrap()),
    );
    // Offline, a rep moves deal a to "Unqualified"; then Zendesk's admin removes that stage
    // and adds "Demo booked".
    let unqualified = stage_named(&w.sim, "Unqualified");
    set_stage(&w, &a, unqualified).unwrap();
    let demo = change_stages(&w.sim, unqualified, "Demo booked");
    assert!(set_stage(&w, &b, demo).is_err(), "not in the catalog yet");

    w.bridge.round().await.unwrap();
    let catalog = w.on_node(|n| n.replica_ref().catalog().clone());
    assert!(catalog.stages.contains_key(&demo));
    assert!(!catalog.stages.contains_key(&unqualified));
    // The new stage is accepted now; the open edit became a validation conflict (in the view
    // devices list), and was not pushed.
    set_stage(&w, &b, demo).unwrap();
    let held = stored_conflicts(&w, &a);
    assert!(
        held.iter().any(|c| c["kind"] == "validation"
            && c["slot"]["field"] == "stage_id"
            && c["source"] == "catalog"),
        "{held:?}"
    );
    let a_crm = deals[0]["id"].as_u64().unwrap();
    assert_ne!(w.deal(a_crm).await["stage_id"], json!(unqualified));
    // The next round sends the new stage of deal b.
    w.bridge.round().await.unwrap();
    assert_eq!(
        w.deal(deals[1]["id"].as_u64().unwrap()).await["stage_id"],
        json!(demo)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_naming_a_catalog_entry_reads_the_catalog_at_once() {
    let w = world(SimConfig::default()).await;
    w.bridge.import(&|_| {}).await.unwrap();
    let crm_id = w.all("deals").await[0]["id"].as_u64().unwrap();
    let unqualified = stage_named(&w.sim, "Unqualified");
    set_stage(&w, &deal_id(crm_id), unqualified).unwrap();
    let demo = change_stages(&w.sim, unqualified, "Demo booked");
    // The catalog is not due (read at the import), but Zendesk refuses the stage.
    let (_, pushed) = w.bridge.round().await.unwrap();
    assert_eq!(pushed.refused.len(), 1, "{pushed:?}");
    let catalog = w.on_node(|n| n.replica_ref().catalog().clone());
    assert!(catalog.stages.contains_key(&demo));
    assert!(!catalog.stages.contains_key(&unqualified));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_shows_in_the_status_and_to_devices_and_the_history_survives() {
    let w = world(SimConfig::default()).await;
    w.bridge.import(&|_| {}).await.unwrap();
    w.bridge.pull().await.unwrap();
    let told = w.on_node(|n| n.crm_reach()).unwrap().unwrap();
    assert!(told.last_reached_ms.is_some() && told.unreachable_since_ms.is_none());

    w.sim
        .set_faults(FaultConfig {
            seed: 1,
            rules: vec![FaultRule {
                route: "*".into(),
                fault: Fault::DropBeforeWrite,
                probability: 1.0,
                skip: 0,
                times: None,
            }],
        })
        .unwrap();
    assert!(w.bridge.pull().await.is_err(), "an outage ends the pull");
    let st = w.bridge.status();
    let since = st
        .crm_reach
        .unreachable_since_ms
        .expect("the outage is shown");
    assert!(st.crm_reach.retries > 0, "{st:?}");
    assert!(
        st.crm_reach
            .last_error
            .as_deref()
            .unwrap()
            .contains("transport")
    );
    assert_ne!(st.last_pull.as_ref().unwrap().result, "ok");
    assert!(!st.errors.is_empty());
    let told = w.on_node(|n| n.crm_reach()).unwrap().unwrap();
    assert_eq!(told.unreachable_since_ms, Some(since));

    // Another bridge on the same store (a restarted hub, `bridge sync`) keeps the history.
    let crm = ZendeskHttp::new(&w.url, &token_for(ADMIN), 0.0, Duration::from_secs(10)).unwrap();
    let again = Bridge::new(crm, w.node.clone(), BridgeConfig::default());
    let kept = again.status();
    assert_eq!(kept.last_import.map(|r| r.result).as_deref(), Some("ok"));
    assert_eq!(kept.crm_reach.unreachable_since_ms, Some(since));
    assert_eq!(kept.errors, st.errors);

    w.sim.set_faults(FaultConfig::default()).unwrap();
    w.bridge.pull().await.unwrap();
    let st = w.bridge.status();
    assert_eq!(st.crm_reach.unreachable_since_ms, None);
    assert!(st.crm_reach.last_reached_ms.unwrap() >= since);
    let told = w.on_node(|n| n.crm_reach()).unwrap().unwrap();
    assert_eq!(told.unreachable_since_ms, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_finds_deletes_by_a_sweep_of_ids() {
    let w = world_with(SimConfig::default(), |c| {
        c.delete_sweep_every = Duration::ZERO
    })
    .await;
    w.bridge.import(&|_| {}).await.unwrap();
    w.on_node(|n| n.store().write(|wr| wr.kv_put("bridge/pull_mode", b"poll")))
        .unwrap();
    w.bridge.pull().await.unwrap();
    let deals = w.all("deals").await;
    let (quiet, edited) = (
        deals[2]["id"].as_u64().unwrap(),
        deals[3]["id"].as_u64().unwrap(),
    );
    // Offline, a rep edits one of them; Zendesk deletes both.
    w.edit(
        &deal_id(edited),
        &[Edit::Set(key("name"), Value::Text("Edited offline".into()))],
    );
    for id in [quiet, edited] {
        w.api(reqwest::Method::DELETE, &format!("/v2/deals/{id}"), None)
            .await;
    }
    let r = w.bridge.pull().await.unwrap();
    assert!(!r.sync_api);
    assert!(r.changed.contains(&deal_id(quiet)), "{r:?}");
    let p = w.on_node(|n| n.project(&deal_id(quiet))).unwrap().unwrap();
    assert_eq!(p.record.state, RecordState::Deleted);
    // Deleted while edited: a record conflict, never a silent loss.
    assert!(
        w.conflicts(&deal_id(edited))
            .iter()
            .any(|c| matches!(c, Conflict::Record { .. }))
    );
    // A deleted id is confirmed once, not read again by later sweeps.
    w.sim.reset_counters();
    let r = w.bridge.pull().await.unwrap();
    assert!(r.changed.is_empty(), "{r:?}");
    let reads = w
        .sim
        .counters()
        .routes
        .get("GET /v2/deals/{id}")
        .map_or(0, |c| c.requests);
    assert_eq!(reads, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_in_zendesk_before_the_first_sync_pull_reaches_the_hub() {
    let w = world(SimConfig::default()).await;
    w.bridge.import(&|_| {}).await.unwrap();
    let crm_id = w.all("deals").await[0]["id"].as_u64().unwrap();
    let id = deal_id(crm_id);
    // The Sync API reports a delete only to a device that acknowledged the object once; the
    // bridge's Sync device has acknowledged nothing yet.
    w.api(
        reqwest::Method::DELETE,
        &format!("/v2/deals/{crm_id}"),
        None,
    )
    .await;
    let pulled = w.bridge.pull().await.unwrap();
    assert!(pulled.sync_api, "{pulled:?}");
    assert!(pulled.changed.contains(&id), "{pulled:?}");
    let p = w.on_node(|n| n.project(&id)).unwrap().unwrap();
    assert_eq!(p.record.state, RecordState::Deleted, "{p:?}");
    // Nothing goes back to Zendesk, and the next pull does not sweep again before its time.
    assert!(w.bridge.push().await.unwrap().pushed.is_empty());
    let before = w.sim.counters().total;
    w.bridge.pull().await.unwrap();
    assert!(w.sim.counters().total - before < 5, "a second sweep ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deal_the_bridge_created_and_zendesk_deleted_before_a_pull_reaches_the_hub() {
    let w = world_with(SimConfig::default(), |c| {
        c.delete_sweep_every = Duration::ZERO
    })
    .await;
    w.bridge.import(&|_| {}).await.unwrap();
    w.bridge.pull().await.unwrap();
    let id: RecordId = "deal-made-offline".parse().unwrap();
    w.on_node(|n| {
        n.create(
            RecordKind::Deal,
            &id,
            vec![
                (key("name"), Value::Text("Made offline".into())),
                (key("value"), Value::Money(Money::from_cents(5_000))),
                (key("currency"), Value::Text("USD".into())),
            ],
            now(),
        )
    })
    .unwrap();
    assert_eq!(w.bridge.push().await.unwrap().pushed.len(), 1);
    let crm_id = w
        .all("deals")
        .await
        .iter()
        .find(|d| d["name"] == "Made offline")
        .and_then(|d| d["id"].as_u64())
        .unwrap();
    // Deleted in the web app before any drain delivered it to the bridge's Sync device: the
    // Sync API never reports it; the sweep finds it.
    w.api(
        reqwest::Method::DELETE,
        &format!("/v2/deals/{crm_id}"),
        None,
    )
    .await;
    let pulled = w.bridge.pull().await.unwrap();
    assert!(pulled.sync_api, "{pulled:?}");
    let p = w.on_node(|n| n.project(&id)).unwrap().unwrap();
    assert_eq!(p.record.state, RecordState::Deleted, "{p:?}");
    assert!(w.bridge.push().await.unwrap().pushed.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_zendesk_fills_in_on_a_create_reaches_the_document() {
    let w = world(SimConfig::default()).await;
    w.bridge.import(&|_| {}).await.unwrap();
    let id: RecordId = "deal-without-stage".parse().unwrap();
    // Made on a device that had no catalog yet: no stage, no `hot`.
    w.on_node(|n| {
        n.create(
            RecordKind::Deal,
            &id,
            vec![
                (key("name"), Value::Text("No stage given".into())),
                (key("value"), Value::Money(Money::from_cents(5_000))),
                (key("currency"), Value::Text("USD".into())),
            ],
            now(),
        )
    })
    .unwrap();
    let p = w.bridge.push().await.unwrap();
    assert_eq!(p.pushed.len(), 1, "{p:?}");
    let crm_id = w
        .on_node(|n| n.store().read().unwrap().crm_id(&id).unwrap())
        .unwrap()
        .id;
    let deal = w.deal(crm_id).await;
    let stage = deal["stage_id"]
        .as_u64()
        .expect("Zendesk gives a new deal a stage");
    let record = w.on_node(|n| n.project(&id)).unwrap().unwrap().record;
    assert_eq!(
        record.fields.get(&key("stage_id")),
        Some(&Value::Ref(stage))
    );
    assert_eq!(record.fields.get(&key("hot")), Some(&Value::Bool(false)));
    // They are Zendesk's values: nothing goes back, and a pull changes nothing.
    assert!(w.bridge.push().await.unwrap().pushed.is_empty());
    w.bridge.pull().await.unwrap();
    assert!(w.bridge.push().await.unwrap().pushed.is_empty());
}
