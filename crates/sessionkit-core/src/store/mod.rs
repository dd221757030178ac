//! The store contract: what a backend must do, atomically, in one round trip.
//!
//! A store keeps [`Record`]s under [`SessionId`]s, with expiry, and per-session
//! locks owned by [`LockToken`]s. Every method is one operation a request
//! needs, and must be done by the store **atomically and in one round trip**:
//! what would otherwise take several calls is done on the store's side (a Lua
//! script in Redis, compare-and-swap in memcached, a critical section in
//! memory or on disk).
//!
//! # The contract
//!
//! - **Not found is not an error.** A missing, expired or undecodable session
//!   loads as `Ok(None)`; `Err` is for system failures only (the store is down,
//!   an I/O error). A store that finds a record it cannot decode logs it and
//!   treats it as absent.
//! - **Expired is gone.** A record whose [`Meta::expires`] is in the past
//!   behaves exactly as a missing one for every operation.
//! - **Destroying an absent id is fine**: `destroy` returns `Ok(())`.
//! - **`create` never overwrites**: if the id exists it answers
//!   [`Created::IdTaken`] and changes nothing.
//! - **`apply` merges, never replaces**: it applies only the keys the
//!   [`Delta`] lists, on top of what is stored *at that moment*, and refreshes
//!   the expiry ([`Delta::apply_to`] does exactly this for in-process stores).
//!   It never creates a record: applying to a missing or expired session
//!   answers [`Applied::Gone`] and writes nothing, so a write racing a
//!   `destroy` cannot bring the session back.
//! - **Fenced writes**: when `apply` or `change_id` gets a [`Fence`], the store
//!   checks, in the same atomic step, that the session's lock is held by that
//!   token and has not expired; otherwise it answers `LockLost` and writes
//!   nothing.
//! - **Locks** are try-once: [`SessionStore::lock`] either takes the lock
//!   (with a fresh token and a TTL) and returns the record in the same round
//!   trip, or reports that another token holds it, or that the session does
//!   not exist (in which case no lock is taken). An expired lock is free.
//!   `renew_lock` and `unlock` act only when the token still owns the lock
//!   (compare-and-set, compare-and-delete). `destroy` removes the lock too,
//!   and so does an unfenced `change_id` (the session moved away from under
//!   the holder, whose fenced writes then fail).
//! - **Timestamps** are Unix milliseconds from the store's clock; a store that
//!   is shared by several app servers should use one clock (Redis uses its
//!   own `TIME`).
//!
//! The conformance suite (module `testkit`, feature `testkit`) is this
//! contract in executable form; a store is done when it passes all of it.
//!
//! # Implementing a store
//!
//! Implement [`SessionStore`] with plain `async fn`s. The session handle uses
//! stores through [`DynSessionStore`], an object-safe twin with boxed futures
//! that every `SessionStore` implements automatically.
//!
//! ```
//! use std::time::Duration;
//! use sessionkit_core::store::{Applied, Created, Fence, IdChanged, Loaded, Locked, SessionStore};
//! use sessionkit_core::record::{Delta, Record, Touch};
//! use sessionkit_core::{LockToken, Result, SessionId};
//!
//! /// A store that forgets everything, like `NoopStore`.
//! #[derive(Debug)]
//! struct Forgetful;
//!
//! impl SessionStore for Forgetful {
//!     fn name(&self) -> &'static str { "forgetful" }
//!     async fn load(&self, _: &SessionId, _: Option<Touch>) -> Result<Option<Loaded>> { Ok(None) }
//!     async fn create(&self, _: &SessionId, _: &Record) -> Result<Created> { Ok(Created::Created) }
//!     async fn apply(&self, _: &SessionId, _: &Delta, _: Option<Fence<'_>>) -> Result<Applied> { Ok(Applied::Gone) }
//!     async fn change_id(&self, _: &SessionId, _: &SessionId, _: Option<&LockToken>) -> Result<IdChanged> { Ok(IdChanged::Gone) }
//!     async fn destroy(&self, _: &SessionId) -> Result<()> { Ok(()) }
//!     async fn lock(&self, _: &SessionId, _: Duration) -> Result<Locked> { Ok(Locked::Absent) }
//!     async fn renew_lock(&self, _: &SessionId, _: &LockToken, _: Duration) -> Result<bool> { Ok(false) }
//!     async fn unlock(&self, _: &SessionId, _: &LockToken) -> Result<()> { Ok(()) }
//! }
//! ```

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::error::Result;
use crate::id::{LockToken, SessionId};
use crate::owner::DynOwnerIndex;
use crate::record::{Delta, Meta, Record, Touch};

mod backoff;
pub(crate) mod forward;
mod memory;
mod noop;

pub use backoff::Backoff;
pub use memory::{MemoryStore, MemoryStoreBuilder};
pub use noop::NoopStore;

/// A record returned by [`SessionStore::load`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// The stored session, with its expiry as it is after the load.
    pub record: Record,
    /// Whether the load moved the expiry (so the cookie must be re-sent).
    pub touched: bool,
}

/// The answer of [`SessionStore::create`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Created {
    /// The record was stored under the id.
    Created,
    /// A live session already has this id; nothing changed.
    IdTaken,
}

/// The lock check of a fenced write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence<'a> {
    /// The token that must own the session's lock.
    pub token: &'a LockToken,
    /// Whether to release the lock in the same atomic step (commit + unlock).
    pub release: bool,
}

/// The answer of [`SessionStore::apply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Applied {
    /// The delta was applied; the session's metadata after it.
    Applied(Meta),
    /// The session is missing or expired; nothing was written.
    Gone,
    /// The write was fenced and the token no longer owns the lock; nothing
    /// was written.
    LockLost,
}

/// The answer of [`SessionStore::apply_and_read`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum AppliedAndRead {
    /// The delta was applied, the lock is still held by the token, and this
    /// is the session as it is after the write.
    Applied(Record),
    /// The delta was applied (the session's metadata after it) and the lock
    /// kept, but the session could not be read back: only a store that does
    /// the two in separate steps (the default implementation) answers this,
    /// when the session moved, ended or could not be read in between. The
    /// caller releases the lock instead of handing it on.
    AppliedUnread(Meta),
    /// The session is missing or expired; nothing was written.
    Gone,
    /// The token no longer owns the lock; nothing was written.
    LockLost,
}

/// The answer of [`SessionStore::change_id`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum IdChanged {
    /// The session now lives under the new id only; its metadata after the
    /// move (the expiry is refreshed).
    Changed(Meta),
    /// The old id has no live session; nothing changed.
    Gone,
    /// A live session already has the new id; nothing changed.
    IdTaken,
    /// The move was fenced and the token no longer owns the lock.
    LockLost,
}

/// The answer of [`SessionStore::lock`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Locked {
    /// The lock is ours until its TTL passes (or it is renewed); the record as
    /// read under the lock.
    Acquired {
        /// The token that owns the lock.
        token: LockToken,
        /// The session, read in the same atomic step.
        record: Record,
    },
    /// Another token holds an unexpired lock; try again later.
    Held,
    /// The session is missing or expired; no lock was taken.
    Absent,
}

/// A session store: the backend contract. See the [module docs](self) for the
/// rules every method must keep.
pub trait SessionStore: Debug + Send + Sync + 'static {
    /// A short name for errors and logs, such as `"memory"` or `"redis"`.
    fn name(&self) -> &'static str;

    /// Loads a session; when `touch` is given and due, refreshes its idle
    /// expiry in the same step and reports it in [`Loaded::touched`].
    fn load(
        &self,
        id: &SessionId,
        touch: Option<Touch>,
    ) -> impl Future<Output = Result<Option<Loaded>>> + Send;

    /// Stores a new session unless the id is already live.
    fn create(
        &self,
        id: &SessionId,
        record: &Record,
    ) -> impl Future<Output = Result<Created>> + Send;

    /// Applies a delta to a live session and refreshes its expiry; never
    /// creates one. With a fence, only while the token owns the lock.
    fn apply(
        &self,
        id: &SessionId,
        delta: &Delta,
        fence: Option<Fence<'_>>,
    ) -> impl Future<Output = Result<Applied>> + Send;

    /// Moves a live session to a new id and deletes the old one, atomically,
    /// refreshing its expiry. With a fence, only while the token owns the lock
    /// of `old`, and the lock moves along with the session (same token, same
    /// expiry).
    fn change_id(
        &self,
        old: &SessionId,
        new: &SessionId,
        fence: Option<&LockToken>,
    ) -> impl Future<Output = Result<IdChanged>> + Send;

    /// A fresh id to move the session `old` to with
    /// [`change_id`](Self::change_id). The session handle takes the new id of
    /// every `regenerate` from here.
    ///
    /// The default is [`SessionId::generate`]. A store that can move a
    /// session in one atomic step only between some pairs of ids mints a
    /// fresh random id of such a pair here — Redis Cluster: a key in the old
    /// key's hash slot, so one script moves it; memcached: a key on the old
    /// key's server — and may refuse, with an error, a `change_id` onto an id
    /// this method would never return. Callers of `change_id` should take
    /// `new` from here.
    ///
    /// # Security
    ///
    /// The id must stay unguessable: an implementation picks among fresh
    /// [`SessionId::generate`] ids (rejection sampling), and keeps far more
    /// than the 64 bits of entropy the
    /// [OWASP Session Management Cheat Sheet](https://cheatsheetseries.owasp.org/cheatsheets/Session_Management_Cheat_Sheet.html#session-id-entropy)
    /// asks for; each store's docs say how many.
    fn new_id_for(&self, old: &SessionId) -> SessionId {
        let _ = old;
        SessionId::generate()
    }

    /// Deletes a session and its lock. Absent ids are fine.
    fn destroy(&self, id: &SessionId) -> impl Future<Output = Result<()>> + Send;

    /// Tries once to take the session's lock for `ttl`, and loads the session
    /// in the same step. Taking the lock refreshes the session's idle expiry
    /// (a session is not idle while a request holds its lock); the record
    /// returned carries the refreshed metadata.
    fn lock(&self, id: &SessionId, ttl: Duration) -> impl Future<Output = Result<Locked>> + Send;

    /// Extends the lock to `ttl` from now if `token` still owns it, and
    /// refreshes the session's idle expiry; returns whether it did.
    fn renew_lock(
        &self,
        id: &SessionId,
        token: &LockToken,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Releases the lock if `token` still owns it (compare-and-delete).
    fn unlock(&self, id: &SessionId, token: &LockToken) -> impl Future<Output = Result<()>> + Send;

    /// Applies a delta fenced by `token`, **keeps** the lock, and returns
    /// the session as it is after the write, as one atomic step (an empty
    /// delta just checks the lock, refreshes the expiry and reads).
    ///
    /// The session handle uses it to hand a lock straight to the next
    /// request of the same process waiting for it: the next holder starts
    /// from this record, read under the lock held without a break, instead
    /// of releasing the lock and taking it again (two more round trips).
    ///
    /// The default makes two calls, a fenced [`apply`](Self::apply) without
    /// release and a [`load`](Self::load), and answers
    /// [`AppliedAndRead::AppliedUnread`] when the write succeeded but the
    /// read did not; stores that can do both in one atomic step override it.
    fn apply_and_read(
        &self,
        id: &SessionId,
        delta: &Delta,
        token: &LockToken,
    ) -> impl Future<Output = Result<AppliedAndRead>> + Send {
        async move {
            let fence = Fence {
                token,
                release: false,
            };
            match self.apply(id, delta, Some(fence)).await? {
                // The write is done whatever the read gives: never report
                // it as failed (the caller could write it again).
                Applied::Applied(meta) => Ok(match self.load(id, None).await {
                    Ok(Some(loaded)) => AppliedAndRead::Applied(loaded.record),
                    Ok(None) | Err(_) => AppliedAndRead::AppliedUnread(meta),
                }),
                Applied::Gone => Ok(AppliedAndRead::Gone),
                Applied::LockLost => Ok(AppliedAndRead::LockLost),
            }
        }
    }

    /// Waits before the next [`lock`](Self::lock) attempt on a lock that
    /// was [`Locked::Held`]: at most `pause` (the session handle's backoff
    /// pause, already cut to its deadline), less when the store learns that
    /// the lock was released. Waking early is only a hint: the caller tries
    /// `lock` again, and that decides.
    ///
    /// The default sleeps `pause`: waiters poll with backoff and jitter. A
    /// store that can push a release to the waiters (PostgreSQL
    /// `LISTEN`/`NOTIFY`) overrides it; it must never wait longer than
    /// `pause`, nor fail (a store that cannot wake waiters just sleeps).
    fn wait_for_unlock(&self, id: &SessionId, pause: Duration) -> impl Future<Output = ()> + Send {
        let _ = id;
        tokio::time::sleep(pause)
    }

    /// The store's index of owners' sessions, if it keeps one: how a
    /// [`Session`](crate::Session) behind a type-erased store finds it. The
    /// default is `None`; a store that implements
    /// [`OwnerIndex`](crate::owner::OwnerIndex) returns `Some(self)`.
    fn owner_index(self: Arc<Self>) -> Option<Arc<dyn DynOwnerIndex>> {
        None
    }
}

/// Stores that can delete expired sessions on demand (memory, files).
///
/// Stores with native expiry (Redis, memcached) don't need it.
pub trait ExpiredDeletion: SessionStore {
    /// Deletes every expired session; returns how many were deleted.
    fn delete_expired(&self) -> impl Future<Output = Result<u64>> + Send;
}

/// Stores that can count their live sessions.
///
/// There is deliberately no way to list ids: stores that keep ids hashed at
/// rest cannot, and a list of live bearer tokens is a liability.
pub trait Countable: SessionStore {
    /// The number of live (unexpired) sessions, or an upper bound where
    /// expired sessions are removed lazily.
    fn count(&self) -> impl Future<Output = Result<u64>> + Send;
}

/// A boxed future, as [`DynSessionStore`] returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The object-safe twin of [`SessionStore`], for `dyn` use.
///
/// Implemented for every `SessionStore`; the session handle holds an
/// `Arc<dyn DynSessionStore>` so that one handle type serves every backend.
/// Each call boxes its future, which costs one small allocation per store
/// call and nothing for requests that make none.
pub trait DynSessionStore: Debug + Send + Sync + 'static {
    /// See [`SessionStore::name`].
    fn name(&self) -> &'static str;
    /// See [`SessionStore::load`].
    fn load<'a>(
        &'a self,
        id: &'a SessionId,
        touch: Option<Touch>,
    ) -> BoxFuture<'a, Result<Option<Loaded>>>;
    /// See [`SessionStore::create`].
    fn create<'a>(
        &'a self,
        id: &'a SessionId,
        record: &'a Record,
    ) -> BoxFuture<'a, Result<Created>>;
    /// See [`SessionStore::apply`].
    fn apply<'a>(
        &'a self,
        id: &'a SessionId,
        delta: &'a Delta,
        fence: Option<Fence<'a>>,
    ) -> BoxFuture<'a, Result<Applied>>;
    /// See [`SessionStore::change_id`].
    fn change_id<'a>(
        &'a self,
        old: &'a SessionId,
        new: &'a SessionId,
        fence: Option<&'a LockToken>,
    ) -> BoxFuture<'a, Result<IdChanged>>;
    /// See [`SessionStore::new_id_for`].
    fn new_id_for(&self, old: &SessionId) -> SessionId;
    /// See [`SessionStore::destroy`].
    fn destroy<'a>(&'a self, id: &'a SessionId) -> BoxFuture<'a, Result<()>>;
    /// See [`SessionStore::lock`].
    fn lock<'a>(&'a self, id: &'a SessionId, ttl: Duration) -> BoxFuture<'a, Result<Locked>>;
    /// See [`SessionStore::renew_lock`].
    fn renew_lock<'a>(
        &'a self,
        id: &'a SessionId,
        token: &'a LockToken,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool>>;
    /// See [`SessionStore::unlock`].
    fn unlock<'a>(&'a self, id: &'a SessionId, token: &'a LockToken) -> BoxFuture<'a, Result<()>>;
    /// See [`SessionStore::apply_and_read`].
    fn apply_and_read<'a>(
        &'a self,
        id: &'a SessionId,
        delta: &'a Delta,
        token: &'a LockToken,
    ) -> BoxFuture<'a, Result<AppliedAndRead>>;
    /// See [`SessionStore::wait_for_unlock`].
    fn wait_for_unlock<'a>(&'a self, id: &'a SessionId, pause: Duration) -> BoxFuture<'a, ()>;
    /// See [`SessionStore::owner_index`].
    fn owner_index(self: Arc<Self>) -> Option<Arc<dyn DynOwnerIndex>>;
}

impl<S: SessionStore> DynSessionStore for S {
    fn name(&self) -> &'static str {
        SessionStore::name(self)
    }
    fn load<'a>(
        &'a self,
        id: &'a SessionId,
        touch: Option<Touch>,
    ) -> BoxFuture<'a, Result<Option<Loaded>>> {
        Box::pin(SessionStore::load(self, id, touch))
    }
    fn create<'a>(
        &'a self,
        id: &'a SessionId,
        record: &'a Record,
    ) -> BoxFuture<'a, Result<Created>> {
        Box::pin(SessionStore::create(self, id, record))
    }
    fn apply<'a>(
        &'a self,
        id: &'a SessionId,
        delta: &'a Delta,
        fence: Option<Fence<'a>>,
    ) -> BoxFuture<'a, Result<Applied>> {
        Box::pin(SessionStore::apply(self, id, delta, fence))
    }
    fn change_id<'a>(
        &'a self,
        old: &'a SessionId,
        new: &'a SessionId,
        fence: Option<&'a LockToken>,
    ) -> BoxFuture<'a, Result<IdChanged>> {
        Box::pin(SessionStore::change_id(self, old, new, fence))
    }
    fn new_id_for(&self, old: &SessionId) -> SessionId {
        SessionStore::new_id_for(self, old)
    }
    fn destroy<'a>(&'a self, id: &'a SessionId) -> BoxFuture<'a, Result<()>> {
        Box::pin(SessionStore::destroy(self, id))
    }
    fn lock<'a>(&'a self, id: &'a SessionId, ttl: Duration) -> BoxFuture<'a, Result<Locked>> {
        Box::pin(SessionStore::lock(self, id, ttl))
    }
    fn renew_lock<'a>(
        &'a self,
        id: &'a SessionId,
        token: &'a LockToken,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(SessionStore::renew_lock(self, id, token, ttl))
    }
    fn unlock<'a>(&'a self, id: &'a SessionId, token: &'a LockToken) -> BoxFuture<'a, Result<()>> {
        Box::pin(SessionStore::unlock(self, id, token))
    }
    fn apply_and_read<'a>(
        &'a self,
        id: &'a SessionId,
        delta: &'a Delta,
        token: &'a LockToken,
    ) -> BoxFuture<'a, Result<AppliedAndRead>> {
        Box::pin(SessionStore::apply_and_read(self, id, delta, token))
    }
    fn wait_for_unlock<'a>(&'a self, id: &'a SessionId, pause: Duration) -> BoxFuture<'a, ()> {
        Box::pin(SessionStore::wait_for_unlock(self, id, pause))
    }
    fn owner_index(self: Arc<Self>) -> Option<Arc<dyn DynOwnerIndex>> {
        SessionStore::owner_index(self)
    }
}

/// A type-erased store behind an `Arc`, itself a [`SessionStore`].
///
/// Lets code that is generic over `SessionStore` (wrappers, the conformance
/// suite) take a store chosen at run time.
///
/// ```
/// use sessionkit_core::store::{ArcStore, MemoryStore};
///
/// let store = ArcStore::new(MemoryStore::new());
/// let again = store.clone(); // cheap: both share one memory store
/// # let _ = again;
/// ```
#[derive(Debug, Clone)]
pub struct ArcStore(Arc<dyn DynSessionStore>);

impl ArcStore {
    /// Erases the type of `store`.
    pub fn new(store: impl SessionStore) -> Self {
        ArcStore(Arc::new(store))
    }

    /// Wraps an already shared store.
    pub fn from_arc(store: Arc<dyn DynSessionStore>) -> Self {
        ArcStore(store)
    }

    /// The shared store.
    pub fn as_dyn(&self) -> &Arc<dyn DynSessionStore> {
        &self.0
    }
}

forward::forward_session_store! {
    impl[] for ArcStore;
    to |this| this.0;
    owners |this| this.0.clone().owner_index()
}
