//! `sellsync hub`: run a hub, issue and revoke device tokens.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use sellsync_hub_bridge::{Bridge, BridgeConfig, Progress, ZendeskHttp, status_path};
use sellsync_model::{Catalog, DeviceId, Policy, UserId};
use sellsync_service::admin::{self, AdminRequest};
use sellsync_service::net::{self, NetConfig, SharedNode};
use sellsync_service::{Acl, Node, credential};
use sellsync_store::{NodeIdentity, Role as StoreRole, Store, StoreRead};
use sellsync_sync::{AcceptConfig, Limits, Role, Session};

/// Run the hub, or manage its device tokens.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct HubArgs {
    #[command(subcommand)]
    cmd: Option<HubCmd>,
    #[command(flatten)]
    run: HubRun,
}

impl HubArgs {
    /// Whether the command runs the hub until stopped (and logs what it serves).
    pub(crate) fn serves(&self) -> bool {
        self.cmd.is_none()
    }
}

#[derive(Debug, Args)]
struct HubRun {
    /// The hub's store file (created and initialised if new).
    #[arg(long)]
    store: Option<PathBuf>,
    /// Address to listen on, e.g. 0.0.0.0:7070 (port 0: any free port, printed at start).
    #[arg(long)]
    listen: Option<String>,
    /// Access file (TOML: admins, teams) mirroring Sell visibility.
    #[arg(long)]
    acl: Option<PathBuf>,
    /// Catalog to share with devices (JSON of a sellsync catalog), written before serving.
    #[arg(long)]
    catalog: Option<PathBuf>,
    /// The organisation's field policy (TOML: per-field tiers), checked at start and handed to
    /// every device with the catalog. Without it, the policy last given stays in force.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// The hub's node id, used when the store is new.
    #[arg(long, default_value = "hub")]
    node: String,
    /// TLS certificate chain (PEM); with --tls-key the hub serves wss://.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Run the bridge to this Zendesk Sell account (e.g. https://api.getbase.com, or a
    /// simulator's URL): import on first start, then pull and push.
    #[arg(long, requires = "zendesk_token")]
    zendesk_url: Option<String>,
    /// The bridge's Zendesk access token.
    #[arg(long, env = "SELLSYNC_ZENDESK_TOKEN", hide_env_values = true)]
    zendesk_token: Option<String>,
    /// Most requests per second the bridge sends (Zendesk allows 36,000 an hour); 0: no limit.
    #[arg(long, default_value_t = 10.0)]
    zendesk_rate: f64,
    /// Seconds between the bridge's pull-and-push rounds.
    #[arg(long, default_value_t = 10)]
    bridge_every: u64,
    /// Serve the dashboard (the organisation's open conflicts, the figures by week, the bridge,
    /// the devices) on this address, e.g. 127.0.0.1:7073; the link with its token is printed.
    #[arg(long)]
    ui: Option<String>,
    /// Seconds a peer credential handed to a device stays valid (default: 7 days).
    #[arg(long, default_value_t = credential::DEFAULT_CREDENTIAL_TTL_MS / 1000)]
    credential_ttl: i64,
}

#[derive(Debug, Subcommand)]
enum HubCmd {
    /// Issue a device token (printed once; the hub keeps only its hash).
    Token {
        /// The hub's store file (created and initialised if new).
        #[arg(long)]
        store: PathBuf,
        /// The user the device acts for.
        #[arg(long)]
        user: u64,
        /// The device's id (1-64 of A-Z a-z 0-9 _ -).
        #[arg(long)]
        device: String,
        /// Seconds until the token expires (default: never).
        #[arg(long)]
        expires_in: Option<i64>,
        /// The hub's node id, used when the store is new.
        #[arg(long, default_value = "hub")]
        node: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id, or every token of a device.
    Revoke {
        /// The hub's store file.
        #[arg(long)]
        store: PathBuf,
        /// The token id printed when it was issued.
        #[arg(long, conflicts_with = "device", required_unless_present = "device")]
        token_id: Option<String>,
        /// Revoke every live token of this device.
        #[arg(long)]
        device: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the devices the hub issued tokens to, with their tokens.
    Devices {
        /// The hub's store file.
        #[arg(long)]
        store: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The organisation's conflict figures, per week: share of syncs that met a conflict, share
    /// resolved automatically, median time to a person's decision; and who has conflicts
    /// waiting. Works while the hub runs.
    Stats {
        /// The hub's store file.
        #[arg(long)]
        store: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make a running hub read its access file (--acl) again.
    ReloadAcl {
        /// The hub's store file.
        #[arg(long)]
        store: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Opens a hub store, initialising its identity if it has none.
fn open_hub(path: &Path, node: &str) -> Result<Arc<Store>> {
    let store =
        Arc::new(Store::open(path).with_context(|| format!("opening store {}", path.display()))?);
    match store.read()?.identity()? {
        Some(id) if id.role == StoreRole::Hub => {}
        Some(_) => bail!("{} is a device's store, not a hub's", path.display()),
        None => {
            let device_id: DeviceId = node.parse().context("--node")?;
            Node::init(
                &store,
                &NodeIdentity {
                    device_id,
                    user_id: UserId(0),
                    role: StoreRole::Hub,
                    hub_url: None,
                    hub_token: None,
                },
            )?;
        }
    }
    Ok(store)
}

pub(crate) fn run(args: HubArgs) -> Result<()> {
    match args.cmd {
        Some(HubCmd::Token {
            store,
            user,
            device,
            expires_in,
            node,
            json,
        }) => issue(&store, &node, user, &device, expires_in, json),
        Some(HubCmd::Revoke {
            store,
            token_id,
            device,
            json,
        }) => revoke(&store, token_id, device, json),
        Some(HubCmd::Devices { store, json }) => devices(&store, json),
        Some(HubCmd::ReloadAcl { store, json }) => reload_acl(&store, json),
        Some(HubCmd::Stats { store, json }) => stats(&store, json),
        None => serve(args.run),
    }
}

/// Sends `req` to the hub running on `store`, if one runs: `None` when none does (the caller
/// then opens the store itself).
fn ask_running_hub(store: &Path, req: &AdminRequest) -> Result<Option<serde_json::Value>> {
    #[cfg(unix)]
    {
        match admin::call(&admin::socket_path(store), req)? {
            None => Ok(None),
            Some(admin::AdminAnswer::Ok(v)) => Ok(Some(v)),
            Some(admin::AdminAnswer::Error(e)) => bail!("{e}"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (store, req);
        Ok(None)
    }
}

fn issue(
    path: &Path,
    node: &str,
    user: u64,
    device: &str,
    expires_in: Option<i64>,
    json: bool,
) -> Result<()> {
    let req = AdminRequest::Token {
        user,
        device: device.to_owned(),
        expires_in,
    };
    let issued: admin::IssuedOut = match ask_running_hub(path, &req)? {
        Some(v) => serde_json::from_value(v).context("the hub's answer")?,
        None => {
            let store = open_hub(path, node)?;
            admin::issue_token(&store, user, device, expires_in, net::now_ms())?
        }
    };
    if json {
        println!("{}", serde_json::to_value(&issued)?);
    } else {
        println!("{}", issued.token);
        eprintln!(
            "token id {} for user {user} on device {}",
            issued.token_id, issued.device
        );
    }
    Ok(())
}

/// Opens the store of a stopped hub (refusing a device's store).
fn open_stopped_hub(path: &Path) -> Result<Arc<Store>> {
    if !path.exists() {
        bail!("no store at {}", path.display());
    }
    let store =
        Arc::new(Store::open(path).with_context(|| format!("opening store {}", path.display()))?);
    match store.read()?.identity()? {
        Some(id) if id.role == StoreRole::Hub => Ok(store),
        Some(_) => bail!("{} is a device's store, not a hub's", path.display()),
        None => bail!(
            "{} is not initialised (run the hub or `hub token` first)",
            path.display()
        ),
    }
}

fn revoke(path: &Path, token_id: Option<String>, device: Option<String>, json: bool) -> Result<()> {
    let req = AdminRequest::Revoke { token_id, device };
    let AdminRequest::Revoke { token_id, device } = &req else {
        unreachable!("built above")
    };
    let revoked = match ask_running_hub(path, &req)? {
        Some(v) => v["revoked"].as_u64().context("the hub's answer")? as usize,
        None => {
            let store = open_stopped_hub(path)?;
            admin::revoke(
                &store,
                token_id.as_deref(),
                device.as_deref(),
                net::now_ms(),
            )?
        }
    };
    if json {
        println!("{}", serde_json::json!({ "revoked": revoked }));
    } else {
        println!("revoked {revoked} token(s)");
    }
    Ok(())
}

fn devices(path: &Path, json: bool) -> Result<()> {
    let list: Vec<admin::DeviceEntry> = match ask_running_hub(path, &AdminRequest::Devices)? {
        Some(v) => serde_json::from_value(v).context("the hub's answer")?,
        None => admin::devices(&*open_stopped_hub(path)?, net::now_ms())?,
    };
    if json {
        println!("{}", serde_json::to_value(&list)?);
        return Ok(());
    }
    for d in &list {
        let ids: Vec<&str> = d.tokens.iter().map(|t| t.token_id.as_str()).collect();
        let last_sync = d.last_sync_ms.map_or_else(
            || "never synced".to_owned(),
            |t| format!("synced {}", sellsync_ui::pages::ago(net::now_ms(), t)),
        );
        println!(
            "{:<24} user {:<8} {:<8} {:<32} tokens {}",
            d.device,
            d.user,
            if d.live { "live" } else { "revoked" },
            last_sync,
            ids.join(", ")
        );
    }
    Ok(())
}

fn stats(path: &Path, json: bool) -> Result<()> {
    use sellsync_service::stats::Stats;
    let stats: Stats = match ask_running_hub(path, &AdminRequest::Stats)? {
        Some(v) => serde_json::from_value(v).context("the hub's answer")?,
        None => Node::open(open_stopped_hub(path)?, Some(Acl::default()))?.stats()?,
    };
    if json {
        println!("{}", serde_json::to_value(&stats)?);
        return Ok(());
    }
    let now = net::now_ms();
    let pct = |s: Option<f64>| s.map_or("-".to_owned(), |s| format!("{:.0}%", s * 100.0));
    let span = sellsync_ui::pages::duration;
    println!("open conflicts: {}", stats.open_conflicts);
    if !stats.waiting.is_empty() {
        println!("waiting for a decision:");
    }
    for w in &stats.waiting {
        let who = w.name.clone().unwrap_or_else(|| format!("user {}", w.user));
        println!(
            "  {who} (user {}): {} open, the oldest for {}",
            w.user,
            w.open,
            span((now - w.oldest_ms).max(0))
        );
    }
    if stats.weeks.is_empty() {
        println!("no syncs or resolutions yet");
        return Ok(());
    }
    println!(
        "{:<9} {:>6} {:>15} {:>9} {:>7} {:>11} {:>17}",
        "week", "syncs", "with conflicts", "auto", "manual", "auto share", "median to decide"
    );
    for w in &stats.weeks {
        println!(
            "{:<9} {:>6} {:>15} {:>9} {:>7} {:>11} {:>17}",
            w.week,
            w.syncs,
            pct(w.share_of_syncs_with_conflicts),
            w.resolved_automatically,
            w.resolved_manually,
            pct(w.share_resolved_automatically),
            w.median_ms_to_manual_resolution
                .map_or("-".to_owned(), span)
        );
    }
    Ok(())
}

fn reload_acl(path: &Path, json: bool) -> Result<()> {
    match ask_running_hub(path, &AdminRequest::ReloadAcl)? {
        Some(v) => {
            if json {
                println!("{v}");
            } else {
                println!("{}", v["reloaded"].as_str().unwrap_or("reloaded"));
            }
            Ok(())
        }
        None => bail!(
            "no hub is running on {}: the access file is read when the hub starts",
            path.display()
        ),
    }
}

fn serve(run: HubRun) -> Result<()> {
    let path = run.store.context("--store is required")?;
    let listen = run.listen.context("--listen is required")?;
    if run.credential_ttl < 0 {
        bail!("--credential-ttl must be 0 or more seconds");
    }
    let acl_text = match &run.acl {
        Some(p) => {
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?
        }
        None => String::new(),
    };
    let acl = Acl::from_toml(&acl_text)?;
    // The catalog and policy files are read and checked before anything is written: a bad file
    // is an error at start and changes nothing.
    let catalog: Option<Catalog> = match &run.catalog {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            Some(serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))?)
        }
        None => None,
    };
    let policy_text = match &run.policy {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            let policy = Policy::from_toml(&text)
                .with_context(|| format!("{} is not a usable policy file", p.display()))?;
            if let Some(c) = &catalog {
                policy
                    .check_against(c)
                    .with_context(|| format!("{} is not a usable policy file", p.display()))?;
            }
            Some(text)
        }
        None => None,
    };
    let tls = match (&run.tls_cert, &run.tls_key) {
        (Some(c), Some(k)) => Some(net::tls_acceptor(c, k)?),
        _ => None,
    };
    let scheme = if tls.is_some() { "wss" } else { "ws" };
    let store = open_hub(&path, &run.node)?;
    let mut node = Node::open(store.clone(), Some(acl))?;
    // Every device that syncs gets a grant: its peer credential, these access rules and the
    // revocation list, signed by the hub's key (created on first need).
    let issuer = credential::Issuer::load(
        &store,
        node.id().clone(),
        acl_text,
        run.credential_ttl.saturating_mul(1000),
    )?;
    node.replica().set_issuer(Some(issuer));
    if let Some(catalog) = &catalog {
        node.write_catalog(catalog, net::now_ms())?;
    }
    if let (Some(p), Some(text)) = (&run.policy, &policy_text) {
        let version = node
            .write_policy(text, net::now_ms())
            .with_context(|| format!("{} is not a usable policy file", p.display()))?;
        tracing::info!("policy {} in force (version {version})", p.display());
    }
    let accept = AcceptConfig {
        node: node.id().clone(),
        role: Role::Hub,
        token: Vec::new(),
        mutual: false,
        nonce: Vec::new(),
        limits: Limits::default(),
    };
    let shared: SharedNode = Arc::new(Mutex::new(node));
    let bridge = match (&run.zendesk_url, &run.zendesk_token) {
        (Some(url), Some(tok)) => {
            let crm = ZendeskHttp::new(url, tok, run.zendesk_rate, Duration::from_secs(30))?;
            Some(Arc::new(Bridge::new(
                crm,
                shared.clone(),
                BridgeConfig {
                    crm_url: url.clone(),
                    status_file: Some(status_path(&path)),
                    ..BridgeConfig::default()
                },
            )))
        }
        _ => None,
    };
    let health_bridge = bridge.clone();
    let dashboard_bridge = bridge.clone();
    let reload = reload_acl_from(run.acl.clone(), run.credential_ttl.saturating_mul(1000));
    let every = Duration::from_secs(run.bridge_every.max(1));
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .with_context(|| format!("listening on {listen}"))?;
        let addr = listener.local_addr()?;
        // One ctrl-c stops everything, whatever the hub is doing: the first import, the
        // bridge's rounds, the listener.
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            match tokio::signal::ctrl_c().await {
                Ok(()) => {
                    let _ = stop.send(true);
                }
                // Without a signal handler nothing but a kill stops the hub; `stop` stays alive.
                Err(_) => std::future::pending::<()>().await,
            }
        });
        // Admin commands (token, revoke, devices, reload-acl) reach the running hub here.
        #[cfg(unix)]
        {
            let socket = admin::AdminSocket::bind(&path)?;
            tokio::spawn(socket.serve(shared.clone(), reload, stop_requested(stopped.clone())));
        }
        let bridge_task = match bridge {
            Some(b) => {
                if !b.imported().await? {
                    // Dropping the import between two writes is safe: each write is committed
                    // whole, the import is idempotent and only marked done at its end, so the
                    // next start imports again from the beginning.
                    tokio::select! {
                        r = import_with_progress(&b) => r?,
                        _ = stop_requested(stopped.clone()) => {
                            eprintln!("stopped during the first import; it runs again at the next start");
                            return Ok(());
                        }
                    }
                }
                let stopped = stopped.clone();
                Some(tokio::spawn(async move {
                    b.run(every, stop_requested(stopped)).await;
                }))
            }
            None => None,
        };
        println!("listening on {scheme}://{addr}/");
        if let Some(ui) = &run.ui {
            let listener = tokio::net::TcpListener::bind(ui)
                .await
                .with_context(|| format!("the dashboard: listening on {ui}"))?;
            let at = listener.local_addr()?;
            let config = sellsync_ui::UiConfig {
                token: sellsync_ui::new_token(),
                listen: at,
                sync_every: None,
            };
            // On stderr: stdout's first line is the sync address, which scripts read.
            eprintln!("dashboard on http://{at}/?token={}", config.token);
            let source = dashboard_source(shared.clone(), dashboard_bridge.clone());
            tokio::spawn(sellsync_ui::serve_hub(
                source,
                listener,
                config,
                stop_requested(stopped.clone()),
            ));
        }
        let extras = net::Extras {
            tls,
            health: Some(Arc::new(move || bridge_health(health_bridge.as_deref()))),
        };
        net::serve_nodes(
            listener,
            net::Nodes::Held(shared),
            move || Session::accept(accept.clone()),
            NetConfig::default(),
            extras,
            stop_requested(stopped),
        )
        .await;
        if let Some(t) = bridge_task {
            let _ = t.await;
        }
        Ok(())
    })
}

/// How the running hub reloads its access file: the file given with `--acl`, checked whole
/// (a file that does not parse changes nothing), then in force for every later session and in
/// every later grant.
fn reload_acl_from(file: Option<PathBuf>, ttl_ms: i64) -> admin::ReloadAcl {
    Arc::new(move |node: &mut Node| {
        let Some(file) = &file else {
            return Err("this hub was started without --acl; restart it with one".to_owned());
        };
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("reading {}: {e}", file.display()))?;
        let acl = Acl::from_toml(&text).map_err(|e| format!("{}: {e}", file.display()))?;
        let issuer = credential::Issuer::load(&node.store(), node.id().clone(), text, ttl_ms)
            .map_err(|e| format!("{}: {e}", file.display()))?;
        node.replica().set_access(None, acl);
        node.replica().set_issuer(Some(issuer));
        admin::reannounce_records(&node.store()).map_err(|e| e.to_string())?;
        Ok(format!("access file {} in force", file.display()))
    })
}

/// The bridge's part of `/healthz`: `{"bridge": null}` without one, else when its import,
/// pull or push last succeeded (the latest of the three), its queue and its last error.
fn bridge_health(
    bridge: Option<&Bridge<ZendeskHttp>>,
) -> serde_json::Map<String, serde_json::Value> {
    let value = match bridge {
        None => serde_json::Value::Null,
        Some(b) => {
            let status = b.status();
            let last_success_ms = [&status.last_import, &status.last_pull, &status.last_push]
                .into_iter()
                .flatten()
                .filter(|run| run.result == "ok")
                .map(|run| run.ended_ms)
                .max();
            serde_json::json!({
                "last_success_ms": last_success_ms,
                "queue": status.queue,
                "last_error": status.errors.back().map(|e| &e.message),
            })
        }
    };
    serde_json::Map::from_iter([("bridge".to_owned(), value)])
}

/// What the dashboard shows, read from the running hub on each request.
fn dashboard_source(
    node: SharedNode,
    bridge: Option<Arc<Bridge<ZendeskHttp>>>,
) -> sellsync_ui::DashboardSource {
    use sellsync_ui::pages::{BridgeHealth, Dashboard, Run};
    Arc::new(move || {
        let mut n = node
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let stats = n.stats().map_err(|e| e.to_string())?;
        let devices = admin::devices(&n.store(), net::now_ms()).map_err(|e| e.to_string())?;
        let users = n
            .replica_ref()
            .catalog()
            .users
            .values()
            .map(|u| (u.id, u.name.clone()))
            .collect();
        drop(n);
        let run = |r: &Option<sellsync_hub_bridge::RunSummary>| {
            r.as_ref().map(|r| Run {
                ended_ms: r.ended_ms,
                result: r.result.clone(),
                done: r.done,
            })
        };
        let bridge = bridge.as_deref().map(|b| {
            let s = b.status();
            BridgeHealth {
                crm_url: s.crm_url.clone(),
                last_pull: run(&s.last_pull),
                last_push: run(&s.last_push),
                queue: s.queue,
                unreachable_since_ms: s.crm_reach.unreachable_since_ms,
                last_error: s.errors.back().map(|e| e.message.clone()),
            }
        });
        Ok(Dashboard {
            stats,
            devices,
            bridge,
            users,
        })
    })
}

/// Resolves once a stop was requested (ctrl-c), or at once if it already was.
async fn stop_requested(mut stopped: tokio::sync::watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

/// The first import, with a progress line on stderr.
async fn import_with_progress(bridge: &Bridge<ZendeskHttp>) -> Result<()> {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} importing from Zendesk: {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let report = bridge
        .import(&|p| match p {
            Progress::Catalog => bar.set_message("catalog"),
            Progress::Objects { what, done } => bar.set_message(format!("{done} {what}")),
        })
        .await;
    bar.finish_and_clear();
    let report = report.context("importing from Zendesk")?;
    eprintln!(
        "imported {} deals and contacts, {} notes, tasks and calls in {} requests ({} left out)",
        report.records,
        report.activities,
        report.requests,
        report.skipped.len()
    );
    Ok(())
}
