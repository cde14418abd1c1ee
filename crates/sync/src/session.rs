//! One side of one connection: events in, effects out.
//!
//! The exchange (see `docs/protocol.md`):
//!
//! ```text
//! dialer                                   acceptor
//!   hello(node, role, token, cp_d) ───────►  verify token
//!                                 ◄───────  welcome(node, role, user, cp_a)
//!                                           [access-revoked] announce(since cp_d)… batch…(last)
//!   announce(since cp_a)… batch…(last) ───►
//!                                 ◄───────  batch…(last)
//!   …flights alternate until a side, after receiving a whole flight, has nothing to send…
//!   done(cp) ─────────────────────────────►  (either side may be the one to send it)
//! ```
//!
//! Between LAN peers (`mutual` on both sides) the handshake takes one more message, and the
//! acceptor sends nothing of its documents before it:
//!
//! ```text
//!   hello(node, credential, nonce_d) ─────►  verify credential
//!                                 ◄───────  welcome(credential, nonce_a, sign(welcome transcript))
//!   verify credential and signature
//!   proof(sign(proof transcript)) ────────►  verify signature
//!                                 ◄───────  [access-revoked] announce… batch…(last)
//! ```
//!
//! Both transcripts (see [`transcript`]) bind both nodes, both credentials and both nonces, so
//! a signature made for one session proves nothing in another. They also bind the transport's
//! channel ([`Session::bind_channel`]: over TLS, the connection's exporter value), so a relay
//! that ends the encrypted channel on each side and forwards the frames between them presents
//! proofs that do not verify: only a peer at the end of the encrypted channel can take part.
//!
//! A flight is every frame one side sends before it waits: in its first flight the announce
//! frames come first, then sync-batch frames, the last one flagged `last`. After a whole flight
//! arrives, the receiver applies it and generates the next messages for every document in the
//! session (the union of both announces, minus what access rules exclude). If it has nothing to
//! send, both sides are quiet: it sends done and both record the other's announced feed head as
//! their new checkpoint.

use std::collections::{BTreeMap, BTreeSet};

use automerge::{ChangeHash, sync};
use sellsync_model::{DeviceId, RecordId, guarded};

use crate::frame::{
    ANNOUNCE_OVERHEAD, Announce, BATCH_OVERHEAD, BatchEntry, DEFAULT_MAX_FRAME, ErrorCode,
    ErrorFrame, Frame, FrameError, Hello, PROTOCOL_VERSION, REVOKED_OVERHEAD, Role, SyncBatch,
    Welcome, entry_wire_len, id_wire_len,
};
use crate::replica::{Incoming, Peer, Received, Replica, Visibility};

/// Size limits of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Hard limit on a frame, sent or received.
    pub max_frame: usize,
    /// Size at which outgoing flights are split into the next frame (at most `max_frame`).
    pub target_frame: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame: DEFAULT_MAX_FRAME,
            target_frame: 1024 * 1024,
        }
    }
}

/// How the dialing side of a connection is set up.
#[derive(Debug, Clone)]
pub struct DialConfig {
    /// This node's id.
    pub node: DeviceId,
    /// This node's role.
    pub role: Role,
    /// The token this node presents.
    pub token: Vec<u8>,
    /// The node this side means to reach; a welcome from another node closes the session.
    /// `None`: any node that authenticates (a LAN peer known by its address only; the hello
    /// then offers checkpoint 0).
    pub peer: Option<DeviceId>,
    /// Verify the acceptor's token through [`Replica::verify_token`]. When false, the
    /// acceptor is trusted by other means (the hub, behind TLS); a non-hub acceptor is then
    /// bounded by this node's own user. Ignored when `mutual` is set.
    pub verify_peer_token: bool,
    /// LAN handshake: `token` is this node's peer credential; the acceptor's welcome must carry
    /// a credential that [`Replica::verify_credential`] accepts and a valid proof over the
    /// welcome transcript, and this side then proves possession of its own key with a proof
    /// frame. Needs a `nonce` of at least 16 bytes.
    pub mutual: bool,
    /// Fresh random bytes for this session (the caller draws them).
    pub nonce: Vec<u8>,
    /// This node's public key, sent in hello for a hub to certify; empty for none.
    pub key: Vec<u8>,
    /// Size limits.
    pub limits: Limits,
}

/// How the accepting side of a connection is set up.
#[derive(Debug, Clone)]
pub struct AcceptConfig {
    /// This node's id.
    pub node: DeviceId,
    /// This node's role.
    pub role: Role,
    /// The token this node shows to dialers that check it (LAN peers: its peer credential);
    /// empty for a hub.
    pub token: Vec<u8>,
    /// LAN handshake (see [`DialConfig::mutual`]): the dialer's token is a peer credential and
    /// the dialer must prove possession of its key before anything is sent. Needs a `nonce` of
    /// at least 16 bytes.
    pub mutual: bool,
    /// Fresh random bytes for this session (the caller draws them).
    pub nonce: Vec<u8>,
    /// Size limits.
    pub limits: Limits,
}

/// Something that happened to the connection.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// The transport is connected (the dialer then sends its hello).
    Opened,
    /// One whole frame arrived.
    Received(&'a [u8]),
    /// The transport closed.
    Closed,
}

/// Why a session ended early.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The peer's token was refused, or the peer refused ours.
    AuthFailed(String),
    /// The peer is not the node this side dialed.
    WrongPeer(DeviceId),
    /// A frame could not be decoded.
    Malformed(String),
    /// A frame arrived where the exchange does not allow it.
    OutOfOrder(String),
    /// The peer reported an error and closed.
    PeerError {
        /// The peer's error code.
        code: ErrorCode,
        /// The peer's reason.
        reason: String,
    },
    /// This side's replica failed (storage).
    Storage(String),
    /// The transport closed before the exchange was done.
    ConnectionLost,
}

/// Why a document was left out of the exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IgnoreReason {
    /// The peer's user may not see it (the peer announced it, or sent a message for it).
    PeerMayNotSee,
    /// Once its content was known, the replica refused it (see [`Received::Denied`]).
    Denied,
    /// Automerge rejected the peer's message for it.
    Rejected,
    /// A change in the peer's message is unsigned, signed by another key than its author's, or
    /// breaks the write rules (see [`Received::Forged`]).
    Forged,
    /// Its sync message is larger than a frame may be; it is retried next session.
    TooLarge(usize),
    /// A node that is not a hub reported it revoked; only a hub's word counts.
    RevocationFromNonHub,
}

/// One effect for the caller to carry out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// The peer proved who it is.
    Authenticated(Peer),
    /// The hub handed this node a grant in its welcome (see [`crate::frame::Welcome::grant`]):
    /// the caller verifies and keeps it.
    Granted(Vec<u8>),
    /// These documents received changes from the peer; the replica has persisted them. Re-project
    /// or notify as needed.
    DocumentsChanged(Vec<RecordId>),
    /// The hub says this node's user may no longer see these documents.
    AccessRevoked(Vec<RecordId>),
    /// A document was left out, with the reason (for the log).
    Ignored {
        /// The document.
        doc: RecordId,
        /// Why.
        reason: IgnoreReason,
    },
    /// Persist this checkpoint for the peer's change feed.
    CheckpointAdvanced {
        /// The peer.
        peer: DeviceId,
        /// The peer's feed sequence number this node is now in sync with.
        checkpoint: u64,
    },
    /// The exchange is complete; the connection may be closed.
    Finished,
    /// Close the connection now (after sending any frames in this batch).
    Close(CloseReason),
}

/// What a call to [`Session::handle`] asks the caller to do, in order: send the frames, then
/// carry out the effects.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Effects {
    /// Encoded frames to send, in order.
    pub send: Vec<Vec<u8>>,
    /// Effects, in order.
    pub effects: Vec<Effect>,
}

impl Effects {
    /// True when the session has ended (finished or closed) during this call.
    pub fn ended(&self) -> bool {
        self.effects
            .iter()
            .any(|e| matches!(e, Effect::Finished | Effect::Close(_)))
    }
}

#[derive(Debug)]
enum Phase {
    /// Dialer before `Opened`.
    Idle,
    /// Dialer: hello sent.
    AwaitWelcome,
    /// Acceptor: waiting for the hello.
    AwaitHello,
    /// Acceptor of a LAN peer: welcome sent, waiting for the dialer's proof.
    AwaitProof(Box<Pending>),
    /// Authenticated; flights alternate.
    Exchange(Box<Exchange>),
    /// Done or closed; further events are ignored.
    Ended,
}

/// A LAN dialer whose credential verified, before its proof of possession.
#[derive(Debug)]
struct Pending {
    peer: Peer,
    /// The public key its credential names.
    key: Vec<u8>,
    /// The transcript its proof must sign.
    transcript: Vec<u8>,
    /// This node's checkpoint for the peer's feed, as sent in the welcome.
    peer_since: u64,
    /// The dialer's checkpoint for this node's feed, from its hello.
    my_since: u64,
}

/// The state of an authenticated exchange.
#[derive(Debug)]
struct Exchange {
    peer: Peer,
    /// This node's checkpoint for the peer's feed, sent in hello or welcome; the peer's announce
    /// must start there.
    peer_since: u64,
    /// The checkpoint the peer holds for this node's feed; this node's announce starts there.
    my_since: u64,
    /// Whether this node has sent its announce.
    announced: bool,
    /// The peer's feed head from its announce, once its last announce frame arrived.
    peer_upto: Option<u64>,
    /// Whether some sync-batch frames of the peer's current flight arrived but not its last one
    /// (a done may not interrupt a flight).
    mid_batch: bool,
    /// Live sync states of the documents in this session. Invariant: every document here may be
    /// exchanged with the peer as far as this node knows.
    docs: BTreeMap<RecordId, sync::State>,
    /// Documents left out for access reasons; messages for them are dropped silently.
    ignored: BTreeSet<RecordId>,
    /// This node's feed head as announced, once announced.
    my_upto: Option<u64>,
    /// This node left out a message it should have sent (too large): its done then offers no
    /// progress, so the peer re-asks next session.
    skipped_send: bool,
    /// A peer message was rejected: this node does not record progress on the peer's feed.
    failed_receive: bool,
    /// This side's hello carried its checkpoint for an earlier store of the peer (the peer's
    /// store was replaced): the peer announced from there, so no progress is recorded and the
    /// next session starts from zero.
    stale_hello: bool,
    /// This node sent its done and waits for the peer's.
    done_sent: bool,
    /// Documents this node told the peer it may no longer see. Once the exchange ends with the
    /// peer's done, the peer has read those frames (they went before everything it answered),
    /// and the replica may forget them ([`Replica::revocation_delivered`]); until then they are
    /// reported again in every session.
    revoked_sent: Vec<RecordId>,
}

/// One side of one connection. See the module docs for the exchange.
#[derive(Debug)]
pub struct Session {
    node: DeviceId,
    role: Role,
    token: Vec<u8>,
    limits: Limits,
    mutual: bool,
    nonce: Vec<u8>,
    key: Vec<u8>,
    /// `Some` on the dialing side: the node expected and whether to verify its token.
    dial: Option<(Option<DeviceId>, bool)>,
    /// The dialer's hello, kept for the transcripts of a LAN handshake.
    hello: Option<Hello>,
    /// What identifies the transport's channel at both ends (empty: none), bound into the
    /// transcripts of a LAN handshake.
    channel: Vec<u8>,
    phase: Phase,
}

/// A failure inside the state machine: it closes the session with this reason, after sending
/// the error frame when there is one.
struct Abort {
    reason: CloseReason,
    code: Option<ErrorCode>,
}

impl Abort {
    fn out_of_order(what: impl Into<String>) -> Self {
        Abort {
            reason: CloseReason::OutOfOrder(what.into()),
            code: Some(ErrorCode::OutOfOrder),
        }
    }

    fn malformed(what: impl Into<String>) -> Self {
        Abort {
            reason: CloseReason::Malformed(what.into()),
            code: Some(ErrorCode::Malformed),
        }
    }

    fn storage(e: impl std::fmt::Display) -> Self {
        Abort {
            reason: CloseReason::Storage(e.to_string()),
            code: Some(ErrorCode::Internal),
        }
    }

    fn frame(e: FrameError) -> Self {
        let code = match e {
            FrameError::UnknownVersion(_) => ErrorCode::UnsupportedVersion,
            FrameError::Oversized { .. } => ErrorCode::TooLarge,
            _ => ErrorCode::Malformed,
        };
        Abort {
            reason: CloseReason::Malformed(e.to_string()),
            code: Some(code),
        }
    }
}

impl Session {
    /// The dialing side. Call [`Session::handle`] with [`Event::Opened`] once connected.
    pub fn dial(config: DialConfig) -> Self {
        Session {
            node: config.node,
            role: config.role,
            token: config.token,
            limits: config.limits,
            mutual: config.mutual,
            nonce: config.nonce,
            key: config.key,
            dial: Some((config.peer, config.verify_peer_token)),
            hello: None,
            channel: Vec::new(),
            phase: Phase::Idle,
        }
    }

    /// Binds the transport's channel into this session's LAN handshake: `binding` must be what
    /// both ends of one channel, and only they, compute (over TLS 1.3, the exporter value of
    /// RFC 9266, `tls-exporter`). Both sides must bind the same bytes, or the proofs of a
    /// mutual handshake do not verify. Call before [`Event::Opened`] or the hello arrives.
    pub fn bind_channel(&mut self, binding: Vec<u8>) {
        self.channel = binding;
    }

    /// The accepting side; it waits for the dialer's hello.
    pub fn accept(config: AcceptConfig) -> Self {
        Session {
            node: config.node,
            role: config.role,
            token: config.token,
            limits: config.limits,
            mutual: config.mutual,
            nonce: config.nonce,
            key: Vec::new(),
            dial: None,
            hello: None,
            channel: Vec::new(),
            phase: Phase::AwaitHello,
        }
    }

    /// True once the session has finished or closed.
    pub fn is_ended(&self) -> bool {
        matches!(self.phase, Phase::Ended)
    }

    /// The authenticated peer, once known.
    pub fn peer(&self) -> Option<&Peer> {
        match &self.phase {
            Phase::Exchange(x) => Some(&x.peer),
            _ => None,
        }
    }

    /// Handles one event. Nothing from a rejected frame is applied.
    pub fn handle<R: Replica>(&mut self, replica: &mut R, event: Event<'_>) -> Effects {
        let mut out = Effects::default();
        if self.is_ended() {
            return out;
        }
        let result = match event {
            Event::Opened => self.on_opened(replica, &mut out),
            Event::Closed => {
                self.phase = Phase::Ended;
                out.effects.push(Effect::Close(CloseReason::ConnectionLost));
                return out;
            }
            Event::Received(bytes) => match Frame::decode(bytes, self.limits.max_frame) {
                Ok(frame) => self.on_frame(replica, frame, &mut out),
                Err(e) => Err(Abort::frame(e)),
            },
        };
        if let Err(abort) = result {
            self.abort(abort, &mut out);
        }
        out
    }

    /// Tells the peer (a device, from a hub) that its user may no longer see `docs`, and drops
    /// them from this session. Does nothing before authentication or after the end.
    pub fn revoke(&mut self, docs: Vec<RecordId>) -> Effects {
        let mut out = Effects::default();
        let Phase::Exchange(x) = &mut self.phase else {
            return out;
        };
        for d in &docs {
            x.docs.remove(d);
            x.ignored.insert(d.clone());
        }
        x.revoked_sent.extend(docs.iter().cloned());
        if let Err(abort) = push_revoked(&self.limits, docs, &mut out) {
            self.abort(abort, &mut out);
        }
        out
    }

    fn abort(&mut self, abort: Abort, out: &mut Effects) {
        if let Some(code) = abort.code {
            let reason = reason_text(&abort.reason);
            let frame = Frame::Error(ErrorFrame { code, reason });
            if let Ok(bytes) = frame.encode(self.limits.max_frame) {
                out.send.push(bytes);
            }
        }
        out.effects.push(Effect::Close(abort.reason));
        self.phase = Phase::Ended;
    }

    fn on_opened<R: Replica>(&mut self, replica: &mut R, out: &mut Effects) -> Result<(), Abort> {
        let Some((peer, _)) = &self.dial else {
            return Ok(());
        };
        if !matches!(self.phase, Phase::Idle) {
            return Ok(());
        }
        if self.mutual && self.nonce.len() < MIN_NONCE_LEN {
            return Err(auth_failed("this side has no nonce for a LAN handshake"));
        }
        let checkpoint = match peer {
            Some(p) => replica.checkpoint(p).map_err(Abort::storage)?,
            None => 0,
        };
        let hello = Hello {
            version: PROTOCOL_VERSION,
            node: self.node.clone(),
            role: self.role,
            checkpoint,
            token: self.token.clone(),
            nonce: self.nonce.clone(),
            key: self.key.clone(),
        };
        out.send.push(
            Frame::Hello(hello.clone())
                .encode(self.limits.max_frame)
                .map_err(Abort::frame)?,
        );
        self.hello = Some(hello);
        self.phase = Phase::AwaitWelcome;
        Ok(())
    }

    fn on_frame<R: Replica>(
        &mut self,
        replica: &mut R,
        frame: Frame,
        out: &mut Effects,
    ) -> Result<(), Abort> {
        if let Frame::Error(e) = frame {
            self.phase = Phase::Ended;
            out.effects.push(Effect::Close(CloseReason::PeerError {
                code: e.code,
                reason: e.reason,
            }));
            return Ok(());
        }
        match std::mem::replace(&mut self.phase, Phase::Ended) {
            Phase::AwaitHello => match frame {
                Frame::Hello(h) => self.on_hello(replica, h, out),
                f => Err(Abort::out_of_order(format!("{} before hello", f.name()))),
            },
            Phase::AwaitWelcome => match frame {
                Frame::Welcome(w) => self.on_welcome(replica, w, out),
                f => Err(Abort::out_of_order(format!("{} before welcome", f.name()))),
            },
            Phase::AwaitProof(p) => match frame {
                Frame::Proof(proof) => self.on_proof(replica, *p, &proof, out),
                f => Err(Abort::out_of_order(format!("{} before proof", f.name()))),
            },
            Phase::Exchange(mut x) => {
                let finished = self.on_exchange_frame(replica, &mut x, frame, out)?;
                if !finished {
                    self.phase = Phase::Exchange(x);
                }
                Ok(())
            }
            Phase::Idle => Err(Abort::out_of_order("frame before the connection opened")),
            Phase::Ended => Ok(()),
        }
    }

    fn on_hello<R: Replica>(
        &mut self,
        replica: &mut R,
        hello: Hello,
        out: &mut Effects,
    ) -> Result<(), Abort> {
        let (principal, key) = if self.mutual {
            if self.nonce.len() < MIN_NONCE_LEN {
                return Err(auth_failed("this side has no nonce for a LAN handshake"));
            }
            if hello.nonce.len() < MIN_NONCE_LEN {
                return Err(auth_failed("hello without a nonce"));
            }
            match replica
                .verify_credential(&hello.token, &hello.node, hello.role)
                .map_err(Abort::storage)?
            {
                Ok((p, key)) => (p, key),
                Err(refused) => return Err(auth_failed(refused.0)),
            }
        } else {
            match replica
                .verify_token(&hello.token, &hello.node, hello.role)
                .map_err(Abort::storage)?
            {
                Ok(p) => (p, Vec::new()),
                Err(refused) => return Err(auth_failed(refused.0)),
            }
        };
        if principal.node != hello.node || principal.role != hello.role {
            return Err(auth_failed("token was issued to another node or role"));
        }
        let user = match principal.role {
            Role::Hub => None,
            Role::Device => match principal.user {
                Some(u) => Some(u),
                None => return Err(auth_failed("device token without a user")),
            },
        };
        if self.mutual && principal.role != Role::Device {
            return Err(auth_failed("a LAN peer must be a device"));
        }
        let peer = Peer {
            node: principal.node,
            role: principal.role,
            user,
        };
        // Per-peer state belongs to the peer's store: a replaced store is recognised by its
        // key (named by a LAN credential, or sent in the hello to a hub) and starts from zero.
        let store_key = if self.mutual { &key } else { &hello.key };
        replica
            .peer_store(&peer.node, store_key)
            .map_err(Abort::storage)?;
        let peer_since = replica.checkpoint(&peer.node).map_err(Abort::storage)?;
        let mut welcome = Welcome {
            node: self.node.clone(),
            role: self.role,
            user,
            token: self.token.clone(),
            checkpoint: peer_since,
            nonce: self.nonce.clone(),
            proof: Vec::new(),
            grant: Vec::new(),
        };
        if self.mutual {
            let signed = transcript(TranscriptLabel::Welcome, &self.channel, &hello, &welcome);
            welcome.proof = replica.sign(&signed).map_err(Abort::storage)?;
            let expected = transcript(TranscriptLabel::Proof, &self.channel, &hello, &welcome);
            out.send.push(
                Frame::Welcome(welcome)
                    .encode(self.limits.max_frame)
                    .map_err(Abort::frame)?,
            );
            // Nothing of this node's documents goes out before the dialer's proof.
            self.phase = Phase::AwaitProof(Box::new(Pending {
                peer,
                key,
                transcript: expected,
                peer_since,
                my_since: hello.checkpoint,
            }));
            return Ok(());
        }
        welcome.grant = replica.grant(&peer, &hello.key).map_err(Abort::storage)?;
        out.send.push(
            Frame::Welcome(welcome)
                .encode(self.limits.max_frame)
                .map_err(Abort::frame)?,
        );
        self.start_exchange(replica, peer, peer_since, hello.checkpoint, out)
    }

    /// The LAN dialer's proof of possession arrived: check it, then open the exchange.
    fn on_proof<R: Replica>(
        &mut self,
        replica: &mut R,
        pending: Pending,
        proof: &[u8],
        out: &mut Effects,
    ) -> Result<(), Abort> {
        let valid = replica
            .verify_proof(&pending.key, &pending.transcript, proof)
            .map_err(Abort::storage)?;
        if !valid {
            return Err(auth_failed(
                "the peer's proof of possession does not verify",
            ));
        }
        self.start_exchange(
            replica,
            pending.peer,
            pending.peer_since,
            pending.my_since,
            out,
        )
    }

    /// The acceptor, once the dialer is authenticated: reports it, tells a device what it may
    /// no longer see, and sends its first flight.
    fn start_exchange<R: Replica>(
        &mut self,
        replica: &mut R,
        peer: Peer,
        peer_since: u64,
        my_since: u64,
        out: &mut Effects,
    ) -> Result<(), Abort> {
        out.effects.push(Effect::Authenticated(peer.clone()));
        let mut x = Box::new(Exchange::new(peer, peer_since, my_since));
        if let Some(u) = x.peer.user {
            let revoked = replica.revoked(&x.peer.node, u).map_err(Abort::storage)?;
            if !revoked.is_empty() {
                x.ignored.extend(revoked.iter().cloned());
                x.revoked_sent.extend(revoked.iter().cloned());
                push_revoked(&self.limits, revoked, out)?;
            }
        }
        // The acceptor's first flight: its announce and its first messages. It may not end the
        // exchange yet: the dialer's announce is still to come.
        self.announce(replica, &mut x, out)?;
        let generated = self.generate(replica, &mut x, out)?;
        self.push_batches(generated, out)?;
        self.phase = Phase::Exchange(x);
        Ok(())
    }

    fn on_welcome<R: Replica>(
        &mut self,
        replica: &mut R,
        welcome: Welcome,
        out: &mut Effects,
    ) -> Result<(), Abort> {
        // Only the dialer reaches this phase.
        let Some((expected, verify)) = self.dial.clone() else {
            return Err(Abort::out_of_order("welcome on the accepting side"));
        };
        if expected.as_ref().is_some_and(|e| *e != welcome.node) {
            return Err(Abort {
                reason: CloseReason::WrongPeer(welcome.node),
                code: Some(ErrorCode::WrongPeer),
            });
        }
        let mut stale_hello = false;
        let user = if self.mutual {
            let Some(hello) = self.hello.clone() else {
                return Err(Abort::out_of_order("welcome before hello"));
            };
            if welcome.nonce.len() < MIN_NONCE_LEN {
                return Err(auth_failed("welcome without a nonce"));
            }
            let (p, key) = match replica
                .verify_credential(&welcome.token, &welcome.node, welcome.role)
                .map_err(Abort::storage)?
            {
                Ok(v) => v,
                Err(refused) => return Err(auth_failed(refused.0)),
            };
            if p.node != welcome.node || p.role != Role::Device || welcome.role != Role::Device {
                return Err(auth_failed(
                    "peer credential was issued to another node or role",
                ));
            }
            let Some(u) = p.user else {
                return Err(auth_failed("peer credential without a user"));
            };
            let signed = transcript(TranscriptLabel::Welcome, &self.channel, &hello, &welcome);
            let valid = replica
                .verify_proof(&key, &signed, &welcome.proof)
                .map_err(Abort::storage)?;
            if !valid {
                return Err(auth_failed(
                    "the peer's proof of possession does not verify",
                ));
            }
            // The hello went out with this side's checkpoint for the acceptor's feed; if the
            // acceptor's store was replaced, that checkpoint was for the old one.
            stale_hello = replica
                .peer_store(&welcome.node, &key)
                .map_err(Abort::storage)?
                && hello.checkpoint > 0;
            let mine = transcript(TranscriptLabel::Proof, &self.channel, &hello, &welcome);
            let proof = replica.sign(&mine).map_err(Abort::storage)?;
            out.send.push(
                Frame::Proof(proof)
                    .encode(self.limits.max_frame)
                    .map_err(Abort::frame)?,
            );
            Some(u)
        } else if verify {
            match replica
                .verify_token(&welcome.token, &welcome.node, welcome.role)
                .map_err(Abort::storage)?
            {
                Ok(p) if p.node == welcome.node && p.role == welcome.role => match p.role {
                    Role::Hub => None,
                    Role::Device => match p.user {
                        Some(u) => Some(u),
                        None => return Err(auth_failed("peer device token without a user")),
                    },
                },
                Ok(_) => return Err(auth_failed("peer token was issued to another node or role")),
                Err(refused) => return Err(auth_failed(refused.0)),
            }
        } else {
            match welcome.role {
                Role::Hub => None,
                // An unverified device is bounded by this node's own user.
                Role::Device => welcome.user,
            }
        };
        if welcome.role == Role::Device && user.is_none() {
            return Err(auth_failed(
                "cannot bound an unverified device peer by any user",
            ));
        }
        let peer = Peer {
            node: welcome.node,
            role: welcome.role,
            user,
        };
        out.effects.push(Effect::Authenticated(peer.clone()));
        // Only a hub's grant counts (the caller verifies its signature).
        if peer.role == Role::Hub && !welcome.grant.is_empty() {
            out.effects.push(Effect::Granted(welcome.grant));
        }
        // The acceptor announces from the checkpoint the hello offered (0 when the peer was
        // not known in advance).
        let peer_since = match &self.hello {
            Some(h) => h.checkpoint,
            None => replica.checkpoint(&peer.node).map_err(Abort::storage)?,
        };
        let mut x = Box::new(Exchange::new(peer, peer_since, welcome.checkpoint));
        x.stale_hello = stale_hello;
        self.phase = Phase::Exchange(x);
        Ok(())
    }

    /// Returns true when the exchange finished.
    fn on_exchange_frame<R: Replica>(
        &mut self,
        replica: &mut R,
        x: &mut Exchange,
        frame: Frame,
        out: &mut Effects,
    ) -> Result<bool, Abort> {
        if x.done_sent && !matches!(frame, Frame::Done { .. }) {
            return Err(Abort::out_of_order(format!(
                "{} after this side's done",
                frame.name()
            )));
        }
        match frame {
            Frame::Announce(a) => {
                if x.peer_upto.is_some() {
                    return Err(Abort::out_of_order("a second announce"));
                }
                if a.since == 0 && x.peer_since > 0 {
                    // The peer's feed is shorter than this side's checkpoint for it: the
                    // checkpoint was for an earlier store of the peer, which announces its
                    // whole feed (see `announce`). Progress is counted from zero.
                    x.peer_since = 0;
                }
                if a.since != x.peer_since {
                    return Err(Abort::malformed(format!(
                        "announce since {} but this side's checkpoint is {}",
                        a.since, x.peer_since
                    )));
                }
                self.admit_peer_docs(replica, x, a.docs, out)?;
                if a.last {
                    x.peer_upto = Some(a.upto);
                }
                Ok(false)
            }
            Frame::SyncBatch(b) => {
                if x.peer_upto.is_none() {
                    return Err(Abort::out_of_order("sync batch before the peer's announce"));
                }
                x.mid_batch = true;
                self.apply_batch(replica, x, b.entries, out)?;
                if !b.last {
                    return Ok(false);
                }
                x.mid_batch = false;
                self.reply(replica, x, out)
            }
            Frame::Done { checkpoint } => {
                if x.peer_upto.is_none() || !x.announced || x.mid_batch {
                    return Err(Abort::out_of_order(
                        "done before both announces or mid-flight",
                    ));
                }
                if !x.done_sent {
                    // The peer is quiet and so is this side (its last flight had nothing the
                    // peer answered): confirm with this side's own done.
                    let mine = self.offered_checkpoint(replica, x)?;
                    let done = Frame::Done { checkpoint: mine };
                    out.send
                        .push(done.encode(self.limits.max_frame).map_err(Abort::frame)?);
                }
                if !x.revoked_sent.is_empty() {
                    replica
                        .revocation_delivered(&x.peer.node, &x.revoked_sent)
                        .map_err(Abort::storage)?;
                }
                self.finish(x, checkpoint, out);
                Ok(true)
            }
            Frame::AccessRevoked(docs) => {
                if x.peer.role != Role::Hub {
                    for doc in docs {
                        out.effects.push(Effect::Ignored {
                            doc,
                            reason: IgnoreReason::RevocationFromNonHub,
                        });
                    }
                    return Ok(false);
                }
                for d in &docs {
                    x.docs.remove(d);
                    x.ignored.insert(d.clone());
                }
                out.effects.push(Effect::AccessRevoked(docs));
                Ok(false)
            }
            f @ (Frame::Hello(_) | Frame::Welcome(_) | Frame::Proof(_)) => Err(
                Abort::out_of_order(format!("{} during the exchange", f.name())),
            ),
            // Handled before the phase match.
            Frame::Error(_) => Ok(true),
        }
    }

    /// After a whole flight from the peer: send the next flight, or done when quiet.
    fn reply<R: Replica>(
        &mut self,
        replica: &mut R,
        x: &mut Exchange,
        out: &mut Effects,
    ) -> Result<bool, Abort> {
        if !x.announced {
            self.announce(replica, x, out)?;
        }
        let generated = self.generate(replica, x, out)?;
        if generated.is_empty() {
            let checkpoint = self.offered_checkpoint(replica, x)?;
            let done = Frame::Done { checkpoint };
            out.send
                .push(done.encode(self.limits.max_frame).map_err(Abort::frame)?);
            x.done_sent = true;
            return Ok(false);
        }
        self.push_batches(generated, out)?;
        Ok(false)
    }

    /// The checkpoint this node offers the peer for its own feed at the end of a quiet
    /// exchange.
    ///
    /// At least the announced head. Beyond it, the feed also holds changes made during the
    /// session, mostly the peer's own changes applied here; offering the current head skips
    /// re-announcing those next time. That is safe only if the peer already has every such
    /// document as this node has it now: the peer's last advertised heads (`their_heads`) equal
    /// this node's current heads, or the peer may not see the document at all. Otherwise the
    /// announced head is offered. After a message was skipped, nothing is offered beyond the
    /// peer's old checkpoint, so the skipped document is announced again next session.
    fn offered_checkpoint<R: Replica>(
        &mut self,
        replica: &mut R,
        x: &mut Exchange,
    ) -> Result<u64, Abort> {
        let Some(announced) = x.my_upto else {
            return Ok(x.my_since);
        };
        if x.skipped_send {
            return Ok(x.my_since);
        }
        let slice = replica.changed_since(announced).map_err(Abort::storage)?;
        if slice.docs.is_empty() || slice.upto <= announced {
            return Ok(announced);
        }
        let visible = match x.peer.user {
            None => vec![Visibility::Visible; slice.docs.len()],
            Some(u) => replica.visibility(u, &slice.docs).map_err(Abort::storage)?,
        };
        let heads = replica.heads(&slice.docs).map_err(Abort::storage)?;
        if visible.len() != slice.docs.len() || heads.len() != slice.docs.len() {
            return Err(Abort::storage("replica returned a list of another length"));
        }
        let all_known = slice
            .docs
            .iter()
            .zip(visible)
            .zip(heads)
            .all(|((d, v), h)| {
                v == Visibility::Hidden
                    || x.docs
                        .get(d)
                        .is_some_and(|s| h.is_some() && s.their_heads == h)
            });
        Ok(if all_known { slice.upto } else { announced })
    }

    /// Records the end of a quiet exchange, with the checkpoint the peer offered for its feed.
    fn finish(&mut self, x: &mut Exchange, offered: u64, out: &mut Effects) {
        if !x.failed_receive && !x.stale_hello && offered > x.peer_since {
            out.effects.push(Effect::CheckpointAdvanced {
                peer: x.peer.node.clone(),
                checkpoint: offered,
            });
        }
        out.effects.push(Effect::Finished);
    }

    /// Sends this node's announce: its feed since the peer's checkpoint, only what the peer may
    /// see, and adds those documents to the session.
    fn announce<R: Replica>(
        &mut self,
        replica: &mut R,
        x: &mut Exchange,
        out: &mut Effects,
    ) -> Result<(), Abort> {
        let mut slice = replica.changed_since(x.my_since).map_err(Abort::storage)?;
        if slice.upto < x.my_since {
            // The peer holds a checkpoint beyond this node's feed: one given by an earlier
            // store of this node (replaced under the same name). Announce the whole feed.
            x.my_since = 0;
            slice = replica.changed_since(0).map_err(Abort::storage)?;
        }
        let docs = match x.peer.user {
            None => slice.docs,
            Some(u) => {
                let vis = replica.visibility(u, &slice.docs).map_err(Abort::storage)?;
                if vis.len() != slice.docs.len() {
                    return Err(Abort::storage(
                        "replica returned a visibility list of another length",
                    ));
                }
                slice
                    .docs
                    .into_iter()
                    .zip(vis)
                    .filter_map(|(d, v)| (v == Visibility::Visible).then_some(d))
                    .collect()
            }
        };
        let docs: Vec<RecordId> = docs
            .into_iter()
            .filter(|d| !x.ignored.contains(d))
            .collect();
        self.add_docs(replica, x, &docs)?;
        let budget = self.limits.target_frame.min(self.limits.max_frame);
        let mut chunk = Vec::new();
        let mut size = ANNOUNCE_OVERHEAD;
        let mut frames = Vec::new();
        for d in docs {
            let len = id_wire_len(&d);
            if !chunk.is_empty() && size + len > budget {
                frames.push(std::mem::take(&mut chunk));
                size = ANNOUNCE_OVERHEAD;
            }
            size += len;
            chunk.push(d);
        }
        frames.push(chunk);
        let n = frames.len();
        for (i, docs) in frames.into_iter().enumerate() {
            let a = Frame::Announce(Announce {
                last: i + 1 == n,
                since: x.my_since,
                upto: slice.upto,
                docs,
            });
            out.send
                .push(a.encode(self.limits.max_frame).map_err(Abort::frame)?);
        }
        x.announced = true;
        x.my_upto = Some(slice.upto);
        Ok(())
    }

    /// Adds documents the peer announced, minus those its user may not see.
    fn admit_peer_docs<R: Replica>(
        &mut self,
        replica: &mut R,
        x: &mut Exchange,
        docs: Vec<RecordId>,
        out: &mut Effects,
    ) -> Result<(), Abort> {
        let docs: Vec<RecordId> = docs
            .into_iter()
            .filter(|d| !x.docs.contains_key(d) && !x.ignored.contains(d))
            .collect();
        let docs = match x.peer.user {
            None => docs,
            Some(u) => {
                let vis = replica.visibility(u, &docs).map_err(Abort::storage)?;
                if vis.len() != docs.len() {
                    return Err(Abort::storage(
                        "replica returned a visibility list of another length",
                    ));
                }
                let mut keep = Vec::with_capacity(docs.len());
                let mut held_hidden = Vec::new();
                for (d, v) in docs.into_iter().zip(vis) {
                    if v == Visibility::Hidden {
                        x.ignored.insert(d.clone());
                        held_hidden.push(d.clone());
                        out.effects.push(Effect::Ignored {
                            doc: d,
                            reason: IgnoreReason::PeerMayNotSee,
                        });
                    } else {
                        keep.push(d);
                    }
                }
                // A device announced documents its user may no longer see: it holds them (from
                // a LAN peer, or from before an owner change this hub never sent it), so a hub
                // tells it, as it does for those its own sync states show the device holds.
                if self.role == Role::Hub && x.peer.role == Role::Device && !held_hidden.is_empty()
                {
                    x.revoked_sent.extend(held_hidden.iter().cloned());
                    push_revoked(&self.limits, held_hidden, out)?;
                }
                keep
            }
        };
        self.add_docs(replica, x, &docs)
    }

    /// Loads the persisted sync states of new session documents and primes them (see
    /// [`prime`]).
    fn add_docs<R: Replica>(
        &mut self,
        replica: &mut R,
        x: &mut Exchange,
        docs: &[RecordId],
    ) -> Result<(), Abort> {
        let fresh: Vec<RecordId> = docs
            .iter()
            .filter(|d| !x.docs.contains_key(*d))
            .cloned()
            .collect();
        if fresh.is_empty() {
            return Ok(());
        }
        let states = replica
            .load_states(&x.peer.node, &fresh)
            .map_err(Abort::storage)?;
        if states.len() != fresh.len() {
            return Err(Abort::storage(
                "replica returned a state list of another length",
            ));
        }
        for (d, mut s) in fresh.into_iter().zip(states) {
            prime(&mut s);
            x.docs.insert(d, s);
        }
        Ok(())
    }

    /// Decodes and checks a whole batch frame first, then applies it in one replica call.
    fn apply_batch<R: Replica>(
        &mut self,
        replica: &mut R,
        x: &mut Exchange,
        entries: Vec<BatchEntry>,
        out: &mut Effects,
    ) -> Result<(), Abort> {
        let mut seen = BTreeSet::new();
        let mut decoded = Vec::with_capacity(entries.len());
        for entry in entries {
            let BatchEntry {
                doc,
                message: bytes,
                signatures,
            } = entry;
            if !seen.insert(doc.clone()) {
                return Err(Abort::malformed(format!(
                    "document {doc} twice in one batch"
                )));
            }
            let msg = match guarded(|| sync::Message::decode(&bytes)) {
                Ok(Ok(msg)) => msg,
                Ok(Err(e)) => return Err(Abort::malformed(format!("sync message for {doc}: {e}"))),
                Err(e) => return Err(Abort::malformed(format!("sync message for {doc}: {e}"))),
            };
            if x.ignored.contains(&doc) {
                continue;
            }
            if !x.docs.contains_key(&doc) {
                return Err(Abort::out_of_order(format!(
                    "sync message for {doc}, never announced"
                )));
            }
            decoded.push((doc, msg, signatures));
        }
        if decoded.is_empty() {
            return Ok(());
        }
        // Take the states out so that the replica can borrow them mutably; applied ones go
        // back below.
        let mut taken: Vec<(RecordId, sync::State)> = Vec::with_capacity(decoded.len());
        let mut msgs = Vec::with_capacity(decoded.len());
        for (d, m, sigs) in decoded {
            let s = x.docs.remove(&d).unwrap_or_default();
            taken.push((d, s));
            msgs.push((m, sigs));
        }
        let batch: Vec<Incoming<'_>> = taken
            .iter_mut()
            .zip(msgs)
            .map(|((doc, state), (message, signatures))| Incoming {
                doc,
                state,
                message,
                signatures,
            })
            .collect();
        let outcomes = match replica.receive(&x.peer, batch) {
            Ok(o) if o.contains(&Received::Malformed) => {
                let doc = o
                    .iter()
                    .position(|r| *r == Received::Malformed)
                    .and_then(|i| taken.get(i))
                    .map_or_else(String::new, |(d, _)| d.to_string());
                return Err(Abort::malformed(format!(
                    "sync message for {doc}: automerge cannot read its changes"
                )));
            }
            Ok(o) if o.len() == taken.len() => o,
            Ok(_) => {
                return Err(Abort::storage(
                    "replica returned an outcome list of another length",
                ));
            }
            Err(e) => return Err(Abort::storage(e)),
        };
        let mut changed = Vec::new();
        let mut refused = Vec::new();
        for ((doc, state), outcome) in taken.into_iter().zip(outcomes) {
            match outcome {
                Received::Applied { changed: c } => {
                    if c {
                        changed.push(doc.clone());
                    }
                    x.docs.insert(doc, state);
                }
                Received::Denied => {
                    x.ignored.insert(doc.clone());
                    if self.role == Role::Hub && x.peer.role == Role::Device {
                        refused.push(doc.clone());
                    }
                    out.effects.push(Effect::Ignored {
                        doc,
                        reason: IgnoreReason::Denied,
                    });
                }
                // Handled above: the session has closed.
                Received::Malformed => {}
                Received::Rejected => {
                    x.failed_receive = true;
                    x.ignored.insert(doc.clone());
                    out.effects.push(Effect::Ignored {
                        doc,
                        reason: IgnoreReason::Rejected,
                    });
                }
                Received::Forged => {
                    x.failed_receive = true;
                    x.ignored.insert(doc.clone());
                    // The device is told, as for a record it may not hold: it keeps the record
                    // under a permission conflict its user sees, instead of offering it again
                    // unseen at every session.
                    if self.role == Role::Hub && x.peer.role == Role::Device {
                        refused.push(doc.clone());
                    }
                    out.effects.push(Effect::Ignored {
                        doc,
                        reason: IgnoreReason::Forged,
                    });
                }
            }
        }
        if !changed.is_empty() {
            out.effects.push(Effect::DocumentsChanged(changed));
        }
        // A hub tells the device which of its documents it refused (a record its user may not
        // hold), so that the device keeps it under a permission conflict instead of believing
        // it synced.
        push_revoked(&self.limits, refused, out)
    }

    /// Generates the next message of every session document, in one replica call, with the
    /// signatures of the changes each message carries (a second call).
    fn generate<R: Replica>(
        &mut self,
        replica: &mut R,
        x: &mut Exchange,
        out: &mut Effects,
    ) -> Result<Vec<BatchEntry>, Abort> {
        if x.docs.is_empty() {
            return Ok(Vec::new());
        }
        let mut pairs: Vec<(&RecordId, &mut sync::State)> = x.docs.iter_mut().collect();
        // What each state had sent before: the message carries the changes sent now.
        let before_sets: Vec<std::collections::BTreeSet<ChangeHash>> =
            pairs.iter().map(|(_, s)| s.sent_hashes.clone()).collect();
        let msgs = replica.generate(&mut pairs).map_err(Abort::storage)?;
        if msgs.len() != pairs.len() {
            return Err(Abort::storage(
                "replica returned a message list of another length",
            ));
        }
        let mut sent: Vec<(RecordId, Vec<ChangeHash>)> = Vec::new();
        let mut messages = Vec::new();
        for (((doc, state), msg), was) in pairs.into_iter().zip(msgs).zip(before_sets) {
            let Some(msg) = msg else { continue };
            let carried: Vec<ChangeHash> = state
                .sent_hashes
                .iter()
                .filter(|h| !was.contains(h))
                .copied()
                .collect();
            sent.push((doc.clone(), carried));
            messages.push(msg.encode());
        }
        let signatures = if sent.iter().all(|(_, h)| h.is_empty()) {
            vec![Vec::new(); sent.len()]
        } else {
            replica.sign_changes(&sent).map_err(Abort::storage)?
        };
        if signatures.len() != sent.len() {
            return Err(Abort::storage(
                "replica returned a signature list of another length",
            ));
        }
        let room = self.limits.max_frame.saturating_sub(BATCH_OVERHEAD);
        let mut generated = Vec::new();
        let mut too_large = Vec::new();
        for (((doc, _), message), signatures) in sent.into_iter().zip(messages).zip(signatures) {
            let entry = BatchEntry {
                doc,
                message,
                signatures,
            };
            if entry_wire_len(&entry) > room {
                too_large.push((entry.doc.clone(), entry.message.len()));
            } else {
                generated.push(entry);
            }
        }
        for (doc, len) in too_large {
            // Retried next session: the checkpoint stays where it was.
            x.skipped_send = true;
            x.docs.remove(&doc);
            x.ignored.insert(doc.clone());
            out.effects.push(Effect::Ignored {
                doc,
                reason: IgnoreReason::TooLarge(len),
            });
        }
        Ok(generated)
    }

    /// Splits a flight's messages into frames under the limits; the last one is flagged.
    fn push_batches(&mut self, generated: Vec<BatchEntry>, out: &mut Effects) -> Result<(), Abort> {
        let budget = self.limits.target_frame.min(self.limits.max_frame);
        let mut frames: Vec<Vec<BatchEntry>> = Vec::new();
        let mut chunk = Vec::new();
        let mut size = BATCH_OVERHEAD;
        for entry in generated {
            let len = entry_wire_len(&entry);
            if !chunk.is_empty() && size + len > budget {
                frames.push(std::mem::take(&mut chunk));
                size = BATCH_OVERHEAD;
            }
            size += len;
            chunk.push(entry);
        }
        frames.push(chunk);
        let n = frames.len();
        for (i, entries) in frames.into_iter().enumerate() {
            let b = Frame::SyncBatch(SyncBatch {
                last: i + 1 == n,
                entries,
            });
            out.send
                .push(b.encode(self.limits.max_frame).map_err(Abort::frame)?);
        }
        Ok(())
    }
}

impl Exchange {
    fn new(peer: Peer, peer_since: u64, my_since: u64) -> Self {
        Exchange {
            peer,
            peer_since,
            my_since,
            announced: false,
            peer_upto: None,
            mid_batch: false,
            docs: BTreeMap::new(),
            ignored: BTreeSet::new(),
            my_upto: None,
            skipped_send: false,
            failed_receive: false,
            stale_hello: false,
            done_sent: false,
            revoked_sent: Vec::new(),
        }
    }
}

/// Primes a sync state restored from storage so that the first message already carries the
/// changes made since the last sync.
///
/// Automerge's first message in a session only advertises heads and a bloom filter; changes
/// follow once the peer has answered. When this node has synced the document with this peer
/// before (non-empty shared heads), the peer holds at least those heads, so this side assumes
/// the peer "has" exactly them and sends everything after them at once, saving a round trip. If
/// the assumption is wrong (the peer lost data), the peer's answer carries its real state and
/// automerge's usual exchange takes over; nothing is lost, only some bytes may be resent.
fn prime(state: &mut sync::State) {
    // `State::decode` leaves `their_heads` unset (and `their_have` empty): nothing has been
    // heard from the peer in this session yet.
    if state.shared_heads.is_empty() || state.their_heads.is_some() {
        return;
    }
    state.their_have = Some(vec![sync::Have {
        last_sync: state.shared_heads.clone(),
        bloom: sync::BloomFilter::default(),
    }]);
    state.their_need = Some(Vec::new());
}

/// The shortest nonce a LAN handshake accepts.
pub const MIN_NONCE_LEN: usize = 16;

/// Which signature of a LAN handshake a transcript is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TranscriptLabel {
    /// Signed by the acceptor, carried in its welcome.
    Welcome,
    /// Signed by the dialer, carried in its proof frame.
    Proof,
}

/// The bytes a LAN peer signs to prove possession of its key: a domain tag, the label, then
/// the channel binding, the dialer's node, credential and nonce and the acceptor's node,
/// credential and nonce, each length-prefixed (u32 big endian). The welcome's own proof and
/// grant are not part of it.
pub fn transcript(
    label: TranscriptLabel,
    channel: &[u8],
    hello: &Hello,
    welcome: &Welcome,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        96 + channel.len()
            + hello.token.len()
            + welcome.token.len()
            + hello.nonce.len()
            + welcome.nonce.len(),
    );
    out.extend_from_slice(b"sellsync/lan-handshake/v3\0");
    out.extend_from_slice(match label {
        TranscriptLabel::Welcome => b"welcome",
        TranscriptLabel::Proof => b"proof\0\0",
    });
    for field in [
        channel,
        hello.node.as_str().as_bytes(),
        &hello.token,
        &hello.nonce,
        welcome.node.as_str().as_bytes(),
        &welcome.token,
        &welcome.nonce,
    ] {
        // Fields are bounded by the frame limits, far below u32::MAX.
        out.extend_from_slice(&(field.len() as u32).to_be_bytes());
        out.extend_from_slice(field);
    }
    out
}

fn auth_failed(reason: impl Into<String>) -> Abort {
    Abort {
        reason: CloseReason::AuthFailed(reason.into()),
        code: Some(ErrorCode::AuthFailed),
    }
}

fn reason_text(reason: &CloseReason) -> String {
    let text = match reason {
        CloseReason::AuthFailed(r) => format!("authentication failed: {r}"),
        CloseReason::WrongPeer(n) => format!("this is not node {n}"),
        CloseReason::Malformed(r) => format!("malformed frame: {r}"),
        CloseReason::OutOfOrder(r) => format!("out of order: {r}"),
        CloseReason::PeerError { reason, .. } => reason.clone(),
        // The peer did nothing wrong; keep storage details local.
        CloseReason::Storage(_) => "internal error".to_owned(),
        CloseReason::ConnectionLost => "connection lost".to_owned(),
    };
    truncate_utf8(text, crate::frame::MAX_REASON_LEN)
}

fn truncate_utf8(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

fn push_revoked(limits: &Limits, docs: Vec<RecordId>, out: &mut Effects) -> Result<(), Abort> {
    let budget = limits.target_frame.min(limits.max_frame);
    let mut chunk = Vec::new();
    let mut size = REVOKED_OVERHEAD;
    let mut frames = Vec::new();
    for d in docs {
        let len = id_wire_len(&d);
        if !chunk.is_empty() && size + len > budget {
            frames.push(std::mem::take(&mut chunk));
            size = REVOKED_OVERHEAD;
        }
        size += len;
        chunk.push(d);
    }
    if !chunk.is_empty() {
        frames.push(chunk);
    }
    for docs in frames {
        out.send.push(
            Frame::AccessRevoked(docs)
                .encode(limits.max_frame)
                .map_err(Abort::frame)?,
        );
    }
    Ok(())
}
