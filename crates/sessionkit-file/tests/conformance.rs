//! The store conformance suite against `FileStore`, each run in its own temporary save path.

use std::time::Duration;

use sessionkit_core::testkit::{self, Guarded, SuiteConfig};
use sessionkit_file::{FileStore, FileStoreBuilder};
use tempfile::TempDir;

mod support;
use support::Alternating;

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
    let dir = tempfile::tempdir().expect("a temporary directory");
    let instance = || {
        FileStore::builder()
            .path(dir.path())
            .sweep_interval(None)
            .hash_ids(false)
            .prefix("app:")
            .build()
            .expect("a file store on a fresh temporary directory")
    };
    let store = Alternating::new(instance(), instance()).keeping(dir);
    testkit::run_all(&store, &timing()).await;
}
