//! 0-RTT never acts before the handshake (issue #12, item 4). An on-path attacker withholds a
//! resuming client's first flight — its Initial and the 0-RTT packets that carry a whole
//! push-to-talk turn — and later delivers it from its own address. The attacker cannot complete
//! the handshake (it has no keys), so the server must not commit that turn or start an agent for
//! it: 0-RTT data waits, in quinn's buffers, until a handshake that never comes.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::tap;
use voq_client::{CallOptions, Client, Target, Trust};
use voq_server::{Server, SessionEventKind, Settings, wait_for_event};

fn prompt() -> Vec<i16> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/audio/prompt-carwash-24k.wav");
    let mut pcm = voq_audio::read_wav_file(path)
        .unwrap()
        .to_mono_24k()
        .unwrap();
    pcm.truncate(4_800); // 200 ms: the whole turn fits the first flight
    pcm
}

/// A resuming call to `target` whose first flight (Initial + 0-RTT) goes into a tap and no
/// further: the call fails, and the captured datagrams are returned.
async fn withheld_first_flight(client: &Client, target: Target, opts: CallOptions) -> Vec<Vec<u8>> {
    let (tap_addr, captured) = tap().await;
    let withheld = Target {
        addr: tap_addr,
        ..target
    };
    // The client gives up before its first probe timeout (3 × the 100 ms initial RTT of
    // voq_transport::recovery), so the tap holds the first flight only (Initial, its copy, the
    // 0-RTT packets) and not a train of probes to replay with it.
    let opts = CallOptions {
        timeout: Duration::from_millis(250),
        ..opts
    };
    let lost = client.call(&withheld, opts).await;
    assert!(lost.is_err(), "nothing answered the withheld call");
    captured.lock().unwrap().clone()
}

/// What a server must not do for a replayed flight: hold a turn's audio, commit it, respond.
fn acted_on_a_turn(kind: &SessionEventKind) -> bool {
    matches!(
        kind,
        SessionEventKind::TurnFirstAudio { .. }
            | SessionEventKind::TurnCommitted { .. }
            | SessionEventKind::ResponseStarted { .. }
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withheld_first_flight_delivered_later_commits_nothing_and_runs_no_agent() {
    let server = Server::start(Settings::loopback("echo")).await.unwrap();
    let client = Client::new(
        &Trust::cert_hash(&server.cert_sha256()).unwrap(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    let opts = CallOptions {
        turns: vec![prompt()],
        input_speed: 0.0,
        ..Default::default()
    };
    // A first call gives the client a session ticket for "localhost".
    let direct = Target {
        addr: server.local_addr(),
        server_name: "localhost".into(),
        tls: true,
    };
    client.call(&direct, opts.clone()).await.unwrap();

    // The second call resumes: its first flight (Initial + 0-RTT with the whole turn) goes into
    // the tap and no further. The client gives up.
    let flight = withheld_first_flight(&client, direct, opts).await;
    assert!(
        flight.len() >= 2 && flight.iter().map(Vec::len).sum::<usize>() > 9_600,
        "the first flight carried the turn in 0-RTT: {} datagrams",
        flight.len()
    );

    // Later, from the attacker's own address.
    let mut events = server.events();
    let attacker = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for datagram in &flight {
        attacker
            .send_to(datagram, server.local_addr())
            .await
            .unwrap();
    }
    // The server answers the Initial (it cannot know yet) but acts on nothing in 0-RTT: an
    // observation window, since what must not happen is an event.
    let mut answer = [0u8; 2048];
    let answered =
        tokio::time::timeout(Duration::from_secs(10), attacker.recv_from(&mut answer)).await;
    assert!(answered.is_ok(), "the replayed Initial reached the server");
    let acted = wait_for_event(&mut events, Duration::from_secs(2), acted_on_a_turn).await;
    assert!(
        acted.is_none(),
        "the server acted on 0-RTT data before a handshake: {acted:?}"
    );
    assert_eq!(
        server.stats().turns_committed.get(),
        1,
        "only the first call's turn"
    );
    assert_eq!(
        server.stats().responses_started.get(),
        1,
        "only the first call's agent"
    );
}

/// Two servers of one fleet (one fleet secret): a ticket from A resumes with 0-RTT at B, and a
/// captured first flight (Initial + a whole turn in 0-RTT) replayed from another address to
/// either server acts on nothing at either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_tickets_resume_anywhere_and_a_replayed_flight_acts_nowhere() {
    let secret = "5e".repeat(32);
    let fleet_server = || async {
        Server::start(Settings {
            fleet: Some(voq_server::fleet::FleetKeys::parse(&secret).unwrap()),
            ..Settings::loopback("echo")
        })
        .await
        .unwrap()
    };
    let (a, b) = (fleet_server().await, fleet_server().await);
    let client = Client::new(&Trust::Insecure, "127.0.0.1:0".parse().unwrap()).unwrap();
    let opts = CallOptions {
        turns: vec![prompt()],
        input_speed: 0.0,
        ..Default::default()
    };
    let at = |server: &Server| Target {
        addr: server.local_addr(),
        server_name: "localhost".into(),
        tls: true,
    };
    let first = client.call(&at(&a), opts.clone()).await.unwrap();
    assert!(!first.report.zero_rtt);
    // Resumed at the other server: it decrypts A's ticket and takes the early data.
    let resumed = client.call(&at(&b), opts.clone()).await.unwrap();
    assert!(
        resumed.report.zero_rtt,
        "B did not accept A's ticket with 0-RTT"
    );
    assert_eq!(resumed.report.setup.first_prompt_byte_rtts, 0.0);
    assert_eq!(resumed.reply_received, prompt());

    // A resumption whose first flight is captured on the way and never arrives.
    let flight = withheld_first_flight(&client, at(&a), opts).await;
    assert!(
        flight.iter().map(Vec::len).sum::<usize>() > 9_600,
        "the turn rode in 0-RTT"
    );
    // Replayed from the attacker's own address, to both servers.
    let (mut events_a, mut events_b) = (a.events(), b.events());
    let attacker = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for server in [&a, &b] {
        for datagram in &flight {
            attacker
                .send_to(datagram, server.local_addr())
                .await
                .unwrap();
        }
    }
    let (on_a, on_b) = tokio::join!(
        wait_for_event(&mut events_a, Duration::from_secs(3), acted_on_a_turn),
        wait_for_event(&mut events_b, Duration::from_secs(3), acted_on_a_turn)
    );
    assert!(
        on_a.is_none() && on_b.is_none(),
        "acted on a replay: {on_a:?} {on_b:?}"
    );
    for (server, turns) in [(&a, 1), (&b, 1)] {
        assert_eq!(server.stats().turns_committed.get(), turns);
        assert_eq!(server.stats().responses_started.get(), turns);
    }
}

/// A ticket one server cannot decrypt (another fleet's, or a restarted server's): the server
/// rejects the 0-RTT data, and the client starts the session again on 1-RTT, losing nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_0rtt_starts_the_session_again_and_loses_nothing() {
    let issuer = Server::start(Settings {
        fleet: Some(voq_server::fleet::FleetKeys::parse(&"7a".repeat(32)).unwrap()),
        ..Settings::loopback("echo")
    })
    .await
    .unwrap();
    let stranger = Server::start(Settings::loopback("echo")).await.unwrap();
    let client = Client::new(&Trust::Insecure, "127.0.0.1:0".parse().unwrap()).unwrap();
    let opts = CallOptions {
        turns: vec![prompt()],
        input_speed: 0.0,
        timeout: Duration::from_secs(20),
        ..Default::default()
    };
    let at = |server: &Server| Target {
        addr: server.local_addr(),
        server_name: "localhost".into(),
        tls: true,
    };
    client.call(&at(&issuer), opts.clone()).await.unwrap();
    let outcome = client.call(&at(&stranger), opts).await.unwrap();
    assert!(
        outcome.report.setup.zero_rtt_rejected,
        "{:?}",
        outcome.report.setup
    );
    assert!(!outcome.report.zero_rtt);
    assert_eq!(outcome.reply_received, prompt());
    assert_eq!(stranger.stats().turns_committed.get(), 1);
}
