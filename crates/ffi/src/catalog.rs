//! The catalog the hub shared, as plain records: stages, users, sources, loss reasons and
//! custom fields (by name with [`crate::Device::custom_field`]).

use sellsync_device as dev;
use sellsync_model::{CustomFieldDef, CustomFieldType};

use crate::types::RecordKind;

/// A pipeline.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct CatalogPipeline {
    /// CRM id.
    pub id: u64,
    /// Display name.
    pub name: String,
    /// No deal can be added to a disabled pipeline.
    pub disabled: bool,
}

/// A stage of a pipeline (a deal's `stage_id`).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct CatalogStage {
    /// CRM id.
    pub id: u64,
    /// Display name.
    pub name: String,
    /// The pipeline it belongs to.
    pub pipeline_id: u64,
    /// `incoming`, `in_progress`, `won`, `lost` or `unqualified`.
    pub category: String,
    /// Order within the pipeline.
    pub position: i64,
}

/// A CRM user (`owner_id`, a candidate's `by`).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct CatalogUser {
    /// CRM id.
    pub id: u64,
    /// Display name.
    pub name: String,
    /// `admin` or `user`.
    pub role: String,
}

/// A named entry: a deal source, a loss reason.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct CatalogEntry {
    /// CRM id.
    pub id: u64,
    /// Display name.
    pub name: String,
}

/// The value type of a custom field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum CustomFieldKind {
    /// Free text.
    Text,
    /// A decimal number.
    Number,
    /// A boolean.
    Bool,
    /// A date.
    Date,
    /// A date and time.
    DateTime,
    /// One of `choices`.
    List,
    /// Several of `choices`.
    MultiSelectList,
}

/// A custom field of deals or contacts (written as `custom_fields.<name>`).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct CustomField {
    /// The field's name.
    pub name: String,
    /// Its value type.
    pub kind: CustomFieldKind,
    /// The allowed choices of a list field.
    pub choices: Vec<String>,
    /// Whether the CRM refuses a record without it.
    pub required: bool,
}

/// The catalog the hub shared; empty (`loaded` false) before the first hub round.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Catalog {
    /// Whether it was ever filled from the CRM.
    pub loaded: bool,
    /// Pipelines, by id.
    pub pipelines: Vec<CatalogPipeline>,
    /// Stages, by id.
    pub stages: Vec<CatalogStage>,
    /// Users, by id.
    pub users: Vec<CatalogUser>,
    /// Deal sources, by id.
    pub sources: Vec<CatalogEntry>,
    /// Loss reasons, by id.
    pub loss_reasons: Vec<CatalogEntry>,
    /// Custom fields of deals, by name.
    pub deal_fields: Vec<CustomField>,
    /// Custom fields of contacts, by name.
    pub contact_fields: Vec<CustomField>,
}

impl From<&CustomFieldDef> for CustomField {
    fn from(d: &CustomFieldDef) -> Self {
        let kind = match d.ty {
            CustomFieldType::Text => CustomFieldKind::Text,
            CustomFieldType::Number => CustomFieldKind::Number,
            CustomFieldType::Bool => CustomFieldKind::Bool,
            CustomFieldType::Date => CustomFieldKind::Date,
            CustomFieldType::DateTime => CustomFieldKind::DateTime,
            CustomFieldType::List => CustomFieldKind::List,
            CustomFieldType::MultiSelectList => CustomFieldKind::MultiSelectList,
        };
        CustomField {
            name: d.name.clone(),
            kind,
            choices: d.choices.clone(),
            required: d.required,
        }
    }
}

pub(crate) fn model_kind(k: RecordKind) -> dev::RecordKind {
    match k {
        RecordKind::Deal => dev::RecordKind::Deal,
        RecordKind::Contact => dev::RecordKind::Contact,
    }
}

impl From<&dev::Catalog> for Catalog {
    fn from(c: &dev::Catalog) -> Self {
        let named = |m: &std::collections::BTreeMap<u64, sellsync_model::Named>| {
            m.values()
                .map(|n| CatalogEntry {
                    id: n.id,
                    name: n.name.clone(),
                })
                .collect()
        };
        let fields = |k: dev::RecordKind| {
            c.custom_fields
                .get(&k)
                .map(|m| m.values().map(CustomField::from).collect())
                .unwrap_or_default()
        };
        Catalog {
            loaded: c.loaded,
            pipelines: c
                .pipelines
                .values()
                .map(|p| CatalogPipeline {
                    id: p.id,
                    name: p.name.clone(),
                    disabled: p.disabled,
                })
                .collect(),
            stages: c
                .stages
                .values()
                .map(|s| CatalogStage {
                    id: s.id,
                    name: s.name.clone(),
                    pipeline_id: s.pipeline_id,
                    category: s.category.clone(),
                    position: s.position,
                })
                .collect(),
            users: c
                .users
                .values()
                .map(|u| CatalogUser {
                    id: u.id,
                    name: u.name.clone(),
                    role: u.role.clone(),
                })
                .collect(),
            sources: named(&c.sources),
            loss_reasons: named(&c.loss_reasons),
            deal_fields: fields(dev::RecordKind::Deal),
            contact_fields: fields(dev::RecordKind::Contact),
        }
    }
}
