//! The projection: a record document in, a Sell record plus what a person must see out.
//!
//! Pure and deterministic: it reads only the document (and the catalog, policy and directory it
//! is given), so replicas with the same heads produce byte-identical projections. Nothing is
//! written on read: automatic resolutions are computed here and recorded into the audit trail by
//! [`RecordDoc::record_automatic_resolutions`](crate::RecordDoc::record_automatic_resolutions)
//! after a merge, under ids derived from their content so that replicas recording the same
//! resolution concurrently converge on one entry.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::catalog::Catalog;
use crate::doc::{RecordDoc, Scope, Slot};
use crate::policy::{Policy, Tier};
use crate::register::Found;
use crate::schema::{ActivityKind, FieldKey, FieldType, RecordKind};
use crate::snapshot::Snapshot;
use crate::validate::{self, FieldDef};
use crate::value::{RecordRef, Repr, Scalar, Value};
use crate::{ActivityId, DeviceId, RecordId, UserId};

/// What the projection knows of other records: whether a referenced contact exists.
pub trait Directory {
    /// The state of the contact `r` points at.
    fn contact(&self, r: &RecordRef) -> RefStatus;
}

/// The state of a referenced record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefStatus {
    /// It exists.
    Live,
    /// It was deleted.
    Deleted,
    /// No such record is known.
    Unknown,
}

/// A directory that knows nothing and so raises no relationship conflict.
#[derive(Debug, Clone, Copy, Default)]
pub struct AssumeLive;

impl Directory for AssumeLive {
    fn contact(&self, _: &RecordRef) -> RefStatus {
        RefStatus::Live
    }
}

/// What a projection reads besides the document.
#[derive(Clone, Copy)]
pub struct ProjectCtx<'a> {
    /// The catalog values are validated against.
    pub catalog: &'a Catalog,
    /// The tier of each field.
    pub policy: &'a Policy,
    /// Other records, for relationship conflicts.
    pub directory: &'a dyn Directory,
}

impl std::fmt::Debug for ProjectCtx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectCtx").finish_non_exhaustive()
    }
}

/// One write of a field, as shown to a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    /// The value written.
    pub value: Value,
    /// When (hybrid clock, ms since the epoch).
    pub at: i64,
    /// By whom.
    pub by: UserId,
    /// From which device.
    pub device: DeviceId,
    /// The id of the operation that wrote it: stable on every replica.
    pub op: String,
}

/// Whether the record is live, deleted, or deleted while others were editing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordState {
    /// Not deleted (or restored).
    Live,
    /// Deleted, by someone who had seen every edit.
    Deleted,
    /// Deleted concurrently with edits (or with a restore): a record conflict is open.
    InConflict,
}

/// The Sell record as the document resolves it now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SellRecord {
    /// Local id.
    pub id: RecordId,
    /// Deal or contact.
    pub kind: RecordKind,
    /// The CRM's id, once known.
    pub crm_id: Option<u64>,
    /// Live, deleted, or in conflict.
    pub state: RecordState,
    /// Resolved values; a field in open conflict is absent here and present in the conflicts.
    pub fields: BTreeMap<FieldKey, Value>,
    /// Tags, merged.
    pub tags: BTreeSet<String>,
    /// Notes, tasks and calls, in id order.
    pub activities: Vec<ActivityView>,
}

/// A note, task or call.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActivityView {
    /// Local id.
    pub id: ActivityId,
    /// Note, task or call.
    pub kind: ActivityKind,
    /// The CRM's id, once known.
    pub crm_id: Option<u64>,
    /// Deleted by a user.
    pub deleted: bool,
    /// Who created it, when.
    pub created_by: UserId,
    /// Creation time (hybrid clock, ms).
    pub created_at: i64,
    /// A note's text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// A task's or call's resolved fields.
    pub fields: BTreeMap<FieldKey, Value>,
}

/// Something a person must decide or know about before the record can go to the CRM whole.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Conflict {
    /// Concurrent different values of a manual-tier field.
    Field {
        /// The field.
        slot: Slot,
        /// Its tier (manual).
        tier: Tier,
        /// Every candidate, oldest first.
        candidates: Vec<Candidate>,
    },
    /// The record was deleted while someone else edited it (or restored it).
    Record {
        /// The delete writes.
        deleted_by: Vec<Candidate>,
        /// Concurrent restores, if any.
        restored_by: Vec<Candidate>,
        /// How many edit actions the deleters had not seen.
        unseen_edits: u64,
        /// Notes, tasks and calls held with the record until someone decides.
        held_activities: Vec<ActivityId>,
    },
    /// A reference to a record that is deleted or unknown.
    Relationship {
        /// The referencing field.
        slot: Slot,
        /// What it points at.
        target: RecordRef,
        /// Deleted or unknown.
        status: RefStatus,
    },
    /// A value the catalog (or the CRM) does not accept.
    Validation {
        /// The field.
        slot: Slot,
        /// The value, as text.
        value: String,
        /// Why it is refused.
        message: String,
        /// `catalog` when found offline, `crm` when the CRM refused it.
        source: String,
    },
    /// The CRM refused a note, task or call (`activity`), or the record as a whole when it named
    /// no field (`activity` absent). What it refused is held back (an activity alone, so the
    /// record's other changes still go); a person fixes it (edit the activity, or the record),
    /// discards the activity, or retries it as it is.
    Refused {
        /// The refused note, task or call; absent when the CRM refused the record itself.
        #[serde(skip_serializing_if = "Option::is_none")]
        activity: Option<ActivityId>,
        /// The field the CRM named, if it named one.
        #[serde(skip_serializing_if = "Option::is_none")]
        field: Option<FieldKey>,
        /// Validation (422) or permission (403).
        refusal: FlagKind,
        /// The CRM's message.
        message: String,
        /// When it was reported (ms).
        at: i64,
    },
    /// The CRM refused a change for lack of permission, or the user lost access to the record.
    Permission {
        /// The field, or none for the whole record.
        #[serde(skip_serializing_if = "Option::is_none")]
        slot: Option<Slot>,
        /// The CRM's message.
        message: String,
        /// When it was reported (ms).
        at: i64,
    },
}

impl Conflict {
    /// The field the conflict is about, if it is about one.
    pub fn slot(&self) -> Option<&Slot> {
        match self {
            Conflict::Field { slot, .. }
            | Conflict::Relationship { slot, .. }
            | Conflict::Validation { slot, .. } => Some(slot),
            Conflict::Permission { slot, .. } => slot.as_ref(),
            Conflict::Record { .. } | Conflict::Refused { .. } => None,
        }
    }

    fn order(&self) -> u8 {
        match self {
            Conflict::Record { .. } => 0,
            Conflict::Field { .. } => 1,
            Conflict::Validation { .. } => 2,
            Conflict::Relationship { .. } => 3,
            Conflict::Permission { .. } => 4,
            Conflict::Refused { .. } => 5,
        }
    }
}

/// What a resolution chose.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum Chosen {
    /// A field value.
    Value(Value),
    /// The record was restored with the concurrent edits.
    Restore,
    /// The record's deletion was confirmed.
    Delete,
}

/// One resolution, automatic or manual. It lives in the document and replicates with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Derived from the content: the same resolution gets the same id on every replica.
    pub id: String,
    /// The field, or none for a record resolution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<Slot>,
    /// `lww`, `notify`, `keep-server`, `manual`, or `record`.
    pub policy: String,
    /// Every candidate that was in play.
    pub candidates: Vec<Candidate>,
    /// What was chosen.
    pub chosen: Chosen,
    /// The operation of the chosen candidate, when one candidate was taken as it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chosen_op: Option<String>,
    /// Who decided; none for an automatic resolution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<UserId>,
    /// From which device; none for an automatic resolution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceId>,
    /// When: the decision's time, or for an automatic resolution the winner's time.
    pub at: i64,
}

/// Tells the author of a value that lost to a concurrent write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Notification {
    /// Stable id, from the record, the field and the losing operation: one notification per
    /// lost value per record.
    pub id: String,
    /// The user to tell.
    pub to: UserId,
    /// The record.
    pub record: RecordId,
    /// The field.
    pub slot: Slot,
    /// The tier that decided.
    pub policy: String,
    /// The value that user wrote.
    pub yours: Value,
    /// The value that was kept.
    pub kept: Value,
    /// Who wrote the kept value.
    pub kept_by: UserId,
    /// When it was written.
    pub kept_at: i64,
}

/// A document's projection.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Projection {
    /// The record as it resolves now.
    pub record: SellRecord,
    /// Open conflicts, record conflict first, then by field.
    pub conflicts: Vec<Conflict>,
    /// Notifications for the authors of values that lost (notify and keep-server tiers).
    pub notifications: Vec<Notification>,
    /// The audit trail, oldest first: recorded entries plus automatic resolutions not yet recorded.
    pub audit: Vec<AuditEntry>,
}

/// What may be sent to the CRM: only resolved fields, never one in open conflict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PushView {
    /// Local id.
    pub id: RecordId,
    /// Deal or contact.
    pub kind: RecordKind,
    /// The CRM's id, once known.
    pub crm_id: Option<u64>,
    /// What to do with the record as a whole.
    pub action: PushAction,
    /// Fields that may be sent.
    pub fields: BTreeMap<FieldKey, Value>,
    /// Fields held back, each with the reason.
    pub held: BTreeMap<String, String>,
    /// The merged tag set (Sell replaces tags wholesale).
    pub tags: BTreeSet<String>,
    /// Activities and their sendable fields.
    pub activities: Vec<ActivityPush>,
}

/// What to do with a record in the CRM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PushAction {
    /// Create or update it.
    Upsert,
    /// Delete it.
    Delete,
    /// Nothing: a record conflict is open.
    Hold,
}

/// An activity as it may be sent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActivityPush {
    /// Local id.
    pub id: ActivityId,
    /// Note, task or call.
    pub kind: ActivityKind,
    /// The CRM's id, once known.
    pub crm_id: Option<u64>,
    /// Deleted by a user.
    pub deleted: bool,
    /// A note's text.
    pub content: Option<String>,
    /// Sendable fields.
    pub fields: BTreeMap<FieldKey, Value>,
}

/// How a slot's registers resolve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Never written.
    Empty,
    /// One value (a single register, or several with the same value): the index of the latest.
    Value(usize),
    /// Several values; the tier picked the one at this index. Losers go to the audit trail.
    Auto(usize),
    /// Several values on a manual field: open conflict.
    Conflict,
}

/// One slot, analysed.
#[derive(Debug, Clone)]
pub(crate) struct SlotAnalysis<'a> {
    pub(crate) slot: Slot,
    pub(crate) tier: Tier,
    pub(crate) repr_def: Option<FieldDef<'a>>,
    pub(crate) candidates: Vec<Found>,
    pub(crate) values: Vec<Result<Value, String>>,
    pub(crate) outcome: Outcome,
}

impl SlotAnalysis<'_> {
    pub(crate) fn candidate_views(&self) -> Vec<Candidate> {
        self.candidates
            .iter()
            .zip(&self.values)
            .map(|(f, v)| candidate_view(f, v))
            .collect()
    }

    pub(crate) fn ops(&self) -> Vec<String> {
        self.candidates.iter().map(|f| f.op.to_string()).collect()
    }

    /// The resolved value, unless the slot is in open conflict.
    pub(crate) fn resolved(&self) -> Option<(&Found, &Result<Value, String>)> {
        match self.outcome {
            Outcome::Value(i) | Outcome::Auto(i) => Some((&self.candidates[i], &self.values[i])),
            Outcome::Conflict | Outcome::Empty => None,
        }
    }

    /// The automatic resolution this slot implies, as an audit entry.
    pub(crate) fn automatic_entry(&self) -> Option<AuditEntry> {
        let Outcome::Auto(w) = self.outcome else {
            return None;
        };
        let winner = &self.candidates[w];
        let ops = self.ops();
        Some(AuditEntry {
            id: entry_id(&["auto", &self.slot.to_string(), &ops.join(",")]),
            slot: Some(self.slot.clone()),
            policy: self.tier.as_str().to_owned(),
            candidates: self.candidate_views(),
            chosen: Chosen::Value(value_or_text(&self.values[w])),
            chosen_op: Some(winner.op.to_string()),
            by: None,
            device: None,
            at: winner.reg.at,
        })
    }
}

fn value_or_text(v: &Result<Value, String>) -> Value {
    match v {
        Ok(v) => v.clone(),
        Err(raw) => Value::Text(raw.clone()),
    }
}

fn candidate_view(f: &Found, v: &Result<Value, String>) -> Candidate {
    Candidate {
        value: value_or_text(v),
        at: f.reg.at,
        by: f.reg.by,
        device: f.reg.device.clone(),
        op: f.op.to_string(),
    }
}

/// A short stable id from parts: the first 16 hex digits of their SHA-256.
pub(crate) fn entry_id(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..8])
}

/// The record's deletion state, analysed.
#[derive(Debug, Clone)]
pub(crate) struct DeletionAnalysis {
    pub(crate) deletes: Vec<Candidate>,
    pub(crate) restores: Vec<Candidate>,
    pub(crate) unseen: u64,
    pub(crate) state: RecordState,
    pub(crate) ops: Vec<String>,
}

impl RecordDoc {
    pub(crate) fn analyse_deletion(&self, snap: &Snapshot) -> DeletionAnalysis {
        let found = &snap.deleted;
        let total = snap.edits;
        let mut deletes = Vec::new();
        let mut restores = Vec::new();
        let mut max_seen = 0u64;
        for f in found {
            match &f.reg.value {
                Scalar::Int(seen) => {
                    max_seen = max_seen.max(u64::try_from(*seen).unwrap_or(0));
                    deletes.push(candidate_view(f, &Ok(Value::Int(*seen))));
                }
                _ => restores.push(candidate_view(f, &Ok(Value::Null))),
            }
        }
        let unseen = total.saturating_sub(max_seen);
        let state = if deletes.is_empty() {
            RecordState::Live
        } else if !restores.is_empty() || unseen > 0 {
            RecordState::InConflict
        } else {
            RecordState::Deleted
        };
        let ops = found.iter().map(|f| f.op.to_string()).collect();
        DeletionAnalysis {
            deletes,
            restores,
            unseen,
            state,
            ops,
        }
    }

    pub(crate) fn analyse_slot<'a>(
        &self,
        snap: &Snapshot,
        catalog: &'a Catalog,
        policy: &Policy,
        scope: &Scope,
        key: &FieldKey,
    ) -> SlotAnalysis<'a> {
        let candidates = snap.candidates(scope, key).to_vec();
        let def = validate::field_def(catalog, self.kind, scope, key);
        let repr = def.map_or(Repr::Any, |d| d.repr());
        let values: Vec<Result<Value, String>> = candidates
            .iter()
            .map(|f| Value::from_scalar(repr, &f.reg.value))
            .collect();
        let tier = policy.tier(self.kind, scope, key);
        let outcome = resolve_outcome(tier, &candidates);
        SlotAnalysis {
            slot: Slot {
                activity: match scope {
                    Scope::Record => None,
                    Scope::Activity { id, .. } => Some(id.clone()),
                },
                field: key.clone(),
            },
            tier,
            repr_def: def,
            candidates,
            values,
            outcome,
        }
    }

    pub(crate) fn analyse_all<'a>(
        &self,
        snap: &Snapshot,
        catalog: &'a Catalog,
        policy: &Policy,
    ) -> Vec<SlotAnalysis<'a>> {
        snap.slots()
            .into_iter()
            .map(|(scope, key)| self.analyse_slot(snap, catalog, policy, &scope, &key))
            .filter(|a| !a.candidates.is_empty())
            .collect()
    }

    pub(crate) fn stored_audit(snap: &Snapshot) -> BTreeMap<String, AuditEntry> {
        snap.audit
            .iter()
            .filter_map(|(k, json)| {
                Some((k.clone(), serde_json::from_str::<AuditEntry>(json).ok()?))
            })
            .collect()
    }

    /// Projects the document: the record, its open conflicts, notifications and audit trail.
    pub fn project(&self, ctx: &ProjectCtx<'_>) -> Projection {
        let snap = self.snapshot();
        let deletion = self.analyse_deletion(&snap);
        let analyses = self.analyse_all(&snap, ctx.catalog, ctx.policy);
        let mut conflicts = Vec::new();
        let mut fields = BTreeMap::new();
        let mut activity_fields: BTreeMap<ActivityId, BTreeMap<FieldKey, Value>> = BTreeMap::new();
        let mut audit = RecordDoc::stored_audit(&snap);

        for a in &analyses {
            if let Some(entry) = a.automatic_entry() {
                audit.entry(entry.id.clone()).or_insert(entry);
            }
            let Some((_, value)) = a.resolved() else {
                conflicts.push(Conflict::Field {
                    slot: a.slot.clone(),
                    tier: a.tier,
                    candidates: a.candidate_views(),
                });
                continue;
            };
            let shown = value_or_text(value);
            match &a.slot.activity {
                None => {
                    fields.insert(a.slot.field.clone(), shown.clone());
                }
                Some(id) => {
                    activity_fields
                        .entry(id.clone())
                        .or_default()
                        .insert(a.slot.field.clone(), shown.clone());
                }
            }
            // Validation against the catalog, and relationships.
            let problem = match (&a.repr_def, value) {
                (None, _) => Some(format!(
                    "{} is not a field of this record (any more)",
                    a.slot.field
                )),
                (Some(_), Err(raw)) => Some(format!(
                    "stored value {raw:?} is not {}",
                    a.repr_def.map_or(Repr::Any, |d| d.repr()).describe()
                )),
                (Some(def), Ok(v)) => validate::check(ctx.catalog, *def, v).err(),
            };
            if let Some(message) = problem {
                conflicts.push(Conflict::Validation {
                    slot: a.slot.clone(),
                    value: shown.to_string(),
                    message,
                    source: "catalog".into(),
                });
            }
            if let (Some(FieldDef::Std(spec)), Ok(Value::Record(target))) = (&a.repr_def, value)
                && spec.ty == FieldType::Contact
            {
                let status = ctx.directory.contact(target);
                if status != RefStatus::Live {
                    conflicts.push(Conflict::Relationship {
                        slot: a.slot.clone(),
                        target: target.clone(),
                        status,
                    });
                }
            }
        }

        // Required fields.
        if deletion.state == RecordState::Live {
            for key in required_fields(self.kind, ctx.catalog, &fields) {
                let missing = fields.get(&key).is_none_or(|v| *v == Value::Null);
                let conflicted = conflicts.iter().any(|c| {
                    c.slot()
                        .is_some_and(|s| s.activity.is_none() && s.field == key)
                });
                if missing && !conflicted {
                    conflicts.push(Conflict::Validation {
                        slot: Slot::record(key.clone()),
                        value: Value::Null.to_string(),
                        message: format!("{key} is required"),
                        source: "catalog".into(),
                    });
                }
            }
        }

        let activities = activity_views(&snap, &mut activity_fields);
        if deletion.state == RecordState::InConflict {
            conflicts.push(Conflict::Record {
                deleted_by: deletion.deletes.clone(),
                restored_by: deletion.restores.clone(),
                unseen_edits: deletion.unseen,
                held_activities: activities
                    .iter()
                    .filter(|a| !a.deleted)
                    .map(|a| a.id.clone())
                    .collect(),
            });
        }
        conflicts.extend(flag_conflicts(&snap, &analyses));
        conflicts.sort_by(|a, b| {
            (a.order(), a.slot())
                .cmp(&(b.order(), b.slot()))
                .then_with(|| {
                    serde_json::to_string(a)
                        .unwrap_or_default()
                        .cmp(&serde_json::to_string(b).unwrap_or_default())
                })
        });

        let mut audit: Vec<AuditEntry> = audit.into_values().collect();
        audit.sort_by(|a, b| (a.at, &a.id).cmp(&(b.at, &b.id)));
        let notifications = notifications_of(&self.id, &audit);

        Projection {
            record: SellRecord {
                id: self.id.clone(),
                kind: self.kind,
                crm_id: snap.crm_id,
                state: deletion.state,
                fields,
                tags: snap.tags.keys().cloned().collect(),
                activities,
            },
            conflicts,
            notifications,
            audit,
        }
    }

    /// Every register currently written for `slot` (one, or several when writes were
    /// concurrent), oldest first by the LWW order. Empty for a field never written or an unknown
    /// activity.
    pub fn field_candidates(
        &self,
        catalog: &Catalog,
        policy: &Policy,
        slot: &Slot,
    ) -> Vec<Candidate> {
        let snap = self.snapshot();
        let scope = match &slot.activity {
            None => Scope::Record,
            Some(id) => match snap.activity_scope(id) {
                Some(scope) => scope,
                None => return Vec::new(),
            },
        };
        self.analyse_slot(&snap, catalog, policy, &scope, &slot.field)
            .candidate_views()
    }

    /// The push view of a projection made from this document.
    pub fn push_view(&self, projection: &Projection) -> PushView {
        push_view_of(projection)
    }
}

fn activity_views(
    snap: &Snapshot,
    activity_fields: &mut BTreeMap<ActivityId, BTreeMap<FieldKey, Value>>,
) -> Vec<ActivityView> {
    snap.activities
        .iter()
        .map(|(id, a)| {
            let first = a.born.first();
            ActivityView {
                fields: activity_fields.remove(id).unwrap_or_default(),
                id: id.clone(),
                kind: a.kind,
                crm_id: a.crm_id,
                deleted: a
                    .deleted
                    .last()
                    .is_some_and(|f| f.reg.value == Scalar::Bool(true)),
                created_by: first.map_or(UserId(0), |f| f.reg.by),
                created_at: first.map_or(0, |f| f.reg.at),
                content: a.content.clone(),
            }
        })
        .collect()
}

/// What a CRM refusal shows, while it stands. A field flag stands while the field's candidates
/// are exactly those refused; an activity flag while the activity is live and unchanged since
/// (its fingerprint); a record flag until it is retried.
fn flag_conflicts(snap: &Snapshot, analyses: &[SlotAnalysis<'_>]) -> Vec<Conflict> {
    let mut out = Vec::new();
    for json in snap.flags.values() {
        let Ok(flag) = serde_json::from_str::<Flag>(json) else {
            continue;
        };
        if !flag.stands(snap, analyses) {
            continue;
        }
        out.push(match (flag.activity(), flag.slot, flag.kind) {
            (Some(activity), slot, refusal) => Conflict::Refused {
                activity: Some(activity),
                field: slot.map(|s| s.field),
                refusal,
                message: flag.message,
                at: flag.at,
            },
            (None, Some(slot), FlagKind::Validation) => {
                let value = analyses
                    .iter()
                    .find(|a| a.slot == slot)
                    .and_then(|a| a.resolved().map(|(_, v)| value_or_text(v).to_string()))
                    .unwrap_or_default();
                Conflict::Validation {
                    slot,
                    value,
                    message: flag.message,
                    source: "crm".into(),
                }
            }
            (None, slot @ Some(_), FlagKind::Permission) => Conflict::Permission {
                slot,
                message: flag.message,
                at: flag.at,
            },
            // The record as a whole: a validation refusal is not a lack of permission.
            (None, None, FlagKind::Validation) => Conflict::Refused {
                activity: None,
                field: None,
                refusal: FlagKind::Validation,
                message: flag.message,
                at: flag.at,
            },
            (None, None, FlagKind::Permission) => Conflict::Permission {
                slot: None,
                message: flag.message,
                at: flag.at,
            },
        });
    }
    out
}

/// What the CRM was sent of an activity: its text and the operations of its field values. A
/// refusal of the activity stands while this is unchanged; `None` once the activity is deleted
/// (or unknown).
pub(crate) fn activity_fingerprint(snap: &Snapshot, id: &ActivityId) -> Option<String> {
    let a = snap.activities.get(id)?;
    if a.deleted
        .last()
        .is_some_and(|f| f.reg.value == Scalar::Bool(true))
    {
        return None;
    }
    let mut parts = vec![
        "activity".to_owned(),
        id.to_string(),
        a.content.clone().unwrap_or_default(),
    ];
    for (key, regs) in &a.fields {
        parts.push(key.clone());
        parts.extend(regs.iter().map(|f| f.op.to_string()));
    }
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    Some(entry_id(&parts))
}

impl Flag {
    /// The note, task or call the flag is about, if any (flags written before activity flags
    /// had their own key name it in their slot).
    pub fn activity(&self) -> Option<ActivityId> {
        self.activity
            .clone()
            .or_else(|| self.slot.as_ref().and_then(|s| s.activity.clone()))
    }

    fn stands(&self, snap: &Snapshot, analyses: &[SlotAnalysis<'_>]) -> bool {
        match (self.activity(), &self.slot) {
            (Some(id), _) => activity_fingerprint(snap, &id)
                .is_some_and(|fp| self.against == std::slice::from_ref(&fp)),
            (None, Some(slot)) => {
                let current = analyses
                    .iter()
                    .find(|a| &a.slot == slot)
                    .map(SlotAnalysis::ops)
                    .unwrap_or_default();
                current == self.against
            }
            (None, None) => true,
        }
    }
}

/// What the CRM refused, reported by the bridge and kept in the document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flag {
    /// Validation or permission.
    pub kind: FlagKind,
    /// The field, or none for the whole record (or activity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<Slot>,
    /// The note, task or call refused (then `slot`, if any, names its field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activity: Option<ActivityId>,
    /// The CRM's message.
    pub message: String,
    /// What the CRM refused: the candidate operations of a field, or an activity's fingerprint.
    /// The flag lapses once that changes (the field written again, the activity edited).
    #[serde(default)]
    pub against: Vec<String>,
    /// When it was reported (ms).
    pub at: i64,
}

/// The kind of a CRM refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlagKind {
    /// A 422: the CRM does not accept the value.
    Validation,
    /// A 403: the user may not make this change, or no longer sees the record.
    Permission,
}

fn resolve_outcome(tier: Tier, candidates: &[Found]) -> Outcome {
    let Some(last) = candidates.len().checked_sub(1) else {
        return Outcome::Empty;
    };
    let distinct = candidates
        .iter()
        .any(|c| c.reg.value != candidates[last].reg.value);
    if !distinct {
        return Outcome::Value(last);
    }
    match tier {
        Tier::Manual => Outcome::Conflict,
        Tier::KeepServer => {
            let crm = candidates.iter().rposition(|c| c.reg.device.is_crm());
            Outcome::Auto(crm.unwrap_or(last))
        }
        Tier::Lww | Tier::Notify | Tier::Merge => Outcome::Auto(last),
    }
}

fn required_fields(
    kind: RecordKind,
    catalog: &Catalog,
    fields: &BTreeMap<FieldKey, Value>,
) -> Vec<FieldKey> {
    let mut out: Vec<FieldKey> = crate::schema::record_fields(kind)
        .iter()
        .filter(|s| s.required)
        .map(|s| FieldKey::std(s.name))
        .collect();
    // Sell requires a name for an organization and a last name for a person.
    if kind == RecordKind::Contact {
        let organization =
            fields.get(&FieldKey::std("is_organization")) == Some(&Value::Bool(true));
        out.push(FieldKey::std(if organization {
            "name"
        } else {
            "last_name"
        }));
    }
    if catalog.loaded
        && let Some(defs) = catalog.custom_fields.get(&kind)
    {
        out.extend(
            defs.values()
                .filter(|d| d.required)
                .map(|d| FieldKey::custom(&d.name)),
        );
    }
    out
}

/// One notification per value that lost, per record: its id names the record, the field and the
/// losing operation, so the same loss recorded by several audit entries (replicas that resolved
/// it with different candidate sets) or in another record with the same history gives one
/// notification each. The earliest entry (audit order) says what was kept.
fn notifications_of(record: &RecordId, audit: &[AuditEntry]) -> Vec<Notification> {
    let mut out: Vec<Notification> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for entry in audit {
        if entry.policy != Tier::Notify.as_str() && entry.policy != Tier::KeepServer.as_str() {
            continue;
        }
        let (Some(slot), Chosen::Value(kept), Some(chosen_op)) =
            (&entry.slot, &entry.chosen, &entry.chosen_op)
        else {
            continue;
        };
        let Some(winner) = entry.candidates.iter().find(|c| &c.op == chosen_op) else {
            continue;
        };
        for loser in entry
            .candidates
            .iter()
            .filter(|c| &c.op != chosen_op && c.value != *kept)
        {
            let id = entry_id(&[
                "notification",
                record.as_str(),
                &slot.to_string(),
                &loser.op,
            ]);
            if !seen.insert(id.clone()) {
                continue;
            }
            out.push(Notification {
                id,
                to: loser.by,
                record: record.clone(),
                slot: slot.clone(),
                policy: entry.policy.clone(),
                yours: loser.value.clone(),
                kept: kept.clone(),
                kept_by: winner.by,
                kept_at: winner.at,
            });
        }
    }
    out
}

pub(crate) fn push_view_of(p: &Projection) -> PushView {
    let mut held = BTreeMap::new();
    for c in &p.conflicts {
        if let Some(slot) = c.slot() {
            let reason = match c {
                Conflict::Field { .. } => "open conflict",
                Conflict::Validation { .. } => "not accepted",
                Conflict::Relationship { .. } => "points at a missing record",
                Conflict::Permission { .. } => "not permitted",
                Conflict::Record { .. } | Conflict::Refused { .. } => "record conflict",
            };
            held.entry(slot.to_string())
                .or_insert_with(|| reason.to_owned());
        }
    }
    // A refused activity waits alone; the rest of the record still goes.
    let refused: BTreeSet<&ActivityId> = p
        .conflicts
        .iter()
        .filter_map(|c| match c {
            Conflict::Refused {
                activity: Some(id), ..
            } => Some(id),
            _ => None,
        })
        .collect();
    for id in &refused {
        held.insert(id.to_string(), "refused by the CRM".into());
    }
    let record_blocked = p.conflicts.iter().any(|c| {
        matches!(
            c,
            Conflict::Record { .. }
                | Conflict::Permission { slot: None, .. }
                | Conflict::Refused { activity: None, .. }
        )
    });
    let action = match (record_blocked, p.record.state) {
        (true, _) | (_, RecordState::InConflict) => PushAction::Hold,
        (false, RecordState::Deleted) => PushAction::Delete,
        (false, RecordState::Live) => PushAction::Upsert,
    };
    let sendable = |slot: &Slot| !held.contains_key(&slot.to_string());
    let fields = if action == PushAction::Upsert {
        p.record
            .fields
            .iter()
            .filter(|(k, _)| sendable(&Slot::record((*k).clone())))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    } else {
        BTreeMap::new()
    };
    let activities = if action == PushAction::Upsert {
        p.record
            .activities
            .iter()
            .filter(|a| !refused.contains(&a.id))
            .map(|a| ActivityPush {
                id: a.id.clone(),
                kind: a.kind,
                crm_id: a.crm_id,
                deleted: a.deleted,
                content: a.content.clone(),
                fields: a
                    .fields
                    .iter()
                    .filter(|(k, _)| {
                        sendable(&Slot {
                            activity: Some(a.id.clone()),
                            field: (*k).clone(),
                        })
                    })
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            })
            .collect()
    } else {
        Vec::new()
    };
    if action == PushAction::Hold {
        held.insert("record".into(), "record conflict".into());
    }
    PushView {
        id: p.record.id.clone(),
        kind: p.record.kind,
        crm_id: p.record.crm_id,
        action,
        fields,
        held,
        tags: p.record.tags.clone(),
        activities,
    }
}
