//! The store's error type.

use std::path::PathBuf;

/// Everything that can go wrong in the store.
///
/// Invariant: a method that returns `Err` has changed nothing on disk (its redb transaction was
/// never committed), and the in-memory document cache holds nothing that is not on disk.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another `Store` (in this process or another one) already has the file open.
    #[error("store {path} is already open (by this or another process)")]
    AlreadyOpen {
        /// The file that could not be locked.
        path: PathBuf,
    },
    /// The file was written by another schema version of the store and cannot be migrated.
    #[error(
        "store schema version {found} is not supported: this build reads schema version {supported}"
    )]
    SchemaVersion {
        /// The version recorded in the file.
        found: u32,
        /// The version this build writes.
        supported: u32,
    },
    /// The file is a redb database but not a sellsync store (no schema version recorded).
    #[error("not a sellsync store: {0}")]
    NotAStore(String),
    /// A stored value could not be decoded: the file is damaged or was written by a buggy build.
    #[error("corrupt store entry in {table}: {reason}")]
    Corrupt {
        /// The table holding the bad entry.
        table: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// A stored or given document could not be loaded by automerge.
    #[error("document {record} cannot be loaded: {source}")]
    Document {
        /// The record whose document failed to load.
        record: String,
        /// The automerge error (or [`sellsync_model::AutomergePanic`]: automerge failed on
        /// malformed bytes).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A document was written with a kind other than the one it was created with.
    #[error("document {record} is a {stored:?}, not a {given:?}")]
    KindMismatch {
        /// The record.
        record: String,
        /// The kind recorded when the document was created.
        stored: String,
        /// The kind given by the caller.
        given: String,
    },
    /// A document kind that is empty or longer than 64 bytes.
    #[error("invalid document kind {0:?}: 1 to 64 bytes expected")]
    BadKind(String),
    /// The local id <-> CRM id index would stop being one-to-one.
    #[error("record {record} cannot map to {kind} {crm_id}: {reason}")]
    IndexConflict {
        /// The local record.
        record: String,
        /// The CRM kind.
        kind: String,
        /// The CRM id.
        crm_id: u64,
        /// Which side is already taken.
        reason: String,
    },
    /// A device token was not accepted.
    #[error("device token rejected: {0}")]
    Token(#[from] TokenRejected),
    /// A node identity is needed but none was stored yet.
    #[error("this store has no node identity yet")]
    NoIdentity,
    /// A notification id that does not exist.
    #[error("no notification with id {0}")]
    NoSuchNotification(u64),
    /// There is no store file at this path (nothing was created).
    #[error("no store at {path}: check --store, or create one with `device init`")]
    Missing {
        /// The path given.
        path: PathBuf,
    },
    /// The file's pages do not match their checksums, or it is not a database at all: some of
    /// what it held cannot be read. Nothing was read or written.
    #[error("store damaged: {path}: {detail}")]
    Damaged {
        /// The damaged file.
        path: PathBuf,
        /// What redb found.
        detail: String,
    },
    /// redb could not open the file.
    #[error("cannot open store: {0}")]
    Open(#[source] redb::DatabaseError),
    /// An I/O error outside redb (e.g. resolving the path).
    #[error("store I/O error on {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// redb failed (I/O error, full disk, corruption detected by redb).
    #[error("store database error: {0}")]
    Db(#[source] redb::Error),
}

/// Why a device token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenRejected {
    /// No token with this value was issued by this store.
    #[error("unknown token")]
    Unknown,
    /// The token was issued but its expiry time has passed.
    #[error("token expired")]
    Expired,
    /// The token was revoked.
    #[error("token revoked")]
    Revoked,
}

/// The store's result type.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

impl StoreError {
    pub(crate) fn corrupt(table: &'static str, reason: impl Into<String>) -> Self {
        StoreError::Corrupt {
            table,
            reason: reason.into(),
        }
    }
}
