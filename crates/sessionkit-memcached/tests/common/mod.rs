//! Test support: stores over real memcached processes
//! ([`sessionkit_test_servers::memcached`]).
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use sessionkit_core::SessionId;
use sessionkit_core::testkit::Guarded;
use sessionkit_memcached::{MemcachedStore, MemcachedStoreBuilder, ServerList};
pub use sessionkit_test_servers::memcached::Memcached;

/// A builder for a store on `servers`.
pub fn builder(servers: &[&Memcached]) -> MemcachedStoreBuilder {
    let spec = servers
        .iter()
        .map(|s| s.addr())
        .collect::<Vec<_>>()
        .join(",");
    MemcachedStore::builder(ServerList::parse(&spec).unwrap())
        .connect_timeout(Duration::from_millis(500))
        .request_timeout(Duration::from_secs(2))
}

/// A session id that [`MemcachedStore`] places on `server`.
pub fn id_on(store: &MemcachedStore, server: &Memcached) -> SessionId {
    loop {
        let id = SessionId::generate();
        if store.server_for(&id).addr() == server.addr() {
            return id;
        }
    }
}

/// A [`MemcachedStore`] on two fresh memcached processes that it owns: the
/// processes stop when the last clone is dropped. For the conformance
/// suite, whose store expression must own its servers.
/// A store over two fresh memcached servers, which live as long as its last
/// clone.
pub type TwoServers = Guarded<MemcachedStore, (Memcached, Memcached)>;

/// Starts two servers and a store over both.
pub fn two_servers() -> TwoServers {
    let a = Memcached::start();
    let b = Memcached::start();
    let store = builder(&[&a, &b]).build().expect("store");
    Guarded::new(store, (a, b))
}
