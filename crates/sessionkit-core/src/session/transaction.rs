//! Locked transactions: `lock`, `commit`, `rollback`, `unlock`, `put`.

use serde::Serialize;

use crate::codec::encode_value_of;
use crate::config::{LockConfig, WritePolicy};
use crate::error::{Error, ErrorKind, Result};
use crate::id::{LockToken, SessionId};
use crate::record::{Delta, Meta, Record};
use crate::session::Session;
use crate::session::gate::Gate;
use crate::session::lock::HeldLock;
use crate::session::state::{Hold, Lock, Stored};
use crate::store::Backoff;
use crate::store::{Applied, AppliedAndRead, Fence, Locked};

impl Session {
    /// Takes the session's exclusive lock, waiting (bounded) while another
    /// request holds it, and re-reads the data fresh.
    ///
    /// Writes made while locked are part of the transaction until
    /// [`commit`](Session::commit) or [`rollback`](Session::rollback). Locks
    /// are reentrant: each `lock` needs its own `commit`, `rollback` or
    /// [`unlock`](Session::unlock). While held, the lock is renewed in the
    /// background. Fails with [`ErrorKind::LockTimeout`] after
    /// [`LockConfig::wait`](crate::LockConfig::wait).
    ///
    /// A new session (no id yet) is locked without a store call: nobody else
    /// can know its id.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> sessionkit_core::Result<()> {
    #[doc = concat!("# ", doc_session!())]
    /// session.lock().await?;
    /// let n = session.get::<u64>("n").await?.unwrap_or(0);
    /// session.insert("n", &(n + 1))?;
    /// session.commit().await?;
    /// # Ok(()) }
    /// ```
    pub async fn lock(&self) -> Result<()> {
        let _turn = self.turn().await;
        self.acquire_in_turn().await
    }

    /// Takes a level of the lock; the caller has the handle's turn.
    pub(super) async fn acquire_in_turn(&self) -> Result<()> {
        let id = {
            let mut state = self.state();
            state.begin_change()?;
            if let Lock::Held { depth, .. } = &mut state.lock {
                *depth += 1;
                return Ok(());
            }
            match (&state.stored, state.id) {
                (Stored::Fresh, _) | (_, None) => {
                    state.hold(Hold::Local);
                    return Ok(());
                }
                (_, Some(id)) => id,
            }
        };
        let config = self.config().lock().clone();
        let deadline = tokio::time::Instant::now() + config.wait;
        // Wait behind this process's other requests for the session first:
        // they hand the lock on when they are done (see `gate`).
        let mut gate = tokio::time::timeout_at(deadline, self.inner.shared.gates.enter(id))
            .await
            .map_err(|_| self.lock_timeout(&id, &config))?;
        if let Some(handoff) = gate.take_handoff() {
            let (token, record, renewed_at) = handoff.accept();
            return self
                .adopt_lock(id, token, record, &config, gate, renewed_at)
                .await;
        }
        let mut backoff = Backoff::new(config.initial_backoff, config.max_backoff);
        let mut waited = false;
        loop {
            let taken_at = tokio::time::Instant::now();
            let outcome = self
                .store()
                .lock(&id, config.ttl)
                .await
                .map_err(|e| e.with_operation("lock"))?;
            match outcome {
                Locked::Acquired { token, record } => {
                    if waited {
                        tracing::debug!(session = %id.short_hash(), "session lock acquired after waiting");
                    }
                    return self
                        .adopt_lock(id, token, record, &config, gate, taken_at)
                        .await;
                }
                Locked::Absent => {
                    self.strict_rejection(&id);
                    let retry = {
                        let mut state = self.state();
                        let retry = state.next_candidate().is_some();
                        if !retry {
                            state.found_gone();
                            state.hold(Hold::Local);
                        }
                        retry
                    };
                    if retry {
                        // Another of the client's ids: its own line and lock.
                        drop(gate);
                        return Box::pin(self.acquire_in_turn()).await;
                    }
                    return Ok(());
                }
                Locked::Held => {
                    let pause = backoff.next_pause();
                    let now = tokio::time::Instant::now();
                    if now >= deadline {
                        return Err(self.lock_timeout(&id, &config));
                    }
                    if !waited {
                        tracing::debug!(session = %id.short_hash(), "waiting for the session lock");
                        waited = true;
                    }
                    // The store may wake us early when the lock is released.
                    let pause = (now + pause).min(deadline) - now;
                    self.store().wait_for_unlock(&id, pause).await;
                }
            }
        }
    }

    /// Makes a store lock this handle's: taken from the store or handed on
    /// by the previous local holder, with `record` read under it.
    async fn adopt_lock(
        &self,
        id: SessionId,
        token: LockToken,
        record: Record,
        config: &LockConfig,
        gate: Gate,
        renewed_at: tokio::time::Instant,
    ) -> Result<()> {
        if self.state().id != Some(id) {
            // Regenerated or destroyed by a clone of this handle meanwhile.
            let _ = self.store().unlock(&id, &token).await;
            return Err(Error::new(ErrorKind::SessionGone)
                .with_operation("lock")
                .with_detail("the session changed id while the lock was awaited"));
        }
        let verdict = {
            let mut state = self.state();
            // Taking the lock refreshed the idle expiry (so did the write
            // that handed it on): the cookie tells the browser.
            state.expiry_moved = Some(record.meta);
            state.adopt_live(record.entries, record.meta);
            state.csrf_verdict()
        };
        if let Err(refused) = verdict {
            // The read under the lock decided a CSRF check against the
            // request: let the lock go, having written nothing.
            let _ = self.store().unlock(&id, &token).await;
            drop(gate);
            return Err(refused.with_operation("lock"));
        }
        let mut state = self.state();
        state.hold(Hold::Store(HeldLock::start(
            self.inner.shared.store.clone(),
            id,
            token,
            config,
            Some(gate),
            renewed_at,
        )));
        Ok(())
    }

    /// Writes the changes made under the lock (and any buffered before it) in
    /// one atomic, fenced store operation, and releases one level of the lock
    /// (the store lock goes with the last level, in the same operation).
    ///
    /// Fails with [`ErrorKind::LockLost`] if the lock expired or was taken
    /// meanwhile (nothing is written), with [`ErrorKind::SessionGone`] if the
    /// session was destroyed, and with [`ErrorKind::ModificationDenied`] when
    /// the session is not locked.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> sessionkit_core::Result<()> {
    #[doc = concat!("# ", doc_session!())]
    /// session.lock().await?;
    /// session.insert("k", &1)?;
    /// session.commit().await?;
    /// assert!(session.commit().await.is_err()); // not locked any more
    /// # Ok(()) }
    /// ```
    pub async fn commit(&self) -> Result<()> {
        let _turn = self.turn().await;
        self.release_in_turn(Release::Commit).await
    }

    /// Discards the changes made under the lock and releases one level of it.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> sessionkit_core::Result<()> {
    #[doc = concat!("# ", doc_session!())]
    /// session.lock().await?;
    /// session.insert("k", &1)?;
    /// session.rollback().await?;
    /// assert!(!session.has("k").await?);
    /// # Ok(()) }
    /// ```
    pub async fn rollback(&self) -> Result<()> {
        let _turn = self.turn().await;
        self.release_in_turn(Release::Rollback).await
    }

    /// Releases one level of the lock without writing. Changes made under it
    /// are kept as buffered writes, flushed when the response is produced
    /// (under [`WritePolicy::LockedOnly`] they are discarded instead).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> sessionkit_core::Result<()> {
    #[doc = concat!("# ", doc_session!())]
    /// session.lock().await?;
    /// session.insert("k", &1)?;
    /// session.unlock().await?;
    /// assert!(!session.is_locked());
    /// assert_eq!(session.get::<i32>("k").await?, Some(1)); // still buffered
    /// # Ok(()) }
    /// ```
    pub async fn unlock(&self) -> Result<()> {
        let _turn = self.turn().await;
        self.release_in_turn(Release::Unlock).await
    }

    /// Releases every level of the lock at once, as the end of the request
    /// would on a successful response: the changes made under it are
    /// committed (rolled back under [`ReleasePolicy::Rollback`](crate::ReleasePolicy::Rollback)),
    /// in one store operation that also releases the store lock. Nothing
    /// to release is not an error.
    ///
    /// For code that locked several times (reentrantly) and wants out
    /// without counting its levels, for example before a long operation
    /// that must not hold the session.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> sessionkit_core::Result<()> {
    #[doc = concat!("# ", doc_session!())]
    /// session.lock().await?;
    /// session.lock().await?;
    /// session.insert("k", &1)?;
    /// session.unlock_all().await?;
    /// assert!(!session.is_locked());
    /// assert_eq!(session.get::<i32>("k").await?, Some(1));
    /// # Ok(()) }
    /// ```
    pub async fn unlock_all(&self) -> Result<()> {
        let _turn = self.turn().await;
        if !self.state().fold_lock() {
            return Ok(());
        }
        let how = if self
            .config()
            .release_policy()
            .commits(crate::Outcome::Success)
        {
            Release::Commit
        } else {
            Release::Rollback
        };
        self.release_in_turn(how).await
    }

    /// Locks, sets `key`, commits: one locked write, in one call.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> sessionkit_core::Result<()> {
    #[doc = concat!("# ", doc_session!())]
    /// session.put("locale", &"es").await?;
    /// assert_eq!(session.get::<String>("locale").await?.as_deref(), Some("es"));
    /// assert!(!session.is_locked());
    /// # Ok(()) }
    /// ```
    pub async fn put<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<()> {
        let bytes = encode_value_of(key, value)?;
        let _turn = self.turn().await;
        self.acquire_in_turn().await?;
        self.state().changes_mut().set(key, bytes);
        self.release_in_turn(Release::Commit).await
    }

    /// Runs `f` as one locked transaction: locks, runs it, and commits only
    /// when it returns `Ok`; an `Err` (or a `?` inside it) rolls back and is
    /// returned as is. Early returns are safe by construction: no path out of
    /// `f` leaves its changes half-committed.
    ///
    /// `f` gets a clone of the handle (cheap; it is the same session). A
    /// failing commit is returned through `E: From<Error>`. A rollback that
    /// fails after `f`'s error (the store went away) is logged, and `f`'s
    /// error returned: the lock then lapses after its TTL.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> sessionkit_core::Result<()> {
    /// use sessionkit_core::{Error, ErrorKind};
    #[doc = concat!("# ", doc_session!())]
    /// session.insert("qty", &3i64)?;
    ///
    /// // Refused midway: nothing of the transaction is kept.
    /// let refused: Result<(), Error> = session
    ///     .transaction(|s| async move {
    ///         let qty: i64 = s.get("qty").await?.unwrap_or(0) - 5;
    ///         s.insert("qty", &qty)?;
    ///         if qty < 0 {
    ///             return Err(Error::new(ErrorKind::ModificationDenied).with_detail("not enough"));
    ///         }
    ///         Ok(())
    ///     })
    ///     .await;
    /// assert!(refused.is_err());
    /// assert_eq!(session.get::<i64>("qty").await?, Some(3));
    ///
    /// // Accepted: committed.
    /// let left = session
    ///     .transaction(|s| async move {
    ///         let qty: i64 = s.get("qty").await?.unwrap_or(0) - 2;
    ///         s.insert("qty", &qty)?;
    ///         Ok::<_, Error>(qty)
    ///     })
    ///     .await?;
    /// assert_eq!(left, 1);
    /// assert!(!session.is_locked());
    /// # Ok(()) }
    /// ```
    pub async fn transaction<T, E, F, Fut>(&self, f: F) -> std::result::Result<T, E>
    where
        F: FnOnce(Session) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, E>>,
        E: From<Error>,
    {
        self.lock().await?;
        match f(self.clone()).await {
            Ok(value) => {
                self.commit().await?;
                Ok(value)
            }
            Err(err) => {
                if let Err(rollback) = self.rollback().await {
                    tracing::warn!(error = %rollback, "rollback after a failed transaction failed");
                }
                Err(err)
            }
        }
    }

    /// Releases a level of the lock; the caller has the handle's turn.
    pub(super) async fn release_in_turn(&self, how: Release) -> Result<()> {
        let ReleaseStep { last, delta, fence } = {
            let mut guard = self.state();
            // Two fields at once: the lock's changes and the buffered ones.
            let state = &mut *guard;
            let Lock::Held {
                depth,
                hold,
                changes,
            } = &mut state.lock
            else {
                return Err(Error::new(ErrorKind::ModificationDenied)
                    .with_operation(how.name())
                    .with_detail("the session is not locked"));
            };
            let last = *depth == 1;
            let mut delta = Delta::default();
            match how {
                Release::Commit => {
                    delta = std::mem::take(&mut state.pending);
                    delta.merge(&std::mem::take(changes));
                }
                Release::Rollback => *changes = Delta::default(),
                Release::Unlock if last => {
                    let locked = std::mem::take(changes);
                    if self.config().write_policy() == WritePolicy::Buffered {
                        state.pending.merge(&locked);
                    }
                }
                Release::Unlock => {}
            }
            let fence = match hold {
                Hold::Store(held) => Some(StoreFence {
                    id: held.id,
                    token: held.token,
                    lost: held.is_lost(),
                    waiters: held.has_waiters(),
                }),
                Hold::Local => None,
            };
            ReleaseStep { last, delta, fence }
        };

        let Some(StoreFence {
            id,
            token,
            lost,
            waiters,
        }) = fence
        else {
            // A local lock: a session nobody else knows, new or created
            // by an earlier commit under this same lock. Its changes are
            // written like a flush (a create, or an unfenced apply once it
            // is stored).
            let written = if delta.is_empty() {
                Ok(())
            } else {
                self.state().pending = delta;
                self.flush_pending().await
            };
            self.after_release(last);
            return written;
        };
        if lost {
            self.after_lock_lost(&id);
            return Err(self.lock_lost_error(&id, how.name()));
        }
        if last && waiters {
            return self.hand_off_lock(id, token, delta, how).await;
        }
        if delta.is_empty() {
            if last {
                // Held until the store lock is released, so that the next
                // local waiter finds it free.
                let _held = std::mem::replace(&mut self.state().lock, Lock::Unlocked);
                self.store()
                    .unlock(&id, &token)
                    .await
                    .map_err(|e| e.with_operation("unlock"))?;
            }
            self.after_release(last);
            return Ok(());
        }
        let fence = Fence {
            token: &token,
            release: last,
        };
        let applied = self.store().apply(&id, &delta, Some(fence)).await;
        match applied {
            Ok(Applied::Applied(meta)) => {
                self.record_applied(&delta, meta);
                self.after_release(last);
                Ok(())
            }
            Ok(Applied::LockLost) => {
                self.after_lock_lost(&id);
                Err(self.lock_lost_error(&id, how.name()))
            }
            Ok(Applied::Gone) => Err(self.gone_while_locked(&id, how)),
            Err(e) => Err(self.keep_unwritten(delta, e, how)),
        }
    }

    /// Releases the last level of a store lock that another request of
    /// this process is waiting for: writes `delta` (possibly empty) fenced,
    /// keeps the store lock and hands it, with the session as read back in
    /// the same store step, to the next in line. One store call, where
    /// release + lock would take two.
    async fn hand_off_lock(
        &self,
        id: SessionId,
        token: LockToken,
        delta: Delta,
        how: Release,
    ) -> Result<()> {
        match self.store().apply_and_read(&id, &delta, &token).await {
            Ok(AppliedAndRead::Applied(record)) => {
                self.record_applied(&delta, record.meta);
                let lock = std::mem::replace(&mut self.state().lock, Lock::Unlocked);
                if let Lock::Held {
                    hold: Hold::Store(held),
                    ..
                } = lock
                {
                    held.hand_off(self.inner.shared.store.clone(), id, record);
                }
                self.after_release(true);
                Ok(())
            }
            Ok(AppliedAndRead::AppliedUnread(meta)) => {
                // Written, but nothing to hand on: release the lock as a
                // plain commit would have, and let the next in line ask the
                // store.
                self.record_applied(&delta, meta);
                let _held = std::mem::replace(&mut self.state().lock, Lock::Unlocked);
                let _ = self.store().unlock(&id, &token).await;
                self.after_release(true);
                Ok(())
            }
            Ok(AppliedAndRead::LockLost) => {
                self.after_lock_lost(&id);
                Err(self.lock_lost_error(&id, how.name()))
            }
            Ok(AppliedAndRead::Gone) if delta.is_empty() => {
                // Nothing was to be written: the lock of a session that is
                // gone is let go, as a plain release would have (the next in
                // line then finds the session gone itself).
                let _held = std::mem::replace(&mut self.state().lock, Lock::Unlocked);
                self.after_release(true);
                Ok(())
            }
            Ok(AppliedAndRead::Gone) => Err(self.gone_while_locked(&id, how)),
            Err(e) => Err(self.keep_unwritten(delta, e, how)),
        }
    }

    /// A commit the store could not take: its changes go back under the
    /// lock, so that the caller may retry or roll back.
    fn keep_unwritten(&self, delta: Delta, err: Error, how: Release) -> Error {
        let mut state = self.state();
        let changes = state.changes_mut();
        let later = std::mem::replace(changes, delta);
        changes.merge(&later);
        err.with_operation(how.name())
    }

    fn gone_while_locked(&self, id: &SessionId, how: Release) -> Error {
        let mut state = self.state();
        state.lock = Lock::Unlocked;
        state.become_fresh();
        tracing::info!(session = %id.short_hash(), "commit refused: the session was destroyed meanwhile");
        Error::new(ErrorKind::SessionGone)
            .with_operation(how.name())
            .with_store(self.store().name())
            .with_detail("the session was destroyed or expired while locked")
    }

    fn lock_timeout(&self, id: &SessionId, config: &LockConfig) -> Error {
        tracing::warn!(session = %id.short_hash(), wait = ?config.wait, "timed out waiting for the session lock");
        Error::new(ErrorKind::LockTimeout)
            .with_operation("lock")
            .with_store(self.store().name())
            .with_detail(format!(
                "held by another request for more than {:?}",
                config.wait
            ))
    }

    pub(super) fn lock_lost_error(&self, id: &SessionId, op: &'static str) -> Error {
        tracing::warn!(session = %id.short_hash(), "fenced write refused: session lock lost");
        Error::new(ErrorKind::LockLost)
            .with_operation(op)
            .with_store(self.store().name())
            .with_detail("the lock expired or was taken by another request; nothing was written")
    }

    pub(super) fn after_lock_lost(&self, _id: &SessionId) {
        let mut state = self.state();
        // The lock goes, and the changes made under it with it.
        state.lock = Lock::Unlocked;
        // What was read under the lost lock may be stale: read again next time.
        if matches!(state.stored, Stored::Live { .. }) {
            state.stored = Stored::Unloaded;
        }
    }

    /// One level of the lock was released; the last one releases the lock.
    pub(super) fn after_release(&self, last: bool) {
        let mut state = self.state();
        match &mut state.lock {
            Lock::Held { depth, .. } if !last && *depth > 1 => *depth -= 1,
            _ => state.lock = Lock::Unlocked,
        }
    }

    /// Records a successful write of `delta` in the handle.
    pub(super) fn record_applied(&self, delta: &Delta, meta: Meta) {
        let mut state = self.state();
        if let Stored::Live { entries, meta: m } = &mut state.stored {
            entries.apply(delta);
            *m = meta;
        } else {
            // Written blind: the handle never saw the rest of the data.
        }
        state.candidates = Vec::new();
        state.expiry_moved = Some(meta);
    }
}

/// What releasing a level of the lock must do, decided under the state
/// mutex and carried out after it.
struct ReleaseStep {
    /// The last level: the lock itself goes.
    last: bool,
    /// The changes to write: the buffered ones and the lock's, for a commit.
    delta: Delta,
    /// The store lock that fences the write; `None` for a local lock.
    fence: Option<StoreFence>,
}

/// A store lock as a release uses it.
struct StoreFence {
    id: SessionId,
    token: LockToken,
    /// A renewal found the lock gone.
    lost: bool,
    /// Another request of this process waits for the lock.
    waiters: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Release {
    Commit,
    Rollback,
    Unlock,
}

impl Release {
    pub(super) fn name(self) -> &'static str {
        match self {
            Release::Commit => "commit",
            Release::Rollback => "rollback",
            Release::Unlock => "unlock",
        }
    }
}
