//! Documents arrive from the network: whatever a faulty or hostile peer wrote into one, loading
//! and projecting it never panics, and what is not a register is ignored rather than trusted.

mod common;

use automerge::transaction::Transactable;
use automerge::{ObjType, ROOT, ReadDoc};
use common::*;
use proptest::prelude::*;
use sellsync_model::*;

#[test]
fn a_document_with_wrong_shapes_everywhere_projects_without_panicking() {
    let w = World::new();
    let doc = w.deal("d1", &author(1, "hub"), RegisterLayout::Packed);
    let mut raw = doc.automerge().clone();
    raw.transact::<_, _, automerge::AutomergeError>(|tx| {
        let fields = tx.get(ROOT, "fields")?.unwrap().1;
        tx.put(&fields, "value", 12_i64)?; // not a packed register
        tx.put(&fields, "stage_id", "[\"x\", \"not a time\", 1, \"d\"]")?;
        let odd = tx.put_object(&fields, "owner_id", ObjType::List)?;
        tx.insert(&odd, 0, "?")?;
        tx.put(&fields, "nonsense_field", "[1, 2, 3, \"dev\"]")?;
        let acts = tx.get(ROOT, "activities")?.unwrap().1;
        let a = tx.put_object(&acts, "a1", ObjType::Map)?; // no kind
        tx.put(&a, "content", "plain string, not text")?;
        let b = tx.put_object(&acts, "a2", ObjType::Map)?;
        tx.put(&b, "kind", "task")?;
        tx.put(&b, "fields", "not a map")?;
        tx.put(&acts, "bad id!", "x")?;
        let audit = tx.get(ROOT, "audit")?.unwrap().1;
        tx.put(&audit, "e1", "{not json")?;
        let flags = tx.get(ROOT, "flags")?.unwrap().1;
        tx.put(&flags, "f1", "{\"kind\":\"nope\"}")?;
        tx.put(ROOT, "deleted", "maybe")?;
        tx.put(ROOT, "edits", "many")?;
        tx.put(ROOT, "crm_id", -5_i64)?;
        Ok(())
    })
    .unwrap();
    let hostile = RecordDoc::from_automerge(raw, &"phone".parse().unwrap()).unwrap();
    let p = w.project(&hostile);
    assert_eq!(
        p.record.fields.get(&key("name")),
        Some(&text("Acme renewal"))
    );
    assert!(
        !p.record.fields.contains_key(&key("value")),
        "a non-register is not a value"
    );
    assert!(p.record.fields.contains_key(&key("nonsense_field")));
    assert!(p.conflicts.iter().any(
        |c| matches!(c, Conflict::Validation { slot, .. } if slot.to_string() == "nonsense_field")
    ));
    assert_eq!(p.record.crm_id, None);
    assert_eq!(p.record.state, RecordState::Live);
    let _ = hostile.push_view(&p);
}

#[test]
fn documents_that_are_not_records_are_refused() {
    let mut raw = automerge::Automerge::new();
    raw.transact::<_, _, automerge::AutomergeError>(|tx| {
        tx.put(ROOT, "schema", 1_u64)?;
        tx.put(ROOT, "kind", "deal")?;
        tx.put(ROOT, "id", "d1")?;
        tx.put(ROOT, "layout", "packed")?;
        Ok(())
    })
    .unwrap();
    let err = RecordDoc::load(&raw.save(), &"x".parse().unwrap()).unwrap_err();
    assert_eq!(err.to_string(), "not a record document: missing map fields");
    assert!(raw.get(ROOT, "fields").unwrap().is_none());
}

proptest! {
    #[test]
    fn loading_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = RecordDoc::load(&bytes, &"x".parse().unwrap());
    }

    #[test]
    fn loading_a_damaged_document_never_panics(cut in 0usize..4096, flip in 0usize..4096, bit in 0u8..8) {
        let w = World::new();
        let doc = w.deal("d1", &author(1, "hub"), RegisterLayout::Packed);
        let mut bytes = doc.save();
        let n = bytes.len();
        bytes[flip % n] ^= 1 << bit;
        bytes.truncate(n - cut % n);
        if let Ok(d) = RecordDoc::load(&bytes, &"x".parse().unwrap()) {
            let _ = w.project(&d);
        }
    }
}
