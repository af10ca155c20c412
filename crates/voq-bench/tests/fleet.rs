//! An anycast fleet on one machine (issue #11): network namespaces, a router running BIRD 2
//! with an ECMP route to the anycast address, three `voq serve`-equivalent servers each
//! announcing it through its own BIRD, and clients in their own namespace.
//!
//! Root only (network namespaces, BIRD); without them the tests skip and say why, and with
//! `VOQ_NETNS_REQUIRED=1` (CI) they fail instead.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use voq_client::{CallOptions, CallOutcome, Client, ClientOptions, Rebind, Target, Trust};
use voq_netns::fleet::{ANYCAST, CLIENT_ADDR2, Fleet, FleetConfig};
use voq_server::announce::{AnnounceSettings, Thresholds};
use voq_server::{AnycastSettings, QuicLbSettings, Server, Settings, Stats};

const PORT: u16 = 4433;

fn available() -> bool {
    match Fleet::available() {
        Ok(()) => true,
        Err(why) => {
            assert!(
                std::env::var_os("VOQ_NETNS_REQUIRED").is_none(),
                "VOQ_NETNS_REQUIRED=1 but the fleet cannot be built: {why}"
            );
            eprintln!("SKIPPED: the fleet needs root, network namespaces and BIRD 2: {why}");
            false
        }
    }
}

fn prompt(ms: usize) -> Vec<i16> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/audio/prompt-carwash-24k.wav");
    let pcm = voq_audio::read_wav_file(path)
        .unwrap()
        .to_mono_24k()
        .unwrap();
    pcm[..(ms * 24).min(pcm.len())].to_vec()
}

/// Waits until `done` holds, checking every 5 ms; fails after `within` with `what`. The servers
/// run on threads of their own, so their counters are read, not awaited.
fn wait_until(within: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + within;
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A server running on a thread of its own inside its namespace.
struct NsServer {
    stats: Arc<Stats>,
    unicast: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<voq_netns::Result<()>>>,
}

impl NsServer {
    /// Stops accepting, drains (withdrawing the route first) and waits for the thread.
    fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for NsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The fleet and its three servers (ids 01, 02, 03).
struct Rig {
    servers: Vec<NsServer>,
    fleet: Fleet,
}

impl Drop for Rig {
    fn drop(&mut self) {
        // Servers first (their BIRD sockets go with the fleet).
        for s in &mut self.servers {
            s.stop();
        }
    }
}

impl Rig {
    /// `thresholds(i)` sets server i's load-shedding thresholds.
    fn start(thresholds: impl Fn(usize) -> Thresholds) -> Self {
        let fleet = Fleet::create(FleetConfig::new(3)).unwrap();
        let unicast: Vec<SocketAddr> = (0..3)
            .map(|i| SocketAddr::from((fleet.server_addr(i), PORT)))
            .collect();
        let mut servers = Vec::new();
        for i in 0..3 {
            let peers = (0..3)
                .filter(|&j| j != i)
                .map(|j| (vec![j as u8 + 1], unicast[j]))
                .collect();
            let settings = Settings {
                listen: unicast[i],
                web: false,
                agent: "echo".into(),
                quic_lb: Some(QuicLbSettings {
                    config_id: 0,
                    server_id: vec![i as u8 + 1],
                    nonce_len: 8,
                    key: Some([0x42; 16]),
                    cid_len: None,
                    self_encoded_len: None,
                }),
                anycast: Some(AnycastSettings {
                    addr: SocketAddr::from((ANYCAST, PORT)),
                    peers,
                }),
                announce: Some(AnnounceSettings {
                    bird_socket: fleet.bird_socket(i),
                    protocol: "anycast".into(),
                    thresholds: thresholds(i),
                    withdraw_grace: Duration::ZERO,
                }),
                fleet: Some(voq_server::fleet::FleetKeys::parse(&"f1".repeat(32)).unwrap()),
                drain_timeout: Duration::from_secs(10),
                ..Default::default()
            };
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let thread = fleet
                .server(i)
                .spawn_async(move || async move {
                    let server = Server::start(settings).await.unwrap();
                    let _ = ready_tx.send((server.stats().clone(), server.local_addr()));
                    let _ = stopped.await;
                    server.shutdown().await;
                })
                .unwrap();
            let (stats, addr) = ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
            servers.push(NsServer {
                stats,
                unicast: addr,
                stop: Some(stop),
                thread: Some(thread),
            });
        }
        Self { servers, fleet }
    }

    /// Room for plenty of calls on every server.
    fn roomy(_: usize) -> Thresholds {
        Thresholds::for_capacity(1000)
    }

    fn sessions_active(&self, i: usize) -> u64 {
        self.servers[i].stats.sessions_active()
    }

    /// Which server a call reached, by the id in its report.
    fn index_of(outcome: &CallOutcome) -> usize {
        let id = outcome.report.server_id.as_deref().unwrap();
        usize::from_str_radix(id, 16).unwrap() - 1
    }

    /// Runs `calls` in the client namespace, each from a fresh client (its own port, so its own
    /// ECMP hash), all at once; returns their outcomes in order.
    fn calls(&self, calls: Vec<(CallOptions, ClientOptions)>) -> Vec<anyhow::Result<CallOutcome>> {
        self.fleet
            .client()
            .block_on(move || async move {
                let tasks: Vec<_> = calls
                    .into_iter()
                    .map(|(opts, options)| {
                        tokio::spawn(async move {
                            let client = Client::with_options(
                                &Trust::Insecure,
                                "0.0.0.0:0".parse().unwrap(),
                                &options,
                            )?;
                            let outcome = client.call(&anycast_target(), opts).await;
                            client.shutdown(Duration::from_secs(1)).await;
                            outcome
                        })
                    })
                    .collect();
                let mut out = Vec::new();
                for t in tasks {
                    out.push(t.await.unwrap());
                }
                out
            })
            .unwrap()
    }
}

fn anycast_target() -> Target {
    Target {
        addr: SocketAddr::from((ANYCAST, PORT)),
        server_name: "localhost".into(),
        tls: true,
    }
}

fn speak(pcm: &[i16]) -> CallOptions {
    CallOptions {
        turns: vec![pcm.to_vec()],
        input_speed: 1.0,
        timeout: Duration::from_secs(60),
        ..Default::default()
    }
}

/// Every frame the client sent was confirmed, and the echo came back bit-exact.
fn assert_exact(outcome: &CallOutcome, pcm: &[i16]) {
    let p = &outcome.report.prompt;
    assert_eq!(p.frames_confirmed, p.frames_sent, "{:?}", outcome.report);
    assert_eq!(outcome.reply_received, pcm, "{:?}", outcome.report);
}

#[test]
fn thirty_calls_spread_over_the_fleet_and_each_moves_to_its_servers_unicast_address() {
    if !available() {
        return;
    }
    let rig = Rig::start(Rig::roomy);
    let pcm = prompt(600);
    let outcomes = rig.calls(
        (0..30)
            .map(|_| (speak(&pcm), ClientOptions::default()))
            .collect(),
    );
    let mut per_server: HashMap<usize, usize> = HashMap::new();
    for outcome in outcomes {
        let outcome = outcome.unwrap();
        let i = Rig::index_of(&outcome);
        *per_server.entry(i).or_default() += 1;
        assert!(
            outcome.report.preferred_address_used,
            "{:?}",
            outcome.report
        );
        assert_eq!(
            outcome.report.server_address,
            rig.servers[i].unicast.to_string(),
            "the call moved to its own server's unicast address"
        );
        assert_exact(&outcome, &pcm);
    }
    assert!(
        per_server.len() >= 2,
        "ECMP spread 30 calls over one server only: {per_server:?}"
    );
    for (i, s) in rig.servers.iter().enumerate() {
        let a = s.stats.anycast.as_ref().unwrap().stats();
        if per_server.contains_key(&i) {
            assert!(a.unicast_received > 0, "server {i}: {a:?}");
        }
    }
}

#[test]
fn a_full_server_withdraws_takes_no_new_calls_and_its_calls_finish_exact() {
    if !available() {
        return;
    }
    // Server 0 sheds at 2 sessions and takes calls again at 0; the others have room.
    let rig = Rig::start(|i| match i {
        0 => Thresholds {
            shed_sessions: 2,
            resume_sessions: 0,
            ..Thresholds::for_capacity(1000)
        },
        _ => Rig::roomy(i),
    });
    let all = rig.fleet.server_addrs();
    let long = prompt(4000);
    // Long calls in the background, one at a time (each from its own port, so its own ECMP
    // hash), until server 0 holds two: where the hash sends each is chance.
    let client_ns = rig.fleet.client();
    let started = |rig: &Rig| -> u64 {
        (0..3)
            .map(|i| rig.servers[i].stats.sessions_started.total())
            .sum()
    };
    let mut background = Vec::new();
    while rig.sessions_active(0) < 2 {
        assert!(
            background.len() < 40,
            "40 calls and server 0 never held two"
        );
        let opts = speak(&long);
        background.push(
            client_ns
                .spawn_async(move || async move {
                    let client = Client::new(&Trust::Insecure, "0.0.0.0:0".parse().unwrap())?;
                    let outcome = client.call(&anycast_target(), opts).await;
                    client.shutdown(Duration::from_secs(1)).await;
                    outcome
                })
                .unwrap(),
        );
        wait_until(Duration::from_secs(5), "the call has a session", || {
            started(&rig) >= background.len() as u64
        });
    }
    rig.fleet
        .wait_next_hops(&all[1..], Duration::from_secs(10))
        .unwrap_or_else(|e| {
            panic!(
                "server 0 did not withdraw (sessions {}): {e}",
                rig.sessions_active(0)
            )
        });
    assert!(rig.sessions_active(0) >= 2);
    // While it is out, new calls land elsewhere.
    let short = prompt(300);
    let during = rig.calls(
        (0..8)
            .map(|_| (speak(&short), ClientOptions::default()))
            .collect(),
    );
    for outcome in during {
        let outcome = outcome.unwrap();
        assert_ne!(Rig::index_of(&outcome), 0, "a withdrawn server took a call");
        assert_exact(&outcome, &short);
    }
    // Its own calls go on, on unicast, and end bit-exact.
    let mut on_zero = 0;
    for call in background {
        let outcome = call.join().unwrap().unwrap().unwrap();
        on_zero += usize::from(Rig::index_of(&outcome) == 0);
        assert_exact(&outcome, &long);
    }
    assert!(on_zero >= 2, "server 0 held {on_zero} of the long calls");
    // Empty again: it announces, and the router takes it back.
    rig.fleet
        .wait_next_hops(&all, Duration::from_secs(10))
        .unwrap();
    let announce = &rig.servers[0].stats.announce;
    use std::sync::atomic::Ordering::Relaxed;
    assert!(announce.withdrawals.load(Relaxed) >= 1);
    assert!(
        announce.announcements.load(Relaxed) >= 2,
        "at start and after"
    );
    assert_eq!(announce.errors.load(Relaxed), 0);
}

#[test]
fn a_client_that_changes_its_address_mid_turn_and_mid_reply_loses_nothing() {
    if !available() {
        return;
    }
    let rig = Rig::start(Rig::roomy);
    let pcm = prompt(3000);
    let to_second = |after_ms| CallOptions {
        rebind: Some(Rebind {
            after: Duration::from_millis(after_ms),
            ip: Some(IpAddr::V4(CLIENT_ADDR2)),
        }),
        ..speak(&pcm)
    };
    // 1.5 s in: mid-turn. 4 s in: the 3 s turn is over and its echo is playing.
    let outcomes = rig.calls(vec![
        (to_second(1500), ClientOptions::default()),
        (to_second(4000), ClientOptions::default()),
        (
            to_second(1500),
            ClientOptions {
                use_preferred_address: false,
                ..Default::default()
            },
        ),
    ]);
    for outcome in outcomes {
        let outcome = outcome.unwrap();
        assert!(
            outcome.report.rebound_at_ms.is_some(),
            "{:?}",
            outcome.report
        );
        assert!(outcome.report.migrations >= 1);
        assert_exact(&outcome, &pcm);
        assert_eq!(outcome.report.reply.underruns, 0, "{:?}", outcome.report);
    }
}

#[test]
fn a_client_that_never_migrates_is_forwarded_when_its_server_leaves_the_ecmp_set() {
    if !available() {
        return;
    }
    let rig = Rig::start(Rig::roomy);
    let all = rig.fleet.server_addrs();
    let pcm = prompt(4000);
    // A browser-like client: stays on the anycast address for the whole call.
    let call = rig
        .fleet
        .client()
        .spawn_async({
            let pcm = pcm.clone();
            move || async move {
                let client = Client::with_options(
                    &Trust::Insecure,
                    "0.0.0.0:0".parse().unwrap(),
                    &ClientOptions {
                        use_preferred_address: false,
                        ..Default::default()
                    },
                )?;
                let outcome = client.call(&anycast_target(), speak(&pcm)).await;
                client.shutdown(Duration::from_secs(1)).await;
                outcome
            }
        })
        .unwrap();
    // Its server is the one with a session.
    let home_of = |rig: &Rig| (0..3).find(|&i| rig.sessions_active(i) == 1);
    wait_until(Duration::from_secs(10), "the call started", || {
        home_of(&rig).is_some()
    });
    let home = home_of(&rig).unwrap();
    // Take that server out of the router's ECMP set (its BIRD withdraws): the flow now hashes
    // to another server, which forwards it by connection id.
    let out = std::process::Command::new("birdc")
        .arg("-s")
        .arg(rig.fleet.bird_socket(home))
        .args(["disable", "anycast"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let rest: Vec<_> = all
        .iter()
        .copied()
        .enumerate()
        .filter(|(i, _)| *i != home)
        .map(|(_, a)| a)
        .collect();
    rig.fleet
        .wait_next_hops(&rest, Duration::from_secs(10))
        .unwrap();
    let outcome = call.join().unwrap().unwrap().unwrap();
    assert_eq!(Rig::index_of(&outcome), home);
    assert!(!outcome.report.preferred_address_used);
    assert_exact(&outcome, &pcm);
    let forwarded = || -> u64 {
        (0..3)
            .filter(|&i| i != home)
            .map(|i| {
                rig.servers[i]
                    .stats
                    .anycast
                    .as_ref()
                    .unwrap()
                    .stats()
                    .forwarded_out
            })
            .sum()
    };
    let received = || {
        rig.servers[home]
            .stats
            .anycast
            .as_ref()
            .unwrap()
            .stats()
            .forwarded_in
    };
    assert!(forwarded() > 0, "no server forwarded the call's datagrams");
    // The call's last datagrams (its close, the final ACKs) may still be crossing between the
    // servers when the call returns: every forwarded datagram arrives, within a deadline.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while received() != forwarded() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(received(), forwarded());
}
