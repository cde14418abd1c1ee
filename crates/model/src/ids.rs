//! Identifiers: newtypes so that a user id is never passed where a device id is meant.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An identifier that failed to parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind}: {reason}: {input:?}")]
pub struct BadId {
    /// Which kind of identifier was expected.
    pub kind: &'static str,
    /// What was wrong with it.
    pub reason: &'static str,
    /// The rejected input (truncated to 64 characters).
    pub input: String,
}

impl BadId {
    fn new(kind: &'static str, reason: &'static str, input: &str) -> Self {
        BadId {
            kind,
            reason,
            input: input.chars().take(64).collect(),
        }
    }
}

/// The local, stable id of a record, given at birth on whichever node created it.
///
/// Invariant: 1 to 64 characters from `[A-Za-z0-9_-]`. It is also the record document's id in
/// the store and on the wire, and never changes once given, not even when the CRM assigns its
/// own id to the record.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RecordId(String);

impl RecordId {
    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn check_token(kind: &'static str, s: &str) -> Result<(), BadId> {
    if s.is_empty() {
        return Err(BadId::new(kind, "empty", s));
    }
    if s.len() > 64 {
        return Err(BadId::new(kind, "longer than 64 characters", s));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(BadId::new(
            kind,
            "only letters, digits, '-' and '_' are allowed",
            s,
        ));
    }
    Ok(())
}

macro_rules! token_id {
    ($name:ident, $kind:literal) => {
        impl FromStr for $name {
            type Err = BadId;
            fn from_str(s: &str) -> Result<Self, BadId> {
                check_token($kind, s)?;
                Ok($name(s.to_owned()))
            }
        }
        impl TryFrom<String> for $name {
            type Error = BadId;
            fn try_from(s: String) -> Result<Self, BadId> {
                check_token($kind, &s)?;
                Ok($name(s))
            }
        }
        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

token_id!(RecordId, "record id");
token_id!(DeviceId, "device id");
token_id!(ActivityId, "activity id");

/// The local id of an activity (note, task, call) inside a record's document, given at birth.
///
/// Invariant: same alphabet and length as [`RecordId`]; unique within its record.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ActivityId(String);

impl ActivityId {
    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A valid id that names no activity, for lookups that need a scope but no activity.
    pub(crate) fn placeholder() -> ActivityId {
        ActivityId("_".to_owned())
    }
}

/// The id of a device (a phone, a laptop, or the hub's bridge).
///
/// Invariant: same alphabet and length as [`RecordId`]. Unique per live replica: it is also the
/// Automerge actor of every change the device makes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DeviceId(String);

impl DeviceId {
    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The device id under which the bridge writes what the CRM says. The keep-server tier lets
    /// registers written by it win over concurrent device writes.
    pub fn crm() -> DeviceId {
        DeviceId("crm".to_owned())
    }

    /// Whether this is the CRM's device id.
    pub fn is_crm(&self) -> bool {
        self.0 == "crm"
    }
}

/// A CRM user id (in Zendesk Sell, the numeric user id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(pub u64);

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for UserId {
    type Err = BadId;
    fn from_str(s: &str) -> Result<Self, BadId> {
        s.parse()
            .map(UserId)
            .map_err(|_| BadId::new("user id", "not a positive integer", s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_ids_reject_empty_long_and_odd_characters() {
        assert!("".parse::<RecordId>().is_err());
        assert!("a".repeat(65).parse::<RecordId>().is_err());
        assert!("deal/1".parse::<RecordId>().is_err());
        assert_eq!("deal-1_x".parse::<RecordId>().unwrap().as_str(), "deal-1_x");
    }

    #[test]
    fn ids_round_trip_through_json() {
        let id: RecordId = "d1".parse().unwrap();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"d1\"");
        assert!(serde_json::from_str::<RecordId>("\"a b\"").is_err());
    }
}
