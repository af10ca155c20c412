//! `file:PATH`: answers every turn with the same WAV file, generated at a fixed multiple of real
//! time — a deterministic stand-in for a TTS model in benchmarks.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use super::{Agent, AgentFactory, AgentFuture, ReplySink, Turn, stream_pcm};

/// Replays a WAV file (converted once to 24 kHz mono) at `speed` × real time.
#[derive(Debug, Clone)]
pub struct FileAgent {
    path: String,
    pcm: Arc<Vec<i16>>,
    /// Pause after each 20 ms chunk (zero for speed = infinity).
    pause: Duration,
}

impl FileAgent {
    /// `speed` is a multiple of real time (4.0 = four times faster); 0 or infinity means as fast
    /// as the session takes it.
    pub fn open(path: &Path, speed: f64) -> anyhow::Result<Self> {
        let wav = voq_audio::read_wav_file(path)
            .with_context(|| format!("file agent: cannot read {}", path.display()))?;
        let pcm = wav
            .to_mono_24k()
            .with_context(|| format!("file agent: cannot convert {}", path.display()))?;
        anyhow::ensure!(
            !pcm.is_empty(),
            "file agent: {} has no audio",
            path.display()
        );
        anyhow::ensure!(
            speed >= 0.0 && !speed.is_nan(),
            "file agent: speed must be >= 0, got {speed}"
        );
        let frame = Duration::from_millis(voq_audio::FRAME_MS as u64);
        let pause = if speed == 0.0 || speed.is_infinite() {
            Duration::ZERO
        } else {
            frame.div_f64(speed)
        };
        Ok(Self {
            path: path.display().to_string(),
            pcm: Arc::new(pcm),
            pause,
        })
    }

    /// Duration of the reply.
    pub fn duration(&self) -> Duration {
        Duration::from_millis(self.pcm.len() as u64 * 1000 / voq_audio::SAMPLE_RATE as u64)
    }
}

impl Agent for FileAgent {
    fn respond(self: Arc<Self>, _turn: Turn, mut reply: ReplySink) -> AgentFuture {
        Box::pin(async move {
            stream_pcm(&self.pcm, &mut reply, self.pause).await?;
            Ok(())
        })
    }
}

impl AgentFactory for FileAgent {
    fn session(&self) -> anyhow::Result<Arc<dyn Agent>> {
        Ok(Arc::new(self.clone()))
    }

    fn name(&self) -> String {
        format!("file:{}", self.path)
    }
}
