//! The record schema: which fields each kind of record has, their types and default tiers.
//!
//! Field names are Zendesk Sell's (see the API notes, sections 5.1 to 5.6), so that a field can be
//! named the same way in the policy file, on the command line and in the CRM.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Tier;
use crate::value::Repr;

/// The kind of a record document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    /// A deal, with its notes, tasks and calls inside its document.
    Deal,
    /// A contact: a person or an organization.
    Contact,
}

impl RecordKind {
    /// The kind's name, as used in documents and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Deal => "deal",
            RecordKind::Contact => "contact",
        }
    }
}

impl fmt::Display for RecordKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RecordKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "deal" => Ok(RecordKind::Deal),
            "contact" => Ok(RecordKind::Contact),
            _ => Err(format!(
                "unknown record kind {s:?} (expected deal or contact)"
            )),
        }
    }
}

/// The kind of an activity kept inside a record's document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivityKind {
    /// A note: its content is collaborative text.
    Note,
    /// A task.
    Task,
    /// A logged call.
    Call,
}

impl ActivityKind {
    /// The kind's name, as used in documents and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ActivityKind::Note => "note",
            ActivityKind::Task => "task",
            ActivityKind::Call => "call",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<ActivityKind> {
        match s {
            "note" => Some(ActivityKind::Note),
            "task" => Some(ActivityKind::Task),
            "call" => Some(ActivityKind::Call),
            _ => None,
        }
    }
}

impl fmt::Display for ActivityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a field holds and which values are allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FieldType {
    Text,
    /// Text from a fixed list.
    Enum(&'static [&'static str]),
    /// An ISO 4217 code.
    Currency,
    Bool,
    Int {
        min: i64,
        max: i64,
    },
    /// Never negative.
    Money,
    Date,
    DateTime,
    /// A user of the catalog.
    User,
    /// A stage of the catalog, in a pipeline that is not disabled.
    Stage,
    /// A deal source of the catalog.
    Source,
    /// A loss reason of the catalog.
    LossReason,
    /// An id the catalog does not list (unqualified reasons, call outcomes).
    Ref,
    /// A contact (person or organization).
    Contact,
}

impl FieldType {
    pub(crate) fn repr(self) -> Repr {
        match self {
            FieldType::Text | FieldType::Enum(_) | FieldType::Currency => Repr::Text,
            FieldType::Bool => Repr::Bool,
            FieldType::Int { .. } => Repr::Int,
            FieldType::Money => Repr::Money,
            FieldType::Date => Repr::Date,
            FieldType::DateTime => Repr::DateTime,
            FieldType::User
            | FieldType::Stage
            | FieldType::Source
            | FieldType::LossReason
            | FieldType::Ref => Repr::Ref,
            FieldType::Contact => Repr::Record,
        }
    }
}

/// One standard field of a record or an activity.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FieldSpec {
    pub(crate) name: &'static str,
    pub(crate) ty: FieldType,
    pub(crate) tier: Tier,
    /// Must have a non-empty value when the record is created.
    pub(crate) required: bool,
    /// May be given at creation only (Sell ignores it afterwards).
    pub(crate) create_only: bool,
}

const fn f(name: &'static str, ty: FieldType, tier: Tier) -> FieldSpec {
    FieldSpec {
        name,
        ty,
        tier,
        required: false,
        create_only: false,
    }
}

const fn required(spec: FieldSpec) -> FieldSpec {
    FieldSpec {
        required: true,
        ..spec
    }
}

const fn create_only(spec: FieldSpec) -> FieldSpec {
    FieldSpec {
        create_only: true,
        ..spec
    }
}

use FieldType as T;
use Tier::{KeepServer, Lww, Manual, Notify};

/// Deal fields (API notes 5.1); tags and custom fields are handled apart.
pub(crate) const DEAL_FIELDS: &[FieldSpec] = &[
    required(f("name", T::Text, Lww)),
    f("value", T::Money, Manual),
    f("currency", T::Currency, Manual),
    f("stage_id", T::Stage, Manual),
    f("owner_id", T::User, Manual),
    f("loss_reason_id", T::LossReason, Manual),
    f("hot", T::Bool, Lww),
    f("source_id", T::Source, KeepServer),
    f("unqualified_reason_id", T::Ref, Lww),
    f("contact_id", T::Contact, Lww),
    f("estimated_close_date", T::Date, Notify),
    f(
        "customized_win_likelihood",
        T::Int { min: 0, max: 100 },
        Lww,
    ),
    f("last_stage_change_at", T::DateTime, Lww),
    f("added_on", T::Date, Lww),
];

const CUSTOMER_STATUS: &[&str] = &["none", "current", "past"];
const PROSPECT_STATUS: &[&str] = &["none", "current", "lost"];

/// Contact fields (API notes 5.2); the address is flattened into `address.*` fields so that
/// concurrent edits of its parts merge.
pub(crate) const CONTACT_FIELDS: &[FieldSpec] = &[
    f("name", T::Text, Lww),
    f("first_name", T::Text, Lww),
    f("last_name", T::Text, Lww),
    create_only(f("is_organization", T::Bool, Lww)),
    f("contact_id", T::Contact, Lww),
    f("parent_organization_id", T::Contact, Lww),
    f("owner_id", T::User, Manual),
    f("customer_status", T::Enum(CUSTOMER_STATUS), Lww),
    f("prospect_status", T::Enum(PROSPECT_STATUS), Lww),
    f("description", T::Text, Lww),
    f("industry", T::Text, Lww),
    f("title", T::Text, Lww),
    f("website", T::Text, Lww),
    f("twitter", T::Text, Lww),
    f("facebook", T::Text, Lww),
    f("linkedin", T::Text, Lww),
    f("skype", T::Text, Lww),
    f("email", T::Text, Notify),
    f("phone", T::Text, Notify),
    f("mobile", T::Text, Notify),
    f("fax", T::Text, Notify),
    f("address.line1", T::Text, Notify),
    f("address.city", T::Text, Notify),
    f("address.postal_code", T::Text, Notify),
    f("address.state", T::Text, Notify),
    f("address.country", T::Text, Notify),
];

/// Task fields (API notes 5.5).
pub(crate) const TASK_FIELDS: &[FieldSpec] = &[
    required(f("content", T::Text, Lww)),
    f("due_date", T::DateTime, Lww),
    f("remind_at", T::DateTime, Lww),
    f("completed", T::Bool, Lww),
    f("owner_id", T::User, Lww),
];

/// Call fields (API notes 5.6).
pub(crate) const CALL_FIELDS: &[FieldSpec] = &[
    f("summary", T::Text, Lww),
    f(
        "duration",
        T::Int {
            min: 0,
            max: i64::MAX,
        },
        Lww,
    ),
    f("phone_number", T::Text, Lww),
    f("outcome_id", T::Ref, Lww),
    f("incoming", T::Bool, Lww),
    f("missed", T::Bool, Lww),
    f("made_at", T::DateTime, Lww),
    f("recording_url", T::Text, Lww),
    f("user_id", T::User, Lww),
    f("external_id", T::Text, Lww),
];

/// Notes keep their content as collaborative text, not in registers.
pub(crate) const NOTE_FIELDS: &[FieldSpec] = &[];

pub(crate) fn record_fields(kind: RecordKind) -> &'static [FieldSpec] {
    match kind {
        RecordKind::Deal => DEAL_FIELDS,
        RecordKind::Contact => CONTACT_FIELDS,
    }
}

pub(crate) fn activity_fields(kind: ActivityKind) -> &'static [FieldSpec] {
    match kind {
        ActivityKind::Note => NOTE_FIELDS,
        ActivityKind::Task => TASK_FIELDS,
        ActivityKind::Call => CALL_FIELDS,
    }
}

pub(crate) fn find(fields: &'static [FieldSpec], name: &str) -> Option<&'static FieldSpec> {
    fields.iter().find(|s| s.name == name)
}

/// The name of a field of a record: a standard field (`value`) or a custom field
/// (`custom_fields.Region`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum FieldKey {
    /// A standard field, by its Sell name.
    Std(String),
    /// A custom field, by its Sell name.
    Custom(String),
}

/// The prefix that names custom fields, as Sell's `custom_fields` object does.
pub const CUSTOM_PREFIX: &str = "custom_fields.";

impl FieldKey {
    /// A standard field.
    pub fn std(name: &str) -> FieldKey {
        FieldKey::Std(name.to_owned())
    }

    /// A custom field.
    pub fn custom(name: &str) -> FieldKey {
        FieldKey::Custom(name.to_owned())
    }

    /// The bare name (without the custom prefix).
    pub fn name(&self) -> &str {
        match self {
            FieldKey::Std(n) | FieldKey::Custom(n) => n,
        }
    }
}

impl fmt::Display for FieldKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldKey::Std(n) => f.write_str(n),
            FieldKey::Custom(n) => write!(f, "{CUSTOM_PREFIX}{n}"),
        }
    }
}

impl FromStr for FieldKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let key = match s.strip_prefix(CUSTOM_PREFIX) {
            Some(name) => FieldKey::Custom(name.to_owned()),
            None => FieldKey::Std(s.to_owned()),
        };
        if key.name().is_empty() || key.name().len() > 128 {
            return Err(format!("bad field name {s:?}"));
        }
        Ok(key)
    }
}

impl TryFrom<String> for FieldKey {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<FieldKey> for String {
    fn from(k: FieldKey) -> String {
        k.to_string()
    }
}

/// ISO 4217 currency codes in current use.
pub(crate) const CURRENCIES: &[&str] = &[
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT",
    "BGN", "BHD", "BIF", "BMD", "BND", "BOB", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD",
    "CDF", "CHF", "CLP", "CNY", "COP", "CRC", "CUP", "CVE", "CZK", "DJF", "DKK", "DOP", "DZD",
    "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP", "GEL", "GHS", "GIP", "GMD", "GNF", "GTQ",
    "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "IQD", "IRR", "ISK", "JMD", "JOD",
    "JPY", "KES", "KGS", "KHR", "KMF", "KPW", "KRW", "KWD", "KYD", "KZT", "LAK", "LBP", "LKR",
    "LRD", "LSL", "LYD", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR", "MVR",
    "MWK", "MXN", "MYR", "MZN", "NAD", "NGN", "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", "PEN",
    "PGK", "PHP", "PKR", "PLN", "PYG", "QAR", "RON", "RSD", "RUB", "RWF", "SAR", "SBD", "SCR",
    "SDG", "SEK", "SGD", "SHP", "SLE", "SOS", "SRD", "SSP", "STN", "SYP", "SZL", "THB", "TJS",
    "TMT", "TND", "TOP", "TRY", "TTD", "TWD", "TZS", "UAH", "UGX", "USD", "UYU", "UZS", "VES",
    "VND", "VUV", "WST", "XAF", "XCD", "XOF", "XPF", "YER", "ZAR", "ZMW", "ZWL",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_keys_parse_custom_prefix() {
        assert_eq!("value".parse::<FieldKey>(), Ok(FieldKey::std("value")));
        assert_eq!(
            "custom_fields.Region".parse::<FieldKey>(),
            Ok(FieldKey::custom("Region"))
        );
        assert_eq!(
            FieldKey::custom("Region").to_string(),
            "custom_fields.Region"
        );
        assert!("".parse::<FieldKey>().is_err());
        assert!("custom_fields.".parse::<FieldKey>().is_err());
    }

    #[test]
    fn currencies_are_sorted_for_binary_search() {
        assert!(CURRENCIES.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn high_risk_deal_fields_default_to_manual() {
        for name in [
            "value",
            "currency",
            "stage_id",
            "owner_id",
            "loss_reason_id",
        ] {
            assert_eq!(
                find(DEAL_FIELDS, name).unwrap().tier,
                Tier::Manual,
                "{name}"
            );
        }
    }
}
