//! What a simulated run is made of: the network, the fleet, and what each caller does.

use std::time::Duration;

use voq_netem::LinkConfig;
use voq_proto::pacing::Lead;

/// When to black a caller's path out (both directions) for [`ClientPlan::blackout_ms`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlackoutAt {
    /// This many ms into the call, while the user is speaking the prompt.
    PromptMs(u64),
    /// When the client has played this many ms of the reply.
    PlayedMs(u64),
}

/// What the user says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prompt {
    /// The shared test recording (2.765 s), spoken in real time from the start of the call.
    Recording,
    /// This many 20 ms frames of synthetic speech, spoken in real time.
    Synthetic {
        /// Frames.
        frames: usize,
    },
}

/// One caller: when it calls, what it says, and what happens to it.
#[derive(Debug, Clone)]
pub struct ClientPlan {
    /// When the call starts, in ms of virtual time.
    pub start_ms: u64,
    /// What the user says.
    pub prompt: Prompt,
    /// A blackout of this caller's path.
    pub blackout: Option<BlackoutAt>,
    /// How long the blackout lasts.
    pub blackout_ms: u64,
    /// The user talks over the agent when this many ms of the reply have played.
    pub barge_in_at_ms: Option<u64>,
    /// The client's address changes (a new port and IP: NAT rebinding, Wi-Fi to cellular) this
    /// many ms into the call.
    pub migrate_at_ms: Option<u64>,
}

impl Default for ClientPlan {
    fn default() -> Self {
        Self {
            start_ms: 0,
            prompt: Prompt::Recording,
            blackout: None,
            blackout_ms: 1000,
            barge_in_at_ms: None,
            migrate_at_ms: None,
        }
    }
}

/// Something that happens to the fleet at a moment of virtual time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FleetEvent {
    /// The balancer marks server `server` down (its health probes fail): no new calls go to
    /// it; calls it holds keep routing to it by their connection IDs.
    ServerDown {
        /// When, in ms.
        at_ms: u64,
        /// Which server (index).
        server: usize,
    },
    /// The balancer process restarts: nothing crosses the VIP for `outage_ms`, then a new
    /// balancer with no memory of any flow routes again.
    BalancerRestart {
        /// When, in ms.
        at_ms: u64,
        /// How long the VIP is dark.
        outage_ms: u64,
    },
}

/// One simulated run.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Its name in the summary table.
    pub name: String,
    /// Seeds the impairments (each caller's path gets `seed + index`) and the QUIC endpoints.
    pub seed: u64,
    /// Each caller's path to the servers, both directions.
    pub link: LinkConfig,
    /// How many servers.
    pub servers: usize,
    /// Whether a stateless balancer (`voq lb`'s routing table) sits at the VIP in front of the
    /// servers, which then issue QUIC-LB connection IDs. Without it there must be one server.
    pub balancer: bool,
    /// The servers' send-ahead lead.
    pub lead: Lead,
    /// How long the agent's reply is (at most the 16 s recording).
    pub reply_ms: u64,
    /// The callers.
    pub clients: Vec<ClientPlan>,
    /// What happens to the fleet.
    pub events: Vec<FleetEvent>,
    /// No run may take longer than this much virtual time.
    pub deadline: Duration,
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            name: "call".into(),
            seed: 1,
            link: LinkConfig {
                delay_ms: 30.0,
                ..LinkConfig::default()
            },
            servers: 1,
            balancer: false,
            lead: Lead::from_ms(2000),
            reply_ms: 2000,
            clients: vec![ClientPlan::default()],
            events: Vec::new(),
            deadline: Duration::from_secs(60),
        }
    }
}
