//! Bridge push benchmark: API calls per pushed record, and the time to push changed deals to a
//! simulator rate-limited like Zendesk against the rate-limit floor.
//!
//! ```text
//! cargo run --release -p sellsync-hub-bridge --example push_bench -- [DEALS] [PER_SECOND] [SEED]
//! ```
//!
//! DEALS (default 1,000) deals are created in the simulator, imported, then each is edited on
//! 1 to 3 fields on the hub and pushed. Then DEALS/10 deals made on the hub are pushed (creates),
//! then DEALS/10 notes added on the hub to deals that are otherwise unchanged. The bridge paces
//! itself at PER_SECOND requests a second (default 10, Zendesk's 36,000 an hour; 0 turns pacing
//! off and shows the bridge's own cost per request). The simulator limits the token to 36,000
//! requests an hour, like Zendesk. Requests are counted by route by the simulator and by the
//! bridge's own counter.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use sellsync_hub_bridge::{Crm, PushReport, ZendeskHttp};
use sellsync_model::{Edit, Money, RecordId, RecordKind, Value};
use sellsync_sim::Counters;
use serde_json::json;
use support::{World, deal_id, key, now};

/// Zendesk's budget: 36,000 requests an hour per token.
const ZENDESK_PER_HOUR: u64 = 36_000;

struct Args {
    deals: usize,
    per_second: f64,
    seed: u64,
}

fn args() -> anyhow::Result<Args> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize, default: &str| a.get(i).map_or(default, String::as_str).to_owned();
    let deals: usize = num(0, "1000")
        .parse()
        .context("DEALS must be a whole number")?;
    let per_second: f64 = num(1, "10")
        .parse()
        .context("PER_SECOND must be a number")?;
    let seed: u64 = num(2, "5").parse().context("SEED must be a whole number")?;
    ensure!(deals >= 10, "DEALS must be at least 10");
    ensure!(
        per_second.is_finite() && per_second >= 0.0,
        "PER_SECOND must be 0 or more"
    );
    Ok(Args {
        deals,
        per_second,
        seed,
    })
}

/// One pushed batch: what the bridge said and what the simulator saw.
struct Phase {
    name: String,
    records: usize,
    report: PushReport,
    bridge_calls: u64,
    counters: Counters,
    elapsed: Duration,
}

impl Phase {
    fn per_record(&self, n: u64) -> f64 {
        n as f64 / self.records as f64
    }
}

/// Pushes what is pending and measures it; the simulator's counters start from zero.
async fn push(w: &World<ZendeskHttp>, name: &str, records: usize) -> anyhow::Result<Phase> {
    w.sim.reset_counters();
    let calls = w.bridge.crm().calls();
    let start = Instant::now();
    let report = w.bridge.push().await?;
    let elapsed = start.elapsed();
    let phase = Phase {
        name: name.to_owned(),
        records,
        bridge_calls: w.bridge.crm().calls() - calls,
        counters: w.sim.counters(),
        elapsed,
        report,
    };
    let r = &phase.report;
    if r.pushed.len() != records
        || !r.refused.is_empty()
        || !r.gave_up.is_empty()
        || !r.gone.is_empty()
        || !r.waiting.is_empty()
    {
        bail!(
            "{name}: expected {records} pushed and nothing else; pushed {}, refused {:?}, gave up {:?}, gone {:?}, waiting {:?}, moved {:?}",
            r.pushed.len(),
            r.refused,
            r.gave_up,
            r.gone,
            r.waiting,
            r.moved
        );
    }
    Ok(phase)
}

/// 1 to 3 edits of distinct fields of a deal, numbered `i`; each differs from the deal as made
/// (value 1,000.00, cold, no likelihood, tagged `bench`).
fn deal_edits(rng: &mut StdRng, i: usize) -> Vec<Edit> {
    let mut kinds = [0u8, 1, 2, 3, 4];
    kinds.shuffle(rng);
    let n = rng.random_range(1..=3);
    kinds[..n]
        .iter()
        .map(|k| match k {
            0 => Edit::Set(key("name"), Value::Text(format!("Bench deal {i} (edited)"))),
            1 => Edit::Set(
                key("value"),
                Value::Money(Money::from_cents(rng.random_range(1_001..10_000) * 100)),
            ),
            // The bench deals are made cold: every edit differs from what Zendesk holds.
            2 => Edit::Set(key("hot"), Value::Bool(true)),
            3 => Edit::Set(
                key("customized_win_likelihood"),
                Value::Int(rng.random_range(0..=100)),
            ),
            _ => Edit::AddTag(format!("bench-{}", i % 7)),
        })
        .collect()
}

fn route_table(phases: &[Phase]) -> String {
    let mut routes: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for (i, p) in phases.iter().enumerate() {
        for (route, c) in &p.counters.routes {
            routes.entry(route).or_insert_with(|| vec![0; phases.len()])[i] += c.requests;
        }
    }
    let mut out = String::from("| route |");
    for p in phases {
        out.push_str(&format!(" {} |", p.name));
    }
    out.push_str("\n|---|");
    out.push_str(&"---|".repeat(phases.len()));
    out.push('\n');
    for (route, counts) in routes {
        out.push_str(&format!("| `{route}` |"));
        for c in counts {
            out.push_str(&format!(" {c} |"));
        }
        out.push('\n');
    }
    out
}

/// Requests of a route (`METHOD /v2/...`) in a phase.
fn count(p: &Phase, route: &str) -> u64 {
    p.counters.routes.get(route).map_or(0, |c| c.requests)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    let mut rng = StdRng::seed_from_u64(args.seed);
    let sim = support::sim(ZENDESK_PER_HOUR);
    let w = support::world(sim.clone(), args.per_second).await?;
    let web = w.web();

    // Setup: the bench deals in Zendesk, made over HTTP like the web app would.
    let t = Instant::now();
    let mut bench = Vec::with_capacity(args.deals);
    for i in 0..args.deals {
        let id = web
            .create_deal(json!({
                "name": format!("Bench deal {i}"),
                "value": "1000.00",
                "currency": "EUR",
                "hot": false,
                "tags": ["bench"],
            }))
            .await?;
        bench.push(id);
    }
    // The setup requests do not count against the bridge's budget.
    sim.set_config(sim.config());
    eprintln!(
        "made {} deals in the simulator in {:.1?}",
        args.deals,
        t.elapsed()
    );

    let t = Instant::now();
    sim.reset_counters();
    let import = w.bridge.import(&|_| {}).await?;
    eprintln!(
        "import: {} records, {} activities, {} requests in {:.1?}",
        import.records,
        import.activities,
        import.requests,
        t.elapsed()
    );
    let nothing = w.bridge.push().await?;
    ensure!(
        nothing.pushed.is_empty(),
        "a push right after the import sent {:?}",
        nothing.pushed
    );

    // (1) Every bench deal edited on the hub on 1-3 fields.
    let t = Instant::now();
    let mut fields = 0usize;
    for (i, crm_id) in bench.iter().enumerate() {
        let edits = deal_edits(&mut rng, i);
        fields += edits.len();
        w.edit(&deal_id(*crm_id)?, &edits)?;
    }
    eprintln!(
        "edited {} deals ({fields} fields) on the hub in {:.1?}",
        bench.len(),
        t.elapsed()
    );
    let updates = push(&w, "updates", bench.len()).await?;

    // (2) Deals made on the hub: one create each.
    let creates_n = args.deals / 10;
    let stage = w
        .on_node(|n| n.replica_ref().catalog().stages.keys().next().copied())?
        .context("the catalog has no stage")?;
    for i in 0..creates_n {
        let id: RecordId = format!("deal-bench-new-{i}").parse()?;
        w.on_node(|n| {
            n.create(
                RecordKind::Deal,
                &id,
                vec![
                    (key("name"), Value::Text(format!("Made on the hub {i}"))),
                    (key("value"), Value::Money(Money::from_cents(250_000))),
                    (key("currency"), Value::Text("EUR".into())),
                    (key("stage_id"), Value::Ref(stage)),
                ],
                now(),
            )
        })??;
    }
    let creates = push(&w, "creates", creates_n).await?;

    // (3) Notes added on the hub to deals that are otherwise unchanged.
    let notes_n = args.deals / 10;
    for (i, crm_id) in bench.iter().take(notes_n).enumerate() {
        w.edit(
            &deal_id(*crm_id)?,
            &[Edit::AddNote {
                id: format!("n-bench-{i}").parse()?,
                content: format!("Bench note {i}"),
            }],
        )?;
    }
    let notes = push(&w, "notes", notes_n).await?;

    // Check: Zendesk holds what the hub holds for a sample of the bench deals.
    for crm_id in bench.iter().step_by((bench.len() / 20).max(1)) {
        let deal = web.deal(*crm_id).await?;
        let p = w
            .on_node(|n| n.project(&deal_id(*crm_id)?).map_err(anyhow::Error::from))??
            .context("a bench deal is missing on the hub")?;
        ensure!(
            p.record.fields.get(&key("name"))
                == deal["name"]
                    .as_str()
                    .map(|s| Value::Text(s.into()))
                    .as_ref(),
            "deal {crm_id}: Zendesk's name {} differs from the hub's",
            deal["name"]
        );
    }
    // And exactly one Zendesk note per note made on the hub.
    let mut made = 0;
    for page in 1..1000 {
        let j = web
            .api(
                reqwest::Method::GET,
                &format!("/v2/notes?page={page}&per_page=100"),
                None,
            )
            .await?;
        let items = j["items"].as_array().cloned().unwrap_or_default();
        made += items
            .iter()
            .filter(|n| {
                n["data"]["content"]
                    .as_str()
                    .is_some_and(|c| c.starts_with("Bench note "))
            })
            .count();
        if items.len() < 100 {
            break;
        }
    }
    ensure!(
        made == notes_n,
        "{made} bench notes in Zendesk, {notes_n} made"
    );
    ensure!(
        w.bridge.push().await?.pushed.is_empty(),
        "a second push sent something"
    );

    let phases = [updates, creates, notes];
    println!(
        "push_bench: {} changed deals ({fields} fields), bridge paced at {} req/s, simulator limit {ZENDESK_PER_HOUR}/h per token, seed {}",
        args.deals, args.per_second, args.seed
    );
    println!();
    println!("Requests by route (simulator counters, per push):");
    println!();
    print!("{}", route_table(&phases));
    println!();
    println!(
        "| push | records | requests (bridge) | requests (simulator) | calls per record | re-reads (GET before PUT) | writes per record | time | rate-limit floor | time / floor |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for p in &phases {
        let rereads = count(p, "GET /v2/deals/{id}");
        let writes = count(p, "PUT /v2/deals/{id}")
            + count(p, "POST /v2/deals")
            + count(p, "POST /v2/notes");
        let floor = (args.per_second > 0.0)
            .then(|| Duration::from_secs_f64(p.bridge_calls as f64 / args.per_second));
        println!(
            "| {} | {} | {} | {} | {:.3} | {} | {:.3} | {:.2} s | {} | {} |",
            p.name,
            p.records,
            p.bridge_calls,
            p.counters.total,
            p.per_record(p.counters.total),
            rereads,
            p.per_record(writes),
            p.elapsed.as_secs_f64(),
            floor.map_or("-".into(), |f| format!("{:.2} s", f.as_secs_f64())),
            floor.map_or("-".into(), |f| format!(
                "{:.3}x",
                p.elapsed.as_secs_f64() / f.as_secs_f64()
            )),
        );
        ensure!(
            p.report.requests == p.bridge_calls && p.bridge_calls == p.counters.total,
            "{}: the bridge counted {} requests, its report {}, the simulator {}",
            p.name,
            p.bridge_calls,
            p.report.requests,
            p.counters.total
        );
    }
    let u = &phases[0];
    if args.per_second > 0.0 {
        let minimal = Duration::from_secs_f64(u.records as f64 / args.per_second);
        println!();
        println!(
            "Against one PUT per deal (no re-read; {} requests, {:.2} s at {} req/s): {:.3}x",
            u.records,
            minimal.as_secs_f64(),
            args.per_second,
            u.elapsed.as_secs_f64() / minimal.as_secs_f64()
        );
    }
    Ok(())
}
