//! `Guarded`: a store that keeps something alive for as long as it lives.

use std::sync::Arc;
use std::time::Duration;

use crate::error::Result;
use crate::id::{LockToken, SessionId};
use crate::record::{Delta, Record, Touch};
use crate::store::{
    Applied, AppliedAndRead, Created, Fence, IdChanged, Loaded, Locked, SessionStore,
};

/// A store together with a guard that must outlive it: a temporary save
/// path, the server processes the store talks to. Every call goes to the
/// store; the guard is dropped with the last clone.
///
/// It lets a `conformance_tests!` store expression own what the store needs:
///
/// ```
/// use sessionkit_core::store::MemoryStore;
/// use sessionkit_core::testkit::Guarded;
///
/// // The guard here is a plain value; in practice a `TempDir` or a server.
/// let store = Guarded::new(MemoryStore::new(), "kept alive");
/// assert_eq!(*store.guard(), "kept alive");
/// ```
#[derive(Debug)]
pub struct Guarded<S, G> {
    store: S,
    guard: Arc<G>,
}

impl<S: Clone, G> Clone for Guarded<S, G> {
    fn clone(&self) -> Self {
        Guarded {
            store: self.store.clone(),
            guard: self.guard.clone(),
        }
    }
}

impl<S, G> Guarded<S, G> {
    /// Pairs `store` with `guard`.
    pub fn new(store: S, guard: G) -> Self {
        Guarded {
            store,
            guard: Arc::new(guard),
        }
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The guard.
    pub fn guard(&self) -> &G {
        &self.guard
    }
}

impl<S: SessionStore, G: std::fmt::Debug + Send + Sync + 'static> SessionStore for Guarded<S, G> {
    fn name(&self) -> &'static str {
        self.store.name()
    }
    async fn load(&self, id: &SessionId, touch: Option<Touch>) -> Result<Option<Loaded>> {
        self.store.load(id, touch).await
    }
    async fn create(&self, id: &SessionId, record: &Record) -> Result<Created> {
        self.store.create(id, record).await
    }
    async fn apply(
        &self,
        id: &SessionId,
        delta: &Delta,
        fence: Option<Fence<'_>>,
    ) -> Result<Applied> {
        self.store.apply(id, delta, fence).await
    }
    async fn change_id(
        &self,
        old: &SessionId,
        new: &SessionId,
        fence: Option<&LockToken>,
    ) -> Result<IdChanged> {
        self.store.change_id(old, new, fence).await
    }
    fn new_id_for(&self, old: &SessionId) -> SessionId {
        self.store.new_id_for(old)
    }
    async fn destroy(&self, id: &SessionId) -> Result<()> {
        self.store.destroy(id).await
    }
    async fn lock(&self, id: &SessionId, ttl: Duration) -> Result<Locked> {
        self.store.lock(id, ttl).await
    }
    async fn renew_lock(&self, id: &SessionId, token: &LockToken, ttl: Duration) -> Result<bool> {
        self.store.renew_lock(id, token, ttl).await
    }
    async fn unlock(&self, id: &SessionId, token: &LockToken) -> Result<()> {
        self.store.unlock(id, token).await
    }
    async fn apply_and_read(
        &self,
        id: &SessionId,
        delta: &Delta,
        token: &LockToken,
    ) -> Result<AppliedAndRead> {
        self.store.apply_and_read(id, delta, token).await
    }
    // Passed through, so that the inner store can wake waiters.
    async fn wait_for_unlock(&self, id: &SessionId, pause: std::time::Duration) {
        self.store.wait_for_unlock(id, pause).await
    }
}
