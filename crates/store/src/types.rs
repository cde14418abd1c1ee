//! Plain data types returned and taken by the store.

use automerge::ChangeHash;
use sellsync_model::{DeviceId, RecordId, UserId};
use serde::{Deserialize, Serialize};

/// What the store knows about a document besides its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocMeta {
    /// The caller-given kind ("deal", "contact", "catalog"...), fixed at creation.
    pub kind: String,
    /// The feed seq of the document's latest write.
    pub seq: u64,
    /// Bytes of the compacted snapshot (0 if none yet).
    pub snapshot_bytes: u64,
    /// Number of incremental chunks appended since the snapshot.
    pub chunk_count: u32,
    /// Total bytes of those chunks.
    pub chunk_bytes: u64,
    /// The stored document's heads, when the store knows them without loading it (always after
    /// writes through [`crate::Docs`], snapshots and compactions; not after raw
    /// [`crate::WriteBatch::append_doc_changes`]). [`crate::StoreRead::doc_heads`] always answers.
    pub heads: Option<Vec<ChangeHash>>,
}

impl DocMeta {
    /// Bytes the document takes in the store (snapshot plus chunks).
    pub fn stored_bytes(&self) -> u64 {
        self.snapshot_bytes + self.chunk_bytes
    }
}

/// One entry of the change feed: a document and the seq of its latest write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedEntry {
    /// The feed seq of the document's latest write.
    pub seq: u64,
    /// The document.
    pub record: RecordId,
    /// Its kind, so that a hub can filter by access without loading it.
    pub kind: String,
}

/// A document's stored bytes, in load order: the snapshot, then each chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocBytes {
    /// What the store knows about the document.
    pub meta: DocMeta,
    /// `Automerge::save()` output, or empty if the document has no snapshot yet.
    pub snapshot: Vec<u8>,
    /// Incremental saves to apply after the snapshot, oldest first.
    pub chunks: Vec<Vec<u8>>,
}

/// How far a peer and we have synced each other's feeds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerCheckpoint {
    /// Our feed seq up to which the peer has everything of ours (0: nothing yet).
    pub ours: u64,
    /// The opaque checkpoint the peer gave us for its own feed (empty: none yet).
    pub theirs: Vec<u8>,
}

/// A record's id in the CRM: its kind (e.g. "deal") and numeric id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CrmId {
    /// The CRM resource kind, 1 to 64 bytes.
    pub kind: String,
    /// The CRM's numeric id.
    pub id: u64,
}

/// A stored notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// Store-wide increasing id.
    pub id: u64,
    /// The user it is for.
    pub user: UserId,
    /// When it was created (unix ms, given by the caller).
    pub created_at_ms: i64,
    /// Whether it was marked read.
    pub read: bool,
    /// Opaque body produced by the caller.
    pub body: Vec<u8>,
}

/// Which notifications to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotificationFilter {
    /// Only this user's (all users' if `None`).
    pub user: Option<UserId>,
    /// Only unread ones.
    pub unread_only: bool,
    /// Only ids greater than this.
    pub after: u64,
    /// At most this many (all if `None`).
    pub limit: Option<usize>,
}

/// The role of the node owning a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The organisation's hub.
    Hub,
    /// A rep's device.
    Device,
}

/// This node's identity and, for a device, how it reaches its hub.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeIdentity {
    /// This node's device id (also its automerge actor).
    pub device_id: DeviceId,
    /// The user this node acts for (a hub: its service user).
    pub user_id: UserId,
    /// Hub or device.
    pub role: Role,
    /// For a device: the hub's URL.
    pub hub_url: Option<String>,
    /// For a device: the token the hub issued to it. Stored in clear because the device must
    /// present it.
    pub hub_token: Option<String>,
}

/// What a hub knows about a device token it issued (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// Short, non-secret id of the token (the first 8 bytes of its hash, in hex), for listing
    /// and revoking.
    pub token_id: String,
    /// The user the token acts for.
    pub user: UserId,
    /// The device it was issued to.
    pub device: DeviceId,
    /// When it was issued (unix ms, given by the caller).
    pub issued_at_ms: i64,
    /// When it stops being accepted (unix ms, given by the caller); `None`: never.
    pub expires_at_ms: Option<i64>,
    /// When it was revoked, if it was.
    pub revoked_at_ms: Option<i64>,
}

/// A freshly issued device token: the secret, shown once, and its stored description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// The token to hand to the device. The store keeps only its hash.
    pub token: String,
    /// What the store recorded.
    pub info: TokenInfo,
}

/// The bridge's shadow of a record: the last CRM version it saw and the document heads at which
/// it recorded that version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shadow {
    /// The last CRM version, as opaque bytes chosen by the bridge.
    pub crm_version: Vec<u8>,
    /// The document heads at which that version was written into the document.
    pub heads: Vec<ChangeHash>,
}
