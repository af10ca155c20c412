//! Server counters: cheap atomics, read as a snapshot (logged at shutdown; exported at
//! `--metrics ADDR`, a listener of its own).

use std::sync::Arc;

use voq_metrics::{Counter, Exposition, Kind, LabelValue, LabelledCounter};
use voq_transport::Carrier;

use crate::auth::AuthStats;

/// The per-session limits a server enforces (docs/DEPLOY.md, "Limits").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// The call reached the server's or its token's maximum duration (closed).
    CallDuration,
    /// Control events beyond the rate and burst (closed).
    EventRate,
    /// A turn reached the most audio a turn may hold (push-to-talk: stopped; server VAD:
    /// committed, or dropped if silent).
    TurnAudio,
    /// Too many user turns open at once (the stream refused).
    OpenTurns,
    /// Too many refused streams in flight (the oldest forgotten).
    RefusedStreams,
    /// A network's handshakes a second (Retry for unvalidated sources, refused for validated).
    PrefixHandshakes,
    /// A network's sessions at once (refused).
    PrefixSessions,
    /// The per-prefix table was full: a new network went uncounted.
    PrefixTable,
}

impl From<voq_proto::server::SessionLimit> for Limit {
    fn from(l: voq_proto::server::SessionLimit) -> Self {
        use voq_proto::server::SessionLimit as S;
        match l {
            S::OpenTurns => Self::OpenTurns,
            S::RefusedStreams => Self::RefusedStreams,
            S::TurnAudio => Self::TurnAudio,
            S::EventRate => Self::EventRate,
        }
    }
}

impl LabelValue for Limit {
    const ALL: &'static [Self] = &[
        Self::CallDuration,
        Self::EventRate,
        Self::TurnAudio,
        Self::OpenTurns,
        Self::RefusedStreams,
        Self::PrefixHandshakes,
        Self::PrefixSessions,
        Self::PrefixTable,
    ];
    fn label_value(self) -> &'static str {
        match self {
            Self::CallDuration => "call_duration",
            Self::EventRate => "event_rate",
            Self::TurnAudio => "turn_audio",
            Self::OpenTurns => "open_turns",
            Self::RefusedStreams => "refused_streams",
            Self::PrefixHandshakes => "prefix_handshakes",
            Self::PrefixSessions => "prefix_sessions",
            Self::PrefixTable => "prefix_table",
        }
    }
}

/// How a request to resume a session went (`voq_resumes_total{result=…}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeResult {
    /// A connection's first event asked for a session back.
    Attempted,
    /// It got it.
    Succeeded,
    /// The token was forged, expired, used already, or its session is gone.
    Refused,
    /// The store failed or did not answer in time.
    StoreFailed,
}

impl LabelValue for ResumeResult {
    const ALL: &'static [Self] = &[
        Self::Attempted,
        Self::Succeeded,
        Self::Refused,
        Self::StoreFailed,
    ];
    fn label_value(self) -> &'static str {
        match self {
            Self::Attempted => "attempted",
            Self::Succeeded => "succeeded",
            Self::Refused => "refused",
            Self::StoreFailed => "store_failed",
        }
    }
}

macro_rules! stats {
    ($($name:ident: $help:literal),* $(,)?) => {
        /// Counters of one server. Each is exported as `voq_<name>_total`; sessions are one
        /// family labelled by carrier.
        #[derive(Debug, Default)]
        pub struct Stats {
            /// voq sessions started, by carrier (`voq_sessions_started_total{carrier="quic"}`).
            pub sessions_started: LabelledCounter<Carrier>,
            /// Sessions closed or refused at a limit, by limit
            /// (`voq_limits_exceeded_total{limit="call_duration"}`).
            pub limits_exceeded: LabelledCounter<Limit>,
            /// Resume requests, by result (`voq_resumes_total{result="succeeded"}`).
            pub resumes: LabelledCounter<ResumeResult>,
            /// Authentication's counters, when it is on.
            pub auth: Option<Arc<AuthStats>>,
            /// The anycast socket's counters, on a server of an anycast fleet.
            pub anycast: Option<Arc<voq_tunnel::AnycastSocket>>,
            /// The anycast route's announcement (load shedding), when a routing daemon is set.
            pub announce: Arc<crate::announce::AnnounceStats>,
            $(#[doc = $help] pub $name: Counter,)*
        }

        impl Stats {
            /// `(name, help, value)` of every unlabelled counter, for logs.
            pub fn snapshot(&self) -> Vec<(&'static str, &'static str, u64)> {
                vec![$((concat!("voq_", stringify!($name), "_total"), $help, self.$name.get()),)*]
            }
        }
    };
}

stats! {
    connections_accepted: "connections accepted (QUIC, WebTransport, WebSocket upgrades)",
    connections_refused: "connections refused (handshake failure, capacity, origin)",
    handshakes_retried: "QUIC handshakes sent a Retry first (unvalidated address under load)",
    handshakes_refused: "handshakes refused: QUIC handshakes and TCP connections not yet a session, over their budget",
    sessions_ended: "voq sessions ended",
    http_requests: "HTTP requests: TCP port (page, config, upgrades), WebTransport CONNECTs",
    turns_committed: "user turns committed",
    prompt_frames: "user audio frames received",
    responses_started: "agent responses started",
    responses_ended: "agent responses ended (any status)",
    agent_failures: "agent responses that failed",
    agent_bytes_sent: "bytes of agent audio frames sent",
    client_errors: "error events sent for bad client input",
    internal_errors: "failures of the server's own making (a bug or a resource failure)",
    first_audio_ms: "sum over sessions of the ms from the connection being up (handshake done) to the first user audio frame: setup as the server sees it (divide by voq_first_audio_sessions_total)",
    first_audio_sessions: "sessions whose first user audio frame arrived (the count of voq_first_audio_ms_total)",
    store_requests: "session store requests (snapshot saves and resume claims)",
    store_failures: "session store requests that failed or timed out",
    store_latency_us: "sum of the session store requests' latency in microseconds (divide by voq_store_requests_total)",
    snapshot_bytes: "bytes of session snapshots saved",
    resumed_audio_frames: "frames of held audio a resumed session took over (open turns) or sends again (the reply's rest)",
}

impl Stats {
    /// The counters in the Prometheus text format, in the convention of `voq-metrics`.
    pub fn render_prometheus(&self) -> String {
        let mut out = Exposition::new();
        out.by(
            "voq_sessions_started_total",
            "voq sessions started, by carrier",
            "carrier",
            self.sessions_started.iter(),
        );
        for (name, help, value) in self.snapshot() {
            out.single(name, Kind::Counter, help, value);
        }
        out.by(
            "voq_limits_exceeded_total",
            "sessions closed or refused at a per-session limit, by limit",
            "limit",
            self.limits_exceeded.iter(),
        );
        out.by(
            "voq_resumes_total",
            "requests to resume a session, by result",
            "result",
            self.resumes.iter(),
        );
        if let Some(auth) = &self.auth {
            out.single(
                "voq_auth_accepted_total",
                Kind::Counter,
                "sessions admitted with a valid token",
                auth.accepted.get(),
            );
            out.by(
                "voq_auth_refused_total",
                "sessions refused by authentication, by reason",
                "reason",
                auth.refused.iter(),
            );
            out.single(
                "voq_auth_key_reload_failures_total",
                Kind::Counter,
                "token key file reloads that failed (the previous keys stay in force)",
                auth.key_reload_failures.get(),
            );
        }
        if let Some(socket) = &self.anycast {
            let a = socket.stats();
            for (name, help, value) in [
                (
                    "voq_anycast_received_total",
                    "datagrams on the fleet's anycast address handled here",
                    a.anycast_received,
                ),
                (
                    "voq_unicast_received_total",
                    "clients' datagrams on this server's unicast address",
                    a.unicast_received,
                ),
                (
                    "voq_fleet_forwarded_out_total",
                    "anycast datagrams forwarded to the fleet peer their connection ID names",
                    a.forwarded_out,
                ),
                (
                    "voq_fleet_forwarded_in_total",
                    "datagrams a fleet peer forwarded here",
                    a.forwarded_in,
                ),
                (
                    "voq_fleet_forward_errors_total",
                    "forwards that could not be sent",
                    a.forward_errors,
                ),
                (
                    "voq_fleet_unknown_server_total",
                    "anycast datagrams naming a server id not in the fleet (dropped)",
                    a.unknown_server,
                ),
                (
                    "voq_fleet_not_a_peer_total",
                    "tunnelled datagrams from an address that is not a fleet peer (dropped)",
                    a.not_a_peer,
                ),
                (
                    "voq_fleet_bad_header_total",
                    "tunnelled datagrams with a bad PROXY v2 header (dropped)",
                    a.bad_header,
                ),
                (
                    "voq_anycast_too_large_total",
                    "datagrams larger than quinn's receive buffer (dropped)",
                    a.too_large,
                ),
            ] {
                out.single(name, Kind::Counter, help, value);
            }
        }
        if self.anycast.is_some() {
            let a = &self.announce;
            let load =
                |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
            out.single(
                "voq_anycast_announced",
                Kind::Gauge,
                "1 while the routing daemon announces the anycast route for this server",
                u64::from(a.announced.load(std::sync::atomic::Ordering::Relaxed)),
            );
            out.single(
                "voq_anycast_withdrawals_total",
                Kind::Counter,
                "withdrawals of the anycast route (full, late or draining)",
                load(&a.withdrawals),
            );
            out.single(
                "voq_anycast_announcements_total",
                Kind::Counter,
                "announcements of the anycast route",
                load(&a.announcements),
            );
            out.single(
                "voq_anycast_route_errors_total",
                Kind::Counter,
                "requests to the routing daemon that failed",
                load(&a.errors),
            );
        }
        out.single(
            "voq_sessions_active",
            Kind::Gauge,
            "voq sessions in progress",
            self.sessions_active(),
        );
        out.finish()
    }

    /// Sessions started and not yet ended.
    pub fn sessions_active(&self) -> u64 {
        self.sessions_started
            .total()
            .saturating_sub(self.sessions_ended.get())
    }
}

/// One observable moment of a session, for benchmarks and tests (see [`crate::Server::events`]).
///
/// `at` is read from the monotonic clock (`std::time::Instant`) when the session shell acts on
/// the core's output, so a client in the same process can subtract its own instants from it
/// (e.g. connect start → the server holds the first prompt frame).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionEvent {
    /// The session's id, as in `session.created` (`sess_N`).
    pub session_id: String,
    pub kind: SessionEventKind,
    pub at: std::time::Instant,
}

/// What happened; see [`SessionEvent`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEventKind {
    /// The first whole audio frame of a user-audio stream reached the shell (the server holds it).
    TurnFirstAudio { item_id: String },
    /// A user turn was committed: the server holds all of it (`frames`, `audio_ms` as confirmed
    /// to the client).
    TurnCommitted {
        item_id: String,
        frames: u64,
        audio_ms: u64,
        /// The longest wait between two of the turn's frames arriving (a microphone's pace is
        /// 20 ms; more is an interruption: loss, an outage, a network change).
        max_frame_gap: std::time::Duration,
    },
    /// An agent response started (its agent task is being spawned).
    ResponseStarted { response_id: String },
    /// An agent response ended: `completed`, `cancelled` (after a barge-in: the server has reset
    /// the stream and stopped the agent) or `failed`.
    ResponseEnded {
        response_id: String,
        status: voq_proto::event::ResponseStatus,
    },
}

/// How many events a slow subscriber may fall behind before it misses some.
pub const SESSION_EVENTS_CAPACITY: usize = 1024;

/// Waits up to `timeout` for the next event on `rx` whose kind matches `wanted`, skipping the
/// others; `None` when none came in time or the feed closed. For tests and benchmarks that must
/// wait for a moment of a call (the server holds the first prompt frame, a response started)
/// rather than for a guessed amount of time.
pub async fn wait_for_event(
    rx: &mut tokio::sync::broadcast::Receiver<SessionEvent>,
    timeout: std::time::Duration,
    mut wanted: impl FnMut(&SessionEventKind) -> bool,
) -> Option<SessionEvent> {
    tokio::time::timeout(timeout, async {
        loop {
            match rx.recv().await {
                Ok(e) if wanted(&e.kind) => return Some(e),
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
    .await
    .ok()
    .flatten()
}
