//! Registers: one field's value with who wrote it, when and from where.
//!
//! Invariant: a register is written whole, in one operation (packed layout) or as a fresh map
//! object (object layout), never updated in place, so that concurrent writes show up as several
//! whole registers under one key and can never tear (automerge notes, section 4 a2).

use std::cmp::Ordering;

use automerge::transaction::Transactable;
use automerge::{ObjId, ObjType, ReadDoc};
use serde::{Deserialize, Serialize};

use crate::value::Scalar;
use crate::{DeviceId, UserId};

/// How registers are stored in a document. Fixed at the document's birth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegisterLayout {
    /// One string scalar per write: `[value, at, by, device]` as JSON. One operation per write.
    Packed,
    /// A fresh map object per write with keys `v`, `at`, `by`, `dev`. Five operations per write.
    Object,
}

impl RegisterLayout {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RegisterLayout::Packed => "packed",
            RegisterLayout::Object => "object",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<RegisterLayout> {
        match s {
            "packed" => Some(RegisterLayout::Packed),
            "object" => Some(RegisterLayout::Object),
            _ => None,
        }
    }
}

/// What one write stored: the value, the hybrid-clock time, the user and the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredRegister {
    pub(crate) value: Scalar,
    /// Hybrid logical clock, milliseconds since the Unix epoch.
    pub(crate) at: i64,
    pub(crate) by: UserId,
    pub(crate) device: DeviceId,
}

/// A register as found in the document, with the id of the operation that wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    pub(crate) reg: StoredRegister,
    pub(crate) op: ObjId,
}

impl Found {
    /// The total order used to pick the latest write: clock, then user, then op id. The same on
    /// every replica, whatever the order in which changes arrived.
    pub(crate) fn lww_cmp(&self, other: &Found) -> Ordering {
        (self.reg.at, self.reg.by, &self.op).cmp(&(other.reg.at, other.reg.by, &other.op))
    }
}

pub(crate) fn write<T: Transactable>(
    tx: &mut T,
    layout: RegisterLayout,
    map: &ObjId,
    key: &str,
    reg: &StoredRegister,
) -> Result<(), automerge::AutomergeError> {
    match layout {
        RegisterLayout::Packed => {
            let packed =
                serde_json::json!([reg.value.to_json(), reg.at, reg.by.0, reg.device.as_str()]);
            tx.put(map, key, packed.to_string())
        }
        RegisterLayout::Object => {
            let obj = tx.put_object(map, key, ObjType::Map)?;
            tx.put(&obj, "v", reg.value.to_automerge())?;
            tx.put(&obj, "at", reg.at)?;
            tx.put(&obj, "by", reg.by.0)?;
            tx.put(&obj, "dev", reg.device.as_str())
        }
    }
}

/// Every register visible under `key`, sorted by [`Found::lww_cmp`] (the winner last). Entries
/// that are not registers (a faulty peer's write) are skipped: they carry no author to show.
pub(crate) fn read_all<D: ReadDoc>(doc: &D, map: &ObjId, key: &str) -> Vec<Found> {
    let mut found: Vec<Found> = doc
        .get_all(map, key)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(value, op)| {
            let reg = match value {
                automerge::Value::Scalar(s) => unpack(s.as_str()?)?,
                automerge::Value::Object(ObjType::Map) => read_object(doc, &op)?,
                automerge::Value::Object(_) => return None,
            };
            Some(Found { reg, op })
        })
        .collect();
    found.sort_by(Found::lww_cmp);
    found
}

pub(crate) fn unpack(s: &str) -> Option<StoredRegister> {
    let parts: (serde_json::Value, i64, u64, String) = serde_json::from_str(s).ok()?;
    Some(StoredRegister {
        value: Scalar::from_json(&parts.0)?,
        at: parts.1,
        by: UserId(parts.2),
        device: parts.3.parse().ok()?,
    })
}

pub(crate) fn read_object<D: ReadDoc>(doc: &D, obj: &ObjId) -> Option<StoredRegister> {
    let scalar = |key: &str| -> Option<automerge::ScalarValue> {
        match doc.get(obj, key).ok()?? {
            (automerge::Value::Scalar(s), _) => Some(s.into_owned()),
            _ => None,
        }
    };
    Some(StoredRegister {
        value: Scalar::from_automerge(&scalar("v")?)?,
        at: scalar("at")?.as_i64()?,
        by: UserId(scalar("by")?.as_u64()?),
        device: scalar("dev")?.as_str()?.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::{Automerge, ROOT};

    fn reg(v: &str, at: i64, by: u64, dev: &str) -> StoredRegister {
        StoredRegister {
            value: Scalar::Str(v.into()),
            at,
            by: UserId(by),
            device: dev.parse().unwrap(),
        }
    }

    #[test]
    fn concurrent_writes_stay_whole_in_both_layouts() {
        for layout in [RegisterLayout::Packed, RegisterLayout::Object] {
            let mut base = Automerge::new();
            base.transact::<_, _, automerge::AutomergeError>(|tx| {
                write(tx, layout, &ROOT, "k", &reg("base", 1, 1, "d0"))
            })
            .unwrap();
            let mut a = base.fork();
            let mut b = base.fork();
            a.transact::<_, _, automerge::AutomergeError>(|tx| {
                write(tx, layout, &ROOT, "k", &reg("alice", 2000, 1, "da"))
            })
            .unwrap();
            b.transact::<_, _, automerge::AutomergeError>(|tx| {
                write(tx, layout, &ROOT, "k", &reg("bob", 1000, 2, "db"))
            })
            .unwrap();
            a.merge(&mut b).unwrap();
            let all = read_all(&a, &ROOT, "k");
            assert_eq!(all.len(), 2, "{layout:?}");
            assert_eq!(all[0].reg, reg("bob", 1000, 2, "db"));
            assert_eq!(all[1].reg, reg("alice", 2000, 1, "da"));
        }
    }

    #[test]
    fn a_non_register_value_is_skipped() {
        let mut doc = Automerge::new();
        doc.transact::<_, _, automerge::AutomergeError>(|tx| tx.put(&ROOT, "k", "not json"))
            .unwrap();
        assert!(read_all(&doc, &ROOT, "k").is_empty());
    }
}
