//! A session's owner, from the handle's side: set it at login, read it back.

use crate::codec::encode_value;
use crate::error::{Error, ErrorKind, Result};
use crate::events::SessionEvent;
use crate::owner::{DEVICE_KEY, HANDLE_KEY, OWNER_KEY, Owner, OwnerSet, Owners, SessionHandle};
use crate::session::state::Stored;
use crate::session::{Session, SessionFactory};

impl Session {
    /// Makes `owner` (a user id, say) the owner of this session, so that
    /// the owner's sessions can be listed and revoked (see
    /// [`Owners`](crate::owner::Owners) and the [`owner`](crate::owner)
    /// module). Call it at login, after [`Session::regenerate`].
    ///
    /// One store operation, which also enforces the configured cap on
    /// sessions per owner
    /// ([`max_sessions_per_owner`](crate::SessionConfigBuilder::max_sessions_per_owner));
    /// the request's buffered writes are written first (a session not
    /// stored yet is created with them). The session gets a
    /// [`SessionHandle`] (kept if it had one), which survives later
    /// regenerates.
    ///
    /// Set the owner **before** writing the login's own state (the user
    /// id, roles): a login the cap refuses keeps what the request wrote
    /// before it, like any request that answers 4xx. It takes effect at
    /// once, also under [`Session::lock`]: a later rollback does not undo
    /// it, nor the sessions the cap ended.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> sessionkit_core::Result<()> {
    #[doc = concat!("# ", doc_session!())]
    /// session.regenerate().await?;
    /// session.set_owner("user-42").await?;
    /// session.insert("user", &"ada")?;
    /// assert_eq!(session.owner().await?.as_deref(), Some("user-42"));
    /// assert!(session.handle().await?.is_some());
    /// assert!(session.keys().await?.contains(&"user".to_owned())); // not a plain key
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidOwner`] for an empty or too long owner or one
    /// with control characters; [`ErrorKind::OwnerFull`] (403) when the cap
    /// refuses another session; [`ErrorKind::OwnersUnsupported`] when the
    /// store keeps no owner index; [`ErrorKind::SessionGone`] when the
    /// session ended meanwhile; and the store's own errors.
    pub async fn set_owner(&self, owner: &str) -> Result<()> {
        self.set_owner_with(owner, None).await
    }

    /// [`Session::set_owner`], with a label for the device the session was
    /// started on (its user agent, say), which the owner's list shows. The
    /// label is kept without control characters and cut to
    /// [`DEVICE_MAX_LEN`](crate::owner::DEVICE_MAX_LEN) bytes: a user
    /// agent is whatever the client sends.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> sessionkit_core::Result<()> {
    #[doc = concat!("# ", doc_session!())]
    /// session.set_owner_on("user-42", "Firefox on Linux").await?;
    /// # Ok(()) }
    /// ```
    pub async fn set_owner_on(&self, owner: &str, device: &str) -> Result<()> {
        self.set_owner_with(owner, Some(device)).await
    }

    async fn set_owner_with(&self, owner: &str, device: Option<&str>) -> Result<()> {
        let owner = Owner::new(owner).map_err(|e| e.with_operation("set_owner"))?;
        let store = self.store().name();
        let index = self
            .inner
            .shared
            .store
            .clone()
            .owner_index()
            .ok_or_else(|| {
                Error::new(ErrorKind::OwnersUnsupported)
                    .with_operation("set_owner")
                    .with_store(store)
                    .with_detail("this store keeps no index of owners' sessions")
            })?;
        let _turn = self.turn().await;
        self.state().begin_change()?;
        self.settle_csrf_in_turn().await?;
        // What is stored decides below: whether there is a session at all
        // (a cookie of an ended one starts afresh) and its handle, kept
        // when it has one.
        self.load_in_turn().await?;
        let stored = {
            let state = self.state();
            state.id.is_some() && !matches!(state.stored, Stored::Fresh)
        };
        if !stored {
            // Created with the request's writes so far and the owner, as a
            // flush would; the store operation below then adds the handle.
            self.insert_entry(OWNER_KEY, owner.as_str())?;
        }
        // The request's writes so far go first: a buffered `clear_all`
        // flushed after the owner was set would wipe it.
        self.flush_pending().await?;
        let (id, handle) = {
            let state = self.state();
            let handle = state
                .value(HANDLE_KEY)
                .and_then(|v| crate::codec::decode_value::<String>(v).ok())
                .and_then(|text| SessionHandle::parse(&text).ok());
            (state.id, handle.unwrap_or_else(SessionHandle::generate))
        };
        let Some(id) = id else {
            return Err(Error::new(ErrorKind::SessionGone)
                .with_operation("set_owner")
                .with_detail("the session could not be stored"));
        };
        let cap = self.config().owner_cap();
        let set = index
            .set_owner(&id, &owner, &handle, device, cap)
            .await
            .map_err(|e| e.with_operation("set_owner").with_store(store));
        if !stored && matches!(set, Ok(OwnerSet::Full) | Err(_)) {
            // The session was created above with the owner entry; a login
            // that did not take must not leave it saying whose it is. Written
            // now: the error answer's rollback would drop a buffered removal.
            self.discard_entry(OWNER_KEY)?;
            if let Err(err) = self.flush_pending().await {
                tracing::warn!(error = %err, "a refused login's owner entry could not be removed");
            }
        }
        match set? {
            OwnerSet::Set { ended } => {
                let mut state = self.state();
                if let Stored::Live { entries, .. } = &mut state.stored {
                    entries.insert(OWNER_KEY, encode_value(&owner.as_str())?);
                    entries.insert(HANDLE_KEY, encode_value(&handle.to_string())?);
                    match device {
                        Some(device) => entries.insert(DEVICE_KEY, encode_value(&device)?),
                        None => {
                            entries.remove(DEVICE_KEY);
                        }
                    }
                }
                tracing::info!(%handle, ended = ended.len(), "session owner set");
                self.inner.shared.events.emit(|| SessionEvent::OwnerSet {
                    handle,
                    owner,
                    ended,
                });
                Ok(())
            }
            OwnerSet::Full => Err(Error::new(ErrorKind::OwnerFull)
                .with_operation("set_owner")
                .with_store(store)
                .with_detail("the owner has as many sessions as the cap allows")),
            OwnerSet::Gone => {
                self.state().found_gone();
                Err(Error::new(ErrorKind::SessionGone)
                    .with_operation("set_owner")
                    .with_store(store))
            }
        }
    }

    /// The registry of owners' sessions of this session's store (to show
    /// the owner's other sessions, or sign them out), if the store keeps
    /// an owner index.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> sessionkit_core::Result<()> {
    #[doc = concat!("# ", doc_session!())]
    /// session.set_owner("ada").await?;
    /// let owners = session.owners().expect("the memory store keeps an owner index");
    /// let ada = sessionkit_core::owner::Owner::new("ada")?;
    /// assert_eq!(owners.count(&ada).await?, 1);
    /// # Ok(()) }
    /// ```
    pub fn owners(&self) -> Option<Owners> {
        let shared = &self.inner.shared;
        let store = shared.store.clone();
        let name = store.name();
        store
            .owner_index()
            .map(|index| Owners::from_dyn(index, name, shared.events.clone()))
    }

    /// The handle and owner the handle knows of (read before, or set by
    /// this request), for events: nothing is read for them.
    pub(super) fn owned_as(&self) -> (Option<SessionHandle>, Option<Owner>) {
        let state = self.state();
        let text = |key| -> Option<String> {
            crate::codec::decode_value::<String>(state.value(key)?).ok()
        };
        (
            text(HANDLE_KEY).and_then(|t| SessionHandle::parse(&t).ok()),
            text(OWNER_KEY).and_then(|t| Owner::new(t).ok()),
        )
    }

    /// The session's owner, if [`Session::set_owner`] gave it one. Reads
    /// the session if it was not read yet.
    pub async fn owner(&self) -> Result<Option<String>> {
        self.entry(OWNER_KEY).await
    }

    /// The session's handle among its owner's sessions (to mark "this
    /// device" in a list of them), if it has an owner.
    pub async fn handle(&self) -> Result<Option<SessionHandle>> {
        let text = self.entry::<String>(HANDLE_KEY).await?;
        Ok(text.and_then(|t| SessionHandle::parse(&t).ok()))
    }
}

impl SessionFactory {
    /// The registry of owners' sessions of this factory's store, if the
    /// store keeps an owner index.
    ///
    /// ```
    /// use sessionkit_core::SessionFactory;
    ///
    /// assert!(SessionFactory::for_tests().owners().is_some()); // the memory store
    /// ```
    pub fn owners(&self) -> Option<Owners> {
        self.session(None).owners()
    }
}
