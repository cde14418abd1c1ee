//! `sellsync sim`: the Zendesk Sell simulator on a real socket.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use sellsync_sim::{FaultConfig, Sim, SimConfig};

/// Options of `sellsync sim`.
#[derive(Debug, Args)]
pub(crate) struct SimArgs {
    /// Address to listen on; port 0 picks a free port (the chosen one is printed).
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    /// Extra accepted bearer token, `TOKEN` (belongs to the admin user) or `TOKEN@USER_ID`.
    /// Official clients accept only 64-character tokens. Repeatable.
    #[arg(long = "token", value_name = "TOKEN[@USER_ID]")]
    tokens: Vec<String>,
    /// Data set to start with.
    #[arg(long, value_enum, default_value_t = DataSet::Demo)]
    data: DataSet,
    /// Requests per hour per token; 0 disables the limit.
    #[arg(long, value_name = "PER_HOUR", default_value_t = 36_000)]
    rate_limit: u64,
    /// Fault rules as JSON (`{"seed": 1, "rules": [...]}`, see docs/simulator.md); they can
    /// also be changed at run time with `PUT /_sim/faults`.
    #[arg(long, value_name = "FILE")]
    faults: Option<PathBuf>,
    /// Overrides the seed of the fault rules.
    #[arg(long, value_name = "SEED")]
    fault_seed: Option<u64>,
    /// Items per Sync API queue page.
    #[arg(long, default_value_t = 100)]
    sync_page_size: usize,
}

/// Built-in data sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DataSet {
    /// Five users in two teams, one pipeline, 40 contacts, 50 deals with notes and tasks.
    Demo,
    /// One admin user and the default pipeline.
    Empty,
}

/// Splits `TOKEN@USER_ID`; a token without `@` belongs to `admin`.
fn parse_token(spec: &str, admin: u64) -> anyhow::Result<(String, u64)> {
    let (token, user) = match spec.rsplit_once('@') {
        Some((t, u)) => (
            t,
            u.parse()
                .with_context(|| format!("bad user id in --token {spec}"))?,
        ),
        None => (spec, admin),
    };
    if token.is_empty() || token.chars().any(char::is_whitespace) {
        bail!("a token must be non-empty and contain no whitespace: {spec:?}");
    }
    Ok((token.to_owned(), user))
}

fn build(args: &SimArgs) -> anyhow::Result<Sim> {
    if args.sync_page_size == 0 {
        bail!("--sync-page-size must be at least 1");
    }
    let data = match args.data {
        DataSet::Demo => sellsync_sim::demo_data(),
        DataSet::Empty => sellsync_sim::empty_data(),
    };
    let config = SimConfig {
        rate_limit_per_hour: args.rate_limit,
        sync_page_size: args.sync_page_size,
        ..SimConfig::default()
    };
    let sim = Sim::new(data, config);
    let admin = sim
        .tokens()
        .iter()
        .find(|t| t.role == "admin")
        .map(|t| t.user_id)
        .unwrap_or(2);
    for spec in &args.tokens {
        let (token, user) = parse_token(spec, admin)?;
        if token.len() != 64 {
            eprintln!("warning: token {token:?} is not 64 characters; official clients refuse it");
        }
        sim.add_token(&token, user).map_err(anyhow::Error::msg)?;
    }
    if let Some(path) = &args.faults {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut faults: FaultConfig =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        if let Some(seed) = args.fault_seed {
            faults.seed = seed;
        }
        sim.set_faults(faults).map_err(anyhow::Error::msg)?;
    } else if let Some(seed) = args.fault_seed {
        sim.set_faults(FaultConfig {
            seed,
            rules: Vec::new(),
        })
        .map_err(anyhow::Error::msg)?;
    }
    Ok(sim)
}

/// Runs the simulator until ctrl-c.
pub(crate) fn run(args: SimArgs) -> anyhow::Result<()> {
    let sim = build(&args)?;
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("binding {}", args.listen))?;
        let addr = listener.local_addr().context("reading the bound address")?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "sellsync sim listening on http://{addr}")?;
        writeln!(out, "base_url http://{addr}")?;
        writeln!(out, "admin    http://{addr}/_sim/state")?;
        for t in sim.tokens() {
            let team = t.team.as_deref().unwrap_or("-");
            writeln!(
                out,
                "token {} user {} {:?} role {} team {}",
                t.token, t.user_id, t.name, t.role, team
            )?;
        }
        writeln!(out, "ready")?;
        out.flush()?;
        drop(out);
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        sellsync_sim::serve(listener, sim, shutdown)
            .await
            .context("serving")
    })
}

#[cfg(test)]
mod tests {
    use super::parse_token;

    #[test]
    fn token_specs_map_to_users() {
        assert_eq!(parse_token("abc", 2).ok(), Some(("abc".to_owned(), 2)));
        assert_eq!(parse_token("abc@7", 2).ok(), Some(("abc".to_owned(), 7)));
        assert!(parse_token("abc@x", 2).is_err());
        assert!(parse_token("a b", 2).is_err());
        assert!(parse_token("@3", 2).is_err());
    }
}
