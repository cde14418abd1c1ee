//! `sellsync device`: a rep's device: enrol with a hub, sync, read and edit records.
//!
//! Argument parsing and printing only: every action goes through the device facade
//! ([`sellsync_device::Device`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use sellsync_device::{
    ActivityId, Choice, Conflict, CrmReach, Device, DeviceConfig, DeviceError, DeviceId, Enrolment,
    FieldKey, Projection, RecordChoice, RecordId, RecordKind, RefusalTarget, Slot, SyncReport,
    TagChange, Value,
};
use sellsync_model::{Chosen, parse_input};

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
        matches!(self.cmd, DeviceCmd::Serve { .. } | DeviceCmd::Ui { .. })
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
    /// Serve the conflict page on this machine until ctrl-c: open the printed link in a
    /// browser. Holds the store while it runs; with --sync-every it syncs with the hub in the
    /// background, and the page shows what each sync brings.
    Ui {
        /// Address to listen on (port 0: any free port). Keep it on loopback: the page is for
        /// this machine's browser.
        #[arg(long, default_value = "127.0.0.1:7072")]
        listen: String,
        /// Sync with the hub every this many seconds (0: never).
        #[arg(long, default_value_t = 30)]
        sync_every: u64,
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
    /// --discard deletes a refused note, task or call, --retry sends it again as it is); a
    /// permission conflict on the whole record: --discard (no field) drops this device's copy.
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
        /// Delete a note, task or call the CRM refused; with no field, discard this device's
        /// copy of a record under a permission conflict (the hub's copy comes back).
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

/// How long a command waits for the store while another process holds it (a serving device
/// holds it only during each LAN session).
const STORE_WAIT: Duration = Duration::from_secs(15);

/// The bound of one sync round (the connection included).
const ROUND: Duration = Duration::from_secs(600);

/// A facade error in the words docs/cli.md gives, for the store at `path`.
fn cli_error(e: DeviceError, path: &Path) -> anyhow::Error {
    match e {
        DeviceError::NotEnrolled { .. } if !path.exists() => anyhow!(
            "no store at {}: check --store, or create one with `device init`",
            path.display()
        ),
        DeviceError::NotEnrolled { .. } => anyhow!(
            "{} is not enrolled with a hub yet: run `sellsync device --store {} init --hub URL \
             --token TOKEN`",
            path.display(),
            path.display()
        ),
        DeviceError::Damaged { path: p, detail } => anyhow!(
            "store damaged: {}: {detail}; restore it from the hub: `sellsync device --store {} \
             init --force --hub URL --token TOKEN` keeps the damaged file aside and enrols a \
             fresh store, then `sync` brings its records back (see docs/cli.md, \"A damaged \
             store\")",
            p.display(),
            path.display()
        ),
        DeviceError::NotADevice { .. } => {
            anyhow!("{} is a hub's store, not a device's", path.display())
        }
        DeviceError::NoSuchRecord { id } => {
            anyhow!("no record {id} on this device (`device deals` lists them)")
        }
        other => anyhow::Error::new(other),
    }
}

/// `Result<T, DeviceError>` to the CLI's errors.
trait At<T> {
    /// The error in the CLI's words, for the store at `path`.
    fn at(self, path: &Path) -> Result<T>;
}

impl<T> At<T> for std::result::Result<T, DeviceError> {
    fn at(self, path: &Path) -> Result<T> {
        self.map_err(|e| cli_error(e, path))
    }
}

/// Opens an enrolled device store (waiting up to [`STORE_WAIT`] for a serving device's
/// session to end). A missing file is refused (nothing is created); a damaged one is refused
/// with the way to rebuild it from the hub.
fn open(path: &Path) -> Result<Device> {
    Device::open_waiting(DeviceConfig::new(path), STORE_WAIT).at(path)
}

fn record_id(s: &str) -> Result<RecordId> {
    s.parse().map_err(|e| anyhow!("record id {s:?}: {e}"))
}

fn field_key(s: &str) -> Result<FieldKey> {
    s.parse().map_err(|e: String| anyhow!("field {s:?}: {e}"))
}

/// Parses one typed value of a field of a `kind` record (of one of its activities, if
/// `activity` is given), a catalog entry's name standing for its id.
fn parse_value(
    device: &Device,
    kind: RecordKind,
    activity: Option<sellsync_model::ActivityKind>,
    key: &FieldKey,
    input: &str,
) -> Result<Value> {
    let catalog = device.catalog()?;
    let input = show::resolve_name(&catalog, key, input)?;
    parse_input(&catalog, kind, activity, key, &input).map_err(|e| {
        match show::choices(&catalog, key) {
            Some(choices) => anyhow!("{e}; choose one of: {choices}"),
            None => e.into(),
        }
    })
}

fn parse_pairs(
    device: &Device,
    kind: RecordKind,
    pairs: &[String],
) -> Result<Vec<(FieldKey, Value)>> {
    pairs
        .iter()
        .map(|p| {
            let (k, v) = p
                .split_once('=')
                .ok_or_else(|| anyhow!("expected FIELD=VALUE, got {p:?}"))?;
            let key = field_key(k)?;
            let value = parse_value(device, kind, None, &key, v)?;
            Ok((key, value))
        })
        .collect()
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

/// The one tokio runtime of this process, for the facade's async calls.
fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Runtime::new().context("starting the async runtime")
}

pub(crate) fn run(args: DeviceArgs) -> Result<()> {
    let path = args.store.as_path();
    if let DeviceCmd::Init {
        hub,
        token,
        ca,
        force,
        json,
    } = &args.cmd
    {
        return init(
            path,
            &Enrol {
                hub,
                token,
                ca: ca.as_deref(),
                force: *force,
            },
            *json,
        );
    }
    if let DeviceCmd::Serve { listen } = &args.cmd {
        return serve(path, listen);
    }
    if let DeviceCmd::Ui { listen, sync_every } = &args.cmd {
        return ui(path, listen, *sync_every);
    }
    let device = open(path)?;
    let d = &device;
    match args.cmd {
        DeviceCmd::Init { .. } | DeviceCmd::Serve { .. } | DeviceCmd::Ui { .. } => {
            unreachable!("handled above")
        }
        DeviceCmd::Sync {
            peer,
            peer_id,
            hub,
            json,
        } => match peer {
            Some(peer) => sync(d, path, Target::Peer(&peer, peer_id.as_deref()), json),
            None => sync(d, path, Target::Hub(hub.as_deref()), json),
        },
        DeviceCmd::Deals { json } => list_records(d, path, RecordKind::Deal, json),
        DeviceCmd::Contacts { json } => list_records(d, path, RecordKind::Contact, json),
        DeviceCmd::Catalog { json } => catalog(d, json),
        DeviceCmd::Show { id, json } => {
            let p = d.record(&record_id(&id)?).at(path)?;
            if json {
                return print_json(&p);
            }
            let catalog = d.catalog().at(path)?;
            let names = show::Names { catalog: &catalog };
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
            let pairs = parse_pairs(d, RecordKind::Deal, &fields)?;
            let id = match id {
                Some(s) => d.create_deal_with_id(record_id(&s)?, pairs),
                None => d.create_deal(pairs),
            }
            .at(path)?;
            report(json, json!({ "id": id.as_str() }), &id)
        }
        DeviceCmd::Set { id, fields, json } => {
            let id = record_id(&id)?;
            let kind = d.record(&id).at(path)?.record.kind;
            let pairs = parse_pairs(d, kind, &fields)?;
            let set: Vec<String> = pairs.iter().map(|(k, _)| k.to_string()).collect();
            d.set(&id, pairs).at(path)?;
            report(
                json,
                json!({ "id": id.as_str(), "set": set }),
                format!("set {} in {id}", set.join(", ")),
            )
        }
        DeviceCmd::Note { id, text, json } => {
            let id = record_id(&id)?;
            let note = d.note(&id, &text).at(path)?;
            report(
                json,
                json!({ "id": id.as_str(), "note": note.as_str() }),
                format!("added note {note} to {id}"),
            )
        }
        DeviceCmd::Tag { id, tags, json } => {
            let id = record_id(&id)?;
            let changes = tags
                .iter()
                .map(|t| match (t.strip_prefix('+'), t.strip_prefix('-')) {
                    (Some(t), _) => Ok(TagChange::Add(t.to_owned())),
                    (_, Some(t)) => Ok(TagChange::Remove(t.to_owned())),
                    _ => Err(anyhow!("expected +TAG or -TAG, got {t:?}")),
                })
                .collect::<Result<Vec<_>>>()?;
            let now_tags = d.change_tags(&id, &changes).at(path)?;
            report(
                json,
                json!({ "id": id.as_str(), "tags": now_tags }),
                format!("tags of {id}: {}", now_tags.join(", ")),
            )
        }
        DeviceCmd::Delete { id, json } => {
            let id = record_id(&id)?;
            d.delete(&id).at(path)?;
            report(
                json,
                json!({ "id": id.as_str(), "deleted": true }),
                format!("deleted {id}"),
            )
        }
        DeviceCmd::Conflicts { json } => conflicts(d, path, json),
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
            let done = resolve(d, path, &record_id(&id)?, field.as_deref(), how)?;
            if json {
                return print_json(&done);
            }
            outln!("{}", done.message)?;
            Ok(())
        }
        DeviceCmd::Audit { id, json } => {
            let audit = d.audit(&record_id(&id)?).at(path)?;
            if json {
                return print_json(&audit);
            }
            let catalog = d.catalog().at(path)?;
            let names = show::Names { catalog: &catalog };
            for e in &audit {
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
            match d.dismiss(id) {
                Err(DeviceError::Invalid { field, .. }) if field == "notification" => bail!(
                    "no notification {id} for user {} on this device (see `notifications`)",
                    d.user().at(path)?
                ),
                other => other.at(path)?,
            }
            report(
                json,
                json!({ "id": id, "dismissed": true }),
                format!("dismissed notification {id}"),
            )
        }
        DeviceCmd::Notifications { unread, json } => notifications(d, path, unread, json),
    }
}

fn notifications(d: &Device, path: &Path, unread: bool, json_out: bool) -> Result<()> {
    let list = d.notifications(unread).at(path)?;
    if json_out {
        let user = d.user().at(path)?;
        let rows: Vec<serde_json::Value> = list
            .iter()
            .map(|n| {
                json!({
                    "id": n.id,
                    "user": user.0,
                    "created_at_ms": n.created_at_ms,
                    "read": n.read,
                    "body": n.detail,
                })
            })
            .collect();
        return print_json(&rows);
    }
    let catalog = d.catalog().at(path)?;
    let names = show::Names { catalog: &catalog };
    for n in &list {
        let Some(body) = &n.detail else {
            outln!(
                "{} {}: a notification this version cannot read",
                n.id,
                show::local_time(n.created_at_ms)
            )?;
            continue;
        };
        let p = match d.record(&body.record) {
            Ok(p) => Some(p),
            Err(DeviceError::NoSuchRecord { .. }) => None,
            Err(e) => return Err(cli_error(e, path)),
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

/// What `init` was given.
struct Enrol<'a> {
    hub: &'a str,
    token: &'a str,
    ca: Option<&'a Path>,
    force: bool,
}

/// An enrolment argument the facade refused, in the words of `init`'s options.
fn enrolment_error(e: DeviceError, path: &Path) -> anyhow::Error {
    match e {
        DeviceError::BadEnrolment {
            what: "hub_url",
            reason,
        } => anyhow!("--hub is not a hub URL: {reason} (e.g. ws://10.0.0.5:7070/)"),
        DeviceError::BadEnrolment {
            what: "ca_pem",
            reason,
        } => anyhow!("--ca: {reason}"),
        DeviceError::BadEnrolment { reason, .. } => anyhow!("--token: {reason}"),
        DeviceError::Damaged { path: p, detail } => anyhow!(
            "store damaged: {}: {detail}; `init --force` keeps it aside and enrols a fresh store",
            p.display()
        ),
        other => cli_error(other, path),
    }
}

fn init(path: &Path, e: &Enrol<'_>, json_out: bool) -> Result<()> {
    let ca_pem = match e.ca {
        Some(p) => Some(std::fs::read(p).with_context(|| format!("reading {}", p.display()))?),
        None => None,
    };
    let enrolment = Enrolment {
        hub_url: e.hub.to_owned(),
        token: e.token.to_owned(),
        ca_pem,
    };
    let rt = runtime()?;
    let done = match rt.block_on(Device::enrol_with(
        DeviceConfig::new(path),
        enrolment,
        e.force,
        ROUND,
    )) {
        Ok(done) => done,
        Err(DeviceError::AlreadyEnrolled { .. }) => {
            let old = open(path)?;
            bail!(
                "{} is already initialised (device {} for user {} with hub {}); `init --force` \
                 enrols it again",
                path.display(),
                old.id().at(path)?,
                old.user().at(path)?.0,
                old.hub_url().at(path)?.as_deref().unwrap_or("?")
            );
        }
        Err(refused @ (DeviceError::Auth { .. } | DeviceError::SyncFailed { .. })) => bail!(
            "the hub refused this enrolment: {refused}; {} is as it was",
            path.display()
        ),
        Err(err) => return Err(enrolment_error(err, path)),
    };
    if let Some(aside) = &done.kept_aside {
        eprintln!("kept the old store as {}", aside.display());
    }
    let d = &done.device;
    let (device, user) = (d.id().at(path)?, d.user().at(path)?);
    let hub = d.hub_id().map(|h| h.to_string()).unwrap_or_default();
    let (checked, received, note) = match &done.first_round {
        Ok(report) => (
            true,
            report.changed.len() + usize::from(report.catalog_changed),
            String::new(),
        ),
        Err(why) => (
            false,
            0,
            format!(
                "; the hub is not reachable now ({why}): the token is checked at the first sync"
            ),
        ),
    };
    report(
        json_out,
        json!({
            "device": device.as_str(),
            "user": user.0,
            "hub": hub,
            "url": e.hub,
            "hub_checked": checked,
            "received": received,
        }),
        format!(
            "initialised device {device} for user {user} with hub {hub} at {}{}",
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

/// The catalog document's id, listed among what a round changed.
fn catalog_id() -> Result<RecordId> {
    record_id(sellsync_service::CATALOG_ID)
}

/// Record ids in natural order.
fn natural(mut ids: Vec<RecordId>) -> Vec<RecordId> {
    ids.sort_by(|a, b| show::natural_cmp(a.as_str(), b.as_str()));
    ids
}

/// One round with the hub or a LAN peer.
fn round(d: &Device, path: &Path, target: Target<'_>) -> Result<SyncReport> {
    let rt = runtime()?;
    let out = match target {
        Target::Hub(moved) => match moved {
            Some(url) => rt.block_on(d.sync_hub_at(url, ROUND)),
            None => rt.block_on(d.sync_hub(ROUND)),
        },
        Target::Peer(url, peer_id) => {
            if let Some(rest) = url.strip_prefix("ws://") {
                bail!(
                    "LAN sessions are encrypted: use wss://{rest} (a peer that serves plain ws:// \
                     runs an older sellsync; update it)"
                );
            }
            let expected = peer_id
                .map(|p| p.parse::<DeviceId>())
                .transpose()
                .map_err(|e| anyhow!("--peer-id: {e}"))?;
            // Peers check this device's credential as it checks theirs: say so before they
            // refuse it.
            if let Err(DeviceError::Auth { reason }) = d.check_lan_credential() {
                eprintln!(
                    "warning: LAN peers will refuse this device ({reason}); sync with the hub \
                     to renew"
                );
            }
            rt.block_on(d.sync_peer(url, expected, ROUND))
        }
    };
    out.map_err(|e| match e {
        DeviceError::BadEnrolment {
            what: "hub_url",
            reason,
        } => anyhow!("--hub is not a hub URL: {reason} (e.g. ws://10.0.0.5:7070/)"),
        DeviceError::BadEnrolment {
            what: "ca_pem",
            reason,
        } => anyhow!("{reason}: enrol again with `init --force --ca PEM`"),
        DeviceError::Invalid { field, reason } if field == "url" => {
            anyhow!("--peer {reason} (what `serve` prints)")
        }
        e @ (DeviceError::Auth { .. }
        | DeviceError::Unreachable { .. }
        | DeviceError::Timeout { .. }
        | DeviceError::SyncFailed { .. }) => anyhow!("sync did not complete: {e}"),
        DeviceError::Internal { reason } => anyhow!("sync failed on this device: {reason}"),
        e => cli_error(e, path),
    })
}

fn sync(d: &Device, path: &Path, target: Target<'_>, json_out: bool) -> Result<()> {
    let mut out = round(d, path, target)?;
    if out.catalog_changed {
        out.changed.push(catalog_id()?);
    }
    let changed = natural(out.changed);
    let revoked = natural(out.revoked);
    let ids = |v: &[RecordId]| v.iter().map(|r| r.as_str().to_owned()).collect::<Vec<_>>();
    // What the hub last said of Zendesk (it travels in the catalog document).
    let reach = d.status().at(path)?.crm_reach;
    if json_out {
        return print_json(&json!({
            "crm_reach": reach,
            "finished": true,
            "peer": out.peer.as_ref().map(|p| p.as_str().to_owned()),
            "changed": ids(&changed),
            "revoked": ids(&revoked),
            "frames_sent": out.frames_sent,
            "frames_received": out.frames_received,
            "bytes_sent": out.bytes_sent,
            "bytes_received": out.bytes_received,
            "closed": null,
            "error": null,
        }));
    }
    outln!(
        "sync complete: {} record(s) received, {} revoked; sent {} B in {} frame(s), received {} B in {} frame(s)",
        changed.len(),
        revoked.len(),
        out.bytes_sent,
        out.frames_sent,
        out.bytes_received,
        out.frames_received
    )?;
    for (what, list) in [("changed", &changed), ("revoked", &revoked)] {
        for id in list {
            let p = if id.as_str() == sellsync_service::CATALOG_ID {
                None
            } else {
                d.record(id).ok()
            };
            outln!("  {what} {}", show::title(id, p.as_ref()))?;
        }
    }
    if let Some(line) = reach.as_ref().and_then(crm_reach_line) {
        outln!("{line}")?;
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

/// Accepts LAN peers until ctrl-c. Each connection is logged on stderr (a refused peer with
/// its reason).
///
/// The store is open only while sessions run (shared by concurrent ones), so that the device's
/// other commands (`deals`, `set`, `sync` with the hub…) work while it serves; a command and a
/// session that meet wait for each other (up to [`STORE_WAIT`]).
fn serve(path: &Path, listen: &str) -> Result<()> {
    {
        // Checked before listening: a device without a grant cannot prove itself to anyone.
        let d = open(path)?;
        if let Err(DeviceError::Auth { reason }) = d.check_lan_credential() {
            eprintln!(
                "warning: LAN peers will refuse this device ({reason}); sync with the hub to renew"
            );
        }
    }
    let rt = runtime()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("listening on {listen}"))?;
        let addr = listener.local_addr()?;
        let serving =
            Device::serve_lan_leased(DeviceConfig::new(path), STORE_WAIT, listener, async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .at(path)?;
        outln!("listening on wss://{addr}/")?;
        serving.await;
        Ok(())
    })
}

/// `ui`: the conflict page, until ctrl-c.
fn ui(path: &Path, listen: &str, sync_every: u64) -> Result<()> {
    let device = open(path)?;
    let rt = runtime()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("listening on {listen}"))?;
        let addr = listener.local_addr()?;
        if !addr.ip().is_loopback() {
            eprintln!(
                "warning: the conflict page listens on {addr}, beyond this machine; anyone with \
                 the link's token can decide this device's conflicts"
            );
        }
        let config = sellsync_ui::UiConfig {
            token: sellsync_ui::new_token(),
            listen: addr,
            sync_every: (sync_every > 0).then(|| std::time::Duration::from_secs(sync_every)),
        };
        outln!("listening on http://{addr}/?token={}", config.token)?;
        sellsync_ui::serve(device, listener, config, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("serving the conflict page")
    })
}

/// `deals` and `contacts`: one line per record, with its state.
fn list_records(d: &Device, path: &Path, kind: RecordKind, json_out: bool) -> Result<()> {
    let mut held = d.projections(kind).at(path)?;
    held.sort_by(|a, b| show::natural_cmp(a.record.id.as_str(), b.record.id.as_str()));
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
    let catalog = d.catalog().at(path)?;
    let names = show::Names { catalog: &catalog };
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
    d: &Device,
    path: &Path,
    id: &RecordId,
    target: Option<&str>,
    how: Resolution,
) -> Result<Resolved> {
    let p = d.record(id).at(path)?;
    // The target as one of the record's notes, tasks or calls, if it names one.
    let activity: Option<ActivityId> = target.and_then(|t| {
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
    let slot_of = |t: &str| -> Result<Slot> { t.parse().map_err(|e: String| anyhow!("{t}: {e}")) };
    match how {
        Resolution::Record(choice) => {
            if let Some(t) = target {
                bail!("--restore and --confirm-delete settle the whole record; drop {t:?}");
            }
            match d.resolve_record(id, choice) {
                Err(DeviceError::NoConflict { .. }) => {
                    bail!("{id} has no record conflict (it was not deleted while others edited it)")
                }
                other => other.at(path)?,
            }
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
                    let slot = slot_of(t)?;
                    match slot.activity {
                        Some(a) => RefusalTarget::Activity(a),
                        None => RefusalTarget::Field(slot),
                    }
                }
            };
            d.retry_refused(id, &what).at(path)?;
            let name = target.unwrap_or("record").to_owned();
            Ok(done(
                name.clone(),
                "retry",
                format!("{name} of {id} goes to the CRM again with the next bridge round"),
            ))
        }
        Resolution::Discard if activity.is_none() && target.is_none() => {
            let kept = d.discard_copy(id).at(path)?;
            let message = if kept {
                format!(
                    "discarded this device's copy of {id}: it is back to what the hub last sent, \
                     and the next sync brings it up to date"
                )
            } else {
                format!("removed {id} from this device (the hub never had it)")
            };
            Ok(done(id.to_string(), "discard", message))
        }
        Resolution::Discard => {
            let a = activity.ok_or_else(|| {
                anyhow!(
                    "--discard deletes a note, task or call (give its id, see `show {id}`), or \
                     without a field discards this device's copy of a record under a permission \
                     conflict"
                )
            })?;
            d.delete_activity(id, &a).at(path)?;
            Ok(done(
                a.to_string(),
                "discard",
                format!("deleted {a} of {id}"),
            ))
        }
        Resolution::Field(choice) => {
            let t = target
                .ok_or_else(|| anyhow!("give the field (or note, task or call) to settle"))?;
            // A refused note fixed in place: its new text.
            if let (Some(a), FieldChoice::Value(text)) = (&activity, &choice) {
                match d.fix_refused_note(id, a, text) {
                    Ok(()) => {
                        return Ok(done(a.to_string(), "value", format!("changed {a} of {id}")));
                    }
                    Err(DeviceError::NoConflict { .. }) => {}
                    Err(e) => return Err(cli_error(e, path)),
                }
            }
            let slot = slot_of(t)?;
            let activity_kind = slot.activity.as_ref().and_then(|a| {
                p.record
                    .activities
                    .iter()
                    .find(|v| v.id == *a)
                    .map(|v| v.kind)
            });
            let parse = |v: &str| parse_value(d, p.record.kind, activity_kind, &slot.field, v);
            let no_conflict = || anyhow!("no open conflict on {slot} in {id}");
            let choice = match choice {
                FieldChoice::Mine => Choice::Mine,
                FieldChoice::Theirs => Choice::Theirs,
                FieldChoice::Pick(n) => Choice::Pick(n),
                FieldChoice::Value(v) => Choice::Value(parse(&v)?),
            };
            let fix = match &choice {
                Choice::Value(v) => Some(v.clone()),
                _ => None,
            };
            match (d.resolve_field(id, &slot, choice), fix) {
                (Ok(()), _) => {}
                // Not a field conflict: a value the CRM refused is fixed by writing a new one.
                (Err(DeviceError::NoConflict { .. }), Some(value)) => {
                    return match d.fix_refused_value(id, &slot, value) {
                        Ok(()) => Ok(done(
                            slot.to_string(),
                            "value",
                            format!("changed {slot} in {id}"),
                        )),
                        Err(DeviceError::NoConflict { .. }) => Err(no_conflict()),
                        Err(e) => Err(cli_error(e, path)),
                    };
                }
                (Err(DeviceError::NoConflict { .. }), None) => return Err(no_conflict()),
                (Err(e), _) => return Err(cli_error(e, path)),
            }
            Ok(done(
                slot.to_string(),
                "field",
                format!("resolved {slot} in {id}"),
            ))
        }
    }
}

/// The catalog the hub shared, or its JSON.
fn catalog(d: &Device, json_out: bool) -> Result<()> {
    let c = d.catalog()?;
    if json_out {
        return print_json(&c);
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

fn conflicts(d: &Device, path: &Path, json_out: bool) -> Result<()> {
    let mut rows = d.conflicts().at(path)?;
    rows.sort_by(|a, b| show::natural_cmp(a.record.as_str(), b.record.as_str()));
    if json_out {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                let list: Vec<&Conflict> = r.conflicts.iter().map(|c| &c.conflict).collect();
                json!({ "record": r.record.as_str(), "conflicts": list })
            })
            .collect();
        return print_json(&v);
    }
    let catalog = d.catalog().at(path)?;
    let names = show::Names { catalog: &catalog };
    for r in &rows {
        let p = d.record(&r.record).at(path)?;
        for line in show::conflicts(names, &show::title(&r.record, Some(&p)), &p.conflicts) {
            outln!("{line}")?;
        }
    }
    Ok(())
}
