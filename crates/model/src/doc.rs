//! The record document: one Automerge document per deal or contact.
//!
//! Layout (schema version 1, see docs/document-format.md):
//!
//! ```text
//! ROOT
//!   schema: 1            kind: "deal" | "contact"      id: <RecordId>      layout: "packed" | "object"
//!   edits: Counter       one increment per user action that changes the record
//!   crm_id: Int          the CRM's id, once known (written by the bridge only)
//!   deleted: register    Int(edits seen by the deleter) = deleted; Null = restored
//!   fields:  { <std field>: register }
//!   custom:  { <custom field>: register }
//!   tags:    { <tag>: register(true) }          present = tagged (add wins over a concurrent remove)
//!   activities: { <ActivityId>: { kind, born: register(kind), crm_id?, deleted?: register,
//!                                 fields: { <field>: register }, content?: Text } }
//!   audit:   { <entry id>: json }               resolutions, automatic and manual
//!   flags:   { <flag key>: json }               rejections reported by the CRM (validation, permission)
//! ```

use std::collections::BTreeMap;
use std::fmt;

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ActorId, Automerge, ChangeHash, ObjId, ObjType, ROOT, ReadDoc};
use serde::{Deserialize, Serialize};

use crate::register::{RegisterLayout, StoredRegister};
use crate::schema::{ActivityKind, FieldKey, RecordKind};
use crate::value::Scalar;
use crate::{ActivityId, DeviceId, RecordId, UserId};

/// The document schema version this code writes and reads.
pub const SCHEMA_VERSION: u64 = 1;

/// Who makes a change: a user on a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Author {
    /// The CRM user.
    pub user: UserId,
    /// The device, also the Automerge actor of the change.
    pub device: DeviceId,
}

/// Where a register lives: on the record itself, or on one of its activities.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// A field of the record.
    Record,
    /// A field of an activity inside the record.
    Activity {
        /// The activity.
        id: ActivityId,
        /// Its kind.
        kind: ActivityKind,
    },
}

/// A register field's address within a record: `value`, `custom_fields.Region`, or
/// `<activity id>.completed`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Slot {
    /// The activity, for an activity's field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activity: Option<ActivityId>,
    /// The field.
    pub field: FieldKey,
}

impl Slot {
    /// A field of the record.
    pub fn record(field: FieldKey) -> Slot {
        Slot {
            activity: None,
            field,
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.activity {
            Some(a) => write!(f, "{a}.{}", self.field),
            None => write!(f, "{}", self.field),
        }
    }
}

impl std::str::FromStr for Slot {
    type Err = String;
    /// `value`, `custom_fields.Region`, or `<activity id>.<field>` (an activity id never
    /// contains a dot, so the first dot splits it, except in `custom_fields.*` and `address.*`).
    fn from_str(s: &str) -> Result<Slot, String> {
        if s.starts_with(crate::schema::CUSTOM_PREFIX)
            || s.starts_with("address.")
            || !s.contains('.')
        {
            return Ok(Slot::record(s.parse()?));
        }
        let (head, rest) = s.split_once('.').ok_or("bad field")?;
        Ok(Slot {
            activity: Some(head.parse().map_err(|e| format!("{e}"))?),
            field: rest.parse()?,
        })
    }
}

/// A document that could not be opened as a record.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The bytes are not an Automerge document.
    #[error("not an automerge document: {0}")]
    Automerge(#[from] automerge::AutomergeError),
    /// Automerge failed on the bytes (an upstream bug on malformed input).
    #[error(transparent)]
    Panicked(#[from] crate::AutomergePanic),
    /// Written by another schema version.
    #[error(
        "document schema version {found} is not supported (this build reads version {supported})"
    )]
    Schema {
        /// The version found in the document (0 if none).
        found: u64,
        /// The version this build supports.
        supported: u64,
    },
    /// An Automerge document, but not a record of ours.
    #[error("not a record document: {0}")]
    NotARecord(String),
}

/// The objects every record document has from birth; their ids never change.
#[derive(Debug, Clone)]
pub(crate) struct Objs {
    pub(crate) fields: ObjId,
    pub(crate) custom: ObjId,
    pub(crate) tags: ObjId,
    pub(crate) activities: ObjId,
    pub(crate) audit: ObjId,
    pub(crate) flags: ObjId,
}

const MAPS: [&str; 6] = ["fields", "custom", "tags", "activities", "audit", "flags"];

/// One deal's or contact's document.
#[derive(Debug)]
pub struct RecordDoc {
    pub(crate) doc: Automerge,
    pub(crate) id: RecordId,
    pub(crate) kind: RecordKind,
    pub(crate) layout: RegisterLayout,
    pub(crate) objs: Objs,
}

pub(crate) fn actor_of(device: &DeviceId) -> ActorId {
    ActorId::from(device.as_str().as_bytes())
}

pub(crate) fn commit_options(message: &str, now_ms: i64) -> CommitOptions {
    // Change timestamps are seconds by convention (automerge notes 1.4).
    CommitOptions::default()
        .with_message(message)
        .with_time(now_ms.div_euclid(1000))
}

impl RecordDoc {
    /// A new, empty record document: the birth change that every replica shares. Fields are
    /// written by a following edit, so that they are validated like any other.
    pub fn birth(
        kind: RecordKind,
        id: RecordId,
        layout: RegisterLayout,
        author: &Author,
        now_ms: i64,
    ) -> RecordDoc {
        let mut doc = Automerge::new().with_actor(actor_of(&author.device));
        let message = format!("{kind} {id}: created");
        let result = doc.transact_with::<_, _, automerge::AutomergeError, _>(
            |_| commit_options(&message, now_ms),
            |tx| {
                tx.put(ROOT, "schema", SCHEMA_VERSION)?;
                tx.put(ROOT, "kind", kind.as_str())?;
                tx.put(ROOT, "id", id.as_str())?;
                tx.put(ROOT, "layout", layout.as_str())?;
                tx.put(ROOT, "edits", automerge::ScalarValue::counter(0))?;
                for name in MAPS {
                    tx.put_object(ROOT, name, ObjType::Map)?;
                }
                Ok(())
            },
        );
        // Writing fresh keys into a new, empty document cannot fail.
        debug_assert!(result.is_ok());
        // The maps were just created, so they are found.
        let objs = find_objs(&doc).unwrap_or_else(|_| unreachable_objs());
        RecordDoc {
            doc,
            id,
            kind,
            layout,
            objs,
        }
    }

    /// Opens a saved document; `device` becomes the actor of this replica's changes.
    pub fn load(bytes: &[u8], device: &DeviceId) -> Result<RecordDoc, LoadError> {
        let doc = crate::guarded(|| Automerge::load(bytes))??;
        RecordDoc::from_automerge(doc, device)
    }

    /// Wraps a document received by sync or loaded elsewhere, after checking its shape.
    pub fn from_automerge(doc: Automerge, device: &DeviceId) -> Result<RecordDoc, LoadError> {
        let doc = doc.with_actor(actor_of(device));
        let scalar = |key: &str| -> Result<Option<automerge::ScalarValue>, LoadError> {
            Ok(match doc.get(ROOT, key)? {
                Some((automerge::Value::Scalar(s), _)) => Some(s.into_owned()),
                _ => None,
            })
        };
        let schema = scalar("schema")?.and_then(|s| s.as_u64()).unwrap_or(0);
        if schema != SCHEMA_VERSION {
            return Err(LoadError::Schema {
                found: schema,
                supported: SCHEMA_VERSION,
            });
        }
        let text = |key: &str| -> Result<String, LoadError> {
            scalar(key)?
                .and_then(|s| s.as_str().map(str::to_owned))
                .ok_or_else(|| LoadError::NotARecord(format!("missing {key}")))
        };
        let kind: RecordKind = text("kind")?.parse().map_err(LoadError::NotARecord)?;
        let id: RecordId = text("id")?
            .parse()
            .map_err(|e: crate::BadId| LoadError::NotARecord(e.to_string()))?;
        let layout = RegisterLayout::parse(&text("layout")?)
            .ok_or_else(|| LoadError::NotARecord("unknown register layout".into()))?;
        let objs = find_objs(&doc)?;
        Ok(RecordDoc {
            doc,
            id,
            kind,
            layout,
            objs,
        })
    }

    /// The record's local id.
    pub fn id(&self) -> &RecordId {
        &self.id
    }

    /// The record's kind.
    pub fn kind(&self) -> RecordKind {
        self.kind
    }

    /// How this document stores registers.
    pub fn layout(&self) -> RegisterLayout {
        self.layout
    }

    /// The CRM's id for the record, once the bridge has recorded it.
    pub fn crm_id(&self) -> Option<u64> {
        match self.doc.get(ROOT, "crm_id").ok()?? {
            (automerge::Value::Scalar(s), _) => s.as_u64(),
            _ => None,
        }
    }

    /// The current heads.
    pub fn heads(&self) -> Vec<ChangeHash> {
        self.doc.get_heads()
    }

    /// The whole document, compressed.
    pub fn save(&self) -> Vec<u8> {
        self.doc.save()
    }

    /// The underlying document (for sync and storage).
    pub fn automerge(&self) -> &Automerge {
        &self.doc
    }

    /// The underlying document, mutably, for receiving sync messages. The caller must not write
    /// to it directly: every write goes through [`RecordDoc::apply`] and the resolution methods.
    pub fn automerge_mut(&mut self) -> &mut Automerge {
        &mut self.doc
    }

    /// A replica of this document for another device.
    pub fn fork(&self, device: &DeviceId) -> RecordDoc {
        RecordDoc {
            doc: self.doc.fork().with_actor(actor_of(device)),
            id: self.id.clone(),
            kind: self.kind,
            layout: self.layout,
            objs: self.objs.clone(),
        }
    }

    /// A replica of this document as it was at `heads`, writing as `device`. Changes made on it
    /// are concurrent with every change not reachable from `heads`; merging it back brings them
    /// together. The caller must make sure `device` has no change outside `heads` in this
    /// document, or a change made on the fork would reuse a sequence number.
    pub fn fork_at(
        &self,
        heads: &[ChangeHash],
        device: &DeviceId,
    ) -> Result<RecordDoc, automerge::AutomergeError> {
        Ok(RecordDoc {
            doc: self.doc.fork_at(heads)?.with_actor(actor_of(device)),
            id: self.id.clone(),
            kind: self.kind,
            layout: self.layout,
            objs: self.objs.clone(),
        })
    }

    /// Takes in every change `other` has that this replica lacks.
    pub fn merge(&mut self, other: &mut RecordDoc) -> Result<(), automerge::AutomergeError> {
        self.doc.merge(&mut other.doc).map(|_| ())
    }

    pub(crate) fn stored(&self, value: Scalar, at: i64, author: &Author) -> StoredRegister {
        StoredRegister {
            value,
            at,
            by: author.user,
            device: author.device.clone(),
        }
    }
}

/// The string held by a map entry, if it is a string.
pub(crate) fn str_of<'a>(v: &'a automerge::ValueRef<'_>) -> Option<&'a str> {
    match v {
        automerge::ValueRef::Scalar(automerge::ScalarValueRef::Str(s)) => Some(s),
        _ => None,
    }
}

pub(crate) fn map_at<D: ReadDoc>(doc: &D, obj: &ObjId, key: &str) -> Option<ObjId> {
    match doc.get(obj, key).ok()?? {
        (automerge::Value::Object(ObjType::Map), id) => Some(id),
        _ => None,
    }
}

pub(crate) fn text_at<D: ReadDoc>(doc: &D, obj: &ObjId, key: &str) -> Option<ObjId> {
    match doc.get(obj, key).ok()?? {
        (automerge::Value::Object(ObjType::Text), id) => Some(id),
        _ => None,
    }
}

fn find_objs(doc: &Automerge) -> Result<Objs, LoadError> {
    let mut found: BTreeMap<&str, ObjId> = BTreeMap::new();
    for name in MAPS {
        let id = map_at(doc, &ROOT, name)
            .ok_or_else(|| LoadError::NotARecord(format!("missing map {name}")))?;
        found.insert(name, id);
    }
    let mut take = |n: &str| found.remove(n).unwrap_or(ROOT);
    Ok(Objs {
        fields: take("fields"),
        custom: take("custom"),
        tags: take("tags"),
        activities: take("activities"),
        audit: take("audit"),
        flags: take("flags"),
    })
}

fn unreachable_objs() -> Objs {
    Objs {
        fields: ROOT,
        custom: ROOT,
        tags: ROOT,
        activities: ROOT,
        audit: ROOT,
        flags: ROOT,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn author(d: &str) -> Author {
        Author {
            user: UserId(2),
            device: d.parse().unwrap(),
        }
    }

    #[test]
    fn a_born_document_loads_back() {
        let doc = RecordDoc::birth(
            RecordKind::Deal,
            "d1".parse().unwrap(),
            RegisterLayout::Packed,
            &author("phone"),
            1_700_000_000_000,
        );
        let back = RecordDoc::load(&doc.save(), &"laptop".parse().unwrap()).unwrap();
        assert_eq!(back.id().as_str(), "d1");
        assert_eq!(back.kind(), RecordKind::Deal);
        assert_eq!(back.crm_id(), None);
    }

    #[test]
    fn other_documents_and_versions_are_refused() {
        let mut other = Automerge::new();
        other
            .transact::<_, _, automerge::AutomergeError>(|tx| tx.put(ROOT, "schema", 9_u64))
            .unwrap();
        let err = RecordDoc::load(&other.save(), &"x".parse().unwrap()).unwrap_err();
        assert!(
            matches!(
                err,
                LoadError::Schema {
                    found: 9,
                    supported: 1
                }
            ),
            "{err}"
        );
        assert!(RecordDoc::load(b"\x85oops", &"x".parse().unwrap()).is_err());
    }

    #[test]
    fn slots_parse_record_custom_address_and_activity_fields() {
        assert_eq!(
            "value".parse::<Slot>().unwrap(),
            Slot::record(FieldKey::std("value"))
        );
        assert_eq!(
            "custom_fields.A.b".parse::<Slot>().unwrap(),
            Slot::record(FieldKey::custom("A.b"))
        );
        assert_eq!(
            "address.city".parse::<Slot>().unwrap(),
            Slot::record(FieldKey::std("address.city"))
        );
        let s: Slot = "t1.completed".parse().unwrap();
        assert_eq!(s.activity.as_ref().unwrap().as_str(), "t1");
        assert_eq!(s.to_string(), "t1.completed");
    }
}
