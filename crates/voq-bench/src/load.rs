//! `voq load`: many real client sessions from one process against one `voq serve` process,
//! in steps of concurrent calls, to find the load a server holds (issue #12, item 6).
//!
//! Every simulated user is a real `voq_client` call on its own UDP socket: it connects, talks
//! its turns in real time, plays the replies in real time, hangs up and calls again, until the
//! step ends. The server is a child process (this binary's `serve`), so its CPU time, memory and
//! the kernel's UDP drops are its own, read from `/proc`. Per step the report gives the setup and
//! reply-first-audio percentiles, the server's CPU per call, its memory, and drops; the *rated
//! load* is the largest step without a failed session whose p99s stay within 10 % (or 5 ms) of
//! the idle (first) step's.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use voq_client::{CallOptions, Client, Target, Trust};

use crate::bench::report::percentile;

/// Flags of `voq load`.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// Concurrent calls in each step, in order; the first is the idle reference.
    #[arg(long, value_delimiter = ',', default_value = "1,25,50,100")]
    pub calls: Vec<usize>,
    /// How long each step runs (calls in progress at the end finish and count).
    #[arg(long, default_value = "30s", value_parser = voq_client::parse_duration)]
    pub step: Duration,
    /// Codec for both directions: opus or pcm16.
    #[arg(long, default_value = "opus", value_parser = ["opus", "pcm16"])]
    pub codec: String,
    /// Turns per call (each: the prompt in real time, then the reply played in real time).
    #[arg(long, default_value_t = 2)]
    pub turns: usize,
    /// The prompt (24 kHz mono WAV) [default: testdata/audio/prompt-carwash-24k.wav].
    #[arg(long, value_name = "FILE.wav")]
    pub prompt: Option<PathBuf>,
    /// Extra flags for the server (`voq serve`), e.g. "--udp-recv-buffer 0".
    #[arg(long, value_name = "FLAGS", allow_hyphen_values = true)]
    pub serve_flags: Option<String>,
    /// Write the steps as JSON here.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// One step's figures.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub calls: usize,
    pub sessions_ok: usize,
    pub sessions_failed: usize,
    pub setup_ms_p50: f64,
    pub setup_ms_p99: f64,
    pub first_audio_ms_p50: f64,
    pub first_audio_ms_p99: f64,
    /// Seconds of calls in progress (summed over sessions).
    pub call_seconds: f64,
    /// The server's CPU seconds (user + system) in the step.
    pub server_cpu_s: f64,
    /// Calls one server core would hold at this cost: call-seconds per server CPU-second.
    pub calls_per_server_core: f64,
    /// The load generator's own CPU seconds (the client side).
    pub client_cpu_s: f64,
    /// The server's resident memory at the end of the step, and its peak during it.
    pub server_rss_mb: f64,
    pub server_rss_peak_mb: f64,
    /// The server's resident memory every 10 s of the step (seconds since its start, MB): flat
    /// in a soak.
    pub server_rss_timeline: Vec<(u64, f64)>,
    /// UDP datagrams the kernel dropped on full receive buffers (whole machine; `None` where
    /// the kernel does not report them).
    pub udp_rcvbuf_drops: Option<u64>,
    pub errors: Vec<String>,
}

/// `voq load`.
pub async fn run(args: LoadArgs) -> anyhow::Result<()> {
    anyhow::ensure!(!args.calls.is_empty(), "--calls needs at least one step");
    raise_fd_limit();
    let prompt_path = args.prompt.clone().unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/audio/prompt-carwash-24k.wav")
    });
    let prompt = voq_audio::read_wav_file(&prompt_path)
        .with_context(|| format!("cannot read {}", prompt_path.display()))?
        .to_mono_24k()?;
    let server = ServeChild::start(args.serve_flags.as_deref())?;
    let trust = Trust::cert_hash(&server.cert_hash)?;
    let target = Target {
        addr: server.addr,
        server_name: "localhost".into(),
        tls: true,
    };
    let mut steps = Vec::new();
    for &calls in &args.calls {
        let step = run_step(&args, calls, &trust, &target, &prompt, server.pid()).await?;
        eprintln!("{}", row(&step));
        steps.push(step);
    }
    #[allow(clippy::print_stdout)]
    {
        println!("{}", table(&steps));
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&steps)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

async fn run_step(
    args: &LoadArgs,
    calls: usize,
    trust: &Trust,
    target: &Target,
    prompt: &[i16],
    pid: u32,
) -> anyhow::Result<StepReport> {
    let started = Instant::now();
    let end = started + args.step;
    let (cpu0, self0, drops0) = (
        proc_cpu_s(pid)?,
        proc_cpu_s(std::process::id())?,
        udp_drops(),
    );
    let peak = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let timeline = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sampler = {
        let (peak, timeline) = (peak.clone(), timeline.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            for n in 0u64.. {
                tick.tick().await;
                if let Ok(kb) = proc_rss_kb(pid) {
                    peak.fetch_max(kb, std::sync::atomic::Ordering::Relaxed);
                    if n % 20 == 0
                        && let Ok(mut t) = timeline.lock()
                    {
                        t.push((n / 2, kb as f64 / 1024.0));
                    }
                }
            }
        })
    };
    let mut users = tokio::task::JoinSet::new();
    let codec: voq_proto::Codec = args.codec.parse()?;
    for i in 0..calls {
        let (trust, target) = (trust.clone(), target.clone());
        let turns = vec![prompt.to_vec(); args.turns.max(1)];
        // Starts spread over the first quarter of the step, as users arrive.
        let offset = args.step.mul_f64(0.25 * i as f64 / calls.max(1) as f64);
        users.spawn(async move {
            tokio::time::sleep(offset).await;
            let mut results = Vec::new();
            while Instant::now() < end {
                let opts = CallOptions {
                    codec,
                    turns: turns.clone(),
                    input_speed: 1.0,
                    timeout: Duration::from_secs(120),
                    ..Default::default()
                };
                let t = Instant::now();
                let outcome = match Client::new(&trust, "127.0.0.1:0".parse().expect("address")) {
                    Ok(client) => client.call(&target, opts).await,
                    Err(e) => Err(e),
                };
                results.push((outcome.map(|o| o.report), t.elapsed()));
            }
            results
        });
    }
    let (mut setups, mut firsts, mut errors) = (Vec::new(), Vec::new(), Vec::new());
    let (mut ok, mut failed, mut call_seconds) = (0, 0, 0.0);
    while let Some(r) = users.join_next().await {
        for (outcome, took) in r? {
            call_seconds += took.as_secs_f64();
            match outcome {
                Ok(report) => {
                    ok += 1;
                    setups.push(report.setup_ms);
                    if let Some(ms) = report.reply.first_audio_ms {
                        firsts.push(ms);
                    }
                }
                Err(e) => {
                    failed += 1;
                    if errors.len() < 5 {
                        errors.push(format!("{e:#}"));
                    }
                }
            }
        }
    }
    sampler.abort();
    let server_cpu_s = proc_cpu_s(pid)? - cpu0;
    setups.sort_by(f64::total_cmp);
    firsts.sort_by(f64::total_cmp);
    let rss = proc_rss_kb(pid)? as f64 / 1024.0;
    Ok(StepReport {
        calls,
        sessions_ok: ok,
        sessions_failed: failed,
        setup_ms_p50: percentile(&setups, 0.5),
        setup_ms_p99: percentile(&setups, 0.99),
        first_audio_ms_p50: percentile(&firsts, 0.5),
        first_audio_ms_p99: percentile(&firsts, 0.99),
        call_seconds,
        server_cpu_s,
        calls_per_server_core: call_seconds / server_cpu_s.max(1e-9),
        client_cpu_s: proc_cpu_s(std::process::id())? - self0,
        server_rss_mb: rss,
        server_rss_peak_mb: (peak.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1024.0)
            .max(rss),
        udp_rcvbuf_drops: udp_drops()
            .zip(drops0)
            .map(|(end, start)| end.saturating_sub(start)),
        server_rss_timeline: timeline.lock().map(|t| t.clone()).unwrap_or_default(),
        errors,
    })
}

fn row(s: &StepReport) -> String {
    format!(
        "{:>6} {:>6} {:>5} {:>8.0} {:>8.0} {:>8.0} {:>8.0} {:>7.1} {:>9.0} {:>7.1} {:>7.0} {:>7.0} {:>6}",
        s.calls,
        s.sessions_ok,
        s.sessions_failed,
        s.setup_ms_p50,
        s.setup_ms_p99,
        s.first_audio_ms_p50,
        s.first_audio_ms_p99,
        s.server_cpu_s,
        s.calls_per_server_core,
        s.client_cpu_s,
        s.server_rss_mb,
        s.server_rss_peak_mb,
        s.udp_rcvbuf_drops
            .map_or_else(|| "?".to_string(), |d| d.to_string())
    )
}

/// The steps as a table, and the rated load.
pub fn table(steps: &[StepReport]) -> String {
    let mut out = format!(
        "{:>6} {:>6} {:>5} {:>8} {:>8} {:>8} {:>8} {:>7} {:>9} {:>7} {:>7} {:>7} {:>6}\n",
        "calls",
        "ok",
        "fail",
        "setup50",
        "setup99",
        "first50",
        "first99",
        "srv_cpu",
        "calls/cpu",
        "cli_cpu",
        "rss_MB",
        "peak_MB",
        "drops"
    );
    for s in steps {
        out.push_str(&row(s));
        out.push('\n');
    }
    if let Some(idle) = steps.first() {
        // Within 10 %, or within 5 ms: on loopback the idle figures are a few ms, where 10 %
        // is below the scheduler's noise.
        let close = |x: f64, idle: f64| x <= (idle * 1.1).max(idle + 5.0);
        let within = |s: &&StepReport| {
            s.sessions_failed == 0
                && close(s.setup_ms_p99, idle.setup_ms_p99)
                && close(s.first_audio_ms_p99, idle.first_audio_ms_p99)
        };
        match steps.iter().filter(within).map(|s| s.calls).max() {
            Some(n) => out.push_str(&format!(
                "rated load: {n} concurrent calls (p99 setup and first audio within 10 % or 5 ms \
                 of the {}-call step, no failed session)\n",
                idle.calls
            )),
            None => out.push_str("rated load: none of the steps\n"),
        }
    }
    out
}

/// `voq serve` as a child process on an ephemeral loopback port.
struct ServeChild {
    child: Child,
    addr: std::net::SocketAddr,
    cert_hash: String,
}

impl ServeChild {
    fn start(extra: Option<&str>) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot find this binary")?;
        let mut cmd = Command::new(exe);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--agent", "echo"])
            .args(["--max-sessions", "100000", "--max-handshakes", "4096"])
            .args(
                extra
                    .map(|e| e.split_whitespace().collect::<Vec<_>>())
                    .unwrap_or_default(),
            )
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().context("cannot start voq serve")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let banner = lines.next().context("voq serve printed nothing")??;
        let addr = banner
            .rsplit(' ')
            .next()
            .and_then(|a| a.parse().ok())
            .with_context(|| format!("unexpected banner: {banner}"))?;
        let cert_hash = lines
            .by_ref()
            .take(4)
            .map_while(Result::ok)
            .find_map(|l| {
                l.split("--cert-hash ")
                    .nth(1)
                    .and_then(|r| r.split_whitespace().next())
                    .map(str::to_string)
            })
            .context("voq serve printed no certificate hash")?;
        // Keep draining its stdout so that it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(Self {
            child,
            addr,
            cert_hash,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ServeChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// User + system CPU seconds of a process (`/proc/PID/stat`, in clock ticks).
fn proc_cpu_s(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .with_context(|| format!("/proc/{pid}/stat: no command name"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    let ticks = |i: usize| -> anyhow::Result<f64> {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .with_context(|| format!("/proc/{pid}/stat: no CPU time field {}", i + 3))
    };
    let per_second = rustix::param::clock_ticks_per_second() as f64;
    Ok((ticks(11)? + ticks(12)?) / per_second)
}

fn proc_rss_kb(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS")
}

/// `Udp: RcvbufErrors` of `/proc/net/snmp`; `None` where the kernel does not say (then the
/// report says `null`, never a made-up 0).
fn udp_drops() -> Option<u64> {
    let snmp = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next()?, udp.next()?);
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
}

/// Many calls need many sockets: raise the soft descriptor limit to the hard one.
fn raise_fd_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if let Some(max) = limit.maximum {
        let _ = setrlimit(
            Resource::Nofile,
            rustix::process::Rlimit {
                current: Some(max),
                maximum: Some(max),
            },
        );
    }
}
