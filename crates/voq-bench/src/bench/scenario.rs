//! Scenario files: `bench/*.toml`, one figure each.
//!
//! ```toml
//! figure = "Playback continuity"        # title of the table and the plots
//! description = "…"                     # what is measured, how to read it
//! columns = ["reply_underruns", "reply_stall_ms"]   # metrics shown in the table
//! plots = [{ title = "…", metrics = ["reply_stall_ms"], unit = "ms" }]
//!
//! [defaults]                            # deep-merged under every [[scenario]]
//! carrier = "quic"                      # or `webtransport`, `ws` (these run over netns)
//! repeats = 5
//! seed = 300                            # repeat i uses seed + i
//! agent = { spec = "file:testdata/audio/reply-carwash-24k.wav", speed = 4.0 }
//! call = { input = "testdata/audio/prompt-carwash-24k.wav", codec = "pcm16", input_speed = 0 }
//! quick = { repeats = 1 }               # merged over the scenario with --quick
//!
//! [[scenario]]
//! name = "playback-blackout-1s"
//! label = "1 s"                         # row of the table / bar of the plots (default: name)
//! network = { rtt_ms = 60, blackouts = [{ phase = "reply", at_ms = 4000, duration_ms = 1000 }] }
//! targets = [{ metric = "reply_underruns", le = 0 }]
//! ```
//!
//! `network`: `preset` (a voq-netem preset for both directions), `rtt_ms` (sets `delay_ms` =
//! RTT / 2 each way), any [`LinkConfig`] field (both directions), `up` / `down` tables of
//! `LinkConfig` fields (one direction; applied last), and `blackouts` triggered relative to a
//! phase of the call (see [`Phase`]). `netns = true` sends the call through a link between two
//! network namespaces (voq-netns: UDP and TCP alike, needs root) instead of the UDP proxy; the
//! `webtransport` and `ws` carriers always use it, so every carrier crosses the same emulator.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use voq_netem::{LinkConfig, Preset};
use voq_proto::Codec;

/// The scenario files shipped in `bench/`, built in so the bench runs from any directory.
pub const BUILTIN: &[(&str, &str)] = &[
    ("setup", include_str!("../../../../bench/setup.toml")),
    ("prompt", include_str!("../../../../bench/prompt.toml")),
    ("playback", include_str!("../../../../bench/playback.toml")),
    (
        "send-ahead",
        include_str!("../../../../bench/send-ahead.toml"),
    ),
    ("bargein", include_str!("../../../../bench/bargein.toml")),
    ("carriers", include_str!("../../../../bench/carriers.toml")),
    ("recovery", include_str!("../../../../bench/recovery.toml")),
    ("fairness", include_str!("../../../../bench/fairness.toml")),
];

/// One scenario file: a figure of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// File stem (`setup` for `bench/setup.toml`).
    pub id: String,
    pub title: String,
    pub description: String,
    pub columns: Vec<String>,
    pub plots: Vec<PlotSpec>,
    pub scenarios: Vec<Scenario>,
}

/// A grouped bar chart: one group per row label, one bar per metric.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlotSpec {
    pub title: String,
    pub metrics: Vec<String>,
    #[serde(default)]
    pub unit: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FigureFile {
    figure: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    columns: Vec<String>,
    #[serde(default)]
    plots: Vec<PlotSpec>,
    #[serde(default)]
    defaults: toml::Table,
    #[serde(default)]
    scenario: Vec<toml::Table>,
}

/// One configuration, run `repeats` times on loopback.
#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    pub name: String,
    pub label: String,
    pub description: String,
    pub carrier: Carrier,
    pub network: Network,
    pub agent: AgentSpec,
    pub call: CallPattern,
    pub repeats: u32,
    pub seed: u64,
    /// The datagram reference model, run beside the reliable path on the same network.
    pub reference: Option<Reference>,
    /// Servers behind a real `voq lb` instead of one server (the emulated path ends at the
    /// balancer's VIP).
    pub balancer: Option<BalancerSpec>,
    /// An anycast fleet in network namespaces instead (BIRD, ECMP; root only).
    pub fleet: Option<FleetSpec>,
    /// The loss-free scenario whose turn-hold time `prompt_extra_delay_*` subtracts.
    pub baseline: Option<String>,
    /// The server holding the call is lost mid-call (behind a balancer, servers sharing a
    /// session store): the call resumes on another.
    pub lose_server: Option<LoseServer>,
    pub targets: Vec<TargetSpec>,
}

/// The server holding the call is lost `at_ms` after a phase of the call.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoseServer {
    pub phase: Phase,
    #[serde(default)]
    pub at_ms: f64,
    /// `kill` (a crash: no goodbye; the default) or `drain` (a graceful shutdown).
    #[serde(default)]
    pub how: LoseHow,
}

/// How a server is lost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoseHow {
    #[default]
    Kill,
    Drain,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioToml {
    name: String,
    #[serde(default)]
    label: Option<String>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    carrier: Carrier,
    #[serde(default)]
    network: toml::Table,
    agent: AgentSpec,
    call: CallPattern,
    #[serde(default = "one")]
    repeats: u32,
    #[serde(default)]
    seed: u64,
    #[serde(default)]
    reference: Option<Reference>,
    #[serde(default)]
    balancer: Option<BalancerSpec>,
    #[serde(default)]
    fleet: Option<FleetSpec>,
    #[serde(default)]
    baseline: Option<String>,
    #[serde(default)]
    lose_server: Option<LoseServer>,
    #[serde(default)]
    targets: Vec<TargetSpec>,
}

fn one() -> u32 {
    1
}

/// How the call travels.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Carrier {
    #[default]
    Quic,
    Ws,
    Webtransport,
}

impl Carrier {
    /// The client's transport for this carrier.
    pub fn transport(self) -> voq_transport::Carrier {
        match self {
            Self::Quic => voq_transport::Carrier::Quic,
            Self::Ws => voq_transport::Carrier::WebSocket,
            Self::Webtransport => voq_transport::Carrier::WebTransport,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Quic => "quic",
            Self::Ws => "ws",
            Self::Webtransport => "webtransport",
        }
    }
}

/// Both directions of the emulated path, and blackouts tied to call phases.
#[derive(Debug, Clone, Serialize)]
pub struct Network {
    /// Client → server.
    pub up: LinkConfig,
    /// Server → client.
    pub down: LinkConfig,
    pub blackouts: Vec<PhaseBlackout>,
    /// Through network namespaces (voq-netns) rather than the UDP proxy.
    pub netns: bool,
    /// A TCP bulk transfer from the server's namespace to the client's runs for the whole call
    /// through the same link (netns only): what share each gets (`tcp_bulk_kbps`,
    /// `voq_down_kbps`).
    pub competing_tcp: bool,
    /// A one-line summary for tables.
    pub description: String,
}

impl Network {
    /// The emulated round-trip time (the two base delays), ms.
    pub fn rtt_ms(&self) -> f64 {
        self.up.delay_ms + self.down.delay_ms
    }
}

/// A blackout `at_ms` after `phase` began, for `duration_ms`, in `direction`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhaseBlackout {
    pub phase: Phase,
    #[serde(default)]
    pub at_ms: f64,
    pub duration_ms: f64,
    #[serde(default)]
    pub direction: Dir,
}

/// A moment `at_ms` after a phase of the call.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhaseTrigger {
    pub phase: Phase,
    #[serde(default)]
    pub at_ms: f64,
}

/// Servers behind a real `voq lb`: QUIC-LB server ids 01, 02, …, tunnel sockets that learn the
/// balancer's address, health probes on.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalancerSpec {
    /// How many servers (2 to 15).
    pub servers: u8,
}

/// An anycast fleet on one machine (`voq_netns::fleet`): servers 01, 02, … in their own network
/// namespaces, each announcing the anycast address through its BIRD to a router that spreads
/// flows over them (ECMP). The calls dial the anycast address from a client namespace, start
/// `stagger_ms` apart, and move to their server's unicast address. Root only.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetSpec {
    /// How many servers (2 to 9).
    pub servers: u8,
    /// Each server withdraws its anycast route at this many sessions (and announces it again
    /// when it has none) [default: 90 % of its capacity].
    #[serde(default)]
    pub shed_at_sessions: Option<u64>,
    /// Between the starts of two calls [default: 1000].
    #[serde(default = "default_stagger_ms")]
    pub stagger_ms: u64,
}

fn default_stagger_ms() -> u64 {
    1000
}

/// Moments of a call a blackout can be tied to. Client-side `connect`; the others are the
/// server's observations (`voq_server::Server::events`), so they lag the client by one-way
/// delay where the client acts first. The datagram reference model maps `turn` to its first
/// datagram sent and has no `commit` or `reply`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// The client starts connecting.
    Connect,
    /// The server holds the first frame of the user's turn.
    Turn,
    /// The server holds the whole turn (committed).
    Commit,
    /// The server starts the agent's response (its first audio leaves at once).
    Reply,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Turn => "turn",
            Self::Commit => "commit",
            Self::Reply => "reply",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dir {
    Up,
    Down,
    #[default]
    Both,
}

/// The server's agent: `echo`, `file:PATH` (replayed at `speed` × real time, cut to `max_ms`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSpec {
    pub spec: String,
    #[serde(default = "four")]
    pub speed: f64,
    #[serde(default)]
    pub max_ms: Option<u64>,
}

fn four() -> f64 {
    4.0
}

/// What the client does.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallPattern {
    /// WAV file of the user's turn (path, or a file name of `testdata/audio`).
    pub input: String,
    /// Use only the first `input_ms` of it.
    #[serde(default)]
    pub input_ms: Option<u64>,
    #[serde(default = "pcm16", with = "codec_serde")]
    pub codec: Codec,
    /// Capture speed: 1 = a microphone, 0 = all at once.
    #[serde(default = "one_f")]
    pub input_speed: f64,
    #[serde(default)]
    pub interrupt_after_ms: Option<u64>,
    /// The lead the client asks for: ms, 0 = just in time, or `"unbounded"`. Absent: the
    /// server's default (2000).
    #[serde(default)]
    pub send_ahead_ms: Option<SendAheadMs>,
    /// Make a second call from the same client (TLS resumption, 0-RTT) and measure it too.
    #[serde(default)]
    pub resume: bool,
    /// Calls in a row, each from a new client (a new first flight: with a balancer, a new
    /// hash). The metrics are the last call's, plus `calls_bit_exact` over all of them.
    #[serde(default = "one")]
    pub calls: u32,
    /// The client moves to a new socket (a new address: NAT rebinding, a network change) this
    /// long after a phase of the call.
    #[serde(default)]
    pub rebind: Option<PhaseTrigger>,
    #[serde(default = "timeout")]
    pub timeout_s: u64,
}

fn pcm16() -> Codec {
    Codec::Pcm16
}

fn one_f() -> f64 {
    1.0
}

fn timeout() -> u64 {
    120
}

mod codec_serde {
    use serde::{Deserialize, Deserializer, Serializer};
    use voq_proto::Codec;

    pub fn serialize<S: Serializer>(c: &Codec, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(c.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Codec, D::Error> {
        let name = String::deserialize(d)?;
        match name.as_str() {
            "pcm16" => Ok(Codec::Pcm16),
            "opus" => Ok(Codec::Opus),
            other => Err(serde::de::Error::custom(format!(
                "unknown codec \"{other}\" (use pcm16 or opus)"
            ))),
        }
    }
}

/// `send_ahead_ms`: a number of ms or `"unbounded"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SendAheadMs {
    Ms(u64),
    Named(Unbounded),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unbounded {
    Unbounded,
}

impl SendAheadMs {
    /// As `CallOptions::send_ahead_ms` wants it (`Lead::from_ms`: 0 just in time, `u64::MAX`
    /// unbounded).
    pub fn as_ms(self) -> u64 {
        match self {
            Self::Ms(ms) => ms,
            Self::Named(Unbounded::Unbounded) => u64::MAX,
        }
    }
}

/// The datagram reference model's settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reference {
    #[serde(default = "sixty")]
    pub jitter_buffer_ms: f64,
}

fn sixty() -> f64 {
    60.0
}

/// A claim: `metric` (its `stat` over the runs) compared with a threshold.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    pub metric: String,
    /// `max` (default for `le`/`eq`: every run must meet it), `min` (default for `ge`), `p50`,
    /// or `value` (the scenario's scalar metric).
    #[serde(default)]
    pub stat: Option<String>,
    #[serde(default)]
    pub le: Option<f64>,
    #[serde(default)]
    pub ge: Option<f64>,
    #[serde(default)]
    pub eq: Option<f64>,
    /// Where the target comes from (shown beside it).
    #[serde(default)]
    pub claim: String,
}

/// Loads `dir/*.toml` (or the built-in copies when `dir` is `None`). With `quick`, each
/// scenario's `quick` table is merged over it.
pub fn load(dir: Option<&Path>, quick: bool) -> anyhow::Result<Vec<Figure>> {
    let mut files: Vec<(String, String)> = Vec::new();
    match dir {
        Some(dir) => {
            let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
                .with_context(|| format!("cannot read scenario directory {}", dir.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "toml"))
                .collect();
            paths.sort();
            for p in paths {
                let text = std::fs::read_to_string(&p)
                    .with_context(|| format!("cannot read {}", p.display()))?;
                let stem = p
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                files.push((stem, text));
            }
        }
        None => {
            for (id, text) in BUILTIN {
                files.push(((*id).to_string(), (*text).to_string()));
            }
        }
    }
    // Files in the order of the report: the built-in order first, then the rest by name.
    files.sort_by_key(|(id, _)| {
        BUILTIN
            .iter()
            .position(|(b, _)| b == id)
            .unwrap_or(usize::MAX)
    });
    let mut figures = Vec::new();
    for (id, text) in files {
        let figure = parse_figure(&id, &text, quick).with_context(|| format!("bench/{id}.toml"))?;
        figures.push(figure);
    }
    let mut names = BTreeMap::new();
    for f in &figures {
        for s in &f.scenarios {
            if let Some(other) = names.insert(s.name.clone(), f.id.clone()) {
                anyhow::bail!(
                    "scenario \"{}\" is defined twice ({other}.toml and {}.toml)",
                    s.name,
                    f.id
                );
            }
        }
    }
    for f in &figures {
        for s in &f.scenarios {
            if let Some(b) = &s.baseline {
                anyhow::ensure!(
                    names.contains_key(b),
                    "scenario \"{}\": baseline \"{b}\" does not exist",
                    s.name
                );
            }
        }
    }
    Ok(figures)
}

/// Parses one scenario file.
pub fn parse_figure(id: &str, text: &str, quick: bool) -> anyhow::Result<Figure> {
    let file: FigureFile = toml::from_str(text)?;
    let mut scenarios = Vec::new();
    for table in file.scenario {
        let mut merged = file.defaults.clone();
        merge(&mut merged, &table);
        let quick_table = merged.remove("quick");
        if quick && let Some(toml::Value::Table(q)) = quick_table {
            merge(&mut merged, &q);
        }
        let name = merged
            .get("name")
            .and_then(|v| v.as_str())
            .unwrap_or("?")
            .to_string();
        let s: ScenarioToml = toml::Value::Table(merged)
            .try_into()
            .with_context(|| format!("scenario \"{name}\""))?;
        let mut network =
            network(&s.network).with_context(|| format!("scenario \"{name}\": network"))?;
        if s.carrier != Carrier::Quic && !network.netns {
            // The UDP proxy cannot carry TCP, and WebTransport is compared on the same path.
            network.netns = true;
            network.description += " (netns)";
        }
        anyhow::ensure!(s.repeats >= 1, "scenario \"{name}\": repeats must be >= 1");
        anyhow::ensure!(s.call.calls >= 1, "scenario \"{name}\": calls must be >= 1");
        anyhow::ensure!(
            s.call.rebind.is_none() || s.carrier != Carrier::Ws,
            "scenario \"{name}\": rebind needs QUIC or WebTransport (a TCP connection cannot \
             move to a new address)"
        );
        anyhow::ensure!(
            s.lose_server.is_none() || (s.balancer.is_some() && s.carrier == Carrier::Quic),
            "scenario \"{name}\": lose_server needs a balancer (QUIC through the UDP proxy): the \
             call resumes on another of its servers (WebTransport and WebSocket are measured by \
             crates/voq/tests/resume.rs)"
        );
        if let Some(b) = s.balancer {
            anyhow::ensure!(
                (2..=15).contains(&b.servers),
                "scenario \"{name}\": balancer.servers must be 2 to 15"
            );
            anyhow::ensure!(
                !network.netns && s.reference.is_none() && !s.call.resume,
                "scenario \"{name}\": a balancer runs on the UDP proxy path only, without the \
                 reference model or resume"
            );
        }
        if let Some(f) = s.fleet {
            network.description =
                format!("anycast fleet: {} servers, BIRD, ECMP (netns)", f.servers);
            anyhow::ensure!(
                (2..=9).contains(&f.servers),
                "scenario \"{name}\": fleet.servers must be 2 to 9"
            );
            anyhow::ensure!(
                s.balancer.is_none()
                    && s.reference.is_none()
                    && !s.call.resume
                    && s.call.rebind.is_none()
                    && s.carrier == Carrier::Quic,
                "scenario \"{name}\": a fleet runs QUIC calls without a balancer, the reference \
                 model, resume or rebind"
            );
        }
        for t in &s.targets {
            anyhow::ensure!(
                [t.le, t.ge, t.eq].iter().filter(|x| x.is_some()).count() == 1,
                "scenario \"{name}\": target {} needs exactly one of le, ge, eq",
                t.metric
            );
        }
        scenarios.push(Scenario {
            label: s.label.unwrap_or_else(|| s.name.clone()),
            name: s.name,
            description: s.description,
            carrier: s.carrier,
            network,
            agent: s.agent,
            call: s.call,
            repeats: s.repeats,
            seed: s.seed,
            reference: s.reference,
            balancer: s.balancer,
            fleet: s.fleet,
            baseline: s.baseline,
            lose_server: s.lose_server,
            targets: s.targets,
        });
    }
    Ok(Figure {
        id: id.to_string(),
        title: file.figure,
        description: file.description,
        columns: file.columns,
        plots: file.plots,
        scenarios,
    })
}

/// `over` into `base`, tables merged key by key, everything else replaced.
fn merge(base: &mut toml::Table, over: &toml::Table) {
    for (k, v) in over {
        match (base.get_mut(k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

fn network(table: &toml::Table) -> anyhow::Result<Network> {
    let mut both = table.clone();
    let preset = match both.remove("preset") {
        Some(v) => {
            let name = v.as_str().context("preset must be a name")?;
            Some(
                name.parse::<Preset>()
                    .map_err(|e| anyhow::anyhow!("preset: {e}"))?,
            )
        }
        None => None,
    };
    let rtt = both
        .remove("rtt_ms")
        .map(|v| {
            v.as_float()
                .or_else(|| v.as_integer().map(|i| i as f64))
                .context("rtt_ms must be a number")
        })
        .transpose()?;
    let netns = match both.remove("netns") {
        Some(v) => v.as_bool().context("netns must be true or false")?,
        None => false,
    };
    let competing_tcp = match both.remove("competing_tcp") {
        Some(v) => v.as_bool().context("competing_tcp must be true or false")?,
        None => false,
    };
    anyhow::ensure!(
        netns || !competing_tcp,
        "competing_tcp needs netns = true (the TCP flow crosses the namespace link)"
    );
    let up_over = take_table(&mut both, "up")?;
    let down_over = take_table(&mut both, "down")?;
    let blackouts: Vec<PhaseBlackout> = match both.remove("blackouts") {
        Some(v) => v.try_into().context("blackouts")?,
        None => Vec::new(),
    };
    for b in &blackouts {
        anyhow::ensure!(
            b.duration_ms > 0.0 && b.at_ms >= 0.0,
            "blackouts: duration_ms must be > 0 and at_ms >= 0"
        );
    }
    let mut base = preset.map(Preset::config).unwrap_or_default();
    if let Some(rtt) = rtt {
        anyhow::ensure!(rtt >= 0.0, "rtt_ms must be >= 0");
        base.delay_ms = rtt / 2.0;
    }
    let up = link(&base, &both, &up_over).context("up")?;
    let down = link(&base, &both, &down_over).context("down")?;
    up.validate().context("up")?;
    down.validate().context("down")?;
    let mut description = describe(preset, &up, &down, &blackouts);
    if netns {
        description += " (netns)";
    }
    if competing_tcp {
        description += " + TCP bulk";
    }
    Ok(Network {
        up,
        down,
        blackouts,
        netns,
        competing_tcp,
        description,
    })
}

fn take_table(t: &mut toml::Table, key: &str) -> anyhow::Result<toml::Table> {
    match t.remove(key) {
        None => Ok(toml::Table::new()),
        Some(toml::Value::Table(t)) => Ok(t),
        Some(_) => anyhow::bail!("{key} must be a table of link settings"),
    }
}

fn link(base: &LinkConfig, both: &toml::Table, one: &toml::Table) -> anyhow::Result<LinkConfig> {
    let mut t = match toml::Value::try_from(base)? {
        toml::Value::Table(t) => t,
        _ => anyhow::bail!("a link configuration is a table"),
    };
    merge(&mut t, both);
    merge(&mut t, one);
    Ok(toml::Value::Table(t).try_into()?)
}

fn describe(
    preset: Option<Preset>,
    up: &LinkConfig,
    down: &LinkConfig,
    blackouts: &[PhaseBlackout],
) -> String {
    let mut parts = Vec::new();
    if let Some(p) = preset {
        parts.push(format!("preset {}", p.name()));
    }
    parts.push(format!("RTT {} ms", fmt_num(up.delay_ms + down.delay_ms)));
    let one = |l: &LinkConfig| {
        let mut v = Vec::new();
        if l.loss > 0.0 {
            v.push(format!("{} % loss", fmt_num(l.loss * 100.0)));
        }
        if let Some(b) = l.burst {
            v.push(format!(
                "GE bursts p={} r={} (≈{} %, mean {} packets)",
                fmt_num(b.p),
                fmt_num(b.r),
                fmt_num((b.loss_rate() * 1000.0).round() / 10.0),
                fmt_num((b.mean_burst() * 10.0).round() / 10.0)
            ));
        }
        if l.jitter_ms > 0.0 {
            v.push(format!("±{} ms jitter", fmt_num(l.jitter_ms)));
        }
        if let Some(r) = l.rate_kbps {
            v.push(format!("{r} kbps"));
        }
        v.join(", ")
    };
    let (u, d) = (one(up), one(down));
    if u == d {
        if !u.is_empty() {
            parts.push(format!("{u} each way"));
        }
    } else {
        if !u.is_empty() {
            parts.push(format!("up: {u}"));
        }
        if !d.is_empty() {
            parts.push(format!("down: {d}"));
        }
    }
    for b in blackouts {
        parts.push(format!(
            "{} s blackout ({}) at {}+{} ms",
            fmt_num(b.duration_ms / 1000.0),
            match b.direction {
                Dir::Up => "up",
                Dir::Down => "down",
                Dir::Both => "both ways",
            },
            b.phase.name(),
            fmt_num(b.at_ms)
        ));
    }
    parts.join("; ")
}

/// `1`, `0.5`, `12.25`: no trailing zeros.
pub fn fmt_num(x: f64) -> String {
    let s = format!("{x:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_files_parse_in_both_modes() -> anyhow::Result<()> {
        for quick in [false, true] {
            let figures = load(None, quick)?;
            assert_eq!(figures.len(), BUILTIN.len());
            assert!(figures.iter().all(|f| !f.scenarios.is_empty()));
        }
        Ok(())
    }

    #[test]
    fn network_shorthands_merge_in_order() -> anyhow::Result<()> {
        let text = r#"
            figure = "t"
            [defaults]
            agent = { spec = "echo" }
            call = { input = "x.wav" }
            network = { rtt_ms = 60, loss = 0.1 }
            quick = { repeats = 1 }
            [[scenario]]
            name = "a"
            repeats = 5
            network = { up = { loss = 0.2 }, blackouts = [{ phase = "reply", at_ms = 500, duration_ms = 1000 }] }
            call = { send_ahead_ms = "unbounded" }
        "#;
        let f = parse_figure("t", text, false)?;
        let s = &f.scenarios[0];
        assert_eq!(s.repeats, 5);
        assert_eq!(s.network.up.delay_ms, 30.0);
        assert_eq!(s.network.down.delay_ms, 30.0);
        assert_eq!(s.network.up.loss, 0.2);
        assert_eq!(s.network.down.loss, 0.1);
        assert_eq!(s.network.blackouts[0].phase, Phase::Reply);
        assert_eq!(s.call.send_ahead_ms.map(SendAheadMs::as_ms), Some(u64::MAX));
        assert_eq!(s.call.input, "x.wav");
        assert_eq!(parse_figure("t", text, true)?.scenarios[0].repeats, 1);
        Ok(())
    }

    #[test]
    fn unknown_fields_are_errors() {
        let text = r#"
            figure = "t"
            [[scenario]]
            name = "a"
            agent = { spec = "echo" }
            call = { input = "x.wav" }
            network = { los = 0.1 }
        "#;
        assert!(parse_figure("t", text, false).is_err());
    }
}
