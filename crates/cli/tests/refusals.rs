//! Real processes, one step off the happy path: the device refuses an empty note; a deal a rep
//! edited while a colleague deleted it in Zendesk is restored from the device with
//! `resolve --restore` and created again in Zendesk, with its notes, under a new id.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, json, ok, run, start_command};
use sellsync_sim::{Sim, SimConfig, demo_data, token_for};
use serde_json::Value;

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
fn a_deal_deleted_in_zendesk_while_edited_is_restored_from_the_device() {
    sellsync_hub_bridge::install_crypto_provider();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sim = Sim::new(demo_data(), SimConfig::default());
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let crm = format!("http://{}", listener.local_addr().unwrap());
    rt.spawn(sellsync_sim::serve(listener, sim, std::future::pending()));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let hub_store = d.join("hub.redb");
    let hub_store = hub_store.to_str().unwrap();
    let token = ok(&[
        "hub",
        "token",
        "--store",
        hub_store,
        "--user",
        "2",
        "--device",
        "ann-phone",
    ]);
    std::fs::write(d.join("acl.toml"), format!("admins = [{ADMIN}]\n")).unwrap();
    let mut hub = Command::new(BIN);
    hub.args(["hub", "--store", hub_store, "--listen", "127.0.0.1:0"])
        .args(["--acl", d.join("acl.toml").to_str().unwrap()])
        .args(["--zendesk-url", &crm, "--bridge-every", "1"])
        .env("SELLSYNC_ZENDESK_TOKEN", token_for(ADMIN))
        .stderr(Stdio::null());
    let (_hub, url) = start_command(hub);
    let ann = d.join("ann.redb");
    let ann = ann.to_str().unwrap();
    ok(&[
        "device",
        "--store",
        ann,
        "init",
        "--hub",
        &url,
        "--token",
        token.trim(),
    ]);
    ok(&["device", "--store", ann, "sync"]);
    let http = reqwest::Client::new();
    let call = |method: reqwest::Method, path: &str| -> Value {
        rt.block_on(async {
            match http
                .request(method, format!("{crm}{path}"))
                .bearer_auth(token_for(ADMIN))
                .send()
                .await
            {
                Ok(r) => r.json().await.unwrap_or(Value::Null),
                Err(_) => Value::Null,
            }
        })
    };
    let notes = call(reqwest::Method::GET, "/v2/notes?per_page=100");
    let old = notes["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["data"]["resource_type"] == "deal")
        .and_then(|n| n["data"]["resource_id"].as_u64())
        .expect("a demo note on a deal");
    let id = format!("zd-{old}");

    // An empty note is refused on the device, with a reason, and nothing is written.
    let (success, _, stderr) = run(&["device", "--store", ann, "note", &id, ""]);
    assert!(!success);
    assert!(stderr.contains("a note needs some text"), "{stderr}");

    // Ann edits offline; a colleague deletes the deal in Zendesk; the hub pulls the delete.
    ok(&[
        "device",
        "--store",
        ann,
        "set",
        &id,
        "name=Ann keeps this one",
    ]);
    ok(&["device", "--store", ann, "note", &id, "Signed on paper"]);
    call(reqwest::Method::DELETE, &format!("/v2/deals/{old}"));
    let deleted_at = sellsync_service::net::now_ms();
    until("the hub's pull after the delete", || {
        let s = json(&["bridge", "status", "--store", hub_store, "--json"]);
        s["last_pull"]["started_ms"].as_i64().unwrap_or(0) > deleted_at
    });
    until("a record conflict on the device", || {
        ok(&["device", "--store", ann, "sync"]);
        json(&["device", "--store", ann, "conflicts", "--json"])
            .to_string()
            .contains(r#""kind":"record""#)
    });
    let (success, _, stderr) = run(&[
        "device",
        "--store",
        ann,
        "resolve",
        &id,
        "name",
        "--restore",
    ]);
    assert!(!success && stderr.contains("whole record"), "{stderr}");
    let done = json(&[
        "device",
        "--store",
        ann,
        "resolve",
        &id,
        "--restore",
        "--json",
    ]);
    assert_eq!(done["resolution"], "restore", "{done}");
    assert_eq!(done["record"], id.as_str());
    ok(&["device", "--store", ann, "sync"]);
    // Created again under a new id, with the notes it had and Ann's.
    until("the restored deal in Zendesk with its notes", || {
        let deals = call(
            reqwest::Method::GET,
            "/v2/deals?per_page=100&name=Ann%20keeps%20this%20one",
        );
        let Some(new) = deals["items"]
            .as_array()
            .and_then(|a| a.first())
            .and_then(|d| d["data"]["id"].as_u64())
        else {
            return false;
        };
        assert_ne!(new, old);
        let notes = call(
            reqwest::Method::GET,
            &format!("/v2/notes?resource_type=deal&resource_id={new}&per_page=100"),
        );
        notes.to_string().contains("Signed on paper")
    });
    until("nothing left in the hub's queue", || {
        let s = json(&["bridge", "status", "--store", hub_store, "--json"]);
        s["queue"] == 0
    });
    assert!(
        json(&["device", "--store", ann, "conflicts", "--json"])
            .to_string()
            .contains(r#""kind":"record""#)
            .eq(&false)
    );
}
