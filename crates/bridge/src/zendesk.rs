//! Zendesk Sell v2 as HTTP descriptions: a [`CrmRequest`] becomes an [`HttpRequest`] (method,
//! path, query, `{"data": ...}` body) and an [`HttpResponse`] becomes a [`CrmResponse`] or a
//! typed [`CrmError`]. No I/O: an HTTP client only moves these descriptions. Bodies from the
//! network never panic the parser.

use sellsync_api::{Collection, ErrorEnvelope, Item, SyncEventType, SyncSession};
use serde_json::{Value as Json, json};

use crate::crm::{CrmError, CrmRequest, CrmResponse, Resource, SyncItem};

/// An HTTP method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET.
    Get,
    /// POST.
    Post,
    /// PUT.
    Put,
    /// DELETE.
    Delete,
}

impl Method {
    /// The method's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
        }
    }
}

/// What to send. `path` starts with `/v2/`; the query is not yet encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// The method.
    pub method: Method,
    /// The path under the base URL.
    pub path: String,
    /// Query parameters, in order, unencoded.
    pub query: Vec<(String, String)>,
    /// Extra headers (besides authorization, accept and user agent, which the client adds).
    pub headers: Vec<(String, String)>,
    /// A JSON body, for POST and PUT.
    pub body: Option<Vec<u8>>,
}

/// What came back.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// Headers, names in any case.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

/// The path segment of a resource.
pub fn resource_path(resource: Resource) -> &'static str {
    match resource {
        Resource::Contact => "contacts",
        Resource::Deal => "deals",
        Resource::Note => "notes",
        Resource::Task => "tasks",
        Resource::Call => "calls",
        Resource::Pipeline => "pipelines",
        Resource::Stage => "stages",
        Resource::User => "users",
        Resource::LossReason => "loss_reasons",
        Resource::DealSource => "deal_sources",
        Resource::DealCustomFields => "deal/custom_fields",
        Resource::ContactCustomFields => "contact/custom_fields",
    }
}

fn resource_of_type(t: &str) -> Option<Resource> {
    Some(match t {
        "contact" => Resource::Contact,
        "deal" => Resource::Deal,
        "note" => Resource::Note,
        "task" => Resource::Task,
        "call" => Resource::Call,
        _ => return None,
    })
}

const DEVICE_HEADER: &str = "X-Basecrm-Device-UUID";

fn body(data: Json) -> Option<Vec<u8>> {
    // A JSON value always serialises.
    Some(serde_json::to_vec(&json!({ "data": data })).unwrap_or_default())
}

/// The HTTP request for `req`.
pub fn request(req: &CrmRequest) -> HttpRequest {
    let mut out = HttpRequest {
        method: Method::Get,
        path: String::new(),
        query: Vec::new(),
        headers: Vec::new(),
        body: None,
    };
    match req {
        CrmRequest::List {
            resource,
            page,
            per_page,
            filters,
            sort_by,
        } => {
            out.path = format!("/v2/{}", resource_path(*resource));
            out.query.push(("page".into(), page.to_string()));
            out.query.push(("per_page".into(), per_page.to_string()));
            if let Some(s) = sort_by {
                out.query.push(("sort_by".into(), s.clone()));
            }
            out.query.extend(filters.iter().cloned());
        }
        CrmRequest::Get { resource, id } => {
            out.path = format!("/v2/{}/{id}", resource_path(*resource));
        }
        CrmRequest::Create { resource, body: b } => {
            out.method = Method::Post;
            out.path = format!("/v2/{}", resource_path(*resource));
            out.body = body(Json::Object(b.clone()));
        }
        CrmRequest::Update {
            resource,
            id,
            body: b,
        } => {
            out.method = Method::Put;
            out.path = format!("/v2/{}/{id}", resource_path(*resource));
            out.body = body(Json::Object(b.clone()));
        }
        CrmRequest::CurrentUser => {
            out.path = "/v2/users/self".into();
        }
        CrmRequest::Delete { resource, id } => {
            out.method = Method::Delete;
            out.path = format!("/v2/{}/{id}", resource_path(*resource));
        }
        CrmRequest::SyncStart { device } => {
            out.method = Method::Post;
            out.path = "/v2/sync/start".into();
            out.headers.push((DEVICE_HEADER.into(), device.clone()));
        }
        CrmRequest::SyncFetch { device, session } => {
            out.path = format!("/v2/sync/{session}/queues/main");
            out.headers.push((DEVICE_HEADER.into(), device.clone()));
        }
        CrmRequest::SyncAck { device, keys } => {
            out.method = Method::Post;
            out.path = "/v2/sync/ack".into();
            out.headers.push((DEVICE_HEADER.into(), device.clone()));
            out.body = body(json!({ "ack_keys": keys }));
        }
    }
    out
}

fn malformed(e: impl std::fmt::Display) -> CrmError {
    CrmError::Malformed(e.to_string())
}

/// The first error of an error envelope: its field (the JSON pointer without `/data/`) and its
/// message (with the details when given). A body that is not an envelope gives its text.
fn first_error(body: &[u8]) -> (Option<String>, String) {
    match serde_json::from_slice::<ErrorEnvelope>(body) {
        Ok(env) => match env.errors.into_iter().next() {
            Some(item) => {
                let e = item.error;
                let field = e.field.map(|f| {
                    f.trim_start_matches("/data/")
                        .trim_start_matches('/')
                        .to_owned()
                });
                let message = match e.details {
                    Some(d) if !d.is_empty() && d != e.message => format!("{}: {d}", e.message),
                    _ if e.message.is_empty() => e.code,
                    _ => e.message,
                };
                (field, message)
            }
            None => (None, env.meta.http_status),
        },
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            (None, text.chars().take(200).collect())
        }
    }
}

/// Reads the answer to `req`.
pub fn response(req: &CrmRequest, resp: &HttpResponse) -> Result<CrmResponse, CrmError> {
    let status = resp.status;
    if !(200..300).contains(&status) {
        let (field, message) = first_error(&resp.body);
        return Err(match status {
            422 => CrmError::Validation { field, message },
            401 => CrmError::Unauthorized(message),
            403 => CrmError::Forbidden(message),
            404 => CrmError::NotFound(message),
            429 => CrmError::RateLimited,
            500..=599 => CrmError::Server { status, message },
            _ => CrmError::Request { status, message },
        });
    }
    match req {
        CrmRequest::List { .. } => {
            let page: Collection<Json> = serde_json::from_slice(&resp.body).map_err(malformed)?;
            let more = page
                .meta
                .links
                .as_ref()
                .is_some_and(|l| l.next_page.is_some());
            Ok(CrmResponse::Page {
                items: page.items.into_iter().map(|i| i.data).collect(),
                more,
            })
        }
        CrmRequest::Get { .. }
        | CrmRequest::Create { .. }
        | CrmRequest::Update { .. }
        | CrmRequest::CurrentUser => {
            let item: Item<Json> = serde_json::from_slice(&resp.body).map_err(malformed)?;
            if !item.data.is_object() || item.data.get("id").and_then(Json::as_u64).is_none() {
                return Err(malformed("an object without an id"));
            }
            Ok(CrmResponse::One(item.data))
        }
        CrmRequest::Delete { .. } => Ok(CrmResponse::Deleted),
        CrmRequest::SyncStart { .. } => {
            if status == 204 {
                return Ok(CrmResponse::SyncSession(None));
            }
            let item: Item<SyncSession> = serde_json::from_slice(&resp.body).map_err(malformed)?;
            if item.data.id.is_empty() {
                return Err(malformed("a sync session without an id"));
            }
            Ok(CrmResponse::SyncSession(Some(item.data.id)))
        }
        CrmRequest::SyncFetch { .. } => {
            if status == 204 || resp.body.is_empty() {
                return Ok(CrmResponse::SyncItems(Vec::new()));
            }
            let page: Collection<Json> = serde_json::from_slice(&resp.body).map_err(malformed)?;
            let mut items = Vec::new();
            for item in page.items {
                let sync = item
                    .meta
                    .sync
                    .ok_or_else(|| malformed("a queue item without meta.sync"))?;
                items.push(SyncItem {
                    resource: resource_of_type(&item.meta.kind),
                    deleted: sync.event_type == SyncEventType::Deleted,
                    ack_key: sync.ack_key,
                    data: item.data,
                });
            }
            Ok(CrmResponse::SyncItems(items))
        }
        CrmRequest::SyncAck { .. } => Ok(CrmResponse::Acked),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    fn resp(status: u16, body: &str) -> HttpResponse {
        HttpResponse {
            status,
            headers: Vec::new(),
            body: body.as_bytes().to_vec(),
        }
    }

    fn update() -> CrmRequest {
        let mut body = Map::new();
        body.insert("value".into(), json!("12.50"));
        CrmRequest::Update {
            resource: Resource::Deal,
            id: 7,
            body,
        }
    }

    #[test]
    fn an_update_is_a_put_with_only_the_given_fields_in_an_envelope() {
        let r = request(&update());
        assert_eq!(r.method, Method::Put);
        assert_eq!(r.path, "/v2/deals/7");
        let body: Json = serde_json::from_slice(&r.body.unwrap()).unwrap();
        assert_eq!(body, json!({"data": {"value": "12.50"}}));
    }

    #[test]
    fn a_list_carries_paging_sort_and_filters() {
        let r = request(&CrmRequest::List {
            resource: Resource::Note,
            page: 2,
            per_page: 100,
            filters: vec![("resource_id".into(), "5".into())],
            sort_by: Some("updated_at:desc".into()),
        });
        assert_eq!(r.path, "/v2/notes");
        assert_eq!(
            r.query,
            vec![
                ("page".into(), "2".into()),
                ("per_page".into(), "100".into()),
                ("sort_by".into(), "updated_at:desc".into()),
                ("resource_id".into(), "5".into())
            ]
        );
    }

    #[test]
    fn a_422_gives_the_field_and_message() {
        let body = r#"{"errors":[{"error":{"code":"incorrect_value","message":"attribute value is incorrect","resource":"deal","field":"/data/stage_id"},"meta":{"type":"error"}}],"meta":{"type":"errors","http_status":"422 Unprocessable Entity","logref":"x"}}"#;
        assert_eq!(
            response(&update(), &resp(422, body)),
            Err(CrmError::Validation {
                field: Some("stage_id".into()),
                message: "attribute value is incorrect".into()
            })
        );
    }

    #[test]
    fn statuses_map_to_typed_errors() {
        let u = update();
        assert!(matches!(
            response(&u, &resp(401, "")),
            Err(CrmError::Unauthorized(_))
        ));
        assert!(matches!(
            response(&u, &resp(403, "{}")),
            Err(CrmError::Forbidden(_))
        ));
        assert!(matches!(
            response(&u, &resp(404, "nope")),
            Err(CrmError::NotFound(_))
        ));
        assert_eq!(response(&u, &resp(429, "")), Err(CrmError::RateLimited));
        assert!(matches!(
            response(&u, &resp(503, "down")),
            Err(CrmError::Server { status: 503, .. })
        ));
        assert!(matches!(
            response(&u, &resp(400, "bad")),
            Err(CrmError::Request { status: 400, .. })
        ));
    }

    #[test]
    fn malformed_bodies_are_errors_not_panics() {
        let u = update();
        for body in [
            "",
            "{",
            "[]",
            "{\"data\": 3}",
            "{\"data\": {}}",
            "\u{0}\u{ff}",
            "{\"data\":{\"id\":-1}}",
        ] {
            assert!(
                matches!(response(&u, &resp(200, body)), Err(CrmError::Malformed(_))),
                "{body:?}"
            );
        }
        let list = CrmRequest::List {
            resource: Resource::Deal,
            page: 1,
            per_page: 1,
            filters: vec![],
            sort_by: None,
        };
        assert!(matches!(
            response(&list, &resp(200, "{\"items\": 1}")),
            Err(CrmError::Malformed(_))
        ));
    }

    #[test]
    fn a_page_says_whether_more_follow() {
        let list = CrmRequest::List {
            resource: Resource::Deal,
            page: 1,
            per_page: 1,
            filters: vec![],
            sort_by: None,
        };
        let body = r#"{"items":[{"data":{"id":1},"meta":{"type":"deal"}}],"meta":{"type":"collection","count":1,"links":{"next_page":"x"}}}"#;
        assert_eq!(
            response(&list, &resp(200, body)),
            Ok(CrmResponse::Page {
                items: vec![json!({"id": 1})],
                more: true
            })
        );
    }

    #[test]
    fn sync_queue_items_carry_their_ack_keys() {
        let req = CrmRequest::SyncFetch {
            device: "d".into(),
            session: "s".into(),
        };
        let body = r#"{"items":[{"data":{"id":3},"meta":{"type":"deal","sync":{"event_type":"deleted","ack_key":"Deal-3-2","revision":2}}}],"meta":{"type":"collection","count":1}}"#;
        let Ok(CrmResponse::SyncItems(items)) = response(&req, &resp(200, body)) else {
            panic!("not items")
        };
        assert_eq!(items[0].ack_key, "Deal-3-2");
        assert!(items[0].deleted);
        assert_eq!(items[0].resource, Some(Resource::Deal));
        assert_eq!(
            response(&req, &resp(204, "")),
            Ok(CrmResponse::SyncItems(vec![]))
        );
    }
}
