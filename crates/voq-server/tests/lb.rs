//! voq servers behind `voq lb`, end to end on loopback: real servers (QUIC-LB CIDs, tunnel
//! sockets learning the balancer's address), the real balancer, real clients.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use voq_client::{CallOptions, Client, Target, Trust};
use voq_lb::{Backend, Balancer, BalancerConfig, HealthConfig};
use voq_quic_lb::ServerId;
use voq_server::{Server, SessionEventKind, Settings, Tunnel, wait_for_event};

mod common;
use common::{lb_settings, prompt};

/// Three servers (ids 1, 2, 3) with the echo agent, each behind the balancer's tunnel.
struct Cluster {
    servers: Vec<Server>,
    backends: Vec<Backend>,
    configs: Vec<voq_quic_lb::Config>,
}

impl Cluster {
    async fn start(agent: &str) -> Self {
        Self::start_with(agent, None).await
    }

    /// With `fleet`, the servers share its keys (session tickets among them).
    async fn start_with(agent: &str, fleet: Option<voq_server::fleet::FleetKeys>) -> Self {
        let mut servers = Vec::new();
        let mut backends = Vec::new();
        for id in 1..=3u8 {
            let settings = Settings {
                listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                agent: agent.into(),
                quic_lb: Some(lb_settings(id)),
                tunnel: Tunnel::Learn,
                drain_timeout: Duration::from_secs(2),
                fleet: fleet.clone(),
                ..Default::default()
            };
            let server = Server::start(settings).await.unwrap();
            backends.push(Backend::new(
                ServerId::from_slice(&[id]).unwrap(),
                server.local_addr(),
            ));
            servers.push(server);
        }
        let configs = vec![lb_settings(1).config().unwrap()];
        Self {
            servers,
            backends,
            configs,
        }
    }

    async fn balancer(&self, vip: SocketAddr, health: bool) -> Balancer {
        let mut config = BalancerConfig::new(vip, self.configs.clone(), self.backends.clone());
        config.health = HealthConfig {
            enabled: health,
            interval: Duration::from_millis(100),
            ..Default::default()
        };
        Balancer::start(config).await.unwrap()
    }

    /// A feed of every server's session events, subscribed now.
    fn events(&self) -> Vec<tokio::sync::broadcast::Receiver<voq_server::SessionEvent>> {
        self.servers.iter().map(Server::events).collect()
    }

    /// Sessions each server has taken so far.
    fn sessions(&self) -> Vec<u64> {
        self.servers
            .iter()
            .map(|s| s.stats().sessions_started.total())
            .collect()
    }

    async fn shutdown(self) {
        for s in self.servers {
            s.shutdown().await;
        }
    }
}

/// Waits until one of the servers sees an event of the kind `wanted` (the call has reached that
/// moment), and says which server.
async fn wait_on_any(
    feeds: &mut [tokio::sync::broadcast::Receiver<voq_server::SessionEvent>],
    wanted: fn(&SessionEventKind) -> bool,
) -> usize {
    let waits = feeds
        .iter_mut()
        .map(|rx| Box::pin(wait_for_event(rx, Duration::from_secs(10), wanted)));
    let (event, index, _) = futures_util::future::select_all(waits).await;
    assert!(
        event.is_some(),
        "no server saw the moment the test waits for"
    );
    index
}

fn client() -> Client {
    Client::new(&Trust::Insecure, "127.0.0.1:0".parse().unwrap()).unwrap()
}

fn target(vip: SocketAddr) -> Target {
    Target {
        addr: vip,
        server_name: "localhost".into(),
        tls: true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_calls_spread_over_all_backends_and_each_is_exact() {
    let cluster = Cluster::start("echo").await;
    let balancer = cluster.balancer("127.0.0.1:0".parse().unwrap(), true).await;
    let vip = balancer.local_addr();
    let short = prompt(4_800);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..60 {
        let short = short.clone();
        tasks.spawn(async move {
            // A new client (and so a new random Initial DCID) per call, six at a time.
            let opts = CallOptions {
                turns: vec![short.clone()],
                input_speed: 0.0,
                ..Default::default()
            };
            let out = client().call(&target(vip), opts).await.unwrap();
            assert_eq!(out.reply_received, short, "call {i}: the echo is exact");
        });
        if tasks.len() >= 6 {
            tasks.join_next().await.unwrap().unwrap();
        }
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let sessions = cluster.sessions();
    assert_eq!(sessions.iter().sum::<u64>(), 60, "{sessions:?}");
    assert!(
        sessions.iter().all(|&n| n >= 8),
        "every backend takes a share: {sessions:?}"
    );
    let stats = balancer.stats();
    assert_eq!(stats.dropped_total(), 0, "nothing dropped: {stats:?}");
    balancer.shutdown().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_balancer_restart_mid_call_loses_nothing() {
    let cluster = Cluster::start("echo").await;
    let balancer = cluster.balancer("127.0.0.1:0".parse().unwrap(), true).await;
    let vip = balancer.local_addr();
    let whole = prompt(usize::MAX); // 2.8 s, captured in real time
    let expected = whole.clone();
    let mut feeds = cluster.events();
    let call = tokio::spawn(async move {
        let opts = CallOptions {
            turns: vec![whole],
            input_speed: 1.0,
            ..Default::default()
        };
        client().call(&target(vip), opts).await
    });
    // Mid-call: a server holds the first frame of the 2.8 s prompt, spoken in real time.
    wait_on_any(&mut feeds, |k| {
        matches!(k, SessionEventKind::TurnFirstAudio { .. })
    })
    .await;
    balancer.shutdown().await;
    // The outage itself (the VIP dark for 300 ms while the process restarts), not a wait.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A new balancer process on the same VIP, knowing nothing of the call.
    let balancer = cluster.balancer(vip, true).await;
    let out = call.await.unwrap().unwrap();
    assert_eq!(
        out.report.prompt.frames_confirmed,
        out.report.prompt.frames_sent
    );
    assert_eq!(
        out.reply_received, expected,
        "the whole prompt came back, bit-exact"
    );
    assert_eq!(
        cluster.sessions().iter().sum::<u64>(),
        1,
        "one session, never re-established"
    );
    balancer.shutdown().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_marked_down_takes_no_new_calls_while_its_call_finishes() {
    let reply =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/audio/reply-carwash-24k.wav");
    let cluster = Cluster::start(&format!("file:{}", reply.display())).await;
    // Health probes off: the test marks the backend down by hand (as failing probes would).
    let balancer = cluster
        .balancer("127.0.0.1:0".parse().unwrap(), false)
        .await;
    let vip = balancer.local_addr();
    let mut feeds = cluster.events();
    let long = tokio::spawn(async move {
        let opts = CallOptions {
            turns: vec![prompt(4_800)],
            input_speed: 0.0,
            interrupt_after: Some(Duration::from_secs(3)),
            ..Default::default()
        };
        client().call(&target(vip), opts).await
    });
    // The long call's reply is under way on one server.
    let busy = wait_on_any(&mut feeds, |k| {
        matches!(k, SessionEventKind::ResponseStarted { .. })
    })
    .await;
    assert_eq!(cluster.sessions()[busy], 1);
    let sid = ServerId::from_slice(&[busy as u8 + 1]).unwrap();
    assert!(balancer.table().set_up(&sid, false));
    let before = cluster.sessions();
    for _ in 0..12 {
        let opts = CallOptions {
            turns: vec![prompt(2_400)],
            input_speed: 0.0,
            interrupt_after: Some(Duration::from_millis(50)),
            ..Default::default()
        };
        client().call(&target(vip), opts).await.unwrap();
    }
    let after = cluster.sessions();
    assert_eq!(
        after[busy], before[busy],
        "the down backend got no new call: {before:?} -> {after:?}"
    );
    assert_eq!(after.iter().sum::<u64>(), before.iter().sum::<u64>() + 12);
    // Its call in progress kept routing to it and finished.
    let out = long.await.unwrap().unwrap();
    let i = out.report.interrupt.unwrap();
    assert!(i.played_ms >= 2_900, "played {} ms", i.played_ms);
    assert_eq!(i.truncated_audio_end_ms, Some(i.played_ms));
    balancer.shutdown().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_changes_address_mid_call_keeps_its_call() {
    let cluster = Cluster::start("echo").await;
    let balancer = cluster.balancer("127.0.0.1:0".parse().unwrap(), true).await;
    let vip = balancer.local_addr();
    let whole = prompt(usize::MAX);
    let expected = whole.clone();
    let client = Arc::new(client());
    let caller = client.clone();
    let mut feeds = cluster.events();
    let call = tokio::spawn(async move {
        let opts = CallOptions {
            turns: vec![whole],
            input_speed: 1.0,
            ..Default::default()
        };
        caller.call(&target(vip), opts).await
    });
    // Mid-prompt: a server holds its first frame (the rest is still being spoken).
    wait_on_any(&mut feeds, |k| {
        matches!(k, SessionEventKind::TurnFirstAudio { .. })
    })
    .await;
    let before = client.endpoint().local_addr().unwrap();
    client
        .endpoint()
        .rebind(std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
        .unwrap();
    let after = client.endpoint().local_addr().unwrap();
    assert_ne!(before, after, "the client now sends from another address");
    let out = call.await.unwrap().unwrap();
    assert_eq!(
        out.report.prompt.frames_confirmed,
        out.report.prompt.frames_sent
    );
    assert_eq!(
        out.reply_received, expected,
        "nothing lost across the migration"
    );
    assert_eq!(cluster.sessions().iter().sum::<u64>(), 1);
    balancer.shutdown().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_at_the_vip_is_dropped_and_counted_and_calls_go_on() {
    let cluster = Cluster::start("echo").await;
    let balancer = cluster.balancer("127.0.0.1:0".parse().unwrap(), true).await;
    let vip = balancer.local_addr();
    let junk = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for datagram in [
        &b""[..],
        b"\x00",
        b"GET / HTTP/1.1\r\n\r\n",
        &[0x80, 0, 0, 0],
    ] {
        junk.send_to(datagram, vip).await.unwrap();
    }
    let short = prompt(2_400);
    let opts = CallOptions {
        turns: vec![short.clone()],
        input_speed: 0.0,
        ..Default::default()
    };
    assert_eq!(
        client()
            .call(&target(vip), opts)
            .await
            .unwrap()
            .reply_received,
        short
    );
    assert!(
        balancer.stats().dropped_total() >= 3,
        "{:?}",
        balancer.stats()
    );
    balancer.shutdown().await;
    cluster.shutdown().await;
}

/// aioquic (an independent QUIC stack) resuming 20 times through the balancer to three
/// servers: `{"calls", "zero_rtt", "resumed", "by_server"}`.
async fn aioquic_resumptions(fleet: Option<voq_server::fleet::FleetKeys>) -> serde_json::Value {
    let python = common::peer_python("aioquic").unwrap();
    let cluster = Cluster::start_with("echo", fleet).await;
    let balancer = cluster
        .balancer("127.0.0.1:0".parse().unwrap(), false)
        .await;
    let vip = balancer.local_addr();
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/peers/aioquic_resume.py");
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(python)
            .arg(script)
            .args(["--port", &vip.port().to_string(), "--calls", "20"])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("aioquic did not finish in time")
    .unwrap();
    assert!(
        out.status.success(),
        "aioquic failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    cluster.shutdown().await;
    serde_json::from_slice(&out.stdout).unwrap()
}

/// 0-RTT across the fleet (issue #11, item 7): with the fleet's shared ticket keys, aioquic's
/// resumptions use 0-RTT on whichever server the balancer's hash picks; without them, only
/// when the hash happens to pick the server that issued the ticket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aioquic_resumes_with_0rtt_on_any_server_of_a_fleet() {
    if common::peer_python("aioquic").is_none() {
        return;
    }
    let shared = aioquic_resumptions(Some(
        voq_server::fleet::FleetKeys::parse(&"a5".repeat(32)).unwrap(),
    ))
    .await;
    let alone = aioquic_resumptions(None).await;
    eprintln!(
        "aioquic 0-RTT through voq lb, 3 servers: fleet keys {shared}, per-server keys {alone}"
    );
    assert_eq!(shared["calls"], 20);
    assert!(shared["zero_rtt"].as_u64().unwrap() >= 19, "{shared}");
    assert!(
        shared["by_server"].as_object().unwrap().len() >= 2,
        "the hash spread the resumptions: {shared}"
    );
    // The same client without shared keys: only the issuer takes its 0-RTT.
    assert!(alone["zero_rtt"].as_u64().unwrap() < 19, "{alone}");
}
