//! `sellsync hub`: run a hub, issue and revoke device tokens.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use sellsync_hub_bridge::{Bridge, BridgeConfig, Progress, ZendeskHttp, status_path};
use sellsync_model::{Catalog, DeviceId, UserId};
use sellsync_service::net::{self, NetConfig, SharedNode};
use sellsync_service::{Acl, Node, credential, token};
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
        None => serve(args.run),
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
    let store = open_hub(path, node)?;
    let hub = store.read()?.identity()?.context("hub identity")?.device_id;
    let device: DeviceId = device.parse().context("--device")?;
    let now = net::now_ms();
    let expires = expires_in.map(|s| now.saturating_add(s.saturating_mul(1000)));
    let issued = store.write(|w| w.issue_token(UserId(user), &device, now, expires))?;
    let full = token::format(&hub, UserId(user), &device, &issued.token);
    if json {
        println!(
            "{}",
            serde_json::json!({
                "token": full,
                "token_id": issued.info.token_id,
                "user": user,
                "device": device.as_str(),
                "hub": hub.as_str(),
                "expires_at_ms": expires,
            })
        );
    } else {
        println!("{full}");
        eprintln!(
            "token id {} for user {user} on device {device}",
            issued.info.token_id
        );
    }
    Ok(())
}

fn revoke(path: &Path, token_id: Option<String>, device: Option<String>, json: bool) -> Result<()> {
    let store =
        Arc::new(Store::open(path).with_context(|| format!("opening store {}", path.display()))?);
    let now = net::now_ms();
    let revoked = match (token_id, device) {
        (Some(id), _) => usize::from(store.write(|w| w.revoke_token(&id, now))?),
        (None, Some(d)) => {
            let d: DeviceId = d.parse().context("--device")?;
            store.write(|w| w.revoke_device_tokens(&d, now))?
        }
        (None, None) => bail!("give --token-id or --device"),
    };
    if json {
        println!("{}", serde_json::json!({ "revoked": revoked }));
    } else {
        println!("revoked {revoked} token(s)");
    }
    Ok(())
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
    if let Some(p) = &run.catalog {
        let text =
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        let catalog: Catalog =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))?;
        node.write_catalog(&catalog, net::now_ms())?;
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
    let every = Duration::from_secs(run.bridge_every.max(1));
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .with_context(|| format!("listening on {listen}"))?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let bridge_task = match bridge {
            Some(b) => {
                if !b.imported().await? {
                    import_with_progress(&b).await?;
                }
                Some(tokio::spawn(async move {
                    let mut stopped = stopped;
                    b.run(every, async move {
                        let _ = stopped.changed().await;
                    })
                    .await;
                }))
            }
            None => None,
        };
        println!("listening on {scheme}://{addr}/");
        net::serve_tls(
            listener,
            shared,
            move || Session::accept(accept.clone()),
            NetConfig::default(),
            tls,
            async {
                let _ = tokio::signal::ctrl_c().await;
            },
        )
        .await;
        let _ = stop.send(true);
        if let Some(t) = bridge_task {
            let _ = t.await;
        }
        Ok(())
    })
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
