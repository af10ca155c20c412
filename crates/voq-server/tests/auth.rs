//! Session tokens (issue #12, item 1): nothing of a session is processed before its token is
//! verified, on every carrier; refusals say why, with a code, and are counted; a token's limits
//! (agent, concurrent sessions, call duration) hold.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use voq_client::{CallOptions, Token};
use voq_server::agent::{self, AgentFactory};
use voq_server::auth::{self, Authenticator, Claims, RefusalReason, SigningKey};
use voq_server::stats::Limit;
use voq_server::{Server, SessionEventKind, Settings, wait_for_event};
use voq_transport::Carrier;

struct Fixture {
    _dir: tempfile::TempDir,
    key: SigningKey,
    server: Server,
    /// Agent sessions the server made.
    agents: Arc<AtomicUsize>,
}

/// The server's agent, counting the agent sessions made: a refused client must make none.
struct Counting(Arc<dyn AgentFactory>, Arc<AtomicUsize>);

impl AgentFactory for Counting {
    fn session(&self) -> anyhow::Result<Arc<dyn voq_server::agent::Agent>> {
        self.1.fetch_add(1, Ordering::SeqCst);
        self.0.session()
    }
    fn name(&self) -> String {
        self.0.name()
    }
}

async fn fixture(agent: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate("ES256", "k1").unwrap();
    let jwks = dir.path().join("jwks.json");
    auth::add_to_key_set(&jwks, &key).unwrap();
    let authenticator = Authenticator::load(&jwks, auth::DEFAULT_AUDIENCE, None).unwrap();
    let agents = Arc::new(AtomicUsize::new(0));
    let factory = Counting(agent::from_spec(agent, 4.0).unwrap(), agents.clone());
    let settings = Settings {
        auth: Some(Arc::new(authenticator)),
        ..Settings::loopback(agent)
    };
    let server = Server::start_with_agent(settings, Arc::new(factory))
        .await
        .unwrap();
    Fixture {
        _dir: dir,
        key,
        server,
        agents,
    }
}

fn claims(sub: &str) -> Claims {
    auth::claims(sub, "voq", SystemTime::now(), Duration::from_secs(300))
}

fn prompt(ms: usize) -> Vec<i16> {
    (0..ms * 24)
        .map(|i| ((i % 240) as i16 - 120) * 100)
        .collect()
}

async fn call(
    server: &Server,
    carrier: Carrier,
    token: Option<String>,
    turn: Vec<i16>,
    input_speed: f64,
) -> anyhow::Result<voq_client::CallOutcome> {
    let opts = CallOptions {
        turns: vec![turn],
        input_speed,
        transport: carrier,
        token: token.map(Token),
        ..Default::default()
    };
    common::call(server, opts).await
}

fn refused(server: &Server, reason: RefusalReason) -> u64 {
    server
        .stats()
        .auth
        .as_ref()
        .unwrap()
        .refused
        .get(reason)
        .get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_carrier_needs_a_valid_token_and_nothing_runs_without_one() {
    let f = fixture("echo").await;
    let good = f.key.mint(&claims("alice")).unwrap();
    let mut expired = claims("alice");
    expired.exp = expired.iat.unwrap() - 3600;
    let expired = f.key.mint(&expired).unwrap();
    let mut elsewhere = claims("alice");
    elsewhere.aud = "billing".into();
    let elsewhere = f.key.mint(&elsewhere).unwrap();
    let turn = prompt(400);

    for carrier in [Carrier::Quic, Carrier::WebTransport, Carrier::WebSocket] {
        let out = call(&f.server, carrier, Some(good.clone()), turn.clone(), 0.0)
            .await
            .unwrap_or_else(|e| panic!("{carrier:?} with a valid token: {e:#}"));
        assert_eq!(out.reply_received, turn, "{carrier:?}: echo is bit-exact");
    }
    let stats = f.server.stats();
    let (committed, frames, started) = (
        stats.turns_committed.get(),
        stats.prompt_frames.get(),
        stats.responses_started.get(),
    );
    assert_eq!(committed, 3);

    for (token, reason, says) in [
        (None, RefusalReason::Missing, "token is required"),
        (Some(expired), RefusalReason::Expired, "expired"),
        (Some(elsewhere), RefusalReason::WrongAudience, "audience"),
        (
            Some("x.y.z".to_string()),
            RefusalReason::Malformed,
            "malformed",
        ),
    ] {
        for carrier in [Carrier::Quic, Carrier::WebTransport, Carrier::WebSocket] {
            let before = refused(&f.server, reason);
            let err = call(&f.server, carrier, token.clone(), turn.clone(), 0.0)
                .await
                .err()
                .unwrap_or_else(|| panic!("{carrier:?} {reason:?}: the call went through"));
            let text = format!("{err:#}");
            assert!(
                text.contains("401") || text.contains("unauthorized") || text.contains(says),
                "{carrier:?} {reason:?}: the refusal says why: {text}"
            );
            assert_eq!(
                refused(&f.server, reason),
                before + 1,
                "{carrier:?} {reason:?}"
            );
        }
    }
    // The refused clients sent their whole turn at once, behind the token: none of it was read,
    // committed or given to an agent, and no agent session was even made for them.
    assert_eq!(f.agents.load(Ordering::SeqCst), 3);
    assert_eq!(stats.turns_committed.get(), committed);
    assert_eq!(stats.prompt_frames.get(), frames);
    assert_eq!(stats.responses_started.get(), started);
    let metrics = stats.render_prometheus();
    assert!(
        metrics.contains("voq_auth_refused_total{reason=\"expired\"} 3"),
        "{metrics}"
    );
    assert!(metrics.contains("voq_auth_accepted_total 3"), "{metrics}");
    f.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_for_another_agent_is_refused() {
    let f = fixture("echo").await;
    let mut c = claims("alice");
    c.voq.agent = Some("speak".into());
    let token = f.key.mint(&c).unwrap();
    let err = call(&f.server, Carrier::Quic, Some(token), prompt(200), 0.0)
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("agent"), "{err:#}");
    assert_eq!(refused(&f.server, RefusalReason::AgentNotAllowed), 1);
    f.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subject_gets_at_most_its_sessions_at_once() {
    let f = fixture("echo").await;
    let mut c = claims("bob");
    c.voq.max_sessions = Some(1);
    let token = f.key.mint(&c).unwrap();
    let mut events = f.server.events();
    // The first call talks in real time for 3 s; the second starts while it does.
    let server = Arc::new(f.server);
    let first = {
        let (server, token) = (server.clone(), token.clone());
        tokio::spawn(
            async move { call(&server, Carrier::Quic, Some(token), prompt(3000), 1.0).await },
        )
    };
    wait_for_event(&mut events, Duration::from_secs(10), |k| {
        matches!(k, SessionEventKind::TurnFirstAudio { .. })
    })
    .await
    .expect("the first call is talking");
    for carrier in [Carrier::Quic, Carrier::WebSocket] {
        let err = call(&server, carrier, Some(token.clone()), prompt(200), 0.0)
            .await
            .unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("429") || text.contains("limit_exceeded") || text.contains("sessions"),
            "{carrier:?}: {text}"
        );
    }
    assert_eq!(refused(&server, RefusalReason::TooManySessions), 2);
    first.await.unwrap().unwrap();
    // Its session over, the subject may call again.
    call(&server, Carrier::Quic, Some(token), prompt(200), 0.0)
        .await
        .unwrap();
    drop(f.key);
    Arc::try_unwrap(server).unwrap().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_ends_at_its_tokens_maximum_duration() {
    let f = fixture("echo").await;
    let mut c = claims("carol");
    c.voq.max_duration_s = Some(1);
    let token = f.key.mint(&c).unwrap();
    // Four seconds of talking in real time: the server closes the call after one.
    let started = std::time::Instant::now();
    let err = call(&f.server, Carrier::Quic, Some(token), prompt(4000), 1.0)
        .await
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("limit_exceeded") || text.contains("maximum duration"),
        "{text}"
    );
    assert!(started.elapsed() < Duration::from_secs(4), "closed early");
    assert_eq!(
        f.server
            .stats()
            .limits_exceeded
            .get(Limit::CallDuration)
            .get(),
        1
    );
    assert_eq!(f.server.stats().turns_committed.get(), 0);
    f.server.shutdown().await;
}
