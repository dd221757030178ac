//! Test support: the store crates' own server harnesses (redis-server and memcached on free loopback ports, killed by PID on drop), included as they are.
#![allow(dead_code, unreachable_pub)]

#[path = "../../../crates/sessionkit-redis/tests/support/mod.rs"]
pub mod redis;

#[path = "../../../crates/sessionkit-memcached/tests/common/mod.rs"]
pub mod memcached;

#[path = "../../../crates/sessionkit-sql/tests/support/mod.rs"]
pub mod postgres;
