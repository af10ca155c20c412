//! Whole voq/1 calls over real QUIC state machines on virtual time, through loss and blackouts
//! (one caller, one server). What they prove:
//! - the user's prompt arrives at the server bit-exact and `input_audio_buffer.committed`
//!   confirms exactly what the client sent;
//! - a 1 s blackout in both directions mid-reply is inaudible with the default 2 s send-ahead
//!   lead (the receiver sees ~1.1 s of network silence: real-time recovery probes the path
//!   without backoff), and strict just-in-time pacing underruns;
//! - a barge-in truncates the agent's item exactly where the user stopped hearing it;
//! - nothing is ever skipped or repeated, and the same seeds give the same run.

use voq_netem::LinkConfig;
use voq_proto::event::ResponseStatus;
use voq_proto::pacing::Lead;
use voq_sim::{BlackoutAt, ClientPlan, ClientSummary, Scenario, Summary, run, table};

mod scenarios;

fn assert_prompt_confirmed(name: &str, c: &ClientSummary) {
    assert!(c.prompt_bit_exact, "{name}: prompt not bit-exact");
    assert_eq!(
        c.prompt_frames_sent, 139,
        "2.765 s of prompt in 20 ms frames"
    );
    assert_eq!(c.frames_confirmed, Some(c.prompt_frames_sent), "{name}");
    assert_eq!(c.bytes_confirmed, Some(c.prompt_bytes_sent), "{name}");
    assert_eq!(c.audio_ms_confirmed, Some(c.prompt_audio_ms_sent), "{name}");
    assert_eq!(c.prompt_bytes_sent, 66_359 * 2);
}

fn assert_clean(s: &Summary) {
    assert!(
        s.is_clean(),
        "{}: warnings {:?} {:?}",
        s.name,
        s.warnings,
        s.call().warnings
    );
}

fn show(s: &Summary) {
    eprint!("{}", table(std::slice::from_ref(s)));
}

#[test]
fn prompt_arrives_bit_exact_under_10_percent_loss() {
    let s = run(scenarios::prompt_under_loss());
    show(&s);
    let c = s.call();
    assert_prompt_confirmed(&s.name, c);
    assert!(c.c2s_dropped > 0 && c.s2c_dropped > 0, "loss was applied");
    // The reply after it completes and plays exactly (no sample skipped or repeated).
    assert_eq!(c.status, Some(ResponseStatus::Completed));
    assert!(c.played_equals_reply);
    assert_eq!(c.played_ms, c.reply_ms);
    assert_clean(&s);
}

#[test]
fn prompt_arrives_bit_exact_through_a_blackout_during_the_turn() {
    let s = run(scenarios::prompt_blackout());
    show(&s);
    let c = s.call();
    assert_eq!(c.blackout_at_ms, Some(1000));
    assert!(c.c2s_dropped > 0, "the blackout dropped packets");
    assert_prompt_confirmed(&s.name, c);
    assert_eq!(c.status, Some(ResponseStatus::Completed));
    assert!(c.played_equals_reply);
    assert_clean(&s);
}

/// The default 2 s lead and a 1 s blackout both ways, mid-reply: inaudible. With voq's
/// real-time recovery (voq_transport::recovery) the server's probes do not back off, so the
/// first one after the link returns carries reply audio and the client hears nothing for about
/// 1.1 s of network silence, well inside 2 s − 100 ms of buffer. (With RFC 9002's backoff,
/// `VOQ_RECOVERY=stock`, the silence was ~2.1 s and one stall of 150–210 ms.)
#[test]
fn the_default_lead_rides_out_a_one_second_blackout() {
    let s = run(scenarios::reply_blackout(Lead::from_ms(2000)));
    show(&s);
    let c = s.call();
    assert!(
        c.blackout_at_ms.is_some(),
        "the blackout hit during the reply"
    );
    assert!(c.s2c_dropped > 0);
    assert!(
        (1000..=1150).contains(&c.max_reply_gap_ms),
        "network silence incl. recovery: {} ms",
        c.max_reply_gap_ms
    );
    assert_prompt_confirmed(&s.name, c);
    assert_eq!(c.status, Some(ResponseStatus::Completed));
    assert_eq!(c.played_ms, 8000);
    assert!(c.played_equals_reply, "the played audio is the reply");
    assert_clean(&s);
    assert_eq!(c.underruns, 0, "stalled {} ms", c.stall_ms);
}

/// The same blackout with a longer lead: inaudible too, and the device plays the reply as one
/// contiguous timeline.
#[test]
fn a_lead_covering_quic_recovery_rides_out_the_blackout() {
    let s = run(scenarios::reply_blackout(Lead::from_ms(2500)));
    show(&s);
    let c = s.call();
    assert!(
        c.blackout_at_ms.is_some(),
        "the blackout hit during the reply"
    );
    assert!(
        c.max_reply_gap_ms >= 1000,
        "the blackout silenced the network"
    );
    assert_prompt_confirmed(&s.name, c);
    assert_eq!(c.status, Some(ResponseStatus::Completed));
    assert_eq!(c.underruns, 0, "inaudible");
    assert_eq!(c.stall_ms, 0);
    assert_eq!(c.played_ms, 8000);
    assert!(c.played_equals_reply, "the played audio is the reply");
    assert!(c.contiguous, "and it played as one contiguous timeline");
    assert_clean(&s);
}

#[test]
fn just_in_time_pacing_underruns_in_the_same_blackout() {
    let s = run(scenarios::reply_blackout(Lead::JustInTime));
    show(&s);
    let c = s.call();
    assert!(c.blackout_at_ms.is_some());
    assert!(c.underruns > 0, "without a lead the blackout is heard");
    assert!(c.stall_ms > 0);
    // Even stalled, nothing is skipped or repeated.
    assert_eq!(c.status, Some(ResponseStatus::Completed));
    assert!(c.played_equals_reply);
    assert_clean(&s);
}

#[test]
fn barge_in_under_loss_truncates_exactly_at_the_played_position() {
    let s = run(scenarios::barge_in_under_loss());
    show(&s);
    let c = s.call();
    assert_prompt_confirmed(&s.name, c);
    let played = c.interrupted_at_played_ms.unwrap_or_default();
    assert!(played >= 1500);
    assert_eq!(c.truncated_audio_end_ms, Some(played));
    assert_eq!(c.played_ms, played);
    assert!(c.silent_after_interrupt, "silent from the next quantum on");
    assert_eq!(c.status, Some(ResponseStatus::Cancelled));
    assert!(c.agent_cancelled, "the agent was stopped");
    assert!(c.c2s_dropped > 0 && c.s2c_dropped > 0);
    assert_clean(&s);
}

#[test]
fn a_clean_path_plays_the_reply_contiguously_after_one_rtt_setup() {
    let s = run(Scenario {
        name: "clean path".into(),
        link: LinkConfig {
            delay_ms: 30.0,
            ..LinkConfig::default()
        },
        clients: vec![ClientPlan::default()],
        ..Scenario::default()
    });
    show(&s);
    let c = s.call();
    assert!(
        c.connected_ms <= 2 * 60 + 5,
        "1-RTT handshake: {} ms",
        c.connected_ms
    );
    assert!(c.contiguous && c.underruns == 0);
    assert_eq!(c.quic_lost_client + c.quic_lost_server, 0);
    assert_clean(&s);
    let _ = BlackoutAt::PromptMs(0);
}
