//! Push planning and outcomes.
//!
//! [`plan`] turns each record's push view and shadow into CRM requests: only the fields whose
//! resolved value differs from the shadow (held fields are never in a push view), tags as the
//! whole merged set, creates before updates, deletes last, contacts before deals before notes,
//! tasks and calls; a record whose reference (or an activity whose parent) has no CRM id yet
//! waits. [`on_success`] and [`on_refused`] write what an answer means into the document and the
//! shadow.

use std::collections::{BTreeMap, BTreeSet};

use sellsync_model::{
    ActivityId, ActivityKind, EditCtx, FieldKey, FlagKind, PushAction, PushView, RecordDoc,
    RecordId, RecordKind, RecordRef, Slot, Value,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json, json};

use crate::crm::{CrmRequest, Resource};
use crate::mapping::{self, Image, body_of};
use crate::pull::{self, ActivityShadow, PullError, Shadow, WriteCtx, hex_heads};

/// What a planned request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    /// Create in the CRM.
    Create,
    /// Update only the given fields.
    Update,
    /// Delete.
    Delete,
}

/// What a planned request is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Target {
    /// The record itself.
    Record,
    /// One of its notes, tasks or calls.
    Activity {
        /// Its id.
        id: ActivityId,
        /// Its kind.
        kind: ActivityKind,
    },
}

/// One request of a push, with what is needed to interpret its answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedOp {
    /// The record's document.
    pub record: RecordId,
    /// The record's kind.
    pub kind: RecordKind,
    /// The record or one of its activities.
    pub target: Target,
    /// Create, update or delete.
    pub op: OpKind,
    /// The CRM resource.
    pub resource: Resource,
    /// The CRM id (update, delete).
    pub crm_id: Option<u64>,
    /// The attributes sent (create, update).
    pub body: Map<String, Json>,
    /// The fields the body carries (for flags on a 422).
    pub fields: Vec<FieldKey>,
    /// The document heads (hex) whose resolved values are being sent.
    pub basis: Vec<String>,
    /// Whether the record had held fields when planned (then the shadow heads stay put).
    pub held: bool,
    /// For an update of a record: the `updated_at` the shadow saw (re-read and compare first).
    pub expect_updated_at: Option<String>,
}

impl PlannedOp {
    /// The request that carries out this operation.
    pub fn request(&self) -> CrmRequest {
        match (self.op, self.crm_id) {
            (OpKind::Create, _) | (_, None) => CrmRequest::Create {
                resource: self.resource,
                body: self.body.clone(),
            },
            (OpKind::Update, Some(id)) => CrmRequest::Update {
                resource: self.resource,
                id,
                body: self.body.clone(),
            },
            (OpKind::Delete, Some(id)) => CrmRequest::Delete {
                resource: self.resource,
                id,
            },
        }
    }

    fn order(&self) -> (u8, u8, u8, RecordId, Target) {
        let rank = match self.target {
            Target::Record => self.resource.push_rank(),
            Target::Activity { .. } => 2,
        };
        let (phase, rank) = match self.op {
            OpKind::Create => (0, rank),
            OpKind::Update => (1, rank),
            // Deletes last, children before their records, deals before contacts.
            OpKind::Delete => (2, 2 - rank),
        };
        (phase, rank, 0, self.record.clone(), self.target.clone())
    }
}

/// One record as the push sees it.
#[derive(Debug, Clone, Copy)]
pub struct PushInput<'a> {
    /// Its push view (from its current projection).
    pub view: &'a PushView,
    /// Its shadow, once the CRM has it.
    pub shadow: Option<&'a Shadow>,
    /// The document heads (hex) the view was made at.
    pub heads: &'a [String],
}

/// The planned requests, in order, and the records that wait.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Requests, in the order they must go.
    pub ops: Vec<PlannedOp>,
    /// Records or activities that wait, with the reason.
    pub waiting: Vec<(RecordId, String)>,
}

/// Replaces references to records created offline by their CRM ids; `None` when one has none.
fn resolve_refs(
    fields: &[(FieldKey, Value)],
    crm_id_of: &dyn Fn(&RecordId) -> Option<u64>,
) -> Option<Vec<(FieldKey, Value)>> {
    fields
        .iter()
        .map(|(k, v)| match v {
            Value::Record(RecordRef::Local(id)) => {
                crm_id_of(id).map(|c| (k.clone(), Value::Record(RecordRef::Crm(c))))
            }
            _ => Some((k.clone(), v.clone())),
        })
        .collect()
}

fn resource_of(kind: RecordKind) -> Resource {
    match kind {
        RecordKind::Deal => Resource::Deal,
        RecordKind::Contact => Resource::Contact,
    }
}

fn activity_resource(kind: ActivityKind) -> Resource {
    match kind {
        ActivityKind::Note => Resource::Note,
        ActivityKind::Task => Resource::Task,
        ActivityKind::Call => Resource::Call,
    }
}

/// Plans the push of every record. `crm_id_of` gives the CRM id of any record (for references
/// to records created offline).
pub fn plan(records: &[PushInput<'_>], crm_id_of: &dyn Fn(&RecordId) -> Option<u64>) -> Plan {
    let mut out = Plan::default();
    for input in records {
        plan_record(input, crm_id_of, &mut out);
    }
    out.ops.sort_by_key(PlannedOp::order);
    out
}

fn plan_record(
    input: &PushInput<'_>,
    crm_id_of: &dyn Fn(&RecordId) -> Option<u64>,
    out: &mut Plan,
) {
    let v = input.view;
    let base = PlannedOp {
        record: v.id.clone(),
        kind: v.kind,
        target: Target::Record,
        op: OpKind::Update,
        resource: resource_of(v.kind),
        // The shadow, not the document, says whether the CRM holds the record: a record the
        // CRM deleted has none (its document may still name the old id), so that restoring it
        // creates it again under a new id.
        crm_id: input.shadow.map(|s| s.crm_id),
        body: Map::new(),
        fields: Vec::new(),
        basis: input.heads.to_vec(),
        held: !v.held.is_empty(),
        expect_updated_at: None,
    };
    match (v.action, base.crm_id) {
        (PushAction::Hold, _) => {
            out.waiting
                .push((v.id.clone(), "a record conflict is open".into()));
            return;
        }
        (PushAction::Delete, Some(_)) => {
            out.ops.push(PlannedOp {
                op: OpKind::Delete,
                ..base
            });
            return;
        }
        (PushAction::Delete, None) => return,
        (PushAction::Upsert, _) => {}
    }
    let empty = Image::default();
    let shadow_image = input.shadow.map_or(&empty, |s| &s.image);
    let changed: Vec<(FieldKey, Value)> = v
        .fields
        .iter()
        .filter(|(k, val)| {
            shadow_image.get(k) != **val
                && (base.crm_id.is_none()
                    || !matches!(k, FieldKey::Std(n) if n == "is_organization"))
        })
        .map(|(k, val)| (k.clone(), val.clone()))
        .collect();
    let Some(changed) = resolve_refs(&changed, crm_id_of) else {
        out.waiting
            .push((v.id.clone(), "a referenced record has no CRM id yet".into()));
        return;
    };
    let mut body = body_of(&changed).unwrap_or_default();
    if v.tags != shadow_image.tags {
        body.insert("tags".into(), json!(v.tags));
    }
    let fields: Vec<FieldKey> = changed.iter().map(|(k, _)| k.clone()).collect();
    match base.crm_id {
        None => out.ops.push(PlannedOp {
            op: OpKind::Create,
            body,
            fields,
            ..base.clone()
        }),
        Some(_) if !body.is_empty() => out.ops.push(PlannedOp {
            body,
            fields,
            expect_updated_at: shadow_image.updated_at.clone(),
            ..base.clone()
        }),
        Some(_) => {}
    }
    plan_activities(input, &base, out);
}

fn plan_activities(input: &PushInput<'_>, base: &PlannedOp, out: &mut Plan) {
    let v = input.view;
    let parent = base.crm_id;
    for a in &v.activities {
        let shadow = input.shadow.and_then(|s| s.activities.get(&a.id));
        let mut fields: Vec<(FieldKey, Value)> = a.fields.clone().into_iter().collect();
        if let Some(c) = &a.content {
            fields.push((FieldKey::std("content"), Value::Text(c.clone())));
        }
        let op = |op: OpKind, crm_id, body, fields| PlannedOp {
            target: Target::Activity {
                id: a.id.clone(),
                kind: a.kind,
            },
            op,
            resource: activity_resource(a.kind),
            crm_id,
            body,
            fields,
            expect_updated_at: None,
            ..base.clone()
        };
        // As for the record: the shadow says whether the CRM holds the activity.
        match (shadow.map(|s| s.crm_id), a.deleted) {
            (None, true) => {}
            (Some(id), true) => out
                .ops
                .push(op(OpKind::Delete, Some(id), Map::new(), vec![])),
            (None, false) => {
                let Some(parent) = parent else {
                    out.waiting.push((
                        v.id.clone(),
                        format!("{} waits for its record's CRM id", a.id),
                    ));
                    continue;
                };
                let Some(mut body) = body_of(&fields) else {
                    continue;
                };
                match (a.kind, v.kind) {
                    (ActivityKind::Call, RecordKind::Deal) => {
                        body.insert("associated_deal_ids".into(), json!([parent]));
                    }
                    _ => {
                        body.insert("resource_type".into(), json!(v.kind.as_str()));
                        body.insert("resource_id".into(), json!(parent));
                    }
                }
                let keys = fields.iter().map(|(k, _)| k.clone()).collect();
                out.ops.push(op(OpKind::Create, None, body, keys));
            }
            (Some(id), false) => {
                let old = shadow.map(|s| s.image.clone()).unwrap_or_default();
                let changed: Vec<(FieldKey, Value)> = fields
                    .into_iter()
                    .filter(|(k, val)| old.get(k) != *val)
                    .collect();
                if changed.is_empty() {
                    continue;
                }
                let Some(body) = body_of(&changed) else {
                    continue;
                };
                let keys = changed.iter().map(|(k, _)| k.clone()).collect();
                out.ops.push(op(OpKind::Update, Some(id), body, keys));
            }
        }
    }
}

/// Why an outcome could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum OutcomeError {
    /// The CRM's answer does not map.
    #[error(transparent)]
    Map(#[from] mapping::MapError),
    /// The document refused the write.
    #[error(transparent)]
    Pull(Box<PullError>),
    /// The document refused a flag or id.
    #[error(transparent)]
    Resolve(Box<sellsync_model::ResolveError>),
    /// An update or delete of a record the bridge has no shadow for.
    #[error("no shadow for {0}")]
    NoShadow(RecordId),
}

impl From<PullError> for OutcomeError {
    fn from(e: PullError) -> Self {
        OutcomeError::Pull(Box::new(e))
    }
}

impl From<sellsync_model::ResolveError> for OutcomeError {
    fn from(e: sellsync_model::ResolveError) -> Self {
        OutcomeError::Resolve(Box::new(e))
    }
}

/// Records a 2xx: the shadow advances to the CRM's answer (and, for a record that had no held
/// fields, to the heads that were sent), and the CRM id is recorded on a create. `data` is the
/// answer's object (`Json::Null` for a delete).
pub fn on_success(
    doc: &mut RecordDoc,
    shadow: &mut Option<Shadow>,
    op: &PlannedOp,
    data: &Json,
    ctx: &WriteCtx<'_>,
) -> Result<(), OutcomeError> {
    match (&op.target, op.op) {
        (Target::Record, OpKind::Delete) => {
            *shadow = None;
        }
        (Target::Record, _) => {
            let (crm_id, image) = mapping::record_image(op.kind, data, ctx.catalog)?;
            if op.op == OpKind::Create {
                doc.set_crm_id(ctx.now_ms, crm_id)
                    .map_err(PullError::from)?;
            }
            match shadow {
                Some(s) => {
                    s.image = image;
                    if !op.held {
                        s.heads = op.basis.clone();
                    }
                }
                None => {
                    // What the create did not send but the CRM filled in itself (a default
                    // stage, `hot: false`) is the CRM's value: the shadow starts from what was
                    // sent, and the answer is written into the document as a pull on that basis.
                    // Invariant: the shadow's image is what the document holds at its heads.
                    let mut sent = image.clone();
                    sent.fields.retain(|k, _| op.fields.contains(k));
                    let mut s = Shadow {
                        record: op.record.clone(),
                        kind: op.kind,
                        crm_id,
                        image: sent,
                        heads: op.basis.clone(),
                        activities: BTreeMap::new(),
                        refused: BTreeMap::new(),
                    };
                    crate::pull::pull_update(doc, &mut s, image, ctx)?;
                    *shadow = Some(s);
                }
            }
        }
        (Target::Activity { id, kind }, o) => {
            let s = shadow
                .as_mut()
                .ok_or_else(|| OutcomeError::NoShadow(op.record.clone()))?;
            if o == OpKind::Delete {
                s.activities.remove(id);
                return Ok(());
            }
            let (crm_id, _, image) = mapping::activity_image(*kind, data)?;
            if o == OpKind::Create {
                doc.set_activity_crm_id(ctx.now_ms, id, crm_id)?;
            }
            s.activities.insert(
                id.clone(),
                ActivityShadow {
                    kind: *kind,
                    crm_id,
                    image,
                },
            );
        }
    }
    Ok(())
}

/// The field a 422's pointer names, if the operation sent it.
pub fn field_of_pointer(op: &PlannedOp, pointer: Option<&str>) -> Option<FieldKey> {
    let p = pointer?;
    let key = match p.split_once('/') {
        Some(("custom_fields", name)) => FieldKey::custom(name),
        Some(("address", part)) => FieldKey::std(&format!("address.{part}")),
        _ => FieldKey::std(p),
    };
    op.fields.contains(&key).then_some(key)
}

/// Records a refusal (422 or 403) as a conflict on the thing refused, so that nothing waits
/// without a conflict a person can see and settle:
/// - a note, task or call: a flag on the activity (it is held back alone; never sent in part);
/// - a field of the record the CRM named: a flag on that field; the returned field lets the
///   caller send the record's other fields without it ([`without_field`]);
/// - a 422 on an update of the record naming no field it sent: a flag on every field sent;
/// - otherwise (a 403, a create, an update of tags alone): a flag on the record.
pub fn on_refused(
    doc: &mut RecordDoc,
    op: &PlannedOp,
    kind: FlagKind,
    pointer: Option<&str>,
    message: &str,
    ctx: &EditCtx<'_>,
) -> Result<Option<FieldKey>, OutcomeError> {
    let field = field_of_pointer(op, pointer);
    match (&op.target, field) {
        (Target::Activity { id, .. }, field) => {
            doc.report_activity_rejection(ctx, id, field.as_ref(), kind, message)?;
            Ok(None)
        }
        (Target::Record, Some(field)) => {
            doc.report_rejection(ctx, Some(&Slot::record(field.clone())), kind, message)?;
            Ok(Some(field))
        }
        (Target::Record, None)
            if kind == FlagKind::Validation && op.op == OpKind::Update && !op.fields.is_empty() =>
        {
            for field in &op.fields {
                doc.report_rejection(ctx, Some(&Slot::record(field.clone())), kind, message)?;
            }
            Ok(None)
        }
        (Target::Record, None) => {
            doc.report_rejection(ctx, None, kind, message)?;
            Ok(None)
        }
    }
}

/// The same operation without `field` (the rest of the record still goes), or `None` when
/// nothing would be left to send.
pub fn without_field(op: &PlannedOp, field: &FieldKey) -> Option<PlannedOp> {
    let fields: Vec<FieldKey> = op.fields.iter().filter(|f| *f != field).cloned().collect();
    let mut body = op.body.clone();
    match field {
        FieldKey::Custom(name) => {
            if let Some(Json::Object(m)) = body.get_mut("custom_fields") {
                m.remove(name);
                if m.is_empty() {
                    body.remove("custom_fields");
                }
            }
        }
        FieldKey::Std(name) => match name.split_once('.') {
            Some((outer, inner)) => {
                if let Some(Json::Object(m)) = body.get_mut(outer) {
                    m.remove(inner);
                    if m.is_empty() {
                        body.remove(outer);
                    }
                }
            }
            None => {
                body.remove(name);
            }
        },
    }
    (!body.is_empty()).then(|| PlannedOp {
        body,
        fields,
        // The record is not fully pushed: the shadow heads must not move past it.
        held: true,
        ..op.clone()
    })
}

/// A 404 on an update: the CRM deleted what the update was for.
///
/// - The record: the delete is written on the shadow basis (a record conflict if devices edited
///   it since) and the shadow is dropped, because the CRM no longer holds the record: nothing
///   more is sent for it, and a restore creates it again under a new id.
/// - A note, task or call: its delete is written the same way, and it leaves the shadow.
pub fn on_gone(
    doc: &mut RecordDoc,
    shadow: &mut Option<Shadow>,
    op: &PlannedOp,
    ctx: &WriteCtx<'_>,
) -> Result<bool, OutcomeError> {
    let s = shadow
        .as_mut()
        .ok_or_else(|| OutcomeError::NoShadow(op.record.clone()))?;
    match (&op.target, op.crm_id) {
        (Target::Activity { .. }, Some(crm_id)) => {
            Ok(pull::pull_activity_delete(doc, s, crm_id, ctx)?)
        }
        _ => {
            let wrote = pull::pull_delete(doc, s, ctx)?;
            *shadow = None;
            Ok(wrote)
        }
    }
}

/// The heads of `doc` in hex (what [`PushInput::heads`] wants).
pub fn heads_of(doc: &RecordDoc) -> Vec<String> {
    hex_heads(&doc.heads())
}

/// Whether a record found by a lookup is the one a lost create made: every attribute sent is
/// present with the same value (tags as a set).
pub fn matches_sent(op: &PlannedOp, found: &Json) -> bool {
    fn same(sent: &Json, got: &Json) -> bool {
        match (sent, got) {
            (Json::Object(s), Json::Object(g)) => s
                .iter()
                .all(|(k, v)| same(v, g.get(k).unwrap_or(&Json::Null))),
            (Json::Array(s), Json::Array(g)) => {
                let a: BTreeSet<String> = s.iter().map(ToString::to_string).collect();
                let b: BTreeSet<String> = g.iter().map(ToString::to_string).collect();
                a == b
            }
            // Money and numbers may come back as integers or strings.
            (Json::String(s), Json::Number(n)) | (Json::Number(n), Json::String(s)) => {
                s.parse::<f64>().ok() == n.as_f64()
            }
            _ => sent == got,
        }
    }
    same(&Json::Object(op.body.clone()), found)
}

/// The lookup that finds a record a lost create may have made: a list filtered on the sent
/// name (or content, or parent) and sorted newest first. The caller checks each item with
/// [`matches_sent`].
pub fn lookup_request(op: &PlannedOp) -> CrmRequest {
    let mut filters = Vec::new();
    for key in [
        "name",
        "last_name",
        "resource_id",
        "resource_type",
        "contact_id",
    ] {
        match op.body.get(key) {
            Some(Json::String(s)) => filters.push((key.to_owned(), s.clone())),
            Some(Json::Number(n)) => filters.push((key.to_owned(), n.to_string())),
            _ => {}
        }
    }
    CrmRequest::List {
        resource: op.resource,
        page: 1,
        per_page: 100,
        filters,
        sort_by: Some("id:desc".into()),
    }
}

/// Exponential backoff with jitter: `base * 2^attempt` capped at `cap`, of which the upper half
/// is scaled by `jitter` (in `[0, 1]`, from the caller's random source).
pub fn backoff_ms(attempt: u32, base_ms: u64, cap_ms: u64, jitter: f64) -> u64 {
    let full = base_ms
        .saturating_mul(1u64.checked_shl(attempt.min(40)).unwrap_or(u64::MAX))
        .min(cap_ms);
    let half = full / 2;
    let j = if jitter.is_finite() {
        jitter.clamp(0.0, 1.0)
    } else {
        0.0
    };
    // Exact for any u64 below 2^53, which caps always are in practice.
    half + ((full - half) as f64 * j) as u64
}
