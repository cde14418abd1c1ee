//! The document cache: documents loaded on demand, kept under a memory budget, and written
//! through to the store before any change is visible.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use automerge::{ActorId, Automerge};
use sellsync_model::RecordId;

use crate::error::{Result, StoreError};
use crate::read::{StoreRead, load_automerge};
use crate::store::Store;
use crate::types::DocMeta;
use crate::write::WriteBatch;

/// Fixed part of the memory estimate of a loaded document, in bytes.
pub const ESTIMATE_BASE_BYTES: usize = 16 << 10;
/// Bytes of memory estimated per byte the document takes in the store.
pub const ESTIMATE_PER_STORED_BYTE: usize = 32;

/// The memory a loaded document is estimated to take, from its stored size.
///
/// Measured on automerge 0.12: a small deal saving to 470 B takes about 19.5 KiB in memory.
pub fn estimate_memory(stored_bytes: u64) -> usize {
    let stored = usize::try_from(stored_bytes).unwrap_or(usize::MAX);
    ESTIMATE_BASE_BYTES.saturating_add(stored.saturating_mul(ESTIMATE_PER_STORED_BYTE))
}

struct Entry {
    doc: Automerge,
    kind: String,
    /// The feed seq of the document's write that this copy reflects.
    seq: u64,
    estimate: usize,
    /// Key of this entry in `Docs::lru`.
    tick: u64,
}

/// Counters of the cache's work, for tests and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Accesses served from memory.
    pub hits: u64,
    /// Documents loaded from the store.
    pub loads: u64,
    /// Documents dropped to stay under the budget.
    pub evictions: u64,
    /// Cached copies dropped because a write failed or the store changed underneath.
    pub invalidations: u64,
}

/// The cache state, split from the store handle so a batch can borrow both.
struct Cache {
    budget: usize,
    actor: Option<ActorId>,
    entries: HashMap<RecordId, Entry>,
    /// Least recently used first.
    lru: BTreeMap<u64, RecordId>,
    next_tick: u64,
    used: usize,
    /// Invariant: every cached copy reflects the store at least up to this feed seq.
    known_seq: u64,
    stats: CacheStats,
}

impl Cache {
    fn touch(&mut self, record: &RecordId) {
        if let Some(e) = self.entries.get_mut(record) {
            self.lru.remove(&e.tick);
            e.tick = self.next_tick;
            self.lru.insert(self.next_tick, record.clone());
            self.next_tick += 1;
        }
    }

    fn remove(&mut self, record: &RecordId) -> Option<Entry> {
        let e = self.entries.remove(record)?;
        self.lru.remove(&e.tick);
        self.used -= e.estimate;
        Some(e)
    }

    fn insert(
        &mut self,
        record: RecordId,
        mut doc: Automerge,
        kind: String,
        meta_seq: u64,
        stored: u64,
    ) {
        if let Some(actor) = &self.actor {
            doc.set_actor(actor.clone());
        }
        self.remove(&record);
        let estimate = estimate_memory(stored);
        let tick = self.next_tick;
        self.next_tick += 1;
        self.lru.insert(tick, record.clone());
        self.used += estimate;
        self.entries.insert(
            record,
            Entry {
                doc,
                kind,
                seq: meta_seq,
                estimate,
                tick,
            },
        );
    }

    /// Puts back an entry taken out with [`Cache::remove`], as the most recently used, with
    /// the cache's actor.
    fn put_back(&mut self, record: RecordId, mut entry: Entry) {
        if let Some(actor) = &self.actor {
            entry.doc.set_actor(actor.clone());
        }
        self.remove(&record);
        entry.tick = self.next_tick;
        self.next_tick += 1;
        self.lru.insert(entry.tick, record.clone());
        self.used += entry.estimate;
        self.entries.insert(record, entry);
    }

    /// Evicts least recently used documents until under budget, always keeping `keep`.
    fn shrink(&mut self, keep: &RecordId) {
        while self.used > self.budget {
            let victim = self.lru.values().find(|r| *r != keep).cloned();
            let Some(victim) = victim else { break };
            self.remove(&victim);
            self.stats.evictions += 1;
        }
    }

    /// Makes sure `record`'s cached copy (if any) matches the store as seen by `reader`:
    /// drops it if the store has another seq for it.
    fn validate(&mut self, record: &RecordId, reader: &impl StoreRead) -> Result<Option<DocMeta>> {
        let meta = reader.doc_meta(record)?;
        if let Some(e) = self.entries.get(record)
            && meta.as_ref().is_none_or(|m| m.seq != e.seq)
        {
            self.remove(record);
            self.stats.invalidations += 1;
        }
        Ok(meta)
    }

    /// Loads `record` into the cache from `reader` unless it is there. `Ok(false)` if the
    /// document does not exist. Assumes `validate` ran.
    fn ensure_loaded(&mut self, record: &RecordId, reader: &impl StoreRead) -> Result<bool> {
        if self.entries.contains_key(record) {
            self.stats.hits += 1;
            self.touch(record);
            return Ok(true);
        }
        let Some(bytes) = reader.doc_bytes(record)? else {
            return Ok(false);
        };
        let doc = load_automerge(record, &bytes)?;
        self.stats.loads += 1;
        let stored = bytes.meta.stored_bytes();
        self.insert(record.clone(), doc, bytes.meta.kind, bytes.meta.seq, stored);
        Ok(true)
    }
}

/// The document cache over a [`Store`].
///
/// Documents are loaded on first use and kept in memory, least recently used evicted first,
/// while the estimated memory of all cached documents ([`estimate_memory`]) exceeds the budget
/// (the document in use is never evicted, so one document larger than the budget still works).
/// Opening a store loads no document.
///
/// Invariant: a cached copy never holds a change that is not durable in the store. A mutation
/// is written (as `save_after(old_heads)`) in the same call that makes it, and the cached copy
/// is dropped if that write fails.
///
/// Write documents through this cache while it is in use. Writes made directly through
/// [`Store::write`] are detected (by feed seq) and the affected copies reloaded.
pub struct Docs {
    store: Arc<Store>,
    cache: Cache,
}

impl std::fmt::Debug for Docs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Docs")
            .field("budget", &self.cache.budget)
            .field("used", &self.cache.used)
            .field("cached", &self.cache.entries.len())
            .field("stats", &self.cache.stats)
            .finish_non_exhaustive()
    }
}

/// A write transaction that can change several documents and any other table at once, handed
/// to the closure of [`Docs::batch`].
pub struct DocBatch<'b, 'w> {
    batch: &'b mut WriteBatch<'w>,
    cache: &'b mut Cache,
    touched: &'b mut Vec<RecordId>,
}

impl std::fmt::Debug for DocBatch<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DocBatch")
            .field("touched", &self.touched)
            .finish_non_exhaustive()
    }
}

impl Docs {
    /// A cache over `store` holding at most about `budget_bytes` of documents.
    pub fn new(store: Arc<Store>, budget_bytes: usize) -> Docs {
        let known_seq = store.cached_feed_seq();
        Docs {
            store,
            cache: Cache {
                budget: budget_bytes,
                actor: None,
                entries: HashMap::new(),
                lru: BTreeMap::new(),
                next_tick: 0,
                used: 0,
                known_seq,
                stats: CacheStats::default(),
            },
        }
    }

    /// Sets the actor given to every document loaded or created from now on (and to those
    /// already cached). Use the node's stable actor so that a reload does not mint a new one.
    pub fn set_actor(&mut self, actor: ActorId) {
        for e in self.cache.entries.values_mut() {
            e.doc.set_actor(actor.clone());
        }
        self.cache.actor = Some(actor);
    }

    /// Sets the memory budget (bytes) of the cache, evicting least recently used documents
    /// until it holds no more than that.
    pub fn set_budget(&mut self, budget_bytes: usize) {
        self.cache.budget = budget_bytes;
        while self.cache.used > self.cache.budget {
            let Some(victim) = self.cache.lru.values().next().cloned() else {
                break;
            };
            self.evict(&victim);
        }
    }

    /// The memory budget (bytes) of the cache.
    pub fn budget(&self) -> usize {
        self.cache.budget
    }

    /// The store under the cache.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Work counters.
    pub fn stats(&self) -> CacheStats {
        self.cache.stats
    }

    /// Number of documents in memory.
    pub fn cached(&self) -> usize {
        self.cache.entries.len()
    }

    /// Estimated memory of the documents in memory.
    pub fn cached_bytes(&self) -> usize {
        self.cache.used
    }

    /// Whether a document is in memory.
    pub fn is_cached(&self, record: &RecordId) -> bool {
        self.cache.entries.contains_key(record)
    }

    /// Drops a document from memory (it stays in the store).
    pub fn evict(&mut self, record: &RecordId) {
        if self.cache.remove(record).is_some() {
            self.cache.stats.evictions += 1;
        }
    }

    /// Drops every document from memory.
    pub fn clear(&mut self) {
        let all: Vec<RecordId> = self.cache.entries.keys().cloned().collect();
        for r in all {
            self.evict(&r);
        }
    }

    /// Checks all cached copies against the store if someone wrote documents around the cache.
    fn revalidate_if_stale(&mut self) -> Result<()> {
        let head = self.store.cached_feed_seq();
        if head == self.cache.known_seq {
            return Ok(());
        }
        let view = self.store.read()?;
        let head = view.feed_head()?;
        let all: Vec<RecordId> = self.cache.entries.keys().cloned().collect();
        for r in &all {
            self.cache.validate(r, &view)?;
        }
        self.cache.known_seq = head;
        Ok(())
    }

    /// Runs `f` on a document, loading it if needed. `Ok(None)` if the document does not
    /// exist. Errors: the document's stored bytes fail to load ([`StoreError::Document`]).
    pub fn with_doc<R>(
        &mut self,
        record: &RecordId,
        f: impl FnOnce(&Automerge) -> R,
    ) -> Result<Option<R>> {
        self.revalidate_if_stale()?;
        if !self.cache.entries.contains_key(record) {
            let view = self.store.read()?;
            if !self.cache.ensure_loaded(record, &view)? {
                return Ok(None);
            }
        } else {
            self.cache.stats.hits += 1;
            self.cache.touch(record);
        }
        // The entry was inserted or touched just above.
        let out = f(&self.cache.entries.get(record).expect("cached").doc);
        self.cache.shrink(record);
        Ok(Some(out))
    }

    /// [`Docs::with_doc`] for functions that consume an `Automerge` without changing it (such as
    /// wrappers that check a document's shape): `f` gets the cached document by value, with no
    /// copy, and hands it back. If `f` returns `None`, or a document whose heads differ from
    /// the ones it was given, the copy is dropped from memory (the stored document is
    /// untouched and is loaded again on next use), so the cache never holds a change the store
    /// does not. A document that was not in memory is kept afterwards only if it fits in the
    /// budget without evicting another (for one-off passes over many documents).
    pub fn with_doc_owned<R>(
        &mut self,
        record: &RecordId,
        f: impl FnOnce(Automerge) -> (Option<Automerge>, R),
    ) -> Result<Option<R>> {
        self.revalidate_if_stale()?;
        let was_cached = self.cache.entries.contains_key(record);
        if !was_cached {
            let view = self.store.read()?;
            if !self.cache.ensure_loaded(record, &view)? {
                return Ok(None);
            }
        } else {
            self.cache.stats.hits += 1;
            self.cache.touch(record);
        }
        // The entry was inserted or touched just above. It stays out of the cache while `f`
        // runs, so a panic in `f` leaves the document uncached rather than emptied.
        let mut entry = self.cache.remove(record).expect("cached");
        let heads = entry.doc.get_heads();
        let (back, out) = f(std::mem::take(&mut entry.doc));
        match back {
            // A document loaded only for this call is not kept if that would evict others:
            // a pass over more documents than fit would otherwise evict every one of them
            // before its next use.
            Some(_) if !was_cached && self.cache.used + entry.estimate > self.cache.budget => {}
            Some(doc) if doc.get_heads() == heads => {
                entry.doc = doc;
                self.cache.put_back(record.clone(), entry);
                self.cache.shrink(record);
            }
            _ => self.cache.stats.invalidations += 1,
        }
        Ok(Some(out))
    }

    /// The kind of a cached or stored document, if it exists.
    pub fn kind(&mut self, record: &RecordId) -> Result<Option<String>> {
        if let Some(e) = self.cache.entries.get(record) {
            return Ok(Some(e.kind.clone()));
        }
        Ok(self.store.read()?.doc_meta(record)?.map(|m| m.kind))
    }

    /// Runs `f` on a document (a new empty one with this `kind` if it does not exist) and makes
    /// its new changes durable before returning. See [`DocBatch::with_doc_mut`].
    pub fn with_doc_mut<R>(
        &mut self,
        record: &RecordId,
        kind: &str,
        f: impl FnOnce(&mut Automerge) -> R,
    ) -> Result<R> {
        self.batch(|b| b.with_doc_mut(record, kind, f))
    }

    /// Runs `f` in one durable write transaction in which it may change several documents
    /// (through [`DocBatch::with_doc_mut`]) and write any table (through [`DocBatch::store`]).
    ///
    /// If `f` or the commit fails, nothing is written and every document `f` touched is dropped
    /// from memory, so the cache never runs ahead of the disk.
    pub fn batch<R>(&mut self, f: impl FnOnce(&mut DocBatch<'_, '_>) -> Result<R>) -> Result<R> {
        self.revalidate_if_stale()?;
        let mut touched = Vec::new();
        let cache = &mut self.cache;
        let mut heads = None;
        let result = self.store.write(|batch| {
            let start = batch.feed_head()?;
            let mut b = DocBatch {
                batch,
                cache,
                touched: &mut touched,
            };
            let out = f(&mut b)?;
            heads = Some((start, b.batch.feed_head()?));
            Ok(out)
        });
        match result {
            Ok(out) => {
                // If nobody wrote between `known_seq` and this batch, every cached copy is
                // current up to the batch's own last write.
                if let Some((start, end)) = heads
                    && start == self.cache.known_seq
                {
                    self.cache.known_seq = end;
                }
                Ok(out)
            }
            Err(e) => {
                for r in &touched {
                    if self.cache.remove(r).is_some() {
                        self.cache.stats.invalidations += 1;
                    }
                }
                Err(e)
            }
        }
    }
}

impl<'w> DocBatch<'_, 'w> {
    /// The underlying write transaction, for sync states, checkpoints, views and the rest.
    /// Do not write documents through it: use [`DocBatch::with_doc_mut`].
    pub fn store(&mut self) -> &mut WriteBatch<'w> {
        self.batch
    }

    /// Runs `f` on a document (a new empty one with this `kind` if it does not exist; `kind`
    /// must match an existing document's) and writes the changes `f` made, as
    /// `save_after(old_heads)`, in this batch. A new document that `f` leaves without changes
    /// is not stored.
    ///
    /// Errors: [`StoreError::KindMismatch`], [`StoreError::BadKind`], a stored document that
    /// fails to load; the batch then fails as a whole.
    pub fn with_doc_mut<R>(
        &mut self,
        record: &RecordId,
        kind: &str,
        f: impl FnOnce(&mut Automerge) -> R,
    ) -> Result<R> {
        self.with_doc_mut_owned(record, kind, move |mut doc| {
            let out = f(&mut doc);
            (Some(doc), out)
        })
    }

    /// [`DocBatch::with_doc_mut`] for functions that take the document by value (such as
    /// wrappers that check a document's shape): `f` gets the document with no copy and hands it
    /// back, changed or not; its new changes are written as with `with_doc_mut`. If `f`
    /// returns `None`, nothing is written for this document and its copy is dropped from
    /// memory (the stored document is untouched and is loaded again on next use).
    pub fn with_doc_mut_owned<R>(
        &mut self,
        record: &RecordId,
        kind: &str,
        f: impl FnOnce(Automerge) -> (Option<Automerge>, R),
    ) -> Result<R> {
        crate::schema::check_kind(kind)?;
        let meta = self.cache.validate(record, &*self.batch)?;
        if let Some(m) = &meta
            && m.kind != kind
        {
            return Err(StoreError::KindMismatch {
                record: record.to_string(),
                stored: m.kind.clone(),
                given: kind.to_owned(),
            });
        }
        let exists = self.cache.ensure_loaded(record, &*self.batch)?;
        if !exists {
            let mut doc = Automerge::new();
            if let Some(actor) = &self.cache.actor {
                doc.set_actor(actor.clone());
            }
            self.cache
                .insert(record.clone(), doc, kind.to_owned(), 0, 0);
        }
        self.touched.push(record.clone());
        // The entry was loaded or inserted just above.
        // Out of the cache while `f` runs: a panic in `f` leaves the document uncached.
        let mut entry = self.cache.remove(record).expect("cached");
        let old_heads = entry.doc.get_heads();
        let (back, out) = f(std::mem::take(&mut entry.doc));
        let Some(doc) = back else {
            if exists {
                self.cache.stats.invalidations += 1;
            }
            return Ok(out);
        };
        entry.doc = doc;
        self.cache.put_back(record.clone(), entry);
        let entry = self.cache.entries.get_mut(record).expect("cached");
        let new_heads = entry.doc.get_heads();
        if new_heads == old_heads {
            if !exists {
                self.cache.remove(record);
            }
            self.cache.shrink(record);
            return Ok(out);
        }
        // A new document is written whole in the compressed document format, which loads
        // much faster than the same changes as a change chunk (no change to apply on load).
        let changes = if exists {
            entry.doc.save_after(&old_heads)
        } else {
            entry.doc.save()
        };
        self.batch
            .append_chunk(record, kind, &changes, Some(&entry.doc))?;
        let meta = self
            .batch
            .doc_meta(record)?
            .ok_or_else(|| StoreError::corrupt("doc_info", format!("{record} vanished")))?;
        let entry = self.cache.entries.get_mut(record).expect("cached");
        entry.seq = meta.seq;
        let estimate = estimate_memory(meta.stored_bytes());
        self.cache.used = self.cache.used - entry.estimate + estimate;
        entry.estimate = estimate;
        self.cache.shrink(record);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use automerge::transaction::Transactable;
    use automerge::{ROOT, ReadDoc};

    use super::*;

    fn put(doc: &mut Automerge, value: i64) {
        let mut tx = doc.transaction();
        tx.put(ROOT, "n", value).expect("put");
        tx.commit();
    }

    fn n_of(doc: &Automerge) -> Option<i64> {
        match doc.get(ROOT, "n").ok()?? {
            (automerge::Value::Scalar(s), _) => s.as_i64(),
            _ => None,
        }
    }

    fn setup() -> (tempfile::TempDir, Docs, RecordId) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(Store::open(dir.path().join("s.redb")).expect("open"));
        let mut docs = Docs::new(store, 1 << 20);
        let id: RecordId = "deal-1".parse().expect("id");
        docs.with_doc_mut(&id, "deal", |d| put(d, 1))
            .expect("write");
        (dir, docs, id)
    }

    #[test]
    fn a_lent_document_comes_back_unchanged_or_leaves_the_cache() {
        let (_dir, mut docs, id) = setup();
        assert_eq!(
            docs.with_doc_owned(&id, |d| {
                let n = n_of(&d);
                (Some(d), n)
            })
            .expect("read"),
            Some(Some(1))
        );
        assert!(docs.is_cached(&id));
        // Not handed back: dropped from memory, still in the store.
        docs.with_doc_owned(&id, |_| (None, ())).expect("read");
        assert!(!docs.is_cached(&id));
        assert_eq!(docs.with_doc(&id, n_of).expect("read"), Some(Some(1)));
        // Handed back changed: the change is not kept, in memory or on disk.
        docs.with_doc_owned(&id, |mut d| {
            put(&mut d, 2);
            (Some(d), ())
        })
        .expect("read");
        assert!(!docs.is_cached(&id));
        assert_eq!(docs.with_doc(&id, n_of).expect("read"), Some(Some(1)));
        let missing: RecordId = "deal-2".parse().expect("id");
        assert_eq!(
            docs.with_doc_owned(&missing, |d| (Some(d), ()))
                .expect("read"),
            None
        );
    }

    #[test]
    fn a_document_taken_for_writing_is_written_or_left_as_stored() {
        let (_dir, mut docs, id) = setup();
        docs.batch(|b| {
            b.with_doc_mut_owned(&id, "deal", |mut d| {
                put(&mut d, 3);
                (Some(d), ())
            })
        })
        .expect("write");
        docs.clear();
        assert_eq!(docs.with_doc(&id, n_of).expect("read"), Some(Some(3)));
        // `None`: nothing written, the stored document is untouched.
        docs.batch(|b| b.with_doc_mut_owned(&id, "deal", |_| (None, ())))
            .expect("write");
        assert!(!docs.is_cached(&id));
        assert_eq!(docs.with_doc(&id, n_of).expect("read"), Some(Some(3)));
        // A new document is stored whole and loads back.
        let fresh: RecordId = "deal-9".parse().expect("id");
        docs.batch(|b| {
            b.with_doc_mut_owned(&fresh, "deal", |mut d| {
                put(&mut d, 9);
                (Some(d), ())
            })
        })
        .expect("write");
        docs.clear();
        assert_eq!(docs.with_doc(&fresh, n_of).expect("read"), Some(Some(9)));
    }
}
