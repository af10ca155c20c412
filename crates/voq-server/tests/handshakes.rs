//! Packets that cost an attacker nothing cannot lock callers out (issue #12, item 3): half-open
//! QUIC handshakes (Initials whose sender never answers) have a budget of their own and take no
//! session slot, and past a quarter of that budget unvalidated sources are sent a Retry first.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::tap;
use voq_client::{CallOptions, Client, Target, Trust};
use voq_server::prefix::PrefixCaps;
use voq_server::stats::Limit;
use voq_server::{Server, SessionEventKind, Settings, wait_for_event};
use voq_transport::Carrier;

fn is_retry(packet: &[u8]) -> bool {
    // QUIC v1 long header (0b11......) of type Retry (0b..11....).
    packet.first().is_some_and(|b| b & 0xf0 == 0xf0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_handshakes_take_no_session_slot_and_meet_retry() {
    let server = Server::start(Settings {
        max_sessions: 2,
        max_handshakes: 8,
        ..Settings::loopback("echo")
    })
    .await
    .unwrap();
    let trust = Trust::cert_hash(&server.cert_sha256()).unwrap();

    // Six first Initials of six connection attempts, each with its own connection id (the first
    // datagram of each distinct DCID: retransmissions and late arrivals are skipped).
    let (tap_addr, captured) = tap().await;
    for _ in 0..6 {
        let client = Client::new(&trust, "127.0.0.1:0".parse().unwrap()).unwrap();
        let target = Target {
            addr: tap_addr,
            server_name: "localhost".into(),
            tls: true,
        };
        let opts = CallOptions {
            turns: vec![vec![0; 480]],
            timeout: Duration::from_millis(300),
            ..Default::default()
        };
        assert!(client.call(&target, opts).await.is_err());
    }
    let dcid = |d: &[u8]| {
        let len = usize::from(*d.get(5).unwrap_or(&0));
        d.get(6..6 + len).map(<[u8]>::to_vec)
    };
    let mut initials: Vec<Vec<u8>> = Vec::new();
    for d in captured.lock().unwrap().iter() {
        if !initials.iter().any(|i| dcid(i) == dcid(d)) {
            initials.push(d.clone());
        }
    }
    assert_eq!(initials.len(), 6, "six connection attempts");

    // Each sent from its own address, as a spoofing flood would: none ever answers.
    let mut retried = 0;
    for initial in &initials {
        let spoofed = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        spoofed.send_to(initial, server.local_addr()).await.unwrap();
        let mut answer = vec![0u8; 2048];
        let (n, _) = tokio::time::timeout(Duration::from_secs(2), spoofed.recv_from(&mut answer))
            .await
            .unwrap()
            .unwrap();
        retried += usize::from(is_retry(&answer[..n]));
    }
    assert!(
        retried >= 3,
        "past a quarter of the budget, Retry first: {retried} of 6"
    );
    assert!(server.stats().handshakes_retried.get() >= 3);

    // A real caller still gets in (through the Retry, which it answers), and both session
    // slots are free for it: half-open handshakes took none.
    let client = Client::new(&trust, "127.0.0.1:0".parse().unwrap()).unwrap();
    let target = Target {
        addr: server.local_addr(),
        server_name: "localhost".into(),
        tls: true,
    };
    let prompt: Vec<i16> = (0..4_800).map(|i| (i % 200) as i16 * 50).collect();
    let opts = CallOptions {
        turns: vec![prompt.clone()],
        input_speed: 0.0,
        ..Default::default()
    };
    let out = client.call(&target, opts).await.unwrap();
    assert_eq!(out.reply_received, prompt);
    server.shutdown().await;
}

async fn quick_call(
    server: &Server,
    carrier: Carrier,
    turn: Vec<i16>,
    speed: f64,
) -> anyhow::Result<voq_client::CallOutcome> {
    let opts = CallOptions {
        turns: vec![turn],
        input_speed: speed,
        transport: carrier,
        ..Default::default()
    };
    common::call(server, opts).await
}

fn turn(ms: usize) -> Vec<i16> {
    (0..ms * 24)
        .map(|i| ((i % 120) as i16 - 60) * 200)
        .collect()
}

/// One network (here loopback, with its exemption off) holds at most its sessions at once, on
/// every carrier; others' calls are not affected, and the cap frees as calls end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_holds_at_most_its_sessions() {
    let server = Server::start(Settings {
        prefix_caps: Some(PrefixCaps {
            sessions: 2,
            exempt_loopback: false,
            ..PrefixCaps::default()
        }),
        ..Settings::loopback("echo")
    })
    .await
    .unwrap();
    let mut events = server.events();
    let server = std::sync::Arc::new(server);
    let mut long = Vec::new();
    for _ in 0..2 {
        let s = server.clone();
        long.push(tokio::spawn(async move {
            quick_call(&s, Carrier::Quic, turn(2500), 1.0).await
        }));
        wait_for_event(&mut events, Duration::from_secs(10), |k| {
            matches!(k, SessionEventKind::TurnFirstAudio { .. })
        })
        .await
        .expect("a long call is talking");
    }
    for carrier in [Carrier::Quic, Carrier::WebSocket] {
        let err = quick_call(&server, carrier, turn(200), 0.0)
            .await
            .unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("too many sessions") || text.contains("429"),
            "{carrier:?}: {text}"
        );
    }
    assert_eq!(
        server
            .stats()
            .limits_exceeded
            .get(Limit::PrefixSessions)
            .get(),
        2
    );
    for call in long {
        call.await.unwrap().unwrap();
    }
    quick_call(&server, Carrier::Quic, turn(200), 0.0)
        .await
        .unwrap();
}

/// A network's handshakes a second are capped: a validated source over the rate is refused
/// (an unvalidated one would be sent a Retry first), counted, and other networks go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_starts_at_most_its_handshakes_a_second() {
    let server = Server::start(Settings {
        prefix_caps: Some(PrefixCaps {
            sessions: 100,
            handshake_rate: 0.5,
            handshake_burst: 3.0,
            exempt_loopback: false,
        }),
        ..Settings::loopback("echo")
    })
    .await
    .unwrap();
    let mut ok = 0;
    for _ in 0..6 {
        ok += usize::from(
            quick_call(&server, Carrier::Quic, turn(100), 0.0)
                .await
                .is_ok(),
        );
    }
    assert_eq!(
        ok, 3,
        "the burst, then nothing within the same second or two"
    );
    assert!(
        server
            .stats()
            .limits_exceeded
            .get(Limit::PrefixHandshakes)
            .get()
            >= 3
    );
    assert!(
        server.stats().handshakes_retried.get() >= 3,
        "unvalidated first: a Retry"
    );
    server.shutdown().await;
}

/// Real first flights (Initials of real QUIC connection attempts), made without sockets.
fn initials(server: std::net::SocketAddr, n: usize) -> Vec<Vec<u8>> {
    let (mut endpoint, client) = common::sans_io_client();
    let now = std::time::Instant::now();
    (0..n)
        .map(|_| {
            let (_, mut conn) = endpoint
                .connect(now, client.clone(), server, "localhost")
                .unwrap();
            let mut buf = Vec::new();
            let t = conn.poll_transmit(now, 1, &mut buf).unwrap();
            buf.truncate(t.size);
            buf
        })
        .collect()
}

/// Sends each datagram from its own address in 127.0.0.0/8, as a spoofing flood would: nobody
/// ever answers the server.
async fn spray(to: std::net::SocketAddr, datagrams: &[Vec<u8>], first_octet3: u8) {
    for (i, d) in datagrams.iter().enumerate() {
        let from = std::net::Ipv4Addr::new(127, first_octet3, (i / 250) as u8, (i % 250 + 2) as u8);
        let socket = tokio::net::UdpSocket::bind((from, 0)).await.unwrap();
        socket.send_to(d, to).await.unwrap();
    }
}

/// The attack of issue #12: 1,500 spoofed-source Initials in one burst, then 150 a second, while
/// real callers use QUIC and WebSocket. Handshakes have their own budget and Retry past a
/// quarter of it, so the callers get through (at worst one extra round trip for the Retry).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_initial_flood_does_not_lock_callers_out() {
    let server = std::sync::Arc::new(Server::start(Settings::loopback("echo")).await.unwrap());
    let addr = server.local_addr();
    let burst = initials(addr, 1_500);
    let steady = initials(addr, 450);
    let flood = tokio::spawn(async move {
        spray(addr, &burst, 10).await;
        // 150 a second for 3 s, in tenths of a second.
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        for chunk in steady.chunks(15) {
            tick.tick().await;
            spray(addr, chunk, 20).await;
        }
    });
    // 100 callers, ten at a time, through the flood.
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(10));
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..100 {
        let (s, gate) = (server.clone(), gate.clone());
        let carrier = if i % 2 == 0 {
            Carrier::Quic
        } else {
            Carrier::WebSocket
        };
        calls.spawn(async move {
            let _turn = gate.acquire_owned().await.unwrap();
            (carrier, quick_call(&s, carrier, turn(300), 0.0).await)
        });
    }
    let mut failed = Vec::new();
    let mut done = 0;
    while let Some(r) = calls.join_next().await {
        let (carrier, outcome) = r.unwrap();
        done += 1;
        if let Err(e) = outcome {
            failed.push(format!("{carrier:?}: {e:#}"));
        }
    }
    flood.await.unwrap();
    let stats = server.stats();
    // The figures of docs/BENCHMARKS.md ("Floods"), with --nocapture.
    eprintln!(
        "flood: {} of {done} calls failed; {} Retries, {} handshakes refused, {} sessions",
        failed.len(),
        stats.handshakes_retried.get(),
        stats.handshakes_refused.get(),
        stats.connections_accepted.get()
    );
    assert!(
        failed.len() <= done / 100,
        "{} of {done} calls failed: {failed:?}",
        failed.len()
    );
    assert!(
        stats.handshakes_retried.get() >= 1_000,
        "the flood met Retry: {}",
        stats.handshakes_retried.get()
    );
}

/// Address validation across a fleet: a client that one server sent a Retry validates at
/// another server of the same fleet (shared fleet secret) with the token it got, e.g. after an
/// ECMP rehash moved its next Initial; a server of another fleet does not take the token. And the
/// Retry's connection id, which the client's next Initial is addressed to, is QUIC-LB routable
/// to the server that sent it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_token_from_one_server_validates_at_another_of_its_fleet() {
    let secret = "5e".repeat(32);
    // Caps that send every unvalidated source a Retry and refuse validated ones: what a server
    // does with a retried Initial shows whether it took the token.
    let retry_everyone = PrefixCaps {
        sessions: 100,
        handshake_rate: 1e-6,
        handshake_burst: 0.0,
        exempt_loopback: false,
    };
    let lb = voq_server::QuicLbSettings {
        config_id: 1,
        server_id: vec![0x0a, 0x01],
        nonce_len: 6,
        key: None,
        cid_len: None,
        self_encoded_len: None,
    };
    let server = |fleet: &str, quic_lb: Option<voq_server::QuicLbSettings>| {
        let fleet = voq_server::fleet::FleetKeys::parse(fleet).unwrap();
        Server::start(Settings {
            fleet: Some(fleet),
            prefix_caps: Some(retry_everyone),
            quic_lb,
            ..Settings::loopback("echo")
        })
    };
    let a = server(&secret, Some(lb.clone())).await.unwrap();
    let b = server(&secret, None).await.unwrap();
    let other = server(&"77".repeat(32), None).await.unwrap();

    let (mut endpoint, client_config) = common::sans_io_client();
    let now = std::time::Instant::now();
    let (_, mut conn) = endpoint
        .connect(now, client_config, a.local_addr(), "localhost")
        .unwrap();
    let mut first = Vec::new();
    let t = conn.poll_transmit(now, 1, &mut first).unwrap();
    first.truncate(t.size);
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(&first, a.local_addr()).await.unwrap();
    let mut buf = vec![0u8; 2048];
    let (n, from) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let retry = buf[..n].to_vec();
    assert!(is_retry(&retry), "server A sends a Retry");
    // The Retry's source CID (the client's next destination) names server A.
    let dcid_len = usize::from(retry[5]);
    let scid_len = usize::from(retry[6 + dcid_len]);
    let scid = &retry[7 + dcid_len..7 + dcid_len + scid_len];
    let decoded = voq_quic_lb::Router::new()
        .with_config(lb.config().unwrap())
        .decode(scid)
        .unwrap();
    assert_eq!(decoded.server_id.as_bytes(), &[0x0a, 0x01]);

    let mut out = Vec::new();
    let local = socket.local_addr().unwrap().ip();
    match endpoint.handle(
        now,
        from,
        Some(local),
        None,
        bytes::BytesMut::from(&retry[..]),
        &mut out,
    ) {
        Some(quinn_proto::DatagramEvent::ConnectionEvent(_, event)) => conn.handle_event(event),
        _ => panic!("the client did not take the Retry"),
    }
    let mut retried = Vec::new();
    let t = conn.poll_transmit(now, 1, &mut retried).unwrap();
    retried.truncate(t.size);

    // The same retried Initial, from the same address, to another server of the fleet and to a
    // server of another fleet.
    for (server, same_fleet) in [(&b, true), (&other, false)] {
        socket.send_to(&retried, server.local_addr()).await.unwrap();
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let stats = server.stats();
        if same_fleet {
            // Validated by the token: charged to its network and refused, never retried.
            assert_eq!(stats.handshakes_retried.get(), 0);
            assert_eq!(stats.handshakes_refused.get(), 1);
            assert!(!is_retry(&buf[..n]));
        } else {
            // Not its token: no validated handshake, and no second Retry either.
            assert_eq!(stats.handshakes_refused.get(), 0, "{:?}", &buf[..n.min(8)]);
        }
    }
    for s in [a, b, other] {
        s.shutdown().await;
    }
}

/// A spoofer cannot spend a victim network's handshake budget: 50 first flights "from" the
/// victim's network that never complete charge nothing, and the victim's own call goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_initials_do_not_spend_a_networks_budget() {
    let server = Server::start(Settings {
        prefix_caps: Some(PrefixCaps {
            sessions: 100,
            handshake_rate: 0.01,
            handshake_burst: 3.0,
            exempt_loopback: false,
        }),
        ..Settings::loopback("echo")
    })
    .await
    .unwrap();
    let addr = server.local_addr();
    // 127.0.0.2 ..= 127.0.0.51: the victim's /24 (127.0.0.0/24).
    let flights = initials(addr, 50);
    for (i, d) in flights.iter().enumerate() {
        let from = std::net::Ipv4Addr::new(127, 0, 0, 2 + i as u8);
        let socket = tokio::net::UdpSocket::bind((from, 0)).await.unwrap();
        socket.send_to(d, addr).await.unwrap();
    }
    // One socket takes every datagram in the order sent, so the server has met all fifty
    // before the victim's own first flight.
    quick_call(&server, Carrier::Quic, turn(100), 0.0)
        .await
        .expect("the victim's call goes through");
    assert_eq!(
        server
            .stats()
            .limits_exceeded
            .get(Limit::PrefixHandshakes)
            .get(),
        0
    );
    server.shutdown().await;
}
