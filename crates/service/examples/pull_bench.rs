//! Replication over a real loopback WebSocket, hub and device in separate processes, with
//! samod 0.16 doing the same pull as the baseline.
//!
//! ```text
//! cargo run --release -p sellsync-service --example pull_bench -- 1000 5000 20000
//! ```
//!
//! For each size N: a child process seeds a hub store with N deals (and the catalog); a hub
//! process serves it; a fresh device process dials it through a byte-counting proxy in this
//! process and pulls everything. Then a samod hub process loads the same automerge documents
//! from the same store into a samod repo and a samod device process `find`s each of them
//! through the same proxy. Each child reports its peak RSS (`VmHWM`) when it ends.
//!
//! After the pull of the reconnect size (5,000 by default), the reconnect case: the device
//! edits 50 deals (3 fields each) offline, the hub gets 50 other deals changed, and the device
//! syncs again through the proxy, which now delays every chunk by half the simulated round trip
//! in each direction.
//!
//! Options: `--no-samod`, `--samod-timeout SECS` (default 300; a samod pull still running then
//! is stopped and its progress reported), `--reconnect N` (0: none), `--rtt-ms MS` (default
//! 150), `--fanout DEVICES:CHANGES` (default 200:20; `0:0` for none). `PULL_BENCH_DIR` picks the
//! directory of the temporary stores (default: the system temporary directory).
//! `PULL_BENCH_UNSIGNED=1` runs every node without signed changes (the baseline of their cost).
//!
//! Round trips are counted at the proxy: a leg is a run of WebSocket data frames in one
//! direction; round trips are legs / 2 rounded up. The WebSocket upgrade (one more round trip,
//! plus the TCP handshake) is not in that count; the time includes it.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use sellsync_model::{
    Author, Catalog, DeviceId, Edit, EditCtx, FieldKey, Money, Policy, RecordDoc, RecordId,
    RecordKind, RegisterLayout, UserId, Value,
};
use sellsync_service::net::{self, NetConfig, SharedNode};
use sellsync_service::{Acl, Node, token};
use sellsync_store::{Docs, NodeIdentity, Role as StoreRole, Store, StoreRead};
use sellsync_sync::{AcceptConfig, DialConfig, Limits, Role, Session};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const T0: i64 = 1_795_000_000_000;
const HUB: &str = "hub";
const PHONE: &str = "bench-phone";
/// The device's user; every benchmark deal is owned by this user (a team member).
const REP: u64 = 2;
const ACL: &str = "admins = [1]\n[[teams]]\nid = 10\nmembers = [2, 3]\n";
const SEED_BATCH: usize = 500;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("child") {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        return rt.block_on(child(&args[1..]));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(orchestrate(&args))
}

// ---------------------------------------------------------------------------------------------
// Shared helpers

/// Opens a node; with `PULL_BENCH_UNSIGNED=1` (inherited by every child process) it neither
/// signs the changes it sends nor checks the ones it receives: the baseline of the cost of
/// signed changes.
fn open_node(store: Arc<Store>, acl: Option<Acl>) -> Result<Node> {
    let mut node = Node::open(store, acl)?;
    if std::env::var("PULL_BENCH_UNSIGNED").is_ok_and(|v| v == "1") {
        node.replica().set_signing(None, false);
    }
    Ok(node)
}

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn deal_id(i: usize) -> RecordId {
    format!("deal-{i:06}").parse().expect("valid record id")
}

fn key(s: &str) -> FieldKey {
    FieldKey::Std(s.to_owned())
}

fn deal_fields(i: usize) -> Vec<(FieldKey, Value)> {
    vec![
        (key("name"), Value::Text(format!("Trade fair lead {i}"))),
        (
            key("value"),
            Value::Money(Money::from_cents(100_000 + (i as i64 % 997) * 100)),
        ),
        (key("currency"), Value::Text("EUR".into())),
        (key("stage_id"), Value::Ref(11 + (i as u64 % 4))),
        (key("owner_id"), Value::Ref(REP)),
        (key("hot"), Value::Bool(i.is_multiple_of(3))),
        (key("source_id"), Value::Ref(1 + (i as u64 % 2))),
    ]
}

/// The three fields an edit of the reconnect case sets on deal `i`.
fn edited_fields(i: usize, round: u32) -> Vec<(&'static str, serde_json::Value)> {
    vec![
        (
            "name",
            serde_json::Value::from(format!("Trade fair lead {i} (revised {round})")),
        ),
        ("value", serde_json::Value::from(250_000 + i as i64 * 10)),
        ("hot", serde_json::Value::from(i.is_multiple_of(2))),
    ]
}

fn edits_of(fields: &[(&'static str, serde_json::Value)]) -> Vec<Edit> {
    fields
        .iter()
        .map(|(k, v)| {
            let value = match *k {
                "value" => Value::Money(Money::from_cents(v.as_i64().unwrap_or(0))),
                "hot" => Value::Bool(v.as_bool().unwrap_or(false)),
                _ => Value::Text(v.as_str().unwrap_or("").to_owned()),
            };
            Edit::Set(key(k), value)
        })
        .collect()
}

/// The example catalog plus the users of the fan-out case (ids 100..100 + devices).
fn fanout_catalog(devices: usize) -> Catalog {
    let mut c = Catalog::example();
    for k in 0..devices as u64 {
        c.users.insert(
            100 + k,
            sellsync_model::User {
                id: 100 + k,
                name: format!("Rep {k}"),
                role: "user".into(),
            },
        );
    }
    c
}

fn acl() -> Result<Acl> {
    Acl::from_toml(ACL).map_err(|e| anyhow!("acl: {e}"))
}

fn kv_line(pairs: &[(&str, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn parse_kv(line: &str) -> HashMap<String, String> {
    line.split_whitespace()
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

async fn stdin_closed() {
    let _ = tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Child processes

async fn child(args: &[String]) -> Result<()> {
    let arg = |i: usize| -> Result<&str> {
        args.get(i)
            .map(String::as_str)
            .ok_or_else(|| anyhow!("missing argument {i}"))
    };
    match arg(0)? {
        "seed" => seed(Path::new(arg(1)?), arg(2)?.parse()?),
        "hub" => hub(Path::new(arg(1)?)).await,
        "device" => device(Path::new(arg(1)?), arg(2)?).await,
        "edit" => edit(Path::new(arg(1)?), arg(2)?.parse()?, arg(3)?.parse()?),
        "samod-hub" => samod_hub(Path::new(arg(1)?)).await,
        "samod-device" => samod_device(Path::new(arg(1)?), arg(2)?).await,
        "fanout-devices" => fanout_devices(Path::new(arg(1)?), arg(2)?, arg(3)?.parse()?).await,
        other => bail!("unknown child mode {other}"),
    }
}

fn hub_identity() -> Result<NodeIdentity> {
    Ok(NodeIdentity {
        device_id: HUB.parse()?,
        user_id: UserId(1),
        role: StoreRole::Hub,
        hub_url: None,
        hub_token: None,
    })
}

/// Writes `count` deals starting at `first` into `node`'s store, `SEED_BATCH` per transaction.
fn write_deals(node: &mut Node, first: usize, count: usize, owner: u64) -> Result<()> {
    let author = Author {
        user: UserId(1),
        device: node.id().clone(),
    };
    let catalog = node.replica_ref().catalog().clone();
    let policy = Policy::default();
    let ctx = EditCtx {
        author: &author,
        now_ms: T0,
        catalog: &catalog,
        policy: &policy,
    };
    let ids: Vec<usize> = (first..first + count).collect();
    for chunk in ids.chunks(SEED_BATCH) {
        let mut docs = Vec::with_capacity(chunk.len());
        for &i in chunk {
            let mut fields = deal_fields(i);
            fields.retain(|(k, _)| *k != key("owner_id"));
            fields.push((key("owner_id"), Value::Ref(owner)));
            let rd = RecordDoc::create(
                RecordKind::Deal,
                deal_id(i),
                RegisterLayout::Packed,
                &ctx,
                fields,
            )
            .map_err(|e| anyhow!("deal {i}: {e}"))?;
            docs.push((deal_id(i), rd));
        }
        store_new_docs(node, &mut docs)?;
    }
    Ok(())
}

/// Stores freshly created records in one transaction.
fn store_new_docs(node: &mut Node, docs: &mut [(RecordId, RecordDoc)]) -> Result<()> {
    let merged = node.replica().docs().batch(|b| {
        let mut merged = Vec::with_capacity(docs.len());
        for (id, rd) in docs.iter_mut() {
            merged.push(b.with_doc_mut(id, "deal", |doc| doc.merge(rd.automerge_mut()))?);
        }
        Ok(merged)
    })?;
    for m in merged {
        m.map_err(|e| anyhow!("merge: {e}"))?;
    }
    Ok(())
}

/// `seed DIR N`: a hub store with the catalog, N deals of the rep, and a token for the phone.
fn seed(dir: &Path, n: usize) -> Result<()> {
    let started = Instant::now();
    let store = Arc::new(Store::open(dir.join("hub.redb"))?);
    Node::init(&store, &hub_identity()?)?;
    let mut node = open_node(store.clone(), Some(acl()?))?;
    node.write_catalog(&Catalog::example(), T0)?;
    write_deals(&mut node, 0, n, REP)?;
    let phone: DeviceId = PHONE.parse()?;
    let issued = store.write(|w| w.issue_token(UserId(REP), &phone, T0, None))?;
    let full = token::format(node.id(), UserId(REP), &phone, &issued.token);
    std::fs::write(dir.join("token"), full)?;
    println!(
        "{}",
        kv_line(&[("seed_ms", started.elapsed().as_millis().to_string())])
    );
    Ok(())
}

fn accept_config(node: &Node) -> AcceptConfig {
    AcceptConfig {
        node: node.id().clone(),
        role: Role::Hub,
        token: Vec::new(),
        mutual: false,
        nonce: Vec::new(),
        limits: Limits::default(),
    }
}

/// `hub DIR`: serves the hub store on 127.0.0.1, prints its port, stops when stdin closes.
async fn hub(dir: &Path) -> Result<()> {
    let store = Arc::new(Store::open(dir.join("hub.redb"))?);
    let node = open_node(store, Some(acl()?))?;
    let accept = accept_config(&node);
    let shared: SharedNode = Arc::new(Mutex::new(node));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("port={}", listener.local_addr()?.port());
    std::io::stdout().flush()?;
    net::serve(
        listener,
        shared,
        move || Session::accept(accept.clone()),
        NetConfig::default(),
        stdin_closed(),
    )
    .await;
    println!("{}", kv_line(&[("hwm_kib", vm_hwm_kib().to_string())]));
    Ok(())
}

/// Opens the device store of `dir` (initialising it from the hub's token the first time).
fn open_device(dir: &Path, name: &str, user: u64, token: &str) -> Result<Node> {
    let store = Arc::new(Store::open(dir.join(format!("{name}.redb")))?);
    if store.read()?.identity()?.is_none() {
        Node::init(
            &store,
            &NodeIdentity {
                device_id: name.parse()?,
                user_id: UserId(user),
                role: StoreRole::Device,
                hub_url: None,
                hub_token: Some(token.to_owned()),
            },
        )?;
    }
    open_node(store, None)
}

fn dial_config(node: &Node) -> Result<DialConfig> {
    Ok(sellsync_service::credential::hub_dial_config(
        node,
        Limits::default(),
    )?)
}

fn net_config() -> NetConfig {
    NetConfig {
        idle_timeout: Duration::from_secs(120),
        ..NetConfig::default()
    }
}

/// `device DIR URL`: one sync of the phone with the hub at URL.
async fn device(dir: &Path, url: &str) -> Result<()> {
    let token = std::fs::read_to_string(dir.join("token"))?;
    let node = open_device(dir, PHONE, REP, &token)?;
    let cfg = dial_config(&node)?;
    let shared: SharedNode = Arc::new(Mutex::new(node));
    let started = Instant::now();
    let o = net::dial(url, shared.clone(), Session::dial(cfg), net_config()).await?;
    let elapsed = started.elapsed();
    let held = shared
        .lock()
        .map_err(|_| anyhow!("poisoned"))?
        .records()?
        .len();
    println!(
        "{}",
        kv_line(&[
            ("ms", format!("{:.1}", elapsed.as_secs_f64() * 1e3)),
            ("finished", o.finished.to_string()),
            ("changed", o.changed.len().to_string()),
            ("held", held.to_string()),
            ("frames_sent", o.frames_sent.to_string()),
            ("frames_received", o.frames_received.to_string()),
            ("error", o.error.is_some().to_string()),
            ("hwm_kib", vm_hwm_kib().to_string()),
        ])
    );
    if let Some(e) = o.error {
        eprintln!("device: {e}");
    }
    Ok(())
}

/// `edit STORE FIRST COUNT`: sets three fields of deals FIRST.. on the node of STORE, one
/// action each, as a user would.
fn edit(store_path: &Path, first: usize, count: usize) -> Result<()> {
    let store = Arc::new(Store::open(store_path)?);
    let mut node = open_node(store, None)?;
    for i in first..first + count {
        let edits = edits_of(&edited_fields(i, 1));
        node.apply(&deal_id(i), "bench edit", &edits, T0 + 60_000)?;
    }
    Ok(())
}

// --- samod ------------------------------------------------------------------------------------

fn ws_transport<S>(ws: tokio_tungstenite::WebSocketStream<S>) -> samod::Transport
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use tokio_tungstenite::tungstenite::{Error as WsError, Message};
    let (sink, stream) = ws.split();
    let stream = Box::pin(stream.filter_map(|m| async move {
        match m {
            Ok(Message::Binary(b)) => Some(Ok(b.to_vec())),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        }
    }));
    let sink = Box::pin(sink.with(|b: Vec<u8>| {
        futures_util::future::ready(Ok::<_, WsError>(Message::Binary(b.into())))
    }));
    samod::Transport::new(stream, sink)
}

struct WsDialer(samod::Url);

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

impl samod::Dialer for WsDialer {
    type Error = Never;

    fn url(&self) -> samod::Url {
        self.0.clone()
    }

    fn connect(
        &self,
    ) -> futures_util::future::BoxFuture<'static, Result<samod::Transport, samod::DialError<Never>>>
    {
        let url = self.0.to_string();
        Box::pin(async move {
            let (ws, _) = tokio_tungstenite::connect_async(url)
                .await
                .map_err(samod::DialError::transient)?;
            Ok(ws_transport(ws))
        })
    }
}

/// `samod-hub DIR`: a samod repo holding every document of the hub store, served over
/// WebSockets on 127.0.0.1; writes the samod document ids to DIR/samod-ids.
async fn samod_hub(dir: &Path) -> Result<()> {
    let store = Arc::new(Store::open(dir.join("hub.redb"))?);
    let mut docs = Docs::new(store.clone(), 8 << 20);
    let records: Vec<RecordId> = store
        .read()?
        .changed_since(0, usize::MAX)?
        .into_iter()
        .map(|e| e.record)
        .collect();
    let repo = samod::Repo::build_tokio().load().await;
    let mut ids = String::new();
    for r in &records {
        let doc = docs
            .with_doc(r, |d| d.clone())?
            .ok_or_else(|| anyhow!("{r} vanished"))?;
        let handle = repo
            .create(doc)
            .await
            .map_err(|e| anyhow!("create: {e:?}"))?;
        ids.push_str(&handle.document_id().to_string());
        ids.push('\n');
    }
    drop(docs);
    std::fs::write(dir.join("samod-ids"), ids)?;
    let acceptor = repo
        .make_acceptor(samod::Url::parse("ws://127.0.0.1/")?)
        .map_err(|e| anyhow!("acceptor: {e:?}"))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("port={}", listener.local_addr()?.port());
    std::io::stdout().flush()?;
    let stop = stdin_closed();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            a = listener.accept() => {
                let (tcp, _) = a?;
                let ws = tokio_tungstenite::accept_async(tcp).await?;
                acceptor.accept(ws_transport(ws)).map_err(|e| anyhow!("accept: {e:?}"))?;
            }
        }
    }
    println!("{}", kv_line(&[("hwm_kib", vm_hwm_kib().to_string())]));
    repo.stop().await;
    Ok(())
}

/// `samod-device DIR URL`: a fresh samod repo dials URL and finds every document one after the
/// other; prints progress lines, then the result.
async fn samod_device(dir: &Path, url: &str) -> Result<()> {
    let ids: Vec<samod::DocumentId> = std::fs::read_to_string(dir.join("samod-ids"))?
        .lines()
        .map(|l| l.parse().map_err(|e| anyhow!("document id {l}: {e:?}")))
        .collect::<Result<_>>()?;
    let repo = samod::Repo::build_tokio().load().await;
    let started = Instant::now();
    let dialer = repo
        .dial(
            samod::BackoffConfig::default(),
            Arc::new(WsDialer(samod::Url::parse(url)?)),
        )
        .map_err(|e| anyhow!("dial: {e:?}"))?;
    dialer
        .established()
        .await
        .map_err(|e| anyhow!("established: {e:?}"))?;
    for (k, id) in ids.into_iter().enumerate() {
        match repo.find(id).await {
            Ok(Some(_)) => {}
            other => bail!("find failed: {other:?}"),
        }
        if (k + 1) % 50 == 0 {
            println!(
                "{}",
                kv_line(&[
                    ("progress", (k + 1).to_string()),
                    (
                        "ms",
                        format!("{:.1}", started.elapsed().as_secs_f64() * 1e3)
                    ),
                    ("hwm_kib", vm_hwm_kib().to_string()),
                ])
            );
            std::io::stdout().flush()?;
        }
    }
    let elapsed = started.elapsed();
    println!(
        "{}",
        kv_line(&[
            ("done", "true".into()),
            ("ms", format!("{:.1}", elapsed.as_secs_f64() * 1e3)),
            ("hwm_kib", vm_hwm_kib().to_string()),
        ])
    );
    std::io::stdout().flush()?;
    repo.stop().await;
    Ok(())
}

// --- fan-out ----------------------------------------------------------------------------------

/// `fanout-devices DIR URL CHANGES`: every device of DIR/devices (one line each: name, user,
/// token) creates CHANGES deals offline, then all of them sync with the hub at once.
async fn fanout_devices(dir: &Path, url: &str, changes: usize) -> Result<()> {
    let list = std::fs::read_to_string(dir.join("devices"))?;
    let mut nodes = Vec::new();
    for (k, line) in list.lines().enumerate() {
        let mut parts = line.split_whitespace();
        let (Some(name), Some(user), Some(tok)) = (parts.next(), parts.next(), parts.next()) else {
            bail!("bad device line {line}");
        };
        let user: u64 = user.parse()?;
        let mut node = open_device(dir, name, user, tok)?;
        let author = Author {
            user: UserId(user),
            device: node.id().clone(),
        };
        let catalog = fanout_catalog(list.lines().count());
        let policy = Policy::default();
        let ctx = EditCtx {
            author: &author,
            now_ms: T0,
            catalog: &catalog,
            policy: &policy,
        };
        let mut docs = Vec::new();
        for c in 0..changes {
            let i = 1_000_000 + k * changes + c;
            let mut fields = deal_fields(i);
            fields.retain(|(f, _)| *f != key("owner_id"));
            fields.push((key("owner_id"), Value::Ref(user)));
            let rd = RecordDoc::create(
                RecordKind::Deal,
                deal_id(i),
                RegisterLayout::Packed,
                &ctx,
                fields,
            )
            .map_err(|e| anyhow!("deal {i}: {e}"))?;
            docs.push((deal_id(i), rd));
        }
        store_new_docs(&mut node, &mut docs)?;
        nodes.push(node);
    }
    let before = vm_hwm_kib();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for node in nodes {
        let cfg = dial_config(&node)?;
        let shared: SharedNode = Arc::new(Mutex::new(node));
        let url = url.to_owned();
        tasks.push(tokio::spawn(async move {
            net::dial(&url, shared, Session::dial(cfg), net_config()).await
        }));
    }
    let mut finished = 0usize;
    let mut failed = 0usize;
    for t in tasks {
        match t.await {
            Ok(Ok(o)) if o.finished && o.error.is_none() => finished += 1,
            Ok(Ok(o)) => {
                failed += 1;
                eprintln!("device: {:?} {:?}", o.closed, o.error);
            }
            Ok(Err(e)) => {
                failed += 1;
                eprintln!("device: {e}");
            }
            Err(e) => {
                failed += 1;
                eprintln!("device task: {e}");
            }
        }
    }
    let elapsed = started.elapsed();
    println!(
        "{}",
        kv_line(&[
            ("ms", format!("{:.1}", elapsed.as_secs_f64() * 1e3)),
            ("finished", finished.to_string()),
            ("failed", failed.to_string()),
            ("hwm_before_kib", before.to_string()),
            ("hwm_kib", vm_hwm_kib().to_string()),
        ])
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Orchestrator: child processes and the counting, delaying proxy

struct Running {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: std::sync::mpsc::Receiver<String>,
}

fn spawn_child(args: &[&str]) -> Result<Running> {
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .arg("child")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("spawn {args:?}"))?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let stdin = child.stdin.take();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Ok(Running {
        child,
        stdin,
        lines: rx,
    })
}

impl Running {
    fn next_line(&self, timeout: Duration) -> Result<HashMap<String, String>> {
        let line = self
            .lines
            .recv_timeout(timeout)
            .map_err(|e| anyhow!("child output: {e}"))?;
        Ok(parse_kv(&line))
    }

    /// Closes stdin (the stop signal of servers) and collects the last line and the exit.
    fn finish(mut self, timeout: Duration) -> Result<HashMap<String, String>> {
        drop(self.stdin.take());
        let mut last = HashMap::new();
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => last = parse_kv(&l),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    let _ = self.child.kill();
                    break;
                }
            }
        }
        let status = self.child.wait()?;
        if !status.success() {
            bail!("child failed: {status}");
        }
        Ok(last)
    }
}

fn run_child(args: &[&str], timeout: Duration) -> Result<HashMap<String, String>> {
    spawn_child(args)?.finish(timeout)
}

/// Counts of one proxied connection.
#[derive(Debug, Default)]
struct ProxyStats {
    /// Bytes on the wire (TCP payload, WebSocket framing and upgrade included), to the hub.
    up: AtomicU64,
    /// The same, to the device.
    down: AtomicU64,
    /// WebSocket data frames, both ways.
    frames: AtomicU64,
    /// Legs: runs of data frames in one direction.
    legs: Mutex<(Option<bool>, u64)>,
}

impl ProxyStats {
    fn frame(&self, to_hub: bool) {
        self.frames.fetch_add(1, Ordering::Relaxed);
        let mut l = self.legs.lock().unwrap_or_else(|e| e.into_inner());
        if l.0 != Some(to_hub) {
            l.0 = Some(to_hub);
            l.1 += 1;
        }
    }

    fn legs(&self) -> u64 {
        self.legs.lock().unwrap_or_else(|e| e.into_inner()).1
    }
}

/// Finds the starts of WebSocket frames in one direction of a connection (after the HTTP
/// upgrade), for counting data frames and legs.
#[derive(Default)]
struct WsScan {
    upgraded: bool,
    http: Vec<u8>,
    header: Vec<u8>,
    skip: u64,
}

impl WsScan {
    /// Feeds the next bytes; calls `on_data` once per data frame (text, binary, continuation).
    fn feed(&mut self, mut data: &[u8], mut on_data: impl FnMut()) {
        if !self.upgraded {
            let take = data.len();
            self.http.extend_from_slice(data);
            let Some(end) = self.http.windows(4).position(|w| w == b"\r\n\r\n") else {
                return;
            };
            let rest = self.http.split_off(end + 4);
            self.upgraded = true;
            data = &data[take..];
            self.feed_frames(&rest, &mut on_data);
        }
        self.feed_frames(data, &mut on_data);
    }

    fn feed_frames(&mut self, mut data: &[u8], on_data: &mut impl FnMut()) {
        while !data.is_empty() {
            if self.skip > 0 {
                let n = usize::try_from(self.skip)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                self.skip -= n as u64;
                data = &data[n..];
                continue;
            }
            self.header.push(data[0]);
            data = &data[1..];
            let h = &self.header;
            if h.len() < 2 {
                continue;
            }
            let masked = h[1] & 0x80 != 0;
            let len7 = h[1] & 0x7f;
            let ext = match len7 {
                126 => 2,
                127 => 8,
                _ => 0,
            };
            let need = 2 + ext + if masked { 4 } else { 0 };
            if h.len() < need {
                continue;
            }
            let len = match ext {
                0 => u64::from(len7),
                _ => h[2..2 + ext]
                    .iter()
                    .fold(0u64, |a, b| (a << 8) | u64::from(*b)),
            };
            let opcode = h[0] & 0x0f;
            if opcode <= 2 {
                on_data();
            }
            self.header.clear();
            self.skip = len;
        }
    }
}

/// A TCP proxy on 127.0.0.1 to `target` that counts and, with `one_way` > 0, delays every
/// chunk by `one_way` in each direction (order kept). Serves connections until dropped.
async fn proxy(
    target: u16,
    one_way: Duration,
) -> Result<(u16, Arc<ProxyStats>, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let stats = Arc::new(ProxyStats::default());
    let s = stats.clone();
    let task = tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else {
                continue;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::spawn(pipe(cr, sw, true, one_way, s.clone()));
            tokio::spawn(pipe(sr, cw, false, one_way, s.clone()));
        }
    });
    Ok((port, stats, task))
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    to_hub: bool,
    one_way: Duration,
    stats: Arc<ProxyStats>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut scan = WsScan::default();
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let counter = if to_hub { &stats.up } else { &stats.down };
        counter.fetch_add(n as u64, Ordering::Relaxed);
        scan.feed(&buf[..n], || stats.frame(to_hub));
        let due = tokio::time::Instant::now() + one_way;
        if tx.send((due, buf[..n].to_vec())).is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}

fn get<'a>(m: &'a HashMap<String, String>, k: &str) -> &'a str {
    m.get(k).map(String::as_str).unwrap_or("?")
}

fn mib(kib: &str) -> String {
    kib.parse::<f64>()
        .map(|k| format!("{:.0} MiB", k / 1024.0))
        .unwrap_or_else(|_| "?".into())
}

fn secs(ms: &str) -> String {
    ms.parse::<f64>()
        .map(|m| format!("{:.2} s", m / 1e3))
        .unwrap_or_else(|_| "?".into())
}

struct Opts {
    sizes: Vec<usize>,
    samod: bool,
    samod_timeout: Duration,
    reconnect: usize,
    rtt: Duration,
    fanout: (usize, usize),
}

fn parse_opts(args: &[String]) -> Result<Opts> {
    let mut o = Opts {
        sizes: Vec::new(),
        samod: true,
        samod_timeout: Duration::from_secs(300),
        reconnect: 5000,
        rtt: Duration::from_millis(150),
        fanout: (200, 20),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().ok_or_else(|| anyhow!("{a} needs a value"));
        match a.as_str() {
            "--no-samod" => o.samod = false,
            "--samod-timeout" => o.samod_timeout = Duration::from_secs(val()?.parse()?),
            "--reconnect" => o.reconnect = val()?.parse()?,
            "--rtt-ms" => o.rtt = Duration::from_millis(val()?.parse()?),
            "--fanout" => {
                let v = val()?;
                let (d, c) = v.split_once(':').ok_or_else(|| anyhow!("--fanout D:C"))?;
                o.fanout = (d.parse()?, c.parse()?);
            }
            n => o
                .sizes
                .push(n.parse().with_context(|| format!("argument {n}"))?),
        }
    }
    if o.sizes.is_empty() {
        o.sizes = vec![1000, 5000, 20000];
    }
    Ok(o)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// One sync of the phone in `dir` with a hub process on `dir`, through a proxy.
async fn sync_once(dir: &str, one_way: Duration) -> Result<Vec<(String, String)>> {
    let hub = spawn_child(&["hub", dir])?;
    let port: u16 = get(&hub.next_line(Duration::from_secs(120))?, "port").parse()?;
    let (pport, stats, ptask) = proxy(port, one_way).await?;
    let url = format!("ws://127.0.0.1:{pport}/");
    let d = dir.to_owned();
    let dev = tokio::task::spawn_blocking(move || {
        run_child(&["device", &d, &url], Duration::from_secs(1800))
    })
    .await??;
    let h = tokio::task::spawn_blocking(move || hub.finish(Duration::from_secs(60))).await??;
    ptask.abort();
    let legs = stats.legs();
    Ok(vec![
        ("ms".into(), get(&dev, "ms").into()),
        ("finished".into(), get(&dev, "finished").into()),
        ("changed".into(), get(&dev, "changed").into()),
        ("held".into(), get(&dev, "held").into()),
        (
            "down".into(),
            stats.down.load(Ordering::Relaxed).to_string(),
        ),
        ("up".into(), stats.up.load(Ordering::Relaxed).to_string()),
        (
            "frames".into(),
            stats.frames.load(Ordering::Relaxed).to_string(),
        ),
        ("legs".into(), legs.to_string()),
        ("round_trips".into(), legs.div_ceil(2).to_string()),
        ("hub_hwm_kib".into(), get(&h, "hwm_kib").into()),
        ("dev_hwm_kib".into(), get(&dev, "hwm_kib").into()),
    ])
}

/// The samod pull of the documents of the hub store in `dir`.
async fn samod_once(dir: &str, timeout: Duration) -> Result<Vec<(String, String)>> {
    let hub = spawn_child(&["samod-hub", dir])?;
    let port: u16 = get(&hub.next_line(Duration::from_secs(600))?, "port").parse()?;
    let (pport, stats, ptask) = proxy(port, Duration::ZERO).await?;
    let url = format!("ws://127.0.0.1:{pport}/");
    let dev = spawn_child(&["samod-device", dir, &url])?;
    let deadline = Instant::now() + timeout;
    let mut last = HashMap::new();
    let mut done = false;
    let mut dev = Some(dev);
    while let Some(d) = dev.as_ref() {
        let left = deadline.saturating_duration_since(Instant::now());
        match d.lines.recv_timeout(left.min(Duration::from_secs(1))) {
            Ok(l) => {
                last = parse_kv(&l);
                if last.contains_key("done") {
                    done = true;
                    break;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) if left.is_zero() => {
                if let Some(mut d) = dev.take() {
                    let _ = d.child.kill();
                    let _ = d.child.wait();
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    if let Some(d) = dev.take() {
        tokio::task::spawn_blocking(move || d.finish(Duration::from_secs(60))).await??;
    }
    let h = tokio::task::spawn_blocking(move || hub.finish(Duration::from_secs(60))).await??;
    ptask.abort();
    Ok(vec![
        ("done".into(), done.to_string()),
        ("progress".into(), get(&last, "progress").into()),
        ("ms".into(), get(&last, "ms").into()),
        (
            "down".into(),
            stats.down.load(Ordering::Relaxed).to_string(),
        ),
        ("up".into(), stats.up.load(Ordering::Relaxed).to_string()),
        (
            "frames".into(),
            stats.frames.load(Ordering::Relaxed).to_string(),
        ),
        ("legs".into(), stats.legs().to_string()),
        ("hub_hwm_kib".into(), get(&h, "hwm_kib").into()),
        ("dev_hwm_kib".into(), get(&last, "hwm_kib").into()),
    ])
}

fn gzip_len(bytes: &[u8]) -> Result<usize> {
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(bytes)?;
    Ok(z.finish()?.len())
}

fn base_dir() -> PathBuf {
    std::env::var_os("PULL_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
}

async fn orchestrate(args: &[String]) -> Result<()> {
    let o = parse_opts(args)?;
    println!(
        "machine: {} cores, load average at start {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average()
    );
    let mut pull_rows = Vec::new();
    let mut reconnect_rows = Vec::new();
    for &n in &o.sizes {
        let tmp = tempfile::Builder::new()
            .prefix("pull-bench-")
            .tempdir_in(base_dir())?;
        let dir = tmp
            .path()
            .to_str()
            .ok_or_else(|| anyhow!("path"))?
            .to_owned();
        let d = dir.clone();
        let s = tokio::task::spawn_blocking(move || {
            run_child(&["seed", &d, &n.to_string()], Duration::from_secs(3600))
        })
        .await??;
        eprintln!("{n}: seeded in {}", secs(get(&s, "seed_ms")));
        let ours: HashMap<String, String> =
            sync_once(&dir, Duration::ZERO).await?.into_iter().collect();
        eprintln!("{n}: sellsync {ours:?} (load {})", load_average());
        let theirs: Option<HashMap<String, String>> = if o.samod {
            let r = samod_once(&dir, o.samod_timeout).await?;
            let r: HashMap<String, String> = r.into_iter().collect();
            eprintln!("{n}: samod {r:?} (load {})", load_average());
            Some(r)
        } else {
            None
        };
        pull_rows.push((n, ours, theirs, load_average()));
        if n == o.reconnect {
            let edits = 50;
            let d = dir.clone();
            tokio::task::spawn_blocking(move || -> Result<()> {
                run_child(
                    &[
                        "edit",
                        &format!("{d}/{PHONE}.redb"),
                        "0",
                        &edits.to_string(),
                    ],
                    Duration::from_secs(600),
                )?;
                run_child(
                    &[
                        "edit",
                        &format!("{d}/hub.redb"),
                        &edits.to_string(),
                        &edits.to_string(),
                    ],
                    Duration::from_secs(600),
                )?;
                Ok(())
            })
            .await??;
            let changed: Vec<serde_json::Value> = (0..2 * edits)
                .map(|i| {
                    let mut m = serde_json::Map::new();
                    m.insert("id".into(), deal_id(i).to_string().into());
                    for (k, v) in edited_fields(i, 1) {
                        m.insert(k.into(), v);
                    }
                    serde_json::Value::Object(m)
                })
                .collect();
            let json = serde_json::to_vec(&changed)?;
            let gz = gzip_len(&json)?;
            let r: HashMap<String, String> =
                sync_once(&dir, o.rtt / 2).await?.into_iter().collect();
            eprintln!("reconnect: {r:?}");
            reconnect_rows.push((n, r, json.len(), gz, load_average()));
        }
    }
    let fanout = if o.fanout.0 > 0 {
        Some(fanout_run(o.fanout.0, o.fanout.1).await?)
    } else {
        None
    };

    println!();
    println!(
        "| deals | sellsync time | bytes on the wire (to device / to hub) | data frames | legs (round trips) | hub peak RSS | device peak RSS | samod 0.16 time | samod bytes (to device / to hub) | samod hub / device peak RSS | speed-up |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (n, ours, theirs, _) in &pull_rows {
        let ok = get(ours, "finished") == "true" && get(ours, "held") == n.to_string();
        let (st, sb, sr, ratio) = match theirs {
            None => (
                "not run".to_owned(),
                String::new(),
                String::new(),
                String::new(),
            ),
            Some(t) => {
                let time = if get(t, "done") == "true" {
                    secs(get(t, "ms"))
                } else {
                    format!(
                        "stopped at {}: {} of {n} docs found",
                        secs(get(t, "ms")),
                        get(t, "progress")
                    )
                };
                let ours_ms: f64 = get(ours, "ms").parse().unwrap_or(f64::NAN);
                let theirs_ms: f64 = get(t, "ms").parse().unwrap_or(f64::NAN);
                let ratio = if get(t, "done") == "true" {
                    format!("{:.0}×", theirs_ms / ours_ms)
                } else {
                    format!("> {:.0}×", theirs_ms / ours_ms)
                };
                (
                    time,
                    format!("{} / {}", get(t, "down"), get(t, "up")),
                    format!(
                        "{} / {}",
                        mib(get(t, "hub_hwm_kib")),
                        mib(get(t, "dev_hwm_kib"))
                    ),
                    ratio,
                )
            }
        };
        println!(
            "| {n} | {}{} | {} / {} | {} | {} ({}) | {} | {} | {st} | {sb} | {sr} | {ratio} |",
            secs(get(ours, "ms")),
            if ok { "" } else { " (INCOMPLETE)" },
            get(ours, "down"),
            get(ours, "up"),
            get(ours, "frames"),
            get(ours, "legs"),
            get(ours, "round_trips"),
            mib(get(ours, "hub_hwm_kib")),
            mib(get(ours, "dev_hwm_kib")),
        );
    }
    for (n, r, json, gz, _) in &reconnect_rows {
        let down: u64 = get(r, "down").parse().unwrap_or(0);
        let up: u64 = get(r, "up").parse().unwrap_or(0);
        println!();
        println!("| reconnect ({n} held, 50 + 50 deals changed, 3 fields each) | result | goal |");
        println!("|---|---|---|");
        println!(
            "| time, simulated round trip {} ms | {} | |",
            o.rtt.as_millis(),
            secs(get(r, "ms"))
        );
        println!(
            "| legs (round trips), WebSocket upgrade not counted | {} ({}) | ≤ 3 round trips |",
            get(r, "legs"),
            get(r, "round_trips")
        );
        println!(
            "| bytes on the wire (to device / to hub / total) | {down} / {up} / {} | ≤ {} (2 × gzip) |",
            down + up,
            2 * gz
        );
        println!("| changed values as JSON / gzipped | {json} / {gz} | |");
        println!(
            "| documents received by the device | {} | 50 |",
            get(r, "changed")
        );
    }
    if let Some(f) = fanout {
        println!();
        println!("{f}");
    }
    println!();
    println!("load average at the end: {}", load_average());
    Ok(())
}

/// The fan-out case: a hub with `devices` enrolled devices (one user each), every device
/// creating `changes` deals offline and all of them syncing at once.
async fn fanout_run(devices: usize, changes: usize) -> Result<String> {
    let tmp = tempfile::Builder::new()
        .prefix("pull-bench-fanout-")
        .tempdir_in(base_dir())?;
    let dir = tmp
        .path()
        .to_str()
        .ok_or_else(|| anyhow!("path"))?
        .to_owned();
    // The hub: the catalog, no deals, one token per device; users 100.. (not admins, no team).
    {
        let store = Arc::new(Store::open(tmp.path().join("hub.redb"))?);
        Node::init(&store, &hub_identity()?)?;
        let mut node = open_node(store.clone(), Some(acl()?))?;
        node.write_catalog(&fanout_catalog(devices), T0)?;
        let mut list = String::new();
        for k in 0..devices {
            let dev: DeviceId = format!("dev-{k}").parse()?;
            let user = UserId(100 + k as u64);
            let issued = store.write(|w| w.issue_token(user, &dev, T0, None))?;
            let full = token::format(node.id(), user, &dev, &issued.token);
            list.push_str(&format!("{dev} {} {full}\n", user.0));
        }
        std::fs::write(tmp.path().join("devices"), list)?;
    }
    let hub = spawn_child(&["hub", &dir])?;
    let port: u16 = get(&hub.next_line(Duration::from_secs(120))?, "port").parse()?;
    let url = format!("ws://127.0.0.1:{port}/");
    let d = dir.clone();
    let c = changes.to_string();
    let r = tokio::task::spawn_blocking(move || {
        run_child(&["fanout-devices", &d, &url, &c], Duration::from_secs(3600))
    })
    .await??;
    let h = tokio::task::spawn_blocking(move || hub.finish(Duration::from_secs(60))).await??;
    let held = Store::open(tmp.path().join("hub.redb"))?
        .read()?
        .changed_since(0, usize::MAX)?
        .len();
    let ms: f64 = get(&r, "ms").parse().unwrap_or(f64::NAN);
    let total = devices * changes;
    Ok(format!(
        "| fan-out: {devices} devices × {changes} new deals, all syncing at once | result |\n|---|---|\n| time until every session ended | {} |\n| sessions finished / failed | {} / {} |\n| changes per second at the hub | {:.0} |\n| documents at the hub afterwards | {held} (expected {}) |\n| hub peak RSS | {} |\n| devices' process peak RSS (all {devices} in one process) | {} |",
        secs(get(&r, "ms")),
        get(&r, "finished"),
        get(&r, "failed"),
        total as f64 / (ms / 1e3),
        total + 1,
        mib(get(&h, "hwm_kib")),
        mib(get(&r, "hwm_kib")),
    ))
}
