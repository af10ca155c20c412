//! Holds a `NetnsLink` open for manual experiments, then cleans up.
//!
//! ```text
//! cargo run -p voq-netns --example hold -- [PRESET] [SECONDS]
//! ```
//!
//! `PRESET` is a `voq_netem::Preset` name (`none`, `wifi`, `cellular`, `lossy`, `satellite`;
//! default `none`), the same both ways; `SECONDS` (default 60) bounds the run; Ctrl-C ends it
//! early. Prints the namespace names, so another shell can run
//! `ip netns exec NAME_B voq serve --listen 198.18.0.2:4443 …` and
//! `ip netns exec NAME_A voq call https://198.18.0.2:4443 …`; prints the link's counters at
//! the end.

#![allow(clippy::print_stdout)]

use std::time::Duration;

use voq_netem::Preset;
use voq_netns::{Direction, NetnsConfig, NetnsLink, Side};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let preset: Preset = args.next().as_deref().unwrap_or("none").parse()?;
    let seconds: u64 = args.next().as_deref().unwrap_or("60").parse()?;
    if let Err(why) = NetnsLink::available() {
        return Err(format!("cannot create namespaces here: {why}").into());
    }
    let config = NetnsConfig::symmetric(preset.config()).with_second_client_address(true);
    let link = NetnsLink::create(config)?;
    println!("a: {} (198.18.0.1, 198.18.0.5)", link.name(Side::A));
    println!("b: {} (198.18.0.2)", link.name(Side::B));
    println!("preset {preset:?} both ways; holding for {seconds} s (Ctrl-C ends it)");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = tokio::time::sleep(Duration::from_secs(seconds)) => {}
        }
    });
    for direction in Direction::BOTH {
        println!("{direction:?}: {:?}", link.stats(direction));
    }
    link.close()?;
    Ok(())
}
