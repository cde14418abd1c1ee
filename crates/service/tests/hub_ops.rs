//! The hub off the happy path: `/healthz` on the sync listener, the admin channel, the field
//! policy distributed with the catalog, and a device that opens its store only per session.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sellsync_model::{
    Catalog, Conflict, DeviceId, Edit, FieldKey, Money, RecordId, RecordKind, UserId, Value,
};
use sellsync_service::admin::{self, AdminAnswer, AdminRequest};
use sellsync_service::net::{self, NetConfig, SharedNode};
use sellsync_service::{Acl, Node, token};
use sellsync_store::{NodeIdentity, Role as StoreRole, Store, StoreRead};
use sellsync_sync::{AcceptConfig, DialConfig, Event, Limits, Role, Session};

const T0: i64 = 1_795_000_000_000;

fn key(s: &str) -> FieldKey {
    FieldKey::Std(s.to_owned())
}

fn acl() -> Acl {
    Acl::from_toml("admins = [1]\n[[teams]]\nid = 10\nmembers = [2, 3]\n").unwrap()
}

fn hub(dir: &std::path::Path) -> Node {
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
    node
}

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

/// One in-process session, frames delivered in turn; whether both sides finished.
fn sync_in_process(dev: &mut Node, hub: &mut Node) -> bool {
    let mut d = Session::dial(dial_config(dev));
    let mut a = Session::accept(accept_config(hub));
    dev.replica().set_now(T0);
    hub.replica().set_now(T0);
    let fx = d.handle(dev.replica(), Event::Opened);
    assert_eq!(net::carry_out(dev, &fx, T0).1, None);
    let mut to_hub = fx.send;
    let mut to_dev: Vec<Vec<u8>> = Vec::new();
    for _ in 0..50 {
        for f in std::mem::take(&mut to_hub) {
            let fx = a.handle(hub.replica(), Event::Received(&f));
            assert_eq!(net::carry_out(hub, &fx, T0).1, None);
            to_dev.extend(fx.send);
        }
        for f in std::mem::take(&mut to_dev) {
            let fx = d.handle(dev.replica(), Event::Received(&f));
            assert_eq!(net::carry_out(dev, &fx, T0).1, None);
            to_hub.extend(fx.send);
        }
        if to_hub.is_empty() && to_dev.is_empty() {
            break;
        }
    }
    d.is_ended() && a.is_ended()
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

fn conflicting_fields(node: &mut Node, id: &RecordId) -> Vec<FieldKey> {
    let p = node.project(id).unwrap().unwrap();
    p.conflicts
        .iter()
        .filter_map(|c| match c {
            Conflict::Field { slot, .. } => Some(slot.field.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn devices_project_with_the_policy_the_hub_distributes_with_the_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let mut hub = hub(dir.path());
    let mut a = device(dir.path(), &hub, "a-phone", 2);
    let mut b = device(dir.path(), &hub, "b-phone", 3);
    // The organisation makes the deal name a manual field (by default the latest write wins).
    assert_eq!(
        hub.write_policy("[deal]\nname = \"manual\"\n", T0).unwrap(),
        1
    );
    assert_eq!(hub.policy_version().unwrap(), Some(1));
    let id: RecordId = "deal-acme".parse().unwrap();
    a.create(RecordKind::Deal, &id, deal_fields(2), T0).unwrap();
    assert!(sync_in_process(&mut a, &mut hub));
    assert!(sync_in_process(&mut b, &mut hub));
    assert_eq!(b.policy_version().unwrap(), Some(1));
    // Both rename it offline; after syncing, every replica shows the same open conflict.
    let rename = |n: &mut Node, to: &str, at: i64| {
        n.apply(
            &id,
            "rename",
            &[Edit::Set(key("name"), Value::Text(to.into()))],
            at,
        )
        .unwrap();
    };
    rename(&mut a, "Acme (A)", T0 + 10);
    rename(&mut b, "Acme (B)", T0 + 20);
    assert!(sync_in_process(&mut a, &mut hub));
    assert!(sync_in_process(&mut b, &mut hub));
    assert!(sync_in_process(&mut a, &mut hub));
    for n in [&mut a, &mut b, &mut hub] {
        assert_eq!(conflicting_fields(n, &id), vec![key("name")], "{}", n.id());
    }
    // A device's conflicts view follows too.
    let view = b.store().read().unwrap().conflicts(&id).unwrap();
    assert!(view.is_some(), "the stored conflicts view of b");

    // Unchanged text keeps its version; a new text gets the next one and reaches devices, and
    // every record projects again with it.
    assert_eq!(
        hub.write_policy("[deal]\nname = \"manual\"\n", T0).unwrap(),
        1
    );
    assert_eq!(hub.write_policy("", T0 + 1000).unwrap(), 2);
    assert!(sync_in_process(&mut a, &mut hub));
    assert_eq!(a.policy_version().unwrap(), Some(2));
    assert!(conflicting_fields(&mut a, &id).is_empty());
    let view = a.store().read().unwrap().conflicts(&id).unwrap();
    assert!(
        view.is_none(),
        "a's conflicts view is rewritten under the new policy"
    );
}

#[test]
fn an_invalid_policy_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut hub = hub(dir.path());
    for bad in [
        "[deal]\nvalu = \"manual\"\n",
        "[deal]\nname = \"sometimes\"\n",
        "[deal]\n\"custom_fields.Nope\" = \"manual\"\n",
        "not toml at all [",
    ] {
        let err = hub.write_policy(bad, T0).unwrap_err().to_string();
        assert!(err.starts_with("policy file:"), "{err}");
        assert_eq!(hub.policy_version().unwrap(), None, "{bad}");
    }
    hub.write_policy("[deal]\n\"custom_fields.Region\" = \"manual\"\n", T0)
        .unwrap();
    assert!(hub.write_policy("[deal]\nvalu = \"lww\"\n", T0).is_err());
    assert_eq!(hub.policy_version().unwrap(), Some(1));
}

/// Sends raw bytes to `addr` and reads the answer to its end.
fn http(addr: &str, request: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sync_listener_answers_healthz_and_still_serves_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let hub = hub(dir.path());
    let dev = device(dir.path(), &hub, "a-phone", 2);
    let accept = accept_config(&hub);
    let hub: SharedNode = Arc::new(Mutex::new(hub));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let extras = net::Extras {
        tls: None,
        health: Some(Arc::new(|| {
            serde_json::Map::from_iter([("bridge".to_owned(), serde_json::Value::Null)])
        })),
    };
    let server = tokio::spawn(net::serve_nodes(
        listener,
        net::Nodes::Held(hub.clone()),
        move || Session::accept(accept.clone()),
        NetConfig::default(),
        extras,
        async move {
            let _ = stopped.await;
        },
    ));
    let a = addr.clone();
    let answer =
        tokio::task::spawn_blocking(move || http(&a, "GET /healthz HTTP/1.1\r\nHost: hub\r\n\r\n"))
            .await
            .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    let body: serde_json::Value =
        serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"status": "ok", "store": "ok", "bridge": null})
    );
    // Another path is not a WebSocket request: that connection is closed, nothing else.
    let a = addr.clone();
    let other = tokio::task::spawn_blocking(move || http(&a, "GET / HTTP/1.1\r\n\r\n"))
        .await
        .unwrap();
    assert!(!other.contains("200 OK"), "{other}");
    // A session still runs on the same listener.
    let dev: SharedNode = Arc::new(Mutex::new(dev));
    let cfg = dial_config(&dev.lock().unwrap());
    let out = net::dial(
        &format!("ws://{addr}/"),
        dev.clone(),
        Session::dial(cfg),
        NetConfig::default(),
    )
    .await
    .unwrap();
    assert!(out.finished, "{out:?}");
    assert_eq!(out.changed, vec!["catalog".parse::<RecordId>().unwrap()]);
    let _ = stop.send(());
    server.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leased_node_is_opened_per_session_and_the_store_is_free_between() {
    let dir = tempfile::tempdir().unwrap();
    let hub_node = hub(dir.path());
    let dev = device(dir.path(), &hub_node, "a-phone", 2);
    let accept = accept_config(&hub_node);
    let hub_path = dir.path().join("hub.redb");
    drop(hub_node);
    let path = hub_path.clone();
    let lease = net::NodeLease::new(move || {
        let store =
            Store::open_waiting(&path, Duration::from_secs(5)).map_err(|e| e.to_string())?;
        Node::open(Arc::new(store), Some(acl())).map_err(|e| e.to_string())
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(net::serve_nodes(
        listener,
        net::Nodes::Leased(Arc::new(lease)),
        move || Session::accept(accept.clone()),
        NetConfig::default(),
        net::Extras::default(),
        async move {
            let _ = stopped.await;
        },
    ));
    // Nothing holds the store while no session runs.
    drop(Store::open(&hub_path).unwrap());
    let dev: SharedNode = Arc::new(Mutex::new(dev));
    let cfg = dial_config(&dev.lock().unwrap());
    let out = net::dial(&url, dev.clone(), Session::dial(cfg), NetConfig::default())
        .await
        .unwrap();
    assert!(out.finished, "{out:?}");
    // The session's end releases it again (the server drops its node right after closing).
    let free = tokio::task::spawn_blocking(move || {
        Store::open_waiting(&hub_path, Duration::from_secs(5)).map(drop)
    })
    .await
    .unwrap();
    assert!(free.is_ok(), "{free:?}");
    let _ = stop.send(());
    server.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_socket_carries_commands_to_the_running_hub() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let hub_node = hub(dir.path());
    let store_path = dir.path().join("hub.redb");
    let shared: SharedNode = Arc::new(Mutex::new(hub_node));
    let socket = admin::AdminSocket::bind(&store_path).unwrap();
    let path = socket.path().to_owned();
    assert_eq!(path, admin::socket_path(&store_path));
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // A second hub on the same store cannot take the channel over.
    assert!(admin::AdminSocket::bind(&store_path).is_err());
    let reloads = Arc::new(Mutex::new(0));
    let counted = reloads.clone();
    let reload: admin::ReloadAcl = Arc::new(move |_node: &mut Node| {
        *counted.lock().unwrap() += 1;
        Ok("reloaded".to_owned())
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(socket.serve(shared.clone(), reload, async move {
        let _ = stopped.await;
    }));
    let p = path.clone();
    let answers = tokio::task::spawn_blocking(move || {
        let ask = |req: AdminRequest| admin::call(&p, &req).unwrap().unwrap();
        let issued = ask(AdminRequest::Token {
            user: 2,
            device: "a-phone".into(),
            expires_in: None,
        });
        let bad_device = ask(AdminRequest::Token {
            user: 2,
            device: "not a device id".into(),
            expires_in: None,
        });
        let listed = ask(AdminRequest::Devices);
        let revoked = ask(AdminRequest::Revoke {
            token_id: None,
            device: Some("a-phone".into()),
        });
        let relisted = ask(AdminRequest::Devices);
        let reloaded = ask(AdminRequest::ReloadAcl);
        // A line that is no request is answered with an error.
        let mut raw = std::os::unix::net::UnixStream::connect(&p).unwrap();
        raw.write_all(b"{\"cmd\": \"format-disk\"}\n").unwrap();
        let mut garbage = String::new();
        raw.read_to_string(&mut garbage).unwrap();
        (
            issued, bad_device, listed, revoked, relisted, reloaded, garbage,
        )
    })
    .await
    .unwrap();
    let (issued, bad_device, listed, revoked, relisted, reloaded, garbage) = answers;
    let AdminAnswer::Ok(issued) = issued else {
        panic!("{issued:?}")
    };
    let tok = issued["token"].as_str().unwrap();
    assert!(tok.starts_with("hub.2.a-phone."), "{tok}");
    // The token is the running hub's, and revoked since: its store knows it as revoked.
    let secret = tok.rsplit('.').next().unwrap();
    let store = shared.lock().unwrap().store();
    let err = store.read().unwrap().verify_token(secret, T0).unwrap_err();
    assert!(
        matches!(
            err,
            sellsync_store::StoreError::Token(sellsync_store::TokenRejected::Revoked)
        ),
        "{err}"
    );
    assert!(matches!(bad_device, AdminAnswer::Error(e) if e.contains("not a device id")));
    let AdminAnswer::Ok(listed) = listed else {
        panic!("{listed:?}")
    };
    assert_eq!(listed[0]["device"], "a-phone");
    assert_eq!(listed[0]["live"], true);
    assert_eq!(revoked, AdminAnswer::Ok(serde_json::json!({"revoked": 1})));
    let AdminAnswer::Ok(relisted) = relisted else {
        panic!("{relisted:?}")
    };
    assert_eq!(relisted[0]["live"], false);
    assert_eq!(
        reloaded,
        AdminAnswer::Ok(serde_json::json!({"reloaded": "reloaded"}))
    );
    assert_eq!(*reloads.lock().unwrap(), 1);
    let garbage: AdminAnswer = serde_json::from_str(&garbage).unwrap();
    assert!(matches!(garbage, AdminAnswer::Error(e) if e.contains("not an admin request")));
    let _ = stop.send(());
    server.await.unwrap();
    // Stopped: the socket is gone, and a caller is told no hub runs.
    assert!(!path.exists());
    assert_eq!(admin::call(&path, &AdminRequest::Devices).unwrap(), None);
}
