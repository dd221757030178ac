//! One definition of a store that forwards every operation to another.

/// Every operation of [`SessionStore`](crate::store::SessionStore), named
/// for wrappers that act on each call (see
/// [`CountingStore`](crate::testkit::CountingStore)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(feature = "testkit"), allow(dead_code))]
pub(crate) enum Operation {
    Load,
    Create,
    Apply,
    ChangeId,
    Destroy,
    Lock,
    RenewLock,
    Unlock,
    ApplyAndRead,
}

/// Implements `SessionStore` for a wrapper by forwarding each operation to
/// the store `$inner` evaluates to (with `$this` bound to `&self`), after
/// running `$before` with `$op` bound to its [`Operation`], if given. The
/// owner index is the wrapped store's only where `owners` says how to reach
/// it (from `Arc<Self>`); otherwise the wrapper has none.
/// Wrappers written with it cannot forget an operation, nor forward one to
/// the wrong method.
macro_rules! forward_session_store {
    (
        impl[$($generics:tt)*] for $ty:ty;
        to |$this:ident| $inner:expr
        $(; before |$op:ident| $before:expr)?
        $(; owners |$oself:ident| $owners:expr)? $(;)?
    ) => {
        impl<$($generics)*> $crate::store::SessionStore for $ty {
            fn name(&self) -> &'static str {
                let $this = self;
                $inner.name()
            }
            async fn load(
                &self,
                id: &$crate::SessionId,
                touch: Option<$crate::record::Touch>,
            ) -> $crate::Result<Option<$crate::store::Loaded>> {
                let $this = self;
                $({ let $op = $crate::store::forward::Operation::Load; $before; })?
                $inner.load(id, touch).await
            }
            async fn create(
                &self,
                id: &$crate::SessionId,
                record: &$crate::record::Record,
            ) -> $crate::Result<$crate::store::Created> {
                let $this = self;
                $({ let $op = $crate::store::forward::Operation::Create; $before; })?
                $inner.create(id, record).await
            }
            async fn apply(
                &self,
                id: &$crate::SessionId,
                delta: &$crate::record::Delta,
                fence: Option<$crate::store::Fence<'_>>,
            ) -> $crate::Result<$crate::store::Applied> {
                let $this = self;
                $({ let $op = $crate::store::forward::Operation::Apply; $before; })?
                $inner.apply(id, delta, fence).await
            }
            async fn change_id(
                &self,
                old: &$crate::SessionId,
                new: &$crate::SessionId,
                fence: Option<&$crate::LockToken>,
            ) -> $crate::Result<$crate::store::IdChanged> {
                let $this = self;
                $({ let $op = $crate::store::forward::Operation::ChangeId; $before; })?
                $inner.change_id(old, new, fence).await
            }
            fn new_id_for(&self, old: &$crate::SessionId) -> $crate::SessionId {
                let $this = self;
                $inner.new_id_for(old)
            }
            async fn destroy(&self, id: &$crate::SessionId) -> $crate::Result<()> {
                let $this = self;
                $({ let $op = $crate::store::forward::Operation::Destroy; $before; })?
                $inner.destroy(id).await
            }
            async fn lock(
                &self,
                id: &$crate::SessionId,
                ttl: std::time::Duration,
            ) -> $crate::Result<$crate::store::Locked> {
                let $this = self;
                $({ let $op = $crate::store::forward::Operation::Lock; $before; })?
                $inner.lock(id, ttl).await
            }
            async fn renew_lock(
                &self,
                id: &$crate::SessionId,
                token: &$crate::LockToken,
                ttl: std::time::Duration,
            ) -> $crate::Result<bool> {
                let $this = self;
                $({ let $op = $crate::store::forward::Operation::RenewLock; $before; })?
                $inner.renew_lock(id, token, ttl).await
            }
            async fn unlock(
                &self,
                id: &$crate::SessionId,
                token: &$crate::LockToken,
            ) -> $crate::Result<()> {
                let $this = self;
                $({ let $op = $crate::store::forward::Operation::Unlock; $before; })?
                $inner.unlock(id, token).await
            }
            async fn apply_and_read(
                &self,
                id: &$crate::SessionId,
                delta: &$crate::record::Delta,
                token: &$crate::LockToken,
            ) -> $crate::Result<$crate::store::AppliedAndRead> {
                let $this = self;
                $({ let $op = $crate::store::forward::Operation::ApplyAndRead; $before; })?
                $inner.apply_and_read(id, delta, token).await
            }
            // Not an operation of the contract (not counted): a wait.
            async fn wait_for_unlock(&self, id: &$crate::SessionId, pause: std::time::Duration) {
                let $this = self;
                $inner.wait_for_unlock(id, pause).await
            }
            $(
                fn owner_index(
                    self: std::sync::Arc<Self>,
                ) -> Option<std::sync::Arc<dyn $crate::owner::DynOwnerIndex>> {
                    let $oself = self;
                    $owners
                }
            )?
        }
    };
}

pub(crate) use forward_session_store;
