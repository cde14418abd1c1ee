//! What `sellsync bridge status` shows: the queue, the last import, pull and push, and recent
//! errors. Kept in the store's kv table (`bridge/status`) and, when the hub gives a path, in a
//! JSON file next to the store, which can be read while the hub holds the store's lock.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use sellsync_model::CrmReach;
use serde::{Deserialize, Serialize};

/// How many recent errors are kept.
pub const MAX_ERRORS: usize = 20;

/// The kv key of the status.
pub(crate) const STATUS_KEY: &str = "bridge/status";

/// One finished step (import, pull or push).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSummary {
    /// When it started (ms since the epoch).
    pub started_ms: i64,
    /// When it ended.
    pub ended_ms: i64,
    /// Objects or operations that went through.
    pub done: u64,
    /// Refused by the CRM (422/403): shown as conflicts.
    pub refused: u64,
    /// Left for a later run (waiting for a parent, given up after retries, moved in the CRM).
    pub waiting: u64,
    /// Requests sent.
    pub requests: u64,
    /// How it ended: `ok`, or the error that stopped it.
    pub result: String,
}

/// One error, with when it happened and what it was about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorEntry {
    /// When (ms since the epoch).
    pub at_ms: i64,
    /// `import`, `pull` or `push`.
    pub step: String,
    /// The record or object concerned, if any.
    pub record: Option<String>,
    /// What went wrong.
    pub message: String,
}

/// The bridge's status. JSON field names are stable (fields are only added).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BridgeStatus {
    /// The CRM base URL.
    pub crm_url: String,
    /// The CRM user the token acts as.
    pub crm_user: Option<u64>,
    /// Whether pulls use the Sync API (`sync`) or polling (`poll`).
    pub pull_mode: String,
    /// The last import.
    pub last_import: Option<RunSummary>,
    /// The last pull.
    pub last_pull: Option<RunSummary>,
    /// The last push.
    pub last_push: Option<RunSummary>,
    /// Records waiting to be pushed (planned but held back, or to be planned again).
    pub queue: u64,
    /// Whether a push was interrupted and will resume from its checkpoint.
    pub push_in_progress: bool,
    /// Requests sent to the CRM since the hub started.
    pub requests: u64,
    /// Whether the CRM answers: when it last did, and since when it has not.
    pub crm_reach: Reach,
    /// The most recent errors, newest last.
    pub errors: VecDeque<ErrorEntry>,
}

/// Whether the CRM answers. A dropped connection, a timeout or a 5xx is a failure to reach it;
/// any other answer (a 4xx, a 429 included) shows that it is there.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Reach {
    /// When the CRM last answered (ms since the epoch).
    pub last_reached_ms: Option<i64>,
    /// When the current outage began: the first failure since the last answer. `None` while
    /// the CRM answers.
    pub unreachable_since_ms: Option<i64>,
    /// Failed attempts since the outage began.
    pub retries: u64,
    /// The last failure.
    pub last_error: Option<String>,
}

/// How often, at most, the hub refreshes in the catalog document the time it last reached the
/// CRM while the CRM answers: each write is a change that every device receives.
pub(crate) const REACH_PUBLISH_MS: i64 = 60_000;

impl Reach {
    /// What devices are told.
    pub fn published(&self) -> CrmReach {
        CrmReach {
            last_reached_ms: self.last_reached_ms,
            unreachable_since_ms: self.unreachable_since_ms,
        }
    }
}

/// Whether `now` is worth writing over `stored`: at once when an outage began or ended, else
/// when the last answer is [`REACH_PUBLISH_MS`] newer than the one devices have.
pub(crate) fn worth_publishing(stored: &CrmReach, now: &CrmReach) -> bool {
    if stored.unreachable_since_ms != now.unreachable_since_ms {
        return true;
    }
    match (stored.last_reached_ms, now.last_reached_ms) {
        (None, Some(_)) => true,
        (Some(old), Some(new)) => new - old >= REACH_PUBLISH_MS,
        _ => false,
    }
}

/// What one request's outcome changed in [`Reach`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReachChange {
    /// Nothing worth a log line.
    Same,
    /// The first failure after an answer: an outage begins.
    Lost,
    /// A further failure during an outage.
    StillLost,
    /// The first answer after an outage, which lasted this many failed attempts.
    Back(u64),
}

impl Reach {
    /// The CRM answered at `now_ms`.
    pub fn answered(&mut self, now_ms: i64) -> ReachChange {
        self.last_reached_ms = Some(now_ms);
        if self.unreachable_since_ms.take().is_some() {
            let retries = std::mem::take(&mut self.retries);
            self.last_error = None;
            ReachChange::Back(retries)
        } else {
            ReachChange::Same
        }
    }

    /// A request failed to reach the CRM at `now_ms`.
    pub fn failed(&mut self, now_ms: i64, error: String) -> ReachChange {
        self.last_error = Some(error);
        if self.unreachable_since_ms.is_none() {
            self.unreachable_since_ms = Some(now_ms);
            self.retries = 0;
            ReachChange::Lost
        } else {
            self.retries += 1;
            ReachChange::StillLost
        }
    }
}

impl BridgeStatus {
    /// Adds an error, keeping the last [`MAX_ERRORS`], and logs it: every error the status
    /// shows is also in the hub's log.
    pub fn error(&mut self, at_ms: i64, step: &str, record: Option<String>, message: String) {
        tracing::warn!(step, record = record.as_deref(), "bridge: {message}");
        self.errors.push_back(ErrorEntry {
            at_ms,
            step: step.to_owned(),
            record,
            message,
        });
        while self.errors.len() > MAX_ERRORS {
            self.errors.pop_front();
        }
    }
}

/// The status file of a hub store: `<store>.bridge.json`.
pub fn status_path(store: &Path) -> PathBuf {
    let mut s = store.as_os_str().to_owned();
    s.push(".bridge.json");
    PathBuf::from(s)
}

/// Writes the status file atomically (a temporary file renamed over the old one).
pub(crate) fn write_file(path: &Path, status: &BridgeStatus) -> std::io::Result<()> {
    let tmp = {
        let mut s = path.as_os_str().to_owned();
        s.push(".tmp");
        PathBuf::from(s)
    };
    // Serialising plain data cannot fail.
    let bytes = serde_json::to_vec_pretty(status).expect("status serialises");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A log sink for one test.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_error_of_the_status_is_logged() {
        let sink = Captured::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            BridgeStatus::default().error(
                1,
                "push",
                Some("zd-104".into()),
                "refused: stage 99 does not exist".into(),
            );
        });
        let log = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert!(log.contains("WARN"), "{log}");
        assert!(log.contains("refused: stage 99 does not exist"), "{log}");
        assert!(log.contains("zd-104") && log.contains("push"), "{log}");
    }

    #[test]
    fn errors_are_bounded_and_the_file_round_trips() {
        let mut s = BridgeStatus::default();
        for i in 0..30 {
            s.error(i, "push", None, format!("e{i}"));
        }
        assert_eq!(s.errors.len(), MAX_ERRORS);
        assert_eq!(s.errors.front().unwrap().message, "e10");
        let dir = tempfile::tempdir().unwrap();
        let path = status_path(&dir.path().join("hub.redb"));
        assert!(path.ends_with("hub.redb.bridge.json"));
        write_file(&path, &s).unwrap();
        let back: BridgeStatus = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn devices_hear_of_an_outage_at_once_and_of_answers_once_a_minute() {
        let at = |last, since| CrmReach {
            last_reached_ms: last,
            unreachable_since_ms: since,
        };
        let stored = at(Some(1_000), None);
        assert!(!worth_publishing(
            &stored,
            &at(Some(1_000 + REACH_PUBLISH_MS - 1), None)
        ));
        assert!(worth_publishing(
            &stored,
            &at(Some(1_000 + REACH_PUBLISH_MS), None)
        ));
        assert!(worth_publishing(&stored, &at(Some(1_000), Some(2_000))));
        assert!(worth_publishing(
            &at(Some(1_000), Some(2_000)),
            &at(Some(3_000), None)
        ));
        assert!(worth_publishing(&CrmReach::default(), &at(Some(1), None)));
        assert!(!worth_publishing(&stored, &stored));
    }

    #[test]
    fn an_outage_starts_at_its_first_failure_counts_retries_and_ends_at_an_answer() {
        let mut r = Reach::default();
        assert_eq!(r.answered(10), ReachChange::Same);
        assert_eq!(r.failed(20, "transport: refused".into()), ReachChange::Lost);
        assert_eq!(
            r.failed(30, "transport: timed out".into()),
            ReachChange::StillLost
        );
        assert_eq!(
            r.failed(40, "server error 503: down".into()),
            ReachChange::StillLost
        );
        assert_eq!(r.unreachable_since_ms, Some(20));
        assert_eq!(r.retries, 2);
        assert_eq!(r.last_reached_ms, Some(10));
        assert_eq!(r.last_error.as_deref(), Some("server error 503: down"));
        assert_eq!(r.answered(50), ReachChange::Back(2));
        assert_eq!(
            r,
            Reach {
                last_reached_ms: Some(50),
                ..Reach::default()
            }
        );
    }
}
