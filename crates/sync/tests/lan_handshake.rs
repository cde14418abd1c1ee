//! The LAN handshake of the pure session, between two in-memory device replicas.
//!
//! The crypto is a stand-in (the real one, Ed25519 with hub-signed credentials, lives in
//! `sellsync-service` and is tested there): a credential is `node:user:key`, known to the
//! replica unless revoked, and a proof is a keyed hash of the transcript, so that a proof made for
//! one transcript fails for another, as a signature would.

mod support;

use std::collections::BTreeSet;
use std::convert::Infallible;

use automerge::{ChangeHash, sync};
use sellsync_model::{DeviceId, RecordId, UserId};
use sellsync_sync::frame::Frame;
use sellsync_sync::memory::MemReplica;
use sellsync_sync::{
    AcceptConfig, CloseReason, CredentialCheck, DialConfig, Effect, Event, FeedSlice, Incoming,
    Limits, Peer, Principal, Received, Replica, Role, Session, TokenRefused, Visibility,
};
use support::{deal, record_id, standard_acl};

/// A device replica with stand-in credentials.
struct Lan {
    mem: MemReplica,
    key: u64,
    revoked: BTreeSet<String>,
}

fn keyed_hash(key: u64, bytes: &[u8]) -> Vec<u8> {
    // FNV-1a, seeded with the key: enough to tell transcripts apart in a test.
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ key;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h.to_be_bytes().to_vec()
}

impl Lan {
    fn new(name: &str, user: u64, key: u64) -> Lan {
        Lan {
            mem: MemReplica::new(name.parse().unwrap(), Some(UserId(user)), standard_acl()),
            key,
            revoked: BTreeSet::new(),
        }
    }

    fn credential(&self) -> Vec<u8> {
        format!(
            "{}:{}:{}",
            self.mem.node(),
            self.mem.user().unwrap().0,
            self.key
        )
        .into_bytes()
    }
}

impl Replica for Lan {
    type Error = Infallible;

    fn verify_token(
        &self,
        token: &[u8],
        claimed_node: &DeviceId,
        claimed_role: Role,
    ) -> Result<Result<Principal, TokenRefused>, Infallible> {
        self.mem.verify_token(token, claimed_node, claimed_role)
    }

    fn verify_credential(
        &self,
        credential: &[u8],
        claimed_node: &DeviceId,
        claimed_role: Role,
    ) -> Result<CredentialCheck, Infallible> {
        let text = String::from_utf8_lossy(credential);
        let parts: Vec<&str> = text.split(':').collect();
        let [node, user, key] = parts.as_slice() else {
            return Ok(Err(TokenRefused("not a credential".into())));
        };
        if *node != claimed_node.as_str() || claimed_role != Role::Device {
            return Ok(Err(TokenRefused("issued to another node".into())));
        }
        if self.revoked.contains(*node) {
            return Ok(Err(TokenRefused("revoked".into())));
        }
        let (Ok(user), Ok(key)) = (user.parse::<u64>(), key.parse::<u64>()) else {
            return Ok(Err(TokenRefused("not a credential".into())));
        };
        Ok(Ok((
            Principal {
                node: claimed_node.clone(),
                role: Role::Device,
                user: Some(UserId(user)),
            },
            key.to_be_bytes().to_vec(),
        )))
    }

    fn verify_proof(
        &self,
        key: &[u8],
        transcript: &[u8],
        proof: &[u8],
    ) -> Result<bool, Infallible> {
        let Ok(key) = <[u8; 8]>::try_from(key) else {
            return Ok(false);
        };
        Ok(proof == keyed_hash(u64::from_be_bytes(key), transcript))
    }

    fn sign(&self, transcript: &[u8]) -> Result<Vec<u8>, Infallible> {
        Ok(keyed_hash(self.key, transcript))
    }

    fn checkpoint(&self, peer: &DeviceId) -> Result<u64, Infallible> {
        self.mem.checkpoint(peer)
    }

    fn changed_since(&self, since: u64) -> Result<FeedSlice, Infallible> {
        self.mem.changed_since(since)
    }

    fn visibility(&self, user: UserId, docs: &[RecordId]) -> Result<Vec<Visibility>, Infallible> {
        self.mem.visibility(user, docs)
    }

    fn revoked(&mut self, peer: &DeviceId, user: UserId) -> Result<Vec<RecordId>, Infallible> {
        self.mem.revoked(peer, user)
    }

    fn revocation_delivered(
        &mut self,
        peer: &DeviceId,
        docs: &[RecordId],
    ) -> Result<(), Infallible> {
        self.mem.revocation_delivered(peer, docs)
    }

    fn load_states(
        &self,
        peer: &DeviceId,
        docs: &[RecordId],
    ) -> Result<Vec<sync::State>, Infallible> {
        self.mem.load_states(peer, docs)
    }

    fn heads(&self, docs: &[RecordId]) -> Result<Vec<Option<Vec<ChangeHash>>>, Infallible> {
        Replica::heads(&self.mem, docs)
    }

    fn generate(
        &self,
        docs: &mut [(&RecordId, &mut sync::State)],
    ) -> Result<Vec<Option<sync::Message>>, Infallible> {
        self.mem.generate(docs)
    }

    fn receive(
        &mut self,
        peer: &Peer,
        batch: Vec<Incoming<'_>>,
    ) -> Result<Vec<Received>, Infallible> {
        self.mem.receive(peer, batch)
    }
}

fn dial_cfg(r: &Lan, nonce: u8) -> DialConfig {
    DialConfig {
        node: r.mem.node().clone(),
        role: Role::Device,
        token: r.credential(),
        peer: None,
        verify_peer_token: false,
        mutual: true,
        nonce: vec![nonce; 32],
        key: Vec::new(),
        limits: Limits::default(),
    }
}

fn accept_cfg(r: &Lan, nonce: u8) -> AcceptConfig {
    AcceptConfig {
        node: r.mem.node().clone(),
        role: Role::Device,
        token: r.credential(),
        mutual: true,
        nonce: vec![nonce; 32],
        limits: Limits::default(),
    }
}

#[derive(Debug, Default)]
struct Run {
    from_dialer: Vec<Vec<u8>>,
    from_acceptor: Vec<Vec<u8>>,
    closed: Vec<CloseReason>,
    finished: bool,
}

/// Runs one session, frame by frame, to its end.
fn pump(d: &mut Lan, dcfg: DialConfig, a: &mut Lan, acfg: AcceptConfig) -> Run {
    let mut ds = Session::dial(dcfg);
    let mut acc = Session::accept(acfg);
    let mut run = Run::default();
    let fx = ds.handle(d, Event::Opened);
    let mut to_a = fx.send;
    let mut to_d: Vec<Vec<u8>> = Vec::new();
    let collect = |fx: &sellsync_sync::Effects, run: &mut Run| {
        for e in &fx.effects {
            if let Effect::Close(r) = e {
                run.closed.push(r.clone());
            }
        }
    };
    // Bounded: a session ends within a few flights.
    for _ in 0..50 {
        for f in std::mem::take(&mut to_a) {
            run.from_dialer.push(f.clone());
            let fx = acc.handle(a, Event::Received(&f));
            collect(&fx, &mut run);
            to_d.extend(fx.send);
        }
        for f in std::mem::take(&mut to_d) {
            run.from_acceptor.push(f.clone());
            let fx = ds.handle(d, Event::Received(&f));
            collect(&fx, &mut run);
            to_a.extend(fx.send);
        }
        if to_a.is_empty() && to_d.is_empty() {
            break;
        }
    }
    run.finished = ds.is_ended() && acc.is_ended() && run.closed.is_empty();
    run
}

fn kind(frame: &[u8]) -> &'static str {
    Frame::decode(frame, 1 << 24).unwrap().name()
}

fn ids(r: &Lan) -> Vec<String> {
    r.mem.doc_ids().map(|d| d.as_str().to_owned()).collect()
}

#[test]
fn two_devices_authenticate_each_other_and_exchange_what_both_users_may_see() {
    // Users 1 and 2 share a team; user 3 is alone.
    let mut rita = Lan::new("rita", 1, 11);
    let mut carl = Lan::new("carl", 2, 22);
    let mut olga = Lan::new("olga", 3, 33);
    let d = deal(&rita.mem, 1, 3, 1);
    rita.mem.put(record_id("deal-rita"), d);
    let d = deal(&carl.mem, 2, 3, 2);
    carl.mem.put(record_id("deal-carl"), d);
    let d = deal(&olga.mem, 3, 3, 3);
    olga.mem.put(record_id("deal-olga"), d);

    let (dc, ac) = (dial_cfg(&rita, 1), accept_cfg(&carl, 2));
    let run = pump(&mut rita, dc, &mut carl, ac);
    assert!(run.finished, "{run:?}");
    // hello, then proof before anything else from the dialer; welcome alone first from the
    // acceptor (nothing of its documents before the proof).
    assert_eq!(kind(&run.from_dialer[0]), "hello");
    assert_eq!(kind(&run.from_dialer[1]), "proof");
    assert_eq!(kind(&run.from_acceptor[0]), "welcome");
    assert_eq!(ids(&rita), vec!["deal-carl", "deal-rita"]);
    assert_eq!(ids(&carl), vec!["deal-carl", "deal-rita"]);

    let (dc, ac) = (dial_cfg(&olga, 3), accept_cfg(&carl, 4));
    let run = pump(&mut olga, dc, &mut carl, ac);
    assert!(run.finished, "{run:?}");
    assert_eq!(ids(&olga), vec!["deal-olga"]);
    assert_eq!(ids(&carl), vec!["deal-carl", "deal-rita"]);
}

#[test]
fn revoked_peers_replayed_proofs_and_missing_nonces_are_refused() {
    let mut rita = Lan::new("rita", 1, 11);
    let mut carl = Lan::new("carl", 2, 22);
    let d = deal(&carl.mem, 2, 3, 2);
    carl.mem.put(record_id("deal-carl"), d);

    // Carl considers rita revoked: she gets an error and nothing else.
    carl.revoked.insert("rita".into());
    let (dc, ac) = (dial_cfg(&rita, 1), accept_cfg(&carl, 2));
    let run = pump(&mut rita, dc, &mut carl, ac);
    assert!(!run.finished);
    assert_eq!(run.from_acceptor.len(), 1, "{run:?}");
    assert_eq!(kind(&run.from_acceptor[0]), "error");
    assert!(
        matches!(run.closed[0], CloseReason::AuthFailed(_)),
        "{run:?}"
    );
    assert!(ids(&rita).is_empty());
    carl.revoked.clear();

    // A session recorded with carl's nonce 2 ...
    let (dc, ac) = (dial_cfg(&rita, 1), accept_cfg(&carl, 2));
    let recorded = pump(&mut rita, dc, &mut carl, ac);
    assert!(recorded.finished, "{recorded:?}");
    // ... replayed against carl's fresh nonce 5: the old proof does not verify.
    let mut acc = Session::accept(accept_cfg(&carl, 5));
    let fx = acc.handle(&mut carl, Event::Received(&recorded.from_dialer[0]));
    assert_eq!(fx.send.len(), 1);
    let fx = acc.handle(&mut carl, Event::Received(&recorded.from_dialer[1]));
    assert!(
        matches!(fx.effects[..], [Effect::Close(CloseReason::AuthFailed(_))]),
        "{fx:?}"
    );
    // The same recorded proof verifies only for the nonce it was made for.
    let mut acc = Session::accept(accept_cfg(&carl, 2));
    let fx = acc.handle(&mut carl, Event::Received(&recorded.from_dialer[0]));
    assert_eq!(fx.send.len(), 1);
    let fx = acc.handle(&mut carl, Event::Received(&recorded.from_dialer[1]));
    assert!(matches!(fx.effects[0], Effect::Authenticated(_)), "{fx:?}");

    // A recorded welcome replayed to a dialer with a fresh nonce: refused, no proof sent.
    let mut ds = Session::dial(dial_cfg(&rita, 9));
    let _ = ds.handle(&mut rita, Event::Opened);
    let fx = ds.handle(&mut rita, Event::Received(&recorded.from_acceptor[0]));
    assert_eq!(fx.send.len(), 1);
    assert_eq!(kind(&fx.send[0]), "error");
    assert!(
        matches!(fx.effects[..], [Effect::Close(CloseReason::AuthFailed(_))]),
        "{fx:?}"
    );

    // A side with no nonce of its own refuses to run the handshake.
    let mut short = dial_cfg(&rita, 1);
    short.nonce.truncate(4);
    let mut ds = Session::dial(short);
    let fx = ds.handle(&mut rita, Event::Opened);
    assert!(
        matches!(fx.effects[..], [Effect::Close(CloseReason::AuthFailed(_))]),
        "{fx:?}"
    );
}
