//! Session events: what happened to sessions, for an application's audit
//! log, a "new sign-in" notice or a metric.
//!
//! Register an observer with [`SessionFactory::with_observer`](crate::SessionFactory::with_observer) (the facade's
//! layer builder has `on_event`). It is called off the request's critical
//! path: events go through a bounded queue to a thread of their own, so a
//! slow observer never delays a response; when the queue is full (the
//! observer is that slow), further events are dropped and counted
//! ([`SessionFactory::dropped_events`](crate::SessionFactory::dropped_events)) rather than kept waiting.
//!
//! Events carry the session's [`SessionHandle`] and [`Owner`] where the
//! session has them (see [`crate::owner`]) and the request knows them (it
//! read the session, or set the owner: nothing is read just for an event),
//! never its id. Every one is also
//! a `tracing` event (target `sessionkit_core`, level `info` or `debug`).
//!
//! Which events come when:
//!
//! - [`SessionEvent::Created`] when a new session is first stored;
//! - [`SessionEvent::Regenerated`] when [`Session::regenerate`](crate::Session::regenerate)
//!   moved it to a new id;
//! - [`SessionEvent::Destroyed`] when [`Session::destroy`](crate::Session::destroy)
//!   ended it;
//! - [`SessionEvent::OwnerSet`] when [`Session::set_owner`](crate::Session::set_owner)
//!   gave it an owner (with the sessions the cap ended to make room);
//! - [`SessionEvent::Revoked`] when the [`Owners`](crate::owner::Owners)
//!   registry of the factory ended it.
//!
//! Expiry is not reported: no store tells the session layer when a session
//! expires (Redis and memcached expire keys on their own; the others notice
//! on the next access or sweep).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> sessionkit_core::Result<()> {
//! use std::sync::mpsc;
//! use std::time::Duration;
//! use sessionkit_core::events::SessionEvent;
//! use sessionkit_core::SessionFactory;
//!
//! let (tx, rx) = mpsc::channel();
//! let factory = SessionFactory::for_tests().with_observer(move |event: &SessionEvent| {
//!     let _ = tx.send(event.clone());
//! });
//! let session = factory.session(None);
//! session.insert("user", &"ada")?;
//! session.set_owner("ada").await?;
//! let first = rx.recv_timeout(Duration::from_secs(5)).unwrap();
//! assert!(matches!(first, SessionEvent::Created { .. }));
//! let second = rx.recv_timeout(Duration::from_secs(5)).unwrap();
//! assert!(matches!(second, SessionEvent::OwnerSet { .. }));
//! # Ok(()) }
//! ```

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};

use crate::owner::{Owner, SessionHandle};

/// Something that happened to a session. See the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionEvent {
    /// A new session was stored.
    Created,
    /// A session moved to a new id.
    Regenerated {
        /// Its handle, if it has an owner (and the request read it before).
        handle: Option<SessionHandle>,
        /// Its owner, if any (and the request read it before).
        owner: Option<Owner>,
    },
    /// A session was ended by [`Session::destroy`](crate::Session::destroy).
    Destroyed {
        /// Its handle, if it has an owner (and was read before).
        handle: Option<SessionHandle>,
        /// Its owner, if any (and it was read before).
        owner: Option<Owner>,
    },
    /// A session got an owner.
    OwnerSet {
        /// Its handle.
        handle: SessionHandle,
        /// Its owner.
        owner: Owner,
        /// The owner's sessions that the cap ended to make room.
        ended: Vec<SessionHandle>,
    },
    /// An owner's session was revoked through the [`Owners`](crate::owner::Owners)
    /// registry.
    Revoked {
        /// Its handle.
        handle: SessionHandle,
        /// Its owner.
        owner: Owner,
    },
    /// An owner's sessions were revoked all at once (all, or all but one).
    RevokedAll {
        /// Their owner.
        owner: Owner,
        /// How many.
        count: u64,
    },
}

/// How many events wait for the observer at most.
const QUEUE: usize = 1024;

/// The sending side of a factory's observer: cheap to clone, never blocks.
#[derive(Clone, Default)]
pub(crate) struct Events {
    queue: Option<SyncSender<SessionEvent>>,
    dropped: Arc<AtomicU64>,
}

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Events")
            .field("observed", &self.queue.is_some())
            .finish_non_exhaustive()
    }
}

impl Events {
    /// Events delivered to `observer` on a thread of their own, which ends
    /// when the last sender (the factory and its sessions) is dropped.
    pub(crate) fn to(observer: impl Fn(&SessionEvent) + Send + 'static) -> Events {
        let (queue, events) = sync_channel::<SessionEvent>(QUEUE);
        let spawned = std::thread::Builder::new()
            .name("sessionkit-events".into())
            .spawn(move || {
                for event in events {
                    observer(&event);
                }
            });
        match spawned {
            Ok(_) => Events {
                queue: Some(queue),
                dropped: Arc::default(),
            },
            Err(e) => {
                tracing::error!(error = %e, "could not start the session events thread: events are off");
                Events::default()
            }
        }
    }

    /// Hands `event` to the observer, if there is one; never waits.
    pub(crate) fn emit(&self, event: impl FnOnce() -> SessionEvent) {
        let Some(queue) = &self.queue else { return };
        match queue.try_send(event()) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if dropped.is_power_of_two() {
                    tracing::warn!(dropped, "session observer too slow: events dropped");
                }
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}
