//! Load shedding by withdrawal: a server of an anycast fleet announces the anycast address
//! through a routing daemon while it has room, and withdraws it when it is full or draining.
//! The anycast route is the health check: routers stop sending new handshakes to a server that
//! withdrew, and its calls go on undisturbed on its unicast address.
//!
//! [`Shedder`] is the decision (sans-IO: load in, "announce" or "withdraw" out, with
//! hysteresis); [`bird`] speaks BIRD 2's control socket; [`run`] is the thin shell that samples
//! the load, asks the shedder and tells BIRD, retrying while the daemon is down.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tracing::{info, warn};

/// How often the load is sampled.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(250);
/// How often the current state is told to the routing daemon again, changed or not: a daemon
/// that restarted (and came back with its configured default) is corrected within this.
pub const REASSERT_INTERVAL: Duration = Duration::from_secs(10);

/// Settings of the announcement (`voq serve --bird-socket …`).
#[derive(Debug, Clone, PartialEq)]
pub struct AnnounceSettings {
    /// BIRD's control socket (`bird -s PATH`).
    pub bird_socket: PathBuf,
    /// The BIRD protocol whose routes are the announcement (`enable`/`disable PROTOCOL`),
    /// e.g. a `static` protocol exporting the anycast /32 to BGP.
    pub protocol: String,
    /// Thresholds.
    pub thresholds: Thresholds,
    /// On shutdown, how long to go on taking handshakes after the withdrawal, while the routers
    /// converge (BGP takes a moment to stop sending new clients here).
    pub withdraw_grace: Duration,
}

/// When to withdraw and when to announce again. Each signal has two thresholds, so a server
/// near one does not flap.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Withdraw at this many sessions…
    pub shed_sessions: u64,
    /// …and announce again at or below this many.
    pub resume_sessions: u64,
    /// Withdraw when the event loop runs this late (smoothed), in ms: the server can no
    /// longer keep real-time audio on time, whatever the session count says…
    pub shed_lag_ms: f64,
    /// …and announce again when it is back under this.
    pub resume_lag_ms: f64,
}

impl Thresholds {
    /// 90 % / 75 % of `max_sessions`, and 50 ms / 10 ms of event-loop lag.
    pub fn for_capacity(max_sessions: usize) -> Self {
        let max = max_sessions as u64;
        Self {
            shed_sessions: (max * 9).div_ceil(10).max(1),
            resume_sessions: (max * 3 / 4).min(max.saturating_sub(1)),
            shed_lag_ms: 50.0,
            resume_lag_ms: 10.0,
        }
    }
}

/// One sample of the server's load.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Load {
    pub sessions: u64,
    /// Smoothed lateness of the sampling timer, in ms.
    pub lag_ms: f64,
    /// The server is shutting down (or was taken out of service): withdraw for good.
    pub draining: bool,
}

/// Why the route is (or is not) announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Room for more calls.
    Room,
    /// At the session threshold.
    Sessions,
    /// The event loop is late.
    Lag,
    /// Shutting down or out of service.
    Draining,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Room => "room",
            Self::Sessions => "sessions",
            Self::Lag => "lag",
            Self::Draining => "draining",
        }
    }
}

/// The decision: whether the anycast route should be announced, with hysteresis.
#[derive(Debug, Clone)]
pub struct Shedder {
    thresholds: Thresholds,
    announced: bool,
    reason: Reason,
}

impl Shedder {
    /// Starts announced: a server that just started has room.
    pub fn new(thresholds: Thresholds) -> Self {
        Self {
            thresholds,
            announced: true,
            reason: Reason::Room,
        }
    }

    /// Whether the route should be announced now.
    pub fn announced(&self) -> bool {
        self.announced
    }

    /// Why.
    pub fn reason(&self) -> Reason {
        self.reason
    }

    /// Takes a sample; returns the new state when it changed.
    pub fn update(&mut self, load: Load) -> Option<(bool, Reason)> {
        let t = &self.thresholds;
        let (announce, reason) = if load.draining {
            (false, Reason::Draining)
        } else if self.announced {
            if load.sessions >= t.shed_sessions {
                (false, Reason::Sessions)
            } else if load.lag_ms >= t.shed_lag_ms {
                (false, Reason::Lag)
            } else {
                (true, Reason::Room)
            }
        } else if self.reason == Reason::Draining {
            (false, Reason::Draining)
        } else if load.sessions > t.resume_sessions {
            (false, Reason::Sessions)
        } else if load.lag_ms > t.resume_lag_ms {
            (false, Reason::Lag)
        } else {
            (true, Reason::Room)
        };
        let changed = announce != self.announced;
        self.announced = announce;
        self.reason = reason;
        changed.then_some((announce, reason))
    }
}

/// Exponentially smoothed lateness of a periodic timer: a cheap, direct measure of whether the
/// server's event loop keeps up (late ticks mean late audio frames).
#[derive(Debug, Clone, Default)]
pub struct LagMeter {
    smoothed_ms: f64,
}

impl LagMeter {
    /// Adds how late one tick fired; returns the smoothed lag (weight 1/4 per sample).
    pub fn sample(&mut self, late: Duration) -> f64 {
        let ms = late.as_secs_f64() * 1000.0;
        self.smoothed_ms += (ms - self.smoothed_ms) / 4.0;
        self.smoothed_ms
    }
}

/// The announcement's state and counters, for metrics.
#[derive(Debug, Default)]
pub struct AnnounceStats {
    /// Whether the routing daemon was last told to announce (and said yes).
    pub announced: AtomicBool,
    /// Withdrawals and announcements that the daemon confirmed.
    pub withdrawals: AtomicU64,
    pub announcements: AtomicU64,
    /// Requests the daemon refused or could not be reached for.
    pub errors: AtomicU64,
}

/// Runs the announcement until `draining` is set and the withdrawal went through (or, with
/// the daemon unreachable, until `draining` and one attempt failed). `sessions` gives the
/// active session count.
pub async fn run(
    settings: AnnounceSettings,
    stats: Arc<AnnounceStats>,
    sessions: impl Fn() -> u64,
    mut draining: tokio::sync::watch::Receiver<bool>,
) {
    let mut shedder = Shedder::new(settings.thresholds);
    let mut lag = LagMeter::default();
    // What the daemon last confirmed (`None` until the first answer), and when to say it
    // again anyway.
    let mut applied: Option<bool> = None;
    let mut reassert_at = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(SAMPLE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut expected = tokio::time::Instant::now();
    loop {
        let stopping = *draining.borrow();
        if !stopping {
            tokio::select! {
                _ = tick.tick() => {}
                _ = draining.changed() => {}
            }
        }
        let now = tokio::time::Instant::now();
        let late = now.saturating_duration_since(expected);
        expected = now + SAMPLE_INTERVAL;
        let load = Load {
            sessions: sessions(),
            lag_ms: lag.sample(late),
            draining: *draining.borrow(),
        };
        if let Some((announce, reason)) = shedder.update(load) {
            let action = if announce {
                "announcing"
            } else {
                "withdrawing"
            };
            info!(
                action,
                reason = reason.as_str(),
                sessions = load.sessions,
                lag_ms = format_args!("{:.1}", load.lag_ms),
                "anycast route: {action} ({})",
                reason.as_str()
            );
        }
        let want = shedder.announced();
        if applied != Some(want) || now >= reassert_at {
            match bird::set_protocol(&settings.bird_socket, &settings.protocol, want).await {
                Ok(_) => {
                    if applied != Some(want) {
                        let counter = if want {
                            &stats.announcements
                        } else {
                            &stats.withdrawals
                        };
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                    applied = Some(want);
                    reassert_at = now + REASSERT_INTERVAL;
                    stats.announced.store(want, Ordering::Relaxed);
                }
                Err(e) => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    warn!(
                        socket = %settings.bird_socket.display(),
                        protocol = %settings.protocol,
                        "cannot {} the anycast route: {e}",
                        if want { "announce" } else { "withdraw" }
                    );
                    if load.draining {
                        return;
                    }
                    // Retry on a later tick, not in a tight loop.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
        }
        if load.draining && applied == Some(false) {
            return;
        }
    }
}

/// BIRD 2's control socket (the protocol `birdc` speaks): one command per line; each reply line
/// is a 4-digit code and `-` (more follow) or a space (the last), then text. Codes 8xxx and
/// 9xxx are errors.
pub mod bird {
    use std::path::Path;
    use std::time::Duration;

    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    /// How long one exchange with the daemon may take.
    pub const TIMEOUT: Duration = Duration::from_secs(3);

    /// Why a command failed.
    #[derive(Debug, thiserror::Error)]
    pub enum BirdError {
        #[error("cannot reach BIRD: {0}")]
        Io(#[from] std::io::Error),
        #[error("BIRD did not answer within {TIMEOUT:?}")]
        Timeout,
        #[error("BIRD refused: {code} {text}")]
        Refused { code: u16, text: String },
        #[error("not a BIRD control socket reply: {0:?}")]
        Garbled(String),
    }

    /// One parsed reply line: code, whether it is the reply's last line, text.
    pub fn parse_line(line: &str) -> Option<(u16, bool, &str)> {
        let code = line.get(..4)?;
        if !code.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let last = match line.as_bytes().get(4) {
            Some(b' ') | None => true,
            Some(b'-') => false,
            _ => return None,
        };
        let text = line.get(5..).unwrap_or("").trim_end();
        code.parse().ok().map(|c| (c, last, text))
    }

    /// Reads one reply (through its last line); continuation lines (starting with a space)
    /// belong to the previous code. Returns the codes and texts of its lines.
    async fn read_reply<R: AsyncBufReadExt + Unpin>(
        reader: &mut R,
    ) -> Result<Vec<(u16, String)>, BirdError> {
        let mut lines = Vec::new();
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).await? == 0 {
                return Err(BirdError::Garbled("the socket closed mid-reply".into()));
            }
            let trimmed = line.trim_end_matches('\n');
            if trimmed.starts_with(' ') {
                let code = lines.last().map_or(0, |(c, _)| *c);
                lines.push((code, trimmed.trim().to_string()));
                continue;
            }
            let (code, last, text) =
                parse_line(trimmed).ok_or_else(|| BirdError::Garbled(trimmed.into()))?;
            lines.push((code, text.to_string()));
            if last {
                return Ok(lines);
            }
        }
    }

    /// Sends one command and returns its reply lines; an 8xxx/9xxx code is an error.
    pub async fn command(socket: &Path, command: &str) -> Result<Vec<(u16, String)>, BirdError> {
        let exchange = async {
            let stream = tokio::net::UnixStream::connect(socket).await?;
            let (read, mut write) = stream.into_split();
            let mut reader = BufReader::new(read);
            let greeting = read_reply(&mut reader).await?;
            if greeting.first().map(|(c, _)| *c) != Some(1) {
                return Err(BirdError::Garbled(format!("greeting {greeting:?}")));
            }
            write.write_all(command.as_bytes()).await?;
            write.write_all(b"\n").await?;
            let reply = read_reply(&mut reader).await?;
            match reply.iter().find(|(c, _)| *c >= 8000) {
                Some((code, text)) => Err(BirdError::Refused {
                    code: *code,
                    text: text.clone(),
                }),
                None => Ok(reply),
            }
        };
        tokio::time::timeout(TIMEOUT, exchange)
            .await
            .map_err(|_| BirdError::Timeout)?
    }

    /// `enable PROTOCOL` (announce) or `disable PROTOCOL` (withdraw). Succeeds also when the
    /// protocol already was in that state (codes 0008/0010).
    pub async fn set_protocol(
        socket: &Path,
        protocol: &str,
        enable: bool,
    ) -> Result<(), BirdError> {
        // Quoted: BIRD then matches the name as a pattern and says "No protocols match"
        // (8003) for an unknown one, instead of a syntax error.
        let quoted = format!("\"{}\"", protocol.replace(['"', '\\', '\n'], ""));
        let verb = if enable { "enable" } else { "disable" };
        let reply = command(socket, &format!("{verb} {quoted}")).await?;
        let ok = if enable { [10, 11] } else { [8, 9] };
        if reply.iter().any(|(c, _)| ok.contains(c)) {
            Ok(())
        } else {
            Err(BirdError::Garbled(format!(
                "unexpected reply to {verb}: {reply:?}"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn thresholds() -> Thresholds {
        Thresholds {
            shed_sessions: 90,
            resume_sessions: 75,
            shed_lag_ms: 50.0,
            resume_lag_ms: 10.0,
        }
    }

    fn load(sessions: u64, lag_ms: f64) -> Load {
        Load {
            sessions,
            lag_ms,
            draining: false,
        }
    }

    #[test]
    fn sessions_withdraw_and_announce_with_hysteresis() {
        let mut s = Shedder::new(thresholds());
        assert_eq!(s.update(load(89, 0.0)), None);
        assert_eq!(s.update(load(90, 0.0)), Some((false, Reason::Sessions)));
        // Between the thresholds nothing changes, either way.
        assert_eq!(s.update(load(80, 0.0)), None);
        assert!(!s.announced());
        assert_eq!(s.update(load(75, 0.0)), Some((true, Reason::Room)));
        assert_eq!(s.update(load(80, 0.0)), None);
        assert!(s.announced());
    }

    #[test]
    fn a_late_event_loop_withdraws_until_it_recovers() {
        let mut s = Shedder::new(thresholds());
        assert_eq!(s.update(load(1, 49.0)), None);
        assert_eq!(s.update(load(1, 60.0)), Some((false, Reason::Lag)));
        assert_eq!(s.update(load(1, 20.0)), None);
        assert_eq!(s.update(load(1, 9.0)), Some((true, Reason::Room)));
    }

    #[test]
    fn draining_withdraws_for_good() {
        let mut s = Shedder::new(thresholds());
        let drain = Load {
            draining: true,
            ..load(0, 0.0)
        };
        assert_eq!(s.update(drain), Some((false, Reason::Draining)));
        assert_eq!(s.update(load(0, 0.0)), None);
        assert!(!s.announced());
    }

    #[test]
    fn thresholds_for_small_and_large_servers() {
        let t = Thresholds::for_capacity(1000);
        assert_eq!((t.shed_sessions, t.resume_sessions), (900, 750));
        let t = Thresholds::for_capacity(1);
        assert_eq!((t.shed_sessions, t.resume_sessions), (1, 0));
        let t = Thresholds::for_capacity(4);
        assert!(t.resume_sessions < t.shed_sessions);
    }

    #[test]
    fn the_lag_meter_smooths() {
        let mut m = LagMeter::default();
        assert!((m.sample(Duration::from_millis(40)) - 10.0).abs() < 1e-9);
        assert!(m.sample(Duration::ZERO) < 10.0);
    }

    #[test]
    fn bird_reply_lines() {
        use bird::parse_line;
        assert_eq!(
            parse_line("0001 BIRD 2.0.12 ready."),
            Some((1, true, "BIRD 2.0.12 ready."))
        );
        assert_eq!(
            parse_line("0009-anycast: disabled"),
            Some((9, false, "anycast: disabled"))
        );
        assert_eq!(parse_line("0000 "), Some((0, true, "")));
        assert_eq!(parse_line("0000"), Some((0, true, "")));
        assert_eq!(
            parse_line("8003 No protocols match"),
            Some((8003, true, "No protocols match"))
        );
        for bad in ["", "abc", "00a1 x", "0001x", " 0001 x"] {
            assert_eq!(parse_line(bad), None, "{bad:?}");
        }
    }

    /// A fake BIRD on a unix socket: the exact bytes BIRD 2.0.12 sends (recorded on this
    /// machine), so the client is tested without the daemon; `tests/fleet.rs` runs the real one.
    async fn fake_bird(replies: Vec<&'static str>) -> (tempfile::TempDir, std::path::PathBuf) {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bird.ctl");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            for reply in replies {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (read, mut write) = stream.into_split();
                let _ = write.write_all(b"0001 BIRD 2.0.12 ready.\n").await;
                let mut line = String::new();
                let _ = BufReader::new(read).read_line(&mut line).await;
                let _ = write.write_all(reply.as_bytes()).await;
            }
        });
        (dir, path)
    }

    #[tokio::test]
    async fn bird_commands_succeed_and_fail_clearly() {
        let (_dir, path) = fake_bird(vec![
            "0009-anycast: disabled\n0000 \n",
            "0010-anycast: already enabled\n0000 \n",
            "8003 No protocols match\n",
            "9001 syntax error, unexpected CF_SYM_UNDEFINED\n",
        ])
        .await;
        bird::set_protocol(&path, "anycast", false).await.unwrap();
        bird::set_protocol(&path, "anycast", true).await.unwrap();
        let e = bird::set_protocol(&path, "nosuch", true).await.unwrap_err();
        assert!(e.to_string().contains("No protocols match"), "{e}");
        let e = bird::set_protocol(&path, "x", false).await.unwrap_err();
        assert!(e.to_string().contains("9001"), "{e}");
        let missing = path.with_file_name("absent.ctl");
        let e = bird::set_protocol(&missing, "anycast", false)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("cannot reach BIRD"), "{e}");
    }
}
