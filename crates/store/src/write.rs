//! Writing the store: [`WriteBatch`], one redb write transaction.

use automerge::Automerge;
use rand::RngCore;
use redb::{Key, ReadableTable, TableDefinition, Value, WriteTransaction};
use sellsync_model::{DeviceId, RecordId, UserId};

use crate::error::{Result, StoreError};
use crate::read::{StoreRead, doc_info, encode_shadow, load_automerge, sealed, token_hash};
use crate::schema::{
    CONFLICTS, CRM_BY_RECORD, DEVICE_TOKENS, DOC_CHUNKS, DOC_INFO, DOC_SNAPSHOTS, DocInfo, FEED,
    IDENTITY, IDENTITY_NODE, KV, META, META_FEED_SEQ, META_NOTIFICATION_SEQ, NOTIFICATIONS,
    PEER_CHECKPOINTS, RECORD_BY_CRM, SHADOWS, SYNC_STATES, check_kind, u64_from_meta,
};
use crate::store::StoreOptions;
use crate::types::{CrmId, IssuedToken, NodeIdentity, PeerCheckpoint, Shadow, TokenInfo};

/// Creates every table of the schema (a fresh store has them all, so reads never miss one).
pub(crate) fn create_tables(tx: &WriteTransaction) -> Result<()> {
    tx.open_table(META)?;
    tx.open_table(DOC_INFO)?;
    tx.open_table(DOC_SNAPSHOTS)?;
    tx.open_table(DOC_CHUNKS)?;
    tx.open_table(FEED)?;
    tx.open_table(SYNC_STATES)?;
    tx.open_table(PEER_CHECKPOINTS)?;
    tx.open_table(CRM_BY_RECORD)?;
    tx.open_table(RECORD_BY_CRM)?;
    tx.open_table(CONFLICTS)?;
    tx.open_table(NOTIFICATIONS)?;
    tx.open_table(IDENTITY)?;
    tx.open_table(DEVICE_TOKENS)?;
    tx.open_table(KV)?;
    tx.open_table(SHADOWS)?;
    Ok(())
}

/// One write transaction, handed to the closure of [`crate::Store::write`].
///
/// Nothing written here is visible to other readers or durable until the closure returns `Ok`
/// and the commit succeeds; then all of it is. Reads through [`StoreRead`] see this batch's own
/// writes.
pub struct WriteBatch<'a> {
    tx: &'a WriteTransaction,
    options: &'a StoreOptions,
    /// The feed head after this batch's document writes, if it wrote any.
    feed_seq: Option<u64>,
}

impl std::fmt::Debug for WriteBatch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteBatch")
            .field("feed_seq", &self.feed_seq)
            .finish_non_exhaustive()
    }
}

impl sealed::Tables for WriteBatch<'_> {
    fn table<K: Key + 'static, V: Value + 'static>(
        &self,
        def: TableDefinition<'static, K, V>,
    ) -> Result<impl ReadableTable<K, V> + '_> {
        Ok(self.tx.open_table(def)?)
    }
}

impl StoreRead for WriteBatch<'_> {}

impl<'a> WriteBatch<'a> {
    pub(crate) fn new(tx: &'a WriteTransaction, options: &'a StoreOptions) -> Self {
        WriteBatch {
            tx,
            options,
            feed_seq: None,
        }
    }

    pub(crate) fn feed_seq_written(&self) -> Option<u64> {
        self.feed_seq
    }

    /// Raises the feed head to at least `floor` (never lowers it), so that every later change
    /// gets a seq above `floor`. For a fresh store that replaces an earlier one of the same
    /// node: peers hold checkpoints into the earlier store's feed, and a feed must never go
    /// below a checkpoint a peer holds for it.
    pub fn raise_feed_floor(&mut self, floor: u64) -> Result<u64> {
        let head = self.feed_head()?.max(floor);
        let mut meta = self.tx.open_table(META)?;
        meta.insert(META_FEED_SEQ, head.to_le_bytes().as_slice())?;
        self.feed_seq = Some(head);
        Ok(head)
    }

    /// Takes the next feed seq and moves `record`'s single feed entry to it.
    fn bump_feed(&mut self, record: &RecordId, old_seq: u64) -> Result<u64> {
        let seq = self.feed_head()? + 1;
        {
            let mut meta = self.tx.open_table(META)?;
            meta.insert(META_FEED_SEQ, seq.to_le_bytes().as_slice())?;
        }
        let mut feed = self.tx.open_table(FEED)?;
        if old_seq != 0 {
            feed.remove(old_seq)?;
        }
        feed.insert(seq, record.as_str())?;
        self.feed_seq = Some(seq);
        Ok(seq)
    }

    fn put_info(&self, record: &RecordId, info: &DocInfo) -> Result<()> {
        let mut t = self.tx.open_table(DOC_INFO)?;
        t.insert(record.as_str(), info.encode().as_slice())?;
        Ok(())
    }

    fn existing_info(&self, record: &RecordId, kind: &str) -> Result<Option<DocInfo>> {
        check_kind(kind)?;
        let info = doc_info(self, record)?;
        if let Some(info) = &info
            && info.kind != kind
        {
            return Err(StoreError::KindMismatch {
                record: record.to_string(),
                stored: info.kind.clone(),
                given: kind.to_owned(),
            });
        }
        Ok(info)
    }

    fn needs_compaction(&self, info: &DocInfo) -> bool {
        info.chunk_count() > self.options.compact_max_chunks
            || info.chunk_bytes > self.options.compact_min_bytes.max(info.snapshot_len)
    }

    /// Appends incremental changes (`Automerge::save_after(old_heads)` or `save_incremental()`
    /// output) to a document, creating it with `kind` if it does not exist, and moves the
    /// document to a new feed seq, which it returns. Empty `changes` write nothing and return
    /// `None`.
    ///
    /// The bytes must come from automerge; they are not parsed here. When the document's chunks
    /// pass the compaction threshold, the document is loaded and compacted in this batch.
    ///
    /// Errors: [`StoreError::KindMismatch`] if the document exists with another kind,
    /// [`StoreError::BadKind`].
    pub fn append_doc_changes(
        &mut self,
        record: &RecordId,
        kind: &str,
        changes: &[u8],
    ) -> Result<Option<u64>> {
        self.append_chunk(record, kind, changes, None)
    }

    /// [`WriteBatch::append_doc_changes`] for a caller that holds the document with the changes
    /// applied: compaction then saves `doc` instead of loading it.
    pub(crate) fn append_chunk(
        &mut self,
        record: &RecordId,
        kind: &str,
        changes: &[u8],
        doc: Option<&Automerge>,
    ) -> Result<Option<u64>> {
        let existing = self.existing_info(record, kind)?;
        if changes.is_empty() {
            return Ok(None);
        }
        let mut info = existing.unwrap_or_else(|| DocInfo::new(kind));
        if info.next_chunk == u32::MAX {
            // Unreachable with any sane threshold: compaction resets the numbering.
            self.compact_with(record, &mut info, None)?;
        }
        {
            let mut chunks = self.tx.open_table(DOC_CHUNKS)?;
            chunks.insert((record.as_str(), info.next_chunk), changes)?;
        }
        info.next_chunk += 1;
        info.chunk_bytes += changes.len() as u64;
        info.heads = doc.map(|d| d.get_heads());
        info.seq = self.bump_feed(record, info.seq)?;
        if self.needs_compaction(&info) {
            self.compact_with(record, &mut info, doc)?;
        }
        self.put_info(record, &info)?;
        Ok(Some(info.seq))
    }

    /// Moves a document to a new feed seq without changing its content, so that every peer's
    /// next session announces it again (the hub does this when its access rules change: records
    /// a device may now see reach it although they did not change). Returns the new seq, or
    /// `None` if there is no such document.
    pub fn reannounce_doc(&mut self, record: &RecordId) -> Result<Option<u64>> {
        let Some(mut info) = doc_info(self, record)? else {
            return Ok(None);
        };
        info.seq = self.bump_feed(record, info.seq)?;
        self.put_info(record, &info)?;
        Ok(Some(info.seq))
    }

    /// Replaces a document's content with a snapshot (`Automerge::save()` output), creating it
    /// with `kind` if needed, and moves it to a new feed seq, which it returns.
    ///
    /// The snapshot is loaded once to check it: bytes automerge rejects give
    /// [`StoreError::Document`] and change nothing.
    pub fn put_doc_snapshot(
        &mut self,
        record: &RecordId,
        kind: &str,
        snapshot: &[u8],
    ) -> Result<u64> {
        let existing = self.existing_info(record, kind)?;
        let err = |source: Box<dyn std::error::Error + Send + Sync>| StoreError::Document {
            record: record.to_string(),
            source,
        };
        let loaded = sellsync_model::guarded(|| Automerge::load(snapshot))
            .map_err(|e| err(e.into()))?
            .map_err(|e| err(e.into()))?;
        let mut info = existing.unwrap_or_else(|| DocInfo::new(kind));
        info.heads = Some(loaded.get_heads());
        self.write_snapshot(record, &mut info, snapshot)?;
        info.seq = self.bump_feed(record, info.seq)?;
        self.put_info(record, &info)?;
        Ok(info.seq)
    }

    /// Folds a document's chunks into a new snapshot. Returns `false` if there was nothing to
    /// fold (or no such document). The content and the feed seq do not change.
    pub fn compact_doc(&mut self, record: &RecordId) -> Result<bool> {
        let Some(mut info) = doc_info(self, record)? else {
            return Ok(false);
        };
        if info.chunk_count() == 0 {
            return Ok(false);
        }
        self.compact_with(record, &mut info, None)?;
        self.put_info(record, &info)?;
        Ok(true)
    }

    /// Writes a new snapshot (from `doc`, or by loading the stored bytes) and drops the chunks.
    /// The caller writes `info` back.
    fn compact_with(
        &mut self,
        record: &RecordId,
        info: &mut DocInfo,
        doc: Option<&Automerge>,
    ) -> Result<()> {
        let (snapshot, heads) = match doc {
            Some(doc) => (doc.save(), doc.get_heads()),
            None => {
                let bytes = self.doc_bytes_with(record, info)?;
                let doc = load_automerge(record, &bytes)?;
                (doc.save(), doc.get_heads())
            }
        };
        info.heads = Some(heads);
        self.write_snapshot(record, info, &snapshot)
    }

    fn doc_bytes_with(&self, record: &RecordId, info: &DocInfo) -> Result<crate::DocBytes> {
        // The info may be ahead of the stored one within this batch: write it first.
        self.put_info(record, info)?;
        self.doc_bytes(record)?
            .ok_or_else(|| StoreError::corrupt("doc_info", format!("{record} vanished")))
    }

    fn write_snapshot(
        &mut self,
        record: &RecordId,
        info: &mut DocInfo,
        snapshot: &[u8],
    ) -> Result<()> {
        {
            let mut snaps = self.tx.open_table(DOC_SNAPSHOTS)?;
            snaps.insert(record.as_str(), snapshot)?;
        }
        {
            let mut chunks = self.tx.open_table(DOC_CHUNKS)?;
            for n in info.first_chunk..info.next_chunk {
                chunks.remove((record.as_str(), n))?;
            }
        }
        info.snapshot_len = snapshot.len() as u64;
        info.chunk_bytes = 0;
        info.first_chunk = 0;
        info.next_chunk = 0;
        Ok(())
    }

    /// Removes a document, its feed entry, its conflicts view, CRM id mapping and shadow.
    /// Sync states kept for it are removed with [`WriteBatch::forget_peer`] or stay harmless.
    /// Returns `false` if there was no such document.
    pub fn remove_doc(&mut self, record: &RecordId) -> Result<bool> {
        let Some(info) = doc_info(self, record)? else {
            return Ok(false);
        };
        {
            let mut chunks = self.tx.open_table(DOC_CHUNKS)?;
            for n in info.first_chunk..info.next_chunk {
                chunks.remove((record.as_str(), n))?;
            }
        }
        self.tx.open_table(DOC_SNAPSHOTS)?.remove(record.as_str())?;
        self.tx.open_table(DOC_INFO)?.remove(record.as_str())?;
        self.tx.open_table(FEED)?.remove(info.seq)?;
        self.tx.open_table(CONFLICTS)?.remove(record.as_str())?;
        self.tx.open_table(SHADOWS)?.remove(record.as_str())?;
        self.unmap_crm_id(record)?;
        Ok(true)
    }

    /// Stores the sync state (`automerge::sync::State::encode()`) for a peer and a document.
    pub fn put_sync_state(
        &mut self,
        peer: &DeviceId,
        record: &RecordId,
        state: &[u8],
    ) -> Result<()> {
        let mut t = self.tx.open_table(SYNC_STATES)?;
        t.insert((peer.as_str(), record.as_str()), state)?;
        Ok(())
    }

    /// Removes every sync state and the checkpoints kept for a peer (a revoked device, a
    /// forgotten LAN peer). Returns the number of sync states removed.
    pub fn forget_peer(&mut self, peer: &DeviceId) -> Result<usize> {
        let mut t = self.tx.open_table(SYNC_STATES)?;
        let mut keys: Vec<String> = Vec::new();
        for entry in t.range((peer.as_str(), "")..)? {
            let (k, _) = entry?;
            let (p, r) = k.value();
            if p != peer.as_str() {
                break;
            }
            keys.push(r.to_owned());
        }
        for r in &keys {
            t.remove((peer.as_str(), r.as_str()))?;
        }
        self.tx
            .open_table(PEER_CHECKPOINTS)?
            .remove(peer.as_str())?;
        Ok(keys.len())
    }

    /// Stores both checkpoints for a peer.
    pub fn set_peer_checkpoint(
        &mut self,
        peer: &DeviceId,
        checkpoint: &PeerCheckpoint,
    ) -> Result<()> {
        let mut t = self.tx.open_table(PEER_CHECKPOINTS)?;
        t.insert(
            peer.as_str(),
            (checkpoint.ours, checkpoint.theirs.as_slice()),
        )?;
        Ok(())
    }

    /// Records that the peer has everything of ours up to feed seq `ours`.
    pub fn set_peer_ours(&mut self, peer: &DeviceId, ours: u64) -> Result<()> {
        let mut cp = self.peer_checkpoint(peer)?;
        cp.ours = ours;
        self.set_peer_checkpoint(peer, &cp)
    }

    /// Records the opaque checkpoint the peer gave us for its own feed.
    pub fn set_peer_theirs(&mut self, peer: &DeviceId, theirs: &[u8]) -> Result<()> {
        let mut cp = self.peer_checkpoint(peer)?;
        cp.theirs = theirs.to_vec();
        self.set_peer_checkpoint(peer, &cp)
    }

    /// Records a record's CRM id. Idempotent for the same pair.
    ///
    /// Errors: [`StoreError::IndexConflict`] if the record already maps to another CRM id or the
    /// CRM id to another record (the index stays one-to-one, nothing is written).
    pub fn map_crm_id(&mut self, record: &RecordId, crm: &CrmId) -> Result<()> {
        check_kind(&crm.kind)?;
        let conflict = |reason: String| StoreError::IndexConflict {
            record: record.to_string(),
            kind: crm.kind.clone(),
            crm_id: crm.id,
            reason,
        };
        if let Some(existing) = self.crm_id(record)? {
            if &existing == crm {
                return Ok(());
            }
            return Err(conflict(format!(
                "the record maps to {} {}",
                existing.kind, existing.id
            )));
        }
        if let Some(other) = self.record_for_crm(&crm.kind, crm.id)? {
            return Err(conflict(format!("record {other} has that CRM id")));
        }
        self.tx
            .open_table(CRM_BY_RECORD)?
            .insert(record.as_str(), (crm.kind.as_str(), crm.id))?;
        self.tx
            .open_table(RECORD_BY_CRM)?
            .insert((crm.kind.as_str(), crm.id), record.as_str())?;
        Ok(())
    }

    /// Removes a record's CRM id from both directions of the index. Returns the removed id.
    pub fn unmap_crm_id(&mut self, record: &RecordId) -> Result<Option<CrmId>> {
        let Some(crm) = self.crm_id(record)? else {
            return Ok(None);
        };
        self.tx.open_table(CRM_BY_RECORD)?.remove(record.as_str())?;
        self.tx
            .open_table(RECORD_BY_CRM)?
            .remove((crm.kind.as_str(), crm.id))?;
        Ok(Some(crm))
    }

    /// Sets a record's open-conflicts view (`None` or empty: the record has none).
    pub fn set_conflicts(&mut self, record: &RecordId, view: Option<&[u8]>) -> Result<()> {
        let mut t = self.tx.open_table(CONFLICTS)?;
        match view {
            Some(v) if !v.is_empty() => {
                t.insert(record.as_str(), v)?;
            }
            _ => {
                t.remove(record.as_str())?;
            }
        }
        Ok(())
    }

    /// Appends a notification for `user`; returns its id (store-wide, increasing).
    pub fn add_notification(
        &mut self,
        user: UserId,
        created_at_ms: i64,
        body: &[u8],
    ) -> Result<u64> {
        let id = {
            let mut meta = self.tx.open_table(META)?;
            let last = match meta.get(META_NOTIFICATION_SEQ)? {
                Some(v) => u64_from_meta(v.value(), META_NOTIFICATION_SEQ)?,
                None => 0,
            };
            let id = last + 1;
            meta.insert(META_NOTIFICATION_SEQ, id.to_le_bytes().as_slice())?;
            id
        };
        let mut t = self.tx.open_table(NOTIFICATIONS)?;
        t.insert(id, (user.0, created_at_ms, false, body))?;
        Ok(id)
    }

    /// Marks a notification read. Errors with [`StoreError::NoSuchNotification`].
    pub fn mark_notification_read(&mut self, id: u64) -> Result<()> {
        let mut t = self.tx.open_table(NOTIFICATIONS)?;
        let (user, at, body) = {
            let v = t.get(id)?.ok_or(StoreError::NoSuchNotification(id))?;
            let (user, at, _, body) = v.value();
            (user, at, body.to_vec())
        };
        t.insert(id, (user, at, true, body.as_slice()))?;
        Ok(())
    }

    /// Stores this node's identity (replacing any previous one).
    pub fn set_identity(&mut self, identity: &NodeIdentity) -> Result<()> {
        // Serialising plain strings and integers cannot fail.
        let json = serde_json::to_vec(identity).expect("identity serialises");
        self.tx
            .open_table(IDENTITY)?
            .insert(IDENTITY_NODE, json.as_slice())?;
        Ok(())
    }

    /// Issues a device token for `user` on `device`, valid until `expires_at_ms` (never if
    /// `None`). The token is 32 random bytes in hex; only its SHA-256 is stored.
    pub fn issue_token(
        &mut self,
        user: UserId,
        device: &DeviceId,
        issued_at_ms: i64,
        expires_at_ms: Option<i64>,
    ) -> Result<IssuedToken> {
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        let token = hex::encode(secret);
        let hash = token_hash(&token);
        let info = TokenInfo {
            token_id: hex::encode(&hash[..8]),
            user,
            device: device.clone(),
            issued_at_ms,
            expires_at_ms,
            revoked_at_ms: None,
        };
        self.put_token(&hash, &info)?;
        Ok(IssuedToken { token, info })
    }

    fn put_token(&mut self, hash: &[u8], info: &TokenInfo) -> Result<()> {
        // Serialising plain strings and integers cannot fail.
        let json = serde_json::to_vec(info).expect("token info serialises");
        self.tx
            .open_table(DEVICE_TOKENS)?
            .insert(hash, json.as_slice())?;
        Ok(())
    }

    /// Revokes every token matching `matches` that is not revoked yet; returns how many.
    fn revoke_where(&mut self, now_ms: i64, matches: impl Fn(&TokenInfo) -> bool) -> Result<usize> {
        let hits: Vec<(Vec<u8>, TokenInfo)> = {
            let t = self.tx.open_table(DEVICE_TOKENS)?;
            let mut hits = Vec::new();
            for entry in t.iter()? {
                let (k, v) = entry?;
                let info: TokenInfo = serde_json::from_slice(v.value())
                    .map_err(|e| StoreError::corrupt("device_tokens", e.to_string()))?;
                if info.revoked_at_ms.is_none() && matches(&info) {
                    hits.push((k.value().to_vec(), info));
                }
            }
            hits
        };
        for (hash, mut info) in hits.iter().cloned() {
            info.revoked_at_ms = Some(now_ms);
            self.put_token(&hash, &info)?;
        }
        Ok(hits.len())
    }

    /// Revokes the token with this id (see [`TokenInfo::token_id`]); returns whether one was
    /// revoked now.
    pub fn revoke_token(&mut self, token_id: &str, now_ms: i64) -> Result<bool> {
        Ok(self.revoke_where(now_ms, |i| i.token_id == token_id)? > 0)
    }

    /// Revokes every live token of a device; returns how many.
    pub fn revoke_device_tokens(&mut self, device: &DeviceId, now_ms: i64) -> Result<usize> {
        self.revoke_where(now_ms, |i| &i.device == device)
    }

    /// Sets a key-value entry.
    pub fn kv_put(&mut self, key: &str, value: &[u8]) -> Result<()> {
        self.tx.open_table(KV)?.insert(key, value)?;
        Ok(())
    }

    /// Removes a key-value entry; returns whether it existed.
    pub fn kv_remove(&mut self, key: &str) -> Result<bool> {
        Ok(self.tx.open_table(KV)?.remove(key)?.is_some())
    }

    /// Stores the bridge's shadow of a record.
    pub fn put_shadow(&mut self, record: &RecordId, shadow: &Shadow) -> Result<()> {
        self.tx
            .open_table(SHADOWS)?
            .insert(record.as_str(), encode_shadow(shadow).as_slice())?;
        Ok(())
    }

    /// Removes the bridge's shadow of a record; returns whether it existed.
    pub fn remove_shadow(&mut self, record: &RecordId) -> Result<bool> {
        Ok(self
            .tx
            .open_table(SHADOWS)?
            .remove(record.as_str())?
            .is_some())
    }
}
