//! A server on two addresses, on loopback: handshakes on the (anycast) address, calls moved to
//! the server's own (unicast) address by QUIC's preferred_address, and datagrams of a client
//! that stays on the anycast address forwarded to the server its connection ID names. The same
//! with real routing (BIRD, ECMP) between network namespaces is in `tests/fleet.rs`.
//!
//! Loopback has the whole 127.0.0.0/8: 127.0.0.1 is each server's unicast address, 127.0.0.2
//! and 127.0.0.3 stand for the anycast address (one per server, as two sockets cannot share an
//! address on one host).
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use voq_client::{CallOptions, Client, ClientOptions, Target, Trust};
use voq_server::{AnycastSettings, Server, Settings};

mod common;
use common::{lb_settings, until};

/// The first `ms` of the carwash prompt.
fn prompt(ms: usize) -> Vec<i16> {
    common::prompt(ms * 24)
}

/// A server with id `id`, unicast on 127.0.0.1 and "anycast" on `anycast_ip`, echoing.
async fn fleet_server(id: u8, anycast_ip: [u8; 4]) -> Server {
    Server::start(Settings {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        web: false,
        agent: "echo".into(),
        quic_lb: Some(lb_settings(id)),
        anycast: Some(AnycastSettings {
            addr: SocketAddr::from((anycast_ip, 0)),
            peers: Vec::new(),
        }),
        drain_timeout: Duration::from_secs(2),
        ..Default::default()
    })
    .await
    .unwrap()
}

fn target(addr: SocketAddr) -> Target {
    Target {
        addr,
        server_name: "localhost".into(),
        tls: true,
    }
}

fn speak(pcm: Vec<i16>) -> CallOptions {
    CallOptions {
        turns: vec![pcm],
        input_speed: 1.0,
        timeout: Duration::from_secs(30),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_call_moves_to_the_unicast_address_and_loses_nothing() {
    let server = fleet_server(1, [127, 0, 0, 2]).await;
    let anycast = server.anycast_addr().unwrap();
    let client = Client::new(
        &Trust::cert_hash(&server.cert_sha256()).unwrap(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    let pcm = prompt(2000);
    let outcome = client
        .call(&target(anycast), speak(pcm.clone()))
        .await
        .unwrap();
    let r = &outcome.report;
    assert!(r.preferred_address_used, "{r:?}");
    assert!(!r.preferred_address_failed);
    assert_eq!(r.migrations, 1);
    assert_eq!(r.server_address, server.local_addr().to_string());
    assert_eq!(r.server_id.as_deref(), Some("01"));
    // Sent while the path moved: every frame confirmed, and echoed back bit-exact.
    assert_eq!(r.prompt.frames_confirmed, r.prompt.frames_sent);
    assert_eq!(outcome.reply_received, pcm);
    assert_eq!(r.reply.underruns, 0);
    let stats = server.anycast_stats().unwrap();
    assert!(stats.anycast_received > 0, "{stats:?}");
    // Most of the call arrived on the unicast address.
    assert!(stats.unicast_received > stats.anycast_received, "{stats:?}");
}

#[tokio::test]
async fn a_client_that_does_not_migrate_stays_on_the_anycast_address() {
    let server = fleet_server(1, [127, 0, 0, 2]).await;
    let client = Client::with_options(
        &Trust::cert_hash(&server.cert_sha256()).unwrap(),
        "127.0.0.1:0".parse().unwrap(),
        &ClientOptions {
            use_preferred_address: false,
            ..Default::default()
        },
    )
    .unwrap();
    let pcm = prompt(500);
    let outcome = client
        .call(&target(server.anycast_addr().unwrap()), speak(pcm.clone()))
        .await
        .unwrap();
    assert!(!outcome.report.preferred_address_used);
    assert_eq!(outcome.report.migrations, 0);
    assert_eq!(outcome.reply_received, pcm);
    assert_eq!(server.anycast_stats().unwrap().unicast_received, 0);
}

/// A one-client UDP relay standing in for the routers: the client talks to the relay, the relay
/// to whichever "anycast" address `target` says, and every reply goes back to the client.
struct Relay {
    addr: SocketAddr,
    target: Arc<Mutex<SocketAddr>>,
    to_servers: Arc<AtomicU64>,
}

impl Relay {
    async fn start(target: SocketAddr) -> Self {
        let front = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let back = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let addr = front.local_addr().unwrap();
        let target = Arc::new(Mutex::new(target));
        let to_servers = Arc::new(AtomicU64::new(0));
        let client = Arc::new(Mutex::new(None::<SocketAddr>));
        {
            let (front, back, target, count, client) = (
                front.clone(),
                back.clone(),
                target.clone(),
                to_servers.clone(),
                client.clone(),
            );
            tokio::spawn(async move {
                let mut buf = vec![0; 65536];
                while let Ok((n, from)) = front.recv_from(&mut buf).await {
                    *client.lock().unwrap() = Some(from);
                    let to = *target.lock().unwrap();
                    let _ = back.send_to(&buf[..n], to).await;
                    count.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        tokio::spawn(async move {
            let mut buf = vec![0; 65536];
            while let Ok((n, _)) = back.recv_from(&mut buf).await {
                let to = *client.lock().unwrap();
                if let Some(to) = to {
                    let _ = front.send_to(&buf[..n], to).await;
                }
            }
        });
        Self {
            addr,
            target,
            to_servers,
        }
    }
}

#[tokio::test]
async fn after_a_rehash_a_client_on_anycast_is_forwarded_to_its_server() {
    let a = fleet_server(1, [127, 0, 0, 2]).await;
    let b = fleet_server(2, [127, 0, 0, 3]).await;
    a.set_fleet_peers(vec![(vec![2], b.local_addr())]).unwrap();
    b.set_fleet_peers(vec![(vec![1], a.local_addr())]).unwrap();
    // The client reaches B's anycast address first, and never migrates (as browsers do).
    let relay = Relay::start(b.anycast_addr().unwrap()).await;
    let client = Client::with_options(
        &Trust::cert_hash(&b.cert_sha256()).unwrap(),
        "127.0.0.1:0".parse().unwrap(),
        &ClientOptions {
            use_preferred_address: false,
            ..Default::default()
        },
    )
    .unwrap();
    let pcm = prompt(3000);
    let call = {
        let opts = speak(pcm.clone());
        let to = target(relay.addr);
        tokio::spawn(async move { client.call(&to, opts).await })
    };
    // Mid-prompt, the "routers" change their mind: the flow now reaches A.
    until(Duration::from_secs(10), "the call got going", || {
        relay.to_servers.load(Ordering::Relaxed) >= 40
    })
    .await;
    *relay.target.lock().unwrap() = a.anycast_addr().unwrap();
    let outcome = call.await.unwrap().unwrap();
    assert_eq!(outcome.report.server_id.as_deref(), Some("02"));
    assert_eq!(
        outcome.report.prompt.frames_confirmed,
        outcome.report.prompt.frames_sent
    );
    assert_eq!(outcome.reply_received, pcm);
    let (sa, sb) = (a.anycast_stats().unwrap(), b.anycast_stats().unwrap());
    assert!(sa.forwarded_out > 0, "A forwarded nothing: {sa:?}");
    assert_eq!(sb.forwarded_in, sa.forwarded_out, "{sa:?} {sb:?}");
    assert_eq!(a.stats().sessions_started.total(), 0);
    assert_eq!(b.stats().sessions_started.total(), 1);
}

#[tokio::test]
async fn forwarded_datagrams_from_strangers_are_dropped() {
    let a = fleet_server(1, [127, 0, 0, 2]).await;
    a.set_fleet_peers(vec![(vec![2], "127.0.0.9:9".parse().unwrap())])
        .unwrap();
    // A PROXY v2 datagram from an address that is not a peer: dropped and counted.
    let mut datagram = Vec::new();
    voq_tunnel::proxy_v2::encode(
        "127.0.0.1:1".parse().unwrap(),
        a.anycast_addr().unwrap(),
        &[0x40; 40],
        &mut datagram,
    );
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(&datagram, a.local_addr()).await.unwrap();
    until(
        Duration::from_secs(5),
        "the stranger's datagram counted",
        || a.anycast_stats().unwrap().not_a_peer > 0,
    )
    .await;
    assert_eq!(a.anycast_stats().unwrap().forwarded_in, 0);
}

/// Plain quinn endpoints with the simulator's TLS and voq's transport settings: the
/// preferred-address patch on its own (third_party/quinn-proto/VOQ-PATCH.md).
mod quinn_patch {
    use super::*;

    fn configs(preferred: Option<SocketAddr>) -> (quinn::ServerConfig, quinn::ClientConfig) {
        let (mut server, mut client) = voq_sim::tls::quic_configs();
        if let Some(SocketAddr::V4(v4)) = preferred {
            server.preferred_address_v4(Some(v4));
        }
        client.transport_config(voq_transport::quic::transport_config());
        (server, client)
    }

    /// Sends `n` bytes on a new stream and returns what the server read.
    async fn exchange(client: &quinn::Connection, server: &quinn::Connection, n: usize) -> usize {
        let mut send = client.open_uni().await.unwrap();
        send.write_all(&vec![7; n]).await.unwrap();
        send.finish().unwrap();
        let mut recv = server.accept_uni().await.unwrap();
        recv.read_to_end(1 << 20).await.unwrap().len()
    }

    #[tokio::test]
    async fn the_client_moves_and_the_server_answers_from_the_new_address() {
        // One wildcard socket hears both 127.0.0.1 and 127.0.0.2; it advertises the second.
        let (mut server_config, client_config) = configs(None);
        let server =
            quinn::Endpoint::server(server_config.clone(), "0.0.0.0:0".parse().unwrap()).unwrap();
        let port = server.local_addr().unwrap().port();
        let preferred = SocketAddr::from(([127, 0, 0, 2], port));
        let SocketAddr::V4(v4) = preferred else {
            unreachable!()
        };
        server_config.preferred_address_v4(Some(v4));
        server.set_server_config(Some(server_config));
        let mut client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        client.set_default_client_config(client_config);
        let dialled = SocketAddr::from(([127, 0, 0, 1], port));
        let connecting = client.connect(dialled, "localhost").unwrap();
        let (conn, accepted) = tokio::join!(connecting, async {
            server.accept().await.unwrap().await.unwrap()
        });
        let conn = conn.unwrap();
        assert_eq!(accepted.local_ip(), Some(dialled.ip()));
        until(Duration::from_secs(5), "the move", || {
            conn.stats().preferred_address.migrated
        })
        .await;
        assert_eq!(conn.remote_address(), preferred);
        // Traffic after the move reaches the server, which now answers from 127.0.0.2.
        assert_eq!(exchange(&conn, &accepted, 50_000).await, 50_000);
        assert_eq!(accepted.local_ip(), Some(preferred.ip()));
        assert!(!conn.stats().preferred_address.failed);
    }

    #[tokio::test]
    async fn a_preferred_address_that_never_answers_leaves_the_call_where_it_was() {
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let (server_config, client_config) = configs(Some(silent.local_addr().unwrap()));
        let server =
            quinn::Endpoint::server(server_config, "127.0.0.1:0".parse().unwrap()).unwrap();
        let mut client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        client.set_default_client_config(client_config);
        let dialled = server.local_addr().unwrap();
        let connecting = client.connect(dialled, "localhost").unwrap();
        let (conn, accepted) = tokio::join!(connecting, async {
            server.accept().await.unwrap().await.unwrap()
        });
        let conn = conn.unwrap();
        // Data flows on the original path while the preferred address is being validated.
        assert_eq!(exchange(&conn, &accepted, 20_000).await, 20_000);
        until(
            Duration::from_secs(15),
            "giving up on the preferred address",
            || conn.stats().preferred_address.failed,
        )
        .await;
        let stats = conn.stats().preferred_address;
        assert!(!stats.migrated);
        assert!(stats.challenges_sent >= 2, "{stats:?}");
        assert_eq!(conn.remote_address(), dialled);
        assert_eq!(exchange(&conn, &accepted, 20_000).await, 20_000);
        // The silent address did hear the challenges (padded to 1200 bytes).
        silent.set_nonblocking(true).unwrap();
        let mut buf = [0; 2048];
        let (n, _) = silent.recv_from(&mut buf).unwrap();
        assert!(n >= 1200, "{n}");
    }
}
