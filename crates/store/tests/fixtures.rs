//! Format compatibility: a store written by schema version 1 opens and reads the same.
//!
//! Guards against changing a table or a value layout without bumping the schema version and
//! migrating. `tests/fixtures/schema-v1.store` was written by `write_fixture` below; regenerate it
//! only together with a new schema version (set `SELLSYNC_STORE_WRITE_FIXTURE=1` and run the
//! ignored test).

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use automerge::ActorId;
use common::{get_int, put_int, rid};
use sellsync_model::{DeviceId, UserId};
use sellsync_store::{
    CrmId, Docs, NodeIdentity, NotificationFilter, Role, Shadow, Store, StoreRead,
};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/schema-v1.store")
}

fn peer() -> DeviceId {
    "hub".parse().unwrap()
}

#[test]
#[ignore = "writes the schema-v1 fixture; run with SELLSYNC_STORE_WRITE_FIXTURE=1"]
fn write_fixture() {
    if std::env::var("SELLSYNC_STORE_WRITE_FIXTURE").is_err() {
        return;
    }
    let path = fixture();
    let _ = std::fs::remove_file(&path);
    let store = Arc::new(Store::open(&path).unwrap());
    let mut docs = Docs::new(store.clone(), 1 << 20);
    docs.set_actor(ActorId::from(b"fixture".as_slice()));
    for i in 0..3 {
        docs.with_doc_mut(&rid(&format!("deal-{i}")), "deal", |d| {
            put_int(d, "amount", i * 100)
        })
        .unwrap();
    }
    store.write(|w| w.compact_doc(&rid("deal-0"))).unwrap();
    store
        .write(|w| {
            w.put_sync_state(&peer(), &rid("deal-1"), b"state")?;
            w.set_peer_ours(&peer(), 2)?;
            w.set_peer_theirs(&peer(), b"theirs")?;
            w.map_crm_id(
                &rid("deal-1"),
                &CrmId {
                    kind: "deal".into(),
                    id: 77,
                },
            )?;
            w.set_conflicts(&rid("deal-2"), Some(b"conflict view"))?;
            w.add_notification(UserId(5), 1_000, b"note")?;
            w.set_identity(&NodeIdentity {
                device_id: "hub".parse().unwrap(),
                user_id: UserId(1),
                role: Role::Hub,
                hub_url: None,
                hub_token: None,
            })?;
            w.kv_put("bridge/cursor", b"c")?;
            w.put_shadow(
                &rid("deal-1"),
                &Shadow {
                    crm_version: b"v".to_vec(),
                    heads: vec![],
                },
            )
        })
        .unwrap();
}

#[test]
fn a_schema_v1_store_opens_and_reads_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("copy.redb");
    std::fs::copy(fixture(), &path).unwrap();
    let store = Arc::new(Store::open(&path).unwrap());
    let view = store.read().unwrap();
    let feed = view.changed_since(0, 10).unwrap();
    assert_eq!(
        feed.iter()
            .map(|e| e.record.to_string())
            .collect::<Vec<_>>(),
        vec!["deal-0", "deal-1", "deal-2"]
    );
    assert_eq!(
        view.doc_meta(&rid("deal-0")).unwrap().unwrap().chunk_count,
        0
    );
    assert_eq!(
        view.sync_state(&peer(), &rid("deal-1")).unwrap(),
        Some(b"state".to_vec())
    );
    let cp = view.peer_checkpoint(&peer()).unwrap();
    assert_eq!((cp.ours, cp.theirs.as_slice()), (2, b"theirs".as_slice()));
    assert_eq!(
        view.record_for_crm("deal", 77).unwrap(),
        Some(rid("deal-1"))
    );
    assert_eq!(
        view.conflicts(&rid("deal-2")).unwrap(),
        Some(b"conflict view".to_vec())
    );
    let notes = view.notifications(&NotificationFilter::default()).unwrap();
    assert_eq!((notes.len(), notes[0].user), (1, UserId(5)));
    assert_eq!(view.identity().unwrap().unwrap().role, Role::Hub);
    assert_eq!(view.kv_get("bridge/cursor").unwrap(), Some(b"c".to_vec()));
    assert_eq!(
        view.shadow(&rid("deal-1")).unwrap().unwrap().crm_version,
        b"v"
    );
    drop(view);
    let mut docs = Docs::new(store, 1 << 20);
    for i in 0..3 {
        let v = docs
            .with_doc(&rid(&format!("deal-{i}")), |d| get_int(d, "amount"))
            .unwrap();
        assert_eq!(v, Some(Some(i * 100)));
    }
}
