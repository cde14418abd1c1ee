//! Zendesk Sell v2 wire types: envelopes, errors and resource DTOs.
//!
//! Faithful to `zendesk-sell-api.md`: every DTO tolerates unknown fields on read (serde's default),
//! optional fields read `null` or absence as `None`, and a deal's `value` is a [`Money`] (an
//! integer or a two-decimal string on the wire, never a float in memory). No logic, no I/O: the
//! bridge and the simulator share these types and nothing else.
#![deny(missing_docs)]

mod envelope;
mod error;
mod money;
mod resources;
mod sync;

pub use envelope::{Collection, CollectionMeta, Item, ItemMeta, Links, RequestEnvelope};
pub use error::{ErrorDetail, ErrorEnvelope, ErrorItem, ErrorItemMeta, ErrorLinks, ErrorsMeta};
pub use money::{Money, MoneyError};
pub use resources::{
    Account, Address, AssociatedContact, Call, Contact, CustomFieldChoice, CustomFieldDefinition,
    CustomFields, Deal, DealSource, LossReason, Note, Pipeline, Stage, Tag, Task, User,
};
pub use sync::{AckRequest, FailedObject, SyncEventType, SyncMeta, SyncQueue, SyncSession};
