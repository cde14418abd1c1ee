//! Pull through the Sync API as a step machine: start a session for the persisted device UUID,
//! fetch the queue page by page, and acknowledge a page's items only after the executor says
//! their changes are durable ([`SyncRun::durable`]). Items not acknowledged come again in the
//! next session, so a crash between applying and acknowledging repeats work, never loses it
//! (applying a version twice writes nothing the second time: only fields that differ from the
//! shadow are written).

use serde::{Deserialize, Serialize};

use crate::crm::{CrmError, CrmRequest, CrmResponse, SyncItem};
use crate::run::Limits;

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
    /// Wait before the next request (429, 5xx, transport), in ms; after `max_attempts` of
    /// them in a row, `Failed` instead.
    Backoff(u64),
    /// The queue is drained.
    Done,
    /// A failure the run cannot get past (401, 403, malformed, or `max_attempts` transient
    /// failures in a row); start again later.
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
    /// Backoff and retries (the budget is not used: a pull is as long as the queue).
    #[serde(default)]
    limits: Limits,
}

impl SyncRun {
    /// A run for the persisted device UUID, with the default backoff.
    pub fn new(device: &str) -> SyncRun {
        SyncRun::with_limits(device, Limits::default())
    }

    /// A run that backs off from `limits.base_ms` up to `limits.cap_ms` and gives up with the
    /// last error after `limits.max_attempts` transient failures in a row (about 50 s with the
    /// defaults), so that an outage ends the pull and shows in its result instead of holding
    /// it for ever.
    pub fn with_limits(device: &str, limits: Limits) -> SyncRun {
        SyncRun {
            device: device.to_owned(),
            session: None,
            acks: Vec::new(),
            state: State::Start,
            attempt: 0,
            limits,
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
                if self.attempt >= self.limits.max_attempts {
                    // The run ends and says why; the executor's next pull starts again.
                    self.state = State::Done;
                    return SyncEvent::Failed(e);
                }
                self.attempt += 1;
                SyncEvent::Backoff(crate::push::backoff_ms(
                    self.attempt.saturating_sub(1),
                    self.limits.base_ms,
                    self.limits.cap_ms,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_ends_the_run_with_its_error_after_bounded_retries() {
        let mut run = SyncRun::new("d");
        for _ in 0..Limits::default().max_attempts {
            let event = run.on_result(Err(CrmError::Transport("refused".into())), 0.5);
            assert!(matches!(event, SyncEvent::Backoff(_)), "{event:?}");
        }
        let last = run.on_result(Err(CrmError::Transport("refused".into())), 0.5);
        assert_eq!(
            last,
            SyncEvent::Failed(CrmError::Transport("refused".into()))
        );
        assert!(run.is_done());
        assert_eq!(run.next_request(), None);
    }

    #[test]
    fn an_answer_resets_the_count_of_failed_attempts() {
        let mut run = SyncRun::new("d");
        for _ in 0..Limits::default().max_attempts {
            run.on_result(Err(CrmError::RateLimited), 0.5);
        }
        let started = run.on_result(Ok(CrmResponse::SyncSession(Some("s".into()))), 0.5);
        assert_eq!(started, SyncEvent::Items(Vec::new()));
        let event = run.on_result(Err(CrmError::RateLimited), 0.5);
        assert!(matches!(event, SyncEvent::Backoff(_)), "{event:?}");
    }
}
