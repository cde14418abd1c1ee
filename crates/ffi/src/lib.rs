//! uniffi bindings of the device facade (`sellsync-device`) for Kotlin, Swift and Python.
//!
//! - [`Device`]: `open` / `enrol` (constructors), `sync_hub` / `sync_peer` (async, on tokio,
//!   bounded by a timeout in seconds), reads, edits, resolutions, `status`, `observe`,
//!   `close`.
//! - Records and enums in [`types`](crate::FieldValue): ids and values as strings or plain
//!   numbers (money as a decimal string, its currency in the record's `currency` field; dates
//!   ISO 8601).
//! - [`SellsyncError`]: the facade's `DeviceError`, variant by variant.
//! - [`ChangeListener`]: a foreign trait, registered with [`Device::observe`].
//!
//! Bindings are generated from the built cdylib by `scripts/bindings.sh` (docs/sdk.md,
//! "Bindings").
#![deny(missing_docs)]

uniffi::setup_scaffolding!("sellsync");

mod device;
mod error;
mod listener;
mod types;

pub use device::{Device, MAX_TIMEOUT_SECS};
pub use error::SellsyncError;
pub use listener::ChangeListener;
pub use types::{
    Activity, AuditItem, Candidate, ConflictView, DeviceConfig, Enrolment, Field, FieldInput,
    FieldValue, Notification, RecordConflicts, RecordKind, RecordResolution, RecordState,
    RecordSummary, RecordView, Resolution, SyncReport, SyncStatus, ValueKind,
};
