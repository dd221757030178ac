//! `Guarded`: a store that keeps something alive for as long as it lives.

use std::sync::Arc;

use crate::store::SessionStore;

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

crate::store::forward::forward_session_store! {
    impl[S: SessionStore, G: std::fmt::Debug + Send + Sync + 'static] for Guarded<S, G>;
    to |this| this.store
}
