//! Packets that cost an attacker nothing cannot lock callers out (issue #12, item 3): half-open
//! QUIC handshakes (Initials whose sender never answers) have a budget of their own and take no
//! session slot, and past a quarter of that budget unvalidated sources are sent a Retry first.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::tap;
use voq_client::{CallOptions, Client, Target, Trust};
use voq_server::{Server, Settings};

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
