//! The session handle against the memory store: locks, policies, lifecycle.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sessionkit_core::record::now_ms;
use sessionkit_core::store::{Locked, MemoryStore, SessionStore};
use sessionkit_core::{
    CookieChange, ErrorKind, LockConfig, LockPolicy, Outcome, ReleasePolicy, RequestSession,
    Session, SessionConfig, SessionFactory, SessionId, WritePolicy,
};

fn factory_with(config: SessionConfig) -> (SessionFactory, MemoryStore) {
    let store = MemoryStore::builder().sweep_interval(None).build();
    (SessionFactory::new(store.clone(), config), store)
}

fn factory() -> (SessionFactory, MemoryStore) {
    factory_with(SessionConfig::default())
}

fn quick_locks(wait_ms: u64) -> SessionConfig {
    SessionConfig::builder()
        .lock(LockConfig::default().with_wait(Duration::from_millis(wait_ms)))
        .build()
        .unwrap()
}

/// Creates a stored session holding `n = 0` and returns its id.
async fn stored(factory: &SessionFactory) -> SessionId {
    let s = factory.request(None);
    s.insert("n", &0u64).unwrap();
    assert!(s.finish(Outcome::Success).await.error.is_none());
    s.id().unwrap()
}

/// A factory with `config`, its store, and a stored session holding `n = 0`.
async fn with_stored(config: SessionConfig) -> (SessionFactory, MemoryStore, SessionId) {
    let (factory, store) = factory_with(config);
    let id = stored(&factory).await;
    (factory, store, id)
}

/// [`with_stored`], and a request of that session holding its lock.
async fn locked(config: SessionConfig) -> (SessionFactory, MemoryStore, SessionId, RequestSession) {
    let (factory, store, id) = with_stored(config).await;
    let request = factory.request(id);
    request.lock().await.unwrap();
    (factory, store, id, request)
}

/// Locks `session`, adds one to its `n` and commits.
async fn locked_increment(session: RequestSession) {
    session.lock().await.unwrap();
    let n = session.get::<u64>("n").await.unwrap().unwrap();
    session.insert("n", &(n + 1)).unwrap();
    session.commit().await.unwrap();
}

/// The whole-request lock policy, with waits of 100 ms.
fn whole_request_locks() -> SessionConfig {
    SessionConfig::builder()
        .lock_policy(LockPolicy::WholeRequest)
        .lock(LockConfig::default().with_wait(Duration::from_millis(100)))
        .build()
        .unwrap()
}

/// A "remember me" login of `ada`: a lifetime of 30 days.
fn remember_ada_for_30_days(session: &Session) {
    session.insert("user", "ada").unwrap();
    session
        .set_lifetime(Duration::from_secs(30 * 24 * 3600))
        .unwrap();
}

async fn stored_n(store: &MemoryStore, id: &SessionId) -> Option<u64> {
    let loaded = store.load(id, None).await.unwrap()?;
    loaded
        .record
        .entries
        .get("n")
        .map(|v| sessionkit_core::codec::decode_value(v).unwrap())
}

#[tokio::test]
async fn locks_are_reentrant_and_released_by_the_last_level() {
    let (factory, store, id, a) = locked(quick_locks(100)).await;
    a.lock().await.unwrap();
    a.insert("n", &1u64).unwrap();
    a.commit().await.unwrap();
    // The inner commit wrote, and the lock is still held.
    assert!(a.is_locked());
    assert_eq!(stored_n(&store, &id).await, Some(1));
    let b = factory.request(id);
    assert_eq!(b.lock().await.unwrap_err().kind(), ErrorKind::LockTimeout);
    a.commit().await.unwrap();
    assert!(!a.is_locked());
    let c = factory.request(id);
    c.lock().await.unwrap();
    c.rollback().await.unwrap();
}

#[tokio::test]
async fn lock_wait_is_bounded() {
    let (factory, _store, id, _holder) = locked(quick_locks(300)).await;
    let waiter = factory.request(id);
    let start = Instant::now();
    let err = waiter.lock().await.unwrap_err();
    let waited = start.elapsed();
    assert_eq!(err.kind(), ErrorKind::LockTimeout);
    assert!(waited >= Duration::from_millis(290), "{waited:?}");
    assert!(waited < Duration::from_millis(1500), "{waited:?}");
}

#[tokio::test]
async fn a_waiter_gets_the_lock_once_it_is_released() {
    let (factory, store, id, holder) = locked(SessionConfig::default()).await;
    let wait = tokio::spawn(locked_increment(factory.request(id)));
    tokio::time::sleep(Duration::from_millis(50)).await;
    holder.insert("n", &10u64).unwrap();
    holder.commit().await.unwrap();
    wait.await.unwrap();
    // The waiter re-read under its lock and saw the holder's commit.
    assert_eq!(stored_n(&store, &id).await, Some(11));
}

/// Requests of one process that want the same session's lock wait in a local
/// line instead of polling the store while it is held, and a holder with
/// someone behind it hands the store lock on with its commit: the next
/// transaction starts without a store call.
#[cfg(feature = "testkit")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_waiters_take_the_lock_in_turn_without_polling_the_store() {
    use sessionkit_core::testkit::CountingStore;

    let store = CountingStore::new(MemoryStore::builder().sweep_interval(None).build());
    let factory = SessionFactory::new(store.clone(), SessionConfig::default());
    let id = stored(&factory).await;
    store.take();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let factory = factory.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..25 {
                let s = factory.request(id);
                s.lock().await.unwrap();
                let n = s.get::<u64>("n").await.unwrap().unwrap();
                // Hold the lock across a yield, so that the others queue up.
                tokio::task::yield_now().await;
                s.insert("n", &(n + 1)).unwrap();
                s.commit().await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(stored_n(store.inner(), &id).await, Some(200));
    let calls = store.take();
    // Every transaction starts with one store lock (never a `Held` retry)
    // or a handed-on lock, and ends with one commit, handing on or not.
    assert_eq!(
        calls.lock + calls.apply_and_read,
        200,
        "one store lock or handoff per transaction: {calls:?}"
    );
    assert_eq!(
        calls.apply + calls.apply_and_read,
        200,
        "one commit per transaction: {calls:?}"
    );
    assert!(
        calls.apply_and_read > 100,
        "contended locks are mostly handed on: {calls:?}"
    );
    assert_eq!(calls.unlock, 0, "{calls:?}");
}

/// A lock handed on to a waiter that gave up meanwhile is released at the
/// store, not left to lapse after its TTL.
// On one thread, so that the waiter cannot run between the handoff and its
// cancellation: the handed lock is left unclaimed.
#[cfg(feature = "testkit")]
#[tokio::test(flavor = "current_thread")]
async fn a_handed_lock_nobody_takes_is_released() {
    use sessionkit_core::testkit::CountingStore;

    let store = CountingStore::new(MemoryStore::builder().sweep_interval(None).build());
    let factory = SessionFactory::new(store.clone(), quick_locks(2_000));
    let id = stored(&factory).await;
    let holder = factory.request(id);
    holder.lock().await.unwrap();
    // A waiter that is in line when the holder commits, so that the lock is
    // handed on, and that gives up right then.
    let waiter = factory.request(id);
    let waiting = tokio::spawn(async move { waiter.lock().await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    holder.insert("n", &5u64).unwrap();
    holder.commit().await.unwrap();
    assert_eq!(store.calls().apply_and_read, 1, "the lock was handed on");
    waiting.abort();
    assert!(
        waiting.await.unwrap_err().is_cancelled(),
        "the waiter was cancelled before it could take the handed lock"
    );
    // The unclaimed handoff releases the store lock at once, well before its
    // 30 s TTL.
    let start = Instant::now();
    loop {
        match store
            .inner()
            .lock(&id, Duration::from_secs(30))
            .await
            .unwrap()
        {
            Locked::Acquired { token, record } => {
                let n = record
                    .entries
                    .get("n")
                    .map(|v| sessionkit_core::codec::decode_value::<u64>(v).unwrap());
                assert_eq!(n, Some(5), "the holder's commit was written");
                store.inner().unlock(&id, &token).await.unwrap();
                break;
            }
            other => {
                assert!(
                    start.elapsed() < Duration::from_secs(2),
                    "the handed lock was never released: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

// The renewal task cannot run while this single-threaded test blocks its only
// thread, so the lock lapses for real; then another request takes it.
#[tokio::test(flavor = "current_thread")]
async fn commit_after_the_lock_was_lost_writes_nothing() {
    let config = SessionConfig::builder()
        .lock(LockConfig::default().with_ttl(Duration::from_millis(200)))
        .build()
        .unwrap();
    let (_factory, store, id, a) = locked(config).await;
    a.insert("n", &99u64).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let Locked::Acquired { token, .. } = store.lock(&id, Duration::from_secs(5)).await.unwrap()
    else {
        panic!("the expired lock should be free");
    };
    let err = a.commit().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LockLost);
    assert_eq!(stored_n(&store, &id).await, Some(0), "nothing was written");
    assert!(!a.is_locked());
    store.unlock(&id, &token).await.unwrap();
}

#[tokio::test]
async fn renewal_keeps_a_long_holder_s_lock() {
    let config = SessionConfig::builder()
        .lock(
            LockConfig::default()
                .with_ttl(Duration::from_millis(300))
                .with_wait(Duration::from_millis(50)),
        )
        .build()
        .unwrap();
    let (factory, store, id, a) = locked(config).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let b = factory.request(id);
    assert_eq!(b.lock().await.unwrap_err().kind(), ErrorKind::LockTimeout);
    a.insert("n", &5u64).unwrap();
    a.commit().await.unwrap();
    assert_eq!(stored_n(&store, &id).await, Some(5));
}

#[tokio::test]
async fn whole_request_policy_locks_on_first_read_until_finish() {
    let config = whole_request_locks();
    let (factory, store, id) = with_stored(config).await;
    let a = factory.request(id);
    let n = a.get::<u64>("n").await.unwrap().unwrap();
    assert!(a.is_locked(), "the first read took the lock");
    let b = factory.request(id);
    assert_eq!(
        b.get::<u64>("n").await.unwrap_err().kind(),
        ErrorKind::LockTimeout
    );
    a.insert("n", &(n + 1)).unwrap();
    let finished = a.finish(Outcome::Success).await;
    assert!(finished.error.is_none());
    assert_eq!(stored_n(&store, &id).await, Some(1));
    let c = factory.request(id);
    assert_eq!(c.get::<u64>("n").await.unwrap(), Some(1));
}

#[tokio::test]
async fn locked_only_policy_refuses_writes_outside_a_lock() {
    let config = SessionConfig::builder()
        .write_policy(WritePolicy::LockedOnly)
        .build()
        .unwrap();
    let (factory, store) = factory_with(config);
    let s = factory.request(None);
    let err = s.insert("k", &1).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ModificationDenied);
    assert_eq!(
        s.discard("k").unwrap_err().kind(),
        ErrorKind::ModificationDenied
    );
    s.lock().await.unwrap();
    s.insert("n", &7u64).unwrap();
    s.commit().await.unwrap();
    let id = s.id().unwrap();
    assert_eq!(stored_n(&store, &id).await, Some(7));
    // unlock() under this policy discards the uncommitted changes.
    let t = factory.request(id);
    t.lock().await.unwrap();
    t.insert("n", &8u64).unwrap();
    t.unlock().await.unwrap();
    assert!(t.finish(Outcome::Success).await.error.is_none());
    assert_eq!(stored_n(&store, &id).await, Some(7));
}

#[tokio::test]
async fn unlock_keeps_changes_as_buffered_writes() {
    let (_factory, store, id, s) = locked(SessionConfig::default()).await;
    s.insert("n", &3u64).unwrap();
    s.unlock().await.unwrap();
    assert_eq!(stored_n(&store, &id).await, Some(0), "not written yet");
    assert!(s.finish(Outcome::Success).await.error.is_none());
    assert_eq!(stored_n(&store, &id).await, Some(3), "flushed at the end");
}

#[tokio::test]
async fn finish_rolls_back_on_server_errors_by_default() {
    let (factory, store, id, s) = locked(SessionConfig::default()).await;
    s.insert("n", &1u64).unwrap();
    assert!(s.finish(Outcome::ServerError).await.error.is_none());
    assert_eq!(stored_n(&store, &id).await, Some(0));
    // The lock was released.
    let t = factory.request(id);
    t.lock().await.unwrap();
    t.rollback().await.unwrap();
}

#[tokio::test]
async fn release_policy_commit_commits_even_on_server_errors() {
    let config = SessionConfig::builder()
        .release_policy(ReleasePolicy::Commit)
        .build()
        .unwrap();
    let (_factory, store, id, s) = locked(config).await;
    s.lock().await.unwrap();
    s.insert("n", &1u64).unwrap();
    assert!(s.finish(Outcome::ServerError).await.error.is_none());
    assert_eq!(stored_n(&store, &id).await, Some(1));
}

#[tokio::test]
async fn writes_after_finish_are_refused() {
    let (factory, _store) = factory();
    let s = factory.request(None);
    let _ = s.finish(Outcome::Success).await;
    assert_eq!(
        s.insert("k", &1).unwrap_err().kind(),
        ErrorKind::ModificationDenied
    );
    assert_eq!(
        s.lock().await.unwrap_err().kind(),
        ErrorKind::ModificationDenied
    );
}

#[tokio::test]
async fn destroy_then_write_starts_a_new_session() {
    let (factory, store, id) = with_stored(SessionConfig::default()).await;
    let s = factory.request(id);
    s.destroy().await.unwrap();
    s.insert("flash", "bye").unwrap();
    let finished = s.finish(Outcome::Success).await;
    let CookieChange::Set { id: new, .. } = finished.cookie else {
        panic!("a new session sets its cookie: {:?}", finished.cookie);
    };
    assert_ne!(new, id);
    assert!(store.load(&id, None).await.unwrap().is_none());
    let fresh = factory.request(new);
    assert_eq!(fresh.keys().await.unwrap(), ["flash"]);
}

#[tokio::test]
async fn regenerate_under_a_lock_moves_the_lock_and_commit_still_works() {
    let (factory, store, id, s) = locked(quick_locks(50)).await;
    s.regenerate().await.unwrap();
    let new = s.id().unwrap();
    assert_ne!(new, id);
    // The lock followed the session to its new id.
    let other = factory.request(new);
    assert_eq!(
        other.lock().await.unwrap_err().kind(),
        ErrorKind::LockTimeout
    );
    s.insert("n", &4u64).unwrap();
    s.commit().await.unwrap();
    assert_eq!(stored_n(&store, &new).await, Some(4));
    assert!(store.load(&id, None).await.unwrap().is_none());
}

#[tokio::test]
async fn per_session_lifetime_is_kept_server_side_and_sets_the_cookie_age() {
    let (factory, store) = factory();
    let s = factory.request(None);
    remember_ada_for_30_days(&s);
    let finished = s.finish(Outcome::Success).await;
    let CookieChange::Set {
        id,
        max_age,
        remembered,
    } = finished.cookie
    else {
        panic!("expected a cookie");
    };
    assert!(remembered);
    assert!(max_age > Duration::from_secs(29 * 24 * 3600), "{max_age:?}");
    let loaded = store.load(&id, None).await.unwrap().unwrap();
    assert_eq!(
        loaded.record.meta.ttl(),
        Duration::from_secs(30 * 24 * 3600)
    );
    assert!(loaded.record.meta.remembered());
    assert!(loaded.record.meta.expires() > now_ms() + 29 * 24 * 3600 * 1000);
    assert_eq!(
        s.set_lifetime(Duration::ZERO).unwrap_err().kind(),
        ErrorKind::InvalidConfig
    );
}

/// Issue 13: "remember me" unticked. The next cookie is a browser-session
/// one again (not remembered) with the configured lifetime, and the store
/// forgets the session's own lifetime.
#[tokio::test]
async fn reset_lifetime_returns_to_the_default_lifetime_and_cookie() {
    let (factory, store) = factory();
    let s = factory.request(None);
    remember_ada_for_30_days(&s);
    let id = set_cookie(s.finish(Outcome::Success).await.cookie).0;

    let s = factory.request(id);
    s.reset_lifetime().unwrap();
    let (_, max_age, remembered) = set_cookie(s.finish(Outcome::Success).await.cookie);
    assert!(!remembered, "a reset session must not be remembered");
    let default = factory.config().lifetime();
    assert!(
        max_age <= default && max_age > default - Duration::from_secs(5),
        "{max_age:?}"
    );
    let meta = store.load(&id, None).await.unwrap().unwrap().record.meta;
    assert_eq!((meta.ttl(), meta.remembered()), (default, false));
}

/// Issue 13: a per-session end (tower-sessions' `Expiry::AtDateTime`). It
/// caps the expiry and the cookie's age, survives later writes, and cannot
/// be moved later by a second call; past it, the session is gone.
#[tokio::test]
async fn set_expires_at_ends_the_session_then_and_never_later() {
    let (factory, store) = factory();
    let s = factory.request(None);
    s.insert("user", "ada").unwrap();
    let end = SystemTime::now() + Duration::from_secs(60);
    s.set_expires_at(end).unwrap();
    let (id, max_age, _) = set_cookie(s.finish(Outcome::Success).await.cookie);
    assert!(max_age <= Duration::from_secs(60), "{max_age:?}");
    assert!(max_age > Duration::from_secs(55), "{max_age:?}");

    let s = factory.request(id);
    s.set_expires_at(end + Duration::from_secs(3600)).unwrap();
    s.insert("n", &1).unwrap();
    s.finish(Outcome::Success).await;
    let meta = store.load(&id, None).await.unwrap().unwrap().record.meta;
    let end_ms = end.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    assert_eq!(
        meta.deadline(),
        Some(end_ms),
        "a later end must not move it"
    );
    assert_eq!(meta.expires(), end_ms);

    let s = factory.request(id);
    s.set_expires_at(SystemTime::now() - Duration::from_secs(1))
        .unwrap();
    s.finish(Outcome::Success).await;
    assert!(
        store.load(&id, None).await.unwrap().is_none(),
        "an end in the past ends the session"
    );
}

/// Issue 17: the CSRF token is kept with the session across requests,
/// changes with the id at a regenerate (the old one stops matching), and is
/// gone with the session.
#[tokio::test]
async fn the_csrf_token_lasts_the_session_rotates_with_regenerate_and_dies_with_destroy() {
    let factory = SessionFactory::for_tests();
    let s = factory.session(None);
    let token = s.csrf_token().await.unwrap();
    let s = s.next_request().await.unwrap();
    assert!(s.csrf_token_matches(&token).await.unwrap());
    assert_eq!(s.csrf_token().await.unwrap(), token);
    assert!(!s.csrf_token_matches("").await.unwrap());
    assert!(!s.csrf_token_matches(&token[1..]).await.unwrap());

    s.regenerate().await.unwrap();
    let s = s.next_request().await.unwrap();
    assert!(
        !s.csrf_token_matches(&token).await.unwrap(),
        "stale after regenerate"
    );
    let rotated = s.csrf_token().await.unwrap();
    assert_ne!(rotated, token);

    s.destroy().await.unwrap();
    let s = s.next_request().await.unwrap();
    assert!(
        !s.csrf_token_matches(&rotated).await.unwrap(),
        "gone with the session"
    );
    assert!(s.id().is_none());
}

/// A stored session holding `n = 0` and its CSRF token.
async fn stored_with_token(factory: &SessionFactory) -> (SessionId, String) {
    let s = factory.request(None);
    s.insert("n", &0u64).unwrap();
    let token = s.csrf_token().await.unwrap();
    assert!(s.finish(Outcome::Success).await.error.is_none());
    (s.id().unwrap(), token)
}

/// The CSRF check an integration asks for is decided by the first store
/// call that reads: a blind write has the session read before its flush,
/// and a refusal there writes nothing and reports 403 at the finish.
#[tokio::test]
async fn a_csrf_check_reads_before_a_blind_flush_and_a_refusal_writes_nothing() {
    let (factory, store) = factory();
    let (id, token) = stored_with_token(&factory).await;

    let forged = factory.request(id);
    let check = forged.require_csrf_token();
    assert!(check.is_needed(), "an id was sent");
    check.present(Some(token[1..].to_owned()));
    forged.insert("n", &7u64).unwrap(); // buffered: nothing read yet
    let finished = forged.finish(Outcome::Success).await;
    assert_eq!(finished.error.unwrap().kind(), ErrorKind::CsrfRejected);
    assert_eq!(stored_n(&store, &id).await, Some(0));

    let genuine = factory.request(id);
    genuine.require_csrf_token().present(Some(token));
    genuine.insert("n", &8u64).unwrap();
    assert!(genuine.finish(Outcome::Success).await.error.is_none());
    assert_eq!(stored_n(&store, &id).await, Some(8));

    // Without an id there is nothing to check against.
    let first = factory.request(None);
    assert!(!first.require_csrf_token().is_needed());
    first.insert("n", &1u64).unwrap();
    assert!(first.finish(Outcome::Success).await.error.is_none());
}

/// Under the whole-request lock policy the first read is a lock: a refusal
/// there releases it at once, so the next request does not wait.
#[tokio::test]
async fn a_csrf_refusal_under_the_whole_request_policy_releases_the_lock() {
    let config = whole_request_locks();
    let (factory, store) = factory_with(config);
    let (id, token) = stored_with_token(&factory).await;
    let forged = factory.request(id);
    forged.require_csrf_token().present(None);
    let err = forged.get::<u64>("n").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CsrfRejected);
    assert!(!forged.is_locked());
    assert!(forged.insert("n", &5u64).is_err(), "every later call fails");
    let genuine = factory.request(id);
    genuine.require_csrf_token().present(Some(token));
    assert_eq!(
        genuine.get::<u64>("n").await.unwrap(),
        Some(0),
        "not kept waiting"
    );
    genuine.insert("n", &1u64).unwrap();
    assert!(genuine.finish(Outcome::Success).await.error.is_none());
    assert_eq!(
        forged.finish(Outcome::Success).await.error.unwrap().kind(),
        ErrorKind::CsrfRejected
    );
    assert_eq!(stored_n(&store, &id).await, Some(1));
}

/// The id, age and remembered mark of a `CookieChange::Set`.
fn set_cookie(change: CookieChange) -> (SessionId, Duration, bool) {
    match change {
        CookieChange::Set {
            id,
            max_age,
            remembered,
        } => (id, max_age, remembered),
        other => panic!("expected a cookie to be set, got {other:?}"),
    }
}

#[tokio::test]
async fn a_dropped_handle_releases_its_lock() {
    let (factory, _store, id, s) = locked(quick_locks(500)).await;
    drop(s);
    let t = factory.request(id);
    t.lock()
        .await
        .expect("released on drop, long before the 30 s TTL");
}

#[tokio::test]
async fn untouched_sessions_need_no_finish_and_empty_sessions_are_not_stored() {
    let (factory, store) = factory();
    let s = factory.request(SessionId::generate());
    assert!(!s.is_used());
    let t = factory.request(None);
    t.insert("k", &1).unwrap();
    t.discard("k").unwrap();
    let finished = t.finish(Outcome::Success).await;
    assert_eq!(finished.cookie, CookieChange::Keep);
    assert!(store.is_empty());
}

#[tokio::test]
async fn clones_share_one_session() {
    let (factory, _store) = factory();
    let a: Session = factory.session(None);
    let b = a.clone();
    a.insert("k", "v").unwrap();
    assert_eq!(b.get::<String>("k").await.unwrap().as_deref(), Some("v"));
}

/// A memory store that uses the two-step default of `apply_and_read`, and
/// whose next `load` can be made to miss (as if the session moved between
/// the two steps).
#[derive(Debug, Clone)]
struct TwoStep {
    inner: MemoryStore,
    miss_next_load: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl SessionStore for TwoStep {
    fn name(&self) -> &'static str {
        "two-step"
    }
    async fn load(
        &self,
        id: &SessionId,
        touch: Option<sessionkit_core::record::Touch>,
    ) -> sessionkit_core::Result<Option<sessionkit_core::store::Loaded>> {
        if self
            .miss_next_load
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            return Ok(None);
        }
        self.inner.load(id, touch).await
    }
    async fn create(
        &self,
        id: &SessionId,
        record: &sessionkit_core::record::Record,
    ) -> sessionkit_core::Result<sessionkit_core::store::Created> {
        self.inner.create(id, record).await
    }
    async fn apply(
        &self,
        id: &SessionId,
        delta: &sessionkit_core::record::Delta,
        fence: Option<sessionkit_core::store::Fence<'_>>,
    ) -> sessionkit_core::Result<sessionkit_core::store::Applied> {
        self.inner.apply(id, delta, fence).await
    }
    async fn change_id(
        &self,
        old: &SessionId,
        new: &SessionId,
        fence: Option<&sessionkit_core::LockToken>,
    ) -> sessionkit_core::Result<sessionkit_core::store::IdChanged> {
        self.inner.change_id(old, new, fence).await
    }
    async fn destroy(&self, id: &SessionId) -> sessionkit_core::Result<()> {
        self.inner.destroy(id).await
    }
    async fn lock(&self, id: &SessionId, ttl: Duration) -> sessionkit_core::Result<Locked> {
        self.inner.lock(id, ttl).await
    }
    async fn renew_lock(
        &self,
        id: &SessionId,
        token: &sessionkit_core::LockToken,
        ttl: Duration,
    ) -> sessionkit_core::Result<bool> {
        self.inner.renew_lock(id, token, ttl).await
    }
    async fn unlock(
        &self,
        id: &SessionId,
        token: &sessionkit_core::LockToken,
    ) -> sessionkit_core::Result<()> {
        self.inner.unlock(id, token).await
    }
}

/// The two-step default of `apply_and_read` never reports a write it made
/// as failed: when the read after it misses, it answers `AppliedUnread`, and
/// a commit that was to hand its lock on succeeds and releases the lock
/// instead (found by the reliability model: a regenerate between the two
/// steps made an applied increment look refused).
#[tokio::test(flavor = "current_thread")]
async fn a_handoff_whose_read_misses_still_commits_and_releases() {
    use sessionkit_core::store::AppliedAndRead;

    let store = TwoStep {
        inner: MemoryStore::builder().sweep_interval(None).build(),
        miss_next_load: Default::default(),
    };
    let factory = SessionFactory::new(store.clone(), quick_locks(2_000));
    let id = stored(&factory).await;

    // The store method itself.
    let Locked::Acquired { token, .. } = store.lock(&id, Duration::from_secs(30)).await.unwrap()
    else {
        panic!("lock")
    };
    store
        .miss_next_load
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let mut delta = sessionkit_core::record::Delta::default();
    delta.set("n", sessionkit_core::codec::encode_value(&1u64).unwrap());
    let answer = store.apply_and_read(&id, &delta, &token).await.unwrap();
    assert!(
        matches!(answer, AppliedAndRead::AppliedUnread(_)),
        "{answer:?}"
    );
    assert_eq!(
        stored_n(&store.inner, &id).await,
        Some(1),
        "the write is there"
    );
    store.unlock(&id, &token).await.unwrap();

    // Through the session: a holder with a waiter behind it commits.
    let holder = factory.request(id);
    holder.lock().await.unwrap();
    let waiting = tokio::spawn(locked_increment(factory.request(id)));
    tokio::time::sleep(Duration::from_millis(20)).await;
    holder.insert("n", &10u64).unwrap();
    store
        .miss_next_load
        .store(true, std::sync::atomic::Ordering::SeqCst);
    holder
        .commit()
        .await
        .expect("the commit was written: it must not fail");
    waiting.await.unwrap();
    assert_eq!(stored_n(&store.inner, &id).await, Some(11));
}

/// Review finding 1: request A locks, request B destroys the session, A
/// reloads (finding it gone) and commits. That used to panic ("a store lock
/// implies an id"); the commit must fail with "session gone", write nothing,
/// and the finish must not panic either.
#[tokio::test]
async fn reload_under_a_lock_after_a_destroy_fails_the_commit_without_panicking() {
    let (factory, store, id, a) = locked(SessionConfig::default()).await;
    factory.request(id).destroy().await.unwrap();
    a.reload().await.unwrap();
    a.insert("n", &7u64).unwrap();
    let err = a.commit().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SessionGone);
    assert!(!a.is_locked());
    assert_eq!(stored_n(&store, &id).await, None);
    assert!(store.load(&id, None).await.unwrap().is_none());

    // The same interleaving, ended by the layer's finish instead.
    let id = stored(&factory).await;
    let a = factory.request(id);
    a.lock().await.unwrap();
    a.insert("n", &8u64).unwrap();
    factory.request(id).destroy().await.unwrap();
    a.reload().await.unwrap();
    let finished = a.finish(Outcome::Success).await;
    assert_eq!(
        finished.error.map(|e| e.kind()),
        Some(ErrorKind::SessionGone)
    );
    assert!(store.load(&id, None).await.unwrap().is_none());
}

/// Review finding 3: `Debug` of a session (as `#[tracing::instrument]` logs
/// it) showed every value. It shows key names, never values, in every state:
/// loaded, with buffered writes, and with changes under a lock.
#[tokio::test]
async fn debug_output_never_shows_values() {
    const SECRET: &str = "refresh-token-5ecr3t";
    let (factory, _store) = factory();
    let s = factory.request(None);
    s.insert("oauth_refresh", SECRET).unwrap();
    assert!(s.finish(Outcome::Success).await.error.is_none());
    let id = s.id().unwrap();

    let s = factory.request(id);
    s.get::<String>("oauth_refresh").await.unwrap();
    s.insert("csrf", SECRET).unwrap();
    let loaded = format!("{s:?} {s:#?}");
    s.lock().await.unwrap();
    s.insert("locked", SECRET).unwrap();
    let locked = format!("{s:?}");
    for shown in [&loaded, &locked] {
        assert!(!shown.contains(SECRET), "a value in Debug output: {shown}");
        assert!(
            !shown.contains(&id.expose()),
            "the id in Debug output: {shown}"
        );
        assert!(
            shown.contains("oauth_refresh"),
            "key names help debugging: {shown}"
        );
    }
    assert!(locked.contains("locked"));
    s.rollback().await.unwrap();
}

/// Review finding 8, in the core: locked changes still uncommitted when a
/// request ends with a client error are rolled back by default, committed
/// under `CommitUnlessServerError`; buffered writes are flushed either way.
#[tokio::test]
async fn finish_rolls_back_locked_changes_on_client_errors_by_default() {
    for (policy, kept) in [
        (ReleasePolicy::default(), None),
        (ReleasePolicy::CommitUnlessServerError, Some(9)),
    ] {
        let config = SessionConfig::builder()
            .release_policy(policy)
            .build()
            .unwrap();
        let (factory, store, id) = with_stored(config).await;
        let s = factory.request(id);
        s.insert("note", "buffered").unwrap();
        s.lock().await.unwrap();
        s.insert("qty", &9u64).unwrap();
        let finished = s.finish(Outcome::ClientError).await;
        assert!(finished.error.is_none(), "{policy:?}");
        let record = store.load(&id, None).await.unwrap().unwrap().record;
        let qty = record
            .entries
            .get("qty")
            .map(|v| sessionkit_core::codec::decode_value::<u64>(v).unwrap());
        assert_eq!(qty, kept, "{policy:?}");
        assert!(record.entries.get("note").is_some(), "{policy:?}");
    }
}

/// `transaction` commits on `Ok`, rolls back on `Err`, and leaves no lock
/// either way.
#[tokio::test]
async fn transactions_commit_on_ok_and_roll_back_on_err() {
    let (factory, store, id) = with_stored(SessionConfig::default()).await;
    let s = factory.request(id);
    let refused: Result<(), sessionkit_core::Error> = s
        .transaction(|s| async move {
            s.insert("n", &5u64)?;
            Err(sessionkit_core::Error::new(ErrorKind::ModificationDenied))
        })
        .await;
    assert_eq!(refused.unwrap_err().kind(), ErrorKind::ModificationDenied);
    assert!(!s.is_locked());
    assert_eq!(stored_n(&store, &id).await, Some(0));
    let n = s
        .transaction(|s| async move {
            let n = s.get::<u64>("n").await?.unwrap_or(0) + 1;
            s.insert("n", &n)?;
            Ok::<_, sessionkit_core::Error>(n)
        })
        .await
        .unwrap();
    assert_eq!((n, stored_n(&store, &id).await), (1, Some(1)));
    assert!(!s.is_locked());
}

/// Found by the state-machine test (reliability/tests/handles.rs): under a
/// lock on a new session, an inner commit created the session; the outer
/// commit of a `clear` then took the "new session" path again, found
/// nothing to create, and wrote nothing, while reporting success.
#[tokio::test]
async fn a_second_commit_under_a_local_lock_writes_to_the_session_the_first_created() {
    let (factory, store) = factory();
    let s = factory.request(None);
    s.lock().await.unwrap();
    s.lock().await.unwrap();
    s.insert("n", &1u64).unwrap();
    s.commit().await.unwrap(); // inner level: creates the session
    let id = s.id().unwrap();
    assert_eq!(stored_n(&store, &id).await, Some(1));
    s.clear_all().unwrap();
    s.commit().await.unwrap();
    assert_eq!(
        stored_n(&store, &id).await,
        None,
        "the clear was acknowledged"
    );
    assert!(s.finish(Outcome::Success).await.error.is_none());
    assert_eq!(stored_n(&store, &id).await, None);
}

/// Found by the model test (reliability/tests/model.rs, memcached): a
/// release with nothing to write of a lock whose session was destroyed
/// meanwhile failed as "session gone" when another request of the process
/// was waiting for the lock (the hand-off path), and succeeded otherwise.
/// Nothing to write is never an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn releasing_a_lock_with_nothing_to_write_succeeds_after_a_destroy_even_with_waiters() {
    let (factory, _store, id) = with_stored(quick_locks(2000)).await;
    let a = factory.session(id);
    a.lock().await.unwrap();
    let b = factory.session(id);
    let waiter = tokio::spawn(async move { b.lock().await.map(|()| b) });
    tokio::time::sleep(Duration::from_millis(50)).await; // b waits in line
    factory.session(id).destroy().await.unwrap();
    a.commit().await.unwrap();
    // The waiter then finds the session gone and starts afresh.
    let b = waiter.await.unwrap().unwrap();
    assert_eq!(b.id(), None);
    b.rollback().await.unwrap();
}

/// Issue 13 (Phalcon's `regenerateId(false)`): with `keep_old_id_for`, the
/// old id still carries the session's data for the grace period, never
/// longer; without it (the default) the old id dies at once.
#[tokio::test]
async fn regenerate_can_keep_the_old_id_for_a_grace_period_and_no_longer() {
    let grace = Duration::from_millis(400);
    let config = SessionConfig::builder()
        .keep_old_id_for(Some(grace))
        .build()
        .unwrap();
    let (factory, store) = factory_with(config);
    let old = stored(&factory).await;
    let s = factory.session(old);
    s.regenerate().await.unwrap();
    let new = s.id().unwrap();
    assert_ne!(new, old);
    assert_eq!(
        stored_n(&store, &old).await,
        Some(0),
        "the old id still works"
    );
    assert_eq!(stored_n(&store, &new).await, Some(0));
    tokio::time::sleep(grace + Duration::from_millis(50)).await;
    assert_eq!(
        stored_n(&store, &old).await,
        None,
        "not after the grace period"
    );
    assert_eq!(stored_n(&store, &new).await, Some(0));

    let (factory, store) = self::factory();
    let old = stored(&factory).await;
    factory.session(old).regenerate().await.unwrap();
    assert_eq!(
        stored_n(&store, &old).await,
        None,
        "by default the old id dies"
    );
}

/// The copy under the old id is no owner's session: it is in no owner's
/// list, so no revocation could end it, and it must not say whose it is.
#[tokio::test]
async fn the_old_id_kept_after_a_login_carries_no_owner() {
    let config = SessionConfig::builder()
        .keep_old_id_for(Some(Duration::from_secs(5)))
        .build()
        .unwrap();
    let (factory, _store) = factory_with(config);
    let old = stored(&factory).await;
    let s = factory.session(old);
    s.set_owner("ada").await.unwrap();
    s.regenerate().await.unwrap();
    assert_eq!(s.owner().await.unwrap().as_deref(), Some("ada"));
    let copy = factory.session(old);
    assert_eq!(
        copy.get::<u32>("n").await.unwrap(),
        Some(0),
        "the copy holds the data"
    );
    assert_eq!(copy.owner().await.unwrap(), None);
    assert_eq!(copy.handle().await.unwrap(), None);
}
