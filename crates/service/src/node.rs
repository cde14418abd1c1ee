//! A node: its replica, and what it does with documents besides syncing them.

use std::sync::Arc;

use sellsync_model::{
    AssumeLive, Author, Catalog, CatalogDoc, Conflict, CrmReach, DeviceId, Edit, EditCtx,
    EditError, FieldKey, FlagKind, LoadError, Policy, ProjectCtx, Projection, RecordDoc, RecordId,
    RecordKind, RegisterLayout, UserId, Value,
};
use sellsync_store::{NodeIdentity, Role, Store, StoreError, StoreRead};

use crate::acl::Acl;
use crate::replica::{CATALOG_ID, StoreReplica};

/// What can go wrong on a node.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The store has no identity: run init first.
    #[error("this store has no node identity yet (initialise it first)")]
    NoIdentity,
    /// A document is not a record or catalog of ours.
    #[error("document {0}: {1}")]
    Load(RecordId, Box<LoadError>),
    /// No such record.
    #[error("no record {0}")]
    NoRecord(RecordId),
    /// The record already exists.
    #[error("record {0} already exists")]
    Exists(RecordId),
    /// An edit was refused.
    #[error(transparent)]
    Edit(#[from] Box<EditError>),
    /// A resolution or other action was refused.
    #[error("{0}")]
    Refused(String),
    /// Automerge failed while recording a resolution.
    #[error("document {0}: {1}")]
    Automerge(RecordId, Box<automerge::AutomergeError>),
}

/// A hub or device: its replica plus projection and edit helpers.
#[derive(Debug)]
pub struct Node {
    replica: StoreReplica,
    identity: NodeIdentity,
}

fn catalog_id() -> RecordId {
    // A constant valid id.
    CATALOG_ID.parse().expect("valid record id")
}

impl Node {
    /// Opens the node of an initialised store.
    ///
    /// A hub applies `acl` to every device (no file: nobody is an admin, everyone sees only
    /// their own records). A device given `acl` also refuses, on receipt, records its own user
    /// may not see; a device given none trusts its hub's filtering and keeps what it is sent.
    pub fn open(store: Arc<Store>, acl: Option<Acl>) -> Result<Node, NodeError> {
        let identity = store.read()?.identity()?.ok_or(NodeError::NoIdentity)?;
        let user = match (identity.role, &acl) {
            (Role::Device, Some(_)) => Some(identity.user_id),
            _ => None,
        };
        let replica = StoreReplica::new(
            store,
            identity.device_id.clone(),
            user,
            acl.unwrap_or_default(),
        );
        let mut node = Node { replica, identity };
        // Every change this node sends of its own goes out signed (see `crate::signed`).
        let (entry, hub) = match node.identity.role {
            Role::Hub => (crate::credential::HUB_KEY, true),
            _ => (crate::credential::DEVICE_KEY, false),
        };
        let key = crate::credential::load_or_create_key(&node.store(), entry)
            .map_err(|e| NodeError::Refused(format!("the node's signing key: {e}")))?;
        node.replica.set_signing(Some(key), hub);
        node.reload_catalog()?;
        Ok(node)
    }

    /// Writes a node identity into `store` (replacing any).
    pub fn init(store: &Store, identity: &NodeIdentity) -> Result<(), NodeError> {
        store.write(|w| w.set_identity(identity))?;
        Ok(())
    }

    /// The node's identity.
    pub fn identity(&self) -> &NodeIdentity {
        &self.identity
    }

    /// The replica, for sessions.
    pub fn replica(&mut self) -> &mut StoreReplica {
        &mut self.replica
    }

    /// The replica, read-only.
    pub fn replica_ref(&self) -> &StoreReplica {
        &self.replica
    }

    /// The store.
    pub fn store(&self) -> Arc<Store> {
        self.replica.store()
    }

    fn author(&self) -> Author {
        Author {
            user: self.identity.user_id,
            device: self.identity.device_id.clone(),
        }
    }

    /// Reads the catalog document into the replica (an empty catalog when there is none), and
    /// the hub's field policy it carries (the default tiers when it carries none). Returns
    /// whether the catalog or the policy differs from the one in use.
    ///
    /// A policy that does not parse here (written by a newer hub) leaves the policy in use as it
    /// was, with a warning: this node's projections may then differ from the hub's until it is
    /// upgraded.
    pub fn reload_catalog(&mut self) -> Result<bool, NodeError> {
        let id = catalog_id();
        let node = self.identity.device_id.clone();
        let bytes = self.replica.docs().with_doc(&id, |d| d.save())?;
        let (catalog, policy) = match bytes {
            None => (Catalog::default(), None),
            Some(b) => CatalogDoc::load(&b, &node)
                .and_then(|c| Ok((c.read()?, c.policy()?)))
                .map_err(|e| NodeError::Load(id, Box::new(e)))?,
        };
        let changed = catalog != *self.replica.catalog();
        self.replica.set_catalog(catalog);
        let before = self.replica.policy().clone();
        match policy.map(|p| (Policy::from_toml(&p.toml), p.version)) {
            None => self.replica.set_policy(Policy::default()),
            Some((Ok(policy), _)) => self.replica.set_policy(policy),
            Some((Err(e), version)) => {
                tracing::warn!(
                    "the hub's policy version {version} is unusable here ({e}); keeping the policy in use"
                );
            }
        }
        Ok(changed || *self.replica.policy() != before)
    }

    /// The version of the hub's policy in force (`None`: the default tiers, no file given).
    pub fn policy_version(&self) -> Result<Option<u64>, NodeError> {
        let id = catalog_id();
        let node = self.identity.device_id.clone();
        let bytes = self.replica.docs().with_doc(&id, |d| d.save())?;
        let Some(b) = bytes else { return Ok(None) };
        let policy = CatalogDoc::load(&b, &node)
            .and_then(|c| c.policy())
            .map_err(|e| NodeError::Load(id, Box::new(e)))?;
        Ok(policy.map(|p| p.version))
    }

    /// Makes `toml` the organisation's field policy (hub side), at `now_ms`: checked whole
    /// (unknown sections, fields, tiers, and custom fields the catalog does not define are
    /// errors, and change nothing), then written into the catalog document, which carries it to
    /// every device. Returns the policy's version (unchanged text keeps its version).
    pub fn write_policy(&mut self, toml: &str, now_ms: i64) -> Result<u64, NodeError> {
        let policy = Policy::from_toml(toml).map_err(|e| NodeError::Refused(e.to_string()))?;
        if self.replica.catalog().loaded {
            policy
                .check_against(self.replica.catalog())
                .map_err(|e| NodeError::Refused(e.to_string()))?;
        }
        let version = self.write_catalog_doc(now_ms, |cdoc, secs| cdoc.write_policy(toml, secs))?;
        // A new policy changes how every record projects: every view is rewritten.
        if self.reload_catalog()? {
            self.revalidate_all(now_ms)?;
        }
        Ok(version)
    }

    /// Writes `catalog` into the shared catalog document (hub side), at `now_ms`: only the
    /// entries that differ, and entries it no longer has are removed. When the catalog changed,
    /// every record is validated again (a value it no longer accepts is a validation conflict).
    pub fn write_catalog(&mut self, catalog: &Catalog, now_ms: i64) -> Result<(), NodeError> {
        self.write_catalog_doc(now_ms, |cdoc, secs| cdoc.write(catalog, secs))?;
        if self.reload_catalog()? {
            self.revalidate_all(now_ms)?;
        }
        Ok(())
    }

    /// Projects every record again (after the catalog changed), rewriting conflict views.
    fn revalidate_all(&mut self, now_ms: i64) -> Result<(), NodeError> {
        let ids: Vec<RecordId> = self.records()?.into_iter().map(|(id, _)| id).collect();
        self.refresh_records(&ids, now_ms)
    }

    /// Writes what the hub's bridge knows of the CRM's reachability into the catalog document,
    /// which every device receives (hub side). Returns whether it changed.
    pub fn write_crm_reach(&mut self, reach: &CrmReach, now_ms: i64) -> Result<bool, NodeError> {
        self.write_catalog_doc(now_ms, |cdoc, secs| cdoc.write_crm_reach(reach, secs))
    }

    /// Runs `write` on the shared catalog document (made if there is none yet) as this node, at
    /// `now_ms`, and keeps what it wrote. The hub is the only writer of this document.
    fn write_catalog_doc<R, E: std::fmt::Display>(
        &mut self,
        now_ms: i64,
        write: impl FnOnce(&mut CatalogDoc, i64) -> Result<R, E>,
    ) -> Result<R, NodeError> {
        let id = catalog_id();
        let node = self.identity.device_id.clone();
        let secs = now_ms.div_euclid(1000);
        let result = self.replica.docs().with_doc_mut(&id, "catalog", |doc| {
            let mut cdoc = if doc.get_heads().is_empty() {
                CatalogDoc::new(&node, secs)
            } else {
                CatalogDoc::load(&doc.save(), &node).map_err(|e| e.to_string())?
            };
            let out = write(&mut cdoc, secs).map_err(|e| e.to_string())?;
            doc.merge(cdoc.automerge_mut()).map_err(|e| e.to_string())?;
            Ok::<R, String>(out)
        })?;
        result.map_err(|e| NodeError::Load(id, Box::new(LoadError::NotARecord(e))))
    }

    /// What the hub last wrote of the CRM's reachability (`None` before it ever did).
    pub fn crm_reach(&self) -> Result<Option<CrmReach>, NodeError> {
        let id = catalog_id();
        let node = self.identity.device_id.clone();
        let Some(bytes) = self.replica.docs().with_doc(&id, |d| d.save())? else {
            return Ok(None);
        };
        let cdoc = CatalogDoc::load(&bytes, &node).map_err(|e| NodeError::Load(id, Box::new(e)))?;
        Ok(cdoc.crm_reach())
    }

    /// Runs `f` on a record document as this node, persists what it wrote and refreshes the
    /// record's views.
    fn with_record<R>(
        &mut self,
        id: &RecordId,
        now_ms: i64,
        f: impl FnOnce(&mut RecordDoc, &EditCtx<'_>) -> Result<R, NodeError>,
    ) -> Result<R, NodeError> {
        let kind = self
            .replica
            .docs()
            .kind(id)?
            .ok_or_else(|| NodeError::NoRecord(id.clone()))?;
        let author = self.author();
        let node = self.identity.device_id.clone();
        let catalog = self.replica.catalog().clone();
        let policy = self.replica.policy().clone();
        let out = self.replica.docs().with_doc_mut(id, &kind, |doc| {
            let taken = std::mem::take(doc);
            let mut rd = match RecordDoc::from_automerge(taken.clone(), &node) {
                Ok(rd) => rd,
                Err(e) => {
                    *doc = taken;
                    return Err(NodeError::Load(id.clone(), Box::new(e)));
                }
            };
            let ctx = EditCtx {
                author: &author,
                now_ms,
                catalog: &catalog,
                policy: &policy,
            };
            let out = f(&mut rd, &ctx);
            // Only a successful action is kept; a failed one leaves the document as it was.
            *doc = if out.is_ok() {
                std::mem::take(rd.automerge_mut())
            } else {
                taken
            };
            out
        })??;
        self.refresh(std::slice::from_ref(id), now_ms)?;
        Ok(out)
    }

    /// Creates a record with its initial fields. A device that acts for a user under access
    /// rules (from its hub's grant) refuses a record that user may not hold.
    pub fn create(
        &mut self,
        kind: RecordKind,
        id: &RecordId,
        fields: Vec<(FieldKey, Value)>,
        now_ms: i64,
    ) -> Result<(), NodeError> {
        if self.replica.docs().kind(id)?.is_some() {
            return Err(NodeError::Exists(id.clone()));
        }
        let author = self.author();
        let ctx = EditCtx {
            author: &author,
            now_ms,
            catalog: self.replica.catalog(),
            policy: self.replica.policy(),
        };
        let mut rd = RecordDoc::create(kind, id.clone(), RegisterLayout::Packed, &ctx, fields)
            .map_err(Box::new)?;
        // A device that knows its access rules (from its hub's grant) refuses at once a record
        // its user may not hold: the hub would refuse it at the next sync.
        if let Some(user) = self.replica.user()
            && !self.replica.visible_to(user, rd.automerge())
        {
            return Err(NodeError::Refused(format!(
                "user {user} may not hold this record: the hub's access rules let a user hold \
                 only records owned by themselves or their team (check owner_id)"
            )));
        }
        self.replica
            .docs()
            .with_doc_mut(id, kind.as_str(), |doc| doc.merge(rd.automerge_mut()))?
            .map_err(|e| NodeError::Automerge(id.clone(), Box::new(e)))?;
        self.refresh(std::slice::from_ref(id), now_ms)
    }

    /// Applies one user action to a record.
    pub fn apply(
        &mut self,
        id: &RecordId,
        message: &str,
        edits: &[Edit],
        now_ms: i64,
    ) -> Result<(), NodeError> {
        self.with_record(id, now_ms, |rd, ctx| {
            rd.apply(ctx, message, edits).map_err(Box::new)?;
            Ok(())
        })
    }

    /// Runs an arbitrary action (a resolution) on a record.
    pub fn act<R>(
        &mut self,
        id: &RecordId,
        now_ms: i64,
        f: impl FnOnce(&mut RecordDoc, &EditCtx<'_>) -> Result<R, NodeError>,
    ) -> Result<R, NodeError> {
        self.with_record(id, now_ms, f)
    }

    /// The hub said this node's user may no longer see `ids`: each held record keeps its
    /// content (the user's offline edits included) and gets a permission flag, shown as a
    /// permission conflict. The flag stays on this device: the hub no longer accepts the record
    /// from it.
    ///
    /// The same word comes for a record created here that the hub refused (its user may not
    /// hold it). A record already under a record-level permission conflict is left as it is,
    /// so a refusal repeated at every sync writes nothing more.
    pub fn access_revoked(&mut self, ids: &[RecordId], now_ms: i64) -> Result<(), NodeError> {
        for id in ids {
            if self.replica.docs().kind(id)?.is_none() || id.as_str() == CATALOG_ID {
                continue;
            }
            let flagged = self.project(id)?.is_some_and(|p| {
                p.conflicts
                    .iter()
                    .any(|c| matches!(c, Conflict::Permission { slot: None, .. }))
            });
            if flagged {
                continue;
            }
            self.with_record(id, now_ms, |rd, ctx| {
                rd.report_rejection(
                    ctx,
                    None,
                    FlagKind::Permission,
                    "the hub does not accept this record from this device: its user may not \
                     hold it (access revoked, or an owner this user may not assign), or the hub \
                     refused a change this device holds (the hub's log says which and why); it \
                     is kept here and no longer syncs",
                )
                .map_err(|e| NodeError::Refused(e.to_string()))
            })?;
        }
        Ok(())
    }

    /// Discards this device's copy of a record the hub does not take from it (a record-level
    /// permission conflict: access revoked, or a change it holds was refused): the record goes
    /// back to the heads the hub last vouched for to this device (its kept endorsement), or is
    /// removed when the hub never sent it, and the next hub round brings it up to date (its
    /// sync state with the hub starts afresh). What this device wrote in it since is dropped:
    /// the permission conflict showed it. Returns whether a copy was kept (`false`: removed).
    ///
    /// Errors: [`NodeError::Refused`] for a record without such a conflict (nothing changes).
    pub fn discard_local(&mut self, id: &RecordId, now_ms: i64) -> Result<bool, NodeError> {
        let flagged = self.project(id)?.is_some_and(|p| {
            p.conflicts
                .iter()
                .any(|c| matches!(c, Conflict::Permission { slot: None, .. }))
        });
        if !flagged {
            return Err(NodeError::Refused(format!(
                "{id} has no permission conflict: there is no copy of it to discard (resolve \
                 its conflicts instead)"
            )));
        }
        let Some(kind) = self.replica.docs().kind(id)? else {
            return Err(NodeError::Refused(format!("{id} is not held here")));
        };
        let store = self.store().clone();
        let vouched = store
            .read()?
            .kv_get(&format!("{}{id}", crate::signed::ENDORSED_KEY))?
            .and_then(|b| crate::signed::decode(&b).ok())
            .and_then(|p| {
                p.into_iter().find_map(|p| match p {
                    crate::signed::Proof::Hub { heads, .. } => Some(heads),
                    _ => None,
                })
            });
        // The hub's version: the document as of the vouched heads, if it holds them all.
        let rewound = match vouched {
            Some(heads) => self.replica.docs().with_doc(id, |d| {
                heads
                    .iter()
                    .all(|h| automerge::ReadDoc::get_change_by_hash(d, h).is_some())
                    .then(|| d.fork_at(&heads).ok().map(|f| f.save()))
                    .flatten()
            })?,
            None => None,
        }
        .flatten();
        let hub = self
            .identity
            .hub_token
            .as_deref()
            .and_then(|t| crate::token::parse(t).ok())
            .map(|e| e.hub);
        let kept = rewound.is_some();
        store.write(|w| {
            match &rewound {
                Some(snapshot) => {
                    w.put_doc_snapshot(id, &kind, snapshot)?;
                }
                None => {
                    w.remove_doc(id)?;
                }
            }
            if let Some(hub) = &hub {
                w.put_sync_state(hub, id, &automerge::sync::State::new().encode())?;
                if !kept {
                    // The hub announces its whole feed again, this record with it.
                    w.set_peer_theirs(hub, &[])?;
                }
            }
            Ok(())
        })?;
        self.replica.docs().evict(id);
        if kept {
            self.refresh(std::slice::from_ref(id), now_ms)?;
        }
        Ok(kept)
    }

    /// The projection of a record, or `None` if it is not held (or not a record).
    pub fn project(&mut self, id: &RecordId) -> Result<Option<Projection>, NodeError> {
        let node = self.identity.device_id.clone();
        let catalog = self.replica.catalog().clone();
        let policy = self.replica.policy().clone();
        let doc = self.replica.docs().with_doc(id, |d| d.clone())?;
        let Some(doc) = doc else { return Ok(None) };
        if crate::replica::root_kind(&doc).as_deref() == Some("catalog") {
            return Ok(None);
        }
        let rd = RecordDoc::from_automerge(doc, &node)
            .map_err(|e| NodeError::Load(id.clone(), Box::new(e)))?;
        Ok(Some(rd.project(&ProjectCtx {
            catalog: &catalog,
            policy: &policy,
            directory: &AssumeLive,
        })))
    }

    /// On a hub: counts one finished sync of `device` in this week's figures
    /// ([`crate::stats`]), as one with a conflict if a record it sent changes for (`touched`)
    /// is in conflict now, and notes the time as the device's last sync. Nothing on a device.
    pub fn count_sync(
        &mut self,
        device: &sellsync_model::DeviceId,
        touched: &[RecordId],
        now_ms: i64,
    ) -> Result<(), NodeError> {
        if self.identity.role != Role::Hub {
            return Ok(());
        }
        let key = format!(
            "{}{}",
            crate::stats::SYNCS_KEY,
            crate::stats::week_of(now_ms)
        );
        self.store().write(|w| {
            let mut counts = w
                .kv_get(&key)?
                .and_then(|b| crate::stats::SyncCounts::decode(&b))
                .unwrap_or_default();
            counts.syncs += 1;
            let mut met = false;
            for id in touched {
                if w.conflicts(id)?.is_some() {
                    met = true;
                    break;
                }
            }
            counts.with_conflicts += u64::from(met);
            w.kv_put(&key, &counts.encode())?;
            w.kv_put(
                &format!("{}{device}", crate::stats::LAST_SYNC_KEY),
                &now_ms.to_le_bytes(),
            )
        })?;
        Ok(())
    }

    /// The organisation's conflict figures from every record held here and the sync counts
    /// ([`crate::stats::compute`]).
    pub fn stats(&mut self) -> Result<crate::stats::Stats, NodeError> {
        let mut audits = Vec::new();
        let mut open = Vec::new();
        for (id, _) in self.records()? {
            if let Some(p) = self.project(&id)? {
                audits.extend(p.audit);
                open.extend(p.conflicts);
            }
        }
        let syncs = self
            .store()
            .read()?
            .kv_prefix(crate::stats::SYNCS_KEY)?
            .into_iter()
            .filter_map(|(k, v)| {
                let week = k.strip_prefix(crate::stats::SYNCS_KEY)?.to_owned();
                Some((week, crate::stats::SyncCounts::decode(&v)?))
            })
            .collect();
        let mut stats = crate::stats::compute(&audits, &open, &syncs);
        let users = &self.replica.catalog().users;
        for w in &mut stats.waiting {
            w.name = users.get(&w.user).map(|u| u.name.clone());
        }
        Ok(stats)
    }

    /// Every record id held, with its kind (the catalog excluded), in id order.
    pub fn records(&self) -> Result<Vec<(RecordId, String)>, NodeError> {
        let mut out: Vec<(RecordId, String)> = self
            .store()
            .read()?
            .changed_since(0, usize::MAX)?
            .into_iter()
            .filter(|e| e.kind != "catalog")
            .map(|e| (e.record, e.kind))
            .collect();
        out.sort();
        Ok(out)
    }

    /// After documents changed (received from a peer or edited here): reloads the catalog if it
    /// changed, records automatic resolutions in each record, and rewrites its conflicts view
    /// and new notifications. Notifications are stored once each (keyed by their stable id).
    /// When the catalog itself changed, every record is validated again against it.
    pub fn refresh(&mut self, ids: &[RecordId], now_ms: i64) -> Result<(), NodeError> {
        if ids.iter().any(|i| i.as_str() == CATALOG_ID) && self.reload_catalog()? {
            return self.revalidate_all(now_ms);
        }
        self.refresh_records(ids, now_ms)
    }

    fn refresh_records(&mut self, ids: &[RecordId], now_ms: i64) -> Result<(), NodeError> {
        let author = self.author();
        let node = self.identity.device_id.clone();
        let catalog = self.replica.catalog().clone();
        let policy = self.replica.policy().clone();
        let mut targets = Vec::new();
        for id in ids.iter().filter(|i| i.as_str() != CATALOG_ID) {
            if let Some(kind) = self.replica.docs().kind(id)? {
                targets.push((id, kind));
            }
        }
        if targets.is_empty() {
            return Ok(());
        }
        // One transaction for the whole set: one fsync however many documents changed.
        self.replica.docs().batch(|b| {
            for (id, kind) in &targets {
                // The document is handed over without a copy. One that is not a record is
                // handed back as `None`: nothing is written and the cache reloads it.
                let projection = b.with_doc_mut_owned(id, kind, |doc| {
                    let Ok(mut rd) = RecordDoc::from_automerge(doc, &node) else {
                        return (None, None);
                    };
                    let ctx = EditCtx {
                        author: &author,
                        now_ms,
                        catalog: &catalog,
                        policy: &policy,
                    };
                    // The audit write is one automerge transaction: if it fails, it is rolled
                    // back and the document is as it was; the view is still refreshed from the
                    // merged content.
                    let _ = rd.record_automatic_resolutions(&ctx);
                    let p = rd.project(&ProjectCtx {
                        catalog: &catalog,
                        policy: &policy,
                        directory: &AssumeLive,
                    });
                    (Some(std::mem::take(rd.automerge_mut())), Some(p))
                })?;
                let Some(p) = projection else { continue };
                let view = if p.conflicts.is_empty() {
                    None
                } else {
                    // Serialising plain data cannot fail.
                    Some(serde_json::to_vec(&p.conflicts).expect("conflicts serialise"))
                };
                let w = b.store();
                w.set_conflicts(id, view.as_deref())?;
                for n in &p.notifications {
                    let key = format!("service/notified/{}", n.id);
                    if w.kv_get(&key)?.is_none() {
                        let body = serde_json::to_vec(n).expect("notification serialises");
                        w.add_notification(n.to, now_ms, &body)?;
                        w.kv_put(&key, b"")?;
                    }
                }
            }
            Ok(())
        })?;
        Ok(())
    }

    /// This node's user.
    pub fn user(&self) -> UserId {
        self.identity.user_id
    }

    /// This node's id.
    pub fn id(&self) -> &DeviceId {
        &self.identity.device_id
    }
}
