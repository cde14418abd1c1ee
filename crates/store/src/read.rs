//! Reading the store: the [`StoreRead`] methods, shared by read snapshots and write batches.

use automerge::{Automerge, ChangeHash};
use redb::{Key, ReadTransaction, ReadableTable, ReadableTableMetadata, TableDefinition, Value};
use sellsync_model::{DeviceId, RecordId, UserId, guarded};
use sha2::{Digest, Sha256};

use crate::error::{Result, StoreError, TokenRejected};
use crate::schema::{
    CONFLICTS, CRM_BY_RECORD, DEVICE_TOKENS, DOC_CHUNKS, DOC_INFO, DOC_SNAPSHOTS, DocInfo, FEED,
    IDENTITY, IDENTITY_NODE, KV, META, META_FEED_SEQ, NOTIFICATIONS, PEER_CHECKPOINTS,
    RECORD_BY_CRM, SHADOWS, SYNC_STATES, u64_from_meta,
};
use crate::types::{
    CrmId, DocBytes, DocMeta, FeedEntry, NodeIdentity, Notification, NotificationFilter,
    PeerCheckpoint, Shadow, TokenInfo,
};

pub(crate) mod sealed {
    use redb::{Key, ReadableTable, TableDefinition, Value};

    use crate::error::Result;

    /// Opens a table for reading inside whatever transaction the implementor wraps.
    pub trait Tables {
        fn table<K: Key + 'static, V: Value + 'static>(
            &self,
            def: TableDefinition<'static, K, V>,
        ) -> Result<impl ReadableTable<K, V> + '_>;
    }
}

/// A consistent read-only snapshot of the store (a redb read transaction).
///
/// It sees every write committed before it was taken and none after. Drop it soon: a live
/// snapshot keeps the pages it sees from being reused.
pub struct ReadView {
    tx: ReadTransaction,
}

impl std::fmt::Debug for ReadView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadView").finish_non_exhaustive()
    }
}

impl ReadView {
    pub(crate) fn new(tx: ReadTransaction) -> Self {
        ReadView { tx }
    }
}

impl sealed::Tables for ReadView {
    fn table<K: Key + 'static, V: Value + 'static>(
        &self,
        def: TableDefinition<'static, K, V>,
    ) -> Result<impl ReadableTable<K, V> + '_> {
        Ok(self.tx.open_table(def)?)
    }
}

impl StoreRead for ReadView {}

pub(crate) fn parse_record(s: &str, table: &'static str) -> Result<RecordId> {
    s.parse()
        .map_err(|e| StoreError::corrupt(table, format!("bad record id: {e}")))
}

pub(crate) fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

pub(crate) fn decode_shadow(bytes: &[u8]) -> Result<Shadow> {
    let bad = || StoreError::corrupt("shadows", "truncated shadow");
    let count: [u8; 4] = bytes
        .get(..4)
        .ok_or_else(bad)?
        .try_into()
        .map_err(|_| bad())?;
    let count = u32::from_le_bytes(count) as usize;
    let heads_end = count
        .checked_mul(32)
        .and_then(|n| n.checked_add(4))
        .ok_or_else(bad)?;
    let heads_bytes = bytes.get(4..heads_end).ok_or_else(bad)?;
    let heads = heads_bytes
        .chunks_exact(32)
        .map(|h| ChangeHash::try_from(h).map_err(|_| bad()))
        .collect::<Result<Vec<_>>>()?;
    Ok(Shadow {
        crm_version: bytes[heads_end..].to_vec(),
        heads,
    })
}

pub(crate) fn encode_shadow(shadow: &Shadow) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + 32 * shadow.heads.len() + shadow.crm_version.len());
    out.extend_from_slice(&(shadow.heads.len() as u32).to_le_bytes());
    for h in &shadow.heads {
        out.extend_from_slice(&h.0);
    }
    out.extend_from_slice(&shadow.crm_version);
    out
}

/// Builds an automerge document from its stored bytes (snapshot, then chunks in order).
/// Stored bytes are foreign (a damaged file, another build): automerge runs guarded.
pub fn load_automerge(record: &RecordId, bytes: &DocBytes) -> Result<Automerge> {
    let err = |source: Box<dyn std::error::Error + Send + Sync>| StoreError::Document {
        record: record.to_string(),
        source,
    };
    let mut doc = if bytes.snapshot.is_empty() {
        Automerge::new()
    } else {
        guarded(|| Automerge::load(&bytes.snapshot))
            .map_err(|e| err(e.into()))?
            .map_err(|e| err(e.into()))?
    };
    for chunk in &bytes.chunks {
        guarded(|| doc.load_incremental(chunk))
            .map_err(|e| err(e.into()))?
            .map_err(|e| err(e.into()))?;
    }
    Ok(doc)
}

/// The stored [`DocInfo`] of a document, if it was ever written.
pub(crate) fn doc_info<T: sealed::Tables + ?Sized>(
    r: &T,
    record: &RecordId,
) -> Result<Option<DocInfo>> {
    let t = r.table(DOC_INFO)?;
    let v = t.get(record.as_str())?;
    v.map(|v| DocInfo::decode(v.value())).transpose()
}

fn meta_of(info: &DocInfo) -> DocMeta {
    DocMeta {
        kind: info.kind.clone(),
        seq: info.seq,
        snapshot_bytes: info.snapshot_len,
        chunk_count: info.chunk_count(),
        chunk_bytes: info.chunk_bytes,
        heads: info.heads.clone(),
    }
}

/// Read access to every table. Implemented by [`ReadView`] (a snapshot) and
/// [`crate::WriteBatch`] (reads its own uncommitted writes).
pub trait StoreRead: sealed::Tables {
    /// The store-wide feed seq of the latest document write (0 for an empty store).
    fn feed_head(&self) -> Result<u64> {
        let meta = self.table(META)?;
        let v = meta.get(META_FEED_SEQ)?;
        match v {
            Some(v) => u64_from_meta(v.value(), META_FEED_SEQ),
            None => Ok(0),
        }
    }

    /// What the store knows about a document, or `None` if it has never been written.
    fn doc_meta(&self, record: &RecordId) -> Result<Option<DocMeta>> {
        Ok(doc_info(self, record)?.as_ref().map(meta_of))
    }

    /// [`StoreRead::doc_meta`] for many documents at once, in the order given (one table open).
    fn doc_metas(&self, records: &[RecordId]) -> Result<Vec<Option<DocMeta>>> {
        let t = self.table(DOC_INFO)?;
        records
            .iter()
            .map(|r| {
                let v = t.get(r.as_str())?;
                v.map(|v| DocInfo::decode(v.value()).map(|i| meta_of(&i)))
                    .transpose()
            })
            .collect()
    }

    /// A document's stored bytes, or `None` if it has never been written.
    fn doc_bytes(&self, record: &RecordId) -> Result<Option<DocBytes>> {
        let Some(info) = doc_info(self, record)? else {
            return Ok(None);
        };
        let snapshot = {
            let t = self.table(DOC_SNAPSHOTS)?;
            let v = t.get(record.as_str())?;
            v.map(|v| v.value().to_vec()).unwrap_or_default()
        };
        if snapshot.len() as u64 != info.snapshot_len {
            return Err(StoreError::corrupt(
                "doc_snapshots",
                format!("{record}: length mismatch"),
            ));
        }
        let t = self.table(DOC_CHUNKS)?;
        let mut chunks = Vec::with_capacity(info.chunk_count() as usize);
        let range =
            t.range((record.as_str(), info.first_chunk)..(record.as_str(), info.next_chunk))?;
        for entry in range {
            let (k, v) = entry?;
            if k.value().1 != info.first_chunk + chunks.len() as u32 {
                return Err(StoreError::corrupt(
                    "doc_chunks",
                    format!("{record}: missing chunk"),
                ));
            }
            chunks.push(v.value().to_vec());
        }
        if chunks.len() as u32 != info.chunk_count() {
            return Err(StoreError::corrupt(
                "doc_chunks",
                format!("{record}: missing chunk"),
            ));
        }
        Ok(Some(DocBytes {
            meta: meta_of(&info),
            snapshot,
            chunks,
        }))
    }

    /// Loads a document into memory, or `None` if it has never been written.
    ///
    /// The document gets a random actor: set the node's actor before changing it.
    fn load_doc(&self, record: &RecordId) -> Result<Option<(DocMeta, Automerge)>> {
        let Some(bytes) = self.doc_bytes(record)? else {
            return Ok(None);
        };
        let doc = load_automerge(record, &bytes)?;
        Ok(Some((bytes.meta, doc)))
    }

    /// A document's current heads, or `None` if it has never been written. Answered from the
    /// document record when known (see [`DocMeta::heads`]), else by loading the document.
    fn doc_heads(&self, record: &RecordId) -> Result<Option<Vec<ChangeHash>>> {
        let Some(info) = doc_info(self, record)? else {
            return Ok(None);
        };
        if let Some(heads) = info.heads {
            return Ok(Some(heads));
        }
        Ok(self.load_doc(record)?.map(|(_, doc)| doc.get_heads()))
    }

    /// Number of documents in the store.
    fn doc_count(&self) -> Result<u64> {
        Ok(self.table(DOC_INFO)?.len()?)
    }

    /// Every document written after feed seq `after`, once each, with its latest seq, in seq
    /// order, at most `limit` of them. Page by passing the last returned seq as `after`.
    fn changed_since(&self, after: u64, limit: usize) -> Result<Vec<FeedEntry>> {
        let feed = self.table(FEED)?;
        let info = self.table(DOC_INFO)?;
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        for entry in feed.range(after.saturating_add(1)..)? {
            let (seq, record) = entry?;
            let record = parse_record(record.value(), "feed")?;
            let kind = match info.get(record.as_str())? {
                Some(v) => DocInfo::decode(v.value())?.kind,
                None => {
                    return Err(StoreError::corrupt(
                        "feed",
                        format!("{record}: no doc_info"),
                    ));
                }
            };
            out.push(FeedEntry {
                seq: seq.value(),
                record,
                kind,
            });
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// The stored sync state (`automerge::sync::State::encode()`) for a peer and a document.
    fn sync_state(&self, peer: &DeviceId, record: &RecordId) -> Result<Option<Vec<u8>>> {
        let t = self.table(SYNC_STATES)?;
        let v = t.get((peer.as_str(), record.as_str()))?;
        Ok(v.map(|v| v.value().to_vec()))
    }

    /// [`StoreRead::sync_state`] for many documents at once, in the order given.
    fn sync_states(&self, peer: &DeviceId, records: &[RecordId]) -> Result<Vec<Option<Vec<u8>>>> {
        let t = self.table(SYNC_STATES)?;
        records
            .iter()
            .map(|r| {
                Ok(t.get((peer.as_str(), r.as_str()))?
                    .map(|v| v.value().to_vec()))
            })
            .collect()
    }

    /// The checkpoints exchanged with a peer (zero and empty if none yet).
    fn peer_checkpoint(&self, peer: &DeviceId) -> Result<PeerCheckpoint> {
        let t = self.table(PEER_CHECKPOINTS)?;
        let v = t.get(peer.as_str())?;
        Ok(v.map(|v| {
            let (ours, theirs) = v.value();
            PeerCheckpoint {
                ours,
                theirs: theirs.to_vec(),
            }
        })
        .unwrap_or_default())
    }

    /// The CRM id of a local record, if the bridge has recorded one.
    fn crm_id(&self, record: &RecordId) -> Result<Option<CrmId>> {
        let t = self.table(CRM_BY_RECORD)?;
        let v = t.get(record.as_str())?;
        Ok(v.map(|v| {
            let (kind, id) = v.value();
            CrmId {
                kind: kind.to_owned(),
                id,
            }
        }))
    }

    /// The local record of a CRM id, if one is recorded.
    fn record_for_crm(&self, kind: &str, id: u64) -> Result<Option<RecordId>> {
        let t = self.table(RECORD_BY_CRM)?;
        let v = t.get((kind, id))?;
        v.map(|v| parse_record(v.value(), "record_by_crm"))
            .transpose()
    }

    /// A record's open-conflicts view, if it has one.
    fn conflicts(&self, record: &RecordId) -> Result<Option<Vec<u8>>> {
        let t = self.table(CONFLICTS)?;
        let v = t.get(record.as_str())?;
        Ok(v.map(|v| v.value().to_vec()))
    }

    /// Every record with open conflicts and its view, ordered by record id.
    fn all_conflicts(&self) -> Result<Vec<(RecordId, Vec<u8>)>> {
        let t = self.table(CONFLICTS)?;
        let mut out = Vec::new();
        for entry in t.iter()? {
            let (k, v) = entry?;
            out.push((parse_record(k.value(), "conflicts")?, v.value().to_vec()));
        }
        Ok(out)
    }

    /// Notifications matching `filter`, oldest first.
    fn notifications(&self, filter: &NotificationFilter) -> Result<Vec<Notification>> {
        let t = self.table(NOTIFICATIONS)?;
        let mut out = Vec::new();
        let limit = filter.limit.unwrap_or(usize::MAX);
        if limit == 0 {
            return Ok(out);
        }
        for entry in t.range(filter.after.saturating_add(1)..)? {
            let (k, v) = entry?;
            let (user, created_at_ms, read, body) = v.value();
            if filter.user.is_some_and(|u| u.0 != user) || (filter.unread_only && read) {
                continue;
            }
            out.push(Notification {
                id: k.value(),
                user: UserId(user),
                created_at_ms,
                read,
                body: body.to_vec(),
            });
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// This node's identity, if it was set.
    fn identity(&self) -> Result<Option<NodeIdentity>> {
        let t = self.table(IDENTITY)?;
        let v = t.get(IDENTITY_NODE)?;
        v.map(|v| {
            serde_json::from_slice(v.value())
                .map_err(|e| StoreError::corrupt("identity", e.to_string()))
        })
        .transpose()
    }

    /// Checks a device token presented at time `now_ms` and returns what it was issued for.
    ///
    /// Errors: [`StoreError::Token`] with [`TokenRejected::Unknown`], `Expired` (at or after
    /// its expiry time) or `Revoked`.
    fn verify_token(&self, token: &str, now_ms: i64) -> Result<TokenInfo> {
        let t = self.table(DEVICE_TOKENS)?;
        let hash = token_hash(token);
        let v = t.get(hash.as_slice())?.ok_or(TokenRejected::Unknown)?;
        let info: TokenInfo = serde_json::from_slice(v.value())
            .map_err(|e| StoreError::corrupt("device_tokens", e.to_string()))?;
        if info.revoked_at_ms.is_some() {
            return Err(TokenRejected::Revoked.into());
        }
        if info.expires_at_ms.is_some_and(|exp| now_ms >= exp) {
            return Err(TokenRejected::Expired.into());
        }
        Ok(info)
    }

    /// Every device token this hub issued (revoked and expired ones included), by issue time.
    fn tokens(&self) -> Result<Vec<TokenInfo>> {
        let t = self.table(DEVICE_TOKENS)?;
        let mut out = Vec::new();
        for entry in t.iter()? {
            let (_, v) = entry?;
            let info: TokenInfo = serde_json::from_slice(v.value())
                .map_err(|e| StoreError::corrupt("device_tokens", e.to_string()))?;
            out.push(info);
        }
        out.sort_by(|a, b| (a.issued_at_ms, &a.token_id).cmp(&(b.issued_at_ms, &b.token_id)));
        Ok(out)
    }

    /// A value of the key-value table.
    fn kv_get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let t = self.table(KV)?;
        let v = t.get(key)?;
        Ok(v.map(|v| v.value().to_vec()))
    }

    /// Every key-value entry whose key starts with `prefix`, in key order.
    fn kv_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let t = self.table(KV)?;
        let mut out = Vec::new();
        for entry in t.range(prefix..)? {
            let (k, v) = entry?;
            if !k.value().starts_with(prefix) {
                break;
            }
            out.push((k.value().to_owned(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// The bridge's shadow of a record, if any.
    fn shadow(&self, record: &RecordId) -> Result<Option<Shadow>> {
        let t = self.table(SHADOWS)?;
        let v = t.get(record.as_str())?;
        v.map(|v| decode_shadow(v.value())).transpose()
    }
}
