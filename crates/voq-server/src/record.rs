//! `--record DIR`: every user turn and every agent response as a WAV file with a JSON sidecar,
//! for debugging and evaluations. Layout: `DIR/<session>/<item or response id>.{wav,json}`.
//! Writing happens on a blocking thread; a failure is logged and never affects the session.
//! [`Recorder::flush`] waits for the writes in progress (the server's shutdown does), so a
//! stopped server has written everything it recorded.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

use serde_json::json;
use voq_proto::event::ResponseStatus;
use voq_proto::event::VoqResponseStats;

/// When a turn's first audio frame reached the server: for measuring setup from the recording
/// (`first_frame_unix_ms` against the client's clock on the same machine) without polling.
#[derive(Debug, Clone, Copy)]
pub struct FirstFrame {
    /// From the connection being up (handshake done) to the frame.
    pub after_connected_ms: u64,
    /// Wall clock.
    pub unix_ms: u64,
}

#[derive(Debug, Clone)]
pub struct Recorder {
    dir: PathBuf,
    pending: Arc<Pending>,
}

/// Writes in progress, and a wake-up when one ends.
#[derive(Debug, Default)]
struct Pending {
    writes: AtomicUsize,
    done: Notify,
}

impl Recorder {
    /// Creates `dir` if needed; fails now rather than at the first turn.
    pub fn new(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| {
            anyhow::anyhow!("cannot create the record directory {}: {e}", dir.display())
        })?;
        Ok(Self {
            dir: dir.to_path_buf(),
            pending: Arc::default(),
        })
    }

    pub fn user_turn(
        &self,
        (session, transport): (&str, &str),
        item_id: &str,
        pcm: &[i16],
        frames: u64,
        audio_ms: u64,
        first_frame: Option<FirstFrame>,
    ) {
        let meta = json!({
            "kind": "user_turn", "session_id": session, "transport": transport, "item_id": item_id,
            "frames": frames, "audio_ms": audio_ms, "samples": pcm.len(),
            "sample_rate": voq_audio::SAMPLE_RATE, "recorded_at_unix_ms": unix_ms(),
            "first_frame_unix_ms": first_frame.map(|f| f.unix_ms),
            "first_frame_after_connected_ms": first_frame.map(|f| f.after_connected_ms),
        });
        self.write(session, item_id, pcm.to_vec(), meta);
    }

    pub fn response(
        &self,
        (session, transport): (&str, &str),
        response_id: &str,
        pcm: &[i16],
        status: ResponseStatus,
        stats: &VoqResponseStats,
    ) {
        let meta = json!({
            "kind": "agent_response", "session_id": session, "transport": transport,
            "response_id": response_id,
            "status": status.as_str(), "samples": pcm.len(),
            "sample_rate": voq_audio::SAMPLE_RATE, "audio_ms_generated": stats.audio_ms_generated,
            "audio_ms_sent": stats.audio_ms_sent, "bytes_sent": stats.bytes_sent,
            "frames_sent": stats.frames_sent, "recorded_at_unix_ms": unix_ms(),
        });
        self.write(session, response_id, pcm.to_vec(), meta);
    }

    /// Waits until every write started so far has finished (written or failed and logged).
    pub async fn flush(&self) {
        loop {
            let done = self.pending.done.notified();
            if self.pending.writes.load(Ordering::Acquire) == 0 {
                return;
            }
            done.await;
        }
    }

    /// Where the user turn `item_id` of `session` is (or will be) recorded.
    pub fn user_turn_path(&self, session: &str, item_id: &str) -> PathBuf {
        self.dir
            .join(safe(session))
            .join(safe(item_id))
            .with_extension("wav")
    }

    fn write(&self, session: &str, name: &str, pcm: Vec<i16>, meta: serde_json::Value) {
        let dir = self.dir.join(safe(session));
        let base = dir.join(safe(name));
        let pending = self.pending.clone();
        pending.writes.fetch_add(1, Ordering::AcqRel);
        tokio::task::spawn_blocking(move || {
            let result = std::fs::create_dir_all(&dir)
                .map_err(anyhow::Error::from)
                .and_then(|()| {
                    voq_audio::write_wav_file(
                        base.with_extension("wav"),
                        &pcm,
                        voq_audio::SAMPLE_RATE,
                    )?;
                    std::fs::write(
                        base.with_extension("json"),
                        serde_json::to_vec_pretty(&meta)?,
                    )?;
                    Ok(())
                });
            if let Err(e) = result {
                tracing::warn!("recording {} failed: {e:#}", base.display());
            }
            pending.writes.fetch_sub(1, Ordering::AcqRel);
            pending.done.notify_waiters();
        });
    }
}

/// Ids come from the client: only safe characters, so a name cannot leave the directory.
fn safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
