//! Benchmarks of the core: projection throughput, and the cost of a field edit in bytes (saved
//! and on the wire) for the two register layouts.
//!
//! `cargo bench -p sellsync-model --bench model` prints the byte counts first, then criterion's
//! timings. Numbers and machine go into docs/benchmarks.md.

use std::hint::black_box;

use automerge::sync::{self, SyncDoc};
use criterion::{Criterion, criterion_group, criterion_main};
use sellsync_model::*;

const T0: i64 = 1_790_000_000_000;

fn author(user: u64, device: &str) -> Author {
    Author {
        user: UserId(user),
        device: device.parse().unwrap(),
    }
}

/// The catalog of the example plus 16 text custom fields, so that a deal has 30 fields.
fn catalog() -> Catalog {
    let mut c = Catalog::example();
    let defs = c.custom_fields.get_mut(&RecordKind::Deal).unwrap();
    for i in 0..13 {
        let name = format!("Extra{i:02}");
        defs.insert(
            name.clone(),
            CustomFieldDef {
                name,
                ty: CustomFieldType::Text,
                choices: vec![],
                required: false,
            },
        );
    }
    c
}

fn key(s: &str) -> FieldKey {
    s.parse().unwrap()
}

/// A deal with 30 fields written, 20 notes, and about 200 changes of history, written by three
/// devices that sync now and then (so some fields hold concurrent candidates).
fn big_deal(layout: RegisterLayout, catalog: &Catalog, policy: &Policy) -> RecordDoc {
    let hub = author(1, "hub");
    let ctx = |a: &'static Author, t: i64| EditCtx {
        author: a,
        now_ms: t,
        catalog,
        policy,
    };
    let mut fields: Vec<(FieldKey, Value)> = vec![
        (key("name"), Value::Text("Acme renewal".into())),
        (key("value"), Value::Money(Money::from_cents(100_000))),
        (key("currency"), Value::Text("EUR".into())),
        (key("stage_id"), Value::Ref(12)),
        (key("owner_id"), Value::Ref(2)),
        (key("loss_reason_id"), Value::Ref(1)),
        (key("hot"), Value::Bool(true)),
        (key("source_id"), Value::Ref(1)),
        (key("unqualified_reason_id"), Value::Ref(3)),
        (key("contact_id"), Value::Record(RecordRef::Crm(77))),
        (
            key("estimated_close_date"),
            Value::Date("2027-03-01".parse().unwrap()),
        ),
        (key("customized_win_likelihood"), Value::Int(40)),
        (
            key("last_stage_change_at"),
            Value::DateTime("2026-11-01T10:00:00Z".parse().unwrap()),
        ),
        (key("added_on"), Value::Date("2026-10-01".parse().unwrap())),
        (key("custom_fields.Region"), Value::Text("EMEA".into())),
        (key("custom_fields.Referral"), Value::Text("fair".into())),
        (key("custom_fields.Seats"), Value::Number("12".into())),
    ];
    for i in 0..13 {
        fields.push((
            key(&format!("custom_fields.Extra{i:02}")),
            Value::Text(format!("extra {i}")),
        ));
    }
    assert_eq!(fields.len(), 30);
    let mut doc = RecordDoc::create(
        RecordKind::Deal,
        "deal-1".parse().unwrap(),
        layout,
        &EditCtx {
            author: &hub,
            now_ms: T0,
            catalog,
            policy,
        },
        fields,
    )
    .unwrap();
    static A: std::sync::LazyLock<Author> = std::sync::LazyLock::new(|| author(2, "rita"));
    static B: std::sync::LazyLock<Author> = std::sync::LazyLock::new(|| author(3, "carl"));
    let mut a = doc.fork(&A.device);
    let mut b = doc.fork(&B.device);
    let mut t = T0;
    for i in 0..20 {
        let id: ActivityId = format!("note-{i}").parse().unwrap();
        t += 1000;
        a.apply(
            &ctx(&A, t),
            "note",
            &[Edit::AddNote {
                id,
                content: format!("Call notes {i}: discussed seats and timing."),
            }],
        )
        .unwrap();
    }
    let lww = [
        "name",
        "hot",
        "custom_fields.Referral",
        "customized_win_likelihood",
        "estimated_close_date",
    ];
    // Edits until the merged history holds about 200 changes.
    for step in 1..=205usize {
        t += 1000;
        let field = lww[step % lww.len()];
        let value = match field {
            "hot" => Value::Bool(step % 2 == 0),
            "customized_win_likelihood" => Value::Int((step % 100) as i64),
            "estimated_close_date" => Value::Date(
                chrono::NaiveDate::from_ymd_opt(2027, 1, 1).unwrap()
                    + chrono::Days::new(step as u64 % 300),
            ),
            _ => Value::Text(format!("v{step}")),
        };
        let (doc_, who): (&mut RecordDoc, &'static Author) = if step % 2 == 0 {
            (&mut a, &A)
        } else {
            (&mut b, &B)
        };
        doc_.apply(&ctx(who, t), "edit", &[Edit::Set(key(field), value)])
            .unwrap();
        if step % 17 == 0 {
            a.merge(&mut b).unwrap();
            b.merge(&mut a).unwrap();
        }
    }
    // Leave one concurrent pair on a manual field, so the projection shows a conflict.
    a.apply(
        &ctx(&A, t + 1),
        "v",
        &[Edit::Set(
            key("value"),
            Value::Money(Money::from_cents(150_000)),
        )],
    )
    .unwrap();
    b.apply(
        &ctx(&B, t + 2),
        "v",
        &[Edit::Set(
            key("value"),
            Value::Money(Money::from_cents(120_000)),
        )],
    )
    .unwrap();
    a.merge(&mut b).unwrap();
    doc.merge(&mut a).unwrap();
    doc
}

/// Bytes a one-field edit costs: in the saved document, in an incremental save, and on the wire
/// between two replicas that were in sync (persisted sync state).
fn edit_costs(layout: RegisterLayout, catalog: &Catalog, policy: &Policy) -> (f64, usize, usize) {
    let rita = author(2, "rita");
    let mut doc = big_deal(layout, catalog, policy).fork(&rita.device);
    let mut peer = doc.fork(&"hub".parse().unwrap());
    let (mut s1, mut s2) = (sync::State::new(), sync::State::new());
    exchange(doc.automerge_mut(), peer.automerge_mut(), &mut s1, &mut s2);

    let before = doc.save().len();
    let n = 100;
    let mut incremental = 0;
    for i in 0..n {
        let heads = doc.heads();
        doc.apply(
            &EditCtx {
                author: &rita,
                now_ms: T0 + 10_000_000 + i,
                catalog,
                policy,
            },
            "edit",
            &[Edit::Set(
                key("custom_fields.Referral"),
                Value::Text(format!("r{i}")),
            )],
        )
        .unwrap();
        incremental = doc.automerge().save_after(&heads).len();
    }
    let saved_per_edit = (doc.save().len() - before) as f64 / n as f64;
    exchange(doc.automerge_mut(), peer.automerge_mut(), &mut s1, &mut s2);
    doc.apply(
        &EditCtx {
            author: &rita,
            now_ms: T0 + 20_000_000,
            catalog,
            policy,
        },
        "edit",
        &[Edit::Set(
            key("name"),
            Value::Text("Acme renewal 2027".into()),
        )],
    )
    .unwrap();
    let wire = exchange(doc.automerge_mut(), peer.automerge_mut(), &mut s1, &mut s2);
    (saved_per_edit, incremental, wire)
}

/// Runs the sync loop to quiescence; returns the bytes of all messages.
fn exchange(
    a: &mut automerge::Automerge,
    b: &mut automerge::Automerge,
    sa: &mut sync::State,
    sb: &mut sync::State,
) -> usize {
    let mut bytes = 0;
    loop {
        let mut moved = false;
        if let Some(m) = a.generate_sync_message(sa) {
            let enc = m.encode();
            bytes += enc.len();
            b.receive_sync_message(sb, sync::Message::decode(&enc).unwrap())
                .unwrap();
            moved = true;
        }
        if let Some(m) = b.generate_sync_message(sb) {
            let enc = m.encode();
            bytes += enc.len();
            a.receive_sync_message(sa, sync::Message::decode(&enc).unwrap())
                .unwrap();
            moved = true;
        }
        if !moved {
            return bytes;
        }
    }
}

fn benches(c: &mut Criterion) {
    let catalog = catalog();
    let policy = Policy::default();
    println!(
        "register layout | saved bytes per field edit | incremental save of one edit | sync bytes for a one-field edit | saved deal"
    );
    for layout in [RegisterLayout::Packed, RegisterLayout::Object] {
        let (saved, inc, wire) = edit_costs(layout, &catalog, &policy);
        let size = big_deal(layout, &catalog, &policy).save().len();
        println!("{layout:?} | {saved:.1} | {inc} | {wire} | {size}");
    }
    for layout in [RegisterLayout::Packed, RegisterLayout::Object] {
        let doc = big_deal(layout, &catalog, &policy);
        let changes = doc.automerge().get_changes(&[]).len();
        let ctx = ProjectCtx {
            catalog: &catalog,
            policy: &policy,
            directory: &AssumeLive,
        };
        let p = doc.project(&ctx);
        assert_eq!(p.record.fields.len(), 29, "30 fields, value in conflict");
        assert_eq!(p.record.activities.len(), 20);
        println!(
            "{layout:?}: {changes} changes, {} conflicts, {} audit entries",
            p.conflicts.len(),
            p.audit.len()
        );
        c.bench_function(
            &format!("project deal (30 fields, 20 notes, {changes} changes, {layout:?})"),
            |bench| bench.iter(|| black_box(doc.project(black_box(&ctx)))),
        );
    }
    let doc = big_deal(RegisterLayout::Packed, &catalog, &policy);
    let rita = author(2, "rita");
    c.bench_function("apply one field edit (packed)", |bench| {
        let mut d = doc.fork(&rita.device);
        let mut i = 0i64;
        bench.iter(|| {
            i += 1;
            d.apply(
                &EditCtx {
                    author: &rita,
                    now_ms: T0 + 10_000_000 + i,
                    catalog: &catalog,
                    policy: &policy,
                },
                "edit",
                &[Edit::Set(
                    key("custom_fields.Referral"),
                    Value::Text(format!("r{i}")),
                )],
            )
            .unwrap()
        })
    });
}

criterion_group!(model, benches);
criterion_main!(model);
