//! The bridge's pure core: Zendesk Sell in, record document changes out; resolved record
//! changes in, CRM requests out. No I/O, no clock, no randomness: time and jitter are
//! arguments. An executor moves [`zendesk::HttpRequest`]s and persists what the core says.
//! See `docs/bridge.md`.

pub mod crm;
pub mod mapping;
pub mod pull;
pub mod push;
pub mod run;
pub mod sync;
pub mod zendesk;

pub use crm::{CrmError, CrmRequest, CrmResponse, Resource, SyncItem};
pub use mapping::{Image, MapError};
