//! The store conformance suite against the stores of this crate.
//!
//! Run with `cargo test -p sessionkit-core --features testkit --test conformance`.

use std::time::Duration;

use sessionkit_core::store::{ArcStore, MemoryStore, NoopStore};
use sessionkit_core::testkit::{self, SuiteConfig};

/// The memory store has a millisecond clock, so the one-test-per-line run
/// below can use short waits; `run_all` further down keeps the defaults
/// that every store must pass.
fn fast() -> SuiteConfig {
    SuiteConfig::default()
        .with_short_lifetime(Duration::from_millis(400))
        .with_short_lock_ttl(Duration::from_millis(150))
        .with_slack(Duration::from_millis(150))
}

// One test per contract item, on a store without the background sweep, so
// expired sessions are only ever removed when an operation finds them.
sessionkit_core::conformance_tests!(
    memory,
    MemoryStore::builder().sweep_interval(None).build(),
    config = fast()
);

// NoopStore forgets everything: only the tests that hold for such a store.
sessionkit_core::conformance_tests!(
    noop,
    NoopStore,
    tests = [unknown_id_is_absent, destroyed_session_stays_gone]
);

/// The whole suite with the default (memcached-safe) timing, through the
/// single entry point.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_passes_the_whole_suite() {
    let store = MemoryStore::builder().sweep_interval(None).build();
    testkit::run_all(&store, &SuiteConfig::default()).await;
}

/// With a background sweep running often, expired sessions also disappear
/// behind the tests' backs; the contract must hold all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_with_background_sweep_passes_the_whole_suite() {
    let store = MemoryStore::builder()
        .sweep_interval(Some(Duration::from_millis(20)))
        .build();
    testkit::run_all(&store, &fast()).await;
}

/// A type-erased store (the boxed-future twin of the trait) keeps the
/// contract of the store inside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arc_store_over_memory_passes_the_whole_suite() {
    let store = ArcStore::new(MemoryStore::builder().sweep_interval(None).build());
    testkit::run_all(&store, &fast()).await;
}

/// The forgetful subset, through the individual entry points.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noop_store_passes_the_forgetful_tests() {
    let config = SuiteConfig::default();
    assert_eq!(
        testkit::FORGETFUL_TESTS,
        ["unknown_id_is_absent", "destroyed_session_stays_gone"]
    );
    testkit::unknown_id_is_absent(&NoopStore, &config).await;
    testkit::destroyed_session_stays_gone(&NoopStore, &config).await;
}

/// The suite must fail a store that breaks the contract, naming the test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_names_the_failing_tests() {
    let result = tokio::spawn(async {
        testkit::run_all(&NoopStore, &fast().with_load(2, 2)).await;
    })
    .await;
    let panic = result.expect_err("NoopStore cannot pass the whole suite");
    let payload = panic.into_panic();
    let message = payload
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(message.contains("on store `noop`"), "{message}");
    assert!(
        message.contains("create_then_load_returns_the_record"),
        "{message}"
    );
    assert!(!message.contains("- unknown_id_is_absent:"), "{message}");
    assert!(
        !message.contains("- destroyed_session_stays_gone:"),
        "{message}"
    );
}
