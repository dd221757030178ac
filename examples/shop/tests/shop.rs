//! The shop's HTTP surface through the real `shop` binary (axum). The tests
//! are in `blackbox/`, shared with `shop-actix`, whose `tests/shop.rs` runs
//! them against its own binary.

mod blackbox;
mod support;

#[path = "support/in_process.rs"]
mod in_process;

use in_process::serve;

/// The binary under test.
const BIN: &str = env!("CARGO_BIN_EXE_shop");
