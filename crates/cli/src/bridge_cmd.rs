//! `sellsync bridge status`: what the hub's bridge is doing, from the status file the hub keeps
//! next to its store (readable while the hub runs and holds the store). `sellsync bridge sync`:
//! one import/pull/push round on a stopped hub's store.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use sellsync_hub_bridge::{
    Bridge, BridgeConfig, BridgeStatus, Crm, Reach, RunSummary, ZendeskHttp, status_path,
};
use sellsync_service::Node;
use sellsync_service::net::SharedNode;
use sellsync_store::{Role, Store, StoreRead};

/// The hub's bridge to Zendesk.
#[derive(Debug, Args)]
pub(crate) struct BridgeArgs {
    #[command(subcommand)]
    cmd: BridgeCmd,
}

#[derive(Debug, Subcommand)]
enum BridgeCmd {
    /// The queue, the last import, pull and push, and recent errors.
    Status {
        /// The hub's store file.
        #[arg(long)]
        store: PathBuf,
        /// Print JSON (the status file's content).
        #[arg(long)]
        json: bool,
    },
    /// One round on a hub's store while the hub is stopped: import if never done, pull, push;
    /// then exit. Safe to interrupt at any moment: the next round resumes from the checkpoint.
    Sync {
        /// The hub's store file.
        #[arg(long)]
        store: PathBuf,
        /// The Zendesk Sell account (e.g. https://api.getbase.com, or a simulator's URL).
        #[arg(long)]
        zendesk_url: String,
        /// The bridge's Zendesk access token.
        #[arg(long, env = "SELLSYNC_ZENDESK_TOKEN", hide_env_values = true)]
        zendesk_token: String,
        /// Most requests per second (Zendesk allows 36,000 an hour); 0: no limit.
        #[arg(long, default_value_t = 10.0)]
        zendesk_rate: f64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn sync_once(store: &Path, url: &str, token: &str, rate: f64, json_out: bool) -> Result<()> {
    let opened =
        Arc::new(Store::open(store).with_context(|| format!("opening store {}", store.display()))?);
    match opened.read()?.identity()? {
        Some(id) if id.role == Role::Hub => {}
        Some(_) => bail!("{} is a device's store, not a hub's", store.display()),
        None => bail!("{} is not an initialised hub store", store.display()),
    }
    let node: SharedNode = Arc::new(Mutex::new(Node::open(opened, None)?));
    let bridge = Bridge::new(
        ZendeskHttp::new(url, token, rate, Duration::from_secs(30))?,
        node,
        BridgeConfig {
            crm_url: url.to_owned(),
            status_file: Some(status_path(store)),
            ..BridgeConfig::default()
        },
    );
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let imported = if bridge.imported().await? {
            None
        } else {
            Some(bridge.import(&|_| {}).await?)
        };
        let (pulled, pushed) = bridge.round().await?;
        if json_out {
            println!(
                "{}",
                serde_json::json!({
                    "imported": imported.as_ref().map(|r| r.records + r.activities),
                    "pulled": pulled.changed.len(),
                    "pushed": pushed.pushed.len(),
                    "refused": pushed.refused.len(),
                    "gone": pushed.gone.len(),
                    "moved": pushed.moved.len(),
                    "gave_up": pushed.gave_up.len(),
                    "waiting": pushed.waiting.len(),
                    "requests": bridge.crm().calls(),
                })
            );
        } else {
            if let Some(r) = &imported {
                println!(
                    "imported {} records and {} activities",
                    r.records, r.activities
                );
            }
            println!(
                "pulled {} changed record(s); pushed {} operation(s), {} refused, {} gone, {} moved, {} given up, {} waiting; {} requests",
                pulled.changed.len(),
                pushed.pushed.len(),
                pushed.refused.len(),
                pushed.gone.len(),
                pushed.moved.len(),
                pushed.gave_up.len(),
                pushed.waiting.len(),
                bridge.crm().calls()
            );
        }
        Ok::<(), anyhow::Error>(())
    })
}

fn when(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    )
}

fn line(name: &str, run: Option<&RunSummary>) -> String {
    match run {
        None => format!("{name:<8} never"),
        Some(r) => format!(
            "{name:<8} {} ({} ms): {} done, {} refused, {} waiting, {} requests: {}",
            when(r.started_ms),
            r.ended_ms - r.started_ms,
            r.done,
            r.refused,
            r.waiting,
            r.requests,
            r.result
        ),
    }
}

/// "Zendesk unreachable since T, N retries, last error: E", or when it last answered.
fn reach_line(r: &Reach) -> String {
    match (r.unreachable_since_ms, r.last_reached_ms) {
        (Some(since), _) => format!(
            "UNREACHABLE since {}, {} retries, last error: {}",
            when(since),
            r.retries,
            r.last_error.as_deref().unwrap_or("unknown")
        ),
        (None, Some(at)) => format!("last answered {}", when(at)),
        (None, None) => "never contacted".to_owned(),
    }
}

pub(crate) fn run(args: BridgeArgs) -> Result<()> {
    match args.cmd {
        BridgeCmd::Sync {
            store,
            zendesk_url,
            zendesk_token,
            zendesk_rate,
            json,
        } => sync_once(&store, &zendesk_url, &zendesk_token, zendesk_rate, json),
        BridgeCmd::Status { store, json } => {
            let path = status_path(&store);
            let bytes = std::fs::read(&path).with_context(|| {
                format!(
                    "no bridge status at {} (has a hub run on {} with --zendesk-url?)",
                    path.display(),
                    store.display()
                )
            })?;
            let status: BridgeStatus = serde_json::from_slice(&bytes)
                .with_context(|| format!("{} does not read as a bridge status", path.display()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
                return Ok(());
            }
            println!("CRM      {}", status.crm_url);
            println!("reached  {}", reach_line(&status.crm_reach));
            println!(
                "user     {}",
                status
                    .crm_user
                    .map_or_else(|| "unknown".to_owned(), |u| u.to_string())
            );
            println!(
                "pull     via {}",
                if status.pull_mode.is_empty() {
                    "-"
                } else {
                    &status.pull_mode
                }
            );
            println!(
                "queue    {} record(s) waiting{}",
                status.queue,
                if status.push_in_progress {
                    "; a push was interrupted and resumes from its checkpoint"
                } else {
                    ""
                }
            );
            println!("requests {}", status.requests);
            println!("{}", line("import", status.last_import.as_ref()));
            println!("{}", line("pull", status.last_pull.as_ref()));
            println!("{}", line("push", status.last_push.as_ref()));
            if status.errors.is_empty() {
                println!("errors   none");
            }
            for e in &status.errors {
                println!(
                    "error    {} {}{}: {}",
                    when(e.at_ms),
                    e.step,
                    e.record
                        .as_ref()
                        .map(|r| format!(" {r}"))
                        .unwrap_or_default(),
                    e.message
                );
            }
            Ok(())
        }
    }
}
