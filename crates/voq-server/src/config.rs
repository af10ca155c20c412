//! `voq serve` settings: one struct that is both the command line and the TOML file. Every field
//! is optional so that flags override the file without clobbering what they do not name.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;

/// Settings of `voq serve` (flags, or keys of the `--config` TOML file with the same names).
#[derive(Debug, Clone, Default, clap::Args, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServeConfig {
    /// TOML file with any of these settings; flags given on the command line win.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Address for every carrier: UDP for QUIC and WebTransport, TCP (same port number) for the
    /// demo page and WebSocket [default: 127.0.0.1:4443].
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,
    /// Serve the TCP side (demo page, /voq/config.json, WebSocket) on the listen port number;
    /// `--web false` serves QUIC and WebTransport only [default: true].
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub web: Option<bool>,
    /// The agent: echo, speak, file:PATH.wav, exec:COMMAND, or realtime:WSS_URL (an upstream
    /// Realtime model; key from VOQ_REALTIME_API_KEY or OPENAI_API_KEY) [default: echo].
    #[arg(long, value_name = "SPEC")]
    pub agent: Option<String>,
    /// Speed of the file: agent as a multiple of real time (0 = as fast as possible) [default: 4].
    #[arg(long, value_name = "X")]
    pub agent_speed: Option<f64>,
    /// PEM certificate chain (production). Without it a development certificate is generated.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// PEM private key for --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// How far ahead of the client's playback agent audio may be sent, in ms (0 = just in time)
    /// [default: 2000].
    #[arg(long, value_name = "MS")]
    pub send_ahead_ms: Option<u64>,
    /// Write every user turn and agent response as WAV + JSON into this directory.
    #[arg(long, value_name = "DIR")]
    pub record: Option<PathBuf>,
    /// Sessions served at once; more connections are refused [default: 1000].
    #[arg(long, value_name = "N")]
    pub max_sessions: Option<usize>,
    /// QUIC handshakes in progress at once, apart from the sessions; past a quarter of it,
    /// unvalidated clients are sent a Retry first, and past all of it they are refused
    /// [default: 256].
    #[arg(long, value_name = "N")]
    pub max_handshakes: Option<usize>,
    /// On shutdown, how long sessions may finish their current response, in ms [default: 5000].
    #[arg(long, value_name = "MS")]
    pub drain_timeout_ms: Option<u64>,
    /// Behind `voq lb` (with --server-id): datagrams arrive with a PROXY v2 header and replies
    /// go back through the balancer. `auto` learns its address from the tunnelled datagrams
    /// (balancers on loopback or private addresses only), `VIP:PORT` pins it, `off` serves
    /// clients directly [default: auto with --server-id, off otherwise].
    #[arg(long, value_name = "auto|off|VIP:PORT")]
    pub lb_tunnel: Option<String>,
    /// Serve Prometheus metrics at http://ADDR/metrics (TCP).
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<SocketAddr>,
    /// A web origin (`https://app.example`) whose pages may open sessions from a browser, beside
    /// the server's own pages (and loopback pages when it listens on loopback); `*` allows
    /// every origin. Repeatable.
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    pub allow_origin: Option<Vec<String>>,
    /// QUIC-LB server id (hex, e.g. 0a01): issue routable connection IDs so a stateless
    /// `voq lb` can route to this server. Its length is the config's server-id length.
    #[arg(long, value_name = "HEX", env = "VOQ_SERVER_ID")]
    pub server_id: Option<String>,
    /// Behind an AWS Network Load Balancer with QUIC passthrough: take the server id from
    /// AWS_LBC_QUIC_SERVER_ID (injected by the AWS Load Balancer Controller) or --server-id
    /// (`0x` + 16 hex digits), and issue the NLB's plaintext CIDs of --nlb-cid-len octets.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    #[arg(conflicts_with_all = ["lb_config_id", "lb_nonce_len", "lb_key", "lb_cid_len", "lb_self_encoded_len"])]
    pub nlb: Option<bool>,
    /// CID length for --nlb: AWS's documentation and field reports disagree (16 vs 19-20);
    /// see docs/QUIC-LB.md [default: 16].
    #[arg(long, value_name = "OCTETS")]
    pub nlb_cid_len: Option<usize>,
    /// QUIC-LB config id (0..=6; the config rotation bits) [default: 0].
    #[arg(long, value_name = "N")]
    pub lb_config_id: Option<u8>,
    /// QUIC-LB nonce length in octets [default: 8].
    #[arg(long, value_name = "OCTETS")]
    pub lb_nonce_len: Option<usize>,
    /// QUIC-LB CID length, first octet included (adds server-use octets); must match the
    /// balancer's [default: 1 + server id + nonce].
    #[arg(long, value_name = "OCTETS")]
    pub lb_cid_len: Option<usize>,
    /// Whether QUIC-LB CIDs self-encode their length in the first octet; must match the
    /// balancer's [default: true].
    #[arg(long, value_name = "BOOL")]
    pub lb_self_encoded_len: Option<bool>,
    /// QUIC-LB AES-128 key (32 hex digits), shared with the balancer; without it CIDs are
    /// plaintext (the server id is visible on the wire). Prefer the environment variable to
    /// keep the key off the command line.
    #[arg(long, value_name = "HEX", env = "VOQ_LB_KEY", hide_env_values = true)]
    pub lb_key: Option<String>,
    /// Session tokens: a JWKS file of the keys that sign them (HS256 `oct` secrets, ES256 P-256
    /// public keys, by `kid`; re-read when it changes). Every session must then present a
    /// valid token (`voq token` mints them). Required off loopback unless --no-auth.
    #[arg(long, value_name = "FILE", conflicts_with = "no_auth")]
    pub auth_keys: Option<PathBuf>,
    /// The audience (`aud`) tokens must name [default: voq].
    #[arg(long, value_name = "AUD")]
    pub auth_audience: Option<String>,
    /// The issuer (`iss`) tokens must name, if any.
    #[arg(long, value_name = "ISS")]
    pub auth_issuer: Option<String>,
    /// Serve sessions without tokens on a non-loopback address: anyone who can reach the port
    /// can use the agent. Only for networks you trust.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub no_auth: Option<bool>,
    /// The longest a call may last, in seconds; a token may allow less (0 = no limit)
    /// [default: 14400, 4 hours].
    #[arg(long, value_name = "S")]
    pub max_call_duration_s: Option<u64>,
    /// Sessions one network (IPv4 /24, IPv6 /56) may hold at once; loopback is exempt
    /// (0 = no cap) [default: 256].
    #[arg(long, value_name = "N")]
    pub max_sessions_per_prefix: Option<u32>,
    /// QUIC handshakes a second one network may start (bursts of 4x); unvalidated sources over
    /// it are sent a Retry, validated ones refused; loopback is exempt (0 = no cap)
    /// [default: 50].
    #[arg(long, value_name = "N")]
    pub max_handshake_rate_per_prefix: Option<u32>,
    /// A secret shared by the servers of a fleet (64+ hex digits, or 32+ bytes), from which
    /// the keys of address-validation tokens (Retry), stateless resets and session tickets
    /// (0-RTT on any server) are derived, so that any server checks what another issued. Or
    /// the VOQ_FLEET_SECRET environment variable.
    #[arg(long, value_name = "FILE")]
    pub fleet_secret_file: Option<PathBuf>,
    /// The UDP socket's receive buffer in bytes, so that bursts are queued rather than dropped
    /// by the kernel (capped by net.core.rmem_max; 0 keeps the system default) [default: 4194304].
    #[arg(long, value_name = "BYTES")]
    pub udp_recv_buffer: Option<usize>,
    /// Opus encoder complexity of agent audio, 0..=10: 5 halves the server's CPU per Opus call
    /// for a small loss of quality (docs/BENCHMARKS.md, "Capacity") [default: 10].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(0..=10))]
    pub opus_complexity: Option<u8>,
    /// The fleet's shared anycast address (UDP): handshakes land here and are handed to this
    /// server's own --listen address with QUIC's preferred_address. Its IP must differ from
    /// --listen's, which must be a specific address (docs/DEPLOY.md, "An anycast fleet").
    #[arg(long, value_name = "ADDR:PORT")]
    pub anycast: Option<SocketAddr>,
    /// Another server of the anycast fleet, `SERVER_ID=UNICAST_ADDR:PORT` (hex server id, as
    /// its --server-id): datagrams of its connections that reach this server's anycast address
    /// are forwarded there. Repeatable; this server's own entry, if listed, is skipped (so every
    /// server may get the same list). Needs --anycast and --server-id.
    #[arg(long = "fleet-peer", value_name = "ID=ADDR:PORT")]
    pub fleet_peer: Option<Vec<String>>,
    /// BIRD 2's control socket: announce the anycast address through it while this server has
    /// room, withdraw it when full or draining (load shedding). Needs --anycast.
    #[arg(long, value_name = "PATH")]
    pub bird_socket: Option<PathBuf>,
    /// The BIRD protocol that is the announcement (`enable`/`disable NAME`) [default: anycast].
    #[arg(long, value_name = "NAME")]
    pub bird_protocol: Option<String>,
    /// Withdraw the anycast route at this many sessions [default: 90% of --max-sessions].
    #[arg(long, value_name = "N")]
    pub shed_at_sessions: Option<u64>,
    /// Announce it again at or below this many [default: 75% of --max-sessions].
    #[arg(long, value_name = "N")]
    pub resume_at_sessions: Option<u64>,
    /// Withdraw when the event loop runs this late, smoothed, in ms [default: 50]; announce
    /// again under a fifth of it.
    #[arg(long, value_name = "MS")]
    pub shed_at_lag_ms: Option<f64>,
    /// On shutdown, go on taking new calls this long after withdrawing the anycast route, while
    /// the routers converge [default: 2000].
    #[arg(long, value_name = "MS")]
    pub withdraw_grace_ms: Option<u64>,
    /// Keep sessions resumable in this store, so that a client whose connection is lost gets
    /// its session back (docs/DEPLOY.md, "Resumable sessions"): `memory` (this process),
    /// `file:PATH` (an embedded database: survives a restart of this server) or
    /// `redis://HOST:PORT[/DB]` (shared by a fleet; give every server the same
    /// --fleet-secret-file). Off by default.
    #[arg(long, value_name = "SPEC")]
    pub session_store: Option<String>,
    /// How long after its last save a session may be resumed, in seconds [default: 120].
    #[arg(long, value_name = "S")]
    pub resume_window_s: Option<u64>,
}

/// Settings with every default applied.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    /// Whether the TCP side (page, WebSocket) is served.
    pub web: bool,
    pub agent: String,
    pub agent_speed: f64,
    pub cert: Option<(PathBuf, PathBuf)>,
    pub send_ahead_ms: u64,
    pub record: Option<PathBuf>,
    pub max_sessions: usize,
    /// QUIC handshakes in progress at once (see `--max-handshakes`).
    pub max_handshakes: usize,
    pub drain_timeout: Duration,
    /// Routable connection IDs (QUIC-LB), when behind `voq lb`.
    pub quic_lb: Option<QuicLbSettings>,
    /// Where to serve Prometheus metrics.
    pub metrics: Option<SocketAddr>,
    /// Web origins allowed beyond the server's own (see [`crate::origin`]).
    pub allowed_origins: Vec<String>,
    /// How datagrams reach this server.
    pub tunnel: Tunnel,
    /// Token verification (`None`: sessions need no token).
    pub auth: Option<std::sync::Arc<crate::auth::Authenticator>>,
    /// The longest a call may last (`None`: no limit).
    pub max_call_duration: Option<Duration>,
    /// Per-source-prefix caps (`None`: off).
    pub prefix_caps: Option<crate::prefix::PrefixCaps>,
    /// Keys shared by a fleet (`None`: random per server).
    pub fleet: Option<crate::fleet::FleetKeys>,
    /// The UDP receive buffer to ask for (`None`: the system default).
    pub udp_recv_buffer: Option<usize>,
    /// Opus encoder settings of agent audio.
    pub opus: voq_audio::OpusConfig,
    /// The anycast fleet this server belongs to (`None`: one address).
    pub anycast: Option<AnycastSettings>,
    /// Announcing the anycast route through a routing daemon (`None`: not ours to announce).
    pub announce: Option<crate::announce::AnnounceSettings>,
    /// Resumable sessions: the store and token keys (`None`: sessions end with their
    /// connection).
    pub resumption: Option<std::sync::Arc<crate::resume::Resumption>>,
}

/// A server of an anycast fleet: handshakes on the shared address, calls on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnycastSettings {
    /// The shared anycast address.
    pub addr: SocketAddr,
    /// The other servers: QUIC-LB server id → unicast address.
    pub peers: Vec<(Vec<u8>, SocketAddr)>,
}

impl AnycastSettings {
    /// Parses `--fleet-peer` values (`HEX=ADDR:PORT`).
    pub fn parse_peers(values: &[String]) -> anyhow::Result<Vec<(Vec<u8>, SocketAddr)>> {
        values
            .iter()
            .map(|v| {
                let (id, addr) = v
                    .split_once('=')
                    .with_context(|| format!("fleet-peer \"{v}\": expected SERVER_ID=ADDR:PORT"))?;
                let addr: SocketAddr = addr
                    .parse()
                    .with_context(|| format!("fleet-peer \"{v}\": \"{addr}\" is not ADDR:PORT"))?;
                Ok((parse_hex("fleet-peer server id", id)?, addr))
            })
            .collect()
    }
}

/// How datagrams reach the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tunnel {
    /// Clients talk to the server directly.
    #[default]
    Off,
    /// Through `voq lb`, whose address is learned from the tunnelled datagrams.
    Learn,
    /// Through `voq lb` at this VIP.
    Vip(SocketAddr),
}

/// This server's QUIC-LB identity: which server id its connection IDs carry, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuicLbSettings {
    pub config_id: u8,
    pub server_id: Vec<u8>,
    pub nonce_len: usize,
    pub key: Option<[u8; 16]>,
    /// Total CID length, when longer than the configuration needs.
    pub cid_len: Option<usize>,
    /// Whether CIDs self-encode their length (QUIC-LB's default: yes).
    pub self_encoded_len: Option<bool>,
}

impl QuicLbSettings {
    /// The QUIC-LB configuration (validated: lengths and config id).
    pub fn config(&self) -> anyhow::Result<voq_quic_lb::Config> {
        let config = voq_quic_lb::Config::new(self.config_id, self.server_id.len(), self.nonce_len)
            .context("invalid QUIC-LB settings")?;
        let config = match self.key {
            Some(key) => config.with_key(key),
            None => config,
        };
        let config = match self.cid_len {
            Some(len) => config
                .with_cid_len(len)
                .context("invalid QUIC-LB settings: lb-cid-len")?,
            None => config,
        };
        Ok(match self.self_encoded_len {
            Some(on) => config.with_self_encoded_len(on),
            None => config,
        })
    }
}

/// The AWS NLB preset: server id from `--server-id` or the controller's environment variable.
fn nlb_settings(server_id: Option<&str>, cid_len: usize) -> anyhow::Result<QuicLbSettings> {
    use voq_quic_lb::nlb;
    let text = match server_id {
        Some(s) => s.to_string(),
        None => std::env::var(nlb::SERVER_ID_ENV).with_context(|| {
            format!(
                "--nlb needs a server id: {} is not set (and no --server-id)",
                nlb::SERVER_ID_ENV
            )
        })?,
    };
    let sid = nlb::parse_server_id(&text).with_context(|| format!("NLB server id \"{text}\""))?;
    let config = nlb::config(cid_len).context("--nlb-cid-len")?;
    Ok(QuicLbSettings {
        config_id: config.id(),
        server_id: sid.to_vec(),
        nonce_len: config.nonce_len(),
        key: None,
        cid_len: None,
        self_encoded_len: None,
    })
}

/// Parses hex with an optional `0x` prefix (voq-quic-lb's parser, shared with `voq lb`).
fn parse_hex(field: &str, text: &str) -> anyhow::Result<Vec<u8>> {
    voq_quic_lb::hex::decode(text).with_context(|| format!("{field}: \"{text}\""))
}

/// The UDP receive buffer asked for unless configured otherwise: 4 MiB, about 2,900 full-size
/// datagrams (a second of 1,000 calls' audio in both directions is ~100,000 small ones).
pub const DEFAULT_UDP_RECV_BUFFER: usize = 4 << 20;

/// The longest a call lasts unless configured otherwise.
pub const DEFAULT_MAX_CALL_DURATION: Duration = Duration::from_secs(4 * 3600);

impl Settings {
    /// A server for tests, benchmarks and the demo: an ephemeral port on 127.0.0.1, `agent`,
    /// and a 2 s drain; the rest as [`Settings::default`].
    pub fn loopback(agent: &str) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            agent: agent.into(),
            drain_timeout: Duration::from_secs(2),
            ..Self::default()
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 4443)),
            web: true,
            agent: "echo".into(),
            agent_speed: 4.0,
            cert: None,
            send_ahead_ms: 2000,
            record: None,
            max_sessions: 1000,
            max_handshakes: 256,
            drain_timeout: Duration::from_secs(5),
            quic_lb: None,
            metrics: None,
            allowed_origins: Vec::new(),
            tunnel: Tunnel::Off,
            auth: None,
            max_call_duration: Some(DEFAULT_MAX_CALL_DURATION),
            prefix_caps: Some(crate::prefix::PrefixCaps::default()),
            fleet: None,
            udp_recv_buffer: Some(DEFAULT_UDP_RECV_BUFFER),
            opus: voq_audio::OpusConfig::default(),
            anycast: None,
            announce: None,
            resumption: None,
        }
    }
}

impl ServeConfig {
    /// Reads a TOML file of settings.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    /// `self` (the command line) over `file`.
    pub fn over(self, file: ServeConfig) -> Self {
        Self {
            config: self.config,
            listen: self.listen.or(file.listen),
            web: self.web.or(file.web),
            agent: self.agent.or(file.agent),
            agent_speed: self.agent_speed.or(file.agent_speed),
            cert: self.cert.or(file.cert),
            key: self.key.or(file.key),
            send_ahead_ms: self.send_ahead_ms.or(file.send_ahead_ms),
            record: self.record.or(file.record),
            max_sessions: self.max_sessions.or(file.max_sessions),
            max_handshakes: self.max_handshakes.or(file.max_handshakes),
            drain_timeout_ms: self.drain_timeout_ms.or(file.drain_timeout_ms),
            metrics: self.metrics.or(file.metrics),
            allow_origin: self.allow_origin.or(file.allow_origin),
            lb_tunnel: self.lb_tunnel.or(file.lb_tunnel),
            server_id: self.server_id.or(file.server_id),
            nlb: self.nlb.or(file.nlb),
            nlb_cid_len: self.nlb_cid_len.or(file.nlb_cid_len),
            lb_config_id: self.lb_config_id.or(file.lb_config_id),
            lb_nonce_len: self.lb_nonce_len.or(file.lb_nonce_len),
            lb_cid_len: self.lb_cid_len.or(file.lb_cid_len),
            lb_self_encoded_len: self.lb_self_encoded_len.or(file.lb_self_encoded_len),
            lb_key: self.lb_key.or(file.lb_key),
            auth_keys: self.auth_keys.or(file.auth_keys),
            auth_audience: self.auth_audience.or(file.auth_audience),
            auth_issuer: self.auth_issuer.or(file.auth_issuer),
            no_auth: self.no_auth.or(file.no_auth),
            max_call_duration_s: self.max_call_duration_s.or(file.max_call_duration_s),
            max_sessions_per_prefix: self
                .max_sessions_per_prefix
                .or(file.max_sessions_per_prefix),
            max_handshake_rate_per_prefix: self
                .max_handshake_rate_per_prefix
                .or(file.max_handshake_rate_per_prefix),
            fleet_secret_file: self.fleet_secret_file.or(file.fleet_secret_file),
            udp_recv_buffer: self.udp_recv_buffer.or(file.udp_recv_buffer),
            opus_complexity: self.opus_complexity.or(file.opus_complexity),
            anycast: self.anycast.or(file.anycast),
            fleet_peer: self.fleet_peer.or(file.fleet_peer),
            bird_socket: self.bird_socket.or(file.bird_socket),
            bird_protocol: self.bird_protocol.or(file.bird_protocol),
            shed_at_sessions: self.shed_at_sessions.or(file.shed_at_sessions),
            resume_at_sessions: self.resume_at_sessions.or(file.resume_at_sessions),
            shed_at_lag_ms: self.shed_at_lag_ms.or(file.shed_at_lag_ms),
            withdraw_grace_ms: self.withdraw_grace_ms.or(file.withdraw_grace_ms),
            session_store: self.session_store.or(file.session_store),
            resume_window_s: self.resume_window_s.or(file.resume_window_s),
        }
    }

    /// Loads `--config` if given, applies it under the flags, then the defaults.
    pub fn resolve(self) -> anyhow::Result<Settings> {
        let merged = match &self.config {
            Some(path) => {
                let file = Self::from_file(path)?;
                self.over(file)
            }
            None => self,
        };
        let d = Settings::default();
        let cert = match (merged.cert, merged.key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => anyhow::bail!("cert and key must be given together"),
        };
        let quic_lb = match &merged.server_id {
            _ if merged.nlb.unwrap_or(false) => Some(nlb_settings(
                merged.server_id.as_deref(),
                merged
                    .nlb_cid_len
                    .unwrap_or(voq_quic_lb::nlb::DEFAULT_CID_LEN),
            )?),
            None => {
                anyhow::ensure!(
                    merged.lb_key.is_none()
                        && merged.lb_config_id.is_none()
                        && merged.lb_nonce_len.is_none()
                        && merged.lb_cid_len.is_none()
                        && merged.lb_self_encoded_len.is_none(),
                    "the lb-* settings need server-id"
                );
                None
            }
            Some(sid) => {
                let key = match &merged.lb_key {
                    None => None,
                    Some(k) => Some(
                        voq_quic_lb::hex::decode_array::<16>(k)
                            .context("lb-key (AES-128: 32 hex digits)")?,
                    ),
                };
                let lb = QuicLbSettings {
                    config_id: merged.lb_config_id.unwrap_or(0),
                    server_id: parse_hex("server-id", sid)?,
                    nonce_len: merged.lb_nonce_len.unwrap_or(8),
                    key,
                    cid_len: merged.lb_cid_len,
                    self_encoded_len: merged.lb_self_encoded_len,
                };
                lb.config()?;
                Some(lb)
            }
        };
        let nlb = merged.nlb.unwrap_or(false);
        let listen = merged.listen.unwrap_or(d.listen);
        let anycast = match merged.anycast {
            None => {
                anyhow::ensure!(
                    merged.fleet_peer.is_none(),
                    "fleet-peer needs anycast: peers forward each other's anycast traffic"
                );
                None
            }
            Some(addr) => {
                anyhow::ensure!(
                    merged.lb_tunnel.is_none() && !nlb,
                    "anycast and a balancer (lb-tunnel, nlb) exclude each other: an anycast fleet \
                     needs no balancer"
                );
                anyhow::ensure!(
                    !listen.ip().is_unspecified(),
                    "with anycast, listen must be this server's own specific unicast address \
                     (it is sent to clients as the preferred address), not {listen}"
                );
                anyhow::ensure!(
                    addr.ip() != listen.ip(),
                    "anycast {addr} and listen {listen} must differ in IP address"
                );
                anyhow::ensure!(
                    addr.is_ipv4() == listen.is_ipv4(),
                    "anycast {addr} and listen {listen} must be of one address family"
                );
                let mut peers =
                    AnycastSettings::parse_peers(merged.fleet_peer.as_deref().unwrap_or(&[]))?;
                if !peers.is_empty() {
                    let lb = quic_lb.as_ref().context(
                        "fleet-peer needs server-id: peers are told apart by the server id in \
                         connection IDs",
                    )?;
                    for (id, addr) in &peers {
                        anyhow::ensure!(
                            id.len() == lb.server_id.len(),
                            "fleet-peer {}={addr}: server ids of this fleet have {} octets",
                            voq_quic_lb::hex::encode(id),
                            lb.server_id.len()
                        );
                    }
                    // Every server may be given the whole fleet's list: its own entry is
                    // skipped (its datagrams are never forwarded).
                    peers.retain(|(id, _)| *id != lb.server_id);
                }
                if quic_lb.is_none() {
                    tracing::warn!(
                        "anycast without server-id: connection IDs name no server, so datagrams \
                         that reach this server for another one cannot be forwarded (clients that \
                         do not move to the unicast address break at an ECMP rehash)"
                    );
                }
                Some(AnycastSettings { addr, peers })
            }
        };
        let max_sessions = merged.max_sessions.unwrap_or(d.max_sessions);
        let announce = match &merged.bird_socket {
            None => {
                anyhow::ensure!(
                    merged.bird_protocol.is_none()
                        && merged.shed_at_sessions.is_none()
                        && merged.resume_at_sessions.is_none()
                        && merged.shed_at_lag_ms.is_none()
                        && merged.withdraw_grace_ms.is_none(),
                    "bird-protocol and the shed-/resume- settings need bird-socket"
                );
                None
            }
            Some(socket) => {
                anyhow::ensure!(
                    anycast.is_some(),
                    "bird-socket needs anycast: the route it announces is the anycast address's"
                );
                let mut t = crate::announce::Thresholds::for_capacity(max_sessions);
                if let Some(n) = merged.shed_at_sessions {
                    t.shed_sessions = n.max(1);
                }
                if let Some(n) = merged.resume_at_sessions {
                    t.resume_sessions = n;
                }
                anyhow::ensure!(
                    t.resume_sessions < t.shed_sessions,
                    "resume-at-sessions ({}) must be below shed-at-sessions ({}), or the route \
                     would flap",
                    t.resume_sessions,
                    t.shed_sessions
                );
                if let Some(ms) = merged.shed_at_lag_ms {
                    anyhow::ensure!(ms > 0.0 && ms.is_finite(), "shed-at-lag-ms must be > 0");
                    t.shed_lag_ms = ms;
                    t.resume_lag_ms = ms / 5.0;
                }
                Some(crate::announce::AnnounceSettings {
                    bird_socket: socket.clone(),
                    protocol: merged
                        .bird_protocol
                        .clone()
                        .unwrap_or_else(|| "anycast".into()),
                    thresholds: t,
                    withdraw_grace: Duration::from_millis(merged.withdraw_grace_ms.unwrap_or(2000)),
                })
            }
        };
        let tunnel = match merged.lb_tunnel.as_deref() {
            None if quic_lb.is_some() && !nlb && anycast.is_none() => Tunnel::Learn,
            None | Some("off") => Tunnel::Off,
            Some(_) if quic_lb.is_none() => anyhow::bail!(
                "lb-tunnel needs server-id: the balancer routes by the server id in connection IDs"
            ),
            Some("auto") => Tunnel::Learn,
            Some(vip) => {
                Tunnel::Vip(vip.parse().with_context(|| {
                    format!("lb-tunnel: \"{vip}\" is not auto, off or VIP:PORT")
                })?)
            }
        };
        let no_auth = merged.no_auth.unwrap_or(false);
        let auth = match (&merged.auth_keys, no_auth) {
            (Some(_), true) => anyhow::bail!("auth-keys and no-auth contradict each other"),
            (Some(path), false) => Some(std::sync::Arc::new(crate::auth::Authenticator::load(
                path,
                merged
                    .auth_audience
                    .as_deref()
                    .unwrap_or(crate::auth::DEFAULT_AUDIENCE),
                merged.auth_issuer.as_deref(),
            )?)),
            (None, false) if !listen.ip().is_loopback() => anyhow::bail!(
                "voq serve on {listen} would let anyone who reaches it use the agent: give \
                 --auth-keys FILE (a JWKS file; `voq token keygen` makes one) so that sessions \
                 need a token, or --no-auth to serve without (docs/DEPLOY.md, \"Security model\")"
            ),
            (None, _) => None,
        };
        let caps = crate::prefix::PrefixCaps::default();
        let prefix_caps = match (
            merged.max_sessions_per_prefix,
            merged.max_handshake_rate_per_prefix,
        ) {
            (Some(0), Some(0)) => None,
            (sessions, rate) => {
                let rate = rate.map_or(caps.handshake_rate, f64::from);
                Some(crate::prefix::PrefixCaps {
                    // 0 turns one cap off, not both.
                    sessions: match sessions {
                        Some(0) => u32::MAX,
                        Some(n) => n,
                        None => caps.sessions,
                    },
                    handshake_rate: if rate == 0.0 { f64::INFINITY } else { rate },
                    handshake_burst: if rate == 0.0 {
                        f64::INFINITY
                    } else {
                        rate * 4.0
                    },
                    exempt_loopback: true,
                })
            }
        };
        let fleet = match (&merged.fleet_secret_file, std::env::var("VOQ_FLEET_SECRET")) {
            (Some(path), _) => Some(crate::fleet::FleetKeys::load(path)?),
            (None, Ok(text)) => {
                Some(crate::fleet::FleetKeys::parse(&text).context("VOQ_FLEET_SECRET")?)
            }
            (None, Err(_)) => None,
        };
        let resumption = match &merged.session_store {
            None => None,
            Some(spec) => {
                let store = crate::resume::open_store(spec)?;
                let keys = match (&fleet, store.token_secret()) {
                    (Some(f), _) => crate::resume::ResumeKeys::from_secret(&f.resume_secret()),
                    (None, Some(kept)) => crate::resume::ResumeKeys::from_secret(&kept),
                    (None, None) => crate::resume::ResumeKeys::random()?,
                };
                let window = match merged.resume_window_s {
                    None => crate::resume::DEFAULT_RESUME_WINDOW,
                    Some(0) => anyhow::bail!("resume-window-s must be at least 1"),
                    Some(s) => Duration::from_secs(s),
                };
                Some(std::sync::Arc::new(crate::resume::Resumption {
                    keys,
                    store,
                    window,
                }))
            }
        };
        Ok(Settings {
            resumption,
            opus: voq_audio::OpusConfig {
                complexity: merged.opus_complexity.unwrap_or(d.opus.complexity).min(10),
                ..d.opus
            },
            udp_recv_buffer: match merged.udp_recv_buffer {
                None => d.udp_recv_buffer,
                Some(0) => None,
                Some(n) => Some(n),
            },
            fleet,
            anycast,
            announce,
            prefix_caps,
            auth,
            max_call_duration: match merged.max_call_duration_s {
                None => d.max_call_duration,
                Some(0) => None,
                Some(s) => Some(Duration::from_secs(s)),
            },
            quic_lb,
            metrics: merged.metrics,
            allowed_origins: merged.allow_origin.unwrap_or_default(),
            tunnel,
            listen,
            web: merged.web.unwrap_or(d.web),
            agent: merged.agent.unwrap_or(d.agent),
            agent_speed: merged.agent_speed.unwrap_or(d.agent_speed),
            cert,
            send_ahead_ms: merged.send_ahead_ms.unwrap_or(d.send_ahead_ms),
            record: merged.record,
            max_sessions,
            max_handshakes: merged.max_handshakes.unwrap_or(d.max_handshakes).max(1),
            drain_timeout: merged
                .drain_timeout_ms
                .map_or(d.drain_timeout, Duration::from_millis),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_without_clobbering_it() -> anyhow::Result<()> {
        let file: ServeConfig = toml::from_str(
            "listen = \"127.0.0.1:9000\"\nagent = \"speak\"\nsend-ahead-ms = 500\n",
        )?;
        let cli = ServeConfig {
            agent: Some("echo".into()),
            ..Default::default()
        };
        let s = ServeConfig {
            config: None,
            ..cli.over(file)
        }
        .resolve()?;
        assert_eq!(s.listen, "127.0.0.1:9000".parse()?);
        assert_eq!(s.agent, "echo");
        assert_eq!(s.send_ahead_ms, 500);
        assert_eq!(s.max_sessions, 1000);
        Ok(())
    }

    #[test]
    fn anycast_settings_are_validated() -> anyhow::Result<()> {
        let fleet = |f: &dyn Fn(&mut ServeConfig)| {
            let mut c = ServeConfig {
                listen: Some("198.18.21.2:4433".parse().expect("addr")),
                anycast: Some("198.19.0.1:4433".parse().expect("addr")),
                server_id: Some("01".into()),
                no_auth: Some(true),
                fleet_peer: Some(vec!["02=198.18.22.2:4433".into()]),
                bird_socket: Some("/run/bird.ctl".into()),
                max_sessions: Some(100),
                ..Default::default()
            };
            f(&mut c);
            c.resolve().map_err(|e| format!("{e:#}"))
        };
        let ok = fleet(&|_| {}).map_err(anyhow::Error::msg)?;
        let anycast = ok.anycast.expect("anycast");
        assert_eq!(anycast.peers, vec![(vec![2], "198.18.22.2:4433".parse()?)]);
        assert_eq!(
            ok.tunnel,
            Tunnel::Off,
            "an anycast server needs no balancer tunnel"
        );
        let announce = ok.announce.expect("announce");
        assert_eq!(
            (
                announce.protocol.as_str(),
                announce.thresholds.shed_sessions
            ),
            ("anycast", 90)
        );
        let err = |f: &dyn Fn(&mut ServeConfig)| fleet(f).err().unwrap_or_default();
        assert!(
            err(&|c| c.listen = Some("0.0.0.0:4433".parse().expect("addr"))).contains("specific")
        );
        assert!(
            err(&|c| c.anycast = Some("198.18.21.2:5000".parse().expect("addr")))
                .contains("differ")
        );
        assert!(err(&|c| c.fleet_peer = Some(vec!["0203=1.2.3.4:5".into()])).contains("octets"));
        let whole_list = fleet(&|c| {
            c.fleet_peer = Some(vec![
                "01=198.18.21.2:4433".into(),
                "02=198.18.22.2:4433".into(),
            ])
        })
        .map_err(anyhow::Error::msg)?;
        assert_eq!(
            whole_list.anycast.expect("anycast").peers.len(),
            1,
            "its own entry is skipped"
        );
        assert!(err(&|c| c.fleet_peer = Some(vec!["02:1.2.3.4".into()])).contains("ID=ADDR"));
        assert!(err(&|c| c.resume_at_sessions = Some(95)).contains("flap"));
        assert!(err(&|c| c.anycast = None).contains("needs anycast"));
        assert!(err(&|c| c.lb_tunnel = Some("auto".into())).contains("no balancer"));
        Ok(())
    }

    #[test]
    fn quic_lb_settings_are_validated() -> anyhow::Result<()> {
        let ok = ServeConfig {
            server_id: Some("0x0a01".into()),
            lb_key: Some("8f".repeat(16)),
            ..Default::default()
        };
        let lb = ok.resolve()?.quic_lb.expect("set");
        assert_eq!(
            (lb.server_id, lb.nonce_len, lb.key.is_some()),
            (vec![0x0a, 0x01], 8, true)
        );
        let bad = |c: ServeConfig| {
            c.resolve()
                .err()
                .map(|e| format!("{e:#}"))
                .unwrap_or_default()
        };
        assert!(
            bad(ServeConfig {
                server_id: Some("xyz".into()),
                ..Default::default()
            })
            .contains("server-id")
        );
        assert!(
            bad(ServeConfig {
                server_id: Some("01".into()),
                lb_key: Some("00".into()),
                ..Default::default()
            })
            .contains("lb-key")
        );
        assert!(
            bad(ServeConfig {
                lb_key: Some("00".into()),
                ..Default::default()
            })
            .contains("need server-id")
        );
        let long = ServeConfig {
            server_id: Some("01".repeat(16)),
            ..Default::default()
        };
        assert!(bad(long).contains("QUIC-LB"), "sid + nonce over 19 octets");
        assert!(
            bad(ServeConfig {
                server_id: Some("01".into()),
                lb_cid_len: Some(5),
                ..Default::default()
            })
            .contains("lb-cid-len"),
            "shorter than 1 + server id + nonce"
        );
        Ok(())
    }

    #[test]
    fn cid_length_and_self_encoding_match_a_balancer_that_sets_them() -> anyhow::Result<()> {
        let config = ServeConfig {
            server_id: Some("0a01".into()),
            lb_cid_len: Some(16),
            lb_self_encoded_len: Some(false),
            ..Default::default()
        }
        .resolve()?
        .quic_lb
        .expect("set")
        .config()?;
        let mut encoder = voq_quic_lb::Encoder::new(config.clone(), &[0x0a, 0x01], [7; 32])?;
        let cid = encoder.generate();
        assert_eq!(cid.len(), 16);
        assert_eq!(config.decode(&cid)?.server_id.as_bytes(), [0x0a, 0x01]);
        Ok(())
    }

    #[test]
    fn a_server_id_means_behind_the_balancer_unless_said_otherwise() -> anyhow::Result<()> {
        let sid = || ServeConfig {
            server_id: Some("01".into()),
            ..Default::default()
        };
        assert_eq!(sid().resolve()?.tunnel, Tunnel::Learn);
        let off = ServeConfig {
            lb_tunnel: Some("off".into()),
            ..sid()
        };
        assert_eq!(off.resolve()?.tunnel, Tunnel::Off);
        let vip = ServeConfig {
            lb_tunnel: Some("127.0.0.1:4433".into()),
            ..sid()
        };
        assert_eq!(
            vip.resolve()?.tunnel,
            Tunnel::Vip("127.0.0.1:4433".parse()?)
        );
        let bad = ServeConfig {
            lb_tunnel: Some("somewhere".into()),
            ..sid()
        };
        assert!(format!("{:#}", bad.resolve().expect_err("error")).contains("lb-tunnel"));
        let alone = ServeConfig {
            lb_tunnel: Some("auto".into()),
            ..Default::default()
        };
        assert!(format!("{:#}", alone.resolve().expect_err("error")).contains("needs server-id"));
        assert_eq!(ServeConfig::default().resolve()?.tunnel, Tunnel::Off);
        Ok(())
    }

    #[test]
    fn nlb_preset_takes_the_controllers_base64_server_id() -> anyhow::Result<()> {
        let c = ServeConfig {
            nlb: Some(true),
            server_id: Some("LWV1oW+gjqQ=".into()),
            ..Default::default()
        };
        let lb = c.resolve()?.quic_lb.expect("set");
        assert_eq!(
            lb.server_id,
            [0x2d, 0x65, 0x75, 0xa1, 0x6f, 0xa0, 0x8e, 0xa4]
        );
        assert_eq!(
            (lb.config_id, lb.key, lb.config()?.cid_len()),
            (0, None, 16)
        );
        let c = ServeConfig {
            nlb: Some(true),
            server_id: Some("0x2d6575a16fa08ea4".into()),
            nlb_cid_len: Some(20),
            ..Default::default()
        };
        assert_eq!(c.resolve()?.quic_lb.expect("set").config()?.cid_len(), 20);
        let bad = ServeConfig {
            nlb: Some(true),
            server_id: Some("nope".into()),
            ..Default::default()
        };
        assert!(format!("{:#}", bad.resolve().expect_err("error")).contains("NLB server id"));
        Ok(())
    }

    #[test]
    fn unknown_keys_are_errors_that_name_the_key() {
        let err = toml::from_str::<ServeConfig>("lissen = \"x\"")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("lissen"), "{err}");
    }
}
