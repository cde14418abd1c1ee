//! The adapter boundary: what the bridge asks of a CRM and what it gets back, with no wire
//! format. A Zendesk Sell adapter ([`crate::zendesk`]) turns these into HTTP and back.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

/// A kind of CRM object the bridge reads or writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resource {
    /// Contacts (people and organizations).
    Contact,
    /// Deals.
    Deal,
    /// Notes.
    Note,
    /// Tasks.
    Task,
    /// Calls.
    Call,
    /// Pipelines (catalog).
    Pipeline,
    /// Stages (catalog).
    Stage,
    /// Users (catalog).
    User,
    /// Loss reasons (catalog).
    LossReason,
    /// Deal sources (catalog).
    DealSource,
    /// Deal custom field definitions (catalog).
    DealCustomFields,
    /// Contact custom field definitions (catalog).
    ContactCustomFields,
}

impl Resource {
    /// Push order: contacts before deals before notes, tasks and calls.
    pub fn push_rank(self) -> u8 {
        match self {
            Resource::Contact => 0,
            Resource::Deal => 1,
            _ => 2,
        }
    }
}

/// One request to the CRM. Bodies hold only the fields to send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum CrmRequest {
    /// One page of a list, 1-based, with equality filters and an optional sort.
    List {
        /// What to list.
        resource: Resource,
        /// Page number from 1.
        page: u32,
        /// Items per page (1 to 100).
        per_page: u32,
        /// Equality filters, in order.
        filters: Vec<(String, String)>,
        /// `field` or `field:desc`.
        sort_by: Option<String>,
    },
    /// One object.
    Get {
        /// Its kind.
        resource: Resource,
        /// Its CRM id.
        id: u64,
    },
    /// Create an object with these attributes.
    Create {
        /// Its kind.
        resource: Resource,
        /// Attributes.
        body: Map<String, Json>,
    },
    /// Change only the given attributes.
    Update {
        /// Its kind.
        resource: Resource,
        /// Its CRM id.
        id: u64,
        /// Attributes to change.
        body: Map<String, Json>,
    },
    /// Delete an object.
    Delete {
        /// Its kind.
        resource: Resource,
        /// Its CRM id.
        id: u64,
    },
    /// The user the token belongs to (`/v2/users/self`): whom the bridge writes as.
    CurrentUser,
    /// Start a sync session for a device.
    SyncStart {
        /// The persisted device UUID.
        device: String,
    },
    /// Fetch the next page of a sync session's queue.
    SyncFetch {
        /// The persisted device UUID.
        device: String,
        /// The session.
        session: String,
    },
    /// Acknowledge items whose changes are durable.
    SyncAck {
        /// The persisted device UUID.
        device: String,
        /// The items' ack keys.
        keys: Vec<String>,
    },
}

/// One object from a sync queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncItem {
    /// Its kind, when the bridge knows it (`None` for kinds it ignores).
    pub resource: Option<Resource>,
    /// Deleted in the CRM: `data` holds only the id.
    pub deleted: bool,
    /// The key to acknowledge once the change is durable.
    pub ack_key: String,
    /// The object.
    pub data: Json,
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CrmResponse {
    /// A page of a list.
    Page {
        /// The objects, unwrapped.
        items: Vec<Json>,
        /// Whether another page follows.
        more: bool,
    },
    /// One object (get, create, update).
    One(Json),
    /// Deleted.
    Deleted,
    /// A sync session, or `None` when there is nothing to sync.
    SyncSession(Option<String>),
    /// Queue items; an empty list means drained.
    SyncItems(Vec<SyncItem>),
    /// Acknowledged.
    Acked,
}

/// Why a request failed. `Transport` means the outcome is unknown: the request may have been
/// applied (a dropped connection after sending).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum CrmError {
    /// 422: the CRM refused a value.
    #[error("refused: {message}{}", field.as_deref().map(|f| format!(" ({f})")).unwrap_or_default())]
    Validation {
        /// The attribute, without the `/data/` pointer prefix, when the CRM named one.
        field: Option<String>,
        /// The CRM's message.
        message: String,
    },
    /// 401: the token is missing, expired or invalid.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// 403: not allowed.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// 404.
    #[error("not found: {0}")]
    NotFound(String),
    /// 429.
    #[error("rate limited")]
    RateLimited,
    /// 5xx.
    #[error("server error {status}: {message}")]
    Server {
        /// The status.
        status: u16,
        /// The message, if any.
        message: String,
    },
    /// Another 4xx.
    #[error("request refused {status}: {message}")]
    Request {
        /// The status.
        status: u16,
        /// The message.
        message: String,
    },
    /// A body that is not what the API promises.
    #[error("malformed response: {0}")]
    Malformed(String),
    /// The connection failed; whether the request was applied is unknown.
    #[error("transport: {0}")]
    Transport(String),
}

impl CrmError {
    /// Whether the same request may simply be sent again later (after a backoff).
    pub fn is_transient(&self) -> bool {
        matches!(self, CrmError::RateLimited | CrmError::Server { .. })
    }
}
