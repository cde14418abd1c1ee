//! The pages, rendered from what the device facade returns. Pure: no I/O, no clock (the time
//! "now" is passed in), so every page is a function of its inputs.

use chrono::{Local, TimeZone};
use maud::{DOCTYPE, Markup, html};
use sellsync_device::names::{CatalogList, Names};
use sellsync_device::{
    ActivityId, ActivityKind, ActivityView, AuditEntry, Candidate, Catalog, Conflict, DeviceId,
    DeviceNotification, FieldKey, OpenConflict, Projection, RecordConflicts, RecordId, Slot, Value,
};

/// What every page reads: the catalog (for names), this device (for "yours"), and the time.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The catalog the hub shared.
    pub catalog: &'a Catalog,
    /// This device: a candidate written here is "yours".
    pub me: &'a DeviceId,
    /// Now, in ms since the epoch (for "3 h ago").
    pub now_ms: i64,
}

impl Context<'_> {
    fn names(&self) -> Names<'_> {
        Names {
            catalog: self.catalog,
        }
    }

    fn value(&self, key: &FieldKey, value: &Value, currency: Option<&str>) -> String {
        match (value, currency) {
            (Value::Money(_), Some(c)) => format!("{value} {c}"),
            _ => self.names().value(key, value),
        }
    }
}

/// A record in the inbox: its id, its name, its open conflicts.
#[derive(Debug)]
pub struct InboxRow {
    /// The record.
    pub conflicts: RecordConflicts,
    /// Its name (or id, when it has none).
    pub title: String,
}

/// Which conflicts the inbox lists.
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct Filter {
    /// A conflict kind (`field`, `record`, `validation`, `refused`, `permission`,
    /// `relationship`); empty: every kind.
    #[serde(default)]
    pub kind: String,
    /// A field name; empty: every field.
    #[serde(default)]
    pub field: String,
}

impl Filter {
    fn admits(&self, c: &Conflict) -> bool {
        (self.kind.is_empty() || kind_of(c) == self.kind)
            && (self.field.is_empty()
                || c.slot().is_some_and(|s| s.field.to_string() == self.field))
    }
}

/// The conflict kinds, as the filter names them.
pub const KINDS: [&str; 6] = [
    "field",
    "record",
    "validation",
    "refused",
    "permission",
    "relationship",
];

fn kind_of(c: &Conflict) -> &'static str {
    match c {
        Conflict::Field { .. } => "field",
        Conflict::Record { .. } => "record",
        Conflict::Validation { .. } => "validation",
        Conflict::Refused { .. } => "refused",
        Conflict::Permission { .. } => "permission",
        Conflict::Relationship { .. } => "relationship",
    }
}

/// What a conflict is about, as a person reads it.
fn headline(c: &Conflict) -> String {
    match c {
        Conflict::Field { slot, .. } => format!("{} was changed in two places", label(slot)),
        Conflict::Record { .. } => "Deleted while someone edited it".into(),
        Conflict::Validation { slot, .. } => format!("{}: a value that is not valid", label(slot)),
        Conflict::Refused { field, .. } => match field {
            Some(f) => format!("Zendesk refused {f}"),
            None => "Zendesk refused a change".into(),
        },
        Conflict::Permission { slot: Some(s), .. } => format!("No permission to change {s}"),
        Conflict::Permission { slot: None, .. } => "The hub no longer takes this copy".into(),
        Conflict::Relationship { slot, .. } => {
            format!("{}: points at a missing record", label(slot))
        }
    }
}

/// A field's name for people: `stage_id` → `Stage`.
fn label(slot: &Slot) -> String {
    let field = slot.field.to_string();
    let bare = field
        .strip_prefix("custom_fields.")
        .unwrap_or(&field)
        .trim_end_matches("_id")
        .replace('_', " ");
    let mut chars = bare.chars();
    let head = chars.next().map(|c| c.to_uppercase().collect::<String>());
    let named = head.unwrap_or_default() + chars.as_str();
    match &slot.activity {
        Some(a) => format!("{named} of {a}"),
        None => named,
    }
}

/// When a conflict started: its oldest time.
pub fn oldest(c: &Conflict) -> i64 {
    match c {
        Conflict::Field { candidates, .. } => candidates.iter().map(|c| c.at).min(),
        Conflict::Record { deleted_by, .. } => deleted_by.iter().map(|c| c.at).min(),
        Conflict::Refused { at, .. } | Conflict::Permission { at, .. } => Some(*at),
        Conflict::Validation { .. } | Conflict::Relationship { .. } => None,
    }
    .unwrap_or(i64::MAX)
}

/// `2026-12-02 14:05` in this machine's time zone.
pub fn local_time(ms: i64) -> String {
    match Local.timestamp_millis_opt(ms) {
        chrono::LocalResult::Single(t) | chrono::LocalResult::Ambiguous(t, _) => {
            t.format("%Y-%m-%d %H:%M").to_string()
        }
        chrono::LocalResult::None => format!("{ms} ms"),
    }
}

/// How long ago `at_ms` was: `just now`, `5 min ago`, `3 h ago`, `2 days ago`.
pub fn ago(now_ms: i64, at_ms: i64) -> String {
    let s = (now_ms - at_ms).max(0) / 1000;
    match s {
        0..60 => "just now".into(),
        60..3600 => format!("{} min ago", s / 60),
        3600..86_400 => format!("{} h ago", s / 3600),
        86_400..172_800 => "1 day ago".into(),
        _ => format!("{} days ago", s / 86_400),
    }
}

/// A span of time for people: `12 min`, `3 h 5 min`, `4 days`.
pub fn duration(ms: i64) -> String {
    let m = ms.max(0) / 60_000;
    match m {
        0..60 => format!("{m} min"),
        60..2880 => format!("{} h {} min", m / 60, m % 60),
        _ => format!("{} days", m / 1440),
    }
}

fn page(title: &str, body: Markup) -> Markup {
    page_for(title, "conflicts on this device", "/inbox", true, body)
}

/// A page of the device's (`script`: with its live updates and keys) or of the hub's.
fn page_for(title: &str, what: &str, home: &str, script: bool, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · sellsync" }
                link rel="stylesheet" href="/assets/style.css";
                @if script { script src="/assets/app.js" defer {} }
            }
            body {
                header.top {
                    a.home href=(home) { "sellsync" }
                    span.sub { (what) }
                }
                div #live role="status" aria-live="polite" {}
                main #main { (body) }
            }
        }
    }
}

/// The inbox: every record with open conflicts, oldest first, and the notifications.
pub fn inbox(
    cx: Context<'_>,
    rows: &[InboxRow],
    notifications: &[DeviceNotification],
    filter: &Filter,
) -> Markup {
    let mut shown: Vec<(&InboxRow, Vec<&OpenConflict>, i64)> = rows
        .iter()
        .filter_map(|r| {
            let open: Vec<&OpenConflict> = r
                .conflicts
                .conflicts
                .iter()
                .filter(|c| filter.admits(&c.conflict))
                .collect();
            let first = open.iter().map(|c| oldest(&c.conflict)).min()?;
            Some((r, open, first))
        })
        .collect();
    shown.sort_by_key(|(r, _, first)| (*first, r.conflicts.record.clone()));
    let total: usize = shown.iter().map(|(_, c, _)| c.len()).sum();
    let fields: std::collections::BTreeSet<String> = rows
        .iter()
        .flat_map(|r| r.conflicts.conflicts.iter())
        .filter_map(|c| c.conflict.slot().map(|s| s.field.to_string()))
        .collect();
    let body = html! {
        h1 { "Conflicts" }
        form.filters method="get" action="/inbox" {
            label { "Kind "
                select name="kind" {
                    option value="" selected[filter.kind.is_empty()] { "every kind" }
                    @for k in KINDS { option value=(k) selected[filter.kind == k] { (k) } }
                }
            }
            label { "Field "
                select name="field" {
                    option value="" selected[filter.field.is_empty()] { "every field" }
                    @for f in &fields { option value=(f) selected[&filter.field == f] { (f) } }
                }
            }
            button type="submit" { "Filter" }
        }
        p #summary { (total) " open conflict" @if total != 1 { "s" } " in " (shown.len()) " record" @if shown.len() != 1 { "s" } }
        @if shown.is_empty() {
            p.empty { "Nothing to decide. Every change on this device went through." }
        } @else {
            ol.inbox {
                @for (row, open, first) in &shown {
                    li.row data-record=(row.conflicts.record) {
                        a href={ "/record/" (row.conflicts.record) } {
                            span.title { (row.title) }
                            span.count { (open.len()) " to decide" }
                        }
                        ul.kinds {
                            @for c in open { li { (headline(&c.conflict)) } }
                        }
                        @if *first != i64::MAX {
                            span.when title=(local_time(*first)) { "since " (ago(cx.now_ms, *first)) }
                        }
                    }
                }
            }
        }
        @if !fields.is_empty() {
            section.bulk aria-labelledby="bulk-h" {
                h2 #bulk-h { "All at once" }
                ul { @for f in &fields {
                    li { a href={ "/bulk?field=" (f) } { "Take the latest value for every " (f) " conflict" } }
                } }
            }
        }
        section.notifications aria-labelledby="notes-h" {
            h2 #notes-h { "Values of yours that gave way" }
            @if notifications.is_empty() { p.empty { "None." } }
            ul { @for n in notifications {
                @if let Some(d) = &n.detail {
                    li {
                        a href={ "/record/" (d.record) } { (d.record) } ": your " (label(&d.slot)) " "
                        strong { (cx.value(&d.slot.field, &d.yours, None)) }
                        " gave way to " strong { (cx.value(&d.slot.field, &d.kept, None)) }
                        " by " (cx.names().user(d.kept_by)) " (" (ago(cx.now_ms, d.kept_at)) ")"
                        form.inline method="post" action={ "/notifications/" (n.id) "/dismiss" } {
                            button type="submit" { "Dismiss" }
                        }
                    }
                }
            } }
        }
    };
    page("Conflicts", body)
}

/// What the record page says above the conflicts after an action.
#[derive(Debug)]
pub enum Banner {
    /// Nothing.
    None,
    /// The action went through.
    Done(String),
    /// The conflict changed between showing and deciding: look again.
    Changed(String),
    /// The input was refused.
    Refused(String),
}

/// One record's conflicts, side by side, with its audit trail.
pub fn record(
    cx: Context<'_>,
    p: &Projection,
    conflicts: &[OpenConflict],
    banner: &Banner,
) -> Markup {
    let id = &p.record.id;
    let title = title(p);
    let currency = currency_of(p);
    let body = html! {
        p.back { a href="/inbox" { "← All conflicts" } }
        h1 { (title) }
        p.meta { (id) @if let Some(crm) = p.record.crm_id { " · Zendesk " (crm) } }
        @match banner {
            Banner::None => {},
            Banner::Done(s) => p.banner.done role="status" { (s) },
            Banner::Changed(s) => p.banner.changed role="alert" { "This changed while you looked: " (s) ". Here it is as it stands now." },
            Banner::Refused(s) => p.banner.refused role="alert" { (s) },
        }
        @if conflicts.is_empty() {
            p.empty { "No open conflicts on this record." }
        }
        @for (i, c) in conflicts.iter().enumerate() {
            section.conflict id={ "c" (i) } tabindex="-1" data-kind=(kind_of(&c.conflict)) aria-labelledby={ "h" (i) } {
                h2 id={ "h" (i) } { (headline(&c.conflict)) }
                (conflict(cx, p, c, currency))
            }
        }
        section.audit aria-labelledby="audit-h" {
            h2 #audit-h { "History of decisions" }
            @if p.audit.is_empty() { p.empty { "No decisions yet." } }
            ol.timeline { @for e in &p.audit { li { (audit(cx, e, currency)) } } }
        }
        p.keys { "Keys: " kbd { "j" } "/" kbd { "k" } " next/previous conflict, " kbd { "m" } " keep mine, "
            kbd { "t" } " take theirs, " kbd { "1" } "–" kbd { "9" } " pick, " kbd { "e" } " type a value." }
    };
    page(&title, body)
}

/// A deal's currency (money values are shown with it).
pub fn currency_of(p: &Projection) -> Option<&str> {
    match p.record.fields.get(&FieldKey::Std("currency".into())) {
        Some(Value::Text(c)) => Some(c.as_str()),
        _ => None,
    }
}

/// A record's name, or its id.
pub fn title(p: &Projection) -> String {
    let key = if p.record.kind == sellsync_device::RecordKind::Contact {
        "last_name"
    } else {
        "name"
    };
    match p.record.fields.get(&FieldKey::Std(key.into())) {
        Some(Value::Text(t)) if !t.trim().is_empty() => t.clone(),
        _ => p.record.id.to_string(),
    }
}

fn who(cx: Context<'_>, c: &Candidate) -> Markup {
    html! {
        span.who { (cx.names().user(c.by)) }
        " on " span.device { (c.device) }
        ", " time datetime=(c.at) title=(local_time(c.at)) { (local_time(c.at)) " (" (ago(cx.now_ms, c.at)) ")" }
    }
}

fn conflict(cx: Context<'_>, p: &Projection, c: &OpenConflict, currency: Option<&str>) -> Markup {
    let id = &p.record.id;
    let action = |what: &str| format!("/record/{id}/{what}");
    match &c.conflict {
        Conflict::Field {
            slot, candidates, ..
        } => {
            let seen: Vec<&str> = candidates.iter().map(|c| c.op.as_str()).collect();
            let mine = candidates.iter().any(|c| &c.device == cx.me);
            let others: std::collections::BTreeSet<String> = candidates
                .iter()
                .filter(|c| &c.device != cx.me)
                .map(|c| c.value.to_string())
                .collect();
            html! {
                form.resolve method="post" action=(action("resolve")) {
                    input type="hidden" name="slot" value=(slot);
                    input type="hidden" name="seen" value=(seen.join(","));
                    table.sides {
                        thead { tr { th scope="col" { "" } th scope="col" { "Value" } th scope="col" { "Who, where, when" } th scope="col" { span.visually-hidden { "Action" } } } }
                        tbody {
                            tr.base {
                                th scope="row" { "Base" }
                                td { @match &c.base {
                                    Some(v) => (cx.value(&slot.field, v, currency)),
                                    None => em { "not one value (the sides started from different ones)" },
                                } }
                                td { "what both sides started from" }
                                td {}
                            }
                            @for (n, cand) in candidates.iter().enumerate() {
                                tr.candidate.mine[&cand.device == cx.me] {
                                    th scope="row" { @if &cand.device == cx.me { "Yours" } @else { "Theirs" } }
                                    td.value { (cx.value(&slot.field, &cand.value, currency)) }
                                    td { (who(cx, cand)) }
                                    td { button type="submit" name="choice" value={ "pick-" (n + 1) } data-key=(n + 1)
                                        aria-label={ "Pick this: " (cx.value(&slot.field, &cand.value, currency)) } { "Pick this" } }
                                }
                            }
                        }
                    }
                    div.actions {
                        @if mine { button type="submit" name="choice" value="mine" data-key="m" { "Keep mine" } }
                        @if others.len() == 1 { button type="submit" name="choice" value="theirs" data-key="t" { "Take theirs" } }
                    }
                    div.merge {
                        label for={ "v-" (slot) } { "Or a value of your own for " (label(slot)) }
                        (input_for(cx, slot, &format!("v-{slot}")))
                        button type="submit" name="choice" value="value" data-key="e" { "Use this value" }
                    }
                }
            }
        }
        Conflict::Record {
            deleted_by,
            restored_by,
            unseen_edits,
            held_activities,
        } => html! {
            p { "Deleted by " @for (i, d) in deleted_by.iter().enumerate() { @if i > 0 { ", " } (who(cx, d)) }
                @if !restored_by.is_empty() { "; restored by " @for (i, r) in restored_by.iter().enumerate() { @if i > 0 { ", " } (who(cx, r)) } }
                "." }
            p { (unseen_edits) " edit(s) the delete did not see" @if !held_activities.is_empty() { ", and " (held_activities.len()) " note(s) or task(s) held with the record" } "." }
            form.inline method="post" action=(action("record")) {
                button type="submit" name="choice" value="restore" data-key="m" { "Restore with the edits" }
                button type="submit" name="choice" value="delete" data-key="t" { "Confirm the delete" }
            }
        },
        Conflict::Validation {
            slot,
            value,
            message,
            source,
        } => html! {
            p { "The value " strong { (value) } " is refused"
                @if source == "crm" { " by Zendesk" } ": " (message) }
            form.inline method="post" action=(action("fix")) {
                input type="hidden" name="slot" value=(slot);
                label for={ "f-" (slot) } { "A valid value for " (label(slot)) }
                (input_for(cx, slot, &format!("f-{slot}")))
                button type="submit" data-key="e" { "Save and send" }
            }
        },
        Conflict::Refused {
            activity,
            field,
            refusal,
            message,
            at,
        } => html! {
            p { "Zendesk said (" (format!("{refusal:?}").to_lowercase()) ", " (ago(cx.now_ms, *at)) "): " q { (message) } }
            @if let Some(f) = field { p { "About " (f) "." } }
            @if let Some(note) = activity.as_ref().and_then(|a| refused_note(p, a)) {
                form method="post" action=(action("note")) {
                    input type="hidden" name="activity" value=(note.id);
                    label for={ "n-" (note.id) } { "The note's text" }
                    textarea #{ "n-" (note.id) } name="text" rows="4" required { (note.content.clone().unwrap_or_default()) }
                    button type="submit" data-key="e" { "Save the text and send" }
                }
            }
            form.inline method="post" action=(action("retry")) {
                @if let Some(a) = activity { input type="hidden" name="activity" value=(a); }
                button type="submit" data-key="m" { "Send again as it is" }
                @if activity.is_some() { button type="submit" name="discard" value="1" data-key="t" { "Discard it" } }
            }
        },
        Conflict::Permission { slot, message, at } => html! {
            p { (message) " (" (ago(cx.now_ms, *at)) ")" }
            @if let Some(s) = slot {
                form.inline method="post" action=(action("retry")) {
                    input type="hidden" name="slot" value=(s);
                    button type="submit" data-key="m" { "Send again" }
                }
            } @else {
                p { "Copy what you need first: discarding brings back the hub's copy and drops what this device wrote in it." }
                textarea.copy readonly rows="4" aria-label="This device's copy, as text" { (copy_text(cx, p)) }
                form.inline method="post" action=(action("discard")) {
                    button type="submit" data-key="t" { "Discard my copy" }
                }
            }
        },
        Conflict::Relationship { target, status, .. } => html! {
            p { "It points at " (format!("{target:?}")) ", which is " (format!("{status:?}").to_lowercase()) ". Change the field to fix it." }
        },
    }
}

/// The note `activity` of the record, when it is one (a refused note's text can be edited).
fn refused_note<'p>(p: &'p Projection, activity: &ActivityId) -> Option<&'p ActivityView> {
    p.record
        .activities
        .iter()
        .find(|a| &a.id == activity && a.kind == ActivityKind::Note && !a.deleted)
}

/// The record as this device holds it, as text a person can copy elsewhere.
fn copy_text(cx: Context<'_>, p: &Projection) -> String {
    let mut out = String::new();
    for (k, v) in &p.record.fields {
        out.push_str(&format!("{k}: {}\n", cx.value(k, v, None)));
    }
    if !p.record.tags.is_empty() {
        let tags: Vec<&str> = p.record.tags.iter().map(String::as_str).collect();
        out.push_str(&format!("tags: {}\n", tags.join(", ")));
    }
    for a in p.record.activities.iter().filter(|a| !a.deleted) {
        if let Some(text) = &a.content {
            out.push_str(&format!("{}: {text}\n", a.id));
        }
        for (k, v) in &a.fields {
            out.push_str(&format!("{}.{k}: {v}\n", a.id));
        }
    }
    out
}

/// An input that fits the field: a list of the catalog's entries for a stage, user, source or
/// loss reason; a money input that takes at most two decimals; a date picker; text otherwise.
fn input_for(cx: Context<'_>, slot: &Slot, id: &str) -> Markup {
    if let Some(list) = CatalogList::of(&slot.field) {
        let entries = list.entries(cx.catalog);
        if !entries.is_empty() {
            return html! {
                select id=(id) name="value" {
                    @for (n, name) in entries { option value=(n) { (name) } }
                }
            };
        }
    }
    let field = slot.field.to_string();
    match field.as_str() {
        "value" => html! {
            input id=(id) name="value" inputmode="decimal" pattern="-?[0-9]+([.][0-9]{1,2})?"
                title="an amount with at most two decimals, e.g. 1350.00" autocomplete="off";
        },
        f if f.ends_with("_date") || f == "due_date" || f == "estimated_close_date" => html! {
            input id=(id) name="value" type="date";
        },
        _ => html! { input id=(id) name="value" autocomplete="off"; },
    }
}

fn audit(cx: Context<'_>, e: &AuditEntry, currency: Option<&str>) -> Markup {
    let show = |v: &Value| match &e.slot {
        Some(s) => cx.value(&s.field, v, currency),
        None => v.to_string(),
    };
    let chosen = match &e.chosen {
        sellsync_device::Chosen::Value(v) => show(v),
        sellsync_device::Chosen::Restore => "restore the record".into(),
        sellsync_device::Chosen::Delete => "delete the record".into(),
    };
    html! {
        time datetime=(e.at) { (local_time(e.at)) }
        " · " strong { @match &e.slot { Some(s) => (label(s)), None => "Record" } }
        ": " (chosen) " "
        @match e.by {
            Some(u) => { "(decided by " (cx.names().user(u)) @if let Some(d) = &e.device { " on " (d) } ")" },
            None => { "(automatically, " (e.policy) ")" },
        }
        @if e.candidates.len() > 1 {
            ul.candidates { @for c in &e.candidates { li { (show(&c.value)) " by " (cx.names().user(c.by)) } } }
        }
    }
}

/// One conflict "take the latest" settles: the record, its name and currency, the field, the
/// candidates as listed (their ops) and the latest one.
#[derive(Debug)]
pub struct BulkRow {
    /// The record.
    pub id: RecordId,
    /// Its name.
    pub title: String,
    /// Its currency, for money.
    pub currency: Option<String>,
    /// The field.
    pub slot: Slot,
    /// The candidates' ops, as listed.
    pub seen: Vec<String>,
    /// The one written last.
    pub latest: Candidate,
}

/// The page that lists what "take the latest" would change, before it does.
pub fn bulk(cx: Context<'_>, field: &str, rows: &[BulkRow]) -> Markup {
    let body = html! {
        p.back { a href="/inbox" { "← All conflicts" } }
        h1 { "Take the latest " (field) " everywhere" }
        @if rows.is_empty() {
            p.empty { "No open conflict on " (field) "." }
        } @else {
            p { "This keeps, for each of these " (rows.len()) " records, the value written last:" }
            form method="post" action="/bulk" {
                input type="hidden" name="field" value=(field);
                table.sides {
                    thead { tr { th scope="col" { "Record" } th scope="col" { "Kept" } th scope="col" { "Written by" } } }
                    tbody { @for r in rows {
                        tr {
                            td {
                                a href={ "/record/" (r.id) } { (r.title) }
                                input type="hidden" name="item" value={ (r.id) "|" (r.slot) "|" (r.seen.join(",")) "|" (r.latest.op) };
                            }
                            td { (cx.value(&r.slot.field, &r.latest.value, r.currency.as_deref())) }
                            td { (who(cx, &r.latest)) }
                        }
                    } }
                }
                button type="submit" { "Keep the latest for all " (rows.len()) }
            }
        }
    };
    page("Take the latest", body)
}

/// A page for a refused request (no token, a foreign origin) or a missing record.
pub fn error(status: &str, message: &str) -> Markup {
    page(status, html! { h1 { (status) } p { (message) } })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sellsync_device::{RecordKind, UserId};
    use sellsync_model::{SellRecord, Tier};

    const NOW: i64 = 1_800_000_000_000;

    fn cand(value: &str, device: &str, by: u64, at: i64) -> Candidate {
        Candidate {
            value: Value::Text(value.into()),
            at,
            by: UserId(by),
            device: device.parse().unwrap(),
            op: format!("{at}@{device}"),
        }
    }

    fn field(name: &str, candidates: Vec<Candidate>) -> OpenConflict {
        OpenConflict {
            conflict: Conflict::Field {
                slot: Slot::record(FieldKey::Std(name.into())),
                tier: Tier::Manual,
                candidates,
            },
            base: Some(Value::Text("base".into())),
        }
    }

    fn row(id: &str, conflicts: Vec<OpenConflict>) -> InboxRow {
        InboxRow {
            conflicts: RecordConflicts {
                record: id.parse().unwrap(),
                kind: RecordKind::Deal,
                conflicts,
            },
            title: format!("Title of {id}"),
        }
    }

    fn projection(id: &str) -> Projection {
        Projection {
            record: SellRecord {
                id: id.parse().unwrap(),
                kind: RecordKind::Deal,
                crm_id: None,
                state: sellsync_device::RecordState::Live,
                fields: Default::default(),
                tags: Default::default(),
                activities: Vec::new(),
            },
            conflicts: Vec::new(),
            notifications: Vec::new(),
            audit: Vec::new(),
        }
    }

    #[test]
    fn times_read_as_people_say_them() {
        assert_eq!(ago(NOW, NOW - 5_000), "just now");
        assert_eq!(ago(NOW, NOW - 5 * 60_000), "5 min ago");
        assert_eq!(ago(NOW, NOW - 3 * 3_600_000), "3 h ago");
        assert_eq!(ago(NOW, NOW - 30 * 3_600_000), "1 day ago");
        assert_eq!(ago(NOW, NOW - 80 * 3_600_000), "3 days ago");
        // A clock ahead of this one is "just now", not a negative time.
        assert_eq!(ago(NOW, NOW + 60_000), "just now");
        assert_eq!(
            label(&Slot::record(FieldKey::Std("stage_id".into()))),
            "Stage"
        );
        assert_eq!(
            label(&"custom_fields.Region".parse::<Slot>().unwrap()),
            "Region"
        );
    }

    #[test]
    fn the_inbox_lists_the_oldest_first_and_filters_by_kind_and_field() {
        let catalog = Catalog::example();
        let me: DeviceId = "rita-phone".parse().unwrap();
        let cx = Context {
            catalog: &catalog,
            me: &me,
            now_ms: NOW,
        };
        let rows = vec![
            row(
                "deal-new",
                vec![field(
                    "name",
                    vec![
                        cand("a", "rita-phone", 2, NOW - 1000),
                        cand("b", "carl-laptop", 3, NOW - 900),
                    ],
                )],
            ),
            row(
                "deal-old",
                vec![field(
                    "value",
                    vec![
                        cand("c", "rita-phone", 2, NOW - 9000),
                        cand("d", "carl-laptop", 3, NOW - 8000),
                    ],
                )],
            ),
        ];
        let all = inbox(cx, &rows, &[], &Filter::default()).into_string();
        let (old, new) = (
            all.find("Title of deal-old").unwrap(),
            all.find("Title of deal-new").unwrap(),
        );
        assert!(old < new, "oldest first");
        assert!(all.contains("2 open conflicts in 2 records"));
        let by_field = Filter {
            kind: String::new(),
            field: "value".into(),
        };
        let one = inbox(cx, &rows, &[], &by_field).into_string();
        assert!(one.contains("Title of deal-old") && !one.contains("Title of deal-new"));
        let by_kind = Filter {
            kind: "record".into(),
            field: String::new(),
        };
        let none = inbox(cx, &rows, &[], &by_kind).into_string();
        assert!(none.contains("Nothing to decide"), "{none}");
    }

    #[test]
    fn the_actions_offered_fit_the_candidates_and_values_are_escaped() {
        let catalog = Catalog::example();
        let me: DeviceId = "rita-phone".parse().unwrap();
        let cx = Context {
            catalog: &catalog,
            me: &me,
            now_ms: NOW,
        };
        let p = projection("deal-x");
        // Mine and one other value: keep mine, take theirs.
        let two = field(
            "name",
            vec![
                cand("<script>x</script>", "rita-phone", 2, NOW),
                cand("b", "carl-laptop", 3, NOW),
            ],
        );
        let page = record(cx, &p, &[two], &Banner::None).into_string();
        assert!(page.contains("Keep mine") && page.contains("Take theirs"));
        assert!(page.contains("Rita Rep") && page.contains("Carl Colleague"));
        assert!(!page.contains("<script>x") && page.contains("&lt;script&gt;x"));
        // Two others, none mine: neither; each candidate can still be picked.
        let mut others = field(
            "name",
            vec![
                cand("a", "olga-tablet", 3, NOW),
                cand("b", "carl-laptop", 3, NOW),
            ],
        );
        others.base = None;
        let page = record(cx, &p, &[others], &Banner::None).into_string();
        assert!(
            !page.contains("Keep mine") && !page.contains("Take theirs"),
            "{page}"
        );
        assert_eq!(page.matches("value=\"pick-").count(), 2);
        assert!(page.contains("not one value"));
        // A stage is chosen from the catalog's stages; a changed conflict says so.
        let stage = field("stage_id", vec![cand("x", "rita-phone", 2, NOW)]);
        let page = record(
            cx,
            &p,
            &[stage],
            &Banner::Changed("a sync brought a value".into()),
        )
        .into_string();
        assert!(
            page.contains("<option value=\"12\">Qualified</option>"),
            "{page}"
        );
        assert!(page.contains("This changed while you looked: a sync brought a value"));
    }

    #[test]
    fn a_refused_notes_text_can_be_edited_and_a_refused_task_only_sent_again_or_discarded() {
        let catalog = Catalog::example();
        let me: DeviceId = "rita-phone".parse().unwrap();
        let cx = Context {
            catalog: &catalog,
            me: &me,
            now_ms: NOW,
        };
        let activity = |id: &str, kind: ActivityKind, content: Option<&str>| ActivityView {
            id: id.parse().unwrap(),
            kind,
            crm_id: None,
            deleted: false,
            created_by: UserId(2),
            created_at: NOW,
            content: content.map(str::to_owned),
            fields: Default::default(),
        };
        let refused = |id: &str| OpenConflict {
            conflict: Conflict::Refused {
                activity: Some(id.parse().unwrap()),
                field: None,
                refusal: sellsync_model::FlagKind::Validation,
                message: "content is too long".into(),
                at: NOW,
            },
            base: None,
        };
        let mut p = projection("deal-x");
        p.record.activities = vec![
            activity("n-1", ActivityKind::Note, Some("Called <b>twice</b>")),
            activity("t-1", ActivityKind::Task, None),
        ];
        let page = record(cx, &p, &[refused("n-1")], &Banner::None).into_string();
        assert!(page.contains("action=\"/record/deal-x/note\""), "{page}");
        assert!(
            page.contains("Called &lt;b&gt;twice&lt;/b&gt;</textarea>"),
            "{page}"
        );
        assert!(page.contains("content is too long") && page.contains("Discard it"));
        let page = record(cx, &p, &[refused("t-1")], &Banner::None).into_string();
        assert!(!page.contains("/note\""), "{page}");
        assert!(page.contains("Send again as it is") && page.contains("Discard it"));
    }
}

/// A bridge's last run of one kind: when it ended and how (`ok`, or why not).
#[derive(Debug, Clone)]
pub struct Run {
    /// When it ended (ms).
    pub ended_ms: i64,
    /// `ok`, or what went wrong.
    pub result: String,
    /// What it carried.
    pub done: u64,
}

/// The bridge's health as the dashboard shows it.
#[derive(Debug, Clone)]
pub struct BridgeHealth {
    /// The Zendesk account.
    pub crm_url: String,
    /// The last pull.
    pub last_pull: Option<Run>,
    /// The last push.
    pub last_push: Option<Run>,
    /// Records waiting to be pushed.
    pub queue: u64,
    /// Since when Zendesk does not answer (`None`: it answers).
    pub unreachable_since_ms: Option<i64>,
    /// The latest error.
    pub last_error: Option<String>,
}

/// What the hub's dashboard shows.
#[derive(Debug, Clone)]
pub struct Dashboard {
    /// The conflict figures.
    pub stats: sellsync_service::stats::Stats,
    /// The devices the hub issued tokens to.
    pub devices: Vec<sellsync_service::admin::DeviceEntry>,
    /// The bridge, when the hub runs one.
    pub bridge: Option<BridgeHealth>,
    /// User names by id (the catalog's).
    pub users: std::collections::BTreeMap<u64, String>,
}

/// The hub's dashboard: who must decide what, the figures by week, the bridge, the devices.
pub fn dashboard(now_ms: i64, d: &Dashboard) -> Markup {
    let user = |u: u64| {
        d.users
            .get(&u)
            .cloned()
            .unwrap_or_else(|| format!("user {u}"))
    };
    let pct = |s: Option<f64>| s.map_or("–".to_owned(), |s| format!("{:.0} %", s * 100.0));
    let span = duration;
    let run = |r: &Option<Run>| match r {
        Some(r) => format!(
            "{} ({}, {} done)",
            ago(now_ms, r.ended_ms),
            r.result,
            r.done
        ),
        None => "not yet".to_owned(),
    };
    let body = html! {
        h1 { "The organisation's conflicts" }
        p #summary { (d.stats.open_conflicts) " open conflict" @if d.stats.open_conflicts != 1 { "s" } }
        section aria-labelledby="wait-h" {
            h2 #wait-h { "Who must decide" }
            @if d.stats.waiting.is_empty() { p.empty { "Nobody: nothing is waiting." } } @else {
                table.sides {
                    thead { tr { th scope="col" { "User" } th scope="col" { "Open" } th scope="col" { "Oldest" } } }
                    tbody { @for w in &d.stats.waiting { tr {
                        td { (w.name.clone().unwrap_or_else(|| user(w.user))) }
                        td { (w.open) }
                        td title=(local_time(w.oldest_ms)) { "waiting " (span((now_ms - w.oldest_ms).max(0))) }
                    } } }
                }
            }
        }
        section aria-labelledby="weeks-h" {
            h2 #weeks-h { "By week" }
            @if d.stats.weeks.is_empty() { p.empty { "No syncs or decisions yet." } } @else {
                table.sides {
                    thead { tr {
                        th scope="col" { "Week" } th scope="col" { "Syncs" } th scope="col" { "Met a conflict" }
                        th scope="col" { "Resolved automatically" } th scope="col" { "Decided by a person" }
                        th scope="col" { "Median time to decide" }
                    } }
                    tbody { @for w in &d.stats.weeks { tr {
                        td { (w.week) } td { (w.syncs) } td { (pct(w.share_of_syncs_with_conflicts)) }
                        td { (w.resolved_automatically) " (" (pct(w.share_resolved_automatically)) ")" }
                        td { (w.resolved_manually) }
                        td { (w.median_ms_to_manual_resolution.map_or("–".to_owned(), span)) }
                    } } }
                }
            }
        }
        section aria-labelledby="bridge-h" {
            h2 #bridge-h { "The bridge to Zendesk" }
            @match &d.bridge {
                None => p.empty { "This hub runs no bridge." },
                Some(b) => dl.facts {
                    dt { "Account" } dd { (b.crm_url) }
                    dt { "Zendesk" } dd { @match b.unreachable_since_ms {
                        None => "answers",
                        Some(t) => { "unreachable since " (local_time(t)) " (" (ago(now_ms, t)) ")" },
                    } }
                    dt { "Last pull" } dd { (run(&b.last_pull)) }
                    dt { "Last push" } dd { (run(&b.last_push)) }
                    dt { "Waiting to be pushed" } dd { (b.queue) " record(s)" }
                    dt { "Latest error" } dd { (b.last_error.clone().unwrap_or_else(|| "none".into())) }
                },
            }
        }
        section aria-labelledby="devices-h" {
            h2 #devices-h { "Devices" }
            table.sides {
                thead { tr {
                    th scope="col" { "Device" } th scope="col" { "User" } th scope="col" { "Last sync" }
                    th scope="col" { "Tokens" }
                } }
                tbody { @for dev in &d.devices { tr {
                    td { (dev.device) }
                    td { (user(dev.user)) }
                    @match dev.last_sync_ms {
                        Some(t) => td title=(local_time(t)) { (ago(now_ms, t)) },
                        None => td { "never" },
                    }
                    td { @if dev.live { "live" } @else { "revoked" } " (" (dev.tokens.len()) ")" }
                } } }
            }
        }
    };
    page_for(
        "Dashboard",
        "the hub's dashboard",
        "/dashboard",
        false,
        body,
    )
}
