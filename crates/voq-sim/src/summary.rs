//! What a run produced: per caller, and for the fleet, with the table that is pinned in
//! `crates/voq-sim/tests/summary.txt`.

use std::fmt::Write as _;

use voq_proto::event::ResponseStatus;

/// The outcome of one caller's call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSummary {
    /// When the QUIC handshake completed (ms of virtual time).
    pub connected_ms: u64,
    /// Which server (index) took the call.
    pub served_by: Option<usize>,
    /// Prompt frames the client sent.
    pub prompt_frames_sent: u64,
    /// Prompt bytes the client sent.
    pub prompt_bytes_sent: u64,
    /// Prompt audio the client sent, ms.
    pub prompt_audio_ms_sent: u64,
    /// Frames `input_audio_buffer.committed` confirmed.
    pub frames_confirmed: Option<u64>,
    /// Bytes it confirmed.
    pub bytes_confirmed: Option<u64>,
    /// Audio ms it confirmed.
    pub audio_ms_confirmed: Option<u64>,
    /// When the confirmation arrived.
    pub committed_ms: Option<u64>,
    /// The server holds exactly the prompt, frame after frame at consecutive timestamps.
    pub prompt_bit_exact: bool,
    /// Fingerprint of what the server holds.
    pub prompt_fp: u64,
    /// Length of the agent's reply, ms.
    pub reply_ms: u64,
    /// When the device first played agent audio.
    pub first_audio_ms: Option<u64>,
    /// Reply ms played.
    pub played_ms: u64,
    /// Playback stalls.
    pub underruns: u32,
    /// Total stall time, ms.
    pub stall_ms: u64,
    /// The agent audio the device played is the reply, sample for sample.
    pub played_equals_reply: bool,
    /// And it played as one contiguous timeline (no stall inside it).
    pub contiguous: bool,
    /// Fingerprint of the played audio.
    pub played_fp: u64,
    /// Longest gap between two arrivals of reply bytes at the client.
    pub max_reply_gap_ms: u64,
    /// How the response ended.
    pub status: Option<ResponseStatus>,
    /// The server stopped the agent (barge-in).
    pub agent_cancelled: bool,
    /// Where the user barged in (reply ms played).
    pub interrupted_at_played_ms: Option<u64>,
    /// Where the server truncated the item.
    pub truncated_audio_end_ms: Option<u64>,
    /// Nothing but silence after the barge-in.
    pub silent_after_interrupt: bool,
    /// When this caller's path blacked out.
    pub blackout_at_ms: Option<u64>,
    /// When this caller's address changed.
    pub migrated_at_ms: Option<u64>,
    /// Datagrams client → server sent by the path.
    pub c2s_sent: u64,
    /// … and dropped by it.
    pub c2s_dropped: u64,
    /// Datagrams server → client sent by the path.
    pub s2c_sent: u64,
    /// … and dropped by it.
    pub s2c_dropped: u64,
    /// Packets QUIC declared lost, client side.
    pub quic_lost_client: u64,
    /// … server side.
    pub quic_lost_server: u64,
    /// Problems the client reported.
    pub warnings: Vec<String>,
}

/// The outcome of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The scenario's name.
    pub name: String,
    /// When the last call was done, ms of virtual time.
    pub end_ms: u64,
    /// One per caller, in the scenario's order.
    pub clients: Vec<ClientSummary>,
    /// Sessions each server started.
    pub sessions_per_server: Vec<u64>,
    /// Datagrams the balancer dropped (none routable, or the VIP dark during a restart).
    pub lb_dropped: u64,
    /// Problems the servers reported.
    pub warnings: Vec<String>,
}

impl Summary {
    /// The first caller's outcome (the only one in single-call scenarios).
    ///
    /// # Panics
    ///
    /// For a run without callers.
    pub fn call(&self) -> &ClientSummary {
        &self.clients[0]
    }

    /// No warning anywhere, from any client or server.
    pub fn is_clean(&self) -> bool {
        self.warnings.is_empty() && self.clients.iter().all(|c| c.warnings.is_empty())
    }
}

/// The summary table of runs: one row per caller, fixed-width text, the same for the same runs
/// (pinned in `crates/voq-sim/tests/summary.txt`).
pub fn table(runs: &[Summary]) -> String {
    let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<34} {:>2} {:>6} {:>3} {:>7} {:>6} {:>6} {:>5} {:>5} {:>5} {:>9} {:>5} {:>5} {:>9} {:>9} {:>5} {:>5}",
        "scenario",
        "#",
        "end_ms",
        "srv",
        "frames",
        "commit",
        "played",
        "under",
        "stall",
        "exact",
        "status",
        "barge",
        "trunc",
        "c2s_drop",
        "s2c_drop",
        "gap",
        "b/out"
    );
    for run in runs {
        for (i, c) in run.clients.iter().enumerate() {
            let exact = match (c.interrupted_at_played_ms, c.played_equals_reply) {
                (Some(_), _) => "-",
                (None, true) => "yes",
                (None, false) => "NO",
            };
            let _ = writeln!(
                out,
                "{:<34} {:>2} {:>6} {:>3} {:>7} {:>6} {:>6} {:>5} {:>5} {:>5} {:>9} {:>5} {:>5} {:>9} {:>9} {:>5} {:>5}",
                run.name,
                i,
                run.end_ms,
                c.served_by.map_or("-".to_string(), |k| k.to_string()),
                format!("{}/{}", opt(c.frames_confirmed), c.prompt_frames_sent),
                opt(c.committed_ms),
                c.played_ms,
                c.underruns,
                c.stall_ms,
                exact,
                c.status.map_or("-", |s| s.as_str()),
                opt(c.interrupted_at_played_ms),
                opt(c.truncated_audio_end_ms),
                format!("{}/{}", c.c2s_dropped, c.c2s_sent),
                format!("{}/{}", c.s2c_dropped, c.s2c_sent),
                c.max_reply_gap_ms,
                opt(c.blackout_at_ms),
            );
        }
        if run.sessions_per_server.len() > 1 || run.lb_dropped > 0 {
            let _ = writeln!(
                out,
                "{:<34}    sessions per server {:?}, dropped at the VIP {}",
                run.name, run.sessions_per_server, run.lb_dropped
            );
        }
    }
    out.push_str(
        "(times in virtual ms; # = caller; srv = server that took the call; frames = confirmed/sent; \
         gap = longest gap between reply bytes arriving at the client; b/out = blackout start)\n",
    );
    out
}
