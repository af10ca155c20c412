//! Session tokens and key sets as a server meets them: any string as a token (checked against a
//! fixed key set), and any text as a JWKS key file. Nothing may panic; no token the fuzzer
//! makes may verify (it never holds the private key).
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use voq_server::auth::{self, Authenticator, SigningKey};

fn authenticator() -> &'static (Authenticator, String) {
    static AUTH: OnceLock<(Authenticator, String)> = OnceLock::new();
    AUTH.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("voq-fuzz-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let jwks = dir.join("jwks.json");
        let _ = std::fs::remove_file(&jwks);
        let es = SigningKey::generate("ES256", "es").expect("key");
        let hs = SigningKey::generate("HS256", "hs").expect("key");
        auth::add_to_key_set(&jwks, &es).expect("jwks");
        auth::add_to_key_set(&jwks, &hs).expect("jwks");
        let a = Authenticator::load(&jwks, "voq", None).expect("load");
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let good = es
            .mint(&auth::claims("alice", "voq", now, Duration::from_secs(60)))
            .expect("mint");
        (a, good)
    })
}

fuzz_target!(|data: &[u8]| {
    let (auth, good) = authenticator();
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    match mode % 3 {
        0 => assert!(
            auth.verify(&text, "echo", now).is_err(),
            "a forged token verified"
        ),
        // Mutations of a real token: only the token itself may verify.
        1 => {
            let mut t = good.clone().into_bytes();
            let len = t.len().max(1);
            for (i, b) in rest.iter().enumerate().take(8) {
                if let Some(slot) = t.get_mut(usize::from(*b) * 3 % len) {
                    *slot = slot.wrapping_add(i as u8 + 1);
                }
            }
            let t = String::from_utf8_lossy(&t).into_owned();
            if t != *good {
                let _ = auth.verify(&t, "echo", now);
            }
        }
        _ => {
            let _ = auth::parse_key_set(&text);
        }
    }
});
