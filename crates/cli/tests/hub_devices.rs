//! The real binary: a hub, two tokens, two devices editing one deal offline.

mod common;

use std::path::Path;
use std::process::Stdio;

use common::{Running, json, ok, run, start};
use serde_json::Value;

fn start_hub(dir: &Path) -> (Running, String) {
    start_hub_with(dir, &[])
}

fn start_hub_with(dir: &Path, extra: &[&str]) -> (Running, String) {
    let store = dir.join("hub.redb");
    let acl = dir.join("acl.toml");
    let catalog = dir.join("catalog.json");
    let mut args = vec![
        "hub",
        "--store",
        store.to_str().unwrap(),
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

fn value_candidates(conflicts: &Value) -> Vec<Value> {
    let list = conflicts.as_array().unwrap();
    let record = list
        .iter()
        .find(|r| r["record"] == "deal-acme")
        .expect("a conflict on deal-acme");
    let field = record["conflicts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "field" && c["slot"]["field"] == "value")
        .expect("a conflict on value");
    field["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["value"].clone())
        .collect()
}

#[test]
fn hub_tokens_and_two_devices_show_the_same_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
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
    let hub_store = d.join("hub.redb");
    let hub_store = hub_store.to_str().unwrap();
    let rita = d.join("rita.redb");
    let rita = rita.to_str().unwrap();
    let carl = d.join("carl.redb");
    let carl = carl.to_str().unwrap();

    let t_rita = json(&[
        "hub",
        "token",
        "--store",
        hub_store,
        "--user",
        "2",
        "--device",
        "rita-phone",
        "--json",
    ]);
    let t_carl = json(&[
        "hub", "token", "--store", hub_store, "--user", "3", "--device", "carl-web", "--json",
    ]);
    let (_hub, url) = start_hub(d);

    ok(&[
        "device",
        "--store",
        rita,
        "init",
        "--hub",
        &url,
        "--token",
        t_rita["token"].as_str().unwrap(),
    ]);
    ok(&[
        "device",
        "--store",
        carl,
        "init",
        "--hub",
        &url,
        "--token",
        t_carl["token"].as_str().unwrap(),
    ]);
    // A store is initialised once (unless --force).
    let (again, _, err) = run(&[
        "device",
        "--store",
        carl,
        "init",
        "--hub",
        &url,
        "--token",
        t_carl["token"].as_str().unwrap(),
    ]);
    assert!(!again && err.contains("already initialised"), "{err}");

    // init held the first sync: the catalog is here.
    let first = json(&["device", "--store", rita, "sync", "--json"]);
    assert_eq!(first["finished"], true, "{first}");
    let catalog = json(&["device", "--store", rita, "catalog", "--json"]);
    assert_eq!(catalog["loaded"], true, "{catalog}");

    ok(&[
        "device",
        "--store",
        rita,
        "create-deal",
        "--id",
        "deal-acme",
        "name=Acme renewal",
        "value=1000.00",
        "currency=EUR",
        "stage_id=12",
    ]);
    ok(&["device", "--store", rita, "sync"]);
    let got = json(&["device", "--store", carl, "sync", "--json"]);
    assert!(
        got["changed"]
            .as_array()
            .unwrap()
            .contains(&"deal-acme".into()),
        "{got}"
    );
    let deals = json(&["device", "--store", carl, "deals", "--json"]);
    assert_eq!(deals[0]["id"], "deal-acme", "{deals}");
    assert_eq!(deals[0]["conflicts"], 0, "{deals}");

    // Offline edits of the same field on both devices.
    ok(&[
        "device",
        "--store",
        rita,
        "set",
        "deal-acme",
        "value=1500.00",
    ]);
    ok(&[
        "device",
        "--store",
        carl,
        "set",
        "deal-acme",
        "value=1200.00",
    ]);
    ok(&["device", "--store", carl, "tag", "deal-acme", "+q1"]);
    for store in [rita, carl, rita] {
        ok(&["device", "--store", store, "sync"]);
    }
    let seen_rita = value_candidates(&json(&["device", "--store", rita, "conflicts", "--json"]));
    let seen_carl = value_candidates(&json(&["device", "--store", carl, "conflicts", "--json"]));
    assert_eq!(seen_rita.len(), 2, "{seen_rita:?}");
    assert_eq!(seen_rita, seen_carl);

    // Rita settles it; after syncing, neither device has an open conflict.
    ok(&[
        "device",
        "--store",
        rita,
        "resolve",
        "deal-acme",
        "value",
        "--value",
        "1350.00",
    ]);
    for store in [rita, carl] {
        ok(&["device", "--store", store, "sync"]);
    }
    for store in [rita, carl] {
        let c = json(&["device", "--store", store, "conflicts", "--json"]);
        assert_eq!(c, serde_json::json!([]), "{store}: {c}");
        let shown = json(&["device", "--store", store, "show", "deal-acme", "--json"]);
        assert!(
            shown["record"]["tags"]
                .as_array()
                .unwrap()
                .contains(&"q1".into()),
            "{shown}"
        );
        let audit = json(&["device", "--store", store, "audit", "deal-acme", "--json"]);
        assert!(
            audit
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["policy"] == "manual"),
            "{audit}"
        );
    }

    // The organisation's figures, from the running hub: every sync counted, the one that met
    // the conflict among them, Rita's decision with its wait, nothing open.
    let stats = json(&["hub", "stats", "--store", hub_store, "--json"]);
    assert_eq!(stats["open_conflicts"], 0, "{stats}");
    let weeks = stats["weeks"].as_array().unwrap();
    let syncs: u64 = weeks.iter().map(|w| w["syncs"].as_u64().unwrap()).sum();
    let met: u64 = weeks
        .iter()
        .map(|w| w["syncs_with_conflicts"].as_u64().unwrap())
        .sum();
    let manual: u64 = weeks
        .iter()
        .map(|w| w["resolved_manually"].as_u64().unwrap())
        .sum();
    assert!(syncs >= 10 && (1..syncs).contains(&met), "{stats}");
    assert_eq!(manual, 1, "{stats}");
    assert!(
        weeks
            .iter()
            .any(|w| w["median_ms_to_manual_resolution"].as_i64().is_some()),
        "{stats}"
    );
    let text = ok(&["hub", "stats", "--store", hub_store]);
    assert!(
        text.contains("open conflicts: 0") && text.contains("median to decide"),
        "{text}"
    );

    // Each device's last sync, as the hub noted it.
    let devices = json(&["hub", "devices", "--store", hub_store, "--json"]);
    let devices = devices.as_array().unwrap();
    assert_eq!(devices.len(), 2, "{devices:?}");
    assert!(
        devices.iter().all(|d| d["last_sync_ms"].as_i64().is_some()),
        "{devices:?}"
    );
    let text = ok(&["hub", "devices", "--store", hub_store]);
    assert!(text.contains("synced just now"), "{text}");
}

#[test]
fn a_device_syncs_with_a_tls_hub_trusting_its_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("acl.toml"), "admins = [1]\n").unwrap();
    std::fs::write(
        d.join("catalog.json"),
        serde_json::to_string(&sellsync_model::Catalog::example()).unwrap(),
    )
    .unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../service/tests/fixtures");
    let cert = fixtures.join("hub-cert.pem");
    let key = fixtures.join("hub-key.pem");
    let hub_store = d.join("hub.redb");
    let dev = d.join("dev.redb");
    let dev = dev.to_str().unwrap();
    let t = json(&[
        "hub",
        "token",
        "--store",
        hub_store.to_str().unwrap(),
        "--user",
        "2",
        "--device",
        "rita-phone",
        "--json",
    ]);
    let (_hub, url) = start_hub_with(
        d,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let url = url.replace("127.0.0.1", "localhost");
    assert!(url.starts_with("wss://"), "{url}");
    let token = t["token"].as_str().unwrap();
    // wss:// without a certificate to trust is refused at init.
    let (ok_init, _, err) = run(&[
        "device", "--store", dev, "init", "--hub", &url, "--token", token,
    ]);
    assert!(!ok_init && err.contains("--ca"), "{err}");
    let init = json(&[
        "device",
        "--store",
        dev,
        "init",
        "--hub",
        &url,
        "--token",
        token,
        "--ca",
        cert.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(init["hub_checked"], true, "{init}");
    assert!(
        init["received"].as_u64().unwrap() >= 1,
        "the catalog: {init}"
    );
    let s = json(&["device", "--store", dev, "sync", "--json"]);
    assert_eq!(s["finished"], true, "{s}");
}
