//! `voq netem`: an impaired UDP path between any client and server on this machine, or (with
//! `--netns`) an impaired link between two network namespaces that carries TCP as well, for
//! programs we do not control (browsers) started inside them.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use voq_netem::{LinkConfig, Preset};

/// Forward UDP from --listen to --target through seeded impairments (per direction: flags, a
/// preset, or a TOML scenario with [up] and [down] tables of voq-netem link settings).
///
/// With --netns instead: two network namespaces joined by the impaired link (UDP and TCP alike,
/// root only). It prints one JSON line naming them and their addresses, e.g.
/// {"client_ns":"voq-…-a","client_addr":"198.18.0.1","server_ns":"voq-…-b","server_addr":"198.18.0.2"},
/// and holds them until interrupted, terminated or its standard input closes; then it kills
/// what still runs inside them and deletes them. Start programs in them with
/// `ip netns exec NAME …` ("up" is client → server). A line `blackout [up|down] MS` on its
/// standard input darkens the link from then on for MS milliseconds, `loss [up|down] FRACTION`
/// sets its random loss from then on (each answered on stdout, {"blackout_ms":MS} or
/// {"loss":FRACTION}, once it holds).
#[derive(Debug, clap::Args)]
pub struct NetemArgs {
    /// Where clients send.
    #[arg(long, value_name = "ADDR:PORT", required_unless_present = "netns")]
    pub listen: Option<SocketAddr>,
    /// The server.
    #[arg(long, value_name = "ADDR:PORT", required_unless_present = "netns")]
    pub target: Option<SocketAddr>,
    /// Make two network namespaces joined by the impaired link instead of a UDP proxy.
    #[arg(long, conflicts_with_all = ["listen", "target"])]
    pub netns: bool,
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
    let (Some(listen), Some(target)) = (args.listen, args.target) else {
        return hold_netns_link(up, down, args.seed).await;
    };
    let proxy = voq_bench::proxy::NetemProxy::start(listen, target, up, down, args.seed).await?;
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "voq netem: udp {} -> {} (seed {})",
            proxy.local_addr(),
            target,
            args.seed
        );
        let _ = out.flush();
    }
    tokio::signal::ctrl_c().await?;
    let stats = proxy.stats();
    eprintln!("{}", serde_json::to_string(&stats)?);
    Ok(())
}

/// `--netns`: make the link, say where it is, hold it until told to stop.
async fn hold_netns_link(up: LinkConfig, down: LinkConfig, seed: u64) -> anyhow::Result<()> {
    use voq_netns::{Direction, NetnsConfig, NetnsLink, Side};
    if let Err(why) = NetnsLink::available() {
        anyhow::bail!("cannot make network namespaces here: {why}");
    }
    let link = tokio::task::spawn_blocking(move || {
        NetnsLink::create(NetnsConfig::new(up, down).with_seed(seed))
    })
    .await??;
    let ready = serde_json::json!({
        "client_ns": link.name(Side::A),
        "client_addr": voq_netns::A_ADDR.to_string(),
        "server_ns": link.name(Side::B),
        "server_addr": voq_netns::B_ADDR.to_string(),
    });
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "{ready}")?;
        out.flush()?;
    }
    let mut commands = stdin_commands();
    let terminated = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::pin!(terminated);
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = &mut terminated => break,
            line = commands.recv() => match line.as_deref().map(parse_command) {
                // The end of standard input: whoever started us is done (or gone).
                None => break,
                Some(Ok(command)) => {
                    let said = match command {
                        Command::Blackout(directions, duration) => {
                            for d in directions {
                                link.blackout(*d, duration);
                            }
                            serde_json::json!({"blackout_ms": duration.as_millis() as u64})
                        }
                        Command::Loss(directions, loss) => {
                            for d in directions {
                                let mut config = link.config(*d);
                                config.loss = loss;
                                link.set_config(*d, config)?;
                            }
                            serde_json::json!({"loss": loss})
                        }
                    };
                    // Said once it holds, so that a test can wait for it (nobody reading is
                    // no reason to drop the link: only the end of stdin or a signal is).
                    use std::io::Write;
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "{said}").and_then(|()| out.flush());
                }
                Some(Err(why)) => eprintln!("voq netem: {why}"),
            },
        }
    }
    let stats = serde_json::json!({
        "up": link.stats(Direction::AToB),
        "down": link.stats(Direction::BToA),
    });
    tokio::task::spawn_blocking(move || link.close()).await??;
    eprintln!("{stats}");
    Ok(())
}

/// Lines of standard input, read on a plain thread (a blocking read would keep tokio's runtime
/// from shutting down); the channel closes at its end.
fn stdin_commands() -> tokio::sync::mpsc::UnboundedReceiver<String> {
    use std::io::BufRead;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// A command on standard input.
enum Command {
    /// `blackout [up|down] MS`: lose every packet of both directions (or one) sent in the next
    /// MS milliseconds — a path that goes dark now, for tests that cannot know in advance when.
    Blackout(&'static [voq_netns::Direction], std::time::Duration),
    /// `loss [up|down] FRACTION`: random loss from now on (the rest of the link's settings kept;
    /// its blackout windows count from now).
    Loss(&'static [voq_netns::Direction], f64),
}

fn parse_command(line: &str) -> Result<Command, String> {
    use voq_netns::Direction;
    const USAGE: &str = "blackout [up|down] MS, or loss [up|down] FRACTION";
    let words: Vec<&str> = line.split_whitespace().collect();
    let (verb, directions, value): (&str, &'static [Direction], &str) = match words.as_slice() {
        [verb, value] => (verb, &Direction::BOTH, value),
        [verb, "up", value] => (verb, &[Direction::AToB], value),
        [verb, "down", value] => (verb, &[Direction::BToA], value),
        _ => return Err(format!("unknown command {line:?} ({USAGE})")),
    };
    match verb {
        "blackout" => match value.parse::<u64>() {
            Ok(ms) if ms <= 3_600_000 => Ok(Command::Blackout(
                directions,
                std::time::Duration::from_millis(ms),
            )),
            _ => Err(format!(
                "blackout: {value:?} is not a number of ms up to 3600000"
            )),
        },
        "loss" => match value.parse::<f64>() {
            Ok(loss) if (0.0..=1.0).contains(&loss) => Ok(Command::Loss(directions, loss)),
            _ => Err(format!("loss: {value:?} is not a fraction from 0 to 1")),
        },
        _ => Err(format!("unknown command {line:?} ({USAGE})")),
    }
}
