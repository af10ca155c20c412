//! The one QUIC-LB configuration of the run and the packets built with it. The voq servers
//! issue CIDs with it, `voq lb` decodes them with it (its flags say the same), and the load
//! generator and the ping-pong use CIDs encoded with it, so every datagram they send routes
//! to a known server: the packet phases measure forwarding, not the fallback hash.

use voq_server::QuicLbSettings;

/// The QUIC-LB configuration of every server and of the balancer (as in voq-server's
/// tests/lb.rs): config id 1, 1-octet server id, 8-octet nonce, AES-128 key.
pub(crate) const CONFIG_ID: u8 = 1;
pub(crate) const SERVER_ID_LEN: usize = 1;
pub(crate) const NONCE_LEN: usize = 8;
pub(crate) const KEY: [u8; 16] = [0x2b; 16];
/// Distinct routable CIDs the generator cycles through.
pub(crate) const CIDS: usize = 1024;

/// The key as `voq lb --lb-key` / `VOQ_LB_KEY` takes it.
pub(crate) fn key_hex() -> String {
    KEY.iter().map(|b| format!("{b:02x}")).collect()
}

/// The settings of the voq server with `server_id`.
pub(crate) fn lb_settings(server_id: u8) -> QuicLbSettings {
    QuicLbSettings {
        config_id: CONFIG_ID,
        server_id: vec![server_id],
        nonce_len: NONCE_LEN,
        key: Some(KEY),
        cid_len: None,
        self_encoded_len: None,
    }
}

/// `CIDS` distinct CIDs that route to `servers` in turn.
pub(crate) fn routable_cids(servers: &[u8]) -> anyhow::Result<Vec<Vec<u8>>> {
    let config = lb_settings(1).config()?;
    (0..CIDS as u64)
        .map(|i| {
            let server = servers[i as usize % servers.len()];
            let cid = config.encode(&[server], &(i + 1).to_be_bytes())?;
            Ok(cid.to_vec())
        })
        .collect()
}

/// A short-header packet with `cid` as its DCID, padded to `size` octets.
pub(crate) fn short_header(cid: &[u8], size: usize) -> Vec<u8> {
    let mut d = Vec::with_capacity(size);
    d.push(0x40);
    d.extend_from_slice(cid);
    d.resize(size, 0xab);
    d
}
