//! Agents: what answers the user. Implement [`Agent`] to plug in your own AI; see
//! `examples/custom_agent.rs` in this crate. Built in: `echo`, `speak`, `file:PATH`, `exec:CMD`,
//! `realtime:URL` (a bridge to an upstream Realtime model).
//!
//! A session gets its own agent from an [`AgentFactory`] (so per-session state such as a child
//! process is natural). For each committed user turn the session calls [`Agent::respond`] on a
//! task of its own and reads the reply audio from the [`ReplySink`]. When the user barges in the
//! session drops that task (cancelling the future at its next `.await`) and calls
//! [`Agent::cancel`]. Agents may produce audio faster than real time: the session paces it to the
//! client.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::mpsc;

mod echo;
mod exec;
mod file;
mod realtime;
mod speak;

pub use echo::Echo;
pub use exec::Exec;
pub use file::FileAgent;
pub use realtime::RealtimeBridge;
pub use speak::Speak;

/// A user turn, as the agent sees it: the whole committed audio, 24 kHz mono pcm16.
#[derive(Debug, Clone)]
pub struct Turn {
    pub item_id: String,
    pub response_id: String,
    pub audio: Vec<i16>,
}

/// The future an agent returns for one response.
pub type AgentFuture = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

/// An AI agent for one session.
pub trait Agent: Send + Sync + 'static {
    /// Answers `turn`: send 24 kHz mono pcm16 to `reply` as it is generated, return when done.
    /// An error ends the response as `failed` and the client gets an `error` event.
    fn respond(self: Arc<Self>, turn: Turn, reply: ReplySink) -> AgentFuture;

    /// The user interrupted `response_id`; the future of [`Agent::respond`] was already
    /// dropped. Override to tell a remote model to stop.
    fn cancel(self: Arc<Self>, _response_id: &str) -> AgentFuture {
        Box::pin(async { Ok(()) })
    }

    /// The user heard `audio_end_ms` of `response_id`'s audio and no more (a barge-in; after
    /// [`Agent::cancel`]): exact, the client's played cursor. Override to keep a remote model's
    /// conversation to what was heard (the Realtime bridge sends `conversation.item.truncate`).
    ///
    /// The session calls `cancel` and `truncated` in order; what an implementation does before
    /// returning its future happens in that order too.
    fn truncated(self: Arc<Self>, _response_id: &str, _audio_end_ms: u64) -> AgentFuture {
        Box::pin(async { Ok(()) })
    }

    /// The conversation so far of a session this agent takes over (a resumed session, on a new
    /// server): the user turns its store kept, oldest first, before any new turn. Override to
    /// give a fresh agent the context (the exec agent hands them to its program as Realtime
    /// `conversation.item.create` events). What an implementation does before returning its
    /// future happens before the session's next [`Agent::respond`].
    fn history(self: Arc<Self>, _turns: Vec<HistoryItem>) -> AgentFuture {
        Box::pin(async { Ok(()) })
    }
}

/// A user turn of the conversation before a resume ([`Agent::history`]).
#[derive(Debug, Clone)]
pub struct HistoryItem {
    /// The user item.
    pub item_id: String,
    /// Its audio, 24 kHz mono pcm16.
    pub audio: Vec<i16>,
}

/// Makes one agent per session.
pub trait AgentFactory: Send + Sync + 'static {
    fn session(&self) -> anyhow::Result<Arc<dyn Agent>>;
    /// Name for logs and reports.
    fn name(&self) -> String;
}

/// Where an agent writes its reply audio.
#[derive(Debug)]
pub struct ReplySink {
    pub(crate) response_id: String,
    pub(crate) tx: mpsc::Sender<AgentMsg>,
}

/// The session is no longer listening (the response was cancelled or the session ended).
#[derive(Debug, thiserror::Error)]
#[error("the response was cancelled")]
pub struct Cancelled;

impl ReplySink {
    /// Sends reply audio (any length; the session cuts it into frames). Waits when the session
    /// has enough queued: backpressure for agents far faster than real time.
    pub async fn send(&mut self, pcm: Vec<i16>) -> Result<(), Cancelled> {
        if pcm.is_empty() {
            return Ok(());
        }
        self.tx
            .send(AgentMsg::Audio {
                response_id: self.response_id.clone(),
                pcm,
            })
            .await
            .map_err(|_| Cancelled)
    }

    /// Sends text of what the agent is saying (a model's audio transcript): the client gets it
    /// at once as `response.output_audio_transcript.delta`.
    pub async fn transcript(&mut self, delta: &str) -> Result<(), Cancelled> {
        if delta.is_empty() {
            return Ok(());
        }
        self.tx
            .send(AgentMsg::Transcript {
                response_id: self.response_id.clone(),
                delta: delta.to_string(),
            })
            .await
            .map_err(|_| Cancelled)
    }

    pub fn response_id(&self) -> &str {
        &self.response_id
    }
}

/// What an agent task tells its session.
#[derive(Debug)]
pub(crate) enum AgentMsg {
    Audio {
        response_id: String,
        pcm: Vec<i16>,
    },
    Transcript {
        response_id: String,
        delta: String,
    },
    Done {
        response_id: String,
        result: Result<(), String>,
    },
}

/// Parses `--agent SPEC`: `echo`, `speak`, `file:PATH`, `exec:CMD` or `realtime:URL`.
pub fn from_spec(spec: &str, file_speed: f64) -> anyhow::Result<Arc<dyn AgentFactory>> {
    let (kind, arg) = spec.split_once(':').unwrap_or((spec, ""));
    Ok(match kind {
        "echo" => Arc::new(Echo),
        "speak" => Arc::new(Speak::new()?),
        "file" if !arg.is_empty() => Arc::new(FileAgent::open(arg.as_ref(), file_speed)?),
        "exec" if !arg.is_empty() => Arc::new(Exec::new(arg)),
        "realtime" if !arg.is_empty() => Arc::new(RealtimeBridge::new(arg)?),
        _ => anyhow::bail!(
            "unknown agent \"{spec}\": use echo, speak, file:PATH (a WAV file), exec:COMMAND \
             or realtime:WSS_URL (an upstream Realtime model)"
        ),
    })
}

/// Sends `pcm` in 20 ms chunks, pausing `pause` after each (zero: as fast as the session takes
/// it).
pub(crate) async fn stream_pcm(
    pcm: &[i16],
    reply: &mut ReplySink,
    pause: std::time::Duration,
) -> Result<(), Cancelled> {
    for chunk in pcm.chunks(voq_audio::FRAME_SAMPLES) {
        reply.send(chunk.to_vec()).await?;
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_or_explain() {
        assert_eq!(
            from_spec("echo", 4.0).map(|f| f.name()).ok().as_deref(),
            Some("echo")
        );
        let err = from_spec("parrot", 4.0)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("unknown agent \"parrot\""), "{err}");
        assert!(from_spec("file:", 4.0).is_err());
        let missing = from_spec("file:/no/such.wav", 4.0)
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert!(missing.contains("/no/such.wav"), "{missing}");
    }
}
