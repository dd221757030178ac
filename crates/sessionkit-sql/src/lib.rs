//! PostgreSQL and SQLite stores for sessionkit on sqlx: one statement per read and per write, per-key deltas, fenced locks held in the database.
//!
//! Part of [sessionkit](https://docs.rs/sessionkit).
//!
//! [`PgStore`] (feature `postgres`) and [`SqliteStore`] (feature `sqlite`)
//! implement [`SessionStore`](sessionkit_core::SessionStore),
//! [`ExpiredDeletion`](sessionkit_core::store::ExpiredDeletion) and
//! [`Countable`](sessionkit_core::store::Countable) on
//! [sqlx](https://docs.rs/sqlx) 0.8. Both pass the whole conformance suite
//! (`sessionkit_core::testkit`): PostgreSQL on a real server, SQLite on a
//! file and in memory.
//!
//! ```no_run
//! # #[cfg(feature = "postgres")]
//! # async fn demo(pool: sessionkit_sql::sqlx::PgPool) -> sessionkit_core::Result<()> {
//! use sessionkit_sql::PgStore;
//!
//! // On the application's own pool…
//! let store = PgStore::builder().table("sessions").build(pool)?;
//! store.migrate().await?; // creates the table once; a no-op after
//! // …or on a pool of its own: PgStore::connect("postgres://app@db/app")?
//! // With the facade: `sessionkit::SessionLayer::new(store)`.
//! # Ok(()) }
//! ```
//!
//! # One crate, a feature per database
//!
//! The two stores share everything but their SQL: the table layout, the
//! JSON form of a session, the key at rest, the checks of a row read back,
//! the table-name rule, the sweep. One crate keeps that written once; a
//! feature per database keeps an application from compiling the driver it
//! does not use (sqlx is built without default features: `runtime-tokio`
//! and the driver only; no macros, so nothing needs a database at compile
//! time; no TLS: enable sqlx's `tls-rustls` or `tls-native-tls` in the
//! application for `sslmode=require`).
//!
//! # Schema
//!
//! [`PgStore::migrate`] and [`SqliteStore::migrate`] create what is missing
//! and record the schema version in `sessionkit_schema` (one row per
//! session table; several apps can share a database with tables of their
//! own, `SESSION_TABLE`). They first read the version without any DDL, so
//! they cost one `SELECT` at start-up and work under a role without
//! `CREATE` rights once the schema exists. A table whose recorded version is
//! newer than this code knows is an error
//! ([`StoreUnavailable`](sessionkit_core::ErrorKind::StoreUnavailable),
//! naming the table and both versions), never a silent misuse.
//! Concurrent migrations take turns (on PostgreSQL an advisory lock per
//! schema, since the tables of a schema share its version table; on SQLite
//! the write lock, and `migrate` tries again for up to 10 s while a file
//! that several processes open at once for the first time is locked by
//! the one creating it). For a DBA who creates the schema by hand, the SQL
//! for the default table `sessions` (`schema_sql()` gives it for any table):
//!
//! PostgreSQL (12 or newer):
//!
//! ```sql
//! CREATE TABLE IF NOT EXISTS "sessionkit_schema" (
//!     table_name text PRIMARY KEY,
//!     version integer NOT NULL
//! );
//! CREATE TABLE IF NOT EXISTS "sessions" (
//!     id bytea PRIMARY KEY,
//!     data jsonb NOT NULL,
//!     created bigint NOT NULL CHECK (created BETWEEN 0 AND 9007199254740991),
//!     ttl bigint NOT NULL CHECK (ttl BETWEEN 0 AND 9007199254740991),
//!     remembered boolean NOT NULL,
//!     deadline bigint CHECK (deadline BETWEEN 1 AND 9007199254740991),
//!     expires bigint NOT NULL CHECK (expires BETWEEN 0 AND 9007199254740991),
//!     lock_token bytea,
//!     lock_expires bigint,
//!     owner text,
//!     handle text
//! );
//! ALTER TABLE "sessions" ADD COLUMN IF NOT EXISTS owner text, ADD COLUMN IF NOT EXISTS handle text;
//! CREATE INDEX IF NOT EXISTS "sessions_expires" ON "sessions" (expires);
//! CREATE INDEX IF NOT EXISTS "sessions_owner" ON "sessions" (owner) WHERE owner IS NOT NULL;
//! ```
//!
//! SQLite (3.38 or newer; sqlx bundles a recent one):
//!
//! ```sql
//! CREATE TABLE IF NOT EXISTS "sessionkit_schema" (
//!     table_name TEXT PRIMARY KEY,
//!     version INTEGER NOT NULL
//! ) STRICT;
//! CREATE TABLE IF NOT EXISTS "sessions" (
//!     id BLOB PRIMARY KEY,
//!     data TEXT NOT NULL,
//!     created INTEGER NOT NULL CHECK (created BETWEEN 0 AND 9007199254740991),
//!     ttl INTEGER NOT NULL CHECK (ttl BETWEEN 0 AND 9007199254740991),
//!     remembered INTEGER NOT NULL CHECK (remembered IN (0, 1)),
//!     deadline INTEGER CHECK (deadline BETWEEN 1 AND 9007199254740991),
//!     expires INTEGER NOT NULL CHECK (expires BETWEEN 0 AND 9007199254740991),
//!     lock_token BLOB,
//!     lock_expires INTEGER,
//!     owner TEXT,
//!     handle TEXT
//! ) STRICT;
//! CREATE INDEX IF NOT EXISTS "sessions_expires" ON "sessions" (expires);
//! CREATE INDEX IF NOT EXISTS "sessions_owner" ON "sessions" (owner) WHERE owner IS NOT NULL;
//! ```
//!
//! then `INSERT INTO sessionkit_schema VALUES ('sessions', 2)`. Version 1
//! had no `owner` and `handle`: `migrate` adds them (PostgreSQL: the
//! `ALTER TABLE` above; SQLite: `ALTER TABLE … ADD COLUMN` for each).
//!
//! | column | holds |
//! |---|---|
//! | `id` | SHA-256 of the session id (32 bytes; [`SessionId::hashed`](sessionkit_core::SessionId::hashed)), or with `hash_ids(false)` the id's 43-character text: the lengths differ, so the two never name the same row |
//! | `data` | a JSON object: each session key, as the application named it, to its value: the codec's JSON as a JSON *string* (kept byte for byte, where a `jsonb` value would be normalised), or `["<base64>"]` for bytes that are not UTF-8 or hold a NUL |
//! | `created`, `expires`, `deadline` | Unix milliseconds; `deadline` `NULL` for no absolute expiry |
//! | `ttl`, `remembered` | the idle lifetime in ms, and whether it is the session's own ("remember me", [`Meta::remembered`](sessionkit_core::record::Meta::remembered)) |
//! | `lock_token`, `lock_expires` | the lock: its 16-byte token and when it expires; `NULL` when free |
//! | `owner`, `handle` | the session's owner and its handle among the owner's sessions (see `Session::set_owner`), also kept in `data`; `NULL` for a session without an owner. Indexed where not `NULL`, so an owner's sessions are found without a scan |
//!
//! One row per session, not one per key: a read is one index lookup of one
//! row, a write rewrites one row, and an idle session costs one heap tuple
//! and one entry in each of two indexes. The `CHECK`s cap times and
//! lifetimes at 2^53 − 1 ms (year 285,000), so that no arithmetic in a
//! statement can overflow; larger values are capped before they are
//! written. `STRICT` makes SQLite check column types as PostgreSQL does.
//!
//! # Statements
//!
//! | operation | PostgreSQL | SQLite |
//! |---|---|---|
//! | `load` | 1 `SELECT` (which also says, by the server's clock, whether the touch is due); a due touch adds 1 conditional `UPDATE` | 1 `SELECT`; a due touch adds 1 conditional `UPDATE` |
//! | `create` | 1 (`INSERT … ON CONFLICT DO UPDATE … WHERE expired`) | 1 (the same) |
//! | `apply`, `apply_and_read` | 1 | 1; a refused write (lock lost, gone) adds 1 `SELECT` to say which |
//! | `lock` | 1 | 1; a lock not taken adds 1 `SELECT` (held or absent) |
//! | `renew_lock`, `unlock`, `destroy` | 1 | 1 |
//! | `change_id` | 1 | `BEGIN IMMEDIATE`, 2 or 3, `COMMIT` |
//! | `delete_expired` | 1 per 1,000 expired rows | the same |
//!
//! So a request costs, counted by the server (`pg_stat_statements` in the
//! tests): 1 statement for a read (2 for the rare read whose touch is due:
//! once per part of the lifetime the touch threshold leaves, not per read; a
//! single statement carrying the `UPDATE` on every read cost PostgreSQL about
//! a quarter more CPU per read); 1 for a buffered flush;
//! 2 for a locked read-modify-write (`lock` reads the record, the fenced
//! `apply` with release commits and unlocks). PostgreSQL does in one
//! statement what needs several steps with data-modifying CTEs; the
//! `UNION ALL` branch that tells "lock lost" from "gone" runs only when the
//! write wrote nothing. SQLite runs in the application's process, so a
//! second statement on a failure path costs no round trip; but in SQLite even
//! an `UPDATE` that matches no row takes the database's write lock, which is
//! why its reads are a plain `SELECT`.
//!
//! Pools built by `connect` do not ping the server before each use (sqlx's
//! `test_before_acquire`, on by default, would double the statements); a
//! broken connection fails its statement and the pool drops it. Statements
//! are prepared once per connection (sqlx's statement cache).
//!
//! # Deltas, no resurrection, fences
//!
//! A buffered flush applies only the keys it changed, on the row as it is
//! at that moment: PostgreSQL `(data - removed_keys) || set_object`
//! (`jsonb`), SQLite `json_patch(data, patch)` (RFC 7396, `null` removes a
//! key; values are strings or arrays, never objects, so the patch never
//! recurses into one). Two concurrent writers of different keys both
//! persist: each `UPDATE` locks the row, and the second merges onto the
//! first's result.
//!
//! Every write is an `UPDATE … WHERE id = $1 AND expires > now`: a write
//! to a destroyed or expired session matches no row and answers `Gone`; it
//! never inserts. A fenced write adds `AND lock_token = $token AND
//! lock_expires > now` to that same `WHERE`, so a commit after a lost lock
//! writes nothing, atomically; with `release` the same statement clears the
//! lock. `lock` is an `UPDATE` that takes a free or expired lock, refreshes
//! the idle expiry and returns the record; `renew_lock` and `unlock` are
//! compare-and-set / compare-and-delete on the token. `destroy` deletes the
//! row, lock included. `change_id` moves the row: on PostgreSQL `FOR
//! UPDATE` on the old row, then, only if no live session has the new id,
//! an expired row under it is deleted and the old row's id is changed in
//! place — so a statement that waited on the old row (a `revoke_all` of
//! its owner, a cap ending it) follows it to its new id instead of
//! skipping it as deleted; on SQLite, where writers take turns, `INSERT`
//! of the new row and `DELETE` of the old. A fenced move keeps the lock
//! (same token, same expiry), an unfenced one drops it.
//!
//! Waiting for a lock is the session handle's bounded retry with backoff
//! and jitter (`LockConfig`). Requests of one process wait in line for a
//! session without asking the store (the session layer hands the lock from
//! one to the next), so only requests of *different* processes wait for
//! the row lock. On PostgreSQL they are woken when it is released
//! ([`SessionStore::wait_for_unlock`](sessionkit_core::SessionStore::wait_for_unlock)):
//! a waiter `LISTEN`s on the table's channel (one connection per store,
//! taken from its pool at the first wait) and holds a shared advisory lock
//! on the pair (a hash of the table name, the first four bytes of the row
//! key) while it waits, on one more connection of its own; the statements
//! that release a lock (`unlock`, a commit with release) send a `NOTIFY`
//! only when that advisory lock shows a waiter, inside the same statement
//! (the counts above hold). A release nobody waits for sends nothing: a
//! `NOTIFY` makes its commit take a lock that every notifying commit of the
//! server shares. The backoff pause stays the upper bound of each wait, so
//! a missed notification (the release came between the failed attempt and
//! the wait, the listening connection was lost) costs at most one pause.
//! The advisory keys are in the two-`int4` space: an application's own
//! `pg_advisory_lock(int, int)` on the same pair would only cause needless
//! wake-ups or, held exclusively, make releases notify. SQLite waiters
//! poll (there is nothing to listen on across processes).
//!
//! # Expiry and clocks
//!
//! `expires` (idle refresh capped by the absolute `deadline`) is indexed;
//! every statement's `WHERE expires > now` means an expired row is never
//! returned, locked or written, whether or not it was swept. A load
//! refreshes the expiry only when less than the configured share of the
//! idle lifetime remains, so most reads write nothing (on PostgreSQL, a row
//! rewritten on every read would bloat the table). The sweep
//! ([`ExpiredDeletion::delete_expired`](sessionkit_core::store::ExpiredDeletion::delete_expired),
//! and a background task every 5 minutes by default) deletes expired rows
//! in batches of 1,000 taken from the front of the expiry index (`ORDER BY
//! expires LIMIT 1000`; `FOR UPDATE SKIP LOCKED` on PostgreSQL, so two app
//! servers sweeping share the work), so it costs in proportion to what
//! expired, not to the table.
//!
//! PostgreSQL statements read the server's clock (`now()`): app servers
//! with drifting clocks still agree on expiry. SQLite statements take the
//! application's clock: every process that shares a SQLite file shares the
//! machine. `create` stores the record's metadata as the session handle
//! made it (from the application's clock).
//!
//! # Durability
//!
//! An acknowledged write is one whose statement the database committed
//! before the response was sent: every write is one autocommitted
//! statement, so no transaction stays open across a request.
//!
//! PostgreSQL: with the server's defaults (`synchronous_commit = on`,
//! `fsync = on`) an acknowledged write survives a crash of the application,
//! of the server process and of the machine (the commit's WAL is flushed
//! before it is acknowledged). The shop's fault test crashes the server
//! (immediate shutdown) under locked load and finds every acknowledged
//! increment after the restart; requests during the outage get 503, and the
//! pool reconnects by itself. With `synchronous_commit = off` (a server
//! setting, or per role) the last commits (up to three times
//! `wal_writer_delay`) can be lost in a crash of the server process, never
//! half-written.
//!
//! SQLite: `connect` opens the file in WAL mode (readers never wait for the
//! writer; `migrate` also switches a file opened elsewhere, and WAL
//! persists in the file), with a busy timeout of 5 s (a writer waits that
//! long for another connection or process holding the write lock, then
//! fails with `StoreUnavailable`) and `synchronous = NORMAL` by default
//! ([`Durability::Normal`]): an acknowledged write survives a crash of the
//! application — the WAL is in the operating system's hands — but a power
//! loss or an OS crash can roll back the last commits (never corrupt the
//! file). [`Durability::Full`] flushes the WAL on every commit and survives
//! power loss, for one `fsync` per write. (sqlx's own defaults, which a
//! pool made with `SqlitePool::connect` gets, are the rollback journal and
//! `synchronous = FULL`: durable against power loss too, at two or more
//! `fsync`s per write, and readers wait for the writer.) Several processes may share one
//! file on a local file system (not a network share: SQLite's locks need
//! it); locks, fences and deltas hold across them, since all of it is in
//! the file.
//!
//! # Corrupt rows
//!
//! A row that cannot be read back (data that is not a JSON object of
//! strings and `[base64]` arrays, a time out of range) is logged (a
//! `tracing` warning with the reason and a short hash of the id, never the
//! id) and treated
//! as absent by every operation; it never panics. Column types and the
//! `CHECK`s keep most corruption out in the first place.
//!
//! # What is not guaranteed
//!
//! - Session keys may not contain NUL (`jsonb` cannot hold it): writing one
//!   is a codec error.
//! - The lock is a row lease, not a PostgreSQL advisory lock: it survives
//!   a dropped connection, and expires by its TTL.
//! - `count` counts unexpired rows with a scan of the expiry index range.
#![deny(unreachable_pub)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod common;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
mod postgres;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
mod sqlite;
#[cfg(feature = "postgres")]
mod wake;

#[cfg(feature = "postgres")]
pub use postgres::{PgStore, PgStoreBuilder};
#[cfg(feature = "sqlite")]
pub use sqlite::{Durability, SqliteStore, SqliteStoreBuilder};
/// The sqlx this crate is built on, so pools come from the same version.
pub use sqlx;

/// Checks a table name as the stores' builders do: an identifier of
/// letters, digits and `_`, not starting with a digit, at most 50
/// characters, and when `schema_qualified` is allowed (PostgreSQL) an
/// optional `schema.` of the same form. The error names the setting
/// `table`.
///
/// ```
/// assert!(sessionkit_sql::check_table_name("app.sessions", true).is_ok());
/// assert!(sessionkit_sql::check_table_name("app.sessions", false).is_err());
/// assert!(sessionkit_sql::check_table_name("sessions; DROP TABLE x", true).is_err());
/// ```
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub fn check_table_name(name: &str, schema_qualified: bool) -> sessionkit_core::Result<()> {
    common::Table::parse(name, schema_qualified).map(|_| ())
}
