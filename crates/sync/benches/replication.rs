//! In-memory replication benchmarks: the real sessions and the in-memory replica, over the test
//! network (no sockets, no latency).
//!
//! - `fresh_pull/N`: a device with nothing pulls N deal-like documents (30 fields) from the hub.
//! - `reconnect`: a device holding 5,000 of them edits 50 (3 fields each) while the hub has 50
//!   other changed ones.
//!
//! Before timing, the run prints one table of bytes, frames, legs and round trips per case
//! (deterministic, so one run of each is enough). `SYNC_BENCH_SIZES=1000,5000` picks the pull
//! sizes (default 1000,5000,20000).
//!
//! `cargo bench -p sellsync-sync --bench replication`

#[path = "../tests/support/mod.rs"]
mod support;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion};
use support::{HUB, Net, Run, deal, record_id, set_fields, standard_acl};

fn hub_with(n: usize) -> Net {
    let mut net = Net::new(&[1], standard_acl());
    for i in 0..n {
        let d = deal(&net.nodes[HUB], 1, 30, i as u64);
        net.nodes[HUB].put(record_id(&format!("deal-{i}")), d);
    }
    net
}

fn fresh_pull(net: &mut Net) -> Run {
    let run = net.sync(1, HUB, None);
    assert!(run.finished, "the pull did not finish");
    run
}

/// A device holding `n` synced documents; then 50 edited on each side.
fn reconnect_setup(n: usize) -> Net {
    let mut net = hub_with(n);
    fresh_pull(&mut net);
    // One change of 3 fields per document, as one user action makes it.
    for i in 0..50 {
        let dev = [("f0", 1000 + i), ("f1", 1001 + i), ("f2", 1002 + i)];
        let hub = [("f0", 2000 + i), ("f1", 2001 + i), ("f2", 2002 + i)];
        assert!(set_fields(
            &mut net.nodes[1],
            &record_id(&format!("deal-{i}")),
            &dev
        ));
        assert!(set_fields(
            &mut net.nodes[HUB],
            &record_id(&format!("deal-{}", 50 + i)),
            &hub
        ));
    }
    net
}

fn sizes() -> Vec<usize> {
    std::env::var("SYNC_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1000, 5000, 20000])
}

fn report() {
    println!("| case | time (one run) | bytes in frames | frames | legs | round trips |");
    println!("|---|---|---|---|---|---|");
    for n in sizes() {
        let mut net = hub_with(n);
        let t = Instant::now();
        let run = fresh_pull(&mut net);
        let dt = t.elapsed();
        println!(
            "| fresh pull {n} | {:.3} s | {} | {} | {} | {} |",
            dt.as_secs_f64(),
            run.bytes,
            run.frames,
            run.legs,
            run.round_trips()
        );
    }
    let mut net = reconnect_setup(5000);
    let t = Instant::now();
    let run = net.sync(1, HUB, None);
    let dt = t.elapsed();
    assert!(run.finished);
    assert_eq!(run.changed, 100);
    println!(
        "| reconnect 5000 (50+50 changed) | {:.1} ms | {} | {} | {} | {} |",
        dt.as_secs_f64() * 1000.0,
        run.bytes,
        run.frames,
        run.legs,
        run.round_trips()
    );
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("fresh_pull");
    g.sample_size(10).warm_up_time(Duration::from_millis(500));
    for n in sizes() {
        g.bench_function(n.to_string(), |b| {
            b.iter_batched(
                || hub_with(n),
                // The network is returned so that dropping it stays outside the measurement.
                |mut net| {
                    let run = fresh_pull(&mut net);
                    black_box((net, run))
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
    let mut g = c.benchmark_group("reconnect");
    g.sample_size(10).warm_up_time(Duration::from_millis(500));
    g.bench_function("5000_docs_50_plus_50_changed", |b| {
        b.iter_batched(
            || reconnect_setup(5000),
            |mut net| {
                let run = net.sync(1, HUB, None);
                black_box((net, run))
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn main() {
    report();
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c);
    c.final_summary();
}
