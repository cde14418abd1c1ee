//! Signed changes: who made each change, proven, and what its author may have written.
//!
//! - Every change's automerge actor is its node's id ([`crate::replica::actor_of`]), so a change
//!   names its author; a signature proves it. A node signs the changes it sends of its own
//!   with its key (a device its device key, the hub its hub key; the bridge writes as the hub).
//! - The hub *endorses* every other change it sends (it signs the hash with its key, kind
//!   [`SignatureKind::Hub`]): the hub has checked it. A device keeps the signatures it received
//!   (key-value entries `service/sig/<hash>`) so that it can relay the changes to a LAN peer or
//!   to the hub with their proof.
//! - On receipt, every change new to the receiver is checked before anything of the message is
//!   kept ([`Verifier`]): the hub wants its author's signature by the key that author's device
//!   presented to it (or its own endorsement), from a device with a live token, and the change
//!   must keep the write rules ([`sellsync_model::check_change`]) with owners the author's user
//!   may assign; a device checks what a LAN peer sends: the peer's own changes by the peer's
//!   credential key and the write rules, anyone else's by the hub's endorsement. A device does
//!   not check what its hub sends (it trusts the hub through TLS and its enrollment).
//!
//! Wire format of the signatures beside one sync message: a sequence of 97-byte entries
//! `change hash (32) | kind (1: 0 author, 1 hub) | Ed25519 signature (64)` over
//! [`CHANGE_DOMAIN`] ‖ hash.

use std::collections::BTreeMap;

use automerge::{Automerge, Change, ChangeHash};
use sellsync_model::{ChangeAuthor, DeviceId, UserId, check_change};

use crate::credential::{SigningKey, verify_signature};

/// The domain tag of a change signature.
pub const CHANGE_DOMAIN: &[u8] = b"sellsync/change/v1\0";
/// Key-value prefix of the signatures a device keeps for relaying.
pub const SIG_KEY: &str = "service/sig/";
const ENTRY_LEN: usize = 32 + 1 + 64;

/// Who signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureKind {
    /// The change's author.
    Author,
    /// The hub, vouching for a change it accepted (or made).
    Hub,
}

/// One change's signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeSignature {
    /// The change.
    pub hash: ChangeHash,
    /// Who signed.
    pub kind: SignatureKind,
    /// The Ed25519 signature over [`CHANGE_DOMAIN`] ‖ hash.
    pub signature: Vec<u8>,
}

fn message(hash: &ChangeHash) -> Vec<u8> {
    let mut m = CHANGE_DOMAIN.to_vec();
    m.extend_from_slice(&hash.0);
    m
}

impl ChangeSignature {
    /// `key`'s signature of `hash`, as `kind`.
    pub fn sign(key: &SigningKey, hash: ChangeHash, kind: SignatureKind) -> ChangeSignature {
        ChangeSignature {
            hash,
            kind,
            signature: key.sign(&message(&hash)),
        }
    }

    /// Whether it is `key`'s signature of its hash.
    pub fn verifies(&self, key: &[u8]) -> bool {
        verify_signature(key, &message(&self.hash), &self.signature)
    }
}

/// The wire form of a list of signatures.
pub fn encode(sigs: &[ChangeSignature]) -> Vec<u8> {
    let mut out = Vec::with_capacity(sigs.len() * ENTRY_LEN);
    for s in sigs {
        out.extend_from_slice(&s.hash.0);
        out.push(match s.kind {
            SignatureKind::Author => 0,
            SignatureKind::Hub => 1,
        });
        out.extend_from_slice(&s.signature);
    }
    out
}

/// Reads [`encode`]'s output; an error for anything else.
pub fn decode(bytes: &[u8]) -> Result<Vec<ChangeSignature>, String> {
    if !bytes.len().is_multiple_of(ENTRY_LEN) {
        return Err(format!(
            "change signatures of {} bytes (entries are {ENTRY_LEN})",
            bytes.len()
        ));
    }
    bytes
        .chunks(ENTRY_LEN)
        .map(|e| {
            let hash = ChangeHash::try_from(&e[..32]).map_err(|e| e.to_string())?;
            let kind = match e[32] {
                0 => SignatureKind::Author,
                1 => SignatureKind::Hub,
                k => return Err(format!("unknown signature kind {k}")),
            };
            Ok(ChangeSignature {
                hash,
                kind,
                signature: e[33..].to_vec(),
            })
        })
        .collect()
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
}

/// What the receiver trusts, for one batch.
pub enum Verifier<'a> {
    /// A hub: it knows every device's key and user, and its own key.
    Hub {
        /// The hub's node id (its own changes' author).
        hub: &'a DeviceId,
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

impl Verifier<'_> {
    /// Checks every change of `changes` (new to the receiver, all in `doc`, a document of
    /// `kind`) against `sigs`; `may_write` says whether a user may see the record as it was
    /// before (a user writes only records they may see). Returns the signatures that proved
    /// the changes (for a device to keep).
    pub fn check(
        &self,
        doc: &Automerge,
        kind: &str,
        changes: &[Change],
        sigs: &[ChangeSignature],
        may_write: &dyn Fn(UserId) -> bool,
    ) -> Result<Vec<ChangeSignature>, Refusal> {
        let mut by_hash: BTreeMap<ChangeHash, Vec<&ChangeSignature>> = BTreeMap::new();
        for s in sigs {
            by_hash.entry(s.hash).or_default().push(s);
        }
        let mut proving = Vec::new();
        for change in changes {
            let hash = change.hash();
            let short = hex_short(&hash);
            let author = author_of(change)
                .ok_or_else(|| Refusal(format!("change {short} names no device as its author")))?;
            let offered = by_hash.get(&hash).map(Vec::as_slice).unwrap_or_default();
            let signed_by = |key: &[u8], kind: SignatureKind| {
                offered
                    .iter()
                    .find(|s| s.kind == kind && s.verifies(key))
                    .map(|s| (*s).clone())
            };
            let hub_key = match self {
                Verifier::Hub { hub_key, .. } => hub_key.as_deref(),
                Verifier::LanPeer { hub_key, .. } => *hub_key,
            };
            // The hub vouches for it: nothing more to check.
            if let Some(s) = hub_key.and_then(|k| signed_by(k, SignatureKind::Hub)) {
                proving.push(s);
                continue;
            }
            let (user, key) = match self {
                Verifier::Hub { hub, device, .. } => {
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
                    if !known.live {
                        return Err(Refusal(format!(
                            "change {short} by {author}, a revoked device"
                        )));
                    }
                    (known.user, known.key)
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
                    (*user, peer_key.map(<[u8]>::to_vec))
                }
            };
            let Some(s) = key.and_then(|k| signed_by(&k, SignatureKind::Author)) else {
                return Err(Refusal(format!(
                    "change {short} by {author} is not signed with {author}'s key"
                )));
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
            .map_err(|v| Refusal(format!("change {short} by {author}: {v}")))?;
            proving.push(s);
        }
        Ok(proving)
    }
}

fn hex_short(hash: &ChangeHash) -> String {
    hash.0[..4].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_round_trip_and_garbage_is_an_error() {
        let key = SigningKey::generate().unwrap();
        let hash = ChangeHash([7; 32]);
        let s = ChangeSignature::sign(&key, hash, SignatureKind::Hub);
        assert!(s.verifies(&key.public_key()));
        let other = SigningKey::generate().unwrap();
        assert!(!s.verifies(&other.public_key()));
        let bytes = encode(&[s.clone(), s.clone()]);
        assert_eq!(decode(&bytes).unwrap(), vec![s.clone(), s]);
        assert!(decode(&bytes[1..]).is_err());
        let mut bad = bytes.clone();
        bad[32] = 9;
        assert!(decode(&bad).is_err());
        assert_eq!(decode(&[]).unwrap(), vec![]);
    }
}
