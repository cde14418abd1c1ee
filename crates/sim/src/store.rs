//! The simulated account: tables of records as JSON objects, plus what the Sync API remembers.
//! Pure: time and the acting user are arguments; no locking and no I/O here.
//!
//! Invariants: every row holds every attribute of its kind (null when unset), `version` starts
//! at 1 and grows by one on every write, and a deleted row leaves a tombstone whose revision is
//! one past the row's last version, so the Sync API can deliver the deletion.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use sellsync_api::{ErrorDetail, Money};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::field_error;
use crate::schema::{Access, CURRENCIES, Field, Kind, MAX_STR_CHARS, MAX_TEXT_CHARS, Ref, Ty};

/// A JSON object.
pub type Map = serde_json::Map<String, Value>;

/// One stored record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// Revision: 1 on create, +1 per write. Sent as `meta.version` and as the sync revision.
    pub version: u64,
    /// The attributes as served.
    pub data: Map,
}

/// The whole simulated account. This is what the admin route dumps and seeds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SimData {
    /// `/v2/accounts/self`.
    pub account: Map,
    /// Bearer token to user id.
    pub tokens: BTreeMap<String, u64>,
    /// Records per kind, by id.
    pub tables: BTreeMap<Kind, BTreeMap<u64, Row>>,
    /// Deleted records per kind: id to the revision of the deletion.
    pub tombstones: BTreeMap<Kind, BTreeMap<u64, u64>>,
    /// Custom field definitions per resource type (`deal`, `contact`, `lead`, ...).
    pub custom_field_definitions: BTreeMap<String, Vec<Map>>,
    /// Associated contacts per deal id.
    pub associated_contacts: BTreeMap<u64, Vec<Map>>,
    /// Sync API: per device UUID, per object (`Deal-12`), the highest acknowledged revision.
    pub acks: BTreeMap<String, BTreeMap<String, u64>>,
    /// Next id to hand out; ids are unique across kinds.
    pub next_id: u64,
}

/// Second-precision UTC timestamp as the API writes it.
pub(crate) fn ts(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn parse_ts(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// `updated_at` for a write at `now`: strictly after the previous one, so that it moves on
/// every write even when two writes fall in the same second.
fn next_updated_at(prev: Option<&Value>, now: DateTime<Utc>) -> String {
    let prev = prev.and_then(Value::as_str).and_then(parse_ts);
    match prev {
        Some(p) if p >= now - chrono::Duration::milliseconds(999) => ts(p
            .checked_add_signed(chrono::Duration::seconds(1))
            .unwrap_or(p)),
        _ => ts(now),
    }
}

fn as_id(v: Option<&Value>) -> Option<u64> {
    v.and_then(Value::as_u64)
}

impl SimData {
    /// A record.
    pub fn row(&self, kind: Kind, id: u64) -> Option<&Row> {
        self.tables.get(&kind).and_then(|t| t.get(&id))
    }

    /// All records of a kind, by id.
    pub fn rows(&self, kind: Kind) -> impl Iterator<Item = &Row> {
        self.tables.get(&kind).into_iter().flat_map(|t| t.values())
    }

    pub(crate) fn exists(&self, kind: Kind, id: u64) -> bool {
        self.row(kind, id).is_some()
    }

    pub(crate) fn alloc_id(&mut self) -> u64 {
        self.next_id = self.next_id.max(1);
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn user_attr<'a>(&'a self, id: u64, attr: &str) -> Option<&'a Value> {
        self.row(Kind::User, id).and_then(|r| r.data.get(attr))
    }

    /// True when the user is an admin.
    pub(crate) fn is_admin(&self, user: u64) -> bool {
        self.user_attr(user, "role").and_then(Value::as_str) == Some("admin")
    }

    /// The visibility rule: an admin may change anything; any other user may change a record
    /// whose owning user is themself or shares their non-empty `team_name`.
    pub(crate) fn may_act_for(&self, actor: u64, owner: Option<u64>) -> bool {
        if self.is_admin(actor) {
            return true;
        }
        let Some(owner) = owner else { return false };
        if owner == actor {
            return true;
        }
        let team = |u| {
            self.user_attr(u, "team_name")
                .and_then(Value::as_str)
                .unwrap_or("")
        };
        !team(actor).is_empty() && team(actor) == team(owner)
    }

    /// Whether `actor` may change (update or delete) this record, and, for notes, tasks and
    /// calls, whether it may change the record they are attached to.
    pub(crate) fn may_change(&self, actor: u64, kind: Kind, data: &Map) -> bool {
        if !self.may_act_for(actor, as_id(data.get(kind.owner_field()))) {
            return false;
        }
        self.may_change_parent(actor, data)
    }

    fn may_change_parent(&self, actor: u64, data: &Map) -> bool {
        let parent = data
            .get("resource_type")
            .and_then(Value::as_str)
            .and_then(Kind::from_resource_type);
        match (parent, as_id(data.get("resource_id"))) {
            (Some(pk), Some(pid)) => match self.row(pk, pid) {
                Some(p) => self.may_act_for(actor, as_id(p.data.get(pk.owner_field()))),
                None => true,
            },
            _ => true,
        }
    }

    /// Custom field definitions of a resource type.
    pub(crate) fn definitions(&self, resource_type: &str) -> &[Map] {
        self.custom_field_definitions
            .get(resource_type)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Validates a create (`existing` = None) or partial update body and returns the full new
    /// attribute set (server-set attributes not yet refreshed). Never changes anything.
    pub(crate) fn prepare(
        &self,
        kind: Kind,
        body: &Map,
        existing: Option<&Map>,
        actor: u64,
    ) -> Result<Map, Vec<ErrorDetail>> {
        let resource = kind.type_name();
        let mut errors = Vec::new();
        let mut merged = match existing {
            Some(e) => e.clone(),
            None => self.defaults(kind, actor),
        };
        for (key, value) in body {
            let Some(field) = kind.field(key) else {
                errors.push(field_error(
                    resource,
                    &format!("/data/{key}"),
                    "unknown",
                    format!("`{key}` is not an attribute of a {resource}."),
                ));
                continue;
            };
            match field.access {
                Access::ReadOnly => continue,
                Access::CreateOnly if existing.is_some() => continue,
                _ => {}
            }
            match self.check(kind, field, value) {
                Ok(v) if field.ty == Ty::CustomFields => {
                    merge_custom_fields(&mut merged, v);
                }
                Ok(v) => {
                    merged.insert(key.clone(), v);
                }
                Err(mut e) => errors.append(&mut e),
            }
        }
        self.check_record(kind, body, &merged, existing, &mut errors);
        if errors.is_empty() {
            Ok(merged)
        } else {
            Err(errors)
        }
    }

    /// Type check and normalise one attribute. `Err` holds field errors.
    fn check(&self, kind: Kind, field: &Field, v: &Value) -> Result<Value, Vec<ErrorDetail>> {
        let resource = kind.type_name();
        let pointer = format!("/data/{}", field.name);
        let invalid = |what: &str| {
            vec![field_error(
                resource,
                &pointer,
                "invalid_type",
                format!("`{}` must be {what}.", field.name),
            )]
        };
        let incorrect = |why: String| vec![field_error(resource, &pointer, "incorrect_value", why)];
        let nullable = !matches!(
            field.ty,
            Ty::Bool | Ty::Money | Ty::Tags | Ty::CustomFields | Ty::IdList
        );
        if v.is_null() {
            return if nullable {
                Ok(Value::Null)
            } else {
                Err(invalid("not null"))
            };
        }
        let out = match field.ty {
            Ty::Id | Ty::Count => v
                .as_u64()
                .map(Value::from)
                .ok_or_else(|| invalid("a non-negative integer"))?,
            Ty::Percent => match v.as_u64() {
                Some(p) if p <= 100 => Value::from(p),
                Some(p) => return Err(incorrect(format!("{p} is not between 0 and 100."))),
                None => return Err(invalid("an integer")),
            },
            Ty::Str | Ty::Text => {
                let max = if field.ty == Ty::Text {
                    MAX_TEXT_CHARS
                } else {
                    MAX_STR_CHARS
                };
                match v.as_str() {
                    Some(s) if s.chars().count() > max => {
                        return Err(incorrect(format!(
                            "`{}` is too long ({} characters; at most {max}).",
                            field.name,
                            s.chars().count()
                        )));
                    }
                    Some(s) => Value::from(s),
                    None => return Err(invalid("a string")),
                }
            }
            Ty::Bool => v
                .as_bool()
                .map(Value::from)
                .ok_or_else(|| invalid("a boolean"))?,
            Ty::Date => match v.as_str() {
                Some(s) if NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok() => Value::from(s),
                Some(s) => return Err(incorrect(format!("`{s}` is not a date (YYYY-MM-DD)."))),
                None => return Err(invalid("a date string")),
            },
            Ty::DateTime => match v.as_str().map(|s| (s, parse_ts(s))) {
                Some((_, Some(t))) => Value::from(ts(t)),
                Some((s, None)) => {
                    return Err(incorrect(format!("`{s}` is not an ISO-8601 date-time.")));
                }
                None => return Err(invalid("a date-time string")),
            },
            Ty::Money => match serde_json::from_value::<Money>(v.clone()) {
                Ok(m) if m.cents < 0 => {
                    return Err(incorrect("value must not be negative.".into()));
                }
                Ok(m) => serde_json::to_value(m).unwrap_or(Value::Null),
                Err(_) if v.is_string() => {
                    return Err(incorrect(format!(
                        "{v} is not an amount with at most two decimals."
                    )));
                }
                Err(_) => return Err(invalid("an integer or a decimal string")),
            },
            Ty::Currency => match v.as_str() {
                Some(c) if CURRENCIES.contains(&c) => Value::from(c),
                Some(c) => {
                    return Err(incorrect(format!(
                        "`{c}` is not a supported ISO-4217 currency."
                    )));
                }
                None => return Err(invalid("a currency code")),
            },
            Ty::Enum(allowed) => match v.as_str() {
                Some(s) if allowed.contains(&s) => Value::from(s),
                Some(s) => {
                    return Err(incorrect(format!(
                        "`{s}` is not one of {}.",
                        allowed.join(", ")
                    )));
                }
                None => return Err(invalid("a string")),
            },
            Ty::Tags => {
                let Some(items) = v.as_array() else {
                    return Err(invalid("an array of strings"));
                };
                let mut tags: Vec<Value> = Vec::new();
                for t in items {
                    match t.as_str().map(str::trim) {
                        Some("") => return Err(incorrect("a tag must not be blank.".into())),
                        Some(s) if !tags.iter().any(|x| x.as_str() == Some(s)) => {
                            tags.push(s.into())
                        }
                        Some(_) => {}
                        None => return Err(invalid("an array of strings")),
                    }
                }
                Value::Array(tags)
            }
            Ty::IdList => {
                let Some(items) = v.as_array() else {
                    return Err(invalid("an array of ids"));
                };
                let ids: Option<Vec<Value>> =
                    items.iter().map(|i| i.as_u64().map(Value::from)).collect();
                Value::Array(ids.ok_or_else(|| invalid("an array of ids"))?)
            }
            Ty::Address => {
                let Some(obj) = v.as_object() else {
                    return Err(invalid("an object"));
                };
                let mut out = Map::new();
                for (k, x) in obj {
                    if !ADDRESS_KEYS.contains(&k.as_str()) {
                        return Err(vec![field_error(
                            resource,
                            &format!("{pointer}/{k}"),
                            "unknown",
                            format!("`{k}` is not an attribute of an address."),
                        )]);
                    }
                    if !(x.is_string() || x.is_null()) {
                        return Err(vec![field_error(
                            resource,
                            &format!("{pointer}/{k}"),
                            "invalid_type",
                            format!("`{k}` must be a string."),
                        )]);
                    }
                    out.insert(k.clone(), x.clone());
                }
                Value::Object(out)
            }
            Ty::CustomFields => {
                let Some(obj) = v.as_object() else {
                    return Err(invalid("an object"));
                };
                let rt = kind.custom_field_type().unwrap_or("");
                let mut errors = Vec::new();
                let mut out = Map::new();
                for (name, x) in obj {
                    match self.check_custom_field(rt, name, x) {
                        Ok(val) => {
                            out.insert(name.clone(), val);
                        }
                        Err((code, why)) => errors.push(field_error(
                            resource,
                            &format!("{pointer}/{name}"),
                            code,
                            why,
                        )),
                    }
                }
                if !errors.is_empty() {
                    return Err(errors);
                }
                Value::Object(out)
            }
        };
        if let (Some(r), false) = (field.refs, out.is_null()) {
            self.check_ref(r, &out).map_err(incorrect)?;
        }
        Ok(out)
    }

    fn check_ref(&self, r: Ref, v: &Value) -> Result<(), String> {
        let one = |kind: Kind, id: u64| {
            if self.exists(kind, id) {
                Ok(())
            } else {
                Err(format!("{} {id} does not exist.", kind.type_name()))
            }
        };
        match (r, v) {
            (Ref::Deals, Value::Array(ids)) => ids
                .iter()
                .filter_map(Value::as_u64)
                .try_for_each(|id| one(Kind::Deal, id)),
            (Ref::Stage, v) => {
                let id = v.as_u64().unwrap_or(0);
                let stage = self
                    .row(Kind::Stage, id)
                    .ok_or(format!("stage {id} does not exist."))?;
                let pipeline =
                    as_id(stage.data.get("pipeline_id")).and_then(|p| self.row(Kind::Pipeline, p));
                match pipeline {
                    Some(p) if p.data.get("disabled") == Some(&Value::Bool(true)) => {
                        Err(format!("stage {id} belongs to a disabled pipeline."))
                    }
                    _ => Ok(()),
                }
            }
            (r, v) => {
                let kind = match r {
                    Ref::User => Kind::User,
                    Ref::Contact => Kind::Contact,
                    Ref::LossReason => Kind::LossReason,
                    Ref::DealSource => Kind::DealSource,
                    Ref::Stage | Ref::Deals => Kind::Deal,
                };
                one(kind, v.as_u64().unwrap_or(0))
            }
        }
    }

    /// One custom field value against its definition. `null` clears the key.
    fn check_custom_field(
        &self,
        rt: &str,
        name: &str,
        v: &Value,
    ) -> Result<Value, (&'static str, String)> {
        let Some(def) = self
            .definitions(rt)
            .iter()
            .find(|d| d.get("name").and_then(Value::as_str) == Some(name))
        else {
            return Err((
                "unknown",
                format!("`{name}` is not a custom field of a {rt}."),
            ));
        };
        if v.is_null() {
            return Ok(Value::Null);
        }
        let ty = def.get("type").and_then(Value::as_str).unwrap_or("string");
        let choices: Vec<&str> = def
            .get("choices")
            .and_then(Value::as_array)
            .map(|c| {
                c.iter()
                    .filter_map(|x| x.get("name").and_then(Value::as_str))
                    .collect()
            })
            .unwrap_or_default();
        let bad_type = |what: &str| {
            (
                "invalid_type",
                format!("custom field `{name}` must be {what}."),
            )
        };
        match ty {
            "number" => match v {
                Value::Number(n) => Ok(Value::from(n.to_string())),
                Value::String(s) if s.parse::<f64>().map(f64::is_finite).unwrap_or(false) => {
                    Ok(v.clone())
                }
                _ => Err(bad_type("a number or a numeric string")),
            },
            "bool" => v
                .as_bool()
                .map(Value::from)
                .ok_or_else(|| bad_type("a boolean")),
            "list" => match v.as_str() {
                Some(s) if choices.contains(&s) => Ok(v.clone()),
                Some(s) => Err((
                    "incorrect_value",
                    format!("`{s}` is not a choice of `{name}`."),
                )),
                None => Err(bad_type("a choice name")),
            },
            "multi_select_list" => match v.as_array() {
                Some(a)
                    if a.iter()
                        .all(|x| x.as_str().is_some_and(|s| choices.contains(&s))) =>
                {
                    Ok(v.clone())
                }
                Some(_) => Err((
                    "incorrect_value",
                    format!("values of `{name}` must be its choices."),
                )),
                None => Err(bad_type("an array of choice names")),
            },
            _ => v
                .as_str()
                .map(Value::from)
                .ok_or_else(|| bad_type("a string")),
        }
    }

    /// Rules on the merged record: required attributes, attachment target, uniqueness.
    fn check_record(
        &self,
        kind: Kind,
        body: &Map,
        merged: &Map,
        existing: Option<&Map>,
        errors: &mut Vec<ErrorDetail>,
    ) {
        let resource = kind.type_name();
        for name in required(kind, merged) {
            let blank = match merged.get(*name) {
                None | Some(Value::Null) => true,
                Some(Value::String(s)) => s.trim().is_empty(),
                Some(_) => false,
            };
            if blank {
                let code = if existing.is_none() && !body.contains_key(*name) {
                    "missing"
                } else {
                    "blank"
                };
                errors.push(field_error(
                    resource,
                    &format!("/data/{name}"),
                    code,
                    format!("`{name}` is required."),
                ));
            }
        }
        if matches!(kind, Kind::Note | Kind::Task | Kind::Call) {
            let rt = merged.get("resource_type").and_then(Value::as_str);
            let rid = as_id(merged.get("resource_id"));
            match (rt, rid) {
                (Some(rt), Some(rid)) => {
                    let found = Kind::from_resource_type(rt).is_some_and(|k| self.exists(k, rid));
                    if !found {
                        errors.push(field_error(
                            resource,
                            "/data/resource_id",
                            "incorrect_value",
                            format!("{rt} {rid} does not exist."),
                        ));
                    }
                }
                (None, Some(_)) => errors.push(field_error(
                    resource,
                    "/data/resource_type",
                    "missing",
                    "`resource_type` is required with `resource_id`.".into(),
                )),
                (Some(_), None) => errors.push(field_error(
                    resource,
                    "/data/resource_id",
                    "missing",
                    "`resource_id` is required with `resource_type`.".into(),
                )),
                (None, None) => {}
            }
        }
        if kind == Kind::LossReason {
            let name = merged.get("name").and_then(Value::as_str).unwrap_or("");
            let own = as_id(merged.get("id"));
            let taken = self.rows(kind).any(|r| {
                r.data.get("name").and_then(Value::as_str) == Some(name)
                    && as_id(r.data.get("id")) != own
            });
            if taken {
                errors.push(field_error(
                    resource,
                    "/data/name",
                    "already_exists",
                    format!("a loss reason named `{name}` already exists."),
                ));
            }
        }
    }

    /// A fresh record with every attribute present and the documented defaults.
    pub(crate) fn defaults(&self, kind: Kind, actor: u64) -> Map {
        let mut m: Map = kind
            .fields()
            .iter()
            .map(|f| (f.name.to_owned(), Value::Null))
            .collect();
        let mut set = |k: &str, v: Value| {
            m.insert(k.to_owned(), v);
        };
        match kind {
            Kind::Deal => {
                set("owner_id", actor.into());
                set("value", 0.into());
                set(
                    "currency",
                    self.account
                        .get("currency")
                        .cloned()
                        .unwrap_or_else(|| "USD".into()),
                );
                set("hot", false.into());
                set(
                    "stage_id",
                    self.first_stage().map_or(Value::Null, Value::from),
                );
                set("tags", json!([]));
                set("custom_fields", json!({}));
            }
            Kind::Contact => {
                set("owner_id", actor.into());
                set("is_organization", false.into());
                set("customer_status", "none".into());
                set("prospect_status", "none".into());
                set(
                    "address",
                    json!({"line1": null, "city": null, "postal_code": null, "state": null, "country": null}),
                );
                set("tags", json!([]));
                set("custom_fields", json!({}));
            }
            Kind::Task => {
                set("owner_id", actor.into());
                set("completed", false.into());
                set("overdue", false.into());
            }
            Kind::Call => {
                set("user_id", actor.into());
                set("incoming", false.into());
                set("missed", false.into());
                set("associated_deal_ids", json!([]));
            }
            Kind::Note => {
                set("is_important", false.into());
            }
            Kind::DealSource => set("resource_type", "deal".into()),
            _ => {}
        }
        // The creator of a new record is the caller, known before the checks: a note's
        // visibility (its owner field) is its creator.
        if kind.field("creator_id").is_some() {
            m.insert("creator_id".to_owned(), actor.into());
        }
        m
    }

    /// The first active stage of the first enabled pipeline (lowest position).
    fn first_stage(&self) -> Option<u64> {
        let enabled = |p: u64| {
            self.row(Kind::Pipeline, p)
                .is_some_and(|r| r.data.get("disabled") != Some(&Value::Bool(true)))
        };
        self.rows(Kind::Stage)
            .filter(|r| r.data.get("active") == Some(&Value::Bool(true)))
            .filter(|r| as_id(r.data.get("pipeline_id")).is_some_and(enabled))
            .min_by_key(|r| {
                (
                    as_id(r.data.get("pipeline_id")),
                    as_id(r.data.get("position")),
                    as_id(r.data.get("id")),
                )
            })
            .and_then(|r| as_id(r.data.get("id")))
    }

    /// Stores a prepared record: creates it when `id` is None, else replaces it. Sets the
    /// server-side attributes (id, creator, timestamps, stage change, derived fields), creates
    /// unknown tags, and returns the stored row.
    pub(crate) fn store(
        &mut self,
        kind: Kind,
        id: Option<u64>,
        mut data: Map,
        actor: u64,
        now: DateTime<Utc>,
    ) -> Row {
        let previous = id.and_then(|id| self.row(kind, id)).cloned();
        let id = match id {
            Some(id) => id,
            None => self.alloc_id(),
        };
        let prev = previous.as_ref().map(|r| &r.data);
        data.insert("id".into(), id.into());
        if kind.field("creator_id").is_some() && prev.is_none() {
            data.insert("creator_id".into(), actor.into());
        }
        let stamp = ts(now);
        if prev.is_none() {
            data.insert("created_at".into(), stamp.clone().into());
        }
        data.insert(
            "updated_at".into(),
            next_updated_at(prev.and_then(|p| p.get("updated_at")), now).into(),
        );
        match kind {
            Kind::Deal => {
                let stage_changed = prev.map(|p| p.get("stage_id")) != Some(data.get("stage_id"));
                let prev_lsc = prev
                    .and_then(|p| p.get("last_stage_change_at"))
                    .filter(|v| !v.is_null());
                let new_lsc = data.get("last_stage_change_at").filter(|v| !v.is_null());
                let explicit = new_lsc.is_some() && new_lsc != prev_lsc;
                if stage_changed && !data.get("stage_id").is_none_or(Value::is_null) {
                    if !explicit {
                        data.insert("last_stage_change_at".into(), stamp.clone().into());
                    }
                    data.insert("last_stage_change_by_id".into(), actor.into());
                }
                let org = as_id(data.get("contact_id"))
                    .and_then(|c| self.row(Kind::Contact, c))
                    .and_then(|c| {
                        if c.data.get("is_organization") == Some(&Value::Bool(true)) {
                            as_id(c.data.get("id"))
                        } else {
                            as_id(c.data.get("contact_id"))
                        }
                    });
                data.insert(
                    "organization_id".into(),
                    org.map_or(Value::Null, Value::from),
                );
                if prev.is_none() && data.get("added_at").is_none_or(Value::is_null) {
                    data.insert("added_at".into(), stamp.clone().into());
                }
            }
            Kind::Task => {
                let done = data.get("completed") == Some(&Value::Bool(true));
                let was_done = prev.and_then(|p| p.get("completed")) == Some(&Value::Bool(true));
                if done && !was_done {
                    data.insert("completed_at".into(), stamp.clone().into());
                } else if !done {
                    data.insert("completed_at".into(), Value::Null);
                }
                let due = data
                    .get("due_date")
                    .and_then(Value::as_str)
                    .and_then(parse_ts);
                data.insert(
                    "overdue".into(),
                    (!done && due.is_some_and(|d| d < now)).into(),
                );
            }
            _ => {}
        }
        if let Some(Value::Array(tags)) = data.get("tags").cloned() {
            for t in tags.iter().filter_map(Value::as_str) {
                self.ensure_tag(t, kind.type_name(), actor, now);
            }
        }
        let row = Row {
            version: previous.map_or(1, |r| r.version + 1),
            data,
        };
        self.tables.entry(kind).or_default().insert(id, row.clone());
        if let Some(t) = self.tombstones.get_mut(&kind) {
            t.remove(&id);
        }
        row
    }

    fn ensure_tag(&mut self, name: &str, resource_type: &str, actor: u64, now: DateTime<Utc>) {
        let exists = self.rows(Kind::Tag).any(|r| {
            r.data.get("name").and_then(Value::as_str) == Some(name)
                && r.data.get("resource_type").and_then(Value::as_str) == Some(resource_type)
        });
        if !exists {
            let mut m = self.defaults(Kind::Tag, actor);
            m.insert("name".into(), name.into());
            m.insert("resource_type".into(), resource_type.into());
            self.store(Kind::Tag, None, m, actor, now);
        }
    }

    /// Deletes a record and what hangs off it (a deal's or contact's notes and tasks, a deal's
    /// associated contacts), leaving tombstones. Returns false when it did not exist.
    pub(crate) fn delete(&mut self, kind: Kind, id: u64) -> bool {
        let Some(row) = self.tables.get_mut(&kind).and_then(|t| t.remove(&id)) else {
            return false;
        };
        self.tombstones
            .entry(kind)
            .or_default()
            .insert(id, row.version + 1);
        if kind == Kind::Deal {
            self.associated_contacts.remove(&id);
        }
        if let Some(rt) = kind.custom_field_type() {
            for child in [Kind::Note, Kind::Task] {
                let ids: Vec<u64> = self
                    .rows(child)
                    .filter(|r| {
                        r.data.get("resource_type").and_then(Value::as_str) == Some(rt)
                            && as_id(r.data.get("resource_id")) == Some(id)
                    })
                    .filter_map(|r| as_id(r.data.get("id")))
                    .collect();
                for c in ids {
                    self.delete(child, c);
                }
            }
        }
        true
    }
}

const ADDRESS_KEYS: &[&str] = &["line1", "city", "postal_code", "state", "country"];

/// Attributes that must be present and non-blank after a write.
fn required(kind: Kind, merged: &Map) -> &'static [&'static str] {
    match kind {
        Kind::Deal | Kind::LossReason | Kind::DealSource => &["name"],
        Kind::Contact if merged.get("is_organization") == Some(&Value::Bool(true)) => &["name"],
        Kind::Contact => &["last_name"],
        Kind::Note => &["content", "resource_type", "resource_id"],
        Kind::Task => &["content"],
        Kind::Tag => &["name", "resource_type"],
        _ => &[],
    }
}

/// Per-key merge: keys sent replace their value, `null` removes the key, others stay.
fn merge_custom_fields(merged: &mut Map, patch: Value) {
    let mut current = match merged.remove("custom_fields") {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    if let Value::Object(p) = patch {
        for (k, v) in p {
            if v.is_null() {
                current.remove(&k);
            } else {
                current.insert(k, v);
            }
        }
    }
    merged.insert("custom_fields".into(), Value::Object(current));
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::{Map, SimData};
    use crate::schema::Kind;

    const KINDS: [Kind; 8] = [
        Kind::Deal,
        Kind::Contact,
        Kind::Note,
        Kind::Task,
        Kind::Call,
        Kind::LossReason,
        Kind::DealSource,
        Kind::Tag,
    ];

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            (0u64..200).prop_map(Value::from),
            any::<f64>()
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            prop::sample::select(vec![
                "",
                " ",
                "x",
                "12.5",
                "12.345",
                "-1",
                "USD",
                "DOGE",
                "deal",
                "contact",
                "lead",
                "2026-02-30",
                "2026-02-03",
                "2026-01-05T10:00:00Z",
                "+262143-12-31T23:59:59Z",
                "North",
                "Mars",
                "1e400",
                "NaN",
            ])
            .prop_map(Value::from),
            "\\PC{0,12}".prop_map(Value::from),
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        leaf().prop_recursive(2, 12, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop::sample::select(vec![
                        "Region",
                        "Seats",
                        "Referral code",
                        "city",
                        "line1",
                        "zip",
                        "x"
                    ]),
                    inner,
                    0..4
                )
                .prop_map(|m| Value::Object(
                    m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
                )),
            ]
        })
    }

    fn body(kind: Kind) -> impl Strategy<Value = Map> {
        let mut names: Vec<&'static str> = kind.fields().iter().map(|f| f.name).collect();
        names.extend(["bogus", "meta"]);
        prop::collection::btree_map(prop::sample::select(names), value(), 0..6)
            .prop_map(|m| m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    }

    /// The stored record must read back as the wire DTO the bridge uses.
    fn reads_as_dto(kind: Kind, data: &Map) -> Result<(), serde_json::Error> {
        let v = Value::Object(data.clone());
        match kind {
            Kind::Deal => serde_json::from_value::<sellsync_api::Deal>(v).map(drop),
            Kind::Contact => serde_json::from_value::<sellsync_api::Contact>(v).map(drop),
            Kind::Note => serde_json::from_value::<sellsync_api::Note>(v).map(drop),
            Kind::Task => serde_json::from_value::<sellsync_api::Task>(v).map(drop),
            Kind::Call => serde_json::from_value::<sellsync_api::Call>(v).map(drop),
            Kind::LossReason => serde_json::from_value::<sellsync_api::LossReason>(v).map(drop),
            Kind::DealSource => serde_json::from_value::<sellsync_api::DealSource>(v).map(drop),
            _ => serde_json::from_value::<sellsync_api::Tag>(v).map(drop),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any body either is refused with 422-style field errors and nothing changes, or is
        /// stored as a record that reads back as the wire DTO.
        #[test]
        fn any_body_is_refused_cleanly_or_stored_faithfully(k in 0..KINDS.len(), update in any::<bool>(), seed in 0..KINDS.len(), b in body(Kind::Deal), c in body(Kind::Contact), n in body(Kind::Note)) {
            let kind = KINDS[k];
            let body = match kind { Kind::Deal => b, Kind::Contact => c, _ => n };
            let mut data = crate::demo::demo_data();
            let before = data.clone();
            let existing = if update {
                data.rows(kind).nth(seed).map(|r| (r.data.get("id").and_then(Value::as_u64), r.data.clone()))
            } else {
                None
            };
            let (id, existing) = match existing { Some((id, e)) => (id, Some(e)), None => (None, None) };
            match data.prepare(kind, &body, existing.as_ref(), 2) {
                Ok(merged) => {
                    let row = data.store(kind, id, merged, 2, chrono::Utc::now());
                    prop_assert!(reads_as_dto(kind, &row.data).is_ok(), "{:?} {}", kind, Value::Object(row.data.clone()));
                    if kind == Kind::Deal {
                        prop_assert!(!row.data["value"].is_null());
                    }
                }
                Err(errors) => {
                    prop_assert!(!errors.is_empty());
                    for e in &errors {
                        prop_assert!(e.field.as_deref().is_some_and(|f| f.starts_with("/data/")));
                    }
                    prop_assert_eq!(&data, &before);
                }
            }
        }
    }

    #[test]
    fn demo_records_pass_their_own_validation() {
        let data: SimData = crate::demo::demo_data();
        for kind in KINDS {
            for row in data.rows(kind) {
                let ok = data.prepare(kind, &Map::new(), Some(&row.data), 2);
                assert!(ok.is_ok(), "{kind:?} {}", json!(row.data));
            }
        }
    }
}
