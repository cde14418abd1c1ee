//! Peer credentials: how two devices with no hub prove to each other who they are.
//!
//! - The hub has an Ed25519 signing key, created on first need and kept in its store.
//! - Each device has its own Ed25519 key pair, created at `init` (or on first need) and kept in
//!   its store. It sends its public key in every hello to the hub.
//! - On each sync, the hub hands the device a *grant* in its welcome: the device's *peer
//!   credential* (a statement {hub, user, device, device public key, issued at, expires at}
//!   signed by the hub key), the hub's public key, the access rules (the hub's access file) and
//!   the revocation list (every device with a revoked token, with the time of its last
//!   revocation), the whole signed by the hub key. The device pins the hub key on first receipt;
//!   a grant signed by another key later is refused.
//! - Between LAN peers, each side presents its credential, and proves possession of the key it
//!   names by signing the session transcript (see `sellsync_sync::transcript`), which binds the
//!   TLS channel the session runs in (a LAN session is always TLS 1.3, the acceptor's
//!   certificate made from its device key; see `crate::net::lan_tls_acceptor`). Each checks the
//!   other's credential against the pinned hub key, the hub node, the clock and the revocation
//!   list of its latest grant.
//!
//! Invariants:
//! - A signature covers a domain tag and the exact bytes carried, so there is no
//!   canonicalisation and a credential's signature never passes for a grant's (or a
//!   transcript's).
//! - The pure checks ([`Trust::check`], [`open_grant`]) take the time as an argument.
//! - A credential of a device revoked at time R is refused when it was issued at or before R; a
//!   device enrolled again later gets credentials issued after R, which pass.
//!
//! Wire format of a signed envelope (credential or grant): `body length u32 BE | body (JSON) |
//! Ed25519 signature (64 bytes) over domain tag ‖ body`.

use std::collections::BTreeMap;

use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use sellsync_model::{DeviceId, UserId};
use sellsync_store::{Store, StoreError, StoreRead};
use serde::{Deserialize, Serialize};

use sellsync_sync::{AcceptConfig, DialConfig, Limits, Role};

use crate::acl::Acl;
use crate::node::Node;

/// The key-value entry of a hub's signing key (PKCS#8).
pub const HUB_KEY: &str = "hub/signing_key";
/// The key-value entry of a device's signing key (PKCS#8).
pub const DEVICE_KEY: &str = "device/signing_key";
/// The key-value entry of the hub public key a device pinned.
pub const PINNED_HUB_KEY: &str = "device/hub_key";
/// The key-value entry of the latest grant a device received (as received, signature included).
pub const GRANT: &str = "device/grant";
/// The longest access file a hub hands out in its grants (a grant travels in one welcome,
/// which carries at most `sellsync_sync::frame::MAX_GRANT_LEN` bytes of grant).
pub const MAX_ACL_LEN: usize = 512 * 1024;
/// How long a peer credential stays valid by default: 7 days.
pub const DEFAULT_CREDENTIAL_TTL_MS: i64 = 7 * 24 * 3600 * 1000;

const CREDENTIAL_DOMAIN: &[u8] = b"sellsync/peer-credential/v1\0";
const GRANT_DOMAIN: &[u8] = b"sellsync/grant/v1\0";
const SIGNATURE_LEN: usize = 64;
const PUBLIC_KEY_LEN: usize = 32;

/// What can go wrong with keys, credentials and grants.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored key could not be read, or a key could not be made.
    #[error("key: {0}")]
    Key(String),
    /// A grant or credential is not valid.
    #[error("{0}")]
    Invalid(String),
    /// The hub signed with another key than the one pinned on first receipt.
    #[error("the hub's key changed: this device pinned another one (re-enrol the device)")]
    HubKeyChanged,
}

fn invalid(why: impl Into<String>) -> CredentialError {
    CredentialError::Invalid(why.into())
}

/// An Ed25519 key pair with its PKCS#8 form (what the store keeps).
#[derive(Debug)]
pub struct SigningKey {
    pair: Ed25519KeyPair,
    pkcs8: Vec<u8>,
}

impl SigningKey {
    /// A fresh key pair from the system's random source.
    pub fn generate() -> Result<SigningKey, CredentialError> {
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| CredentialError::Key("cannot generate a key pair".into()))?;
        SigningKey::from_pkcs8(doc.as_ref())
    }

    /// A key pair from its PKCS#8 form.
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<SigningKey, CredentialError> {
        let pair =
            Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|e| CredentialError::Key(e.to_string()))?;
        Ok(SigningKey {
            pair,
            pkcs8: pkcs8.to_vec(),
        })
    }

    /// The PKCS#8 form.
    pub fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The public key (32 bytes).
    pub fn public_key(&self) -> Vec<u8> {
        self.pair.public_key().as_ref().to_vec()
    }

    /// Signs `message` (64 bytes).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.pair.sign(message).as_ref().to_vec()
    }
}

/// Whether `signature` is `key`'s Ed25519 signature of `message`.
pub fn verify_signature(key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    key.len() == PUBLIC_KEY_LEN
        && signature.len() == SIGNATURE_LEN
        && UnparsedPublicKey::new(&ED25519, key)
            .verify(message, signature)
            .is_ok()
}

/// 32 fresh random bytes, for a session nonce.
pub fn nonce() -> Result<Vec<u8>, CredentialError> {
    let mut n = vec![0; 32];
    SystemRandom::new()
        .fill(&mut n)
        .map_err(|_| CredentialError::Key("no randomness".into()))?;
    Ok(n)
}

/// The key pair kept under `entry` in `store`, created and stored if there is none.
pub fn load_or_create_key(store: &Store, entry: &str) -> Result<SigningKey, CredentialError> {
    if let Some(bytes) = store.read()?.kv_get(entry)? {
        return SigningKey::from_pkcs8(&bytes);
    }
    let key = SigningKey::generate()?;
    store.write(|w| w.kv_put(entry, key.pkcs8()))?;
    Ok(key)
}

fn hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// Lowercase or uppercase hex digits only (no sign, no spaces, an even count).
fn unhex(s: &str) -> Option<Vec<u8>> {
    hex::decode(s).ok()
}

fn seal(key: &SigningKey, domain: &[u8], body: &[u8]) -> Vec<u8> {
    let mut signed = Vec::with_capacity(domain.len() + body.len());
    signed.extend_from_slice(domain);
    signed.extend_from_slice(body);
    let sig = key.sign(&signed);
    // Bodies are small JSON documents, far below u32::MAX.
    let mut out = Vec::with_capacity(4 + body.len() + SIGNATURE_LEN);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    out.extend_from_slice(&sig);
    out
}

/// Splits a signed envelope and checks its signature with `key`; returns the body.
fn unseal<'a>(bytes: &'a [u8], domain: &[u8], key: &[u8]) -> Result<&'a [u8], String> {
    let (len, rest) = bytes.split_first_chunk::<4>().ok_or("truncated envelope")?;
    let len = usize::try_from(u32::from_be_bytes(*len)).map_err(|_| "envelope too long")?;
    if rest.len() != len.saturating_add(SIGNATURE_LEN) {
        return Err("envelope length does not match".into());
    }
    let (body, sig) = rest.split_at(len);
    let mut signed = Vec::with_capacity(domain.len() + body.len());
    signed.extend_from_slice(domain);
    signed.extend_from_slice(body);
    if !verify_signature(key, &signed, sig) {
        return Err("signature does not verify with the hub's key".into());
    }
    Ok(body)
}

/// The body of an envelope, without checking its signature (to read the key a grant names).
fn body_of(bytes: &[u8]) -> Result<&[u8], String> {
    let (len, rest) = bytes.split_first_chunk::<4>().ok_or("truncated envelope")?;
    let len = usize::try_from(u32::from_be_bytes(*len)).map_err(|_| "envelope too long")?;
    if rest.len() != len.saturating_add(SIGNATURE_LEN) {
        return Err("envelope length does not match".into());
    }
    Ok(&rest[..len])
}

/// What a peer credential states, signed by the hub.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    /// The hub's node id.
    pub hub: DeviceId,
    /// The user the device acts for.
    pub user: UserId,
    /// The device.
    pub device: DeviceId,
    /// The device's public key (hex).
    pub key: String,
    /// When the hub issued it (unix ms).
    pub issued_at_ms: i64,
    /// When it stops being accepted (unix ms, exclusive).
    pub expires_at_ms: i64,
}

impl Statement {
    /// The device's public key, if the hex is valid.
    pub fn public_key(&self) -> Option<Vec<u8>> {
        unhex(&self.key).filter(|k| k.len() == PUBLIC_KEY_LEN)
    }
}

/// Signs `statement` with the hub key: the credential's bytes, as carried in a hello or welcome.
pub fn issue_credential(hub_key: &SigningKey, statement: &Statement) -> Vec<u8> {
    // Serialising plain data cannot fail.
    let body = serde_json::to_vec(statement).expect("statement serialises");
    seal(hub_key, CREDENTIAL_DOMAIN, &body)
}

/// A device revoked at the hub.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revocation {
    /// The device.
    pub device: DeviceId,
    /// When its last token was revoked (unix ms).
    pub revoked_at_ms: i64,
}

/// What a device trusts when it checks a LAN peer: its hub, the hub's pinned key and the
/// revocation list of its latest grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trust {
    /// The hub's node id.
    pub hub: DeviceId,
    /// The hub's public key.
    pub hub_key: Vec<u8>,
    /// Revoked devices and the time of their revocation.
    pub revoked: BTreeMap<DeviceId, i64>,
}

impl Trust {
    /// Checks a peer's credential presented at `now_ms` by a node claiming to be `claimed`:
    /// signed by this hub's key, issued by this hub to that node, not expired, not revoked.
    /// Returns its statement and the public key it names.
    pub fn check(
        &self,
        credential: &[u8],
        claimed: &DeviceId,
        now_ms: i64,
    ) -> Result<(Statement, Vec<u8>), String> {
        let body = unseal(credential, CREDENTIAL_DOMAIN, &self.hub_key)?;
        let st: Statement =
            serde_json::from_slice(body).map_err(|e| format!("credential body: {e}"))?;
        if st.hub != self.hub {
            return Err(format!(
                "credential issued by hub {}, not {}",
                st.hub, self.hub
            ));
        }
        if &st.device != claimed {
            return Err(format!(
                "credential issued to {}, presented by {claimed}",
                st.device
            ));
        }
        if now_ms >= st.expires_at_ms {
            return Err(format!("credential of {} expired", st.device));
        }
        if now_ms < st.issued_at_ms.saturating_sub(CLOCK_SKEW_MS) {
            return Err(format!("credential of {} issued in the future", st.device));
        }
        if let Some(at) = self.revoked.get(&st.device)
            && st.issued_at_ms <= *at
        {
            return Err(format!("device {} is revoked", st.device));
        }
        let key = st
            .public_key()
            .ok_or_else(|| "credential names no valid key".to_owned())?;
        Ok((st, key))
    }
}

/// Clock difference tolerated between a hub and a device when checking issue times.
pub const CLOCK_SKEW_MS: i64 = 5 * 60 * 1000;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantBody {
    hub: DeviceId,
    hub_key: String,
    credential: String,
    acl: String,
    revoked: Vec<Revocation>,
    issued_at_ms: i64,
}

/// A verified grant, as a device keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The hub's node id.
    pub hub: DeviceId,
    /// The hub's public key.
    pub hub_key: Vec<u8>,
    /// This device's peer credential (bytes as presented to peers).
    pub credential: Vec<u8>,
    /// Its statement.
    pub statement: Statement,
    /// The access rules (the hub's access file, TOML).
    pub acl: String,
    /// The revocation list.
    pub revoked: Vec<Revocation>,
    /// When the hub issued it (unix ms).
    pub issued_at_ms: i64,
}

impl Grant {
    /// What this device trusts when it checks a LAN peer.
    pub fn trust(&self) -> Trust {
        Trust {
            hub: self.hub.clone(),
            hub_key: self.hub_key.clone(),
            revoked: self
                .revoked
                .iter()
                .map(|r| (r.device.clone(), r.revoked_at_ms))
                .collect(),
        }
    }

    /// The access rules.
    pub fn acl(&self) -> Result<Acl, CredentialError> {
        Acl::from_toml(&self.acl).map_err(|e| invalid(format!("grant access rules: {e}")))
    }
}

/// What the hub puts in a grant besides the credential.
#[derive(Debug, Clone)]
pub struct GrantInput<'a> {
    /// The hub's node id.
    pub hub: &'a DeviceId,
    /// The device's user.
    pub user: UserId,
    /// The device.
    pub device: &'a DeviceId,
    /// The device's public key, from its hello.
    pub device_key: &'a [u8],
    /// The access file (TOML).
    pub acl: &'a str,
    /// The revocation list.
    pub revoked: Vec<Revocation>,
    /// Now (unix ms).
    pub now_ms: i64,
    /// How long the credential stays valid.
    pub ttl_ms: i64,
}

/// Issues a grant: the device's credential and the rest, signed by the hub key.
pub fn issue_grant(
    hub_key: &SigningKey,
    input: GrantInput<'_>,
) -> Result<Vec<u8>, CredentialError> {
    if input.device_key.len() != PUBLIC_KEY_LEN {
        return Err(invalid("the device's public key is not 32 bytes"));
    }
    let statement = Statement {
        hub: input.hub.clone(),
        user: input.user,
        device: input.device.clone(),
        key: hex(input.device_key),
        issued_at_ms: input.now_ms,
        expires_at_ms: input.now_ms.saturating_add(input.ttl_ms),
    };
    let credential = issue_credential(hub_key, &statement);
    let body = GrantBody {
        hub: input.hub.clone(),
        hub_key: hex(&hub_key.public_key()),
        credential: hex(&credential),
        acl: input.acl.to_owned(),
        revoked: input.revoked,
        issued_at_ms: input.now_ms,
    };
    let body = serde_json::to_vec(&body).map_err(|e| invalid(e.to_string()))?;
    Ok(seal(hub_key, GRANT_DOMAIN, &body))
}

/// What a device expects of a grant.
#[derive(Debug, Clone)]
pub struct Expect<'a> {
    /// Its hub's node id (from its enrollment token).
    pub hub: &'a DeviceId,
    /// The hub key it pinned, if any.
    pub pinned: Option<&'a [u8]>,
    /// Itself.
    pub device: &'a DeviceId,
    /// Its user.
    pub user: UserId,
    /// Its public key.
    pub device_key: &'a [u8],
}

/// Verifies a grant received from the hub (pure): signed by the key it names, which must be the
/// pinned one if any; from the expected hub; with a credential for this very device, user and
/// key, signed by the same key.
pub fn open_grant(bytes: &[u8], expect: &Expect<'_>) -> Result<Grant, CredentialError> {
    let raw = body_of(bytes).map_err(invalid)?;
    let claimed: GrantBody =
        serde_json::from_slice(raw).map_err(|e| invalid(format!("grant body: {e}")))?;
    let hub_key = unhex(&claimed.hub_key)
        .filter(|k| k.len() == PUBLIC_KEY_LEN)
        .ok_or_else(|| invalid("grant names no valid hub key"))?;
    if let Some(pinned) = expect.pinned
        && pinned != hub_key.as_slice()
    {
        return Err(CredentialError::HubKeyChanged);
    }
    unseal(bytes, GRANT_DOMAIN, &hub_key).map_err(invalid)?;
    if &claimed.hub != expect.hub {
        return Err(invalid(format!(
            "grant from hub {}, expected {}",
            claimed.hub, expect.hub
        )));
    }
    let credential =
        unhex(&claimed.credential).ok_or_else(|| invalid("grant credential is not hex"))?;
    let cbody = unseal(&credential, CREDENTIAL_DOMAIN, &hub_key).map_err(invalid)?;
    let statement: Statement =
        serde_json::from_slice(cbody).map_err(|e| invalid(format!("credential body: {e}")))?;
    if &statement.hub != expect.hub
        || &statement.device != expect.device
        || statement.user != expect.user
        || statement.public_key().as_deref() != Some(expect.device_key)
    {
        return Err(invalid(
            "the granted credential is for another hub, device, user or key",
        ));
    }
    Acl::from_toml(&claimed.acl).map_err(|e| invalid(format!("grant access rules: {e}")))?;
    Ok(Grant {
        hub: claimed.hub,
        hub_key,
        credential,
        statement,
        acl: claimed.acl,
        revoked: claimed.revoked,
        issued_at_ms: claimed.issued_at_ms,
    })
}

/// The revocation list of a hub's store: each device with a revoked token, with the time of its
/// latest revocation.
pub fn revocations(store: &Store) -> Result<Vec<Revocation>, StoreError> {
    let mut latest: BTreeMap<DeviceId, i64> = BTreeMap::new();
    for t in store.read()?.tokens()? {
        if let Some(at) = t.revoked_at_ms {
            let e = latest.entry(t.device).or_insert(at);
            *e = (*e).max(at);
        }
    }
    Ok(latest
        .into_iter()
        .map(|(device, revoked_at_ms)| Revocation {
            device,
            revoked_at_ms,
        })
        .collect())
}

/// The hub's side: what it needs to hand grants to devices.
#[derive(Debug)]
pub struct Issuer {
    key: SigningKey,
    hub: DeviceId,
    acl: String,
    ttl_ms: i64,
}

impl Issuer {
    /// The issuer of hub `hub`: its key from `store` (created on first need), the access file
    /// text it hands out, and the credentials' lifetime.
    pub fn load(
        store: &Store,
        hub: DeviceId,
        acl: String,
        ttl_ms: i64,
    ) -> Result<Issuer, CredentialError> {
        Acl::from_toml(&acl).map_err(|e| invalid(e.to_string()))?;
        if acl.len() > MAX_ACL_LEN {
            return Err(invalid(format!(
                "access file of {} bytes: a grant carries at most {MAX_ACL_LEN}",
                acl.len()
            )));
        }
        Ok(Issuer {
            key: load_or_create_key(store, HUB_KEY)?,
            hub,
            acl,
            ttl_ms,
        })
    }

    /// The hub's public key.
    pub fn public_key(&self) -> Vec<u8> {
        self.key.public_key()
    }

    /// A grant for `device` of `user` holding `device_key`, with the store's current revocation
    /// list. `None` when the key is not a valid public key (an old device without one).
    pub fn grant(
        &self,
        store: &Store,
        user: UserId,
        device: &DeviceId,
        device_key: &[u8],
        now_ms: i64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        if device_key.len() != PUBLIC_KEY_LEN {
            return Ok(None);
        }
        let revoked = revocations(store)?;
        Ok(issue_grant(
            &self.key,
            GrantInput {
                hub: &self.hub,
                user,
                device,
                device_key,
                acl: &self.acl,
                revoked,
                now_ms,
                ttl_ms: self.ttl_ms,
            },
        )
        .ok())
    }
}

/// A device's side of the LAN handshake: its key, what it trusts, and its credential.
#[derive(Debug)]
pub struct PeerAuth {
    /// The device's key.
    pub key: SigningKey,
    /// What it trusts.
    pub trust: Trust,
    /// Its credential, presented to peers.
    pub credential: Vec<u8>,
}

/// Verifies a grant received by the device of `store` (identity `device`/`user`, hub `hub`),
/// pins the hub key on first receipt and keeps the grant. Nothing is written when it is refused.
pub fn accept_grant(
    store: &Store,
    hub: &DeviceId,
    device: &DeviceId,
    user: UserId,
    bytes: &[u8],
) -> Result<Grant, CredentialError> {
    let key = load_or_create_key(store, DEVICE_KEY)?;
    let pinned = store.read()?.kv_get(PINNED_HUB_KEY)?;
    let grant = open_grant(
        bytes,
        &Expect {
            hub,
            pinned: pinned.as_deref(),
            device,
            user,
            device_key: &key.public_key(),
        },
    )?;
    store.write(|w| {
        if pinned.is_none() {
            w.kv_put(PINNED_HUB_KEY, &grant.hub_key)?;
        }
        w.kv_put(GRANT, bytes)
    })?;
    Ok(grant)
}

/// The latest grant a device kept, verified again against its pinned key; `None` before its
/// first sync with a hub that grants.
pub fn stored_grant(
    store: &Store,
    hub: &DeviceId,
    device: &DeviceId,
    user: UserId,
) -> Result<Option<(Grant, PeerAuth)>, CredentialError> {
    let view = store.read()?;
    let (Some(bytes), Some(pinned), Some(pkcs8)) = (
        view.kv_get(GRANT)?,
        view.kv_get(PINNED_HUB_KEY)?,
        view.kv_get(DEVICE_KEY)?,
    ) else {
        return Ok(None);
    };
    let key = SigningKey::from_pkcs8(&pkcs8)?;
    let grant = open_grant(
        &bytes,
        &Expect {
            hub,
            pinned: Some(&pinned),
            device,
            user,
            device_key: &key.public_key(),
        },
    )?;
    let auth = PeerAuth {
        key,
        trust: grant.trust(),
        credential: grant.credential.clone(),
    };
    Ok(Some((grant, auth)))
}

/// The hub a device is enrolled with (from its enrollment token).
fn hub_of(node: &Node) -> Result<DeviceId, CredentialError> {
    let token = node
        .identity()
        .hub_token
        .as_deref()
        .ok_or_else(|| invalid("this device has no hub token: run init"))?;
    Ok(crate::token::parse(token)
        .map_err(|e| invalid(e.to_string()))?
        .hub)
}

/// Loads a device's latest grant into its replica: its access rules (which then also bound
/// what it accepts, by its own user) and its LAN credential and trust. Returns false when the
/// device holds no grant yet (it keeps trusting its hub's filtering).
pub fn enable_peer_auth(node: &mut Node) -> Result<bool, CredentialError> {
    let hub = hub_of(node)?;
    let (device, user) = (node.id().clone(), node.user());
    let Some((grant, auth)) = stored_grant(&node.store(), &hub, &device, user)? else {
        return Ok(false);
    };
    let acl = grant.acl()?;
    let replica = node.replica();
    replica.set_access(Some(user), acl);
    replica.set_peer_auth(Some(auth));
    Ok(true)
}

/// A grant from the hub arrived (a session's `Effect::Granted`): verifies and keeps it, then
/// loads it into the replica. A refused grant changes nothing.
pub fn take_grant(node: &mut Node, bytes: &[u8]) -> Result<(), CredentialError> {
    let hub = hub_of(node)?;
    let (device, user) = (node.id().clone(), node.user());
    accept_grant(&node.store(), &hub, &device, user, bytes)?;
    enable_peer_auth(node)?;
    Ok(())
}

/// The dial configuration of a device syncing with its hub: its enrollment token, and its
/// public key for the hub to certify (the key is created on first need).
pub fn hub_dial_config(node: &Node, limits: Limits) -> Result<DialConfig, CredentialError> {
    let token = node
        .identity()
        .hub_token
        .clone()
        .ok_or_else(|| invalid("this device has no hub token: run init"))?;
    let hub = hub_of(node)?;
    let key = load_or_create_key(&node.store(), DEVICE_KEY)?;
    Ok(DialConfig {
        node: node.id().clone(),
        role: Role::Device,
        token: token.into_bytes(),
        peer: Some(hub),
        verify_peer_token: false,
        mutual: false,
        nonce: Vec::new(),
        key: key.public_key(),
        limits,
    })
}

fn peer_auth_of(node: &Node) -> Result<&PeerAuth, CredentialError> {
    node.replica_ref().peer_auth().ok_or_else(|| {
        invalid("this device holds no peer credential yet: sync with the hub once first")
    })
}

/// The dial configuration of a device syncing with a LAN peer (`peer`: the node expected, if
/// known). Needs [`enable_peer_auth`] to have found a grant.
pub fn lan_dial_config(
    node: &Node,
    peer: Option<DeviceId>,
    limits: Limits,
) -> Result<DialConfig, CredentialError> {
    let auth = peer_auth_of(node)?;
    Ok(DialConfig {
        node: node.id().clone(),
        role: Role::Device,
        token: auth.credential.clone(),
        peer,
        verify_peer_token: false,
        mutual: true,
        nonce: nonce()?,
        key: Vec::new(),
        limits,
    })
}

/// The accept configuration of a device serving LAN peers, with a fresh nonce. Needs
/// [`enable_peer_auth`] to have found a grant.
pub fn lan_accept_config(node: &Node, limits: Limits) -> Result<AcceptConfig, CredentialError> {
    let auth = peer_auth_of(node)?;
    Ok(AcceptConfig {
        node: node.id().clone(),
        role: Role::Device,
        token: auth.credential.clone(),
        mutual: true,
        nonce: nonce()?,
        limits,
    })
}

/// The TLS acceptor of a device serving LAN peers (see [`crate::net::lan_tls_acceptor`]), its
/// certificate made from the device's key. Needs [`enable_peer_auth`] to have found a grant.
pub fn lan_tls_acceptor(node: &Node) -> Result<tokio_rustls::TlsAcceptor, CredentialError> {
    let auth = peer_auth_of(node)?;
    crate::net::lan_tls_acceptor(auth.key.pkcs8())
        .map_err(|e| CredentialError::Key(format!("the LAN certificate: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_795_000_000_000;
    const DAY: i64 = 24 * 3600 * 1000;

    fn id(s: &str) -> DeviceId {
        s.parse().unwrap()
    }

    fn grant_for(
        hub_key: &SigningKey,
        dev: &SigningKey,
        device: &str,
        revoked: Vec<Revocation>,
    ) -> Vec<u8> {
        issue_grant(
            hub_key,
            GrantInput {
                hub: &id("hub"),
                user: UserId(2),
                device: &id(device),
                device_key: &dev.public_key(),
                acl: "admins = [1]\n",
                revoked,
                now_ms: T0,
                ttl_ms: 7 * DAY,
            },
        )
        .unwrap()
    }

    fn expect<'a>(
        dev_key: &'a [u8],
        pinned: Option<&'a [u8]>,
        hub: &'a DeviceId,
        device: &'a DeviceId,
    ) -> Expect<'a> {
        Expect {
            hub,
            pinned,
            device,
            user: UserId(2),
            device_key: dev_key,
        }
    }

    #[test]
    fn a_grant_opens_and_its_credential_checks() {
        let hub_key = SigningKey::generate().unwrap();
        let dev = SigningKey::generate().unwrap();
        let bytes = grant_for(&hub_key, &dev, "phone", vec![]);
        let (hub, device, pk) = (id("hub"), id("phone"), dev.public_key());
        let g = open_grant(&bytes, &expect(&pk, None, &hub, &device)).unwrap();
        assert_eq!(g.hub_key, hub_key.public_key());
        assert!(g.acl().unwrap().is_admin(UserId(1)));
        let (st, key) = g.trust().check(&g.credential, &device, T0 + DAY).unwrap();
        assert_eq!((st.user, key), (UserId(2), dev.public_key()));
        // Pinned to the same key: fine; to another: refused.
        let hub_pk = hub_key.public_key();
        assert!(open_grant(&bytes, &expect(&pk, Some(&hub_pk), &hub, &device)).is_ok());
        let other = SigningKey::generate().unwrap().public_key();
        assert!(matches!(
            open_grant(&bytes, &expect(&pk, Some(&other), &hub, &device)),
            Err(CredentialError::HubKeyChanged)
        ));
        // A grant for another device, or from another hub, is refused.
        let other_dev = id("laptop");
        assert!(open_grant(&bytes, &expect(&pk, None, &hub, &other_dev)).is_err());
        let other_hub = id("hub2");
        assert!(open_grant(&bytes, &expect(&pk, None, &other_hub, &device)).is_err());
        // A tampered grant is refused.
        let mut bad = bytes.clone();
        let at = bad.len() / 2;
        bad[at] ^= 1;
        assert!(open_grant(&bad, &expect(&pk, None, &hub, &device)).is_err());
        assert!(open_grant(&bytes[..bytes.len() - 1], &expect(&pk, None, &hub, &device)).is_err());
        assert!(open_grant(b"", &expect(&pk, None, &hub, &device)).is_err());
    }

    #[test]
    fn forged_expired_foreign_and_revoked_credentials_are_refused() {
        let hub_key = SigningKey::generate().unwrap();
        let dev = SigningKey::generate().unwrap();
        let st = Statement {
            hub: id("hub"),
            user: UserId(3),
            device: id("phone"),
            key: hex(&dev.public_key()),
            issued_at_ms: T0,
            expires_at_ms: T0 + DAY,
        };
        let good = issue_credential(&hub_key, &st);
        let trust = Trust {
            hub: id("hub"),
            hub_key: hub_key.public_key(),
            revoked: BTreeMap::new(),
        };
        assert!(trust.check(&good, &id("phone"), T0 + 1).is_ok());
        // Presented by another node.
        assert!(trust.check(&good, &id("laptop"), T0 + 1).is_err());
        // Expired, or not yet issued.
        let e = trust.check(&good, &id("phone"), T0 + DAY).unwrap_err();
        assert!(e.contains("expired"), "{e}");
        assert!(trust.check(&good, &id("phone"), T0 - DAY).is_err());
        // Forged: a statement changed after signing (another user), or signed by another key.
        let mut forged = good.clone();
        let body = serde_json::to_vec(&Statement {
            user: UserId(1),
            ..st.clone()
        })
        .unwrap();
        assert_eq!(body.len(), serde_json::to_vec(&st).unwrap().len());
        forged[4..4 + body.len()].copy_from_slice(&body);
        let e = trust.check(&forged, &id("phone"), T0 + 1).unwrap_err();
        assert!(e.contains("signature"), "{e}");
        let rogue = SigningKey::generate().unwrap();
        let e = trust
            .check(&issue_credential(&rogue, &st), &id("phone"), T0 + 1)
            .unwrap_err();
        assert!(e.contains("signature"), "{e}");
        // Another hub's credential, even with a key this device trusts.
        let foreign = issue_credential(
            &hub_key,
            &Statement {
                hub: id("other-hub"),
                ..st.clone()
            },
        );
        assert!(trust.check(&foreign, &id("phone"), T0 + 1).is_err());
        // Revoked after issue: refused; a credential issued after the revocation passes.
        let mut revoked = trust.clone();
        revoked.revoked.insert(id("phone"), T0 + 10);
        let e = revoked.check(&good, &id("phone"), T0 + 20).unwrap_err();
        assert!(e.contains("revoked"), "{e}");
        let later = issue_credential(
            &hub_key,
            &Statement {
                issued_at_ms: T0 + 11,
                ..st.clone()
            },
        );
        assert!(revoked.check(&later, &id("phone"), T0 + 20).is_ok());
        // Garbage.
        assert!(trust.check(b"", &id("phone"), T0).is_err());
        assert!(trust.check(&[0xff; 200], &id("phone"), T0).is_err());
    }

    #[test]
    fn a_proof_over_one_transcript_fails_over_another() {
        let k = SigningKey::generate().unwrap();
        let a = b"transcript with nonce A".to_vec();
        let b = b"transcript with nonce B".to_vec();
        let sig = k.sign(&a);
        assert!(verify_signature(&k.public_key(), &a, &sig));
        assert!(!verify_signature(&k.public_key(), &b, &sig));
        let other = SigningKey::generate().unwrap();
        assert!(!verify_signature(&other.public_key(), &a, &sig));
        assert!(!verify_signature(&k.public_key(), &a, &sig[..63]));
        assert!(!verify_signature(&[0; 5], &a, &sig));
        // A key survives its PKCS#8 round trip.
        let again = SigningKey::from_pkcs8(k.pkcs8()).unwrap();
        assert_eq!(again.public_key(), k.public_key());
        assert!(SigningKey::from_pkcs8(b"junk").is_err());
    }

    #[test]
    fn hex_fields_take_hex_digits_only() {
        assert_eq!(unhex("0f"), Some(vec![15]));
        assert_eq!(unhex("0F"), Some(vec![15]));
        for bad in ["+f", "-f", " f", "f", "0g", "é0"] {
            assert_eq!(unhex(bad), None, "{bad:?}");
        }
    }
}
