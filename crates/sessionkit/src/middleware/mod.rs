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
//! - otherwise the session is [finished](sessionkit_core::RequestSession::finish):
//!   locks still held are released (committed when the response is a success
//!   or a redirect, rolled back on 4xx and 5xx, by default: see
//!   [`ReleasePolicy`](sessionkit_core::ReleasePolicy)), buffered writes are
//!   flushed in one store call, and the cookie is set, refreshed or expired
//!   as needed;
//! - a response of a request that used its session is personal: it gets
//!   `Cache-Control: private` unless the handler set its own
//!   `Cache-Control` (when the response sets the cookie, `private` is
//!   enforced whatever the handler said, and `public` and `s-maxage` are
//!   dropped, so that no shared cache stores a cookie);
//! - if finishing fails, the handler's response is replaced by the error
//!   response of [`Error::to_response`](sessionkit_core::Error::to_response),
//!   the same one a handler's `Err(error)` gives: `503` (with `Retry-After`)
//!   when the store is unavailable or the lock wait timed out, `409` when
//!   the session was lost to a concurrent request, `500` otherwise, with a
//!   short `text/plain` body that names only the kind of failure; details
//!   go to the log. [`SessionLayerBuilder::on_error`] replaces both with the
//!   application's own page.
//!
//! It works with any tower service over `http` types (axum, hyper, tonic)
//! whose response body can be made from a `String` (for the error
//! responses): axum's `Body`, `http_body_util::Full`, `String` itself.
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
pub(crate) mod layer;
mod service;

pub use self::future::ResponseFuture;
pub use self::layer::{Rejections, SessionLayer, SessionLayerBuilder};
pub use self::service::SessionService;
