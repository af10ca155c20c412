//! `voq token keygen|mint`: keys and session tokens for `voq serve --auth-keys`, for operators
//! and tests. An application's backend normally mints with its own JWT library; the claims are
//! in docs/DEPLOY.md ("Security model").

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use voq_server::auth::{self, SigningKey};

use crate::call::parse_duration;

/// `voq token <subcommand>`.
#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Make a signing key and add its verification key to a JWKS file (created if absent; a key
    /// with the same kid is replaced). Rotation: keygen a new kid, mint with it, and remove the
    /// old kid from the JWKS once its tokens have expired.
    Keygen(KeygenArgs),
    /// Mint a token: prints it on stdout.
    Mint(MintArgs),
}

/// Flags of `voq token keygen`.
#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// HS256 (a shared secret: the JWKS then holds the secret too) or ES256 (a key pair: the
    /// JWKS holds only the public key).
    #[arg(long, default_value = "ES256", value_parser = ["ES256", "HS256", "es256", "hs256"])]
    alg: String,
    /// The key id, e.g. the month it was made in.
    #[arg(long)]
    kid: String,
    /// Where to write the signing key (mode 0600): keep it with whatever mints tokens.
    #[arg(long, value_name = "FILE")]
    signing_key: PathBuf,
    /// The JWKS file `voq serve --auth-keys` reads.
    #[arg(long, value_name = "FILE")]
    jwks: PathBuf,
}

/// Flags of `voq token mint`.
#[derive(Debug, clap::Args)]
pub struct MintArgs {
    /// The signing key `voq token keygen` wrote.
    #[arg(long, value_name = "FILE")]
    signing_key: PathBuf,
    /// Who the session is for (`sub`).
    #[arg(long)]
    sub: String,
    /// How long the token may be used to start sessions.
    #[arg(long, default_value = "5m", value_parser = parse_duration, value_name = "DURATION")]
    ttl: Duration,
    /// The audience (`aud`) the server expects.
    #[arg(long, default_value = auth::DEFAULT_AUDIENCE)]
    aud: String,
    /// The issuer (`iss`), for a server configured with --auth-issuer.
    #[arg(long)]
    iss: Option<String>,
    /// Allow only this agent (the server's --agent spec).
    #[arg(long, value_name = "SPEC")]
    agent: Option<String>,
    /// The call is closed after this long.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    max_duration: Option<Duration>,
    /// At most this many sessions of this subject at once on one server.
    #[arg(long, value_name = "N")]
    max_sessions: Option<u32>,
}

pub fn run(cmd: TokenCommand) -> anyhow::Result<()> {
    use std::io::Write;
    match cmd {
        TokenCommand::Keygen(a) => {
            let key = SigningKey::generate(&a.alg, &a.kid)?;
            auth::write_private(&a.signing_key, &serde_json::to_string_pretty(&key)?)?;
            auth::add_to_key_set(&a.jwks, &key)?;
            eprintln!(
                "voq: signing key {} ({}, kid {}) written; {} now verifies it",
                a.signing_key.display(),
                key.alg,
                key.kid,
                a.jwks.display()
            );
        }
        TokenCommand::Mint(a) => {
            let key = SigningKey::load(&a.signing_key)?;
            let mut claims = auth::claims(&a.sub, &a.aud, SystemTime::now(), a.ttl);
            claims.iss = a.iss;
            claims.voq.agent = a.agent;
            claims.voq.max_duration_s = a.max_duration.map(|d| d.as_secs().max(1));
            claims.voq.max_sessions = a.max_sessions;
            let token = key.mint(&claims).context("cannot sign the token")?;
            writeln!(std::io::stdout(), "{token}")?;
        }
    }
    Ok(())
}
