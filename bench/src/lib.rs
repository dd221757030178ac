//! Load benchmark of sessionkit against bare axum and tower-sessions, and of
//! its actix-web middleware against bare actix-web and actix-session.
//!
//! The crate builds three binaries, driven by `bench/run.sh`:
//!
//! - `bench-server --variant NAME` serves the benchmark routes on 127.0.0.1
//!   with one contender ([`server::Variant`]);
//! - `bench-load run …` is the load generator ([`load`]), and `bench-load
//!   report FILE` prints the table of a run ([`report`]);
//! - `bench-idle` measures memory per idle session and the expiry sweep in
//!   the memory stores ([`idle`]).
//!
//! The routes, the same for every variant:
//!
//! | route | work |
//! |---|---|
//! | `GET /read` | read the integer `n` (0 if absent) |
//! | `POST /incr` | buffered read-modify-write of `n` |
//! | `POST /incr-locked` | locked read-modify-write of `n` (tower-sessions and actix-session have no lock: plain `/incr`) |
//! | `GET /plain` | the session is not touched |
//!
//! This crate is not published and no library crate depends on it.
#![deny(unreachable_pub)]

pub mod args;
pub mod idle;
pub mod load;
pub mod probe;
pub mod report;
pub mod server;
