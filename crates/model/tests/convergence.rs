//! Properties over random edits on 2 to 5 replicas, random partitions and merge orders:
//! convergence, no lost update (scalar fields, tags, note text, activities, deletes), manual
//! fields never merged silently, a projection independent of merge order and replica.
//!
//! The oracles are models beside the documents, never the documents themselves: tags follow an
//! observed-remove set of add "dots" (each add that wrote something is a dot; a remove cancels
//! the dots its replica had seen), note text follows the set of uniquely-named characters each
//! splice inserted and the characters it deleted, and each replica's knowledge is the union of
//! what it made and what it merged.
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

/// What one replica knows of the tag, note and activity history (merged along with its
/// document).
#[derive(Debug, Clone, Default)]
struct Knowledge {
    /// Tag adds seen: (tag, dot).
    tag_adds: BTreeSet<(String, u32)>,
    /// Dots removed by a remove this replica has seen.
    tag_removed: BTreeSet<u32>,
    /// Characters inserted into notes: (note, character), each character unique in the run.
    inserted: BTreeSet<(ActivityId, char)>,
    /// Inserted characters some replica deleted.
    deleted: BTreeSet<(ActivityId, char)>,
}

impl Knowledge {
    fn absorb(&mut self, other: &Knowledge) {
        self.tag_adds.extend(other.tag_adds.iter().cloned());
        self.tag_removed.extend(other.tag_removed.iter().cloned());
        self.inserted.extend(other.inserted.iter().cloned());
        self.deleted.extend(other.deleted.iter().cloned());
    }

    /// The tags an observed-remove set holds with this knowledge.
    fn tags(&self) -> BTreeSet<String> {
        self.tag_adds
            .iter()
            .filter(|(_, dot)| !self.tag_removed.contains(dot))
            .map(|(tag, _)| tag.clone())
            .collect()
    }
}

/// The first private-use character: inserted characters are numbered from here, so each is
/// recognisable in any note's text.
const FIRST_UNIQUE: u32 = 0xE000;

fn is_unique(c: char) -> bool {
    u32::from(c) >= FIRST_UNIQUE
}

struct Run {
    w: World,
    docs: Vec<RecordDoc>,
    authors: Vec<Author>,
    skew: Vec<i64>,
    knows: Vec<Knowledge>,
    writes: BTreeSet<Write>,
    superseded: BTreeSet<Write>,
    /// Activities created, with their kind.
    activities: BTreeSet<(ActivityId, ActivityKind)>,
    /// Some delete of the record was written.
    deleted: bool,
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
        Run {
            w,
            docs,
            authors,
            skew: skew.to_vec(),
            knows: vec![Knowledge::default(); n],
            writes: BTreeSet::new(),
            superseded: BTreeSet::new(),
            activities: BTreeSet::new(),
            deleted: false,
            step: 0,
            next_id: 0,
        }
    }

    /// Replica `r`'s clock: one second a step, off by the replica's skew.
    fn now(&self, r: usize) -> i64 {
        T0 + self.step * 1000 + self.skew[r]
    }

    fn note_text(&self, r: usize, id: &ActivityId) -> String {
        self.w
            .project(&self.docs[r])
            .record
            .activities
            .iter()
            .find(|a| &a.id == id)
            .and_then(|a| a.content.clone())
            .unwrap_or_default()
    }

    fn candidates(&self, r: usize, slot: &Slot) -> Vec<Candidate> {
        self.docs[r].field_candidates(&self.w.catalog, &self.w.policy, slot)
    }

    fn apply(&mut self, op: &Op) {
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
                let now = self.now(r);
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
                    Edit::AddTag(name.clone())
                } else {
                    Edit::RemoveTag(name.clone())
                };
                let ctx = self.w.ctx(&self.authors[r], self.now(r));
                if let Ok(Some(_)) = self.docs[r].apply(&ctx, "tag", &[edit]) {
                    self.next_id += 1;
                    let dot = self.next_id;
                    let k = &mut self.knows[r];
                    if add {
                        k.tag_adds.insert((name, dot));
                    } else {
                        let seen: Vec<u32> = k
                            .tag_adds
                            .iter()
                            .filter(|(t, _)| *t == name)
                            .map(|(_, d)| *d)
                            .collect();
                        k.tag_removed.extend(seen);
                    }
                }
                let shown: BTreeSet<String> = self
                    .w
                    .project(&self.docs[r])
                    .record
                    .tags
                    .into_iter()
                    .collect();
                assert_eq!(shown, self.knows[r].tags(), "replica {r}'s tags");
            }
            Op::AddNote { r } => {
                let r = r % n;
                self.next_id += 1;
                let id: ActivityId = format!("n{}", self.next_id).parse().unwrap();
                let ctx = self.w.ctx(&self.authors[r], self.now(r));
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
                    self.activities.insert((id, ActivityKind::Note));
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
                let before: Vec<char> = self.note_text(r, &id).chars().collect();
                let len = before.len();
                let pos = usize::from(pos) % (len + 1);
                let del = usize::from(del).min(len - pos);
                // Each inserted character is unique in the run ('a'..'e' picks how many: 0-4).
                let count = u32::from(ch) - u32::from('a');
                let insert: String = (0..count)
                    .map(|_| {
                        self.next_id += 1;
                        char::from_u32(FIRST_UNIQUE + self.next_id).expect("private-use range")
                    })
                    .collect();
                let ctx = self.w.ctx(&self.authors[r], self.now(r));
                if let Ok(Some(_)) = self.docs[r].apply(
                    &ctx,
                    "splice",
                    &[Edit::SpliceNote {
                        id: id.clone(),
                        pos,
                        delete: del,
                        insert: insert.clone(),
                    }],
                ) {
                    let k = &mut self.knows[r];
                    for c in before[pos..pos + del].iter().filter(|c| is_unique(**c)) {
                        k.deleted.insert((id.clone(), *c));
                    }
                    k.inserted.extend(insert.chars().map(|c| (id.clone(), c)));
                }
            }
            Op::AddTask { r } => {
                let r = r % n;
                self.next_id += 1;
                let id: ActivityId = format!("t{}", self.next_id).parse().unwrap();
                let ctx = self.w.ctx(&self.authors[r], self.now(r));
                if let Ok(Some(_)) = self.docs[r].apply(
                    &ctx,
                    "task",
                    &[Edit::AddActivity {
                        id: id.clone(),
                        kind: ActivityKind::Task,
                        fields: vec![(key("content"), text("follow up"))],
                    }],
                ) {
                    self.activities.insert((id, ActivityKind::Task));
                }
            }
            Op::Delete { r } => {
                let r = r % n;
                let ctx = self.w.ctx(&self.authors[r], self.now(r));
                if let Ok(Some(_)) = self.docs[r].apply(&ctx, "delete", &[Edit::DeleteRecord]) {
                    self.deleted = true;
                }
            }
            Op::Resolve { r, pick } => {
                let r = r % n;
                let p = self.w.project(&self.docs[r]);
                let now = self.now(r);
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
                    let known = self.knows[from].clone();
                    self.knows[to].absorb(&known);
                }
            }
            Op::RecordAuto { r } => {
                let r = r % n;
                let now = self.now(r);
                let ctx = self.w.ctx(&self.authors[r], now);
                self.docs[r].record_automatic_resolutions(&ctx).unwrap();
            }
        }
    }

    fn merge_all(&mut self) {
        let n = self.docs.len();
        let mut all = Knowledge::default();
        for k in &self.knows {
            all.absorb(k);
        }
        self.knows = vec![all; n];
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
        merge_order in proptest::collection::vec(any::<u32>(), 5),
    ) {
        let layout = if object_layout { RegisterLayout::Object } else { RegisterLayout::Packed };
        let mut run = Run::new(n, layout, &skew);
        for op in &ops {
            run.apply(op);
            for r in 0..n {
                run.check_manual_never_merges(r);
            }
        }
        // The replicas as they diverged, before any final merge.
        let snapshots: Vec<RecordDoc> =
            run.docs.iter().map(|d| d.fork(&"snapshot".parse().unwrap())).collect();
        run.merge_all();
        let merged = json(&run.w.project(&run.docs[0]));

        // The projection depends only on the set of changes: the diverged snapshots merged in a
        // random order into a replica of another actor project the same.
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&r| (merge_order[r], r));
        let mut fresh = snapshots[order[0]].fork(&"fresh".parse().unwrap());
        for &r in &order[1..] {
            let mut other = snapshots[r].fork(&"tmp".parse().unwrap());
            fresh.merge(&mut other).unwrap();
        }
        prop_assert_eq!(&json(&run.w.project(&fresh)), &merged, "merge order {:?}", order);

        for r in 0..n {
            let now = run.now(r);
            let ctx = run.w.ctx(&run.authors[r], now);
            run.docs[r].record_automatic_resolutions(&ctx).unwrap();
        }
        run.merge_all();

        // Convergence: same heads, byte-identical projection (record, conflicts, audit).
        let first = json(&run.w.project(&run.docs[0]));
        for r in 1..n {
            let mut a = run.docs[r].heads();
            let mut b = run.docs[0].heads();
            a.sort();
            b.sort();
            prop_assert_eq!(a, b);
            prop_assert_eq!(&json(&run.w.project(&run.docs[r])), &first);
        }

        // No lost update of a field: every write is current, audited, or was overwritten by
        // someone who had seen it.
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

        // Tags: exactly the observed-remove set of every add and remove made.
        let known = &run.knows[0];
        let tags: BTreeSet<String> = p.record.tags.iter().cloned().collect();
        prop_assert_eq!(&tags, &known.tags(), "tags");

        // Note text: every inserted character that nobody deleted is there; no deleted one is.
        for (id, c) in &known.inserted {
            let text = run.note_text(0, id);
            let present = text.contains(*c);
            let deleted = known.deleted.contains(&(id.clone(), *c));
            prop_assert_eq!(present, !deleted, "note {} character U+{:04X}", id, u32::from(*c));
        }
        for id in known.inserted.iter().map(|(id, _)| id).collect::<BTreeSet<_>>() {
            let stray = run
                .note_text(0, id)
                .chars()
                .filter(|c| is_unique(*c) && !known.inserted.contains(&(id.clone(), *c)))
                .count();
            prop_assert_eq!(stray, 0, "note {} has characters nobody inserted there", id);
        }

        // Activities: every one created is there, of its kind.
        let held: BTreeSet<(ActivityId, ActivityKind)> =
            p.record.activities.iter().map(|a| (a.id.clone(), a.kind)).collect();
        for a in &run.activities {
            prop_assert!(held.contains(a), "lost activity {:?}", a);
        }

        // Deletes: a delete is never silently undone. The record stays deleted, or the delete is
        // an open record conflict, or a person restored it (audited).
        if run.deleted {
            let restored = p.audit.iter().any(|e| e.slot.is_none() && e.chosen == Chosen::Restore);
            let open = p.conflicts.iter().any(|c| matches!(c, Conflict::Record { .. }));
            prop_assert!(
                p.record.state != RecordState::Live || open || restored,
                "a delete vanished: state {:?}", p.record.state
            );
        }
        run.check_manual_never_merges(0);
    }
}
