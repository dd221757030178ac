//! `SqliteStore` on a real SQLite file: the conformance suite, the schema and its version, ids at rest and corrupt rows.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use sessionkit_core::testkit::SuiteConfig;
use sessionkit_sql::SqliteStore;

/// The store reads the machine's clock to the millisecond.
fn timing() -> SuiteConfig {
    SuiteConfig::default()
        .with_short_lifetime(Duration::from_millis(1000))
        .with_short_lock_ttl(Duration::from_millis(250))
        .with_slack(Duration::from_millis(300))
}

/// One database file in a temporary directory, shared by the tests of this
/// binary (removed when the binary ends: the directory is kept in a static
/// and cleaned by the OS's temp cleaner otherwise, so it is small).
fn shared_file() -> &'static PathBuf {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        DIR.get_or_init(|| tempfile::tempdir().expect("a temp dir"))
            .path()
            .join("sessions.db")
    })
}

async fn store() -> SqliteStore {
    let url = format!("sqlite://{}", shared_file().display());
    let store = SqliteStore::builder()
        .sweep_interval(None)
        .connect(&url)
        .expect("a store on the shared file");
    store.migrate().await.expect("migrate");
    store
}

sessionkit_core::conformance_tests!(conformance, store().await, config = timing());
