//! `--record DIR`: every user turn and every agent response as a WAV file with a JSON sidecar,
//! for debugging and evaluations. Layout: `DIR/<session>/<item or response id>.{wav,json}`.
//! Writing happens on a blocking thread; a failure is logged and never affects the session.

use std::path::{Path, PathBuf};

use serde_json::json;
use voq_proto::event::ResponseStatus;
use voq_proto::event::VoqResponseStats;

#[derive(Debug, Clone)]
pub struct Recorder {
    dir: PathBuf,
}

impl Recorder {
    /// Creates `dir` if needed; fails now rather than at the first turn.
    pub fn new(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| {
            anyhow::anyhow!("cannot create the record directory {}: {e}", dir.display())
        })?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    pub fn user_turn(
        &self,
        (session, transport): (&str, &str),
        item_id: &str,
        pcm: &[i16],
        frames: u64,
        audio_ms: u64,
    ) {
        let meta = json!({
            "kind": "user_turn", "session_id": session, "transport": transport, "item_id": item_id,
            "frames": frames, "audio_ms": audio_ms, "samples": pcm.len(),
            "sample_rate": voq_audio::SAMPLE_RATE, "recorded_at_unix_ms": unix_ms(),
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

    fn write(&self, session: &str, name: &str, pcm: Vec<i16>, meta: serde_json::Value) {
        // Ids come from the client: keep only safe characters so a name cannot leave the dir.
        let safe = |s: &str| -> String {
            s.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect()
        };
        let dir = self.dir.join(safe(session));
        let base = dir.join(safe(name));
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
        });
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
