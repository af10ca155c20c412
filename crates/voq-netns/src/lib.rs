//! An impaired link between two network namespaces, through a TUN device in each, driven by
//! [`voq_netem`].
//!
//! [`NetnsLink::create`] makes two namespaces (`voq-<pid>-<n>-a` and `…-b`), a TUN device
//! [`TUN_NAME`] in each, with the addresses [`A_ADDR`] (and optionally [`A_ADDR2`]) and
//! [`B_ADDR`], and routes only between them. A thread in the root namespace holds both TUN
//! devices: every IP packet one end sends goes through a [`voq_netem::Link`] for its direction
//! and is written to the other end's device when the link delivers it. TCP and UDP (so the
//! WebSocket and QUIC carriers) cross the same impaired path.
//!
//! Kernel `tc netem` is not available on our machines; this is the substitute.
//!
//! ```no_run
//! use std::net::UdpSocket;
//! use voq_netem::LinkConfig;
//! use voq_netns::{B_ADDR, NetnsConfig, NetnsLink, Side};
//!
//! let config = NetnsConfig::symmetric(LinkConfig { delay_ms: 50.0, ..LinkConfig::default() });
//! let link = NetnsLink::create(config)?;
//! // A socket belongs to the namespace it was created in; it can be used from anywhere after.
//! let server = link.ns(Side::B).enter(|| UdpSocket::bind((B_ADDR, 9000)))??;
//! let client = link.ns(Side::A).enter(|| UdpSocket::bind("0.0.0.0:0"))??;
//! client.send_to(b"ping", (B_ADDR, 9000))?;
//! let mut buf = [0; 16];
//! let (n, from) = server.recv_from(&mut buf)?; // 50 ms later
//! # let _ = (n, from);
//! // Commands run there through `ip netns exec`:
//! let out = link.run_in(Side::A, &["ip", "route"])?;
//! # let _ = out;
//! drop(link); // deletes both namespaces and devices, kills processes left in them
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! See `docs/NETNS.md` in the repository for the address plan, the forwarding, the cleanup
//! guarantees and the limits.
//!
//! The crate also builds an anycast fleet ([`Fleet`], module [`fleet`]): a client, a router and
//! up to nine servers in namespaces joined by veth pairs, the servers announcing [`ANYCAST`]
//! over BGP (BIRD 2) and the router spreading flows over them by kernel ECMP.
//!
//! ```no_run
//! use voq_netns::{Fleet, FleetConfig};
//!
//! let fleet = Fleet::create(FleetConfig::new(3))?; // returns once BGP has converged
//! assert_eq!(fleet.next_hops()?.len(), 3);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod cmd;
mod error;
pub mod fleet;
mod forward;
mod ns;

use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::process::{Child, Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tun_tap::{Iface, Mode};
pub use voq_netem::{LinkConfig, LinkStats};

pub use error::{Error, Result, Unavailable};
pub use fleet::{ANYCAST, Fleet, FleetConfig};
pub use ns::{NETNS_DIR, Namespace, PREFIX, RUN_TIMEOUT, sweep_stale};

use crate::cmd::ip;
use crate::forward::{Forwarder, Shared};

/// Address of end a (the client side), on [`TUN_NAME`] in namespace a.
pub const A_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// Address of end b (the server side), on [`TUN_NAME`] in namespace b.
pub const B_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// The optional second address of end a ([`NetnsConfig::second_client_address`]), in its own
/// /30 (`198.18.0.4/30`), for connection-migration tests: bind a second socket to it.
pub const A_ADDR2: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 5);
/// Prefix length of the link's subnets (`198.18.0.0/30`, `198.18.0.4/30`).
pub const PREFIX_LEN: u8 = 30;
/// Name of the TUN device in each namespace (the same name in both: they are separate
/// namespaces).
pub const TUN_NAME: &str = "voq0";

/// One end of the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The client end: [`A_ADDR`] (and [`A_ADDR2`]).
    A,
    /// The server end: [`B_ADDR`].
    B,
}

/// One direction of the link, each with its own [`voq_netem::Link`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From a to b (client to server, "upstream").
    AToB,
    /// From b to a.
    BToA,
}

impl Direction {
    /// Both directions.
    pub const BOTH: [Direction; 2] = [Direction::AToB, Direction::BToA];

    fn index(self) -> usize {
        match self {
            Direction::AToB => 0,
            Direction::BToA => 1,
        }
    }
}

/// What [`NetnsLink::create`] builds.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct NetnsConfig {
    /// Impairment from a to b.
    pub a_to_b: LinkConfig,
    /// Impairment from b to a.
    pub b_to_a: LinkConfig,
    /// Seed of the impairment engines: `a_to_b` uses it, `b_to_a` one derived from it (as in
    /// [`voq_netem::Path::new`]). Which packets are lost still depends on what the kernel sends
    /// (retransmissions, ACK timing), so runs over real sockets are not bit-for-bit repeatable.
    pub seed: u64,
    /// Also give end a [`A_ADDR2`] (`198.18.0.5/30`), routed from b.
    pub second_client_address: bool,
    /// MTU of both TUN devices (bytes, 68..=65535).
    pub mtu: u32,
}

impl Default for NetnsConfig {
    /// No impairment, seed 1, one client address, MTU 1500.
    fn default() -> Self {
        Self {
            a_to_b: LinkConfig::default(),
            b_to_a: LinkConfig::default(),
            seed: 1,
            second_client_address: false,
            mtu: 1500,
        }
    }
}

impl NetnsConfig {
    /// One configuration per direction.
    pub fn new(a_to_b: LinkConfig, b_to_a: LinkConfig) -> Self {
        Self {
            a_to_b,
            b_to_a,
            ..Self::default()
        }
    }

    /// The same configuration both ways (independent randomness).
    pub fn symmetric(config: LinkConfig) -> Self {
        Self::new(config.clone(), config)
    }

    /// With this seed.
    #[must_use]
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// With (or without) the second client address [`A_ADDR2`].
    #[must_use]
    pub fn with_second_client_address(mut self, on: bool) -> Self {
        self.second_client_address = on;
        self
    }

    /// With this MTU.
    #[must_use]
    pub fn with_mtu(mut self, mtu: u32) -> Self {
        self.mtu = mtu;
        self
    }
}

/// Two network namespaces joined by an impaired link. Dropping it stops the forwarder, kills
/// the processes left in the namespaces and deletes them (and so their devices).
///
/// Field order matters: the forwarder (holding the TUN devices) stops before the namespaces
/// are deleted.
#[derive(Debug)]
pub struct NetnsLink {
    forwarder: Forwarder,
    shared: Arc<Shared>,
    a: Namespace,
    b: Namespace,
}

impl NetnsLink {
    /// Whether this machine can create links: root (effective uid 0), a working `ip`,
    /// `/dev/net/tun`, and the right to create a namespace (tried once per process, then
    /// cached). Tests call it and, when it fails, print `SKIPPED: <reason>` and return.
    pub fn available() -> std::result::Result<(), Unavailable> {
        ns::available()
    }

    /// Creates both namespaces, their TUN devices, addresses and routes, and starts the
    /// forwarder. First removes leftovers of dead processes ([`sweep_stale`]). On error,
    /// everything made so far is removed again.
    pub fn create(config: NetnsConfig) -> Result<Self> {
        Self::available()?;
        if !(68..=65_535).contains(&config.mtu) {
            return Err(Error::io(
                "NetnsConfig::mtu",
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "MTU must be 68..=65535"),
            ));
        }
        sweep_stale();
        // Validate before making anything.
        let shared = Arc::new(Shared::new(
            config.a_to_b.clone(),
            config.b_to_a.clone(),
            config.seed,
        )?);

        let (n, name_a) = ns::fresh_name("a");
        let name_b = format!("{PREFIX}{}-{n}-b", std::process::id());
        // Each guard deletes its namespace if a later step fails.
        let mut a = Namespace::add(name_a)?;
        let mut b = Namespace::add(name_b)?;
        let tun_a = open_tun(&a)?;
        let tun_b = open_tun(&b)?;

        let mut a_addresses = vec![A_ADDR];
        if config.second_client_address {
            a_addresses.push(A_ADDR2);
        }
        configure(&a, config.mtu, &a_addresses, &[])?;
        let b_routes: &[&str] = if config.second_client_address {
            &["198.18.0.4/30"]
        } else {
            &[]
        };
        configure(&b, config.mtu, &[B_ADDR], b_routes)?;
        a.set_addresses(a_addresses);
        b.set_addresses(vec![B_ADDR]);

        let names = [a.name().to_owned(), b.name().to_owned()];
        let forwarder = Forwarder::start(tun_a, tun_b, names, shared.clone())?;
        Ok(Self {
            forwarder,
            shared,
            a,
            b,
        })
    }

    /// The namespace of one end.
    pub fn ns(&self, side: Side) -> &Namespace {
        match side {
            Side::A => &self.a,
            Side::B => &self.b,
        }
    }

    /// The namespace's name of one end (`voq-<pid>-<n>-a` or `-b`).
    pub fn name(&self, side: Side) -> &str {
        self.ns(side).name()
    }

    /// A [`Command`] running `program` in one end's namespace ([`Namespace::command`]).
    pub fn command_in(&self, side: Side, program: impl AsRef<OsStr>) -> Command {
        self.ns(side).command(program)
    }

    /// Runs `argv` in one end's namespace to completion, outputs captured, bounded by
    /// [`RUN_TIMEOUT`] ([`Namespace::run`]).
    pub fn run_in<S: AsRef<OsStr>>(&self, side: Side, argv: &[S]) -> Result<Output> {
        self.ns(side).run(argv)
    }

    /// Starts `argv` in one end's namespace ([`Namespace::spawn`]).
    pub fn spawn_in<S: AsRef<OsStr>>(&self, side: Side, argv: &[S]) -> Result<Child> {
        self.ns(side).spawn(argv)
    }

    /// Loses every packet sent in `direction` from now for `duration` (packets already in
    /// flight still arrive). Returns the window's start.
    pub fn blackout(&self, direction: Direction, duration: Duration) -> Instant {
        let start = Instant::now();
        self.shared.blackout(direction, start, duration);
        start
    }

    /// Loses every packet sent in `direction` from `start` for `duration`.
    pub fn blackout_at(&self, direction: Direction, start: Instant, duration: Duration) {
        self.shared.blackout(direction, start, duration);
    }

    /// Replaces the impairment of `direction` from now on. Packets already in flight keep the
    /// old schedule; packets sent from now go through a new engine (its blackout windows count
    /// from now, its random streams are fresh). A shorter delay lets new packets overtake old
    /// ones, as on a real route change. [`stats`](Self::stats) keeps counting across changes.
    pub fn set_config(&self, direction: Direction, config: LinkConfig) -> Result<()> {
        self.shared.set_config(direction, config)
    }

    /// The impairment of `direction` now.
    pub fn config(&self, direction: Direction) -> LinkConfig {
        self.shared.config(direction)
    }

    /// The counters of `direction` since creation (summed over [`set_config`](Self::set_config)
    /// changes). Every IP packet counts, the kernel's own (TCP ACKs, ICMP errors) included.
    pub fn stats(&self, direction: Direction) -> LinkStats {
        self.shared.stats(direction)
    }

    /// Packets of `direction` in the impairment engine, not yet delivered.
    pub fn in_flight(&self, direction: Direction) -> usize {
        self.shared.in_flight(direction)
    }

    /// Failed reads from the sending device and failed writes to the receiving device of
    /// `direction` (both should stay 0).
    pub fn io_errors(&self, direction: Direction) -> (u64, u64) {
        self.shared.io_errors(direction)
    }

    /// Why the forwarder stopped, if it failed (then nothing crosses the link any more).
    pub fn forwarder_error(&self) -> Option<String> {
        self.shared.failure()
    }

    /// Like dropping the link, but reports a failure to delete a namespace.
    pub fn close(mut self) -> Result<()> {
        self.forwarder.stop();
        let a = self.a.delete();
        let b = self.b.delete();
        a.and(b)
    }
}

impl Drop for NetnsLink {
    fn drop(&mut self) {
        // Fields drop in declaration order anyway; this makes the order explicit: no device
        // may be held open by the forwarder while its namespace is deleted.
        self.forwarder.stop();
    }
}

/// Opens the TUN device [`TUN_NAME`] inside `ns` (on a thread that entered it: `TUNSETIFF`
/// creates the device in the caller's namespace), after turning IPv6 off there so that the
/// kernel sends no router solicitations or MLD reports across the link.
fn open_tun(ns: &Namespace) -> Result<Iface> {
    ns.enter(|| {
        ns::disable_ipv6_here()?;
        Iface::without_packet_info(TUN_NAME, Mode::Tun)
            .map_err(|e| Error::io(format!("creating TUN device {TUN_NAME}"), e))
    })?
}

/// Addresses, routes and links up in `ns`, through `ip -n`.
fn configure(ns: &Namespace, mtu: u32, addresses: &[Ipv4Addr], routes: &[&str]) -> Result<()> {
    let name = ns.name();
    ip(&["-n", name, "link", "set", "lo", "up"])?;
    let mtu = mtu.to_string();
    ip(&["-n", name, "link", "set", TUN_NAME, "mtu", &mtu])?;
    for address in addresses {
        let cidr = format!("{address}/{PREFIX_LEN}");
        ip(&["-n", name, "addr", "add", &cidr, "dev", TUN_NAME])?;
    }
    ip(&["-n", name, "link", "set", TUN_NAME, "up"])?;
    for route in routes {
        ip(&["-n", name, "route", "add", route, "dev", TUN_NAME])?;
    }
    Ok(())
}
