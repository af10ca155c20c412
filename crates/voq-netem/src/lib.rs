//! Seeded, sans-IO network impairment engine, generic over packets.
//!
//! A [`Link`] is one direction of an impaired path. It delays packets (with bounded,
//! optionally correlated jitter), loses them (at random, in Gilbert-Elliott bursts, in
//! blackout windows), reorders and duplicates them on request, and serializes them through a
//! rate limit with a finite drop-tail queue. A [`Path`] is two links, one per direction.
//! [`LinkConfig`] says what a link does, in units a TOML scenario can hold (`delay_ms`,
//! `rate_kbps`, probabilities as fractions); [`Preset`] names a few typical ones (`wifi`,
//! `cellular`, `lossy`, `satellite`, `none`).
//!
//! Sans-IO (layer 0): no clock, no OS randomness, no I/O, no threads. Time comes in as
//! [`Instant`](std::time::Instant) arguments, so a link runs on virtual time as well as real
//! time; randomness comes from a `u64` seed through a generator written out in this crate, so
//! the same seed and the same inputs give the same run on every platform.
//!
//! # The drain rule
//!
//! After every input — a [`Link::send`], or the clock reaching [`Link::poll_timeout`] — call
//! [`Link::poll_deliver`] until it returns `None`, then ask `poll_timeout` again.
//!
//! # Example
//!
//! Two endpoints on virtual time: a client sends fifty 20 ms audio frames over a Wi-Fi-like
//! path, a server echoes each frame it receives.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use voq_netem::{Path, Preset};
//!
//! // The one clock reading; everything after it is virtual time.
//! let start = Instant::now();
//! let mut path: Path<u32> = Path::symmetric(Preset::Wifi.config(), 42, start)?;
//!
//! let mut now = start;
//! let mut next_frame = Some(start);
//! let (mut sent, mut echoed) = (0, 0);
//! loop {
//!     // Inputs due now.
//!     if next_frame == Some(now) {
//!         path.forward.send(now, sent, 160);
//!         sent += 1;
//!         next_frame = (sent < 50).then(|| now + Duration::from_millis(20));
//!     }
//!     // Drain every link; what the server receives becomes its input.
//!     while let Some(frame) = path.forward.poll_deliver(now) {
//!         path.reverse.send(now, frame, 160);
//!     }
//!     while let Some(_frame) = path.reverse.poll_deliver(now) {
//!         echoed += 1;
//!     }
//!     // Jump to the next event; stop when nothing is left.
//!     match [next_frame, path.poll_timeout()].into_iter().flatten().min() {
//!         Some(next) => now = next,
//!         None => break,
//!     }
//! }
//!
//! let (up, down) = (path.forward.stats(), path.reverse.stats());
//! assert_eq!(up.sent, 50);
//! assert_eq!(down.sent, up.delivered);
//! assert_eq!(echoed, down.delivered);
//! // Conservation: every packet (and copy) is delivered or dropped, for a cause.
//! assert_eq!(up.delivered + up.dropped.total(), up.sent + up.duplicated);
//! # Ok::<(), voq_netem::ConfigError>(())
//! ```
//!
//! See `docs/NETEM.md` in the repository for the model, the fields and the presets.

mod config;
pub mod limit;
mod link;
mod preset;
mod rng;

pub use config::{Blackout, ConfigError, GilbertElliott, LinkConfig, MAX_MS};
pub use link::{Drops, Link, LinkStats, Path};
pub use preset::{ParsePresetError, Preset};
