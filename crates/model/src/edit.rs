//! The edit API: a user action becomes one validated Automerge change, or a typed error and no
//! change at all.

use automerge::transaction::Transactable;
use automerge::{ChangeHash, ObjType, ROOT, ReadDoc};

use crate::catalog::Catalog;
use crate::doc::{Author, RecordDoc, Scope, Slot, commit_options, map_at, text_at};
use crate::policy::Policy;
use crate::project::{AuditEntry, Outcome, RecordState};
use crate::register::{self, RegisterLayout};
use crate::schema::{self, ActivityKind, FieldKey, RecordKind};
use crate::snapshot::Snapshot;
use crate::validate::{self, FieldDef};
use crate::value::{Scalar, Value};
use crate::{ActivityId, RecordId};

/// What an edit needs besides the document: who, when, and what to validate against.
#[derive(Debug, Clone, Copy)]
pub struct EditCtx<'a> {
    /// The user and device making the change.
    pub author: &'a Author,
    /// The wall clock, ms since the epoch (the hybrid clock never goes below it).
    pub now_ms: i64,
    /// Values are validated against it.
    pub catalog: &'a Catalog,
    /// Decides which fields are in open conflict.
    pub policy: &'a Policy,
}

/// One part of a user action.
#[derive(Debug, Clone, PartialEq)]
pub enum Edit {
    /// Set a field of the record.
    Set(FieldKey, Value),
    /// Add a tag (a no-op if present).
    AddTag(String),
    /// Remove a tag (a no-op if absent).
    RemoveTag(String),
    /// Create a note.
    AddNote {
        /// Its new, unique id.
        id: ActivityId,
        /// Its text.
        content: String,
    },
    /// Edit a note's text in place: at `pos` (in characters) remove `delete` characters and
    /// insert `insert`. Concurrent splices of one note merge.
    SpliceNote {
        /// The note.
        id: ActivityId,
        /// Position in characters.
        pos: usize,
        /// Characters to remove.
        delete: usize,
        /// Text to insert.
        insert: String,
    },
    /// Replace a note's text; the difference is applied as splices.
    SetNoteText {
        /// The note.
        id: ActivityId,
        /// The new text.
        text: String,
    },
    /// Create a task or a call with its fields.
    AddActivity {
        /// Its new, unique id.
        id: ActivityId,
        /// Task or call (notes use [`Edit::AddNote`]).
        kind: ActivityKind,
        /// Its fields.
        fields: Vec<(FieldKey, Value)>,
    },
    /// Set a field of a task or call.
    SetActivity {
        /// The activity.
        id: ActivityId,
        /// The field.
        field: FieldKey,
        /// The value.
        value: Value,
    },
    /// Delete a note, task or call (its content stays in the document's history and audit).
    DeleteActivity(ActivityId),
    /// Delete the record. Must be the only edit of its action.
    DeleteRecord,
}

/// Why an edit was refused. The document is unchanged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EditError {
    /// No such field on this record or activity.
    #[error("{owner} has no field {field:?}")]
    UnknownField {
        /// `deal`, `contact`, `task`, `call`.
        owner: String,
        /// The field as given.
        field: String,
    },
    /// The value is not accepted.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field.
        field: String,
        /// Why, in words a person can act on.
        reason: String,
    },
    /// The field can only be given when the record is created.
    #[error("{field} can only be set when the record is created")]
    CreateOnly {
        /// The field.
        field: String,
    },
    /// The field has an open conflict: resolve it instead.
    #[error("{slot} is in conflict; resolve it first (see `conflicts`)")]
    InConflict {
        /// The field.
        slot: Slot,
    },
    /// The record is deleted, or its deletion is in conflict.
    #[error("the record is deleted{}", if *.in_conflict { " while others edited it; resolve the record conflict first" } else { "" })]
    Deleted {
        /// Whether a record conflict is open.
        in_conflict: bool,
    },
    /// No such activity.
    #[error("no activity {0}")]
    UnknownActivity(ActivityId),
    /// An activity with this id exists already.
    #[error("activity {0} exists already")]
    ActivityExists(ActivityId),
    /// The activity is not of the kind the edit needs.
    #[error("activity {id} is a {kind}, not a {wanted}")]
    WrongActivity {
        /// The activity.
        id: ActivityId,
        /// What it is.
        kind: ActivityKind,
        /// What the edit needs.
        wanted: &'static str,
    },
    /// A splice outside the note's text.
    #[error("note {id} has {len} characters; cannot remove {delete} at {pos}")]
    OutOfBounds {
        /// The note.
        id: ActivityId,
        /// Its length in characters.
        len: usize,
        /// Requested position.
        pos: usize,
        /// Requested removal.
        delete: usize,
    },
    /// A tag that is empty, too long or has control characters.
    #[error("bad tag {0:?}: 1 to 128 characters, no control characters")]
    BadTag(String),
    /// A record delete combined with other edits.
    #[error("a delete must be an action of its own")]
    DeleteNotAlone,
    /// The document itself refused the write (a bug or a corrupt document).
    #[error("document: {0}")]
    Automerge(#[from] automerge::AutomergeError),
}

/// A write decided by planning, carried out in the transaction.
enum Planned {
    Register {
        scope: Scope,
        key: FieldKey,
        value: Scalar,
    },
    AddTag(String),
    RemoveTag(String),
    NewActivity {
        id: ActivityId,
        kind: ActivityKind,
        content: Option<String>,
        fields: Vec<(FieldKey, Scalar)>,
    },
    Splice {
        id: ActivityId,
        pos: usize,
        delete: usize,
        insert: String,
    },
    SetText {
        id: ActivityId,
        text: String,
    },
    DeleteActivity(ActivityId),
    DeleteRecord {
        seen: i64,
    },
    Audit(AuditEntry),
}

impl RecordDoc {
    /// Creates a record: the birth change, then its initial fields as one validated edit. Fields
    /// that may only be set at creation (a contact's `is_organization`) are accepted here.
    pub fn create(
        kind: RecordKind,
        id: RecordId,
        layout: RegisterLayout,
        ctx: &EditCtx<'_>,
        fields: Vec<(FieldKey, Value)>,
    ) -> Result<RecordDoc, EditError> {
        let mut doc = RecordDoc::birth(kind, id, layout, ctx.author, ctx.now_ms);
        for spec in schema::record_fields(kind).iter().filter(|s| s.required) {
            let given = fields.iter().any(|(k, v)| {
                k.name() == spec.name && matches!(k, FieldKey::Std(_)) && !is_blank(v)
            });
            if !given {
                return Err(EditError::Invalid {
                    field: spec.name.into(),
                    reason: "is required".into(),
                });
            }
        }
        let edits: Vec<Edit> = fields.into_iter().map(|(k, v)| Edit::Set(k, v)).collect();
        doc.apply_inner(ctx, &format!("{kind}: initial fields"), &edits, true)?;
        Ok(doc)
    }

    /// Applies one user action as one change. Fields whose value does not change are not written
    /// (a blind write would silently settle a conflict). Returns the change's hash, or `None`
    /// when nothing needed writing.
    pub fn apply(
        &mut self,
        ctx: &EditCtx<'_>,
        message: &str,
        edits: &[Edit],
    ) -> Result<Option<ChangeHash>, EditError> {
        self.apply_inner(ctx, message, edits, false)
    }

    fn apply_inner(
        &mut self,
        ctx: &EditCtx<'_>,
        message: &str,
        edits: &[Edit],
        creating: bool,
    ) -> Result<Option<ChangeHash>, EditError> {
        let snap = self.snapshot();
        let plan = self.plan(ctx, &snap, edits, creating)?;
        if plan.is_empty() {
            return Ok(None);
        }
        let at = snap.next_at(ctx.now_ms);
        let counts_as_edit = plan
            .iter()
            .any(|p| !matches!(p, Planned::Audit(_) | Planned::DeleteRecord { .. }));
        let layout = self.layout;
        let objs = self.objs.clone();
        let author = ctx.author.clone();
        let stored = |value: Scalar| crate::register::StoredRegister {
            value,
            at,
            by: author.user,
            device: author.device.clone(),
        };
        let writes = plan;
        let fields_of = |tx: &mut automerge::transaction::Transaction<'_>,
                         scope: &Scope,
                         key: &FieldKey|
         -> Result<automerge::ObjId, automerge::AutomergeError> {
            match scope {
                Scope::Record => Ok(if matches!(key, FieldKey::Custom(_)) {
                    objs.custom.clone()
                } else {
                    objs.fields.clone()
                }),
                Scope::Activity { id, .. } => {
                    let act = map_at(tx, &objs.activities, id.as_str())
                        .ok_or(automerge::AutomergeError::InvalidObjId(id.to_string()))?;
                    map_at(tx, &act, "fields")
                        .ok_or(automerge::AutomergeError::InvalidObjId(id.to_string()))
                }
            }
        };
        let result = self
            .doc
            .transact_with::<_, _, automerge::AutomergeError, _>(
                |_| commit_options(message, ctx.now_ms),
                |tx| {
                    for w in &writes {
                        match w {
                            Planned::Register { scope, key, value } => {
                                let obj = fields_of(tx, scope, key)?;
                                register::write(
                                    tx,
                                    layout,
                                    &obj,
                                    key.name(),
                                    &stored(value.clone()),
                                )?;
                            }
                            Planned::AddTag(tag) => register::write(
                                tx,
                                layout,
                                &objs.tags,
                                tag,
                                &stored(Scalar::Bool(true)),
                            )?,
                            Planned::RemoveTag(tag) => tx.delete(&objs.tags, tag.as_str())?,
                            Planned::NewActivity {
                                id,
                                kind,
                                content,
                                fields,
                            } => {
                                let obj =
                                    tx.put_object(&objs.activities, id.as_str(), ObjType::Map)?;
                                tx.put(&obj, "kind", kind.as_str())?;
                                register::write(
                                    tx,
                                    layout,
                                    &obj,
                                    "born",
                                    &stored(Scalar::Str(kind.as_str().into())),
                                )?;
                                let fobj = tx.put_object(&obj, "fields", ObjType::Map)?;
                                if let Some(text) = content {
                                    let t = tx.put_object(&obj, "content", ObjType::Text)?;
                                    tx.splice_text(&t, 0, 0, text)?;
                                }
                                for (key, value) in fields {
                                    register::write(
                                        tx,
                                        layout,
                                        &fobj,
                                        key.name(),
                                        &stored(value.clone()),
                                    )?;
                                }
                            }
                            Planned::Splice {
                                id,
                                pos,
                                delete,
                                insert,
                            } => {
                                let t = note_text(tx, &objs.activities, id)?;
                                tx.splice_text(
                                    &t,
                                    *pos,
                                    isize::try_from(*delete).unwrap_or(isize::MAX),
                                    insert,
                                )?;
                            }
                            Planned::SetText { id, text } => {
                                let t = note_text(tx, &objs.activities, id)?;
                                tx.update_text(&t, text)?;
                            }
                            Planned::DeleteActivity(id) => {
                                let obj = map_at(tx, &objs.activities, id.as_str()).ok_or(
                                    automerge::AutomergeError::InvalidObjId(id.to_string()),
                                )?;
                                register::write(
                                    tx,
                                    layout,
                                    &obj,
                                    "deleted",
                                    &stored(Scalar::Bool(true)),
                                )?;
                            }
                            Planned::DeleteRecord { seen } => register::write(
                                tx,
                                layout,
                                &ROOT,
                                "deleted",
                                &stored(Scalar::Int(*seen)),
                            )?,
                            Planned::Audit(entry) => write_audit(tx, &objs.audit, entry)?,
                        }
                    }
                    if counts_as_edit {
                        tx.increment(ROOT, "edits", 1)?;
                    }
                    Ok(())
                },
            );
        match result {
            Ok(success) => Ok(success.hash),
            Err(failure) => Err(EditError::Automerge(failure.error)),
        }
    }

    /// Checks every edit against the document, the catalog and the policy, and decides what to
    /// write. Reads only.
    fn plan(
        &self,
        ctx: &EditCtx<'_>,
        snap: &Snapshot,
        edits: &[Edit],
        creating: bool,
    ) -> Result<Vec<Planned>, EditError> {
        let deletion = self.analyse_deletion(snap);
        if deletion.state != RecordState::Live {
            return Err(EditError::Deleted {
                in_conflict: deletion.state == RecordState::InConflict,
            });
        }
        if edits.len() > 1 && edits.contains(&Edit::DeleteRecord) {
            return Err(EditError::DeleteNotAlone);
        }
        let mut plan = Vec::new();
        let mut new_ids: Vec<ActivityId> = Vec::new();
        let stored_audit = RecordDoc::stored_audit(snap);
        for edit in edits {
            match edit {
                Edit::Set(key, value) => {
                    self.plan_register(
                        ctx,
                        snap,
                        &Scope::Record,
                        key,
                        value,
                        creating,
                        &stored_audit,
                        &mut plan,
                    )?;
                }
                Edit::SetActivity { id, field, value } => {
                    let scope = snap
                        .activity_scope(id)
                        .ok_or_else(|| EditError::UnknownActivity(id.clone()))?;
                    if let Scope::Activity {
                        kind: ActivityKind::Note,
                        ..
                    } = scope
                    {
                        return Err(EditError::WrongActivity {
                            id: id.clone(),
                            kind: ActivityKind::Note,
                            wanted: "task or call",
                        });
                    }
                    self.plan_register(
                        ctx,
                        snap,
                        &scope,
                        field,
                        value,
                        false,
                        &stored_audit,
                        &mut plan,
                    )?;
                }
                Edit::AddTag(tag) => {
                    check_tag(tag)?;
                    if !snap.has_tag(tag)
                        && !plan
                            .iter()
                            .any(|p| matches!(p, Planned::AddTag(t) if t == tag))
                    {
                        plan.push(Planned::AddTag(tag.clone()));
                    }
                }
                Edit::RemoveTag(tag) => {
                    if snap.has_tag(tag) {
                        plan.push(Planned::RemoveTag(tag.clone()));
                    }
                }
                Edit::AddNote { id, content } => {
                    RecordDoc::check_new_activity(snap, id, &new_ids)?;
                    check_note_text(content)?;
                    new_ids.push(id.clone());
                    plan.push(Planned::NewActivity {
                        id: id.clone(),
                        kind: ActivityKind::Note,
                        content: Some(content.clone()),
                        fields: Vec::new(),
                    });
                }
                Edit::AddActivity { id, kind, fields } => {
                    if *kind == ActivityKind::Note {
                        return Err(EditError::WrongActivity {
                            id: id.clone(),
                            kind: *kind,
                            wanted: "task or call",
                        });
                    }
                    RecordDoc::check_new_activity(snap, id, &new_ids)?;
                    new_ids.push(id.clone());
                    let scope = Scope::Activity {
                        id: id.clone(),
                        kind: *kind,
                    };
                    let mut stored = Vec::new();
                    for (key, value) in fields {
                        let def = self.def(ctx.catalog, &scope, key)?;
                        validate::check(ctx.catalog, def, value).map_err(|reason| {
                            EditError::Invalid {
                                field: key.to_string(),
                                reason,
                            }
                        })?;
                        if !is_blank(value) {
                            stored.push((key.clone(), value.to_scalar()));
                        }
                    }
                    for spec in schema::activity_fields(*kind).iter().filter(|s| s.required) {
                        if !stored.iter().any(|(k, _)| k.name() == spec.name) {
                            return Err(EditError::Invalid {
                                field: spec.name.into(),
                                reason: "is required".into(),
                            });
                        }
                    }
                    plan.push(Planned::NewActivity {
                        id: id.clone(),
                        kind: *kind,
                        content: None,
                        fields: stored,
                    });
                }
                Edit::SpliceNote {
                    id,
                    pos,
                    delete,
                    insert,
                } => {
                    let len = RecordDoc::note_len(snap, id)?;
                    if pos.checked_add(*delete).is_none_or(|end| end > len) {
                        return Err(EditError::OutOfBounds {
                            id: id.clone(),
                            len,
                            pos: *pos,
                            delete: *delete,
                        });
                    }
                    let text = RecordDoc::note_text_of(snap, id);
                    let after: String = text
                        .chars()
                        .take(*pos)
                        .chain(insert.chars())
                        .chain(text.chars().skip(pos + delete))
                        .collect();
                    check_note_text(&after)?;
                    if *delete > 0 || !insert.is_empty() {
                        plan.push(Planned::Splice {
                            id: id.clone(),
                            pos: *pos,
                            delete: *delete,
                            insert: insert.clone(),
                        });
                    }
                }
                Edit::SetNoteText { id, text } => {
                    RecordDoc::note_len(snap, id)?;
                    check_note_text(text)?;
                    plan.push(Planned::SetText {
                        id: id.clone(),
                        text: text.clone(),
                    });
                }
                Edit::DeleteActivity(id) => {
                    let act = snap
                        .activities
                        .get(id)
                        .ok_or_else(|| EditError::UnknownActivity(id.clone()))?;
                    let deleted = act
                        .deleted
                        .last()
                        .is_some_and(|f| f.reg.value == Scalar::Bool(true));
                    if !deleted {
                        plan.push(Planned::DeleteActivity(id.clone()));
                    }
                }
                Edit::DeleteRecord => {
                    let seen = i64::try_from(snap.edits).unwrap_or(i64::MAX);
                    plan.push(Planned::DeleteRecord { seen });
                }
            }
        }
        Ok(plan)
    }

    fn def<'a>(
        &self,
        catalog: &'a Catalog,
        scope: &Scope,
        key: &FieldKey,
    ) -> Result<FieldDef<'a>, EditError> {
        validate::field_def(catalog, self.kind, scope, key).ok_or_else(|| EditError::UnknownField {
            owner: match scope {
                Scope::Record => self.kind.as_str().to_owned(),
                Scope::Activity { kind, .. } => kind.as_str().to_owned(),
            },
            field: key.to_string(),
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn plan_register(
        &self,
        ctx: &EditCtx<'_>,
        snap: &Snapshot,
        scope: &Scope,
        key: &FieldKey,
        value: &Value,
        creating: bool,
        stored_audit: &std::collections::BTreeMap<String, AuditEntry>,
        plan: &mut Vec<Planned>,
    ) -> Result<(), EditError> {
        let def = self.def(ctx.catalog, scope, key)?;
        if let FieldDef::Std(spec) = def
            && spec.create_only
            && !creating
        {
            return Err(EditError::CreateOnly {
                field: key.to_string(),
            });
        }
        validate::check(ctx.catalog, def, value).map_err(|reason| EditError::Invalid {
            field: key.to_string(),
            reason,
        })?;
        if is_blank(value) && self.is_required(snap, ctx.catalog, scope, key, def) {
            return Err(EditError::Invalid {
                field: key.to_string(),
                reason: "is required and cannot be cleared (give it a value instead)".into(),
            });
        }
        let a = self.analyse_slot(snap, ctx.catalog, ctx.policy, scope, key);
        if a.outcome == Outcome::Conflict {
            return Err(EditError::InConflict { slot: a.slot });
        }
        let current = a.resolved().map(|(f, _)| f.reg.value.clone());
        let new = value.to_scalar();
        let unchanged = match &current {
            Some(cur) => *cur == new,
            None => new == Scalar::Null,
        };
        if unchanged {
            return Ok(());
        }
        // The write supersedes every candidate: record an automatic resolution first, so that
        // its losers stay in the audit trail.
        if let Some(entry) = a.automatic_entry()
            && !stored_audit.contains_key(&entry.id)
        {
            plan.push(Planned::Audit(entry));
        }
        plan.push(Planned::Register {
            scope: scope.clone(),
            key: key.clone(),
            value: new,
        });
        Ok(())
    }

    /// Whether the CRM requires `key` on this record or activity, so that it may not be
    /// cleared: the schema's required fields, a contact's `name` (organisation) or `last_name`
    /// (person), and custom fields the catalog marks required.
    fn is_required(
        &self,
        snap: &Snapshot,
        catalog: &Catalog,
        scope: &Scope,
        key: &FieldKey,
        def: FieldDef<'_>,
    ) -> bool {
        match def {
            FieldDef::Std(spec) if spec.required => true,
            FieldDef::Std(_) if *scope == Scope::Record && self.kind == RecordKind::Contact => {
                let organization = snap
                    .candidates(&Scope::Record, &FieldKey::std("is_organization"))
                    .last()
                    .is_some_and(|f| f.reg.value == Scalar::Bool(true));
                key.name() == if organization { "name" } else { "last_name" }
            }
            FieldDef::Custom(d) => catalog.loaded && d.required,
            FieldDef::Std(_) | FieldDef::UnknownCustom => false,
        }
    }

    fn note_text_of(snap: &Snapshot, id: &ActivityId) -> String {
        snap.activities
            .get(id)
            .and_then(|a| a.content.clone())
            .unwrap_or_default()
    }

    fn check_new_activity(
        snap: &Snapshot,
        id: &ActivityId,
        planned: &[ActivityId],
    ) -> Result<(), EditError> {
        if planned.contains(id) || snap.activities.contains_key(id) {
            return Err(EditError::ActivityExists(id.clone()));
        }
        Ok(())
    }

    fn note_len(snap: &Snapshot, id: &ActivityId) -> Result<usize, EditError> {
        let act = snap
            .activities
            .get(id)
            .ok_or_else(|| EditError::UnknownActivity(id.clone()))?;
        if act.kind != ActivityKind::Note {
            return Err(EditError::WrongActivity {
                id: id.clone(),
                kind: act.kind,
                wanted: "note",
            });
        }
        let text = act
            .content
            .as_ref()
            .ok_or_else(|| EditError::UnknownActivity(id.clone()))?;
        Ok(text.chars().count())
    }
}

fn note_text(
    tx: &mut automerge::transaction::Transaction<'_>,
    activities: &automerge::ObjId,
    id: &ActivityId,
) -> Result<automerge::ObjId, automerge::AutomergeError> {
    let obj = map_at(tx, activities, id.as_str())
        .ok_or(automerge::AutomergeError::InvalidObjId(id.to_string()))?;
    text_at(tx, &obj, "content").ok_or(automerge::AutomergeError::InvalidObjId(id.to_string()))
}

pub(crate) fn write_audit<T: Transactable + ReadDoc>(
    tx: &mut T,
    audit: &automerge::ObjId,
    entry: &AuditEntry,
) -> Result<(), automerge::AutomergeError> {
    if tx.get(audit, entry.id.as_str())?.is_some() {
        return Ok(());
    }
    // An audit entry is plain data; serialising it cannot fail.
    let json = serde_json::to_string(entry).unwrap_or_default();
    tx.put(audit, entry.id.as_str(), json)
}

/// Whether a value counts as not given: null, or text of nothing but white space (the CRM
/// refuses both for a required field).
fn is_blank(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Text(t) => t.trim().is_empty(),
        _ => false,
    }
}

/// A note must say something: the CRM refuses a note without text.
fn check_note_text(text: &str) -> Result<(), EditError> {
    if text.trim().is_empty() {
        return Err(EditError::Invalid {
            field: "content".into(),
            reason: "a note needs some text (delete the note instead of emptying it)".into(),
        });
    }
    Ok(())
}

fn check_tag(tag: &str) -> Result<(), EditError> {
    let len = tag.chars().count();
    if len == 0 || len > 128 || tag.chars().any(char::is_control) || tag.trim() != tag {
        return Err(EditError::BadTag(tag.to_owned()));
    }
    Ok(())
}

/// Parses what a person typed for a field of a record of `kind` (`activity`: a task's or call's
/// field). `""` and `null` clear the field.
pub fn parse_input(
    catalog: &Catalog,
    kind: RecordKind,
    activity: Option<ActivityKind>,
    key: &FieldKey,
    input: &str,
) -> Result<Value, EditError> {
    let scope = match activity {
        None => Scope::Record,
        Some(k) => Scope::Activity {
            id: ActivityId::placeholder(),
            kind: k,
        },
    };
    let def =
        validate::field_def(catalog, kind, &scope, key).ok_or_else(|| EditError::UnknownField {
            owner: activity
                .map_or(kind.as_str(), ActivityKind::as_str)
                .to_owned(),
            field: key.to_string(),
        })?;
    let value = Value::parse_as(def.repr(), input).map_err(|reason| EditError::Invalid {
        field: key.to_string(),
        reason,
    })?;
    // Upper-case currency codes as people type them in any case.
    let value = match (def, value) {
        (FieldDef::Std(spec), Value::Text(code)) if spec.ty == schema::FieldType::Currency => {
            Value::Text(code.trim().to_ascii_uppercase())
        }
        (_, v) => v,
    };
    validate::check(catalog, def, &value).map_err(|reason| EditError::Invalid {
        field: key.to_string(),
        reason,
    })?;
    Ok(value)
}
