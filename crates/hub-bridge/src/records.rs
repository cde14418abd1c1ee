//! Blocking writes of the bridge into the hub's store: a record's document and its shadow (and
//! anything else of the same step, such as the push checkpoint) always change in one
//! transaction, so that after a crash the shadow heads never point past or short of what the
//! document holds.

use sellsync_bridge::mapping::{self, Image};
use sellsync_bridge::pull::{self, Shadow, WriteCtx};
use sellsync_model::{ActivityKind, Catalog, DeviceId, Policy, RecordDoc, RecordId, RecordKind};
use sellsync_service::Node;
use sellsync_store::{CrmId, DocBatch, StoreError, StoreRead, WriteBatch};

use crate::BridgeError;

/// kv key of the record that holds an activity, by the activity's CRM kind and id.
pub(crate) fn activity_key(kind: ActivityKind, crm_id: u64) -> String {
    format!("{}{crm_id}", activity_prefix(kind))
}

/// The prefix of [`activity_key`] for one kind.
pub(crate) fn activity_prefix(kind: ActivityKind) -> String {
    format!("bridge/activity/{}/", kind.as_str())
}

/// The prefix of the kv keys that mark a record's CRM id as confirmed deleted in the CRM by a
/// polling sweep (so that later sweeps do not read it again).
pub(crate) fn gone_prefix(kind: RecordKind) -> String {
    format!("bridge/poll/gone/{}/", kind.as_str())
}

/// Reads a record's shadow.
pub(crate) fn shadow_of(r: &impl StoreRead, id: &RecordId) -> Result<Option<Shadow>, BridgeError> {
    match r.shadow(id)? {
        None => Ok(None),
        Some(s) => serde_json::from_slice(&s.crm_version)
            .map(Some)
            .map_err(|e| BridgeError::Corrupt(format!("shadow of {id}: {e}"))),
    }
}

fn put_shadow(w: &mut WriteBatch<'_>, shadow: &Shadow) -> Result<(), StoreError> {
    let heads = shadow.change_hashes().map_err(|e| StoreError::Corrupt {
        table: "shadows",
        reason: e.to_string(),
    })?;
    // Serialising plain data cannot fail.
    let bytes = serde_json::to_vec(shadow).expect("shadow serialises");
    w.put_shadow(
        &shadow.record,
        &sellsync_store::Shadow {
            crm_version: bytes,
            heads,
        },
    )?;
    Ok(())
}

/// What the bridge's writes are checked against: the catalog and policy of the hub.
#[derive(Debug, Clone)]
pub(crate) struct Basis {
    pub(crate) catalog: Catalog,
    pub(crate) policy: Policy,
    pub(crate) device: DeviceId,
}

impl Basis {
    pub(crate) fn of(node: &Node) -> Basis {
        Basis {
            catalog: node.replica_ref().catalog().clone(),
            policy: node.replica_ref().policy().clone(),
            device: node.id().clone(),
        }
    }

    pub(crate) fn wctx(&self, now_ms: i64) -> WriteCtx<'_> {
        WriteCtx {
            now_ms,
            catalog: &self.catalog,
            policy: &self.policy,
        }
    }
}

/// Runs `f` on an existing record's document and shadow inside `b`. If `f` fails, neither
/// changes. Returns `Ok(None)` when the record is not held.
pub(crate) fn with_record<R>(
    b: &mut DocBatch<'_, '_>,
    device: &DeviceId,
    id: &RecordId,
    f: impl FnOnce(&mut RecordDoc, &mut Option<Shadow>) -> Result<R, BridgeError>,
) -> Result<Option<Result<R, BridgeError>>, StoreError> {
    let Some(meta) = b.store().doc_meta(id)? else {
        return Ok(None);
    };
    let shadow = match shadow_of(b.store(), id) {
        Ok(s) => s,
        Err(e) => return Ok(Some(Err(e))),
    };
    let mut next = shadow.clone();
    let out = b.with_doc_mut(id, &meta.kind, |doc| {
        let taken = std::mem::take(doc);
        let mut rd = match RecordDoc::from_automerge(taken.clone(), device) {
            Ok(rd) => rd,
            Err(e) => {
                *doc = taken;
                return Err(BridgeError::Load(id.clone(), e.to_string()));
            }
        };
        let out = f(&mut rd, &mut next);
        // Only a successful step is kept.
        *doc = if out.is_ok() {
            std::mem::take(rd.automerge_mut())
        } else {
            taken
        };
        out
    })?;
    if out.is_ok() && next != shadow {
        match &next {
            Some(s) => put_shadow(b.store(), s)?,
            None => {
                b.store().remove_shadow(id)?;
            }
        }
    }
    Ok(Some(out))
}

/// Stores a record first seen in the CRM: its new document, its shadow and its CRM id.
pub(crate) fn insert_new(
    b: &mut DocBatch<'_, '_>,
    mut doc: RecordDoc,
    shadow: &Shadow,
) -> Result<(), BridgeError> {
    let id = doc.id().clone();
    let kind = doc.kind();
    b.with_doc_mut(&id, kind.as_str(), |d| d.merge(doc.automerge_mut()))?
        .map_err(|e| BridgeError::Load(id.clone(), e.to_string()))?;
    put_shadow(b.store(), shadow)?;
    b.store().map_crm_id(
        &id,
        &CrmId {
            kind: kind.as_str().to_owned(),
            id: shadow.crm_id,
        },
    )?;
    Ok(())
}

/// What applying one CRM object did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Applied {
    /// Written into this record's document (which may not have changed).
    Record(RecordId),
    /// Nothing to do (an object the bridge does not keep, or a delete of one it never saw).
    Skipped(String),
    /// Not applied yet: it depends on an object not seen yet (it must come again).
    Later(String),
}

/// Writes a CRM version of a deal or contact: a new document, or a change on its shadow basis.
pub(crate) fn apply_record(
    b: &mut DocBatch<'_, '_>,
    basis: &Basis,
    kind: RecordKind,
    data: &serde_json::Value,
    now_ms: i64,
) -> Result<Applied, BridgeError> {
    let (crm_id, image) = mapping::record_image(kind, data, &basis.catalog)?;
    apply_image(b, basis, kind, crm_id, image, now_ms)
}

pub(crate) fn apply_image(
    b: &mut DocBatch<'_, '_>,
    basis: &Basis,
    kind: RecordKind,
    crm_id: u64,
    image: Image,
    now_ms: i64,
) -> Result<Applied, BridgeError> {
    let wctx = basis.wctx(now_ms);
    let known = b.store().record_for_crm(kind.as_str(), crm_id)?;
    let Some(id) = known else {
        let (doc, shadow, report) = pull::pull_new(kind, crm_id, image, &wctx)?;
        for (field, why) in &report.refused {
            tracing::warn!("{kind} {crm_id}: field {field} not kept: {why}");
        }
        let id = doc.id().clone();
        insert_new(b, doc, &shadow)?;
        return Ok(Applied::Record(id));
    };
    let out = with_record(b, &basis.device, &id, |doc, shadow| {
        let s = shadow
            .as_mut()
            .ok_or_else(|| BridgeError::NoShadow(id.clone()))?;
        let report = pull::pull_update(doc, s, image, &wctx)?;
        for (field, why) in &report.refused {
            tracing::warn!("{id}: field {field} not kept: {why}");
        }
        Ok(())
    })?;
    match out {
        Some(r) => r.map(|()| Applied::Record(id)),
        None => Err(BridgeError::Corrupt(format!(
            "the CRM index names {id}, which is not stored"
        ))),
    }
}

/// Writes a CRM delete of a deal or contact on its shadow basis.
pub(crate) fn apply_record_delete(
    b: &mut DocBatch<'_, '_>,
    basis: &Basis,
    kind: RecordKind,
    crm_id: u64,
    now_ms: i64,
) -> Result<Applied, BridgeError> {
    let Some(id) = b.store().record_for_crm(kind.as_str(), crm_id)? else {
        return Ok(Applied::Skipped(format!(
            "delete of unknown {kind} {crm_id}"
        )));
    };
    let wctx = basis.wctx(now_ms);
    let out = with_record(b, &basis.device, &id, |doc, shadow| {
        let old = shadow
            .take()
            .ok_or_else(|| BridgeError::NoShadow(id.clone()))?;
        let mut s = old.clone();
        pull::pull_delete(doc, &mut s, &wctx)?;
        // The CRM no longer holds the record: its shadow goes (see `forget_crm_copy`).
        Ok(old)
    })?;
    match out {
        Some(Ok(old)) => {
            forget_crm_copy(b, &old)?;
            Ok(Applied::Record(id))
        }
        Some(Err(e)) => Err(e),
        None => Ok(Applied::Skipped(format!("{id} is not stored"))),
    }
}

/// The CRM deleted a record (and with it its notes, tasks and calls): the bridge forgets the
/// CRM's copy in the same transaction as the shadow goes. Its CRM id leaves the index and its
/// activities' ids leave the activity index, so that the CRM's deletes of the children settle
/// as deletes of unknown objects, no delete is sent for what is gone, and a restore creates the
/// record again under a new id (no shadow: the push plans a create).
pub(crate) fn forget_crm_copy(b: &mut DocBatch<'_, '_>, old: &Shadow) -> Result<(), StoreError> {
    b.store().unmap_crm_id(&old.record)?;
    for a in old.activities.values() {
        b.store().kv_remove(&activity_key(a.kind, a.crm_id))?;
    }
    Ok(())
}

/// Writes a CRM version of a note, task or call into its parent's document.
pub(crate) fn apply_activity(
    b: &mut DocBatch<'_, '_>,
    basis: &Basis,
    kind: ActivityKind,
    data: &serde_json::Value,
    now_ms: i64,
) -> Result<Applied, BridgeError> {
    let (crm_id, parent, image) = mapping::activity_image(kind, data)?;
    let Some(parent) = parent else {
        return Ok(Applied::Skipped(format!(
            "{kind} {crm_id} belongs to no deal or contact"
        )));
    };
    let Some(id) = b
        .store()
        .record_for_crm(parent.kind.as_str(), parent.crm_id)?
    else {
        return Ok(Applied::Later(format!(
            "{kind} {crm_id}: its {} {} is not known",
            parent.kind, parent.crm_id
        )));
    };
    let wctx = basis.wctx(now_ms);
    let out = with_record(b, &basis.device, &id, |doc, shadow| {
        let s = shadow
            .as_mut()
            .ok_or_else(|| BridgeError::NoShadow(id.clone()))?;
        pull::pull_activity(doc, s, kind, crm_id, image, &wctx)?;
        Ok(())
    })?;
    match out {
        Some(Ok(())) => {
            b.store()
                .kv_put(&activity_key(kind, crm_id), id.as_str().as_bytes())?;
            Ok(Applied::Record(id))
        }
        Some(Err(e)) => Err(e),
        None => Ok(Applied::Skipped(format!("{id} is not stored"))),
    }
}

/// Writes a CRM delete of a note, task or call.
pub(crate) fn apply_activity_delete(
    b: &mut DocBatch<'_, '_>,
    basis: &Basis,
    kind: ActivityKind,
    crm_id: u64,
    now_ms: i64,
) -> Result<Applied, BridgeError> {
    let key = activity_key(kind, crm_id);
    let Some(raw) = b.store().kv_get(&key)? else {
        return Ok(Applied::Skipped(format!(
            "delete of unknown {kind} {crm_id}"
        )));
    };
    let id: RecordId = String::from_utf8_lossy(&raw)
        .parse()
        .map_err(|e| BridgeError::Corrupt(format!("{key}: {e}")))?;
    let wctx = basis.wctx(now_ms);
    let out = with_record(b, &basis.device, &id, |doc, shadow| {
        let s = shadow
            .as_mut()
            .ok_or_else(|| BridgeError::NoShadow(id.clone()))?;
        pull::pull_activity_delete(doc, s, crm_id, &wctx)?;
        Ok(())
    })?;
    match out {
        Some(Ok(())) => {
            b.store().kv_remove(&key)?;
            Ok(Applied::Record(id))
        }
        Some(Err(e)) => Err(e),
        None => Ok(Applied::Skipped(format!("{id} is not stored"))),
    }
}

/// After the catalog changed: writes into each record the CRM values its pulls had to refuse
/// (kept in its shadow), where the new catalog accepts them. Returns the records written.
pub(crate) fn retry_refused(
    b: &mut DocBatch<'_, '_>,
    basis: &Basis,
    ids: &[RecordId],
    now_ms: i64,
) -> Result<Vec<RecordId>, StoreError> {
    let wctx = basis.wctx(now_ms);
    let mut written = Vec::new();
    for id in ids {
        match shadow_of(b.store(), id) {
            Ok(Some(s)) if !s.refused.is_empty() => {}
            Ok(_) => continue,
            Err(BridgeError::Store(e)) => return Err(e),
            Err(e) => {
                tracing::warn!("{e}");
                continue;
            }
        }
        let out = with_record(b, &basis.device, id, |doc, shadow| {
            let s = shadow
                .as_mut()
                .ok_or_else(|| BridgeError::NoShadow(id.clone()))?;
            Ok(pull::retry_refused(doc, s, &wctx)?)
        })?;
        match out {
            Some(Ok(report)) => {
                for (field, why) in &report.refused {
                    tracing::warn!("{id}: field {field} still not kept: {why}");
                }
                written.push(id.clone());
            }
            Some(Err(e)) => tracing::warn!("{id}: writing refused values failed: {e}"),
            None => {}
        }
    }
    Ok(written)
}
