//! Owners of sessions on the memory store: the owner-index checks of the
//! testkit (which every store with an index runs), and what is the same on
//! every store: owners are validated, and a store without an index says so.

use sessionkit_core::store::{MemoryStore, NoopStore};
use sessionkit_core::{ErrorKind, SessionConfig, SessionFactory};

sessionkit_core::owner_index_tests!(memory, MemoryStore::builder().sweep_interval(None).build());

#[tokio::test]
async fn bad_owners_and_stores_without_an_index_get_clear_errors() {
    let factory = SessionFactory::new(MemoryStore::new(), SessionConfig::default());
    let session = factory.request(None);
    for bad in ["", "line\nbreak", &"x".repeat(300)] {
        let err = session.set_owner(bad).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidOwner, "{bad:?}");
        if !bad.is_empty() {
            assert!(!err.to_string().contains(bad), "the owner is not repeated");
        }
    }
    let noop = SessionFactory::new(NoopStore, SessionConfig::default());
    assert!(noop.owners().is_none());
    let err = noop.request(None).set_owner("ada").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::OwnersUnsupported);
    assert!(err.to_string().contains("noop"), "{err}");
}

/// What owners cost on the memory store (issue 15; rows for BENCHMARKS.md,
/// not a timed test): `testkit::owners::costs`. Run side by side with the
/// other stores, in release: `bench/owner-costs.sh`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, run on demand"]
async fn owner_costs() {
    let store = MemoryStore::builder().sweep_interval(None).build();
    for (what, us) in sessionkit_core::testkit::owners::costs(&store, 200).await {
        println!("owner cost\tmemory\t{what}\t{us}");
    }
}
