//! Zendesk Sell answers, whatever they hold: `sellsync_bridge::zendesk::response` reads any
//! status and body into a `CrmResponse` or a typed `CrmError`, and what it returns goes on
//! through the bridge's pull path as the hub's bridge does it (`mapping::record_image`,
//! `activity_image`, the catalog import, `pull::pull_new`, `pull_update`, `pull_activity`,
//! `pull_delete`, then the projection and push view), without a panic.
//!
//! Input: byte 0 picks the request answered (a table below), bytes 1-2 the status (big endian;
//! values past 599 fold onto 100..=599), the rest is the body. A committed seed is a real body
//! from the simulator behind a three-byte header.
//!
//! Oracles besides "no panic":
//! - a status outside 2xx is an error, of the kind its status names (429 rate limited, 5xx
//!   server, 422 validation, 401, 403, 404);
//! - a record the bridge pulls for the first time projects to the CRM's values: every field of
//!   its image that the model did not refuse is the projection's value, and its id, tags and
//!   name are those of the CRM's JSON.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sellsync_bridge::mapping::{self, CatalogPages, Image};
use sellsync_bridge::pull::{self, Shadow, WriteCtx};
use sellsync_bridge::zendesk::{HttpResponse, response};
use sellsync_bridge::{CrmError, CrmRequest, CrmResponse, Resource};
use std::collections::BTreeSet;

use sellsync_model::{
    ActivityKind, AssumeLive, Catalog, FieldKey, Policy, ProjectCtx, RecordDoc, RecordKind, Value,
};
use serde_json::{Map, Value as Json};

/// The time of every pull (unix ms).
const NOW_MS: i64 = 1_800_000_000_000;

const LISTED: [Resource; 12] = [
    Resource::Deal,
    Resource::Contact,
    Resource::Note,
    Resource::Task,
    Resource::Call,
    Resource::Pipeline,
    Resource::Stage,
    Resource::User,
    Resource::LossReason,
    Resource::DealSource,
    Resource::DealCustomFields,
    Resource::ContactCustomFields,
];

/// The request the answer is for. Lists of every resource, then one of each other request.
fn request(pick: u8) -> CrmRequest {
    let n = usize::from(pick) % (LISTED.len() + 8);
    if let Some(resource) = LISTED.get(n) {
        return CrmRequest::List {
            resource: *resource,
            page: 1,
            per_page: 100,
            filters: Vec::new(),
            sort_by: None,
        };
    }
    let resource = if pick & 0x80 == 0 {
        Resource::Deal
    } else {
        Resource::Contact
    };
    match n - LISTED.len() {
        0 => CrmRequest::Get { resource, id: 1 },
        1 => CrmRequest::Create {
            resource,
            body: Map::new(),
        },
        2 => CrmRequest::Update {
            resource,
            id: 1,
            body: Map::new(),
        },
        3 => CrmRequest::Delete { resource, id: 1 },
        4 => CrmRequest::CurrentUser,
        5 => CrmRequest::SyncStart { device: "d".into() },
        6 => CrmRequest::SyncFetch {
            device: "d".into(),
            session: "s".into(),
        },
        _ => CrmRequest::SyncAck {
            device: "d".into(),
            keys: vec!["k".into()],
        },
    }
}

fn resource_of(req: &CrmRequest) -> Option<Resource> {
    match req {
        CrmRequest::List { resource, .. }
        | CrmRequest::Get { resource, .. }
        | CrmRequest::Create { resource, .. }
        | CrmRequest::Update { resource, .. }
        | CrmRequest::Delete { resource, .. } => Some(*resource),
        CrmRequest::CurrentUser => Some(Resource::User),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let [pick, hi, lo, body @ ..] = data else {
        return;
    };
    let raw = u16::from_be_bytes([*hi, *lo]);
    let status = if raw < 600 { raw } else { 100 + raw % 500 };
    let req = request(*pick);
    let resp = HttpResponse {
        status,
        headers: Vec::new(),
        body: body.to_vec(),
    };
    let answer = response(&req, &resp);
    if !(200..300).contains(&status) {
        match &answer {
            Ok(r) => panic!("status {status} read as success: {r:?}"),
            Err(e) => {
                let right_kind = match status {
                    422 => matches!(e, CrmError::Validation { .. }),
                    401 => matches!(e, CrmError::Unauthorized(_)),
                    403 => matches!(e, CrmError::Forbidden(_)),
                    404 => matches!(e, CrmError::NotFound(_)),
                    429 => matches!(e, CrmError::RateLimited),
                    500..=599 => matches!(e, CrmError::Server { status: s, .. } if *s == status),
                    _ => matches!(e, CrmError::Request { status: s, .. } if *s == status),
                };
                assert!(right_kind, "status {status} read as {e:?}");
            }
        }
        return;
    }
    let Ok(answer) = answer else { return };
    let mut puller = Puller::new();
    match answer {
        CrmResponse::Page { items, .. } => {
            if let Some(resource) = resource_of(&req) {
                puller.catalog_import(resource, &items);
                for item in &items {
                    puller.apply(resource, item, false);
                }
            }
        }
        CrmResponse::One(item) => {
            if let Some(resource) = resource_of(&req) {
                puller.catalog_import(resource, std::slice::from_ref(&item));
                puller.apply(resource, &item, false);
            }
        }
        CrmResponse::SyncItems(items) => {
            for item in &items {
                if let Some(resource) = item.resource {
                    puller.apply(resource, &item.data, item.deleted);
                }
            }
        }
        CrmResponse::Deleted | CrmResponse::SyncSession(_) | CrmResponse::Acked => {}
    }
    puller.project();
});

/// The catalog import of one list, as `Engine::pull_catalog` reads it (each item typed).
fn typed<T: serde::de::DeserializeOwned>(items: &[Json]) -> Vec<T> {
    items
        .iter()
        .filter_map(|i| serde_json::from_value(i.clone()).ok())
        .collect()
}

/// The bridge's pull state for one answer: at most one record of each kind, pulled first as new,
/// then updated by the later versions of the same answer; activities go into the deal.
struct Puller {
    catalog: Catalog,
    policy: Policy,
    records: Vec<(RecordDoc, Shadow)>,
}

impl Puller {
    fn new() -> Puller {
        Puller {
            catalog: Catalog::example(),
            policy: Policy::default(),
            records: Vec::new(),
        }
    }

    fn catalog_import(&mut self, resource: Resource, items: &[Json]) {
        let mut pages = CatalogPages::default();
        match resource {
            Resource::Pipeline => pages.pipelines = typed(items),
            Resource::Stage => pages.stages = typed(items),
            Resource::User => pages.users = typed(items),
            Resource::LossReason => pages.loss_reasons = typed(items),
            Resource::DealSource => pages.sources = typed(items),
            Resource::DealCustomFields => pages.deal_fields = typed(items),
            Resource::ContactCustomFields => pages.contact_fields = typed(items),
            _ => return,
        }
        let imported = mapping::catalog_of(&pages);
        let _ = self.policy.check_against(&imported);
        // Records that follow are read against the imported catalog, as after a catalog pull.
        self.catalog = imported;
    }

    fn ctx(&self) -> WriteCtx<'_> {
        WriteCtx {
            now_ms: NOW_MS,
            catalog: &self.catalog,
            policy: &self.policy,
        }
    }

    fn apply(&mut self, resource: Resource, data: &Json, deleted: bool) {
        let record_kind = match resource {
            Resource::Deal => Some(RecordKind::Deal),
            Resource::Contact => Some(RecordKind::Contact),
            _ => None,
        };
        let activity_kind = match resource {
            Resource::Note => Some(ActivityKind::Note),
            Resource::Task => Some(ActivityKind::Task),
            Resource::Call => Some(ActivityKind::Call),
            _ => None,
        };
        if let Some(kind) = record_kind {
            self.apply_record(kind, data, deleted);
        } else if let Some(kind) = activity_kind {
            self.apply_activity(kind, data, deleted);
        }
    }

    fn apply_record(&mut self, kind: RecordKind, data: &Json, deleted: bool) {
        let existing = self.records.iter().position(|(_, s)| s.kind == kind);
        if deleted {
            if let Some(i) = existing {
                let ctx = WriteCtx {
                    now_ms: NOW_MS,
                    catalog: &self.catalog,
                    policy: &self.policy,
                };
                let (doc, shadow) = &mut self.records[i];
                let _ = pull::pull_delete(doc, shadow, &ctx);
            }
            return;
        }
        let Ok((crm_id, image)) = mapping::record_image(kind, data, &self.catalog) else {
            return;
        };
        match existing {
            None => {
                let Ok((doc, shadow, report)) =
                    pull::pull_new(kind, crm_id, image.clone(), &self.ctx())
                else {
                    return;
                };
                self.check_first_pull(&doc, data, &image, &report.refused);
                self.records.push((doc, shadow));
            }
            Some(i) => {
                let ctx = WriteCtx {
                    now_ms: NOW_MS,
                    catalog: &self.catalog,
                    policy: &self.policy,
                };
                let (doc, shadow) = &mut self.records[i];
                let _ = pull::pull_update(doc, shadow, image, &ctx);
                let _ = pull::retry_refused(doc, shadow, &ctx);
            }
        }
    }

    fn apply_activity(&mut self, kind: ActivityKind, data: &Json, deleted: bool) {
        let crm_id = data.get("id").and_then(Json::as_u64);
        let image = mapping::activity_image(kind, data);
        let Some(i) = self
            .records
            .iter()
            .position(|(_, s)| s.kind == RecordKind::Deal)
        else {
            return;
        };
        let ctx = WriteCtx {
            now_ms: NOW_MS,
            catalog: &self.catalog,
            policy: &self.policy,
        };
        let (doc, shadow) = &mut self.records[i];
        if deleted {
            if let Some(id) = crm_id {
                let _ = pull::pull_activity_delete(doc, shadow, id, &ctx);
            }
            return;
        }
        if let Ok((crm_id, _parent, image)) = image {
            let _ = pull::pull_activity(doc, shadow, kind, crm_id, image, &ctx);
        }
    }

    /// A record pulled for the first time holds what the CRM sent: every field of its image
    /// that was not refused; and, read from the CRM's JSON itself (so that a mapping that drops
    /// or alters them is caught too), its id, its tags and its name.
    fn check_first_pull(
        &self,
        doc: &RecordDoc,
        data: &Json,
        image: &Image,
        refused: &[(FieldKey, String)],
    ) {
        let ctx = ProjectCtx {
            catalog: &self.catalog,
            policy: &self.policy,
            directory: &AssumeLive,
        };
        let projection = doc.project(&ctx);
        for (key, value) in &image.fields {
            if refused.iter().any(|(k, _)| k == key) {
                continue;
            }
            assert_eq!(
                projection.record.fields.get(key),
                Some(value),
                "field {key} pulled from the CRM is not what the CRM sent"
            );
        }
        let sent_tags: BTreeSet<String> = data
            .get("tags")
            .and_then(Json::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Json::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(
            projection.record.tags, sent_tags,
            "the pulled tags are not the CRM's"
        );
        assert_eq!(
            projection.record.crm_id,
            data.get("id").and_then(Json::as_u64)
        );
        let name = FieldKey::std("name");
        if let Some(sent) = data.get("name").and_then(Json::as_str)
            && !refused.iter().any(|(k, _)| *k == name)
        {
            assert_eq!(
                projection.record.fields.get(&name),
                Some(&Value::Text(sent.to_owned())),
                "the pulled name is not the CRM's"
            );
        }
        let _ = doc.push_view(&projection);
    }

    fn project(&self) {
        let ctx = ProjectCtx {
            catalog: &self.catalog,
            policy: &self.policy,
            directory: &AssumeLive,
        };
        for (doc, _) in &self.records {
            let projection = doc.project(&ctx);
            let _ = doc.push_view(&projection);
        }
    }
}
