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

/// Copies `from` to `to` until either closes, keeping every byte in `seen` when given.
async fn pipe(
    mut from: impl tokio::io::AsyncRead + Unpin,
    mut to: impl tokio::io::AsyncWrite + Unpin,
    seen: Option<Arc<std::sync::Mutex<Vec<u8>>>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(seen) = &seen {
            seen.lock().unwrap().extend_from_slice(&buf[..n]);
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// A TCP relay on loopback in front of `upstream`: it forwards every connection and keeps every
/// byte it carries, both ways (what a passive listener on the network sees).
async fn capturing_relay(
    upstream: std::net::SocketAddr,
) -> (std::net::SocketAddr, Arc<std::sync::Mutex<Vec<u8>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = seen.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                continue;
            };
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::spawn(pipe(cr, sw, Some(keep.clone())));
            tokio::spawn(pipe(sr, cw, Some(keep.clone())));
        }
    });
    (addr, seen)
}

/// A relay that ends TLS on each side: it answers dialers with a certificate of its own key,
/// dials `upstream` over TLS as a LAN peer would, and forwards the plaintext between the two
/// (an attacker in the middle who can read and replay every frame).
async fn tls_terminating_relay(upstream: std::net::SocketAddr) -> std::net::SocketAddr {
    let own_key = credential::SigningKey::generate().unwrap();
    let acceptor = net::lan_tls_acceptor(own_key.pkcs8()).unwrap();
    let connector = net::lan_tls_connector().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let (acceptor, connector) = (acceptor.clone(), connector.clone());
            tokio::spawn(async move {
                let Ok(client) = acceptor.accept(client).await else {
                    return;
                };
                let Ok(tcp) = tokio::net::TcpStream::connect(upstream).await else {
                    return;
                };
                let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
                let Ok(server) = connector.connect(name, tcp).await else {
                    return;
                };
                let (cr, cw) = tokio::io::split(client);
                let (sr, sw) = tokio::io::split(server);
                tokio::join!(pipe(cr, sw, None), pipe(sr, cw, None));
            });
        }
    });
    addr
}

/// `carl` serves LAN peers on loopback (over TLS when `tls`), until the returned sender drops.
async fn serve_lan(
    carl: net::SharedNode,
    tls: bool,
) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let (base, acceptor) = {
        let node = carl.lock().unwrap();
        (
            credential::lan_accept_config(&node, Limits::default()).unwrap(),
            credential::lan_tls_acceptor(&node).unwrap(),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let make = move || {
        let mut cfg = base.clone();
        cfg.nonce = credential::nonce().unwrap();
        Session::accept(cfg)
    };
    let extras = net::Extras {
        tls: tls.then_some(acceptor),
        health: None,
    };
    tokio::spawn(net::serve_nodes(
        listener,
        net::Nodes::Held(carl),
        make,
        net::NetConfig::default(),
        extras,
        async {
            let _ = stopped.await;
        },
    ));
    (addr, stop)
}

/// Rita dials `url` as a LAN peer (a `wss://` URL over TLS).
async fn dial_lan(rita: net::SharedNode, url: &str) -> net::Outcome {
    let cfg = credential::lan_dial_config(&rita.lock().unwrap(), None, Limits::default()).unwrap();
    let tls = url
        .starts_with("wss://")
        .then(|| net::lan_tls_connector().unwrap());
    net::dial_tls(
        url,
        rita,
        Session::dial(cfg),
        net::NetConfig::default(),
        tls,
    )
    .await
    .unwrap()
}

/// Two enrolled devices holding grants issued now (sessions over the network run on the
/// wall clock), and a deal on carl's side whose name is the secret a listener looks for.
fn lan_pair(dir: &std::path::Path) -> (net::SharedNode, net::SharedNode) {
    let mut h = hub(dir);
    let mut rita = device(dir, &h, "rita-phone", 2);
    let mut carl = device(dir, &h, "carl-web", 3);
    let now = net::now_ms();
    with_hub(&mut rita, &mut h, now);
    with_hub(&mut carl, &mut h, now);
    carl.create(
        RecordKind::Deal,
        &"deal-secret".parse().unwrap(),
        vec![
            (FieldKey::Std("name".into()), Value::Text(SECRET.into())),
            (
                FieldKey::Std("value".into()),
                Value::Money(Money::from_cents(424_200)),
            ),
            (FieldKey::Std("owner_id".into()), Value::Ref(3)),
        ],
        now,
    )
    .unwrap();
    (
        Arc::new(std::sync::Mutex::new(rita)),
        Arc::new(std::sync::Mutex::new(carl)),
    )
}

const SECRET: &str = "Zeppelin hangar renewal at Friedrichshafen";

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn a_listener_on_the_lan_sees_no_record_content() {
    let dir = tempfile::tempdir().unwrap();
    let (rita, carl) = lan_pair(dir.path());

    // The control: a plain session carries the deal's name in clear, and the capture finds it.
    let (plain, stop_plain) = serve_lan(carl.clone(), false).await;
    let (relay, seen) = capturing_relay(plain).await;
    let out = dial_lan(rita.clone(), &format!("ws://{relay}/")).await;
    assert!(out.finished, "{out:?}");
    assert!(
        contains(&seen.lock().unwrap(), SECRET),
        "the capture misses plaintext"
    );
    drop(stop_plain);

    // Over TLS, a new deal of carl's reaches rita, and nothing of it is on the wire.
    let second = dir.path().join("second");
    std::fs::create_dir(&second).unwrap();
    let (rita, carl) = lan_pair(&second);
    let (served, _stop) = serve_lan(carl.clone(), true).await;
    let (relay, seen) = capturing_relay(served).await;
    let out = dial_lan(rita.clone(), &format!("wss://{relay}/")).await;
    assert!(out.finished, "{out:?}");
    assert_eq!(
        deals(&rita.lock().unwrap()),
        vec!["deal-secret".parse::<RecordId>().unwrap()]
    );
    let seen = seen.lock().unwrap();
    assert!(
        seen.len() > 1000,
        "the session went through the relay ({} bytes)",
        seen.len()
    );
    // A TLS 1.3 record layer from the first byte (a handshake record), not a WebSocket upgrade.
    assert_eq!(seen[0], 0x16, "the first record is a TLS handshake");
    for clear in [
        SECRET,
        "deal-secret",
        "rita-phone",
        "carl-web",
        "GET /",
        "Upgrade",
    ] {
        assert!(
            !contains(&seen, clear),
            "{clear:?} crossed the LAN in clear"
        );
    }
}

#[tokio::test]
async fn a_relay_that_ends_tls_on_each_side_is_refused_and_learns_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (rita, carl) = lan_pair(dir.path());
    let (served, _stop) = serve_lan(carl.clone(), true).await;
    let relay = tls_terminating_relay(served).await;
    let out = dial_lan(rita.clone(), &format!("wss://{relay}/")).await;
    // Carl's proof covers the channel between the relay and carl; rita's channel ends at the
    // relay, so the proof does not verify for her, and she proves nothing the relay could use.
    assert!(
        matches!(&out.closed, Some(CloseReason::AuthFailed(why)) if why.contains("proof")),
        "{out:?}"
    );
    assert!(!out.finished);
    assert!(deals(&rita.lock().unwrap()).is_empty());
    // Without the relay, the same two devices sync.
    let out = dial_lan(rita.clone(), &format!("wss://{served}/")).await;
    assert!(out.finished, "{out:?}");
    assert_eq!(deals(&rita.lock().unwrap()).len(), 1);
}
