//! The HTTP surface: `/v2` routes, the admin routes under `/_sim`, and the layers that every
//! answer passes through (request id, error envelope, auth, rate limit, faults, counters).

use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, Path, RawQuery, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use chrono::Utc;
use serde_json::{Value, json};

use crate::error::{ApiError, PendingError};
use crate::faults::{Action, FaultConfig};
use crate::query::{ListQuery, parse_pairs};
use crate::schema::Kind;
use crate::serve::ConnKill;
use crate::state::{Sim, SimConfig};
use crate::store::{Map, Row, SimData};

/// The user the bearer token belongs to.
#[derive(Debug, Clone, Copy)]
struct Actor(u64);

type ApiResult = Result<Response, ApiError>;

fn json_response(status: StatusCode, body: Value) -> Response {
    let mut res = (status, body.to_string()).into_response();
    res.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    res
}

fn item(kind: Kind, row: &Row) -> Value {
    json!({"data": row.data, "meta": {"type": kind.type_name()}})
}

fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    format!("http://{host}")
}

fn page_link(base: &str, path: &str, q: &ListQuery, page: u64) -> String {
    let mut parts = vec![format!("page={page}")];
    parts.extend(
        q.passthrough
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v))),
    );
    format!("{base}{path}?{}", parts.join("&"))
}

fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~[]".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn collection(kind_name: &str, rows: Vec<Value>, versions: Vec<u64>, links: Value) -> Value {
    let items: Vec<Value> = rows
        .into_iter()
        .zip(versions)
        .map(|(data, v)| json!({"data": data, "meta": {"type": kind_name, "version": v}}))
        .collect();
    json!({"items": items, "meta": {"type": "collection", "count": items.len(), "links": links}})
}

fn paged(kind: Kind, data: &SimData, headers: &HeaderMap, raw: Option<String>) -> ApiResult {
    let pairs = parse_pairs(raw.as_deref().unwrap_or(""))?;
    let q = ListQuery::parse(kind, &pairs)?;
    let (rows, more) = q.apply(kind, data.rows(kind));
    let base = base_url(headers);
    let path = format!("/v2/{}", kind.path());
    let mut links = json!({
        "self": page_link(&base, &path, &q, q.page),
        "first_page": page_link(&base, &path, &q, 1),
    });
    if q.page > 1 {
        links["prev_page"] = page_link(&base, &path, &q, q.page - 1).into();
    }
    if more {
        links["next_page"] = page_link(&base, &path, &q, q.page + 1).into();
    }
    let versions = rows.iter().map(|r| r.version).collect();
    let rows = rows
        .into_iter()
        .map(|r| Value::Object(r.data.clone()))
        .collect();
    Ok(json_response(
        StatusCode::OK,
        collection(kind.type_name(), rows, versions, links),
    ))
}

fn parse_id(raw: &str) -> Result<u64, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::invalid_param(format!("id must be an integer, given: {raw}")))
}

/// Reads `{"data": {...}}` (a `meta` sibling is tolerated) within the size limit.
async fn read_data(sim: &Sim, body: Body) -> Result<Map, ApiError> {
    let limit = sim.config().max_body_bytes;
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::too_large(limit))?;
    let doc: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::invalid_payload(format!("The body is not valid JSON: {e}")))?;
    match doc {
        Value::Object(mut top) => match top.remove("data") {
            Some(Value::Object(data)) => Ok(data),
            _ => Err(ApiError::invalid_payload(
                "The body must be {\"data\": {...}}.",
            )),
        },
        _ => Err(ApiError::invalid_payload(
            "The body must be {\"data\": {...}}.",
        )),
    }
}

fn unprocessable(errors: Vec<sellsync_api::ErrorDetail>) -> ApiError {
    ApiError {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        errors,
    }
}

async fn list(kind: Kind, sim: Sim, headers: HeaderMap, raw: Option<String>) -> ApiResult {
    paged(kind, &sim.world().data, &headers, raw)
}

async fn retrieve(kind: Kind, sim: Sim, id: String) -> ApiResult {
    let id = parse_id(&id)?;
    let w = sim.world();
    let row = w
        .data
        .row(kind, id)
        .ok_or_else(|| ApiError::not_found(kind.type_name(), id))?;
    Ok(json_response(StatusCode::OK, item(kind, row)))
}

fn forbidden(kind: Kind) -> ApiError {
    ApiError::forbidden(format!(
        "This user may change only {}s owned by themself or their team.",
        kind.type_name()
    ))
}

async fn create(kind: Kind, sim: Sim, actor: Actor, body: Body) -> ApiResult {
    let patch = read_data(&sim, body).await?;
    let mut w = sim.world();
    let merged = w
        .data
        .prepare(kind, &patch, None, actor.0)
        .map_err(unprocessable)?;
    if !w.data.may_change(actor.0, kind, &merged) {
        return Err(forbidden(kind));
    }
    let row = w.data.store(kind, None, merged, actor.0, Utc::now());
    Ok(json_response(StatusCode::OK, item(kind, &row)))
}

async fn update(kind: Kind, sim: Sim, actor: Actor, id: String, body: Body) -> ApiResult {
    let id = parse_id(&id)?;
    let patch = read_data(&sim, body).await?;
    let mut w = sim.world();
    let existing = w
        .data
        .row(kind, id)
        .ok_or_else(|| ApiError::not_found(kind.type_name(), id))?;
    if !w.data.may_change(actor.0, kind, &existing.data) {
        return Err(forbidden(kind));
    }
    let merged = w
        .data
        .prepare(kind, &patch, Some(&existing.data), actor.0)
        .map_err(unprocessable)?;
    if !w.data.may_change(actor.0, kind, &merged) {
        return Err(forbidden(kind));
    }
    let row = w.data.store(kind, Some(id), merged, actor.0, Utc::now());
    Ok(json_response(StatusCode::OK, item(kind, &row)))
}

async fn destroy(kind: Kind, sim: Sim, actor: Actor, id: String) -> ApiResult {
    let id = parse_id(&id)?;
    let mut w = sim.world();
    let existing = w
        .data
        .row(kind, id)
        .ok_or_else(|| ApiError::not_found(kind.type_name(), id))?;
    if !w.data.may_change(actor.0, kind, &existing.data) {
        return Err(forbidden(kind));
    }
    w.data.delete(kind, id);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET` (and for writable kinds `POST`) on `/v2/<kind>`.
fn collection_route(kind: Kind, writable: bool) -> MethodRouter<Sim> {
    let r = get(
        move |State(sim): State<Sim>, headers: HeaderMap, RawQuery(raw): RawQuery| {
            list(kind, sim, headers, raw)
        },
    );
    if !writable {
        return r;
    }
    r.post(
        move |State(sim): State<Sim>, actor: axum::Extension<Actor>, body: Body| {
            create(kind, sim, actor.0, body)
        },
    )
}

/// `GET` (and for writable kinds `PUT`, `DELETE`) on `/v2/<kind>/{id}`.
fn item_route(kind: Kind, writable: bool) -> MethodRouter<Sim> {
    let r = get(move |State(sim): State<Sim>, Path(id): Path<String>| retrieve(kind, sim, id));
    if !writable {
        return r;
    }
    r.put(
        move |State(sim): State<Sim>,
              actor: axum::Extension<Actor>,
              Path(id): Path<String>,
              body: Body| { update(kind, sim, actor.0, id, body) },
    )
    .delete(
        move |State(sim): State<Sim>, actor: axum::Extension<Actor>, Path(id): Path<String>| {
            destroy(kind, sim, actor.0, id)
        },
    )
}

async fn users_self(State(sim): State<Sim>, actor: axum::Extension<Actor>) -> ApiResult {
    retrieve(Kind::User, sim, actor.0.0.to_string()).await
}

async fn account_self(State(sim): State<Sim>) -> ApiResult {
    let w = sim.world();
    Ok(json_response(
        StatusCode::OK,
        json!({"data": w.data.account, "meta": {"type": "account"}}),
    ))
}

fn custom_fields_route(resource_type: &'static str) -> MethodRouter<Sim> {
    get(
        move |State(sim): State<Sim>, headers: HeaderMap| async move {
            let w = sim.world();
            let defs: Vec<Value> = w
                .data
                .definitions(resource_type)
                .iter()
                .cloned()
                .map(Value::Object)
                .collect();
            let versions = vec![1; defs.len()];
            let base = base_url(&headers);
            let links = json!({"self": format!("{base}/v2/{resource_type}/custom_fields")});
            Ok::<_, ApiError>(json_response(
                StatusCode::OK,
                collection("custom_field", defs, versions, links),
            ))
        },
    )
}

fn deal_for_associations(
    data: &SimData,
    actor: u64,
    id: &str,
    write: bool,
) -> Result<u64, ApiError> {
    let id = parse_id(id)?;
    let deal = data
        .row(Kind::Deal, id)
        .ok_or_else(|| ApiError::not_found("deal", id))?;
    if write && !data.may_change(actor, Kind::Deal, &deal.data) {
        return Err(forbidden(Kind::Deal));
    }
    Ok(id)
}

async fn associated_list(
    State(sim): State<Sim>,
    actor: axum::Extension<Actor>,
    Path(id): Path<String>,
) -> ApiResult {
    let w = sim.world();
    let id = deal_for_associations(&w.data, actor.0.0, &id, false)?;
    let rows: Vec<Value> = w
        .data
        .associated_contacts
        .get(&id)
        .into_iter()
        .flatten()
        .cloned()
        .map(Value::Object)
        .collect();
    let versions = vec![1; rows.len()];
    Ok(json_response(
        StatusCode::OK,
        collection("associated_contact", rows, versions, json!({})),
    ))
}

async fn associated_create(
    State(sim): State<Sim>,
    actor: axum::Extension<Actor>,
    Path(id): Path<String>,
    body: Body,
) -> ApiResult {
    let patch = read_data(&sim, body).await?;
    let mut w = sim.world();
    let id = deal_for_associations(&w.data, actor.0.0, &id, true)?;
    let err = |field: &str, code: &str, why: String| {
        unprocessable(vec![crate::error::field_error(
            "associated_contact",
            field,
            code,
            why,
        )])
    };
    if let Some(k) = patch
        .keys()
        .find(|k| !matches!(k.as_str(), "contact_id" | "role"))
    {
        return Err(err(
            &format!("/data/{k}"),
            "unknown",
            format!("`{k}` is not an attribute of an associated contact."),
        ));
    }
    let contact = match patch.get("contact_id") {
        None | Some(Value::Null) => {
            return Err(err(
                "/data/contact_id",
                "missing",
                "`contact_id` is required.".into(),
            ));
        }
        Some(v) => v.as_u64().ok_or_else(|| {
            err(
                "/data/contact_id",
                "invalid_type",
                "`contact_id` must be an integer.".into(),
            )
        })?,
    };
    if !w.data.exists(Kind::Contact, contact) {
        return Err(err(
            "/data/contact_id",
            "incorrect_value",
            format!("contact {contact} does not exist."),
        ));
    }
    let role = match patch.get("role") {
        None | Some(Value::Null) => Value::from("involved"),
        Some(Value::String(s)) => Value::from(s.as_str()),
        Some(_) => {
            return Err(err(
                "/data/role",
                "invalid_type",
                "`role` must be a string.".into(),
            ));
        }
    };
    let now = crate::store::ts(Utc::now());
    let list = w.data.associated_contacts.entry(id).or_default();
    list.retain(|a| a.get("contact_id").and_then(Value::as_u64) != Some(contact));
    let mut a = Map::new();
    a.insert("contact_id".into(), contact.into());
    a.insert("role".into(), role);
    a.insert("created_at".into(), now.clone().into());
    a.insert("updated_at".into(), now.into());
    list.push(a.clone());
    Ok(json_response(
        StatusCode::OK,
        json!({"data": a, "meta": {"type": "associated_contact"}}),
    ))
}

async fn associated_delete(
    State(sim): State<Sim>,
    actor: axum::Extension<Actor>,
    Path((id, contact)): Path<(String, String)>,
) -> ApiResult {
    let mut w = sim.world();
    let id = deal_for_associations(&w.data, actor.0.0, &id, true)?;
    let contact = parse_id(&contact)?;
    let list = w.data.associated_contacts.entry(id).or_default();
    let before = list.len();
    list.retain(|a| a.get("contact_id").and_then(Value::as_u64) != Some(contact));
    if list.len() == before {
        return Err(ApiError::not_found("associated_contact", contact));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn device(headers: &HeaderMap) -> Result<String, ApiError> {
    headers
        .get("x-basecrm-device-uuid")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| ApiError::invalid_header("X-Basecrm-Device-UUID header is required."))
}

async fn sync_start(State(sim): State<Sim>, headers: HeaderMap) -> ApiResult {
    let device = device(&headers)?;
    let cfg = sim.config();
    let mut w = sim.world();
    let w = &mut *w;
    let id = uuid::Uuid::new_v4().to_string();
    match w.sessions.start(
        &w.data,
        &device,
        id,
        cfg.sync_page_size,
        cfg.max_sync_sessions,
    )? {
        Some(body) => Ok(json_response(StatusCode::CREATED, body)),
        None => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

async fn sync_queue(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Path(session): Path<String>,
) -> ApiResult {
    let device = device(&headers)?;
    let page = sim.config().sync_page_size;
    let mut w = sim.world();
    let w = &mut *w;
    match w.sessions.fetch(&w.data, &device, &session, page)? {
        Some(body) => Ok(json_response(StatusCode::OK, body)),
        None => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

async fn sync_ack(State(sim): State<Sim>, headers: HeaderMap, body: Body) -> ApiResult {
    let device = device(&headers)?;
    let data = read_data(&sim, body).await?;
    let keys = match data.get("ack_keys") {
        Some(Value::Array(keys)) => keys.clone(),
        _ => {
            return Err(unprocessable(vec![crate::error::field_error(
                "sync",
                "/data/ack_keys",
                "missing",
                "`ack_keys` must be an array of ack keys.".into(),
            )]));
        }
    };
    crate::sync::ack(&mut sim.world().data, &device, &keys)?;
    Ok(StatusCode::ACCEPTED.into_response())
}

/// The `/v2` routes, behind auth, rate limit, faults and counters.
fn api_routes(sim: &Sim) -> Router<Sim> {
    let mut r = Router::new();
    for kind in [
        Kind::Deal,
        Kind::Contact,
        Kind::Note,
        Kind::Task,
        Kind::Call,
        Kind::LossReason,
        Kind::DealSource,
        Kind::Tag,
    ] {
        r = r
            .route(
                &format!("/v2/{}", kind.path()),
                collection_route(kind, true),
            )
            .route(
                &format!("/v2/{}/{{id}}", kind.path()),
                item_route(kind, true),
            );
    }
    for rt in ["deal", "contact", "lead", "prospect_and_customer"] {
        r = r.route(&format!("/v2/{rt}/custom_fields"), custom_fields_route(rt));
    }
    r.route("/v2/pipelines", collection_route(Kind::Pipeline, false))
        .route("/v2/stages", collection_route(Kind::Stage, false))
        .route("/v2/users", collection_route(Kind::User, false))
        .route("/v2/users/self", get(users_self))
        .route("/v2/users/{id}", item_route(Kind::User, false))
        .route("/v2/accounts/self", get(account_self))
        .route(
            "/v2/deals/{id}/associated_contacts",
            get(associated_list).post(associated_create),
        )
        .route(
            "/v2/deals/{id}/associated_contacts/{contact_id}",
            axum::routing::delete(associated_delete),
        )
        .route("/v2/sync/start", post(sync_start))
        .route("/v2/sync/{session_id}/queues/main", get(sync_queue))
        .route("/v2/sync/ack", post(sync_ack))
        .route_layer(middleware::from_fn_with_state(sim.clone(), api_layer))
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Per `/v2` request, in order: count, authenticate, rate-limit, inject faults, handle.
async fn api_layer(State(sim): State<Sim>, mut req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("?", MatchedPath::as_str)
        .to_owned();
    let key = format!("{method} {route}");
    let kill = req
        .extensions()
        .get::<ConnectInfo<ConnKill>>()
        .map(|c| c.0.clone());
    let token = bearer(req.headers()).map(str::to_owned);
    let user = token
        .as_deref()
        .and_then(|t| sim.world().data.tokens.get(t).copied());
    let (Some(token), Some(user)) = (token, user) else {
        sim.count(&key, "401");
        return ApiError::unauthorized().into_response();
    };
    if !sim.allow(&token, Instant::now()) {
        sim.count(&key, "429");
        return ApiError::rate_limited("The rate limit of this token is exhausted; retry later.")
            .into_response();
    }
    req.extensions_mut().insert(Actor(user));
    let decision = sim.decide_faults(&method, &route);
    if decision.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(decision.latency_ms)).await;
    }
    let drop = |sim: &Sim, res: Response| match &kill {
        Some(k) => {
            sim.count(&key, "dropped");
            k.kill();
            res
        }
        // Without the kill switch (not served through `serve`), answer 503 instead.
        None => {
            sim.count(&key, "503");
            ApiError::server(StatusCode::SERVICE_UNAVAILABLE).into_response()
        }
    };
    match decision.action {
        Some(Action::Error(status)) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            sim.count(&key, status.as_str());
            ApiError::server(status).into_response()
        }
        Some(Action::RateLimit) => {
            sim.count(&key, "429");
            ApiError::rate_limited("Injected rate limit burst.").into_response()
        }
        Some(Action::DropBefore) => drop(&sim, StatusCode::SERVICE_UNAVAILABLE.into_response()),
        Some(Action::DropAfter) => {
            let res = next.run(req).await;
            drop(&sim, res)
        }
        None => {
            let res = next.run(req).await;
            sim.count(&key, res.status().as_str());
            res
        }
    }
}

/// Admin routes outside `/v2`: no token, no rate limit, no faults, not counted.
fn admin_routes() -> Router<Sim> {
    Router::new()
        .route("/_sim/state", get(admin_dump).put(admin_seed))
        .route("/_sim/faults", get(admin_faults).put(admin_set_faults))
        .route("/_sim/config", get(admin_config).put(admin_set_config))
        .route(
            "/_sim/counters",
            get(admin_counters).delete(admin_reset_counters),
        )
        .route("/_sim/tokens", get(admin_tokens))
}

async fn admin_body<T: serde::de::DeserializeOwned>(sim: &Sim, body: Body) -> Result<T, ApiError> {
    let limit = sim.config().max_body_bytes.max(64 * 1024 * 1024);
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::too_large(limit))?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::invalid_payload(format!("{e}")))
}

async fn admin_dump(State(sim): State<Sim>) -> ApiResult {
    Ok(json_response(
        StatusCode::OK,
        serde_json::to_value(sim.dump()).unwrap_or(Value::Null),
    ))
}

async fn admin_seed(State(sim): State<Sim>, body: Body) -> ApiResult {
    let data: SimData = admin_body(&sim, body).await?;
    sim.seed(data);
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn admin_faults(State(sim): State<Sim>) -> ApiResult {
    Ok(json_response(
        StatusCode::OK,
        serde_json::to_value(sim.faults()).unwrap_or(Value::Null),
    ))
}

async fn admin_set_faults(State(sim): State<Sim>, body: Body) -> ApiResult {
    let faults: FaultConfig = admin_body(&sim, body).await?;
    sim.set_faults(faults).map_err(ApiError::invalid_payload)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn admin_config(State(sim): State<Sim>) -> ApiResult {
    Ok(json_response(
        StatusCode::OK,
        serde_json::to_value(sim.config()).unwrap_or(Value::Null),
    ))
}

async fn admin_set_config(State(sim): State<Sim>, body: Body) -> ApiResult {
    let config: SimConfig = admin_body(&sim, body).await?;
    if config.sync_page_size == 0 || config.max_body_bytes == 0 {
        return Err(ApiError::invalid_payload(
            "sync_page_size and max_body_bytes must be positive",
        ));
    }
    sim.set_config(config);
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn admin_counters(State(sim): State<Sim>) -> ApiResult {
    Ok(json_response(
        StatusCode::OK,
        serde_json::to_value(sim.counters()).unwrap_or(Value::Null),
    ))
}

async fn admin_reset_counters(State(sim): State<Sim>) -> ApiResult {
    sim.reset_counters();
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn admin_tokens(State(sim): State<Sim>) -> ApiResult {
    Ok(json_response(
        StatusCode::OK,
        serde_json::to_value(sim.tokens()).unwrap_or(Value::Null),
    ))
}

async fn incorrect_path(method: Method, uri: Uri) -> ApiError {
    ApiError::incorrect_path(method.as_str(), uri.path())
}

/// Outermost layer: assigns the request id, renders every error as the Zendesk envelope with
/// `logref` = `X-Request-Id`, and sets the header on every answer.
async fn envelope_layer(req: Request, next: Next) -> Response {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let res = next.run(req).await;
    let status = res.status();
    let pending = res.extensions().get::<PendingError>().cloned();
    let is_json = res
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    let mut res = match pending {
        Some(PendingError(err)) => json_response(
            err.status,
            serde_json::to_value(err.envelope(&id)).unwrap_or(Value::Null),
        ),
        None if (status.is_client_error() || status.is_server_error()) && !is_json => {
            let err = ApiError::from_status(status);
            json_response(
                status,
                serde_json::to_value(err.envelope(&id)).unwrap_or(Value::Null),
            )
        }
        None => res,
    };
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut().insert("x-request-id", v);
    }
    res
}

/// The simulator's router. Tests may call it in-process; `serve` adds dropped-connection faults.
pub fn app(sim: Sim) -> Router {
    api_routes(&sim)
        .merge(admin_routes())
        .fallback(incorrect_path)
        .method_not_allowed_fallback(incorrect_path)
        .layer(middleware::from_fn(envelope_layer))
        .with_state(sim)
}
