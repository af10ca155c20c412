//! An anycast fleet on one machine: a client, a router and 1 to 9 servers, each in its own
//! network namespace, joined by veth pairs. Every server announces [`ANYCAST`] over BGP (a BIRD 2
//! daemon in each server and in the router); the router's BIRD installs the equal routes as one
//! kernel ECMP route, and the kernel spreads flows over the servers by their 5-tuple hash.
//!
//! ```text
//!   client   198.18.10.2/24 + 198.18.11.2/24 on c0, default via 198.18.10.1
//!     |  veth c0 <-> rc                  router side 198.18.10.1/24 + 198.18.11.1/24
//!   router   BIRD AS 65000, kernel protocol with `merge paths`: ECMP route 198.19.0.1/32
//!     |  veth rsK <-> e0 (K = 1..=n)     router side 198.18.2K.1/24
//!   sK       198.18.2K.2/24 on e0, 198.19.0.1/32 on lo, default via 198.18.2K.1;
//!            BIRD AS 6500K, `protocol static anycast` announces 198.19.0.1/32
//! ```
//!
//! Servers are counted from 0 in the API (`server(0)` is `s1`), from 1 in names and addresses.
//! `birdc -s SOCKET disable anycast` ([`Fleet::bird_socket`], [`ANNOUNCEMENT`]) withdraws a
//! server from the ECMP set, `enable anycast` announces it again.
//!
//! Names are per fleet, so that fleets of several processes coexist, and BIRD runs as child
//! processes (`bird -f`) that the fleet kills when it goes. See `docs/NETNS.md`, section
//! *Fleet*.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crate::cmd::{self, ip};
use crate::error::{Error, Result, Unavailable};
use crate::ns::{self, Namespace, PREFIX};

/// The anycast address every server announces and holds on `lo`.
pub const ANYCAST: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
/// The client's address (on `c0`, the source of its default route).
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 2);
/// The client's second address, in a subnet of its own, for migration tests: bind a socket to
/// it and the servers see a new path.
pub const CLIENT_ADDR2: Ipv4Addr = Ipv4Addr::new(198, 18, 11, 2);
/// The router's addresses facing the client ([`CLIENT_ADDR`]'s and [`CLIENT_ADDR2`]'s gateway).
const CLIENT_GATEWAY: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 1);
const CLIENT_GATEWAY2: Ipv4Addr = Ipv4Addr::new(198, 18, 11, 1);
/// The most servers a fleet has: the address plan (`198.18.2K.0/24`) and the AS numbers
/// (`6500K`) have one digit for them.
pub const MAX_SERVERS: usize = 9;
/// The BIRD 2 daemon (Debian package `bird2`).
pub const BIRD: &str = "/usr/sbin/bird";
/// Where each fleet keeps its BIRD configurations, control sockets, pid files and logs, in a
/// directory of its own, `voq-<pid>-<n>`, named like its namespaces (so that
/// [`sweep_stale`](crate::sweep_stale) finds those of dead processes). Short, because a control
/// socket's path must fit a `sockaddr_un` (108 bytes).
pub const RUN_DIR: &str = "/run/voq-fleet";
/// The BIRD protocol of each server that announces [`ANYCAST`]: `disable anycast` withdraws
/// the server, `enable anycast` announces it again.
pub const ANNOUNCEMENT: &str = "anycast";
/// How long [`Fleet::create`] waits for the router's ECMP route to reach every server.
pub const UP_TIMEOUT: Duration = Duration::from_secs(30);

/// How often the router's route is read while waiting for it.
const POLL_INTERVAL: Duration = Duration::from_millis(25);
/// How much of a BIRD log an error quotes.
const LOG_TAIL_LINES: usize = 20;

/// What [`Fleet::create`] builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FleetConfig {
    /// Number of servers, `1..=`[`MAX_SERVERS`].
    pub servers: usize,
    /// The router's `net.ipv4.fib_multipath_hash_seed` (Linux 6.11 or later): a fixed seed makes
    /// the flow-to-server mapping repeatable across fleets. `None` (or `Some(0)`) leaves the
    /// kernel's random seed of the namespace.
    pub hash_seed: Option<u32>,
}

impl Default for FleetConfig {
    /// Three servers, random hash seed.
    fn default() -> Self {
        Self {
            servers: 3,
            hash_seed: None,
        }
    }
}

impl FleetConfig {
    /// `servers` servers, random hash seed.
    pub fn new(servers: usize) -> Self {
        Self {
            servers,
            ..Self::default()
        }
    }

    /// With this multipath hash seed.
    #[must_use]
    pub fn with_hash_seed(mut self, seed: u32) -> Self {
        self.hash_seed = Some(seed);
        self
    }

    fn validate(&self) -> Result<()> {
        if !(1..=MAX_SERVERS).contains(&self.servers) {
            return Err(Error::io(
                "FleetConfig::servers",
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "a fleet has 1..={MAX_SERVERS} servers, not {}",
                        self.servers
                    ),
                ),
            ));
        }
        Ok(())
    }
}

/// An anycast fleet: client, router and servers in namespaces `voq-<pid>-<n>-client`,
/// `…-router`, `…-s1`…, with BGP converged (the router's route to [`ANYCAST`] goes via every
/// server) when [`create`](Self::create) returns.
///
/// Dropping it kills the BIRD daemons and whatever else runs in its namespaces, deletes the
/// namespaces (and so the veths) and removes its run directory; [`close`](Self::close) does the
/// same and reports failures. The fields drop in declaration order, which is that order.
#[derive(Debug)]
pub struct Fleet {
    birds: Vec<Bird>,
    servers: Vec<Namespace>,
    router: Namespace,
    client: Namespace,
    run_dir: RunDir,
}

impl Fleet {
    /// Whether this machine can build a fleet: root, a working `ip`, the right to create a
    /// namespace, and BIRD 2 at [`BIRD`]. Checked once per process, then cached. Tests call it
    /// and, when it fails, print `SKIPPED: <reason>` and return.
    pub fn available() -> std::result::Result<(), Unavailable> {
        static PROBE: OnceLock<std::result::Result<(), Unavailable>> = OnceLock::new();
        PROBE
            .get_or_init(|| {
                ns::namespaces_available()?;
                probe_bird()
            })
            .clone()
    }

    /// Builds the fleet and waits (up to [`UP_TIMEOUT`]) until the router's route to
    /// [`ANYCAST`] goes via every server. First removes leftovers of dead processes
    /// ([`sweep_stale`](crate::sweep_stale)). On error (a BIRD daemon that rejects its
    /// configuration or exits, no convergence in time, a failed `ip` command), everything made
    /// so far is removed again, and the error quotes what BIRD wrote.
    pub fn create(config: FleetConfig) -> Result<Self> {
        Self::build(config, UP_TIMEOUT)
    }

    fn build(config: FleetConfig, up_timeout: Duration) -> Result<Self> {
        config.validate()?;
        Self::available()?;
        ns::sweep_stale();

        let (n, client_name) = ns::fresh_name("client");
        let base = format!("{PREFIX}{}-{n}", std::process::id());
        // Each guard undoes its step when dropped, so whatever fails below leaves nothing
        // behind: the locals drop here, the partly built fleet in the steps after.
        let run_dir = RunDir::create(Path::new(RUN_DIR).join(&base))?;
        let mut client = Namespace::add(client_name)?;
        let mut router = Namespace::add(format!("{base}-router"))?;
        let mut servers = Vec::with_capacity(config.servers);
        for k in 1..=config.servers {
            servers.push(Namespace::add(format!("{base}-s{k}"))?);
        }

        client.set_addresses(vec![CLIENT_ADDR, CLIENT_ADDR2]);
        let mut router_addresses = vec![CLIENT_GATEWAY, CLIENT_GATEWAY2];
        router_addresses.extend((0..config.servers).map(router_side));
        router.set_addresses(router_addresses);
        for (i, server) in servers.iter_mut().enumerate() {
            server.set_addresses(vec![server_side(i), ANYCAST]);
        }

        let mut fleet = Self {
            birds: Vec::new(),
            servers,
            router,
            client,
            run_dir,
        };
        fleet.wire(config.hash_seed)?;
        fleet.start_birds()?;
        let all: Vec<Ipv4Addr> = (0..config.servers).map(server_side).collect();
        fleet.poll_next_hops(&all, up_timeout, || fleet.check_birds_running())?;
        Ok(fleet)
    }

    /// The client's namespace: [`CLIENT_ADDR`] and [`CLIENT_ADDR2`], default route via the
    /// router.
    pub fn client(&self) -> &Namespace {
        &self.client
    }

    /// The router's namespace.
    pub fn router(&self) -> &Namespace {
        &self.router
    }

    /// The namespace of server `i` (from 0; named `…-s{i+1}`): its unicast address
    /// [`server_addr(i)`](Self::server_addr) and [`ANYCAST`] on `lo`.
    ///
    /// # Panics
    ///
    /// If `i >= self.servers()`.
    pub fn server(&self, i: usize) -> &Namespace {
        self.check_index(i);
        &self.servers[i]
    }

    /// The unicast address of server `i` (from 0): `198.18.2{i+1}.2`. It is also the router's
    /// next hop towards that server.
    ///
    /// # Panics
    ///
    /// If `i >= self.servers()`.
    pub fn server_addr(&self, i: usize) -> Ipv4Addr {
        self.check_index(i);
        server_side(i)
    }

    /// The unicast addresses of all servers, in order.
    pub fn server_addrs(&self) -> Vec<Ipv4Addr> {
        (0..self.servers()).map(server_side).collect()
    }

    /// The number of servers.
    pub fn servers(&self) -> usize {
        self.servers.len()
    }

    /// The control socket of server `i`'s BIRD (for `birdc -s PATH`). Its protocol
    /// [`ANNOUNCEMENT`] (`anycast`) is the announcement.
    ///
    /// # Panics
    ///
    /// If `i >= self.servers()`.
    pub fn bird_socket(&self, i: usize) -> PathBuf {
        self.check_index(i);
        self.run_dir.file(&server_member(i), "ctl")
    }

    /// The control socket of the router's BIRD.
    pub fn router_bird_socket(&self) -> PathBuf {
        self.run_dir.file(ROUTER, "ctl")
    }

    /// The fleet's run directory (`/run/voq-fleet/voq-<pid>-<n>`): BIRD's configurations
    /// (`router.conf`, `s1.conf`…), control sockets (`.ctl`), pid files, logs (`.log`) and
    /// standard error (`.stderr`). Removed with the fleet.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir.path
    }

    /// The router's next hops for [`ANYCAST`] now, in the kernel's order (empty when it has no
    /// route). Next hops the kernel marks dead (link down) are left out.
    pub fn next_hops(&self) -> Result<Vec<Ipv4Addr>> {
        let exact = format!("{ANYCAST}/32");
        let route = ip(&[
            "-n",
            self.router.name(),
            "-4",
            "route",
            "show",
            "exact",
            &exact,
        ])?;
        parse_next_hops(&route).map_err(|problem| {
            Error::io(
                format!("reading the router's route to {ANYCAST} from {route:?}"),
                io::Error::new(io::ErrorKind::InvalidData, problem),
            )
        })
    }

    /// Waits until the router's next hops for [`ANYCAST`] are exactly `want` (in any order),
    /// reading them every 25 ms. After `timeout`, the error says what the route was then,
    /// which BIRD daemons are not running, and quotes the end of the router's BIRD log.
    pub fn wait_next_hops(&self, want: &[Ipv4Addr], timeout: Duration) -> Result<()> {
        self.poll_next_hops(want, timeout, || Ok(()))
    }

    /// Like dropping the fleet, but reports the first failure (the teardown goes on after it).
    pub fn close(mut self) -> Result<()> {
        let mut outcome = Ok(());
        let mut keep_first_error = |step: Result<()>| {
            if outcome.is_ok() {
                outcome = step;
            }
        };
        for bird in &self.birds {
            keep_first_error(bird.stop());
        }
        for namespace in self.servers.iter_mut() {
            keep_first_error(namespace.delete());
        }
        keep_first_error(self.router.delete());
        keep_first_error(self.client.delete());
        keep_first_error(self.run_dir.remove());
        outcome
    }

    fn check_index(&self, i: usize) {
        assert!(
            i < self.servers(),
            "server index {i} out of range: the fleet has {} servers (counted from 0)",
            self.servers()
        );
    }

    /// The namespaces, client first, with their member names (`client`, `router`, `s1`…).
    fn members(&self) -> Vec<(String, &Namespace)> {
        let mut members = vec![
            ("client".to_owned(), &self.client),
            (ROUTER.to_owned(), &self.router),
        ];
        members.extend(
            self.servers
                .iter()
                .enumerate()
                .map(|(i, server)| (server_member(i), server)),
        );
        members
    }

    /// Devices, addresses, routes and sysctls, as the prototype makes them.
    fn wire(&self, hash_seed: Option<u32>) -> Result<()> {
        for (_, namespace) in self.members() {
            // Before the veths exist, so that they are made without IPv6 (`default`).
            namespace.enter(ns::disable_ipv6_here)??;
            ip(&["-n", namespace.name(), "link", "set", "lo", "up"])?;
        }
        let client = self.client.name();
        let router = self.router.name();

        // Each veth is made with its ends directly in their namespaces: the names (c0, rc,
        // rsK, e0) never exist in the root namespace, where concurrent fleets would collide.
        ip(&[
            "link", "add", "c0", "netns", client, "type", "veth", "peer", "name", "rc", "netns",
            router,
        ])?;
        for (client_side, gateway) in [
            (CLIENT_ADDR, CLIENT_GATEWAY),
            (CLIENT_ADDR2, CLIENT_GATEWAY2),
        ] {
            ip(&[
                "-n",
                client,
                "addr",
                "add",
                &format!("{client_side}/24"),
                "dev",
                "c0",
            ])?;
            ip(&[
                "-n",
                router,
                "addr",
                "add",
                &format!("{gateway}/24"),
                "dev",
                "rc",
            ])?;
        }
        ip(&["-n", client, "link", "set", "c0", "up"])?;
        let (gateway, source) = (CLIENT_GATEWAY.to_string(), CLIENT_ADDR.to_string());
        ip(&[
            "-n", client, "route", "add", "default", "via", &gateway, "src", &source,
        ])?;
        ip(&["-n", router, "link", "set", "rc", "up"])?;

        let mut sysctls = vec![
            ("net/ipv4/ip_forward".to_owned(), "1".to_owned()),
            // Hash on the 5-tuple (L4), so that flows of one client spread over the servers.
            (
                "net/ipv4/fib_multipath_hash_policy".to_owned(),
                "1".to_owned(),
            ),
        ];
        // Replies from the anycast address come back from whichever server sent them, also
        // from one the reverse route does not pick or that has withdrawn (its calls go on):
        // reverse-path filtering would drop them.
        for device in ["all", "default"] {
            sysctls.push((format!("net/ipv4/conf/{device}/rp_filter"), "0".to_owned()));
        }
        for (i, server) in self.servers.iter().enumerate() {
            let device = format!("rs{}", i + 1);
            let server_name = server.name();
            let (router_cidr, server_cidr) = (
                format!("{}/24", router_side(i)),
                format!("{}/24", server_side(i)),
            );
            ip(&[
                "link",
                "add",
                &device,
                "netns",
                router,
                "type",
                "veth",
                "peer",
                "name",
                "e0",
                "netns",
                server_name,
            ])?;
            ip(&["-n", router, "addr", "add", &router_cidr, "dev", &device])?;
            ip(&["-n", router, "link", "set", &device, "up"])?;
            sysctls.push((format!("net/ipv4/conf/{device}/rp_filter"), "0".to_owned()));
            ip(&["-n", server_name, "addr", "add", &server_cidr, "dev", "e0"])?;
            ip(&["-n", server_name, "link", "set", "e0", "up"])?;
            // The anycast address lives on lo: this kernel has no dummy driver, and lo holds
            // it just as well (a /32, so nothing else becomes local).
            let anycast = format!("{ANYCAST}/32");
            ip(&["-n", server_name, "addr", "add", &anycast, "dev", "lo"])?;
            let gateway = router_side(i).to_string();
            ip(&[
                "-n",
                server_name,
                "route",
                "add",
                "default",
                "via",
                &gateway,
            ])?;
        }
        if let Some(seed) = hash_seed {
            sysctls.push((
                "net/ipv4/fib_multipath_hash_seed".to_owned(),
                seed.to_string(),
            ));
        }
        write_sysctls(&self.router, &sysctls)
    }

    /// Writes every BIRD configuration, has BIRD check each (`bird -p`, for a clear error
    /// before anything runs), then starts the daemons.
    fn start_birds(&mut self) -> Result<()> {
        let run_dir = &self.run_dir.path;
        let mut daemons = vec![(
            ROUTER.to_owned(),
            &self.router,
            router_config(run_dir, self.servers()),
        )];
        daemons.extend(
            self.servers
                .iter()
                .enumerate()
                .map(|(i, server)| (server_member(i), server, server_config(run_dir, i))),
        );
        let mut launches = Vec::new();
        for (member, namespace, text) in daemons {
            let config = self.run_dir.file(&member, "conf");
            fs::write(&config, text)
                .map_err(|e| Error::io(format!("writing {}", config.display()), e))?;
            check_config(&member, &config)?;
            let mut command = namespace.command(BIRD);
            command
                .arg("-f")
                .arg("-c")
                .arg(&config)
                .arg("-s")
                .arg(self.run_dir.file(&member, "ctl"))
                .arg("-P")
                .arg(self.run_dir.file(&member, "pid"));
            launches.push((member, command));
        }
        for (member, command) in launches {
            let bird = Bird::spawn(member, command, &self.run_dir)?;
            self.birds.push(bird);
        }
        Ok(())
    }

    /// An error for the first BIRD that has exited, quoting its log.
    fn check_birds_running(&self) -> Result<()> {
        for bird in &self.birds {
            if let Some(status) = bird.exit_status() {
                return Err(Error::Bird {
                    member: bird.member.clone(),
                    problem: format!("exited early ({status})"),
                    log: bird.log_tail(),
                });
            }
        }
        Ok(())
    }

    /// Reads the router's next hops every [`POLL_INTERVAL`] until they are `want` (as a set),
    /// calling `check` (which may give up early) before each read.
    fn poll_next_hops(
        &self,
        want: &[Ipv4Addr],
        timeout: Duration,
        check: impl Fn() -> Result<()>,
    ) -> Result<()> {
        let wanted: BTreeSet<Ipv4Addr> = want.iter().copied().collect();
        let deadline = Instant::now() + timeout;
        loop {
            check()?;
            let saw = self.next_hops()?;
            if saw.iter().copied().collect::<BTreeSet<_>>() == wanted {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::NextHops {
                    want: wanted.into_iter().collect(),
                    saw,
                    timeout,
                    detail: self.diagnosis(),
                });
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// Clues for a route that does not become what was wanted: BIRD daemons that are not
    /// running, and the end of the router's BIRD log (BGP session states and events).
    fn diagnosis(&self) -> String {
        let mut detail = String::new();
        for bird in &self.birds {
            if let Some(status) = bird.exit_status() {
                detail.push_str(&format!(
                    "\nBIRD of {} is not running ({status})",
                    bird.member
                ));
            }
        }
        if let Some(router) = self.birds.iter().find(|bird| bird.member == ROUTER) {
            detail.push('\n');
            detail.push_str(&tail(&router.log, LOG_TAIL_LINES));
        }
        detail
    }
}

/// The router's member name (its BIRD files are `router.conf`, `router.ctl`…).
const ROUTER: &str = "router";

/// The member name of server `i` (from 0): `s{i+1}`.
fn server_member(i: usize) -> String {
    format!("s{}", i + 1)
}

/// The octet `2K` of the subnet `198.18.2K.0/24` between the router and server `i` (K = i+1).
fn subnet_octet(i: usize) -> u8 {
    debug_assert!(i < MAX_SERVERS, "server index {i} beyond the address plan");
    // i < MAX_SERVERS (the configuration is validated, indices are checked), so no truncation.
    21 + i as u8
}

/// The router's address towards server `i`: `198.18.2K.1`.
fn router_side(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, subnet_octet(i), 1)
}

/// Server `i`'s unicast address: `198.18.2K.2`.
fn server_side(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, subnet_octet(i), 2)
}

/// The router's BIRD configuration: BGP sessions to every server, importing only the anycast
/// /32, and a kernel protocol merging the equal routes into one ECMP route. The text (timers
/// included) is the prototype's, verified on this machine.
fn router_config(run_dir: &Path, servers: usize) -> String {
    let mut config = ROUTER_CONFIG
        .replace("$RUN", &run_dir.display().to_string())
        .replace("$ANYCAST", &ANYCAST.to_string());
    for i in 0..servers {
        let k = i + 1;
        config.push_str(&format!(
            "protocol bgp s{k} from server {{ neighbor {} as 6500{k}; source address {}; }}\n",
            server_side(i),
            router_side(i),
        ));
    }
    config
}

/// Server `i`'s BIRD configuration: the static protocol [`ANNOUNCEMENT`] and one BGP session to
/// the router, exporting only that protocol's route.
fn server_config(run_dir: &Path, i: usize) -> String {
    SERVER_CONFIG
        .replace("$RUN", &run_dir.display().to_string())
        .replace("$ANYCAST", &ANYCAST.to_string())
        .replace("$i", &(i + 1).to_string())
}

const ROUTER_CONFIG: &str = r#"router id 198.18.10.1;
log "$RUN/router.log" all;
timeformat log "%F %T.%3f";
debug protocols { states, events };

protocol device { scan time 10; }

protocol kernel {
  ipv4 {
    import none;
    export where source = RTS_BGP;      # only the BGP-learnt anycast routes go to the FIB
  };
  merge paths on;                       # equal BGP routes -> one multipath (ECMP) kernel route
  learn off;
  persist off;                          # remove the routes when BIRD stops
  scan time 10;
}

template bgp server {
  local as 65000;
  hold time 3;                          # minimum allowed; keepalive = hold/3 = 1 s
  startup hold time 3;
  keepalive time 1;
  connect delay time 1;                 # default 5 s; BIRD clamps to >= 1 s (jittered 0.75-1 s)
  connect retry time 1;                 # default 120 s
  error wait time 1, 2;                 # default 60, 300 s
  ipv4 {
    import where net = $ANYCAST/32;
    export none;
  };
}
"#;

const SERVER_CONFIG: &str = r#"router id 198.18.2$i.2;
log "$RUN/s$i.log" all;
timeformat log "%F %T.%3f";
debug protocols { states, events };

protocol device { scan time 10; }

# The anycast announcement. `disable anycast` withdraws it, `enable anycast` announces it again.
protocol static anycast {
  ipv4;
  route $ANYCAST/32 blackhole;          # only exported to BGP, never installed (no kernel proto)
}

protocol bgp uplink {
  local 198.18.2$i.2 as 6500$i;
  neighbor 198.18.2$i.1 as 65000;
  hold time 3;
  startup hold time 3;
  keepalive time 1;
  connect delay time 1;
  connect retry time 1;
  error wait time 1, 2;
  ipv4 {
    import none;
    export where proto = "anycast";
  };
}
"#;

/// `bird -p -c CONFIG`: parses the configuration without starting anything.
fn check_config(member: &str, config: &Path) -> Result<()> {
    let mut command = Command::new(BIRD);
    command.arg("-p").arg("-c").arg(config);
    let output = cmd::run(&mut command, cmd::IP_TIMEOUT)?;
    if output.status.success() {
        return Ok(());
    }
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Err(Error::Bird {
        member: member.to_owned(),
        problem: format!(
            "rejects its configuration {} (`{}`: {})",
            config.display(),
            cmd::describe(&command),
            output.status
        ),
        log: said.trim().to_owned(),
    })
}

/// `bird --version` runs and says major version 2 or later. (A later version gets its chance:
/// `bird -p` in [`Fleet::create`] names any syntax it no longer accepts.)
fn probe_bird() -> std::result::Result<(), Unavailable> {
    let mut command = Command::new(BIRD);
    command.arg("--version");
    let output =
        cmd::run(&mut command, cmd::IP_TIMEOUT).map_err(|e| Unavailable::NoBird(e.to_string()))?;
    // BIRD writes `BIRD version 2.0.12` to standard error.
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
    .trim()
    .to_owned();
    if !output.status.success() {
        return Err(Unavailable::NoBird(format!(
            "`{BIRD} --version` failed ({}): {said}",
            output.status
        )));
    }
    let major = said
        .strip_prefix("BIRD version ")
        .and_then(|version| version.split('.').next())
        .and_then(|major| major.parse::<u32>().ok());
    match major {
        Some(major) if major >= 2 => Ok(()),
        _ => Err(Unavailable::NoBird(format!(
            "`{BIRD} --version` says {said:?}; the fleet's configuration is BIRD 2's"
        ))),
    }
}

/// Writes `/proc/sys/KEY` = value for each pair, on a thread inside `namespace` (`/proc/sys/net`
/// shows the caller's namespace).
fn write_sysctls(namespace: &Namespace, sysctls: &[(String, String)]) -> Result<()> {
    namespace.enter(|| {
        for (key, value) in sysctls {
            let path = format!("/proc/sys/{key}");
            fs::write(&path, value).map_err(|e| {
                let hint = if key.ends_with("fib_multipath_hash_seed") {
                    " (FleetConfig::hash_seed needs Linux 6.11 or later)"
                } else {
                    ""
                };
                Error::io(
                    format!(
                        "writing {value} to {path} in namespace {}{hint}",
                        namespace.name()
                    ),
                    e,
                )
            })?;
        }
        Ok(())
    })?
}

/// The next hops of `ip route show` output: `DEST via GW dev D …` (one path) or
/// `DEST proto bird …` followed by lines `nexthop via GW dev D weight W` (ECMP). Paths marked
/// `dead` (link down) are left out.
fn parse_next_hops(route: &str) -> std::result::Result<Vec<Ipv4Addr>, String> {
    let mut hops = Vec::new();
    for line in route.lines() {
        if line.split_whitespace().any(|word| word == "dead") {
            continue;
        }
        let mut words = line.split_whitespace();
        while let Some(word) = words.next() {
            if word != "via" {
                continue;
            }
            let mut gateway = words.next();
            // `via inet 198.18.21.2` when iproute2 spells the family out.
            if gateway == Some("inet") {
                gateway = words.next();
            }
            let gateway = gateway.ok_or_else(|| format!("`via` without an address in {line:?}"))?;
            let hop = gateway
                .parse()
                .map_err(|_| format!("next hop {gateway:?} is not an IPv4 address"))?;
            hops.push(hop);
        }
    }
    Ok(hops)
}

/// One BIRD daemon, a child process in its namespace (`ip netns exec NAME bird -f …` execs
/// BIRD in place, so the child is BIRD itself). Dropping it kills it and reaps it.
#[derive(Debug)]
struct Bird {
    /// `router`, `s1`…
    member: String,
    /// `None` once stopped. Behind a lock so that checking on it needs only `&Fleet`.
    child: Mutex<Option<Child>>,
    log: PathBuf,
    stderr: PathBuf,
}

impl Bird {
    fn spawn(member: String, mut command: Command, run_dir: &RunDir) -> Result<Self> {
        // BIRD logs to its log file once the configuration is read; before that (and on a
        // fatal error) it writes to standard error, which we keep for error messages.
        let stderr = run_dir.file(&member, "stderr");
        let file = File::create(&stderr)
            .map_err(|e| Error::io(format!("creating {}", stderr.display()), e))?;
        let file_too = file
            .try_clone()
            .map_err(|e| Error::io(format!("duplicating {}", stderr.display()), e))?;
        command.stdin(Stdio::null()).stdout(file_too).stderr(file);
        let child = command
            .spawn()
            .map_err(|e| Error::io(format!("spawning `{}`", cmd::describe(&command)), e))?;
        Ok(Self {
            log: run_dir.file(&member, "log"),
            member,
            child: Mutex::new(Some(child)),
            stderr,
        })
    }

    fn child(&self) -> MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How it ended, once it has (not after [`stop`](Self::stop)).
    fn exit_status(&self) -> Option<ExitStatus> {
        self.child()
            .as_mut()
            .and_then(|child| child.try_wait().ok().flatten())
    }

    /// Its process id while it has not been stopped.
    #[cfg(test)]
    fn pid(&self) -> Option<u32> {
        self.child().as_ref().map(Child::id)
    }

    /// Kills it (SIGKILL: nothing of its state outlives the fleet) and reaps it; idempotent.
    fn stop(&self) -> Result<()> {
        let Some(mut child) = self.child().take() else {
            return Ok(());
        };
        let context = || format!("stopping BIRD of {}", self.member);
        if child
            .try_wait()
            .map_err(|e| Error::io(context(), e))?
            .is_none()
        {
            child.kill().map_err(|e| Error::io(context(), e))?;
        }
        child.wait().map_err(|e| Error::io(context(), e))?;
        Ok(())
    }

    /// The ends of its log file and of its standard error.
    fn log_tail(&self) -> String {
        format!(
            "{}\n{}",
            tail(&self.log, LOG_TAIL_LINES),
            tail(&self.stderr, LOG_TAIL_LINES)
        )
    }
}

impl Drop for Bird {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("voq-netns: {e}");
        }
    }
}

/// `--- PATH (last N lines):` and those lines, or why there are none.
fn tail(path: &Path, lines: usize) -> String {
    let text = match fs::read_to_string(path) {
        Ok(text) if text.trim().is_empty() => return format!("--- {}: empty", path.display()),
        Ok(text) => text,
        // BIRD opens its log only once it has read its configuration.
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return format!("--- {}: not written", path.display());
        }
        Err(e) => return format!("--- {}: cannot be read: {e}", path.display()),
    };
    let all: Vec<&str> = text.lines().collect();
    let last = &all[all.len().saturating_sub(lines)..];
    format!(
        "--- {} (last {} lines):\n{}",
        path.display(),
        last.len(),
        last.join("\n")
    )
}

/// A fleet's run directory; dropping it removes it with its contents.
#[derive(Debug)]
struct RunDir {
    path: PathBuf,
    /// False once removed.
    live: bool,
}

impl RunDir {
    fn create(path: PathBuf) -> Result<Self> {
        // A leftover of the same name can only be a dead process's (its pid is ours now):
        // its files are overwritten.
        fs::create_dir_all(&path)
            .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
        Ok(Self { path, live: true })
    }

    /// `MEMBER.EXTENSION` in it.
    fn file(&self, member: &str, extension: &str) -> PathBuf {
        self.path.join(format!("{member}.{extension}"))
    }

    /// Removes it; idempotent.
    fn remove(&mut self) -> Result<()> {
        if !self.live {
            return Ok(());
        }
        self.live = false;
        match fs::remove_dir_all(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("removing {}", self.path.display()), e)),
        }
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if let Err(e) = self.remove() {
            eprintln!("voq-netns: {e}");
        }
    }
}

/// Removes the run directories `RUN_DIR/voq-<pid>-…` of processes that are gone (called by
/// [`sweep_stale`](crate::sweep_stale) once their namespaces, and so their BIRD daemons, are).
pub(crate) fn sweep_stale_run_dirs() {
    let Ok(entries) = fs::read_dir(RUN_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = ns::owner_pid(&name) else {
            continue;
        };
        if pid == std::process::id() || ns::running(pid) {
            continue;
        }
        if let Err(e) = fs::remove_dir_all(entry.path())
            && e.kind() != io::ErrorKind::NotFound
        {
            eprintln!(
                "voq-netns: removing stale fleet directory {}: {e}",
                entry.path().display()
            );
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! The fleet tests need root and BIRD 2. Each calls `require_fleet!()` first: when
    //! [`Fleet::available`] fails it prints `SKIPPED: <reason>` and returns (a failure with
    //! `VOQ_NETNS_REQUIRED=1`). They take turns ([`one_at_a_time`]): the leftover checks look
    //! at everything this process has, and five BIRDs per fleet are plenty on a small machine.

    use std::collections::BTreeMap;
    use std::net::UdpSocket;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::thread::JoinHandle;

    use super::*;

    macro_rules! require_fleet {
        () => {
            if let Err(why) = Fleet::available() {
                if std::env::var_os("VOQ_NETNS_REQUIRED").is_some_and(|v| v == "1") {
                    panic!("VOQ_NETNS_REQUIRED=1 but a fleet cannot run here: {why}");
                }
                eprintln!("SKIPPED: {why}");
                return;
            }
        };
    }

    fn one_at_a_time() -> MutexGuard<'static, ()> {
        static FLEETS: Mutex<()> = Mutex::new(());
        FLEETS.lock().unwrap_or_else(PoisonError::into_inner)
    }

    const PORT: u16 = 7000;
    const PROBES: usize = 30;
    const BIRDC: &str = "/usr/sbin/birdc";

    /// UDP responders on `ANYCAST:PORT` in every server namespace, answering each datagram
    /// with the server's index.
    struct Responders {
        stop: Arc<AtomicBool>,
        threads: Vec<JoinHandle<()>>,
    }

    impl Responders {
        fn start(fleet: &Fleet) -> Self {
            let stop = Arc::new(AtomicBool::new(false));
            let mut threads = Vec::new();
            for i in 0..fleet.servers() {
                let socket = fleet
                    .server(i)
                    .enter(|| UdpSocket::bind((ANYCAST, PORT)))
                    .unwrap()
                    .unwrap();
                // Wakes up to look at the stop flag.
                socket
                    .set_read_timeout(Some(Duration::from_millis(50)))
                    .unwrap();
                let index = u8::try_from(i).unwrap();
                let stop = stop.clone();
                threads.push(thread::spawn(move || {
                    let mut buf = [0u8; 64];
                    while !stop.load(Ordering::Relaxed) {
                        if let Ok((_, from)) = socket.recv_from(&mut buf) {
                            socket.send_to(&[index], from).unwrap();
                        }
                    }
                }));
            }
            Self { stop, threads }
        }

        fn stop(self) {
            self.stop.store(true, Ordering::Relaxed);
            for thread in self.threads {
                thread.join().unwrap();
            }
        }
    }

    /// One datagram to `ANYCAST:PORT` from each of [`PROBES`] client sockets (so as many
    /// source ports); how many each server answered, by index. Every probe must be answered.
    fn probe(fleet: &Fleet) -> BTreeMap<u8, usize> {
        let sockets = fleet
            .client()
            .enter(|| {
                (0..PROBES)
                    .map(|_| UdpSocket::bind((CLIENT_ADDR, 0)))
                    .collect::<io::Result<Vec<_>>>()
            })
            .unwrap()
            .unwrap();
        for socket in &sockets {
            socket
                .set_read_timeout(Some(Duration::from_secs(2)))
                .unwrap();
            socket.send_to(b"probe", (ANYCAST, PORT)).unwrap();
        }
        let mut answers = BTreeMap::new();
        for socket in &sockets {
            let mut buf = [0u8; 8];
            let port = socket.local_addr().unwrap().port();
            let (n, from) = socket
                .recv_from(&mut buf)
                .unwrap_or_else(|e| panic!("no answer to source port {port} within 2 s: {e}"));
            assert_eq!((n, from), (1, (ANYCAST, PORT).into()));
            *answers.entry(buf[0]).or_insert(0) += 1;
        }
        answers
    }

    fn birdc(socket: &Path, command: &str) {
        let output = Command::new(BIRDC)
            .arg("-s")
            .arg(socket)
            .args(command.split_whitespace())
            .output()
            .unwrap_or_else(|e| panic!("running {BIRDC}: {e}"));
        let said = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "`birdc {command}`: {}: {said}",
            output.status
        );
    }

    fn set(addresses: &[Ipv4Addr]) -> BTreeSet<Ipv4Addr> {
        addresses.iter().copied().collect()
    }

    /// Namespaces of this process, fleet run directories of this process, BIRD children of
    /// this process: none should outlive a fleet.
    fn leftovers() -> (Vec<String>, Vec<String>, Vec<u32>) {
        let own = format!("{PREFIX}{}-", std::process::id());
        let ours = |dir: &str| -> Vec<String> {
            let mut names: Vec<String> = fs::read_dir(dir)
                .map(|entries| {
                    entries
                        .flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .filter(|name| name.starts_with(&own))
                        .collect()
                })
                .unwrap_or_default();
            names.sort();
            names
        };
        let own_pid = std::process::id().to_string();
        let birds = fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                // `pid (comm) state ppid …`
                let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
                    return false;
                };
                let Some((head, rest)) = stat.rsplit_once(')') else {
                    return false;
                };
                head.ends_with("(bird") && rest.split_whitespace().nth(1) == Some(&own_pid)
            })
            .collect();
        (ours(ns::NETNS_DIR), ours(RUN_DIR), birds)
    }

    #[test]
    fn fleet_spreads_flows_over_all_servers() {
        let _turn = one_at_a_time();
        require_fleet!();
        let started = Instant::now();
        let fleet = Fleet::create(FleetConfig::new(3)).unwrap();
        eprintln!("fleet of 3 up in {:?}", started.elapsed());
        assert_eq!(set(&fleet.next_hops().unwrap()), set(&fleet.server_addrs()));
        assert_eq!(fleet.next_hops().unwrap().len(), 3);

        let responders = Responders::start(&fleet);
        let answers = probe(&fleet);
        responders.stop();
        eprintln!("answers by server index: {answers:?}");
        assert_eq!(answers.values().sum::<usize>(), PROBES);
        assert!(
            answers.len() >= 2,
            "{PROBES} flows all went to one server: {answers:?}"
        );
        fleet.close().unwrap();
    }

    #[test]
    fn fleet_withdrawal_removes_exactly_that_next_hop() {
        let _turn = one_at_a_time();
        require_fleet!();
        let fleet = Fleet::create(FleetConfig::new(3)).unwrap();
        let all = fleet.server_addrs();
        let rest = [all[0], all[2]];

        let started = Instant::now();
        birdc(&fleet.bird_socket(1), &format!("disable {ANNOUNCEMENT}"));
        fleet
            .wait_next_hops(&rest, Duration::from_secs(10))
            .unwrap();
        eprintln!("s2 withdrawn from the route in {:?}", started.elapsed());
        assert_eq!(set(&fleet.next_hops().unwrap()), set(&rest));
        // New flows go to the other two only.
        let responders = Responders::start(&fleet);
        let answers = probe(&fleet);
        eprintln!("answers by server index with s2 withdrawn: {answers:?}");
        assert!(!answers.contains_key(&1), "{answers:?}");

        let started = Instant::now();
        birdc(&fleet.bird_socket(1), &format!("enable {ANNOUNCEMENT}"));
        fleet.wait_next_hops(&all, Duration::from_secs(10)).unwrap();
        eprintln!("s2 back in the route in {:?}", started.elapsed());
        let answers = probe(&fleet);
        responders.stop();
        eprintln!("answers by server index with s2 back: {answers:?}");

        // What a timeout says.
        let error = fleet
            .wait_next_hops(&rest, Duration::from_millis(100))
            .unwrap_err()
            .to_string();
        eprintln!("{error}");
        assert!(
            error.contains("want next hops [198.18.21.2, 198.18.23.2]"),
            "{error}"
        );
        fleet.close().unwrap();
    }

    #[test]
    fn fleet_close_and_drop_leave_nothing_behind() {
        let _turn = one_at_a_time();
        require_fleet!();
        let before = leftovers();

        let fleet = Fleet::create(FleetConfig::new(2).with_hash_seed(12_345)).unwrap();
        let sysctl = |key: &str| {
            let out = fleet.router().run(&["sysctl", "-n", key]).unwrap();
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        };
        assert_eq!(sysctl("net.ipv4.fib_multipath_hash_seed"), "12345");
        assert_eq!(sysctl("net.ipv4.fib_multipath_hash_policy"), "1");
        assert_eq!(sysctl("net.ipv4.ip_forward"), "1");
        let (namespaces, run_dirs, birds) = leftovers();
        assert_eq!(namespaces.len(), 4, "{namespaces:?}");
        assert_eq!(run_dirs.len(), 1, "{run_dirs:?}");
        assert_eq!(birds.len(), 3, "{birds:?}");
        let pids: Vec<u32> = fleet.birds.iter().filter_map(Bird::pid).collect();
        assert_eq!(set_of(&pids), set_of(&birds));
        fleet.close().unwrap();
        assert_eq!(leftovers(), before);
        for pid in pids {
            assert!(
                !Path::new(&format!("/proc/{pid}")).exists(),
                "BIRD {pid} lives"
            );
        }

        // One server: the route is a plain one, not a multipath one. Dropped, not closed.
        let fleet = Fleet::create(FleetConfig::new(1)).unwrap();
        let route = ip(&["-n", fleet.router().name(), "route", "show", "198.19.0.1"]).unwrap();
        assert!(!route.contains("nexthop"), "{route}");
        assert_eq!(fleet.next_hops().unwrap(), [fleet.server_addr(0)]);
        drop(fleet);
        assert_eq!(leftovers(), before);
    }

    /// A `create` that fails after the BIRDs started (here: no time at all to converge)
    /// removes everything it made.
    #[test]
    fn fleet_failed_create_leaves_nothing_behind() {
        let _turn = one_at_a_time();
        require_fleet!();
        let before = leftovers();
        let error = Fleet::build(FleetConfig::new(2), Duration::ZERO).unwrap_err();
        eprintln!("{error}");
        assert!(matches!(error, Error::NextHops { .. }), "{error}");
        assert_eq!(leftovers(), before);
    }

    fn set_of(pids: &[u32]) -> BTreeSet<u32> {
        pids.iter().copied().collect()
    }

    #[test]
    fn fleet_config_counts_servers_from_1_to_9() {
        for servers in [0, MAX_SERVERS + 1] {
            let error = Fleet::create(FleetConfig::new(servers)).unwrap_err();
            assert!(error.to_string().contains("1..=9 servers"), "{error}");
        }
        assert!(FleetConfig::new(MAX_SERVERS).validate().is_ok());
    }

    #[test]
    fn fleet_next_hops_parse_both_route_forms() {
        let multipath = "198.19.0.1 proto bird metric 32 \n\
                         \tnexthop via 198.18.21.2 dev rs1 weight 1 \n\
                         \tnexthop via 198.18.22.2 dev rs2 weight 1 dead linkdown \n\
                         \tnexthop via 198.18.23.2 dev rs3 weight 1 \n";
        assert_eq!(
            parse_next_hops(multipath).unwrap(),
            [Ipv4Addr::new(198, 18, 21, 2), Ipv4Addr::new(198, 18, 23, 2)]
        );
        let single = "198.19.0.1 via 198.18.21.2 dev rs1 proto bird metric 32 \n";
        assert_eq!(
            parse_next_hops(single).unwrap(),
            [Ipv4Addr::new(198, 18, 21, 2)]
        );
        let spelled = "198.19.0.1 via inet 198.18.21.2 dev rs1 proto bird metric 32";
        assert_eq!(
            parse_next_hops(spelled).unwrap(),
            [Ipv4Addr::new(198, 18, 21, 2)]
        );
        assert!(parse_next_hops("").unwrap().is_empty());
        assert!(parse_next_hops("198.19.0.1 via inet6 fe80::1 dev rs1").is_err());
    }

    #[test]
    fn fleet_bird_configs_follow_the_address_plan() {
        let run_dir = Path::new("/run/voq-fleet/voq-1-0");
        let router = router_config(run_dir, 3);
        assert!(router.contains("log \"/run/voq-fleet/voq-1-0/router.log\" all;"));
        assert!(router.contains("import where net = 198.19.0.1/32;"));
        assert!(router.ends_with(
            "protocol bgp s3 from server { neighbor 198.18.23.2 as 65003; \
             source address 198.18.23.1; }\n"
        ));
        let server = server_config(run_dir, 1);
        assert!(
            server
                .starts_with("router id 198.18.22.2;\nlog \"/run/voq-fleet/voq-1-0/s2.log\" all;")
        );
        assert!(server.contains("local 198.18.22.2 as 65002;\n  neighbor 198.18.22.1 as 65000;"));
        assert!(server.contains("route 198.19.0.1/32 blackhole;"));
        assert!(!server.contains('$') && !router.contains('$'));
    }
}
