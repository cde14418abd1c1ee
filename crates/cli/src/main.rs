//! `sellsync`: the command-line entry point.

/// `println!` that hands back the write's error instead of panicking, so that a closed stdout
/// (`sellsync device deals | head -1`) ends the command quietly (see [`is_broken_pipe`]).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}

mod bridge_cmd;
mod core_demo;
mod device_cmd;
mod hub_cmd;
mod show;
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
        // Whoever reads the output stopped reading (`| head`): nothing is wrong, as for any
        // Unix tool. Every write to the store was committed or not before printing began.
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", describe(&err));
            ExitCode::from(2)
        }
    }
}

/// Whether the error is a write to a closed pipe.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// An error and its causes as one line, outermost first, each said once: a cause whose text
/// the line already holds (an error that prints its source itself) is left out.
fn describe(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_already_in_the_message_is_said_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory");
        /// An error that prints its source itself, as many `thiserror` enums do.
        #[derive(Debug)]
        struct Wrapping(std::io::Error);
        impl std::fmt::Display for Wrapping {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "store I/O error on x.redb: {}", self.0)
            }
        }
        impl std::error::Error for Wrapping {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let err = anyhow::Error::new(Wrapping(io)).context("opening store x.redb");
        assert_eq!(
            describe(&err),
            "opening store x.redb: store I/O error on x.redb: No such file or directory"
        );
    }

    #[test]
    fn a_closed_pipe_is_recognised_through_context() {
        let err = anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
            .context("printing the deals");
        assert!(is_broken_pipe(&err));
        assert!(!is_broken_pipe(&anyhow::anyhow!("broken pipe")));
    }
}
