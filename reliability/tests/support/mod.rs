//! Test support: the SQL crate's PostgreSQL harness (redis-server and
//! memcached come from `sessionkit-test-servers`).
#![allow(dead_code, unreachable_pub)]

pub use sessionkit_test_servers::postgres;
