//! `sellsync device`: a rep's device: enrol with a hub, sync, read and edit records.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use sellsync_model::{
    ActivityId, Choice, Chosen, Conflict, Edit, FieldKey, Projection, RecordId, RecordKind, Slot,
    Value, parse_input,
};
use sellsync_model::{CrmReach, DeviceId};
use sellsync_service::net::{self, NetConfig, Outcome, SharedNode};
use sellsync_service::{Node, NodeError, credential, token};
use sellsync_store::{NodeIdentity, NotificationFilter, Role as StoreRole, Store, StoreRead};
use sellsync_sync::{Limits, Session};
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
    },
    /// One sync round with the hub (or with a LAN peer): prints what moved, exits.
    Sync {
        /// Sync with this LAN peer (a device running `serve`, e.g. ws://10.0.0.7:7071/)
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
    /// Show one record as projected (fields, conflicts, notifications, audit).
    Show {
        /// The record id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create a deal: FIELD=VALUE pairs (name, value, currency, stage_id required; owner_id
    /// defaults to this device's user). Prints the new id.
    CreateDeal {
        /// The record id (default: generated).
        #[arg(long)]
        id: Option<String>,
        /// FIELD=VALUE pairs.
        fields: Vec<String>,
    },
    /// Set fields of a record: FIELD=VALUE pairs (an empty value clears the field).
    Set {
        /// The record id.
        id: String,
        /// FIELD=VALUE pairs.
        #[arg(required = true)]
        fields: Vec<String>,
    },
    /// Add a note to a record.
    Note {
        /// The record id.
        id: String,
        /// The note's text.
        text: String,
    },
    /// Add (+TAG) or remove (-TAG) tags.
    Tag {
        /// The record id.
        id: String,
        /// +TAG or -TAG, several allowed.
        #[arg(required = true, allow_hyphen_values = true)]
        tags: Vec<String>,
    },
    /// Delete a record.
    Delete {
        /// The record id.
        id: String,
    },
    /// List open conflicts of every record.
    Conflicts {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Settle a field conflict.
    Resolve {
        /// The record id.
        id: String,
        /// The field (e.g. value, custom_fields.Region, <activity id>.completed).
        field: String,
        /// Keep the value written on this device.
        #[arg(long, group = "choice")]
        mine: bool,
        /// Keep the other value.
        #[arg(long, group = "choice")]
        theirs: bool,
        /// Keep candidate N (1-based, as listed by `conflicts`).
        #[arg(long, group = "choice")]
        pick: Option<usize>,
        /// Write a new value.
        #[arg(long, group = "choice")]
        value: Option<String>,
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
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn open_node(path: &Path) -> Result<Node> {
    let store =
        Arc::new(Store::open(path).with_context(|| format!("opening store {}", path.display()))?);
    let mut node = Node::open(store, None)?;
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

fn record_id(s: &str) -> Result<RecordId> {
    s.parse().map_err(|e| anyhow!("record id {s:?}: {e}"))
}

fn field_key(s: &str) -> Result<FieldKey> {
    s.parse().map_err(|e: String| anyhow!("field {s:?}: {e}"))
}

fn parse_pairs(node: &Node, kind: RecordKind, pairs: &[String]) -> Result<Vec<(FieldKey, Value)>> {
    pairs
        .iter()
        .map(|p| {
            let (k, v) = p
                .split_once('=')
                .ok_or_else(|| anyhow!("expected FIELD=VALUE, got {p:?}"))?;
            let key = field_key(k)?;
            let value = parse_input(node.replica_ref().catalog(), kind, None, &key, v)?;
            Ok((key, value))
        })
        .collect()
}

fn projection(node: &mut Node, id: &RecordId) -> Result<Projection> {
    node.project(id)?
        .ok_or_else(|| anyhow!("no record {id} on this device"))
}

fn kind_of(node: &mut Node, id: &RecordId) -> Result<RecordKind> {
    Ok(projection(node, id)?.record.kind)
}

fn print_json(v: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub(crate) fn run(args: DeviceArgs) -> Result<()> {
    let now = net::now_ms();
    if let DeviceCmd::Init { hub, token, ca } = &args.cmd {
        return init(&args.store, hub, token, ca.as_deref());
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
        DeviceCmd::Serve { listen } => serve(node, &listen),
        DeviceCmd::Deals { json } => deals(&mut node, json),
        DeviceCmd::Show { id, json } => {
            let p = projection(&mut node, &record_id(&id)?)?;
            if json {
                return print_json(&p);
            }
            println!("{} {} ({:?})", p.record.kind, p.record.id, p.record.state);
            for (k, v) in &p.record.fields {
                println!("  {:<24} {v}", k.to_string());
            }
            if !p.record.tags.is_empty() {
                let tags: Vec<&str> = p.record.tags.iter().map(String::as_str).collect();
                println!("  {:<24} {}", "tags", tags.join(", "));
            }
            for a in &p.record.activities {
                println!(
                    "  {} {}: {}",
                    a.kind,
                    a.id,
                    a.content.clone().unwrap_or_default()
                );
            }
            print_conflicts(&p.record.id, &p.conflicts);
            Ok(())
        }
        DeviceCmd::CreateDeal { id, fields } => {
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
            println!("{id}");
            Ok(())
        }
        DeviceCmd::Set { id, fields } => {
            let id = record_id(&id)?;
            let kind = kind_of(&mut node, &id)?;
            let edits = parse_pairs(&node, kind, &fields)?
                .into_iter()
                .map(|(k, v)| Edit::Set(k, v))
                .collect::<Vec<_>>();
            node.apply(&id, "set", &edits, now)?;
            Ok(())
        }
        DeviceCmd::Note { id, text } => {
            let id = record_id(&id)?;
            let note: ActivityId = format!("note-{}-{now:x}", node.id())
                .parse()
                .map_err(|e| anyhow!("note id: {e}"))?;
            node.apply(
                &id,
                "note",
                &[Edit::AddNote {
                    id: note,
                    content: text,
                }],
                now,
            )?;
            Ok(())
        }
        DeviceCmd::Tag { id, tags } => {
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
            Ok(())
        }
        DeviceCmd::Delete { id } => {
            node.apply(&record_id(&id)?, "delete", &[Edit::DeleteRecord], now)?;
            Ok(())
        }
        DeviceCmd::Conflicts { json } => conflicts(&mut node, json),
        DeviceCmd::Resolve {
            id,
            field,
            mine,
            theirs,
            pick,
            value,
        } => {
            let id = record_id(&id)?;
            let slot: Slot = field.parse().map_err(|e: String| anyhow!("{field}: {e}"))?;
            let p = projection(&mut node, &id)?;
            let seen: Vec<String> = p
                .conflicts
                .iter()
                .find_map(|c| match c {
                    Conflict::Field {
                        slot: s,
                        candidates,
                        ..
                    } if *s == slot => Some(candidates.iter().map(|c| c.op.clone()).collect()),
                    _ => None,
                })
                .ok_or_else(|| anyhow!("no open conflict on {slot} in {id}"))?;
            let choice = match (mine, theirs, pick, value) {
                (true, ..) => Choice::Mine,
                (_, true, ..) => Choice::Theirs,
                (_, _, Some(n), _) => Choice::Pick(n),
                (_, _, _, Some(v)) => Choice::Value(parse_input(
                    node.replica_ref().catalog(),
                    p.record.kind,
                    None,
                    &slot.field,
                    &v,
                )?),
                _ => bail!("give one of --mine, --theirs, --pick N, --value V"),
            };
            node.act(&id, now, |rd, ctx| {
                rd.resolve_field(ctx, &slot, &seen, choice)
                    .map_err(|e| NodeError::Refused(e.to_string()))
            })?;
            println!("resolved {slot} in {id}");
            Ok(())
        }
        DeviceCmd::Audit { id, json } => {
            let p = projection(&mut node, &record_id(&id)?)?;
            if json {
                return print_json(&p.audit);
            }
            for e in &p.audit {
                let slot = e
                    .slot
                    .as_ref()
                    .map_or_else(|| "record".to_owned(), ToString::to_string);
                let who =
                    e.by.map_or_else(|| "automatically".to_owned(), |u| format!("by user {u}"));
                let chosen = match &e.chosen {
                    Chosen::Value(v) => v.to_string(),
                    Chosen::Restore => "restore".to_owned(),
                    Chosen::Delete => "delete".to_owned(),
                };
                println!("{slot} [{}] chose {chosen} {who} at {}", e.policy, e.at);
            }
            Ok(())
        }
        DeviceCmd::Notifications { json } => {
            let list = node.store().read()?.notifications(&NotificationFilter {
                user: Some(node.user()),
                ..NotificationFilter::default()
            })?;
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
            if json {
                return print_json(&rows);
            }
            for r in &rows {
                println!("{}: {}", r["id"], r["body"]);
            }
            Ok(())
        }
    }
}

/// The key-value entry holding the PEM certificate a device trusts for its hub.
const HUB_CA_KEY: &str = "device/hub_ca_pem";

fn init(path: &Path, hub: &str, token_text: &str, ca: Option<&Path>) -> Result<()> {
    let enrolled = token::parse(token_text)?;
    let ca_pem = match ca {
        Some(p) => {
            // Checked now so that a bad file is refused before anything is written.
            net::tls_connector(p)?;
            Some(std::fs::read(p).with_context(|| format!("reading {}", p.display()))?)
        }
        None if hub.starts_with("wss://") => bail!("a wss:// hub needs --ca"),
        None => None,
    };
    let store = Store::open(path).with_context(|| format!("opening store {}", path.display()))?;
    if store.read()?.identity()?.is_some() {
        bail!("{} is already initialised", path.display());
    }
    let identity = NodeIdentity {
        device_id: enrolled.device.clone(),
        user_id: enrolled.user,
        role: StoreRole::Device,
        hub_url: Some(hub.to_owned()),
        hub_token: Some(enrolled.token),
    };
    store.write(|w| {
        w.set_identity(&identity)?;
        if let Some(pem) = &ca_pem {
            w.kv_put(HUB_CA_KEY, pem)?;
        }
        Ok(())
    })?;
    // The device's own key pair, certified by the hub at each sync.
    credential::load_or_create_key(&store, credential::DEVICE_KEY)?;
    println!(
        "initialised device {} for user {} with hub {} at {hub}",
        enrolled.device, enrolled.user, enrolled.hub
    );
    Ok(())
}

/// Whom a sync is with.
enum Target<'a> {
    /// The hub, at the URL given at init or at this one.
    Hub(Option<&'a str>),
    /// A LAN peer at this URL, expected to be this device if given.
    Peer(&'a str, Option<&'a str>),
}

fn sync(node: Node, target: Target<'_>, json_out: bool) -> Result<()> {
    let id = node.identity().clone();
    let (url, cfg, tls) = match target {
        Target::Hub(moved) => {
            let url = match moved {
                Some(u) => u.to_owned(),
                None => id.hub_url.clone().context("no hub URL: run init")?,
            };
            let cfg = credential::hub_dial_config(&node, Limits::default())?;
            let tls = match node.store().read()?.kv_get(HUB_CA_KEY)? {
                Some(pem) => Some(net::tls_connector_pem(&pem)?),
                None => None,
            };
            (url, cfg, tls)
        }
        Target::Peer(url, peer_id) => {
            if url.starts_with("wss://") {
                bail!("LAN peers serve plain ws:// (each side proves itself with its credential)");
            }
            let expected = peer_id
                .map(|p| p.parse::<DeviceId>())
                .transpose()
                .map_err(|e| anyhow!("--peer-id: {e}"))?;
            let cfg = credential::lan_dial_config(&node, expected, Limits::default())?;
            warn_if_own_credential_invalid(&node);
            (url.to_owned(), cfg, None)
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
            "changed": ids(&out.changed),
            "revoked": ids(&out.revoked),
            "frames_sent": out.frames_sent,
            "frames_received": out.frames_received,
            "bytes_sent": out.bytes_sent,
            "bytes_received": out.bytes_received,
            "closed": out.closed.as_ref().map(|c| format!("{c:?}")),
            "error": out.error,
        }))?;
    } else {
        println!(
            "sync {}: {} record(s) received, {} revoked; sent {} B in {} frame(s), received {} B in {} frame(s)",
            if out.finished {
                "complete"
            } else {
                "incomplete"
            },
            out.changed.len(),
            out.revoked.len(),
            out.bytes_sent,
            out.frames_sent,
            out.bytes_received,
            out.frames_received
        );
        for c in &out.changed {
            println!("  changed {c}");
        }
        if let Some(line) = reach.as_ref().and_then(crm_reach_line) {
            println!("{line}");
        }
    }
    if let Some(reason) = out.closed {
        bail!("sync did not complete: {reason:?}");
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
fn serve(node: Node, listen: &str) -> Result<()> {
    // Checked before listening: a device without a grant cannot prove itself to anyone. The
    // credential does not change while serving (the store stays open here); each session only
    // draws a fresh nonce.
    let base = credential::lan_accept_config(&node, Limits::default())?;
    warn_if_own_credential_invalid(&node);
    let shared: SharedNode = Arc::new(Mutex::new(node));
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
        println!("listening on ws://{addr}/");
        net::serve(listener, shared, make, NetConfig::default(), async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await;
        Ok(())
    })
}

fn deals(node: &mut Node, json_out: bool) -> Result<()> {
    let mut held = Vec::new();
    for (id, kind) in node.records()? {
        if kind != "deal" {
            continue;
        }
        if let Some(p) = node.project(&id)? {
            held.push(p);
        }
    }
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
    let show = |p: &Projection, f: &str| {
        p.record
            .fields
            .get(&FieldKey::Std(f.to_owned()))
            .map_or_else(String::new, ToString::to_string)
    };
    for p in &held {
        println!(
            "{:<32} {:<28} {:>12} {:<4} conflicts: {}",
            p.record.id.as_str(),
            show(p, "name"),
            show(p, "value"),
            show(p, "currency"),
            p.conflicts.len()
        );
    }
    Ok(())
}

fn print_conflicts(id: &RecordId, conflicts: &[Conflict]) {
    for c in conflicts {
        match c {
            Conflict::Field {
                slot,
                tier,
                candidates,
            } => {
                println!("{id}: conflict on {slot} ({tier} tier)");
                for (i, cand) in candidates.iter().enumerate() {
                    // User 0 on the CRM's device: Zendesk, naming none of its users.
                    let who = if cand.by == sellsync_bridge::pull::CRM_USER {
                        "Zendesk".to_owned()
                    } else {
                        format!("user {} on {}", cand.by, cand.device)
                    };
                    println!("  [{}] {} by {who} at {}", i + 1, cand.value, cand.at);
                }
            }
            other => println!("{id}: {}", serde_json::to_string(other).unwrap_or_default()),
        }
    }
}

fn conflicts(node: &mut Node, json_out: bool) -> Result<()> {
    let all = node.store().read()?.all_conflicts()?;
    let mut rows = Vec::new();
    for (id, bytes) in all {
        let list: Vec<serde_json::Value> =
            serde_json::from_slice(&bytes).with_context(|| format!("conflicts view of {id}"))?;
        rows.push((id, list));
    }
    if json_out {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|(id, list)| json!({ "record": id.as_str(), "conflicts": list }))
            .collect();
        return print_json(&v);
    }
    for (id, _) in &rows {
        let p = projection(node, id)?;
        print_conflicts(id, &p.conflicts);
    }
    Ok(())
}
