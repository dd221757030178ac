//! The servers the shop's tests run on (from `sessionkit-test-servers`, and
//! `sessionkit-sql`'s PostgreSQL harness), the shop binary and its client
//! helpers.

#![allow(dead_code)]

pub(crate) mod shop;

pub(crate) use sessionkit_test_servers::postgres as pg;

pub(crate) use sessionkit_test_servers::memcached::Memcached;
pub(crate) use sessionkit_test_servers::redis::RedisServer;

/// A `memcached` on a free loopback port, stopped when dropped.
pub(crate) fn memcached() -> Memcached {
    Memcached::start()
}

/// A `redis-server` on a free loopback port, stopped when dropped.
pub(crate) fn redis() -> RedisServer {
    RedisServer::start()
}
