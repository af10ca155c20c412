//! PROXY protocol v2 headers as the server's tunnel socket reads them from any datagram that
//! reaches its port: nothing may panic, and a decoded header's payload is a suffix of the input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((_header, payload)) = voq_tunnel::proxy_v2::decode(data) {
        assert!(payload.len() <= data.len());
        assert_eq!(&data[data.len() - payload.len()..], payload);
    }
});
