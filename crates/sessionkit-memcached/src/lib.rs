//! Memcached store for sessionkit: weighted servers, CAS deltas, fenced locks, native expiry.
//!
//! Sessions of [sessionkit](https://docs.rs/sessionkit) on one or more
//! weighted memcached servers, with the same guarantees as every other
//! sessionkit store. [`MemcachedStore`] implements the [store
//! contract](sessionkit_core::store) — strict ids, idle and absolute expiry,
//! per-key delta merges that never lose a concurrent write and never bring a
//! destroyed session back, locks with TTL, renewal and compare-and-delete
//! release, and exactly fenced writes (the lock lives in the session's own
//! item, so a fenced commit is one compare-and-swap; see [Locks and
//! fencing](#locks-and-fencing)) — on memcached 1.6's meta protocol, and passes
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
//! Like every sessionkit store, it locks sessions (the lock lives in the
//! session's own item), refreshes an unchanged session only when its touch
//! is due instead of rewriting it on every request (see [Expiry](#expiry)),
//! and never strips its key prefix.
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
//! One item per session; its lock lives inside it:
//!
//! | key | value |
//! |---|---|
//! | `<prefix><part>` | `SKM\x02`; lock expiry (`u64` LE, Unix ms, `0` when unlocked); lock token (16 bytes); the record in the [core blob format](sessionkit_core::codec::encode_record) |
//!
//! The header before the record has a fixed size (28 bytes), so taking or
//! releasing a lock never changes the size of the item: a session at the
//! item size limit can still be locked. Items written by earlier versions
//! of this crate (format `SKM\x01`, with the lock in a second item
//! `<key>:lock`) are not read; they count as absent sessions.
//!
//! `<prefix>` is [`DEFAULT_PREFIX`] (`sessionkit:`) unless set; it is part
//! of every key and never stripped, so ids that happen to start with
//! prefix-like text can never address another app's session. `<part>` is
//! the lowercase hex SHA-256 of the session id ([`SessionId::hashed`](sessionkit_core::SessionId::hashed)):
//! keys and values never contain a usable session id, so a dump of the
//! servers cannot be replayed as cookies. ([`hash_ids(false)`](MemcachedStoreBuilder::hash_ids)
//! stores the 43-character id instead.) With hashed ids a key is the prefix
//! plus 64 bytes; the builder refuses a prefix that would push it over
//! memcached's 250 bytes (more than 186 bytes).
//!
//! # Round trips
//!
//! A round trip is one batch of pipelined commands written to one server and
//! its replies read back. [`MemcachedStore::stats`] counts them; the crate's
//! tests (`tests/round_trips.rs`) measure and assert these numbers:
//!
//! | operation | case | round trips | commands |
//! |---|---|---|---|
//! | `load` | miss, or hit with no touch due | **1** | `mg` |
//! | `load` | touch due | 2 | `mg`; `ms C` |
//! | `create` | id free | **1** | `ms ME` (add) |
//! | `create` | id taken by a live session | 2 | `ms ME`; `mg` |
//! | `create` | over an expired item not yet dropped | 3 | `ms ME`; `mg`; `ms C` |
//! | `apply` | unfenced, fenced, fenced with commit + release | 2 | `mg`; `ms C` |
//! | `apply` | session gone, or lock lost | 1 | `mg` |
//! | `lock` | acquired (lock free or expired) | 2 | `mg`; `ms C` |
//! | `lock` | held by another token, or no session | 1 | `mg` |
//! | `renew_lock` | owner | 2 | `mg`; `ms C` |
//! | `renew_lock` | not the owner, or expired | 1 | `mg` |
//! | `unlock` | owner | 2 | `mg`; `ms C` |
//! | `unlock` | not the owner, no lock, or expired | 1 | `mg` |
//! | `change_id` | moved (the new id from `new_id_for`: one server) | 4 | `mg` old; `ms ME` new (pending copy); `ms C` old (tombstone: the commit); `ms C` new (finished) |
//! | `change_id` | new id taken by a live session | 3 | `mg` old; `ms ME` new; `mg` new |
//! | `change_id` | gone, or lock lost | 1 | `mg` old |
//! | `load` (and every operation) | first read of a copy left pending (its move committed but step 4 failed) | 1 + 2 | `mg` new; `mg` old (the tombstone); `ms C` new |
//! | `destroy` | | **1** | `md` |
//!
//! Every compare-and-swap conflict repeats the cycle it interrupted.
//! Writing over a new id whose item has expired but is still held uses
//! `mg` and `ms C` after the `ms ME`. See
//! [`change_id` across failures](#change_id-across-failures) for why a
//! move takes four.
//!
//! Why some operations cost two: memcached applies a command to one item
//! and has no server-side scripts, so what Redis does in one Lua call — a
//! write that depends on what is stored — is a read with the item's CAS
//! (`mg … v c`) and a write conditional on it (`ms … C<cas>`) here.
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
//!   answers `Gone`, so a destroyed session is never resurrected. Fenced or
//!   not, with or without release: the same two round trips (see below).
//!
//! The session layer's locked read-modify-write (`lock`, then commit +
//! release) costs 2 + 2 round trips here; a buffered write costs 2.
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
//! The lock is two fields of the session's own item: the owner's token and
//! the lock's expiry (Unix ms). So every operation that checks the lock and
//! writes is **one compare-and-swap on one item**: read the item with its
//! CAS, check, write back with `C<cas>`. The write lands only if nobody
//! wrote the item since the read — and taking a lock over, releasing it,
//! renewing it, destroying or moving the session are all writes to that
//! item. Memcached gives every write, even one of unchanged bytes, a new
//! CAS value, so concurrent writers always serialize.
//!
//! - **`lock`** reads the item; if the lock is unset or expired it writes a
//!   fresh token and `now + ttl` into it (CAS) and returns the record that
//!   write was conditional on, which is therefore the record as of taking
//!   the lock. A live lock answers `Held`, no session `Absent`; neither
//!   writes.
//! - **Fenced `apply`** checks, on the item it read, that the lock is held
//!   by its token and has not expired, and writes the merged record (and,
//!   with `release`, the cleared lock) with that read's CAS. If another
//!   request took the lock in between, the CAS fails (`EX`), the cycle
//!   starts again, sees the new owner and answers `LockLost`: nothing is
//!   written. The check and the write are one atomic step — **fencing is
//!   exact**, with no margin and no window. Commit and release are the same
//!   single write.
//! - **`renew_lock`** is compare-and-set (owner and unexpired, then CAS);
//!   **`unlock`** is compare-and-delete: it clears the fields with a CAS if
//!   the token still owns the lock, so a holder whose lock expired and was
//!   taken over can neither renew nor release the new owner's lock.
//! - **Unfenced writes and touches** carry the lock fields over unchanged,
//!   so a buffered write never drops or steals a lock.
//! - **`destroy`** deletes the one item, and the lock is gone with it: a
//!   session created again under the same id starts unlocked, and no stale
//!   lock item can outlive its session (the lock expires with it too).
//! - **`change_id`** moves the item, lock included (the same token and
//!   expiry when fenced; no lock when unfenced, as the contract says). Its
//!   commit is a compare-and-swap on the old item against the read whose
//!   lock was checked, so a write or a lock taken on the old id in between
//!   makes the move start again, and no concurrent write is lost; see
//!   [`change_id` across failures](#change_id-across-failures).
//!
//! Lock expiry is judged by the app server's clock when the item is read.
//! A lock that runs out between a fenced write's read and its write cannot
//! have been taken over in between (taking it is a write, which would fail
//! the CAS), so the write still lands only while no other request held the
//! lock — if late, then by the time the write takes to reach the server
//! (at most the [request timeout](MemcachedStoreBuilder::request_timeout)).
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
//! (NTP): expiry and lock TTLs are compared across them. Memcached has no
//! millisecond clock to use instead.
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
//!   session belongs on Redis with persistence, or on files. An evicted
//!   session takes its lock with it: the holder's commit answers `Gone`.
//! - **Availability** of a down server's sessions (see above).
//! - **`change_id` when its commit's outcome cannot be learnt** (the
//!   commit and the read that follows it both time out): the session is
//!   under exactly one id, but `change_id` reports an error while it may be
//!   under the new one, which the client then does not know. See below.
//! - **One clock.** Expiry and lock TTLs are decided by the app servers'
//!   clocks, at millisecond precision (memcached has no millisecond clock
//!   to use instead): keep them in sync (NTP). Skew makes a lock last a
//!   little shorter or longer as judged by another app server, but never
//!   lets two holders write: taking a lock over is a write to the item, and
//!   the old holder's writes fail from then on.
//! - **Counting or listing** sessions: the store implements neither
//!   [`Countable`](sessionkit_core::store::Countable) nor
//!   [`ExpiredDeletion`](sessionkit_core::store::ExpiredDeletion);
//!   memcached expires items natively.
//!
//! # Owners
//!
//! `MemcachedStore` keeps no owner index: it does not implement
//! [`OwnerIndex`](sessionkit_core::owner::OwnerIndex), so
//! `Session::set_owner` fails with
//! [`OwnersUnsupported`](sessionkit_core::ErrorKind::OwnersUnsupported)
//! and `Owners::of(store)` does not compile. Not an omission: memcached
//! cannot enumerate keys, so the index would have to be an item of its
//! own, and memcached evicts items on its own whenever memory runs short,
//! one item at a time. An evicted index forgets every session of its owner
//! while the sessions live on: "sign out everywhere" after a password
//! change would report success and sign out nothing, and a cap would let
//! any number of sessions in. An index that fails open in exactly the case
//! it exists for (revoking) is worse than none, so the capability is
//! absent, at compile time where the registry is used. Keep owned sessions
//! in Redis, PostgreSQL, SQLite or memory.
//!
//! # `change_id` across failures
//!
//! Memcached has no write that spans two keys, so a session cannot change
//! its key in one atomic step. Versions up to 0.1 deleted the old item and
//! then added the new one, and lost the session when the add failed in a
//! way that may have reached the server, or the process died in between.
//! Now a move takes four round trips:
//!
//! 1. read the old item with its CAS (`Gone`, `LockLost`);
//! 2. add a *pending copy* under the new id that names the old key
//!    (`IdTaken` if a live session holds it); a pending copy is no session
//!    by itself;
//! 3. **the commit**: replace the old item, compare-and-swap against step
//!    1, by a *tombstone* that names the new key (a mismatch deletes the
//!    copy and starts again; a timeout is resolved by reading the old key);
//! 4. rewrite the copy as a plain session item.
//!
//! Every read applies one rule: a tombstone is no session, and a pending
//! copy is the session only if its old key holds a tombstone naming it
//! (then the read finishes it, two more round trips, only in that state).
//! So whatever stops a move — a failed or timed-out step, the process
//! dying between steps — the session is under **exactly one** id, and
//! under the old one whenever `change_id` answered an error, unless the
//! commit's outcome could not be learnt (its timeout, then a failed read).
//! The table of every case is in the source, `src/store/change_id.rs`,
//! and `tests/faults.rs` checks each: a failure injected at each step on
//! two real servers, and every state a crash between steps leaves.
//!
//! [`MemcachedStore`]'s [`new_id_for`](sessionkit_core::SessionStore::new_id_for)
//! draws the new id on the old id's server (fresh ids until one's key
//! lands there: N draws on average for N servers of equal weight, a few
//! microseconds), so a move touches one server, and a server that fails
//! takes both ids or neither. A tombstone is a small item (its magic and
//! the new key's part) that lives as long as the moved session, so that a
//! pending copy always finds it unless memcached evicts it.
//!
//! **Security**: the drawn id is uniform among the fresh ids of that
//! server (rejection sampling), so it keeps 256 − log2(N) bits of entropy,
//! far above the 64 bits the
//! [OWASP Session Management Cheat Sheet](https://cheatsheetseries.owasp.org/cheatsheets/Session_Management_Cheat_Sheet.html#session-id-entropy)
//! asks for.
//!
//! # Connections
//!
//! The client is part of this crate. The store needs, together: the meta
//! protocol with CAS and TTL flags; several servers with a pool of connections each; timeouts on connect and
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
    DEFAULT_ITEM_SIZE_LIMIT, DEFAULT_PREFIX, ITEM_OVERHEAD, MemcachedStore, MemcachedStoreBuilder,
    Stats,
};
