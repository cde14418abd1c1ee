//! The device commands one step off the happy path: closed pipes, damaged and mistyped stores,
//! enrolment mistakes, and output a person reads.

mod common;

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use common::{BIN, Running, json, ok, run, start};
use serde_json::Value;

/// A hub on loopback with the example catalog, and a way to enrol devices with it.
struct Hub {
    _running: Running,
    url: String,
    store: String,
}

fn start_hub(dir: &Path) -> Hub {
    std::fs::write(
        dir.join("acl.toml"),
        "admins = [1]\n[[teams]]\nid = 10\nmembers = [2, 3]\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("catalog.json"),
        serde_json::to_string(&sellsync_model::Catalog::example()).unwrap(),
    )
    .unwrap();
    let store = dir.join("hub.redb").to_str().unwrap().to_owned();
    // Issued before the hub holds its store.
    for (user, device) in [
        ("2", "rita-phone"),
        ("3", "carl-web"),
        ("99", "nobody-phone"),
    ] {
        let t = json(&[
            "hub", "token", "--store", &store, "--user", user, "--device", device, "--json",
        ]);
        std::fs::write(
            dir.join(format!("{device}.token")),
            t["token"].as_str().unwrap(),
        )
        .unwrap();
    }
    let acl = dir.join("acl.toml");
    let catalog = dir.join("catalog.json");
    let (running, url) = start(
        &[
            "hub",
            "--store",
            &store,
            "--listen",
            "127.0.0.1:0",
            "--acl",
            acl.to_str().unwrap(),
            "--catalog",
            catalog.to_str().unwrap(),
        ],
        Stdio::null(),
    );
    Hub {
        _running: running,
        url,
        store,
    }
}

fn token(dir: &Path, device: &str) -> String {
    std::fs::read_to_string(dir.join(format!("{device}.token"))).unwrap()
}

/// Rita's device, enrolled (and synced once by `init`), with one deal.
fn rita(dir: &Path, hub: &Hub) -> String {
    let store = dir.join("rita.redb").to_str().unwrap().to_owned();
    ok(&[
        "device",
        "--store",
        &store,
        "init",
        "--hub",
        &hub.url,
        "--token",
        &token(dir, "rita-phone"),
    ]);
    ok(&[
        "device",
        "--store",
        &store,
        "create-deal",
        "--id",
        "deal-acme",
        "name=Acme renewal",
        "value=1000.00",
        "currency=EUR",
        "stage_id=Qualified",
    ]);
    store
}

#[test]
fn a_closed_stdout_ends_every_reading_command_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let hub = start_hub(d);
    let store = rita(d, &hub);
    ok(&[
        "device",
        "--store",
        &store,
        "note",
        "deal-acme",
        "call back",
    ]);
    for args in [
        vec!["deals"],
        vec!["deals", "--json"],
        vec!["show", "deal-acme"],
        vec!["conflicts", "--json"],
        vec!["notifications", "--json"],
        vec!["audit", "deal-acme", "--json"],
        vec!["catalog"],
    ] {
        // The reader is gone before the command writes a byte: every write fails with EPIPE.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(BIN)
            .args(["device", "--store", &store])
            .args(&args)
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {:?} {stderr}", out.status);
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
    }
}

#[test]
fn a_mistyped_store_path_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("ritta.redb");
    let missing = missing.to_str().unwrap();
    for cmd in [
        vec!["deals"],
        vec!["show", "deal-acme"],
        vec!["conflicts"],
        vec!["sync"],
    ] {
        let (success, _, err) = run(&[&["device", "--store", missing][..], &cmd[..]].concat());
        assert!(!success, "{cmd:?}");
        assert!(err.contains("no store at"), "{cmd:?}: {err}");
        assert!(!Path::new(missing).exists(), "{cmd:?} created {missing}");
    }
}

/// Overwrites `len` bytes at each of `offsets` with pseudo-random bytes.
fn damage(path: &str, offsets: &[u64], len: usize) {
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let bytes: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    for &at in offsets {
        f.seek(SeekFrom::Start(at)).unwrap();
        f.write_all(&bytes).unwrap();
    }
    f.sync_all().unwrap();
}

#[test]
fn a_damaged_store_gives_one_clear_error_and_is_rebuilt_from_the_hub() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let hub = start_hub(d);
    let store = rita(d, &hub);
    ok(&["device", "--store", &store, "sync"]);
    let size = std::fs::metadata(&store).unwrap().len();
    let offsets: Vec<u64> = (1..)
        .map(|i| i * 8192)
        .take_while(|at| at + 4096 < size)
        .collect();
    damage(&store, &offsets, 4096);
    for cmd in [
        vec!["deals"],
        vec!["show", "deal-acme"],
        vec!["audit", "deal-acme"],
        vec!["conflicts"],
        vec!["notifications"],
        vec!["sync"],
        vec!["set", "deal-acme", "name=x"],
    ] {
        let (success, _, err) = run(&[&["device", "--store", &store][..], &cmd[..]].concat());
        assert!(!success, "{cmd:?}");
        assert!(err.contains("store damaged"), "{cmd:?}: {err}");
        assert!(err.contains("init --force"), "{cmd:?}: {err}");
        assert!(!err.contains("panicked"), "{cmd:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{cmd:?}: one error line: {err}");
    }
    // Without --force, init refuses too.
    let (again, _, err) = run(&[
        "device",
        "--store",
        &store,
        "init",
        "--hub",
        &hub.url,
        "--token",
        &token(d, "rita-phone"),
    ]);
    assert!(!again && err.contains("store damaged"), "{err}");
    let out = ok(&[
        "device",
        "--store",
        &store,
        "init",
        "--force",
        "--hub",
        &hub.url,
        "--token",
        &token(d, "rita-phone"),
    ]);
    assert!(out.contains("first sync"), "{out}");
    let deals = json(&["device", "--store", &store, "deals", "--json"]);
    assert_eq!(
        deals[0]["id"], "deal-acme",
        "the hub gave the deal back: {deals}"
    );
    let kept: Vec<_> = std::fs::read_dir(d)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .contains("rita.redb.damaged-")
        })
        .collect();
    assert_eq!(kept.len(), 1, "the damaged file is kept aside");
}

#[test]
fn init_checks_what_it_can_and_can_be_redone() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let hub = start_hub(d);
    let store = d.join("dev.redb");
    let store = store.to_str().unwrap();
    let good = token(d, "carl-web");
    let short = format!("{}.ab", good.rsplit_once('.').unwrap().0);
    for (url, tok, says) in [
        ("not a url", good.as_str(), "not a hub URL"),
        ("ftp://x", good.as_str(), "not a hub URL"),
        ("ws://", good.as_str(), "no valid host"),
        ("ws://h:99999/", good.as_str(), "not a port number"),
        (hub.url.as_str(), short.as_str(), "64 hex digits"),
        (
            hub.url.as_str(),
            token(d, "nobody-phone").as_str(),
            "does not list",
        ),
    ] {
        let (success, _, err) = run(&[
            "device", "--store", store, "init", "--hub", url, "--token", tok,
        ]);
        assert!(!success, "{url} {tok}");
        assert!(err.contains(says), "{url}: {err}");
        assert!(!Path::new(store).exists(), "{url}: nothing is created");
    }
    // A hub nobody answers at: enrolled, checked at the first sync.
    let out = ok(&[
        "device",
        "--store",
        store,
        "init",
        "--hub",
        "ws://127.0.0.1:9/",
        "--token",
        &good,
        "--json",
    ]);
    let out: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(out["hub_checked"], false, "{out}");
    let (again, _, err) = run(&[
        "device", "--store", store, "init", "--hub", &hub.url, "--token", &good,
    ]);
    assert!(!again && err.contains("--force"), "{err}");
    // Redone with the right URL: same device, so it is enrolled again in place.
    let out = json(&[
        "device", "--store", store, "init", "--force", "--hub", &hub.url, "--token", &good,
        "--json",
    ]);
    assert_eq!(out["hub_checked"], true, "{out}");
    assert_eq!(out["user"], 3, "{out}");
    let s = json(&["device", "--store", store, "sync", "--json"]);
    assert_eq!(s["finished"], true, "{s}");
    let _ = &hub.store;
}

#[test]
fn errors_read_as_sentences() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let hub = start_hub(d);
    let store = rita(d, &hub);
    let (success, _, err) = run(&[
        "device",
        "--store",
        &store,
        "set",
        "deal-acme",
        "value=-5.00",
    ]);
    assert!(!success);
    assert!(err.contains("an amount cannot be below zero"), "{err}");
    let (_, _, err) = run(&[
        "device",
        "--store",
        &store,
        "set",
        "deal-acme",
        "stage_id=Nowhere",
    ]);
    assert!(
        err.contains("no stage named \"Nowhere\"") && err.contains("Qualified (12)"),
        "{err}"
    );
    let (_, _, err) = run(&[
        "device",
        "--store",
        &store,
        "set",
        "deal-acme",
        "stage_id=99",
    ]);
    assert!(err.contains("choose one of"), "{err}");
    // A hub that does not speak TLS, dialed as wss://.
    let plain = hub.url.replace("ws://", "wss://");
    let pem = Path::new(env!("CARGO_MANIFEST_DIR")).join("../service/tests/fixtures/hub-cert.pem");
    let (_, _, err) = run(&[
        "device",
        "--store",
        &store,
        "init",
        "--force",
        "--hub",
        &plain,
        "--token",
        &token(d, "rita-phone"),
        "--ca",
        pem.to_str().unwrap(),
    ]);
    assert!(
        err.contains("TLS handshake") && err.contains("plain ws://"),
        "{err}"
    );
    // A revoked token: a sentence, not a dump.
    drop(hub);
    let hub_store = d.join("hub.redb");
    ok(&[
        "hub",
        "revoke",
        "--store",
        hub_store.to_str().unwrap(),
        "--device",
        "rita-phone",
    ]);
    let hub = start_hub_again(d);
    let (success, _, err) = run(&["device", "--store", &store, "sync", "--hub", &hub.1]);
    assert!(!success);
    assert!(err.contains("authentication failed"), "{err}");
    assert!(!err.contains("PeerError") && !err.contains('{'), "{err}");
}

/// The hub of [`start_hub`] started again on its store (tokens already issued).
fn start_hub_again(d: &Path) -> (Running, String) {
    let store = d.join("hub.redb");
    let acl = d.join("acl.toml");
    start(
        &[
            "hub",
            "--store",
            store.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--acl",
            acl.to_str().unwrap(),
        ],
        Stdio::null(),
    )
}

#[test]
fn output_names_things_and_orders_them_as_people_count() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let hub = start_hub(d);
    let store = rita(d, &hub);
    for id in ["deal-104", "deal-62"] {
        let out = json(&[
            "device",
            "--store",
            &store,
            "create-deal",
            "--id",
            id,
            "name=Order",
            "value=5",
            "currency=EUR",
            "stage_id=prospecting",
            "--json",
        ]);
        assert_eq!(out["id"], id, "{out}");
    }
    let del = json(&["device", "--store", &store, "delete", "deal-62", "--json"]);
    assert_eq!(del["deleted"], true, "{del}");
    let set = json(&[
        "device",
        "--store",
        &store,
        "set",
        "deal-104",
        "owner_id=Carl Colleague",
        "--json",
    ]);
    assert_eq!(set["set"], serde_json::json!(["owner_id"]), "{set}");
    let note = json(&[
        "device", "--store", &store, "note", "deal-104", "hello", "--json",
    ]);
    assert!(
        note["note"].as_str().unwrap().starts_with("note-"),
        "{note}"
    );
    let tag = json(&[
        "device", "--store", &store, "tag", "--json", "deal-104", "+q1",
    ]);
    assert_eq!(tag["tags"], serde_json::json!(["q1"]), "{tag}");

    let lines: Vec<String> = ok(&["device", "--store", &store, "deals"])
        .lines()
        .map(str::to_owned)
        .collect();
    let ids: Vec<&str> = lines
        .iter()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(ids, vec!["deal-62", "deal-104", "deal-acme"], "{lines:?}");
    assert!(lines[0].contains("deleted"), "{}", lines[0]);
    assert!(
        lines[1].contains("live") && lines[1].contains("Prospecting"),
        "{}",
        lines[1]
    );
    assert!(lines[1].contains("Carl Colleague"), "{}", lines[1]);
    assert!(
        lines[2].contains("Qualified") && lines[2].contains("Rita Rep"),
        "{}",
        lines[2]
    );

    let shown = ok(&["device", "--store", &store, "show", "deal-104"]);
    assert!(
        shown.contains("hello") && shown.contains("by Rita Rep"),
        "{shown}"
    );
    assert!(!shown.contains('#'), "{shown}");
    let catalog = ok(&["device", "--store", &store, "catalog"]);
    assert!(
        catalog.contains("Qualified") && catalog.contains("Trade fair"),
        "{catalog}"
    );
    let contacts = run(&["device", "--store", &store, "contacts"]);
    assert!(contacts.0, "{contacts:?}");
}

#[test]
fn a_hubs_own_plain_openssl_certificate_is_trusted_with_ca() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("acl.toml"), "admins = [1]\n").unwrap();
    std::fs::write(
        d.join("catalog.json"),
        serde_json::to_string(&sellsync_model::Catalog::example()).unwrap(),
    )
    .unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let cert = fixtures.join("hub-openssl-cert.pem");
    let key = fixtures.join("hub-openssl-key.pem");
    let hub_store = d.join("hub.redb");
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
    let (_hub, url) = start(
        &[
            "hub",
            "--store",
            hub_store.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--acl",
            d.join("acl.toml").to_str().unwrap(),
            "--catalog",
            d.join("catalog.json").to_str().unwrap(),
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        Stdio::null(),
    );
    assert!(url.starts_with("wss://"), "{url}");
    let dev = d.join("dev.redb");
    let dev = dev.to_str().unwrap();
    let out = json(&[
        "device",
        "--store",
        dev,
        "init",
        "--hub",
        &url,
        "--token",
        t["token"].as_str().unwrap(),
        "--ca",
        cert.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(out["hub_checked"], true, "{out}");
    let s = json(&["device", "--store", dev, "sync", "--json"]);
    assert_eq!(s["finished"], true, "{s}");
    // Another certificate is not trusted.
    let other =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../service/tests/fixtures/hub-cert.pem");
    let dev2 = d.join("dev2.redb");
    let (success, _, err) = run(&[
        "device",
        "--store",
        dev2.to_str().unwrap(),
        "init",
        "--hub",
        &url,
        "--token",
        t["token"].as_str().unwrap(),
        "--ca",
        other.to_str().unwrap(),
    ]);
    assert!(!success && err.contains("TLS handshake"), "{err}");
    assert!(!dev2.exists(), "a refused enrolment leaves nothing");
}

#[test]
fn conflicts_audit_and_notifications_read_as_names_and_times() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let hub = start_hub(d);
    let rita = rita(d, &hub);
    let carl = d.join("carl.redb").to_str().unwrap().to_owned();
    ok(&[
        "device",
        "--store",
        &carl,
        "init",
        "--hub",
        &hub.url,
        "--token",
        &token(d, "carl-web"),
    ]);
    // Rita and Carl share a team: Carl sees her deal; then both edit it offline.
    ok(&["device", "--store", &rita, "sync"]);
    let got = ok(&["device", "--store", &carl, "sync"]);
    assert!(got.contains("changed deal-acme \"Acme renewal\""), "{got}");
    assert_eq!(
        got.matches("deal-acme").count(),
        1,
        "each record once: {got}"
    );
    for (store, value, date) in [
        (&rita, "1500.00", "2027-02-15"),
        (&carl, "1200.00", "2027-03-01"),
    ] {
        ok(&[
            "device",
            "--store",
            store,
            "set",
            "deal-acme",
            &format!("value={value}"),
            &format!("estimated_close_date={date}"),
        ]);
    }
    for store in [&rita, &carl, &rita] {
        ok(&["device", "--store", store, "sync"]);
    }
    let text = ok(&["device", "--store", &rita, "conflicts"]);
    assert!(
        text.contains("deal-acme \"Acme renewal\": value is in conflict"),
        "{text}"
    );
    assert!(
        text.contains("by Rita Rep") && text.contains("by Carl Colleague"),
        "{text}"
    );
    assert!(!text.contains("user ") && !text.contains('#'), "{text}");
    ok(&[
        "device",
        "--store",
        &rita,
        "resolve",
        "deal-acme",
        "value",
        "--pick",
        "1",
    ]);
    let audit = ok(&["device", "--store", &rita, "audit", "deal-acme"]);
    assert!(audit.contains("chosen by Rita Rep"), "{audit}");
    assert!(!audit.contains("user 2"), "{audit}");
    // Times are local dates, not milliseconds.
    let year = chrono::Local::now().format("%Y").to_string();
    assert!(audit.lines().all(|l| l.starts_with(&year)), "{audit}");
    // Whoever lost the close date is told, in words.
    let mut told = String::new();
    for store in [&rita, &carl] {
        told.push_str(&ok(&["device", "--store", store, "notifications"]));
    }
    assert!(told.contains("estimated_close_date"), "{told}");
    assert!(
        told.contains("gave way to") && !told.contains('{'),
        "{told}"
    );
}

#[test]
fn generated_record_and_note_ids_never_repeat() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let hub = start_hub(d);
    let store = rita(d, &hub);
    let mut ids = std::collections::BTreeSet::new();
    for _ in 0..3 {
        let out = json(&[
            "device",
            "--store",
            &store,
            "create-deal",
            "name=Order",
            "--json",
        ]);
        let id = out["id"].as_str().unwrap().to_owned();
        assert!(id.starts_with("deal-"), "{out}");
        let note = json(&["device", "--store", &store, "note", &id, "hi", "--json"]);
        let note = note["note"].as_str().unwrap().to_owned();
        assert!(note.starts_with("note-"), "{note}");
        assert!(ids.insert(id), "a deal id repeated");
        assert!(ids.insert(note), "a note id repeated");
    }
    assert_eq!(ids.len(), 6);
}
