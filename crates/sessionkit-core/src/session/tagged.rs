//! A session told apart by a type: for apps with two session layers (two cookies, or two stores).

use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;

use crate::session::Session;

/// The session of the layer tagged `K`: what a handler takes when an app
/// runs more than one session layer, for example a visitor session and an
/// admin session with its own cookie and store.
///
/// A layer puts its session into the request's extensions, which are keyed
/// by type: two layers that both put a plain [`Session`] there would
/// overwrite each other. A layer built with a tag (`SessionLayerBuilder::tag`
/// in the `sessionkit` crate) puts a `SessionOf<K>` there instead, so each
/// layer's session has its own type, and its own extractor (axum with
/// feature `axum`, actix-web with feature `actix`). `K` is any type of the app's, usually an empty marker; it is
/// never built.
///
/// It dereferences to the [`Session`].
///
/// ```
/// use sessionkit_core::{SessionFactory, SessionOf};
///
/// /// The admin area's sessions.
/// struct Admin;
///
/// let admin: SessionOf<Admin> = SessionOf::new(SessionFactory::for_tests().session(None));
/// assert_eq!(admin.id(), None); // a Session, through Deref
/// ```
pub struct SessionOf<K: ?Sized> {
    session: Session,
    tag: PhantomData<fn() -> K>,
}

impl<K: ?Sized> SessionOf<K> {
    /// Tags `session` with `K`.
    pub fn new(session: Session) -> Self {
        SessionOf {
            session,
            tag: PhantomData,
        }
    }

    /// The session itself.
    pub fn into_inner(self) -> Session {
        self.session
    }
}

impl<K: ?Sized> Deref for SessionOf<K> {
    type Target = Session;

    fn deref(&self) -> &Session {
        &self.session
    }
}

impl<K: ?Sized> Clone for SessionOf<K> {
    fn clone(&self) -> Self {
        SessionOf::new(self.session.clone())
    }
}

impl<K: ?Sized> fmt::Debug for SessionOf<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionOf")
            .field("tag", &std::any::type_name::<K>())
            .field("session", &self.session)
            .finish()
    }
}
