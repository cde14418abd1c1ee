//! The built-in data sets. Deterministic: the same ids, tokens and timestamps every time.
//!
//! `empty`: the account, one admin user and the default pipeline (what a new Sell account has).
//! `demo`: that, plus four users in two teams, loss reasons, deal sources, three deal custom
//! fields (list, text, number), 40 contacts, 50 deals, 50 notes and 25 tasks.

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::{Value, json};

use crate::schema::Kind;
use crate::store::{Map, SimData, ts};

/// The 64-character bearer token of a built-in user: `sellsync-sim-user-<id>-` padded with `0`.
pub fn token_for(user_id: u64) -> String {
    let prefix = format!("sellsync-sim-user-{user_id}-");
    format!("{prefix:0<64}")
}

fn epoch() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 5, 9, 0, 0)
        .single()
        .unwrap_or_default()
}

fn obj(v: Value) -> Map {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// Inserts a record of a read-only kind as given (no validation), returning its id.
fn put_raw(d: &mut SimData, kind: Kind, attrs: Value, at: DateTime<Utc>) -> u64 {
    let mut m = d.defaults(kind, 0);
    m.extend(obj(attrs));
    let row = d.store(kind, None, m, 0, at);
    row.data.get("id").and_then(Value::as_u64).unwrap_or(0)
}

/// Creates a record through the same validation as `POST`; returns its id, or None when the
/// attributes are refused (the demo set's own test checks that none is).
fn put(d: &mut SimData, kind: Kind, actor: u64, attrs: Value, at: DateTime<Utc>) -> Option<u64> {
    let merged = d.prepare(kind, &obj(attrs), None, actor).ok()?;
    let row = d.store(kind, None, merged, actor, at);
    row.data.get("id").and_then(Value::as_u64)
}

fn base() -> (SimData, u64) {
    let t0 = epoch();
    let mut d = SimData {
        next_id: 1,
        ..SimData::default()
    };
    d.account = obj(json!({
        "id": 1, "name": "Sellsync Demo Co", "currency": "USD", "time_format": "24H",
        "timezone": "UTC+00:00", "phone": null, "created_at": ts(t0), "updated_at": ts(t0)
    }));
    d.next_id = 2;
    let admin = put_raw(
        &mut d,
        Kind::User,
        json!({
            "name": "Ada Admin", "email": "ada@demo.invalid", "role": "admin", "status": "active",
            "confirmed": true, "team_name": "Management", "timezone": "UTC"
        }),
        t0,
    );
    d.tokens.insert(token_for(admin), admin);
    let pipeline = put_raw(
        &mut d,
        Kind::Pipeline,
        json!({"name": "Sales Pipeline", "disabled": false}),
        t0,
    );
    let stages: [(&str, &str, bool, u64, Option<u64>); 7] = [
        ("Prospecting", "incoming", true, 1, Some(5)),
        ("Qualified", "in_progress", true, 2, Some(10)),
        ("Quote", "in_progress", true, 3, Some(20)),
        ("Closure", "in_progress", true, 7, Some(50)),
        ("Won", "won", false, 8, None),
        ("Lost", "lost", false, 9, None),
        ("Unqualified", "unqualified", false, 10, None),
    ];
    for (name, category, active, position, likelihood) in stages {
        put_raw(
            &mut d,
            Kind::Stage,
            json!({
                "name": name, "category": category, "active": active, "position": position,
                "likelihood": likelihood, "pipeline_id": pipeline
            }),
            t0,
        );
    }
    for rt in ["deal", "contact", "lead", "prospect_and_customer"] {
        d.custom_field_definitions.insert(rt.to_owned(), Vec::new());
    }
    (d, admin)
}

/// The `empty` data set.
pub fn empty_data() -> SimData {
    base().0
}

const FIRST: [&str; 10] = [
    "Alex", "Blair", "Casey", "Devon", "Emery", "Finley", "Gray", "Harper", "Indy", "Jordan",
];
const LAST: [&str; 8] = [
    "Nowak", "Smith", "Garcia", "Kim", "Okafor", "Rossi", "Schmidt", "Tanaka",
];
const COMPANIES: [&str; 10] = [
    "Acme Corp",
    "Globex",
    "Initech",
    "Umbrella",
    "Hooli",
    "Stark Industries",
    "Wayne Enterprises",
    "Tyrell",
    "Cyberdyne",
    "Soylent",
];
const CITIES: [&str; 5] = ["Berlin", "Lisbon", "Warsaw", "Austin", "Osaka"];
const REGIONS: [&str; 4] = ["North", "South", "East", "West"];

/// The `demo` data set.
pub fn demo_data() -> SimData {
    let (mut d, admin) = base();
    let t0 = epoch();
    let mut clock = 0i64;
    let mut tick = || {
        clock += 1;
        t0 + Duration::minutes(clock)
    };
    let mut reps = Vec::new();
    for (name, team) in [
        ("Bea Berg", "North"),
        ("Carl Carter", "North"),
        ("Dana Diaz", "South"),
        ("Eli Evans", "South"),
    ] {
        let email = format!(
            "{}@demo.invalid",
            name.split(' ').next().unwrap_or("user").to_lowercase()
        );
        let id = put_raw(
            &mut d,
            Kind::User,
            json!({
                "name": name, "email": email, "role": "user", "status": "active", "confirmed": true,
                "team_name": team, "reports_to": admin, "timezone": "UTC"
            }),
            t0,
        );
        d.tokens.insert(token_for(id), id);
        reps.push(id);
    }
    let mut reasons = Vec::new();
    for name in ["Too expensive", "Went with a competitor", "No budget"] {
        reasons.extend(put(
            &mut d,
            Kind::LossReason,
            admin,
            json!({"name": name}),
            t0,
        ));
    }
    let mut sources = Vec::new();
    for name in ["Website", "Referral", "Trade show"] {
        sources.extend(put(
            &mut d,
            Kind::DealSource,
            admin,
            json!({"name": name}),
            t0,
        ));
    }
    let defs = vec![
        obj(json!({"id": 9001, "name": "Region", "type": "list",
                   "choices": REGIONS.iter().enumerate().map(|(i, r)| json!({"id": 9101 + i, "name": r})).collect::<Vec<_>>(),
                   "created_at": ts(t0), "updated_at": ts(t0)})),
        obj(
            json!({"id": 9002, "name": "Referral code", "type": "text", "created_at": ts(t0), "updated_at": ts(t0)}),
        ),
        obj(
            json!({"id": 9003, "name": "Seats", "type": "number", "created_at": ts(t0), "updated_at": ts(t0)}),
        ),
    ];
    d.custom_field_definitions.insert("deal".into(), defs);
    let stage_ids: Vec<u64> = d
        .rows(Kind::Stage)
        .filter_map(|r| r.data.get("id").and_then(Value::as_u64))
        .collect();

    let mut orgs = Vec::new();
    for (i, company) in COMPANIES.iter().enumerate() {
        let owner = reps[i % reps.len()];
        orgs.extend(put(&mut d, Kind::Contact, owner, json!({
            "is_organization": true, "name": company, "owner_id": owner,
            "industry": "Manufacturing", "website": format!("https://{}.example", company.to_lowercase().replace(' ', "")),
            "address": {"city": CITIES[i % CITIES.len()], "country": "DE"}, "customer_status": "current"
        }), tick()));
    }
    let mut people = Vec::new();
    for i in 0..30 {
        let org = orgs.get(i % orgs.len().max(1)).copied();
        let owner = reps[i % reps.len()];
        let (first, last) = (FIRST[i % FIRST.len()], LAST[i % LAST.len()]);
        people.extend(put(&mut d, Kind::Contact, owner, json!({
            "first_name": first, "last_name": last, "contact_id": org, "owner_id": owner,
            "email": format!("{}.{}{i}@demo.invalid", first.to_lowercase(), last.to_lowercase()),
            "phone": format!("+1-555-01{i:02}"), "title": "Buyer", "tags": ["demo"],
            "address": {"city": CITIES[i % CITIES.len()]}
        }), tick()));
    }
    for i in 0..50usize {
        let owner = if i % 10 == 9 {
            admin
        } else {
            reps[i % reps.len()]
        };
        let stage = stage_ids.get(i % 4).copied();
        let cents = 100_000 + (i as i64) * 12_345;
        let value = if i % 3 == 0 {
            json!(cents / 100)
        } else {
            json!(format!("{}.{:02}", cents / 100, cents % 100))
        };
        let tags = if i % 2 == 0 {
            json!(["demo", "q1"])
        } else {
            json!(["demo"])
        };
        let deal = put(
            &mut d,
            Kind::Deal,
            owner,
            json!({
                "name": format!("{} deal #{}", COMPANIES[i % COMPANIES.len()], i + 1),
                "owner_id": owner, "value": value, "currency": if i % 5 == 0 { "EUR" } else { "USD" },
                "hot": i % 7 == 0, "stage_id": stage, "contact_id": people.get(i % people.len().max(1)),
                "source_id": sources.get(i % sources.len().max(1)),
                "estimated_close_date": format!("2026-{:02}-{:02}", 2 + i % 10, 1 + i % 28),
                "tags": tags,
                "custom_fields": {"Region": REGIONS[i % 4], "Referral code": format!("REF-{i:03}"), "Seats": format!("{}", 5 + i)}
            }),
            tick(),
        );
        let Some(deal) = deal else { continue };
        put(
            &mut d,
            Kind::Note,
            owner,
            json!({
                "resource_type": "deal", "resource_id": deal,
                "content": format!("Kick-off call for deal #{}: budget confirmed.", i + 1)
            }),
            tick(),
        );
        if i % 2 == 0 {
            put(
                &mut d,
                Kind::Task,
                owner,
                json!({
                    "resource_type": "deal", "resource_id": deal, "owner_id": owner,
                    "content": format!("Send the quote for deal #{}", i + 1),
                    "due_date": ts(t0 + Duration::days(30 + i as i64))
                }),
                tick(),
            );
        }
    }
    let _ = reasons;
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_64_characters_without_whitespace() {
        for id in [1, 42, 123_456] {
            let t = token_for(id);
            assert_eq!(t.len(), 64);
            assert!(!t.chars().any(char::is_whitespace));
        }
    }

    #[test]
    fn demo_set_has_every_record_it_promises() {
        let d = demo_data();
        let n = |k| d.rows(k).count();
        assert_eq!(n(Kind::User), 5);
        assert_eq!(
            d.rows(Kind::User)
                .filter(|u| u.data.get("role") == Some(&json!("admin")))
                .count(),
            1
        );
        assert_eq!(n(Kind::Stage), 7);
        assert_eq!(n(Kind::Deal), 50);
        assert_eq!(n(Kind::Contact), 40);
        assert_eq!(n(Kind::Note), 50);
        assert_eq!(n(Kind::Task), 25);
        assert_eq!(d.definitions("deal").len(), 3);
        assert_eq!(d.tokens.len(), 5);
        assert_eq!(demo_data(), d, "deterministic");
    }
}
