//! What `voq call` reports: one JSON object (`--json`) or a human summary.

use serde::Serialize;

/// The report of one call. Times are milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CallReport {
    /// `quic`, `webtransport` or `ws`.
    pub transport: String,
    pub server: String,
    /// Connect start until the client could send prompt audio.
    pub setup_ms: f64,
    /// Smoothed RTT at the end of the call.
    pub rtt_ms: f64,
    /// `setup_ms / rtt_ms`.
    pub setup_rtts: f64,
    /// Whether the connection resumed a session and the server accepted its 0-RTT data.
    pub zero_rtt: bool,
    /// Connection setup, in round trips.
    pub setup: SetupReport,
    /// The server's address at the end of the call (its preferred address, if it moved there).
    pub server_address: String,
    /// The server's id in its fleet (from `session.created`), when it has one.
    pub server_id: Option<String>,
    /// Whether the connection moved to the server's preferred (unicast) address.
    pub preferred_address_used: bool,
    /// The server offered a preferred address and it did not validate (the call stayed on the
    /// address it dialled).
    pub preferred_address_failed: bool,
    /// Times the connection's path changed: to the preferred address, and each rebinding to a
    /// new local address.
    pub migrations: u32,
    /// When the client moved to a new local address (`--rebind-after`), from the start of
    /// connecting.
    pub rebound_at_ms: Option<f64>,
    pub prompt: PromptReport,
    pub reply: ReplyReport,
    pub interrupt: Option<InterruptReport>,
    /// Per turn, when there were several.
    pub turns: Vec<TurnReport>,
    /// Each time the connection was lost and the call went on over a new one.
    pub resumes: Vec<ResumeReport>,
}

/// A connection lost and replaced during the call.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ResumeReport {
    /// Why the connection was given up.
    pub reason: String,
    /// When it was, from the start of the call.
    pub lost_at_ms: f64,
    /// From giving the connection up until the session was back (`voq.session.resumed`, or a
    /// new session's first event) and audio could flow again: the gap.
    pub gap_ms: f64,
    /// Connection attempts it took.
    pub attempts: u32,
    /// The server took the session back (else a new session carried the unconfirmed turns).
    pub resumed: bool,
    /// The server that holds the session now (its id in the fleet, when it has one).
    pub server_id: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SetupReport {
    /// Whether the prompt's first bytes went out with the first flight (0-RTT resumption).
    pub zero_rtt: bool,
    /// From the start of connecting until the client could send its first prompt byte, in
    /// smoothed RTTs (0 with 0-RTT, about 1 for a fresh QUIC handshake).
    pub first_prompt_byte_rtts: f64,
    /// The client tried 0-RTT and the server rejected it (its ticket was unknown there): the
    /// session started again on the 1-RTT connection.
    pub zero_rtt_rejected: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct PromptReport {
    pub frames_sent: u64,
    pub frames_confirmed: u64,
    pub audio_ms_sent: u64,
    pub audio_ms_confirmed: u64,
    pub bytes_sent: u64,
    pub bytes_confirmed: u64,
    /// User turns the server committed (with server VAD, the speech segments it found).
    pub items_committed: u64,
    /// From the end of the last turn until the server confirmed holding it.
    pub confirm_ms: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplyReport {
    /// From the end of the user's turn until the first reply sample played.
    pub first_audio_ms: Option<f64>,
    /// Reply audio played.
    pub duration_ms: u64,
    /// Reply audio received (placed by timestamp; what the agent said).
    pub received_ms: u64,
    pub underruns: u32,
    pub stall_ms: u64,
    pub bytes_received: u64,
    pub status: Option<voq_proto::event::ResponseStatus>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct InterruptReport {
    /// From the interrupt until the first silent quantum was rendered.
    pub silence_ms: Option<f64>,
    /// The user's position in the reply when it was silenced.
    pub played_ms: u64,
    /// `audio_end_ms` of the server's `conversation.item.truncated`.
    pub truncated_audio_end_ms: Option<u64>,
    /// Received (before or after the interrupt) and never played.
    pub unplayed_bytes: u64,
    /// From the interrupt until the truncation confirmation arrived.
    pub confirm_ms: Option<f64>,
    /// Estimated time from the interrupt until the server stopped: confirmation minus half an RTT.
    pub server_stop_ms: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct TurnReport {
    pub item_id: String,
    pub frames_sent: u64,
    pub frames_confirmed: Option<u64>,
    pub reply_played_ms: u64,
    pub reply_status: Option<voq_proto::event::ResponseStatus>,
}

impl CallReport {
    /// The human summary.
    pub fn human(&self) -> String {
        let mut s = String::new();
        let p = &self.prompt;
        let r = &self.reply;
        let ok = |b: bool| if b { "ok" } else { "MISMATCH" };
        s += &format!(
            "transport   {} to {}  (rtt {:.1} ms)\n",
            self.transport, self.server, self.rtt_ms
        );
        s += &format!(
            "setup       {:.1} ms = {:.2} RTT{}\n",
            self.setup_ms,
            self.setup_rtts,
            if self.zero_rtt { " (0-RTT)" } else { "" }
        );
        if self.preferred_address_used || self.preferred_address_failed || self.migrations > 0 {
            s += &format!(
                "path        {} {}{}, {} migration(s)\n",
                if self.preferred_address_used {
                    "moved to the preferred address"
                } else {
                    "stayed on the dialled address"
                },
                self.server_address,
                if self.preferred_address_failed {
                    " (the preferred address did not validate)"
                } else {
                    ""
                },
                self.migrations
            );
        }
        s += &format!(
            "prompt      {} frames / {} ms sent, {} frames / {} ms confirmed: {}\n",
            p.frames_sent,
            p.audio_ms_sent,
            p.frames_confirmed,
            p.audio_ms_confirmed,
            ok(p.frames_sent == p.frames_confirmed && p.bytes_sent == p.bytes_confirmed)
        );
        s += &format!(
            "reply       {} ms played of {} ms received, first audio {} after the turn, {} underruns ({} ms stalled), {}\n",
            r.duration_ms,
            r.received_ms,
            r.first_audio_ms
                .map_or("-".into(), |v| format!("{v:.0} ms")),
            r.underruns,
            r.stall_ms,
            r.status.map_or("no response.done", |s| s.as_str())
        );
        if let Some(i) = &self.interrupt {
            s += &format!(
                "barge-in    silent after {}, heard {} ms, server truncated at {}, {} bytes sent ahead and unplayed\n",
                i.silence_ms.map_or("-".into(), |v| format!("{v:.1} ms")),
                i.played_ms,
                i.truncated_audio_end_ms
                    .map_or("-".into(), |v| format!("{v} ms")),
                i.unplayed_bytes
            );
        }
        s
    }
}
