//! The records and enums the bindings speak, and their conversion from the facade's types.
//!
//! Ids are strings (`deal-…`, `note-…`, a device name), users and catalog entries `u64`, times
//! `i64` milliseconds since the epoch. A field value is a [`FieldValue`]: its kind and its
//! canonical text (money as a decimal string with two decimals, `"2000.00"`, its currency in the
//! record's `currency` field; dates `YYYY-MM-DD`; instants RFC 3339 UTC to the millisecond).
//! Values given to the device are text too, parsed as the hub's catalog defines the field.

use sellsync_device as dev;
use sellsync_device::{Candidate as DevCandidate, Conflict as DevConflict, Value};

/// How to open a device's store.
#[derive(Debug, Clone, uniffi::Record)]
pub struct DeviceConfig {
    /// The store file, absolute, at a path the app chooses (Android `noBackupFilesDir`, iOS
    /// Application Support or an App Group container).
    pub store_path: String,
    /// The document cache budget in bytes (default: the service's 64 MiB, or 16 MiB with
    /// `low_memory`).
    #[uniffi(default = None)]
    pub cache_bytes: Option<u64>,
    /// Pick a small cache when `cache_bytes` is not given (background work, iOS extensions).
    #[uniffi(default = false)]
    pub low_memory: bool,
}

/// What enrolling a store with a hub needs: what `sellsync hub token` printed and where the hub
/// listens.
#[derive(Clone, uniffi::Record)]
pub struct Enrolment {
    /// `ws://HOST:PORT/` or `wss://HOST:PORT/`.
    pub hub_url: String,
    /// The token, `<hub>.<user>.<device>.<secret>`.
    pub token: String,
    /// The PEM certificate to trust for a `wss://` hub.
    #[uniffi(default = None)]
    pub ca_pem: Option<String>,
}

impl std::fmt::Debug for Enrolment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a secret: never in logs.
        f.debug_struct("Enrolment")
            .field("hub_url", &self.hub_url)
            .finish_non_exhaustive()
    }
}

/// One field to write: its name (`value`, `currency`, `custom_fields.Region`) and its value as a
/// person would type it (`"1200.50"`, `"EUR"`, `"2027-01-15"`); `None` clears the field.
#[derive(Debug, Clone, uniffi::Record)]
pub struct FieldInput {
    /// The field's name.
    pub name: String,
    /// Its new value as text, or `None` to clear it.
    pub value: Option<String>,
}

/// What kind of value a [`FieldValue`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum ValueKind {
    /// No value.
    Null,
    /// Text (also enumerations and currency codes).
    Text,
    /// `true` or `false`.
    Bool,
    /// An integer.
    Int,
    /// A decimal number (custom number fields), as its canonical decimal string.
    Number,
    /// Money: a decimal string with two decimals; the currency is the record's `currency`.
    Money,
    /// A date, `YYYY-MM-DD`.
    Date,
    /// An instant, RFC 3339 UTC to the millisecond.
    DateTime,
    /// The CRM id of a catalog entry (user, stage, source…), as decimal digits.
    Ref,
    /// Another record: its CRM id, or `local:<record id>`.
    Record,
    /// A set of choices: `items` holds them, `text` joins them with `, `.
    List,
}

/// A typed value as text.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FieldValue {
    /// The kind.
    pub kind: ValueKind,
    /// Its canonical text (empty for `Null`).
    pub text: String,
    /// The choices of a `List` (empty otherwise).
    pub items: Vec<String>,
}

impl From<&Value> for FieldValue {
    fn from(v: &Value) -> Self {
        let kind = match v {
            Value::Null => ValueKind::Null,
            Value::Text(_) => ValueKind::Text,
            Value::Bool(_) => ValueKind::Bool,
            Value::Int(_) => ValueKind::Int,
            Value::Number(_) => ValueKind::Number,
            Value::Money(_) => ValueKind::Money,
            Value::Date(_) => ValueKind::Date,
            Value::DateTime(_) => ValueKind::DateTime,
            Value::Ref(_) => ValueKind::Ref,
            Value::Record(_) => ValueKind::Record,
            Value::List(_) => ValueKind::List,
        };
        let text = match v {
            Value::Null => String::new(),
            Value::Ref(id) => id.to_string(),
            other => other.to_string(),
        };
        let items = match v {
            Value::List(items) => items.clone(),
            _ => Vec::new(),
        };
        FieldValue { kind, text, items }
    }
}

/// A named field and its value.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Field {
    /// The field's name.
    pub name: String,
    /// Its value.
    pub value: FieldValue,
}

/// Deal or contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum RecordKind {
    /// A deal.
    Deal,
    /// A contact.
    Contact,
}

impl From<dev::RecordKind> for RecordKind {
    fn from(k: dev::RecordKind) -> Self {
        match k {
            dev::RecordKind::Deal => RecordKind::Deal,
            dev::RecordKind::Contact => RecordKind::Contact,
        }
    }
}

/// Whether a record is live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum RecordState {
    /// Not deleted (or restored).
    Live,
    /// Deleted.
    Deleted,
    /// Deleted while someone else edited it: a record conflict is open.
    InConflict,
}

impl From<dev::RecordState> for RecordState {
    fn from(s: dev::RecordState) -> Self {
        match s {
            dev::RecordState::Live => RecordState::Live,
            dev::RecordState::Deleted => RecordState::Deleted,
            dev::RecordState::InConflict => RecordState::InConflict,
        }
    }
}

/// One line of a list of deals or contacts.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct RecordSummary {
    /// The record's id.
    pub id: String,
    /// Deal or contact.
    pub kind: RecordKind,
    /// Live, deleted, or in conflict.
    pub state: RecordState,
    /// Its name (a contact without one: first and last name).
    pub name: Option<String>,
    /// `owner_id`.
    pub owner: Option<u64>,
    /// A deal's `stage_id`.
    pub stage: Option<u64>,
    /// A deal's `value` (absent while it is in conflict); its currency is in [`RecordView`].
    pub value: Option<FieldValue>,
    /// Open conflicts on the record.
    pub open_conflicts: u32,
}

impl From<&dev::RecordSummary> for RecordSummary {
    fn from(s: &dev::RecordSummary) -> Self {
        RecordSummary {
            id: s.id.to_string(),
            kind: s.kind.into(),
            state: s.state.into(),
            name: s.name.clone(),
            owner: s.owner.map(|u| u.0),
            stage: s.stage,
            value: s.value.as_ref().map(FieldValue::from),
            open_conflicts: count(s.open_conflicts),
        }
    }
}

pub(crate) fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// One value in conflict (or one write of a record conflict): what, who, from where, when.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Candidate {
    /// The value written.
    pub value: FieldValue,
    /// When (ms since the epoch).
    pub at_ms: i64,
    /// When, RFC 3339 UTC.
    pub at_iso: String,
    /// By which user.
    pub by: u64,
    /// From which device.
    pub device: String,
    /// The operation that wrote it (stable on every replica).
    pub op: String,
}

impl From<&DevCandidate> for Candidate {
    fn from(c: &DevCandidate) -> Self {
        Candidate {
            value: FieldValue::from(&c.value),
            at_ms: c.at,
            at_iso: iso(c.at),
            by: c.by.0,
            device: c.device.to_string(),
            op: c.op.clone(),
        }
    }
}

/// Milliseconds since the epoch as RFC 3339 UTC (empty when out of range).
pub(crate) fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// An open conflict.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum ConflictView {
    /// Concurrent different values of a field a person must settle
    /// ([`crate::Device::resolve_field`]).
    Field {
        /// The field (`value`, `<activity id>.<field>`).
        field: String,
        /// The value both sides started from: `None` when not known (they started from
        /// different values); a `Null` kind when the field was empty.
        base: Option<FieldValue>,
        /// Every candidate, oldest first; `Pick` counts from 1 in this order.
        candidates: Vec<Candidate>,
    },
    /// The record was deleted while someone else edited it ([`crate::Device::resolve_record`]).
    Record {
        /// The delete writes.
        deleted_by: Vec<Candidate>,
        /// Concurrent restores.
        restored_by: Vec<Candidate>,
        /// Edit actions the deleters had not seen.
        unseen_edits: u64,
        /// Notes, tasks and calls held with the record.
        held_activities: Vec<String>,
    },
    /// Something else to know about before the record goes to the CRM whole: `kind` is
    /// `relationship`, `validation`, `permission` or `refused`.
    Other {
        /// The kind.
        kind: String,
        /// The field, if it is about one.
        field: Option<String>,
        /// What it is, in words.
        description: String,
    },
}

impl ConflictView {
    pub(crate) fn new(c: &DevConflict, base: Option<&Value>) -> ConflictView {
        let field = c.slot().map(ToString::to_string);
        let cands = |v: &[DevCandidate]| v.iter().map(Candidate::from).collect();
        let other = |kind: &str, description: String| ConflictView::Other {
            kind: kind.to_owned(),
            field: field.clone(),
            description,
        };
        match c {
            DevConflict::Field {
                slot, candidates, ..
            } => ConflictView::Field {
                field: slot.to_string(),
                base: base.map(FieldValue::from),
                candidates: cands(candidates),
            },
            DevConflict::Record {
                deleted_by,
                restored_by,
                unseen_edits,
                held_activities,
            } => ConflictView::Record {
                deleted_by: cands(deleted_by),
                restored_by: cands(restored_by),
                unseen_edits: *unseen_edits,
                held_activities: held_activities.iter().map(ToString::to_string).collect(),
            },
            DevConflict::Relationship { target, status, .. } => {
                other("relationship", format!("{target} is {status:?}"))
            }
            DevConflict::Validation { value, message, .. } => {
                other("validation", format!("{value:?}: {message}"))
            }
            DevConflict::Permission { message, .. } => other("permission", message.clone()),
            DevConflict::Refused { message, .. } => other("refused", message.clone()),
        }
    }
}

/// The open conflicts of one record.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct RecordConflicts {
    /// The record.
    pub record: String,
    /// Deal or contact.
    pub kind: RecordKind,
    /// Every open conflict, record conflict first.
    pub conflicts: Vec<ConflictView>,
}

impl From<&dev::RecordConflicts> for RecordConflicts {
    fn from(r: &dev::RecordConflicts) -> Self {
        RecordConflicts {
            record: r.record.to_string(),
            kind: r.kind.into(),
            conflicts: r
                .conflicts
                .iter()
                .map(|o| ConflictView::new(&o.conflict, o.base.as_ref()))
                .collect(),
        }
    }
}

/// A note, task or call.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Activity {
    /// Its id.
    pub id: String,
    /// `note`, `task` or `call`.
    pub kind: String,
    /// Deleted by a user.
    pub deleted: bool,
    /// Who created it.
    pub created_by: u64,
    /// When (ms since the epoch).
    pub created_at_ms: i64,
    /// A note's text.
    pub content: Option<String>,
    /// A task's or call's fields.
    pub fields: Vec<Field>,
}

/// One resolution, automatic or a person's.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct AuditItem {
    /// Its id (the same on every replica).
    pub id: String,
    /// The field, or none for a record resolution.
    pub field: Option<String>,
    /// `lww`, `notify`, `keep-server`, `manual` or `record`.
    pub policy: String,
    /// Every candidate that was in play.
    pub candidates: Vec<Candidate>,
    /// What was chosen: the value, or `None` for a record resolution (see `restored`).
    pub chosen: Option<FieldValue>,
    /// For a record resolution: restored (`true`) or deletion confirmed (`false`).
    pub restored: Option<bool>,
    /// Who decided; none for an automatic resolution.
    pub by: Option<u64>,
    /// From which device.
    pub device: Option<String>,
    /// When (ms since the epoch).
    pub at_ms: i64,
}

impl From<&dev::AuditEntry> for AuditItem {
    fn from(e: &dev::AuditEntry) -> Self {
        let (chosen, restored) = match &e.chosen {
            sellsync_model::Chosen::Value(v) => (Some(FieldValue::from(v)), None),
            sellsync_model::Chosen::Restore => (None, Some(true)),
            sellsync_model::Chosen::Delete => (None, Some(false)),
        };
        AuditItem {
            id: e.id.clone(),
            field: e.slot.as_ref().map(ToString::to_string),
            policy: e.policy.clone(),
            candidates: e.candidates.iter().map(Candidate::from).collect(),
            chosen,
            restored,
            by: e.by.map(|u| u.0),
            device: e.device.as_ref().map(ToString::to_string),
            at_ms: e.at,
        }
    }
}

/// One record as projected now.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct RecordView {
    /// Its id.
    pub id: String,
    /// Deal or contact.
    pub kind: RecordKind,
    /// The CRM's id, once known.
    pub crm_id: Option<u64>,
    /// Live, deleted, or in conflict.
    pub state: RecordState,
    /// Resolved fields, by name; a field in open conflict is absent here (see `conflicts`).
    pub fields: Vec<Field>,
    /// The `currency` field's code, if set (the currency of `value`).
    pub currency: Option<String>,
    /// Tags, sorted.
    pub tags: Vec<String>,
    /// Notes, tasks and calls.
    pub activities: Vec<Activity>,
    /// Open conflicts, with the base value of each field conflict.
    pub conflicts: Vec<ConflictView>,
    /// The audit trail, oldest first.
    pub audit: Vec<AuditItem>,
}

pub(crate) fn fields(map: &std::collections::BTreeMap<dev::FieldKey, Value>) -> Vec<Field> {
    map.iter()
        .map(|(k, v)| Field {
            name: k.to_string(),
            value: FieldValue::from(v),
        })
        .collect()
}

impl RecordView {
    /// `bases`: the record's open conflicts with their base values (from `Device::conflicts`),
    /// when it has any.
    pub(crate) fn new(p: &dev::Projection, bases: Option<&dev::RecordConflicts>) -> RecordView {
        let r = &p.record;
        let conflicts = match bases {
            Some(b) => b
                .conflicts
                .iter()
                .map(|o| ConflictView::new(&o.conflict, o.base.as_ref()))
                .collect(),
            None => p
                .conflicts
                .iter()
                .map(|c| ConflictView::new(c, None))
                .collect(),
        };
        RecordView {
            id: r.id.to_string(),
            kind: r.kind.into(),
            crm_id: r.crm_id,
            state: r.state.into(),
            fields: fields(&r.fields),
            currency: r
                .fields
                .iter()
                .find(|(k, _)| k.to_string() == "currency")
                .and_then(|(_, v)| match v {
                    Value::Text(t) if !t.is_empty() => Some(t.clone()),
                    _ => None,
                }),
            tags: r.tags.iter().cloned().collect(),
            activities: r
                .activities
                .iter()
                .map(|a| Activity {
                    id: a.id.to_string(),
                    kind: a.kind.as_str().to_owned(),
                    deleted: a.deleted,
                    created_by: a.created_by.0,
                    created_at_ms: a.created_at,
                    content: a.content.clone(),
                    fields: fields(&a.fields),
                })
                .collect(),
            conflicts,
            audit: p.audit.iter().map(AuditItem::from).collect(),
        }
    }
}

/// A notification for this device's user: a value of theirs that gave way.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Notification {
    /// Its id (for `dismiss`).
    pub id: u64,
    /// When it was stored (ms since the epoch).
    pub created_at_ms: i64,
    /// Dismissed already.
    pub read: bool,
    /// The record; `None` (and the rest empty) for a notification this version cannot read.
    pub record: Option<String>,
    /// The field.
    pub field: Option<String>,
    /// The value this user wrote.
    pub yours: Option<FieldValue>,
    /// The value kept.
    pub kept: Option<FieldValue>,
    /// Who wrote the kept value.
    pub kept_by: Option<u64>,
    /// When (ms since the epoch).
    pub kept_at_ms: Option<i64>,
}

impl From<&dev::DeviceNotification> for Notification {
    fn from(n: &dev::DeviceNotification) -> Self {
        let d = n.detail.as_ref();
        Notification {
            id: n.id,
            created_at_ms: n.created_at_ms,
            read: n.read,
            record: d.map(|d| d.record.to_string()),
            field: d.map(|d| d.slot.to_string()),
            yours: d.map(|d| FieldValue::from(&d.yours)),
            kept: d.map(|d| FieldValue::from(&d.kept)),
            kept_by: d.map(|d| d.kept_by.0),
            kept_at_ms: d.map(|d| d.kept_at),
        }
    }
}

/// What one sync round did.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct SyncReport {
    /// The peer that answered.
    pub peer: Option<String>,
    /// Records that received changes, each once, in id order.
    pub changed: Vec<String>,
    /// Records the hub says this user may no longer see.
    pub revoked: Vec<String>,
    /// Frames sent.
    pub frames_sent: u64,
    /// Frames received.
    pub frames_received: u64,
    /// Bytes sent.
    pub bytes_sent: u64,
    /// Bytes received.
    pub bytes_received: u64,
}

impl From<dev::SyncReport> for SyncReport {
    fn from(r: dev::SyncReport) -> Self {
        SyncReport {
            peer: r.peer.map(|p| p.to_string()),
            changed: r.changed.iter().map(ToString::to_string).collect(),
            revoked: r.revoked.iter().map(ToString::to_string).collect(),
            frames_sent: r.frames_sent,
            frames_received: r.frames_received,
            bytes_sent: r.bytes_sent,
            bytes_received: r.bytes_received,
        }
    }
}

/// Where the device stands with its hub.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct SyncStatus {
    /// Records changed here that the hub does not hold as they are.
    pub pending_changes: u64,
    /// When the last hub round finished (ms since the epoch).
    pub last_hub_sync_ms: Option<i64>,
    /// When the hub last reached the CRM (ms since the epoch), as the hub last said.
    pub crm_last_reached_ms: Option<i64>,
    /// Since when the hub has not reached the CRM; `None` while it does (or not known).
    pub crm_unreachable_since_ms: Option<i64>,
    /// Open conflicts of every record.
    pub open_conflicts: u64,
}

impl From<dev::SyncStatus> for SyncStatus {
    fn from(s: dev::SyncStatus) -> Self {
        SyncStatus {
            pending_changes: s.pending_changes as u64,
            last_hub_sync_ms: s.last_hub_sync_ms,
            crm_last_reached_ms: s.crm_reach.as_ref().and_then(|r| r.last_reached_ms),
            crm_unreachable_since_ms: s.crm_reach.as_ref().and_then(|r| r.unreachable_since_ms),
            open_conflicts: s.open_conflicts as u64,
        }
    }
}

/// How a person settles a field conflict.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum Resolution {
    /// Keep the value written from this device.
    Mine,
    /// Keep the other value (there must be exactly one other).
    Theirs,
    /// Keep candidate `index`, counting from 1 as `conflicts()` lists them.
    Pick {
        /// From 1.
        index: u32,
    },
    /// Write a new value (text, parsed as the field's type; `None` clears it).
    Value {
        /// The value as a person types it.
        value: Option<String>,
    },
}

/// How a person settles a record conflict (delete against edit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum RecordResolution {
    /// Keep the record, with every concurrent edit.
    Restore,
    /// Delete it, discarding the edits.
    ConfirmDelete,
}

/// What the CRM refused, to send again ([`crate::Device::retry_refused`]).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum RefusalTarget {
    /// The record as a whole.
    Record,
    /// One field (`value`, `<activity id>.<field>`).
    Field {
        /// The field.
        field: String,
    },
    /// A note, task or call.
    Activity {
        /// Its id.
        id: String,
    },
}

/// A store enrolled and checked with its hub ([`crate::enrol_checked`]).
#[derive(Debug, uniffi::Record)]
pub struct CheckedEnrolment {
    /// The device, open.
    pub device: std::sync::Arc<crate::Device>,
    /// The checking round's report; `None` when the hub could not be reached (the enrolment
    /// is then unchecked).
    pub first_round: Option<SyncReport>,
}
