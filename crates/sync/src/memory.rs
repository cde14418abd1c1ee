//! An in-memory [`Replica`]: the reference implementation of the trait's contracts, used by the
//! tests and benchmarks of this crate (and handy for callers' own tests).
//!
//! Documents are plain automerge documents whose root has an `owner` key (an unsigned user
//! id). Access follows [`Acl`]: admins see everything, other users see the documents owned by
//! themselves or by a member of their team.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;

use automerge::sync::{self, SyncDoc};
use automerge::{ActorId, Automerge, ChangeHash, ROOT, ReadDoc, ScalarValue, Value};
use sellsync_model::{DeviceId, RecordId, UserId, guarded};

use crate::frame::Role;
use crate::replica::{
    FeedSlice, Incoming, Peer, Principal, Received, Replica, TokenRefused, Visibility,
};

/// Who may see whose documents.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acl {
    /// Users who see every document.
    pub admins: BTreeSet<UserId>,
    /// The team of each user; users of one team see each other's documents.
    pub teams: BTreeMap<UserId, u32>,
}

impl Acl {
    /// Whether `user` may see a document owned by `owner`.
    pub fn may_see(&self, user: UserId, owner: UserId) -> bool {
        user == owner
            || self.admins.contains(&user)
            || matches!((self.teams.get(&user), self.teams.get(&owner)), (Some(a), Some(b)) if a == b)
    }
}

/// The owner recorded in a document's root (`owner`, an unsigned or non-negative integer).
pub fn owner_of(doc: &Automerge) -> Option<UserId> {
    match doc.get(ROOT, "owner").ok().flatten()? {
        (Value::Scalar(s), _) => match s.as_ref() {
            ScalarValue::Uint(u) => Some(UserId(*u)),
            ScalarValue::Int(i) => u64::try_from(*i).ok().map(UserId),
            _ => None,
        },
        _ => None,
    }
}

/// One node's documents, change feed, sync states and checkpoints, in memory.
#[derive(Debug)]
pub struct MemReplica {
    /// This node's id; also the automerge actor of its changes.
    node: DeviceId,
    /// This node's user; `None` for a hub.
    user: Option<UserId>,
    acl: Acl,
    /// Valid tokens and what they prove (a stand-in for the hub's token issuance).
    tokens: BTreeMap<Vec<u8>, Principal>,
    docs: BTreeMap<RecordId, Automerge>,
    /// Last feed number of each document. Invariant: `feed` is its inverse.
    doc_seq: BTreeMap<RecordId, u64>,
    feed: BTreeMap<u64, RecordId>,
    /// The feed head: the number of the latest change.
    seq: u64,
    /// Persisted sync states (`State::encode`), per peer and document.
    states: BTreeMap<(DeviceId, RecordId), Vec<u8>>,
    checkpoints: BTreeMap<DeviceId, u64>,
    /// How many `receive` batches were applied (a store would use one transaction each).
    pub receive_calls: u64,
}

impl MemReplica {
    /// An empty replica for `node`, acting for `user` (`None` for a hub).
    pub fn new(node: DeviceId, user: Option<UserId>, acl: Acl) -> Self {
        MemReplica {
            node,
            user,
            acl,
            tokens: BTreeMap::new(),
            docs: BTreeMap::new(),
            doc_seq: BTreeMap::new(),
            feed: BTreeMap::new(),
            seq: 0,
            states: BTreeMap::new(),
            checkpoints: BTreeMap::new(),
            receive_calls: 0,
        }
    }

    /// This node's id.
    pub fn node(&self) -> &DeviceId {
        &self.node
    }

    /// This node's user (`None` for a hub).
    pub fn user(&self) -> Option<UserId> {
        self.user
    }

    /// Replaces the access rules.
    pub fn set_acl(&mut self, acl: Acl) {
        self.acl = acl;
    }

    /// Accepts `token` as proof of `principal`.
    pub fn add_token(&mut self, token: Vec<u8>, principal: Principal) {
        self.tokens.insert(token, principal);
    }

    /// Stops accepting `token`.
    pub fn revoke_token(&mut self, token: &[u8]) {
        self.tokens.remove(token);
    }

    /// A fresh automerge document whose changes carry this node's actor.
    pub fn new_doc(&self) -> Automerge {
        Automerge::new().with_actor(ActorId::from(self.node.as_str().as_bytes()))
    }

    /// Stores `doc` under `id` (replacing any) and records the change in the feed.
    pub fn put(&mut self, id: RecordId, doc: Automerge) {
        self.docs.insert(id.clone(), doc);
        self.bump(id);
    }

    /// Edits a held document through `f` and records the change in the feed. Returns false if
    /// the document is not held.
    pub fn edit(&mut self, id: &RecordId, f: impl FnOnce(&mut Automerge)) -> bool {
        let Some(doc) = self.docs.get_mut(id) else {
            return false;
        };
        let before = doc.get_heads();
        f(doc);
        if doc.get_heads() != before {
            self.bump(id.clone());
        }
        true
    }

    /// A held document.
    pub fn doc(&self, id: &RecordId) -> Option<&Automerge> {
        self.docs.get(id)
    }

    /// Every held document id.
    pub fn doc_ids(&self) -> impl Iterator<Item = &RecordId> {
        self.docs.keys()
    }

    /// The heads of a held document.
    pub fn heads(&self, id: &RecordId) -> Option<Vec<ChangeHash>> {
        self.docs.get(id).map(|d| d.get_heads())
    }

    /// Records a checkpoint for a peer's feed (what a caller does on
    /// [`crate::Effect::CheckpointAdvanced`]).
    pub fn set_checkpoint(&mut self, peer: &DeviceId, checkpoint: u64) {
        self.checkpoints.insert(peer.clone(), checkpoint);
    }

    /// The feed head.
    pub fn feed_head(&self) -> u64 {
        self.seq
    }

    /// Whether `user` may see the held document `id` (`None` if not held).
    pub fn may_see(&self, user: UserId, id: &RecordId) -> Option<bool> {
        self.docs.get(id).map(|d| self.visible_doc(user, d))
    }

    fn visible_doc(&self, user: UserId, doc: &Automerge) -> bool {
        match owner_of(doc) {
            Some(owner) => self.acl.may_see(user, owner),
            None => self.acl.admins.contains(&user),
        }
    }

    fn bump(&mut self, id: RecordId) {
        self.seq += 1;
        if let Some(old) = self.doc_seq.insert(id.clone(), self.seq) {
            self.feed.remove(&old);
        }
        self.feed.insert(self.seq, id);
    }
}

impl Replica for MemReplica {
    type Error = Infallible;

    fn verify_token(
        &self,
        token: &[u8],
        claimed_node: &DeviceId,
        claimed_role: Role,
    ) -> Result<Result<Principal, TokenRefused>, Infallible> {
        Ok(match self.tokens.get(token) {
            None => Err(TokenRefused("unknown or revoked token".into())),
            Some(p) if &p.node != claimed_node || p.role != claimed_role => {
                Err(TokenRefused("token issued to another node".into()))
            }
            Some(p) => Ok(p.clone()),
        })
    }

    fn checkpoint(&self, peer: &DeviceId) -> Result<u64, Infallible> {
        Ok(self.checkpoints.get(peer).copied().unwrap_or(0))
    }

    fn changed_since(&self, since: u64) -> Result<FeedSlice, Infallible> {
        let docs = self
            .feed
            .range(since.saturating_add(1)..)
            .map(|(_, d)| d.clone())
            .collect();
        Ok(FeedSlice {
            docs,
            upto: self.seq,
        })
    }

    fn visibility(&self, user: UserId, docs: &[RecordId]) -> Result<Vec<Visibility>, Infallible> {
        Ok(docs
            .iter()
            .map(|id| match self.docs.get(id) {
                None => Visibility::Unknown,
                Some(d) if self.visible_doc(user, d) => Visibility::Visible,
                Some(_) => Visibility::Hidden,
            })
            .collect())
    }

    fn revoked(&mut self, peer: &DeviceId, user: UserId) -> Result<Vec<RecordId>, Infallible> {
        let held: Vec<RecordId> = self
            .states
            .keys()
            .filter(|(p, _)| p == peer)
            .map(|(_, d)| d.clone())
            .collect();
        Ok(held
            .into_iter()
            .filter(|d| self.may_see(user, d) == Some(false))
            .collect())
    }

    fn revocation_delivered(
        &mut self,
        peer: &DeviceId,
        docs: &[RecordId],
    ) -> Result<(), Infallible> {
        for d in docs {
            self.states.remove(&(peer.clone(), d.clone()));
        }
        Ok(())
    }

    fn load_states(
        &self,
        peer: &DeviceId,
        docs: &[RecordId],
    ) -> Result<Vec<sync::State>, Infallible> {
        Ok(docs
            .iter()
            .map(|d| {
                self.states
                    .get(&(peer.clone(), d.clone()))
                    .and_then(|b| sync::State::decode(b).ok())
                    .unwrap_or_default()
            })
            .collect())
    }

    fn heads(&self, docs: &[RecordId]) -> Result<Vec<Option<Vec<ChangeHash>>>, Infallible> {
        Ok(docs.iter().map(|d| self.heads(d)).collect())
    }

    fn generate(
        &self,
        docs: &mut [(&RecordId, &mut sync::State)],
    ) -> Result<Vec<Option<sync::Message>>, Infallible> {
        let empty = Automerge::new();
        Ok(docs
            .iter_mut()
            .map(|(id, state)| {
                self.docs
                    .get(*id)
                    .unwrap_or(&empty)
                    .generate_sync_message(state)
            })
            .collect())
    }

    fn receive(
        &mut self,
        peer: &Peer,
        batch: Vec<Incoming<'_>>,
    ) -> Result<Vec<Received>, Infallible> {
        self.receive_calls += 1;
        let mut outcomes = Vec::with_capacity(batch.len());
        // What each message overwrote, so that a malformed one leaves nothing of the batch.
        let mut undo: Vec<Overwritten> = Vec::with_capacity(batch.len());
        let seq_before = self.seq;
        for Incoming {
            doc: id,
            state,
            message,
            signatures: _,
        } in batch
        {
            let existing = self.docs.contains_key(id);
            let mut doc = self.docs.remove(id).unwrap_or_else(|| self.new_doc());
            let before = doc.get_heads();
            undo.push(Overwritten {
                id: id.clone(),
                doc: existing.then(|| doc.clone()),
                state: self.states.get(&(peer.node.clone(), id.clone())).cloned(),
                seq: self.doc_seq.get(id).copied(),
            });
            let received = guarded(|| doc.receive_sync_message(state, message));
            match received {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    if existing {
                        self.docs.insert(id.clone(), doc);
                    }
                    outcomes.push(Received::Rejected);
                    continue;
                }
                Err(_) => {
                    self.undo(&peer.node, undo, seq_before);
                    outcomes.push(Received::Malformed);
                    return Ok(outcomes);
                }
            }
            let after = doc.get_heads();
            let allowed = [peer.user, self.user]
                .into_iter()
                .flatten()
                .all(|u| after.is_empty() || self.visible_doc(u, &doc));
            if !existing && !allowed {
                // A new document neither side may hold here: keep nothing of it.
                self.states.remove(&(peer.node.clone(), id.clone()));
                outcomes.push(Received::Denied);
                continue;
            }
            self.states
                .insert((peer.node.clone(), id.clone()), state.encode());
            let changed = after != before;
            if existing || !after.is_empty() {
                self.docs.insert(id.clone(), doc);
            }
            if changed {
                self.bump(id.clone());
            }
            outcomes.push(Received::Applied { changed });
        }
        Ok(outcomes)
    }
}

/// A document's entries before a message of a batch was applied.
#[derive(Debug)]
struct Overwritten {
    id: RecordId,
    doc: Option<Automerge>,
    state: Option<Vec<u8>>,
    seq: Option<u64>,
}

impl MemReplica {
    /// Puts back what a batch overwrote, latest first, and the feed head it started from.
    fn undo(&mut self, peer: &DeviceId, undo: Vec<Overwritten>, seq: u64) {
        for o in undo.into_iter().rev() {
            match o.doc {
                Some(d) => self.docs.insert(o.id.clone(), d),
                None => self.docs.remove(&o.id),
            };
            let key = (peer.clone(), o.id.clone());
            match o.state {
                Some(s) => self.states.insert(key, s),
                None => self.states.remove(&key),
            };
            if let Some(now) = self.doc_seq.get(&o.id).copied() {
                self.feed.remove(&now);
            }
            match o.seq {
                Some(old) => {
                    self.doc_seq.insert(o.id.clone(), old);
                    self.feed.insert(old, o.id);
                }
                None => {
                    self.doc_seq.remove(&o.id);
                }
            }
        }
        self.seq = seq;
    }
}
