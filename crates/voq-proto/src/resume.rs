//! What of a server session survives its server: the [`SessionSnapshot`] that
//! [`crate::server::ServerSession::snapshot`] takes and
//! [`crate::server::ServerSession::resume`] starts from, on this server or another one.
//!
//! A snapshot is plain data (JSON, audio as base64 of voq/1 frames), bounded in size: at most
//! [`MAX_HELD_AUDIO`] payload bytes of each open turn and of the reply. What a turn holds beyond
//! it the client sends again (it keeps every frame until the turn is committed), so a bound
//! costs re-sending, never audio.

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::{HeldTurn, VoqResponseStats};
use crate::wire::{self, AudioItem, AudioStreamDecoder};

/// Snapshot format version; a snapshot of another version is refused, not misread.
pub const SNAPSHOT_VERSION: u32 = 1;
/// Codec payload bytes a snapshot keeps of one open turn, and of the reply (about 22 s of
/// pcm16, many minutes of Opus).
pub const MAX_HELD_AUDIO: usize = 1 << 20;
/// Turns committed lately whose confirmation a resumed session repeats.
pub const MAX_RECENT_COMMITS: usize = 8;

/// A server session's state, as a store keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionSnapshot {
    /// [`SNAPSHOT_VERSION`].
    pub version: u32,
    /// The session's id, which a resumed session keeps.
    pub session_id: String,
    /// Codec names of the user's and the agent's audio.
    pub input_codec: String,
    /// See `input_codec`.
    pub output_codec: String,
    /// Server VAD settings, `None` for push-to-talk.
    pub turn_detection: Option<Value>,
    /// The send-ahead lead the client asked for.
    pub send_ahead_ms: u64,
    /// The next number for the session's ids (`item_N`, `resp_N`) and events (`event_N`).
    pub next_id: u64,
    /// See `next_id`.
    pub next_event: u64,
    /// The last committed user item.
    pub last_committed: Option<String>,
    /// Client item ids seen (their reuse is refused).
    pub seen_items: Vec<String>,
    /// Assistant items: (item id, response id, ms of audio sent), for truncations.
    pub items: Vec<(String, String, u64)>,
    /// Open user turns (push-to-talk) and what the server holds of them.
    pub open_turns: Vec<SnapshotTurn>,
    /// Turns committed lately, with their counts.
    pub recent_commits: Vec<HeldTurn>,
    /// The response in progress.
    pub reply: Option<SnapshotReply>,
    /// The last response that ended: its `response.done` is repeated to a client that resumes
    /// without having seen it.
    pub last_ended: Option<EndedResponse>,
    /// The audio of the latest committed turns, oldest first (at most [`MAX_HELD_AUDIO`] in
    /// all): the conversation a resumed session hands its new agent.
    #[serde(default)]
    pub history: Vec<SnapshotTurn>,
}

/// A committed user turn handed to a resumed session's agent: its item and audio as the client
/// sent it (the shell decodes it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryTurn {
    /// The user item.
    pub item_id: String,
    /// How its frames are encoded.
    pub codec: crate::Codec,
    /// Its stream header's frame duration.
    pub frame_ms: u32,
    /// Its frames: (pts, payload).
    pub frames: Vec<(u32, Vec<u8>)>,
}

/// An open user turn in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotTurn {
    /// Its item id.
    pub item_id: String,
    /// Its stream header's codec name and frame duration.
    pub codec: String,
    /// See `codec`.
    pub frame_ms: u32,
    /// The frames held, as voq/1 frames (u16 length, u32 pts, payload), base64.
    pub audio: String,
}

/// The response in progress in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotReply {
    /// The response and its assistant item.
    pub response_id: String,
    /// See `response_id`.
    pub item_id: String,
    /// Codec name of its audio.
    pub codec: String,
    /// End of the audio the agent produced, in samples.
    pub next_pts: u64,
    /// Whether the agent had finished: if not, the rest of the reply is lost with its server.
    pub agent_done: bool,
    /// What was sent so far.
    pub stats: VoqResponseStats,
    /// Frames not yet known to be played (sent or not), as voq/1 frames, base64.
    pub audio: String,
    /// The transcript so far.
    pub transcript: String,
}

/// A response that ended, for a resumed client that did not see its `response.done`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndedResponse {
    /// The response and its assistant item.
    pub response_id: String,
    /// See `response_id`.
    pub item_id: String,
    /// How it ended.
    pub status: crate::event::ResponseStatus,
    /// What it sent.
    pub stats: VoqResponseStats,
}

impl SessionSnapshot {
    /// JSON bytes, for a store.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a snapshot a store gave back; a malformed one or another version is an error.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        let s: Self =
            serde_json::from_slice(bytes).map_err(|e| format!("malformed snapshot: {e}"))?;
        if s.version != SNAPSHOT_VERSION {
            return Err(format!(
                "snapshot version {} (this server reads {SNAPSHOT_VERSION})",
                s.version
            ));
        }
        Ok(s)
    }
}

/// Frames as voq/1 frame bytes, base64.
pub(crate) fn encode_frames<'a>(frames: impl IntoIterator<Item = (u32, &'a [u8])>) -> String {
    let mut bytes = Vec::new();
    for (pts, payload) in frames {
        // Frames in a session are within the limit already.
        let _ = wire::encode_frame(pts, payload, &mut bytes);
    }
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The frames of [`encode_frames`]; a malformed blob is an error.
pub(crate) fn decode_frames(audio: &str) -> Result<Vec<(u32, Vec<u8>)>, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(audio)
        .map_err(|e| format!("snapshot audio is not base64: {e}"))?;
    // The decoder reads a stream: a header first, then frames. Give it an empty header.
    let mut decoder = AudioStreamDecoder::default();
    let mut framed = Vec::new();
    let header = wire::AudioHeader {
        item_id: "snapshot".into(),
        response_id: None,
        codec: "pcm16".into(),
        sample_rate: crate::SAMPLE_RATE,
        frame_ms: crate::FRAME_MS,
    };
    wire::encode_header(wire::StreamKind::UserAudio, &header, &mut framed);
    framed.extend_from_slice(&bytes);
    decoder.push(&framed);
    let mut frames = Vec::new();
    loop {
        match decoder.poll_item() {
            Ok(None) => break,
            Ok(Some(AudioItem::Header(..))) => {}
            Ok(Some(AudioItem::Frame(f))) => frames.push((f.pts, f.payload)),
            Err(e) => return Err(format!("snapshot audio: {e}")),
        }
    }
    if decoder.pending() > 0 {
        return Err("snapshot audio ends inside a frame".into());
    }
    Ok(frames)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_damage_is_an_error() {
        let frames = [(0u32, vec![1u8, 2, 3]), (480, vec![4u8; 960])];
        let text = encode_frames(frames.iter().map(|(p, b)| (*p, b.as_slice())));
        assert_eq!(decode_frames(&text).unwrap(), frames.to_vec());
        assert!(decode_frames("not base64!").is_err());
        let cut = base64::engine::general_purpose::STANDARD.encode([0u8, 9, 0, 0]);
        assert!(decode_frames(&cut).is_err());
    }

    #[test]
    fn another_version_is_refused() {
        let s = SessionSnapshot {
            version: 99,
            session_id: "sess_1".into(),
            input_codec: "pcm16".into(),
            output_codec: "pcm16".into(),
            turn_detection: None,
            send_ahead_ms: 2000,
            next_id: 1,
            next_event: 0,
            last_committed: None,
            seen_items: vec![],
            items: vec![],
            open_turns: vec![],
            recent_commits: vec![],
            reply: None,
            last_ended: None,
            history: vec![],
        };
        let err = SessionSnapshot::from_bytes(&s.to_bytes()).unwrap_err();
        assert!(err.contains("version 99"), "{err}");
        assert!(SessionSnapshot::from_bytes(b"{").is_err());
    }
}
