//! LAN peers on real stores, in process: grants from the hub, then device-to-device sessions
//! with mutual proofs of possession, access filtering by the peer's user, and replays refused.

use std::sync::Arc;

use sellsync_model::{Catalog, DeviceId, FieldKey, Money, RecordId, RecordKind, UserId, Value};
use sellsync_service::credential::{self, Issuer};
use sellsync_service::net;
use sellsync_service::{Acl, Node, token};
use sellsync_store::{NodeIdentity, Role as StoreRole, Store, StoreRead};
use sellsync_sync::{AcceptConfig, CloseReason, DialConfig, Effect, Event, Limits, Role, Session};

const T0: i64 = 1_795_000_000_000;
const ACL: &str = "admins = [1]\n[[teams]]\nid = 10\nmembers = [2, 3]\n";

fn hub(dir: &std::path::Path) -> Node {
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
    let mut catalog = Catalog::example();
    catalog.users.insert(
        4,
        sellsync_model::User {
            id: 4,
            name: "Olga".into(),
            role: "user".into(),
        },
    );
    node.write_catalog(&catalog, T0).unwrap();
    let issuer = Issuer::load(
        &store,
        node.id().clone(),
        ACL.to_owned(),
        credential::DEFAULT_CREDENTIAL_TTL_MS,
    )
    .unwrap();
    node.replica().set_issuer(Some(issuer));
    node
}

/// A device enrolled with `hub` (not synced yet).
fn device(dir: &std::path::Path, hub: &Node, name: &str, user: u64) -> Node {
    let dev: DeviceId = name.parse().unwrap();
    let issued = hub
        .store()
        .write(|w| w.issue_token(UserId(user), &dev, T0, None))
        .unwrap();
    let full = token::format(hub.id(), UserId(user), &dev, &issued.token);
    let store = Arc::new(Store::open(dir.join(format!("{name}.redb"))).unwrap());
    Node::init(
        &store,
        &NodeIdentity {
            device_id: dev,
            user_id: UserId(user),
            role: StoreRole::Device,
            hub_url: None,
            hub_token: Some(full),
        },
    )
    .unwrap();
    Node::open(store, None).unwrap()
}

fn hub_accept(hub: &Node) -> AcceptConfig {
    AcceptConfig {
        node: hub.id().clone(),
        role: Role::Hub,
        token: Vec::new(),
        mutual: false,
        nonce: Vec::new(),
        limits: Limits::default(),
    }
}

/// What one in-process session did.
#[derive(Debug, Default)]
struct Run {
    /// Frames the dialer sent, in order.
    from_dialer: Vec<Vec<u8>>,
    /// Frames the acceptor sent, in order.
    from_acceptor: Vec<Vec<u8>>,
    /// Why each side closed, if it did.
    dialer_closed: Option<CloseReason>,
    acceptor_closed: Option<CloseReason>,
    finished: bool,
}

fn closed(fx: &sellsync_sync::Effects) -> Option<CloseReason> {
    fx.effects.iter().find_map(|e| match e {
        Effect::Close(r) => Some(r.clone()),
        _ => None,
    })
}

/// Runs one session in process, delivering frames one by one, at time `now`.
fn pump(dev: &mut Node, dial: DialConfig, acc: &mut Node, accept: AcceptConfig, now: i64) -> Run {
    let mut d = Session::dial(dial);
    let mut a = Session::accept(accept);
    dev.replica().set_now(now);
    acc.replica().set_now(now);
    let mut run = Run::default();
    let fx = d.handle(dev.replica(), Event::Opened);
    assert_eq!(net::carry_out(dev, &fx, now).1, None);
    let mut to_a = fx.send;
    let mut to_d: Vec<Vec<u8>> = Vec::new();
    // Bounded: a session ends within a few flights.
    for _ in 0..50 {
        for f in std::mem::take(&mut to_a) {
            run.from_dialer.push(f.clone());
            let fx = a.handle(acc.replica(), Event::Received(&f));
            assert_eq!(net::carry_out(acc, &fx, now).1, None);
            run.acceptor_closed = run.acceptor_closed.take().or(closed(&fx));
            to_d.extend(fx.send);
        }
        for f in std::mem::take(&mut to_d) {
            run.from_acceptor.push(f.clone());
            let fx = d.handle(dev.replica(), Event::Received(&f));
            assert_eq!(net::carry_out(dev, &fx, now).1, None);
            run.dialer_closed = run.dialer_closed.take().or(closed(&fx));
            to_a.extend(fx.send);
        }
        if to_a.is_empty() && to_d.is_empty() {
            break;
        }
    }
    run.finished = d.is_ended()
        && a.is_ended()
        && run.dialer_closed.is_none()
        && run.acceptor_closed.is_none();
    run
}

fn with_hub(dev: &mut Node, hub: &mut Node, now: i64) {
    let cfg = credential::hub_dial_config(dev, Limits::default()).unwrap();
    let accept = hub_accept(hub);
    let run = pump(dev, cfg, hub, accept, now);
    assert!(run.finished, "{run:?}");
}

fn lan(dialer: &mut Node, acceptor: &mut Node, now: i64) -> Run {
    let d = credential::lan_dial_config(dialer, None, Limits::default()).unwrap();
    let a = credential::lan_accept_config(acceptor, Limits::default()).unwrap();
    pump(dialer, d, acceptor, a, now)
}

fn create(node: &mut Node, id: &str, owner: u64) {
    node.create(
        RecordKind::Deal,
        &id.parse().unwrap(),
        vec![
            (
                FieldKey::Std("name".into()),
                Value::Text("Fair lead".into()),
            ),
            (
                FieldKey::Std("value".into()),
                Value::Money(Money::from_cents(1000)),
            ),
            (FieldKey::Std("currency".into()), Value::Text("EUR".into())),
            (FieldKey::Std("stage_id".into()), Value::Ref(12)),
            (FieldKey::Std("owner_id".into()), Value::Ref(owner)),
        ],
        T0,
    )
    .unwrap();
}

fn deals(node: &Node) -> Vec<RecordId> {
    node.records()
        .unwrap()
        .into_iter()
        .filter(|(_, k)| k == "deal")
        .map(|(id, _)| id)
        .collect()
}

fn auth_failed(r: &Option<CloseReason>) -> bool {
    matches!(r, Some(CloseReason::AuthFailed(_)))
}

#[test]
fn devices_sync_over_the_lan_with_credentials_and_filter_by_the_peers_user() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = hub(dir.path());
    let mut rita = device(dir.path(), &h, "rita-phone", 2);
    let mut carl = device(dir.path(), &h, "carl-web", 3);
    let mut olga = device(dir.path(), &h, "olga-phone", 4);
    // Before any grant, a device can neither dial nor serve a LAN peer.
    assert!(credential::lan_dial_config(&rita, None, Limits::default()).is_err());
    for dev in [&mut rita, &mut carl, &mut olga] {
        with_hub(dev, &mut h, T0);
        assert!(dev.replica_ref().peer_auth().is_some());
    }

    // Offline edits, then a LAN session both ways.
    create(&mut rita, "deal-rita", 2);
    create(&mut carl, "deal-carl", 3);
    create(&mut olga, "deal-olga", 4);
    let run = lan(&mut rita, &mut carl, T0 + 1000);
    assert!(run.finished, "{run:?}");
    assert_eq!(deals(&rita), deals(&carl));
    assert_eq!(deals(&rita).len(), 2);

    // Olga's user may see neither of theirs, and they may not see hers.
    let run = lan(&mut olga, &mut carl, T0 + 2000);
    assert!(run.finished, "{run:?}");
    assert_eq!(deals(&olga), vec!["deal-olga".parse::<RecordId>().unwrap()]);
    assert_eq!(deals(&carl).len(), 2);
    let run = lan(&mut carl, &mut olga, T0 + 3000);
    assert!(run.finished, "{run:?}");
    assert_eq!(deals(&olga).len(), 1);
    assert_eq!(deals(&carl).len(), 2);

    // Credentials expire: a week later, without a hub sync, peers refuse each other.
    let week = credential::DEFAULT_CREDENTIAL_TTL_MS;
    let run = lan(&mut rita, &mut carl, T0 + week + 1);
    assert!(auth_failed(&run.acceptor_closed), "{run:?}");
    assert!(!run.finished);
}

#[test]
fn replayed_proofs_and_welcomes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = hub(dir.path());
    let mut rita = device(dir.path(), &h, "rita-phone", 2);
    let mut carl = device(dir.path(), &h, "carl-web", 3);
    with_hub(&mut rita, &mut h, T0);
    with_hub(&mut carl, &mut h, T0);
    create(&mut carl, "deal-carl", 3);
    let recorded = lan(&mut rita, &mut carl, T0 + 1000);
    assert!(recorded.finished, "{recorded:?}");
    let (hello, proof) = (&recorded.from_dialer[0], &recorded.from_dialer[1]);
    let welcome = &recorded.from_acceptor[0];

    // An eavesdropper replays rita's hello and proof to carl: carl's fresh nonce makes the old
    // proof worthless, and carl sends nothing of its documents.
    let mut a = Session::accept(credential::lan_accept_config(&carl, Limits::default()).unwrap());
    carl.replica().set_now(T0 + 2000);
    let fx = a.handle(carl.replica(), Event::Received(hello));
    assert_eq!(fx.send.len(), 1, "only a welcome: {fx:?}");
    assert!(closed(&fx).is_none());
    let fx = a.handle(carl.replica(), Event::Received(proof));
    assert!(
        auth_failed(&closed(&fx)),
        "the replayed proof is refused: {fx:?}"
    );
    assert!(
        !fx.effects
            .iter()
            .any(|e| matches!(e, Effect::Authenticated(_)))
    );

    // After the welcome, only a proof is accepted: an announce instead closes the session.
    let mut a = Session::accept(credential::lan_accept_config(&carl, Limits::default()).unwrap());
    let fx = a.handle(carl.replica(), Event::Received(hello));
    assert_eq!(fx.send.len(), 1);
    let announce = sellsync_sync::Frame::Announce(sellsync_sync::frame::Announce {
        last: true,
        since: 0,
        upto: 0,
        docs: vec![],
    })
    .encode(1 << 20)
    .unwrap();
    let fx = a.handle(carl.replica(), Event::Received(&announce));
    assert!(
        matches!(closed(&fx), Some(CloseReason::OutOfOrder(_))),
        "{fx:?}"
    );
    assert!(
        !fx.effects
            .iter()
            .any(|e| matches!(e, Effect::Authenticated(_)))
    );

    // A LAN hello without a nonce is refused before anything is signed.
    let mut bare = match sellsync_sync::Frame::decode(hello, 1 << 20).unwrap() {
        sellsync_sync::Frame::Hello(h) => h,
        f => panic!("not a hello: {f:?}"),
    };
    bare.nonce.clear();
    let bare = sellsync_sync::Frame::Hello(bare).encode(1 << 20).unwrap();
    let mut a = Session::accept(credential::lan_accept_config(&carl, Limits::default()).unwrap());
    let fx = a.handle(carl.replica(), Event::Received(&bare));
    assert!(auth_failed(&closed(&fx)), "{fx:?}");
    assert_eq!(fx.send.len(), 1, "only the error frame: {fx:?}");

    // A replayed welcome (made for another hello's nonce) is refused by the dialer, which
    // then sends no proof.
    let mut d = Session::dial(credential::lan_dial_config(&rita, None, Limits::default()).unwrap());
    rita.replica().set_now(T0 + 2000);
    let fx = d.handle(rita.replica(), Event::Opened);
    assert_eq!(fx.send.len(), 1);
    let fx = d.handle(rita.replica(), Event::Received(welcome));
    assert!(auth_failed(&closed(&fx)), "{fx:?}");
    assert!(
        !fx.effects
            .iter()
            .any(|e| matches!(e, Effect::Authenticated(_)))
    );

    // A device of another hub (its own key, the same hub node id) is refused.
    let other_dir = tempfile::tempdir().unwrap();
    let mut h2 = hub(other_dir.path());
    let mut mallory = device(other_dir.path(), &h2, "mallory", 2);
    with_hub(&mut mallory, &mut h2, T0);
    let run = lan(&mut mallory, &mut carl, T0 + 3000);
    assert!(auth_failed(&run.acceptor_closed), "{run:?}");
    assert!(deals(&mallory).is_empty());
    // Nor does carl get anywhere dialing mallory.
    let run = lan(&mut carl, &mut mallory, T0 + 3000);
    assert!(!run.finished, "{run:?}");
    assert!(auth_failed(&run.acceptor_closed), "{run:?}");
    assert!(deals(&mallory).is_empty());
}

#[test]
fn a_grant_signed_by_another_hub_key_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = hub(dir.path());
    let mut rita = device(dir.path(), &h, "rita-phone", 2);
    with_hub(&mut rita, &mut h, T0);
    let pinned = rita
        .store()
        .read()
        .unwrap()
        .kv_get(credential::PINNED_HUB_KEY)
        .unwrap();
    // The hub's key is replaced (a stolen hub URL, a rebuilt hub): the device refuses it.
    drop(h);
    let store = Arc::new(Store::open(dir.path().join("hub.redb")).unwrap());
    store
        .write(|w| w.kv_remove(credential::HUB_KEY).map(|_| ()))
        .unwrap();
    drop(store);
    let mut h = {
        let store = Arc::new(Store::open(dir.path().join("hub.redb")).unwrap());
        let mut node = Node::open(store.clone(), Some(Acl::from_toml(ACL).unwrap())).unwrap();
        let issuer = Issuer::load(&store, node.id().clone(), ACL.to_owned(), 1000).unwrap();
        node.replica().set_issuer(Some(issuer));
        node
    };
    let cfg = credential::hub_dial_config(&rita, Limits::default()).unwrap();
    let mut d = Session::dial(cfg);
    let mut a = Session::accept(hub_accept(&h));
    rita.replica().set_now(T0);
    h.replica().set_now(T0);
    let fx = d.handle(rita.replica(), Event::Opened);
    let fx = a.handle(h.replica(), Event::Received(&fx.send[0]));
    let welcome = &fx.send[0];
    let fx = d.handle(rita.replica(), Event::Received(welcome));
    let (_, err) = net::carry_out(&mut rita, &fx, T0);
    assert!(err.is_some_and(|e| e.contains("key changed")));
    let after = rita
        .store()
        .read()
        .unwrap()
        .kv_get(credential::PINNED_HUB_KEY)
        .unwrap();
    assert_eq!(pinned, after);
}
