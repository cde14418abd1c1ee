//! Load generator: requests per second the simulator serves on loopback for `GET` and `PUT` of
//! one deal. Starts the simulator in-process on 127.0.0.1:0 (rate limit off) and drives it with
//! keep-alive HTTP/1.1 connections from the same process, so client and server share the cores.
//!
//! ```text
//! cargo run --release -p sellsync-sim --example load -- [SECONDS] [CONNECTIONS]
//! ```

use std::time::{Duration, Instant};

use reqwest::Client;
use sellsync_sim::{Sim, SimConfig};
use serde_json::json;

async fn phase(
    client: &Client,
    url: &str,
    token: &str,
    put: bool,
    secs: u64,
    conns: usize,
) -> (u64, u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for c in 0..conns {
        let (client, url, token) = (client.clone(), url.to_owned(), token.to_owned());
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0u64, 0u64);
            let mut n = 0u64;
            while Instant::now() < deadline {
                n += 1;
                let req = if put {
                    let body = json!({"data": {"name": format!("load {c}-{n}"), "value": "10.50"}});
                    client.put(&url).bearer_auth(&token).json(&body)
                } else {
                    client.get(&url).bearer_auth(&token)
                };
                match req.send().await {
                    Ok(res) if res.status().is_success() => {
                        let _ = res.bytes().await;
                        ok += 1;
                    }
                    _ => failed += 1,
                }
            }
            (ok, failed)
        }));
    }
    let mut total = (0, 0);
    for t in tasks {
        if let Ok((ok, failed)) = t.await {
            total.0 += ok;
            total.1 += failed;
        }
    }
    total
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let secs: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(5);
    let conns: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(8);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = SimConfig {
        rate_limit_per_hour: 0,
        ..SimConfig::default()
    };
    let sim = Sim::new(sellsync_sim::demo_data(), config);
    let token = sellsync_sim::token_for(2);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(sellsync_sim::serve(listener, sim.clone(), async {
        let _ = stop_rx.await;
    }));
    let client = Client::builder().pool_max_idle_per_host(conns).build()?;
    let deal = sim
        .dump()
        .rows(sellsync_sim::Kind::Deal)
        .next()
        .and_then(|r| r.data["id"].as_u64())
        .ok_or("no deal")?;
    let url = format!("http://{addr}/v2/deals/{deal}");
    println!("simulator load: {conns} connections, {secs} s per phase, deal {deal}");
    for (label, put) in [("GET /v2/deals/{id}", false), ("PUT /v2/deals/{id}", true)] {
        let (ok, failed) = phase(&client, &url, &token, put, secs, conns).await;
        println!(
            "{label}: {ok} ok, {failed} failed, {:.0} req/s",
            ok as f64 / secs as f64
        );
    }
    let _ = stop_tx.send(());
    let _ = server.await;
    Ok(())
}
