//! Paging: v2 keyset cursors (base64url of `{"field", "fieldValue", "sortDirection", "id"}`,
//! the shape of the spec's example cursor) and v1 `start`/`limit` offsets.

use std::cmp::Ordering;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use crate::error::PdError;
use crate::state::Row;

/// Query parameters as decoded pairs, in order.
pub(crate) type Pairs = Vec<(String, String)>;

pub(crate) fn parse_pairs(raw: Option<&str>) -> Pairs {
    form_urlencoded::parse(raw.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

pub(crate) fn param<'a>(q: &'a Pairs, name: &str) -> Option<&'a str> {
    q.iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// An optional positive integer parameter.
pub(crate) fn int_param(q: &Pairs, name: &str) -> Result<Option<u64>, PdError> {
    match param(q, name) {
        None | Some("") => Ok(None),
        Some(v) => v.parse::<u64>().map(Some).map_err(|_| {
            PdError::bad_request(format!("Validation failed: {name}: must be an integer"))
        }),
    }
}

/// `limit`: default 100, 1 to 500.
pub(crate) fn limit_param(q: &Pairs) -> Result<usize, PdError> {
    match int_param(q, "limit")? {
        None => Ok(100),
        Some(l @ 1..=500) => Ok(l as usize),
        Some(_) => Err(PdError::bad_request(
            "Validation failed: limit: must be between 1 and 500",
        )),
    }
}

/// Sort order of a v2 list.
#[derive(Debug, Clone)]
pub(crate) struct Sort {
    pub(crate) field: String,
    pub(crate) desc: bool,
}

impl Sort {
    pub(crate) fn parse(q: &Pairs, allowed: &[&str]) -> Result<Self, PdError> {
        let field = param(q, "sort_by").unwrap_or("id");
        if !allowed.contains(&field) {
            return Err(PdError::bad_request(format!(
                "Validation failed: sort_by: must be one of {}",
                allowed.join(", ")
            )));
        }
        let desc = match param(q, "sort_direction").unwrap_or("asc") {
            "asc" => false,
            "desc" => true,
            _ => {
                return Err(PdError::bad_request(
                    "Validation failed: sort_direction: must be one of asc, desc",
                ));
            }
        };
        Ok(Self {
            field: field.to_owned(),
            desc,
        })
    }

    fn key(&self, r: &Row) -> (Value, u64) {
        let id = r.get("id").and_then(Value::as_u64).unwrap_or(0);
        (r.get(&self.field).cloned().unwrap_or(Value::Null), id)
    }

    fn cmp_keys(&self, a: &(Value, u64), b: &(Value, u64)) -> Ordering {
        let o = cmp_value(&a.0, &b.0).then(a.1.cmp(&b.1));
        if self.desc { o.reverse() } else { o }
    }
}

/// Null first, then numbers, then strings (timestamps and dates compare as fixed-width text).
fn cmp_value(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x
            .as_f64()
            .unwrap_or(0.0)
            .partial_cmp(&y.as_f64().unwrap_or(0.0))
            .unwrap_or(Ordering::Equal),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Null, Value::Null) => Ordering::Equal,
        (Value::Null, _) => Ordering::Less,
        (_, Value::Null) => Ordering::Greater,
        (Value::Number(_), _) => Ordering::Less,
        _ => Ordering::Greater,
    }
}

fn encode_cursor(sort: &Sort, key: &(Value, u64)) -> String {
    let dir = if sort.desc { "desc" } else { "asc" };
    let c = json!({"field": sort.field, "fieldValue": key.0, "sortDirection": dir, "id": key.1});
    URL_SAFE_NO_PAD.encode(c.to_string())
}

fn decode_cursor(sort: &Sort, raw: &str) -> Result<(Value, u64), PdError> {
    let invalid = || PdError::bad_request("Validation failed: cursor: invalid cursor");
    let bytes = URL_SAFE_NO_PAD
        .decode(raw.trim_end_matches('='))
        .map_err(|_| invalid())?;
    let c: Value = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    let dir = if sort.desc { "desc" } else { "asc" };
    if c.get("field").and_then(Value::as_str) != Some(sort.field.as_str())
        || c.get("sortDirection").and_then(Value::as_str) != Some(dir)
    {
        return Err(PdError::bad_request(
            "Validation failed: cursor: does not match sort_by and sort_direction",
        ));
    }
    let id = c.get("id").and_then(Value::as_u64).ok_or_else(invalid)?;
    Ok((c.get("fieldValue").cloned().unwrap_or(Value::Null), id))
}

/// One page of `rows` after `cursor`, and the cursor of the next page if there is one.
pub(crate) fn cursor_page(
    mut rows: Vec<&Row>,
    sort: &Sort,
    cursor: Option<&str>,
    limit: usize,
) -> Result<(Vec<Value>, Option<String>), PdError> {
    let after = match cursor {
        None | Some("") => None,
        Some(c) => Some(decode_cursor(sort, c)?),
    };
    rows.sort_by(|a, b| sort.cmp_keys(&sort.key(a), &sort.key(b)));
    let rest: Vec<&Row> = rows
        .into_iter()
        .filter(|r| {
            after
                .as_ref()
                .is_none_or(|k| sort.cmp_keys(&sort.key(r), k) == Ordering::Greater)
        })
        .collect();
    let more = rest.len() > limit;
    let page: Vec<&Row> = rest.into_iter().take(limit).collect();
    let next = if more {
        page.last().map(|r| encode_cursor(sort, &sort.key(r)))
    } else {
        None
    };
    Ok((
        page.into_iter().map(|r| Value::Object(r.clone())).collect(),
        next,
    ))
}

/// One page of a list without ids (field definitions): the cursor is an offset.
pub(crate) fn offset_cursor_page(
    rows: &[Row],
    cursor: Option<&str>,
    limit: usize,
) -> Result<(Vec<Value>, Option<String>), PdError> {
    let start = match cursor {
        None | Some("") => 0,
        Some(c) => URL_SAFE_NO_PAD
            .decode(c.trim_end_matches('='))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| v.get("offset").and_then(Value::as_u64))
            .ok_or_else(|| PdError::bad_request("Validation failed: cursor: invalid cursor"))?
            as usize,
    };
    let page: Vec<Value> = rows
        .iter()
        .skip(start)
        .take(limit)
        .cloned()
        .map(Value::Object)
        .collect();
    let end = start.saturating_add(page.len());
    let next =
        (end < rows.len()).then(|| URL_SAFE_NO_PAD.encode(json!({"offset": end}).to_string()));
    Ok((page, next))
}
