//! Errors.

use std::io;
use std::net::Ipv4Addr;
use std::time::Duration;

/// Why [`NetnsLink`](crate::NetnsLink) or [`Fleet`](crate::Fleet) cannot run on this machine.
/// Tests print it as `SKIPPED: <reason>` and return.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Unavailable {
    /// Not root: namespaces and TUN devices need `CAP_SYS_ADMIN` and `CAP_NET_ADMIN`.
    #[error("not root (effective uid {0}); network namespaces and TUN devices need root")]
    NotRoot(u32),
    /// No `ip` (Debian package `iproute2`).
    #[error("the `ip` command (Debian package iproute2) does not run: {0}")]
    NoIp(String),
    /// `/dev/net/tun` is missing or cannot be opened.
    #[error("/dev/net/tun cannot be opened: {0}")]
    NoTun(String),
    /// `ip netns add` failed (a sandbox without namespaces, a read-only `/run`).
    #[error("cannot create a network namespace: {0}")]
    NoNamespace(String),
    /// No usable BIRD 2 routing daemon at [`BIRD`](crate::fleet::BIRD) (Debian package
    /// `bird2`), which a [`Fleet`](crate::Fleet) runs in each router and server namespace.
    #[error("BIRD 2 ({bird}, Debian package bird2) is not usable: {0}", bird = crate::fleet::BIRD)]
    NoBird(String),
}

/// An error of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The machine cannot run namespaces and TUN devices (see [`Unavailable`]).
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
    /// A system call failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A command (`ip …`) exited with a failure.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// What it wrote to standard error.
        stderr: String,
    },
    /// A command did not finish in time and was killed.
    #[error("`{command}` did not finish within {timeout:?} and was killed")]
    Timeout {
        /// The command line.
        command: String,
        /// The limit.
        timeout: Duration,
    },
    /// An impairment configuration was rejected.
    #[error("link configuration: {0}")]
    Config(#[from] voq_netem::ConfigError),
    /// The forwarding thread failed.
    #[error("forwarder: {0}")]
    Forwarder(String),
    /// A fleet's BIRD daemon rejected its configuration or stopped.
    #[error("BIRD of fleet member {member} {problem}\n{log}")]
    Bird {
        /// `router`, `s1`, `s2`…
        member: String,
        /// What went wrong ("exited early (exit status: 1)").
        problem: String,
        /// The end of what it wrote (its log file, its standard error), each headed by the
        /// file's path.
        log: String,
    },
    /// The router's route to the fleet's anycast address did not get the wanted next hops in
    /// time.
    #[error(
        "after {timeout:?} the router's route to {} {}, want next hops {}{detail}",
        crate::fleet::ANYCAST,
        describe_next_hops(saw),
        list(want)
    )]
    NextHops {
        /// The next hops wanted (in any order).
        want: Vec<Ipv4Addr>,
        /// The next hops at the deadline.
        saw: Vec<Ipv4Addr>,
        /// How long it waited.
        timeout: Duration,
        /// Clues: BIRD daemons not running, the end of the router's BIRD log.
        detail: String,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

fn describe_next_hops(hops: &[Ipv4Addr]) -> String {
    if hops.is_empty() {
        "does not exist".to_owned()
    } else {
        format!("goes via {}", list(hops))
    }
}

fn list(addresses: &[Ipv4Addr]) -> String {
    let items: Vec<String> = addresses.iter().map(Ipv4Addr::to_string).collect();
    format!("[{}]", items.join(", "))
}

/// The result of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
