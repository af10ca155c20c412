//! One deterministic simulator of voq calls on virtual time.
//!
//! Callers ([`ClientSession`](voq_proto::client::ClientSession) with a microphone and an audio
//! device), servers ([`ServerSession`](voq_proto::server::ServerSession) with a fake agent that
//! speaks at 4× real time) and, optionally, the balancer's routing (`voq lb`'s
//! [`RoutingTable`](voq_lb::RoutingTable), with the servers issuing QUIC-LB connection IDs) talk
//! through real QUIC state machines (quinn-proto, TLS 1.3, ALPN `voq/1`) whose datagrams cross
//! seeded voq-netem paths: loss, delay, blackouts. There is no socket, no runtime and one reading
//! of the real clock: every later instant is that base plus a virtual offset, and the event loop
//! jumps to the earliest thing that has to happen (a QUIC timer, a packet delivery, a session
//! timer, a 10 ms device tick, an agent tick, a microphone frame, a fleet event). Seconds of call
//! run in milliseconds, and the same seeds give the same run.
//!
//! Two network models, one crate: [`ideal::Pair`] joins a client and a server session with an
//! ideal network (fixed delay, in order, nothing lost) for specifications of the protocol cores;
//! [`Sim`] runs them over real QUIC and impaired paths.
//!
//! A [`Scenario`] says who calls, what they say, what the network and the fleet do;
//! [`Sim::run`] returns a [`Summary`]; [`table`] renders summaries as the text pinned in
//! `crates/voq-sim/tests/summary.txt`. The tests in `tests/` state what the runs prove; the later
//! fleet and recovery work extends the scenarios.
//!
//! This crate is test rig (layer 4 in `scripts/layers.toml`): it links the balancer for its
//! routing decision, and nothing of it ships in `voq`.
#![warn(missing_docs)]

pub mod audio;
pub mod ideal;
mod quic;
mod scenario;
mod sim;
mod summary;
pub mod tls;

pub use scenario::{BlackoutAt, ClientPlan, FleetEvent, Prompt, Scenario};
pub use sim::Sim;
pub use summary::{ClientSummary, Summary, table};

/// Runs one scenario.
pub fn run(scenario: Scenario) -> Summary {
    Sim::new(scenario).run()
}
