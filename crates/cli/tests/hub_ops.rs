//! The real binary off the happy path: ctrl-c during the first import, admin commands while
//! the hub runs, the policy file, plain logs naming each session, `/healthz`, and a device
//! whose commands work while it serves LAN peers.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, Running, json, ok, run, start, start_command};
use serde_json::Value;

fn write_acl_and_catalog(d: &Path, acl: &str) {
    std::fs::write(d.join("acl.toml"), acl).unwrap();
    std::fs::write(
        d.join("catalog.json"),
        serde_json::to_string(&sellsync_model::Catalog::example()).unwrap(),
    )
    .unwrap();
}

fn start_hub(d: &Path, store: &str, stderr: Stdio) -> (Running, String) {
    let acl = d.join("acl.toml");
    let catalog = d.join("catalog.json");
    start(
        &[
            "hub",
            "--store",
            store,
            "--listen",
            "127.0.0.1:0",
            "--acl",
            acl.to_str().unwrap(),
            "--catalog",
            catalog.to_str().unwrap(),
        ],
        stderr,
    )
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

fn create_deal(store: &str, id: &str) {
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

fn sync(store: &str) -> Value {
    json(&["device", "--store", store, "sync", "--json"])
}

fn interrupt(child: &std::process::Child) {
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits up to `limit` for the process to exit.
fn exited_within(child: &mut std::process::Child, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if child.try_wait().unwrap().is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn ctrl_c_during_the_first_import_stops_the_hub_and_the_import_runs_at_the_next_start() {
    use sellsync_sim::{Sim, SimConfig, demo_data, token_for};
    sellsync_hub_bridge::install_crypto_provider();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sim = Sim::new(demo_data(), SimConfig::default());
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let crm = format!("http://{}", listener.local_addr().unwrap());
    rt.spawn(sellsync_sim::serve(listener, sim, std::future::pending()));
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("hub.redb");
    let store = store.to_str().unwrap();
    let hub = |rate: &str| {
        let mut cmd = Command::new(BIN);
        cmd.args(["hub", "--store", store, "--listen", "127.0.0.1:0"])
            .args(["--zendesk-url", &crm, "--zendesk-rate", rate])
            .env("SELLSYNC_ZENDESK_TOKEN", token_for(2))
            .stderr(Stdio::null());
        cmd
    };
    // One request a second: the import takes well over ten seconds.
    let mut slow = hub("1");
    let mut child = slow.stdout(Stdio::piped()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    assert!(child.try_wait().unwrap().is_none(), "the hub is importing");
    interrupt(&child);
    let stopped = exited_within(&mut child, Duration::from_secs(5));
    if !stopped {
        let _ = child.kill();
    }
    let _ = child.wait();
    assert!(stopped, "one ctrl-c stops the hub during its first import");
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(!out.contains("listening"), "it never served: {out}");
    // Interrupted, the import is not marked done (there may be no status file yet).
    let (_, status, _) = run(&["bridge", "status", "--store", store, "--json"]);
    assert!(!status.contains("\"result\": \"ok\""), "{status}");

    // The next start imports again, to its end, then serves.
    let (_hub, _url) = start_command(hub("0"));
    let status = json(&["bridge", "status", "--store", store, "--json"]);
    assert_eq!(status["last_import"]["result"], "ok", "{status}");
}

#[test]
fn a_running_hub_takes_token_revoke_devices_and_reload_acl() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // At first users 2 and 3 share no team.
    write_acl_and_catalog(d, "admins = [1]\n");
    let path = |n: &str| d.join(format!("{n}.redb")).to_str().unwrap().to_owned();
    let (hub, a, b) = (path("hub"), path("a"), path("b"));
    let (_running, url) = start_hub(d, &hub, Stdio::null());
    // Issued while the hub runs (it holds the store): through its admin channel.
    let ta = token(&hub, "2", "a-phone");
    let tb = token(&hub, "3", "b-phone");
    ok(&[
        "device", "--store", &a, "init", "--hub", &url, "--token", &ta,
    ]);
    ok(&[
        "device", "--store", &b, "init", "--hub", &url, "--token", &tb,
    ]);
    create_deal(&a, "deal-acme");
    assert_eq!(sync(&a)["finished"], true);
    assert_eq!(sync(&b)["finished"], true);
    assert!(deal_ids(&b).is_empty());

    let listed = json(&["hub", "devices", "--store", &hub, "--json"]);
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["device"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a-phone", "b-phone"], "{listed}");

    // A broken access file is refused and changes nothing.
    std::fs::write(d.join("acl.toml"), "admins = \"everyone\"\n").unwrap();
    let (success, _, err) = run(&["hub", "reload-acl", "--store", &hub]);
    assert!(!success);
    assert!(err.contains("acl.toml"), "{err}");
    assert_eq!(sync(&b)["finished"], true);
    assert!(deal_ids(&b).is_empty());
    // A good one is in force for the next session: 2 and 3 now share a team.
    std::fs::write(
        d.join("acl.toml"),
        "admins = [1]\n[[teams]]\nid = 10\nmembers = [2, 3]\n",
    )
    .unwrap();
    ok(&["hub", "reload-acl", "--store", &hub]);
    assert_eq!(sync(&b)["finished"], true);
    assert_eq!(deal_ids(&b), ["deal-acme"]);

    // Revoked while running: the next connection is refused.
    let r = json(&[
        "hub", "revoke", "--store", &hub, "--device", "b-phone", "--json",
    ]);
    assert_eq!(r["revoked"], 1, "{r}");
    let (success, _, _) = run(&["device", "--store", &b, "sync"]);
    assert!(!success, "a revoked device still syncs");
    let listed = json(&["hub", "devices", "--store", &hub, "--json"]);
    assert_eq!(listed[1]["live"], false, "{listed}");
}

#[test]
fn an_invalid_policy_file_is_a_clear_error_at_start_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_acl_and_catalog(d, "admins = [1]\n");
    std::fs::write(d.join("policy.toml"), "[deal]\nvalu = \"manual\"\n").unwrap();
    let store = d.join("hub.redb");
    let (success, _, err) = run(&[
        "hub",
        "--store",
        store.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--policy",
        d.join("policy.toml").to_str().unwrap(),
    ]);
    assert!(!success);
    assert!(
        err.contains("policy.toml is not a usable policy file")
            && err.contains("[deal] has no field \"valu\""),
        "{err}"
    );
    assert!(!store.exists(), "nothing was written");
}

#[test]
fn a_device_projects_with_the_policy_of_its_hub() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_acl_and_catalog(d, "admins = [1]\n[[teams]]\nid = 10\nmembers = [2, 3]\n");
    std::fs::write(d.join("policy.toml"), "[deal]\nname = \"manual\"\n").unwrap();
    let path = |n: &str| d.join(format!("{n}.redb")).to_str().unwrap().to_owned();
    let (hub, a, b) = (path("hub"), path("a"), path("b"));
    let (ta, tb) = (token(&hub, "2", "a-phone"), token(&hub, "3", "b-phone"));
    let (_running, url) = start(
        &[
            "hub",
            "--store",
            &hub,
            "--listen",
            "127.0.0.1:0",
            "--acl",
            d.join("acl.toml").to_str().unwrap(),
            "--catalog",
            d.join("catalog.json").to_str().unwrap(),
            "--policy",
            d.join("policy.toml").to_str().unwrap(),
        ],
        Stdio::null(),
    );
    ok(&[
        "device", "--store", &a, "init", "--hub", &url, "--token", &ta,
    ]);
    ok(&[
        "device", "--store", &b, "init", "--hub", &url, "--token", &tb,
    ]);
    create_deal(&a, "deal-acme");
    sync(&a);
    sync(&b);
    ok(&["device", "--store", &a, "set", "deal-acme", "name=Acme (A)"]);
    ok(&["device", "--store", &b, "set", "deal-acme", "name=Acme (B)"]);
    sync(&a);
    sync(&b);
    sync(&a);
    // By default the later name would win; the hub's policy makes it a manual conflict.
    for store in [&a, &b] {
        let c = json(&["device", "--store", store, "conflicts", "--json"]);
        let fields: Vec<&str> = c[0]["conflicts"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["slot"]["field"].as_str())
            .collect();
        assert_eq!(fields, ["name"], "{store}: {c}");
    }
}

/// GET `path` on `addr` with a plain socket; the whole answer.
fn http_get(addr: &str, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: hub\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn hub_logs_are_plain_text_naming_each_session_and_healthz_answers() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_acl_and_catalog(d, "admins = [1]\n");
    let path = |n: &str| d.join(format!("{n}.redb")).to_str().unwrap().to_owned();
    let (hub, a) = (path("hub"), path("a"));
    let ta = token(&hub, "2", "a-phone");
    let log = d.join("hub.log");
    let (running, url) = start_hub(d, &hub, Stdio::from(std::fs::File::create(&log).unwrap()));
    ok(&[
        "device", "--store", &a, "init", "--hub", &url, "--token", &ta,
    ]);
    assert_eq!(sync(&a)["finished"], true);

    let addr = url.trim_start_matches("ws://").trim_end_matches('/');
    let answer = http_get(addr, "/healthz");
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    let body: Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["status"], "ok", "{body}");
    assert_eq!(body["store"], "ok", "{body}");
    assert_eq!(body["bridge"], Value::Null, "{body}");

    drop(running);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains('\x1b'),
        "colour codes in a log file:\n{text}"
    );
    let line = text
        .lines()
        .find(|l| l.contains("session ended"))
        .unwrap_or_else(|| panic!("no session line:\n{text}"));
    assert!(
        line.contains("device=\"a-phone\"") || line.contains("device=a-phone"),
        "{line}"
    );
    assert!(
        line.contains("user=2") && line.contains("finished"),
        "{line}"
    );
}

#[test]
fn a_serving_device_still_reads_and_edits_and_its_peers_sync() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_acl_and_catalog(d, "admins = [1]\n[[teams]]\nid = 10\nmembers = [2, 3]\n");
    let path = |n: &str| d.join(format!("{n}.redb")).to_str().unwrap().to_owned();
    let (hub, a, b) = (path("hub"), path("a"), path("b"));
    let (ta, tb) = (token(&hub, "2", "a-phone"), token(&hub, "3", "b-phone"));
    let (running, url) = start_hub(d, &hub, Stdio::null());
    ok(&[
        "device", "--store", &a, "init", "--hub", &url, "--token", &ta,
    ]);
    ok(&[
        "device", "--store", &b, "init", "--hub", &url, "--token", &tb,
    ]);
    create_deal(&a, "deal-acme");
    sync(&a);
    sync(&b);
    drop(running);

    let (_serving, lan) = start(
        &["device", "--store", &a, "serve", "--listen", "127.0.0.1:0"],
        Stdio::null(),
    );
    // The rep's own commands work while the device serves.
    assert_eq!(deal_ids(&a), ["deal-acme"]);
    ok(&[
        "device",
        "--store",
        &a,
        "set",
        "deal-acme",
        "name=Renamed while serving",
    ]);
    // And the peer gets the edit.
    let s = json(&["device", "--store", &b, "sync", "--peer", &lan, "--json"]);
    assert_eq!(s["finished"], true, "{s}");
    let shown = json(&["device", "--store", &b, "show", "deal-acme", "--json"]);
    assert_eq!(
        shown["record"]["fields"]["name"]["value"], "Renamed while serving",
        "{shown}"
    );
    assert_eq!(deal_ids(&a), ["deal-acme"]);
}
