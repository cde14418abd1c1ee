//! Readable output of a device's records: names where records hold catalog ids (users, stages,
//! sources, loss reasons), local times, records in natural order. Pure: everything here reads
//! a catalog and projections and returns text.

use std::cmp::Ordering;

use anyhow::{Result, bail};
use chrono::{Local, TimeZone};
pub(crate) use sellsync_device::names::{CatalogList, Names};

// The names shown for a value the bridge pulled from Zendesk without a user.
const _: () = assert!(sellsync_device::names::CRM_USER.0 == sellsync_bridge::pull::CRM_USER.0);
use sellsync_model::{
    ActivityView, Catalog, Conflict, FieldKey, Projection, RecordId, RecordState, Value,
};

/// What a person typed for a field, with a catalog entry's name replaced by its id
/// (`stage_id=Qualified` → `stage_id=2`, case and surrounding spaces ignored). Ids, empty
/// values and fields that hold no catalog id pass unchanged. A name that matches no entry is
/// refused with the valid choices listed.
pub(crate) fn resolve_name(catalog: &Catalog, key: &FieldKey, input: &str) -> Result<String> {
    let typed = input.trim();
    let Some(list) = CatalogList::of(key) else {
        return Ok(input.to_owned());
    };
    if typed.is_empty() || typed.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(input.to_owned());
    }
    let entries = list.entries(catalog);
    if let Some((id, _)) = entries
        .iter()
        .find(|(_, name)| name.trim().eq_ignore_ascii_case(typed))
    {
        return Ok(id.to_string());
    }
    if entries.is_empty() {
        bail!(
            "{key}: no {} named {typed:?}, and this device knows none yet: sync with the hub \
             first, or give the id",
            list.what()
        );
    }
    bail!(
        "{key}: no {} named {typed:?}; choose one of: {}",
        list.what(),
        choices(catalog, key).unwrap_or_default()
    )
}

/// The valid entries for a field that holds a catalog id, as `Name (id), …`; `None` for other
/// fields, or when the catalog lists none.
pub(crate) fn choices(catalog: &Catalog, key: &FieldKey) -> Option<String> {
    let entries = CatalogList::of(key)?.entries(catalog);
    if entries.is_empty() {
        return None;
    }
    let listed: Vec<String> = entries
        .iter()
        .map(|(id, name)| format!("{name} ({id})"))
        .collect();
    Some(listed.join(", "))
}

/// A hybrid-clock or wall time (unix ms) in this machine's time zone, to the minute.
pub(crate) fn local_time(ms: i64) -> String {
    match Local.timestamp_millis_opt(ms) {
        chrono::LocalResult::Single(t) | chrono::LocalResult::Ambiguous(t, _) => {
            t.format("%Y-%m-%d %H:%M").to_string()
        }
        chrono::LocalResult::None => format!("{ms} ms"),
    }
}

/// Orders ids as people count: `zd-62` before `zd-104` (runs of digits compare as numbers).
pub(crate) fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a, b);
    loop {
        match (a.is_empty(), b.is_empty()) {
            (true, true) => return Ordering::Equal,
            (true, false) => return Ordering::Less,
            (false, true) => return Ordering::Greater,
            _ => {}
        }
        let digits = |s: &str| s.bytes().take_while(u8::is_ascii_digit).count();
        let (da, db) = (digits(a), digits(b));
        let order = if da > 0 && db > 0 {
            let (na, nb) = (
                a[..da].trim_start_matches('0'),
                b[..db].trim_start_matches('0'),
            );
            let o = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
            (a, b) = (&a[da..], &b[db..]);
            o
        } else {
            let ca = a.chars().next().unwrap_or_default();
            let cb = b.chars().next().unwrap_or_default();
            (a, b) = (&a[ca.len_utf8()..], &b[cb.len_utf8()..]);
            ca.cmp(&cb)
        };
        if order != Ordering::Equal {
            return order;
        }
    }
}

/// A record's state as a column.
pub(crate) fn state(state: RecordState) -> &'static str {
    match state {
        RecordState::Live => "live",
        RecordState::Deleted => "deleted",
        RecordState::InConflict => "in conflict",
    }
}

/// A standard field of a record, readable (empty if unset).
pub(crate) fn field(names: Names<'_>, p: &Projection, name: &str) -> String {
    let key = FieldKey::Std(name.to_owned());
    p.record
        .fields
        .get(&key)
        .map_or_else(String::new, |v| names.value(&key, v))
}

/// How a record is named in a line: its id and, if it has one, its name.
pub(crate) fn title(id: &RecordId, p: Option<&Projection>) -> String {
    let name = p.and_then(
        |p| match p.record.fields.get(&FieldKey::Std("name".into())) {
            Some(Value::Text(n)) if !n.is_empty() => Some(n.clone()),
            _ => None,
        },
    );
    match name {
        Some(n) => format!("{id} \"{n}\""),
        None => id.to_string(),
    }
}

/// One activity (note, task, call) as a line: kind, text, author and time, and for tasks and
/// calls their fields.
pub(crate) fn activity(names: Names<'_>, a: &ActivityView) -> String {
    let content_key = FieldKey::Std("content".into());
    let text = a
        .content
        .clone()
        .or_else(|| match a.fields.get(&content_key) {
            Some(Value::Text(t)) => Some(t.clone()),
            _ => None,
        });
    let mut line = format!("{} {}", a.kind, a.id);
    if a.deleted {
        line.push_str(" (deleted)");
    }
    line.push_str(&format!(
        ", by {} at {}: {}",
        names.user(a.created_by),
        local_time(a.created_at),
        text.unwrap_or_default()
    ));
    let extra: Vec<String> = a
        .fields
        .iter()
        .filter(|(k, v)| **k != content_key && !matches!(v, Value::Null))
        .map(|(k, v)| format!("{k}: {}", names.value(k, v)))
        .collect();
    if !extra.is_empty() {
        line.push_str(&format!(" [{}]", extra.join(", ")));
    }
    line
}

/// A record's open conflicts, each as lines a person can act on.
pub(crate) fn conflicts(names: Names<'_>, title: &str, conflicts: &[Conflict]) -> Vec<String> {
    let mut lines = Vec::new();
    for c in conflicts {
        match c {
            Conflict::Field {
                slot,
                tier,
                candidates,
            } => {
                lines.push(format!("{title}: {slot} is in conflict ({tier} tier)"));
                for (i, cand) in candidates.iter().enumerate() {
                    lines.push(format!(
                        "  [{}] {} by {} on {} at {}",
                        i + 1,
                        names.value(&slot.field, &cand.value),
                        names.user(cand.by),
                        cand.device,
                        local_time(cand.at)
                    ));
                }
            }
            Conflict::Record {
                deleted_by,
                restored_by,
                unseen_edits,
                held_activities,
            } => {
                let who = |list: &[sellsync_model::Candidate]| {
                    list.iter()
                        .map(|c| format!("{} at {}", names.user(c.by), local_time(c.at)))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let mut line = format!(
                    "{title}: deleted by {} while {unseen_edits} edit(s) were made that the \
                     deletion had not seen",
                    who(deleted_by)
                );
                if !restored_by.is_empty() {
                    line.push_str(&format!("; restored by {}", who(restored_by)));
                }
                lines.push(line);
                if !held_activities.is_empty() {
                    let held: Vec<&str> = held_activities.iter().map(|a| a.as_str()).collect();
                    lines.push(format!("  held until decided: {}", held.join(", ")));
                }
            }
            Conflict::Relationship {
                slot,
                target,
                status,
            } => {
                let status = match status {
                    sellsync_model::RefStatus::Live => "live",
                    sellsync_model::RefStatus::Deleted => "deleted",
                    sellsync_model::RefStatus::Unknown => "unknown",
                };
                lines.push(format!(
                    "{title}: {slot} points at record {target}, which is {status}"
                ));
            }
            Conflict::Validation {
                slot,
                value,
                message,
                source,
            } => {
                let by = if source == "crm" {
                    "the CRM refuses it"
                } else {
                    "the catalog refuses it"
                };
                lines.push(format!("{title}: {slot} = {value}: {by}: {message}"));
            }
            Conflict::Permission { slot, message, at } => {
                let what = slot
                    .as_ref()
                    .map_or_else(|| "the record".to_owned(), ToString::to_string);
                lines.push(format!(
                    "{title}: permission refused for {what} at {}: {message}",
                    local_time(*at)
                ));
            }
            Conflict::Refused {
                activity,
                field,
                refusal,
                message,
                at,
            } => {
                let what = match (activity, field) {
                    (Some(a), Some(f)) => format!("{a} ({f})"),
                    (Some(a), None) => a.to_string(),
                    (None, Some(f)) => format!("the record ({f})"),
                    (None, None) => "the record".to_owned(),
                };
                let why = match refusal {
                    sellsync_model::FlagKind::Validation => "did not accept",
                    sellsync_model::FlagKind::Permission => "did not permit",
                };
                lines.push(format!(
                    "{title}: the CRM {why} {what} at {}: {message}",
                    local_time(*at)
                ));
                lines.push(match activity {
                    Some(a) => format!(
                        "  settle it: `resolve ID {a} --value TEXT` (fix), `--discard` or `--retry`"
                    ),
                    None => {
                        "  settle it: fix the record with `set`, or `resolve ID --retry`".into()
                    }
                });
            }
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use sellsync_model::UserId;

    #[test]
    fn ids_sort_as_people_count() {
        let mut ids = vec!["zd-104", "zd-62", "deal-b", "zd-7", "deal-a", "zd-062x"];
        ids.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            ids,
            vec!["deal-a", "deal-b", "zd-7", "zd-62", "zd-062x", "zd-104"]
        );
        assert_eq!(natural_cmp("a", "a"), Ordering::Equal);
    }

    #[test]
    fn a_catalog_name_stands_for_its_id_and_a_wrong_one_lists_the_choices() {
        let catalog = Catalog::example();
        let stage = FieldKey::Std("stage_id".into());
        let (id, name) = catalog
            .stages
            .values()
            .map(|s| (s.id, s.name.clone()))
            .next()
            .expect("the example has stages");
        assert_eq!(
            resolve_name(&catalog, &stage, &format!(" {} ", name.to_uppercase())).unwrap(),
            id.to_string()
        );
        assert_eq!(resolve_name(&catalog, &stage, "12").unwrap(), "12");
        let err = resolve_name(&catalog, &stage, "Nowhere")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no stage named \"Nowhere\"") && err.contains(&name),
            "{err}"
        );
        let name_key = FieldKey::Std("name".into());
        assert_eq!(resolve_name(&catalog, &name_key, "Acme").unwrap(), "Acme");
    }

    #[test]
    fn a_task_shows_its_text_and_fields() {
        let catalog = Catalog::example();
        let names = Names { catalog: &catalog };
        let mut fields = std::collections::BTreeMap::new();
        fields.insert(
            FieldKey::Std("content".into()),
            Value::Text("Send the quote".into()),
        );
        fields.insert(FieldKey::Std("completed".into()), Value::Bool(false));
        let task = ActivityView {
            id: "task-1".parse().unwrap(),
            kind: sellsync_model::ActivityKind::Task,
            crm_id: None,
            deleted: false,
            created_by: UserId(2),
            created_at: 0,
            content: None,
            fields,
        };
        let line = activity(names, &task);
        assert!(line.contains("Send the quote"), "{line}");
        assert!(
            line.contains("by Rita Rep") && line.contains("completed: false"),
            "{line}"
        );
    }

    #[test]
    fn catalog_ids_read_as_names() {
        let catalog = Catalog::example();
        let names = Names { catalog: &catalog };
        let (uid, uname) = catalog
            .users
            .values()
            .map(|u| (u.id, u.name.clone()))
            .next()
            .expect("the example has users");
        let owner = FieldKey::Std("owner_id".into());
        assert_eq!(names.value(&owner, &Value::Ref(uid)), uname);
        assert_eq!(names.value(&owner, &Value::Ref(99_999)), "user 99999");
        assert_eq!(names.user(UserId(99_999)), "user 99999");
    }
}
