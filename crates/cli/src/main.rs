//! `sellsync`: the command-line entry point.

mod device_cmd;
mod hub_cmd;
mod sim_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod demo;

/// Offline-first sync for Zendesk Sell.
#[derive(Debug, Parser)]
#[command(name = "sellsync", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Tell the whole story on the embedded simulator, in one process.
    Demo,
    /// Run the Zendesk Sell simulator until ctrl-c.
    Sim(sim_cmd::SimArgs),
    /// Run a hub, or issue and revoke its device tokens.
    Hub(hub_cmd::HubArgs),
    /// A rep's device: enrol, sync, read and edit records.
    Device(device_cmd::DeviceArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Demo => {
            print!("{}", demo::run()?);
            Ok(())
        }
        Command::Sim(args) => sim_cmd::run(args),
        Command::Hub(args) => hub_cmd::run(args),
        Command::Device(args) => device_cmd::run(args),
    }
}
