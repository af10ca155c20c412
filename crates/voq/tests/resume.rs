//! A call outlives its server (issue #15): `kill -9` of `voq serve` mid-turn and mid-reply,
//! another server with the same shared store (Redis, started here) and fleet secret takes the
//! session back, and `voq call` goes on: the server's recording of the turn is the prompt
//! bit-exact, and the reply arrives whole, no sample repeated or skipped.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const FLEET_SECRET: &str = "5f1c0d2e3a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9012a3b4c5d6";

fn voq() -> Command {
    Command::new(env!("CARGO_BIN_EXE_voq"))
}

fn asset(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/audio")
        .join(name)
}

/// A port free for both UDP and TCP on loopback just now.
fn free_port() -> u16 {
    loop {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Polls `ready` until it holds or `limit` passes.
fn until(limit: Duration, what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A child process killed (SIGKILL) when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `redis-server` on a free port, nothing persisted. `None` (with the reason printed) when it
/// is not installed and the run does not require it.
fn redis() -> Option<(Killed, u16)> {
    let port = free_port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let child = match child {
        Ok(c) => Killed(c),
        Err(e) => {
            assert!(
                std::env::var_os("VOQ_NETNS_REQUIRED").is_none(),
                "redis-server is required (scripts/setup installs it): {e}"
            );
            eprintln!("SKIPPED: redis-server is not installed (scripts/setup installs it): {e}");
            return None;
        }
    };
    until(Duration::from_secs(10), "redis-server", || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    Some((child, port))
}

/// `voq serve` on `port` with the shared store; its metrics address.
struct Server {
    child: Killed,
    metrics: String,
}

impl Server {
    fn start(port: u16, store: &str, server_id: &str, record: &Path) -> Self {
        Self::start_behind(port, store, server_id, record, None)
    }

    /// As [`Server::start`], with another agent than `echo`.
    fn start_with_agent(
        port: u16,
        store: &str,
        server_id: &str,
        record: &Path,
        agent: &str,
    ) -> Self {
        Self::spawn(port, store, server_id, record, None, agent)
    }

    /// As [`Server::start`]; behind `voq lb` at `vip` when given.
    fn start_behind(
        port: u16,
        store: &str,
        server_id: &str,
        record: &Path,
        vip: Option<u16>,
    ) -> Self {
        Self::spawn(port, store, server_id, record, vip, "echo")
    }

    fn spawn(
        port: u16,
        store: &str,
        server_id: &str,
        record: &Path,
        vip: Option<u16>,
        agent: &str,
    ) -> Self {
        Self::try_spawn(port, store, server_id, record, vip, agent)
            .unwrap_or_else(|log| panic!("voq serve on port {port} did not start:\n{log}"))
    }

    /// A server on a port found free, tried again on another if that one was taken meanwhile
    /// (by another test's socket): for the first server of a test.
    fn start_anywhere(store: &str, server_id: &str, record: &Path, agent: &str) -> (Self, u16) {
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            match Self::try_spawn(port, store, server_id, record, None, agent) {
                Ok(server) => return (server, port),
                Err(log) => last = log,
            }
        }
        panic!("voq serve did not start on 5 free ports:\n{last}");
    }

    /// Starts `voq serve` and waits until it listens; its log if it exited first.
    fn try_spawn(
        port: u16,
        store: &str,
        server_id: &str,
        record: &Path,
        vip: Option<u16>,
        agent: &str,
    ) -> Result<Self, String> {
        let tunnel = vip.map_or("off".to_string(), |v| format!("127.0.0.1:{v}"));
        // "" starts a server that keeps no sessions resumable.
        let store_args = if store.is_empty() {
            vec![]
        } else {
            vec!["--session-store", store]
        };
        let mut child = voq()
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--agent", agent])
            .args(store_args)
            .args(["--server-id", server_id, "--lb-tunnel", &tunnel])
            .args(["--metrics", "127.0.0.1:0", "--record"])
            .arg(record)
            .env("VOQ_FLEET_SECRET", FLEET_SECRET)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || for _ in BufReader::new(stdout).lines() {});
        // The log says where the metrics are, then that the server listens; its end before
        // that is a server that could not start (its port taken).
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut log = String::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("metrics at http://").nth(1) {
                    let _ = tx.send(Ok(rest.split('/').next().unwrap_or("").to_string()));
                }
                if line.contains("voq server listening") {
                    let _ = tx.send(Ok(String::new()));
                }
                if std::env::var_os("VOQ_TEST_LOG").is_some() {
                    eprintln!("[server {port}] {line}");
                }
                log.push_str(&line);
                log.push('\n');
            }
            let _ = tx.send(Err(log));
        });
        let child = Killed(child);
        let mut metrics = None;
        loop {
            match rx.recv_timeout(Duration::from_secs(20)) {
                Ok(Ok(addr)) if !addr.is_empty() => metrics = Some(addr),
                Ok(Ok(_)) => break,
                Ok(Err(log)) => return Err(log),
                Err(e) => return Err(format!("no word from voq serve within 20 s: {e}")),
            }
        }
        let metrics = metrics.ok_or("voq serve listens but gave no metrics address")?;
        Ok(Self { child, metrics })
    }

    /// A counter of the server's metrics (0 if it cannot be read).
    fn metric(&self, name: &str) -> u64 {
        let Ok(mut s) = TcpStream::connect(&self.metrics) else {
            return 0;
        };
        let _ = std::io::Write::write_all(&mut s, b"GET /metrics HTTP/1.0\r\n\r\n");
        let mut body = String::new();
        let _ = s.read_to_string(&mut body);
        body.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().last()?.parse().ok())
            .unwrap_or(0)
    }

    /// Waits until a snapshot taken after this call is in the store: two more saves (the first
    /// may have been under way already, with an older snapshot; the saver writes the newest).
    fn wait_for_a_fresh_snapshot(&self) {
        let saved = self.metric("voq_store_requests_total");
        until(
            Duration::from_secs(5),
            "a fresh snapshot in the store",
            || self.metric("voq_store_requests_total") >= saved + 2,
        );
    }

    fn kill(self) {
        drop(self.child);
    }
}

/// `voq call` of the carwash prompt to `url` over `transport` at `input_speed`, its report as
/// JSON on stdout, the reply written to `out`; the ticket cache under `cache`.
fn start_call(url: &str, transport: &str, input_speed: &str, out: &Path, cache: &Path) -> Killed {
    let call = voq()
        .args(["call", url, "--input"])
        .arg(asset("prompt-carwash-24k.wav"))
        .arg("--output")
        .arg(out)
        .args(["--insecure", "--json", "--transport", transport])
        .args(["--input-speed", input_speed])
        .env("XDG_CACHE_HOME", cache)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    Killed(call)
}

/// Waits for the call to end: its report and its log. A failed call fails the test, with the
/// log.
fn finish_call(mut call: Killed) -> (serde_json::Value, String) {
    let mut stdout = Vec::new();
    let mut stderr = String::new();
    call.0
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut stdout)
        .unwrap();
    call.0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        call.0.wait().unwrap().success(),
        "the call failed: {stderr}"
    );
    (serde_json::from_slice(&stdout).unwrap(), stderr)
}

/// The carwash prompt's samples.
fn prompt() -> Vec<i16> {
    voq_audio::read_wav_file(asset("prompt-carwash-24k.wav"))
        .unwrap()
        .samples
}

/// The user turn `item_c1` a server recorded under `dir` (its one session).
fn recorded_turn(dir: &Path) -> Vec<i16> {
    let session = std::fs::read_dir(dir).unwrap().next().unwrap().unwrap();
    voq_audio::read_wav_file(session.path().join("item_c1.wav"))
        .unwrap()
        .samples
}

/// The reply written to `out` is the echo of the whole prompt: each sample once, where it
/// belongs, nothing repeated or skipped.
fn assert_whole_echo(out: &Path) {
    let sent = prompt();
    let got = voq_audio::read_wav_file(out).unwrap().samples;
    assert!(
        got.len() >= sent.len(),
        "{} of {} samples",
        got.len(),
        sent.len()
    );
    assert!(
        got[..sent.len()] == sent[..],
        "the reply is not the prompt bit-exact"
    );
    assert!(got[sent.len()..].iter().all(|s| *s == 0));
}

#[derive(Clone, Copy, Debug)]
enum KillAt {
    /// A second of the prompt has arrived (it is sent in real time).
    MidTurn,
    /// A second of the reply has gone out.
    MidReply,
}

fn killed_server_call_resumes(transport: &str, at: KillAt) {
    let Some((_redis, redis_port)) = redis() else {
        return;
    };
    let store = format!("redis://127.0.0.1:{redis_port}");
    let dir = tempfile::tempdir().unwrap();
    let (rec_a, rec_b) = (dir.path().join("a"), dir.path().join("b"));
    let (a, port) = Server::start_anywhere(&store, "0a01", &rec_a, "echo");
    let out = dir.path().join("reply.wav");
    let scheme = if transport == "ws" { "http" } else { "https" };
    let speed = match at {
        KillAt::MidTurn => "1",
        KillAt::MidReply => "0",
    };
    let url = format!("{scheme}://127.0.0.1:{port}");
    let call = start_call(&url, transport, speed, &out, dir.path());
    match at {
        KillAt::MidTurn => until(Duration::from_secs(20), "a second of prompt", || {
            a.metric("voq_prompt_frames_total") >= 50
        }),
        KillAt::MidReply => until(Duration::from_secs(20), "a second of reply", || {
            a.metric("voq_agent_bytes_sent_total") >= 48_000
        }),
    }
    a.wait_for_a_fresh_snapshot();
    a.kill(); // SIGKILL: no goodbye, no last save
    let b = Server::start(port, &store, "0b02", &rec_b);
    let (report, _) = finish_call(call);
    let resumes = report["resumes"].as_array().unwrap();
    assert_eq!(resumes.len(), 1, "{report}");
    assert_eq!(resumes[0]["resumed"], true, "{report}");
    assert_eq!(resumes[0]["server_id"], "0b02", "{report}");
    assert_eq!(report["server_id"], "0b02", "{report}");
    assert_eq!(report["prompt"]["frames_confirmed"], 139, "{report}");
    assert_eq!(report["reply"]["status"], "completed", "{report}");
    assert_eq!(b.metric("voq_resumes_total{result=\"succeeded\"}"), 1);
    assert_whole_echo(&out);
    if let KillAt::MidTurn = at {
        // The server that took over recorded the turn: bit-exact across the break.
        assert!(
            recorded_turn(&rec_b) == prompt(),
            "the recorded turn is not the prompt bit-exact"
        );
        // Only the unconfirmed rest crossed again: the held audio came from the store.
        assert!(b.metric("voq_resumed_audio_frames_total") >= 40);
    }
}

#[test]
fn killed_mid_turn_quic() {
    killed_server_call_resumes("quic", KillAt::MidTurn);
}

#[test]
fn killed_mid_reply_quic() {
    killed_server_call_resumes("quic", KillAt::MidReply);
}

#[test]
fn killed_mid_turn_webtransport() {
    killed_server_call_resumes("webtransport", KillAt::MidTurn);
}

#[test]
fn killed_mid_reply_webtransport() {
    killed_server_call_resumes("webtransport", KillAt::MidReply);
}

#[test]
fn killed_mid_turn_ws() {
    killed_server_call_resumes("ws", KillAt::MidTurn);
}

#[test]
fn killed_mid_reply_ws() {
    killed_server_call_resumes("ws", KillAt::MidReply);
}

/// A server restarted without a shared store (`memory`) cannot give the session back: the
/// client is refused, starts a new session and sends the unconfirmed turn from its start.
/// The conversation starts over; nothing the user said is lost.
#[test]
fn a_session_its_store_lost_starts_again_with_nothing_said_lost() {
    let r = replaced_mid_prompt("memory");
    assert!(
        r.stderr.contains("did not take the session back"),
        "{}",
        r.stderr
    );
    assert_eq!(r.report["resumes"][0]["resumed"], false, "{}", r.report);
    assert_eq!(r.report["prompt"]["frames_confirmed"], 139, "{}", r.report);
    assert_eq!(
        r.replacement
            .metric("voq_resumes_total{result=\"refused\"}"),
        1
    );
    let recorded = recorded_turn(&r.recorded_by_replacement);
    assert!(
        recorded == prompt(),
        "the turn sent again is not the prompt bit-exact"
    );
    assert_whole_echo(&r.reply);
}

/// What [`replaced_mid_prompt`] left: the call's report and stderr, the replacement server and
/// its recordings, the reply the client wrote (all in `_dir`).
struct Replaced {
    report: serde_json::Value,
    stderr: String,
    replacement: Server,
    recorded_by_replacement: PathBuf,
    reply: PathBuf,
    _dir: tempfile::TempDir,
}

/// A QUIC call to a server with no shared store (`memory`), killed a second into the prompt and
/// replaced on the same port by one with `store` (`""`: not resumable); the call runs to its end.
fn replaced_mid_prompt(store: &str) -> Replaced {
    let dir = tempfile::tempdir().unwrap();
    let (rec_a, rec_b) = (dir.path().join("a"), dir.path().join("b"));
    let (a, port) = Server::start_anywhere("memory", "0a01", &rec_a, "echo");
    let reply = dir.path().join("reply.wav");
    let url = format!("https://127.0.0.1:{port}");
    let call = start_call(&url, "quic", "1", &reply, dir.path());
    until(Duration::from_secs(20), "a second of prompt", || {
        a.metric("voq_prompt_frames_total") >= 50
    });
    a.kill();
    let replacement = Server::start(port, store, "0b02", &rec_b);
    let (report, stderr) = finish_call(call);
    Replaced {
        report,
        stderr,
        replacement,
        recorded_by_replacement: rec_b,
        reply,
        _dir: dir,
    }
}

/// Three servers behind `voq lb` sharing Redis: the one holding the call is killed; the balancer
/// marks it down, the client's new connection lands on another server, which takes the session
/// back from Redis.
fn through_the_balancer(transport: &str, at: KillAt) {
    through_the_balancer_ending(transport, at, End::Kill);
}

/// How the server holding the call ends.
#[derive(Clone, Copy, PartialEq, Debug)]
enum End {
    /// SIGKILL.
    Kill,
    /// SIGTERM: a graceful drain (`going_away`).
    Drain,
}

fn through_the_balancer_ending(transport: &str, at: KillAt, end: End) {
    let Some((_redis, redis_port)) = redis() else {
        return;
    };
    let store = format!("redis://127.0.0.1:{redis_port}");
    let vip = free_port();
    let dir = tempfile::tempdir().unwrap();
    let ids = ["01", "02", "03"];
    let ports: Vec<u16> = ids.iter().map(|_| free_port()).collect();
    let mut lb = voq();
    lb.args(["lb", "--listen", &format!("127.0.0.1:{vip}")]);
    for (id, port) in ids.iter().zip(&ports) {
        lb.args(["--backend", &format!("{id}=127.0.0.1:{port}")]);
    }
    let _lb = Killed(
        lb.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut servers: Vec<Option<Server>> = ids
        .iter()
        .zip(&ports)
        .map(|(id, port)| {
            let rec = dir.path().join(id);
            Some(Server::start_behind(*port, &store, id, &rec, Some(vip)))
        })
        .collect();
    let out = dir.path().join("reply.wav");
    let speed = match at {
        KillAt::MidTurn => "1",
        KillAt::MidReply => "0",
    };
    let url = format!("https://127.0.0.1:{vip}");
    let call = start_call(&url, transport, speed, &out, dir.path());
    // The server that holds the call: the one the prompt (or the reply) flows through.
    let (metric, threshold) = match at {
        KillAt::MidTurn => ("voq_prompt_frames_total", 50),
        KillAt::MidReply => ("voq_agent_bytes_sent_total", 48_000),
    };
    let mut holder = None;
    until(Duration::from_secs(20), "the call under way", || {
        holder = servers
            .iter()
            .position(|s| s.as_ref().unwrap().metric(metric) >= threshold);
        holder.is_some()
    });
    let holder = holder.unwrap();
    let killed = servers[holder].take().unwrap();
    killed.wait_for_a_fresh_snapshot();
    match end {
        End::Kill => killed.kill(),
        End::Drain => {
            let pid = killed.child.0.id().to_string();
            let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
            assert!(status.success());
            // It drains (and exits) on its own; dropped at the end of the test.
            servers[holder] = Some(killed);
        }
    }
    let (report, _) = finish_call(call);
    let resumes = report["resumes"].as_array().unwrap();
    assert_eq!(resumes.len(), 1, "{report}");
    assert_eq!(resumes[0]["resumed"], true, "{report}");
    let now_on = report["server_id"].as_str().unwrap();
    assert_ne!(now_on, ids[holder], "{report}");
    assert_eq!(report["prompt"]["frames_confirmed"], 139, "{report}");
    assert_eq!(report["reply"]["status"], "completed", "{report}");
    assert_whole_echo(&out);
    if end == End::Drain {
        let reason = resumes[0]["reason"].as_str().unwrap();
        assert!(reason.contains("draining"), "{reason}");
    }
    let taker = ids.iter().position(|i| *i == now_on).unwrap();
    let taker = servers[taker].as_ref().unwrap();
    assert_eq!(taker.metric("voq_resumes_total{result=\"succeeded\"}"), 1);
}

#[test]
fn through_the_balancer_killed_mid_turn_quic() {
    through_the_balancer("quic", KillAt::MidTurn);
}

#[test]
fn through_the_balancer_killed_mid_reply_webtransport() {
    through_the_balancer("webtransport", KillAt::MidReply);
}

/// A TCP relay whose connections the test can cut (as a network change cuts a WebSocket).
struct Relay {
    port: u16,
    live: std::sync::Arc<std::sync::Mutex<Vec<TcpStream>>>,
}

impl Relay {
    fn start(upstream: u16) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let live = std::sync::Arc::new(std::sync::Mutex::new(Vec::<TcpStream>::new()));
        let conns = live.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let mut held = conns.lock().unwrap();
                held.push(client.try_clone().unwrap());
                held.push(server.try_clone().unwrap());
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Self { port, live }
    }

    /// Cuts every connection through the relay now.
    fn cut(&self) {
        for s in self.live.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// A WebSocket cut by the network mid-turn while its server lives on: the client reconnects
/// (through the same relay), the server takes the session back from its own store (`memory`),
/// and the turn goes on from where the server held it.
#[test]
fn a_websocket_cut_by_the_network_resumes_on_the_same_server() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    let (server, port) = Server::start_anywhere("memory", "0a01", &rec, "echo");
    let relay = Relay::start(port);
    let out = dir.path().join("reply.wav");
    let url = format!("http://127.0.0.1:{}", relay.port);
    let call = start_call(&url, "ws", "1", &out, dir.path());
    until(Duration::from_secs(20), "a second of prompt", || {
        server.metric("voq_prompt_frames_total") >= 50
    });
    server.wait_for_a_fresh_snapshot();
    relay.cut();
    let (report, _) = finish_call(call);
    assert_eq!(report["resumes"][0]["resumed"], true, "{report}");
    assert_eq!(report["prompt"]["frames_confirmed"], 139, "{report}");
    let gap = report["resumes"][0]["gap_ms"].as_f64().unwrap();
    assert!(
        gap < 1000.0,
        "a cut WebSocket is noticed at once: gap {gap} ms"
    );
    assert!(
        recorded_turn(&rec) == prompt(),
        "the turn is not the prompt bit-exact"
    );
    assert_whole_echo(&out);
    assert_eq!(server.metric("voq_resumes_total{result=\"succeeded\"}"), 1);
}

/// A graceful drain (SIGTERM) of the server holding the call: the client takes the session to
/// another server at once, mid-reply, instead of finishing on the draining one.
#[test]
fn through_the_balancer_a_drain_moves_the_call_mid_reply_quic() {
    through_the_balancer_ending("quic", KillAt::MidReply, End::Drain);
}

/// The session's server is replaced by one that keeps no sessions resumable: it ignores the
/// resume request and starts a new session, and the client sends the unconfirmed turn there
/// from its start.
#[test]
fn a_server_that_does_not_resume_gets_the_turn_whole() {
    let r = replaced_mid_prompt("");
    let report = &r.report;
    assert_eq!(report["resumes"][0]["resumed"], false, "{report}");
    assert_eq!(report["prompt"]["frames_confirmed"], 139, "{report}");
    assert!(
        recorded_turn(&r.recorded_by_replacement) == prompt(),
        "the turn is not the prompt bit-exact"
    );
    assert_whole_echo(&r.reply);
}

/// The exec agent of a server that takes a session over gets the conversation so far: the
/// first turn's audio, as a Realtime `conversation.item.create`, before the second turn that the
/// lost server had under way.
#[test]
fn a_resumed_exec_agent_gets_the_conversation_so_far() {
    let Some((_redis, redis_port)) = redis() else {
        return;
    };
    let store = format!("redis://127.0.0.1:{redis_port}");
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("agent.py");
    std::fs::write(
        &script,
        r#"import base64, json, os, sys
out = sys.argv[1]
buf = bytearray()
for line in sys.stdin:
    ev = json.loads(line)
    t = ev.get("type")
    if t == "conversation.item.create":
        item = ev["item"]
        audio = base64.b64decode(item["content"][0]["audio"])
        with open(os.path.join(out, "history-" + item["id"] + ".raw"), "wb") as f:
            f.write(audio)
        with open(os.path.join(out, "log"), "a") as f:
            f.write(t + " " + item["role"] + "\n")
    elif t == "input_audio_buffer.append":
        buf += base64.b64decode(ev["audio"])
    elif t == "input_audio_buffer.commit":
        with open(os.path.join(out, "log"), "a") as f:
            f.write(t + " " + ev["item_id"] + "\n")
    elif t == "response.create":
        rid = ev["response"]["id"]
        print(json.dumps({"type": "response.output_audio.delta", "response_id": rid,
                          "delta": base64.b64encode(bytes(buf)).decode()}), flush=True)
        print(json.dumps({"type": "response.done", "response": {"id": rid, "status": "completed"}}), flush=True)
        buf = bytearray()
"#,
    )
    .unwrap();
    let (out_a, out_b) = (dir.path().join("agent-a"), dir.path().join("agent-b"));
    std::fs::create_dir_all(&out_a).unwrap();
    std::fs::create_dir_all(&out_b).unwrap();
    let agent = |out: &Path| format!("exec:python3 {} {}", script.display(), out.display());
    let (rec_a, rec_b) = (dir.path().join("a"), dir.path().join("b"));
    let (a, port) = Server::start_anywhere(&store, "0a01", &rec_a, &agent(&out_a));
    let out = dir.path().join("reply.wav");
    let call = voq()
        .args(["call", &format!("https://127.0.0.1:{port}"), "--input"])
        .arg(asset("prompt-carwash-24k.wav"))
        .arg("--output")
        .arg(&out)
        .args(["--insecure", "--json", "--input-speed", "1", "--turns", "2"])
        .env("XDG_CACHE_HOME", dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let call = Killed(call);
    // A second into the second turn (the first is 139 frames).
    until(
        Duration::from_secs(30),
        "a second of the second turn",
        || a.metric("voq_prompt_frames_total") >= 139 + 50,
    );
    a.wait_for_a_fresh_snapshot();
    a.kill();
    let _b = Server::start_with_agent(port, &store, "0b02", &rec_b, &agent(&out_b));
    let (report, _) = finish_call(call);
    assert_eq!(report["resumes"][0]["resumed"], true, "{report}");
    assert_eq!(report["prompt"]["items_committed"], 2, "{report}");
    // The new server's agent heard the first turn as history, then the second turn.
    let log = std::fs::read_to_string(out_b.join("log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(
        lines,
        [
            "conversation.item.create user",
            "input_audio_buffer.commit item_c2"
        ],
        "{log}"
    );
    let history = std::fs::read(out_b.join("history-item_c1.raw")).unwrap();
    let samples: Vec<i16> = history
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    assert!(
        samples == prompt(),
        "the history is not the first turn bit-exact"
    );
}
