//! The conflict page in Chromium (`tests/ui/browser.mjs`, Playwright), against real processes:
//! the simulator, a hub running its bridge, Rita's device serving its page, Carl's device on
//! the command line. Needs Node with `tests/ui`'s packages and Debian's chromium:
//! `bash scripts/ui-tests.sh` installs them and runs this test (it is ignored otherwise).

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, dashboard_link, ok, start_command};
use sellsync_sim::{Sim, SimConfig, demo_data, token_for};
use serde_json::Value;

const ADMIN: u64 = 2;

fn json(args: &[&str]) -> Value {
    serde_json::from_str(&ok(args)).unwrap()
}

#[test]
#[ignore = "needs Node, tests/ui's packages and chromium: run scripts/ui-tests.sh"]
fn the_conflict_page_in_chromium() {
    sellsync_hub_bridge::install_crypto_provider();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sim = Sim::new(demo_data(), SimConfig::default());
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let crm = format!("http://{}", listener.local_addr().unwrap());
    let tokens = sim.tokens();
    rt.spawn(sellsync_sim::serve(listener, sim, std::future::pending()));
    let team = |name: &str| -> Vec<u64> {
        tokens
            .iter()
            .filter(|t| t.team.as_deref() == Some(name) && t.role != "admin")
            .map(|t| t.user_id)
            .collect()
    };
    let (north, south) = (team("North"), team("South"));
    let name_of = |id: u64| {
        tokens
            .iter()
            .find(|t| t.user_id == id)
            .map(|t| t.name.clone())
            .unwrap()
    };

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("acl.toml"),
        format!(
            "admins = [{ADMIN}]\n[[teams]]\nid = 1\nmembers = {north:?}\n[[teams]]\nid = 2\nmembers = {south:?}\n"
        ),
    )
    .unwrap();
    let p = |f: &str| d.join(f).to_str().unwrap().to_owned();
    let (hub_store, rita, carl) = (p("hub.redb"), p("rita.redb"), p("carl.redb"));
    let (rita_user, carl_user) = (north[0], north[1]);
    let token = |user: u64, device: &str| {
        ok(&[
            "hub",
            "token",
            "--store",
            &hub_store,
            "--user",
            &user.to_string(),
            "--device",
            device,
        ])
        .trim()
        .to_owned()
    };
    let (t_rita, t_carl) = (
        token(rita_user, "rita-phone"),
        token(carl_user, "carl-laptop"),
    );
    let mut hub = Command::new(BIN);
    hub.args(["hub", "--store", &hub_store, "--listen", "127.0.0.1:0"])
        .args(["--acl", &p("acl.toml")])
        .args(["--zendesk-url", &crm, "--bridge-every", "1"])
        .args(["--ui", "127.0.0.1:0"])
        .env("SELLSYNC_ZENDESK_TOKEN", token_for(ADMIN))
        .stderr(Stdio::piped());
    let (mut hub, url) = start_command(hub);
    let dashboard = dashboard_link(&mut hub);
    for (store, t) in [(&rita, &t_rita), (&carl, &t_carl)] {
        ok(&[
            "device", "--store", store, "init", "--hub", &url, "--token", t,
        ]);
        ok(&["device", "--store", store, "sync"]);
    }

    // A deal both hold, and two stages other than its own.
    let carls = json(&["device", "--store", &carl, "deals", "--json"]);
    let deal = json(&["device", "--store", &rita, "deals", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .find(|r| carls.as_array().unwrap().iter().any(|c| c["id"] == r["id"]))
        .expect("a deal Rita and Carl both see")
        .clone();
    let id = deal["id"].as_str().unwrap().to_owned();
    let crm_id: u64 = id.strip_prefix("zd-").unwrap().parse().unwrap();
    let title = deal["fields"]["name"]["value"].as_str().unwrap().to_owned();
    let own_stage = deal["fields"]["stage_id"]["value"].as_u64();
    let catalog = json(&["device", "--store", &rita, "catalog", "--json"]);
    let listed: Vec<&Value> = match &catalog["stages"] {
        Value::Object(m) => m.values().collect(),
        Value::Array(a) => a.iter().collect(),
        other => panic!("no stages in the catalog: {other}"),
    };
    let mut stages: Vec<(u64, String)> = listed
        .into_iter()
        .filter(|s| s["category"] == "in_progress" && s["id"].as_u64() != own_stage)
        .map(|s| {
            (
                s["id"].as_u64().unwrap(),
                s["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    stages.sort();
    assert!(stages.len() >= 2, "{catalog}");
    let (mine, theirs) = (&stages[0], &stages[1]);

    ok(&[
        "device",
        "--store",
        &rita,
        "set",
        &id,
        "value=1500.00",
        &format!("stage_id={}", mine.0),
    ]);
    ok(&[
        "device",
        "--store",
        &carl,
        "set",
        &id,
        "value=1200.00",
        &format!("stage_id={}", theirs.0),
    ]);
    for store in [&rita, &carl, &rita] {
        ok(&["device", "--store", store, "sync"]);
    }

    let mut ui = Command::new(BIN);
    ui.args(["device", "--store", &rita, "ui", "--listen", "127.0.0.1:0"])
        .args(["--sync-every", "1"])
        .stderr(Stdio::null());
    let (_ui, link) = start_command(ui);

    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let status = Command::new("node")
        .arg("browser.mjs")
        .current_dir(root.join("tests/ui"))
        .env("SELLSYNC_UI", &link)
        .env("SELLSYNC_DASHBOARD", &dashboard)
        .env("SELLSYNC_BIN", BIN)
        .env("CARL_STORE", &carl)
        .env("DEAL", &id)
        .env("DEAL_TITLE", &title)
        .env("RITA_NAME", name_of(rita_user))
        .env("CARL_NAME", name_of(carl_user))
        .env("THEIR_STAGE", &theirs.1)
        .env("SHOTS", root.join("docs/ui"))
        .env("CRM_URL", &crm)
        .env("CRM_ID", crm_id.to_string())
        .env("CRM_TOKEN", token_for(ADMIN))
        .status()
        .expect("node runs (scripts/ui-tests.sh installs what it needs)");
    assert!(status.success(), "the browser test failed: {status}");

    // The decisions reach Zendesk through the bridge: the typed value, Carl's stage.
    let http = reqwest::Client::new();
    let start = Instant::now();
    let mut last = Value::Null;
    while start.elapsed() < Duration::from_secs(60) {
        last = rt.block_on(async {
            match http
                .get(format!("{crm}/v2/deals/{crm_id}"))
                .bearer_auth(token_for(ADMIN))
                .send()
                .await
            {
                Ok(r) => r.json().await.unwrap_or(Value::Null),
                Err(_) => Value::Null,
            }
        });
        let value = &last["data"]["value"];
        let value = value
            .as_f64()
            .or_else(|| value.as_str().and_then(|s| s.parse().ok()));
        if value == Some(1350.0) && last["data"]["stage_id"].as_u64() == Some(theirs.0) {
            return;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!("Zendesk does not show the decisions: {last}");
}
