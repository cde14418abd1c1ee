//! The bridge as it runs on the hub: the only writer to the CRM.
//!
//! - [`backend`]: the [`Crm`] trait (the adapter boundary's I/O side) and [`ZendeskHttp`], Zendesk
//!   Sell v2 over reqwest with rustls, paced under the token's request budget.
//! - [`Bridge`]: import, pull (Sync API, or polling `sort_by=updated_at:desc` when the token has
//!   no sync scope) and push over the hub's store. Every decision is made by the pure core
//!   (`sellsync-bridge`); this crate moves requests and makes the core's writes durable: a
//!   record's document, its shadow and the push checkpoint change in one transaction.
//! - [`BridgeStatus`]: what `sellsync bridge status` shows, kept in the store and in a file
//!   next to it (readable while the hub holds the store).
//!
//! See `docs/bridge.md`.
#![deny(missing_docs)]

pub mod backend;
mod engine;
mod records;
mod status;

pub use backend::{BackendError, Crm, Pacer, ZendeskHttp, install_crypto_provider};
pub use engine::{Bridge, BridgeConfig, ImportReport, Progress, PullReport, PushReport};
pub use status::{
    BridgeStatus, ErrorEntry, MAX_ERRORS, Reach, ReachChange, RunSummary, status_path,
};

use sellsync_model::RecordId;

/// What can go wrong in the bridge.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// The hub's store failed.
    #[error(transparent)]
    Store(#[from] sellsync_store::StoreError),
    /// The hub node failed.
    #[error(transparent)]
    Node(Box<sellsync_service::NodeError>),
    /// The CRM refused or failed in a way that stops this step.
    #[error("CRM: {0}")]
    Crm(#[from] sellsync_bridge::CrmError),
    /// A CRM object does not map to a record.
    #[error(transparent)]
    Map(#[from] sellsync_bridge::MapError),
    /// A CRM version could not be written into a document.
    #[error(transparent)]
    Pull(Box<sellsync_bridge::pull::PullError>),
    /// An answer could not be recorded in a document.
    #[error(transparent)]
    Outcome(Box<sellsync_bridge::push::OutcomeError>),
    /// A stored document is not a record.
    #[error("document {0}: {1}")]
    Load(RecordId, String),
    /// A record the CRM index knows has no shadow.
    #[error("no shadow for {0}")]
    NoShadow(RecordId),
    /// Stored bridge state does not read back.
    #[error("corrupt bridge state: {0}")]
    Corrupt(String),
    /// The runtime failed (a blocking task panicked or was cancelled).
    #[error("runtime: {0}")]
    Runtime(String),
}

impl From<sellsync_service::NodeError> for BridgeError {
    fn from(e: sellsync_service::NodeError) -> Self {
        BridgeError::Node(Box::new(e))
    }
}

impl From<sellsync_bridge::pull::PullError> for BridgeError {
    fn from(e: sellsync_bridge::pull::PullError) -> Self {
        BridgeError::Pull(Box::new(e))
    }
}

impl From<sellsync_bridge::push::OutcomeError> for BridgeError {
    fn from(e: sellsync_bridge::push::OutcomeError) -> Self {
        BridgeError::Outcome(Box::new(e))
    }
}
