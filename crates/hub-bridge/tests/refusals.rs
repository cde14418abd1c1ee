//! Off the happy path, against the simulator over loopback HTTP: what Zendesk refuses becomes a
//! conflict on the thing it refused while the rest still goes; a Zendesk delete settles with its
//! children; a restored record is created again with them, once.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use automerge::ReadDoc;
use automerge::transaction::Transactable;
use sellsync_bridge::run::Limits;
use sellsync_hub_bridge::{Bridge, BridgeConfig, Crm, ZendeskHttp};
use sellsync_model::{
    ActivityId, Conflict, Edit, FieldKey, RecordChoice, RecordId, RecordState, UserId, Value,
};
use sellsync_service::net::SharedNode;
use sellsync_service::{Acl, Node, NodeError};
use sellsync_sim::{Fault, FaultConfig, FaultRule, Sim, SimConfig, demo_data, token_for};
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

async fn world() -> World {
    let sim = Sim::new(demo_data(), SimConfig::default());
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
    let bridge = Bridge::new(
        crm,
        node.clone(),
        BridgeConfig {
            crm_url: url.clone(),
            limits: Limits {
                base_ms: 5,
                cap_ms: 50,
                ..Limits::default()
            },
            ..BridgeConfig::default()
        },
    );
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

    /// The invariant: every record the bridge keeps queued has an open conflict that names it
    /// and that a device can settle.
    fn assert_nothing_waits_unseen(&self) {
        let pending: BTreeSet<RecordId> = self.on_node(|n| {
            n.store()
                .read()
                .unwrap()
                .kv_get("bridge/pending")
                .unwrap()
                .map(|b| serde_json::from_slice(&b).unwrap())
                .unwrap_or_default()
        });
        for id in pending {
            let settleable = self.conflicts(&id).iter().any(|c| {
                matches!(
                    c,
                    Conflict::Record { .. }
                        | Conflict::Refused { .. }
                        | Conflict::Permission { .. }
                        | Conflict::Validation { .. }
                        | Conflict::Field { .. }
                )
            });
            assert!(settleable, "{id} is queued without an open conflict");
        }
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

/// A deal of the demo data with at least one note, and its notes' contents.
async fn deal_with_notes(w: &World) -> (u64, Vec<String>) {
    let notes = w.all("notes").await;
    let crm_id = notes
        .iter()
        .find(|n| n["resource_type"] == "deal")
        .and_then(|n| n["resource_id"].as_u64())
        .expect("a demo note on a deal");
    let contents = notes
        .iter()
        .filter(|n| n["resource_type"] == "deal" && n["resource_id"] == crm_id)
        .filter_map(|n| n["content"].as_str().map(str::to_owned))
        .collect();
    (crm_id, contents)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_note_waits_alone_as_a_conflict_a_device_settles() {
    let w = world().await;
    w.bridge.import(&|_| {}).await.unwrap();
    w.bridge.pull().await.unwrap();
    let crm_id = w.all("deals").await[0]["id"].as_u64().unwrap();
    let id = deal_id(crm_id);
    let note: ActivityId = "n-blank".parse().unwrap();
    w.edit(
        &id,
        &[Edit::AddNote {
            id: note.clone(),
            content: "x".into(),
        }],
    );
    // A note emptied by a device that did not check (an older version): the edit API refuses
    // it, so it is written into the document directly.
    w.on_node(|n| {
        n.act(&id, now(), |rd, _| {
            let am = rd.automerge_mut();
            let (_, acts) = am
                .get(automerge::ROOT, "activities")
                .unwrap()
                .expect("activities");
            let (_, act) = am.get(&acts, note.as_str()).unwrap().expect("the note");
            let (_, text) = am.get(&act, "content").unwrap().expect("its text");
            let mut tx = am.transaction();
            tx.splice_text(&text, 0, 1, "").unwrap();
            tx.commit();
            Ok::<_, NodeError>(())
        })
    })
    .unwrap();
    let hot = w.all("deals").await[0]["hot"].as_bool().unwrap_or(false);
    w.edit(&id, &[Edit::Set(key("hot"), Value::Bool(!hot))]);

    let p = w.bridge.push().await.unwrap();
    assert_eq!(p.refused.len(), 1, "{p:?}");
    // The deal's other change went.
    let deal = w
        .api(reqwest::Method::GET, &format!("/v2/deals/{crm_id}"), None)
        .await;
    assert_eq!(deal["data"]["hot"], !hot);
    // The refusal is a conflict on the note, with Zendesk's message.
    let refused = w.conflicts(&id).into_iter().find_map(|c| match c {
        Conflict::Refused {
            activity: Some(a),
            message,
            ..
        } if a == note => Some(message),
        _ => None,
    });
    let message = refused.expect("a conflict on the refused note");
    assert!(message.contains("content"), "{message}");
    assert!(
        !w.conflicts(&id)
            .iter()
            .any(|c| matches!(c, Conflict::Permission { .. })),
        "{:?}",
        w.conflicts(&id)
    );
    w.assert_nothing_waits_unseen();
    // The refused note is not sent again as it is; later edits of the deal still go.
    w.edit(&id, &[Edit::Set(key("hot"), Value::Bool(hot))]);
    let p = w.bridge.push().await.unwrap();
    assert!(p.refused.is_empty(), "{p:?}");
    assert_eq!(p.pushed.len(), 1, "{p:?}");
    w.assert_nothing_waits_unseen();
    // Fixed from a device: it goes.
    w.edit(
        &id,
        &[Edit::SetNoteText {
            id: note.clone(),
            text: "Called, no answer".into(),
        }],
    );
    let p = w.bridge.push().await.unwrap();
    assert_eq!(p.pushed.len(), 1, "{p:?}");
    assert!(w.conflicts(&id).is_empty());
    assert_eq!(
        w.all("notes")
            .await
            .iter()
            .filter(|n| n["content"] == "Called, no answer")
            .count(),
        1
    );
    w.assert_nothing_waits_unseen();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deal_deleted_in_zendesk_settles_in_one_round_with_its_notes() {
    let w = world().await;
    w.bridge.import(&|_| {}).await.unwrap();
    w.bridge.round().await.unwrap();
    let (crm_id, notes) = deal_with_notes(&w).await;
    assert!(!notes.is_empty());
    let id = deal_id(crm_id);
    w.api(
        reqwest::Method::DELETE,
        &format!("/v2/deals/{crm_id}"),
        None,
    )
    .await;
    let (pulled, pushed) = w.bridge.round().await.unwrap();
    assert!(pulled.deferred.is_empty(), "{pulled:?}");
    assert!(
        pushed.pushed.is_empty(),
        "no DELETE for a deleted deal: {pushed:?}"
    );
    let p = w.on_node(|n| n.project(&id)).unwrap().unwrap();
    assert_eq!(p.record.state, RecordState::Deleted);
    assert!(p.conflicts.is_empty(), "{:?}", p.conflicts);
    let st = w.bridge.status();
    assert_eq!(st.queue, 0, "{st:?}");
    assert!(st.errors.is_empty(), "{:?}", st.errors);
    w.assert_nothing_waits_unseen();
    // An idle round costs one request.
    let before = w.bridge.crm().calls();
    let (pulled, pushed) = w.bridge.round().await.unwrap();
    assert!(pulled.deferred.is_empty() && pushed.pushed.is_empty());
    assert_eq!(w.bridge.crm().calls() - before, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_deal_is_created_again_with_its_notes_once_under_a_new_id() {
    let w = world().await;
    w.bridge.import(&|_| {}).await.unwrap();
    w.bridge.round().await.unwrap();
    let (old, notes) = deal_with_notes(&w).await;
    let id = deal_id(old);
    let deals_before = w.all("deals").await.len();
    // A rep edits the deal offline while a colleague deletes it in Zendesk.
    w.edit(
        &id,
        &[
            Edit::Set(key("name"), Value::Text("Kept alive".into())),
            Edit::AddNote {
                id: "n-offline".parse().unwrap(),
                content: "Still interested".into(),
            },
        ],
    );
    w.api(reqwest::Method::DELETE, &format!("/v2/deals/{old}"), None)
        .await;
    w.bridge.round().await.unwrap();
    let seen: Vec<String> = w
        .conflicts(&id)
        .iter()
        .find_map(|c| match c {
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
        })
        .expect("a record conflict");
    w.assert_nothing_waits_unseen();
    w.on_node(|n| {
        n.act(&id, now(), |rd, ctx| {
            rd.resolve_record(ctx, &seen, RecordChoice::Restore)
                .map_err(|e| NodeError::Refused(e.to_string()))
        })
    })
    .unwrap();
    // The answers to the creates are lost once each: the lookups find what was made.
    w.sim
        .set_faults(FaultConfig {
            seed: 1,
            rules: ["POST /v2/deals", "POST /v2/notes"]
                .into_iter()
                .map(|route| FaultRule {
                    route: route.into(),
                    fault: Fault::DropAfterWrite,
                    probability: 1.0,
                    skip: 0,
                    times: Some(1),
                })
                .collect(),
        })
        .unwrap();
    w.bridge.round().await.unwrap();
    w.bridge.round().await.unwrap();
    let deals = w.all("deals").await;
    assert_eq!(deals.len(), deals_before, "the deal once, not twice");
    let made: Vec<&Json> = deals.iter().filter(|d| d["name"] == "Kept alive").collect();
    assert_eq!(made.len(), 1);
    let new = made[0]["id"].as_u64().unwrap();
    assert_ne!(new, old);
    let mapped = w.on_node(|n| n.store().read().unwrap().crm_id(&id).unwrap());
    assert_eq!(mapped.map(|c| c.id), Some(new));
    let on_new: Vec<String> = w
        .all("notes")
        .await
        .into_iter()
        .filter(|n| n["resource_type"] == "deal" && n["resource_id"] == new)
        .filter_map(|n| n["content"].as_str().map(str::to_owned))
        .collect();
    let mut want = notes.clone();
    want.push("Still interested".into());
    want.sort();
    let mut got = on_new.clone();
    got.sort();
    assert_eq!(got, want, "every note once");
    assert!(w.conflicts(&id).is_empty(), "{:?}", w.conflicts(&id));
    // Settled: nothing more to send.
    let (_, pushed) = w.bridge.round().await.unwrap();
    assert!(pushed.pushed.is_empty(), "{pushed:?}");
    w.assert_nothing_waits_unseen();
}
