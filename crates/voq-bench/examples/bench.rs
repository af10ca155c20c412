//! `voq bench` without the `voq` binary: `cargo run --release -p voq-bench --example bench --
//! [--quick] [--json FILE] [--html FILE] [--scenario NAME]…` from the repository root.

use clap::Parser;

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    args: voq_bench::bench::BenchArgs,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Problems only; RUST_LOG overrides (e.g. RUST_LOG=quinn_proto=trace to see recovery).
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match voq_bench::bench::run(cli.args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("voq bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
