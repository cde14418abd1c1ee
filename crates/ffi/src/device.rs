//! [`Device`]: the device facade (`sellsync_device::Device`) as a uniffi object.
//!
//! Every entry point checks its arguments (ids, field names, values, timeouts) and answers a
//! typed [`SellsyncError`]; a panic inside becomes [`SellsyncError::Internal`] and never
//! crosses the boundary.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sellsync_device as dev;
use sellsync_device::{ActivityId, FieldKey, RecordId, Slot, Value};
use sellsync_model::ActivityKind;

use crate::catalog::{Catalog, CustomField, model_kind};
use crate::error::{SellsyncError, invalid};
use crate::lan::LanServer;
use crate::listener::ChangeListener;
use crate::observe::{ChangeFeed, Observation};
use crate::types::{
    CheckedEnrolment, DeviceConfig, Enrolment, FieldInput, Notification, RecordConflicts,
    RecordKind, RecordResolution, RecordSummary, RecordView, RefusalTarget, Resolution, SyncReport,
    SyncStatus,
};

/// The longest sync round a caller may ask for, in seconds.
pub const MAX_TIMEOUT_SECS: u32 = 3600;

/// A rep's device: an enrolled store, opened at a path the app chooses.
///
/// Thread-safe; calls from several threads queue on the device. Reads and edits block on the
/// store (call them off the main thread); `sync_hub` and `sync_peer` are async. `close()`
/// releases the store (it stays locked until a round still running ends); every later call
/// fails with [`SellsyncError::Closed`].
#[derive(Debug, uniffi::Object)]
pub struct Device {
    inner: Mutex<Option<dev::Device>>,
}

fn text_of(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_owned())
}

/// Runs `f`, a panic inside becoming [`SellsyncError::Internal`].
fn guarded<R>(f: impl FnOnce() -> Result<R, SellsyncError>) -> Result<R, SellsyncError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| {
        Err(SellsyncError::Internal {
            reason: format!("panic: {}", text_of(&*p)),
        })
    })
}

fn record_id(id: &str) -> Result<RecordId, SellsyncError> {
    id.parse().map_err(|e| invalid("id", e))
}

fn timeout(secs: u32) -> Result<Duration, SellsyncError> {
    if secs == 0 || secs > MAX_TIMEOUT_SECS {
        return Err(invalid(
            "timeout_secs",
            format!("{secs}: give 1 to {MAX_TIMEOUT_SECS} seconds"),
        ));
    }
    Ok(Duration::from_secs(u64::from(secs)))
}

fn config(c: DeviceConfig) -> Result<dev::DeviceConfig, SellsyncError> {
    if c.store_path.trim().is_empty() || c.store_path.contains('\0') {
        return Err(invalid("store_path", "give the store file's path"));
    }
    let cache_budget = match c.cache_bytes {
        None => None,
        Some(0) => return Err(invalid("cache_bytes", "0: give a budget in bytes, or none")),
        Some(b) => Some(
            usize::try_from(b).map_err(|_| invalid("cache_bytes", format!("{b}: too large")))?,
        ),
    };
    Ok(dev::DeviceConfig {
        path: c.store_path.into(),
        cache_budget,
        low_memory: c.low_memory,
    })
}

/// Parses fields given as text, as the catalog defines them for a `kind` record (or for an
/// `activity` of it). Names must be distinct.
fn parse_fields(
    d: &dev::Device,
    kind: dev::RecordKind,
    activity: Option<ActivityKind>,
    fields: Vec<FieldInput>,
) -> Result<Vec<(FieldKey, Value)>, SellsyncError> {
    let catalog = d.catalog()?;
    let mut out: Vec<(FieldKey, Value)> = Vec::with_capacity(fields.len());
    for f in fields {
        let key: FieldKey = f.name.parse().map_err(|e| invalid("field", e))?;
        if out.iter().any(|(k, _)| *k == key) {
            return Err(invalid(&f.name, "given twice"));
        }
        let value = match f.value {
            None => Value::Null,
            Some(text) => sellsync_model::parse_input(&catalog, kind, activity, &key, &text)
                .map_err(dev::DeviceError::from)?,
        };
        out.push((key, value));
    }
    Ok(out)
}

/// Parses `text` for field `slot` of record `id` (a field of the record, or of one of its
/// activities), as the catalog defines it.
fn slot_value(
    d: &dev::Device,
    id: &RecordId,
    slot: &Slot,
    text: String,
) -> Result<Value, SellsyncError> {
    let p = d.record(id)?;
    let activity = match &slot.activity {
        None => None,
        Some(a) => Some(
            p.record
                .activities
                .iter()
                .find(|v| v.id == *a)
                .map(|v| v.kind)
                .ok_or_else(|| invalid("field", format!("no activity {a}")))?,
        ),
    };
    let input = FieldInput {
        name: slot.field.to_string(),
        value: Some(text),
    };
    let mut parsed = parse_fields(d, p.record.kind, activity, vec![input])?;
    Ok(parsed.pop().map_or(Value::Null, |(_, v)| v))
}

pub(crate) fn join_error(e: tokio::task::JoinError) -> SellsyncError {
    let reason = if e.is_panic() {
        format!("panic: {}", text_of(&*e.into_panic()))
    } else {
        "the round was cancelled".to_owned()
    };
    SellsyncError::Internal { reason }
}

impl Device {
    fn wrap(d: dev::Device) -> Arc<Device> {
        Arc::new(Device {
            inner: Mutex::new(Some(d)),
        })
    }

    /// The facade device (a cheap clone), or `Closed`.
    fn device(&self) -> Result<dev::Device, SellsyncError> {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or(SellsyncError::Closed)
    }

    /// Runs `f` on the device, guarded.
    fn with<R>(
        &self,
        f: impl FnOnce(&dev::Device) -> Result<R, SellsyncError>,
    ) -> Result<R, SellsyncError> {
        guarded(|| f(&self.device()?))
    }

    fn kind_of(d: &dev::Device, id: &RecordId) -> Result<dev::RecordKind, SellsyncError> {
        Ok(d.record(id)?.record.kind)
    }

    fn activity(
        &self,
        id: String,
        kind: ActivityKind,
        fields: Vec<FieldInput>,
    ) -> Result<String, SellsyncError> {
        self.with(|d| {
            let id = record_id(&id)?;
            let rk = Device::kind_of(d, &id)?;
            let fields = parse_fields(d, rk, Some(kind), fields)?;
            let a = match kind {
                ActivityKind::Task => d.task(&id, fields)?,
                _ => d.call(&id, fields)?,
            };
            Ok(a.to_string())
        })
    }
}

/// Enrols a new store with a hub and checks the enrolment with one hub round (at most
/// `timeout_secs`, 1 to 3600), as `sellsync device init` does, then opens it. A hub that
/// refuses the token (`Auth`), or whose catalog does not list the token's user
/// (`BadEnrolment`), undoes the enrolment (the new store is removed); a hub that cannot be
/// reached now leaves the device enrolled and unchecked (`first_round` is `None`: the first
/// `sync_hub` checks the token).
#[uniffi::export(async_runtime = "tokio")]
pub async fn enrol_checked(
    config: DeviceConfig,
    enrolment: Enrolment,
    timeout_secs: u32,
) -> Result<CheckedEnrolment, SellsyncError> {
    let t = timeout(timeout_secs)?;
    let cfg = guarded(|| self::config(config))?;
    let e = dev::Enrolment {
        hub_url: enrolment.hub_url,
        token: enrolment.token,
        ca_pem: enrolment.ca_pem.map(String::into_bytes),
    };
    let (d, first) = tokio::spawn(async move { dev::Device::enrol_checked(cfg, e, t).await })
        .await
        .map_err(join_error)??;
    Ok(CheckedEnrolment {
        device: Device::wrap(d),
        first_round: first.map(SyncReport::from),
    })
}

#[uniffi::export(async_runtime = "tokio")]
impl Device {
    /// One bounded round with the hub (at most `timeout_secs`, 1 to 3600): sends this device's
    /// changes, receives what its user may see. Cancel-safe: a round cut short keeps what it
    /// received. Errors: `Timeout`, `Auth` (token revoked or unknown), `Unreachable`.
    pub async fn sync_hub(&self, timeout_secs: u32) -> Result<SyncReport, SellsyncError> {
        let t = timeout(timeout_secs)?;
        let d = self.device()?;
        // On its own task: a panic inside is a JoinError, not an unwind across the boundary.
        let r = tokio::spawn(async move { d.sync_hub(t).await })
            .await
            .map_err(join_error)?;
        Ok(r?.into())
    }

    /// One bounded round with a LAN peer serving at `url` (`wss://HOST:PORT/`); `peer`, if
    /// given, is the device id expected to answer. Needs one hub round first.
    pub async fn sync_peer(
        &self,
        url: String,
        peer: Option<String>,
        timeout_secs: u32,
    ) -> Result<SyncReport, SellsyncError> {
        let t = timeout(timeout_secs)?;
        let peer: Option<dev::DeviceId> = match peer {
            Some(p) => Some(p.parse().map_err(|e| invalid("peer", e))?),
            None => None,
        };
        let d = self.device()?;
        let r = tokio::spawn(async move { d.sync_peer(&url, peer, t).await })
            .await
            .map_err(join_error)?;
        Ok(r?.into())
    }

    /// Serves LAN peers on `address` (`IP:PORT`, e.g. `0.0.0.0:7071`, or port 0 for one the OS
    /// picks) until the returned server is stopped (or dropped, or the device closed). Needs one
    /// hub round first (the grant holds the LAN credential): else `Auth` at once. Errors:
    /// `Invalid` (`address`), `Unreachable` when the address cannot be bound.
    pub async fn serve_lan(&self, address: String) -> Result<Arc<LanServer>, SellsyncError> {
        let addr: std::net::SocketAddr = address
            .trim()
            .parse()
            .map_err(|e| invalid("address", format!("{address:?}: {e} (give IP:PORT)")))?;
        let d = self.device()?;
        guarded(|| Ok(d.check_lan_credential()?))?;
        let listener =
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| SellsyncError::Unreachable {
                    url: addr.to_string(),
                    reason: format!("cannot listen there: {e}"),
                })?;
        let bound = listener.local_addr().map_err(|e| SellsyncError::Internal {
            reason: format!("the bound address: {e}"),
        })?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async {
                // A dropped sender (the server handle freed) stops serving too.
                let _ = rx.await;
            };
            Ok(d.serve_lan(listener, shutdown).await?)
        });
        Ok(Arc::new(LanServer {
            url: format!("wss://{bound}/"),
            port: bound.port(),
            shutdown: Mutex::new(Some(tx)),
            task: tokio::sync::Mutex::new(Some(task)),
        }))
    }
}

#[uniffi::export]
impl Device {
    /// Opens an enrolled store. Errors: `StoreLocked` when another process or an open `Device`
    /// holds it, `NotEnrolled`, `NotADevice`, `Damaged`.
    #[uniffi::constructor]
    pub fn open(config: DeviceConfig) -> Result<Arc<Device>, SellsyncError> {
        guarded(|| Ok(Device::wrap(dev::Device::open(self::config(config)?)?)))
    }

    /// Enrols a new store with a hub (no connection is made: the first `sync_hub` checks the
    /// token), then opens it. Errors: `BadEnrolment`, `AlreadyEnrolled`, `StoreLocked`.
    #[uniffi::constructor]
    pub fn enrol(config: DeviceConfig, enrolment: Enrolment) -> Result<Arc<Device>, SellsyncError> {
        guarded(|| {
            let e = dev::Enrolment {
                hub_url: enrolment.hub_url,
                token: enrolment.token,
                ca_pem: enrolment.ca_pem.map(String::into_bytes),
            };
            Ok(Device::wrap(dev::Device::enrol(self::config(config)?, e)?))
        })
    }

    /// Releases the store. Later calls fail with `Closed`; closing twice is harmless.
    pub fn close(&self) {
        let d = self
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(d);
    }

    /// Whether `close()` was called.
    pub fn is_closed(&self) -> bool {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none()
    }

    /// This device's id (its name at the hub).
    pub fn id(&self) -> Result<String, SellsyncError> {
        self.with(|d| Ok(d.id()?.to_string()))
    }

    /// The user this device acts for.
    pub fn user(&self) -> Result<u64, SellsyncError> {
        self.with(|d| Ok(d.user()?.0))
    }

    /// The deals held, in id order.
    pub fn deals(&self) -> Result<Vec<RecordSummary>, SellsyncError> {
        self.with(|d| Ok(d.deals()?.iter().map(RecordSummary::from).collect()))
    }

    /// The contacts held, in id order.
    pub fn contacts(&self) -> Result<Vec<RecordSummary>, SellsyncError> {
        self.with(|d| Ok(d.contacts()?.iter().map(RecordSummary::from).collect()))
    }

    /// One record: fields, tags, activities, open conflicts (with base values), audit.
    pub fn record(&self, id: String) -> Result<RecordView, SellsyncError> {
        self.with(|d| {
            let id = record_id(&id)?;
            let p = d.record(&id)?;
            let bases = if p.conflicts.is_empty() {
                None
            } else {
                d.conflicts()?.into_iter().find(|c| c.record == id)
            };
            Ok(RecordView::new(&p, bases.as_ref()))
        })
    }

    /// Every record with open conflicts, in id order; each field conflict with its base value
    /// and its candidates (value, who, from which device, when).
    pub fn conflicts(&self) -> Result<Vec<RecordConflicts>, SellsyncError> {
        self.with(|d| Ok(d.conflicts()?.iter().map(RecordConflicts::from).collect()))
    }

    /// Notifications for this device's user (`unread_only`: those not dismissed), oldest first.
    pub fn notifications(&self, unread_only: bool) -> Result<Vec<Notification>, SellsyncError> {
        self.with(|d| {
            Ok(d.notifications(unread_only)?
                .iter()
                .map(Notification::from)
                .collect())
        })
    }

    /// Marks notification `id` read.
    pub fn dismiss(&self, id: u64) -> Result<(), SellsyncError> {
        self.with(|d| Ok(d.dismiss(id)?))
    }

    /// The audit trail of a record, oldest first.
    pub fn audit(&self, id: String) -> Result<Vec<crate::types::AuditItem>, SellsyncError> {
        self.with(|d| {
            let id = record_id(&id)?;
            Ok(d.audit(&id)?
                .iter()
                .map(crate::types::AuditItem::from)
                .collect())
        })
    }

    /// Where the device stands with its hub.
    pub fn status(&self) -> Result<SyncStatus, SellsyncError> {
        self.with(|d| Ok(d.status()?.into()))
    }

    /// Calls `listener.on_change(record_ids)` after every local edit, sync round or resolution
    /// that changed records, from the thread that made the change (a sync round: a Rust worker
    /// thread), for as long as the device is open. A listener that throws is logged and the
    /// device carries on. Do not hold the device in the listener (the cycle is never freed).
    ///
    /// Returns the registration: `stop()` on it removes the listener (and frees it).
    pub fn observe(
        &self,
        listener: Arc<dyn ChangeListener>,
    ) -> Result<Arc<Observation>, SellsyncError> {
        self.with(|d| {
            let slot = Arc::new(Mutex::new(Some(listener)));
            let held = slot.clone();
            d.on_change(Box::new(move |ids: &[RecordId]| {
                // Taken out of the lock before the call: a listener may stop itself.
                let Some(listener) = held.lock().unwrap_or_else(PoisonError::into_inner).clone()
                else {
                    return;
                };
                let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
                if let Err(p) = catch_unwind(AssertUnwindSafe(|| listener.on_change(ids))) {
                    tracing::warn!("a change listener failed: {}", text_of(&*p));
                }
            }));
            Ok(Arc::new(Observation { listener: slot }))
        })
    }

    /// A feed of the records changed from now on, read with its async `next_changes` (no
    /// callback). Any number of feeds may be open; each sees every change.
    pub fn changes(&self) -> Result<Arc<ChangeFeed>, SellsyncError> {
        self.with(|d| {
            Ok(Arc::new(ChangeFeed {
                stream: tokio::sync::Mutex::new(d.subscribe()),
            }))
        })
    }

    /// The catalog the hub shared (stages, users, sources, loss reasons, custom fields); empty,
    /// `loaded` false, before the first hub round.
    pub fn catalog(&self) -> Result<Catalog, SellsyncError> {
        self.with(|d| Ok(Catalog::from(&d.catalog()?)))
    }

    /// The custom field `name` of `kind` records, if the catalog has it. Errors: `Invalid` for
    /// an empty name.
    pub fn custom_field(
        &self,
        kind: RecordKind,
        name: String,
    ) -> Result<Option<CustomField>, SellsyncError> {
        self.with(|d| {
            if name.trim().is_empty() {
                return Err(invalid("name", "empty: give a custom field's name"));
            }
            Ok(d.catalog()?
                .custom_field(model_kind(kind), &name)
                .map(CustomField::from))
        })
    }

    /// Fixes a value the CRM refused (a validation or permission conflict on `field`, or a
    /// refused task or call whose field it is: `<activity id>.<field>`) by writing `value` (text,
    /// parsed as the catalog defines the field; `None` clears it). The bridge sends it with its
    /// next round. Errors: `NoConflict` when nothing was refused there, `Invalid`.
    pub fn fix_refused_value(
        &self,
        id: String,
        field: String,
        value: Option<String>,
    ) -> Result<(), SellsyncError> {
        self.with(|d| {
            let id = record_id(&id)?;
            let slot: Slot = field.parse().map_err(|e| invalid("field", e))?;
            let value = match value {
                None => Value::Null,
                Some(text) => slot_value(d, &id, &slot, text)?,
            };
            Ok(d.fix_refused_value(&id, &slot, value)?)
        })
    }

    /// Fixes the text of note `note` the CRM refused. Errors: `NoConflict` when the CRM did not
    /// refuse that note, `Invalid` (an empty text, a malformed id).
    pub fn fix_refused_note(
        &self,
        id: String,
        note: String,
        text: String,
    ) -> Result<(), SellsyncError> {
        self.with(|d| {
            let id = record_id(&id)?;
            let note: ActivityId = note.parse().map_err(|e| invalid("note", e))?;
            if text.trim().is_empty() {
                return Err(invalid("text", "empty"));
            }
            Ok(d.fix_refused_note(&id, &note, &text)?)
        })
    }

    /// Sends what the CRM refused again as it is (the record, a field, or a note, task or
    /// call), with the bridge's next round. Errors: `NoConflict` when nothing was refused
    /// there.
    pub fn retry_refused(&self, id: String, target: RefusalTarget) -> Result<(), SellsyncError> {
        self.with(|d| {
            let id = record_id(&id)?;
            let target = match target {
                RefusalTarget::Record => dev::RefusalTarget::Record,
                RefusalTarget::Field { field } => {
                    dev::RefusalTarget::Field(field.parse().map_err(|e| invalid("field", e))?)
                }
                RefusalTarget::Activity { id: a } => {
                    dev::RefusalTarget::Activity(a.parse().map_err(|e| invalid("activity", e))?)
                }
            };
            Ok(d.retry_refused(&id, &target)?)
        })
    }

    /// Creates a deal (`name` required; `owner_id` defaults to this device's user); returns its
    /// new id.
    pub fn create_deal(&self, fields: Vec<FieldInput>) -> Result<String, SellsyncError> {
        self.with(|d| {
            let fields = parse_fields(d, dev::RecordKind::Deal, None, fields)?;
            Ok(d.create_deal(fields)?.to_string())
        })
    }

    /// Creates a contact; returns its new id.
    pub fn create_contact(&self, fields: Vec<FieldInput>) -> Result<String, SellsyncError> {
        self.with(|d| {
            let fields = parse_fields(d, dev::RecordKind::Contact, None, fields)?;
            Ok(d.create_contact(fields)?.to_string())
        })
    }

    /// Sets fields of a record as one action: all or nothing. Errors: `Invalid` (a value the
    /// catalog refuses: nothing is written), `InConflict`, `NoSuchRecord`, `Deleted`.
    pub fn set(&self, id: String, fields: Vec<FieldInput>) -> Result<(), SellsyncError> {
        self.with(|d| {
            let id = record_id(&id)?;
            if fields.is_empty() {
                return Err(invalid("fields", "nothing to set"));
            }
            let kind = Device::kind_of(d, &id)?;
            let fields = parse_fields(d, kind, None, fields)?;
            Ok(d.set(&id, fields)?)
        })
    }

    /// Adds a note; returns its id.
    pub fn note(&self, id: String, text: String) -> Result<String, SellsyncError> {
        self.with(|d| {
            let id = record_id(&id)?;
            if text.trim().is_empty() {
                return Err(invalid("note", "empty"));
            }
            Ok(d.note(&id, &text)?.to_string())
        })
    }

    /// Adds a tag (nothing if present).
    pub fn tag(&self, id: String, tag: String) -> Result<(), SellsyncError> {
        self.with(|d| Ok(d.tag(&record_id(&id)?, &tag)?))
    }

    /// Removes a tag (nothing if absent).
    pub fn untag(&self, id: String, tag: String) -> Result<(), SellsyncError> {
        self.with(|d| Ok(d.untag(&record_id(&id)?, &tag)?))
    }

    /// Adds a task with its fields (e.g. `content`, `due_date`); returns its id.
    pub fn task(&self, id: String, fields: Vec<FieldInput>) -> Result<String, SellsyncError> {
        self.activity(id, ActivityKind::Task, fields)
    }

    /// Logs a call with its fields; returns its id.
    pub fn call(&self, id: String, fields: Vec<FieldInput>) -> Result<String, SellsyncError> {
        self.activity(id, ActivityKind::Call, fields)
    }

    /// Deletes a record.
    pub fn delete(&self, id: String) -> Result<(), SellsyncError> {
        self.with(|d| Ok(d.delete(&record_id(&id)?)?))
    }

    /// Settles the field conflict on `field` of record `id`. Errors: `NoConflict`, `Conflict`
    /// (the choice does not fit: look again), `Invalid` (a `Value` the catalog refuses).
    pub fn resolve_field(
        &self,
        id: String,
        field: String,
        resolution: Resolution,
    ) -> Result<(), SellsyncError> {
        self.with(|d| {
            let id = record_id(&id)?;
            let slot: Slot = field.parse().map_err(|e| invalid("field", e))?;
            let choice = match resolution {
                Resolution::Mine => dev::Choice::Mine,
                Resolution::Theirs => dev::Choice::Theirs,
                Resolution::Pick { index: 0 } => {
                    return Err(invalid("index", "candidates count from 1"));
                }
                Resolution::Pick { index } => dev::Choice::Pick(index as usize),
                Resolution::Value { value: None } => dev::Choice::Value(Value::Null),
                Resolution::Value { value: Some(text) } => {
                    dev::Choice::Value(slot_value(d, &id, &slot, text)?)
                }
            };
            Ok(d.resolve_field(&id, &slot, choice)?)
        })
    }

    /// Settles the record conflict of `id` (deleted while others edited it).
    pub fn resolve_record(
        &self,
        id: String,
        resolution: RecordResolution,
    ) -> Result<(), SellsyncError> {
        self.with(|d| {
            let choice = match resolution {
                RecordResolution::Restore => dev::RecordChoice::Restore,
                RecordResolution::ConfirmDelete => dev::RecordChoice::ConfirmDelete,
            };
            Ok(d.resolve_record(&record_id(&id)?, choice)?)
        })
    }
}
