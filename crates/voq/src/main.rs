//! `voq`: the one binary. Thin: parse the command line, call into the libraries.

use clap::{Parser, Subcommand};

mod call;
mod cid;
#[cfg(feature = "rig")]
mod netem;
mod token;

/// voq: voice over QUIC.
#[derive(Debug, Parser)]
#[command(name = "voq", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Encode or decode QUIC-LB routable connection IDs (operators, interop checks).
    #[command(subcommand)]
    Cid(cid::CidCommand),
    /// Serve voq sessions with an agent: QUIC, WebTransport and WebSocket on one port number.
    Serve(Box<voq_server::ServeConfig>),
    /// A stateless QUIC-LB load balancer in front of voq servers.
    Lb(voq_lb::LbConfig),
    /// Call a voq server with a WAV file as the user's turn.
    Call(call::CallArgs),
    /// Keys and session tokens for `voq serve --auth-keys`.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// An impaired UDP path (delay, jitter, loss, bursts, blackouts, rate) on this machine.
    #[cfg(feature = "rig")]
    Netem(netem::NetemArgs),
    /// Measure every claim: scenarios of bench/*.toml, a table, JSON and an HTML report.
    #[cfg(feature = "rig")]
    Bench(voq_bench::bench::BenchArgs),
    /// The main job: servers, agents and calls on loopback, end to end, with a summary.
    #[cfg(feature = "rig")]
    Demo(voq_bench::demo::DemoArgs),
    /// Many real client sessions from one process against a `voq serve` child, in steps of
    /// concurrent calls: setup and first-audio percentiles, server CPU and memory per call.
    #[cfg(feature = "rig")]
    Load(voq_bench::load::LoadArgs),
    /// An anycast fleet of `voq serve` processes on this machine (network namespaces, BIRD,
    /// ECMP; root only) to try by hand, or to check with --call.
    #[cfg(feature = "rig")]
    Fleet(voq_bench::fleet_cmd::FleetArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Servers log what they do; clients and the demo print reports, so they log only problems.
    // RUST_LOG overrides.
    let default_level = match cli.command {
        Command::Serve(_) | Command::Lb(_) => "info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cli.command {
        Command::Cid(cmd) => cid::run(cmd),
        Command::Serve(config) => run_async(voq_server::run(*config)),
        Command::Call(args) => run_async(call::run(args)),
        Command::Token(cmd) => match token::run(cmd) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("voq: {e:#}");
                std::process::ExitCode::FAILURE
            }
        },
        Command::Lb(config) => run_async(voq_lb::run(config)),
        #[cfg(feature = "rig")]
        Command::Netem(args) => run_async(netem::run(args)),
        #[cfg(feature = "rig")]
        Command::Bench(args) => run_async(voq_bench::bench::run(args)),
        #[cfg(feature = "rig")]
        Command::Demo(args) => run_async(voq_bench::demo::run(args)),
        #[cfg(feature = "rig")]
        Command::Load(args) => run_async(voq_bench::load::run(args)),
        #[cfg(feature = "rig")]
        Command::Fleet(args) => run_async(voq_bench::fleet_cmd::run(args)),
    }
}

/// Runs an async command on a multi-threaded runtime; errors print as one `voq: …` line.
fn run_async(fut: impl std::future::Future<Output = anyhow::Result<()>>) -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("voq: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(fut) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("voq: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::BTreeSet;

    use clap::CommandFactory;

    use super::Cli;

    /// The `lb-*` QUIC-LB settings of a command (`lb-tunnel` is how datagrams arrive, not a
    /// QUIC-LB setting).
    fn quic_lb_flags(command: &clap::Command) -> BTreeSet<String> {
        command
            .get_arguments()
            .filter_map(|a| a.get_long())
            .filter(|l| l.starts_with("lb-") && *l != "lb-tunnel")
            .map(str::to_string)
            .collect()
    }

    /// `voq serve` issues the CIDs that `voq lb` decodes, so an operator writes the same
    /// settings to both: the same flag names, value names and environment variables, and the
    /// same TOML keys.
    #[test]
    fn serve_and_lb_name_their_quic_lb_settings_alike() {
        let cli = Cli::command();
        let serve = cli.find_subcommand("serve").unwrap();
        let lb = cli.find_subcommand("lb").unwrap();
        let (serve_flags, lb_flags) = (quic_lb_flags(serve), quic_lb_flags(lb));
        // The balancer alone needs the server id length: a server knows its own id.
        let only_lb: Vec<_> = lb_flags.difference(&serve_flags).collect();
        assert_eq!(only_lb, ["lb-server-id-len"]);
        assert!(
            serve_flags.is_subset(&lb_flags),
            "{serve_flags:?} vs {lb_flags:?}"
        );
        assert!(serve_flags.len() >= 5, "{serve_flags:?}");
        for flag in &serve_flags {
            let arg = |c: &clap::Command| {
                c.get_arguments()
                    .find(|a| a.get_long() == Some(flag.as_str()))
                    .map(|a| {
                        (
                            a.get_value_names().map(<[_]>::to_vec),
                            a.get_env().map(|e| e.to_owned()),
                        )
                    })
                    .unwrap()
            };
            assert_eq!(arg(serve), arg(lb), "--{flag}");
        }
        let file = "lb-config-id = 1\nlb-nonce-len = 6\nlb-key = \"00112233445566778899aabbccddeeff\"\n\
                    lb-cid-len = 12\nlb-self-encoded-len = true\n";
        toml::from_str::<voq_server::ServeConfig>(file).unwrap();
        toml::from_str::<voq_lb::LbConfig>(file).unwrap();
    }
}
