//! Success envelopes (API doc §2): a single item, a collection, and a request body.

use serde::{Deserialize, Serialize};

/// A single resource: `{"data": {...}, "meta": {"type": "deal"}}`. Collections hold these too.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item<T> {
    /// The resource itself.
    pub data: T,
    /// Type name, and in lists the undocumented per-item `version`.
    #[serde(default)]
    pub meta: ItemMeta,
}

/// The `meta` of one item.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemMeta {
    /// Resource type in singular snake case: `deal`, `contact`, `sync_session`, ...
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Undocumented per-item revision seen in real list payloads; grows on every write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// Present on Sync API queue items only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<crate::SyncMeta>,
}

/// A page of items: `{"items": [...], "meta": {"type": "collection", "count": n, "links": {...}}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Collection<T> {
    /// The page's items, each in its own envelope.
    pub items: Vec<Item<T>>,
    /// Count and paging links.
    pub meta: CollectionMeta,
}

/// The `meta` of a collection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectionMeta {
    /// Always `collection`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Number of items in this page (not a total).
    #[serde(default)]
    pub count: u64,
    /// Paging links; `next_page` is absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub links: Option<Links>,
    /// Sync API queue pages only: items left in the session after this page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count_left: Option<u64>,
    /// Sync API queue pages only: objects that could not be delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_objects: Option<Vec<crate::FailedObject>>,
}

/// Paging links of a collection. Each is a full URL.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Links {
    /// This page.
    #[serde(rename = "self", default, skip_serializing_if = "Option::is_none")]
    pub self_: Option<String>,
    /// Page 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_page: Option<String>,
    /// The previous page; absent on page 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_page: Option<String>,
    /// The next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page: Option<String>,
}

/// A request body: `{"data": {...}}`, with an optional `meta` sibling that some clients send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestEnvelope<T> {
    /// The attributes to create or change.
    pub data: T,
    /// Ignored by the server (`{"type": "deal"}` from the Java client).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<serde_json::Value>,
}
