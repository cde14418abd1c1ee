//! Resource DTOs (API doc §5). Unknown fields are ignored on read; missing ones take defaults.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::Money;

/// `custom_fields` of a record: value per custom field name (see §5.12 for value formats).
pub type CustomFields = BTreeMap<String, serde_json::Value>;

/// A deal (§5.1). `value` is never null on the wire: the Python client needs it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Deal {
    /// Server-assigned id.
    pub id: u64,
    /// User who created it.
    pub creator_id: Option<u64>,
    /// Owning user.
    pub owner_id: Option<u64>,
    /// Required on create.
    pub name: String,
    /// Integer when whole, else a two-decimal string.
    pub value: Money,
    /// ISO-4217 code.
    pub currency: Option<String>,
    /// Marked hot.
    pub hot: bool,
    /// Current stage.
    pub stage_id: Option<u64>,
    /// When the stage last changed.
    pub last_stage_change_at: Option<DateTime<Utc>>,
    /// Who changed the stage last (read-only).
    pub last_stage_change_by_id: Option<u64>,
    /// Read-only.
    pub last_activity_at: Option<DateTime<Utc>>,
    /// Deal source.
    pub source_id: Option<u64>,
    /// Why it was lost.
    pub loss_reason_id: Option<u64>,
    /// Why it was unqualified.
    pub unqualified_reason_id: Option<u64>,
    /// Read-only.
    pub dropbox_email: Option<String>,
    /// Primary contact.
    pub contact_id: Option<u64>,
    /// Read-only: the contact's organization.
    pub organization_id: Option<u64>,
    /// A date, `YYYY-MM-DD`.
    pub estimated_close_date: Option<String>,
    /// 0 to 100.
    pub customized_win_likelihood: Option<u8>,
    /// Tag names; replaced wholesale on update.
    pub tags: Vec<String>,
    /// Keyed by custom field name; merged per key on update.
    pub custom_fields: CustomFields,
    /// Name as in the Airbyte schema (clients call it `added_on`).
    pub added_at: Option<DateTime<Utc>>,
    /// Read-only.
    pub created_at: Option<DateTime<Utc>>,
    /// Read-only; moves on every write.
    pub updated_at: Option<DateTime<Utc>>,
}

/// A postal address.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Address {
    /// Street line.
    pub line1: Option<String>,
    /// City.
    pub city: Option<String>,
    /// Postal code.
    pub postal_code: Option<String>,
    /// State or region.
    pub state: Option<String>,
    /// Country.
    pub country: Option<String>,
}

/// A person or an organization (§5.2).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Contact {
    /// Server-assigned id.
    pub id: u64,
    /// User who created it.
    pub creator_id: Option<u64>,
    /// Owning user.
    pub owner_id: Option<u64>,
    /// Settable only at create.
    pub is_organization: bool,
    /// Organization a person belongs to.
    pub contact_id: Option<u64>,
    /// Parent organization (Java client only).
    pub parent_organization_id: Option<u64>,
    /// Required for an organization.
    pub name: Option<String>,
    /// Person only.
    pub first_name: Option<String>,
    /// Required for a person.
    pub last_name: Option<String>,
    /// `none`, `current`, `past`.
    pub customer_status: Option<String>,
    /// `none`, `current`, `lost`.
    pub prospect_status: Option<String>,
    /// Job title.
    pub title: Option<String>,
    /// Free text.
    pub description: Option<String>,
    /// Industry.
    pub industry: Option<String>,
    /// URL.
    pub website: Option<String>,
    /// Email.
    pub email: Option<String>,
    /// Phone.
    pub phone: Option<String>,
    /// Mobile.
    pub mobile: Option<String>,
    /// Fax.
    pub fax: Option<String>,
    /// Handle.
    pub twitter: Option<String>,
    /// Handle.
    pub facebook: Option<String>,
    /// Handle.
    pub linkedin: Option<String>,
    /// Handle.
    pub skype: Option<String>,
    /// Postal address.
    pub address: Option<Address>,
    /// Tag names; replaced wholesale on update.
    pub tags: Vec<String>,
    /// Keyed by custom field name.
    pub custom_fields: CustomFields,
    /// Read-only.
    pub created_at: Option<DateTime<Utc>>,
    /// Read-only.
    pub updated_at: Option<DateTime<Utc>>,
}

/// A note on a lead, contact or deal (§5.4).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Note {
    /// Server-assigned id.
    pub id: u64,
    /// Author.
    pub creator_id: Option<u64>,
    /// `lead`, `contact` or `deal`.
    pub resource_type: Option<String>,
    /// The record it is attached to.
    pub resource_id: Option<u64>,
    /// The text.
    pub content: String,
    /// Seen in third-party schemas only.
    pub is_important: Option<bool>,
    /// Seen in third-party schemas only.
    pub tags: Option<Vec<String>>,
    /// Read-only.
    pub created_at: Option<DateTime<Utc>>,
    /// Read-only.
    pub updated_at: Option<DateTime<Utc>>,
}

/// A task, floating or attached to a record (§5.5).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Task {
    /// Server-assigned id.
    pub id: u64,
    /// Who created it.
    pub creator_id: Option<u64>,
    /// Who must do it.
    pub owner_id: Option<u64>,
    /// `lead`, `contact` or `deal`; absent for a floating task.
    pub resource_type: Option<String>,
    /// The record it is attached to.
    pub resource_id: Option<u64>,
    /// What to do.
    pub content: String,
    /// When it is due.
    pub due_date: Option<DateTime<Utc>>,
    /// When to remind.
    pub remind_at: Option<DateTime<Utc>>,
    /// Done.
    pub completed: bool,
    /// Read-only.
    pub completed_at: Option<DateTime<Utc>>,
    /// Read-only.
    pub overdue: bool,
    /// Read-only.
    pub created_at: Option<DateTime<Utc>>,
    /// Read-only.
    pub updated_at: Option<DateTime<Utc>>,
}

/// A logged phone call (§5.6).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Call {
    /// Server-assigned id.
    pub id: u64,
    /// Who made or took it.
    pub user_id: Option<u64>,
    /// Notes.
    pub summary: Option<String>,
    /// Recording.
    pub recording_url: Option<String>,
    /// Call outcome.
    pub outcome_id: Option<u64>,
    /// Seconds.
    pub duration: Option<u64>,
    /// Number dialled or calling.
    pub phone_number: Option<String>,
    /// Inbound call.
    pub incoming: bool,
    /// Not answered.
    pub missed: bool,
    /// Id in the telephony system.
    pub external_id: Option<String>,
    /// When.
    pub made_at: Option<DateTime<Utc>>,
    /// `lead` or `contact`.
    pub resource_type: Option<String>,
    /// The record it is attached to.
    pub resource_id: Option<u64>,
    /// Deals it concerns.
    pub associated_deal_ids: Vec<u64>,
    /// Read-only.
    pub created_at: Option<DateTime<Utc>>,
    /// Read-only.
    pub updated_at: Option<DateTime<Utc>>,
}

/// A sales pipeline (§5.7, read-only).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Pipeline {
    /// Id.
    pub id: u64,
    /// Name.
    pub name: String,
    /// No deals can be added.
    pub disabled: bool,
    /// Read-only.
    pub created_at: Option<DateTime<Utc>>,
    /// Read-only.
    pub updated_at: Option<DateTime<Utc>>,
}

/// A pipeline stage (§5.8, read-only).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Stage {
    /// Id.
    pub id: u64,
    /// Name.
    pub name: String,
    /// `incoming`, `in_progress`, `won`, `lost` or `unqualified`.
    pub category: String,
    /// False for final stages.
    pub active: bool,
    /// Order in the pipeline.
    pub position: u32,
    /// Win likelihood in percent.
    pub likelihood: Option<u8>,
    /// Its pipeline.
    pub pipeline_id: u64,
    /// Read-only.
    pub created_at: Option<DateTime<Utc>>,
    /// Read-only.
    pub updated_at: Option<DateTime<Utc>>,
}

/// A user of the account (§5.11, read-only).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct User {
    /// Id.
    pub id: u64,
    /// Full name.
    pub name: String,
    /// Email.
    pub email: String,
    /// `admin` or `user`.
    pub role: String,
    /// Usually `active`.
    pub status: String,
    /// Email confirmed.
    pub confirmed: bool,
    /// Team (Java client).
    pub team_name: Option<String>,
    /// Manager.
    pub reports_to: Option<u64>,
    /// Time zone.
    pub timezone: Option<String>,
    /// Read-only.
    pub created_at: Option<DateTime<Utc>>,
    /// Read-only.
    pub updated_at: Option<DateTime<Utc>>,
    /// Read-only.
    pub deleted_at: Option<DateTime<Utc>>,
}

/// The account (`/v2/accounts/self`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Account {
    /// Id.
    pub id: u64,
    /// Company name.
    pub name: String,
    /// Default currency.
    pub currency: String,
    /// `12H` or `24H`.
    pub time_format: String,
    /// `UTC+01:00` style.
    pub timezone: String,
    /// Phone.
    pub phone: Option<String>,
    /// Read-only.
    pub created_at: Option<DateTime<Utc>>,
    /// Read-only.
    pub updated_at: Option<DateTime<Utc>>,
}

/// Why a deal was lost (§5.9). Names are unique.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LossReason {
    /// Id.
    pub id: u64,
    /// Who created it.
    pub creator_id: Option<u64>,
    /// Unique name.
    pub name: String,
    /// Read-only.
    pub created_at: Option<DateTime<Utc>>,
    /// Read-only.
    pub updated_at: Option<DateTime<Utc>>,
}

/// Where a deal came from (§5.10).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DealSource {
    /// Id.
    pub id: u64,
    /// Who created it.
    pub creator_id: Option<u64>,
    /// Name.
    pub name: String,
    /// `deal`.
    pub resource_type: Option<String>,
    /// Read-only.
    pub created_at: Option<DateTime<Utc>>,
    /// Read-only.
    pub updated_at: Option<DateTime<Utc>>,
}

/// A tag (§5.13).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Tag {
    /// Id.
    pub id: u64,
    /// Who created it.
    pub creator_id: Option<u64>,
    /// Name.
    pub name: String,
    /// `lead`, `contact` or `deal`.
    pub resource_type: String,
    /// Read-only.
    pub created_at: Option<DateTime<Utc>>,
    /// Read-only.
    pub updated_at: Option<DateTime<Utc>>,
}

/// One choice of a list custom field.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CustomFieldChoice {
    /// Id.
    pub id: u64,
    /// The value written on records.
    pub name: String,
}

/// A custom field definition (§5.12, read-only).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CustomFieldDefinition {
    /// Id.
    pub id: u64,
    /// Key on records.
    pub name: String,
    /// `string`, `text`, `number`, `list`, `multi_select_list`, `bool`, `date`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// Allowed values of list types.
    pub choices: Option<Vec<CustomFieldChoice>>,
    /// Contacts: shown on organizations.
    pub for_company: Option<bool>,
    /// Contacts: shown on persons.
    pub for_contact: Option<bool>,
    /// Read-only.
    pub created_at: Option<DateTime<Utc>>,
    /// Read-only.
    pub updated_at: Option<DateTime<Utc>>,
}

/// A contact attached to a deal with a role (§5.1).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AssociatedContact {
    /// The contact.
    pub contact_id: u64,
    /// E.g. `involved`.
    pub role: Option<String>,
    /// Read-only.
    pub created_at: Option<DateTime<Utc>>,
    /// Read-only.
    pub updated_at: Option<DateTime<Utc>>,
}
