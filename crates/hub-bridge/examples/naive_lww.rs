//! Concurrent online edits against a rep's offline edits: how many online edits the naive
//! approach (GET the record, PUT it whole with the rep's changes applied, last write wins) loses,
//! and how many sellsync (pull, then push) loses.
//!
//! ```text
//! cargo run -p sellsync-hub-bridge --example naive_lww -- [SEED] [COLLEAGUES] [DEALS]
//! ```
//!
//! Each run starts from the demo account (50 deals). A rep edits 1 or 2 of the fields `name`,
//! `value`, `customized_win_likelihood` of DEALS deals (default 40) while offline. COLLEAGUES
//! (default 3) colleagues edit fields of the same deals in Zendesk over HTTP, as the web app
//! does (a partial update of the changed field): about a third of the edits hit a field the rep
//! also changed, the rest other fields; no two online edits touch the same field of the same
//! deal. The online edits come in three moments:
//!
//! - `before`: while the rep is offline, before the rep's changes go out;
//! - `during`: while the rep's changes go out, just before the record is read for them (for the
//!   naive approach, before its GET; for sellsync, after its pull and before the push's re-read);
//! - `race`: between that read and the write (for the naive approach between its GET and PUT;
//!   for sellsync between the push's re-read and its PUT).
//!
//! An online edit is lost when its value is no longer in Zendesk at the end and sellsync holds
//! no conflict candidate and no audit entry with it (the naive approach records nothing).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, ensure};
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use sellsync_bridge::{CrmError, CrmRequest, CrmResponse, Resource};
use sellsync_hub_bridge::{Bridge, Crm, ZendeskHttp};
use sellsync_model::{Conflict, Edit, FieldKey, Money, Value};
use sellsync_sim::token_for;
use serde_json::{Map, Value as Json, json};
use support::{ADMIN, WebApp, World, deal_id, key};

/// The fields in play.
const FIELDS: [&str; 3] = ["name", "value", "customized_win_likelihood"];

/// The attributes a whole-record PUT carries (every writable deal attribute Sell returns).
const WRITABLE: [&str; 14] = [
    "name",
    "value",
    "currency",
    "hot",
    "stage_id",
    "owner_id",
    "source_id",
    "loss_reason_id",
    "unqualified_reason_id",
    "contact_id",
    "estimated_close_date",
    "customized_win_likelihood",
    "tags",
    "custom_fields",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Moment {
    Before,
    During,
    Race,
}

impl Moment {
    fn name(self) -> &'static str {
        match self {
            Moment::Before => "before",
            Moment::During => "during",
            Moment::Race => "race",
        }
    }
}

/// One online edit of one field of one deal.
#[derive(Debug, Clone)]
struct Online {
    colleague: usize,
    crm_id: u64,
    field: &'static str,
    value: Json,
    same_field: bool,
    moment: Moment,
}

/// The seeded scenario: the rep's offline edits and the colleagues' online edits.
#[derive(Debug, Clone)]
struct Scenario {
    rep: BTreeMap<u64, Vec<(&'static str, Json)>>,
    online: Vec<Online>,
}

/// A field's value as Zendesk takes it in a body.
fn wire(field: &str, n: u64, who: &str) -> Json {
    match field {
        "name" => json!(format!("{who} name {n}")),
        "value" => json!(format!("{}.00", 10_000 + n)),
        _ => json!(n % 100),
    }
}

/// A Zendesk value in the model's terms (for the hub's edits and for finding it in conflicts
/// and the audit trail).
fn model(field: &str, v: &Json) -> anyhow::Result<Value> {
    Ok(match field {
        "name" => Value::Text(v.as_str().context("a name")?.to_owned()),
        "value" => {
            let s = v.as_str().context("a value")?;
            let whole: i64 = s.trim_end_matches(".00").parse()?;
            Value::Money(Money::from_cents(whole * 100))
        }
        _ => Value::Int(v.as_i64().context("an integer")?),
    })
}

/// Whether Zendesk's `got` is the value `sent` (numbers compared by value).
fn same(field: &str, got: &Json, sent: &Json) -> bool {
    match field {
        "value" => {
            let num = |j: &Json| {
                j.as_f64()
                    .or_else(|| j.as_str().and_then(|s| s.parse::<f64>().ok()))
            };
            num(got).is_some() && num(got) == num(sent)
        }
        _ => got == sent,
    }
}

fn scenario(seed: u64, colleagues: usize, deals: &[u64]) -> Scenario {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut rep = BTreeMap::new();
    let mut online = Vec::new();
    // Rep values: likelihoods 1-49; colleagues' 51-99, so they never coincide.
    for (i, &crm_id) in deals.iter().enumerate() {
        let mut fields = FIELDS.to_vec();
        fields.shuffle(&mut rng);
        let n = rng.random_range(1..=2);
        let mine: Vec<(&'static str, Json)> = fields[..n]
            .iter()
            .map(|f| {
                let v = match *f {
                    "customized_win_likelihood" => json!(rng.random_range(1..50)),
                    f => wire(f, (i * 100) as u64, "Rep's"),
                };
                (*f, v)
            })
            .collect();
        let rep_fields: Vec<&'static str> = mine.iter().map(|(f, _)| *f).collect();
        let others: Vec<&'static str> = FIELDS
            .iter()
            .copied()
            .filter(|f| !rep_fields.contains(f))
            .collect();
        let mut taken = BTreeSet::new();
        for c in 0..colleagues {
            let pool = if rng.random_bool(1.0 / 3.0) {
                &rep_fields
            } else {
                &others
            };
            let free: Vec<&'static str> = pool
                .iter()
                .copied()
                .filter(|f| !taken.contains(f))
                .collect();
            let Some(&field) = free.choose(&mut rng) else {
                continue;
            };
            taken.insert(field);
            let value = match field {
                "customized_win_likelihood" => json!(rng.random_range(51..100)),
                f => wire(f, (i * 100 + c + 1) as u64, &format!("Colleague {c}'s")),
            };
            let moment = match rng.random_range(0..4) {
                0 | 1 => Moment::Before,
                2 => Moment::During,
                _ => Moment::Race,
            };
            online.push(Online {
                colleague: c,
                crm_id,
                field,
                value,
                same_field: rep_fields.contains(&field),
                moment,
            });
        }
        rep.insert(crm_id, mine);
    }
    Scenario { rep, online }
}

/// A colleague's save in the web app: a partial update of the one field.
async fn colleague_saves(url: &str, e: &Online) -> anyhow::Result<()> {
    let web = WebApp::new(url, ADMIN);
    let mut body = Map::new();
    body.insert(e.field.to_owned(), e.value.clone());
    web.update_deal(e.crm_id, Json::Object(body))
        .await
        .with_context(|| format!("colleague {}'s edit", e.colleague))?;
    Ok(())
}

/// Online edits still to happen, keyed by deal: those of `during` go before the record's next
/// read, those of `race` before its next write.
#[derive(Debug, Default)]
struct Pending {
    before_read: BTreeMap<u64, Vec<Online>>,
    before_write: BTreeMap<u64, Vec<Online>>,
}

impl Pending {
    fn of(online: &[Online]) -> Pending {
        let mut p = Pending::default();
        for e in online {
            let slot = match e.moment {
                Moment::Before => continue,
                Moment::During => &mut p.before_read,
                Moment::Race => &mut p.before_write,
            };
            slot.entry(e.crm_id).or_default().push(e.clone());
        }
        p
    }

    fn take(&mut self, write: bool, crm_id: u64) -> Vec<Online> {
        let slot = if write {
            &mut self.before_write
        } else {
            &mut self.before_read
        };
        slot.remove(&crm_id).unwrap_or_default()
    }
}

/// The bridge's CRM with colleagues' edits landing at the moments the scenario says.
#[derive(Debug)]
struct WithColleagues {
    inner: ZendeskHttp,
    url: String,
    pending: Arc<Mutex<Pending>>,
}

impl Crm for WithColleagues {
    async fn call(&self, req: &CrmRequest) -> Result<CrmResponse, CrmError> {
        let due = match req {
            CrmRequest::Get {
                resource: Resource::Deal,
                id,
            } => Some((false, *id)),
            CrmRequest::Update {
                resource: Resource::Deal,
                id,
                ..
            } => Some((true, *id)),
            _ => None,
        };
        if let Some((write, id)) = due {
            let edits = self
                .pending
                .lock()
                .map(|mut p| p.take(write, id))
                .unwrap_or_default();
            for e in &edits {
                colleague_saves(&self.url, e)
                    .await
                    .map_err(|err| CrmError::Transport(format!("scenario: {err:#}")))?;
            }
        }
        self.inner.call(req).await
    }

    fn calls(&self) -> u64 {
        self.inner.calls()
    }
}

/// The naive approach: per deal, GET it, apply the rep's changes, PUT it whole.
async fn naive(s: &Scenario) -> anyhow::Result<Vec<Json>> {
    let sim = support::sim(0);
    let (url, _stop) = support::serve(&sim).await?;
    let web = WebApp::new(&url, ADMIN);
    for e in s.online.iter().filter(|e| e.moment == Moment::Before) {
        colleague_saves(&url, e).await?;
    }
    let mut pending = Pending::of(&s.online);
    for (&crm_id, mine) in &s.rep {
        for e in pending.take(false, crm_id) {
            colleague_saves(&url, &e).await?;
        }
        let deal = web.deal(crm_id).await?;
        let mut body = Map::new();
        for k in WRITABLE {
            // Empty attributes go as null: the whole record, as the client last read it.
            body.insert(k.to_owned(), deal.get(k).cloned().unwrap_or(Json::Null));
        }
        for (f, v) in mine {
            body.insert((*f).to_owned(), v.clone());
        }
        for e in pending.take(true, crm_id) {
            colleague_saves(&url, &e).await?;
        }
        web.update_deal(crm_id, Json::Object(body)).await?;
    }
    final_state(&web, s).await
}

/// Zendesk's final deals, in the order of the online edits.
async fn final_state(web: &WebApp, s: &Scenario) -> anyhow::Result<Vec<Json>> {
    let mut out = Vec::with_capacity(s.online.len());
    for e in &s.online {
        out.push(web.deal(e.crm_id).await?);
    }
    Ok(out)
}

/// Whether sellsync's hub records `v` for `field` of the deal: a conflict candidate or an audit
/// entry's candidate.
fn recorded(
    w: &World<WithColleagues>,
    crm_id: u64,
    field: &FieldKey,
    v: &Value,
) -> anyhow::Result<bool> {
    let p = w
        .on_node(|n| n.project(&deal_id(crm_id)?).map_err(anyhow::Error::from))??
        .context("a deal is missing on the hub")?;
    let in_conflict = p.conflicts.iter().any(|c| match c {
        Conflict::Field {
            slot, candidates, ..
        } => &slot.field == field && candidates.iter().any(|c| &c.value == v),
        _ => false,
    });
    let audited = p.audit.iter().any(|a| {
        a.slot.as_ref().is_some_and(|s| &s.field == field)
            && a.candidates.iter().any(|c| &c.value == v)
    });
    Ok(in_conflict || audited)
}

/// sellsync: import, the rep's edits reach the hub, the colleagues edit, then pull and push.
async fn sellsync(s: &Scenario) -> anyhow::Result<(Vec<Json>, Vec<bool>, Counts)> {
    let sim = support::sim(0);
    let (url, stop) = support::serve(&sim).await?;
    let dir = tempfile::tempdir()?;
    let node = support::hub_node(dir.path())?;
    let pending = Arc::new(Mutex::new(Pending::default()));
    let crm = WithColleagues {
        inner: ZendeskHttp::new(&url, &token_for(ADMIN), 0.0, Duration::from_secs(30))?,
        url: url.clone(),
        pending: pending.clone(),
    };
    let bridge = Bridge::new(crm, node.clone(), support::config(&url));
    let w = World::assemble(sim, url.clone(), node, bridge, dir, stop);
    w.bridge.import(&|_| {}).await?;
    w.bridge.pull().await?;
    // The rep's offline edits reach the hub (the device synced them on reconnecting).
    for (&crm_id, mine) in &s.rep {
        let edits = mine
            .iter()
            .map(|(f, v)| Ok(Edit::Set(key(f), model(f, v)?)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        w.edit(&deal_id(crm_id)?, &edits)?;
    }
    for e in s.online.iter().filter(|e| e.moment == Moment::Before) {
        colleague_saves(&url, e).await?;
    }
    // The bridge's cycle: pull, then push; `during` edits land after the pull.
    w.bridge.pull().await?;
    *pending.lock().map_err(|_| anyhow::anyhow!("poisoned"))? = Pending::of(&s.online);
    let mut counts = Counts::default();
    let r = w.bridge.push().await?;
    counts.moved += r.moved.len();
    counts.pushed += r.pushed.len();
    // Online edits of deals the push had nothing to send for (the rep's only change lost to or
    // is in conflict with an earlier online edit) land now, still during the sync.
    let left = std::mem::take(&mut *pending.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    for e in left
        .before_read
        .values()
        .chain(left.before_write.values())
        .flatten()
    {
        counts.unmet += 1;
        colleague_saves(&url, e).await?;
    }
    // The next cycle, as the bridge's loop runs it.
    w.bridge.pull().await?;
    let r = w.bridge.push().await?;
    counts.pushed += r.pushed.len();
    counts.moved += r.moved.len();
    let web = w.web();
    let finals = final_state(&web, s).await?;
    let mut rec = Vec::with_capacity(s.online.len());
    for e in &s.online {
        rec.push(recorded(
            &w,
            e.crm_id,
            &key(e.field),
            &model(e.field, &e.value)?,
        )?);
    }
    for &crm_id in s.rep.keys() {
        let p = w
            .on_node(|n| n.project(&deal_id(crm_id)?).map_err(anyhow::Error::from))??
            .context("a deal is missing on the hub")?;
        counts.conflicts += p.conflicts.len();
    }
    Ok((finals, rec, counts))
}

#[derive(Debug, Default)]
struct Counts {
    /// `during` and `race` edits of deals the first push sent nothing for.
    unmet: usize,
    pushed: usize,
    moved: usize,
    conflicts: usize,
}

/// Losses by (moment, same field as the rep).
type Tally = BTreeMap<(Moment, bool), (usize, usize)>;

fn tally(s: &Scenario, finals: &[Json], recorded: Option<&[bool]>) -> Tally {
    let mut t = Tally::new();
    for (i, e) in s.online.iter().enumerate() {
        let kept = same(e.field, &finals[i][e.field], &e.value);
        let rec = recorded.is_some_and(|r| r[i]);
        let entry = t.entry((e.moment, e.same_field)).or_default();
        entry.0 += 1;
        if !kept && !rec {
            entry.1 += 1;
        }
    }
    t
}

fn args() -> anyhow::Result<(u64, usize, usize)> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let get = |i: usize, d: &str| a.get(i).map_or(d, String::as_str).to_owned();
    let seed = get(0, "5").parse().context("SEED must be a whole number")?;
    let colleagues = get(1, "3")
        .parse()
        .context("COLLEAGUES must be a whole number")?;
    let deals: usize = get(2, "40")
        .parse()
        .context("DEALS must be a whole number")?;
    ensure!(
        (1..=50).contains(&deals),
        "DEALS must be 1 to 50 (the demo account's deals)"
    );
    ensure!(colleagues >= 1, "COLLEAGUES must be at least 1");
    Ok((seed, colleagues, deals))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (seed, colleagues, n) = args()?;
    let mut deals: Vec<u64> = sellsync_sim::demo_data()
        .rows(sellsync_sim::Kind::Deal)
        .filter_map(|r| r.data.get("id").and_then(Json::as_u64))
        .collect();
    deals.sort_unstable();
    deals.truncate(n);
    let s = scenario(seed, colleagues, &deals);

    let naive_finals = naive(&s).await?;
    let (finals, rec, counts) = sellsync(&s).await?;
    let t_naive = tally(&s, &naive_finals, None);
    let t_ours = tally(&s, &finals, Some(&rec));

    let rep_fields: usize = s.rep.values().map(Vec::len).sum();
    println!(
        "naive_lww: seed {seed}, {n} deals, {rep_fields} offline field edits by the rep, {colleagues} colleagues, {} online edits",
        s.online.len()
    );
    println!();
    println!(
        "| online edits | count | lost, naive (GET, PUT whole, LWW) | lost, sellsync (pull, push) |"
    );
    println!("|---|---|---|---|");
    let mut total = (0, 0, 0);
    for (k, (count, lost_naive)) in &t_naive {
        let lost_ours = t_ours.get(k).map_or(0, |x| x.1);
        total.0 += count;
        total.1 += lost_naive;
        total.2 += lost_ours;
        println!(
            "| {}, {} field | {count} | {lost_naive} | {lost_ours} |",
            k.0.name(),
            if k.1 { "same" } else { "other" }
        );
    }
    println!("| **all** | {} | {} | {} |", total.0, total.1, total.2);
    println!();
    println!(
        "sellsync: {} records pushed, {} re-reads found the record moved, {} open conflicts left for a person; {} `during`/`race` edits were of deals the push had nothing to send for, and landed after it",
        counts.pushed, counts.moved, counts.conflicts, counts.unmet
    );
    Ok(())
}
