//! Seeded accounts. [`demo_data`] looks like a small sales team migrated from Zendesk Sell:
//! Sell companies became organizations, contacts persons, deals deals (Sell stages mapped onto
//! a pipeline's stages, won/lost as `status`), tasks and calls activities, notes notes, Sell
//! ids kept in custom fields. Every record goes through the same checks as a POST, so the
//! demo cannot hold what the API would refuse.

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::{Value, json};

use crate::entity::{self, Entity};
use crate::state::{PdData, Row, TokenInfo};
use crate::time;

/// The demo deal custom field "Lead source" (enum).
pub const DEAL_LEAD_SOURCE: &str = "2bfdbc75a783c036f3b117120e9ee41d7d20c368";
/// The demo deal custom field "Sell deal ID" (varchar).
pub const DEAL_SELL_ID: &str = "7fb418313be9d7ea4f490fd4b604dfb8ceb72799";
/// The demo deal custom field "Products of interest" (set).
pub const DEAL_PRODUCTS: &str = "b80db74ce02fe054f65adc7a8ee8493feae2de95";
/// The demo person custom field "Sell contact ID" (varchar).
pub const PERSON_SELL_ID: &str = "680a925d911daacef4c8db325d022d82b7c43654";
/// The demo person custom field "Preferred channel" (enum).
pub const PERSON_CHANNEL: &str = "3d069d2cd0d76a9cde913f0dff955a7efaea6f7f";

fn obj(v: Value) -> Row {
    match v {
        Value::Object(m) => m,
        _ => Row::new(),
    }
}

fn base() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 2, 9, 0, 0)
        .single()
        .unwrap_or_else(Utc::now)
}

fn at(minutes: i64) -> String {
    time::v2(base() + Duration::minutes(minutes))
}

fn user(id: u64, name: &str, email: &str, admin: bool) -> Row {
    let created = time::v1(base() - Duration::days(400));
    obj(json!({
        "id": id, "name": name, "email": email, "phone": null, "default_currency": "USD",
        "locale": "en_US", "lang": 1, "activated": true, "active_flag": true, "is_deleted": false,
        "role_id": 1, "timezone_name": "Europe/Berlin", "timezone_offset": "+01:00",
        "created": created, "modified": created, "last_login": time::v1(base()),
        "access": [{"app": "sales", "admin": admin, "permission_set_id": format!("pd-perm-{}", if admin {"admin"} else {"rep"})}],
        "icon_url": null, "has_created_company": admin, "is_admin": u8::from(admin),
    }))
}

fn field(name: &str, code: &str, ty: &str, custom: bool, options: Option<Vec<(u64, &str)>>) -> Row {
    let options = options.map(|o| {
        o.into_iter()
            .map(|(id, label)| json!({"id": id, "label": label, "color": null, "add_time": at(-90_000), "update_time": at(-90_000)}))
            .collect::<Vec<_>>()
    });
    obj(json!({
        "field_name": name, "field_code": code, "description": null, "field_type": ty,
        "options": options, "subfields": null, "is_custom_field": custom,
        "is_optional_response_field": false,
    }))
}

/// An account with its users, tokens, pipelines, stages, activity types and field definitions,
/// but no records.
pub fn empty_data() -> PdData {
    let mut d = PdData {
        company: obj(json!({
            "company_id": 7_700_001, "company_name": "Acme Sales (migrated from Zendesk Sell)",
            "company_domain": "acme-sales", "company_country": "US",
        })),
        users: vec![
            user(1, "Ada Admin", "ada@acme.example", true),
            user(2, "Rita Rep", "rita@acme.example", false),
            user(3, "Sam Seller", "sam@acme.example", false),
        ],
        tokens: vec![
            TokenInfo {
                token: "pd-token-ada".into(),
                user_id: 1,
                name: "Ada Admin".into(),
                is_admin: true,
            },
            TokenInfo {
                token: "pd-token-rita".into(),
                user_id: 2,
                name: "Rita Rep".into(),
                is_admin: false,
            },
            TokenInfo {
                token: "pd-token-sam".into(),
                user_id: 3,
                name: "Sam Seller".into(),
                is_admin: false,
            },
        ],
        ..PdData::default()
    };
    let t = at(-100_000);
    d.pipelines = vec![
        obj(
            json!({"id": 1, "name": "Sales", "order_nr": 1, "is_deleted": false, "is_deal_probability_enabled": true, "add_time": t, "update_time": t}),
        ),
        obj(
            json!({"id": 2, "name": "Renewals", "order_nr": 2, "is_deleted": false, "is_deal_probability_enabled": false, "add_time": t, "update_time": t}),
        ),
    ];
    let stages = [
        (1, 1, "Incoming", 10),
        (2, 1, "Qualified", 25),
        (3, 1, "Quote", 50),
        (4, 1, "Closure", 80),
        (5, 2, "Up for renewal", 50),
        (6, 2, "Renewal negotiation", 75),
    ];
    d.stages = stages
        .iter()
        .enumerate()
        .map(|(i, (id, p, name, prob))| {
            obj(json!({
                "id": id, "order_nr": i + 1, "name": name, "is_deleted": false,
                "deal_probability": prob, "pipeline_id": p, "is_deal_rot_enabled": false,
                "days_to_rotten": null, "add_time": t, "update_time": t,
            }))
        })
        .collect();
    d.activity_types = [
        (1, "Call", "call", "call"),
        (2, "Meeting", "meeting", "users"),
        (3, "Task", "task", "task"),
        (4, "Deadline", "deadline", "deadline"),
        (5, "Email", "email", "email"),
    ]
    .iter()
    .map(|(id, name, key, icon)| {
        obj(json!({
            "id": id, "order_nr": id, "name": name, "key_string": key, "icon_key": icon,
            "active_flag": true, "color": null, "is_custom_flag": false,
            "add_time": time::v1(base()), "update_time": null,
        }))
    })
    .collect();
    d.deal_fields = vec![
        field("Title", "title", "varchar", false, None),
        field("Value", "value", "monetary", false, None),
        field("Owner", "owner_id", "user", false, None),
        field("Person", "person_id", "people", false, None),
        field("Organization", "org_id", "org", false, None),
        field("Pipeline", "pipeline_id", "double", false, None),
        field("Stage", "stage_id", "stage", false, None),
        field("Status", "status", "status", false, None),
        field(
            "Expected close date",
            "expected_close_date",
            "date",
            false,
            None,
        ),
        field(
            "Label",
            "label",
            "set",
            false,
            Some(vec![(1, "Hot"), (2, "Warm"), (3, "Cold")]),
        ),
        field(
            "Lead source",
            DEAL_LEAD_SOURCE,
            "enum",
            true,
            Some(vec![
                (11, "Referral"),
                (12, "Website"),
                (13, "Trade show"),
                (14, "Outbound"),
            ]),
        ),
        field("Sell deal ID", DEAL_SELL_ID, "varchar", true, None),
        field(
            "Products of interest",
            DEAL_PRODUCTS,
            "set",
            true,
            Some(vec![(21, "CRM"), (22, "Sync"), (23, "Support")]),
        ),
    ];
    d.person_fields = vec![
        field("Name", "name", "varchar", false, None),
        field("Email", "emails", "varchar", false, None),
        field("Phone", "phones", "phone", false, None),
        field("Organization", "org_id", "org", false, None),
        field("Owner", "owner_id", "user", false, None),
        field(
            "Label",
            "label",
            "set",
            false,
            Some(vec![(31, "Customer"), (32, "Prospect")]),
        ),
        field("Sell contact ID", PERSON_SELL_ID, "varchar", true, None),
        field(
            "Preferred channel",
            PERSON_CHANNEL,
            "enum",
            true,
            Some(vec![(41, "Email"), (42, "Phone")]),
        ),
    ];
    d
}

/// Runs one seed record through the POST checks; a refused one is left out (and logged).
fn seed(d: &mut PdData, ent: Entity, owner: u64, minutes: i64, body: Value) {
    match entity::check_body(ent, &body, d, None) {
        Ok(changes) => {
            let id = ent.table(d).keys().next_back().map_or(1, |k| k + 1);
            let rec = entity::create(ent, id, owner, changes, d, &at(minutes));
            ent.table_mut(d).insert(id, rec);
        }
        Err(e) => tracing::warn!("demo record refused: {e}"),
    }
}

/// The demo account (see the module docs).
pub fn demo_data() -> PdData {
    let mut d = empty_data();
    let orgs = [
        (1, "Northwind Traders", "Seattle, WA, USA"),
        (2, "Globex Corporation", "Springfield, OR, USA"),
        (3, "Initech", "Austin, TX, USA"),
        (4, "Umbrella Health", "Raccoon City, USA"),
    ];
    for (i, (owner, name, addr)) in orgs.iter().enumerate() {
        seed(
            &mut d,
            Entity::Organization,
            if *owner == 1 { 2 } else { 3 },
            i as i64 * 10,
            json!({
                "name": name, "owner_id": if i % 2 == 0 { 2 } else { 3 }, "address": {"value": addr},
            }),
        );
    }
    let persons = [
        (
            "Nora North",
            1,
            "nora@northwind.example",
            "+1 206 555 0101",
            2,
        ),
        (
            "Greg Globex",
            2,
            "greg@globex.example",
            "+1 541 555 0102",
            3,
        ),
        (
            "Ines Initech",
            3,
            "ines@initech.example",
            "+1 512 555 0103",
            2,
        ),
        (
            "Peter Gibbons",
            3,
            "peter@initech.example",
            "+1 512 555 0104",
            3,
        ),
        (
            "Ursula Umbrella",
            4,
            "ursula@umbrella.example",
            "+1 555 555 0105",
            2,
        ),
        (
            "Frank Freelance",
            0,
            "frank@freelance.example",
            "+1 312 555 0106",
            3,
        ),
    ];
    for (i, (name, org, email, phone, owner)) in persons.iter().enumerate() {
        let org = if *org == 0 { Value::Null } else { json!(org) };
        seed(
            &mut d,
            Entity::Person,
            *owner,
            60 + i as i64 * 10,
            json!({
                "name": name, "org_id": org, "owner_id": owner,
                "emails": [{"value": email, "label": "work"}],
                "phones": [{"value": phone, "label": "work"}],
                "label_ids": [if i % 2 == 0 { 31 } else { 32 }],
                "custom_fields": {PERSON_SELL_ID: format!("sell-contact-{}", 1000 + i), PERSON_CHANNEL: if i % 2 == 0 { 41 } else { 42 }},
            }),
        );
    }
    // (title, person, org, stage, value, currency, status, owner, close date)
    type DealSeed<'a> = (&'a str, u64, u64, u64, f64, &'a str, &'a str, u64, &'a str);
    let deals: [DealSeed<'_>; 12] = [
        (
            "Northwind CRM rollout",
            1,
            1,
            3,
            48_000.0,
            "USD",
            "open",
            2,
            "2026-12-15",
        ),
        (
            "Northwind support add-on",
            1,
            1,
            1,
            6_500.0,
            "USD",
            "open",
            2,
            "2027-01-10",
        ),
        (
            "Globex enterprise licence",
            2,
            2,
            4,
            120_000.0,
            "USD",
            "open",
            3,
            "2026-12-20",
        ),
        (
            "Globex pilot",
            2,
            2,
            4,
            9_900.0,
            "USD",
            "won",
            3,
            "2026-10-30",
        ),
        (
            "Initech TPS integration",
            3,
            3,
            2,
            27_500.0,
            "EUR",
            "open",
            2,
            "2027-02-01",
        ),
        (
            "Initech printer fleet sync",
            4,
            3,
            1,
            3_200.0,
            "EUR",
            "lost",
            3,
            "2026-11-01",
        ),
        (
            "Umbrella clinics migration",
            5,
            4,
            3,
            75_000.0,
            "USD",
            "open",
            2,
            "2027-03-15",
        ),
        (
            "Umbrella data residency",
            5,
            4,
            2,
            15_000.0,
            "GBP",
            "open",
            3,
            "2027-01-31",
        ),
        (
            "Freelance starter plan",
            6,
            0,
            1,
            1_200.0,
            "USD",
            "open",
            3,
            "2026-12-05",
        ),
        (
            "Northwind renewal 2027",
            1,
            1,
            5,
            44_000.0,
            "USD",
            "open",
            2,
            "2027-04-01",
        ),
        (
            "Globex renewal 2027",
            2,
            2,
            6,
            110_000.0,
            "USD",
            "open",
            3,
            "2027-05-01",
        ),
        (
            "Initech renewal 2026",
            3,
            3,
            6,
            25_000.0,
            "EUR",
            "won",
            2,
            "2026-09-30",
        ),
    ];
    for (i, (title, person, org, stage, value, cur, status, owner, close)) in
        deals.iter().enumerate()
    {
        let mut body = json!({
            "title": title, "person_id": person, "stage_id": stage, "value": value,
            "currency": cur, "status": status, "owner_id": owner, "expected_close_date": close,
            "label_ids": [(i as u64 % 3) + 1],
            "custom_fields": {
                DEAL_LEAD_SOURCE: 11 + (i as u64 % 4),
                DEAL_SELL_ID: format!("sell-deal-{}", 2000 + i),
                DEAL_PRODUCTS: if i % 2 == 0 { json!([21, 22]) } else { json!([23]) },
            },
        });
        if *org != 0 {
            body["org_id"] = json!(org);
        }
        if *status == "lost" {
            body["lost_reason"] = json!("Went with a competitor");
        }
        seed(&mut d, Entity::Deal, *owner, 200 + i as i64 * 17, body);
    }
    let activities = [
        (
            "Discovery call with Nora",
            "call",
            1,
            1,
            "2026-11-03",
            true,
            2,
        ),
        ("Quote walkthrough", "meeting", 3, 2, "2026-11-20", false, 3),
        (
            "Send TPS integration spec",
            "task",
            5,
            3,
            "2026-11-25",
            false,
            2,
        ),
        (
            "Clinics migration workshop",
            "meeting",
            7,
            5,
            "2026-12-01",
            false,
            2,
        ),
        (
            "Follow up on data residency",
            "email",
            8,
            5,
            "2026-11-28",
            false,
            3,
        ),
        (
            "Renewal deadline Globex",
            "deadline",
            11,
            2,
            "2027-04-15",
            false,
            3,
        ),
    ];
    for (i, (subject, ty, deal, person, due, done, owner)) in activities.iter().enumerate() {
        seed(
            &mut d,
            Entity::Activity,
            *owner,
            500 + i as i64 * 13,
            json!({
                "subject": subject, "type": ty, "deal_id": deal, "owner_id": owner,
                "participants": [{"person_id": person, "primary": true}],
                "due_date": due, "due_time": "10:00", "duration": "00:30", "done": done,
            }),
        );
    }
    let notes = [
        (
            "<p>Migrated from Zendesk Sell: champion is Nora, budget approved.</p>",
            Some(1),
            Some(1),
            Some(1),
            2,
        ),
        (
            "<p>Globex wants SSO before signing.</p>",
            Some(3),
            Some(2),
            Some(2),
            3,
        ),
        (
            "<p>Pilot went well, 12 seats.</p>",
            Some(4),
            None,
            Some(2),
            3,
        ),
        (
            "<p>Initech uses TPS reports v3.</p>",
            Some(5),
            Some(3),
            None,
            2,
        ),
        ("<p>Lost on price.</p>", Some(6), None, None, 3),
        (
            "<p>Umbrella needs EU hosting.</p>",
            Some(8),
            Some(5),
            Some(4),
            3,
        ),
        (
            "<p>Frank found us through the blog.</p>",
            None,
            Some(6),
            None,
            3,
        ),
        (
            "<p>Org note: Northwind HQ moved.</p>",
            None,
            None,
            Some(1),
            2,
        ),
    ];
    for (i, (content, deal, person, org, user)) in notes.iter().enumerate() {
        let t = time::v1(base() + Duration::minutes(700 + i as i64 * 11));
        let id = i as u64 + 1;
        d.notes.insert(id, obj(json!({
            "id": id, "user_id": user, "deal_id": deal, "person_id": person, "org_id": org,
            "lead_id": null, "project_id": null, "content": content, "add_time": t,
            "update_time": t, "active_flag": true, "pinned_to_deal_flag": deal.is_some() && i == 0,
            "pinned_to_person_flag": false, "pinned_to_organization_flag": false,
            "pinned_to_lead_flag": false, "pinned_to_project_flag": false,
            "last_update_user_id": null,
        })));
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_demo_record_passes_the_post_checks() {
        let d = demo_data();
        assert_eq!(d.organizations.len(), 4);
        assert_eq!(d.persons.len(), 6);
        assert_eq!(d.deals.len(), 12);
        assert_eq!(d.activities.len(), 6);
        assert_eq!(d.notes.len(), 8);
        let lost = &d.deals[&6];
        assert_eq!(lost["status"], "lost");
        assert_eq!(lost["lost_reason"], "Went with a competitor");
        assert_eq!(lost["pipeline_id"], 1);
        assert_eq!(d.deals[&10]["pipeline_id"], 2);
        assert_eq!(d.activities[&1]["person_id"], 1);
        assert_eq!(d.persons[&1]["first_name"], "Nora");
    }
}
