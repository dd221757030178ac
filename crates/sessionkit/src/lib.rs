//! Server-side HTTP sessions for tower and axum.
//!
//! sessionkit keeps per-client state on the server, tied to the browser by a
//! cookie that carries a random id. What sets it apart:
//!
//! - **Buffered writes that never lose each other.** A request records which
//!   keys it changed; the flush applies only those, atomically. Two requests
//!   that change different keys both persist.
//! - **Fenced locks** for read-modify-write: a lock has a token and a TTL, is
//!   renewed while held, and a commit is applied only if the lock is still
//!   held — otherwise it fails with "lock lost" and writes nothing.
//! - **Idle and absolute expiry**, both kept server-side; the idle expiry is
//!   refreshed only when due, inside the read's round trip.
//! - **One store round trip** per operation a request needs; none for a
//!   request that does not touch its session.
//! - **Strict ids**: 256 random bits, validated before any store access, and
//!   never adopted when the store does not know them.
//! - **CSRF protection tied to the session** ([`CsrfLayer`], module
//!   [`csrf`]): an origin check and the session's synchronizer token, checked
//!   with the data of the handler's own first store call; and sessions
//!   carried in a header for API clients ([`Transport::header`]).
//!
//! # Quick start
//!
//! ```
//! use axum::{Router, routing::post};
//! use sessionkit::{Session, SessionLayer};
//! use sessionkit::store::MemoryStore;
//!
//! // A locked read-modify-write: exact under any concurrency.
//! async fn count(session: Session) -> Result<String, sessionkit::Error> {
//!     session.lock().await?;
//!     let n: u64 = session.get("n").await?.unwrap_or(0) + 1;
//!     session.insert("n", &n)?;
//!     session.commit().await?;
//!     Ok(n.to_string())
//! }
//!
//! let app: Router = Router::new()
//!     .route("/count", post(count))
//!     .layer(SessionLayer::new(MemoryStore::new()));
//! ```
//!
//! # Testing a handler
//!
//! A handler that takes a [`Session`] is a plain async function: test it
//! without a server. [`SessionFactory::for_tests`] gives sessions over a
//! fresh memory store; [`Session::next_request`] ends a request as the layer
//! would on a successful response and gives the session of the client's next
//! request, presenting the cookie that response left (a new id after a
//! login, none after a logout).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), sessionkit::Error> {
//! use sessionkit::{Session, SessionFactory};
//!
//! async fn login(session: Session, user: &str) -> Result<(), sessionkit::Error> {
//!     session.regenerate().await?;
//!     session.insert("user", user)
//! }
//!
//! async fn whoami(session: Session) -> Result<Option<String>, sessionkit::Error> {
//!     session.get("user").await
//! }
//!
//! let first = SessionFactory::for_tests().session(None); // no cookie yet
//! assert_eq!(whoami(first.clone()).await?, None);
//! login(first.clone(), "ada").await?;
//!
//! let second = first.next_request().await?; // with the cookie login set
//! assert_eq!(whoami(second.clone()).await?.as_deref(), Some("ada"));
//! assert_ne!(second.id(), None);
//! # Ok(()) }
//! ```
//!
//! To test through HTTP instead, serve the router on `127.0.0.1:0` and drive
//! it with a cookie-keeping client (the crate's own tests in `tests/http.rs`
//! do so with reqwest), or call it with `tower::ServiceExt::oneshot`,
//! carrying the `Set-Cookie` of one response into the `Cookie` of the next.
//!
//! Coming from PHP? `docs/coming-from-php.md` in the sessionkit repository
//! maps the session APIs of amphp, Phenix, Resonance and Phalcon onto this
//! crate's, row by row.
//!
//! # Crates
//!
//! This facade re-exports [`sessionkit_core`], which holds the session
//! handle, the store contract, the memory store and the conformance suite.
//!
//! # Features
//!
//! - `axum` (default): `Session` is an axum extractor and [`Error`] an axum
//!   response.
//! - `actix`: the actix-web 4 middleware and the `Session` extractor, in
//!   the module `sessionkit::actix` (off by default); its docs say why it is
//!   a feature of this crate rather than a crate of its own.
//! - `file`: the file store, `file::FileStore`, and `SESSION_DRIVER=file`.
//! - `redis`: the Redis store, `redis::RedisStore`, and `SESSION_DRIVER=redis`;
//!   `redis-cluster` adds Redis Cluster (`SESSION_REDIS_CLUSTER=true`), and
//!   `redis-tls` adds TLS (`rediss://` URLs; rustls with the system's root
//!   certificates). Both are off by default.
//! - `memcached`: the memcached store, `memcached::MemcachedStore`, and
//!   `SESSION_DRIVER=memcached`.
//! - `postgres`, `sqlite`: the SQL stores, `sql::PgStore` and
//!   `sql::SqliteStore`, and `SESSION_DRIVER=postgres` / `sqlite`.
#![doc = include_str!("../docs/lifecycle.md")]
#![deny(unreachable_pub)]

#[cfg(feature = "actix")]
pub mod actix;
pub mod config;
pub mod cookie;
pub mod csrf;
pub mod middleware;
pub mod signing;
mod transport;

pub use config::{Config, Driver};
pub use cookie::{CookieConfig, SameSite};
pub use csrf::CsrfLayer;
pub use middleware::{
    Rejections, ResponseFuture, SessionLayer, SessionLayerBuilder, SessionService,
};
pub use sessionkit_core::{
    Bag, CookieChange, Error, ErrorKind, Finished, LockConfig, LockPolicy, LockToken, Outcome,
    Presented, ReleasePolicy, ReportedError, RequestSession, Result, Session, SessionConfig,
    SessionConfigBuilder, SessionFactory, SessionId, SessionOf, WritePolicy,
};
pub use transport::Transport;

pub use sessionkit_core::events;

/// Owners of sessions: who is logged in where (see
/// [`Session::set_owner`](crate::Session::set_owner)); the registry
/// [`Owners`](owner::Owners) lists, counts and revokes an owner's sessions.
pub mod owner {
    pub use sessionkit_core::owner::{
        OwnedSession, Owner, OwnerCap, Owners, SessionHandle, WhenFull,
    };
}

/// Session stores: the in-process ones that ship with the core, and the
/// traits an application names when it holds or maintains a store.
///
/// Writing a store of your own is done against `sessionkit-core`, which
/// also has what only store authors need: the operations' answer types
/// (`sessionkit_core::store::{Loaded, Applied, Locked, …}`), records and
/// deltas (`sessionkit_core::record`), the value codec
/// (`sessionkit_core::codec`) and the conformance suite
/// (`sessionkit_core::testkit`, feature `testkit`).
pub mod store {
    pub use sessionkit_core::store::{
        ArcStore, Countable, DynSessionStore, ExpiredDeletion, MemoryStore, MemoryStoreBuilder,
        NoopStore, SessionStore,
    };
}

/// The file store (feature `file`): [`FileStore`](sessionkit_file::FileStore).
#[cfg(feature = "file")]
pub use sessionkit_file as file;

/// The Redis store (feature `redis`): `RedisStore`.
#[cfg(feature = "redis")]
pub use sessionkit_redis as redis;

/// The memcached store (feature `memcached`): `MemcachedStore`.
#[cfg(feature = "memcached")]
pub use sessionkit_memcached as memcached;

/// The SQL stores (features `postgres` and `sqlite`): `PgStore`, `SqliteStore`.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub use sessionkit_sql as sql;

/// The crate README's example (what crates.io shows), compiled as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct CrateReadme;
