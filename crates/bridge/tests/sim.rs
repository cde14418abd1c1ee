//! Scenarios: the bridge's pure core driven against the simulator in process (no sockets).

use std::collections::BTreeMap;

use axum::body::Body;
use sellsync_bridge::mapping::{self, CatalogPages};
use sellsync_bridge::pull::{self, Shadow, WriteCtx};
use sellsync_bridge::push::{self, PushInput};
use sellsync_bridge::run::{Event, Limits, PushRun};
use sellsync_bridge::zendesk::{self, HttpResponse};
use sellsync_bridge::{CrmError, CrmRequest, CrmResponse, Resource};
use sellsync_model::{
    AssumeLive, Author, Catalog, Conflict, Edit, EditCtx, FieldKey, FlagKind, Money, Policy,
    ProjectCtx, RecordDoc, RecordKind, UserId, Value,
};
use sellsync_sim::{Sim, SimConfig, demo_data, token_for};
use serde_json::{Value as Json, json};
use tower::ServiceExt;

const ADMIN: u64 = 2;

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b':' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn call(sim: &Sim, user: u64, req: &CrmRequest) -> Result<CrmResponse, CrmError> {
    zendesk::response(req, &raw(sim, user, req).await)
}

async fn raw(sim: &Sim, user: u64, req: &CrmRequest) -> HttpResponse {
    let h = zendesk::request(req);
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
        .header("Authorization", format!("Bearer {}", token_for(user)))
        .header("Accept", "application/json")
        .header("User-Agent", "sellsync-bridge-test");
    for (k, v) in &h.headers {
        b = b.header(k, v);
    }
    let body = match h.body {
        Some(bytes) => {
            b = b.header("Content-Type", "application/json");
            Body::from(bytes)
        }
        None => Body::empty(),
    };
    let resp = sellsync_sim::app(sim.clone())
        .oneshot(b.body(body).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 24)
        .await
        .unwrap();
    HttpResponse {
        status,
        headers: Vec::new(),
        body: bytes.to_vec(),
    }
}

async fn list_all(sim: &Sim, resource: Resource) -> Vec<Json> {
    let mut out = Vec::new();
    for page in 1..1000 {
        let req = CrmRequest::List {
            resource,
            page,
            per_page: 100,
            filters: vec![],
            sort_by: None,
        };
        let Ok(CrmResponse::Page { items, more }) = call(sim, ADMIN, &req).await else {
            panic!("list {resource:?}")
        };
        out.extend(items);
        if !more {
            break;
        }
    }
    out
}

fn typed<T: serde::de::DeserializeOwned>(items: Vec<Json>) -> Vec<T> {
    items
        .into_iter()
        .map(|i| serde_json::from_value(i).unwrap())
        .collect()
}

async fn import_catalog(sim: &Sim) -> Catalog {
    mapping::catalog_of(&CatalogPages {
        pipelines: typed(list_all(sim, Resource::Pipeline).await),
        stages: typed(list_all(sim, Resource::Stage).await),
        users: typed(list_all(sim, Resource::User).await),
        loss_reasons: typed(list_all(sim, Resource::LossReason).await),
        sources: typed(list_all(sim, Resource::DealSource).await),
        deal_fields: typed(list_all(sim, Resource::DealCustomFields).await),
        contact_fields: typed(list_all(sim, Resource::ContactCustomFields).await),
    })
}

struct World {
    sim: Sim,
    catalog: Catalog,
    policy: Policy,
    docs: BTreeMap<u64, (RecordDoc, Shadow)>,
}

impl World {
    fn wctx(&self, now_ms: i64) -> WriteCtx<'_> {
        WriteCtx {
            now_ms,
            catalog: &self.catalog,
            policy: &self.policy,
        }
    }

    fn project(&self, id: u64) -> sellsync_model::Projection {
        self.docs[&id].0.project(&ProjectCtx {
            catalog: &self.catalog,
            policy: &self.policy,
            directory: &AssumeLive,
        })
    }

    /// Pushes every record through a run against the simulator as `user`; returns the events.
    async fn push(&mut self, user: u64, now_ms: i64) -> Vec<Event> {
        let views: Vec<_> = self
            .docs
            .values()
            .map(|(doc, s)| {
                let p = doc.project(&ProjectCtx {
                    catalog: &self.catalog,
                    policy: &self.policy,
                    directory: &AssumeLive,
                });
                (doc.push_view(&p), s.clone(), push::heads_of(doc))
            })
            .collect();
        let inputs: Vec<PushInput<'_>> = views
            .iter()
            .map(|(v, s, h)| PushInput {
                view: v,
                shadow: Some(s),
                heads: h,
            })
            .collect();
        let plan = push::plan(&inputs, &|_| None);
        let mut run = PushRun::new(plan, Limits::default());
        let mut events = Vec::new();
        for _ in 0..100 {
            let Some(req) = run.next_request() else { break };
            let res = call(&self.sim, user, &req).await;
            for e in run.on_result(res, 0.5) {
                self.apply(&e, &mut run, now_ms);
                events.push(e);
            }
        }
        events
    }

    fn doc_of(&mut self, record: &sellsync_model::RecordId) -> &mut (RecordDoc, Shadow) {
        self.docs
            .values_mut()
            .find(|(d, _)| d.id() == record)
            .unwrap()
    }

    fn apply(&mut self, e: &Event, run: &mut PushRun, now_ms: i64) {
        let author = Author {
            user: UserId(ADMIN),
            device: pull::bridge_device(),
        };
        let (catalog, policy) = (self.catalog.clone(), self.policy.clone());
        let ctx = EditCtx {
            author: &author,
            now_ms,
            catalog: &catalog,
            policy: &policy,
        };
        let wctx = WriteCtx {
            now_ms,
            catalog: &catalog,
            policy: &policy,
        };
        match e {
            Event::Pushed { op, data } => {
                let (doc, shadow) = self.doc_of(&op.record);
                let mut s = Some(shadow.clone());
                push::on_success(doc, &mut s, op, data, &wctx).unwrap();
                *shadow = s.unwrap();
            }
            Event::Refused { op, error } => {
                let (doc, _) = self.doc_of(&op.record);
                let (kind, field, msg) = match error {
                    CrmError::Validation { field, message } => {
                        (FlagKind::Validation, field.clone(), message.clone())
                    }
                    other => (FlagKind::Permission, None, other.to_string()),
                };
                let flagged =
                    push::on_refused(doc, op, kind, field.as_deref(), &msg, &ctx).unwrap();
                if let Some(rest) = flagged.and_then(|f| push::without_field(op, &f)) {
                    run.retry_first(rest);
                }
            }
            _ => {}
        }
    }
}

async fn import(sim: Sim) -> World {
    let catalog = import_catalog(&sim).await;
    let mut w = World {
        sim,
        catalog,
        policy: Policy::default(),
        docs: BTreeMap::new(),
    };
    for (resource, kind) in [
        (Resource::Contact, RecordKind::Contact),
        (Resource::Deal, RecordKind::Deal),
    ] {
        for data in list_all(&w.sim, resource).await {
            let (id, image) = mapping::record_image(kind, &data, &w.catalog).unwrap();
            let (doc, shadow, report) = pull::pull_new(kind, id, image, &w.wctx(1_000)).unwrap();
            assert!(report.refused.is_empty(), "{id}: {:?}", report.refused);
            w.docs.insert(id, (doc, shadow));
        }
    }
    w
}

fn first_deal(w: &World, owner: Option<u64>) -> u64 {
    *w.docs
        .iter()
        .find(|(_, (d, _))| {
            d.kind() == RecordKind::Deal
                && owner.is_none_or(|o| {
                    let p = d.project(&ProjectCtx {
                        catalog: &w.catalog,
                        policy: &w.policy,
                        directory: &AssumeLive,
                    });
                    p.record.fields.get(&FieldKey::std("owner_id")) == Some(&Value::Ref(o))
                })
        })
        .unwrap()
        .0
}

fn device_edit(w: &mut World, id: u64, edits: &[Edit]) {
    // A device that synced the document, edited offline, and synced back.
    let author = Author {
        user: UserId(3),
        device: "phone-1".parse().unwrap(),
    };
    let (catalog, policy) = (w.catalog.clone(), w.policy.clone());
    let ctx = EditCtx {
        author: &author,
        now_ms: 2_000_000,
        catalog: &catalog,
        policy: &policy,
    };
    let (doc, _) = w.docs.get_mut(&id).unwrap();
    let mut phone = doc.fork(&author.device);
    phone.apply(&ctx, "offline edit", edits).unwrap();
    doc.merge(&mut phone).unwrap();
}

async fn crm_get(w: &World, id: u64) -> Json {
    let req = CrmRequest::Get {
        resource: Resource::Deal,
        id,
    };
    match call(&w.sim, ADMIN, &req).await {
        Ok(CrmResponse::One(d)) => d,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_demo_data_imports_whole() {
    let w = import(Sim::new(demo_data(), SimConfig::default())).await;
    let deals = w
        .docs
        .values()
        .filter(|(d, _)| d.kind() == RecordKind::Deal)
        .count();
    assert_eq!(deals, 50);
    assert_eq!(w.docs.len(), 90);
    assert!(w.catalog.loaded && !w.catalog.stages.is_empty());
    for (id, (doc, shadow)) in &w.docs {
        assert_eq!(doc.crm_id(), Some(*id));
        let p = w.project(*id);
        assert!(p.conflicts.is_empty());
        for (k, v) in &shadow.image.fields {
            assert_eq!(p.record.fields.get(k), Some(v), "{id} {k}");
        }
    }
    // Nothing to push right after an import.
    let mut w = w;
    assert!(w.push(ADMIN, 3_000_000).await.is_empty());
}

#[tokio::test]
async fn a_concurrent_crm_change_gives_a_conflict_and_the_push_sends_only_the_rest() {
    let mut w = import(Sim::new(demo_data(), SimConfig::default())).await;
    let id = first_deal(&w, None);
    device_edit(
        &mut w,
        id,
        &[
            Edit::Set(
                FieldKey::std("value"),
                Value::Money(Money::from_cents(777_700)),
            ),
            Edit::Set(FieldKey::std("name"), Value::Text("Renamed offline".into())),
            Edit::AddTag("offline".into()),
        ],
    );
    // A colleague changes the value in Zendesk meanwhile.
    let mut body = serde_json::Map::new();
    body.insert("value".into(), json!("999.00"));
    let put = CrmRequest::Update {
        resource: Resource::Deal,
        id,
        body,
    };
    call(&w.sim, ADMIN, &put).await.unwrap();
    // Push first: the re-read sees the move and asks for a pull.
    let events = w.push(ADMIN, 3_000_000).await;
    let moved = events
        .iter()
        .find_map(|e| match e {
            Event::Moved { data, .. } => Some(data.clone()),
            _ => None,
        })
        .expect("moved");
    let (_, image) = mapping::record_image(RecordKind::Deal, &moved, &w.catalog).unwrap();
    let (catalog, policy) = (w.catalog.clone(), w.policy.clone());
    let wctx = WriteCtx {
        now_ms: 3_000_000,
        catalog: &catalog,
        policy: &policy,
    };
    let (doc, shadow) = w.docs.get_mut(&id).unwrap();
    let report = pull::pull_update(doc, shadow, image, &wctx).unwrap();
    assert_eq!(report.written, [FieldKey::std("value")]);
    let p = w.project(id);
    assert!(p.conflicts.iter().any(|c| matches!(c,
        Conflict::Field { slot, candidates, .. }
            if slot.field == FieldKey::std("value") && candidates.len() == 2)));
    // Plan again: name and tags go, the value in conflict does not.
    let events = w.push(ADMIN, 4_000_000).await;
    let pushed: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Pushed { op, .. } => Some(op.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(pushed.len(), 1);
    assert_eq!(pushed[0].fields, [FieldKey::std("name")]);
    assert!(!pushed[0].body.contains_key("value"));
    let deal = crm_get(&w, id).await;
    assert_eq!(deal["name"], "Renamed offline");
    assert_eq!(deal["value"], 999);
    assert!(deal["tags"].as_array().unwrap().contains(&json!("offline")));
    // And nothing more to push.
    assert!(w.push(ADMIN, 5_000_000).await.is_empty());
}

#[tokio::test]
async fn a_422_flags_the_field_and_the_rest_still_goes() {
    let mut w = import(Sim::new(demo_data(), SimConfig::default())).await;
    let id = first_deal(&w, None);
    device_edit(
        &mut w,
        id,
        &[
            Edit::Set(FieldKey::std("currency"), Value::Text("ISK".into())),
            Edit::Set(FieldKey::std("hot"), Value::Bool(true)),
        ],
    );
    let events = w.push(ADMIN, 3_000_000).await;
    assert!(events.iter().any(|e| matches!(e, Event::Refused { .. })));
    let p = w.project(id);
    assert!(p.conflicts.iter().any(|c| matches!(c,
        Conflict::Validation { slot, source, .. }
            if slot.field == FieldKey::std("currency") && source == "crm")));
    let deal = crm_get(&w, id).await;
    assert_eq!(deal["hot"], true);
    assert_ne!(deal["currency"], "ISK");
}

#[tokio::test]
async fn a_403_becomes_a_permission_conflict() {
    let mut w = import(Sim::new(demo_data(), SimConfig::default())).await;
    // Users 3 and 4 are team North; 5 and 6 South. A North user edits a South deal.
    let south: u64 = w
        .sim
        .tokens()
        .iter()
        .find(|t| t.team.as_deref() == Some("South"))
        .unwrap()
        .user_id;
    let north: u64 = w
        .sim
        .tokens()
        .iter()
        .find(|t| t.team.as_deref() == Some("North"))
        .unwrap()
        .user_id;
    let id = first_deal(&w, Some(south));
    device_edit(
        &mut w,
        id,
        &[Edit::Set(
            FieldKey::std("name"),
            Value::Text("Edited in the North".into()),
        )],
    );
    let before = crm_get(&w, id).await;
    let events = w.push(north, 3_000_000).await;
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Refused {
            error: CrmError::Forbidden(_),
            ..
        }
    )));
    assert!(
        w.project(id)
            .conflicts
            .iter()
            .any(|c| matches!(c, Conflict::Permission { .. }))
    );
    assert_eq!(crm_get(&w, id).await, before);
}

#[tokio::test]
async fn a_lost_create_response_does_not_make_a_duplicate() {
    let w = import(Sim::new(demo_data(), SimConfig::default())).await;
    let author = Author {
        user: UserId(ADMIN),
        device: "phone-1".parse().unwrap(),
    };
    let ctx = EditCtx {
        author: &author,
        now_ms: 2_000_000,
        catalog: &w.catalog,
        policy: &w.policy,
    };
    let doc = RecordDoc::create(
        RecordKind::Deal,
        "offline-deal-1".parse().unwrap(),
        sellsync_model::RegisterLayout::Packed,
        &ctx,
        vec![
            (FieldKey::std("name"), Value::Text("Made offline".into())),
            (
                FieldKey::std("value"),
                Value::Money(Money::from_cents(1250)),
            ),
        ],
    )
    .unwrap();
    let p = doc.project(&ProjectCtx {
        catalog: &w.catalog,
        policy: &w.policy,
        directory: &AssumeLive,
    });
    let view = doc.push_view(&p);
    let heads = push::heads_of(&doc);
    let plan = push::plan(
        &[PushInput {
            view: &view,
            shadow: None,
            heads: &heads,
        }],
        &|_| None,
    );
    assert_eq!(plan.ops.len(), 1);
    let before = list_all(&w.sim, Resource::Deal).await.len();
    let mut run = PushRun::new(plan, Limits::default());
    // The create reaches Zendesk but its answer is lost.
    let req = run.next_request().unwrap();
    assert!(matches!(req, CrmRequest::Create { .. }));
    call(&w.sim, ADMIN, &req).await.unwrap();
    assert!(matches!(
        run.on_result(Err(CrmError::Transport("reset".into())), 0.0)[..],
        [Event::Backoff(_)]
    ));
    // The bridge crashes here and restarts from its checkpoint.
    let mut run: PushRun = serde_json::from_str(&serde_json::to_string(&run).unwrap()).unwrap();
    run.resume();
    let req = run.next_request().unwrap();
    assert!(matches!(req, CrmRequest::List { .. }));
    let events = run.on_result(call(&w.sim, ADMIN, &req).await, 0.0);
    assert!(matches!(&events[..], [Event::Pushed { .. }]));
    assert!(run.next_request().is_none());
    assert_eq!(list_all(&w.sim, Resource::Deal).await.len(), before + 1);
}

#[tokio::test]
async fn a_zendesk_delete_of_an_edited_deal_found_by_a_push_is_a_record_conflict() {
    let mut w = import(Sim::new(demo_data(), SimConfig::default())).await;
    let id = first_deal(&w, None);
    device_edit(
        &mut w,
        id,
        &[Edit::Set(
            FieldKey::std("name"),
            Value::Text("Edited offline".into()),
        )],
    );
    let del = CrmRequest::Delete {
        resource: Resource::Deal,
        id,
    };
    assert_eq!(call(&w.sim, ADMIN, &del).await, Ok(CrmResponse::Deleted));
    let events = w.push(ADMIN, 3_000_000).await;
    let [Event::Gone { op }] = &events[..] else {
        panic!("{events:?}");
    };
    let op = op.clone();
    let (catalog, policy) = (w.catalog.clone(), w.policy.clone());
    let wctx = WriteCtx {
        now_ms: 3_000_000,
        catalog: &catalog,
        policy: &policy,
    };
    let (doc, shadow) = w.docs.get_mut(&id).unwrap();
    let mut kept = Some(shadow.clone());
    assert!(push::on_gone(doc, &mut kept, &op, &wctx).unwrap());
    // The CRM no longer holds the record: its shadow goes (a restore creates it again).
    assert!(kept.is_none());
    let p = w.project(id);
    assert!(matches!(
        p.conflicts.first(),
        Some(Conflict::Record {
            unseen_edits: 1,
            ..
        })
    ));
    // Held while the record conflict is open: nothing is sent.
    assert!(w.push(ADMIN, 4_000_000).await.is_empty());
}

#[tokio::test]
async fn notes_pull_into_their_deal_and_an_offline_note_is_created_once() {
    let mut w = import(Sim::new(demo_data(), SimConfig::default())).await;
    let notes = list_all(&w.sim, Resource::Note).await;
    let (catalog, policy) = (w.catalog.clone(), w.policy.clone());
    let wctx = WriteCtx {
        now_ms: 1_500,
        catalog: &catalog,
        policy: &policy,
    };
    let mut pulled = 0;
    for n in &notes {
        let (nid, parent, image) =
            mapping::activity_image(sellsync_model::ActivityKind::Note, n).unwrap();
        let Some(parent) = parent else { continue };
        let Some((doc, shadow)) = w.docs.get_mut(&parent.crm_id) else {
            continue;
        };
        pull::pull_activity(
            doc,
            shadow,
            sellsync_model::ActivityKind::Note,
            nid,
            image,
            &wctx,
        )
        .unwrap();
        pulled += 1;
    }
    assert!(pulled > 0);
    // Nothing to push after pulling the notes.
    assert!(w.push(ADMIN, 2_500_000).await.is_empty());
    let id = first_deal(&w, None);
    device_edit(
        &mut w,
        id,
        &[Edit::AddNote {
            id: "offline-note".parse().unwrap(),
            content: "Called from the train".into(),
        }],
    );
    let events = w.push(ADMIN, 3_000_000).await;
    assert!(matches!(&events[..], [Event::Pushed { .. }]));
    let p = w.project(id);
    let note = p
        .record
        .activities
        .iter()
        .find(|a| a.id.as_str() == "offline-note")
        .unwrap();
    let crm_id = note.crm_id.expect("crm id recorded");
    let all = list_all(&w.sim, Resource::Note).await;
    assert_eq!(all.len(), notes.len() + 1);
    assert!(
        all.iter()
            .any(|n| n["id"] == crm_id && n["resource_id"] == id)
    );
    // Created once: the next push sends nothing.
    assert!(w.push(ADMIN, 4_000_000).await.is_empty());
}

/// Drains the Sync API once, pulling deals into the world; returns the deal ids seen.
async fn sync_once(w: &mut World, device: &str, now_ms: i64) -> Vec<u64> {
    use sellsync_bridge::sync::{SyncEvent, SyncRun};
    let mut run = SyncRun::new(device);
    let mut seen = Vec::new();
    for _ in 0..1000 {
        let Some(req) = run.next_request() else { break };
        let res = call(&w.sim, ADMIN, &req).await;
        match run.on_result(res, 0.0) {
            SyncEvent::Items(items) if items.is_empty() => {}
            SyncEvent::Items(items) => {
                let mut keys = Vec::new();
                for item in items {
                    if item.resource == Some(Resource::Deal) && !item.deleted {
                        let (id, image) =
                            mapping::record_image(RecordKind::Deal, &item.data, &w.catalog)
                                .unwrap();
                        let (catalog, policy) = (w.catalog.clone(), w.policy.clone());
                        let wctx = WriteCtx {
                            now_ms,
                            catalog: &catalog,
                            policy: &policy,
                        };
                        match w.docs.get_mut(&id) {
                            Some((doc, shadow)) => {
                                pull::pull_update(doc, shadow, image, &wctx).unwrap();
                            }
                            None => {
                                let (doc, shadow, _) =
                                    pull::pull_new(RecordKind::Deal, id, image, &wctx).unwrap();
                                w.docs.insert(id, (doc, shadow));
                            }
                        }
                        seen.push(id);
                    }
                    keys.push(item.ack_key);
                }
                // Durable here (the test keeps documents in memory).
                run.durable(keys);
            }
            SyncEvent::Done => break,
            other => panic!("{other:?}"),
        }
    }
    assert!(run.is_done());
    seen
}

#[tokio::test]
async fn the_sync_api_delivers_each_change_once_acked() {
    let mut w = import(Sim::new(demo_data(), SimConfig::default())).await;
    let first = sync_once(&mut w, "hub-device-1", 2_000_000).await;
    assert_eq!(first.len(), 50);
    // Already imported: the sync wrote nothing new.
    assert!(w.docs.values().all(|(_, s)| !s.heads.is_empty()));
    assert!(
        sync_once(&mut w, "hub-device-1", 2_100_000)
            .await
            .is_empty()
    );
    let id = first_deal(&w, None);
    let mut body = serde_json::Map::new();
    body.insert("name".into(), json!("Changed in Zendesk"));
    let put = CrmRequest::Update {
        resource: Resource::Deal,
        id,
        body,
    };
    call(&w.sim, ADMIN, &put).await.unwrap();
    assert_eq!(sync_once(&mut w, "hub-device-1", 2_200_000).await, [id]);
    assert_eq!(
        w.project(id).record.fields[&FieldKey::std("name")],
        Value::Text("Changed in Zendesk".into())
    );
}
