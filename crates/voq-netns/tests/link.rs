//! Real traffic across a [`NetnsLink`]: UDP, TCP, blackouts, cleanup.
//!
//! These tests need root (network namespaces, TUN devices). Each calls `require_netns!()`
//! first: when [`NetnsLink::available`] fails it prints `SKIPPED: <reason>` and returns, so a
//! developer without root still gets a green run. CI runs as root, so there they run for real;
//! set `VOQ_NETNS_REQUIRED=1` to turn a skip into a failure.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use voq_netns::{
    A_ADDR, A_ADDR2, B_ADDR, Direction, LinkConfig, NetnsConfig, NetnsLink, Side, TUN_NAME,
};

/// Skips the test (prints `SKIPPED: <reason>`) when namespaces are not available here.
macro_rules! require_netns {
    () => {
        if let Err(why) = NetnsLink::available() {
            if std::env::var_os("VOQ_NETNS_REQUIRED").is_some_and(|v| v == "1") {
                panic!("VOQ_NETNS_REQUIRED=1 but namespaces are unavailable: {why}");
            }
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
}

const WAIT: Duration = Duration::from_secs(5);

fn delay(ms: f64) -> LinkConfig {
    LinkConfig {
        delay_ms: ms,
        ..LinkConfig::default()
    }
}

/// A UDP echo server on `B_ADDR:port` in namespace b, until `stop` is set.
fn echo_server(link: &NetnsLink, port: u16) -> (Arc<AtomicBool>, thread::JoinHandle<u64>) {
    let socket = link
        .ns(Side::B)
        .enter(|| UdpSocket::bind((B_ADDR, port)))
        .unwrap()
        .unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let handle = thread::spawn(move || {
        let mut echoed = 0;
        let mut buf = [0u8; 2048];
        while !stopped.load(Ordering::Relaxed) {
            if let Ok((n, from)) = socket.recv_from(&mut buf) {
                socket.send_to(&buf[..n], from).unwrap();
                echoed += 1;
            }
        }
        echoed
    });
    (stop, handle)
}

/// A client socket in namespace a.
fn client(link: &NetnsLink) -> UdpSocket {
    let socket = link
        .ns(Side::A)
        .enter(|| UdpSocket::bind((A_ADDR, 0)))
        .unwrap()
        .unwrap();
    socket.set_read_timeout(Some(WAIT)).unwrap();
    socket
}

/// Sends `count` numbered pings one at a time and returns each round-trip time.
fn ping(socket: &UdpSocket, to: SocketAddr, count: u32) -> Vec<Duration> {
    let mut rtts = Vec::new();
    let mut buf = [0u8; 2048];
    for seq in 0..count {
        let sent = Instant::now();
        socket.send_to(&seq.to_be_bytes(), to).unwrap();
        let (n, from) = socket
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("ping {seq}: no echo within {WAIT:?}: {e}"));
        assert_eq!((from, &buf[..n]), (to, &seq.to_be_bytes()[..]));
        rtts.push(sent.elapsed());
    }
    rtts
}

/// (a) Ping-like UDP echo: with no impairment every datagram comes back, quickly; then with
/// 50 ms each way (set at run time) every round trip takes at least 100 ms.
#[test]
fn udp_echo_arrives_and_sees_the_delay() {
    require_netns!();
    let link = NetnsLink::create(NetnsConfig::default()).unwrap();
    let (stop, server) = echo_server(&link, 7000);
    let socket = client(&link);
    let to = SocketAddr::from((B_ADDR, 7000));

    let rtts = ping(&socket, to, 200);
    assert_eq!(rtts.len(), 200);
    let fastest = rtts.iter().min().unwrap();
    assert!(*fastest < Duration::from_millis(20), "fastest {fastest:?}");
    let up = link.stats(Direction::AToB);
    assert_eq!(up.dropped.total(), 0);
    assert!(up.delivered >= 200, "{up:?}");

    for direction in Direction::BOTH {
        link.set_config(direction, delay(50.0)).unwrap();
    }
    let rtts = ping(&socket, to, 5);
    for rtt in &rtts {
        assert!(*rtt >= Duration::from_millis(100), "rtt {rtt:?}");
        assert!(*rtt < Duration::from_secs(1), "rtt {rtt:?}");
    }

    stop.store(true, Ordering::Relaxed);
    assert_eq!(server.join().unwrap(), 205);
    assert_eq!(link.io_errors(Direction::AToB), (0, 0));
    assert_eq!(link.io_errors(Direction::BToA), (0, 0));
    assert_eq!(link.forwarder_error(), None);
    link.close().unwrap();
}

/// (a) A link created with a 50 ms one-way delay: every round trip takes at least 100 ms,
/// nothing is lost.
#[test]
fn udp_echo_with_configured_50ms_delay() {
    require_netns!();
    let link = NetnsLink::create(NetnsConfig::symmetric(delay(50.0))).unwrap();
    let (stop, server) = echo_server(&link, 7001);
    let socket = client(&link);
    let rtts = ping(&socket, (B_ADDR, 7001).into(), 10);
    eprintln!("round trips: {rtts:?}");
    for rtt in &rtts {
        assert!(*rtt >= Duration::from_millis(100), "rtt {rtt:?}");
    }
    stop.store(true, Ordering::Relaxed);
    assert_eq!(server.join().unwrap(), 10);
    let (up, down) = (link.stats(Direction::AToB), link.stats(Direction::BToA));
    assert_eq!((up.dropped.total(), down.dropped.total()), (0, 0));
    assert_eq!((up.delivered, down.delivered), (10, 10));
}

/// Pseudo-random bytes, so a reordering or corruption cannot go unnoticed.
fn payload(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// (b) TCP through 5 % random loss each way still moves 1 MB intact: TCP crosses the same
/// impaired path as UDP, and retransmits.
#[test]
fn tcp_transfers_1mb_intact_through_5_percent_loss() {
    require_netns!();
    let lossy = LinkConfig {
        loss: 0.05,
        delay_ms: 1.0,
        ..LinkConfig::default()
    };
    let link = NetnsLink::create(NetnsConfig::symmetric(lossy).with_seed(7)).unwrap();
    let listener = link
        .ns(Side::B)
        .enter(|| TcpListener::bind((B_ADDR, 5000)))
        .unwrap()
        .unwrap();
    let mut sender = link
        .ns(Side::A)
        .enter(|| TcpStream::connect_timeout(&(B_ADDR, 5000).into(), Duration::from_secs(20)))
        .unwrap()
        .unwrap();
    // The handshake is done: the connection waits in the backlog.
    let (mut receiver, peer) = listener.accept().unwrap();
    assert_eq!(peer.ip(), A_ADDR);

    let data = payload(1 << 20);
    let expected = data.clone();
    sender
        .set_write_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let writer = thread::spawn(move || {
        sender.write_all(&data).unwrap();
        sender.shutdown(std::net::Shutdown::Write).unwrap();
    });
    receiver
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let started = Instant::now();
    let mut got = Vec::new();
    receiver.read_to_end(&mut got).unwrap();
    writer.join().unwrap();
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "the bytes differ");

    let (up, down) = (link.stats(Direction::AToB), link.stats(Direction::BToA));
    eprintln!(
        "1 MB in {:?}; a→b {} packets, {} lost; b→a {} packets, {} lost",
        started.elapsed(),
        up.sent,
        up.dropped.random_loss,
        down.sent,
        down.dropped.random_loss
    );
    // Data segments and ACKs were both lost, and TCP made up for it.
    assert!(up.dropped.random_loss > 10, "{up:?}");
    assert!(down.dropped.random_loss > 0, "{down:?}");
    assert!(up.sent > 700, "{up:?}");
}

/// (c) A 1 s blackout loses exactly the datagrams sent within it; everything sent before or
/// after arrives.
#[test]
fn blackout_drops_everything_sent_within_it() {
    require_netns!();
    let link = NetnsLink::create(NetnsConfig::default()).unwrap();
    let receiver = link
        .ns(Side::B)
        .enter(|| UdpSocket::bind((B_ADDR, 7002)))
        .unwrap()
        .unwrap();
    // Longer than the blackout: the receiver stops after this long without a datagram.
    receiver
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let received = thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 64];
        while let Ok(n) = receiver.recv(&mut buf) {
            seen.push(u32::from_be_bytes(buf[..n].try_into().unwrap()));
        }
        seen
    });
    let sender = client(&link);

    // One datagram every 10 ms for 3 s; the blackout starts between two of them, at 1 s.
    let period = Duration::from_millis(10);
    let start = Instant::now();
    let mut sent_at = BTreeMap::new();
    let mut window = None;
    for seq in 0u32..300 {
        let due = start + period * seq;
        thread::sleep(due.saturating_duration_since(Instant::now()));
        sent_at.insert(seq, Instant::now());
        sender.send_to(&seq.to_be_bytes(), (B_ADDR, 7002)).unwrap();
        if seq == 99 {
            thread::sleep(period / 2);
            let from = link.blackout(Direction::AToB, Duration::from_secs(1));
            window = Some((from, from + Duration::from_secs(1)));
        }
    }
    let seen = received.join().unwrap();
    let (from, until) = window.unwrap();

    // A datagram is read by the forwarder microseconds after it is sent: allow 3 ms of skew.
    let margin = Duration::from_millis(3);
    let mut judged = 0;
    for (seq, at) in &sent_at {
        let inside = *at >= from + margin && *at + margin < until;
        let outside = *at + margin < from || *at >= until + margin;
        if inside {
            assert!(
                !seen.contains(seq),
                "{seq} was sent in the blackout and arrived"
            );
        } else if outside {
            assert!(
                seen.contains(seq),
                "{seq} was sent outside the blackout and was lost"
            );
        }
        judged += usize::from(inside || outside);
    }
    assert!(
        judged >= 290,
        "only {judged} datagrams far enough from the edges"
    );

    let stats = link.stats(Direction::AToB);
    let lost = sent_at.len() - seen.len();
    assert_eq!(stats.dropped.blackout, lost as u64);
    assert!((97..=103).contains(&lost), "lost {lost}");
    assert_eq!(stats.dropped.total(), stats.dropped.blackout);
}

fn listed_namespaces() -> String {
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

fn names(link: &NetnsLink) -> [String; 2] {
    [Side::A, Side::B].map(|side| link.name(side).to_owned())
}

fn assert_gone(names: &[String]) {
    let listed = listed_namespaces();
    for name in names {
        assert!(
            !listed
                .lines()
                .any(|l| l.split_whitespace().next() == Some(name)),
            "{name} is still there:\n{listed}"
        );
        assert!(!std::path::Path::new("/run/netns").join(name).exists());
    }
}

/// (d) Dropping the link deletes both namespaces (and their devices) and kills processes left
/// in them.
#[test]
fn drop_deletes_namespaces_and_kills_their_processes() {
    require_netns!();
    let link = NetnsLink::create(NetnsConfig::default()).unwrap();
    let names = names(&link);
    let listed = listed_namespaces();
    for name in &names {
        assert!(listed.contains(name.as_str()), "{name} missing:\n{listed}");
    }
    let mut sleeper = link.spawn_in(Side::B, &["sleep", "30"]).unwrap();
    // `ip netns exec` has switched namespaces once the process shows up in `ip netns pids`.
    let deadline = Instant::now() + WAIT;
    while !link
        .run_in(Side::A, &["ip", "netns", "pids", link.name(Side::B)])
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false)
    {
        assert!(
            Instant::now() < deadline,
            "sleep never entered the namespace"
        );
        thread::sleep(Duration::from_millis(5));
    }

    drop(link);
    assert_gone(&names);
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = sleeper.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the process in the namespace survived"
        );
        thread::sleep(Duration::from_millis(5));
    };
    assert!(!status.success());
}

/// (d) A panic in the test body still cleans up: `Drop` runs while unwinding.
#[test]
fn panic_in_test_body_still_cleans_up() {
    require_netns!();
    let created = Mutex::new(Vec::new());
    let result = std::panic::catch_unwind(|| {
        let link = NetnsLink::create(NetnsConfig::default()).unwrap();
        created.lock().unwrap().extend(names(&link));
        panic!("the test body fails with the link alive");
    });
    assert!(result.is_err());
    let created = created.into_inner().unwrap();
    assert_eq!(created.len(), 2);
    assert_gone(&created);
}

/// (d) Leftovers of a process that died without cleaning up (SIGKILL) are swept at the next
/// `create`.
#[test]
fn create_sweeps_leftovers_of_dead_processes() {
    require_netns!();
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    assert!(
        !std::path::Path::new("/proc")
            .join(dead.to_string())
            .exists()
    );
    let stale = format!("voq-{dead}-0-a");
    let add = std::process::Command::new("ip")
        .args(["netns", "add", &stale])
        .status()
        .unwrap();
    assert!(add.success());

    let link = NetnsLink::create(NetnsConfig::default()).unwrap();
    // Removed by this create's sweep (or a concurrent test's).
    assert_gone(std::slice::from_ref(&stale));
    drop(link);
}

/// The address plan: a has 198.18.0.1 (and 198.18.0.5 on request), b 198.18.0.2; only the
/// link's own subnets are routed, nothing goes out; the second client address works.
#[test]
fn addresses_and_routes_stay_inside() {
    require_netns!();
    let link = NetnsLink::create(NetnsConfig::default().with_second_client_address(true)).unwrap();
    assert_eq!(link.ns(Side::A).addresses(), &[A_ADDR, A_ADDR2]);
    assert_eq!(link.ns(Side::B).address(), B_ADDR);

    for side in [Side::A, Side::B] {
        let routes = link.run_in(side, &["ip", "-4", "route"]).unwrap();
        assert!(routes.status.success());
        let routes = String::from_utf8(routes.stdout).unwrap();
        assert!(!routes.contains("default"), "{routes}");
        for line in routes.lines() {
            assert!(line.starts_with("198.18.0."), "unexpected route {line}");
            assert!(line.contains(TUN_NAME), "{line}");
        }
    }
    // Anything beyond the link is unreachable from inside.
    let socket = link
        .ns(Side::A)
        .enter(|| UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)))
        .unwrap()
        .unwrap();
    let err = socket
        .send_to(b"x", (Ipv4Addr::new(198, 19, 0, 1), 9))
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(101), "{err}"); // ENETUNREACH

    // The second client address reaches b and is seen as such.
    let (stop, server) = echo_server(&link, 7003);
    let second = link
        .ns(Side::A)
        .enter(|| UdpSocket::bind((A_ADDR2, 0)))
        .unwrap()
        .unwrap();
    second.set_read_timeout(Some(WAIT)).unwrap();
    ping(&second, (B_ADDR, 7003).into(), 3);
    stop.store(true, Ordering::Relaxed);
    assert_eq!(server.join().unwrap(), 3);
}

/// `block_on` runs async code in a namespace: a tokio socket made there talks across the link.
#[test]
fn block_on_runs_async_code_in_a_namespace() {
    require_netns!();
    let link = NetnsLink::create(NetnsConfig::default()).unwrap();
    let (stop, server) = echo_server(&link, 7004);
    let echoed = link
        .ns(Side::A)
        .block_on(|| async {
            let socket = tokio::net::UdpSocket::bind((A_ADDR, 0)).await.unwrap();
            socket.send_to(b"hello", (B_ADDR, 7004)).await.unwrap();
            let mut buf = [0u8; 16];
            let (n, _) = tokio::time::timeout(WAIT, socket.recv_from(&mut buf))
                .await
                .unwrap()
                .unwrap();
            buf[..n].to_vec()
        })
        .unwrap();
    assert_eq!(echoed, b"hello");
    stop.store(true, Ordering::Relaxed);
    server.join().unwrap();
}
