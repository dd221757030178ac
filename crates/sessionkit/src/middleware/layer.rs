//! The layer and its builder.

use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use http::Response;
use sessionkit_core::events::SessionEvent;
use sessionkit_core::store::ArcStore;
use sessionkit_core::{
    CookieChange, CsrfCheck, Error, ErrorKind, Finished, ReportedError, RequestSession, Session,
    SessionConfig, SessionFactory, SessionOf, SessionStore,
};
use tower_layer::Layer;

use crate::cookie::{self, CookieConfig, CookieWriter, ResponseHeaders, SameSite};
use crate::middleware::service::SessionService;
use crate::signing::Refused;
use crate::transport::{Carrier, RequestHeaders, Transport};

/// The session layer: wraps a service so that each request gets a
/// [`Session`](sessionkit_core::Session). See the [module docs](crate::middleware).
///
/// Cheap to clone; clones share the store.
#[derive(Debug, Clone)]
pub struct SessionLayer {
    pub(crate) shared: Arc<Shared>,
}

pub(crate) struct Shared {
    /// What the layer was built from, for the `with_*` shortcuts.
    pub(crate) parts: SessionLayerBuilder,
    pub(crate) factory: SessionFactory,
    /// How the id travels: cookie or header.
    pub(crate) carrier: Carrier,
    pub(crate) rejections: RejectionCounters,
    pub(crate) on_error: Option<ErrorHook>,
    /// Puts the request's session into its extensions: as a plain
    /// `Session`, or tagged (see [`SessionLayerBuilder::tag`]).
    pub(crate) insert: InsertSession,
    /// Set once a [`CsrfLayer`](crate::CsrfLayer) was made from this layer:
    /// every unsafe request with a session cookie then needs its token.
    pub(crate) csrf_checked: AtomicBool,
}

/// How a layer puts the session into the request's extensions: one
/// function per framework's extensions type, chosen together by
/// [`SessionLayerBuilder::tag`].
///
/// The request's [`CsrfCheck`], when one is asked for, travels the same way
/// to the CSRF layer, which takes it out: in a slot of the tag's type, so
/// that each CSRF layer feeds the check of the session layer it was made
/// from.
#[derive(Clone, Copy)]
pub(crate) struct InsertSession {
    pub(crate) http: fn(&mut http::Extensions, Session, Option<CsrfCheck>),
    pub(crate) take_check_http: fn(&mut http::Extensions) -> Option<CsrfCheck>,
    #[cfg(feature = "actix")]
    pub(crate) actix: fn(&mut actix_web::dev::Extensions, Session, Option<CsrfCheck>),
    #[cfg(feature = "actix")]
    pub(crate) take_check_actix: fn(&mut actix_web::dev::Extensions) -> Option<CsrfCheck>,
}

/// A request's CSRF check on its way from a session layer that inserts
/// its session as `T` to the CSRF layer made from it.
struct CheckSlot<T>(CsrfCheck, PhantomData<fn() -> T>);

impl<T> Clone for CheckSlot<T> {
    fn clone(&self) -> Self {
        CheckSlot(self.0.clone(), PhantomData)
    }
}

/// What a layer inserts for the handler: a `Session`, or a tagged one.
trait Inserted: Clone + Send + Sync + 'static {
    fn from_session(session: Session) -> Self;
}

impl Inserted for Session {
    fn from_session(session: Session) -> Self {
        session
    }
}

impl<K: ?Sized + 'static> Inserted for SessionOf<K> {
    fn from_session(session: Session) -> Self {
        SessionOf::new(session)
    }
}

fn insert_http<T: Inserted>(
    ext: &mut http::Extensions,
    session: Session,
    check: Option<CsrfCheck>,
) {
    ext.insert(T::from_session(session));
    if let Some(check) = check {
        ext.insert(CheckSlot::<T>(check, PhantomData));
    }
}

fn take_check_http<T: Inserted>(ext: &mut http::Extensions) -> Option<CsrfCheck> {
    ext.remove::<CheckSlot<T>>().map(|slot| slot.0)
}

#[cfg(feature = "actix")]
fn insert_actix<T: Inserted>(
    ext: &mut actix_web::dev::Extensions,
    session: Session,
    check: Option<CsrfCheck>,
) {
    ext.insert(T::from_session(session));
    if let Some(check) = check {
        ext.insert(CheckSlot::<T>(check, PhantomData));
    }
}

#[cfg(feature = "actix")]
fn take_check_actix<T: Inserted>(ext: &mut actix_web::dev::Extensions) -> Option<CsrfCheck> {
    ext.remove::<CheckSlot<T>>().map(|slot| slot.0)
}

impl InsertSession {
    const PLAIN: InsertSession = InsertSession::of::<Session>();

    fn tagged<K: ?Sized + 'static>() -> InsertSession {
        InsertSession::of::<SessionOf<K>>()
    }

    const fn of<T: Inserted>() -> InsertSession {
        InsertSession {
            http: insert_http::<T>,
            take_check_http: take_check_http::<T>,
            #[cfg(feature = "actix")]
            actix: insert_actix::<T>,
            #[cfg(feature = "actix")]
            take_check_actix: take_check_actix::<T>,
        }
    }
}

/// The application's error page: see [`SessionLayerBuilder::on_error`].
pub(crate) type ErrorHook = Arc<dyn Fn(&Error) -> Response<String> + Send + Sync>;

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("factory", &self.factory)
            .field("carrier", &self.carrier)
            .field("on_error", &self.on_error.as_ref().map(|_| "<fn>"))
            .finish_non_exhaustive()
    }
}

/// What every HTTP integration (the tower layer, the actix-web middleware)
/// does around a request, written once: start the session from the
/// request's cookies, and conclude it on the response.
impl Shared {
    /// The session of a request with these headers (its cookie, or its
    /// session header: see [`Transport`]); a refused id is counted and
    /// logged.
    pub(crate) fn start(&self, headers: &impl RequestHeaders) -> RequestSession {
        let incoming = self.carrier.read(headers);
        if let Some(why) = incoming.refused {
            self.rejections.record(why);
        }
        self.factory.request(incoming.presented)
    }

    /// The CSRF check of a request with `method`, when a
    /// [`CsrfLayer`](crate::CsrfLayer) was made from this layer, the method
    /// is unsafe and the session travels in a cookie (see [`crate::csrf`]).
    pub(crate) fn csrf_check(&self, request: &RequestSession, method: &[u8]) -> Option<CsrfCheck> {
        let wanted = self.csrf_checked.load(Ordering::Relaxed)
            && matches!(self.carrier, Carrier::Cookie(_))
            && !crate::csrf::is_safe(method);
        wanted.then(|| request.require_csrf_token())
    }

    /// What a finished session does to the response: writes the cookie
    /// change and the cache directive to the handler's response `headers`
    /// and gives `None`, or, when the session could not be saved, gives the
    /// response to send instead (see [`Shared::error_response`]), which then
    /// expires the cookie if the session is gone.
    pub(crate) fn conclude(
        &self,
        finished: Finished,
        headers: &mut impl ResponseHeaders,
    ) -> Option<Response<String>> {
        if let Some(err) = finished.error {
            let mut failed = self.error_response(&err);
            if err.kind() == ErrorKind::SessionGone {
                self.carrier.remove(failed.headers_mut());
            }
            return Some(failed);
        }
        match finished.cookie {
            // A remembered session always gets a persistent cookie, even where
            // the default is a browser-session cookie.
            CookieChange::Set {
                id,
                max_age,
                remembered,
            } => self.carrier.set(headers, &id, max_age, remembered),
            CookieChange::Remove => self.carrier.remove(headers),
            _ => cookie::keep_private(headers),
        }
        None
    }

    /// The response for a session error the layer met (a failed flush): the
    /// application's page if it set one, else [`Error::to_response`] — the
    /// same response a handler's `Err(error)` gives.
    pub(crate) fn error_response(&self, err: &Error) -> Response<String> {
        match &self.on_error {
            Some(hook) => hook(err),
            None => err.to_response(),
        }
    }

    /// The application's page for a session error a handler reported, if
    /// it set one (see [`SessionLayerBuilder::on_error`]).
    pub(crate) fn handler_error_page(&self, err: &Error) -> Option<Response<String>> {
        self.on_error.as_ref().map(|hook| hook(err))
    }

    /// A handler's response: replaced by the application's page when it
    /// reports a session error (see [`ReportedError`]) and a hook is set.
    pub(crate) fn on_handler_error<B: From<String>>(&self, response: Response<B>) -> Response<B> {
        match response.extensions().get::<ReportedError>() {
            Some(reported) => match self.handler_error_page(reported.error()) {
                Some(page) => page.map(B::from),
                None => response,
            },
            None => response,
        }
    }
}

/// Counts of refused session cookies since the layer was built, for
/// operators: a sudden rise in any of them from one client is worth a look
/// (someone guessing ids, replaying stale cookies or tampering with them).
///
/// Each refusal is also a `tracing` event (target `sessionkit`, level
/// `debug`; strict-mode rejections at `debug` in `sessionkit_core`). Add the
/// client's address to the request's span (for example with tower-http's
/// `TraceLayer`) to attribute them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Rejections {
    /// Cookies that were not a well-formed id (or signed id).
    pub malformed: u64,
    /// Signed cookies whose MAC matched no key.
    pub bad_signature: u64,
    /// Requests that carried several cookies of the session's name.
    pub ambiguous: u64,
    /// Well-formed ids the store did not know (never issued, expired or
    /// destroyed), refused by strict mode.
    pub unknown: u64,
}

#[derive(Debug, Default)]
pub(crate) struct RejectionCounters {
    malformed: AtomicU64,
    bad_signature: AtomicU64,
    ambiguous: AtomicU64,
}

impl RejectionCounters {
    pub(crate) fn record(&self, why: Refused) {
        let (counter, what) = match why {
            Refused::Malformed => (&self.malformed, "malformed"),
            Refused::BadSignature => (&self.bad_signature, "bad signature"),
            Refused::Ambiguous => (&self.ambiguous, "several cookies of one name"),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(target: "sessionkit", reason = what, "session cookie refused");
    }
}

impl SessionLayer {
    /// A layer over `store` with the default settings (120-minute idle
    /// lifetime, cookie `session`, `Secure`, `HttpOnly`, `SameSite=Lax`).
    ///
    /// ```
    /// use sessionkit::SessionLayer;
    /// use sessionkit::store::MemoryStore;
    ///
    /// let layer = SessionLayer::new(MemoryStore::new());
    /// # let _ = layer;
    /// ```
    pub fn new(store: impl SessionStore) -> Self {
        SessionLayer::builder(store)
            .build()
            .expect("the default settings are valid")
    }

    /// A builder to change the settings.
    ///
    /// ```
    /// use std::time::Duration;
    /// use sessionkit::{CookieConfig, SessionConfig, SessionLayer};
    /// use sessionkit::store::MemoryStore;
    ///
    /// let layer = SessionLayer::builder(MemoryStore::new())
    ///     .config(SessionConfig::builder().lifetime(Duration::from_secs(900)).build()?)
    ///     .cookie(CookieConfig::default().name("__Host-sid"))
    ///     .build()?;
    /// # let _ = layer;
    /// # Ok::<(), sessionkit::Error>(())
    /// ```
    pub fn builder(store: impl SessionStore) -> SessionLayerBuilder {
        SessionLayerBuilder {
            store: ArcStore::new(store),
            config: SessionConfig::default(),
            cookie: CookieConfig::default(),
            transport: Transport::default(),
            on_error: None,
            insert: InsertSession::PLAIN,
            observer: None,
        }
    }

    /// How many session cookies this layer refused, by reason.
    ///
    /// ```
    /// use sessionkit::SessionLayer;
    /// use sessionkit::store::MemoryStore;
    ///
    /// let layer = SessionLayer::new(MemoryStore::new());
    /// assert_eq!(layer.rejections().malformed, 0);
    /// ```
    pub fn rejections(&self) -> Rejections {
        let c = &self.shared.rejections;
        Rejections {
            malformed: c.malformed.load(Ordering::Relaxed),
            bad_signature: c.bad_signature.load(Ordering::Relaxed),
            ambiguous: c.ambiguous.load(Ordering::Relaxed),
            unknown: self.shared.factory.unknown_ids(),
        }
    }

    /// The same layer with `change` made to the settings it was built from:
    /// what the `with_*` shortcuts do. A fresh layer (new counters, new lock
    /// lines), so make such changes when setting the app up.
    ///
    /// # Panics
    ///
    /// When the changed settings are invalid: they are fixed in code, and a
    /// mistake there is the programmer's, found at start-up. Use
    /// [`SessionLayer::builder`] to get the error instead.
    fn with(&self, change: impl FnOnce(SessionLayerBuilder) -> SessionLayerBuilder) -> Self {
        change(self.shared.parts.clone())
            .build()
            .unwrap_or_else(|e| panic!("sessionkit: invalid session layer setting: {e}"))
    }

    /// The cookie's name (default `session`); prefer a `__Host-` name over
    /// HTTPS (see [`CookieConfig::name`]).
    ///
    /// ```
    /// use sessionkit::SessionLayer;
    /// use sessionkit::store::MemoryStore;
    ///
    /// let layer = SessionLayer::new(MemoryStore::new())
    ///     .with_cookie_name("__Host-sid")
    ///     .with_lifetime(std::time::Duration::from_secs(30 * 60));
    /// # let _ = layer;
    /// ```
    ///
    /// # Panics
    ///
    /// When `name` is not a valid cookie name (see [`CookieConfig::name`]).
    pub fn with_cookie_name(self, name: impl Into<String>) -> Self {
        let name = name.into();
        self.with(|b| {
            let cookie = b.cookie.clone().name(name);
            b.cookie(cookie)
        })
    }

    /// The idle lifetime (default 120 minutes).
    ///
    /// # Panics
    ///
    /// When `lifetime` is under one second.
    pub fn with_lifetime(self, lifetime: std::time::Duration) -> Self {
        self.with(|b| match b.config.to_builder().lifetime(lifetime).build() {
            Ok(config) => b.config(config),
            Err(e) => panic!("sessionkit: invalid session layer setting: {e}"),
        })
    }

    /// The absolute lifetime from creation (default none).
    ///
    /// # Panics
    ///
    /// When `absolute` is under one second.
    pub fn with_absolute_lifetime(self, absolute: Option<std::time::Duration>) -> Self {
        self.with(
            |b| match b.config.to_builder().absolute_lifetime(absolute).build() {
                Ok(config) => b.config(config),
                Err(e) => panic!("sessionkit: invalid session layer setting: {e}"),
            },
        )
    }

    /// The cookie's `Secure` attribute (default `true`). Turn it off only
    /// for plain-HTTP development servers.
    ///
    /// # Panics
    ///
    /// When the cookie name has a `__Host-` or `__Secure-` prefix, which
    /// requires `Secure`.
    pub fn with_secure(self, secure: bool) -> Self {
        self.with(|b| {
            let cookie = b.cookie.clone().secure(secure);
            b.cookie(cookie)
        })
    }

    /// The cookie's `SameSite` attribute (default `Lax`).
    ///
    /// # Panics
    ///
    /// When `SameSite=None` is asked without `Secure`, which browsers refuse.
    pub fn with_same_site(self, same_site: SameSite) -> Self {
        self.with(|b| {
            let cookie = b.cookie.clone().same_site(same_site);
            b.cookie(cookie)
        })
    }

    /// Whether plain sessions get a persistent cookie (`Max-Age`; default
    /// `true`) or a browser-session cookie; remembered sessions always get a
    /// persistent one.
    pub fn with_persistent_cookie(self, persistent: bool) -> Self {
        self.with(|b| {
            let cookie = b.cookie.clone().persistent(persistent);
            b.cookie(cookie)
        })
    }

    /// The factory that makes the handles, for work outside requests (tests,
    /// background jobs).
    pub fn factory(&self) -> &SessionFactory {
        &self.shared.factory
    }
}

/// Builds a [`SessionLayer`]; see [`SessionLayer::builder`].
#[derive(Clone)]
pub struct SessionLayerBuilder {
    store: ArcStore,
    config: SessionConfig,
    cookie: CookieConfig,
    transport: Transport,
    on_error: Option<ErrorHook>,
    insert: InsertSession,
    observer: Option<Observer>,
}

/// The application's observer of session events: see
/// [`SessionLayerBuilder::on_event`].
type Observer = Arc<dyn Fn(&SessionEvent) + Send + Sync>;

impl std::fmt::Debug for SessionLayerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionLayerBuilder")
            .field("store", &self.store)
            .field("config", &self.config)
            .field("cookie", &self.cookie)
            .field("transport", &self.transport)
            .field("on_error", &self.on_error.as_ref().map(|_| "<fn>"))
            .field("observer", &self.observer.as_ref().map(|_| "<fn>"))
            .finish()
    }
}

impl SessionLayerBuilder {
    /// Tells `observer` what happens to sessions: created, regenerated,
    /// destroyed, given an owner, revoked (see
    /// [`sessionkit_core::events`]). It runs on a thread of its own, off
    /// the requests' path; events carry handles and owners, never ids.
    ///
    /// ```
    /// use sessionkit::SessionLayer;
    /// use sessionkit::events::SessionEvent;
    /// use sessionkit::store::MemoryStore;
    ///
    /// let layer = SessionLayer::builder(MemoryStore::new())
    ///     .on_event(|event: &SessionEvent| {
    ///         if let SessionEvent::OwnerSet { owner, .. } = event {
    ///             println!("new sign-in of {}", owner.as_str());
    ///         }
    ///     })
    ///     .build()?;
    /// # let _ = layer;
    /// # Ok::<(), sessionkit::Error>(())
    /// ```
    pub fn on_event(mut self, observer: impl Fn(&SessionEvent) + Send + Sync + 'static) -> Self {
        self.observer = Some(Arc::new(observer));
        self
    }

    /// The session settings. Default [`SessionConfig::default`].
    pub fn config(mut self, config: SessionConfig) -> Self {
        self.config = config;
        self
    }

    /// The cookie settings. Default [`CookieConfig::default`]. With the
    /// header [`Transport`], only their signing keys apply.
    pub fn cookie(mut self, cookie: CookieConfig) -> Self {
        self.cookie = cookie;
        self
    }

    /// How the id travels: [`Transport::Cookie`] (the default) or a header
    /// ([`Transport::header`]).
    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// The application's own response for session errors, in place of
    /// [`Error::to_response`] (a short `text/plain` message with the status
    /// of [`Error::status_code`]).
    ///
    /// It answers both kinds: an error a handler returned (`Err(error)`
    /// through axum's `IntoResponse`, which marks the response with a
    /// [`ReportedError`]) and an error the layer met itself when saving the
    /// session at the end of the request (the store went away: 503; the
    /// session was destroyed meanwhile: 409). The hook runs on the request's
    /// task; keep it quick, and never put the error's `Display` (meant for
    /// logs) in the body.
    ///
    /// ```
    /// use sessionkit::{ErrorKind, SessionLayer};
    /// use sessionkit::store::MemoryStore;
    ///
    /// let layer = SessionLayer::builder(MemoryStore::new())
    ///     .on_error(|err| {
    ///         let body = match err.kind() {
    ///             ErrorKind::StoreUnavailable => "<h1>We are back in a minute</h1>",
    ///             _ => "<h1>Something went wrong</h1>",
    ///         };
    ///         http::Response::builder()
    ///             .status(err.status_code())
    ///             .header("content-type", "text/html; charset=utf-8")
    ///             .body(body.to_owned())
    ///             .unwrap()
    ///     })
    ///     .build()?;
    /// # let _ = layer;
    /// # Ok::<(), sessionkit::Error>(())
    /// ```
    pub fn on_error(
        mut self,
        hook: impl Fn(&Error) -> Response<String> + Send + Sync + 'static,
    ) -> Self {
        self.on_error = Some(Arc::new(hook));
        self
    }

    /// Tags the layer's sessions with `K`: handlers then take a
    /// [`SessionOf<K>`] (an axum extractor, and an actix-web one with the
    /// `actix` feature, where the same tag applies to the middleware made
    /// from this layer) instead of a plain [`Session`].
    /// For an app with two session layers — a second cookie, another store
    /// — where plain `Session`s would overwrite each other in the request's
    /// extensions, which are keyed by type. `K` is any type of the app's,
    /// usually an empty marker.
    ///
    /// ```
    /// use axum::{Router, routing::get};
    /// use sessionkit::{Session, SessionLayer, SessionOf};
    /// use sessionkit::store::MemoryStore;
    ///
    /// /// The admin area's sessions: their own cookie and store.
    /// struct Admin;
    ///
    /// async fn page(visitor: Session, admin: SessionOf<Admin>) -> Result<String, sessionkit::Error> {
    ///     let name: Option<String> = admin.get("name").await?;
    ///     let visits: u64 = visitor.get_or("visits", 0).await?;
    ///     Ok(format!("{name:?} after {visits} visits"))
    /// }
    ///
    /// let admin_sessions = SessionLayer::builder(MemoryStore::new())
    ///     .cookie(sessionkit::CookieConfig::default().name("__Host-admin"))
    ///     .tag::<Admin>()
    ///     .build()?;
    /// let app: Router = Router::new()
    ///     .route("/", get(page))
    ///     .layer(admin_sessions)
    ///     .layer(SessionLayer::new(MemoryStore::new()));
    /// # Ok::<(), sessionkit::Error>(())
    /// ```
    pub fn tag<K: ?Sized + 'static>(mut self) -> Self {
        self.insert = InsertSession::tagged::<K>();
        self
    }

    /// Validates the cookie settings and builds the layer.
    pub fn build(self) -> Result<SessionLayer, Error> {
        let carrier = Carrier::new(&self.transport, CookieWriter::new(&self.cookie)?)?;
        let parts = self.clone();
        Ok(SessionLayer {
            shared: Arc::new(Shared {
                parts,
                factory: match self.observer {
                    Some(observer) => SessionFactory::from_arc_store(self.store, self.config)
                        .with_observer(move |event| observer(event)),
                    None => SessionFactory::from_arc_store(self.store, self.config),
                },
                carrier,
                rejections: RejectionCounters::default(),
                on_error: self.on_error,
                insert: self.insert,
                csrf_checked: AtomicBool::new(false),
            }),
        })
    }
}

impl<S> Layer<S> for SessionLayer {
    type Service = SessionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionService {
            inner,
            shared: self.shared.clone(),
        }
    }
}
