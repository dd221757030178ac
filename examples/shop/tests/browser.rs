//! The axum shop in a real browser. The test is in `browser_suite/`,
//! shared with `shop-actix`, whose `tests/browser.rs` runs it against its
//! own binary.

mod browser_suite;

/// The binary under test.
const BIN: &str = env!("CARGO_BIN_EXE_shop");

/// The screenshots' prefix: `target/shop-screenshot.png`, …
const NAME: &str = "shop";
