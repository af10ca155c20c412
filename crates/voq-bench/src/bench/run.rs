//! One repeat of a scenario on loopback: an in-process [`Server`], a [`NetemProxy`] in front of
//! it, a [`Client`] calling through the proxy; blackouts fired when the server observes the
//! call phase they are tied to; per-run metrics from the client's report, the client's own
//! instants and the server's observation hook, all on the same monotonic clock.
//!
//! With `network.netns` (and always for the WebTransport and WebSocket carriers) the server runs
//! in one network namespace and the client in another, joined by a voq-netns link that impairs
//! UDP and TCP alike; the process and its clock are the same, so every metric means the same.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{broadcast, watch};
use voq_client::{CallOptions, CallOutcome, Client, Target, Trust};
use voq_proto::Codec;
use voq_server::{Server, SessionEvent, SessionEventKind, Settings};

use super::scenario::{Dir, LoseHow, Phase, PhaseBlackout, Scenario};
use crate::proxy::{Direction, NetemProxy, ProxyStats};

/// The audio a scenario needs, loaded once.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The user's turn, 24 kHz mono.
    pub prompt: Vec<i16>,
    /// `Settings::agent` (a `file:` spec points at a file on disk).
    pub agent: String,
    /// Where the server records turns, when the runs keep their audio
    /// ([`RunResult::audio`]).
    pub record: Option<std::path::PathBuf>,
}

/// The audio of one run, for reports that show it (kept only when asked: see
/// [`super::execute`]).
#[derive(Debug, Clone, Default)]
pub struct RunAudio {
    /// The user's turn as the client sent it.
    pub prompt: Vec<i16>,
    /// The turn as the server holds it (its recording), when it could be read.
    pub held: Option<Vec<i16>>,
    /// The reply as received, placed by timestamp (what the agent said).
    pub received: Vec<i16>,
    /// What the device rendered from the first reply sample on, silence where it stalled.
    pub played: Vec<i16>,
    /// Where the user barged in, ms into the reply.
    pub barge_in_ms: Option<u64>,
}

/// One repeat's results.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunResult {
    pub repeat: u32,
    pub seed: u64,
    /// Why the run (or one of its calls) failed; its metrics then count as failures.
    pub error: Option<String>,
    pub metrics: BTreeMap<String, f64>,
    /// The blackouts as fired: ms after the call started connecting.
    pub blackouts_fired: Vec<Fired>,
    /// Packets sent, delivered and dropped by the emulator (reliable path).
    pub netem: Option<ProxyStats>,
    /// The datagram reference model's emulator counters.
    pub reference_netem: Option<ProxyStats>,
    pub wall_s: f64,
    /// The run's audio, when kept.
    #[serde(skip)]
    pub audio: Option<RunAudio>,
}

/// A blackout that fired.
#[derive(Debug, Clone, Serialize)]
pub struct Fired {
    pub phase: Phase,
    /// When the phase began, ms after the call (or the reference sender) started connecting.
    pub phase_ms: f64,
    /// When the blackout began, ms after the call started connecting.
    pub at_ms: f64,
    pub duration_ms: f64,
}

/// Runs one repeat.
pub async fn run_once(s: &Scenario, p: &Prepared, repeat: u32) -> RunResult {
    let began = Instant::now();
    let seed = s.seed.wrapping_add(u64::from(repeat));
    let mut result = RunResult {
        repeat,
        seed,
        ..Default::default()
    };
    let reliable = if let Some(spec) = s.fleet {
        reliable_fleet(s, p, spec, &mut result).await
    } else if s.network.netns {
        reliable_netns(s, p, seed, &mut result).await
    } else {
        reliable(s, p, seed, &mut result).await
    };
    if let Err(e) = reliable {
        result.error = Some(format!("{e:#}"));
        // A call that did not finish delivered nothing that anyone confirmed.
        result
            .metrics
            .insert("prompt_delivered_fraction".into(), 0.0);
        if bit_exact_applies(s) {
            result.metrics.insert("prompt_bit_exact".into(), 0.0);
        }
    }
    if let Some(r) = &s.reference {
        match super::reference::run(s, r, p, seed).await {
            Ok(out) => {
                let m = &mut result.metrics;
                m.insert("reference_sent".into(), out.sent as f64);
                m.insert("reference_on_time".into(), out.on_time as f64);
                m.insert("reference_late".into(), out.late as f64);
                m.insert(
                    "reference_delivered_fraction".into(),
                    out.on_time as f64 / out.sent.max(1) as f64,
                );
                m.insert(
                    "reference_late_fraction".into(),
                    out.late as f64 / out.sent.max(1) as f64,
                );
                result.blackouts_fired.extend(out.fired);
                result.reference_netem = Some(out.netem);
            }
            Err(e) => {
                let msg = format!("reference model: {e:#}");
                result.error = Some(match result.error.take() {
                    Some(prev) => format!("{prev}; {msg}"),
                    None => msg,
                });
            }
        }
    }
    result.wall_s = began.elapsed().as_secs_f64();
    result
}

/// The echo agent in pcm16 must return the prompt sample for sample.
fn bit_exact_applies(s: &Scenario) -> bool {
    s.agent.spec == "echo" && s.call.codec == Codec::Pcm16
}

/// The servers of a run: one, or several behind a real `voq lb`.
struct Fleet {
    servers: Vec<Server>,
    balancer: Option<voq_lb::Balancer>,
}

impl Fleet {
    async fn start(s: &Scenario, p: &Prepared) -> anyhow::Result<Self> {
        // Servers that may lose a call to each other share a session store and token keys.
        let resumption = s.lose_server.map(|_| {
            std::sync::Arc::new(voq_server::resume::Resumption {
                keys: voq_server::resume::ResumeKeys::from_secret(b"voq bench: one fleet's secret"),
                store: std::sync::Arc::new(voq_server::resume::MemoryStore::default()),
                window: Duration::from_secs(60),
            })
        });
        let settings = |quic_lb: Option<voq_server::QuicLbSettings>| Settings {
            resumption: resumption.clone(),
            agent_speed: s.agent.speed,
            drain_timeout: Duration::from_secs(1),
            record: p.record.clone(),
            tunnel: if quic_lb.is_some() {
                voq_server::Tunnel::Learn
            } else {
                voq_server::Tunnel::Off
            },
            quic_lb,
            ..Settings::loopback(&p.agent)
        };
        let Some(spec) = s.balancer else {
            return Ok(Self {
                servers: vec![Server::start(settings(None)).await?],
                balancer: None,
            });
        };
        let mut servers = Vec::new();
        let mut backends = Vec::new();
        for id in 1..=spec.servers {
            let quic_lb = voq_server::QuicLbSettings {
                config_id: 0,
                server_id: vec![id],
                nonce_len: 8,
                key: None,
                cid_len: None,
                self_encoded_len: None,
            };
            let server = Server::start(settings(Some(quic_lb))).await?;
            let sid = voq_quic_lb::ServerId::from_slice(&[id])
                .ok_or_else(|| anyhow::anyhow!("server id {id}"))?;
            backends.push(voq_lb::Backend::new(sid, server.local_addr()));
            servers.push(server);
        }
        let configs = vec![voq_quic_lb::Config::new(0, 1, 8)?];
        let config =
            voq_lb::BalancerConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), configs, backends);
        let balancer = voq_lb::Balancer::start(config).await?;
        Ok(Self {
            servers,
            balancer: Some(balancer),
        })
    }

    /// Where the emulated path ends: the balancer's VIP, or the server.
    fn front(&self) -> SocketAddr {
        match &self.balancer {
            Some(b) => b.local_addr(),
            None => self.servers[0].local_addr(),
        }
    }

    /// How the client trusts the servers: the one server's certificate, or (behind the
    /// balancer, where each server has its own development certificate) any on loopback.
    fn trust(&self) -> anyhow::Result<Trust> {
        match self.balancer {
            Some(_) => Ok(Trust::Insecure),
            None => Trust::cert_hash(&self.servers[0].cert_sha256()),
        }
    }

    /// Loses the server holding a call (the one with a session open): crashed in place, or
    /// drained (taken out of the fleet, shutting down on its own).
    fn lose_holder(&mut self, how: LoseHow) {
        let holder = self
            .servers
            .iter()
            .position(|s| s.stats().sessions_started.total() > s.stats().sessions_ended.get());
        let Some(i) = holder else {
            tracing::warn!("bench: no server holds a call to lose");
            return;
        };
        match how {
            LoseHow::Kill => self.servers[i].crash(),
            LoseHow::Drain => {
                let server = self.servers.remove(i);
                tokio::spawn(server.shutdown());
            }
        }
    }

    /// The servers first: their sessions close through the balancer, which must still be
    /// there to carry the goodbyes.
    async fn shutdown(self) {
        for s in self.servers {
            s.shutdown().await;
        }
        if let Some(b) = self.balancer {
            b.shutdown().await;
        }
    }
}

async fn reliable(
    s: &Scenario,
    p: &Prepared,
    seed: u64,
    result: &mut RunResult,
) -> anyhow::Result<()> {
    let mut fleet = Fleet::start(s, p).await?;
    let (events_tx, events) = watch::channel(Vec::<SessionEvent>::new());
    let events_tx = std::sync::Arc::new(events_tx);
    let collectors: Vec<_> = fleet
        .servers
        .iter()
        .map(|server| tokio::spawn(collect(server.events(), events_tx.clone())))
        .collect();
    // The proxy and the client outlive the servers' shutdown, so the client's close reaches
    // them and the session ends at once (rather than at the drain timeout).
    let mut keep = None;
    let mut recorded: Option<(String, String)> = None;
    let outcome = async {
        let proxy = NetemProxy::start(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            fleet.front(),
            s.network.up.clone(),
            s.network.down.clone(),
            seed,
        )
        .await?;
        let target = Target {
            addr: proxy.local_addr(),
            server_name: "localhost".into(),
            tls: true,
        };
        let opts = call_options(s, p);
        let blackout = |dir, d| proxy.blackout(dir, d);
        let mut exact = 0u32;
        let mut client = Client::new(&fleet.trust()?, SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let mut first = None;
        for call in 0..s.call.calls {
            if call > 0 {
                // A new client: a new first flight (and, behind the balancer, a new hash).
                client = Client::new(&fleet.trust()?, SocketAddr::from(([127, 0, 0, 1], 0)))?;
            }
            let (lose_tx, mut lose_rx) = tokio::sync::mpsc::unbounded_channel();
            let lose = move || {
                let _ = lose_tx.send(());
            };
            let observing =
                observed_call(&client, &target, opts.clone(), &blackout, &lose, s, &events);
            tokio::pin!(observing);
            let observed = loop {
                tokio::select! {
                    observed = &mut observing => break observed,
                    Some(()) = lose_rx.recv() => {
                        if let Some(l) = s.lose_server {
                            fleet.lose_holder(l.how);
                        }
                    }
                }
            };
            if let Ok(out) = &observed.outcome {
                exact += u32::from(out.reply_received == p.prompt);
            }
            if call + 1 < s.call.calls {
                // Only the last call is measured in full; an earlier failure still fails the run.
                observed.outcome?;
            } else {
                first = Some(observed);
            }
        }
        let first = first.ok_or_else(|| anyhow::anyhow!("no call was made"))?;
        let second = if s.call.resume {
            // The same client again: it holds a session ticket now, so it resumes with 0-RTT.
            Some(observed_call(&client, &target, opts, &blackout, &|| {}, s, &events).await)
        } else {
            None
        };
        if let (true, Ok(out)) = (p.record.is_some(), &first.outcome) {
            // Which recording is this call's turn: its session (the server's events) and item.
            let session = call_events(&events.borrow(), first.started)
                .first()
                .map(|e| e.session_id.clone());
            let item = out.turns.first().map(|t| t.item_id.clone());
            recorded = session.zip(item);
            result.audio = Some(RunAudio {
                prompt: p.prompt.clone(),
                held: None,
                received: out.reply_received.clone(),
                played: out.reply_played.clone(),
                barge_in_ms: out.report.interrupt.as_ref().map(|i| i.played_ms),
            });
        }
        calls_metrics(s, p, first, second, &events, result)?;
        if bit_exact_applies(s) && s.call.calls > 1 {
            result.metrics.insert(
                "calls_bit_exact".into(),
                f64::from(exact) / f64::from(s.call.calls),
            );
        }
        if fleet.balancer.is_some() {
            let sessions: Vec<u64> = fleet
                .servers
                .iter()
                .map(|s| s.stats().sessions_started.total())
                .collect();
            let m = &mut result.metrics;
            m.insert(
                "servers_used".into(),
                sessions.iter().filter(|&&n| n > 0).count() as f64,
            );
            m.insert("sessions_total".into(), sessions.iter().sum::<u64>() as f64);
        }
        result.netem = Some(proxy.stats());
        keep = Some((proxy, client));
        anyhow::Ok(())
    }
    .await;
    fleet.shutdown().await;
    drop(keep);
    for c in collectors {
        c.abort();
    }
    if let (Some(dir), Some(audio), Some((session, item))) =
        (&p.record, result.audio.as_mut(), &recorded)
    {
        audio.held = recorded_turn(dir, session, item);
    }
    outcome
}

/// The user turn the server recorded for `session` / `item_id` under `dir`, read after the
/// servers' shutdown (which waits for their recordings).
fn recorded_turn(dir: &std::path::Path, session: &str, item_id: &str) -> Option<Vec<i16>> {
    let path = voq_server::Recorder::new(dir)
        .ok()?
        .user_turn_path(session, item_id);
    let bytes = std::fs::read(path).ok()?;
    voq_audio::read_wav(&bytes).ok()?.to_mono_24k().ok()
}

fn call_options(s: &Scenario, p: &Prepared) -> CallOptions {
    CallOptions {
        codec: s.call.codec,
        turns: vec![p.prompt.clone()],
        input_speed: s.call.input_speed,
        interrupt_after: s.call.interrupt_after_ms.map(Duration::from_millis),
        send_ahead_ms: s.call.send_ahead_ms.map(|l| l.as_ms()),
        timeout: Duration::from_secs(s.call.timeout_s),
        transport: s.carrier.transport(),
        // The scenarios' outages are the measurement: a call rides them out however long.
        dead_after: None,
        ..Default::default()
    }
}

/// The metrics of a run's first call and, when the scenario resumes, its second (0-RTT) call.
fn calls_metrics(
    s: &Scenario,
    p: &Prepared,
    first: Observed,
    second: Option<Observed>,
    events: &watch::Receiver<Vec<SessionEvent>>,
    result: &mut RunResult,
) -> anyhow::Result<()> {
    result.blackouts_fired.extend(first.fired.iter().cloned());
    if s.call.rebind.is_some() {
        result
            .metrics
            .insert("rebinds".into(), first.rebinds as f64);
    }
    let first_outcome = first.outcome?;
    if s.lose_server.is_some() {
        // The resume: from the client giving the lost connection up to the session being back
        // on a new one (audio can flow again), and whether the session itself came back.
        let resume = first_outcome.report.resumes.first();
        let m = &mut result.metrics;
        m.insert(
            "resumed".into(),
            f64::from(u8::from(resume.is_some_and(|r| r.resumed))),
        );
        if let Some(r) = resume {
            m.insert("resume_gap_ms".into(), r.gap_ms);
            m.insert("resume_lost_at_ms".into(), r.lost_at_ms);
        }
    }
    let first_events = call_events(&events.borrow(), first.started);
    call_metrics(s, p, &first_outcome, &first_events, &mut result.metrics);
    if let Some(second) = second {
        let out = second.outcome?;
        let evs = call_events(&events.borrow(), second.started);
        let rtt = rtt_ms(s, &out);
        let m = &mut result.metrics;
        m.insert(
            "zero_rtt_used".into(),
            f64::from(u8::from(out.report.zero_rtt)),
        );
        m.insert("zero_rtt_setup_rtts".into(), out.report.setup_ms / rtt);
        if let (Some(start), Some(first)) = (out.started, first_of(&evs, Phase::Turn)) {
            m.insert(
                "zero_rtt_first_prompt_byte_rtts".into(),
                ms_between(start, first) / rtt,
            );
        }
        let delivered =
            out.report.prompt.frames_confirmed as f64 / out.report.prompt.frames_sent.max(1) as f64;
        m.insert("zero_rtt_prompt_delivered_fraction".into(), delivered);
    }
    Ok(())
}

/// [`reliable`] on an anycast fleet in network namespaces (`voq_netns::fleet`): BIRD on every
/// server and the router, ECMP over the anycast address, each server on a thread in its own
/// namespace; the calls from the client namespace, staggered. Needs root and BIRD.
async fn reliable_fleet(
    s: &Scenario,
    p: &Prepared,
    spec: super::scenario::FleetSpec,
    result: &mut RunResult,
) -> anyhow::Result<()> {
    use std::sync::Arc;
    use voq_netns::fleet::{ANYCAST, Fleet, FleetConfig};
    const PORT: u16 = 4433;
    Fleet::available().map_err(|e| {
        anyhow::anyhow!(
            "scenario \"{}\" builds an anycast fleet (network namespaces and BIRD), which is \
             unavailable here: {e}",
            s.name
        )
    })?;
    let servers = usize::from(spec.servers);
    let fleet = Arc::new(
        tokio::task::spawn_blocking(move || Fleet::create(FleetConfig::new(servers))).await??,
    );
    let unicast: Vec<SocketAddr> = (0..servers)
        .map(|i| SocketAddr::from((fleet.server_addr(i), PORT)))
        .collect();
    // The rig's own fleet secret (tokens, resets, tickets shared by its servers; never a
    // production one).
    let secret = voq_server::fleet::FleetKeys::new(b"voq bench fleet: a rig-only secret")?;
    let mut running = Vec::new();
    let (events_tx, events) = watch::channel(Vec::<SessionEvent>::new());
    let events_tx = Arc::new(events_tx);
    let mut collectors = Vec::new();
    for i in 0..servers {
        let mut thresholds = voq_server::announce::Thresholds::for_capacity(1000);
        if let Some(n) = spec.shed_at_sessions {
            thresholds.shed_sessions = n.max(1);
            thresholds.resume_sessions = 0;
        }
        let settings = Settings {
            listen: unicast[i],
            web: false,
            agent: p.agent.clone(),
            agent_speed: s.agent.speed,
            record: p.record.clone(),
            quic_lb: Some(voq_server::QuicLbSettings {
                config_id: 0,
                server_id: vec![i as u8 + 1],
                nonce_len: 8,
                key: None,
                cid_len: None,
                self_encoded_len: None,
            }),
            anycast: Some(voq_server::AnycastSettings {
                addr: SocketAddr::from((ANYCAST, PORT)),
                peers: (0..servers)
                    .filter(|&j| j != i)
                    .map(|j| (vec![j as u8 + 1], unicast[j]))
                    .collect(),
            }),
            announce: Some(voq_server::announce::AnnounceSettings {
                bird_socket: fleet.bird_socket(i),
                protocol: voq_netns::fleet::ANNOUNCEMENT.into(),
                thresholds,
                withdraw_grace: Duration::ZERO,
            }),
            fleet: Some(secret.clone()),
            drain_timeout: Duration::from_secs(2),
            ..Default::default()
        };
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = fleet.server(i).spawn_async(move || async move {
            match Server::start(settings).await {
                Ok(server) => {
                    let _ = ready_tx.send(Ok((server.events(), server.stats().clone())));
                    let _ = stop_rx.await;
                    server.shutdown().await;
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            }
        })?;
        running.push((stop_tx, thread));
        let (server_events, stats) = ready_rx.await??;
        collectors.push((
            tokio::spawn(collect(server_events, events_tx.clone())),
            stats,
        ));
    }
    let outcome = async {
        let target = Target {
            addr: SocketAddr::from((ANYCAST, PORT)),
            server_name: "localhost".into(),
            tls: true,
        };
        let opts = call_options(s, p);
        let (calls, stagger) = (s.call.calls, Duration::from_millis(spec.stagger_ms));
        let client_fleet = fleet.clone();
        let observed = tokio::task::spawn_blocking(move || {
            client_fleet.client().block_on(move || async move {
                let tasks: Vec<_> = (0..calls)
                    .map(|k| {
                        let (opts, target) = (opts.clone(), target.clone());
                        tokio::spawn(async move {
                            tokio::time::sleep(stagger * k).await;
                            let client =
                                Client::new(&Trust::Insecure, SocketAddr::from(([0, 0, 0, 0], 0)))?;
                            let started = Instant::now();
                            let outcome = client.call(&target, opts).await;
                            client.shutdown(Duration::from_secs(1)).await;
                            anyhow::Ok((started, outcome))
                        })
                    })
                    .collect();
                let mut out = Vec::new();
                for t in tasks {
                    out.push(t.await?);
                }
                anyhow::Ok(out)
            })
        })
        .await???;
        let mut exact = 0u32;
        let mut moved = 0u32;
        let mut first = None;
        for call in observed {
            let (started, outcome) = call?;
            let out = outcome?;
            exact += u32::from(out.reply_received == p.prompt);
            moved += u32::from(out.report.preferred_address_used);
            first.get_or_insert((started, out));
        }
        let (started, out) = first.ok_or_else(|| anyhow::anyhow!("no call was made"))?;
        let first = Observed {
            started,
            outcome: Ok(out),
            fired: Vec::new(),
            rebinds: 0,
        };
        calls_metrics(s, p, first, None, &events, result)?;
        let m = &mut result.metrics;
        let calls = f64::from(s.call.calls);
        if bit_exact_applies(s) {
            m.insert("calls_bit_exact".into(), f64::from(exact) / calls);
        }
        m.insert(
            "preferred_address_fraction".into(),
            f64::from(moved) / calls,
        );
        let sessions: Vec<u64> = collectors
            .iter()
            .map(|(_, stats)| stats.sessions_started.total())
            .collect();
        m.insert(
            "servers_used".into(),
            sessions.iter().filter(|&&n| n > 0).count() as f64,
        );
        m.insert("sessions_total".into(), sessions.iter().sum::<u64>() as f64);
        let withdrawals: u64 = collectors
            .iter()
            .map(|(_, stats)| {
                stats
                    .announce
                    .withdrawals
                    .load(std::sync::atomic::Ordering::Relaxed)
            })
            .sum();
        m.insert("withdrawals".into(), withdrawals as f64);
        anyhow::Ok(())
    }
    .await;
    for (stop, thread) in running {
        let _ = stop.send(());
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
    for (collector, _) in collectors {
        collector.abort();
    }
    // Deleting the namespaces waits on processes: off the runtime.
    let _ = tokio::task::spawn_blocking(move || drop(fleet)).await;
    outcome
}

/// [`reliable`] through network namespaces: the server in b, the client in a, a voq-netns link
/// between them. Needs root; says why when it cannot run.
async fn reliable_netns(
    s: &Scenario,
    p: &Prepared,
    seed: u64,
    result: &mut RunResult,
) -> anyhow::Result<()> {
    use std::sync::Arc;
    use voq_netns::{B_ADDR, NetnsConfig, NetnsLink, Side};
    NetnsLink::available().map_err(|e| {
        anyhow::anyhow!(
            "scenario \"{}\" runs through network namespaces ({} carrier or netns = true), \
             which are unavailable here: {e}",
            s.name,
            s.carrier.name()
        )
    })?;
    let config = NetnsConfig::new(s.network.up.clone(), s.network.down.clone()).with_seed(seed);
    let link = Arc::new(tokio::task::spawn_blocking(move || NetnsLink::create(config)).await??);
    let settings = Settings {
        listen: SocketAddr::from((B_ADDR, 4443)),
        agent: p.agent.clone(),
        agent_speed: s.agent.speed,
        drain_timeout: Duration::from_secs(1),
        ..Default::default()
    };
    // The server lives on a runtime of its own on a thread in namespace b.
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server_thread = link.ns(Side::B).spawn_async(move || async move {
        match Server::start(settings).await {
            Ok(server) => {
                let _ = ready_tx.send(Ok((server.cert_sha256(), server.events())));
                let _ = stop_rx.await;
                server.shutdown().await;
            }
            Err(e) => {
                let _ = ready_tx.send(Err(e));
            }
        }
    })?;
    let bulk = if s.network.competing_tcp {
        Some(TcpBulk::start(&link)?)
    } else {
        None
    };
    let down_before = link.stats(voq_netns::Direction::BToA);
    let call_started = std::time::Instant::now();
    let outcome = async {
        let (hash, server_events) = ready_rx.await??;
        let (events_tx, events) = watch::channel(Vec::<SessionEvent>::new());
        let collector = tokio::spawn(collect(server_events, std::sync::Arc::new(events_tx)));
        let target = Target {
            addr: SocketAddr::from((B_ADDR, 4443)),
            server_name: "localhost".into(),
            tls: true,
        };
        let opts = call_options(s, p);
        let (scenario, events_a, link_a) = (s.clone(), events.clone(), link.clone());
        let resume = s.call.resume && s.carrier == super::scenario::Carrier::Quic;
        // The client on a runtime on a thread in namespace a (its UDP and TCP sockets are
        // made there); blocking, so off the bench's runtime.
        let calls = tokio::task::spawn_blocking(move || {
            let ns_link = link_a.clone();
            ns_link.ns(Side::A).block_on(move || async move {
                let client = Client::new(
                    &Trust::cert_hash(&hash)?,
                    SocketAddr::from(([0, 0, 0, 0], 0)),
                )?;
                let blackout = |dir, d| netns_blackout(&link_a, dir, d);
                let first = observed_call(
                    &client,
                    &target,
                    opts.clone(),
                    &blackout,
                    &|| {},
                    &scenario,
                    &events_a,
                )
                .await;
                let second = if resume {
                    Some(
                        observed_call(
                            &client,
                            &target,
                            opts,
                            &blackout,
                            &|| {},
                            &scenario,
                            &events_a,
                        )
                        .await,
                    )
                } else {
                    None
                };
                // The closes leave before this runtime ends (else the server drains until its
                // timeout).
                client.shutdown(Duration::from_secs(1)).await;
                anyhow::Ok((first, second))
            })
        })
        .await??;
        let (first, second) = calls?;
        calls_metrics(s, p, first, second, &events, result)?;
        collector.abort();
        anyhow::Ok(())
    }
    .await;
    if let Some(bulk) = bulk {
        // Shares over the call: the TCP flow's payload, and the rest of what the link
        // delivered server → client (voq's packets; TCP's headers, ~3.6 % of a full segment,
        // are taken off the TCP side's bytes first).
        let secs = call_started.elapsed().as_secs_f64();
        let tcp_bytes = bulk.stop();
        let down = link.stats(voq_netns::Direction::BToA);
        let delivered = down.delivered_bytes - down_before.delivered_bytes;
        let tcp_wire = tcp_bytes as f64 * (1.0 + 52.0 / 1448.0);
        let voq_bytes = (delivered as f64 - tcp_wire).max(0.0);
        result.metrics.insert(
            "tcp_bulk_kbps".into(),
            tcp_bytes as f64 * 8.0 / secs / 1000.0,
        );
        result
            .metrics
            .insert("voq_down_kbps".into(), voq_bytes * 8.0 / secs / 1000.0);
        if let Some(rate) = s.network.down.rate_kbps {
            result.metrics.insert(
                "tcp_bulk_share".into(),
                tcp_bytes as f64 * 8.0 / secs / 1000.0 / rate as f64,
            );
        }
    }
    let _ = stop_tx.send(());
    let joined = tokio::task::spawn_blocking(move || server_thread.join()).await;
    if !matches!(joined, Ok(Ok(Ok(())))) {
        tracing::warn!("bench: the namespace server thread did not end cleanly");
    }
    outcome
}

/// A TCP bulk transfer from the server's namespace to the client's, as fast as TCP (the
/// kernel's CUBIC) lets it, for as long as it runs: the competing flow of a congestion-safety
/// scenario.
struct TcpBulk {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    received: std::sync::Arc<std::sync::atomic::AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl TcpBulk {
    const PORT: u16 = 5201;

    fn start(link: &voq_netns::NetnsLink) -> anyhow::Result<Self> {
        use std::io::{Read, Write};
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        use voq_netns::{A_ADDR, Side};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let received = std::sync::Arc::new(AtomicU64::new(0));
        let listener = link
            .ns(Side::A)
            .enter(|| std::net::TcpListener::bind((A_ADDR, Self::PORT)))??;
        let (sink_stop, sink_received) = (stop.clone(), received.clone());
        let sink = std::thread::spawn(move || {
            let Ok((mut conn, _)) = listener.accept() else {
                return;
            };
            let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
            let mut buf = vec![0u8; 64 * 1024];
            while !sink_stop.load(Ordering::Relaxed) {
                match conn.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        sink_received.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                    Err(_) => return,
                }
            }
        });
        let send_stop = stop.clone();
        let sender = link.ns(Side::B).spawn_thread(move || {
            let mut conn = std::net::TcpStream::connect((A_ADDR, Self::PORT))?;
            conn.set_write_timeout(Some(Duration::from_millis(200)))?;
            let chunk = vec![0u8; 64 * 1024];
            while !send_stop.load(Ordering::Relaxed) {
                match conn.write(&chunk) {
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })?;
        let sender = std::thread::spawn(move || {
            let _ = sender.join();
        });
        Ok(Self {
            stop,
            received,
            threads: vec![sink, sender],
        })
    }

    /// Stops the transfer; the payload bytes the client's side received.
    fn stop(self) -> u64 {
        use std::sync::atomic::Ordering;
        let bytes = self.received.load(Ordering::Relaxed);
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        bytes
    }
}

fn netns_blackout(link: &voq_netns::NetnsLink, dir: Direction, duration: Duration) {
    use voq_netns::Direction as D;
    let dirs: &[D] = match dir {
        Direction::Up => &[D::AToB],
        Direction::Down => &[D::BToA],
        Direction::Both => &D::BOTH,
    };
    let start = std::time::Instant::now();
    for d in dirs {
        link.blackout_at(*d, start, duration);
    }
}

/// Copies the server's events into a watch channel, for the triggers and the metrics.
async fn collect(
    mut rx: broadcast::Receiver<SessionEvent>,
    tx: std::sync::Arc<watch::Sender<Vec<SessionEvent>>>,
) {
    loop {
        match rx.recv().await {
            Ok(e) => tx.send_modify(|v| v.push(e)),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!("bench: missed {n} server events");
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

struct Observed {
    started: Instant,
    outcome: anyhow::Result<CallOutcome>,
    fired: Vec<Fired>,
    /// Network changes made during the call.
    rebinds: usize,
}

/// One call, with the scenario's blackouts fired at their phase (as the server observes it).
async fn observed_call(
    client: &Client,
    target: &Target,
    opts: CallOptions,
    blackout: &dyn Fn(Direction, Duration),
    lose_server: &dyn Fn(),
    s: &Scenario,
    events: &watch::Receiver<Vec<SessionEvent>>,
) -> Observed {
    let started = Instant::now();
    let mut fired = Vec::new();
    let mut rebound = Vec::new();
    let outcome = {
        let call = client.call(target, opts);
        let phase_at = |phase, evs: &[SessionEvent]| {
            if phase == Phase::Connect {
                return Some(started);
            }
            first_of(&call_events(evs, started), phase)
        };
        let triggers = fire_blackouts(
            &s.network.blackouts,
            started,
            events.clone(),
            phase_at,
            blackout,
            &mut fired,
        );
        // A network change: the client's endpoint moves to a new socket (a new address).
        let rebinds: Vec<PhaseBlackout> = s
            .call
            .rebind
            .iter()
            .map(|r| PhaseBlackout {
                phase: r.phase,
                at_ms: r.at_ms,
                duration_ms: 0.0,
                direction: Dir::Both,
            })
            .collect();
        // A new port on the same local IP (a NAT rebinding): loopback on the proxy path, the
        // namespace's address through a netns link (this runs on the client's thread there).
        let local_ip = client
            .endpoint()
            .local_addr()
            .map_or(std::net::IpAddr::from([127, 0, 0, 1]), |a| a.ip());
        let rebind = |_, _| match std::net::UdpSocket::bind((local_ip, 0)) {
            Ok(socket) => {
                if let Err(e) = client.endpoint().rebind(socket) {
                    tracing::warn!("bench: rebind failed: {e}");
                }
            }
            Err(e) => tracing::warn!("bench: no socket to rebind to: {e}"),
        };
        let rebind_triggers = fire_blackouts(
            &rebinds,
            started,
            events.clone(),
            phase_at,
            rebind,
            &mut rebound,
        );
        // The server holding the call is lost (the scenario's `lose_server`).
        let losses: Vec<PhaseBlackout> = s
            .lose_server
            .iter()
            .map(|l| PhaseBlackout {
                phase: l.phase,
                at_ms: l.at_ms,
                duration_ms: 0.0,
                direction: Dir::Both,
            })
            .collect();
        let mut lost = Vec::new();
        let lose_triggers = fire_blackouts(
            &losses,
            started,
            events.clone(),
            phase_at,
            |_, _| lose_server(),
            &mut lost,
        );
        tokio::select! {
            r = call => r,
            () = triggers => unreachable!("the triggers never complete"),
            () = rebind_triggers => unreachable!("the triggers never complete"),
            () = lose_triggers => unreachable!("the triggers never complete"),
        }
    };
    // The collector runs on another task: wait until it holds the call's last event (its
    // response's end), for at most a moment (a call that failed may never have one).
    let mut seen = events.clone();
    let ended = |evs: &Vec<SessionEvent>| {
        call_events(evs, started)
            .iter()
            .any(|e| matches!(e.kind, SessionEventKind::ResponseEnded { .. }))
    };
    let _ = tokio::time::timeout(Duration::from_millis(500), seen.wait_for(ended)).await;
    Observed {
        started,
        outcome,
        fired,
        rebinds: rebound.len(),
    }
}

/// Fires each blackout `at_ms` after its phase began (as `phase_at` finds it in the events),
/// then waits forever.
pub(crate) async fn fire_blackouts<E: Clone>(
    blackouts: &[PhaseBlackout],
    started: Instant,
    mut events: watch::Receiver<Vec<E>>,
    phase_at: impl Fn(Phase, &[E]) -> Option<Instant>,
    blackout: impl Fn(Direction, Duration),
    fired: &mut Vec<Fired>,
) {
    let mut pending: Vec<&PhaseBlackout> = blackouts.iter().collect();
    let mut watching = true;
    loop {
        let now = Instant::now();
        let evs = events.borrow_and_update().clone();
        let mut next: Option<Instant> = None;
        pending.retain(|b| {
            let Some(t0) = phase_at(b.phase, &evs) else {
                return true;
            };
            let due = t0 + Duration::from_secs_f64(b.at_ms / 1000.0);
            if due <= now {
                let duration = Duration::from_secs_f64(b.duration_ms / 1000.0);
                blackout(direction(b.direction), duration);
                fired.push(Fired {
                    phase: b.phase,
                    phase_ms: ms_between(started, t0),
                    at_ms: ms_between(started, Instant::now()),
                    duration_ms: b.duration_ms,
                });
                false
            } else {
                next = Some(next.map_or(due, |n| n.min(due)));
                true
            }
        });
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = events.changed(), if watching => watching = r.is_ok(),
            () = sleep => {}
        }
    }
}

fn direction(d: Dir) -> Direction {
    match d {
        Dir::Up => Direction::Up,
        Dir::Down => Direction::Down,
        Dir::Both => Direction::Both,
    }
}

/// The events of the call that started at `started`: those of the first session observed
/// after it (one call at a time per server).
fn call_events(all: &[SessionEvent], started: Instant) -> Vec<SessionEvent> {
    let Some(session) = all
        .iter()
        .find(|e| e.at >= started)
        .map(|e| e.session_id.clone())
    else {
        return Vec::new();
    };
    all.iter()
        .filter(|e| e.session_id == session)
        .cloned()
        .collect()
}

fn first_of(evs: &[SessionEvent], phase: Phase) -> Option<Instant> {
    evs.iter()
        .find(|e| {
            matches!(
                (&e.kind, phase),
                (SessionEventKind::TurnFirstAudio { .. }, Phase::Turn)
                    | (SessionEventKind::TurnCommitted { .. }, Phase::Commit)
                    | (SessionEventKind::ResponseStarted { .. }, Phase::Reply)
            )
        })
        .map(|e| e.at)
}

/// The emulated RTT (the base delays of both directions), or the measured one on a link
/// without delay.
fn rtt_ms(s: &Scenario, out: &CallOutcome) -> f64 {
    let emulated = s.network.rtt_ms();
    if emulated > 0.0 {
        emulated
    } else {
        out.report.rtt_ms.max(1e-3)
    }
}

pub(crate) fn ms_between(a: Instant, b: Instant) -> f64 {
    if b >= a {
        b.duration_since(a).as_secs_f64() * 1000.0
    } else {
        -(a.duration_since(b).as_secs_f64() * 1000.0)
    }
}

/// The per-run metrics of one call.
fn call_metrics(
    s: &Scenario,
    p: &Prepared,
    out: &CallOutcome,
    evs: &[SessionEvent],
    m: &mut BTreeMap<String, f64>,
) {
    let r = &out.report;
    let rtt = rtt_ms(s, out);
    let mut put = |k: &str, v: f64| {
        m.insert(k.to_string(), v);
    };
    put("rtt_emulated_ms", rtt);
    put("rtt_measured_ms", r.rtt_ms);
    put("setup_ms", r.setup_ms);
    put("setup_rtts", r.setup_ms / rtt);
    if let (Some(start), Some(first)) = (out.started, first_of(evs, Phase::Turn)) {
        put("first_prompt_byte_ms", ms_between(start, first));
        put("first_prompt_byte_rtts", ms_between(start, first) / rtt);
    }
    put("prompt_frames_sent", r.prompt.frames_sent as f64);
    put("prompt_frames_confirmed", r.prompt.frames_confirmed as f64);
    put(
        "prompt_delivered_fraction",
        r.prompt.frames_confirmed as f64 / r.prompt.frames_sent.max(1) as f64,
    );
    if bit_exact_applies(s) {
        put(
            "prompt_bit_exact",
            f64::from(u8::from(out.reply_received == p.prompt)),
        );
    }
    // Turn end at the client → the server holds the whole turn (committed).
    if let (Some(end), Some(commit)) = (
        out.turns.first().and_then(|t| t.ended_at),
        first_of(evs, Phase::Commit),
    ) {
        put("prompt_hold_ms", ms_between(end, commit));
    }
    if let Some(c) = r.prompt.confirm_ms {
        put("prompt_confirm_ms", c);
    }
    // The longest waits between two frames: at the server for the prompt, at the client for
    // the reply (interruptions by loss, outages, network changes).
    if let Some(gap) = evs.iter().find_map(|e| match &e.kind {
        SessionEventKind::TurnCommitted { max_frame_gap, .. } => Some(*max_frame_gap),
        _ => None,
    }) {
        put("prompt_max_gap_ms", gap.as_secs_f64() * 1000.0);
    }
    if let Some(resp) = out.responses.first() {
        put(
            "reply_max_gap_ms",
            resp.max_frame_gap.as_secs_f64() * 1000.0,
        );
    }
    put("reply_underruns", f64::from(r.reply.underruns));
    put("reply_stall_ms", r.reply.stall_ms as f64);
    put("reply_played_ms", r.reply.duration_ms as f64);
    put("reply_received_ms", r.reply.received_ms as f64);
    if let Some(f) = r.reply.first_audio_ms {
        put("reply_first_audio_ms", f);
    }
    if let Some(i) = &r.interrupt {
        if let Some(v) = i.silence_ms {
            put("bargein_silence_ms", v);
        }
        put("bargein_played_ms", i.played_ms as f64);
        put("unplayed_bytes", i.unplayed_bytes as f64);
        if let Some(t) = i.truncated_audio_end_ms {
            put("truncation_error_ms", (t as f64 - i.played_ms as f64).abs());
        }
        if let Some(v) = i.server_stop_ms {
            put("bargein_server_stop_est_ms", v);
        }
        if let Some(c) = i.confirm_ms {
            put("bargein_confirm_ms", c);
        }
        // Interrupt at the client → the server ended the response (reset the stream, stopped
        // the agent), from the observation hook.
        let interrupted = out
            .responses
            .iter()
            .find_map(|resp| resp.interrupt.as_ref().and_then(|i| i.at));
        let stopped = evs.iter().find_map(|e| match &e.kind {
            SessionEventKind::ResponseEnded { status, .. }
                if *status == voq_proto::event::ResponseStatus::Cancelled =>
            {
                Some(e.at)
            }
            _ => None,
        });
        if let (Some(a), Some(b)) = (interrupted, stopped) {
            put("bargein_server_stop_ms", ms_between(a, b));
        }
    }
}
