//! The layer and its builder.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sessionkit_core::store::ArcStore;
use sessionkit_core::{Error, SessionConfig, SessionFactory, SessionStore};
use tower_layer::Layer;

use crate::cookie::{CookieConfig, CookieWriter};
use crate::middleware::service::SessionService;
use crate::signing::Refused;

/// The session layer: wraps a service so that each request gets a
/// [`Session`](sessionkit_core::Session). See the [module docs](crate::middleware).
///
/// Cheap to clone; clones share the store.
#[derive(Debug, Clone)]
pub struct SessionLayer {
    pub(crate) shared: Arc<Shared>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) factory: SessionFactory,
    pub(crate) cookie: CookieWriter,
    pub(crate) rejections: RejectionCounters,
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

    /// The factory that makes the handles, for work outside requests (tests,
    /// background jobs).
    pub fn factory(&self) -> &SessionFactory {
        &self.shared.factory
    }
}

/// Builds a [`SessionLayer`]; see [`SessionLayer::builder`].
#[derive(Debug, Clone)]
pub struct SessionLayerBuilder {
    store: ArcStore,
    config: SessionConfig,
    cookie: CookieConfig,
}

impl SessionLayerBuilder {
    /// The session settings. Default [`SessionConfig::default`].
    pub fn config(mut self, config: SessionConfig) -> Self {
        self.config = config;
        self
    }

    /// The cookie settings. Default [`CookieConfig::default`].
    pub fn cookie(mut self, cookie: CookieConfig) -> Self {
        self.cookie = cookie;
        self
    }

    /// Validates the cookie settings and builds the layer.
    pub fn build(self) -> Result<SessionLayer, Error> {
        let cookie = CookieWriter::new(&self.cookie)?;
        Ok(SessionLayer {
            shared: Arc::new(Shared {
                factory: SessionFactory::from_arc_store(self.store, self.config),
                cookie,
                rejections: RejectionCounters::default(),
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
