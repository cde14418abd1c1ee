//! The Sync API over real HTTP: sessions per device, ack keys, redelivery, 204 when drained.

mod common;

use common::*;
use reqwest::Method;
use sellsync_api::{Collection, Item, SyncEventType, SyncSession};
use serde_json::{Value, json};

async fn sync_call(
    r: &Running,
    method: Method,
    path: &str,
    device: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut req = r
        .client
        .request(method, format!("{}{path}", r.base))
        .bearer_auth(admin_token(r))
        .header("X-Basecrm-Device-UUID", device);
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.expect("sync request")
}

/// One full sync; acks items for which `keep` says yes. Returns (type, id, event) delivered.
async fn drain(
    r: &Running,
    device: &str,
    keep: impl Fn(&str) -> bool,
) -> Vec<(String, u64, SyncEventType)> {
    let res = sync_call(r, Method::POST, "/v2/sync/start", device, None).await;
    if res.status().as_u16() == 204 {
        return Vec::new();
    }
    assert_eq!(res.status().as_u16(), 201);
    let session: Item<SyncSession> = res.json().await.expect("session");
    assert_eq!(session.meta.kind, "sync_session");
    assert_eq!(session.data.queues[0].data.name, "main");
    let mut out = Vec::new();
    for _ in 0..1000 {
        let res = sync_call(
            r,
            Method::GET,
            &format!("/v2/sync/{}/queues/main", session.data.id),
            device,
            None,
        )
        .await;
        if res.status().as_u16() == 204 {
            return out;
        }
        assert_eq!(res.status().as_u16(), 200);
        let page: Collection<Value> = res.json().await.expect("queue page");
        assert!(!page.items.is_empty(), "a 200 page is never empty");
        let mut acks = Vec::new();
        for item in page.items {
            let sync = item.meta.sync.expect("sync meta");
            let id = item.data["id"].as_u64().expect("id");
            assert_eq!(
                sync.ack_key.rsplit('-').next(),
                Some(sync.revision.to_string().as_str())
            );
            out.push((item.meta.kind.clone(), id, sync.event_type));
            if keep(&item.meta.kind) {
                acks.push(sync.ack_key);
            }
        }
        if !acks.is_empty() {
            let res = sync_call(
                r,
                Method::POST,
                "/v2/sync/ack",
                device,
                Some(json!({"data": {"ack_keys": acks}})),
            )
            .await;
            assert_eq!(res.status().as_u16(), 202);
        }
    }
    panic!("the queue never drained");
}

#[tokio::test]
async fn sync_drains_acks_and_then_has_nothing() {
    let config = sellsync_sim::SimConfig {
        sync_page_size: 37,
        ..Default::default()
    };
    let r = start_with(sellsync_sim::demo_data(), config).await;
    let first = drain(&r, "dev-1", |_| true).await;
    assert!(first.iter().filter(|i| i.0 == "deal").count() == 50);
    assert!(first.iter().all(|i| i.2 == SyncEventType::Created));
    assert!(
        drain(&r, "dev-1", |_| true).await.is_empty(),
        "second sync is empty"
    );
    assert_eq!(
        drain(&r, "dev-2", |_| true).await.len(),
        first.len(),
        "a new device gets everything"
    );
}

#[tokio::test]
async fn unacked_items_come_back_and_changes_are_updates_or_deletes() {
    let r = start().await;
    let first = drain(&r, "dev-a", |kind| kind != "note").await;
    let notes = first.iter().filter(|i| i.0 == "note").count();
    let again = drain(&r, "dev-a", |_| true).await;
    assert_eq!(again.len(), notes, "only the un-acked notes come back");
    assert!(
        again
            .iter()
            .all(|i| i.0 == "note" && i.2 == SyncEventType::Created)
    );
    let deal = r.deal_owned_by(ADMIN).await;
    r.put(&format!("/v2/deals/{deal}"), json!({"data": {"hot": true}}))
        .await;
    let (_, c) = r
        .post("/v2/contacts", json!({"data": {"last_name": "Fresh"}}))
        .await;
    let contact = c["data"]["id"].as_u64().expect("id");
    let other = r.deal_owned_by(11).await;
    r.call(
        Method::DELETE,
        &format!("/v2/deals/{other}"),
        &admin_token(&r),
        None,
    )
    .await;
    let third = drain(&r, "dev-a", |_| true).await;
    assert!(
        third.contains(&("deal".into(), deal, SyncEventType::Updated)),
        "{third:?}"
    );
    assert!(third.contains(&("contact".into(), contact, SyncEventType::Created)));
    assert!(third.contains(&("deal".into(), other, SyncEventType::Deleted)));
    assert!(drain(&r, "dev-a", |_| true).await.is_empty());
}

#[tokio::test]
async fn sessions_need_a_device_and_are_capped() {
    let config = sellsync_sim::SimConfig {
        max_sync_sessions: 2,
        ..Default::default()
    };
    let r = start_with(sellsync_sim::demo_data(), config).await;
    let res = r
        .call(Method::POST, "/v2/sync/start", &admin_token(&r), None)
        .await;
    expect_error(res, 400, "invalid_header").await;
    for d in ["d1", "d2", "d1"] {
        assert_eq!(
            sync_call(&r, Method::POST, "/v2/sync/start", d, None)
                .await
                .status()
                .as_u16(),
            201
        );
    }
    let res = sync_call(&r, Method::POST, "/v2/sync/start", "d3", None).await;
    expect_error(res, 429, "rate_limit_exceeded").await;
    assert_eq!(r.sim.open_sync_sessions(), 2);
    let res = sync_call(&r, Method::GET, "/v2/sync/nope/queues/main", "d1", None).await;
    expect_error(res, 404, "not_found").await;
    let before = r.sim.dump();
    let bad = json!({"data": {"ack_keys": ["Deal-1-1", "garbage"]}});
    let res = sync_call(&r, Method::POST, "/v2/sync/ack", "d1", Some(bad)).await;
    expect_error(res, 422, "incorrect_value").await;
    assert_eq!(r.sim.dump(), before, "a bad ack records nothing");
}
