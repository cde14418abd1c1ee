//! `sellsync bridge status`: what the hub's bridge is doing, from the status file the hub keeps
//! next to its store (readable while the hub runs and holds the store).

use std::path::PathBuf;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use sellsync_hub_bridge::{BridgeStatus, RunSummary, status_path};

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

pub(crate) fn run(args: BridgeArgs) -> Result<()> {
    match args.cmd {
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
