//! Small builders of records and deltas, for the suite and for store
//! authors' own tests.

use std::time::Duration;

use crate::id::SessionId;
use crate::record::{Delta, Entries, Meta, Record, Touch, now_ms};
use crate::store::{Countable, Created, ExpiredDeletion, Locked, SessionStore};

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

/// Asserts that `id` reads as absent through every read of `store`: a
/// load, a load that would touch, and a lock — what a corrupt or foreign
/// record must look like. `what` names the case in the failure message.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use sessionkit_core::SessionId;
/// use sessionkit_core::store::MemoryStore;
/// use sessionkit_core::testkit::fixtures::assert_reads_as_absent;
///
/// assert_reads_as_absent(&MemoryStore::new(), &SessionId::generate(), "never created").await;
/// # }
/// ```
pub async fn assert_reads_as_absent<S: SessionStore>(store: &S, id: &SessionId, what: &str) {
    assert!(
        store.load(id, None).await.unwrap().is_none(),
        "{what}: load"
    );
    let touched = store.load(id, Some(Touch::always())).await.unwrap();
    assert!(touched.is_none(), "{what}: load with a touch");
    let locked = store.lock(id, Duration::from_secs(5)).await.unwrap();
    assert_eq!(locked, Locked::Absent, "{what}: lock");
}

/// Checks a store's sweep and count together: five sessions that expire
/// and one that lives; once the five have expired, the sweep deletes
/// exactly five (and nothing the second time), `count` then sees one, and
/// the live one is still there. Returns what `count` said before the sweep
/// (1 for a store that counts live sessions exactly; up to 6 for one whose
/// count is an upper bound until a sweep, as [`Countable`] allows).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use sessionkit_core::store::MemoryStore;
/// use sessionkit_core::testkit::fixtures::expired_sessions_are_swept_and_not_counted;
///
/// let store = MemoryStore::builder().sweep_interval(None).build();
/// let before = expired_sessions_are_swept_and_not_counted(&store).await;
/// assert!((1..=6).contains(&before)); // the memory store sweeps lazily
/// # }
/// ```
pub async fn expired_sessions_are_swept_and_not_counted<S>(store: &S) -> u64
where
    S: SessionStore + ExpiredDeletion + Countable,
{
    let short = Duration::from_millis(50);
    for _ in 0..5 {
        let (id, expiring) = (SessionId::generate(), record(short, Entries::default()));
        assert_eq!(
            store.create(&id, &expiring).await.unwrap(),
            Created::Created
        );
    }
    let live = SessionId::generate();
    let long = record(Duration::from_secs(60), entries(&[("k", b"1")]));
    assert_eq!(store.create(&live, &long).await.unwrap(), Created::Created);
    tokio::time::sleep(Duration::from_millis(150)).await;
    let before = store.count().await.unwrap();
    assert_eq!(store.delete_expired().await.unwrap(), 5, "first sweep");
    assert_eq!(store.delete_expired().await.unwrap(), 0, "second sweep");
    assert_eq!(store.count().await.unwrap(), 1, "count after the sweep");
    let loaded = store.load(&live, None).await.unwrap();
    assert!(loaded.is_some(), "the live one");
    before
}
