//! TLS for the simulated QUIC connections: one self-signed Ed25519 certificate with a fixed
//! serial, so every handshake has the same sizes run after run (Ed25519 signatures are
//! deterministic and 64 bytes long), and ALPN `voq/1`.

use std::sync::Arc;

use quinn_proto::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// ALPN of voq/1 over raw QUIC (as `voq_transport::quic::ALPN_VOQ`; this crate stays off the
/// async stack).
pub const ALPN: &[u8] = b"voq/1";

/// Server and client QUIC configurations that trust each other.
///
/// # Panics
///
/// When the crypto provider refuses a fixed, known-good configuration: a broken build.
pub fn quic_configs() -> (quinn_proto::ServerConfig, quinn_proto::ClientConfig) {
    let built = build();
    #[allow(clippy::expect_used)]
    built.expect("a fixed TLS configuration builds")
}

fn build()
-> Result<(quinn_proto::ServerConfig, quinn_proto::ClientConfig), Box<dyn std::error::Error>> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()])?;
    params.serial_number = Some(rcgen::SerialNumber::from(1u64));
    let cert = params.self_signed(&key)?;
    let cert_der: CertificateDer<'static> = cert.der().clone();
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());

    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![cert_der.clone()], key_der)?;
    server.alpn_protocols = vec![ALPN.to_vec()];

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert_der)?;
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![ALPN.to_vec()];

    let mut server =
        quinn_proto::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(server)?));
    // Spelled out, not left to quinn-proto's defaults: those depend on its `bloom` feature,
    // which the workspace turns on elsewhere (through quinn), so the same run would send two
    // NEW_TOKEN frames in one build and none in another. Two, as the real server does.
    let mut tokens = quinn_proto::ValidationTokenConfig::default();
    tokens.sent(2).log(Arc::new(quinn_proto::NoneTokenLog));
    server.validation_token_config(tokens);
    // The transport settings the real server and client use (keep-alive, idle timeout, stream
    // limits, real-time recovery), so the simulator measures what ships.
    server.transport_config(voq_transport::quic::transport_config());
    let mut client = quinn_proto::ClientConfig::new(Arc::new(QuicClientConfig::try_from(client)?));
    client.transport_config(voq_transport::quic::transport_config());
    Ok((server, client))
}
