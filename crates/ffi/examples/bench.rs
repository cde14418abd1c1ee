//! The Rust side of the binding benchmarks (docs/benchmarks.md, "Bindings"): the same calls the
//! Python and Kotlin benchmarks make through the generated bindings, made here on the exported
//! API as plain Rust.
//!
//! ```sh
//! cargo run --release -p sellsync-ffi --example bench -- make STORE 5000   # a store of 5,000 deals
//! cargo run --release -p sellsync-ffi --example bench -- time STORE        # open, list twice, one edit
//! cargo run --release -p sellsync-ffi --example bench -- rss STORE 32      # peak RSS, 32 MiB cache
//! ```
//!
//! `make` enrols the store with a hub that is not there (no connection is made) and creates
//! the deals through the facade, one write each (name, value, currency, stage): an offline
//! device's store as a rep's phone would hold it.

use std::time::Instant;

use sellsync_ffi::{Device, DeviceConfig, Enrolment, FieldInput};

fn input(name: &str, value: &str) -> FieldInput {
    FieldInput {
        name: name.to_owned(),
        value: Some(value.to_owned()),
    }
}

fn config(path: &str, cache_mib: Option<u64>) -> DeviceConfig {
    DeviceConfig {
        store_path: path.to_owned(),
        cache_bytes: cache_mib.map(|m| m << 20),
        low_memory: false,
    }
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

/// This process's peak resident set (VmHWM), in KiB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["make", path, n] => {
            let n: usize = n.parse()?;
            let d = Device::enrol(
                config(path, None),
                Enrolment {
                    hub_url: "ws://127.0.0.1:9/".to_owned(),
                    token: format!("hub.2.rita-phone.{}", "ab".repeat(32)),
                    ca_pem: None,
                },
            )?;
            let t = Instant::now();
            for i in 0..n {
                d.create_deal(vec![
                    input("name", &format!("Lead {i}")),
                    input("value", &format!("{}", 1000 + i)),
                    input("currency", "EUR"),
                    input("stage_id", "12"),
                ])?;
            }
            println!("made {n} deals in {path} in {:.0} ms", ms(t));
        }
        ["time", path] => {
            let t = Instant::now();
            let d = Device::open(config(path, None))?;
            let open = ms(t);
            let t = Instant::now();
            let first = d.deals()?;
            let cold = ms(t);
            let t = Instant::now();
            let deals = d.deals()?;
            let warm = ms(t);
            assert_eq!(first.len(), deals.len());
            let t = Instant::now();
            d.set(deals[0].id.clone(), vec![input("value", "4242")])?;
            let edit = ms(t);
            println!(
                "rust: deals={} open_ms={open:.1} list_cold_ms={cold:.1} list_warm_ms={warm:.1} edit_ms={edit:.1}",
                deals.len()
            );
        }
        ["rss", path, mib] => {
            let d = Device::open(config(path, Some(mib.parse()?)))?;
            let n = d.deals()?.len();
            let n2 = d.deals()?.len();
            assert_eq!(n, n2);
            println!(
                "rust: deals={n} cache_mib={mib} peak_rss_kib={}",
                peak_rss_kib()
            );
        }
        _ => {
            eprintln!("usage: bench make STORE N | time STORE | rss STORE CACHE_MIB");
            std::process::exit(2);
        }
    }
    Ok(())
}
