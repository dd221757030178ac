//! The actix shop in a real browser: the shop's browser test
//! (`examples/shop/tests/browser_suite`, one source for both shops) against
//! the `shop-actix` binary.

#[path = "../../shop/tests/browser_suite/mod.rs"]
mod browser_suite;

/// The binary under test.
const BIN: &str = env!("CARGO_BIN_EXE_shop-actix");

/// The screenshots' prefix: `target/shop-actix-screenshot.png`, …
const NAME: &str = "shop-actix";
