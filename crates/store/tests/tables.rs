//! Round trips and invariants of each table, through the public API.

mod common;

use automerge::{Automerge, ChangeHash};
use common::{change_bytes, get_int, rid};
use sellsync_model::{DeviceId, UserId};
use sellsync_store::{
    CrmId, NodeIdentity, NotificationFilter, PeerCheckpoint, Role, SCHEMA_VERSION, Shadow, Store,
    StoreError, StoreOptions, StoreRead, TokenRejected,
};

fn open_temp() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("s.redb")).unwrap();
    (dir, store)
}

fn dev(s: &str) -> DeviceId {
    s.parse().unwrap()
}

#[test]
fn document_changes_round_trip_through_snapshot_and_chunks() {
    let (_dir, store) = open_temp();
    let id = rid("deal-1");
    let mut doc = Automerge::new();
    for i in 0..5 {
        let bytes = change_bytes(&mut doc, &format!("k{i}"), i);
        store
            .write(|w| w.append_doc_changes(&id, "deal", &bytes))
            .unwrap();
    }
    let (meta, loaded) = store.read().unwrap().load_doc(&id).unwrap().unwrap();
    assert_eq!(meta.kind, "deal");
    assert_eq!(meta.chunk_count, 5);
    assert_eq!(loaded.get_heads(), doc.get_heads());
    assert_eq!(get_int(&loaded, "k4"), Some(4));

    assert!(store.write(|w| w.compact_doc(&id)).unwrap());
    let view = store.read().unwrap();
    let meta2 = view.doc_meta(&id).unwrap().unwrap();
    assert_eq!(meta2.chunk_count, 0);
    assert_eq!(
        meta2.seq, meta.seq,
        "compaction does not move the document in the feed"
    );
    let (_, loaded) = view.load_doc(&id).unwrap().unwrap();
    assert_eq!(loaded.get_heads(), doc.get_heads());
    assert!(view.load_doc(&rid("missing")).unwrap().is_none());
}

#[test]
fn chunks_past_the_threshold_are_compacted_on_write() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        compact_max_chunks: 3,
        ..StoreOptions::default()
    };
    let store = Store::open_with(dir.path().join("s.redb"), options).unwrap();
    let id = rid("d");
    let mut doc = Automerge::new();
    for i in 0..10 {
        let bytes = change_bytes(&mut doc, "x", i);
        store
            .write(|w| w.append_doc_changes(&id, "deal", &bytes))
            .unwrap();
        let meta = store.read().unwrap().doc_meta(&id).unwrap().unwrap();
        assert!(
            meta.chunk_count <= 3,
            "chunk count {} after write {i}",
            meta.chunk_count
        );
    }
    let (_, loaded) = store.read().unwrap().load_doc(&id).unwrap().unwrap();
    assert_eq!(get_int(&loaded, "x"), Some(9));
    assert_eq!(loaded.get_heads(), doc.get_heads());
}

#[test]
fn a_document_keeps_its_kind_and_a_wrong_kind_changes_nothing() {
    let (_dir, store) = open_temp();
    let id = rid("c1");
    let mut doc = Automerge::new();
    let bytes = change_bytes(&mut doc, "a", 1);
    store
        .write(|w| w.append_doc_changes(&id, "contact", &bytes))
        .unwrap();
    let bytes = change_bytes(&mut doc, "a", 2);
    let err = store
        .write(|w| w.append_doc_changes(&id, "deal", &bytes))
        .unwrap_err();
    assert!(matches!(err, StoreError::KindMismatch { .. }), "{err}");
    let err = store
        .write(|w| w.append_doc_changes(&id, "", &bytes))
        .unwrap_err();
    assert!(matches!(err, StoreError::BadKind(_)), "{err}");
    let (meta, loaded) = store.read().unwrap().load_doc(&id).unwrap().unwrap();
    assert_eq!(meta.seq, 1);
    assert_eq!(get_int(&loaded, "a"), Some(1));
}

#[test]
fn garbage_snapshot_is_rejected_and_changes_nothing() {
    let (_dir, store) = open_temp();
    let err = store
        .write(|w| w.put_doc_snapshot(&rid("x"), "deal", b"not automerge"))
        .unwrap_err();
    assert!(matches!(err, StoreError::Document { .. }), "{err}");
    assert_eq!(store.read().unwrap().doc_count().unwrap(), 0);
    assert_eq!(store.read().unwrap().feed_head().unwrap(), 0);
}

#[test]
fn the_feed_lists_each_document_once_at_its_latest_seq_in_seq_order() {
    let (_dir, store) = open_temp();
    let (a, b, c) = (rid("a"), rid("b"), rid("c"));
    let mut docs = [Automerge::new(), Automerge::new(), Automerge::new()];
    let order = [(0, &a), (1, &b), (0, &a), (2, &c), (1, &b), (0, &a)];
    for (n, (i, id)) in order.iter().enumerate() {
        let bytes = change_bytes(&mut docs[*i], "n", n as i64);
        store
            .write(|w| w.append_doc_changes(id, "deal", &bytes))
            .unwrap();
    }
    let view = store.read().unwrap();
    assert_eq!(view.feed_head().unwrap(), 6);
    let all = view.changed_since(0, 100).unwrap();
    let got: Vec<(u64, &str)> = all.iter().map(|e| (e.seq, e.record.as_str())).collect();
    assert_eq!(got, vec![(4, "c"), (5, "b"), (6, "a")]);
    let page = view.changed_since(0, 2).unwrap();
    assert_eq!(page.len(), 2);
    let rest = view.changed_since(page[1].seq, 2).unwrap();
    assert_eq!(rest.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![6]);
    assert!(view.changed_since(6, 10).unwrap().is_empty());
    assert_eq!(all[0].kind, "deal");
}

#[test]
fn empty_changes_do_not_bump_the_feed() {
    let (_dir, store) = open_temp();
    let seq = store
        .write(|w| w.append_doc_changes(&rid("a"), "deal", &[]))
        .unwrap();
    assert_eq!(seq, None);
    assert_eq!(store.read().unwrap().feed_head().unwrap(), 0);
    assert_eq!(store.read().unwrap().doc_count().unwrap(), 0);
}

#[test]
fn several_documents_and_sync_states_commit_in_one_batch() {
    let (_dir, store) = open_temp();
    let peer = dev("hub");
    let ids: Vec<_> = (0..20).map(|i| rid(&format!("d{i}"))).collect();
    let mut docs: Vec<Automerge> = ids.iter().map(|_| Automerge::new()).collect();
    let changes: Vec<Vec<u8>> = docs.iter_mut().map(|d| change_bytes(d, "v", 1)).collect();
    store
        .write(|w| {
            for (i, id) in ids.iter().enumerate() {
                w.append_doc_changes(id, "deal", &changes[i])?;
                w.put_sync_state(&peer, id, &[i as u8; 3])?;
            }
            w.set_peer_ours(&peer, 20)
        })
        .unwrap();
    let view = store.read().unwrap();
    assert_eq!(view.changed_since(0, 100).unwrap().len(), 20);
    let states = view.sync_states(&peer, &ids[..3]).unwrap();
    assert_eq!(
        states,
        vec![Some(vec![0; 3]), Some(vec![1; 3]), Some(vec![2; 3])]
    );
    assert_eq!(view.sync_state(&dev("other"), &ids[0]).unwrap(), None);
    assert_eq!(view.peer_checkpoint(&peer).unwrap().ours, 20);
}

#[test]
fn a_failing_batch_writes_nothing() {
    let (_dir, store) = open_temp();
    let mut doc = Automerge::new();
    let bytes = change_bytes(&mut doc, "v", 1);
    let err = store
        .write(|w| {
            w.append_doc_changes(&rid("a"), "deal", &bytes)?;
            w.kv_put("k", b"v")?;
            w.append_doc_changes(&rid("a"), "contact", &bytes)
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::KindMismatch { .. }));
    let view = store.read().unwrap();
    assert_eq!(view.doc_count().unwrap(), 0);
    assert_eq!(view.kv_get("k").unwrap(), None);
    assert_eq!(view.feed_head().unwrap(), 0);
}

#[test]
fn peer_checkpoints_and_forgetting_a_peer() {
    let (_dir, store) = open_temp();
    let (p, q) = (dev("p"), dev("q"));
    assert_eq!(
        store.read().unwrap().peer_checkpoint(&p).unwrap(),
        PeerCheckpoint::default()
    );
    store
        .write(|w| {
            w.set_peer_ours(&p, 7)?;
            w.set_peer_theirs(&p, b"their-cursor")?;
            w.put_sync_state(&p, &rid("a"), b"s1")?;
            w.put_sync_state(&p, &rid("b"), b"s2")?;
            w.put_sync_state(&q, &rid("a"), b"s3")
        })
        .unwrap();
    let cp = store.read().unwrap().peer_checkpoint(&p).unwrap();
    assert_eq!(
        cp,
        PeerCheckpoint {
            ours: 7,
            theirs: b"their-cursor".to_vec()
        }
    );
    assert_eq!(store.write(|w| w.forget_peer(&p)).unwrap(), 2);
    let view = store.read().unwrap();
    assert_eq!(view.peer_checkpoint(&p).unwrap(), PeerCheckpoint::default());
    assert_eq!(view.sync_state(&p, &rid("a")).unwrap(), None);
    assert_eq!(
        view.sync_state(&q, &rid("a")).unwrap(),
        Some(b"s3".to_vec())
    );
}

#[test]
fn the_crm_id_index_stays_one_to_one() {
    let (_dir, store) = open_temp();
    let deal = |id| CrmId {
        kind: "deal".into(),
        id,
    };
    store.write(|w| w.map_crm_id(&rid("a"), &deal(10))).unwrap();
    store.write(|w| w.map_crm_id(&rid("a"), &deal(10))).unwrap();
    let err = store
        .write(|w| w.map_crm_id(&rid("b"), &deal(10)))
        .unwrap_err();
    assert!(matches!(err, StoreError::IndexConflict { .. }), "{err}");
    let err = store
        .write(|w| w.map_crm_id(&rid("a"), &deal(11)))
        .unwrap_err();
    assert!(matches!(err, StoreError::IndexConflict { .. }), "{err}");
    let contact = CrmId {
        kind: "contact".into(),
        id: 10,
    };
    store.write(|w| w.map_crm_id(&rid("b"), &contact)).unwrap();
    let view = store.read().unwrap();
    assert_eq!(view.crm_id(&rid("a")).unwrap(), Some(deal(10)));
    assert_eq!(view.record_for_crm("deal", 10).unwrap(), Some(rid("a")));
    assert_eq!(view.record_for_crm("contact", 10).unwrap(), Some(rid("b")));
    assert_eq!(view.record_for_crm("deal", 11).unwrap(), None);
    drop(view);
    assert_eq!(
        store.write(|w| w.unmap_crm_id(&rid("a"))).unwrap(),
        Some(deal(10))
    );
    store.write(|w| w.map_crm_id(&rid("c"), &deal(10))).unwrap();
    assert_eq!(
        store.read().unwrap().record_for_crm("deal", 10).unwrap(),
        Some(rid("c"))
    );
}

#[test]
fn conflict_views_are_set_replaced_and_cleared() {
    let (_dir, store) = open_temp();
    store
        .write(|w| w.set_conflicts(&rid("b"), Some(b"v1")))
        .unwrap();
    store
        .write(|w| w.set_conflicts(&rid("a"), Some(b"v2")))
        .unwrap();
    store
        .write(|w| w.set_conflicts(&rid("b"), Some(b"v3")))
        .unwrap();
    let all = store.read().unwrap().all_conflicts().unwrap();
    assert_eq!(
        all,
        vec![(rid("a"), b"v2".to_vec()), (rid("b"), b"v3".to_vec())]
    );
    store.write(|w| w.set_conflicts(&rid("a"), None)).unwrap();
    store
        .write(|w| w.set_conflicts(&rid("b"), Some(b"")))
        .unwrap();
    assert!(store.read().unwrap().all_conflicts().unwrap().is_empty());
}

#[test]
fn notifications_append_filter_and_mark_read() {
    let (_dir, store) = open_temp();
    let (u1, u2) = (UserId(1), UserId(2));
    let ids: Vec<u64> = (0..4)
        .map(|i| {
            let user = if i % 2 == 0 { u1 } else { u2 };
            store
                .write(|w| w.add_notification(user, 1000 + i, format!("n{i}").as_bytes()))
                .unwrap()
        })
        .collect();
    assert_eq!(ids, vec![1, 2, 3, 4]);
    store.write(|w| w.mark_notification_read(3)).unwrap();
    let err = store.write(|w| w.mark_notification_read(99)).unwrap_err();
    assert!(matches!(err, StoreError::NoSuchNotification(99)));
    let view = store.read().unwrap();
    let mine = view
        .notifications(&NotificationFilter {
            user: Some(u1),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        mine.iter().map(|n| (n.id, n.read)).collect::<Vec<_>>(),
        vec![(1, false), (3, true)]
    );
    assert_eq!(mine[1].body, b"n2");
    let unread = view
        .notifications(&NotificationFilter {
            unread_only: true,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        unread.iter().map(|n| n.id).collect::<Vec<_>>(),
        vec![1, 2, 4]
    );
    let page = view
        .notifications(&NotificationFilter {
            after: 1,
            limit: Some(2),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(page.iter().map(|n| n.id).collect::<Vec<_>>(), vec![2, 3]);
}

#[test]
fn node_identity_round_trips() {
    let (_dir, store) = open_temp();
    assert_eq!(store.read().unwrap().identity().unwrap(), None);
    let id = NodeIdentity {
        device_id: dev("phone-1"),
        user_id: UserId(42),
        role: Role::Device,
        hub_url: Some("wss://hub.example:8443".into()),
        hub_token: Some("abc".into()),
    };
    store.write(|w| w.set_identity(&id)).unwrap();
    assert_eq!(store.read().unwrap().identity().unwrap(), Some(id));
}

#[test]
fn device_tokens_verify_until_expiry_or_revocation_and_only_hashes_are_stored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let store = Store::open(&path).unwrap();
    let t1 = store
        .write(|w| w.issue_token(UserId(7), &dev("phone"), 1_000, Some(5_000)))
        .unwrap();
    let t2 = store
        .write(|w| w.issue_token(UserId(8), &dev("laptop"), 2_000, None))
        .unwrap();
    let t3 = store
        .write(|w| w.issue_token(UserId(8), &dev("laptop"), 3_000, None))
        .unwrap();
    assert_ne!(t1.token, t2.token);
    assert_eq!(t1.token.len(), 64);
    let view = store.read().unwrap();
    assert_eq!(view.verify_token(&t1.token, 4_999).unwrap().user, UserId(7));
    let err = view.verify_token(&t1.token, 5_000).unwrap_err();
    assert!(
        matches!(err, StoreError::Token(TokenRejected::Expired)),
        "{err}"
    );
    let err = view.verify_token("0123", 0).unwrap_err();
    assert!(
        matches!(err, StoreError::Token(TokenRejected::Unknown)),
        "{err}"
    );
    assert_eq!(
        view.verify_token(&t2.token, i64::MAX).unwrap().device,
        dev("laptop")
    );
    drop(view);

    assert!(
        store
            .write(|w| w.revoke_token(&t2.info.token_id, 9_000))
            .unwrap()
    );
    assert!(
        !store
            .write(|w| w.revoke_token(&t2.info.token_id, 9_001))
            .unwrap()
    );
    let view = store.read().unwrap();
    let err = view.verify_token(&t2.token, 9_000).unwrap_err();
    assert!(
        matches!(err, StoreError::Token(TokenRejected::Revoked)),
        "{err}"
    );
    assert!(view.verify_token(&t3.token, 9_000).is_ok());
    drop(view);
    assert_eq!(
        store
            .write(|w| w.revoke_device_tokens(&dev("laptop"), 9_500))
            .unwrap(),
        1
    );
    let listed = store.read().unwrap().tokens().unwrap();
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[1].revoked_at_ms, Some(9_000));
    assert_eq!(listed[2].revoked_at_ms, Some(9_500));
    drop(store);

    let raw = std::fs::read(&path).unwrap();
    for t in [&t1, &t2, &t3] {
        let needle = t.token.as_bytes();
        assert!(
            !raw.windows(needle.len()).any(|w| w == needle),
            "a token is stored in clear"
        );
    }
}

#[test]
fn kv_entries_round_trip_and_list_by_prefix() {
    let (_dir, store) = open_temp();
    store
        .write(|w| {
            w.kv_put("bridge/device_uuid", b"u")?;
            w.kv_put("bridge/sync_cursor", b"c1")?;
            w.kv_put("bridgex", b"no")?;
            w.kv_put("a", b"no")?;
            w.kv_put("bridge/sync_cursor", b"c2")
        })
        .unwrap();
    let view = store.read().unwrap();
    assert_eq!(
        view.kv_get("bridge/sync_cursor").unwrap(),
        Some(b"c2".to_vec())
    );
    let listed = view.kv_prefix("bridge/").unwrap();
    assert_eq!(
        listed,
        vec![
            ("bridge/device_uuid".into(), b"u".to_vec()),
            ("bridge/sync_cursor".into(), b"c2".to_vec())
        ]
    );
    drop(view);
    assert!(store.write(|w| w.kv_remove("a")).unwrap());
    assert!(!store.write(|w| w.kv_remove("a")).unwrap());
}

#[test]
fn shadows_round_trip() {
    let (_dir, store) = open_temp();
    let mut doc = Automerge::new();
    change_bytes(&mut doc, "x", 1);
    let heads: Vec<ChangeHash> = doc.get_heads();
    let shadow = Shadow {
        crm_version: br#"{"id":1}"#.to_vec(),
        heads,
    };
    store.write(|w| w.put_shadow(&rid("d"), &shadow)).unwrap();
    assert_eq!(
        store.read().unwrap().shadow(&rid("d")).unwrap(),
        Some(shadow)
    );
    assert!(store.write(|w| w.remove_shadow(&rid("d"))).unwrap());
    assert_eq!(store.read().unwrap().shadow(&rid("d")).unwrap(), None);
}

#[test]
fn removing_a_document_removes_its_feed_entry_and_views() {
    let (_dir, store) = open_temp();
    let mut doc = Automerge::new();
    let bytes = change_bytes(&mut doc, "x", 1);
    store
        .write(|w| {
            w.append_doc_changes(&rid("d"), "deal", &bytes)?;
            w.set_conflicts(&rid("d"), Some(b"c"))?;
            w.map_crm_id(
                &rid("d"),
                &CrmId {
                    kind: "deal".into(),
                    id: 1,
                },
            )
        })
        .unwrap();
    assert!(store.write(|w| w.remove_doc(&rid("d"))).unwrap());
    let view = store.read().unwrap();
    assert!(view.changed_since(0, 10).unwrap().is_empty());
    assert_eq!(view.doc_meta(&rid("d")).unwrap(), None);
    assert_eq!(view.conflicts(&rid("d")).unwrap(), None);
    assert_eq!(view.record_for_crm("deal", 1).unwrap(), None);
}

#[test]
fn data_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let mut doc = Automerge::new();
    {
        let store = Store::open(&path).unwrap();
        let bytes = change_bytes(&mut doc, "x", 5);
        store
            .write(|w| w.append_doc_changes(&rid("d"), "deal", &bytes))
            .unwrap();
        store.write(|w| w.kv_put("k", b"v")).unwrap();
    }
    let store = Store::open(&path).unwrap();
    let view = store.read().unwrap();
    assert_eq!(view.feed_head().unwrap(), 1);
    assert_eq!(view.kv_get("k").unwrap(), Some(b"v".to_vec()));
    let (_, loaded) = view.load_doc(&rid("d")).unwrap().unwrap();
    assert_eq!(get_int(&loaded, "x"), Some(5));
}

#[test]
fn a_second_open_of_the_same_file_in_this_process_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let store = Store::open(&path).unwrap();
    let err = Store::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::AlreadyOpen { .. }), "{err}");
    // Through another spelling of the same path too.
    let err = Store::open(dir.path().join(".").join("s.redb")).unwrap_err();
    assert!(matches!(err, StoreError::AlreadyOpen { .. }), "{err}");
    drop(store);
    Store::open(&path).unwrap();
}

#[test]
fn another_schema_version_is_refused_naming_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    drop(Store::open(&path).unwrap());
    {
        let db = redb::Database::open(&path).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let def: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("meta");
            let mut meta = tx.open_table(def).unwrap();
            meta.insert("schema_version", 99u32.to_le_bytes().as_slice())
                .unwrap();
        }
        tx.commit().unwrap();
    }
    let err = Store::open(&path).unwrap_err();
    match &err {
        StoreError::SchemaVersion { found, supported } => {
            assert_eq!((*found, *supported), (99, SCHEMA_VERSION));
        }
        other => panic!("unexpected error {other}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("99") && msg.contains(&SCHEMA_VERSION.to_string()),
        "{msg}"
    );
    // The refused file was not touched: it still holds version 99.
    assert!(matches!(
        Store::open(&path).unwrap_err(),
        StoreError::SchemaVersion { found: 99, .. }
    ));
}

#[test]
fn a_foreign_redb_file_or_garbage_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.redb");
    {
        let db = redb::Database::create(&path).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let def: redb::TableDefinition<u64, u64> = redb::TableDefinition::new("things");
            tx.open_table(def).unwrap().insert(1, 2).unwrap();
        }
        tx.commit().unwrap();
    }
    let err = Store::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::NotAStore(_)), "{err}");

    let junk = dir.path().join("junk.redb");
    std::fs::write(&junk, vec![0x5a; 10_000]).unwrap();
    let err = Store::open(&junk).unwrap_err();
    assert!(
        matches!(err, StoreError::Open(_) | StoreError::Db(_)),
        "{err}"
    );
    assert_eq!(std::fs::read(&junk).unwrap(), vec![0x5a; 10_000]);
}

#[test]
fn document_heads_are_answered_with_or_without_a_load() {
    let (_dir, store) = open_temp();
    let id = rid("d");
    let mut doc = Automerge::new();
    let bytes = change_bytes(&mut doc, "x", 1);
    store
        .write(|w| w.append_doc_changes(&id, "deal", &bytes))
        .unwrap();
    let view = store.read().unwrap();
    assert_eq!(
        view.doc_meta(&id).unwrap().unwrap().heads,
        None,
        "raw chunks: heads unknown"
    );
    assert_eq!(view.doc_heads(&id).unwrap(), Some(doc.get_heads()));
    assert_eq!(view.doc_heads(&rid("none")).unwrap(), None);
    let metas = view.doc_metas(&[rid("none"), id.clone()]).unwrap();
    assert_eq!(
        (metas[0].is_none(), metas[1].as_ref().map(|m| m.seq)),
        (true, Some(1))
    );
    drop(view);
    store.write(|w| w.compact_doc(&id)).unwrap();
    let meta = store.read().unwrap().doc_meta(&id).unwrap().unwrap();
    assert_eq!(
        meta.heads,
        Some(doc.get_heads()),
        "compaction records the heads"
    );
    change_bytes(&mut doc, "x", 2);
    store
        .write(|w| w.put_doc_snapshot(&id, "deal", &doc.save()))
        .unwrap();
    let meta = store.read().unwrap().doc_meta(&id).unwrap().unwrap();
    assert_eq!(
        meta.heads,
        Some(doc.get_heads()),
        "a snapshot records the heads"
    );
}

#[test]
fn the_store_and_the_cache_can_move_between_threads() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Store>();
    send::<sellsync_store::Docs>();
    send::<sellsync_store::ReadView>();
}
