//! Helpers shared by the conformance tests: store calls that unwrap with a
//! clear message, record builders, task joining and timing.

pub(crate) use super::fixtures::{entries, record, set};
use std::any::Any;
use std::error::Error as _;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::codec::{decode_value, encode_value};
use crate::error::{Error, Result};
use crate::id::{LockToken, SessionId};
use crate::record::{Delta, Entries, Meta, Record, now_ms};
use crate::store::{Applied, AppliedAndRead, Created, Fence, Locked, SessionStore};

use super::SuiteConfig;

/// Unwraps a store result; a store error fails the test with its whole
/// source chain.
pub(crate) fn ok<T>(result: Result<T>, operation: &str) -> T {
    match result {
        Ok(value) => value,
        Err(err) => panic!("the store failed on {operation}: {}", chain(&err)),
    }
}

fn chain(err: &Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Milliseconds of a duration, saturating.
pub(crate) fn ms(d: Duration) -> u64 {
    crate::record::duration_ms(d)
}

/// Encodes a test value as the session codec does.
pub(crate) fn value<T: Serialize + ?Sized>(v: &T) -> Vec<u8> {
    encode_value(v).expect("test values always encode")
}

/// Decodes entry `key` of `entries`, failing the test if it is missing or
/// corrupt.
pub(crate) fn decode<T: DeserializeOwned>(entries: &Entries, key: &str) -> T {
    let bytes = entries
        .get(key)
        .unwrap_or_else(|| panic!("entry `{key}` is missing from the stored session"));
    decode_value(bytes).unwrap_or_else(|e| panic!("entry `{key}` does not decode: {e}"))
}

/// The keys of `entries`, for messages.
pub(crate) fn keys(entries: &Entries) -> Vec<&str> {
    entries.keys().collect()
}

/// A record created (and last refreshed) `ago` in the past, so that any
/// refresh visibly moves its expiry.
pub(crate) fn aged_record(lifetime: Duration, ago: Duration, entries: Entries) -> Record {
    Record {
        entries,
        meta: Meta::new(now_ms().saturating_sub(ms(ago)), lifetime, None),
    }
}

/// A fence for `token`.
pub(crate) fn fence(token: &LockToken, release: bool) -> Option<Fence<'_>> {
    Some(Fence { token, release })
}

/// Creates `record` under a fresh id, which it returns.
pub(crate) async fn create<S: SessionStore>(store: &S, record: &Record) -> SessionId {
    let id = SessionId::generate();
    create_at(store, &id, record).await;
    id
}

/// Creates `record` under `id`, which must be free.
pub(crate) async fn create_at<S: SessionStore>(store: &S, id: &SessionId, record: &Record) {
    let created = ok(store.create(id, record).await, "create");
    assert_eq!(
        created,
        Created::Created,
        "create under an id with no live session must store the record"
    );
}

/// Loads without touching.
pub(crate) async fn load<S: SessionStore>(store: &S, id: &SessionId) -> Option<Record> {
    ok(store.load(id, None).await, "load").map(|l| l.record)
}

/// Loads a session that must be live.
pub(crate) async fn load_live<S: SessionStore>(store: &S, id: &SessionId, context: &str) -> Record {
    load(store, id)
        .await
        .unwrap_or_else(|| panic!("{context}: the session should be live, but it loads as absent"))
}

/// Fails unless `id` loads as absent.
pub(crate) async fn assert_absent<S: SessionStore>(store: &S, id: &SessionId, context: &str) {
    if let Some(record) = load(store, id).await {
        panic!(
            "{context}: the session should be absent, but it loads with keys {:?}",
            keys(&record.entries)
        );
    }
}

/// Applies a delta.
pub(crate) async fn apply<S: SessionStore>(
    store: &S,
    id: &SessionId,
    delta: &Delta,
    fence: Option<Fence<'_>>,
) -> Applied {
    ok(store.apply(id, delta, fence).await, "apply")
}

/// Applies a delta that must be applied; returns the metadata after it.
pub(crate) async fn applied<S: SessionStore>(
    store: &S,
    id: &SessionId,
    delta: &Delta,
    fence: Option<Fence<'_>>,
    context: &str,
) -> Meta {
    match apply(store, id, delta, fence).await {
        Applied::Applied(meta) => meta,
        other => panic!("{context}: apply should answer Applied, got {other:?}"),
    }
}

/// Applies a delta fenced by `token`, keeping the lock, and reads back.
pub(crate) async fn apply_and_read<S: SessionStore>(
    store: &S,
    id: &SessionId,
    delta: &Delta,
    token: &LockToken,
) -> AppliedAndRead {
    ok(
        store.apply_and_read(id, delta, token).await,
        "apply_and_read",
    )
}

/// Tries to take a lock.
pub(crate) async fn lock<S: SessionStore>(store: &S, id: &SessionId, ttl: Duration) -> Locked {
    ok(store.lock(id, ttl).await, "lock")
}

/// Takes a lock that must be free.
pub(crate) async fn acquire<S: SessionStore>(
    store: &S,
    id: &SessionId,
    ttl: Duration,
    context: &str,
) -> (LockToken, Record) {
    match lock(store, id, ttl).await {
        Locked::Acquired { token, record } => (token, record),
        other => panic!("{context}: lock should answer Acquired, got {other:?}"),
    }
}

/// Fails unless another token holds the lock of `id`.
pub(crate) async fn assert_held<S: SessionStore>(
    store: &S,
    id: &SessionId,
    config: &SuiteConfig,
    context: &str,
) {
    match lock(store, id, config.lock_ttl).await {
        Locked::Held => {}
        Locked::Acquired { token, .. } => {
            // Leave no lock behind on a store that outlives the test.
            let _ = store.unlock(id, &token).await;
            panic!("{context}: the lock should be held by another token, but lock acquired it")
        }
        Locked::Absent => {
            panic!("{context}: the lock should be held, but lock answered Absent (session gone)")
        }
    }
}

/// Renews a lock.
pub(crate) async fn renew<S: SessionStore>(
    store: &S,
    id: &SessionId,
    token: &LockToken,
    ttl: Duration,
) -> bool {
    ok(store.renew_lock(id, token, ttl).await, "renew_lock")
}

/// Releases a lock.
pub(crate) async fn unlock<S: SessionStore>(store: &S, id: &SessionId, token: &LockToken) {
    ok(store.unlock(id, token).await, "unlock");
}

/// Destroys the sessions a test made, so that stores outside the process
/// keep nothing behind. Errors are ignored: this is cleanup.
pub(crate) async fn destroy_all<S: SessionStore>(store: &S, ids: &[SessionId]) {
    for id in ids {
        let _ = store.destroy(id).await;
    }
}

/// Waits for every task; if one panicked, aborts the others and re-raises
/// that panic, so its message is what the test reports.
pub(crate) async fn join_all<T>(handles: Vec<JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::with_capacity(handles.len());
    let mut handles = handles.into_iter();
    while let Some(handle) = handles.next() {
        match handle.await {
            Ok(value) => out.push(value),
            Err(err) => {
                for rest in handles {
                    rest.abort();
                }
                if err.is_panic() {
                    std::panic::resume_unwind(err.into_panic());
                }
                panic!("a task of the test was cancelled: {err}");
            }
        }
    }
    out
}

/// The message of a panic payload.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic without a message)".to_owned()
    }
}

/// Sleeps until `after` has passed since `start`.
pub(crate) async fn sleep_until(start: Instant, after: Duration) {
    tokio::time::sleep_until(start + after).await;
}

/// A short random pause before retrying a held lock: 1 to 3 ms.
pub(crate) async fn backoff() {
    let jitter = crate::id::random_u64() % 3;
    tokio::time::sleep(Duration::from_millis(1 + jitter)).await;
}

/// Checks that the timing knobs leave the timed tests meaningful.
pub(crate) fn check_timing(config: &SuiteConfig) {
    let slow = config.short_lifetime.max(config.short_lock_ttl) + config.slack;
    assert!(
        config.short_lifetime >= Duration::from_millis(30)
            && config.short_lock_ttl >= Duration::from_millis(30),
        "SuiteConfig: short_lifetime and short_lock_ttl must be at least 30 ms"
    );
    assert!(
        config.lifetime >= slow * 4,
        "SuiteConfig: lifetime ({:?}) must be at least four times short_lifetime + slack ({slow:?})",
        config.lifetime
    );
    assert!(
        config.lock_ttl >= slow * 4,
        "SuiteConfig: lock_ttl ({:?}) must be at least four times short_lock_ttl + slack ({slow:?})",
        config.lock_ttl
    );
}
