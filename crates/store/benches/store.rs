//! Store benchmarks: durable single writes, batched writes, and a 10,000-deal store opened and
//! read through a bounded cache. Prints a markdown table (see docs/benchmarks.md, "## Store").
//!
//! Run: `cargo bench -p sellsync-store --bench store` (add `-- N` to change the deal count).

use std::sync::Arc;
use std::time::Instant;

use automerge::transaction::Transactable;
use automerge::{ActorId, Automerge, AutomergeError, ObjType, ROOT, ReadDoc, ScalarValue};
use sellsync_model::RecordId;
use sellsync_store::{Docs, Store, StoreRead};

/// Peak and current resident set size of this process, in MiB (Linux; 0 elsewhere).
fn rss_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A deal-like document: 15 fields written as register objects {value, at, by}.
fn write_deal(doc: &mut Automerge, n: u64, at: i64) {
    doc.transact::<_, _, AutomergeError>(|tx| {
        let fields = tx.put_object(ROOT, "fields", ObjType::Map)?;
        for f in 0..15 {
            let reg = tx.put_object(&fields, format!("field{f}"), ObjType::Map)?;
            tx.put(&reg, "value", format!("value {n} {f}"))?;
            tx.put(&reg, "at", ScalarValue::Timestamp(at))?;
            tx.put(&reg, "by", "user-1")?;
        }
        Ok(())
    })
    .map_err(|f| f.error)
    .expect("write deal");
}

fn edit_field(doc: &mut Automerge, field: u64, at: i64) {
    doc.transact::<_, _, AutomergeError>(|tx| {
        let fields = match tx.get(ROOT, "fields")? {
            Some((_, id)) => id,
            None => tx.put_object(ROOT, "fields", ObjType::Map)?,
        };
        let reg = tx.put_object(&fields, format!("field{field}"), ObjType::Map)?;
        tx.put(&reg, "value", format!("edited {at}"))?;
        tx.put(&reg, "at", ScalarValue::Timestamp(at))?;
        tx.put(&reg, "by", "user-2")?;
        Ok(())
    })
    .map_err(|f| f.error)
    .expect("edit field");
}

fn rid(i: u64) -> RecordId {
    format!("deal-{i}").parse().expect("valid id")
}

fn main() {
    let deals: u64 = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bench.redb");
    let actor = ActorId::from(b"bench-device".as_slice());
    println!("| measurement | result |");
    println!("|---|---|");

    // 1. Create `deals` deals in batches of 1,000 documents per transaction.
    {
        let store = Arc::new(Store::open(&path).expect("open"));
        let mut docs = Docs::new(store.clone(), 32 << 20);
        docs.set_actor(actor.clone());
        let t = Instant::now();
        for chunk in 0..deals.div_ceil(1000) {
            docs.batch(|b| {
                for i in chunk * 1000..((chunk + 1) * 1000).min(deals) {
                    b.with_doc_mut(&rid(i), "deal", |d| write_deal(d, i, 1_700_000_000_000))?;
                }
                Ok(())
            })
            .expect("batch");
        }
        let el = t.elapsed();
        println!(
            "| create {deals} deals, 1,000 per transaction | {:.2} s ({:.0} docs/s) |",
            el.as_secs_f64(),
            deals as f64 / el.as_secs_f64()
        );

        // 2. Durable single edits through the cache (one fsync'd commit each).
        let n = 200;
        let t = Instant::now();
        for i in 0..n {
            docs.with_doc_mut(&rid(i % 50), "deal", |d| edit_field(d, i % 15, i as i64))
                .expect("edit");
        }
        let el = t.elapsed();
        println!(
            "| single durable edit via `with_doc_mut` (cached doc) | {:.2} ms mean over {n} |",
            el.as_secs_f64() * 1000.0 / n as f64
        );

        // 3. One batch editing 500 documents (3 fields each) plus a sync state per document.
        let peer = "hub".parse().expect("peer id");
        let t = Instant::now();
        docs.batch(|b| {
            for i in 0..500 {
                b.with_doc_mut(&rid(i * 7 % deals), "deal", |d| {
                    for f in 0..3 {
                        edit_field(d, f, 10_000 + i as i64);
                    }
                })?;
                b.store()
                    .put_sync_state(&peer, &rid(i * 7 % deals), &[0u8; 34])?;
            }
            Ok(())
        })
        .expect("batch edit");
        println!(
            "| one transaction: 500 docs x 3 field edits + 500 sync states | {:.0} ms |",
            t.elapsed().as_secs_f64() * 1000.0
        );
    }
    let file_mib = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0) as f64 / 1048576.0;
    println!("| store file for {deals} deals | {file_mib:.1} MiB |");

    // 4. Reopen: no document is loaded; then read every deal through an 8 MiB cache.
    let (rss_before, _) = rss_mib();
    let t = Instant::now();
    let store = Arc::new(Store::open(&path).expect("reopen"));
    let open_ms = t.elapsed().as_secs_f64() * 1000.0;
    let (rss_open, _) = rss_mib();
    println!(
        "| reopen the store | {open_ms:.1} ms, RSS +{:.1} MiB |",
        rss_open - rss_before
    );
    let t = Instant::now();
    let feed = store
        .read()
        .expect("read")
        .changed_since(0, usize::MAX)
        .expect("feed");
    println!(
        "| `changed_since(0)` over {} documents | {:.1} ms |",
        feed.len(),
        t.elapsed().as_secs_f64() * 1000.0
    );
    let mut docs = Docs::new(store.clone(), 8 << 20);
    let t = Instant::now();
    let mut heads = 0usize;
    for i in 0..deals {
        heads += docs
            .with_doc(&rid(i), |d| d.get_heads().len())
            .expect("load")
            .unwrap_or(0);
    }
    let el = t.elapsed();
    let (rss_after, _) = rss_mib();
    let stats = docs.stats();
    println!(
        "| load all {deals} deals through an 8 MiB cache | {:.2} s ({:.0} µs/doc), {} evictions, {} cached ({:.1} MiB est.), RSS {:.0} MiB (+{:.0}) |",
        el.as_secs_f64(),
        el.as_secs_f64() * 1e6 / deals as f64,
        stats.evictions,
        docs.cached(),
        docs.cached_bytes() as f64 / 1048576.0,
        rss_after,
        rss_after - rss_open,
    );
    assert_eq!(heads as u64, deals, "every deal loaded");
}
