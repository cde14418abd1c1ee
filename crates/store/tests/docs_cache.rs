//! The document cache: loading on demand, eviction under the budget, write-through.

mod common;

use std::sync::Arc;

use automerge::{ActorId, Automerge};
use common::{change_bytes, get_int, put_int, rid};
use sellsync_model::DeviceId;
use sellsync_store::{Docs, Store, StoreError, StoreRead, estimate_memory};

fn open(dir: &tempfile::TempDir) -> Arc<Store> {
    Arc::new(Store::open(dir.path().join("s.redb")).unwrap())
}

#[test]
fn opening_a_store_of_ten_thousand_documents_loads_none_of_them() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(&dir);
        let mut doc = Automerge::new();
        let bytes = change_bytes(&mut doc, "amount", 100);
        store
            .write(|w| {
                for i in 0..10_000 {
                    w.append_doc_changes(&rid(&format!("deal-{i}")), "deal", &bytes)?;
                }
                Ok(())
            })
            .unwrap();
    }
    let store = open(&dir);
    let mut docs = Docs::new(store.clone(), 1 << 20);
    assert_eq!(docs.cached(), 0);
    assert_eq!(docs.stats().loads, 0);
    assert_eq!(store.read().unwrap().doc_count().unwrap(), 10_000);
    let v = docs
        .with_doc(&rid("deal-9999"), |d| get_int(d, "amount"))
        .unwrap();
    assert_eq!(v, Some(Some(100)));
    assert_eq!(docs.stats().loads, 1);
    assert_eq!(docs.cached(), 1);
    assert_eq!(docs.with_doc(&rid("nope"), |_| ()).unwrap(), None);
}

#[test]
fn least_recently_used_documents_are_evicted_to_stay_under_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let one = estimate_memory(200);
    let mut docs = Docs::new(store, 3 * one);
    for i in 0..10 {
        docs.with_doc_mut(&rid(&format!("d{i}")), "deal", |d| put_int(d, "v", i))
            .unwrap();
        assert!(
            docs.cached_bytes() <= 3 * one,
            "over budget after write {i}"
        );
    }
    assert!(docs.cached() <= 3);
    assert!(docs.stats().evictions >= 7);
    // The most recent one stays; the oldest one is reloaded from the store with its content.
    assert!(docs.is_cached(&rid("d9")));
    assert!(!docs.is_cached(&rid("d0")));
    let loads = docs.stats().loads;
    assert_eq!(
        docs.with_doc(&rid("d0"), |d| get_int(d, "v")).unwrap(),
        Some(Some(0))
    );
    assert_eq!(docs.stats().loads, loads + 1);
    // Touching d0 made it recent: writing others now evicts something else.
    docs.with_doc_mut(&rid("d1"), "deal", |d| put_int(d, "v", 11))
        .unwrap();
    assert!(docs.is_cached(&rid("d0")));
}

#[test]
fn lowering_the_budget_evicts_the_least_recently_used_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let one = estimate_memory(200);
    let mut docs = Docs::new(store, 10 * one);
    for i in 0..6 {
        docs.with_doc_mut(&rid(&format!("d{i}")), "deal", |d| put_int(d, "v", i))
            .unwrap();
    }
    assert_eq!(docs.cached(), 6);
    docs.set_budget(2 * one);
    assert_eq!(docs.budget(), 2 * one);
    assert!(docs.cached_bytes() <= 2 * one);
    assert!(docs.is_cached(&rid("d5")), "the most recent stays");
    assert!(!docs.is_cached(&rid("d0")), "the oldest goes");
    // Evicted documents are still in the store.
    let v = docs.with_doc(&rid("d0"), |d| get_int(d, "v")).unwrap();
    assert_eq!(v, Some(Some(0)));
}

#[test]
fn a_single_document_larger_than_the_budget_still_works() {
    let dir = tempfile::tempdir().unwrap();
    let mut docs = Docs::new(open(&dir), 1);
    docs.with_doc_mut(&rid("big"), "deal", |d| put_int(d, "v", 1))
        .unwrap();
    assert_eq!(
        docs.with_doc(&rid("big"), |d| get_int(d, "v")).unwrap(),
        Some(Some(1))
    );
}

#[test]
fn changes_are_durable_when_with_doc_mut_returns() {
    let dir = tempfile::tempdir().unwrap();
    let heads = {
        let store = open(&dir);
        let mut docs = Docs::new(store.clone(), 1 << 20);
        docs.with_doc_mut(&rid("d"), "deal", |d| put_int(d, "a", 1))
            .unwrap();
        docs.with_doc_mut(&rid("d"), "deal", |d| put_int(d, "b", 2))
            .unwrap();
        let heads = docs
            .with_doc(&rid("d"), |d| d.get_heads())
            .unwrap()
            .unwrap();
        assert_eq!(store.read().unwrap().feed_head().unwrap(), 2);
        heads
    };
    let store = open(&dir);
    let (meta, doc) = store.read().unwrap().load_doc(&rid("d")).unwrap().unwrap();
    assert_eq!(meta.kind, "deal");
    assert_eq!(doc.get_heads(), heads);
    assert_eq!(
        meta.heads,
        Some(heads),
        "writes through the cache record the heads"
    );
    assert_eq!((get_int(&doc, "a"), get_int(&doc, "b")), (Some(1), Some(2)));
}

#[test]
fn a_new_document_left_unchanged_is_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let mut docs = Docs::new(store.clone(), 1 << 20);
    docs.with_doc_mut(&rid("d"), "deal", |_| ()).unwrap();
    assert!(!docs.is_cached(&rid("d")));
    assert_eq!(store.read().unwrap().doc_count().unwrap(), 0);
    assert_eq!(store.read().unwrap().feed_head().unwrap(), 0);
}

#[test]
fn loaded_documents_take_the_configured_actor() {
    let dir = tempfile::tempdir().unwrap();
    let actor = ActorId::from(b"device-A".as_slice());
    let mut docs = Docs::new(open(&dir), 1 << 20);
    docs.set_actor(actor.clone());
    docs.with_doc_mut(&rid("d"), "deal", |d| put_int(d, "a", 1))
        .unwrap();
    docs.clear();
    docs.with_doc_mut(&rid("d"), "deal", |d| put_int(d, "a", 2))
        .unwrap();
    let actors = docs
        .with_doc(&rid("d"), |d| {
            d.get_changes(&[])
                .iter()
                .map(|c| c.actor_id().clone())
                .collect::<Vec<_>>()
        })
        .unwrap()
        .unwrap();
    assert_eq!(actors, vec![actor.clone(), actor]);
}

#[test]
fn a_failed_batch_drops_the_cached_copies_it_touched() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let mut docs = Docs::new(store.clone(), 1 << 20);
    docs.with_doc_mut(&rid("a"), "deal", |d| put_int(d, "v", 1))
        .unwrap();
    docs.with_doc_mut(&rid("b"), "deal", |d| put_int(d, "v", 1))
        .unwrap();
    let err = docs
        .batch(|b| {
            b.with_doc_mut(&rid("a"), "deal", |d| put_int(d, "v", 2))?;
            b.store().kv_put("k", b"v")?;
            b.with_doc_mut(&rid("b"), "contact", |d| put_int(d, "v", 2))
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::KindMismatch { .. }), "{err}");
    assert!(!docs.is_cached(&rid("a")));
    assert_eq!(
        docs.with_doc(&rid("a"), |d| get_int(d, "v")).unwrap(),
        Some(Some(1))
    );
    assert_eq!(store.read().unwrap().kv_get("k").unwrap(), None);
    assert_eq!(store.read().unwrap().feed_head().unwrap(), 2);
    assert!(docs.stats().invalidations >= 1);
}

#[test]
fn a_batch_writes_several_documents_and_sync_states_in_one_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let mut docs = Docs::new(store.clone(), 1 << 20);
    let peer: DeviceId = "hub".parse().unwrap();
    docs.batch(|b| {
        for i in 0..5 {
            let id = rid(&format!("d{i}"));
            b.with_doc_mut(&id, "deal", |d| put_int(d, "v", i))?;
            b.store().put_sync_state(&peer, &id, &[i as u8])?;
        }
        b.store().set_peer_ours(&peer, 5)
    })
    .unwrap();
    let view = store.read().unwrap();
    assert_eq!(view.changed_since(0, 10).unwrap().len(), 5);
    assert_eq!(view.sync_state(&peer, &rid("d3")).unwrap(), Some(vec![3]));
}

#[test]
fn writes_made_around_the_cache_are_picked_up() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let mut docs = Docs::new(store.clone(), 1 << 20);
    docs.with_doc_mut(&rid("d"), "deal", |d| put_int(d, "v", 1))
        .unwrap();
    // Another component changes the document directly in the store.
    let (_, mut other) = store.read().unwrap().load_doc(&rid("d")).unwrap().unwrap();
    let bytes = change_bytes(&mut other, "v", 2);
    store
        .write(|w| w.append_doc_changes(&rid("d"), "deal", &bytes))
        .unwrap();
    assert_eq!(
        docs.with_doc(&rid("d"), |d| get_int(d, "v")).unwrap(),
        Some(Some(2))
    );
    docs.with_doc_mut(&rid("d"), "deal", |d| put_int(d, "w", 3))
        .unwrap();
    let (_, reloaded) = store.read().unwrap().load_doc(&rid("d")).unwrap().unwrap();
    assert_eq!(
        (get_int(&reloaded, "v"), get_int(&reloaded, "w")),
        (Some(2), Some(3))
    );
}

#[test]
fn many_writes_through_the_cache_stay_compact_and_loadable() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let mut docs = Docs::new(store.clone(), 1 << 20);
    for i in 0..300 {
        docs.with_doc_mut(&rid("d"), "deal", |d| {
            put_int(d, &format!("k{}", i % 10), i)
        })
        .unwrap();
    }
    let meta = store.read().unwrap().doc_meta(&rid("d")).unwrap().unwrap();
    assert!(meta.chunk_count <= store.options().compact_max_chunks);
    assert!(meta.snapshot_bytes > 0, "compaction ran");
    let (_, doc) = store.read().unwrap().load_doc(&rid("d")).unwrap().unwrap();
    assert_eq!(get_int(&doc, "k9"), Some(299));
}
