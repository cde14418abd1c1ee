//! Field values: what a register holds, typed, and how it is written into a document.
//!
//! A value is stored as one of four plain scalars (null, string, integer, boolean). The field's
//! kind (from the schema, or from the catalog for custom fields) says how to read it back, so the
//! stored form stays small and readable by any Automerge tool.

use std::fmt;

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::RecordId;

/// An amount of money in minor units (cents): never a float.
///
/// Invariant: two decimal places, as Zendesk Sell gives them; the sign is kept so that a negative
/// amount can be reported as a validation conflict rather than lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Money {
    cents: i64,
}

impl Money {
    /// An amount from minor units.
    pub fn from_cents(cents: i64) -> Money {
        Money { cents }
    }

    /// The amount in minor units.
    pub fn cents(self) -> i64 {
        self.cents
    }

    /// Parses `1000`, `1000.5`, `1000.50`, `-3.10`. More than two decimals, exponents, separators
    /// or anything else is an error: money is never rounded silently.
    pub fn parse(s: &str) -> Result<Money, String> {
        let t = s.trim();
        let (neg, digits) = match t.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, t),
        };
        let (whole, frac) = match digits.split_once('.') {
            Some((w, f)) => (w, f),
            None => (digits, ""),
        };
        let all_digits = |x: &str| x.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !all_digits(whole) || !all_digits(frac) || frac.len() > 2 {
            return Err(format!("not an amount with at most two decimals: {s:?}"));
        }
        if digits.contains('.') && frac.is_empty() {
            return Err(format!("not an amount with at most two decimals: {s:?}"));
        }
        let whole: i64 = whole
            .parse()
            .map_err(|_| format!("amount too large: {s:?}"))?;
        let frac_cents = match frac.len() {
            0 => 0,
            1 => frac.parse::<i64>().unwrap_or(0) * 10,
            _ => frac.parse::<i64>().unwrap_or(0),
        };
        let cents = whole
            .checked_mul(100)
            .and_then(|c| c.checked_add(frac_cents))
            .ok_or_else(|| format!("amount too large: {s:?}"))?;
        Ok(Money {
            cents: if neg { -cents } else { cents },
        })
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.cents < 0 { "-" } else { "" };
        let abs = self.cents.unsigned_abs();
        write!(f, "{sign}{}.{:02}", abs / 100, abs % 100)
    }
}

impl TryFrom<String> for Money {
    type Error = String;
    fn try_from(s: String) -> Result<Money, String> {
        Money::parse(&s)
    }
}

impl From<Money> for String {
    fn from(m: Money) -> String {
        m.to_string()
    }
}

/// A reference to another record: by its CRM id once known, or by its local id for a record
/// created offline that the CRM has not seen yet.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordRef {
    /// The record's id in the CRM.
    Crm(u64),
    /// The record's local id.
    Local(RecordId),
}

impl fmt::Display for RecordRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordRef::Crm(id) => write!(f, "{id}"),
            RecordRef::Local(id) => write!(f, "local:{id}"),
        }
    }
}

/// A typed field value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type", content = "value")]
pub enum Value {
    /// No value (a cleared field).
    Null,
    /// Free text, also enumerations and currency codes.
    Text(String),
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A decimal number kept as its canonical decimal string (custom number fields).
    Number(String),
    /// Money in minor units.
    Money(Money),
    /// A calendar date.
    Date(NaiveDate),
    /// An instant, in UTC, to the millisecond.
    DateTime(DateTime<Utc>),
    /// The CRM id of a catalog entry: a user, stage, source, loss reason, call outcome.
    Ref(u64),
    /// Another record.
    Record(RecordRef),
    /// A set of choices (multi-select list custom fields), sorted.
    List(Vec<String>),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("(empty)"),
            Value::Text(s) | Value::Number(s) => f.write_str(s),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Money(m) => write!(f, "{m}"),
            Value::Date(d) => write!(f, "{}", d.format("%Y-%m-%d")),
            Value::DateTime(t) => f.write_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true)),
            Value::Ref(id) => write!(f, "#{id}"),
            Value::Record(r) => write!(f, "{r}"),
            Value::List(items) => f.write_str(&items.join(", ")),
        }
    }
}

/// The stored form of a value: one of the four scalars every layout can hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Scalar {
    Null,
    Str(String),
    Int(i64),
    Bool(bool),
}

impl Scalar {
    pub(crate) fn to_automerge(&self) -> automerge::ScalarValue {
        match self {
            Scalar::Null => automerge::ScalarValue::Null,
            Scalar::Str(s) => automerge::ScalarValue::Str(s.as_str().into()),
            Scalar::Int(i) => automerge::ScalarValue::Int(*i),
            Scalar::Bool(b) => automerge::ScalarValue::Boolean(*b),
        }
    }

    pub(crate) fn from_automerge(v: &automerge::ScalarValue) -> Option<Scalar> {
        Some(match v {
            automerge::ScalarValue::Null => Scalar::Null,
            automerge::ScalarValue::Str(s) => Scalar::Str(s.to_string()),
            automerge::ScalarValue::Int(i) => Scalar::Int(*i),
            automerge::ScalarValue::Uint(u) => Scalar::Int(i64::try_from(*u).ok()?),
            automerge::ScalarValue::Boolean(b) => Scalar::Bool(*b),
            _ => return None,
        })
    }

    pub(crate) fn to_json(&self) -> serde_json::Value {
        match self {
            Scalar::Null => serde_json::Value::Null,
            Scalar::Str(s) => serde_json::Value::String(s.clone()),
            Scalar::Int(i) => serde_json::Value::from(*i),
            Scalar::Bool(b) => serde_json::Value::Bool(*b),
        }
    }

    pub(crate) fn from_json(v: &serde_json::Value) -> Option<Scalar> {
        Some(match v {
            serde_json::Value::Null => Scalar::Null,
            serde_json::Value::String(s) => Scalar::Str(s.clone()),
            serde_json::Value::Number(n) => Scalar::Int(n.as_i64()?),
            serde_json::Value::Bool(b) => Scalar::Bool(*b),
            _ => return None,
        })
    }
}

/// How a field's stored scalar is read back: the value's type, without its constraints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Repr {
    /// A custom field whose definition is not known yet: the scalar's own type.
    Any,
    Text,
    Bool,
    Int,
    Number,
    Money,
    Date,
    DateTime,
    Ref,
    Record,
    List,
}

const LOCAL_PREFIX: &str = "local:";

impl Value {
    /// The stored scalar.
    pub(crate) fn to_scalar(&self) -> Scalar {
        match self {
            Value::Null => Scalar::Null,
            Value::Text(s) | Value::Number(s) => Scalar::Str(s.clone()),
            Value::Bool(b) => Scalar::Bool(*b),
            Value::Int(i) => Scalar::Int(*i),
            Value::Money(m) => Scalar::Str(m.to_string()),
            Value::Date(d) => Scalar::Str(d.format("%Y-%m-%d").to_string()),
            Value::DateTime(t) => Scalar::Str(t.to_rfc3339_opts(SecondsFormat::Millis, true)),
            Value::Ref(id) => Scalar::Int(i64::try_from(*id).unwrap_or(i64::MAX)),
            Value::Record(RecordRef::Crm(id)) => {
                Scalar::Int(i64::try_from(*id).unwrap_or(i64::MAX))
            }
            Value::Record(RecordRef::Local(id)) => Scalar::Str(format!("{LOCAL_PREFIX}{id}")),
            Value::List(items) => {
                Scalar::Str(serde_json::to_string(items).unwrap_or_else(|_| "[]".into()))
            }
        }
    }

    /// Reads a stored scalar as `repr`. A scalar that does not fit (a document written under
    /// another catalog, or by a faulty peer) comes back as `Err` with the scalar as text, so that
    /// the projection can show it as a validation conflict instead of dropping it.
    pub(crate) fn from_scalar(repr: Repr, s: &Scalar) -> Result<Value, String> {
        let raw = || match s {
            Scalar::Null => "null".to_owned(),
            Scalar::Str(x) => x.clone(),
            Scalar::Int(i) => i.to_string(),
            Scalar::Bool(b) => b.to_string(),
        };
        if *s == Scalar::Null {
            return Ok(Value::Null);
        }
        let value = match (repr, s) {
            (Repr::Any, Scalar::Str(x)) => Some(Value::Text(x.clone())),
            (Repr::Any, Scalar::Int(i)) => Some(Value::Int(*i)),
            (Repr::Any, Scalar::Bool(b)) => Some(Value::Bool(*b)),
            (Repr::Text, Scalar::Str(x)) => Some(Value::Text(x.clone())),
            (Repr::Bool, Scalar::Bool(b)) => Some(Value::Bool(*b)),
            (Repr::Int, Scalar::Int(i)) => Some(Value::Int(*i)),
            (Repr::Number, Scalar::Str(x)) => parse_number(x).ok().map(Value::Number),
            (Repr::Money, Scalar::Str(x)) => Money::parse(x).ok().map(Value::Money),
            (Repr::Date, Scalar::Str(x)) => NaiveDate::parse_from_str(x, "%Y-%m-%d")
                .ok()
                .map(Value::Date),
            (Repr::DateTime, Scalar::Str(x)) => DateTime::parse_from_rfc3339(x)
                .ok()
                .map(|t| Value::DateTime(t.with_timezone(&Utc))),
            (Repr::Ref, Scalar::Int(i)) => u64::try_from(*i).ok().map(Value::Ref),
            (Repr::Record, Scalar::Int(i)) => u64::try_from(*i)
                .ok()
                .map(|id| Value::Record(RecordRef::Crm(id))),
            (Repr::Record, Scalar::Str(x)) => x
                .strip_prefix(LOCAL_PREFIX)
                .and_then(|id| id.parse().ok())
                .map(|id| Value::Record(RecordRef::Local(id))),
            (Repr::List, Scalar::Str(x)) => serde_json::from_str(x).ok().map(Value::List),
            _ => None,
        };
        value.ok_or_else(raw)
    }

    /// Parses what a person typed for a field of type `repr`. `""` and `null` clear the field.
    pub(crate) fn parse_as(repr: Repr, input: &str) -> Result<Value, String> {
        let t = input.trim();
        if t.is_empty() || t == "null" {
            return Ok(Value::Null);
        }
        let bad = |what: &str| format!("expected {what}, got {input:?}");
        Ok(match repr {
            Repr::Text | Repr::Any => Value::Text(input.to_owned()),
            Repr::Bool => match t {
                "true" | "yes" => Value::Bool(true),
                "false" | "no" => Value::Bool(false),
                _ => return Err(bad("true or false")),
            },
            Repr::Int => Value::Int(t.parse().map_err(|_| bad("an integer"))?),
            Repr::Number => Value::Number(parse_number(t).map_err(|_| bad("a decimal number"))?),
            Repr::Money => Value::Money(Money::parse(t)?),
            Repr::Date => Value::Date(
                NaiveDate::parse_from_str(t, "%Y-%m-%d").map_err(|_| bad("a date YYYY-MM-DD"))?,
            ),
            Repr::DateTime => Value::DateTime(
                DateTime::parse_from_rfc3339(t)
                    .map_err(|_| bad("a date-time like 2026-01-31T09:00:00Z"))?
                    .with_timezone(&Utc),
            ),
            Repr::Ref => Value::Ref(
                t.trim_start_matches('#')
                    .parse()
                    .map_err(|_| bad("an id"))?,
            ),
            Repr::Record => match t.strip_prefix(LOCAL_PREFIX) {
                Some(id) => {
                    Value::Record(RecordRef::Local(id.parse().map_err(|e| format!("{e}"))?))
                }
                None => Value::Record(RecordRef::Crm(t.parse().map_err(|_| bad("a record id"))?)),
            },
            Repr::List => {
                let mut items: Vec<String> = t
                    .split(',')
                    .map(|x| x.trim().to_owned())
                    .filter(|x| !x.is_empty())
                    .collect();
                items.sort();
                items.dedup();
                Value::List(items)
            }
        })
    }
}

/// Canonical decimal string: optional minus, digits, optional fraction without trailing zeros.
fn parse_number(s: &str) -> Result<String, ()> {
    let t = s.trim();
    let (neg, digits) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t),
    };
    let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let ok = |x: &str| x.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !ok(whole) || !ok(frac) || (digits.contains('.') && frac.is_empty()) {
        return Err(());
    }
    let whole = whole.trim_start_matches('0');
    let whole = if whole.is_empty() { "0" } else { whole };
    let frac = frac.trim_end_matches('0');
    let body = if frac.is_empty() {
        whole.to_owned()
    } else {
        format!("{whole}.{frac}")
    };
    Ok(if neg && body != "0" {
        format!("-{body}")
    } else {
        body
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_parses_two_decimals_and_refuses_rounding() {
        assert_eq!(Money::parse("1000").unwrap().cents(), 100_000);
        assert_eq!(Money::parse("1000.5").unwrap().cents(), 100_050);
        assert_eq!(Money::parse("-3.10").unwrap().cents(), -310);
        assert_eq!(Money::parse("0.07").unwrap().to_string(), "0.07");
        for bad in [
            "1.234",
            "1e3",
            "",
            "1,000",
            "abc",
            "1.",
            ".5",
            "99999999999999999999",
        ] {
            assert!(Money::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_value_round_trips_through_its_scalar() {
        let cases = [
            (Repr::Text, Value::Text("hello".into())),
            (Repr::Bool, Value::Bool(true)),
            (Repr::Int, Value::Int(-4)),
            (Repr::Number, Value::Number("12.5".into())),
            (Repr::Money, Value::Money(Money::from_cents(123_456))),
            (
                Repr::Date,
                Value::Date(NaiveDate::from_ymd_opt(2026, 3, 1).unwrap()),
            ),
            (Repr::Ref, Value::Ref(42)),
            (Repr::Record, Value::Record(RecordRef::Crm(7))),
            (
                Repr::Record,
                Value::Record(RecordRef::Local("c-1".parse().unwrap())),
            ),
            (Repr::List, Value::List(vec!["a".into(), "b".into()])),
            (Repr::Text, Value::Null),
        ];
        for (repr, v) in cases {
            let s = v.to_scalar();
            assert_eq!(Value::from_scalar(repr, &s), Ok(v.clone()));
            assert_eq!(Scalar::from_json(&s.to_json()), Some(s.clone()));
            assert_eq!(Scalar::from_automerge(&s.to_automerge()), Some(s));
        }
    }

    #[test]
    fn a_scalar_of_the_wrong_type_is_reported_not_dropped() {
        assert_eq!(
            Value::from_scalar(Repr::Money, &Scalar::Str("x".into())),
            Err("x".into())
        );
        assert_eq!(
            Value::from_scalar(Repr::Ref, &Scalar::Bool(true)),
            Err("true".into())
        );
    }

    #[test]
    fn typed_input_parses_or_says_what_it_expected() {
        assert_eq!(
            Value::parse_as(Repr::Money, "10.5"),
            Ok(Value::Money(Money::from_cents(1050)))
        );
        assert!(
            Value::parse_as(Repr::Int, "ten")
                .unwrap_err()
                .contains("an integer")
        );
        assert_eq!(
            Value::parse_as(Repr::Number, "007.50"),
            Ok(Value::Number("7.5".into()))
        );
        assert_eq!(
            Value::parse_as(Repr::List, "b, a, b"),
            Ok(Value::List(vec!["a".into(), "b".into()]))
        );
        assert_eq!(Value::parse_as(Repr::Text, ""), Ok(Value::Null));
    }
}
