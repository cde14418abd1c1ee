//! What the CRM refuses, and what the edit API refuses before the CRM could: nothing waits
//! without a conflict a person can see and settle from a device.

mod common;

use common::*;
use sellsync_model::*;

fn bridge() -> Author {
    Author {
        user: UserId(1),
        device: DeviceId::crm(),
    }
}

fn note(id: &str, content: &str) -> Edit {
    Edit::AddNote {
        id: id.parse().unwrap(),
        content: content.into(),
    }
}

fn refused_activities(p: &Projection) -> Vec<String> {
    p.conflicts
        .iter()
        .filter_map(|c| match c {
            Conflict::Refused {
                activity: Some(a), ..
            } => Some(a.to_string()),
            _ => None,
        })
        .collect()
}

#[test]
fn the_edit_api_refuses_empty_notes_and_clearing_required_fields() {
    let w = World::new();
    let a = author(2, "a");
    let mut x = w
        .deal("d1", &author(1, "hub"), RegisterLayout::Packed)
        .fork(&a.device);
    let ctx = w.ctx(&a, T0 + 1);
    x.apply(
        &ctx,
        "setup",
        &[
            note("n1", "Call back"),
            Edit::AddActivity {
                id: "t1".parse().unwrap(),
                kind: ActivityKind::Task,
                fields: vec![(key("content"), text("Send the quote"))],
            },
        ],
    )
    .unwrap();
    let heads = x.heads();
    let n1: ActivityId = "n1".parse().unwrap();
    let t1: ActivityId = "t1".parse().unwrap();
    let bad: Vec<(Edit, &str)> = vec![
        (
            note("n2", ""),
            "content: a note needs some text (delete the note instead of emptying it)",
        ),
        (
            note("n2", "  \n"),
            "content: a note needs some text (delete the note instead of emptying it)",
        ),
        (
            Edit::SetNoteText {
                id: n1.clone(),
                text: String::new(),
            },
            "content: a note needs some text (delete the note instead of emptying it)",
        ),
        (
            Edit::SpliceNote {
                id: n1.clone(),
                pos: 0,
                delete: 9,
                insert: " ".into(),
            },
            "content: a note needs some text (delete the note instead of emptying it)",
        ),
        (
            Edit::Set(key("name"), Value::Null),
            "name: is required and cannot be cleared (give it a value instead)",
        ),
        (
            Edit::Set(key("name"), text(" ")),
            "name: is required and cannot be cleared (give it a value instead)",
        ),
        (
            Edit::AddActivity {
                id: "t2".parse().unwrap(),
                kind: ActivityKind::Task,
                fields: vec![(key("content"), text(""))],
            },
            "content: is required",
        ),
        (
            Edit::SetActivity {
                id: t1.clone(),
                field: key("content"),
                value: Value::Null,
            },
            "content: is required and cannot be cleared (give it a value instead)",
        ),
    ];
    for (edit, message) in bad {
        let err = x.apply(&ctx, "bad", &[edit]).unwrap_err();
        assert_eq!(err.to_string(), message);
        assert_eq!(x.heads(), heads);
    }
    // A deal needs a name, and nothing else, to be created (as in Zendesk Sell).
    let err = RecordDoc::create(
        RecordKind::Deal,
        "d2".parse().unwrap(),
        RegisterLayout::Packed,
        &ctx,
        vec![(key("name"), text(""))],
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "name: is required");
    RecordDoc::create(
        RecordKind::Deal,
        "d3".parse().unwrap(),
        RegisterLayout::Packed,
        &ctx,
        vec![(key("name"), text("Just a name"))],
    )
    .unwrap();
    // A person's last name cannot be cleared; an organisation's name cannot.
    let mut person = RecordDoc::create(
        RecordKind::Contact,
        "c1".parse().unwrap(),
        RegisterLayout::Packed,
        &ctx,
        vec![(key("last_name"), text("Doe")), (key("name"), text("x"))],
    )
    .unwrap();
    let err = person
        .apply(&ctx, "clear", &[Edit::Set(key("last_name"), Value::Null)])
        .unwrap_err();
    assert!(matches!(err, EditError::Invalid { .. }), "{err}");
    // A person's `name` is not required.
    person
        .apply(&ctx, "clear", &[Edit::Set(key("name"), Value::Null)])
        .unwrap();
}

#[test]
fn a_validation_refusal_naming_no_field_is_not_a_permission_conflict() {
    let w = World::new();
    let a = author(2, "a");
    let mut x = w
        .deal("d1", &author(1, "hub"), RegisterLayout::Packed)
        .fork(&a.device);
    x.report_rejection(
        &w.ctx(&bridge(), T0 + 1),
        None,
        FlagKind::Validation,
        "the deal is invalid",
    )
    .unwrap();
    let p = w.project(&x);
    assert!(
        matches!(
            p.conflicts.as_slice(),
            [Conflict::Refused {
                activity: None,
                refusal: FlagKind::Validation,
                ..
            }]
        ),
        "{:?}",
        p.conflicts
    );
    assert_eq!(x.push_view(&p).action, PushAction::Hold);
    // Retried from a device: it goes again.
    x.retry_refused(&w.ctx(&a, T0 + 2), &RefusalTarget::Record)
        .unwrap();
    let p = w.project(&x);
    assert!(p.conflicts.is_empty(), "{:?}", p.conflicts);
    assert_eq!(x.push_view(&p).action, PushAction::Upsert);
    assert!(matches!(
        x.retry_refused(&w.ctx(&a, T0 + 3), &RefusalTarget::Record),
        Err(ResolveError::NoConflict(_))
    ));
}

#[test]
fn a_refused_note_is_held_alone_and_settles_by_a_fix_a_discard_or_a_retry() {
    let w = World::new();
    let a = author(2, "a");
    let mut x = w
        .deal("d1", &author(1, "hub"), RegisterLayout::Packed)
        .fork(&a.device);
    x.apply(
        &w.ctx(&a, T0 + 1),
        "notes",
        &[
            note("n1", "too long for the CRM"),
            note("n2", "fine"),
            Edit::Set(key("hot"), Value::Bool(true)),
        ],
    )
    .unwrap();
    let n1: ActivityId = "n1".parse().unwrap();
    let refuse = |x: &mut RecordDoc, at: i64| {
        x.report_activity_rejection(
            &w.ctx(&bridge(), at),
            &n1,
            Some(&key("content")),
            FlagKind::Validation,
            "content: attribute value is incorrect",
        )
        .unwrap();
    };
    refuse(&mut x, T0 + 2);
    let p = w.project(&x);
    assert_eq!(refused_activities(&p), vec!["n1"]);
    let Some(Conflict::Refused { field, message, .. }) = p.conflicts.first() else {
        panic!("{:?}", p.conflicts);
    };
    assert_eq!(field.as_ref(), Some(&key("content")));
    assert!(message.contains("incorrect"));
    // The record's other changes still go: the field, the other note.
    let view = x.push_view(&p);
    assert_eq!(view.action, PushAction::Upsert);
    assert_eq!(view.fields.get(&key("hot")), Some(&Value::Bool(true)));
    let pushed: Vec<String> = view.activities.iter().map(|a| a.id.to_string()).collect();
    assert_eq!(pushed, vec!["n2"]);

    // Fixed: the edited note goes again.
    x.apply(
        &w.ctx(&a, T0 + 3),
        "fix",
        &[Edit::SetNoteText {
            id: n1.clone(),
            text: "short".into(),
        }],
    )
    .unwrap();
    let p = w.project(&x);
    assert!(refused_activities(&p).is_empty());
    assert_eq!(x.push_view(&p).activities.len(), 2);

    // Refused again, then retried as it is.
    refuse(&mut x, T0 + 4);
    assert_eq!(refused_activities(&w.project(&x)), vec!["n1"]);
    x.retry_refused(&w.ctx(&a, T0 + 5), &RefusalTarget::Activity(n1.clone()))
        .unwrap();
    assert!(refused_activities(&w.project(&x)).is_empty());

    // Refused again, then discarded.
    refuse(&mut x, T0 + 6);
    x.apply(
        &w.ctx(&a, T0 + 7),
        "discard",
        &[Edit::DeleteActivity(n1.clone())],
    )
    .unwrap();
    let p = w.project(&x);
    assert!(p.conflicts.is_empty(), "{:?}", p.conflicts);
}
