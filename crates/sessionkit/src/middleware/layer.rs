//! The layer and its builder.

use std::sync::Arc;

use sessionkit_core::store::ArcStore;
use sessionkit_core::{Error, SessionConfig, SessionFactory, SessionStore};
use tower_layer::Layer;

use crate::cookie::{CookieConfig, CookieWriter};
use crate::middleware::service::SessionService;

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
