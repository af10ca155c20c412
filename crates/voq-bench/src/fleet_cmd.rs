//! `voq fleet`: an anycast fleet of real `voq serve` processes on this machine, to try by hand
//! (root only). Network namespaces, a BGP router with ECMP and one BIRD per server
//! (`voq_netns::fleet`, the same builder the tests and the demo use); each server is this very
//! binary's `voq serve --anycast … --bird-socket …`. Prints how to call it and how to take a
//! server out, holds until Ctrl-C (or `--seconds`), then tears everything down.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use voq_netns::fleet::{ANYCAST, CLIENT_ADDR, Fleet, FleetConfig};

/// The port of every server, unicast and anycast.
const PORT: u16 = 4433;

/// Options of `voq fleet`.
#[derive(Debug, Clone, clap::Args)]
pub struct FleetArgs {
    /// How many servers (2 to 9).
    #[arg(long, default_value_t = 3)]
    pub servers: usize,
    /// Each server withdraws its anycast route at this many sessions [default: 90 % of 1000].
    #[arg(long, value_name = "N")]
    pub shed_at_sessions: Option<u64>,
    /// Make this many calls with this WAV from the client namespace once the fleet is up,
    /// print their reports (JSON lines) and stop; fails unless each moved to its server's
    /// unicast address and got its echo back bit-exact.
    #[arg(long, value_name = "FILE.wav")]
    pub call: Option<PathBuf>,
    /// Calls for --call.
    #[arg(long, default_value_t = 3)]
    pub calls: usize,
    /// Stop after this many seconds (default: at Ctrl-C).
    #[arg(long, value_name = "S")]
    pub seconds: Option<u64>,
}

/// A `voq serve` process in a server namespace.
struct ServeProcess(Child);

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub async fn run(args: FleetArgs) -> anyhow::Result<()> {
    anyhow::ensure!((2..=9).contains(&args.servers), "--servers must be 2 to 9");
    Fleet::available().map_err(|why| {
        anyhow::anyhow!("cannot build a fleet here: {why} (run as root after scripts/setup)")
    })?;
    let servers = args.servers;
    let fleet =
        tokio::task::spawn_blocking(move || Fleet::create(FleetConfig::new(servers))).await??;
    let result = serve_and_hold(&fleet, &args).await;
    // Deleting namespaces kills what runs in them and waits: off the runtime.
    tokio::task::spawn_blocking(move || fleet.close()).await??;
    result
}

async fn serve_and_hold(fleet: &Fleet, args: &FleetArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find the voq binary to run servers")?;
    let secret = fleet.run_dir().join("fleet-secret");
    write_secret(&secret)?;
    let unicast: Vec<SocketAddr> = (0..fleet.servers())
        .map(|i| SocketAddr::from((fleet.server_addr(i), PORT)))
        .collect();
    let mut processes = Vec::new();
    for i in 0..fleet.servers() {
        let mut command = fleet.server(i).command(&exe);
        command
            .arg("serve")
            .args(["--listen", &unicast[i].to_string()])
            .args(["--anycast", &SocketAddr::from((ANYCAST, PORT)).to_string()])
            .args(["--server-id", &format!("{:02x}", i + 1)])
            .arg("--bird-socket")
            .arg(fleet.bird_socket(i))
            .arg("--fleet-secret-file")
            .arg(&secret)
            .args([
                "--metrics",
                &SocketAddr::from((fleet.server_addr(i), 9090)).to_string(),
            ])
            .args(["--no-auth", "--web", "false", "--agent", "echo"]);
        for (j, addr) in unicast.iter().enumerate().filter(|(j, _)| *j != i) {
            command.args(["--fleet-peer", &format!("{:02x}={addr}", j + 1)]);
        }
        if let Some(n) = args.shed_at_sessions {
            command.args([
                "--shed-at-sessions",
                &n.to_string(),
                "--resume-at-sessions",
                "0",
            ]);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start voq serve in {}", fleet.server(i).name()))?;
        // The banner's first line says it listens.
        let stdout = child.stdout.take().context("no stdout")?;
        processes.push(ServeProcess(child));
        let banner =
            tokio::task::spawn_blocking(move || BufReader::new(stdout).lines().next().transpose())
                .await??
                .with_context(|| format!("voq serve {i} ended before it listened"))?;
        tracing::debug!(server = i, %banner, "server up");
    }
    print_guide(fleet, &exe);
    if let Some(wav) = &args.call {
        return self_check(fleet, wav, args.calls, &unicast).await;
    }
    hold(fleet, args.seconds.map(Duration::from_secs)).await;
    Ok(())
}

/// 32 random octets, hex, readable by root only.
fn write_secret(path: &Path) -> anyhow::Result<()> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("cannot read /dev/urandom for the fleet secret")?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(hex.as_bytes())?;
    Ok(())
}

#[allow(clippy::print_stdout)] // the guide is this command's output
fn print_guide(fleet: &Fleet, exe: &Path) {
    let client = fleet.client().name();
    println!(
        "voq fleet: {} servers on anycast {ANYCAST}:{PORT}",
        fleet.servers()
    );
    for i in 0..fleet.servers() {
        println!(
            "  server {:02x}: unicast {}:{PORT} in {} (metrics http://{}:9090/metrics; \
             withdraw by hand: birdc -s {} disable anycast)",
            i + 1,
            fleet.server_addr(i),
            fleet.server(i).name(),
            fleet.server_addr(i),
            fleet.bird_socket(i).display()
        );
    }
    println!(
        "  router: {} (ip -n {} route show {ANYCAST})",
        fleet.router().name(),
        fleet.router().name()
    );
    println!(
        "call from the client namespace ({CLIENT_ADDR}):\n  ip netns exec {client} {} call \
         https://{ANYCAST}:{PORT} --insecure --input testdata/audio/prompt-carwash-24k.wav",
        exe.display()
    );
}

/// Prints the anycast route whenever its next hops change, until Ctrl-C or `limit`.
#[allow(clippy::print_stdout)]
async fn hold(fleet: &Fleet, limit: Option<Duration>) {
    let deadline = async {
        match limit {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(deadline, interrupted);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut shown = None;
    println!("holding (Ctrl-C ends it and removes the fleet)");
    loop {
        tokio::select! {
            _ = &mut deadline => break,
            _ = &mut interrupted => break,
            _ = tick.tick() => {}
        }
        let hops = fleet.next_hops().map_err(|e| e.to_string());
        if shown.as_ref() != Some(&hops) {
            match &hops {
                Ok(hops) => println!("{ANYCAST} via {hops:?}"),
                Err(e) => println!("reading the route: {e}"),
            }
            shown = Some(hops);
        }
    }
}

/// `--call`: calls from the client namespace, one at a time, each from a fresh client.
#[allow(clippy::print_stdout)]
async fn self_check(
    fleet: &Fleet,
    wav: &Path,
    calls: usize,
    unicast: &[SocketAddr],
) -> anyhow::Result<()> {
    let pcm = voq_audio::read_wav_file(wav)
        .with_context(|| format!("cannot read {}", wav.display()))?
        .to_mono_24k()?;
    let started = Instant::now();
    let client_ns = fleet.client();
    let outcomes = {
        let pcm = pcm.clone();
        let run = move || async move {
            let mut out = Vec::new();
            for _ in 0..calls {
                let client = voq_client::Client::new(
                    &voq_client::Trust::Insecure,
                    SocketAddr::from(([0, 0, 0, 0], 0)),
                )?;
                let target = voq_client::Target {
                    addr: SocketAddr::from((ANYCAST, PORT)),
                    server_name: "localhost".into(),
                    tls: true,
                };
                let opts = voq_client::CallOptions {
                    turns: vec![pcm.clone()],
                    input_speed: 0.0,
                    timeout: Duration::from_secs(60),
                    ..Default::default()
                };
                let outcome = client.call(&target, opts).await;
                client.shutdown(Duration::from_secs(1)).await;
                out.push(outcome?);
            }
            anyhow::Ok(out)
        };
        std::thread::scope(|scope| {
            scope
                .spawn(|| client_ns.block_on(run))
                .join()
                .map_err(|_| anyhow::anyhow!("the client thread panicked"))
        })???
    };
    let mut failed = 0;
    for outcome in &outcomes {
        println!("{}", serde_json::to_string(&outcome.report)?);
        let r = &outcome.report;
        let moved_home =
            r.preferred_address_used && unicast.iter().any(|a| a.to_string() == r.server_address);
        if !moved_home || outcome.reply_received != pcm {
            failed += 1;
        }
    }
    eprintln!(
        "voq fleet: {} calls in {:.1} s, {failed} failed the check",
        outcomes.len(),
        started.elapsed().as_secs_f64()
    );
    anyhow::ensure!(
        failed == 0,
        "{failed} calls did not move to their server's unicast address or were not bit-exact"
    );
    Ok(())
}
