//! The four v2 record kinds (deals, persons, organizations, activities): their fields, how a
//! POST or PATCH body is checked, and how an accepted body changes a record.
//!
//! Checking and applying are separate steps: [`check_body`] reads the account and the body and
//! either refuses with a 400 or returns the normalised changes; [`apply`] cannot fail. So a
//! refused request changes nothing.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::error::PdError;
use crate::state::{PdData, Row};
use crate::time;

/// A v2 record kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entity {
    Deal,
    Person,
    Organization,
    Activity,
}

/// Which table an id field points into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    User,
    Person,
    Org,
    Deal,
    Pipeline,
    Stage,
}

/// The type of a writable field.
#[derive(Debug, Clone, Copy)]
enum Ty {
    Str { max: usize, null: bool },
    Int { null: bool },
    Num { null: bool },
    Bool,
    Date,
    Time,
    Labels,
    VisibleTo,
    Status,
    Currency,
    Contacts,
    Participants,
    Address,
    Custom,
    Ref(Target),
    OptRef(Target),
    ActivityType,
}

const S255: Ty = Ty::Str {
    max: 255,
    null: false,
};
const OPT_S255: Ty = Ty::Str {
    max: 255,
    null: true,
};
const OPT_TEXT: Ty = Ty::Str {
    max: 100_000,
    null: true,
};

const DEAL_FIELDS: &[(&str, Ty)] = &[
    ("title", S255),
    ("owner_id", Ty::Ref(Target::User)),
    ("person_id", Ty::OptRef(Target::Person)),
    ("org_id", Ty::OptRef(Target::Org)),
    ("pipeline_id", Ty::Ref(Target::Pipeline)),
    ("stage_id", Ty::Ref(Target::Stage)),
    ("value", Ty::Num { null: false }),
    ("currency", Ty::Currency),
    ("status", Ty::Status),
    ("probability", Ty::Num { null: true }),
    ("lost_reason", OPT_S255),
    ("visible_to", Ty::VisibleTo),
    ("expected_close_date", Ty::Date),
    ("label_ids", Ty::Labels),
    ("is_archived", Ty::Bool),
    ("origin_id", OPT_S255),
    ("channel", Ty::Int { null: true }),
    ("channel_id", OPT_S255),
    ("custom_fields", Ty::Custom),
];

const PERSON_FIELDS: &[(&str, Ty)] = &[
    ("name", S255),
    ("first_name", OPT_S255),
    ("last_name", OPT_S255),
    ("owner_id", Ty::Ref(Target::User)),
    ("org_id", Ty::OptRef(Target::Org)),
    ("visible_to", Ty::VisibleTo),
    ("label_ids", Ty::Labels),
    ("emails", Ty::Contacts),
    ("phones", Ty::Contacts),
    ("custom_fields", Ty::Custom),
];

const ORG_FIELDS: &[(&str, Ty)] = &[
    ("name", S255),
    ("owner_id", Ty::Ref(Target::User)),
    ("visible_to", Ty::VisibleTo),
    ("label_ids", Ty::Labels),
    ("address", Ty::Address),
    ("custom_fields", Ty::Custom),
];

const ACTIVITY_FIELDS: &[(&str, Ty)] = &[
    ("subject", S255),
    ("type", Ty::ActivityType),
    ("owner_id", Ty::Ref(Target::User)),
    ("deal_id", Ty::OptRef(Target::Deal)),
    ("lead_id", OPT_S255),
    ("org_id", Ty::OptRef(Target::Org)),
    ("project_id", Ty::Int { null: true }),
    ("due_date", Ty::Date),
    ("due_time", Ty::Time),
    ("duration", Ty::Time),
    ("busy", Ty::Bool),
    ("done", Ty::Bool),
    ("location", Ty::Address),
    ("participants", Ty::Participants),
    ("public_description", OPT_TEXT),
    ("priority", Ty::Int { null: true }),
    ("note", OPT_TEXT),
];

const ADDRESS_PARTS: &[&str] = &[
    "value",
    "country",
    "admin_area_level_1",
    "admin_area_level_2",
    "locality",
    "sublocality",
    "route",
    "street_number",
    "subpremise",
    "postal_code",
    "formatted_address",
];

impl Entity {
    pub(crate) fn table(self, d: &PdData) -> &BTreeMap<u64, Row> {
        match self {
            Self::Deal => &d.deals,
            Self::Person => &d.persons,
            Self::Organization => &d.organizations,
            Self::Activity => &d.activities,
        }
    }

    pub(crate) fn table_mut(self, d: &mut PdData) -> &mut BTreeMap<u64, Row> {
        match self {
            Self::Deal => &mut d.deals,
            Self::Person => &mut d.persons,
            Self::Organization => &mut d.organizations,
            Self::Activity => &mut d.activities,
        }
    }

    /// The field definitions that hold this kind's custom fields and labels, if any.
    fn field_defs(self, d: &PdData) -> &[Row] {
        match self {
            Self::Deal => &d.deal_fields,
            Self::Person => &d.person_fields,
            Self::Organization | Self::Activity => &[],
        }
    }

    fn spec(self) -> &'static [(&'static str, Ty)] {
        match self {
            Self::Deal => DEAL_FIELDS,
            Self::Person => PERSON_FIELDS,
            Self::Organization => ORG_FIELDS,
            Self::Activity => ACTIVITY_FIELDS,
        }
    }

    /// `sort_by` values a list accepts.
    pub(crate) fn sort_fields(self) -> &'static [&'static str] {
        match self {
            Self::Activity => &["id", "update_time", "add_time", "due_date"],
            _ => &["id", "update_time", "add_time"],
        }
    }

    /// A fresh record with every field at its default.
    fn blank(self, id: u64, user: u64, now: &str, d: &PdData) -> Row {
        let mut custom = Row::new();
        for def in custom_defs(self.field_defs(d)) {
            if let Some(code) = def.get("field_code").and_then(Value::as_str) {
                custom.insert(code.to_owned(), Value::Null);
            }
        }
        let v = match self {
            Self::Deal => json!({
                "id": id, "title": "", "creator_user_id": user, "owner_id": user,
                "person_id": null, "org_id": null, "pipeline_id": null, "stage_id": null,
                "value": 0, "currency": default_currency(d, user),
                "add_time": now, "update_time": now, "stage_change_time": null,
                "is_deleted": false, "is_archived": false, "archive_time": null,
                "status": "open", "probability": null, "lost_reason": null, "visible_to": 3,
                "close_time": null, "won_time": null, "lost_time": null,
                "local_won_date": null, "local_lost_date": null, "local_close_date": null,
                "expected_close_date": null, "label_ids": [], "origin": "API",
                "origin_id": null, "channel": null, "channel_id": null,
                "acv": null, "arr": null, "mrr": null, "custom_fields": custom,
            }),
            Self::Person => json!({
                "id": id, "name": "", "first_name": null, "last_name": null,
                "owner_id": user, "org_id": null, "add_time": now, "update_time": now,
                "is_deleted": false, "visible_to": 3, "label_ids": [], "picture_id": null,
                "emails": [], "phones": [], "custom_fields": custom,
            }),
            Self::Organization => json!({
                "id": id, "name": "", "owner_id": user, "add_time": now, "update_time": now,
                "is_deleted": false, "visible_to": 3, "label_ids": [], "address": null,
                "custom_fields": custom,
            }),
            Self::Activity => json!({
                "id": id, "subject": "", "type": "call", "owner_id": user,
                "creator_user_id": user, "is_deleted": false, "add_time": now,
                "update_time": now, "deal_id": null, "lead_id": null, "person_id": null,
                "org_id": null, "project_id": null, "due_date": null, "due_time": null,
                "duration": null, "busy": false, "done": false, "marked_as_done_time": null,
                "location": null, "participants": [], "public_description": null,
                "priority": null, "note": null,
            }),
        };
        match v {
            Value::Object(m) => m,
            _ => Row::new(),
        }
    }
}

fn default_currency(d: &PdData, user: u64) -> Value {
    d.user(user)
        .and_then(|u| u.get("default_currency").cloned())
        .unwrap_or_else(|| json!("USD"))
}

fn custom_defs(defs: &[Row]) -> impl Iterator<Item = &Row> {
    defs.iter()
        .filter(|f| f.get("is_custom_field").and_then(Value::as_bool) == Some(true))
}

fn find_def<'a>(defs: &'a [Row], code: &str) -> Option<&'a Row> {
    defs.iter()
        .find(|f| f.get("field_code").and_then(Value::as_str) == Some(code))
}

fn option_ids(def: &Row) -> Vec<u64> {
    def.get("options")
        .and_then(Value::as_array)
        .map(|o| {
            o.iter()
                .filter_map(|o| o.get("id").and_then(Value::as_u64))
                .collect()
        })
        .unwrap_or_default()
}

fn bad(field: &str, msg: &str) -> PdError {
    PdError::bad_request(format!("Validation failed: {field}: {msg}"))
}

fn live(table: &BTreeMap<u64, Row>, id: u64) -> bool {
    table
        .get(&id)
        .is_some_and(|r| r.get("is_deleted").and_then(Value::as_bool) != Some(true))
}

fn has_id(rows: &[Row], id: u64) -> bool {
    rows.iter()
        .any(|r| r.get("id").and_then(Value::as_u64) == Some(id))
}

fn check_ref(t: Target, field: &str, v: &Value, d: &PdData) -> Result<Value, PdError> {
    let id = v
        .as_u64()
        .filter(|&i| i > 0)
        .ok_or_else(|| bad(field, "must be a positive integer"))?;
    let found = match t {
        Target::User => d.user(id).is_some(),
        Target::Person => live(&d.persons, id),
        Target::Org => live(&d.organizations, id),
        Target::Deal => live(&d.deals, id),
        Target::Pipeline => has_id(&d.pipelines, id),
        Target::Stage => has_id(&d.stages, id),
    };
    if !found {
        return Err(bad(field, &format!("no such item with id {id}")));
    }
    Ok(json!(id))
}

fn check_str(field: &str, v: &Value, max: usize, null: bool) -> Result<Value, PdError> {
    match v {
        Value::Null if null => Ok(Value::Null),
        Value::String(s) if s.chars().count() <= max => Ok(v.clone()),
        Value::String(_) => Err(bad(
            field,
            &format!("length must be less than or equal to {max} characters long"),
        )),
        _ => Err(bad(field, "must be a string")),
    }
}

fn check_address(field: &str, v: &Value) -> Result<Value, PdError> {
    let obj = match v {
        Value::Null => return Ok(Value::Null),
        Value::Object(o) => o,
        _ => return Err(bad(field, "must be an object or null")),
    };
    let mut out = Row::new();
    for part in ADDRESS_PARTS {
        out.insert((*part).to_owned(), Value::Null);
    }
    for (k, x) in obj {
        if !ADDRESS_PARTS.contains(&k.as_str()) {
            return Err(bad(field, &format!("unknown subfield {k}")));
        }
        out.insert(k.clone(), check_str(field, x, 255, true)?);
    }
    if !out.get("value").is_some_and(Value::is_string) {
        return Err(bad(field, "value is required"));
    }
    Ok(Value::Object(out))
}

fn check_contacts(field: &str, v: &Value) -> Result<Value, PdError> {
    let items = v.as_array().ok_or_else(|| bad(field, "must be an array"))?;
    let mut out = Vec::with_capacity(items.len());
    let mut primaries = 0;
    for item in items {
        let o = item
            .as_object()
            .ok_or_else(|| bad(field, "items must be objects"))?;
        let mut c = json!({"value": "", "primary": false, "label": "work"});
        for (k, x) in o {
            match (k.as_str(), x) {
                ("value", Value::String(_)) | ("label", Value::String(_)) => c[k] = x.clone(),
                ("primary", Value::Bool(b)) => {
                    primaries += usize::from(*b);
                    c[k] = x.clone();
                }
                ("value" | "label" | "primary", _) => {
                    return Err(bad(field, &format!("{k} has the wrong type")));
                }
                _ => return Err(bad(field, &format!("unknown property {k}"))),
            }
        }
        if !o.contains_key("value") {
            return Err(bad(field, "value is required"));
        }
        out.push(c);
    }
    if primaries > 1 {
        return Err(bad(field, "only one item can be primary"));
    }
    if primaries == 0
        && let Some(first) = out.first_mut()
    {
        first["primary"] = json!(true);
    }
    Ok(Value::Array(out))
}

fn check_participants(v: &Value, d: &PdData) -> Result<Value, PdError> {
    let field = "participants";
    let items = v.as_array().ok_or_else(|| bad(field, "must be an array"))?;
    let mut out = Vec::with_capacity(items.len());
    let mut primaries = 0;
    for item in items {
        let o = item
            .as_object()
            .ok_or_else(|| bad(field, "items must be objects"))?;
        let mut p = json!({"person_id": null, "primary": false});
        for (k, x) in o {
            match k.as_str() {
                "person_id" => p[k] = check_ref(Target::Person, "participants.person_id", x, d)?,
                "primary" => {
                    let b = x
                        .as_bool()
                        .ok_or_else(|| bad(field, "primary must be a boolean"))?;
                    primaries += usize::from(b);
                    p[k] = json!(b);
                }
                _ => return Err(bad(field, &format!("unknown property {k}"))),
            }
        }
        if p["person_id"].is_null() {
            return Err(bad(field, "person_id is required"));
        }
        out.push(p);
    }
    if primaries > 1 {
        return Err(bad(field, "only one participant can be primary"));
    }
    if primaries == 0
        && let Some(first) = out.first_mut()
    {
        first["primary"] = json!(true);
    }
    Ok(Value::Array(out))
}

fn check_custom_value(code: &str, def: &Row, v: &Value, d: &PdData) -> Result<Value, PdError> {
    let field = format!("custom_fields.{code}");
    if v.is_null() {
        return Ok(Value::Null);
    }
    let ty = def.get("field_type").and_then(Value::as_str).unwrap_or("");
    match ty {
        "varchar" | "varchar_auto" | "phone" => check_str(&field, v, 255, false),
        "text" => check_str(&field, v, 65_535, false),
        "double" | "int" => v
            .as_f64()
            .filter(|f| f.is_finite())
            .map(|_| v.clone())
            .ok_or_else(|| bad(&field, "must be a number")),
        "monetary" => {
            let ok = v.as_object().is_some_and(|o| {
                o.keys().all(|k| k == "value" || k == "currency")
                    && o.get("value").and_then(Value::as_f64).is_some()
                    && o.get("currency")
                        .is_none_or(|c| c.is_string() || c.is_null())
            });
            if ok {
                Ok(v.clone())
            } else {
                Err(bad(
                    &field,
                    "must be {\"value\": number, \"currency\": string}",
                ))
            }
        }
        "enum" => {
            let id = v
                .as_u64()
                .ok_or_else(|| bad(&field, "must be an option id (integer)"))?;
            if option_ids(def).contains(&id) {
                Ok(json!(id))
            } else {
                Err(bad(&field, &format!("{id} is not an option of this field")))
            }
        }
        "set" => {
            let ids = v
                .as_array()
                .ok_or_else(|| bad(&field, "must be an array of option ids"))?;
            if ids.is_empty() {
                return Err(bad(&field, "must not be empty; send null to clear"));
            }
            let known = option_ids(def);
            for id in ids {
                match id.as_u64() {
                    Some(i) if known.contains(&i) => {}
                    _ => return Err(bad(&field, &format!("{id} is not an option of this field"))),
                }
            }
            Ok(v.clone())
        }
        "date" => match v.as_str() {
            Some(s) if time::is_date(s) => Ok(v.clone()),
            _ => Err(bad(&field, "must be a date YYYY-MM-DD")),
        },
        "user" => check_ref(Target::User, &field, v, d),
        "org" => check_ref(Target::Org, &field, v, d),
        "people" => check_ref(Target::Person, &field, v, d),
        "deal" => check_ref(Target::Deal, &field, v, d),
        _ => Ok(v.clone()),
    }
}

fn check_field(
    ent: Entity,
    name: &str,
    ty: Ty,
    v: &Value,
    d: &PdData,
    existing: Option<&Row>,
) -> Result<Value, PdError> {
    match ty {
        Ty::Str { max, null } => check_str(name, v, max, null),
        Ty::Int { null } => match v {
            Value::Null if null => Ok(Value::Null),
            _ => v
                .as_i64()
                .map(|i| json!(i))
                .ok_or_else(|| bad(name, "must be an integer")),
        },
        Ty::Num { null } => match v {
            Value::Null if null => Ok(Value::Null),
            Value::Number(n) if n.as_f64().is_some_and(f64::is_finite) => Ok(v.clone()),
            _ => Err(bad(name, "must be a number")),
        },
        Ty::Bool => v
            .as_bool()
            .map(Value::Bool)
            .ok_or_else(|| bad(name, "must be true or false")),
        Ty::Date => match v {
            Value::Null => Ok(Value::Null),
            Value::String(s) if time::is_date(s) => Ok(v.clone()),
            _ => Err(bad(name, "must be a date YYYY-MM-DD or null")),
        },
        Ty::Time => match v {
            Value::Null => Ok(Value::Null),
            Value::String(s) if time::is_time(s) => Ok(v.clone()),
            _ => Err(bad(name, "must be a time HH:MM or HH:MM:SS, or null")),
        },
        Ty::Labels => {
            let ids = v
                .as_array()
                .ok_or_else(|| bad(name, "must be an array of integers"))?;
            let known = find_def(ent.field_defs(d), "label").map(option_ids);
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                let i = id
                    .as_u64()
                    .ok_or_else(|| bad(name, "must be an array of integers"))?;
                if known.as_ref().is_some_and(|k| !k.contains(&i)) {
                    return Err(bad(name, &format!("{i} is not a label option")));
                }
                out.push(json!(i));
            }
            Ok(Value::Array(out))
        }
        Ty::VisibleTo => match v.as_u64() {
            Some(i @ (1 | 3 | 5 | 7)) => Ok(json!(i)),
            _ => Err(bad(name, "must be one of 1, 3, 5, 7")),
        },
        Ty::Status => match v.as_str() {
            Some("open" | "won" | "lost") => Ok(v.clone()),
            _ => Err(bad(name, "must be one of open, won, lost")),
        },
        Ty::Currency => match v.as_str() {
            Some(s) if s.len() == 3 && s.bytes().all(|b| b.is_ascii_uppercase()) => Ok(v.clone()),
            _ => Err(bad(name, "must be a 3-letter currency code")),
        },
        Ty::Contacts => check_contacts(name, v),
        Ty::Participants => check_participants(v, d),
        Ty::Address => check_address(name, v),
        Ty::Ref(t) => check_ref(t, name, v, d),
        Ty::OptRef(t) => match v {
            Value::Null => Ok(Value::Null),
            _ => check_ref(t, name, v, d),
        },
        Ty::ActivityType => {
            let known = d.activity_types.iter().any(|t| {
                t.get("key_string") == Some(v) && t.get("active_flag") != Some(&json!(false))
            });
            if known {
                Ok(v.clone())
            } else {
                Err(bad(
                    name,
                    "must be the key_string of an active activity type",
                ))
            }
        }
        Ty::Custom => {
            let obj = v
                .as_object()
                .ok_or_else(|| bad(name, "must be an object"))?;
            let defs = ent.field_defs(d);
            // A PATCH merges key by key into the stored values.
            let mut out = existing
                .and_then(|r| r.get("custom_fields"))
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            for (code, x) in obj {
                let def = find_def(defs, code)
                    .filter(|f| f.get("is_custom_field").and_then(Value::as_bool) == Some(true))
                    .ok_or_else(|| bad(&format!("custom_fields.{code}"), "unknown custom field"))?;
                out.insert(code.clone(), check_custom_value(code, def, x, d)?);
            }
            Ok(Value::Object(out))
        }
    }
}

/// Checks a POST (`existing` None) or PATCH body; returns the normalised changes.
pub(crate) fn check_body(
    ent: Entity,
    body: &Value,
    d: &PdData,
    existing: Option<&Row>,
) -> Result<Row, PdError> {
    let obj = body
        .as_object()
        .ok_or_else(|| PdError::bad_request("Request body must be a JSON object"))?;
    let spec = ent.spec();
    let mut changes = Row::new();
    for (k, v) in obj {
        let Some(&(_, ty)) = spec.iter().find(|(n, _)| n == k) else {
            return Err(bad(k, "is not allowed (unknown or read-only field)"));
        };
        changes.insert(k.clone(), check_field(ent, k, ty, v, d, existing)?);
    }
    let creating = existing.is_none();
    fn merged(changes: &Row, existing: Option<&Row>, k: &str) -> Value {
        changes
            .get(k)
            .or_else(|| existing.and_then(|r| r.get(k)))
            .cloned()
            .unwrap_or(Value::Null)
    }
    match ent {
        Entity::Deal => {
            if creating && !changes.contains_key("title") {
                return Err(bad("title", "is required"));
            }
            if merged(&changes, existing, "title")
                .as_str()
                .is_some_and(|t| t.trim().is_empty())
            {
                return Err(bad("title", "must not be empty"));
            }
            resolve_stage(d, &mut changes, existing)?;
            let status = merged(&changes, existing, "status");
            let lost = status.as_str() == Some("lost");
            if !lost && changes.get("lost_reason").is_some_and(|r| !r.is_null()) {
                return Err(bad("lost_reason", "can be set only when status is lost"));
            }
            if let Some(p) = changes.get("probability").and_then(Value::as_f64)
                && !(0.0..=100.0).contains(&p)
            {
                return Err(bad("probability", "must be between 0 and 100"));
            }
        }
        Entity::Person => {
            let name_given = changes.get("name").is_some();
            let first = changes.get("first_name").and_then(Value::as_str);
            let last = changes.get("last_name").and_then(Value::as_str);
            if creating && !name_given && (first.is_none() || last.is_none()) {
                return Err(bad(
                    "name",
                    "Name must be given (or both first_name and last_name)",
                ));
            }
            if name_given
                && merged(&changes, existing, "name")
                    .as_str()
                    .is_some_and(|t| t.trim().is_empty())
            {
                return Err(bad("name", "must not be empty"));
            }
        }
        Entity::Organization => {
            if creating && !changes.contains_key("name") {
                return Err(bad("name", "is required"));
            }
            if merged(&changes, existing, "name")
                .as_str()
                .is_some_and(|t| t.trim().is_empty())
            {
                return Err(bad("name", "must not be empty"));
            }
        }
        Entity::Activity => {}
    }
    Ok(changes)
}

fn stage_pipeline(d: &PdData, stage: u64) -> Option<u64> {
    d.stages
        .iter()
        .find(|s| s.get("id").and_then(Value::as_u64) == Some(stage))
        .and_then(|s| s.get("pipeline_id").and_then(Value::as_u64))
}

fn first_stage(d: &PdData, pipeline: u64) -> Option<u64> {
    d.stages
        .iter()
        .filter(|s| s.get("pipeline_id").and_then(Value::as_u64) == Some(pipeline))
        .min_by_key(|s| s.get("order_nr").and_then(Value::as_i64).unwrap_or(0))
        .and_then(|s| s.get("id").and_then(Value::as_u64))
}

/// Keeps `pipeline_id` and `stage_id` consistent: a stage implies its pipeline, a pipeline
/// alone implies its first stage, and a new deal with neither lands in the first pipeline.
fn resolve_stage(d: &PdData, changes: &mut Row, existing: Option<&Row>) -> Result<(), PdError> {
    let stage = changes.get("stage_id").and_then(Value::as_u64);
    let pipeline = changes.get("pipeline_id").and_then(Value::as_u64);
    match (stage, pipeline) {
        (Some(s), p) => {
            let sp = stage_pipeline(d, s).ok_or_else(|| bad("stage_id", "unknown stage"))?;
            if p.is_some_and(|p| p != sp) {
                return Err(bad(
                    "stage_id",
                    "stage does not belong to the given pipeline",
                ));
            }
            changes.insert("pipeline_id".into(), json!(sp));
        }
        (None, Some(p)) => {
            let unchanged = existing
                .and_then(|r| r.get("pipeline_id"))
                .and_then(Value::as_u64)
                == Some(p);
            if !unchanged {
                let s = first_stage(d, p)
                    .ok_or_else(|| bad("pipeline_id", "pipeline has no stages"))?;
                changes.insert("stage_id".into(), json!(s));
            }
        }
        (None, None) if existing.is_none() => {
            let p = d
                .pipelines
                .iter()
                .min_by_key(|p| p.get("order_nr").and_then(Value::as_i64).unwrap_or(0))
                .and_then(|p| p.get("id").and_then(Value::as_u64))
                .ok_or_else(|| bad("pipeline_id", "the account has no pipeline"))?;
            let s =
                first_stage(d, p).ok_or_else(|| bad("pipeline_id", "pipeline has no stages"))?;
            changes.insert("pipeline_id".into(), json!(p));
            changes.insert("stage_id".into(), json!(s));
        }
        (None, None) => {}
    }
    Ok(())
}

/// A new record from checked changes.
pub(crate) fn create(ent: Entity, id: u64, user: u64, changes: Row, d: &PdData, now: &str) -> Row {
    let mut rec = ent.blank(id, user, now, d);
    if ent == Entity::Activity && !changes.contains_key("subject") {
        let ty = changes
            .get("type")
            .cloned()
            .unwrap_or_else(|| json!("call"));
        let name = d
            .activity_types
            .iter()
            .find(|t| t.get("key_string") == Some(&ty))
            .and_then(|t| t.get("name").cloned())
            .unwrap_or_else(|| json!("Call"));
        rec.insert("subject".into(), name);
    }
    if ent == Entity::Deal {
        rec.insert("stage_change_time".into(), json!(now));
    }
    apply(ent, &mut rec, changes, now, true);
    rec
}

/// Applies checked changes and the fields derived from them; bumps `update_time`.
pub(crate) fn apply(ent: Entity, rec: &mut Row, changes: Row, now: &str, creating: bool) {
    let before = rec.clone();
    let name_given = changes.contains_key("name");
    let parts_given = changes.contains_key("first_name") || changes.contains_key("last_name");
    for (k, v) in changes {
        rec.insert(k, v);
    }
    rec.insert("update_time".into(), json!(now));
    match ent {
        Entity::Deal => {
            if !creating && before.get("stage_id") != rec.get("stage_id") {
                rec.insert("stage_change_time".into(), json!(now));
            }
            let status = rec
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or("open")
                .to_owned();
            if creating || before.get("status") != rec.get("status") {
                let today = json!(&now[..10]);
                let (won, lost, close) = match status.as_str() {
                    "won" => (json!(now), Value::Null, json!(now)),
                    "lost" => (Value::Null, json!(now), json!(now)),
                    _ => (Value::Null, Value::Null, Value::Null),
                };
                let is = |s: &str| {
                    if status == s {
                        today.clone()
                    } else {
                        Value::Null
                    }
                };
                rec.insert("local_won_date".into(), is("won"));
                rec.insert("local_lost_date".into(), is("lost"));
                rec.insert(
                    "local_close_date".into(),
                    if close.is_null() {
                        Value::Null
                    } else {
                        today.clone()
                    },
                );
                rec.insert("won_time".into(), won);
                rec.insert("lost_time".into(), lost);
                rec.insert("close_time".into(), close);
                if status != "lost" {
                    rec.insert("lost_reason".into(), Value::Null);
                }
            }
            if before.get("is_archived") != rec.get("is_archived") {
                let archived = rec.get("is_archived") == Some(&json!(true));
                let t = if archived {
                    json!(format!("{} {}", &now[..10], &now[11..19]))
                } else {
                    Value::Null
                };
                rec.insert("archive_time".into(), t);
            }
        }
        Entity::Person => {
            let s = |k: &str| rec.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
            if name_given && !parts_given {
                let name = s("name");
                let (first, last) = match name.trim().split_once(' ') {
                    Some((f, l)) => (json!(f), json!(l.trim())),
                    None => (json!(name.trim()), Value::Null),
                };
                rec.insert("first_name".into(), first);
                rec.insert("last_name".into(), last);
            } else if parts_given && !name_given {
                let name = format!("{} {}", s("first_name"), s("last_name"));
                rec.insert("name".into(), json!(name.trim()));
            }
        }
        Entity::Activity => {
            let primary = rec
                .get("participants")
                .and_then(Value::as_array)
                .and_then(|ps| ps.iter().find(|p| p["primary"] == json!(true)))
                .map(|p| p["person_id"].clone())
                .unwrap_or(Value::Null);
            rec.insert("person_id".into(), primary);
            if before.get("done") != rec.get("done") || creating {
                let t = if rec.get("done") == Some(&json!(true)) {
                    json!(now)
                } else {
                    Value::Null
                };
                rec.insert("marked_as_done_time".into(), t);
            }
        }
        Entity::Organization => {}
    }
}
