//! The HTTP layer's side of a request's session: finishing it when the
//! response is produced, and what the response must then say.

use std::time::Duration;

use crate::config::{LockPolicy, Outcome};
use crate::error::Error;
use crate::id::SessionId;
use crate::record::now_ms;
use crate::session::state::{Lock, Sent, Stored};
use crate::session::transaction::Release;
use crate::session::{Presented, Session, SessionFactory};

/// One request's session as an HTTP integration (the tower layer, the
/// actix-web middleware, your own) holds it: the handler's [`Session`], and
/// the finish that only the integration calls, once, when the response is
/// produced.
///
/// It dereferences to the [`Session`], which is what the handler gets
/// (a clone of it, through the request's extensions).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use sessionkit_core::{CookieChange, Outcome, Presented, SessionConfig, SessionFactory};
/// use sessionkit_core::store::MemoryStore;
///
/// let factory = SessionFactory::new(MemoryStore::new(), SessionConfig::default());
/// let request = factory.request(Presented::Nothing); // no cookie
/// let session = request.session().clone(); // what the handler gets
/// session.insert("user", &"ada").unwrap();
/// let finished = request.finish(Outcome::Success).await;
/// assert!(finished.error.is_none());
/// assert!(matches!(finished.cookie, CookieChange::Set { .. }));
/// assert!(session.insert("k", &2).is_err()); // the response is out
/// # }
/// ```
#[derive(Debug)]
pub struct RequestSession {
    session: Session,
}

impl SessionFactory {
    /// The session of a request that presented `ids` (what the integration
    /// read from its cookie or header), for an HTTP integration to finish.
    pub fn request(&self, ids: impl Into<Presented>) -> RequestSession {
        RequestSession {
            session: self.session(ids),
        }
    }
}

impl RequestSession {
    /// The handler's handle.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Whether the handler used the session (read, wrote, locked, …).
    /// `false` for a request that never touched it: the integration then
    /// skips the finish entirely (no store call, no cookie).
    pub fn is_used(&self) -> bool {
        self.session.is_used()
    }

    /// Ends the request's use of the session, for a response whose status
    /// gave `outcome`.
    ///
    /// Releases every lock still held (committing or rolling back as the
    /// [`ReleasePolicy`](crate::ReleasePolicy) says for `outcome`: by
    /// default commit on success, roll back on 4xx and 5xx), flushes
    /// buffered writes in one store operation, and says what to do with the
    /// cookie. After it, writes through any clone of the handle are refused.
    ///
    /// A buffered flush to a session that has expired or been destroyed
    /// meanwhile never brings it back: if the request had read the session,
    /// the flush fails with [`ErrorKind::SessionGone`](crate::ErrorKind::SessionGone);
    /// if it wrote blind, its changes start a new session under a new id, as
    /// if they had come just after the session ended.
    pub async fn finish(&self, outcome: Outcome) -> Finished {
        self.session.finish_with(outcome).await
    }

    /// [`RequestSession::finish`] without waiting, when it has nothing to
    /// wait for: no lock is held, no write is buffered and no operation of a
    /// clone is in flight — the common case of a request that only read
    /// (whatever the outcome). Returns `None` when the asynchronous `finish`
    /// is needed. Integrations call this first, so that read-only requests
    /// finish without a boxed future.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use sessionkit_core::{Outcome, SessionFactory};
    ///
    /// let request = SessionFactory::for_tests().request(None);
    /// request.insert("k", &1).unwrap();
    /// assert!(request.finish_now().is_none()); // a write to flush
    /// let _ = request.finish(Outcome::Success).await;
    /// # }
    /// ```
    pub fn finish_now(&self) -> Option<Finished> {
        self.session.finish_now()
    }
}

impl std::ops::Deref for RequestSession {
    type Target = Session;

    fn deref(&self) -> &Session {
        &self.session
    }
}

/// What the response must do with the session cookie, as decided by
/// [`RequestSession::finish`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CookieChange {
    /// Leave the cookie alone (no `Set-Cookie`).
    Keep,
    /// Send the cookie with this id, valid for `max_age`.
    Set {
        /// The id to send.
        id: SessionId,
        /// Time until the server expires the session.
        max_age: Duration,
        /// Whether [`Session::set_lifetime`] gave the session a lifetime of
        /// its own ("remember me", recorded with the session in the store:
        /// [`Meta::remembered`](crate::record::Meta::remembered)); the layer
        /// then always sends a persistent cookie.
        remembered: bool,
    },
    /// Expire the client's cookie: its session is gone.
    Remove,
}

/// The result of [`RequestSession::finish`].
#[derive(Debug)]
pub struct Finished {
    /// What to do with the cookie.
    pub cookie: CookieChange,
    /// The first error met while flushing or releasing, if any. The HTTP
    /// layer turns it into an error response.
    pub error: Option<Error>,
}

impl Session {
    pub(super) fn is_finished(&self) -> bool {
        self.state().finished
    }

    /// Whether the handler used the session (read, wrote, locked, …): an
    /// unused one needs no finishing, no store call and no cookie.
    pub(crate) fn is_used(&self) -> bool {
        self.state().used
    }

    /// Ends the request's use of the session: see [`RequestSession::finish`].
    pub(crate) async fn finish_with(&self, outcome: Outcome) -> Finished {
        let _turn = self.turn().await;
        let mut error = None;

        // Whole-request locking: blind writes are serialized like the rest.
        if self.config().lock_policy() == LockPolicy::WholeRequest {
            let needs_lock = {
                let state = self.state();
                !state.is_locked() && !state.pending.is_empty()
            };
            if needs_lock && let Err(e) = self.acquire_in_turn().await {
                error = Some(e);
            }
        }

        let commit = self.config().release_policy().commits(outcome);
        // Inner levels fold into the outermost one.
        while self.state().fold_lock() {
            let how = if commit {
                Release::Commit
            } else {
                Release::Rollback
            };
            if let Err(e) = self.release_in_turn(how).await {
                // Locks on a failed path are released, not retried.
                self.state().lock = Lock::Unlocked;
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

    /// See [`RequestSession::finish_now`].
    pub(crate) fn finish_now(&self) -> Option<Finished> {
        let _turn = self.inner.turns.try_lock().ok()?;
        {
            let state = self.state();
            if state.is_locked() || !state.pending.is_empty() {
                return None;
            }
        }
        Some(self.conclude(None))
    }

    /// Marks the session finished and decides what the cookie must say.
    fn conclude(&self, error: Option<Error>) -> Finished {
        let mut state = self.state();
        state.finished = true;
        // A refused CSRF check ends the request with 403 even when the
        // handler went on after its error.
        let error = match (error, state.csrf_verdict()) {
            (Some(error), _) => Some(error),
            (None, verdict) => verdict.err(),
        };
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
}
