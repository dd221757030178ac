//! Test support: the SQL crate's PostgreSQL harness (redis-server and
//! memcached come from `sessionkit-test-servers`).
#![allow(dead_code, unreachable_pub)]

#[path = "../../../crates/sessionkit-sql/tests/support/mod.rs"]
pub mod postgres;
