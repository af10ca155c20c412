//! Async glue between a carrier's streams and a sans-IO voq/1 session.
//!
//! Each stream gets a task: readers forward bytes to the session loop as [`Inbound`] messages;
//! writers take [`WriteCmd`]s so that the session loop never awaits a slow peer. A reset
//! overtakes queued data, so a client that never reads cannot delay a barge-in, and a stop
//! signal ends a reader with STOP_SENDING.
//!
//! [`carrier`] puts the three carriers (QUIC, WebTransport, WebSocket) behind one [`Link`];
//! [`streams`] runs the tasks and keeps a session's stream table over any of them.
#![warn(missing_docs)]

use tokio::sync::{mpsc, oneshot};
use voq_proto::Code;
use voq_proto::stream::{OutStream, StreamId};

pub mod carrier;
pub mod quic;
pub mod recovery;
pub mod streams;
pub mod ws;

pub use carrier::{Carrier, Link, LinkError};
pub use quic::sleep_until;
pub use streams::Streams;
/// web-transport-quinn, re-exported for the shells that accept and dial WebTransport sessions.
pub use web_transport_quinn;

/// What reader and writer tasks report to a session loop.
#[derive(Debug)]
pub enum Inbound {
    /// Bytes on the control stream.
    Control(Vec<u8>),
    /// The control stream ended.
    ControlClosed,
    /// The peer opened a unidirectional stream; send on `stop` to ask it to stop sending.
    Opened(StreamId, oneshot::Sender<Code>),
    /// Bytes on a unidirectional stream.
    Data(StreamId, Vec<u8>),
    /// The stream ended cleanly.
    Fin(StreamId),
    /// The peer reset the stream with this code.
    Reset(StreamId, u64),
    /// The peer sent STOP_SENDING on one of our streams.
    Stopped(OutStream, u64),
}

/// Commands to a writer task.
#[derive(Debug)]
pub enum WriteCmd {
    /// Write these bytes.
    Data(Vec<u8>),
    /// End the stream after what was written.
    Finish,
}

/// A writer task's handle.
#[derive(Debug)]
pub struct Writer {
    tx: mpsc::UnboundedSender<WriteCmd>,
    reset: Option<oneshot::Sender<Code>>,
}

impl Writer {
    /// A handle over the task's command channel and its reset signal.
    pub fn new(tx: mpsc::UnboundedSender<WriteCmd>, reset: oneshot::Sender<Code>) -> Self {
        Self {
            tx,
            reset: Some(reset),
        }
    }

    /// Queues bytes (never blocks; the amount queued is bounded by the session's pacing).
    pub fn write(&self, bytes: Vec<u8>) {
        let _ = self.tx.send(WriteCmd::Data(bytes));
    }

    /// Finishes the stream after what is queued.
    pub fn finish(self) {
        let _ = self.tx.send(WriteCmd::Finish);
    }

    /// Resets the stream now, dropping whatever is queued.
    pub fn reset(mut self, code: Code) {
        if let Some(reset) = self.reset.take() {
            let _ = reset.send(code);
        }
    }
}
