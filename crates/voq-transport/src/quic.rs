//! What both ends of a voq connection must agree on, defined once: ALPN names and the QUIC
//! transport settings.

use std::sync::Arc;
use std::time::Duration;

/// ALPN of raw-QUIC voq sessions (the voq/1 protocol of docs/PROTOCOL.md).
pub const ALPN_VOQ: &[u8] = b"voq/1";
/// ALPN of HTTP/3, which carries WebTransport.
pub const ALPN_H3: &[u8] = b"h3";
/// ALPN of HTTPS and WSS on the TCP port.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// How often an idle connection sends a PING, well inside [`IDLE_TIMEOUT`] and short enough to
/// keep NAT bindings of a quiet call alive.
pub const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// How long a connection may stay silent before it is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Unidirectional streams a peer may have open at once: a user turn or agent response each,
/// with room for turns that overlap their successors (barge-in) and for HTTP/3's own streams.
pub const MAX_UNI_STREAMS: u32 = 16;
/// Bidirectional streams a peer may open: the control stream, plus the CONNECT request stream
/// of a WebTransport session. Nothing in voq/1 opens more.
pub const MAX_BIDI_STREAMS: u32 = 2;

/// The QUIC transport settings of every voq connection, client and server.
pub fn transport_config() -> Arc<quinn::TransportConfig> {
    transport_config_with(true)
}

/// [`transport_config`], choosing whether a client moves to a server's preferred address
/// (`false` behaves like a browser, which stays on the address it dialled).
pub fn transport_config_with(use_preferred_address: bool) -> Arc<quinn::TransportConfig> {
    let mut transport = quinn::TransportConfig::default();
    transport.max_concurrent_uni_streams(MAX_UNI_STREAMS.into());
    transport.max_concurrent_bidi_streams(MAX_BIDI_STREAMS.into());
    transport.keep_alive_interval(Some(KEEP_ALIVE));
    // 30 s fits quinn's VarInt bound (2^62 ms) by a wide margin.
    transport.max_idle_timeout(quinn::IdleTimeout::try_from(IDLE_TIMEOUT).ok());
    // Clients move to a fleet server's unicast address (its preferred_address, RFC 9000 §9.6)
    // once the handshake on the anycast address is confirmed; servers ignore this. Our
    // quinn-proto patch (third_party/quinn-proto/VOQ-PATCH.md).
    transport.migrate_to_preferred_address(use_preferred_address);
    crate::recovery::apply(&mut transport);
    Arc::new(transport)
}

/// Sleeps until `at`, or forever when there is nothing to wait for: the timer of a sans-IO
/// core's `poll_timeout()` in a `select!` loop.
pub async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
