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

use std::collections::{BTreeMap, BTreeSet};

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
    /// CRM values the model refused when they were pulled (a stage the catalog did not list
    /// yet). For these fields `image` keeps what the document holds, so a push never sends the
    /// document's value back over the CRM's; [`retry_refused`] writes them once the catalog
    /// accepts them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub refused: BTreeMap<FieldKey, Value>,
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

/// The user a change is written as when the CRM does not say which of its users made it: the
/// CRM itself (Zendesk user ids are positive). Its registers' device is [`DeviceId::crm`].
pub const CRM_USER: UserId = UserId(0);

/// When the bridge writes, and what values are checked against. Who and when a pulled value is
/// stamped with comes from the CRM's object (see [`stamp_of`]), not from here.
#[derive(Debug, Clone, Copy)]
pub struct WriteCtx<'a> {
    /// The wall clock (ms): the time of writes the CRM gives no time for (a delete), and the
    /// latest time a pulled value may carry.
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

/// Polling sees no deletes: the CRM ids the bridge holds that a full list of the resource did
/// not return. Each must be confirmed by a read answering 404 before it is written as a
/// delete: a list read page by page can skip an object whose neighbours were deleted meanwhile.
pub fn unlisted(known: &BTreeSet<u64>, listed: &BTreeSet<u64>) -> Vec<u64> {
    known.difference(listed).copied().collect()
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
    /// The edit context of a change written as the CRM by `author` at `at_ms`.
    fn edit_ctx<'a>(&'a self, author: &'a Author, at_ms: i64) -> EditCtx<'a> {
        EditCtx {
            author,
            now_ms: at_ms,
            catalog: self.catalog,
            policy: self.policy,
        }
    }
}

/// Who a pulled value is written as, and the time its register carries (before the hybrid
/// clock lifts it above everything its basis holds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stamp {
    /// When the CRM says the change was made (ms), never later than the pull.
    pub at_ms: i64,
    /// The CRM user who made it, or [`CRM_USER`].
    pub by: UserId,
}

fn rfc3339_ms(s: Option<&str>) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s?)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// The stamp of `field` in a CRM version: the field's own author and time where the CRM reports
/// them (a deal's stage), else the CRM at the version's `updated_at`. A time the CRM does not
/// give, or one after `now_ms` (a clock ahead of ours), is `now_ms`: a pulled value never
/// sorts after an edit made later than the pull.
pub fn stamp_of(image: &Image, field: Option<&FieldKey>, now_ms: i64) -> Stamp {
    let origin = field.and_then(|f| image.origin.get(f));
    let at = origin
        .and_then(|o| rfc3339_ms(o.at.as_deref()))
        .or_else(|| rfc3339_ms(image.updated_at.as_deref()))
        .map_or(now_ms, |t| t.min(now_ms));
    Stamp {
        at_ms: at,
        by: origin.and_then(|o| o.by).map_or(CRM_USER, UserId),
    }
}

/// Groups `edits` by the stamp of the field each writes, oldest first.
fn stamped(image: &Image, edits: Vec<Edit>, now_ms: i64) -> Vec<(Stamp, Vec<Edit>)> {
    let mut groups: BTreeMap<Stamp, Vec<Edit>> = BTreeMap::new();
    for edit in edits {
        let field = match &edit {
            Edit::Set(k, _) => Some(k),
            _ => None,
        };
        groups
            .entry(stamp_of(image, field, now_ms))
            .or_default()
            .push(edit);
    }
    groups.into_iter().collect()
}

/// Applies `edits` on `fork`, one change per stamp (oldest first), tolerantly.
fn apply_stamped(
    fork: &mut RecordDoc,
    ctx: &WriteCtx<'_>,
    image: &Image,
    message: &str,
    edits: Vec<Edit>,
    report: &mut PullReport,
) -> Result<(), PullError> {
    for (stamp, group) in stamped(image, edits, ctx.now_ms) {
        let author = crm_author(stamp.by);
        let ectx = ctx.edit_ctx(&author, stamp.at_ms);
        apply_tolerant(fork, &ectx, message, group, report)?;
    }
    Ok(())
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

/// The key a refused tag edit is reported under (tags are a set, not a field of the image).
fn is_tags(key: &FieldKey) -> bool {
    matches!(key, FieldKey::Std(n) if n == "tags")
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
    let mut image = image;
    let edits = record_edits(&shadow.image, &image, &mut report);
    if !edits.is_empty() {
        let mut fork = crm_fork(doc, shadow)?;
        apply_stamped(
            &mut fork,
            ctx,
            &image,
            "crm: record changed",
            edits,
            &mut report,
        )?;
        let heads = fork.heads();
        doc.merge(&mut fork)?;
        shadow.heads = hex_heads(&heads);
    }
    // A refused value stays out of the image (the document does not hold it) and waits.
    let mut refused = BTreeMap::new();
    for (key, _) in report.refused.iter().filter(|(k, _)| !is_tags(k)) {
        refused.insert(key.clone(), image.get(key));
        match shadow.image.fields.get(key) {
            Some(held) => image.fields.insert(key.clone(), held.clone()),
            None => image.fields.remove(key),
        };
    }
    shadow.refused = refused;
    shadow.image = image;
    Ok(report)
}

/// Writes the CRM values a pull had to refuse (see [`Shadow::refused`]), after the catalog
/// changed: like a pull of the shadow's version with those values. What is refused again keeps
/// waiting.
pub fn retry_refused(
    doc: &mut RecordDoc,
    shadow: &mut Shadow,
    ctx: &WriteCtx<'_>,
) -> Result<PullReport, PullError> {
    let mut image = shadow.image.clone();
    for (key, value) in &shadow.refused {
        image.fields.insert(key.clone(), value.clone());
    }
    image.fields.retain(|_, v| *v != Value::Null);
    pull_update(doc, shadow, image, ctx)
}

/// Writes a CRM delete based on the shadow heads: a record conflict when devices edited the
/// record since. Returns whether a change was written (`false` when already deleted there).
pub fn pull_delete(
    doc: &mut RecordDoc,
    shadow: &mut Shadow,
    ctx: &WriteCtx<'_>,
) -> Result<bool, PullError> {
    // The CRM names neither who deleted nor when: the CRM, at the time the bridge learnt it.
    let author = crm_author(CRM_USER);
    let ectx = ctx.edit_ctx(&author, ctx.now_ms);
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
    // The record is born with the fields the CRM names no author for, as the CRM at the
    // version's time; fields with their own author and time follow as their own changes.
    let base = stamp_of(&image, None, ctx.now_ms);
    let author = crm_author(base.by);
    let ectx = ctx.edit_ctx(&author, base.at_ms);
    let id = local_record_id(kind, crm_id);
    let mut report = PullReport::default();
    let (own, plain): (Vec<_>, Vec<_>) = image
        .fields
        .clone()
        .into_iter()
        .partition(|(k, _)| image.origin.contains_key(k));
    let mut doc = match RecordDoc::create(
        kind,
        id.clone(),
        RegisterLayout::Packed,
        &ectx,
        plain.clone(),
    ) {
        Ok(doc) => doc,
        Err(EditError::Automerge(e)) => return Err(e.into()),
        Err(_) => {
            // Required and create-only fields first, then the rest one by one.
            let (first, rest): (Vec<_>, Vec<_>) = plain.into_iter().partition(|(k, _)| {
                create_only(k) || (kind == RecordKind::Deal && k.name() == "name")
            });
            let mut doc = RecordDoc::create(kind, id, RegisterLayout::Packed, &ectx, first)?;
            let edits = rest.into_iter().map(|(k, v)| Edit::Set(k, v)).collect();
            apply_tolerant(&mut doc, &ectx, "crm: record imported", edits, &mut report)?;
            doc
        }
    };
    let edits = own.into_iter().map(|(k, v)| Edit::Set(k, v)).collect();
    apply_stamped(
        &mut doc,
        ctx,
        &image,
        "crm: record imported",
        edits,
        &mut report,
    )?;
    let tags: Vec<Edit> = image.tags.iter().cloned().map(Edit::AddTag).collect();
    apply_tolerant(&mut doc, &ectx, "crm: tags", tags, &mut report)?;
    doc.set_crm_id(ctx.now_ms, crm_id)?;
    report.written = image
        .fields
        .keys()
        .filter(|k| !report.refused.iter().any(|(r, _)| r == *k))
        .cloned()
        .collect();
    // As in `pull_update`: a refused value is not in the image, and waits.
    let mut image = image;
    let mut refused = BTreeMap::new();
    for (key, _) in &report.refused {
        if let Some(v) = image.fields.remove(key) {
            refused.insert(key.clone(), v);
        }
    }
    let shadow = Shadow {
        record: doc.id().clone(),
        kind,
        crm_id,
        image,
        heads: hex_heads(&doc.heads()),
        activities: BTreeMap::new(),
        refused,
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
    let stamp = stamp_of(&image, None, ctx.now_ms);
    let author = crm_author(stamp.by);
    let ectx = ctx.edit_ctx(&author, stamp.at_ms);
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
    // As for a record's delete: the CRM, at the time the bridge learnt it.
    let author = crm_author(CRM_USER);
    let ectx = ctx.edit_ctx(&author, ctx.now_ms);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::record_image;
    use sellsync_model::{AssumeLive, ProjectCtx, Slot};
    use serde_json::json;

    /// 2026-03-02T10:00:00Z in ms.
    const TEN: i64 = 1_772_445_600_000;

    fn deal(name: &str, stage: u64, updated: &str, stage_at: &str, stage_by: u64) -> Image {
        let data = json!({
            "id": 41, "name": name, "stage_id": stage, "updated_at": updated,
            "last_stage_change_at": stage_at, "last_stage_change_by_id": stage_by,
        });
        record_image(RecordKind::Deal, &data, &Catalog::default())
            .unwrap()
            .1
    }

    fn phone_edit(doc: &mut RecordDoc, at_ms: i64, edits: &[Edit]) {
        let phone: DeviceId = "phone".parse().unwrap();
        let author = Author {
            user: UserId(5),
            device: phone.clone(),
        };
        let ctx = EditCtx {
            author: &author,
            now_ms: at_ms,
            catalog: &Catalog::default(),
            policy: &Policy::default(),
        };
        let mut on_phone = doc.fork(&phone);
        on_phone.apply(&ctx, "phone edit", edits).unwrap();
        doc.merge(&mut on_phone).unwrap();
    }

    #[test]
    fn a_pulled_value_carries_the_crms_time_and_author_not_the_pull() {
        let catalog = Catalog::default();
        let policy = Policy::default();
        let at = |now_ms| WriteCtx {
            now_ms,
            catalog: &catalog,
            policy: &policy,
        };
        let first = deal("Acme", 1, "2026-03-02T09:00:00Z", "2026-03-02T09:00:00Z", 3);
        let (mut doc, mut shadow, _) =
            pull_new(RecordKind::Deal, 41, first, &at(TEN - 3_000_000)).unwrap();
        // Zendesk: name at 10:00:00 (nobody named), stage at 09:59:00 by user 7.
        // The phone, offline: name and stage at 10:00:01. The bridge pulls at 10:05.
        phone_edit(
            &mut doc,
            TEN + 1_000,
            &[
                Edit::Set(FieldKey::std("name"), Value::Text("Acme (phone)".into())),
                Edit::Set(FieldKey::std("stage_id"), Value::Ref(3)),
            ],
        );
        let zendesk = deal(
            "Acme (web)",
            2,
            "2026-03-02T10:00:00Z",
            "2026-03-02T09:59:00Z",
            7,
        );
        pull_update(&mut doc, &mut shadow, zendesk, &at(TEN + 300_000)).unwrap();

        let name = doc.field_candidates(&catalog, &policy, &Slot::record(FieldKey::std("name")));
        let web = name.iter().find(|c| c.device.is_crm()).unwrap();
        assert_eq!((web.at, web.by), (TEN, CRM_USER));
        let p = doc.project(&ProjectCtx {
            catalog: &catalog,
            policy: &policy,
            directory: &AssumeLive,
        });
        // The later edit wins the last-writer-wins field, whenever the pull happens.
        assert_eq!(
            p.record.fields.get(&FieldKey::std("name")),
            Some(&Value::Text("Acme (phone)".into()))
        );
        let stage =
            doc.field_candidates(&catalog, &policy, &Slot::record(FieldKey::std("stage_id")));
        let web = stage.iter().find(|c| c.device.is_crm()).unwrap();
        assert_eq!((web.at, web.by), (TEN - 60_000, UserId(7)));
    }

    #[test]
    fn a_value_the_catalog_does_not_list_yet_waits_and_is_written_when_it_does() {
        let old = Catalog::example();
        let mut new = Catalog::example();
        let mut stage = new.stages[&13].clone();
        stage.id = 18;
        new.stages.insert(18, stage);
        let policy = Policy::default();
        let ctx = |catalog| WriteCtx {
            now_ms: TEN,
            catalog,
            policy: &policy,
        };
        let first = deal(
            "Acme",
            11,
            "2026-03-02T09:00:00Z",
            "2026-03-02T09:00:00Z",
            3,
        );
        let (mut doc, mut shadow, _) = pull_new(RecordKind::Deal, 41, first, &ctx(&old)).unwrap();
        let moved = deal(
            "Acme",
            18,
            "2026-03-02T09:30:00Z",
            "2026-03-02T09:30:00Z",
            3,
        );
        let report = pull_update(&mut doc, &mut shadow, moved.clone(), &ctx(&old)).unwrap();
        let stage_key = FieldKey::std("stage_id");
        assert_eq!(report.refused.len(), 1, "{report:?}");
        // The image keeps what the document holds (a push sends nothing back); the CRM's
        // value waits, also through a pull of the same version.
        assert_eq!(shadow.image.get(&stage_key), Value::Ref(11));
        pull_update(&mut doc, &mut shadow, moved, &ctx(&old)).unwrap();
        assert_eq!(shadow.image.get(&stage_key), Value::Ref(11));
        assert_eq!(shadow.refused.get(&stage_key), Some(&Value::Ref(18)));
        let again = retry_refused(&mut doc, &mut shadow, &ctx(&old)).unwrap();
        assert_eq!(again.refused.len(), 1, "{again:?}");
        assert_eq!(
            shadow.refused.get(&stage_key),
            Some(&Value::Ref(18)),
            "still refused"
        );

        let report = retry_refused(&mut doc, &mut shadow, &ctx(&new)).unwrap();
        assert!(report.refused.is_empty(), "{report:?}");
        assert!(shadow.refused.is_empty());
        assert_eq!(shadow.image.get(&stage_key), Value::Ref(18));
        let p = doc.project(&ProjectCtx {
            catalog: &new,
            policy: &policy,
            directory: &AssumeLive,
        });
        assert_eq!(p.record.fields.get(&stage_key), Some(&Value::Ref(18)));
    }

    #[test]
    fn only_held_ids_missing_from_the_list_are_candidates_for_a_delete() {
        let known: BTreeSet<u64> = [1, 2, 3, 5].into();
        let listed: BTreeSet<u64> = [1, 3, 4].into();
        assert_eq!(unlisted(&known, &listed), vec![2, 5]);
        assert!(unlisted(&known, &known).is_empty());
    }

    #[test]
    fn a_crm_time_after_the_pull_is_the_pull_time() {
        let image = deal("A", 1, "2026-03-02T10:00:00Z", "2026-03-02T10:00:00Z", 7);
        assert_eq!(stamp_of(&image, None, TEN - 5).at_ms, TEN - 5);
        assert_eq!(
            stamp_of(&Image::default(), None, 42),
            Stamp {
                at_ms: 42,
                by: CRM_USER
            }
        );
    }
}
