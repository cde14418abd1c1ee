//! The facade's one error type, and how the layers below map onto it.

use std::path::PathBuf;
use std::time::Duration;

use sellsync_model::{EditError, RecordId, ResolveError, Slot};
use sellsync_service::NodeError;
use sellsync_store::StoreError;
use sellsync_sync::{CloseReason, ErrorCode};

/// Everything a device call can fail with. Each variant says what a front end can do about it;
/// none carries a bare string as the error itself (the `reason` fields are words for a person).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// Another process, or another open [`crate::Device`] in this one, holds the store file.
    #[error("store {path} is in use by another process or handle")]
    StoreLocked {
        /// The store file (canonical).
        path: PathBuf,
    },
    /// No store at this path, or a store that was never enrolled: enrol it first.
    #[error("{path} is not enrolled with a hub yet")]
    NotEnrolled {
        /// The store file.
        path: PathBuf,
    },
    /// The store is enrolled already ([`crate::Device::enrol_with`] with `force` enrols it again).
    #[error("{path} is enrolled already")]
    AlreadyEnrolled {
        /// The store file.
        path: PathBuf,
    },
    /// The store belongs to a hub, not to a device.
    #[error("{path} is a hub's store, not a device's")]
    NotADevice {
        /// The store file.
        path: PathBuf,
    },
    /// The store file is damaged: enrol a fresh store and sync it from the hub.
    #[error("store {path} is damaged: {detail}")]
    Damaged {
        /// The store file.
        path: PathBuf,
        /// What the store found.
        detail: String,
    },
    /// An enrolment argument is not usable (hub URL, token, certificate).
    #[error("enrolment: {what}: {reason}")]
    BadEnrolment {
        /// `hub_url`, `token` or `ca_pem`.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// The peer refused this device's credentials, or this device refused the peer's
    /// (revoked or unknown token, a certificate that is not the pinned one, a wrong peer).
    #[error("authentication failed: {reason}")]
    Auth {
        /// What the session or TLS layer said.
        reason: String,
    },
    /// The peer could not be reached (no connection, or the connection was lost mid-round).
    #[error("cannot reach {url}: {reason}")]
    Unreachable {
        /// The URL dialed.
        url: String,
        /// Why.
        reason: String,
    },
    /// The round did not end within its time bound. What was received so far is kept.
    #[error("the sync round did not finish within {after:?}")]
    Timeout {
        /// The bound given.
        after: Duration,
    },
    /// The peer ended the round for another reason (a protocol error, a failure on its side).
    #[error("the sync round ended early: {reason}")]
    SyncFailed {
        /// Why, in words.
        reason: String,
    },
    /// An edit or a typed value was refused; nothing was written.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field (or `record`, `tag`, `note`, an activity id).
        field: String,
        /// Why, in words a person can act on.
        reason: String,
    },
    /// A field in open conflict: resolve it rather than overwrite it.
    #[error("{slot} is in conflict; resolve it first")]
    InConflict {
        /// The field.
        slot: Slot,
    },
    /// The record is deleted (or its deletion is in conflict).
    #[error("record {id} is deleted")]
    Deleted {
        /// The record.
        id: RecordId,
    },
    /// This device holds no such record.
    #[error("no record {id} on this device")]
    NoSuchRecord {
        /// The record asked for.
        id: RecordId,
    },
    /// There is no open conflict of that kind to resolve.
    #[error("{target} has no open conflict")]
    NoConflict {
        /// The field or record.
        target: String,
    },
    /// A resolution raced another change (the candidates changed since they were read), or the
    /// choice does not fit the conflict as it now stands: read the conflict again.
    #[error("the conflict on {target} changed or does not fit this choice: {reason}; look again")]
    Conflict {
        /// The field or record.
        target: String,
        /// Why.
        reason: String,
    },
    /// The user's access rules refuse the action (e.g. creating a record for another owner).
    #[error("refused: {reason}")]
    Refused {
        /// Why.
        reason: String,
    },
    /// The store failed (I/O, full disk, a damaged entry).
    #[error(transparent)]
    Storage(StoreError),
    /// A failure inside (a document that does not load, a panic in automerge). The device is
    /// still usable; the call changed nothing it reports as done.
    #[error("internal error: {reason}")]
    Internal {
        /// What failed.
        reason: String,
    },
}

impl From<StoreError> for DeviceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::AlreadyOpen { path } => DeviceError::StoreLocked { path },
            StoreError::Missing { path } => DeviceError::NotEnrolled { path },
            StoreError::Damaged { path, detail } => DeviceError::Damaged { path, detail },
            other => DeviceError::Storage(other),
        }
    }
}

impl From<EditError> for DeviceError {
    fn from(e: EditError) -> Self {
        let reason = e.to_string();
        match e {
            EditError::UnknownField { field, .. } => DeviceError::Invalid { field, reason },
            EditError::Invalid { field, reason } => DeviceError::Invalid { field, reason },
            EditError::CreateOnly { field } => DeviceError::Invalid { field, reason },
            EditError::InConflict { slot } => DeviceError::InConflict { slot },
            EditError::UnknownActivity(a)
            | EditError::ActivityExists(a)
            | EditError::WrongActivity { id: a, .. }
            | EditError::OutOfBounds { id: a, .. } => DeviceError::Invalid {
                field: a.to_string(),
                reason,
            },
            EditError::BadTag(_) => DeviceError::Invalid {
                field: "tag".into(),
                reason,
            },
            EditError::DeleteNotAlone | EditError::Deleted { .. } => DeviceError::Invalid {
                field: "record".into(),
                reason,
            },
            _ => DeviceError::Internal { reason },
        }
    }
}

/// Maps a node error on record `id` (if the call was about one).
pub(crate) fn node_error(e: NodeError, id: Option<&RecordId>) -> DeviceError {
    match e {
        NodeError::Store(s) => s.into(),
        NodeError::NoIdentity => DeviceError::NotEnrolled {
            path: PathBuf::new(),
        },
        NodeError::NoRecord(id) => DeviceError::NoSuchRecord { id },
        NodeError::Exists(id) => DeviceError::Invalid {
            field: "id".into(),
            reason: format!("record {id} exists already"),
        },
        NodeError::Edit(e) => match (*e, id) {
            (EditError::Deleted { .. }, Some(id)) => DeviceError::Deleted { id: id.clone() },
            (e, _) => e.into(),
        },
        NodeError::Refused(reason) => DeviceError::Refused { reason },
        other => DeviceError::Internal {
            reason: other.to_string(),
        },
    }
}

/// Maps a resolution's refusal on `target`.
pub(crate) fn resolve_error(e: ResolveError, target: &str) -> DeviceError {
    let reason = e.to_string();
    match e {
        ResolveError::NoConflict(_) => DeviceError::NoConflict {
            target: target.to_owned(),
        },
        ResolveError::Changed(_)
        | ResolveError::NoMine(_)
        | ResolveError::AmbiguousTheirs(_)
        | ResolveError::BadPick { .. } => DeviceError::Conflict {
            target: target.to_owned(),
            reason,
        },
        ResolveError::Invalid { slot, reason } => DeviceError::Invalid {
            field: slot,
            reason,
        },
        ResolveError::UnknownActivity(a) => DeviceError::Invalid { field: a, reason },
        _ => DeviceError::Internal { reason },
    }
}

/// Maps why a session closed early when dialing `url`.
pub(crate) fn closed_error(reason: &CloseReason, url: &str) -> DeviceError {
    match reason {
        CloseReason::AuthFailed(why) => DeviceError::Auth {
            reason: why.clone(),
        },
        CloseReason::WrongPeer(who) => DeviceError::Auth {
            reason: format!("another node answered ({who}), not the one dialed"),
        },
        CloseReason::PeerError {
            code: ErrorCode::AuthFailed | ErrorCode::WrongPeer,
            reason,
        } => DeviceError::Auth {
            reason: reason.clone(),
        },
        CloseReason::ConnectionLost => DeviceError::Unreachable {
            url: url.to_owned(),
            reason: "the connection was lost before the round was done".into(),
        },
        CloseReason::Storage(why) => DeviceError::Internal {
            reason: format!("this device's store failed during the round: {why}"),
        },
        other => DeviceError::SyncFailed {
            reason: format!("{other:?}"),
        },
    }
}

/// Text of a caught panic.
pub(crate) fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_owned())
}
