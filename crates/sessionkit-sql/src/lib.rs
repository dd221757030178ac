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

/// Checks a table name as the stores' builders do: an identifier of
/// letters, digits and `_`, not starting with a digit, at most 50
/// characters, and when `schema_qualified` is allowed (PostgreSQL) an
/// optional `schema.` of the same form. The error names the setting
/// `table`.
///
/// ```
/// assert!(sessionkit_sql::check_table_name("app.sessions", true).is_ok());
/// assert!(sessionkit_sql::check_table_name("app.sessions", false).is_err());
/// assert!(sessionkit_sql::check_table_name("sessions; DROP TABLE x", true).is_err());
/// ```
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub fn check_table_name(name: &str, schema_qualified: bool) -> sessionkit_core::Result<()> {
    common::Table::parse(name, schema_qualified).map(|_| ())
}
