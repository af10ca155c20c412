//! `voq demo`: the main job, end to end on loopback. Starts servers with different agents, puts
//! an impaired link (loss, blackouts) in front of some, makes calls with the shared audio — a
//! prompt echoed bit-exact, the same through loss, a buffered reply through a blackout, a
//! barge-in, real synthesized speech over Opus — and ends with a summary table and an HTML
//! report with the audio.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use voq_client::{CallOptions, CallOutcome, Client, Target, Trust};
use voq_netem::LinkConfig;
use voq_proto::Codec;
use voq_server::{Server, Settings};

use crate::proxy::{Direction, NetemProxy};

/// The shared test audio, built in so the demo runs from anywhere.
pub const PROMPT_CARWASH: &[u8] = include_bytes!("../../../testdata/audio/prompt-carwash-24k.wav");
pub const PROMPT_LISBON: &[u8] = include_bytes!("../../../testdata/audio/prompt-lisbon-24k.wav");
pub const REPLY_CARWASH: &[u8] = include_bytes!("../../../testdata/audio/reply-carwash-24k.wav");

/// Options of `voq demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Where the report and the audio go.
    #[arg(long, default_value = "out/demo", value_name = "DIR")]
    pub out: PathBuf,
    /// Print the summary as JSON too.
    #[arg(long)]
    pub json: bool,
}

/// One row of the summary.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DemoRow {
    pub scenario: String,
    pub agent: String,
    pub codec: String,
    pub network: String,
    pub report: voq_client::CallReport,
    /// What the scenario checks, and whether it held.
    pub check: String,
    pub passed: bool,
    pub wav_received: Option<String>,
    pub wav_played: Option<String>,
}

struct Scenario {
    name: &'static str,
    agent: &'static str,
    codec: Codec,
    network: Network,
    prompt: &'static [u8],
    interrupt_after: Option<Duration>,
    check: Check,
    /// The browser carriers run on a clean network (the netem proxy is UDP only).
    transport: voq_transport::Carrier,
}

#[derive(Clone, Copy)]
enum Network {
    Clean,
    /// Random loss both ways, and a blackout `blackout_at` after the call starts.
    Impaired {
        loss: f64,
        delay_ms: f64,
        blackout_at: Duration,
        blackout: Duration,
    },
}

#[derive(Clone, Copy)]
enum Check {
    /// The reply is the prompt, sample for sample.
    EchoBitExact,
    /// The whole reply played with no underrun.
    NoUnderrun,
    /// The server truncated exactly where the user stopped hearing.
    Truncated,
    /// A reply was spoken and played.
    Spoken,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let reply_file = args.out.join("agent-reply.wav");
    std::fs::write(&reply_file, REPLY_CARWASH)?;
    let speak = voq_server::agent::Speak::new().is_ok();
    let mut scenarios = vec![
        Scenario {
            name: "prompt echoed",
            agent: "echo",
            codec: Codec::Pcm16,
            network: Network::Clean,
            prompt: PROMPT_CARWASH,
            interrupt_after: None,
            check: Check::EchoBitExact,
            transport: voq_transport::Carrier::Quic,
        },
        Scenario {
            name: "prompt through loss",
            agent: "echo",
            codec: Codec::Pcm16,
            network: Network::Impaired {
                loss: 0.10,
                delay_ms: 25.0,
                blackout_at: Duration::from_millis(1200),
                blackout: Duration::from_millis(500),
            },
            prompt: PROMPT_CARWASH,
            interrupt_after: None,
            check: Check::EchoBitExact,
            transport: voq_transport::Carrier::Quic,
        },
        Scenario {
            name: "reply through blackout",
            agent: "file",
            codec: Codec::Pcm16,
            network: Network::Impaired {
                loss: 0.02,
                delay_ms: 25.0,
                blackout_at: Duration::from_secs(6),
                blackout: Duration::from_secs(1),
            },
            prompt: PROMPT_CARWASH,
            interrupt_after: None,
            check: Check::NoUnderrun,
            transport: voq_transport::Carrier::Quic,
        },
        Scenario {
            name: "barge-in",
            agent: "file",
            codec: Codec::Opus,
            network: Network::Clean,
            prompt: PROMPT_CARWASH,
            interrupt_after: Some(Duration::from_secs(1)),
            check: Check::Truncated,
            transport: voq_transport::Carrier::Quic,
        },
        Scenario {
            name: "echo over WebTransport",
            agent: "echo",
            codec: Codec::Pcm16,
            network: Network::Clean,
            prompt: PROMPT_CARWASH,
            interrupt_after: None,
            check: Check::EchoBitExact,
            transport: voq_transport::Carrier::WebTransport,
        },
        Scenario {
            name: "echo over WebSocket",
            agent: "echo",
            codec: Codec::Pcm16,
            network: Network::Clean,
            prompt: PROMPT_CARWASH,
            interrupt_after: None,
            check: Check::EchoBitExact,
            transport: voq_transport::Carrier::WebSocket,
        },
    ];
    if speak {
        scenarios.push(Scenario {
            name: "spoken answer",
            agent: "speak",
            codec: Codec::Opus,
            network: Network::Clean,
            prompt: PROMPT_LISBON,
            interrupt_after: None,
            check: Check::Spoken,
            transport: voq_transport::Carrier::Quic,
        });
    }
    let total = scenarios.len() + CLUSTER_SCENARIOS;
    eprintln!(
        "voq demo: {total} scenarios on loopback; audio and report in {}",
        args.out.display()
    );
    let mut rows = Vec::new();
    for (i, s) in scenarios.iter().enumerate() {
        eprintln!(
            "[{}/{}] {} ({} agent, {}) …",
            i + 1,
            total,
            s.name,
            s.agent,
            s.codec
        );
        let row = run_scenario(i, s, &reply_file, &args.out)
            .await
            .with_context(|| format!("scenario \"{}\"", s.name))?;
        eprintln!(
            "      {} {}",
            if row.passed { "ok  " } else { "FAIL" },
            row.check
        );
        rows.push(row);
    }
    let first = rows.len() + 1;
    rows.extend(
        run_cluster(first, total, &args.out)
            .await
            .context("scenarios through voq lb")?,
    );

    if !speak {
        eprintln!(
            "(spoken-answer scenario skipped: espeak-ng is not installed; scripts/setup installs it)"
        );
    }
    let table = summary_table(&rows);
    #[allow(clippy::print_stdout)] // the summary is this command's output
    {
        println!("\n{table}");
        if args.json {
            println!("{}", serde_json::to_string_pretty(&rows)?);
        }
    }
    let html = args.out.join("report.html");
    std::fs::write(&html, html_report(&rows))?;
    std::fs::write(
        args.out.join("summary.json"),
        serde_json::to_vec_pretty(&rows)?,
    )?;
    eprintln!("report: {}", html.display());
    let failed = rows.iter().filter(|r| !r.passed).count();
    anyhow::ensure!(
        failed == 0,
        "{failed} of {} scenarios failed their check",
        rows.len()
    );
    Ok(())
}

async fn run_scenario(
    index: usize,
    s: &Scenario,
    reply_file: &Path,
    out: &Path,
) -> anyhow::Result<DemoRow> {
    let agent = match s.agent {
        "file" => format!("file:{}", reply_file.display()),
        other => other.to_string(),
    };
    let settings = Settings {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        agent: agent.clone(),
        agent_speed: 4.0,
        drain_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    let server = Server::start(settings).await?;
    let proxy = match s.network {
        Network::Clean => None,
        Network::Impaired { loss, delay_ms, .. } => {
            let link = LinkConfig {
                delay_ms,
                loss,
                ..Default::default()
            };
            Some(
                NetemProxy::start(
                    "127.0.0.1:0".parse()?,
                    server.local_addr(),
                    link.clone(),
                    link,
                    7 + index as u64,
                )
                .await?,
            )
        }
    };
    let addr = proxy
        .as_ref()
        .map_or(server.local_addr(), |p| p.local_addr());
    let target = Target {
        addr,
        server_name: "localhost".into(),
        tls: true,
    };
    let client = Client::new(
        &Trust::cert_hash(&server.cert_sha256())?,
        "127.0.0.1:0".parse()?,
    )?;
    let prompt = voq_audio::read_wav(s.prompt)?.to_mono_24k()?;
    let opts = CallOptions {
        codec: s.codec,
        turns: vec![prompt.clone()],
        input_speed: 1.0,
        interrupt_after: s.interrupt_after,
        timeout: Duration::from_secs(90),
        transport: s.transport,
        ..Default::default()
    };
    let blackout = match (s.network, &proxy) {
        (
            Network::Impaired {
                blackout_at,
                blackout,
                ..
            },
            Some(p),
        ) => Some((blackout_at, blackout, p)),
        _ => None,
    };
    let call = client.call(&target, opts);
    let outcome: CallOutcome = match blackout {
        Some((at, duration, p)) => {
            let trigger = async {
                tokio::time::sleep(at).await;
                p.blackout(Direction::Both, duration);
                std::future::pending::<()>().await
            };
            tokio::select! {
                r = call => r?,
                _ = trigger => unreachable!("the trigger never completes"),
            }
        }
        None => call.await?,
    };
    let network = match s.network {
        Network::Clean => "loopback".to_string(),
        Network::Impaired {
            loss,
            delay_ms,
            blackout,
            blackout_at,
        } => format!(
            "{:.0}% loss, {}ms each way, {:.1}s blackout at {:.1}s",
            loss * 100.0,
            delay_ms,
            blackout.as_secs_f64(),
            blackout_at.as_secs_f64()
        ),
    };
    server.shutdown().await;
    let r = &outcome.report;
    let (check, passed) = match s.check {
        Check::EchoBitExact => {
            let exact = outcome.reply_received == prompt;
            let all = r.prompt.frames_confirmed == r.prompt.frames_sent
                && r.prompt.bytes_confirmed == r.prompt.bytes_sent;
            (
                format!(
                    "prompt {}/{} frames confirmed; echo {} the prompt",
                    r.prompt.frames_confirmed,
                    r.prompt.frames_sent,
                    if exact {
                        "is bit-exact"
                    } else {
                        "DIFFERS from"
                    }
                ),
                exact && all,
            )
        }
        Check::NoUnderrun => (
            format!(
                "{} ms played, {} underruns, {} ms stalled",
                r.reply.duration_ms, r.reply.underruns, r.reply.stall_ms
            ),
            r.reply.underruns == 0 && r.reply.duration_ms > 15_000,
        ),
        Check::Truncated => {
            let i = r.interrupt.clone().unwrap_or_default();
            (
                format!(
                    "heard {} ms, server truncated at {} ms, silent after {} ms",
                    i.played_ms,
                    i.truncated_audio_end_ms
                        .map_or("-".into(), |v| v.to_string()),
                    i.silence_ms.map_or("-".into(), |v| format!("{v:.1}"))
                ),
                i.truncated_audio_end_ms == Some(i.played_ms) && i.played_ms >= 900,
            )
        }
        Check::Spoken => (
            format!("{} ms of speech played", r.reply.duration_ms),
            r.reply.duration_ms > 1000
                && r.reply.status == Some(voq_proto::event::ResponseStatus::Completed),
        ),
    };
    let base = format!("{:02}-{}", index + 1, s.name.replace(' ', "-"));
    let received = format!("{base}-received.wav");
    let played = format!("{base}-played.wav");
    voq_audio::write_wav_file(
        out.join(&received),
        &outcome.reply_received,
        voq_audio::SAMPLE_RATE,
    )?;
    voq_audio::write_wav_file(
        out.join(&played),
        &outcome.reply_played,
        voq_audio::SAMPLE_RATE,
    )?;
    Ok(DemoRow {
        scenario: s.name.into(),
        agent: s.agent.into(),
        codec: s.codec.to_string(),
        network,
        report: outcome.report,
        check,
        passed,
        wav_received: Some(received),
        wav_played: Some(played),
    })
}

/// Scenarios through the balancer: how many rows [`run_cluster`] adds.
const CLUSTER_SCENARIOS: usize = 2;

/// Three servers behind `voq lb` (QUIC-LB server ids 01..03): several calls spread over them,
/// and a call whose client changes address in the middle.
async fn run_cluster(first: usize, total: usize, out: &Path) -> anyhow::Result<Vec<DemoRow>> {
    let mut servers = Vec::new();
    let mut backends = Vec::new();
    for id in 1..=3u8 {
        let quic_lb = voq_server::QuicLbSettings {
            config_id: 0,
            server_id: vec![id],
            nonce_len: 8,
            key: None,
            cid_len: None,
            self_encoded_len: None,
        };
        let settings = Settings {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            agent: "echo".into(),
            quic_lb: Some(quic_lb),
            tunnel: voq_server::Tunnel::Learn,
            drain_timeout: Duration::from_secs(2),
            ..Default::default()
        };
        let server = Server::start(settings).await?;
        let sid = voq_quic_lb::ServerId::from_slice(&[id]).context("server id")?;
        backends.push(voq_lb::Backend::new(sid, server.local_addr()));
        servers.push(server);
    }
    let configs = vec![voq_quic_lb::Config::new(0, 1, 8)?];
    let lb_config = voq_lb::BalancerConfig::new("127.0.0.1:0".parse()?, configs, backends);
    let balancer = voq_lb::Balancer::start(lb_config).await?;
    let target = Target {
        addr: balancer.local_addr(),
        server_name: "localhost".into(),
        tls: true,
    };
    let prompt = voq_audio::read_wav(PROMPT_CARWASH)?.to_mono_24k()?;
    let mut rows = Vec::new();

    // Several calls, each from a new client (a new random first-flight DCID).
    eprintln!("[{first}/{total}] calls through voq lb to 3 servers (echo agent, pcm16) …");
    let calls = 6;
    let mut last = None;
    let mut exact = 0;
    for _ in 0..calls {
        let client = Client::new(&Trust::Insecure, "127.0.0.1:0".parse()?)?;
        let opts = CallOptions {
            turns: vec![prompt.clone()],
            input_speed: 0.0,
            ..Default::default()
        };
        let outcome = client.call(&target, opts).await?;
        exact += usize::from(outcome.reply_received == prompt);
        last = Some(outcome);
    }
    let spread: Vec<u64> = servers
        .iter()
        .map(|s| s.stats().sessions_started.total())
        .collect();
    let outcome = last.context("no call")?;
    rows.push(cluster_row(
        "calls through voq lb",
        format!("{calls} calls spread {spread:?} over servers 01/02/03; {exact}/{calls} echoes bit-exact"),
        exact == calls && spread.iter().filter(|&&n| n > 0).count() >= 2,
        outcome,
        out,
        first,
    )?);

    // A network change: the client moves to another socket (address) mid-call.
    eprintln!(
        "[{}/{total}] a network change mid-call, through voq lb …",
        first + 1
    );
    let client = std::sync::Arc::new(Client::new(&Trust::Insecure, "127.0.0.1:0".parse()?)?);
    let caller = client.clone();
    let (t, p) = (target.clone(), prompt.clone());
    let call = tokio::spawn(async move {
        let opts = CallOptions {
            turns: vec![p],
            input_speed: 1.0,
            ..Default::default()
        };
        caller.call(&t, opts).await
    });
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let before = client.endpoint().local_addr()?;
    client
        .endpoint()
        .rebind(std::net::UdpSocket::bind("127.0.0.1:0")?)?;
    let after = client.endpoint().local_addr()?;
    let outcome = call.await.context("the call task failed")??;
    let sessions: u64 = servers
        .iter()
        .map(|s| s.stats().sessions_started.total())
        .sum();
    let same_call = sessions == calls as u64 + 1;
    let exact = outcome.reply_received == prompt;
    rows.push(cluster_row(
        "network change",
        format!(
            "client moved {before} -> {after} mid-turn; the call went on ({}), echo {}",
            if same_call {
                "same session"
            } else {
                "NEW session"
            },
            if exact { "bit-exact" } else { "DIFFERS" }
        ),
        same_call && exact,
        outcome,
        out,
        first + 1,
    )?);
    balancer.shutdown().await;
    for s in servers {
        s.shutdown().await;
    }
    Ok(rows)
}

fn cluster_row(
    name: &str,
    check: String,
    passed: bool,
    outcome: CallOutcome,
    out: &Path,
    index: usize,
) -> anyhow::Result<DemoRow> {
    eprintln!("      {} {check}", if passed { "ok  " } else { "FAIL" });
    let received = format!("{index:02}-{}-received.wav", name.replace(' ', "-"));
    voq_audio::write_wav_file(
        out.join(&received),
        &outcome.reply_received,
        voq_audio::SAMPLE_RATE,
    )?;
    Ok(DemoRow {
        scenario: name.into(),
        agent: "echo".into(),
        codec: "pcm16".into(),
        network: "loopback via voq lb, 3 servers".into(),
        report: outcome.report,
        check,
        passed,
        wav_received: Some(received),
        wav_played: None,
    })
}

/// The terminal summary.
pub fn summary_table(rows: &[DemoRow]) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "{:<24} {:<6} {:<6} {:>15} {:>15} {:>9} {:>9} {:>14} {:>9}  result",
        "scenario",
        "agent",
        "codec",
        "setup",
        "prompt frames",
        "reply ms",
        "underrun",
        "heard→trunc",
        "unplayed"
    );
    for r in rows {
        let p = &r.report.prompt;
        let i = r.report.interrupt.as_ref();
        let _ = writeln!(
            t,
            "{:<24} {:<6} {:<6} {:>15} {:>15} {:>9} {:>9} {:>14} {:>9}  {}",
            r.scenario,
            r.agent,
            r.codec,
            // On bare loopback the RTT is a fraction of a millisecond, and a ratio to it
            // measures processing, not round trips: show the time only.
            if r.network.starts_with("loopback") {
                format!("{:.1}ms", r.report.setup_ms)
            } else {
                format!("{:.1}ms={:.1}RTT", r.report.setup_ms, r.report.setup_rtts)
            },
            format!("{}/{}", p.frames_confirmed, p.frames_sent),
            r.report.reply.duration_ms,
            format!("{}/{}ms", r.report.reply.underruns, r.report.reply.stall_ms),
            i.map_or("-".into(), |i| format!(
                "{}→{}",
                i.played_ms,
                i.truncated_audio_end_ms
                    .map_or("?".into(), |v| v.to_string())
            )),
            i.map_or("-".into(), |i| format!("{}B", i.unplayed_bytes)),
            if r.passed { "ok" } else { "FAIL" }
        );
    }
    t
}

fn html_report(rows: &[DemoRow]) -> String {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let mut body = String::new();
    for r in rows {
        let audio = |f: &Option<String>| {
            f.as_ref().map_or(String::new(), |f| {
                format!("<audio controls preload=none src=\"{}\"></audio>", esc(f))
            })
        };
        let _ = writeln!(
            body,
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.2}</td><td>{}/{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            if r.passed { "ok" } else { "fail" },
            esc(&r.scenario),
            esc(&r.agent),
            esc(&r.codec),
            esc(&r.network),
            r.report.setup_rtts,
            r.report.prompt.frames_confirmed,
            r.report.prompt.frames_sent,
            r.report.reply.duration_ms,
            r.report.reply.underruns,
            esc(&r.check),
            audio(&r.wav_received),
            audio(&r.wav_played),
        );
    }
    format!(
        "<!doctype html><meta charset=utf-8><title>voq demo</title>\
         <style>body{{font:14px system-ui;margin:2em}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:4px 8px}}tr.ok td:nth-child(10){{color:#070}}\
         tr.fail td{{background:#fee}}</style>\
         <h1>voq demo</h1><p>Calls on loopback through voq/1, over QUIC unless the scenario names \
         WebTransport or WebSocket. \"received\" is the reply as \
         the agent said it (placed by timestamp); \"played\" is what the client's device rendered, \
         silence where it underran.</p>\
         <table><tr><th>scenario</th><th>agent</th><th>codec</th><th>network</th><th>setup RTTs</th>\
         <th>prompt frames confirmed</th><th>reply played ms</th><th>underruns</th><th>check</th>\
         <th>received</th><th>played</th></tr>\n{body}</table>"
    )
}
