//! A local Zendesk Sell v2 simulator (see `docs/simulator.md`).
//!
//! [`app`] builds the axum router over a [`Sim`]; [`serve`] runs it on a bound listener with
//! dropped-connection faults available. [`demo_data`] and [`empty_data`] build the data sets.
//! The simulator shares only wire types (`sellsync-api`) with the rest of the workspace.

mod demo;
mod error;
mod faults;
mod http;
mod query;
mod schema;
mod serve;
mod state;
mod store;
mod sync;

pub use demo::{demo_data, empty_data, token_for};
pub use error::ApiError;
pub use faults::{Fault, FaultConfig, FaultRule};
pub use http::app;
pub use schema::Kind;
pub use serve::serve;
pub use state::{Counters, RouteCount, Sim, SimConfig, TokenInfo};
pub use store::{Map, Row, SimData};
