//! `echo`: answers each turn with the same audio (bit-exact in pcm16).

use std::sync::Arc;

use super::{Agent, AgentFactory, AgentFuture, ReplySink, Turn, stream_pcm};

/// Says back what it heard.
#[derive(Debug, Clone, Copy, Default)]
pub struct Echo;

impl Agent for Echo {
    fn respond(self: Arc<Self>, turn: Turn, mut reply: ReplySink) -> AgentFuture {
        Box::pin(async move {
            stream_pcm(&turn.audio, &mut reply, std::time::Duration::ZERO).await?;
            Ok(())
        })
    }
}

impl AgentFactory for Echo {
    fn session(&self) -> anyhow::Result<Arc<dyn Agent>> {
        Ok(Arc::new(Echo))
    }

    fn name(&self) -> String {
        "echo".into()
    }
}
