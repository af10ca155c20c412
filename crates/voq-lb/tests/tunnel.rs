//! `TunnelSocket` on its own, and real quinn connections through the balancer.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, Runtime, TokioRuntime};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use voq_lb::{Backend, HealthConfig};
use voq_quic_lb::{CidGenerator, Encoder, ServerId};
use voq_tunnel::TunnelSocket;
use voq_tunnel::proxy_v2::{self, Header};

/// Receives one batch from `socket`, split into datagrams at `stride`.
async fn recv_batch(socket: &dyn AsyncUdpSocket) -> Vec<(SocketAddr, Vec<u8>)> {
    let mut buf = vec![0u8; 8 * 65536];
    let mut metas = [RecvMeta::default(); 8];
    let n = tokio::time::timeout(
        WAIT,
        std::future::poll_fn(|cx| {
            let mut iovs: Vec<IoSliceMut<'_>> =
                buf.chunks_mut(65536).map(IoSliceMut::new).collect();
            socket.poll_recv(cx, &mut iovs, &mut metas)
        }),
    )
    .await
    .expect("nothing received")
    .unwrap();
    let mut out = Vec::new();
    for (i, m) in metas.iter().take(n).enumerate() {
        let data = &buf[i * 65536..i * 65536 + m.len];
        for d in data.chunks(m.stride.max(1)) {
            out.push((m.addr, d.to_vec()));
        }
    }
    out
}

async fn recv_n(socket: &dyn AsyncUdpSocket, n: usize) -> Vec<(SocketAddr, Vec<u8>)> {
    let mut all = Vec::new();
    while all.len() < n {
        all.extend(recv_batch(socket).await);
    }
    all
}

/// Sends one transmit, waiting for the socket to be writable as quinn does.
async fn send(socket: &Arc<dyn AsyncUdpSocket>, t: &Transmit<'_>) {
    let mut poller = socket.clone().create_io_poller();
    loop {
        match socket.try_send(t) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::future::poll_fn(|cx| poller.as_mut().poll_writable(cx))
                    .await
                    .unwrap();
            }
            other => return other.unwrap(),
        }
    }
}

fn wrap(addr: &str) -> Arc<dyn AsyncUdpSocket> {
    TokioRuntime
        .wrap_udp_socket(std::net::UdpSocket::bind(addr).unwrap())
        .unwrap()
}

#[tokio::test]
async fn tunnel_socket_passes_only_tunnelled_datagrams_and_answers_probes() {
    let lb = wrap("127.0.0.1:0");
    let lb_addr = lb.local_addr().unwrap();
    let tunnel = TunnelSocket::bind("127.0.0.1:0".parse().unwrap(), lb_addr).unwrap();
    let at = tunnel.local_addr().unwrap();
    fn to(at: SocketAddr, d: &[u8]) -> Transmit<'_> {
        Transmit {
            destination: at,
            ecn: None,
            contents: d,
            segment_size: None,
            src_ip: None,
        }
    }
    let client: SocketAddr = "192.0.2.7:50000".parse().unwrap();
    let vip: SocketAddr = "203.0.113.1:443".parse().unwrap();
    let mut good = Vec::new();
    proxy_v2::encode(client, vip, b"\x40quic", &mut good);
    let mut bad = good.clone();
    bad[13] = 0x11; // TCP over IPv4
    let mut empty = Vec::new();
    proxy_v2::encode(client, vip, b"", &mut empty);

    send(&lb, &to(at, b"\x40no header")).await;
    send(&lb, &to(at, &bad)).await;
    send(&lb, &to(at, &empty)).await;
    send(&lb, &to(at, &proxy_v2::LOCAL)).await;
    // From another source IP than the balancer's.
    let stranger = wrap("127.0.0.2:0");
    send(&stranger, &to(at, &good)).await;
    send(&lb, &to(at, &good)).await;

    let got = recv_batch(&tunnel).await;
    assert_eq!(got, [(client, b"\x40quic".to_vec())]);
    // The probe came back to its sender, as a LOCAL header.
    let answer = recv_batch(&*lb).await;
    assert_eq!(answer.len(), 1);
    assert_eq!(answer[0].0, at);
    assert_eq!(proxy_v2::decode(&answer[0].1).unwrap().0, Header::Local);
    let s = tunnel.stats();
    assert_eq!(
        (
            s.received,
            s.probes,
            s.no_header,
            s.bad_header,
            s.empty,
            s.not_allowed
        ),
        (1, 1, 1, 1, 1, 1)
    );
    assert_eq!(s.dropped(), 4);
}

#[tokio::test]
async fn tunnel_socket_gives_every_segment_its_own_header() {
    let lb = wrap("127.0.0.1:0");
    let tunnel: Arc<dyn AsyncUdpSocket> = Arc::new(
        TunnelSocket::bind("127.0.0.1:0".parse().unwrap(), lb.local_addr().unwrap()).unwrap(),
    );
    let client: SocketAddr = "192.0.2.7:50000".parse().unwrap();
    // Send: a GSO transmit of 3 × 100 + 40 octets to one client, if the OS has GSO.
    let segments = if tunnel.max_transmit_segments() > 1 {
        4
    } else {
        1
    };
    let mut contents = Vec::new();
    for i in 0..segments {
        let len = if i == 3 { 40 } else { 100 };
        contents.extend(std::iter::repeat_n(i as u8, len));
    }
    send(
        &tunnel,
        &Transmit {
            destination: client,
            ecn: None,
            contents: &contents,
            segment_size: (segments > 1).then_some(100),
            src_ip: None,
        },
    )
    .await;
    let got = recv_n(&*lb, segments).await;
    for (i, (from, d)) in got.iter().enumerate() {
        assert_eq!(*from, tunnel.local_addr().unwrap());
        let (h, payload) = proxy_v2::decode(d).unwrap();
        assert_eq!(
            h,
            Header::Proxy {
                src: lb.local_addr().unwrap(),
                dst: client
            }
        );
        assert!(payload.iter().all(|&b| b == i as u8));
        assert_eq!(payload.len(), if i == 3 { 40 } else { 100 });
    }

    // Receive: a GSO batch from the balancer whose segments carry different clients is
    // split into one datagram per client (the kernel may hand it over as one GRO batch).
    let mut batch = Vec::new();
    let clients: Vec<SocketAddr> = (0..3)
        .map(|i| format!("192.0.2.{}:4000", 10 + i).parse().unwrap())
        .collect();
    for (i, c) in clients.iter().enumerate() {
        proxy_v2::encode(*c, lb.local_addr().unwrap(), &[i as u8; 60], &mut batch);
    }
    let seg = proxy_v2::V4_LEN + 60;
    let gso = lb.max_transmit_segments() > 1;
    if gso {
        send(
            &lb,
            &Transmit {
                destination: tunnel.local_addr().unwrap(),
                ecn: None,
                contents: &batch,
                segment_size: Some(seg),
                src_ip: None,
            },
        )
        .await;
    } else {
        for d in batch.chunks(seg) {
            send(
                &lb,
                &Transmit {
                    destination: tunnel.local_addr().unwrap(),
                    ecn: None,
                    contents: d,
                    segment_size: None,
                    src_ip: None,
                },
            )
            .await;
        }
    }
    let got = recv_n(&*tunnel, 3).await;
    let expected: Vec<(SocketAddr, Vec<u8>)> = clients
        .iter()
        .enumerate()
        .map(|(i, c)| (*c, vec![i as u8; 60]))
        .collect();
    assert_eq!(got, expected);
}

fn tls() -> (quinn::ServerConfig, quinn::ClientConfig) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert: CertificateDer<'static> = ck.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    let server = quinn::ServerConfig::with_single_cert(vec![cert.clone()], key).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let client = quinn::ClientConfig::with_root_certificates(Arc::new(roots)).unwrap();
    (server, client)
}

/// A quinn echo server behind the balancer: QUIC-LB CIDs for `server_id`, a `TunnelSocket`.
struct QuinnBackend {
    endpoint: quinn::Endpoint,
    socket: Arc<TunnelSocket>,
    backend: Backend,
}

impl QuinnBackend {
    fn start(server_id: [u8; 2], vip: SocketAddr, server: quinn::ServerConfig) -> Self {
        let socket = Arc::new(TunnelSocket::bind("127.0.0.1:0".parse().unwrap(), vip).unwrap());
        let mut config = quinn::EndpointConfig::default();
        config.cid_generator(move || {
            let encoder = Encoder::new(quic_lb(), &server_id, [server_id[1]; 32]).unwrap();
            Box::new(CidGenerator::new(encoder))
        });
        let endpoint = voq_tunnel::endpoint(config, Some(server), socket.clone()).unwrap();
        let accept = endpoint.clone();
        tokio::spawn(async move {
            while let Some(incoming) = accept.accept().await {
                tokio::spawn(async move {
                    let Ok(conn) = incoming.await else { return };
                    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                        let Ok(data) = recv.read_to_end(1 << 16).await else {
                            return;
                        };
                        let _ = send.write_all(&data).await;
                        let _ = send.finish();
                    }
                });
            }
        });
        let backend = Backend::new(
            ServerId::from_slice(&server_id).unwrap(),
            socket.local_addr().unwrap(),
        );
        Self {
            endpoint,
            socket,
            backend,
        }
    }
}

async fn echo(conn: &quinn::Connection, msg: &[u8]) -> Vec<u8> {
    tokio::time::timeout(WAIT, async {
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_all(msg).await.unwrap();
        send.finish().unwrap();
        recv.read_to_end(1 << 16).await.unwrap()
    })
    .await
    .expect("echo timed out")
}

#[tokio::test]
async fn quinn_connections_work_through_the_balancer_across_migration_and_restart() {
    let health = HealthConfig {
        enabled: true,
        interval: Duration::from_millis(100),
        down_after: 3,
        up_after: 2,
    };
    let lb = balancer(vec![], Some(health.clone()), None).await;
    let vip = lb.local_addr();
    let (server_tls, client_tls) = tls();
    let servers = [
        QuinnBackend::start([0, 1], vip, server_tls.clone()),
        QuinnBackend::start([0, 2], vip, server_tls),
    ];
    let backends: Vec<Backend> = servers.iter().map(|s| s.backend.clone()).collect();
    lb.reload(backends.clone()).unwrap();
    // The TunnelSockets answer the balancer's LOCAL probes.
    assert!(until(|| servers.iter().all(|s| s.socket.stats().probes >= 2)).await);
    assert!(lb.stats().backends.iter().all(|b| b.up));

    let mut client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    client.set_default_client_config(client_tls);
    let conn = tokio::time::timeout(WAIT, client.connect(vip, "localhost").unwrap())
        .await
        .expect("handshake timed out")
        .unwrap();
    assert_eq!(conn.remote_address(), vip);
    assert_eq!(echo(&conn, b"hello").await, b"hello");
    // One backend has the connection; the other saw nothing of it.
    let serving: Vec<usize> = (0..2)
        .filter(|&i| servers[i].socket.stats().received > 0)
        .collect();
    assert_eq!(
        serving.len(),
        1,
        "the connection's packets went to both backends"
    );
    let (serving, idle) = (serving[0], 1 - serving[0]);
    let s = lb.stats();
    assert!(s.routed > 0, "no packet was routed by server id: {s:?}");
    assert!(s.fallback["unroutable"] + s.fallback["unknown_server"] >= 1);

    // The client moves to a new address (connection migration): routing by CID follows it.
    client
        .rebind(std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
        .unwrap();
    assert_eq!(echo(&conn, b"after migration").await, b"after migration");

    // The balancer restarts between two packets of the connection: nothing to lose.
    lb.shutdown().await;
    let lb = balancer(backends, Some(health), Some(vip)).await;
    assert_eq!(echo(&conn, b"after restart").await, b"after restart");

    assert_eq!(servers[idle].socket.stats().received, 0);
    for s in &servers {
        assert_eq!(s.socket.stats().dropped(), 0, "{:?}", s.socket.stats());
    }
    assert_eq!(lb.stats().dropped_total(), 0);
    assert!(servers[serving].socket.stats().sent > 0);
    conn.close(0u32.into(), b"done");
    client.wait_idle().await;
    for s in &servers {
        s.endpoint.close(0u32.into(), b"");
    }
    lb.shutdown().await;
}
