//! The middleware, its service, and actix-web's header map under the cookie rules.

use std::future::{Ready, ready};

use actix_web::HttpMessage;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use sessionkit_core::SessionStore;

use crate::actix::future::SessionFuture;
use crate::cookie::ResponseHeaders;
use crate::middleware::{Rejections, SessionLayer};
use crate::transport::RequestHeaders;
use crate::{Error, SessionFactory};

/// The actix-web session middleware: wrap an `App` or a scope with it so
/// that each request gets a [`Session`](crate::Session). See the
/// [module docs](crate::actix).
///
/// It is made from a [`SessionLayer`], which holds the settings and the
/// store; configure one with [`SessionLayer::builder`] (or the `with_*`
/// shortcuts) and convert it. Cheap to clone; clones share the store,
/// the lock lines and the rejection counters.
///
/// ```
/// use actix_web::{App, web};
/// use sessionkit::{CookieConfig, Session, SessionLayer};
/// use sessionkit::actix::SessionMiddleware;
/// use sessionkit::store::MemoryStore;
///
/// async fn count(session: Session) -> Result<String, sessionkit::Error> {
///     session.lock().await?;
///     let n: u64 = session.get("n").await?.unwrap_or(0) + 1;
///     session.insert("n", &n)?;
///     session.commit().await?;
///     Ok(n.to_string())
/// }
///
/// let sessions = SessionMiddleware::from(
///     SessionLayer::builder(MemoryStore::new())
///         .cookie(CookieConfig::default().name("__Host-sid"))
///         .build()?,
/// );
/// let app = App::new()
///     .wrap(sessions)
///     .route("/count", web::post().to(count));
/// # let _ = app;
/// # Ok::<(), sessionkit::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct SessionMiddleware {
    layer: SessionLayer,
}

impl SessionMiddleware {
    /// A middleware over `store` with the default settings (those of
    /// [`SessionLayer::new`]).
    ///
    /// ```
    /// use sessionkit::actix::SessionMiddleware;
    /// use sessionkit::store::MemoryStore;
    ///
    /// let sessions = SessionMiddleware::new(MemoryStore::new());
    /// # let _ = sessions;
    /// ```
    pub fn new(store: impl SessionStore) -> Self {
        SessionLayer::new(store).into()
    }

    /// The middleware the `SESSION_*` environment variables describe: that
    /// of [`SessionLayer::from_env`] — the store, the session and the cookie
    /// settings, read and validated by [`Config::from_env`](crate::Config::from_env)
    /// and built by [`Config::into_layer`](crate::Config::into_layer) (which
    /// connects to Redis, checks a file store's save path, …).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), sessionkit::Error> {
    /// use sessionkit::actix::SessionMiddleware;
    ///
    /// // SESSION_DRIVER=redis SESSION_REDIS_URL=redis://127.0.0.1:6379 …
    /// let sessions = SessionMiddleware::from_env().await?;
    /// # let _ = sessions;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// A bad variable, named with its value and the accepted values, or a
    /// store that cannot be set up: see [`crate::config`].
    pub async fn from_env() -> Result<Self, Error> {
        Ok(SessionLayer::from_env().await?.into())
    }

    /// How many session cookies this middleware refused, by reason (see
    /// [`SessionLayer::rejections`]).
    ///
    /// ```
    /// use sessionkit::actix::SessionMiddleware;
    /// use sessionkit::store::MemoryStore;
    ///
    /// let sessions = SessionMiddleware::new(MemoryStore::new());
    /// assert_eq!(sessions.rejections().bad_signature, 0);
    /// ```
    pub fn rejections(&self) -> Rejections {
        self.layer.rejections()
    }

    /// The factory that makes the handles, for work outside requests (tests,
    /// background jobs).
    ///
    /// ```
    /// use sessionkit::actix::SessionMiddleware;
    /// use sessionkit::store::MemoryStore;
    ///
    /// let sessions = SessionMiddleware::new(MemoryStore::new());
    /// let session = sessions.factory().session(None);
    /// assert_eq!(session.id(), None);
    /// ```
    pub fn factory(&self) -> &SessionFactory {
        self.layer.factory()
    }

    /// The tower layer with the same settings and the same store (for an app
    /// that serves some routes through tower): sessions made by either are
    /// the same sessions.
    ///
    /// ```
    /// use sessionkit::actix::SessionMiddleware;
    /// use sessionkit::store::MemoryStore;
    ///
    /// let sessions = SessionMiddleware::new(MemoryStore::new());
    /// let layer = sessions.layer().clone();
    /// # let _ = layer;
    /// ```
    pub fn layer(&self) -> &SessionLayer {
        &self.layer
    }
}

/// The middleware of a built layer: the same settings, store and counters.
///
/// ```
/// use sessionkit::SessionLayer;
/// use sessionkit::actix::SessionMiddleware;
/// use sessionkit::store::MemoryStore;
///
/// let layer = SessionLayer::new(MemoryStore::new()).with_secure(false);
/// let sessions = SessionMiddleware::from(layer);
/// # let _ = sessions;
/// ```
impl From<SessionLayer> for SessionMiddleware {
    fn from(layer: SessionLayer) -> Self {
        SessionMiddleware { layer }
    }
}

impl<S, B> Transform<S, ServiceRequest> for SessionMiddleware
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Transform = SessionMiddlewareService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(SessionMiddlewareService {
            service,
            layer: self.layer.clone(),
        }))
    }
}

/// The service made by [`SessionMiddleware`]: it hands each request its
/// session and finishes it on the response.
///
/// The response body is the wrapped service's (left) or, when the session
/// could not be saved or the app's error hook answered, the error page's
/// (right).
#[derive(Debug)]
pub struct SessionMiddlewareService<S> {
    service: S,
    layer: SessionLayer,
}

impl<S, B> Service<ServiceRequest> for SessionMiddlewareService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Future = SessionFuture<S::Future, B>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let shared = &self.layer.shared;
        let request = shared.start(req.headers());
        let check = shared.csrf_check(&request, req.method().as_str().as_bytes());
        (shared.insert.actix)(&mut req.extensions_mut(), request.session().clone(), check);
        SessionFuture::new(self.service.call(req), request, shared.clone())
    }
}

impl ResponseHeaders for HeaderMap {
    fn append_set_cookie(&mut self, value: String) {
        if let Ok(value) = HeaderValue::try_from(value) {
            self.append(header::SET_COOKIE, value);
        }
    }

    fn cache_control(&self) -> impl Iterator<Item = &[u8]> {
        self.get_all(header::CACHE_CONTROL)
            .map(HeaderValue::as_bytes)
    }

    fn set_cache_control(&mut self, value: &str) {
        let value = match value {
            "private" => HeaderValue::from_static("private"),
            other => match HeaderValue::try_from(other) {
                Ok(v) => v,
                Err(_) => return,
            },
        };
        self.insert(header::CACHE_CONTROL, value);
    }

    fn set_header(&mut self, name: &http::HeaderName, value: &str) {
        // actix-web 4's map is over the `http` 0.2 types: the name crosses
        // as bytes (it was validated as a header name when the layer was
        // built).
        if let (Ok(name), Ok(value)) = (
            header::HeaderName::from_bytes(name.as_str().as_bytes()),
            HeaderValue::try_from(value),
        ) {
            self.insert(name, value);
        }
    }
}

impl RequestHeaders for HeaderMap {
    fn values<'a>(&'a self, name: &'a http::HeaderName) -> impl Iterator<Item = &'a [u8]> {
        self.get_all(name.as_str()).map(HeaderValue::as_bytes)
    }
}
