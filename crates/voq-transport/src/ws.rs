//! The WebSocket carrier: voq/1 streams multiplexed in binary messages
//! ([`voq_proto::mux`], docs/PROTOCOL.md "WebSocket stream mux").
//!
//! A thin shell around the sans-IO [`MuxConnection`], which holds every rule of the mux (stream
//! ids, refusals, limits, PING/PONG, the idle timeout, violations). One reader task feeds it
//! the peer's messages; one writer task owns the socket's sending half, sends what the machine
//! emits and wakes it at its deadlines. Streams are channels, so opening and writing never wait
//! for the network: TCP's flow control sits behind the writer task, and the server's
//! send-ahead rule bounds what it queues.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tracing::debug;
use voq_proto::Code;
use voq_proto::mux::{MuxConfig, MuxConnection, MuxOutput, Side, StreamError, StreamKind};

use crate::carrier::{LinkError, Read, WriteEnd};

/// How long TCP may hold unacknowledged data before the kernel ends the connection
/// (`TCP_USER_TIMEOUT`): the same as a QUIC connection's idle timeout, so a dead path ends a
/// call over either carrier alike instead of after Linux's ~15 minutes of retransmissions.
pub const TCP_USER_TIMEOUT: Duration = crate::quic::IDLE_TIMEOUT;

/// Tunes a WebSocket's TCP connection for a call, on both ends (docs/PROTOCOL.md, "Loss
/// recovery"): no Nagle delay (`TCP_NODELAY`: a 20 ms frame leaves at once); on Linux, thin-stream
/// linear timeouts (`TCP_THIN_LINEAR_TIMEOUTS`: while fewer than four packets are in flight,
/// the first six retransmission timeouts do not back off — the kernel's counterpart of our
/// QUIC probe grace) and [`TCP_USER_TIMEOUT`]. Each option that fails is logged and skipped:
/// none is needed for correctness. With `VOQ_RECOVERY=stock` only `TCP_NODELAY` is set.
pub fn tune_tcp(stream: &tokio::net::TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        debug!("TCP_NODELAY: {e}");
    }
    #[cfg(target_os = "linux")]
    if crate::recovery::Mode::from_env() == crate::recovery::Mode::Realtime {
        let socket = socket2::SockRef::from(stream);
        if let Err(e) = socket.set_tcp_thin_linear_timeouts(true) {
            debug!("TCP_THIN_LINEAR_TIMEOUTS: {e}");
        }
        if let Err(e) = socket.set_tcp_user_timeout(Some(TCP_USER_TIMEOUT)) {
            debug!("TCP_USER_TIMEOUT: {e}");
        }
    }
}

/// Largest message accepted (a mux frame of stream bytes).
pub const MAX_MESSAGE: usize = 1024 * 1024;
/// WebSocket close codes are `CLOSE_CODE_BASE + voq code`.
pub const CLOSE_CODE_BASE: u16 = 4000;
/// One WebSocket write may take this long; a peer that stops reading is closed after it.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// After a local close, how long the peer may take to answer it before the socket is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// Browsers refuse close reasons longer than this (RFC 6455 §5.5: 125 bytes minus the code).
const MAX_CLOSE_REASON: usize = 123;

/// The tungstenite limits for a voq mux connection.
pub fn websocket_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE + 16))
        .max_frame_size(Some(MAX_MESSAGE + 16))
}

/// What the writer task sends.
enum Out {
    Message(Vec<u8>),
    Close(Code, String),
}

#[derive(Debug)]
enum StreamEvent {
    Data(Vec<u8>),
    Fin,
    Reset(u64),
}

/// The mux machine and the channels its outputs are routed to.
struct State {
    mux: MuxConnection,
    /// Streams being read: where their bytes go.
    readers: HashMap<u64, mpsc::UnboundedSender<StreamEvent>>,
    /// Streams being written: who to tell when the peer stops one.
    writers: HashMap<u64, oneshot::Sender<u64>>,
    /// The peer's new streams not yet accepted: [bidi, uni].
    incoming: [VecDeque<u64>; 2],
    /// Receivers of streams announced but not yet accepted.
    pending_rx: HashMap<u64, mpsc::UnboundedReceiver<StreamEvent>>,
}

struct Shared {
    remote: SocketAddr,
    out: mpsc::UnboundedSender<Out>,
    state: Mutex<State>,
    accept: Notify,
    closed: watch::Sender<Option<String>>,
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock is a bug elsewhere; the state stays usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the mux machine, then routes everything it emitted.
    fn with_mux<R>(&self, f: impl FnOnce(&mut MuxConnection) -> R) -> R {
        let mut st = self.state();
        let r = f(&mut st.mux);
        self.route(st);
        r
    }

    /// Drains the machine's outputs to the socket and the stream handles.
    fn route(&self, mut st: std::sync::MutexGuard<'_, State>) {
        let mut accepted = false;
        let mut close = None;
        while let Some(output) = st.mux.poll_output() {
            match output {
                MuxOutput::Transmit(bytes) => {
                    let _ = self.out.send(Out::Message(bytes));
                }
                MuxOutput::Opened { id } => {
                    let (tx, rx) = mpsc::unbounded_channel();
                    st.readers.insert(id, tx);
                    st.pending_rx.insert(id, rx);
                    st.incoming[usize::from(StreamKind::of(id).unidirectional)].push_back(id);
                    accepted = true;
                }
                MuxOutput::Data { id, data } => {
                    if let Some(tx) = st.readers.get(&id) {
                        let _ = tx.send(StreamEvent::Data(data));
                    }
                }
                MuxOutput::Fin { id } => {
                    if let Some(tx) = st.readers.remove(&id) {
                        let _ = tx.send(StreamEvent::Fin);
                    }
                }
                MuxOutput::Reset { id, code } => {
                    if let Some(tx) = st.readers.remove(&id) {
                        let _ = tx.send(StreamEvent::Reset(code));
                    }
                }
                MuxOutput::Stopped { id, code } => {
                    if let Some(tx) = st.writers.remove(&id) {
                        let _ = tx.send(code);
                    }
                }
                MuxOutput::Close { code, reason } => {
                    let _ = self.out.send(Out::Close(code, reason));
                    close = st.mux.close_reason().map(str::to_string);
                }
            }
        }
        drop(st);
        if accepted {
            self.accept.notify_waiters();
        }
        if let Some(reason) = close {
            self.set_closed(reason);
        }
    }

    /// The connection is over: streams see the end as a loss, waiters wake.
    fn set_closed(&self, reason: String) {
        let mut st = self.state();
        st.mux.handle_peer_closed(&reason);
        st.readers.clear();
        st.writers.clear();
        drop(st);
        self.closed.send_if_modified(|c| {
            if c.is_none() {
                *c = Some(reason);
                true
            } else {
                false
            }
        });
        self.accept.notify_waiters();
    }

    fn closed_reason(&self) -> Option<String> {
        self.closed.borrow().clone()
    }
}

/// One WebSocket connection carrying a voq/1 session. Cheap to clone; when the last clone is
/// dropped the connection is closed (`no_error`), so an abandoned link never lingers.
#[derive(Clone)]
pub struct WsLink {
    shared: Arc<Shared>,
    _owner: Arc<Owner>,
}

/// Closes the connection when the last [`WsLink`] handle goes away (the tasks hold `Shared`).
struct Owner(Arc<Shared>);

impl Drop for Owner {
    fn drop(&mut self) {
        self.0
            .with_mux(|mux| mux.close(Code::NoError, "link dropped"));
    }
}

impl std::fmt::Debug for WsLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsLink")
            .field("side", &self.shared.state().mux.side())
            .field("remote", &self.shared.remote)
            .finish()
    }
}

impl WsLink {
    /// Starts the mux on an established WebSocket (after the HTTP upgrade). `server` is which
    /// side this is: it decides stream ids.
    pub fn start<S>(socket: WebSocketStream<S>, server: bool, remote: SocketAddr) -> Self
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let side = if server { Side::Server } else { Side::Client };
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let (closed, _) = watch::channel(None);
        let mux = MuxConnection::new(side, MuxConfig::default(), Instant::now().into_std());
        let shared = Arc::new(Shared {
            remote,
            out: out_tx,
            state: Mutex::new(State {
                mux,
                readers: HashMap::new(),
                writers: HashMap::new(),
                incoming: [VecDeque::new(), VecDeque::new()],
                pending_rx: HashMap::new(),
            }),
            accept: Notify::new(),
            closed,
        });
        // The machine's first PING.
        shared.with_mux(|_| ());
        let (sink, stream) = socket.split();
        tokio::spawn(write_task(sink, out_rx, shared.clone()));
        tokio::spawn(read_task(stream, shared.clone()));
        Self {
            _owner: Arc::new(Owner(shared.clone())),
            shared,
        }
    }

    /// The peer's TCP address.
    pub fn remote_address(&self) -> SocketAddr {
        self.shared.remote
    }

    /// Smoothed RTT from the mux PINGs (zero before the first answer).
    pub fn rtt(&self) -> Duration {
        self.shared.state().mux.rtt().unwrap_or_default()
    }

    fn open(&self, bidi: bool) -> Result<(u64, SendStream), LinkError> {
        let mut st = self.shared.state();
        let id = st.mux.open(bidi).map_err(link_error)?;
        let (stop_tx, stop_rx) = oneshot::channel();
        st.writers.insert(id, stop_tx);
        Ok((id, self.send_stream(id, stop_rx)))
    }

    fn send_stream(&self, id: u64, stopped: oneshot::Receiver<u64>) -> SendStream {
        SendStream {
            id,
            shared: self.shared.clone(),
            stopped,
            stop_code: None,
            done: false,
        }
    }

    /// Opens a unidirectional mux stream.
    pub fn open_uni(&self) -> Result<SendStream, LinkError> {
        Ok(self.open(false)?.1)
    }

    /// Opens a bidirectional mux stream.
    pub fn open_bi(&self) -> Result<(SendStream, RecvStream), LinkError> {
        let (id, send) = self.open(true)?;
        let (tx, rx) = mpsc::unbounded_channel();
        self.shared.state().readers.insert(id, tx);
        Ok((send, self.recv_stream(id, rx)))
    }

    fn recv_stream(&self, id: u64, rx: mpsc::UnboundedReceiver<StreamEvent>) -> RecvStream {
        RecvStream {
            id,
            rx,
            shared: self.shared.clone(),
            done: false,
        }
    }

    async fn accept(&self, bidi: bool) -> Result<u64, LinkError> {
        let slot = usize::from(!bidi);
        loop {
            let notified = self.shared.accept.notified();
            {
                let mut st = self.shared.state();
                if let Some(id) = st.incoming[slot].pop_front() {
                    return Ok(id);
                }
            }
            if let Some(reason) = self.shared.closed_reason() {
                return Err(LinkError::Closed(reason));
            }
            notified.await;
        }
    }

    /// Waits for the peer's next unidirectional mux stream.
    pub async fn accept_uni(&self) -> Result<RecvStream, LinkError> {
        let id = self.accept(false).await?;
        let rx = self.take_pending(id)?;
        Ok(self.recv_stream(id, rx))
    }

    /// Waits for the peer's next bidirectional mux stream (on the server: the control stream;
    /// the machine refuses any other).
    pub async fn accept_bi(&self) -> Result<(SendStream, RecvStream), LinkError> {
        let id = self.accept(true).await?;
        let rx = self.take_pending(id)?;
        let (stop_tx, stop_rx) = oneshot::channel();
        self.shared.state().writers.insert(id, stop_tx);
        Ok((self.send_stream(id, stop_rx), self.recv_stream(id, rx)))
    }

    fn take_pending(&self, id: u64) -> Result<mpsc::UnboundedReceiver<StreamEvent>, LinkError> {
        match self.shared.state().pending_rx.remove(&id) {
            Some(rx) => Ok(rx),
            None => Err(LinkError::Closed(
                self.shared
                    .closed_reason()
                    .unwrap_or_else(|| "stream vanished".into()),
            )),
        }
    }

    /// Closes with a WebSocket close frame of code `4000 + code`.
    pub fn close(&self, code: Code, reason: &str) {
        self.shared.with_mux(|mux| mux.close(code, reason));
    }

    /// Resolves when the connection is closed, with the reason.
    pub async fn closed(&self) -> String {
        let mut rx = self.shared.closed.subscribe();
        wait_closed(&mut rx).await;
        let reason = rx.borrow().clone();
        reason.unwrap_or_else(|| "the connection is gone".into())
    }
}

fn link_error(e: StreamError) -> LinkError {
    LinkError::Closed(e.to_string())
}

/// The sending side of a mux stream.
#[derive(Debug)]
pub struct SendStream {
    id: u64,
    shared: Arc<Shared>,
    stopped: oneshot::Receiver<u64>,
    /// The peer's STOP_SENDING code, once seen.
    stop_code: Option<u64>,
    done: bool,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ws::Shared")
    }
}

impl SendStream {
    /// Queues bytes; fails if the peer stopped the stream or the connection is gone.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), WriteEnd> {
        if let Ok(code) = self.stopped.try_recv() {
            self.stop_code = Some(code);
        }
        if let Some(code) = self.stop_code {
            return Err(WriteEnd::Stopped(code));
        }
        let id = self.id;
        self.shared
            .with_mux(|mux| mux.write(id, bytes))
            .map_err(|e| match e {
                StreamError::Stopped(code) => WriteEnd::Stopped(code),
                StreamError::NotWritable | StreamError::Closed(_) => WriteEnd::Lost,
            })
    }

    /// Ends the stream cleanly (FIN) after what was written.
    pub fn finish(&mut self) {
        if !std::mem::replace(&mut self.done, true) {
            let id = self.id;
            let _ = self.shared.with_mux(|mux| mux.finish(id));
        }
    }

    /// Abandons the stream with `code`: the peer sees a RESET.
    pub fn reset(&mut self, code: Code) {
        self.done = true;
        let id = self.id;
        self.shared.with_mux(|mux| {
            mux.reset(id, code);
            mux.release_send(id);
        });
        self.shared.state().writers.remove(&self.id);
    }

    /// Resolves with the peer's STOP_SENDING code, or `None` once the connection is gone (the
    /// mux has no acknowledgements: after FIN, TCP delivers or the connection fails).
    pub async fn stopped(&mut self) -> Option<u64> {
        if self.stop_code.is_some() {
            return self.stop_code;
        }
        let code = self.wait_stopped().await;
        self.stop_code = code;
        code
    }

    async fn wait_stopped(&mut self) -> Option<u64> {
        if self.done {
            // Finished: wait for a late STOP_SENDING or the end of the connection.
            let mut closed = self.shared.closed.subscribe();
            tokio::select! {
                code = &mut self.stopped => code.ok(),
                _ = wait_closed(&mut closed) => None,
            }
        } else {
            (&mut self.stopped).await.ok()
        }
    }
}

impl Drop for SendStream {
    fn drop(&mut self) {
        // Nobody is left to tell about a STOP_SENDING.
        let mut st = self.shared.state();
        st.writers.remove(&self.id);
        st.mux.release_send(self.id);
    }
}

/// The receiving side of a mux stream.
#[derive(Debug)]
pub struct RecvStream {
    id: u64,
    rx: mpsc::UnboundedReceiver<StreamEvent>,
    shared: Arc<Shared>,
    done: bool,
}

impl RecvStream {
    /// The mux stream id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The next chunk, or how the stream ended.
    pub async fn read(&mut self) -> Read {
        if self.done {
            return Read::Lost;
        }
        let r = match self.rx.recv().await {
            Some(StreamEvent::Data(d)) => return Read::Data(d),
            Some(StreamEvent::Fin) => Read::Fin,
            Some(StreamEvent::Reset(c)) => Read::Reset(c),
            None => Read::Lost,
        };
        self.done = true;
        r
    }

    /// Asks the peer to stop sending (STOP_SENDING with `code`).
    pub fn stop(&mut self, code: Code) {
        if !std::mem::replace(&mut self.done, true) {
            let id = self.id;
            self.shared.with_mux(|mux| mux.stop(id, code));
            self.shared.state().readers.remove(&id);
        }
    }
}

/// Waits until the connection is marked closed (the guard `wait_for` returns is not `Send`, so
/// it must not live across an await in a spawned task).
async fn wait_closed(rx: &mut watch::Receiver<Option<String>>) {
    let _ = rx.wait_for(|c| c.is_some()).await;
}

impl Drop for RecvStream {
    fn drop(&mut self) {
        // Later frames of this stream are dropped by the machine instead of queued.
        let mut st = self.shared.state();
        st.readers.remove(&self.id);
        st.mux.release_recv(self.id);
    }
}

async fn write_task<S>(
    mut sink: futures_util::stream::SplitSink<WebSocketStream<S>, Message>,
    mut out: mpsc::UnboundedReceiver<Out>,
    shared: Arc<Shared>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut closed = shared.closed.subscribe();
    loop {
        // The machine's next deadline (PING or idle); re-read every round, since inputs move it.
        let deadline = shared.state().mux.poll_timeout().map(Instant::from_std);
        let msg = tokio::select! {
            // Queued frames first: a close frame queued just before the connection was marked
            // closed must still go out.
            biased;
            o = out.recv() => match o {
                Some(Out::Message(bytes)) => Message::Binary(bytes.into()),
                Some(Out::Close(code, reason)) => {
                    let frame = CloseFrame {
                        code: CloseCode::from(CLOSE_CODE_BASE + code.to_u32() as u16),
                        reason: close_reason(reason).into(),
                    };
                    let _ = tokio::time::timeout(WRITE_TIMEOUT, sink.send(Message::Close(Some(frame))))
                        .await;
                    // Give the peer a moment to answer the close, then drop the socket (the
                    // reader gives up after the same grace).
                    let _ = tokio::time::timeout(CLOSE_GRACE, sink.close()).await;
                    return;
                }
                None => return,
            },
            _ = crate::sleep_until(deadline) => {
                shared.with_mux(|mux| mux.handle_timeout(Instant::now().into_std()));
                continue;
            }
            _ = wait_closed(&mut closed) => {
                // The peer closed or the reader failed: flush tungstenite's queued answer to a
                // close frame, so the peer sees a clean close. A close the machine queued is
                // sent first (biased above).
                let _ = tokio::time::timeout(CLOSE_GRACE, sink.close()).await;
                return;
            }
        };
        match tokio::time::timeout(WRITE_TIMEOUT, sink.send(msg)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                shared.set_closed(format!("write failed: {e}"));
                return;
            }
            Err(_) => {
                shared.set_closed(format!(
                    "the peer stopped reading: a write took over {WRITE_TIMEOUT:?}"
                ));
                return;
            }
        }
    }
}

/// A close reason that browsers accept: at most [`MAX_CLOSE_REASON`] bytes of UTF-8.
fn close_reason(mut reason: String) -> String {
    if reason.len() > MAX_CLOSE_REASON {
        let mut cut = MAX_CLOSE_REASON;
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        reason.truncate(cut);
    }
    reason
}

async fn read_task<S>(
    mut stream: futures_util::stream::SplitStream<WebSocketStream<S>>,
    shared: Arc<Shared>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut closed = shared.closed.subscribe();
    let reason = loop {
        let next = tokio::select! {
            n = stream.next() => n,
            _ = wait_closed(&mut closed) => {
                // Closed here: read on briefly for the peer's answer, then let the socket go.
                let _ = tokio::time::timeout(CLOSE_GRACE, async {
                    while let Some(Ok(m)) = stream.next().await {
                        if m.is_close() {
                            break;
                        }
                    }
                })
                .await;
                return;
            }
        };
        let msg = match next {
            Some(Ok(m)) => m,
            Some(Err(tokio_tungstenite::tungstenite::Error::Capacity(e))) => {
                // Over the message limit: the peer's mistake, said with its own code (4003).
                let why = format!("message over {MAX_MESSAGE} bytes: {e}");
                shared.with_mux(|mux| mux.close(Code::FrameTooLarge, &why));
                break why;
            }
            Some(Err(e)) => break format!("read failed: {e}"),
            None => break "the peer went away".to_string(),
        };
        match msg {
            Message::Binary(bytes) => {
                shared.with_mux(|mux| mux.handle_message(Instant::now().into_std(), &bytes));
            }
            Message::Close(frame) => {
                break match frame {
                    Some(f) => format!("closed by peer: {} {}", u16::from(f.code), f.reason),
                    None => "closed by peer".into(),
                };
            }
            Message::Text(_) => shared.with_mux(MuxConnection::handle_text),
            // tungstenite answers WebSocket pings itself.
            _ => {}
        }
    };
    debug!(remote = %shared.remote, "websocket mux ended: {reason}");
    shared.set_closed(reason);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::protocol::Role;
    use voq_proto::mux::MuxFrame;

    async fn pair() -> (WsLink, WsLink, WebSocketStream<tokio::io::DuplexStream>) {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let (a, b) = tokio::io::duplex(1 << 20);
        let (c, d) = tokio::io::duplex(1 << 20);
        let client = WebSocketStream::from_raw_socket(a, Role::Client, None).await;
        let server =
            WebSocketStream::from_raw_socket(b, Role::Server, Some(websocket_config())).await;
        // A third, raw socket for tests that speak the mux by hand.
        let raw = WebSocketStream::from_raw_socket(c, Role::Client, None).await;
        let raw_server =
            WebSocketStream::from_raw_socket(d, Role::Server, Some(websocket_config())).await;
        tokio::spawn(async move {
            let link = WsLink::start(raw_server, true, addr);
            let _ = link.accept_uni().await;
            link.closed().await;
        });
        (
            WsLink::start(client, false, addr),
            WsLink::start(server, true, addr),
            raw,
        )
    }

    #[tokio::test]
    async fn streams_carry_bytes_fin_and_stop_sending() {
        let (client, server, _) = pair().await;
        let (mut ctl_send, mut ctl_recv) = client.open_bi().unwrap();
        ctl_send.write(b"hello").unwrap();
        let mut uni = client.open_uni().unwrap();
        uni.write(b"turn").unwrap();
        uni.finish();

        let (mut s_send, mut s_recv) = server.accept_bi().await.unwrap();
        assert_eq!(
            s_recv.id(),
            0,
            "the control stream is the client's first bidi stream"
        );
        assert_eq!(s_recv.read().await, Read::Data(b"hello".to_vec()));
        let mut turn = server.accept_uni().await.unwrap();
        assert_eq!(turn.id(), 2);
        assert_eq!(turn.read().await, Read::Data(b"turn".to_vec()));
        assert_eq!(turn.read().await, Read::Fin);

        s_send.write(b"created").unwrap();
        assert_eq!(ctl_recv.read().await, Read::Data(b"created".to_vec()));

        // The server's agent-audio stream, stopped by the client (barge-in).
        let mut reply = server.open_uni().unwrap();
        reply.write(b"audio").unwrap();
        let mut r = client.accept_uni().await.unwrap();
        assert_eq!(r.id(), 3);
        assert_eq!(r.read().await, Read::Data(b"audio".to_vec()));
        r.stop(Code::Cancelled);
        assert_eq!(reply.stopped().await, Some(Code::Cancelled.to_u32().into()));
        assert_eq!(
            reply.write(b"more"),
            Err(WriteEnd::Stopped(Code::Cancelled.to_u32().into())),
            "a stopped stream takes no more"
        );

        // A reset reaches the reader with its code.
        let mut second = server.open_uni().unwrap();
        second.write(b"x").unwrap();
        second.reset(Code::Cancelled);
        let mut r2 = client.accept_uni().await.unwrap();
        assert_eq!(r2.read().await, Read::Data(b"x".to_vec()));
        assert_eq!(
            r2.read().await,
            Read::Reset(Code::Cancelled.to_u32().into())
        );

        client.close(Code::NoError, "bye");
        let reason = server.closed().await;
        assert!(reason.contains("4000"), "{reason}");
    }

    #[tokio::test]
    async fn extra_bidi_streams_are_refused_and_a_dropped_link_closes() {
        let (client, server, _) = pair().await;
        let (mut ctl, _ctl_recv) = client.open_bi().unwrap();
        ctl.write(b"control").unwrap();
        let (_s_send, mut s_recv) = server.accept_bi().await.unwrap();
        assert_eq!(s_recv.read().await, Read::Data(b"control".to_vec()));
        // A second bidirectional stream is never read: the server stops it at once instead of
        // buffering what arrives on it.
        let (mut extra, _extra_recv) = client.open_bi().unwrap();
        extra.write(&[0; 1000]).unwrap();
        assert_eq!(
            extra.stopped().await,
            Some(Code::StreamRefused.to_u32().into())
        );
        assert!(server.shared.state().pending_rx.is_empty());
        // The last handle of the server's link goes away: the client sees a clean close.
        drop((_s_send, s_recv));
        drop(server);
        let reason = tokio::time::timeout(Duration::from_secs(5), client.closed())
            .await
            .unwrap();
        assert!(reason.contains("4000"), "{reason}");
    }

    #[tokio::test]
    async fn a_message_over_the_limit_closes_with_4003() {
        let (_client, _server, mut raw) = pair().await;
        let mut big = MuxFrame::Stream {
            id: 2,
            data: vec![],
        }
        .encode();
        big.resize(MAX_MESSAGE + 1024, 0);
        // The write may fail once the server has closed; what matters is the close it sent.
        let _ = raw.send(Message::Binary(big.into())).await;
        let close = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match raw.next().await {
                    Some(Ok(Message::Close(c))) => break c,
                    Some(Ok(_)) => continue,
                    other => panic!("no close frame: {other:?}"),
                }
            }
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(
            u16::from(close.code),
            CLOSE_CODE_BASE + Code::FrameTooLarge.to_u32() as u16
        );
    }

    #[tokio::test]
    async fn pings_give_an_rtt_and_bad_frames_close_with_4002() {
        let (client, _server, mut raw) = pair().await;
        // The first PING goes out at the start; its PONG gives an RTT sample. Wait for it on
        // the RTT condition, bounded by a deadline.
        tokio::time::timeout(Duration::from_secs(3), async {
            while client.shared.state().mux.rtt().is_none()
                && client.shared.closed_reason().is_none()
            {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
        assert!(
            client.shared.state().mux.rtt().is_some(),
            "a PONG was measured"
        );

        // Stream ids of one kind must be used in order: uni stream 6 before 2 is a violation.
        raw.send(Message::Binary(
            MuxFrame::Stream {
                id: 6,
                data: vec![1],
            }
            .encode()
            .into(),
        ))
        .await
        .unwrap();
        let close = loop {
            match raw.next().await.unwrap().unwrap() {
                Message::Close(c) => break c.unwrap(),
                _ => continue,
            }
        };
        assert_eq!(u16::from(close.code), CLOSE_CODE_BASE + 2);
    }
}
