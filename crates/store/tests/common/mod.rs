//! Helpers shared by the store's behaviour tests.
#![allow(dead_code, unreachable_pub)]

use automerge::transaction::Transactable;
use automerge::{Automerge, AutomergeError, ROOT, ReadDoc, ScalarValue, Value};
use sellsync_model::RecordId;

pub fn rid(s: &str) -> RecordId {
    s.parse().expect("valid record id")
}

/// Puts `key = value` (an i64) at the root in one change.
pub fn put_int(doc: &mut Automerge, key: &str, value: i64) {
    doc.transact::<_, _, AutomergeError>(|tx| tx.put(ROOT, key, value))
        .map_err(|f| f.error)
        .expect("put");
}

/// Reads an i64 at the root.
pub fn get_int(doc: &Automerge, key: &str) -> Option<i64> {
    match doc.get(ROOT, key).expect("get")? {
        (Value::Scalar(s), _) => match s.as_ref() {
            ScalarValue::Int(i) => Some(*i),
            _ => None,
        },
        _ => None,
    }
}

/// The changes of one `put_int` on `doc`, as `save_after` bytes.
pub fn change_bytes(doc: &mut Automerge, key: &str, value: i64) -> Vec<u8> {
    let heads = doc.get_heads();
    put_int(doc, key, value);
    doc.save_after(&heads)
}
