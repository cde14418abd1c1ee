//! The seam between the protocol and the documents: the [`Replica`] trait.
//!
//! The session never touches documents or storage itself. It asks the replica, in batches, so a
//! store can answer each call with one transaction however many documents a flight carries.

use automerge::{ChangeHash, sync};
use sellsync_model::{DeviceId, RecordId, UserId};

use crate::frame::Role;

/// Who is on the other end, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The peer's node id (as proved by its token, not merely as claimed).
    pub node: DeviceId,
    /// The peer's role.
    pub role: Role,
    /// The user whose access bounds what this side may exchange with the peer. `None` for a hub,
    /// which may hold every document.
    pub user: Option<UserId>,
}

/// What a verified token proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The node the token was issued to.
    pub node: DeviceId,
    /// The role the token was issued for.
    pub role: Role,
    /// The user the node acts for; `None` only for a hub.
    pub user: Option<UserId>,
}

/// A slice of a change feed: the documents with a change numbered in `(since, upto]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FeedSlice {
    /// Each document once, in any order.
    pub docs: Vec<RecordId>,
    /// The feed's head when the slice was taken.
    pub upto: u64,
}

/// Whether a user may see a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    /// The replica holds the document and the user may see it.
    Visible,
    /// The replica holds the document and the user may not see it.
    Hidden,
    /// The replica does not hold the document, so it cannot tell yet (a document the peer
    /// created). The replica decides on receipt, once the content is known.
    Unknown,
}

/// One incoming sync message, with the live sync state it updates.
#[derive(Debug)]
pub struct Incoming<'a> {
    /// The document.
    pub doc: &'a RecordId,
    /// The live sync state of this document with this peer.
    pub state: &'a mut sync::State,
    /// The decoded automerge sync message.
    pub message: sync::Message,
    /// The signatures the sender sent beside it (see [`Replica::sign_changes`]), unchecked.
    pub signatures: Vec<u8>,
}

/// What became of one incoming sync message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// Applied; `changed` says whether the document's heads moved.
    Applied {
        /// The document now has new changes (it must be persisted and re-projected).
        changed: bool,
    },
    /// Not applied: once its content was known, the document turned out to be one the peer's user
    /// (or this node's user) may not see. Nothing of it was kept.
    Denied,
    /// Not applied: automerge rejected the message (for example a corrupt change). Nothing of it
    /// was kept.
    Rejected,
    /// Not applied: a change it carries is not signed by its author, or its author may not
    /// have made it (the replica's write rules; the replica logged which and why). Nothing of
    /// the message was kept.
    Forged,
    /// Automerge failed on the message's bytes (it panicked on malformed input, an upstream
    /// bug; see [`sellsync_model::guarded`]). The replica stopped there and kept nothing of the
    /// whole batch: this is the last outcome returned, and the earlier ones are void. The
    /// session closes.
    Malformed,
}

/// The outcome of checking a LAN peer's credential: what it proves and the public key the
/// peer must prove it holds, or why it was refused.
pub type CredentialCheck = Result<(Principal, Vec<u8>), TokenRefused>;

/// A token the replica refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("token refused: {0}")]
pub struct TokenRefused(pub String);

/// The documents, the change feed, the sync states and the access rules of one node.
///
/// Contracts:
/// - Every method may fail with `Self::Error` (storage trouble). The session then closes the
///   connection; a failed call must have changed nothing.
/// - Every automerge call on the peer's bytes runs under [`sellsync_model::guarded`]: a panic
///   in automerge becomes [`Received::Malformed`], never a panic of the caller.
/// - [`Replica::receive`] applies a whole batch atomically or not at all, persists the
///   documents and the sync states' persistent part (`State::encode`, the shared heads) for this
///   peer, and appends the changed documents to the change feed.
/// - Sync states are per peer and per document. The live ones belong to the session (one
///   connection); [`Replica::load_states`] gives their persisted form.
pub trait Replica {
    /// Storage failure.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Checks a presented token against the node and role it claims. Expired, revoked, unknown
    /// or mismatched tokens are refused.
    fn verify_token(
        &self,
        token: &[u8],
        claimed_node: &DeviceId,
        claimed_role: Role,
    ) -> Result<Result<Principal, TokenRefused>, Self::Error>;

    /// Checks a LAN peer's credential against the node and role it claims (signed by this
    /// node's hub, not expired, not revoked) and returns what it proves with the public key
    /// the peer must then prove it holds (see [`Replica::verify_proof`]). The default refuses
    /// every credential: a replica that does not implement it takes no LAN peers.
    fn verify_credential(
        &self,
        credential: &[u8],
        claimed_node: &DeviceId,
        claimed_role: Role,
    ) -> Result<CredentialCheck, Self::Error> {
        let _ = (credential, claimed_node, claimed_role);
        Ok(Err(TokenRefused(
            "this node does not verify peer credentials".into(),
        )))
    }

    /// Whether `proof` is a valid signature of `transcript` by the holder of `key` (a key
    /// returned by [`Replica::verify_credential`]). The default says no.
    fn verify_proof(
        &self,
        key: &[u8],
        transcript: &[u8],
        proof: &[u8],
    ) -> Result<bool, Self::Error> {
        let _ = (key, transcript, proof);
        Ok(false)
    }

    /// Signs `transcript` with this node's own key (its proof of possession in a LAN
    /// handshake). The default signs nothing (an empty proof, which no peer accepts).
    fn sign(&self, transcript: &[u8]) -> Result<Vec<u8>, Self::Error> {
        let _ = transcript;
        Ok(Vec::new())
    }

    /// What a hub hands an authenticated device in its welcome (for example a peer credential
    /// for `key`, the device's public key from its hello); empty for nothing. The default
    /// hands nothing.
    fn grant(&mut self, peer: &Peer, key: &[u8]) -> Result<Vec<u8>, Self::Error> {
        let _ = (peer, key);
        Ok(Vec::new())
    }

    /// `peer` authenticated with `store_key`: the public key its store made when it was
    /// initialised (from a device's hello towards a hub, or named by a LAN peer's credential).
    /// A peer whose store was replaced (a wiped or new phone under the same name) presents
    /// another key; the replica then forgets the checkpoint and every sync state it kept for
    /// `peer`, so that the new store syncs from scratch, and returns true. Per-peer state is
    /// thus kept per store of the peer, not per name. An empty key tells nothing. The default
    /// keeps everything and returns false.
    fn peer_store(&mut self, peer: &DeviceId, store_key: &[u8]) -> Result<bool, Self::Error> {
        let _ = (peer, store_key);
        Ok(false)
    }

    /// The checkpoint this node holds for `peer`'s change feed (0 if none).
    fn checkpoint(&self, peer: &DeviceId) -> Result<u64, Self::Error>;

    /// The documents of this node's change feed changed after `since`.
    fn changed_since(&self, since: u64) -> Result<FeedSlice, Self::Error>;

    /// Whether `user` may see `doc`, for each document in `docs` (same order).
    fn visibility(&self, user: UserId, docs: &[RecordId]) -> Result<Vec<Visibility>, Self::Error>;

    /// Documents `peer` holds (as this replica's sync states with it show) but `user` may no
    /// longer see. Reported in every session until [`Replica::revocation_delivered`].
    fn revoked(&mut self, peer: &DeviceId, user: UserId) -> Result<Vec<RecordId>, Self::Error>;

    /// The peer has read that it may no longer see `docs` (a session that told it ended): the
    /// replica forgets its sync states for them with that peer, so they are not reported again
    /// (and, should access come back, the documents sync from scratch).
    fn revocation_delivered(
        &mut self,
        peer: &DeviceId,
        docs: &[RecordId],
    ) -> Result<(), Self::Error>;

    /// The persisted sync states with `peer` for `docs` (same order); `State::new()` where none.
    fn load_states(
        &self,
        peer: &DeviceId,
        docs: &[RecordId],
    ) -> Result<Vec<sync::State>, Self::Error>;

    /// The current heads of each document (same order); `None` where not held.
    fn heads(&self, docs: &[RecordId]) -> Result<Vec<Option<Vec<ChangeHash>>>, Self::Error>;

    /// Generates the next sync message for each document (same order); `None` where there is
    /// nothing to say. A document this node does not hold is treated as empty.
    fn generate(
        &self,
        docs: &mut [(&RecordId, &mut sync::State)],
    ) -> Result<Vec<Option<sync::Message>>, Self::Error>;

    /// The signatures to send beside each generated message (same order): `sent` names, per
    /// document, the changes the message carries (the hashes its sync state has sent since the
    /// previous message). The bytes are opaque to the protocol; the receiving replica checks
    /// them in [`Replica::receive`]. The default signs nothing.
    fn sign_changes(
        &self,
        sent: &[(RecordId, Vec<ChangeHash>)],
    ) -> Result<Vec<Vec<u8>>, Self::Error> {
        Ok(vec![Vec::new(); sent.len()])
    }

    /// Applies a batch of incoming messages from `peer` (see the trait contract). A document
    /// not held yet is created only if `peer.user` (when set) and this node's user may see it.
    fn receive(
        &mut self,
        peer: &Peer,
        batch: Vec<Incoming<'_>>,
    ) -> Result<Vec<Received>, Self::Error>;
}
