//! Resolution: a person settles a conflict, or the tiers settle one by themselves; either way the
//! decision lands in the record's audit trail.

use automerge::transaction::Transactable;
use automerge::{ChangeHash, ROOT};

use crate::ActivityId;
use crate::doc::{RecordDoc, Scope, Slot, commit_options};
use crate::edit::{EditCtx, write_audit};
use crate::project::{
    AuditEntry, Chosen, Flag, FlagKind, Outcome, RecordState, activity_fingerprint, entry_id,
};
use crate::register;
use crate::validate;
use crate::value::{Scalar, Value};

/// How a person settles a field conflict.
#[derive(Debug, Clone, PartialEq)]
pub enum Choice {
    /// Keep the value written from this device.
    Mine,
    /// Keep the other value (there must be exactly one other distinct value).
    Theirs,
    /// Keep candidate number `n`, counting from 1 in the order the conflict lists them.
    Pick(usize),
    /// Write a new value (a merge typed by the person).
    Value(Value),
}

/// How a person settles a record conflict (delete against edit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordChoice {
    /// Keep the record, with every edit made concurrently with the delete.
    Restore,
    /// Delete it, knowing the edits it discards.
    ConfirmDelete,
}

/// What a retry of a CRM refusal is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefusalTarget {
    /// The record as a whole.
    Record,
    /// One field of the record.
    Field(Slot),
    /// A note, task or call (every refusal on it).
    Activity(ActivityId),
}

/// Why a resolution was refused. The document is unchanged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// The field (or record) has no open conflict.
    #[error("{0} has no open conflict")]
    NoConflict(String),
    /// The candidates changed since the person looked: show the conflict again.
    #[error("{0} changed since it was shown; look at the conflict again")]
    Changed(String),
    /// `Mine` with no candidate from this device.
    #[error("{0}: none of the candidates was written on this device")]
    NoMine(String),
    /// `Theirs` with several other values.
    #[error("{0}: there are several other values; pick one by number")]
    AmbiguousTheirs(String),
    /// A candidate number out of range.
    #[error("{slot}: candidate {n} does not exist (there are {count})")]
    BadPick {
        /// The field.
        slot: String,
        /// The number given.
        n: usize,
        /// How many candidates there are.
        count: usize,
    },
    /// The typed value is not accepted.
    #[error("{slot}: {reason}")]
    Invalid {
        /// The field.
        slot: String,
        /// Why.
        reason: String,
    },
    /// No such activity.
    #[error("no activity {0}")]
    UnknownActivity(String),
    /// The document refused the write.
    #[error("document: {0}")]
    Automerge(#[from] automerge::AutomergeError),
}

impl RecordDoc {
    /// Settles the field conflict on `slot`. `seen` lists the candidate operations the person
    /// was shown (from the projection's conflict): if the candidates are no longer exactly those,
    /// nothing is written and [`ResolveError::Changed`] asks to look again.
    ///
    /// The choice is written as one new register that supersedes every candidate seen, together
    /// with an audit entry, in one change. A write concurrent with it re-opens the conflict.
    pub fn resolve_field(
        &mut self,
        ctx: &EditCtx<'_>,
        slot: &Slot,
        seen: &[String],
        choice: Choice,
    ) -> Result<ChangeHash, ResolveError> {
        let name = slot.to_string();
        let snap = self.snapshot();
        let scope = match &slot.activity {
            None => Scope::Record,
            Some(id) => snap
                .activity_scope(id)
                .ok_or_else(|| ResolveError::UnknownActivity(id.to_string()))?,
        };
        let a = self.analyse_slot(&snap, ctx.catalog, ctx.policy, &scope, &slot.field);
        if a.outcome != Outcome::Conflict {
            return Err(ResolveError::NoConflict(name));
        }
        let ops = a.ops();
        if !same_set(&ops, seen) {
            return Err(ResolveError::Changed(name));
        }
        let values: Vec<Value> = a.candidate_views().into_iter().map(|c| c.value).collect();
        let (value, chosen_op) = match choice {
            Choice::Mine => {
                let i = a
                    .candidates
                    .iter()
                    .rposition(|c| c.reg.device == ctx.author.device)
                    .ok_or_else(|| ResolveError::NoMine(name.clone()))?;
                (values[i].clone(), Some(ops[i].clone()))
            }
            Choice::Theirs => {
                let mine: Vec<&Value> = a
                    .candidates
                    .iter()
                    .zip(&values)
                    .filter(|(c, _)| c.reg.device == ctx.author.device)
                    .map(|(_, v)| v)
                    .collect();
                let mut others: Vec<usize> = (0..values.len())
                    .filter(|i| !mine.contains(&&values[*i]))
                    .collect();
                others.dedup_by(|x, y| values[*x] == values[*y]);
                let distinct: std::collections::BTreeSet<&Value> =
                    others.iter().map(|i| &values[*i]).collect();
                match (distinct.len(), others.last()) {
                    (1, Some(&i)) => (values[i].clone(), Some(ops[i].clone())),
                    _ => return Err(ResolveError::AmbiguousTheirs(name)),
                }
            }
            Choice::Pick(n) => {
                if n == 0 || n > values.len() {
                    return Err(ResolveError::BadPick {
                        slot: name,
                        n,
                        count: values.len(),
                    });
                }
                (values[n - 1].clone(), Some(ops[n - 1].clone()))
            }
            Choice::Value(v) => {
                let def = validate::field_def(ctx.catalog, self.kind, &scope, &slot.field)
                    .ok_or_else(|| ResolveError::Invalid {
                        slot: name.clone(),
                        reason: "no such field".into(),
                    })?;
                validate::check(ctx.catalog, def, &v).map_err(|reason| ResolveError::Invalid {
                    slot: name.clone(),
                    reason,
                })?;
                (v, None)
            }
        };
        let at = snap.next_at(ctx.now_ms);
        let entry = AuditEntry {
            id: entry_id(&[
                "manual",
                &name,
                &ops.join(","),
                ctx.author.device.as_str(),
                &at.to_string(),
            ]),
            slot: Some(slot.clone()),
            policy: a.tier.as_str().to_owned(),
            candidates: a.candidate_views(),
            chosen: Chosen::Value(value.clone()),
            chosen_op,
            by: Some(ctx.author.user),
            device: Some(ctx.author.device.clone()),
            at,
        };
        let reg = self.stored(value.to_scalar(), at, ctx.author);
        let custom = matches!(slot.field, crate::FieldKey::Custom(_));
        let obj = match &slot.activity {
            None if custom => self.objs.custom.clone(),
            None => self.objs.fields.clone(),
            Some(id) => snap
                .activities
                .get(id)
                .and_then(|a| a.fields_obj.clone())
                .ok_or_else(|| ResolveError::UnknownActivity(name.clone()))?,
        };
        let layout = self.layout;
        let audit = self.objs.audit.clone();
        let key = slot.field.name().to_owned();
        let message = format!("resolve {name}");
        self.commit(&message, ctx.now_ms, |tx| {
            register::write(tx, layout, &obj, &key, &reg)?;
            write_audit(tx, &audit, &entry)?;
            tx.increment(ROOT, "edits", 1)
        })
    }

    /// Settles a record conflict (delete against edits). `seen` lists the operations of the
    /// delete and restore candidates shown, as for fields.
    pub fn resolve_record(
        &mut self,
        ctx: &EditCtx<'_>,
        seen: &[String],
        choice: RecordChoice,
    ) -> Result<ChangeHash, ResolveError> {
        let snap = self.snapshot();
        let d = self.analyse_deletion(&snap);
        if d.state != RecordState::InConflict {
            return Err(ResolveError::NoConflict("the record".into()));
        }
        if !same_set(&d.ops, seen) {
            return Err(ResolveError::Changed("the record".into()));
        }
        let total = i64::try_from(snap.edits).unwrap_or(i64::MAX);
        let at = snap.next_at(ctx.now_ms);
        let (value, chosen) = match choice {
            RecordChoice::Restore => (Scalar::Null, Chosen::Restore),
            RecordChoice::ConfirmDelete => (Scalar::Int(total), Chosen::Delete),
        };
        let mut candidates = d.deletes.clone();
        candidates.extend(d.restores.iter().cloned());
        let entry = AuditEntry {
            id: entry_id(&[
                "record",
                &d.ops.join(","),
                ctx.author.device.as_str(),
                &at.to_string(),
            ]),
            slot: None,
            policy: "record".into(),
            candidates,
            chosen,
            chosen_op: None,
            by: Some(ctx.author.user),
            device: Some(ctx.author.device.clone()),
            at,
        };
        let reg = self.stored(value, at, ctx.author);
        let layout = self.layout;
        let audit = self.objs.audit.clone();
        let message = match choice {
            RecordChoice::Restore => "record conflict: restored with changes",
            RecordChoice::ConfirmDelete => "record conflict: delete confirmed",
        };
        self.commit(message, ctx.now_ms, |tx| {
            register::write(tx, layout, &ROOT, "deleted", &reg)?;
            write_audit(tx, &audit, &entry)
        })
    }

    /// Records in the audit trail every automatic resolution (lww, notify, keep-server) that the
    /// document implies and that is not recorded yet. Run after a merge. Entries have ids derived
    /// from their content, so replicas that record the same resolution converge on one entry.
    /// Returns `None` when there was nothing to record.
    pub fn record_automatic_resolutions(
        &mut self,
        ctx: &EditCtx<'_>,
    ) -> Result<Option<ChangeHash>, automerge::AutomergeError> {
        let (now_ms, catalog, policy) = (ctx.now_ms, ctx.catalog, ctx.policy);
        let snap = self.snapshot();
        let stored = RecordDoc::stored_audit(&snap);
        let pending: Vec<AuditEntry> = self
            .analyse_all(&snap, catalog, policy)
            .iter()
            .filter_map(|a| a.automatic_entry())
            .filter(|e| !stored.contains_key(&e.id))
            .collect();
        if pending.is_empty() {
            return Ok(None);
        }
        let audit = self.objs.audit.clone();
        let message = format!("audit: {} automatic resolution(s)", pending.len());
        let result = self
            .doc
            .transact_with::<_, _, automerge::AutomergeError, _>(
                |_| commit_options(&message, now_ms),
                |tx| {
                    for e in &pending {
                        write_audit(tx, &audit, e)?;
                    }
                    Ok(())
                },
            );
        result.map(|s| s.hash).map_err(|f| f.error)
    }

    /// Records that the CRM refused the current value of `slot` (or the record, for `None`).
    /// The flag is shown as a validation or permission conflict until the field is written again
    /// or the flag is retried. A slot of an activity flags the activity (see
    /// [`RecordDoc::report_activity_rejection`]).
    pub fn report_rejection(
        &mut self,
        ctx: &EditCtx<'_>,
        slot: Option<&Slot>,
        kind: FlagKind,
        message: &str,
    ) -> Result<ChangeHash, ResolveError> {
        if let Some(Slot {
            activity: Some(id),
            field,
        }) = slot
        {
            return self.report_activity_rejection(ctx, id, Some(field), kind, message);
        }
        let (now_ms, catalog, policy) = (ctx.now_ms, ctx.catalog, ctx.policy);
        let against = match slot {
            None => Vec::new(),
            Some(slot) => {
                let snap = self.snapshot();
                self.analyse_slot(&snap, catalog, policy, &Scope::Record, &slot.field)
                    .ops()
            }
        };
        let flag = Flag {
            kind,
            slot: slot.cloned(),
            activity: None,
            message: message.to_owned(),
            against,
            at: now_ms,
        };
        self.put_flag(now_ms, &flag)
    }

    /// Records that the CRM refused a note, task or call (naming `field`, if it named one). The
    /// activity is held back from the CRM, alone, and shown as a [`Conflict::Refused`] until it
    /// is edited, deleted or retried.
    ///
    /// [`Conflict::Refused`]: crate::Conflict::Refused
    pub fn report_activity_rejection(
        &mut self,
        ctx: &EditCtx<'_>,
        activity: &ActivityId,
        field: Option<&crate::FieldKey>,
        kind: FlagKind,
        message: &str,
    ) -> Result<ChangeHash, ResolveError> {
        let snap = self.snapshot();
        let fingerprint = activity_fingerprint(&snap, activity)
            .ok_or_else(|| ResolveError::UnknownActivity(activity.to_string()))?;
        let flag = Flag {
            kind,
            slot: field.map(|f| Slot {
                activity: Some(activity.clone()),
                field: f.clone(),
            }),
            activity: Some(activity.clone()),
            message: message.to_owned(),
            against: vec![fingerprint],
            at: ctx.now_ms,
        };
        self.put_flag(ctx.now_ms, &flag)
    }

    /// A person asks for what the CRM refused to be sent again as it is: removes the refusal's
    /// flags on `target`. If the CRM refuses again, the bridge reports it again.
    pub fn retry_refused(
        &mut self,
        ctx: &EditCtx<'_>,
        target: &RefusalTarget,
    ) -> Result<ChangeHash, ResolveError> {
        let snap = self.snapshot();
        let keys: Vec<String> = snap
            .flags
            .iter()
            .filter_map(|(key, json)| {
                let flag = serde_json::from_str::<Flag>(json).ok()?;
                let hit = match (target, flag.activity()) {
                    (RefusalTarget::Activity(id), Some(a)) => *id == a,
                    (RefusalTarget::Field(slot), None) => flag.slot.as_ref() == Some(slot),
                    (RefusalTarget::Record, None) => flag.slot.is_none(),
                    _ => false,
                };
                hit.then(|| key.clone())
            })
            .collect();
        let name = match target {
            RefusalTarget::Record => "the record".to_owned(),
            RefusalTarget::Field(slot) => slot.to_string(),
            RefusalTarget::Activity(id) => id.to_string(),
        };
        if keys.is_empty() {
            return Err(ResolveError::NoConflict(name));
        }
        let flags = self.objs.flags.clone();
        self.commit(&format!("retry {name}"), ctx.now_ms, |tx| {
            for key in &keys {
                tx.delete(&flags, key.as_str())?;
            }
            Ok(())
        })
    }

    fn put_flag(&mut self, now_ms: i64, flag: &Flag) -> Result<ChangeHash, ResolveError> {
        let name = match (&flag.activity, &flag.slot) {
            (Some(id), _) => format!("activity {id}"),
            (None, Some(slot)) => slot.to_string(),
            (None, None) => "record".to_owned(),
        };
        let key = entry_id(&["flag", &name]);
        // A flag is plain data; serialising it cannot fail.
        let json = serde_json::to_string(flag).unwrap_or_default();
        let flags = self.objs.flags.clone();
        self.commit(&format!("crm refused {name}"), now_ms, |tx| {
            tx.put(&flags, key.as_str(), json)
        })
    }

    /// Records the CRM's id for the record. Written once, by the bridge.
    pub fn set_crm_id(
        &mut self,
        now_ms: i64,
        crm_id: u64,
    ) -> Result<Option<ChangeHash>, automerge::AutomergeError> {
        if self.crm_id() == Some(crm_id) {
            return Ok(None);
        }
        let result = self
            .doc
            .transact_with::<_, _, automerge::AutomergeError, _>(
                |_| commit_options("crm id recorded", now_ms),
                |tx| tx.put(ROOT, "crm_id", crm_id),
            );
        result.map(|s| s.hash).map_err(|f| f.error)
    }

    /// Records the CRM's id for a note, task or call. `Ok(None)` when it is recorded already;
    /// an unknown activity is an error and writes nothing.
    pub fn set_activity_crm_id(
        &mut self,
        now_ms: i64,
        activity: &ActivityId,
        crm_id: u64,
    ) -> Result<Option<ChangeHash>, ResolveError> {
        let snap = self.snapshot();
        let Some(found) = snap.activities.get(activity) else {
            return Err(ResolveError::UnknownActivity(activity.to_string()));
        };
        if found.crm_id == Some(crm_id) {
            return Ok(None);
        }
        let obj = crate::doc::map_at(&self.doc, &self.objs.activities, activity.as_str())
            .ok_or_else(|| ResolveError::UnknownActivity(activity.to_string()))?;
        self.commit(&format!("crm id of {activity} recorded"), now_ms, |tx| {
            tx.put(&obj, "crm_id", crm_id)
        })
        .map(Some)
    }

    fn commit<F>(&mut self, message: &str, now_ms: i64, f: F) -> Result<ChangeHash, ResolveError>
    where
        F: FnOnce(
            &mut automerge::transaction::Transaction<'_>,
        ) -> Result<(), automerge::AutomergeError>,
    {
        let result = self
            .doc
            .transact_with::<_, _, automerge::AutomergeError, _>(
                |_| commit_options(message, now_ms),
                f,
            );
        match result {
            // A transaction that wrote something always yields a hash.
            Ok(s) => s
                .hash
                .ok_or(ResolveError::NoConflict("nothing written".into())),
            Err(f) => Err(ResolveError::Automerge(f.error)),
        }
    }
}

fn same_set(a: &[String], b: &[String]) -> bool {
    let mut a: Vec<&String> = a.iter().collect();
    let mut b: Vec<&String> = b.iter().collect();
    a.sort();
    b.sort();
    a == b
}

#[cfg(test)]
mod bridge_support_tests {
    use crate::{
        ActivityId, Author, Catalog, DeviceId, Edit, EditCtx, FieldKey, Policy, RecordDoc,
        RecordId, RecordKind, RegisterLayout, UserId, Value,
    };

    fn doc_with_note() -> (RecordDoc, Author) {
        let author = Author {
            user: UserId(2),
            device: "phone".parse().unwrap(),
        };
        let (catalog, policy) = (Catalog::default(), Policy::default());
        let ctx = EditCtx {
            author: &author,
            now_ms: 1_000,
            catalog: &catalog,
            policy: &policy,
        };
        let id: RecordId = "d1".parse().unwrap();
        let mut doc = RecordDoc::create(
            RecordKind::Deal,
            id,
            RegisterLayout::Packed,
            &ctx,
            vec![(FieldKey::std("name"), Value::Text("D".into()))],
        )
        .unwrap();
        let note: ActivityId = "n1".parse().unwrap();
        doc.apply(
            &ctx,
            "note",
            &[Edit::AddNote {
                id: note,
                content: "hi".into(),
            }],
        )
        .unwrap();
        (doc, author)
    }

    #[test]
    fn activity_crm_id_is_recorded_once_and_unknown_activity_is_refused() {
        let (mut doc, _) = doc_with_note();
        let note: ActivityId = "n1".parse().unwrap();
        assert!(doc.set_activity_crm_id(2_000, &note, 77).unwrap().is_some());
        assert!(doc.set_activity_crm_id(2_001, &note, 77).unwrap().is_none());
        let (catalog, policy) = (Catalog::default(), Policy::default());
        let p = doc.project(&crate::ProjectCtx {
            catalog: &catalog,
            policy: &policy,
            directory: &crate::AssumeLive,
        });
        assert_eq!(p.record.activities[0].crm_id, Some(77));
        let heads = doc.heads();
        assert!(
            doc.set_activity_crm_id(3_000, &"nope".parse().unwrap(), 1)
                .is_err()
        );
        assert_eq!(doc.heads(), heads);
    }

    #[test]
    fn a_change_on_a_fork_at_old_heads_is_concurrent_with_later_changes() {
        let (mut doc, author) = doc_with_note();
        let old = doc.heads();
        let (catalog, policy) = (Catalog::default(), Policy::default());
        let ctx = EditCtx {
            author: &author,
            now_ms: 5_000,
            catalog: &catalog,
            policy: &policy,
        };
        doc.apply(
            &ctx,
            "hot",
            &[Edit::Set(FieldKey::std("hot"), Value::Bool(true))],
        )
        .unwrap();
        let later = doc.heads();
        let mut fork = doc.fork_at(&old, &DeviceId::crm()).unwrap();
        let crm = Author {
            user: UserId(3),
            device: DeviceId::crm(),
        };
        let ctx = EditCtx {
            author: &crm,
            ..ctx
        };
        fork.apply(
            &ctx,
            "crm",
            &[Edit::Set(FieldKey::std("name"), Value::Text("E".into()))],
        )
        .unwrap();
        doc.merge(&mut fork).unwrap();
        let heads = doc.heads();
        assert_eq!(heads.len(), 2);
        assert!(later.iter().all(|h| heads.contains(h)));
    }
}
