//! The store conformance suite on `MemcachedStore` over two real memcached servers.
//!
//! Each test starts its own pair of memcached processes (a few milliseconds)
//! and stops them when it ends, so tests run in parallel without sharing
//! anything. The suite's default timing already allows for memcached's
//! one-second expiry granularity; this store decides expiry from millisecond
//! timestamps anyway, so no knob needs changing.

mod common;

use common::two_servers;

sessionkit_core::conformance_tests!(two_servers, two_servers());
