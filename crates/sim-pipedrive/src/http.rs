//! The HTTP surface: `/api/v2` records, pipelines, stages and field definitions; `/api/v1`
//! (also served under `/v1`) notes, users, activity types and webhooks; and the layer every
//! answer passes through (token auth, rate limit and its headers).

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use serde_json::{Value, json};

use crate::entity::{self, Entity};
use crate::error::{PdError, json_response};
use crate::paging::{self, Pairs, Sort, int_param, limit_param, param, parse_pairs};
use crate::state::{PdData, PdSim, Row, TokenInfo};
use crate::time;

type ApiResult = Result<Response, PdError>;

fn ok(data: Value) -> Response {
    json_response(StatusCode::OK, &json!({"success": true, "data": data}))
}

fn ok_list(data: Vec<Value>, next_cursor: Option<String>) -> Response {
    json_response(
        StatusCode::OK,
        &json!({"success": true, "data": data, "additional_data": {"next_cursor": next_cursor}}),
    )
}

fn parse_id(raw: &str) -> Result<u64, PdError> {
    raw.parse::<u64>()
        .ok()
        .filter(|&i| i > 0)
        .ok_or_else(|| PdError::bad_request("Validation failed: id: must be a positive integer"))
}

/// Reads a JSON body within the size limit.
async fn read_json(sim: &PdSim, body: Body) -> Result<Value, PdError> {
    let limit = sim.config().max_body_bytes;
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| PdError::too_large(limit))?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(PdError::bad_request("Request body must be a JSON object"));
    }
    serde_json::from_slice(&bytes).map_err(|e| PdError::bad_request(format!("Invalid JSON: {e}")))
}

/// Reads a v1 body: JSON, or form-encoded (every value then a string).
async fn read_v1(sim: &PdSim, headers: &HeaderMap, body: Body) -> Result<Value, PdError> {
    let form = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !form {
        return read_json(sim, body).await;
    }
    let limit = sim.config().max_body_bytes;
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| PdError::too_large(limit))?;
    let map: Row = form_urlencoded::parse(&bytes)
        .into_owned()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    Ok(Value::Object(map))
}

// ---------------------------------------------------------------------------------------------
// Auth and rate limit

fn token_of(req: &Request) -> Option<String> {
    let headers = req.headers();
    if let Some(t) = headers.get("x-api-token").and_then(|v| v.to_str().ok()) {
        return Some(t.to_owned());
    }
    if let Some(t) = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return Some(t.trim().to_owned());
    }
    let q = parse_pairs(req.uri().query());
    param(&q, "api_token").map(str::to_owned)
}

/// The `x-token-cost` of an operation (section 6.2 of `pipedrive-api.md`).
pub(crate) fn cost(method: &Method, path: &str) -> u64 {
    let (v2, rest) = if let Some(r) = path.strip_prefix("/api/v2/") {
        (true, r)
    } else if let Some(r) = path
        .strip_prefix("/api/v1/")
        .or_else(|| path.strip_prefix("/v1/"))
    {
        (false, r)
    } else {
        return 1;
    };
    let parts: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    let one = parts.len() > 1;
    if v2 {
        return match *method {
            Method::GET if one => 1,
            Method::GET if matches!(parts[0], "pipelines" | "stages") => 5,
            Method::GET => 10,
            Method::POST | Method::PATCH => 5,
            Method::DELETE => 3,
            _ => 1,
        };
    }
    match (parts[0], method.clone(), one) {
        ("notes", Method::GET, false) => 20,
        ("notes", Method::GET, true) => 2,
        ("notes", Method::POST | Method::PUT, _) => 10,
        ("notes", Method::DELETE, _) => 6,
        ("users", Method::GET, false) => 20,
        ("users", Method::GET, true) => 2,
        ("activityTypes", Method::GET, _) => 20,
        ("webhooks", Method::GET | Method::POST, _) => 10,
        ("webhooks", Method::DELETE, _) => 6,
        _ => 1,
    }
}

fn set_header(h: &mut HeaderMap, name: &'static str, v: u64) {
    if let Ok(v) = HeaderValue::from_str(&v.to_string()) {
        h.insert(HeaderName::from_static(name), v);
    }
}

async fn gate(State(sim): State<PdSim>, mut req: Request, next: Next) -> Response {
    let Some(info) = token_of(&req).and_then(|t| sim.token_info(&t)) else {
        let mut res = PdError::unauthorized().into_response();
        res.headers_mut()
            .insert("x-401-by-gw", HeaderValue::from_static("true"));
        return res;
    };
    let cost = cost(req.method(), req.uri().path());
    let decision = sim.charge(&info.token, cost);
    let mut res = match decision.refused {
        Some(daily) => PdError::rate_limited(daily).into_response(),
        None => {
            req.extensions_mut().insert(info);
            next.run(req).await
        }
    };
    let h = res.headers_mut();
    if let Some((limit, remaining, reset)) = decision.burst {
        set_header(h, "x-ratelimit-limit", limit);
        set_header(h, "x-ratelimit-remaining", remaining);
        set_header(h, "x-ratelimit-reset", reset);
    }
    if let Some((limit, remaining)) = decision.daily {
        set_header(h, "x-daily-ratelimit-token-limit", limit);
        set_header(h, "x-daily-ratelimit-token-remaining", remaining);
    }
    res
}

// ---------------------------------------------------------------------------------------------
// v2 records

fn rfc3339_param(q: &Pairs, name: &str) -> Result<Option<String>, PdError> {
    match param(q, name) {
        None | Some("") => Ok(None),
        Some(v) => time::parse_rfc3339(v)
            .map(|t| Some(time::v2(t)))
            .ok_or_else(|| {
                PdError::bad_request(format!(
                    "Validation failed: {name}: must be an RFC 3339 date-time"
                ))
            }),
    }
}

fn ids_param(q: &Pairs) -> Result<Option<Vec<u64>>, PdError> {
    let Some(raw) = param(q, "ids").filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let ids: Option<Vec<u64>> = raw.split(',').map(|s| s.trim().parse().ok()).collect();
    match ids {
        Some(ids) if ids.len() <= 100 => Ok(Some(ids)),
        Some(_) => Err(PdError::bad_request(
            "Validation failed: ids: at most 100 ids",
        )),
        None => Err(PdError::bad_request(
            "Validation failed: ids: comma-separated integers",
        )),
    }
}

fn u64_of(r: &Row, k: &str) -> Option<u64> {
    r.get(k).and_then(Value::as_u64)
}

fn is_deleted(r: &Row) -> bool {
    r.get("is_deleted").and_then(Value::as_bool) == Some(true)
}

async fn list(ent: Entity, sim: PdSim, raw: Option<String>) -> ApiResult {
    let q = parse_pairs(raw.as_deref());
    let limit = limit_param(&q)?;
    let sort = Sort::parse(&q, ent.sort_fields())?;
    let since = rfc3339_param(&q, "updated_since")?;
    let until = rfc3339_param(&q, "updated_until")?;
    let ids = ids_param(&q)?;
    let mut eq: Vec<(&str, u64)> = Vec::new();
    let links: &[&str] = match ent {
        Entity::Deal => &["owner_id", "person_id", "org_id", "pipeline_id", "stage_id"],
        Entity::Person => &["owner_id", "org_id"],
        Entity::Organization => &["owner_id"],
        Entity::Activity => &["owner_id", "deal_id", "person_id", "org_id"],
    };
    for name in links {
        if let Some(v) = int_param(&q, name)? {
            eq.push((name, v));
        }
    }
    let done = match (ent, param(&q, "done")) {
        (Entity::Activity, Some("true")) => Some(true),
        (Entity::Activity, Some("false")) => Some(false),
        (Entity::Activity, Some(_)) => {
            return Err(PdError::bad_request(
                "Validation failed: done: must be true or false",
            ));
        }
        _ => None,
    };
    // Deal `status`: comma-separated open, won, lost, deleted; omitted = every live deal.
    let statuses: Option<Vec<&str>> = match (ent, param(&q, "status")) {
        (Entity::Deal, Some(s)) if !s.is_empty() => {
            let v: Vec<&str> = s.split(',').map(str::trim).collect();
            if v.iter()
                .any(|s| !matches!(*s, "open" | "won" | "lost" | "deleted"))
            {
                return Err(PdError::bad_request(
                    "Validation failed: status: must be open, won, lost or deleted",
                ));
            }
            Some(v)
        }
        _ => None,
    };
    let data = sim.data();
    let rows: Vec<&Row> = ent
        .table(&data)
        .values()
        .filter(|r| match &statuses {
            None => !is_deleted(r),
            Some(st) => {
                if is_deleted(r) {
                    st.contains(&"deleted")
                } else {
                    r.get("status")
                        .and_then(Value::as_str)
                        .is_some_and(|s| st.contains(&s))
                }
            }
        })
        // Archived deals live only at /deals/archived (not served).
        .filter(|r| r.get("is_archived").and_then(Value::as_bool) != Some(true))
        .filter(|r| eq.iter().all(|(k, v)| u64_of(r, k) == Some(*v)))
        .filter(|r| done.is_none_or(|d| r.get("done").and_then(Value::as_bool) == Some(d)))
        .filter(|r| {
            ids.as_ref()
                .is_none_or(|ids| u64_of(r, "id").is_some_and(|i| ids.contains(&i)))
        })
        .filter(|r| {
            let t = r.get("update_time").and_then(Value::as_str).unwrap_or("");
            since.as_deref().is_none_or(|s| t >= s) && until.as_deref().is_none_or(|u| t < u)
        })
        .collect();
    let (page, next) = paging::cursor_page(rows, &sort, param(&q, "cursor"), limit)?;
    Ok(ok_list(page, next))
}

async fn get_one(ent: Entity, sim: PdSim, id: String) -> ApiResult {
    let id = parse_id(&id)?;
    let data = sim.data();
    let rec = ent.table(&data).get(&id).ok_or_else(PdError::not_found)?;
    Ok(ok(Value::Object(rec.clone())))
}

async fn create(ent: Entity, sim: PdSim, actor: TokenInfo, body: Body) -> ApiResult {
    let body = read_json(&sim, body).await?;
    let mut data = sim.data();
    let changes = entity::check_body(ent, &body, &data, None)?;
    let id = ent.table(&data).keys().next_back().map_or(1, |k| k + 1);
    let rec = entity::create(ent, id, actor.user_id, changes, &data, &time::now_v2());
    ent.table_mut(&mut data).insert(id, rec.clone());
    Ok(ok(Value::Object(rec)))
}

fn editable(ent: Entity, data: &PdData, id: u64) -> Result<Row, PdError> {
    ent.table(data)
        .get(&id)
        .filter(|r| !is_deleted(r))
        .cloned()
        .ok_or_else(PdError::not_found)
}

async fn patch(ent: Entity, sim: PdSim, id: String, body: Body) -> ApiResult {
    let id = parse_id(&id)?;
    let body = read_json(&sim, body).await?;
    let mut data = sim.data();
    let mut rec = editable(ent, &data, id)?;
    let changes = entity::check_body(ent, &body, &data, Some(&rec))?;
    entity::apply(ent, &mut rec, changes, &time::now_v2(), false);
    ent.table_mut(&mut data).insert(id, rec.clone());
    Ok(ok(Value::Object(rec)))
}

async fn remove(ent: Entity, sim: PdSim, id: String) -> ApiResult {
    let id = parse_id(&id)?;
    let mut data = sim.data();
    let mut rec = editable(ent, &data, id)?;
    rec.insert("is_deleted".into(), json!(true));
    rec.insert("update_time".into(), json!(time::now_v2()));
    ent.table_mut(&mut data).insert(id, rec);
    Ok(ok(json!({"id": id})))
}

fn entity_routes(mut r: Router<PdSim>, seg: &str, ent: Entity) -> Router<PdSim> {
    r = r.route(
        &format!("/api/v2/{seg}"),
        get(move |State(s): State<PdSim>, RawQuery(q): RawQuery| list(ent, s, q)).post(
            move |State(s): State<PdSim>,
                  axum::Extension(a): axum::Extension<TokenInfo>,
                  b: Body| { create(ent, s, a, b) },
        ),
    );
    r.route(
        &format!("/api/v2/{seg}/{{id}}"),
        get(move |State(s): State<PdSim>, Path(id): Path<String>| get_one(ent, s, id))
            .patch(
                move |State(s): State<PdSim>, Path(id): Path<String>, b: Body| patch(ent, s, id, b),
            )
            .delete(move |State(s): State<PdSim>, Path(id): Path<String>| remove(ent, s, id)),
    )
}

// ---------------------------------------------------------------------------------------------
// v2 pipelines, stages, field definitions

async fn pipelines(State(sim): State<PdSim>, RawQuery(raw): RawQuery) -> ApiResult {
    let q = parse_pairs(raw.as_deref());
    let limit = limit_param(&q)?;
    let sort = Sort::parse(&q, &["id", "update_time", "add_time"])?;
    let data = sim.data();
    let rows = data.pipelines.iter().filter(|r| !is_deleted(r)).collect();
    let (page, next) = paging::cursor_page(rows, &sort, param(&q, "cursor"), limit)?;
    Ok(ok_list(page, next))
}

async fn stages(State(sim): State<PdSim>, RawQuery(raw): RawQuery) -> ApiResult {
    let q = parse_pairs(raw.as_deref());
    let limit = limit_param(&q)?;
    let sort = Sort::parse(&q, &["id", "update_time", "add_time", "order_nr"])?;
    let pipeline = int_param(&q, "pipeline_id")?;
    let data = sim.data();
    let rows = data
        .stages
        .iter()
        .filter(|r| !is_deleted(r))
        .filter(|r| pipeline.is_none_or(|p| u64_of(r, "pipeline_id") == Some(p)))
        .collect();
    let (page, next) = paging::cursor_page(rows, &sort, param(&q, "cursor"), limit)?;
    Ok(ok_list(page, next))
}

fn by_id(rows: &[Row], id: &str) -> ApiResult {
    let id = parse_id(id)?;
    rows.iter()
        .find(|r| u64_of(r, "id") == Some(id))
        .map(|r| ok(Value::Object(r.clone())))
        .ok_or_else(PdError::not_found)
}

async fn pipeline(State(sim): State<PdSim>, Path(id): Path<String>) -> ApiResult {
    by_id(&sim.data().pipelines, &id)
}

async fn stage(State(sim): State<PdSim>, Path(id): Path<String>) -> ApiResult {
    by_id(&sim.data().stages, &id)
}

fn fields_of(data: &PdData, person: bool) -> &[Row] {
    if person {
        &data.person_fields
    } else {
        &data.deal_fields
    }
}

async fn fields(person: bool, sim: PdSim, raw: Option<String>) -> ApiResult {
    let q = parse_pairs(raw.as_deref());
    let limit = limit_param(&q)?;
    let data = sim.data();
    let (page, next) =
        paging::offset_cursor_page(fields_of(&data, person), param(&q, "cursor"), limit)?;
    Ok(ok_list(page, next))
}

async fn field(person: bool, sim: PdSim, code: String) -> ApiResult {
    let data = sim.data();
    fields_of(&data, person)
        .iter()
        .find(|f| f.get("field_code").and_then(Value::as_str) == Some(code.as_str()))
        .map(|f| ok(Value::Object(f.clone())))
        .ok_or_else(PdError::not_found)
}

// ---------------------------------------------------------------------------------------------
// v1 notes

/// A v1 integer: a number or a numeric string; null (or "") clears.
fn v1_int(field: &str, v: &Value) -> Result<Option<u64>, PdError> {
    let bad = || PdError::bad_request(format!("Invalid value for {field}: must be an integer"));
    match v {
        Value::Null => Ok(None),
        Value::String(s) if s.is_empty() => Ok(None),
        Value::String(s) => s.parse().map(Some).map_err(|_| bad()),
        Value::Number(_) => v.as_u64().map(Some).ok_or_else(bad),
        _ => Err(bad()),
    }
}

/// A v1 flag: true/false or 0/1 (numbers or strings).
fn v1_flag(field: &str, v: &Value) -> Result<bool, PdError> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::Number(n) if n.as_u64() == Some(0) => Ok(false),
        Value::Number(n) if n.as_u64() == Some(1) => Ok(true),
        Value::String(s) if s == "0" || s == "false" => Ok(false),
        Value::String(s) if s == "1" || s == "true" => Ok(true),
        _ => Err(PdError::bad_request(format!(
            "Invalid value for {field}: must be 0 or 1"
        ))),
    }
}

const NOTE_FLAGS: &[&str] = &[
    "pinned_to_deal_flag",
    "pinned_to_person_flag",
    "pinned_to_organization_flag",
    "pinned_to_lead_flag",
    "pinned_to_project_flag",
];

/// Checks a note body and returns the changes. v1 ignores fields it does not know.
fn check_note(
    body: &Value,
    data: &PdData,
    actor: &TokenInfo,
    existing: Option<&Row>,
) -> Result<Row, PdError> {
    let obj = body
        .as_object()
        .ok_or_else(|| PdError::bad_request("Request body must be a JSON object"))?;
    let mut ch = Row::new();
    if let Some(c) = obj.get("content") {
        let s = c
            .as_str()
            .ok_or_else(|| PdError::bad_request("Invalid value for content: must be a string"))?;
        if s.trim().is_empty() {
            return Err(PdError::bad_request("Note content can not be empty"));
        }
        if s.chars().count() > 100_000 {
            return Err(PdError::bad_request(
                "Note content is longer than 100000 characters",
            ));
        }
        ch.insert("content".into(), json!(s));
    } else if existing.is_none() {
        return Err(PdError::bad_request("Note content can not be empty"));
    }
    for (field, table) in [
        ("deal_id", &data.deals),
        ("person_id", &data.persons),
        ("org_id", &data.organizations),
    ] {
        if let Some(v) = obj.get(field) {
            let id = v1_int(field, v)?;
            if let Some(id) = id
                && table.get(&id).is_none_or(is_deleted)
            {
                return Err(PdError::bad_request(format!(
                    "Invalid {field}: no such item {id}"
                )));
            }
            ch.insert(field.into(), json!(id));
        }
    }
    if let Some(v) = obj.get("lead_id") {
        match v {
            Value::Null | Value::String(_) => ch.insert("lead_id".into(), v.clone()),
            _ => {
                return Err(PdError::bad_request(
                    "Invalid value for lead_id: must be a UUID string",
                ));
            }
        };
    }
    if let Some(v) = obj.get("user_id") {
        let id = v1_int("user_id", v)?
            .ok_or_else(|| PdError::bad_request("Invalid value for user_id: must be an integer"))?;
        let current = existing
            .and_then(|r| u64_of(r, "user_id"))
            .unwrap_or(actor.user_id);
        if id != current && !actor.is_admin {
            return Err(PdError::forbidden(
                "Only admins can change the author of a note",
            ));
        }
        if data.user(id).is_none() {
            return Err(PdError::bad_request(format!(
                "Invalid user_id: no such user {id}"
            )));
        }
        ch.insert("user_id".into(), json!(id));
    }
    for flag in NOTE_FLAGS {
        if let Some(v) = obj.get(*flag) {
            ch.insert((*flag).into(), json!(v1_flag(flag, v)?));
        }
    }
    let linked = ["deal_id", "person_id", "org_id", "lead_id"]
        .iter()
        .any(|k| {
            ch.get(*k)
                .or_else(|| existing.and_then(|r| r.get(*k)))
                .is_some_and(|v| !v.is_null())
        });
    if !linked {
        return Err(PdError::bad_request(
            "Note must be associated with at least one organization, person, deal, lead or project.",
        ));
    }
    Ok(ch)
}

/// A note as v1 answers it, with the related-object stubs.
fn note_view(data: &PdData, note: &Row, me: u64) -> Value {
    let mut v = note.clone();
    let stub = |table: &std::collections::BTreeMap<u64, Row>, key: &str, field: &str| -> Value {
        u64_of(note, key).and_then(|id| table.get(&id)).map_or(
            Value::Null,
            |r| json!({field: r.get(field).cloned().unwrap_or(Value::Null)}),
        )
    };
    v.insert("deal".into(), stub(&data.deals, "deal_id", "title"));
    v.insert("person".into(), stub(&data.persons, "person_id", "name"));
    v.insert(
        "organization".into(),
        stub(&data.organizations, "org_id", "name"),
    );
    let user = u64_of(note, "user_id")
        .and_then(|id| data.user(id))
        .map_or(Value::Null, |u| {
            json!({
                "email": u.get("email"), "name": u.get("name"), "icon_url": u.get("icon_url"),
                "is_you": u64_of(u, "id") == Some(me),
            })
        });
    v.insert("user".into(), user);
    Value::Object(v)
}

async fn notes(
    State(sim): State<PdSim>,
    axum::Extension(me): axum::Extension<TokenInfo>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let q = parse_pairs(raw.as_deref());
    let start = int_param(&q, "start")?.unwrap_or(0) as usize;
    let limit = limit_param(&q)?;
    let mut eq = Vec::new();
    for name in ["deal_id", "person_id", "org_id", "user_id"] {
        if let Some(v) = int_param(&q, name)? {
            eq.push((name, v));
        }
    }
    // v1 `updated_since` is RFC 3339 (PHP SDK 15.1.0); notes keep v1 timestamps.
    let since = match param(&q, "updated_since").filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(time::v1(time::parse_rfc3339(s).ok_or_else(|| {
            PdError::bad_request("Validation failed: updated_since: must be an RFC 3339 date-time")
        })?)),
    };
    let (sort_field, desc) = match param(&q, "sort").filter(|s| !s.is_empty()) {
        None => ("id".to_owned(), false),
        Some(s) => {
            let mut it = s.split_whitespace();
            let f = it.next().unwrap_or("id");
            let dir = it.next().unwrap_or("ASC");
            if ![
                "id",
                "add_time",
                "update_time",
                "user_id",
                "deal_id",
                "person_id",
                "org_id",
                "content",
            ]
            .contains(&f)
                || !(dir.eq_ignore_ascii_case("asc") || dir.eq_ignore_ascii_case("desc"))
            {
                return Err(PdError::bad_request(
                    "Invalid sort: expected \"field ASC\" or \"field DESC\"",
                ));
            }
            (f.to_owned(), dir.eq_ignore_ascii_case("desc"))
        }
    };
    let data = sim.data();
    let mut rows: Vec<&Row> = data
        .notes
        .values()
        .filter(|n| n.get("active_flag") != Some(&json!(false)))
        .filter(|n| eq.iter().all(|(k, v)| u64_of(n, k) == Some(*v)))
        .filter(|n| {
            since
                .as_deref()
                .is_none_or(|s| n.get("update_time").and_then(Value::as_str).unwrap_or("") >= s)
        })
        .collect();
    rows.sort_by(|a, b| {
        let key = |r: &Row| {
            (
                r.get(&sort_field)
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                u64_of(r, "id"),
            )
        };
        let (ka, kb) = (key(a), key(b));
        // Numbers compare by value, other fields as text.
        let o = match (
            a.get(&sort_field).and_then(Value::as_f64),
            b.get(&sort_field).and_then(Value::as_f64),
        ) {
            (Some(x), Some(y)) => x
                .partial_cmp(&y)
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(ka.1.cmp(&kb.1)),
            _ => ka.cmp(&kb),
        };
        if desc { o.reverse() } else { o }
    });
    let total = rows.len();
    let page: Vec<Value> = rows
        .into_iter()
        .skip(start)
        .take(limit)
        .map(|n| note_view(&data, n, me.user_id))
        .collect();
    let end = start.saturating_add(page.len());
    let more = end < total;
    let mut pagination = json!({"start": start, "limit": limit, "more_items_in_collection": more});
    if more {
        pagination["next_start"] = json!(end);
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"success": true, "data": page, "additional_data": {"pagination": pagination}}),
    ))
}

fn live_note(data: &PdData, id: u64) -> Result<&Row, PdError> {
    data.notes
        .get(&id)
        .filter(|n| n.get("active_flag") != Some(&json!(false)))
        .ok_or_else(PdError::not_found)
}

async fn note(
    State(sim): State<PdSim>,
    axum::Extension(me): axum::Extension<TokenInfo>,
    Path(id): Path<String>,
) -> ApiResult {
    let id = parse_id(&id)?;
    let data = sim.data();
    let n = live_note(&data, id)?;
    Ok(ok(note_view(&data, n, me.user_id)))
}

async fn add_note(
    State(sim): State<PdSim>,
    axum::Extension(me): axum::Extension<TokenInfo>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let body = read_v1(&sim, &headers, body).await?;
    let mut data = sim.data();
    let ch = check_note(&body, &data, &me, None)?;
    let id = data.notes.keys().next_back().map_or(1, |k| k + 1);
    let now = time::now_v1();
    let mut n = json!({
        "id": id, "user_id": me.user_id, "deal_id": null, "person_id": null, "org_id": null,
        "lead_id": null, "project_id": null, "content": "", "add_time": now, "update_time": now,
        "active_flag": true, "pinned_to_deal_flag": false, "pinned_to_person_flag": false,
        "pinned_to_organization_flag": false, "pinned_to_lead_flag": false,
        "pinned_to_project_flag": false, "last_update_user_id": null,
    });
    for (k, v) in ch {
        n[k] = v;
    }
    let Value::Object(n) = n else {
        return Err(PdError::new(StatusCode::INTERNAL_SERVER_ERROR, "note"));
    };
    data.notes.insert(id, n.clone());
    Ok(ok(note_view(&data, &n, me.user_id)))
}

async fn put_note(
    State(sim): State<PdSim>,
    axum::Extension(me): axum::Extension<TokenInfo>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let id = parse_id(&id)?;
    let body = read_v1(&sim, &headers, body).await?;
    let mut data = sim.data();
    let mut n = live_note(&data, id)?.clone();
    let ch = check_note(&body, &data, &me, Some(&n))?;
    for (k, v) in ch {
        n.insert(k, v);
    }
    n.insert("update_time".into(), json!(time::now_v1()));
    n.insert("last_update_user_id".into(), json!(me.user_id));
    data.notes.insert(id, n.clone());
    Ok(ok(note_view(&data, &n, me.user_id)))
}

async fn delete_note(State(sim): State<PdSim>, Path(id): Path<String>) -> ApiResult {
    let id = parse_id(&id)?;
    let mut data = sim.data();
    let mut n = live_note(&data, id)?.clone();
    n.insert("active_flag".into(), json!(false));
    n.insert("update_time".into(), json!(time::now_v1()));
    data.notes.insert(id, n);
    Ok(ok(json!(true)))
}

// ---------------------------------------------------------------------------------------------
// v1 users, activity types, webhooks

fn user_view(data: &PdData, u: &Row, me: u64, with_company: bool) -> Value {
    let mut v = u.clone();
    v.insert("is_you".into(), json!(u64_of(u, "id") == Some(me)));
    if with_company {
        for (k, x) in &data.company {
            v.insert(k.clone(), x.clone());
        }
    }
    Value::Object(v)
}

async fn users(
    State(sim): State<PdSim>,
    axum::Extension(me): axum::Extension<TokenInfo>,
) -> ApiResult {
    let data = sim.data();
    let list = data
        .users
        .iter()
        .map(|u| user_view(&data, u, me.user_id, false))
        .collect();
    Ok(ok(Value::Array(list)))
}

async fn users_me(
    State(sim): State<PdSim>,
    axum::Extension(me): axum::Extension<TokenInfo>,
) -> ApiResult {
    let data = sim.data();
    let u = data.user(me.user_id).ok_or_else(PdError::not_found)?;
    Ok(ok(user_view(&data, u, me.user_id, true)))
}

async fn user(
    State(sim): State<PdSim>,
    axum::Extension(me): axum::Extension<TokenInfo>,
    Path(id): Path<String>,
) -> ApiResult {
    let id = parse_id(&id)?;
    let data = sim.data();
    let u = data.user(id).ok_or_else(PdError::not_found)?;
    Ok(ok(user_view(&data, u, me.user_id, false)))
}

async fn activity_types(State(sim): State<PdSim>) -> ApiResult {
    Ok(ok(Value::Array(
        sim.data()
            .activity_types
            .iter()
            .cloned()
            .map(Value::Object)
            .collect(),
    )))
}

fn webhook_view(w: &Row) -> Value {
    let mut v = w.clone();
    // The password is write-only.
    if v.get("http_auth_password").is_some_and(|p| !p.is_null()) {
        v.insert("http_auth_password".into(), json!("******"));
    }
    Value::Object(v)
}

async fn webhooks(State(sim): State<PdSim>) -> ApiResult {
    let data = sim.data();
    let list: Vec<Value> = data.webhooks.values().map(webhook_view).collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"status": "ok", "success": true, "data": list}),
    ))
}

const EVENT_ACTIONS: &[&str] = &[
    "create", "change", "delete", "*", "added", "updated", "deleted", "merged",
];
const EVENT_OBJECTS: &[&str] = &[
    "activity",
    "activityType",
    "deal",
    "lead",
    "note",
    "organization",
    "person",
    "pipeline",
    "product",
    "stage",
    "user",
    "deal_installment",
    "deal_product",
    "board",
    "phase",
    "project",
    "task",
    "*",
];

async fn add_webhook(
    State(sim): State<PdSim>,
    axum::Extension(me): axum::Extension<TokenInfo>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let body = read_v1(&sim, &headers, body).await?;
    let obj = body.as_object().ok_or_else(|| {
        PdError::webhook(StatusCode::BAD_REQUEST, "body", "must be a JSON object")
    })?;
    let s = |k: &str| obj.get(k).and_then(Value::as_str);
    let url = s("subscription_url")
        .filter(|u| {
            (u.starts_with("http://") || u.starts_with("https://"))
                && u.len() > "https://".len()
                && !u.contains("pipedrive.com/api")
        })
        .ok_or_else(|| {
            PdError::webhook(
                StatusCode::BAD_REQUEST,
                "subscription_url",
                "invalid or non-reachable URL",
            )
        })?;
    let action = s("event_action")
        .filter(|a| EVENT_ACTIONS.contains(a))
        .ok_or_else(|| {
            PdError::webhook(StatusCode::BAD_REQUEST, "event_action", "invalid value")
        })?;
    let object = s("event_object")
        .filter(|a| EVENT_OBJECTS.contains(a))
        .ok_or_else(|| {
            PdError::webhook(StatusCode::BAD_REQUEST, "event_object", "invalid value")
        })?;
    let version = match s("version") {
        None => "2.0",
        Some(v @ ("1.0" | "2.0")) => v,
        Some(_) => {
            return Err(PdError::webhook(
                StatusCode::BAD_REQUEST,
                "version",
                "must be 1.0 or 2.0",
            ));
        }
    };
    let mut data = sim.data();
    let user_id = match obj.get("user_id") {
        None | Some(Value::Null) => me.user_id,
        Some(v) => v1_int("user_id", v)?
            .filter(|id| data.user(*id).is_some())
            .ok_or_else(|| PdError::webhook(StatusCode::BAD_REQUEST, "user_id", "not found"))?,
    };
    let owned = data
        .webhooks
        .values()
        .filter(|w| u64_of(w, "owner_id") == Some(me.user_id))
        .count();
    if owned >= 40 {
        return Err(PdError::webhook(
            StatusCode::UNPROCESSABLE_ENTITY,
            "subscription_url",
            "webhooks limit reached",
        ));
    }
    let id = data.webhooks.keys().next_back().map_or(1, |k| k + 1);
    let company = data
        .company
        .get("company_id")
        .cloned()
        .unwrap_or(Value::Null);
    let w = json!({
        "id": id, "company_id": company, "owner_id": me.user_id, "user_id": user_id,
        "event_action": action, "event_object": object, "subscription_url": url,
        "version": version, "is_active": 1,
        "add_time": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        "remove_time": null, "type": "general",
        "http_auth_user": obj.get("http_auth_user").cloned().unwrap_or(Value::Null),
        "http_auth_password": obj.get("http_auth_password").cloned().unwrap_or(Value::Null),
        "remove_reason": null, "last_delivery_time": null, "last_http_status": null,
        "admin_id": me.user_id, "name": obj.get("name").cloned().unwrap_or(Value::Null),
    });
    let Value::Object(w) = w else {
        return Err(PdError::new(StatusCode::INTERNAL_SERVER_ERROR, "webhook"));
    };
    data.webhooks.insert(id, w.clone());
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"status": "ok", "success": true, "data": webhook_view(&w)}),
    ))
}

async fn delete_webhook(State(sim): State<PdSim>, Path(id): Path<String>) -> ApiResult {
    let not_found = || PdError::webhook(StatusCode::NOT_FOUND, "id", "not found");
    let id: u64 = id.parse().map_err(|_| not_found())?;
    sim.data().webhooks.remove(&id).ok_or_else(not_found)?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"status": "ok", "success": true}),
    ))
}

fn v1_routes() -> Router<PdSim> {
    Router::new()
        .route("/notes", get(notes).post(add_note))
        .route("/notes/{id}", get(note).put(put_note).delete(delete_note))
        .route("/users", get(users))
        .route("/users/me", get(users_me))
        .route("/users/{id}", get(user))
        .route("/activityTypes", get(activity_types))
        .route("/webhooks", get(webhooks).post(add_webhook))
        .route("/webhooks/{id}", delete(delete_webhook))
        .method_not_allowed_fallback(method_not_allowed)
}

async fn method_not_allowed() -> PdError {
    PdError::method_not_allowed()
}

async fn unknown_route() -> PdError {
    PdError::unknown_route()
}

/// The router over `sim`: every route behind token auth and the rate limiter.
pub fn app(sim: PdSim) -> Router {
    let mut r = Router::new();
    for (seg, ent) in [
        ("deals", Entity::Deal),
        ("persons", Entity::Person),
        ("organizations", Entity::Organization),
        ("activities", Entity::Activity),
    ] {
        r = entity_routes(r, seg, ent);
    }
    let r = r
        .route("/api/v2/pipelines", get(pipelines))
        .route("/api/v2/pipelines/{id}", get(pipeline))
        .route("/api/v2/stages", get(stages))
        .route("/api/v2/stages/{id}", get(stage))
        .route(
            "/api/v2/dealFields",
            get(|State(s): State<PdSim>, RawQuery(q): RawQuery| fields(false, s, q)),
        )
        .route(
            "/api/v2/dealFields/{code}",
            get(|State(s): State<PdSim>, Path(c): Path<String>| field(false, s, c)),
        )
        .route(
            "/api/v2/personFields",
            get(|State(s): State<PdSim>, RawQuery(q): RawQuery| fields(true, s, q)),
        )
        .route(
            "/api/v2/personFields/{code}",
            get(|State(s): State<PdSim>, Path(c): Path<String>| field(true, s, c)),
        )
        .nest("/api/v1", v1_routes())
        .nest("/v1", v1_routes())
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(unknown_route);
    r.layer(middleware::from_fn_with_state(sim.clone(), gate))
        .with_state(sim)
}
