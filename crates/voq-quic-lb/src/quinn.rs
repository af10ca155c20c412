//! `quinn_proto::ConnectionIdGenerator` over an [`Encoder`].

use std::time::Duration;

use quinn_proto::{ConnectionId, ConnectionIdGenerator, InvalidCid};

use crate::encoder::Encoder;

/// A quinn connection ID generator that issues QUIC-LB CIDs for one server.
///
/// Install with `quinn::EndpointConfig::cid_generator`. All CIDs of an endpoint have one
/// length, [`Config::cid_len`](crate::Config::cid_len), as quinn requires.
///
/// [`validate`](ConnectionIdGenerator::validate) accepts only CIDs of that length that decode,
/// under this encoder's configuration, to this server's id. quinn asks it before answering a
/// short-header packet for an unknown connection with a stateless reset, so a packet the load
/// balancer misrouted here never resets another server's connection (draft-21 §9.5). That
/// includes the unroutable `0b111` CIDs issued after nonce exhaustion: they prove nothing
/// about which server issued them.
#[derive(Debug)]
pub struct CidGenerator {
    encoder: Encoder,
    lifetime: Option<Duration>,
}

impl CidGenerator {
    /// Wraps `encoder`. CIDs never expire unless [`CidGenerator::with_lifetime`] says so.
    pub fn new(encoder: Encoder) -> Self {
        Self {
            encoder,
            lifetime: None,
        }
    }

    /// Retires CIDs after `lifetime`.
    pub fn with_lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = Some(lifetime);
        self
    }

    /// The wrapped encoder, e.g. to export [`Encoder::exhausted`] and [`Encoder::unroutable`].
    pub fn encoder(&self) -> &Encoder {
        &self.encoder
    }
}

impl ConnectionIdGenerator for CidGenerator {
    fn generate_cid(&mut self) -> ConnectionId {
        ConnectionId::new(self.encoder.generate().as_bytes())
    }

    fn validate(&self, cid: &ConnectionId) -> Result<(), InvalidCid> {
        let config = self.encoder.config();
        if cid.len() != config.cid_len() {
            return Err(InvalidCid);
        }
        match config.server_id(cid) {
            Ok(sid) if sid == self.encoder.server_id() => Ok(()),
            _ => Err(InvalidCid),
        }
    }

    fn cid_len(&self) -> usize {
        self.encoder.config().cid_len()
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        self.lifetime
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::Config;

    fn generator(server_id: &[u8], seed: u8) -> CidGenerator {
        let config = Config::new(3, 2, 6).unwrap().with_key([0x5c; 16]);
        CidGenerator::new(Encoder::new(config, server_id, [seed; 32]).unwrap())
    }

    #[test]
    fn generates_cids_it_validates() {
        let mut g = generator(&[0, 1], 1);
        assert_eq!(g.cid_len(), 9);
        assert_eq!(g.cid_lifetime(), None);
        for _ in 0..100 {
            let cid = g.generate_cid();
            assert_eq!(cid.len(), 9);
            assert_eq!(cid[0] >> 5, 3);
            assert!(g.validate(&cid).is_ok());
        }
        let g = g.with_lifetime(Duration::from_secs(60));
        assert_eq!(g.cid_lifetime(), Some(Duration::from_secs(60)));
        assert_eq!(g.encoder().issued(), 100);
    }

    #[test]
    fn rejects_other_servers_and_garbage() {
        let mut ours = generator(&[0, 1], 1);
        let mut theirs = generator(&[0, 2], 2);
        for _ in 0..100 {
            assert!(ours.validate(&theirs.generate_cid()).is_err());
            assert!(theirs.validate(&ours.generate_cid()).is_err());
        }
        let valid = ours.generate_cid();
        // Wrong length, wrong config id, reserved config id, empty.
        assert!(ours.validate(&ConnectionId::new(&valid[..8])).is_err());
        let mut other_config = valid;
        other_config[0] = (other_config[0] & 0x1f) | (2 << 5);
        assert!(ours.validate(&other_config).is_err());
        let mut reserved = valid;
        reserved[0] |= 0xe0;
        assert!(ours.validate(&reserved).is_err());
        assert!(ours.validate(&ConnectionId::new(&[])).is_err());
        assert!(ours.validate(&valid).is_ok());
    }

    #[test]
    fn is_a_boxed_generator() {
        // quinn stores it as a trait object; it must be Send + Sync.
        let g: Box<dyn ConnectionIdGenerator> = Box::new(generator(&[9, 9], 3));
        assert_eq!(g.cid_len(), 9);
    }
}
