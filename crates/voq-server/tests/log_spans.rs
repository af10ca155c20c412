//! Every log line of a session carries that session's id, also while several sessions run at
//! once on one thread. A `span.enter()` guard held across an `.await` breaks this: the guard
//! stays on the thread while its task is parked, so the next session's span is entered on top
//! of it and lines get attributed to whichever session entered last. (clippy.toml bans
//! `tracing::span::Entered`/`EnteredSpan`; this test shows the consequence.)
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use voq_client::{CallOptions, Client, Target, Trust};
use voq_server::{Server, Settings};
use voq_transport::Carrier;

/// The `id` field of a `session` span, kept in the span's extensions.
struct SessionId(String);

/// Records, per session id, the messages logged inside that session's span.
#[derive(Clone, Default)]
struct Capture {
    lines: Arc<Mutex<BTreeMap<String, Vec<String>>>>,
    logged: Arc<Notify>,
}

#[derive(Default)]
struct Fields {
    id: Option<String>,
    message: Option<String>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "id" => self.id = Some(format!("{value:?}")),
            "message" => self.message = Some(format!("{value:?}")),
            _ => {}
        }
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != "session" {
            return;
        }
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let (Some(span), Some(session)) = (ctx.span(id), fields.id) {
            span.extensions_mut().insert(SessionId(session));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        // The session shell's own lines at info and above: what both calls log alike (debug
        // lines carry details, e.g. close reasons, that may differ between the two).
        let meta = event.metadata();
        if !meta.target().starts_with("voq_server") || *meta.level() > tracing::Level::INFO {
            return;
        }
        let Some(scope) = ctx.event_scope(event) else {
            return;
        };
        let Some(session) = scope
            .into_iter()
            .find_map(|span| span.extensions().get::<SessionId>().map(|s| s.0.clone()))
        else {
            return;
        };
        let mut fields = Fields::default();
        event.record(&mut fields);
        self.lines
            .lock()
            .unwrap()
            .entry(session)
            .or_default()
            .push(fields.message.unwrap_or_default());
        self.logged.notify_waiters();
    }
}

impl Capture {
    /// Each session's lines, sorted: two sessions doing the same call log the same lines.
    fn lines_per_session(&self) -> BTreeMap<String, Vec<String>> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|(s, lines)| {
                let mut lines = lines.clone();
                lines.sort();
                (s.clone(), lines)
            })
            .collect()
    }

    fn ended_per_session(&self) -> BTreeMap<String, usize> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|(s, lines)| {
                (
                    s.clone(),
                    lines.iter().filter(|l| *l == "session ended").count(),
                )
            })
            .collect()
    }
}

#[test]
fn concurrent_sessions_log_under_their_own_ids() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry().with(capture.clone());
    let _default = tracing::subscriber::set_default(subscriber);
    // One thread for the server and both clients: every task switch is a chance for a leaked
    // span guard to show.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let server = Server::start(Settings::loopback("echo")).await.unwrap();
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../testdata/audio/prompt-carwash-24k.wav");
        let prompt = voq_audio::read_wav_file(path)
            .unwrap()
            .to_mono_24k()
            .unwrap();
        let target = Target {
            addr: server.local_addr(),
            server_name: "localhost".into(),
            tls: false,
        };
        let trust = Trust::cert_hash(&server.cert_sha256()).unwrap();
        let call = || {
            let client = Client::new(&trust, "127.0.0.1:0".parse().unwrap()).unwrap();
            let opts = CallOptions {
                turns: vec![prompt[..24_000].to_vec()],
                input_speed: 4.0,
                transport: Carrier::WebSocket,
                timeout: Duration::from_secs(30),
                ..Default::default()
            };
            let target = target.clone();
            async move { client.call(&target, opts).await.unwrap() }
        };
        // Two calls overlapping in time, on the one thread.
        let (a, b) = tokio::join!(call(), call());
        assert_eq!(a.report.prompt.frames_confirmed, 50);
        assert_eq!(b.report.prompt.frames_confirmed, 50);
        // Both sessions end once their clients hang up; wait for their last lines.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let logged = capture.logged.notified();
            if capture.ended_per_session().values().sum::<usize>() >= 2 {
                break;
            }
            if tokio::time::timeout_at(deadline, logged).await.is_err() {
                break;
            }
        }
        server.shutdown().await;
    });
    let ended = capture.ended_per_session();
    assert_eq!(ended.len(), 2, "two sessions logged: {ended:?}");
    assert!(
        ended.values().all(|n| *n == 1),
        "each session logged its own end, under its own id: {ended:?}"
    );
    // The same call on each: the same lines under each id (a leaked guard moves some of one
    // session's lines to the other).
    let lines: Vec<Vec<String>> = capture.lines_per_session().into_values().collect();
    assert!(
        lines[0].iter().any(|l| l == "user turn committed"),
        "{lines:?}"
    );
    assert_eq!(lines[0], lines[1], "each session's lines under its own id");
}
