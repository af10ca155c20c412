//! The three carriers behind one interface: a [`Link`] (a connection) with [`SendHalf`] and
//! [`RecvHalf`] streams. Raw QUIC and WebTransport share web-transport-quinn's stream types
//! (`Session::raw` for QUIC, an HTTP/3 CONNECT session for WebTransport); WebSocket uses the mux
//! in [`crate::ws`].

use std::net::SocketAddr;
use std::time::Duration;

use voq_proto::Code;
use voq_proto::stream::StreamId;
use web_transport_quinn as wtq;

use crate::ws;

/// Which carrier a session runs on; the name appears in `session.created`, reports and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Carrier {
    /// Raw QUIC, ALPN `voq/1`.
    Quic,
    /// WebTransport over HTTP/3 (ALPN `h3`), for browsers.
    WebTransport,
    /// The WebSocket mux of docs/PROTOCOL.md over TCP, the fallback.
    WebSocket,
}

impl Carrier {
    /// Every carrier, in the order metrics and reports list them.
    pub const ALL: [Carrier; 3] = [Carrier::Quic, Carrier::WebTransport, Carrier::WebSocket];

    /// The wire and CLI name: `quic`, `webtransport`, `ws`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Quic => "quic",
            Self::WebTransport => "webtransport",
            Self::WebSocket => "ws",
        }
    }
}

impl voq_metrics::LabelValue for Carrier {
    const ALL: &'static [Self] = &Carrier::ALL;

    fn label_value(self) -> &'static str {
        self.as_str()
    }
}

impl std::fmt::Display for Carrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Carrier {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "quic" => Ok(Self::Quic),
            "webtransport" | "wt" => Ok(Self::WebTransport),
            "ws" | "websocket" => Ok(Self::WebSocket),
            other => Err(format!(
                "unknown transport \"{other}\" (use quic, webtransport or ws)"
            )),
        }
    }
}

/// Why a link or stream operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("the connection is closed: {0}")]
    /// The connection closed; why, as the carrier reported it.
    Closed(String),
}

/// One connection of any carrier. Cheap to clone.
#[derive(Debug, Clone)]
pub enum Link {
    /// Raw QUIC or WebTransport.
    Quic {
        /// Boxed: a session is large, and links are cloned into every stream task.
        session: Box<wtq::Session>,
        /// Which of the two the session is.
        carrier: Carrier,
    },
    /// A WebSocket mux connection.
    WebSocket(ws::WsLink),
}

impl Link {
    /// A raw QUIC connection (ALPN `voq/1`).
    pub fn quic(conn: quinn::Connection) -> Self {
        Self::Quic {
            session: Box::new(wtq::Session::raw(conn)),
            carrier: Carrier::Quic,
        }
    }

    /// An established WebTransport session.
    pub fn webtransport(session: wtq::Session) -> Self {
        Self::Quic {
            session: Box::new(session),
            carrier: Carrier::WebTransport,
        }
    }

    /// The carrier this link runs on.
    pub fn carrier(&self) -> Carrier {
        match self {
            Self::Quic { carrier, .. } => *carrier,
            Self::WebSocket(_) => Carrier::WebSocket,
        }
    }

    /// The QUIC connection underneath, for QUIC and WebTransport.
    pub fn quic_connection(&self) -> Option<&quinn::Connection> {
        match self {
            Self::Quic { session, .. } => Some(session),
            Self::WebSocket(_) => None,
        }
    }

    /// The peer's address (after migration, its current one).
    pub fn remote_address(&self) -> SocketAddr {
        match self {
            Self::Quic { session, .. } => session.remote_address(),
            Self::WebSocket(l) => l.remote_address(),
        }
    }

    /// Smoothed RTT: QUIC's estimate, or the mux PINGs' on WebSocket.
    pub fn rtt(&self) -> Duration {
        match self {
            Self::Quic { session, .. } => session.rtt(),
            Self::WebSocket(l) => l.rtt(),
        }
    }

    /// Opens a bidirectional stream (the client's control stream).
    pub async fn open_bi(&self) -> Result<(SendHalf, RecvHalf), LinkError> {
        match self {
            Self::Quic { session, .. } => {
                let (s, r) = session.open_bi().await.map_err(closed)?;
                Ok((SendHalf::Quic(s), RecvHalf::Quic(r)))
            }
            Self::WebSocket(l) => {
                let (s, r) = l.open_bi()?;
                Ok((SendHalf::WebSocket(s), RecvHalf::WebSocket(r)))
            }
        }
    }

    /// Waits for the peer's next bidirectional stream.
    pub async fn accept_bi(&self) -> Result<(SendHalf, RecvHalf), LinkError> {
        match self {
            Self::Quic { session, .. } => {
                let (s, r) = session.accept_bi().await.map_err(closed)?;
                Ok((SendHalf::Quic(s), RecvHalf::Quic(r)))
            }
            Self::WebSocket(l) => {
                let (s, r) = l.accept_bi().await?;
                Ok((SendHalf::WebSocket(s), RecvHalf::WebSocket(r)))
            }
        }
    }

    /// Opens a unidirectional stream (a user turn or an agent response).
    pub async fn open_uni(&self) -> Result<SendHalf, LinkError> {
        match self {
            Self::Quic { session, .. } => {
                Ok(SendHalf::Quic(session.open_uni().await.map_err(closed)?))
            }
            Self::WebSocket(l) => Ok(SendHalf::WebSocket(l.open_uni()?)),
        }
    }

    /// Waits for the peer's next unidirectional stream.
    pub async fn accept_uni(&self) -> Result<RecvHalf, LinkError> {
        match self {
            Self::Quic { session, .. } => {
                Ok(RecvHalf::Quic(session.accept_uni().await.map_err(closed)?))
            }
            Self::WebSocket(l) => Ok(RecvHalf::WebSocket(l.accept_uni().await?)),
        }
    }

    /// Closes the connection with a voq code.
    pub fn close(&self, code: Code, reason: &str) {
        match self {
            Self::Quic { session, .. } => session.close(code.to_u32(), reason.as_bytes()),
            Self::WebSocket(l) => l.close(code, reason),
        }
    }

    /// Resolves when the connection is closed, with the reason.
    pub async fn closed(&self) -> String {
        match self {
            Self::Quic { session, .. } => session.closed().await.to_string(),
            Self::WebSocket(l) => l.closed().await,
        }
    }
}

fn closed(e: impl std::fmt::Display) -> LinkError {
    LinkError::Closed(e.to_string())
}

/// How a write ended early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteEnd {
    /// The peer sent STOP_SENDING with this code.
    Stopped(u64),
    /// The connection or stream is gone.
    Lost,
}

/// What one read returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    /// Bytes, in order.
    Data(Vec<u8>),
    /// The stream ended cleanly: everything was read.
    Fin,
    /// The peer reset the stream with this code.
    Reset(u64),
    /// The connection is gone.
    Lost,
}

/// The sending side of a stream.
#[derive(Debug)]
pub enum SendHalf {
    /// A QUIC or WebTransport stream.
    Quic(wtq::SendStream),
    /// A WebSocket mux stream.
    WebSocket(ws::SendStream),
}

impl SendHalf {
    /// Writes all of `bytes`, or says why it could not.
    pub async fn write_all(&mut self, bytes: &[u8]) -> Result<(), WriteEnd> {
        match self {
            Self::Quic(s) => s.write_all(bytes).await.map_err(|e| match e {
                wtq::WriteError::Stopped(c) => WriteEnd::Stopped(c.into()),
                _ => WriteEnd::Lost,
            }),
            Self::WebSocket(s) => s.write(bytes),
        }
    }

    /// Ends the stream cleanly (FIN) after what was written.
    pub fn finish(&mut self) {
        match self {
            Self::Quic(s) => {
                let _ = s.finish();
            }
            Self::WebSocket(s) => s.finish(),
        }
    }

    /// Abandons the stream with `code` (RESET_STREAM): unsent data is dropped.
    pub fn reset(&mut self, code: Code) {
        match self {
            Self::Quic(s) => {
                let _ = s.reset(code.to_u32());
            }
            Self::WebSocket(s) => s.reset(code),
        }
    }

    /// Resolves when the peer has everything (`None`) or stopped the stream (its code).
    pub async fn stopped(&mut self) -> Option<u64> {
        match self {
            Self::Quic(s) => s.stopped().await.ok().flatten().map(u64::from),
            Self::WebSocket(s) => s.stopped().await,
        }
    }
}

/// The receiving side of a stream.
#[derive(Debug)]
pub enum RecvHalf {
    /// A QUIC or WebTransport stream.
    Quic(wtq::RecvStream),
    /// A WebSocket mux stream.
    WebSocket(ws::RecvStream),
}

/// Bytes read from a QUIC stream per chunk.
const READ_CHUNK: usize = 64 * 1024;

impl RecvHalf {
    /// The stream's id, as the sans-IO cores key streams.
    pub fn id(&self) -> StreamId {
        match self {
            Self::Quic(r) => quinn::VarInt::from(r.quic_id()).into_inner(),
            Self::WebSocket(r) => r.id(),
        }
    }

    /// The next chunk, or how the stream ended.
    pub async fn read(&mut self) -> Read {
        match self {
            Self::Quic(r) => match r.read_chunk(READ_CHUNK, true).await {
                Ok(Some(chunk)) => Read::Data(chunk.bytes.to_vec()),
                Ok(None) => Read::Fin,
                Err(wtq::ReadError::Reset(c)) => Read::Reset(c.into()),
                Err(_) => Read::Lost,
            },
            Self::WebSocket(r) => r.read().await,
        }
    }

    /// Asks the peer to stop sending (STOP_SENDING).
    pub fn stop(&mut self, code: Code) {
        match self {
            Self::Quic(r) => {
                let _ = r.stop(code.to_u32());
            }
            Self::WebSocket(r) => r.stop(code),
        }
    }
}
