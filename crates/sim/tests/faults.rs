//! Fault injection over real HTTP, configured through the admin route, and request counters.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

async fn set_faults(r: &Running, faults: Value) {
    assert_eq!(
        r.admin(Method::PUT, "/_sim/faults", Some(faults)).await,
        204
    );
}

fn hot_of(r: &Running, deal: u64) -> Value {
    let d = r.sim.dump();
    d.row(sellsync_sim::Kind::Deal, deal)
        .map(|row| row.data["hot"].clone())
        .unwrap_or(Value::Null)
}

#[tokio::test]
async fn drop_after_write_commits_but_the_client_sees_a_transport_error() {
    let r = start().await;
    let deal = r.deal_owned_by(ADMIN).await;
    let was = hot_of(&r, deal);
    set_faults(&r, json!({"rules": [{"route": "PUT /v2/deals/{id}", "fault": {"kind": "drop_after_write"}, "times": 1}]})).await;
    let url = format!("{}/v2/deals/{deal}", r.base);
    let sent = r
        .client
        .put(&url)
        .bearer_auth(admin_token(&r))
        .json(&json!({"data": {"hot": !was.as_bool().unwrap_or(false)}}))
        .send()
        .await;
    assert!(sent.is_err(), "no response: {sent:?}");
    assert_ne!(hot_of(&r, deal), was, "the write committed");
    let (s, _) = r
        .put(
            &format!("/v2/deals/{deal}"),
            json!({"data": {"name": "after"}}),
        )
        .await;
    assert_eq!(s, 200, "the rule fired once");
    let counters = r.sim.counters();
    assert_eq!(
        counters.routes["PUT /v2/deals/{id}"]
            .by_status
            .get("dropped"),
        Some(&1)
    );
}

#[tokio::test]
async fn drop_before_write_changes_nothing() {
    let r = start().await;
    let deal = r.deal_owned_by(ADMIN).await;
    set_faults(&r, json!({"rules": [{"route": "* /v2/deals/{id}", "fault": {"kind": "drop_before_write"}, "times": 1}]})).await;
    let before = r.sim.dump();
    let sent = r
        .client
        .put(format!("{}/v2/deals/{deal}", r.base))
        .bearer_auth(admin_token(&r))
        .json(&json!({"data": {"hot": true}}))
        .send()
        .await;
    assert!(sent.is_err());
    assert_eq!(r.sim.dump(), before);
}

#[tokio::test]
async fn server_errors_and_rate_limit_bursts_use_the_envelope() {
    let r = start().await;
    set_faults(&r, json!({"rules": [
        {"route": "GET /v2/users/self", "fault": {"kind": "error", "status": 503}, "times": 1},
        {"route": "GET /v2/accounts/self", "fault": {"kind": "rate_limit", "burst": 2}, "times": 1},
        {"route": "*", "fault": {"kind": "latency", "ms": 1}}
    ]})).await;
    let t = admin_token(&r);
    expect_error(
        r.call(Method::GET, "/v2/users/self", &t, None).await,
        503,
        "temporarily_unavailable",
    )
    .await;
    assert_eq!(
        r.call(Method::GET, "/v2/users/self", &t, None)
            .await
            .status()
            .as_u16(),
        200
    );
    for _ in 0..2 {
        expect_error(
            r.call(Method::GET, "/v2/accounts/self", &t, None).await,
            429,
            "rate_limit_exceeded",
        )
        .await;
    }
    assert_eq!(
        r.call(Method::GET, "/v2/accounts/self", &t, None)
            .await
            .status()
            .as_u16(),
        200
    );
}

async fn statuses(r: &Running, seed: u64) -> Vec<u16> {
    set_faults(r, json!({"seed": seed, "rules": [{"route": "GET /v2/deals", "fault": {"kind": "error", "status": 500}, "probability": 0.5}]})).await;
    let mut out = Vec::new();
    for _ in 0..24 {
        out.push(
            r.call(Method::GET, "/v2/deals?per_page=1", &admin_token(r), None)
                .await
                .status()
                .as_u16(),
        );
    }
    out
}

#[tokio::test]
async fn a_seed_replays_the_same_failure_sequence() {
    let r = start().await;
    let a = statuses(&r, 42).await;
    let b = statuses(&r, 42).await;
    assert_eq!(a, b);
    assert!(a.contains(&500) && a.contains(&200), "{a:?}");
    assert_ne!(statuses(&r, 43).await, a);
}

#[tokio::test]
async fn admin_routes_dump_seed_configure_and_count() {
    let r = start().await;
    assert_eq!(r.admin(Method::DELETE, "/_sim/counters", None).await, 204);
    let deal = r.deal_owned_by(ADMIN).await;
    r.put(&format!("/v2/deals/{deal}"), json!({"data": {"hot": true}}))
        .await;
    r.put(
        &format!("/v2/deals/{deal}"),
        json!({"data": {"hot": false}}),
    )
    .await;
    let counters: Value = r
        .client
        .get(format!("{}/_sim/counters", r.base))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(
        counters["routes"]["PUT /v2/deals/{id}"]["requests"],
        json!(2)
    );
    assert_eq!(
        counters["routes"]["GET /v2/deals"]["by_status"]["200"],
        json!(1)
    );
    let dump: Value = r
        .client
        .get(format!("{}/_sim/state", r.base))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    let empty = serde_json::to_value(sellsync_sim::empty_data()).expect("value");
    assert_eq!(r.admin(Method::PUT, "/_sim/state", Some(empty)).await, 204);
    let (_, deals) = r.get("/v2/deals").await;
    assert_eq!(deals["items"], json!([]));
    assert_eq!(r.admin(Method::PUT, "/_sim/state", Some(dump)).await, 204);
    let (s, _) = r.get(&format!("/v2/deals/{deal}")).await;
    assert_eq!(s, 200, "seeded back");
    assert_eq!(
        r.admin(
            Method::PUT,
            "/_sim/faults",
            Some(json!({"rules": [{"route": "x", "fault": {"kind": "error", "status": 200}}]}))
        )
        .await,
        400
    );
    assert_eq!(
        r.admin(
            Method::PUT,
            "/_sim/config",
            Some(json!({"rate_limit_per_hour": 1}))
        )
        .await,
        204
    );
    assert_eq!(
        r.admin(Method::PUT, "/_sim/state", Some(json!({"tables": 5})))
            .await,
        400
    );
}

#[tokio::test]
async fn without_serve_a_dropped_connection_fault_answers_503() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sim = sellsync_sim::Sim::new(
        sellsync_sim::demo_data(),
        sellsync_sim::SimConfig::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = sellsync_sim::app(sim.clone());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    sim.set_faults(sellsync_sim::FaultConfig {
        seed: 0,
        rules: vec![sellsync_sim::FaultRule {
            route: "*".into(),
            fault: sellsync_sim::Fault::DropBeforeWrite,
            probability: 1.0,
            skip: 0,
            times: Some(1),
        }],
    })
    .expect("valid faults");
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .expect("client");
    let url = format!("http://{addr}/v2/users/self");
    let token = sellsync_sim::token_for(ADMIN);
    let res = client
        .get(&url)
        .bearer_auth(&token)
        .send()
        .await
        .expect("answered");
    expect_error(res, 503, "temporarily_unavailable").await;
    let res = client
        .get(&url)
        .bearer_auth(&token)
        .send()
        .await
        .expect("answered");
    assert_eq!(res.status().as_u16(), 200);
    server.abort();
}
