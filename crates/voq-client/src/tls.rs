//! How the client trusts the server: a CA certificate file, a pinned certificate hash (what dev
//! servers print, like a browser's `serverCertificateHashes`), or nothing (`--insecure`, tests).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// Trust anchor for the server's certificate.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Verify against this PEM CA (or self-signed) certificate file.
    CaFile(PathBuf),
    /// Accept exactly the certificate with this SHA-256.
    CertHash([u8; 32]),
    /// Accept any certificate. For tests and local experiments only.
    Insecure,
}

impl Trust {
    /// Parses a 64-digit hex SHA-256 (colons allowed, as browsers print them).
    pub fn cert_hash(hex: &str) -> anyhow::Result<Self> {
        let digits: String = hex.chars().filter(|c| *c != ':').collect();
        anyhow::ensure!(
            digits.len() == 64,
            "--cert-hash needs 64 hex digits (SHA-256), got {}",
            digits.len()
        );
        let mut out = [0u8; 32];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&digits[2 * i..2 * i + 2], 16)
                .with_context(|| format!("--cert-hash: not hex: {hex}"))?;
        }
        Ok(Self::CertHash(out))
    }
}

/// rustls client configuration for QUIC with `alpn`; session tickets in memory.
pub fn client_config(trust: &Trust, alpn: &[u8]) -> anyhow::Result<rustls::ClientConfig> {
    client_config_with(trust, alpn, None)
}

/// [`client_config`], keeping session tickets in `ticket_file` (see [`crate::resume`]) so that
/// another process resumes with 0-RTT.
pub fn client_config_with(
    trust: &Trust,
    alpn: &[u8],
    ticket_file: Option<&std::path::Path>,
) -> anyhow::Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = verifier_of(trust)?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    // 0-RTT on resumption: the client may send its prompt with the first flight.
    config.enable_early_data = true;
    if let Some(path) = ticket_file {
        let store = crate::resume::FileSessionStore::new(
            path.to_path_buf(),
            alpn,
            &trust_scope(trust)?,
            provider,
            verifier,
            config.client_auth_cert_resolver.clone(),
        );
        config.resumption = rustls::client::Resumption::store(Arc::new(store));
    }
    Ok(config)
}

/// The certificate verifier of a trust policy.
pub fn verifier_of(trust: &Trust) -> anyhow::Result<Arc<dyn ServerCertVerifier>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(match trust {
        Trust::CaFile(path) => {
            use rustls::pki_types::pem::PemObject;
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(path)
                .with_context(|| format!("cannot read CA file {}", path.display()))?
            {
                roots.add(cert.with_context(|| format!("malformed PEM in {}", path.display()))?)?;
            }
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .with_context(|| format!("unusable CA file {}", path.display()))?
        }
        Trust::CertHash(hash) => Arc::new(Pinned {
            hash: Some(*hash),
            provider,
        }),
        Trust::Insecure => Arc::new(Pinned {
            hash: None,
            provider,
        }),
    })
}

/// A stable description of a trust policy, so a ticket is offered only under the policy it was
/// obtained under: the pinned hash, the CA file's contents (by hash), or "insecure".
fn trust_scope(trust: &Trust) -> anyhow::Result<String> {
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    Ok(match trust {
        Trust::CertHash(hash) => format!("sha256:{}", hex(hash)),
        Trust::CaFile(path) => {
            let pem = std::fs::read(path)
                .with_context(|| format!("cannot read CA file {}", path.display()))?;
            format!(
                "ca:{}",
                hex(ring::digest::digest(&ring::digest::SHA256, &pem).as_ref())
            )
        }
        Trust::Insecure => "insecure".into(),
    })
}

/// Accepts the certificate whose SHA-256 is `hash` (any certificate when `None`), and still
/// checks the handshake signature so the peer proves it holds the key.
#[derive(Debug)]
struct Pinned {
    hash: Option<[u8; 32]>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.hash {
            None => Ok(ServerCertVerified::assertion()),
            Some(want) => {
                let got = ring::digest::digest(&ring::digest::SHA256, end_entity);
                if got.as_ref() == want {
                    Ok(ServerCertVerified::assertion())
                } else {
                    Err(rustls::Error::General(
                        "server certificate does not match --cert-hash".into(),
                    ))
                }
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cert_hash_parses_with_or_without_colons() -> anyhow::Result<()> {
        let hex = "ab".repeat(32);
        assert!(matches!(Trust::cert_hash(&hex)?, Trust::CertHash(h) if h == [0xab; 32]));
        let colons: Vec<String> = (0..32).map(|_| "AB".to_string()).collect();
        assert!(
            matches!(Trust::cert_hash(&colons.join(":"))?, Trust::CertHash(h) if h == [0xab; 32])
        );
        assert!(Trust::cert_hash("abc").is_err());
        assert!(Trust::cert_hash(&"zz".repeat(32)).is_err());
        Ok(())
    }
}
