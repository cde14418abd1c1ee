//! Properties over random edits on 2 to 5 replicas, random partitions and merge orders:
//! convergence, no lost update, manual fields never merged silently, deterministic LWW.
//!
//! `PROPTEST_CASES=10000 cargo test -p sellsync-model --release --test convergence` for a long run.

mod common;

use std::collections::BTreeSet;

use common::*;
use proptest::prelude::*;
use sellsync_model::*;

/// Register fields covering every tier: (field, tier).
const FIELDS: [&str; 7] = [
    "name",
    "value",
    "stage_id",
    "estimated_close_date",
    "source_id",
    "custom_fields.Region",
    "hot",
];

#[derive(Debug, Clone)]
enum Op {
    Set {
        r: usize,
        field: usize,
        val: u8,
    },
    Tag {
        r: usize,
        tag: u8,
        add: bool,
    },
    AddNote {
        r: usize,
    },
    Splice {
        r: usize,
        note: usize,
        pos: u8,
        del: u8,
        ch: char,
    },
    AddTask {
        r: usize,
    },
    Delete {
        r: usize,
    },
    Resolve {
        r: usize,
        pick: u8,
    },
    Merge {
        to: usize,
        from: usize,
    },
    RecordAuto {
        r: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let r = 0..5usize;
    prop_oneof![
        6 => (r.clone(), 0..FIELDS.len(), any::<u8>()).prop_map(|(r, field, val)| Op::Set { r, field, val }),
        2 => (r.clone(), 0..4u8, any::<bool>()).prop_map(|(r, tag, add)| Op::Tag { r, tag, add }),
        1 => r.clone().prop_map(|r| Op::AddNote { r }),
        2 => (r.clone(), 0..4usize, any::<u8>(), 0..3u8, proptest::char::range('a', 'e'))
            .prop_map(|(r, note, pos, del, ch)| Op::Splice { r, note, pos, del, ch }),
        1 => r.clone().prop_map(|r| Op::AddTask { r }),
        1 => r.clone().prop_map(|r| Op::Delete { r }),
        2 => (r.clone(), any::<u8>()).prop_map(|(r, pick)| Op::Resolve { r, pick }),
        5 => (r.clone(), r.clone()).prop_map(|(to, from)| Op::Merge { to, from }),
        1 => r.prop_map(|r| Op::RecordAuto { r }),
    ]
}

fn value_for(field: &str, val: u8) -> Value {
    match field {
        "name" => text(&format!("name-{val}")),
        "value" => Value::Money(Money::from_cents(i64::from(val) * 100)),
        "stage_id" => Value::Ref(11 + u64::from(val % 6)),
        "estimated_close_date" => Value::Date(
            chrono::NaiveDate::from_ymd_opt(2027, 1, 1).unwrap()
                + chrono::Days::new(u64::from(val)),
        ),
        "source_id" => Value::Ref(1 + u64::from(val % 2)),
        "custom_fields.Region" => text(["EMEA", "APAC", "Americas"][usize::from(val % 3)]),
        "hot" => Value::Bool(val.is_multiple_of(2)),
        other => unreachable!("{other}"),
    }
}

/// A write that must never vanish: it is current, a candidate, in the audit trail, or was
/// overwritten by someone who had seen it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Write {
    slot: String,
    op: String,
}

struct Run {
    w: World,
    docs: Vec<RecordDoc>,
    authors: Vec<Author>,
    notes: Vec<Vec<ActivityId>>,
    writes: BTreeSet<Write>,
    superseded: BTreeSet<Write>,
    step: i64,
    next_id: u32,
}

impl Run {
    fn new(n: usize, layout: RegisterLayout, skew: &[i64]) -> Run {
        let w = World::new();
        let authors: Vec<Author> = (0..n)
            .map(|i| match i {
                0 => Author {
                    user: UserId(1),
                    device: DeviceId::crm(),
                },
                _ => author(1 + i as u64 % 3, &format!("dev{i}")),
            })
            .collect();
        let base = w.deal("d1", &author(1, "hub"), layout);
        let docs = authors.iter().map(|a| base.fork(&a.device)).collect();
        let _ = skew;
        Run {
            w,
            docs,
            authors,
            notes: vec![Vec::new(); n],
            writes: BTreeSet::new(),
            superseded: BTreeSet::new(),
            step: 0,
            next_id: 0,
        }
    }

    fn now(&self, r: usize, skew: &[i64]) -> i64 {
        T0 + self.step * 1000 + skew[r]
    }

    fn candidates(&self, r: usize, slot: &Slot) -> Vec<Candidate> {
        self.docs[r].field_candidates(&self.w.catalog, &self.w.policy, slot)
    }

    fn apply(&mut self, op: &Op, skew: &[i64]) {
        self.step += 1;
        let n = self.docs.len();
        match *op {
            Op::Set { r, field, val } => {
                let r = r % n;
                let s = slot(FIELDS[field]);
                // What the writer saw as the field's value: only that counts as knowingly overwritten.
                // The losers of an automatic resolution were never shown, so they must be audited.
                let shown = self
                    .w
                    .project(&self.docs[r])
                    .record
                    .fields
                    .get(&s.field)
                    .cloned();
                let before: Vec<Candidate> = self
                    .candidates(r, &s)
                    .into_iter()
                    .filter(|c| Some(&c.value) == shown.as_ref())
                    .collect();
                let now = self.now(r, skew);
                let ctx = self.w.ctx(&self.authors[r], now);
                let edit = Edit::Set(s.field.clone(), value_for(FIELDS[field], val));
                if let Ok(Some(_)) = self.docs[r].apply(&ctx, "set", &[edit]) {
                    for c in before {
                        self.superseded.insert(Write {
                            slot: s.to_string(),
                            op: c.op,
                        });
                    }
                    let mine = self.candidates(r, &s);
                    assert_eq!(
                        mine.len(),
                        1,
                        "a write supersedes every candidate its writer saw"
                    );
                    self.writes.insert(Write {
                        slot: s.to_string(),
                        op: mine[0].op.clone(),
                    });
                }
            }
            Op::Tag { r, tag, add } => {
                let r = r % n;
                let name = format!("tag{tag}");
                let edit = if add {
                    Edit::AddTag(name)
                } else {
                    Edit::RemoveTag(name)
                };
                let ctx = self.w.ctx(&self.authors[r], self.now(r, skew));
                let _ = self.docs[r].apply(&ctx, "tag", &[edit]);
            }
            Op::AddNote { r } => {
                let r = r % n;
                self.next_id += 1;
                let id: ActivityId = format!("n{}", self.next_id).parse().unwrap();
                let ctx = self.w.ctx(&self.authors[r], self.now(r, skew));
                if self.docs[r]
                    .apply(
                        &ctx,
                        "note",
                        &[Edit::AddNote {
                            id: id.clone(),
                            content: "note".into(),
                        }],
                    )
                    .is_ok()
                {
                    self.notes[r].push(id);
                }
            }
            Op::Splice {
                r,
                note,
                pos,
                del,
                ch,
            } => {
                let r = r % n;
                let ids: Vec<ActivityId> = self
                    .w
                    .project(&self.docs[r])
                    .record
                    .activities
                    .iter()
                    .filter(|a| a.kind == ActivityKind::Note)
                    .map(|a| a.id.clone())
                    .collect();
                if ids.is_empty() {
                    return;
                }
                let id = ids[note % ids.len()].clone();
                let len = self
                    .w
                    .project(&self.docs[r])
                    .record
                    .activities
                    .iter()
                    .find(|a| a.id == id)
                    .and_then(|a| a.content.as_ref().map(|c| c.chars().count()))
                    .unwrap_or(0);
                let pos = usize::from(pos) % (len + 1);
                let del = usize::from(del).min(len - pos);
                let ctx = self.w.ctx(&self.authors[r], self.now(r, skew));
                let _ = self.docs[r].apply(
                    &ctx,
                    "splice",
                    &[Edit::SpliceNote {
                        id,
                        pos,
                        delete: del,
                        insert: ch.to_string(),
                    }],
                );
            }
            Op::AddTask { r } => {
                let r = r % n;
                self.next_id += 1;
                let id: ActivityId = format!("t{}", self.next_id).parse().unwrap();
                let ctx = self.w.ctx(&self.authors[r], self.now(r, skew));
                let _ = self.docs[r].apply(
                    &ctx,
                    "task",
                    &[Edit::AddActivity {
                        id,
                        kind: ActivityKind::Task,
                        fields: vec![(key("content"), text("follow up"))],
                    }],
                );
            }
            Op::Delete { r } => {
                let r = r % n;
                let ctx = self.w.ctx(&self.authors[r], self.now(r, skew));
                let _ = self.docs[r].apply(&ctx, "delete", &[Edit::DeleteRecord]);
            }
            Op::Resolve { r, pick } => {
                let r = r % n;
                let p = self.w.project(&self.docs[r]);
                let now = self.now(r, skew);
                for c in &p.conflicts {
                    match c {
                        Conflict::Field {
                            slot: s,
                            candidates,
                            ..
                        } => {
                            let seen: Vec<String> =
                                candidates.iter().map(|c| c.op.clone()).collect();
                            let choice = Choice::Pick(usize::from(pick) % candidates.len() + 1);
                            let ctx = self.w.ctx(&self.authors[r], now);
                            self.docs[r].resolve_field(&ctx, s, &seen, choice).unwrap();
                            let mine = self.candidates(r, s);
                            assert_eq!(mine.len(), 1);
                            self.writes.insert(Write {
                                slot: s.to_string(),
                                op: mine[0].op.clone(),
                            });
                            return;
                        }
                        Conflict::Record {
                            deleted_by,
                            restored_by,
                            ..
                        } => {
                            let seen: Vec<String> = deleted_by
                                .iter()
                                .chain(restored_by)
                                .map(|c| c.op.clone())
                                .collect();
                            let choice = if pick.is_multiple_of(2) {
                                RecordChoice::Restore
                            } else {
                                RecordChoice::ConfirmDelete
                            };
                            let ctx = self.w.ctx(&self.authors[r], now);
                            self.docs[r].resolve_record(&ctx, &seen, choice).unwrap();
                            return;
                        }
                        _ => {}
                    }
                }
            }
            Op::Merge { to, from } => {
                let (to, from) = (to % n, from % n);
                if to != from {
                    let mut other = self.docs[from].fork(&"tmp".parse().unwrap());
                    self.docs[to].merge(&mut other).unwrap();
                }
            }
            Op::RecordAuto { r } => {
                let r = r % n;
                let now = self.now(r, skew);
                let ctx = self.w.ctx(&self.authors[r], now);
                self.docs[r].record_automatic_resolutions(&ctx).unwrap();
            }
        }
    }

    fn merge_all(&mut self) {
        let n = self.docs.len();
        for i in 1..n {
            let (head, tail) = self.docs.split_at_mut(i);
            head[0].merge(&mut tail[0]).unwrap();
        }
        for i in 1..n {
            let (head, tail) = self.docs.split_at_mut(i);
            tail[0].merge(&mut head[0]).unwrap();
        }
    }

    /// Manual fields with concurrent different values are a conflict, and the push view
    /// leaves them out.
    fn check_manual_never_merges(&self, r: usize) {
        let p = self.w.project(&self.docs[r]);
        let push = self.docs[r].push_view(&p);
        for f in ["value", "stage_id"] {
            let values: BTreeSet<String> = self
                .candidates(r, &slot(f))
                .iter()
                .map(|c| c.value.to_string())
                .collect();
            if values.len() > 1 {
                assert!(
                    p.conflicts.iter().any(
                        |c| matches!(c, Conflict::Field { slot, .. } if slot.to_string() == f)
                    ),
                    "{f} merged silently"
                );
                assert!(
                    !push.fields.contains_key(&key(f)),
                    "{f} pushed while in conflict"
                );
            }
        }
    }
}

proptest! {
    #[test]
    fn replicas_converge_and_lose_nothing(
        n in 2..=5usize,
        object_layout in any::<bool>(),
        skew in proptest::collection::vec(-5_000i64..5_000, 5),
        ops in proptest::collection::vec(op(), 1..40),
    ) {
        let layout = if object_layout { RegisterLayout::Object } else { RegisterLayout::Packed };
        let mut run = Run::new(n, layout, &skew);
        for op in &ops {
            run.apply(op, &skew);
            for r in 0..n {
                run.check_manual_never_merges(r);
            }
        }
        run.merge_all();
        for r in 0..n {
            let now = run.now(r, &skew);
            let ctx = run.w.ctx(&run.authors[r], now);
            run.docs[r].record_automatic_resolutions(&ctx).unwrap();
        }
        run.merge_all();

        // Convergence: same heads, byte-identical projection (record, conflicts, audit).
        let first = json(&run.w.project(&run.docs[0]));
        for r in 1..n {
            prop_assert_eq!(run.docs[r].heads().len(), run.docs[0].heads().len());
            let mut a = run.docs[r].heads();
            let mut b = run.docs[0].heads();
            a.sort();
            b.sort();
            prop_assert_eq!(a, b);
            prop_assert_eq!(&json(&run.w.project(&run.docs[r])), &first);
        }
        // Deterministic whatever the merge order: merge in reverse into a fresh replica.
        let mut fresh = run.docs[n - 1].fork(&"fresh".parse().unwrap());
        for r in (0..n).rev() {
            let mut other = run.docs[r].fork(&"tmp".parse().unwrap());
            fresh.merge(&mut other).unwrap();
        }
        prop_assert_eq!(&json(&run.w.project(&fresh)), &first);

        // No lost update.
        let p = run.w.project(&run.docs[0]);
        let audited: BTreeSet<Write> = p.audit.iter()
            .flat_map(|e| e.candidates.iter().map(move |c| Write {
                slot: e.slot.as_ref().map(ToString::to_string).unwrap_or_default(),
                op: c.op.clone(),
            }))
            .collect();
        for w in &run.writes {
            let current: BTreeSet<String> = run.candidates(0, &slot(&w.slot)).into_iter().map(|c| c.op).collect();
            prop_assert!(
                current.contains(&w.op) || audited.contains(w) || run.superseded.contains(w),
                "lost write {:?}", w
            );
        }
        run.check_manual_never_merges(0);
    }
}
