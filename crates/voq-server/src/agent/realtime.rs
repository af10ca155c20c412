//! `realtime:URL`: a bridge to an upstream Realtime-compatible model (OpenAI, Azure, a
//! self-hosted clone, or another voq server's `/v1/realtime`), one upstream WebSocket per voq
//! session.
//!
//! voq keeps the edge (reliable prompt, buffered playback, barge-in, migration); the upstream
//! model only answers turns. Each committed user turn goes up as `input_audio_buffer.append`
//! (base64 pcm16, 0.5 s per event) and `input_audio_buffer.commit`, then `response.create`; the
//! upstream session runs with `turn_detection: null` (voq decides where turns end). The
//! upstream's `response.output_audio.delta` becomes the voq response's audio. A barge-in sends
//! `response.cancel` and then `conversation.item.truncate` with the exact ms the user heard (the
//! client's played cursor, which the Realtime SDKs can only estimate).
//!
//! The API key comes from the environment (`VOQ_REALTIME_API_KEY`, else `OPENAI_API_KEY`) and is
//! sent only as `Authorization: Bearer`; it is never logged, and neither is the URL's query.
//! `wss://` is verified against the system's roots (`SSL_CERT_FILE` adds one).
//!
//! Upstream failures: connecting is retried with backoff (4 tries within ~4 s); a connection
//! lost before any reply audio came is re-established and the turn sent again, so nothing the
//! server confirmed is lost; one lost after reply audio came fails that response (`agent_failed`:
//! sending the turn again would repeat what the user already heard), and the next turn
//! reconnects. A new upstream connection is a new upstream conversation.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tracing::{debug, info, warn};

use super::{Agent, AgentFactory, AgentFuture, ReplySink, Turn};

/// Samples of user audio per `input_audio_buffer.append` (0.5 s: 32 kB of base64).
const APPEND_SAMPLES: usize = 12_000;
/// Connection attempts for one turn, and the wait before each retry.
const CONNECT_BACKOFF: [Duration; 4] = [
    Duration::ZERO,
    Duration::from_millis(250),
    Duration::from_secs(1),
    Duration::from_secs(2),
];
/// How long connecting (TCP, TLS, upgrade) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the upstream may stay silent while a response is open.
const RESPONSE_SILENCE: Duration = Duration::from_secs(30);
/// Largest upstream message accepted (a long audio delta is well under this).
const MAX_UPSTREAM_MESSAGE: usize = 8 * 1024 * 1024;
/// Assistant items remembered for a truncation that arrives after its response ended.
const REMEMBERED_ITEMS: usize = 16;

/// Factory for `realtime:URL` agents.
pub struct RealtimeBridge {
    url: url::Url,
    api_key: Option<String>,
    tls: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for RealtimeBridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RealtimeBridge")
            .field("url", &redacted(&self.url))
            .field("api_key", &self.api_key.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// The URL without its query (which may carry credentials) for logs and names.
fn redacted(url: &url::Url) -> String {
    let mut shown = url.clone();
    shown.set_query(None);
    let _ = shown.set_password(None);
    shown.to_string()
}

impl RealtimeBridge {
    /// `ws://` or `wss://` URL of a Realtime endpoint (e.g.
    /// `wss://api.openai.com/v1/realtime?model=gpt-realtime`). The key is read from the
    /// environment now.
    pub fn new(url: &str) -> anyhow::Result<Self> {
        let url = url::Url::parse(url)
            .with_context(|| "realtime:URL needs a ws:// or wss:// URL".to_string())?;
        anyhow::ensure!(
            matches!(url.scheme(), "ws" | "wss") && url.host_str().is_some(),
            "realtime:URL needs a ws:// or wss:// URL with a host, not {}",
            redacted(&url)
        );
        let api_key = ["VOQ_REALTIME_API_KEY", "OPENAI_API_KEY"]
            .iter()
            .find_map(|name| std::env::var(name).ok().filter(|k| !k.is_empty()));
        use rustls_platform_verifier::BuilderVerifierExt;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|b| b.with_platform_verifier())
            .context("TLS for the upstream Realtime endpoint")?
            .with_no_client_auth();
        Ok(Self {
            url,
            api_key,
            tls: Arc::new(tls),
        })
    }
}

impl RealtimeBridge {
    /// Uses `key` (or none) instead of the environment's.
    pub fn with_api_key(mut self, key: Option<String>) -> Self {
        self.api_key = key;
        self
    }
}

impl AgentFactory for RealtimeBridge {
    fn session(&self) -> anyhow::Result<Arc<dyn Agent>> {
        let (tx, rx) = mpsc::unbounded_channel();
        let upstream = Upstream {
            url: self.url.clone(),
            api_key: self.api_key.clone(),
            tls: self.tls.clone(),
        };
        tokio::spawn(bridge(upstream, rx));
        Ok(Arc::new(BridgeSession { tx }))
    }

    fn name(&self) -> String {
        format!("realtime:{}", redacted(&self.url))
    }
}

/// What a voq session asks of its bridge task.
enum Cmd {
    Respond {
        turn: Turn,
        reply: ReplySink,
        done: oneshot::Sender<Result<(), String>>,
    },
    Cancel {
        response_id: String,
    },
    Truncate {
        response_id: String,
        audio_end_ms: u64,
    },
}

/// One voq session's agent: a handle on its bridge task, which ends with it.
struct BridgeSession {
    tx: mpsc::UnboundedSender<Cmd>,
}

impl Agent for BridgeSession {
    fn respond(self: Arc<Self>, turn: Turn, reply: ReplySink) -> AgentFuture {
        let (done, result) = oneshot::channel();
        let sent = self.tx.send(Cmd::Respond { turn, reply, done });
        Box::pin(async move {
            anyhow::ensure!(sent.is_ok(), "the upstream bridge has stopped");
            match result.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(anyhow::anyhow!(e)),
                Err(_) => Err(anyhow::anyhow!("the upstream bridge has stopped")),
            }
        })
    }

    fn cancel(self: Arc<Self>, response_id: &str) -> AgentFuture {
        // Queued now, before the future: in the order the session called.
        let _ = self.tx.send(Cmd::Cancel {
            response_id: response_id.to_string(),
        });
        Box::pin(async { Ok(()) })
    }

    fn truncated(self: Arc<Self>, response_id: &str, audio_end_ms: u64) -> AgentFuture {
        let _ = self.tx.send(Cmd::Truncate {
            response_id: response_id.to_string(),
            audio_end_ms,
        });
        Box::pin(async { Ok(()) })
    }
}

/// Where to connect.
struct Upstream {
    url: url::Url,
    api_key: Option<String>,
    tls: Arc<rustls::ClientConfig>,
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
type Socket = WebSocketStream<Box<dyn Io>>;

impl Upstream {
    async fn connect_once(&self) -> anyhow::Result<Socket> {
        let host = self.url.host_str().unwrap_or_default().to_string();
        let port = self.url.port_or_known_default().unwrap_or(443);
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .with_context(|| format!("cannot reach {host}:{port}"))?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = if self.url.scheme() == "wss" {
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .with_context(|| format!("{host} is not a server name"))?;
            let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
                .connect(name, tcp)
                .await
                .with_context(|| format!("TLS with {host}"))?;
            Box::new(tls)
        } else {
            Box::new(tcp)
        };
        let mut request = self
            .url
            .as_str()
            .into_client_request()
            .context("the upstream URL")?;
        if let Some(key) = &self.api_key {
            let value = format!("Bearer {key}")
                .parse()
                .map_err(|_| anyhow::anyhow!("the API key is not a valid header value"))?;
            request.headers_mut().insert("authorization", value);
        }
        let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .max_message_size(Some(MAX_UPSTREAM_MESSAGE))
            .max_frame_size(Some(MAX_UPSTREAM_MESSAGE));
        let (mut ws, _) = tokio_tungstenite::client_async_with_config(request, io, Some(config))
            .await
            .map_err(|e| anyhow::anyhow!("WebSocket upgrade refused: {e}"))?;
        // voq decides where turns end; the upstream answers them.
        let format = json!({"type": "audio/pcm", "rate": voq_audio::SAMPLE_RATE});
        let update = json!({"type": "session.update", "session": {"type": "realtime",
            "audio": {"input": {"format": format, "turn_detection": null},
                      "output": {"format": format}}}});
        ws.send(Message::text(update.to_string())).await?;
        Ok(ws)
    }

    /// Connects, retrying with backoff.
    async fn connect(&self) -> anyhow::Result<Socket> {
        let mut last = None;
        for wait in CONNECT_BACKOFF {
            tokio::time::sleep(wait).await;
            match tokio::time::timeout(CONNECT_TIMEOUT, self.connect_once()).await {
                Ok(Ok(ws)) => {
                    info!(upstream = %redacted(&self.url), "connected to the upstream Realtime endpoint");
                    return Ok(ws);
                }
                Ok(Err(e)) => last = Some(e),
                Err(_) => last = Some(anyhow::anyhow!("timed out after {CONNECT_TIMEOUT:?}")),
            }
        }
        Err(last
            .unwrap_or_else(|| anyhow::anyhow!("no attempt made"))
            .context(format!(
                "the upstream Realtime endpoint {} is unreachable",
                redacted(&self.url)
            )))
    }
}

/// The response being answered upstream.
struct Active {
    voq_id: String,
    turn: Turn,
    reply: ReplySink,
    done: Option<oneshot::Sender<Result<(), String>>>,
    upstream_id: Option<String>,
    item_id: Option<String>,
    /// Reply audio forwarded so far (after some, the turn cannot be sent again).
    samples_forwarded: u64,
    cancelled: bool,
}

impl Active {
    fn finish(&mut self, result: Result<(), String>) {
        if let Some(done) = self.done.take() {
            let _ = done.send(result);
        }
    }
}

/// The bridge task of one voq session.
async fn bridge(upstream: Upstream, mut commands: mpsc::UnboundedReceiver<Cmd>) {
    // Connected ahead of the first turn, which then goes up at once; a failure here is
    // retried (and reported) when a turn needs the connection.
    let mut ws: Option<Socket> =
        match tokio::time::timeout(CONNECT_TIMEOUT, upstream.connect_once()).await {
            Ok(Ok(ws)) => Some(ws),
            Ok(Err(e)) => {
                debug!("upstream not connected ahead of the first turn: {e:#}");
                None
            }
            Err(_) => None,
        };
    let mut active: Option<Active> = None;
    // (voq response id, upstream item id) of recent responses, for late truncations.
    let mut items: VecDeque<(String, String)> = VecDeque::new();
    // Upstream responses replaced before they ended: their trailing events are not the next's.
    let mut stale: VecDeque<String> = VecDeque::new();
    loop {
        let wake = tokio::select! {
            cmd = commands.recv() => Wake::Command(cmd),
            msg = next_message(&mut ws, active.is_some()) => Wake::Upstream(msg),
        };
        match wake {
            Wake::Command(None) => break,
            Wake::Command(Some(Cmd::Respond { turn, reply, done })) => {
                if let Some(mut old) = active.take() {
                    old.finish(Ok(()));
                    if let Some(id) = old.upstream_id {
                        if stale.len() >= REMEMBERED_ITEMS {
                            stale.pop_front();
                        }
                        stale.push_back(id);
                    }
                }
                let mut a = Active {
                    voq_id: reply.response_id().to_string(),
                    turn,
                    reply,
                    done: Some(done),
                    upstream_id: None,
                    item_id: None,
                    samples_forwarded: 0,
                    cancelled: false,
                };
                match start(&upstream, &mut ws, &a.turn).await {
                    Ok(()) => active = Some(a),
                    Err(e) => a.finish(Err(format!("{e:#}"))),
                }
            }
            Wake::Command(Some(Cmd::Cancel { response_id })) => {
                if let Some(a) = active.as_mut().filter(|a| a.voq_id == response_id) {
                    a.cancelled = true;
                    let mut cancel = json!({"type": "response.cancel"});
                    if let Some(id) = &a.upstream_id {
                        cancel["response_id"] = json!(id);
                    }
                    send(&mut ws, cancel).await;
                }
            }
            Wake::Command(Some(Cmd::Truncate {
                response_id,
                audio_end_ms,
            })) => {
                let item = active
                    .as_ref()
                    .filter(|a| a.voq_id == response_id)
                    .and_then(|a| a.item_id.clone())
                    .or_else(|| {
                        items
                            .iter()
                            .find(|(r, _)| *r == response_id)
                            .map(|(_, i)| i.clone())
                    });
                if let Some(item_id) = item {
                    let truncate = json!({"type": "conversation.item.truncate",
                        "item_id": item_id, "content_index": 0, "audio_end_ms": audio_end_ms});
                    send(&mut ws, truncate).await;
                }
            }
            Wake::Upstream(FromUpstream::Event(event)) => {
                if let Some(problem) = format_problem(&event) {
                    // This connection is of no use; the next turn reconnects and asks again.
                    warn!("{problem}");
                    ws = None;
                    if let Some(mut a) = active.take() {
                        a.finish(Err(problem));
                    }
                    continue;
                }
                on_event(event, &mut active, &mut items, &stale).await;
            }
            Wake::Upstream(FromUpstream::Lost(why)) => {
                ws = None;
                let Some(mut a) = active.take() else {
                    debug!("upstream connection closed while idle: {why}");
                    continue;
                };
                if a.cancelled {
                    continue;
                }
                if a.samples_forwarded > 0 {
                    a.finish(Err(format!(
                        "the upstream connection was lost mid-response: {why}"
                    )));
                    continue;
                }
                warn!("upstream connection lost before the reply ({why}): sending the turn again");
                match start(&upstream, &mut ws, &a.turn).await {
                    Ok(()) => active = Some(a),
                    Err(e) => a.finish(Err(format!("{e:#}"))),
                }
            }
        }
    }
    if let Some(mut ws) = ws {
        let _ = ws.close(None).await;
    }
}

/// What the upstream said.
enum FromUpstream {
    Event(Value),
    Lost(String),
}

/// What woke the bridge task.
enum Wake {
    Command(Option<Cmd>),
    Upstream(FromUpstream),
}

/// The next upstream event; pending forever when there is no connection.
async fn next_message(ws: &mut Option<Socket>, responding: bool) -> FromUpstream {
    let Some(socket) = ws.as_mut() else {
        return std::future::pending().await;
    };
    loop {
        let next = if responding {
            match tokio::time::timeout(RESPONSE_SILENCE, socket.next()).await {
                Ok(next) => next,
                Err(_) => {
                    return FromUpstream::Lost(format!(
                        "silent for {RESPONSE_SILENCE:?} mid-response"
                    ));
                }
            }
        } else {
            socket.next().await
        };
        match next {
            Some(Ok(Message::Text(text))) => match serde_json::from_str::<Value>(text.as_str()) {
                Ok(v @ Value::Object(_)) => return FromUpstream::Event(v),
                _ => warn!("upstream sent a message that is not a JSON event: skipped"),
            },
            Some(Ok(Message::Close(frame))) => {
                return FromUpstream::Lost(frame.map_or("closed".into(), |f| {
                    format!("closed ({}): {}", f.code, f.reason)
                }));
            }
            Some(Ok(Message::Binary(_))) => warn!("upstream sent a binary message: skipped"),
            Some(Ok(_)) => {}
            Some(Err(e)) => return FromUpstream::Lost(e.to_string()),
            None => return FromUpstream::Lost("closed".into()),
        }
    }
}

/// Why the upstream's answer to our `session.update` makes it unusable: audio voq did not ask
/// for (it would be played as noise).
fn format_problem(event: &Value) -> Option<String> {
    if event.get("type").and_then(Value::as_str) != Some("session.updated") {
        return None;
    }
    let format = event.pointer("/session/audio/output/format")?;
    let kind = format.get("type").and_then(Value::as_str).unwrap_or("");
    let rate = format.get("rate").and_then(Value::as_u64);
    if kind == "audio/pcm" && rate.is_none_or(|r| r == u64::from(voq_audio::SAMPLE_RATE)) {
        return None;
    }
    Some(format!(
        "the upstream Realtime endpoint sends {format} where voq asked for audio/pcm at 24000 Hz"
    ))
}

/// Sends the turn and asks for a response, connecting first if needed.
async fn start(upstream: &Upstream, ws: &mut Option<Socket>, turn: &Turn) -> anyhow::Result<()> {
    if ws.is_none() {
        *ws = Some(upstream.connect().await?);
    }
    let Some(socket) = ws.as_mut() else {
        unreachable!("connected above")
    };
    let mut events = Vec::new();
    for chunk in turn.audio.chunks(APPEND_SAMPLES) {
        let bytes: Vec<u8> = chunk.iter().flat_map(|s| s.to_le_bytes()).collect();
        events.push(json!({"type": "input_audio_buffer.append", "audio": BASE64.encode(bytes)}));
    }
    if !turn.audio.is_empty() {
        events.push(json!({"type": "input_audio_buffer.commit"}));
    }
    events.push(json!({"type": "response.create"}));
    for event in events {
        if let Err(e) = socket.feed(Message::text(event.to_string())).await {
            *ws = None;
            anyhow::bail!("sending the turn upstream: {e}");
        }
    }
    if let Err(e) = socket.flush().await {
        *ws = None;
        anyhow::bail!("sending the turn upstream: {e}");
    }
    Ok(())
}

async fn send(ws: &mut Option<Socket>, event: Value) {
    if let Some(socket) = ws.as_mut()
        && let Err(e) = socket.send(Message::text(event.to_string())).await
    {
        debug!("upstream send failed: {e}");
    }
}

async fn on_event(
    event: Value,
    active: &mut Option<Active>,
    items: &mut VecDeque<(String, String)>,
    stale: &VecDeque<String>,
) {
    let kind = event.get("type").and_then(Value::as_str).unwrap_or("");
    let Some(a) = active.as_mut() else {
        if kind == "error" {
            warn!(error = %event["error"], "upstream error between responses");
        }
        return;
    };
    // Events of another upstream response (an earlier, cancelled one) are not this one's.
    let response_id = event
        .get("response_id")
        .or_else(|| event.pointer("/response/id"))
        .and_then(Value::as_str);
    let ours = match (response_id, &a.upstream_id) {
        (Some(r), Some(mine)) => r == mine,
        // Before this response's `response.created`: a replaced response's trailing events.
        (Some(_), None) => false,
        (None, _) => true,
    };
    match kind {
        "response.created"
            if a.upstream_id.is_none()
                && response_id.is_some_and(|r| !stale.iter().any(|s| s == r)) =>
        {
            a.upstream_id = response_id.map(str::to_owned);
        }
        "response.output_item.added" | "response.output_audio.delta" if ours => {
            let item = event
                .get("item_id")
                .or_else(|| event.pointer("/item/id"))
                .and_then(Value::as_str);
            if let (None, Some(item)) = (&a.item_id, item) {
                a.item_id = Some(item.to_string());
                if items.len() >= REMEMBERED_ITEMS {
                    items.pop_front();
                }
                items.push_back((a.voq_id.clone(), item.to_string()));
            }
            if kind == "response.output_audio.delta" && !a.cancelled {
                let Some(bytes) = event
                    .get("delta")
                    .and_then(Value::as_str)
                    .and_then(|d| BASE64.decode(d).ok())
                else {
                    warn!("upstream audio delta without base64 audio: skipped");
                    return;
                };
                let pcm: Vec<i16> = bytes
                    .chunks_exact(2)
                    .map(|b| i16::from_le_bytes([b[0], b[1]]))
                    .collect();
                a.samples_forwarded += pcm.len() as u64;
                if a.reply.send(pcm).await.is_err() {
                    a.cancelled = true;
                }
            }
        }
        "response.output_audio_transcript.delta" if ours && !a.cancelled => {
            if let Some(delta) = event.get("delta").and_then(Value::as_str)
                && a.reply.transcript(delta).await.is_err()
            {
                a.cancelled = true;
            }
        }
        "response.done" if ours => {
            let status = event
                .pointer("/response/status")
                .and_then(Value::as_str)
                .unwrap_or("completed");
            let result = match status {
                "completed" | "cancelled" | "incomplete" => Ok(()),
                other => Err(format!(
                    "the upstream response ended {other}: {}",
                    event
                        .pointer("/response/status_details")
                        .unwrap_or(&Value::Null)
                )),
            };
            a.finish(result);
            *active = None;
        }
        "error" => {
            let code = event.pointer("/error/code").and_then(Value::as_str);
            let message = event
                .pointer("/error/message")
                .and_then(Value::as_str)
                .unwrap_or("");
            // A cancel that crossed the response's end is not a failure.
            if a.cancelled || code == Some("response_cancel_not_active") {
                debug!(?code, "upstream error after a cancel: {message}");
                return;
            }
            a.finish(Err(format!(
                "upstream error {}: {message}",
                code.unwrap_or("(no code)")
            )));
            *active = None;
        }
        _ => {}
    }
}
