//! The Zendesk simulator's router in process (`sellsync_sim::app` with
//! `tower::ServiceExt::oneshot`): a short sequence of requests (at most 6), each a route of the
//! simulator (from the table below, ids and query picked by the input), a token and any body,
//! against a fresh simulator over part of the demo data (see `demo`). The simulator answers every request and never
//! panics.
//!
//! No fault is planned in these runs (the fault admin route is not in the table), so every 5xx
//! is a finding. Every error answer is Zendesk's JSON error envelope (`errors`), as the
//! simulator promises for each 4xx and 5xx.

#![no_main]

use std::collections::BTreeSet;
use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{Method, Request};
use http_body_util::BodyExt as _;
use libfuzzer_sys::fuzz_target;
use sellsync_sim::{Kind, Sim, SimConfig, SimData, demo_data, token_for};
use serde_json::Value as Json;
use tower::ServiceExt as _;

/// The demo admin, and a demo user of a team (Bea Berg).
const ADMIN: u64 = 2;
const USER: u64 = 11;

/// `{id}` and `{contact_id}` are replaced by an id the input picks, `{session}` by the last
/// sync session the simulator opened in this input (or a made-up one).
const ROUTES: &[(&str, &str)] = &[
    ("GET", "/v2/deals"),
    ("POST", "/v2/deals"),
    ("GET", "/v2/deals/{id}"),
    ("PUT", "/v2/deals/{id}"),
    ("DELETE", "/v2/deals/{id}"),
    ("GET", "/v2/contacts"),
    ("POST", "/v2/contacts"),
    ("GET", "/v2/contacts/{id}"),
    ("PUT", "/v2/contacts/{id}"),
    ("DELETE", "/v2/contacts/{id}"),
    ("GET", "/v2/notes"),
    ("POST", "/v2/notes"),
    ("PUT", "/v2/notes/{id}"),
    ("DELETE", "/v2/notes/{id}"),
    ("GET", "/v2/tasks"),
    ("POST", "/v2/tasks"),
    ("PUT", "/v2/tasks/{id}"),
    ("GET", "/v2/calls"),
    ("POST", "/v2/calls"),
    ("PUT", "/v2/calls/{id}"),
    ("GET", "/v2/loss_reasons"),
    ("POST", "/v2/loss_reasons"),
    ("PUT", "/v2/loss_reasons/{id}"),
    ("GET", "/v2/deal_sources"),
    ("POST", "/v2/deal_sources"),
    ("GET", "/v2/tags"),
    ("POST", "/v2/tags"),
    ("PUT", "/v2/tags/{id}"),
    ("GET", "/v2/deal/custom_fields"),
    ("GET", "/v2/contact/custom_fields"),
    ("GET", "/v2/lead/custom_fields"),
    ("GET", "/v2/pipelines"),
    ("GET", "/v2/stages"),
    ("GET", "/v2/users"),
    ("GET", "/v2/users/self"),
    ("GET", "/v2/users/{id}"),
    ("GET", "/v2/accounts/self"),
    ("GET", "/v2/deals/{id}/associated_contacts"),
    ("POST", "/v2/deals/{id}/associated_contacts"),
    ("DELETE", "/v2/deals/{id}/associated_contacts/{contact_id}"),
    ("POST", "/v2/sync/start"),
    ("GET", "/v2/sync/{session}/queues/main"),
    ("POST", "/v2/sync/ack"),
    ("GET", "/_sim/state"),
    ("PUT", "/_sim/state"),
    ("GET", "/_sim/config"),
    ("PUT", "/_sim/config"),
    ("GET", "/_sim/counters"),
    ("DELETE", "/_sim/counters"),
    ("GET", "/_sim/tokens"),
];

/// Ids of the kept demo data (users 2 and 11, loss reason 15, source 18, contacts 21, 22 and
/// 31, tag 32, deals 62 and 67 with note 65, task 66 and note 68), a fresh one, and ids that are
/// not ids.
const IDS: &[&str] = &[
    "2",
    "11",
    "15",
    "18",
    "21",
    "22",
    "31",
    "32",
    "62",
    "65",
    "66",
    "67",
    "68",
    "999999",
    "0",
    "18446744073709551615",
    "x",
    "-1",
];
const METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE", "PATCH"];

/// One request of the input. Wire form (so that seeds can be written by hand): four bytes
/// `route id contact_id flags`, then, when flag 0x80 is set, a query up to the first `\n`, then
/// the body. Requests are separated by `\n--\n`.
///
/// Flags: bits 0-1 the token (admin, user, garbage, none); 0x04 the Sync API device header;
/// 0x08 another method than the route's, bits 4-6 picking it from `METHODS`.
#[derive(Debug)]
struct Call<'a> {
    route: u8,
    id: u8,
    contact_id: u8,
    flags: u8,
    query: Option<&'a [u8]>,
    body: &'a [u8],
}

impl<'a> Call<'a> {
    fn parse(bytes: &'a [u8]) -> Option<Call<'a>> {
        let [route, id, contact_id, flags, rest @ ..] = bytes else {
            return None;
        };
        let (query, body) = if flags & 0x80 != 0 {
            match rest.iter().position(|b| *b == b'\n') {
                Some(i) => (Some(&rest[..i]), &rest[i + 1..]),
                None => (Some(rest), &[][..]),
            }
        } else {
            (None, rest)
        };
        Some(Call {
            route: *route,
            id: *id,
            contact_id: *contact_id,
            flags: *flags,
            query,
            body,
        })
    }
}

/// Splits the input into its requests.
fn calls(data: &[u8]) -> Vec<Call<'_>> {
    const SEPARATOR: &[u8] = b"\n--\n";
    let mut out = Vec::new();
    let mut rest = data;
    while out.len() < 6 {
        let (one, next) = match rest.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
            Some(i) => (&rest[..i], Some(&rest[i + SEPARATOR.len()..])),
            None => (rest, None),
        };
        if let Some(call) = Call::parse(one) {
            out.push(call);
        }
        match next {
            Some(n) => rest = n,
            None => break,
        }
    }
    out
}

/// The demo data cut down to two deals, the contacts they name (and two more), and the
/// activities on those (the catalog, users and tokens whole), made once: making, cloning and
/// dropping the whole demo set was most of a run's time. What is kept refers only to what is
/// kept, so an error answer is never due to the cut.
fn demo() -> &'static SimData {
    static DEMO: OnceLock<SimData> = OnceLock::new();
    DEMO.get_or_init(|| {
        let mut data = demo_data();
        let deals: BTreeSet<u64> = [62, 67].into();
        let mut contacts: BTreeSet<u64> = [21, 22].into();
        if let Some(table) = data.tables.get_mut(&Kind::Deal) {
            table.retain(|id, _| deals.contains(id));
            for row in table.values() {
                for attr in ["contact_id", "organization_id"] {
                    contacts.extend(row.data.get(attr).and_then(Json::as_u64));
                }
            }
        }
        if let Some(table) = data.tables.get_mut(&Kind::Contact) {
            table.retain(|id, _| contacts.contains(id));
            let organizations: Vec<u64> = table
                .values()
                .filter_map(|r| r.data.get("parent_organization_id")?.as_u64())
                .collect();
            contacts.extend(organizations);
        }
        for kind in [Kind::Note, Kind::Task, Kind::Call] {
            if let Some(table) = data.tables.get_mut(&kind) {
                table.retain(|_, row| {
                    let on = row.data.get("resource_id").and_then(Json::as_u64);
                    match row.data.get("resource_type").and_then(Json::as_str) {
                        Some("deal") => on.is_some_and(|id| deals.contains(&id)),
                        Some("contact") => on.is_some_and(|id| contacts.contains(&id)),
                        _ => false,
                    }
                });
            }
        }
        data.associated_contacts
            .retain(|deal, _| deals.contains(deal));
        data
    })
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    })
}

/// Percent-encodes everything but unreserved characters and the query's own `=` and `&`.
fn encode_query(q: &[u8]) -> String {
    let mut out = String::new();
    for &b in q {
        if b.is_ascii_alphanumeric() || b"-._~=&".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let sim = Sim::new(demo().clone(), SimConfig::default());
    let app = sellsync_sim::app(sim.clone());
    let mut session: Option<String> = None;
    for call in calls(data) {
        runtime().block_on(send(&app, &call, &mut session));
    }
});

async fn send(app: &axum::Router, call: &Call<'_>, session: &mut Option<String>) {
    let (mut method, template) = ROUTES[usize::from(call.route) % ROUTES.len()];
    if call.flags & 0x08 != 0 {
        method = METHODS[usize::from(call.flags >> 4 & 0x07) % METHODS.len()];
    }
    let mut path = template
        .replace("{id}", IDS[usize::from(call.id) % IDS.len()])
        .replace(
            "{contact_id}",
            IDS[usize::from(call.contact_id) % IDS.len()],
        )
        .replace("{session}", session.as_deref().unwrap_or("no-such-session"));
    if let Some(q) = call.query {
        path.push('?');
        path.push_str(&encode_query(q));
    }
    let mut req = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).expect("method"))
        .uri(&path);
    match call.flags & 0x03 {
        0 => req = req.header("authorization", format!("Bearer {}", token_for(ADMIN))),
        1 => req = req.header("authorization", format!("Bearer {}", token_for(USER))),
        2 => req = req.header("authorization", "Bearer not-a-token"),
        _ => {}
    }
    if call.flags & 0x04 != 0 {
        req = req.header("x-basecrm-device-uuid", "fuzz-device");
    }
    if !call.body.is_empty() {
        req = req.header("content-type", "application/json");
    }
    let Ok(req) = req.body(Body::from(call.body.to_vec())) else {
        return;
    };
    let res = app
        .clone()
        .oneshot(req)
        .await
        .unwrap_or_else(|e| match e {});
    let status = res.status();
    let bytes = res
        .into_body()
        .collect()
        .await
        .expect("an in-process body reads")
        .to_bytes();
    assert!(
        !status.is_server_error(),
        "{method} {path} answered {status} with no fault planned: {}",
        String::from_utf8_lossy(&bytes)
    );
    if status.is_client_error() {
        let envelope: Json = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{method} {path}: {status} body is not JSON ({e})"));
        assert!(
            envelope
                .get("errors")
                .and_then(Json::as_array)
                .is_some_and(|a| !a.is_empty()),
            "{method} {path}: {status} without an error envelope: {envelope}"
        );
    }
    if template == "/v2/sync/start" && status.is_success() {
        let body: Option<Json> = serde_json::from_slice(&bytes).ok();
        if let Some(id) = body
            .as_ref()
            .and_then(|b| b.pointer("/data/id"))
            .and_then(Json::as_str)
        {
            *session = Some(id.to_owned());
        }
    }
}
