//! `voq netem`: an impaired UDP path between any client and server on this machine.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use voq_netem::{LinkConfig, Preset};

/// Forward UDP from --listen to --target through seeded impairments (per direction: flags, a
/// preset, or a TOML scenario with [up] and [down] tables of voq-netem link settings).
#[derive(Debug, clap::Args)]
pub struct NetemArgs {
    /// Where clients send.
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: SocketAddr,
    /// The server.
    #[arg(long, value_name = "ADDR:PORT")]
    pub target: SocketAddr,
    /// Both directions from a preset: none, wifi, cellular, lossy, satellite.
    #[arg(long)]
    pub preset: Option<Preset>,
    /// TOML file with [up] (client → server) and [down] tables (docs/NETEM.md lists the keys).
    #[arg(long, value_name = "FILE", conflicts_with = "preset")]
    pub scenario: Option<PathBuf>,
    /// One-way delay in ms, both directions (overrides the preset or scenario).
    #[arg(long, value_name = "MS")]
    pub delay_ms: Option<f64>,
    /// Random loss as a fraction (0.05 = 5 %), both directions.
    #[arg(long, value_name = "FRACTION")]
    pub loss: Option<f64>,
    /// Seed of the impairment engine (the same seed gives the same run).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Scenario {
    #[serde(default)]
    up: LinkConfig,
    #[serde(default)]
    down: LinkConfig,
}

pub async fn run(args: NetemArgs) -> anyhow::Result<()> {
    let (mut up, mut down) = match (&args.scenario, args.preset) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read scenario {}", path.display()))?;
            let s: Scenario = toml::from_str(&text)
                .with_context(|| format!("invalid scenario {}", path.display()))?;
            (s.up, s.down)
        }
        (None, Some(p)) => (p.config(), p.config()),
        (None, None) => (LinkConfig::default(), LinkConfig::default()),
    };
    for link in [&mut up, &mut down] {
        if let Some(d) = args.delay_ms {
            link.delay_ms = d;
        }
        if let Some(l) = args.loss {
            link.loss = l;
        }
    }
    let proxy =
        voq_bench::proxy::NetemProxy::start(args.listen, args.target, up, down, args.seed).await?;
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "voq netem: udp {} -> {} (seed {})",
            proxy.local_addr(),
            args.target,
            args.seed
        );
        let _ = out.flush();
    }
    tokio::signal::ctrl_c().await?;
    let stats = proxy.stats();
    eprintln!("{}", serde_json::to_string(&stats)?);
    Ok(())
}
