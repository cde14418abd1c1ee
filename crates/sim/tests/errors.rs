//! Errors over real HTTP: always the Zendesk envelope with logref = X-Request-Id, and a bad
//! request changes nothing and does not disturb the next one.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test]
async fn missing_or_unknown_token_is_401() {
    let r = start().await;
    let res = r
        .client
        .get(format!("{}/v2/deals", r.base))
        .send()
        .await
        .expect("get");
    expect_error(res, 401, "unauthorized").await;
    let res = r
        .call(Method::GET, "/v2/deals", &"x".repeat(64), None)
        .await;
    expect_error(res, 401, "unauthorized").await;
}

#[tokio::test]
async fn bad_query_and_path_parameters_are_400_or_404() {
    let r = start().await;
    let t = admin_token(&r);
    for path in [
        "/v2/deals?per_page=101",
        "/v2/deals?per_page=0",
        "/v2/deals?page=x",
        "/v2/deals?sort_by=nope:desc",
        "/v2/deals?ids=1,a",
        "/v2/deals/abc",
    ] {
        let res = r.call(Method::GET, path, &t, None).await;
        expect_error(res, 400, "invalid_param").await;
    }
    let res = r.call(Method::GET, "/v2/deals/999999", &t, None).await;
    expect_error(res, 404, "not_found").await;
    for (m, path) in [
        (Method::GET, "/v2/nothing"),
        (Method::PATCH, "/v2/deals/1"),
        (Method::GET, "/v3/deals/stream"),
    ] {
        let res = r.call(m, path, &t, None).await;
        expect_error(res, 404, "incorrect_path").await;
    }
}

#[tokio::test]
async fn malformed_bodies_are_400_and_oversized_bodies_413() {
    let r = start().await;
    let t = admin_token(&r);
    let before = r.sim.dump();
    for raw in [
        "{\"data\":",
        "[1,2]",
        "{\"name\": \"no envelope\"}",
        "{\"data\": 5}",
        "",
    ] {
        let res = r
            .client
            .post(format!("{}/v2/deals", r.base))
            .bearer_auth(&t)
            .body(raw)
            .send()
            .await
            .expect("post");
        expect_error(res, 400, "invalid_payload").await;
    }
    let huge = json!({"data": {"name": "x".repeat(2 * 1024 * 1024)}});
    let res = r.call(Method::POST, "/v2/deals", &t, Some(huge)).await;
    expect_error(res, 413, "request_too_large").await;
    assert_eq!(r.sim.dump(), before);
    let (s, _) = r.post("/v2/deals", json!({"data": {"name": "fine"}})).await;
    assert_eq!(s, 200, "the next request is unaffected");
}

async fn field_errors(
    r: &Running,
    method: Method,
    path: &str,
    data: Value,
) -> Vec<(String, String)> {
    let res = r
        .call(method, path, &admin_token(r), Some(json!({"data": data})))
        .await;
    let body = expect_error(res, 422, "").await.clone();
    body["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let s = |k: &str| e["error"][k].as_str().unwrap_or("").to_owned();
            (s("code"), s("field"))
        })
        .collect()
}

#[tokio::test]
async fn invalid_attributes_are_422_naming_each_field() {
    let r = start().await;
    let deal = r.deal_owned_by(ADMIN).await;
    let before = r.sim.dump();
    let cases: Vec<(Value, &str, &str)> = vec![
        (json!({"bogus": 1}), "unknown", "/data/bogus"),
        (json!({"name": ""}), "blank", "/data/name"),
        (json!({"name": null}), "blank", "/data/name"),
        (json!({"hot": "yes"}), "invalid_type", "/data/hot"),
        (json!({"value": true}), "invalid_type", "/data/value"),
        (json!({"value": -5}), "incorrect_value", "/data/value"),
        (json!({"value": "1.234"}), "incorrect_value", "/data/value"),
        (
            json!({"currency": "DOGE"}),
            "incorrect_value",
            "/data/currency",
        ),
        (
            json!({"stage_id": 999_999}),
            "incorrect_value",
            "/data/stage_id",
        ),
        (
            json!({"owner_id": 999_999}),
            "incorrect_value",
            "/data/owner_id",
        ),
        (
            json!({"contact_id": 999_999}),
            "incorrect_value",
            "/data/contact_id",
        ),
        (
            json!({"loss_reason_id": 999_999}),
            "incorrect_value",
            "/data/loss_reason_id",
        ),
        (
            json!({"source_id": 999_999}),
            "incorrect_value",
            "/data/source_id",
        ),
        (
            json!({"custom_fields": {"Nope": "x"}}),
            "unknown",
            "/data/custom_fields/Nope",
        ),
        (
            json!({"custom_fields": {"Region": "Mars"}}),
            "incorrect_value",
            "/data/custom_fields/Region",
        ),
        (
            json!({"estimated_close_date": "soon"}),
            "incorrect_value",
            "/data/estimated_close_date",
        ),
        (json!({"tags": "x"}), "invalid_type", "/data/tags"),
    ];
    for (data, code, field) in cases {
        let got = field_errors(&r, Method::PUT, &format!("/v2/deals/{deal}"), data.clone()).await;
        assert!(
            got.contains(&(code.to_owned(), field.to_owned())),
            "{data} gave {got:?}"
        );
    }
    let got = field_errors(&r, Method::POST, "/v2/deals", json!({"value": 5})).await;
    assert!(
        got.contains(&("missing".to_owned(), "/data/name".to_owned())),
        "{got:?}"
    );
    let got = field_errors(&r, Method::POST, "/v2/contacts", json!({"first_name": "A"})).await;
    assert!(
        got.contains(&("missing".to_owned(), "/data/last_name".to_owned())),
        "{got:?}"
    );
    let got = field_errors(
        &r,
        Method::POST,
        "/v2/notes",
        json!({"content": "x", "resource_type": "deal", "resource_id": 999_999}),
    )
    .await;
    assert!(
        got.contains(&("incorrect_value".to_owned(), "/data/resource_id".to_owned())),
        "{got:?}"
    );
    let got = field_errors(
        &r,
        Method::POST,
        "/v2/tasks",
        json!({"content": "x", "resource_type": "planet", "resource_id": 1}),
    )
    .await;
    assert!(
        got.contains(&(
            "incorrect_value".to_owned(),
            "/data/resource_type".to_owned()
        )),
        "{got:?}"
    );
    let got = field_errors(
        &r,
        Method::POST,
        "/v2/loss_reasons",
        json!({"name": "No budget"}),
    )
    .await;
    assert!(
        got.contains(&("already_exists".to_owned(), "/data/name".to_owned())),
        "{got:?}"
    );
    assert_eq!(r.sim.dump(), before, "nothing changed");
}

#[tokio::test]
async fn rate_limit_is_per_token() {
    let config = sellsync_sim::SimConfig {
        rate_limit_per_hour: 3,
        ..Default::default()
    };
    let r = start_with(sellsync_sim::demo_data(), config).await;
    let t = admin_token(&r);
    for _ in 0..3 {
        assert_eq!(
            r.call(Method::GET, "/v2/users/self", &t, None)
                .await
                .status()
                .as_u16(),
            200
        );
    }
    let res = r.call(Method::GET, "/v2/users/self", &t, None).await;
    expect_error(res, 429, "rate_limit_exceeded").await;
    let other = token_of(&r, "Bea Berg");
    assert_eq!(
        r.call(Method::GET, "/v2/users/self", &other, None)
            .await
            .status()
            .as_u16(),
        200
    );
}
