//! No per-connection state: memory stays flat however many distinct DCIDs pass.
//!
//! Alone in its test binary, so no other test allocates while RSS is measured.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use voq_lb::{Decision, RoutingTable};

/// Resident set size in bytes, from /proc/self/statm (Linux), in 4 KiB pages.
fn rss() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn distinct_dcid(i: u32) -> [u8; 8] {
    let mut d = random_dcid(i);
    d[4..].copy_from_slice(&i.to_be_bytes());
    d
}

#[tokio::test]
async fn memory_stays_flat_from_1k_to_100k_distinct_dcids() {
    let mut backends = [
        UdpBackend::start(&[0, 1]).await,
        UdpBackend::start(&[0, 2]).await,
        UdpBackend::start(&[0, 3]).await,
    ];
    for b in &mut backends {
        b.store.store(false, std::sync::atomic::Ordering::Relaxed);
    }
    let list: Vec<_> = backends.iter().map(|b| b.backend()).collect();

    // The routing function alone: 1k, then 100k more distinct DCIDs.
    let table = RoutingTable::new(vec![quic_lb()], list.clone()).unwrap();
    let shape = format!("{table:?}");
    let mut per_backend = [0u32; 3];
    let mut route = |from: u32, to: u32| {
        for i in from..to {
            match table.route(&initial(&distinct_dcid(i), i)) {
                Decision::Hashed(b, _) => per_backend[b] += 1,
                other => panic!("{other:?}"),
            }
        }
    };
    route(0, 1_000);
    let rss_1k = rss();
    route(1_000, 101_000);
    let rss_100k = rss();
    assert_eq!(
        format!("{table:?}"),
        shape,
        "the table changed while routing"
    );
    assert_eq!(per_backend.iter().sum::<u32>(), 101_000);
    if let (Some(a), Some(b)) = (rss_1k, rss_100k) {
        assert!(b.saturating_sub(a) < 1 << 20, "RSS grew {} bytes", b - a);
    }

    // The same through the running balancer's sockets.
    let lb = balancer(list, None, None).await;
    let vip = lb.local_addr();
    let client = client().await;
    let total = || backends.iter().map(|b| b.count()).sum::<usize>();
    let mut sent = 0usize;
    let mut send = async |from: u32, to: u32| {
        for i in from..to {
            client
                .send_to(&initial(&distinct_dcid(i), i), vip)
                .await
                .unwrap();
            sent += 1;
            if sent.is_multiple_of(200) {
                assert!(until(|| total() == sent).await, "packets lost");
            }
        }
        assert!(until(|| total() == sent).await, "packets lost");
    };
    send(0, 1_000).await;
    let rss_1k = rss();
    let stats_1k = lb.stats();
    send(1_000, 101_000).await;
    let rss_100k = rss();
    let stats = lb.stats();
    assert_eq!(stats.fallback["unroutable"], 101_000);
    assert_eq!(stats.dropped_total(), 0);
    assert_eq!(stats.backends.len(), stats_1k.backends.len());
    assert_eq!(lb.table().len(), 3);
    if let (Some(a), Some(b)) = (rss_1k, rss_100k) {
        // Allocator noise and tokio's buffers only: per-DCID state would be megabytes.
        assert!(
            b.saturating_sub(a) < 4 << 20,
            "RSS grew {} KiB over 100k DCIDs",
            (b - a) >> 10
        );
        eprintln!(
            "RSS after 1k DCIDs {} KiB, after 101k {} KiB",
            a >> 10,
            b >> 10
        );
    }
    lb.shutdown().await;
}
