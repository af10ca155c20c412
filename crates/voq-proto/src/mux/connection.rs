//! [`MuxConnection`]: one end of the WebSocket stream mux as a sans-IO state machine.
//!
//! Every rule of the mux lives here, once: which stream ids a side may use and in what order,
//! which of the peer's streams are accepted and which refused, how many the peer may hold open,
//! PING/PONG and the RTT estimate, the idle timeout, and which messages are protocol violations
//! that close the connection. The async shell (`voq_transport::ws`) only moves messages between
//! the socket and this machine and routes its outputs to stream handles; the TypeScript client's
//! `MuxConnection` (web/packages/client/src/muxconn.ts) mirrors it, and both pass the shared
//! behaviour traces in `testdata/mux/traces.json`.
//!
//! # Methods
//!
//! - getters: [`side`](MuxConnection::side), [`rtt`](MuxConnection::rtt),
//!   [`is_closed`](MuxConnection::is_closed), [`close_reason`](MuxConnection::close_reason);
//! - inputs from the peer: [`handle_message`](MuxConnection::handle_message) (a binary message),
//!   [`handle_text`](MuxConnection::handle_text), [`handle_peer_closed`](MuxConnection::handle_peer_closed);
//! - commands from the local application: [`open`](MuxConnection::open),
//!   [`write`](MuxConnection::write), [`finish`](MuxConnection::finish),
//!   [`reset`](MuxConnection::reset), [`stop`](MuxConnection::stop),
//!   [`release_send`](MuxConnection::release_send), [`release_recv`](MuxConnection::release_recv),
//!   [`close`](MuxConnection::close);
//! - time: [`handle_timeout`](MuxConnection::handle_timeout) at
//!   [`poll_timeout`](MuxConnection::poll_timeout);
//! - outputs: [`poll_output`](MuxConnection::poll_output), drained after every input.
//!
//! The clock advances only through `now` arguments: [`MuxConnection::new`],
//! [`handle_message`](MuxConnection::handle_message) (which also resets the idle timer) and
//! [`handle_timeout`](MuxConnection::handle_timeout).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use super::{MuxError, MuxFrame, StreamKind};
use crate::Code;

/// Which end of the connection this is: it decides stream ids (bit 0) and which of the peer's
/// bidirectional streams exist in voq/1 (only the client's first, the control stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The browser or native client: opens the control stream and user turns.
    Client,
    /// The voq server: opens agent responses.
    Server,
}

/// The limits and periods of a mux connection.
#[derive(Debug, Clone)]
pub struct MuxConfig {
    /// How often this side PINGs (also once at the start).
    pub ping_interval: Duration,
    /// A connection that receives nothing for this long is closed. The peer PINGs every second,
    /// so silence this long means it is gone.
    pub idle_timeout: Duration,
    /// Most of the peer's unidirectional streams open at once; more are refused
    /// (`stream_refused`), as QUIC's stream limit would.
    pub max_peer_uni_streams: usize,
    /// Largest stream payload per frame: writes are cut into frames of at most this many bytes,
    /// well under the peer's message limit.
    pub max_frame_data: usize,
}

impl Default for MuxConfig {
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(30),
            max_peer_uni_streams: 16,
            max_frame_data: 64 * 1024,
        }
    }
}

/// What the mux asks its shell to do or tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MuxOutput {
    /// Send this binary WebSocket message (one encoded [`MuxFrame`]).
    Transmit(Vec<u8>),
    /// The peer opened a stream that this side accepts: a unidirectional stream, or (on the
    /// server) the client's control stream. Its first frame follows as `Data`/`Fin`/`Reset`.
    Opened {
        /// The stream id.
        id: u64,
    },
    /// Bytes of a stream this side reads, in order.
    Data {
        /// The stream id.
        id: u64,
        /// The bytes.
        data: Vec<u8>,
    },
    /// A stream this side reads ended cleanly.
    Fin {
        /// The stream id.
        id: u64,
    },
    /// The peer abandoned a stream this side reads.
    Reset {
        /// The stream id.
        id: u64,
        /// The peer's code.
        code: u64,
    },
    /// The peer wants no more of a stream this side writes (STOP_SENDING).
    Stopped {
        /// The stream id.
        id: u64,
        /// The peer's code.
        code: u64,
    },
    /// Close the WebSocket with close code `4000 + code`, then stop. Emitted once, for a local
    /// close, a protocol violation or the idle timeout; never after the peer closed.
    Close {
        /// Why, as a voq code (`protocol_violation` for the peer's mistakes).
        code: Code,
        /// Human-readable detail for the close frame.
        reason: String,
    },
}

/// Why a stream command could not be carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// The peer stopped the stream (STOP_SENDING) with this code.
    #[error("the peer stopped the stream (code {0})")]
    Stopped(u64),
    /// The stream was finished, reset or released, or never writable by this side.
    #[error("the stream is not open for writing")]
    NotWritable,
    /// The connection is closed.
    #[error("the connection is closed: {0}")]
    Closed(String),
}

/// A writable stream's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Send {
    /// Open for writing.
    Open,
    /// FIN or RESET_STREAM sent; a late STOP_SENDING is still reported.
    Done,
    /// The peer stopped it.
    Stopped(u64),
}

/// One end of the WebSocket stream mux. See the module docs.
#[derive(Debug)]
pub struct MuxConnection {
    side: Side,
    config: MuxConfig,
    /// Time zero of the PING payloads (microseconds since it).
    epoch: Instant,
    /// Our next stream index per kind: `[bidirectional, unidirectional]`.
    next: [u64; 2],
    /// The peer's next expected stream index per kind; lower ones are old.
    peer_next: [u64; 2],
    /// Streams this side reads, until they end, are stopped or released.
    reading: BTreeSet<u64>,
    /// Streams this side writes, until released.
    writing: BTreeMap<u64, Send>,
    out: VecDeque<MuxOutput>,
    rtt: Option<Duration>,
    next_ping: Instant,
    last_received: Instant,
    closed: Option<String>,
}

impl MuxConnection {
    /// A connection that starts at `now`; its first output is a PING.
    pub fn new(side: Side, config: MuxConfig, now: Instant) -> Self {
        let mut conn = Self {
            side,
            epoch: now,
            next: [0; 2],
            peer_next: [0; 2],
            reading: BTreeSet::new(),
            writing: BTreeMap::new(),
            out: VecDeque::new(),
            rtt: None,
            next_ping: now,
            last_received: now,
            closed: None,
            config,
        };
        conn.handle_timeout(now);
        conn
    }

    /// Which end this is.
    pub fn side(&self) -> Side {
        self.side
    }

    /// The smoothed round-trip time from PING/PONG (RFC 9002's 7/8 smoothing), once measured.
    pub fn rtt(&self) -> Option<Duration> {
        self.rtt
    }

    /// Whether the connection is closed (locally, by a violation, by the idle timeout, or by
    /// the peer). A closed connection ignores every input and command.
    pub fn is_closed(&self) -> bool {
        self.closed.is_some()
    }

    /// Why the connection closed, once it has.
    pub fn close_reason(&self) -> Option<&str> {
        self.closed.as_deref()
    }

    /// The next output, if any. Drain after every input and command.
    pub fn poll_output(&mut self) -> Option<MuxOutput> {
        self.out.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called: the next PING or the
    /// idle deadline. `None` once closed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed.is_some() {
            return None;
        }
        Some(
            self.next_ping
                .min(self.last_received + self.config.idle_timeout),
        )
    }

    /// Time has reached `now`: PING when due, close when the peer has been silent too long.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.closed.is_some() {
            return;
        }
        if now >= self.last_received + self.config.idle_timeout {
            let why = format!("nothing received for {:?}", self.config.idle_timeout);
            self.close(Code::NoError, &why);
            return;
        }
        if now >= self.next_ping {
            let micros = now.saturating_duration_since(self.epoch).as_micros() as u64;
            self.send(&MuxFrame::Ping(micros.to_be_bytes()));
            // The next PING one period after this one, however late this one was: a stalled
            // shell does not make up for lost PINGs in a burst.
            self.next_ping = now + self.config.ping_interval;
        }
    }

    /// The peer sent a binary message. A malformed one or a breach of the mux rules closes
    /// the connection (`protocol_violation`).
    pub fn handle_message(&mut self, now: Instant, message: &[u8]) {
        if self.closed.is_some() {
            return;
        }
        self.last_received = now;
        let frame = match MuxFrame::decode(message) {
            Ok(frame) => frame,
            Err(e) => return self.violation(&bad_frame(&e)),
        };
        match frame {
            MuxFrame::Ping(payload) => self.send(&MuxFrame::Pong(payload)),
            MuxFrame::Pong(payload) => self.pong(now, payload),
            MuxFrame::StopSending { id, code } => {
                if let Some(state) = self.writing.get_mut(&id)
                    && matches!(state, Send::Open | Send::Done)
                {
                    *state = Send::Stopped(code);
                    self.out.push_back(MuxOutput::Stopped { id, code });
                }
            }
            MuxFrame::Stream { id, data } => self.deliver(id, Delivery::Data(data)),
            MuxFrame::Fin { id } => self.deliver(id, Delivery::Fin),
            MuxFrame::ResetStream { id, code } => self.deliver(id, Delivery::Reset(code)),
        }
    }

    /// The peer sent a text message: the mux is binary only (a violation).
    pub fn handle_text(&mut self) {
        self.violation("text message on a voq mux");
    }

    /// The WebSocket closed underneath (the peer's close frame, an error, EOF). Nothing more is
    /// sent; the shell reports `reason` to the streams.
    pub fn handle_peer_closed(&mut self, reason: &str) {
        if self.closed.is_none() {
            self.closed = Some(reason.to_string());
            self.reading.clear();
            self.writing.clear();
        }
    }

    /// Opens a stream of ours: bidirectional (the client's control stream) or unidirectional.
    pub fn open(&mut self, bidirectional: bool) -> Result<u64, StreamError> {
        if let Some(reason) = &self.closed {
            return Err(StreamError::Closed(reason.clone()));
        }
        let kind = StreamKind {
            server_initiated: self.side == Side::Server,
            unidirectional: !bidirectional,
        };
        let slot = usize::from(!bidirectional);
        let id = kind.nth(self.next[slot]);
        self.next[slot] += 1;
        self.writing.insert(id, Send::Open);
        if bidirectional {
            self.reading.insert(id);
        }
        Ok(id)
    }

    /// Writes bytes on a stream this side writes, cut into frames of at most
    /// [`MuxConfig::max_frame_data`].
    pub fn write(&mut self, id: u64, data: &[u8]) -> Result<(), StreamError> {
        self.writable(id)?;
        for chunk in data.chunks(self.config.max_frame_data.max(1)) {
            self.send(&MuxFrame::Stream {
                id,
                data: chunk.to_vec(),
            });
        }
        Ok(())
    }

    /// Ends a stream cleanly (FIN) after what was written.
    pub fn finish(&mut self, id: u64) -> Result<(), StreamError> {
        self.writable(id)?;
        self.writing.insert(id, Send::Done);
        self.send(&MuxFrame::Fin { id });
        Ok(())
    }

    /// Abandons a stream this side writes (RESET_STREAM with `code`). Also after the peer
    /// stopped it, as QUIC answers STOP_SENDING.
    pub fn reset(&mut self, id: u64, code: Code) {
        if self.closed.is_some() {
            return;
        }
        if let Some(state) = self.writing.get_mut(&id)
            && *state != Send::Done
        {
            *state = Send::Done;
            self.send(&MuxFrame::ResetStream {
                id,
                code: code.to_u32().into(),
            });
        }
    }

    /// Asks the peer to stop sending a stream this side reads (STOP_SENDING with `code`); its
    /// later frames are ignored.
    pub fn stop(&mut self, id: u64, code: Code) {
        if self.closed.is_none() && self.reading.remove(&id) {
            self.send(&MuxFrame::StopSending {
                id,
                code: code.to_u32().into(),
            });
        }
    }

    /// The application no longer writes this stream (its handle is gone): a later
    /// STOP_SENDING has nobody to tell and is ignored.
    pub fn release_send(&mut self, id: u64) {
        self.writing.remove(&id);
    }

    /// The application no longer reads this stream (its handle is gone, without
    /// [`stop`](Self::stop)): later frames are dropped.
    pub fn release_recv(&mut self, id: u64) {
        self.reading.remove(&id);
    }

    /// Closes the connection with `code`; emits [`MuxOutput::Close`] once.
    pub fn close(&mut self, code: Code, reason: &str) {
        if self.closed.is_some() {
            return;
        }
        self.closed = Some(format!("closed locally: {} {reason}", code.as_str()));
        self.reading.clear();
        self.writing.clear();
        self.out.push_back(MuxOutput::Close {
            code,
            reason: reason.to_string(),
        });
    }

    fn violation(&mut self, why: &str) {
        if self.closed.is_some() {
            return; // keep the reason it closed with
        }
        self.close(Code::ProtocolViolation, why);
        if let Some(reason) = &mut self.closed {
            *reason = format!("protocol violation: {why}");
        }
    }

    fn writable(&self, id: u64) -> Result<(), StreamError> {
        if let Some(reason) = &self.closed {
            return Err(StreamError::Closed(reason.clone()));
        }
        match self.writing.get(&id) {
            Some(Send::Open) => Ok(()),
            Some(Send::Stopped(code)) => Err(StreamError::Stopped(*code)),
            Some(Send::Done) | None => Err(StreamError::NotWritable),
        }
    }

    fn send(&mut self, frame: &MuxFrame) {
        self.out.push_back(MuxOutput::Transmit(frame.encode()));
    }

    fn pong(&mut self, now: Instant, payload: [u8; 8]) {
        let sent = Duration::from_micros(u64::from_be_bytes(payload));
        let elapsed = now.saturating_duration_since(self.epoch);
        if sent > elapsed {
            return; // not one of our PINGs (a payload from the future)
        }
        let sample = elapsed - sent;
        self.rtt = Some(match self.rtt {
            None => sample,
            Some(old) => (old * 7 + sample) / 8,
        });
    }

    /// A stream frame from the peer: to a stream this side reads, or the peer's next new one.
    fn deliver(&mut self, id: u64, what: Delivery) {
        if self.reading.contains(&id) {
            return self.emit(id, what);
        }
        let kind = StreamKind::of(id);
        let ours = kind.server_initiated == (self.side == Side::Server);
        if ours {
            // Only our bidirectional streams carry data back, and we read those until they end
            // or we stop them; anything else is the peer writing on our unidirectional stream.
            if kind.unidirectional {
                self.violation("data on a unidirectional stream of the receiver");
            }
            return; // a stream we stopped reading or that already ended
        }
        let slot = usize::from(kind.unidirectional);
        let index = id >> 2;
        if index < self.peer_next[slot] {
            return; // already ended, stopped or refused: late frames are ignored
        }
        if index != self.peer_next[slot] {
            return self.violation("stream ids of one kind must be used in order");
        }
        self.peer_next[slot] += 1;
        // voq/1's only bidirectional stream is the client's first, the control stream.
        let control_stream = self.side == Side::Server && !kind.unidirectional && index == 0;
        if !kind.unidirectional && !control_stream {
            self.send(&MuxFrame::StopSending {
                id,
                code: Code::StreamRefused.to_u32().into(),
            });
            self.send(&MuxFrame::ResetStream {
                id,
                code: Code::StreamRefused.to_u32().into(),
            });
            return;
        }
        if kind.unidirectional && self.open_peer_uni() >= self.config.max_peer_uni_streams {
            self.send(&MuxFrame::StopSending {
                id,
                code: Code::StreamRefused.to_u32().into(),
            });
            return;
        }
        self.reading.insert(id);
        if control_stream {
            self.writing.insert(id, Send::Open);
        }
        self.out.push_back(MuxOutput::Opened { id });
        self.emit(id, what);
    }

    fn open_peer_uni(&self) -> usize {
        let ours = self.side == Side::Server;
        self.reading
            .iter()
            .filter(|id| {
                let k = StreamKind::of(**id);
                k.unidirectional && k.server_initiated != ours
            })
            .count()
    }

    fn emit(&mut self, id: u64, what: Delivery) {
        let output = match what {
            Delivery::Data(data) => MuxOutput::Data { id, data },
            Delivery::Fin => {
                self.reading.remove(&id);
                MuxOutput::Fin { id }
            }
            Delivery::Reset(code) => {
                self.reading.remove(&id);
                MuxOutput::Reset { id, code }
            }
        };
        self.out.push_back(output);
    }
}

/// A stream frame's content, on its way to a reader.
enum Delivery {
    Data(Vec<u8>),
    Fin,
    Reset(u64),
}

fn bad_frame(e: &MuxError) -> String {
    format!("bad mux frame: {e}")
}
