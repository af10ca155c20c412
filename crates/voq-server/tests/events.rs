//! The observation hook (`Server::events`): what a session reports, in order, on the same
//! monotonic clock as the client.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use voq_client::{CallOptions, Client, Target, Trust};
use voq_server::{Server, SessionEvent, SessionEventKind, Settings, wait_for_event};

fn prompt(ms: usize) -> Vec<i16> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/audio/prompt-carwash-24k.wav");
    let mut pcm = voq_audio::read_wav_file(path)
        .unwrap()
        .to_mono_24k()
        .unwrap();
    pcm.truncate(ms * 24);
    pcm
}

async fn call(server: &Server, opts: CallOptions) -> voq_client::CallOutcome {
    let trust = Trust::cert_hash(&server.cert_sha256()).unwrap();
    let client = Client::new(&trust, "127.0.0.1:0".parse().unwrap()).unwrap();
    let target = Target {
        addr: server.local_addr(),
        server_name: "localhost".into(),
        tls: true,
    };
    client.call(&target, opts).await.unwrap()
}

fn drain(rx: &mut tokio::sync::broadcast::Receiver<SessionEvent>) -> Vec<SessionEvent> {
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    events
}

#[tokio::test]
async fn a_call_is_observed_in_order_on_the_callers_clock() {
    let server = Server::start(Settings::loopback("echo")).await.unwrap();
    let mut rx = server.events();
    let out = call(
        &server,
        CallOptions {
            turns: vec![prompt(400)],
            input_speed: 0.0,
            timeout: Duration::from_secs(20),
            ..Default::default()
        },
    )
    .await;
    let ended = std::time::Instant::now();
    // The response ends on the server before the client has played it all; its last event may
    // still be on its way: collect up to it.
    let mut events = Vec::new();
    while let Some(e) = wait_for_event(&mut rx, Duration::from_secs(5), |_| true).await {
        let last = matches!(e.kind, SessionEventKind::ResponseEnded { .. });
        events.push(e);
        if last {
            break;
        }
    }
    let kinds: Vec<&SessionEventKind> = events.iter().map(|e| &e.kind).collect();
    assert!(
        matches!(
            kinds.as_slice(),
            [
                SessionEventKind::TurnFirstAudio { .. },
                SessionEventKind::TurnCommitted { .. },
                SessionEventKind::ResponseStarted { .. },
                SessionEventKind::ResponseEnded { .. },
            ]
        ),
        "{kinds:?}"
    );
    assert!(events.iter().all(|e| e.session_id == events[0].session_id));
    let SessionEventKind::TurnCommitted { frames, .. } = &events[1].kind else {
        unreachable!()
    };
    assert_eq!(Some(*frames), out.turns[0].frames_confirmed);
    let SessionEventKind::ResponseEnded { status, .. } = &events[3].kind else {
        unreachable!()
    };
    assert_eq!(*status, voq_proto::event::ResponseStatus::Completed);
    // One clock: connect start < first frame held < … < the call returned.
    let started = out.started.unwrap();
    assert!(started < events[0].at);
    assert!(events.windows(2).all(|w| w[0].at <= w[1].at));
    assert!(events[3].at < ended);
    // The client learns of the commit after the server made it.
    assert!(events[1].at <= out.turns[0].confirmed_at.unwrap());
    server.shutdown().await;
}

#[tokio::test]
async fn a_barge_in_ends_the_response_cancelled() {
    let reply =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/audio/reply-carwash-24k.wav");
    let server = Server::start(Settings {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        agent: format!("file:{}", reply.display()),
        agent_speed: 4.0,
        drain_timeout: Duration::from_secs(2),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut rx = server.events();
    let out = call(
        &server,
        CallOptions {
            turns: vec![prompt(300)],
            input_speed: 0.0,
            interrupt_after: Some(Duration::from_millis(300)),
            timeout: Duration::from_secs(20),
            ..Default::default()
        },
    )
    .await;
    let events = drain(&mut rx);
    let ended = events
        .iter()
        .find_map(|e| match &e.kind {
            SessionEventKind::ResponseEnded { status, .. } => Some((*status, e.at)),
            _ => None,
        })
        .unwrap();
    assert_eq!(ended.0, voq_proto::event::ResponseStatus::Cancelled);
    let interrupted = out.responses[0].interrupt.as_ref().unwrap().at.unwrap();
    // The server stopped after the user interrupted, and before the client heard it confirmed.
    assert!(interrupted < ended.1);
    let confirmed = out.responses[0]
        .interrupt
        .as_ref()
        .unwrap()
        .truncated_at
        .unwrap();
    assert!(ended.1 <= confirmed);
    server.shutdown().await;
}
