//! Certificates and rustls configuration.
//!
//! Dev mode generates a self-signed ECDSA P-256 certificate at start-up, valid for 13 days:
//! browsers accept such a certificate by its SHA-256 hash (`serverCertificateHashes` requires
//! ECDSA and at most 14 days of validity), and `voq call --cert-hash` pins the same hash.
//! Production takes PEM certificate and key files.
//!
//! A [`CertStore`] serves the current identity to every TLS handshake (QUIC, WebTransport and
//! the TCP port) and replaces a development certificate every [`DEV_CERT_ROTATION`], well before
//! it expires, so a server that runs for weeks keeps a certificate browsers accept. The page
//! reads the current hash from `/voq/config.json` before each connect.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// How often a development certificate is replaced: about half its validity, so clients that
/// fetched a hash shortly before a rotation still have days of overlap.
pub const DEV_CERT_ROTATION: Duration = Duration::from_secs(6 * 24 * 3600);
/// How often the certificate's age is checked.
pub const ROTATION_CHECK: Duration = Duration::from_secs(3600);

/// How long a dev certificate is valid (browsers allow at most 14 days for hash pinning).
pub const DEV_CERT_VALIDITY: Duration = Duration::from_secs(13 * 24 * 3600);

/// A certificate chain and its key.
#[derive(Debug)]
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// SHA-256 of the end-entity certificate (what `serverCertificateHashes` pins).
    pub sha256: [u8; 32],
    /// Whether this is a generated development certificate.
    pub dev: bool,
}

impl Identity {
    /// A fresh self-signed ECDSA P-256 certificate for localhost and the loopback addresses.
    pub fn generate_dev(extra_names: &[String]) -> anyhow::Result<Self> {
        let mut names = vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ];
        names.extend(extra_names.iter().cloned());
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = rcgen::CertificateParams::new(names)?;
        let today = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
            / 86_400;
        // Dates have day precision: from yesterday (clock skew) to 12 days ahead, 13 days in all.
        let days = DEV_CERT_VALIDITY.as_secs() / 86_400;
        let (y, m, d) = civil_date(today.saturating_sub(1));
        params.not_before = rcgen::date_time_ymd(y, m, d);
        let (y, m, d) = civil_date(today - 1 + days);
        params.not_after = rcgen::date_time_ymd(y, m, d);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "voq dev certificate");
        let cert = params.self_signed(&key)?;
        let der = cert.der().clone();
        Ok(Self {
            sha256: sha256(&der),
            chain: vec![der],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            dev: true,
        })
    }

    /// Loads a PEM certificate chain and private key.
    pub fn load(cert: &Path, key: &Path) -> anyhow::Result<Self> {
        use rustls::pki_types::pem::PemObject;
        let chain = CertificateDer::pem_file_iter(cert)
            .with_context(|| format!("cannot read certificate file {}", cert.display()))?
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("malformed PEM in {}", cert.display()))?;
        anyhow::ensure!(!chain.is_empty(), "no certificate in {}", cert.display());
        let key = PrivateKeyDer::from_pem_file(key)
            .with_context(|| format!("cannot read a private key from {}", key.display()))?;
        Ok(Self {
            sha256: sha256(&chain[0]),
            chain,
            key,
            dev: false,
        })
    }

    pub fn sha256_hex(&self) -> String {
        hex(&self.sha256)
    }

    /// A copy (private keys are not `Clone`).
    pub fn clone_identity(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            sha256: self.sha256,
            dev: self.dev,
        }
    }

    /// The certificate as PEM (for `voq call --ca`).
    pub fn cert_pem(&self) -> String {
        let b64 =
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &self.chain[0]);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap_or(""))
            .collect();
        format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            lines.join("\n")
        )
    }
}

/// rustls server configuration for QUIC: TLS 1.3, the given ALPNs, 0-RTT enabled.
pub fn server_config(identity: &Identity, alpns: &[&[u8]]) -> anyhow::Result<rustls::ServerConfig> {
    let store = CertStore::new(identity.clone_identity())?;
    server_config_with(&store, alpns)
}

/// rustls server configuration whose certificate comes from `store` (so rotations apply to new
/// handshakes at once). 0-RTT is enabled, as QUIC needs; a TLS-over-TCP user must turn it off
/// unless it reads early data.
pub fn server_config_with(
    store: &Arc<CertStore>,
    alpns: &[&[u8]],
) -> anyhow::Result<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_cert_resolver(store.clone());
    config.alpn_protocols = alpns.iter().map(|a| a.to_vec()).collect();
    // quinn requires u32::MAX to accept 0-RTT data (RFC 9001 §4.6.1).
    config.max_early_data_size = u32::MAX;
    Ok(config)
}

/// The server's current certificate, shared by every TLS configuration of one server.
#[derive(Debug)]
pub struct CertStore {
    current: std::sync::RwLock<Current>,
}

#[derive(Debug, Clone)]
struct Current {
    key: Arc<rustls::sign::CertifiedKey>,
    sha256: [u8; 32],
    pem: String,
    dev: bool,
    /// When this identity was installed (wall clock: a suspended machine's monotonic clock
    /// stops, a certificate's validity does not).
    installed: SystemTime,
}

impl CertStore {
    pub fn new(identity: Identity) -> anyhow::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            current: std::sync::RwLock::new(Current::of(identity)?),
        }))
    }

    fn get(&self) -> Current {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Installs a new identity for every handshake from now on.
    pub fn replace(&self, identity: Identity) -> anyhow::Result<()> {
        let next = Current::of(identity)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = next;
        Ok(())
    }

    /// SHA-256 of the current end-entity certificate, lowercase hex.
    pub fn sha256_hex(&self) -> String {
        hex(&self.get().sha256)
    }

    pub fn cert_pem(&self) -> String {
        self.get().pem
    }

    /// Whether the current certificate is a generated development one.
    pub fn is_dev(&self) -> bool {
        self.get().dev
    }

    /// Replaces a development certificate installed `max_age` or more before `now` with a new
    /// one; returns whether it did. Production certificates are never replaced.
    pub fn rotate_if_due(&self, max_age: Duration, now: SystemTime) -> anyhow::Result<bool> {
        let current = self.get();
        let age = now.duration_since(current.installed).unwrap_or_default();
        if !current.dev || age < max_age {
            return Ok(false);
        }
        self.replace(Identity::generate_dev(&[])?)?;
        Ok(true)
    }

    /// Checks every [`ROTATION_CHECK`] (against the wall clock) and replaces a development
    /// certificate once it is `max_age` old, until the store is dropped. Files (production
    /// certificates) are left alone: their owner renews them.
    pub fn spawn_rotation(
        self: &Arc<Self>,
        max_age: Duration,
    ) -> Option<tokio::task::JoinHandle<()>> {
        if !self.is_dev() {
            return None;
        }
        let weak = Arc::downgrade(self);
        Some(tokio::spawn(async move {
            let check = ROTATION_CHECK.min(max_age);
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + check, check);
            loop {
                tick.tick().await;
                let Some(store) = weak.upgrade() else { return };
                match store.rotate_if_due(max_age, SystemTime::now()) {
                    Ok(true) => tracing::info!(
                        sha256 = %store.sha256_hex(),
                        "development certificate rotated (clients pinning the old hash must \
                         fetch the new one from /voq/config.json)"
                    ),
                    Ok(false) => {}
                    Err(e) => tracing::warn!("cannot rotate the development certificate: {e:#}"),
                }
            }
        }))
    }
}

impl Current {
    fn of(identity: Identity) -> anyhow::Result<Self> {
        let provider = rustls::crypto::ring::default_provider();
        let signing = provider
            .key_provider
            .load_private_key(identity.key.clone_key())
            .context("unsupported private key")?;
        let key = rustls::sign::CertifiedKey::new(identity.chain.clone(), signing);
        key.keys_match()
            .context("certificate and key do not match")?;
        Ok(Self {
            sha256: identity.sha256,
            pem: identity.cert_pem(),
            dev: identity.dev,
            key: Arc::new(key),
            installed: SystemTime::now(),
        })
    }
}

impl rustls::server::ResolvesServerCert for CertStore {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.get().key)
    }
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0; 32];
    out.copy_from_slice(d.as_ref());
    out
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The calendar date (year, month, day) `days` after 1970-01-01 (Hinnant's civil_from_days).
pub fn civil_date(days: u64) -> (i32, u8, u8) {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_certificate_is_p256_and_short_lived() -> anyhow::Result<()> {
        let id = Identity::generate_dev(&[])?;
        let (_, cert) = x509_parser_free_check(&id.chain[0]);
        assert!(cert, "ecdsa-with-SHA256 / P-256 OIDs present");
        assert_eq!(id.sha256_hex().len(), 64);
        assert!(id.cert_pem().starts_with("-----BEGIN CERTIFICATE-----\n"));
        server_config(&id, &[voq_transport::quic::ALPN_VOQ])?;
        Ok(())
    }

    #[test]
    fn rotation_changes_what_handshakes_get() -> anyhow::Result<()> {
        let store = CertStore::new(Identity::generate_dev(&[])?)?;
        let before = store.sha256_hex();
        assert!(store.is_dev());
        store.replace(Identity::generate_dev(&[])?)?;
        assert_ne!(store.sha256_hex(), before, "a new key pair, a new hash");
        assert!(store.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        let mismatched = Identity {
            key: Identity::generate_dev(&[])?.key,
            ..Identity::generate_dev(&[])?
        };
        assert!(
            store.replace(mismatched).is_err(),
            "certificate and key must match"
        );
        // Age is wall-clock time since installation.
        let hash = store.sha256_hex();
        let day = Duration::from_secs(86_400);
        assert!(!store.rotate_if_due(6 * day, SystemTime::now() + 5 * day)?);
        assert_eq!(store.sha256_hex(), hash);
        assert!(store.rotate_if_due(6 * day, SystemTime::now() + 6 * day)?);
        assert_ne!(store.sha256_hex(), hash);
        // Production certificates are never replaced.
        let mut production = Identity::generate_dev(&[])?;
        production.dev = false;
        let files = CertStore::new(production)?;
        assert!(!files.rotate_if_due(Duration::ZERO, SystemTime::now() + 30 * day)?);
        Ok(())
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_date(0), (1970, 1, 1));
        assert_eq!(civil_date(20_513), (2026, 3, 1));
        assert_eq!(civil_date(20_512), (2026, 2, 28));
        assert_eq!(civil_date(11_016), (2000, 2, 29));
    }

    /// Finds the P-256 curve OID (1.2.840.10045.3.1.7) and ecdsa-with-SHA256 OID
    /// (1.2.840.10045.4.3.2) in the DER, without an X.509 parser dependency.
    fn x509_parser_free_check(der: &[u8]) -> ((), bool) {
        let p256 = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
        let ecdsa_sha256 = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
        let has = |needle: &[u8]| der.windows(needle.len()).any(|w| w == needle);
        ((), has(&p256) && has(&ecdsa_sha256))
    }
}
