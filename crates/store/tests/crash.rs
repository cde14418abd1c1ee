//! The kill -9 campaign: every write acknowledged to the caller survives a crash at any moment.
//!
//! Guards against acknowledging a write before its redb commit is durable (for instance a
//! document change kept in the cache but not yet written, or a commit without fsync).
//!
//! A child process (this test binary re-run on the ignored `crash_child` test) runs a
//! write-heavy loop over documents (through the cache, single and batched, with frequent
//! compactions), the feed, the id index, sync states and the key-value table, and prints one line per acknowledged write. The
//! parent kills it with SIGKILL at a random moment, reopens the store, checks that it opens
//! cleanly and holds every acknowledged write, and starts the next trial on the same file.
//!
//! `SELLSYNC_STORE_CRASH_TRIALS` (default 20) sets the number of trials and
//! `SELLSYNC_STORE_CRASH_SEED` replays a run (the seed is printed).

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use automerge::ActorId;
use common::{get_int, put_int, rid};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sellsync_model::DeviceId;
use sellsync_store::{CrmId, Docs, Store, StoreOptions, StoreRead};

const CHILD_ENV: &str = "SELLSYNC_STORE_CRASH_CHILD";
const START_ENV: &str = "SELLSYNC_STORE_CRASH_START";
/// Upper bound of writes per child run; a run normally dies long before.
const MAX_WRITES: u64 = 200_000;
const DOCS: u64 = 40;

fn doc_name(i: u64) -> String {
    format!("d{}", i % DOCS)
}

/// The child: writes until killed, printing a line after each acknowledged write.
#[test]
#[ignore = "child process of crashed_writers_lose_no_acknowledged_write"]
fn crash_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let start: u64 = std::env::var(START_ENV).unwrap().parse().unwrap();
    // Compact often, so that kills also land in compactions.
    let options = StoreOptions {
        compact_max_chunks: 8,
        ..StoreOptions::default()
    };
    let store = Arc::new(Store::open_with(&path, options).unwrap());
    let mut docs = Docs::new(store.clone(), 256 << 10);
    docs.set_actor(ActorId::from(format!("child-{start}").as_bytes()));
    let peer: DeviceId = "peer".parse().unwrap();
    for i in start..start + MAX_WRITES {
        let d = doc_name(i);
        docs.with_doc_mut(&rid(&d), "deal", |doc| {
            put_int(doc, &format!("k{i}"), i as i64)
        })
        .unwrap();
        println!("DOC {d} {i}");
        if i % 3 == 0 {
            let key = format!("cursor{}", i % 5);
            store.write(|w| w.kv_put(&key, &i.to_le_bytes())).unwrap();
            println!("KV {key} {i}");
        }
        if i % 4 == 0 {
            let crm = CrmId {
                kind: "deal".into(),
                id: i,
            };
            store
                .write(|w| w.map_crm_id(&rid(&format!("r{i}")), &crm))
                .unwrap();
            println!("IDX r{i} {i}");
        }
        if i % 10 == 0 {
            let (a, b) = (doc_name(i + 1), doc_name(i + 2));
            docs.batch(|batch| {
                for d in [&a, &b] {
                    batch.with_doc_mut(&rid(d), "deal", |doc| {
                        put_int(doc, &format!("b{i}"), i as i64)
                    })?;
                    batch
                        .store()
                        .put_sync_state(&peer, &rid(d), &i.to_le_bytes())?;
                }
                batch.store().set_peer_ours(&peer, i)
            })
            .unwrap();
            println!("BATCH {a} {b} {i}");
        }
    }
}

/// What the children acknowledged, in a form easy to check.
#[derive(Default)]
struct Acked {
    /// (doc, key) -> value
    doc_keys: Vec<(String, String, i64)>,
    /// kv key -> last acknowledged value (later, unacknowledged writes may hold a larger one)
    kv: BTreeMap<String, u64>,
    index: Vec<(String, u64)>,
    /// highest acknowledged peer checkpoint
    peer_ours: u64,
}

impl Acked {
    fn record(&mut self, line: &str) -> bool {
        // The test harness may print "test crash_child ... " on the same line first.
        let line = line.rsplit(" ... ").next().unwrap_or(line);
        let parts: Vec<&str> = line.split_whitespace().collect();
        match parts.as_slice() {
            ["DOC", d, i] => {
                self.doc_keys
                    .push((d.to_string(), format!("k{i}"), i.parse().unwrap()));
            }
            ["KV", k, i] => {
                self.kv.insert(k.to_string(), i.parse().unwrap());
            }
            ["IDX", r, i] => self.index.push((r.to_string(), i.parse().unwrap())),
            ["BATCH", a, b, i] => {
                let v: i64 = i.parse().unwrap();
                self.doc_keys.push((a.to_string(), format!("b{i}"), v));
                self.doc_keys.push((b.to_string(), format!("b{i}"), v));
                self.peer_ours = self.peer_ours.max(v as u64);
            }
            _ => return false,
        }
        true
    }

    fn check(&self, path: &Path) {
        let mut store = Store::open(path).expect("store reopens after kill -9");
        assert!(
            store.check_integrity().unwrap(),
            "redb integrity check failed"
        );
        let store = Arc::new(store);
        let view = store.read().unwrap();
        for (k, v) in &self.kv {
            let got = view.kv_get(k).unwrap().expect("acknowledged kv entry");
            let got = u64::from_le_bytes(got.try_into().unwrap());
            assert!(got >= *v, "kv {k}: acknowledged {v}, found older {got}");
        }
        for (r, i) in &self.index {
            assert_eq!(
                view.record_for_crm("deal", *i).unwrap(),
                Some(rid(r)),
                "index {r}"
            );
        }
        let peer: DeviceId = "peer".parse().unwrap();
        assert!(view.peer_checkpoint(&peer).unwrap().ours >= self.peer_ours);
        // Each document is in the feed exactly once.
        let feed = view.changed_since(0, usize::MAX).unwrap();
        let mut in_feed: Vec<_> = feed.iter().map(|e| e.record.to_string()).collect();
        in_feed.sort();
        in_feed.dedup();
        assert_eq!(
            in_feed.len(),
            feed.len(),
            "a document appears twice in the feed"
        );
        drop(view);
        let mut docs = Docs::new(store, 64 << 20);
        for (d, k, v) in &self.doc_keys {
            let got = docs.with_doc(&rid(d), |doc| get_int(doc, k)).unwrap();
            assert_eq!(got, Some(Some(*v)), "document {d} lost acknowledged {k}");
            assert!(in_feed.contains(d), "document {d} missing from the feed");
        }
    }
}

#[test]
fn crashed_writers_lose_no_acknowledged_write() {
    let trials: u64 = std::env::var("SELLSYNC_STORE_CRASH_TRIALS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("SELLSYNC_STORE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5e11_5711);
    println!("kill -9 campaign: {trials} trials, SELLSYNC_STORE_CRASH_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.redb");
    let exe = std::env::current_exe().unwrap();
    let mut acked = Acked::default();
    for trial in 0..trials {
        let stderr_path = dir.path().join(format!("child-{trial}.stderr"));
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &path)
            .env(START_ENV, (trial * 1_000_000).to_string())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Wait for the first acknowledged write (bounded), then let it run a random while.
        let mut lines = Vec::new();
        loop {
            match rx.recv_timeout(Duration::from_secs(120)) {
                Ok(line) => {
                    let is_ack = acked.record(&line);
                    lines.push(line);
                    if is_ack {
                        break;
                    }
                }
                Err(e) => {
                    let _ = child.kill();
                    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                    panic!("trial {trial}: child wrote nothing ({e}); stderr:\n{stderr}");
                }
            }
        }
        let delay = Duration::from_millis(rng.random_range(0..400));
        std::thread::sleep(delay);
        let exited_early = child.try_wait().unwrap();
        child.kill().unwrap_or(()); // SIGKILL on unix
        let status = child.wait().unwrap();
        reader.join().unwrap();
        let mut n = 0;
        for line in rx.try_iter() {
            if acked.record(&line) {
                n += 1;
            }
        }
        if let Some(st) = exited_early
            && !st.success()
        {
            let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            panic!("trial {trial}: child failed on its own ({st}); stderr:\n{stderr}");
        }
        println!(
            "trial {trial}: killed after {delay:?} ({status}), {} acks",
            n + 1
        );
        acked.check(&path);
    }
    assert!(!acked.doc_keys.is_empty());
}

const HOLD_ENV: &str = "SELLSYNC_STORE_HOLD_CHILD";

/// The child of the two-process test: opens the store, says so, and holds it until stdin closes.
#[test]
#[ignore = "child process of a_store_open_in_another_process_cannot_be_opened_again"]
fn hold_child() {
    let Ok(path) = std::env::var(HOLD_ENV) else {
        return;
    };
    let store = Store::open(&path).unwrap();
    store.write(|w| w.kv_put("held", b"yes")).unwrap();
    println!("OPEN");
    let mut sink = String::new();
    while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {}
    drop(store);
}

#[test]
fn a_store_open_in_another_process_cannot_be_opened_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("held.redb");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "hold_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HOLD_ENV, &path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let opened = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.ends_with("OPEN"));
    assert!(opened, "child did not open the store");
    let err = Store::open(&path).unwrap_err();
    assert!(
        matches!(err, sellsync_store::StoreError::AlreadyOpen { .. }),
        "{err}"
    );
    // Nothing was damaged: once the holder exits, the store opens with its data.
    drop(child.stdin.take());
    lines.for_each(drop);
    assert!(child.wait().unwrap().success());
    let store = Store::open(&path).unwrap();
    assert_eq!(
        store.read().unwrap().kv_get("held").unwrap(),
        Some(b"yes".to_vec())
    );
}
