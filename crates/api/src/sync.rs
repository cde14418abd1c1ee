//! Sync API bodies (API doc §7).

use serde::{Deserialize, Serialize};

use crate::Item;

/// The `data` of a `201` answer to `POST /v2/sync/start` (`meta.type` is `sync_session`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SyncSession {
    /// Session id, used in the queue URL.
    pub id: String,
    /// Only `main` exists; each queue item has `meta.type` `sync_queue`.
    pub queues: Vec<Item<SyncQueue>>,
}

/// One queue of a session. Counts are estimates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SyncQueue {
    /// `main`.
    pub name: String,
    /// Estimated number of pages.
    pub pages: u64,
    /// Estimated number of items.
    pub total_count: u64,
}

/// `meta.sync` of a queue item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncMeta {
    /// A hint: `created` means the device never acknowledged this object.
    pub event_type: SyncEventType,
    /// `<Type>-<id>-<revision>`, e.g. `Deal-12-3`.
    pub ack_key: String,
    /// Revision of the object delivered.
    pub revision: u64,
}

/// What happened to an object since the device last acknowledged it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncEventType {
    /// Never acknowledged by this device.
    Created,
    /// Changed since the device acknowledged it.
    Updated,
    /// Deleted; `data` carries only the id.
    Deleted,
}

/// An object the queue could not deliver (`meta.failed_objects`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FailedObject {
    /// Its type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Its id.
    pub id: u64,
}

/// The `data` of `POST /v2/sync/ack`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckRequest {
    /// The keys of the items the device has stored.
    pub ack_keys: Vec<String>,
}
