//! `voq lb` settings: one struct that is both the command line and the TOML file. Every field
//! is optional so that flags override the file without clobbering what they do not name.
//!
//! ```toml
//! listen = "0.0.0.0:443"
//! # the QUIC-LB configuration servers issue CIDs with (voq serve's names for it)
//! lb-config-id = 1
//! lb-server-id-len = 2
//! lb-nonce-len = 6
//! lb-key = "8f95f09245765f80256934e50c66207f"   # optional: AES-128, else plaintext
//!
//! # optional: more configurations, e.g. the previous one during a key rotation
//! [[quic-lb]]
//! config-id = 0
//! server-id-len = 2
//! nonce-len = 6
//!
//! [[backend]]
//! server-id = "0a0b"          # server_id is accepted too
//! address = "10.0.0.11:4443"
//! weight = 1                  # optional; 0 drains it
//! ```

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use voq_quic_lb::{Config, ServerId};

use crate::balancer::{BalancerConfig, HealthConfig};
use crate::table::Backend;

/// Default VIP.
/// Nonce length when none is given: the same default as `voq serve --lb-nonce-len`.
pub const DEFAULT_NONCE_LEN: usize = 8;

pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 4433);

/// Settings of `voq lb` (flags, or keys of the `--config` TOML file with the same names).
#[derive(Debug, Clone, Default, clap::Args, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct LbConfig {
    /// TOML file with any of these settings; flags given on the command line win. Backends
    /// and QUIC-LB configurations are reloaded when it changes (checked every second) or on
    /// SIGHUP.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// UDP address of the VIP: clients connect here, backends reply here [default: 127.0.0.1:4433].
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,
    /// Worker sockets on the VIP (SO_REUSEPORT) [default: one per core].
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// Serve Prometheus metrics (per backend, fallbacks, drops by reason) at http://ADDR/metrics.
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<SocketAddr>,
    /// A backend: its server id in hex, the address of its tunnel socket, optionally a weight
    /// (repeatable; replaces a backend of the file with the same server id).
    #[arg(long = "backend", value_name = "HEX=ADDR[@WEIGHT]")]
    #[serde(rename = "backend")]
    pub backends: Vec<BackendSpec>,
    // The QUIC-LB settings carry the `lb-` names `voq serve` uses for the same settings (one
    // vocabulary: crates/voq/src/main.rs checks it); the bare names of earlier releases stay
    // accepted as aliases.
    /// QUIC-LB config id, 0..=6 [default: 0].
    #[arg(long = "lb-config-id", alias = "config-id", value_name = "N")]
    #[serde(rename = "lb-config-id", alias = "config-id")]
    pub config_id: Option<u8>,
    /// QUIC-LB server id length in octets [default: the length of the backends' ids].
    #[arg(
        long = "lb-server-id-len",
        alias = "server-id-len",
        value_name = "OCTETS"
    )]
    #[serde(rename = "lb-server-id-len", alias = "server-id-len")]
    pub server_id_len: Option<usize>,
    /// QUIC-LB nonce length in octets [default: 8].
    #[arg(long = "lb-nonce-len", alias = "nonce-len", value_name = "OCTETS")]
    #[serde(rename = "lb-nonce-len", alias = "nonce-len")]
    pub nonce_len: Option<usize>,
    /// QUIC-LB AES-128 key (32 hex digits), shared with the servers; without it CIDs are
    /// plaintext (the server id is visible on the wire). Prefer the environment variable to
    /// keep the key off the command line.
    #[arg(
        long = "lb-key",
        alias = "key",
        value_name = "HEX",
        env = "VOQ_LB_KEY",
        hide_env_values = true
    )]
    #[serde(rename = "lb-key", alias = "key")]
    pub key: Option<HexKey>,
    /// QUIC-LB CID length, first octet included (adds server-use octets)
    /// [default: 1 + server id + nonce].
    #[arg(long = "lb-cid-len", alias = "cid-len", value_name = "OCTETS")]
    #[serde(rename = "lb-cid-len", alias = "cid-len")]
    pub cid_len: Option<usize>,
    /// Whether QUIC-LB CIDs self-encode their length in the first octet [default: true].
    #[arg(
        long = "lb-self-encoded-len",
        alias = "self-encoded-len",
        value_name = "BOOL"
    )]
    #[serde(rename = "lb-self-encoded-len", alias = "self-encoded-len")]
    pub self_encoded_len: Option<bool>,
    /// More QUIC-LB configurations, e.g. the previous one during a rotation (file only:
    /// `[[quic-lb]]` tables). The one given by flags/top-level keys wins on the same config id.
    #[arg(skip)]
    pub quic_lb: Vec<QuicLbSpec>,
    /// Health probe interval in ms; 0 turns probing off (all backends up) [default: 500].
    #[arg(long, value_name = "MS")]
    pub health_interval_ms: Option<u64>,
    /// Unanswered probe rounds before a backend takes no new flows [default: 3].
    #[arg(long, value_name = "N")]
    pub health_down_after: Option<u32>,
    /// Answered probe rounds before a down backend takes new flows again [default: 2].
    #[arg(long, value_name = "N")]
    pub health_up_after: Option<u32>,
}

/// One backend as written in the file (`[[backend]]`) or on the command line
/// (`HEX=ADDR[@WEIGHT]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct BackendSpec {
    /// Server id, hex (an optional `0x` prefix is accepted).
    #[serde(alias = "server_id")]
    pub server_id: String,
    /// Address of the backend's tunnel socket: `IP:PORT`, or `NAME:PORT` resolved at every
    /// (re)load — e.g. a Kubernetes StatefulSet pod's stable DNS name.
    pub address: String,
    /// Weight for new flows [default: 1]; 0 drains the backend.
    #[serde(default)]
    pub weight: Option<u32>,
}

impl FromStr for BackendSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (sid, rest) = s
            .split_once('=')
            .ok_or_else(|| format!("backend {s:?}: expected HEX=ADDR[@WEIGHT]"))?;
        let (addr, weight) = match rest.rsplit_once('@') {
            Some((a, w)) => (
                a,
                Some(
                    w.parse::<u32>()
                        .map_err(|_| format!("backend {s:?}: weight {w:?} is not a number"))?,
                ),
            ),
            None => (rest, None),
        };
        let spec = Self {
            server_id: sid.to_string(),
            address: addr.to_string(),
            weight,
        };
        spec.server_id().map_err(|e| e.to_string())?;
        spec.check_address().map_err(|e| e.to_string())?;
        Ok(spec)
    }
}

impl BackendSpec {
    /// The server id octets.
    pub fn server_id(&self) -> Result<ServerId, LbConfigError> {
        let invalid = |reason: String| LbConfigError::ServerId {
            value: self.server_id.clone(),
            reason,
        };
        let bytes =
            voq_quic_lb::hex::decode(&self.server_id).map_err(|e| invalid(e.to_string()))?;
        ServerId::from_slice(&bytes).ok_or_else(|| invalid("longer than 15 octets".into()))
    }

    /// Whether the address is a literal `IP:PORT` (no name to resolve).
    pub fn is_literal(&self) -> bool {
        self.address.parse::<SocketAddr>().is_ok()
    }

    /// Checks the form `HOST:PORT` without resolving it.
    fn check_address(&self) -> Result<(), LbConfigError> {
        let invalid = |reason: &str| LbConfigError::Address {
            value: self.address.clone(),
            reason: reason.to_string(),
        };
        match self.address.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
            _ => Err(invalid("expected IP:PORT or NAME:PORT")),
        }
    }

    /// The backend, its address resolved now (the first address a name resolves to).
    pub fn backend(&self) -> Result<Backend, LbConfigError> {
        use std::net::ToSocketAddrs;
        self.check_address()?;
        let addr = match self.address.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => self
                .address
                .to_socket_addrs()
                .map_err(|e| LbConfigError::Address {
                    value: self.address.clone(),
                    reason: format!("cannot resolve: {e}"),
                })?
                .next()
                .ok_or_else(|| LbConfigError::Address {
                    value: self.address.clone(),
                    reason: "resolves to no address".into(),
                })?,
        };
        Ok(Backend::new(self.server_id()?, addr).with_weight(self.weight.unwrap_or(1)))
    }
}

/// An AES-128 key as hex digits. Its `Debug` output is redacted, so keys stay out of logs.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct HexKey(pub String);

impl fmt::Debug for HexKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HexKey(<redacted>)")
    }
}

impl FromStr for HexKey {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_string()))
    }
}

/// One QUIC-LB configuration of the file's `[[quic-lb]]` list.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct QuicLbSpec {
    /// Config id, 0..=6.
    pub config_id: u8,
    /// Server id length in octets.
    pub server_id_len: usize,
    /// Nonce length in octets.
    pub nonce_len: usize,
    /// AES-128 key, 32 hex digits; none = plaintext.
    #[serde(default)]
    pub key: Option<HexKey>,
    /// Total CID length.
    #[serde(default)]
    pub cid_len: Option<usize>,
    /// Length self-encoding [default: true].
    #[serde(default)]
    pub self_encoded_len: Option<bool>,
}

impl QuicLbSpec {
    /// The configuration, validated.
    pub fn build(&self) -> Result<Config, LbConfigError> {
        let id = self.config_id;
        let wrap = |source| LbConfigError::QuicLb {
            config_id: id,
            source,
        };
        let mut config = Config::new(id, self.server_id_len, self.nonce_len).map_err(wrap)?;
        if let Some(key) = &self.key {
            config = config.with_key(parse_key(id, key)?);
        }
        if let Some(len) = self.cid_len {
            config = config.with_cid_len(len).map_err(wrap)?;
        }
        if let Some(on) = self.self_encoded_len {
            config = config.with_self_encoded_len(on);
        }
        Ok(config)
    }
}

fn parse_key(config_id: u8, key: &HexKey) -> Result<[u8; 16], LbConfigError> {
    voq_quic_lb::hex::decode_array(&key.0)
        .map_err(|source| LbConfigError::Key { config_id, source })
}

/// An invalid `voq lb` configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LbConfigError {
    /// The file cannot be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The file is not valid TOML for these settings.
    #[error("invalid config file {}: {source}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the key.
        source: Box<toml::de::Error>,
    },
    /// A backend's address.
    #[error("backend address {value:?}: {reason}")]
    Address {
        /// As written.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// A backend's server id.
    #[error("backend server-id {value:?}: {reason}")]
    ServerId {
        /// As written.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// A QUIC-LB key that is not 16 octets of hex. The key itself is not repeated.
    #[error("key of QUIC-LB config id {config_id} (AES-128, 32 hex digits): {source}")]
    Key {
        /// The config id the key belongs to.
        config_id: u8,
        /// What is wrong.
        source: voq_quic_lb::hex::HexError,
    },
    /// An invalid QUIC-LB configuration.
    #[error("QUIC-LB config id {config_id}: {source}")]
    QuicLb {
        /// The config id.
        config_id: u8,
        /// What is wrong, naming the field.
        source: voq_quic_lb::ConfigError,
    },
    /// A field the top-level QUIC-LB configuration needs.
    #[error("{field} is required for the QUIC-LB configuration (a flag or a top-level key)")]
    Missing {
        /// The missing field.
        field: &'static str,
    },
    /// No QUIC-LB configuration at all.
    #[error(
        "no QUIC-LB configuration: give backends (their server id length is used with voq serve's defaults), --lb-server-id-len and --lb-nonce-len, or [[quic-lb]] tables in the file"
    )]
    NoQuicLb,
    /// A health setting out of range.
    #[error("{field} must be at least 1")]
    Health {
        /// The field.
        field: &'static str,
    },
}

impl LbConfig {
    /// Reads a TOML file of settings.
    pub fn from_file(path: &Path) -> Result<Self, LbConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| LbConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| LbConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })
    }

    /// `self` (the command line) over `file`: flags win field by field; command-line backends
    /// replace the file's backend with the same server id and add the others.
    pub fn over(self, file: LbConfig) -> Self {
        let mut backends = file.backends;
        for cli in self.backends {
            // The same server id however it is spelled (0x, case); ids that do not parse never
            // match (they are reported when the settings are resolved).
            let key = voq_quic_lb::hex::decode(&cli.server_id).ok();
            match backends
                .iter_mut()
                .find(|b| key.is_some() && voq_quic_lb::hex::decode(&b.server_id).ok() == key)
            {
                Some(b) => *b = cli,
                None => backends.push(cli),
            }
        }
        Self {
            config: self.config,
            listen: self.listen.or(file.listen),
            workers: self.workers.or(file.workers),
            metrics: self.metrics.or(file.metrics),
            backends,
            config_id: self.config_id.or(file.config_id),
            server_id_len: self.server_id_len.or(file.server_id_len),
            nonce_len: self.nonce_len.or(file.nonce_len),
            key: self.key.or(file.key),
            cid_len: self.cid_len.or(file.cid_len),
            self_encoded_len: self.self_encoded_len.or(file.self_encoded_len),
            quic_lb: file.quic_lb,
            health_interval_ms: self.health_interval_ms.or(file.health_interval_ms),
            health_down_after: self.health_down_after.or(file.health_down_after),
            health_up_after: self.health_up_after.or(file.health_up_after),
        }
    }

    /// Loads `--config` if given, applies it under the flags, then the defaults.
    pub fn resolve(&self) -> Result<BalancerConfig, LbConfigError> {
        let merged = match &self.config {
            Some(path) => self.clone().over(Self::from_file(path)?),
            None => self.clone(),
        };
        merged.settings()
    }

    /// The server id length all backends share (when it is not given).
    fn inferred_server_id_len(&self) -> Result<usize, LbConfigError> {
        let mut lens = self
            .backends
            .iter()
            .map(|b| b.server_id().map(|id| id.as_bytes().len()));
        let first = match lens.next() {
            Some(l) => l?,
            None => {
                return Err(LbConfigError::Missing {
                    field: "lb-server-id-len",
                });
            }
        };
        for l in lens {
            if l? != first {
                return Err(LbConfigError::Missing {
                    field: "lb-server-id-len (the backends' server ids differ in length)",
                });
            }
        }
        Ok(first)
    }

    /// The balancer configuration these (already merged) settings describe.
    fn settings(&self) -> Result<BalancerConfig, LbConfigError> {
        let mut specs = self.quic_lb.clone();
        let top_level = self.config_id.is_some()
            || self.server_id_len.is_some()
            || self.nonce_len.is_some()
            || self.key.is_some()
            || self.cid_len.is_some()
            || self.self_encoded_len.is_some();
        // With no QUIC-LB settings at all, the defaults of `voq serve` apply (config 0,
        // 8-octet nonce, no key) and the server id length is that of the backends' ids.
        if top_level || (specs.is_empty() && !self.backends.is_empty()) {
            let server_id_len = match self.server_id_len {
                Some(l) => l,
                None => self.inferred_server_id_len()?,
            };
            let primary = QuicLbSpec {
                config_id: self.config_id.unwrap_or(0),
                server_id_len,
                nonce_len: self.nonce_len.unwrap_or(DEFAULT_NONCE_LEN),
                key: self.key.clone(),
                cid_len: self.cid_len,
                self_encoded_len: self.self_encoded_len,
            };
            specs.retain(|s| s.config_id != primary.config_id);
            specs.insert(0, primary);
        }
        if specs.is_empty() {
            return Err(LbConfigError::NoQuicLb);
        }
        let configs = specs
            .iter()
            .map(QuicLbSpec::build)
            .collect::<Result<Vec<_>, _>>()?;
        let backends = self
            .backends
            .iter()
            .map(BackendSpec::backend)
            .collect::<Result<Vec<_>, _>>()?;
        let d = HealthConfig::default();
        let interval = self
            .health_interval_ms
            .map_or(d.interval, Duration::from_millis);
        let down_after = self.health_down_after.unwrap_or(d.down_after);
        let up_after = self.health_up_after.unwrap_or(d.up_after);
        if down_after == 0 {
            return Err(LbConfigError::Health {
                field: "health-down-after",
            });
        }
        if up_after == 0 {
            return Err(LbConfigError::Health {
                field: "health-up-after",
            });
        }
        Ok(BalancerConfig {
            listen: self.listen.unwrap_or(DEFAULT_LISTEN),
            workers: self.workers.unwrap_or(0),
            configs,
            backends,
            health: HealthConfig {
                enabled: !interval.is_zero(),
                interval,
                down_after,
                up_after,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const FILE: &str = r#"
listen = "127.0.0.1:9000"
config-id = 1
server-id-len = 2
nonce-len = 6
key = "8f95f09245765f80256934e50c66207f"
health-interval-ms = 250

[[quic-lb]]
config-id = 0
server-id-len = 2
nonce-len = 6

[[quic-lb]]
config-id = 1
server-id-len = 3
nonce-len = 6

[[backend]]
server_id = "0a0b"
address = "127.0.0.1:5001"
weight = 1

[[backend]]
server-id = "0x0C0D"
address = "127.0.0.1:5002"
"#;

    #[test]
    fn the_lb_names_of_voq_serve_and_the_bare_names_read_alike() {
        let new_names = FILE
            .replacen("config-id = 1", "lb-config-id = 1", 1)
            .replacen("server-id-len = 2", "lb-server-id-len = 2", 1)
            .replacen("nonce-len = 6", "lb-nonce-len = 6", 1)
            .replacen("key = ", "lb-key = ", 1);
        assert!(new_names.contains("lb-key = ") && new_names.contains("\nconfig-id = 0"));
        let old: LbConfig = toml::from_str(FILE).unwrap();
        let new: LbConfig = toml::from_str(&new_names).unwrap();
        assert_eq!(
            format!("{:?}", old.clone().settings().unwrap().configs),
            format!("{:?}", new.settings().unwrap().configs)
        );
        let flags = |args: &[&str]| {
            use clap::Parser;
            #[derive(clap::Parser)]
            struct Cli {
                #[command(flatten)]
                lb: LbConfig,
            }
            Cli::parse_from(std::iter::once("lb").chain(args.iter().copied())).lb
        };
        let a = flags(&[
            "--lb-config-id",
            "2",
            "--lb-nonce-len",
            "5",
            "--lb-cid-len",
            "12",
        ]);
        let b = flags(&["--config-id", "2", "--nonce-len", "5", "--cid-len", "12"]);
        assert_eq!(
            (a.config_id, a.nonce_len, a.cid_len),
            (Some(2), Some(5), Some(12))
        );
        assert_eq!(
            (a.config_id, a.nonce_len, a.cid_len),
            (b.config_id, b.nonce_len, b.cid_len)
        );
    }

    #[test]
    fn reads_the_file_and_applies_defaults() {
        let file: LbConfig = toml::from_str(FILE).unwrap();
        let s = LbConfig::default().over(file).settings().unwrap();
        assert_eq!(s.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(s.workers, 0);
        // The top-level config (id 1, 2-octet server id) wins over the [[quic-lb]] with id 1.
        let ids: Vec<(u8, usize, bool)> = s
            .configs
            .iter()
            .map(|c| (c.id(), c.sid_len(), c.has_key()))
            .collect();
        assert_eq!(ids, [(1, 2, true), (0, 2, false)]);
        assert_eq!(s.backends.len(), 2);
        assert_eq!(s.backends[1].server_id.as_bytes(), &[0x0c, 0x0d]);
        assert_eq!(s.backends[1].weight, 1);
        assert_eq!(s.health.interval, Duration::from_millis(250));
        assert!(s.health.enabled);
        assert_eq!((s.health.down_after, s.health.up_after), (3, 2));
    }

    #[test]
    fn flags_override_the_file_without_clobbering_it() {
        let file: LbConfig = toml::from_str(FILE).unwrap();
        let cli = LbConfig {
            nonce_len: Some(8),
            backends: vec![
                "0c0d=127.0.0.1:6002@3".parse().unwrap(),
                "0e0f=127.0.0.1:6003".parse().unwrap(),
            ],
            health_interval_ms: Some(0),
            ..Default::default()
        };
        let s = cli.over(file).settings().unwrap();
        assert_eq!(s.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(s.configs[0].nonce_len(), 8);
        assert_eq!(s.configs[0].sid_len(), 2);
        let b: Vec<(String, SocketAddr, u32)> = s
            .backends
            .iter()
            .map(|b| (b.server_id.to_string(), b.addr, b.weight))
            .collect();
        assert_eq!(
            b,
            [
                ("0a0b".into(), "127.0.0.1:5001".parse().unwrap(), 1),
                ("0c0d".into(), "127.0.0.1:6002".parse().unwrap(), 3),
                ("0e0f".into(), "127.0.0.1:6003".parse().unwrap(), 1),
            ]
        );
        assert!(!s.health.enabled);
    }

    #[test]
    fn errors_name_the_field() {
        let err = |toml_text: &str| {
            let file: Result<LbConfig, _> = toml::from_str(toml_text);
            match file {
                Err(e) => e.to_string(),
                Ok(f) => LbConfig::default()
                    .over(f)
                    .settings()
                    .err()
                    .map(|e| e.to_string())
                    .unwrap_or_default(),
            }
        };
        assert!(err("lissen = \"x\"").contains("lissen"));
        let e = err(
            "server-id-len = 1\nnonce-len = 6\n[[backend]]\nserver-id = \"0a\"\naddress = \"nope\"",
        );
        assert!(e.contains("address"), "{e}");
        let e = err(
            "[[backend]]\nserver-id = \"0a\"\naddress = \"127.0.0.1:1\"\n[[backend]]\nserver-id = \"0a0b\"\naddress = \"127.0.0.1:2\"",
        );
        assert!(e.contains("server ids differ in length"), "{e}");
        assert!(err("").contains("no QUIC-LB configuration"));
        assert!(err("server-id-len = 2\nnonce-len = 3").contains("nonce length 3"));
        let e = err("server-id-len = 2\nnonce-len = 6\nkey = \"abcd\"");
        assert!(
            e.contains("key of QUIC-LB config id 0") && !e.contains("abcd"),
            "{e}"
        );
        let e = err(
            "server-id-len = 2\nnonce-len = 6\n[[backend]]\nserver-id = \"xyz\"\naddress = \"127.0.0.1:1\"",
        );
        assert!(e.contains("server-id \"xyz\""), "{e}");
        assert!(
            err("server-id-len = 2\nnonce-len = 6\nhealth-up-after = 0")
                .contains("health-up-after")
        );
    }

    #[test]
    fn backend_flags_parse() {
        let b: BackendSpec = "0x0A0b=[::1]:5001@7".parse().unwrap();
        assert_eq!(b.address, "[::1]:5001");
        assert!(b.is_literal());
        let named: BackendSpec = "0a0b=localhost:5001".parse().unwrap();
        assert!(!named.is_literal());
        assert!(
            named.backend().unwrap().addr.ip().is_loopback(),
            "a name resolves at load"
        );
        assert_eq!(b.weight, Some(7));
        assert_eq!(b.server_id().unwrap().as_bytes(), &[0x0a, 0x0b]);
        assert!("0a0b".parse::<BackendSpec>().is_err());
        assert!("0a0b=127.0.0.1".parse::<BackendSpec>().is_err());
        assert!("zz=127.0.0.1:1".parse::<BackendSpec>().is_err());
        assert!("0a=127.0.0.1:1@x".parse::<BackendSpec>().is_err());
    }

    #[test]
    fn keys_stay_out_of_debug_output() {
        let file: LbConfig = toml::from_str(
            "[[quic-lb]]\nconfig-id = 2\nserver-id-len = 2\nnonce-len = 6\nkey = \"8f95f09245765f80256934e50c66207f\"",
        )
        .unwrap();
        assert!(!format!("{file:?}").contains("8f95"));
        let cli = LbConfig {
            key: Some("8f95f09245765f80256934e50c66207f".parse().unwrap()),
            ..Default::default()
        };
        assert!(!format!("{cli:?}").contains("8f95"));
    }
}
