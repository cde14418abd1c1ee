//! The real binary, off the happy path: a replaced phone, and notifications read and dismissed.

mod common;

use std::path::Path;
use std::process::Stdio;

use common::{Running, json, ok, run, start};

/// A hub with the example catalog and one team (users 2 and 3).
fn start_hub(d: &Path) -> (Running, String) {
    std::fs::write(
        d.join("acl.toml"),
        "admins = [1]\n[[teams]]\nid = 10\nmembers = [2, 3]\n",
    )
    .unwrap();
    std::fs::write(
        d.join("catalog.json"),
        serde_json::to_string(&sellsync_model::Catalog::example()).unwrap(),
    )
    .unwrap();
    let (store, acl, catalog) = (
        d.join("hub.redb"),
        d.join("acl.toml"),
        d.join("catalog.json"),
    );
    start(
        &[
            "hub",
            "--store",
            store.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--acl",
            acl.to_str().unwrap(),
            "--catalog",
            catalog.to_str().unwrap(),
        ],
        Stdio::null(),
    )
}

fn token(d: &Path, user: &str, device: &str) -> String {
    let hub = d.join("hub.redb");
    let t = json(&[
        "hub",
        "token",
        "--store",
        hub.to_str().unwrap(),
        "--user",
        user,
        "--device",
        device,
        "--json",
    ]);
    t["token"].as_str().unwrap().to_owned()
}

fn init(store: &str, url: &str, token: &str) {
    ok(&[
        "device", "--store", store, "init", "--hub", url, "--token", token,
    ]);
}

fn create(store: &str, id: &str) {
    ok(&[
        "device",
        "--store",
        store,
        "create-deal",
        "--id",
        id,
        "name=Acme renewal",
        "value=1000.00",
        "currency=EUR",
        "stage_id=12",
    ]);
}

/// The procedure of docs/cli.md: a new token for the same device name, a fresh store: the new
/// phone syncs, gets the old phone's records, and what it made reaches the hub.
#[test]
fn a_replaced_phone_syncs_with_a_new_token_and_a_new_store() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Tokens are issued before the hub runs (it holds its store open).
    let old_token = token(d, "2", "rita-phone");
    let new_token = token(d, "2", "rita-phone");
    let carl_token = token(d, "3", "carl-web");
    let (_hub, url) = start_hub(d);
    let (old, new, carl) = (d.join("old.redb"), d.join("new.redb"), d.join("carl.redb"));
    let (old, new, carl) = (
        old.to_str().unwrap(),
        new.to_str().unwrap(),
        carl.to_str().unwrap(),
    );

    init(old, &url, &old_token);
    create(old, "deal-old-1");
    create(old, "deal-old-2");
    ok(&["device", "--store", old, "sync"]);

    init(new, &url, &new_token);
    for i in 0..4 {
        create(new, &format!("deal-new-{i}"));
    }
    let got = json(&["device", "--store", new, "sync", "--json"]);
    assert_eq!(got["finished"], true, "{got}");
    let deals = json(&["device", "--store", new, "deals", "--json"]);
    assert_eq!(deals.as_array().unwrap().len(), 6, "{deals}");

    init(carl, &url, &carl_token);
    ok(&["device", "--store", carl, "sync"]);
    let seen = json(&["device", "--store", carl, "deals", "--json"]);
    assert_eq!(seen.as_array().unwrap().len(), 6, "{seen}");
}

/// Two reps change a notify-tier field offline: the one whose value lost is told once, can list
/// what is unread and dismiss it.
#[test]
fn a_lost_value_is_notified_once_and_can_be_dismissed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (rita_token, carl_token) = (token(d, "2", "rita-phone"), token(d, "3", "carl-web"));
    let (_hub, url) = start_hub(d);
    let (rita, carl) = (d.join("rita.redb"), d.join("carl.redb"));
    let (rita, carl) = (rita.to_str().unwrap(), carl.to_str().unwrap());
    init(rita, &url, &rita_token);
    init(carl, &url, &carl_token);
    ok(&["device", "--store", rita, "sync"]);
    create(rita, "deal-acme");
    ok(&["device", "--store", rita, "sync"]);
    ok(&["device", "--store", carl, "sync"]);

    ok(&[
        "device",
        "--store",
        rita,
        "set",
        "deal-acme",
        "estimated_close_date=2027-01-10",
    ]);
    std::thread::sleep(std::time::Duration::from_millis(20));
    ok(&[
        "device",
        "--store",
        carl,
        "set",
        "deal-acme",
        "estimated_close_date=2027-03-01",
    ]);
    for store in [rita, carl, rita, carl, rita] {
        ok(&["device", "--store", store, "sync"]);
    }
    let all = json(&["device", "--store", rita, "notifications", "--json"]);
    let all = all.as_array().unwrap().clone();
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0]["body"]["yours"]["value"], "2027-01-10", "{all:?}");
    let unread = json(&[
        "device",
        "--store",
        rita,
        "notifications",
        "--unread",
        "--json",
    ]);
    assert_eq!(unread.as_array().unwrap().len(), 1, "{unread}");

    let id = all[0]["id"].to_string();
    ok(&["device", "--store", rita, "dismiss", &id]);
    let unread = json(&[
        "device",
        "--store",
        rita,
        "notifications",
        "--unread",
        "--json",
    ]);
    assert_eq!(unread, serde_json::json!([]));
    let all = json(&["device", "--store", rita, "notifications", "--json"]);
    assert_eq!(all[0]["read"], true, "{all}");
    let (dismissed, _, err) = run(&["device", "--store", rita, "dismiss", "9999"]);
    assert!(!dismissed && err.contains("no notification 9999"), "{err}");
}
