//! The scenarios of the pinned table (tests/summary.txt), shared by the tests that assert on
//! them one by one.
#![allow(dead_code)]

use voq_netem::LinkConfig;
use voq_proto::pacing::Lead;
use voq_sim::{BlackoutAt, ClientPlan, FleetEvent, Prompt, Scenario};

fn link(loss: f64) -> LinkConfig {
    LinkConfig {
        delay_ms: 30.0,
        loss,
        ..LinkConfig::default()
    }
}

pub fn prompt_under_loss() -> Scenario {
    Scenario {
        name: "prompt, 10% loss".into(),
        seed: 1,
        link: link(0.10),
        ..Scenario::default()
    }
}

pub fn prompt_blackout() -> Scenario {
    Scenario {
        name: "prompt, 1 s blackout".into(),
        seed: 2,
        clients: vec![ClientPlan {
            // One second into the user's turn (which starts with the call).
            blackout: Some(BlackoutAt::PromptMs(1000)),
            ..ClientPlan::default()
        }],
        ..Scenario::default()
    }
}

pub fn reply_blackout(lead: Lead) -> Scenario {
    Scenario {
        name: match lead.as_ms() {
            0 => "reply, 1 s blackout, lead 0".into(),
            ms => format!("reply, 1 s blackout, lead {ms} ms"),
        },
        seed: 3,
        lead,
        reply_ms: 8000,
        clients: vec![ClientPlan {
            blackout: Some(BlackoutAt::PlayedMs(3000)),
            ..ClientPlan::default()
        }],
        ..Scenario::default()
    }
}

pub fn barge_in_under_loss() -> Scenario {
    Scenario {
        name: "barge-in, 5% loss".into(),
        seed: 4,
        link: link(0.05),
        reply_ms: 8000,
        clients: vec![ClientPlan {
            barge_in_at_ms: Some(1500),
            ..ClientPlan::default()
        }],
        ..Scenario::default()
    }
}

/// Twelve short calls, staggered, through the balancer to three servers.
pub fn fleet_spread() -> Scenario {
    Scenario {
        name: "fleet: 12 calls, 3 servers".into(),
        seed: 5,
        servers: 3,
        balancer: true,
        reply_ms: 1000,
        clients: (0..12)
            .map(|i| ClientPlan {
                start_ms: 40 * i,
                prompt: Prompt::Synthetic { frames: 25 },
                ..ClientPlan::default()
            })
            .collect(),
        ..Scenario::default()
    }
}

/// One call; the balancer restarts in the middle of the prompt, with 300 ms of dark VIP.
pub fn balancer_restart() -> Scenario {
    Scenario {
        name: "fleet: balancer restart mid-call".into(),
        seed: 6,
        servers: 3,
        balancer: true,
        events: vec![FleetEvent::BalancerRestart {
            at_ms: 1000,
            outage_ms: 300,
        }],
        ..Scenario::default()
    }
}

/// A long call; its server is marked down 500 ms in; six more calls come after.
pub fn server_down() -> Scenario {
    let mut clients = vec![ClientPlan {
        prompt: Prompt::Synthetic { frames: 10 },
        barge_in_at_ms: Some(3000),
        ..ClientPlan::default()
    }];
    clients.extend((0..6).map(|i| ClientPlan {
        start_ms: 1000 + 100 * i,
        prompt: Prompt::Synthetic { frames: 10 },
        barge_in_at_ms: Some(100),
        ..ClientPlan::default()
    }));
    Scenario {
        name: "fleet: server down mid-call".into(),
        seed: 7,
        servers: 3,
        balancer: true,
        reply_ms: 8000,
        clients,
        events: Vec::new(),
        ..Scenario::default()
    }
}

/// One call through the balancer whose client changes address 1.2 s in.
pub fn migration() -> Scenario {
    Scenario {
        name: "fleet: client migrates mid-call".into(),
        seed: 8,
        servers: 3,
        balancer: true,
        clients: vec![ClientPlan {
            migrate_at_ms: Some(1200),
            ..ClientPlan::default()
        }],
        ..Scenario::default()
    }
}

/// Every scenario of the pinned table, in its order.
pub fn all() -> Vec<Scenario> {
    vec![
        prompt_under_loss(),
        prompt_blackout(),
        reply_blackout(Lead::from_ms(2000)),
        reply_blackout(Lead::from_ms(2500)),
        reply_blackout(Lead::JustInTime),
        barge_in_under_loss(),
        fleet_spread(),
        balancer_restart(),
        migration(),
    ]
}
