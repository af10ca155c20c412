//! `/v1/realtime` on the TCP port: the OpenAI Realtime API's WebSocket protocol, so that the
//! official SDKs (and anything else that speaks it) talk to any voq agent unchanged.
//!
//! The session itself is an ordinary voq/1 session ([`crate::session::run`]: agents, VAD,
//! send-ahead, barge-in, recording, limits), reached over an in-process WebSocket mux link; this
//! shell sits on the client's side of that link and translates with the sans-IO
//! [`voq_proto::realtime::RealtimeAdapter`]. The session starts with server VAD and answers a
//! push-to-talk commit only when asked (`response.create`), as the Realtime API does.

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tracing::debug;
use voq_proto::realtime::{RealtimeAdapter, RealtimeOutput};
use voq_transport::ws::{WsLink, websocket_config};
use voq_transport::{Inbound, Link, Streams};

use crate::session::{self, Credential, SessionContext};

/// Largest message a Realtime client may send: an `input_audio_buffer.append` of about a minute
/// of audio (base64 pcm16 at 24 kHz is 64 kB/s). A larger one closes the connection (1009).
pub const MAX_CLIENT_MESSAGE: usize = 4 * 1024 * 1024;
/// The in-process link between this shell and the session.
const INTERNAL_BUFFER: usize = 256 * 1024;

/// The client's WebSocket configuration (its appends are larger than voq/1's mux messages).
pub(crate) fn client_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(MAX_CLIENT_MESSAGE))
        .max_frame_size(Some(MAX_CLIENT_MESSAGE))
}

/// Runs one Realtime client's session to its end.
pub(crate) async fn serve<S>(
    client: WebSocketStream<S>,
    peer: SocketAddr,
    mut ctx: SessionContext,
    credential: Credential,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    ctx.carrier_name = Some("realtime");
    // A Realtime client has no resume token to come back with.
    ctx.resumption = None;
    ctx.proto.respond_to_push_to_talk = false;
    ctx.proto.initial_turn_detection = Some(serde_json::json!({"type": "server_vad"}));
    let (near, far) = tokio::io::duplex(INTERNAL_BUFFER);
    let session_side =
        WebSocketStream::from_raw_socket(far, Role::Server, Some(websocket_config())).await;
    let our_side =
        WebSocketStream::from_raw_socket(near, Role::Client, Some(websocket_config())).await;
    let session = tokio::spawn(session::run(
        Link::WebSocket(WsLink::start(session_side, true, peer)),
        ctx,
        credential,
    ));
    let link = Link::WebSocket(WsLink::start(our_side, false, peer));
    if let Err(e) = translate(client, &link).await {
        debug!(%peer, "realtime: {e:#}");
    }
    link.close(voq_proto::Code::NoError, "the Realtime client left");
    let _ = session.await;
}

async fn translate<S>(client: WebSocketStream<S>, link: &Link) -> anyhow::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let control = link.open_bi().await?;
    let (mut streams, mut inbound) = Streams::start(link.clone(), control);
    let (mut to_client, mut from_client) = client.split();
    // As configured in `serve`: the session starts with server VAD.
    let mut adapter = RealtimeAdapter::new(true);
    drain(&mut adapter, &mut streams, &mut to_client).await?;
    let why = loop {
        tokio::select! {
            msg = from_client.next() => match msg {
                Some(Ok(Message::Text(text))) => adapter.handle_client_text(text.as_str()),
                Some(Ok(Message::Binary(_))) => adapter.handle_client_binary(),
                Some(Ok(Message::Close(_))) | None => break None,
                Some(Ok(_)) => {} // ping, pong: tungstenite answers pings
                Some(Err(tokio_tungstenite::tungstenite::Error::Capacity(e))) => {
                    break Some((CloseCode::Size, format!("{e} (limit {MAX_CLIENT_MESSAGE} bytes)")));
                }
                Some(Err(e)) => break Some((CloseCode::Normal, format!("client connection: {e}"))),
            },
            msg = inbound.recv() => {
                let Some(msg) = msg else {
                    break Some((CloseCode::Normal, "the session ended".into()));
                };
                let Some(msg) = streams.track(msg) else { continue };
                match msg {
                    Inbound::Control(bytes) => adapter.handle_control(&bytes),
                    Inbound::ControlClosed => {
                        drain(&mut adapter, &mut streams, &mut to_client).await?;
                        break Some((CloseCode::Normal, "the session ended".into()));
                    }
                    Inbound::Opened(..) => {}
                    Inbound::Data(id, bytes) => adapter.handle_stream_data(id, &bytes),
                    Inbound::Fin(id) => adapter.handle_stream_end(id, true),
                    Inbound::Reset(id, _) => adapter.handle_stream_end(id, false),
                    Inbound::Stopped(stream, code) => adapter.handle_stream_stopped(stream, code),
                }
            }
        }
        drain(&mut adapter, &mut streams, &mut to_client).await?;
    };
    let (code, reason) = why.unwrap_or((CloseCode::Normal, String::new()));
    let frame = CloseFrame {
        code,
        reason: reason.chars().take(120).collect::<String>().into(),
    };
    let _ = to_client.send(Message::Close(Some(frame))).await;
    Ok(())
}

async fn drain<Sink>(
    adapter: &mut RealtimeAdapter,
    streams: &mut Streams,
    to_client: &mut Sink,
) -> anyhow::Result<()>
where
    Sink: futures_util::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
{
    while let Some(out) = adapter.poll_output() {
        match out {
            RealtimeOutput::ToSession(op) => streams.apply(op),
            RealtimeOutput::ToClient(text) => to_client.feed(Message::text(text)).await?,
        }
    }
    to_client.flush().await?;
    Ok(())
}
