//! One call: connect over QUIC, WebTransport or WebSocket, send the user's turns, play the replies by timestamp on a simulated audio
//! device (a 10 ms render clock, like a sound card's), optionally barge in, report.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, warn};
use voq_proto::client::{ClientConfig, ClientOutput, ClientSession};
use voq_proto::stream::Transmit;
use voq_proto::{Code, Codec, SAMPLE_RATE};
use voq_transport::quic::{ALPN_H3, ALPN_HTTP1, ALPN_VOQ};
use voq_transport::{Carrier, Inbound, Link, Streams, sleep_until};

use crate::report::{CallReport, InterruptReport, PromptReport, ReplyReport, TurnReport};
use crate::tls::{Trust, client_config};

/// Where to call: `https://HOST:PORT` (the path is ignored: raw QUIC has none, WebTransport and
/// WebSocket use `/voq`). `http://` is accepted for WebSocket without TLS.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub server_name: String,
    /// `false` for an `http://` URL: WebSocket over plain TCP.
    pub tls: bool,
}

impl Target {
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let (rest, tls) = match url.strip_prefix("https://") {
            Some(rest) => (rest, true),
            None => (
                url.strip_prefix("http://").with_context(|| {
                    format!("\"{url}\": the URL must start with https:// (or http:// for --transport ws)")
                })?,
                false,
            ),
        };
        let authority = rest.split('/').next().unwrap_or("");
        anyhow::ensure!(!authority.is_empty(), "\"{url}\": no host");
        // `host`, `host:port`, `[v6]` or `[v6]:port`.
        let (host, port) = match authority.strip_prefix('[') {
            Some(v6) => {
                let (host, after) = v6
                    .split_once(']')
                    .with_context(|| format!("\"{url}\": unclosed [ in the host"))?;
                (host, after.strip_prefix(':'))
            }
            None => match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            },
        };
        let port: u16 = match port {
            Some(p) => p
                .parse()
                .with_context(|| format!("\"{url}\": bad port \"{p}\""))?,
            None if tls => 443,
            None => 80,
        };
        let addr = (host, port)
            .to_socket_addrs()
            .with_context(|| format!("\"{url}\": cannot resolve {host}"))?
            .next()
            .with_context(|| format!("\"{url}\": {host} has no address"))?;
        let server_name = host.to_string();
        Ok(Self {
            addr,
            server_name,
            tls,
        })
    }

    /// `host:port` as it goes into a URL (IPv6 in brackets).
    fn authority(&self) -> String {
        if self.server_name.contains(':') {
            format!("[{}]:{}", self.server_name, self.addr.port())
        } else {
            format!("{}:{}", self.server_name, self.addr.port())
        }
    }
}

/// What to do in a call.
#[derive(Debug, Clone)]
pub struct CallOptions {
    /// Codec for both directions.
    pub codec: Codec,
    /// The user's turns, 24 kHz mono pcm16; each is sent, then its reply is awaited and played.
    pub turns: Vec<Vec<i16>>,
    /// How fast the user's audio is captured: 1 = real time (a microphone), 0 = all at once.
    pub input_speed: f64,
    /// Barge in this long after the reply starts playing.
    pub interrupt_after: Option<Duration>,
    /// Ask the server for this send-ahead lead.
    pub send_ahead_ms: Option<u64>,
    pub start_threshold_ms: u32,
    /// The audio device's render quantum.
    pub quantum: Duration,
    /// The whole call may take at most this long.
    pub timeout: Duration,
    /// Show progress on stderr (only when it is a terminal).
    pub progress: bool,
    /// Server-side VAD decides where turns end (instead of push-to-talk).
    pub server_vad: bool,
    /// The carrier: raw QUIC (0-RTT when resuming), WebTransport or WebSocket.
    pub transport: Carrier,
    /// The session token for a server with authentication on: sent in the first event on QUIC
    /// and WebTransport, as `Authorization: Bearer` on the WebSocket upgrade.
    pub token: Option<voq_proto::event::Token>,
    /// Move to a new local address this long after connecting (QUIC and WebTransport: the
    /// connection migrates; a NAT rebinding or a network change).
    pub rebind: Option<Rebind>,
    /// Keep every control event of the call, both directions, as it crossed the wire
    /// ([`CallOutcome::events`]; `voq call --events FILE`).
    pub record_events: bool,
    /// Give the call up when the server has not been heard from for this long while a turn or
    /// a reply is under way (the client pings it every 250 ms meanwhile, so a live server always
    /// answers); the failure is a [`CallFailed`] with what the call got so far. A warning says
    /// so after [`SILENCE_NOTICE`]. `None`: wait for QUIC's idle timeout (30 s). Default 5 s,
    /// longer than the network outages a call must ride out (a 1.5 s blackout and QUIC's
    /// recovery after it).
    pub dead_after: Option<Duration>,
    /// When the server gave a resume token and the connection is lost (closed, reset, or the
    /// server silent for [`CallOptions::resume_after`]), reconnect to the same address and take
    /// the session back, trying for this long; the turns the server had not confirmed are sent
    /// again from where it held them, and the reply plays on from the sample it had reached.
    /// `None`: never (the call fails as without a token). Default 30 s.
    pub resume_within: Option<Duration>,
    /// With a resume token, give a silent connection up after this long (instead of
    /// `dead_after`) and reconnect. Default 2 s: longer than a 1.5 s blackout, which QUIC rides
    /// out on the connection it has.
    pub resume_after: Duration,
}

/// After this long without a word from the server while a turn or reply is under way, the
/// client says so (a warning) and keeps waiting until [`CallOptions::dead_after`].
pub const SILENCE_NOTICE: Duration = Duration::from_secs(1);
/// Reconnecting: a new connection attempt this often while none has won, at most
/// [`DIAL_RACE`] at once, each given up after [`DIAL_TIMEOUT`].
const DIAL_STAGGER: Duration = Duration::from_millis(250);
const DIAL_RACE: usize = 3;
const DIAL_TIMEOUT: Duration = Duration::from_secs(3);
/// While a turn or reply is under way and the server has been quiet this long, the client
/// pings it (`voq.ping`): a live server's pong keeps the silence short.
const LIVENESS_PING: Duration = Duration::from_millis(250);

/// A call that failed part way: why, and everything it had got by then (the report so far,
/// the reply audio received and played, the events). `voq call` prints and writes these.
#[derive(Debug)]
pub struct CallFailed {
    /// What went wrong, in words for people.
    pub message: String,
    /// The call up to the failure.
    pub partial: Box<CallOutcome>,
}

impl std::fmt::Display for CallFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CallFailed {}

/// A change of the client's own address in the middle of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rebind {
    /// When, after the connection is up.
    pub after: Duration,
    /// The new local IP; `None` keeps the IP and takes a new port (what a NAT rebinding does).
    pub ip: Option<std::net::IpAddr>,
}

impl Default for CallOptions {
    fn default() -> Self {
        Self {
            codec: Codec::Pcm16,
            turns: Vec::new(),
            input_speed: 1.0,
            interrupt_after: None,
            send_ahead_ms: None,
            start_threshold_ms: 100,
            quantum: Duration::from_millis(10),
            timeout: Duration::from_secs(300),
            progress: false,
            server_vad: false,
            transport: Carrier::Quic,
            token: None,
            rebind: None,
            record_events: false,
            dead_after: Some(Duration::from_secs(5)),
            resume_within: Some(Duration::from_secs(30)),
            resume_after: Duration::from_secs(2),
        }
    }
}

/// A finished call: the report and the audio.
#[derive(Debug, Clone, Default)]
pub struct CallOutcome {
    pub report: CallReport,
    /// Reply audio as received, placed by timestamp (what the agent said), turns concatenated.
    pub reply_received: Vec<i16>,
    /// What the device rendered from the first reply sample on, with silence where it
    /// underran, turns concatenated.
    pub reply_played: Vec<i16>,
    /// When the call started connecting (the origin of `report.setup_ms`).
    pub started: Option<std::time::Instant>,
    /// The session's own per-turn and per-response records, with their instants (turn end,
    /// confirmation, first audio, interrupt…): for measurements that compare them with
    /// instants observed elsewhere in the same process (`voq bench`).
    pub turns: Vec<voq_proto::client::TurnStats>,
    pub responses: Vec<voq_proto::client::ResponseStats>,
    /// Every control event, both directions, when [`CallOptions::record_events`] was set (at
    /// most [`crate::events::MAX_LOGGED_EVENTS`]).
    pub events: Vec<crate::events::LoggedEvent>,
}

/// A client endpoint for every carrier; reuse it for several calls to resume QUIC sessions with
/// 0-RTT.
#[derive(Debug)]
pub struct Client {
    endpoint: quinn::Endpoint,
    config: quinn::ClientConfig,
    /// The same with ALPN `h3`, for WebTransport.
    webtransport: quinn::ClientConfig,
    /// TLS over TCP (ALPN `http/1.1`), for `wss://`.
    tcp_tls: Arc<rustls::ClientConfig>,
}

/// How a [`Client`] behaves beyond whom it trusts.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Move to a server's preferred address (a fleet server's unicast address) once the
    /// handshake is confirmed (RFC 9000 §9.6). `false` stays on the dialled address, as
    /// browsers do. Default `true`.
    pub use_preferred_address: bool,
    /// Keep session tickets in this file, so that another process (the next `voq call`)
    /// resumes with 0-RTT; `None` keeps them in memory, for this client only. Default `None`.
    pub ticket_file: Option<std::path::PathBuf>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            use_preferred_address: true,
            ticket_file: None,
        }
    }
}

impl Client {
    /// A client on `bind` (use `0.0.0.0:0` or `[::]:0`) trusting servers per `trust`.
    pub fn new(trust: &Trust, bind: SocketAddr) -> anyhow::Result<Self> {
        Self::with_options(trust, bind, &ClientOptions::default())
    }

    /// [`Client::new`] with options.
    pub fn with_options(
        trust: &Trust,
        bind: SocketAddr,
        options: &ClientOptions,
    ) -> anyhow::Result<Self> {
        let transport = voq_transport::quic::transport_config_with(options.use_preferred_address);
        let quic_config = |alpn: &[u8]| -> anyhow::Result<quinn::ClientConfig> {
            let tls = crate::tls::client_config_with(trust, alpn, options.ticket_file.as_deref())?;
            let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
            let mut config = quinn::ClientConfig::new(Arc::new(quic));
            config.transport_config(transport.clone());
            Ok(config)
        };
        let endpoint =
            quinn::Endpoint::client(bind).with_context(|| format!("cannot bind udp {bind}"))?;
        let tcp_tls = client_config(trust, ALPN_HTTP1)?;
        Ok(Self {
            endpoint,
            config: quic_config(ALPN_VOQ)?,
            webtransport: quic_config(ALPN_H3)?,
            tcp_tls: Arc::new(tcp_tls),
        })
    }

    /// Closes every connection and waits, at most `limit`, until the closes were sent and the
    /// connections drained. Call it before the process (or the runtime) ends: a close that
    /// never leaves keeps the server's session open until its idle timeout.
    pub async fn shutdown(&self, limit: Duration) {
        self.endpoint
            .close(quinn::VarInt::from_u32(Code::NoError.to_u32()), b"bye");
        let _ = tokio::time::timeout(limit, self.endpoint.wait_idle()).await;
    }

    /// The endpoint (e.g. to `rebind` it to a new socket: connection migration).
    pub fn endpoint(&self) -> &quinn::Endpoint {
        &self.endpoint
    }

    /// Makes one call.
    pub async fn call(&self, target: &Target, opts: CallOptions) -> anyhow::Result<CallOutcome> {
        tokio::time::timeout(opts.timeout, self.call_inner(target, opts.clone()))
            .await
            .with_context(|| format!("the call did not finish within {:?}", opts.timeout))?
    }

    async fn call_inner(&self, target: &Target, opts: CallOptions) -> anyhow::Result<CallOutcome> {
        anyhow::ensure!(!opts.turns.is_empty(), "nothing to say: no input turns");
        let started = Instant::now();
        let (link, zero_rtt) = self
            .connect(target, opts.transport, opts.token.as_ref())
            .await?;
        // Closes the connection however the call ends, also when `call`'s timeout drops this
        // future: an abandoned connection would otherwise hold a session on the server.
        let _close = CloseOnDrop(link.clone());
        let setup = started.elapsed();
        let rebinding = match opts.rebind {
            Some(rebind) => {
                anyhow::ensure!(
                    opts.transport != Carrier::WebSocket,
                    "a rebinding needs QUIC or WebTransport: a TCP connection cannot move"
                );
                Some(self.spawn_rebind(rebind))
            }
            None => None,
        };
        let _stop_rebinding = rebinding
            .as_ref()
            .map(|(task, _)| AbortOnDrop(task.abort_handle()));
        let mut outcome = match zero_rtt {
            None => self.session(&link, &opts, false, setup, target).await?,
            Some(accepted) => {
                // The session starts in 0-RTT. If the server rejects the early data (its
                // ticket key is not ours: another server, a restarted one), every stream of it
                // is gone: start the session again. Nothing is lost: the server saw none of it,
                // and the turns are sent again from their start.
                let mut early = Box::pin(self.session(&link, &opts, true, setup, target));
                tokio::pin!(accepted);
                let accepted_now = tokio::select! {
                    accepted = &mut accepted => Some(accepted),
                    result = &mut early => {
                        // Ended before the handshake said (a failure, in practice): ask now.
                        if accepted.await {
                            return result.map(|o| Self::stamp(o, true, started));
                        }
                        None
                    }
                };
                match accepted_now {
                    Some(true) => Self::stamp(early.await?, true, started),
                    _ => {
                        // On a new connection: after a rejection quinn numbers streams from 0
                        // again, and the rejected streams' handles (whose tasks end on their
                        // own time) would clear the new streams' wakers (quinn 0.11 keys them by
                        // stream id), stalling the session. One more round trip, on a rare path.
                        tracing::info!(
                            "the server rejected 0-RTT: starting again on a new connection"
                        );
                        drop(early);
                        link.close(Code::NoError, "0-RTT rejected: reconnecting");
                        let (again, _) = self
                            .connect_with(target, opts.transport, opts.token.as_ref(), false)
                            .await?;
                        let _close_again = CloseOnDrop(again.clone());
                        let setup = started.elapsed();
                        let mut outcome = self.session(&again, &opts, false, setup, target).await?;
                        outcome.report.setup.zero_rtt_rejected = true;
                        outcome
                    }
                }
            }
        };
        if let Some((_, at)) = &rebinding
            && let Ok(at) = at.lock()
            && let Some(at) = *at
        {
            outcome.report.migrations += 1;
            outcome.report.rebound_at_ms = Some(ms(at.saturating_duration_since(started)));
        }
        outcome.started = Some(started.into_std());
        Ok(outcome)
    }

    /// Moves the endpoint to a new socket after `rebind.after`; the instant it did so goes into
    /// the returned cell.
    fn spawn_rebind(
        &self,
        rebind: Rebind,
    ) -> (
        tokio::task::JoinHandle<()>,
        Arc<std::sync::Mutex<Option<Instant>>>,
    ) {
        let endpoint = self.endpoint.clone();
        let done = Arc::new(std::sync::Mutex::new(None));
        let cell = done.clone();
        let task = tokio::spawn(async move {
            tokio::time::sleep(rebind.after).await;
            let ip = match (rebind.ip, endpoint.local_addr()) {
                (Some(ip), _) => ip,
                (None, Ok(local)) => local.ip(),
                (None, Err(e)) => {
                    tracing::warn!("cannot rebind: no local address: {e}");
                    return;
                }
            };
            let moved = std::net::UdpSocket::bind((ip, 0)).and_then(|s| endpoint.rebind(s));
            match moved {
                Ok(()) => {
                    if let Ok(mut at) = cell.lock() {
                        *at = Some(Instant::now());
                    }
                }
                Err(e) => tracing::warn!("cannot rebind to {ip}: {e}"),
            }
        });
        (task, done)
    }

    /// One voq session on `link`: the control stream, the turns, the replies.
    async fn session(
        &self,
        link: &Link,
        opts: &CallOptions,
        zero_rtt: bool,
        setup: Duration,
        target: &Target,
    ) -> anyhow::Result<CallOutcome> {
        let control = link
            .open_bi()
            .await
            .context("cannot open the control stream")?;
        let mut call = Call::new(self, link.clone(), control, opts, zero_rtt, setup, target)?;
        match call.run(opts).await {
            Ok(()) => Ok(call.finish()),
            Err(e) => {
                let message = format!("{e:#}");
                Err(anyhow::Error::new(CallFailed {
                    message,
                    partial: Box::new(call.finish()),
                }))
            }
        }
    }

    /// Marks an outcome whose 0-RTT data the server accepted.
    fn stamp(mut outcome: CallOutcome, accepted: bool, started: Instant) -> CallOutcome {
        let r = &mut outcome.report;
        r.zero_rtt = accepted;
        r.setup.zero_rtt = accepted;
        if accepted {
            r.setup.first_prompt_byte_rtts = 0.0;
        }
        outcome.started = Some(started.into_std());
        outcome
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct CloseOnDrop(Link);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close(Code::NoError, "bye");
    }
}

impl Client {
    /// Sets up the carrier: the link, and, when it was set up with 0-RTT, whether the server
    /// accepted the early data (resolves with the handshake).
    async fn connect(
        &self,
        target: &Target,
        transport: Carrier,
        token: Option<&voq_proto::event::Token>,
    ) -> anyhow::Result<(Link, Option<quinn::ZeroRttAccepted>)> {
        self.connect_with(target, transport, token, true).await
    }

    /// [`Client::connect`]; `early_data` false waits for the handshake before anything is sent.
    async fn connect_with(
        &self,
        target: &Target,
        transport: Carrier,
        token: Option<&voq_proto::event::Token>,
        early_data: bool,
    ) -> anyhow::Result<(Link, Option<quinn::ZeroRttAccepted>)> {
        let what = || {
            format!(
                "cannot connect to {} ({}) over {transport}",
                target.addr, target.server_name
            )
        };
        anyhow::ensure!(
            target.tls || transport == Carrier::WebSocket,
            "{transport} needs an https:// URL (http:// is for --transport ws only)"
        );
        match transport {
            Carrier::Quic => {
                let connecting = self
                    .endpoint
                    .connect_with(self.config.clone(), target.addr, &target.server_name)
                    .with_context(what)?;
                if !early_data {
                    return Ok((Link::quic(connecting.await.with_context(what)?), None));
                }
                Ok(match connecting.into_0rtt() {
                    Ok((conn, accepted)) => (Link::quic(conn), Some(accepted)),
                    Err(connecting) => (Link::quic(connecting.await.with_context(what)?), None),
                })
            }
            Carrier::WebTransport => {
                use voq_transport::web_transport_quinn as wtq;
                let conn = self
                    .endpoint
                    .connect_with(self.webtransport.clone(), target.addr, &target.server_name)
                    .with_context(what)?
                    .await
                    .with_context(what)?;
                let url = url::Url::parse(&format!("https://{}/voq", target.authority()))
                    .with_context(what)?;
                let session = wtq::Session::connect(conn, url)
                    .await
                    .with_context(|| format!("{}: WebTransport CONNECT /voq refused", what()))?;
                Ok((Link::webtransport(session), None))
            }
            Carrier::WebSocket => Ok((
                self.websocket(target, token).await.with_context(what)?,
                None,
            )),
        }
    }

    /// TCP (+ TLS for https://), then the WebSocket upgrade at `/voq`.
    async fn websocket(
        &self,
        target: &Target,
        token: Option<&voq_proto::event::Token>,
    ) -> anyhow::Result<Link> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        use voq_transport::ws::{WsLink, websocket_config};
        let tcp = tokio::net::TcpStream::connect(target.addr).await?;
        voq_transport::ws::tune_tcp(&tcp);
        let scheme = if target.tls { "wss" } else { "ws" };
        let mut url = format!("{scheme}://{}/voq", target.authority()).into_client_request()?;
        if let Some(token) = token {
            let value = format!("Bearer {}", token.as_str())
                .parse()
                .context("the token is not valid in an HTTP header")?;
            url.headers_mut().insert("authorization", value);
        }
        let config = Some(websocket_config());
        if target.tls {
            let name = rustls::pki_types::ServerName::try_from(target.server_name.clone())?;
            let tls = tokio_rustls::TlsConnector::from(self.tcp_tls.clone())
                .connect(name, tcp)
                .await?;
            let (ws, _) = tokio_tungstenite::client_async_with_config(url, tls, config).await?;
            Ok(Link::WebSocket(WsLink::start(ws, false, target.addr)))
        } else {
            let (ws, _) = tokio_tungstenite::client_async_with_config(url, tcp, config).await?;
            Ok(Link::WebSocket(WsLink::start(ws, false, target.addr)))
        }
    }
}

/// The most reply audio a call keeps (for `--output` and reports), in seconds.
const MAX_RECEIVED_S: usize = 3600;

struct Call<'a> {
    /// The client and the address, to reconnect with.
    client: &'a Client,
    target: Target,
    /// When the call started, for the report's times.
    started: Instant,
    /// The server refused to resume: the next reconnection starts a new session.
    resume_refused: Option<String>,
    /// The server's first answer on a connection (`session.created`, `voq.session.resumed`)
    /// arrived since this was last cleared.
    session_answered: bool,
    /// The server said it is draining (`going_away`) and the session can move.
    going_away: bool,
    /// The answer on the new connection was `voq.session.resumed` (not a new session).
    session_resumed: bool,
    /// The server sent an error that ends a session (`unauthorized`, `limit_exceeded`): its
    /// close is on purpose, and the call is not taken elsewhere.
    ended_by_server: bool,
    link: Link,
    /// The last `error` event, for the message when the server then ends the call.
    last_server_error: Option<String>,
    session: ClientSession,
    streams: Streams,
    inbound_rx: mpsc::UnboundedReceiver<Inbound>,
    decoders: HashMap<String, voq_audio::Decoder>,
    encoder: voq_audio::Encoder,
    report: CallReport,
    received: Vec<i16>,
    played: Vec<i16>,
    /// Where the current response starts in `received` / whether it started playing.
    received_base: usize,
    playing: bool,
    progress: bool,
    /// The control events so far, when the caller asked for them.
    events: Option<crate::events::EventLog>,
    /// When the server was last heard from (anything on any stream), when the client last
    /// pinged it, and whether the silence was already reported.
    last_heard: Instant,
    last_ping: Instant,
    silence_noticed: bool,
    pings: u64,
}

impl<'a> Call<'a> {
    fn new(
        client: &'a Client,
        link: Link,
        control: (
            voq_transport::carrier::SendHalf,
            voq_transport::carrier::RecvHalf,
        ),
        opts: &CallOptions,
        zero_rtt: bool,
        setup: Duration,
        target: &Target,
    ) -> anyhow::Result<Self> {
        let (streams, inbound_rx) = Streams::start(link.clone(), control);
        let config = ClientConfig {
            input_codec: opts.codec,
            output_codec: opts.codec,
            start_threshold_ms: opts.start_threshold_ms,
            send_ahead_ms: opts.send_ahead_ms,
            server_vad: opts.server_vad,
            token: opts.token.clone(),
        };
        let session = ClientSession::new(config, Instant::now().into_std());
        let report = CallReport {
            transport: link.carrier().as_str().into(),
            server: target.addr.to_string(),
            setup_ms: ms(setup),
            zero_rtt,
            ..Default::default()
        };
        let encoder = call_encoder(opts.codec, voq_audio::Encoder::new)?;
        Ok(Self {
            client,
            target: target.clone(),
            started: Instant::now(),
            resume_refused: None,
            session_answered: false,
            going_away: false,
            session_resumed: false,
            ended_by_server: false,
            last_server_error: None,
            link,
            session,
            streams,
            inbound_rx,
            decoders: HashMap::new(),
            encoder,
            report,
            received: Vec::new(),
            played: Vec::new(),
            received_base: 0,
            playing: false,
            progress: opts.progress && std::io::stderr().is_terminal(),
            events: opts
                .record_events
                .then(|| crate::events::EventLog::new(Instant::now().into_std())),
            last_heard: Instant::now(),
            last_ping: Instant::now(),
            silence_noticed: false,
            pings: 0,
        })
    }

    async fn run(&mut self, opts: &CallOptions) -> anyhow::Result<()> {
        for (index, turn) in opts.turns.iter().enumerate() {
            self.turn(index, turn, opts).await?;
        }
        Ok(())
    }

    /// Sends one turn, then plays its reply (or interrupts it) until done.
    async fn turn(&mut self, index: usize, pcm: &[i16], opts: &CallOptions) -> anyhow::Result<()> {
        let mut device = tokio::time::interval(opts.quantum);
        device.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let quantum_samples = (SAMPLE_RATE as u128 * opts.quantum.as_millis() / 1000) as usize;
        let frame = voq_audio::FRAME_SAMPLES;
        let frame_time = Duration::from_millis(voq_audio::FRAME_MS as u64);
        let capture_start = Instant::now();
        let mut next_frame = 0usize;
        let responses_before = self.session.responses().count();
        self.session.start_turn(capture_start.into_std());
        // Silence is counted within a turn: the time between turns is the caller's.
        self.last_heard = capture_start;
        let mut turn_ended = false;
        let mut interrupted = false;
        self.received_base = self.received.len();
        self.playing = false;
        loop {
            // Capture: frames become available at the input speed (a microphone delivers them
            // in real time).
            let now = Instant::now();
            while !turn_ended && next_frame * frame < pcm.len() {
                let due = if opts.input_speed > 0.0 {
                    capture_start + frame_time.mul_f64(next_frame as f64 / opts.input_speed)
                } else {
                    now
                };
                if due > now {
                    break;
                }
                let chunk = &pcm[next_frame * frame..((next_frame + 1) * frame).min(pcm.len())];
                let mut payload = Vec::new();
                self.encoder
                    .encode(chunk, &mut payload)
                    .context("cannot encode the prompt")?;
                self.session
                    .send_audio(now.into_std(), &payload, chunk.len() as u32)?;
                next_frame += 1;
            }
            if !turn_ended && next_frame * frame >= pcm.len() {
                self.session.end_turn(now.into_std());
                turn_ended = true;
            }
            self.drain()?;
            // Done when this turn's reply has played to its end (or was interrupted and the
            // server confirmed the truncation).
            let reply = self.session.responses().nth(responses_before).cloned();
            if let Some(r) = &reply {
                let confirmed = r
                    .interrupt
                    .as_ref()
                    .is_some_and(|i| i.truncated_audio_end_ms.is_some() && i.silenced_at.is_some());
                if (self.session.playback_done() && r.status.is_some() && r.interrupt.is_none())
                    || confirmed
                {
                    break;
                }
            }
            let next_capture = (!turn_ended).then(|| {
                capture_start + frame_time.mul_f64(next_frame as f64 / opts.input_speed.max(1e-9))
            });
            let wake = self.session.poll_timeout().map(Instant::from_std);
            let lost: Option<String> = tokio::select! {
                _ = device.tick() => {
                    let now = Instant::now();
                    let mut q = vec![0i16; quantum_samples];
                    let r = self.session.render(now.into_std(), &mut q);
                    // The played timeline, exactly: whole quanta while the reply is active
                    // (stalls render silence), only the audio of the quantum in which it ends.
                    let active = self.session.current_response().is_some();
                    if r.audio > 0 || (self.playing && active) {
                        self.playing = true;
                        self.played.extend_from_slice(if active { &q[..] } else { &q[..r.audio] });
                    }
                    if let (Some(after), false) = (opts.interrupt_after, interrupted)
                        && let Some(first) = reply.as_ref().and_then(|r| r.first_audio_at)
                        && now.into_std() >= first + after
                    {
                        interrupted = self.session.interrupt(now.into_std()).is_some();
                    }
                    self.show_progress(index, pcm.len(), next_frame * frame);
                    self.check_liveness(now, opts, turn_ended)
                }
                msg = self.inbound_rx.recv() => match msg {
                    None => Some("the connection ended".to_string()),
                    Some(Inbound::ControlClosed) => {
                        // A closed connection ends the control stream too: say why it closed.
                        match tokio::time::timeout(Duration::from_millis(200), self.link.closed()).await {
                            Ok(reason) => Some(self.closed_reason(&reason)),
                            Err(_) => {
                                self.on_inbound(Inbound::ControlClosed)?;
                                None
                            }
                        }
                    }
                    Some(msg) => {
                        self.on_inbound(msg)?;
                        std::mem::take(&mut self.going_away)
                            .then(|| "the server is draining (going_away)".to_string())
                    }
                },
                _ = sleep_until(next_capture.or(wake)), if next_capture.is_some() || wake.is_some() => {
                    self.session.handle_timeout(Instant::now().into_std());
                    None
                }
                reason = self.link.closed() => Some(self.closed_reason(&reason)),
            };
            if let Some(reason) = lost {
                if !self.may_reconnect(opts) {
                    anyhow::bail!("{reason}");
                }
                self.reconnect(reason, opts).await?;
                // Silence is counted afresh on the new connection.
                self.last_heard = Instant::now();
            }
        }
        if self.progress {
            eprint!("\r\x1b[2K");
        }
        Ok(())
    }

    /// While a turn or its reply is under way (this loop runs only then), a server that says
    /// nothing is pinged; one that stays silent is reported after [`SILENCE_NOTICE`] and given up
    /// after `dead_after`.
    fn check_liveness(
        &mut self,
        now: Instant,
        opts: &CallOptions,
        turn_ended: bool,
    ) -> Option<String> {
        let dead_after = if self.may_reconnect(opts) {
            Some(opts.resume_after)
        } else {
            opts.dead_after
        };
        let silent = now.saturating_duration_since(self.last_heard);
        if silent >= LIVENESS_PING && now.saturating_duration_since(self.last_ping) >= LIVENESS_PING
        {
            self.pings += 1;
            let ping = format!(r#"{{"type":"voq.ping","id":{}}}"#, 1_000_000 + self.pings);
            let mut bytes = Vec::new();
            if voq_proto::wire::encode_event(ping.as_bytes(), &mut bytes).is_ok() {
                if let Some(log) = &mut self.events {
                    log.sent(now.into_std(), &bytes);
                }
                self.streams.apply(Transmit::Control(bytes));
            }
            self.last_ping = now;
        }
        let what = match (turn_ended, self.session.current_response().is_some()) {
            (false, _) => "the user was speaking",
            (true, false) => "waiting for the reply",
            (true, true) => "the reply was playing",
        };
        if silent >= SILENCE_NOTICE && !self.silence_noticed {
            self.silence_noticed = true;
            warn!(
                "the server has not answered for {:.1} s ({what}): it may be down, or the \
                 network is",
                silent.as_secs_f64()
            );
        }
        if let Some(limit) = dead_after
            && silent >= limit
        {
            return Some(format!(
                "the server stopped answering: nothing for {:.1} s while {what} (it crashed, or \
                 the network to it is down)",
                silent.as_secs_f64()
            ));
        }
        None
    }

    /// Why the connection closed, in words.
    fn closed_reason(&self, reason: &str) -> String {
        match &self.last_server_error {
            Some(e) => format!("the server closed the connection ({reason}) after: {e}"),
            None => format!("the server closed the connection: {reason}"),
        }
    }

    /// Whether a lost connection is replaced: the server gave a resume token (or refused one,
    /// once: then a new session carries the unconfirmed turns), the caller allows it, and the
    /// server did not end the call on purpose (an `error` that closes a session:
    /// `unauthorized` other than a refused resume, `limit_exceeded`). Other errors (a failed
    /// response, a bad event) leave the session as resumable as before.
    fn may_reconnect(&self, opts: &CallOptions) -> bool {
        opts.resume_within.is_some()
            && (self.session.can_resume() || self.resume_refused.is_some())
            && (!self.ended_by_server || self.resume_refused.is_some())
    }

    /// Replaces the lost connection: connects again (same address and carrier) until the
    /// session is back or `resume_within` has passed, and hands the new carrier to the session.
    async fn reconnect(&mut self, reason: String, opts: &CallOptions) -> anyhow::Result<()> {
        let lost_at = Instant::now();
        let within = opts.resume_within.unwrap_or_default();
        warn!("{reason}: reconnecting to take the session back");
        self.session.handle_disconnected(lost_at.into_std());
        self.link
            .close(Code::NoError, "connection given up: reconnecting");
        let deadline = lost_at + within;
        let mut attempts = 0u32;
        loop {
            let (client, target) = (self.client, self.target.clone());
            let (link, control) =
                match dial_race(client, &target, opts, deadline, &mut attempts).await {
                    Ok(won) => won,
                    Err(e) => anyhow::bail!(
                        "{reason}; reconnecting failed for {:.1} s ({attempts} attempts): {e:#}",
                        within.as_secs_f64()
                    ),
                };
            let (streams, inbound_rx) = Streams::start(link.clone(), control);
            self.link = link;
            self.streams = streams;
            self.inbound_rx = inbound_rx;
            self.last_server_error = None;
            self.ended_by_server = false;
            self.session_answered = false;
            self.session_resumed = false;
            self.resume_refused = None;
            let resuming = self.session.handle_reconnected(Instant::now().into_std());
            self.drain()?;
            // The session is back when the server answers the first event.
            if let Err(e) = self.await_first_answer(deadline).await {
                debug!("reconnection attempt {attempts} failed: {e:#}");
                self.session.handle_disconnected(Instant::now().into_std());
                self.link.close(Code::NoError, "reconnecting");
                continue;
            }
            if self.resume_refused.is_some() && resuming {
                // Go again at once, for a new session this time (the session forgot its token):
                // the unconfirmed turns go from their start.
                self.session.handle_disconnected(Instant::now().into_std());
                self.link
                    .close(Code::NoError, "resume refused: new session");
                continue;
            }
            let report = crate::report::ResumeReport {
                reason: reason.clone(),
                lost_at_ms: ms(lost_at.saturating_duration_since(self.started)),
                gap_ms: ms(lost_at.elapsed()),
                attempts,
                // Taken back, or (a server that does not resume) a new session.
                resumed: self.session_resumed,
                server_id: self.session.session().and_then(|s| s.voq.server_id.clone()),
            };
            tracing::info!(
                gap_ms = report.gap_ms,
                attempts,
                resumed = self.session_resumed,
                "the call goes on over a new connection"
            );
            self.report.resumes.push(report);
            self.resume_refused = None;
            return Ok(());
        }
    }

    /// Reads the new connection until the session is back (`voq.session.resumed` or
    /// `session.created`) or the server refused it; an error if the connection fails first.
    async fn await_first_answer(&mut self, deadline: Instant) -> anyhow::Result<()> {
        loop {
            if self.resume_refused.is_some() {
                return Ok(());
            }
            if self.session_answered {
                self.session_answered = false;
                return Ok(());
            }
            let msg = tokio::select! {
                msg = self.inbound_rx.recv() => msg,
                _ = tokio::time::sleep_until(deadline) => anyhow::bail!("no answer from the server"),
            };
            match msg {
                None | Some(Inbound::ControlClosed) => {
                    anyhow::bail!("the new connection ended before the session was back")
                }
                Some(msg) => self.on_inbound(msg)?,
            }
        }
    }

    fn on_inbound(&mut self, msg: Inbound) -> anyhow::Result<()> {
        self.last_heard = Instant::now();
        self.silence_noticed = false;
        let now = Instant::now().into_std();
        let Some(msg) = self.streams.track(msg) else {
            return Ok(());
        };
        match msg {
            Inbound::Control(bytes) => {
                if let Some(log) = &mut self.events {
                    log.received(now, &bytes);
                }
                self.session.handle_control(now, &bytes)
            }
            Inbound::ControlClosed => match &self.last_server_error {
                Some(e) => anyhow::bail!("the server closed the control stream after: {e}"),
                None => anyhow::bail!("the server closed the control stream"),
            },
            Inbound::Opened(..) => {}
            Inbound::Data(id, bytes) => self.session.handle_stream_data(now, id, &bytes),
            Inbound::Fin(id) => self.session.handle_stream_fin(now, id),
            Inbound::Reset(id, code) => self.session.handle_stream_reset(now, id, code),
            Inbound::Stopped(stream, code) => self.session.handle_stream_stopped(now, stream, code),
        }
        self.drain()
    }

    fn drain(&mut self) -> anyhow::Result<()> {
        while let Some(out) = self.session.poll_output() {
            match out {
                ClientOutput::Transmit(op) => {
                    if let (Some(log), Transmit::Control(bytes)) = (&mut self.events, &op) {
                        log.sent(Instant::now().into_std(), bytes);
                    }
                    self.streams.apply(op)
                }
                ClientOutput::ReplyFrame {
                    response_id,
                    codec,
                    pts,
                    payload,
                } => {
                    let decoder = match self.decoders.entry(response_id.clone()) {
                        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                        std::collections::hash_map::Entry::Vacant(e) => {
                            e.insert(voq_audio::Decoder::new(codec)?)
                        }
                    };
                    let mut pcm = Vec::new();
                    if let Err(e) = decoder.decode(&payload, &mut pcm) {
                        warn!("undecodable reply frame: {e}");
                        decoder.conceal(&mut pcm)?;
                    }
                    // Place by timestamp: what the agent said, independent of playback. The
                    // same bounds as the playout: a server's timestamps cannot make this copy
                    // allocate hours of silence.
                    let at = self.received_base + pts as usize;
                    let gap = at.saturating_sub(self.received.len());
                    let rate = voq_audio::SAMPLE_RATE as usize;
                    let max_gap = voq_proto::playout::MAX_GAP_MS as usize * rate / 1000;
                    if gap <= max_gap && at + pcm.len() <= MAX_RECEIVED_S * rate {
                        if self.received.len() < at + pcm.len() {
                            self.received.resize(at + pcm.len(), 0);
                        }
                        self.received[at..at + pcm.len()].copy_from_slice(&pcm);
                    } else {
                        warn!(pts, "reply frame far beyond the audio so far: not kept");
                    }
                    self.session.push_reply_audio(&response_id, pts, &pcm);
                }
                ClientOutput::Event(voq_proto::event::ServerEvent::Error { error })
                    if error.error_code() == Some(voq_proto::ErrorCode::GoingAway)
                        && self.session.can_resume() =>
                {
                    // The server is draining: take the session to another server now rather
                    // than finish on this one (the reply goes on from where it is).
                    tracing::info!("the server is draining: moving the session");
                    self.going_away = true;
                }
                ClientOutput::Event(voq_proto::event::ServerEvent::Error { error }) => {
                    warn!("server error {}: {}", error.code, error.message);
                    self.last_server_error = Some(format!("{}: {}", error.code, error.message));
                    self.ended_by_server |= matches!(
                        error.error_code(),
                        Some(
                            voq_proto::ErrorCode::Unauthorized
                                | voq_proto::ErrorCode::LimitExceeded
                        )
                    );
                }
                ClientOutput::Event(
                    e @ (voq_proto::event::ServerEvent::VoqSessionResumed { .. }
                    | voq_proto::event::ServerEvent::SessionCreated { .. }),
                ) => {
                    debug!(kind = e.kind(), "server event");
                    self.session_answered = true;
                    self.session_resumed |=
                        matches!(e, voq_proto::event::ServerEvent::VoqSessionResumed { .. });
                }
                ClientOutput::Event(e) => debug!(kind = e.kind(), "server event"),
                ClientOutput::ResumeRefused { message } => {
                    warn!(
                        "the server did not take the session back ({message}): starting a new one"
                    );
                    self.resume_refused = Some(message);
                }
                ClientOutput::TurnStopped { item_id, code } => {
                    // The server refused the turn: no reply will come, so waiting is pointless.
                    let name = Code::from_u32(code).map_or("an unknown code", |c| c.as_str());
                    anyhow::bail!("the server refused turn {item_id} ({name}, code {code})");
                }
                ClientOutput::Problem(p) => warn!("{p}"),
            }
        }
        Ok(())
    }

    fn show_progress(&self, turn: usize, total: usize, sent: usize) {
        if !self.progress {
            return;
        }
        let secs = |n: usize| n as f64 / SAMPLE_RATE as f64;
        let reply = self.session.current_response();
        eprint!(
            "\r\x1b[2Kturn {}: sent {:.1}/{:.1} s | reply played {:.1} s, buffered {:.1} s",
            turn + 1,
            secs(sent.min(total)),
            secs(total),
            reply.map_or(0.0, |r| r.played_ms as f64 / 1000.0),
            self.session.buffered_ms() as f64 / 1000.0,
        );
    }

    fn finish(mut self) -> CallOutcome {
        let rtt = self.link.rtt();
        let r = &mut self.report;
        r.rtt_ms = ms(rtt);
        r.setup_rtts = if rtt.is_zero() {
            0.0
        } else {
            r.setup_ms / r.rtt_ms
        };
        r.setup = crate::report::SetupReport {
            zero_rtt: r.zero_rtt,
            first_prompt_byte_rtts: if r.zero_rtt { 0.0 } else { r.setup_rtts },
            zero_rtt_rejected: false,
        };
        r.server_id = self.session.session().and_then(|s| s.voq.server_id.clone());
        r.server_address = self.link.remote_address().to_string();
        if let Some(conn) = self.link.quic_connection() {
            let preferred = conn.stats().preferred_address;
            r.preferred_address_used = preferred.migrated;
            r.preferred_address_failed = preferred.failed;
            if preferred.failed {
                tracing::warn!(
                    server = %r.server,
                    challenges = preferred.challenges_sent,
                    "the server's preferred address did not answer: the call stayed on the \
                     address it dialled"
                );
            }
            r.migrations += u32::from(preferred.migrated);
        }
        let turns = self.session.turns().to_vec();
        let responses: Vec<_> = self.session.responses().cloned().collect();
        let mut prompt = PromptReport::default();
        for t in &turns {
            prompt.frames_sent += t.frames_sent;
            prompt.frames_confirmed += t.frames_confirmed.unwrap_or(0);
            prompt.audio_ms_sent += t.audio_ms_sent;
            prompt.audio_ms_confirmed += t.audio_ms_confirmed.unwrap_or(0);
            prompt.bytes_sent += t.bytes_sent;
            prompt.bytes_confirmed += t.bytes_confirmed.unwrap_or(0);
            prompt.items_committed += u64::from(t.frames_confirmed.is_some());
        }
        let last_turn = turns.last();
        prompt.confirm_ms = last_turn
            .and_then(|t| Some(ms(t.confirmed_at?.saturating_duration_since(t.ended_at?))));
        r.prompt = prompt;
        let last = responses.last();
        let mut reply = ReplyReport {
            received_ms: self.received.len() as u64 * 1000 / SAMPLE_RATE as u64,
            ..Default::default()
        };
        for resp in &responses {
            reply.duration_ms += resp.played_ms;
            reply.underruns += resp.underruns;
            reply.stall_ms += resp.stall_ms;
            reply.bytes_received += resp.bytes_received;
        }
        if let (Some(t), Some(resp)) = (last_turn, last) {
            reply.first_audio_ms = t
                .ended_at
                .and_then(|end| Some(ms(resp.first_audio_at?.saturating_duration_since(end))));
            reply.status = resp.status;
        }
        r.reply = reply;
        r.interrupt = responses
            .iter()
            .find_map(|resp| resp.interrupt.clone())
            .map(|i| {
                let at = i.at;
                let since =
                    |t: Option<std::time::Instant>| Some(ms(t?.saturating_duration_since(at?)));
                let confirm = since(i.truncated_at);
                InterruptReport {
                    silence_ms: since(i.silenced_at),
                    played_ms: i.played_ms,
                    truncated_audio_end_ms: i.truncated_audio_end_ms,
                    unplayed_bytes: i.unplayed_bytes,
                    confirm_ms: confirm,
                    server_stop_ms: confirm.map(|c| (c - ms(rtt) / 2.0).max(0.0)),
                }
            });
        r.turns = turns
            .iter()
            .zip(responses.iter().map(Some).chain(std::iter::repeat(None)))
            .map(|(t, resp)| TurnReport {
                item_id: t.item_id.clone(),
                frames_sent: t.frames_sent,
                frames_confirmed: t.frames_confirmed,
                reply_played_ms: resp.map_or(0, |r| r.played_ms),
                reply_status: resp.and_then(|r| r.status),
            })
            .collect();
        let events = match self.events {
            Some(log) => {
                if log.dropped() > 0 {
                    warn!(
                        dropped = log.dropped(),
                        "the event log kept only the first {} events",
                        crate::events::MAX_LOGGED_EVENTS
                    );
                }
                log.into_events()
            }
            None => Vec::new(),
        };
        CallOutcome {
            report: self.report,
            reply_received: self.received,
            reply_played: self.played,
            started: None,
            turns,
            responses,
            events,
        }
    }
}

/// Connects again, as a staggered race: a new attempt every [`DIAL_STAGGER`] while none has
/// won (at most [`DIAL_RACE`] in flight, each with its own connection ID, so a balancer may
/// hash it to another server), failed attempts retried with backoff; the first whose control
/// stream opens wins. A server that drops new connections (crashed, still counted up by a
/// balancer) costs a stagger, not a handshake timeout.
async fn dial_race(
    client: &Client,
    target: &Target,
    opts: &CallOptions,
    deadline: Instant,
    attempts: &mut u32,
) -> anyhow::Result<(
    Link,
    (
        voq_transport::carrier::SendHalf,
        voq_transport::carrier::RecvHalf,
    ),
)> {
    use futures_util::StreamExt;
    let mut racing = futures_util::stream::FuturesUnordered::new();
    let mut next_start = Instant::now();
    let mut backoff = Duration::from_millis(50);
    let mut last_error = anyhow::anyhow!("no attempt finished");
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(last_error);
        }
        if racing.len() < DIAL_RACE && now >= next_start {
            *attempts += 1;
            let connect = client.connect_with(target, opts.transport, opts.token.as_ref(), false);
            racing.push(async move {
                let attempt = async {
                    let (link, _) = connect.await?;
                    let control = link
                        .open_bi()
                        .await
                        .context("cannot open the control stream")?;
                    anyhow::Ok((link, control))
                };
                tokio::time::timeout(DIAL_TIMEOUT, attempt)
                    .await
                    .unwrap_or_else(|_| {
                        Err(anyhow::anyhow!("no handshake within {DIAL_TIMEOUT:?}"))
                    })
            });
            next_start = now + DIAL_STAGGER;
        }
        tokio::select! {
            Some(result) = racing.next() => match result {
                Ok(won) => return Ok(won),
                Err(e) => {
                    debug!("reconnection attempt failed: {e:#}");
                    last_error = e;
                    // Try again soon, not at once: a refusing server must not be hammered.
                    next_start = next_start.min(Instant::now() + backoff);
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                }
            },
            _ = tokio::time::sleep_until(next_start.min(deadline)) => {}
        }
    }
}

/// The encoder of the call's codec, made by `make` (`voq_audio::Encoder::new`). Never another
/// codec's: the stream header names `codec`, and pcm16 bytes labelled opus would reach the agent
/// as noise. A failure is the call's error.
fn call_encoder<E: std::fmt::Display>(
    codec: Codec,
    make: impl FnOnce(Codec) -> Result<voq_audio::Encoder, E>,
) -> anyhow::Result<voq_audio::Encoder> {
    let encoder =
        make(codec).map_err(|e| anyhow::anyhow!("cannot create the {codec} encoder: {e}"))?;
    anyhow::ensure!(
        encoder.codec() == codec,
        "asked for a {codec} encoder, got {}",
        encoder.codec()
    );
    Ok(encoder)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_fails_when_its_encoder_cannot_be_made_rather_than_falling_back() {
        let err = call_encoder(Codec::Opus, |_| Err("libopus refused"))
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert!(
            err.contains("opus encoder") && err.contains("libopus refused"),
            "{err}"
        );
        let swapped = call_encoder(Codec::Opus, |_| {
            voq_audio::Encoder::new(Codec::Pcm16).map_err(|e| e.to_string())
        });
        assert!(
            swapped.is_err(),
            "a pcm16 encoder is never used for an opus stream"
        );
        let opus = call_encoder(Codec::Opus, voq_audio::Encoder::new);
        assert_eq!(opus.map(|e| e.codec()).ok(), Some(Codec::Opus));
    }

    #[test]
    fn urls_parse_to_address_and_server_name() -> anyhow::Result<()> {
        let t = Target::parse("https://127.0.0.1:4443")?;
        assert_eq!(
            (t.addr, t.server_name.as_str()),
            ("127.0.0.1:4443".parse()?, "127.0.0.1")
        );
        let t = Target::parse("https://[::1]:4443/voq")?;
        assert_eq!(
            (t.addr, t.server_name.as_str()),
            ("[::1]:4443".parse()?, "::1")
        );
        let t = Target::parse("https://[::1]")?;
        assert_eq!(t.addr, "[::1]:443".parse()?);
        let t = Target::parse("https://localhost:9")?;
        assert!(t.addr.ip().is_loopback() && t.addr.port() == 9 && t.server_name == "localhost");
        assert_eq!(Target::parse("https://localhost")?.addr.port(), 443);
        let t = Target::parse("http://127.0.0.1:8080")?;
        assert!(
            !t.tls && t.addr.port() == 8080,
            "http:// is WebSocket without TLS"
        );
        assert_eq!(Target::parse("http://localhost")?.addr.port(), 80);
        assert!(Target::parse("https://localhost")?.tls);
        for bad in ["ftp://127.0.0.1:1", "https://", "127.0.0.1:1"] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
        Ok(())
    }
}
