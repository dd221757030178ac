//! `CountingStore`: a wrapper that counts the store calls a request makes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::error::Result;
use crate::id::{LockToken, SessionId};
use crate::record::{Delta, Record, Touch};
use crate::store::{
    Applied, AppliedAndRead, Created, Fence, IdChanged, Loaded, Locked, SessionStore,
};

/// Wraps a store and counts every call, per operation.
///
/// For the memory, file and Redis stores each call is one round trip, so the
/// counts are the round trips a request costs; memcached's writes take more
/// (see `MemcachedStore::stats` for its real round trips). Clones
/// share the counters.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use sessionkit_core::store::{MemoryStore, SessionStore};
/// use sessionkit_core::testkit::CountingStore;
/// use sessionkit_core::SessionId;
///
/// let store = CountingStore::new(MemoryStore::new());
/// store.load(&SessionId::generate(), None).await.unwrap();
/// assert_eq!(store.calls().load, 1);
/// assert_eq!(store.take().total(), 1);
/// assert_eq!(store.calls().total(), 0);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct CountingStore<S> {
    inner: S,
    counters: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    load: AtomicU64,
    create: AtomicU64,
    apply: AtomicU64,
    change_id: AtomicU64,
    destroy: AtomicU64,
    lock: AtomicU64,
    renew_lock: AtomicU64,
    unlock: AtomicU64,
    apply_and_read: AtomicU64,
}

/// Calls counted by a [`CountingStore`], per operation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Calls {
    pub load: u64,
    pub create: u64,
    pub apply: u64,
    pub change_id: u64,
    pub destroy: u64,
    pub lock: u64,
    pub renew_lock: u64,
    pub unlock: u64,
    pub apply_and_read: u64,
}

impl Calls {
    /// All calls together.
    pub fn total(&self) -> u64 {
        self.load
            + self.create
            + self.apply
            + self.change_id
            + self.destroy
            + self.lock
            + self.renew_lock
            + self.unlock
            + self.apply_and_read
    }
}

impl<S> CountingStore<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        CountingStore {
            inner,
            counters: Arc::default(),
        }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The counts so far.
    pub fn calls(&self) -> Calls {
        self.read(false)
    }

    /// The counts so far, resetting them to zero.
    pub fn take(&self) -> Calls {
        self.read(true)
    }

    fn read(&self, reset: bool) -> Calls {
        let c = &self.counters;
        let get = |a: &AtomicU64| {
            if reset {
                a.swap(0, Ordering::SeqCst)
            } else {
                a.load(Ordering::SeqCst)
            }
        };
        Calls {
            load: get(&c.load),
            create: get(&c.create),
            apply: get(&c.apply),
            change_id: get(&c.change_id),
            destroy: get(&c.destroy),
            lock: get(&c.lock),
            renew_lock: get(&c.renew_lock),
            unlock: get(&c.unlock),
            apply_and_read: get(&c.apply_and_read),
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::SeqCst);
}

impl<S: SessionStore> SessionStore for CountingStore<S> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    async fn load(&self, id: &SessionId, touch: Option<Touch>) -> Result<Option<Loaded>> {
        bump(&self.counters.load);
        self.inner.load(id, touch).await
    }
    async fn create(&self, id: &SessionId, record: &Record) -> Result<Created> {
        bump(&self.counters.create);
        self.inner.create(id, record).await
    }
    async fn apply(
        &self,
        id: &SessionId,
        delta: &Delta,
        fence: Option<Fence<'_>>,
    ) -> Result<Applied> {
        bump(&self.counters.apply);
        self.inner.apply(id, delta, fence).await
    }
    async fn change_id(
        &self,
        old: &SessionId,
        new: &SessionId,
        fence: Option<&LockToken>,
    ) -> Result<IdChanged> {
        bump(&self.counters.change_id);
        self.inner.change_id(old, new, fence).await
    }
    fn new_id_for(&self, old: &SessionId) -> SessionId {
        self.inner.new_id_for(old)
    }
    async fn destroy(&self, id: &SessionId) -> Result<()> {
        bump(&self.counters.destroy);
        self.inner.destroy(id).await
    }
    async fn lock(&self, id: &SessionId, ttl: Duration) -> Result<Locked> {
        bump(&self.counters.lock);
        self.inner.lock(id, ttl).await
    }
    async fn renew_lock(&self, id: &SessionId, token: &LockToken, ttl: Duration) -> Result<bool> {
        bump(&self.counters.renew_lock);
        self.inner.renew_lock(id, token, ttl).await
    }
    async fn unlock(&self, id: &SessionId, token: &LockToken) -> Result<()> {
        bump(&self.counters.unlock);
        self.inner.unlock(id, token).await
    }
    async fn apply_and_read(
        &self,
        id: &SessionId,
        delta: &Delta,
        token: &LockToken,
    ) -> Result<AppliedAndRead> {
        bump(&self.counters.apply_and_read);
        self.inner.apply_and_read(id, delta, token).await
    }
    // Not counted: a wait is no store operation of the contract's.
    async fn wait_for_unlock(&self, id: &SessionId, pause: std::time::Duration) {
        self.inner.wait_for_unlock(id, pause).await
    }
}
