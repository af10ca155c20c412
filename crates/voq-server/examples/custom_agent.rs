//! Plugging your own AI into voq: implement `Agent` (and an `AgentFactory` that makes one per
//! session), then start a server with it.
//!
//! This agent answers every turn with a short melody, one note per second the user spoke,
//! generated faster than real time (voq paces it to the client). A real agent would call a speech
//! recognizer, a language model and a TTS engine here, streaming TTS audio into `reply` as it
//! arrives.
//!
//! Run: `cargo run -p voq-server --example custom_agent`, then in another shell
//! `cargo run -p voq -- call https://127.0.0.1:4443 --input testdata/audio/prompt-carwash-24k.wav --insecure`

use std::sync::Arc;
use std::time::Duration;

use voq_server::agent::{Agent, AgentFactory, AgentFuture, ReplySink, Turn};
use voq_server::{Server, Settings};

/// The agent of one session. State that lives as long as the session goes here.
struct Melody;

impl Agent for Melody {
    fn respond(self: Arc<Self>, turn: Turn, mut reply: ReplySink) -> AgentFuture {
        Box::pin(async move {
            let seconds = (turn.audio.len() / voq_audio::SAMPLE_RATE as usize).max(1);
            for note in 0..seconds {
                let freq = 440.0 * 2f32.powf(note as f32 / 12.0);
                let tone: Vec<i16> = (0..voq_audio::SAMPLE_RATE as usize / 2)
                    .map(|i| {
                        let t = i as f32 / voq_audio::SAMPLE_RATE as f32;
                        (8000.0 * (2.0 * std::f32::consts::PI * freq * t).sin()) as i16
                    })
                    .collect();
                // `send` returns Err once the user has barged in: stop generating then.
                reply.send(tone).await?;
                tokio::time::sleep(Duration::from_millis(50)).await; // "thinking"
            }
            Ok(())
        })
    }

    // Optional: tell a remote model to stop when the user interrupts.
    fn cancel(self: Arc<Self>, response_id: &str) -> AgentFuture {
        let id = response_id.to_string();
        Box::pin(async move {
            eprintln!("custom agent: user interrupted {id}");
            Ok(())
        })
    }
}

struct MelodyFactory;

impl AgentFactory for MelodyFactory {
    fn session(&self) -> anyhow::Result<Arc<dyn Agent>> {
        Ok(Arc::new(Melody))
    }

    fn name(&self) -> String {
        "melody".into()
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let server = Server::start_with_agent(Settings::default(), Arc::new(MelodyFactory)).await?;
    eprintln!(
        "custom agent serving on {}\n  {}",
        server.local_addr(),
        server.connect_hint()
    );
    tokio::signal::ctrl_c().await?;
    server.shutdown().await;
    Ok(())
}
