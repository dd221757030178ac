//! The ends of a session's life in a request: new ids, destruction, and the
//! finish when the response is produced.

use crate::config::{LockPolicy, Outcome};
use crate::error::{Error, ErrorKind, Result};
use crate::id::SessionId;
use crate::record::now_ms;
use crate::session::lock::HeldLock;
use crate::session::state::{LockHold, Sent, Stored};
use crate::session::transaction::Release;
use crate::session::{CookieChange, Finished, Inner, Session};
use crate::store::{Applied, IdChanged};

impl Session {
    /// Gives the session a new id, keeping its data, and deletes the old id in
    /// the same atomic store operation; the response carries the new cookie.
    /// Call it at login and at every privilege change, so that an id fixed or
    /// seen before cannot ride along
    /// ([OWASP: renew the session id](https://cheatsheetseries.owasp.org/cheatsheets/Session_Management_Cheat_Sheet.html#renew-the-session-id-after-any-privilege-level-change)).
    ///
    /// A session that is not stored yet just gets a new id, without a store
    /// call. A held lock moves to the new id.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> sessionkit_core::Result<()> {
    #[doc = concat!("# ", doc_session!())]
    /// session.insert("user", &"ada")?;
    /// let before = session.id();
    /// session.regenerate().await?;
    /// assert_ne!(session.id(), before);
    /// assert_eq!(session.get::<String>("user").await?.as_deref(), Some("ada"));
    /// # Ok(()) }
    /// ```
    pub async fn regenerate(&self) -> Result<()> {
        let _op = self.op().await;
        let (old, token) = {
            let mut state = self.state();
            state.used = true;
            match (&state.stored, state.id) {
                (Stored::Fresh, _) | (_, None) => {
                    if state.id.is_some() {
                        state.id = Some(SessionId::generate());
                    }
                    return Ok(());
                }
                (_, Some(old)) => {
                    let token = match &state.lock {
                        LockHold::Store(held) => Some(held.token),
                        _ => None,
                    };
                    (old, token)
                }
            }
        };
        for _ in 0..4 {
            let new = self.store().new_id_for(&old);
            let changed = self
                .store()
                .change_id(&old, &new, token.as_ref())
                .await
                .map_err(|e| e.with_operation("change_id"))?;
            match changed {
                IdChanged::Changed(meta) => {
                    let mut state = self.state();
                    state.id = Some(new);
                    state.expiry_moved = Some(meta);
                    if let Stored::Live { meta: m, .. } = &mut state.stored {
                        *m = meta;
                    }
                    if let (LockHold::Store(held), Some(token)) = (&state.lock, token) {
                        // The lock moved with its expiry, so it keeps its
                        // renewal schedule. Nobody else knows the new id, so
                        // it needs no local line; dropping the old lock's
                        // place lets waiters for the old id find it gone.
                        let renewed_at = held.renewed_at();
                        state.lock = LockHold::Store(HeldLock::start(
                            self.inner.shared.store.clone(),
                            new,
                            token,
                            self.config().lock(),
                            None,
                            renewed_at,
                        ));
                    }
                    tracing::info!(old = %old.short_hash(), new = %new.short_hash(), "session id regenerated");
                    return Ok(());
                }
                IdChanged::Gone => {
                    // Expired or destroyed meanwhile: nothing to carry over.
                    self.state().found_gone();
                    return Ok(());
                }
                IdChanged::IdTaken => continue,
                IdChanged::LockLost => {
                    self.after_lock_lost(&old);
                    return Err(self.lock_lost_error(&old, "regenerate"));
                }
            }
        }
        Err(self.ids_exhausted("change_id"))
    }

    /// Ends the session: deletes it (and its lock) from the store, discards
    /// pending changes, and expires the cookie. A write after it in the same
    /// request starts a new session with a new id.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> sessionkit_core::Result<()> {
    #[doc = concat!("# ", doc_session!())]
    /// session.insert("user", &"ada")?;
    /// session.destroy().await?;
    /// assert!(session.is_empty().await?);
    /// assert_eq!(session.id(), None);
    /// # Ok(()) }
    /// ```
    pub async fn destroy(&self) -> Result<()> {
        let _op = self.op().await;
        // The lock (and this process's line for the session) is let go only
        // once the store has deleted the session and its lock.
        let (id, _held) = {
            let mut state = self.state();
            state.used = true;
            let id = match state.stored {
                Stored::Fresh => None,
                _ => state.id,
            };
            state.become_fresh();
            state.lock_depth = 0;
            (id, std::mem::replace(&mut state.lock, LockHold::None))
        };
        if let Some(id) = id {
            self.store()
                .destroy(&id)
                .await
                .map_err(|e| e.with_operation("destroy"))?;
            tracing::info!(session = %id.short_hash(), "session destroyed");
        }
        Ok(())
    }

    pub(super) fn is_finished(&self) -> bool {
        self.state().finished
    }

    /// Whether [`Session::finish`] has work to do. `false` for a request that
    /// never used its session; the layer then skips the finish entirely.
    pub fn needs_finish(&self) -> bool {
        self.state().used
    }

    /// Ends the request's use of the session; the HTTP layer calls it when the
    /// response is produced.
    ///
    /// Releases every lock still held (committing or rolling back as the
    /// [`ReleasePolicy`](crate::ReleasePolicy) says, given whether the response is a success),
    /// flushes buffered writes in one store operation, and says what to do
    /// with the cookie. After it, writes through any clone of the handle are
    /// refused.
    ///
    /// A buffered flush to a session that has expired or been destroyed
    /// meanwhile never brings it back: if the request had read the session,
    /// the flush fails with [`ErrorKind::SessionGone`]; if it wrote blind,
    /// its changes start a new session under a new id, as if they had come
    /// just after the session ended.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use sessionkit_core::CookieChange;
    #[doc = concat!("# ", doc_session!())]
    /// session.insert("k", &1).unwrap();
    /// let finished = session.finish(false).await;
    /// assert!(finished.error.is_none());
    /// assert!(matches!(finished.cookie, CookieChange::Set { .. }));
    /// assert!(session.insert("k", &2).is_err());
    /// # }
    /// ```
    pub async fn finish(&self, server_error: bool) -> Finished {
        self.finish_with(if server_error {
            Outcome::ServerError
        } else {
            Outcome::Success
        })
        .await
    }

    /// [`Session::finish`] for a response whose status gave `outcome`: locks
    /// still held commit or roll back as the [`ReleasePolicy`](crate::ReleasePolicy) says for it
    /// (by default, commit only on success).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use sessionkit_core::Outcome;
    #[doc = concat!("# ", doc_session!())]
    /// session.insert("k", &1).unwrap();
    /// session.lock().await.unwrap();
    /// session.insert("qty", &-5).unwrap();
    /// let finished = session.finish_with(Outcome::ClientError).await; // a 400
    /// assert!(finished.error.is_none());
    /// # }
    /// ```
    pub async fn finish_with(&self, outcome: Outcome) -> Finished {
        let _op = self.op().await;
        let mut error = None;

        // Whole-request locking: blind writes are serialized like the rest.
        if self.config().lock_policy() == LockPolicy::WholeRequest {
            let needs_lock = {
                let state = self.state();
                state.lock_depth == 0 && !state.pending.is_empty()
            };
            if needs_lock && let Err(e) = self.lock_locked_op().await {
                error = Some(e);
            }
        }

        let commit = self.config().release_policy().commits(outcome);
        while self.state().lock_depth > 0 {
            let depth = self.state().lock_depth;
            if depth > 1 {
                // Inner levels fold into the outermost one.
                self.state().lock_depth = 1;
            }
            let how = if commit {
                Release::Commit
            } else {
                Release::Rollback
            };
            if let Err(e) = self.release_locked_op(how).await {
                // Locks on a failed path are released, not retried.
                let mut state = self.state();
                state.lock = LockHold::None;
                state.lock_depth = 0;
                error.get_or_insert(e);
            }
        }

        if error.is_none()
            && let Err(e) = self.flush_pending().await
        {
            error = Some(e);
        }
        self.conclude(error)
    }

    /// [`Session::finish`] without waiting, when it has nothing to wait for:
    /// no lock is held, no write is buffered and no operation of a clone is
    /// in flight — the common case of a request that only read (whether the
    /// response is a server error then changes nothing). Returns `None` when
    /// the asynchronous `finish` is needed.
    ///
    /// The HTTP layer calls this first, so that read-only requests finish
    /// without a boxed future.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    #[doc = concat!("# ", doc_session!())]
    /// session.insert("k", &1).unwrap();
    /// assert!(session.finish_now().is_none()); // a write to flush
    /// let _ = session.finish(false).await;
    /// # }
    /// ```
    pub fn finish_now(&self) -> Option<Finished> {
        let _op = self.inner.ops.try_lock().ok()?;
        {
            let state = self.state();
            if state.lock_depth > 0 || !state.pending.is_empty() {
                return None;
            }
        }
        Some(self.conclude(None))
    }

    /// Marks the session finished and decides what the cookie must say.
    fn conclude(&self, error: Option<Error>) -> Finished {
        let mut state = self.state();
        state.finished = true;
        // The expiry the client must learn about: the one the store reported
        // when it moved (a touch, a write, a creation, a new id).
        let meta = match &state.stored {
            Stored::Live { meta, .. } => Some(*meta),
            _ => state.expiry_moved,
        };
        let new_id = state.id != state.client_id;
        let cookie = match (state.id, &state.stored, meta) {
            // Only a single cookie is cleared: with several, the host-only
            // one the removal would reach may be the only genuine one (see
            // `Presented`).
            (_, Stored::Fresh, _) if state.sent == Sent::One => CookieChange::Remove,
            (Some(id), Stored::Live { .. } | Stored::Unloaded, Some(meta))
                if new_id || state.expiry_moved.is_some() =>
            {
                CookieChange::Set {
                    id,
                    max_age: meta.remaining(now_ms()),
                    remembered: meta.remembered(),
                }
            }
            _ => CookieChange::Keep,
        };
        Finished { cookie, error }
    }

    pub(super) async fn flush_pending(&self) -> Result<()> {
        let (id, delta, blind) = {
            let mut state = self.state();
            if state.pending.is_empty() {
                return Ok(());
            }
            let delta = std::mem::take(&mut state.pending);
            match (&state.stored, state.id) {
                (Stored::Fresh, _) | (_, None) => (None, delta, false),
                (stored, Some(id)) => (Some(id), delta, matches!(stored, Stored::Unloaded)),
            }
        };
        let Some(id) = id else {
            return self.flush_fresh(delta).await;
        };
        let applied = self
            .store()
            .apply(&id, &delta, None)
            .await
            .map_err(|e| e.with_operation("apply"))?;
        match applied {
            Applied::Applied(meta) => {
                self.record_applied(&delta, meta);
                Ok(())
            }
            Applied::Gone if blind => {
                let retry = {
                    let mut state = self.state();
                    if state.next_candidate().is_some() {
                        // The client sent several ids: the write goes to the
                        // first the store knows, as a read would have.
                        state.pending = delta.clone();
                        true
                    } else {
                        state.become_fresh();
                        false
                    }
                };
                if retry {
                    return Box::pin(self.flush_pending()).await;
                }
                // The request never read the session, so its changes do not
                // depend on the old data: they start a new session.
                tracing::debug!(session = %id.short_hash(), "blind write to an ended session starts a new one");
                self.flush_fresh(delta).await
            }
            Applied::Gone => {
                self.state().become_fresh();
                tracing::info!(session = %id.short_hash(), "flush refused: the session was destroyed meanwhile");
                Err(Error::new(ErrorKind::SessionGone)
                    .with_operation("apply")
                    .with_store(self.store().name())
                    .with_detail("the session was destroyed or expired during the request; its changes were not written"))
            }
            Applied::LockLost => Err(Error::new(ErrorKind::LockLost)
                .with_operation("apply")
                .with_store(self.store().name())),
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // A handle dropped with its lock held (a panicking handler, a request
        // cancelled mid-flight) releases the lock instead of blocking the
        // session until the TTL passes.
        let state = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        let lock = std::mem::replace(&mut state.lock, LockHold::None);
        if let LockHold::Store(held) = lock
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let store = self.shared.store.clone();
            rt.spawn(async move {
                let _ = store.unlock(&held.id, &held.token).await;
                // The next local waiter asks the store only now.
                drop(held);
            });
        }
    }
}
