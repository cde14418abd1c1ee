//! Record documents, field policies and the conflict projection.
//!
//! Pure: nothing here reads the clock, the OS random generator, the disk or the network.
//! Callers pass time and identifiers in.
//!
//! - A record (deal or contact) is a [`RecordDoc`]: an Automerge document whose scalar fields are
//!   registers `{value, at, by, device}` written whole, whose notes are collaborative text, whose
//!   tags are an add-wins set, and whose notes, tasks and calls are only ever created.
//! - [`RecordDoc::apply`] turns one user action into one validated change ([`Edit`]).
//! - [`RecordDoc::project`] turns the document into a [`SellRecord`] plus open [`Conflict`]s,
//!   [`Notification`]s and the [`AuditEntry`] trail, deterministically; [`PushView`] is what may be
//!   sent to the CRM.
//! - [`RecordDoc::resolve_field`] and [`RecordDoc::resolve_record`] settle conflicts.
//! - The [`Policy`] gives each field its [`Tier`]; the [`Catalog`] validates values.

mod authorship;
mod catalog;
mod doc;
mod edit;
mod foreign;
mod ids;
mod policy;
mod project;
mod register;
mod resolve;
mod schema;
mod snapshot;
mod validate;
mod value;

pub use authorship::{ChangeAuthor, WriteViolation, check_change, check_resolutions};
pub use catalog::{
    Catalog, CatalogDoc, CrmReach, CustomFieldDef, CustomFieldType, Named, Pipeline, PolicyText,
    Stage, User,
};
pub use doc::{Author, LoadError, RecordDoc, SCHEMA_VERSION, Scope, Slot};
pub use edit::{Edit, EditCtx, EditError, parse_input};
pub use foreign::{AutomergePanic, guarded};
pub use ids::{ActivityId, BadId, DeviceId, RecordId, UserId};
pub use policy::{Policy, PolicyError, Tier};
pub use project::{
    ActivityPush, ActivityView, AssumeLive, AuditEntry, Candidate, Chosen, Conflict, Directory,
    Flag, FlagKind, Notification, ProjectCtx, Projection, PushAction, PushView, RecordState,
    RefStatus, SellRecord,
};
pub use register::RegisterLayout;
pub use resolve::{Choice, RecordChoice, RefusalTarget, ResolveError};
pub use schema::{ActivityKind, CUSTOM_PREFIX, FieldKey, RecordKind};
pub use value::{Money, RecordRef, Value};
