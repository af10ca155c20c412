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
    let (tap_addr, captured) = tap().await;
    let withheld = Target {
        addr: tap_addr,
        ..direct
    };
    let lost = client
        .call(
            &withheld,
            CallOptions {
                timeout: Duration::from_secs(2),
                ..opts
            },
        )
        .await;
    assert!(lost.is_err(), "nothing answered the withheld call");
    let flight = captured.lock().unwrap().clone();
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
    let acted = wait_for_event(&mut events, Duration::from_secs(2), |k| {
        matches!(
            k,
            SessionEventKind::TurnFirstAudio { .. }
                | SessionEventKind::TurnCommitted { .. }
                | SessionEventKind::ResponseStarted { .. }
        )
    })
    .await;
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
