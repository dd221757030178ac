//! Core of [sessionkit](https://docs.rs/sessionkit): server-side HTTP sessions
//! with buffered writes that never lose each other, fenced locks, idle and
//! absolute expiry, and one store round trip per request.
//!
//! This crate holds what every part of sessionkit shares and nothing that
//! knows about HTTP frameworks or particular backends:
//!
//! - [`Session`], the per-request handle, and [`SessionFactory`], which makes
//!   them;
//! - [`SessionId`] and [`LockToken`];
//! - the [store contract](store) ([`SessionStore`]), with the in-process
//!   [`MemoryStore`](store::MemoryStore) and [`NoopStore`](store::NoopStore);
//! - [records](record) and the [codec];
//! - [`SessionConfig`] and the lock settings;
//! - [owners](owner): who a session belongs to, the [`OwnerIndex`](owner::OwnerIndex)
//!   capability of stores and the [`Owners`](owner::Owners) registry;
//! - session [events] for an application's observer;
//! - [`Error`];
//! - with feature `testkit`, the store conformance suite (module `testkit`), so that
//!   third-party stores can prove they keep the contract.
//!
//! Applications use the `sessionkit` crate, which adds the tower layer, the
//! actix-web middleware (its feature `actix`), the extractors and cookie
//! handling on top of this one; its crate docs tell a session's life through
//! a request, step by step. The features `axum` and `actix` of this crate
//! hold only what Rust's orphan rule keeps here: `Session` as an extractor
//! and `Error` as an error response of that framework.
#![deny(unreachable_pub)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "actix")]
mod actix;
#[cfg(feature = "axum")]
mod axum;
pub mod codec;
mod config;
mod error;
pub mod events;
mod id;
pub mod owner;
pub mod record;
mod redact;
#[cfg(feature = "http")]
mod response;
mod session;
pub mod store;
#[cfg(feature = "testkit")]
#[cfg_attr(docsrs, doc(cfg(feature = "testkit")))]
pub mod testkit;

#[cfg(feature = "actix")]
pub use actix::into_actix_response;
pub use config::{
    LockConfig, LockPolicy, Outcome, ReleasePolicy, SessionConfig, SessionConfigBuilder,
    WritePolicy,
};
pub use error::{Error, ErrorKind, Result};
pub use id::{LockToken, SESSION_ID_LEN, SessionId};
pub use redact::redact_credentials;
#[cfg(feature = "http")]
pub use response::ReportedError;
pub use session::{
    Bag, CookieChange, CsrfCheck, Finished, Presented, RequestSession, Session, SessionFactory,
    SessionOf,
};
pub use store::SessionStore;
