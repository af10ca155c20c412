//! Two sessions wired together in memory on virtual time, with an ideal network: every output
//! crosses after a fixed one-way delay, in order, nothing lost (a reliable carrier reduced to
//! its promise). For specifications of the protocol cores that should not depend on how QUIC
//! recovers; [`crate::Sim`] runs the same cores over real QUIC state machines and impaired
//! paths.
//!
//! [`Pair`] advances 10 ms per [`step`](Pair::step): it delivers what is due, lets the agent
//! produce up to four 20 ms frames (faster than real time), fires both sessions' timers and
//! renders one device quantum. The test drives the client directly (`pair.client`) and reads
//! what happened from the logs it keeps.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use voq_proto::client::{ClientConfig, ClientOutput, ClientSession};
use voq_proto::event::ServerEvent;
use voq_proto::server::{ServerConfig, ServerOutput, ServerSession};
use voq_proto::stream::{OutStream, Transmit};

/// The device quantum: 10 ms at 24 kHz.
const QUANTUM: usize = 240;
/// One agent frame: 20 ms at 24 kHz.
const FRAME: usize = 480;

/// What crosses the network.
#[derive(Debug)]
enum ToServer {
    Control(Vec<u8>),
    Data(u64, Vec<u8>),
    Fin(u64),
    StopSending(u64),
}

#[derive(Debug)]
enum ToClient {
    Control(Vec<u8>),
    Data(u64, Vec<u8>),
    Fin(u64),
    Reset(u64, u64),
    /// STOP_SENDING on one of the client's streams, with its code.
    StopSending(u64, u64),
}

/// A client and a server session joined by an ideal network.
#[derive(Debug)]
pub struct Pair {
    /// Virtual time now.
    pub now: Instant,
    one_way: Duration,
    /// The client session; tests drive it directly.
    pub client: ClientSession,
    /// The server session.
    pub server: ServerSession,
    to_server: VecDeque<(Instant, ToServer)>,
    to_client: VecDeque<(Instant, ToClient)>,
    /// The agent: audio it will produce for the next response, frame by frame.
    pub agent_script: Vec<i16>,
    /// The response the agent is speaking, and how far it got (samples).
    pub agent: Option<(String, usize)>,
    /// Every output of the server, in order.
    pub server_outputs: Vec<ServerOutput>,
    /// Every server event the client received, in order.
    pub client_events: Vec<ServerEvent>,
    /// Everything the client's device rendered.
    pub rendered: Vec<i16>,
    /// The user audio the server holds: (item id, pts, payload), in arrival order.
    pub turn_audio: Vec<(String, u32, Vec<u8>)>,
    /// Every stream operation the client asked for, in order.
    pub client_ops: Vec<Transmit>,
    /// `ClientOutput::TurnStopped`: (item id, code).
    pub turn_stops: Vec<(String, u64)>,
    /// Between [`Pair::lose_server`] and the client's resume request: the snapshot the store
    /// holds, and the config a new server starts with.
    lost: Option<(voq_proto::resume::SessionSnapshot, ServerConfig)>,
    /// Control bytes from the client not yet read whole while the server is lost.
    pending_control: voq_proto::wire::EventDecoder,
}

impl Pair {
    /// Both sessions at a fresh virtual time zero, `one_way_ms` apart.
    pub fn new(server: ServerConfig, client: ClientConfig, one_way_ms: u64) -> Self {
        // The one reading of the real clock: everything after it is virtual.
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        Self {
            now,
            one_way: Duration::from_millis(one_way_ms),
            client: ClientSession::new(client, now),
            server: ServerSession::new(server, now),
            to_server: VecDeque::new(),
            to_client: VecDeque::new(),
            agent_script: Vec::new(),
            agent: None,
            server_outputs: Vec::new(),
            client_events: Vec::new(),
            rendered: Vec::new(),
            turn_audio: Vec::new(),
            client_ops: Vec::new(),
            turn_stops: Vec::new(),
            lost: None,
            pending_control: Default::default(),
        }
    }

    /// The server is lost (as to `kill -9`) with what its store last saved, `snapshot`: both
    /// directions' packets in flight are gone, the client's carrier is down. Call
    /// [`Pair::reconnect`] to hand the client a new one; the first event it sends then starts
    /// a new server from the snapshot, as a server of the fleet would.
    pub fn lose_server(&mut self, snapshot: voq_proto::resume::SessionSnapshot) {
        self.to_server.clear();
        self.to_client.clear();
        self.agent = None;
        let config = self.server.config().clone();
        self.lost = Some((snapshot, config));
        self.client.handle_disconnected(self.now);
        self.drain();
    }

    /// A new carrier is up for the client.
    pub fn reconnect(&mut self) {
        self.client.handle_reconnected(self.now);
        self.drain();
    }

    /// While the server is lost: reads the client's first event and starts the new server
    /// from the snapshot and the event's resume request.
    fn resume_server(&mut self, bytes: &[u8]) {
        self.pending_control.push(bytes);
        let Some(voq_proto::wire::DecodedEvent::Event(body)) = self.pending_control.poll_event()
        else {
            return;
        };
        let Some((snapshot, config)) = self.lost.take() else {
            return;
        };
        use voq_proto::event::{CLIENT_EVENT_TYPES, ClientEvent, parse};
        let reply = match parse::<ClientEvent>(&body, CLIENT_EVENT_TYPES).map(|r| r.event) {
            Ok(ClientEvent::SessionUpdate { session }) => {
                session.voq.and_then(|v| v.resume).and_then(|r| r.reply)
            }
            _ => None,
        };
        match ServerSession::resume(config, snapshot, reply, self.now) {
            Ok(server) => self.server = server,
            Err(e) => panic!("the snapshot does not resume: {e}"),
        }
        self.drain();
    }

    /// Takes both sessions' outputs: stream operations go on the network, reply frames are
    /// "decoded" (pcm16) and handed back, events and logs are kept.
    pub fn drain(&mut self) {
        let at = self.now + self.one_way;
        while let Some(o) = self.client.poll_output() {
            if let ClientOutput::Transmit(op) = &o {
                self.client_ops.push(op.clone());
            }
            match o {
                ClientOutput::Transmit(Transmit::Control(b)) => {
                    self.to_server.push_back((at, ToServer::Control(b)))
                }
                ClientOutput::Transmit(
                    Transmit::Open { stream, bytes } | Transmit::Write { stream, bytes },
                ) => self
                    .to_server
                    .push_back((at, ToServer::Data(stream.0, bytes))),
                ClientOutput::Transmit(Transmit::Finish { stream }) => {
                    self.to_server.push_back((at, ToServer::Fin(stream.0)))
                }
                ClientOutput::Transmit(Transmit::StopSending { stream, .. }) => self
                    .to_server
                    .push_back((at, ToServer::StopSending(stream))),
                ClientOutput::ReplyFrame {
                    response_id,
                    pts,
                    payload,
                    ..
                } => {
                    let pcm: Vec<i16> = payload
                        .chunks_exact(2)
                        .map(|c| i16::from_le_bytes([c[0], c[1]]))
                        .collect();
                    self.client.push_reply_audio(&response_id, pts, &pcm);
                }
                ClientOutput::Event(e) => self.client_events.push(e),
                ClientOutput::TurnStopped { item_id, code } => {
                    self.turn_stops.push((item_id, code))
                }
                ClientOutput::Transmit(Transmit::Reset { .. })
                | ClientOutput::Problem(_)
                | ClientOutput::ResumeRefused { .. } => {}
            }
        }
        while let Some(o) = self.server.poll_output() {
            if self.lost.is_some() {
                continue; // a lost server says nothing to anyone
            }
            match &o {
                ServerOutput::Transmit(Transmit::Control(b)) => {
                    self.to_client.push_back((at, ToClient::Control(b.clone())))
                }
                ServerOutput::Transmit(
                    Transmit::Open { stream, bytes } | Transmit::Write { stream, bytes },
                ) => self
                    .to_client
                    .push_back((at, ToClient::Data(1000 + stream.0, bytes.clone()))),
                ServerOutput::Transmit(Transmit::Finish { stream }) => self
                    .to_client
                    .push_back((at, ToClient::Fin(1000 + stream.0))),
                ServerOutput::Transmit(Transmit::Reset { stream, code }) => self
                    .to_client
                    .push_back((at, ToClient::Reset(1000 + stream.0, *code as u64))),
                ServerOutput::Transmit(Transmit::StopSending { stream, code }) => self
                    .to_client
                    .push_back((at, ToClient::StopSending(*stream, *code as u64))),
                ServerOutput::StartResponse { response_id, .. } => {
                    self.agent = Some((response_id.clone(), 0))
                }
                ServerOutput::CancelResponse { .. } => self.agent = None,
                ServerOutput::TurnAudio {
                    item_id,
                    pts,
                    payload,
                    ..
                } => self
                    .turn_audio
                    .push((item_id.clone(), *pts, payload.clone())),
                _ => {}
            }
            self.server_outputs.push(o);
        }
    }

    /// Advances virtual time by one quantum: deliver what is due, run the agent (faster than
    /// real time: 4 frames per quantum), fire timers, render one quantum.
    pub fn step(&mut self) {
        self.now += Duration::from_millis(10);
        let now = self.now;
        while let Some((_, m)) = self.to_server.pop_front_if(|(t, _)| *t <= now) {
            match m {
                ToServer::Control(b) if self.lost.is_some() => self.resume_server(&b),
                ToServer::Control(b) => self.server.handle_control(now, &b),
                ToServer::Data(s, b) => self.server.handle_stream_data(now, s, &b),
                ToServer::Fin(s) => self.server.handle_stream_fin(now, s),
                ToServer::StopSending(s) => {
                    self.server
                        .handle_stream_stopped(now, OutStream(s - 1000), 5)
                }
            }
            self.drain();
        }
        while let Some((_, m)) = self.to_client.pop_front_if(|(t, _)| *t <= now) {
            match m {
                ToClient::Control(b) => self.client.handle_control(now, &b),
                ToClient::Data(s, b) => self.client.handle_stream_data(now, s, &b),
                ToClient::Fin(s) => self.client.handle_stream_fin(now, s),
                ToClient::Reset(s, c) => self.client.handle_stream_reset(now, s, c),
                ToClient::StopSending(s, c) => {
                    self.client.handle_stream_stopped(now, OutStream(s), c)
                }
            }
            self.drain();
        }
        for _ in 0..4 {
            let Some((id, pos)) = self.agent.clone() else {
                break;
            };
            if !self.server.wants_agent_audio() {
                break;
            }
            if pos >= self.agent_script.len() {
                self.server.handle_agent_done(now, &id);
                self.agent = None;
            } else {
                let end = (pos + FRAME).min(self.agent_script.len());
                let payload: Vec<u8> = self.agent_script[pos..end]
                    .iter()
                    .flat_map(|s| s.to_le_bytes())
                    .collect();
                self.server
                    .handle_agent_frame(now, &id, payload, (end - pos) as u32);
                self.agent = Some((id, end));
            }
            self.drain();
        }
        if self.lost.is_none() && self.server.poll_timeout().is_some_and(|t| t <= now) {
            self.server.handle_timeout(now);
        }
        if self.client.poll_timeout().is_some_and(|t| t <= now) {
            self.client.handle_timeout(now);
        }
        let mut q = [0i16; QUANTUM];
        self.client.render(now, &mut q);
        self.rendered.extend_from_slice(&q);
        self.drain();
    }

    /// Runs `ms` of virtual time, one step per 10 ms.
    pub fn run_for(&mut self, ms: u64) {
        for _ in 0..ms / 10 {
            self.step();
        }
    }

    /// The user says `samples` as one push-to-talk turn, all at once.
    ///
    /// # Panics
    ///
    /// When the client session refuses the audio (a turn too long for it).
    pub fn send_turn(&mut self, samples: &[i16]) {
        self.client.start_turn(self.now);
        for chunk in samples.chunks(FRAME) {
            let payload: Vec<u8> = chunk.iter().flat_map(|s| s.to_le_bytes()).collect();
            if let Err(e) = self
                .client
                .send_audio(self.now, &payload, chunk.len() as u32)
            {
                panic!("the client refused the turn's audio: {e}");
            }
        }
        self.client.end_turn(self.now);
        self.drain();
    }

    /// The server events of one type the client received.
    pub fn events_of(&self, kind: &str) -> Vec<&ServerEvent> {
        self.client_events
            .iter()
            .filter(|e| e.kind() == kind)
            .collect()
    }
}
