//! Resources over real HTTP: envelopes, paging, partial updates and their semantics.

mod common;

use common::*;
use reqwest::Method;
use sellsync_api::{Collection, Deal, Item, Money};
use serde_json::{Value, json};

#[tokio::test]
async fn paging_through_deals_visits_each_once_and_stops_without_next_page() {
    let r = start().await;
    let mut url = format!("{}/v2/deals?per_page=7", r.base);
    let mut seen = Vec::new();
    for _ in 0..20 {
        let res = r
            .client
            .get(&url)
            .bearer_auth(admin_token(&r))
            .send()
            .await
            .expect("get");
        assert_eq!(res.status().as_u16(), 200);
        let page: Collection<Deal> = res.json().await.expect("collection of deals");
        assert_eq!(page.meta.count as usize, page.items.len());
        assert!(
            page.items
                .iter()
                .all(|i| i.meta.kind == "deal" && i.meta.version.is_some())
        );
        seen.extend(page.items.iter().map(|i| i.data.id));
        match page.meta.links.and_then(|l| l.next_page) {
            Some(next) => url = next,
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(seen.len(), 50);
    assert_eq!(sorted, seen, "default order is id:asc, no duplicates");
}

#[tokio::test]
async fn ids_filters_and_sort_follow_the_list_conventions() {
    let r = start().await;
    let (_, all) = r.get("/v2/deals?per_page=100").await;
    let ids: Vec<u64> = all["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["data"]["id"].as_u64())
        .collect();
    let (a, b, c) = (ids[0], ids[1], ids[2]);
    let (_, body) = r.get(&format!("/v2/deals?ids={a},{b}&ids={c}")).await;
    assert_eq!(body["items"].as_array().map(Vec::len), Some(3));
    let (_, body) = r.get("/v2/deals?owner_id=2&per_page=100").await;
    assert!(
        body["items"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|i| i["data"]["owner_id"] == json!(2))
    );
    assert_eq!(body["items"].as_array().map(Vec::len), Some(5));
    r.put(&format!("/v2/deals/{b}"), json!({"data": {"hot": true}}))
        .await;
    let (_, body) = r.get("/v2/deals?sort_by=updated_at:desc&per_page=1").await;
    assert_eq!(body["items"][0]["data"]["id"].as_u64(), Some(b));
    let (_, body) = r.get("/v2/contacts?address[city]=Osaka&per_page=100").await;
    let n = body["items"].as_array().map_or(0, Vec::len);
    assert!(
        n > 0
            && body["items"]
                .as_array()
                .into_iter()
                .flatten()
                .all(|i| i["data"]["address"]["city"] == "Osaka")
    );
}

#[tokio::test]
async fn deal_create_update_delete_round_trip() {
    let r = start().await;
    let (_, stages) = r.get("/v2/stages").await;
    let stage2 = stages["items"][1]["data"]["id"].as_u64().expect("stage");
    let (status, created) = r
        .post("/v2/deals", json!({"data": {"name": "New", "value": "12.5", "tags": ["x"], "custom_fields": {"Seats": 3}}}))
        .await;
    assert_eq!(status, 200);
    let deal: Item<Deal> = serde_json::from_value(created.clone()).expect("deal envelope");
    assert_eq!(deal.meta.kind, "deal");
    assert_eq!(deal.data.value, Money { cents: 1250 });
    assert_eq!(created["data"]["value"], json!("12.50"));
    assert_eq!(deal.data.owner_id, Some(ADMIN));
    assert_eq!(deal.data.custom_fields.get("Seats"), Some(&json!("3")));
    let id = deal.data.id;

    let (_, after) = r
        .put(
            &format!("/v2/deals/{id}"),
            json!({"data": {"value": 1000, "stage_id": stage2}}),
        )
        .await;
    assert_eq!(
        after["data"]["value"],
        json!(1000),
        "whole amounts are integers"
    );
    assert_eq!(
        after["data"]["name"],
        json!("New"),
        "partial update keeps the rest"
    );
    assert_eq!(after["data"]["tags"], json!(["x"]));
    assert_eq!(after["data"]["last_stage_change_by_id"], json!(ADMIN));
    assert!(after["data"]["last_stage_change_at"].is_string());
    assert!(
        after["data"]["updated_at"].as_str() > created["data"]["updated_at"].as_str(),
        "updated_at moves"
    );

    let (_, again) = r
        .put(
            &format!("/v2/deals/{id}"),
            json!({"data": {"tags": ["y", "z"], "custom_fields": {"Region": "West"}}}),
        )
        .await;
    assert_eq!(
        again["data"]["tags"],
        json!(["y", "z"]),
        "tags replaced wholesale"
    );
    assert_eq!(
        again["data"]["custom_fields"],
        json!({"Region": "West", "Seats": "3"}),
        "custom fields merged per key"
    );
    assert!(
        again["data"]["updated_at"].as_str() > after["data"]["updated_at"].as_str(),
        "updated_at moves again"
    );
    let (_, tags) = r.get("/v2/tags?name=z&resource_type=deal").await;
    assert_eq!(
        tags["items"].as_array().map(Vec::len),
        Some(1),
        "unknown tags are created"
    );

    let res = r
        .call(
            Method::DELETE,
            &format!("/v2/deals/{id}"),
            &admin_token(&r),
            None,
        )
        .await;
    assert_eq!(res.status().as_u16(), 204);
    assert!(res.text().await.unwrap_or_default().is_empty());
    let res = r
        .call(
            Method::GET,
            &format!("/v2/deals/{id}"),
            &admin_token(&r),
            None,
        )
        .await;
    expect_error(res, 404, "not_found").await;
}

#[tokio::test]
async fn contacts_notes_tasks_and_catalogues_are_served() {
    let r = start().await;
    let (s, c) = r
        .post(
            "/v2/contacts",
            json!({"data": {"last_name": "Doe", "address": {"city": "Oslo"}}}),
        )
        .await;
    assert_eq!(s, 200);
    let contact = c["data"]["id"].as_u64().expect("id");
    assert_eq!(c["data"]["address"]["city"], "Oslo");
    let (s, n) = r
        .post(
            "/v2/notes",
            json!({"data": {"content": "hi", "resource_type": "contact", "resource_id": contact}}),
        )
        .await;
    assert_eq!(s, 200);
    let (s, t) = r
        .post(
            "/v2/tasks",
            json!({"data": {"content": "call", "completed": true}}),
        )
        .await;
    assert_eq!(s, 200);
    assert!(t["data"]["completed_at"].is_string());
    let (s, _) = r
        .put(
            &format!("/v2/notes/{}", n["data"]["id"]),
            json!({"data": {"content": "bye"}}),
        )
        .await;
    assert_eq!(s, 200);
    let res = r
        .call(
            Method::DELETE,
            &format!("/v2/contacts/{contact}"),
            &admin_token(&r),
            None,
        )
        .await;
    assert_eq!(res.status().as_u16(), 204);
    let res = r
        .call(
            Method::GET,
            &format!("/v2/notes/{}", n["data"]["id"]),
            &admin_token(&r),
            None,
        )
        .await;
    assert_eq!(res.status().as_u16(), 404, "a contact's notes go with it");
    for path in [
        "/v2/pipelines",
        "/v2/stages",
        "/v2/users",
        "/v2/loss_reasons",
        "/v2/deal_sources",
        "/v2/tags",
        "/v2/calls",
        "/v2/deal/custom_fields",
    ] {
        let (s, body) = r.get(path).await;
        assert_eq!(s, 200, "{path}");
        assert_eq!(body["meta"]["type"], "collection", "{path}");
    }
    let (_, me) = r.get("/v2/users/self").await;
    assert_eq!(me["data"]["id"], json!(ADMIN));
    assert_eq!(me["data"]["role"], "admin");
    let (_, acct) = r.get("/v2/accounts/self").await;
    assert_eq!(acct["meta"]["type"], "account");
    let (_, defs) = r.get("/v2/deal/custom_fields").await;
    let types: Vec<&str> = defs["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["data"]["type"].as_str())
        .collect();
    assert_eq!(types, vec!["list", "text", "number"]);
    let res = r
        .call(
            Method::POST,
            "/v2/stages",
            &admin_token(&r),
            Some(json!({"data": {}})),
        )
        .await;
    expect_error(res, 404, "incorrect_path").await;
}

#[tokio::test]
async fn associated_contacts_attach_and_detach() {
    let r = start().await;
    let deal = r.deal_owned_by(ADMIN).await;
    let (_, c) = r.get("/v2/contacts?per_page=1").await;
    let contact = c["items"][0]["data"]["id"].as_u64().expect("contact");
    let (s, a) = r
        .post(
            &format!("/v2/deals/{deal}/associated_contacts"),
            json!({"data": {"contact_id": contact, "role": "involved"}}),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(a["data"]["contact_id"], json!(contact));
    let (_, list) = r
        .get(&format!("/v2/deals/{deal}/associated_contacts"))
        .await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1));
    let res = r
        .call(
            Method::DELETE,
            &format!("/v2/deals/{deal}/associated_contacts/{contact}"),
            &admin_token(&r),
            None,
        )
        .await;
    assert_eq!(res.status().as_u16(), 204);
    let (_, list) = r
        .get(&format!("/v2/deals/{deal}/associated_contacts"))
        .await;
    assert_eq!(list["items"], json!([]));
    let _: Value = list;
}

#[tokio::test]
async fn visibility_rule_lets_a_rep_change_own_and_team_records_only() {
    let r = start().await;
    let bea = token_of(&r, "Bea Berg");
    let users = r.sim.tokens();
    let id_of = |n: &str| {
        users
            .iter()
            .find(|t| t.name == n)
            .map(|t| t.user_id)
            .expect("user")
    };
    let own = r.deal_owned_by(id_of("Bea Berg")).await;
    let team = r.deal_owned_by(id_of("Carl Carter")).await;
    let other = r.deal_owned_by(id_of("Dana Diaz")).await;
    let admins = r.deal_owned_by(ADMIN).await;
    let body = Some(json!({"data": {"hot": true}}));
    for id in [own, team] {
        let res = r
            .call(Method::PUT, &format!("/v2/deals/{id}"), &bea, body.clone())
            .await;
        assert_eq!(res.status().as_u16(), 200);
    }
    for id in [other, admins] {
        let before = r.sim.dump();
        let res = r
            .call(Method::PUT, &format!("/v2/deals/{id}"), &bea, body.clone())
            .await;
        expect_error(res, 403, "forbidden").await;
        let res = r
            .call(Method::DELETE, &format!("/v2/deals/{id}"), &bea, None)
            .await;
        expect_error(res, 403, "forbidden").await;
        assert_eq!(r.sim.dump(), before, "a refused write changes nothing");
    }
    let give_away = Some(json!({"data": {"owner_id": id_of("Dana Diaz")}}));
    let res = r
        .call(Method::PUT, &format!("/v2/deals/{own}"), &bea, give_away)
        .await;
    expect_error(res, 403, "forbidden").await;
    let note =
        Some(json!({"data": {"content": "x", "resource_type": "deal", "resource_id": other}}));
    let res = r.call(Method::POST, "/v2/notes", &bea, note).await;
    expect_error(res, 403, "forbidden").await;
    let res = r
        .call(Method::GET, &format!("/v2/deals/{other}"), &bea, None)
        .await;
    assert_eq!(res.status().as_u16(), 200, "everyone reads everything");
}

#[tokio::test]
async fn a_rep_adds_notes_and_tasks_to_their_own_deal() {
    let r = start().await;
    let bea = token_of(&r, "Bea Berg");
    let bea_id = r
        .sim
        .tokens()
        .iter()
        .find(|t| t.name == "Bea Berg")
        .map(|t| t.user_id)
        .expect("user");
    let own = r.deal_owned_by(bea_id).await;
    for path in ["/v2/notes", "/v2/tasks"] {
        let body = Some(
            json!({"data": {"content": "call back", "resource_type": "deal", "resource_id": own}}),
        );
        let (status, created) = split(r.call(Method::POST, path, &bea, body).await).await;
        assert_eq!(status, 200, "{path}: {created}");
        assert_eq!(created["data"]["resource_id"], json!(own));
    }
}

#[tokio::test]
async fn strings_longer_than_the_limits_are_refused_and_change_nothing() {
    let r = start().await;
    let before = r.sim.dump();
    let long_name = "x".repeat(256);
    let (status, body) = r
        .post("/v2/deals", json!({"data": {"name": long_name}}))
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("too long"), "{body}");
    let (status, _) = r
        .post(
            "/v2/notes",
            json!({"data": {"content": "y".repeat(65_537), "resource_type": "deal",
                             "resource_id": r.deal_owned_by(ADMIN).await}}),
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(r.sim.dump(), before, "a refused write changes nothing");
    let (status, _) = r
        .post("/v2/deals", json!({"data": {"name": "x".repeat(255)}}))
        .await;
    assert_eq!(status, 200, "255 characters is within the limit");
}

#[tokio::test]
async fn concurrent_writes_are_all_applied_once() {
    let r = std::sync::Arc::new(start().await);
    let deal = r.deal_owned_by(ADMIN).await;
    let version = |r: &Running| {
        r.sim
            .dump()
            .row(sellsync_sim::Kind::Deal, deal)
            .map(|row| row.version)
    };
    let before = version(&r).expect("deal");
    let mut tasks = Vec::new();
    for t in 0..8 {
        let r = r.clone();
        tasks.push(tokio::spawn(async move {
            let mut ok = 0;
            for i in 0..10 {
                let (s, _) = r
                    .put(
                        &format!("/v2/deals/{deal}"),
                        json!({"data": {"name": format!("w{t}-{i}")}}),
                    )
                    .await;
                ok += usize::from(s == 200);
                let (s, _) = r.get(&format!("/v2/deals/{deal}")).await;
                ok += usize::from(s == 200);
            }
            ok
        }));
    }
    let mut ok = 0;
    for t in tasks {
        ok += t.await.expect("task");
    }
    assert_eq!(ok, 160);
    assert_eq!(
        version(&r),
        Some(before + 80),
        "every write bumped the version exactly once"
    );
}
