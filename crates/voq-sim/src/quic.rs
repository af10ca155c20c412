//! The glue between the sessions' stream operations ([`Transmit`]) and quinn-proto: one QUIC
//! endpoint per simulated host, each with its connections and the send streams its sessions
//! asked for.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use quinn_proto::{
    Connection, ConnectionHandle, DatagramEvent, Dir, Endpoint, EndpointConfig, Event, ReadError,
    StreamId, VarInt, WriteError,
};
use voq_proto::Code;
use voq_proto::stream::Transmit;

/// Which of a connection's send streams: the control stream, or one its session named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Key {
    Control,
    Out(u64),
}

/// A send stream with the bytes quinn has not taken yet (a write may be partial or blocked; the
/// rest is retried on every pass, which covers `Writable`).
#[derive(Debug)]
struct Writer {
    dir: Dir,
    id: Option<StreamId>,
    buf: VecDeque<u8>,
    fin: bool,
    /// Finished, reset or stopped: nothing more to do.
    closed: bool,
}

impl Writer {
    fn new(dir: Dir, id: Option<StreamId>) -> Self {
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
pub(crate) enum End {
    Fin,
    Reset(u64),
}

/// One connection of an endpoint and its send streams.
pub(crate) struct QuicConn {
    pub(crate) conn: Connection,
    pub(crate) connected: Option<Instant>,
    pub(crate) lost: Option<String>,
    writers: BTreeMap<Key, Writer>,
}

/// A datagram leaving a host.
pub(crate) struct Datagram {
    pub(crate) to: SocketAddr,
    pub(crate) bytes: Vec<u8>,
}

/// One host's QUIC endpoint and its connections.
pub(crate) struct QuicNode {
    endpoint: Endpoint,
    pub(crate) addr: SocketAddr,
    pub(crate) conns: BTreeMap<ConnectionHandle, QuicConn>,
}

pub(crate) fn stream_number(id: StreamId) -> u64 {
    VarInt::from(id).into_inner()
}

fn stream_id(n: u64) -> Option<StreamId> {
    VarInt::from_u64(n).ok().map(StreamId::from)
}

fn code(c: Code) -> VarInt {
    VarInt::from_u32(c.to_u32())
}

impl QuicNode {
    pub(crate) fn new(
        config: EndpointConfig,
        server: Option<quinn_proto::ServerConfig>,
        seed: [u8; 32],
        addr: SocketAddr,
    ) -> Self {
        Self {
            endpoint: Endpoint::new(Arc::new(config), server.map(Arc::new), true, Some(seed)),
            addr,
            conns: BTreeMap::new(),
        }
    }

    /// Opens a connection to `remote` with the control stream queued as its first stream.
    pub(crate) fn connect(
        &mut self,
        now: Instant,
        config: quinn_proto::ClientConfig,
        remote: SocketAddr,
    ) -> Result<ConnectionHandle, quinn_proto::ConnectError> {
        let (ch, conn) = self.endpoint.connect(now, config, remote, "localhost")?;
        let mut c = QuicConn {
            conn,
            connected: None,
            lost: None,
            writers: BTreeMap::new(),
        };
        c.writers.insert(Key::Control, Writer::new(Dir::Bi, None));
        self.conns.insert(ch, c);
        Ok(ch)
    }

    /// A datagram from the network, from `remote`. Returns a connection this datagram created
    /// (a server accepting a client), and what the endpoint answers on its own (a stateless
    /// reset, a version negotiation).
    pub(crate) fn receive(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        datagram: &[u8],
        out: &mut Vec<Datagram>,
    ) -> Option<ConnectionHandle> {
        let mut buf = Vec::new();
        let event = self.endpoint.handle(
            now,
            remote,
            Some(self.addr.ip()),
            None,
            BytesMut::from(datagram),
            &mut buf,
        );
        let mut created = None;
        match event {
            Some(DatagramEvent::NewConnection(incoming)) => {
                match self.endpoint.accept(incoming, now, &mut buf, None) {
                    Ok((ch, conn)) => {
                        self.conns.insert(
                            ch,
                            QuicConn {
                                conn,
                                connected: None,
                                lost: None,
                                writers: BTreeMap::new(),
                            },
                        );
                        created = Some(ch);
                    }
                    Err(e) => {
                        if let Some(t) = e.response {
                            out.push(Datagram {
                                to: t.destination,
                                bytes: buf[..t.size].to_vec(),
                            });
                        }
                    }
                }
            }
            Some(DatagramEvent::ConnectionEvent(ch, event)) => {
                if let Some(c) = self.conns.get_mut(&ch) {
                    c.conn.handle_event(event);
                }
            }
            Some(DatagramEvent::Response(t)) => out.push(Datagram {
                to: t.destination,
                bytes: buf[..t.size].to_vec(),
            }),
            None => {}
        }
        self.endpoint_events();
        created
    }

    fn endpoint_events(&mut self) {
        for (ch, c) in &mut self.conns {
            while let Some(ev) = c.conn.poll_endpoint_events() {
                if let Some(back) = self.endpoint.handle_event(*ch, ev) {
                    c.conn.handle_event(back);
                }
            }
        }
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        for c in self.conns.values_mut() {
            if c.conn.poll_timeout().is_some_and(|t| t <= now) {
                c.conn.handle_timeout(now);
            }
        }
        self.endpoint_events();
    }

    /// Datagrams ready to go, after writing what the sessions queued as far as quinn takes it.
    pub(crate) fn transmit(&mut self, now: Instant, out: &mut Vec<Datagram>) {
        for c in self.conns.values_mut() {
            c.flush_writes();
            let mut buf = Vec::new();
            while let Some(t) = c.conn.poll_transmit(now, 1, &mut buf) {
                out.push(Datagram {
                    to: t.destination,
                    bytes: buf[..t.size].to_vec(),
                });
                buf.clear();
            }
        }
        self.endpoint_events();
    }

    pub(crate) fn poll_timeout(&mut self) -> Option<Instant> {
        self.conns
            .values_mut()
            .filter_map(|c| c.conn.poll_timeout())
            .min()
    }

    pub(crate) fn conn(&mut self, ch: ConnectionHandle) -> Option<&mut QuicConn> {
        self.conns.get_mut(&ch)
    }
}

impl QuicConn {
    pub(crate) fn poll_event(&mut self, now: Instant) -> Option<Event> {
        let ev = self.conn.poll()?;
        match &ev {
            Event::Connected => self.connected = Some(now),
            Event::ConnectionLost { reason } => self.lost = Some(reason.to_string()),
            _ => {}
        }
        Some(ev)
    }

    /// Makes `id` (a stream the peer opened) this side's control stream for writing.
    pub(crate) fn adopt_control(&mut self, id: StreamId) {
        self.writers
            .insert(Key::Control, Writer::new(Dir::Bi, Some(id)));
    }

    /// The control stream's id, once open.
    pub(crate) fn control_id(&self) -> Option<StreamId> {
        self.writers.get(&Key::Control).and_then(|w| w.id)
    }

    /// Opens, writes and finishes what the session asked for, as far as quinn takes it.
    fn flush_writes(&mut self) {
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
                match self.conn.streams().open(w.dir) {
                    Some(id) => w.id = Some(id),
                    None => continue,
                }
            }
            let Some(id) = w.id else { continue };
            while !w.buf.is_empty() {
                let (head, _) = w.buf.as_slices();
                match self.conn.send_stream(id).write(head) {
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
                let _ = self.conn.send_stream(id).finish();
                w.closed = true;
            }
        }
    }

    /// Everything readable on `id` now, and how it ended if it did.
    pub(crate) fn read(&mut self, id: StreamId) -> (Vec<u8>, Option<End>) {
        let mut data = Vec::new();
        let mut recv = self.conn.recv_stream(id);
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
    pub(crate) fn apply(&mut self, op: Transmit) {
        match op {
            Transmit::Control(b) => self.write(Key::Control, &b),
            Transmit::Open { stream, bytes } => {
                let mut w = Writer::new(Dir::Uni, None);
                w.buf.extend(bytes);
                self.writers.insert(Key::Out(stream.0), w);
            }
            Transmit::Write { stream, bytes } => self.write(Key::Out(stream.0), &bytes),
            Transmit::Finish { stream } => {
                if let Some(w) = self.writers.get_mut(&Key::Out(stream.0)) {
                    w.fin = true;
                }
            }
            Transmit::Reset { stream, code: c } => self.reset(Key::Out(stream.0), c),
            Transmit::StopSending { stream, code: c } => {
                if let Some(id) = stream_id(stream) {
                    let _ = self.conn.recv_stream(id).stop(code(c));
                }
            }
        }
    }

    fn write(&mut self, key: Key, bytes: &[u8]) {
        if let Some(w) = self.writers.get_mut(&key)
            && !w.closed
        {
            w.buf.extend(bytes);
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
        if let Some(id) = w.id {
            let _ = self.conn.send_stream(id).reset(code(c));
        }
    }

    /// Which of our send streams `id` is.
    pub(crate) fn key_of(&self, id: StreamId) -> Option<Key> {
        self.writers
            .iter()
            .find(|(_, w)| w.id == Some(id))
            .map(|(k, _)| *k)
    }

    pub(crate) fn lost_packets(&self) -> u64 {
        self.conn.stats().path.lost_packets
    }
}
