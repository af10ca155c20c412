//! `speak`: answers with real synthesized speech (espeak-ng), telling the user how long they
//! spoke. espeak-ng synthesizes far faster than real time, so the reply is sent ahead.

use std::sync::Arc;

use anyhow::Context;
use tokio::process::Command;

use super::{Agent, AgentFactory, AgentFuture, ReplySink, Turn, stream_pcm};

/// Speaks a sentence about the user's turn with espeak-ng.
#[derive(Debug, Clone)]
pub struct Speak {
    program: String,
}

impl Speak {
    /// Checks that espeak-ng is installed (scripts/setup installs it).
    pub fn new() -> anyhow::Result<Self> {
        let program = "espeak-ng".to_string();
        let found = std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(&program).is_file()));
        anyhow::ensure!(
            found,
            "speak agent: espeak-ng is not installed (run scripts/setup)"
        );
        Ok(Self { program })
    }

    /// What the agent says about a turn of `ms` milliseconds.
    pub fn sentence(ms: u64) -> String {
        format!(
            "You spoke for {}.{} seconds. This is voq, speaking over QUIC.",
            ms / 1000,
            ms % 1000 / 100
        )
    }

    /// Synthesizes `text` to 24 kHz mono pcm16.
    pub async fn synthesize(&self, text: &str) -> anyhow::Result<Vec<i16>> {
        let out = Command::new(&self.program)
            .args(["--stdout", "-s", "170", text])
            .kill_on_drop(true)
            .output()
            .await
            .with_context(|| format!("speak agent: cannot run {}", self.program))?;
        anyhow::ensure!(
            out.status.success(),
            "speak agent: espeak-ng failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let wav = voq_audio::read_wav(&out.stdout)
            .context("speak agent: espeak-ng wrote no valid WAV")?;
        Ok(wav.to_mono_24k()?)
    }
}

impl Agent for Speak {
    fn respond(self: Arc<Self>, turn: Turn, mut reply: ReplySink) -> AgentFuture {
        Box::pin(async move {
            let ms = turn.audio.len() as u64 * 1000 / voq_audio::SAMPLE_RATE as u64;
            let pcm = self.synthesize(&Self::sentence(ms)).await?;
            stream_pcm(&pcm, &mut reply, std::time::Duration::ZERO).await?;
            Ok(())
        })
    }
}

impl AgentFactory for Speak {
    fn session(&self) -> anyhow::Result<Arc<dyn Agent>> {
        Ok(Arc::new(self.clone()))
    }

    fn name(&self) -> String {
        "speak".into()
    }
}
