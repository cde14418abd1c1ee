//! Each conflict kind and each resolution path, and the seed's story.

mod common;

use common::*;
use sellsync_model::*;

fn field_conflict<'a>(p: &'a Projection, name: &str) -> Option<&'a Vec<Candidate>> {
    p.conflicts.iter().find_map(|c| match c {
        Conflict::Field {
            slot, candidates, ..
        } if slot.to_string() == name => Some(candidates),
        _ => None,
    })
}

#[test]
fn the_offline_rep_and_the_online_colleague() {
    let w = World::new();
    let rita = author(2, "rita-phone");
    let carl = author(3, "carl-web");
    for layout in [RegisterLayout::Packed, RegisterLayout::Object] {
        let base = w.deal("d1", &author(1, "hub"), layout);
        let mut phone = base.fork(&rita.device);
        let mut web = base.fork(&carl.device);

        // Offline, the rep changes the value and adds a note.
        phone
            .apply(
                &w.ctx(&rita, T0 + 60_000),
                "value and note",
                &[
                    Edit::Set(key("value"), money("1500")),
                    Edit::AddNote {
                        id: "n1".parse().unwrap(),
                        content: "Met at the fair; wants 3 seats".into(),
                    },
                ],
            )
            .unwrap();
        // Online, a colleague changes the stage and the value.
        web.apply(
            &w.ctx(&carl, T0 + 120_000),
            "stage and value",
            &[
                Edit::Set(key("stage_id"), Value::Ref(13)),
                Edit::Set(key("value"), money("1200")),
            ],
        )
        .unwrap();

        sync(&mut phone, &mut web);
        let p = w.project(&phone);
        assert_eq!(json(&p), json(&w.project(&web)), "replicas agree");
        // The note is kept, the stage is taken (one writer), the value is a conflict.
        let note = &p.record.activities[0];
        assert_eq!(
            note.content.as_deref(),
            Some("Met at the fair; wants 3 seats")
        );
        assert_eq!(p.record.fields.get(&key("stage_id")), Some(&Value::Ref(13)));
        assert!(!p.record.fields.contains_key(&key("value")));
        let candidates = field_conflict(&p, "value").expect("value conflict");
        let shown: Vec<(String, u64, &str)> = candidates
            .iter()
            .map(|c| (c.value.to_string(), c.by.0, c.device.as_str()))
            .collect();
        assert_eq!(
            shown,
            vec![
                ("1500.00".into(), 2, "rita-phone"),
                ("1200.00".into(), 3, "carl-web")
            ]
        );
        // The push view leaves the value out and sends the stage.
        let push = phone.push_view(&p);
        assert!(!push.fields.contains_key(&key("value")));
        assert_eq!(push.fields.get(&key("stage_id")), Some(&Value::Ref(13)));
        assert_eq!(
            push.held.get("value").map(String::as_str),
            Some("open conflict")
        );

        // The rep resolves: theirs.
        let seen: Vec<String> = candidates.iter().map(|c| c.op.clone()).collect();
        phone
            .resolve_field(
                &w.ctx(&rita, T0 + 180_000),
                &slot("value"),
                &seen,
                Choice::Theirs,
            )
            .unwrap();
        sync(&mut phone, &mut web);
        let p = w.project(&web);
        assert!(p.conflicts.is_empty(), "{:?}", p.conflicts);
        assert_eq!(p.record.fields.get(&key("value")), Some(&money("1200")));
        let entry = p
            .audit
            .iter()
            .find(|e| e.policy == "manual")
            .expect("audited");
        assert_eq!(entry.by, Some(UserId(2)));
        assert_eq!(entry.candidates.len(), 2);
        assert_eq!(entry.chosen, Chosen::Value(money("1200")));
        assert_eq!(json(&p), json(&w.project(&phone)));
    }
}

#[test]
fn lww_takes_the_latest_write_and_audits_the_loser() {
    let w = World::new();
    let (a, b) = (author(2, "a"), author(3, "b"));
    let (mut x, mut y) = w.two_replicas(&a, &b);
    x.apply(
        &w.ctx(&a, T0 + 2000),
        "rename",
        &[Edit::Set(key("name"), text("Later"))],
    )
    .unwrap();
    y.apply(
        &w.ctx(&b, T0 + 1000),
        "rename",
        &[Edit::Set(key("name"), text("Earlier"))],
    )
    .unwrap();
    sync(&mut x, &mut y);
    let p = w.project(&x);
    assert_eq!(p.record.fields[&key("name")], text("Later"));
    assert!(p.conflicts.is_empty());
    assert!(p.notifications.is_empty(), "lww does not notify");
    let e = p.audit.iter().find(|e| e.policy == "lww").unwrap();
    assert_eq!(e.by, None, "automatic");
    assert!(e.candidates.iter().any(|c| c.value == text("Earlier")));
    // Recorded once, replicated, and converging when both replicas record it.
    assert!(
        x.record_automatic_resolutions(&w.ctx(&a, T0 + 3000))
            .unwrap()
            .is_some()
    );
    assert!(
        y.record_automatic_resolutions(&w.ctx(&b, T0 + 3000))
            .unwrap()
            .is_some()
    );
    assert!(
        x.record_automatic_resolutions(&w.ctx(&a, T0 + 3000))
            .unwrap()
            .is_none()
    );
    sync(&mut x, &mut y);
    assert_eq!(json(&w.project(&x)), json(&w.project(&y)));
    assert_eq!(w.project(&x).audit.len(), 1);
}

#[test]
fn notify_tells_the_author_whose_value_lost() {
    let w = World::new();
    let (a, b) = (author(2, "a"), author(3, "b"));
    let (mut x, mut y) = w.two_replicas(&a, &b);
    let d = |s: &str| Value::Date(s.parse().unwrap());
    x.apply(
        &w.ctx(&a, T0 + 1000),
        "close",
        &[Edit::Set(key("estimated_close_date"), d("2026-12-01"))],
    )
    .unwrap();
    y.apply(
        &w.ctx(&b, T0 + 2000),
        "close",
        &[Edit::Set(key("estimated_close_date"), d("2027-01-15"))],
    )
    .unwrap();
    sync(&mut x, &mut y);
    let p = w.project(&x);
    assert_eq!(
        p.record.fields[&key("estimated_close_date")],
        d("2027-01-15")
    );
    assert_eq!(p.notifications.len(), 1);
    let n = &p.notifications[0];
    assert_eq!((n.to, n.kept_by), (UserId(2), UserId(3)));
    assert_eq!(n.yours, d("2026-12-01"));
}

#[test]
fn keep_server_lets_the_crm_win_over_a_later_device_write() {
    let w = World::new();
    let (rep, crm) = (
        author(2, "phone"),
        Author {
            user: UserId(1),
            device: DeviceId::crm(),
        },
    );
    let (mut phone, mut bridge) = w.two_replicas(&rep, &crm);
    bridge
        .apply(
            &w.ctx(&crm, T0 + 1000),
            "crm",
            &[Edit::Set(key("source_id"), Value::Ref(1))],
        )
        .unwrap();
    phone
        .apply(
            &w.ctx(&rep, T0 + 5000),
            "source",
            &[Edit::Set(key("source_id"), Value::Ref(2))],
        )
        .unwrap();
    sync(&mut phone, &mut bridge);
    let p = w.project(&phone);
    assert_eq!(p.record.fields[&key("source_id")], Value::Ref(1));
    assert_eq!(p.notifications.len(), 1);
    assert_eq!(p.notifications[0].to, UserId(2));
    assert_eq!(p.audit[0].policy, "keep-server");
}

#[test]
fn a_manual_conflict_reopens_when_a_write_races_the_resolution() {
    let w = World::new();
    let (a, b, c) = (author(2, "a"), author(3, "b"), author(1, "c"));
    let (mut x, mut y) = w.two_replicas(&a, &b);
    // z forks from y before y edits: it has seen the same base and nothing else.
    let mut z = y.fork(&c.device);
    x.apply(
        &w.ctx(&a, T0 + 1),
        "v",
        &[Edit::Set(key("value"), money("1"))],
    )
    .unwrap();
    y.apply(
        &w.ctx(&b, T0 + 2),
        "v",
        &[Edit::Set(key("value"), money("2"))],
    )
    .unwrap();
    sync(&mut x, &mut y);
    let seen: Vec<String> = field_conflict(&w.project(&x), "value")
        .unwrap()
        .iter()
        .map(|c| c.op.clone())
        .collect();
    // Editing a conflicted manual field is refused; resolving is the way.
    let err = x
        .apply(
            &w.ctx(&a, T0 + 3),
            "v",
            &[Edit::Set(key("value"), money("3"))],
        )
        .unwrap_err();
    assert!(matches!(err, EditError::InConflict { .. }), "{err}");
    // A stale view is refused.
    let err = x
        .resolve_field(&w.ctx(&a, T0 + 3), &slot("value"), &seen[..1], Choice::Mine)
        .unwrap_err();
    assert!(matches!(err, ResolveError::Changed(_)));
    x.resolve_field(&w.ctx(&a, T0 + 3), &slot("value"), &seen, Choice::Mine)
        .unwrap();
    assert!(w.project(&x).conflicts.is_empty());
    // Meanwhile someone who never saw the conflict writes the value: it is shown again.
    z.apply(
        &w.ctx(&c, T0 + 4),
        "v",
        &[Edit::Set(key("value"), money("4"))],
    )
    .unwrap();
    sync(&mut x, &mut z);
    let p = w.project(&x);
    let again = field_conflict(&p, "value").expect("re-opened");
    let values: Vec<String> = again.iter().map(|c| c.value.to_string()).collect();
    assert_eq!(values, vec!["1.00", "4.00"]);
}

#[test]
fn every_way_to_resolve_a_field() {
    let w = World::new();
    let (a, b) = (author(2, "a"), author(3, "b"));
    let setup = || {
        let (mut x, mut y) = w.two_replicas(&a, &b);
        x.apply(
            &w.ctx(&a, T0 + 1),
            "s",
            &[Edit::Set(key("stage_id"), Value::Ref(13))],
        )
        .unwrap();
        y.apply(
            &w.ctx(&b, T0 + 2),
            "s",
            &[Edit::Set(key("stage_id"), Value::Ref(14))],
        )
        .unwrap();
        sync(&mut x, &mut y);
        let seen: Vec<String> = field_conflict(&w.project(&x), "stage_id")
            .unwrap()
            .iter()
            .map(|c| c.op.clone())
            .collect();
        (x, seen)
    };
    let cases = [
        (Choice::Mine, Value::Ref(13)),
        (Choice::Theirs, Value::Ref(14)),
        (Choice::Pick(2), Value::Ref(14)),
        (Choice::Value(Value::Ref(15)), Value::Ref(15)),
    ];
    for (choice, expected) in cases {
        let (mut x, seen) = setup();
        x.resolve_field(&w.ctx(&a, T0 + 10), &slot("stage_id"), &seen, choice)
            .unwrap();
        let p = w.project(&x);
        assert_eq!(p.record.fields[&key("stage_id")], expected);
        assert!(
            p.audit
                .iter()
                .any(|e| e.chosen == Chosen::Value(expected.clone()) && e.policy == "manual")
        );
    }
    let (mut x, seen) = setup();
    let heads = x.heads();
    let ctx = w.ctx(&a, T0 + 10);
    assert!(matches!(
        x.resolve_field(&ctx, &slot("stage_id"), &seen, Choice::Pick(3)),
        Err(ResolveError::BadPick { n: 3, count: 2, .. })
    ));
    assert!(matches!(
        x.resolve_field(
            &ctx,
            &slot("stage_id"),
            &seen,
            Choice::Value(Value::Ref(99))
        ),
        Err(ResolveError::Invalid { .. })
    ));
    assert!(matches!(
        x.resolve_field(&ctx, &slot("name"), &[], Choice::Mine),
        Err(ResolveError::NoConflict(_))
    ));
    assert_eq!(x.heads(), heads, "refused resolutions write nothing");
    let stranger = author(1, "elsewhere");
    assert!(matches!(
        x.resolve_field(
            &w.ctx(&stranger, T0),
            &slot("stage_id"),
            &seen,
            Choice::Mine
        ),
        Err(ResolveError::NoMine(_))
    ));
}

#[test]
fn delete_against_edit_is_a_record_conflict_with_both_resolutions() {
    let w = World::new();
    let (a, b) = (author(2, "a"), author(3, "b"));
    for choice in [RecordChoice::Restore, RecordChoice::ConfirmDelete] {
        let (mut x, mut y) = w.two_replicas(&a, &b);
        x.apply(&w.ctx(&a, T0 + 1), "delete", &[Edit::DeleteRecord])
            .unwrap();
        y.apply(
            &w.ctx(&b, T0 + 2),
            "note",
            &[Edit::AddNote {
                id: "n1".parse().unwrap(),
                content: "call back".into(),
            }],
        )
        .unwrap();
        sync(&mut x, &mut y);
        let p = w.project(&x);
        assert_eq!(p.record.state, RecordState::InConflict);
        let Some(Conflict::Record {
            deleted_by,
            unseen_edits,
            held_activities,
            ..
        }) = p.conflicts.first()
        else {
            panic!("{:?}", p.conflicts)
        };
        assert_eq!((deleted_by.len(), *unseen_edits), (1, 1));
        assert_eq!(held_activities[0].as_str(), "n1");
        assert_eq!(x.push_view(&p).action, PushAction::Hold);
        let err = x
            .apply(
                &w.ctx(&a, T0 + 3),
                "e",
                &[Edit::Set(key("name"), text("x"))],
            )
            .unwrap_err();
        assert!(matches!(err, EditError::Deleted { in_conflict: true }));

        let seen = vec![deleted_by[0].op.clone()];
        x.resolve_record(&w.ctx(&a, T0 + 4), &seen, choice).unwrap();
        sync(&mut x, &mut y);
        let p = w.project(&y);
        assert!(p.conflicts.is_empty(), "{:?}", p.conflicts);
        let (state, action) = match choice {
            RecordChoice::Restore => (RecordState::Live, PushAction::Upsert),
            RecordChoice::ConfirmDelete => (RecordState::Deleted, PushAction::Delete),
        };
        assert_eq!(p.record.state, state);
        assert_eq!(y.push_view(&p).action, action);
        assert_eq!(
            p.record.activities.len(),
            1,
            "the note stays in the document either way"
        );
        assert!(p.audit.iter().any(|e| e.policy == "record"));
    }
}

#[test]
fn a_delete_that_saw_every_edit_is_no_conflict() {
    let w = World::new();
    let a = author(2, "a");
    let mut x = w
        .deal("d1", &author(1, "hub"), RegisterLayout::Packed)
        .fork(&a.device);
    x.apply(
        &w.ctx(&a, T0 + 1),
        "e",
        &[Edit::Set(key("hot"), Value::Bool(true))],
    )
    .unwrap();
    x.apply(&w.ctx(&a, T0 + 2), "d", &[Edit::DeleteRecord])
        .unwrap();
    let p = w.project(&x);
    assert_eq!(p.record.state, RecordState::Deleted);
    assert!(p.conflicts.is_empty());
}

struct Gone;
impl Directory for Gone {
    fn contact(&self, r: &RecordRef) -> RefStatus {
        match r {
            RecordRef::Crm(55) => RefStatus::Deleted,
            _ => RefStatus::Unknown,
        }
    }
}

#[test]
fn a_reference_to_a_deleted_contact_is_a_relationship_conflict() {
    let w = World::new();
    let a = author(2, "a");
    let mut x = w
        .deal("d1", &author(1, "hub"), RegisterLayout::Packed)
        .fork(&a.device);
    x.apply(
        &w.ctx(&a, T0 + 1),
        "c",
        &[Edit::Set(
            key("contact_id"),
            Value::Record(RecordRef::Crm(55)),
        )],
    )
    .unwrap();
    let p = w.project_with(&x, &Gone);
    assert!(p.conflicts.iter().any(|c| matches!(
        c,
        Conflict::Relationship {
            status: RefStatus::Deleted,
            ..
        }
    )));
    assert!(!x.push_view(&p).fields.contains_key(&key("contact_id")));
}

#[test]
fn values_the_catalog_no_longer_accepts_are_validation_conflicts() {
    let mut w = World::new();
    let a = author(2, "a");
    let x = w
        .deal("d1", &author(1, "hub"), RegisterLayout::Packed)
        .fork(&a.device);
    w.catalog.stages.remove(&12);
    w.catalog
        .custom_fields
        .get_mut(&RecordKind::Deal)
        .unwrap()
        .get_mut("Seats")
        .unwrap()
        .required = true;
    let p = w.project(&x);
    let messages: Vec<String> = p
        .conflicts
        .iter()
        .filter_map(|c| match c {
            Conflict::Validation { slot, message, .. } => Some(format!("{slot}: {message}")),
            _ => None,
        })
        .collect();
    assert_eq!(
        messages,
        vec![
            "stage_id: there is no stage #12",
            "custom_fields.Seats: custom_fields.Seats is required"
        ]
    );
    let push = x.push_view(&p);
    assert!(!push.fields.contains_key(&key("stage_id")));
    assert!(push.fields.contains_key(&key("value")));
}

#[test]
fn the_edit_api_refuses_bad_input_and_changes_nothing() {
    let w = World::new();
    let a = author(2, "a");
    let mut x = w
        .deal("d1", &author(1, "hub"), RegisterLayout::Packed)
        .fork(&a.device);
    let heads = x.heads();
    let ctx = w.ctx(&a, T0 + 1);
    let bad: Vec<(Edit, &str)> = vec![
        (
            Edit::Set(key("valu"), money("1")),
            "deal has no field \"valu\"",
        ),
        (
            Edit::Set(key("value"), text("lots")),
            "value: expected an amount with at most two decimals, got lots",
        ),
        (
            Edit::Set(key("value"), money("-5")),
            "value: -5.00 is negative: an amount cannot be below zero",
        ),
        (
            Edit::Set(key("stage_id"), Value::Ref(99)),
            "stage_id: there is no stage #99",
        ),
        (
            Edit::Set(key("currency"), text("ABC")),
            "currency: \"ABC\" is not an ISO 4217 currency code",
        ),
        (
            Edit::Set(key("custom_fields.Region"), text("Mars")),
            "custom_fields.Region: \"Mars\" is not one of the choices: EMEA, APAC, Americas",
        ),
        (
            Edit::Set(key("custom_fields.Nope"), text("x")),
            "deal has no field \"custom_fields.Nope\"",
        ),
        (
            Edit::AddTag(" padded".into()),
            "bad tag \" padded\": 1 to 128 characters, no control characters",
        ),
        (
            Edit::SpliceNote {
                id: "n9".parse().unwrap(),
                pos: 0,
                delete: 0,
                insert: "x".into(),
            },
            "no activity n9",
        ),
    ];
    for (edit, message) in bad {
        // A valid edit next to the bad one is not written either.
        let err = x
            .apply(
                &ctx,
                "bad",
                &[Edit::Set(key("hot"), Value::Bool(true)), edit],
            )
            .unwrap_err();
        assert_eq!(err.to_string(), message);
        assert_eq!(x.heads(), heads);
    }
    assert!(matches!(
        parse_input(&w.catalog, RecordKind::Deal, None, &key("value"), "12.345"),
        Err(EditError::Invalid { .. })
    ));
    assert_eq!(
        parse_input(&w.catalog, RecordKind::Deal, None, &key("currency"), "usd").unwrap(),
        text("USD")
    );
}

#[test]
fn an_unchanged_value_is_never_written() {
    let w = World::new();
    let a = author(2, "a");
    let mut x = w
        .deal("d1", &author(1, "hub"), RegisterLayout::Packed)
        .fork(&a.device);
    let heads = x.heads();
    let r = x.apply(
        &w.ctx(&a, T0 + 1),
        "same",
        &[
            Edit::Set(key("value"), money("1000.00")),
            Edit::RemoveTag("absent".into()),
        ],
    );
    assert_eq!(r.unwrap(), None);
    assert_eq!(x.heads(), heads);
}

#[test]
fn tags_merge_and_an_add_wins_over_a_concurrent_remove() {
    let w = World::new();
    let (a, b) = (author(2, "a"), author(3, "b"));
    let mut base = w.deal("d1", &author(1, "hub"), RegisterLayout::Packed);
    base.apply(
        &w.ctx(&author(1, "hub"), T0 + 1),
        "t",
        &[Edit::AddTag("vip".into())],
    )
    .unwrap();
    let mut x = base.fork(&a.device);
    let mut y = base.fork(&b.device);
    x.apply(
        &w.ctx(&a, T0 + 2),
        "t",
        &[Edit::RemoveTag("vip".into()), Edit::AddTag("fair".into())],
    )
    .unwrap();
    y.apply(
        &w.ctx(&b, T0 + 3),
        "t",
        &[Edit::RemoveTag("vip".into()), Edit::AddTag("vip2".into())],
    )
    .unwrap();
    y.apply(&w.ctx(&b, T0 + 4), "t", &[Edit::AddTag("vip".into())])
        .unwrap();
    sync(&mut x, &mut y);
    let tags: Vec<String> = w.project(&x).record.tags.into_iter().collect();
    assert_eq!(tags, vec!["fair", "vip", "vip2"]);
}

#[test]
fn concurrent_edits_of_one_note_merge() {
    let w = World::new();
    let (a, b) = (author(2, "a"), author(3, "b"));
    let mut base = w.deal("d1", &author(1, "hub"), RegisterLayout::Packed);
    let n: ActivityId = "n1".parse().unwrap();
    base.apply(
        &w.ctx(&author(1, "hub"), T0),
        "n",
        &[Edit::AddNote {
            id: n.clone(),
            content: "Hello world".into(),
        }],
    )
    .unwrap();
    let mut x = base.fork(&a.device);
    let mut y = base.fork(&b.device);
    x.apply(
        &w.ctx(&a, T0 + 1),
        "n",
        &[Edit::SpliceNote {
            id: n.clone(),
            pos: 5,
            delete: 0,
            insert: " brave".into(),
        }],
    )
    .unwrap();
    y.apply(
        &w.ctx(&b, T0 + 2),
        "n",
        &[Edit::SpliceNote {
            id: n.clone(),
            pos: 11,
            delete: 0,
            insert: "!".into(),
        }],
    )
    .unwrap();
    sync(&mut x, &mut y);
    assert_eq!(
        w.project(&x).record.activities[0].content.as_deref(),
        Some("Hello brave world!")
    );
    let err = x
        .apply(
            &w.ctx(&a, T0 + 3),
            "n",
            &[Edit::SpliceNote {
                id: n,
                pos: 10,
                delete: 50,
                insert: String::new(),
            }],
        )
        .unwrap_err();
    assert!(matches!(err, EditError::OutOfBounds { len: 18, .. }));
}

#[test]
fn tasks_and_calls_keep_their_fields_and_tiers() {
    let w = World::new();
    let a = author(2, "a");
    let mut x = w
        .deal("d1", &author(1, "hub"), RegisterLayout::Packed)
        .fork(&a.device);
    let t: ActivityId = "t1".parse().unwrap();
    x.apply(
        &w.ctx(&a, T0 + 1),
        "task",
        &[Edit::AddActivity {
            id: t.clone(),
            kind: ActivityKind::Task,
            fields: vec![
                (key("content"), text("Send quote")),
                (key("completed"), Value::Bool(false)),
            ],
        }],
    )
    .unwrap();
    x.apply(
        &w.ctx(&a, T0 + 2),
        "done",
        &[Edit::SetActivity {
            id: t.clone(),
            field: key("completed"),
            value: Value::Bool(true),
        }],
    )
    .unwrap();
    let p = w.project(&x);
    assert_eq!(
        p.record.activities[0].fields[&key("completed")],
        Value::Bool(true)
    );
    let err = x
        .apply(
            &w.ctx(&a, T0 + 3),
            "task",
            &[Edit::AddActivity {
                id: "t2".parse().unwrap(),
                kind: ActivityKind::Task,
                fields: vec![],
            }],
        )
        .unwrap_err();
    assert_eq!(err.to_string(), "content: is required");
    let err = x
        .apply(
            &w.ctx(&a, T0 + 3),
            "task",
            &[Edit::AddNote {
                id: t,
                content: String::new(),
            }],
        )
        .unwrap_err();
    assert!(matches!(err, EditError::ActivityExists(_)));
}

#[test]
fn the_crm_refusals_show_until_the_field_is_written_again() {
    let w = World::new();
    let a = author(2, "a");
    let bridge = Author {
        user: UserId(1),
        device: DeviceId::crm(),
    };
    let mut x = w
        .deal("d1", &author(1, "hub"), RegisterLayout::Packed)
        .fork(&a.device);
    x.report_rejection(
        &w.ctx(&bridge, T0 + 1),
        Some(&slot("name")),
        FlagKind::Validation,
        "name is too long",
    )
    .unwrap();
    let p = w.project(&x);
    assert!(
        p.conflicts
            .iter()
            .any(|c| matches!(c, Conflict::Validation { source, .. } if source == "crm"))
    );
    assert!(!x.push_view(&p).fields.contains_key(&key("name")));
    x.apply(
        &w.ctx(&a, T0 + 2),
        "rename",
        &[Edit::Set(key("name"), text("Acme"))],
    )
    .unwrap();
    assert!(w.project(&x).conflicts.is_empty());

    x.report_rejection(
        &w.ctx(&bridge, T0 + 3),
        None,
        FlagKind::Permission,
        "403: not your deal",
    )
    .unwrap();
    let p = w.project(&x);
    assert!(matches!(
        p.conflicts.as_slice(),
        [Conflict::Permission { slot: None, .. }]
    ));
    assert_eq!(x.push_view(&p).action, PushAction::Hold);
}

#[test]
fn a_policy_file_can_make_any_field_manual() {
    let mut w = World::new();
    w.policy = Policy::from_toml("[deal]\nhot = \"manual\"\n").unwrap();
    let (a, b) = (author(2, "a"), author(3, "b"));
    let (mut x, mut y) = w.two_replicas(&a, &b);
    x.apply(
        &w.ctx(&a, T0 + 1),
        "h",
        &[Edit::Set(key("hot"), Value::Bool(true))],
    )
    .unwrap();
    y.apply(
        &w.ctx(&b, T0 + 2),
        "h",
        &[Edit::Set(key("hot"), Value::Bool(false))],
    )
    .unwrap();
    sync(&mut x, &mut y);
    assert!(field_conflict(&w.project(&x), "hot").is_some());
}

#[test]
fn a_clock_behind_still_orders_after_what_it_has_seen() {
    let w = World::new();
    let a = author(2, "a");
    let mut x = w
        .deal("d1", &author(1, "hub"), RegisterLayout::Packed)
        .fork(&a.device);
    // This device's clock is an hour behind the document's.
    x.apply(
        &w.ctx(&a, T0 - 3_600_000),
        "rename",
        &[Edit::Set(key("name"), text("Behind"))],
    )
    .unwrap();
    let c = x.field_candidates(&w.catalog, &w.policy, &slot("name"));
    assert_eq!(c.len(), 1);
    assert!(c[0].at > T0, "hybrid clock: after the creation it saw");
}

#[test]
fn a_contact_needs_a_last_name_or_an_organization_name() {
    let w = World::new();
    let a = author(2, "a");
    let ctx = w.ctx(&a, T0);
    let person = RecordDoc::create(
        RecordKind::Contact,
        "c1".parse().unwrap(),
        RegisterLayout::Packed,
        &ctx,
        vec![
            (key("first_name"), text("Jo")),
            (key("email"), text("jo@example.com")),
        ],
    )
    .unwrap();
    let p = w.project(&person);
    assert!(
        matches!(p.conflicts.as_slice(), [Conflict::Validation { slot, .. }] if slot.to_string() == "last_name")
    );
    let org = RecordDoc::create(
        RecordKind::Contact,
        "c2".parse().unwrap(),
        RegisterLayout::Packed,
        &ctx,
        vec![
            (key("is_organization"), Value::Bool(true)),
            (key("name"), text("Acme")),
        ],
    )
    .unwrap();
    assert!(w.project(&org).conflicts.is_empty());
    let mut org = org;
    let err = org
        .apply(
            &ctx,
            "flip",
            &[Edit::Set(key("is_organization"), Value::Bool(false))],
        )
        .unwrap_err();
    assert!(matches!(err, EditError::CreateOnly { .. }));
}

/// Two records with the same history (same authors, same writes) raise one notification each:
/// the id names the record.
#[test]
fn records_with_the_same_history_get_distinct_notification_ids() {
    let w = World::new();
    let (a, b) = (author(2, "a"), author(3, "b"));
    let d = |s: &str| Value::Date(s.parse().unwrap());
    let mut ids = Vec::new();
    for record in ["deal-1", "deal-2"] {
        let base = w.deal(record, &author(1, "hub"), RegisterLayout::Packed);
        let (mut x, mut y) = (base.fork(&a.device), base.fork(&b.device));
        for (doc, who, at, date) in [
            (&mut x, &a, T0 + 1000, "2026-12-01"),
            (&mut y, &b, T0 + 2000, "2027-01-15"),
        ] {
            doc.apply(
                &w.ctx(who, at),
                "close",
                &[Edit::Set(key("estimated_close_date"), d(date))],
            )
            .unwrap();
        }
        sync(&mut x, &mut y);
        let p = w.project(&x);
        assert_eq!(p.notifications.len(), 1);
        ids.push(p.notifications[0].id.clone());
    }
    assert_ne!(
        ids[0], ids[1],
        "one record's notification would hide the other's"
    );
}

/// Three concurrent writes reach replicas in different orders: one pair resolves {a, b}, then
/// another resolves {a, b, c}. Both resolutions are audited, but the author of each lost value
/// is told once.
#[test]
fn a_lost_value_is_notified_once_however_many_resolutions_name_it() {
    let w = World::new();
    let (a, b, c) = (author(2, "a"), author(3, "b"), author(4, "c"));
    let base = w.deal("d1", &author(1, "hub"), RegisterLayout::Packed);
    let (mut x, mut y, mut z) = (
        base.fork(&a.device),
        base.fork(&b.device),
        base.fork(&c.device),
    );
    let d = |s: &str| Value::Date(s.parse().unwrap());
    for (doc, who, at, date) in [
        (&mut x, &a, T0 + 1000, "2026-12-01"),
        (&mut y, &b, T0 + 2000, "2027-01-15"),
        (&mut z, &c, T0 + 3000, "2027-02-20"),
    ] {
        doc.apply(
            &w.ctx(who, at),
            "close",
            &[Edit::Set(key("estimated_close_date"), d(date))],
        )
        .unwrap();
    }
    sync(&mut x, &mut y);
    x.record_automatic_resolutions(&w.ctx(&a, T0 + 4000))
        .unwrap();
    sync(&mut y, &mut z);
    y.record_automatic_resolutions(&w.ctx(&b, T0 + 5000))
        .unwrap();
    sync(&mut x, &mut y);
    sync(&mut y, &mut z);
    let p = w.project(&z);
    assert_eq!(json(&p), json(&w.project(&x)), "replicas agree");
    assert_eq!(p.audit.len(), 2, "{:?}", p.audit);
    let mut told: Vec<(UserId, Value)> = p
        .notifications
        .iter()
        .map(|n| (n.to, n.yours.clone()))
        .collect();
    told.sort();
    assert_eq!(
        told,
        vec![(UserId(2), d("2026-12-01")), (UserId(3), d("2027-01-15"))]
    );
}
