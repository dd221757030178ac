//! The real servers sessionkit's tests talk to, in one place: `redis-server`
//! (standalone and a three-master cluster), `memcached` and PostgreSQL, each on a free
//! loopback port, started by the test that needs it and stopped with it.
//!
//! Only `std` and the servers' binaries (which `scripts/lib/install.sh`
//! installs). A dev-dependency of every crate whose tests need a server;
//! never published.
//!
//! Servers shared by every test of a test binary (`redis::shared()`) live
//! in a `static` that is never dropped: they run under a [`Supervised`]
//! watchdog that stops them when the test binary ends, however it ends.

mod supervised;

pub mod memcached;
pub mod postgres;
pub mod redis;

pub use supervised::Supervised;

use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A loopback port that was free a moment ago (bound to port 0, then
/// released). A server may still lose it to another process before it
/// binds it: the starters here try another port then.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// A fresh directory under the system's temp dir, named after `kind`, this
/// process and a counter. The caller (or its watchdog) removes it.
pub fn fresh_dir(kind: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "sessionkit-{kind}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {dir:?}: {e}"));
    dir
}
