//! The session middleware for actix-web 4 (feature `actix`): a [`Transform`]
//! that gives every request a [`Session`](crate::Session) and finishes it
//! when the response is produced.
//!
//! It is the tower layer's lifecycle, not a port of it: the middleware is
//! built from the same [`SessionLayer`](crate::SessionLayer) and runs the
//! same code for everything that is not actix-web glue — reading the cookie
//! (strict ids, several cookies of one name, signed cookies), finishing the
//! session, writing `Set-Cookie` and `Cache-Control`, mapping errors to
//! responses. So, exactly as with the [tower layer](crate::middleware):
//!
//! - a request that never touches its session makes no store call and
//!   sets no cookie;
//! - otherwise, when the response is produced, locks still held are
//!   released (committed for a success or a redirect, rolled back on 4xx
//!   and 5xx by default: [`ReleasePolicy`](crate::ReleasePolicy)), buffered
//!   writes are flushed in one store call, and the cookie is set, refreshed
//!   or expired;
//! - a response of a request that used its session gets
//!   `Cache-Control: private` unless the handler set its own, and a response
//!   that sets the cookie is never shared-cacheable;
//! - a failed flush replaces the handler's response with
//!   [`Error::to_response`](crate::Error::to_response) (503 with
//!   `Retry-After` for an unavailable store or a lock timeout, 409 for a
//!   session lost to a concurrent request, 500 otherwise), the same response
//!   a handler's `Err(error)` gives through actix-web's `ResponseError`; the
//!   hook of [`SessionLayerBuilder::on_error`](crate::SessionLayerBuilder::on_error)
//!   replaces both;
//! - an error that the wrapped service returns instead of a response (from
//!   another middleware; handlers' errors are responses already) finishes
//!   the session too, by the status of the error's response (so its locks
//!   are rolled back), and the cookie change lands on the response that
//!   actix-web makes from the error.
//!
//! Handlers take a [`Session`](crate::Session) (or a
//! [`SessionOf<K>`](crate::SessionOf) for a [tagged](crate::SessionLayerBuilder::tag)
//! middleware) as an extractor; without the middleware the extractor fails
//! with a 500 that names the missing middleware.
//!
//! # Why a feature of the facade, not a crate of its own
//!
//! Cookie reading and writing, signing, configuration from the environment
//! and the error mapping are HTTP rules, not tower ones; the tower layer and
//! the actix-web middleware must apply them byte for byte alike. A feature
//! keeps them in one crate, written once: the rules work over a small
//! private header trait that both frameworks' header maps implement (actix-web
//! 4 still speaks the `http` 0.2 types), and the middleware is configured by
//! the same builder, [`SessionLayer::builder`](crate::SessionLayer::builder),
//! as the layer. A separate `sessionkit-actix` crate would have had to
//! either copy them or make them public API of the facade. The feature is
//! off by default; with it, actix-web is compiled with its default features
//! off (no compression, TLS or macros are asked for here).
//!
//! The `Session` extractor and `ResponseError` for [`Error`](crate::Error)
//! live in `sessionkit-core` (its `actix` feature, which this one turns
//! on): Rust's orphan rule allows them nowhere else.
//!
//! # Examples
//!
//! ```
//! use actix_web::{App, web};
//! use sessionkit::Session;
//! use sessionkit::actix::SessionMiddleware;
//! use sessionkit::store::MemoryStore;
//!
//! async fn visits(session: Session) -> Result<String, sessionkit::Error> {
//!     let n: u64 = session.get("visits").await?.unwrap_or(0) + 1;
//!     session.insert("visits", &n)?;
//!     Ok(format!("visit number {n}"))
//! }
//!
//! let sessions = SessionMiddleware::new(MemoryStore::new());
//! // In `HttpServer::new(move || …)`: the middleware is cheap to clone and
//! // its clones share the store.
//! let app = App::new()
//!     .wrap(sessions.clone())
//!     .route("/", web::get().to(visits));
//! # let _ = app;
//! ```
//!
//! [`Transform`]: actix_web::dev::Transform

mod csrf;
mod future;
mod middleware;

pub use self::csrf::{CsrfMiddleware, CsrfMiddlewareService};
pub use self::future::SessionFuture;
pub use self::middleware::{SessionMiddleware, SessionMiddlewareService};
