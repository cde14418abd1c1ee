//! [`SellsyncError`]: the one error of the bindings, mapped from [`DeviceError`] variant by
//! variant (a Kotlin `sealed class SellsyncException`, a Swift `enum SellsyncError: Error`, a
//! Python `SellsyncError` with one subclass per variant).

use sellsync_device::DeviceError;

/// Everything a call through the bindings can fail with. The variants are those of the facade's
/// `DeviceError` (same names, same meaning), paths and ids as strings, plus `Closed`.
#[derive(Debug, thiserror::Error, uniffi::Error)]
#[non_exhaustive]
pub enum SellsyncError {
    /// Another process, or another open `Device`, holds the store file.
    #[error("store {path} is in use by another process or handle")]
    StoreLocked {
        /// The store file.
        path: String,
    },
    /// No store at this path, or a store never enrolled: enrol it first.
    #[error("{path} is not enrolled with a hub yet")]
    NotEnrolled {
        /// The store file.
        path: String,
    },
    /// The store is enrolled already.
    #[error("{path} is enrolled already")]
    AlreadyEnrolled {
        /// The store file.
        path: String,
    },
    /// The store belongs to a hub, not to a device.
    #[error("{path} is a hub's store, not a device's")]
    NotADevice {
        /// The store file.
        path: String,
    },
    /// The store file is damaged: enrol a fresh store and sync it from the hub.
    #[error("store {path} is damaged: {detail}")]
    Damaged {
        /// The store file.
        path: String,
        /// What the store found.
        detail: String,
    },
    /// An enrolment argument is not usable (`hub_url`, `token` or `ca_pem`).
    #[error("enrolment: {what}: {reason}")]
    BadEnrolment {
        /// Which argument.
        what: String,
        /// Why.
        reason: String,
    },
    /// The hub (or peer) refused this device's credentials, or this device refused the peer's
    /// (a revoked or unknown token, a certificate that is not the pinned one).
    #[error("authentication failed: {reason}")]
    Auth {
        /// What the session or TLS layer said.
        reason: String,
    },
    /// The peer could not be reached.
    #[error("cannot reach {url}: {reason}")]
    Unreachable {
        /// The URL dialed.
        url: String,
        /// Why.
        reason: String,
    },
    /// The round did not end within its bound; what was received so far is kept.
    #[error("the sync round did not finish within {after_secs} s")]
    Timeout {
        /// The bound given, in seconds.
        after_secs: f64,
    },
    /// The peer ended the round for another reason.
    #[error("the sync round ended early: {reason}")]
    SyncFailed {
        /// Why.
        reason: String,
    },
    /// An argument (id, field name, value, timeout) or an edit was refused; nothing was written.
    #[error("{field}: {reason}")]
    Invalid {
        /// The argument or field (`id`, `field`, `value`, `tag`, `timeout_secs`, a field name).
        field: String,
        /// Why, in words a person can act on.
        reason: String,
    },
    /// A field in open conflict: resolve it rather than overwrite it.
    #[error("{field} is in conflict; resolve it first")]
    InConflict {
        /// The field (`value`, `custom_fields.Region`, `<activity id>.<field>`).
        field: String,
    },
    /// The record is deleted (or its deletion is in conflict).
    #[error("record {id} is deleted")]
    Deleted {
        /// The record.
        id: String,
    },
    /// This device holds no such record.
    #[error("no record {id} on this device")]
    NoSuchRecord {
        /// The record asked for.
        id: String,
    },
    /// There is no open conflict of that kind to resolve.
    #[error("{target} has no open conflict")]
    NoConflict {
        /// The field or record.
        target: String,
    },
    /// The conflict changed since it was read, or the choice does not fit it: read it again.
    #[error("the conflict on {target} changed or does not fit this choice: {reason}; look again")]
    Conflict {
        /// The field or record.
        target: String,
        /// Why.
        reason: String,
    },
    /// The user's access rules refuse the action.
    #[error("refused: {reason}")]
    Refused {
        /// Why.
        reason: String,
    },
    /// The store failed (I/O, full disk, a damaged entry).
    #[error("store: {reason}")]
    Storage {
        /// What failed.
        reason: String,
    },
    /// `close()` was called on this device: open it again.
    #[error("the device is closed")]
    Closed,
    /// A failure inside (a panic included); the device is still usable.
    #[error("internal error: {reason}")]
    Internal {
        /// What failed.
        reason: String,
    },
}

impl From<DeviceError> for SellsyncError {
    fn from(e: DeviceError) -> Self {
        let path = |p: std::path::PathBuf| p.display().to_string();
        match e {
            DeviceError::StoreLocked { path: p } => SellsyncError::StoreLocked { path: path(p) },
            DeviceError::NotEnrolled { path: p } => SellsyncError::NotEnrolled { path: path(p) },
            DeviceError::AlreadyEnrolled { path: p } => {
                SellsyncError::AlreadyEnrolled { path: path(p) }
            }
            DeviceError::NotADevice { path: p } => SellsyncError::NotADevice { path: path(p) },
            DeviceError::Damaged { path: p, detail } => SellsyncError::Damaged {
                path: path(p),
                detail,
            },
            DeviceError::BadEnrolment { what, reason } => SellsyncError::BadEnrolment {
                what: what.to_owned(),
                reason,
            },
            DeviceError::Auth { reason } => SellsyncError::Auth { reason },
            DeviceError::Unreachable { url, reason } => SellsyncError::Unreachable { url, reason },
            DeviceError::Timeout { after } => SellsyncError::Timeout {
                after_secs: after.as_secs_f64(),
            },
            DeviceError::SyncFailed { reason } => SellsyncError::SyncFailed { reason },
            DeviceError::Invalid { field, reason } => SellsyncError::Invalid { field, reason },
            DeviceError::InConflict { slot } => SellsyncError::InConflict {
                field: slot.to_string(),
            },
            DeviceError::Deleted { id } => SellsyncError::Deleted { id: id.to_string() },
            DeviceError::NoSuchRecord { id } => SellsyncError::NoSuchRecord { id: id.to_string() },
            DeviceError::NoConflict { target } => SellsyncError::NoConflict { target },
            DeviceError::Conflict { target, reason } => SellsyncError::Conflict { target, reason },
            DeviceError::Refused { reason } => SellsyncError::Refused { reason },
            DeviceError::Storage(s) => SellsyncError::Storage {
                reason: s.to_string(),
            },
            DeviceError::Internal { reason } => SellsyncError::Internal { reason },
            // DeviceError is non-exhaustive: a variant added later is reported, not lost.
            other => SellsyncError::Internal {
                reason: other.to_string(),
            },
        }
    }
}

/// An argument that does not parse.
pub(crate) fn invalid(field: &str, reason: impl std::fmt::Display) -> SellsyncError {
    SellsyncError::Invalid {
        field: field.to_owned(),
        reason: reason.to_string(),
    }
}
