//! The store (`sellsync_store::Store`) against a reference model, as redb's own fuzzer does it:
//! an `arbitrary` sequence of writes (document changes, snapshots good and damaged, removes,
//! compactions, re-announcements, key-value puts and removes, CRM id mappings, conflict views,
//! a batch that fails half-way, the feed floor) and reopens, each checked after every step
//! against a model of what the store must hold: BTreeMaps and one in-memory automerge document
//! per record.
//!
//! Checked after every step: each document's existence, kind, feed seq and recorded heads
//! (automerge heads are hashes of the whole history, so equal heads are equal content; the
//! documents themselves are loaded and compared after a reopen and at the end); the change feed
//! (`changed_since`) and its head; every key-value entry; both directions of the CRM index; the
//! conflict views. A write that returns `Err` must have changed nothing.
//!
//! The store runs on a redb backend in memory that outlives a `Store`, so a reopen reads what
//! was committed, as after a restart. Sequences are short (at most 32 steps) to keep runs fast.

#![no_main]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use arbitrary::{Arbitrary, Unstructured};
use automerge::{ActorId, Automerge, ChangeHash, ROOT, transaction::Transactable as _};
use libfuzzer_sys::fuzz_target;
use redb::StorageBackend;

/// The error of `StorageBackend`'s methods (without redb's experimental API).
type BackendIoError = std::io::Error;
use sellsync_model::RecordId;
use sellsync_store::{CrmId, Store, StoreError, StoreOptions, StoreRead as _};

/// A redb file in memory, shared by every `Store` opened on it in one run.
#[derive(Debug, Clone, Default)]
struct SharedMemory(Arc<Mutex<Vec<u8>>>);

impl SharedMemory {
    fn bytes(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn out_of_range() -> BackendIoError {
    std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "out of range")
}

impl StorageBackend for SharedMemory {
    fn len(&self) -> Result<u64, BackendIoError> {
        Ok(self.bytes().len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), BackendIoError> {
        let bytes = self.bytes();
        let start = usize::try_from(offset).map_err(|_| out_of_range())?;
        let src = bytes
            .get(start..start + out.len())
            .ok_or_else(out_of_range)?;
        out.copy_from_slice(src);
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), BackendIoError> {
        let len = usize::try_from(len).map_err(|_| out_of_range())?;
        self.bytes().resize(len, 0);
        Ok(())
    }

    fn sync_data(&self) -> Result<(), BackendIoError> {
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), BackendIoError> {
        let mut bytes = self.bytes();
        let start = usize::try_from(offset).map_err(|_| out_of_range())?;
        let dst = bytes
            .get_mut(start..start + data.len())
            .ok_or_else(out_of_range)?;
        dst.copy_from_slice(data);
        Ok(())
    }
}

const RECORDS: u8 = 4;
const KINDS: &[&str] = &["deal", "contact", ""];
const CRM_KINDS: &[&str] = &["deal", "contact"];

fn record(n: u8) -> RecordId {
    format!("rec-{}", n % RECORDS)
        .parse()
        .expect("a valid record id")
}

fn kind(n: u8) -> &'static str {
    KINDS[usize::from(n) % KINDS.len()]
}

/// A key of the key-value table: mostly from a small set, so that writes meet.
#[derive(Debug, Arbitrary)]
enum Key {
    Small(u8),
    Any(String),
}

impl Key {
    fn text(&self) -> String {
        match self {
            Key::Small(n) => format!("k/{}", n % 6),
            Key::Any(s) => s.clone(),
        }
    }
}

#[derive(Debug, Arbitrary)]
enum Op {
    /// Sets a field of the record's document and appends the change.
    Change {
        rec: u8,
        kind: u8,
        field: u8,
        value: i64,
    },
    /// Replaces the record's content with a snapshot of the model's document.
    Snapshot {
        rec: u8,
        kind: u8,
    },
    /// A snapshot damaged in one byte and maybe truncated: the store loads it before writing.
    DamagedSnapshot {
        rec: u8,
        kind: u8,
        at: u16,
        xor: u8,
        cut: Option<u16>,
    },
    Remove {
        rec: u8,
    },
    Compact {
        rec: u8,
    },
    Reannounce {
        rec: u8,
    },
    KvPut {
        key: Key,
        value: Vec<u8>,
    },
    KvRemove {
        key: Key,
    },
    MapCrm {
        rec: u8,
        kind: u8,
        id: u8,
    },
    UnmapCrm {
        rec: u8,
    },
    SetConflicts {
        rec: u8,
        view: Option<Vec<u8>>,
    },
    /// A key-value put and a document change in one batch that then fails: nothing is written.
    FailingBatch {
        key: Key,
        rec: u8,
        field: u8,
    },
    RaiseFeedFloor {
        floor: u16,
    },
    Reopen,
}

struct ModelDoc {
    kind: &'static str,
    doc: Automerge,
    seq: u64,
}

#[derive(Default)]
struct Model {
    docs: BTreeMap<u8, ModelDoc>,
    feed_head: u64,
    kv: BTreeMap<String, Vec<u8>>,
    crm: BTreeMap<u8, (&'static str, u64)>,
    conflicts: BTreeMap<u8, Vec<u8>>,
}

/// The options of every open: compaction after 3 chunks, so that sequences reach it.
fn options() -> StoreOptions {
    StoreOptions {
        cache_bytes: 1 << 20,
        compact_min_bytes: 256,
        compact_max_chunks: 3,
    }
}

fn open(backend: &SharedMemory) -> Store {
    Store::open_with_backend(backend.clone(), options()).expect("the store opens its own file")
}

fn fresh_doc(rec: u8) -> Automerge {
    Automerge::new().with_actor(ActorId::from(vec![b'r', rec]))
}

/// The model's document of `rec` with one more change, and the change's bytes.
fn changed(model: &Model, rec: u8, field: u8, value: i64) -> (Automerge, Vec<u8>) {
    let base = model
        .docs
        .get(&rec)
        .map_or_else(|| fresh_doc(rec), |d| d.doc.clone());
    let heads = base.get_heads();
    let mut doc = base;
    doc.transact::<_, _, automerge::AutomergeError>(|tx| {
        tx.put(ROOT, format!("f{}", field % 4), value)
    })
    .expect("a put on the root");
    let changes = doc.save_after(&heads);
    (doc, changes)
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(ops) = Vec::<Op>::arbitrary(&mut u) else {
        return;
    };
    let backend = SharedMemory::default();
    let mut store = Some(open(&backend));
    let mut model = Model::default();
    for op in ops.iter().take(32) {
        let reopened = matches!(op, Op::Reopen);
        if reopened {
            drop(store.take());
            store = Some(open(&backend));
        } else {
            step(store.as_ref().expect("open"), &mut model, op);
        }
        check(store.as_ref().expect("open"), &model, op, reopened);
    }
    if let Some(last) = ops.iter().take(32).last() {
        check(store.as_ref().expect("open"), &model, last, true);
    }
});

fn step(store: &Store, model: &mut Model, op: &Op) {
    match op {
        Op::Change {
            rec,
            kind: k,
            field,
            value,
        } => {
            let rec = rec % RECORDS;
            let kind = kind(*k);
            let (doc, changes) = changed(model, rec, *field, *value);
            let got = store.write(|w| w.append_doc_changes(&record(rec), kind, &changes));
            match expected_kind_error(model, rec, kind) {
                Some(why) => assert!(got.is_err(), "{why}: {got:?}"),
                // A put of the value the field holds makes no change: nothing to append.
                None if changes.is_empty() => {
                    assert_eq!(
                        got.expect("an empty append"),
                        None,
                        "an empty append writes nothing"
                    );
                }
                None => {
                    let seq = got.expect("a change of the right kind is written");
                    model.feed_head += 1;
                    assert_eq!(
                        seq,
                        Some(model.feed_head),
                        "a write takes the next feed seq"
                    );
                    model.docs.insert(
                        rec,
                        ModelDoc {
                            kind,
                            doc,
                            seq: model.feed_head,
                        },
                    );
                }
            }
        }
        Op::Snapshot { rec, kind: k } => {
            let rec = rec % RECORDS;
            let doc = model
                .docs
                .get(&rec)
                .map_or_else(|| fresh_doc(rec), |d| d.doc.clone());
            snapshot(store, model, rec, kind(*k), &doc.save());
        }
        Op::DamagedSnapshot {
            rec,
            kind: k,
            at,
            xor,
            cut,
        } => {
            let rec = rec % RECORDS;
            let doc = model
                .docs
                .get(&rec)
                .map_or_else(|| fresh_doc(rec), |d| d.doc.clone());
            let mut bytes = doc.save();
            if !bytes.is_empty() {
                let i = usize::from(*at) % bytes.len();
                bytes[i] ^= xor;
            }
            if let Some(cut) = cut {
                bytes.truncate(usize::from(*cut));
            }
            snapshot(store, model, rec, kind(*k), &bytes);
        }
        Op::Remove { rec } => {
            let rec = rec % RECORDS;
            let removed = store
                .write(|w| w.remove_doc(&record(rec)))
                .expect("a remove");
            assert_eq!(
                removed,
                model.docs.remove(&rec).is_some(),
                "remove answers whether it existed"
            );
            if removed {
                model.crm.remove(&rec);
                model.conflicts.remove(&rec);
            }
        }
        Op::Compact { rec } => {
            let rec = rec % RECORDS;
            let folded = store
                .write(|w| w.compact_doc(&record(rec)))
                .expect("a compaction");
            assert!(
                !folded || model.docs.contains_key(&rec),
                "a compaction of nothing folded"
            );
        }
        Op::Reannounce { rec } => {
            let rec = rec % RECORDS;
            let got = store
                .write(|w| w.reannounce_doc(&record(rec)))
                .expect("a re-announcement");
            match model.docs.get_mut(&rec) {
                Some(d) => {
                    model.feed_head += 1;
                    d.seq = model.feed_head;
                    assert_eq!(got, Some(model.feed_head));
                }
                None => assert_eq!(got, None),
            }
        }
        Op::KvPut { key, value } => {
            let key = key.text();
            store
                .write(|w| w.kv_put(&key, value))
                .expect("a key-value put");
            model.kv.insert(key, value.clone());
        }
        Op::KvRemove { key } => {
            let key = key.text();
            let existed = store
                .write(|w| w.kv_remove(&key))
                .expect("a key-value remove");
            assert_eq!(existed, model.kv.remove(&key).is_some());
        }
        Op::MapCrm { rec, kind, id } => {
            let rec = rec % RECORDS;
            let crm = (
                CRM_KINDS[usize::from(*kind) % CRM_KINDS.len()],
                u64::from(id % 8),
            );
            let id = CrmId {
                kind: crm.0.to_owned(),
                id: crm.1,
            };
            let got = store.write(|w| w.map_crm_id(&record(rec), &id));
            let conflict = match model.crm.get(&rec) {
                Some(existing) => *existing != crm,
                None => model.crm.values().any(|v| *v == crm),
            };
            if conflict {
                assert!(
                    matches!(got, Err(StoreError::IndexConflict { .. })),
                    "not one-to-one: {got:?}"
                );
            } else {
                got.expect("a one-to-one mapping is written");
                model.crm.insert(rec, crm);
            }
        }
        Op::UnmapCrm { rec } => {
            let rec = rec % RECORDS;
            let got = store
                .write(|w| w.unmap_crm_id(&record(rec)))
                .expect("an unmap");
            let want = model.crm.remove(&rec).map(|(k, id)| CrmId {
                kind: k.to_owned(),
                id,
            });
            assert_eq!(got, want);
        }
        Op::SetConflicts { rec, view } => {
            let rec = rec % RECORDS;
            store
                .write(|w| w.set_conflicts(&record(rec), view.as_deref()))
                .expect("a conflicts view");
            match view {
                Some(v) if !v.is_empty() => model.conflicts.insert(rec, v.clone()),
                _ => model.conflicts.remove(&rec),
            };
        }
        Op::FailingBatch { key, rec, field } => {
            let rec = rec % RECORDS;
            let (_, changes) = changed(model, rec, *field, 1);
            let kind = model.docs.get(&rec).map_or("deal", |d| d.kind);
            let got: Result<(), StoreError> = store.write(|w| {
                w.kv_put(&key.text(), b"never")?;
                w.append_doc_changes(&record(rec), kind, &changes)?;
                Err(StoreError::NotAStore(
                    "a batch that fails after its writes".into(),
                ))
            });
            assert!(got.is_err(), "the batch fails");
        }
        Op::RaiseFeedFloor { floor } => {
            let head = store
                .write(|w| w.raise_feed_floor(u64::from(*floor)))
                .expect("a floor");
            model.feed_head = model.feed_head.max(u64::from(*floor));
            assert_eq!(head, model.feed_head);
        }
        Op::Reopen => {}
    }
}

/// Why a write of `kind` to `rec` must fail, if it must.
fn expected_kind_error(model: &Model, rec: u8, kind: &str) -> Option<String> {
    if kind.is_empty() {
        return Some("an empty kind is refused".into());
    }
    match model.docs.get(&rec) {
        Some(d) if d.kind != kind => Some(format!("a {} written as {kind}", d.kind)),
        _ => None,
    }
}

fn snapshot(store: &Store, model: &mut Model, rec: u8, kind: &'static str, bytes: &[u8]) {
    let got = store.write(|w| w.put_doc_snapshot(&record(rec), kind, bytes));
    if let Some(why) = expected_kind_error(model, rec, kind) {
        assert!(got.is_err(), "{why}: {got:?}");
        return;
    }
    let loaded = sellsync_model::guarded(|| Automerge::load(bytes))
        .ok()
        .and_then(Result::ok);
    match (got, loaded) {
        (Ok(seq), Some(doc)) => {
            model.feed_head += 1;
            assert_eq!(seq, model.feed_head, "a snapshot takes the next feed seq");
            model.docs.insert(rec, ModelDoc { kind, doc, seq });
        }
        (Err(StoreError::Document { .. }), None) => {}
        (got, loaded) => panic!(
            "snapshot of {} bytes: the store answered {got:?}, automerge {} it",
            bytes.len(),
            if loaded.is_some() { "loads" } else { "refuses" }
        ),
    }
}

fn heads_of(doc: &Automerge) -> Vec<ChangeHash> {
    let mut h = doc.get_heads();
    h.sort();
    h
}

/// Compares the store with the model. Loading every document (`load_content`) is the slow part:
/// it is done after a reopen and at the end of a sequence; the heads the store records are
/// compared after every step.
fn check(store: &Store, model: &Model, op: &Op, load_content: bool) {
    let read = store.read().expect("a read view");
    assert_eq!(
        read.feed_head().expect("feed head"),
        model.feed_head,
        "feed head after {op:?}"
    );
    for rec in 0..RECORDS {
        let id = record(rec);
        let meta = read.doc_meta(&id).expect("doc meta");
        let want = model.docs.get(&rec);
        assert_eq!(meta.is_some(), want.is_some(), "{id} exists after {op:?}");
        if let (Some(meta), Some(want)) = (meta, want) {
            assert_eq!(meta.kind, want.kind, "{id}'s kind after {op:?}");
            assert_eq!(meta.seq, want.seq, "{id}'s feed seq after {op:?}");
            let mut heads = read
                .doc_heads(&id)
                .expect("heads")
                .expect("a stored document");
            heads.sort();
            assert_eq!(
                heads,
                heads_of(&want.doc),
                "{id}'s recorded heads after {op:?}"
            );
            if load_content {
                let (_, doc) = read
                    .load_doc(&id)
                    .expect("a stored document loads")
                    .expect("stored");
                assert_eq!(
                    heads_of(&doc),
                    heads_of(&want.doc),
                    "{id}'s content after {op:?}"
                );
            }
        }
        let crm = read.crm_id(&id).expect("crm id");
        let want_crm = model.crm.get(&rec).map(|(k, i)| CrmId {
            kind: (*k).to_owned(),
            id: *i,
        });
        assert_eq!(crm, want_crm, "{id}'s CRM id after {op:?}");
        if let Some((k, i)) = model.crm.get(&rec) {
            assert_eq!(read.record_for_crm(k, *i).expect("index"), Some(id.clone()));
        }
        assert_eq!(
            read.conflicts(&id).expect("conflicts"),
            model.conflicts.get(&rec).cloned()
        );
    }
    for kind in CRM_KINDS {
        for i in 0..8 {
            let back = read.record_for_crm(kind, i).expect("index");
            let want = model
                .crm
                .iter()
                .find(|(_, v)| **v == (*kind, i))
                .map(|(r, _)| record(*r));
            assert_eq!(back, want, "the CRM index of {kind} {i} after {op:?}");
        }
    }
    let mut feed: Vec<(u64, RecordId, String)> = model
        .docs
        .iter()
        .map(|(r, d)| (d.seq, record(*r), d.kind.to_owned()))
        .collect();
    feed.sort();
    let got: Vec<(u64, RecordId, String)> = read
        .changed_since(0, 100)
        .expect("the feed")
        .into_iter()
        .map(|e| (e.seq, e.record, e.kind))
        .collect();
    assert_eq!(got, feed, "the change feed after {op:?}");
    let kv: Vec<(String, Vec<u8>)> = model
        .kv
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(
        read.kv_prefix("").expect("kv"),
        kv,
        "the key-value table after {op:?}"
    );
}
