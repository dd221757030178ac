//! The `Session` handle: lazy reads, buffered writes, locked transactions.

mod gate;
mod keys;
mod lock;
mod state;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::{decode_value_of, encode_value_of};
use crate::config::{LockPolicy, SessionConfig, WritePolicy};
use crate::error::{Error, ErrorKind, Result};
use crate::events::{Events, SessionEvent};
use crate::id::SessionId;
use crate::record::Delta;
use crate::store::{ArcStore, DynSessionStore, SessionStore};

use self::gate::Gates;
use self::state::{State, Stored};

/// Makes [`Session`] handles for requests: the store and the settings they
/// share.
///
/// An HTTP integration owns one and calls [`SessionFactory::request`] per
/// request; tests and background jobs call [`SessionFactory::session`].
///
/// ```
/// use sessionkit_core::{SessionConfig, SessionFactory};
/// use sessionkit_core::store::MemoryStore;
///
/// let factory = SessionFactory::new(MemoryStore::new(), SessionConfig::default());
/// let session = factory.session(None);
/// assert_eq!(session.id(), None);
/// ```
#[derive(Debug, Clone)]
pub struct SessionFactory {
    shared: Arc<Shared>,
}

/// What every handle of a factory shares: one reference count per request
/// instead of one per part.
#[derive(Debug)]
struct Shared {
    store: Arc<dyn DynSessionStore>,
    config: SessionConfig,
    unknown_ids: AtomicU64,
    gates: Arc<Gates>,
    /// The application's observer, if it registered one.
    events: Events,
}

impl SessionFactory {
    /// A factory over `store`.
    pub fn new(store: impl SessionStore, config: SessionConfig) -> Self {
        SessionFactory::from_arc(Arc::new(store), config)
    }

    /// A factory over a store that is already shared.
    pub fn from_arc(store: Arc<dyn DynSessionStore>, config: SessionConfig) -> Self {
        SessionFactory {
            shared: Arc::new(Shared {
                store,
                config,
                unknown_ids: AtomicU64::new(0),
                gates: Arc::default(),
                events: Events::default(),
            }),
        }
    }

    /// This factory, with `observer` told of what happens to its sessions
    /// (see [`events`](crate::events)): called on a thread of its own, off
    /// the requests' path. Call it when building the factory.
    pub fn with_observer(self, observer: impl Fn(&SessionEvent) + Send + 'static) -> Self {
        SessionFactory {
            shared: Arc::new(Shared {
                store: self.shared.store.clone(),
                config: self.shared.config.clone(),
                unknown_ids: AtomicU64::new(self.unknown_ids()),
                gates: self.shared.gates.clone(),
                events: Events::to(observer),
            }),
        }
    }

    /// How many events were dropped because the observer fell behind (its
    /// queue holds 1,024).
    pub fn dropped_events(&self) -> u64 {
        self.shared.events.dropped()
    }

    /// A factory over a type-erased store.
    pub fn from_arc_store(store: ArcStore, config: SessionConfig) -> Self {
        SessionFactory::from_arc(store.as_dyn().clone(), config)
    }

    /// A factory over a [`MemoryStore`](crate::store::MemoryStore) with the
    /// default settings: the start of a handler's unit test. See
    /// [`Session::next_request`] for the rest of the test path.
    ///
    /// ```
    /// use sessionkit_core::SessionFactory;
    ///
    /// let session = SessionFactory::for_tests().session(None);
    /// assert_eq!(session.id(), None);
    /// ```
    pub fn for_tests() -> Self {
        SessionFactory::new(crate::store::MemoryStore::new(), SessionConfig::default())
    }

    /// A handle on the session a request presented `ids` for: `None` (no
    /// cookie), a [`SessionId`], or any [`Presented`]. For work outside
    /// an HTTP integration: tests, background jobs (which persist with
    /// [`Session::save`] or a transaction). Integrations use
    /// [`SessionFactory::request`], which also finishes the request.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> sessionkit_core::Result<()> {
    /// use sessionkit_core::SessionFactory;
    ///
    /// let factory = SessionFactory::for_tests();
    /// let first = factory.session(None);
    /// first.insert("user", &"ada")?;
    /// first.save().await?;
    ///
    /// let again = factory.session(first.id());
    /// assert_eq!(again.get::<String>("user").await?.as_deref(), Some("ada"));
    /// # Ok(()) }
    /// ```
    pub fn session(&self, ids: impl Into<Presented>) -> Session {
        Session {
            inner: Arc::new(Inner {
                shared: self.shared.clone(),
                state: Mutex::new(State::new(ids.into())),
                turns: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// The shared store.
    pub fn store(&self) -> &Arc<dyn DynSessionStore> {
        &self.shared.store
    }

    /// The settings.
    pub fn config(&self) -> &SessionConfig {
        &self.shared.config
    }

    /// How many well-formed ids sent by clients were unknown to the store
    /// (never issued, expired or destroyed) and so refused by strict mode,
    /// since the factory was made.
    pub fn unknown_ids(&self) -> u64 {
        self.shared.unknown_ids.load(Ordering::Relaxed)
    }
}

/// The session ids a request presented, as the HTTP layer read them from
/// its cookies.
///
/// # Security
///
/// Several cookies of the session's name in one request are what a *cookie
/// tossing* attack looks like: a sibling subdomain (or a script on one) plants
/// a cookie of the same name with a `Domain` or a longer `Path`, and the
/// browser then sends both. The session tries the well-formed ids in the
/// order they were sent, at most [`Presented::MAX_CANDIDATES`] of them (one
/// store read each, only in this case), and adopts the first the store knows.
/// It never answers such a request with a removal of the cookie: a removal
/// can only reach the host-only cookie, which is the victim's, and would
/// leave the planted one as the only cookie. When none is known, the
/// response leaves the cookies alone (a write sets a new host-only cookie).
///
/// Which cookie comes first is up to the browser (longer `Path` first), so a
/// planted cookie can win; the defence against tossing is the `__Host-`
/// cookie name prefix, which forbids `Domain` and requires `Path=/` and
/// `Secure`, so that no other host can set a cookie of that name
/// ([OWASP: cookie prefixes](https://cheatsheetseries.owasp.org/cheatsheets/Session_Management_Cheat_Sheet.html#cookie-prefixes)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Presented {
    /// No session cookie.
    #[default]
    Nothing,
    /// One session cookie, with its id when well-formed (`None` for a
    /// malformed or badly signed cookie: its presence alone makes the
    /// response clear it).
    One(Option<SessionId>),
    /// Several session cookies: their well-formed ids, in the order sent.
    Several(Vec<SessionId>),
}

impl Presented {
    /// How many of several ids a request is tried with, at most.
    pub const MAX_CANDIDATES: usize = 4;
}

/// One well-formed cookie.
impl From<SessionId> for Presented {
    fn from(id: SessionId) -> Self {
        Presented::One(Some(id))
    }
}

/// `None`: no cookie; `Some(id)`: one well-formed cookie.
impl From<Option<SessionId>> for Presented {
    fn from(id: Option<SessionId>) -> Self {
        match id {
            Some(id) => Presented::One(Some(id)),
            None => Presented::Nothing,
        }
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
///   [`remove`](Session::remove), [`discard`](Session::discard),
///   [`clear`](Session::clear)) are recorded as a
///   delta of the changed keys and flushed in one atomic store operation when
///   the response is produced. Concurrent requests that change different keys
///   all persist. A blind write (no read first) costs one round trip in all.
/// - **Locked transactions** ([`lock`](Session::lock) →
///   [`commit`](Session::commit) / [`rollback`](Session::rollback), or
///   [`transaction`](Session::transaction) and [`put`](Session::put))
///   serialize read-modify-write across requests and
///   app servers: the lock re-reads the data, and the commit is fenced by the
///   lock's token, so it writes nothing if the lock was lost.
///
/// The layer finishes the session when the response is produced
/// ([`RequestSession::finish`]): it flushes buffered writes and releases every lock
/// still held, committing when the response is a success or a redirect (see
/// [`ReleasePolicy`](crate::ReleasePolicy)).
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
/// let session = factory.session(None);
/// session.insert("user", &"ada")?;
/// session.save().await?; // the layer does this when the response is produced
/// let id = session.id().unwrap(); // minted when first written, sent as the cookie
///
/// // Next request, with the cookie.
/// let session = factory.session(id);
/// assert_eq!(session.get::<String>("user").await?.as_deref(), Some("ada"));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    state: Mutex<State>,
    /// Gives the async operations of one handle their turns, so that a
    /// load, a lock and a commit started from clones of it do not interleave
    /// (named "turn", not "lock", because a session's lock is the store's).
    /// The state mutex is never held across an `.await`.
    turns: tokio::sync::Mutex<()>,
}

/// The id as a short hash, whether and what was loaded, the names of pending
/// keys and the lock: never a value, nor the id itself, so that a handler
/// under `#[tracing::instrument]` logs no secret.
impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state();
        f.debug_struct("Session")
            .field("id", &state.id)
            .field("stored", &state.stored)
            .field("pending", &state.pending)
            .field("lock", &state.lock)
            .finish_non_exhaustive()
    }
}

macro_rules! doc_session {
    () => {
        "let session = sessionkit_core::SessionFactory::for_tests().session(None);"
    };
}

// Declared after `doc_session!` so that their doc examples can use it.
mod bag;
mod csrf;
mod flash;
mod lifecycle;
mod owner;
mod request;
mod tagged;
mod transaction;

pub use self::bag::Bag;
pub use self::csrf::CsrfCheck;
pub use self::request::{CookieChange, Finished, RequestSession};
pub use self::tagged::SessionOf;

impl Session {
    /// Waits for the handle's turn, which orders the store calls of one
    /// request's clones of the handle. Uncontended nearly always (one
    /// request is one handler), so it is tried without a future first.
    async fn turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        match self.inner.turns.try_lock() {
            Ok(turn) => turn,
            Err(_) => self.inner.turns.lock().await,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while the state is locked cannot leave it half-updated in a
        // way that breaks invariants the store relies on (the store is only
        // written through atomic operations), so poisoning is ignored.
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn config(&self) -> &SessionConfig {
        &self.inner.shared.config
    }

    fn store(&self) -> &dyn DynSessionStore {
        &*self.inner.shared.store
    }

    // ----- reads ---------------------------------------------------------

    /// Reads `key`, deserialized as `T`; `None` if absent.
    ///
    /// Loads the session on first use (one store round trip, touch included).
    /// An error means the store failed.
    ///
    /// A stored value that is not a `T` (after a deploy that changed the
    /// type kept under `key`, say) reads as absent, with a warning in the
    /// log that names the key and the expected type, never the value: the
    /// handler goes on as for a new visitor and its next write of `key`
    /// replaces the old value, instead of every request of that client
    /// failing until the session ends.
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
        keys::check_plain(key)?;
        self.entry(key).await
    }

    /// Reads `key`, or `default` when it is absent.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> sessionkit_core::Result<()> {
    #[doc = concat!("# ", doc_session!())]
    /// assert_eq!(session.get_or("locale", "en".to_owned()).await?, "en");
    /// session.insert("locale", &"es")?;
    /// assert_eq!(session.get_or("locale", "en".to_owned()).await?, "es");
    /// # Ok(()) }
    /// ```
    pub async fn get_or<T: DeserializeOwned>(&self, key: &str, default: T) -> Result<T> {
        Ok(self.get(key).await?.unwrap_or(default))
    }

    /// Reads any entry, plain or reserved (for bags and flash messages); a
    /// value that is not a `T` reads as absent (see [`Session::get`]).
    pub(crate) async fn entry<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        self.ensure_loaded().await?;
        let state = self.state();
        let Some(bytes) = state.value(key) else {
            return Ok(None);
        };
        match decode_value_of(key, bytes) {
            Ok(value) => Ok(Some(value)),
            Err(err) => {
                // The error names the key and what was expected, never the
                // value (which may be a secret).
                tracing::warn!(
                    error = %err,
                    cause = %std::error::Error::source(&err).map(ToString::to_string).unwrap_or_default(),
                    "a session value of another type reads as absent"
                );
                Ok(None)
            }
        }
    }

    /// The keys of every entry whose key starts with `prefix`, without it.
    pub(crate) async fn keys_under(&self, prefix: &str) -> Result<Vec<String>> {
        self.ensure_loaded().await?;
        Ok(self
            .state()
            .view()
            .keys()
            .filter_map(|k| k.strip_prefix(prefix).map(str::to_owned))
            .collect())
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
        keys::check_plain(key)?;
        self.ensure_loaded().await?;
        Ok(self.state().value(key).is_some())
    }

    /// The plain keys set, in order: not the entries of bags nor flash
    /// messages, which live in a namespace of their own.
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
        Ok(self
            .state()
            .view()
            .keys()
            .filter(|k| keys::is_plain(k))
            .map(str::to_owned)
            .collect())
    }

    /// Whether the session holds no plain keys (bags and flash messages
    /// aside).
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
        Ok(!self.state().view().keys().any(keys::is_plain))
    }

    /// Every plain entry, as JSON values (bags and flash messages aside).
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
            .filter(|(k, _)| keys::is_plain(k))
            .map(|(k, v)| Ok((k.to_owned(), decode_value_of(k, v)?)))
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
    /// there is nothing to read (a new session).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> sessionkit_core::Result<()> {
    /// use sessionkit_core::{SessionConfig, SessionFactory, SessionId};
    /// use sessionkit_core::store::MemoryStore;
    ///
    /// let factory = SessionFactory::new(MemoryStore::new(), SessionConfig::default());
    /// let session = factory.session(SessionId::generate());
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
        self.state().is_locked()
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
        let _turn = self.turn().await;
        {
            let mut state = self.state();
            state.used = true;
            if state.id.is_none() || matches!(state.stored, Stored::Fresh) {
                return Ok(());
            }
            state.stored = Stored::Unloaded;
        }
        self.load_in_turn().await
    }

    async fn ensure_loaded(&self) -> Result<()> {
        {
            let mut state = self.state();
            state.used = true;
            state.csrf_verdict()?;
            if !matches!(state.stored, Stored::Unloaded) {
                return Ok(());
            }
        }
        if self.config().lock_policy() == LockPolicy::WholeRequest && !self.is_finished() {
            return self.lock().await;
        }
        let _turn = self.turn().await;
        self.load_in_turn().await
    }

    /// Loads if still unloaded; the caller has the handle's turn.
    async fn load_in_turn(&self) -> Result<()> {
        loop {
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
                    state.adopt_live(loaded.record.entries, loaded.record.meta);
                    return state.csrf_verdict();
                }
                None => {
                    self.strict_rejection(&id);
                    if state.next_candidate().is_none() {
                        state.found_gone();
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Decides a pending CSRF check before a store call that would not read
    /// the session (a blind flush, a destroy, a regenerate): reads it, as the
    /// check must; the caller has the handle's turn. `Err` when refused.
    async fn settle_csrf_in_turn(&self) -> Result<()> {
        if self.state().csrf_pending() {
            self.load_in_turn().await?;
        }
        self.state().csrf_verdict()
    }

    /// The error for a store that called every fresh id taken: only a broken
    /// store (or generator) can get there.
    fn ids_exhausted(&self, operation: &'static str) -> Error {
        Error::new(ErrorKind::StoreUnavailable)
            .with_operation(operation)
            .with_store(self.store().name())
            .with_detail("the store reported every fresh id as taken")
    }

    fn strict_rejection(&self, id: &SessionId) {
        self.inner
            .shared
            .unknown_ids
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            session = %id.short_hash(),
            "unknown or expired session id not adopted (strict mode)"
        );
    }

    // ----- buffered writes -----------------------------------------------

    fn write(&self, f: impl FnOnce(&mut Delta)) -> Result<()> {
        let mut state = self.state();
        state.begin_change()?;
        if !state.is_locked() && self.config().write_policy() == WritePolicy::LockedOnly {
            return Err(Error::new(ErrorKind::ModificationDenied).with_detail(
                "writes need a lock under the locked-only write policy; call lock() first",
            ));
        }
        state.id_for_write();
        f(state.changes_mut());
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
        keys::check_plain(key)?;
        self.insert_entry(key, value)
    }

    /// Sets any entry, plain or reserved.
    pub(crate) fn insert_entry<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<()> {
        let bytes = encode_value_of(key, value)?;
        self.write(|d| d.set(key, bytes))
    }

    /// Removes `key` and returns the value it had (buffered, like
    /// [`Session::insert`]). Reads the session first, when it was not read
    /// yet; [`Session::discard`] removes without reading.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> sessionkit_core::Result<()> {
    #[doc = concat!("# ", doc_session!())]
    /// session.insert("k", &1)?;
    /// assert_eq!(session.remove::<i32>("k").await?, Some(1));
    /// assert!(!session.has("k").await?);
    /// assert_eq!(session.remove::<i32>("k").await?, None);
    /// # Ok(()) }
    /// ```
    pub async fn remove<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        let old = self.get(key).await?;
        self.discard_entry(key)?;
        Ok(old)
    }

    /// Removes `key` without reading it (buffered): a request that only
    /// removes keys costs one store round trip in all.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> sessionkit_core::Result<()> {
    #[doc = concat!("# ", doc_session!())]
    /// session.insert("k", &1)?;
    /// session.discard("k")?;
    /// assert!(!session.has("k").await?);
    /// # Ok(()) }
    /// ```
    pub fn discard(&self, key: &str) -> Result<()> {
        keys::check_plain(key)?;
        self.discard_entry(key)
    }

    /// Removes any entry, plain or reserved, without reading it.
    pub(crate) fn discard_entry(&self, key: &str) -> Result<()> {
        self.write(|d| d.remove(key))
    }

    /// Removes every plain key (buffered); bags and flash messages stay (see
    /// [`Session::clear_all`]). Reads the session first, to learn its keys.
    /// The session itself and its id stay; use [`Session::destroy`] to end
    /// it.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> sessionkit_core::Result<()> {
    #[doc = concat!("# ", doc_session!())]
    /// session.insert("a", &1)?;
    /// session.flash("notice", "Saved.")?;
    /// session.clear().await?;
    /// assert!(session.is_empty().await?);
    /// assert!(session.take_flash::<String>("notice").await?.is_some());
    /// # Ok(()) }
    /// ```
    pub async fn clear(&self) -> Result<()> {
        for key in self.keys().await? {
            self.discard_entry(&key)?;
        }
        Ok(())
    }

    /// Removes every entry, plain keys, bags and flash messages alike,
    /// without reading the session (buffered). The session itself and its id
    /// stay.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> sessionkit_core::Result<()> {
    #[doc = concat!("# ", doc_session!())]
    /// session.insert("a", &1)?;
    /// session.flash("notice", "Saved.")?;
    /// session.clear_all()?;
    /// assert!(session.is_empty().await?);
    /// assert!(session.take_flash::<String>("notice").await?.is_none());
    /// # Ok(()) }
    /// ```
    pub fn clear_all(&self) -> Result<()> {
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

    /// Undoes [`Session::set_lifetime`]: the session goes back to the
    /// configured idle lifetime and is no longer remembered, so where the
    /// configuration asks for browser-session cookies (no `Max-Age`), its
    /// cookie becomes one again at this response ("remember me" unticked).
    /// Buffered like a write.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> sessionkit_core::Result<()> {
    /// use std::time::Duration;
    #[doc = concat!("# ", doc_session!())]
    /// session.insert("user", &"ada")?;
    /// session.set_lifetime(Duration::from_secs(30 * 24 * 3600))?;
    /// session.save().await?;
    /// assert!(session.expires_in().await?.unwrap() > Duration::from_secs(29 * 24 * 3600));
    /// session.reset_lifetime()?;
    /// session.save().await?;
    /// assert!(session.expires_in().await?.unwrap() <= Duration::from_secs(120 * 60));
    /// # Ok(()) }
    /// ```
    pub fn reset_lifetime(&self) -> Result<()> {
        let lifetime = self.config().lifetime();
        self.write(|d| d.reset_ttl(lifetime))
    }

    /// Ends the session at `at` at the latest, whatever its use until then
    /// (a per-session absolute deadline, kept server-side; the cookie's
    /// `Max-Age` follows). It can only bring the session's end forward: a
    /// deadline already earlier (such as the configured absolute lifetime)
    /// stays, so a handler cannot outlive the application's policy. A time
    /// in the past ends the session at the next write. Buffered like a
    /// write.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> sessionkit_core::Result<()> {
    /// use std::time::{Duration, SystemTime};
    #[doc = concat!("# ", doc_session!())]
    /// let end_of_day = SystemTime::now() + Duration::from_secs(3600);
    /// session.insert("user", &"ada")?;
    /// session.set_expires_at(end_of_day)?;
    /// session.save().await?;
    /// let deadline = session.deadline().await?.unwrap();
    /// assert!(deadline <= end_of_day && deadline + Duration::from_millis(1) >= end_of_day);
    /// # Ok(()) }
    /// ```
    pub fn set_expires_at(&self, at: SystemTime) -> Result<()> {
        let ms = at
            .duration_since(UNIX_EPOCH)
            .map_or(0, crate::record::duration_ms);
        self.write(|d| d.cap_deadline(ms))
    }
}
