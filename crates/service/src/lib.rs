//! The tokio shell of sellsync: nodes on real stores, talking over WebSockets.
//!
//! - [`StoreReplica`]: the sync protocol's [`sellsync_sync::Replica`] over a
//!   `sellsync_store::Store`, with access from an [`Acl`] file and tokens verified by the store.
//! - [`Node`]: a replica plus what the node does after receiving changes (automatic
//!   resolutions recorded, conflict and notification views refreshed) and the user's edits.
//! - [`net`]: the WebSocket transport: a listener that accepts sessions (hub, or a device's LAN
//!   peers) and a dialer that runs one session to the end, optionally over TLS (rustls).
//! - [`admin`]: the hub's admin commands, and the local socket (Unix) that carries them to a
//!   running hub.
//! - [`token`]: the enrollment token format, `<hub node>.<user id>.<device>.<secret>`.
//! - [`credential`]: Ed25519 keys of hubs and devices, the peer credentials and grants a hub
//!   hands its devices, and their checks between LAN peers (tested in process by
//!   `tests/lan.rs`, under a second).
//! - [`signed`]: signed changes: each change's author proven by its key, the hub's checks of
//!   what a change may write (tested by `tests/forged.rs`).
//!
//! Tests (`tests/sync.rs`) run in about a second. `SELLSYNC_SERVICE_PULL_DEALS=N` turns on a
//! measurement: a hub with N deals, a fresh device pulling them over a loopback WebSocket, with
//! time, frames and bytes printed (run with `--nocapture`).
#![deny(missing_docs)]

pub mod acl;
pub mod admin;
pub mod credential;
pub mod net;
mod node;
mod replica;
pub mod signed;
pub mod stats;
pub mod token;

pub use acl::{Acl, AclError};
pub use node::{Node, NodeError};
pub use replica::{CATALOG_ID, DEFAULT_CACHE_BUDGET, DocAccess, StoreReplica, actor_of, root_kind};
