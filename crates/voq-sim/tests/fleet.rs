//! Calls through the stateless balancer to several servers, on the same virtual clock: the
//! scenarios the socket tests of `crates/voq-server/tests/lb.rs` exercise on loopback, here
//! deterministic and without waiting on wall-clock time.

use voq_proto::event::ResponseStatus;
use voq_sim::{FleetEvent, Summary, run, table};

mod scenarios;

fn show(s: &Summary) {
    eprint!("{}", table(std::slice::from_ref(s)));
}

#[test]
fn calls_spread_over_every_server_and_each_is_exact() {
    let s = run(scenarios::fleet_spread());
    show(&s);
    assert_eq!(s.sessions_per_server.iter().sum::<u64>(), 12);
    assert!(
        s.sessions_per_server.iter().all(|&n| n >= 2),
        "every server takes a share: {:?}",
        s.sessions_per_server
    );
    for (i, c) in s.clients.iter().enumerate() {
        assert!(c.prompt_bit_exact, "call {i}: the prompt arrived exact");
        assert_eq!(c.frames_confirmed, Some(25), "call {i}");
        assert_eq!(c.status, Some(ResponseStatus::Completed), "call {i}");
        assert!(c.played_equals_reply, "call {i}: the reply played exact");
    }
    assert_eq!(s.lb_dropped, 0, "nothing dropped at the VIP");
    assert!(s.is_clean(), "{s:?}");
}

/// The balancer process goes away for 300 ms in the middle of the prompt and a new one, which
/// knows nothing of the call, takes over: the call's packets route by their connection IDs to
/// the same server, and QUIC retransmits what the dark VIP dropped.
#[test]
fn a_balancer_restart_mid_call_loses_nothing() {
    let s = run(scenarios::balancer_restart());
    show(&s);
    let c = s.call();
    assert!(s.lb_dropped > 0, "the restart dropped packets");
    assert_eq!(
        s.sessions_per_server.iter().sum::<u64>(),
        1,
        "one session, never re-established"
    );
    assert!(c.prompt_bit_exact);
    assert_eq!(c.frames_confirmed, Some(c.prompt_frames_sent));
    assert_eq!(c.status, Some(ResponseStatus::Completed));
    assert!(c.played_equals_reply);
    assert!(s.is_clean(), "{s:?}");
}

/// A server marked down (as failing health probes would) takes no new calls, while the call it
/// holds keeps routing to it by its connection IDs and finishes.
#[test]
fn a_server_marked_down_takes_no_new_calls_while_its_call_finishes() {
    // Find the server the long call lands on, then run again with that server marked down.
    let first = run(scenarios::server_down());
    let busy = first.call().served_by.unwrap_or(usize::MAX);
    let mut sc = scenarios::server_down();
    sc.events = vec![FleetEvent::ServerDown {
        at_ms: 500,
        server: busy,
    }];
    let s = run(sc);
    show(&s);
    assert_eq!(
        s.call().served_by,
        Some(busy),
        "the same seed lands it on the same server"
    );
    assert_eq!(
        s.sessions_per_server[busy], 1,
        "no new call went to the down server: {:?}",
        s.sessions_per_server
    );
    assert_eq!(s.sessions_per_server.iter().sum::<u64>(), 7);
    for c in &s.clients[1..] {
        assert_ne!(c.served_by, Some(busy));
        assert_eq!(
            c.status,
            Some(ResponseStatus::Cancelled),
            "each later call barged in"
        );
    }
    // The call in progress played on to its barge-in, truncated exactly.
    let c = s.call();
    let played = c.interrupted_at_played_ms.unwrap_or_default();
    assert!(played >= 3000, "played {played} ms");
    assert_eq!(c.truncated_audio_end_ms, Some(played));
    assert!(s.is_clean(), "{s:?}");
}

/// The client's address changes mid-prompt (NAT rebinding, Wi-Fi to cellular): QUIC migrates
/// the connection, the balancer still routes it by its connection ID, and nothing is lost.
#[test]
fn a_client_that_changes_address_mid_call_keeps_its_call() {
    let s = run(scenarios::migration());
    show(&s);
    let c = s.call();
    assert_eq!(c.migrated_at_ms, Some(1200));
    assert_eq!(
        s.sessions_per_server.iter().sum::<u64>(),
        1,
        "the same session throughout"
    );
    assert!(c.prompt_bit_exact);
    assert_eq!(c.frames_confirmed, Some(c.prompt_frames_sent));
    assert_eq!(c.status, Some(ResponseStatus::Completed));
    assert!(c.played_equals_reply);
    assert!(s.is_clean(), "{s:?}");
}
