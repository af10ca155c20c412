//! Deterministic simulation of whole voq/1 sessions over real QUIC state machines on virtual
//! time, with loss and blackouts between the endpoints.
//!
//! `ClientSession` and `ServerSession` talk through two `quinn_proto::Connection`s (TLS 1.3,
//! ALPN `voq/1`, a self-signed certificate), whose datagrams cross a seeded `voq_netem::Path`.
//! There is no socket, no real clock and no runtime: one base `Instant` is read once and every
//! later instant is that base plus a virtual offset. The event loop jumps to the earliest thing
//! that has to happen (a QUIC timer, a packet delivery, a session timer, the 10 ms audio device
//! tick, the fake agent, the microphone), so seconds of call run in milliseconds.
//!
//! What it proves, under loss and blackouts (see the tests at the end):
//! - the user's prompt arrives at the server bit-exact and `input_audio_buffer.committed`
//!   confirms exactly what the client sent;
//! - a 1 s blackout in the middle of a reply is inaudible (no underrun) when the send-ahead lead
//!   covers it *and* QUIC's loss recovery after it, and the played timeline is exactly the reply.
//!   The claim "lead 2 s > blackout + start threshold" is checked as stated and does not hold:
//!   the receiver sees ~2.1 s of network silence for a 1 s two-way blackout (see
//!   `send_ahead_lead_rides_out_a_blackout_mid_reply`);
//! - with strict just-in-time pacing the same blackout underruns;
//! - a barge-in truncates the agent's item exactly where the user stopped hearing it;
//! - the same seeds give the same run.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use quinn_proto::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn_proto::{
    Connection, ConnectionHandle, DatagramEvent, Dir, Endpoint, EndpointConfig, Event, ReadError,
    StreamEvent, VarInt, WriteError,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use voq_netem::{LinkConfig, Path};
use voq_proto::client::{ClientConfig, ClientOutput, ClientSession};
use voq_proto::event::ResponseStatus;
use voq_proto::pacing::Lead;
use voq_proto::server::{ServerConfig, ServerOutput, ServerSession};
use voq_proto::stream::{OutStream, Transmit};
use voq_proto::{Code, SAMPLE_RATE};

/// The audio device's quantum: 10 ms at 24 kHz.
const QUANTUM: usize = 240;
const QUANTUM_DUR: Duration = Duration::from_millis(10);
/// One microphone / agent frame: 20 ms.
const FRAME: usize = 480;
const FRAME_DUR: Duration = Duration::from_millis(20);
/// The fake agent speaks at 4x real time: one 20 ms frame every 5 ms.
const AGENT_TICK: Duration = Duration::from_millis(5);
/// No scenario may take longer than this much virtual time.
const DEADLINE: Duration = Duration::from_secs(60);
/// One-way delay of the simulated path (RTT 60 ms).
const ONE_WAY_MS: f64 = 30.0;

const CLIENT_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 50_000);
const SERVER_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)), 4433);

// ---------------------------------------------------------------------------------------------
// Audio: the real test assets, read at compile time (no file I/O in a sans-IO crate's tests).

static PROMPT_WAV: &[u8] = include_bytes!("../../../testdata/audio/prompt-carwash-24k.wav");
static REPLY_WAV: &[u8] = include_bytes!("../../../testdata/audio/reply-carwash-24k.wav");

/// The samples of a RIFF/WAVE file that must be 24 kHz mono pcm16 (a minimal reader: walks the
/// chunks, checks `fmt `, returns `data`).
fn wav_pcm16(bytes: &[u8]) -> Vec<i16> {
    assert_eq!(&bytes[0..4], b"RIFF");
    assert_eq!(&bytes[8..12], b"WAVE");
    let u16_at = |i: usize| u16::from_le_bytes([bytes[i], bytes[i + 1]]);
    let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap());
    let mut pos = 12;
    let mut format_ok = false;
    while pos + 8 <= bytes.len() {
        let id = &bytes[pos..pos + 4];
        let len = u32_at(pos + 4) as usize;
        let body = pos + 8;
        if id == b"fmt " {
            // format tag 1 (PCM), 1 channel, 24 000 Hz, 16 bits.
            assert_eq!(
                (
                    u16_at(body),
                    u16_at(body + 2),
                    u32_at(body + 4),
                    u16_at(body + 14)
                ),
                (1, 1, SAMPLE_RATE, 16),
                "24 kHz mono pcm16 expected"
            );
            format_ok = true;
        } else if id == b"data" {
            assert!(format_ok, "fmt chunk before data");
            let end = (body + len).min(bytes.len());
            return bytes[body..end]
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]))
                .collect();
        }
        pos = body + len + (len & 1);
    }
    panic!("no data chunk");
}

fn to_bytes(samples: &[i16]) -> Vec<u8> {
    samples.iter().flat_map(|s| s.to_le_bytes()).collect()
}

fn to_samples(bytes: &[u8]) -> Vec<i16> {
    bytes
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect()
}

/// FNV-1a over samples: a compact fingerprint of a timeline for the determinism check.
fn fingerprint(samples: &[i16]) -> u64 {
    samples.iter().fold(0xcbf2_9ce4_8422_2325, |h, s| {
        s.to_le_bytes()
            .iter()
            .fold(h, |h, b| (h ^ *b as u64).wrapping_mul(0x0100_0000_01b3))
    })
}

// ---------------------------------------------------------------------------------------------
// TLS: a self-signed Ed25519 certificate (fixed serial, so every handshake has the same sizes
// run after run: Ed25519 signatures are deterministic and 64 bytes long), ALPN voq/1.

fn quic_configs() -> (quinn_proto::ServerConfig, quinn_proto::ClientConfig) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.serial_number = Some(rcgen::SerialNumber::from(1u64));
    let cert = params.self_signed(&key).unwrap();
    let cert_der: CertificateDer<'static> = cert.der().clone();
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());

    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert_der.clone()], key_der)
        .unwrap();
    server.alpn_protocols = vec![b"voq/1".to_vec()];

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert_der).unwrap();
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![b"voq/1".to_vec()];

    let server = quinn_proto::ServerConfig::with_crypto(Arc::new(
        QuicServerConfig::try_from(server).unwrap(),
    ));
    let client =
        quinn_proto::ClientConfig::new(Arc::new(QuicClientConfig::try_from(client).unwrap()));
    (server, client)
}

fn seed32(seed: u64, side: u8) -> [u8; 32] {
    let mut s = [side; 32];
    s[..8].copy_from_slice(&seed.to_le_bytes());
    s
}

// ---------------------------------------------------------------------------------------------
// The glue between a session's stream commands and a quinn-proto connection.

/// Which of our send streams: the control stream, or one the session named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Control,
    Out(u64),
}

/// A send stream with the bytes quinn has not taken yet (a write may be partial or blocked; the
/// rest is retried on every pass, which covers `Writable`).
#[derive(Debug)]
struct Writer {
    dir: Dir,
    id: Option<quinn_proto::StreamId>,
    buf: VecDeque<u8>,
    fin: bool,
    /// Finished, reset or stopped: nothing more to do.
    closed: bool,
}

impl Writer {
    fn new(dir: Dir, id: Option<quinn_proto::StreamId>) -> Self {
        Self {
            dir,
            id,
            buf: VecDeque::new(),
            fin: false,
            closed: false,
        }
    }
}

/// How a receive stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Fin,
    Reset(u64),
}

/// One side's QUIC endpoint, its one connection, and the send streams the session asked for.
struct Quic {
    endpoint: Endpoint,
    addr: SocketAddr,
    peer: SocketAddr,
    conn: Option<(ConnectionHandle, Connection)>,
    connected: Option<Instant>,
    writers: BTreeMap<Key, Writer>,
    lost: Option<String>,
}

fn sid(id: quinn_proto::StreamId) -> u64 {
    VarInt::from(id).into_inner()
}

fn qid(id: u64) -> quinn_proto::StreamId {
    quinn_proto::StreamId::from(VarInt::from_u64(id).unwrap())
}

fn code(c: Code) -> VarInt {
    VarInt::from_u32(c.to_u32())
}

impl Quic {
    fn new(
        server: Option<quinn_proto::ServerConfig>,
        seed: [u8; 32],
        addr: SocketAddr,
        peer: SocketAddr,
    ) -> Self {
        Self {
            endpoint: Endpoint::new(
                Arc::new(EndpointConfig::default()),
                server.map(Arc::new),
                true,
                Some(seed),
            ),
            addr,
            peer,
            conn: None,
            connected: None,
            writers: BTreeMap::new(),
            lost: None,
        }
    }

    fn conn(&mut self) -> Option<&mut Connection> {
        self.conn.as_mut().map(|(_, c)| c)
    }

    /// A datagram from the network.
    fn receive(&mut self, now: Instant, datagram: Vec<u8>, net: &mut voq_netem::Link<Vec<u8>>) {
        let mut buf = Vec::new();
        let event = self.endpoint.handle(
            now,
            self.peer,
            Some(self.addr.ip()),
            None,
            BytesMut::from(&datagram[..]),
            &mut buf,
        );
        match event {
            Some(DatagramEvent::NewConnection(incoming)) => {
                assert!(self.conn.is_none(), "one connection per endpoint");
                match self.endpoint.accept(incoming, now, &mut buf, None) {
                    Ok((ch, conn)) => self.conn = Some((ch, conn)),
                    Err(e) => panic!("accept failed: {}", e.cause),
                }
            }
            Some(DatagramEvent::ConnectionEvent(ch, event)) => {
                if let Some((h, conn)) = self.conn.as_mut()
                    && *h == ch
                {
                    conn.handle_event(event);
                }
            }
            Some(DatagramEvent::Response(transmit)) => {
                net.send(now, buf[..transmit.size].to_vec(), transmit.size);
            }
            None => {}
        }
        self.endpoint_events();
    }

    fn endpoint_events(&mut self) {
        let Some((ch, conn)) = self.conn.as_mut() else {
            return;
        };
        while let Some(ev) = conn.poll_endpoint_events() {
            if let Some(back) = self.endpoint.handle_event(*ch, ev) {
                conn.handle_event(back);
            }
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        if let Some(conn) = self.conn()
            && conn.poll_timeout().is_some_and(|t| t <= now)
        {
            conn.handle_timeout(now);
        }
        self.endpoint_events();
    }

    /// Opens, writes and finishes what the session asked for, as far as quinn takes it.
    fn flush_writes(&mut self) {
        let Some((_, conn)) = self.conn.as_mut() else {
            return;
        };
        if self.connected.is_none() {
            return;
        }
        for w in self.writers.values_mut() {
            if w.closed {
                continue;
            }
            if w.id.is_none() {
                // Streams are opened in key order (control first, then by session number), so
                // stream ids follow the order the session created them.
                match conn.streams().open(w.dir) {
                    Some(id) => w.id = Some(id),
                    None => continue,
                }
            }
            let Some(id) = w.id else { continue };
            while !w.buf.is_empty() {
                let (head, _) = w.buf.as_slices();
                match conn.send_stream(id).write(head) {
                    Ok(0) | Err(WriteError::Blocked) => break,
                    Ok(n) => {
                        w.buf.drain(..n);
                    }
                    Err(WriteError::Stopped(_) | WriteError::ClosedStream) => {
                        w.buf.clear();
                        w.closed = true;
                    }
                }
            }
            if w.buf.is_empty() && w.fin && !w.closed {
                let _ = conn.send_stream(id).finish();
                w.closed = true;
            }
        }
    }

    /// Datagrams ready to go, onto the network.
    fn transmit(&mut self, now: Instant, net: &mut voq_netem::Link<Vec<u8>>) {
        self.flush_writes();
        let Some((_, conn)) = self.conn.as_mut() else {
            return;
        };
        let mut buf = Vec::new();
        while let Some(t) = conn.poll_transmit(now, 1, &mut buf) {
            assert_eq!(t.destination, self.peer);
            net.send(now, buf[..t.size].to_vec(), t.size);
            buf.clear();
        }
        self.endpoint_events();
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        self.conn()?.poll_timeout()
    }

    fn poll_event(&mut self, now: Instant) -> Option<Event> {
        let ev = self.conn()?.poll()?;
        match &ev {
            Event::Connected => self.connected = Some(now),
            Event::ConnectionLost { reason } => self.lost = Some(reason.to_string()),
            _ => {}
        }
        Some(ev)
    }

    /// Everything readable on `id` now, and how it ended if it did.
    fn read(&mut self, id: quinn_proto::StreamId) -> (Vec<u8>, Option<End>) {
        let mut data = Vec::new();
        let Some(conn) = self.conn() else {
            return (data, None);
        };
        let mut recv = conn.recv_stream(id);
        let Ok(mut chunks) = recv.read(true) else {
            // Stopped by us or already ended: nothing more will come.
            return (data, None);
        };
        let end = loop {
            match chunks.next(usize::MAX) {
                Ok(Some(chunk)) => data.extend_from_slice(&chunk.bytes),
                Ok(None) => break Some(End::Fin),
                Err(ReadError::Blocked) => break None,
                Err(ReadError::Reset(c)) => break Some(End::Reset(c.into_inner())),
            }
        };
        let _ = chunks.finalize();
        (data, end)
    }

    /// Carries out a session's stream operation (either side's: one vocabulary).
    fn apply(&mut self, op: Transmit) {
        match op {
            Transmit::Control(b) => self.write(Key::Control, &b),
            Transmit::Open { stream, bytes } => {
                let mut w = Writer::new(Dir::Uni, None);
                w.buf.extend(bytes);
                self.writers.insert(Key::Out(stream.0), w);
            }
            Transmit::Write { stream, bytes } => self.write(Key::Out(stream.0), &bytes),
            Transmit::Finish { stream } => self.finish(Key::Out(stream.0)),
            Transmit::Reset { stream, code } => self.reset(Key::Out(stream.0), code),
            Transmit::StopSending { stream, code } => self.stop(stream, code),
        }
    }

    fn stop(&mut self, stream: u64, c: Code) {
        if let Some(conn) = self.conn() {
            let _ = conn.recv_stream(qid(stream)).stop(code(c));
        }
    }

    fn write(&mut self, key: Key, bytes: &[u8]) {
        if let Some(w) = self.writers.get_mut(&key)
            && !w.closed
        {
            w.buf.extend(bytes);
        }
    }

    fn finish(&mut self, key: Key) {
        if let Some(w) = self.writers.get_mut(&key) {
            w.fin = true;
        }
    }

    fn reset(&mut self, key: Key, c: Code) {
        let Some(w) = self.writers.get_mut(&key) else {
            return;
        };
        w.buf.clear();
        if w.closed {
            return;
        }
        w.closed = true;
        if let (Some(id), Some((_, conn))) = (w.id, self.conn.as_mut()) {
            let _ = conn.send_stream(id).reset(code(c));
        }
    }

    fn key_of(&self, id: quinn_proto::StreamId) -> Option<Key> {
        self.writers
            .iter()
            .find(|(_, w)| w.id == Some(id))
            .map(|(k, _)| *k)
    }

    fn lost_packets(&mut self) -> u64 {
        self.conn().map_or(0, |c| c.stats().path.lost_packets)
    }
}

// ---------------------------------------------------------------------------------------------
// The simulation.

/// When to black the path out (both directions) for `BLACKOUT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlackoutAt {
    /// This many ms into the call, while the user is speaking the prompt.
    PromptMs(u64),
    /// When the client has played this many ms of the reply.
    PlayedMs(u64),
}

const BLACKOUT: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
struct Scenario {
    name: &'static str,
    seed: u64,
    loss: f64,
    lead: Lead,
    blackout: Option<BlackoutAt>,
    /// Barge in when the client has played this many ms of the reply.
    barge_in_at_ms: Option<u64>,
    /// Length of the agent's reply.
    reply_ms: u64,
}

/// The outcome of one run, compared field by field between two runs of the same seed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Summary {
    name: &'static str,
    end_ms: u64,
    connected_ms: u64,
    // The prompt.
    prompt_frames_sent: u64,
    prompt_bytes_sent: u64,
    prompt_audio_ms_sent: u64,
    frames_confirmed: Option<u64>,
    bytes_confirmed: Option<u64>,
    audio_ms_confirmed: Option<u64>,
    committed_ms: Option<u64>,
    prompt_bit_exact: bool,
    prompt_fp: u64,
    // The reply.
    reply_ms: u64,
    first_audio_ms: Option<u64>,
    played_ms: u64,
    underruns: u32,
    stall_ms: u64,
    played_equals_reply: bool,
    contiguous: bool,
    played_fp: u64,
    /// Longest gap between two arrivals of reply bytes at the client.
    max_reply_gap_ms: u64,
    status: Option<ResponseStatus>,
    agent_cancelled: bool,
    // Barge-in.
    interrupted_at_played_ms: Option<u64>,
    truncated_audio_end_ms: Option<u64>,
    silent_after_interrupt: bool,
    // The network.
    blackout_at_ms: Option<u64>,
    c2s_sent: u64,
    c2s_dropped: u64,
    s2c_sent: u64,
    s2c_dropped: u64,
    quic_lost_client: u64,
    quic_lost_server: u64,
    warnings: Vec<String>,
}

struct Agent {
    response_id: String,
    pos: usize,
}

struct Sim {
    sc: Scenario,
    t0: Instant,
    now: Instant,
    net: Path<Vec<u8>>,
    // Client side.
    client: ClientSession,
    cq: Quic,
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
    // Server side.
    server: Option<ServerSession>,
    sq: Quic,
    server_control: Option<quinn_proto::StreamId>,
    reply: Vec<i16>,
    agent: Option<Agent>,
    next_agent: Option<Instant>,
    agent_cancelled: bool,
    turn_audio: Vec<(String, u32, Vec<u8>)>,
    // Both.
    blackout_at: Option<Instant>,
    warnings: Vec<String>,
}

impl Sim {
    fn new(sc: Scenario) -> Self {
        // The one reading of the real clock: everything after it is virtual.
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let link = LinkConfig {
            delay_ms: ONE_WAY_MS,
            loss: sc.loss,
            ..LinkConfig::default()
        };
        let net = Path::symmetric(link, sc.seed, t0).unwrap();
        let (server_cfg, client_cfg) = quic_configs();
        let mut cq = Quic::new(None, seed32(sc.seed, 1), CLIENT_ADDR, SERVER_ADDR);
        let sq = Quic::new(
            Some(server_cfg),
            seed32(sc.seed, 2),
            SERVER_ADDR,
            CLIENT_ADDR,
        );
        let (ch, conn) = cq
            .endpoint
            .connect(t0, client_cfg, SERVER_ADDR, "localhost")
            .unwrap();
        cq.conn = Some((ch, conn));
        cq.writers.insert(Key::Control, Writer::new(Dir::Bi, None));
        let reply_samples = (sc.reply_ms * SAMPLE_RATE as u64 / 1000) as usize;
        let reply = wav_pcm16(REPLY_WAV)[..reply_samples].to_vec();
        Self {
            client: ClientSession::new(ClientConfig::default(), t0),
            cq,
            prompt: wav_pcm16(PROMPT_WAV),
            captured: 0,
            next_capture: Some(t0),
            next_render: t0,
            rendered: Vec::new(),
            first_audio_at: None,
            played: Vec::new(),
            interrupt_mark: None,
            interrupted_at_played_ms: None,
            reply_data_at: None,
            max_reply_gap: Duration::ZERO,
            server: None,
            sq,
            server_control: None,
            reply,
            agent: None,
            next_agent: None,
            agent_cancelled: false,
            turn_audio: Vec::new(),
            blackout_at: None,
            warnings: Vec::new(),
            sc,
            t0,
            now: t0,
            net,
        }
    }

    fn ms(&self, t: Instant) -> u64 {
        (t - self.t0).as_millis() as u64
    }

    // ---- draining the sessions (after every input) ----

    fn drain_client(&mut self) {
        while let Some(out) = self.client.poll_output() {
            match out {
                ClientOutput::Transmit(op) => self.cq.apply(op),
                ClientOutput::ReplyFrame {
                    response_id,
                    pts,
                    payload,
                    ..
                } => {
                    // The "decoder": pcm16 is its own decoding.
                    self.client
                        .push_reply_audio(&response_id, pts, &to_samples(&payload));
                }
                // The session keeps what the tests check (turns, responses, interrupts).
                ClientOutput::Event(_) => {}
                ClientOutput::Problem(p) => self.warnings.push(format!("client: {p}")),
                ClientOutput::TurnStopped { item_id, code } => self
                    .warnings
                    .push(format!("client: server stopped {item_id} (code {code})")),
            }
        }
    }

    fn drain_server(&mut self) {
        let Some(server) = self.server.as_mut() else {
            return;
        };
        while let Some(out) = server.poll_output() {
            match &out {
                ServerOutput::Transmit(op) => self.sq.apply(op.clone()),
                ServerOutput::TurnAudio {
                    item_id,
                    pts,
                    payload,
                    ..
                } => self
                    .turn_audio
                    .push((item_id.clone(), *pts, payload.clone())),
                ServerOutput::StartResponse { response_id, .. } => {
                    self.agent = Some(Agent {
                        response_id: response_id.clone(),
                        pos: 0,
                    });
                    self.next_agent = Some(self.now);
                }
                ServerOutput::CancelResponse { response_id } => {
                    if self
                        .agent
                        .as_ref()
                        .is_some_and(|a| &a.response_id == response_id)
                    {
                        self.agent = None;
                        self.next_agent = None;
                    }
                    self.agent_cancelled = true;
                }
                ServerOutput::Problem(p) => self.warnings.push(format!("server: {p}")),
                ServerOutput::TurnDiscarded { item_id, reason } => self
                    .warnings
                    .push(format!("server discarded {item_id}: {reason}")),
                _ => {}
            }
        }
    }

    // ---- one instant ----

    fn step(&mut self) {
        let now = self.now;
        self.microphone(now);
        self.deliver(now);
        self.cq.handle_timeout(now);
        self.sq.handle_timeout(now);
        self.client_quic_events(now);
        self.server_quic_events(now);
        self.session_timers(now);
        if self.next_render <= now {
            self.render(now);
            self.next_render += QUANTUM_DUR;
        }
        if self.next_agent.is_some_and(|t| t <= now) {
            self.agent_tick(now);
        }
        self.cq.transmit(now, &mut self.net.forward);
        self.sq.transmit(now, &mut self.net.reverse);
    }

    /// The user speaks the prompt in real time, one 20 ms frame every 20 ms, from the moment the
    /// call starts (before the connection is up: the session queues it).
    fn microphone(&mut self, now: Instant) {
        if self.next_capture.is_none_or(|t| t > now) {
            return;
        }
        let start = self.captured * FRAME;
        let end = (start + FRAME).min(self.prompt.len());
        let payload = to_bytes(&self.prompt[start..end]);
        self.client
            .send_audio(now, &payload, (end - start) as u32)
            .unwrap();
        self.drain_client();
        self.captured += 1;
        if end == self.prompt.len() {
            self.client.end_turn(now);
            self.drain_client();
            self.next_capture = None;
        } else {
            self.next_capture = Some(now + FRAME_DUR);
        }
        if let Some(BlackoutAt::PromptMs(at)) = self.sc.blackout
            && self.ms(now) >= at
        {
            self.black_out(now);
        }
    }

    fn black_out(&mut self, now: Instant) {
        if self.blackout_at.is_none() {
            self.net.forward.add_blackout(now, BLACKOUT);
            self.net.reverse.add_blackout(now, BLACKOUT);
            self.blackout_at = Some(now);
        }
    }

    fn deliver(&mut self, now: Instant) {
        while let Some(d) = self.net.forward.poll_deliver(now) {
            self.sq.receive(now, d, &mut self.net.reverse);
        }
        while let Some(d) = self.net.reverse.poll_deliver(now) {
            self.cq.receive(now, d, &mut self.net.forward);
        }
    }

    fn client_quic_events(&mut self, now: Instant) {
        while let Some(ev) = self.cq.poll_event(now) {
            match ev {
                Event::Stream(StreamEvent::Opened { dir: Dir::Uni }) => {
                    while let Some(id) = self.cq.conn().and_then(|c| c.streams().accept(Dir::Uni)) {
                        self.client_read(now, id);
                    }
                }
                Event::Stream(StreamEvent::Readable { id }) => self.client_read(now, id),
                // Both cores take the same stream inputs: the server may refuse a turn.
                Event::Stream(StreamEvent::Stopped { id, error_code }) => {
                    if let Some(Key::Out(n)) = self.cq.key_of(id) {
                        self.client.handle_stream_stopped(
                            now,
                            OutStream(n),
                            error_code.into_inner(),
                        );
                        self.drain_client();
                    }
                }
                _ => {}
            }
        }
    }

    fn client_read(&mut self, now: Instant, id: quinn_proto::StreamId) {
        let (data, end) = self.cq.read(id);
        let control = self.cq.writers.get(&Key::Control).and_then(|w| w.id) == Some(id);
        if control {
            if !data.is_empty() {
                self.client.handle_control(now, &data);
                self.drain_client();
            }
            if let Some(end) = end {
                self.warnings
                    .push(format!("client: control stream ended ({end:?})"));
            }
            return;
        }
        let stream = sid(id);
        if !data.is_empty() {
            // The longest silence of the network on the reply, as the receiver sees it.
            if let Some(last) = self.reply_data_at {
                self.max_reply_gap = self.max_reply_gap.max(now - last);
            }
            self.reply_data_at = Some(now);
            self.client.handle_stream_data(now, stream, &data);
            self.drain_client();
        }
        match end {
            Some(End::Fin) => self.client.handle_stream_fin(now, stream),
            Some(End::Reset(c)) => self.client.handle_stream_reset(now, stream, c),
            None => {}
        }
        self.drain_client();
    }

    fn server_quic_events(&mut self, now: Instant) {
        while let Some(ev) = self.sq.poll_event(now) {
            match ev {
                Event::Stream(StreamEvent::Opened { dir: Dir::Bi }) => {
                    if self.server_control.is_none()
                        && let Some(id) = self.sq.conn().and_then(|c| c.streams().accept(Dir::Bi))
                    {
                        // The control stream opens the session: `session.created` goes out on it.
                        self.server_control = Some(id);
                        self.sq
                            .writers
                            .insert(Key::Control, Writer::new(Dir::Bi, Some(id)));
                        self.server = Some(ServerSession::new(
                            ServerConfig {
                                send_ahead: self.sc.lead,
                                ..ServerConfig::default()
                            },
                            now,
                        ));
                        self.drain_server();
                        self.server_read(now, id);
                    }
                }
                Event::Stream(StreamEvent::Readable { id }) => self.server_read(now, id),
                Event::Stream(StreamEvent::Stopped { id, error_code }) => {
                    if let Some(Key::Out(n)) = self.sq.key_of(id)
                        && let Some(server) = self.server.as_mut()
                    {
                        server.handle_stream_stopped(now, OutStream(n), error_code.into_inner());
                        self.drain_server();
                    }
                }
                _ => {}
            }
        }
        // User-audio streams are taken once the session exists (until then quinn buffers them).
        if self.server.is_some() {
            while let Some(id) = self.sq.conn().and_then(|c| c.streams().accept(Dir::Uni)) {
                self.server_read(now, id);
            }
        }
        if let (Some(server), Some(conn)) = (self.server.as_mut(), self.sq.conn()) {
            server.handle_rtt(conn.rtt());
        }
    }

    fn server_read(&mut self, now: Instant, id: quinn_proto::StreamId) {
        let Some(server) = self.server.as_mut() else {
            // Not yet accepted: read once the control stream has opened the session.
            return;
        };
        let (data, end) = self.sq.read(id);
        if Some(id) == self.server_control {
            if !data.is_empty() {
                server.handle_control(now, &data);
            }
            if end.is_some() {
                server.handle_control_closed(now);
            }
            self.drain_server();
            return;
        }
        let stream = sid(id);
        if !data.is_empty() {
            server.handle_stream_data(now, stream, &data);
            self.drain_server();
        }
        let Some(server) = self.server.as_mut() else {
            return;
        };
        match end {
            Some(End::Fin) => server.handle_stream_fin(now, stream),
            Some(End::Reset(c)) => server.handle_stream_reset(now, stream, c),
            None => {}
        }
        self.drain_server();
    }

    fn session_timers(&mut self, now: Instant) {
        if self.client.poll_timeout().is_some_and(|t| t <= now) {
            self.client.handle_timeout(now);
            self.drain_client();
        }
        if let Some(server) = self.server.as_mut()
            && server.poll_timeout().is_some_and(|t| t <= now)
        {
            server.handle_timeout(now);
            self.drain_server();
        }
    }

    /// The audio device: one 10 ms quantum.
    fn render(&mut self, now: Instant) {
        let mut q = [0i16; QUANTUM];
        let r = self.client.render(now, &mut q);
        self.drain_client();
        if r.audio > 0 && self.first_audio_at.is_none() {
            self.first_audio_at = Some(self.rendered.len());
        }
        self.rendered.extend_from_slice(&q);
        self.played.extend_from_slice(&q[..r.audio]);
        let played_ms = self.client.current_response().map(|r| r.played_ms);
        if let (Some(BlackoutAt::PlayedMs(at)), Some(p)) = (self.sc.blackout, played_ms)
            && p >= at
        {
            self.black_out(now);
        }
        if let (Some(at), Some(p), None) = (
            self.sc.barge_in_at_ms,
            played_ms,
            self.interrupted_at_played_ms,
        ) && p >= at
        {
            // The user talks over the agent.
            self.interrupted_at_played_ms = self.client.interrupt(now);
            self.interrupt_mark = Some(self.rendered.len());
            self.drain_client();
        }
    }

    /// The fake agent: 4x real time, throttled by `wants_agent_audio`.
    fn agent_tick(&mut self, now: Instant) {
        let (Some(server), Some(agent)) = (self.server.as_mut(), self.agent.as_mut()) else {
            self.next_agent = None;
            return;
        };
        if server.wants_agent_audio() {
            if agent.pos >= self.reply.len() {
                server.handle_agent_done(now, &agent.response_id);
                self.agent = None;
                self.next_agent = None;
                self.drain_server();
                return;
            }
            let end = (agent.pos + FRAME).min(self.reply.len());
            let payload = to_bytes(&self.reply[agent.pos..end]);
            server.handle_agent_frame(now, &agent.response_id, payload, (end - agent.pos) as u32);
            agent.pos = end;
            self.drain_server();
        }
        if self.agent.is_some() {
            self.next_agent = Some(now + AGENT_TICK);
        }
    }

    fn next_event(&mut self) -> Instant {
        let server_timer = self.server.as_ref().and_then(|s| s.poll_timeout());
        [
            self.cq.poll_timeout(),
            self.sq.poll_timeout(),
            self.net.poll_timeout(),
            self.client.poll_timeout(),
            server_timer,
            Some(self.next_render),
            self.next_agent,
            self.next_capture,
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap()
    }

    fn done(&self) -> bool {
        let Some(r) = self.client.responses().last() else {
            return false;
        };
        if self.sc.barge_in_at_ms.is_some() {
            r.interrupt
                .as_ref()
                .is_some_and(|i| i.truncated_audio_end_ms.is_some())
                && r.status.is_some()
                && self.rendered.len() >= self.interrupt_mark.unwrap_or(usize::MAX) + 50 * QUANTUM
        } else {
            self.client
                .turns()
                .first()
                .is_some_and(|t| t.confirmed_at.is_some())
                && self.client.playback_done()
                && r.status.is_some()
        }
    }

    /// Runs the call to its end (or fails at the virtual deadline).
    fn run(mut self) -> (Summary, Self) {
        let deadline = self.t0 + DEADLINE;
        let mut same_instant = 0;
        loop {
            self.step();
            assert!(
                self.cq.lost.is_none(),
                "client connection lost: {:?}",
                self.cq.lost
            );
            assert!(
                self.sq.lost.is_none(),
                "server connection lost: {:?}",
                self.sq.lost
            );
            if self.done() {
                break;
            }
            let next = self.next_event().max(self.now);
            assert!(
                next <= deadline,
                "{}: not done after {DEADLINE:?} of virtual time",
                self.sc.name
            );
            if next == self.now {
                same_instant += 1;
                assert!(same_instant < 10_000, "stuck at {} ms", self.ms(self.now));
            } else {
                same_instant = 0;
            }
            self.now = next;
        }
        (self.summary(), self)
    }

    fn summary(&mut self) -> Summary {
        let turn = self.client.turns().first().cloned().unwrap_or_default();
        let received: Vec<u8> = self
            .turn_audio
            .iter()
            .filter(|(item, _, _)| *item == turn.item_id)
            .flat_map(|(_, _, p)| p.iter().copied())
            .collect();
        // Frames in order, each at the pts right after the previous one.
        let mut pts_ok = true;
        let mut next_pts = 0u64;
        for (_, pts, p) in self
            .turn_audio
            .iter()
            .filter(|(i, _, _)| *i == turn.item_id)
        {
            pts_ok &= *pts as u64 == next_pts;
            next_pts += p.len() as u64 / 2;
        }
        let r = self.client.responses().last().cloned().unwrap_or_default();
        // From the first quantum with agent audio on, the device output is the reply itself,
        // sample for sample, with no silence inserted anywhere.
        let contiguous = self.first_audio_at.is_some_and(|start| {
            self.rendered.len() >= start + self.reply.len()
                && self.rendered[start..start + self.reply.len()] == self.reply[..]
        });
        let silent_after_interrupt = self
            .interrupt_mark
            .is_some_and(|m| self.rendered[m..].iter().all(|&s| s == 0));
        let (fw, rv) = (*self.net.forward.stats(), *self.net.reverse.stats());
        Summary {
            name: self.sc.name,
            end_ms: self.ms(self.now),
            connected_ms: self.cq.connected.map_or(0, |t| self.ms(t)),
            prompt_frames_sent: turn.frames_sent,
            prompt_bytes_sent: turn.bytes_sent,
            prompt_audio_ms_sent: turn.audio_ms_sent,
            frames_confirmed: turn.frames_confirmed,
            bytes_confirmed: turn.bytes_confirmed,
            audio_ms_confirmed: turn.audio_ms_confirmed,
            committed_ms: turn.confirmed_at.map(|t| self.ms(t)),
            prompt_bit_exact: pts_ok && received == to_bytes(&self.prompt),
            prompt_fp: fingerprint(&to_samples(&received)),
            reply_ms: self.sc.reply_ms,
            first_audio_ms: r.first_audio_at.map(|t| self.ms(t)),
            played_ms: r.played_ms,
            underruns: r.underruns,
            stall_ms: r.stall_ms,
            played_equals_reply: self.played == self.reply,
            contiguous,
            played_fp: fingerprint(&self.played),
            max_reply_gap_ms: self.max_reply_gap.as_millis() as u64,
            status: r.status,
            agent_cancelled: self.agent_cancelled,
            interrupted_at_played_ms: self.interrupted_at_played_ms,
            truncated_audio_end_ms: r.interrupt.as_ref().and_then(|i| i.truncated_audio_end_ms),
            silent_after_interrupt,
            blackout_at_ms: self.blackout_at.map(|t| self.ms(t)),
            c2s_sent: fw.sent,
            c2s_dropped: fw.dropped.total(),
            s2c_sent: rv.sent,
            s2c_dropped: rv.dropped.total(),
            quic_lost_client: self.cq.lost_packets(),
            quic_lost_server: self.sq.lost_packets(),
            warnings: self.warnings.clone(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Scenarios and tests.

fn prompt_under_loss() -> Scenario {
    Scenario {
        name: "prompt, 10% loss",
        seed: 1,
        loss: 0.10,
        lead: Lead::from_ms(2000),
        blackout: None,
        barge_in_at_ms: None,
        reply_ms: 2000,
    }
}

fn prompt_blackout() -> Scenario {
    Scenario {
        name: "prompt, 1 s blackout",
        seed: 2,
        loss: 0.0,
        lead: Lead::from_ms(2000),
        // One second into the user's turn (which starts with the call).
        blackout: Some(BlackoutAt::PromptMs(1000)),
        barge_in_at_ms: None,
        reply_ms: 2000,
    }
}

fn reply_blackout(lead: Lead) -> Scenario {
    Scenario {
        name: match lead.as_ms() {
            0 => "reply, 1 s blackout, lead 0",
            2000 => "reply, 1 s blackout, lead 2 s",
            2500 => "reply, 1 s blackout, lead 2.5 s",
            _ => "reply, 1 s blackout, other lead",
        },
        seed: 3,
        loss: 0.0,
        lead,
        blackout: Some(BlackoutAt::PlayedMs(3000)),
        barge_in_at_ms: None,
        reply_ms: 8000,
    }
}

fn barge_in_under_loss() -> Scenario {
    Scenario {
        name: "barge-in, 5% loss",
        seed: 4,
        loss: 0.05,
        lead: Lead::from_ms(2000),
        blackout: None,
        barge_in_at_ms: Some(1500),
        reply_ms: 8000,
    }
}

fn all_scenarios() -> Vec<Scenario> {
    vec![
        prompt_under_loss(),
        prompt_blackout(),
        reply_blackout(Lead::from_ms(2000)),
        reply_blackout(Lead::from_ms(2500)),
        reply_blackout(Lead::JustInTime),
        barge_in_under_loss(),
    ]
}

fn run(sc: Scenario) -> Summary {
    Sim::new(sc).run().0
}

fn table(rows: &[Summary]) {
    let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    eprintln!(
        "{:<31} {:>6} {:>7} {:>6} {:>6} {:>5} {:>5} {:>5} {:>9} {:>5} {:>5} {:>7} {:>7} {:>5} {:>6}",
        "scenario",
        "end_ms",
        "frames",
        "commit",
        "played",
        "under",
        "stall",
        "exact",
        "status",
        "barge",
        "trunc",
        "c2s_drop",
        "s2c_drop",
        "gap",
        "b/out"
    );
    for s in rows {
        let exact = match (s.interrupted_at_played_ms, s.played_equals_reply) {
            (Some(_), _) => "-",
            (None, true) => "yes",
            (None, false) => "NO",
        };
        eprintln!(
            "{:<31} {:>6} {:>7} {:>6} {:>6} {:>5} {:>5} {:>5} {:>9} {:>5} {:>5} {:>7} {:>7} {:>5} {:>6}",
            s.name,
            s.end_ms,
            format!("{}/{}", opt(s.frames_confirmed), s.prompt_frames_sent),
            opt(s.committed_ms),
            s.played_ms,
            s.underruns,
            s.stall_ms,
            exact,
            s.status.map_or("-", |s| s.as_str()),
            opt(s.interrupted_at_played_ms),
            opt(s.truncated_audio_end_ms),
            format!("{}/{}", s.c2s_dropped, s.c2s_sent),
            format!("{}/{}", s.s2c_dropped, s.s2c_sent),
            s.max_reply_gap_ms,
            opt(s.blackout_at_ms),
        );
    }
    eprintln!(
        "(times in virtual ms; frames = confirmed/sent; gap = longest gap between reply bytes \
         arriving at the client; b/out = blackout start)"
    );
}

/// The prompt arrived bit-exact and the server confirmed exactly what the client sent.
fn assert_prompt_confirmed(s: &Summary) {
    assert!(s.prompt_bit_exact, "{}: prompt not bit-exact", s.name);
    assert_eq!(
        s.prompt_frames_sent, 139,
        "2.765 s of prompt in 20 ms frames"
    );
    assert_eq!(s.frames_confirmed, Some(s.prompt_frames_sent), "{}", s.name);
    assert_eq!(s.bytes_confirmed, Some(s.prompt_bytes_sent), "{}", s.name);
    assert_eq!(
        s.audio_ms_confirmed,
        Some(s.prompt_audio_ms_sent),
        "{}",
        s.name
    );
    assert_eq!(s.prompt_bytes_sent, 66_359 * 2);
}

fn assert_clean(s: &Summary) {
    assert!(
        s.warnings.is_empty(),
        "{}: warnings {:?}",
        s.name,
        s.warnings
    );
    assert!(s.end_ms < DEADLINE.as_millis() as u64);
}

#[test]
fn prompt_arrives_bit_exact_under_10_percent_loss() {
    let s = run(prompt_under_loss());
    table(std::slice::from_ref(&s));
    assert_prompt_confirmed(&s);
    assert!(s.c2s_dropped > 0 && s.s2c_dropped > 0, "loss was applied");
    // The reply after it completes and plays exactly (no sample skipped or repeated).
    assert_eq!(s.status, Some(ResponseStatus::Completed));
    assert!(s.played_equals_reply);
    assert_eq!(s.played_ms, s.reply_ms);
    assert_clean(&s);
}

#[test]
fn prompt_arrives_bit_exact_through_a_blackout_during_the_turn() {
    let s = run(prompt_blackout());
    table(std::slice::from_ref(&s));
    assert_eq!(s.blackout_at_ms, Some(1000));
    assert!(s.c2s_dropped > 0, "the blackout dropped packets");
    assert_prompt_confirmed(&s);
    assert_eq!(s.status, Some(ResponseStatus::Completed));
    assert!(s.played_equals_reply);
    assert_clean(&s);
}

/// The claim as stated: the lead (2 s) exceeds the blackout (1 s) plus the start threshold
/// (100 ms), so the blackout should be inaudible. Over real QUIC the receiver's gap is the
/// blackout plus loss recovery: the first ACK after a two-way blackout carries a ~1 s RTT sample,
/// which inflates RTTVAR and pushes the next probe timeout ~1.2 s past the last probe, so the
/// reply stream is silent for ~2.1 s (see `gap` in the table). Kept as specified: it fails until
/// the default lead or the claim changes.
/// The default 2 s lead and a 1 s blackout both ways, mid-reply. Over real QUIC the client
/// hears nothing for ~2.1 s, not 1 s: after the blackout the first ACK yields a ~1 s RTT sample
/// (RFC 9002), which inflates the probe timeout while the congestion window is still full of
/// packets not yet declared lost. So 2 s − 100 ms of buffer does not quite cover it: one short
/// stall, where just-in-time pacing stalls for the whole outage (next test). This pins the
/// measured behaviour (150 ms); `a_lead_covering_quic_recovery_rides_out_the_blackout` shows
/// the lead that makes it inaudible.
#[test]
fn the_default_lead_turns_a_blackout_into_one_short_stall() {
    let s = run(reply_blackout(Lead::from_ms(2000)));
    table(std::slice::from_ref(&s));
    assert!(
        s.blackout_at_ms.is_some(),
        "the blackout hit during the reply"
    );
    assert!(s.s2c_dropped > 0);
    assert!(
        s.max_reply_gap_ms >= 1900,
        "network silence incl. recovery: {} ms",
        s.max_reply_gap_ms
    );
    assert_prompt_confirmed(&s);
    assert_eq!(s.status, Some(ResponseStatus::Completed));
    assert_eq!(s.played_ms, 8000);
    assert!(s.played_equals_reply, "the played audio is the reply");
    assert_clean(&s);
    assert!(s.underruns <= 1, "{} underruns", s.underruns);
    assert!(
        s.stall_ms <= 300,
        "stalled {} ms of a {} ms outage",
        s.stall_ms,
        s.max_reply_gap_ms
    );
}

/// The same blackout with a lead that covers it *and* QUIC's recovery after it (~2.1 s of
/// network silence at the client, plus the 100 ms start threshold): inaudible, and the device
/// plays the reply as one contiguous timeline.
#[test]
fn a_lead_covering_quic_recovery_rides_out_the_blackout() {
    let s = run(reply_blackout(Lead::from_ms(2500)));
    table(std::slice::from_ref(&s));
    assert!(
        s.blackout_at_ms.is_some(),
        "the blackout hit during the reply"
    );
    assert!(
        s.max_reply_gap_ms >= 1000,
        "the blackout silenced the network"
    );
    assert_prompt_confirmed(&s);
    assert_eq!(s.status, Some(ResponseStatus::Completed));
    assert_eq!(s.underruns, 0, "inaudible");
    assert_eq!(s.stall_ms, 0);
    assert_eq!(s.played_ms, 8000);
    assert!(s.played_equals_reply, "the played audio is the reply");
    assert!(s.contiguous, "and it played as one contiguous timeline");
    assert_clean(&s);
}

#[test]
fn just_in_time_pacing_underruns_in_the_same_blackout() {
    let s = run(reply_blackout(Lead::JustInTime));
    table(std::slice::from_ref(&s));
    assert!(s.blackout_at_ms.is_some());
    assert!(s.underruns > 0, "without a lead the blackout is heard");
    assert!(s.stall_ms > 0);
    // Even stalled, nothing is skipped or repeated.
    assert_eq!(s.status, Some(ResponseStatus::Completed));
    assert!(s.played_equals_reply);
    assert_clean(&s);
}

#[test]
fn barge_in_under_loss_truncates_exactly_at_the_played_position() {
    let s = run(barge_in_under_loss());
    table(std::slice::from_ref(&s));
    assert_prompt_confirmed(&s);
    let played = s.interrupted_at_played_ms.unwrap();
    assert!(played >= 1500);
    assert_eq!(s.truncated_audio_end_ms, Some(played));
    assert_eq!(s.played_ms, played);
    assert!(s.silent_after_interrupt, "silent from the next quantum on");
    assert_eq!(s.status, Some(ResponseStatus::Cancelled));
    assert!(s.agent_cancelled, "the agent was stopped");
    assert!(s.c2s_dropped > 0 && s.s2c_dropped > 0);
    assert_clean(&s);
}

#[test]
fn same_seed_same_run() {
    let first: Vec<Summary> = all_scenarios().into_iter().map(run).collect();
    let second: Vec<Summary> = all_scenarios().into_iter().map(run).collect();
    table(&first);
    assert_eq!(first, second);
}
