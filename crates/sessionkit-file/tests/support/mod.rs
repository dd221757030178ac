//! What more than one test binary of this crate uses.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sessionkit_core::owner::{
    DynOwnerIndex, OwnedSession, Owner, OwnerCap, OwnerIndex, OwnerSet, SessionHandle,
};
use sessionkit_core::record::{Delta, Record, Touch};
use sessionkit_core::store::{Applied, Created, Fence, IdChanged, Loaded, Locked, SessionStore};
use sessionkit_core::{LockToken, Result, SessionId};
use sessionkit_file::FileStore;
use tempfile::TempDir;

/// Sends each call to the next of two store instances in turn, as two
/// processes sharing a save path would take turns; owner operations too.
#[derive(Debug, Clone)]
pub(crate) struct Alternating {
    stores: Arc<[FileStore; 2]>,
    next: Arc<AtomicUsize>,
    _dir: Option<Arc<TempDir>>,
}

impl Alternating {
    /// Alternates between `one` and `two`.
    pub(crate) fn new(one: FileStore, two: FileStore) -> Alternating {
        Alternating {
            stores: Arc::new([one, two]),
            next: Arc::new(AtomicUsize::new(0)),
            _dir: None,
        }
    }

    /// Keeps `dir` (the save path) for as long as the last clone lives.
    #[allow(dead_code)]
    pub(crate) fn keeping(mut self, dir: TempDir) -> Alternating {
        self._dir = Some(Arc::new(dir));
        self
    }

    fn pick(&self) -> &FileStore {
        &self.stores[self.next.fetch_add(1, Ordering::Relaxed) % 2]
    }
}

impl SessionStore for Alternating {
    fn name(&self) -> &'static str {
        "file"
    }
    fn owner_index(self: Arc<Self>) -> Option<Arc<dyn DynOwnerIndex>> {
        Some(self)
    }
    async fn load(&self, id: &SessionId, touch: Option<Touch>) -> Result<Option<Loaded>> {
        self.pick().load(id, touch).await
    }
    async fn create(&self, id: &SessionId, record: &Record) -> Result<Created> {
        self.pick().create(id, record).await
    }
    async fn apply(
        &self,
        id: &SessionId,
        delta: &Delta,
        fence: Option<Fence<'_>>,
    ) -> Result<Applied> {
        self.pick().apply(id, delta, fence).await
    }
    async fn change_id(
        &self,
        old: &SessionId,
        new: &SessionId,
        fence: Option<&LockToken>,
    ) -> Result<IdChanged> {
        self.pick().change_id(old, new, fence).await
    }
    async fn destroy(&self, id: &SessionId) -> Result<()> {
        self.pick().destroy(id).await
    }
    async fn lock(&self, id: &SessionId, ttl: Duration) -> Result<Locked> {
        self.pick().lock(id, ttl).await
    }
    async fn renew_lock(&self, id: &SessionId, token: &LockToken, ttl: Duration) -> Result<bool> {
        self.pick().renew_lock(id, token, ttl).await
    }
    async fn unlock(&self, id: &SessionId, token: &LockToken) -> Result<()> {
        self.pick().unlock(id, token).await
    }
}

impl OwnerIndex for Alternating {
    async fn set_owner(
        &self,
        id: &SessionId,
        owner: &Owner,
        handle: &SessionHandle,
        device: Option<&str>,
        cap: Option<OwnerCap>,
    ) -> Result<OwnerSet> {
        OwnerIndex::set_owner(self.pick(), id, owner, handle, device, cap).await
    }
    async fn sessions_of(&self, owner: &Owner) -> Result<Vec<OwnedSession>> {
        OwnerIndex::sessions_of(self.pick(), owner).await
    }
    async fn revoke(&self, owner: &Owner, handle: &SessionHandle) -> Result<bool> {
        OwnerIndex::revoke(self.pick(), owner, handle).await
    }
    async fn revoke_all(&self, owner: &Owner, except: Option<&SessionHandle>) -> Result<u64> {
        OwnerIndex::revoke_all(self.pick(), owner, except).await
    }
}
