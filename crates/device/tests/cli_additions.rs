//! The facade's calls the CLI needs beyond the first version, offline (no hub): waiting for a
//! held store, a chosen record id, tags as one action, editing notes, tasks and calls, what the
//! CRM refused (fix, discard, retry), enrolling again (`init --force`), a moved hub URL, the
//! LAN credential check and serving without holding the store.

use std::sync::Arc;
use std::time::Duration;

use sellsync_device::{
    Conflict, Device, DeviceConfig, DeviceError, Enrolment, FieldKey, RecordId, RefusalTarget,
    Slot, TagChange, UserId, Value,
};
use sellsync_model::{DeviceId, FlagKind};
use sellsync_service::{Node, net, token};
use sellsync_store::Store;

/// A hub URL nobody answers at.
const NOBODY: &str = "ws://127.0.0.1:9/";

fn key(s: &str) -> FieldKey {
    s.parse().unwrap()
}

/// A well-formed enrolment of `device` (user `user`) with a hub that is not there.
fn enrolment(device: &str, user: u64) -> Enrolment {
    let dev: DeviceId = device.parse().unwrap();
    Enrolment {
        hub_url: NOBODY.to_owned(),
        token: token::format(
            &"hub".parse().unwrap(),
            UserId(user),
            &dev,
            &"ab".repeat(32),
        ),
        ca_pem: None,
    }
}

fn enrolled(dir: &std::path::Path) -> (DeviceConfig, Device) {
    let config = DeviceConfig::new(dir.join("d.redb"));
    let d = Device::enrol(config.clone(), enrolment("d", 2)).unwrap();
    (config, d)
}

fn deal(d: &Device, name: &str) -> RecordId {
    d.create_deal(vec![(key("name"), Value::Text(name.into()))])
        .unwrap()
}

#[test]
fn open_waiting_waits_for_the_store_and_gives_up_after_its_bound() {
    let dir = tempfile::tempdir().unwrap();
    let (config, d) = enrolled(dir.path());
    match Device::open_waiting(config.clone(), Duration::from_millis(200)) {
        Err(DeviceError::StoreLocked { .. }) => {}
        other => panic!("expected StoreLocked, got {other:?}"),
    }
    let holder = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        drop(d);
    });
    let again = Device::open_waiting(config, Duration::from_secs(10)).unwrap();
    holder.join().unwrap();
    assert_eq!(again.id().unwrap().as_str(), "d");
}

#[test]
fn a_deal_takes_the_id_given_and_an_id_held_already_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_, d) = enrolled(dir.path());
    let id: RecordId = "deal-acme".parse().unwrap();
    let fields = vec![(key("name"), Value::Text("Acme".into()))];
    assert_eq!(
        d.create_deal_with_id(id.clone(), fields.clone()).unwrap(),
        id
    );
    match d.create_deal_with_id(id.clone(), fields) {
        Err(DeviceError::Invalid { field, .. }) => assert_eq!(field, "id"),
        other => panic!("expected Invalid id, got {other:?}"),
    }
    let held = d.projections(sellsync_device::RecordKind::Deal).unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].record.id, id);
    assert_eq!(
        held[0].record.fields.get(&key("name")),
        Some(&Value::Text("Acme".into()))
    );
}

#[test]
fn tags_are_added_and_removed_as_one_action() {
    let dir = tempfile::tempdir().unwrap();
    let (_, d) = enrolled(dir.path());
    let id = deal(&d, "Acme");
    assert_eq!(
        d.change_tags(&id, &[TagChange::Add("q1".into())]).unwrap(),
        vec!["q1".to_owned()]
    );
    let now = d
        .change_tags(
            &id,
            &[
                TagChange::Add("fair".into()),
                TagChange::Remove("q1".into()),
            ],
        )
        .unwrap();
    assert_eq!(now, vec!["fair".to_owned()]);
    // One bad tag refuses the whole action: "vip" is not added either.
    let bad = d.change_tags(
        &id,
        &[TagChange::Add("vip".into()), TagChange::Add(String::new())],
    );
    assert!(
        matches!(bad, Err(DeviceError::Invalid { .. })),
        "expected Invalid, got {bad:?}"
    );
    let tags: Vec<String> = d.record(&id).unwrap().record.tags.into_iter().collect();
    assert_eq!(tags, vec!["fair".to_owned()]);
}

#[test]
fn notes_tasks_and_calls_are_edited_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let (_, d) = enrolled(dir.path());
    let id = deal(&d, "Acme");
    let note = d.note(&id, "first text").unwrap();
    d.set_note_text(&id, &note, "second text").unwrap();
    let task = d
        .task(&id, vec![(key("content"), Value::Text("call back".into()))])
        .unwrap();
    d.edit_activity(&id, &task, vec![(key("completed"), Value::Bool(true))])
        .unwrap();
    let p = d.record(&id).unwrap();
    let find = |a| p.record.activities.iter().find(|v| v.id == a).unwrap();
    assert_eq!(find(note.clone()).content.as_deref(), Some("second text"));
    assert_eq!(
        find(task.clone()).fields.get(&key("completed")),
        Some(&Value::Bool(true))
    );
    d.delete_activity(&id, &note).unwrap();
    let p = d.record(&id).unwrap();
    let gone = p.record.activities.iter().find(|v| v.id == note);
    assert!(gone.is_none_or(|v| v.deleted), "{gone:?}");
    // An activity the record does not have is refused.
    let other = d.note(&deal(&d, "Other"), "x").unwrap();
    assert!(matches!(
        d.set_note_text(&id, &other, "y"),
        Err(DeviceError::Invalid { .. })
    ));
}

/// Reports, as the bridge does, that the CRM refused the value of `slot` of `id` (or the
/// activity `slot` names), with the device closed.
fn crm_refuses(config: &DeviceConfig, id: &RecordId, slot: &Slot) {
    let store = Arc::new(Store::open_existing(&config.path).unwrap());
    let mut node = Node::open(store, None).unwrap();
    node.act(id, net::now_ms(), |rd, ctx| {
        rd.report_rejection(ctx, Some(slot), FlagKind::Validation, "not accepted")
            .map_err(|e| sellsync_service::NodeError::Refused(e.to_string()))
    })
    .unwrap();
}

#[test]
fn what_the_crm_refused_is_fixed_retried_or_discarded_and_nothing_else_is() {
    let dir = tempfile::tempdir().unwrap();
    let (config, d) = enrolled(dir.path());
    let id = deal(&d, "Acme");
    let name: Slot = "name".parse().unwrap();
    let note = d.note(&id, "bad text").unwrap();
    let task = d
        .task(&id, vec![(key("content"), Value::Text("call".into()))])
        .unwrap();
    // Nothing refused yet: every call says so and writes nothing.
    let heads = d.record(&id).unwrap();
    assert!(matches!(
        d.fix_refused_value(&id, &name, Value::Text("x".into())),
        Err(DeviceError::NoConflict { .. })
    ));
    assert!(matches!(
        d.fix_refused_note(&id, &note, "y"),
        Err(DeviceError::NoConflict { .. })
    ));
    assert!(matches!(
        d.retry_refused(&id, &RefusalTarget::Field(name.clone())),
        Err(DeviceError::NoConflict { .. })
    ));
    assert!(!d.is_refused_activity(&id, &note).unwrap());
    assert_eq!(d.record(&id).unwrap(), heads);
    drop(d);
    crm_refuses(&config, &id, &name);
    let note_slot: Slot = format!("{note}.content").parse().unwrap();
    crm_refuses(&config, &id, &note_slot);
    let task_slot: Slot = format!("{task}.content").parse().unwrap();
    crm_refuses(&config, &id, &task_slot);
    let d = Device::open(config).unwrap();
    let open = |d: &Device| d.record(&id).unwrap().conflicts;
    assert!(
        open(&d)
            .iter()
            .any(|c| matches!(c, Conflict::Validation { slot, .. } if *slot == name)),
        "{:?}",
        open(&d)
    );
    assert!(d.is_refused_activity(&id, &note).unwrap());
    // The value fixed: its conflict goes.
    d.fix_refused_value(&id, &name, Value::Text("Acme GmbH".into()))
        .unwrap();
    assert!(
        !open(&d)
            .iter()
            .any(|c| matches!(c, Conflict::Validation { slot, .. } if *slot == name))
    );
    assert_eq!(
        d.record(&id).unwrap().record.fields.get(&key("name")),
        Some(&Value::Text("Acme GmbH".into()))
    );
    // The note's text fixed.
    d.fix_refused_note(&id, &note, "good text").unwrap();
    assert!(!d.is_refused_activity(&id, &note).unwrap());
    // The task retried as it is.
    assert!(d.is_refused_activity(&id, &task).unwrap());
    d.retry_refused(&id, &RefusalTarget::Activity(task.clone()))
        .unwrap();
    assert!(!d.is_refused_activity(&id, &task).unwrap());
    assert!(matches!(
        d.retry_refused(&id, &RefusalTarget::Activity(task)),
        Err(DeviceError::NoConflict { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolling_again_keeps_the_same_devices_records_and_moves_another_store_aside() {
    let dir = tempfile::tempdir().unwrap();
    let (config, d) = enrolled(dir.path());
    let id = deal(&d, "Acme");
    drop(d);
    let round = Duration::from_secs(5);
    // Without force: refused, the store untouched.
    match Device::enrol_with(config.clone(), enrolment("d", 2), false, round).await {
        Err(DeviceError::AlreadyEnrolled { .. }) => {}
        other => panic!("expected AlreadyEnrolled, got {other:?}"),
    }
    // The same device and user, forced: enrolled in place, records kept; the hub is not there.
    let mut moved = enrolment("d", 2);
    moved.hub_url = "ws://127.0.0.1:10/".into();
    let done = Device::enrol_with(config.clone(), moved, true, round)
        .await
        .unwrap();
    assert!(done.kept_aside.is_none());
    assert!(
        matches!(done.first_round, Err(DeviceError::Unreachable { .. })),
        "{:?}",
        done.first_round
    );
    assert_eq!(
        done.device.hub_url().unwrap().as_deref(),
        Some("ws://127.0.0.1:10/")
    );
    assert_eq!(done.device.hub_id().unwrap().as_str(), "hub");
    assert!(done.device.record(&id).is_ok());
    drop(done);
    // Another device's token, forced: the old store is kept aside whole, the new one is empty.
    let done = Device::enrol_with(config.clone(), enrolment("e", 3), true, round)
        .await
        .unwrap();
    let aside = done.kept_aside.clone().unwrap();
    assert!(
        aside
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("d.redb.replaced-"),
        "{aside:?}"
    );
    assert_eq!(done.device.id().unwrap().as_str(), "e");
    assert!(done.device.deals().unwrap().is_empty());
    drop(done);
    let old = Device::open(DeviceConfig::new(&aside)).unwrap();
    assert_eq!(old.id().unwrap().as_str(), "d");
    assert!(old.record(&id).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_hub_url_is_checked_and_dialed_and_lan_needs_a_grant() {
    let dir = tempfile::tempdir().unwrap();
    let (config, d) = enrolled(dir.path());
    let round = Duration::from_secs(5);
    match d.sync_hub_at("http://127.0.0.1:9/", round).await {
        Err(DeviceError::BadEnrolment { what, .. }) => assert_eq!(what, "hub_url"),
        other => panic!("expected BadEnrolment, got {other:?}"),
    }
    match d.sync_hub_at("ws://127.0.0.1:10/", round).await {
        Err(DeviceError::Unreachable { url, .. }) => assert_eq!(url, "ws://127.0.0.1:10/"),
        other => panic!("expected Unreachable, got {other:?}"),
    }
    // The enrolled URL stays.
    assert_eq!(d.hub_url().unwrap().as_deref(), Some(NOBODY));
    // No hub round yet: no LAN credential, so no LAN serving either.
    assert!(matches!(
        d.check_lan_credential(),
        Err(DeviceError::Auth { .. })
    ));
    drop(d);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let served = Device::serve_lan_leased(config, Duration::from_secs(1), listener, async {});
    assert!(
        matches!(served, Err(DeviceError::Auth { .. })),
        "expected Auth"
    );
}
