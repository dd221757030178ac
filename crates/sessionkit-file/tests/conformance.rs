//! The store conformance suite against `FileStore`, each run in its own temporary save path.

use std::sync::Arc;
use std::time::Duration;

use sessionkit_core::record::{Delta, Record, Touch};
use sessionkit_core::store::{Applied, Created, Fence, IdChanged, Loaded, Locked, SessionStore};
use sessionkit_core::testkit::{self, Guarded, SuiteConfig};
use sessionkit_core::{LockToken, Result, SessionId};
use sessionkit_file::{FileStore, FileStoreBuilder};
use tempfile::TempDir;

/// A `FileStore` that owns its temporary save path: the directory lives as
/// long as the last clone.
type Scratch = Guarded<FileStore, TempDir>;

fn scratch(configure: impl FnOnce(FileStoreBuilder) -> FileStoreBuilder) -> Scratch {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = configure(FileStore::builder().path(dir.path()))
        .build()
        .expect("a file store on a fresh temporary directory");
    Guarded::new(store, dir)
}

/// The file store has a millisecond clock (the host's), so the waits can be
/// shorter than the memcached-safe defaults; the slack still leaves room
/// for `fsync`s on a loaded machine.
fn timing() -> SuiteConfig {
    SuiteConfig::default()
        .with_short_lifetime(Duration::from_millis(900))
        .with_short_lock_ttl(Duration::from_millis(300))
        .with_slack(Duration::from_millis(400))
}

// One test per contract item, with the default settings (durable writes,
// touches through the mtime) and no background sweep.
sessionkit_core::conformance_tests!(file, scratch(|b| b.sweep_interval(None)), config = timing());

/// Touches that rewrite the file (file systems without millisecond mtimes),
/// with a background sweep racing the tests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewriting_touches_with_a_busy_sweep_pass_the_whole_suite() {
    let store = scratch(|b| {
        b.mtime_expiry(false)
            .durable(false)
            .sweep_interval(Some(Duration::from_millis(50)))
    });
    assert!(!store.store().mtime_expiry());
    testkit::run_all(&store, &timing()).await;
}

/// Two store instances on one save path, as two processes would have: the
/// suite's tasks alternate between them, so every check of a lock and every
/// write crosses instances.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_save_path_pass_the_whole_suite() {
    let one = scratch(|b| b.sweep_interval(None).hash_ids(false).prefix("app:"));
    let two = FileStore::builder()
        .path(one.store().path())
        .sweep_interval(None)
        .hash_ids(false)
        .prefix("app:")
        .build()
        .unwrap();
    let store = Alternating {
        stores: Arc::new([one.store().clone(), two]),
        next: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        _dir: one,
    };
    testkit::run_all(&store, &timing()).await;
}

/// Sends each call to the next of several stores in turn.
#[derive(Debug, Clone)]
struct Alternating {
    stores: Arc<[FileStore; 2]>,
    next: Arc<std::sync::atomic::AtomicUsize>,
    _dir: Scratch,
}

impl Alternating {
    fn pick(&self) -> &FileStore {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        &self.stores[n % 2]
    }
}

impl SessionStore for Alternating {
    fn name(&self) -> &'static str {
        "file"
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
