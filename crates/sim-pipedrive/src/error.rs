//! Pipedrive's error answers: `{"success": false, "error", "error_info", "data": null,
//! "additional_data": null}` with the matching status, plus the few endpoint variants (the 401
//! of the gateway, the v1 webhooks endpoint's `errors` object).

use axum::http::{HeaderValue, StatusCode, header::CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

const ERROR_INFO: &str = "Please check developers.pipedrive.com";

/// An error answer: a status and a Pipedrive-shaped JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct PdError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The JSON body.
    pub body: Value,
}

impl PdError {
    /// The standard envelope with `message` as `error`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            body: json!({
                "success": false,
                "error": message.into(),
                "error_info": ERROR_INFO,
                "data": null,
                "additional_data": null,
            }),
        }
    }

    /// 400 Bad Request.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404 for an unknown id, as in the spec's example.
    pub fn not_found() -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            body: json!({
                "success": false,
                "error": "Entity was not found",
                "error_info": "Object was not found.",
                "data": null,
                "additional_data": null,
            }),
        }
    }

    /// 404 for a path no route serves.
    pub fn unknown_route() -> Self {
        Self::new(StatusCode::NOT_FOUND, "Unknown method .")
    }

    /// 405 for a known path with a method it does not serve.
    pub fn method_not_allowed() -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed")
    }

    /// 401 as the gateway answers a missing or wrong token.
    pub fn unauthorized() -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            body: json!({
                "success": false,
                "error": "unauthorized access",
                "errorCode": 401,
                "error_info": ERROR_INFO,
            }),
        }
    }

    /// 429 when the burst window or the daily budget is spent.
    pub fn rate_limited(daily: bool) -> Self {
        let msg = if daily {
            "Daily API token budget has been exhausted"
        } else {
            "Request over limit"
        };
        Self::new(StatusCode::TOO_MANY_REQUESTS, msg)
    }

    /// 413 for a body over the configured limit.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("Request body is larger than {limit} bytes"),
        )
    }

    /// 403 (e.g. a non-admin changing a note's author).
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    /// The v1 webhooks endpoint's validation error: `errors: {field: [message]}`.
    pub(crate) fn webhook(status: StatusCode, field: &str, message: &str) -> Self {
        Self {
            status,
            body: json!({"status": "error", "success": false, "errors": {field: [message]}}),
        }
    }
}

impl std::fmt::Display for PdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.body)
    }
}

impl std::error::Error for PdError {}

/// A JSON answer with Pipedrive's content type.
pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut res = (status, body.to_string()).into_response();
    res.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    res
}

impl IntoResponse for PdError {
    fn into_response(self) -> Response {
        json_response(self.status, &self.body)
    }
}
