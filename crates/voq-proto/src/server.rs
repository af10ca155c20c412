//! The server side of a voq/1 session, sans-IO.
//!
//! The shell (one per carrier: QUIC, WebTransport, WebSocket) owns the sockets and streams, the
//! codecs and the agent. It feeds everything that happens into the session with `handle_*`
//! calls and, **after every input, drains [`ServerSession::poll_output`] until it returns
//! `None`**, then sleeps until [`ServerSession::poll_timeout`] (or the next input) and calls
//! [`ServerSession::handle_timeout`].
//!
//! ```
//! use std::time::{Duration, Instant};
//! use voq_proto::server::{ServerConfig, ServerOutput, ServerSession};
//! use voq_proto::stream::Transmit;
//!
//! # #[allow(clippy::disallowed_methods)]
//! let now = Instant::now();
//! let mut session = ServerSession::new(ServerConfig::default(), now);
//! // The client opened its control stream and sent an event.
//! let mut bytes = Vec::new();
//! voq_proto::wire::encode_event(br#"{"type":"response.create"}"#, &mut bytes).unwrap();
//! session.handle_control(now, &bytes);
//! while let Some(output) = session.poll_output() {
//!     match output {
//!         ServerOutput::Transmit(Transmit::Control(bytes)) => { /* write to the control stream */ }
//!         ServerOutput::Transmit(_) => { /* open, write, finish, reset or stop a stream */ }
//!         ServerOutput::StartResponse { response_id, .. } => {
//!             /* start the agent; feed its audio with handle_agent_frame(now, &response_id, ..) */
//!         }
//!         _ => { /* hand turns to the agent, record, count problems */ }
//!     }
//! }
//! let wake_at: Option<Instant> = session.poll_timeout();
//! # let _ = wake_at;
//! session.handle_timeout(now + Duration::from_millis(20));
//! ```
//!
//! # The methods, by kind
//!
//! - **Getters** (no effect): [`ServerSession::config`], [`ServerSession::server_vad`],
//!   [`ServerSession::wants_agent_audio`], [`ServerSession::is_idle`],
//!   [`ServerSession::state`], [`ServerSession::is_closed`].
//! - **Inputs** (`handle_*`), from the carrier: [`ServerSession::handle_control`],
//!   [`ServerSession::handle_control_closed`], [`ServerSession::handle_stream_data`],
//!   [`ServerSession::handle_stream_fin`], [`ServerSession::handle_stream_reset`],
//!   [`ServerSession::handle_stream_stopped`], [`ServerSession::handle_rtt`]; from the agent and
//!   the VAD: [`ServerSession::handle_agent_frame`], [`ServerSession::handle_agent_done`],
//!   [`ServerSession::handle_agent_failed`], [`ServerSession::handle_vad`]; from the server:
//!   [`ServerSession::handle_going_away`]; from the clock: [`ServerSession::handle_timeout`].
//!   After the session is [`SessionState::Closed`] every input is ignored.
//! - **Outputs** (`poll_*`): [`ServerSession::poll_output`], [`ServerSession::poll_timeout`].
//!
//! **The clock.** Every input that takes `now` (all but `handle_rtt`) advances the session's
//! notion of the present; [`ServerSession::poll_timeout`] is computed from the latest of them,
//! so a shell must pass instants that never go backwards.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use crate::Codec;
use crate::error::{Code, ErrorCode, Problem, WireError};
use crate::event::{
    self, ClientEvent, ResponseInfo, ResponseStatus, ServerEvent, SessionInfo, VoqResponseStats,
    VoqSessionInfo,
};
use crate::event::{HeldTurn, ResumeReply, ResumedReply, ResumedState};
use crate::pacing::{Lead, SendAhead};
use crate::resume::{self, EndedResponse, SessionSnapshot, SnapshotReply, SnapshotTurn};
use crate::stream::{OutStream, StreamId, Transmit};
use crate::wire::{self, AudioHeader, AudioItem, AudioStreamDecoder, DecodedEvent, StreamKind};

/// Assistant items a session remembers for `conversation.item.truncate` (the newest; a client
/// truncates what it is playing, never an item from hundreds of responses ago).
const MAX_REMEMBERED_ITEMS: usize = 64;
/// Refused user-audio streams remembered at once (their ids only), so that what is still in
/// flight on them is ignored quietly.
pub const MAX_REFUSED_STREAMS: usize = 256;
/// Client item ids a session remembers to refuse their reuse.
const MAX_REMEMBERED_TURN_IDS: usize = 1024;

/// Settings of one server session.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// `sess_…` identifier, unique per server.
    pub session_id: String,
    /// Carrier name reported to the client: `quic`, `webtransport` or `ws`.
    pub transport: String,
    /// This server's id in its fleet (hex), reported in `session.created`.
    pub server_id: Option<String>,
    /// Send-ahead lead for agent audio. Default 2 s.
    pub send_ahead: Lead,
    /// How often clients should report their playback cursor. Default 100 ms.
    pub played_report_interval: Duration,
    /// Codec for agent audio until the client asks for another. Default pcm16.
    pub output_codec: Codec,
    /// Respond automatically when a user turn is committed (Realtime's `create_response`). With
    /// server VAD, `turn_detection.create_response: false` turns it off too.
    pub auto_response: bool,
    /// Whether a push-to-talk turn (committed by its stream's FIN) is answered automatically, as
    /// voq/1 clients expect. The Realtime endpoint turns this off: a Realtime client with
    /// `turn_detection: null` commits and then sends `response.create` itself.
    pub respond_to_push_to_talk: bool,
    /// Turn detection the session starts with: `None` is push-to-talk (voq/1's default);
    /// the Realtime endpoint starts with `{"type":"server_vad"}`, as the Realtime API does.
    pub initial_turn_detection: Option<serde_json::Value>,
    /// User turns that may be open at once; more are refused with `StreamRefused`.
    pub max_open_turns: usize,
    /// Agent audio queued beyond the lead before [`ServerSession::wants_agent_audio`] says no.
    pub max_queued: Duration,
    /// Audio one turn may hold before it is committed. A push-to-talk turn that grows past it
    /// is stopped (`limit_exceeded`) and discarded; with server VAD, a segment with speech is
    /// committed there, and one without speech (silence) is dropped. Default 120 s.
    pub max_turn_audio: Duration,
    /// Control events a second a client may send on average; more, beyond the burst, close the
    /// session (`limit_exceeded`). Default 50 (a client's playback reports need 10).
    pub max_event_rate: u32,
    /// Events a client may send at once above the rate. Default 200.
    pub max_event_burst: u32,
    /// Keep what a snapshot needs (the audio of open turns, the reply's unplayed frames):
    /// the server keeps sessions in a store so that they can be resumed
    /// ([`ServerSession::snapshot`], [`ServerSession::resume`]). Default off.
    pub resumable: bool,
    /// The resume token `session.created` / `voq.session.resumed` hand the client.
    pub resume_token: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            session_id: "sess_0".into(),
            transport: "quic".into(),
            server_id: None,
            send_ahead: Lead::from_ms(2000),
            played_report_interval: Duration::from_millis(100),
            output_codec: Codec::Pcm16,
            auto_response: true,
            respond_to_push_to_talk: true,
            initial_turn_detection: None,
            max_open_turns: 4,
            max_queued: Duration::from_secs(30),
            max_turn_audio: Duration::from_secs(120),
            max_event_rate: 50,
            max_event_burst: 200,
            resumable: false,
            resume_token: None,
        }
    }
}

/// The limits a session enforces on its client, so that no client can grow a session without
/// bound (each reached limit is a [`ServerOutput::LimitReached`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionLimit {
    /// More user turns open at once than [`ServerConfig::max_open_turns`]: the stream is refused.
    OpenTurns,
    /// More refused streams than [`MAX_REFUSED_STREAMS`] in flight: the oldest is forgotten.
    RefusedStreams,
    /// A turn reached [`ServerConfig::max_turn_audio`].
    TurnAudio,
    /// Control events beyond [`ServerConfig::max_event_rate`] and its burst: the session closes.
    EventRate,
}

/// What the session asks its shell to do.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerOutput {
    /// A stream operation for the carrier (the same vocabulary as the client's).
    Transmit(Transmit),
    /// A user audio frame arrived (for VAD, recording, streaming agents). Frames of one item
    /// arrive in order, each exactly once.
    TurnAudio {
        /// The turn's item id, from its stream header.
        item_id: String,
        /// How the payload is encoded.
        codec: Codec,
        /// Timestamp of the frame's first sample, in samples from the stream's start.
        pts: u32,
        /// The encoded audio, exactly as the client sent it.
        payload: Vec<u8>,
    },
    /// The server holds the whole user turn; `input_audio_buffer.committed` was sent. Its audio
    /// is `samples` (by pts) of the stream whose header named `source_item_id`: the same item in
    /// push-to-talk mode, a segment of the one input stream with server VAD.
    TurnCommitted {
        /// The committed item.
        item_id: String,
        /// Frames it holds, as confirmed to the client.
        frames: u64,
        /// Its audio in ms, as confirmed to the client.
        audio_ms: u64,
        /// The stream (by its header's item id) the audio came from.
        source_item_id: String,
        /// The samples of that stream that make up the turn.
        samples: std::ops::Range<u64>,
    },
    /// Audio of an open input stream that will never be committed (silence, with server VAD,
    /// past [`ServerConfig::max_turn_audio`]): forget `samples` of the stream whose header named
    /// `source_item_id`.
    TurnAudioDropped {
        /// The stream (by its header's item id).
        source_item_id: String,
        /// The samples to forget.
        samples: std::ops::Range<u64>,
    },
    /// A per-session limit was reached and enforced (for the shell's metrics; the client was
    /// told with an `error` event).
    LimitReached(SessionLimit),
    /// A resumed session's conversation so far, for its (new) agent: the audio of the latest
    /// committed user turns the snapshot kept, oldest first.
    History(Vec<resume::HistoryTurn>),
    /// A user turn ended without being committed (cleared, aborted or malformed): forget its
    /// audio.
    TurnDiscarded {
        /// The turn's item id.
        item_id: String,
        /// Why, for the log.
        reason: String,
    },
    /// Start the agent. Feed its audio with [`ServerSession::handle_agent_frame`] and end with
    /// [`ServerSession::handle_agent_done`].
    StartResponse {
        /// The response's id (`resp_N`): name it in every agent input.
        response_id: String,
        /// The user turn it answers (`None` for a `response.create` with nothing committed).
        input_item_id: Option<String>,
        /// The codec to encode the agent's audio with.
        codec: Codec,
    },
    /// Stop the agent's generation for this response now.
    CancelResponse {
        /// The response to stop.
        response_id: String,
    },
    /// The client said how much of a response's audio the user heard
    /// (`conversation.item.truncate`, confirmed with `conversation.item.truncated`): for agents
    /// that keep a conversation, so that it holds only what was heard. Follows the
    /// [`ServerOutput::CancelResponse`] of a barge-in.
    ItemTruncated {
        /// The response whose audio was cut.
        response_id: String,
        /// Its assistant item.
        item_id: String,
        /// Audio heard, in ms from the item's start: exact, the client's played cursor.
        audio_end_ms: u64,
    },
    /// A response ended: how, and what it sent (for metrics and recordings).
    ResponseEnded {
        /// The response.
        response_id: String,
        /// Completed, cancelled or failed.
        status: ResponseStatus,
        /// Audio generated and sent.
        stats: VoqResponseStats,
    },
    /// Something went wrong and the session dealt with it (an `error` event, a stopped stream,
    /// a failed response); `blame` says whether to count it as the client's or ours.
    Problem(Problem),
}

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionState {
    /// Taking turns and responding.
    Open,
    /// The server is shutting down: what is in progress finishes, new turns are refused.
    Draining,
    /// The control stream or the connection ended; every input is ignored from now on.
    Closed,
}

/// Where one user-turn stream is.
#[derive(Debug)]
enum TurnState {
    /// Opened; its header has not arrived whole yet.
    AwaitingHeader,
    /// The header was accepted: frames are being received.
    Receiving { header: AudioHeader, codec: Codec },
}

#[derive(Debug)]
struct Turn {
    decoder: AudioStreamDecoder,
    state: TurnState,
    frames: u64,
    bytes: u64,
    /// Samples of audio received (gaps between frames not counted).
    audio_samples: u64,
    /// End of the last frame, in samples.
    end: u64,
    last_pts: Option<u32>,
    /// The frames received, for snapshots (only when the session is resumable; at most
    /// [`MAX_HELD_AUDIO`] payload bytes, a prefix of the turn).
    held: Vec<(u32, Vec<u8>)>,
    held_bytes: usize,
    held_full: bool,
}

#[derive(Debug)]
struct Response {
    id: String,
    item_id: String,
    stream: OutStream,
    codec: Codec,
    pacer: SendAhead,
    /// Frames produced by the agent and not yet sent: (pts, payload).
    queue: VecDeque<(u32, Vec<u8>)>,
    /// Next pts to assign, in samples.
    next_pts: u64,
    agent_done: bool,
    stats: VoqResponseStats,
    /// The agent's transcript of the response so far (bounded by [`MAX_TRANSCRIPT`]).
    transcript: String,
    /// Frames sent and not yet reported played, for snapshots (resumable sessions only; the
    /// newest [`MAX_HELD_AUDIO`] payload bytes).
    sent: VecDeque<(u32, Vec<u8>)>,
    /// Resumed from a snapshot whose agent had not finished: nobody produces the rest, so the
    /// response fails once what the snapshot held is sent.
    orphaned: bool,
}

/// Transcript kept per response for `response.output_audio_transcript.done`; deltas past it are
/// still passed on, the final event carries this much.
pub const MAX_TRANSCRIPT: usize = 32 * 1024;

/// A user turn the server now holds, as `commit` announces it.
#[derive(Debug)]
struct CommittedTurn {
    item_id: String,
    frames: u64,
    audio_ms: u64,
    bytes: u64,
    source_item_id: String,
    samples: std::ops::Range<u64>,
}

/// Server VAD state: the current segment's item id and what it holds so far.
#[derive(Debug, Default)]
struct VadSegment {
    item_id: Option<String>,
    /// The input stream's item id (from its header).
    source: Option<String>,
    frames: u64,
    bytes: u64,
    /// Samples of audio in the segment (gaps not counted).
    samples: u64,
    start_sample: u64,
    end_sample: u64,
}

/// One voq/1 session, server side. See the module docs for the call order.
#[derive(Debug)]
pub struct ServerSession {
    config: ServerConfig,
    input_codec: Codec,
    output_codec: Codec,
    server_vad: Option<serde_json::Value>,
    events: wire::EventDecoder,
    turns: BTreeMap<StreamId, Turn>,
    /// Streams refused or failed (STOP_SENDING sent) whose end has not arrived: their late bytes
    /// are ignored. Only ids are kept, at most [`MAX_REFUSED_STREAMS`] (the oldest go first): a
    /// client that opens streams and never ends them cannot grow the session.
    refused: BTreeSet<StreamId>,
    /// Client item ids seen, oldest first (bounded by [`MAX_REMEMBERED_TURN_IDS`]).
    seen_items: VecDeque<String>,
    /// Assistant items, oldest first: (item id, response id, ms of audio sent) — what a
    /// truncation checks (bounded by [`MAX_REMEMBERED_ITEMS`]).
    items: VecDeque<(String, String, u64)>,
    response: Option<Response>,
    last_committed: Option<String>,
    vad: VadSegment,
    rtt: Duration,
    last_now: Option<Instant>,
    next_id: u64,
    next_stream: u64,
    out: VecDeque<ServerOutput>,
    state: SessionState,
    /// Why the session closed itself, if it did (a limit): the code and reason the shell closes
    /// the connection with.
    closed_with: Option<(Code, String)>,
    /// The number of the last server event sent (its `event_id` is `event_N`).
    next_event: u64,
    /// The event-rate bucket: tokens left, and when it was last filled.
    event_tokens: f64,
    event_tokens_at: Option<Instant>,
    /// Turns a resumed session holds whose client has not yet opened their stream again, by
    /// item id.
    parked: BTreeMap<String, Turn>,
    /// Turns committed lately (for a resumed client that missed the confirmation).
    recent_commits: VecDeque<HeldTurn>,
    /// The last response that ended.
    last_ended: Option<EndedResponse>,
    /// Counts changes a snapshot would see: a shell saves when it moved.
    revision: u64,
    /// Frames of held audio this session took over from its snapshot (open turns' audio and
    /// the reply's rest): what a resume saved the client from sending, or sends again.
    resumed_frames: u64,
    /// The audio of the latest committed turns (resumable sessions), oldest first, and its
    /// payload bytes (at most [`resume::MAX_HELD_AUDIO`]).
    history: VecDeque<resume::HistoryTurn>,
    history_bytes: usize,
}

impl ServerSession {
    /// Starts a session; `session.created` is the first output.
    pub fn new(config: ServerConfig, now: Instant) -> Self {
        let mut s = Self::blank(config, now);
        let session = s.info();
        s.send(ServerEvent::SessionCreated { session });
        s
    }

    fn blank(config: ServerConfig, _now: Instant) -> Self {
        Self {
            input_codec: Codec::Pcm16,
            output_codec: config.output_codec,
            server_vad: config.initial_turn_detection.clone(),
            config,
            events: wire::EventDecoder::default(),
            turns: BTreeMap::new(),
            refused: BTreeSet::new(),
            seen_items: Default::default(),
            items: VecDeque::new(),
            response: None,
            last_committed: None,
            vad: VadSegment::default(),
            rtt: Duration::from_millis(100),
            last_now: None,
            next_id: 1,
            next_stream: 0,
            out: VecDeque::new(),
            state: SessionState::Open,
            closed_with: None,
            next_event: 0,
            event_tokens: 0.0,
            event_tokens_at: None,
            parked: BTreeMap::new(),
            recent_commits: VecDeque::new(),
            last_ended: None,
            revision: 0,
            resumed_frames: 0,
            history: VecDeque::new(),
            history_bytes: 0,
        }
    }

    /// Takes back a session from its snapshot (another connection, maybe another server): the
    /// same id, settings and conversation; open turns wait for the client to send the rest on
    /// new streams with the same item ids; the reply goes on from `reply.from_pts` on a new
    /// stream. The first outputs are [`ServerOutput::TurnAudio`] for the audio the snapshot
    /// holds of open turns (the shell rebuilds them), then `voq.session.resumed`.
    pub fn resume(
        config: ServerConfig,
        snapshot: SessionSnapshot,
        reply: Option<ResumeReply>,
        now: Instant,
    ) -> Result<Self, String> {
        let codec = |name: &str| {
            name.parse::<Codec>()
                .map_err(|_| format!("snapshot names codec \"{name}\""))
        };
        let mut s = Self::blank(config, now);
        s.last_now = Some(now);
        s.config.session_id = snapshot.session_id;
        s.input_codec = codec(&snapshot.input_codec)?;
        s.output_codec = codec(&snapshot.output_codec)?;
        s.server_vad = snapshot.turn_detection;
        s.config.send_ahead = Lead::from_ms(snapshot.send_ahead_ms);
        s.next_id = snapshot.next_id;
        s.next_event = snapshot.next_event;
        s.last_committed = snapshot.last_committed;
        s.seen_items = snapshot.seen_items.into();
        s.items = snapshot.items.into();
        s.recent_commits = snapshot.recent_commits.into();
        s.last_ended = snapshot.last_ended;
        for t in snapshot.history {
            let turn = resume::HistoryTurn {
                item_id: t.item_id,
                codec: codec(&t.codec)?,
                frame_ms: t.frame_ms,
                frames: resume::decode_frames(&t.audio)?,
            };
            s.remember_history(turn);
        }
        if !s.history.is_empty() {
            s.out
                .push_back(ServerOutput::History(s.history.iter().cloned().collect()));
        }
        for t in snapshot.open_turns {
            let codec = codec(&t.codec)?;
            let mut turn = Turn::new();
            turn.state = TurnState::Receiving {
                header: AudioHeader {
                    item_id: t.item_id.clone(),
                    response_id: None,
                    codec: codec.name().into(),
                    sample_rate: codec.sample_rate(),
                    frame_ms: t.frame_ms,
                },
                codec,
            };
            for (pts, payload) in resume::decode_frames(&t.audio)? {
                let samples = codec.samples_in(&payload, t.frame_ms);
                turn.account(pts, &payload, samples, true);
                s.resumed_frames += 1;
                s.out.push_back(ServerOutput::TurnAudio {
                    item_id: t.item_id.clone(),
                    codec,
                    pts,
                    payload,
                });
            }
            s.parked.insert(t.item_id, turn);
        }
        let mut state = ResumedState {
            turns: s
                .parked
                .iter()
                .map(|(item_id, t)| HeldTurn {
                    item_id: item_id.clone(),
                    held_pts: t.end,
                    committed: None,
                })
                .chain(s.recent_commits.iter().cloned())
                .collect(),
            reply: None,
        };
        let mut repeat_done = None;
        match (snapshot.reply, reply) {
            (Some(r), asked) => {
                let codec = codec(&r.codec)?;
                let from = asked
                    .as_ref()
                    .filter(|a| a.response_id == r.response_id)
                    .map_or(0, |a| a.from_pts);
                let queue: VecDeque<(u32, Vec<u8>)> = resume::decode_frames(&r.audio)?
                    .into_iter()
                    .filter(|(pts, payload)| {
                        *pts as u64 + codec.samples_in(payload, crate::FRAME_MS) > from
                    })
                    .collect();
                let stream = OutStream(s.next_stream);
                s.next_stream += 1;
                let mut pacer = SendAhead::new(s.config.send_ahead);
                if let Some(a) = asked.as_ref().filter(|a| a.response_id == r.response_id) {
                    let from_ms = a.from_pts * 1000 / codec.sample_rate() as u64;
                    pacer.on_report(now, a.played_ms, from_ms.saturating_sub(a.played_ms));
                }
                s.resumed_frames += queue.len() as u64;
                state.reply = Some(ResumedReply {
                    response_id: r.response_id.clone(),
                    item_id: r.item_id.clone(),
                    from_pts: queue.front().map_or(r.next_pts, |(p, _)| *p as u64),
                });
                s.response = Some(Response {
                    id: r.response_id,
                    item_id: r.item_id,
                    stream,
                    codec,
                    pacer,
                    queue,
                    next_pts: r.next_pts,
                    agent_done: r.agent_done,
                    stats: r.stats,
                    transcript: r.transcript,
                    sent: VecDeque::new(),
                    orphaned: !r.agent_done,
                });
            }
            (None, Some(asked)) => {
                if let Some(ended) = s
                    .last_ended
                    .clone()
                    .filter(|e| e.response_id == asked.response_id)
                {
                    repeat_done = Some(ended);
                }
            }
            (None, None) => {}
        }
        let session = s.info();
        s.send(ServerEvent::VoqSessionResumed {
            session,
            voq: Box::new(state),
        });
        if let Some(ended) = repeat_done {
            s.send(ServerEvent::ResponseDone {
                response: ResponseInfo {
                    id: ended.response_id,
                    status: ended.status,
                    item_id: ended.item_id,
                    voq: Some(ended.stats),
                },
            });
        }
        if let Some(r) = &s.response {
            let header = AudioHeader {
                item_id: r.item_id.clone(),
                response_id: Some(r.id.clone()),
                codec: r.codec.name().into(),
                sample_rate: r.codec.sample_rate(),
                frame_ms: crate::FRAME_MS,
            };
            let mut bytes = Vec::new();
            wire::encode_header(StreamKind::AgentAudio, &header, &mut bytes);
            let stream = r.stream;
            s.transmit(Transmit::Open { stream, bytes });
            s.release(now);
        }
        Ok(s)
    }

    /// What a store keeps of this session so that it can be resumed
    /// ([`ServerSession::resume`]). Complete only for a [`ServerConfig::resumable`] session.
    pub fn snapshot(&self) -> SessionSnapshot {
        let frames = |held: &[(u32, Vec<u8>)]| {
            resume::encode_frames(held.iter().map(|(p, b)| (*p, b.as_slice())))
        };
        let open = self.turns.values().chain(self.parked.values());
        let open_turns = open
            .filter(|_| self.server_vad.is_none())
            .filter_map(|t| match &t.state {
                TurnState::Receiving { header, codec } => Some(SnapshotTurn {
                    item_id: header.item_id.clone(),
                    codec: codec.name().into(),
                    frame_ms: header.frame_ms,
                    audio: frames(&t.held),
                }),
                TurnState::AwaitingHeader => None,
            })
            .collect();
        let reply = self.response.as_ref().map(|r| SnapshotReply {
            response_id: r.id.clone(),
            item_id: r.item_id.clone(),
            codec: r.codec.name().into(),
            next_pts: r.next_pts,
            agent_done: r.agent_done && !r.orphaned,
            stats: r.stats.clone(),
            audio: resume::encode_frames(
                r.sent
                    .iter()
                    .chain(r.queue.iter())
                    .map(|(p, b)| (*p, b.as_slice())),
            ),
            transcript: r.transcript.clone(),
        });
        SessionSnapshot {
            version: resume::SNAPSHOT_VERSION,
            session_id: self.config.session_id.clone(),
            input_codec: self.input_codec.name().into(),
            output_codec: self.output_codec.name().into(),
            turn_detection: self.server_vad.clone(),
            send_ahead_ms: self.config.send_ahead.as_ms(),
            next_id: self.next_id,
            next_event: self.next_event,
            last_committed: self.last_committed.clone(),
            seen_items: self.seen_items.iter().cloned().collect(),
            items: self.items.iter().cloned().collect(),
            open_turns,
            recent_commits: self.recent_commits.iter().cloned().collect(),
            reply,
            last_ended: self.last_ended.clone(),
            history: self
                .history
                .iter()
                .map(|t| SnapshotTurn {
                    item_id: t.item_id.clone(),
                    codec: t.codec.name().into(),
                    frame_ms: t.frame_ms,
                    audio: frames(&t.frames),
                })
                .collect(),
        }
    }

    /// Keeps a committed turn's audio for a resumed session's agent, dropping the oldest past
    /// [`resume::MAX_HELD_AUDIO`].
    fn remember_history(&mut self, turn: resume::HistoryTurn) {
        let bytes: usize = turn.frames.iter().map(|(_, p)| p.len()).sum();
        if bytes > resume::MAX_HELD_AUDIO {
            return;
        }
        self.history_bytes += bytes;
        self.history.push_back(turn);
        while self.history_bytes > resume::MAX_HELD_AUDIO {
            let Some(old) = self.history.pop_front() else {
                break;
            };
            self.history_bytes -= old.frames.iter().map(|(_, p)| p.len()).sum::<usize>();
        }
    }

    /// Frames of held audio taken over at [`ServerSession::resume`].
    pub fn resumed_frames(&self) -> u64 {
        self.resumed_frames
    }

    /// Moves whenever something a snapshot holds changes: a shell compares it with the
    /// revision it saved last.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The session's settings (the send-ahead lead as the client last set it).
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Whether the session runs server-side VAD (the shell then runs a VAD on `TurnAudio` and
    /// calls [`ServerSession::handle_vad`]).
    pub fn server_vad(&self) -> bool {
        self.server_vad.is_some()
    }

    /// Where the session is in its life.
    pub fn state(&self) -> SessionState {
        self.state
    }

    /// The server is shutting down: the response in progress and turns already open finish;
    /// new turns are refused with `going_away`, and the client is told to reconnect elsewhere
    /// once it is done. The shell closes the connection when the client does, or at its drain
    /// timeout.
    pub fn handle_going_away(&mut self, now: Instant) {
        if self.state != SessionState::Open {
            return;
        }
        self.last_now = Some(now);
        self.state = SessionState::Draining;
        self.send(ServerEvent::error(
            ErrorCode::GoingAway,
            "the server is shutting down: finish this response, then reconnect",
        ));
    }

    /// Updates the smoothed RTT the pacer adapts to (from the carrier's estimator). Does not
    /// advance the clock.
    pub fn handle_rtt(&mut self, rtt: Duration) {
        self.rtt = rtt;
    }

    /// Bytes received on the control stream.
    pub fn handle_control(&mut self, now: Instant, bytes: &[u8]) {
        if self.is_closed() {
            return;
        }
        self.last_now = Some(now);
        self.events.push(bytes);
        while let Some(decoded) = self.events.poll_event() {
            if !self.take_event_token(now) {
                let msg = format!(
                    "more than {} control events a second (burst {})",
                    self.config.max_event_rate, self.config.max_event_burst
                );
                self.exceed(now, SessionLimit::EventRate, &msg);
                return;
            }
            match decoded {
                DecodedEvent::Skipped(len) => self.client_error(
                    None,
                    ErrorCode::EventTooLarge,
                    &format!("event of {len} bytes skipped"),
                ),
                DecodedEvent::Event(body) => {
                    match event::parse::<ClientEvent>(&body, event::CLIENT_EVENT_TYPES) {
                        Ok(r) => self.on_event(now, r.event_id, r.event),
                        Err((id, e)) => self.client_error(id, e.code(), &e.to_string()),
                    }
                }
            }
            if self.is_closed() {
                return;
            }
        }
    }

    /// The control stream ended (FIN or reset), or the connection did: the session is over.
    pub fn handle_control_closed(&mut self, now: Instant) {
        self.close(now);
    }

    /// Bytes on a unidirectional stream the client opened (the first call opens it).
    pub fn handle_stream_data(&mut self, now: Instant, stream: StreamId, bytes: &[u8]) {
        if self.is_closed() {
            return;
        }
        self.last_now = Some(now);
        if self.refused.contains(&stream) {
            return; // refused: what is still in flight on it is ignored
        }
        if !self.turns.contains_key(&stream) {
            if self.state == SessionState::Draining {
                self.transmit(Transmit::StopSending {
                    stream,
                    code: Code::GoingAway,
                });
                self.remember_refused(stream);
                return;
            }
            if self.open_turns() >= self.config.max_open_turns {
                self.out
                    .push_back(ServerOutput::LimitReached(SessionLimit::OpenTurns));
                self.transmit(Transmit::StopSending {
                    stream,
                    code: Code::StreamRefused,
                });
                self.client_error(
                    None,
                    ErrorCode::StreamRefused,
                    "too many user turns open at once",
                );
                // Remember it as refused so later bytes are ignored quietly.
                self.remember_refused(stream);
                return;
            }
            self.turns.insert(stream, Turn::new());
        }
        let Some(turn) = self.turns.get_mut(&stream) else {
            return;
        };
        turn.decoder.push(bytes);
        loop {
            let Some(turn) = self.turns.get_mut(&stream) else {
                return; // refused by the item before
            };
            match turn.decoder.poll_item() {
                Ok(None) => break,
                Ok(Some(AudioItem::Header(kind, header))) => {
                    self.on_turn_header(stream, kind, header)
                }
                Ok(Some(AudioItem::Frame(frame))) => {
                    self.on_turn_frame(stream, frame.pts, frame.payload)
                }
                Err(e) => {
                    self.fail_turn(stream, e.code(), &e.to_string());
                    break;
                }
            }
        }
    }

    /// The client finished a turn stream (FIN): in push-to-talk mode this commits the turn.
    pub fn handle_stream_fin(&mut self, now: Instant, stream: StreamId) {
        if self.is_closed() {
            return;
        }
        self.last_now = Some(now);
        if self.refused.remove(&stream) {
            return; // a refused stream ended: nothing more to remember
        }
        let Some(turn) = self.turns.get(&stream) else {
            return;
        };
        let incomplete = turn.decoder.pending() > 0;
        match &turn.state {
            TurnState::AwaitingHeader => {
                let e = WireError::BadHeader("stream ended inside its header".into());
                self.fail_turn(stream, Code::ProtocolViolation, &e.to_string());
                self.refused.remove(&stream);
                return;
            }
            TurnState::Receiving { .. } if incomplete => {
                let e = WireError::BadHeader("stream ended inside a frame".into());
                self.fail_turn(stream, Code::ProtocolViolation, &e.to_string());
                self.refused.remove(&stream);
                return;
            }
            TurnState::Receiving { .. } => {}
        }
        let Some(mut turn) = self.turns.remove(&stream) else {
            return;
        };
        let held = std::mem::take(&mut turn.held);
        let held_whole = !turn.held_full;
        let TurnState::Receiving { header, codec } = turn.state else {
            return;
        };
        if self.server_vad.is_some() {
            // Server VAD: the stream's end commits a segment whose speech has started but not
            // yet stopped. Audio after the last `speech_stopped` is silence, not a turn.
            if self.vad.item_id.is_some() && self.vad.frames > 0 {
                self.commit_vad_segment(now);
            } else {
                self.vad = VadSegment::default();
            }
            return;
        }
        if self.config.resumable && held_whole {
            self.remember_history(resume::HistoryTurn {
                item_id: header.item_id.clone(),
                codec,
                frame_ms: header.frame_ms,
                frames: held,
            });
        }
        let committed = CommittedTurn {
            audio_ms: turn.end * 1000 / codec.sample_rate() as u64,
            source_item_id: header.item_id.clone(),
            item_id: header.item_id,
            frames: turn.frames,
            bytes: turn.bytes,
            samples: 0..turn.end,
        };
        self.commit(now, committed);
    }

    /// The client reset a turn stream: the turn is abandoned (nothing was confirmed).
    pub fn handle_stream_reset(&mut self, now: Instant, stream: StreamId, code: u64) {
        if self.is_closed() {
            return;
        }
        self.last_now = Some(now);
        self.refused.remove(&stream);
        self.discard_turn(stream, format!("client reset the stream (code {code})"));
    }

    /// The client sent STOP_SENDING on a response stream: it does not want the rest.
    pub fn handle_stream_stopped(&mut self, now: Instant, stream: OutStream, _code: u64) {
        if self.is_closed() {
            return;
        }
        self.last_now = Some(now);
        if self.response.as_ref().is_some_and(|r| r.stream == stream) {
            self.end_response(ResponseStatus::Cancelled);
        }
    }

    /// A server-VAD decision on the user audio of the input stream, at `at_ms` from its start.
    pub fn handle_vad(&mut self, now: Instant, speech: bool, at_ms: u64) {
        if self.server_vad.is_none() || self.is_closed() {
            return;
        }
        self.last_now = Some(now);
        if speech {
            let item_id = self.new_id("item");
            self.vad.item_id = Some(item_id.clone());
            // The user talks over the agent: stop it (Realtime's interrupt_response).
            if self.response.is_some() {
                self.end_response(ResponseStatus::Cancelled);
            }
            self.send(ServerEvent::SpeechStarted {
                item_id,
                audio_start_ms: at_ms,
            });
        } else if let Some(item_id) = self.vad.item_id.clone() {
            self.send(ServerEvent::SpeechStopped {
                item_id,
                audio_end_ms: at_ms,
            });
            self.commit_vad_segment(now);
        }
    }

    /// One encoded frame of agent audio for `response_id`, `samples` long. Ignored if the
    /// response was cancelled (the agent may still be winding down).
    pub fn handle_agent_frame(
        &mut self,
        now: Instant,
        response_id: &str,
        payload: Vec<u8>,
        samples: u32,
    ) {
        if self.is_closed() {
            return;
        }
        let Some(r) = self.response.as_mut().filter(|r| r.id == response_id) else {
            return;
        };
        let pts = r.next_pts as u32;
        r.next_pts += samples as u64;
        r.stats.audio_ms_generated = r.next_pts * 1000 / r.codec.sample_rate() as u64;
        r.queue.push_back((pts, payload));
        self.revision += 1;
        self.release(now);
    }

    /// Text of what the agent is saying in `response_id` (a model's audio transcript), passed on
    /// at once as `response.output_audio_transcript.delta`; the whole of it follows the audio in
    /// `response.output_audio_transcript.done`. Ignored for a response that has ended.
    pub fn handle_agent_transcript(&mut self, now: Instant, response_id: &str, delta: &str) {
        if self.is_closed() || delta.is_empty() {
            return;
        }
        self.last_now = Some(now);
        let Some(r) = self.response.as_mut().filter(|r| r.id == response_id) else {
            return;
        };
        // Deltas longer than an event allows are cut at a character boundary.
        let mut end = delta.len().min(MAX_TRANSCRIPT);
        while !delta.is_char_boundary(end) {
            end -= 1;
        }
        let delta = &delta[..end];
        if r.transcript.len() + delta.len() <= MAX_TRANSCRIPT {
            r.transcript.push_str(delta);
        }
        let event = ServerEvent::ResponseOutputAudioTranscriptDelta {
            response_id: r.id.clone(),
            item_id: r.item_id.clone(),
            output_index: 0,
            content_index: 0,
            delta: delta.to_string(),
        };
        self.send(event);
    }

    /// The agent finished `response_id`: once its queued audio is sent, the stream is finished.
    pub fn handle_agent_done(&mut self, now: Instant, response_id: &str) {
        if self.is_closed() {
            return;
        }
        if let Some(r) = self.response.as_mut().filter(|r| r.id == response_id) {
            r.agent_done = true;
            self.revision += 1;
            self.release(now);
        }
    }

    /// The agent failed: the response ends with `failed` and an `error` event.
    pub fn handle_agent_failed(&mut self, now: Instant, response_id: &str, reason: &str) {
        if self.is_closed() {
            return;
        }
        self.last_now = Some(now);
        if self.response.as_ref().is_some_and(|r| r.id == response_id) {
            self.fail_response(ErrorCode::AgentFailed, reason);
        }
    }

    /// Whether the shell should pull more audio from the agent: false while more than
    /// `max_queued` waits unsent (backpressure for agents much faster than real time).
    pub fn wants_agent_audio(&self) -> bool {
        self.response.as_ref().is_some_and(|r| {
            let queued: u64 = r.queue.len() as u64 * r.codec.frame_samples() as u64;
            queued * 1000 / (r.codec.sample_rate() as u64)
                < self.config.max_queued.as_millis() as u64
        })
    }

    /// The next instant pacing wants to run, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let r = self.response.as_ref()?;
        let (pts, _) = r.queue.front()?;
        let pts_ms = *pts as u64 * 1000 / r.codec.sample_rate() as u64;
        // The cursor estimate moves linearly until the next input, so a release time computed
        // from the last input's instant is exact.
        r.pacer.next_release(self.last_now?, pts_ms, self.rtt)
    }

    /// The instant of [`ServerSession::poll_timeout`] (or later) has come: pacing runs.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.is_closed() {
            return;
        }
        self.release(now);
    }

    /// The next thing for the shell to do.
    pub fn poll_output(&mut self) -> Option<ServerOutput> {
        self.out.pop_front()
    }

    /// No response is playing and no user turn is open: a graceful shutdown may close now.
    pub fn is_idle(&self) -> bool {
        self.response.is_none() && self.open_turns() == 0
    }

    /// Whether the session is [`SessionState::Closed`].
    pub fn is_closed(&self) -> bool {
        self.state == SessionState::Closed
    }

    /// The code and reason the session closed itself with (a limit it enforced), `None` if it
    /// is open or closed because the client or the connection went away.
    pub fn closed_with(&self) -> Option<(Code, &str)> {
        self.closed_with.as_ref().map(|(c, r)| (*c, r.as_str()))
    }

    /// A limit the shell enforces was reached (the call's maximum duration): the client is told
    /// (`error` with `limit_exceeded`), the response in progress is cancelled, open turns are
    /// discarded, and the session closes with [`Code::LimitExceeded`].
    pub fn handle_limit_exceeded(&mut self, now: Instant, message: &str) {
        if self.is_closed() {
            return;
        }
        self.client_error(None, ErrorCode::LimitExceeded, message);
        self.close(now);
        self.closed_with = Some((Code::LimitExceeded, message.to_string()));
    }

    /// A limit of the core's own closes the session (see [`Self::handle_limit_exceeded`]).
    fn exceed(&mut self, now: Instant, limit: SessionLimit, message: &str) {
        self.out.push_back(ServerOutput::LimitReached(limit));
        self.handle_limit_exceeded(now, message);
    }

    /// Takes one event from the rate bucket (filled at `max_event_rate`, up to
    /// `max_event_burst`); `false` if it is empty.
    fn take_event_token(&mut self, now: Instant) -> bool {
        let (rate, burst) = (
            f64::from(self.config.max_event_rate),
            f64::from(self.config.max_event_burst.max(1)),
        );
        self.event_tokens = match self.event_tokens_at {
            None => burst,
            Some(at) => {
                let elapsed = now.saturating_duration_since(at).as_secs_f64();
                (self.event_tokens + elapsed * rate).min(burst)
            }
        };
        self.event_tokens_at = Some(now);
        if self.event_tokens < 1.0 {
            return false;
        }
        self.event_tokens -= 1.0;
        true
    }
}

impl Turn {
    fn new() -> Self {
        Self {
            decoder: AudioStreamDecoder::default(),
            state: TurnState::AwaitingHeader,
            frames: 0,
            bytes: 0,
            audio_samples: 0,
            end: 0,
            last_pts: None,
            held: Vec::new(),
            held_bytes: 0,
            held_full: false,
        }
    }

    /// Counts a frame the turn now holds (and keeps it for snapshots when `hold`).
    fn account(&mut self, pts: u32, payload: &[u8], samples: u64, hold: bool) {
        self.last_pts = Some(pts);
        self.frames += 1;
        self.bytes += payload.len() as u64;
        self.audio_samples += samples;
        self.end = self.end.max(pts as u64 + samples);
        if hold && !self.held_full {
            if self.held_bytes + payload.len() <= resume::MAX_HELD_AUDIO {
                self.held_bytes += payload.len();
                self.held.push((pts, payload.to_vec()));
            } else {
                // A prefix: the snapshot's turn ends here; the client sends the rest again.
                self.held_full = true;
            }
        }
    }

    fn item_id(&self) -> Option<&str> {
        match &self.state {
            TurnState::Receiving { header, .. } => Some(&header.item_id),
            TurnState::AwaitingHeader => None,
        }
    }
}
impl ServerSession {
    fn info(&self) -> SessionInfo {
        SessionInfo {
            id: self.config.session_id.clone(),
            input_audio_format: self.input_codec.name().into(),
            output_audio_format: self.output_codec.name().into(),
            turn_detection: self.server_vad.clone(),
            voq: VoqSessionInfo {
                version: event::PROTOCOL_VERSION.into(),
                send_ahead_ms: self.config.send_ahead.as_ms(),
                played_report_interval_ms: self.config.played_report_interval.as_millis() as u64,
                transport: self.config.transport.clone(),
                server_id: self.config.server_id.clone(),
                resume_token: self.config.resume_token.clone(),
            },
        }
    }

    fn new_id(&mut self, prefix: &str) -> String {
        let id = format!("{prefix}_{}", self.next_id);
        self.next_id += 1;
        id
    }

    fn transmit(&mut self, op: Transmit) {
        self.out.push_back(ServerOutput::Transmit(op));
    }

    fn send(&mut self, event: ServerEvent) {
        self.revision += 1;
        let mut bytes = Vec::new();
        self.next_event += 1;
        let body = event::to_json_with_id(&event, &format!("event_{}", self.next_event));
        // Our own events are far below the size limit.
        if wire::encode_event(&body, &mut bytes).is_ok() {
            self.transmit(Transmit::Control(bytes));
        }
    }

    /// The client sent something wrong: tell it (echoing `event_id`) and report the problem.
    fn client_error(&mut self, event_id: Option<String>, code: ErrorCode, message: &str) {
        self.out
            .push_back(ServerOutput::Problem(Problem::peer(code, message)));
        let mut ev = ServerEvent::error(code, message);
        if let ServerEvent::Error { error } = &mut ev {
            error.event_id = event_id;
        }
        self.send(ev);
    }

    /// The response failed on our side: tell the client, report the problem, reset the stream.
    fn fail_response(&mut self, code: ErrorCode, message: &str) {
        self.out
            .push_back(ServerOutput::Problem(Problem::local(code, message)));
        self.send(ServerEvent::error(code, message));
        self.end_response(ResponseStatus::Failed);
    }

    /// Remembers a refused stream (bounded: see `refused`).
    fn remember_refused(&mut self, stream: StreamId) {
        self.turns.remove(&stream);
        if self.refused.len() >= MAX_REFUSED_STREAMS
            && let Some(oldest) = self.refused.first().copied()
        {
            self.refused.remove(&oldest);
            self.out
                .push_back(ServerOutput::LimitReached(SessionLimit::RefusedStreams));
        }
        self.refused.insert(stream);
    }

    /// How many user-audio streams the session keeps state for: open turns and refused streams
    /// it remembers. Bounded by `max_open_turns` + [`MAX_REFUSED_STREAMS`] however the client
    /// behaves.
    pub fn tracked_streams(&self) -> usize {
        self.turns.len() + self.refused.len()
    }

    fn open_turns(&self) -> usize {
        self.turns.len()
    }

    /// Forgets a turn the client abandoned (or that was cleared): its audio is not committed.
    fn discard_turn(&mut self, stream: StreamId, reason: String) {
        if let Some(turn) = self.turns.remove(&stream)
            && let Some(item_id) = turn.item_id()
        {
            self.out.push_back(ServerOutput::TurnDiscarded {
                item_id: item_id.to_string(),
                reason,
            });
        }
    }

    fn remember_turn_id(&mut self, item_id: &str) {
        if self.seen_items.len() >= MAX_REMEMBERED_TURN_IDS {
            self.seen_items.pop_front();
        }
        self.seen_items.push_back(item_id.to_string());
    }

    /// The assistant item `item_id`: (response id, ms of audio sent).
    fn item(&self, item_id: &str) -> Option<(String, u64)> {
        self.items
            .iter()
            .find(|(id, ..)| id == item_id)
            .map(|(_, response_id, ms)| (response_id.clone(), *ms))
    }

    fn on_event(&mut self, now: Instant, event_id: Option<String>, event: ClientEvent) {
        self.last_now = Some(now);
        match event {
            ClientEvent::SessionUpdate { session } => {
                // Validate everything before changing anything: a refused update leaves the
                // session exactly as the client last saw it in `session.updated`.
                if let Some(kind) = session.session_type.as_deref()
                    && kind != "realtime"
                {
                    let msg = format!(
                        "session.type \"{kind}\" is not supported: voq runs \"realtime\" sessions"
                    );
                    return self.client_error(event_id, ErrorCode::InvalidValue, &msg);
                }
                let mut codecs = [None, None];
                for (slot, field, value) in [
                    (0, "audio.input.format", &session.input_audio_format),
                    (1, "audio.output.format", &session.output_audio_format),
                ] {
                    let Some(name) = value else { continue };
                    match name.parse::<Codec>() {
                        Ok(c) => codecs[slot] = Some(c),
                        Err(_) => {
                            let msg = format!(
                                "{field}: unsupported format \"{name}\" (use \
                                 {{\"type\":\"audio/pcm\",\"rate\":24000}} or \
                                 {{\"type\":\"audio/opus\"}})"
                            );
                            return self.client_error(event_id, ErrorCode::InvalidValue, &msg);
                        }
                    }
                }
                let server_vad = match session.turn_detection {
                    None => self.server_vad.clone(),
                    Some(serde_json::Value::Null) => None,
                    Some(v) if v.get("type").and_then(|t| t.as_str()) == Some("server_vad") => {
                        Some(v)
                    }
                    Some(_) => {
                        let msg =
                            "audio.input.turn_detection: use null or {\"type\":\"server_vad\"}";
                        return self.client_error(event_id, ErrorCode::InvalidValue, msg);
                    }
                };
                let [input, output] = codecs;
                self.input_codec = input.unwrap_or(self.input_codec);
                self.output_codec = output.unwrap_or(self.output_codec);
                self.server_vad = server_vad;
                if let Some(ms) = session.voq.and_then(|v| v.send_ahead_ms) {
                    self.config.send_ahead = Lead::from_ms(ms);
                }
                let session = self.info();
                self.send(ServerEvent::SessionUpdated { session });
            }
            ClientEvent::InputAudioBufferCommit {} => {
                if self.server_vad.is_some() && self.vad.frames > 0 {
                    self.commit_vad_segment(now);
                } else {
                    let msg = "nothing to commit: in push-to-talk mode a turn is committed by \
                               finishing its stream";
                    self.client_error(event_id, ErrorCode::InputAudioBufferCommitEmpty, msg);
                }
            }
            ClientEvent::InputAudioBufferClear {} => {
                let open: Vec<StreamId> = self.turns.keys().copied().collect();
                for stream in open {
                    self.transmit(Transmit::StopSending {
                        stream,
                        code: Code::Cancelled,
                    });
                    self.discard_turn(stream, "input_audio_buffer.clear".into());
                    // Bytes still in flight on it are ignored until it ends.
                    self.remember_refused(stream);
                }
                self.vad = VadSegment {
                    item_id: None,
                    ..Default::default()
                };
                self.send(ServerEvent::InputAudioBufferCleared {});
            }
            ClientEvent::ResponseCreate {} => {
                self.create_response(now, self.last_committed.clone())
            }
            ClientEvent::ResponseCancel { response_id } => {
                let active = self.response.as_ref().map(|r| r.id.clone());
                match (active, response_id) {
                    (Some(a), Some(want)) if a != want => self.client_error(
                        event_id,
                        ErrorCode::ResponseNotFound,
                        &format!("response {want} is not in progress (active: {a})"),
                    ),
                    (Some(_), _) => self.end_response(ResponseStatus::Cancelled),
                    (None, _) => self.client_error(
                        event_id,
                        ErrorCode::ResponseNotFound,
                        "no response in progress",
                    ),
                }
            }
            ClientEvent::ConversationItemTruncate {
                item_id,
                content_index,
                audio_end_ms,
            } => {
                let Some((response_id, sent_ms)) = self.item(&item_id) else {
                    let msg = format!("no assistant audio item \"{item_id}\"");
                    return self.client_error(event_id, ErrorCode::ItemNotFound, &msg);
                };
                // Stop first: every ms counts for a barge-in.
                if self.response.as_ref().is_some_and(|r| r.id == response_id) {
                    self.end_response(ResponseStatus::Cancelled);
                }
                let sent_ms = self.item(&item_id).map_or(sent_ms, |(_, ms)| ms);
                if audio_end_ms > sent_ms {
                    let msg = format!("audio_end_ms {audio_end_ms} is past the {sent_ms} ms sent");
                    return self.client_error(event_id, ErrorCode::InvalidValue, &msg);
                }
                self.send(ServerEvent::ConversationItemTruncated {
                    item_id: item_id.clone(),
                    content_index,
                    audio_end_ms,
                });
                self.out.push_back(ServerOutput::ItemTruncated {
                    response_id,
                    item_id,
                    audio_end_ms,
                });
            }
            ClientEvent::OutputAudioBufferPlayed {
                response_id,
                played_ms,
                buffered_ms,
            } => {
                if let Some(r) = self.response.as_mut().filter(|r| r.id == response_id) {
                    r.pacer.on_report(now, played_ms, buffered_ms);
                    // What was played is heard: a resumed session never sends it again.
                    let played = played_ms * r.codec.sample_rate() as u64 / 1000;
                    let frame = r.codec.frame_samples() as u64;
                    while r
                        .sent
                        .front()
                        .is_some_and(|(pts, _)| *pts as u64 + frame <= played)
                    {
                        r.sent.pop_front();
                        self.revision += 1;
                    }
                    self.release(now);
                }
                // Reports for an ended response are normal (they cross the reset): ignore.
            }
            ClientEvent::VoqPing { id } => self.send(ServerEvent::VoqPong { id }),
        }
    }

    fn on_turn_header(&mut self, stream: StreamId, kind: StreamKind, header: AudioHeader) {
        let problem = if kind != StreamKind::UserAudio {
            Some((
                Code::StreamRefused,
                "clients may only open user audio streams".to_string(),
            ))
        } else if let Some(parked) = self.parked.remove(&header.item_id) {
            // A turn of a resumed session goes on: its stream carries the rest, same codec.
            match (&parked.state, self.turns.get_mut(&stream)) {
                (
                    TurnState::Receiving {
                        header: held,
                        codec,
                    },
                    Some(t),
                ) if held.codec == header.codec && held.frame_ms == header.frame_ms => {
                    let codec = *codec;
                    let decoder = std::mem::take(&mut t.decoder);
                    *t = parked;
                    t.decoder = decoder;
                    t.state = TurnState::Receiving { header, codec };
                    None
                }
                _ => Some((
                    Code::BadHeader,
                    format!(
                        "item_id \"{}\" goes on a held turn with another codec",
                        header.item_id
                    ),
                )),
            }
        } else if header.item_id.is_empty() || self.seen_items.contains(&header.item_id) {
            Some((
                Code::BadHeader,
                format!("item_id \"{}\" is empty or reused", header.item_id),
            ))
        } else {
            match header.codec.parse::<Codec>() {
                Err(_) => Some((
                    Code::BadHeader,
                    format!("unsupported codec \"{}\"", header.codec),
                )),
                Ok(c) if c.sample_rate() != header.sample_rate => Some((
                    Code::BadHeader,
                    format!(
                        "{} needs sample_rate {}, got {}",
                        c.name(),
                        c.sample_rate(),
                        header.sample_rate
                    ),
                )),
                Ok(codec) => {
                    self.remember_turn_id(&header.item_id);
                    if let Some(t) = self.turns.get_mut(&stream) {
                        t.state = TurnState::Receiving { header, codec };
                    }
                    None
                }
            }
        };
        if let Some((code, msg)) = problem {
            self.fail_turn(stream, code, &msg);
        }
    }

    fn on_turn_frame(&mut self, stream: StreamId, pts: u32, payload: Vec<u8>) {
        let Some(turn) = self.turns.get_mut(&stream) else {
            return;
        };
        let TurnState::Receiving { header, codec } = &turn.state else {
            return;
        };
        let (item_id, frame_ms, codec) = (header.item_id.clone(), header.frame_ms, *codec);
        if turn.last_pts.is_some_and(|last| pts <= last) {
            let msg = format!("frame pts {pts} is not after the previous frame's");
            return self.fail_turn(stream, Code::ProtocolViolation, &msg);
        }
        let samples = codec.samples_in(&payload, frame_ms);
        let max_samples =
            self.config.max_turn_audio.as_millis() as u64 * codec.sample_rate() as u64 / 1000;
        if self.server_vad.is_none() && turn.audio_samples + samples > max_samples {
            self.out
                .push_back(ServerOutput::LimitReached(SessionLimit::TurnAudio));
            let msg = format!(
                "a turn may hold at most {} s of audio",
                self.config.max_turn_audio.as_secs()
            );
            return self.fail_turn(stream, Code::LimitExceeded, &msg);
        }
        let hold = self.config.resumable && self.server_vad.is_none();
        turn.account(pts, &payload, samples, hold);
        self.revision += 1;
        if self.server_vad.is_some() {
            if self.vad.frames == 0 {
                self.vad.start_sample = pts as u64;
                self.vad.source = Some(item_id.clone());
            }
            self.vad.frames += 1;
            self.vad.bytes += payload.len() as u64;
            self.vad.samples += samples;
            self.vad.end_sample = pts as u64 + samples;
        }
        self.out.push_back(ServerOutput::TurnAudio {
            item_id,
            codec,
            pts,
            payload,
        });
        if self.server_vad.is_some() && self.vad.samples >= max_samples {
            self.out
                .push_back(ServerOutput::LimitReached(SessionLimit::TurnAudio));
            if self.vad.item_id.is_some() {
                // The user has been talking all this time: commit what they said so far, and
                // go on with a new item for the rest of the speech (its stop commits it).
                if let Some(now) = self.last_now {
                    self.commit_vad_segment(now);
                    self.vad.item_id = Some(self.new_id("item"));
                }
            } else {
                // Nothing but silence: nothing will ever commit it.
                let seg = std::mem::take(&mut self.vad);
                self.out.push_back(ServerOutput::TurnAudioDropped {
                    source_item_id: seg.source.unwrap_or_default(),
                    samples: seg.start_sample..seg.end_sample,
                });
            }
        }
    }

    /// The client broke a rule on a turn stream: stop it, forget the turn, tell the client.
    fn fail_turn(&mut self, stream: StreamId, code: Code, message: &str) {
        self.transmit(Transmit::StopSending { stream, code });
        self.discard_turn(stream, message.into());
        self.remember_refused(stream);
        self.client_error(
            None,
            code.error_code().unwrap_or(ErrorCode::ProtocolViolation),
            message,
        );
    }

    fn commit(&mut self, now: Instant, turn: CommittedTurn) {
        let CommittedTurn {
            item_id,
            frames,
            audio_ms,
            bytes,
            source_item_id,
            samples,
        } = turn;
        let previous_item_id = self.last_committed.replace(item_id.clone());
        if self.recent_commits.len() >= resume::MAX_RECENT_COMMITS {
            self.recent_commits.pop_front();
        }
        self.recent_commits.push_back(HeldTurn {
            item_id: item_id.clone(),
            held_pts: samples.end,
            committed: Some(event::VoqCommitted {
                frames,
                audio_ms,
                bytes,
            }),
        });
        self.send(ServerEvent::InputAudioBufferCommitted {
            item_id: item_id.clone(),
            previous_item_id,
            voq: event::VoqCommitted {
                frames,
                audio_ms,
                bytes,
            },
        });
        self.out.push_back(ServerOutput::TurnCommitted {
            item_id: item_id.clone(),
            frames,
            audio_ms,
            source_item_id,
            samples,
        });
        let respond = match &self.server_vad {
            Some(vad) => vad.get("create_response") != Some(&serde_json::Value::Bool(false)),
            None => self.config.respond_to_push_to_talk,
        };
        if self.config.auto_response && respond {
            self.create_response(now, Some(item_id));
        }
    }

    fn commit_vad_segment(&mut self, now: Instant) {
        let seg = std::mem::take(&mut self.vad);
        let rate = self.input_codec.sample_rate() as u64;
        let turn = CommittedTurn {
            item_id: seg.item_id.unwrap_or_else(|| self.new_id("item")),
            frames: seg.frames,
            audio_ms: (seg.end_sample - seg.start_sample) * 1000 / rate,
            bytes: seg.bytes,
            source_item_id: seg.source.unwrap_or_default(),
            samples: seg.start_sample..seg.end_sample,
        };
        self.commit(now, turn);
    }

    fn create_response(&mut self, now: Instant, input_item_id: Option<String>) {
        self.last_now = Some(now);
        if self.response.is_some() {
            // One response at a time: a new one replaces the old (the user moved on).
            self.end_response(ResponseStatus::Cancelled);
        }
        let id = self.new_id("resp");
        let item_id = self.new_id("item");
        let stream = OutStream(self.next_stream);
        self.next_stream += 1;
        let codec = self.output_codec;
        let header = AudioHeader {
            item_id: item_id.clone(),
            response_id: Some(id.clone()),
            codec: codec.name().into(),
            sample_rate: codec.sample_rate(),
            frame_ms: crate::FRAME_MS,
        };
        let mut bytes = Vec::new();
        wire::encode_header(StreamKind::AgentAudio, &header, &mut bytes);
        if self.items.len() >= MAX_REMEMBERED_ITEMS {
            self.items.pop_front();
        }
        self.items.push_back((item_id.clone(), id.clone(), 0));
        self.send(ServerEvent::ResponseCreated {
            response: ResponseInfo {
                id: id.clone(),
                status: ResponseStatus::InProgress,
                item_id: item_id.clone(),
                voq: None,
            },
        });
        self.transmit(Transmit::Open { stream, bytes });
        self.out.push_back(ServerOutput::StartResponse {
            response_id: id.clone(),
            input_item_id,
            codec,
        });
        self.response = Some(Response {
            id,
            item_id,
            stream,
            codec,
            pacer: SendAhead::new(self.config.send_ahead),
            queue: VecDeque::new(),
            next_pts: 0,
            agent_done: false,
            transcript: String::new(),
            stats: VoqResponseStats::default(),
            sent: VecDeque::new(),
            orphaned: false,
        });
    }

    /// Sends every queued frame the pacer allows; finishes the stream when all is sent.
    fn release(&mut self, now: Instant) {
        self.last_now = Some(now);
        let Some(r) = self.response.as_mut() else {
            return;
        };
        let rate = r.codec.sample_rate() as u64;
        while let Some((pts, _)) = r.queue.front() {
            let pts_ms = *pts as u64 * 1000 / rate;
            if !r.pacer.allowed(now, pts_ms, self.rtt) {
                break;
            }
            let Some((pts, payload)) = r.queue.pop_front() else {
                break;
            };
            let mut bytes = Vec::with_capacity(payload.len() + wire::FRAME_OVERHEAD);
            if wire::encode_frame(pts, &payload, &mut bytes).is_err() {
                // An agent frame over the limit is our bug, not the client's: fail the response.
                let msg = format!(
                    "agent frame of {} bytes is over the frame limit",
                    payload.len()
                );
                return self.fail_response(ErrorCode::Internal, &msg);
            }
            r.stats.frames_sent += 1;
            r.stats.bytes_sent += bytes.len() as u64;
            if self.config.resumable {
                r.sent.push_back((pts, payload));
                let mut held: usize = r.sent.iter().map(|(_, b)| b.len()).sum();
                while held > resume::MAX_HELD_AUDIO {
                    let Some((_, b)) = r.sent.pop_front() else {
                        break;
                    };
                    held -= b.len();
                }
            }
            let end = r.queue.front().map_or(r.next_pts, |(p, _)| *p as u64);
            r.stats.audio_ms_sent = end * 1000 / rate;
            if let Some(item) = self.items.iter_mut().find(|(id, ..)| *id == r.item_id) {
                item.2 = r.stats.audio_ms_sent;
            }
            let op = Transmit::Write {
                stream: r.stream,
                bytes,
            };
            self.out.push_back(ServerOutput::Transmit(op));
        }
        if r.orphaned && r.queue.is_empty() {
            let msg = "the server that ran this response's agent was lost before the agent \
                       finished: the reply ends with what was kept of it";
            return self.fail_response(ErrorCode::AgentFailed, msg);
        }
        if r.agent_done && r.queue.is_empty() {
            let stream = r.stream;
            self.transmit(Transmit::Finish { stream });
            self.end_response(ResponseStatus::Completed);
        }
    }

    fn end_response(&mut self, status: ResponseStatus) {
        let Some(r) = self.response.take() else {
            return;
        };
        if status != ResponseStatus::Completed {
            self.transmit(Transmit::Reset {
                stream: r.stream,
                code: if status == ResponseStatus::Failed {
                    Code::AgentFailed
                } else {
                    Code::Cancelled
                },
            });
            self.out.push_back(ServerOutput::CancelResponse {
                response_id: r.id.clone(),
            });
        }
        self.out.push_back(ServerOutput::ResponseEnded {
            response_id: r.id.clone(),
            status,
            stats: r.stats.clone(),
        });
        self.last_ended = Some(EndedResponse {
            response_id: r.id.clone(),
            item_id: r.item_id.clone(),
            status,
            stats: r.stats.clone(),
        });
        if !r.transcript.is_empty() {
            self.send(ServerEvent::ResponseOutputAudioTranscriptDone {
                response_id: r.id.clone(),
                item_id: r.item_id.clone(),
                output_index: 0,
                content_index: 0,
                transcript: r.transcript,
            });
        }
        self.send(ServerEvent::ResponseDone {
            response: ResponseInfo {
                id: r.id,
                status,
                item_id: r.item_id,
                voq: Some(r.stats),
            },
        });
    }

    fn close(&mut self, now: Instant) {
        if self.is_closed() {
            return;
        }
        self.last_now = Some(now);
        if self.response.is_some() {
            self.end_response(ResponseStatus::Cancelled);
        }
        let open: Vec<StreamId> = self.turns.keys().copied().collect();
        for stream in open {
            self.discard_turn(stream, "the session ended".into());
        }
        self.vad = VadSegment::default();
        self.state = SessionState::Closed;
    }
}
