//! Nodes on real stores: in-process sessions, then WebSocket sessions over 127.0.0.1.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sellsync_model::{
    Catalog, Conflict, DeviceId, Edit, FieldKey, Money, RecordId, RecordKind, UserId, Value,
};
use sellsync_service::net::{self, NetConfig, SharedNode};
use sellsync_service::{Acl, Node, credential, token};
use sellsync_store::{NodeIdentity, Role as StoreRole, Store, StoreRead};
use sellsync_sync::{AcceptConfig, DialConfig, Event, Limits, Replica, Role, Session};

const T0: i64 = 1_795_000_000_000;

fn key(s: &str) -> FieldKey {
    FieldKey::Std(s.to_owned())
}

fn acl() -> Acl {
    Acl::from_toml("admins = [1]\n[[teams]]\nid = 10\nmembers = [2, 3]\n").unwrap()
}

struct Hub {
    node: Node,
}

fn hub(dir: &std::path::Path) -> Hub {
    let store = Arc::new(Store::open(dir.join("hub.redb")).unwrap());
    Node::init(
        &store,
        &NodeIdentity {
            device_id: "hub".parse().unwrap(),
            user_id: UserId(1),
            role: StoreRole::Hub,
            hub_url: None,
            hub_token: None,
        },
    )
    .unwrap();
    let mut node = Node::open(store, Some(acl())).unwrap();
    node.write_catalog(&Catalog::example(), T0).unwrap();
    Hub { node }
}

/// Issues a token on the hub and initialises a device store with it.
fn device(dir: &std::path::Path, hub: &Hub, name: &str, user: u64) -> Node {
    let dev: DeviceId = name.parse().unwrap();
    let issued = hub
        .node
        .store()
        .write(|w| w.issue_token(UserId(user), &dev, T0, None))
        .unwrap();
    let full = token::format(hub.node.id(), UserId(user), &dev, &issued.token);
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
    Node::open(store, Some(acl())).unwrap()
}

fn dial_config(dev: &Node) -> DialConfig {
    // What a device sends its hub: its token, and its key (which checks its signed changes).
    sellsync_service::credential::hub_dial_config(dev, Limits::default()).unwrap()
}

fn accept_config(hub: &Node) -> AcceptConfig {
    AcceptConfig {
        node: hub.id().clone(),
        role: Role::Hub,
        token: Vec::new(),
        mutual: false,
        nonce: Vec::new(),
        limits: Limits::default(),
    }
}

/// Runs one in-process session, delivering frames one by one; returns whether both sides
/// finished.
fn sync_in_process(dev: &mut Node, hub: &mut Node) -> bool {
    let cfg = dial_config(dev);
    sync_in_process_with(dev, hub, cfg)
}

/// [`sync_in_process`] with the device's own dial configuration.
fn sync_in_process_with(dev: &mut Node, hub: &mut Node, cfg: DialConfig) -> bool {
    let mut d = Session::dial(cfg);
    let mut a = Session::accept(accept_config(hub));
    dev.replica().set_now(T0);
    hub.replica().set_now(T0);
    let fx = d.handle(dev.replica(), Event::Opened);
    let (_, err) = net::carry_out(dev, &fx, T0);
    assert_eq!(err, None);
    let mut to_hub = fx.send;
    let mut to_dev: Vec<Vec<u8>> = Vec::new();
    let (mut d_done, mut a_done) = (false, false);
    // Bounded: a session ends within a few flights.
    for _ in 0..50 {
        for f in std::mem::take(&mut to_hub) {
            let fx = a.handle(hub.replica(), Event::Received(&f));
            let (_, err) = net::carry_out(hub, &fx, T0);
            assert_eq!(err, None);
            a_done |= fx.ended();
            to_dev.extend(fx.send);
        }
        for f in std::mem::take(&mut to_dev) {
            let fx = d.handle(dev.replica(), Event::Received(&f));
            let (_, err) = net::carry_out(dev, &fx, T0);
            assert_eq!(err, None);
            d_done |= fx.ended();
            to_hub.extend(fx.send);
        }
        if to_hub.is_empty() && to_dev.is_empty() {
            break;
        }
    }
    d_done && a_done && d.is_ended() && a.is_ended()
}

fn deal_fields(owner: u64) -> Vec<(FieldKey, Value)> {
    vec![
        (key("name"), Value::Text("Acme renewal".into())),
        (key("value"), Value::Money(Money::from_cents(100_000))),
        (key("currency"), Value::Text("EUR".into())),
        (key("stage_id"), Value::Ref(12)),
        (key("owner_id"), Value::Ref(owner)),
    ]
}

fn value_conflict(node: &mut Node, id: &RecordId) -> Vec<Value> {
    let p = node.project(id).unwrap().unwrap();
    p.conflicts
        .iter()
        .find_map(|c| match c {
            Conflict::Field {
                slot, candidates, ..
            } if slot.field == key("value") => {
                Some(candidates.iter().map(|c| c.value.clone()).collect())
            }
            _ => None,
        })
        .unwrap_or_default()
}

#[test]
fn a_deal_created_on_one_device_reaches_another_through_the_hub_in_process() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = hub(dir.path());
    let mut rita = device(dir.path(), &h, "rita-phone", 2);
    let mut carl = device(dir.path(), &h, "carl-web", 3);
    let mut eve = device(dir.path(), &h, "eve-phone", 4);
    let id: RecordId = "deal-acme".parse().unwrap();

    assert!(sync_in_process(&mut rita, &mut h.node));
    assert_eq!(rita.replica_ref().catalog(), &Catalog::example());
    rita.create(RecordKind::Deal, &id, deal_fields(2), T0 + 1)
        .unwrap();
    assert!(sync_in_process(&mut rita, &mut h.node));
    assert!(sync_in_process(&mut carl, &mut h.node));
    assert!(sync_in_process(&mut eve, &mut h.node));

    let p = carl.project(&id).unwrap().expect("carl holds the deal");
    assert_eq!(
        p.record.fields.get(&key("name")),
        Some(&Value::Text("Acme renewal".into()))
    );
    assert!(h.node.project(&id).unwrap().is_some());
    // Eve is in no team with Rita: the hub never sends her the deal.
    assert!(eve.project(&id).unwrap().is_none());
    assert_eq!(
        eve.records().unwrap(),
        Vec::<(RecordId, String)>::new(),
        "eve holds nothing but the catalog"
    );

    // A second round moves nothing and ends cleanly (sync states and checkpoints persisted).
    let before = carl.store().read().unwrap().feed_head().unwrap();
    assert!(sync_in_process(&mut carl, &mut h.node));
    assert_eq!(carl.store().read().unwrap().feed_head().unwrap(), before);
}

/// Opens a device store for `name` with a fresh token, as `hub token` and `device init` do.
fn enrol(dir: &std::path::Path, hub: &Hub, name: &str, file: &str, user: u64) -> Node {
    let dev: DeviceId = name.parse().unwrap();
    let issued = hub
        .node
        .store()
        .write(|w| w.issue_token(UserId(user), &dev, T0, None))
        .unwrap();
    let full = token::format(hub.node.id(), UserId(user), &dev, &issued.token);
    let store = Arc::new(Store::open(dir.join(file)).unwrap());
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
    Node::open(store, Some(acl())).unwrap()
}

/// A replaced phone: a new token for the same device name, the old one revoked, a fresh store.
/// The hub recognises the new store by its key and forgets the checkpoint and sync states of
/// the old one, so the new store gets every record and every record it made reaches the hub,
/// however long its own feed already is.
#[test]
fn a_replaced_phone_with_a_new_store_syncs_from_scratch() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = hub(dir.path());
    let mut old = enrol(dir.path(), &h, "rita-phone", "old.redb", 2);
    for i in 0..3 {
        let id: RecordId = format!("deal-old-{i}").parse().unwrap();
        old.create(RecordKind::Deal, &id, deal_fields(2), T0 + 1)
            .unwrap();
    }
    let cfg = credential::hub_dial_config(&old, Limits::default()).unwrap();
    assert!(sync_in_process_with(&mut old, &mut h.node, cfg));
    let phone: DeviceId = "rita-phone".parse().unwrap();
    assert!(h.node.replica_ref().checkpoint(&phone).unwrap() > 0);

    h.node
        .store()
        .write(|w| w.revoke_device_tokens(&phone, T0 + 2))
        .unwrap();
    let mut new = enrol(dir.path(), &h, "rita-phone", "new.redb", 2);
    // More records than the old store's feed held: a checkpoint kept from it would skip some.
    let made: Vec<RecordId> = (0..8)
        .map(|i| format!("deal-new-{i}").parse().unwrap())
        .collect();
    for id in &made {
        new.create(RecordKind::Deal, id, deal_fields(2), T0 + 3)
            .unwrap();
    }
    let cfg = credential::hub_dial_config(&new, Limits::default()).unwrap();
    assert!(sync_in_process_with(&mut new, &mut h.node, cfg));
    for id in &made {
        assert!(
            h.node.project(id).unwrap().is_some(),
            "{id} missing on the hub"
        );
    }
    for i in 0..3 {
        let id: RecordId = format!("deal-old-{i}").parse().unwrap();
        assert!(
            new.project(&id).unwrap().is_some(),
            "{id} missing on the new phone"
        );
    }
    // The same store again is a plain reconnect: nothing forgotten, nothing moves.
    let before = h.node.store().read().unwrap().feed_head().unwrap();
    let cfg = credential::hub_dial_config(&new, Limits::default()).unwrap();
    assert!(sync_in_process_with(&mut new, &mut h.node, cfg));
    assert_eq!(h.node.store().read().unwrap().feed_head().unwrap(), before);
}

/// A hub serving plain WebSocket sessions on a free loopback port until stopped.
struct Served {
    url: String,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<()>,
}

impl Served {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.server.await.unwrap();
    }
}

async fn serve_hub(hub: &SharedNode, accept: AcceptConfig, cfg: NetConfig) -> Served {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(net::serve(
        listener,
        hub.clone(),
        move || Session::accept(accept.clone()),
        cfg,
        async move {
            let _ = stopped.await;
        },
    ));
    Served { url, stop, server }
}

async fn sync_ws(url: &str, dev: &SharedNode) -> net::Outcome {
    let cfg = dial_config(&dev.lock().unwrap());
    net::dial(
        url,
        dev.clone(),
        Session::dial(cfg),
        NetConfig {
            idle_timeout: Duration::from_secs(10),
            ..NetConfig::default()
        },
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_devices_edit_offline_and_both_project_the_same_conflict_over_websockets() {
    let dir = tempfile::tempdir().unwrap();
    let h = hub(dir.path());
    let rita = device(dir.path(), &h, "rita-phone", 2);
    let carl = device(dir.path(), &h, "carl-web", 3);
    let accept = accept_config(&h.node);
    let hub: SharedNode = Arc::new(Mutex::new(h.node));
    let rita: SharedNode = Arc::new(Mutex::new(rita));
    let carl: SharedNode = Arc::new(Mutex::new(carl));

    let served = serve_hub(&hub, accept, NetConfig::default()).await;
    let url = served.url.clone();

    let id: RecordId = "deal-acme".parse().unwrap();
    rita.lock()
        .unwrap()
        .create(RecordKind::Deal, &id, deal_fields(2), T0 + 1)
        .unwrap();
    let o = sync_ws(&url, &rita).await;
    assert!(o.finished, "{o:?}");
    let o = sync_ws(&url, &carl).await;
    assert!(o.finished, "{o:?}");
    assert!(o.changed.contains(&id), "{o:?}");

    // Both edit the value offline.
    for (node, cents, at) in [(&rita, 150_000, T0 + 10), (&carl, 120_000, T0 + 20)] {
        node.lock()
            .unwrap()
            .apply(
                &id,
                "offline",
                &[Edit::Set(
                    key("value"),
                    Value::Money(Money::from_cents(cents)),
                )],
                at,
            )
            .unwrap();
    }
    for node in [&rita, &carl, &rita] {
        let o = sync_ws(&url, node).await;
        assert!(o.finished, "{o:?}");
    }

    {
        let mut r = rita.lock().unwrap();
        let mut c = carl.lock().unwrap();
        let seen_r = value_conflict(&mut r, &id);
        let seen_c = value_conflict(&mut c, &id);
        assert_eq!(seen_r.len(), 2, "{seen_r:?}");
        assert_eq!(seen_r, seen_c);
        // The stored conflicts view was refreshed from the projection on both devices.
        for n in [&r, &c] {
            let view = n.store().read().unwrap().conflicts(&id).unwrap();
            assert!(view.is_some(), "no conflicts view on {}", n.id());
        }
    }
    served.stop().await;
}

/// A device whose token is wrong, or revoked, gets nothing and leaves nothing on the hub;
/// garbage, text and oversized messages close their own connection only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_revoked_tokens_and_garbage_frames_over_a_real_socket() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let dir = tempfile::tempdir().unwrap();
    let h = hub(dir.path());
    let rita = device(dir.path(), &h, "rita-phone", 2);
    let carl = device(dir.path(), &h, "carl-web", 3);
    let limits = Limits {
        max_frame: 64 * 1024,
        target_frame: 32 * 1024,
    };
    let accept = AcceptConfig {
        limits,
        ..accept_config(&h.node)
    };
    let hub: SharedNode = Arc::new(Mutex::new(h.node));
    let rita: SharedNode = Arc::new(Mutex::new(rita));
    let carl: SharedNode = Arc::new(Mutex::new(carl));
    let served = serve_hub(
        &hub,
        accept,
        NetConfig {
            limits,
            idle_timeout: Duration::from_secs(10),
        },
    )
    .await;
    let url = served.url.clone();
    let hub_head = || {
        hub.lock()
            .unwrap()
            .store()
            .read()
            .unwrap()
            .feed_head()
            .unwrap()
    };
    let head0 = hub_head();
    let id: RecordId = "deal-secret".parse().unwrap();
    rita.lock()
        .unwrap()
        .create(RecordKind::Deal, &id, deal_fields(2), T0 + 1)
        .unwrap();

    // A forged secret.
    let mut forged = dial_config(&rita.lock().unwrap());
    let last = forged.token.len() - 1;
    forged.token[last] = if forged.token[last] == b'0' {
        b'1'
    } else {
        b'0'
    };
    let o = net::dial(
        &url,
        rita.clone(),
        Session::dial(forged),
        NetConfig::default(),
    )
    .await
    .unwrap();
    assert!(
        !o.finished && o.closed.is_some() && o.peer.is_none(),
        "{o:?}"
    );
    assert!(o.changed.is_empty(), "{o:?}");
    assert_eq!(hub_head(), head0);

    // Carl's token presented by Rita's node: issued to another node.
    let mut stolen = dial_config(&rita.lock().unwrap());
    stolen.token = carl
        .lock()
        .unwrap()
        .identity()
        .hub_token
        .clone()
        .unwrap()
        .into_bytes();
    let o = net::dial(
        &url,
        rita.clone(),
        Session::dial(stolen),
        NetConfig::default(),
    )
    .await
    .unwrap();
    assert!(!o.finished && o.peer.is_none(), "{o:?}");
    assert_eq!(hub_head(), head0);

    // Garbage, text and an oversized message, each on its own connection.
    let garbage = [
        Message::Binary(b"not a frame at all".to_vec().into()),
        Message::Text("hello".into()),
        Message::Binary(vec![0u8; 200 * 1024].into()),
    ];
    for m in garbage {
        let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        // The oversized send may already fail locally or be cut by the server.
        let _ = ws.send(m).await;
        let mut closed = false;
        // Bounded: the server answers with at most an error frame, then closes.
        for _ in 0..4 {
            match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
                Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => {
                    closed = true;
                    break;
                }
                Ok(Some(Ok(_))) => continue,
                Err(_) => break,
            }
        }
        assert!(closed, "the server keeps a connection that sent garbage");
    }
    assert_eq!(hub_head(), head0);

    // Revoked: Rita's good token stops working once the hub revokes it.
    let rita_dev: DeviceId = "rita-phone".parse().unwrap();
    let n = hub
        .lock()
        .unwrap()
        .store()
        .write(|w| w.revoke_device_tokens(&rita_dev, T0 + 5))
        .unwrap();
    assert_eq!(n, 1);
    let o = sync_ws(&url, &rita).await;
    assert!(!o.finished && o.peer.is_none(), "{o:?}");
    assert!(hub.lock().unwrap().project(&id).unwrap().is_none());
    assert_eq!(hub_head(), head0);

    // Other devices are untouched and still sync.
    let o = sync_ws(&url, &carl).await;
    assert!(o.finished, "{o:?}");
    served.stop().await;
}

/// A peer that stops in the middle of a frame, or stalls there: its connection is closed (at
/// once, or after the idle timeout), stored data is untouched, and other devices sync meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_mid_frame_is_dropped_and_others_still_sync() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let dir = tempfile::tempdir().unwrap();
    let h = hub(dir.path());
    let carl = device(dir.path(), &h, "carl-web", 3);
    let accept = accept_config(&h.node);
    let hub: SharedNode = Arc::new(Mutex::new(h.node));
    let carl: SharedNode = Arc::new(Mutex::new(carl));
    let served = serve_hub(
        &hub,
        accept,
        NetConfig {
            idle_timeout: Duration::from_secs(1),
            ..NetConfig::default()
        },
    )
    .await;
    let url = served.url.clone();
    let head = || {
        hub.lock()
            .unwrap()
            .store()
            .read()
            .unwrap()
            .feed_head()
            .unwrap()
    };
    let head0 = head();
    // A binary WebSocket frame announcing 1,000 bytes (masked, as from a client), and 10 of them.
    let mut partial = vec![0x82, 0x80 | 126, 0x03, 0xE8, 1, 2, 3, 4];
    partial.extend_from_slice(b"SY\x02\x01\0\0\x03\xe8ab");
    for stall in [false, true] {
        let tcp =
            tokio::net::TcpStream::connect(url.trim_start_matches("ws://").trim_end_matches('/'))
                .await
                .unwrap();
        let (mut ws, _) = tokio_tungstenite::client_async(&url, tcp).await.unwrap();
        let raw = ws.get_mut();
        raw.write_all(&partial).await.unwrap();
        raw.flush().await.unwrap();
        if stall {
            // Meanwhile another device syncs.
            let o = sync_ws(&url, &carl).await;
            assert!(o.finished, "{o:?}");
            // The server gives up on the stalled connection after its idle timeout.
            let mut buf = [0u8; 64];
            let read = tokio::time::timeout(Duration::from_secs(20), raw.read(&mut buf)).await;
            assert!(
                matches!(read, Ok(Ok(0)) | Ok(Err(_))),
                "the stalled connection is still open: {read:?}"
            );
        } else {
            drop(ws);
            let o = sync_ws(&url, &carl).await;
            assert!(o.finished, "{o:?}");
        }
    }
    // Carl had nothing to send; nothing from the broken peers was stored.
    assert_eq!(head(), head0);
    served.stop().await;
}

/// The hub listener over TLS: a device trusting the hub's certificate syncs over `wss://`; a
/// plain WebSocket client, or one without the certificate, gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_syncs_with_a_tls_hub() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let acceptor = net::tls_acceptor(
        &fixtures.join("hub-cert.pem"),
        &fixtures.join("hub-key.pem"),
    )
    .unwrap();
    let connector = net::tls_connector(&fixtures.join("hub-cert.pem")).unwrap();
    assert!(net::tls_connector(&fixtures.join("hub-key.pem")).is_err());

    let dir = tempfile::tempdir().unwrap();
    let h = hub(dir.path());
    let rita = device(dir.path(), &h, "rita-phone", 2);
    let accept = accept_config(&h.node);
    let hub: SharedNode = Arc::new(Mutex::new(h.node));
    let rita: SharedNode = Arc::new(Mutex::new(rita));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(net::serve_tls(
        listener,
        hub.clone(),
        move || Session::accept(accept.clone()),
        NetConfig::default(),
        Some(acceptor),
        async move {
            let _ = stopped.await;
        },
    ));
    let cfg = NetConfig {
        idle_timeout: Duration::from_secs(10),
        ..NetConfig::default()
    };
    let dial = |url: String, tls| {
        let rita = rita.clone();
        async move {
            let dc = dial_config(&rita.lock().unwrap());
            net::dial_tls(&url, rita, Session::dial(dc), cfg, tls).await
        }
    };
    // Plain WebSocket to a TLS port, and wss without a trusted certificate: refused.
    let plain = dial(format!("ws://127.0.0.1:{port}/"), None).await;
    assert!(!matches!(plain, Ok(ref o) if o.finished), "{plain:?}");
    assert!(
        dial(format!("wss://localhost:{port}/"), None)
            .await
            .is_err()
    );

    let o = dial(format!("wss://localhost:{port}/"), Some(connector))
        .await
        .unwrap();
    assert!(o.finished, "{o:?}");
    assert!(o.changed.iter().any(|r| r.as_str() == "catalog"), "{o:?}");
    let _ = stop.send(());
    server.await.unwrap();
}

/// When a record's owner moves out of Rita's team, the hub tells her device; her offline edit
/// stays on the device, under a permission conflict, and never reaches the hub.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_access_keeps_offline_edits_as_a_permission_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let h = hub(dir.path());
    let rita = device(dir.path(), &h, "rita-phone", 2);
    let carl = device(dir.path(), &h, "carl-web", 3);
    let accept = accept_config(&h.node);
    let hub: SharedNode = Arc::new(Mutex::new(h.node));
    let rita: SharedNode = Arc::new(Mutex::new(rita));
    let carl: SharedNode = Arc::new(Mutex::new(carl));
    let served = serve_hub(&hub, accept, NetConfig::default()).await;
    let url = served.url.clone();
    let id: RecordId = "deal-team".parse().unwrap();
    carl.lock()
        .unwrap()
        .create(RecordKind::Deal, &id, deal_fields(3), T0 + 1)
        .unwrap();
    assert!(sync_ws(&url, &carl).await.finished);
    let o = sync_ws(&url, &rita).await;
    assert!(o.finished && o.changed.contains(&id), "{o:?}");

    // Carl hands the deal to the admin (outside Rita's team); Rita edits it offline.
    carl.lock()
        .unwrap()
        .apply(
            &id,
            "handover",
            &[Edit::Set(key("owner_id"), Value::Ref(1))],
            T0 + 10,
        )
        .unwrap();
    assert!(sync_ws(&url, &carl).await.finished);
    let rita_value = Value::Money(Money::from_cents(77_700));
    rita.lock()
        .unwrap()
        .apply(
            &id,
            "offline",
            &[Edit::Set(key("value"), rita_value.clone())],
            T0 + 20,
        )
        .unwrap();
    let o = sync_ws(&url, &rita).await;
    assert_eq!(o.revoked, vec![id.clone()], "{o:?}");

    let p = rita.lock().unwrap().project(&id).unwrap().unwrap();
    assert_eq!(p.record.fields.get(&key("value")), Some(&rita_value));
    assert!(
        p.conflicts
            .iter()
            .any(|c| matches!(c, Conflict::Permission { .. })),
        "{:?}",
        p.conflicts
    );
    let on_hub = hub.lock().unwrap().project(&id).unwrap().unwrap();
    assert_ne!(on_hub.record.fields.get(&key("value")), Some(&rita_value));
    served.stop().await;
}

/// Measurement, not a check: a fresh device pulls `SELLSYNC_SERVICE_PULL_DEALS` deals (none
/// when unset) from a hub over a loopback WebSocket; prints time, frames and bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_device_pull_measurement() {
    let Some(n) = std::env::var("SELLSYNC_SERVICE_PULL_DEALS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut h = hub(dir.path());
    let started = std::time::Instant::now();
    for i in 0..n {
        let id: RecordId = format!("deal-{i}").parse().unwrap();
        h.node
            .create(RecordKind::Deal, &id, deal_fields(2), T0 + i as i64)
            .unwrap();
    }
    eprintln!("hub: {n} deals created in {:?}", started.elapsed());
    let rita = device(dir.path(), &h, "rita-phone", 2);
    let accept = accept_config(&h.node);
    let hub: SharedNode = Arc::new(Mutex::new(h.node));
    let rita: SharedNode = Arc::new(Mutex::new(rita));
    let served = serve_hub(&hub, accept, NetConfig::default()).await;
    let url = served.url.clone();
    let started = std::time::Instant::now();
    let o = sync_ws(&url, &rita).await;
    eprintln!(
        "device: pulled {} documents in {:?}: {} frames / {} B sent, {} frames / {} B received",
        o.changed.len(),
        started.elapsed(),
        o.frames_sent,
        o.bytes_sent,
        o.frames_received,
        o.bytes_received
    );
    assert!(o.finished, "{o:?}");
    assert_eq!(o.changed.len(), n + 1);
    served.stop().await;
}

/// Inputs automerge 0.12.0 panics on (from `cargo fuzz`), kept as fuzz regressions.
fn automerge_panic_inputs() -> Vec<(String, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/regressions/fuzz_record_load");
    let mut inputs: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    inputs.sort();
    assert!(
        inputs.len() >= 2,
        "regression inputs missing in {}",
        dir.display()
    );
    inputs
}

/// A device sends, through the real protocol over a socket, a sync message carrying bytes that
/// make automerge panic, for a record the hub holds and for a new one. The hub answers with a
/// malformed-frame error and closes that connection only; it keeps nothing of the message, the
/// held record is intact, and other devices sync as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_automerge_panics_on_closes_that_connection_only() {
    use futures_util::{SinkExt, StreamExt};
    use sellsync_sync::ErrorCode;
    use sellsync_sync::frame::{
        Announce, BatchEntry, DEFAULT_MAX_FRAME, ErrorFrame, Frame, Hello, PROTOCOL_VERSION,
        SyncBatch,
    };
    use tokio_tungstenite::tungstenite::Message;

    let dir = tempfile::tempdir().unwrap();
    let h = hub(dir.path());
    let mallory = device(dir.path(), &h, "mallory-phone", 2);
    let carl = device(dir.path(), &h, "carl-web", 3);
    let accept = accept_config(&h.node);
    let hub: SharedNode = Arc::new(Mutex::new(h.node));
    let carl: SharedNode = Arc::new(Mutex::new(carl));
    let served = serve_hub(&hub, accept, NetConfig::default()).await;
    let url = served.url.clone();
    let held: RecordId = "deal-held".parse().unwrap();
    carl.lock()
        .unwrap()
        .create(RecordKind::Deal, &held, deal_fields(3), T0 + 1)
        .unwrap();
    assert!(sync_ws(&url, &carl).await.finished);
    let held_heads = || {
        hub.lock()
            .unwrap()
            .store()
            .read()
            .unwrap()
            .doc_heads(&held)
            .unwrap()
    };
    let heads0 = held_heads();
    let head0 = hub
        .lock()
        .unwrap()
        .store()
        .read()
        .unwrap()
        .feed_head()
        .unwrap();
    let token = mallory.identity().hub_token.clone().unwrap().into_bytes();

    for (name, bytes) in automerge_panic_inputs() {
        for target in [held.clone(), "deal-new".parse().unwrap()] {
            let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
            let send = |f: Frame| Message::Binary(f.encode(DEFAULT_MAX_FRAME).unwrap().into());
            ws.send(send(Frame::Hello(Hello {
                version: PROTOCOL_VERSION,
                node: "mallory-phone".parse().unwrap(),
                role: Role::Device,
                checkpoint: 0,
                token: token.clone(),
                nonce: Vec::new(),
                key: Vec::new(),
            })))
            .await
            .unwrap();
            // The hub's first flight: welcome, announce, sync batches up to the last one.
            let mut since = None;
            loop {
                let Some(Ok(Message::Binary(b))) = ws.next().await else {
                    panic!("the hub closed before its first flight");
                };
                match Frame::decode(&b, DEFAULT_MAX_FRAME).unwrap() {
                    Frame::Welcome(w) => since = Some(w.checkpoint),
                    Frame::SyncBatch(SyncBatch { last: true, .. }) => break,
                    _ => {}
                }
            }
            let message = automerge::sync::Message {
                heads: Vec::new(),
                need: Vec::new(),
                have: Vec::new(),
                changes: bytes.clone().into(),
                flags: None,
                version: automerge::sync::MessageVersion::V1,
            };
            ws.send(send(Frame::Announce(Announce {
                last: true,
                since: since.unwrap(),
                upto: since.unwrap() + 1,
                docs: vec![target.clone()],
            })))
            .await
            .unwrap();
            ws.send(send(Frame::SyncBatch(SyncBatch {
                last: true,
                entries: vec![BatchEntry::new(target.clone(), message.encode())],
            })))
            .await
            .unwrap();
            let mut refused = None;
            while let Ok(Some(Ok(m))) =
                tokio::time::timeout(Duration::from_secs(10), ws.next()).await
            {
                if let Message::Binary(b) = m
                    && let Ok(Frame::Error(e)) = Frame::decode(&b, DEFAULT_MAX_FRAME)
                {
                    refused = Some(e);
                }
            }
            let Some(ErrorFrame { code, reason }) = refused else {
                panic!("{name} for {target}: no error frame before the close");
            };
            assert_eq!(code, ErrorCode::Malformed, "{name} for {target}: {reason}");
            assert!(reason.contains(target.as_str()), "{reason}");

            // Nothing kept; the held record is intact; others still sync.
            assert_eq!(held_heads(), heads0, "{name} for {target}");
            let store = hub.lock().unwrap().store();
            let view = store.read().unwrap();
            assert_eq!(view.feed_head().unwrap(), head0, "{name} for {target}");
            assert!(
                view.doc_meta(&"deal-new".parse().unwrap())
                    .unwrap()
                    .is_none()
            );
            drop(view);
            let o = sync_ws(&url, &carl).await;
            assert!(o.finished, "{name} for {target}: {o:?}");
        }
    }
    assert!(hub.lock().unwrap().project(&held).unwrap().is_some());
    served.stop().await;
}

/// A create the hub refuses (an owner the user may not assign) is never dropped: a device
/// holding its access rules refuses it at once; one without them yet keeps it under a
/// permission conflict after the hub refuses it, and later syncs add nothing to it.
#[test]
fn a_create_the_hub_refuses_is_refused_or_kept_as_a_permission_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = hub(dir.path());
    // Eve (user 4) is in no team: she may not assign the deal to user 3.
    let mut eve = device(dir.path(), &h, "eve-phone", 4);
    let id: RecordId = "deal-not-hers".parse().unwrap();
    let err = eve
        .create(RecordKind::Deal, &id, deal_fields(3), T0 + 1)
        .unwrap_err();
    assert!(err.to_string().contains("may not hold"), "{err}");
    assert!(eve.project(&id).unwrap().is_none());

    // A device without access rules yet (as before its first grant) creates it.
    let store = eve.store();
    drop(eve);
    let mut eve = Node::open(store, None).unwrap();
    eve.create(RecordKind::Deal, &id, deal_fields(3), T0 + 1)
        .unwrap();
    assert!(sync_in_process(&mut eve, &mut h.node));
    assert!(h.node.project(&id).unwrap().is_none(), "the hub took it");
    let p = eve.project(&id).unwrap().expect("kept on the device");
    assert!(
        p.conflicts
            .iter()
            .any(|c| matches!(c, Conflict::Permission { slot: None, .. })),
        "{:?}",
        p.conflicts
    );
    let head = eve.store().read().unwrap().feed_head().unwrap();
    assert!(sync_in_process(&mut eve, &mut h.node));
    assert_eq!(eve.store().read().unwrap().feed_head().unwrap(), head);
}
