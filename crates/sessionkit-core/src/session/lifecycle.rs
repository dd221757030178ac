//! A session's life: creation, new ids, destruction, saving, and what the handle knows of its expiry.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Error, ErrorKind, Result};
use crate::events::SessionEvent;
use crate::id::SessionId;
use crate::owner::{DEVICE_KEY, HANDLE_KEY, OWNER_KEY};
use crate::record::{Delta, Entries, Meta, Record, now_ms};
use crate::session::lock::HeldLock;
use crate::session::state::{Hold, Lock, Stored};
use crate::session::{CookieChange, Inner, Presented, Session, SessionFactory};
use crate::store::{Applied, Created, IdChanged};

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
        let _turn = self.turn().await;
        self.state().used = true;
        self.settle_csrf_in_turn().await?;
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
                (_, Some(old)) => (old, state.store_lock().map(|held| held.token)),
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
                    {
                        let mut state = self.state();
                        state.id = Some(new);
                        state.expiry_moved = Some(meta);
                        if let Stored::Live { meta: m, .. } = &mut state.stored {
                            *m = meta;
                        }
                        if let Some(token) = token
                            && let Lock::Held { hold, .. } = &mut state.lock
                            && let Hold::Store(held) = hold
                        {
                            // The lock moved with its expiry, so it keeps its
                            // renewal schedule. Nobody else knows the new id, so
                            // it needs no local line; dropping the old lock's
                            // place lets waiters for the old id find it gone.
                            let renewed_at = held.renewed_at();
                            *hold = Hold::Store(HeldLock::start(
                                self.inner.shared.store.clone(),
                                new,
                                token,
                                self.config().lock(),
                                None,
                                renewed_at,
                            ));
                        }
                    }
                    tracing::info!(old = %old.short_hash(), new = %new.short_hash(), "session id regenerated");
                    let (handle, owner) = self.owned_as();
                    self.inner
                        .shared
                        .events
                        .emit(|| SessionEvent::Regenerated { handle, owner });
                    if let Some(grace) = self.config().keep_old_id_for() {
                        self.keep_old_id(old, new, grace).await;
                    }
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
        let _turn = self.turn().await;
        self.state().used = true;
        self.settle_csrf_in_turn().await?;
        // The lock (and this process's line for the session) is let go only
        // once the store has deleted the session and its lock.
        let (handle, owner) = self.owned_as();
        let (id, _held) = {
            let mut state = self.state();
            state.used = true;
            let id = match state.stored {
                Stored::Fresh => None,
                _ => state.id,
            };
            state.become_fresh();
            (id, std::mem::replace(&mut state.lock, Lock::Unlocked))
        };
        if let Some(id) = id {
            self.store()
                .destroy(&id)
                .await
                .map_err(|e| e.with_operation("destroy"))?;
            tracing::info!(session = %id.short_hash(), "session destroyed");
            self.inner
                .shared
                .events
                .emit(|| SessionEvent::Destroyed { handle, owner });
        }
        Ok(())
    }

    /// Creates a new session from `delta`, minting ids until one is free.
    pub(super) async fn flush_fresh(&self, delta: Delta) -> Result<()> {
        let mut entries = Entries::default();
        entries.apply(&delta);
        if entries.is_empty() {
            // Empty sessions are never stored.
            return Ok(());
        }
        let config = self.config();
        let lifetime = delta
            .ttl_ms()
            .map(Duration::from_millis)
            .unwrap_or(config.lifetime());
        let now = now_ms();
        let mut meta = Meta::new(now, lifetime, config.absolute_lifetime())
            .with_remembered(delta.remembered() == Some(true));
        if let Some(at) = delta.deadline_cap() {
            meta.cap_deadline(at);
            meta.refresh(now);
        }
        let record = Record { entries, meta };
        let mut id = self.state().id_for_write();
        for _ in 0..4 {
            match self
                .store()
                .create(&id, &record)
                .await
                .map_err(|e| e.with_operation("create"))?
            {
                Created::Created => {
                    self.inner.shared.events.emit(|| SessionEvent::Created);
                    let mut state = self.state();
                    state.id = Some(id);
                    state.expiry_moved = Some(record.meta);
                    state.stored = Stored::Live {
                        entries: record.entries,
                        meta: record.meta,
                    };
                    tracing::debug!(session = %id.short_hash(), "session created");
                    return Ok(());
                }
                // 256 random bits collide only if the generator is broken;
                // never overwrite, try another id.
                Created::IdTaken => id = SessionId::generate(),
            }
        }
        Err(self.ids_exhausted("create"))
    }

    pub(super) async fn flush_pending(&self) -> Result<()> {
        if self.state().pending.is_empty() {
            return Ok(());
        }
        self.settle_csrf_in_turn().await?;
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
        let lock = std::mem::replace(&mut state.lock, Lock::Unlocked);
        if let Lock::Held {
            hold: Hold::Store(held),
            ..
        } = lock
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

impl Session {
    /// After a regenerate from `old` to `new`: a copy of the session under
    /// `old`, alive for `grace` (see
    /// [`SessionConfigBuilder::keep_old_id_for`](crate::SessionConfigBuilder::keep_old_id_for)).
    async fn keep_old_id(&self, old: SessionId, new: SessionId, grace: Duration) {
        let loaded = match self.store().load(&new, None).await {
            Ok(Some(loaded)) => loaded.record,
            Ok(None) => return, // gone meanwhile: nothing to keep
            Err(e) => {
                tracing::warn!(old = %old.short_hash(), error = %e, "could not keep the old session id: the new session could not be read");
                return;
            }
        };
        // The copy is in no owner's index, so no revocation could end it:
        // it must not carry the owner (nor the handle, which is the new
        // id's).
        let mut entries = loaded.entries;
        for reserved in [OWNER_KEY, HANDLE_KEY, DEVICE_KEY] {
            entries.remove(reserved);
        }
        let copy = Record {
            entries,
            meta: Meta::new(now_ms(), grace, Some(grace)),
        };
        match self.store().create(&old, &copy).await {
            Ok(_) => {
                tracing::debug!(old = %old.short_hash(), ?grace, "old session id kept for the grace period")
            }
            Err(e) => {
                tracing::warn!(old = %old.short_hash(), error = %e, "could not keep the old session id")
            }
        }
    }

    /// Writes the buffered changes now, in the same one store operation the
    /// flush at the end of the request would use, so that they are safe
    /// before a long operation or a streamed body. Later writes of the
    /// request are flushed at its end as usual. Changes made under a lock
    /// are not touched: they belong to the transaction (see
    /// [`Session::commit`]).
    ///
    /// Nothing to write costs nothing; a new session is created here.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> sessionkit_core::Result<()> {
    /// use sessionkit_core::SessionFactory;
    ///
    /// let factory = SessionFactory::for_tests();
    /// let session = factory.session(None);
    /// session.insert("report", &"started")?;
    /// session.save().await?; // stored now, before the long work
    /// let other = factory.session(session.id());
    /// assert_eq!(other.get::<String>("report").await?.as_deref(), Some("started"));
    /// # Ok(()) }
    /// ```
    pub async fn save(&self) -> Result<()> {
        let _turn = self.turn().await;
        self.state().used = true;
        self.flush_pending().await
    }

    /// Whether the request has a stored session: a known id, or one written
    /// by this request. Answers without a store call when the handle already
    /// knows (a new session, or one read before); otherwise reads it, which
    /// later reads then use.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> sessionkit_core::Result<()> {
    #[doc = concat!("# ", doc_session!())]
    /// assert!(!session.exists().await?);
    /// session.insert("k", &1)?;
    /// session.save().await?;
    /// assert!(session.exists().await?);
    /// # Ok(()) }
    /// ```
    pub async fn exists(&self) -> Result<bool> {
        self.ensure_loaded().await?;
        Ok(matches!(self.state().stored, Stored::Live { .. }))
    }

    /// When the session expires unless it is used again (its idle expiry,
    /// capped by its absolute deadline); `None` for a session that is not
    /// stored. Reads the session if it was not read yet.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> sessionkit_core::Result<()> {
    /// use std::time::{Duration, SystemTime};
    #[doc = concat!("# ", doc_session!())]
    /// assert_eq!(session.expires_at().await?, None);
    /// session.insert("k", &1)?;
    /// session.save().await?;
    /// let at = session.expires_at().await?.unwrap();
    /// assert!(at > SystemTime::now() + Duration::from_secs(119 * 60)); // 120 minutes idle
    /// assert!(session.expires_in().await?.unwrap() <= Duration::from_secs(120 * 60));
    /// assert_eq!(session.deadline().await?, None); // no absolute lifetime set
    /// # Ok(()) }
    /// ```
    pub async fn expires_at(&self) -> Result<Option<SystemTime>> {
        Ok(self.meta().await?.map(|m| at_ms(m.expires())))
    }

    /// Time left until [`Session::expires_at`]; `None` for a session that is
    /// not stored.
    pub async fn expires_in(&self) -> Result<Option<Duration>> {
        Ok(self.meta().await?.map(|m| m.remaining(now_ms())))
    }

    /// The session's absolute deadline (its absolute lifetime from
    /// creation), if it has one.
    pub async fn deadline(&self) -> Result<Option<SystemTime>> {
        Ok(self.meta().await?.and_then(|m| m.deadline()).map(at_ms))
    }

    /// The session's expiry metadata as last reported by the store.
    async fn meta(&self) -> Result<Option<Meta>> {
        self.ensure_loaded().await?;
        let state = self.state();
        Ok(match &state.stored {
            Stored::Live { meta, .. } => Some(*meta),
            _ => None,
        })
    }

    /// Ends this request as the HTTP layer would on a successful response,
    /// and returns the session of the client's next request: the one that
    /// presents the cookie this response left (a new id, the same one, or
    /// none after a destroy). The way to test a handler without a server:
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> sessionkit_core::Result<()> {
    /// use sessionkit_core::{Session, SessionFactory};
    ///
    /// // The handler under test.
    /// async fn visit(session: Session) -> sessionkit_core::Result<u32> {
    ///     let n = session.get_or("visits", 0u32).await? + 1;
    ///     session.insert("visits", &n)?;
    ///     Ok(n)
    /// }
    ///
    /// let first = SessionFactory::for_tests().session(None);
    /// assert_eq!(visit(first.clone()).await?, 1);
    /// let second = first.next_request().await?;
    /// assert_eq!(visit(second.clone()).await?, 2);
    /// # Ok(()) }
    /// ```
    ///
    /// Fails with the error the layer would have turned into an error
    /// response (for example [`ErrorKind::SessionGone`] when another request
    /// destroyed the session meanwhile).
    pub async fn next_request(&self) -> Result<Session> {
        let finished = self.finish_with(crate::Outcome::Success).await;
        if let Some(err) = finished.error {
            return Err(err);
        }
        let presented = match finished.cookie {
            CookieChange::Set { id, .. } => Presented::from(id),
            CookieChange::Remove => Presented::Nothing,
            _ => self.state().client_id.into(),
        };
        Ok(SessionFactory {
            shared: self.inner.shared.clone(),
        }
        .session(presented))
    }
}

/// A time in Unix milliseconds as a `SystemTime`.
fn at_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}
