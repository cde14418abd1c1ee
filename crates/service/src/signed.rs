//! Signed changes: who made each change, proven, and what its author may have written.
//!
//! - Every change's automerge actor is its node's id ([`crate::replica::actor_of`]), so a change
//!   names its author; a signature proves it. A device signs each change of its own it sends
//!   with its device key ([`Proof::Author`]).
//! - The hub *endorses* what it sends: one signature over the document's heads
//!   ([`Proof::Hub`]) vouches for every change reachable from them (change hashes chain, so
//!   the heads fix that set): the hub has checked each of them, or made it (the bridge writes
//!   as the hub). One signature per document and message, whatever the number of changes.
//! - A device keeps what proves the changes it received, for relaying them to a LAN peer or
//!   to the hub: the latest hub endorsement of each document (key-value entry
//!   `service/endorsed/<record>`) and a LAN peer's author signatures (`service/sig/<hash>`).
//! - On receipt, every change new to the receiver is checked before anything of the message is
//!   kept ([`Verifier`]): the hub wants its author's signature by the key that author's device
//!   presented to it (or its own endorsement), from a device with a live token, and the change
//!   must keep the write rules ([`sellsync_model::check_change`]) with owners the author's user
//!   may assign; a device checks what a LAN peer sends: the peer's own changes by the peer's
//!   credential key and the write rules, anyone else's by the hub's endorsement. A device does
//!   not check what its hub sends (it trusts the hub through TLS and its enrollment).
//!
//! Wire format of the proofs beside one sync message: a sequence of entries, each a kind byte
//! then its body:
//! - `0`: an author's signature: change hash (32), Ed25519 signature (64) over
//!   [`CHANGE_DOMAIN`] ‖ hash;
//! - `1`: the hub's endorsement: heads count (u16 LE, at least 1), the heads (32 each, in
//!   ascending order, no repeats), Ed25519 signature (64) over [`HEADS_DOMAIN`] ‖ count ‖ heads;
//! - `2`: a relay's receipt: change hash (32), the relay's clock when it received the change
//!   (i64 LE milliseconds), Ed25519 signature (64) over [`RECEIVED_DOMAIN`] ‖ hash ‖ time.
//!
//! A receipt lets a change outlive its author's key. A device that takes a LAN peer's change
//! signs when it received it, and keeps that beside the author's signature. When the author's
//! key stops being valid before the change reaches the hub (the device is revoked, or replaced
//! by a new store with a new key), the relay hands the hub both: the hub accepts the change if
//! the author's signature is by a key the device held and the receipt, signed by the relay that
//! sends it, is dated before that key stopped being valid. The hub keeps each device's past
//! keys with the time each was replaced (see `crate::replica`). A relay's clock is trusted as
//! far as the relay is: a malicious enrolled device could backdate a receipt, but only for a
//! change signed by a key that device does not hold (see docs/security.md).

use std::collections::{BTreeMap, BTreeSet};

use automerge::{Automerge, Change, ChangeHash, ReadDoc};
use sellsync_model::{
    Catalog, ChangeAuthor, DeviceId, Policy, UserId, check_change, check_resolutions,
};

use crate::credential::{SigningKey, verify_signature};

/// The domain tag of an author's change signature.
pub const CHANGE_DOMAIN: &[u8] = b"sellsync/change/v1\0";
/// The domain tag of the hub's endorsement of a document's heads.
pub const HEADS_DOMAIN: &[u8] = b"sellsync/heads/v1\0";
/// The domain tag of a relay's receipt of a change.
pub const RECEIVED_DOMAIN: &[u8] = b"sellsync/received/v1\0";
/// Key-value prefix of the author signatures a device keeps for relaying (by change hash).
pub const SIG_KEY: &str = "service/sig/";
/// Key-value prefix of the hub endorsement a device keeps for relaying (by record id).
pub const ENDORSED_KEY: &str = "service/endorsed/";
const SIGNATURE_LEN: usize = 64;

/// What proves changes: an author's signature of one change, or the hub's of a document's heads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proof {
    /// The change's author signed it.
    Author {
        /// The change.
        hash: ChangeHash,
        /// The Ed25519 signature over [`CHANGE_DOMAIN`] ‖ hash.
        signature: Vec<u8>,
    },
    /// The hub vouches for every change reachable from `heads`.
    Hub {
        /// The heads, ascending, without repeats, at least one.
        heads: Vec<ChangeHash>,
        /// The Ed25519 signature over [`HEADS_DOMAIN`] ‖ count (u16 LE) ‖ heads.
        signature: Vec<u8>,
    },
    /// A relay received the change at `at_ms` (its clock).
    Received {
        /// The change.
        hash: ChangeHash,
        /// When, in milliseconds since the epoch.
        at_ms: i64,
        /// The relay's Ed25519 signature over [`RECEIVED_DOMAIN`] ‖ hash ‖ at_ms (i64 LE).
        signature: Vec<u8>,
    },
}

fn change_message(hash: &ChangeHash) -> Vec<u8> {
    let mut m = CHANGE_DOMAIN.to_vec();
    m.extend_from_slice(&hash.0);
    m
}

fn received_message(hash: &ChangeHash, at_ms: i64) -> Vec<u8> {
    let mut m = RECEIVED_DOMAIN.to_vec();
    m.extend_from_slice(&hash.0);
    m.extend_from_slice(&at_ms.to_le_bytes());
    m
}

/// The bytes the hub signs for `heads` (ascending, no repeats, at most `u16::MAX`).
fn heads_message(heads: &[ChangeHash]) -> Vec<u8> {
    let mut m = HEADS_DOMAIN.to_vec();
    m.extend_from_slice(&(heads.len() as u16).to_le_bytes());
    for h in heads {
        m.extend_from_slice(&h.0);
    }
    m
}

impl Proof {
    /// `key`'s signature of `hash`, as its author.
    pub fn author(key: &SigningKey, hash: ChangeHash) -> Proof {
        Proof::Author {
            hash,
            signature: key.sign(&change_message(&hash)),
        }
    }

    /// `key`'s endorsement (as the hub) of every change reachable from `heads`; `None` for no
    /// heads (an empty document) or more than `u16::MAX` of them.
    pub fn hub(key: &SigningKey, heads: &[ChangeHash]) -> Option<Proof> {
        let heads: Vec<ChangeHash> = heads
            .iter()
            .copied()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if heads.is_empty() || heads.len() > usize::from(u16::MAX) {
            return None;
        }
        let signature = key.sign(&heads_message(&heads));
        Some(Proof::Hub { heads, signature })
    }

    /// `key`'s receipt (as a relay) of `hash` at `at_ms`.
    pub fn received(key: &SigningKey, hash: ChangeHash, at_ms: i64) -> Proof {
        Proof::Received {
            hash,
            at_ms,
            signature: key.sign(&received_message(&hash, at_ms)),
        }
    }

    /// Whether `key` made this proof.
    pub fn verifies(&self, key: &[u8]) -> bool {
        match self {
            Proof::Author { hash, signature } => {
                verify_signature(key, &change_message(hash), signature)
            }
            Proof::Hub { heads, signature } => {
                verify_signature(key, &heads_message(heads), signature)
            }
            Proof::Received {
                hash,
                at_ms,
                signature,
            } => verify_signature(key, &received_message(hash, *at_ms), signature),
        }
    }
}

/// The wire form of a list of proofs.
pub fn encode(proofs: &[Proof]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in proofs {
        match p {
            Proof::Author { hash, signature } => {
                out.push(0);
                out.extend_from_slice(&hash.0);
                out.extend_from_slice(signature);
            }
            Proof::Hub { heads, signature } => {
                out.push(1);
                out.extend_from_slice(&(heads.len() as u16).to_le_bytes());
                for h in heads {
                    out.extend_from_slice(&h.0);
                }
                out.extend_from_slice(signature);
            }
            Proof::Received {
                hash,
                at_ms,
                signature,
            } => {
                out.push(2);
                out.extend_from_slice(&hash.0);
                out.extend_from_slice(&at_ms.to_le_bytes());
                out.extend_from_slice(signature);
            }
        }
    }
    out
}

/// Reads [`encode`]'s output; an error for anything else (so that what decodes encodes to the
/// same bytes).
pub fn decode(mut bytes: &[u8]) -> Result<Vec<Proof>, String> {
    fn take<'a>(bytes: &mut &'a [u8], n: usize, what: &str) -> Result<&'a [u8], String> {
        if bytes.len() < n {
            return Err(format!("change proofs end inside {what}"));
        }
        let (head, rest) = bytes.split_at(n);
        *bytes = rest;
        Ok(head)
    }
    fn hash(b: &[u8]) -> Result<ChangeHash, String> {
        ChangeHash::try_from(b).map_err(|e| e.to_string())
    }
    let mut out = Vec::new();
    while let Some((&kind, rest)) = bytes.split_first() {
        bytes = rest;
        match kind {
            0 => {
                let hash = hash(take(&mut bytes, 32, "a change hash")?)?;
                let signature = take(&mut bytes, SIGNATURE_LEN, "a signature")?.to_vec();
                out.push(Proof::Author { hash, signature });
            }
            1 => {
                let count = take(&mut bytes, 2, "a heads count")?;
                let count = usize::from(u16::from_le_bytes([count[0], count[1]]));
                if count == 0 {
                    return Err("a hub endorsement of no heads".into());
                }
                let mut heads = Vec::with_capacity(count);
                for _ in 0..count {
                    let h = hash(take(&mut bytes, 32, "the heads")?)?;
                    if heads.last().is_some_and(|last| *last >= h) {
                        return Err("a hub endorsement's heads out of order".into());
                    }
                    heads.push(h);
                }
                let signature = take(&mut bytes, SIGNATURE_LEN, "a signature")?.to_vec();
                out.push(Proof::Hub { heads, signature });
            }
            2 => {
                let hash = hash(take(&mut bytes, 32, "a change hash")?)?;
                let at = take(&mut bytes, 8, "a receipt time")?;
                let at_ms = i64::from_le_bytes(at.try_into().map_err(|_| "a receipt time")?);
                let signature = take(&mut bytes, SIGNATURE_LEN, "a signature")?.to_vec();
                out.push(Proof::Received {
                    hash,
                    at_ms,
                    signature,
                });
            }
            k => return Err(format!("unknown change proof kind {k}")),
        }
    }
    Ok(out)
}

/// The changes of `doc` that `heads` do not reach (`heads` not in `doc` are left out; with
/// none left, every change). A change of `doc` outside this set is reachable from `heads`.
pub fn outside(doc: &Automerge, heads: &[ChangeHash]) -> BTreeSet<ChangeHash> {
    let present: Vec<ChangeHash> = heads
        .iter()
        .filter(|h| doc.get_change_by_hash(h).is_some())
        .copied()
        .collect();
    doc.get_changes(&present).iter().map(|c| c.hash()).collect()
}

/// Whether endorsement `newer` reaches every change that `older` reaches, in `doc`.
pub fn covers(doc: &Automerge, newer: &[ChangeHash], older: &[ChangeHash]) -> bool {
    let missed = outside(doc, newer);
    older.iter().all(|h| !missed.contains(h))
}

/// The device a change names as its author (its actor id), if it names one.
pub fn author_of(change: &Change) -> Option<DeviceId> {
    std::str::from_utf8(change.actor_id().to_bytes())
        .ok()?
        .parse()
        .ok()
}

/// A device as the hub knows it.
#[derive(Debug, Clone)]
pub struct KnownDevice {
    /// Its user.
    pub user: UserId,
    /// Whether it holds a token that is not revoked.
    pub live: bool,
    /// The public key it last presented (`None`: never seen).
    pub key: Option<Vec<u8>>,
    /// When it stopped being live (its last token revoked or expired), if it is not.
    pub ended_ms: Option<i64>,
    /// The keys it presented before `key`, each with the time the next one replaced it.
    pub past_keys: Vec<(Vec<u8>, i64)>,
}

impl KnownDevice {
    /// The key of the device's that made `proof`, with the time that key stopped being
    /// valid (`None`: valid now), among its current and past keys.
    fn key_of(&self, proof: &Proof) -> Option<Option<i64>> {
        let current = self.key.as_ref().map(|k| (k, self.ended_ms));
        let past = self.past_keys.iter().map(|(k, until)| {
            // A key cannot outlive the device.
            let until = self.ended_ms.map_or(*until, |e| e.min(*until));
            (k, Some(until))
        });
        current
            .into_iter()
            .chain(past)
            .find(|(k, _)| proof.verifies(k))
            .map(|(_, until)| until)
    }
}

/// What the receiver trusts, for one batch.
pub enum Verifier<'a> {
    /// A hub: it knows every device's key and user, and its own key.
    Hub {
        /// The hub's node id (its own changes' author).
        hub: &'a DeviceId,
        /// The device that sends the message, and the key it proved in this session (its
        /// receipts of other devices' changes).
        sender: &'a DeviceId,
        /// The sender's key.
        sender_key: Option<&'a [u8]>,
        /// The hub's public key (its endorsements).
        hub_key: Option<Vec<u8>>,
        /// A device as this hub knows it (`None`: never enrolled here).
        device: &'a dyn Fn(&DeviceId) -> Option<KnownDevice>,
    },
    /// A device receiving from a LAN peer.
    LanPeer {
        /// The peer's node id and user.
        peer: &'a DeviceId,
        /// The peer's user.
        user: UserId,
        /// The key of the peer's credential.
        peer_key: Option<&'a [u8]>,
        /// The hub key this device pinned.
        hub_key: Option<&'a [u8]>,
    },
}

impl std::fmt::Debug for Verifier<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verifier::Hub { hub, .. } => f.debug_struct("Hub").field("hub", hub).finish(),
            Verifier::LanPeer { peer, user, .. } => f
                .debug_struct("LanPeer")
                .field("peer", peer)
                .field("user", user)
                .finish(),
        }
    }
}

/// Why a message was refused: the change and the reason, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub String);

/// The catalog and policy a receiver reads records with (a resolution's candidates are read
/// with them).
#[derive(Debug, Clone, Copy)]
pub struct Rules<'a> {
    /// The catalog.
    pub catalog: &'a Catalog,
    /// The policy.
    pub policy: &'a Policy,
}

/// What proved the changes of one message: the proofs a device keeps to relay them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Proven {
    /// The authors' signatures that proved changes (one per change).
    pub authors: Vec<Proof>,
    /// The hub's endorsement that reached the most of them, if one did.
    pub endorsement: Option<Proof>,
}

impl Verifier<'_> {
    /// Checks every change of `changes` (new to the receiver, all in `doc`, a document of
    /// `kind`, as it is after the message) against `proofs`; `may_write` says whether a user
    /// may see the record as it was before (a user writes only records they may see); `rules`
    /// read the record as each change's author saw it. Returns what proved the changes (for a
    /// device to keep).
    pub fn check(
        &self,
        doc: &Automerge,
        kind: &str,
        changes: &[Change],
        proofs: &[Proof],
        may_write: &dyn Fn(UserId) -> bool,
        rules: Rules<'_>,
    ) -> Result<Proven, Refusal> {
        let hub_key = match self {
            Verifier::Hub { hub_key, .. } => hub_key.as_deref(),
            Verifier::LanPeer { hub_key, .. } => *hub_key,
        };
        let mut authors: BTreeMap<ChangeHash, Vec<&Proof>> = BTreeMap::new();
        let mut receipts: BTreeMap<ChangeHash, Vec<&Proof>> = BTreeMap::new();
        let mut endorsed_heads = Vec::new();
        let mut endorsement = None;
        for p in proofs {
            match p {
                Proof::Author { hash, .. } => authors.entry(*hash).or_default().push(p),
                Proof::Received { hash, .. } => receipts.entry(*hash).or_default().push(p),
                Proof::Hub { heads, .. } => {
                    if hub_key.is_some_and(|k| p.verifies(k)) {
                        endorsed_heads.extend_from_slice(heads);
                        endorsement.get_or_insert(p);
                    }
                }
            }
        }
        // The changes the hub's endorsements do not reach (all of them without one).
        let unendorsed = if endorsed_heads.is_empty() {
            None
        } else {
            Some(outside(doc, &endorsed_heads))
        };
        let mut proven = Proven::default();
        let mut used_endorsement = false;
        for change in changes {
            let hash = change.hash();
            let short = hex_short(&hash);
            let author = author_of(change)
                .ok_or_else(|| Refusal(format!("change {short} names no device as its author")))?;
            // The hub vouches for it: nothing more to check.
            if unendorsed.as_ref().is_some_and(|u| !u.contains(&hash)) {
                used_endorsement = true;
                continue;
            }
            let offered = authors.get(&hash).map(Vec::as_slice).unwrap_or_default();
            let (user, proof) = match self {
                Verifier::Hub {
                    hub,
                    device,
                    sender,
                    sender_key,
                    ..
                } => {
                    if &author == *hub {
                        return Err(Refusal(format!(
                            "change {short} claims the hub as its author without the hub's signature"
                        )));
                    }
                    let known = device(&author).ok_or_else(|| {
                        Refusal(format!(
                            "change {short} by {author}, a device this hub never enrolled"
                        ))
                    })?;
                    let signed = offered
                        .iter()
                        .find_map(|p| known.key_of(p).map(|until| (*p, until)));
                    match signed {
                        Some((proof, None)) => (known.user, proof),
                        // By a key that is no longer valid: only a receipt, by the relay that
                        // sends it, dated before the key stopped being valid, lets it in.
                        Some((proof, Some(until))) => {
                            let received = receipts.get(&hash).into_iter().flatten().any(|r| {
                                matches!(r, Proof::Received { at_ms, .. } if *at_ms < until)
                                    && &author != *sender
                                    && sender_key.is_some_and(|k| r.verifies(k))
                            });
                            if !received {
                                let why = if known.live {
                                    "signed with a key it has since replaced"
                                } else {
                                    "a revoked device"
                                };
                                return Err(Refusal(format!(
                                    "change {short} by {author}, {why}, and {sender} shows no \
                                     receipt of it from before then"
                                )));
                            }
                            (known.user, proof)
                        }
                        None if !known.live => {
                            return Err(Refusal(format!(
                                "change {short} by {author}, a revoked device"
                            )));
                        }
                        None => {
                            return Err(Refusal(format!(
                                "change {short} by {author} is not signed with {author}'s key"
                            )));
                        }
                    }
                }
                Verifier::LanPeer {
                    peer,
                    user,
                    peer_key,
                    ..
                } => {
                    if &author != *peer {
                        return Err(Refusal(format!(
                            "change {short} by {author} relayed over the LAN without the hub's \
                             signature (it reaches this device from the hub or from {author})"
                        )));
                    }
                    let Some(proof) = peer_key.and_then(|k| offered.iter().find(|p| p.verifies(k)))
                    else {
                        return Err(Refusal(format!(
                            "change {short} by {author} is not signed with {author}'s key"
                        )));
                    };
                    (*user, *proof)
                }
            };
            if kind == crate::replica::CATALOG_ID {
                return Err(Refusal(format!(
                    "change {short} by {author} writes the catalog, which only the hub writes"
                )));
            }
            if !may_write(user) {
                return Err(Refusal(format!(
                    "change {short} by {author}: user {user} may not see this record, so may \
                     not write it (nor take it by writing its owner)"
                )));
            }
            check_change(
                doc,
                change,
                ChangeAuthor {
                    user,
                    device: &author,
                },
            )
            .and_then(|added| check_resolutions(doc, change, &added, rules.catalog, rules.policy))
            .map_err(|v| Refusal(format!("change {short} by {author}: {v}")))?;
            proven.authors.push(proof.clone());
        }
        if used_endorsement {
            proven.endorsement = endorsement.cloned();
        }
        Ok(proven)
    }
}

fn hex_short(hash: &ChangeHash) -> String {
    hash.0[..4].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::ROOT;
    use automerge::transaction::Transactable;

    #[test]
    fn proofs_round_trip_and_garbage_is_an_error() {
        let key = SigningKey::generate().unwrap();
        let a = Proof::author(&key, ChangeHash([7; 32]));
        let h = Proof::hub(
            &key,
            &[
                ChangeHash([9; 32]),
                ChangeHash([8; 32]),
                ChangeHash([9; 32]),
            ],
        )
        .unwrap();
        assert!(
            matches!(&h, Proof::Hub { heads, .. } if heads == &[ChangeHash([8; 32]), ChangeHash([9; 32])])
        );
        assert!(a.verifies(&key.public_key()) && h.verifies(&key.public_key()));
        let other = SigningKey::generate().unwrap();
        assert!(!a.verifies(&other.public_key()) && !h.verifies(&other.public_key()));
        assert_eq!(Proof::hub(&key, &[]), None);
        let bytes = encode(&[a.clone(), h.clone(), a.clone()]);
        assert_eq!(decode(&bytes).unwrap(), vec![a.clone(), h.clone(), a]);
        assert_eq!(decode(&[]).unwrap(), vec![]);
        for cut in 1..bytes.len() {
            if let Ok(p) = decode(&bytes[..cut]) {
                // Only whole entries decode.
                assert_eq!(encode(&p), bytes[..cut]);
            }
        }
        let mut bad = bytes.clone();
        bad[0] = 9;
        assert!(decode(&bad).is_err());
        // The endorsement's heads out of order, or none, are refused.
        let h_bytes = encode(&[h]);
        let mut swapped = h_bytes.clone();
        swapped[3..35].copy_from_slice(&h_bytes[35..67]);
        swapped[35..67].copy_from_slice(&h_bytes[3..35]);
        assert!(decode(&swapped).is_err());
        assert!(decode(&[1, 0, 0]).is_err());
    }

    #[test]
    fn an_endorsement_reaches_the_ancestors_of_its_heads_only() {
        let mut doc = Automerge::new();
        let mut hashes = Vec::new();
        for i in 0..3i64 {
            let mut tx = doc.transaction();
            tx.put(ROOT, "n", i).unwrap();
            tx.commit();
            hashes.push(doc.get_heads()[0]);
        }
        assert_eq!(outside(&doc, &[hashes[1]]), BTreeSet::from([hashes[2]]));
        assert_eq!(outside(&doc, &[hashes[2]]), BTreeSet::new());
        // Heads the document does not hold reach nothing.
        assert_eq!(outside(&doc, &[ChangeHash([1; 32])]).len(), 3);
        assert!(covers(&doc, &[hashes[2]], &[hashes[1]]));
        assert!(!covers(&doc, &[hashes[1]], &[hashes[2]]));
    }
}
