//! Zendesk Sell objects <-> model fields, and the catalog import.
//!
//! An [`Image`] is what the bridge knows of one CRM object as model values: every mapped field
//! (absent and `null` both mean [`Value::Null`]), the tag set, `updated_at`, and who the CRM
//! says changed what ([`Origin`]). It is what a shadow stores and what a pull diffs against.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use sellsync_model::{ActivityKind, Catalog, FieldKey, Money, RecordKind, RecordRef, Value};
use sellsync_model::{CustomFieldDef, CustomFieldType, Named, Pipeline, Stage, User};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json, json};

/// A CRM object as model values.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Image {
    /// Mapped fields; a missing key reads as `Null`.
    pub fields: BTreeMap<FieldKey, Value>,
    /// Tags (records only).
    pub tags: BTreeSet<String>,
    /// The CRM's `updated_at`, as sent.
    pub updated_at: Option<String>,
    /// Who and when the CRM says a field was last changed, for the fields where it says so.
    /// Never diffed: it only stamps what a pull writes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub origin: BTreeMap<FieldKey, FieldOrigin>,
}

/// Who last changed one field, and when, as the CRM reports it (a deal's stage:
/// `last_stage_change_by_id`, `last_stage_change_at`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldOrigin {
    /// The CRM user.
    pub by: Option<u64>,
    /// When (RFC 3339, as sent).
    pub at: Option<String>,
}

/// Fields whose last author and time the CRM reports: (field, author attribute, time attribute).
const DEAL_ORIGINS: &[(&str, &str, &str)] = &[(
    "stage_id",
    "last_stage_change_by_id",
    "last_stage_change_at",
)];

impl Image {
    /// The field's value, `Null` when absent.
    pub fn get(&self, key: &FieldKey) -> Value {
        self.fields.get(key).cloned().unwrap_or(Value::Null)
    }

    /// The fields whose values differ between `self` and `newer`, with `newer`'s value.
    pub fn changed_fields(&self, newer: &Image) -> Vec<(FieldKey, Value)> {
        let keys: BTreeSet<&FieldKey> = self.fields.keys().chain(newer.fields.keys()).collect();
        keys.into_iter()
            .filter(|k| self.get(k) != newer.get(k))
            .map(|k| (k.clone(), newer.get(k)))
            .collect()
    }
}

/// Why a CRM object could not be mapped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// Not an object with a numeric id.
    #[error("not a {0} object with an id")]
    NotAnObject(&'static str),
    /// A field that does not read as its type.
    #[error("{field}: {reason}")]
    Field {
        /// The field.
        field: String,
        /// Why.
        reason: String,
    },
}

/// How a standard field is read from and written to the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    Text,
    Bool,
    Int,
    Money,
    Date,
    DateTime,
    Ref,
    Record,
}

/// Deal fields the bridge maps (`last_stage_change_at` and `added_on` are the CRM's own
/// bookkeeping and are not round-tripped).
const DEAL: &[(&str, Wire)] = &[
    ("name", Wire::Text),
    ("value", Wire::Money),
    ("currency", Wire::Text),
    ("stage_id", Wire::Ref),
    ("owner_id", Wire::Ref),
    ("loss_reason_id", Wire::Ref),
    ("hot", Wire::Bool),
    ("source_id", Wire::Ref),
    ("unqualified_reason_id", Wire::Ref),
    ("contact_id", Wire::Record),
    ("estimated_close_date", Wire::Date),
    ("customized_win_likelihood", Wire::Int),
];

/// Contact fields; `address.*` are the parts of the nested `address` object.
const CONTACT: &[(&str, Wire)] = &[
    ("name", Wire::Text),
    ("first_name", Wire::Text),
    ("last_name", Wire::Text),
    ("is_organization", Wire::Bool),
    ("contact_id", Wire::Record),
    ("parent_organization_id", Wire::Record),
    ("owner_id", Wire::Ref),
    ("customer_status", Wire::Text),
    ("prospect_status", Wire::Text),
    ("description", Wire::Text),
    ("industry", Wire::Text),
    ("title", Wire::Text),
    ("website", Wire::Text),
    ("twitter", Wire::Text),
    ("facebook", Wire::Text),
    ("linkedin", Wire::Text),
    ("skype", Wire::Text),
    ("email", Wire::Text),
    ("phone", Wire::Text),
    ("mobile", Wire::Text),
    ("fax", Wire::Text),
    ("address.line1", Wire::Text),
    ("address.city", Wire::Text),
    ("address.postal_code", Wire::Text),
    ("address.state", Wire::Text),
    ("address.country", Wire::Text),
];

const NOTE: &[(&str, Wire)] = &[("content", Wire::Text)];

const TASK: &[(&str, Wire)] = &[
    ("content", Wire::Text),
    ("due_date", Wire::DateTime),
    ("remind_at", Wire::DateTime),
    ("completed", Wire::Bool),
    ("owner_id", Wire::Ref),
];

const CALL: &[(&str, Wire)] = &[
    ("summary", Wire::Text),
    ("duration", Wire::Int),
    ("phone_number", Wire::Text),
    ("outcome_id", Wire::Ref),
    ("incoming", Wire::Bool),
    ("missed", Wire::Bool),
    ("made_at", Wire::DateTime),
    ("recording_url", Wire::Text),
    ("user_id", Wire::Ref),
    ("external_id", Wire::Text),
];

/// The mapped fields of a record kind.
fn record_table(kind: RecordKind) -> &'static [(&'static str, Wire)] {
    match kind {
        RecordKind::Deal => DEAL,
        RecordKind::Contact => CONTACT,
    }
}

/// The mapped fields of an activity kind.
fn activity_table(kind: ActivityKind) -> &'static [(&'static str, Wire)] {
    match kind {
        ActivityKind::Note => NOTE,
        ActivityKind::Task => TASK,
        ActivityKind::Call => CALL,
    }
}

fn lookup<'a>(obj: &'a Map<String, Json>, name: &str) -> Option<&'a Json> {
    match name.split_once('.') {
        Some((outer, inner)) => obj.get(outer)?.as_object()?.get(inner),
        None => obj.get(name),
    }
}

fn bad(field: &str, reason: impl Into<String>) -> MapError {
    MapError::Field {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

fn read_wire(field: &str, wire: Wire, v: &Json) -> Result<Value, MapError> {
    if v.is_null() {
        return Ok(Value::Null);
    }
    let u64_of = |v: &Json| v.as_u64().ok_or_else(|| bad(field, "expected an id"));
    Ok(match wire {
        Wire::Text => Value::Text(
            v.as_str()
                .ok_or_else(|| bad(field, "expected text"))?
                .to_owned(),
        ),
        Wire::Bool => Value::Bool(
            v.as_bool()
                .ok_or_else(|| bad(field, "expected a boolean"))?,
        ),
        Wire::Int => Value::Int(
            v.as_i64()
                .ok_or_else(|| bad(field, "expected an integer"))?,
        ),
        Wire::Money => {
            let m: sellsync_api::Money =
                serde_json::from_value(v.clone()).map_err(|e| bad(field, e.to_string()))?;
            Value::Money(Money::from_cents(m.cents))
        }
        Wire::Date => Value::Date(
            NaiveDate::parse_from_str(v.as_str().unwrap_or_default(), "%Y-%m-%d")
                .map_err(|_| bad(field, "expected a date YYYY-MM-DD"))?,
        ),
        Wire::DateTime => Value::DateTime(
            DateTime::parse_from_rfc3339(v.as_str().unwrap_or_default())
                .map_err(|_| bad(field, "expected an RFC 3339 date-time"))?
                .with_timezone(&Utc),
        ),
        Wire::Ref => Value::Ref(u64_of(v)?),
        Wire::Record => Value::Record(RecordRef::Crm(u64_of(v)?)),
    })
}

/// The wire form of a model value. A reference to a record the CRM has not seen yet has no
/// wire form: `None` (the caller waits until it has a CRM id).
pub fn to_wire(v: &Value) -> Option<Json> {
    Some(match v {
        Value::Null => Json::Null,
        Value::Text(s) => json!(s),
        Value::Number(s) => serde_json::from_str::<serde_json::Number>(s)
            .map(Json::Number)
            .unwrap_or_else(|_| json!(s)),
        Value::Bool(b) => json!(b),
        Value::Int(i) => json!(i),
        Value::Money(m) => json!(m.to_string()),
        Value::Date(d) => json!(d.format("%Y-%m-%d").to_string()),
        Value::DateTime(t) => json!(t.to_rfc3339_opts(SecondsFormat::Secs, true)),
        Value::Ref(id) | Value::Record(RecordRef::Crm(id)) => json!(id),
        Value::Record(RecordRef::Local(_)) => return None,
        Value::List(items) => json!(items),
    })
}

/// A custom field value as the catalog's definition types it (by its JSON type when the
/// catalog does not know the field).
fn read_custom(name: &str, def: Option<&CustomFieldDef>, v: &Json) -> Result<Value, MapError> {
    let field = format!("custom_fields.{name}");
    if v.is_null() {
        return Ok(Value::Null);
    }
    let number = |v: &Json| match v {
        Json::Number(n) => Ok(Value::Number(n.to_string())),
        Json::String(s) if s.parse::<f64>().is_ok() => Ok(Value::Number(s.clone())),
        _ => Err(bad(&field, "expected a number")),
    };
    match def.map(|d| d.ty) {
        Some(CustomFieldType::Text | CustomFieldType::List) => read_wire(&field, Wire::Text, v),
        Some(CustomFieldType::Bool) => read_wire(&field, Wire::Bool, v),
        Some(CustomFieldType::Date) => read_wire(&field, Wire::Date, v),
        Some(CustomFieldType::DateTime) => read_wire(&field, Wire::DateTime, v),
        Some(CustomFieldType::Number) => number(v),
        Some(CustomFieldType::MultiSelectList) => {
            let mut items: Vec<String> = v
                .as_array()
                .ok_or_else(|| bad(&field, "expected a list"))?
                .iter()
                .map(|x| x.as_str().map(str::to_owned))
                .collect::<Option<_>>()
                .ok_or_else(|| bad(&field, "expected a list of text"))?;
            items.sort();
            items.dedup();
            Ok(Value::List(items))
        }
        None => match v {
            Json::String(s) => Ok(Value::Text(s.clone())),
            Json::Bool(b) => Ok(Value::Bool(*b)),
            Json::Number(n) => Ok(n
                .as_i64()
                .map_or_else(|| Value::Number(n.to_string()), Value::Int)),
            _ => read_custom(
                name,
                Some(&CustomFieldDef {
                    name: name.to_owned(),
                    ty: CustomFieldType::MultiSelectList,
                    choices: Vec::new(),
                    required: false,
                }),
                v,
            ),
        },
    }
}

fn read_table(
    obj: &Map<String, Json>,
    table: &[(&str, Wire)],
    image: &mut Image,
) -> Result<(), MapError> {
    for (name, wire) in table {
        let v = lookup(obj, name).unwrap_or(&Json::Null);
        let value = read_wire(name, *wire, v)?;
        if value != Value::Null {
            image.fields.insert(FieldKey::std(name), value);
        }
    }
    image.updated_at = obj
        .get("updated_at")
        .and_then(Json::as_str)
        .map(str::to_owned);
    Ok(())
}

/// A deal or contact as an image; returns its CRM id too.
pub fn record_image(
    kind: RecordKind,
    data: &Json,
    catalog: &Catalog,
) -> Result<(u64, Image), MapError> {
    let obj = data
        .as_object()
        .ok_or(MapError::NotAnObject(kind.as_str()))?;
    let id = obj
        .get("id")
        .and_then(Json::as_u64)
        .ok_or(MapError::NotAnObject(kind.as_str()))?;
    let mut image = Image::default();
    read_table(obj, record_table(kind), &mut image)?;
    if kind == RecordKind::Deal {
        for (field, by, at) in DEAL_ORIGINS {
            let origin = FieldOrigin {
                by: obj.get(*by).and_then(Json::as_u64),
                at: obj.get(*at).and_then(Json::as_str).map(str::to_owned),
            };
            if origin != FieldOrigin::default() {
                image.origin.insert(FieldKey::std(field), origin);
            }
        }
    }
    if let Some(tags) = obj.get("tags").and_then(Json::as_array) {
        image.tags = tags
            .iter()
            .filter_map(|t| t.as_str().map(str::to_owned))
            .collect();
    }
    if let Some(custom) = obj.get("custom_fields").and_then(Json::as_object) {
        for (name, v) in custom {
            let value = read_custom(name, catalog.custom_field(kind, name), v)?;
            if value != Value::Null {
                image.fields.insert(FieldKey::custom(name), value);
            }
        }
    }
    Ok((id, image))
}

/// Where an activity belongs: the record kind and CRM id of its parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parent {
    /// Deal or contact.
    pub kind: RecordKind,
    /// The parent's CRM id.
    pub crm_id: u64,
}

/// A note, task or call as an image, with its CRM id and its parent (`None` for a floating
/// task or an activity on a lead, which the bridge does not keep).
pub fn activity_image(
    kind: ActivityKind,
    data: &Json,
) -> Result<(u64, Option<Parent>, Image), MapError> {
    let obj = data
        .as_object()
        .ok_or(MapError::NotAnObject(kind.as_str()))?;
    let id = obj
        .get("id")
        .and_then(Json::as_u64)
        .ok_or(MapError::NotAnObject(kind.as_str()))?;
    let mut image = Image::default();
    read_table(obj, activity_table(kind), &mut image)?;
    let deal = obj
        .get("associated_deal_ids")
        .and_then(Json::as_array)
        .and_then(|a| a.first())
        .and_then(Json::as_u64);
    let on = |t: &str| obj.get("resource_type").and_then(Json::as_str) == Some(t);
    let rid = obj.get("resource_id").and_then(Json::as_u64);
    let parent = match (deal, rid) {
        (Some(d), _) => Some(Parent {
            kind: RecordKind::Deal,
            crm_id: d,
        }),
        (None, Some(r)) if on("deal") => Some(Parent {
            kind: RecordKind::Deal,
            crm_id: r,
        }),
        (None, Some(r)) if on("contact") => Some(Parent {
            kind: RecordKind::Contact,
            crm_id: r,
        }),
        _ => None,
    };
    Ok((id, parent, image))
}

/// The request body for the given fields of a record: standard fields at the top, custom
/// fields under `custom_fields`, `address.*` under `address`. `None` when a value has no wire
/// form yet (a reference to a record the CRM has not seen).
pub fn body_of(fields: &[(FieldKey, Value)]) -> Option<Map<String, Json>> {
    let mut body = Map::new();
    for (key, value) in fields {
        let v = to_wire(value)?;
        match key {
            FieldKey::Custom(name) => {
                let custom = body
                    .entry("custom_fields")
                    .or_insert_with(|| Json::Object(Map::new()));
                if let Some(m) = custom.as_object_mut() {
                    m.insert(name.clone(), v);
                }
            }
            FieldKey::Std(name) => match name.split_once('.') {
                Some((outer, inner)) => {
                    let o = body
                        .entry(outer)
                        .or_insert_with(|| Json::Object(Map::new()));
                    if let Some(m) = o.as_object_mut() {
                        m.insert(inner.to_owned(), v);
                    }
                }
                None => {
                    body.insert(name.clone(), v);
                }
            },
        }
    }
    Some(body)
}

/// Whether a field's values come from the catalog (a stage, user, loss reason, source, or a
/// custom field's definition): a refusal of such a value may mean the catalog changed.
pub fn names_catalog(field: &str) -> bool {
    matches!(
        field,
        "stage_id" | "owner_id" | "loss_reason_id" | "source_id" | "unqualified_reason_id"
    ) || field.starts_with("custom_fields")
}

/// The Sell `type` of a custom field definition as the model's type (text-like types are text).
fn custom_type(t: &str) -> CustomFieldType {
    match t {
        "number" => CustomFieldType::Number,
        "bool" | "boolean" => CustomFieldType::Bool,
        "date" => CustomFieldType::Date,
        "datetime" | "date_time" => CustomFieldType::DateTime,
        "list" => CustomFieldType::List,
        "multi_select_list" => CustomFieldType::MultiSelectList,
        _ => CustomFieldType::Text,
    }
}

/// Everything the catalog import reads, as the API returned it.
#[derive(Debug, Clone, Default)]
pub struct CatalogPages {
    /// `/v2/pipelines`.
    pub pipelines: Vec<sellsync_api::Pipeline>,
    /// `/v2/stages`.
    pub stages: Vec<sellsync_api::Stage>,
    /// `/v2/users`.
    pub users: Vec<sellsync_api::User>,
    /// `/v2/loss_reasons`.
    pub loss_reasons: Vec<sellsync_api::LossReason>,
    /// `/v2/deal_sources`.
    pub sources: Vec<sellsync_api::DealSource>,
    /// `/v2/deal/custom_fields`.
    pub deal_fields: Vec<sellsync_api::CustomFieldDefinition>,
    /// `/v2/contact/custom_fields`.
    pub contact_fields: Vec<sellsync_api::CustomFieldDefinition>,
}

/// The catalog the pages describe (marked loaded).
pub fn catalog_of(p: &CatalogPages) -> Catalog {
    let defs = |list: &[sellsync_api::CustomFieldDefinition]| {
        list.iter()
            .map(|d| {
                (
                    d.name.clone(),
                    CustomFieldDef {
                        name: d.name.clone(),
                        ty: custom_type(&d.kind),
                        choices: d.choices.iter().flatten().map(|c| c.name.clone()).collect(),
                        required: false,
                    },
                )
            })
            .collect::<BTreeMap<_, _>>()
    };
    let mut custom_fields = BTreeMap::new();
    custom_fields.insert(RecordKind::Deal, defs(&p.deal_fields));
    custom_fields.insert(RecordKind::Contact, defs(&p.contact_fields));
    Catalog {
        loaded: true,
        pipelines: p
            .pipelines
            .iter()
            .map(|x| {
                (
                    x.id,
                    Pipeline {
                        id: x.id,
                        name: x.name.clone(),
                        disabled: x.disabled,
                    },
                )
            })
            .collect(),
        stages: p
            .stages
            .iter()
            .map(|x| {
                (
                    x.id,
                    Stage {
                        id: x.id,
                        name: x.name.clone(),
                        pipeline_id: x.pipeline_id,
                        category: x.category.clone(),
                        position: i64::from(x.position),
                    },
                )
            })
            .collect(),
        users: p
            .users
            .iter()
            .filter(|u| u.deleted_at.is_none())
            .map(|x| {
                (
                    x.id,
                    User {
                        id: x.id,
                        name: x.name.clone(),
                        role: x.role.clone(),
                    },
                )
            })
            .collect(),
        loss_reasons: p
            .loss_reasons
            .iter()
            .map(|x| {
                (
                    x.id,
                    Named {
                        id: x.id,
                        name: x.name.clone(),
                    },
                )
            })
            .collect(),
        sources: p
            .sources
            .iter()
            .map(|x| {
                (
                    x.id,
                    Named {
                        id: x.id,
                        name: x.name.clone(),
                    },
                )
            })
            .collect(),
        custom_fields,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Catalog {
        catalog_of(&CatalogPages {
            deal_fields: vec![
                sellsync_api::CustomFieldDefinition {
                    id: 1,
                    name: "Region".into(),
                    kind: "list".into(),
                    choices: Some(vec![sellsync_api::CustomFieldChoice {
                        id: 2,
                        name: "North".into(),
                    }]),
                    ..Default::default()
                },
                sellsync_api::CustomFieldDefinition {
                    id: 3,
                    name: "Seats".into(),
                    kind: "number".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        })
    }

    #[test]
    fn a_deal_maps_to_fields_and_back() {
        let deal = json!({
            "id": 12, "name": "Big", "value": "1500.50", "currency": "EUR", "stage_id": 3,
            "owner_id": 2, "hot": true, "contact_id": 40, "estimated_close_date": "2026-03-01",
            "tags": ["b", "a"], "custom_fields": {"Region": "North", "Seats": 12},
            "updated_at": "2026-01-01T00:00:00Z", "creator_id": 9
        });
        let (id, img) = record_image(RecordKind::Deal, &deal, &catalog()).unwrap();
        assert_eq!(id, 12);
        assert_eq!(
            img.get(&FieldKey::std("value")),
            Value::Money(Money::from_cents(150_050))
        );
        assert_eq!(
            img.get(&FieldKey::std("contact_id")),
            Value::Record(RecordRef::Crm(40))
        );
        assert_eq!(
            img.get(&FieldKey::custom("Region")),
            Value::Text("North".into())
        );
        assert_eq!(
            img.get(&FieldKey::custom("Seats")),
            Value::Number("12".into())
        );
        assert_eq!(img.tags.iter().cloned().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(img.get(&FieldKey::std("creator_id")), Value::Null);
        let fields: Vec<_> = img.fields.clone().into_iter().collect();
        let body = body_of(&fields).unwrap();
        assert_eq!(body["value"], json!("1500.50"));
        assert_eq!(body["contact_id"], json!(40));
        assert_eq!(body["estimated_close_date"], json!("2026-03-01"));
        assert_eq!(
            body["custom_fields"],
            json!({"Region": "North", "Seats": 12})
        );
        // Back through the mapping gives the same image.
        let mut again = Json::Object(body);
        again["id"] = json!(12);
        again["tags"] = json!(["a", "b"]);
        again["updated_at"] = json!("2026-01-01T00:00:00Z");
        assert_eq!(
            record_image(RecordKind::Deal, &again, &catalog())
                .unwrap()
                .1,
            img
        );
    }

    #[test]
    fn integer_values_and_address_parts_map() {
        let (_, img) = record_image(
            RecordKind::Deal,
            &json!({"id": 1, "value": 1000}),
            &catalog(),
        )
        .unwrap();
        assert_eq!(
            img.get(&FieldKey::std("value")),
            Value::Money(Money::from_cents(100_000))
        );
        let c = json!({"id": 2, "last_name": "Kim", "address": {"city": "Oslo", "line1": null}});
        let (_, img) = record_image(RecordKind::Contact, &c, &catalog()).unwrap();
        assert_eq!(
            img.get(&FieldKey::std("address.city")),
            Value::Text("Oslo".into())
        );
        let body = body_of(&[(FieldKey::std("address.city"), Value::Text("Rome".into()))]).unwrap();
        assert_eq!(Json::Object(body), json!({"address": {"city": "Rome"}}));
    }

    #[test]
    fn bad_payloads_are_typed_errors() {
        let c = catalog();
        assert!(record_image(RecordKind::Deal, &json!([]), &c).is_err());
        assert!(record_image(RecordKind::Deal, &json!({"name": "x"}), &c).is_err());
        assert!(matches!(
            record_image(RecordKind::Deal, &json!({"id": 1, "value": 1.234}), &c),
            Err(MapError::Field { .. })
        ));
        assert!(record_image(RecordKind::Deal, &json!({"id": 1, "stage_id": "x"}), &c).is_err());
        assert!(
            record_image(
                RecordKind::Deal,
                &json!({"id": 1, "estimated_close_date": "soon"}),
                &c
            )
            .is_err()
        );
    }

    #[test]
    fn a_local_reference_has_no_wire_form() {
        let local = Value::Record(RecordRef::Local("c-1".parse().unwrap()));
        assert_eq!(to_wire(&local), None);
        assert_eq!(body_of(&[(FieldKey::std("contact_id"), local)]), None);
    }

    #[test]
    fn activities_find_their_parent() {
        let n = json!({"id": 5, "content": "hi", "resource_type": "deal", "resource_id": 12});
        let (id, parent, img) = activity_image(ActivityKind::Note, &n).unwrap();
        assert_eq!((id, parent.unwrap().crm_id), (5, 12));
        assert_eq!(img.get(&FieldKey::std("content")), Value::Text("hi".into()));
        let call = json!({"id": 6, "resource_type": "contact", "resource_id": 3, "associated_deal_ids": [12], "duration": 30});
        let (_, parent, _) = activity_image(ActivityKind::Call, &call).unwrap();
        assert_eq!(parent.unwrap().kind, RecordKind::Deal);
        let floating = json!({"id": 7, "content": "x"});
        assert_eq!(
            activity_image(ActivityKind::Task, &floating).unwrap().1,
            None
        );
    }

    #[test]
    fn the_catalog_imports() {
        let c = catalog_of(&CatalogPages {
            stages: vec![sellsync_api::Stage {
                id: 3,
                name: "Won".into(),
                category: "won".into(),
                pipeline_id: 1,
                ..Default::default()
            }],
            ..Default::default()
        });
        assert!(c.loaded);
        assert_eq!(c.stages[&3].category, "won");
        assert!(c.custom_fields[&RecordKind::Deal].is_empty());
        assert_eq!(
            catalog()
                .custom_field(RecordKind::Deal, "Region")
                .unwrap()
                .choices,
            ["North"]
        );
    }
}
