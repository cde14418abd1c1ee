//! The device facade: the one way a front end (the CLI, the mobile bindings, a web page) drives
//! a rep's device.
//!
//! - [`Device::open`] an enrolled store at a path the app chooses ([`DeviceConfig`]: cache
//!   budget, low-memory setting), or [`Device::enrol`] a new one with a hub ([`Enrolment`]).
//! - [`Device::sync_hub`] / [`Device::sync_peer`]: one bounded, cancel-safe round (async, on
//!   tokio).
//! - Reads: [`Device::deals`], [`Device::contacts`], [`Device::record`], [`Device::conflicts`],
//!   [`Device::notifications`], [`Device::audit`], [`Device::catalog`], [`Device::status`].
//! - Edits: [`Device::create_deal`], [`Device::create_contact`], [`Device::set`],
//!   [`Device::note`], [`Device::tag`], [`Device::untag`], [`Device::task`], [`Device::call`],
//!   [`Device::delete`]; resolutions: [`Device::resolve_field`], [`Device::resolve_record`].
//! - Change observation: [`Device::subscribe`] ([`ChangeStream::next`]) and
//!   [`Device::on_change`].
//!
//! Every failure is a [`DeviceError`]; a panic inside (automerge, redb) becomes
//! [`DeviceError::Internal`] and never crosses the facade.
//!
//! Tests (`tests/device.rs`) run two devices against a real hub over loopback.
#![deny(missing_docs)]

mod changes;
mod device;
mod error;
pub mod names;

pub use changes::{ChangeCallback, ChangeStream};
pub use device::{
    Device, DeviceConfig, DeviceNotification, Enrolled, Enrolment, LOW_MEMORY_CACHE_BUDGET,
    NotificationDetail, OpenConflict, RecordConflicts, RecordSummary, SyncReport, SyncStatus,
    TagChange,
};
pub use error::DeviceError;
/// The model types the facade's API speaks.
pub use sellsync_model::{
    ActivityId, ActivityKind, ActivityView, AuditEntry, Candidate, Catalog, Choice, Chosen,
    Conflict, CrmReach, DeviceId, FieldKey, Money, Projection, RecordChoice, RecordId, RecordKind,
    RecordState, RefusalTarget, Slot, UserId, Value,
};
