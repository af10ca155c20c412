//! Server counters: cheap atomics, read as a snapshot (logged at shutdown; exported by the
//! metrics endpoint of the HTTP carrier).

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

macro_rules! stats {
    ($($name:ident: $help:literal),* $(,)?) => {
        /// Counters of one server.
        #[derive(Debug, Default)]
        pub struct Stats { $(#[doc = $help] pub $name: Counter,)* }

        impl Stats {
            /// `(name, help, value)` of every counter, for logs and metrics exposition.
            pub fn snapshot(&self) -> Vec<(&'static str, &'static str, u64)> {
                vec![$((concat!("voq_", stringify!($name)), $help, self.$name.get()),)*]
            }
        }
    };
}

stats! {
    connections_accepted: "QUIC connections accepted",
    connections_refused: "connections refused (handshake failure, capacity)",
    sessions_started: "voq sessions started",
    sessions_ended: "voq sessions ended",
    turns_committed: "user turns committed",
    prompt_frames: "user audio frames received",
    responses_started: "agent responses started",
    responses_ended: "agent responses ended (any status)",
    agent_failures: "agent responses that failed",
    agent_bytes_sent: "bytes of agent audio frames sent",
    client_errors: "error events sent for bad client input",
}
