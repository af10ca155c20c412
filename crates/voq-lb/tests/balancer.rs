//! The balancer on real loopback sockets, with plain UDP backends that decode the tunnel.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use voq_lb::{DropReason, HealthConfig};
use voq_tunnel::proxy_v2;

#[tokio::test]
async fn routable_packets_reach_the_named_backend_and_replies_come_from_the_vip() {
    let mut a = UdpBackend::start(&[0x0a, 0x01]).await;
    let mut b = UdpBackend::start(&[0x0b, 0x02]).await;
    let lb = balancer(vec![a.backend(), b.backend()], None, None).await;
    let vip = lb.local_addr();
    *b.echo_to.lock().unwrap() = Some(vip);
    let config = quic_lb();
    let client = client().await;

    for i in 0..20u32 {
        let (sid, nonce) = if i % 2 == 0 {
            (a.server_id, u64::from(i))
        } else {
            (b.server_id, u64::from(i) << 20)
        };
        client
            .send_to(&short(&config, &sid, nonce, i), vip)
            .await
            .unwrap();
    }
    // A long-header (Handshake) packet with a routable DCID goes by server id too.
    let mut hs = initial(&config.encode(&a.server_id, &[7; 6]).unwrap(), 100);
    hs[0] = 0xe3;
    client.send_to(&hs, vip).await.unwrap();

    let mut tags_a = Vec::new();
    for _ in 0..11 {
        let g = a.next().await.expect("backend a got too little");
        assert_eq!(
            g.client,
            client.local_addr().unwrap(),
            "real client address"
        );
        assert_eq!(g.vip, vip);
        tags_a.push(tag_of(&g.payload).unwrap());
    }
    let mut tags_b = Vec::new();
    for _ in 0..10 {
        tags_b.push(tag_of(&b.next().await.unwrap().payload).unwrap());
    }
    tags_a.sort_unstable();
    assert_eq!(tags_a, [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 100]);
    assert_eq!(tags_b, [1, 3, 5, 7, 9, 11, 13, 15, 17, 19]);
    assert!(a.quiet_for(Duration::from_millis(100)).await);

    // b echoed each payload back through the VIP: the client sees replies from the VIP,
    // without any PROXY header.
    let mut buf = [0u8; 2048];
    for _ in 0..10 {
        let (n, from) = tokio::time::timeout(WAIT, client.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(from, vip);
        assert!(!proxy_v2::has_signature(&buf[..n]));
        assert_eq!(buf[0], 0x40);
    }

    let s = lb.stats();
    assert_eq!(s.routed, 21);
    assert_eq!(s.fallback_total(), 0);
    assert_eq!(s.dropped_total(), 0);
    let sb = s.backend("0b02").unwrap();
    assert_eq!(sb.to_backend.packets, 10);
    assert_eq!(sb.to_client.packets, 10);
    assert_eq!(s.backend("0a01").unwrap().to_backend.packets, 11);
    lb.shutdown().await;
}

#[tokio::test]
async fn first_flight_sticks_to_one_backend_and_new_flows_spread() {
    let mut backends = [
        UdpBackend::start(&[0, 1]).await,
        UdpBackend::start(&[0, 2]).await,
        UdpBackend::start(&[0, 3]).await,
    ];
    let lb = balancer(backends.iter().map(|b| b.backend()).collect(), None, None).await;
    let vip = lb.local_addr();
    let client = client().await;

    // 300 clients, each with a first flight of 3 Initial packets with the same DCID
    // (Chromium's spans several), interleaved with other clients' packets.
    const FLOWS: u32 = 300;
    let mut sent = 0;
    for round in 0..3u32 {
        for chunk in (0..FLOWS).collect::<Vec<_>>().chunks(50) {
            for &i in chunk {
                let d = initial(&random_dcid(i), i * 10 + round);
                client.send_to(&d, vip).await.unwrap();
                sent += 1;
            }
            // Pace, so that no socket buffer overflows.
            assert!(until(|| backends.iter().map(|b| b.count()).sum::<usize>() == sent).await);
        }
    }
    let mut owner: HashMap<u32, usize> = HashMap::new();
    let mut flows = [0usize; 3];
    for (b, backend) in backends.iter_mut().enumerate() {
        for g in backend.drain() {
            let flow = tag_of(&g.payload).unwrap() / 10;
            match owner.insert(flow, b) {
                None => flows[b] += 1,
                Some(prev) => assert_eq!(prev, b, "flow {flow} split over backends"),
            }
        }
    }
    assert_eq!(owner.len(), FLOWS as usize);
    for (b, &n) in flows.iter().enumerate() {
        // Expected 100 each; 20–46 % of 300 is 60..=138.
        assert!(
            (60..=138).contains(&n),
            "backend {b} got {n} of 300 flows: {flows:?}"
        );
    }
    let s = lb.stats();
    assert_eq!(s.fallback["unroutable"], 900);
    assert_eq!(s.unroutable["unknown_config"], 900);
    lb.shutdown().await;
}

#[tokio::test]
async fn a_down_backend_gets_no_new_flows_but_keeps_its_connections() {
    let mut backends = [
        UdpBackend::start(&[0, 1]).await,
        UdpBackend::start(&[0, 2]).await,
        UdpBackend::start(&[0, 3]).await,
    ];
    // The third stops answering probes.
    backends[2]
        .answer_probes
        .store(false, std::sync::atomic::Ordering::Relaxed);
    let health = HealthConfig {
        enabled: true,
        interval: Duration::from_millis(100),
        down_after: 3,
        up_after: 2,
    };
    let lb = balancer(
        backends.iter().map(|b| b.backend()).collect(),
        Some(health),
        None,
    )
    .await;
    let vip = lb.local_addr();
    assert!(until(|| !lb.stats().backend("0003").unwrap().up).await);
    assert!(lb.stats().probes_answered > 0);

    let client = client().await;
    let config = quic_lb();
    let mut sent = 0;
    for i in 0..150u32 {
        client
            .send_to(&initial(&random_dcid(i), i), vip)
            .await
            .unwrap();
        sent += 1;
        if i % 30 == 29 {
            assert!(until(|| backends.iter().map(|b| b.count()).sum::<usize>() == sent).await);
        }
    }
    // Its existing connections (short headers naming it) still reach it.
    for i in 0..10u32 {
        client
            .send_to(&short(&config, &[0, 3], u64::from(i), 1000 + i), vip)
            .await
            .unwrap();
    }
    // An Initial whose DCID happens to decode to the down backend is hashed elsewhere.
    client
        .send_to(
            &initial(&config.encode(&[0, 3], &[1; 6]).unwrap(), 2000),
            vip,
        )
        .await
        .unwrap();
    sent += 11;
    assert!(until(|| backends.iter().map(|b| b.count()).sum::<usize>() == sent).await);
    let got: Vec<u32> = backends[2]
        .drain()
        .iter()
        .map(|g| tag_of(&g.payload).unwrap())
        .collect();
    assert_eq!(got, (1000..1010).collect::<Vec<_>>());
    let others: usize = backends[..2].iter_mut().map(|b| b.drain().len()).sum();
    assert_eq!(others, 151);
    assert_eq!(lb.stats().fallback["down"], 1);

    // It answers again: two good rounds bring it back for new flows.
    backends[2]
        .answer_probes
        .store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(until(|| lb.stats().backend("0003").unwrap().up).await);
    lb.shutdown().await;
}

#[tokio::test]
async fn reload_adds_a_backend_without_dropping_packets() {
    let mut a = UdpBackend::start(&[0, 1]).await;
    let mut b = UdpBackend::start(&[0, 2]).await;
    let lb = balancer(vec![a.backend()], None, None).await;
    let vip = lb.local_addr();
    let config = quic_lb();
    let client = client().await;
    for (sent, i) in (0..400u32).enumerate() {
        let sent_to_a = sent + 1;
        client
            .send_to(&short(&config, &[0, 1], u64::from(i), i), vip)
            .await
            .unwrap();
        if i == 200 {
            lb.reload(vec![a.backend(), b.backend()]).unwrap();
        }
        if i % 40 == 39 {
            assert!(until(|| a.count() == sent_to_a).await, "a lost packets");
        }
    }
    assert!(until(|| a.count() == 400).await);
    let tags: Vec<u32> = a
        .drain()
        .iter()
        .map(|g| tag_of(&g.payload).unwrap())
        .collect();
    let mut sorted = tags.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        (0..400).collect::<Vec<_>>(),
        "every packet arrived once"
    );

    // The new backend takes its own connections and a share of new flows.
    client
        .send_to(&short(&config, &[0, 2], 1, 7), vip)
        .await
        .unwrap();
    assert_eq!(tag_of(&b.next().await.unwrap().payload), Some(7));
    for i in 0..60u32 {
        client
            .send_to(&initial(&random_dcid(i), i), vip)
            .await
            .unwrap();
    }
    assert!(until(|| a.count() + b.count() == 400 + 1 + 60).await);
    assert!(b.count() > 1, "no new flow went to the added backend");
    assert_eq!(lb.stats().dropped_total(), 0);
    assert_eq!(lb.table().len(), 2);
    lb.shutdown().await;
}

#[tokio::test]
async fn malformed_and_non_quic_datagrams_are_dropped_and_counted() {
    let mut a = UdpBackend::start(&[0, 1]).await;
    let lb = balancer(vec![a.backend()], None, None).await;
    let vip = lb.local_addr();
    let client = client().await;
    let junk: Vec<(Vec<u8>, DropReason)> = vec![
        (vec![], DropReason::NotQuic), // empty datagram
        (vec![0xc0, 0, 0, 0, 1, 20, 1, 2], DropReason::NotQuic), // DCID runs past the end
        (vec![0xc0, 0, 0], DropReason::NotQuic), // no version
        (vec![0x40], DropReason::TooShort), // short header, no DCID
        (vec![0xc0, 0, 0, 0, 1, 0, 0, 0, 0], DropReason::TooShort), // empty DCID
        (vec![0x40, 0x3f, 1, 2], DropReason::Malformed), // config 1 self-encodes 32 octets
    ];
    for (d, _) in &junk {
        client.send_to(d, vip).await.unwrap();
    }
    let expected = |r: DropReason| junk.iter().filter(|(_, x)| *x == r).count() as u64;
    assert!(until(|| lb.stats().dropped_total() == junk.len() as u64).await);
    let s = lb.stats();
    for r in [
        DropReason::NotQuic,
        DropReason::TooShort,
        DropReason::Malformed,
    ] {
        assert_eq!(s.dropped(r), expected(r), "{r}: {:?}", s.dropped);
    }
    assert_eq!(s.unroutable["not_quic"], 3);
    assert_eq!(s.unroutable["too_short"], 2);
    assert_eq!(s.unroutable["dcid_length_mismatch"], 1);
    let text = s.render_prometheus();
    assert!(text.contains("voq_lb_dropped_total{reason=\"not_quic\"} 3"));
    // Text that happens to parse as a short header with a delimitable DCID (config id 2,
    // unknown) is hashed like any unroutable packet: the backend's QUIC stack drops it.
    let http = b"GET / HTTP/1.1\r\n\r\n";
    client.send_to(http, vip).await.unwrap();
    assert_eq!(a.next().await.unwrap().payload, http);
    // Still working.
    client
        .send_to(&short(&quic_lb(), &[0, 1], 1, 5), vip)
        .await
        .unwrap();
    assert_eq!(tag_of(&a.next().await.unwrap().payload), Some(5));
    assert!(a.quiet_for(Duration::from_millis(50)).await);
    lb.shutdown().await;
}

#[tokio::test]
async fn a_spoofed_proxy_header_from_a_non_backend_is_dropped() {
    // A backend that is just a socket, so the test can send anything from its address.
    let backend = client().await;
    let sid = voq_quic_lb::ServerId::from_slice(&[0, 1]).unwrap();
    let lb = balancer(
        vec![voq_lb::Backend::new(sid, backend.local_addr().unwrap())],
        None,
        None,
    )
    .await;
    let vip = lb.local_addr();
    let attacker = client().await;
    let victim = client().await;
    let victim_addr = victim.local_addr().unwrap();
    let mut buf = [0u8; 64];
    let nothing_for_the_victim = |victim: &tokio::net::UdpSocket| {
        let mut buf = [0u8; 64];
        victim.try_recv_from(&mut buf).is_err()
    };

    // The attacker asks the VIP to send a payload to the victim.
    let mut forged = Vec::new();
    proxy_v2::encode(vip, victim_addr, b"\x40spoofed", &mut forged);
    attacker.send_to(&forged, vip).await.unwrap();
    assert!(until(|| lb.stats().dropped(DropReason::SpoofedProxyHeader) == 1).await);
    // Counted as dropped and nothing sent: the balancer decided before any send could happen.
    assert_eq!(lb.stats().sent.packets, 0);
    assert!(nothing_for_the_victim(&victim), "the victim got a datagram");

    // From the backend's address: no header, a bad header, a LOCAL header are dropped too.
    backend.send_to(b"\x40no header", vip).await.unwrap();
    let mut bad = forged.clone();
    bad[12] = 0x25; // command 5
    backend.send_to(&bad, vip).await.unwrap();
    backend.send_to(&proxy_v2::LOCAL, vip).await.unwrap();
    assert!(until(|| lb.stats().dropped_total() == 4).await);
    let s = lb.stats();
    assert_eq!(s.dropped(DropReason::BadProxyHeader), 2);
    assert_eq!(s.dropped(DropReason::UnexpectedLocal), 1);

    // The same header from the backend is a reply: the victim, now a client, gets it.
    backend.send_to(&forged, vip).await.unwrap();
    let (n, from) = tokio::time::timeout(WAIT, victim.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((&buf[..n], from), (&b"\x40spoofed"[..], vip));
    lb.shutdown().await;
}

#[tokio::test]
async fn a_restarted_balancer_still_routes_the_same_connection() {
    let mut backends = [
        UdpBackend::start(&[0, 1]).await,
        UdpBackend::start(&[0, 2]).await,
        UdpBackend::start(&[0, 3]).await,
    ];
    let list: Vec<_> = backends.iter().map(|b| b.backend()).collect();
    let lb = balancer(list.clone(), None, None).await;
    let vip = lb.local_addr();
    let client = client().await;
    let config = quic_lb();
    // First packets: a client Initial (hashed) and a short header for server 0002.
    client
        .send_to(&initial(&random_dcid(42), 1), vip)
        .await
        .unwrap();
    client
        .send_to(&short(&config, &[0, 2], 9, 2), vip)
        .await
        .unwrap();
    assert!(until(|| backends.iter().map(|b| b.count()).sum::<usize>() == 2).await);
    let before: Vec<Vec<u32>> = backends
        .iter_mut()
        .map(|b| {
            b.drain()
                .iter()
                .map(|g| tag_of(&g.payload).unwrap())
                .collect()
        })
        .collect();

    lb.shutdown().await;
    let lb = balancer(list, None, Some(vip)).await;
    assert_eq!(lb.local_addr(), vip);
    // The next packets of the same connections.
    client
        .send_to(&initial(&random_dcid(42), 1), vip)
        .await
        .unwrap();
    client
        .send_to(&short(&config, &[0, 2], 10, 2), vip)
        .await
        .unwrap();
    assert!(until(|| backends.iter().map(|b| b.count()).sum::<usize>() == 4).await);
    let after: Vec<Vec<u32>> = backends
        .iter_mut()
        .map(|b| {
            b.drain()
                .iter()
                .map(|g| tag_of(&g.payload).unwrap())
                .collect()
        })
        .collect();
    assert_eq!(before, after, "a restart moved a connection");
    assert!(before[1].contains(&2));
    lb.shutdown().await;
}
