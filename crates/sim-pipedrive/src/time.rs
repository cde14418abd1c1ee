//! Timestamps: v2 uses RFC 3339 at second precision (`2026-11-02T09:00:00Z`), v1
//! `YYYY-MM-DD HH:MM:SS` in UTC. Records keep the v2 form; v1 objects (notes) keep the v1 form.

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};

/// Now, truncated to the second, in the v2 form.
pub(crate) fn now_v2() -> String {
    v2(Utc::now())
}

/// Now, in the v1 form.
pub(crate) fn now_v1() -> String {
    v1(Utc::now())
}

pub(crate) fn v2(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub(crate) fn v1(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// An RFC 3339 timestamp (any offset, optional fraction) as a UTC instant.
pub(crate) fn parse_rfc3339(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// A `YYYY-MM-DD` date.
pub(crate) fn is_date(s: &str) -> bool {
    s.len() == 10 && NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()
}

/// `HH:MM` or `HH:MM:SS`.
pub(crate) fn is_time(s: &str) -> bool {
    chrono::NaiveTime::parse_from_str(s, "%H:%M").is_ok()
        || chrono::NaiveTime::parse_from_str(s, "%H:%M:%S").is_ok()
}
