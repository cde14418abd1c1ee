//! `sellsync demo --core`: the conflict story of the core alone, told in one process.
//!
//! Two replicas of one deal: Rita's phone, offline, and the online side where Carl works. Both
//! edit; they merge; the projection shows what merged by itself, what resolved by tier (with a
//! notification), and what is an open conflict; Rita resolves; the audit trail shows every
//! decision.

use std::fmt::Write as _;

use anyhow::{Context, Result};

use crate::demo::{Names, audit_line, clock};
use sellsync_model::{
    ActivityKind, AssumeLive, Author, Catalog, Choice, Conflict, Edit, EditCtx, FieldKey, Money,
    Policy, ProjectCtx, Projection, RecordDoc, RecordKind, RegisterLayout, UserId, Value,
};

const T0: i64 = 1_795_000_000_000; // a Monday morning in 2026

fn key(s: &str) -> FieldKey {
    FieldKey::Std(s.to_owned())
}

fn money(cents: i64) -> Value {
    Value::Money(Money::from_cents(cents))
}

struct Story {
    catalog: Catalog,
    policy: Policy,
    out: String,
}

impl Story {
    fn ctx<'a>(&'a self, author: &'a Author, at: i64) -> EditCtx<'a> {
        EditCtx {
            author,
            now_ms: at,
            catalog: &self.catalog,
            policy: &self.policy,
        }
    }

    fn project(&self, doc: &RecordDoc) -> Projection {
        doc.project(&ProjectCtx {
            catalog: &self.catalog,
            policy: &self.policy,
            directory: &AssumeLive,
        })
    }

    fn user(&self, id: UserId) -> String {
        Names(&self.catalog).user(id)
    }

    fn show(&self, field: &FieldKey, v: &Value) -> String {
        Names(&self.catalog).show(field, v)
    }

    fn say(&mut self, line: impl AsRef<str>) {
        self.out.push_str(line.as_ref());
        self.out.push('\n');
    }
}

/// Runs the story and returns what it printed.
pub(crate) fn run() -> Result<String> {
    let mut s = Story {
        catalog: Catalog::example(),
        policy: Policy::default(),
        out: String::new(),
    };
    let hub = Author {
        user: UserId(1),
        device: "hub".parse()?,
    };
    let rita = Author {
        user: UserId(2),
        device: "rita-phone".parse()?,
    };
    let carl = Author {
        user: UserId(3),
        device: "carl-web".parse()?,
    };

    s.say("sellsync demo: an offline rep and an online colleague edit the same deal.");
    s.say("(In-process: two replicas of one record document. Replication and the Zendesk bridge");
    s.say(" are separate components; this shows the core: merge, tiers, conflicts, resolution.)");
    s.say("");
    let deal = RecordDoc::create(
        RecordKind::Deal,
        "deal-acme".parse()?,
        RegisterLayout::Packed,
        &s.ctx(&hub, T0),
        vec![
            (key("name"), Value::Text("Acme renewal".into())),
            (key("value"), money(100_000)),
            (key("currency"), Value::Text("EUR".into())),
            (key("stage_id"), Value::Ref(12)),
            (key("owner_id"), Value::Ref(2)),
            (
                key("estimated_close_date"),
                Value::Date("2027-01-31".parse()?),
            ),
        ],
    )
    .context("creating the deal")?;
    s.say("1. The hub has deal \"Acme renewal\": 1000.00 EUR, stage Qualified, owner Rita Rep,");
    s.say("   closing 2027-01-31. Rita's phone and Carl's browser both hold it.");
    let mut phone = deal.fork(&rita.device);
    let mut web = deal.fork(&carl.device);

    s.say(
        "2. Rita goes offline at a trade fair. She sets the value to 1500.00, moves the close date",
    );
    s.say("   to 2027-02-15, tags the deal \"fair\", adds a note and a task.");
    phone
        .apply(
            &s.ctx(&rita, T0 + 2 * 60_000),
            "at the fair",
            &[
                Edit::Set(key("value"), money(150_000)),
                Edit::Set(
                    key("estimated_close_date"),
                    Value::Date("2027-02-15".parse()?),
                ),
                Edit::AddTag("fair".into()),
                Edit::AddNote {
                    id: "note-1".parse()?,
                    content: "Met Jo at the booth: wants 3 more seats.".into(),
                },
                Edit::AddActivity {
                    id: "task-1".parse()?,
                    kind: ActivityKind::Task,
                    fields: vec![(key("content"), Value::Text("Send revised quote".into()))],
                },
            ],
        )
        .context("Rita's offline edit")?;

    s.say(
        "3. Meanwhile Carl, online, moves the deal to Quote, sets the value to 1200.00, moves the",
    );
    s.say("   close date to 2027-03-01 and tags it \"q1\".");
    web.apply(
        &s.ctx(&carl, T0 + 5 * 60_000),
        "pricing call",
        &[
            Edit::Set(key("stage_id"), Value::Ref(13)),
            Edit::Set(key("value"), money(120_000)),
            Edit::Set(
                key("estimated_close_date"),
                Value::Date("2027-03-01".parse()?),
            ),
            Edit::AddTag("q1".into()),
        ],
    )
    .context("Carl's online edit")?;

    s.say("4. Rita reconnects; the replicas exchange changes.");
    phone.merge(&mut web)?;
    web.merge(&mut phone)?;
    let p = s.project(&phone);
    anyhow::ensure!(
        serde_json::to_string(&p)? == serde_json::to_string(&s.project(&web))?,
        "the replicas disagree after merging"
    );
    let tags: Vec<&str> = p.record.tags.iter().map(String::as_str).collect();
    s.say(format!(
        "   merged by themselves: tags {{{}}}",
        tags.join(", ")
    ));
    for a in &p.record.activities {
        let what = a
            .content
            .clone()
            .or_else(|| a.fields.get(&key("content")).map(ToString::to_string))
            .unwrap_or_default();
        s.say(format!(
            "                         {} by {}: {what}",
            a.kind,
            s.user(a.created_by)
        ));
    }
    if let Some(stage) = p.record.fields.get(&key("stage_id")) {
        s.say(format!(
            "   taken (only Carl changed it): stage {}",
            s.show(&key("stage_id"), stage)
        ));
    }
    for n in &p.notifications {
        s.say(format!(
            "   notify tier: {} resolved to {} ({}'s, later); {} is told that {} was not kept",
            n.slot,
            n.kept,
            s.user(n.kept_by),
            s.user(n.to),
            n.yours
        ));
    }
    let mut seen = Vec::new();
    for c in &p.conflicts {
        if let Conflict::Field {
            slot,
            tier,
            candidates,
        } = c
        {
            s.say(format!(
                "   CONFLICT on {slot} ({tier} tier): nothing is pushed until someone decides"
            ));
            for (i, cand) in candidates.iter().enumerate() {
                s.say(format!(
                    "     [{}] {:>10}  by {:<15} on {:<10} at {}",
                    i + 1,
                    s.show(&slot.field, &cand.value),
                    s.user(cand.by),
                    cand.device,
                    clock(cand.at)
                ));
            }
            seen = candidates.iter().map(|c| c.op.clone()).collect();
        }
    }
    let push = phone.push_view(&p);
    let mut held = String::new();
    for (field, why) in &push.held {
        let _ = write!(held, "{field} ({why}) ");
    }
    s.say(format!(
        "   push view: {} fields may go to Zendesk; held back: {}",
        push.fields.len(),
        held.trim_end()
    ));

    s.say("5. Rita looks at both values and types the price she agreed with Jo: 1350.00.");
    phone
        .resolve_field(
            &s.ctx(&rita, T0 + 30 * 60_000),
            &"value".parse().map_err(anyhow::Error::msg)?,
            &seen,
            Choice::Value(money(135_000)),
        )
        .context("resolving the value")?;
    phone.record_automatic_resolutions(&s.ctx(&rita, T0 + 30 * 60_000))?;
    web.merge(&mut phone)?;
    phone.merge(&mut web)?;
    let p = s.project(&web);
    anyhow::ensure!(
        p.conflicts.is_empty(),
        "conflicts remain: {:?}",
        p.conflicts
    );

    s.say("6. The record as Zendesk will receive it, and its audit trail:");
    for (field, value) in &p.record.fields {
        s.say(format!(
            "     {:<22} {}",
            field.to_string(),
            s.show(field, value)
        ));
    }
    s.say(format!("     {:<22} {}", "tags", tags.join(", ")));
    for e in &p.audit {
        let line = audit_line(e, &Names(&s.catalog));
        s.say(format!("     audit: {line}"));
    }
    s.say("");
    s.say("Nothing was lost: the note, task and tags merged by themselves, the close-date loser");
    s.say("was notified, and the value went nowhere until a person decided.");
    Ok(s.out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_demo_story_runs_and_resolves_everything() {
        let out = super::run().unwrap();
        assert!(out.contains("CONFLICT on value (manual tier)"), "{out}");
        assert!(out.contains("tags {fair, q1}"), "{out}");
        assert!(
            out.contains("audit: value [manual] chose 1350.00 by Rita Rep"),
            "{out}"
        );
        assert!(
            out.contains("notify tier: estimated_close_date resolved to 2027-03-01"),
            "{out}"
        );
        assert!(
            out.contains("taken (only Carl changed it): stage Quote"),
            "{out}"
        );
    }
}
