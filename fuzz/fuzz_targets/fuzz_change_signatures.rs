//! The signature part of a sync-batch entry: arbitrary bytes as the signatures beside a real
//! message, checked as a hub and as a LAN peer would. Never panics; a random signature never
//! proves a change.
#![no_main]

use std::sync::OnceLock;

use automerge::transaction::Transactable;
use automerge::{Automerge, Change, ROOT};
use libfuzzer_sys::fuzz_target;
use sellsync_model::{Catalog, DeviceId, Policy, UserId};
use sellsync_service::credential::SigningKey;
use sellsync_service::signed::{self, KnownDevice, Verifier};

struct Fixture {
    doc: Automerge,
    changes: Vec<Change>,
    key: Vec<u8>,
}

/// A document with one change by `rita-phone`, and her public key.
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let rita: DeviceId = "rita-phone".parse().unwrap();
        let mut doc = Automerge::new().with_actor(sellsync_service::actor_of(&rita));
        let mut tx = doc.transaction();
        tx.put(ROOT, "kind", "deal").unwrap();
        tx.commit();
        let changes = doc.get_changes(&[]);
        let key = SigningKey::generate().unwrap().public_key();
        Fixture { doc, changes, key }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let Ok(proofs) = signed::decode(data) else {
        return;
    };
    // Re-encoding what was decoded gives the same bytes.
    assert_eq!(signed::encode(&proofs), data);
    let hub: DeviceId = "hub".parse().unwrap();
    let relay: DeviceId = "carl-web".parse().unwrap();
    let live = |_: &DeviceId| {
        Some(KnownDevice {
            user: UserId(2),
            live: true,
            key: Some(f.key.clone()),
            ended_ms: None,
            past_keys: Vec::new(),
        })
    };
    // Revoked, with a past key: only a relay's receipt could let a change in.
    let revoked = |_: &DeviceId| {
        Some(KnownDevice {
            user: UserId(2),
            live: false,
            key: Some(f.key.clone()),
            ended_ms: Some(1_000),
            past_keys: vec![(f.key.clone(), 500)],
        })
    };
    let verifiers = [
        Verifier::Hub {
            hub: &hub,
            sender: &relay,
            sender_key: Some(&f.key),
            hub_key: Some(f.key.clone()),
            device: &live,
        },
        Verifier::Hub {
            hub: &hub,
            sender: &relay,
            sender_key: Some(&f.key),
            hub_key: Some(f.key.clone()),
            device: &revoked,
        },
        Verifier::LanPeer {
            peer: &"rita-phone".parse().unwrap(),
            user: UserId(2),
            peer_key: Some(&f.key),
            hub_key: Some(&f.key),
        },
    ];
    let (catalog, policy) = (Catalog::default(), Policy::default());
    for v in &verifiers {
        // Nobody holds the fixture's private key: no input can prove the change.
        let rules = signed::Rules {
            catalog: &catalog,
            policy: &policy,
        };
        let checked = v.check(&f.doc, "deal", &f.changes, &proofs, &|_| true, rules);
        assert!(checked.is_err(), "a random signature proved a change");
    }
});
