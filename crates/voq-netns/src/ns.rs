//! Named network namespaces: creation, deletion (with their processes), the stale sweeper,
//! and running commands, threads and async code inside one.

use std::ffi::OsStr;
use std::fs::File;
use std::future::Future;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};

use crate::cmd::{self, ip};
use crate::error::{Error, Result, Unavailable};

/// Where `ip netns` keeps its named namespaces (bind mounts of `/proc/PID/ns/net`).
pub const NETNS_DIR: &str = "/run/netns";

/// The prefix of every namespace this crate names: `voq-<pid>-<n>-a` and `…-b` for a
/// [`NetnsLink`](crate::NetnsLink), `voq-<pid>-<n>-client`, `…-router`, `…-s1`… for a
/// [`Fleet`](crate::Fleet).
pub const PREFIX: &str = "voq-";

/// The limit of [`Namespace::run`].
pub const RUN_TIMEOUT: Duration = Duration::from_secs(60);

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh name `voq-<pid>-<n>-<suffix>`, unique within this machine while this process lives.
pub(crate) fn fresh_name(suffix: &str) -> (u64, String) {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    (n, format!("{PREFIX}{}-{n}-{suffix}", std::process::id()))
}

/// A named network namespace: one end of a [`NetnsLink`](crate::NetnsLink) (holding a TUN
/// device, [`TUN_NAME`](crate::TUN_NAME), with this end's addresses), or a member of a
/// [`Fleet`](crate::Fleet) (client, router or server, joined by veth pairs).
///
/// Everything that runs "in" the namespace opens its sockets there: a command started through
/// [`command`](Self::command) (`ip netns exec NAME …`), or Rust code on a thread that entered the
/// namespace ([`enter`](Self::enter), [`spawn_thread`](Self::spawn_thread),
/// [`block_on`](Self::block_on), [`spawn_async`](Self::spawn_async)). A socket belongs to the
/// namespace it was created in for its whole life, so a socket made in `enter` can be used from
/// any thread or runtime afterwards.
#[derive(Debug)]
pub struct Namespace {
    name: String,
    addresses: Vec<Ipv4Addr>,
    /// False once deleted (by [`NetnsLink::close`](crate::NetnsLink::close) or
    /// [`Fleet::close`](crate::Fleet::close)).
    live: bool,
}

impl Namespace {
    /// `ip netns add NAME`. The returned guard deletes the namespace when dropped.
    pub(crate) fn add(name: String) -> Result<Self> {
        ip(&["netns", "add", &name])?;
        Ok(Self {
            name,
            addresses: Vec::new(),
            live: true,
        })
    }

    pub(crate) fn set_addresses(&mut self, addresses: Vec<Ipv4Addr>) {
        self.addresses = addresses;
    }

    /// The namespace's name, for `ip netns exec NAME` and `ip -n NAME`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bind mount that names it, `/run/netns/NAME`.
    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.name)
    }

    /// The primary IPv4 address of this namespace (`198.18.0.1` for a, `198.18.0.2` for b; a
    /// fleet's: see [`Fleet`](crate::Fleet)).
    pub fn address(&self) -> Ipv4Addr {
        self.addresses
            .first()
            .copied()
            .unwrap_or(Ipv4Addr::UNSPECIFIED)
    }

    /// All IPv4 addresses of this namespace (a: `198.18.0.1`, and `198.18.0.5` when configured;
    /// a fleet's: see [`Fleet`](crate::Fleet)).
    pub fn addresses(&self) -> &[Ipv4Addr] {
        &self.addresses
    }

    /// A [`Command`] that runs `program` in this namespace (`ip netns exec NAME program`). Add
    /// arguments, environment, standard I/O, then spawn it (or convert it into a
    /// `tokio::process::Command`). Remember to wait for it or kill it: processes still in the
    /// namespace when the link is dropped are killed (SIGKILL).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec"]).arg(&self.name).arg(program);
        command
    }

    /// Runs `argv` in this namespace to completion, with standard input closed and both outputs
    /// captured, killing it after [`RUN_TIMEOUT`]. A failure status is returned, not an error.
    pub fn run<S: AsRef<OsStr>>(&self, argv: &[S]) -> Result<Output> {
        let (program, args) = argv.split_first().ok_or_else(|| {
            Error::io(
                "Namespace::run",
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty argv"),
            )
        })?;
        let mut command = self.command(program);
        command.args(args);
        cmd::run(&mut command, RUN_TIMEOUT)
    }

    /// Starts `argv` in this namespace, standard input closed, standard output and error
    /// inherited. For other standard I/O, use [`command`](Self::command).
    pub fn spawn<S: AsRef<OsStr>>(&self, argv: &[S]) -> Result<Child> {
        let (program, args) = argv.split_first().ok_or_else(|| {
            Error::io(
                "Namespace::spawn",
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty argv"),
            )
        })?;
        let mut command = self.command(program);
        command.args(args).stdin(Stdio::null());
        let description = cmd::describe(&command);
        command
            .spawn()
            .map_err(|e| Error::io(format!("spawning `{description}`"), e))
    }

    /// Runs `f` on a new thread that entered this namespace, and waits for it. Sockets `f`
    /// creates are in the namespace (and stay there when handed back). A panic in `f` is
    /// resumed on the calling thread.
    pub fn enter<F, R>(&self, f: F) -> Result<R>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let netns = self.open()?;
        thread::scope(|scope| {
            let handle = thread::Builder::new()
                .name(format!("netns {}", self.name))
                .spawn_scoped(scope, move || {
                    join_namespace(&netns)?;
                    drop(netns);
                    Ok(f())
                })
                .map_err(|e| Error::io("spawning a namespace thread", e))?;
            match handle.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Starts `f` on a new thread that entered this namespace. The thread may outlive the
    /// link: the namespace then lives on, unnamed, until the thread ends.
    pub fn spawn_thread<F, R>(&self, f: F) -> Result<JoinHandle<Result<R>>>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let netns = self.open()?;
        thread::Builder::new()
            .name(format!("netns {}", self.name))
            .spawn(move || {
                join_namespace(&netns)?;
                drop(netns);
                Ok(f())
            })
            .map_err(|e| Error::io("spawning a namespace thread", e))
    }

    /// Runs the future made by `f` to completion on a current-thread tokio runtime (I/O and time
    /// enabled) on a new thread that entered this namespace, and waits for it. Everything the
    /// future spawns with `tokio::spawn` runs on that thread, so in the namespace; work sent to
    /// `spawn_blocking` (and DNS resolution) runs on other threads, outside it.
    pub fn block_on<F, Fut>(&self, f: F) -> Result<Fut::Output>
    where
        F: FnOnce() -> Fut + Send,
        Fut: Future,
        Fut::Output: Send,
    {
        self.enter(move || runtime().map(|rt| rt.block_on(f())))?
    }

    /// Like [`block_on`](Self::block_on), on a thread of its own that the caller joins later
    /// (say, a server in namespace b while the client runs in a).
    pub fn spawn_async<F, Fut>(&self, f: F) -> Result<JoinHandle<Result<Fut::Output>>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future,
        Fut::Output: Send + 'static,
    {
        let netns = self.open()?;
        thread::Builder::new()
            .name(format!("netns {}", self.name))
            .spawn(move || {
                join_namespace(&netns)?;
                drop(netns);
                Ok(runtime()?.block_on(f()))
            })
            .map_err(|e| Error::io("spawning a namespace thread", e))
    }

    fn open(&self) -> Result<File> {
        let path = self.path();
        File::open(&path).map_err(|e| Error::io(format!("opening {}", path.display()), e))
    }

    /// Kills the processes in the namespace and deletes it; idempotent.
    pub(crate) fn delete(&mut self) -> Result<()> {
        if !self.live {
            return Ok(());
        }
        self.live = false;
        delete_namespace(&self.name)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        if let Err(e) = self.delete() {
            eprintln!("voq-netns: cleaning up namespace {}: {e}", self.name);
        }
    }
}

/// Turns IPv6 off in the namespace the calling thread is in (call it inside
/// [`Namespace::enter`]: `/proc/sys/net` shows the caller's namespace), so that the kernel sends
/// no router solicitations or MLD reports on its links. `default` covers the devices made
/// afterwards, `all` those that exist.
pub(crate) fn disable_ipv6_here() -> Result<()> {
    for knob in ["all", "default"] {
        let path = format!("/proc/sys/net/ipv6/conf/{knob}/disable_ipv6");
        match std::fs::write(&path, "1") {
            Ok(()) => {}
            // No IPv6 in this kernel: nothing to turn off.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("writing {path}"), e)),
        }
    }
    Ok(())
}

/// Moves the calling thread into the network namespace `netns` refers to.
fn join_namespace(netns: &File) -> Result<()> {
    move_into_link_name_space(netns.as_fd(), Some(LinkNameSpaceType::Network))
        .map_err(|e| Error::io("setns(CLONE_NEWNET)", e.into()))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("building a tokio runtime", e))
}

/// Kills (SIGKILL) every process whose network namespace is `name`, except this process, then
/// `ip netns del name`. The kernel frees the namespace when its last user (a process still
/// exiting, an open socket, a thread of ours that entered it) is gone.
pub(crate) fn delete_namespace(name: &str) -> Result<()> {
    let own = std::process::id();
    if let Ok(pids) = ip(&["netns", "pids", name]) {
        for pid in pids
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
        {
            if pid == own {
                continue;
            }
            let Some(pid) = i32::try_from(pid)
                .ok()
                .and_then(rustix::process::Pid::from_raw)
            else {
                continue;
            };
            // It may have exited meanwhile: nothing to do then.
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
    match ip(&["netns", "del", name]) {
        Ok(_) => Ok(()),
        // Already gone (a concurrent sweep): fine.
        Err(_) if !Path::new(NETNS_DIR).join(name).exists() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes the namespaces this crate left behind in processes that are gone: every
/// `/run/netns/voq-<pid>-…` whose `<pid>` is not a running process (its processes, a fleet's
/// BIRD daemons among them, are killed first), then the fleets' run directories
/// `/run/voq-fleet/voq-<pid>-…` of such processes. Called by
/// [`NetnsLink::create`](crate::NetnsLink::create) and [`Fleet::create`](crate::Fleet::create);
/// returns the names of the namespaces removed.
///
/// A process that was killed (SIGKILL, or SIGINT during `cargo test`) runs no destructor: its
/// namespaces stay until the next sweep. A zombie (dead, not yet reaped) counts as dead. A pid
/// reused by another process protects its leftovers until that process ends too.
pub fn sweep_stale() -> Vec<String> {
    // One sweep at a time in this process; other processes tolerate a concurrent delete.
    static SWEEP: Mutex<()> = Mutex::new(());
    let _guard = SWEEP
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = owner_pid(&name) else {
            continue;
        };
        if pid == std::process::id() || running(pid) {
            continue;
        }
        match delete_namespace(&name) {
            Ok(()) => removed.push(name),
            Err(e) => eprintln!("voq-netns: removing stale namespace {name}: {e}"),
        }
    }
    // After the namespaces: their BIRD daemons are dead by now, so nothing writes there.
    crate::fleet::sweep_stale_run_dirs();
    removed
}

/// Whether `pid` is a running process: it exists and is not a zombie (dead, not yet reaped:
/// its namespaces are as stale as those of a reaped one).
pub(crate) fn running(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // `pid (comm) state …`; comm may contain spaces and parentheses.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, Some('Z' | 'X') | None)
}

/// The `<pid>` of `voq-<pid>-…`.
pub(crate) fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let (pid, tail) = rest.split_once('-')?;
    if tail.is_empty() || pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// Whether this machine can run a [`NetnsLink`](crate::NetnsLink): what
/// [`namespaces_available`] checks, and `/dev/net/tun`. Checked once per process, then cached.
pub(crate) fn available() -> std::result::Result<(), Unavailable> {
    static PROBE: OnceLock<std::result::Result<(), Unavailable>> = OnceLock::new();
    PROBE
        .get_or_init(|| {
            namespaces_available()?;
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/net/tun")
                .map_err(|e| Unavailable::NoTun(e.to_string()))?;
            Ok(())
        })
        .clone()
}

/// Whether this machine can make named namespaces: root (effective uid 0), a working `ip`, and
/// the right to create (and delete) a namespace. Checked once per process, then cached.
pub(crate) fn namespaces_available() -> std::result::Result<(), Unavailable> {
    static PROBE: OnceLock<std::result::Result<(), Unavailable>> = OnceLock::new();
    PROBE.get_or_init(probe_namespaces).clone()
}

fn probe_namespaces() -> std::result::Result<(), Unavailable> {
    let euid = rustix::process::geteuid().as_raw();
    if euid != 0 {
        return Err(Unavailable::NotRoot(euid));
    }
    ip(&["-V"]).map_err(|e| Unavailable::NoIp(e.to_string()))?;
    let (_, name) = fresh_name("probe");
    let namespace = Namespace::add(name).map_err(|e| Unavailable::NoNamespace(e.to_string()))?;
    drop(namespace);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{owner_pid, running};

    #[test]
    fn this_process_runs_and_an_unused_pid_does_not() {
        assert!(running(std::process::id()));
        // Above the largest pid_max (2^22).
        assert!(!running(4_194_305));
    }

    #[test]
    fn owner_pid_parses_our_names_only() {
        assert_eq!(owner_pid("voq-1234-0-a"), Some(1234));
        assert_eq!(owner_pid("voq-1234-probe"), Some(1234));
        assert_eq!(owner_pid("voq-x-0-a"), None);
        assert_eq!(owner_pid("voq-1234"), None);
        assert_eq!(owner_pid("voq--0-a"), None);
        assert_eq!(owner_pid("other-1234-0-a"), None);
    }
}
