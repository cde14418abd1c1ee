//! Baseline for `replication`: samod 0.16 (the automerge-repo protocol) doing the same fresh
//! pull. A hub repo holds N deal-like documents (the same 30-field documents as the
//! `replication` bench); a device repo connects over samod's in-process channel transport and
//! finds every document, one after the other. Times only: samod's channel transport does not
//! expose byte counts.
//!
//! `SAMOD_BENCH_SIZES=1000,5000` picks the sizes (default 1000,5000; 20,000 is left out by
//! default because samod's pull time grows superlinearly, see docs/benchmarks.md). Each size
//! stops after `SAMOD_BENCH_TIMEOUT_S` seconds (default 600).
//!
//! `cargo bench -p sellsync-sync --bench samod_baseline`

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use samod::transport::channel::ChannelDialer;
use samod::{BackoffConfig, Repo, Url};
use sellsync_sync::memory::{Acl, MemReplica};

fn env_list(name: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(name)
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| default.to_vec())
}

async fn pull(n: usize) -> Result<Duration, String> {
    let maker = MemReplica::new(
        "hub".parse().map_err(|e| format!("{e}"))?,
        None,
        Acl::default(),
    );
    let hub = Repo::build_tokio().load().await;
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let doc = support::deal(&maker, 1, 30, i as u64);
        let handle = hub
            .create(doc)
            .await
            .map_err(|e| format!("create: {e:?}"))?;
        ids.push(handle.document_id().clone());
    }
    let device = Repo::build_tokio().load().await;
    let url = Url::parse("samod-channel://hub").map_err(|e| e.to_string())?;
    let acceptor = hub
        .make_acceptor(url)
        .map_err(|e| format!("acceptor: {e:?}"))?;
    let dialer = device
        .dial(
            BackoffConfig::default(),
            Arc::new(ChannelDialer::new(acceptor)),
        )
        .map_err(|e| format!("dial: {e:?}"))?;
    dialer
        .established()
        .await
        .map_err(|e| format!("established: {e:?}"))?;
    let start = Instant::now();
    for id in ids {
        match device.find(id).await {
            Ok(Some(_)) => {}
            other => return Err(format!("find failed: {other:?}")),
        }
    }
    let elapsed = start.elapsed();
    device.stop().await;
    hub.stop().await;
    Ok(elapsed)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: keep that run short.
    let benching = std::env::args().any(|a| a == "--bench");
    let sizes = if benching {
        env_list("SAMOD_BENCH_SIZES", &[1000, 5000])
    } else {
        vec![50]
    };
    let timeout = Duration::from_secs(
        std::env::var("SAMOD_BENCH_TIMEOUT_S")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(600),
    );
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start a runtime: {e}");
            std::process::exit(1);
        }
    };
    println!("| case | samod 0.16 time (one run) |");
    println!("|---|---|");
    for n in sizes {
        match rt.block_on(async { tokio::time::timeout(timeout, pull(n)).await }) {
            Ok(Ok(t)) => println!("| fresh pull {n} (samod) | {:.3} s |", t.as_secs_f64()),
            Ok(Err(e)) => println!("| fresh pull {n} (samod) | failed: {e} |"),
            Err(_) => println!(
                "| fresh pull {n} (samod) | over {} s, stopped |",
                timeout.as_secs()
            ),
        }
    }
}
