//! Holds an anycast `Fleet` open for manual experiments, then cleans up.
//!
//! ```text
//! cargo run -p voq-netns --example fleet -- [SERVERS] [SECONDS]
//! ```
//!
//! `SERVERS` (1..=9, default 3) servers; `SECONDS` (default 60) bounds the run; Ctrl-C ends it
//! early. Prints the namespace names and BIRD control sockets, so another shell can run
//! `ip netns exec NAME …`, `ip -n ROUTER route show 198.19.0.1` or
//! `birdc -s SOCKET disable anycast`; prints the route's next hops whenever they change.

#![allow(clippy::print_stdout)]

use std::time::Duration;

use voq_netns::{ANYCAST, Fleet, FleetConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let servers: usize = args.next().as_deref().unwrap_or("3").parse()?;
    let seconds: u64 = args.next().as_deref().unwrap_or("60").parse()?;
    if let Err(why) = Fleet::available() {
        return Err(format!("cannot build a fleet here: {why}").into());
    }
    let fleet = Fleet::create(FleetConfig::new(servers))?;
    println!(
        "client: {} (198.18.10.2, 198.18.11.2)",
        fleet.client().name()
    );
    println!(
        "router: {} (BIRD: birdc -s {})",
        fleet.router().name(),
        fleet.router_bird_socket().display()
    );
    for i in 0..fleet.servers() {
        println!(
            "server {i}: {} ({}, {ANYCAST} on lo; BIRD: birdc -s {})",
            fleet.server(i).name(),
            fleet.server_addr(i),
            fleet.bird_socket(i).display()
        );
    }
    println!("holding for {seconds} s (Ctrl-C ends it)");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let deadline = tokio::time::sleep(Duration::from_secs(seconds));
        // Made once: a Ctrl-C between two listeners would be lost.
        let interrupted = tokio::signal::ctrl_c();
        tokio::pin!(deadline, interrupted);
        let mut shown = None;
        loop {
            let hops = fleet.next_hops().map_err(|e| e.to_string());
            if shown.as_ref() != Some(&hops) {
                match &hops {
                    Ok(hops) => println!("{ANYCAST} via {hops:?}"),
                    Err(e) => println!("reading the route: {e}"),
                }
                shown = Some(hops);
            }
            // Watching the route is the point here: a change shows within 100 ms.
            tokio::select! {
                _ = &mut interrupted => break,
                () = &mut deadline => break,
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    });
    fleet.close()?;
    Ok(())
}
