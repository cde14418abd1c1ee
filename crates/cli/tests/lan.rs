//! The real binary: devices sync with each other over the LAN while the hub is down, then one
//! of them carries everything to the hub.

mod common;

use std::path::Path;
use std::process::Stdio;

use common::{Running, json, ok, run, start};
use serde_json::Value;

fn start_hub(dir: &Path, store: &str, extra: &[&str]) -> (Running, String) {
    let acl = dir.join("acl.toml");
    let catalog = dir.join("catalog.json");
    let mut args = vec![
        "hub",
        "--store",
        store,
        "--listen",
        "127.0.0.1:0",
        "--acl",
        acl.to_str().unwrap(),
        "--catalog",
        catalog.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    start(&args, Stdio::null())
}

fn token(hub_store: &str, user: &str, device: &str) -> String {
    let t = json(&[
        "hub", "token", "--store", hub_store, "--user", user, "--device", device, "--json",
    ]);
    t["token"].as_str().unwrap().to_owned()
}

fn deal_ids(store: &str) -> Vec<String> {
    json(&["device", "--store", store, "deals", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect()
}

/// One sync with the hub at `url` (each hub run listens on a fresh port).
fn sync(store: &str, url: &str) -> Value {
    let s = json(&["device", "--store", store, "sync", "--hub", url, "--json"]);
    assert_eq!(s["finished"], true, "{store}: {s}");
    s
}

/// A LAN sync that the serving peer must refuse; returns the error text.
fn refused(store: &str, peer: &str) -> String {
    let (success, stdout, stderr) = run(&["device", "--store", store, "sync", "--peer", peer]);
    assert!(!success, "{store} was not refused:\n{stdout}");
    stderr
}

#[test]
fn two_devices_sync_over_the_lan_without_the_hub_then_one_carries_it_to_the_hub() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("acl.toml"),
        "admins = [1]\n[[teams]]\nid = 10\nmembers = [2, 3]\n",
    )
    .unwrap();
    let mut catalog = sellsync_model::Catalog::example();
    catalog.users.insert(
        4,
        sellsync_model::User {
            id: 4,
            name: "Olga Outsider".into(),
            role: "user".into(),
        },
    );
    std::fs::write(
        d.join("catalog.json"),
        serde_json::to_string(&catalog).unwrap(),
    )
    .unwrap();
    let path = |n: &str| d.join(format!("{n}.redb")).to_str().unwrap().to_owned();
    let (hub, hub2) = (path("hub"), path("hub2"));
    // A (user 2) and B (user 3) are in one team; C (user 4) sees only its own records; D is a
    // fresh device of B's user; E will be revoked, F's credential expires at once, and G is
    // enrolled with another hub that has the same node id but its own key.
    let (a, b, c, dd, e, f, g) = (
        path("a"),
        path("b"),
        path("c"),
        path("d"),
        path("e"),
        path("f"),
        path("g"),
    );
    let tokens = [
        (&a, token(&hub, "2", "a-phone")),
        (&b, token(&hub, "3", "b-laptop")),
        (&c, token(&hub, "4", "c-phone")),
        (&dd, token(&hub, "3", "d-tablet")),
        (&e, token(&hub, "3", "e-phone")),
        (&f, token(&hub, "3", "f-phone")),
    ];
    let g_token = token(&hub2, "3", "g-phone");

    // Hub run 1 hands out credentials that expire at once: F's.
    let (h, url) = start_hub(d, &hub, &["--credential-ttl", "0"]);
    // `init` syncs once when the hub answers: D is enrolled while it is down, so that D has no
    // credential yet.
    for (store, t) in tokens.iter().filter(|(s, _)| *s != &dd) {
        ok(&[
            "device", "--store", store, "init", "--hub", &url, "--token", t,
        ]);
    }
    sync(&f, &url);
    drop(h);
    let (_, t) = tokens.iter().find(|(s, _)| *s == &dd).unwrap();
    ok(&[
        "device", "--store", &dd, "init", "--hub", &url, "--token", t,
    ]);
    // Another hub: G's credential is signed by a key B does not trust.
    let (h2, url2) = start_hub(d, &hub2, &[]);
    ok(&[
        "device", "--store", &g, "init", "--hub", &url2, "--token", &g_token,
    ]);
    sync(&g, &url2);
    drop(h2);
    // Hub run 2: E gets a credential, then E is revoked.
    let (h, url) = start_hub(d, &hub, &[]);
    sync(&e, &url);
    drop(h);
    let r = json(&[
        "hub", "revoke", "--store", &hub, "--device", "e-phone", "--json",
    ]);
    assert_eq!(r["revoked"], 1, "{r}");
    // Hub run 3: A creates a deal; A, B and C sync (and get the revocation list).
    let (h, url) = start_hub(d, &hub, &[]);
    ok(&[
        "device",
        "--store",
        &a,
        "create-deal",
        "--id",
        "deal-acme",
        "name=Acme renewal",
        "value=1000.00",
        "currency=EUR",
        "stage_id=12",
    ]);
    for s in [&a, &b, &c] {
        sync(s, &url);
    }
    assert_eq!(deal_ids(&b), vec!["deal-acme"]);
    assert!(deal_ids(&c).is_empty());
    drop(h);

    // The hub is down. A, B and C edit offline.
    ok(&["device", "--store", &a, "set", "deal-acme", "value=1500.00"]);
    ok(&["device", "--store", &b, "tag", "deal-acme", "+fair"]);
    let create = |store: &str, id: &str| {
        ok(&[
            "device",
            "--store",
            store,
            "create-deal",
            "--id",
            id,
            "name=Trade fair lead",
            "value=10.00",
            "currency=EUR",
            "stage_id=12",
        ]);
    };
    create(&b, "deal-bee");
    create(&c, "deal-cee");

    // B serves; A syncs with B over the LAN.
    let log = d.join("b-serve.log");
    let (served, lan) = start(
        &["device", "--store", &b, "serve", "--listen", "127.0.0.1:0"],
        Stdio::from(std::fs::File::create(&log).unwrap()),
    );
    assert!(lan.starts_with("wss://127.0.0.1:"), "{lan}");
    // LAN sessions are encrypted: a plain ws:// URL is refused before anything is sent.
    let plain = lan.replacen("wss://", "ws://", 1);
    let (success, _, err) = run(&["device", "--store", &a, "sync", "--peer", &plain]);
    assert!(
        !success && err.contains("LAN sessions are encrypted: use wss://"),
        "{err}"
    );
    let s = json(&[
        "device",
        "--store",
        &a,
        "sync",
        "--peer",
        &lan,
        "--peer-id",
        "b-laptop",
        "--json",
    ]);
    assert_eq!(s["finished"], true, "{s}");
    assert_eq!(s["peer"], "b-laptop", "{s}");
    // Expecting another device at that address is refused.
    let (wrong, _, err) = run(&[
        "device",
        "--store",
        &a,
        "sync",
        "--peer",
        &lan,
        "--peer-id",
        "c-phone",
    ]);
    assert!(
        !wrong && err.contains("another node answered (b-laptop)"),
        "{err}"
    );

    // C syncs with B: it gets nothing it may not see (and B keeps nothing of C's, below).
    let s = json(&["device", "--store", &c, "sync", "--peer", &lan, "--json"]);
    assert_eq!(s["finished"], true, "{s}");
    assert_eq!(deal_ids(&c), vec!["deal-cee"]);

    // Revoked, expired and foreign credentials are refused; so is a device with none yet.
    let err = refused(&e, &lan);
    assert!(err.contains("revoked"), "{err}");
    let err = refused(&f, &lan);
    assert!(err.contains("expired"), "{err}");
    assert!(err.contains("LAN peers will refuse this device"), "{err}");
    let err = refused(&g, &lan);
    assert!(err.contains("signature"), "{err}");
    let err = refused(&dd, &lan);
    assert!(err.contains("sync with the hub once first"), "{err}");
    assert!(deal_ids(&e).is_empty());
    drop(served);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.matches("AuthFailed").count() >= 3,
        "refusals are logged:\n{logged}"
    );

    // B's store is free again: A and B hold the same deals, B none of C's.
    let deals = |store: &str| json(&["device", "--store", store, "deals", "--json"]);
    assert_eq!(deals(&a), deals(&b));
    assert_eq!(deal_ids(&a), vec!["deal-acme", "deal-bee"]);
    let acme = json(&["device", "--store", &b, "show", "deal-acme", "--json"]);
    assert_eq!(
        acme["record"]["fields"]["value"]["value"], "1500.00",
        "{acme}"
    );
    assert!(
        acme["record"]["tags"]
            .as_array()
            .unwrap()
            .contains(&"fair".into()),
        "{acme}"
    );
    assert_eq!(deal_ids(&b), vec!["deal-acme", "deal-bee"]);

    // The hub is back: A carries B's offline edits to it, and D (B's user) gets them there.
    let (_h, url) = start_hub(d, &hub, &[]);
    sync(&a, &url);
    sync(&dd, &url);
    assert_eq!(deal_ids(&dd), vec!["deal-acme", "deal-bee"]);
    let acme = json(&["device", "--store", &dd, "show", "deal-acme", "--json"]);
    assert_eq!(
        acme["record"]["fields"]["value"]["value"], "1500.00",
        "{acme}"
    );
    assert!(
        acme["record"]["tags"]
            .as_array()
            .unwrap()
            .contains(&"fair".into()),
        "{acme}"
    );
}
