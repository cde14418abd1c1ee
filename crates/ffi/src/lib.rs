//! uniffi bindings of the device facade (`sellsync-device`) for Kotlin, Swift and Python.
//!
//! - [`Device`]: `open` / `enrol` (constructors), `sync_hub` / `sync_peer` (async, on tokio,
//!   bounded by a timeout in seconds), reads, edits, resolutions, `status`, `observe`,
//!   `close`.
//! - Records and enums in [`types`](crate::FieldValue): ids and values as strings or plain
//!   numbers (money as a decimal string, its currency in the record's `currency` field; dates
//!   ISO 8601).
//! - [`SellsyncError`]: the facade's `DeviceError`, variant by variant.
//! - [`ChangeListener`]: a foreign trait, registered with [`Device::observe`] (which returns an
//!   [`Observation`] to stop it); [`ChangeFeed`] (`Device::changes`): an async `next_changes`
//!   call instead of a callback.
//! - [`enrol_checked`] (async): enrol and check with one hub round; [`LanServer`]
//!   (`Device::serve_lan`, async): serving LAN peers until stopped; [`Catalog`]
//!   (`Device::catalog`, `Device::custom_field`).
//!
//! Bindings are generated from the built cdylib by `scripts/bindings.sh` (docs/sdk.md,
//! "Bindings").
#![deny(missing_docs)]

uniffi::setup_scaffolding!("sellsync");

mod catalog;
mod device;
mod error;
mod lan;
mod listener;
mod observe;
mod types;

pub use catalog::{
    Catalog, CatalogEntry, CatalogPipeline, CatalogStage, CatalogUser, CustomField, CustomFieldKind,
};
pub use device::{Device, MAX_TIMEOUT_SECS, enrol_checked};
pub use error::SellsyncError;
pub use lan::LanServer;
pub use listener::ChangeListener;
pub use observe::{ChangeFeed, MAX_WAIT_MS, Observation};
pub use types::{
    Activity, AuditItem, Candidate, CheckedEnrolment, ConflictView, DeviceConfig, Enrolment, Field,
    FieldInput, FieldValue, Notification, RecordConflicts, RecordKind, RecordResolution,
    RecordState, RecordSummary, RecordView, RefusalTarget, Resolution, SyncReport, SyncStatus,
    ValueKind,
};
