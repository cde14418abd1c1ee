//! The Sync API (API doc §7) over [`SimData`]: sessions per device, the latest state of every
//! object the device has not acknowledged at its current revision, ack keys `Type-id-revision`.
//! Pure: the caller holds the lock and supplies the session id.

use std::collections::HashMap;

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::error::{ApiError, field_error};
use crate::schema::{ALL_KINDS, Kind};
use crate::store::SimData;

/// An open session: the objects to deliver, fixed at start, and how far the device got.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    device: String,
    queue: Vec<(Kind, u64)>,
    cursor: usize,
}

/// Open sessions by id. Invariant: at most one per device (a new start replaces it).
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    open: HashMap<String, Session>,
}

fn object_key(kind: Kind, id: u64) -> String {
    format!("{}-{id}", kind.ack_type())
}

/// Objects whose current revision the device has not acknowledged. Deletions are only sent for
/// objects the device acknowledged at some revision (it cannot hold the others).
fn pending(data: &SimData, device: &str) -> Vec<(Kind, u64)> {
    let acks = data.acks.get(device);
    let acked = |kind, id| acks.and_then(|a| a.get(&object_key(kind, id))).copied();
    let mut out = Vec::new();
    for kind in ALL_KINDS {
        for (id, row) in data.tables.get(&kind).into_iter().flatten() {
            if acked(kind, *id).is_none_or(|a| a < row.version) {
                out.push((kind, *id));
            }
        }
        for (id, rev) in data.tombstones.get(&kind).into_iter().flatten() {
            if acked(kind, *id).is_some_and(|a| a < *rev) {
                out.push((kind, *id));
            }
        }
    }
    out
}

impl Sessions {
    /// `POST /v2/sync/start`: `Ok(None)` is 204 (nothing to sync), else the 201 body.
    pub(crate) fn start(
        &mut self,
        data: &SimData,
        device: &str,
        session_id: String,
        page_size: usize,
        max_sessions: usize,
    ) -> Result<Option<Value>, ApiError> {
        self.open.retain(|_, s| s.device != device);
        let queue = pending(data, device);
        if queue.is_empty() {
            return Ok(None);
        }
        if self.open.len() >= max_sessions {
            return Err(ApiError::rate_limited(format!(
                "at most {max_sessions} synchronization sessions may be active"
            )));
        }
        let total = queue.len();
        let pages = total.div_ceil(page_size.max(1));
        self.open.insert(
            session_id.clone(),
            Session {
                device: device.to_owned(),
                queue,
                cursor: 0,
            },
        );
        Ok(Some(json!({
            "data": {
                "id": session_id,
                "queues": [{"data": {"name": "main", "pages": pages, "total_count": total},
                            "meta": {"type": "sync_queue"}}]
            },
            "meta": {"type": "sync_session"}
        })))
    }

    /// `GET /v2/sync/:id/queues/main`: `Ok(None)` is 204 (drained; the session ends).
    pub(crate) fn fetch(
        &mut self,
        data: &SimData,
        device: &str,
        session_id: &str,
        page_size: usize,
    ) -> Result<Option<Value>, ApiError> {
        let not_found = || {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "not found",
                format!("No open synchronization session {session_id} for this device."),
            )
        };
        let session = self.open.get_mut(session_id).ok_or_else(not_found)?;
        if session.device != device {
            return Err(not_found());
        }
        let acks = data.acks.get(device);
        let mut items = Vec::new();
        while items.len() < page_size.max(1) && session.cursor < session.queue.len() {
            let (kind, id) = session.queue[session.cursor];
            session.cursor += 1;
            let acked = acks.and_then(|a| a.get(&object_key(kind, id))).copied();
            let (body, rev, event) = match data.row(kind, id) {
                Some(row) => {
                    let event = if acked.is_some() {
                        "updated"
                    } else {
                        "created"
                    };
                    (Value::Object(row.data.clone()), row.version, event)
                }
                None => match data.tombstones.get(&kind).and_then(|t| t.get(&id)) {
                    Some(rev) => (json!({"id": id}), *rev, "deleted"),
                    None => continue,
                },
            };
            items.push(json!({
                "data": body,
                "meta": {"type": kind.sync_type(), "sync": {
                    "event_type": event,
                    "ack_key": format!("{}-{id}-{rev}", kind.ack_type()),
                    "revision": rev,
                }}
            }));
        }
        if items.is_empty() {
            self.open.remove(session_id);
            return Ok(None);
        }
        let left = session.queue.len() - session.cursor;
        Ok(Some(json!({
            "items": items,
            "meta": {"type": "collection", "count": items.len(), "count_left": left, "failed_objects": []}
        })))
    }

    /// Number of open sessions.
    pub(crate) fn len(&self) -> usize {
        self.open.len()
    }
}

/// `POST /v2/sync/ack`: records the keys; all or nothing. A key must read `Type-id-revision`
/// with a known type; keys of objects that no longer exist are accepted and kept.
pub(crate) fn ack(data: &mut SimData, device: &str, keys: &[Value]) -> Result<(), ApiError> {
    let mut parsed = Vec::with_capacity(keys.len());
    let mut errors = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let key = k.as_str().unwrap_or("");
        let mut parts = key.rsplitn(3, '-');
        let rev = parts.next().and_then(|r| r.parse::<u64>().ok());
        let id = parts.next().and_then(|r| r.parse::<u64>().ok());
        let kind = parts.next().and_then(Kind::from_ack_type);
        match (kind, id, rev) {
            (Some(kind), Some(id), Some(rev)) => parsed.push((object_key(kind, id), rev)),
            _ => errors.push(field_error(
                "sync",
                &format!("/data/ack_keys/{i}"),
                "incorrect_value",
                format!("{k} is not an ack key (Type-id-revision)."),
            )),
        }
    }
    if !errors.is_empty() {
        return Err(ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            errors,
        });
    }
    let acks = data.acks.entry(device.to_owned()).or_default();
    for (key, rev) in parsed {
        let slot = acks.entry(key).or_insert(0);
        *slot = (*slot).max(rev);
    }
    Ok(())
}
