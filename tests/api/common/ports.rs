//! Ports for servers the tests start as separate programs (PostgreSQL,
//! PgBouncer, HAProxy), which must be told a port before they bind it.
//!
//! A port from `bind(0)` lies in the kernel's ephemeral range: released
//! for the program to take, it can be given meanwhile to one of the many
//! client connections other tests open (PostgreSQL binds only after
//! `initdb`, seconds later). These come from below that range, where no
//! client connection is ever given a port, each once per test process.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

/// Lowest port handed out (above the usual services' ports).
const FIRST: u32 = 10_000;

/// A port that was free a moment ago and that no client connection will take.
pub fn free_port() -> u16 {
    // Where this process starts in the range: a process that started an
    // instant ago may still hold the first ones (probed below anyway).
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let end = ephemeral_start().max(FIRST + 1_000);
    let span = end - FIRST;
    let _ = NEXT.compare_exchange(
        0,
        std::process::id() % span + 1,
        Ordering::AcqRel,
        Ordering::Acquire,
    );
    for _ in 0..span {
        let port = FIRST + (NEXT.fetch_add(1, Ordering::AcqRel) % span);
        let port = u16::try_from(port).expect("a port");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIRST}..{end}");
}

/// The first port of the kernel's ephemeral range (32768 by default).
fn ephemeral_start() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}
