//! The native voq client: connects over QUIC, WebTransport or WebSocket, sends user turns, plays
//! agent audio by timestamp through a simulated audio device, barges in, and reports what
//! happened. `voq call` is a thin wrapper around [`Client::call`].

mod call;
pub mod events;
pub mod report;
pub mod resume;
pub mod tls;

pub use call::{
    CallFailed, CallOptions, CallOutcome, Client, ClientOptions, Rebind, SILENCE_NOTICE, Target,
};
pub use report::CallReport;
pub use tls::Trust;
pub use voq_proto::event::Token;

/// Parses `1s`, `1.5s`, `750ms`, `2m`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| c.is_ascii_alphabetic())
        .map_or((s, "s"), |i| s.split_at(i));
    let value: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("\"{s}\" is not a duration like 1s or 750ms"))?;
    let secs = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" | "min" => value * 60.0,
        _ => return Err(format!("\"{s}\": unknown unit \"{unit}\" (use ms, s or m)")),
    };
    std::time::Duration::try_from_secs_f64(secs)
        .map_err(|_| format!("\"{s}\" is not a valid duration"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("750ms"), Ok(Duration::from_millis(750)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("1h").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
