//! `voq bench`: numbers that prove (or disprove) each claim of voq.
//!
//! Scenarios are TOML files in `bench/` (see [`scenario`]); each is run `repeats` times on
//! loopback — an in-process server, the netem UDP proxy, a client — and measured from the
//! client's report, the client's own instants and the server's observation hook
//! (`voq_server::Server::events`), all on one monotonic clock. The output is a table on
//! stdout, progress on stderr, an HTML report with plots, and optionally JSON.
//!
//! The datagram path in [`reference`] is a reference model of how WebRTC treats audio, run
//! beside the reliable path for comparison; it is not part of voq/1.

pub mod reference;
pub mod report;
pub mod run;
pub mod scenario;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;

use report::{BenchReport, FigureInfo, Meta, ScenarioResult};
use run::Prepared;
use scenario::{Figure, Scenario};

/// Options of `voq bench`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct BenchArgs {
    /// Fewer repeats and shorter audio: under 3 minutes on 2 cores (what CI runs).
    #[arg(long)]
    pub quick: bool,
    /// Also write the results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write the HTML report with plots to FILE [default: out/bench/report.html].
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Run only this scenario, or every scenario of a file by its stem (`prompt` for
    /// bench/prompt.toml). Repeatable. Baselines a chosen scenario needs run too.
    #[arg(long = "scenario", value_name = "NAME")]
    pub scenarios: Vec<String>,
    /// Directory of scenario files [default: ./bench, or the copies built into voq when it does
    /// not exist].
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// List the scenarios and exit.
    #[arg(long)]
    pub list: bool,
}

/// Runs the benchmark. Targets that are missed are reported, not errors; runs whose call
/// failed make it return an error after the reports are written.
/// Drops the scenarios that need network namespaces where there are none (not root), saying so;
/// with `VOQ_NETNS_REQUIRED=1` (CI) that is an error instead.
fn without_unrunnable(figures: Vec<scenario::Figure>) -> anyhow::Result<Vec<scenario::Figure>> {
    let Err(why) = voq_netns::NetnsLink::available() else {
        return Ok(figures);
    };
    let mut kept = Vec::new();
    for mut f in figures {
        let (netns, other): (Vec<_>, Vec<_>) =
            f.scenarios.into_iter().partition(|s| s.network.netns);
        if !netns.is_empty() {
            anyhow::ensure!(
                std::env::var_os("VOQ_NETNS_REQUIRED").is_none(),
                "figure \"{}\" needs network namespaces, unavailable here: {why}",
                f.title
            );
            eprintln!(
                "voq bench: SKIPPED {} scenario(s) of \"{}\" (they run through network namespaces, \
                 unavailable here: {why})",
                netns.len(),
                f.title
            );
        }
        f.scenarios = other;
        if !f.scenarios.is_empty() {
            kept.push(f);
        }
    }
    Ok(kept)
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let began = Instant::now();
    let load_start = loadavg();
    let dir = match &args.dir {
        Some(d) => Some(d.clone()),
        None => Some(PathBuf::from("bench")).filter(|d| d.is_dir()),
    };
    let figures = scenario::load(dir.as_deref(), args.quick)?;
    let figures = select(figures, &args.scenarios)?;
    let figures = without_unrunnable(figures)?;
    if args.list {
        list(&figures);
        return Ok(());
    }
    // Audio paths are relative to the working directory, or to the directory above the
    // scenario directory (the repository root for `bench/`).
    let base = dir
        .as_deref()
        .and_then(|d| d.canonicalize().ok())
        .and_then(|d| d.parent().map(Path::to_path_buf));
    let results = execute(&figures, base.as_deref(), false).await?;
    let report = BenchReport {
        scenarios: results,
        figures: figures
            .iter()
            .map(|f| FigureInfo {
                id: f.id.clone(),
                title: f.title.clone(),
                description: f.description.clone(),
                columns: f.columns.clone(),
            })
            .collect(),
        meta: meta(&args, began, load_start),
    };
    print_table(&report::table(&report));
    let html_path = args
        .html
        .clone()
        .unwrap_or_else(|| PathBuf::from("out/bench/report.html"));
    write_file(&html_path, report::html(&report, &figures).as_bytes())?;
    eprintln!("report: {}", html_path.display());
    if let Some(json) = &args.json {
        write_file(json, &serde_json::to_vec_pretty(&report)?)?;
        eprintln!("json: {}", json.display());
    }
    let failed: usize = report.scenarios.iter().map(|s| s.errors.len()).sum();
    anyhow::ensure!(
        failed == 0,
        "{failed} runs failed (see ERROR lines above); the reports are written"
    );
    Ok(())
}

/// Runs every scenario of `figures` (baselines first) and returns their results in the files'
/// order. Audio paths are relative to the working directory or to `base`. With `keep_audio`,
/// each run keeps its audio (`RunResult::audio`: the prompt sent, what the server holds, the
/// reply received and played) for reports that show it (`voq demo`).
pub async fn execute(
    figures: &[Figure],
    base: Option<&Path>,
    keep_audio: bool,
) -> anyhow::Result<Vec<ScenarioResult>> {
    let work = WorkDir::new()?;
    let total_runs: u32 = figures
        .iter()
        .flat_map(|f| &f.scenarios)
        .map(|s| s.repeats)
        .sum();
    let mut results: Vec<ScenarioResult> = Vec::new();
    let mut done = 0u32;
    // Baselines first, so the scenarios that subtract them can.
    let order = run_order(figures);
    let mut by_name: std::collections::HashMap<String, ScenarioResult> =
        std::collections::HashMap::new();
    for (fi, si) in order {
        let f = &figures[fi];
        let s = &f.scenarios[si];
        let mut prepared =
            prepare(s, base, &work).with_context(|| format!("scenario \"{}\"", s.name))?;
        if keep_audio {
            prepared.record = Some(work.path.join(format!("record-{}", s.name)));
        }
        let mut runs = Vec::new();
        for repeat in 0..s.repeats {
            done += 1;
            eprint!(
                "[{done:>3}/{total_runs}] {:<28} run {}/{} … ",
                s.name,
                repeat + 1,
                s.repeats
            );
            let r = run::run_once(s, &prepared, repeat).await;
            eprintln!("{}", progress_note(&r));
            runs.push(r);
        }
        let baseline = match s.baseline.as_deref() {
            // The baseline itself: its own median.
            Some(b) if b == s.name => median(
                runs.iter()
                    .filter_map(|r| r.metrics.get("prompt_hold_ms").copied()),
            ),
            Some(b) => by_name
                .get(b)
                .and_then(|b| b.distributions.get("prompt_hold_ms"))
                .map(|d| d.p50),
            None => None,
        };
        let result = report::aggregate(f, s, runs, baseline);
        by_name.insert(s.name.clone(), result);
    }
    // Report order: the files' order.
    for f in figures {
        for s in &f.scenarios {
            if let Some(r) = by_name.remove(&s.name) {
                results.push(r);
            }
        }
    }
    Ok(results)
}

#[allow(clippy::print_stdout)] // the table is this command's output
fn print_table(table: &str) {
    println!("{table}");
}

fn list(figures: &[Figure]) {
    let mut s = String::new();
    for f in figures {
        s += &format!("{} ({}):\n", f.title, f.id);
        for sc in &f.scenarios {
            s += &format!(
                "  {:<30} {} runs; {}\n",
                sc.name, sc.repeats, sc.network.description
            );
        }
    }
    print_table(&s);
}

/// Keeps the chosen scenarios (by name or file stem) and the baselines they need.
fn select(figures: Vec<Figure>, chosen: &[String]) -> anyhow::Result<Vec<Figure>> {
    if chosen.is_empty() {
        return Ok(figures);
    }
    for c in chosen {
        anyhow::ensure!(
            figures
                .iter()
                .any(|f| f.id == *c || f.scenarios.iter().any(|s| s.name == *c)),
            "no scenario or scenario file named \"{c}\" (try --list)"
        );
    }
    let picked = |f: &Figure, s: &Scenario| chosen.iter().any(|c| *c == f.id || *c == s.name);
    let mut keep: Vec<String> = figures
        .iter()
        .flat_map(|f| {
            f.scenarios
                .iter()
                .filter(|s| picked(f, s))
                .map(|s| s.name.clone())
        })
        .collect();
    let baselines: Vec<String> = figures
        .iter()
        .flat_map(|f| &f.scenarios)
        .filter(|s| keep.contains(&s.name))
        .filter_map(|s| s.baseline.clone())
        .collect();
    keep.extend(baselines);
    Ok(figures
        .into_iter()
        .map(|mut f| {
            f.scenarios.retain(|s| keep.contains(&s.name));
            f
        })
        .filter(|f| !f.scenarios.is_empty())
        .collect())
}

/// (figure, scenario) indices: scenarios that are someone's baseline first.
fn run_order(figures: &[Figure]) -> Vec<(usize, usize)> {
    let baselines: Vec<&str> = figures
        .iter()
        .flat_map(|f| &f.scenarios)
        .filter_map(|s| s.baseline.as_deref())
        .collect();
    let all: Vec<(usize, usize)> = figures
        .iter()
        .enumerate()
        .flat_map(|(fi, f)| (0..f.scenarios.len()).map(move |si| (fi, si)))
        .collect();
    let is_base =
        |&(fi, si): &(usize, usize)| baselines.contains(&figures[fi].scenarios[si].name.as_str());
    all.iter()
        .copied()
        .filter(is_base)
        .chain(all.iter().copied().filter(|x| !is_base(x)))
        .collect()
}

fn median(values: impl Iterator<Item = f64>) -> Option<f64> {
    let mut v: Vec<f64> = values.collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

fn progress_note(r: &run::RunResult) -> String {
    let m = &r.metrics;
    let mut parts = Vec::new();
    let mut show = |k: &str, label: &str| {
        if let Some(v) = m.get(k) {
            parts.push(format!("{label} {}", report::fmt_metric(k, *v)));
        }
    };
    show("setup_rtts", "setup");
    show("zero_rtt_setup_rtts", "0-rtt setup");
    show("prompt_delivered_fraction", "delivered");
    show("reference_delivered_fraction", "datagrams");
    show("reply_stall_ms", "stall ms");
    show("unplayed_bytes", "unplayed B");
    show("bargein_server_stop_ms", "stop ms");
    let status = match &r.error {
        Some(e) => format!("ERROR: {e}"),
        None => "ok".into(),
    };
    format!("{status} ({:.1} s) {}", r.wall_s, parts.join(", "))
}

/// Loads the prompt and readies the agent's file.
fn prepare(s: &Scenario, base: Option<&Path>, work: &WorkDir) -> anyhow::Result<Prepared> {
    let wav = load_wav(&s.call.input, base)?;
    let mut prompt = voq_audio::read_wav(&wav)?.to_mono_24k()?;
    if let Some(ms) = s.call.input_ms {
        prompt.truncate(ms as usize * voq_audio::SAMPLE_RATE as usize / 1000);
    }
    anyhow::ensure!(!prompt.is_empty(), "the input {} is empty", s.call.input);
    let agent = match s.agent.spec.strip_prefix("file:") {
        Some(path) => {
            let bytes = load_wav(path, base)?;
            let mut pcm = voq_audio::read_wav(&bytes)?.to_mono_24k()?;
            if let Some(ms) = s.agent.max_ms {
                pcm.truncate(ms as usize * voq_audio::SAMPLE_RATE as usize / 1000);
            }
            let file = work.path.join(format!("agent-{}.wav", s.name));
            voq_audio::write_wav_file(&file, &pcm, voq_audio::SAMPLE_RATE)?;
            format!("file:{}", file.display())
        }
        None => s.agent.spec.clone(),
    };
    Ok(Prepared {
        prompt,
        agent,
        record: None,
    })
}

/// A WAV by path (as given, or under `base`), or one of the shared test files by name.
fn load_wav(path: &str, base: Option<&Path>) -> anyhow::Result<Vec<u8>> {
    let p = Path::new(path);
    let candidates = std::iter::once(p.to_path_buf()).chain(base.map(|b| b.join(p)));
    for c in candidates {
        if c.is_file() {
            return std::fs::read(&c).with_context(|| format!("cannot read {}", c.display()));
        }
    }
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let builtin = match name {
        "prompt-carwash-24k.wav" => Some(crate::demo::PROMPT_CARWASH),
        "prompt-lisbon-24k.wav" => Some(crate::demo::PROMPT_LISBON),
        "reply-carwash-24k.wav" => Some(crate::demo::REPLY_CARWASH),
        _ => None,
    };
    builtin
        .map(<[u8]>::to_vec)
        .with_context(|| format!("audio file {path} not found"))
}

/// A scratch directory for the agents' files, removed when dropped.
#[derive(Debug)]
struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    fn new() -> anyhow::Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!("voq-bench-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Self { path })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

/// The 1, 5 and 15 minute load averages.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn meta(args: &BenchArgs, began: Instant, load_start: String) -> Meta {
    let mut command = String::from("voq bench");
    if args.quick {
        command += " --quick";
    }
    for s in &args.scenarios {
        command += &format!(" --scenario {s}");
    }
    if let Some(d) = &args.dir {
        command += &format!(" --dir {}", d.display());
    }
    if let Some(j) = &args.json {
        command += &format!(" --json {}", j.display());
    }
    if let Some(h) = &args.html {
        command += &format!(" --html {}", h.display());
    }
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    Meta {
        command,
        date: utc_now(),
        quick: args.quick,
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu,
        duration_s: began.elapsed().as_secs_f64(),
        load_start,
        load_end: loadavg(),
        voq_version: env!("CARGO_PKG_VERSION").into(),
    }
}

/// `YYYY-MM-DD HH:MM:SS` in UTC.
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let rem = secs % 86_400;
    let (y, m, d) = voq_server::tls::civil_date(secs / 86_400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
