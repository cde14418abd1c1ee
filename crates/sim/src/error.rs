//! API errors. A handler returns an [`ApiError`]; the envelope layer turns it into the Zendesk
//! error envelope with `meta.logref` equal to the response's `X-Request-Id`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use sellsync_api::{ErrorDetail, ErrorEnvelope, ErrorItem, ErrorItemMeta, ErrorsMeta};

/// An error answer: a status and one or more errors. Rendered by the envelope layer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {}", self.errors.iter().map(|e| e.code.as_str()).collect::<Vec<_>>().join(", "))]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// The errors to report (at least one).
    pub errors: Vec<ErrorDetail>,
}

fn detail(code: &str, message: &str, details: String) -> ErrorDetail {
    ErrorDetail {
        code: code.to_owned(),
        message: message.to_owned(),
        details: Some(details),
        resource: None,
        field: None,
    }
}

impl ApiError {
    /// One error with a status.
    pub fn new(status: StatusCode, code: &str, message: &str, details: impl Into<String>) -> Self {
        Self {
            status,
            errors: vec![detail(code, message, details.into())],
        }
    }

    /// 400 `invalid_param`: a bad query or path parameter.
    pub fn invalid_param(details: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_param",
            "invalid parameter",
            details,
        )
    }

    /// 400 `invalid_payload`: a body that is not a `{"data": {...}}` JSON document.
    pub fn invalid_payload(details: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_payload",
            "invalid payload",
            details,
        )
    }

    /// 400 `invalid_header`.
    pub fn invalid_header(details: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_header",
            "invalid header",
            details,
        )
    }

    /// 401 `unauthorized`.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "unauthorized",
            "Required access token is missing, malformed, expired, or invalid.",
        )
    }

    /// 403 `forbidden`: the visibility rule does not let this user change the record.
    pub fn forbidden(details: impl Into<String>) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "insufficient permissions",
            details,
        )
    }

    /// 404 `not_found`: no such record.
    pub fn not_found(resource: &str, id: u64) -> Self {
        let mut e = Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "not found",
            format!("The {resource} with id {id} was not found."),
        );
        e.errors[0].resource = Some(resource.to_owned());
        e
    }

    /// 404 `incorrect_path`: no such route for this method.
    pub fn incorrect_path(method: &str, path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "incorrect_path",
            "path was not found",
            format!("Requested path at '{path}' was not found using the HTTP method '{method}'."),
        )
    }

    /// 413 `request_too_large`.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            "request body too large",
            format!("The request body exceeds {limit} bytes."),
        )
    }

    /// 429 `rate_limit_exceeded`.
    pub fn rate_limited(details: impl Into<String>) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_exceeded",
            "rate limit exceeded",
            details,
        )
    }

    /// A 5xx: `server_error` for 500, `temporarily_unavailable` otherwise.
    pub fn server(status: StatusCode) -> Self {
        let code = if status == StatusCode::INTERNAL_SERVER_ERROR {
            "server_error"
        } else {
            "temporarily_unavailable"
        };
        Self::new(status, code, "server error", "Injected fault.")
    }

    /// The generic envelope for a status produced outside the handlers.
    pub fn from_status(status: StatusCode) -> Self {
        let code = match status.as_u16() {
            400 => "invalid_param",
            401 => "unauthorized",
            403 => "forbidden",
            404 => "incorrect_path",
            413 => "request_too_large",
            422 => "incorrect_payload",
            429 => "rate_limit_exceeded",
            500 => "server_error",
            _ if status.is_server_error() => "temporarily_unavailable",
            _ => "invalid_request",
        };
        let reason = status.canonical_reason().unwrap_or("error");
        Self::new(status, code, reason, reason.to_owned())
    }

    /// The envelope, with `logref`.
    pub fn envelope(&self, logref: &str) -> ErrorEnvelope {
        let reason = self.status.canonical_reason().unwrap_or("");
        ErrorEnvelope {
            errors: self
                .errors
                .iter()
                .map(|e| ErrorItem {
                    error: e.clone(),
                    meta: ErrorItemMeta {
                        kind: "error".into(),
                        links: None,
                    },
                })
                .collect(),
            meta: ErrorsMeta {
                kind: "errors".into(),
                http_status: format!("{} {reason}", self.status.as_u16())
                    .trim_end()
                    .to_owned(),
                logref: logref.to_owned(),
                links: None,
            },
        }
    }
}

/// A 422 resource error (API doc §3.2): `code` on one attribute, with its JSON pointer.
pub(crate) fn field_error(resource: &str, field: &str, code: &str, details: String) -> ErrorDetail {
    let message = match code {
        "unknown" => "unknown attribute",
        "missing" => "attribute is missing",
        "blank" => "can't be blank",
        "invalid_type" => "attribute has an invalid type",
        "already_exists" => "already exists",
        _ => "attribute value is incorrect",
    };
    ErrorDetail {
        code: code.to_owned(),
        message: message.to_owned(),
        details: Some(details),
        resource: Some(resource.to_owned()),
        field: Some(field.to_owned()),
    }
}

/// Marks a response whose body the envelope layer must render (it knows the request id).
#[derive(Debug, Clone)]
pub(crate) struct PendingError(pub(crate) ApiError);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = self.status.into_response();
        res.extensions_mut().insert(PendingError(self));
        res
    }
}
