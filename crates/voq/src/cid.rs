//! `voq cid encode|decode`: QUIC-LB connection IDs by hand, for operators and interop checks.
//!
//! Output is one line on stdout. Failures are one line on stderr, `voq: …`: exit status 1 for
//! a CID that does not decode (malformed or unroutable), 2 for bad flags.

use std::process::ExitCode;

use voq_quic_lb::Config;

/// `voq cid <subcommand>`.
#[derive(Debug, clap::Subcommand)]
pub enum CidCommand {
    /// Encode a server id and nonce into a CID, printed in lowercase hex. The first octet
    /// carries the config id and the CID length (length self-encoding).
    Encode(EncodeArgs),
    /// Decode a CID, printing `server_id=HEX nonce=HEX`.
    Decode(DecodeArgs),
}

/// Flags of `voq cid encode`.
#[derive(Debug, clap::Args)]
pub struct EncodeArgs {
    /// Config id, 0..=6 (7 is reserved for unroutable CIDs).
    #[arg(long, value_name = "N")]
    config_id: u8,
    /// Server id in hex; its length is the server id length.
    #[arg(long, value_name = "HEX")]
    server_id: String,
    /// Nonce in hex; its length is the nonce length.
    #[arg(long, value_name = "HEX")]
    nonce: String,
    /// AES-128 key, 32 hex digits. Without it the CID is plaintext.
    #[arg(long, value_name = "HEX")]
    key: Option<String>,
}

/// Flags of `voq cid decode`.
#[derive(Debug, clap::Args)]
pub struct DecodeArgs {
    /// Config id, 0..=6; the CID's first octet must carry it.
    #[arg(long, value_name = "N")]
    config_id: u8,
    /// Server id length in octets.
    #[arg(long, value_name = "L")]
    server_id_len: usize,
    /// Nonce length in octets.
    #[arg(long, value_name = "M")]
    nonce_len: usize,
    /// AES-128 key, 32 hex digits. Without it the CID is read as plaintext.
    #[arg(long, value_name = "HEX")]
    key: Option<String>,
    /// The CID in hex, first octet included.
    #[arg(value_name = "CID_HEX")]
    cid: String,
}

/// Runs a `voq cid` subcommand.
pub fn run(cmd: CidCommand) -> ExitCode {
    let result = match cmd {
        CidCommand::Encode(args) => encode(&args),
        CidCommand::Decode(args) => decode(&args),
    };
    report(result)
}

/// Why a subcommand failed, which decides the exit status.
enum Failure {
    /// Bad flags: exit 2, as for clap's own errors.
    Usage(String),
    /// A CID that does not decode: exit 1.
    Cid(String),
}

// Printing the result line is this command's whole job.
#[allow(clippy::print_stdout)]
fn report(result: Result<String, Failure>) -> ExitCode {
    match result {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(Failure::Usage(msg)) => {
            eprintln!("voq: {msg}");
            ExitCode::from(2)
        }
        Err(Failure::Cid(msg)) => {
            eprintln!("voq: {msg}");
            ExitCode::from(1)
        }
    }
}

fn encode(args: &EncodeArgs) -> Result<String, Failure> {
    let server_id = parse_hex("--server-id", &args.server_id).map_err(Failure::Usage)?;
    let nonce = parse_hex("--nonce", &args.nonce).map_err(Failure::Usage)?;
    let config = config(
        args.config_id,
        server_id.len(),
        nonce.len(),
        args.key.as_deref(),
    )?;
    let cid = config
        .encode(&server_id, &nonce)
        .map_err(|e| Failure::Usage(e.to_string()))?;
    Ok(cid.to_string())
}

fn decode(args: &DecodeArgs) -> Result<String, Failure> {
    let config = config(
        args.config_id,
        args.server_id_len,
        args.nonce_len,
        args.key.as_deref(),
    )?;
    let cid = parse_hex("CID", &args.cid).map_err(|e| Failure::Cid(format!("malformed {e}")))?;
    let decoded = config
        .decode(&cid)
        .map_err(|e| Failure::Cid(format!("unroutable CID: {e}")))?;
    Ok(format!(
        "server_id={} nonce={}",
        decoded.server_id, decoded.nonce
    ))
}

fn config(id: u8, sid_len: usize, nonce_len: usize, key: Option<&str>) -> Result<Config, Failure> {
    let config = Config::new(id, sid_len, nonce_len)
        .map_err(|e| Failure::Usage(format!("invalid config: {e}")))?;
    let Some(key) = key else {
        return Ok(config);
    };
    let key = voq_quic_lb::hex::decode_array::<16>(key)
        .map_err(|e| Failure::Usage(format!("--key (AES-128): {e}")))?;
    Ok(config.with_key(key))
}

/// Hex with an optional `0x` prefix, either case.
fn parse_hex(what: &str, s: &str) -> Result<Vec<u8>, String> {
    voq_quic_lb::hex::decode(s).map_err(|e| format!("{what}: invalid hex {s:?}: {e}"))
}
