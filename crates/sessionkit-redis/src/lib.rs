//! Redis and Redis Cluster store for sessionkit: reads are one plain `HGETALL`, every write one atomic Lua script, each one round trip.
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
//!   over RESP2 the first operation after a server restart fails. RESP3 needs
//!   Redis 6.0 or newer; the scripts need 5.0 (they write after reading
//!   `TIME`, which relies on effect replication). Tested on Redis 7.0.
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
//! Layout 2. One Redis hash per session, and one string per held lock,
//! next to it:
//!
//! ```text
//! sessionkit:{Oj36Z8OSiNl9mpA7-tkvyTpN08hAZQZtKMhnnTaAV-4}        HASH    the session
//! sessionkit:{Oj36Z8OSiNl9mpA7-tkvyTpN08hAZQZtKMhnnTaAV-4}:lock   STRING  the lock's token, PX = lock TTL
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
//! The fields of the hash:
//!
//! | field | value |
//! |---|---|
//! | each session key, as the application named it | the value as the [codec](sessionkit_core::codec) encoded it (JSON), byte for byte |
//! | `\xff` (the single byte 0xFF) | the metadata: `<created><expires><ttl>:<deadline>` |
//!
//! The metadata is four numbers of milliseconds in lowercase hex: the
//! creation time (Unix ms) and the expiry (Unix ms by Redis's clock,
//! except right after `create`; see [Clocks](#clocks)) in exactly 11 digits
//! each, zero-padded, then the idle lifetime and, after a `:`, the absolute
//! deadline (Unix ms; `0` for none), each in as many digits as it takes (1
//! to 16). For example `19a7afd1e0019a7b6afb006ddd00:0`: created at
//! 1,763,000,000,000 (`19a7afd1e00`, 2025-11-13 02:13:20 UTC), expiring two
//! hours later (`19a7b6afb00`), an idle lifetime of two hours (7,200,000,
//! `6ddd00`), no deadline; 30 bytes, where the decimal numbers with
//! separators of earlier development versions took 39.
//!
//! The form is chosen for size, because Redis keeps it in memory for every
//! session: hex rather than decimal, and fixed widths rather than
//! separators for the two times every session has. One field rather than
//! one per number, because every field costs its own overhead; and `load`
//! has to read only one field to know the session. Eleven hex digits hold
//! every millisecond until the year 2527 (2^44 − 1 ms after the epoch):
//! a later expiry is capped there, by `create` and by the scripts alike (a
//! session given a lifetime of centuries lives until 2527), and `create`
//! refuses a session whose *creation* time is later — only a clock set that
//! far ahead makes one — with an
//! [`ErrorKind::Codec`](sessionkit_core::ErrorKind::Codec) error naming the
//! store and the operation. The value
//! carries no version: the field name says what it is, and a later form of
//! the metadata would take another field name.
//!
//! The byte 0xFF never occurs in UTF-8, so no session key (a Rust `&str`)
//! can collide with the metadata, and session keys need no prefix of their
//! own: `HGETALL` shows them as the application named them (`redis-cli`
//! prints the metadata field as `"\xff"`). Other field names that start with
//! 0xFF are reserved and ignored when read. One field per key is what lets a
//! delta change only its keys (`HSET`/`HDEL`), so concurrent requests that
//! change different keys both persist.
//!
//! Layout 2 is not compatible with layout 1 (earlier development versions
//! of this crate: 64 hex digits in the key, five `\xff…` fields), nor with
//! the first development versions of layout 2 (decimal metadata,
//! `2 <created> <ttl> <deadline> <expires>`): sessions stored by them are
//! not found under the new keys, or their hash is
//! [corrupt](#corrupt-or-foreign-data). Users are signed out once.
//!
//! ## Memory per session
//!
//! A session holding one small integer takes about 214 bytes of Redis's
//! `used_memory` (Redis 7.0, jemalloc, 100,000 sessions, default prefix, a
//! two-hour idle lifetime; measured by `tests/cost.rs`; 230 with the
//! decimal metadata). These are its allocations, each rounded up to
//! jemalloc's size class:
//!
//! | what | bytes used | allocated |
//! |---|---|---|
//! | the key: 56 characters with the default prefix, a 3-byte header, a NUL | 60 | 64 |
//! | its entry in the key space (key, value, next) | 24 | 32 |
//! | the value's object header | 16 | 16 |
//! | the hash, as a listpack: 7 bytes of header and end, then per element a 1–2 byte header, the content and a 1-byte length: `\xff` 3, the metadata 32, `n` 3, the integer 3 | 48 | 48 |
//! | its entry in the table of expiring keys | 24 | 32 |
//! | the bucket arrays of both tables, 8 bytes per slot, slots the power of two above the number of keys (131,072 for 100,000) | 21 | 21 |
//! | total | | 213 |
//!
//! The last byte of the measurement is not the sessions': the server's
//! other allocations grow a little while it runs (loading the same keys
//! without the store measures 213.2–213.7). The listpack of such a session
//! is 47 or 48 bytes (an integer up to 127 takes 2, up to 4,095 3): a byte
//! or two more (a longer key name, a larger integer, an idle lifetime past
//! 0xffffff ms or 4.6 hours, any deadline) takes it to the next class, 64.
//! What is left above the size of the data is mostly the key: with the
//! default prefix it needs 64 bytes (so does a raw key, 60 characters),
//! and would need at most 44 characters to fit 48. Each session key adds its name and value plus 2–3 bytes while
//! the hash stays a listpack (up to 128 fields of at most 64 bytes, Redis's
//! defaults).
//!
//! # Round trips
//!
//! A read is **one plain `HGETALL`**: one round trip and one command for
//! Redis, no script. Redis's native expiry, set to agree with the metadata
//! ([Expiry](#expiry)), has already removed an expired session, so reading
//! is all there is to do. Every operation that must read and write
//! atomically is one `EVALSHA` of a Lua script (redis-rs
//! [`Script`](redis::Script): it sends `SCRIPT LOAD` and retries when the
//! server answers `NOSCRIPT`, which happens once per script after Redis
//! starts, costing two extra round trips that one time). Redis runs a
//! script atomically. Inside, time is Redis's own clock
//! (`redis.call('TIME')`), so app servers with drifting clocks agree on
//! expiry. The scripts read the metadata with one `HGET` of the `\xff`
//! field.
//!
//! | operation | keys | what it does | round trips |
//! |---|---|---|---|
//! | `load` | data | `HGETALL`; an empty reply is absent, a `WRONGTYPE` error or a hash without valid metadata is [corrupt](#corrupt-or-foreign-data) | 1 |
//! | `load`, touch due | data | then, if the touch looks due ([`Touch::is_due`](sessionkit_core::record::Touch::is_due), by the [estimate of Redis's clock](#clocks)), the touch script: checks again that the session is live and the touch due by Redis's clock, moves `expires` to `min(now + ttl, deadline)` and `PEXPIREAT`s the key if that moves it; returns Redis's time and the metadata, and [`Loaded::touched`](sessionkit_core::store::Loaded) says whether it moved | 2 |
//! | `create` | data, lock | when neither key exists (the usual case: a fresh random id) writes all fields with native expiry, without reading the clock (a `PEXPIREAT` in the past deletes a session born expired at once); otherwise answers `IdTaken` if the id is live, or deletes what is left under it (an expired or corrupt record, the lock of an expired session) and writes all fields | 1 |
//! | `apply` | data, lock | `Gone` unless live (never recreates); when fenced, `LockLost` unless the lock key holds the token, and deletes the lock if `release`; `clear` (drop the hash, rewrite the metadata), `HSET`/`HDEL` of the delta's keys, the new idle lifetime, expiry refreshed; returns the metadata | 1 |
//! | `apply_and_read` | data, lock | `apply` fenced by the token, keeping the lock, then `HGETALL` in the same script: the session handle hands a contended lock to the next request of its process with it | 1 |
//! | `change_id` | old data, old lock, new data, new lock | `Gone` unless the old id is live, `IdTaken` if the new one is, `LockLost` if fenced and the token does not own the lock; `RENAME`s the hash, and the lock when fenced (`RENAME` keeps its TTL: same token, same expiry), otherwise deletes the old lock; refreshes the expiry | 1 (cluster too: the new id is in the old one's [slot](#redis-cluster)) |
//! | `destroy` | data, lock | plain `DEL` of both | 1 |
//! | `lock` | data, lock | `Absent` (and no lock taken) unless live; `SET lock <fresh token> NX PX ttl`, `Held` if that fails; once taken, refreshes the expiry as `apply` does (a session is not idle while a request holds its lock); returns `HGETALL`, with the refreshed metadata | 1 |
//! | `renew_lock` | data, lock | if the session is live and the lock holds the token: `PEXPIRE`s the lock and refreshes the session's expiry as `apply` does | 1 |
//! | `unlock` | lock | if the lock holds the token: `DEL` (compare-and-delete) | 1 |
//! | `set_owner`, `sessions_of`, `revoke`, `revoke_all` | data, the owner's index (and the keys it names) | see [Owners](#owners) | 1 (in a cluster: more, see there) |
//!
//! With the session layer's default touch rule (refresh when less than 75 %
//! of the idle lifetime is left), a session's reads find a touch due at
//! most once per quarter of its idle lifetime, so nearly every read is one
//! `HGETALL`; `MemcachedStore` has the same shape ("load 1, +1 when a touch
//! is due"). The touch is a second round trip rather than part of the read
//! because a script that reads costs Redis ten times a plain `HGETALL`
//! (see [Cost](#cost)), on every read, to save a round trip on few.
//!
//! The counts are measured, not assumed: the crate's tests watch the
//! server's `MONITOR` (which marks the commands a script runs as `lua`, so
//! only commands that came over the wire count) around each operation and
//! assert exactly the commands of the table: one `HGETALL` per read, one
//! more `EVALSHA` when its touch is due, one `EVALSHA` per other operation,
//! one `DEL` for `destroy`. `INFO commandstats` counts the commands inside
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
//! let commands: Vec<String> = monitor.since(mark);      // e.g. ["hgetall", "evalsha"]
//! ```
//!
//! ## Cost
//!
//! Redis CPU time per call, from `INFO commandstats` (`tests/cost.rs`:
//! Redis 7.0, 20,000 calls each on sessions holding one small integer, 16 in
//! flight; the median of three runs on one machine; the numbers move by
//! about 10 % between runs on a shared machine):
//!
//! | operation | commands Redis runs | µs |
//! |---|---|---|
//! | `load` | `HGETALL` | 1.2 |
//! | `load`, touch due | `HGETALL`; `EVALSHA` (`TIME`, `HGET`, `HSET`, `PEXPIREAT`) | 12.5 |
//! | `create` | `EVALSHA` (`EXISTS`, `HSET`, `PEXPIREAT`; when something is under the id: `EXISTS`, `TIME`, `HGET`, `DEL` ×2, `HSET`, `PEXPIREAT`) | 4.2 (measured later than the other rows, on the same machine: 5.1 with the script's helpers defined before its fast path, as before) |
//! | `apply` | `EVALSHA` (`TIME`, `HGET`, `HSET`, `PEXPIREAT`; `GET` when fenced: 12.4) | 10.9 |
//! | `lock` | `EVALSHA` (`TIME`, `HGET`, `SET`, `HSET`, `PEXPIREAT`, `HGETALL`; held: `TIME`, `HGET`, `SET`, 7.7) | 16.0 |
//! | `renew_lock` | `EVALSHA` (`TIME`, `HGET`, `GET`, `PEXPIRE`, `HSET`, `PEXPIREAT`) | 11.4 |
//! | `unlock` | `EVALSHA` (`GET`, `DEL`) | 3.5 |
//! | `change_id` | `EVALSHA` (`TIME`, `HGET` ×2, `DEL` ×2, `RENAME`, `HSET`, `PEXPIREAT`) | 14.8 |
//! | `destroy` | `DEL` | 1.2 |
//!
//! Refreshing the expiry (`HSET` of the metadata and `PEXPIREAT`) is what
//! makes `lock` and `renew_lock` cost about 4 µs more than they would
//! without; it is skipped when the expiry would not move (at the absolute
//! deadline, or twice in one millisecond).
//!
//! Each command a script runs costs Redis about as much as the same command
//! sent by a client, and running a script at all about 2 µs more (measured
//! for `create`, below); so each script runs only the commands it needs and
//! defines only the Lua helpers it uses.
//!
//! ### Why `create` is a script
//!
//! A new session must never overwrite a live one, and must not take over
//! what an expired one left under its id (the record, if its key lost its
//! TTL, or a lock that outlived it): a test of both keys and a write of the
//! hash with its expiry, atomically. The options, measured on Redis 7.0 by
//! `bench/redis-create-options.py` (`redis-cli --pipe` of 30,000 creates of
//! a one-entry session per option, three interleaved rounds on a shared
//! two-core machine; Redis's CPU time per create, from `used_cpu_user +
//! used_cpu_sys`, parsing included, and the time `INFO commandstats` gives
//! the commands sent, a script's commands included; an earlier session on
//! the same machine, busier, measured 5.4–6.5 µs of CPU before and 4.8–5.0
//! now, in the same order):
//!
//! | option | Redis CPU µs per create | `commandstats` µs | keeps the contract |
//! |---|--:|--:|---|
//! | the script before (helpers defined, then `EXISTS`, `HSET`, `PEXPIREAT`) | 4.3–4.5 | 3.8–4.5 | yes |
//! | **the script now**: fast path first, nothing defined before it | 3.7–3.8 | 3.1–4.1 | yes |
//! | a fast-path-only script, a second script when the id is occupied | 3.7–3.9 | 3.1–4.5 | yes, in two round trips when occupied |
//! | the same body as a Redis 7 function (`FCALL`) | 3.5–3.6 | 3.0–3.4 | yes, but needs Redis 7 and `FUNCTION LOAD` on every node |
//! | `MULTI`: `HSET` a staging key, `PEXPIREAT` it, `RENAMENX` it onto the data key, `DEL` it | 3.2–3.4 | 2.2–2.4 | no: cannot test the lock key in the same step |
//! | `MULTI`: `HSETNX` of the metadata as a guard, `HSET`, `PEXPIREAT` | 2.4–2.7 | 1.5–2.3 | no: the `HSET` and `PEXPIREAT` run even when the guard fails, into a live session |
//! | no guard at all: `HSET`, `PEXPIREAT` | 1.6 | 0.9–1.1 | no |
//! | tower-sessions' `SET key value NX EXAT` (a string, for comparison) | 1.0–1.1 | 0.6–0.7 | — |
//!
//! Calling a script at all costs Redis about 2 µs (the script's
//! lookup, its `KEYS`/`ARGV` tables, each `redis.call` turned into a
//! command and its reply back); the commands inside cost what they cost
//! from a client. A transaction cannot make a write depend on a test, and
//! no single Redis 7 command writes a hash with its expiry only if two keys
//! are absent, so the script stays, with the fast path first. What would
//! reach a plain `SET` is another layout for new sessions (one string key,
//! `SET … NX PXAT`, turned into a hash on its first write), which every
//! other script would then have to read in both shapes.
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
//! Redis's native expiry decides. Every script that sets an expiry sets the
//! key's `PEXPIREAT` to `expires - 1`: Redis deletes a key once its clock is
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
//! implemented: there is nothing to do). Locks expire by their own `PX`. A
//! lock can outlive the session it locks; it then locks nothing (every
//! operation checks the session first) and `create` deletes it when the id
//! is used again. Lock TTLs and the idle lifetimes `apply` sets are capped
//! at 2^52 ms (about 142,000 years), below where Lua's numbers stop being
//! exact; the expiries the scripts compute at 2^44 − 1 ms after the epoch,
//! the latest time the metadata holds (in the year 2527; see
//! [Data layout](#data-layout)).
//!
//! ## Corrupt or foreign data
//!
//! A key under the prefix that is not a session of layout 2 (another type,
//! another application's hash, a hash without the `\xff` field, metadata
//! that does not parse — which includes this crate's layout 1 and the
//! decimal metadata of its first layout-2 versions)
//! is treated as absent by every operation, logged at `warn` with
//! `tracing` (with [`SessionId::short_hash`](sessionkit_core::SessionId::short_hash),
//! never the id), and replaced by a `create` under its id. The scripts (a
//! Lua pattern) and `load` (Rust) parse the metadata by the same strict
//! grammar (exact widths, lowercase hex digits only, no sign, no `0x`, at
//! most 16 digits so no overflow), tested with the same values, garbage and
//! valid, so they agree on what is corrupt and on what the numbers are. A
//! hash with valid metadata but a field name that is not UTF-8 (this crate
//! never writes one) is only seen when read: `load` and `lock` then delete
//! it (one more round trip, on such data only) and answer absent. Nothing
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
//! own script (one `HMGET` more per `change_id`). These scripts touch the
//! data keys the index names, which they cannot declare in advance; one
//! server allows that, a cluster refuses it. Costs are in proportion to the
//! owner's entries: the scripts read the index and one `HGET` + `HMGET`
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
//! every operation runs as on a single server (a read is one `HGETALL`, the
//! rest one script), on one node, with the same guarantees: `change_id`
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
//!   runs, for a time proportional to what it touches. `load` and `lock`
//!   read the whole hash; `apply` touches only the delta's keys (a `clear`
//!   rewrites the hash). Sessions of thousands of keys work (they are
//!   tested) but each load copies them all.
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
