//! PostgreSQL and SQLite stores for sessionkit on sqlx: one statement per read and per write, per-key deltas, fenced locks held in the database.
//!
//! Part of [sessionkit](https://docs.rs/sessionkit).
#![deny(unreachable_pub)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod common;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
mod postgres;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
mod sqlite;

#[cfg(feature = "postgres")]
pub use postgres::{PgStore, PgStoreBuilder};
#[cfg(feature = "sqlite")]
pub use sqlite::{Durability, SqliteStore, SqliteStoreBuilder};
/// The sqlx this crate is built on, so pools come from the same version.
pub use sqlx;
