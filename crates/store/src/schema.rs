//! Table definitions, the schema version and the byte layouts of encoded values.
//!
//! Every layout here is part of the on-disk format described in `docs/storage.md`: changing one
//! means bumping [`SCHEMA_VERSION`] and adding a migration in `store.rs`.

use automerge::ChangeHash;
use redb::TableDefinition;

use crate::error::{Result, StoreError};

/// The schema version this build reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

/// Store-wide values: `schema_version` (u32 LE), `feed_seq` (u64 LE), `notification_seq` (u64 LE).
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
pub(crate) const META_SCHEMA_VERSION: &str = "schema_version";
pub(crate) const META_FEED_SEQ: &str = "feed_seq";
pub(crate) const META_NOTIFICATION_SEQ: &str = "notification_seq";

/// Record id -> [`DocInfo`] bytes.
pub(crate) const DOC_INFO: TableDefinition<&str, &[u8]> = TableDefinition::new("doc_info");
/// Record id -> compacted snapshot (`Automerge::save()`); absent while a document has none yet.
pub(crate) const DOC_SNAPSHOTS: TableDefinition<&str, &[u8]> =
    TableDefinition::new("doc_snapshots");
/// (record id, chunk number) -> incremental save appended after the snapshot, in chunk order.
pub(crate) const DOC_CHUNKS: TableDefinition<(&str, u32), &[u8]> =
    TableDefinition::new("doc_chunks");
/// Feed seq -> record id. Invariant: exactly one entry per document, at its `DocInfo::seq`.
pub(crate) const FEED: TableDefinition<u64, &str> = TableDefinition::new("feed");
/// (peer device id, record id) -> `automerge::sync::State::encode()` bytes.
pub(crate) const SYNC_STATES: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("sync_states");
/// Peer device id -> (our feed seq the peer has everything up to, the peer's opaque checkpoint).
pub(crate) const PEER_CHECKPOINTS: TableDefinition<&str, (u64, &[u8])> =
    TableDefinition::new("peer_checkpoints");
/// Record id -> (CRM kind, CRM id).
pub(crate) const CRM_BY_RECORD: TableDefinition<&str, (&str, u64)> =
    TableDefinition::new("crm_by_record");
/// (CRM kind, CRM id) -> record id. Invariant: the exact inverse of `CRM_BY_RECORD`.
pub(crate) const RECORD_BY_CRM: TableDefinition<(&str, u64), &str> =
    TableDefinition::new("record_by_crm");
/// Record id -> opaque open-conflicts view (absent when the record has none).
pub(crate) const CONFLICTS: TableDefinition<&str, &[u8]> = TableDefinition::new("conflicts");
/// Notification id -> (user id, created at ms, read flag, opaque body).
pub(crate) const NOTIFICATIONS: TableDefinition<u64, (u64, i64, bool, &[u8])> =
    TableDefinition::new("notifications");
/// `node` -> JSON of [`crate::NodeIdentity`].
pub(crate) const IDENTITY: TableDefinition<&str, &[u8]> = TableDefinition::new("identity");
pub(crate) const IDENTITY_NODE: &str = "node";
/// SHA-256 of a device token -> JSON of [`crate::TokenInfo`]. The token itself is never stored.
pub(crate) const DEVICE_TOKENS: TableDefinition<&[u8], &[u8]> =
    TableDefinition::new("device_tokens");
/// Component cursors and small settings, keyed by string.
pub(crate) const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
/// Record id -> bridge shadow: u32 LE head count, 32 bytes per head, then the CRM version bytes.
pub(crate) const SHADOWS: TableDefinition<&str, &[u8]> = TableDefinition::new("shadows");

/// What the store keeps about one document besides its bytes.
///
/// Layout: seq u64 LE, snapshot_len u64 LE, chunk_bytes u64 LE, first_chunk u32 LE,
/// next_chunk u32 LE (32 bytes); kind length u8, kind (UTF-8); head count u32 LE
/// (`u32::MAX`: heads unknown), then 32 bytes per head.
/// Invariant: the document's chunks are exactly the numbers `first_chunk..next_chunk`, and
/// `chunk_bytes` is the sum of their lengths. `heads`, when known, are the heads of the stored
/// document (snapshot plus chunks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DocInfo {
    pub(crate) seq: u64,
    pub(crate) snapshot_len: u64,
    pub(crate) chunk_bytes: u64,
    pub(crate) first_chunk: u32,
    pub(crate) next_chunk: u32,
    pub(crate) kind: String,
    pub(crate) heads: Option<Vec<ChangeHash>>,
}

const DOC_INFO_FIXED: usize = 32;
const HEADS_UNKNOWN: u32 = u32::MAX;

impl DocInfo {
    pub(crate) fn new(kind: &str) -> Self {
        DocInfo {
            seq: 0,
            snapshot_len: 0,
            chunk_bytes: 0,
            first_chunk: 0,
            next_chunk: 0,
            kind: kind.to_owned(),
            heads: Some(Vec::new()),
        }
    }

    pub(crate) fn chunk_count(&self) -> u32 {
        self.next_chunk - self.first_chunk
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let heads = self.heads.as_deref().unwrap_or(&[]);
        let mut out =
            Vec::with_capacity(DOC_INFO_FIXED + 1 + self.kind.len() + 4 + 32 * heads.len());
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&self.snapshot_len.to_le_bytes());
        out.extend_from_slice(&self.chunk_bytes.to_le_bytes());
        out.extend_from_slice(&self.first_chunk.to_le_bytes());
        out.extend_from_slice(&self.next_chunk.to_le_bytes());
        // Kinds are checked to be 1 to 64 bytes before they reach the store.
        out.push(self.kind.len() as u8);
        out.extend_from_slice(self.kind.as_bytes());
        match &self.heads {
            Some(heads) => {
                out.extend_from_slice(&(heads.len() as u32).to_le_bytes());
                for h in heads {
                    out.extend_from_slice(&h.0);
                }
            }
            None => out.extend_from_slice(&HEADS_UNKNOWN.to_le_bytes()),
        }
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self> {
        let bad = |reason: &str| StoreError::corrupt("doc_info", reason);
        if bytes.len() < DOC_INFO_FIXED + 1 {
            return Err(bad("entry shorter than 33 bytes"));
        }
        // The length was checked above, so each fixed-width slice below has its exact size.
        let u64_at = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
        let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().expect("4 bytes"));
        let kind_len = bytes[DOC_INFO_FIXED] as usize;
        let kind_end = DOC_INFO_FIXED + 1 + kind_len;
        let kind = bytes
            .get(DOC_INFO_FIXED + 1..kind_end)
            .ok_or_else(|| bad("truncated kind"))?;
        let kind = std::str::from_utf8(kind).map_err(|_| bad("kind is not UTF-8"))?;
        let count: [u8; 4] = bytes
            .get(kind_end..kind_end + 4)
            .and_then(|c| c.try_into().ok())
            .ok_or_else(|| bad("truncated head count"))?;
        let count = u32::from_le_bytes(count);
        let rest = &bytes[kind_end + 4..];
        let heads = if count == HEADS_UNKNOWN {
            if !rest.is_empty() {
                return Err(bad("trailing bytes"));
            }
            None
        } else {
            if rest.len() != count as usize * 32 {
                return Err(bad("head count does not match the entry length"));
            }
            let heads = rest
                .chunks_exact(32)
                .map(|h| ChangeHash::try_from(h).map_err(|_| bad("bad head")))
                .collect::<Result<Vec<_>>>()?;
            Some(heads)
        };
        let info = DocInfo {
            seq: u64_at(0),
            snapshot_len: u64_at(8),
            chunk_bytes: u64_at(16),
            first_chunk: u32_at(24),
            next_chunk: u32_at(28),
            kind: kind.to_owned(),
            heads,
        };
        if info.first_chunk > info.next_chunk {
            return Err(bad("first chunk after next chunk"));
        }
        Ok(info)
    }
}

pub(crate) fn u64_from_meta(bytes: &[u8], key: &str) -> Result<u64> {
    let arr: [u8; 8] = bytes
        .try_into()
        .map_err(|_| StoreError::corrupt("meta", format!("{key} is not 8 bytes")))?;
    Ok(u64::from_le_bytes(arr))
}

pub(crate) fn u32_from_meta(bytes: &[u8], key: &str) -> Result<u32> {
    let arr: [u8; 4] = bytes
        .try_into()
        .map_err(|_| StoreError::corrupt("meta", format!("{key} is not 4 bytes")))?;
    Ok(u32::from_le_bytes(arr))
}

/// Checks a caller-given document kind: 1 to 64 bytes.
pub(crate) fn check_kind(kind: &str) -> Result<()> {
    if kind.is_empty() || kind.len() > 64 {
        return Err(StoreError::BadKind(kind.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doc_info_round_trips_and_rejects_short_or_inconsistent_entries() {
        let info = DocInfo {
            seq: 7,
            snapshot_len: 100,
            chunk_bytes: 20,
            first_chunk: 3,
            next_chunk: 5,
            kind: "deal".into(),
            heads: Some(vec![ChangeHash([7; 32]), ChangeHash([9; 32])]),
        };
        assert_eq!(DocInfo::decode(&info.encode()).unwrap(), info);
        let unknown = DocInfo {
            heads: None,
            ..info.clone()
        };
        assert_eq!(DocInfo::decode(&unknown.encode()).unwrap(), unknown);
        assert!(DocInfo::decode(&[0; 10]).is_err());
        let encoded = info.encode();
        assert!(DocInfo::decode(&encoded[..encoded.len() - 1]).is_err());
        let mut bad = info.encode();
        bad[24..28].copy_from_slice(&9u32.to_le_bytes());
        assert!(DocInfo::decode(&bad).is_err());
    }
}
