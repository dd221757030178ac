//! Small builders of records and deltas, for the suite and for store
//! authors' own tests.

use std::time::Duration;

use crate::record::{Delta, Entries, Meta, Record, now_ms};

/// Entries from `(key, value)` pairs.
///
/// ```
/// use sessionkit_core::testkit::fixtures::entries;
///
/// let e = entries(&[("user", b"\"ada\"")]);
/// assert_eq!(e.get("user"), Some(&b"\"ada\""[..]));
/// ```
pub fn entries(pairs: &[(&str, &[u8])]) -> Entries {
    pairs.iter().map(|(k, v)| (*k, v.to_vec())).collect()
}

/// A record created now with idle lifetime `lifetime` and no absolute
/// deadline.
///
/// ```
/// use std::time::Duration;
/// use sessionkit_core::testkit::fixtures::{entries, record};
///
/// let r = record(Duration::from_secs(60), entries(&[("k", b"v")]));
/// assert_eq!(r.meta.ttl(), Duration::from_secs(60));
/// ```
pub fn record(lifetime: Duration, entries: Entries) -> Record {
    Record {
        entries,
        meta: Meta::new(now_ms(), lifetime, None),
    }
}

/// A delta that sets `key` to `value`.
///
/// ```
/// use sessionkit_core::testkit::fixtures::set;
///
/// assert_eq!(set("k", b"v").change("k"), Some(Some(&b"v"[..])));
/// ```
pub fn set(key: &str, value: &[u8]) -> Delta {
    let mut delta = Delta::default();
    delta.set(key, value.to_vec());
    delta
}
