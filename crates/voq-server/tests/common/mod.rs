//! Helpers shared by the server's attack tests.
#![allow(dead_code)] // each test file uses some of them

use std::sync::{Arc, Mutex};
use std::time::Duration;

use voq_client::{CallOptions, Client, Target, Trust};
use voq_server::Server;

/// How to reach `server` over TLS as `localhost`.
pub fn target(server: &Server) -> Target {
    Target {
        addr: server.local_addr(),
        server_name: "localhost".into(),
        tls: true,
    }
}

/// One call to `server` from a fresh client (its own socket), trusting the server's
/// certificate by its hash; `opts` as given, with a 20 s timeout unless it sets one.
pub async fn call(server: &Server, opts: CallOptions) -> anyhow::Result<voq_client::CallOutcome> {
    let trust = Trust::cert_hash(&server.cert_sha256())?;
    let client = Client::new(&trust, "127.0.0.1:0".parse()?)?;
    let opts = CallOptions {
        timeout: if opts.timeout == CallOptions::default().timeout {
            Duration::from_secs(20)
        } else {
            opts.timeout
        },
        ..opts
    };
    client.call(&target(server), opts).await
}

/// A sans-IO QUIC client endpoint and its configuration (ALPN voq/1, the simulator's TLS): real
/// first flights without sockets.
pub fn sans_io_client() -> (quinn_proto::Endpoint, quinn_proto::ClientConfig) {
    let (_, client) = voq_sim::tls::quic_configs();
    let endpoint = quinn_proto::Endpoint::new(
        Arc::new(quinn_proto::EndpointConfig::default()),
        None,
        true,
        None,
    );
    (endpoint, client)
}

/// A UDP socket that answers nothing and keeps a copy of every datagram sent to it: where a
/// client's first flight goes to be withheld (an on-path attacker's tap).
pub async fn tap() -> (std::net::SocketAddr, Arc<Mutex<Vec<Vec<u8>>>>) {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("cannot bind the tap: {e}"));
    let addr = socket
        .local_addr()
        .unwrap_or_else(|e| panic!("the tap has no address: {e}"));
    let captured = Arc::new(Mutex::new(Vec::new()));
    let keep = captured.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, _)) = socket.recv_from(&mut buf).await {
            if let Ok(mut c) = keep.lock() {
                c.push(buf[..n].to_vec());
            }
        }
    });
    (addr, captured)
}
