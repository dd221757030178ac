//! Redis and Redis Cluster store for sessionkit: a read is one plain `GET`, a new session one `SET … NX`, every other write one atomic Lua script, each one round trip.
//!
//! Part of [sessionkit](https://docs.rs/sessionkit).
//!
//! [`RedisStore`] implements [`SessionStore`](sessionkit_core::SessionStore)
//! on [redis-rs](https://docs.rs/redis) 1.x (async, tokio). It passes the
//! whole [conformance suite](https://docs.rs/sessionkit-core/latest/sessionkit_core/testkit/index.html)
//! (feature `testkit` of `sessionkit-core`), on one server and on
//! a three-master cluster.
//!
//! ```no_run
//! # async fn demo() -> sessionkit_core::Result<()> {
//! use sessionkit_core::{SessionConfig, SessionFactory};
//! use sessionkit_redis::RedisStore;
//!
//! let store = RedisStore::builder()
//!     .prefix("shop:")
//!     .connect("redis://127.0.0.1:6379")
//!     .await?;
//! // With the facade: `sessionkit::SessionLayer::new(store)`.
//! let factory = SessionFactory::new(store, SessionConfig::default());
//! # let _ = factory;
//! # Ok(()) }
//! ```
//!
//! # Connecting
//!
//! - [`RedisStore::connect`] / [`RedisStoreBuilder::connect`] take a URL:
//!   `redis://[user:password@]host[:port][/db]`, `rediss://…` (TLS, feature
//!   `tls`), `unix:///path/redis.sock`. The connection is a redis-rs
//!   [`ConnectionManager`](redis::aio::ConnectionManager): one multiplexed
//!   connection shared by every clone of the store and every request,
//!   reconnected by itself. `connect` speaks RESP3 unless the URL's query
//!   says otherwise (`?protocol=resp2`), because over RESP3 the manager hears
//!   the server close the connection and reconnects at once, even when idle;
//!   over RESP2 the first operation after a server restart fails. The store
//!   needs Redis 6.2 or newer (`SET … PXAT`; RESP3 needs 6.0, the scripts
//!   5.0: they write after reading `TIME`, which relies on effect
//!   replication). Tested on Redis 7.0.
//! - [`RedisStoreBuilder::connect_client`] takes a redis-rs
//!   [`Client`](redis::Client) (for settings a URL cannot carry),
//!   [`RedisStoreBuilder::build_with_connection_manager`] an existing
//!   connection.
//! - Feature `cluster`: `RedisStoreBuilder::connect_cluster`,
//!   `connect_cluster_client` and `build_with_cluster_connection`; see
//!   [Redis Cluster](#redis-cluster).
//! - [`redis`] is re-exported, so these types come from the same version.
//!
//! | setting | default | what it does |
//! |---|---|---|
//! | [`prefix`](RedisStoreBuilder::prefix) | `sessionkit:` | start of every key; isolates apps sharing a Redis; never stripped |
//! | [`hash_ids`](RedisStoreBuilder::hash_ids) | `true` | keys carry SHA-256 of the id, not the id |
//! | [`connect_timeout`](RedisStoreBuilder::connect_timeout) | 2 s | bound of one connection attempt |
//! | [`response_timeout`](RedisStoreBuilder::response_timeout) | 2 s | bound of one reply (in a cluster: of the whole operation) |
//!
//! Features (all off by default): `cluster` (redis-rs `cluster-async`),
//! `tls` (redis-rs `tokio-rustls-comp`, with rustls' `ring` provider and the
//! system's root certificates; if the application enables another rustls
//! provider too, it must install one as the process default). redis-rs is
//! built without its default features: only `tokio-comp`, `script` and
//! `connection-manager`.
//!
//! # Data layout
//!
//! Layout 3. One Redis string per session, and one string per held lock,
//! next to it:
//!
//! ```text
//! sessionkit:{Oj36Z8OSiNl9mpA7-tkvyTpN08hAZQZtKMhnnTaAV-4}        STRING  the session, PXAT = its expiry
//! sessionkit:{Oj36Z8OSiNl9mpA7-tkvyTpN08hAZQZtKMhnnTaAV-4}:lock   STRING  the lock's token, PXAT = its expiry
//! ```
//!
//! The part in braces is the SHA-256 of the session id (of its 43-character
//! text, [`SessionId::hashed`](sessionkit_core::SessionId::hashed)) in
//! unpadded base64url, 43 characters, or, with
//! [`hash_ids(false)`](RedisStoreBuilder::hash_ids), `raw.` and the id
//! itself (`sessionkit:{raw.<id>}`): `.` is not in the base64url alphabet,
//! so the two namings can never name the same key, and a hashed key's name
//! is not a cookie for a store with hashing off. The braces make the part
//! the Redis Cluster *hash tag*: a session's data and lock always share a
//! slot, so one script can touch both. The prefix is part of every key and
//! is never stripped; it must not contain braces. [`RedisStore::keys_of`]
//! gives the two keys of an id.
//!
//! The session's value is its metadata, a `|`, then its entries:
//!
//! ```text
//! 19a7afd1e0019a7b6afb006ddd00:0|\x82\xa1n\xa11\xa4user\xa5"ada"
//! ```
//!
//! The metadata is four numbers of milliseconds in lowercase hex: the
//! creation time (Unix ms) and the expiry (Unix ms by Redis's clock,
//! except right after `create`; see [Clocks](#clocks)) in exactly 11 digits
//! each, zero-padded, then the idle lifetime and, after a `:`, the absolute
//! deadline (Unix ms; `0` for none), each in as many digits as it takes (1
//! to 16). For example `19a7afd1e0019a7b6afb006ddd00:0`: created at
//! 1,763,000,000,000 (`19a7afd1e00`, 2025-11-13 02:13:20 UTC), expiring two
//! hours later (`19a7b6afb00`), an idle lifetime of two hours (7,200,000,
//! `6ddd00`), no deadline; 30 bytes. The form is chosen for size, because
//! Redis keeps it in memory for every session: hex rather than decimal,
//! fixed widths rather than separators for the two times every session
//! has. Eleven hex digits hold every millisecond until the year 2527
//! (2^44 − 1 ms after the epoch): a later expiry is capped there, by
//! `create` and by the scripts alike (a session given a lifetime of
//! centuries lives until 2527), and `create` refuses a session whose
//! *creation* time is later — only a clock set that far ahead makes one —
//! with an [`ErrorKind::Codec`](sessionkit_core::ErrorKind::Codec) error
//! naming the store and the operation. The metadata never holds a `|`.
//!
//! The entries are a [MessagePack](https://msgpack.org) map from each
//! session key, as the application named it, to its value as the
//! [codec](sessionkit_core::codec) encoded it (JSON), byte for byte; keys
//! and values are MessagePack strings (`fixstr`, `str8/16/32`). That is the
//! format of the `cmsgpack` library bundled with Redis, so a script can
//! decode the entries, merge a write into them and encode them again,
//! atomically: concurrent requests that change different keys both
//! persist, as with a field per key. Above, `n` = `1` and `user` =
//! `"ada"`.
//!
//! Why one string rather than a hash with a field per key (layout 2, until
//! issue 18): a new session is then one plain `SET … NX PXAT`, where a hash
//! needed a script (no Redis command writes a hash with its expiry only if
//! the key is absent), and a read one `GET`. Measured on one Redis 7.0
//! (`tests/cost.rs`, below, both layouts in one sitting): a new session
//! costs Redis 1.0–1.1 µs of CPU instead of 3.6–3.7, a read 0.41–0.49
//! instead of 0.56–0.63; a write 8.4 instead of 7.1 (decoding and encoding
//! the entries; a session of a few small keys). End to end, on two cores,
//! requests that create a session went from 1.0 × tower-sessions' rate to
//! 1.16 × (BENCHMARKS.md, issue 18). What a field per key did better: a
//! write of one key to a very large session costs in proportion to the
//! session now.
//!
//! Layout 3 is not compatible with layout 2 (a hash) nor layout 1 (earlier
//! development versions): their sessions are
//! [foreign](#corrupt-or-foreign-data) to it. Users are signed out once.
//!
//! ## Memory per session
//!
//! A session holding one small integer takes about 213 bytes of Redis's
//! `used_memory` (Redis 7.0, jemalloc, 100,000 sessions, default prefix, a
//! two-hour idle lifetime; measured by `tests/cost.rs`; the hash of layout
//! 2 took 214). These are its allocations, each rounded up to jemalloc's
//! size class:
//!
//! | what | bytes used | allocated |
//! |---|---|---|
//! | the key: 56 characters with the default prefix, a 3-byte header, a NUL | 60 | 64 |
//! | its entry in the key space (key, value, next) | 24 | 32 |
//! | the value, one allocation while the string is at most 44 bytes: the object header 16, then the string's 3-byte header, 30 bytes of metadata, `|`, the map (1 byte, then `n` 2 and a 3-digit integer 4), a NUL | 58 | 64 |
//! | its entry in the table of expiring keys | 24 | 32 |
//! | the bucket arrays of both tables, 8 bytes per slot, slots the power of two above the number of keys (131,072 for 100,000) | 21 | 21 |
//! | total | | 213 |
//!
//! A value over 44 bytes (a few more entries) is a second allocation; each
//! session key adds its name and value plus 2–6 bytes. What is left above
//! the size of the data is mostly the key: with the default prefix it needs
//! 64 bytes (so does a raw key, 60 characters), and would need at most 44
//! characters to fit 48.
//!
//! # Round trips
//!
//! A read is **one plain `GET`**: one round trip and one command for
//! Redis, no script. Redis's native expiry, set to agree with the metadata
//! ([Expiry](#expiry)), has already removed an expired session, so reading
//! is all there is to do. A new session is **one plain `SET … NX PXAT`**.
//! Every other operation that must read and write atomically is one
//! `EVALSHA` of a Lua script (redis-rs
//! [`Script`](redis::Script): it sends `SCRIPT LOAD` and retries when the
//! server answers `NOSCRIPT`, which happens once per script after Redis
//! starts, costing two extra round trips that one time). Redis runs a
//! script atomically. Inside, time is Redis's own clock
//! (`redis.call('TIME')`), so app servers with drifting clocks agree on
//! expiry. The scripts read the session with one `GET`, and write it back
//! with its expiry in one `SET … PXAT`.
//!
//! | operation | keys | what it does | round trips |
//! |---|---|---|---|
//! | `load` | data | `GET`; no value is absent, a `WRONGTYPE` error or a value without valid metadata is [corrupt](#corrupt-or-foreign-data) | 1 |
//! | `load`, touch due | data | then, if the touch looks due ([`Touch::is_due`](sessionkit_core::record::Touch::is_due), by the [estimate of Redis's clock](#clocks)), the touch script: checks again that the session is live and the touch due by Redis's clock, moves `expires` to `min(now + ttl, deadline)` and writes the session back with its new expiry if that moves it; returns Redis's time and the metadata, and [`Loaded::touched`](sessionkit_core::store::Loaded) says whether it moved | 2 |
//! | `create` | data, lock | `SET data <session> NX PXAT <expires − 1>`: done when the key is free (the usual case: a fresh random id; an expiry in the past deletes a session born expired at once); otherwise a script answers `IdTaken` if the id is live, or deletes what is left under it (an expired or corrupt record, any lock) and writes the session | 1 (2 when the id is taken) |
//! | `apply` | data, lock | `Gone` unless live (never recreates); when fenced, `LockLost` unless the lock key holds the token, and deletes the lock if `release`; decodes the entries (or starts from none, on `clear`), sets and removes the delta's keys, the new idle lifetime, expiry refreshed, and writes the session back; an expiry brought forward brings a lock's with it; returns the metadata | 1 |
//! | `apply_and_read` | data, lock | `apply` fenced by the token, keeping the lock, and returns the session as written: the session handle hands a contended lock to the next request of its process with it | 1 |
//! | `change_id` | old data, old lock, new data, new lock | `Gone` unless the old id is live, `IdTaken` if the new one is, `LockLost` if fenced and the token does not own the lock; writes the session under the new key with its expiry refreshed and deletes the old, `RENAME`s the lock when fenced (`RENAME` keeps its TTL: same token, same expiry), otherwise deletes the old lock | 1 (cluster too: the new id is in the old one's [slot](#redis-cluster)) |
//! | `destroy` | data, lock | plain `DEL` of both | 1 |
//! | `lock` | data, lock | `Absent` (and no lock taken) unless live; `SET lock <fresh token> NX PXAT <now + ttl, at most the session's refreshed expiry>`, `Held` if that fails; once taken, refreshes the expiry as `apply` does (a session is not idle while a request holds its lock); returns the session, with the refreshed metadata | 1 |
//! | `renew_lock` | data, lock | if the session is live and the lock holds the token: `PEXPIREAT`s the lock (as `lock` does) and refreshes the session's expiry as `apply` does | 1 |
//! | `unlock` | lock | if the lock holds the token: `DEL` (compare-and-delete) | 1 |
//! | `set_owner`, `sessions_of`, `revoke`, `revoke_all` | data, the owner's index (and the keys it names) | see [Owners](#owners) | 1 (in a cluster: more, see there) |
//!
//! With the session layer's default touch rule (refresh when less than 75 %
//! of the idle lifetime is left), a session's reads find a touch due at
//! most once per quarter of its idle lifetime, so nearly every read is one
//! `GET`; `MemcachedStore` has the same shape ("load 1, +1 when a touch
//! is due"). The touch is a second round trip rather than part of the read
//! because a script that reads costs Redis ten times a plain `GET`
//! (see [Cost](#cost)), on every read, to save a round trip on few.
//!
//! The counts are measured, not assumed: the crate's tests watch the
//! server's `MONITOR` (which marks the commands a script runs as `lua`, so
//! only commands that came over the wire count) around each operation and
//! assert exactly the commands of the table: one `GET` per read, one
//! more `EVALSHA` when its touch is due, one `SET` per `create` of a free
//! id, one `EVALSHA` per other operation, one `DEL` for `destroy`. `INFO commandstats` counts the commands inside
//! scripts too; the tests use it to show that a read without a due touch
//! makes Redis run exactly one command.
//!
//! To count round trips in other crates' tests (through HTTP, say), wrap the
//! store in [`CountingStore`](https://docs.rs/sessionkit-core/latest/sessionkit_core/testkit/struct.CountingStore.html) (one
//! store call is one round trip, except a load whose touch is due), or, to have the server itself count, use the
//! workspace's test harness (the unpublished `sessionkit-test-servers`
//! crate, a dev-dependency that needs nothing but `std`, `redis-server` and
//! `redis-cli`):
//!
//! ```text
//! use sessionkit_test_servers::redis::RedisServer;
//!
//! let server = RedisServer::start();                   // free port, stopped on drop
//! let monitor = server.monitor();
//! let mark = monitor.mark();
//! /* … requests … */
//! let commands: Vec<String> = monitor.since(mark);      // e.g. ["get", "evalsha"]
//! ```
//!
//! ## Cost
//!
//! Redis CPU time per call, from `INFO commandstats` (`tests/cost.rs`:
//! Redis 7.0, 20,000 calls each on sessions holding one small integer, 16 in
//! flight; two runs on one machine, layout 2 measured right after on the
//! same machine; the numbers move by about 10 % between runs):
//!
//! | operation | commands Redis runs | µs | layout 2 (a hash), µs |
//! |---|---|--:|--:|
//! | `load` | `GET` | 0.41–0.49 | 0.56–0.63 |
//! | `load`, touch due | `GET`; `EVALSHA` (`TIME`, `GET`, `SET`) | 7.0–7.2 | 6.7–7.1 |
//! | `create` | `SET … NX PXAT` (when the id is taken: then `EVALSHA` with `TIME`, `GET`, `DEL`, `SET`) | 1.0–1.1 | 3.6–3.7 (a script) |
//! | `apply` | `EVALSHA` (`TIME`, `GET`, `SET`; `GET` of the lock when fenced: 10.8–10.9) | 8.4 | 7.0–7.1 (fenced 8.1–8.2) |
//! | `lock` | `EVALSHA` (`TIME`, `GET`, `SET` ×2; held: `TIME`, `GET`, `SET`, 6.5–6.8) | 9.5–10.0 | 9.8–9.9 (held 5.2–5.6) |
//! | `renew_lock` | `EVALSHA` (`TIME`, `GET` ×2, `PEXPIREAT`, `SET`) | 8.6–9.5 | 7.5–7.9 |
//! | `unlock` | `EVALSHA` (`GET`, `DEL`) | 2.5–2.8 | 2.2–2.3 |
//! | `change_id` | `EVALSHA` (`TIME`, `GET` ×2, `DEL` ×3, `SET`) | 10.1–10.9 | 10.4–10.9 |
//! | `destroy` | `DEL` | 0.7–0.9 | 0.7–0.8 |
//!
//! Each command a script runs costs Redis about as much as the same command
//! sent by a client, and running a script at all about 2 µs more; decoding
//! and encoding the entries (`cmsgpack`, in C) adds about 1 µs to a write
//! of a small session, and grows with the session. So each script runs only
//! the commands it needs and defines only the Lua helpers it uses, and the
//! refresh of the expiry is skipped when it would not move (at the absolute
//! deadline, or twice in one millisecond).
//!
//! ### Why `create` is a `SET … NX`
//!
//! A new session must never overwrite a live one, and must not take over
//! what an expired one left under its id (the record, if its key lost its
//! TTL, or a lock). `SET … NX` tests the data key and writes it with its
//! expiry in one command; it tests no other key, so the store keeps a lock
//! from outliving its session (see [Expiry](#expiry)), and a free data key
//! means a free id. Only when the `SET` finds the key taken does the
//! `CREATE` script run (a second round trip, practically never under a
//! fresh random id): it answers `IdTaken` for a live session and writes
//! nothing, and otherwise deletes whatever is there, lock included, before
//! writing. The options measured on Redis 7.0 by
//! `bench/redis-create-options.py` (`redis-cli --pipe` of 30,000 creates of
//! a one-entry session per option, three interleaved rounds; Redis's CPU
//! time per create, from `used_cpu_user + used_cpu_sys`, parsing included,
//! and the time `INFO commandstats` gives the commands sent):
//!
//! | option | Redis CPU µs per create | `commandstats` µs | keeps the contract |
//! |---|--:|--:|---|
//! | a script on a hash (layout 2: `EXISTS` of both keys, `HSET`, `PEXPIREAT`) | 3.9–4.1 | 3.0–3.1 | yes |
//! | the same as a Redis 7 function (`FCALL`) | 3.7–3.8 | 2.9–3.2 | yes, but needs Redis 7 and `FUNCTION LOAD` on every node |
//! | `MULTI`: the entries packed into the hash's metadata field with `HSETNX`, `PEXPIREAT … NX` | 2.0–4.1 | 1.2–2.0 | yes, with Redis 7, if a write unpacks the field first |
//! | `MULTI`: `HSETNX` of the metadata as a guard, `HSET`, `PEXPIREAT` | 2.6–2.8 | 1.4–1.5 | no: the `HSET` and `PEXPIREAT` run even when the guard fails, into a live session |
//! | no guard at all: `HSET`, `PEXPIREAT` | 1.8–1.9 | 1.0 | no |
//! | **one string: `SET … NX PXAT`** (layout 3) | 1.3–1.4 | 0.7–0.8 | yes, with locks bounded by their session |
//! | tower-sessions' `SET key value NX EXAT` (for comparison) | 1.1–1.2 | 0.6–0.7 | — |
//!
//! ## Clocks
//!
//! `create` stores the metadata it is given, as the contract requires (a
//! created session loads back exactly). The session handle computes it from
//! the app server's clock, so the first expiry of a new session follows
//! that clock; every later refresh (touch, apply, lock, renewal,
//! `change_id`) uses Redis's.
//!
//! Whether a read's touch is due is first decided in this process, without
//! asking Redis, from an estimate of Redis's clock: the store keeps the
//! offset between Redis's clock and a local monotonic clock, measured with
//! `TIME` when it connects (the midpoint of the round trip) and updated
//! from the time every touch script returns. A store built on a connection
//! handed to it ([`build_with_connection_manager`](RedisStoreBuilder::build_with_connection_manager),
//! `build_with_cluster_connection`) sends that `TIME` with its first read
//! that has a touch instead (one more round trip, once). The estimate is off
//! by at most half a round trip plus what Redis's clock did since (a step
//! of the app server's wall clock does not move it). It only decides
//! whether to run the touch script, which decides by Redis's clock: an
//! estimate slightly late delays a due touch by as much (a later read
//! catches it); one slightly early costs a round trip that writes nothing.
//! In a cluster the offset is learned from whichever node answered; keep the
//! nodes' clocks in sync (NTP).
//!
//! ## Expiry
//!
//! Redis's native expiry decides. Every write sets the key's expiry
//! (`SET … PXAT`) to `expires - 1`: Redis deletes a key once its clock is
//! *past* the expiry time, and the contract says a session is expired once
//! the clock *reaches* `expires` (`now >= expires`), so the two agree to the
//! millisecond, and a read needs no clock at all: a key that exists is a
//! live session. (Redis refuses to set an expiry time that is not in the
//! future and deletes the key instead, so a session written with exactly
//! one millisecond left disappears a millisecond early.) The scripts that
//! need liveness (`apply`, `lock`, `renew_lock`, `change_id`, `create`, the
//! touch) also compare the metadata's `expires` with Redis's `TIME`, which
//! agrees with the native expiry, and covers a key whose expiry someone
//! removed by hand.
//!
//! Expired sessions take no memory and need no sweep
//! ([`ExpiredDeletion`](sessionkit_core::store::ExpiredDeletion) is not
//! implemented: there is nothing to do). Locks expire by their own expiry,
//! and **never outlive their session**: taking or renewing a lock sets its
//! expiry to `now + ttl` but never past the session's own, and a write that
//! brings the session's expiry forward (a shorter lifetime, a deadline)
//! brings a held lock's with it; a touch, `lock`, `renew_lock` or `change_id`
//! never brings the session's expiry forward (a clock that stepped back leaves it as it
//! was). So a new session, which `create` writes with a `SET … NX` of the
//! data key alone, finds no lock under its id. (A lock left without its
//! session some other way — keys evicted by a `maxmemory` policy, a key
//! deleted by hand — locks nothing, since every operation checks the
//! session first, and expires with its TTL; `create` never reuses the id
//! of a session that is gone.) One consequence: a lock lasts at most the
//! session's idle lifetime from when it was taken or last renewed, even
//! if other requests keep the session alive meanwhile; with an idle
//! lifetime shorter than the lock's
//! [`renew_every`](sessionkit_core::LockConfig::renew_every), a long
//! locked request can lose its lock (its commit then fails with
//! `LockLost`, writing nothing). Keep `renew_every` below the idle
//! lifetime. Lock TTLs and the idle lifetimes `apply` sets are capped
//! at 2^52 ms (about 142,000 years), below where Lua's numbers stop being
//! exact; the expiries the scripts compute at 2^44 − 1 ms after the epoch,
//! the latest time the metadata holds (in the year 2527; see
//! [Data layout](#data-layout)).
//!
//! ## Corrupt or foreign data
//!
//! A key under the prefix that is not a session of layout 3 (another type —
//! which includes the hashes of this crate's layouts 1 and 2 —, a string
//! without `|`, metadata that does not parse)
//! is treated as absent by every operation, logged at `warn` with
//! `tracing` (with [`SessionId::short_hash`](sessionkit_core::SessionId::short_hash),
//! never the id), and replaced by a `create` under its id. The scripts (a
//! Lua pattern) and `load` (Rust) parse the metadata by the same strict
//! grammar (exact widths, lowercase hex digits only, no sign, no `0x`, at
//! most 16 digits so no overflow), tested with the same values, garbage and
//! valid, so they agree on what is corrupt and on what the numbers are. A
//! session with valid metadata but entries that are not a MessagePack map
//! of strings, or a key that is not UTF-8 (this crate never writes either),
//! is found out by the reads: `load`, `lock` and `apply_and_read` then
//! delete it (one more round trip, on such data only) and answer absent.
//! The scripts that decode the entries answer `Gone` for what `cmsgpack`
//! cannot decode, and Rust refuses the same formats (`bin`, for one). Nothing
//! in Redis can make the store panic.
//!
//! # Locks
//!
//! The store only tries once ([`SessionStore::lock`](sessionkit_core::SessionStore::lock)
//! answers `Acquired`, `Held` or `Absent`); the session handle in
//! `sessionkit-core` waits, backs off with jitter, renews the lock while it
//! is held and releases it, as [`LockConfig`](sessionkit_core::LockConfig)
//! says. Tokens are 128 random bits, stored as 32 hex digits. Writes under a
//! lock are fenced: the script checks the token in the same atomic step.
//!
//! The settings, in [`LockConfig`](sessionkit_core::LockConfig) and
//! [`LockPolicy`](sessionkit_core::LockPolicy):
//!
//! | setting | default | what it does |
//! |---|---|---|
//! | [`ttl`](sessionkit_core::LockConfig::ttl) | 30 s | how long the lock key lives without renewal: a holder that dies blocks its session at most this long |
//! | [`renew_every`](sessionkit_core::LockConfig::renew_every) | 10 s | how often a held lock's expiry is pushed back |
//! | [`wait`](sessionkit_core::LockConfig::wait) | 5 s | how long a request waits for the lock in all, then `LockTimeout` |
//! | [`max_backoff`](sessionkit_core::LockConfig::max_backoff) | 50 ms | the longest pause between attempts (pauses grow from `initial_backoff`, 2 ms, with jitter) |
//! | [`LockPolicy::WholeRequest`](sessionkit_core::LockPolicy::WholeRequest) | off (locks are taken on demand) | lock every session on first access, for the whole request |
//!
//! ```
//! use std::time::Duration;
//! use sessionkit_core::LockConfig;
//!
//! // A 60 s lock, and up to 100 attempts 50 ms apart.
//! let mut lock = LockConfig::default()
//!     .with_ttl(Duration::from_secs(60))
//!     .with_wait(Duration::from_micros(50_000) * 100);
//! lock.max_backoff = Duration::from_micros(50_000);
//! assert!(lock.validate().is_ok());
//! ```
//!
//! A held lock is renewed in the background, so a long request does not
//! lose it silently, and a commit after the lock was lost anyway writes
//! nothing and fails with `LockLost`. (`docs/coming-from-php.md` in the
//! repository maps PHP session libraries' Redis lock options onto these.)
//!
//! # Owners
//!
//! [`RedisStore`] implements [`OwnerIndex`](sessionkit_core::owner::OwnerIndex):
//! `Session::set_owner` and the `Owners` registry (list, count, revoke,
//! revoke all, a cap per owner) work on it, on one server and in a
//! cluster. Each owner has one more key, a hash from each session's
//! handle to its data key:
//!
//! ```text
//! sessionkit:{o.<SHA-1 of the owner as stored, 40 hex>}   HASH   <handle, 32 hex> → sessionkit:{<tag>}
//! ```
//!
//! The owner "as stored" is its JSON text, what the session's reserved
//! owner entry holds (the session carries its owner, handle and device
//! label in the fields `\x01owner`, `\x01handle`, `\x01device`, so they
//! move and end with it). The owner is hashed because it is free text
//! (braces would move the hash tag); SHA-1, because the scripts compute
//! the same name with `redis.sha1hex`, and it is no security boundary:
//! every entry is believed only when the session it names is live *and*
//! still carries that owner and handle, so owners whose names collided
//! would share a hash, never sessions. The index holds data keys, which
//! hold the SHA-256 of the id by default, never an id (the test that scans
//! Redis for ids owns sessions too).
//!
//! An entry whose session ended (destroyed, expired, evicted, given another
//! owner) is stale; it is dropped by the next operation on that owner's
//! index, every one of which checks each entry. So the index never holds
//! more than the owner's live sessions plus those that ended since its last
//! use. It has no expiry of its own (a session without an absolute
//! deadline lives on through its touches); an index all of whose sessions
//! ended is emptied by its next use, and Redis deletes an empty hash.
//!
//! **On one server**, each operation is one script, atomic, one round
//! trip: `set_owner` (checks the owner's entries, enforces the cap —
//! refusing, or deleting the least recently used others' data and locks —
//! writes the owner fields and the entry), `sessions_of`, `revoke`,
//! `revoke_all`. `change_id` of an owned session moves the entry inside its
//! own script (it decodes the entries to find the owner). These scripts touch the
//! data keys the index names, which they cannot declare in advance; one
//! server allows that, a cluster refuses it. Costs are in proportion to the
//! owner's entries: the scripts read the index and one `GET` (decoded)
//! per entry.
//!
//! **In a cluster**, the index lives in the owner's own slot, so no script
//! can touch it and a session together. Each step is atomic on its slot;
//! the steps together are not:
//!
//! | operation | steps (round trips) | what holds |
//! |---|---|---|
//! | `set_owner` | with a cap: the owner's list (below); then a script on the index: count the entries, refuse or mark the least recently used others revoked, add this session's entry with a claim flag (`<handle>:claim` → the time; an unfinished claim of the same session under another handle is dropped); then a script on the session's slot: the owner fields; then the ended sessions, each on its slot; then a script on the index that removes the flag and reads the entry back | the cap is atomic on the index: two simultaneous logins cannot both slip under it (the entries counted are those present, live or not yet checked, so a stale entry can make a cap refuse until the next list drops it — the list runs first for this reason). A later login's cap or a revocation may mark this login's entry before its session carries the owner, when ending the session finds it not yet the owner's; the last step sees the mark and the login ends its own session (it reports success: it was set, then ended, as on one server). An entry found gone there (a login that stalled for over a minute between its steps) ends the session too, and the login fails as "session gone": an owned session never lives on unlisted. A claim on a handle that a revocation has marked is refused, and that session ended |
//! | `sessions_of`, `count` | `HGETALL` of the index, then one script per entry on its slot, all at once; then one script dropping the stale entries, each only if unchanged since read | every session listed was live and the owner's when read; an entry with a claim flag younger than a minute is a login between its steps: kept without asking its session, not listed (after a minute it is checked like any other: a login that stopped after writing the owner fields is listed, one that stopped before is dropped) |
//! | `revoke`, `revoke_all` | a script marking the entries revoked (`}revoked <ms> <data key>`: not a key, and naming the session), then one script per marked session on its slot, at once, deleting it if it is still the owner's | a session is ended unless a request's `change_id` moved it in between; then that `change_id`'s second step finds the mark and deletes the session under its new id, and the request ends as "session gone". If ending a session fails (a node failing over), the mark stays: a retry of the revocation ends it again (every revocation ends the sessions of marks under a minute old again: one script each, nothing to do when they ended), and so does the first list after the mark's minute, before it drops the mark |
//! | `change_id` of an owned session | the script on the session's slot (as ever), which also leaves a marker there for a minute (`<old data key>:moved` → the new key); then a script on the index pointing the entry at the new key — also when a list dropped it in between, never over a revocation mark | between the two steps a list does not show the session (its old key is gone) but keeps the entry, which the marker vouches for, so a capped login counts it and a revocation marks it (the second step then ends the session under its new id); a crash between them leaves the entry pointing at nothing: dropped by the first list after the marker's minute, and the session is unlisted until its owner is set again |
//!
//! Revocation marks are dropped by the first list after a minute. A login
//! without a cap does not check the owner's entries unless the index holds
//! more than 16, so logins stay three round trips; stale entries are then
//! bounded by 16 or by what ended since the owner's last list.
//!
//! Two logins of one session at once (a login form sent twice), each with
//! a handle it drew: the first to write the owner fields keeps its handle,
//! the other's claim is dropped and it reports success (its request saw
//! its own handle; the next one sees the stored one). On one server the
//! second login's script replaces the first's handle instead.
//!
//! # Redis Cluster
//!
//! With feature `cluster`, the same store runs on a Redis Cluster through
//! redis-rs' `ClusterConnection`. A session's two keys share a hash tag, so
//! every operation runs as on a single server (a read is one `GET`, a new
//! session one `SET`, the rest one script), on one node, with the same guarantees: `change_id`
//! too, because the store picks the new id.
//!
//! ## `change_id`: the new id is drawn in the old id's slot
//!
//! A script may only touch keys of one slot, and two random ids hash to two
//! slots, almost always on two nodes. Moving a session between nodes takes
//! two writes, and a failure between them (a node that refuses writes or
//! does not answer in time, the process dying) leaves the session under
//! neither id or under both. Versions up to 0.1 moved it so (delete on the
//! old slot, then write on the new one) and lost the session when the
//! second write failed.
//!
//! So the store does not move sessions between slots. Its
//! [`new_id_for`](sessionkit_core::SessionStore::new_id_for), where the
//! session handle takes the new id of every `regenerate`, draws fresh
//! random ids until one's keys hash to the slot of the old id's keys (the
//! slot of the hash tag `<tag>`: its CRC16 modulo 16,384, computed in this
//! process without allocating, and tested against the cluster's own
//! `CLUSTER KEYSLOT`). The single-server `change_id` script then moves the
//! session on the node that holds it: **atomic, one round trip**, with the
//! guarantees of one server. A failed or timed-out `change_id` leaves the
//! session under the old id (a script runs whole or not at all; one whose
//! reply was lost may have moved it, to the new id alone). A `change_id`
//! onto an id of another slot is refused before anything is sent, with
//! [`ErrorKind::InvalidId`](sessionkit_core::ErrorKind::InvalidId) and
//! nothing changed.
//!
//! The price is CPU in the request that regenerates: one fresh id in 16,384
//! falls in a given slot, so a regenerate draws 16,384 ids on average (the
//! count is geometric: median about 11,400, one regenerate in a hundred
//! above 75,000), each an id from the buffered CSPRNG, its SHA-256 (with
//! hashed ids) and a CRC16 of 43 bytes. Measured (`keys.rs`,
//! `drawing_an_id_in_a_slot_costs`, release build, 2,000 regenerates, on a
//! two-core machine shared with other builds, so an upper bound): 15,600
//! draws and **5.6 ms of CPU per regenerate** on average with hashed ids
//! (360 ns per draw; median 10,800 draws, 1 % above 70,000, about 25 ms),
//! 4.1 ms with [`hash_ids(false)`](RedisStoreBuilder::hash_ids). The
//! drawing runs on the thread of the request that regenerates, without
//! yielding. Only `regenerate` pays it (usually at login: at 100 logins a
//! second, about half a core), never reads or writes; on a single server
//! `new_id_for` is one [`SessionId::generate`](sessionkit_core::SessionId::generate).
//! A key layout whose hash tag the store chooses would make it free, at the
//! price of a new data layout; this one keeps every stored session valid.
//!
//! A session keeps the slot of its first id for life; sessions still spread
//! over the nodes, because first ids are random. Resharding moves a slot
//! with all its keys, so it changes nothing here.
//!
//! ### Security
//!
//! The new id is a fresh 256-bit id from the operating system's CSPRNG,
//! kept only if it falls in the slot (rejection sampling), so it is uniform
//! among the 2^256 / 2^14 = 2^242 ids of that slot: 242 bits of entropy,
//! far above the 64 bits the
//! [OWASP Session Management Cheat Sheet](https://cheatsheetseries.owasp.org/cheatsheets/Session_Management_Cheat_Sheet.html#session-id-entropy)
//! asks for. Knowing the slot tells an attacker nothing usable: the id
//! still has to be guessed among 2^242, and the slot of a hashed key is the
//! slot of a SHA-256 of the id, which leaks none of it.
//!
//! ## What else differs from one server
//!
//! - Expiry is computed by each node's clock; keep the nodes' clocks in sync
//!   (NTP), as for any cluster.
//! - redis-rs retries a cluster request after connection errors and
//!   redirects (`MOVED`, `ASK`), within [`response_timeout`](RedisStoreBuilder::response_timeout).
//!   A script whose reply was lost may so run twice: a repeated `apply` is
//!   harmless (the same delta again), a repeated `create` answers `IdTaken`
//!   to its own session and a repeated `lock` answers `Held` to itself (the
//!   lock then lapses after its TTL). The single-server connection retries
//!   only a connection that was refused, when nothing was sent.
//! - The cluster connection speaks RESP2 by default (pass a
//!   `redis::cluster::ClusterClient` built with
//!   `use_protocol` to change it).
//!
//! # Failures
//!
//! Every Redis failure (unreachable, timed out, an error reply) is an
//! [`ErrorKind::StoreUnavailable`](sessionkit_core::ErrorKind::StoreUnavailable)
//! error naming the store (`"redis"`) and the operation (`"load"`,
//! `"apply"`, …), with the redis-rs error as its source; the facade answers
//! such requests with 503. Measured in the crate's tests (`tests/faults.rs`,
//! 500 ms timeouts): with Redis killed, operations fail within about 150 ms
//! (the refused reconnect attempts), never hang, never panic; a Redis that
//! accepts connections but does not answer fails them after the response
//! timeout; after Redis comes back on the same address the same store works
//! again within about 60 ms, without being rebuilt, also when the restart
//! happened while it was idle. Reconnecting is bounded on purpose (two
//! attempts 50–250 ms apart, each within the connect timeout), so a
//! request never waits long behind a dead server; every failed operation
//! starts the next attempt.
//!
//! An operation that timed out may or may not have run on the server: a
//! timed-out `apply` may have been applied.
//!
//! # What is not guaranteed
//!
//! - **Durability** is Redis's: without persistence (RDB snapshots or an
//!   AOF with `appendfsync`), a restart loses every session and lock, and
//!   users are signed out. With it, what was written after the last
//!   snapshot or fsync is lost.
//! - **Failover**: replication is asynchronous. After a failover to a
//!   replica, the latest writes and locks may be missing; a lock taken just
//!   before may be granted again, so for that moment two requests can hold
//!   it. Fencing protects against a lock that expired or was taken on the
//!   same primary, not against a lost primary (no `WAIT`, no Redlock).
//! - **Cost of large sessions**: a command or script blocks Redis while it
//!   runs, for a time proportional to what it touches. Every operation
//!   reads the whole session, and every write decodes and encodes all its
//!   entries (a write of one key to a session of thousands costs in
//!   proportion to the thousands). Sessions of thousands of keys work (they
//!   are tested) but each load and write copies them all.
//! - **Counting and listing** all sessions are not offered: ids are hashed
//!   at rest and a list of live bearer tokens is a liability. An owner's
//!   sessions are listed by [handle](#owners), never by id.
//! - Hashing at rest hides the ids from whoever reads the data, not the
//!   data itself: use TLS and Redis ACLs for that. With
//!   [`hash_ids(false)`](RedisStoreBuilder::hash_ids), every key name holds
//!   a live id. (Switching hashing off on a prefix that holds hashed
//!   sessions orphans them but exposes nothing: the raw naming,
//!   `{raw.<id>}`, never matches a hashed key.)
#![deny(unreachable_pub)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod builder;
mod clock;
mod connection;
mod keys;
mod reply;
#[macro_use]
mod scripts;
mod store;

pub use builder::RedisStoreBuilder;
/// The redis-rs crate this store is built on, for building clients and
/// connections of the same version.
pub use redis;
pub use store::RedisStore;
