//! A deal's `value` (API doc §5.1): an integer when whole (`1000`), otherwise a string with two
//! decimals (`"1000.50"`). Clients send it as a string. Held as whole cents, never as a float.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An amount with two decimal places, stored as cents. Invariant: exact; no rounding ever happens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Money {
    /// The amount in hundredths.
    pub cents: i64,
}

/// Why a text is not a [`Money`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MoneyError {
    /// Not digits with an optional sign and at most two decimals.
    Malformed(String),
    /// Does not fit in 64-bit cents.
    TooLarge(String),
}

impl fmt::Display for MoneyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed(s) => write!(f, "`{s}` is not an amount with at most two decimals"),
            Self::TooLarge(s) => write!(f, "`{s}` is too large"),
        }
    }
}

impl std::error::Error for MoneyError {}

impl Money {
    /// A whole amount.
    pub fn from_units(units: i64) -> Option<Self> {
        units.checked_mul(100).map(|cents| Self { cents })
    }

    /// True when the amount has no fraction, so it goes on the wire as an integer.
    pub fn is_whole(self) -> bool {
        self.cents % 100 == 0
    }
}

impl FromStr for Money {
    type Err = MoneyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let malformed = || MoneyError::Malformed(s.to_owned());
        let (negative, body) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let (whole, frac) = match body.split_once('.') {
            Some((w, f)) => (w, f),
            None => (body, ""),
        };
        let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !digits(whole) || !digits(frac) || frac.len() > 2 {
            return Err(malformed());
        }
        if body.contains('.') && frac.is_empty() {
            return Err(malformed());
        }
        let too_large = || MoneyError::TooLarge(s.to_owned());
        let units: i64 = whole.parse().map_err(|_| too_large())?;
        let frac_cents: i64 = match frac.len() {
            0 => 0,
            1 => i64::from(frac.as_bytes()[0] - b'0') * 10,
            _ => frac.parse().map_err(|_| malformed())?,
        };
        let cents = units
            .checked_mul(100)
            .and_then(|c| c.checked_add(frac_cents))
            .ok_or_else(too_large)?;
        Ok(Self {
            cents: if negative { -cents } else { cents },
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

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.is_whole() {
            serializer.serialize_i64(self.cents / 100)
        } else {
            serializer.collect_str(self)
        }
    }
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(MoneyVisitor)
    }
}

struct MoneyVisitor;

impl Visitor<'_> for MoneyVisitor {
    type Value = Money;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an integer or a decimal string with at most two decimals")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Money, E> {
        Money::from_units(v).ok_or_else(|| E::custom("amount too large"))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Money, E> {
        let v = i64::try_from(v).map_err(|_| E::custom("amount too large"))?;
        self.visit_i64(v)
    }

    /// A JSON number with a fraction is read through its shortest decimal text (`12.5` reads
    /// as "12.5"), so it is exact whenever it has at most two decimals, and refused otherwise.
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Money, E> {
        if !v.is_finite() {
            return Err(E::custom("amount is not finite"));
        }
        format!("{v}").parse().map_err(E::custom)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Money, E> {
        v.parse().map_err(E::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::Money;

    fn wire(m: Money) -> String {
        serde_json::to_string(&m).unwrap_or_default()
    }

    #[test]
    fn whole_amounts_are_integers_and_fractions_are_two_decimal_strings() {
        assert_eq!(wire(Money { cents: 100_000 }), "1000");
        assert_eq!(wire(Money { cents: 100_050 }), "\"1000.50\"");
        assert_eq!(wire(Money { cents: -5 }), "\"-0.05\"");
    }

    #[test]
    fn reads_integers_strings_and_short_decimals() {
        let read = |s: &str| serde_json::from_str::<Money>(s).map(|m| m.cents).ok();
        assert_eq!(read("1000"), Some(100_000));
        assert_eq!(read("\"12.5\""), Some(1250));
        assert_eq!(read("\"12.50\""), Some(1250));
        assert_eq!(read("\"7\""), Some(700));
        assert_eq!(read("12.25"), Some(1225));
        assert_eq!(read("\"-3.10\""), Some(-310));
        assert_eq!(read("\"12.345\""), None);
        assert_eq!(read("\"12.\""), None);
        assert_eq!(read("\"abc\""), None);
        assert_eq!(read("\"\""), None);
        assert_eq!(read("true"), None);
        assert_eq!(read("null"), None);
        assert_eq!(read("\"99999999999999999999\""), None);
    }
}
