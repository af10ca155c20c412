//! Configuration files as an operator (or a broken deploy) writes them: any text as a `voq
//! serve` TOML file and as a `voq lb` TOML file (QUIC-LB configs, server ids, keys, backends).
//! Nothing may panic; a file either loads or gets an error. Paths in the file are dropped and
//! backend names are not resolved, so the target touches neither disk nor network.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(mut serve) = toml::from_str::<voq_server::ServeConfig>(text) {
        serve.config = None;
        serve.cert = None;
        serve.key = None;
        serve.record = None;
        serve.auth_keys = None;
        serve.fleet_secret_file = None;
        serve.no_auth = Some(true);
        let _ = serve.resolve();
    }
    if let Ok(lb) = toml::from_str::<voq_lb::LbConfig>(text) {
        if lb.config.is_none() && lb.backends.iter().all(|b| b.is_literal()) {
            let _ = lb.resolve();
        }
    }
});
