//! Reader and writer tasks over any carrier's streams, and the stream table of a session.

use tokio::sync::{mpsc, oneshot};
use voq_proto::Code;
use voq_proto::stream::{OutStream, StreamId, Transmit};

use crate::carrier::{Link, Read, RecvHalf, SendHalf, WriteEnd};
use crate::{Inbound, WriteCmd, Writer};

/// Forwards the control stream to the session loop.
pub fn spawn_control_reader(mut recv: RecvHalf, tx: mpsc::UnboundedSender<Inbound>) {
    tokio::spawn(async move {
        loop {
            match recv.read().await {
                Read::Data(bytes) => {
                    if tx.send(Inbound::Control(bytes)).is_err() {
                        return;
                    }
                }
                Read::Fin | Read::Reset(_) | Read::Lost => {
                    let _ = tx.send(Inbound::ControlClosed);
                    return;
                }
            }
        }
    });
}

/// Accepts the peer's unidirectional streams and starts a reader for each.
pub fn spawn_uni_acceptor(link: Link, tx: mpsc::UnboundedSender<Inbound>) {
    tokio::spawn(async move {
        loop {
            // Stop accepting as soon as the session is gone: a later session on the same
            // connection (after rejected 0-RTT) must get the peer's streams, not this loop.
            let recv = tokio::select! {
                _ = tx.closed() => return,
                accepted = link.accept_uni() => match accepted {
                    Ok(recv) => recv,
                    Err(_) => return,
                },
            };
            let (stop_tx, stop_rx) = oneshot::channel();
            if tx.send(Inbound::Opened(recv.id(), stop_tx)).is_err() {
                return;
            }
            spawn_reader(recv, stop_rx, tx.clone());
        }
    });
}

fn spawn_reader(
    mut recv: RecvHalf,
    mut stop: oneshot::Receiver<Code>,
    tx: mpsc::UnboundedSender<Inbound>,
) {
    let id: StreamId = recv.id();
    tokio::spawn(async move {
        loop {
            let read = tokio::select! {
                biased;
                c = &mut stop => {
                    if let Ok(c) = c { recv.stop(c); }
                    return;
                }
                r = recv.read() => r,
            };
            let msg = match read {
                Read::Data(bytes) => Inbound::Data(id, bytes),
                Read::Fin => Inbound::Fin(id),
                Read::Reset(c) => Inbound::Reset(id, c),
                Read::Lost => Inbound::Reset(id, Code::Internal as u64),
            };
            let last = !matches!(msg, Inbound::Data(..));
            if tx.send(msg).is_err() || last {
                return;
            }
        }
    });
}

/// A writer for a stream that is opened first: opening may wait for stream credit, and the
/// session loop must not.
pub fn spawn_uni_writer(
    link: Link,
    stream: OutStream,
    tx: mpsc::UnboundedSender<Inbound>,
) -> Writer {
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let (reset_tx, reset_rx) = oneshot::channel();
    tokio::spawn(async move {
        let Ok(send) = link.open_uni().await else {
            return;
        };
        write_loop(send, Some(stream), cmd_rx, reset_rx, tx).await;
    });
    Writer::new(cmd_tx, reset_tx)
}

/// A writer for a stream already open (the control stream).
pub fn spawn_writer(send: SendHalf, tx: mpsc::UnboundedSender<Inbound>) -> Writer {
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let (reset_tx, reset_rx) = oneshot::channel();
    tokio::spawn(write_loop(send, None, cmd_rx, reset_rx, tx));
    Writer::new(cmd_tx, reset_tx)
}

async fn write_loop(
    mut send: SendHalf,
    stream: Option<OutStream>,
    mut cmds: mpsc::UnboundedReceiver<WriteCmd>,
    reset: oneshot::Receiver<Code>,
    tx: mpsc::UnboundedSender<Inbound>,
) {
    // A dropped reset sender (the handle was finished or dropped) is not a reset: only a code
    // aborts, so queued data is never lost when the handle goes away.
    let reset = async move {
        match reset.await {
            Ok(c) => c,
            Err(_) => std::future::pending().await,
        }
    };
    tokio::pin!(reset);
    loop {
        let cmd = tokio::select! {
            biased;
            c = &mut reset => {
                send.reset(c);
                return;
            }
            cmd = cmds.recv() => cmd,
        };
        match cmd {
            Some(WriteCmd::Data(bytes)) => {
                let result = tokio::select! {
                    biased;
                    c = &mut reset => {
                        send.reset(c);
                        return;
                    }
                    r = send.write_all(&bytes) => r,
                };
                if let Err(e) = result {
                    if let (Some(stream), WriteEnd::Stopped(c)) = (stream, e) {
                        let _ = tx.send(Inbound::Stopped(stream, c));
                    }
                    return;
                }
            }
            Some(WriteCmd::Finish) => {
                send.finish();
                // Stay until the peer has everything, stops us, or we reset.
                tokio::select! {
                    r = send.stopped() => {
                        if let (Some(stream), Some(c)) = (stream, r) {
                            let _ = tx.send(Inbound::Stopped(stream, c));
                        }
                    }
                    c = &mut reset => send.reset(c),
                }
                return;
            }
            None => return,
        }
    }
}

/// The streams of one connection as a session shell tracks them: the control stream, the
/// writers of streams this side opened, and the stop signals of the peer's streams. Both the
/// server's session shell and the client's call loop drive their session through it.
#[derive(Debug)]
pub struct Streams {
    link: Link,
    inbound: mpsc::UnboundedSender<Inbound>,
    control: Writer,
    writers: std::collections::HashMap<OutStream, Writer>,
    readers: std::collections::HashMap<StreamId, oneshot::Sender<Code>>,
}

impl Streams {
    /// Starts the control stream's reader and writer and the acceptor of the peer's
    /// unidirectional streams. Everything they see arrives on the returned receiver; pass each
    /// message through [`Streams::track`] before handing it to the session.
    pub fn start(
        link: Link,
        (send, recv): (SendHalf, RecvHalf),
    ) -> (Self, mpsc::UnboundedReceiver<Inbound>) {
        let (inbound, rx) = mpsc::unbounded_channel();
        spawn_control_reader(recv, inbound.clone());
        let control = spawn_writer(send, inbound.clone());
        spawn_uni_acceptor(link.clone(), inbound.clone());
        let streams = Self {
            link,
            inbound,
            control,
            writers: Default::default(),
            readers: Default::default(),
        };
        (streams, rx)
    }

    /// Keeps the stop signals of the peer's streams; returns the message for the session, or
    /// `None` if it was only bookkeeping.
    pub fn track(&mut self, msg: Inbound) -> Option<Inbound> {
        match msg {
            Inbound::Opened(id, stop) => {
                self.readers.insert(id, stop);
                None
            }
            Inbound::Fin(id) | Inbound::Reset(id, _) => {
                self.readers.remove(&id);
                Some(msg)
            }
            Inbound::Stopped(stream, _) => {
                // The writer task has ended; its handle is of no more use.
                self.writers.remove(&stream);
                Some(msg)
            }
            other => Some(other),
        }
    }

    /// Carries out one stream operation of a session (either side's): never awaits, since
    /// writes go to the stream's writer task. Operations on streams already finished, reset or
    /// gone are dropped (the session's bookkeeping is ahead of the carrier's, never behind).
    pub fn apply(&mut self, op: Transmit) {
        match op {
            Transmit::Control(bytes) => self.control.write(bytes),
            Transmit::Open { stream, bytes } => {
                let writer = spawn_uni_writer(self.link.clone(), stream, self.inbound.clone());
                writer.write(bytes);
                self.writers.insert(stream, writer);
            }
            Transmit::Write { stream, bytes } => {
                if let Some(w) = self.writers.get(&stream) {
                    w.write(bytes);
                }
            }
            Transmit::Finish { stream } => {
                if let Some(w) = self.writers.remove(&stream) {
                    w.finish();
                }
            }
            Transmit::Reset { stream, code } => {
                if let Some(w) = self.writers.remove(&stream) {
                    w.reset(code);
                }
            }
            Transmit::StopSending { stream, code } => {
                if let Some(stop) = self.readers.remove(&stream) {
                    let _ = stop.send(code);
                }
            }
        }
    }
}
