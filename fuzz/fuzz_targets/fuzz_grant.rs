//! LAN grants and peer credentials (`sellsync_service::credential`): `open_grant` and
//! `Trust::check` never panic on any bytes, and decide exactly as the rules say.
//!
//! The first input byte picks a mode:
//! - raw: the rest is a grant and a credential as received, checked with a fixed hub, device and
//!   hub key (the committed seeds are grants signed with that key; a mutation mostly stops at
//!   the envelope, the body's JSON or the signature);
//! - signed: an `arbitrary` description of a grant whose bodies are built from its fields (or
//!   taken as raw bytes) and signed with the hub's key, so the JSON parsing and every check
//!   after the signature are reached. The answer of `open_grant` and of `Trust::check` is
//!   compared with an oracle computed from the description;
//! - issued: `issue_grant` with arbitrary inputs, then `open_grant` and `Trust::check` on what
//!   it made: a grant the hub issues opens, and its credential passes when it should.
//!
//! The keys are fixed (see `keys`), and the signed mode names them symbolically.

#![no_main]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use sellsync_model::{DeviceId, UserId};
use sellsync_service::Acl;
use sellsync_service::credential::{
    CLOCK_SKEW_MS, CredentialError, Expect, GrantInput, Revocation, SigningKey, Statement, Trust,
    issue_credential, issue_grant, open_grant,
};
use serde_json::json;

/// The domain tags of the signed envelopes (the wire format in `credential.rs`); `keys()`
/// checks once that sealing with them gives what the crate issues.
const CREDENTIAL_DOMAIN: &[u8] = b"sellsync/peer-credential/v1\0";
const GRANT_DOMAIN: &[u8] = b"sellsync/grant/v1\0";

const HUB: &str = "hub-1";
const DEVICE: &str = "device-1";
const USER: u64 = 7;
/// The time of every check in the signed mode (unix ms).
const NOW_MS: i64 = 1_800_000_000_000;

struct Keys {
    hub: SigningKey,
    /// A key that is not the hub's (a forged signature).
    stranger: SigningKey,
    device_public: Vec<u8>,
}

/// A key pair from a fixed seed, through its PKCS#8 v2 form (what `SigningKey` reads).
fn fixed_key(first: u8) -> SigningKey {
    let seed: Vec<u8> = (first..first + 32).collect();
    let pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(&seed).expect("a seed");
    let public = ring::signature::KeyPair::public_key(&pair)
        .as_ref()
        .to_vec();
    let mut pkcs8 = vec![
        0x30, 0x53, 0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    pkcs8.extend_from_slice(&seed);
    pkcs8.extend_from_slice(&[0xa1, 0x23, 0x03, 0x21, 0x00]);
    pkcs8.extend_from_slice(&public);
    SigningKey::from_pkcs8(&pkcs8).expect("a PKCS#8 v2 Ed25519 key")
}

/// The keys of every run: fixed, so that a committed input means the same in every run (the
/// seeds of `corpus/fuzz_grant` are signed with the hub key, seed bytes 0..32; the device's
/// key has seed bytes 32..64).
fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let hub = fixed_key(0);
        let device_public = fixed_key(32).public_key();
        let statement = Statement {
            hub: HUB.parse().expect("hub id"),
            user: UserId(USER),
            device: DEVICE.parse().expect("device id"),
            key: hex(&device_public),
            issued_at_ms: 1,
            expires_at_ms: 2,
        };
        let body = serde_json::to_vec(&statement).expect("statement serialises");
        assert_eq!(
            seal(&hub, CREDENTIAL_DOMAIN, &body),
            issue_credential(&hub, &statement),
            "the target seals envelopes as the crate does"
        );
        Keys {
            hub,
            stranger: fixed_key(64),
            device_public,
        }
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `body length u32 BE | body | Ed25519 signature over domain ‖ body`.
fn seal(key: &SigningKey, domain: &[u8], body: &[u8]) -> Vec<u8> {
    let mut signed = domain.to_vec();
    signed.extend_from_slice(body);
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out.extend_from_slice(&key.sign(&signed));
    out
}

fn expect_of<'a>(hub: &'a DeviceId, device: &'a DeviceId, pinned: Option<&'a [u8]>) -> Expect<'a> {
    Expect {
        hub,
        pinned,
        device,
        user: UserId(USER),
        device_key: &keys().device_public,
    }
}

/// A node id as the input names it: the expected one, or any text.
#[derive(Debug, Arbitrary)]
enum Name {
    Expected,
    Other(String),
}

impl Name {
    fn text(&self, expected: &str) -> String {
        match self {
            Name::Expected => expected.to_owned(),
            Name::Other(s) => s.clone(),
        }
    }
}

/// A public key as the input names it: the right one, or any text in its place.
#[derive(Debug, Arbitrary)]
enum Key {
    Right,
    Other(String),
}

impl Key {
    fn text(&self, right: &[u8]) -> String {
        match self {
            Key::Right => hex(right),
            Key::Other(s) => s.clone(),
        }
    }
}

#[derive(Debug, Arbitrary)]
struct StatementCase {
    hub: Name,
    user: u64,
    device: Name,
    key: Key,
    issued_at_ms: i64,
    expires_at_ms: i64,
    /// Signed as the whole body instead of the fields above.
    raw_body: Option<Vec<u8>>,
    /// Signed by another key than the hub's.
    foreign_signer: bool,
}

#[derive(Debug, Arbitrary)]
enum CredentialCase {
    Signed(StatementCase),
    /// Any text in the credential's hex field.
    Text(String),
}

#[derive(Debug, Arbitrary)]
struct GrantCase {
    hub: Name,
    hub_key: Key,
    credential: CredentialCase,
    acl: String,
    revoked: Vec<(String, i64)>,
    issued_at_ms: i64,
    raw_body: Option<Vec<u8>>,
    /// Whether the device pinned the hub key already.
    pinned: bool,
    /// Bytes appended after the signature.
    trailer: Vec<u8>,
}

#[derive(Debug, Arbitrary)]
struct IssueCase {
    user: u64,
    acl: String,
    revoked: Vec<(u8, i64)>,
    now_ms: i64,
    ttl_ms: i64,
    check_at_ms: i64,
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => raw(rest),
        1 => {
            if let Ok(case) = GrantCase::arbitrary_take_rest(Unstructured::new(rest)) {
                signed(&case);
            }
        }
        _ => {
            if let Ok(case) = IssueCase::arbitrary_take_rest(Unstructured::new(rest)) {
                issued(&case);
            }
        }
    }
});

/// Bytes as received: whatever opens must be what this device expects.
fn raw(bytes: &[u8]) {
    let k = keys();
    let hub: DeviceId = HUB.parse().expect("hub id");
    let device: DeviceId = DEVICE.parse().expect("device id");
    let pinned = k.hub.public_key();
    for pin in [None, Some(pinned.as_slice())] {
        if let Ok(g) = open_grant(bytes, &expect_of(&hub, &device, pin)) {
            assert_eq!(g.hub, hub, "an opened grant is from the expected hub");
            assert_eq!(
                g.statement.device, device,
                "an opened grant is for this device"
            );
            assert_eq!(
                g.statement.user,
                UserId(USER),
                "an opened grant is for this user"
            );
            assert_eq!(g.statement.public_key(), Some(k.device_public.clone()));
            assert!(g.acl().is_ok(), "an opened grant's access rules parse");
            if pin.is_some() {
                assert_eq!(
                    g.hub_key, pinned,
                    "a grant opened under a pin is signed by that key"
                );
            }
            let _ = g.trust().check(&g.credential, &device, NOW_MS);
        }
    }
    let trust = Trust {
        hub: hub.clone(),
        hub_key: pinned.clone(),
        revoked: BTreeMap::new(),
    };
    if let Ok((statement, key)) = trust.check(bytes, &device, NOW_MS) {
        assert_eq!(statement.hub, hub);
        assert_eq!(statement.device, device);
        assert!(
            NOW_MS < statement.expires_at_ms,
            "an expired credential passed"
        );
        assert_eq!(statement.public_key(), Some(key));
    }
}

/// What a statement case should give under `Trust::check` at `NOW_MS` with `revoked`, by the
/// rules in `credential.rs`: `Some(statement)` when it must pass.
fn statement_verdict(case: &StatementCase, revoked: &BTreeMap<DeviceId, i64>) -> Option<Statement> {
    if case.raw_body.is_some() || case.foreign_signer {
        return None; // A raw body may still parse: then the checks are not asserted, see below.
    }
    let st = Statement {
        hub: case.hub.text(HUB).parse().ok()?,
        user: UserId(case.user),
        device: case.device.text(DEVICE).parse().ok()?,
        key: case.key.text(&keys().device_public),
        issued_at_ms: case.issued_at_ms,
        expires_at_ms: case.expires_at_ms,
    };
    let valid = st.hub.as_str() == HUB
        && st.device.as_str() == DEVICE
        && NOW_MS < st.expires_at_ms
        && NOW_MS >= st.issued_at_ms.saturating_sub(CLOCK_SKEW_MS)
        && revoked
            .get(&st.device)
            .is_none_or(|at| st.issued_at_ms > *at)
        && st.public_key().is_some();
    valid.then_some(st)
}

fn signed(case: &GrantCase) {
    let k = keys();
    let hub: DeviceId = HUB.parse().expect("hub id");
    let device: DeviceId = DEVICE.parse().expect("device id");
    let hub_public = k.hub.public_key();

    // The credential.
    let credential = match &case.credential {
        CredentialCase::Signed(st) => {
            let body = match &st.raw_body {
                Some(raw) => raw.clone(),
                None => serde_json::to_vec(&json!({
                    "hub": st.hub.text(HUB),
                    "user": st.user,
                    "device": st.device.text(DEVICE),
                    "key": st.key.text(&k.device_public),
                    "issued_at_ms": st.issued_at_ms,
                    "expires_at_ms": st.expires_at_ms,
                }))
                .expect("json"),
            };
            let signer = if st.foreign_signer {
                &k.stranger
            } else {
                &k.hub
            };
            Some(seal(signer, CREDENTIAL_DOMAIN, &body))
        }
        CredentialCase::Text(_) => None,
    };
    let credential_text = match (&case.credential, &credential) {
        (CredentialCase::Text(t), _) => t.clone(),
        (_, Some(c)) => hex(c),
        (_, None) => String::new(),
    };

    // The grant.
    let revoked_json: Vec<_> = case
        .revoked
        .iter()
        .map(|(d, at)| json!({ "device": d, "revoked_at_ms": at }))
        .collect();
    let body = match &case.raw_body {
        Some(raw) => raw.clone(),
        None => serde_json::to_vec(&json!({
            "hub": case.hub.text(HUB),
            "hub_key": case.hub_key.text(&hub_public),
            "credential": credential_text,
            "acl": case.acl,
            "revoked": revoked_json,
            "issued_at_ms": case.issued_at_ms,
        }))
        .expect("json"),
    };
    let mut grant = seal(&k.hub, GRANT_DOMAIN, &body);
    grant.extend_from_slice(&case.trailer);

    let pinned = case.pinned.then_some(hub_public.as_slice());
    let opened = open_grant(&grant, &expect_of(&hub, &device, pinned));

    // The oracle of `open_grant` for a grant built from fields.
    let revoked: Option<BTreeMap<DeviceId, i64>> = case
        .revoked
        .iter()
        .map(|(d, at)| d.parse::<DeviceId>().ok().map(|d| (d, *at)))
        .collect();
    let key_is_hubs = matches!(case.hub_key, Key::Right)
        || matches!(&case.hub_key, Key::Other(s) if *s == hex(&hub_public));
    let statement_matches = match &case.credential {
        CredentialCase::Signed(st) if st.raw_body.is_none() && !st.foreign_signer => {
            st.hub.text(HUB) == HUB
                && st.device.text(DEVICE) == DEVICE
                && st.user == USER
                && st.key.text(&k.device_public) == hex(&k.device_public)
        }
        _ => false,
    };
    let must_open = case.raw_body.is_none()
        && case.trailer.is_empty()
        && case.hub.text(HUB) == HUB
        && key_is_hubs
        && revoked.is_some()
        && statement_matches
        && Acl::from_toml(&case.acl).is_ok();
    match &opened {
        Ok(g) => {
            assert!(
                case.raw_body.is_some() || must_open,
                "a grant opened that the rules refuse: {case:?}"
            );
            assert_eq!(g.hub, hub, "an opened grant is from the expected hub");
            assert_eq!(
                g.hub_key, hub_public,
                "an opened grant is signed by the hub's key"
            );
            assert_eq!(
                g.statement.device, device,
                "an opened grant's credential is this device's"
            );
            assert_eq!(
                g.statement.user,
                UserId(USER),
                "an opened grant's credential is this user's"
            );
            assert!(g.acl().is_ok(), "an opened grant's access rules parse");
            if case.raw_body.is_none() {
                assert_eq!(g.acl, case.acl);
                assert_eq!(Some(&g.trust().revoked), revoked.as_ref());
            }
        }
        Err(e) => {
            assert!(!must_open, "a valid grant was refused: {e} ({case:?})");
            if case.pinned && !key_is_hubs && case.raw_body.is_none() {
                // The pinned key is checked before the signature; any other key is a change.
                if let Key::Other(s) = &case.hub_key
                    && s.len() == 64
                    && s.bytes().all(|b| b.is_ascii_hexdigit())
                {
                    assert!(
                        matches!(e, CredentialError::HubKeyChanged),
                        "another key: {e}"
                    );
                }
            }
        }
    }

    // The credential as a LAN peer presents it, under the revocation list of the case.
    if let (CredentialCase::Signed(st), Some(credential)) = (&case.credential, &credential) {
        let revoked = revoked.unwrap_or_default();
        let trust = Trust {
            hub: hub.clone(),
            hub_key: hub_public.clone(),
            revoked: revoked.clone(),
        };
        let verdict = statement_verdict(st, &revoked);
        match trust.check(credential, &device, NOW_MS) {
            Ok((statement, key)) => {
                if st.raw_body.is_none() {
                    assert_eq!(
                        Some(&statement),
                        verdict.as_ref(),
                        "a credential the rules refuse passed"
                    );
                }
                assert!(
                    !st.foreign_signer,
                    "a credential signed by another key passed"
                );
                assert_eq!(statement.public_key().as_deref(), Some(key.as_slice()));
                assert_eq!(statement.hub, hub);
                assert_eq!(statement.device, device);
            }
            Err(e) => assert!(
                verdict.is_none(),
                "a valid credential was refused: {e} ({st:?})"
            ),
        }
    }
}

fn issued(case: &IssueCase) {
    let k = keys();
    let hub: DeviceId = HUB.parse().expect("hub id");
    let device: DeviceId = DEVICE.parse().expect("device id");
    let revoked: Vec<Revocation> = case
        .revoked
        .iter()
        .map(|(n, at)| Revocation {
            device: if n % 4 == 0 {
                device.clone()
            } else {
                format!("peer-{n}").parse().expect("id")
            },
            revoked_at_ms: *at,
        })
        .collect();
    let input = GrantInput {
        hub: &hub,
        user: UserId(case.user),
        device: &device,
        device_key: &k.device_public,
        acl: &case.acl,
        revoked: revoked.clone(),
        now_ms: case.now_ms,
        ttl_ms: case.ttl_ms,
    };
    let bytes = issue_grant(&k.hub, input).expect("a 32-byte device key is accepted");
    let expect = Expect {
        hub: &hub,
        pinned: Some(&k.hub.public_key()),
        device: &device,
        user: UserId(case.user),
        device_key: &k.device_public,
    };
    let grant = match open_grant(&bytes, &expect) {
        Ok(g) => g,
        Err(e) => {
            assert!(
                Acl::from_toml(&case.acl).is_err(),
                "an issued grant does not open: {e}"
            );
            return;
        }
    };
    assert_eq!(grant.revoked, revoked);
    assert_eq!(grant.issued_at_ms, case.now_ms);
    // The last revocation of this device counts (the trust keeps one time per device).
    let trust = grant.trust();
    let expires = case.now_ms.saturating_add(case.ttl_ms);
    let revoked_at = trust.revoked.get(&device);
    let should_pass = case.check_at_ms < expires
        && case.check_at_ms >= case.now_ms.saturating_sub(CLOCK_SKEW_MS)
        && revoked_at.is_none_or(|at| case.now_ms > *at);
    let got = trust.check(&grant.credential, &device, case.check_at_ms);
    assert_eq!(
        got.is_ok(),
        should_pass,
        "credential check at {}: {got:?}",
        case.check_at_ms
    );
}
