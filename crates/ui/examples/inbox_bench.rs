//! How fast the conflict page answers on a device holding DEALS deals, CONFLICTS of them with a
//! value in conflict: the inbox request (the facade's reads and the render, also apart), and a
//! resolution's round trip (the POST and the record page it leads to), over loopback HTTP.
//!
//!   cargo run --release -p sellsync-ui --example inbox_bench -- 5000 500
//!
//! Two devices of one in-process hub make the conflicts the way reps do: both hold the deals,
//! both change the value offline, both sync.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sellsync_device::{Device, DeviceConfig, Enrolment, FieldKey, Money, UserId, Value};
use sellsync_model::{Catalog, DeviceId};
use sellsync_service::credential::{self, Issuer};
use sellsync_service::net::{self, NetConfig, SharedNode};
use sellsync_service::{Acl, Node, token};
use sellsync_store::{NodeIdentity, Role as StoreRole, Store};
use sellsync_sync::{AcceptConfig, Limits, Role, Session};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ACL: &str = "admins = [1]\n[[teams]]\nid = 10\nmembers = [2, 3]\n";
const ROUND: Duration = Duration::from_secs(600);

/// A hub in this process; its URL and a token minter.
async fn hub(dir: &Path) -> (SharedNode, String) {
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
    tokio::spawn(net::serve(
        listener,
        node.clone(),
        move || Session::accept(accept.clone()),
        NetConfig::default(),
        std::future::pending(),
    ));
    (node, url)
}

fn enrol(hub: &SharedNode, url: &str, dir: &Path, device: &str, user: u64) -> Device {
    let dev: DeviceId = device.parse().unwrap();
    let token = {
        let n = hub.lock().unwrap();
        let issued = n
            .store()
            .write(|w| w.issue_token(UserId(user), &dev, net::now_ms(), None))
            .unwrap();
        token::format(n.id(), UserId(user), &dev, &issued.token)
    };
    Device::enrol(
        DeviceConfig::new(dir.join(format!("{device}.redb"))),
        Enrolment {
            hub_url: url.to_owned(),
            token,
            ca_pem: None,
        },
    )
    .unwrap()
}

fn key(s: &str) -> FieldKey {
    FieldKey::Std(s.into())
}

fn euros(cents: i64) -> Value {
    Value::Money(Money::from_cents(cents))
}

/// One HTTP/1.1 request over a fresh loopback connection: status line and body.
async fn request(addr: std::net::SocketAddr, head: &str, body: &str) -> (String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{head}\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.lines().next().unwrap_or_default().to_owned();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn median(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (v[v.len() / 2], v[(v.len() * 95 / 100).min(v.len() - 1)])
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let deals: usize = args.next().map_or(5000, |a| a.parse().expect("DEALS"));
    let conflicts: usize = args.next().map_or(500, |a| a.parse().expect("CONFLICTS"));
    assert!(conflicts <= deals, "CONFLICTS must not exceed DEALS");
    let dir = tempfile::tempdir().unwrap();
    let (hub, url) = hub(dir.path()).await;
    let rita = enrol(&hub, &url, dir.path(), "rita-phone", 2);
    let carl = enrol(&hub, &url, dir.path(), "carl-laptop", 3);

    let t = Instant::now();
    let mut ids = Vec::with_capacity(deals);
    for i in 0..deals {
        ids.push(
            rita.create_deal(vec![
                (key("name"), Value::Text(format!("Deal {i}"))),
                (key("value"), euros(100_000)),
                (key("currency"), Value::Text("EUR".into())),
                (key("stage_id"), Value::Ref(12)),
            ])
            .unwrap(),
        );
    }
    rita.sync_hub(ROUND).await.unwrap();
    carl.sync_hub(ROUND).await.unwrap();
    for id in &ids[..conflicts] {
        rita.set(id, vec![(key("value"), euros(150_000))]).unwrap();
        carl.set(id, vec![(key("value"), euros(120_000))]).unwrap();
    }
    rita.sync_hub(ROUND).await.unwrap();
    carl.sync_hub(ROUND).await.unwrap();
    rita.sync_hub(ROUND).await.unwrap();
    let open = rita.status().unwrap().open_conflicts;
    assert_eq!(open, conflicts, "the conflicts made");
    eprintln!(
        "setup: {deals} deals, {open} open conflicts on rita-phone in {:.0} s",
        t.elapsed().as_secs_f64()
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = sellsync_ui::UiConfig {
        token: sellsync_ui::new_token(),
        listen: addr,
        sync_every: None,
    };
    let cookie = format!("Cookie: {}={}", config.cookie_name(), config.token);
    tokio::spawn(sellsync_ui::serve(
        rita.clone(),
        listener,
        config,
        std::future::pending(),
    ));

    const RUNS: usize = 21;
    // The inbox, whole: facade reads, render, HTTP.
    let mut inbox = Vec::new();
    let mut bytes = 0;
    for _ in 0..RUNS {
        let t = Instant::now();
        let (status, body) = request(addr, &format!("GET /inbox HTTP/1.1\r\n{cookie}"), "").await;
        inbox.push(t.elapsed());
        assert!(status.contains("200"), "{status}");
        assert!(
            body.contains(&format!("{conflicts} open conflicts")),
            "the inbox lists them all"
        );
        bytes = body.len();
    }
    // Apart: what the facade's read takes (each record with conflicts, projected once).
    let mut reads = Vec::new();
    for _ in 0..RUNS {
        let t = Instant::now();
        assert_eq!(rita.conflicted_records().unwrap().len(), conflicts);
        reads.push(t.elapsed());
    }
    // For comparison: every conflict with its base, then each record again (the inbox's first
    // version).
    let mut with_bases = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        for c in &rita.conflicts().unwrap() {
            let _ = rita.record(&c.record).unwrap();
        }
        with_bases.push(t.elapsed());
    }
    // A resolution's round trip: the POST (decision written, redirect) and the record page.
    let mut round_trips = Vec::new();
    for id in &ids[..RUNS.min(conflicts)] {
        let seen: Vec<String> = match &rita.record_conflicts(id).unwrap()[0].conflict {
            sellsync_device::Conflict::Field { candidates, .. } => {
                candidates.iter().map(|c| c.op.clone()).collect()
            }
            other => panic!("not a field conflict: {other:?}"),
        };
        let form = format!("slot=value&seen={}&choice=pick-1", seen.join("%2C"));
        let t = Instant::now();
        let (status, _) = request(
            addr,
            &format!(
                "POST /record/{id}/resolve HTTP/1.1\r\n{cookie}\r\nOrigin: http://{addr}\r\n\
                 Content-Type: application/x-www-form-urlencoded"
            ),
            &form,
        )
        .await;
        assert!(status.contains("303"), "{status}");
        let (status, page) = request(
            addr,
            &format!("GET /record/{id}?done=1 HTTP/1.1\r\n{cookie}"),
            "",
        )
        .await;
        round_trips.push(t.elapsed());
        assert!(
            status.contains("200") && page.contains("No open conflicts"),
            "{status}"
        );
    }
    let (inbox_med, inbox_p95) = median(inbox);
    let (reads_med, _) = median(reads);
    let (rt_med, rt_p95) = median(round_trips);
    println!("| what ({deals} deals, {conflicts} conflicts) | median | p95 |");
    println!("|---|---|---|");
    println!(
        "| GET /inbox ({} KiB), whole request | {} | {} |",
        bytes / 1024,
        ms(inbox_med),
        ms(inbox_p95)
    );
    println!(
        "| of which the facade's read (`conflicted_records`) | {} | |",
        ms(reads_med)
    );
    println!(
        "| for comparison: `conflicts` (with bases), then each record | {} | |",
        ms(median(with_bases).0)
    );
    println!(
        "| a resolution: POST, then the record page | {} | {} |",
        ms(rt_med),
        ms(rt_p95)
    );
}
