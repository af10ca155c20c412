//! One direction of a path ([`Link`]) and both of them ([`Path`]).

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::{ConfigError, GilbertElliott, LinkConfig, nanos};
use crate::rng::{Rng, splitmix64};

/// Internal times are nanoseconds since the link's start, saturating at about 100 years, so
/// arithmetic never overflows and converting back to an [`Instant`] stays representable.
const MAX_NANOS: u64 = 100 * 365 * 86_400 * 1_000_000_000;

/// The random streams of a link, one per impairment (see [`Rng::new`]).
const STREAM_LOSS: u64 = 1;
const STREAM_BURST: u64 = 2;
const STREAM_DUPLICATE: u64 = 3;
const STREAM_REORDER: u64 = 4;
const STREAM_JITTER: u64 = 5;

/// One direction of an impaired path: packets go in with [`send`](Link::send) and come out
/// with [`poll_deliver`](Link::poll_deliver), later, fewer, more, or in another order.
///
/// Sans-IO: the link reads no clock and no OS randomness. Time comes in as `now` arguments
/// (which must not go backwards; an earlier `now` counts as the latest one seen, and a `now`
/// before `start` counts as `start`), randomness from the `seed`.
///
/// # Call order
///
/// 1. [`send`](Link::send) each packet when the sender emits it.
/// 2. After every input — a `send`, or the clock reaching [`poll_timeout`](Link::poll_timeout)
///    — drain: call [`poll_deliver`](Link::poll_deliver) until it returns `None`, handing each
///    packet to the receiver.
/// 3. Ask [`poll_timeout`](Link::poll_timeout) when to come back. It can change after any
///    call. At that time `poll_deliver` may return nothing: the link also wakes for internal
///    events (a packet reaching the rate limiter).
///
/// # What happens to a packet
///
/// At `send`, in this order:
///
/// 1. **Blackout**: sent inside a blackout window → dropped.
/// 2. **Random loss** (`loss`) → dropped.
/// 3. **Burst loss** (Gilbert-Elliott, `burst`) → dropped.
/// 4. **Delay**: `delay_ms` plus jitter in `-jitter_ms..=jitter_ms` (never below zero). Unless
///    `jitter_reorder` is set, a packet never arrives before one sent earlier: it waits.
/// 5. **Reorder** (`reorder`): the packet is held back a further `reorder_delay_ms`, and the
///    packets after it do not wait for it.
/// 6. **Duplicate** (`duplicate`): a copy follows the original.
///
/// Then, on arrival at the far end of the delay, **rate limit** (`rate_kbps`): packets are
/// serialized in arrival order at the rate, each delivered when its last bit is through;
/// one arriving while the queue already holds `queue_packets` packets or would exceed
/// `queue_bytes` bytes is dropped (drop-tail).
///
/// A packet lost to several causes counts once, for the first in this list.
///
/// # Determinism
///
/// The same configuration, seed and inputs (times, sizes, order of calls) give the same
/// outputs, on every platform. Each impairment draws from its own random stream, a fixed
/// number of values per packet sent, so its decision for the n-th packet depends only on the
/// seed and n (and, for burst loss, on the Markov state) — not on timing, nor on the other
/// impairments. Deliveries do not depend on when `poll_deliver` is called, only on the inputs.
pub struct Link<T> {
    config: LinkConfig,
    plan: Plan,
    start: Instant,
    /// Latest time seen, ns since `start`.
    now: u64,
    /// Blackout windows, `[from, until)` in ns since `start`.
    blackouts: Vec<(u64, u64)>,
    rng: Streams,
    /// Gilbert-Elliott state: in the bad state.
    bad: bool,
    /// The previous packet's jitter, ns.
    jitter: f64,
    /// Arrival time of the latest in-order packet: no later-sent packet arrives before it.
    fifo: u64,
    /// Sequence number of the next copy, the tie-breaker between equal times.
    seq: u64,
    /// Packets on their way to the rate limiter (only used with a rate), by arrival time.
    arriving: BinaryHeap<Reverse<Entry<T>>>,
    /// When the rate limiter finishes the packet it is transmitting, ns.
    busy_until: u64,
    /// Packets queued at the rate limiter, waiting: (start of transmission, size).
    queue: VecDeque<(u64, usize)>,
    queue_bytes: u64,
    /// Packets due, by delivery time.
    due: BinaryHeap<Reverse<Entry<T>>>,
    /// The highest send index delivered so far.
    max_delivered: Option<u64>,
    stats: LinkStats,
}

impl<T> Link<T> {
    /// A link that starts at `start` (the origin of the configuration's blackout windows),
    /// drawing its randomness from `seed`.
    pub fn new(config: LinkConfig, seed: u64, start: Instant) -> Result<Self, ConfigError> {
        config.validate()?;
        let plan = Plan::new(&config);
        let blackouts = config
            .blackouts
            .iter()
            .map(|b| {
                let from = nanos(b.start_ms);
                (from, from.saturating_add(nanos(b.duration_ms)))
            })
            .collect();
        Ok(Self {
            config,
            plan,
            start,
            now: 0,
            blackouts,
            rng: Streams::new(seed),
            bad: false,
            jitter: 0.0,
            fifo: 0,
            seq: 0,
            arriving: BinaryHeap::new(),
            busy_until: 0,
            queue: VecDeque::new(),
            queue_bytes: 0,
            due: BinaryHeap::new(),
            max_delivered: None,
            stats: LinkStats::default(),
        })
    }

    /// Sends `packet`, of `size_bytes` bytes on the wire (the rate limit and the byte counters
    /// use it), at `now`. Then drain [`poll_deliver`](Link::poll_deliver).
    ///
    /// `T: Clone` is for duplication.
    pub fn send(&mut self, now: Instant, packet: T, size_bytes: usize)
    where
        T: Clone,
    {
        let now = self.advance(now);
        let index = self.stats.sent;
        self.stats.sent += 1;
        self.stats.sent_bytes = self.stats.sent_bytes.saturating_add(size_bytes as u64);

        // Every stream draws for every packet, whatever happens to it.
        let lost = self.rng.loss.chance(self.plan.loss);
        let burst_lost = self.burst_step();
        let jitter = self.jitter_step();
        let reorder = self.rng.reorder.chance(self.plan.reorder);
        let duplicate = self.rng.duplicate.chance(self.plan.duplicate);

        let drops = &mut self.stats.dropped;
        if self
            .blackouts
            .iter()
            .any(|&(from, until)| (from..until).contains(&now))
        {
            drops.blackout += 1;
            return;
        }
        if lost {
            drops.random_loss += 1;
            return;
        }
        if burst_lost {
            drops.burst_loss += 1;
            return;
        }

        let delay = (i128::from(self.plan.delay) + i128::from(jitter)).max(0) as u64;
        let mut at = now.saturating_add(delay);
        if reorder {
            at = at.saturating_add(self.plan.reorder_delay);
        }
        if !self.config.jitter_reorder {
            at = at.max(self.fifo);
            if !reorder {
                self.fifo = at;
            }
        }

        if duplicate {
            self.stats.duplicated += 1;
            let copy = packet.clone();
            self.enqueue(at, index, packet, size_bytes);
            self.enqueue(at, index, copy, size_bytes);
        } else {
            self.enqueue(at, index, packet, size_bytes);
        }
    }
}

impl<T> Link<T> {
    /// The next packet due at or before `now`, in delivery order (ties in send order).
    pub fn poll_deliver(&mut self, now: Instant) -> Option<T> {
        let now = self.advance(now);
        self.serve(now);
        if self.due.peek().is_none_or(|Reverse(e)| e.at > now) {
            return None;
        }
        let Reverse(entry) = self.due.pop()?;
        self.stats.delivered += 1;
        self.stats.delivered_bytes = self.stats.delivered_bytes.saturating_add(entry.size as u64);
        if self.max_delivered.is_some_and(|max| entry.index < max) {
            self.stats.reordered += 1;
        }
        self.max_delivered = self.max_delivered.max(Some(entry.index));
        Some(entry.packet)
    }

    /// When to call [`poll_deliver`](Link::poll_deliver) next; `None` while nothing is in
    /// flight.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let arriving = self.arriving.peek().map(|Reverse(e)| e.at);
        let due = self.due.peek().map(|Reverse(e)| e.at);
        let next = arriving.into_iter().chain(due).min()?;
        Some(self.instant(next))
    }

    /// Loses every packet sent from `start` for `duration`, in addition to the configured
    /// blackout windows.
    pub fn add_blackout(&mut self, start: Instant, duration: Duration) {
        let from = self.nanos_since_start(start);
        let length = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        self.blackouts.push((from, from.saturating_add(length)));
    }

    /// The counters so far.
    pub fn stats(&self) -> &LinkStats {
        &self.stats
    }

    /// Packets sent (or duplicated) and neither delivered nor dropped yet.
    pub fn in_flight(&self) -> usize {
        self.arriving.len() + self.due.len()
    }

    /// The configuration.
    pub fn config(&self) -> &LinkConfig {
        &self.config
    }

    /// The link's start, the origin of its configured blackout windows.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// Moves the clock to `now` (never backwards) and returns it in ns since `start`.
    fn advance(&mut self, now: Instant) -> u64 {
        self.now = self.now.max(self.nanos_since_start(now));
        self.now
    }

    fn nanos_since_start(&self, t: Instant) -> u64 {
        let since = t.saturating_duration_since(self.start).as_nanos();
        u64::try_from(since).unwrap_or(u64::MAX).min(MAX_NANOS)
    }

    fn instant(&self, nanos: u64) -> Instant {
        // `start + 100 years` fits every platform's Instant we know of; should it not, the
        // largest representable time before it is the best answer there is.
        let mut d = Duration::from_nanos(nanos);
        loop {
            if let Some(t) = self.start.checked_add(d) {
                return t;
            }
            d /= 2;
        }
    }

    /// Steps the Gilbert-Elliott chain; true if the packet is lost. Two draws.
    fn burst_step(&mut self) -> bool {
        let (step, lose) = (self.rng.burst.f64(), self.rng.burst.f64());
        let Some(ge) = self.plan.burst else {
            return false;
        };
        self.bad = if self.bad { step >= ge.r } else { step < ge.p };
        lose < if self.bad { ge.loss_bad } else { ge.loss_good }
    }

    /// This packet's jitter in ns, in `-jitter..=jitter`. One draw.
    fn jitter_step(&mut self) -> i64 {
        let bound = self.plan.jitter;
        let fresh = self.rng.jitter.below(2 * bound + 1) as f64 - bound as f64;
        let c = self.config.jitter_correlation;
        self.jitter = c * self.jitter + (1.0 - c) * fresh;
        let bound = bound as i64;
        (self.jitter.round() as i64).clamp(-bound, bound)
    }

    /// Puts a copy on its way: to the rate limiter if there is one, else straight to delivery.
    fn enqueue(&mut self, at: u64, index: u64, packet: T, size: usize) {
        let entry = Entry {
            at,
            seq: self.seq,
            index,
            size,
            packet,
        };
        self.seq += 1;
        if self.plan.rate_kbps.is_some() {
            self.arriving.push(Reverse(entry));
        } else {
            self.due.push(Reverse(entry));
        }
    }

    /// Runs the rate limiter up to `now`: every packet that has arrived by then is queued (or
    /// dropped) in arrival order, and gets its delivery time.
    fn serve(&mut self, now: u64) {
        let Some(kbps) = self.plan.rate_kbps else {
            return;
        };
        while self.arriving.peek().is_some_and(|Reverse(e)| e.at <= now) {
            let Some(Reverse(mut entry)) = self.arriving.pop() else {
                break;
            };
            let arrival = entry.at;
            // Packets whose transmission has started by now have left the queue.
            while let Some(&(start, size)) = self.queue.front() {
                if start > arrival {
                    break;
                }
                self.queue.pop_front();
                self.queue_bytes -= size as u64;
            }
            if self.busy_until > arrival {
                let size = entry.size as u64;
                let full = self.queue.len() as u64 >= self.config.queue_packets
                    || self
                        .config
                        .queue_bytes
                        .is_some_and(|max| self.queue_bytes.saturating_add(size) > max);
                if full {
                    self.stats.dropped.queue_overflow += 1;
                    continue;
                }
                self.queue.push_back((self.busy_until, entry.size));
                self.queue_bytes = self.queue_bytes.saturating_add(size);
            }
            let start = self.busy_until.max(arrival);
            self.busy_until = start
                .saturating_add(transmission_nanos(entry.size, kbps))
                .min(MAX_NANOS);
            entry.at = self.busy_until;
            self.due.push(Reverse(entry));
        }
    }
}

impl<T> fmt::Debug for Link<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link")
            .field("config", &self.config)
            .field("now", &Duration::from_nanos(self.now))
            .field("in_flight", &self.in_flight())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// Time to put `size` bytes on a wire of `kbps` kilobits per second, in ns, rounded up so that
/// the rate is never exceeded.
fn transmission_nanos(size: usize, kbps: u64) -> u64 {
    // bits * 1e9 / (kbps * 1000) = bytes * 8e6 / kbps
    let nanos = (size as u128 * 8_000_000).div_ceil(u128::from(kbps));
    u64::try_from(nanos).unwrap_or(u64::MAX)
}

/// The configuration in the units the link computes with.
#[derive(Debug, Clone, Copy)]
struct Plan {
    delay: u64,
    jitter: u64,
    loss: f64,
    burst: Option<GilbertElliott>,
    reorder: f64,
    reorder_delay: u64,
    duplicate: f64,
    rate_kbps: Option<u64>,
}

impl Plan {
    fn new(config: &LinkConfig) -> Self {
        Self {
            delay: nanos(config.delay_ms),
            jitter: nanos(config.jitter_ms),
            loss: config.loss,
            burst: config.burst,
            reorder: config.reorder,
            reorder_delay: nanos(config.reorder_delay_ms),
            duplicate: config.duplicate,
            rate_kbps: config.rate_kbps,
        }
    }
}

#[derive(Debug, Clone)]
struct Streams {
    loss: Rng,
    burst: Rng,
    duplicate: Rng,
    reorder: Rng,
    jitter: Rng,
}

impl Streams {
    fn new(seed: u64) -> Self {
        Self {
            loss: Rng::new(seed, STREAM_LOSS),
            burst: Rng::new(seed, STREAM_BURST),
            duplicate: Rng::new(seed, STREAM_DUPLICATE),
            reorder: Rng::new(seed, STREAM_REORDER),
            jitter: Rng::new(seed, STREAM_JITTER),
        }
    }
}

/// A packet (or a copy of one) in flight.
struct Entry<T> {
    /// Arrival at the rate limiter, then delivery time; ns since the link's start.
    at: u64,
    /// Order of enqueueing, unique: breaks ties between equal times.
    seq: u64,
    /// Index of the send that produced it (shared by a packet and its copy).
    index: u64,
    size: usize,
    packet: T,
}

impl<T> Entry<T> {
    fn key(&self) -> (u64, u64) {
        (self.at, self.seq)
    }
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl<T> Eq for Entry<T> {}

impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<T> Ord for Entry<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

/// Counters of a [`Link`].
///
/// At any time, `delivered + dropped.total() + in_flight == sent + duplicated` (see
/// [`Link::in_flight`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct LinkStats {
    /// Packets sent.
    pub sent: u64,
    /// Bytes sent (duplicates not counted).
    pub sent_bytes: u64,
    /// Packets delivered, copies included.
    pub delivered: u64,
    /// Bytes delivered, copies included.
    pub delivered_bytes: u64,
    /// Copies made by duplication.
    pub duplicated: u64,
    /// Packets delivered after a packet sent later than them.
    pub reordered: u64,
    /// Packets lost, by cause.
    pub dropped: Drops,
}

/// Packets lost, by cause. Each lost packet counts once, for the first cause that applied
/// (in this order).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Drops {
    /// Sent inside a blackout window.
    pub blackout: u64,
    /// Random (Bernoulli) loss.
    pub random_loss: u64,
    /// Gilbert-Elliott burst loss.
    pub burst_loss: u64,
    /// Dropped by the rate limiter's full queue.
    pub queue_overflow: u64,
}

impl Drops {
    /// All packets lost.
    pub fn total(&self) -> u64 {
        self.blackout + self.random_loss + self.burst_loss + self.queue_overflow
    }
}

/// Both directions of a path between two endpoints, each its own [`Link`] with its own
/// configuration and random streams. The directions share nothing (no bandwidth, no queue).
pub struct Path<T> {
    /// From the first endpoint to the second (say, client to server).
    pub forward: Link<T>,
    /// From the second endpoint to the first.
    pub reverse: Link<T>,
}

impl<T> Path<T> {
    /// A path with a configuration per direction. `forward` draws from `seed` (like a
    /// [`Link`] made with it); `reverse` from a seed derived from it. Errors name the
    /// direction, like `reverse.loss`.
    pub fn new(
        forward: LinkConfig,
        reverse: LinkConfig,
        seed: u64,
        start: Instant,
    ) -> Result<Self, ConfigError> {
        let mut reverse_seed = seed;
        let reverse_seed = splitmix64(&mut reverse_seed);
        Ok(Self {
            forward: Link::new(forward, seed, start).map_err(|e| e.within("forward"))?,
            reverse: Link::new(reverse, reverse_seed, start).map_err(|e| e.within("reverse"))?,
        })
    }

    /// A path with the same configuration both ways (independent randomness).
    pub fn symmetric(config: LinkConfig, seed: u64, start: Instant) -> Result<Self, ConfigError> {
        Self::new(config.clone(), config, seed, start)
    }

    /// The earlier of the two directions' [`Link::poll_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        let forward = self.forward.poll_timeout();
        let reverse = self.reverse.poll_timeout();
        forward.into_iter().chain(reverse).min()
    }
}

impl<T> fmt::Debug for Path<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Path")
            .field("forward", &self.forward)
            .field("reverse", &self.reverse)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Blackout;
    use crate::preset::Preset;

    fn base() -> Instant {
        #[allow(clippy::disallowed_methods)]
        Instant::now()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn link(config: LinkConfig, t0: Instant) -> Link<u32> {
        Link::new(config, 1, t0).expect("valid config")
    }

    /// Drains everything due at `now`.
    fn drain(link: &mut Link<u32>, now: Instant) -> Vec<u32> {
        std::iter::from_fn(|| link.poll_deliver(now)).collect()
    }

    #[test]
    fn perfect_link_delivers_at_once_in_order() {
        let t0 = base();
        let mut l = link(LinkConfig::default(), t0);
        assert_eq!(l.poll_timeout(), None);
        l.send(t0, 1, 100);
        l.send(t0, 2, 100);
        assert_eq!(l.poll_timeout(), Some(t0));
        assert_eq!(drain(&mut l, t0), [1, 2]);
        assert_eq!(l.poll_timeout(), None);
        assert_eq!(l.stats().delivered_bytes, 200);
    }

    #[test]
    fn delay_holds_packets() {
        let t0 = base();
        let mut l = link(
            LinkConfig {
                delay_ms: 50.0,
                ..LinkConfig::default()
            },
            t0,
        );
        l.send(t0 + ms(10), 7, 100);
        assert_eq!(l.poll_timeout(), Some(t0 + ms(60)));
        assert_eq!(drain(&mut l, t0 + ms(59)), [0u32; 0]);
        assert_eq!(drain(&mut l, t0 + ms(60)), [7]);
    }

    #[test]
    fn jitter_without_reorder_keeps_order_and_bounds() {
        let t0 = base();
        let mut l = link(
            LinkConfig {
                delay_ms: 20.0,
                jitter_ms: 10.0,
                ..LinkConfig::default()
            },
            t0,
        );
        for i in 0..200 {
            l.send(t0 + Duration::from_micros(100 * u64::from(i)), i, 100);
        }
        let mut got = Vec::new();
        while let Some(t) = l.poll_timeout() {
            let at = t.duration_since(t0);
            for p in drain(&mut l, t) {
                let sent = Duration::from_micros(100 * u64::from(p));
                assert!(at >= sent + ms(10), "packet {p} at {at:?}");
                got.push(p);
            }
        }
        assert_eq!(got, (0..200).collect::<Vec<_>>());
        assert_eq!(l.stats().reordered, 0);
    }

    #[test]
    fn jitter_reorder_reorders() {
        let t0 = base();
        let mut l = link(
            LinkConfig {
                delay_ms: 20.0,
                jitter_ms: 10.0,
                jitter_reorder: true,
                ..LinkConfig::default()
            },
            t0,
        );
        for i in 0..100 {
            l.send(t0 + Duration::from_micros(100 * u64::from(i)), i, 100);
        }
        let got = drain(&mut l, t0 + ms(100));
        assert_eq!(got.len(), 100);
        assert_ne!(got, (0..100).collect::<Vec<_>>());
        assert!(l.stats().reordered > 0);
    }

    #[test]
    fn jitter_larger_than_delay_never_delivers_before_send() {
        let t0 = base();
        let mut l = link(
            LinkConfig {
                delay_ms: 1.0,
                jitter_ms: 30.0,
                jitter_reorder: true,
                ..LinkConfig::default()
            },
            t0,
        );
        l.send(t0 + ms(5), 1, 10);
        assert!(l.poll_timeout().is_some_and(|t| t >= t0 + ms(5)));
    }

    #[test]
    fn correlation_smooths_jitter() {
        // Mean absolute change between successive delays, with and without correlation.
        let spread = |c: f64| {
            let t0 = base();
            let mut l = link(
                LinkConfig {
                    delay_ms: 100.0,
                    jitter_ms: 50.0,
                    jitter_correlation: c,
                    jitter_reorder: true,
                    ..LinkConfig::default()
                },
                t0,
            );
            let mut delays = Vec::new();
            for i in 0..2000u32 {
                let sent = t0 + ms(u64::from(i) * 1000);
                l.send(sent, i, 1);
                let at = l.poll_timeout().expect("in flight");
                assert_eq!(drain(&mut l, at), [i]);
                delays.push(at.duration_since(sent).as_secs_f64());
            }
            delays.windows(2).map(|w| (w[1] - w[0]).abs()).sum::<f64>() / 1999.0
        };
        let (independent, smooth) = (spread(0.0), spread(0.9));
        assert!(smooth < independent / 3.0, "{smooth} vs {independent}");
        // Correlation 1 freezes the jitter at zero.
        assert!(spread(1.0) < 1e-9);
    }

    #[test]
    fn rate_limit_spaces_packets() {
        let t0 = base();
        // 1000 kbps: 125 bytes take 1 ms.
        let mut l = link(
            LinkConfig {
                delay_ms: 10.0,
                rate_kbps: Some(1000),
                ..LinkConfig::default()
            },
            t0,
        );
        for i in 0..3 {
            l.send(t0, i, 125);
        }
        // The first wake-up is the arrival at the rate limiter, with nothing to deliver yet.
        assert_eq!(l.poll_timeout(), Some(t0 + ms(10)));
        assert_eq!(drain(&mut l, t0 + ms(10)), [0u32; 0]);
        assert_eq!(l.poll_timeout(), Some(t0 + ms(11)));
        assert_eq!(drain(&mut l, t0 + ms(11)), [0]);
        assert_eq!(l.poll_timeout(), Some(t0 + ms(12)));
        assert_eq!(drain(&mut l, t0 + ms(13)), [1, 2]);
    }

    #[test]
    fn queue_limit_in_packets_drops_tail() {
        let t0 = base();
        let mut l = link(
            LinkConfig {
                rate_kbps: Some(1000),
                queue_packets: 2,
                ..LinkConfig::default()
            },
            t0,
        );
        for i in 0..6 {
            l.send(t0, i, 125);
        }
        // One in transmission, two waiting, three dropped.
        assert_eq!(drain(&mut l, t0 + ms(100)), [0, 1, 2]);
        assert_eq!(l.stats().dropped.queue_overflow, 3);
        // Later the queue has room again.
        l.send(t0 + ms(200), 9, 125);
        assert_eq!(drain(&mut l, t0 + ms(201)), [9]);
    }

    #[test]
    fn queue_limit_in_bytes_drops_tail() {
        let t0 = base();
        let mut l = link(
            LinkConfig {
                rate_kbps: Some(1000),
                queue_bytes: Some(300),
                ..LinkConfig::default()
            },
            t0,
        );
        for (i, size) in [(0, 1000), (1, 200), (2, 200), (3, 100), (4, 1)].into_iter() {
            l.send(t0, i, size);
        }
        // 0 is transmitting; 1 waits (200); 2 would make 400 > 300; 3 fits (300); 4 does not.
        assert_eq!(drain(&mut l, t0 + ms(100)), [0, 1, 3]);
        assert_eq!(l.stats().dropped.queue_overflow, 2);
    }

    #[test]
    fn zero_queue_still_transmits_on_an_idle_link() {
        let t0 = base();
        let mut l = link(
            LinkConfig {
                rate_kbps: Some(1000),
                queue_packets: 0,
                ..LinkConfig::default()
            },
            t0,
        );
        l.send(t0, 0, 125);
        l.send(t0, 1, 125);
        l.send(t0 + ms(1), 2, 125);
        assert_eq!(drain(&mut l, t0 + ms(10)), [0, 2]);
    }

    #[test]
    fn configured_and_added_blackouts_drop_what_is_sent_inside() {
        let t0 = base();
        let mut l = link(
            LinkConfig {
                delay_ms: 5.0,
                blackouts: vec![Blackout {
                    start_ms: 100.0,
                    duration_ms: 50.0,
                }],
                ..LinkConfig::default()
            },
            t0,
        );
        l.add_blackout(t0 + ms(300), ms(10));
        for t in [0, 99, 100, 149, 150, 299, 300, 309, 310] {
            l.send(t0 + ms(t), t as u32, 1);
        }
        assert_eq!(drain(&mut l, t0 + ms(400)), [0, 99, 150, 299, 310]);
        assert_eq!(l.stats().dropped.blackout, 4);
    }

    #[test]
    fn packets_in_flight_when_a_blackout_starts_arrive() {
        let t0 = base();
        let mut l = link(
            LinkConfig {
                delay_ms: 50.0,
                blackouts: vec![Blackout {
                    start_ms: 10.0,
                    duration_ms: 100.0,
                }],
                ..LinkConfig::default()
            },
            t0,
        );
        l.send(t0, 1, 1);
        assert_eq!(drain(&mut l, t0 + ms(50)), [1]);
    }

    #[test]
    fn duplicate_follows_original() {
        let t0 = base();
        let mut l = link(
            LinkConfig {
                delay_ms: 5.0,
                duplicate: 1.0,
                ..LinkConfig::default()
            },
            t0,
        );
        l.send(t0, 1, 10);
        l.send(t0, 2, 10);
        assert_eq!(drain(&mut l, t0 + ms(5)), [1, 1, 2, 2]);
        assert_eq!(l.stats().duplicated, 2);
        assert_eq!(l.stats().delivered, 4);
        assert_eq!(l.stats().reordered, 0);
    }

    #[test]
    fn reordered_packet_is_overtaken() {
        let t0 = base();
        let mut l = link(
            LinkConfig {
                delay_ms: 5.0,
                reorder: 1.0,
                reorder_delay_ms: 10.0,
                ..LinkConfig::default()
            },
            t0,
        );
        // Every packet is held back by 10 ms; the one sent 20 ms later is not affected.
        l.send(t0, 1, 10);
        assert_eq!(l.poll_timeout(), Some(t0 + ms(15)));
        let mut l = link(
            LinkConfig {
                delay_ms: 5.0,
                reorder: 0.5,
                reorder_delay_ms: 10.0,
                ..LinkConfig::default()
            },
            t0,
        );
        for i in 0..100 {
            l.send(t0 + ms(u64::from(i)), i, 10);
        }
        let got = drain(&mut l, t0 + ms(200));
        assert_eq!(got.len(), 100);
        assert_ne!(got, (0..100).collect::<Vec<_>>());
        assert!(l.stats().reordered > 0);
    }

    #[test]
    fn total_loss_and_stats() {
        let t0 = base();
        let mut l = link(
            LinkConfig {
                loss: 1.0,
                ..LinkConfig::default()
            },
            t0,
        );
        l.send(t0, 1, 10);
        assert_eq!(l.poll_timeout(), None);
        assert_eq!(l.stats().dropped.random_loss, 1);
        assert_eq!(l.stats().dropped.total(), 1);
        assert_eq!(l.in_flight(), 0);
    }

    #[test]
    fn time_before_start_and_going_backwards_is_clamped() {
        let t0 = base() + ms(1000);
        let mut l = link(
            LinkConfig {
                delay_ms: 10.0,
                ..LinkConfig::default()
            },
            t0,
        );
        l.send(t0 - ms(500), 1, 1);
        assert_eq!(l.poll_timeout(), Some(t0 + ms(10)));
        assert_eq!(drain(&mut l, t0 + ms(20)), [1]);
        // Back in time: counts as t0 + 20 ms.
        l.send(t0 + ms(5), 2, 1);
        assert_eq!(l.poll_timeout(), Some(t0 + ms(30)));
    }

    #[test]
    fn absurd_sizes_and_extremes_do_not_panic() {
        let t0 = base();
        let mut l = link(
            LinkConfig {
                delay_ms: crate::config::MAX_MS,
                jitter_ms: crate::config::MAX_MS,
                jitter_correlation: 0.3,
                reorder: 0.5,
                reorder_delay_ms: crate::config::MAX_MS,
                rate_kbps: Some(1),
                queue_packets: u64::MAX,
                queue_bytes: Some(u64::MAX),
                duplicate: 0.5,
                ..LinkConfig::default()
            },
            t0,
        );
        for i in 0..20 {
            l.send(t0, i, usize::MAX);
        }
        l.add_blackout(t0, Duration::MAX);
        l.send(t0 + Duration::from_secs(1 << 40), 99, 1);
        let mut rounds = 0;
        while let Some(t) = l.poll_timeout() {
            drain(&mut l, t);
            rounds += 1;
            assert!(rounds < 1000, "does not terminate");
        }
        let s = l.stats();
        assert_eq!(s.delivered + s.dropped.total(), s.sent + s.duplicated);
    }

    #[test]
    fn path_directions_are_independent() {
        let t0 = base();
        let mut p: Path<u32> = Path::symmetric(
            LinkConfig {
                loss: 0.5,
                ..LinkConfig::default()
            },
            3,
            t0,
        )
        .expect("valid");
        for i in 0..64 {
            p.forward.send(t0, i, 1);
            p.reverse.send(t0, i, 1);
        }
        let forward: Vec<u32> = std::iter::from_fn(|| p.forward.poll_deliver(t0)).collect();
        let reverse: Vec<u32> = std::iter::from_fn(|| p.reverse.poll_deliver(t0)).collect();
        assert_ne!(forward, reverse);
        assert_eq!(p.poll_timeout(), None);

        let err = Path::<u32>::new(
            LinkConfig::default(),
            LinkConfig {
                loss: 2.0,
                ..LinkConfig::default()
            },
            0,
            t0,
        )
        .err()
        .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("reverse.loss must be a probability in 0..=1, got 2")
        );
    }

    #[test]
    fn debug_does_not_need_debug_packets() {
        struct Opaque;
        let l: Link<Opaque> = Link::new(Preset::Wifi.config(), 0, base()).expect("valid");
        assert!(format!("{l:?}").starts_with("Link {"));
    }
}
