//! List queries (API doc §2.3): `page`, `per_page`, `sort_by`, `ids` and equality filters,
//! parsed from the raw query string and applied to rows. Pure.

use std::cmp::Ordering;

use sellsync_api::Money;
use serde_json::Value;

use crate::error::ApiError;
use crate::schema::{Kind, Ty};
use crate::store::Row;

/// Decodes `a=1&b=x%20y&ids=1&ids=2` into pairs, in order. `+` is a space.
pub(crate) fn parse_pairs(raw: &str) -> Result<Vec<(String, String)>, ApiError> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Ok((percent_decode(k)?, percent_decode(v)?))
        })
        .collect()
}

fn percent_decode(s: &str) -> Result<String, ApiError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok());
                let b = hex.and_then(|h| u8::from_str_radix(h, 16).ok());
                let b = b.ok_or_else(|| {
                    ApiError::invalid_param(format!("bad percent-encoding in `{s}`"))
                })?;
                out.push(b);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| ApiError::invalid_param("query is not UTF-8"))
}

/// A validated list query.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ListQuery {
    pub(crate) page: u64,
    pub(crate) per_page: u64,
    pub(crate) sort_field: String,
    pub(crate) descending: bool,
    pub(crate) ids: Option<Vec<u64>>,
    /// (attribute path, expected text); `a[b]` filters on a nested attribute.
    pub(crate) filters: Vec<(Vec<String>, String)>,
    /// Pairs kept for the paging links, without `page`.
    pub(crate) passthrough: Vec<(String, String)>,
}

fn positive(name: &str, v: &str, max: Option<u64>) -> Result<u64, ApiError> {
    let n: Option<u64> = v.parse().ok();
    match (n, max) {
        (Some(n), Some(max)) if (1..=max).contains(&n) => Ok(n),
        (Some(n), None) if n >= 1 => Ok(n),
        _ => Err(ApiError::invalid_param(match max {
            Some(max) => format!("{name} must be between 1 and {max}, given: {v}"),
            None => format!("{name} must be a positive integer, given: {v}"),
        })),
    }
}

impl ListQuery {
    /// Validates the pairs for a list of `kind`. Unknown parameters are ignored.
    pub(crate) fn parse(kind: Kind, pairs: &[(String, String)]) -> Result<Self, ApiError> {
        let mut q = ListQuery {
            page: 1,
            per_page: 25,
            sort_field: kind.default_sort().to_owned(),
            descending: false,
            ids: None,
            filters: Vec::new(),
            passthrough: Vec::new(),
        };
        for (k, v) in pairs {
            if k != "page" {
                q.passthrough.push((k.clone(), v.clone()));
            }
            match k.as_str() {
                "page" => q.page = positive("page", v, None)?,
                "per_page" => q.per_page = positive("per_page", v, Some(100))?,
                "sort_by" => {
                    let first = v.split(',').next().unwrap_or("");
                    let (field, dir) = first.split_once(':').unwrap_or((first, "asc"));
                    let sortable = kind.field(field).is_some_and(|f| {
                        !matches!(f.ty, Ty::Tags | Ty::CustomFields | Ty::Address | Ty::IdList)
                    });
                    if !sortable || !matches!(dir, "asc" | "desc") {
                        return Err(ApiError::invalid_param(format!(
                            "sort_by `{v}` is not supported"
                        )));
                    }
                    q.sort_field = field.to_owned();
                    q.descending = dir == "desc";
                }
                "ids" => {
                    let ids = q.ids.get_or_insert_with(Vec::new);
                    for part in v.split(',').filter(|p| !p.is_empty()) {
                        let id = part.trim().parse().map_err(|_| {
                            ApiError::invalid_param(format!("ids must be integers, given: {part}"))
                        })?;
                        ids.push(id);
                    }
                }
                key => {
                    let path: Vec<String> = match key.split_once('[') {
                        Some((head, rest)) => match rest.strip_suffix(']') {
                            Some(inner) => vec![head.to_owned(), inner.to_owned()],
                            None => continue,
                        },
                        None => vec![key.to_owned()],
                    };
                    let Some(field) = kind.field(&path[0]) else {
                        continue;
                    };
                    let nested_ok = matches!(field.ty, Ty::Address | Ty::CustomFields);
                    if path.len() == 2 && !nested_ok || path.len() == 1 && nested_ok {
                        continue;
                    }
                    if matches!(field.ty, Ty::Id | Ty::Count) && v.parse::<u64>().is_err() {
                        return Err(ApiError::invalid_param(format!(
                            "{key} must be an integer, given: {v}"
                        )));
                    }
                    q.filters.push((path, v.clone()));
                }
            }
        }
        Ok(q)
    }

    fn matches(&self, row: &Row) -> bool {
        if let Some(ids) = &self.ids {
            let id = row.data.get("id").and_then(Value::as_u64).unwrap_or(0);
            if !ids.contains(&id) {
                return false;
            }
        }
        self.filters.iter().all(|(path, want)| {
            let mut v = row.data.get(&path[0]);
            if let Some(inner) = path.get(1) {
                v = v.and_then(|x| x.get(inner));
            }
            match v {
                Some(Value::String(s)) => s == want,
                Some(Value::Number(n)) => n.to_string() == *want,
                Some(Value::Bool(b)) => b.to_string() == *want,
                Some(Value::Array(a)) => a.iter().any(|x| x.as_str() == Some(want)),
                _ => want.is_empty() || want == "null",
            }
        })
    }

    /// Filters, sorts and pages `rows`; returns the page and whether another page follows.
    pub(crate) fn apply<'a>(
        &self,
        kind: Kind,
        rows: impl Iterator<Item = &'a Row>,
    ) -> (Vec<&'a Row>, bool) {
        let money = kind
            .field(&self.sort_field)
            .is_some_and(|f| f.ty == Ty::Money);
        let mut hits: Vec<&Row> = rows.filter(|r| self.matches(r)).collect();
        hits.sort_by(|a, b| {
            let ka = sort_key(a.data.get(&self.sort_field), money);
            let kb = sort_key(b.data.get(&self.sort_field), money);
            let ord = ka.partial_cmp(&kb).unwrap_or(Ordering::Equal);
            let ord = if self.descending { ord.reverse() } else { ord };
            let id = |r: &Row| r.data.get("id").and_then(Value::as_u64);
            ord.then_with(|| id(a).cmp(&id(b)))
        });
        let start = (self.page - 1).saturating_mul(self.per_page);
        let start = usize::try_from(start).unwrap_or(usize::MAX).min(hits.len());
        let end = start
            .saturating_add(usize::try_from(self.per_page).unwrap_or(100))
            .min(hits.len());
        let more = end < hits.len();
        (hits[start..end].to_vec(), more)
    }
}

/// Sort order: nulls first, then booleans, numbers, strings.
#[derive(Debug, PartialEq, PartialOrd)]
enum SortKey<'a> {
    Null,
    Bool(bool),
    Num(f64),
    Str(&'a str),
}

fn sort_key(v: Option<&Value>, money: bool) -> SortKey<'_> {
    match v {
        None | Some(Value::Null) => SortKey::Null,
        Some(Value::Bool(b)) => SortKey::Bool(*b),
        Some(Value::Number(n)) => SortKey::Num(n.as_f64().unwrap_or(0.0)),
        Some(Value::String(s)) if money => SortKey::Num(
            s.parse::<Money>()
                .map(|m| m.cents as f64 / 100.0)
                .unwrap_or(0.0),
        ),
        Some(Value::String(s)) => SortKey::Str(s),
        Some(_) => SortKey::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_repeated_and_comma_separated_ids() {
        let pairs =
            parse_pairs("ids=1%2C2&ids=3&per_page=2&sort_by=updated_at%3Adesc").unwrap_or_default();
        let q = ListQuery::parse(Kind::Deal, &pairs).ok();
        assert_eq!(q.as_ref().and_then(|q| q.ids.clone()), Some(vec![1, 2, 3]));
        assert_eq!(
            q.as_ref().map(|q| (q.sort_field.as_str(), q.descending)),
            Some(("updated_at", true))
        );
    }

    #[test]
    fn per_page_out_of_range_is_invalid_param() {
        for bad in [
            "per_page=0",
            "per_page=101",
            "per_page=x",
            "page=0",
            "sort_by=nope",
            "owner_id=x",
        ] {
            let pairs = parse_pairs(bad).unwrap_or_default();
            let err = ListQuery::parse(Kind::Deal, &pairs)
                .err()
                .map(|e| e.errors[0].code.clone());
            assert_eq!(err.as_deref(), Some("invalid_param"), "{bad}");
        }
    }

    #[test]
    fn bad_percent_encoding_is_invalid_param() {
        assert!(parse_pairs("a=%zz").is_err());
        assert!(parse_pairs("a=%ff").is_err());
    }
}
