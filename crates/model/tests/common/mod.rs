//! Helpers shared by the model's integration tests.

#![allow(dead_code, unreachable_pub)]

use sellsync_model::*;

pub const T0: i64 = 1_790_000_000_000;

pub fn author(user: u64, device: &str) -> Author {
    Author {
        user: UserId(user),
        device: device.parse().unwrap(),
    }
}

pub fn key(s: &str) -> FieldKey {
    s.parse().unwrap()
}

pub fn slot(s: &str) -> Slot {
    s.parse().unwrap()
}

pub fn money(s: &str) -> Value {
    Value::Money(Money::parse(s).unwrap())
}

pub fn text(s: &str) -> Value {
    Value::Text(s.into())
}

pub struct World {
    pub catalog: Catalog,
    pub policy: Policy,
}

impl World {
    pub fn new() -> World {
        World {
            catalog: Catalog::example(),
            policy: Policy::default(),
        }
    }

    pub fn ctx<'a>(&'a self, author: &'a Author, now_ms: i64) -> EditCtx<'a> {
        EditCtx {
            author,
            now_ms,
            catalog: &self.catalog,
            policy: &self.policy,
        }
    }

    pub fn project(&self, doc: &RecordDoc) -> Projection {
        doc.project(&ProjectCtx {
            catalog: &self.catalog,
            policy: &self.policy,
            directory: &AssumeLive,
        })
    }

    pub fn project_with(&self, doc: &RecordDoc, directory: &dyn Directory) -> Projection {
        doc.project(&ProjectCtx {
            catalog: &self.catalog,
            policy: &self.policy,
            directory,
        })
    }

    /// A deal created on `device` with a name, value, currency, stage and owner.
    pub fn deal(&self, id: &str, creator: &Author, layout: RegisterLayout) -> RecordDoc {
        RecordDoc::create(
            RecordKind::Deal,
            id.parse().unwrap(),
            layout,
            &self.ctx(creator, T0),
            vec![
                (key("name"), text("Acme renewal")),
                (key("value"), money("1000")),
                (key("currency"), text("EUR")),
                (key("stage_id"), Value::Ref(12)),
                (key("owner_id"), Value::Ref(2)),
            ],
        )
        .unwrap()
    }
}

impl World {
    /// Two replicas of one freshly created deal, on the devices of `a` and `b`.
    pub fn two_replicas(&self, a: &Author, b: &Author) -> (RecordDoc, RecordDoc) {
        let base = self.deal("d1", &author(1, "hub"), RegisterLayout::Packed);
        (base.fork(&a.device), base.fork(&b.device))
    }
}

/// Both replicas take in each other's changes.
pub fn sync(a: &mut RecordDoc, b: &mut RecordDoc) {
    a.merge(b).unwrap();
    b.merge(a).unwrap();
}

pub fn json(p: &Projection) -> String {
    serde_json::to_string(p).unwrap()
}
