//! The store-backed [`Replica`]: sessions read and write a real `sellsync_store::Store`.
//!
//! Invariants:
//! - Every [`Replica::receive`] batch is one store write transaction: documents, sync states
//!   and feed entries of the whole batch commit together or not at all.
//! - A document is stored under the kind its root names (`deal`, `contact`, `catalog`); a new
//!   document without a valid kind is refused.
//! - The catalog document (id [`CATALOG_ID`]) is visible to every user; a record is visible
//!   according to [`Acl`], from the candidates of its `owner_id` field.
//! - The checkpoint kept for a peer's feed is stored as the peer checkpoint's `theirs` bytes,
//!   a u64 little-endian.
//! - Checkpoints and sync states kept for a peer belong to one store of that peer: the store
//!   key it last presented is kept under `service/peer-store/<peer>`, and a different key
//!   forgets them (a replaced phone syncs from scratch).
//! - Access is a function of a document's content, the catalog and the policy. It is memoised
//!   per document with the feed seq of the document's latest write and a fingerprint of the
//!   catalog and policy, in memory and in the store's key-value table (key
//!   `service/access/<record>`, see [`encode_access`]); an entry whose seq or fingerprint
//!   differs is recomputed from the document. Feed seqs are never reused, so a matching seq
//!   means the same content.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use automerge::sync::{self, SyncDoc};
use automerge::{ActorId, Automerge, ChangeHash, ROOT, ReadDoc};
use sellsync_model::{
    Catalog, DeviceId, FieldKey, Policy, RecordDoc, RecordId, Slot, UserId, Value, guarded,
};
use sellsync_store::{Docs, Store, StoreError, StoreRead};
use sellsync_sync::{
    FeedSlice, Incoming, Peer, Principal, Received, Replica, Role, TokenRefused, Visibility,
};

use crate::acl::Acl;
use crate::credential::{Issuer, PeerAuth, SigningKey};
use crate::signed::{self, KnownDevice, Proof, Proven, Verifier};

/// The record id of the catalog document a hub shares with every device.
pub const CATALOG_ID: &str = "catalog";

/// Default memory budget of the document cache.
pub const DEFAULT_CACHE_BUDGET: usize = 256 << 20;

/// The automerge actor of a node's changes (the same bytes the model uses).
pub fn actor_of(node: &DeviceId) -> ActorId {
    ActorId::from(node.as_str().as_bytes())
}

/// The kind a document's root names (`kind` key), if it is a plain string.
pub fn root_kind(doc: &Automerge) -> Option<String> {
    match doc.get(ROOT, "kind").ok()?? {
        (automerge::Value::Scalar(s), _) => s.as_str().map(str::to_owned),
        _ => None,
    }
}

/// Who a document is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DocAccess {
    /// Every user (the catalog).
    Everyone,
    /// The candidate owners of a record (empty: no owner; admins only).
    Owners(Vec<UserId>),
}

/// One node's documents, feed, sync states and access rules, on a store.
#[derive(Debug)]
pub struct StoreReplica {
    /// Interior mutability because [`Replica::generate`] reads through a cache that loads
    /// documents on demand. Never borrowed across calls.
    docs: RefCell<Docs>,
    node: DeviceId,
    user: Option<UserId>,
    acl: Acl,
    /// A hub's: hands each authenticated device a grant (see [`crate::credential`]).
    issuer: Option<Issuer>,
    /// A device's, once it holds a grant: checks LAN peers and proves itself to them.
    peer_auth: Option<PeerAuth>,
    /// The time used to check token expiry, set by the caller (the shell reads the clock).
    now_ms: i64,
    catalog: Catalog,
    policy: Policy,
    /// Who may see each document, with the feed seq of the write it was computed from.
    access: RefCell<HashMap<RecordId, (u64, DocAccess)>>,
    /// Fingerprint of the catalog and policy the memo was computed with.
    fingerprint: u64,
    /// This node's key, signing the changes of its own it sends (see [`crate::signed`]); and
    /// whether it is a hub (which endorses every change it sends and checks every change it
    /// receives).
    signing: Option<(SigningKey, bool)>,
    /// A hub's latest endorsement of each document it sent (see [`crate::signed`]): the same
    /// heads give the same signature, so a document sent to many devices is signed once.
    endorsements: RefCell<HashMap<RecordId, Proof>>,
    /// The key each peer proved or presented in this process's sessions (see
    /// [`Replica::peer_store`]).
    peer_keys: HashMap<DeviceId, Vec<u8>>,
    /// The signatures offered with changes automerge queued rather than applied (a change
    /// whose dependencies had not arrived yet), by document. Those changes are applied, and
    /// checked, with a later message (from the same peer or another) that may not carry
    /// their signatures.
    queued_proofs: RefCell<HashMap<RecordId, Vec<Proof>>>,
}

const ACCESS_KEY: &str = "service/access/";
/// How many documents' endorsements a hub keeps in memory before starting afresh.
const ENDORSEMENT_CACHE: usize = 50_000;
/// Key-value prefix of the store key each peer last presented (see [`Replica::peer_store`]).
const PEER_STORE_KEY: &str = "service/peer-store/";
/// Key-value prefix of the store keys a peer presented before, each with the time it was
/// replaced (a hub's; see [`crate::signed`]: changes they signed may still arrive by a relay).
const PAST_KEYS_KEY: &str = "service/past-keys/";
/// How many documents' queued changes' signatures are kept before starting
/// afresh, and how many signatures each keeps (a message holds a few; a peer sending more
/// without its changes applying is not owed them).
const QUEUED_PROOFS_KEPT: usize = 4096;
const QUEUED_PROOFS_PER_DOC: usize = 4096;
/// How many past keys a hub keeps per device (the latest).
const PAST_KEYS_KEPT: usize = 16;

/// A fingerprint of what access depends on besides the document (a cache key only: a
/// collision-free stable hash is not needed, a mismatch only costs a recomputation).
fn fingerprint(catalog: &Catalog, policy: &Policy) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    // Serialising plain data cannot fail; a failure would only weaken the cache key.
    serde_json::to_vec(catalog).unwrap_or_default().hash(&mut h);
    format!("{policy:?}").hash(&mut h);
    h.finish()
}

/// The stored memo entry: seq (u64 LE), fingerprint (u64 LE), then `0` for everyone or `1`
/// followed by each owner (u64 LE).
fn encode_access(seq: u64, fingerprint: u64, access: &DocAccess) -> Vec<u8> {
    let mut out = Vec::with_capacity(25);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&fingerprint.to_le_bytes());
    match access {
        DocAccess::Everyone => out.push(0),
        DocAccess::Owners(o) => {
            out.push(1);
            for u in o {
                out.extend_from_slice(&u.0.to_le_bytes());
            }
        }
    }
    out
}

/// Decodes [`encode_access`] output; `None` for anything else.
fn decode_access(bytes: &[u8]) -> Option<(u64, u64, DocAccess)> {
    let word = |b: &[u8]| <[u8; 8]>::try_from(b).ok().map(u64::from_le_bytes);
    let seq = word(bytes.get(0..8)?)?;
    let fp = word(bytes.get(8..16)?)?;
    let access = match (bytes.get(16)?, &bytes[17..]) {
        (0, []) => DocAccess::Everyone,
        (1, rest) if rest.len() % 8 == 0 => {
            DocAccess::Owners(rest.chunks(8).filter_map(word).map(UserId).collect())
        }
        _ => return None,
    };
    Some((seq, fp, access))
}

/// A stored sync state; `None` for bytes that do not decode (the state is then started over,
/// which costs a fuller exchange, never data).
fn decode_state(bytes: &[u8]) -> Option<sync::State> {
    guarded(|| sync::State::decode(bytes)).ok()?.ok()
}

/// Every device a hub issued a token to: its user and whether one of its tokens is live (not
/// revoked, not expired at `now_ms`). Empty when the store fails (every device's change is
/// then refused, and offered again next session).
/// Every device that holds a token, with its user and, unless a token is live, the time the
/// last one stopped being live (revoked or expired).
fn token_directory(store: &Store, now_ms: i64) -> HashMap<DeviceId, (UserId, Option<i64>)> {
    let Ok(tokens) = store.read().and_then(|v| v.tokens()) else {
        return HashMap::new();
    };
    let mut out: HashMap<DeviceId, (UserId, Option<i64>)> = HashMap::new();
    for t in tokens {
        let ended = match (t.revoked_at_ms, t.expires_at_ms) {
            (Some(r), e) => Some(e.map_or(r, |e| e.min(r))),
            (None, Some(e)) if e <= now_ms => Some(e),
            _ => None,
        };
        let e = out.entry(t.device).or_insert((t.user, Some(i64::MIN)));
        e.0 = t.user;
        e.1 = match (e.1, ended) {
            (None, _) | (_, None) => None,
            (Some(a), Some(b)) => Some(a.max(b)),
        };
    }
    out
}

/// The stored list of a peer's past store keys: entries of key length (u16 LE), key, and the
/// time the next key replaced it (i64 LE milliseconds). Garbage reads as no entries.
fn decode_past_keys(mut bytes: &[u8]) -> Vec<(Vec<u8>, i64)> {
    let mut out = Vec::new();
    while bytes.len() >= 2 {
        let n = usize::from(u16::from_le_bytes([bytes[0], bytes[1]]));
        let Some(entry) = bytes.get(2..2 + n + 8) else {
            return Vec::new();
        };
        let (key, at) = entry.split_at(n);
        let Ok(at) = <[u8; 8]>::try_from(at) else {
            return Vec::new();
        };
        out.push((key.to_vec(), i64::from_le_bytes(at)));
        bytes = &bytes[2 + n + 8..];
    }
    if !bytes.is_empty() {
        return Vec::new();
    }
    out
}

fn encode_past_keys(keys: &[(Vec<u8>, i64)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (key, at) in keys {
        // Store keys are 32-byte public keys; a longer one is not kept.
        let Ok(n) = u16::try_from(key.len()) else {
            continue;
        };
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(key);
        out.extend_from_slice(&at.to_le_bytes());
    }
    out
}

impl StoreReplica {
    /// A replica of `store` for `node`, acting for `user` (`None` for a hub).
    pub fn new(store: Arc<Store>, node: DeviceId, user: Option<UserId>, acl: Acl) -> StoreReplica {
        let mut docs = Docs::new(store, DEFAULT_CACHE_BUDGET);
        docs.set_actor(actor_of(&node));
        StoreReplica {
            docs: RefCell::new(docs),
            node,
            user,
            acl,
            issuer: None,
            peer_auth: None,
            now_ms: 0,
            catalog: Catalog::default(),
            policy: Policy::default(),
            access: RefCell::new(HashMap::new()),
            fingerprint: fingerprint(&Catalog::default(), &Policy::default()),
            signing: None,
            endorsements: RefCell::new(HashMap::new()),
            queued_proofs: RefCell::new(HashMap::new()),
            peer_keys: HashMap::new(),
        }
    }

    /// Makes this replica sign the changes of its own it sends with `key`; a hub (`hub`) also
    /// endorses every other change it sends and checks every change it receives.
    pub fn set_signing(&mut self, key: Option<SigningKey>, hub: bool) {
        self.signing = key.map(|k| (k, hub));
    }

    fn is_hub(&self) -> bool {
        matches!(self.signing, Some((_, true)))
    }

    /// The hub key this device pinned.
    fn pinned_hub_key(&self) -> Result<Option<Vec<u8>>, StoreError> {
        self.store()
            .read()?
            .kv_get(crate::credential::PINNED_HUB_KEY)
    }

    /// Replaces the access rules and this node's user (whose access also bounds what it
    /// accepts; `None` for a hub, or a device trusting its hub's filtering).
    pub fn set_access(&mut self, user: Option<UserId>, acl: Acl) {
        self.user = user;
        self.acl = acl;
    }

    /// Makes this (hub) replica hand grants to the devices it authenticates.
    pub fn set_issuer(&mut self, issuer: Option<Issuer>) {
        self.issuer = issuer;
    }

    /// Makes this (device) replica check LAN peers' credentials and sign its proofs.
    pub fn set_peer_auth(&mut self, auth: Option<PeerAuth>) {
        self.peer_auth = auth;
    }

    /// This device's LAN credential and trust, once it holds a grant.
    pub fn peer_auth(&self) -> Option<&PeerAuth> {
        self.peer_auth.as_ref()
    }

    /// This node's id.
    pub fn node(&self) -> &DeviceId {
        &self.node
    }

    /// This node's user (`None` for a hub).
    pub fn user(&self) -> Option<UserId> {
        self.user
    }

    /// The store.
    pub fn store(&self) -> Arc<Store> {
        self.docs.borrow().store().clone()
    }

    /// Sets the time at which tokens are checked.
    pub fn set_now(&mut self, now_ms: i64) {
        self.now_ms = now_ms;
    }

    /// The current time as set by the caller.
    pub fn now_ms(&self) -> i64 {
        self.now_ms
    }

    /// Replaces the catalog used to read owners and validate edits.
    pub fn set_catalog(&mut self, catalog: Catalog) {
        if catalog != self.catalog {
            self.access.get_mut().clear();
            self.fingerprint = fingerprint(&catalog, &self.policy);
        }
        self.catalog = catalog;
    }

    /// Replaces the field policy (the hub's, read from the catalog document).
    pub fn set_policy(&mut self, policy: Policy) {
        if policy != self.policy {
            self.access.get_mut().clear();
            self.fingerprint = fingerprint(&self.catalog, &policy);
        }
        self.policy = policy;
    }

    /// The catalog in use.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The field policy in use.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The access rules in use.
    pub fn acl(&self) -> &Acl {
        &self.acl
    }

    /// The document cache, for the node's own edits.
    pub fn docs(&self) -> std::cell::RefMut<'_, Docs> {
        self.docs.borrow_mut()
    }

    /// Records that this node has everything of `peer`'s feed up to `checkpoint`.
    pub fn set_checkpoint(&self, peer: &DeviceId, checkpoint: u64) -> Result<(), StoreError> {
        self.store()
            .write(|w| w.set_peer_theirs(peer, &checkpoint.to_le_bytes()))
    }

    /// Who may see `doc`.
    pub fn access_of(&self, doc: &Automerge) -> DocAccess {
        self.access_of_owned(doc.clone()).1
    }

    /// [`StoreReplica::access_of`] without a copy: takes the document and hands it back
    /// unchanged, or `None` if it is not a record (its access is then admins only).
    fn access_of_owned(&self, doc: Automerge) -> (Option<Automerge>, DocAccess) {
        if root_kind(&doc).as_deref() == Some("catalog") {
            return (Some(doc), DocAccess::Everyone);
        }
        let Ok(mut record) = RecordDoc::from_automerge(doc, &self.node) else {
            return (None, DocAccess::Owners(Vec::new()));
        };
        let slot = Slot::record(FieldKey::Std("owner_id".into()));
        let owners = record
            .field_candidates(&self.catalog, &self.policy, &slot)
            .into_iter()
            .filter_map(|c| match c.value {
                Value::Ref(u) => Some(UserId(u)),
                _ => None,
            })
            .collect();
        (
            Some(std::mem::take(record.automerge_mut())),
            DocAccess::Owners(owners),
        )
    }

    fn may_see(&self, user: UserId, access: &DocAccess) -> bool {
        match access {
            DocAccess::Everyone => true,
            DocAccess::Owners(o) => self.acl.may_see_any(user, o),
        }
    }

    /// Whether `user` may see `doc`.
    pub fn visible_to(&self, user: UserId, doc: &Automerge) -> bool {
        self.may_see(user, &self.access_of(doc))
    }

    /// The access of stored documents (`None`: not stored), from the memo where it is current
    /// (same feed seq as the store's), else from the document, loaded without a copy.
    /// Newly computed entries are written to the store's memo in one transaction.
    fn stored_access(&self, docs: &[RecordId]) -> Result<Vec<Option<DocAccess>>, StoreError> {
        let store = self.store();
        let view = store.read()?;
        let metas = view.doc_metas(docs)?;
        let mut memo = self.access.borrow_mut();
        let mut cache = self.docs.borrow_mut();
        let mut out = Vec::with_capacity(docs.len());
        let mut computed = Vec::new();
        for (id, meta) in docs.iter().zip(metas) {
            let Some(meta) = meta else {
                out.push(None);
                continue;
            };
            if let Some((seq, access)) = memo.get(id)
                && *seq == meta.seq
            {
                out.push(Some(access.clone()));
                continue;
            }
            let key = format!("{ACCESS_KEY}{id}");
            let stored = view.kv_get(&key)?.as_deref().and_then(decode_access);
            let access = match stored {
                Some((seq, fp, access)) if seq == meta.seq && fp == self.fingerprint => access,
                _ => {
                    let access = if meta.kind == "catalog" {
                        Some(DocAccess::Everyone)
                    } else {
                        cache.with_doc_owned(id, |d| self.access_of_owned(d))?
                    };
                    let Some(access) = access else {
                        out.push(None);
                        continue;
                    };
                    computed.push((key, encode_access(meta.seq, self.fingerprint, &access)));
                    access
                }
            };
            memo.insert(id.clone(), (meta.seq, access.clone()));
            out.push(Some(access));
        }
        drop(view);
        if !computed.is_empty() {
            store.write(|w| {
                for (key, value) in &computed {
                    w.kv_put(key, value)?;
                }
                Ok(())
            })?;
        }
        Ok(out)
    }

    /// Whether the peer's user and this node's user may both hold a document of `access`
    /// (`None`: not computed, because there is no user to check: a device trusting its hub).
    fn may_hold(&self, peer: &Peer, access: Option<&DocAccess>) -> bool {
        let users = [peer.user, self.user].into_iter().flatten();
        match access {
            Some(access) => users.into_iter().all(|u| self.may_see(u, access)),
            None => true,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn receive_existing(
        &self,
        b: &mut sellsync_store::DocBatch<'_, '_>,
        peer: &Peer,
        kind: &str,
        seq: u64,
        inc: Incoming<'_>,
        verifier: Option<&Verifier<'_>>,
    ) -> Result<Received, StoreError> {
        let saved = inc.state.clone();
        let state = inc.state;
        let message = inc.message;
        let record = inc.doc;
        // With the signatures offered for changes queued by an earlier message (they are
        // self-proving: a signature is checked against its author's key, whoever brought it;
        // a relay's receipt only against the sender's). A message whose signatures do not
        // decode is refused as it is.
        let earlier = self.queued_proofs.borrow().get(record).cloned();
        // This message's own come first (the endorsement kept is the first one found).
        let offered = match (earlier, signed::decode(&inc.signatures)) {
            (Some(earlier), Ok(mut now)) => {
                now.extend(earlier);
                signed::encode(&now)
            }
            _ => inc.signatures.to_vec(),
        };
        let carries_changes = !message.changes.is_empty();
        // Who may write it: who may see it as it is before this message (from the memo when
        // it is current, else from the document below).
        let memo_access = verifier.and_then(|_| {
            let memo = self.access.borrow();
            memo.get(record)
                .filter(|(s, _)| *s == seq)
                .map(|(_, a)| a.clone())
        });
        // The endorsement kept for relaying, which one from a LAN peer replaces only if it
        // reaches at least as far (read only then: not on a pull from the hub, whose newest
        // endorsement always replaces it).
        let from_lan_peer = matches!(verifier, Some(Verifier::LanPeer { .. }));
        let kept_endorsement = if !from_lan_peer {
            None
        } else {
            b.store()
                .kv_get(&format!("{}{record}", signed::ENDORSED_KEY))?
                .and_then(|b| signed::decode(&b).ok())
                .and_then(|mut p| p.pop())
        };
        // A message automerge panics on leaves the document in an unknown state: it is
        // dropped from memory unwritten (the stored one is untouched) and the message rejected.
        // So is one with a change its author did not sign or may not have made.
        let outcome = b.with_doc_mut_owned(inc.doc, kind, |mut doc| {
            let before = doc.get_heads();
            let access_before = match (verifier, memo_access) {
                (None, _) => None,
                (Some(_), Some(a)) => Some(a),
                (Some(_), None) => Some(self.access_of(&doc)),
            };
            match guarded(|| doc.receive_sync_message(state, message)) {
                Ok(received) => {
                    let changed = doc.get_heads() != before;
                    if !changed && received.is_ok() && carries_changes {
                        self.keep_queued_proofs(record, &inc.signatures);
                    }
                    if !changed || received.is_err() {
                        return (
                            Some(doc),
                            Ok((received.is_ok(), changed, Proven::default())),
                        );
                    }
                    // The queue is applied (or, if refused, dropped with the document).
                    self.queued_proofs.borrow_mut().remove(record);
                    let new = doc.get_changes(&before);
                    let may_write =
                        |u: UserId| access_before.as_ref().is_none_or(|a| self.may_see(u, a));
                    match self.checked(
                        peer, record, kind, &doc, &new, &offered, verifier, &may_write,
                    ) {
                        Ok(mut proven) => {
                            if from_lan_peer
                                && let (
                                    Some(Proof::Hub { heads: old, .. }),
                                    Some(Proof::Hub { heads: new, .. }),
                                ) = (&kept_endorsement, &proven.endorsement)
                                && !signed::covers(&doc, new, old)
                            {
                                proven.endorsement = None;
                            }
                            (Some(doc), Ok((true, true, proven)))
                        }
                        Err(()) => (None, Err(Received::Forged)),
                    }
                }
                Err(panic) => {
                    tracing::warn!("sync message for {} from {}: {panic}", inc.doc, peer.node);
                    (None, Err(Received::Malformed))
                }
            }
        })?;
        let (ok, changed, proven) = match outcome {
            Ok(o) => o,
            Err(refused) => {
                *state = saved;
                return Ok(refused);
            }
        };
        if !ok {
            *state = saved;
            return Ok(Received::Rejected);
        }
        self.keep_proofs(b, record, &proven)?;
        b.store()
            .put_sync_state(&peer.node, inc.doc, &state.encode())?;
        Ok(Received::Applied { changed })
    }

    /// Checks the changes new to this node (`new`, in `doc`) against the signatures offered,
    /// when there is a verifier; logs a refusal with the peer. `Ok` carries the proofs a
    /// device keeps for relaying.
    #[allow(clippy::too_many_arguments)]
    fn checked(
        &self,
        peer: &Peer,
        record: &RecordId,
        kind: &str,
        doc: &Automerge,
        new: &[automerge::Change],
        offered: &[u8],
        verifier: Option<&Verifier<'_>>,
        may_write: &dyn Fn(UserId) -> bool,
    ) -> Result<Proven, ()> {
        let offered = match signed::decode(offered) {
            Ok(o) => o,
            Err(why) => {
                tracing::warn!(peer = %peer.node, %record, "refused a sync message: {why}");
                return Err(());
            }
        };
        let Some(verifier) = verifier else {
            // From the hub: its endorsement is kept as proof for relaying (unchecked: the hub
            // is trusted; a LAN peer that is relayed to checks it).
            let _ = new;
            return Ok(Proven {
                authors: Vec::new(),
                endorsement: offered.into_iter().find(|p| matches!(p, Proof::Hub { .. })),
            });
        };
        verifier
            .check(
                doc,
                kind,
                new,
                &offered,
                may_write,
                signed::Rules {
                    catalog: &self.catalog,
                    policy: &self.policy,
                },
            )
            .map_err(|refusal| {
                tracing::warn!(
                    peer = %peer.node,
                    %record,
                    "refused a sync message: {}",
                    refusal.0
                );
            })
    }

    /// Keeps the signatures offered with a message that changed nothing: its changes (if any)
    /// wait in automerge's queue for their dependencies, and are checked when a later message
    /// brings those.
    fn keep_queued_proofs(&self, record: &RecordId, offered: &[u8]) {
        let Ok(mut proofs) = signed::decode(offered) else {
            return;
        };
        let mut kept = self.queued_proofs.borrow_mut();
        if kept.len() >= QUEUED_PROOFS_KEPT && !kept.contains_key(record) {
            kept.clear();
        }
        let entry = kept.entry(record.clone()).or_default();
        entry.append(&mut proofs);
        let excess = entry.len().saturating_sub(QUEUED_PROOFS_PER_DOC);
        entry.drain(..excess);
    }

    /// Keeps what proved received changes, on a device (for relaying them): authors'
    /// signatures by change, the hub's endorsement by document (replacing the one kept).
    fn keep_proofs(
        &self,
        b: &mut sellsync_store::DocBatch<'_, '_>,
        record: &RecordId,
        proven: &Proven,
    ) -> Result<(), StoreError> {
        if self.is_hub() {
            return Ok(());
        }
        for p in &proven.authors {
            if let Proof::Author { hash, .. } = p {
                // With this device's receipt: the change may reach the hub through it after
                // its author's key stopped being valid.
                let mut kept = vec![p.clone()];
                if let Some((key, _)) = &self.signing {
                    kept.push(Proof::received(key, *hash, self.now_ms));
                }
                b.store().kv_put(
                    &format!("{}{hash}", signed::SIG_KEY),
                    &signed::encode(&kept),
                )?;
            }
        }
        if let Some(e) = &proven.endorsement {
            b.store().kv_put(
                &format!("{}{record}", signed::ENDORSED_KEY),
                &signed::encode(std::slice::from_ref(e)),
            )?;
        }
        Ok(())
    }

    fn receive_new(
        &self,
        b: &mut sellsync_store::DocBatch<'_, '_>,
        peer: &Peer,
        inc: Incoming<'_>,
        verifier: Option<&Verifier<'_>>,
    ) -> Result<Received, StoreError> {
        let saved = inc.state.clone();
        let mut tmp = Automerge::new();
        match guarded(|| tmp.receive_sync_message(inc.state, inc.message)) {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                *inc.state = saved;
                return Ok(Received::Rejected);
            }
            Err(panic) => {
                tracing::warn!("sync message for {} from {}: {panic}", inc.doc, peer.node);
                *inc.state = saved;
                return Ok(Received::Malformed);
            }
        }
        if tmp.get_heads().is_empty() {
            b.store()
                .put_sync_state(&peer.node, inc.doc, &inc.state.encode())?;
            return Ok(Received::Applied { changed: false });
        }
        let kind = root_kind(&tmp).filter(|k| !k.is_empty() && k.len() <= 64);
        let Some(kind) = kind else {
            *inc.state = saved;
            return Ok(Received::Denied);
        };
        // Who may see it: computed once (one document copy), when a user must be checked for
        // holding it or its changes are checked (not on a device's pull from its hub).
        let users_to_check = peer.user.is_some() || self.user.is_some();
        let access = (users_to_check || verifier.is_some()).then(|| self.access_of(&tmp));
        if users_to_check && !self.may_hold(peer, access.as_ref()) {
            *inc.state = saved;
            return Ok(Received::Denied);
        }
        let new = tmp.get_changes(&[]);
        // A new record: its authors must be users who may see it.
        let may_write = |u: UserId| access.as_ref().is_none_or(|a| self.may_see(u, a));
        let Ok(proven) = self.checked(
            peer,
            inc.doc,
            &kind,
            &tmp,
            &new,
            &inc.signatures,
            verifier,
            &may_write,
        ) else {
            *inc.state = saved;
            return Ok(Received::Forged);
        };
        self.keep_proofs(b, inc.doc, &proven)?;
        // The document is new here: the received one becomes the stored one (no merge into an
        // empty document, which would apply every change a second time).
        b.with_doc_mut_owned(inc.doc, &kind, |_empty| (Some(tmp), ()))?;
        b.store()
            .put_sync_state(&peer.node, inc.doc, &inc.state.encode())?;
        Ok(Received::Applied { changed: true })
    }
}

impl Replica for StoreReplica {
    type Error = StoreError;

    fn verify_token(
        &self,
        token: &[u8],
        claimed_node: &DeviceId,
        claimed_role: Role,
    ) -> Result<Result<Principal, TokenRefused>, StoreError> {
        let Ok(token) = std::str::from_utf8(token) else {
            return Ok(Err(TokenRefused("token is not text".into())));
        };
        let secret = crate::token::secret_of(token);
        let info = match self.store().read()?.verify_token(secret, self.now_ms) {
            Ok(info) => info,
            Err(StoreError::Token(why)) => return Ok(Err(TokenRefused(why.to_string()))),
            Err(e) => return Err(e),
        };
        if &info.device != claimed_node || claimed_role != Role::Device {
            return Ok(Err(TokenRefused("token issued to another node".into())));
        }
        Ok(Ok(Principal {
            node: info.device,
            role: Role::Device,
            user: Some(info.user),
        }))
    }

    fn verify_credential(
        &self,
        credential: &[u8],
        claimed_node: &DeviceId,
        claimed_role: Role,
    ) -> Result<sellsync_sync::CredentialCheck, StoreError> {
        let Some(auth) = &self.peer_auth else {
            return Ok(Err(TokenRefused(
                "this device holds no grant from its hub yet".into(),
            )));
        };
        if claimed_role != Role::Device {
            return Ok(Err(TokenRefused("a LAN peer must be a device".into())));
        }
        Ok(
            match auth.trust.check(credential, claimed_node, self.now_ms) {
                Ok((st, key)) => Ok((
                    Principal {
                        node: st.device,
                        role: Role::Device,
                        user: Some(st.user),
                    },
                    key,
                )),
                Err(why) => Err(TokenRefused(why)),
            },
        )
    }

    fn verify_proof(
        &self,
        key: &[u8],
        transcript: &[u8],
        proof: &[u8],
    ) -> Result<bool, StoreError> {
        Ok(crate::credential::verify_signature(key, transcript, proof))
    }

    fn sign(&self, transcript: &[u8]) -> Result<Vec<u8>, StoreError> {
        Ok(self
            .peer_auth
            .as_ref()
            .map(|a| a.key.sign(transcript))
            .unwrap_or_default())
    }

    fn grant(&mut self, peer: &Peer, key: &[u8]) -> Result<Vec<u8>, StoreError> {
        let (Some(issuer), Some(user)) = (&self.issuer, peer.user) else {
            return Ok(Vec::new());
        };
        let store = self.store();
        Ok(issuer
            .grant(&store, user, &peer.node, key, self.now_ms)?
            .unwrap_or_default())
    }

    fn peer_store(&mut self, peer: &DeviceId, store_key: &[u8]) -> Result<bool, StoreError> {
        if store_key.is_empty() {
            return Ok(false);
        }
        // The key also checks the peer's own changes (see `crate::signed`).
        self.peer_keys.insert(peer.clone(), store_key.to_vec());
        let entry = format!("{PEER_STORE_KEY}{peer}");
        let store = self.store();
        let (known, checkpoint) = {
            let view = store.read()?;
            (view.kv_get(&entry)?, view.peer_checkpoint(peer)?)
        };
        if known.as_deref() == Some(store_key) {
            return Ok(false);
        }
        // Another store under this name (or the first key seen from a peer synced before keys
        // were recorded): what was kept for the old store would skip the new one's feed.
        let now_ms = self.now_ms;
        let hub = self.is_hub();
        store.write(|w| {
            let states = w.forget_peer(peer)?;
            // A hub keeps the replaced key: a relay may still bring changes it signed.
            if let (true, Some(old)) = (hub, &known) {
                let past_entry = format!("{PAST_KEYS_KEY}{peer}");
                let mut past = w
                    .kv_get(&past_entry)?
                    .map(|b| decode_past_keys(&b))
                    .unwrap_or_default();
                past.push((old.clone(), now_ms));
                // Two stores taking turns under one name would grow it without end.
                let excess = past.len().saturating_sub(PAST_KEYS_KEPT);
                past.drain(..excess);
                w.kv_put(&past_entry, &encode_past_keys(&past))?;
            }
            w.kv_put(&entry, store_key)?;
            Ok(known.is_some() || states > 0 || checkpoint != Default::default())
        })
    }

    fn checkpoint(&self, peer: &DeviceId) -> Result<u64, StoreError> {
        let cp = self.store().read()?.peer_checkpoint(peer)?;
        Ok(<[u8; 8]>::try_from(cp.theirs.as_slice()).map_or(0, u64::from_le_bytes))
    }

    fn changed_since(&self, since: u64) -> Result<FeedSlice, StoreError> {
        let view = self.store().read()?;
        let upto = view.feed_head()?;
        let docs = view
            .changed_since(since, usize::MAX)?
            .into_iter()
            .map(|e| e.record)
            .collect();
        Ok(FeedSlice { docs, upto })
    }

    fn visibility(&self, user: UserId, docs: &[RecordId]) -> Result<Vec<Visibility>, StoreError> {
        Ok(self
            .stored_access(docs)?
            .into_iter()
            .map(|a| match a {
                None => Visibility::Unknown,
                Some(a) if self.may_see(user, &a) => Visibility::Visible,
                Some(_) => Visibility::Hidden,
            })
            .collect())
    }

    fn revoked(&mut self, peer: &DeviceId, user: UserId) -> Result<Vec<RecordId>, StoreError> {
        let store = self.store();
        let ids: Vec<RecordId> = store
            .read()?
            .changed_since(0, usize::MAX)?
            .into_iter()
            .map(|e| e.record)
            .collect();
        let states = store.read()?.sync_states(peer, &ids)?;
        // A peer holds a document once a sync state with shared heads exists for it.
        let held: Vec<RecordId> = ids
            .into_iter()
            .zip(states)
            .filter(|(_, state)| {
                state
                    .as_ref()
                    .and_then(|b| decode_state(b))
                    .is_some_and(|s| !s.shared_heads.is_empty())
            })
            .map(|(id, _)| id)
            .collect();
        let access = self.stored_access(&held)?;
        Ok(held
            .into_iter()
            .zip(access)
            .filter(|(_, a)| a.as_ref().is_some_and(|a| !self.may_see(user, a)))
            .map(|(id, _)| id)
            .collect())
    }

    fn revocation_delivered(
        &mut self,
        peer: &DeviceId,
        docs: &[RecordId],
    ) -> Result<(), StoreError> {
        // A fresh state has no shared heads: the peer no longer counts as holding the document.
        let fresh = sync::State::new().encode();
        self.store().write(|w| {
            for id in docs {
                w.put_sync_state(peer, id, &fresh)?;
            }
            Ok(())
        })
    }

    fn load_states(
        &self,
        peer: &DeviceId,
        docs: &[RecordId],
    ) -> Result<Vec<sync::State>, StoreError> {
        Ok(self
            .store()
            .read()?
            .sync_states(peer, docs)?
            .into_iter()
            .map(|b| b.and_then(|b| decode_state(&b)).unwrap_or_default())
            .collect())
    }

    fn heads(&self, docs: &[RecordId]) -> Result<Vec<Option<Vec<ChangeHash>>>, StoreError> {
        let view = self.store().read()?;
        docs.iter().map(|d| view.doc_heads(d)).collect()
    }

    fn sign_changes(
        &self,
        sent: &[(RecordId, Vec<ChangeHash>)],
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let Some((key, hub)) = &self.signing else {
            return Ok(vec![Vec::new(); sent.len()]);
        };
        let store = self.store();
        let view = store.read()?;
        if *hub {
            // One endorsement of the document's heads vouches for every change the message
            // carries (they are all reachable from them); no document is loaded.
            let mut kept = self.endorsements.borrow_mut();
            if kept.len() > ENDORSEMENT_CACHE {
                kept.clear();
            }
            let mut out = Vec::with_capacity(sent.len());
            for (doc, hashes) in sent {
                let heads = match hashes.is_empty() {
                    true => None,
                    false => view.doc_heads(doc)?,
                };
                let proof = heads.and_then(|mut heads| {
                    heads.sort();
                    match kept.get(doc) {
                        Some(p @ Proof::Hub { heads: h, .. }) if *h == heads => Some(p.clone()),
                        _ => {
                            let p = Proof::hub(key, &heads)?;
                            kept.insert(doc.clone(), p.clone());
                            Some(p)
                        }
                    }
                });
                out.push(signed::encode(proof.as_slice()));
            }
            return Ok(out);
        }
        // A device signs its own changes and relays the proofs it kept for the others.
        let me = actor_of(&self.node);
        let mut cache = self.docs.borrow_mut();
        let mut out = Vec::with_capacity(sent.len());
        for (doc, hashes) in sent {
            let actors: Vec<Option<ActorId>> = cache
                .with_doc(doc, |d| {
                    hashes
                        .iter()
                        .map(|h| d.get_change_by_hash(h).map(|c| c.actor_id().clone()))
                        .collect()
                })?
                .unwrap_or_default();
            let mut proofs = Vec::with_capacity(hashes.len());
            let mut relays = false;
            for (hash, actor) in hashes.iter().zip(actors) {
                if actor.as_ref() == Some(&me) {
                    proofs.push(Proof::author(key, *hash));
                } else if let Some(kept) = view.kv_get(&format!("{}{hash}", signed::SIG_KEY))? {
                    proofs.extend(signed::decode(&kept).unwrap_or_default());
                } else {
                    relays = true;
                }
            }
            if relays && let Some(kept) = view.kv_get(&format!("{}{doc}", signed::ENDORSED_KEY))? {
                proofs.extend(signed::decode(&kept).unwrap_or_default());
            }
            out.push(signed::encode(&proofs));
        }
        Ok(out)
    }

    fn generate(
        &self,
        docs: &mut [(&RecordId, &mut sync::State)],
    ) -> Result<Vec<Option<sync::Message>>, StoreError> {
        let mut cache = self.docs.borrow_mut();
        let mut out = Vec::with_capacity(docs.len());
        for (id, state) in docs.iter_mut() {
            let msg = cache.with_doc(id, |d| d.generate_sync_message(state))?;
            out.push(match msg {
                Some(m) => m,
                None => Automerge::new().generate_sync_message(state),
            });
        }
        Ok(out)
    }

    fn receive(
        &mut self,
        peer: &Peer,
        batch: Vec<Incoming<'_>>,
    ) -> Result<Vec<Received>, StoreError> {
        let me = &*self;
        // Who is trusted for what in this batch (see `crate::signed`): a hub checks everything,
        // a device what a LAN peer sends, nobody what a hub sends. A replica that does not sign
        // (a measurement's baseline) checks nothing either.
        let hub_key = match &me.signing {
            Some((key, true)) => Some(key.public_key()),
            Some((_, false)) if peer.role == Role::Device => me.pinned_hub_key()?,
            _ => None,
        };
        // Read through its own transaction (the document cache is borrowed below); the token
        // table is read once per batch, at the first author met.
        let store = me.store();
        let directory = std::cell::OnceCell::new();
        // Each author looked up once per batch (a batch carries many changes of one author).
        let met: RefCell<HashMap<DeviceId, Option<KnownDevice>>> = RefCell::default();
        let device = |d: &DeviceId| {
            if let Some(known) = met.borrow().get(d) {
                return known.clone();
            }
            let known = directory.get_or_init(|| token_directory(&store, me.now_ms));
            let found = known.get(d).and_then(|&(user, ended_ms)| {
                let view = store.read().ok()?;
                let key = view.kv_get(&format!("{PEER_STORE_KEY}{d}")).ok()?;
                let past_keys = view
                    .kv_get(&format!("{PAST_KEYS_KEY}{d}"))
                    .ok()?
                    .map(|b| decode_past_keys(&b))
                    .unwrap_or_default();
                Some(KnownDevice {
                    user,
                    live: ended_ms.is_none(),
                    key,
                    ended_ms,
                    past_keys,
                })
            });
            met.borrow_mut().insert(d.clone(), found.clone());
            found
        };
        let verifier = match &me.signing {
            Some((_, true)) => Some(Verifier::Hub {
                hub: &me.node,
                sender: &peer.node,
                sender_key: me.peer_keys.get(&peer.node).map(Vec::as_slice),
                hub_key,
                device: &device,
            }),
            Some((_, false)) if peer.role == Role::Device => Some(Verifier::LanPeer {
                peer: &peer.node,
                user: peer.user.unwrap_or(UserId(u64::MAX)),
                peer_key: me.peer_keys.get(&peer.node).map(Vec::as_slice),
                hub_key: hub_key.as_deref(),
            }),
            _ => None,
        };
        let verifier = verifier.as_ref();
        let mut cache = me.docs.borrow_mut();
        // Set when a message is malformed: the outcomes so far, that one last.
        let mut malformed: Option<Vec<Received>> = None;
        let applied = cache.batch(|b| {
            let mut out = Vec::with_capacity(batch.len());
            for inc in batch {
                let doc = inc.doc.clone();
                let meta = b.store().doc_meta(inc.doc)?;
                out.push(match meta {
                    Some(m) => me.receive_existing(b, peer, &m.kind, m.seq, inc, verifier)?,
                    None => me.receive_new(b, peer, inc, verifier)?,
                });
                if out.last() == Some(&Received::Malformed) {
                    malformed = Some(out);
                    // Failing the transaction keeps nothing of the batch, on disk or in the
                    // document cache.
                    return Err(StoreError::Document {
                        record: doc.to_string(),
                        source: "malformed sync message".into(),
                    });
                }
            }
            Ok(out)
        });
        match (applied, malformed) {
            (Err(_), Some(outcomes)) => Ok(outcomes),
            (applied, _) => applied,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_memo_entries_round_trip_and_garbage_is_ignored() {
        for access in [
            DocAccess::Everyone,
            DocAccess::Owners(Vec::new()),
            DocAccess::Owners(vec![UserId(2), UserId(u64::MAX)]),
        ] {
            let bytes = encode_access(7, 9, &access);
            assert_eq!(decode_access(&bytes), Some((7, 9, access)));
        }
        let good = encode_access(7, 9, &DocAccess::Owners(vec![UserId(2)]));
        assert_eq!(decode_access(&good[..good.len() - 1]), None);
        assert_eq!(decode_access(&good[..16]), None);
        assert_eq!(decode_access(b""), None);
        let mut bad_tag = encode_access(7, 9, &DocAccess::Everyone);
        bad_tag[16] = 2;
        assert_eq!(decode_access(&bad_tag), None);
        bad_tag[16] = 0;
        bad_tag.push(0);
        assert_eq!(decode_access(&bad_tag), None);
    }

    #[test]
    fn the_fingerprint_follows_the_catalog() {
        let p = Policy::default();
        assert_eq!(
            fingerprint(&Catalog::example(), &p),
            fingerprint(&Catalog::example(), &p)
        );
        assert_ne!(
            fingerprint(&Catalog::example(), &p),
            fingerprint(&Catalog::default(), &p)
        );
    }
}
