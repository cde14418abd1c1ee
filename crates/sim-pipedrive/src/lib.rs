//! A local Pipedrive CRM simulator (see `docs/pipedrive-sim.md`).
//!
//! It serves the parts of Pipedrive's REST API that sellsync's adapter needs: API v2
//! (`/api/v2/...`) for deals, persons, organizations, activities, pipelines, stages and the
//! deal and person field definitions, and the v1 leftovers (`/api/v1/...` and `/v1/...`) for
//! notes, users, activity types and webhooks. State lives in memory behind one mutex.
//!
//! [`app`] builds the axum router over a [`PdSim`]; [`serve`] runs it on a bound listener.
//! [`demo_data`] builds an account shaped like one migrated from Zendesk Sell, [`empty_data`]
//! an account with only its users, pipelines and field definitions.
//!
//! Choices where Pipedrive's behaviour is not documented (marked UNCERTAIN in
//! `shared/docs/pipedrive-api.md`) are listed in `docs/pipedrive-sim.md`; the main ones:
//! - `GET /api/v2/{entity}/{id}` of a soft-deleted record answers 200 with `is_deleted: true`;
//!   PATCH and DELETE of it answer 404.
//! - PATCH changes only the fields sent; arrays are replaced whole; `custom_fields` is merged
//!   key by key. Unknown and read-only fields are refused with 400 (v2); v1 ignores unknown
//!   fields.
//! - `x-ratelimit-*` describe the per-token 2-second burst window;
//!   `x-daily-ratelimit-token-*` the company's daily token budget, charged at the
//!   `x-token-cost` of each operation. Either one spent answers 429 with the error envelope.
//! - `?api_token=`, `x-api-token` and `Authorization: Bearer` are all accepted.

mod demo;
mod entity;
mod error;
mod http;
mod paging;
mod serve;
mod state;
mod time;

pub use demo::{
    DEAL_LEAD_SOURCE, DEAL_PRODUCTS, DEAL_SELL_ID, PERSON_CHANNEL, PERSON_SELL_ID, demo_data,
    empty_data,
};
pub use error::PdError;
pub use http::app;
pub use serve::serve;
pub use state::{PdData, PdSim, PdSimConfig, Row, TokenInfo};
