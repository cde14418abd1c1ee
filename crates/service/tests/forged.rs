//! A hostile device: it writes straight into its own store, bypassing the edit API, and
//! tampers with the frames it sends. The hub (and a LAN peer) refuses every forged change with
//! nothing of it applied, other devices never see it, and honest changes still go through,
//! including one relayed over the LAN.

use std::sync::Arc;

use automerge::transaction::Transactable;
use automerge::{Automerge, ChangeHash, ObjType, ROOT, ReadDoc};
use sellsync_model::{
    AuditEntry, Candidate, Catalog, Chosen, Conflict, DeviceId, FieldKey, Money, RecordId,
    RecordKind, UserId, Value,
};
use sellsync_service::credential::{self, Issuer, SigningKey};
use sellsync_service::signed::{self, Proof};
use sellsync_service::{Acl, CATALOG_ID, Node, net, token};
use sellsync_store::{NodeIdentity, Role as StoreRole, Store, StoreRead};
use sellsync_sync::{
    AcceptConfig, BatchEntry, Effect, Event, Frame, IgnoreReason, Limits, Role, Session,
};

const T0: i64 = 1_795_000_000_000;
const ACL: &str = "admins = [1]\n[[teams]]\nid = 10\nmembers = [2, 3]\n";

fn hub(dir: &std::path::Path) -> Node {
    let store = Arc::new(Store::open(dir.join("hub.redb")).unwrap());
    Node::init(
        &store,
        &NodeIdentity {
            device_id: "hub".parse().unwrap(),
            user_id: UserId(0),
            role: StoreRole::Hub,
            hub_url: None,
            hub_token: None,
        },
    )
    .unwrap();
    let mut node = Node::open(store.clone(), Some(Acl::from_toml(ACL).unwrap())).unwrap();
    node.write_catalog(&Catalog::example(), T0).unwrap();
    let issuer = Issuer::load(
        &store,
        node.id().clone(),
        ACL.to_owned(),
        credential::DEFAULT_CREDENTIAL_TTL_MS,
    )
    .unwrap();
    node.replica().set_issuer(Some(issuer));
    node
}

fn device(dir: &std::path::Path, hub: &Node, name: &str, user: u64) -> Node {
    device_in(dir, name, hub, name, user)
}

/// A device `name` whose store is the file `file` (a replaced phone: the same device, a new
/// store and key).
fn device_in(dir: &std::path::Path, file: &str, hub: &Node, name: &str, user: u64) -> Node {
    let dev: DeviceId = name.parse().unwrap();
    let issued = hub
        .store()
        .write(|w| w.issue_token(UserId(user), &dev, T0, None))
        .unwrap();
    let full = token::format(hub.id(), UserId(user), &dev, &issued.token);
    let store = Arc::new(Store::open(dir.join(format!("{file}.redb"))).unwrap());
    Node::init(
        &store,
        &NodeIdentity {
            device_id: dev,
            user_id: UserId(user),
            role: StoreRole::Device,
            hub_url: None,
            hub_token: Some(full),
        },
    )
    .unwrap();
    Node::open(store, None).unwrap()
}

fn hub_accept(hub: &Node) -> AcceptConfig {
    AcceptConfig {
        node: hub.id().clone(),
        role: Role::Hub,
        token: Vec::new(),
        mutual: false,
        nonce: Vec::new(),
        limits: Limits::default(),
    }
}

/// What a tampering sender does to each frame it sends.
type Tamper<'a> = &'a dyn Fn(Vec<u8>) -> Vec<u8>;

/// One session in process at time `now`, the dialer's frames passed through `tamper`;
/// returns the documents the acceptor refused as forged.
fn pump(
    dialer: &mut Node,
    d: Session,
    acceptor: &mut Node,
    a: Session,
    tamper: Tamper<'_>,
    now: i64,
) -> Vec<RecordId> {
    let (mut d, mut a) = (d, a);
    dialer.replica().set_now(now);
    acceptor.replica().set_now(now);
    let mut forged = Vec::new();
    let fx = d.handle(dialer.replica(), Event::Opened);
    assert_eq!(net::carry_out(dialer, &fx, now).1, None);
    let mut to_a: Vec<Vec<u8>> = fx.send.into_iter().map(tamper).collect();
    let mut to_d = Vec::new();
    for _ in 0..50 {
        for f in std::mem::take(&mut to_a) {
            let fx = a.handle(acceptor.replica(), Event::Received(&f));
            assert_eq!(net::carry_out(acceptor, &fx, now).1, None);
            for e in &fx.effects {
                if let Effect::Ignored {
                    doc,
                    reason: IgnoreReason::Forged,
                } = e
                {
                    forged.push(doc.clone());
                }
            }
            to_d.extend(fx.send);
        }
        for f in std::mem::take(&mut to_d) {
            let fx = d.handle(dialer.replica(), Event::Received(&f));
            assert_eq!(net::carry_out(dialer, &fx, now).1, None);
            to_a.extend(fx.send.into_iter().map(tamper));
        }
        if to_a.is_empty() && to_d.is_empty() {
            break;
        }
    }
    forged
}

fn honest(f: Vec<u8>) -> Vec<u8> {
    f
}

/// A device's session with the hub; returns the documents the hub refused as forged.
fn with_hub(dev: &mut Node, hub: &mut Node, tamper: Tamper<'_>) -> Vec<RecordId> {
    with_hub_at(dev, hub, tamper, T0)
}

/// [`with_hub`] at time `now`.
fn with_hub_at(dev: &mut Node, hub: &mut Node, tamper: Tamper<'_>, now: i64) -> Vec<RecordId> {
    let d = Session::dial(credential::hub_dial_config(dev, Limits::default()).unwrap());
    let a = Session::accept(hub_accept(hub));
    pump(dev, d, hub, a, tamper, now)
}

/// A LAN session (`dialer` to `acceptor`); returns the documents the acceptor refused.
fn lan(dialer: &mut Node, acceptor: &mut Node, tamper: Tamper<'_>) -> Vec<RecordId> {
    lan_at(dialer, acceptor, tamper, T0)
}

/// [`lan`] at time `now`.
fn lan_at(dialer: &mut Node, acceptor: &mut Node, tamper: Tamper<'_>, now: i64) -> Vec<RecordId> {
    let d = Session::dial(credential::lan_dial_config(dialer, None, Limits::default()).unwrap());
    let a = Session::accept(credential::lan_accept_config(acceptor, Limits::default()).unwrap());
    pump(dialer, d, acceptor, a, tamper, now)
}

fn create(node: &mut Node, id: &str, owner: u64) -> RecordId {
    let id: RecordId = id.parse().unwrap();
    node.create(
        RecordKind::Deal,
        &id,
        vec![
            (
                FieldKey::Std("name".into()),
                Value::Text("Fair lead".into()),
            ),
            (
                FieldKey::Std("value".into()),
                Value::Money(Money::from_cents(1000)),
            ),
            (FieldKey::Std("owner_id".into()), Value::Ref(owner)),
        ],
        T0,
    )
    .unwrap();
    id
}

/// An honest rename through the edit API.
fn rename(node: &mut Node, id: &RecordId, name: &str, at: i64) {
    node.apply(
        id,
        "rename",
        &[sellsync_model::Edit::Set(
            FieldKey::Std("name".into()),
            Value::Text(name.into()),
        )],
        at,
    )
    .unwrap();
}

fn heads(node: &Node, id: &RecordId) -> Vec<ChangeHash> {
    node.replica_ref()
        .docs()
        .with_doc(id, |d| d.get_heads())
        .unwrap()
        .unwrap_or_default()
}

/// Writes straight into the device's copy of `id` (no edit API), as one change.
fn forge(node: &mut Node, id: &RecordId, kind: &str, f: impl FnOnce(&mut Automerge)) {
    node.replica().docs().with_doc_mut(id, kind, f).unwrap();
}

fn root_obj(doc: &Automerge, key: &str) -> automerge::ObjId {
    match doc.get(ROOT, key).unwrap().unwrap() {
        (automerge::Value::Object(ObjType::Map), id) => id,
        other => panic!("{key}: {other:?}"),
    }
}

fn put(doc: &mut Automerge, map: &str, key: &str, value: String) {
    let obj = root_obj(doc, map);
    let mut tx = doc.transaction();
    tx.put(&obj, key, value).unwrap();
    tx.commit();
}

fn name(node: &mut Node, id: &RecordId) -> Option<Value> {
    let p = node.project(id).unwrap()?;
    p.record.fields.get(&FieldKey::Std("name".into())).cloned()
}

/// A packed register, as the model writes one: `[value, at, by, device]`.
fn register(value: &str, at: i64, by: u64, device: &str) -> String {
    serde_json::json!([value, at, by, device]).to_string()
}

fn audit_entry(id: &str, by: u64, device: &str) -> String {
    serde_json::to_string(&AuditEntry {
        id: id.into(),
        slot: None,
        policy: "manual".into(),
        candidates: vec![Candidate {
            value: Value::Text("x".into()),
            at: T0,
            by: UserId(2),
            device: "rita-phone".parse().unwrap(),
            op: "1@ab".into(),
        }],
        chosen: Chosen::Value(Value::Text("x".into())),
        chosen_op: None,
        by: Some(UserId(by)),
        device: Some(device.parse().unwrap()),
        at: T0,
    })
    .unwrap()
}

/// Rewrites the signatures of the sync-batch entries for `deal-rita` with `f`.
fn resign(frame: Vec<u8>, f: &dyn Fn(&BatchEntry) -> Vec<u8>) -> Vec<u8> {
    match Frame::decode(&frame, 1 << 30) {
        Ok(Frame::SyncBatch(mut b)) => {
            for e in &mut b.entries {
                if e.doc.as_str() == "deal-rita" {
                    e.signatures = f(e);
                }
            }
            Frame::SyncBatch(b).encode(1 << 30).unwrap()
        }
        _ => frame,
    }
}

/// The changes an entry's author signatures name, signed again by `key`: as their author, or
/// (`as_hub`) as a hub endorsing each.
fn signed_by(e: &BatchEntry, key: &SigningKey, as_hub: bool) -> Vec<u8> {
    let proofs = signed::decode(&e.signatures).unwrap();
    let again: Vec<Proof> = proofs
        .iter()
        .filter_map(|p| match p {
            Proof::Author { hash, .. } if as_hub => Proof::hub(key, &[*hash]),
            Proof::Author { hash, .. } => Some(Proof::author(key, *hash)),
            Proof::Hub { .. } | Proof::Received { .. } => None,
        })
        .collect();
    assert!(!again.is_empty(), "the entry carried no author signature");
    signed::encode(&again)
}

struct World {
    _dir: tempfile::TempDir,
    hub: Node,
    rita: Node,
    carl: Node,
    /// Rita's deal, at the hub.
    deal: RecordId,
}

/// A hub, Rita (user 2) and Carl (user 3) of one team, each synced once (grants held), and a
/// deal of Rita's everyone holds.
fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let mut hub = hub(dir.path());
    let mut rita = device(dir.path(), &hub, "rita-phone", 2);
    let mut carl = device(dir.path(), &hub, "carl-web", 3);
    let deal = create(&mut rita, "deal-rita", 2);
    assert!(with_hub(&mut rita, &mut hub, &honest).is_empty());
    assert!(with_hub(&mut carl, &mut hub, &honest).is_empty());
    assert_eq!(heads(&carl, &deal), heads(&hub, &deal));
    World {
        _dir: dir,
        hub,
        rita,
        carl,
        deal,
    }
}

/// Rita syncs after forging: the hub refuses exactly `deal`, keeps its copy as it was, takes
/// Rita's honest deal made in the same session, and Carl never sees the forgery.
fn assert_refused_alone(w: &mut World, tamper: Tamper<'_>) {
    let before = heads(&w.hub, &w.deal);
    let honest_deal = create(&mut w.rita, "deal-honest", 2);
    let refused = with_hub(&mut w.rita, &mut w.hub, tamper);
    assert_eq!(refused, vec![w.deal.clone()]);
    assert_eq!(
        heads(&w.hub, &w.deal),
        before,
        "nothing of the forgery was kept"
    );
    // The device was told: its user sees the record under a permission conflict.
    if w.deal.as_str() != CATALOG_ID {
        let shown = w.rita.project(&w.deal).unwrap().unwrap();
        assert!(
            shown
                .conflicts
                .iter()
                .any(|c| matches!(c, Conflict::Permission { slot: None, .. })),
            "no conflict shows the refusal: {:?}",
            shown.conflicts
        );
    }
    assert_eq!(heads(&w.hub, &honest_deal), heads(&w.rita, &honest_deal));
    assert!(with_hub(&mut w.carl, &mut w.hub, &honest).is_empty());
    assert_eq!(heads(&w.carl, &w.deal), before);
    assert_eq!(
        name(&mut w.carl, &w.deal),
        Some(Value::Text("Fair lead".into()))
    );
    // The refusal stands on every later session, and changes nothing either.
    assert_eq!(
        with_hub(&mut w.rita, &mut w.hub, tamper),
        vec![w.deal.clone()]
    );
    assert_eq!(heads(&w.hub, &w.deal), before);
}

#[test]
fn a_register_claiming_another_user_or_device_is_refused() {
    for (by, dev) in [(1, "rita-phone"), (2, "admin-phone")] {
        let mut w = world();
        let deal = w.deal.clone();
        forge(&mut w.rita, &deal, "deal", |d| {
            put(d, "fields", "name", register("Forged", T0 + 5, by, dev))
        });
        assert_refused_alone(&mut w, &honest);
    }
}

#[test]
fn a_forged_audit_entry_and_a_deleted_one_are_refused() {
    let mut w = world();
    let deal = w.deal.clone();
    // An entry "decided by the admin", written by Rita's device.
    forge(&mut w.rita, &deal, "deal", |d| {
        put(
            d,
            "audit",
            "forged",
            audit_entry("forged", 1, "admin-phone"),
        )
    });
    assert_refused_alone(&mut w, &honest);

    // Rita may record her own decision; deleting it later is a rewrite of the audit.
    let mut w = world();
    forge(&mut w.rita, &deal, "deal", |d| {
        put(d, "audit", "mine", audit_entry("mine", 2, "rita-phone"))
    });
    assert!(with_hub(&mut w.rita, &mut w.hub, &honest).is_empty());
    assert_eq!(heads(&w.hub, &deal), heads(&w.rita, &deal));
    forge(&mut w.rita, &deal, "deal", |d| {
        let audit = root_obj(d, "audit");
        let mut tx = d.transaction();
        tx.delete(&audit, "mine").unwrap();
        tx.commit();
    });
    assert_refused_alone(&mut w, &honest);
}

#[test]
fn a_resolution_naming_a_value_no_one_wrote_is_refused() {
    // Rita records, under her own name, that she settled a conflict on the deal's value
    // between her 1,000.00 and 4,242.00 "written by the admin", and chose hers. The admin never
    // wrote it: the entry names a candidate the deal never had.
    let mut w = world();
    let deal = w.deal.clone();
    let value = sellsync_model::Slot::record(FieldKey::Std("value".into()));
    let real: Vec<Candidate> = w
        .rita
        .replica_ref()
        .docs()
        .with_doc(&deal, |d| {
            sellsync_model::RecordDoc::from_automerge(d.clone(), &"x".parse().unwrap())
                .unwrap()
                .field_candidates(&Catalog::example(), &Default::default(), &value)
        })
        .unwrap()
        .unwrap();
    assert_eq!(real.len(), 1);
    let invented = Candidate {
        value: Value::Money(Money::from_cents(424_200)),
        at: T0 + 1,
        by: UserId(1),
        device: "admin-phone".parse().unwrap(),
        op: "7@61646d696e2d70686f6e65".into(),
    };
    let entry = |candidates: Vec<Candidate>| {
        serde_json::to_string(&AuditEntry {
            id: "settled".into(),
            slot: Some(value.clone()),
            policy: "manual".into(),
            candidates,
            chosen: Chosen::Value(real[0].value.clone()),
            chosen_op: Some(real[0].op.clone()),
            by: Some(UserId(2)),
            device: Some("rita-phone".parse().unwrap()),
            at: T0 + 5,
        })
        .unwrap()
    };
    let forged = entry(vec![real[0].clone(), invented]);
    forge(&mut w.rita, &deal, "deal", |d| {
        put(d, "audit", "settled", forged)
    });
    assert_refused_alone(&mut w, &honest);

    // The same entry naming only what was written goes through (odd, but true: it is hers).
    let mut w = world();
    let honest_entry = entry(real.clone());
    forge(&mut w.rita, &deal, "deal", |d| {
        put(d, "audit", "settled", honest_entry)
    });
    assert!(with_hub(&mut w.rita, &mut w.hub, &honest).is_empty());
    assert_eq!(heads(&w.hub, &deal), heads(&w.rita, &deal));
}

#[test]
fn a_device_writing_the_catalog_or_a_crm_refusal_is_refused() {
    let mut w = world();
    let catalog: RecordId = CATALOG_ID.parse().unwrap();
    let before = heads(&w.hub, &catalog);
    forge(&mut w.rita, &catalog, "catalog", |d| {
        let mut tx = d.transaction();
        tx.put(ROOT, "renamed-stage", "Won (forged)").unwrap();
        tx.commit();
    });
    assert_eq!(
        with_hub(&mut w.rita, &mut w.hub, &honest),
        vec![catalog.clone()]
    );
    assert_eq!(heads(&w.hub, &catalog), before);

    let mut w = world();
    let deal = w.deal.clone();
    forge(&mut w.rita, &deal, "deal", |d| {
        put(d, "flags", "flag-x", "{}".into())
    });
    assert_refused_alone(&mut w, &honest);
}

#[test]
fn unsigned_or_wrongly_signed_changes_are_refused() {
    let forged_edit = |w: &mut World| {
        let deal = w.deal.clone();
        forge(&mut w.rita, &deal, "deal", |d| {
            put(
                d,
                "fields",
                "name",
                register("Renamed", T0 + 5, 2, "rita-phone"),
            )
        });
    };
    // Stripped of its signatures.
    let mut w = world();
    forged_edit(&mut w);
    let strip = |f: Vec<u8>| resign(f, &|_| Vec::new());
    assert_refused_alone(&mut w, &strip);

    // Signed by another device's key (Carl's), or by a key of another hub posing as the hub.
    let carl_key = SigningKey::from_pkcs8(
        &w.carl
            .store()
            .read()
            .unwrap()
            .kv_get(credential::DEVICE_KEY)
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    let mut w = world();
    forged_edit(&mut w);
    let as_carl = |f: Vec<u8>| resign(f, &|e| signed_by(e, &carl_key, false));
    assert_refused_alone(&mut w, &as_carl);
    let other_hub = SigningKey::generate().unwrap();
    let mut w = world();
    forged_edit(&mut w);
    let as_hub = |f: Vec<u8>| resign(f, &|e| signed_by(e, &other_hub, true));
    assert_refused_alone(&mut w, &as_hub);

    // The same edit, signed as it should be, goes through.
    let mut w = world();
    forged_edit(&mut w);
    assert!(with_hub(&mut w.rita, &mut w.hub, &honest).is_empty());
    assert_eq!(
        name(&mut w.hub, &w.deal),
        Some(Value::Text("Renamed".into()))
    );
}

#[test]
fn a_change_claiming_another_device_as_its_author_is_refused() {
    let mut w = world();
    let deal = w.deal.clone();
    // Rita's device writes as Carl's actor, with a register naming Carl: only Carl's key can
    // sign it.
    forge(&mut w.rita, &deal, "deal", |d| {
        d.set_actor(sellsync_service::actor_of(&"carl-web".parse().unwrap()));
        put(
            d,
            "fields",
            "name",
            register("By carl?", T0 + 5, 3, "carl-web"),
        );
        d.set_actor(sellsync_service::actor_of(&"rita-phone".parse().unwrap()));
    });
    assert_refused_alone(&mut w, &honest);
}

#[test]
fn lan_relays_keep_the_authors_signature_and_a_lan_peer_refuses_a_forgery() {
    let mut w = world();
    let deal = w.deal.clone();
    // Rita renames her deal offline and syncs with Carl over the LAN; Carl carries it to the
    // hub, which takes it as Rita's.
    rename(&mut w.rita, &deal, "Renamed at the fair", T0 + 10);
    assert!(lan(&mut w.rita, &mut w.carl, &honest).is_empty());
    assert!(with_hub(&mut w.carl, &mut w.hub, &honest).is_empty());
    assert_eq!(heads(&w.hub, &deal), heads(&w.rita, &deal));
    assert_eq!(
        name(&mut w.hub, &deal),
        Some(Value::Text("Renamed at the fair".into()))
    );

    // A LAN peer refuses a forgery too, and keeps nothing of it.
    let before = heads(&w.carl, &deal);
    forge(&mut w.rita, &deal, "deal", |d| {
        put(
            d,
            "fields",
            "name",
            register("Forged", T0 + 20, 1, "rita-phone"),
        )
    });
    assert_eq!(lan(&mut w.rita, &mut w.carl, &honest), vec![deal.clone()]);
    assert_eq!(heads(&w.carl, &deal), before);
}

fn revoke(hub: &Node, device: &str, at: i64) {
    hub.store()
        .write(|w| w.revoke_device_tokens(&device.parse().unwrap(), at))
        .unwrap();
}

/// Rewrites every relay receipt in the sync batches of `frame` with `f`.
fn rewrite_receipts(frame: Vec<u8>, f: &dyn Fn(ChangeHash, i64) -> Proof) -> Vec<u8> {
    resign(frame, &|e| {
        let proofs = signed::decode(&e.signatures).unwrap();
        let again: Vec<Proof> = proofs
            .into_iter()
            .map(|p| match p {
                Proof::Received { hash, at_ms, .. } => f(hash, at_ms),
                other => other,
            })
            .collect();
        signed::encode(&again)
    })
}

#[test]
fn a_change_relayed_after_its_authors_revocation_passes_on_a_receipt_from_before_it() {
    // Carl takes Rita's edit over the LAN; Rita's phone is revoked before Carl reaches the hub.
    // Carl's receipt, dated before the revocation, carries the change as Rita's.
    let relayed = |tamper: Tamper<'_>| {
        let mut w = world();
        let deal = w.deal.clone();
        rename(&mut w.rita, &deal, "Before revocation", T0 + 10);
        assert!(lan_at(&mut w.rita, &mut w.carl, &honest, T0 + 12).is_empty());
        revoke(&w.hub, "rita-phone", T0 + 15);
        let before = heads(&w.hub, &deal);
        let refused = with_hub_at(&mut w.carl, &mut w.hub, tamper, T0 + 20);
        let reached = heads(&w.hub, &deal) == heads(&w.rita, &deal);
        assert!(
            reached || heads(&w.hub, &deal) == before,
            "part of it was applied"
        );
        (refused, reached, name(&mut w.hub, &deal))
    };
    assert_eq!(
        relayed(&honest),
        (vec![], true, Some(Value::Text("Before revocation".into())))
    );
    // A receipt that Carl did not sign, or none, does not do: nothing is applied.
    let stranger = SigningKey::generate().unwrap();
    let forged_receipt =
        |f: Vec<u8>| rewrite_receipts(f, &|hash, at| Proof::received(&stranger, hash, at));
    let no_receipt = |f: Vec<u8>| {
        resign(f, &|e| {
            let kept: Vec<Proof> = signed::decode(&e.signatures)
                .unwrap()
                .into_iter()
                .filter(|p| !matches!(p, Proof::Received { .. }))
                .collect();
            signed::encode(&kept)
        })
    };
    for tamper in [&forged_receipt as Tamper<'_>, &no_receipt] {
        let (refused, reached, _) = relayed(tamper);
        assert_eq!(refused, vec!["deal-rita".parse().unwrap()]);
        assert!(!reached);
    }
}

#[test]
fn a_revoked_devices_change_received_after_the_revocation_is_refused() {
    // Rita's phone is revoked; it does not know, edits offline and passes the edit to Carl,
    // who carries it to the hub: refused, and Carl's receipt cannot be redated.
    let relayed = |tamper: Tamper<'_>| {
        let mut w = world();
        let deal = w.deal.clone();
        revoke(&w.hub, "rita-phone", T0 + 5);
        rename(&mut w.rita, &deal, "After revocation", T0 + 10);
        assert!(lan_at(&mut w.rita, &mut w.carl, &honest, T0 + 12).is_empty());
        let before = heads(&w.hub, &deal);
        let refused = with_hub_at(&mut w.carl, &mut w.hub, tamper, T0 + 20);
        (refused, heads(&w.hub, &deal) == before)
    };
    let redated = |f: Vec<u8>| {
        resign(f, &|e| {
            let proofs = signed::decode(&e.signatures).unwrap();
            let again: Vec<Proof> = proofs
                .into_iter()
                .map(|p| match p {
                    Proof::Received {
                        hash, signature, ..
                    } => Proof::Received {
                        hash,
                        at_ms: T0,
                        signature,
                    },
                    other => other,
                })
                .collect();
            signed::encode(&again)
        })
    };
    for tamper in [&honest as Tamper<'_>, &redated] {
        assert_eq!(relayed(tamper), (vec!["deal-rita".parse().unwrap()], true));
    }
}

#[test]
fn a_relay_holding_a_refused_change_discards_its_copy_and_takes_the_hubs_again() {
    // As above: Carl holds a change by Rita's revoked phone that the hub refuses, so his copy
    // of the deal is kept apart under a permission conflict. Meanwhile the deal moves on at
    // the hub. Carl discards his copy: it goes back to what the hub vouched for, and the next
    // round brings it up to date, with no conflict left.
    let mut w = world();
    let deal = w.deal.clone();
    revoke(&w.hub, "rita-phone", T0 + 5);
    rename(&mut w.rita, &deal, "After revocation", T0 + 10);
    assert!(lan_at(&mut w.rita, &mut w.carl, &honest, T0 + 12).is_empty());
    assert_eq!(
        with_hub_at(&mut w.carl, &mut w.hub, &honest, T0 + 20),
        vec![deal.clone()]
    );
    let flagged = |n: &mut Node| {
        n.project(&deal)
            .unwrap()
            .unwrap()
            .conflicts
            .iter()
            .any(|c| matches!(c, Conflict::Permission { slot: None, .. }))
    };
    assert!(flagged(&mut w.carl));
    let mut tina = device(w._dir.path(), &w.hub, "tina-tab", 2);
    assert!(with_hub_at(&mut tina, &mut w.hub, &honest, T0 + 21).is_empty());
    rename(&mut tina, &deal, "Tina's name", T0 + 22);
    assert!(with_hub_at(&mut tina, &mut w.hub, &honest, T0 + 23).is_empty());

    assert!(w.carl.discard_local(&deal, T0 + 30).unwrap());
    assert!(!flagged(&mut w.carl));
    assert!(with_hub_at(&mut w.carl, &mut w.hub, &honest, T0 + 31).is_empty());
    assert_eq!(heads(&w.carl, &deal), heads(&w.hub, &deal));
    assert_eq!(
        name(&mut w.carl, &deal),
        Some(Value::Text("Tina's name".into()))
    );
    assert!(w.carl.project(&deal).unwrap().unwrap().conflicts.is_empty());
    // Carl's copy syncs again: his next edit reaches the hub.
    rename(&mut w.carl, &deal, "Carl's name", T0 + 40);
    assert!(with_hub_at(&mut w.carl, &mut w.hub, &honest, T0 + 41).is_empty());
    assert_eq!(
        name(&mut w.hub, &deal),
        Some(Value::Text("Carl's name".into()))
    );

    // A record without a permission conflict has no copy to discard: refused, unchanged.
    let before = heads(&w.carl, &deal);
    assert!(matches!(
        w.carl.discard_local(&deal, T0 + 50),
        Err(sellsync_service::NodeError::Refused(_))
    ));
    assert_eq!(heads(&w.carl, &deal), before);
}

#[test]
fn a_refused_record_the_hub_never_sent_is_removed_on_discard() {
    // Rita creates a deal and forges a register in it before its first sync: the hub refuses
    // the whole new record. Discarding removes it from her phone.
    let mut w = world();
    let theirs = create(&mut w.rita, "deal-forged", 2);
    forge(&mut w.rita, &theirs, "deal", |d| {
        put(
            d,
            "fields",
            "name",
            register("Forged", T0 + 5, 1, "rita-phone"),
        )
    });
    assert_eq!(
        with_hub(&mut w.rita, &mut w.hub, &honest),
        vec![theirs.clone()]
    );
    assert!(!w.rita.discard_local(&theirs, T0 + 10).unwrap());
    assert_eq!(w.rita.project(&theirs).unwrap(), None);
    assert!(with_hub(&mut w.rita, &mut w.hub, &honest).is_empty());
    assert_eq!(w.rita.project(&theirs).unwrap(), None);
    assert_eq!(heads(&w.rita, &w.deal), heads(&w.hub, &w.deal));
}

#[test]
fn a_replaced_phones_change_relayed_later_passes_on_a_receipt_from_before_the_replacement() {
    // Rita passes an edit to Carl over the LAN, then her phone is replaced: a new store with a
    // new key syncs with the hub, which keeps the old key with the time it was replaced.
    let mut w = world();
    let deal = w.deal.clone();
    rename(&mut w.rita, &deal, "From the old phone", T0 + 10);
    assert!(lan_at(&mut w.rita, &mut w.carl, &honest, T0 + 12).is_empty());
    let mut new_phone = device_in(w._dir.path(), "rita-phone-2", &w.hub, "rita-phone", 2);
    assert!(with_hub_at(&mut new_phone, &mut w.hub, &honest, T0 + 15).is_empty());
    assert!(with_hub_at(&mut w.carl, &mut w.hub, &honest, T0 + 20).is_empty());
    assert_eq!(
        name(&mut w.hub, &deal),
        Some(Value::Text("From the old phone".into()))
    );
    // The old phone edits again after it was replaced; Carl's receipt is dated after: refused.
    rename(&mut w.rita, &deal, "Old phone, later", T0 + 30);
    assert!(lan_at(&mut w.rita, &mut w.carl, &honest, T0 + 31).is_empty());
    let before = heads(&w.hub, &deal);
    assert_eq!(
        with_hub_at(&mut w.carl, &mut w.hub, &honest, T0 + 40),
        vec![deal.clone()]
    );
    assert_eq!(heads(&w.hub, &deal), before);
    // The new phone still syncs.
    assert!(with_hub_at(&mut new_phone, &mut w.hub, &honest, T0 + 45).is_empty());
    rename(&mut new_phone, &deal, "From the new phone", T0 + 50);
    assert!(with_hub_at(&mut new_phone, &mut w.hub, &honest, T0 + 51).is_empty());
    assert_eq!(heads(&w.hub, &deal), heads(&new_phone, &deal));
    assert_eq!(
        name(&mut w.hub, &deal),
        Some(Value::Text("From the new phone".into()))
    );
}

#[test]
fn a_change_that_came_through_the_hub_passes_over_the_lan_on_the_hubs_endorsement_alone() {
    // Carl renames Rita's deal and syncs with the hub; Rita gets it from the hub; Tina (of the
    // same team, whose tablet synced before the rename) gets it from Rita over the LAN. Carl's
    // change reaches Tina from Rita, who did not write it: only the hub's endorsement of the
    // deal's heads, which Rita kept, proves it.
    let relayed = |tamper: Tamper<'_>| {
        let mut w = world();
        let deal = w.deal.clone();
        let mut tina = device(w._dir.path(), &w.hub, "tina-tab", 2);
        assert!(with_hub(&mut tina, &mut w.hub, &honest).is_empty());
        rename(&mut w.carl, &deal, "Carl's name", T0 + 10);
        assert!(with_hub(&mut w.carl, &mut w.hub, &honest).is_empty());
        assert!(with_hub(&mut w.rita, &mut w.hub, &honest).is_empty());
        let before = heads(&tina, &deal);
        let refused = lan(&mut w.rita, &mut tina, tamper);
        (
            refused,
            before,
            heads(&tina, &deal),
            heads(&w.hub, &deal),
            name(&mut tina, &deal),
        )
    };
    let (refused, _, after, at_hub, name_at_tina) = relayed(&honest);
    assert!(refused.is_empty());
    assert_eq!(after, at_hub);
    assert_eq!(name_at_tina, Some(Value::Text("Carl's name".into())));

    // Without the endorsement, or with one by another hub, Tina keeps nothing of it.
    let stripped = |f: Vec<u8>| {
        resign(f, &|e| {
            let proofs = signed::decode(&e.signatures).unwrap();
            assert!(proofs.iter().any(|p| matches!(p, Proof::Hub { .. })));
            signed::encode(
                &proofs
                    .into_iter()
                    .filter(|p| !matches!(p, Proof::Hub { .. }))
                    .collect::<Vec<_>>(),
            )
        })
    };
    let other_hub = SigningKey::generate().unwrap();
    let foreign = |f: Vec<u8>| {
        resign(f, &|e| {
            let proofs: Vec<Proof> = signed::decode(&e.signatures)
                .unwrap()
                .into_iter()
                .map(|p| match p {
                    Proof::Hub { heads, .. } => Proof::hub(&other_hub, &heads).unwrap(),
                    p => p,
                })
                .collect();
            signed::encode(&proofs)
        })
    };
    for tamper in [&stripped as Tamper<'_>, &foreign] {
        let (refused, before, after, _, name_at_tina) = relayed(tamper);
        assert_eq!(refused, vec!["deal-rita".parse::<RecordId>().unwrap()]);
        assert_eq!(after, before);
        assert_eq!(name_at_tina, Some(Value::Text("Fair lead".into())));
    }
}

#[test]
fn a_change_by_a_user_who_may_not_see_the_record_is_refused_even_relayed_by_one_who_may() {
    let mut w = world();
    let deal = w.deal.clone();
    // Olga (user 4, in no team) may not see Rita's deal. A colleague who may hands her a copy
    // out of band; she writes herself in as the owner, signed with her own key, and the
    // colleague relays it to the hub under her signature.
    let dir = tempfile::tempdir().unwrap();
    let mut olga = device(dir.path(), &w.hub, "olga-phone", 4);
    assert!(with_hub(&mut olga, &mut w.hub, &honest).is_empty());
    let copy = w
        .carl
        .replica_ref()
        .docs()
        .with_doc(&deal, |d| d.save())
        .unwrap()
        .unwrap();
    let mut stolen = Automerge::load(&copy).unwrap();
    stolen.set_actor(sellsync_service::actor_of(&"olga-phone".parse().unwrap()));
    let before = stolen.get_heads();
    put(
        &mut stolen,
        "fields",
        "owner_id",
        serde_json::json!([4, T0 + 30, 4, "olga-phone"]).to_string(),
    );
    let change = stolen.get_changes(&before).pop().unwrap();
    let olga_key = SigningKey::from_pkcs8(
        &olga
            .store()
            .read()
            .unwrap()
            .kv_get(credential::DEVICE_KEY)
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    let sig = Proof::author(&olga_key, change.hash());
    forge(&mut w.carl, &deal, "deal", |d| {
        d.apply_changes([change.clone()]).unwrap()
    });
    w.carl
        .store()
        .write(|wr| {
            wr.kv_put(
                &format!("{}{}", signed::SIG_KEY, change.hash()),
                &signed::encode(&[sig]),
            )
        })
        .unwrap();
    let hub_before = heads(&w.hub, &deal);
    assert_eq!(
        with_hub(&mut w.carl, &mut w.hub, &honest),
        vec![deal.clone()]
    );
    assert_eq!(heads(&w.hub, &deal), hub_before);
    let owner = w
        .hub
        .project(&deal)
        .unwrap()
        .unwrap()
        .record
        .fields
        .get(&FieldKey::Std("owner_id".into()))
        .cloned();
    assert_eq!(owner, Some(Value::Ref(2)));
}

/// Takes `drop` out of the sync message for `doc` in a frame: the change and its author's
/// signature (as when the receiver's bloom filter wrongly claims it has the change).
fn without_change(frame: Vec<u8>, doc: &RecordId, drop: ChangeHash) -> Vec<u8> {
    let Ok(Frame::SyncBatch(mut b)) = Frame::decode(&frame, 1 << 30) else {
        return frame;
    };
    for e in &mut b.entries {
        if &e.doc != doc {
            continue;
        }
        let mut msg = automerge::sync::Message::decode(&e.message).unwrap();
        let kept: Vec<Vec<u8>> = msg
            .changes
            .iter()
            .filter(|c| automerge::Change::try_from(*c).unwrap().hash() != drop)
            .map(<[u8]>::to_vec)
            .collect();
        msg.changes = kept.into();
        e.message = msg.encode();
        let proofs: Vec<Proof> = signed::decode(&e.signatures)
            .unwrap()
            .into_iter()
            .filter(|p| !matches!(p, Proof::Author { hash, .. } if *hash == drop))
            .collect();
        e.signatures = signed::encode(&proofs);
    }
    Frame::SyncBatch(b).encode(1 << 30).unwrap()
}

#[test]
fn a_change_that_waited_for_its_dependency_keeps_the_signature_it_came_with() {
    let mut w = world();
    // Enough history that two new changes travel as changes, not as the whole document.
    for i in 0..8 {
        rename(&mut w.rita, &w.deal, &format!("Lead {i}"), T0 + i);
    }
    assert!(with_hub(&mut w.rita, &mut w.hub, &honest).is_empty());
    rename(&mut w.rita, &w.deal, "First", T0 + 100);
    let first = heads(&w.rita, &w.deal)[0];
    rename(&mut w.rita, &w.deal, "Second", T0 + 101);
    let second = heads(&w.rita, &w.deal)[0];
    // The second change arrives without the first: the hub holds it back, unapplied.
    let deal = w.deal.clone();
    let lacking_first = |f: Vec<u8>| without_change(f, &deal, first);
    assert!(with_hub(&mut w.rita, &mut w.hub, &lacking_first).is_empty());
    assert!(!heads(&w.hub, &w.deal).contains(&second));
    // The first arrives alone, with only its own signature: both apply, the second on the
    // signature it came with.
    let lacking_second = |f: Vec<u8>| without_change(f, &deal, second);
    assert!(with_hub(&mut w.rita, &mut w.hub, &lacking_second).is_empty());
    assert_eq!(heads(&w.hub, &w.deal), vec![second]);
    assert_eq!(
        name(&mut w.hub, &w.deal),
        Some(Value::Text("Second".into()))
    );
}
