//! The whole-system simulation: seeded scenarios against the system invariants.
//!
//! `SELLSYNC_SIM_CASES` scenarios (default 12) of `SELLSYNC_SIM_STEPS` steps (default 60), from
//! seeds 1, 2, ... (or `SELLSYNC_SIM_FIRST_SEED`); `SELLSYNC_SIM_SEED=N` runs exactly that seed.
//! A failure is shrunk to a short step list and printed with its seed and trace;
//! `SELLSYNC_SIM_TRACE=1` prints the trace of passing runs too; `SELLSYNC_SIM_SECONDS` stops a
//! long campaign after that many seconds; `SELLSYNC_SIM_KEEP_GOING=1` runs on past failures
//! and lists the failing seeds at the end.

use sellsync_simtest::{Scenario, run, shrink};

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

#[test]
fn seeded_scenarios_keep_the_system_invariants() {
    let steps = env_u64("SELLSYNC_SIM_STEPS").unwrap_or(60) as usize;
    let seeds: Vec<u64> = match env_u64("SELLSYNC_SIM_SEED") {
        Some(seed) => vec![seed],
        None => {
            let first = env_u64("SELLSYNC_SIM_FIRST_SEED").unwrap_or(1);
            let cases = env_u64("SELLSYNC_SIM_CASES").unwrap_or(12);
            (first..first + cases).collect()
        }
    };
    let started = std::time::Instant::now();
    // A campaign may stop early after this many seconds (it says how many scenarios ran).
    let budget = env_u64("SELLSYNC_SIM_SECONDS").map(std::time::Duration::from_secs);
    let mut ran = 0usize;
    let mut failed: Vec<u64> = Vec::new();
    for seed in &seeds {
        if budget.is_some_and(|b| started.elapsed() > b) {
            break;
        }
        ran += 1;
        let scenario = Scenario::generate(*seed, steps);
        let outcome = run(&scenario);
        if let (Ok(trace), Some(_)) = (&outcome, std::env::var_os("SELLSYNC_SIM_TRACE")) {
            eprintln!("seed {seed} passed:\n  {}", trace.join("\n  "));
        }
        if let (Err(failure), Some(_)) = (&outcome, std::env::var_os("SELLSYNC_SIM_KEEP_GOING")) {
            // A campaign that counts failures: one line each, no shrinking.
            eprintln!(
                "seed {seed} FAILED: {}",
                failure.violations.first().cloned().unwrap_or_default()
            );
            failed.push(*seed);
            continue;
        }
        if let Err(failure) = outcome {
            eprintln!("{failure}");
            let budget = env_u64("SELLSYNC_SIM_SHRINK").unwrap_or(40) as usize;
            let (small, f) = shrink(&scenario, failure.clone(), budget);
            eprintln!(
                "shrunk to {} of {} steps (devices {:?}):\n{f}",
                small.steps.len(),
                scenario.steps.len(),
                small.device_users
            );
            for s in &small.steps {
                eprintln!("  {s:?}");
            }
            panic!(
                "seed {seed} failed ({}); replay with SELLSYNC_SIM_SEED={seed} SELLSYNC_SIM_STEPS={steps}",
                failure.violations.first().cloned().unwrap_or_default()
            );
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {ran} scenarios failed, seeds {failed:?}",
        failed.len()
    );
    eprintln!(
        "{ran} scenarios of {steps} steps (seeds {}..) passed in {:.1} s",
        seeds.first().copied().unwrap_or_default(),
        started.elapsed().as_secs_f64()
    );
}
