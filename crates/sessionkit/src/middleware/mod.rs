//! The session middleware: a tower layer that gives every request a
//! [`Session`](sessionkit_core::Session) and finishes it when the response is
//! produced.
//!
//! On each request the service reads the session cookie (see
//! [`cookie`](crate::cookie)), puts a fresh `Session` handle into the request
//! extensions, and calls the inner service. When the response comes back:
//!
//! - if the handler never used the session, the response passes through
//!   untouched: no store call, no cookie;
//! - otherwise the session is [finished](sessionkit_core::Session::finish):
//!   locks still held are released (committed unless the response is a 5xx,
//!   by default), buffered writes are flushed in one store call, and the
//!   cookie is set, refreshed or expired as needed, with `Cache-Control:
//!   private`;
//! - if finishing fails, the handler's response is replaced by an error
//!   response: `503` when the store is unavailable or the lock wait timed
//!   out, `409` when the session was lost to a concurrent request, `500`
//!   otherwise. The body names only the kind of failure; details go to the
//!   log.
//!
//! It works with any tower service over `http` types (axum, hyper, tonic);
//! the response body must implement `Default` for the error responses.
//!
//! # Examples
//!
//! ```
//! use axum::{Router, routing::get};
//! use sessionkit::{Session, SessionLayer};
//! use sessionkit::store::MemoryStore;
//!
//! async fn visits(session: Session) -> Result<String, sessionkit::Error> {
//!     let n: u64 = session.get("visits").await?.unwrap_or(0) + 1;
//!     session.insert("visits", &n)?;
//!     Ok(format!("visit number {n}"))
//! }
//!
//! let app: Router = Router::new()
//!     .route("/", get(visits))
//!     .layer(SessionLayer::new(MemoryStore::new()));
//! ```

mod future;
mod layer;
mod service;

pub use self::future::ResponseFuture;
pub use self::layer::{Rejections, SessionLayer, SessionLayerBuilder};
pub use self::service::SessionService;
