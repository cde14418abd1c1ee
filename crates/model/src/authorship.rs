//! Write rules: what one change may do, given who made it.
//!
//! A device's changes carry its actor id (its device id), and a receiver that verified the
//! change's signature knows its author. These rules then say what that author may have written:
//!
//! - every register it writes names the author's own user (`by`) and device (`dev`);
//! - the audit is append-only: a change adds new entries and never deletes or rewrites one, and a
//!   manual entry names the author as the one who decided;
//! - only the hub writes the CRM's refusals (`flags`); a device may delete them (a retry).
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
use crate::{DeviceId, UserId};

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
/// the change).
pub fn check_change(
    doc: &Automerge,
    change: &Change,
    author: ChangeAuthor<'_>,
) -> Result<(), WriteViolation> {
    let expanded = guarded(|| change.decode()).map_err(|p| WriteViolation::Unreadable(p.0))?;
    let audit = root_map(doc, "audit");
    let flags = root_map(doc, "flags");
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
                assert_eq!(check_change(doc.automerge(), &c, who), Ok(()), "{layout:?}");
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
                assert_eq!(check_change(doc.automerge(), &c, who), Ok(()), "{layout:?}");
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
}
