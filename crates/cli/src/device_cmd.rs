//! `sellsync device`: a rep's device: enrol with a hub, sync, read and edit records.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use sellsync_model::{
    ActivityId, Choice, Chosen, Conflict, Edit, FieldKey, Projection, RecordChoice, RecordId,
    RecordKind, RefusalTarget, Slot, UserId, Value, parse_input,
};
use sellsync_model::{CrmReach, DeviceId};
use sellsync_service::net::{self, NetConfig, Outcome, SharedNode};
use sellsync_service::{Node, NodeError, credential, token};
use sellsync_store::{
    NodeIdentity, NotificationFilter, Role as StoreRole, Store, StoreError, StoreRead,
};
use sellsync_sync::{CloseReason, ErrorCode, Limits, Session};

use crate::show;
use serde_json::json;

/// A device's commands.
#[derive(Debug, Args)]
pub(crate) struct DeviceArgs {
    /// The device's store file.
    #[arg(long)]
    store: PathBuf,
    #[command(subcommand)]
    cmd: DeviceCmd,
}

impl DeviceArgs {
    /// Whether the command runs until stopped (and logs what it serves).
    pub(crate) fn serves(&self) -> bool {
        matches!(self.cmd, DeviceCmd::Serve { .. })
    }
}

#[derive(Debug, Subcommand)]
enum DeviceCmd {
    /// Enrol this store with a hub (the token printed by `sellsync hub token`).
    Init {
        /// The hub's URL, e.g. ws://10.0.0.5:7070/
        #[arg(long)]
        hub: String,
        /// The enrollment token.
        #[arg(long)]
        token: String,
        /// The certificate (PEM) to trust for a wss:// hub: the hub's own, or its authority's.
        /// Its content is kept in the store.
        #[arg(long)]
        ca: Option<PathBuf>,
        /// Enrol again a store that is already initialised (or damaged): same device and user
        /// keep their records; anything else moves the old file aside first.
        #[arg(long)]
        force: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One sync round with the hub (or with a LAN peer): prints what moved, exits.
    Sync {
        /// Sync with this LAN peer (a device running `serve`, e.g. wss://10.0.0.7:7071/)
        /// instead of the hub. Needs one sync with the hub first (for the peer credential).
        #[arg(long)]
        peer: Option<String>,
        /// The LAN peer's device id, if known: any other device answering is refused.
        #[arg(long, requires = "peer")]
        peer_id: Option<String>,
        /// The hub's URL for this sync, when it moved (default: the URL given at init).
        #[arg(long, conflicts_with = "peer")]
        hub: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Accept LAN peers until ctrl-c (each presents a credential from the same hub).
    Serve {
        /// Address to listen on, e.g. 0.0.0.0:7071 (port 0: any free port, printed at start).
        #[arg(long)]
        listen: String,
    },
    /// List the deals held.
    Deals {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the contacts held.
    Contacts {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The catalog the hub shared: stages, users, sources, loss reasons, custom fields.
    Catalog {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one record as projected (fields, conflicts, notifications, audit).
    Show {
        /// The record id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create a deal: FIELD=VALUE pairs (name required, as in Zendesk Sell; owner_id defaults
    /// to this device's user). Prints the new id.
    CreateDeal {
        /// The record id (default: generated).
        #[arg(long)]
        id: Option<String>,
        /// FIELD=VALUE pairs.
        fields: Vec<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Set fields of a record: FIELD=VALUE pairs (an empty value clears the field).
    Set {
        /// The record id.
        id: String,
        /// FIELD=VALUE pairs.
        #[arg(required = true)]
        fields: Vec<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Add a note to a record.
    Note {
        /// The record id.
        id: String,
        /// The note's text.
        text: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Add (+TAG) or remove (-TAG) tags.
    Tag {
        /// The record id.
        id: String,
        /// +TAG or -TAG, several allowed.
        #[arg(required = true, allow_hyphen_values = true)]
        tags: Vec<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a record.
    Delete {
        /// The record id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List open conflicts of every record.
    Conflicts {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Settle a conflict: a field conflict (--mine, --theirs, --pick, --value), a record
    /// conflict (--restore, --confirm-delete), or what the CRM refused (--value fixes it,
    /// --discard deletes a refused note, task or call, --retry sends it again as it is).
    Resolve {
        /// The record id.
        id: String,
        /// The field (e.g. value, custom_fields.Region, <activity id>.completed) or a note, task
        /// or call id; none for the record itself.
        field: Option<String>,
        /// Keep the value written on this device.
        #[arg(long, group = "choice")]
        mine: bool,
        /// Keep the other value.
        #[arg(long, group = "choice")]
        theirs: bool,
        /// Keep candidate N (1-based, as listed by `conflicts`).
        #[arg(long, group = "choice")]
        pick: Option<usize>,
        /// Write a new value (for a refused note: its new text).
        #[arg(long, group = "choice")]
        value: Option<String>,
        /// Keep a record deleted while others edited it, with their edits; the bridge creates
        /// it again in the CRM with its notes and tasks.
        #[arg(long, group = "choice")]
        restore: bool,
        /// Delete a record deleted while others edited it, discarding their edits.
        #[arg(long, group = "choice")]
        confirm_delete: bool,
        /// Delete a note, task or call the CRM refused.
        #[arg(long, group = "choice")]
        discard: bool,
        /// Send what the CRM refused again, as it is.
        #[arg(long, group = "choice")]
        retry: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The audit trail of a record.
    Audit {
        /// The record id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Notifications for this device's user.
    Notifications {
        /// Only those not dismissed yet.
        #[arg(long)]
        unread: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Mark a notification read (its id, as listed by `notifications`).
    Dismiss {
        /// The notification id.
        id: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Opens an initialised device store. A missing file is refused (nothing is created); a
/// damaged one is refused once, here, with the way to rebuild it from the hub.
fn open_node(path: &Path) -> Result<Node> {
    let store = Arc::new(open_store(path)?);
    if store.was_repaired() {
        eprintln!(
            "warning: {} was damaged and has been repaired; its latest changes may be gone: \
             sync with the hub",
            path.display()
        );
    }
    let mut node = match Node::open(store, None) {
        Err(NodeError::NoIdentity) => bail!(
            "{} is not enrolled with a hub yet: run `sellsync device --store {} init --hub URL \
             --token TOKEN`",
            path.display(),
            path.display()
        ),
        other => other?,
    };
    if node.identity().role != StoreRole::Device {
        bail!("{} is a hub's store, not a device's", path.display());
    }
    // The access rules and peer credential of the latest grant, if the hub handed one. A grant
    // that no longer verifies leaves the device as before its first grant (no LAN peers) until
    // the next hub sync replaces it; every other command still works.
    if let Err(e) = credential::enable_peer_auth(&mut node) {
        eprintln!("warning: the stored grant is unusable ({e}); sync with the hub to renew it");
    }
    Ok(node)
}

/// [`Store::open_existing`], with a damaged store's error saying how to rebuild it.
/// How long a command waits for the store while another process holds it (a serving device
/// holds it only during each LAN session).
const STORE_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

fn open_store(path: &Path) -> Result<Store> {
    Store::open_existing_waiting(path, STORE_WAIT).map_err(|e| match e {
        StoreError::Damaged { .. } => anyhow!(
            "{e}; restore it from the hub: `sellsync device --store {} init --force --hub URL \
             --token TOKEN` keeps the damaged file aside and enrols a fresh store, then `sync` \
             brings its records back (see docs/cli.md, \"A damaged store\")",
            path.display()
        ),
        other => anyhow::Error::new(other),
    })
}

fn record_id(s: &str) -> Result<RecordId> {
    s.parse().map_err(|e| anyhow!("record id {s:?}: {e}"))
}

fn field_key(s: &str) -> Result<FieldKey> {
    s.parse().map_err(|e: String| anyhow!("field {s:?}: {e}"))
}

/// Parses one typed value of a field, a catalog entry's name standing for its id.
fn parse_value(node: &Node, kind: RecordKind, key: &FieldKey, input: &str) -> Result<Value> {
    let catalog = node.replica_ref().catalog();
    let input = show::resolve_name(catalog, key, input)?;
    parse_input(catalog, kind, None, key, &input).map_err(|e| match show::choices(catalog, key) {
        Some(choices) => anyhow!("{e}; choose one of: {choices}"),
        None => e.into(),
    })
}

fn parse_pairs(node: &Node, kind: RecordKind, pairs: &[String]) -> Result<Vec<(FieldKey, Value)>> {
    pairs
        .iter()
        .map(|p| {
            let (k, v) = p
                .split_once('=')
                .ok_or_else(|| anyhow!("expected FIELD=VALUE, got {p:?}"))?;
            let key = field_key(k)?;
            let value = parse_value(node, kind, &key, v)?;
            Ok((key, value))
        })
        .collect()
}

fn projection(node: &mut Node, id: &RecordId) -> Result<Projection> {
    node.project(id)?
        .ok_or_else(|| anyhow!("no record {id} on this device (`device deals` lists them)"))
}

fn kind_of(node: &mut Node, id: &RecordId) -> Result<RecordKind> {
    Ok(projection(node, id)?.record.kind)
}

fn print_json(v: &impl serde::Serialize) -> Result<()> {
    outln!("{}", serde_json::to_string_pretty(v)?)?;
    Ok(())
}

/// Prints a command's result: `json` as JSON, or else the line.
fn report(json_out: bool, json: serde_json::Value, line: impl std::fmt::Display) -> Result<()> {
    if json_out {
        return print_json(&json);
    }
    outln!("{line}")?;
    Ok(())
}

pub(crate) fn run(args: DeviceArgs) -> Result<()> {
    let now = net::now_ms();
    if let DeviceCmd::Init {
        hub,
        token,
        ca,
        force,
        json,
    } = &args.cmd
    {
        return init(
            &args.store,
            &Enrol {
                hub,
                token,
                ca: ca.as_deref(),
                force: *force,
            },
            *json,
        );
    }
    let mut node = open_node(&args.store)?;
    match args.cmd {
        DeviceCmd::Init { .. } => unreachable!("handled above"),
        DeviceCmd::Sync {
            peer,
            peer_id,
            hub,
            json,
        } => match peer {
            Some(peer) => sync(node, Target::Peer(&peer, peer_id.as_deref()), json),
            None => sync(node, Target::Hub(hub.as_deref()), json),
        },
        DeviceCmd::Serve { listen } => serve(node, &args.store, &listen),
        DeviceCmd::Deals { json } => list_records(&mut node, RecordKind::Deal, json),
        DeviceCmd::Contacts { json } => list_records(&mut node, RecordKind::Contact, json),
        DeviceCmd::Catalog { json } => catalog(&node, json),
        DeviceCmd::Show { id, json } => {
            let p = projection(&mut node, &record_id(&id)?)?;
            if json {
                return print_json(&p);
            }
            let names = show::Names {
                catalog: node.replica_ref().catalog(),
            };
            outln!(
                "{} {} ({})",
                p.record.kind,
                show::title(&p.record.id, Some(&p)),
                show::state(p.record.state)
            )?;
            for (k, v) in &p.record.fields {
                outln!("  {:<24} {}", k.to_string(), names.value(k, v))?;
            }
            if !p.record.tags.is_empty() {
                let tags: Vec<&str> = p.record.tags.iter().map(String::as_str).collect();
                outln!("  {:<24} {}", "tags", tags.join(", "))?;
            }
            for a in &p.record.activities {
                outln!("  {}", show::activity(names, a))?;
            }
            for line in show::conflicts(names, p.record.id.as_str(), &p.conflicts) {
                outln!("{line}")?;
            }
            Ok(())
        }
        DeviceCmd::CreateDeal { id, fields, json } => {
            let id = match id {
                Some(s) => record_id(&s)?,
                None => record_id(&format!("deal-{}-{now:x}", node.id()))?,
            };
            let mut pairs = parse_pairs(&node, RecordKind::Deal, &fields)?;
            let owner = field_key("owner_id")?;
            if !pairs.iter().any(|(k, _)| *k == owner) {
                pairs.push((owner, Value::Ref(node.user().0)));
            }
            node.create(RecordKind::Deal, &id, pairs, now)?;
            report(json, json!({ "id": id.as_str() }), &id)
        }
        DeviceCmd::Set { id, fields, json } => {
            let id = record_id(&id)?;
            let kind = kind_of(&mut node, &id)?;
            let pairs = parse_pairs(&node, kind, &fields)?;
            let set: Vec<String> = pairs.iter().map(|(k, _)| k.to_string()).collect();
            let edits = pairs
                .into_iter()
                .map(|(k, v)| Edit::Set(k, v))
                .collect::<Vec<_>>();
            node.apply(&id, "set", &edits, now)?;
            report(
                json,
                json!({ "id": id.as_str(), "set": set }),
                format!("set {} in {id}", set.join(", ")),
            )
        }
        DeviceCmd::Note { id, text, json } => {
            let id = record_id(&id)?;
            let note: ActivityId = format!("note-{}-{now:x}", node.id())
                .parse()
                .map_err(|e| anyhow!("note id: {e}"))?;
            node.apply(
                &id,
                "note",
                &[Edit::AddNote {
                    id: note.clone(),
                    content: text,
                }],
                now,
            )?;
            report(
                json,
                json!({ "id": id.as_str(), "note": note.as_str() }),
                format!("added note {note} to {id}"),
            )
        }
        DeviceCmd::Tag { id, tags, json } => {
            let id = record_id(&id)?;
            let edits = tags
                .iter()
                .map(|t| match (t.strip_prefix('+'), t.strip_prefix('-')) {
                    (Some(t), _) => Ok(Edit::AddTag(t.to_owned())),
                    (_, Some(t)) => Ok(Edit::RemoveTag(t.to_owned())),
                    _ => Err(anyhow!("expected +TAG or -TAG, got {t:?}")),
                })
                .collect::<Result<Vec<_>>>()?;
            node.apply(&id, "tags", &edits, now)?;
            let p = projection(&mut node, &id)?;
            let now_tags: Vec<&str> = p.record.tags.iter().map(String::as_str).collect();
            report(
                json,
                json!({ "id": id.as_str(), "tags": now_tags }),
                format!("tags of {id}: {}", now_tags.join(", ")),
            )
        }
        DeviceCmd::Delete { id, json } => {
            let id = record_id(&id)?;
            node.apply(&id, "delete", &[Edit::DeleteRecord], now)?;
            report(
                json,
                json!({ "id": id.as_str(), "deleted": true }),
                format!("deleted {id}"),
            )
        }
        DeviceCmd::Conflicts { json } => conflicts(&mut node, json),
        DeviceCmd::Resolve {
            id,
            field,
            mine,
            theirs,
            pick,
            value,
            restore,
            confirm_delete,
            discard,
            retry,
            json,
        } => {
            let how = match (mine, theirs, pick, value) {
                (true, ..) => Resolution::Field(FieldChoice::Mine),
                (_, true, ..) => Resolution::Field(FieldChoice::Theirs),
                (_, _, Some(n), _) => Resolution::Field(FieldChoice::Pick(n)),
                (_, _, _, Some(v)) => Resolution::Field(FieldChoice::Value(v)),
                _ if restore => Resolution::Record(RecordChoice::Restore),
                _ if confirm_delete => Resolution::Record(RecordChoice::ConfirmDelete),
                _ if discard => Resolution::Discard,
                _ if retry => Resolution::Retry,
                _ => bail!(
                    "give one of --mine, --theirs, --pick N, --value V, --restore, \
                     --confirm-delete, --discard, --retry"
                ),
            };
            let done = resolve(&mut node, now, &record_id(&id)?, field.as_deref(), how)?;
            if json {
                return print_json(&done);
            }
            outln!("{}", done.message)?;
            Ok(())
        }
        DeviceCmd::Audit { id, json } => {
            let p = projection(&mut node, &record_id(&id)?)?;
            if json {
                return print_json(&p.audit);
            }
            let names = show::Names {
                catalog: node.replica_ref().catalog(),
            };
            for e in &p.audit {
                let slot = e
                    .slot
                    .as_ref()
                    .map_or_else(|| "record".to_owned(), ToString::to_string);
                let who = e.by.map_or_else(
                    || "automatically".to_owned(),
                    |u| format!("by {}", names.user(u)),
                );
                let chosen = match (&e.chosen, &e.slot) {
                    (Chosen::Value(v), Some(s)) => names.value(&s.field, v),
                    (Chosen::Value(v), None) => v.to_string(),
                    (Chosen::Restore, _) => "restore".to_owned(),
                    (Chosen::Delete, _) => "delete".to_owned(),
                };
                outln!(
                    "{} {slot} ({} tier): {chosen}, chosen {who}, out of {} candidate(s)",
                    show::local_time(e.at),
                    e.policy,
                    e.candidates.len()
                )?;
            }
            Ok(())
        }
        DeviceCmd::Dismiss { id, json } => {
            let mine = node.store().read()?.notifications(&NotificationFilter {
                user: Some(node.user()),
                ..NotificationFilter::default()
            })?;
            if !mine.iter().any(|n| n.id == id) {
                bail!(
                    "no notification {id} for user {} on this device (see `notifications`)",
                    node.user()
                );
            }
            node.store().write(|w| w.mark_notification_read(id))?;
            report(
                json,
                json!({ "id": id, "dismissed": true }),
                format!("dismissed notification {id}"),
            )
        }
        DeviceCmd::Notifications { unread, json } => notifications(&mut node, unread, json),
    }
}

/// A stored notification's body: the model's notification, as the replica wrote it.
#[derive(Debug, serde::Deserialize)]
struct NotificationBody {
    record: RecordId,
    slot: Slot,
    yours: Value,
    kept: Value,
    kept_by: UserId,
    kept_at: i64,
}

fn notifications(node: &mut Node, unread: bool, json_out: bool) -> Result<()> {
    let list = node.store().read()?.notifications(&NotificationFilter {
        user: Some(node.user()),
        unread_only: unread,
        ..NotificationFilter::default()
    })?;
    if json_out {
        let rows: Vec<serde_json::Value> = list
            .iter()
            .map(|n| {
                json!({
                    "id": n.id,
                    "user": n.user.0,
                    "created_at_ms": n.created_at_ms,
                    "read": n.read,
                    "body": serde_json::from_slice::<serde_json::Value>(&n.body)
                        .unwrap_or(serde_json::Value::Null),
                })
            })
            .collect();
        return print_json(&rows);
    }
    for n in &list {
        let Ok(body) = serde_json::from_slice::<NotificationBody>(&n.body) else {
            outln!(
                "{} {}: a notification this version cannot read",
                n.id,
                show::local_time(n.created_at_ms)
            )?;
            continue;
        };
        let p = node.project(&body.record)?;
        let names = show::Names {
            catalog: node.replica_ref().catalog(),
        };
        outln!(
            "{} {}: {} {}: your {} gave way to {} by {} at {}{}",
            n.id,
            show::local_time(n.created_at_ms),
            show::title(&body.record, p.as_ref()),
            body.slot,
            names.value(&body.slot.field, &body.yours),
            names.value(&body.slot.field, &body.kept),
            names.user(body.kept_by),
            show::local_time(body.kept_at),
            if n.read { " (read)" } else { "" }
        )?;
    }
    Ok(())
}

/// The key-value entry holding the PEM certificate a device trusts for its hub.
const HUB_CA_KEY: &str = "device/hub_ca_pem";

/// What `init` was given.
struct Enrol<'a> {
    hub: &'a str,
    token: &'a str,
    ca: Option<&'a Path>,
    force: bool,
}

/// Checks a hub URL as far as it can be without the hub: `ws://` or `wss://`, a host, and if
/// given a port number.
fn check_hub_url(url: &str) -> Result<()> {
    let rest = url
        .strip_prefix("ws://")
        .or_else(|| url.strip_prefix("wss://"))
        .ok_or_else(|| {
            anyhow!("--hub {url:?} is not a hub URL: it starts with ws:// or wss://, e.g. ws://10.0.0.5:7070/")
        })?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (h, Some(p)),
        _ => (authority, None),
    };
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._[]:".contains(c));
    if !host_ok {
        bail!("--hub {url:?} has no valid host name or address, e.g. ws://10.0.0.5:7070/");
    }
    if let Some(p) = port
        && p.parse::<u16>().is_err()
    {
        bail!("--hub {url:?}: {p:?} is not a port number (1 to 65535)");
    }
    Ok(())
}

/// The secret of a token printed by `hub token`: 32 random bytes, in hex.
fn check_secret(secret: &str) -> Result<()> {
    if secret.len() != 64 || !secret.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!(
            "the token's secret is {} character(s) long; a token printed by `sellsync hub \
             token` ends in 64 hex digits: copy it whole",
            secret.chars().count()
        );
    }
    Ok(())
}

/// What was at the store's path before `init` wrote, so that a refused enrolment can be undone.
enum Prior {
    /// No file, or a store never enrolled (empty): undoing removes the file.
    Fresh,
    /// This device's store, enrolled before with this identity and hub certificate: its
    /// records stay, and undoing writes both back.
    Enrolled(NodeIdentity, Option<Vec<u8>>),
    /// Another enrolment's store, or a damaged one, moved aside to this path: undoing moves it
    /// back.
    MovedAside(PathBuf),
}

/// Where an old store is kept when `init --force` starts a fresh one.
fn aside_path(path: &Path, why: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{why}-{}", net::now_ms()));
    PathBuf::from(name)
}

/// Looks at what is at `path` and makes room for the new enrolment; returns what was there.
fn make_room(path: &Path, enrolled: &token::Enrollment, force: bool) -> Result<Prior> {
    if !path.exists() {
        return Ok(Prior::Fresh);
    }
    let why_aside = match Store::open_existing(path) {
        Ok(store) => {
            let read = store.read()?;
            let Some(identity) = read.identity()? else {
                return Ok(Prior::Fresh);
            };
            if identity.role != StoreRole::Device {
                bail!("{} is a hub's store, not a device's", path.display());
            }
            if !force {
                bail!(
                    "{} is already initialised (device {} for user {} with hub {}); `init \
                     --force` enrols it again",
                    path.display(),
                    identity.device_id,
                    identity.user_id.0,
                    identity.hub_url.as_deref().unwrap_or("?")
                );
            }
            if identity.device_id == enrolled.device && identity.user_id == enrolled.user {
                let ca = read.kv_get(HUB_CA_KEY)?;
                return Ok(Prior::Enrolled(identity, ca));
            }
            "replaced"
        }
        Err(StoreError::Damaged { .. }) if force => "damaged",
        Err(e @ StoreError::Damaged { .. }) => {
            bail!("{e}; `init --force` keeps it aside and enrols a fresh store")
        }
        Err(e) => return Err(e.into()),
    };
    let aside = aside_path(path, why_aside);
    std::fs::rename(path, &aside)
        .with_context(|| format!("moving {} aside to {}", path.display(), aside.display()))?;
    eprintln!("kept the old store as {}", aside.display());
    Ok(Prior::MovedAside(aside))
}

/// Puts back what [`make_room`] found.
fn undo_init(path: &Path, prior: Prior) -> Result<()> {
    match prior {
        Prior::Fresh => {
            std::fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?
        }
        Prior::Enrolled(identity, ca) => {
            let store = Store::open_existing(path)?;
            store.write(|w| {
                w.set_identity(&identity)?;
                match &ca {
                    Some(pem) => w.kv_put(HUB_CA_KEY, pem)?,
                    None => {
                        w.kv_remove(HUB_CA_KEY)?;
                    }
                }
                Ok(())
            })?;
        }
        Prior::MovedAside(aside) => {
            std::fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?;
            std::fs::rename(&aside, path)
                .with_context(|| format!("moving {} back", aside.display()))?;
        }
    }
    Ok(())
}

/// What the hub said to the new enrolment.
enum HubCheck {
    /// One session completed: the token is the hub's, for this device and user.
    Accepted(Outcome),
    /// No session could be held (no connection, lost): checked at the first sync instead.
    Unreachable(String),
    /// The hub refused the token, or the user it names is unknown.
    Refused(String),
}

/// Holds one sync session with the hub, as the first `sync` would.
fn check_with_hub(path: &Path, user: UserId) -> Result<HubCheck> {
    let node = open_node(path)?;
    let (out, shared) = match dial(node, Target::Hub(None)) {
        Ok(done) => done,
        Err(e) => {
            return Ok(match e.downcast_ref::<net::NetError>() {
                Some(tls @ net::NetError::Tls { .. }) => HubCheck::Refused(tls.to_string()),
                _ => HubCheck::Unreachable(format!("{e:#}")),
            });
        }
    };
    match &out.closed {
        None if out.error.is_none() => {}
        None => return Ok(HubCheck::Unreachable(out.error.clone().unwrap_or_default())),
        Some(CloseReason::ConnectionLost) => {
            return Ok(HubCheck::Unreachable(closed_sentence(
                &CloseReason::ConnectionLost,
            )));
        }
        Some(reason) => return Ok(HubCheck::Refused(closed_sentence(reason))),
    }
    let node = shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let catalog = node.replica_ref().catalog();
    if catalog.loaded && !catalog.users.is_empty() && !catalog.users.contains_key(&user.0) {
        let known: Vec<String> = catalog
            .users
            .values()
            .map(|u| format!("{} ({})", u.name, u.id))
            .collect();
        return Ok(HubCheck::Refused(format!(
            "the token is for user {}, whom the hub's catalog does not list (it lists {}); ask \
             for a token of one of them",
            user.0,
            known.join(", ")
        )));
    }
    drop(node);
    Ok(HubCheck::Accepted(out))
}

fn init(path: &Path, e: &Enrol<'_>, json_out: bool) -> Result<()> {
    let now_ms = net::now_ms();
    // Everything that can be checked without the hub, before anything is written.
    check_hub_url(e.hub)?;
    let enrolled = token::parse(e.token)?;
    check_secret(token::secret_of(&enrolled.token))?;
    let ca_pem = match e.ca {
        Some(p) => {
            net::tls_connector(p)?;
            Some(std::fs::read(p).with_context(|| format!("reading {}", p.display()))?)
        }
        None if e.hub.starts_with("wss://") => {
            bail!("a wss:// hub needs --ca: the hub's certificate (PEM), or its authority's")
        }
        None => None,
    };
    let prior = make_room(path, &enrolled, e.force)?;
    let identity = NodeIdentity {
        device_id: enrolled.device.clone(),
        user_id: enrolled.user,
        role: StoreRole::Device,
        hub_url: Some(e.hub.to_owned()),
        hub_token: Some(enrolled.token.clone()),
    };
    let written = (|| -> Result<()> {
        let store =
            Store::open(path).with_context(|| format!("creating store {}", path.display()))?;
        store.write(|w| {
            w.set_identity(&identity)?;
            match &ca_pem {
                Some(pem) => w.kv_put(HUB_CA_KEY, pem)?,
                None => {
                    w.kv_remove(HUB_CA_KEY)?;
                }
            }
            if !matches!(prior, Prior::Enrolled(..)) {
                // A new store for a device id that may have synced before (a rebuilt or
                // re-created store): the hub holds a checkpoint into the old store's feed,
                // which counted one per change. Starting the feed at the time in microseconds
                // puts every change of this store above any seq an earlier one reached.
                let micros = u64::try_from(now_ms).unwrap_or(0).saturating_mul(1000);
                w.raise_feed_floor(micros)?;
            }
            Ok(())
        })?;
        // The device's own key pair, certified by the hub at each sync (kept on a re-init).
        credential::load_or_create_key(&store, credential::DEVICE_KEY)?;
        Ok(())
    })();
    if let Err(err) = written {
        undo_init(path, prior)?;
        return Err(err);
    }
    let check = match check_with_hub(path, enrolled.user) {
        Ok(HubCheck::Refused(why)) => {
            undo_init(path, prior)?;
            bail!(
                "the hub refused this enrolment: {why}; {} is as it was",
                path.display()
            );
        }
        Ok(c) => c,
        Err(err) => {
            undo_init(path, prior)?;
            return Err(err);
        }
    };
    let (checked, received, note) = match &check {
        HubCheck::Accepted(out) => (true, unique(&out.changed).len(), String::new()),
        HubCheck::Unreachable(why) => (
            false,
            0,
            format!(
                "; the hub is not reachable now ({why}): the token is checked at the first sync"
            ),
        ),
        HubCheck::Refused(_) => unreachable!("undone above"),
    };
    report(
        json_out,
        json!({
            "device": enrolled.device.as_str(),
            "user": enrolled.user.0,
            "hub": enrolled.hub.as_str(),
            "url": e.hub,
            "hub_checked": checked,
            "received": received,
        }),
        format!(
            "initialised device {} for user {} with hub {} at {}{}",
            enrolled.device,
            enrolled.user,
            enrolled.hub,
            e.hub,
            if checked {
                format!("; first sync: {received} record(s) received")
            } else {
                note
            }
        ),
    )
}

/// Whom a sync is with.
enum Target<'a> {
    /// The hub, at the URL given at init or at this one.
    Hub(Option<&'a str>),
    /// A LAN peer at this URL, expected to be this device if given.
    Peer(&'a str, Option<&'a str>),
}

/// Why a session ended early, as a sentence.
fn closed_sentence(reason: &CloseReason) -> String {
    match reason {
        CloseReason::AuthFailed(why) => format!("authentication failed: {why}"),
        CloseReason::WrongPeer(who) => {
            format!("another node answered ({who}), not the one this device dialed")
        }
        CloseReason::Malformed(why) => format!("the peer sent a frame that cannot be read: {why}"),
        CloseReason::OutOfOrder(why) => format!("the peer broke the protocol: {why}"),
        CloseReason::PeerError { code, reason } => {
            format!(
                "the peer refused the session ({}): {reason}",
                error_code(*code)
            )
        }
        CloseReason::Storage(why) => format!("this device's store failed: {why}"),
        CloseReason::ConnectionLost => {
            "the connection was lost before the exchange was done".into()
        }
        other => format!("the session ended early: {other:?}"),
    }
}

/// A protocol error code in words.
fn error_code(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::AuthFailed => "authentication failed",
        ErrorCode::WrongPeer => "wrong peer",
        ErrorCode::Malformed => "malformed frame",
        ErrorCode::OutOfOrder => "out of order",
        ErrorCode::Internal => "the peer failed internally",
        ErrorCode::UnsupportedVersion => "unsupported protocol version",
        ErrorCode::TooLarge => "frame too large",
        _ => "unknown error code",
    }
}

/// Record ids once each, in natural order.
fn unique(ids: &[RecordId]) -> Vec<RecordId> {
    let mut v: Vec<RecordId> = ids.to_vec();
    v.sort_by(|a, b| show::natural_cmp(a.as_str(), b.as_str()));
    v.dedup();
    v
}

/// One session with the hub or a LAN peer; the outcome and the node it ran on.
fn dial(node: Node, target: Target<'_>) -> Result<(Outcome, SharedNode)> {
    let id = node.identity().clone();
    let (url, cfg, tls) = match target {
        Target::Hub(moved) => {
            let url = match moved {
                Some(u) => {
                    check_hub_url(u)?;
                    u.to_owned()
                }
                None => id.hub_url.clone().context("no hub URL: run init")?,
            };
            let cfg = credential::hub_dial_config(&node, Limits::default())?;
            let tls = match node.store().read()?.kv_get(HUB_CA_KEY)? {
                Some(pem) => Some(net::tls_connector_pem(&pem)?),
                None => None,
            };
            if url.starts_with("wss://") && tls.is_none() {
                bail!(
                    "{url} is a TLS hub, and this device trusts no certificate for it: enrol \
                     again with `init --force --ca PEM`"
                );
            }
            (url, cfg, tls)
        }
        Target::Peer(url, peer_id) => {
            if let Some(rest) = url.strip_prefix("ws://") {
                bail!(
                    "LAN sessions are encrypted: use wss://{rest} (a peer that serves plain ws:// \
                     runs an older sellsync; update it)"
                );
            }
            if !url.starts_with("wss://") {
                bail!("--peer {url:?}: expected wss://HOST:PORT/ (what `serve` prints)");
            }
            let expected = peer_id
                .map(|p| p.parse::<DeviceId>())
                .transpose()
                .map_err(|e| anyhow!("--peer-id: {e}"))?;
            let cfg = credential::lan_dial_config(&node, expected, Limits::default())?;
            warn_if_own_credential_invalid(&node);
            (url.to_owned(), cfg, Some(net::lan_tls_connector()?))
        }
    };
    let shared: SharedNode = Arc::new(Mutex::new(node));
    let rt = tokio::runtime::Runtime::new()?;
    let out: Outcome = rt.block_on(net::dial_tls(
        &url,
        shared.clone(),
        Session::dial(cfg),
        NetConfig::default(),
        tls,
    ))?;
    Ok((out, shared))
}

fn sync(node: Node, target: Target<'_>, json_out: bool) -> Result<()> {
    let (out, shared) = dial(node, target)?;
    let changed = unique(&out.changed);
    let revoked = unique(&out.revoked);
    let ids = |v: &[RecordId]| v.iter().map(|r| r.as_str().to_owned()).collect::<Vec<_>>();
    // What the hub last said of Zendesk (it travels in the catalog document).
    let reach = shared
        .lock()
        .map_err(|_| anyhow!("the node's lock is poisoned"))?
        .crm_reach()?;
    if json_out {
        print_json(&json!({
            "crm_reach": reach,
            "finished": out.finished,
            "peer": out.peer.as_ref().map(|p| p.node.as_str().to_owned()),
            "changed": ids(&changed),
            "revoked": ids(&revoked),
            "frames_sent": out.frames_sent,
            "frames_received": out.frames_received,
            "bytes_sent": out.bytes_sent,
            "bytes_received": out.bytes_received,
            "closed": out.closed.as_ref().map(closed_sentence),
            "error": out.error,
        }))?;
    } else {
        outln!(
            "sync {}: {} record(s) received, {} revoked; sent {} B in {} frame(s), received {} B in {} frame(s)",
            if out.finished {
                "complete"
            } else {
                "incomplete"
            },
            changed.len(),
            revoked.len(),
            out.bytes_sent,
            out.frames_sent,
            out.bytes_received,
            out.frames_received
        )?;
        let mut node = shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (what, list) in [("changed", &changed), ("revoked", &revoked)] {
            for id in list {
                let p = if id.as_str() == "catalog" {
                    None
                } else {
                    node.project(id).ok().flatten()
                };
                outln!("  {what} {}", show::title(id, p.as_ref()))?;
            }
        }
        if let Some(line) = reach.as_ref().and_then(crm_reach_line) {
            println!("{line}");
        }
    }
    if let Some(reason) = &out.closed {
        bail!("sync did not complete: {}", closed_sentence(reason));
    }
    if let Some(e) = out.error {
        bail!("sync failed on this device: {e}");
    }
    Ok(())
}

/// "Zendesk unreachable from the hub since T (last reached T0)", or when it last answered.
fn crm_reach_line(r: &CrmReach) -> Option<String> {
    let when = |ms: i64| {
        chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms).map_or_else(
            || ms.to_string(),
            |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        )
    };
    let last = r.last_reached_ms.map(when);
    match (r.unreachable_since_ms, last) {
        (Some(since), last) => Some(format!(
            "Zendesk unreachable from the hub since {}{}: changes wait on the hub",
            when(since),
            last.map(|l| format!(" (last reached {l})"))
                .unwrap_or_default()
        )),
        (None, Some(last)) => Some(format!("Zendesk last reached by the hub {last}")),
        (None, None) => None,
    }
}

/// Peers check this device's credential as it checks theirs: say so before they refuse it.
fn warn_if_own_credential_invalid(node: &Node) {
    if let Some(auth) = node.replica_ref().peer_auth()
        && let Err(why) = auth.trust.check(&auth.credential, node.id(), net::now_ms())
    {
        eprintln!("warning: LAN peers will refuse this device ({why}); sync with the hub to renew");
    }
}

/// Accepts LAN peers until ctrl-c. Each connection is logged on stderr (a refused peer with
/// its reason).
///
/// The store is open only while sessions run (shared by concurrent ones), so that the device's
/// other commands (`deals`, `set`, `sync` with the hub…) work while it serves; a command and a
/// session that meet wait for each other (up to [`STORE_WAIT`]).
fn serve(node: Node, path: &Path, listen: &str) -> Result<()> {
    // Checked before listening: a device without a grant cannot prove itself to anyone. The
    // credential is the one held at start; each session only draws a fresh nonce.
    let base = credential::lan_accept_config(&node, Limits::default())?;
    let tls = credential::lan_tls_acceptor(&node)?;
    warn_if_own_credential_invalid(&node);
    drop(node);
    let path = path.to_owned();
    let nodes = net::Nodes::Leased(Arc::new(net::NodeLease::new(move || {
        open_node(&path).map_err(|e| format!("{e:#}"))
    })));
    let make = move || {
        let mut cfg = base.clone();
        cfg.nonce = credential::nonce().unwrap_or_else(|e| {
            // Without randomness the session runs with no nonce, which refuses every dialer.
            tracing::warn!("cannot draw a nonce: {e}");
            Vec::new()
        });
        Session::accept(cfg)
    };
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("listening on {listen}"))?;
        let addr = listener.local_addr()?;
        outln!("listening on wss://{addr}/")?;
        let extras = net::Extras {
            tls: Some(tls),
            health: None,
        };
        net::serve_nodes(listener, nodes, make, NetConfig::default(), extras, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await;
        Ok(())
    })
}

/// The records of one kind, projected, in natural id order.
fn held(node: &mut Node, kind: RecordKind) -> Result<Vec<Projection>> {
    let mut held = Vec::new();
    for (id, stored_kind) in node.records()? {
        if stored_kind != kind.as_str() {
            continue;
        }
        if let Some(p) = node.project(&id)? {
            held.push(p);
        }
    }
    held.sort_by(|a, b| show::natural_cmp(a.record.id.as_str(), b.record.id.as_str()));
    Ok(held)
}

/// `deals` and `contacts`: one line per record, with its state.
fn list_records(node: &mut Node, kind: RecordKind, json_out: bool) -> Result<()> {
    let held = held(node, kind)?;
    if json_out {
        let rows: Vec<serde_json::Value> = held
            .iter()
            .map(|p| {
                json!({
                    "id": p.record.id.as_str(),
                    "state": p.record.state,
                    "fields": p.record.fields,
                    "tags": p.record.tags,
                    "conflicts": p.conflicts.len(),
                })
            })
            .collect();
        return print_json(&rows);
    }
    let names = show::Names {
        catalog: node.replica_ref().catalog(),
    };
    let f = |p: &Projection, name: &str| show::field(names, p, name);
    if held.is_empty() {
        eprintln!(
            "no {}s on this device yet (`sync` brings them from the hub)",
            kind
        );
    }
    for p in &held {
        let conflicts = match p.conflicts.len() {
            0 => String::new(),
            n => format!("{n} conflict(s)"),
        };
        let line = match kind {
            RecordKind::Deal => format!(
                "{:<24} {:<11} {:<28} {:<14} {:>12} {:<4} {:<18} {conflicts}",
                p.record.id.as_str(),
                show::state(p.record.state),
                f(p, "name"),
                f(p, "stage_id"),
                f(p, "value"),
                f(p, "currency"),
                f(p, "owner_id"),
            ),
            _ => {
                let name = match f(p, "name") {
                    n if n.is_empty() => format!("{} {}", f(p, "first_name"), f(p, "last_name")),
                    n => n,
                };
                format!(
                    "{:<24} {:<11} {:<28} {:<28} {:<16} {:<18} {conflicts}",
                    p.record.id.as_str(),
                    show::state(p.record.state),
                    name.trim(),
                    f(p, "email"),
                    f(p, "phone"),
                    f(p, "owner_id"),
                )
            }
        };
        outln!("{}", line.trim_end())?;
    }
    Ok(())
}

/// How `resolve` settles a conflict.
enum Resolution {
    /// A field conflict, or a fix of a value the CRM refused (`--value`).
    Field(FieldChoice),
    /// A record conflict.
    Record(RecordChoice),
    /// Delete a refused note, task or call.
    Discard,
    /// Send a refused thing again as it is.
    Retry,
}

enum FieldChoice {
    Mine,
    Theirs,
    Pick(usize),
    Value(String),
}

/// What `resolve` did.
#[derive(serde::Serialize)]
struct Resolved {
    record: String,
    target: String,
    resolution: &'static str,
    message: String,
}

/// Settles one conflict of record `id`. `target` is a field, a note, task or call id, or none
/// for the record itself.
fn resolve(
    node: &mut Node,
    now: i64,
    id: &RecordId,
    target: Option<&str>,
    how: Resolution,
) -> Result<Resolved> {
    let p = projection(node, id)?;
    let activity = target.and_then(|t| {
        p.record
            .activities
            .iter()
            .find(|a| a.id.as_str() == t)
            .map(|a| a.id.clone())
    });
    let done = |target: String, resolution, message: String| Resolved {
        record: id.to_string(),
        target,
        resolution,
        message,
    };
    let refused_activity = |a: &ActivityId| {
        p.conflicts
            .iter()
            .any(|c| matches!(c, Conflict::Refused { activity: Some(r), .. } if r == a))
    };
    match how {
        Resolution::Record(choice) => {
            if let Some(t) = target {
                bail!("--restore and --confirm-delete settle the whole record; drop {t:?}");
            }
            let seen: Vec<String> = p
                .conflicts
                .iter()
                .find_map(|c| match c {
                    Conflict::Record {
                        deleted_by,
                        restored_by,
                        ..
                    } => Some(
                        deleted_by
                            .iter()
                            .chain(restored_by)
                            .map(|c| c.op.clone())
                            .collect(),
                    ),
                    _ => None,
                })
                .ok_or_else(|| {
                    anyhow!(
                        "{id} has no record conflict (it was not deleted while others edited it)"
                    )
                })?;
            node.act(id, now, |rd, ctx| {
                rd.resolve_record(ctx, &seen, choice)
                    .map_err(|e| NodeError::Refused(e.to_string()))
            })?;
            Ok(match choice {
                RecordChoice::Restore => done(
                    "record".into(),
                    "restore",
                    format!(
                        "restored {id}: the hub creates it again in the CRM with its notes and tasks"
                    ),
                ),
                RecordChoice::ConfirmDelete => {
                    done("record".into(), "confirm_delete", format!("deleted {id}"))
                }
            })
        }
        Resolution::Retry => {
            let what = match (&activity, target) {
                (Some(a), _) => RefusalTarget::Activity(a.clone()),
                (None, None) => RefusalTarget::Record,
                (None, Some(t)) => {
                    let slot: Slot = t.parse().map_err(|e: String| anyhow!("{t}: {e}"))?;
                    match slot.activity {
                        Some(a) => RefusalTarget::Activity(a),
                        None => RefusalTarget::Field(slot),
                    }
                }
            };
            node.act(id, now, |rd, ctx| {
                rd.retry_refused(ctx, &what)
                    .map_err(|e| NodeError::Refused(e.to_string()))
            })?;
            let name = target.unwrap_or("record").to_owned();
            Ok(done(
                name.clone(),
                "retry",
                format!("{name} of {id} goes to the CRM again with the next bridge round"),
            ))
        }
        Resolution::Discard => {
            let a = activity.ok_or_else(|| {
                anyhow!("--discard deletes a note, task or call: give its id (see `show {id}`)")
            })?;
            node.apply(
                id,
                "discard a refused activity",
                &[Edit::DeleteActivity(a.clone())],
                now,
            )?;
            Ok(done(
                a.to_string(),
                "discard",
                format!("deleted {a} of {id}"),
            ))
        }
        Resolution::Field(choice) => {
            let t = target
                .ok_or_else(|| anyhow!("give the field (or note, task or call) to settle"))?;
            // A refused note, task or call fixed in place: its text (a note) or a field.
            if let (Some(a), FieldChoice::Value(text)) = (&activity, &choice)
                && refused_activity(a)
            {
                node.apply(
                    id,
                    "fix a refused note",
                    &[Edit::SetNoteText {
                        id: a.clone(),
                        text: text.clone(),
                    }],
                    now,
                )?;
                return Ok(done(a.to_string(), "value", format!("changed {a} of {id}")));
            }
            let slot: Slot = t.parse().map_err(|e: String| anyhow!("{t}: {e}"))?;
            let activity_kind = slot.activity.as_ref().and_then(|a| {
                p.record
                    .activities
                    .iter()
                    .find(|v| v.id == *a)
                    .map(|v| v.kind)
            });
            let parse = |v: &str| -> Result<Value> {
                let catalog = node.replica_ref().catalog();
                let v = show::resolve_name(catalog, &slot.field, v)?;
                parse_input(catalog, p.record.kind, activity_kind, &slot.field, &v).map_err(|e| {
                    match show::choices(catalog, &slot.field) {
                        Some(choices) => anyhow!("{e}; choose one of: {choices}"),
                        None => anyhow!(e),
                    }
                })
            };
            let seen: Option<Vec<String>> = p.conflicts.iter().find_map(|c| match c {
                Conflict::Field {
                    slot: s,
                    candidates,
                    ..
                } if *s == slot => Some(candidates.iter().map(|c| c.op.clone()).collect()),
                _ => None,
            });
            let Some(seen) = seen else {
                // Not a field conflict: a value the CRM refused is fixed by writing a new one.
                let refused = p.conflicts.iter().any(|c| match c {
                    Conflict::Validation { slot: s, .. }
                    | Conflict::Permission { slot: Some(s), .. } => *s == slot,
                    Conflict::Refused {
                        activity: Some(a), ..
                    } => slot.activity.as_ref() == Some(a),
                    _ => false,
                });
                let FieldChoice::Value(v) = &choice else {
                    bail!("no open conflict on {slot} in {id}");
                };
                if !refused {
                    bail!("no open conflict on {slot} in {id}");
                }
                let value = parse(v)?;
                let edit = match &slot.activity {
                    Some(a) => Edit::SetActivity {
                        id: a.clone(),
                        field: slot.field.clone(),
                        value,
                    },
                    None => Edit::Set(slot.field.clone(), value),
                };
                node.apply(id, "fix a refused value", &[edit], now)?;
                return Ok(done(
                    slot.to_string(),
                    "value",
                    format!("changed {slot} in {id}"),
                ));
            };
            let choice = match choice {
                FieldChoice::Mine => Choice::Mine,
                FieldChoice::Theirs => Choice::Theirs,
                FieldChoice::Pick(n) => Choice::Pick(n),
                FieldChoice::Value(v) => Choice::Value(parse(&v)?),
            };
            node.act(id, now, |rd, ctx| {
                rd.resolve_field(ctx, &slot, &seen, choice)
                    .map_err(|e| NodeError::Refused(e.to_string()))
            })?;
            Ok(done(
                slot.to_string(),
                "field",
                format!("resolved {slot} in {id}"),
            ))
        }
    }
}

/// The catalog the hub shared, or its JSON.
fn catalog(node: &Node, json_out: bool) -> Result<()> {
    let c = node.replica_ref().catalog();
    if json_out {
        return print_json(c);
    }
    if !c.loaded {
        outln!("no catalog yet: `sync` with the hub brings it")?;
        return Ok(());
    }
    outln!("stages (stage_id):")?;
    for s in c.stages.values() {
        let pipeline = c
            .pipelines
            .get(&s.pipeline_id)
            .map_or_else(|| s.pipeline_id.to_string(), |p| p.name.clone());
        outln!(
            "  {:>6}  {:<20} {:<12} pipeline {pipeline}",
            s.id,
            s.name,
            s.category
        )?;
    }
    outln!("users (owner_id):")?;
    for u in c.users.values() {
        outln!("  {:>6}  {:<20} {}", u.id, u.name, u.role)?;
    }
    outln!("sources (source_id):")?;
    for s in c.sources.values() {
        outln!("  {:>6}  {}", s.id, s.name)?;
    }
    outln!("loss reasons (loss_reason_id):")?;
    for s in c.loss_reasons.values() {
        outln!("  {:>6}  {}", s.id, s.name)?;
    }
    for (kind, defs) in &c.custom_fields {
        outln!("custom fields of {kind}s (custom_fields.NAME):")?;
        for d in defs.values() {
            let choices = if d.choices.is_empty() {
                String::new()
            } else {
                format!(": {}", d.choices.join(", "))
            };
            outln!(
                "  {:<20} {:?}{}{choices}",
                d.name,
                d.ty,
                if d.required { ", required" } else { "" }
            )?;
        }
    }
    Ok(())
}

fn conflicts(node: &mut Node, json_out: bool) -> Result<()> {
    let all = node.store().read()?.all_conflicts()?;
    let mut rows = Vec::new();
    for (id, bytes) in all {
        let list: Vec<serde_json::Value> =
            serde_json::from_slice(&bytes).with_context(|| format!("conflicts view of {id}"))?;
        rows.push((id, list));
    }
    rows.sort_by(|(a, _), (b, _)| show::natural_cmp(a.as_str(), b.as_str()));
    if json_out {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|(id, list)| json!({ "record": id.as_str(), "conflicts": list }))
            .collect();
        return print_json(&v);
    }
    for (id, _) in &rows {
        let p = projection(node, id)?;
        let names = show::Names {
            catalog: node.replica_ref().catalog(),
        };
        for line in show::conflicts(names, &show::title(id, Some(&p)), &p.conflicts) {
            outln!("{line}")?;
        }
    }
    Ok(())
}
