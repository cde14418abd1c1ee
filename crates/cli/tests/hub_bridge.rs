//! Real processes: a hub running its bridge to the simulator (`--zendesk-url`), a device that
//! edits offline and syncs; the edit reaches Zendesk, a Zendesk edit reaches the device, and
//! `bridge status` reports it.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, ok, start_command};
use sellsync_sim::{Sim, SimConfig, demo_data, token_for};
use serde_json::{Value, json};

const ADMIN: u64 = 2;

fn until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn a_hub_with_its_bridge_carries_edits_both_ways() {
    sellsync_hub_bridge::install_crypto_provider();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sim = Sim::new(demo_data(), SimConfig::default());
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let crm = format!("http://{}", listener.local_addr().unwrap());
    let tokens = sim.tokens();
    rt.spawn(sellsync_sim::serve(listener, sim, std::future::pending()));
    let admin = tokens.iter().find(|t| t.role == "admin").unwrap().user_id;
    assert_eq!(admin, ADMIN);
    let team = |name: &str| -> Vec<u64> {
        tokens
            .iter()
            .filter(|t| t.team.as_deref() == Some(name) && t.role != "admin")
            .map(|t| t.user_id)
            .collect()
    };
    let (north, south) = (team("North"), team("South"));
    let bea = north[0].to_string();

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("acl.toml"),
        format!(
            "admins = [{ADMIN}]\n[[teams]]\nid = 1\nmembers = {north:?}\n[[teams]]\nid = 2\nmembers = {south:?}\n"
        ),
    )
    .unwrap();
    let hub_store = d.join("hub.redb");
    let hub_store = hub_store.to_str().unwrap();
    let bea_store = d.join("bea.redb");
    let token = ok(&[
        "hub",
        "token",
        "--store",
        hub_store,
        "--user",
        &bea,
        "--device",
        "bea-phone",
    ]);
    let bea = bea_store.to_str().unwrap();

    // The token through the environment, as an operator would pass it.
    let mut hub = Command::new(BIN);
    hub.args(["hub", "--store", hub_store, "--listen", "127.0.0.1:0"])
        .args(["--acl", d.join("acl.toml").to_str().unwrap()])
        .args(["--zendesk-url", &crm, "--bridge-every", "1"])
        .env("SELLSYNC_ZENDESK_TOKEN", token_for(ADMIN))
        .stderr(Stdio::null());
    // The first start imports before it listens.
    let (_hub, url) = start_command(hub);

    ok(&[
        "device",
        "--store",
        bea,
        "init",
        "--hub",
        &url,
        "--token",
        token.trim(),
    ]);
    ok(&["device", "--store", bea, "sync"]);
    let deals: Value =
        serde_json::from_str(&ok(&["device", "--store", bea, "deals", "--json"])).unwrap();
    let rows = deals.as_array().unwrap();
    assert!(
        !rows.is_empty() && rows.len() < 50,
        "Bea sees her team's deals only: {} rows; sync: {}",
        rows.len(),
        ok(&["device", "--store", bea, "sync", "--json"])
    );
    let id = rows[0]["id"].as_str().unwrap().to_owned();
    let crm_id: u64 = id.strip_prefix("zd-").unwrap().parse().unwrap();

    // Bea's offline edit reaches Zendesk through the hub's bridge.
    ok(&[
        "device",
        "--store",
        bea,
        "set",
        &id,
        "name=Renamed on the phone",
    ]);
    ok(&[
        "device",
        "--store",
        bea,
        "note",
        &id,
        "Called from the airport",
    ]);
    ok(&["device", "--store", bea, "sync"]);
    let http = reqwest::Client::new();
    let get = |path: &str| -> Value {
        rt.block_on(async {
            match http
                .get(format!("{crm}{path}"))
                .bearer_auth(token_for(ADMIN))
                .send()
                .await
            {
                Ok(r) => r.json().await.unwrap_or(Value::Null),
                Err(_) => Value::Null,
            }
        })
    };
    until("the new name in Zendesk", || {
        get(&format!("/v2/deals/{crm_id}"))["data"]["name"] == "Renamed on the phone"
    });
    until("the note in Zendesk", || {
        get(&format!(
            "/v2/notes?resource_type=deal&resource_id={crm_id}"
        ))["items"]
            .as_array()
            .is_some_and(|a| {
                a.iter()
                    .filter(|n| n["data"]["content"] == "Called from the airport")
                    .count()
                    == 1
            })
    });

    // A colleague's Zendesk edit reaches the phone.
    let resp = rt
        .block_on(
            http.put(format!("{crm}/v2/deals/{crm_id}"))
                .bearer_auth(token_for(ADMIN))
                .json(&json!({"data": {"hot": true}}))
                .send(),
        )
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    until("the Zendesk edit on the phone", || {
        ok(&["device", "--store", bea, "sync"]);
        let shown: Value =
            serde_json::from_str(&ok(&["device", "--store", bea, "show", &id, "--json"])).unwrap();
        shown
            .to_string()
            .contains(r#""hot":{"type":"bool","value":true}"#)
    });

    // The status file is readable while the hub runs.
    until("a push in the status", || {
        let s: Value =
            serde_json::from_str(&ok(&["bridge", "status", "--store", hub_store, "--json"]))
                .unwrap();
        s["crm_user"] == ADMIN && s["last_push"]["result"] == "ok" && s["pull_mode"] == "sync"
    });
    let human = ok(&["bridge", "status", "--store", hub_store]);
    assert!(human.contains("push") && human.contains(&crm), "{human}");
}
