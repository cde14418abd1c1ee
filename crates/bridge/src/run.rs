//! The push as a step machine a thin async executor drives: [`PushRun::next_request`] hands out the
//! next request, [`PushRun::on_result`] takes its answer and says what happened ([`Event`]s).
//! The executor applies the events with [`crate::push`]'s outcome functions, saves the
//! documents and shadows they touch, and persists the run (it is serialisable) before every
//! request: after a crash, [`PushRun::resume`] continues where it stopped, and a create that
//! may have been applied is looked up before it is sent again.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::crm::{CrmError, CrmRequest, CrmResponse};
use sellsync_model::RecordId;

use crate::push::{OpKind, Plan, PlannedOp, Target, lookup_request, matches_sent};

/// Where the operation at the front of the queue stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Nothing sent yet for it.
    Ready,
    /// Re-reading the record to compare `updated_at` before an update.
    Reread,
    /// The operation itself was handed out (it may have been applied).
    Sending,
    /// Looking for the record a create whose answer was lost may have made.
    Lookup,
}

/// Retry limits. Backoff uses [`crate::push::backoff_ms`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Requests this run may send in all (the token's budget share).
    pub budget: u32,
    /// Transient failures in a row before an operation is given up (and kept for a later run).
    pub max_attempts: u32,
    /// First backoff (ms).
    pub base_ms: u64,
    /// Longest backoff (ms).
    pub cap_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            budget: 10_000,
            max_attempts: 8,
            base_ms: 200,
            cap_ms: 30_000,
        }
    }
}

/// What an answer meant.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The operation took effect; `data` is the CRM's object (`Null` for a delete). Apply with
    /// [`crate::push::on_success`].
    Pushed {
        /// The operation.
        op: PlannedOp,
        /// The CRM's object.
        data: Json,
    },
    /// The record changed in the CRM since the shadow: pull `data` first, then plan again.
    Moved {
        /// The operation not sent.
        op: PlannedOp,
        /// The CRM's current object.
        data: Json,
    },
    /// 422 or 403: flag it with [`crate::push::on_refused`]; the rest of the record may go again
    /// with [`crate::push::without_field`] and [`PushRun::retry_first`].
    Refused {
        /// The operation.
        op: PlannedOp,
        /// The refusal.
        error: CrmError,
    },
    /// 404 on an update: the record was deleted in the CRM ([`crate::push::on_gone`]).
    Gone {
        /// The operation.
        op: PlannedOp,
    },
    /// Wait this long before the next request.
    Backoff(u64),
    /// Not sent: an operation on its record gave up or found the record gone earlier in this
    /// run, so it waits with it (the record is planned again next run).
    Held {
        /// The operation not sent.
        op: PlannedOp,
        /// Why.
        reason: String,
    },
    /// Failed for good in this run (kept for the next plan: nothing is dropped).
    GaveUp {
        /// The operation.
        op: PlannedOp,
        /// The last error.
        error: CrmError,
    },
}

/// A push in progress. Serialisable: it is the push checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PushRun {
    ops: VecDeque<PlannedOp>,
    phase: Phase,
    attempt: u32,
    sent: u32,
    limits: Limits,
}

impl PushRun {
    /// A run of `plan`'s operations, in order.
    pub fn new(plan: Plan, limits: Limits) -> PushRun {
        PushRun {
            ops: plan.ops.into(),
            phase: Phase::Ready,
            attempt: 0,
            sent: 0,
            limits,
        }
    }

    /// After a restart from a checkpoint: a create that was handed out may have been applied,
    /// so it is looked up before it is sent again; anything else is idempotent and is re-sent
    /// after a fresh re-read.
    pub fn resume(&mut self) {
        self.phase = match (self.phase, self.ops.front().map(|o| o.op)) {
            (Phase::Sending | Phase::Lookup, Some(OpKind::Create)) => Phase::Lookup,
            _ => Phase::Ready,
        };
    }

    /// Operations left.
    pub fn remaining(&self) -> usize {
        self.ops.len()
    }

    /// Requests sent so far.
    pub fn sent(&self) -> u32 {
        self.sent
    }

    /// Puts an operation at the front (for example the rest of a record after a 422).
    pub fn retry_first(&mut self, op: PlannedOp) {
        self.ops.push_front(op);
        self.phase = Phase::Ready;
        self.attempt = 0;
    }

    /// The next request, or `None` when done or out of budget.
    pub fn next_request(&mut self) -> Option<CrmRequest> {
        if self.sent >= self.limits.budget {
            return None;
        }
        let op = self.ops.front()?;
        let needs_reread = op.op == OpKind::Update
            && op.target == Target::Record
            && op.expect_updated_at.is_some();
        let req = match self.phase {
            Phase::Ready if needs_reread => {
                self.phase = Phase::Reread;
                reread(op)
            }
            Phase::Reread => reread(op),
            Phase::Ready | Phase::Sending => {
                self.phase = Phase::Sending;
                op.request()
            }
            Phase::Lookup => lookup_request(op),
        };
        self.sent += 1;
        Some(req)
    }

    fn done(&mut self) -> Option<PlannedOp> {
        self.phase = Phase::Ready;
        self.attempt = 0;
        self.ops.pop_front()
    }

    fn transient(&mut self, error: CrmError, jitter: f64) -> Vec<Event> {
        self.attempt += 1;
        if self.attempt > self.limits.max_attempts {
            return self
                .done()
                .map(|op| Event::GaveUp { op, error })
                .into_iter()
                .collect();
        }
        vec![Event::Backoff(crate::push::backoff_ms(
            self.attempt - 1,
            self.limits.base_ms,
            self.limits.cap_ms,
            jitter,
        ))]
    }

    /// Takes the answer to the last request. `jitter` in `[0, 1]` comes from the caller's
    /// random source.
    pub fn on_result(&mut self, result: Result<CrmResponse, CrmError>, jitter: f64) -> Vec<Event> {
        let mut events = self.answer(result, jitter);
        // A record that failed takes its later operations (its notes, tasks, calls) with it.
        let failed: Vec<(RecordId, &'static str)> = events
            .iter()
            .filter_map(|e| match e {
                Event::GaveUp { op, .. } if op.target == Target::Record => Some((
                    op.record.clone(),
                    "its record could not be pushed in this run",
                )),
                Event::Gone { op } if op.target == Target::Record => {
                    Some((op.record.clone(), "its record was deleted in the CRM"))
                }
                _ => None,
            })
            .collect();
        for (record, reason) in failed {
            let (held, rest): (Vec<_>, Vec<_>) =
                self.ops.drain(..).partition(|o| o.record == record);
            self.ops = rest.into();
            events.extend(held.into_iter().map(|op| Event::Held {
                op,
                reason: reason.to_owned(),
            }));
        }
        events
    }

    fn answer(&mut self, result: Result<CrmResponse, CrmError>, jitter: f64) -> Vec<Event> {
        let Some(front) = self.ops.front() else {
            return Vec::new();
        };
        let op_kind = front.op;
        match (self.phase, result) {
            (_, Err(e)) if e.is_transient() => self.transient(e, jitter),
            (Phase::Reread, Ok(CrmResponse::One(data))) => {
                let now = data.get("updated_at").and_then(Json::as_str);
                if now == front.expect_updated_at.as_deref() {
                    self.phase = Phase::Sending;
                    self.attempt = 0;
                    Vec::new()
                } else {
                    self.one(|op| Event::Moved { op, data })
                }
            }
            (Phase::Reread | Phase::Sending, Err(CrmError::NotFound(_)))
                if op_kind == OpKind::Update =>
            {
                self.one(|op| Event::Gone { op })
            }
            (Phase::Sending, Err(CrmError::NotFound(_))) if op_kind == OpKind::Delete => {
                self.one(|op| Event::Pushed {
                    op,
                    data: Json::Null,
                })
            }
            (Phase::Sending, Ok(CrmResponse::One(data))) => {
                self.one(|op| Event::Pushed { op, data })
            }
            (Phase::Sending, Ok(CrmResponse::Deleted)) => self.one(|op| Event::Pushed {
                op,
                data: Json::Null,
            }),
            // The create may have been applied: find it before sending again.
            (Phase::Sending, Err(e @ (CrmError::Transport(_) | CrmError::Malformed(_))))
                if op_kind == OpKind::Create =>
            {
                self.phase = Phase::Lookup;
                self.transient(e, jitter)
            }
            (Phase::Sending | Phase::Reread, Err(e @ CrmError::Transport(_))) => {
                self.phase = Phase::Ready;
                self.transient(e, jitter)
            }
            (Phase::Sending, Err(e @ (CrmError::Validation { .. } | CrmError::Forbidden(_)))) => {
                self.one(|op| Event::Refused { op, error: e })
            }
            (Phase::Lookup, Ok(CrmResponse::Page { items, .. })) => {
                match items.into_iter().find(|i| matches_sent(front, i)) {
                    Some(data) => self.one(|op| Event::Pushed { op, data }),
                    None => {
                        self.phase = Phase::Sending;
                        Vec::new()
                    }
                }
            }
            (Phase::Lookup, Err(e @ CrmError::Transport(_))) => self.transient(e, jitter),
            (_, Err(error)) => self.one(|op| Event::GaveUp { op, error }),
            (_, Ok(other)) => self.one(|op| Event::GaveUp {
                op,
                error: CrmError::Malformed(format!("unexpected answer {other:?}")),
            }),
        }
    }

    fn one(&mut self, f: impl FnOnce(PlannedOp) -> Event) -> Vec<Event> {
        self.done().map(f).into_iter().collect()
    }
}

fn reread(op: &PlannedOp) -> CrmRequest {
    CrmRequest::Get {
        resource: op.resource,
        id: op.crm_id.unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crm::Resource;
    use crate::push::{PlannedOp, Target, backoff_ms};
    use serde_json::{Map, json};

    fn op(kind: OpKind, expect: Option<&str>) -> PlannedOp {
        let mut body = Map::new();
        body.insert("name".into(), json!("N"));
        PlannedOp {
            record: "d1".parse().unwrap(),
            kind: sellsync_model::RecordKind::Deal,
            target: Target::Record,
            op: kind,
            resource: Resource::Deal,
            crm_id: (kind != OpKind::Create).then_some(5),
            body,
            fields: vec![sellsync_model::FieldKey::std("name")],
            basis: vec![],
            held: false,
            expect_updated_at: expect.map(str::to_owned),
        }
    }

    fn run(ops: Vec<PlannedOp>, limits: Limits) -> PushRun {
        PushRun::new(
            Plan {
                ops,
                waiting: vec![],
            },
            limits,
        )
    }

    #[test]
    fn the_children_of_a_record_that_gave_up_wait_with_it() {
        let mut note = op(OpKind::Create, None);
        note.target = Target::Activity {
            id: "n1".parse().unwrap(),
            kind: sellsync_model::ActivityKind::Note,
        };
        note.resource = Resource::Note;
        let mut other = op(OpKind::Update, None);
        other.record = "d2".parse().unwrap();
        let limits = Limits {
            max_attempts: 0,
            ..Limits::default()
        };
        let mut r = run(vec![op(OpKind::Update, None), note, other], limits);
        assert!(matches!(r.next_request(), Some(CrmRequest::Update { .. })));
        let ev = r.on_result(
            Err(CrmError::Server {
                status: 503,
                message: String::new(),
            }),
            0.0,
        );
        assert!(
            matches!(&ev[..], [Event::GaveUp { .. }, Event::Held { op, .. }] if op.resource == Resource::Note),
            "{ev:?}"
        );
        // The other record still goes.
        assert_eq!(r.remaining(), 1);
        assert!(matches!(
            r.next_request(),
            Some(CrmRequest::Update { id: 5, .. })
        ));
    }

    #[test]
    fn an_update_rereads_first_and_stops_when_the_record_moved() {
        let mut r = run(vec![op(OpKind::Update, Some("t1"))], Limits::default());
        assert!(matches!(
            r.next_request(),
            Some(CrmRequest::Get { id: 5, .. })
        ));
        let ev = r.on_result(
            Ok(CrmResponse::One(json!({"id": 5, "updated_at": "t2"}))),
            0.0,
        );
        assert!(matches!(&ev[..], [Event::Moved { .. }]));
        assert!(r.next_request().is_none());
    }

    #[test]
    fn an_unmoved_record_is_updated_and_a_404_means_gone() {
        let mut r = run(vec![op(OpKind::Update, Some("t1"))], Limits::default());
        r.next_request();
        let ev = r.on_result(
            Ok(CrmResponse::One(json!({"id": 5, "updated_at": "t1"}))),
            0.0,
        );
        assert!(ev.is_empty());
        assert!(matches!(r.next_request(), Some(CrmRequest::Update { .. })));
        let ev = r.on_result(Err(CrmError::NotFound("x".into())), 0.0);
        assert!(matches!(&ev[..], [Event::Gone { .. }]));
    }

    #[test]
    fn transient_errors_back_off_then_give_up_within_the_limits() {
        let limits = Limits {
            max_attempts: 2,
            ..Limits::default()
        };
        let mut r = run(vec![op(OpKind::Delete, None)], limits);
        for _ in 0..2 {
            r.next_request();
            let ev = r.on_result(Err(CrmError::RateLimited), 1.0);
            assert!(matches!(&ev[..], [Event::Backoff(_)]));
        }
        r.next_request();
        let ev = r.on_result(
            Err(CrmError::Server {
                status: 503,
                message: String::new(),
            }),
            1.0,
        );
        assert!(matches!(&ev[..], [Event::GaveUp { .. }]));
    }

    #[test]
    fn the_budget_bounds_the_requests() {
        let limits = Limits {
            budget: 1,
            ..Limits::default()
        };
        let mut r = run(
            vec![op(OpKind::Delete, None), op(OpKind::Delete, None)],
            limits,
        );
        assert!(r.next_request().is_some());
        r.on_result(Ok(CrmResponse::Deleted), 0.0);
        assert!(r.next_request().is_none());
        assert_eq!(r.remaining(), 1);
    }

    #[test]
    fn a_create_not_found_by_the_lookup_is_sent_again() {
        let mut r = run(vec![op(OpKind::Create, None)], Limits::default());
        r.next_request();
        r.on_result(Err(CrmError::Transport("reset".into())), 0.0);
        assert!(matches!(r.next_request(), Some(CrmRequest::List { .. })));
        let other = json!({"id": 9, "name": "Other"});
        let ev = r.on_result(
            Ok(CrmResponse::Page {
                items: vec![other],
                more: false,
            }),
            0.0,
        );
        assert!(ev.is_empty());
        assert!(matches!(r.next_request(), Some(CrmRequest::Create { .. })));
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        assert_eq!(backoff_ms(0, 100, 10_000, 0.0), 50);
        assert_eq!(backoff_ms(0, 100, 10_000, 1.0), 100);
        assert_eq!(backoff_ms(3, 100, 10_000, 1.0), 800);
        assert_eq!(backoff_ms(60, 100, 10_000, 1.0), 10_000);
        assert_eq!(backoff_ms(60, 100, 10_000, f64::NAN), 5_000);
    }
}
