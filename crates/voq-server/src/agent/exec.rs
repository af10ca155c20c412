//! `exec:CMD`: a program per session that speaks newline-delimited JSON on stdin/stdout using
//! OpenAI Realtime event shapes, so an agent written in any language plugs in. Protocol
//! (documented in docs/PROTOCOL.md, "exec agents"):
//!
//! ```text
//! voq → agent  {"type":"session.created","session":{"id":…,"audio_format":"pcm16","sample_rate":24000}}
//!              {"type":"input_audio_buffer.append","audio":BASE64_PCM16}      (≤ 1 s per line)
//!              {"type":"input_audio_buffer.commit","item_id":…}
//!              {"type":"response.create","response":{"id":…}}
//!              {"type":"response.cancel","response_id":…}                     (barge-in)
//! agent → voq  {"type":"response.output_audio.delta","response_id":…,"delta":BASE64_PCM16}
//!              {"type":"response.done","response":{"id":…,"status":"completed"}}
//!              {"type":"error","error":{"message":…}}                         (fails the response)
//! ```
//!
//! A line that is not one of these is logged and skipped; a process that exits fails the
//! response in progress and is started again for the next turn.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::Mutex;

use super::{Agent, AgentFactory, AgentFuture, ReplySink, Turn};

/// A line longer than this is garbage (and would otherwise let a broken agent exhaust memory).
const MAX_LINE: u64 = 16 * 1024 * 1024;
/// How long an agent may stay silent in the middle of a response.
const LINE_TIMEOUT: Duration = Duration::from_secs(30);
/// Samples of user audio per `input_audio_buffer.append` line (1 s).
const APPEND_SAMPLES: usize = 24_000;

/// Factory for `exec:CMD` agents: `CMD` runs under `sh -c`, once per session.
#[derive(Debug, Clone)]
pub struct Exec {
    command: String,
}

impl Exec {
    pub fn new(command: &str) -> Self {
        Self {
            command: command.to_string(),
        }
    }
}

impl AgentFactory for Exec {
    fn session(&self) -> anyhow::Result<Arc<dyn Agent>> {
        Ok(Arc::new(ExecSession {
            command: self.command.clone(),
            proc: Mutex::new(None),
            next: Default::default(),
            history: Default::default(),
        }))
    }

    fn name(&self) -> String {
        format!("exec:{}", self.command)
    }
}

#[derive(Debug)]
struct Proc {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

/// One session's agent process.
#[derive(Debug)]
struct ExecSession {
    command: String,
    proc: Mutex<Option<Proc>>,
    next: std::sync::atomic::AtomicU64,
    /// A resumed session's conversation, for the program once it starts.
    history: std::sync::Mutex<Vec<crate::agent::HistoryItem>>,
}

impl ExecSession {
    async fn spawn(&self) -> anyhow::Result<Proc> {
        let mut child = Command::new("sh")
            .args(["-c", &self.command])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("exec agent: cannot start `{}`", self.command))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            anyhow::bail!("exec agent: no pipes to `{}`", self.command);
        };
        let mut proc = Proc {
            child,
            stdin,
            stdout: BufReader::new(stdout),
        };
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let hello = json!({"type": "session.created", "session": {
            "id": format!("agent_sess_{id}"), "audio_format": "pcm16", "sample_rate": voq_audio::SAMPLE_RATE}});
        write_line(&mut proc.stdin, &hello).await?;
        let history = std::mem::take(&mut *self.history.lock().unwrap_or_else(|p| p.into_inner()));
        for item in history {
            let bytes: Vec<u8> = item.audio.iter().flat_map(|s| s.to_le_bytes()).collect();
            let event = json!({"type": "conversation.item.create", "item": {
                "id": item.item_id, "type": "message", "role": "user",
                "content": [{"type": "input_audio", "audio": BASE64.encode(bytes)}]}});
            write_line(&mut proc.stdin, &event).await?;
        }
        Ok(proc)
    }
}

async fn write_line(stdin: &mut ChildStdin, value: &Value) -> anyhow::Result<()> {
    write_line_within(stdin, value, LINE_TIMEOUT).await
}

/// Writes one line; an agent that stops reading its input would otherwise hold the response
/// (and the session's agent slot) forever.
async fn write_line_within(
    stdin: &mut ChildStdin,
    value: &Value,
    timeout: Duration,
) -> anyhow::Result<()> {
    let mut line = serde_json::to_vec(value)?;
    line.push(b'\n');
    tokio::time::timeout(timeout, stdin.write_all(&line))
        .await
        .map_err(|_| anyhow::Error::new(Stuck("it stopped reading its input")))?
        .context("exec agent: its stdin is closed (did it exit?)")?;
    Ok(())
}

/// Reads one line (capped); `None` at end of output.
async fn read_line(stdout: &mut BufReader<ChildStdout>) -> anyhow::Result<Option<Vec<u8>>> {
    let mut buf = Vec::new();
    let n = tokio::time::timeout(
        LINE_TIMEOUT,
        (&mut *stdout).take(MAX_LINE).read_until(b'\n', &mut buf),
    )
    .await
    .map_err(|_| anyhow::Error::new(Stuck("no output for 30 s in the middle of a response")))??;
    if n == 0 {
        return Ok(None);
    }
    anyhow::ensure!(
        buf.ends_with(b"\n") || (n as u64) < MAX_LINE,
        "exec agent: output line over 16 MiB"
    );
    Ok(Some(buf))
}

/// The agent process stopped reading or writing: it is restarted for the next turn, like one
/// that exited.
#[derive(Debug, thiserror::Error)]
#[error("exec agent: {0}")]
struct Stuck(&'static str);

/// What one line of agent output means for the response `want`.
#[derive(Debug, PartialEq)]
enum Line {
    Audio(Vec<i16>),
    Done,
    Failed(String),
    /// Valid but not for us (a cancelled response's leftovers, events we do not use).
    Ignored,
    Garbage(String),
}

fn classify(line: &[u8], want: &str) -> Line {
    let value: Value = match serde_json::from_slice(line) {
        Ok(v) => v,
        Err(e) => return Line::Garbage(format!("not JSON ({e})")),
    };
    let kind = value.get("type").and_then(Value::as_str).unwrap_or("");
    let response_id = value
        .get("response_id")
        .or_else(|| value.pointer("/response/id"))
        .and_then(Value::as_str);
    let ours = response_id.is_none_or(|id| id == want);
    match kind {
        "response.output_audio.delta" | "response.audio.delta" if ours => {
            let Some(delta) = value.get("delta").and_then(Value::as_str) else {
                return Line::Garbage("audio delta without \"delta\"".into());
            };
            match BASE64.decode(delta) {
                Ok(bytes) if bytes.len() % 2 == 0 => Line::Audio(
                    bytes
                        .chunks_exact(2)
                        .map(|c| i16::from_le_bytes([c[0], c[1]]))
                        .collect(),
                ),
                Ok(_) => Line::Garbage("audio delta with an odd number of bytes".into()),
                Err(e) => Line::Garbage(format!("audio delta is not base64 ({e})")),
            }
        }
        "response.done" if ours => {
            match value.pointer("/response/status").and_then(Value::as_str) {
                Some("failed") => Line::Failed("the agent reported status failed".into()),
                _ => Line::Done,
            }
        }
        "error" => Line::Failed(
            value
                .pointer("/error/message")
                .and_then(Value::as_str)
                .unwrap_or("agent error")
                .to_string(),
        ),
        "" => Line::Garbage("no \"type\"".into()),
        _ => Line::Ignored,
    }
}

impl Agent for ExecSession {
    fn respond(self: Arc<Self>, turn: Turn, mut reply: ReplySink) -> AgentFuture {
        Box::pin(async move {
            let mut guard = self.proc.lock().await;
            let alive = match guard.as_mut() {
                Some(p) => p.child.try_wait().ok().flatten().is_none(),
                None => false,
            };
            if !alive {
                *guard = Some(self.spawn().await?);
            }
            let Some(proc) = guard.as_mut() else {
                anyhow::bail!("exec agent: no process")
            };
            let result = converse(proc, &turn, &mut reply).await;
            let exited = proc.child.try_wait().ok().flatten().is_some();
            let stuck = result
                .as_ref()
                .err()
                .is_some_and(|e| e.downcast_ref::<Stuck>().is_some());
            if result.is_err() && (exited || stuck) {
                // Dead or stuck: drop it (killing it) and start a new one for the next turn.
                *guard = None;
            }
            result
        })
    }

    fn history(self: Arc<Self>, turns: Vec<crate::agent::HistoryItem>) -> AgentFuture {
        // Kept for the program, which starts with the session's next turn (before it, here).
        self.history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(turns);
        Box::pin(async { Ok(()) })
    }

    fn cancel(self: Arc<Self>, response_id: &str) -> AgentFuture {
        let response_id = response_id.to_string();
        Box::pin(async move {
            if let Some(proc) = self.proc.lock().await.as_mut() {
                write_line(
                    &mut proc.stdin,
                    &json!({"type": "response.cancel", "response_id": response_id}),
                )
                .await?;
            }
            Ok(())
        })
    }
}

async fn converse(proc: &mut Proc, turn: &Turn, reply: &mut ReplySink) -> anyhow::Result<()> {
    for chunk in turn.audio.chunks(APPEND_SAMPLES) {
        let bytes: Vec<u8> = chunk.iter().flat_map(|s| s.to_le_bytes()).collect();
        write_line(
            &mut proc.stdin,
            &json!({"type": "input_audio_buffer.append", "audio": BASE64.encode(bytes)}),
        )
        .await?;
    }
    write_line(
        &mut proc.stdin,
        &json!({"type": "input_audio_buffer.commit", "item_id": turn.item_id}),
    )
    .await?;
    write_line(
        &mut proc.stdin,
        &json!({"type": "response.create", "response": {"id": turn.response_id}}),
    )
    .await?;
    loop {
        let Some(line) = read_line(&mut proc.stdout).await? else {
            let status = proc
                .child
                .wait()
                .await
                .map(|s| s.to_string())
                .unwrap_or_default();
            anyhow::bail!("exec agent: the process exited ({status}) before response.done");
        };
        match classify(&line, &turn.response_id) {
            Line::Audio(pcm) => reply.send(pcm).await?,
            Line::Done => return Ok(()),
            Line::Failed(why) => anyhow::bail!("exec agent: {why}"),
            Line::Ignored => {}
            Line::Garbage(why) => {
                let shown = String::from_utf8_lossy(&line[..line.len().min(80)])
                    .trim_end()
                    .to_string();
                tracing::warn!(response_id = %turn.response_id, "exec agent wrote garbage, skipped: {why}: {shown:?}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_agent_that_stops_reading_its_input_is_an_error_not_a_hang() -> anyhow::Result<()> {
        let mut child = Command::new("sleep")
            .arg("30")
            .stdin(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let mut stdin = child.stdin.take().expect("piped");
        // More than a pipe buffer holds, to a process that never reads.
        let big = json!({"type": "input_audio_buffer.append", "audio": "A".repeat(1 << 20)});
        let err = write_line_within(&mut stdin, &big, Duration::from_millis(200))
            .await
            .expect_err("must time out");
        assert!(err.to_string().contains("stopped reading"), "{err}");
        Ok(())
    }

    #[test]
    fn lines_are_classified() {
        let audio = BASE64.encode([1u8, 0, 255, 255]);
        let delta = format!(
            r#"{{"type":"response.output_audio.delta","response_id":"r1","delta":"{audio}"}}"#
        );
        assert_eq!(classify(delta.as_bytes(), "r1"), Line::Audio(vec![1, -1]));
        assert_eq!(
            classify(delta.as_bytes(), "r2"),
            Line::Ignored,
            "a cancelled response's leftovers"
        );
        assert_eq!(
            classify(br#"{"type":"response.done","response":{"id":"r1"}}"#, "r1"),
            Line::Done
        );
        assert!(
            matches!(classify(br#"{"type":"error","error":{"message":"x"}}"#, "r1"), Line::Failed(m) if m == "x")
        );
        assert!(matches!(classify(b"hello", "r1"), Line::Garbage(_)));
        assert!(matches!(
            classify(
                br#"{"type":"response.output_audio.delta","delta":"!!"}"#,
                "r1"
            ),
            Line::Garbage(_)
        ));
        assert!(matches!(
            classify(
                br#"{"type":"response.output_audio.delta","delta":"AQ=="}"#,
                "r1"
            ),
            Line::Garbage(_)
        ));
        assert_eq!(
            classify(br#"{"type":"rate_limits.updated"}"#, "r1"),
            Line::Ignored
        );
    }
}
