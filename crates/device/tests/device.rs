//! The device facade against a real hub over loopback (127.0.0.1, port 0): enrolment, rounds,
//! a value conflict seen and resolved on two devices, change observation, and each typed error.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sellsync_device::{
    Choice, Conflict, Device, DeviceConfig, DeviceError, Enrolment, FieldKey, Money, RecordId,
    Slot, UserId, Value,
};
use sellsync_model::{Catalog, DeviceId};
use sellsync_service::credential::{self, Issuer};
use sellsync_service::net::{self, NetConfig, SharedNode};
use sellsync_service::{Acl, Node, token};
use sellsync_store::{NodeIdentity, Role as StoreRole, Store};
use sellsync_sync::{AcceptConfig, Limits, Role, Session};

const ACL: &str = "admins = [1]\n[[teams]]\nid = 10\nmembers = [2, 3]\n";
const ROUND: Duration = Duration::from_secs(20);

/// A hub serving on 127.0.0.1 until dropped.
struct TestHub {
    node: SharedNode,
    url: String,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl TestHub {
    async fn start(dir: &Path) -> TestHub {
        let store = Arc::new(Store::open(dir.join("hub.redb")).unwrap());
        Node::init(
            &store,
            &NodeIdentity {
                device_id: "hub".parse().unwrap(),
                user_id: UserId(0),
                role: StoreRole::Hub,
                hub_url: None,
                hub_token: None,
            },
        )
        .unwrap();
        let mut node = Node::open(store.clone(), Some(Acl::from_toml(ACL).unwrap())).unwrap();
        node.write_catalog(&Catalog::example(), net::now_ms())
            .unwrap();
        let issuer = Issuer::load(
            &store,
            node.id().clone(),
            ACL.to_owned(),
            credential::DEFAULT_CREDENTIAL_TTL_MS,
        )
        .unwrap();
        node.replica().set_issuer(Some(issuer));
        let node: SharedNode = Arc::new(Mutex::new(node));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/", listener.local_addr().unwrap());
        let accept = AcceptConfig {
            node: "hub".parse().unwrap(),
            role: Role::Hub,
            token: Vec::new(),
            mutual: false,
            nonce: Vec::new(),
            limits: Limits::default(),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(net::serve(
            listener,
            node.clone(),
            move || Session::accept(accept.clone()),
            NetConfig::default(),
            async move {
                let _ = stopped.await;
            },
        ));
        TestHub {
            node,
            url,
            _stop: stop,
        }
    }

    /// An enrolment token for `device` of `user`.
    fn token(&self, device: &str, user: u64) -> String {
        let dev: DeviceId = device.parse().unwrap();
        let n = self.node.lock().unwrap();
        let issued = n
            .store()
            .write(|w| w.issue_token(UserId(user), &dev, net::now_ms(), None))
            .unwrap();
        token::format(n.id(), UserId(user), &dev, &issued.token)
    }

    fn revoke(&self, device: &str) {
        let dev: DeviceId = device.parse().unwrap();
        let n = self.node.lock().unwrap();
        let revoked = n
            .store()
            .write(|w| w.revoke_device_tokens(&dev, net::now_ms()))
            .unwrap();
        assert_eq!(revoked, 1);
    }

    fn enrol(&self, dir: &Path, device: &str, user: u64) -> Device {
        Device::enrol(
            DeviceConfig::new(dir.join(format!("{device}.redb"))),
            Enrolment {
                hub_url: self.url.clone(),
                token: self.token(device, user),
                ca_pem: None,
            },
        )
        .unwrap()
    }
}

fn key(s: &str) -> FieldKey {
    s.parse().unwrap()
}

fn euros(n: i64) -> Value {
    Value::Money(Money::from_cents(n * 100))
}

fn new_deal(d: &Device, name: &str) -> RecordId {
    d.create_deal(vec![
        (key("name"), Value::Text(name.into())),
        (key("value"), euros(1000)),
        (key("currency"), Value::Text("EUR".into())),
        (key("stage_id"), Value::Ref(12)),
    ])
    .unwrap()
}

/// A fake but well-formed enrolment for a hub that is not there.
fn offline_enrolment(url: &str, device: &str) -> Enrolment {
    let dev: DeviceId = device.parse().unwrap();
    Enrolment {
        hub_url: url.to_owned(),
        token: token::format(&"hub".parse().unwrap(), UserId(2), &dev, &"ab".repeat(32)),
        ca_pem: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_devices_conflict_on_a_value_one_resolves_and_the_other_sees_it() {
    let dir = tempfile::tempdir().unwrap();
    let hub = TestHub::start(dir.path()).await;
    let rita = hub.enrol(dir.path(), "rita-phone", 2);
    let carl = hub.enrol(dir.path(), "carl-laptop", 3);
    assert_eq!(rita.user().unwrap(), UserId(2));
    assert!(
        !rita.catalog().unwrap().loaded,
        "no catalog before the first round"
    );
    assert_eq!(rita.status().unwrap().last_hub_sync_ms, None);

    let reach = sellsync_device::CrmReach {
        last_reached_ms: Some(1_700_000_000_000),
        unreachable_since_ms: None,
    };
    hub.node
        .lock()
        .unwrap()
        .write_crm_reach(&reach, net::now_ms())
        .unwrap();
    rita.sync_hub(ROUND).await.unwrap();
    assert!(
        rita.catalog().unwrap().loaded,
        "the first round brings the catalog"
    );
    assert_eq!(rita.status().unwrap().crm_reach, Some(reach));
    let id = new_deal(&rita, "Fair lead");
    let before = rita.status().unwrap();
    assert!(before.last_hub_sync_ms.is_some());
    assert_eq!(
        before.pending_changes, 1,
        "the new deal is not at the hub yet"
    );
    let sent = rita.sync_hub(ROUND).await.unwrap();
    assert_eq!(sent.peer, Some("hub".parse().unwrap()));
    assert_eq!(rita.status().unwrap().pending_changes, 0);

    let got = carl.sync_hub(ROUND).await.unwrap();
    assert!(got.changed.contains(&id), "{got:?}");
    let deals = carl.deals().unwrap();
    assert_eq!(deals.len(), 1);
    assert_eq!(deals[0].id, id);
    assert_eq!(deals[0].name.as_deref(), Some("Fair lead"));
    assert_eq!(deals[0].owner, Some(UserId(2)));
    assert_eq!(deals[0].stage, Some(12));
    assert_eq!(deals[0].value, Some(euros(1000)));
    assert_eq!(deals[0].open_conflicts, 0);

    // Both offline, both set the value.
    let mut carl_changes = carl.subscribe();
    // The close date is of the notify tier: the later write wins, its loser is told.
    let kind = sellsync_device::RecordKind::Deal;
    let early = rita
        .parse_value(kind, "estimated_close_date", "2027-01-15")
        .unwrap();
    let late = carl
        .parse_value(kind, "estimated_close_date", "2027-02-01")
        .unwrap();
    rita.set(&id, vec![(key("value"), euros(2000)), early.clone()])
        .unwrap();
    std::thread::sleep(Duration::from_millis(5));
    carl.set(&id, vec![(key("value"), euros(3000)), late.clone()])
        .unwrap();
    assert_eq!(
        carl_changes.try_next(),
        vec![id.clone()],
        "a local edit is reported"
    );

    rita.sync_hub(ROUND).await.unwrap();
    carl.sync_hub(ROUND).await.unwrap();
    rita.sync_hub(ROUND).await.unwrap();

    let slot: Slot = "value".parse().unwrap();
    for (who, d) in [("rita", &rita), ("carl", &carl)] {
        let all = d.conflicts().unwrap();
        assert_eq!(all.len(), 1, "{who}: {all:?}");
        assert_eq!(all[0].record, id);
        let Some(open) = all[0]
            .conflicts
            .iter()
            .find(|c| matches!(&c.conflict, Conflict::Field { slot: s, .. } if *s == slot))
        else {
            panic!("{who}: no value conflict in {:?}", all[0].conflicts);
        };
        let Conflict::Field { candidates, .. } = &open.conflict else {
            unreachable!()
        };
        assert_eq!(
            open.base,
            Some(euros(1000)),
            "{who}: both started from 1000 EUR"
        );
        let mut seen: Vec<(Value, UserId, String)> = candidates
            .iter()
            .map(|c| (c.value.clone(), c.by, c.device.to_string()))
            .collect();
        seen.sort_by_key(|(_, by, _)| by.0);
        assert_eq!(
            seen,
            vec![
                (euros(2000), UserId(2), "rita-phone".to_owned()),
                (euros(3000), UserId(3), "carl-laptop".to_owned()),
            ],
            "{who}"
        );
        assert!(
            candidates.iter().all(|c| c.at > 0),
            "{who}: candidates carry their time"
        );
        assert_eq!(d.status().unwrap().open_conflicts, 1, "{who}");
        assert_eq!(d.deals().unwrap()[0].open_conflicts, 1, "{who}");
        assert_eq!(
            d.deals().unwrap()[0].value,
            None,
            "{who}: a value in conflict"
        );
    }
    // An edit of the field in conflict is refused, typed.
    assert!(matches!(
        carl.set(&id, vec![(key("value"), euros(1))]),
        Err(DeviceError::InConflict { .. })
    ));

    // A resolution against candidates that are not the ones open now is refused: look again.
    let stale = vec!["1@72697461".to_owned()];
    assert!(matches!(
        carl.resolve_field_seen(&id, &slot, Some(stale), Choice::Pick(1)),
        Err(DeviceError::Conflict { .. })
    ));
    assert!(matches!(
        carl.resolve_field(&id, &slot, Choice::Pick(3)),
        Err(DeviceError::Conflict { .. })
    ));
    assert_eq!(carl.conflicts().unwrap().len(), 1, "nothing was resolved");
    // Rita keeps hers.
    rita.resolve_field(&id, &slot, Choice::Mine).unwrap();
    assert!(rita.conflicts().unwrap().is_empty());
    assert!(matches!(
        rita.resolve_field(&id, &slot, Choice::Mine),
        Err(DeviceError::NoConflict { .. })
    ));
    rita.sync_hub(ROUND).await.unwrap();

    carl_changes.try_next();
    let got = carl.sync_hub(ROUND).await.unwrap();
    assert!(got.changed.contains(&id), "{got:?}");
    let reported = tokio::time::timeout(Duration::from_secs(5), carl_changes.next())
        .await
        .expect("carl's subscription reports the resolved record");
    assert_eq!(reported, vec![id.clone()]);
    let p = carl.record(&id).unwrap();
    assert!(p.conflicts.is_empty(), "{:?}", p.conflicts);
    assert_eq!(p.record.fields.get(&key("value")), Some(&euros(2000)));
    assert_eq!(carl.status().unwrap().open_conflicts, 0);
    let audit = carl.audit(&id).unwrap();
    assert!(
        audit
            .iter()
            .any(|e| e.slot.as_ref() == Some(&slot) && e.by == Some(UserId(2))),
        "{audit:?}"
    );
    // Rita's close date gave way to Carl's: she is told.
    let told = rita.notifications(true).unwrap();
    assert_eq!(told.len(), 1, "{told:?}");
    let detail = told[0].detail.as_ref().expect("a readable notification");
    assert_eq!(
        (&detail.record, &detail.yours, &detail.kept, detail.kept_by),
        (&id, &early.1, &late.1, UserId(3))
    );
    assert_eq!(
        carl.record(&id).unwrap().record.fields.get(&early.0),
        Some(&late.1)
    );
    rita.dismiss(told[0].id).unwrap();
    assert!(rita.notifications(true).unwrap().is_empty());
    assert_eq!(rita.notifications(false).unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_value_is_a_typed_error_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let hub = TestHub::start(dir.path()).await;
    let rita = hub.enrol(dir.path(), "rita-phone", 2);
    rita.sync_hub(ROUND).await.unwrap();
    let id = new_deal(&rita, "Fair lead");
    let before = rita.record(&id).unwrap();
    let mut changes = rita.subscribe();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    rita.on_change(Box::new(move |_| {
        h.fetch_add(1, Ordering::SeqCst);
    }));

    for (field, value) in [
        ("value", Value::Text("lots".into())),
        ("stage_id", Value::Ref(999)),
    ] {
        match rita.set(
            &id,
            vec![
                (key("name"), Value::Text("Renamed".into())),
                (key(field), value),
            ],
        ) {
            Err(DeviceError::Invalid { field: f, reason }) => {
                assert_eq!(f, field);
                assert!(!reason.is_empty());
            }
            other => panic!("{field}: expected Invalid, got {other:?}"),
        }
    }
    assert!(matches!(
        rita.create_deal(vec![(key("no_such_field"), Value::Int(1))]),
        Err(DeviceError::Invalid { .. })
    ));
    assert_eq!(rita.record(&id).unwrap(), before, "nothing was written");
    assert_eq!(rita.deals().unwrap().len(), 1);
    assert!(changes.try_next().is_empty());
    assert_eq!(hits.load(Ordering::SeqCst), 0);

    let missing: RecordId = "deal-nope".parse().unwrap();
    assert!(matches!(
        rita.note(&missing, "hello"),
        Err(DeviceError::NoSuchRecord { id }) if id == missing
    ));
    assert!(matches!(
        rita.record(&missing),
        Err(DeviceError::NoSuchRecord { .. })
    ));

    // Other edits go through and are reported once each.
    let note = rita.note(&id, "Met at the fair").unwrap();
    rita.tag(&id, "hot").unwrap();
    let task = rita
        .task(&id, vec![(key("content"), Value::Text("Call back".into()))])
        .unwrap();
    let p = rita.record(&id).unwrap();
    assert!(p.record.tags.contains("hot"));
    let acts: BTreeSet<String> = p
        .record
        .activities
        .iter()
        .map(|a| a.id.to_string())
        .collect();
    assert!(
        acts.contains(note.as_str()) && acts.contains(task.as_str()),
        "{acts:?}"
    );
    rita.untag(&id, "hot").unwrap();
    assert!(!rita.record(&id).unwrap().record.tags.contains("hot"));
    assert_eq!(changes.try_next(), vec![id.clone()]);
    assert_eq!(hits.load(Ordering::SeqCst), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_callback_does_not_break_the_device() {
    let dir = tempfile::tempdir().unwrap();
    let hub = TestHub::start(dir.path()).await;
    let rita = hub.enrol(dir.path(), "rita-phone", 2);
    rita.on_change(Box::new(|_| panic!("the app's callback failed")));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    // A callback may call the device (no lock is held while it runs).
    let d = rita.clone();
    rita.on_change(Box::new(move |ids| {
        let n = d.deals().map(|v| v.len()).unwrap_or(0);
        s.lock().unwrap().push((ids.to_vec(), n));
    }));
    let a = new_deal(&rita, "One");
    let b = new_deal(&rita, "Two");
    assert_eq!(
        *seen.lock().unwrap(),
        vec![(vec![a.clone()], 1), (vec![b.clone()], 2)]
    );
    rita.sync_hub(ROUND).await.unwrap();
    assert_eq!(rita.deals().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_open_of_the_same_store_is_store_locked() {
    let dir = tempfile::tempdir().unwrap();
    let hub = TestHub::start(dir.path()).await;
    let rita = hub.enrol(dir.path(), "rita-phone", 2);
    let path = rita.path().to_owned();
    match Device::open(DeviceConfig::new(&path)) {
        Err(DeviceError::StoreLocked { path: p }) => {
            assert_eq!(p, path.canonicalize().unwrap())
        }
        other => panic!("expected StoreLocked, got {other:?}"),
    }
    // A clone shares the store; dropping the last one frees it.
    let clone = rita.clone();
    drop(rita);
    assert!(matches!(
        Device::open(DeviceConfig::new(&path)),
        Err(DeviceError::StoreLocked { .. })
    ));
    drop(clone);
    let again = Device::open(DeviceConfig {
        low_memory: true,
        ..DeviceConfig::new(&path)
    })
    .unwrap();
    assert_eq!(again.id().unwrap().as_str(), "rita-phone");
    assert_eq!(
        again.cache_budget().unwrap(),
        sellsync_device::LOW_MEMORY_CACHE_BUDGET
    );
    drop(again);
    let again = Device::open(DeviceConfig {
        cache_budget: Some(1 << 20),
        low_memory: true,
        ..DeviceConfig::new(&path)
    })
    .unwrap();
    assert_eq!(again.cache_budget().unwrap(), 1 << 20);
    assert_eq!(
        DeviceConfig::new(&path).budget(),
        sellsync_service::DEFAULT_CACHE_BUDGET
    );
    // Enrolling it again is refused; an unenrolled store is NotEnrolled.
    drop(again);
    assert!(matches!(
        Device::enrol(
            DeviceConfig::new(&path),
            offline_enrolment(&hub.url, "rita-phone")
        ),
        Err(DeviceError::AlreadyEnrolled { .. })
    ));
    assert!(matches!(
        Device::open(DeviceConfig::new(dir.path().join("nothing.redb"))),
        Err(DeviceError::NotEnrolled { .. })
    ));
    drop(Store::open(dir.path().join("empty.redb")).unwrap());
    assert!(matches!(
        Device::open(DeviceConfig::new(dir.path().join("empty.redb"))),
        Err(DeviceError::NotEnrolled { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_device_gets_auth() {
    let dir = tempfile::tempdir().unwrap();
    let hub = TestHub::start(dir.path()).await;
    let rita = hub.enrol(dir.path(), "rita-phone", 2);
    rita.sync_hub(ROUND).await.unwrap();
    hub.revoke("rita-phone");
    match rita.sync_hub(ROUND).await {
        Err(DeviceError::Auth { reason }) => assert!(!reason.is_empty()),
        other => panic!("expected Auth, got {other:?}"),
    }
    // A token the hub never issued is refused the same way.
    let stranger = Device::enrol(
        DeviceConfig::new(dir.path().join("stranger.redb")),
        offline_enrolment(&hub.url, "stranger"),
    )
    .unwrap();
    assert!(matches!(
        stranger.sync_hub(ROUND).await,
        Err(DeviceError::Auth { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_port_is_unreachable_and_a_silent_one_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/", closed.local_addr().unwrap());
    drop(closed);
    let d = Device::enrol(
        DeviceConfig::new(dir.path().join("d.redb")),
        offline_enrolment(&url, "d"),
    )
    .unwrap();
    match d.sync_hub(ROUND).await {
        Err(DeviceError::Unreachable { url: u, .. }) => assert_eq!(u, url),
        other => panic!("expected Unreachable, got {other:?}"),
    }
    assert_eq!(d.status().unwrap().last_hub_sync_ms, None);
    drop(d);

    // A listener that accepts and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", silent.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let e = Device::enrol(
        DeviceConfig::new(dir.path().join("e.redb")),
        offline_enrolment(&url, "e"),
    )
    .unwrap();
    let bound = Duration::from_millis(300);
    let started = std::time::Instant::now();
    assert!(matches!(
        e.sync_hub(bound).await,
        Err(DeviceError::Timeout { after }) if after == bound
    ));
    assert!(started.elapsed() < Duration::from_secs(5));
    // The device is still usable.
    new_deal(&e, "After the timeout");
    assert_eq!(e.deals().unwrap().len(), 1);
}

#[test]
fn bad_enrolments_are_refused_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.redb");
    let good = offline_enrolment("ws://127.0.0.1:9/", "d");
    for (what, e) in [
        (
            "hub_url",
            Enrolment {
                hub_url: "http://127.0.0.1:9/".into(),
                ..good.clone()
            },
        ),
        (
            "hub_url",
            Enrolment {
                hub_url: "ws://127.0.0.1:99999/".into(),
                ..good.clone()
            },
        ),
        (
            "token",
            Enrolment {
                token: "not-a-token".into(),
                ..good.clone()
            },
        ),
        (
            "token",
            Enrolment {
                token: good.token[..good.token.len() - 2].to_owned(),
                ..good.clone()
            },
        ),
        (
            "ca_pem",
            Enrolment {
                hub_url: "wss://127.0.0.1:9/".into(),
                ..good.clone()
            },
        ),
        (
            "ca_pem",
            Enrolment {
                ca_pem: Some(b"not a certificate".to_vec()),
                ..good.clone()
            },
        ),
    ] {
        match Device::enrol(DeviceConfig::new(&path), e) {
            Err(DeviceError::BadEnrolment { what: w, .. }) => assert_eq!(w, what),
            other => panic!("{what}: expected BadEnrolment, got {other:?}"),
        }
        assert!(!path.exists(), "{what}: nothing written");
    }
}

#[test]
fn a_thousand_creates_give_a_thousand_ids() {
    let dir = tempfile::tempdir().unwrap();
    let d = Device::enrol(
        DeviceConfig::new(dir.path().join("d.redb")),
        offline_enrolment("ws://127.0.0.1:9/", "d"),
    )
    .unwrap();
    let other = d.clone();
    let (a, b) = std::thread::scope(|s| {
        let t = s.spawn(|| {
            (0..500)
                .map(|i| {
                    other
                        .create_contact(vec![(key("name"), Value::Text(format!("c{i}")))])
                        .unwrap()
                })
                .collect::<Vec<_>>()
        });
        let mine: Vec<RecordId> = (0..500)
            .map(|i| {
                d.create_deal(vec![(key("name"), Value::Text(format!("d{i}")))])
                    .unwrap()
            })
            .collect();
        (mine, t.join().unwrap())
    });
    let all: BTreeSet<RecordId> = a.iter().chain(&b).cloned().collect();
    assert_eq!(all.len(), 1000);
    assert_eq!(d.deals().unwrap().len(), 500);
    assert_eq!(d.contacts().unwrap().len(), 500);
}

#[test]
fn a_device_is_send_sync_and_clone() {
    fn check<T: Send + Sync + Clone + 'static>() {}
    check::<Device>();
    fn send<T: Send>() {}
    send::<sellsync_device::ChangeStream>();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lan_peers_sync_with_their_hub_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let hub = TestHub::start(dir.path()).await;
    let rita = hub.enrol(dir.path(), "rita-phone", 2);
    let carl = hub.enrol(dir.path(), "carl-laptop", 3);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("wss://{}/", listener.local_addr().unwrap());
    // Before any hub round there is no LAN credential.
    assert!(matches!(
        rita.sync_peer(&url, None, ROUND).await,
        Err(DeviceError::Auth { .. })
    ));
    rita.sync_hub(ROUND).await.unwrap();
    carl.sync_hub(ROUND).await.unwrap();
    let id = new_deal(&carl, "Met on the LAN");

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = carl.clone();
    let serving = tokio::spawn(async move {
        server
            .serve_lan(listener, async {
                let _ = stopped.await;
            })
            .await
    });
    let mut rita_changes = rita.subscribe();
    // Another device answering than the one expected is refused.
    assert!(matches!(
        rita.sync_peer(&url, Some("rita-phone".parse().unwrap()), ROUND)
            .await,
        Err(DeviceError::Auth { .. })
    ));
    let got = rita
        .sync_peer(&url, Some("carl-laptop".parse().unwrap()), ROUND)
        .await
        .unwrap();
    assert_eq!(got.peer, Some("carl-laptop".parse().unwrap()));
    assert!(got.changed.contains(&id), "{got:?}");
    assert_eq!(rita_changes.try_next(), vec![id.clone()]);
    assert_eq!(
        rita.record(&id).unwrap().record.fields.get(&key("name")),
        Some(&Value::Text("Met on the LAN".into()))
    );
    let _ = stop.send(());
    serving.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checked_enrolment_asks_the_hub_and_undoes_a_refused_one() {
    let dir = tempfile::tempdir().unwrap();
    let hub = TestHub::start(dir.path()).await;
    let cfg = |name: &str| DeviceConfig::new(dir.path().join(format!("{name}.redb")));
    let ok = Enrolment {
        hub_url: hub.url.clone(),
        token: hub.token("rita-phone", 2),
        ca_pem: None,
    };
    let (rita, report) = Device::enrol_checked(cfg("rita-phone"), ok, ROUND)
        .await
        .unwrap();
    assert!(report.is_some(), "checked with the hub");
    assert!(rita.catalog().unwrap().loaded);

    // A token the hub never issued: refused, and the store is gone.
    let refused = Device::enrol_checked(
        cfg("stranger"),
        offline_enrolment(&hub.url, "stranger"),
        ROUND,
    )
    .await;
    assert!(
        matches!(refused, Err(DeviceError::Auth { .. })),
        "{refused:?}"
    );
    assert!(!dir.path().join("stranger.redb").exists());

    // A user the catalog does not list: refused too.
    let ghost = Enrolment {
        hub_url: hub.url.clone(),
        token: hub.token("ghost-phone", 77),
        ca_pem: None,
    };
    let refused = Device::enrol_checked(cfg("ghost-phone"), ghost, ROUND).await;
    assert!(
        matches!(
            refused,
            Err(DeviceError::BadEnrolment { what: "token", .. })
        ),
        "{refused:?}"
    );
    assert!(!dir.path().join("ghost-phone.redb").exists());

    // A hub that is not there: enrolled, unchecked.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/", closed.local_addr().unwrap());
    drop(closed);
    let (later, report) =
        Device::enrol_checked(cfg("later"), offline_enrolment(&url, "later"), ROUND)
            .await
            .unwrap();
    assert!(report.is_none());
    drop(later);
    assert!(Device::open(cfg("later")).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rounds_cut_short_leave_the_store_whole_and_lose_no_change_report() {
    let dir = tempfile::tempdir().unwrap();
    let hub = TestHub::start(dir.path()).await;
    let carl = hub.enrol(dir.path(), "carl-laptop", 3);
    let rita = hub.enrol(dir.path(), "rita-phone", 2);
    carl.sync_hub(ROUND).await.unwrap();
    let made: BTreeSet<RecordId> = (0..150)
        .map(|i| {
            carl.create_deal(vec![
                (key("name"), Value::Text(format!("Deal {i}"))),
                (key("owner_id"), Value::Ref(3)),
            ])
            .unwrap()
        })
        .collect();
    carl.sync_hub(ROUND).await.unwrap();

    let mut changes = rita.subscribe();
    let mut cut = 0;
    for ms in [1, 2, 4, 8, 16, 32, 64, 128] {
        match rita.sync_hub(Duration::from_millis(ms)).await {
            Err(DeviceError::Timeout { .. }) => cut += 1,
            Ok(_) => break,
            Err(e) => panic!("{ms} ms: {e}"),
        }
        // Between cut rounds the device reads and writes as ever.
        rita.deals().unwrap();
    }
    assert!(cut > 0, "no round was cut short");
    rita.sync_hub(ROUND).await.unwrap();
    let held: BTreeSet<RecordId> = rita.deals().unwrap().into_iter().map(|d| d.id).collect();
    assert_eq!(held, made);
    let mut reported = BTreeSet::new();
    reported.extend(changes.try_next());
    assert_eq!(reported, made, "every record received was reported");
    assert_eq!(rita.status().unwrap().pending_changes, 0);
}
