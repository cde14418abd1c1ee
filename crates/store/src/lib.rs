//! The durable store of a sellsync node (hub or device), on redb.
//!
//! It knows keys and bytes, not the sync protocol nor the record schema. Everything is blocking:
//! call it from `spawn_blocking` in async code and never hold a [`ReadView`] across an `.await`.
//!
//! - [`Store`] owns the redb file. [`Store::read`] gives a consistent snapshot ([`ReadView`]);
//!   [`Store::write`] runs a closure in one write transaction ([`WriteBatch`]) and commits it
//!   with immediate durability: when it returns `Ok`, the write survives `kill -9`; when it
//!   returns `Err`, nothing was written. Both implement [`StoreRead`].
//! - [`Docs`] is the document cache on top: documents are loaded on demand, kept under a memory
//!   budget (least recently used evicted), and every change is written (as
//!   `save_after(old_heads)`) in the same call that makes it. [`Docs::batch`] changes many
//!   documents and other tables in one transaction, for the sync protocol.
//!
//! Tables (see `docs/storage.md` for the on-disk format and versions): documents (snapshot +
//! incremental chunks, compacted past a threshold, plus a kind), the change feed (one entry per
//! document at its latest seq), per-peer sync states and checkpoints, the local id <-> CRM id
//! index, open-conflict views, notifications, node identity and device tokens (hashes only), a
//! key-value table for component cursors, and the bridge's shadows.
//!
//! ```
//! use std::sync::Arc;
//! use automerge::{ROOT, transaction::Transactable, ReadDoc};
//! use sellsync_store::{Docs, Store, StoreRead};
//!
//! let dir = tempfile::tempdir()?;
//! let store = Arc::new(Store::open(dir.path().join("node.redb"))?);
//! let mut docs = Docs::new(store.clone(), 64 << 20);
//! let id = "deal-1".parse()?;
//! docs.with_doc_mut(&id, "deal", |doc| {
//!     doc.transact::<_, _, automerge::AutomergeError>(|tx| tx.put(ROOT, "name", "Big deal"))
//! })?
//! .map_err(|f| f.error)?;
//! let changed = store.read()?.changed_since(0, 100)?;
//! assert_eq!(changed[0].record, id);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(missing_docs)]

mod docs;
mod error;
mod read;
mod schema;
mod store;
mod types;
mod write;

pub use docs::{
    CacheStats, DocBatch, Docs, ESTIMATE_BASE_BYTES, ESTIMATE_PER_STORED_BYTE, estimate_memory,
};
pub use error::{Result, StoreError, TokenRejected};
pub use read::{ReadView, StoreRead, load_automerge};
pub use schema::SCHEMA_VERSION;
pub use store::{Store, StoreOptions};
pub use types::{
    CrmId, DocBytes, DocMeta, FeedEntry, IssuedToken, NodeIdentity, Notification,
    NotificationFilter, PeerCheckpoint, Role, Shadow, TokenInfo,
};
pub use write::WriteBatch;
