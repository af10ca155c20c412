//! Errors.

use std::io;
use std::time::Duration;

/// Why [`NetnsLink`](crate::NetnsLink) cannot run on this machine. Tests print it as
/// `SKIPPED: <reason>` and return.
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
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

/// The result of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
