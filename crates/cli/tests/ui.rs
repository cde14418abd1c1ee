//! The conflict page served by a real device process (`sellsync device ui`), against a real
//! hub: what it shows, what it refuses, and what a decision made on it does.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, Running, dashboard_link, ok, start_command};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, COOKIE, HOST, LOCATION, ORIGIN, SET_COOKIE};

/// A hub, Rita's phone and Carl's laptop, and a deal both edited offline: value and stage in
/// conflict on both devices.
struct Scene {
    _dir: tempfile::TempDir,
    _hub: Running,
    rita: String,
    carl: String,
    /// The hub's dashboard link, when it serves one.
    dashboard: Option<String>,
}

fn scene() -> Scene {
    scene_with(&["deal-acme"], false)
}

/// The cookie that carries `token` for the page at `base` (`http://127.0.0.1:PORT`): named by
/// the port, as the page sets it.
fn cookie_for(base: &str, token: &str) -> String {
    let port = base.rsplit_once(':').map_or("", |(_, p)| p);
    format!("sellsync_ui_{port}={token}")
}

/// [`scene`] with the same conflicts on each deal of `deals`, and the hub's dashboard.
fn scene_with(deals: &[&str], dashboard: bool) -> Scene {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("acl.toml"),
        "admins = [1]\n[[teams]]\nid = 10\nmembers = [2, 3]\n",
    )
    .unwrap();
    std::fs::write(
        d.join("catalog.json"),
        serde_json::to_string(&sellsync_model::Catalog::example()).unwrap(),
    )
    .unwrap();
    let p = |f: &str| d.join(f).to_str().unwrap().to_owned();
    let (hub_store, rita, carl) = (p("hub.redb"), p("rita.redb"), p("carl.redb"));
    let token = |user: &str, device: &str| {
        ok(&[
            "hub", "token", "--store", &hub_store, "--user", user, "--device", device,
        ])
        .trim()
        .to_owned()
    };
    let (t_rita, t_carl) = (token("2", "rita-phone"), token("3", "carl-laptop"));
    let mut cmd = Command::new(BIN);
    cmd.args(["hub", "--store", &hub_store, "--listen", "127.0.0.1:0"])
        .args(["--acl", &p("acl.toml"), "--catalog", &p("catalog.json")]);
    if dashboard {
        cmd.args(["--ui", "127.0.0.1:0"]).stderr(Stdio::piped());
    } else {
        cmd.stderr(Stdio::null());
    }
    let (mut hub, url) = start_command(cmd);
    let dashboard = dashboard.then(|| dashboard_link(&mut hub));
    for (store, t) in [(&rita, &t_rita), (&carl, &t_carl)] {
        ok(&[
            "device", "--store", store, "init", "--hub", &url, "--token", t,
        ]);
    }
    for (n, deal) in deals.iter().enumerate() {
        let name = if n == 0 {
            "name=Acme renewal".to_owned()
        } else {
            format!("name=Deal {n}")
        };
        ok(&[
            "device",
            "--store",
            &rita,
            "create-deal",
            "--id",
            deal,
            &name,
            "value=1000.00",
            "currency=EUR",
            "stage_id=12",
        ]);
    }
    ok(&["device", "--store", &rita, "sync"]);
    ok(&["device", "--store", &carl, "sync"]);
    for deal in deals {
        let set = |store: &str, value: &str, stage: &str| {
            ok(&["device", "--store", store, "set", deal, value, stage]);
        };
        set(&rita, "value=1500.00", "stage_id=13");
        set(&carl, "value=1200.00", "stage_id=14");
    }
    for store in [&rita, &carl, &rita] {
        ok(&["device", "--store", store, "sync"]);
    }
    Scene {
        _dir: dir,
        _hub: hub,
        rita,
        carl,
        dashboard,
    }
}

/// Rita's device serving its page; the base URL and the token.
fn serve_ui(store: &str) -> (Running, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(["device", "--store", store, "ui", "--listen", "127.0.0.1:0"])
        .args(["--sync-every", "1"])
        .stderr(Stdio::null());
    let (running, link) = start_command(cmd);
    let (base, token) = link.split_once("/?token=").expect("a link with its token");
    (running, base.to_owned(), token.to_owned())
}

fn field<'a>(html: &'a str, name: &str) -> &'a str {
    let at = html
        .find(&format!("name=\"{name}\" value=\""))
        .unwrap_or_else(|| panic!("no {name} field in {html}"));
    let rest = &html[at + name.len() + 15..];
    &rest[..rest.find('"').unwrap()]
}

/// A form body, as a browser sends it.
fn urlencoded(form: &[(&str, &str)]) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    form.iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

#[test]
fn the_page_shows_both_sides_by_name_and_a_merged_value_settles_the_conflict() {
    sellsync_hub_bridge::install_crypto_provider();
    let s = scene();
    let (_ui, base, token) = serve_ui(&s.rita);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let cookie = cookie_for(&base, &token);
    let get = |path: &str, cookie: Option<&str>| {
        rt.block_on(async {
            let mut r = http.get(format!("{base}{path}"));
            if let Some(c) = cookie {
                r = r.header(COOKIE, c);
            }
            let resp = r.send().await.unwrap();
            let status = resp.status();
            (status, resp.text().await.unwrap())
        })
    };
    let post = |path: &str, origin: Option<&str>, form: &[(&str, &str)]| {
        rt.block_on(async {
            let mut r = http
                .post(format!("{base}{path}"))
                .header(COOKIE, &cookie)
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(urlencoded(form));
            if let Some(o) = origin {
                r = r.header(ORIGIN, o);
            }
            let resp = r.send().await.unwrap();
            let status = resp.status();
            let to = resp
                .headers()
                .get(LOCATION)
                .map(|l| l.to_str().unwrap().to_owned());
            (status, to, resp.text().await.unwrap())
        })
    };

    // No token, a wrong one: refused. The link's token sets the cookie.
    assert_eq!(get("/inbox", None).0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        get("/inbox", Some(&cookie_for(&base, "0000"))).0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(get("/assets/app.js", None).0, StatusCode::UNAUTHORIZED);
    let first = rt
        .block_on(http.get(format!("{base}/?token={token}")).send())
        .unwrap();
    assert_eq!(first.status(), StatusCode::SEE_OTHER);
    let set = first.headers()[SET_COOKIE].to_str().unwrap();
    assert!(
        set.starts_with(&cookie) && set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    // A name other than loopback for this loopback server (DNS rebinding): refused.
    let rebound = rt
        .block_on(
            http.get(format!("{base}/inbox"))
                .header(COOKIE, &cookie)
                .header(HOST, "evil.example")
                .send(),
        )
        .unwrap();
    assert_eq!(rebound.status(), StatusCode::FORBIDDEN);

    // The inbox: the record by name, both conflicts.
    let (status, inbox) = get("/inbox", Some(&cookie));
    assert_eq!(status, StatusCode::OK);
    assert!(inbox.contains("Acme renewal"), "{inbox}");
    assert!(inbox.contains("2 open conflicts in 1 record"), "{inbox}");
    assert!(inbox.contains("Value was changed in two places"), "{inbox}");
    assert!(inbox.contains("Stage was changed in two places"), "{inbox}");

    // The record page: base, mine, theirs, by name, with the currency.
    let (status, page) = get("/record/deal-acme", Some(&cookie));
    assert_eq!(status, StatusCode::OK);
    for shown in [
        "1000.00 EUR",
        "1500.00 EUR",
        "1200.00 EUR",
        "Qualified",
        "Quote",
        "Closure",
        "Rita Rep",
        "Carl Colleague",
        "carl-laptop",
        "Keep mine",
        "Take theirs",
    ] {
        assert!(page.contains(shown), "{shown} missing from {page}");
    }
    let at = page
        .find("name=\"slot\" value=\"value\"")
        .expect("the value form");
    let seen = field(&page[at..], "seen").to_owned();
    let origin = base.clone();

    // From another site (CSRF), or without an origin: refused, nothing changes.
    let form = [
        ("slot", "value"),
        ("seen", seen.as_str()),
        ("choice", "value"),
        ("value", "1350.00"),
    ];
    assert_eq!(
        post(
            "/record/deal-acme/resolve",
            Some("http://evil.example"),
            &form
        )
        .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        post("/record/deal-acme/resolve", None, &form).0,
        StatusCode::FORBIDDEN
    );
    // Decided on candidates that are not the ones now: "changed while you looked".
    let stale = [
        ("slot", "value"),
        ("seen", "1@rita-phone"),
        ("choice", "mine"),
    ];
    let (status, _, body) = post("/record/deal-acme/resolve", Some(&origin), &stale);
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body.contains("This changed while you looked"), "{body}");
    // Three decimals: refused with the reason, nothing written.
    let bad = [
        ("slot", "value"),
        ("seen", seen.as_str()),
        ("choice", "value"),
        ("value", "1350.001"),
    ];
    let (status, _, body) = post("/record/deal-acme/resolve", Some(&origin), &bad);
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        get("/record/deal-acme", Some(&cookie))
            .1
            .contains("Value was changed in two places")
    );

    // The merged value, from the page itself: settled, in the history by name.
    let (status, to, body) = post("/record/deal-acme/resolve", Some(&origin), &form);
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    assert!(to.unwrap().starts_with("/record/deal-acme?done="));
    let (_, page) = get("/record/deal-acme", Some(&cookie));
    assert!(!page.contains("Value was changed in two places"), "{page}");
    assert!(page.contains("Stage was changed in two places"), "{page}");
    assert!(
        page.contains("1350.00 EUR") && page.contains("decided by Rita Rep"),
        "{page}"
    );

    // Stage: take theirs.
    let at = page
        .find("name=\"slot\" value=\"stage_id\"")
        .expect("the stage form");
    let seen = field(&page[at..], "seen").to_owned();
    let (status, _, body) = post(
        "/record/deal-acme/resolve",
        Some(&origin),
        &[("slot", "stage_id"), ("seen", &seen), ("choice", "theirs")],
    );
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    let (_, inbox) = get("/inbox", Some(&cookie));
    assert!(inbox.contains("Nothing to decide"), "{inbox}");

    // The page's background sync carries the decisions to the hub; Carl sees them.
    let mut last = serde_json::Value::Null;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        ok(&["device", "--store", &s.carl, "sync"]);
        last = serde_json::from_str(&ok(&[
            "device",
            "--store",
            &s.carl,
            "show",
            "deal-acme",
            "--json",
        ]))
        .unwrap();
        if last["conflicts"].as_array().is_some_and(|c| c.is_empty()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(last["conflicts"], serde_json::json!([]), "{last}");
    let fields = &last["record"]["fields"];
    assert_eq!(fields["stage_id"]["value"], 14, "{last}");
    assert_eq!(fields["value"]["value"], "1350.00", "{last}");
}

#[test]
fn a_sync_in_the_background_reaches_an_open_page_as_an_event() {
    sellsync_hub_bridge::install_crypto_provider();
    let s = scene();
    let (_ui, base, token) = serve_ui(&s.rita);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = reqwest::Client::new();
    let cookie = cookie_for(&base, &token);
    let mut events = rt
        .block_on(
            http.get(format!("{base}/events"))
                .header(COOKIE, &cookie)
                .send(),
        )
        .unwrap();
    assert_eq!(events.status(), StatusCode::OK);
    // Carl edits the deal again and syncs; Rita's page hears of it through its own sync.
    ok(&[
        "device",
        "--store",
        &s.carl,
        "set",
        "deal-acme",
        "name=Acme renewal 2027",
    ]);
    ok(&["device", "--store", &s.carl, "sync"]);
    let heard = rt.block_on(async {
        let mut got = String::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while !got.contains("deal-acme") {
            match tokio::time::timeout_at(deadline, events.chunk()).await {
                Ok(Ok(Some(bytes))) => got.push_str(&String::from_utf8_lossy(&bytes)),
                _ => break,
            }
        }
        got
    });
    assert!(
        heard.contains("event: changed") && heard.contains("deal-acme"),
        "{heard}"
    );
}

#[test]
fn take_the_latest_for_a_field_lists_what_it_keeps_and_leaves_what_changed_meanwhile() {
    sellsync_hub_bridge::install_crypto_provider();
    let s = scene_with(&["deal-a", "deal-b", "deal-c"], false);
    let (_ui, base, token) = serve_ui(&s.rita);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let cookie = cookie_for(&base, &token);
    let send = |r: reqwest::RequestBuilder| {
        rt.block_on(async {
            let resp = r.header(COOKIE, &cookie).send().await.unwrap();
            (resp.status(), resp.text().await.unwrap())
        })
    };
    let (status, page) = send(http.get(format!("{base}/bulk?field=value")));
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("Keep the latest for all 3"), "{page}");
    assert_eq!(
        page.matches("1200.00 EUR").count(),
        3,
        "Carl's, the later: {page}"
    );
    let items: Vec<String> = page
        .match_indices("name=\"item\" value=\"")
        .map(|(at, m)| {
            let rest = &page[at + m.len()..];
            rest[..rest.find('"').unwrap()].replace("&amp;", "&")
        })
        .collect();
    assert_eq!(items.len(), 3);
    // One of them changes before the rep confirms: its item names candidates no longer there.
    let mut form: Vec<(&str, String)> = vec![("field", "value".into())];
    form.push(("item", items[0].clone()));
    form.push(("item", items[1].clone()));
    let (id_c, rest) = items[2].split_once('|').unwrap();
    let (slot, rest) = rest.split_once('|').unwrap();
    let (_, op) = rest.split_once('|').unwrap();
    form.push(("item", format!("{id_c}|{slot}|{op},9@someone|{op}")));
    let body = form
        .iter()
        .map(|(k, v)| (*k, v.as_str()))
        .collect::<Vec<_>>();
    let (status, page) = send(
        http.post(format!("{base}/bulk"))
            .header(ORIGIN, &base)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(urlencoded(&body)),
    );
    assert_eq!(status, StatusCode::CONFLICT, "{page}");
    assert!(page.contains("2 decided") && page.contains(id_c), "{page}");
    let (_, inbox) = send(http.get(format!("{base}/inbox?field=value")));
    assert!(inbox.contains("1 open conflict in 1 record"), "{inbox}");
    assert!(
        inbox.contains(&format!("data-record=\"{id_c}\"")),
        "{inbox}"
    );
}

#[test]
fn the_hub_dashboard_shows_who_must_decide_and_refuses_without_its_token() {
    sellsync_hub_bridge::install_crypto_provider();
    let s = scene_with(&["deal-acme"], true);
    let link = s.dashboard.clone().unwrap();
    let (base, token) = link.split_once("/?token=").unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let get = |cookie: Option<String>| {
        rt.block_on(async {
            let mut r = http.get(format!("{base}/dashboard"));
            if let Some(c) = cookie {
                r = r.header(COOKIE, c);
            }
            let resp = r.send().await.unwrap();
            (resp.status(), resp.text().await.unwrap())
        })
    };
    assert_eq!(get(None).0, StatusCode::UNAUTHORIZED);
    let (status, page) = get(Some(cookie_for(base, token)));
    assert_eq!(status, StatusCode::OK, "{page}");
    // Two conflicts (value, stage), each waiting for Rita and Carl, by name.
    assert!(page.contains("2 open conflicts"), "{page}");
    assert!(
        page.contains("Rita Rep") && page.contains("Carl Colleague"),
        "{page}"
    );
    assert!(
        page.contains("rita-phone") && page.contains("carl-laptop"),
        "{page}"
    );
    assert!(page.contains("This hub runs no bridge"), "{page}");
    // Both devices synced with the hub a moment ago.
    assert_eq!(page.matches(">just now<").count(), 2, "{page}");
    assert!(page.contains("By week") && page.contains("-W"), "{page}");
}

#[test]
fn a_value_of_yours_that_gave_way_is_listed_and_dismissed_from_the_inbox() {
    sellsync_hub_bridge::install_crypto_provider();
    let s = scene();
    // Both set the close date offline; Carl's is the later write, so Rita's gives way (a
    // notify-tier field: latest wins, the loser is told).
    ok(&[
        "device",
        "--store",
        &s.rita,
        "set",
        "deal-acme",
        "estimated_close_date=2027-03-01",
    ]);
    std::thread::sleep(Duration::from_millis(20));
    ok(&[
        "device",
        "--store",
        &s.carl,
        "set",
        "deal-acme",
        "estimated_close_date=2027-04-15",
    ]);
    for store in [&s.rita, &s.carl, &s.rita] {
        ok(&["device", "--store", store, "sync"]);
    }
    let (ui, base, token) = serve_ui(&s.rita);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let cookie = cookie_for(&base, &token);
    let inbox = || {
        rt.block_on(async {
            let r = http.get(format!("{base}/inbox")).header(COOKIE, &cookie);
            r.send().await.unwrap().text().await.unwrap()
        })
    };
    let page = inbox();
    let notes = &page[page.find("Values of yours that gave way").unwrap()..];
    assert!(
        notes.contains("2027-03-01") && notes.contains("2027-04-15"),
        "{notes}"
    );
    assert!(notes.contains("Carl Colleague"), "{notes}");
    let action = notes
        .split("action=\"")
        .nth(1)
        .and_then(|a| a.split('"').next())
        .expect("a dismiss form")
        .to_owned();
    assert!(action.ends_with("/dismiss"), "{action}");

    // From another site: refused, and the notification stays.
    let post = |origin: &str| {
        rt.block_on(async {
            http.post(format!("{base}{action}"))
                .header(COOKIE, &cookie)
                .header(ORIGIN, origin)
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    assert_eq!(post("http://evil.example"), StatusCode::FORBIDDEN);
    assert!(inbox().contains(&action));
    assert_eq!(post(&base), StatusCode::SEE_OTHER);
    let page = inbox();
    let notes = &page[page.find("Values of yours that gave way").unwrap()..];
    assert!(
        !notes.contains(&action) && notes.contains("None."),
        "{notes}"
    );
    // The device's own list agrees (once the page's process lets go of the store).
    drop(ui);
    let listed = common::json(&[
        "device",
        "--store",
        &s.rita,
        "notifications",
        "--unread",
        "--json",
    ]);
    assert_eq!(listed, serde_json::json!([]), "{listed}");
}
