//! The two proxies under test as separate processes, so that their CPU time and RSS can be
//! read from /proc and compared: the real `voq lb` binary started here as a child, and the
//! worker of the nginx master that scripts/bench-lb started. Also the CPU pinning that keeps
//! them off the benchmark's own core (`taskset`).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::quic_lb::{CONFIG_ID, NONCE_LEN, SERVER_ID_LEN, key_hex};

/// How long `voq lb` may take to report its VIP.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// What `voq lb` prints on standard output once its VIP sockets are bound
/// (crates/voq-lb/src/lib.rs, `run`): `voq lb on udp ADDR`.
const BANNER: &str = "voq lb on udp ";

/// The `voq` binary to run: `--voq-bin`, else `voq` in the target directory this example was
/// built into (`target/release/examples/lb_vs_nginx` → `target/release/voq`).
pub(crate) fn voq_bin(arg: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let path = match arg {
        Some(path) => path,
        None => {
            let exe = std::env::current_exe().context("cannot locate this program")?;
            let profile = exe.parent().and_then(Path::parent);
            profile
                .context("this program is not in a target directory")?
                .join("voq")
        }
    };
    anyhow::ensure!(
        path.is_file(),
        "no voq binary at {} (build it with `cargo build --release -p voq --bin voq`, or pass \
         --voq-bin PATH)",
        path.display()
    );
    Ok(path)
}

/// `voq lb` as a child process (on the proxy core when pinning): the released command with
/// `--workers 1` and health probes off, its QUIC-LB configuration that of [`crate::quic_lb`].
/// Killed when dropped, and (through `setpriv --pdeathsig`, where available) when this
/// process dies without dropping it.
pub(crate) struct VoqLb {
    child: Child,
    pub(crate) vip: SocketAddr,
}

impl VoqLb {
    /// Starts `voq lb` in front of `backends` (server id, tunnel address) and waits, up to
    /// [`START_TIMEOUT`], until it reports its VIP.
    pub(crate) fn start(
        voq: &Path,
        cpu: Option<usize>,
        backends: &[(u8, SocketAddr)],
    ) -> anyhow::Result<Self> {
        // taskset and setpriv exec what follows, so the child's pid is voq's.
        let mut argv: Vec<String> = Vec::new();
        if let Some(cpu) = cpu {
            argv.extend(["taskset".into(), "-c".into(), cpu.to_string()]);
        }
        if has_setpriv() {
            argv.extend(["setpriv", "--pdeathsig", "KILL", "--"].map(String::from));
        }
        let mut cmd = match argv.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(voq);
                c
            }
            None => Command::new(voq),
        };
        cmd.args(["lb", "--listen", "127.0.0.1:0", "--workers", "1"])
            .args(["--lb-config-id", &CONFIG_ID.to_string()])
            .args(["--lb-server-id-len", &SERVER_ID_LEN.to_string()])
            .args(["--lb-nonce-len", &NONCE_LEN.to_string()])
            .args(["--health-interval-ms", "0"]);
        for (id, addr) in backends {
            cmd.arg("--backend").arg(format!("{id:02x}={addr}"));
        }
        // The key through the environment, as the command recommends; its log (stderr, shared
        // with this program's) only for problems unless RUST_LOG says otherwise.
        cmd.env("VOQ_LB_KEY", key_hex());
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "warn");
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {} lb", voq.display()))?;
        // From here on, dropping `lb` kills the child whatever goes wrong.
        let mut lb = Self {
            child,
            vip: SocketAddr::from(([0, 0, 0, 0], 0)),
        };
        lb.vip = lb.wait_for_vip(voq)?;
        Ok(lb)
    }

    /// The VIP from the banner on the child's standard output. A thread reads the pipe (and
    /// keeps draining it afterwards); this waits for its word with a deadline, so a child that
    /// exits or hangs before the banner fails the run instead of blocking it.
    fn wait_for_vip(&mut self, voq: &Path) -> anyhow::Result<SocketAddr> {
        let stdout = self.child.stdout.take().context("voq lb has no stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(vip) = line.trim().strip_prefix(BANNER) {
                    let _ = tx.send(vip.parse::<SocketAddr>().map_err(|_| line.clone()));
                }
            }
        });
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(Ok(vip)) => Ok(vip),
            Ok(Err(line)) => bail!("voq lb reported an address that does not parse: {line:?}"),
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.child.wait()?;
                bail!(
                    "{} lb exited ({status}) before it reported its address",
                    voq.display()
                )
            }
            Err(RecvTimeoutError::Timeout) => bail!(
                "{} lb did not report its address within {START_TIMEOUT:?}",
                voq.display()
            ),
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for VoqLb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `setpriv` (util-linux) can set the child's parent-death signal.
fn has_setpriv() -> bool {
    Command::new("setpriv")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The (one) worker process of the nginx master `master`.
pub(crate) async fn nginx_worker(master: u32) -> anyhow::Result<u32> {
    for _ in 0..50 {
        let children = std::fs::read_to_string(format!("/proc/{master}/task/{master}/children"))
            .with_context(|| format!("nginx master {master} is not running"))?;
        if let Some(pid) = children.split_whitespace().next() {
            return Ok(pid.parse()?);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("nginx master {master} has no worker")
}

/// Whether to pin: asked for, at least two cores, and `taskset` present.
pub(crate) fn can_pin(no_pin: bool) -> bool {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    !no_pin && cores >= 2 && Command::new("taskset").arg("-V").output().is_ok()
}

/// Moves all threads of `pid` to core `cpu`.
pub(crate) fn repin(pid: u32, cpu: usize) -> anyhow::Result<()> {
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", &cpu.to_string(), &pid.to_string()])
        .stdout(Stdio::null())
        .status()?;
    anyhow::ensure!(
        status.success(),
        "taskset could not move {pid} to core {cpu}"
    );
    Ok(())
}
