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
