//! Property: random document writes, batches, writes around the cache, compactions, evictions
//! and reopenings leave the store equal to a model of what was acknowledged.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use automerge::ActorId;
use common::{change_bytes, get_int, put_int, rid};
use proptest::prelude::*;
use sellsync_store::{Docs, Store, StoreOptions, StoreRead, estimate_memory};

const DOCS: u8 = 5;
const KEYS: u8 = 4;

#[derive(Debug, Clone)]
enum Op {
    Write { doc: u8, key: u8, value: i64 },
    Batch(Vec<(u8, u8, i64)>),
    RawWrite { doc: u8, key: u8, value: i64 },
    Compact(u8),
    Evict(u8),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let w = (0..DOCS, 0..KEYS, any::<i64>());
    prop_oneof![
        4 => w.clone().prop_map(|(doc, key, value)| Op::Write { doc, key, value }),
        2 => proptest::collection::vec(w.clone(), 1..4).prop_map(Op::Batch),
        1 => w.prop_map(|(doc, key, value)| Op::RawWrite { doc, key, value }),
        1 => (0..DOCS).prop_map(Op::Compact),
        1 => (0..DOCS).prop_map(Op::Evict),
        1 => Just(Op::Reopen),
    ]
}

fn name(doc: u8) -> String {
    format!("doc-{doc}")
}

fn key(k: u8) -> String {
    format!("k{k}")
}

/// What was acknowledged: each document's values, and the order of last writes.
#[derive(Default)]
struct Model {
    values: BTreeMap<u8, BTreeMap<u8, i64>>,
    last_write: BTreeMap<u8, u64>,
    clock: u64,
}

impl Model {
    fn wrote(&mut self, doc: u8, k: u8, v: i64) {
        self.values.entry(doc).or_default().insert(k, v);
        self.clock += 1;
        self.last_write.insert(doc, self.clock);
    }
}

fn open(path: &Path) -> (Arc<Store>, Docs) {
    let options = StoreOptions {
        compact_max_chunks: 4,
        ..StoreOptions::default()
    };
    let store = Arc::new(Store::open_with(path, options).unwrap());
    let mut docs = Docs::new(store.clone(), 2 * estimate_memory(300));
    docs.set_actor(ActorId::from(b"model-actor".as_slice()));
    (store, docs)
}

fn check(store: &Store, docs: &mut Docs, model: &Model) -> Result<(), TestCaseError> {
    for d in 0..DOCS {
        let expected = model.values.get(&d);
        let got = docs
            .with_doc(&rid(&name(d)), |doc| {
                (0..KEYS)
                    .filter_map(|k| get_int(doc, &key(k)).map(|v| (k, v)))
                    .collect()
            })
            .unwrap();
        prop_assert_eq!(got.as_ref(), expected, "document {}", d);
    }
    let feed = store.read().unwrap().changed_since(0, usize::MAX).unwrap();
    let mut order: Vec<(u64, u8)> = model.last_write.iter().map(|(d, t)| (*t, *d)).collect();
    order.sort();
    let expected: Vec<String> = order.iter().map(|(_, d)| name(*d)).collect();
    let got: Vec<String> = feed.iter().map(|e| e.record.to_string()).collect();
    prop_assert_eq!(got, expected);
    prop_assert!(feed.windows(2).all(|w| w[0].seq < w[1].seq));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn the_store_matches_a_model_of_acknowledged_writes(ops in proptest::collection::vec(op(), 1..30)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.redb");
        let (mut store, mut docs) = open(&path);
        let mut model = Model::default();
        for op in ops {
            match op {
                Op::Write { doc, key: k, value } => {
                    docs.with_doc_mut(&rid(&name(doc)), "deal", |d| put_int(d, &key(k), value))
                        .unwrap();
                    model.wrote(doc, k, value);
                }
                Op::Batch(writes) => {
                    docs.batch(|b| {
                        for (doc, k, value) in &writes {
                            b.with_doc_mut(&rid(&name(*doc)), "deal", |d| {
                                put_int(d, &key(*k), *value)
                            })?;
                        }
                        Ok(())
                    })
                    .unwrap();
                    for (doc, k, value) in writes {
                        model.wrote(doc, k, value);
                    }
                }
                Op::RawWrite { doc, key: k, value } => {
                    let id = rid(&name(doc));
                    let mut am = store
                        .read()
                        .unwrap()
                        .load_doc(&id)
                        .unwrap()
                        .map(|(_, am)| am)
                        .unwrap_or_default();
                    let bytes = change_bytes(&mut am, &key(k), value);
                    store.write(|w| w.append_doc_changes(&id, "deal", &bytes)).unwrap();
                    model.wrote(doc, k, value);
                }
                Op::Compact(doc) => {
                    store.write(|w| w.compact_doc(&rid(&name(doc)))).unwrap();
                }
                Op::Evict(doc) => docs.evict(&rid(&name(doc))),
                Op::Reopen => {
                    drop(docs);
                    drop(store);
                    (store, docs) = open(&path);
                }
            }
            check(&store, &mut docs, &model)?;
        }
    }
}
