//! Helpers shared by the server's attack tests.

use std::sync::{Arc, Mutex};

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
