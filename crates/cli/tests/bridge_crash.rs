//! Crash campaign of the bridge: a hub store holds 185 changes (20 deals created offline, 135
//! field edits on 45 deals, 30 notes), and the other 5 demo deals were edited while deleted in
//! Zendesk, then restored (to be created again with their notes); `sellsync bridge sync` pushes
//! them to the simulator and is killed with SIGKILL at random moments, again and again, until a round completes. Then
//! Zendesk must hold every change exactly once: nothing lost, nothing duplicated.
//!
//! `SELLSYNC_CRASH_TRIALS` sets the number of trials (default 6; the full campaign is 50).

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sellsync_hub_bridge::{Bridge, BridgeConfig, ZendeskHttp};
use sellsync_model::{
    Conflict, Edit, FieldKey, Money, RecordChoice, RecordId, RecordKind, UserId, Value,
};
use sellsync_service::Node;
use sellsync_service::NodeError;
use sellsync_service::net::{SharedNode, now_ms};
use sellsync_sim::{Sim, SimConfig, demo_data, token_for};
use sellsync_store::{NodeIdentity, Role, Store, StoreRead};
use serde_json::Value as Json;

const ADMIN: u64 = 2;
const NEW_DEALS: usize = 20;
const EDITED_DEALS: usize = 45;
const NOTES: usize = 30;
const RESTORED: usize = 5;

/// A small deterministic generator (xorshift64*), seeded per trial.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

fn key(s: &str) -> FieldKey {
    FieldKey::std(s)
}

async fn list(url: &str, what: &str) -> Vec<Json> {
    let http = reqwest::Client::new();
    let mut out = Vec::new();
    for page in 1..100 {
        let j: Json = http
            .get(format!("{url}/v2/{what}?page={page}&per_page=100"))
            .bearer_auth(token_for(ADMIN))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let items = j["items"].as_array().cloned().unwrap_or_default();
        let n = items.len();
        out.extend(items.into_iter().map(|i| i["data"].clone()));
        if n < 100 {
            break;
        }
    }
    out
}

/// Imports the demo account into a new hub store and makes the changes on it.
async fn prepare(path: &std::path::Path, url: &str) -> Vec<u64> {
    let store = Arc::new(Store::open(path).unwrap());
    Node::init(
        &store,
        &NodeIdentity {
            device_id: "hub".parse().unwrap(),
            user_id: UserId(0),
            role: Role::Hub,
            hub_url: None,
            hub_token: None,
        },
    )
    .unwrap();
    let node: SharedNode = Arc::new(Mutex::new(Node::open(store, None).unwrap()));
    let bridge = Bridge::new(
        ZendeskHttp::new(url, &token_for(ADMIN), 0.0, Duration::from_secs(10)).unwrap(),
        node.clone(),
        BridgeConfig::default(),
    );
    bridge.import(&|_| {}).await.unwrap();
    bridge.pull().await.unwrap();
    let all: Vec<u64> = list(url, "deals")
        .await
        .iter()
        .filter_map(|d| d["id"].as_u64())
        .collect();
    let deals: Vec<u64> = all.iter().copied().take(EDITED_DEALS).collect();
    // Deals edited on the hub while deleted in Zendesk, then restored.
    let restored: Vec<u64> = all
        .iter()
        .copied()
        .skip(EDITED_DEALS)
        .take(RESTORED)
        .collect();
    let http = reqwest::Client::new();
    for (i, crm_id) in restored.iter().enumerate() {
        let id: RecordId = format!("zd-{crm_id}").parse().unwrap();
        node.lock()
            .unwrap()
            .apply(
                &id,
                "edited while deleted",
                &[
                    Edit::Set(key("name"), Value::Text(format!("Crash restored {i}"))),
                    Edit::AddNote {
                        id: format!("crash-restored-note-{i}").parse().unwrap(),
                        content: format!("Crash restored note {i}"),
                    },
                ],
                now_ms(),
            )
            .unwrap();
        let r = http
            .delete(format!("{url}/v2/deals/{crm_id}"))
            .bearer_auth(token_for(ADMIN))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
    bridge.pull().await.unwrap();
    let mut n = node.lock().unwrap();
    for crm_id in &restored {
        let id: RecordId = format!("zd-{crm_id}").parse().unwrap();
        let seen: Vec<String> = n
            .project(&id)
            .unwrap()
            .unwrap()
            .conflicts
            .iter()
            .find_map(|c| match c {
                Conflict::Record {
                    deleted_by,
                    restored_by,
                    ..
                } => Some(
                    deleted_by
                        .iter()
                        .chain(restored_by)
                        .map(|c| c.op.clone())
                        .collect(),
                ),
                _ => None,
            })
            .expect("a record conflict");
        n.act(&id, now_ms(), |rd, ctx| {
            rd.resolve_record(ctx, &seen, RecordChoice::Restore)
                .map_err(|e| NodeError::Refused(e.to_string()))
        })
        .unwrap();
    }
    let stage = *n.replica_ref().catalog().stages.keys().next().unwrap();
    for (i, crm_id) in deals.iter().enumerate() {
        let id: RecordId = format!("zd-{crm_id}").parse().unwrap();
        n.apply(
            &id,
            "offline edits",
            &[
                Edit::Set(key("name"), Value::Text(format!("Crash edit {crm_id}"))),
                Edit::Set(
                    key("value"),
                    Value::Money(Money::from_cents(100_000 + i as i64 * 100)),
                ),
                Edit::Set(key("hot"), Value::Bool(true)),
            ],
            now_ms(),
        )
        .unwrap();
        if i < NOTES {
            n.apply(
                &id,
                "a note",
                &[Edit::AddNote {
                    id: format!("crash-note-{i}").parse().unwrap(),
                    content: format!("Crash note {i}"),
                }],
                now_ms(),
            )
            .unwrap();
        }
    }
    for i in 0..NEW_DEALS {
        n.create(
            RecordKind::Deal,
            &format!("crash-new-{i}").parse().unwrap(),
            vec![
                (key("name"), Value::Text(format!("Crash new deal {i}"))),
                (
                    key("value"),
                    Value::Money(Money::from_cents(5_000 + i as i64)),
                ),
                (key("currency"), Value::Text("USD".into())),
                (key("stage_id"), Value::Ref(stage)),
            ],
            now_ms(),
        )
        .unwrap();
    }
    deals
}

fn bridge_sync(store: &std::path::Path, url: &str) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_sellsync"))
        .args([
            "bridge",
            "sync",
            "--json",
            "--zendesk-rate",
            "0",
            "--zendesk-url",
            url,
        ])
        .arg("--store")
        .arg(store)
        .env("SELLSYNC_ZENDESK_TOKEN", token_for(ADMIN))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

async fn trial(seed: u64) -> (u32, u32, u32) {
    sellsync_hub_bridge::install_crypto_provider();
    let sim = Sim::new(
        demo_data(),
        SimConfig {
            rate_limit_per_hour: 0,
            ..SimConfig::default()
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(sellsync_sim::serve(listener, sim.clone(), async move {
        let _ = stopped.await;
    }));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hub.redb");
    let deals_before = list(&url, "deals").await.len();
    let notes_before = list(&url, "notes").await.len();
    let edited = prepare(&path, &url).await;

    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut kills = 0;
    let mut mid_push = 0;
    let mut rounds = 0;
    // Kill rounds at random moments until one completes on its own (bounded).
    for _ in 0..60 {
        rounds += 1;
        let mut child = bridge_sync(&path, &url);
        let deadline = Instant::now() + Duration::from_millis(30 + rng.below(600));
        let mut finished = None;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                finished = Some(status);
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        match finished {
            Some(status) => {
                let out = child.wait_with_output().unwrap();
                assert!(
                    status.success(),
                    "seed {seed}: a round failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                break;
            }
            None => {
                child.kill().unwrap();
                child.wait().unwrap();
                kills += 1;
                // Was it pushing? (An interrupted push leaves its checkpoint.)
                let store = Store::open(&path).unwrap();
                if store
                    .read()
                    .unwrap()
                    .kv_get("bridge/push_run")
                    .unwrap()
                    .is_some()
                {
                    mid_push += 1;
                }
            }
        }
    }
    // A last round must complete and a further one find nothing to push.
    for _ in 0..2 {
        let out = bridge_sync(&path, &url).wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "seed {seed}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = bridge_sync(&path, &url).wait_with_output().unwrap();
    let last: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(last["pushed"], 0, "seed {seed}: {last}");

    // Nothing lost, nothing duplicated.
    let deals = list(&url, "deals").await;
    assert_eq!(deals.len(), deals_before + NEW_DEALS, "seed {seed}");
    for i in 0..NEW_DEALS {
        let name = format!("Crash new deal {i}");
        assert_eq!(
            deals.iter().filter(|d| d["name"] == name.as_str()).count(),
            1,
            "seed {seed}: {name}"
        );
    }
    // Each restored deal once (the deleted ones gone, so the count above holds), with its notes.
    for i in 0..RESTORED {
        let name = format!("Crash restored {i}");
        assert_eq!(
            deals.iter().filter(|d| d["name"] == name.as_str()).count(),
            1,
            "seed {seed}: {name} in {:?}",
            deals
                .iter()
                .map(|d| (&d["id"], &d["name"]))
                .collect::<Vec<_>>()
        );
    }
    for (i, crm_id) in edited.iter().enumerate() {
        let d = deals.iter().find(|d| d["id"] == *crm_id).unwrap();
        assert_eq!(d["name"], format!("Crash edit {crm_id}"), "seed {seed}");
        assert_eq!(d["hot"], true, "seed {seed}");
        let value = d["value"]
            .to_string()
            .trim_matches('"')
            .parse::<f64>()
            .unwrap();
        assert_eq!(value, 1000.0 + i as f64, "seed {seed}: deal {crm_id}");
    }
    let notes = list(&url, "notes").await;
    // The restored deals' notes were deleted with them and are created again, once each.
    assert_eq!(notes.len(), notes_before + NOTES + RESTORED, "seed {seed}");
    let restored_notes = (0..RESTORED).map(|i| format!("Crash restored note {i}"));
    for content in (0..NOTES)
        .map(|i| format!("Crash note {i}"))
        .chain(restored_notes)
    {
        assert_eq!(
            notes
                .iter()
                .filter(|n| n["content"] == content.as_str())
                .count(),
            1,
            "seed {seed}: {content}"
        );
    }
    let _ = stop.send(());
    (kills, mid_push, rounds)
}

#[test]
fn killing_the_bridge_mid_push_loses_and_duplicates_nothing() {
    let trials: u64 = std::env::var("SELLSYNC_CRASH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut total = 0;
    for seed in 1..=trials {
        let (kills, mid_push, rounds) = rt.block_on(trial(seed));
        eprintln!(
            "trial {seed}: {kills} kill(s), {mid_push} of them mid-push, in {rounds} round(s)"
        );
        total += mid_push;
    }
    // The campaign is meaningless if no push was ever interrupted.
    assert!(total > 0, "no push was killed");
}
