//! `PgStore` on a real PostgreSQL server: the conformance suite, the schema and its version, ids at rest and corrupt rows.

mod support;

use std::time::Duration;

use sessionkit_core::testkit::SuiteConfig;
use sessionkit_sql::PgStore;

/// The database clock is read to the millisecond, so the expiry tests can
/// wait less than the memcached-safe defaults, as for Redis.
fn timing() -> SuiteConfig {
    SuiteConfig::default()
        .with_short_lifetime(Duration::from_millis(1000))
        .with_short_lock_ttl(Duration::from_millis(250))
        .with_slack(Duration::from_millis(300))
}

/// A migrated store on the server shared by this test binary.
async fn store() -> PgStore {
    let store = PgStore::builder()
        .sweep_interval(None)
        .connect(&support::shared().url())
        .expect("a store on the shared server");
    store.migrate().await.expect("migrate");
    store
}

sessionkit_core::conformance_tests!(conformance, store().await, config = timing());
