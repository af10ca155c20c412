//! The async shell around [`voq_proto::server::ServerSession`] for one connection of any carrier
//! (QUIC, WebTransport or WebSocket, behind [`voq_transport::Link`]): stream
//! readers and writers, codecs, server VAD, the agent task, and recording. All protocol decisions
//! are in the sans-IO core; this file moves bytes and runs tasks.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{Instrument, debug, info, warn};
use voq_proto::server::{ServerConfig, ServerOutput, ServerSession};
use voq_proto::{Blame, Code, Codec, ErrorCode, Problem};
use voq_transport::carrier::{RecvHalf, SendHalf};
use voq_transport::{Inbound, Link, Streams, sleep_until};

use crate::agent::{Agent, AgentMsg, ReplySink, Turn};
use crate::record::Recorder;
use crate::stats::{SessionEvent, SessionEventKind, Stats};

/// On the clock, a snapshot is taken at most this often per MiB the last one weighed (see
/// `Shell::save_snapshot_when_due`); the clock ticks every [`RTT_INTERVAL`].
const SNAPSHOT_GAP_PER_MIB: Duration = Duration::from_secs(1);
/// How often the RTT estimate is fed to the pacer.
const RTT_INTERVAL: Duration = Duration::from_millis(100);
/// A session whose client opens no control stream within this time is closed.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);
/// Committed turns whose audio is kept for a response that has not started.
const MAX_COMMITTED_KEPT: usize = 4;
/// With authentication on, the first event (which carries the token) must arrive within this
/// time of the control stream's opening.
const AUTH_TIMEOUT: Duration = Duration::from_secs(10);

/// How a session's client proves who it is.
pub(crate) enum Credential {
    /// Authentication is off.
    Open,
    /// The carrier carried a token and it was admitted before the session started (the
    /// WebSocket upgrade, the WebTransport CONNECT).
    Admitted(crate::auth::Grant, crate::auth::Admission),
    /// The token comes in the session's first control event (`session.update`, `voq.token`).
    FirstEvent,
}

/// Per-stream user audio as the shell holds it: decoder and decoded samples not yet committed.
struct TurnAudio {
    decoder: voq_audio::Decoder,
    pcm: Vec<i16>,
    /// Sample position (pts) of `pcm[0]`: committed audio is drained from the front.
    base: u64,
    /// When the latest frame arrived, and the longest wait between two frames so far: how long
    /// the prompt's flow was interrupted (a network change, an outage).
    last_frame_at: Instant,
    max_frame_gap: Duration,
    /// When the turn's first frame arrived (wall clock too, for a recording's sidecar).
    first_frame_at: Instant,
    first_frame_unix_ms: u64,
}

/// Per-response state of the shell: the agent task and the encoder.
struct ActiveResponse {
    id: String,
    task: JoinHandle<()>,
    encoder: voq_audio::Encoder,
    /// Samples not yet making a whole frame.
    pending: Vec<i16>,
    /// Everything the agent generated (for recordings).
    generated: Vec<i16>,
}

/// Everything a session needs from its server.
#[derive(Clone)]
pub(crate) struct SessionContext {
    pub agent_factory: Arc<dyn crate::agent::AgentFactory>,
    pub proto: ServerConfig,
    pub recorder: Option<Recorder>,
    pub stats: Arc<Stats>,
    /// The observation hook ([`crate::Server::events`]).
    pub events: broadcast::Sender<SessionEvent>,
    pub shutdown: watch::Receiver<bool>,
    /// Which web pages may open sessions (WebSocket upgrades, WebTransport CONNECTs).
    pub origins: Arc<crate::origin::OriginPolicy>,
    /// Token verification; `None` when authentication is off.
    pub auth: Option<Arc<crate::auth::Authenticator>>,
    /// The agent spec (`echo`, …), which a token's `voq.agent` must name.
    pub agent_name: Arc<str>,
    /// The longest any call may last (a token may allow less).
    pub max_call_duration: Option<Duration>,
    /// Per-source-prefix caps (`None`: off).
    pub prefixes: Option<Arc<crate::prefix::PrefixLimits>>,
    /// Opus encoder settings of agent audio.
    pub opus: voq_audio::OpusConfig,
    /// Refusals (bad tokens) are logged within this budget, server-wide: a flood of them must
    /// not flood the log.
    pub refusal_log: Arc<std::sync::Mutex<LogBudget>>,
    /// The carrier name reported to the client when it is not the link's own (`realtime`: the
    /// Realtime endpoint's sessions run over an in-process WebSocket link).
    pub carrier_name: Option<&'static str>,
    /// Resumable sessions (`None`: a session ends with its connection).
    pub resumption: Option<Arc<crate::resume::Resumption>>,
}

impl SessionContext {
    /// Takes a session place for `remote`'s network; `Err` (counted) when it holds its cap.
    pub(crate) fn take_prefix_session(
        &self,
        remote: std::net::IpAddr,
    ) -> Result<Option<crate::prefix::PrefixSession>, ()> {
        use crate::prefix::Verdict;
        use crate::stats::Limit;
        let Some(prefixes) = &self.prefixes else {
            return Ok(None);
        };
        match prefixes.take_session(remote, std::time::Instant::now()) {
            Ok(place) => Ok(place),
            Err(Verdict::TableFull) => {
                self.stats.limits_exceeded.get(Limit::PrefixTable).inc();
                Ok(None)
            }
            Err(_) => {
                self.stats.limits_exceeded.get(Limit::PrefixSessions).inc();
                Err(())
            }
        }
    }

    /// Publishes an observation, stamped now. Nobody listening is the normal case.
    fn observe(&self, kind: SessionEventKind) {
        if self.events.receiver_count() > 0 {
            let _ = self.events.send(SessionEvent {
                session_id: self.proto.session_id.clone(),
                kind,
                at: std::time::Instant::now(),
            });
        }
    }
}

/// Runs one session to its end. Never panics on client input; every error is logged and, where
/// the client can act on it, reported to it.
pub(crate) async fn run(link: Link, mut ctx: SessionContext, credential: Credential) {
    let remote = link.remote_address();
    let carrier = link.carrier();
    ctx.proto.transport = ctx.carrier_name.unwrap_or(carrier.as_str()).into();
    if ctx.resumption.is_some() {
        // A shared store holds every server's sessions: their ids must be unique in the
        // fleet, not only in this process (`sess_N` of two servers would overwrite each other).
        ctx.proto.session_id = fleet_unique_session_id();
    }
    let session_id = ctx.proto.session_id.clone();
    // `instrument`, never `span.enter()` across an await: an entered guard stays on the worker
    // thread while this task is parked, and other sessions' lines would carry this id.
    let carrier = &ctx.proto.transport;
    let span = tracing::info_span!("session", id = %session_id, %remote, %carrier);
    run_session(link, ctx, credential).instrument(span).await
}

async fn run_session(link: Link, mut ctx: SessionContext, credential: Credential) {
    let connected_at = Instant::now();
    let carrier = link.carrier();
    ctx.stats.sessions_started.get(carrier).inc();
    // Every start has its end, however the session ends (the active gauge is their difference).
    let _ended = CountEnd(ctx.stats.clone());
    let control = match tokio::time::timeout(CONTROL_TIMEOUT, link.accept_bi()).await {
        Ok(Ok(streams)) => streams,
        Ok(Err(e)) => {
            debug!("closed before opening a control stream: {e}");
            return;
        }
        Err(_) => {
            link.close(Code::ProtocolViolation, "no control stream");
            return;
        }
    };
    let mut control = control;
    ctx.proto.resumable = ctx.resumption.is_some();
    // The first event is read before the session starts when it may carry a token or a resume
    // request. Nothing of the session runs before its token is verified: with the token in the
    // first event, the streams the client opened meanwhile wait in the carrier (bounded by QUIC
    // flow control), unread, and are dropped with the connection if the token is refused.
    let reads_first = ctx.resumption.is_some() || matches!(credential, Credential::FirstEvent);
    let (first_event, first_bytes) = if reads_first {
        match read_first_event(&mut control).await {
            Some(first) => first,
            None => return,
        }
    } else {
        (None, Vec::new())
    };
    let resume_request = first_event.as_deref().and_then(resume_request_of);
    // A resume token stands for the session token: it names a session that was admitted.
    let resumed = match (ctx.resumption.clone(), resume_request) {
        (Some(resumption), Some(request)) => {
            match resume(&link, &mut control, &ctx, &resumption, request).await {
                Some(resumed) => Some(resumed),
                None => return,
            }
        }
        _ => None,
    };
    let grant = match (&resumed, credential) {
        (Some(_), _) | (None, Credential::Open) => None,
        (None, Credential::Admitted(grant, admission)) => Some((grant, admission)),
        (None, Credential::FirstEvent) => {
            let token = first_event.as_deref().and_then(token_of);
            let Some(auth) = ctx.auth.clone() else { return };
            match auth.admit(
                token.as_deref(),
                &ctx.agent_name,
                std::time::SystemTime::now(),
            ) {
                Ok(admitted) => Some(admitted),
                Err(refused) => {
                    refuse(&link, &mut control.0, &ctx, &refused).await;
                    return;
                }
            }
        }
    };
    let (grant, _admission) = grant.unzip();
    if let Some(grant) = &grant {
        info!(subject = %grant.subject, kid = ?grant.kid, "session authenticated");
    }
    if let (Some(resumption), None) = (&ctx.resumption, &resumed) {
        ctx.proto.resume_token = Some(resumption.token(&ctx.proto.session_id, 0));
    }
    // The agent's session only now: an unauthenticated client never makes one.
    let agent = match ctx.agent_factory.session() {
        Ok(a) => a,
        Err(e) => {
            warn!("agent could not start: {e:#}");
            link.close(Code::AgentFailed, "agent could not start");
            return;
        }
    };
    let limit = [
        ctx.max_call_duration,
        grant.as_ref().and_then(|g| g.max_duration),
    ]
    .into_iter()
    .flatten()
    .min();
    let (core, generation) = match resumed {
        Some((core, generation)) => {
            info!(session = %core.config().session_id, generation, "session resumed");
            // The session's own id from here on (recordings, observations), not the
            // connection's.
            ctx.proto.session_id = core.config().session_id.clone();
            (core, generation)
        }
        None => (
            ServerSession::new(ctx.proto.clone(), Instant::now().into_std()),
            0,
        ),
    };
    let mut shell = Shell::new(link, agent, core, control, connected_at);
    shell.generation = generation;
    // The first event goes on to a new session (a resume request's was answered already).
    if generation == 0 && !first_bytes.is_empty() {
        shell.on_inbound(Inbound::Control(first_bytes));
    }
    shell.call_deadline = limit.map(|d| Instant::now() + d);
    shell.run(&mut ctx).await;
    info!("session ended");
}

/// Reads the session's first control event (within [`AUTH_TIMEOUT`]): its body, if one came
/// whole, and every byte read (which go on to the session). `None` if the client closed first.
async fn read_first_event(
    control: &mut (SendHalf, RecvHalf),
) -> Option<(Option<Vec<u8>>, Vec<u8>)> {
    use voq_proto::wire::{DecodedEvent, EventDecoder};
    use voq_transport::carrier::Read;
    let mut decoder = EventDecoder::default();
    let mut read = Vec::new();
    let first = tokio::time::timeout(AUTH_TIMEOUT, async {
        loop {
            if let Some(decoded) = decoder.poll_event() {
                return Some(decoded);
            }
            match control.1.read().await {
                Read::Data(bytes) => {
                    decoder.push(&bytes);
                    read.extend_from_slice(&bytes);
                }
                Read::Fin | Read::Reset(_) | Read::Lost => return None,
            }
        }
    })
    .await;
    match first {
        Ok(Some(DecodedEvent::Event(body))) => Some((Some(body), read)),
        Ok(Some(DecodedEvent::Skipped(_))) | Err(_) => Some((None, read)),
        Ok(None) => {
            debug!("closed before its first event");
            None
        }
    }
}

/// `sess_` and 96 random bits in hex: unique across a fleet's servers.
fn fleet_unique_session_id() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 12];
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        // No randomness: the process-wide counter is still unique here, at least.
        return crate::next_session_id();
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("sess_{hex}")
}

/// `session.voq.resume` of a `session.update` event, if that is what `body` is.
fn resume_request_of(body: &[u8]) -> Option<voq_proto::event::ResumeRequest> {
    let event: serde_json::Value = serde_json::from_slice(body).ok()?;
    if event.get("type")?.as_str()? != "session.update" {
        return None;
    }
    serde_json::from_value(event.pointer("/session/voq/resume")?.clone()).ok()
}

/// Takes a session back for `request`: the core (its first outputs the held audio and
/// `voq.session.resumed`) and the generation it now holds. On refusal, tells the client (an
/// `error` event with `unauthorized`, then the close) and returns `None`.
async fn resume(
    link: &Link,
    control: &mut (SendHalf, RecvHalf),
    ctx: &SessionContext,
    resumption: &crate::resume::Resumption,
    request: voq_proto::event::ResumeRequest,
) -> Option<(ServerSession, u64)> {
    use crate::resume::ResumeError;
    use crate::stats::ResumeResult;
    ctx.stats.resumes.get(ResumeResult::Attempted).inc();
    let started = std::time::Instant::now();
    let claimed = resumption.claim(request.token.as_str()).await;
    ctx.stats
        .store_latency_us
        .add(started.elapsed().as_micros() as u64);
    ctx.stats.store_requests.inc();
    let result = claimed.and_then(|(generation, bytes)| {
        let snapshot = voq_proto::resume::SessionSnapshot::from_bytes(&bytes)
            .map_err(ResumeError::Snapshot)?;
        let mut config = ctx.proto.clone();
        config.resume_token = Some(resumption.token(&snapshot.session_id, generation));
        config.resumable = true;
        let now = Instant::now().into_std();
        let core = ServerSession::resume(config, snapshot, request.reply, now)
            .map_err(ResumeError::Snapshot)?;
        Ok((core, generation))
    });
    match result {
        Ok(resumed) => {
            ctx.stats.resumes.get(ResumeResult::Succeeded).inc();
            ctx.stats
                .resumed_audio_frames
                .add(resumed.0.resumed_frames());
            Some(resumed)
        }
        Err(e) => {
            let kind = match &e {
                ResumeError::Store(_) => ResumeResult::StoreFailed,
                _ => ResumeResult::Refused,
            };
            ctx.stats.resumes.get(kind).inc();
            info!("resume refused: {e}");
            let message = e.to_string();
            let event = voq_proto::event::ServerEvent::error(ErrorCode::Unauthorized, &message);
            let mut bytes = Vec::new();
            let body = voq_proto::event::to_json_with_id(&event, "event_1");
            if voq_proto::wire::encode_event(&body, &mut bytes).is_ok() {
                // The event first, whole, then the close: a client that sees a refusal (not just
                // a closed connection) starts a new session instead of trying the token again.
                let delivered = async {
                    let _ = control.0.write_all(&bytes).await;
                    control.0.finish();
                    control.0.stopped().await
                };
                let _ = tokio::time::timeout(Duration::from_secs(1), delivered).await;
            }
            link.close(Code::Unauthorized, &message);
            None
        }
    }
}

/// `session.voq.token` of a `session.update` event, if that is what `body` is.
fn token_of(body: &[u8]) -> Option<String> {
    let event: serde_json::Value = serde_json::from_slice(body).ok()?;
    if event.get("type")?.as_str()? != "session.update" {
        return None;
    }
    Some(event.pointer("/session/voq/token")?.as_str()?.to_string())
}

/// Refuses a session: an `error` event on the control stream and the close code and reason
/// (which carry the same words, in case the close overtakes the event).
pub(crate) async fn refuse(
    link: &Link,
    control: &mut SendHalf,
    ctx: &SessionContext,
    refused: &crate::auth::AuthError,
) {
    log_refusal(ctx, refused);
    let code = refused.code();
    let message = refused.to_string();
    if let Some(error_code) = code.error_code() {
        let event = voq_proto::event::ServerEvent::error(error_code, message.clone());
        let mut bytes = Vec::new();
        // The session's first and only event.
        let body = voq_proto::event::to_json_with_id(&event, "event_1");
        if voq_proto::wire::encode_event(&body, &mut bytes).is_ok() {
            // Not finished: a client that reads the event then sees the close, with its code.
            let _ = tokio::time::timeout(Duration::from_secs(1), control.write_all(&bytes)).await;
        }
    }
    link.close(code, &message);
}

/// Logs a refused session within the server-wide budget.
pub(crate) fn log_refusal(ctx: &SessionContext, refused: &crate::auth::AuthError) {
    let line = ctx
        .refusal_log
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take(std::time::Instant::now());
    if let LogLine::Write { suppressed } = line {
        if suppressed > 0 {
            info!(
                suppressed,
                "session refused: {refused} ({suppressed} more refusals not logged)"
            );
        } else {
            info!("session refused: {refused}");
        }
    }
}

/// Counts a session as ended when dropped.
struct CountEnd(Arc<Stats>);

impl Drop for CountEnd {
    fn drop(&mut self) {
        self.0.sessions_ended.inc();
    }
}

struct Shell {
    link: Link,
    core: ServerSession,
    agent: Arc<dyn Agent>,
    streams: Streams,
    inbound_rx: mpsc::UnboundedReceiver<Inbound>,
    agent_tx: mpsc::Sender<AgentMsg>,
    agent_rx: mpsc::Receiver<AgentMsg>,
    turns: HashMap<String, TurnAudio>,
    /// Committed turns' audio not yet given to a response, oldest first (bounded).
    committed: std::collections::VecDeque<(String, Vec<i16>)>,
    response: Option<ActiveResponse>,
    vad: Option<voq_audio::Vad>,
    /// How many problems this session may still log in the current window.
    log_budget: LogBudget,
    /// When the call must end (the server's or the token's maximum duration).
    call_deadline: Option<Instant>,
    /// When the connection was up (the handshake done), and whether a turn's first audio has
    /// been counted yet: setup as the server sees it.
    connected_at: Instant,
    first_audio_counted: bool,
    /// The store generation this session holds (0 when new; one more at each resume).
    generation: u64,
    /// Snapshots for the saver task, and the core revision last handed over.
    saver: Option<watch::Sender<Option<Arc<Vec<u8>>>>>,
    saved_revision: u64,
    /// When a snapshot was last handed over, and how often one must be even without a change:
    /// a save renews the record's expiry, so an idle session stays resumable.
    saved_at: Instant,
    refresh_every: Duration,
    /// The size of the last snapshot taken, which paces the next ([`Shell::save_snapshot_when_due`]).
    saved_len: usize,
    /// Fires when the store says the session was taken back on another connection.
    claimed_elsewhere: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl Shell {
    fn new(
        link: Link,
        agent: Arc<dyn Agent>,
        core: ServerSession,
        control: (SendHalf, RecvHalf),
        connected_at: Instant,
    ) -> Self {
        let (agent_tx, agent_rx) = mpsc::channel(16);
        let (streams, inbound_rx) = Streams::start(link.clone(), control);
        Self {
            link,
            core,
            agent,
            streams,
            inbound_rx,
            agent_tx,
            agent_rx,
            turns: HashMap::new(),
            committed: std::collections::VecDeque::new(),
            response: None,
            vad: None,
            log_budget: LogBudget::default(),
            call_deadline: None,
            connected_at,
            first_audio_counted: false,
            generation: 0,
            saver: None,
            saved_revision: u64::MAX,
            saved_at: Instant::now(),
            refresh_every: Duration::MAX,
            saved_len: 0,
            claimed_elsewhere: None,
        }
    }

    /// Starts the task that writes this session's snapshots to the store (the latest one
    /// whenever the store is ready: a slow store costs freshness, never the call).
    fn start_saver(&mut self, ctx: &SessionContext) {
        let Some(resumption) = ctx.resumption.clone() else {
            return;
        };
        self.refresh_every = resumption.window / 3;
        let (tx, mut rx) = watch::channel::<Option<Arc<Vec<u8>>>>(None);
        let (claimed_tx, claimed_rx) = tokio::sync::oneshot::channel();
        let stats = ctx.stats.clone();
        let session_id = self.core.config().session_id.clone();
        let generation = self.generation;
        tokio::spawn(
            async move {
                let mut failures_logged = 0u32;
                while rx.changed().await.is_ok() {
                    let Some(bytes) = rx.borrow_and_update().clone() else {
                        continue;
                    };
                    let started = std::time::Instant::now();
                    let saved = resumption
                        .store
                        .save(&session_id, generation, &bytes, resumption.window)
                        .await;
                    stats.store_requests.inc();
                    stats
                        .store_latency_us
                        .add(started.elapsed().as_micros() as u64);
                    match saved {
                        Ok(true) => stats.snapshot_bytes.add(bytes.len() as u64),
                        Ok(false) => {
                            info!("the session was resumed on another connection");
                            let _ = claimed_tx.send(());
                            return;
                        }
                        Err(e) => {
                            stats.store_failures.inc();
                            if failures_logged < 3 {
                                failures_logged += 1;
                                warn!("cannot save the session's snapshot: {e:#}");
                            }
                        }
                    }
                }
            }
            .in_current_span(),
        );
        self.saver = Some(tx);
        self.claimed_elsewhere = Some(claimed_rx);
    }

    /// Hands the saver the session's snapshot if it changed since the last one.
    fn save_snapshot(&mut self) {
        let unchanged = self.core.revision() == self.saved_revision;
        if !unchanged || self.saved_at.elapsed() >= self.refresh_every {
            self.save_snapshot_anyway();
        }
    }

    /// [`Shell::save_snapshot`] on the clock: a big snapshot less often. Encoding one costs
    /// about 2.5 µs per KiB (an open turn of 20 s: 2.5 ms; docs/BENCHMARKS.md, "Snapshot
    /// cost"), so one is taken at most every `SNAPSHOT_GAP_PER_MIB` per MiB it weighed last
    /// time (at least every 100 ms): a bounded share of a core per session. What a later
    /// snapshot would have held of an open turn the client sends again on a resume.
    fn save_snapshot_when_due(&mut self) {
        let gap = SNAPSHOT_GAP_PER_MIB.mul_f64(self.saved_len as f64 / (1 << 20) as f64);
        if self.saved_at.elapsed() >= gap {
            self.save_snapshot();
        }
    }

    fn save_snapshot_anyway(&mut self) {
        let Some(saver) = &self.saver else { return };
        if self.core.is_closed() {
            return;
        }
        self.saved_revision = self.core.revision();
        self.saved_at = Instant::now();
        let bytes = self.core.snapshot().to_bytes();
        self.saved_len = bytes.len();
        if bytes.len() > crate::resume::MAX_SNAPSHOT_BYTES {
            debug!(
                bytes = bytes.len(),
                "snapshot over the store's bound: not saved"
            );
            return;
        }
        let _ = saver.send(Some(Arc::new(bytes)));
    }

    async fn run(&mut self, ctx: &mut SessionContext) {
        let mut rtt_tick = tokio::time::interval(RTT_INTERVAL);
        let mut draining = false;
        self.start_saver(ctx);
        let mut claimed = self.claimed_elsewhere.take();
        loop {
            self.drain(ctx);
            if self.core.is_closed() {
                break;
            }
            let wake = self.core.poll_timeout().map(Instant::from_std);
            let wants_audio = self.core.wants_agent_audio();
            tokio::select! {
                msg = self.inbound_rx.recv() => {
                    let Some(msg) = msg else { break };
                    self.on_inbound(msg);
                }
                msg = self.agent_rx.recv(), if wants_audio => {
                    if let Some(msg) = msg {
                        let done = matches!(msg, AgentMsg::Done { .. });
                        self.on_agent(msg);
                        if done {
                            // The whole reply is known now: what a resume can replay in full.
                            self.save_snapshot();
                        }
                    }
                }
                _ = sleep_until(wake), if wake.is_some() => {
                    self.core.handle_timeout(Instant::now().into_std());
                }
                _ = rtt_tick.tick() => {
                    self.core.handle_rtt(self.link.rtt());
                    self.save_snapshot_when_due();
                }
                _ = async { claimed.as_mut()?.await.ok() }, if claimed.is_some() => {
                    // Another connection holds the session now: this one is stale.
                    self.link.close(Code::GoingAway, "the session was resumed on another connection");
                    break;
                }
                _ = sleep_until(self.call_deadline), if self.call_deadline.is_some() => {
                    self.call_deadline = None;
                    info!("the call reached its maximum duration");
                    ctx.stats.limits_exceeded.get(crate::stats::Limit::CallDuration).inc();
                    self.core.handle_limit_exceeded(
                        Instant::now().into_std(),
                        "the call reached its maximum duration",
                    );
                }
                _ = ctx.shutdown.changed(), if !draining => {
                    // Graceful shutdown: the current response and open turns finish, new turns
                    // are refused; the client closes when it is done (or the server's drain
                    // timeout closes the connection).
                    draining = true;
                    self.core.handle_going_away(Instant::now().into_std());
                    info!("draining: refusing new turns, waiting for the client to finish");
                }
                reason = self.link.closed() => {
                    debug!("connection closed: {reason}");
                    // What the session held when the connection went: what a resume gets.
                    self.save_snapshot();
                    self.core.handle_control_closed(Instant::now().into_std());
                    self.drain(ctx);
                    break;
                }
            }
        }
        if let Some(r) = self.response.take() {
            r.task.abort();
        }
        match self.core.closed_with() {
            Some((code, reason)) => self.link.close(code, reason),
            None => {
                let code = if draining {
                    Code::GoingAway
                } else {
                    Code::NoError
                };
                self.link.close(code, code.as_str());
            }
        }
    }

    fn on_inbound(&mut self, msg: Inbound) {
        let now = Instant::now().into_std();
        let Some(msg) = self.streams.track(msg) else {
            return;
        };
        match msg {
            Inbound::Control(bytes) => self.core.handle_control(now, &bytes),
            Inbound::ControlClosed => {
                self.save_snapshot();
                self.core.handle_control_closed(now)
            }
            Inbound::Opened(..) => {}
            Inbound::Data(id, bytes) => self.core.handle_stream_data(now, id, &bytes),
            Inbound::Fin(id) => self.core.handle_stream_fin(now, id),
            Inbound::Reset(id, code) => self.core.handle_stream_reset(now, id, code),
            Inbound::Stopped(stream, code) => self.core.handle_stream_stopped(now, stream, code),
        }
    }

    fn on_agent(&mut self, msg: AgentMsg) {
        let now = Instant::now().into_std();
        let Some(r) = self.response.as_mut() else {
            return;
        };
        match msg {
            AgentMsg::Audio { response_id, pcm } if response_id == r.id => {
                r.generated.extend_from_slice(&pcm);
                r.pending.extend_from_slice(&pcm);
                let frame = voq_audio::FRAME_SAMPLES;
                let whole = r.pending.len() / frame * frame;
                let chunk: Vec<i16> = r.pending.drain(..whole).collect();
                for f in chunk.chunks(frame) {
                    encode_into_core(&mut self.core, r, now, f);
                }
            }
            AgentMsg::Transcript { response_id, delta } if response_id == r.id => {
                self.core.handle_agent_transcript(now, &response_id, &delta);
            }
            AgentMsg::Done {
                response_id,
                result,
            } if response_id == r.id => {
                let rest = std::mem::take(&mut r.pending);
                if !rest.is_empty() {
                    encode_into_core(&mut self.core, r, now, &rest);
                }
                match result {
                    Ok(()) => self.core.handle_agent_done(now, &response_id),
                    Err(e) => {
                        warn!(%response_id, "agent failed: {e}");
                        self.core.handle_agent_failed(now, &response_id, &e);
                    }
                }
            }
            _ => {} // a cancelled response's leftovers
        }
    }

    /// Carries out everything the core asks for. Never awaits: writes go to writer tasks.
    fn drain(&mut self, ctx: &SessionContext) {
        let mut milestone = false;
        while let Some(out) = self.core.poll_output() {
            // A commit, a response starting or ending: saved at once, not at the next tick, so
            // that a server lost right after still leaves them in the store.
            milestone |= matches!(
                out,
                ServerOutput::TurnCommitted { .. }
                    | ServerOutput::StartResponse { .. }
                    | ServerOutput::ResponseEnded { .. }
            );
            match out {
                ServerOutput::Transmit(op) => {
                    if let voq_proto::stream::Transmit::Write { bytes, .. } = &op {
                        ctx.stats.agent_bytes_sent.add(bytes.len() as u64);
                    }
                    self.streams.apply(op);
                }
                ServerOutput::TurnAudio {
                    item_id,
                    codec,
                    pts: _,
                    payload,
                } => {
                    ctx.stats.prompt_frames.inc();
                    if !self.turns.contains_key(&item_id) {
                        ctx.observe(SessionEventKind::TurnFirstAudio {
                            item_id: item_id.clone(),
                        });
                        if !self.first_audio_counted {
                            // Setup as the server sees it: handshake done → first user audio.
                            self.first_audio_counted = true;
                            let ms = self.connected_at.elapsed().as_millis() as u64;
                            ctx.stats.first_audio_ms.add(ms);
                            ctx.stats.first_audio_sessions.inc();
                        }
                    }
                    self.on_turn_audio(item_id, codec, &payload);
                }
                ServerOutput::TurnCommitted {
                    item_id,
                    frames,
                    audio_ms,
                    source_item_id,
                    samples,
                } => {
                    ctx.stats.turns_committed.inc();
                    let max_frame_gap = self
                        .turns
                        .get(&source_item_id)
                        .map_or(Duration::ZERO, |t| t.max_frame_gap);
                    ctx.observe(SessionEventKind::TurnCommitted {
                        item_id: item_id.clone(),
                        frames,
                        audio_ms,
                        max_frame_gap,
                    });
                    let first_frame =
                        self.turns
                            .get(&source_item_id)
                            .map(|t| crate::record::FirstFrame {
                                after_connected_ms: t
                                    .first_frame_at
                                    .saturating_duration_since(self.connected_at)
                                    .as_millis()
                                    as u64,
                                unix_ms: t.first_frame_unix_ms,
                            });
                    let pcm = self.take_committed(&source_item_id, &item_id, samples);
                    info!(%item_id, frames, audio_ms, "user turn committed");
                    if let Some(rec) = &ctx.recorder {
                        let who = (ctx.proto.session_id.as_str(), ctx.proto.transport.as_str());
                        rec.user_turn(who, &item_id, &pcm, frames, audio_ms, first_frame);
                    }
                    // Only the newest committed turns can still get a response (a new turn
                    // supersedes older ones): keep a few, not every turn of the call.
                    if self.committed.len() >= MAX_COMMITTED_KEPT {
                        self.committed.pop_front();
                    }
                    self.committed.push_back((item_id, pcm));
                }
                ServerOutput::TurnAudioDropped {
                    source_item_id,
                    samples,
                } => {
                    // Taking the range drains it from the open stream's audio; nobody wants it.
                    drop(self.take_committed(&source_item_id, "", samples));
                }
                ServerOutput::History(turns) => {
                    let items = turns.into_iter().filter_map(decode_history).collect();
                    // Called here (before any new turn's respond), awaited on its own.
                    let history = self.agent.clone().history(items);
                    tokio::spawn(
                        async move {
                            if let Err(e) = history.await {
                                warn!("agent history failed: {e:#}");
                            }
                        }
                        .in_current_span(),
                    );
                }
                ServerOutput::LimitReached(limit) => {
                    ctx.stats
                        .limits_exceeded
                        .get(crate::stats::Limit::from(limit))
                        .inc();
                }
                ServerOutput::TurnDiscarded { item_id, reason } => {
                    debug!(%item_id, "user turn discarded: {reason}");
                    self.turns.remove(&item_id);
                }
                ServerOutput::StartResponse {
                    response_id,
                    input_item_id,
                    codec,
                } => {
                    ctx.observe(SessionEventKind::ResponseStarted {
                        response_id: response_id.clone(),
                    });
                    self.start_response(ctx, response_id, input_item_id, codec);
                }
                ServerOutput::CancelResponse { response_id } => {
                    if let Some(r) = self.response.take_if(|r| r.id == response_id) {
                        r.task.abort();
                        // Called here, spawned after: agents see cancel and truncated in order.
                        let cancel = self.agent.clone().cancel(&response_id);
                        tokio::spawn(async move {
                            if let Err(e) = cancel.await {
                                warn!(%response_id, "agent cancel failed: {e:#}");
                            }
                        });
                        self.response = Some(r); // keep the audio for the recording
                    }
                }
                ServerOutput::ItemTruncated {
                    response_id,
                    item_id: _,
                    audio_end_ms,
                } => {
                    let truncated = self.agent.clone().truncated(&response_id, audio_end_ms);
                    tokio::spawn(async move {
                        if let Err(e) = truncated.await {
                            warn!(%response_id, "agent truncate failed: {e:#}");
                        }
                    });
                }
                ServerOutput::ResponseEnded {
                    response_id,
                    status,
                    stats,
                } => {
                    ctx.stats.responses_ended.inc();
                    ctx.observe(SessionEventKind::ResponseEnded {
                        response_id: response_id.clone(),
                        status,
                    });
                    info!(%response_id, ?status, ms_sent = stats.audio_ms_sent, "response ended");
                    if let Some(r) = self.response.take_if(|r| r.id == response_id) {
                        r.task.abort();
                        if let Some(rec) = &ctx.recorder {
                            rec.response(
                                (&ctx.proto.session_id, &ctx.proto.transport),
                                &response_id,
                                &r.generated,
                                status,
                                &stats,
                            );
                        }
                    }
                }
                ServerOutput::Problem(problem) => {
                    count_problem(&ctx.stats, &problem);
                    match self.log_budget.take(std::time::Instant::now()) {
                        LogLine::Write { suppressed } => log_problem(&problem, suppressed),
                        LogLine::Skip => {}
                    }
                }
            }
        }
        if milestone {
            self.save_snapshot();
        }
    }

    fn on_turn_audio(&mut self, item_id: String, codec: Codec, payload: &[u8]) {
        let turn = match self.turns.entry(item_id) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => match voq_audio::Decoder::new(codec) {
                Ok(decoder) => e.insert(TurnAudio {
                    decoder,
                    pcm: Vec::new(),
                    base: 0,
                    last_frame_at: Instant::now(),
                    max_frame_gap: Duration::ZERO,
                    first_frame_at: Instant::now(),
                    first_frame_unix_ms: crate::record::unix_ms(),
                }),
                Err(err) => {
                    warn!("cannot create a {codec} decoder: {err}");
                    return;
                }
            },
        };
        let now = Instant::now();
        turn.max_frame_gap = turn.max_frame_gap.max(now - turn.last_frame_at);
        turn.last_frame_at = now;
        let start = turn.pcm.len();
        if let Err(e) = turn.decoder.decode(payload, &mut turn.pcm) {
            // The frame still counts as received (the client gets it confirmed); its audio is
            // concealed so the turn keeps its length.
            warn!("undecodable {codec} frame: {e}");
            let _ = turn.decoder.conceal(&mut turn.pcm);
        }
        if self.core.server_vad() {
            let vad = self.vad.get_or_insert_with(voq_audio::Vad::default);
            for frame in turn.pcm[start..].chunks(voq_audio::FRAME_SAMPLES) {
                if let Some(event) = vad.push(frame) {
                    let now = Instant::now().into_std();
                    match event {
                        voq_audio::VadEvent::SpeechStarted { at_ms } => {
                            self.core.handle_vad(now, true, at_ms)
                        }
                        voq_audio::VadEvent::SpeechStopped { at_ms } => {
                            self.core.handle_vad(now, false, at_ms)
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    /// The audio of a committed turn: `samples` of the stream `source`. In push-to-talk mode that
    /// is the whole stream (forgotten now); with server VAD a segment, drained from the front of
    /// the still-open input stream.
    fn take_committed(
        &mut self,
        source: &str,
        item_id: &str,
        samples: std::ops::Range<u64>,
    ) -> Vec<i16> {
        let Some(turn) = self.turns.get_mut(source) else {
            return Vec::new();
        };
        let end = (samples.end.saturating_sub(turn.base) as usize).min(turn.pcm.len());
        let start = (samples.start.saturating_sub(turn.base) as usize).min(end);
        let pcm = turn.pcm[start..end].to_vec();
        if source == item_id {
            self.turns.remove(source);
        } else {
            turn.pcm.drain(..end);
            turn.base += end as u64;
        }
        pcm
    }

    fn start_response(
        &mut self,
        ctx: &SessionContext,
        response_id: String,
        input_item_id: Option<String>,
        codec: Codec,
    ) {
        let encoder = match voq_audio::Encoder::with_opus(codec, ctx.opus) {
            Ok(e) => e,
            Err(e) => {
                self.core.handle_agent_failed(
                    Instant::now().into_std(),
                    &response_id,
                    &e.to_string(),
                );
                return;
            }
        };
        let audio = input_item_id
            .as_ref()
            .and_then(|id| {
                let at = self.committed.iter().position(|(i, _)| i == id)?;
                self.committed.remove(at).map(|(_, pcm)| pcm)
            })
            .unwrap_or_default();
        let turn = Turn {
            item_id: input_item_id.unwrap_or_default(),
            response_id: response_id.clone(),
            audio,
        };
        let sink = ReplySink {
            response_id: response_id.clone(),
            tx: self.agent_tx.clone(),
        };
        let agent = self.agent.clone();
        let tx = self.agent_tx.clone();
        let id = response_id.clone();
        ctx.stats.responses_started.inc();
        let task = tokio::spawn(async move {
            let result = agent
                .respond(turn, sink)
                .await
                .map_err(|e| format!("{e:#}"));
            let _ = tx
                .send(AgentMsg::Done {
                    response_id: id,
                    result,
                })
                .await;
        });
        self.response = Some(ActiveResponse {
            id: response_id,
            task,
            encoder,
            pending: Vec::new(),
            generated: Vec::new(),
        });
    }
}

impl Drop for Shell {
    /// A session dropped before it ended (its task aborted at the server's drain timeout) still
    /// tells its client why. After a normal end the link is closed already and this is a no-op.
    fn drop(&mut self) {
        self.link.close(Code::GoingAway, Code::GoingAway.as_str());
    }
}

/// Counts a problem the core handled where it belongs: the client's mistakes say nothing about
/// our health, our own failures are what an operator alerts on.
/// Counts a problem by who is to blame. Every problem is counted; logging is rate-limited
/// apart (see [`LogBudget`]).
fn count_problem(stats: &Stats, problem: &Problem) {
    match (problem.blame, problem.code) {
        (Blame::Peer, _) => stats.client_errors.inc(),
        // Every way a response fails on our side (the agent's error, an encoder that cannot be
        // made or fails) reaches the core as handle_agent_failed and comes back as this one
        // problem: counted here, once.
        (Blame::Local, ErrorCode::AgentFailed) => stats.agent_failures.inc(),
        (Blame::Local, _) => stats.internal_errors.inc(),
    }
}

fn log_problem(problem: &Problem, suppressed: u64) {
    let more = if suppressed > 0 {
        format!(" ({suppressed} more problems of this session were not logged)")
    } else {
        String::new()
    };
    match (problem.blame, problem.code) {
        (Blame::Peer, _) => info!("client error {problem}{more}"),
        (Blame::Local, ErrorCode::AgentFailed) => warn!("agent failed: {problem}{more}"),
        (Blame::Local, _) => warn!("internal error {problem}{more}"),
    }
}

/// A session logs at most [`LogBudget::PER_WINDOW`] problems per [`LogBudget::WINDOW`]; the
/// rest are only counted, and the next line written says how many were left out. A client
/// sending malformed input as fast as it can fills the metrics, not the log.
#[derive(Debug, Default)]
pub(crate) struct LogBudget {
    window_start: Option<std::time::Instant>,
    logged: u32,
    suppressed: u64,
}

/// What to do with one problem's log line.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LogLine {
    /// Write it, saying how many were left out before it.
    Write {
        suppressed: u64,
    },
    Skip,
}

impl LogBudget {
    const PER_WINDOW: u32 = 10;
    const WINDOW: Duration = Duration::from_secs(60);

    fn take(&mut self, now: std::time::Instant) -> LogLine {
        let fresh = self
            .window_start
            .is_none_or(|start| now.duration_since(start) >= Self::WINDOW);
        if fresh {
            self.window_start = Some(now);
            self.logged = 0;
        }
        if self.logged < Self::PER_WINDOW {
            self.logged += 1;
            LogLine::Write {
                suppressed: std::mem::take(&mut self.suppressed),
            }
        } else {
            self.suppressed += 1;
            LogLine::Skip
        }
    }
}

/// A kept turn's audio as 24 kHz pcm16 (an undecodable frame concealed, as for live turns).
fn decode_history(turn: voq_proto::resume::HistoryTurn) -> Option<crate::agent::HistoryItem> {
    let mut decoder = voq_audio::Decoder::new(turn.codec).ok()?;
    let mut audio = Vec::new();
    for (_, payload) in &turn.frames {
        if decoder.decode(payload, &mut audio).is_err() {
            let _ = decoder.conceal(&mut audio);
        }
    }
    Some(crate::agent::HistoryItem {
        item_id: turn.item_id,
        audio,
    })
}

fn encode_into_core(
    core: &mut ServerSession,
    r: &mut ActiveResponse,
    now: std::time::Instant,
    pcm: &[i16],
) {
    let mut payload = Vec::new();
    match r.encoder.encode(pcm, &mut payload) {
        Ok(_) => core.handle_agent_frame(now, &r.id, payload, pcm.len() as u32),
        Err(e) => core.handle_agent_failed(now, &r.id, &format!("cannot encode agent audio: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_logs_are_rate_limited_and_say_what_they_left_out() {
        let t0 = std::time::Instant::now();
        let mut budget = LogBudget::default();
        for _ in 0..LogBudget::PER_WINDOW {
            assert_eq!(budget.take(t0), LogLine::Write { suppressed: 0 });
        }
        for _ in 0..500 {
            assert_eq!(budget.take(t0), LogLine::Skip);
        }
        assert_eq!(
            budget.take(t0 + LogBudget::WINDOW),
            LogLine::Write { suppressed: 500 }
        );
        assert_eq!(
            budget.take(t0 + LogBudget::WINDOW),
            LogLine::Write { suppressed: 0 }
        );
    }

    /// The client's mistakes, the server's own failures and an agent's failures are three
    /// counters, so the client's never page an operator.
    #[test]
    fn problems_are_counted_by_who_is_to_blame() {
        let stats = Stats::default();
        count_problem(&stats, &Problem::peer(ErrorCode::InvalidEvent, "bad json"));
        count_problem(
            &stats,
            &Problem::local(ErrorCode::Internal, "frame over the limit"),
        );
        count_problem(
            &stats,
            &Problem::local(ErrorCode::AgentFailed, "no encoder"),
        );
        assert_eq!(
            (
                stats.client_errors.get(),
                stats.internal_errors.get(),
                stats.agent_failures.get()
            ),
            (1, 1, 1)
        );
    }
}
