//! The native voq client: connects over QUIC, WebTransport or WebSocket, sends user turns, plays
//! agent audio by timestamp through a simulated audio device, barges in, and reports what
//! happened. `voq call` is a thin wrapper around [`Client::call`].

mod call;
pub mod report;
pub mod tls;

pub use call::{CallOptions, CallOutcome, Client, Target};
pub use report::CallReport;
pub use tls::Trust;
pub use voq_proto::event::Token;
