//! Memcached store for sessionkit: weighted servers, CAS deltas, fenced locks, native expiry.
//!
//! Sessions of [sessionkit](https://docs.rs/sessionkit) on one or more
//! weighted memcached servers, with the same guarantees as every other
//! sessionkit store. [`MemcachedStore`] implements the [store
//! contract](sessionkit_core::store) — strict ids, idle and absolute expiry,
//! per-key delta merges that never lose a concurrent write and never bring a
//! destroyed session back, fenced locks with TTL, renewal and
//! compare-and-delete release — on memcached 1.6's meta protocol, and passes
//! the whole [conformance suite](https://docs.rs/sessionkit-core/latest/sessionkit_core/testkit/)
//! (`sessionkit_core::testkit`) over two servers.
//!
//! ```no_run
//! # async fn run() -> sessionkit_core::Result<()> {
//! use sessionkit_memcached::{MemcachedStore, ServerList};
//!
//! // The syntax of SESSION_MEMCACHED_SERVERS: host:port[:weight],…
//! let servers: ServerList = "10.0.0.1:11211:2,10.0.0.2:11211".parse()?;
//! let store = MemcachedStore::builder(servers).prefix("shop:").build()?;
//! # let _ = store;
//! # Ok(())
//! # }
//! ```
//!
//! Unlike the seed's Libmemcached adapter, this store locks (Phalcon's
//! memcached adapter does not), refreshes an unchanged session without
//! rewriting it on every request (only when the touch is due, see
//! [Expiry](#expiry)), and never strips its prefix.
//!
//! # Servers and key placement
//!
//! Servers are given as `host:port[:weight],…` ([`ServerList`]; IPv6 hosts
//! in brackets; weight 1 to [`MAX_WEIGHT`], default 1). Keys are placed by
//! consistent hashing: a ketama-style ring with 160 points per unit of weight,
//! taken from SHA-256 of each server's `host:port`. A server's share of the
//! sessions is its weight over the total. Adding a server moves only the
//! sessions it takes over — about `its weight / new total` of them, a
//! quarter when a fourth equal server joins three — and removing one moves
//! only its own. The order of the list does not matter.
//!
//! There is no failover: when a server is down, operations on the sessions
//! it holds fail with [`ErrorKind::StoreUnavailable`] (the error names
//! `memcached`, the operation and the server, such as `session store
//! unavailable (load on memcached): server 10.0.0.2:11211: could not connect:
//! Connection refused (os error 111)`), and the other servers go on serving
//! theirs. Moving
//! a down server's sessions elsewhere would not save them (they are in its
//! memory) and would split a session's state between two servers when it
//! comes back. When it is back (on the same address), operations on its keys
//! succeed again — before reusing a pooled connection the client peeks at
//! the socket, so connections to the old process are noticed as closed and
//! replaced — and its sessions load as absent, because memcached keeps
//! nothing across a restart. There is no automatic retry of a failed
//! request: a command may have reached the server before the connection
//! broke, and replaying it (an add, say) could answer wrongly.
//!
//! # Key layout
//!
//! | item | key | value |
//! |---|---|---|
//! | session | `<prefix><part>` | `SKM\x01`, birth stamp (µs), record in the [core blob format](sessionkit_core::codec::encode_record) |
//! | lock | `<prefix><part>:lock` | `SKL\x01`, token, expiry (ms), time taken (µs) |
//!
//! `<prefix>` is [`DEFAULT_PREFIX`] (`sessionkit:`) unless set; it is part
//! of every key and never stripped, so ids that happen to start with
//! prefix-like text can never address another app's session (the gap the
//! seed fixed in Phalcon 5.14.2). `<part>` is the lowercase hex SHA-256 of
//! the session id ([`SessionId::hashed`](sessionkit_core::SessionId::hashed)):
//! keys and values never contain a usable session id, so a dump of the
//! servers cannot be replayed as cookies. ([`hash_ids(false)`](MemcachedStoreBuilder::hash_ids)
//! stores the 43-character id instead.) Both items of a session are placed
//! by `<part>` alone, so a session and its lock always live on the same
//! server. With hashed ids the longest key is the prefix plus 69 bytes; the
//! builder refuses a prefix that would push it over memcached's 250 bytes.
//!
//! # Round trips
//!
//! A round trip is one batch of pipelined commands written to one server and
//! its replies read back. [`MemcachedStore::stats`] counts them; the crate's
//! tests assert these numbers:
//!
//! | operation | case | round trips | commands |
//! |---|---|---|---|
//! | `load` | miss, or no touch due | **1** | `mg` |
//! | `load` | touch due | 2 | `mg`; `ms C` |
//! | `create` | id free | **1** | `ms ME` (add) |
//! | `create` | id taken by a live session | 2 | `ms ME`; `mg` |
//! | `create` | expired item not yet dropped | 3 | `ms ME`; `mg`; `ms C` |
//! | `apply` | unfenced, or fenced without release | 2 | `mg` (+ `mg` lock); `ms C` |
//! | `apply` | fenced, commit + release | 3 | `mg` + `mg` lock; `ms C`; `md C` lock |
//! | `apply` | session gone, lock lost | 1 | `mg` (+ `mg` lock) |
//! | `change_id` | | 3 | `mg` old (+ lock) and new; `ms` new (+ lock); `md C` old + `md` lock |
//! | `destroy` | | **1** | `md` + `md` lock |
//! | `lock` | acquired, or held by another token | **1** | `ms ME` lock + `mg` lock + `mg` |
//! | `lock` | no session | 2 | the above; `md C` of the lock it added |
//! | `lock` | over a void lock item (expired, or left by an earlier session) | 2 | the above; `ms C` lock + `mg` |
//! | `renew_lock` | | 2 | `mg` lock + `mg`; `ms C` lock |
//! | `unlock` | owner | 2 | `mg` lock; `md C` lock |
//! | `unlock` | not the owner, no lock | 1 | `mg` lock |
//!
//! Every compare-and-swap conflict repeats the cycle it interrupted. In
//! `change_id`, when the old and new ids live on different servers, the
//! first step reads both servers at once (two batches, one round trip of
//! latency).
//!
//! Why some operations cost more than one: memcached applies a command to
//! one item at a time and has no server-side scripts, so what Redis does in
//! one Lua call takes a read and a compare-and-swap write here.
//!
//! - A **touch** rewrites the item: the idle expiry lives in the record, at
//!   millisecond precision, so that every store reports the same
//!   [`Meta`](sessionkit_core::record::Meta); memcached's `mg … T` would
//!   move only its own TTL (in seconds) and cannot touch conditionally.
//!   Since a touch is due only when less than the configured share of the
//!   lifetime remains, the common read is one round trip.
//! - **`apply`** merges a delta into the stored record: read with its CAS,
//!   merge, write with `C<cas>`. A writer that came first makes the write
//!   fail with `EX`; the cycle repeats on the newer record, so concurrent
//!   deltas on different keys all persist. A write that finds the item gone
//!   (`NF`) answers `Gone`, so a destroyed session is never resurrected.
//! - **Commit + release** deletes the lock only after the write succeeded.
//!   Pipelining the delete with the write would release the lock even when
//!   the write loses its CAS race, and the lock could be taken by another
//!   request before this one retried.
//! - **`change_id`** writes the new id before deleting the old one (with the
//!   CAS read in step 1), so a failure in between leaves the session under
//!   both ids (the old one expires by its TTL), never under neither.
//!
//! The session layer's locked read-modify-write (`lock` + commit) costs
//! 1 + 3 round trips here; a buffered write costs 2.
//!
//! # Compare-and-swap retries
//!
//! Every CAS cycle is retried on conflict up to
//! [`cas_attempts`](MemcachedStoreBuilder::cas_attempts) times (default
//! 64). The first retry is immediate; later ones wait a random pause whose
//! bound doubles from 250 µs up to 8 ms, so that writers contending for one
//! session spread out. When the attempts run out the operation fails with
//! [`ErrorKind::StoreUnavailable`] ("gave up after N compare-and-swap
//! conflicts"); nothing was written. [`Stats::cas_conflicts`] counts
//! retries.
//!
//! # Locks and fencing
//!
//! A lock is its own item, added with `ms … ME` (add: only if absent) with a
//! TTL, holding the token. `lock` adds it and reads it and the session in
//! one batch, so when it is acquired the session is read *under* the lock.
//! `unlock` and release are compare-and-delete (`mg` then `md C<cas>`), and
//! renewal is compare-and-set, so a holder whose lock expired and was taken
//! by another request can neither release nor renew the new holder's lock.
//!
//! A lock counts only while its expiry (ms) is in the future and only for
//! the session it was taken on: every session item carries a birth stamp,
//! and a lock taken before the session's birth — left by an expired or
//! destroyed session under the same key — is void and is taken over with a
//! CAS. So a lock expires with its session, as the contract requires,
//! although the two items have separate TTLs.
//!
//! A fenced write (`apply` or `change_id` with a token) reads the lock in
//! the same batch as the session and writes only if the token owns it, it
//! belongs to this session, and it has at least
//! [`fence_margin`](MemcachedStoreBuilder::fence_margin) (default 100 ms)
//! left. **Not guaranteed:** the check and the write are two round trips
//! apart, because memcached has no multi-item transaction. If that round
//! trip stalls for longer than the margin exactly while the lock expires,
//! and another request takes the lock in that instant, both write. Keep the
//! lock TTL well above request times (the session layer renews locks in the
//! background) and use Redis where fencing must be strict.
//!
//! # Expiry
//!
//! Expiry is decided from the millisecond timestamps in the items, by the
//! app server's clock: an item whose record has expired is absent for every
//! operation, even while memcached still holds it. Each item also gets a
//! native exptime so that memcached drops it by itself: the remaining time
//! rounded up to whole seconds plus one, so that memcached's one-second
//! clock never drops an item before its logical expiry. Memcached reads a
//! relative exptime above 30 days (2,592,000 s) as an absolute Unix time; so
//! longer lifetimes ("remember me" for 90 days) are sent as `now + seconds`,
//! capped at `i32::MAX` (January 2038), the largest exptime memcached
//! parses.
//!
//! App servers that share the servers should keep their clocks in sync
//! (NTP): expiry, lock TTLs and birth stamps are compared across them.
//! Memcached has no millisecond clock to use instead.
//!
//! # Sizes
//!
//! A session is one item. Its size is checked before sending: value + key +
//! [`ITEM_OVERHEAD`] must fit [`item_size_limit`](MemcachedStoreBuilder::item_size_limit)
//! (default 1 MiB, memcached's default `-I`). A write beyond it fails with
//! [`ErrorKind::Codec`] — it is a property of the data, not an outage, and
//! retrying will not help — with a message starting "value too large" and
//! giving the sizes; nothing is written. A server with a smaller `-I` than
//! configured refuses such writes itself, reported the same way.
//!
//! # What is not guaranteed
//!
//! - **Durability.** Memcached is a cache. Sessions are lost when a server
//!   restarts, and **memcached may evict sessions before they expire** when
//!   it runs out of memory (LRU). Size the servers (`-m`) for the number of
//!   live sessions × their average size × about 1.5 for slab overhead, and
//!   watch `evictions` in `stats`; a session store that must never lose a
//!   session belongs on Redis with persistence, or on files.
//! - **Availability** of a down server's sessions (see above).
//! - **Strict fencing** across the check-then-write window (see above).
//! - **Counting or listing** sessions: the store implements neither
//!   [`Countable`](sessionkit_core::store::Countable) nor
//!   [`ExpiredDeletion`](sessionkit_core::store::ExpiredDeletion);
//!   memcached expires items natively.
//!
//! # Connections
//!
//! The client is part of this crate. The store needs, together: the meta
//! protocol with CAS and TTL flags; *mixed* pipelines (an `ms` add and two
//! `mg` in one write, which is what makes lock + load one round trip);
//! several servers with a pool of connections each; timeouts on connect and
//! on every request; reconnection after a server restart; and a count of
//! round trips. Of the crates on crates.io, `memcache` is synchronous,
//! `memcache-async` speaks only the classic commands on one connection, and
//! `async-memcached` (0.9) has meta commands but pipelines only batches of
//! one command type on one connection, without pooling or timeouts. The
//! subset needed is four commands (`mg`, `ms`, `md`, `mn`), so it is
//! implemented here, with its parser tested against truncated and random
//! input.
//!
//! Per server, the client keeps a pool of up to
//! [`max_connections`](MemcachedStoreBuilder::max_connections) TCP
//! connections (default 16), opened on demand within
//! [`connect_timeout`](MemcachedStoreBuilder::connect_timeout) (default
//! 1 s); every round trip, including the wait for a free connection, runs
//! under [`request_timeout`](MemcachedStoreBuilder::request_timeout)
//! (default 1 s). A connection that failed, timed out or was cancelled mid-request is
//! closed, never reused. Replies are parsed defensively: a malformed or
//! truncated reply is a [`ErrorKind::StoreUnavailable`] error, never a
//! panic.
//!
//! [`ErrorKind::StoreUnavailable`]: sessionkit_core::ErrorKind::StoreUnavailable
//! [`ErrorKind::Codec`]: sessionkit_core::ErrorKind::Codec
#![deny(unreachable_pub)]

mod client;
mod ring;
mod servers;
mod store;
mod value;

pub use servers::{MAX_WEIGHT, Server, ServerList};
pub use store::{
    DEFAULT_ITEM_SIZE_LIMIT, DEFAULT_PREFIX, ITEM_OVERHEAD, LOCK_SUFFIX, MemcachedStore,
    MemcachedStoreBuilder, Stats,
};
