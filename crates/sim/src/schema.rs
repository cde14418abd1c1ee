//! The resource catalogue: which attributes each resource has, their wire types, which are
//! writable, required or references. Validation, defaults, filters and sorting all read this
//! table, so one resource's behaviour is the same in every handler.

use serde::{Deserialize, Serialize};

/// A resource type the simulator stores in a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// `/v2/deals`
    Deal,
    /// `/v2/contacts`
    Contact,
    /// `/v2/notes`
    Note,
    /// `/v2/tasks`
    Task,
    /// `/v2/calls`
    Call,
    /// `/v2/pipelines` (read-only)
    Pipeline,
    /// `/v2/stages` (read-only)
    Stage,
    /// `/v2/users` (read-only)
    User,
    /// `/v2/loss_reasons`
    LossReason,
    /// `/v2/deal_sources`
    DealSource,
    /// `/v2/tags`
    Tag,
}

/// Every kind, in the order the Sync API delivers them (catalogues before records).
pub(crate) const ALL_KINDS: [Kind; 11] = [
    Kind::User,
    Kind::Pipeline,
    Kind::Stage,
    Kind::LossReason,
    Kind::DealSource,
    Kind::Tag,
    Kind::Contact,
    Kind::Deal,
    Kind::Note,
    Kind::Task,
    Kind::Call,
];

/// The longest short string the simulator accepts, in characters. Zendesk documents no limit;
/// this is the common `varchar(255)` a CRM's name and contact columns have.
pub(crate) const MAX_STR_CHARS: usize = 255;
/// The longest text (note content, description, call summary) the simulator accepts, in
/// characters: 64 Ki, a `text` column's limit.
pub(crate) const MAX_TEXT_CHARS: usize = 65_536;

/// Wire type of an attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ty {
    /// Non-negative integer id.
    Id,
    /// Non-negative integer.
    Count,
    /// Integer 0..=100.
    Percent,
    /// A short string (a name, an email, a URL): at most [`MAX_STR_CHARS`] characters.
    Str,
    /// A long text (a note's content, a description): at most [`MAX_TEXT_CHARS`] characters.
    Text,
    /// Boolean.
    Bool,
    /// `YYYY-MM-DD`.
    Date,
    /// ISO-8601 date-time, stored as `YYYY-MM-DDTHH:MM:SSZ`.
    DateTime,
    /// Deal value: integer or two-decimal string (`sellsync_api::Money`).
    Money,
    /// ISO-4217 code from [`CURRENCIES`].
    Currency,
    /// One of the listed strings.
    Enum(&'static [&'static str]),
    /// Array of tag names, replaced wholesale.
    Tags,
    /// Object keyed by custom field name, merged per key.
    CustomFields,
    /// Postal address object.
    Address,
    /// Array of ids.
    IdList,
}

/// Who may set an attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Set by the server; ignored in request bodies.
    ReadOnly,
    /// Settable on create and update.
    Write,
    /// Settable on create only; ignored on update.
    CreateOnly,
}

/// What an id attribute must point at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ref {
    /// A user.
    User,
    /// A stage (of an enabled pipeline).
    Stage,
    /// A contact.
    Contact,
    /// A loss reason.
    LossReason,
    /// A deal source.
    DealSource,
    /// A list of deals.
    Deals,
}

/// One attribute of a resource.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Field {
    pub(crate) name: &'static str,
    pub(crate) ty: Ty,
    pub(crate) access: Access,
    pub(crate) refs: Option<Ref>,
}

const fn ro(name: &'static str, ty: Ty) -> Field {
    Field {
        name,
        ty,
        access: Access::ReadOnly,
        refs: None,
    }
}
const fn rw(name: &'static str, ty: Ty) -> Field {
    Field {
        name,
        ty,
        access: Access::Write,
        refs: None,
    }
}
const fn rf(name: &'static str, r: Ref) -> Field {
    let ty = if matches!(r, Ref::Deals) {
        Ty::IdList
    } else {
        Ty::Id
    };
    Field {
        name,
        ty,
        access: Access::Write,
        refs: Some(r),
    }
}

/// Currencies accepted for a deal (a subset of ISO-4217; anything else is `incorrect_value`).
pub(crate) const CURRENCIES: &[&str] = &[
    "AUD", "BRL", "CAD", "CHF", "CNY", "CZK", "DKK", "EUR", "GBP", "HKD", "HUF", "INR", "JPY",
    "MXN", "NOK", "NZD", "PLN", "SEK", "SGD", "USD", "ZAR",
];

/// Resource types a note, task or call may be attached to.
pub(crate) const ATTACHABLE: &[&str] = &["lead", "contact", "deal"];

const STD_RO: [Field; 4] = [
    ro("id", Ty::Id),
    ro("creator_id", Ty::Id),
    ro("created_at", Ty::DateTime),
    ro("updated_at", Ty::DateTime),
];

const DEAL: &[Field] = &[
    STD_RO[0],
    STD_RO[1],
    rf("owner_id", Ref::User),
    rw("name", Ty::Str),
    rw("value", Ty::Money),
    rw("currency", Ty::Currency),
    rw("hot", Ty::Bool),
    rf("stage_id", Ref::Stage),
    rw("last_stage_change_at", Ty::DateTime),
    ro("last_stage_change_by_id", Ty::Id),
    ro("last_activity_at", Ty::DateTime),
    rf("source_id", Ref::DealSource),
    rf("loss_reason_id", Ref::LossReason),
    rw("unqualified_reason_id", Ty::Id),
    ro("dropbox_email", Ty::Str),
    rf("contact_id", Ref::Contact),
    ro("organization_id", Ty::Id),
    rw("estimated_close_date", Ty::Date),
    rw("customized_win_likelihood", Ty::Percent),
    rw("tags", Ty::Tags),
    rw("custom_fields", Ty::CustomFields),
    rw("added_at", Ty::DateTime),
    STD_RO[2],
    STD_RO[3],
];

const CUSTOMER_STATUS: &[&str] = &["none", "current", "past"];
const PROSPECT_STATUS: &[&str] = &["none", "current", "lost"];

const CONTACT: &[Field] = &[
    STD_RO[0],
    STD_RO[1],
    rf("owner_id", Ref::User),
    Field {
        name: "is_organization",
        ty: Ty::Bool,
        access: Access::CreateOnly,
        refs: None,
    },
    rf("contact_id", Ref::Contact),
    rf("parent_organization_id", Ref::Contact),
    rw("name", Ty::Str),
    rw("first_name", Ty::Str),
    rw("last_name", Ty::Str),
    rw("customer_status", Ty::Enum(CUSTOMER_STATUS)),
    rw("prospect_status", Ty::Enum(PROSPECT_STATUS)),
    rw("title", Ty::Str),
    rw("description", Ty::Text),
    rw("industry", Ty::Str),
    rw("website", Ty::Str),
    rw("email", Ty::Str),
    rw("phone", Ty::Str),
    rw("mobile", Ty::Str),
    rw("fax", Ty::Str),
    rw("twitter", Ty::Str),
    rw("facebook", Ty::Str),
    rw("linkedin", Ty::Str),
    rw("skype", Ty::Str),
    rw("address", Ty::Address),
    rw("tags", Ty::Tags),
    rw("custom_fields", Ty::CustomFields),
    STD_RO[2],
    STD_RO[3],
];

const NOTE: &[Field] = &[
    STD_RO[0],
    STD_RO[1],
    rw("resource_type", Ty::Enum(ATTACHABLE)),
    rw("resource_id", Ty::Id),
    rw("content", Ty::Text),
    rw("is_important", Ty::Bool),
    STD_RO[2],
    STD_RO[3],
];

const TASK: &[Field] = &[
    STD_RO[0],
    STD_RO[1],
    rf("owner_id", Ref::User),
    rw("resource_type", Ty::Enum(ATTACHABLE)),
    rw("resource_id", Ty::Id),
    rw("content", Ty::Text),
    rw("due_date", Ty::DateTime),
    rw("remind_at", Ty::DateTime),
    rw("completed", Ty::Bool),
    ro("completed_at", Ty::DateTime),
    ro("overdue", Ty::Bool),
    STD_RO[2],
    STD_RO[3],
];

const CALL: &[Field] = &[
    STD_RO[0],
    rf("user_id", Ref::User),
    rw("summary", Ty::Text),
    rw("recording_url", Ty::Str),
    rw("outcome_id", Ty::Id),
    rw("duration", Ty::Count),
    rw("phone_number", Ty::Str),
    rw("incoming", Ty::Bool),
    rw("missed", Ty::Bool),
    rw("external_id", Ty::Str),
    rw("made_at", Ty::DateTime),
    rw("resource_type", Ty::Enum(&["lead", "contact"])),
    rw("resource_id", Ty::Id),
    rf("associated_deal_ids", Ref::Deals),
    STD_RO[2],
    STD_RO[3],
];

const PIPELINE: &[Field] = &[
    STD_RO[0],
    ro("name", Ty::Str),
    ro("disabled", Ty::Bool),
    STD_RO[2],
    STD_RO[3],
];

const STAGE: &[Field] = &[
    STD_RO[0],
    ro("name", Ty::Str),
    ro("category", Ty::Str),
    ro("active", Ty::Bool),
    ro("position", Ty::Count),
    ro("likelihood", Ty::Percent),
    ro("pipeline_id", Ty::Id),
    STD_RO[2],
    STD_RO[3],
];

const USER: &[Field] = &[
    STD_RO[0],
    ro("name", Ty::Str),
    ro("email", Ty::Str),
    ro("role", Ty::Str),
    ro("status", Ty::Str),
    ro("confirmed", Ty::Bool),
    ro("team_name", Ty::Str),
    ro("reports_to", Ty::Id),
    ro("timezone", Ty::Str),
    STD_RO[2],
    STD_RO[3],
    ro("deleted_at", Ty::DateTime),
];

const NAMED: &[Field] = &[
    STD_RO[0],
    STD_RO[1],
    rw("name", Ty::Str),
    STD_RO[2],
    STD_RO[3],
];

const DEAL_SOURCE: &[Field] = &[
    STD_RO[0],
    STD_RO[1],
    rw("name", Ty::Str),
    rw("resource_type", Ty::Enum(&["deal"])),
    STD_RO[2],
    STD_RO[3],
];

const TAG: &[Field] = &[
    STD_RO[0],
    STD_RO[1],
    rw("name", Ty::Str),
    rw("resource_type", Ty::Enum(ATTACHABLE)),
    STD_RO[2],
    STD_RO[3],
];

impl Kind {
    /// Path segment under `/v2`.
    pub(crate) fn path(self) -> &'static str {
        match self {
            Kind::Deal => "deals",
            Kind::Contact => "contacts",
            Kind::Note => "notes",
            Kind::Task => "tasks",
            Kind::Call => "calls",
            Kind::Pipeline => "pipelines",
            Kind::Stage => "stages",
            Kind::User => "users",
            Kind::LossReason => "loss_reasons",
            Kind::DealSource => "deal_sources",
            Kind::Tag => "tags",
        }
    }

    /// `meta.type` of one item, and `resource` in errors.
    pub(crate) fn type_name(self) -> &'static str {
        match self {
            Kind::Deal => "deal",
            Kind::Contact => "contact",
            Kind::Note => "note",
            Kind::Task => "task",
            Kind::Call => "call",
            Kind::Pipeline => "pipeline",
            Kind::Stage => "stage",
            Kind::User => "user",
            Kind::LossReason => "loss_reason",
            Kind::DealSource => "deal_source",
            Kind::Tag => "tag",
        }
    }

    /// `meta.type` in the Sync API (the Java client's names: deal sources are `source`).
    pub(crate) fn sync_type(self) -> &'static str {
        match self {
            Kind::DealSource => "source",
            k => k.type_name(),
        }
    }

    /// The type part of an ack key: `Deal`, `LossReason`, `Source`, ...
    pub(crate) fn ack_type(self) -> &'static str {
        match self {
            Kind::Deal => "Deal",
            Kind::Contact => "Contact",
            Kind::Note => "Note",
            Kind::Task => "Task",
            Kind::Call => "Call",
            Kind::Pipeline => "Pipeline",
            Kind::Stage => "Stage",
            Kind::User => "User",
            Kind::LossReason => "LossReason",
            Kind::DealSource => "Source",
            Kind::Tag => "Tag",
        }
    }

    /// Inverse of [`Kind::ack_type`].
    pub(crate) fn from_ack_type(s: &str) -> Option<Kind> {
        ALL_KINDS.into_iter().find(|k| k.ack_type() == s)
    }

    /// The attributes, in wire order.
    pub(crate) fn fields(self) -> &'static [Field] {
        match self {
            Kind::Deal => DEAL,
            Kind::Contact => CONTACT,
            Kind::Note => NOTE,
            Kind::Task => TASK,
            Kind::Call => CALL,
            Kind::Pipeline => PIPELINE,
            Kind::Stage => STAGE,
            Kind::User => USER,
            Kind::LossReason => NAMED,
            Kind::DealSource => DEAL_SOURCE,
            Kind::Tag => TAG,
        }
    }

    pub(crate) fn field(self, name: &str) -> Option<&'static Field> {
        self.fields().iter().find(|f| f.name == name)
    }

    /// Default `sort_by` (API doc §2.3).
    pub(crate) fn default_sort(self) -> &'static str {
        match self {
            Kind::Contact => "last_name",
            Kind::Note | Kind::Task | Kind::Tag => "updated_at",
            _ => "id",
        }
    }

    /// The attribute naming the user a record belongs to, for the visibility rule.
    pub(crate) fn owner_field(self) -> &'static str {
        match self {
            Kind::Deal | Kind::Contact | Kind::Task => "owner_id",
            Kind::Call => "user_id",
            _ => "creator_id",
        }
    }

    /// Resource type of a custom field definition list, if the kind has custom fields.
    pub(crate) fn custom_field_type(self) -> Option<&'static str> {
        match self {
            Kind::Deal => Some("deal"),
            Kind::Contact => Some("contact"),
            _ => None,
        }
    }

    /// Kind of a `resource_type` value, where the simulator stores that kind.
    pub(crate) fn from_resource_type(s: &str) -> Option<Kind> {
        match s {
            "deal" => Some(Kind::Deal),
            "contact" => Some(Kind::Contact),
            _ => None,
        }
    }
}
