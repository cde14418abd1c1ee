//! The conflict inbox: a local web page served by the device process, on the device facade
//! ([`sellsync_device::Device`]).
//!
//! - `/inbox`: every record with open conflicts, oldest first, filters by kind and field, the
//!   notifications (values of this user's that gave way) with dismiss.
//! - `/record/{id}`: each conflict side by side (the base, every candidate with who, which
//!   device and when) and its actions; the record's decisions as a timeline.
//! - `/bulk?field=F`: "take the latest" for every conflict on one field, listed before it is
//!   done.
//! - `/events`: server-sent events naming the records each sync, edit or resolution changed;
//!   the page's script re-renders what is shown.
//!
//! Safe by default ([`guard`]): every request carries the secret token (the link printed at
//! start sets it as a same-site cookie); a request that changes something must come from the
//! page itself (its `Origin` is this server) and a loopback server answers only to a loopback
//! `Host` (no DNS rebinding). Assets are built into the binary; nothing is fetched from
//! elsewhere.

// A handler's error is the response it sends (axum's idiom), whatever its size.
#![allow(clippy::result_large_err)]

pub mod pages;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Form, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use futures_util::Stream;
use maud::Markup;
use pages::{Banner, Context, Filter, InboxRow};
use sellsync_device::{
    ActivityId, Choice, Conflict, Device, DeviceError, RecordChoice, RecordId, RefusalTarget, Slot,
};

/// How the page is served.
#[derive(Debug, Clone)]
pub struct UiConfig {
    /// The secret every request must carry ([`new_token`]).
    pub token: String,
    /// The address listened on: on loopback, only loopback `Host` names are answered.
    pub listen: SocketAddr,
    /// Sync with the hub this often in the background (`None`: never; the page shows what
    /// other processes' syncs bring only when this one syncs).
    pub sync_every: Option<Duration>,
}

impl UiConfig {
    /// The cookie that carries the token after the first visit: named by port, because a
    /// browser keeps one cookie jar per host, not per port, and a device's page and a hub's
    /// dashboard on one machine must not overwrite each other's.
    pub fn cookie_name(&self) -> String {
        format!("sellsync_ui_{}", self.listen.port())
    }
}

/// A fresh secret token: 128 random bits, hex.
pub fn new_token() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What every request is checked against (see [`guard`]).
#[derive(Clone)]
struct Guard {
    token: String,
    cookie: String,
    loopback: bool,
}

impl Guard {
    fn new(config: &UiConfig) -> Guard {
        Guard {
            token: config.token.clone(),
            cookie: config.cookie_name(),
            loopback: config.listen.ip().is_loopback(),
        }
    }
}

#[derive(Clone)]
struct App {
    device: Device,
}

/// Serves the page on `listener` until `shutdown` completes, syncing in the background when
/// the config says so.
pub async fn serve(
    device: Device,
    listener: tokio::net::TcpListener,
    config: UiConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Some(every) = config.sync_every {
        let device = device.clone();
        tokio::spawn(async move {
            loop {
                match device.sync_hub(Duration::from_secs(60)).await {
                    Ok(r) => {
                        tracing::debug!("background sync: {} record(s) changed", r.changed.len())
                    }
                    Err(e) => tracing::info!("background sync did not complete: {e}"),
                }
                tokio::time::sleep(every).await;
            }
        });
    }
    axum::serve(listener, router(device, &config))
        .with_graceful_shutdown(shutdown)
        .await
}

/// The page's routes, behind the token and origin guard.
pub fn router(device: Device, config: &UiConfig) -> Router {
    let app = App { device };
    let checks = Guard::new(config);
    Router::new()
        .route("/", get(|| async { Redirect::to("/inbox") }))
        .route("/inbox", get(inbox))
        .route("/record/{id}", get(record))
        .route("/record/{id}/resolve", post(resolve))
        .route("/record/{id}/record", post(resolve_record))
        .route("/record/{id}/fix", post(fix))
        .route("/record/{id}/retry", post(retry))
        .route("/record/{id}/note", post(fix_note))
        .route("/record/{id}/discard", post(discard))
        .route("/notifications/{id}/dismiss", post(dismiss))
        .route("/bulk", get(bulk_page).post(bulk))
        .route("/events", get(events))
        .route("/assets/style.css", get(style))
        .route("/assets/app.js", get(script))
        .layer(middleware::from_fn_with_state(checks, guard))
        .with_state(app)
}

/// Reads what the hub's dashboard shows, on each request (on the blocking pool).
pub type DashboardSource = Arc<dyn Fn() -> Result<pages::Dashboard, String> + Send + Sync>;

/// The hub's dashboard (`/dashboard`), behind the same token, origin and host checks.
pub fn hub_router(source: DashboardSource, config: &UiConfig) -> Router {
    let checks = Guard::new(config);
    Router::new()
        .route("/", get(|| async { Redirect::to("/dashboard") }))
        .route(
            "/dashboard",
            get(move || {
                let source = source.clone();
                async move {
                    match tokio::task::spawn_blocking(move || source()).await {
                        Ok(Ok(d)) => html(pages::dashboard(now_ms(), &d)),
                        Ok(Err(e)) => refused(StatusCode::INTERNAL_SERVER_ERROR, &e),
                        Err(e) => refused(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
                    }
                }
            }),
        )
        .route("/assets/style.css", get(style))
        .layer(middleware::from_fn_with_state(checks, guard))
}

/// Serves the hub's dashboard on `listener` until `shutdown` completes.
pub async fn serve_hub(
    source: DashboardSource,
    listener: tokio::net::TcpListener,
    config: UiConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, hub_router(source, &config))
        .with_graceful_shutdown(shutdown)
        .await
}

fn refused(status: StatusCode, message: &str) -> Response {
    let title = status.canonical_reason().unwrap_or("Refused");
    (status, Html(pages::error(title, message).into_string())).into_response()
}

fn token_of_cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| kv.trim().strip_prefix(name)?.strip_prefix('='))
}

/// Compares in time independent of where the strings differ.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn loopback_host(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((n, port)) if port.bytes().all(|b| b.is_ascii_digit()) => n,
        _ => host,
    };
    matches!(name, "127.0.0.1" | "localhost" | "[::1]")
}

/// Every request: the token (query `?token=` on the first visit, which sets the cookie, then
/// the cookie or an `Authorization: Bearer` header); a loopback `Host` on a loopback server;
/// for anything but GET, an `Origin` that is this server (a bearer header stands in for a
/// script that sends none).
async fn guard(State(app): State<Guard>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if app.loopback && !loopback_host(&host) {
        return refused(
            StatusCode::FORBIDDEN,
            "This page answers only on 127.0.0.1 or localhost.",
        );
    }
    let from_query = req.uri().query().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("token="))
            .map(str::to_owned)
    });
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let presented = from_query
        .as_deref()
        .or(bearer)
        .or_else(|| token_of_cookie(headers, &app.cookie));
    if !presented.is_some_and(|t| same_secret(t, &app.token)) {
        return refused(
            StatusCode::UNAUTHORIZED,
            "Open the link `sellsync device ui` printed (it carries this page's token).",
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
        let ours = format!("http://{host}");
        let ok = match origin {
            Some(o) => o == ours,
            None => bearer.is_some(),
        };
        if !ok {
            return refused(
                StatusCode::FORBIDDEN,
                "A change must come from this page (the request's origin is another site).",
            );
        }
    }
    let set_cookie = from_query.is_some();
    let mut resp = next.run(req).await;
    if set_cookie
        && let Ok(v) = HeaderValue::from_str(&format!(
            "{}={}; HttpOnly; SameSite=Strict; Path=/",
            app.cookie, app.token
        ))
    {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// Runs a facade call on the blocking pool (the device takes a lock and does I/O).
async fn blocking<R: Send + 'static>(
    app: &App,
    f: impl FnOnce(&Device) -> Result<R, DeviceError> + Send + 'static,
) -> Result<R, Response> {
    let device = app.device.clone();
    match tokio::task::spawn_blocking(move || f(&device)).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(DeviceError::NoSuchRecord { id })) => Err(refused(
            StatusCode::NOT_FOUND,
            &format!("This device holds no record {id}."),
        )),
        Ok(Err(e)) => Err(refused(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string())),
        Err(e) => Err(refused(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string())),
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn html(m: Markup) -> Response {
    Html(m.into_string()).into_response()
}

async fn inbox(State(app): State<App>, Query(filter): Query<Filter>) -> Response {
    let got = blocking(&app, |d| {
        // The inbox shows no bases: each record is projected once, without them.
        let rows: Vec<InboxRow> = d
            .conflicted_records()?
            .into_iter()
            .map(|p| InboxRow {
                title: pages::title(&p),
                conflicts: sellsync_device::RecordConflicts {
                    record: p.record.id,
                    kind: p.record.kind,
                    conflicts: p
                        .conflicts
                        .into_iter()
                        .map(|conflict| sellsync_device::OpenConflict {
                            conflict,
                            base: None,
                        })
                        .collect(),
                },
            })
            .collect();
        Ok((rows, d.notifications(true)?, d.catalog()?, d.id()?))
    })
    .await;
    match got {
        Ok((rows, notes, catalog, me)) => {
            let cx = Context {
                catalog: &catalog,
                me: &me,
                now_ms: now_ms(),
            };
            html(pages::inbox(cx, &rows, &notes, &filter))
        }
        Err(r) => r,
    }
}

fn parse_id(id: &str) -> Result<RecordId, Response> {
    id.parse().map_err(|e| {
        refused(
            StatusCode::NOT_FOUND,
            &format!("{id:?} is not a record id: {e}"),
        )
    })
}

#[derive(serde::Deserialize, Default)]
struct Done {
    #[serde(default)]
    done: String,
}

/// The record page with a banner, with `status`.
async fn record_page(app: &App, id: RecordId, banner: Banner, status: StatusCode) -> Response {
    let got = blocking(app, move |d| {
        Ok((
            d.record(&id)?,
            d.record_conflicts(&id)?,
            d.catalog()?,
            d.id()?,
        ))
    })
    .await;
    match got {
        Ok((p, conflicts, catalog, me)) => {
            let cx = Context {
                catalog: &catalog,
                me: &me,
                now_ms: now_ms(),
            };
            (status, html(pages::record(cx, &p, &conflicts, &banner))).into_response()
        }
        Err(r) => r,
    }
}

async fn record(
    State(app): State<App>,
    Path(id): Path<String>,
    Query(done): Query<Done>,
) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let banner = match done.done.as_str() {
        "" => Banner::None,
        what => Banner::Done(format!("Done: {what}.")),
    };
    record_page(&app, id, banner, StatusCode::OK).await
}

/// After an action: back to the record (Post/Redirect/Get), or its page with why it did not
/// go through.
async fn after(app: &App, id: RecordId, done: Result<String, DeviceError>) -> Response {
    match done {
        Ok(what) => {
            let what: String = what
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '+' })
                .collect();
            Redirect::to(&format!("/record/{id}?done={what}")).into_response()
        }
        Err(DeviceError::Conflict { reason, .. }) => {
            record_page(app, id, Banner::Changed(reason), StatusCode::CONFLICT).await
        }
        Err(DeviceError::NoConflict { .. }) => {
            let why = "it was settled in the meantime".to_owned();
            record_page(app, id, Banner::Changed(why), StatusCode::CONFLICT).await
        }
        Err(DeviceError::NoSuchRecord { id }) => refused(
            StatusCode::NOT_FOUND,
            &format!("This device holds no record {id}."),
        ),
        Err(e) => {
            record_page(
                app,
                id,
                Banner::Refused(e.to_string()),
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
    }
}

async fn act(
    app: &App,
    id: &str,
    f: impl FnOnce(&Device, &RecordId) -> Result<String, DeviceError> + Send + 'static,
) -> Response {
    let id = match parse_id(id) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let device = app.device.clone();
    let target = id.clone();
    let done = tokio::task::spawn_blocking(move || f(&device, &target))
        .await
        .unwrap_or_else(|e| {
            Err(DeviceError::Internal {
                reason: e.to_string(),
            })
        });
    after(app, id, done).await
}

fn invalid(field: &str, reason: impl Into<String>) -> DeviceError {
    DeviceError::Invalid {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

fn slot_of(s: &str) -> Result<Slot, DeviceError> {
    s.parse().map_err(|e: String| invalid("slot", e))
}

#[derive(serde::Deserialize)]
struct ResolveForm {
    slot: String,
    seen: String,
    choice: String,
    #[serde(default)]
    value: String,
}

async fn resolve(
    State(app): State<App>,
    Path(id): Path<String>,
    Form(f): Form<ResolveForm>,
) -> Response {
    act(&app, &id, move |d, id| {
        let slot = slot_of(&f.slot)?;
        let seen: Vec<String> = f
            .seen
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        let choice = match f.choice.as_str() {
            "mine" => Choice::Mine,
            "theirs" => Choice::Theirs,
            "value" => {
                if f.value.trim().is_empty() {
                    return Err(invalid(&f.slot, "type a value first"));
                }
                let kind = d.record(id)?.record.kind;
                Choice::Value(d.parse_value(kind, &slot.field.to_string(), &f.value)?.1)
            }
            pick => match pick.strip_prefix("pick-").and_then(|n| n.parse().ok()) {
                Some(n) => Choice::Pick(n),
                None => return Err(invalid("choice", format!("no such choice {pick:?}"))),
            },
        };
        d.resolve_field_seen(id, &slot, Some(seen), choice)?;
        Ok(format!("{slot} decided"))
    })
    .await
}

#[derive(serde::Deserialize)]
struct RecordForm {
    choice: String,
}

async fn resolve_record(
    State(app): State<App>,
    Path(id): Path<String>,
    Form(f): Form<RecordForm>,
) -> Response {
    act(&app, &id, move |d, id| {
        let choice = match f.choice.as_str() {
            "restore" => RecordChoice::Restore,
            "delete" => RecordChoice::ConfirmDelete,
            other => return Err(invalid("choice", format!("no such choice {other:?}"))),
        };
        d.resolve_record(id, choice)?;
        Ok(match choice {
            RecordChoice::Restore => "restored".into(),
            RecordChoice::ConfirmDelete => "deleted".into(),
        })
    })
    .await
}

#[derive(serde::Deserialize)]
struct FixForm {
    slot: String,
    value: String,
}

async fn fix(State(app): State<App>, Path(id): Path<String>, Form(f): Form<FixForm>) -> Response {
    act(&app, &id, move |d, id| {
        let slot = slot_of(&f.slot)?;
        let kind = d.record(id)?.record.kind;
        let (_, value) = d.parse_value(kind, &slot.field.to_string(), &f.value)?;
        d.fix_refused_value(id, &slot, value)?;
        Ok(format!("{slot} fixed"))
    })
    .await
}

#[derive(serde::Deserialize)]
struct RetryForm {
    #[serde(default)]
    activity: String,
    #[serde(default)]
    slot: String,
    #[serde(default)]
    discard: String,
}

async fn retry(
    State(app): State<App>,
    Path(id): Path<String>,
    Form(f): Form<RetryForm>,
) -> Response {
    act(&app, &id, move |d, id| {
        if !f.activity.is_empty() {
            let activity: ActivityId = f
                .activity
                .parse()
                .map_err(|e| invalid("activity", format!("{e}")))?;
            if !f.discard.is_empty() {
                d.delete_activity(id, &activity)?;
                return Ok("discarded".into());
            }
            d.retry_refused(id, &RefusalTarget::Activity(activity))?;
        } else if !f.slot.is_empty() {
            d.retry_refused(id, &RefusalTarget::Field(slot_of(&f.slot)?))?;
        } else {
            d.retry_refused(id, &RefusalTarget::Record)?;
        }
        Ok("sent again".into())
    })
    .await
}

#[derive(serde::Deserialize)]
struct NoteForm {
    activity: String,
    text: String,
}

/// A refused note's text, edited: the bridge sends it with its next round.
async fn fix_note(
    State(app): State<App>,
    Path(id): Path<String>,
    Form(f): Form<NoteForm>,
) -> Response {
    act(&app, &id, move |d, id| {
        let note: ActivityId = f
            .activity
            .parse()
            .map_err(|e| invalid("activity", format!("{e}")))?;
        if f.text.trim().is_empty() {
            return Err(invalid("text", "a note needs some text"));
        }
        d.fix_refused_note(id, &note, &f.text)?;
        Ok("note saved, to be sent again".into())
    })
    .await
}

async fn discard(State(app): State<App>, Path(id): Path<String>) -> Response {
    let rid = match parse_id(&id) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let target = rid.clone();
    match blocking(&app, move |d| d.discard_copy(&target)).await {
        Ok(true) => Redirect::to(&format!("/record/{rid}?done=copy+discarded")).into_response(),
        Ok(false) => Redirect::to("/inbox").into_response(),
        Err(r) => r,
    }
}

async fn dismiss(State(app): State<App>, Path(id): Path<u64>) -> Response {
    match blocking(&app, move |d| d.dismiss(id)).await {
        Ok(()) => Redirect::to("/inbox").into_response(),
        Err(r) => r,
    }
}

#[derive(serde::Deserialize)]
struct BulkQuery {
    field: String,
}

/// Every field conflict on `field` (of a record, not of an activity), with its latest
/// candidate.
fn bulk_rows(d: &Device, field: &str) -> Result<Vec<pages::BulkRow>, DeviceError> {
    let mut rows = Vec::new();
    for rc in d.conflicts()? {
        let p = d.record(&rc.record)?;
        for c in rc.conflicts {
            let Conflict::Field {
                slot, candidates, ..
            } = c.conflict
            else {
                continue;
            };
            if slot.field.to_string() != field || slot.activity.is_some() {
                continue;
            }
            let Some(latest) = candidates
                .iter()
                .max_by_key(|c| (c.at, c.op.clone()))
                .cloned()
            else {
                continue;
            };
            rows.push(pages::BulkRow {
                id: rc.record.clone(),
                title: pages::title(&p),
                currency: pages::currency_of(&p).map(str::to_owned),
                slot,
                seen: candidates.iter().map(|c| c.op.clone()).collect(),
                latest,
            });
        }
    }
    Ok(rows)
}

async fn bulk_page(State(app): State<App>, Query(q): Query<BulkQuery>) -> Response {
    let field = q.field.clone();
    match blocking(&app, move |d| {
        Ok((bulk_rows(d, &field)?, d.catalog()?, d.id()?))
    })
    .await
    {
        Ok((rows, catalog, me)) => {
            let cx = Context {
                catalog: &catalog,
                me: &me,
                now_ms: now_ms(),
            };
            html(pages::bulk(cx, &q.field, &rows))
        }
        Err(r) => r,
    }
}

/// Keeps the latest candidate of each conflict listed, as it was listed: a conflict that
/// changed since is left open and named.
async fn bulk(State(app): State<App>, Form(items): Form<Vec<(String, String)>>) -> Response {
    let got = blocking(&app, move |d| {
        let (mut done, mut changed) = (0, Vec::new());
        for (_, item) in items.iter().filter(|(k, _)| k == "item") {
            let parts: Vec<&str> = item.splitn(4, '|').collect();
            let [id, slot, seen, op] = parts[..] else {
                continue;
            };
            let (Ok(id), Ok(slot)) = (id.parse::<RecordId>(), slot.parse::<Slot>()) else {
                continue;
            };
            let seen: Vec<String> = seen.split(',').map(str::to_owned).collect();
            let Some(n) = seen.iter().position(|s| s == op) else {
                continue;
            };
            match d.resolve_field_seen(&id, &slot, Some(seen), Choice::Pick(n + 1)) {
                Ok(()) => done += 1,
                Err(DeviceError::Conflict { .. } | DeviceError::NoConflict { .. }) => {
                    changed.push(id.to_string())
                }
                Err(e) => return Err(e),
            }
        }
        Ok((done, changed))
    })
    .await;
    match got {
        Ok((done, changed)) if changed.is_empty() => {
            Redirect::to(&format!("/inbox?done={done}")).into_response()
        }
        Ok((done, changed)) => refused(
            StatusCode::CONFLICT,
            &format!(
                "{done} decided; these changed while you looked and are still open: {}",
                changed.join(", ")
            ),
        ),
        Err(r) => r,
    }
}

/// One `changed` event per batch of records a sync, an edit or a resolution changed (their
/// ids, space separated).
async fn events(
    State(app): State<App>,
) -> Sse<impl Stream<Item = Result<Event, std::convert::Infallible>>> {
    let changes = app.device.subscribe();
    let stream = futures_util::stream::unfold(changes, |mut changes| async move {
        let ids = changes.next().await;
        let data: Vec<String> = ids.iter().map(ToString::to_string).collect();
        Some((
            Ok(Event::default().event("changed").data(data.join(" "))),
            changes,
        ))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

async fn style() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../assets/style.css"),
    )
}

async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../assets/app.js"),
    )
}
