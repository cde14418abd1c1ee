//! The shared simulator state: the account behind one mutex, the configuration and the rate
//! limiter behind their own. No lock is held across an await, and every write is validated
//! before anything is changed, so a refused request leaves the state as it was.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use chrono::{NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One stored object, in the JSON shape the API answers with.
pub type Row = serde_json::Map<String, Value>;

/// Tunables of a simulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PdSimConfig {
    /// The company's daily token budget (Pipedrive: 30,000 × plan multiplier × seats), charged
    /// at each operation's `x-token-cost`; 0 means unlimited. Resets at midnight UTC.
    pub daily_token_budget: u64,
    /// Requests per token per 2-second window (Pipedrive's burst limit; 120 is an Ultimate
    /// plan's API-token limit); 0 means unlimited and omits the `x-ratelimit-*` headers.
    pub burst_limit: u64,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
}

impl Default for PdSimConfig {
    fn default() -> Self {
        Self {
            // Ultimate (×7) with 5 seats.
            daily_token_budget: 30_000 * 7 * 5,
            burst_limit: 120,
            max_body_bytes: 1024 * 1024,
        }
    }
}

/// An API token and the user it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// The value of the `x-api-token` header (or `api_token` parameter).
    pub token: String,
    /// The user's id.
    pub user_id: u64,
    /// The user's name.
    pub name: String,
    /// Whether the user is an admin of the company.
    pub is_admin: bool,
}

/// A whole account: configuration objects and records.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PdData {
    /// `company_id`, `company_name`, `company_domain`, `company_country` (merged into
    /// `users/me`).
    pub company: Row,
    /// v1 user objects.
    pub users: Vec<Row>,
    /// The API tokens.
    pub tokens: Vec<TokenInfo>,
    /// v2 pipelines.
    pub pipelines: Vec<Row>,
    /// v2 stages.
    pub stages: Vec<Row>,
    /// v1 activity types (`key_string` is an activity's `type`).
    pub activity_types: Vec<Row>,
    /// v2 deal field definitions (built-in and custom).
    pub deal_fields: Vec<Row>,
    /// v2 person field definitions.
    pub person_fields: Vec<Row>,
    /// v2 deals by id.
    pub deals: BTreeMap<u64, Row>,
    /// v2 persons by id.
    pub persons: BTreeMap<u64, Row>,
    /// v2 organizations by id.
    pub organizations: BTreeMap<u64, Row>,
    /// v2 activities by id.
    pub activities: BTreeMap<u64, Row>,
    /// v1 notes by id.
    pub notes: BTreeMap<u64, Row>,
    /// v1 webhooks by id.
    pub webhooks: BTreeMap<u64, Row>,
}

impl PdData {
    pub(crate) fn user(&self, id: u64) -> Option<&Row> {
        self.users
            .iter()
            .find(|u| u.get("id").and_then(Value::as_u64) == Some(id))
    }
}

/// What the rate limiter decided for one request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RateDecision {
    /// None when allowed; Some(daily?) when refused.
    pub(crate) refused: Option<bool>,
    /// (limit, remaining, reset seconds) of the burst window, unless unlimited.
    pub(crate) burst: Option<(u64, u64, u64)>,
    /// (limit, remaining) of the daily budget, unless unlimited.
    pub(crate) daily: Option<(u64, u64)>,
}

const WINDOW: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
struct RateLimiter {
    windows: HashMap<String, (Instant, u64)>,
    day: Option<NaiveDate>,
    used: u64,
}

impl RateLimiter {
    fn charge(
        &mut self,
        token: &str,
        cost: u64,
        cfg: PdSimConfig,
        now: Instant,
        today: NaiveDate,
    ) -> RateDecision {
        if self.day != Some(today) {
            self.day = Some(today);
            self.used = 0;
        }
        let mut refused = None;
        let mut burst = None;
        if cfg.burst_limit > 0 {
            let (start, count) = self.windows.entry(token.to_owned()).or_insert((now, 0));
            if now.saturating_duration_since(*start) >= WINDOW {
                *start = now;
                *count = 0;
            }
            if *count >= cfg.burst_limit {
                refused = Some(false);
            } else {
                *count += 1;
            }
            let left = WINDOW.saturating_sub(now.saturating_duration_since(*start));
            let reset = left.as_secs() + u64::from(left.subsec_nanos() > 0);
            burst = Some((cfg.burst_limit, cfg.burst_limit - *count, reset.max(1)));
        }
        let mut daily = None;
        if cfg.daily_token_budget > 0 {
            if refused.is_none() {
                if self.used.saturating_add(cost) > cfg.daily_token_budget {
                    refused = Some(true);
                    // A refused request does not spend its burst slot either.
                    if let Some((limit, remaining, reset)) = burst {
                        if let Some((_, count)) = self.windows.get_mut(token) {
                            *count = count.saturating_sub(1);
                        }
                        burst = Some((limit, remaining + 1, reset));
                    }
                } else {
                    self.used += cost;
                }
            }
            daily = Some((
                cfg.daily_token_budget,
                cfg.daily_token_budget.saturating_sub(self.used),
            ));
        }
        RateDecision {
            refused,
            burst,
            daily,
        }
    }
}

#[derive(Debug)]
struct Inner {
    data: Mutex<PdData>,
    config: Mutex<PdSimConfig>,
    rate: Mutex<RateLimiter>,
}

/// The simulator: cheap to clone, shared by every request.
#[derive(Debug, Clone)]
pub struct PdSim {
    inner: Arc<Inner>,
}

/// Locks, ignoring poisoning: no code path panics while holding a lock.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl PdSim {
    /// A simulator over `data`.
    pub fn new(data: PdData, config: PdSimConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                data: Mutex::new(data),
                config: Mutex::new(config),
                rate: Mutex::new(RateLimiter::default()),
            }),
        }
    }

    /// The current configuration.
    pub fn config(&self) -> PdSimConfig {
        *lock(&self.inner.config)
    }

    /// Replaces the configuration (the rate-limit counters carry on).
    pub fn set_config(&self, config: PdSimConfig) {
        *lock(&self.inner.config) = config;
    }

    /// Forgets the rate limiter's counters (a new day, empty burst windows).
    pub fn reset_rate_limits(&self) {
        *lock(&self.inner.rate) = RateLimiter::default();
    }

    /// The API tokens, with the users they belong to.
    pub fn tokens(&self) -> Vec<TokenInfo> {
        lock(&self.inner.data).tokens.clone()
    }

    /// A copy of the whole account.
    pub fn dump(&self) -> PdData {
        lock(&self.inner.data).clone()
    }

    pub(crate) fn data(&self) -> MutexGuard<'_, PdData> {
        lock(&self.inner.data)
    }

    pub(crate) fn token_info(&self, token: &str) -> Option<TokenInfo> {
        lock(&self.inner.data)
            .tokens
            .iter()
            .find(|t| t.token == token)
            .cloned()
    }

    pub(crate) fn charge(&self, token: &str, cost: u64) -> RateDecision {
        let cfg = self.config();
        lock(&self.inner.rate).charge(token, cost, cfg, Instant::now(), Utc::now().date_naive())
    }
}
