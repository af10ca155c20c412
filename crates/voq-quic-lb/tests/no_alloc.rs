//! `Router::route` and `Router::dcid` allocate nothing: they run once per datagram on the load
//! balancer. Proved with a counting global allocator.
//!
//! The one `unsafe` in the crate's tests: implementing `GlobalAlloc` requires it. It only
//! forwards to the system allocator.
#![allow(unsafe_code, clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use voq_quic_lb::{Config, Route, Router};

thread_local! {
    /// Allocations made by this thread; per thread so other tests' threads do not count.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

struct Counting;

// SAFETY: forwards every call unchanged to `System`, which upholds the `GlobalAlloc` contract.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: same layout the caller gave us.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn route_does_not_allocate() {
    let key = [0x8f; 16];
    let router = Router::new()
        .with_config(Config::new(0, 3, 4).unwrap())
        .with_config(Config::new(1, 8, 8).unwrap().with_key(key))
        .with_config(Config::new(2, 3, 9).unwrap().with_key(key))
        .with_config(Config::new(3, 10, 5).unwrap().with_key(key));
    let mut datagrams = Vec::new();
    for id in 0..4u8 {
        let config = router.config(id).unwrap();
        let cid = config
            .encode(&vec![id; config.sid_len()], &vec![0x33; config.nonce_len()])
            .unwrap();
        let mut short = vec![0x40];
        short.extend_from_slice(&cid);
        short.resize(1200, 0);
        let mut long = vec![0xc0, 0, 0, 0, 1, cid.len() as u8];
        long.extend_from_slice(&cid);
        long.push(0);
        long.resize(1200, 0);
        datagrams.extend([short, long]);
    }
    datagrams.push(vec![0xc0, 0, 0, 0, 1, 8, 0xa7, 1, 2, 3, 4, 5, 6, 7, 0]); // unknown config
    datagrams.push(vec![]);

    // The counter works: a Box counts.
    let probe = allocations();
    drop(std::hint::black_box(Box::new(1u8)));
    assert_eq!(allocations(), probe + 1);

    let before = allocations();
    let mut routed = 0;
    for d in &datagrams {
        if let Route::Server { .. } = router.route(d) {
            routed += 1;
        }
        let _ = router.dcid(d);
    }
    let after = allocations();
    assert_eq!(after - before, 0, "route/dcid allocated");
    assert_eq!(routed, 8);
}
