//! Per-source-prefix caps: how many handshakes a second, and how many sessions at once, one
//! network (an IPv4 /24, an IPv6 /56) may have, so that one attacker with real addresses cannot
//! take a server's capacity from everyone else.
//!
//! Only *proven* addresses are charged: a QUIC handshake counts once it completed, a TCP
//! connection once accepted; an unvalidated Initial's source may be spoofed, and charging it would
//! let an attacker spend a victim's budget. Initials from a prefix over its rate are sent a Retry,
//! and refused once their address is validated (see `accept_loop`); sessions exist only after a
//! handshake, so their sources are real. Loopback sources are exempt (the operator's own
//! machine: tests, benchmarks, a local proxy).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Entries kept at most; past it, idle entries are purged, and if none is idle a new prefix is
/// let through uncounted (`voq_limits_exceeded_total{limit="prefix_table"}` counts it).
const MAX_ENTRIES: usize = 65_536;

/// The caps (see `voq serve --max-sessions-per-prefix`, `--max-handshake-rate-per-prefix`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PrefixCaps {
    /// Sessions one prefix may hold at once.
    pub sessions: u32,
    /// Handshakes a second one prefix may start on average.
    pub handshake_rate: f64,
    /// Handshakes one prefix may start at once above the rate.
    pub handshake_burst: f64,
    /// Loopback sources are not capped (the operator's own machine). Tests turn this off to
    /// exercise the caps on loopback.
    pub exempt_loopback: bool,
}

impl Default for PrefixCaps {
    fn default() -> Self {
        Self {
            sessions: 256,
            handshake_rate: 50.0,
            handshake_burst: 200.0,
            exempt_loopback: true,
        }
    }
}

/// The network an address belongs to for these caps: an IPv4 /24 or an IPv6 /56 (a typical
/// end-site allocation), IPv4-mapped IPv6 as IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Prefix(u128);

impl Prefix {
    /// The prefix of `ip`; `None` for loopback when it is exempt.
    pub fn of(ip: IpAddr, exempt_loopback: bool) -> Option<Self> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        if exempt_loopback && ip.is_loopback() {
            return None;
        }
        Some(match ip {
            IpAddr::V4(v4) => Self(u128::from(u32::from(v4) & 0xffff_ff00)),
            // Tagged above the IPv4 space so that the two never collide.
            IpAddr::V6(v6) => Self((u128::from(v6) & !((1u128 << 72) - 1)) | 1),
        })
    }
}

#[derive(Debug)]
struct Entry {
    tokens: f64,
    at: Instant,
    sessions: u32,
}

/// What a check decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the caps (or exempt).
    Allow,
    /// Over a cap.
    Over,
    /// The table is full: let through uncounted.
    TableFull,
}

/// The per-prefix state of one server.
#[derive(Debug)]
pub struct PrefixLimits {
    caps: PrefixCaps,
    entries: Mutex<HashMap<Prefix, Entry>>,
}

/// One session of a prefix; dropping it frees its place.
#[derive(Debug)]
pub struct PrefixSession {
    limits: Arc<PrefixLimits>,
    prefix: Prefix,
}

impl PrefixLimits {
    pub fn new(caps: PrefixCaps) -> Self {
        Self {
            caps,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Prefix, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn refill(&self, e: &mut Entry, now: Instant) {
        let elapsed = now.saturating_duration_since(e.at).as_secs_f64();
        e.tokens = (e.tokens + elapsed * self.caps.handshake_rate).min(self.caps.handshake_burst);
        e.at = now;
    }

    /// Whether `ip`'s prefix has spent its handshake rate, without charging it (for unvalidated
    /// sources: a Retry, not a refusal).
    pub fn handshakes_exhausted(&self, ip: IpAddr, now: Instant) -> bool {
        let Some(prefix) = Prefix::of(ip, self.caps.exempt_loopback) else {
            return false;
        };
        let mut entries = self.lock();
        let Some(e) = entries.get_mut(&prefix) else {
            // Not seen yet: a full bucket.
            return self.caps.handshake_burst < 1.0;
        };
        self.refill(e, now);
        e.tokens < 1.0
    }

    /// Charges one handshake of a validated source.
    pub fn take_handshake(&self, ip: IpAddr, now: Instant) -> Verdict {
        let Some(prefix) = Prefix::of(ip, self.caps.exempt_loopback) else {
            return Verdict::Allow;
        };
        let mut entries = self.lock();
        let Some(e) = self.entry(&mut entries, prefix, now) else {
            return Verdict::TableFull;
        };
        self.refill(e, now);
        if e.tokens < 1.0 {
            return Verdict::Over;
        }
        e.tokens -= 1.0;
        Verdict::Allow
    }

    /// Takes a session place for `ip`'s prefix: `Ok(None)` when exempt or uncounted.
    pub fn take_session(
        self: &Arc<Self>,
        ip: IpAddr,
        now: Instant,
    ) -> Result<Option<PrefixSession>, Verdict> {
        let Some(prefix) = Prefix::of(ip, self.caps.exempt_loopback) else {
            return Ok(None);
        };
        let mut entries = self.lock();
        let Some(e) = self.entry(&mut entries, prefix, now) else {
            return Err(Verdict::TableFull);
        };
        if e.sessions >= self.caps.sessions {
            return Err(Verdict::Over);
        }
        e.sessions += 1;
        Ok(Some(PrefixSession {
            limits: self.clone(),
            prefix,
        }))
    }

    /// The entry of `prefix`, created if there is room (after purging idle ones).
    fn entry<'a>(
        &self,
        entries: &'a mut HashMap<Prefix, Entry>,
        prefix: Prefix,
        now: Instant,
    ) -> Option<&'a mut Entry> {
        if !entries.contains_key(&prefix) && entries.len() >= MAX_ENTRIES {
            // Idle: no session, and its bucket would be full again by now.
            // (An uncapped rate gives no finite time: such entries matter for sessions only.)
            let full_after = Duration::try_from_secs_f64(
                self.caps.handshake_burst / self.caps.handshake_rate.max(1e-9),
            )
            .unwrap_or(Duration::ZERO);
            entries
                .retain(|_, e| e.sessions > 0 || now.saturating_duration_since(e.at) < full_after);
            if entries.len() >= MAX_ENTRIES {
                return None;
            }
        }
        Some(entries.entry(prefix).or_insert(Entry {
            tokens: self.caps.handshake_burst,
            at: now,
            sessions: 0,
        }))
    }

    /// Sessions `ip`'s prefix holds now.
    pub fn sessions_of(&self, ip: IpAddr) -> u32 {
        Prefix::of(ip, self.caps.exempt_loopback)
            .and_then(|p| self.lock().get(&p).map(|e| e.sessions))
            .unwrap_or(0)
    }
}

impl Drop for PrefixSession {
    fn drop(&mut self) {
        let mut entries = self.limits.lock();
        if let Some(e) = entries.get_mut(&self.prefix) {
            e.sessions = e.sessions.saturating_sub(1);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn prefixes_group_networks_and_exempt_loopback() {
        assert_eq!(
            Prefix::of(ip("198.18.0.1"), true),
            Prefix::of(ip("198.18.0.254"), true)
        );
        assert_ne!(
            Prefix::of(ip("198.18.0.1"), true),
            Prefix::of(ip("198.18.1.1"), true)
        );
        assert_eq!(
            Prefix::of(ip("::ffff:198.18.0.7"), true),
            Prefix::of(ip("198.18.0.1"), true)
        );
        assert_eq!(
            Prefix::of(ip("2001:db8:0:ff::1"), true),
            Prefix::of(ip("2001:db8:0:1::2"), true)
        );
        assert_ne!(
            Prefix::of(ip("2001:db8:0:100::1"), true),
            Prefix::of(ip("2001:db8:0:1::2"), true)
        );
        assert_eq!(Prefix::of(ip("127.0.0.1"), true), None);
        assert_eq!(Prefix::of(ip("::1"), true), None);
    }

    #[test]
    fn handshakes_are_rate_limited_per_prefix() {
        let limits = PrefixLimits::new(PrefixCaps {
            sessions: 10,
            handshake_rate: 10.0,
            handshake_burst: 5.0,
            exempt_loopback: true,
        });
        let t0 = Instant::now();
        for _ in 0..5 {
            assert_eq!(limits.take_handshake(ip("198.18.0.1"), t0), Verdict::Allow);
        }
        assert_eq!(limits.take_handshake(ip("198.18.0.2"), t0), Verdict::Over);
        assert!(limits.handshakes_exhausted(ip("198.18.0.3"), t0));
        // Another network is unaffected, and so is loopback.
        assert_eq!(limits.take_handshake(ip("198.18.1.1"), t0), Verdict::Allow);
        assert_eq!(limits.take_handshake(ip("127.0.0.1"), t0), Verdict::Allow);
        // 100 ms later there is one more.
        let t1 = t0 + Duration::from_millis(100);
        assert!(!limits.handshakes_exhausted(ip("198.18.0.3"), t1));
        assert_eq!(limits.take_handshake(ip("198.18.0.3"), t1), Verdict::Allow);
        assert_eq!(limits.take_handshake(ip("198.18.0.3"), t1), Verdict::Over);
    }

    #[test]
    fn sessions_are_capped_per_prefix_and_freed() {
        let limits = Arc::new(PrefixLimits::new(PrefixCaps {
            sessions: 2,
            ..PrefixCaps::default()
        }));
        let now = Instant::now();
        let a = limits.take_session(ip("198.18.0.1"), now).unwrap();
        let _b = limits.take_session(ip("198.18.0.2"), now).unwrap();
        assert_eq!(
            limits.take_session(ip("198.18.0.3"), now).unwrap_err(),
            Verdict::Over
        );
        assert!(limits.take_session(ip("127.0.0.1"), now).unwrap().is_none());
        drop(a);
        assert_eq!(limits.sessions_of(ip("198.18.0.9")), 1);
        assert!(limits.take_session(ip("198.18.0.3"), now).is_ok());
    }

    #[test]
    fn the_table_is_bounded() {
        let limits = Arc::new(PrefixLimits::new(PrefixCaps::default()));
        let now = Instant::now();
        let mut held = Vec::new();
        for i in 0..MAX_ENTRIES as u32 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + (i << 8)));
            held.push(limits.take_session(ip, now).unwrap());
        }
        let one_more = IpAddr::V4(std::net::Ipv4Addr::from(0x0b00_0000));
        assert_eq!(limits.take_handshake(one_more, now), Verdict::TableFull);
        drop(held);
        // Idle entries make room once their buckets would be full again.
        let later = now + Duration::from_secs(10);
        assert_eq!(limits.take_handshake(one_more, later), Verdict::Allow);
    }
}
