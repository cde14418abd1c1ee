//! Write rules: what one change may do, given who made it.
//!
//! A device's changes carry its actor id (its device id), and a receiver that verified the
//! change's signature knows its author. These rules then say what that author may have written:
//!
//! - every register it writes names the author's own user (`by`) and device (`dev`);
//! - the audit is append-only: a change adds new entries and never deletes or rewrites one, and a
//!   manual entry names the author as the one who decided;
//! - only the hub writes the CRM's refusals (`flags`); a device may delete them (a retry);
//! - a resolution (an audit entry about a field) names as candidates only values that were
//!   written there when its author decided, as of the change's dependencies, and the candidate
//!   it says it chose is one of them ([`check_resolutions`]: it reads the document as the author
//!   saw it, so it needs the catalog and the policy).
//!
//! Whether the author may write the record at all (its user may see it) is the caller's
//! check: it depends on the access rules.
//!
//! The hub's own changes (and the bridge's, which writes as the hub) are not checked: the hub is
//! the authority that applies these rules.
//!
//! Pure: the change is read as it is; the document is only used to find the audit and flags maps.

use automerge::legacy::{Key, ObjectId, OpType};
use automerge::{Automerge, Change, ObjType, ROOT, ReadDoc, ScalarValue};

use crate::foreign::guarded;
use crate::project::AuditEntry;
use crate::register::unpack;
use crate::{Catalog, DeviceId, Policy, RecordDoc, UserId};

/// Who made a change, as its verified signature says.
#[derive(Debug, Clone, Copy)]
pub struct ChangeAuthor<'a> {
    /// The author's user.
    pub user: UserId,
    /// The author's device.
    pub device: &'a DeviceId,
}

/// Why a change breaks the write rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WriteViolation {
    /// A register names another user than the change's author.
    #[error("a value of {field} claims user {claimed}, but user {author} made the change")]
    ForgedUser {
        /// The key written.
        field: String,
        /// The user the register names.
        claimed: UserId,
        /// The change's author.
        author: UserId,
    },
    /// A register names another device than the change's author.
    #[error("a value of {field} claims device {claimed}, but {author} made the change")]
    ForgedDevice {
        /// The key written.
        field: String,
        /// The device the register names.
        claimed: String,
        /// The change's author.
        author: DeviceId,
    },
    /// The change deletes or rewrites an audit entry, or writes something else into the audit.
    #[error("the change deletes or rewrites audit entry {0} (the audit is append-only)")]
    AuditRewritten(String),
    /// A manual audit entry names another user or device than the change's author.
    #[error("audit entry {entry} claims a decision by another user or device than the author")]
    ForgedAudit {
        /// The entry's key.
        entry: String,
    },
    /// A device wrote a CRM refusal.
    #[error("only the hub records the CRM's refusals (flag {0})")]
    FlagWritten(String),
    /// An audit entry names a candidate that was not written on its field when its author
    /// decided (or says it chose one it does not list).
    #[error("audit entry {entry} names a value of {slot} that was never written there ({op})")]
    InventedCandidate {
        /// The entry's key.
        entry: String,
        /// The field.
        slot: String,
        /// The operation the entry names.
        op: String,
    },
    /// The change's operations cannot be read.
    #[error("the change cannot be read: {0}")]
    Unreadable(String),
}

/// The id of a root map of `doc` (audit, flags, fields), as the change format spells it.
fn root_map(doc: &Automerge, key: &str) -> Option<String> {
    match doc.get(ROOT, key).ok()?? {
        (automerge::Value::Object(ObjType::Map), id) => Some(id.to_string()),
        _ => None,
    }
}

fn key_str(key: &Key) -> Option<&str> {
    match key {
        Key::Map(s) => Some(s.as_str()),
        Key::Seq(_) => None,
    }
}

/// Checks `change`, made by `author`, against the write rules on `doc` (a document that holds
/// the change). Returns the audit entries it adds (for [`check_resolutions`]).
pub fn check_change(
    doc: &Automerge,
    change: &Change,
    author: ChangeAuthor<'_>,
) -> Result<Vec<AuditEntry>, WriteViolation> {
    let expanded = guarded(|| change.decode()).map_err(|p| WriteViolation::Unreadable(p.0))?;
    let audit = root_map(doc, "audit");
    let flags = root_map(doc, "flags");
    let mut added = Vec::new();
    for op in &expanded.operations {
        let obj = match &op.obj {
            ObjectId::Root => "_root".to_owned(),
            id => id.to_string(),
        };
        let key = key_str(&op.key).unwrap_or("").to_owned();
        if Some(&obj) == audit.as_ref() {
            let fresh = op.pred.is_empty();
            match &op.action {
                OpType::Put(ScalarValue::Str(json)) if fresh => {
                    let entry: AuditEntry = serde_json::from_str(json)
                        .map_err(|_| WriteViolation::AuditRewritten(key.clone()))?;
                    let by_author = entry.by.is_none_or(|u| u == author.user)
                        && entry.device.as_ref().is_none_or(|d| d == author.device)
                        && entry.by.is_some() == entry.device.is_some();
                    if !by_author || entry.id != key {
                        return Err(WriteViolation::ForgedAudit { entry: key });
                    }
                    added.push(entry);
                }
                _ => return Err(WriteViolation::AuditRewritten(key)),
            }
            continue;
        }
        if Some(&obj) == flags.as_ref() {
            if !matches!(op.action, OpType::Delete) {
                return Err(WriteViolation::FlagWritten(key));
            }
            continue;
        }
        match &op.action {
            OpType::Put(ScalarValue::Str(s)) => {
                // A packed register: `[value, at, by, device]`.
                if let Some(reg) = unpack(s) {
                    if reg.by != author.user {
                        return Err(WriteViolation::ForgedUser {
                            field: key,
                            claimed: reg.by,
                            author: author.user,
                        });
                    }
                    if &reg.device != author.device {
                        return Err(WriteViolation::ForgedDevice {
                            field: key,
                            claimed: reg.device.to_string(),
                            author: author.device.clone(),
                        });
                    }
                } else if key == "dev" && s.as_str() != author.device.as_str() {
                    return Err(WriteViolation::ForgedDevice {
                        field: key,
                        claimed: s.to_string(),
                        author: author.device.clone(),
                    });
                }
            }
            OpType::Put(value) if key == "by" => {
                let claimed = match value {
                    ScalarValue::Uint(u) => Some(*u),
                    ScalarValue::Int(i) => u64::try_from(*i).ok(),
                    _ => None,
                };
                if claimed != Some(author.user.0) {
                    return Err(WriteViolation::ForgedUser {
                        field: key,
                        claimed: UserId(claimed.unwrap_or(u64::MAX)),
                        author: author.user,
                    });
                }
            }
            _ => {}
        }
    }
    Ok(added)
}

/// Checks that every audit entry about a field that `change` adds (`added`, as
/// [`check_change`] returned them) names as candidates only values that were written on that
/// field as its author saw the record (the document at the change's dependencies), and that the
/// candidate it says it chose is one it names. `doc` holds the change. Reading the document as
/// it was costs a copy of its history: only changes that add such an entry pay it.
pub fn check_resolutions(
    doc: &Automerge,
    change: &Change,
    added: &[AuditEntry],
    catalog: &Catalog,
    policy: &Policy,
) -> Result<(), WriteViolation> {
    let entries: Vec<&AuditEntry> = added
        .iter()
        .filter(|e| e.slot.is_some() && (!e.candidates.is_empty() || e.chosen_op.is_some()))
        .collect();
    if entries.is_empty() {
        return Ok(());
    }
    let deps = change.deps().to_vec();
    let before = guarded(|| doc.fork_at(&deps))
        .map_err(|p| WriteViolation::Unreadable(p.0))?
        .map_err(|e| WriteViolation::Unreadable(e.to_string()))?;
    let reader: DeviceId = "check".parse().expect("a valid device id");
    let before = RecordDoc::from_automerge(before, &reader).ok();
    for entry in entries {
        let slot = entry.slot.as_ref().expect("filtered above");
        // Every register written on the field as the author saw it: its view (read with this
        // receiver's catalog) and its stored value.
        let written: Vec<(crate::Candidate, crate::value::Scalar)> = before
            .as_ref()
            .and_then(|d| {
                let snap = d.snapshot();
                let scope = match &slot.activity {
                    None => crate::Scope::Record,
                    Some(id) => snap.activity_scope(id)?,
                };
                let a = d.analyse_slot(&snap, catalog, policy, &scope, &slot.field);
                let stored = a.candidates.iter().map(|f| f.reg.value.clone());
                Some(a.candidate_views().into_iter().zip(stored).collect())
            })
            .unwrap_or_default();
        let invented = |op: &str| WriteViolation::InventedCandidate {
            entry: entry.id.clone(),
            slot: slot.to_string(),
            op: op.to_owned(),
        };
        // The value as this receiver reads it, or in its stored form: a catalog that types the
        // field differently on the author's device must not make an honest entry look invented.
        let same = |c: &crate::Candidate,
                    (w, stored): &(crate::Candidate, crate::value::Scalar)| {
            c.op == w.op
                && c.at == w.at
                && c.by == w.by
                && c.device == w.device
                && (c.value == w.value || c.value.to_scalar() == *stored)
        };
        if let Some(c) = entry
            .candidates
            .iter()
            .find(|c| !written.iter().any(|w| same(c, w)))
        {
            return Err(invented(&c.op));
        }
        if let Some(op) = &entry.chosen_op
            && !entry.candidates.iter().any(|c| &c.op == op)
        {
            return Err(invented(op));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        Author, Catalog, Edit, EditCtx, FieldKey, Policy, RecordDoc, RecordKind, RegisterLayout,
        Value,
    };

    const T0: i64 = 1_795_000_000_000;

    fn author(user: u64, device: &str) -> Author {
        Author {
            user: UserId(user),
            device: device.parse().unwrap(),
        }
    }

    /// A deal made by `rita` (user 2), in `layout`, with the changes since `heads`.
    fn deal(layout: RegisterLayout) -> (RecordDoc, Catalog, Policy) {
        let (catalog, policy) = (Catalog::example(), Policy::default());
        let rita = author(2, "rita-phone");
        let ctx = EditCtx {
            author: &rita,
            now_ms: T0,
            catalog: &catalog,
            policy: &policy,
        };
        let doc = RecordDoc::create(
            RecordKind::Deal,
            "deal-1".parse().unwrap(),
            layout,
            &ctx,
            vec![
                (FieldKey::Std("name".into()), Value::Text("Acme".into())),
                (FieldKey::Std("owner_id".into()), Value::Ref(2)),
            ],
        )
        .unwrap();
        (doc, catalog, policy)
    }

    fn changes_after(doc: &RecordDoc, heads: &[automerge::ChangeHash]) -> Vec<Change> {
        doc.automerge().get_changes(heads)
    }

    #[test]
    fn honest_edits_pass_and_the_same_changes_under_another_author_do_not() {
        for layout in [RegisterLayout::Packed, RegisterLayout::Object] {
            let (mut doc, catalog, policy) = deal(layout);
            let rita = author(2, "rita-phone");
            let device: DeviceId = "rita-phone".parse().unwrap();
            let who = ChangeAuthor {
                user: UserId(2),
                device: &device,
            };
            for c in changes_after(&doc, &[]) {
                assert!(check_change(doc.automerge(), &c, who).is_ok(), "{layout:?}");
            }
            let heads = doc.automerge().get_heads();
            let ctx = EditCtx {
                author: &rita,
                now_ms: T0 + 1,
                catalog: &catalog,
                policy: &policy,
            };
            doc.apply(
                &ctx,
                "give to carl, tag",
                &[
                    Edit::Set(FieldKey::Std("owner_id".into()), Value::Ref(3)),
                    Edit::AddTag("hot".into()),
                ],
            )
            .unwrap();
            for c in changes_after(&doc, &heads) {
                assert!(check_change(doc.automerge(), &c, who).is_ok(), "{layout:?}");
            }
            // The same changes claimed by another author break the rules.
            let carl: DeviceId = "carl-web".parse().unwrap();
            let other = ChangeAuthor {
                user: UserId(3),
                device: &carl,
            };
            let c = &changes_after(&doc, &heads)[0];
            assert!(matches!(
                check_change(doc.automerge(), c, other),
                Err(WriteViolation::ForgedUser { .. })
            ));
        }
    }

    /// Rita's deal after Rita and Carl wrote `slot` concurrently (`mine`, `theirs`), merged.
    fn concurrent(slot: &crate::Slot, mine: Value, theirs: Value) -> (RecordDoc, Catalog, Policy) {
        let (mut doc, catalog, policy) = deal(RegisterLayout::Packed);
        let carl = author(3, "carl-web");
        let mut other = RecordDoc::from_automerge(doc.automerge().clone(), &carl.device).unwrap();
        for (d, who, v) in [
            (&mut doc, author(2, "rita-phone"), mine),
            (&mut other, carl, theirs),
        ] {
            let ctx = EditCtx {
                author: &who,
                now_ms: T0 + 1,
                catalog: &catalog,
                policy: &policy,
            };
            d.apply(&ctx, "write", &[Edit::Set(slot.field.clone(), v)])
                .unwrap();
        }
        doc.merge(&mut other).unwrap();
        (doc, catalog, policy)
    }

    /// Rita's next change to `doc`, made by `f`, and the audit entries it adds.
    fn by_rita(
        doc: &mut RecordDoc,
        catalog: &Catalog,
        policy: &Policy,
        f: impl FnOnce(&mut RecordDoc, &EditCtx<'_>),
    ) -> (Change, Vec<AuditEntry>) {
        let heads = doc.automerge().get_heads();
        let rita = author(2, "rita-phone");
        let ctx = EditCtx {
            author: &rita,
            now_ms: T0 + 2,
            catalog,
            policy,
        };
        f(doc, &ctx);
        let change = changes_after(doc, &heads).pop().unwrap();
        let device: DeviceId = "rita-phone".parse().unwrap();
        let who = ChangeAuthor {
            user: UserId(2),
            device: &device,
        };
        let added = check_change(doc.automerge(), &change, who).unwrap();
        (change, added)
    }

    #[test]
    fn a_resolution_names_only_candidates_that_were_written() {
        use crate::{Choice, Money, Slot};
        use automerge::transaction::Transactable;
        let value = |cents| Value::Money(Money::from_cents(cents));
        let slot = Slot::record(FieldKey::Std("value".into()));
        // Rita and Carl set the value concurrently: a conflict, which Rita settles.
        let (mut doc, catalog, policy) = concurrent(&slot, value(5000), value(9000));
        let seen: Vec<String> = doc
            .field_candidates(&catalog, &policy, &slot)
            .into_iter()
            .map(|c| c.op)
            .collect();
        assert_eq!(seen.len(), 2);
        let (resolution, added) = by_rita(&mut doc, &catalog, &policy, |d, ctx| {
            d.resolve_field(ctx, &slot, &seen, Choice::Pick(2)).unwrap();
        });
        assert_eq!(
            check_resolutions(doc.automerge(), &resolution, &added, &catalog, &policy),
            Ok(())
        );
        let honest = added.last().unwrap().clone();

        // The same entry with a candidate's value changed, with a candidate no one wrote, or
        // choosing an operation it does not list: each is refused.
        let mut changed = honest.clone();
        changed.candidates[0].value = value(1);
        let mut invented = honest.clone();
        invented.candidates.push(crate::Candidate {
            op: "99@abcdef".into(),
            ..honest.candidates[0].clone()
        });
        let mut unlisted = honest.clone();
        unlisted.chosen_op = Some("98@abcdef".into());
        let rita_phone: DeviceId = "rita-phone".parse().unwrap();
        let as_rita = ChangeAuthor {
            user: UserId(2),
            device: &rita_phone,
        };
        for (n, mut forged) in [changed, invented, unlisted].into_iter().enumerate() {
            forged.id = format!("forged-{n}");
            let mut d = doc.automerge().clone();
            let audit = d.get(automerge::ROOT, "audit").unwrap().unwrap().1;
            let before = d.get_heads();
            let mut tx = d.transaction();
            tx.put(
                &audit,
                forged.id.as_str(),
                serde_json::to_string(&forged).unwrap(),
            )
            .unwrap();
            tx.commit();
            let change = d.get_changes(&before).pop().unwrap();
            let added = check_change(&d, &change, as_rita).unwrap();
            assert!(
                matches!(
                    check_resolutions(&d, &change, &added, &catalog, &policy),
                    Err(WriteViolation::InventedCandidate { .. })
                ),
                "forgery {n} passed"
            );
        }
    }

    #[test]
    fn a_resolution_read_with_another_catalog_passes() {
        use crate::Slot;
        // Rita and Carl set the custom number field "Seats" concurrently. The receiver's catalog
        // no longer knows "Seats" (removed in the CRM meanwhile), so it reads the candidates as
        // untyped: Rita's honest entry must still pass.
        let slot = Slot::record(FieldKey::Custom("Seats".into()));
        let number = |n: &str| Value::Number(n.into());
        let (mut doc, catalog, policy) = concurrent(&slot, number("3"), number("5"));
        // "Seats" resolves by time; Rita writing it again records that automatic resolution
        // (both candidates) in the audit, in the same change.
        let (change, added) = by_rita(&mut doc, &catalog, &policy, |d, ctx| {
            d.apply(ctx, "seats", &[Edit::Set(slot.field.clone(), number("7"))])
                .unwrap();
        });
        assert!(
            added.iter().any(|e| e.candidates.len() == 2),
            "the write records the automatic resolution: {added:?}"
        );
        let mut without_seats = catalog.clone();
        without_seats.custom_fields.clear();
        assert_eq!(
            check_resolutions(doc.automerge(), &change, &added, &without_seats, &policy),
            Ok(())
        );
    }
}
