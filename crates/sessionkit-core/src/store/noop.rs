//! `NoopStore`: a store that keeps nothing.

use std::time::Duration;

use crate::error::Result;
use crate::id::{LockToken, SessionId};
use crate::record::{Delta, Record, Touch};
use crate::store::{Applied, Created, Fence, IdChanged, Loaded, Locked, SessionStore};

/// A store that keeps nothing: every request starts with an empty session.
///
/// Useful to turn sessions off without changing handlers
/// (`SESSION_DRIVER=noop`), and in tests of code that must not depend on
/// session state.
/// Every write succeeds and is forgotten; every load finds nothing.
///
/// Of the conformance suite (module `testkit`) it passes what holds for a
/// store that forgets: unknown and destroyed ids load as absent, destroying
/// an absent id is fine, writes never resurrect anything, locks are never
/// granted on absent sessions. The tests that read back what was written
/// (lifecycle, expiry, delta merge, locks on live sessions, `change_id`) do not
/// apply, and its tests say so.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use sessionkit_core::store::{NoopStore, SessionStore};
/// use sessionkit_core::SessionId;
///
/// let store = NoopStore;
/// assert!(store.load(&SessionId::generate(), None).await.unwrap().is_none());
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopStore;

impl SessionStore for NoopStore {
    fn name(&self) -> &'static str {
        "noop"
    }
    async fn load(&self, _: &SessionId, _: Option<Touch>) -> Result<Option<Loaded>> {
        Ok(None)
    }
    async fn create(&self, _: &SessionId, _: &Record) -> Result<Created> {
        Ok(Created::Created)
    }
    async fn apply(&self, _: &SessionId, _: &Delta, _: Option<Fence<'_>>) -> Result<Applied> {
        Ok(Applied::Gone)
    }
    async fn change_id(
        &self,
        _: &SessionId,
        _: &SessionId,
        _: Option<&LockToken>,
    ) -> Result<IdChanged> {
        Ok(IdChanged::Gone)
    }
    async fn destroy(&self, _: &SessionId) -> Result<()> {
        Ok(())
    }
    async fn lock(&self, _: &SessionId, _: Duration) -> Result<Locked> {
        Ok(Locked::Absent)
    }
    async fn renew_lock(&self, _: &SessionId, _: &LockToken, _: Duration) -> Result<bool> {
        Ok(false)
    }
    async fn unlock(&self, _: &SessionId, _: &LockToken) -> Result<()> {
        Ok(())
    }
}
