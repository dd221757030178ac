//! The store conformance suite.

mod counting;
pub use counting::{Calls, CountingStore};
