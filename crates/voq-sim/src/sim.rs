//! The simulation: callers, servers and the balancer's routing on one virtual clock.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use quinn_proto::{ConnectionHandle, Dir, EndpointConfig, Event, StreamEvent, StreamId};
use voq_lb::{Backend, Decision, RoutingTable};
use voq_netem::Path;
use voq_proto::SAMPLE_RATE;
use voq_proto::client::{ClientConfig, ClientOutput, ClientSession};
use voq_proto::server::{ServerConfig, ServerOutput, ServerSession};
use voq_proto::stream::OutStream;
use voq_quic_lb::{CidGenerator, Config, Encoder, ServerId};

use crate::audio::{self, fingerprint, to_bytes, to_samples};
use crate::quic::{Datagram, End, Key, QuicNode, stream_number};
use crate::scenario::{BlackoutAt, ClientPlan, FleetEvent, Prompt, Scenario};
use crate::summary::{ClientSummary, Summary};

/// The audio device's quantum: 10 ms at 24 kHz.
const QUANTUM: usize = 240;
const QUANTUM_DUR: Duration = Duration::from_millis(10);
/// One microphone / agent frame: 20 ms.
const FRAME: usize = 480;
const FRAME_DUR: Duration = Duration::from_millis(20);
/// The fake agent speaks at 4x real time: one 20 ms frame every 5 ms.
const AGENT_TICK: Duration = Duration::from_millis(5);
/// The balancer's VIP, where callers connect when there is a balancer.
const VIP: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 443);
/// The QUIC-LB configuration of the fleet: config 0, 1-octet server ids, 8-octet nonces.
const SERVER_ID_LEN: usize = 1;
const NONCE_LEN: usize = 8;

fn server_addr(k: usize) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 10 + k as u8)), 4433)
}

fn client_addr(i: usize, moves: u8) -> SocketAddr {
    SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(
            10,
            1 + moves,
            (i / 250) as u8,
            (i % 250) as u8 + 1,
        )),
        50_000 + u16::from(moves),
    )
}

fn seed32(seed: u64, role: u8, index: usize) -> [u8; 32] {
    let mut s = [role; 32];
    s[..8].copy_from_slice(&seed.to_le_bytes());
    s[8..16].copy_from_slice(&(index as u64).to_le_bytes());
    s
}

/// Connection IDs from a seed (splitmix64), for the callers: quinn-proto's default generator
/// draws from the thread's RNG, which would make the balancer's hash of a first flight, and so
/// the server a call lands on, differ from run to run.
struct SeededCids(u64);

impl SeededCids {
    fn next(&mut self) -> [u8; 8] {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)).to_be_bytes()
    }
}

impl quinn_proto::ConnectionIdGenerator for SeededCids {
    fn generate_cid(&mut self) -> quinn_proto::ConnectionId {
        quinn_proto::ConnectionId::new(&self.next())
    }

    fn cid_len(&self) -> usize {
        8
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

/// A caller's QUIC configuration: its first flight's DCID comes from the seed too.
fn caller_config(
    base: &quinn_proto::ClientConfig,
    seed: u64,
    i: usize,
) -> quinn_proto::ClientConfig {
    let mut config = base.clone();
    let first = std::sync::Mutex::new(SeededCids(seed ^ (i as u64) << 32 ^ 0xdc1d));
    config.initial_dst_cid_provider(std::sync::Arc::new(move || {
        let mut cids = first.lock().unwrap_or_else(|p| p.into_inner());
        quinn_proto::ConnectionId::new(&cids.next())
    }));
    config
}

fn quic_lb_config() -> Config {
    #[allow(clippy::expect_used)]
    Config::new(0, SERVER_ID_LEN, NONCE_LEN).expect("a fixed, valid QUIC-LB configuration")
}

/// One caller: its QUIC endpoint, its session, its microphone and audio device.
struct Caller {
    plan: ClientPlan,
    quic: QuicNode,
    conn: Option<ConnectionHandle>,
    path: Path<Vec<u8>>,
    session: ClientSession,
    started: bool,
    prompt: Vec<i16>,
    captured: usize,
    next_capture: Option<Instant>,
    next_render: Instant,
    /// Everything the device rendered, one quantum after the other.
    rendered: Vec<i16>,
    /// Index in `rendered` of the first sample of agent audio.
    first_audio_at: Option<usize>,
    /// The agent audio the device rendered (the audio part of each quantum).
    played: Vec<i16>,
    /// Index in `rendered` of the first quantum after a barge-in.
    interrupt_mark: Option<usize>,
    interrupted_at_played_ms: Option<u64>,
    /// When reply bytes last arrived, and the longest gap between two arrivals.
    reply_data_at: Option<Instant>,
    max_reply_gap: Duration,
    blackout_at: Option<Instant>,
    migrated_at: Option<Instant>,
    warnings: Vec<String>,
    /// The server (index) whose session took this call, as the servers saw it.
    served_by: Option<usize>,
}

/// The fake agent of one response.
struct Agent {
    response_id: String,
    pos: usize,
}

/// One server-side connection: its session, the agent, what arrived.
struct Session {
    caller: Option<usize>,
    session: Option<ServerSession>,
    control: Option<StreamId>,
    agent: Option<Agent>,
    next_agent: Option<Instant>,
    agent_cancelled: bool,
    turn_audio: Vec<(String, u32, Vec<u8>)>,
}

/// One server: its endpoint and sessions.
struct Server {
    quic: QuicNode,
    sessions: BTreeMap<ConnectionHandle, Session>,
    started: u64,
}

/// A whole run. Build it from a [`Scenario`], then [`Sim::run`] it.
pub struct Sim {
    sc: Scenario,
    t0: Instant,
    now: Instant,
    client_config: quinn_proto::ClientConfig,
    callers: Vec<Caller>,
    servers: Vec<Server>,
    /// The balancer's routing decision; `None` while it restarts.
    table: Option<RoutingTable>,
    balancer_down_until: Option<Instant>,
    lb_dropped: u64,
    reply: Vec<i16>,
    events: Vec<FleetEvent>,
    warnings: Vec<String>,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("scenario", &self.sc.name)
            .field("now_ms", &self.ms(self.now))
            .finish_non_exhaustive()
    }
}

impl Sim {
    /// Sets up the fleet and the callers at virtual time zero.
    ///
    /// # Panics
    ///
    /// When the scenario is inconsistent (no server, several servers without a balancer).
    pub fn new(sc: Scenario) -> Self {
        assert!(sc.servers >= 1, "{}: at least one server", sc.name);
        assert!(
            sc.balancer || sc.servers == 1,
            "{}: several servers need the balancer in front",
            sc.name
        );
        // The one reading of the real clock: everything after it is virtual.
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let (server_config, client_config) = crate::tls::quic_configs();
        let servers = (0..sc.servers)
            .map(|k| {
                let mut endpoint = EndpointConfig::default();
                if sc.balancer {
                    let seed = seed32(sc.seed, 3, k);
                    endpoint.cid_generator(move || {
                        #[allow(clippy::expect_used)]
                        let encoder = Encoder::new(quic_lb_config(), &[k as u8 + 1], seed)
                            .expect("a valid server id");
                        Box::new(CidGenerator::new(encoder))
                    });
                }
                Server {
                    quic: QuicNode::new(
                        endpoint,
                        Some(server_config.clone()),
                        seed32(sc.seed, 2, k),
                        server_addr(k),
                    ),
                    sessions: BTreeMap::new(),
                    started: 0,
                }
            })
            .collect();
        let callers = sc
            .clients
            .iter()
            .enumerate()
            .map(|(i, plan)| {
                #[allow(clippy::expect_used)]
                let path = Path::symmetric(sc.link.clone(), sc.seed + i as u64, t0)
                    .expect("a valid link configuration");
                let prompt = match plan.prompt {
                    Prompt::Recording => audio::prompt(),
                    Prompt::Synthetic { frames } => audio::speech(frames * FRAME, i as i16),
                };
                let start = t0 + Duration::from_millis(plan.start_ms);
                let mut endpoint = EndpointConfig::default();
                let cid_seed = sc.seed.wrapping_mul(1000) + i as u64;
                endpoint.cid_generator(move || Box::new(SeededCids(cid_seed)));
                Caller {
                    plan: plan.clone(),
                    quic: QuicNode::new(endpoint, None, seed32(sc.seed, 1, i), client_addr(i, 0)),
                    conn: None,
                    path,
                    session: ClientSession::new(ClientConfig::default(), start),
                    started: false,
                    prompt,
                    captured: 0,
                    next_capture: Some(start),
                    next_render: start,
                    rendered: Vec::new(),
                    first_audio_at: None,
                    played: Vec::new(),
                    interrupt_mark: None,
                    interrupted_at_played_ms: None,
                    reply_data_at: None,
                    max_reply_gap: Duration::ZERO,
                    blackout_at: None,
                    migrated_at: None,
                    warnings: Vec::new(),
                    served_by: None,
                }
            })
            .collect();
        let table = sc.balancer.then(|| Self::fresh_table(sc.servers));
        Self {
            reply: audio::reply(sc.reply_ms),
            events: sc.events.clone(),
            sc,
            t0,
            now: t0,
            client_config,
            callers,
            servers,
            table,
            balancer_down_until: None,
            lb_dropped: 0,
            warnings: Vec::new(),
        }
    }

    /// A balancer that knows the fleet and nothing about any flow.
    fn fresh_table(servers: usize) -> RoutingTable {
        let backends = (0..servers)
            .map(|k| {
                #[allow(clippy::expect_used)]
                let id = ServerId::from_slice(&[k as u8 + 1]).expect("a 1-octet server id");
                Backend::new(id, server_addr(k))
            })
            .collect();
        #[allow(clippy::expect_used)]
        RoutingTable::new(vec![quic_lb_config()], backends).expect("a valid routing table")
    }

    fn ms(&self, t: Instant) -> u64 {
        (t - self.t0).as_millis() as u64
    }

    /// Where callers send: the VIP with a balancer, else the one server.
    fn front(&self) -> SocketAddr {
        if self.sc.balancer {
            VIP
        } else {
            server_addr(0)
        }
    }

    /// Runs every call to its end.
    ///
    /// # Panics
    ///
    /// When a connection is lost or the calls are not done by the scenario's deadline: the
    /// run's assertions are the summary's, a stuck run is a failure of its own.
    pub fn run(mut self) -> Summary {
        let deadline = self.t0 + self.sc.deadline;
        let mut same_instant = 0;
        loop {
            self.step();
            for (i, c) in self.callers.iter().enumerate() {
                let lost = c.conn.and_then(|ch| c.quic.conns.get(&ch)?.lost.clone());
                assert!(
                    lost.is_none(),
                    "{}: caller {i} lost its connection: {lost:?}",
                    self.sc.name
                );
            }
            if self.done() {
                break;
            }
            let next = self.next_event().max(self.now);
            assert!(
                next <= deadline,
                "{}: not done after {:?} of virtual time",
                self.sc.name,
                self.sc.deadline
            );
            if next == self.now {
                same_instant += 1;
                assert!(
                    same_instant < 10_000,
                    "{}: stuck at {} ms",
                    self.sc.name,
                    self.ms(self.now)
                );
            } else {
                same_instant = 0;
            }
            self.now = next;
        }
        self.summary()
    }

    // ---- one instant ----

    fn step(&mut self) {
        let now = self.now;
        self.fleet_events(now);
        for i in 0..self.callers.len() {
            self.start_call(i, now);
            self.microphone(i, now);
            self.migrate(i, now);
        }
        self.deliver(now);
        for c in &mut self.callers {
            c.quic.handle_timeout(now);
        }
        for s in &mut self.servers {
            s.quic.handle_timeout(now);
        }
        for i in 0..self.callers.len() {
            self.caller_quic_events(i, now);
        }
        for k in 0..self.servers.len() {
            self.server_quic_events(k, now);
        }
        self.session_timers(now);
        for i in 0..self.callers.len() {
            if self.callers[i].started && self.callers[i].next_render <= now {
                self.render(i, now);
                self.callers[i].next_render += QUANTUM_DUR;
            }
        }
        for k in 0..self.servers.len() {
            self.agent_ticks(k, now);
        }
        self.transmit(now);
    }

    fn fleet_events(&mut self, now: Instant) {
        let due: Vec<FleetEvent> = self
            .events
            .iter()
            .filter(|e| self.t0 + Duration::from_millis(event_at(e)) <= now)
            .copied()
            .collect();
        self.events
            .retain(|e| self.t0 + Duration::from_millis(event_at(e)) > now);
        for e in due {
            match e {
                FleetEvent::ServerDown { server, .. } => {
                    if let Some(table) = &self.table {
                        #[allow(clippy::expect_used)]
                        let id = ServerId::from_slice(&[server as u8 + 1]).expect("server id");
                        table.set_up(&id, false);
                    }
                }
                FleetEvent::BalancerRestart { outage_ms, .. } => {
                    // The process is gone with everything it knew; a new one comes up later.
                    self.table = None;
                    self.balancer_down_until = Some(now + Duration::from_millis(outage_ms));
                }
            }
        }
        if self.balancer_down_until.is_some_and(|t| t <= now) {
            self.balancer_down_until = None;
            self.table = Some(Self::fresh_table(self.sc.servers));
        }
    }

    fn start_call(&mut self, i: usize, now: Instant) {
        let front = self.front();
        let c = &mut self.callers[i];
        if c.started || self.t0 + Duration::from_millis(c.plan.start_ms) > now {
            return;
        }
        c.started = true;
        let config = caller_config(&self.client_config, self.sc.seed, i);
        match c.quic.connect(now, config, front) {
            Ok(ch) => c.conn = Some(ch),
            Err(e) => c.warnings.push(format!("cannot connect: {e}")),
        }
    }

    /// The user speaks the prompt in real time, one 20 ms frame every 20 ms, from the moment the
    /// call starts (before the connection is up: the session queues it).
    fn microphone(&mut self, i: usize, now: Instant) {
        let t0 = self.t0;
        let c = &mut self.callers[i];
        if !c.started || c.next_capture.is_none_or(|t| t > now) {
            return;
        }
        let start = c.captured * FRAME;
        let end = (start + FRAME).min(c.prompt.len());
        let payload = to_bytes(&c.prompt[start..end]);
        if let Err(e) = c.session.send_audio(now, &payload, (end - start) as u32) {
            c.warnings.push(format!("send_audio: {e}"));
        }
        c.captured += 1;
        if end == c.prompt.len() {
            c.session.end_turn(now);
            c.next_capture = None;
        } else {
            c.next_capture = Some(now + FRAME_DUR);
        }
        self.drain_caller(i);
        let c = &mut self.callers[i];
        if let Some(BlackoutAt::PromptMs(at)) = c.plan.blackout
            && (now - t0).as_millis() as u64 >= c.plan.start_ms + at
        {
            black_out(c, now);
        }
    }

    fn migrate(&mut self, i: usize, now: Instant) {
        let t0 = self.t0;
        let c = &mut self.callers[i];
        if let Some(at) = c.plan.migrate_at_ms
            && c.migrated_at.is_none()
            && now >= t0 + Duration::from_millis(c.plan.start_ms + at)
        {
            c.quic.addr = client_addr(i, 1);
            c.migrated_at = Some(now);
        }
    }

    /// Datagrams due at their destination: callers' to the front (the server, or the VIP and
    /// the balancer's routing), the servers' back to the callers.
    fn deliver(&mut self, now: Instant) {
        let mut answers = Vec::new();
        for i in 0..self.callers.len() {
            while let Some(d) = self.callers[i].path.forward.poll_deliver(now) {
                let from = self.callers[i].quic.addr;
                let Some(k) = self.route(&d) else {
                    continue;
                };
                let server = &mut self.servers[k];
                if let Some(ch) = server.quic.receive(now, from, &d, &mut answers) {
                    server.sessions.insert(
                        ch,
                        Session {
                            caller: Some(i),
                            session: None,
                            control: None,
                            agent: None,
                            next_agent: None,
                            agent_cancelled: false,
                            turn_audio: Vec::new(),
                        },
                    );
                }
                self.send_from_server(now, &mut answers);
            }
        }
        let front = self.front();
        for c in &mut self.callers {
            while let Some(d) = c.path.reverse.poll_deliver(now) {
                let mut none = Vec::new();
                c.quic.receive(now, front, &d, &mut none);
            }
        }
    }

    /// Which server a datagram at the front goes to; `None` when the balancer drops it.
    fn route(&mut self, datagram: &[u8]) -> Option<usize> {
        if !self.sc.balancer {
            return Some(0);
        }
        let decision = self.table.as_ref().map(|t| t.route(datagram));
        match decision {
            Some(Decision::ServerId(k) | Decision::Hashed(k, _)) => Some(k),
            _ => {
                self.lb_dropped += 1;
                None
            }
        }
    }

    /// A server's datagrams onto the path of the caller they are addressed to (old addresses
    /// included: a caller that moved still gets what was sent to where it was).
    fn send_from_server(&mut self, now: Instant, out: &mut Vec<Datagram>) {
        let vip_dark = self.sc.balancer && self.table.is_none();
        for d in out.drain(..) {
            if vip_dark {
                self.lb_dropped += 1;
                continue;
            }
            let Some(c) =
                self.callers.iter_mut().enumerate().find_map(|(i, c)| {
                    (d.to == c.quic.addr || d.to == client_addr(i, 0)).then_some(c)
                })
            else {
                continue;
            };
            let size = d.bytes.len();
            c.path.reverse.send(now, d.bytes, size);
        }
    }

    fn transmit(&mut self, now: Instant) {
        let vip_dark = self.sc.balancer && self.table.is_none();
        for c in &mut self.callers {
            let mut out = Vec::new();
            c.quic.transmit(now, &mut out);
            for d in out {
                if vip_dark {
                    self.lb_dropped += 1;
                    continue;
                }
                let size = d.bytes.len();
                c.path.forward.send(now, d.bytes, size);
            }
        }
        for k in 0..self.servers.len() {
            let mut out = Vec::new();
            self.servers[k].quic.transmit(now, &mut out);
            self.send_from_server(now, &mut out);
        }
    }

    // ---- the callers ----

    fn drain_caller(&mut self, i: usize) {
        let c = &mut self.callers[i];
        let Some(ch) = c.conn else {
            // Not connected yet: the session keeps its outputs until it is.
            return;
        };
        while let Some(out) = c.session.poll_output() {
            match out {
                ClientOutput::Transmit(op) => {
                    if let Some(conn) = c.quic.conn(ch) {
                        conn.apply(op);
                    }
                }
                ClientOutput::ReplyFrame {
                    response_id,
                    pts,
                    payload,
                    ..
                } => {
                    // The "decoder": pcm16 is its own decoding.
                    c.session
                        .push_reply_audio(&response_id, pts, &to_samples(&payload));
                }
                ClientOutput::Event(_) => {}
                ClientOutput::Problem(p) => c.warnings.push(format!("client: {p}")),
                ClientOutput::ResumeRefused { message } => c
                    .warnings
                    .push(format!("client: resume refused: {message}")),
                ClientOutput::TurnStopped { item_id, code } => c
                    .warnings
                    .push(format!("client: server stopped {item_id} (code {code})")),
            }
        }
    }

    fn caller_quic_events(&mut self, i: usize, now: Instant) {
        let Some(ch) = self.callers[i].conn else {
            return;
        };
        loop {
            let c = &mut self.callers[i];
            let Some(conn) = c.quic.conn(ch) else { return };
            let Some(ev) = conn.poll_event(now) else {
                break;
            };
            match ev {
                Event::Connected => self.drain_caller(i),
                Event::Stream(StreamEvent::Opened { dir: Dir::Uni }) => {
                    while let Some(id) = self.callers[i]
                        .quic
                        .conn(ch)
                        .and_then(|c| c.conn.streams().accept(Dir::Uni))
                    {
                        self.caller_read(i, ch, now, id);
                    }
                }
                Event::Stream(StreamEvent::Readable { id }) => self.caller_read(i, ch, now, id),
                // Both cores take the same stream inputs: the server may refuse a turn.
                Event::Stream(StreamEvent::Stopped { id, error_code }) => {
                    let c = &mut self.callers[i];
                    if let Some(Key::Out(n)) = c.quic.conn(ch).and_then(|c| c.key_of(id)) {
                        c.session
                            .handle_stream_stopped(now, OutStream(n), error_code.into_inner());
                        self.drain_caller(i);
                    }
                }
                _ => {}
            }
        }
    }

    fn caller_read(&mut self, i: usize, ch: ConnectionHandle, now: Instant, id: StreamId) {
        let c = &mut self.callers[i];
        let Some(conn) = c.quic.conn(ch) else { return };
        let (data, end) = conn.read(id);
        if conn.control_id() == Some(id) {
            if !data.is_empty() {
                c.session.handle_control(now, &data);
            }
            if let Some(end) = end {
                c.warnings
                    .push(format!("client: control stream ended ({end:?})"));
            }
            self.drain_caller(i);
            return;
        }
        let stream = stream_number(id);
        if !data.is_empty() {
            // The longest silence of the network on the reply, as the receiver sees it.
            if let Some(last) = c.reply_data_at {
                c.max_reply_gap = c.max_reply_gap.max(now - last);
            }
            c.reply_data_at = Some(now);
            c.session.handle_stream_data(now, stream, &data);
            self.drain_caller(i);
        }
        let c = &mut self.callers[i];
        match end {
            Some(End::Fin) => c.session.handle_stream_fin(now, stream),
            Some(End::Reset(code)) => c.session.handle_stream_reset(now, stream, code),
            None => {}
        }
        self.drain_caller(i);
    }

    /// The audio device of caller `i`: one 10 ms quantum.
    fn render(&mut self, i: usize, now: Instant) {
        let c = &mut self.callers[i];
        let mut q = [0i16; QUANTUM];
        let r = c.session.render(now, &mut q);
        if r.audio > 0 && c.first_audio_at.is_none() {
            c.first_audio_at = Some(c.rendered.len());
        }
        c.rendered.extend_from_slice(&q);
        c.played.extend_from_slice(&q[..r.audio]);
        let played_ms = c.session.current_response().map(|r| r.played_ms);
        if let (Some(BlackoutAt::PlayedMs(at)), Some(p)) = (c.plan.blackout, played_ms)
            && p >= at
        {
            black_out(c, now);
        }
        if let (Some(at), Some(p), None) =
            (c.plan.barge_in_at_ms, played_ms, c.interrupted_at_played_ms)
            && p >= at
        {
            // The user talks over the agent.
            c.interrupted_at_played_ms = c.session.interrupt(now);
            c.interrupt_mark = Some(c.rendered.len());
        }
        self.drain_caller(i);
    }

    // ---- the servers ----

    fn drain_server(&mut self, k: usize, ch: ConnectionHandle) {
        let now = self.now;
        let server = &mut self.servers[k];
        let Some(s) = server.sessions.get_mut(&ch) else {
            return;
        };
        let Some(session) = s.session.as_mut() else {
            return;
        };
        while let Some(out) = session.poll_output() {
            match out {
                ServerOutput::Transmit(op) => {
                    if let Some(conn) = server.quic.conn(ch) {
                        conn.apply(op);
                    }
                }
                ServerOutput::TurnAudio {
                    item_id,
                    pts,
                    payload,
                    ..
                } => s.turn_audio.push((item_id, pts, payload)),
                ServerOutput::StartResponse { response_id, .. } => {
                    s.agent = Some(Agent {
                        response_id,
                        pos: 0,
                    });
                    s.next_agent = Some(now);
                }
                ServerOutput::CancelResponse { response_id } => {
                    if s.agent
                        .as_ref()
                        .is_some_and(|a| a.response_id == response_id)
                    {
                        s.agent = None;
                        s.next_agent = None;
                    }
                    s.agent_cancelled = true;
                }
                ServerOutput::Problem(p) => self.warnings.push(format!("server {k}: {p}")),
                ServerOutput::TurnDiscarded { item_id, reason } => self
                    .warnings
                    .push(format!("server {k} discarded {item_id}: {reason}")),
                _ => {}
            }
        }
    }

    fn server_quic_events(&mut self, k: usize, now: Instant) {
        let handles: Vec<ConnectionHandle> = self.servers[k].quic.conns.keys().copied().collect();
        for ch in handles {
            loop {
                let server = &mut self.servers[k];
                let Some(conn) = server.quic.conn(ch) else {
                    break;
                };
                let Some(ev) = conn.poll_event(now) else {
                    break;
                };
                match ev {
                    Event::Stream(StreamEvent::Opened { dir: Dir::Bi }) => {
                        let opened = server
                            .quic
                            .conn(ch)
                            .and_then(|c| c.conn.streams().accept(Dir::Bi));
                        let Some(s) = server.sessions.get_mut(&ch) else {
                            continue;
                        };
                        if s.control.is_none()
                            && let Some(id) = opened
                        {
                            // The control stream opens the session: `session.created` goes out
                            // on it.
                            s.control = Some(id);
                            if let Some(conn) = server.quic.conn(ch) {
                                conn.adopt_control(id);
                            }
                            s.session = Some(ServerSession::new(
                                ServerConfig {
                                    send_ahead: self.sc.lead,
                                    ..ServerConfig::default()
                                },
                                now,
                            ));
                            server.started += 1;
                            if let Some(i) = s.caller {
                                self.callers[i].served_by = Some(k);
                            }
                            self.drain_server(k, ch);
                            self.server_read(k, ch, now, id);
                        }
                    }
                    Event::Stream(StreamEvent::Readable { id }) => self.server_read(k, ch, now, id),
                    Event::Stream(StreamEvent::Stopped { id, error_code }) => {
                        let key = server.quic.conn(ch).and_then(|c| c.key_of(id));
                        if let Some(Key::Out(n)) = key
                            && let Some(session) = server
                                .sessions
                                .get_mut(&ch)
                                .and_then(|s| s.session.as_mut())
                        {
                            session.handle_stream_stopped(
                                now,
                                OutStream(n),
                                error_code.into_inner(),
                            );
                            self.drain_server(k, ch);
                        }
                    }
                    _ => {}
                }
            }
            // User-audio streams are taken once the session exists (until then quinn buffers
            // them).
            let has_session = self.servers[k]
                .sessions
                .get(&ch)
                .is_some_and(|s| s.session.is_some());
            if has_session {
                while let Some(id) = self.servers[k]
                    .quic
                    .conn(ch)
                    .and_then(|c| c.conn.streams().accept(Dir::Uni))
                {
                    self.server_read(k, ch, now, id);
                }
            }
            let server = &mut self.servers[k];
            let rtt = server.quic.conn(ch).map(|c| c.conn.rtt());
            if let (Some(rtt), Some(session)) = (
                rtt,
                server
                    .sessions
                    .get_mut(&ch)
                    .and_then(|s| s.session.as_mut()),
            ) {
                session.handle_rtt(rtt);
            }
        }
    }

    fn server_read(&mut self, k: usize, ch: ConnectionHandle, now: Instant, id: StreamId) {
        let server = &mut self.servers[k];
        let Some(s) = server.sessions.get_mut(&ch) else {
            return;
        };
        let Some(session) = s.session.as_mut() else {
            // Not yet accepted: read once the control stream has opened the session.
            return;
        };
        let Some(conn) = server.quic.conn(ch) else {
            return;
        };
        let (data, end) = conn.read(id);
        if Some(id) == s.control {
            if !data.is_empty() {
                session.handle_control(now, &data);
            }
            if end.is_some() {
                session.handle_control_closed(now);
            }
            self.drain_server(k, ch);
            return;
        }
        let stream = stream_number(id);
        if !data.is_empty() {
            session.handle_stream_data(now, stream, &data);
        }
        match end {
            Some(End::Fin) => session.handle_stream_fin(now, stream),
            Some(End::Reset(code)) => session.handle_stream_reset(now, stream, code),
            None => {}
        }
        self.drain_server(k, ch);
    }

    fn session_timers(&mut self, now: Instant) {
        for i in 0..self.callers.len() {
            let c = &mut self.callers[i];
            if c.started && c.session.poll_timeout().is_some_and(|t| t <= now) {
                c.session.handle_timeout(now);
                self.drain_caller(i);
            }
        }
        for k in 0..self.servers.len() {
            let due: Vec<ConnectionHandle> = self.servers[k]
                .sessions
                .iter_mut()
                .filter_map(|(ch, s)| {
                    let session = s.session.as_mut()?;
                    session.poll_timeout().is_some_and(|t| t <= now).then(|| {
                        session.handle_timeout(now);
                        *ch
                    })
                })
                .collect();
            for ch in due {
                self.drain_server(k, ch);
            }
        }
    }

    /// The fake agents of server `k`: 4x real time, throttled by `wants_agent_audio`.
    fn agent_ticks(&mut self, k: usize, now: Instant) {
        let handles: Vec<ConnectionHandle> = self.servers[k].sessions.keys().copied().collect();
        for ch in handles {
            let Some(s) = self.servers[k].sessions.get_mut(&ch) else {
                continue;
            };
            if s.next_agent.is_none_or(|t| t > now) {
                continue;
            }
            let (Some(session), Some(agent)) = (s.session.as_mut(), s.agent.as_mut()) else {
                s.next_agent = None;
                continue;
            };
            if session.wants_agent_audio() {
                if agent.pos >= self.reply.len() {
                    session.handle_agent_done(now, &agent.response_id);
                    s.agent = None;
                    s.next_agent = None;
                    self.drain_server(k, ch);
                    continue;
                }
                let end = (agent.pos + FRAME).min(self.reply.len());
                let payload = to_bytes(&self.reply[agent.pos..end]);
                session.handle_agent_frame(
                    now,
                    &agent.response_id,
                    payload,
                    (end - agent.pos) as u32,
                );
                agent.pos = end;
            }
            if s.agent.is_some() {
                s.next_agent = Some(now + AGENT_TICK);
            }
            self.drain_server(k, ch);
        }
    }

    // ---- the clock ----

    fn next_event(&mut self) -> Instant {
        let mut next: Vec<Option<Instant>> = Vec::new();
        for c in &mut self.callers {
            if !c.started {
                next.push(Some(self.t0 + Duration::from_millis(c.plan.start_ms)));
                continue;
            }
            next.push(c.quic.poll_timeout());
            next.push(c.path.poll_timeout());
            next.push(c.session.poll_timeout());
            next.push(Some(c.next_render));
            next.push(c.next_capture);
            if let Some(at) = c.plan.migrate_at_ms
                && c.migrated_at.is_none()
            {
                next.push(Some(self.t0 + Duration::from_millis(c.plan.start_ms + at)));
            }
        }
        for s in &mut self.servers {
            next.push(s.quic.poll_timeout());
            for session in s.sessions.values() {
                next.push(
                    session
                        .session
                        .as_ref()
                        .and_then(ServerSession::poll_timeout),
                );
                next.push(session.next_agent);
            }
        }
        next.extend(
            self.events
                .iter()
                .map(|e| Some(self.t0 + Duration::from_millis(event_at(e)))),
        );
        next.push(self.balancer_down_until);
        next.into_iter().flatten().min().unwrap_or(self.now)
    }

    fn done(&self) -> bool {
        self.callers.iter().all(|c| {
            let Some(r) = c.session.responses().last() else {
                return false;
            };
            if c.plan.barge_in_at_ms.is_some() {
                r.interrupt
                    .as_ref()
                    .is_some_and(|i| i.truncated_audio_end_ms.is_some())
                    && r.status.is_some()
                    && c.rendered.len() >= c.interrupt_mark.unwrap_or(usize::MAX) + 50 * QUANTUM
            } else {
                c.session
                    .turns()
                    .first()
                    .is_some_and(|t| t.confirmed_at.is_some())
                    && c.session.playback_done()
                    && r.status.is_some()
            }
        })
    }

    // ---- the outcome ----

    fn summary(&mut self) -> Summary {
        let now = self.now;
        let clients = (0..self.callers.len())
            .map(|i| self.client_summary(i))
            .collect();
        Summary {
            name: self.sc.name.clone(),
            end_ms: self.ms(now),
            clients,
            sessions_per_server: self.servers.iter().map(|s| s.started).collect(),
            lb_dropped: self.lb_dropped,
            warnings: self.warnings.clone(),
        }
    }

    fn client_summary(&mut self, i: usize) -> ClientSummary {
        let t0 = self.t0;
        let ms = |t: Instant| (t - t0).as_millis() as u64;
        let c = &self.callers[i];
        let turn = c.session.turns().first().cloned().unwrap_or_default();
        // What the server that took the call holds of the turn.
        let turn_audio: Vec<&(String, u32, Vec<u8>)> = self
            .servers
            .iter()
            .flat_map(|s| s.sessions.values())
            .filter(|s| s.caller == Some(i))
            .flat_map(|s| s.turn_audio.iter())
            .filter(|(item, _, _)| *item == turn.item_id)
            .collect();
        let received: Vec<u8> = turn_audio
            .iter()
            .flat_map(|(_, _, p)| p.iter().copied())
            .collect();
        // Frames in order, each at the pts right after the previous one.
        let mut pts_ok = true;
        let mut next_pts = 0u64;
        for (_, pts, p) in &turn_audio {
            pts_ok &= u64::from(*pts) == next_pts;
            next_pts += p.len() as u64 / 2;
        }
        let agent_cancelled = self
            .servers
            .iter()
            .flat_map(|s| s.sessions.values())
            .any(|s| s.caller == Some(i) && s.agent_cancelled);
        let r = c.session.responses().last().cloned().unwrap_or_default();
        // From the first quantum with agent audio on, the device output is the reply itself,
        // sample for sample, with no silence inserted anywhere.
        let contiguous = c.first_audio_at.is_some_and(|start| {
            c.rendered.len() >= start + self.reply.len()
                && c.rendered[start..start + self.reply.len()] == self.reply[..]
        });
        let silent_after_interrupt = c
            .interrupt_mark
            .is_some_and(|m| c.rendered[m..].iter().all(|&s| s == 0));
        let (fw, rv) = (*c.path.forward.stats(), *c.path.reverse.stats());
        let conn = c.conn.and_then(|ch| c.quic.conns.get(&ch));
        let quic_lost_server = self
            .servers
            .iter()
            .flat_map(|s| s.quic.conns.iter().map(move |(ch, q)| (s, ch, q)))
            .filter(|(s, ch, _)| s.sessions.get(ch).is_some_and(|x| x.caller == Some(i)))
            .map(|(_, _, q)| q.lost_packets())
            .sum();
        ClientSummary {
            connected_ms: conn.and_then(|q| q.connected).map_or(0, ms),
            served_by: c.served_by,
            prompt_frames_sent: turn.frames_sent,
            prompt_bytes_sent: turn.bytes_sent,
            prompt_audio_ms_sent: turn.audio_ms_sent,
            frames_confirmed: turn.frames_confirmed,
            bytes_confirmed: turn.bytes_confirmed,
            audio_ms_confirmed: turn.audio_ms_confirmed,
            committed_ms: turn.confirmed_at.map(ms),
            prompt_bit_exact: pts_ok && received == to_bytes(&c.prompt),
            prompt_fp: fingerprint(&to_samples(&received)),
            reply_ms: self.reply.len() as u64 * 1000 / u64::from(SAMPLE_RATE),
            first_audio_ms: r.first_audio_at.map(ms),
            played_ms: r.played_ms,
            underruns: r.underruns,
            stall_ms: r.stall_ms,
            played_equals_reply: c.played == self.reply,
            contiguous,
            played_fp: fingerprint(&c.played),
            max_reply_gap_ms: c.max_reply_gap.as_millis() as u64,
            status: r.status,
            agent_cancelled,
            interrupted_at_played_ms: c.interrupted_at_played_ms,
            truncated_audio_end_ms: r.interrupt.as_ref().and_then(|i| i.truncated_audio_end_ms),
            silent_after_interrupt,
            blackout_at_ms: c.blackout_at.map(ms),
            migrated_at_ms: c.migrated_at.map(ms),
            c2s_sent: fw.sent,
            c2s_dropped: fw.dropped.total(),
            s2c_sent: rv.sent,
            s2c_dropped: rv.dropped.total(),
            quic_lost_client: conn.map_or(0, |q| q.lost_packets()),
            quic_lost_server,
            warnings: c.warnings.clone(),
        }
    }
}

fn black_out(c: &mut Caller, now: Instant) {
    if c.blackout_at.is_none() {
        let d = Duration::from_millis(c.plan.blackout_ms);
        c.path.forward.add_blackout(now, d);
        c.path.reverse.add_blackout(now, d);
        c.blackout_at = Some(now);
    }
}

fn event_at(e: &FleetEvent) -> u64 {
    match e {
        FleetEvent::ServerDown { at_ms, .. } | FleetEvent::BalancerRestart { at_ms, .. } => *at_ms,
    }
}
