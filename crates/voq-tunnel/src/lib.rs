//! The tunnel between `voq lb` and the voq servers behind it, shared by both ends so that the
//! server does not link the balancer and the balancer does not link the voice stack.
//!
//! Every datagram between the balancer and a server carries a PROXY protocol v2 header
//! ([`proxy_v2`], sans-IO): towards the server, source = the client and destination = the VIP;
//! back, the reverse. The server's side is [`TunnelSocket`], a quinn socket that strips and adds
//! those headers so quinn sees clients' real addresses, and [`endpoint`], a quinn endpoint on it.
//!
//! # A server behind the balancer
//!
//! ```no_run
//! # async fn f(server_config: quinn::ServerConfig, mut endpoint_config: quinn::EndpointConfig) -> std::io::Result<()> {
//! use std::sync::Arc;
//! use voq_tunnel::TunnelSocket;
//!
//! // Bound to the backend address the balancer knows; replies go to the VIP.
//! let socket = TunnelSocket::bind("10.0.0.11:4443".parse().unwrap(), "203.0.113.10:443".parse().unwrap())?;
//! // endpoint_config.cid_generator(...) with voq_quic_lb::CidGenerator for this server id.
//! let endpoint = voq_tunnel::endpoint(endpoint_config, Some(server_config), Arc::new(socket))?;
//! # let _ = endpoint; Ok(()) }
//! ```
#![warn(missing_docs)]

mod anycast;
pub mod proxy_v2;
mod socket;

use std::io::IoSliceMut;
use std::net::SocketAddr;

pub use anycast::{AnycastDecision, AnycastSocket, AnycastStats, FleetRoutes, anycast_endpoint};
pub use socket::{TunnelSocket, TunnelStats, endpoint, for_socket};

/// IPv4-mapped IPv6 addresses as IPv4, so one client or backend has one key whichever socket
/// family it arrived on.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// `buf` cut into `N` receive slots of `slot_len` octets, for one batched receive (recvmmsg).
pub fn recv_slots<const N: usize>(buf: &mut [u8], slot_len: usize) -> [IoSliceMut<'_>; N] {
    let mut rest = buf;
    std::array::from_fn(|_| {
        let all = std::mem::take(&mut rest);
        let (slot, tail) = all.split_at_mut(slot_len.min(all.len()));
        rest = tail;
        IoSliceMut::new(slot)
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn slots_cover_the_buffer() {
        let mut buf = vec![0u8; 4 * 100];
        let s = recv_slots::<4>(&mut buf, 100);
        assert!(s.iter().all(|s| s.len() == 100));
    }

    #[test]
    fn mapped_addresses_are_canonical() {
        let mapped: SocketAddr = "[::ffff:10.0.0.1]:5".parse().unwrap();
        assert_eq!(canonical(mapped).to_string(), "10.0.0.1:5");
    }
}
