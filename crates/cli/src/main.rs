//! `sellsync`: the command-line entry point.

mod bridge_cmd;
mod core_demo;
mod device_cmd;
mod hub_cmd;
mod sim_cmd;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

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
    /// Tell the whole story on the embedded simulator: hub, bridge and two devices, in one
    /// process on loopback sockets.
    Demo(DemoArgs),
    /// Run the Zendesk Sell simulator until ctrl-c.
    Sim(sim_cmd::SimArgs),
    /// Run a hub, or issue and revoke its device tokens.
    Hub(Box<hub_cmd::HubArgs>),
    /// A rep's device: enrol, sync, read and edit records.
    Device(device_cmd::DeviceArgs),
    /// The hub's bridge to Zendesk: its status.
    Bridge(bridge_cmd::BridgeArgs),
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// Only the core: two replicas of one record document, no network.
    #[arg(long)]
    core: bool,
    /// Share of requests the simulator fails (429 bursts, 503s, latency, lost answers), 0 to 1.
    #[arg(long, default_value_t = 0.0, value_parser = share)]
    faults: f64,
    /// Seed of the simulator's fault injection.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the final Zendesk state as JSON on stdout (the story goes to stderr).
    #[arg(long)]
    json: bool,
}

fn share(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a number from 0 to 1")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Logs go to stderr; RUST_LOG sets the level. Servers log what they serve (info); one-shot
    // commands only warnings, so that their output stays readable.
    let serves = match &cli.command {
        Command::Hub(a) => a.serves(),
        Command::Device(a) => a.serves(),
        Command::Sim(_) => true,
        _ => false,
    };
    // Colour only for a person at a terminal: a log file or pipe gets plain text.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(if serves { "info" } else { "warn" })
            }),
        )
        .init();
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
        Command::Demo(a) if a.core => {
            print!("{}", core_demo::run()?);
            Ok(())
        }
        Command::Demo(a) => demo::run(demo::Options {
            faults: a.faults,
            seed: a.seed,
            json: a.json,
        }),
        Command::Bridge(args) => bridge_cmd::run(args),
        Command::Sim(args) => sim_cmd::run(args),
        Command::Hub(args) => hub_cmd::run(*args),
        Command::Device(args) => device_cmd::run(args),
    }
}
