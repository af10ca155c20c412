//! `voq call URL --input FILE.wav …`: one call from the command line.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use voq_client::{CallOptions, Client, Target, Trust};

/// Call a voq server: send a WAV file as the user's turn, play the reply by timestamp, report.
#[derive(Debug, clap::Args)]
pub struct CallArgs {
    /// The server, like https://127.0.0.1:4443 (http://HOST:PORT for WebSocket without TLS).
    pub url: String,
    /// The carrier: raw QUIC, WebTransport (HTTP/3, path /voq) or WebSocket (TCP, path /voq;
    /// wss:// for an https:// URL).
    #[arg(long, default_value = "quic", value_parser = ["quic", "webtransport", "ws"])]
    pub transport: String,
    /// The user's audio (WAV; converted to 24 kHz mono).
    #[arg(long, value_name = "FILE.wav")]
    pub input: PathBuf,
    /// Write the reply as received, placed by its timestamps (what the agent said).
    #[arg(long, value_name = "FILE.wav")]
    pub output: Option<PathBuf>,
    /// Write the rendered playback timeline (silence where it underran).
    #[arg(long, value_name = "FILE.wav")]
    pub output_played: Option<PathBuf>,
    /// Give the call up when the server has not answered for this long while a turn or reply is
    /// under way (it is pinged meanwhile; a warning comes after 1 s). 0 waits for QUIC's 30 s
    /// idle timeout. What was received is still written and reported.
    #[arg(long, default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
    pub dead_after: Duration,
    /// When the server keeps sessions resumable and the connection is lost (or silent for
    /// --resume-after), reconnect and take the session back, trying for this long; nothing the
    /// server had not confirmed is lost, and the reply plays on. 0: never.
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    pub resume_within: Duration,
    /// With a resumable session, give a silent connection up after this long and reconnect.
    #[arg(long, default_value = "2s", value_parser = parse_duration, value_name = "DURATION")]
    pub resume_after: Duration,
    /// Write every control event of the call, both directions, as JSON lines
    /// (`{"at_ms", "direction": "sent"|"received", "event"}`), exactly as they crossed the wire.
    #[arg(long, value_name = "FILE.jsonl")]
    pub events: Option<PathBuf>,
    /// Audio codec for both directions.
    #[arg(long, default_value = "pcm16", value_parser = ["pcm16", "opus"])]
    pub codec: String,
    /// Barge in this long after the reply starts playing (e.g. 1s, 750ms).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub interrupt_after: Option<Duration>,
    /// Let the server's voice activity detection end turns (default: push-to-talk, the end of
    /// the input ends the turn).
    #[arg(long)]
    pub vad: bool,
    /// Send the input this many times, one turn each, playing each reply before the next.
    #[arg(long, default_value_t = 1)]
    pub turns: usize,
    /// Capture speed of the input: 1 = real time like a microphone, 0 = all at once.
    #[arg(long, default_value_t = 1.0, value_name = "X")]
    pub input_speed: f64,
    /// Ask the server for this send-ahead lead in ms (0 = just in time).
    #[arg(long, value_name = "MS")]
    pub send_ahead_ms: Option<u64>,
    /// Playout start threshold in ms.
    #[arg(long, default_value_t = 100, value_name = "MS")]
    pub start_threshold_ms: u32,
    /// Trust the server certificate with this SHA-256 (what `voq serve` prints in dev mode).
    #[arg(long, value_name = "HEX", conflicts_with_all = ["ca", "insecure"])]
    pub cert_hash: Option<String>,
    /// Trust this PEM CA certificate.
    #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
    pub ca: Option<PathBuf>,
    /// Accept any server certificate (testing only).
    #[arg(long)]
    pub insecure: bool,
    /// Print one JSON object instead of the human report.
    #[arg(long)]
    pub json: bool,
    /// The session token for a server with --auth-keys (`voq token mint` makes one); or the
    /// VOQ_TOKEN environment variable, which keeps it out of the process list.
    #[arg(long, env = "VOQ_TOKEN", hide_env_values = true, value_name = "JWT")]
    pub token: Option<String>,
    /// Give up after this long.
    #[arg(long, default_value = "300s", value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Duration,
    /// Do not keep session tickets in the ticket file (~/.cache/voq/tickets, or under
    /// $XDG_CACHE_HOME): no 0-RTT resumption by the next call.
    #[arg(long)]
    pub no_resume: bool,
    /// Stay on the dialled address even when the server offers its preferred (unicast)
    /// address, as browsers do.
    #[arg(long)]
    pub no_preferred_addr: bool,
    /// Move to a new local address this long after connecting (QUIC and WebTransport): the
    /// connection migrates, the call goes on.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub rebind_after: Option<Duration>,
    /// The local IP to move to with --rebind-after [default: the same IP, a new port].
    #[arg(long, value_name = "IP", requires = "rebind_after")]
    pub rebind_ip: Option<std::net::IpAddr>,
}

pub async fn run(args: CallArgs) -> anyhow::Result<()> {
    let plain = args.url.starts_with("http://");
    let trust = match (&args.cert_hash, &args.ca, args.insecure) {
        (Some(hash), _, _) => Trust::cert_hash(hash)?,
        // Plain ws:// has no certificate to trust.
        _ if plain => Trust::Insecure,
        (_, Some(ca), _) => Trust::CaFile(ca.clone()),
        (_, _, true) => Trust::Insecure,
        _ => anyhow::bail!(
            "how should the server's certificate be trusted? Pass --cert-hash HEX (printed by \
             `voq serve`), --ca FILE, or --insecure for testing"
        ),
    };
    anyhow::ensure!(args.turns >= 1, "--turns must be at least 1");
    anyhow::ensure!(args.input_speed >= 0.0, "--input-speed must be >= 0");
    let target = Target::parse(&args.url)?;
    let wav = voq_audio::read_wav_file(&args.input)
        .with_context(|| format!("cannot read --input {}", args.input.display()))?;
    let pcm = wav
        .to_mono_24k()
        .with_context(|| format!("cannot convert {}", args.input.display()))?;
    anyhow::ensure!(!pcm.is_empty(), "{} holds no audio", args.input.display());
    let bind = if target.addr.is_ipv6() {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    };
    let ticket_file = match args.no_resume {
        true => None,
        false => voq_client::resume::default_path(),
    };
    let client = Client::with_options(
        &trust,
        bind.parse()?,
        &voq_client::ClientOptions {
            use_preferred_address: !args.no_preferred_addr,
            ticket_file,
        },
    )?;
    let opts = CallOptions {
        codec: args.codec.parse()?,
        turns: vec![pcm; args.turns],
        input_speed: args.input_speed,
        interrupt_after: args.interrupt_after,
        send_ahead_ms: args.send_ahead_ms,
        start_threshold_ms: args.start_threshold_ms,
        timeout: args.timeout,
        progress: !args.json,
        server_vad: args.vad,
        transport: args.transport.parse().map_err(anyhow::Error::msg)?,
        token: args.token.clone().map(voq_client::Token),
        rebind: args.rebind_after.map(|after| voq_client::Rebind {
            after,
            ip: args.rebind_ip,
        }),
        record_events: args.events.is_some(),
        dead_after: (!args.dead_after.is_zero()).then_some(args.dead_after),
        resume_within: (!args.resume_within.is_zero()).then_some(args.resume_within),
        resume_after: args.resume_after,
        ..Default::default()
    };
    let outcome = client.call(&target, opts).await;
    // Before the process ends, so the server's session ends now rather than at its idle timeout.
    client.shutdown(Duration::from_secs(1)).await;
    let (outcome, failure) = match outcome {
        Ok(outcome) => (outcome, None),
        // A call that failed part way still has its report and audio: keep them.
        Err(e) => match e.downcast::<voq_client::CallFailed>() {
            Ok(failed) => (*failed.partial, Some(failed.message)),
            Err(e) => return Err(e),
        },
    };
    if let Some(path) = &args.output {
        voq_audio::write_wav_file(path, &outcome.reply_received, voq_audio::SAMPLE_RATE)
            .with_context(|| format!("cannot write --output {}", path.display()))?;
    }
    if let Some(path) = &args.output_played {
        voq_audio::write_wav_file(path, &outcome.reply_played, voq_audio::SAMPLE_RATE)
            .with_context(|| format!("cannot write --output-played {}", path.display()))?;
    }
    if let Some(path) = &args.events {
        write_events(path, &outcome.events)
            .with_context(|| format!("cannot write --events {}", path.display()))?;
    }
    #[allow(clippy::print_stdout)] // the report is this command's output
    if args.json {
        let mut report = serde_json::to_value(&outcome.report)?;
        if let (Some(message), Some(object)) = (&failure, report.as_object_mut()) {
            object.insert("error".into(), serde_json::json!({ "message": message }));
        }
        println!("{report}");
    } else {
        print!("{}", outcome.report.human());
    }
    match failure {
        Some(message) => Err(anyhow::anyhow!("{message}")),
        None => Ok(()),
    }
}

pub use voq_client::parse_duration;

/// One JSON object a line.
fn write_events(
    path: &std::path::Path,
    events: &[voq_client::events::LoggedEvent],
) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for e in events {
        serde_json::to_writer(&mut out, e)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}
