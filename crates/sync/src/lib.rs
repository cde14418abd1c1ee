//! The replication protocol of sellsync, as a pure (sans-IO) core.
//!
//! - [`frame`]: the versioned binary frames with a hard size limit, and their total decoder.
//! - [`Session`]: one side of one connection. Feed it [`Event`]s (connection opened, frame
//!   received, connection closed); it returns [`Effects`]: frames to send and [`Effect`]s
//!   (authenticated, documents changed, checkpoint advanced, access revoked, ignored, finished,
//!   close).
//! - [`Replica`]: how the session reaches documents, the change feed, sync states and access
//!   rules, in batches so that a store answers a flight of thousands of documents with a few
//!   transactions. [`memory::MemReplica`] is the in-memory implementation used by tests and
//!   benchmarks.
//!
//! The caller's loop, for each connection:
//!
//! ```text
//! let mut s = Session::dial(config);            // or Session::accept(config)
//! fx = s.handle(&mut replica, Event::Opened);
//! loop {
//!     send every fx.send frame; carry out every fx.effects entry (persist checkpoints, …);
//!     if fx.ended() { close the connection; break }
//!     fx = s.handle(&mut replica, Event::Received(&next_frame))   // or Event::Closed
//! }
//! ```
//!
//! No clock, no randomness, no I/O: the same events give the same effects.
#![deny(missing_docs)]

pub mod frame;
pub mod memory;
mod replica;
mod session;

pub use frame::{BatchEntry, ErrorCode, Frame, FrameError, Role};
pub use replica::{
    CredentialCheck, FeedSlice, Incoming, Peer, Principal, Received, Replica, TokenRefused,
    Visibility,
};
pub use session::{
    AcceptConfig, CloseReason, DialConfig, Effect, Effects, Event, IgnoreReason, Limits,
    MIN_NONCE_LEN, Session, TranscriptLabel, transcript,
};
