//! The exported API called as plain Rust, without a hub (the story against a real hub is the
//! Python suite, tests/ffi-python): text values in and out, every bad argument a typed error,
//! `StoreLocked`, `close()`, listeners (one that panics does not break the device), and the
//! catalog fixture the Python suite hands its hub.

use std::sync::{Arc, Mutex};

use sellsync_ffi::{
    ChangeListener, Device, DeviceConfig, Enrolment, FieldInput, RecordResolution, Resolution,
    SellsyncError, ValueKind,
};

fn input(name: &str, value: &str) -> FieldInput {
    FieldInput {
        name: name.to_owned(),
        value: Some(value.to_owned()),
    }
}

fn config(path: &std::path::Path) -> DeviceConfig {
    DeviceConfig {
        store_path: path.display().to_string(),
        cache_bytes: None,
        low_memory: true,
    }
}

/// A well-formed enrolment with a hub that is not there (no connection is made).
fn enrol(dir: &std::path::Path, url: &str) -> Arc<Device> {
    Device::enrol(
        config(&dir.join("d.redb")),
        Enrolment {
            hub_url: url.to_owned(),
            token: format!("hub.2.rita-phone.{}", "ab".repeat(32)),
            ca_pem: None,
        },
    )
    .unwrap()
}

fn new_deal(d: &Device) -> String {
    d.create_deal(vec![
        input("name", "Fair lead"),
        input("value", "1000"),
        input("currency", "eur"),
        input("stage_id", "12"),
    ])
    .unwrap()
}

#[derive(Default)]
struct Seen(Mutex<Vec<Vec<String>>>);

impl ChangeListener for Seen {
    fn on_change(&self, records: Vec<String>) {
        self.0.lock().unwrap().push(records);
    }
}

struct Throws;

impl ChangeListener for Throws {
    fn on_change(&self, _: Vec<String>) {
        panic!("the app's listener failed");
    }
}

#[test]
fn values_go_in_as_text_and_come_back_typed() {
    let dir = tempfile::tempdir().unwrap();
    let d = enrol(dir.path(), "ws://127.0.0.1:9/");
    assert_eq!(d.id().unwrap(), "rita-phone");
    assert_eq!(d.user().unwrap(), 2);
    let id = new_deal(&d);
    let deals = d.deals().unwrap();
    assert_eq!(deals.len(), 1);
    assert_eq!(deals[0].id, id);
    assert_eq!(deals[0].owner, Some(2), "owner defaults to the user");
    assert_eq!(deals[0].stage, Some(12));
    let value = deals[0].value.clone().unwrap();
    assert_eq!(
        (value.kind, value.text.as_str()),
        (ValueKind::Money, "1000.00")
    );

    let note = d.note(id.clone(), "Call back Monday".into()).unwrap();
    d.tag(id.clone(), "vip".into()).unwrap();
    let task = d
        .task(id.clone(), vec![input("content", "Send the quote")])
        .unwrap();
    d.set(
        id.clone(),
        vec![input("estimated_close_date", "2027-01-15")],
    )
    .unwrap();
    let r = d.record(id.clone()).unwrap();
    assert_eq!(r.currency.as_deref(), Some("EUR"), "codes are upper-cased");
    assert_eq!(r.tags, vec!["vip".to_owned()]);
    let date = r
        .fields
        .iter()
        .find(|f| f.name == "estimated_close_date")
        .unwrap();
    assert_eq!(
        (date.value.kind, date.value.text.as_str()),
        (ValueKind::Date, "2027-01-15")
    );
    let ids: Vec<&str> = r.activities.iter().map(|a| a.id.as_str()).collect();
    assert!(
        ids.contains(&note.as_str()) && ids.contains(&task.as_str()),
        "{ids:?}"
    );
    assert!(r.conflicts.is_empty());
    // Clearing a field.
    d.set(
        id.clone(),
        vec![FieldInput {
            name: "estimated_close_date".into(),
            value: None,
        }],
    )
    .unwrap();
    let r = d.record(id.clone()).unwrap();
    assert!(
        r.fields
            .iter()
            .all(|f| f.name != "estimated_close_date" || f.value.kind == ValueKind::Null),
        "{:?}",
        r.fields
    );
    assert_eq!(d.status().unwrap().pending_changes, 1);
    d.untag(id.clone(), "vip".into()).unwrap();
    d.delete(id.clone()).unwrap();
    assert!(d.conflicts().unwrap().is_empty());
    assert!(d.notifications(false).unwrap().is_empty());
}

fn invalid_field(r: Result<impl std::fmt::Debug, SellsyncError>) -> String {
    match r {
        Err(SellsyncError::Invalid { field, reason }) => {
            assert!(!reason.is_empty());
            field
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_argument_is_a_typed_error_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = enrol(dir.path(), "ws://127.0.0.1:9/");
    let id = new_deal(&d);
    let before = d.record(id.clone()).unwrap();

    for bad in ["", "deal 1", "deal/1", &"x".repeat(65), "deal-\u{0}"] {
        assert_eq!(invalid_field(d.record(bad.to_owned())), "id", "{bad:?}");
        assert_eq!(
            invalid_field(d.set(bad.to_owned(), vec![input("value", "1")])),
            "id"
        );
    }
    assert!(matches!(
        d.record("deal-unknown".into()),
        Err(SellsyncError::NoSuchRecord { id }) if id == "deal-unknown"
    ));
    assert_eq!(
        invalid_field(d.set(id.clone(), vec![input("value", "12.345")])),
        "value"
    );
    assert_eq!(
        invalid_field(d.set(id.clone(), vec![input("value", "lots")])),
        "value"
    );
    assert_eq!(
        invalid_field(d.set(id.clone(), vec![input("no_such_field", "1")])),
        "no_such_field"
    );
    assert_eq!(
        invalid_field(d.set(id.clone(), vec![input("", "1")])),
        "field"
    );
    assert_eq!(
        invalid_field(d.set(id.clone(), vec![input("currency", "EURO")])),
        "currency"
    );
    assert_eq!(invalid_field(d.set(id.clone(), vec![])), "fields");
    assert_eq!(
        invalid_field(d.set(id.clone(), vec![input("value", "1"), input("value", "2")])),
        "value"
    );
    assert_eq!(
        invalid_field(d.create_deal(vec![input("value", "-")])),
        "value"
    );
    assert_eq!(invalid_field(d.note(id.clone(), "  ".into())), "note");
    invalid_field(d.tag(id.clone(), String::new()));
    assert_eq!(
        invalid_field(d.resolve_field(id.clone(), String::new(), Resolution::Mine)),
        "field"
    );
    assert_eq!(
        invalid_field(d.resolve_field(id.clone(), "value".into(), Resolution::Pick { index: 0 })),
        "index"
    );
    assert!(matches!(
        d.resolve_field(id.clone(), "value".into(), Resolution::Mine),
        Err(SellsyncError::NoConflict { .. })
    ));
    assert!(matches!(
        d.resolve_record(id.clone(), RecordResolution::Restore),
        Err(SellsyncError::NoConflict { .. })
    ));
    assert_eq!(invalid_field(d.sync_hub(0).await), "timeout_secs");
    assert_eq!(invalid_field(d.sync_hub(3601).await), "timeout_secs");
    assert_eq!(
        invalid_field(
            d.sync_peer("wss://127.0.0.1:9/".into(), Some("a b".into()), 1)
                .await
        ),
        "peer"
    );
    assert_eq!(
        invalid_field(d.sync_peer("ws://x/".into(), None, 1).await),
        "url"
    );
    assert_eq!(invalid_field(d.dismiss(7)), "notification");
    assert_eq!(d.record(id).unwrap(), before, "nothing was written");

    // Configuration and enrolment.
    let cfg = |p: &str, b| DeviceConfig {
        store_path: p.to_owned(),
        cache_bytes: b,
        low_memory: false,
    };
    assert_eq!(invalid_field(Device::open(cfg("", None))), "store_path");
    let other = dir.path().join("o.redb").display().to_string();
    assert_eq!(
        invalid_field(Device::open(cfg(&other, Some(0)))),
        "cache_bytes"
    );
    assert!(matches!(
        Device::open(cfg(&other, None)),
        Err(SellsyncError::NotEnrolled { .. })
    ));
    let bad = Device::enrol(
        cfg(&other, None),
        Enrolment {
            hub_url: "http://h/".into(),
            token: "t".into(),
            ca_pem: None,
        },
    );
    assert!(
        matches!(&bad, Err(SellsyncError::BadEnrolment { what, .. }) if what == "hub_url"),
        "{bad:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_hub_is_typed_and_the_device_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/", closed.local_addr().unwrap());
    drop(closed);
    let d = enrol(dir.path(), &url);
    match d.sync_hub(5).await {
        Err(SellsyncError::Unreachable { url: u, .. }) => assert_eq!(u, url),
        other => panic!("expected Unreachable, got {other:?}"),
    }
    new_deal(&d);
    assert_eq!(d.status().unwrap().last_hub_sync_ms, None);
}

#[test]
fn a_second_open_is_store_locked_and_close_releases_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let d = enrol(dir.path(), "ws://127.0.0.1:9/");
    let id = new_deal(&d);
    let path = dir.path().join("d.redb");
    assert!(matches!(
        Device::open(config(&path)),
        Err(SellsyncError::StoreLocked { .. })
    ));
    assert!(!d.is_closed());
    d.close();
    d.close();
    assert!(d.is_closed());
    assert!(matches!(d.deals(), Err(SellsyncError::Closed)));
    assert!(matches!(
        d.set(id.clone(), vec![input("value", "1")]),
        Err(SellsyncError::Closed)
    ));
    let again = Device::open(config(&path)).unwrap();
    assert_eq!(again.deals().unwrap()[0].id, id);
}

#[test]
fn listeners_are_told_and_one_that_panics_does_not_break_the_device() {
    let dir = tempfile::tempdir().unwrap();
    let d = enrol(dir.path(), "ws://127.0.0.1:9/");
    d.observe(Arc::new(Throws)).unwrap();
    let seen = Arc::new(Seen::default());
    d.observe(seen.clone()).unwrap();
    let id = new_deal(&d);
    d.tag(id.clone(), "vip".into()).unwrap();
    d.set(id.clone(), vec![input("value", "2000")]).unwrap();
    assert_eq!(
        *seen.0.lock().unwrap(),
        vec![vec![id.clone()], vec![id.clone()], vec![id.clone()]],
        "every change is told, after the listener that panicked"
    );
    assert_eq!(d.record(id).unwrap().tags, vec!["vip".to_owned()]);
}

/// tests/ffi-python/catalog.json is the example catalog (`Catalog::example()`), which the Python
/// suite hands its hub. `SELLSYNC_BLESS=1` rewrites it.
#[test]
fn the_python_suite_catalog_is_the_example_catalog() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/ffi-python/catalog.json"
    );
    let want = serde_json::to_value(sellsync_model::Catalog::example()).unwrap();
    if std::env::var_os("SELLSYNC_BLESS").is_some() {
        std::fs::write(path, serde_json::to_string_pretty(&want).unwrap() + "\n").unwrap();
    }
    let have: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(have, want, "run with SELLSYNC_BLESS=1 to rewrite {path}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_listener_is_not_told_and_a_feed_reports_each_change_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = enrol(dir.path(), "ws://127.0.0.1:9/");
    let seen = Arc::new(Seen::default());
    let registration = d.observe(seen.clone()).unwrap();
    let feed = d.changes().unwrap();
    assert_eq!(feed.next_changes(50).await.unwrap(), Vec::<String>::new());
    let id = new_deal(&d);
    registration.stop();
    assert!(!registration.is_active());
    d.tag(id.clone(), "vip".into()).unwrap();
    assert_eq!(*seen.0.lock().unwrap(), vec![vec![id.clone()]]);
    assert_eq!(feed.next_changes(1000).await.unwrap(), vec![id.clone()]);
    assert!(feed.try_next_changes().unwrap().is_empty());
    for bad in [0, sellsync_ffi::MAX_WAIT_MS + 1] {
        assert_eq!(invalid_field(feed.next_changes(bad).await), "timeout_ms");
    }
    // Before any hub round: an empty catalog, and no LAN serving (no credential yet).
    let catalog = d.catalog().unwrap();
    assert!(!catalog.loaded && catalog.stages.is_empty());
    assert!(matches!(
        d.serve_lan("127.0.0.1:0".into()).await,
        Err(SellsyncError::Auth { .. })
    ));
    assert_eq!(
        invalid_field(d.serve_lan("nowhere".into()).await.map(|_| ())),
        "address"
    );
    assert_eq!(
        invalid_field(d.custom_field(sellsync_ffi::RecordKind::Deal, String::new())),
        "name"
    );
}
