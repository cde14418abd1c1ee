//! The error envelope (API doc §3.1).

use serde::{Deserialize, Serialize};

/// `{"errors": [...], "meta": {"type": "errors", "http_status": "422 Unprocessable Entity", "logref": "..."}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorEnvelope {
    /// One entry per problem found.
    #[serde(default)]
    pub errors: Vec<ErrorItem>,
    /// Status line and request id.
    pub meta: ErrorsMeta,
}

/// One error of the envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorItem {
    /// What went wrong.
    pub error: ErrorDetail,
    /// `{"type": "error"}` plus an optional documentation link.
    #[serde(default)]
    pub meta: ErrorItemMeta,
}

/// The body of one error.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Machine code: `invalid_param`, `unauthorized`, `not_found`, `blank`, `unknown`, ...
    pub code: String,
    /// Human message (localised by the real service).
    #[serde(default)]
    pub message: String,
    /// Longer English explanation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
    /// Resource type the error is about (resource errors only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// JSON pointer to the offending field, e.g. `/data/name` (resource errors only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// The `meta` of one error.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorItemMeta {
    /// Always `error`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Documentation link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub links: Option<ErrorLinks>,
}

/// Documentation links of an error.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorLinks {
    /// URL of the error documentation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub more_info: Option<String>,
}

/// The top-level `meta` of an error envelope.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorsMeta {
    /// `errors` (one recorded real response says `collection`).
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Status as a string, code and reason: `"422 Unprocessable Entity"`.
    #[serde(default)]
    pub http_status: String,
    /// Equals the response's `X-Request-Id`. Real responses sometimes lack it, so it reads as empty.
    #[serde(default)]
    pub logref: String,
    /// Documentation link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub links: Option<ErrorLinks>,
}
