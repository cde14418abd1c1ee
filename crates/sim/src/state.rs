//! The shared, concurrency-safe simulator state: the account behind one lock, and the rate
//! limiter, faults, configuration and request counters each behind their own. No lock is held
//! across an await.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::faults::{FaultConfig, Faults};
use crate::schema::Kind;
use crate::store::SimData;
use crate::sync::Sessions;

/// Tunables, settable at start and through `PUT /_sim/config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// Requests per hour per token; 0 disables the limit. Zendesk's is 36,000.
    pub rate_limit_per_hour: u64,
    /// Items per Sync API queue page.
    pub sync_page_size: usize,
    /// Most open Sync API sessions (Zendesk's cap is 100).
    pub max_sync_sessions: usize,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            rate_limit_per_hour: 36_000,
            sync_page_size: 100,
            max_sync_sessions: 100,
            max_body_bytes: 1024 * 1024,
        }
    }
}

/// Requests seen per route (`METHOD /v2/route/{id}`), by answer status (`dropped` when the
/// connection was closed instead).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Every counted request.
    pub total: u64,
    /// Per route.
    pub routes: BTreeMap<String, RouteCount>,
}

/// Requests of one route.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteCount {
    /// Every request.
    pub requests: u64,
    /// By status code, or `dropped`.
    pub by_status: BTreeMap<String, u64>,
}

/// A token bucket per token: `per_hour` capacity, refilled continuously.
#[derive(Debug, Default)]
pub(crate) struct RateLimiter {
    buckets: HashMap<String, (f64, Instant)>,
}

impl RateLimiter {
    /// Takes one request from the token's bucket; false when it is empty.
    pub(crate) fn allow(&mut self, token: &str, per_hour: u64, now: Instant) -> bool {
        if per_hour == 0 {
            return true;
        }
        let cap = per_hour as f64;
        let (level, last) = self.buckets.entry(token.to_owned()).or_insert((cap, now));
        let refill = now.saturating_duration_since(*last).as_secs_f64() * cap / 3600.0;
        *level = (*level + refill).min(cap);
        *last = now;
        if *level >= 1.0 {
            *level -= 1.0;
            true
        } else {
            false
        }
    }

    pub(crate) fn reset(&mut self) {
        self.buckets.clear();
    }
}

/// The account and the sync sessions, behind one lock so a write and the queue agree.
#[derive(Debug, Default)]
pub(crate) struct World {
    pub(crate) data: SimData,
    pub(crate) sessions: Sessions,
}

#[derive(Debug)]
struct Inner {
    world: Mutex<World>,
    config: Mutex<SimConfig>,
    rate: Mutex<RateLimiter>,
    faults: Mutex<Faults>,
    counters: Mutex<Counters>,
}

/// The simulator: cheap to clone, shared by every request.
#[derive(Debug, Clone)]
pub struct Sim {
    inner: Arc<Inner>,
}

/// Locks, ignoring poisoning: no code path panics while holding a lock, and every write is
/// prepared before it is applied, so the data stays whole either way.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A token and the user it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// The bearer token.
    pub token: String,
    /// The user's id.
    pub user_id: u64,
    /// The user's name.
    pub name: String,
    /// `admin` or `user`.
    pub role: String,
    /// The user's team.
    pub team: Option<String>,
}

impl Sim {
    /// A simulator over `data`, with no faults.
    pub fn new(data: SimData, config: SimConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                world: Mutex::new(World {
                    data,
                    sessions: Sessions::default(),
                }),
                config: Mutex::new(config),
                rate: Mutex::new(RateLimiter::default()),
                faults: Mutex::new(Faults::new(FaultConfig::default())),
                counters: Mutex::new(Counters::default()),
            }),
        }
    }

    pub(crate) fn world(&self) -> MutexGuard<'_, World> {
        lock(&self.inner.world)
    }

    /// Current configuration.
    pub fn config(&self) -> SimConfig {
        *lock(&self.inner.config)
    }

    /// Replaces the configuration.
    pub fn set_config(&self, config: SimConfig) {
        *lock(&self.inner.config) = config;
        lock(&self.inner.rate).reset();
    }

    /// Replaces the fault rules and reseeds the RNG. Refuses an invalid configuration.
    pub fn set_faults(&self, faults: FaultConfig) -> Result<(), String> {
        faults.validate()?;
        *lock(&self.inner.faults) = Faults::new(faults);
        Ok(())
    }

    /// Current fault rules.
    pub fn faults(&self) -> FaultConfig {
        lock(&self.inner.faults).config().clone()
    }

    pub(crate) fn decide_faults(&self, method: &str, route: &str) -> crate::faults::Decision {
        lock(&self.inner.faults).decide(method, route)
    }

    pub(crate) fn allow(&self, token: &str, now: Instant) -> bool {
        let per_hour = self.config().rate_limit_per_hour;
        lock(&self.inner.rate).allow(token, per_hour, now)
    }

    /// A copy of the account (what `GET /_sim/state` returns).
    pub fn dump(&self) -> SimData {
        self.world().data.clone()
    }

    /// Replaces the account; open sync sessions end.
    pub fn seed(&self, data: SimData) {
        let mut w = self.world();
        w.data = data;
        w.sessions = Sessions::default();
    }

    /// Request counters so far.
    pub fn counters(&self) -> Counters {
        lock(&self.inner.counters).clone()
    }

    /// Sets every counter to zero.
    pub fn reset_counters(&self) {
        *lock(&self.inner.counters) = Counters::default();
    }

    pub(crate) fn count(&self, route: &str, status: &str) {
        let mut c = lock(&self.inner.counters);
        c.total += 1;
        let r = c.routes.entry(route.to_owned()).or_default();
        r.requests += 1;
        *r.by_status.entry(status.to_owned()).or_default() += 1;
    }

    /// The accepted tokens and their users, by user id then token.
    pub fn tokens(&self) -> Vec<TokenInfo> {
        let w = self.world();
        let mut out: Vec<TokenInfo> = w
            .data
            .tokens
            .iter()
            .map(|(token, user_id)| {
                let user = w.data.row(Kind::User, *user_id).map(|r| &r.data);
                let text = |k: &str| {
                    user.and_then(|u| u.get(k))
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                };
                TokenInfo {
                    token: token.clone(),
                    user_id: *user_id,
                    name: text("name").unwrap_or_default(),
                    role: text("role").unwrap_or_default(),
                    team: text("team_name"),
                }
            })
            .collect();
        out.sort_by(|a, b| (a.user_id, &a.token).cmp(&(b.user_id, &b.token)));
        out
    }

    /// Adds a token for a user. Fails when the user does not exist.
    pub fn add_token(&self, token: &str, user_id: u64) -> Result<(), String> {
        let mut w = self.world();
        if w.data.row(Kind::User, user_id).is_none() {
            return Err(format!("user {user_id} does not exist"));
        }
        w.data.tokens.insert(token.to_owned(), user_id);
        Ok(())
    }

    /// Open Sync API sessions.
    pub fn open_sync_sessions(&self) -> usize {
        self.world().sessions.len()
    }
}
