//! Pull through the Sync API as a step machine: start a session for the persisted device UUID,
//! fetch the queue page by page, and acknowledge a page's items only after the executor says
//! their changes are durable ([`SyncRun::durable`]). Items not acknowledged come again in the
//! next session, so a crash between applying and acknowledging repeats work, never loses it
//! (applying a version twice writes nothing the second time: only fields that differ from the
//! shadow are written).

use serde::{Deserialize, Serialize};

use crate::crm::{CrmError, CrmRequest, CrmResponse, SyncItem};

/// Where the run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum State {
    Start,
    Fetch,
    /// Items were handed out; waiting for [`SyncRun::durable`].
    Applying,
    Ack,
    Done,
}

/// What an answer meant.
#[derive(Debug, Clone, PartialEq)]
pub enum SyncEvent {
    /// Apply these (pull), persist documents and shadows, then call [`SyncRun::durable`] with
    /// their ack keys.
    Items(Vec<SyncItem>),
    /// Wait before the next request (429, 5xx, transport), in ms.
    Backoff(u64),
    /// The queue is drained.
    Done,
    /// A failure the run cannot get past (401, 403, malformed); start again later.
    Failed(CrmError),
}

/// A Sync API pull in progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncRun {
    device: String,
    session: Option<String>,
    acks: Vec<String>,
    state: State,
    attempt: u32,
}

impl SyncRun {
    /// A run for the persisted device UUID.
    pub fn new(device: &str) -> SyncRun {
        SyncRun {
            device: device.to_owned(),
            session: None,
            acks: Vec::new(),
            state: State::Start,
            attempt: 0,
        }
    }

    /// Whether the queue is drained (or the run failed).
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The next request; `None` while items are being applied or when done.
    pub fn next_request(&self) -> Option<CrmRequest> {
        let device = self.device.clone();
        match (self.state, &self.session) {
            (State::Start, _) => Some(CrmRequest::SyncStart { device }),
            (State::Fetch, Some(session)) => Some(CrmRequest::SyncFetch {
                device,
                session: session.clone(),
            }),
            (State::Ack, _) => Some(CrmRequest::SyncAck {
                device,
                keys: self.acks.clone(),
            }),
            _ => None,
        }
    }

    /// The items with these keys are durable: acknowledge them next.
    pub fn durable(&mut self, keys: Vec<String>) {
        self.acks.extend(keys);
        self.state = if self.acks.is_empty() {
            State::Fetch
        } else {
            State::Ack
        };
    }

    /// Takes the answer to the last request.
    pub fn on_result(&mut self, result: Result<CrmResponse, CrmError>, jitter: f64) -> SyncEvent {
        match result {
            Err(e) if e.is_transient() || matches!(e, CrmError::Transport(_)) => {
                self.attempt += 1;
                SyncEvent::Backoff(crate::push::backoff_ms(
                    self.attempt.saturating_sub(1),
                    200,
                    30_000,
                    jitter,
                ))
            }
            Err(e) => {
                self.state = State::Done;
                SyncEvent::Failed(e)
            }
            Ok(resp) => {
                self.attempt = 0;
                self.on_answer(resp)
            }
        }
    }

    fn on_answer(&mut self, resp: CrmResponse) -> SyncEvent {
        match (self.state, resp) {
            (State::Start, CrmResponse::SyncSession(None)) => {
                self.state = State::Done;
                SyncEvent::Done
            }
            (State::Start, CrmResponse::SyncSession(Some(id))) => {
                self.session = Some(id);
                self.state = State::Fetch;
                SyncEvent::Items(Vec::new())
            }
            (State::Fetch, CrmResponse::SyncItems(items)) if items.is_empty() => {
                self.state = State::Done;
                SyncEvent::Done
            }
            (State::Fetch, CrmResponse::SyncItems(items)) => {
                self.state = State::Applying;
                SyncEvent::Items(items)
            }
            (State::Ack, CrmResponse::Acked) => {
                self.acks.clear();
                self.state = State::Fetch;
                SyncEvent::Items(Vec::new())
            }
            (_, other) => {
                self.state = State::Done;
                SyncEvent::Failed(CrmError::Malformed(format!("unexpected answer {other:?}")))
            }
        }
    }
}
