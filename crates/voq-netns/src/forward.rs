//! The forwarding loop: one thread in the root namespace holding both TUN devices, one
//! `voq_netem::Link` per direction.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tun_tap::Iface;
use voq_netem::{Link, LinkConfig, LinkStats, Path};

use crate::cmd::ip;
use crate::error::{Error, Result};
use crate::{Direction, TUN_NAME};

/// Larger than any packet a TUN device without offloads hands over (MTU ≤ 65535).
const BUFFER: usize = 65_536;

/// One direction: the engine packets go into now, engines replaced by
/// [`NetnsLink::set_config`](crate::NetnsLink::set_config) that still hold packets in flight,
/// and the counters of the engines that are done.
struct Lane {
    link: Link<Vec<u8>>,
    retired: Vec<Link<Vec<u8>>>,
    past: LinkStats,
    write_errors: u64,
    read_errors: u64,
    generation: u64,
}

impl Lane {
    fn new(link: Link<Vec<u8>>) -> Self {
        Self {
            link,
            retired: Vec::new(),
            past: LinkStats::default(),
            write_errors: 0,
            read_errors: 0,
            generation: 0,
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        std::iter::once(&self.link)
            .chain(&self.retired)
            .filter_map(Link::poll_timeout)
            .min()
    }

    fn deliver(&mut self, now: Instant, out: &mut Vec<Vec<u8>>) {
        for link in &mut self.retired {
            while let Some(packet) = link.poll_deliver(now) {
                out.push(packet);
            }
        }
        while let Some(packet) = self.link.poll_deliver(now) {
            out.push(packet);
        }
        // Engines with nothing left in flight are done: keep only their counters.
        let past = &mut self.past;
        self.retired.retain(|link| {
            let done = link.in_flight() == 0;
            if done {
                add(past, link.stats());
            }
            !done
        });
    }

    fn stats(&self) -> LinkStats {
        let mut total = self.past;
        for link in &self.retired {
            add(&mut total, link.stats());
        }
        add(&mut total, self.link.stats());
        total
    }
}

fn add(total: &mut LinkStats, s: &LinkStats) {
    total.sent += s.sent;
    total.sent_bytes += s.sent_bytes;
    total.delivered += s.delivered;
    total.delivered_bytes += s.delivered_bytes;
    total.duplicated += s.duplicated;
    total.reordered += s.reordered;
    total.dropped.blackout += s.dropped.blackout;
    total.dropped.random_loss += s.dropped.random_loss;
    total.dropped.burst_loss += s.dropped.burst_loss;
    total.dropped.queue_overflow += s.dropped.queue_overflow;
}

struct Lanes {
    lanes: [Lane; 2],
    seed: u64,
    /// Why the forwarder stopped, if it failed.
    failure: Option<String>,
    /// Set by [`Forwarder::stop`].
    stop: bool,
}

/// State shared by the forwarding thread and the [`NetnsLink`](crate::NetnsLink) handle.
pub(crate) struct Shared {
    lanes: Mutex<Lanes>,
    /// Wakes the delivery thread after a change that may move its next deadline.
    changed: Condvar,
}

impl Shared {
    pub(crate) fn new(a_to_b: LinkConfig, b_to_a: LinkConfig, seed: u64) -> Result<Self> {
        let Path { forward, reverse } = Path::new(a_to_b, b_to_a, seed, Instant::now())?;
        Ok(Self {
            lanes: Mutex::new(Lanes {
                lanes: [Lane::new(forward), Lane::new(reverse)],
                seed,
                failure: None,
                stop: false,
            }),
            changed: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Lanes> {
        self.lanes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn blackout(&self, direction: Direction, start: Instant, duration: Duration) {
        self.lock().lanes[direction.index()]
            .link
            .add_blackout(start, duration);
        self.changed.notify_all();
    }

    /// Replaces the engine of `direction`. Packets in flight in the old engine are still
    /// delivered by it, on its schedule; packets read from now on go through the new one.
    pub(crate) fn set_config(&self, direction: Direction, config: LinkConfig) -> Result<()> {
        let mut lanes = self.lock();
        let seed = lanes.seed;
        let lane = &mut lanes.lanes[direction.index()];
        lane.generation += 1;
        // A fresh stream per (direction, generation), away from the first engines' seeds.
        let mixed = seed
            ^ ((lane.generation << 1) | direction.index() as u64)
                .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let link = Link::new(config, mixed, Instant::now())?;
        let old = std::mem::replace(&mut lane.link, link);
        if old.in_flight() > 0 {
            lane.retired.push(old);
        } else {
            add(&mut lane.past, old.stats());
        }
        drop(lanes);
        self.changed.notify_all();
        Ok(())
    }

    pub(crate) fn config(&self, direction: Direction) -> LinkConfig {
        self.lock().lanes[direction.index()].link.config().clone()
    }

    pub(crate) fn stats(&self, direction: Direction) -> LinkStats {
        self.lock().lanes[direction.index()].stats()
    }

    pub(crate) fn io_errors(&self, direction: Direction) -> (u64, u64) {
        let lanes = self.lock();
        let lane = &lanes.lanes[direction.index()];
        (lane.read_errors, lane.write_errors)
    }

    pub(crate) fn in_flight(&self, direction: Direction) -> usize {
        let lanes = self.lock();
        let lane = &lanes.lanes[direction.index()];
        lane.link.in_flight() + lane.retired.iter().map(Link::in_flight).sum::<usize>()
    }

    pub(crate) fn failure(&self) -> Option<String> {
        self.lock().failure.clone()
    }
}

/// The running forwarder: a reader thread per TUN device (blocking reads: a packet is taken
/// the moment the kernel hands it over) and a delivery thread that sleeps on a condition
/// variable until the next packet is due (nanosecond timeouts). Dropping it stops all three.
pub(crate) struct Forwarder {
    shared: Arc<Shared>,
    /// The namespaces holding the devices, to delete the devices at stop.
    namespaces: [String; 2],
    threads: Vec<JoinHandle<()>>,
}

impl Forwarder {
    /// Starts the threads. `a` is the device in namespace `namespaces[0]`, `b` in `[1]`.
    pub(crate) fn start(
        a: Iface,
        b: Iface,
        namespaces: [String; 2],
        shared: Arc<Shared>,
    ) -> Result<Self> {
        let a = Arc::new(a);
        let b = Arc::new(b);
        let mut forwarder = Self {
            shared: shared.clone(),
            namespaces,
            threads: Vec::new(),
        };
        let spawn = |name: &str, body: Box<dyn FnOnce() + Send>| {
            thread::Builder::new()
                .name(name.into())
                .spawn(body)
                .map_err(|e| Error::io("spawning a forwarder thread", e))
        };
        // On error, `forwarder` drops here and stops what was started.
        let (s, d) = (shared.clone(), a.clone());
        forwarder.threads.push(spawn(
            "voq-netns read a",
            Box::new(move || read_loop(&d, Direction::AToB, &s)),
        )?);
        let (s, d) = (shared.clone(), b.clone());
        forwarder.threads.push(spawn(
            "voq-netns read b",
            Box::new(move || read_loop(&d, Direction::BToA, &s)),
        )?);
        forwarder.threads.push(spawn(
            "voq-netns deliver",
            Box::new(move || deliver_loop(&a, &b, &shared)),
        )?);
        Ok(forwarder)
    }

    /// Stops the threads and waits for them (at most [`STOP_TIMEOUT`] in all); idempotent.
    ///
    /// A reader blocked in `read` is woken by deleting its device (`ip -n NS link del voq0`):
    /// the kernel detaches the file and fails the read. If that does not happen in time, the
    /// thread is left behind (detached) and the failure recorded.
    pub(crate) fn stop(&mut self) {
        if self.threads.is_empty() {
            return;
        }
        self.shared.lock().stop = true;
        self.shared.changed.notify_all();
        for namespace in &self.namespaces {
            // Fails if the device or the namespace is already gone: then no read blocks on it.
            let _ = ip(&["-n", namespace, "link", "del", TUN_NAME]);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        for thread in self.threads.drain(..) {
            while !thread.is_finished() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(1));
            }
            if thread.is_finished() {
                let _ = thread.join();
            } else {
                let name = thread.thread().name().unwrap_or("?").to_owned();
                self.shared.lock().failure = Some(format!("thread {name} did not stop"));
                eprintln!("voq-netns: forwarder thread {name} did not stop; leaving it");
            }
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How long [`Forwarder::stop`] waits for its threads.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads packets from `device` into the lane of `direction` until stopped.
fn read_loop(device: &Iface, direction: Direction, shared: &Shared) {
    let mut buffer = vec![0u8; BUFFER];
    loop {
        let result = device.recv(&mut buffer);
        let now = Instant::now();
        let mut lanes = shared.lock();
        if lanes.stop {
            return;
        }
        match result {
            Ok(n) => {
                lanes.lanes[direction.index()]
                    .link
                    .send(now, buffer[..n].to_vec(), n);
                drop(lanes);
                shared.changed.notify_one();
            }
            Err(e) => {
                lanes.lanes[direction.index()].read_errors += 1;
                // EBADFD or EFAULT: the device was deleted under us; nothing will come any more.
                let errno = rustix::io::Errno::from_io_error(&e);
                if errno == Some(rustix::io::Errno::BADFD)
                    || errno == Some(rustix::io::Errno::FAULT)
                {
                    lanes.failure = Some(format!("reading {direction:?}: {e}"));
                    return;
                }
                drop(lanes);
                thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

/// Delivers due packets: `AToB` into device `b`, `BToA` into `a`.
fn deliver_loop(a: &Iface, b: &Iface, shared: &Shared) {
    let mut due = Vec::new();
    let mut lanes = shared.lock();
    loop {
        if lanes.stop {
            return;
        }
        let now = Instant::now();
        let mut wrote = false;
        for direction in Direction::BOTH {
            lanes.lanes[direction.index()].deliver(now, &mut due);
            if due.is_empty() {
                continue;
            }
            wrote = true;
            drop(lanes);
            let out = match direction {
                Direction::AToB => b,
                Direction::BToA => a,
            };
            // A TUN write hands the packet to the kernel's receive path; it does not block.
            let errors = due.drain(..).filter(|p| out.send(p).is_err()).count() as u64;
            lanes = shared.lock();
            lanes.lanes[direction.index()].write_errors += errors;
        }
        if wrote {
            // Time went on while writing: look again before sleeping.
            continue;
        }
        let next = lanes.lanes.iter().filter_map(Lane::poll_timeout).min();
        lanes = match next {
            None => shared
                .changed
                .wait(lanes)
                .unwrap_or_else(PoisonError::into_inner),
            Some(at) => {
                let wait = at.saturating_duration_since(Instant::now());
                shared
                    .changed
                    .wait_timeout(lanes, wait)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0
            }
        };
    }
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder")
            .field("namespaces", &self.namespaces)
            .field("threads", &self.threads.len())
            .finish()
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}
