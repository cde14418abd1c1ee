//! Pull: a CRM version of a record becomes a change based on the record's shadow heads.
//!
//! **Actor invariant.** The bridge writes what the CRM says under the Automerge actor `crm`
//! ([`DeviceId::crm`]), and only on a fork of the document at the shadow heads; the shadow heads
//! then become the fork's heads. So every change by `crm` is an ancestor of (or one of) the
//! shadow heads, and a fork at the shadow heads holds all of them: a new `crm` change never
//! reuses a sequence number. Everything else the bridge writes on the current document (CRM ids
//! of records created by a push, flags) goes under another actor, the document's own (the hub
//! opens documents as [`bridge_device`]), never as `crm`. Shadow heads only ever move to
//! descendants of themselves, which keeps the invariant.

use std::collections::BTreeMap;

use automerge::ChangeHash;
use sellsync_model::{
    ActivityId, ActivityKind, Author, Catalog, DeviceId, Edit, EditCtx, EditError, FieldKey,
    Policy, RecordDoc, RecordId, RecordKind, RegisterLayout, UserId, Value,
};
use serde::{Deserialize, Serialize};

use crate::mapping::Image;

/// The device id under which the hub's bridge opens documents (for metadata writes).
pub fn bridge_device() -> DeviceId {
    // A fixed, valid id.
    "bridge".parse().unwrap_or_else(|_| DeviceId::crm())
}

/// What the bridge last saw of one CRM record, and where in the document it recorded it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Shadow {
    /// The record's document.
    pub record: RecordId,
    /// Deal or contact.
    pub kind: RecordKind,
    /// The CRM id.
    pub crm_id: u64,
    /// The last CRM version seen.
    pub image: Image,
    /// The document heads (hex) at which that version is recorded.
    pub heads: Vec<String>,
    /// The record's notes, tasks and calls as last seen in the CRM.
    #[serde(default)]
    pub activities: BTreeMap<ActivityId, ActivityShadow>,
}

/// What the bridge last saw of one activity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActivityShadow {
    /// Note, task or call.
    pub kind: ActivityKind,
    /// The CRM id.
    pub crm_id: u64,
    /// The last CRM version (a note's text is its `content` field).
    pub image: Image,
}

impl Shadow {
    /// The heads as change hashes.
    pub fn change_hashes(&self) -> Result<Vec<ChangeHash>, PullError> {
        hashes(&self.heads)
    }
}

/// Change hashes from their hex form.
pub fn hashes(heads: &[String]) -> Result<Vec<ChangeHash>, PullError> {
    heads
        .iter()
        .map(|h| h.parse().map_err(|_| PullError::BadHeads(h.clone())))
        .collect()
}

/// Change hashes in hex.
pub fn hex_heads(heads: &[ChangeHash]) -> Vec<String> {
    heads.iter().map(ToString::to_string).collect()
}

/// Why a pull could not be written. Nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// A stored head is not a change hash.
    #[error("bad shadow head {0:?}")]
    BadHeads(String),
    /// The document lacks the shadow's heads (a store that lost changes).
    #[error("document: {0}")]
    Automerge(#[from] automerge::AutomergeError),
    /// The CRM's record could not be written at all (for example a deal without a name).
    #[error("cannot record the CRM's version: {0}")]
    Edit(#[from] EditError),
    /// An activity whose parent record the bridge does not have.
    #[error("no shadow for the parent record")]
    NoParent,
}

/// Who and when the bridge writes as, and what values are checked against.
#[derive(Debug, Clone, Copy)]
pub struct WriteCtx<'a> {
    /// The CRM user the bridge's token belongs to.
    pub user: UserId,
    /// The wall clock (ms).
    pub now_ms: i64,
    /// The catalog.
    pub catalog: &'a Catalog,
    /// The policy.
    pub policy: &'a Policy,
}

/// What a pull did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PullReport {
    /// Fields written (changed in the CRM since the shadow).
    pub written: Vec<FieldKey>,
    /// Fields the CRM holds that the model refused, with the reason. Kept in the shadow so
    /// that they are not pushed back; shown to the executor's log.
    pub refused: Vec<(FieldKey, String)>,
}

/// The local id of a record first seen in the CRM: deterministic, so a re-import after a crash
/// finds the same document.
pub fn local_record_id(kind: RecordKind, crm_id: u64) -> RecordId {
    let prefix = match kind {
        RecordKind::Deal => "zd",
        RecordKind::Contact => "zc",
    };
    // Digits and a fixed prefix are always a valid id.
    format!("{prefix}-{crm_id}")
        .parse()
        .unwrap_or_else(|_| unreachable_id())
}

/// The local id of an activity first seen in the CRM.
pub fn local_activity_id(kind: ActivityKind, crm_id: u64) -> ActivityId {
    let prefix = match kind {
        ActivityKind::Note => "zn",
        ActivityKind::Task => "zt",
        ActivityKind::Call => "zk",
    };
    format!("{prefix}-{crm_id}")
        .parse()
        .unwrap_or_else(|_| unreachable_activity())
}

#[allow(clippy::unwrap_used)]
fn unreachable_id() -> RecordId {
    "z".parse()
        .unwrap_or_else(|_| unreachable!("a one-letter id is valid"))
}

fn unreachable_activity() -> ActivityId {
    "z".parse()
        .unwrap_or_else(|_| unreachable!("a one-letter id is valid"))
}

impl WriteCtx<'_> {
    /// The edit context of a change written as the CRM by `author`.
    fn edit_ctx<'a>(&'a self, author: &'a Author) -> EditCtx<'a> {
        EditCtx {
            author,
            now_ms: self.now_ms,
            catalog: self.catalog,
            policy: self.policy,
        }
    }
}

/// A copy of `doc` at the shadow heads, writing as the CRM: what the CRM says is written there,
/// so that device edits made since the shadow are concurrent with it.
fn crm_fork(doc: &RecordDoc, shadow: &Shadow) -> Result<RecordDoc, PullError> {
    Ok(doc.fork_at(&shadow.change_hashes()?, &DeviceId::crm())?)
}

fn crm_author(user: UserId) -> Author {
    Author {
        user,
        device: DeviceId::crm(),
    }
}

/// Fields that Sell accepts at creation only: never written by an update.
fn create_only(key: &FieldKey) -> bool {
    matches!(key, FieldKey::Std(n) if n == "is_organization")
}

/// Applies `edits` on `fork` as one change; when the model refuses the whole action, one by one,
/// collecting what it refuses.
fn apply_tolerant(
    fork: &mut RecordDoc,
    ctx: &EditCtx<'_>,
    message: &str,
    edits: Vec<Edit>,
    report: &mut PullReport,
) -> Result<(), PullError> {
    if edits.is_empty() {
        return Ok(());
    }
    match fork.apply(ctx, message, &edits) {
        Ok(_) => {}
        Err(EditError::Automerge(e)) => return Err(e.into()),
        Err(_) => {
            for edit in edits {
                if let Err(e) = fork.apply(ctx, message, std::slice::from_ref(&edit)) {
                    if let EditError::Automerge(e) = e {
                        return Err(e.into());
                    }
                    let key = match &edit {
                        Edit::Set(k, _) => k.clone(),
                        Edit::SetActivity { field, .. } => field.clone(),
                        _ => FieldKey::std("tags"),
                    };
                    report.refused.push((key, e.to_string()));
                }
            }
        }
    }
    Ok(())
}

/// The edits that bring a record from `old` to `new`: changed fields, added and removed tags.
fn record_edits(old: &Image, new: &Image, report: &mut PullReport) -> Vec<Edit> {
    let mut edits = Vec::new();
    for (k, v) in old.changed_fields(new) {
        if create_only(&k) {
            continue;
        }
        report.written.push(k.clone());
        edits.push(Edit::Set(k, v));
    }
    for t in new.tags.difference(&old.tags) {
        edits.push(Edit::AddTag(t.clone()));
    }
    for t in old.tags.difference(&new.tags) {
        edits.push(Edit::RemoveTag(t.clone()));
    }
    edits
}

/// Writes a CRM version of a record the bridge has a shadow for, based on the shadow heads, and
/// merges it into `doc`. On success the shadow holds the new version and its heads. On error
/// neither `doc` nor `shadow` changed.
pub fn pull_update(
    doc: &mut RecordDoc,
    shadow: &mut Shadow,
    image: Image,
    ctx: &WriteCtx<'_>,
) -> Result<PullReport, PullError> {
    let mut report = PullReport::default();
    let edits = record_edits(&shadow.image, &image, &mut report);
    if !edits.is_empty() {
        let author = crm_author(ctx.user);
        let ectx = ctx.edit_ctx(&author);
        let mut fork = crm_fork(doc, shadow)?;
        apply_tolerant(&mut fork, &ectx, "crm: record changed", edits, &mut report)?;
        let heads = fork.heads();
        doc.merge(&mut fork)?;
        shadow.heads = hex_heads(&heads);
    }
    shadow.image = image;
    Ok(report)
}

/// Writes a CRM delete based on the shadow heads: a record conflict when devices edited the
/// record since. Returns whether a change was written (`false` when already deleted there).
pub fn pull_delete(
    doc: &mut RecordDoc,
    shadow: &mut Shadow,
    ctx: &WriteCtx<'_>,
) -> Result<bool, PullError> {
    let author = crm_author(ctx.user);
    let ectx = ctx.edit_ctx(&author);
    let mut fork = crm_fork(doc, shadow)?;
    match fork.apply(&ectx, "crm: record deleted", &[Edit::DeleteRecord]) {
        Ok(_) => {}
        Err(EditError::Deleted { .. }) => return Ok(false),
        Err(e) => return Err(e.into()),
    }
    let heads = fork.heads();
    doc.merge(&mut fork)?;
    shadow.heads = hex_heads(&heads);
    Ok(true)
}

/// A record first seen in the CRM becomes a new document (opened as [`bridge_device`]) and its
/// shadow. Values the model refuses are reported and left out; a record the model cannot hold
/// at all (a deal without a name) is an error.
pub fn pull_new(
    kind: RecordKind,
    crm_id: u64,
    image: Image,
    ctx: &WriteCtx<'_>,
) -> Result<(RecordDoc, Shadow, PullReport), PullError> {
    let author = crm_author(ctx.user);
    let ectx = ctx.edit_ctx(&author);
    let id = local_record_id(kind, crm_id);
    let mut report = PullReport::default();
    let all: Vec<(FieldKey, Value)> = image.fields.clone().into_iter().collect();
    let mut doc = match RecordDoc::create(kind, id.clone(), RegisterLayout::Packed, &ectx, all) {
        Ok(doc) => doc,
        Err(EditError::Automerge(e)) => return Err(e.into()),
        Err(_) => {
            // Required and create-only fields first, then the rest one by one.
            let (first, rest): (Vec<_>, Vec<_>) =
                image.fields.clone().into_iter().partition(|(k, _)| {
                    create_only(k) || (kind == RecordKind::Deal && k.name() == "name")
                });
            let mut doc = RecordDoc::create(kind, id, RegisterLayout::Packed, &ectx, first)?;
            let edits = rest.into_iter().map(|(k, v)| Edit::Set(k, v)).collect();
            apply_tolerant(&mut doc, &ectx, "crm: record imported", edits, &mut report)?;
            doc
        }
    };
    let tags: Vec<Edit> = image.tags.iter().cloned().map(Edit::AddTag).collect();
    apply_tolerant(&mut doc, &ectx, "crm: tags", tags, &mut report)?;
    doc.set_crm_id(ctx.now_ms, crm_id)?;
    report.written = image
        .fields
        .keys()
        .filter(|k| !report.refused.iter().any(|(r, _)| r == *k))
        .cloned()
        .collect();
    let shadow = Shadow {
        record: doc.id().clone(),
        kind,
        crm_id,
        image,
        heads: hex_heads(&doc.heads()),
        activities: BTreeMap::new(),
    };
    Ok((doc.fork(&bridge_device()), shadow, report))
}

/// Writes a CRM version of a note, task or call into its parent's document, based on the
/// parent's shadow heads: created when new (with its CRM id), else only what changed.
pub fn pull_activity(
    doc: &mut RecordDoc,
    shadow: &mut Shadow,
    kind: ActivityKind,
    crm_id: u64,
    image: Image,
    ctx: &WriteCtx<'_>,
) -> Result<PullReport, PullError> {
    let author = crm_author(ctx.user);
    let ectx = ctx.edit_ctx(&author);
    let mut report = PullReport::default();
    let known = shadow
        .activities
        .iter()
        .find(|(_, a)| a.crm_id == crm_id && a.kind == kind)
        .map(|(id, a)| (id.clone(), a.image.clone()));
    let content = FieldKey::std("content");
    let text = |img: &Image| match img.get(&content) {
        Value::Text(s) => s,
        _ => String::new(),
    };
    let mut fork = crm_fork(doc, shadow)?;
    let id = match known {
        Some((id, old)) => {
            let mut edits = Vec::new();
            if kind == ActivityKind::Note {
                if text(&old) != text(&image) {
                    report.written.push(content.clone());
                    edits.push(Edit::SetNoteText {
                        id: id.clone(),
                        text: text(&image),
                    });
                }
            } else {
                for (field, value) in old.changed_fields(&image) {
                    report.written.push(field.clone());
                    edits.push(Edit::SetActivity {
                        id: id.clone(),
                        field,
                        value,
                    });
                }
            }
            apply_tolerant(
                &mut fork,
                &ectx,
                "crm: activity changed",
                edits,
                &mut report,
            )?;
            id
        }
        None => {
            let id = local_activity_id(kind, crm_id);
            let edit = if kind == ActivityKind::Note {
                Edit::AddNote {
                    id: id.clone(),
                    content: text(&image),
                }
            } else {
                Edit::AddActivity {
                    id: id.clone(),
                    kind,
                    fields: image.fields.clone().into_iter().collect(),
                }
            };
            match fork.apply(&ectx, "crm: activity imported", &[edit]) {
                Ok(_) | Err(EditError::ActivityExists(_)) => {}
                Err(e) => return Err(e.into()),
            }
            fork.set_activity_crm_id(ctx.now_ms, &id, crm_id)
                .map_err(|e| {
                    PullError::Edit(EditError::Invalid {
                        field: id.to_string(),
                        reason: e.to_string(),
                    })
                })?;
            report.written = image.fields.keys().cloned().collect();
            id
        }
    };
    let heads = fork.heads();
    doc.merge(&mut fork)?;
    shadow.heads = hex_heads(&heads);
    shadow.activities.insert(
        id,
        ActivityShadow {
            kind,
            crm_id,
            image,
        },
    );
    Ok(report)
}

/// Writes a CRM delete of a note, task or call (the content stays in the document's history).
pub fn pull_activity_delete(
    doc: &mut RecordDoc,
    shadow: &mut Shadow,
    crm_id: u64,
    ctx: &WriteCtx<'_>,
) -> Result<bool, PullError> {
    let Some(id) = shadow
        .activities
        .iter()
        .find(|(_, a)| a.crm_id == crm_id)
        .map(|(id, _)| id.clone())
    else {
        return Ok(false);
    };
    let author = crm_author(ctx.user);
    let ectx = ctx.edit_ctx(&author);
    let mut fork = crm_fork(doc, shadow)?;
    let wrote = fork
        .apply(
            &ectx,
            "crm: activity deleted",
            &[Edit::DeleteActivity(id.clone())],
        )?
        .is_some();
    let heads = fork.heads();
    doc.merge(&mut fork)?;
    shadow.heads = hex_heads(&heads);
    shadow.activities.remove(&id);
    Ok(wrote)
}
