//! The `Session` handle: lazy reads, buffered writes, locked transactions.

mod lock;
mod state;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::{decode_value, encode_value};
use crate::config::{LockPolicy, ReleasePolicy, SessionConfig, WritePolicy};
use crate::error::{Error, ErrorKind, Result};
use crate::id::SessionId;
use crate::record::{Delta, Entries, Meta, Record, now_ms};
use crate::store::{
    Applied, ArcStore, Created, DynSessionStore, Fence, IdChanged, Locked, SessionStore,
};

use self::lock::{Backoff, HeldLock};
use self::state::{LockHold, State, Stored};

/// Makes [`Session`] handles for requests: the store and the settings they
/// share (amphp's `SessionFactory`).
///
/// The HTTP layer owns one and calls [`SessionFactory::session`] per request.
///
/// ```
/// use sessionkit_core::{SessionConfig, SessionFactory};
/// use sessionkit_core::store::MemoryStore;
///
/// let factory = SessionFactory::new(MemoryStore::new(), SessionConfig::default());
/// let session = factory.session(None, false);
/// assert_eq!(session.id(), None);
/// ```
#[derive(Debug, Clone)]
pub struct SessionFactory {
    store: Arc<dyn DynSessionStore>,
    config: Arc<SessionConfig>,
    unknown_ids: Arc<AtomicU64>,
}

impl SessionFactory {
    /// A factory over `store`.
    pub fn new(store: impl SessionStore, config: SessionConfig) -> Self {
        SessionFactory::from_arc(Arc::new(store), config)
    }

    /// A factory over a store that is already shared.
    pub fn from_arc(store: Arc<dyn DynSessionStore>, config: SessionConfig) -> Self {
        SessionFactory {
            store,
            config: Arc::new(config),
            unknown_ids: Arc::default(),
        }
    }

    /// A factory over a type-erased store.
    pub fn from_arc_store(store: ArcStore, config: SessionConfig) -> Self {
        SessionFactory::from_arc(store.as_dyn().clone(), config)
    }

    /// A handle for one request. `client_id` is the well-formed id from the
    /// request's cookie, if any; `had_cookie` says whether the request carried
    /// a session cookie at all (a malformed one is dropped before it gets
    /// here, but its presence decides whether the response clears it).
    pub fn session(&self, client_id: Option<SessionId>, had_cookie: bool) -> Session {
        Session {
            inner: Arc::new(Inner {
                store: self.store.clone(),
                config: self.config.clone(),
                state: Mutex::new(State::new(client_id, had_cookie)),
                ops: tokio::sync::Mutex::new(()),
                unknown_ids: self.unknown_ids.clone(),
            }),
        }
    }

    /// The shared store.
    pub fn store(&self) -> &Arc<dyn DynSessionStore> {
        &self.store
    }

    /// The settings.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// How many well-formed ids sent by clients were unknown to the store
    /// (never issued, expired or destroyed) and so refused by strict mode,
    /// since the factory was made.
    pub fn unknown_ids(&self) -> u64 {
        self.unknown_ids.load(Ordering::Relaxed)
    }
}

/// The session of one request.
///
/// A cheap, `Clone` handle: the handler and the HTTP layer share one per
/// request. Nothing touches the store until the session is used; then:
///
/// - **Reads** ([`get`](Session::get), [`has`](Session::has),
///   [`keys`](Session::keys), …) load the session once, in one store round
///   trip that also refreshes its idle expiry when due. Later reads are served
///   from the handle.
/// - **Buffered writes** ([`insert`](Session::insert),
///   [`remove`](Session::remove), [`clear`](Session::clear)) are recorded as a
///   delta of the changed keys and flushed in one atomic store operation when
///   the response is produced. Concurrent requests that change different keys
///   all persist. A blind write (no read first) costs one round trip in all.
/// - **Locked transactions** ([`lock`](Session::lock) →
///   [`commit`](Session::commit) / [`rollback`](Session::rollback), or
///   [`put`](Session::put)) serialize read-modify-write across requests and
///   app servers: the lock re-reads the data, and the commit is fenced by the
///   lock's token, so it writes nothing if the lock was lost.
///
/// The layer finishes the session when the response is produced
/// ([`Session::finish`]): it flushes buffered writes and releases every lock
/// still held, committing unless the response is a server error.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), sessionkit_core::Error> {
/// use sessionkit_core::{SessionConfig, SessionFactory};
/// use sessionkit_core::store::MemoryStore;
///
/// let factory = SessionFactory::new(MemoryStore::new(), SessionConfig::default());
///
/// // First request: no cookie.
/// let session = factory.session(None, false);
/// session.insert("user", &"ada")?;
/// let done = session.finish(false).await;
/// let id = session.id().unwrap(); // minted when first written, sent as the cookie
///
/// // Next request, with the cookie.
/// let session = factory.session(Some(id), true);
/// assert_eq!(session.get::<String>("user").await?.as_deref(), Some("ada"));
/// # let _ = done;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn DynSessionStore>,
    config: Arc<SessionConfig>,
    state: Mutex<State>,
    /// Serializes the async operations of one handle, so that a load, a lock
    /// and a commit started from clones of it do not interleave. The state
    /// mutex is never held across an `.await`.
    ops: tokio::sync::Mutex<()>,
    unknown_ids: Arc<AtomicU64>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state();
        f.debug_struct("Session")
            .field("id", &state.id)
            .field("stored", &state.stored)
            .field("lock_depth", &state.lock_depth)
            .finish_non_exhaustive()
    }
}

/// What the response must do with the session cookie, as decided by
/// [`Session::finish`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CookieChange {
    /// Leave the cookie alone (no `Set-Cookie`).
    Keep,
    /// Send the cookie with this id, valid for `max_age`.
    Set {
        /// The id to send.
        id: SessionId,
        /// Time until the server expires the session.
        max_age: Duration,
        /// The session's idle lifetime. It differs from the configured one
        /// when [`Session::set_lifetime`] gave the session its own ("remember
        /// me"); the layer then always sends a persistent cookie.
        lifetime: Duration,
    },
    /// Expire the client's cookie: its session is gone.
    Remove,
}

/// The result of [`Session::finish`].
#[derive(Debug)]
pub struct Finished {
    /// What to do with the cookie.
    pub cookie: CookieChange,
    /// The first error met while flushing or releasing, if any. The HTTP
    /// layer turns it into an error response.
    pub error: Option<Error>,
}

macro_rules! doc_session {
    () => {
        "let session = sessionkit_core::SessionFactory::new(\
            sessionkit_core::store::MemoryStore::new(), \
            sessionkit_core::SessionConfig::default()).session(None, false);"
    };
}

mod bag;

pub use self::bag::Bag;

impl Session {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while the state is locked cannot leave it half-updated in a
        // way that breaks invariants the store relies on (the store is only
        // written through atomic operations), so poisoning is ignored.
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn config(&self) -> &SessionConfig {
        &self.inner.config
    }

    fn store(&self) -> &dyn DynSessionStore {
        &*self.inner.store
    }

    // ----- reads ---------------------------------------------------------

    /// Reads `key`, deserialized as `T`; `None` if absent.
    ///
    /// Loads the session on first use (one store round trip, touch included).
    /// An error means the store failed or the stored value is not a `T`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> sessionkit_core::Result<()> {
    #[doc = concat!("# ", doc_session!())]
    /// session.insert("visits", &3u32)?;
    /// assert_eq!(session.get::<u32>("visits").await?, Some(3));
    /// assert_eq!(session.get::<u32>("missing").await?, None);
    /// # Ok(()) }
    /// ```
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        self.ensure_loaded().await?;
        let state = self.state();
        state.value(key).map(decode_value).transpose()
    }

    /// Whether `key` is set.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> sessionkit_core::Result<()> {
    #[doc = concat!("# ", doc_session!())]
    /// assert!(!session.has("user").await?);
    /// session.insert("user", &"ada")?;
    /// assert!(session.has("user").await?);
    /// # Ok(()) }
    /// ```
    pub async fn has(&self, key: &str) -> Result<bool> {
        self.ensure_loaded().await?;
        Ok(self.state().value(key).is_some())
    }

    /// The keys set, in order.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> sessionkit_core::Result<()> {
    #[doc = concat!("# ", doc_session!())]
    /// session.insert("b", &1)?;
    /// session.insert("a", &2)?;
    /// assert_eq!(session.keys().await?, ["a", "b"]);
    /// # Ok(()) }
    /// ```
    pub async fn keys(&self) -> Result<Vec<String>> {
        self.ensure_loaded().await?;
        Ok(self.state().view().keys().map(str::to_owned).collect())
    }

    /// Whether the session holds no data.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> sessionkit_core::Result<()> {
    #[doc = concat!("# ", doc_session!())]
    /// assert!(session.is_empty().await?);
    /// session.insert("k", &true)?;
    /// assert!(!session.is_empty().await?);
    /// # Ok(()) }
    /// ```
    pub async fn is_empty(&self) -> Result<bool> {
        self.ensure_loaded().await?;
        Ok(self.state().view().is_empty())
    }

    /// Every entry, as JSON values (Phenix's `getData`).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> sessionkit_core::Result<()> {
    #[doc = concat!("# ", doc_session!())]
    /// session.insert("n", &1)?;
    /// let data = session.data().await?;
    /// assert_eq!(data["n"], serde_json::json!(1));
    /// # Ok(()) }
    /// ```
    pub async fn data(&self) -> Result<BTreeMap<String, serde_json::Value>> {
        self.ensure_loaded().await?;
        let view = self.state().view();
        view.iter()
            .map(|(k, v)| Ok((k.to_owned(), decode_value(v)?)))
            .collect()
    }

    /// The session's current id: the client's, a regenerated one, or the one
    /// minted for a new session at its first write. `None` for a session that
    /// has no id yet (or whose id turned out unknown to the store).
    ///
    /// ```
    #[doc = concat!("# ", doc_session!())]
    /// assert_eq!(session.id(), None);
    /// session.insert("k", &1).unwrap();
    /// assert!(session.id().is_some());
    /// ```
    pub fn id(&self) -> Option<SessionId> {
        self.state().id
    }

    /// Whether the session's data is known: it was read from the store, or
    /// there is nothing to read (a new session). Phenix's `isRead`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> sessionkit_core::Result<()> {
    /// use sessionkit_core::{SessionConfig, SessionFactory, SessionId};
    /// use sessionkit_core::store::MemoryStore;
    ///
    /// let factory = SessionFactory::new(MemoryStore::new(), SessionConfig::default());
    /// let session = factory.session(Some(SessionId::generate()), true);
    /// assert!(!session.is_loaded());
    /// session.get::<u8>("k").await?; // unknown id: strict mode starts afresh
    /// assert!(session.is_loaded());
    /// # Ok(()) }
    /// ```
    pub fn is_loaded(&self) -> bool {
        !matches!(self.state().stored, Stored::Unloaded)
    }

    /// Whether this handle holds the session's lock.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> sessionkit_core::Result<()> {
    #[doc = concat!("# ", doc_session!())]
    /// session.lock().await?;
    /// assert!(session.is_locked());
    /// session.commit().await?;
    /// assert!(!session.is_locked());
    /// # Ok(()) }
    /// ```
    pub fn is_locked(&self) -> bool {
        self.state().lock_depth > 0
    }

    /// Reads the session from the store again, even if it was read before.
    /// Changes not yet flushed stay on top of the fresh data.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> sessionkit_core::Result<()> {
    #[doc = concat!("# ", doc_session!())]
    /// session.insert("k", &1)?;
    /// session.reload().await?;
    /// assert_eq!(session.get::<i32>("k").await?, Some(1)); // still pending
    /// # Ok(()) }
    /// ```
    pub async fn reload(&self) -> Result<()> {
        let _op = self.inner.ops.lock().await;
        {
            let mut state = self.state();
            state.used = true;
            if state.id.is_none() || matches!(state.stored, Stored::Fresh) {
                return Ok(());
            }
            state.stored = Stored::Unloaded;
        }
        self.load_locked_op().await
    }

    async fn ensure_loaded(&self) -> Result<()> {
        {
            let mut state = self.state();
            state.used = true;
            if !matches!(state.stored, Stored::Unloaded) {
                return Ok(());
            }
        }
        if self.config().lock_policy() == LockPolicy::WholeRequest && !self.is_finished() {
            return self.lock().await;
        }
        let _op = self.inner.ops.lock().await;
        self.load_locked_op().await
    }

    /// Loads if still unloaded; the caller holds the ops lock.
    async fn load_locked_op(&self) -> Result<()> {
        let id = {
            let state = self.state();
            match (&state.stored, state.id) {
                (Stored::Unloaded, Some(id)) => id,
                _ => return Ok(()),
            }
        };
        let loaded = self.store().load(&id, Some(self.config().touch())).await;
        let loaded = loaded.map_err(|e| e.with_operation("load"))?;
        let mut state = self.state();
        if state.id != Some(id) {
            // Regenerated or destroyed meanwhile by another clone; nothing to do.
            return Ok(());
        }
        match loaded {
            Some(loaded) => {
                if loaded.touched {
                    state.expiry_moved = Some(loaded.record.meta);
                }
                state.stored = Stored::Live {
                    entries: loaded.record.entries,
                    meta: loaded.record.meta,
                };
            }
            None => {
                self.strict_rejection(&id);
                let pending = std::mem::take(&mut state.pending);
                state.become_fresh();
                // Blind writes made before the read now start the new session.
                state.pending = pending;
            }
        }
        Ok(())
    }

    fn strict_rejection(&self, id: &SessionId) {
        self.inner.unknown_ids.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            session = %id.short_hash(),
            "unknown or expired session id not adopted (strict mode)"
        );
    }

    // ----- buffered writes -----------------------------------------------

    fn write(&self, f: impl FnOnce(&mut Delta)) -> Result<()> {
        let mut state = self.state();
        state.used = true;
        if state.finished {
            return Err(Error::new(ErrorKind::ModificationDenied)
                .with_detail("the response was already produced"));
        }
        if state.lock_depth > 0 {
            state.id_for_write();
            f(&mut state.locked);
            return Ok(());
        }
        if self.config().write_policy() == WritePolicy::LockedOnly {
            return Err(Error::new(ErrorKind::ModificationDenied).with_detail(
                "writes need a lock under the locked-only write policy; call lock() first",
            ));
        }
        state.id_for_write();
        f(&mut state.pending);
        Ok(())
    }

    /// Sets `key` to `value`: buffered, or part of the transaction when the
    /// session is locked.
    ///
    /// Fails if `value` cannot be serialized, if the write policy forbids
    /// writes outside a lock, or after the response was produced.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> sessionkit_core::Result<()> {
    #[doc = concat!("# ", doc_session!())]
    /// session.insert("basket", &vec!["apple"])?;
    /// assert_eq!(session.get::<Vec<String>>("basket").await?.unwrap(), ["apple"]);
    /// # Ok(()) }
    /// ```
    pub fn insert<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<()> {
        let bytes = encode_value(value)?;
        self.write(|d| d.set(key, bytes))
    }

    /// Removes `key` (buffered, like [`Session::insert`]).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> sessionkit_core::Result<()> {
    #[doc = concat!("# ", doc_session!())]
    /// session.insert("k", &1)?;
    /// session.remove("k")?;
    /// assert!(!session.has("k").await?);
    /// # Ok(()) }
    /// ```
    pub fn remove(&self, key: &str) -> Result<()> {
        self.write(|d| d.remove(key))
    }

    /// Removes every key (buffered). The session itself and its id stay; use
    /// [`Session::destroy`] to end it.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> sessionkit_core::Result<()> {
    #[doc = concat!("# ", doc_session!())]
    /// session.insert("a", &1)?;
    /// session.clear()?;
    /// assert!(session.is_empty().await?);
    /// # Ok(()) }
    /// ```
    pub fn clear(&self) -> Result<()> {
        self.write(Delta::clear)
    }

    /// Gives this session its own idle lifetime, kept server-side, for
    /// example 30 days when "remember me" is ticked. Also used for the cookie's
    /// `Max-Age`. Buffered like a write.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> sessionkit_core::Result<()> {
    /// use std::time::Duration;
    #[doc = concat!("# ", doc_session!())]
    /// session.insert("user", &"ada")?;
    /// session.set_lifetime(Duration::from_secs(30 * 24 * 3600))?;
    /// # Ok(()) }
    /// ```
    pub fn set_lifetime(&self, lifetime: Duration) -> Result<()> {
        if lifetime < Duration::from_secs(1) {
            return Err(Error::invalid_config(
                "session lifetime",
                "must be at least one second",
            ));
        }
        self.write(|d| d.set_ttl(lifetime))
    }

    // ----- locks ----------------------------------------------------------

    /// Takes the session's exclusive lock, waiting (bounded) while another
    /// request holds it, and re-reads the data fresh.
    ///
    /// Writes made while locked are part of the transaction until
    /// [`commit`](Session::commit) or [`rollback`](Session::rollback). Locks
    /// are reentrant: each `lock` needs its own `commit`, `rollback` or
    /// [`unlock`](Session::unlock). While held, the lock is renewed in the
    /// background. Fails with [`ErrorKind::LockTimeout`] after
    /// [`LockConfig::wait`](crate::LockConfig::wait).
    ///
    /// A new session (no id yet) is locked without a store call: nobody else
    /// can know its id.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> sessionkit_core::Result<()> {
    #[doc = concat!("# ", doc_session!())]
    /// session.lock().await?;
    /// let n = session.get::<u64>("n").await?.unwrap_or(0);
    /// session.insert("n", &(n + 1))?;
    /// session.commit().await?;
    /// # Ok(()) }
    /// ```
    pub async fn lock(&self) -> Result<()> {
        let _op = self.inner.ops.lock().await;
        self.lock_locked_op().await
    }

    async fn lock_locked_op(&self) -> Result<()> {
        let id = {
            let mut state = self.state();
            state.used = true;
            if state.finished {
                return Err(Error::new(ErrorKind::ModificationDenied)
                    .with_detail("the response was already produced"));
            }
            if state.lock_depth > 0 {
                state.lock_depth += 1;
                return Ok(());
            }
            match (&state.stored, state.id) {
                (Stored::Fresh, _) | (_, None) => {
                    state.lock = LockHold::Local;
                    state.lock_depth = 1;
                    return Ok(());
                }
                (_, Some(id)) => id,
            }
        };
        let config = self.config().lock().clone();
        let deadline = tokio::time::Instant::now() + config.wait;
        let mut backoff = Backoff::new(&config);
        let mut waited = false;
        loop {
            let outcome = self
                .store()
                .lock(&id, config.ttl)
                .await
                .map_err(|e| e.with_operation("lock"))?;
            match outcome {
                Locked::Acquired { token, record } => {
                    let same_id = self.state().id == Some(id);
                    if !same_id {
                        let _ = self.store().unlock(&id, &token).await;
                        return Err(Error::new(ErrorKind::SessionGone)
                            .with_operation("lock")
                            .with_detail("the session changed id while the lock was awaited"));
                    }
                    let mut state = self.state();
                    state.stored = Stored::Live {
                        entries: record.entries,
                        meta: record.meta,
                    };
                    state.lock = LockHold::Store(HeldLock::start(
                        self.inner.store.clone(),
                        id,
                        token,
                        &config,
                    ));
                    state.lock_depth = 1;
                    if waited {
                        tracing::debug!(session = %id.short_hash(), "session lock acquired after waiting");
                    }
                    return Ok(());
                }
                Locked::Absent => {
                    self.strict_rejection(&id);
                    let mut state = self.state();
                    let pending = std::mem::take(&mut state.pending);
                    state.become_fresh();
                    state.pending = pending;
                    state.lock = LockHold::Local;
                    state.lock_depth = 1;
                    return Ok(());
                }
                Locked::Held => {
                    let pause = backoff.next_pause();
                    let now = tokio::time::Instant::now();
                    if now >= deadline {
                        tracing::warn!(session = %id.short_hash(), wait = ?config.wait, "timed out waiting for the session lock");
                        return Err(Error::new(ErrorKind::LockTimeout)
                            .with_operation("lock")
                            .with_store(self.store().name())
                            .with_detail(format!(
                                "held by another request for more than {:?}",
                                config.wait
                            )));
                    }
                    if !waited {
                        tracing::debug!(session = %id.short_hash(), "waiting for the session lock");
                        waited = true;
                    }
                    tokio::time::sleep_until((now + pause).min(deadline)).await;
                }
            }
        }
    }

    /// Writes the changes made under the lock (and any buffered before it) in
    /// one atomic, fenced store operation, and releases one level of the lock
    /// (the store lock goes with the last level, in the same operation).
    ///
    /// Fails with [`ErrorKind::LockLost`] if the lock expired or was taken
    /// meanwhile (nothing is written), with [`ErrorKind::SessionGone`] if the
    /// session was destroyed, and with [`ErrorKind::ModificationDenied`] when
    /// the session is not locked.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> sessionkit_core::Result<()> {
    #[doc = concat!("# ", doc_session!())]
    /// session.lock().await?;
    /// session.insert("k", &1)?;
    /// session.commit().await?;
    /// assert!(session.commit().await.is_err()); // not locked any more
    /// # Ok(()) }
    /// ```
    pub async fn commit(&self) -> Result<()> {
        let _op = self.inner.ops.lock().await;
        self.release_locked_op(Release::Commit).await
    }

    /// Discards the changes made under the lock and releases one level of it.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> sessionkit_core::Result<()> {
    #[doc = concat!("# ", doc_session!())]
    /// session.lock().await?;
    /// session.insert("k", &1)?;
    /// session.rollback().await?;
    /// assert!(!session.has("k").await?);
    /// # Ok(()) }
    /// ```
    pub async fn rollback(&self) -> Result<()> {
        let _op = self.inner.ops.lock().await;
        self.release_locked_op(Release::Rollback).await
    }

    /// Releases one level of the lock without writing. Changes made under it
    /// are kept as buffered writes, flushed when the response is produced
    /// (under [`WritePolicy::LockedOnly`] they are discarded instead).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> sessionkit_core::Result<()> {
    #[doc = concat!("# ", doc_session!())]
    /// session.lock().await?;
    /// session.insert("k", &1)?;
    /// session.unlock().await?;
    /// assert!(!session.is_locked());
    /// assert_eq!(session.get::<i32>("k").await?, Some(1)); // still buffered
    /// # Ok(()) }
    /// ```
    pub async fn unlock(&self) -> Result<()> {
        let _op = self.inner.ops.lock().await;
        self.release_locked_op(Release::Unlock).await
    }

    /// Locks, sets `key`, commits: one locked write (Phenix's `put`).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> sessionkit_core::Result<()> {
    #[doc = concat!("# ", doc_session!())]
    /// session.put("locale", &"es").await?;
    /// assert_eq!(session.get::<String>("locale").await?.as_deref(), Some("es"));
    /// assert!(!session.is_locked());
    /// # Ok(()) }
    /// ```
    pub async fn put<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<()> {
        let bytes = encode_value(value)?;
        let _op = self.inner.ops.lock().await;
        self.lock_locked_op().await?;
        self.state().locked.set(key, bytes);
        self.release_locked_op(Release::Commit).await
    }

    async fn release_locked_op(&self, how: Release) -> Result<()> {
        let (id, fence_token, last, delta, lost) = {
            let mut state = self.state();
            if state.lock_depth == 0 {
                return Err(Error::new(ErrorKind::ModificationDenied)
                    .with_operation(how.name())
                    .with_detail("the session is not locked"));
            }
            let last = state.lock_depth == 1;
            let mut delta = Delta::default();
            match how {
                Release::Commit => {
                    delta = std::mem::take(&mut state.pending);
                    delta.merge(&std::mem::take(&mut state.locked));
                }
                Release::Rollback => state.locked = Delta::default(),
                Release::Unlock if last => {
                    let locked = std::mem::take(&mut state.locked);
                    if self.config().write_policy() == WritePolicy::Buffered {
                        state.pending.merge(&locked);
                    }
                }
                Release::Unlock => {}
            }
            let (token, lost) = match &state.lock {
                LockHold::Store(held) => (Some(held.token), held.is_lost()),
                _ => (None, false),
            };
            (state.id, token, last, delta, lost)
        };

        let Some(token) = fence_token else {
            // A local lock: a new session nobody else knows.
            if !delta.is_empty()
                && let Err(e) = self.flush_fresh(delta).await
            {
                self.after_release(last);
                return Err(e);
            }
            self.after_release(last);
            return Ok(());
        };
        let id = id.expect("a store lock implies an id");

        if lost {
            self.after_lock_lost(&id);
            return Err(self.lock_lost_error(&id, how.name()));
        }
        if delta.is_empty() {
            if last {
                self.state().lock = LockHold::None;
                self.store()
                    .unlock(&id, &token)
                    .await
                    .map_err(|e| e.with_operation("unlock"))?;
            }
            self.after_release(last);
            return Ok(());
        }
        let fence = Fence {
            token: &token,
            release: last,
        };
        let applied = self.store().apply(&id, &delta, Some(fence)).await;
        match applied {
            Ok(Applied::Applied(meta)) => {
                self.record_applied(&delta, meta);
                if last {
                    self.state().lock = LockHold::None;
                }
                self.after_release(last);
                Ok(())
            }
            Ok(Applied::LockLost) => {
                self.after_lock_lost(&id);
                Err(self.lock_lost_error(&id, how.name()))
            }
            Ok(Applied::Gone) => {
                let mut state = self.state();
                state.lock = LockHold::None;
                state.lock_depth = 0;
                state.become_fresh();
                tracing::info!(session = %id.short_hash(), "commit refused: the session was destroyed meanwhile");
                Err(Error::new(ErrorKind::SessionGone)
                    .with_operation(how.name())
                    .with_store(self.store().name())
                    .with_detail("the session was destroyed or expired while locked"))
            }
            Err(e) => {
                // Put the changes back: the caller may retry or roll back.
                let mut state = self.state();
                let later = std::mem::replace(&mut state.locked, delta);
                state.locked.merge(&later);
                Err(e.with_operation(how.name()))
            }
        }
    }

    fn lock_lost_error(&self, id: &SessionId, op: &'static str) -> Error {
        tracing::warn!(session = %id.short_hash(), "fenced write refused: session lock lost");
        Error::new(ErrorKind::LockLost)
            .with_operation(op)
            .with_store(self.store().name())
            .with_detail("the lock expired or was taken by another request; nothing was written")
    }

    fn after_lock_lost(&self, _id: &SessionId) {
        let mut state = self.state();
        state.lock = LockHold::None;
        state.lock_depth = 0;
        state.locked = Delta::default();
        // What was read under the lost lock may be stale: read again next time.
        if matches!(state.stored, Stored::Live { .. }) {
            state.stored = Stored::Unloaded;
        }
    }

    fn after_release(&self, last: bool) {
        let mut state = self.state();
        state.lock_depth -= 1;
        if last {
            state.lock = LockHold::None;
        }
    }

    /// Records a successful write of `delta` in the handle.
    fn record_applied(&self, delta: &Delta, meta: Meta) {
        let mut state = self.state();
        if let Stored::Live { entries, meta: m } = &mut state.stored {
            entries.apply(delta);
            *m = meta;
        } else {
            // Written blind: the handle never saw the rest of the data.
        }
        state.expiry_moved = Some(meta);
    }

    /// Creates a new session from `delta`, minting ids until one is free.
    async fn flush_fresh(&self, delta: Delta) -> Result<()> {
        let mut entries = Entries::default();
        entries.apply(&delta);
        if entries.is_empty() {
            // Empty sessions are never stored.
            return Ok(());
        }
        let config = self.config();
        let lifetime = delta
            .ttl_ms()
            .map(Duration::from_millis)
            .unwrap_or(config.lifetime());
        let record = Record {
            entries,
            meta: Meta::new(now_ms(), lifetime, config.absolute_lifetime()),
        };
        let mut id = self.state().id_for_write();
        for _ in 0..4 {
            match self
                .store()
                .create(&id, &record)
                .await
                .map_err(|e| e.with_operation("create"))?
            {
                Created::Created => {
                    let mut state = self.state();
                    state.id = Some(id);
                    state.expiry_moved = Some(record.meta);
                    state.stored = Stored::Live {
                        entries: record.entries,
                        meta: record.meta,
                    };
                    tracing::debug!(session = %id.short_hash(), "session created");
                    return Ok(());
                }
                // 256 random bits collide only if the generator is broken;
                // never overwrite, try another id.
                Created::IdTaken => id = SessionId::generate(),
            }
        }
        Err(Error::new(ErrorKind::StoreUnavailable)
            .with_operation("create")
            .with_store(self.store().name())
            .with_detail("the store reported every fresh id as taken"))
    }

    // ----- id changes -----------------------------------------------------

    /// Gives the session a new id, keeping its data, and deletes the old id in
    /// the same atomic store operation; the response carries the new cookie.
    /// Call it at login and at every privilege change, so that an id fixed or
    /// seen before cannot ride along
    /// ([OWASP: renew the session id](https://cheatsheetseries.owasp.org/cheatsheets/Session_Management_Cheat_Sheet.html#renew-the-session-id-after-any-privilege-level-change)).
    ///
    /// A session that is not stored yet just gets a new id, without a store
    /// call. A held lock moves to the new id.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> sessionkit_core::Result<()> {
    #[doc = concat!("# ", doc_session!())]
    /// session.insert("user", &"ada")?;
    /// let before = session.id();
    /// session.regenerate().await?;
    /// assert_ne!(session.id(), before);
    /// assert_eq!(session.get::<String>("user").await?.as_deref(), Some("ada"));
    /// # Ok(()) }
    /// ```
    pub async fn regenerate(&self) -> Result<()> {
        let _op = self.inner.ops.lock().await;
        let (old, token) = {
            let mut state = self.state();
            state.used = true;
            match (&state.stored, state.id) {
                (Stored::Fresh, _) | (_, None) => {
                    if state.id.is_some() {
                        state.id = Some(SessionId::generate());
                    }
                    return Ok(());
                }
                (_, Some(old)) => {
                    let token = match &state.lock {
                        LockHold::Store(held) => Some(held.token),
                        _ => None,
                    };
                    (old, token)
                }
            }
        };
        for _ in 0..4 {
            let new = SessionId::generate();
            let changed = self
                .store()
                .change_id(&old, &new, token.as_ref())
                .await
                .map_err(|e| e.with_operation("change_id"))?;
            match changed {
                IdChanged::Changed(meta) => {
                    let mut state = self.state();
                    state.id = Some(new);
                    state.expiry_moved = Some(meta);
                    if let Stored::Live { meta: m, .. } = &mut state.stored {
                        *m = meta;
                    }
                    if let (LockHold::Store(_), Some(token)) = (&state.lock, token) {
                        state.lock = LockHold::Store(HeldLock::start(
                            self.inner.store.clone(),
                            new,
                            token,
                            self.config().lock(),
                        ));
                    }
                    tracing::info!(old = %old.short_hash(), new = %new.short_hash(), "session id regenerated");
                    return Ok(());
                }
                IdChanged::Gone => {
                    // Expired or destroyed meanwhile: nothing to carry over.
                    // What was buffered starts a new session under a new id.
                    let mut state = self.state();
                    let pending = std::mem::take(&mut state.pending);
                    state.become_fresh();
                    state.pending = pending;
                    state.lock = if state.lock_depth > 0 {
                        LockHold::Local
                    } else {
                        LockHold::None
                    };
                    return Ok(());
                }
                IdChanged::IdTaken => continue,
                IdChanged::LockLost => {
                    self.after_lock_lost(&old);
                    return Err(self.lock_lost_error(&old, "regenerate"));
                }
            }
        }
        Err(Error::new(ErrorKind::StoreUnavailable)
            .with_operation("change_id")
            .with_store(self.store().name())
            .with_detail("the store reported every fresh id as taken"))
    }

    /// Ends the session: deletes it (and its lock) from the store, discards
    /// pending changes, and expires the cookie. A write after it in the same
    /// request starts a new session with a new id.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> sessionkit_core::Result<()> {
    #[doc = concat!("# ", doc_session!())]
    /// session.insert("user", &"ada")?;
    /// session.destroy().await?;
    /// assert!(session.is_empty().await?);
    /// assert_eq!(session.id(), None);
    /// # Ok(()) }
    /// ```
    pub async fn destroy(&self) -> Result<()> {
        let _op = self.inner.ops.lock().await;
        let id = {
            let mut state = self.state();
            state.used = true;
            let id = match state.stored {
                Stored::Fresh => None,
                _ => state.id,
            };
            state.become_fresh();
            state.lock = LockHold::None;
            state.lock_depth = 0;
            id
        };
        if let Some(id) = id {
            self.store()
                .destroy(&id)
                .await
                .map_err(|e| e.with_operation("destroy"))?;
            tracing::info!(session = %id.short_hash(), "session destroyed");
        }
        Ok(())
    }

    // ----- end of request -------------------------------------------------

    fn is_finished(&self) -> bool {
        self.state().finished
    }

    /// Whether [`Session::finish`] has work to do. `false` for a request that
    /// never used its session; the layer then skips the finish entirely.
    pub fn needs_finish(&self) -> bool {
        self.state().used
    }

    /// Ends the request's use of the session; the HTTP layer calls it when the
    /// response is produced.
    ///
    /// Releases every lock still held (committing or rolling back as the
    /// [`ReleasePolicy`] says, given whether the response is a server error),
    /// flushes buffered writes in one store operation, and says what to do
    /// with the cookie. After it, writes through any clone of the handle are
    /// refused.
    ///
    /// A buffered flush to a session that has expired or been destroyed
    /// meanwhile never brings it back: if the request had read the session,
    /// the flush fails with [`ErrorKind::SessionGone`]; if it wrote blind,
    /// its changes start a new session under a new id, as if they had come
    /// just after the session ended.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use sessionkit_core::CookieChange;
    #[doc = concat!("# ", doc_session!())]
    /// session.insert("k", &1).unwrap();
    /// let finished = session.finish(false).await;
    /// assert!(finished.error.is_none());
    /// assert!(matches!(finished.cookie, CookieChange::Set { .. }));
    /// assert!(session.insert("k", &2).is_err());
    /// # }
    /// ```
    pub async fn finish(&self, server_error: bool) -> Finished {
        let _op = self.inner.ops.lock().await;
        let mut error = None;

        // Whole-request locking: blind writes are serialized like the rest.
        if self.config().lock_policy() == LockPolicy::WholeRequest {
            let needs_lock = {
                let state = self.state();
                state.lock_depth == 0 && !state.pending.is_empty()
            };
            if needs_lock && let Err(e) = self.lock_locked_op().await {
                error = Some(e);
            }
        }

        let commit = match self.config().release_policy() {
            ReleasePolicy::CommitUnlessServerError => !server_error,
            ReleasePolicy::Commit => true,
            ReleasePolicy::Rollback => false,
        };
        while self.state().lock_depth > 0 {
            let depth = self.state().lock_depth;
            if depth > 1 {
                // Inner levels fold into the outermost one.
                self.state().lock_depth = 1;
            }
            let how = if commit {
                Release::Commit
            } else {
                Release::Rollback
            };
            if let Err(e) = self.release_locked_op(how).await {
                // Locks on a failed path are released, not retried.
                let mut state = self.state();
                state.lock = LockHold::None;
                state.lock_depth = 0;
                error.get_or_insert(e);
            }
        }

        if error.is_none()
            && let Err(e) = self.flush_pending().await
        {
            error = Some(e);
        }

        let mut state = self.state();
        state.finished = true;
        // The expiry the client must learn about: the one the store reported
        // when it moved (a touch, a write, a creation, a new id).
        let meta = match &state.stored {
            Stored::Live { meta, .. } => Some(*meta),
            _ => state.expiry_moved,
        };
        let new_id = state.id != state.client_id;
        let cookie = match (state.id, &state.stored, meta) {
            (_, Stored::Fresh, _) if state.client_had_cookie => CookieChange::Remove,
            (Some(id), Stored::Live { .. } | Stored::Unloaded, Some(meta))
                if new_id || state.expiry_moved.is_some() =>
            {
                CookieChange::Set {
                    id,
                    max_age: meta.remaining(now_ms()),
                    lifetime: meta.ttl(),
                }
            }
            _ => CookieChange::Keep,
        };
        Finished { cookie, error }
    }

    async fn flush_pending(&self) -> Result<()> {
        let (id, delta, blind) = {
            let mut state = self.state();
            if state.pending.is_empty() {
                return Ok(());
            }
            let delta = std::mem::take(&mut state.pending);
            match (&state.stored, state.id) {
                (Stored::Fresh, _) | (_, None) => (None, delta, false),
                (stored, Some(id)) => (Some(id), delta, matches!(stored, Stored::Unloaded)),
            }
        };
        let Some(id) = id else {
            return self.flush_fresh(delta).await;
        };
        let applied = self
            .store()
            .apply(&id, &delta, None)
            .await
            .map_err(|e| e.with_operation("apply"))?;
        match applied {
            Applied::Applied(meta) => {
                self.record_applied(&delta, meta);
                Ok(())
            }
            Applied::Gone if blind => {
                // The request never read the session, so its changes do not
                // depend on the old data: they start a new session.
                tracing::debug!(session = %id.short_hash(), "blind write to an ended session starts a new one");
                self.state().become_fresh();
                self.flush_fresh(delta).await
            }
            Applied::Gone => {
                self.state().become_fresh();
                tracing::info!(session = %id.short_hash(), "flush refused: the session was destroyed meanwhile");
                Err(Error::new(ErrorKind::SessionGone)
                    .with_operation("apply")
                    .with_store(self.store().name())
                    .with_detail("the session was destroyed or expired during the request; its changes were not written"))
            }
            Applied::LockLost => Err(Error::new(ErrorKind::LockLost)
                .with_operation("apply")
                .with_store(self.store().name())),
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // A handle dropped with its lock held (a panicking handler, a request
        // cancelled mid-flight) releases the lock instead of blocking the
        // session until the TTL passes.
        let state = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        if let (LockHold::Store(held), Some(id)) = (&state.lock, state.id) {
            let token = held.token;
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let store = self.store.clone();
                rt.spawn(async move {
                    let _ = store.unlock(&id, &token).await;
                });
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Release {
    Commit,
    Rollback,
    Unlock,
}

impl Release {
    fn name(self) -> &'static str {
        match self {
            Release::Commit => "commit",
            Release::Rollback => "rollback",
            Release::Unlock => "unlock",
        }
    }
}
