//! File store for [sessionkit](https://docs.rs/sessionkit): sessions that survive a restart, with no server to run.
//!
//! [`FileStore`] keeps one file per session under a save path. It keeps the
//! whole [store contract](sessionkit_core::store) — strict ids, idle and
//! absolute expiry, per-key deltas that never resurrect a destroyed
//! session, fenced locks with TTL and renewal — across the tasks of one
//! process *and* across processes on one host sharing the save path, and it
//! passes the conformance suite (`sessionkit_core::testkit`). Writes are
//! atomic and durable, session locks work (and die with their holder), and
//! an unchanged session is touched, not rewritten.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> sessionkit_core::Result<()> {
//! use std::time::Duration;
//! use sessionkit_core::record::{Delta, Entries, Meta, Record, now_ms};
//! use sessionkit_core::store::{Applied, Fence, Locked, SessionStore};
//! use sessionkit_core::SessionId;
//! use sessionkit_file::FileStore;
//!
//! let dir = tempfile::tempdir().unwrap();
//! let store = FileStore::new(dir.path())?;
//!
//! let id = SessionId::generate();
//! let record = Record {
//!     entries: [("n", b"0".to_vec())].into_iter().collect::<Entries>(),
//!     meta: Meta::new(now_ms(), Duration::from_secs(3600), None),
//! };
//! let _ = store.create(&id, &record).await?;
//!
//! // A locked read-modify-write: lock + load, then commit + unlock.
//! let Locked::Acquired { token, record } = store.lock(&id, Duration::from_secs(30)).await? else {
//!     panic!("nobody else holds the lock");
//! };
//! let n: u64 = sessionkit_core::codec::decode_value(record.entries.get("n").unwrap())?;
//! let mut delta = Delta::default();
//! delta.set("n", sessionkit_core::codec::encode_value(&(n + 1))?);
//! let fence = Fence { token: &token, release: true };
//! assert!(matches!(store.apply(&id, &delta, Some(fence)).await?, Applied::Applied(_)));
//! # Ok(()) }
//! ```
//!
//! Applications usually pick it with `SESSION_DRIVER=file` and
//! `SESSION_FILE_PATH` through the `sessionkit` facade (feature `file`).
//!
//! # The save path
//!
//! [`FileStore::new`] takes a directory; [`FileStore::from_default`] uses
//! [`FileStore::default_path`]: `$XDG_RUNTIME_DIR/sessionkit` when that
//! variable is an absolute path to a directory, otherwise
//! `sessionkit-<uid>` in the temporary directory (`$TMPDIR`, or `/tmp`);
//! when neither is absolute, the save path *cannot be determined* and
//! building fails with
//! [`SavePathUnavailable`](sessionkit_core::ErrorKind::SavePathUnavailable).
//!
//! Building checks the directory and fails with
//! [`InvalidSavePath`](sessionkit_core::ErrorKind::InvalidSavePath), naming
//! the path and the reason, unless it is a directory this process can
//! create files in — tested by creating one, the only test that holds for
//! ACLs, read-only mounts and root alike. A missing directory is created
//! with mode 0700 (unless [`FileStoreBuilder::create_dir`] says not to).
//! The default path must also be a real directory owned by this user with
//! no access for group and others, since it lives in a directory everyone
//! can write to; an explicit path only draws a warning in the log if it is
//! world-writable.
//!
//! Give each app its own save path, or its own
//! [`prefix`](FileStoreBuilder::prefix): an app accepts every session it
//! finds there.
//!
//! # Layout on disk
//!
//! ```text
//! <save path>/
//!   .stripes/00 … ff                 256 empty files; their flocks are the critical sections
//!   <prefix><name>.session           a session: the codec blob; its mtime is its expiry
//!   <prefix><name>.lock              a session lock: token, expiry, holder's pid;
//!                                    the holder keeps it open with an flock on it
//!   <prefix><name>.tmp-<16 hex>      a write in flight (or left by a crash, removed by gc)
//!   .owners/                         created on first use; see Owners
//!     .locks/00 … ff                 256 empty files; their flocks are the owner locks
//!     <prefix><owner hash>.owner     one owner's index: handle → session file name
//!     <prefix><owner hash>.tmp       its next version while it is written
//! ```
//!
//! - `<name>` is the hex SHA-256 of the session id ([`SessionId::hashed`]),
//!   so a listing or a backup holds no usable id; with
//!   [`hash_ids(false)`](FileStoreBuilder::hash_ids) it is the id itself.
//!   Names are made only from ids that passed validation, never from
//!   anything a client sent.
//! - A `.session` file is exactly [`encode_record`]'s blob: entries,
//!   creation time, idle lifetime, absolute deadline and expiry. Files are
//!   created with mode 0600, directories with 0700.
//! - Its **mtime is the session's expiry** (a time in the future, while the
//!   session lives). Every write sets it; see [Touches](#touches-lazy-write)
//!   for why this lets a touch skip the rewrite, and
//!   [The sweep](#the-sweep) for why it lets the sweep skip reading.
//! - Files whose names do not follow this pattern are ignored; a file that
//!   does but does not decode (torn, foreign, a symbolic link, a FIFO or
//!   other non-regular file — opened without waiting —, larger than
//!   64 MiB) is *treated as absent* and logged at `warn` with the session's
//!   [short hash](sessionkit_core::SessionId::short_hash) — never the id — and never makes
//!   the store panic or fail.
//!
//! # Atomicity
//!
//! Each operation is atomic with respect to every other, across the tasks
//! of a process and across processes on the host. Sessions map to 256
//! *stripes* by a hash of their file name; an operation takes its session's
//! stripe lock — an exclusive `flock` on `.stripes/<xx>`, through a file
//! opened for that one critical section, so it excludes other threads of
//! the same process as well as other processes — does its reads and
//! writes, and closes the file. `change_id` takes both stripes in index
//! order. The critical sections are short (a read, a write, an `fsync`), and
//! a stripe is shared by 1/256 of the sessions.
//!
//! `load` without a due touch takes no lock at all: session files are only
//! ever replaced by `rename`, so an `open` sees one whole version. A due
//! touch takes the lock and reads again under it.
//!
//! Every write is atomic and, by default, durable: the new content goes to
//! a temporary file in the save path (mode 0600, created exclusively), its
//! mtime is set, it is `fsync`ed, renamed over the session file, and the
//! directory is `fsync`ed. A process killed at any point leaves the old
//! session or the new one, never a torn file; the temporary file it may
//! leave behind is removed by the next sweep.
//!
//! `change_id` refreshes the expiry at the old name and then moves the
//! session with one `rename`: a crash leaves it under the old id or the new
//! one, never under both — which matters, as `regenerate` at login exists
//! to retire the old id.
//!
//! # The lock protocol
//!
//! A session lock must be exclusive, fenced, bounded by a TTL, renewable —
//! and free *at once* when its holder's process dies, not only after the
//! TTL. Two things make it:
//!
//! 1. **The lock file** `<name>.lock` records the owner's token and the
//!    lock's expiry. It is only ever written by a `rename` of a complete
//!    temporary file, inside the session's stripe lock, so every check of it
//!    and every change to it (acquire, renew, fenced write, release, move)
//!    is one atomic compare-and-set.
//! 2. **The holder's `flock`.** The process that takes a session lock keeps
//!    the lock file open with an exclusive `flock` on it, for as long as it
//!    holds the lock (the `flock` is taken on the temporary file, before the
//!    rename, so the lock file never appears without it). The kernel drops
//!    that `flock` when the process dies, however it dies.
//!
//! Under the stripe lock:
//!
//! - **`lock`**: the session must be live (else `Absent`; a stale lock file
//!   is removed). The lock is *in force* when the lock file decodes, its
//!   expiry is in the future, **and** its `flock` is taken — tested with a
//!   non-blocking `flock` through a new file handle, which conflicts with
//!   the holder's handle whether the holder is another process or this
//!   one. In force: `Held`. Otherwise — no file, expired, or the test
//!   `flock` succeeded because the holder is gone — a fresh token and
//!   expiry are written as a new lock file (with its `flock`) renamed over
//!   the old one, and the record read in the same critical section is
//!   returned with the token: `Acquired`.
//! - **Fenced `apply`** (and fenced `change_id`): passes only if the lock
//!   file's token is the caller's and its expiry is in the future; then the
//!   session is written, and with `release` the lock file is deleted and the
//!   holder's handle closed, in the same critical section.
//! - **`renew_lock`**: same check (and the session must be live); a new
//!   lock file with the new expiry (and a new `flock`) is renamed over it.
//! - **`unlock`**: deletes the lock file if the token matches
//!   (compare-and-delete).
//! - **`change_id`** with a fence renames the lock file along with the
//!   session: same inode, so the holder's `flock` moves too, with the same
//!   token and expiry. Without a fence, and in `destroy`, the lock file is
//!   deleted.
//!
//! A lock thus ends at the first of: its release, its TTL, the death of the
//! holder's process, or the drop of the last clone of the holder's
//! [`FileStore`] (which closes the handles). Held-lock handles of expired
//! locks are closed by the next sweep or `lock` call.
//!
//! # Owners
//!
//! [`FileStore`] keeps an owner index ([`OwnerIndex`]): an application can
//! give a session an owner at login, list the owner's sessions by
//! [handle](sessionkit_core::owner::SessionHandle), revoke one or all of
//! them, and cap how many an owner has
//! ([`max_sessions_per_owner`](sessionkit_core::SessionConfigBuilder::max_sessions_per_owner)).
//! Its guarantees hold across the processes sharing the save path, like
//! everything else here.
//!
//! - **The session** carries its owner, handle and device label in the
//!   core's reserved entries, so they move with it on `change_id` and end
//!   with it.
//! - **The index** of an owner is one small file,
//!   `.owners/<prefix><owner hash>.owner`, where the owner hash is the hex
//!   SHA-256 of the owner: the owner (often an e-mail address) is never in
//!   a file name, nor in a log line. It lists `handle → session file
//!   name`, one line each, and is written like a session file (a temporary
//!   file, `fsync` when [`durable`](FileStoreBuilder::durable), `rename`,
//!   `fsync` of the directory). An owner with no session left has no file.
//! - **The owner lock** is an exclusive `flock` on
//!   `.owners/.locks/<first byte of the owner hash>`, taken like a stripe
//!   lock (a file opened for one critical section), so it excludes the
//!   threads of this process and other processes alike. Owner locks are a
//!   set apart from the session stripes.
//!
//! **Lock order: the owner lock first, then session stripes; never two
//! owner locks at once.** `set_owner`, `sessions_of`, `revoke` and
//! `revoke_all` hold the owner's lock throughout and take one session
//! stripe at a time inside it. `change_id` takes its two stripes as
//! before; when the session turns out to carry an owner, it lets them go,
//! takes that owner's lock, takes the stripes again and checks everything
//! again (if the owner changed meanwhile, it starts over with the new
//! owner's lock). No operation waits for an owner lock while it holds a
//! stripe, so nothing can deadlock, within a process or across processes.
//! Reads, writes, session locks, destroys and the sweep take no owner lock
//! and cost nothing more.
//!
//! What is atomic: sessions gain an owner only under that owner's lock, so
//! within it the owner's sessions can only end, never arrive. `set_owner`
//! counts the owner's live sessions, refuses
//! ([`WhenFull::Refuse`](sessionkit_core::owner::WhenFull::Refuse): nothing
//! written) or ends the least recently used others
//! ([`WhenFull::EndLeastRecent`](sessionkit_core::owner::WhenFull::EndLeastRecent);
//! least recently used = smallest `expires − idle lifetime`, ties broken by
//! handle) and only then writes the owner into the session, all under the
//! owner lock: two simultaneous logins, from two processes or one, cannot
//! both slip under the cap, and a crash or I/O error part-way leaves the
//! login undone (and perhaps a session ended for it), never more sessions
//! than the cap. A revoked session is deleted with its lock file
//! under its stripe, so a request that holds its lock fails its commit as
//! "session gone".
//!
//! What the index promises: every live session that carries an owner and
//! a handle is listed in that owner's index under its current file name.
//! An entry is written *before* the session carries it (`set_owner`) or
//! moves to it (`change_id`), so a crash at any point leaves at worst a
//! stale entry, never an owned session missing from the index. Entries are
//! checked against the session itself — live, and still carrying that
//! owner and handle — whenever the owner's index is used, and the stale
//! ones (destroyed, expired, swept, given another owner, moved) are
//! dropped then: they never outnumber what ended since. Listing, counting,
//! revoking and capping thus cost one read of the index and one read of
//! each of that owner's session files, never anything in proportion to all
//! sessions. Nothing read from an index reaches a file name unchecked:
//! handles must be 32 hex digits and names ones this store could have
//! written.
//!
//! A torn or corrupt index file (a machine crash with
//! [`durable(false)`](FileStoreBuilder::durable), tampering) never makes
//! the store panic or fail: it is logged at `warn` with the first 8 hex
//! digits of its name (never the owner, never an id), the entries that
//! still parse are kept, the save path is scanned once for live sessions
//! carrying the owner (the one time an owner operation costs in proportion
//! to all sessions), and the rebuilt index is written back. A FIFO planted
//! at an index path is opened without waiting and rebuilt over like a
//! corrupt file; a directory planted there makes that owner's operations
//! fail with an error naming the file, until it is removed. An index of
//! more than 16 MiB (some 100,000 sessions of one owner) counts as corrupt.
//!
//! Limits: with [`hash_ids(false)`](FileStoreBuilder::hash_ids) index files
//! hold session ids, as the session file names then do. The index file of
//! an owner who never comes back stays until that owner's index is used
//! again (the sweep does not visit `.owners`): one small file per such
//! owner. A copy kept under the old id for a grace period after a
//! regenerate carries no owner (the core strips it), so it is in no list
//! and no revocation ends it; keep the grace to seconds. The guarantee that
//! a crash leaves at worst a stale entry needs
//! [`durable(true)`](FileStoreBuilder::durable) (the default), and a
//! `.owners` directory that stays in step with the session files (do not
//! restore or copy one without the other).
//!
//! # Touches (lazy write)
//!
//! A load that finds less than the configured share of the idle lifetime
//! left refreshes the expiry ([`Touch`](sessionkit_core::record::Touch)).
//! Here that is one `futimens`: the file's mtime is set to the new expiry,
//! nothing is rewritten. The expiry in force is then the later of the one
//! in the blob and the mtime, capped at the absolute deadline; every real
//! write brings the two back in line. This needs a file system that keeps
//! mtimes to the millisecond (ext4, XFS, Btrfs, tmpfs, APFS…), which
//! building probes; elsewhere, or with
//! [`mtime_expiry(false)`](FileStoreBuilder::mtime_expiry), a touch rewrites
//! the file atomically like any other write. Copying the save path without
//! its mtimes is harmless: the blob's expiry then outweighs the mtime, and
//! the next sweep repairs the mtime.
//!
//! # The sweep
//!
//! [`FileStore::gc`] (and [`ExpiredDeletion`], and the background task of
//! [`FileStoreBuilder::sweep_interval`]) lists the save path and reads the
//! metadata of each session file — an `lstat` relative to the directory,
//! no `open`, no read. Only files whose mtime is past are opened, checked
//! under their stripe lock, and deleted with their lock file; it also
//! removes lock files whose session is gone and temporary files left by
//! crashes. [`GcReport`] says how many files were scanned, opened and
//! deleted.
//!
//! [`Countable::count`] counts the session files from the directory listing
//! alone: an upper bound that includes expired files not yet swept.
//!
//! # Blocking
//!
//! File I/O never runs on the async worker threads: each operation is one
//! closure on Tokio's blocking pool (`spawn_blocking`). Outside a Tokio
//! runtime the operation runs inline. [`FileStoreBuilder::build`] blocks
//! briefly: call it at start-up.
//!
//! # What is not guaranteed
//!
//! - **One host.** `flock` works between the processes of one kernel. On
//!   NFS it is emulated (or ignored) and `rename` and `fsync` have weaker
//!   semantics: do not put the save path on a network file system, and do
//!   not share one between hosts; use Redis for that.
//! - **Durability of touches and locks.** A touch (an mtime) is not
//!   `fsync`ed: after a machine crash a session may expire up to one touch
//!   early. Lock files are never `fsync`ed: after a crash no holder lives,
//!   so every lock is free anyway. With
//!   [`durable(false)`](FileStoreBuilder::durable) no write is `fsync`ed
//!   (still atomic against process crashes, not against machine crashes).
//! - **The clock.** Expiry uses this host's clock; all processes on the
//!   host share it.
//! - **Forking.** Handles are opened close-on-exec, so programs spawned by
//!   the app do not inherit locks; a `fork` without `exec` shares the held
//!   locks' handles with the child, which then keeps them alive.
//! - **Tampering.** Anyone who can write to the save path can forge, extend
//!   or delete sessions and locks: keep it private to the app's user.
//!   Deleting `.stripes` while the store runs breaks mutual exclusion.
//! - **Unix only.** The store relies on `flock`, `rename` over open files
//!   and Unix permissions.
//! - **Sweep cost.** The sweep opens only what expired, but it still lists
//!   the directory and reads each file's metadata; with a very large number
//!   of sessions, sweep less often.
//!
//! # Errors
//!
//! Not found is never an error. I/O failures are
//! [`StoreUnavailable`](sessionkit_core::ErrorKind::StoreUnavailable)
//! errors of store `file`, naming the operation, what was being done, and
//! the directory and the session's short hash (never the id), with the I/O
//! error as their source.
//!
//! [`encode_record`]: sessionkit_core::codec::encode_record
//! [`SessionId::hashed`]: sessionkit_core::SessionId::hashed
//! [`ExpiredDeletion`]: sessionkit_core::store::ExpiredDeletion
//! [`Countable::count`]: sessionkit_core::store::Countable::count
//! [`OwnerIndex`]: sessionkit_core::owner::OwnerIndex
#![deny(unreachable_pub)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(not(unix))]
compile_error!(
    "sessionkit-file supports Unix only: it relies on flock(2), rename(2) over open files and Unix permissions"
);

mod disk;
mod fail;
mod gc;
mod name;
mod owners;
mod savepath;
mod store;
#[cfg(test)]
mod tests;

pub use gc::GcReport;
pub use store::{FileStore, FileStoreBuilder};
