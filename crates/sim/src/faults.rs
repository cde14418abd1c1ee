//! Fault injection: rules per route, drawn from one seeded RNG so that the same request sequence
//! meets the same faults again. Pure: the caller performs what [`Faults::decide`] returns.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// The whole fault configuration, as given at start or through `PUT /_sim/faults`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultConfig {
    /// Seed of the RNG that decides probabilistic rules.
    #[serde(default)]
    pub seed: u64,
    /// Rules, checked in order for every API request.
    #[serde(default)]
    pub rules: Vec<FaultRule>,
}

/// One rule: which requests, what fault, how often.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    /// `*` for every route, or `METHOD /v2/route/{id}` as in the request counters; the method
    /// may be `*` and the route may be `*`.
    pub route: String,
    /// What happens.
    pub fault: Fault,
    /// Chance that a matching request meets the fault, 0.0 to 1.0 (default 1).
    #[serde(default = "one")]
    pub probability: f64,
    /// Let this many matching requests through before the rule can fire.
    #[serde(default)]
    pub skip: u64,
    /// Fire at most this many times (unlimited when absent).
    #[serde(default)]
    pub times: Option<u64>,
}

/// Longest injectable latency: a minute, so that no request is held forever.
pub(crate) const MAX_LATENCY_MS: u64 = 60_000;

fn one() -> f64 {
    1.0
}

/// A fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// Wait before handling the request.
    Latency {
        /// Milliseconds.
        ms: u64,
    },
    /// Answer with this 5xx status without handling the request.
    Error {
        /// 500 to 599.
        status: u16,
    },
    /// Answer 429 to this and the next `burst - 1` matching requests.
    RateLimit {
        /// Length of the burst (at least 1).
        burst: u64,
    },
    /// Close the connection without handling the request: nothing changes.
    DropBeforeWrite,
    /// Handle the request (the write commits), then close the connection instead of answering.
    DropAfterWrite,
}

/// What to do with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Decision {
    /// Total injected latency.
    pub(crate) latency_ms: u64,
    /// The first non-latency fault that fired.
    pub(crate) action: Option<Action>,
}

/// A fault that replaces or follows the handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Error(u16),
    RateLimit,
    DropBefore,
    DropAfter,
}

#[derive(Debug, Clone, Default)]
struct RuleState {
    seen: u64,
    fired: u64,
    burst_left: u64,
}

/// The configured rules and their progress.
#[derive(Debug)]
pub(crate) struct Faults {
    config: FaultConfig,
    rng: StdRng,
    state: Vec<RuleState>,
}

impl FaultConfig {
    /// Checks values that would make a rule meaningless.
    pub fn validate(&self) -> Result<(), String> {
        for (i, r) in self.rules.iter().enumerate() {
            if !(0.0..=1.0).contains(&r.probability) {
                return Err(format!("rules[{i}].probability must be between 0 and 1"));
            }
            match r.fault {
                Fault::Error { status } if !(500..=599).contains(&status) => {
                    return Err(format!("rules[{i}].fault.status must be 500 to 599"));
                }
                Fault::Latency { ms } if ms > MAX_LATENCY_MS => {
                    return Err(format!(
                        "rules[{i}].fault.ms must be at most {MAX_LATENCY_MS}"
                    ));
                }
                Fault::RateLimit { burst: 0 } => {
                    return Err(format!("rules[{i}].fault.burst must be at least 1"));
                }
                _ => {}
            }
            if r.route != "*" && r.route.split_once(' ').is_none() {
                return Err(format!("rules[{i}].route must be `*` or `METHOD /path`"));
            }
        }
        Ok(())
    }
}

fn route_matches(pattern: &str, method: &str, route: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    let Some((m, p)) = pattern.split_once(' ') else {
        return false;
    };
    (m == "*" || m.eq_ignore_ascii_case(method)) && (p == "*" || p == route)
}

impl Faults {
    pub(crate) fn new(config: FaultConfig) -> Self {
        let rng = StdRng::seed_from_u64(config.seed);
        let state = vec![RuleState::default(); config.rules.len()];
        Self { config, rng, state }
    }

    pub(crate) fn config(&self) -> &FaultConfig {
        &self.config
    }

    /// Decides the faults of one request. Every matching probabilistic rule draws from the RNG
    /// whether or not an earlier rule fired, so the draw sequence depends only on the requests.
    pub(crate) fn decide(&mut self, method: &str, route: &str) -> Decision {
        let mut d = Decision::default();
        for (rule, st) in self.config.rules.iter().zip(self.state.iter_mut()) {
            if !route_matches(&rule.route, method, route) {
                continue;
            }
            st.seen += 1;
            let fire = if st.burst_left > 0 {
                st.burst_left -= 1;
                true
            } else {
                let draw: f64 = self.rng.random();
                let eligible = st.seen > rule.skip && rule.times.is_none_or(|t| st.fired < t);
                let hit = eligible && draw < rule.probability;
                if hit {
                    st.fired += 1;
                    if let Fault::RateLimit { burst } = rule.fault {
                        st.burst_left = burst.saturating_sub(1);
                    }
                }
                hit
            };
            if !fire {
                continue;
            }
            let action = match rule.fault {
                Fault::Latency { ms } => {
                    d.latency_ms = d.latency_ms.saturating_add(ms);
                    None
                }
                Fault::Error { status } => Some(Action::Error(status)),
                Fault::RateLimit { .. } => Some(Action::RateLimit),
                Fault::DropBeforeWrite => Some(Action::DropBefore),
                Fault::DropAfterWrite => Some(Action::DropAfter),
            };
            if d.action.is_none() {
                d.action = action;
            }
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(seed: u64) -> FaultConfig {
        FaultConfig {
            seed,
            rules: vec![FaultRule {
                route: "PUT /v2/deals/{id}".into(),
                fault: Fault::Error { status: 503 },
                probability: 0.5,
                skip: 0,
                times: None,
            }],
        }
    }

    fn run(seed: u64) -> Vec<bool> {
        let mut f = Faults::new(config(seed));
        (0..64)
            .map(|_| f.decide("PUT", "/v2/deals/{id}").action.is_some())
            .collect()
    }

    #[test]
    fn the_same_seed_replays_the_same_failures() {
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        assert!(run(7).iter().any(|x| *x) && run(7).iter().any(|x| !*x));
    }

    #[test]
    fn other_routes_are_untouched_and_bursts_last() {
        let mut f = Faults::new(FaultConfig {
            seed: 1,
            rules: vec![FaultRule {
                route: "* /v2/deals".into(),
                fault: Fault::RateLimit { burst: 3 },
                probability: 1.0,
                skip: 1,
                times: Some(1),
            }],
        });
        assert_eq!(f.decide("GET", "/v2/contacts").action, None);
        let got: Vec<_> = (0..6)
            .map(|_| f.decide("GET", "/v2/deals").action)
            .collect();
        let r = Some(Action::RateLimit);
        assert_eq!(got, vec![None, r, r, r, None, None]);
    }

    #[test]
    fn invalid_rules_are_refused() {
        let mut c = config(1);
        c.rules[0].fault = Fault::Error { status: 200 };
        assert!(c.validate().is_err());
        let mut c = config(1);
        c.rules[0].probability = 2.0;
        assert!(c.validate().is_err());
        assert!(config(1).validate().is_ok());
    }
}
