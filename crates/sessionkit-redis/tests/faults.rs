//! Faults: Redis stopped, hung and restarted under a live store; lock holders that vanish; fenced writes after a lock was lost.

use sessionkit_test_servers::redis as support;

use std::error::Error as _;
use std::time::{Duration, Instant};

use sessionkit_core::record::{Record, Touch};
use sessionkit_core::store::{Applied, Created, Fence, IdChanged, Locked, SessionStore};
use sessionkit_core::testkit::fixtures::{self, set};
use sessionkit_core::{Error, ErrorKind, SessionId};
use sessionkit_redis::RedisStore;

use support::RedisServer;

const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);

/// An operation on a store whose Redis is down must fail within this long.
/// Worst case by design: one reconnect attempt of two tries (each bounded by
/// the connect timeout, 50–250 ms apart), waited on once more after a
/// refusal, or one response timeout.
const FAIL_WITHIN: Duration = Duration::from_secs(3);

async fn store_on(server: &RedisServer) -> RedisStore {
    RedisStore::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .response_timeout(RESPONSE_TIMEOUT)
        .connect(&server.url())
        .await
        .expect("connect")
}

/// A session of one entry, `k = v`, with a minute's idle lifetime.
fn record() -> Record {
    fixtures::record(Duration::from_secs(60), fixtures::entries(&[("k", b"v")]))
}

/// Checks that an operation failed as a store failure naming the store and
/// the operation, with the redis error as its source, in bounded time.
fn assert_unavailable<T: std::fmt::Debug>(
    result: Result<T, Error>,
    operation: &str,
    elapsed: Duration,
) {
    let err = result.expect_err(&format!("{operation} must fail while Redis is down"));
    assert_eq!(
        err.kind(),
        ErrorKind::StoreUnavailable,
        "{operation}: {err}"
    );
    assert_eq!(err.store(), Some("redis"), "{operation}: {err}");
    assert_eq!(err.operation(), Some(operation), "{err}");
    assert!(
        err.to_string().contains(&format!("({operation} on redis)")),
        "the message names operation and store: {err}"
    );
    assert!(err.source().is_some(), "{operation}: the cause is kept");
    assert!(err.is_unavailable());
    assert!(
        elapsed < FAIL_WITHIN,
        "{operation} took {elapsed:?} to fail; the timeouts must bound it"
    );
}

macro_rules! timed {
    ($op:expr) => {{
        let start = Instant::now();
        let result = $op.await;
        (result, start.elapsed())
    }};
}

/// Redis killed under a live store: every operation fails fast with a
/// `StoreUnavailable` error that names "redis" and the operation, nothing
/// panics; once Redis is back on the same port, the same store works again
/// within 2 s without being rebuilt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_then_back() {
    let mut server = RedisServer::start();
    let store = store_on(&server).await;
    let id = SessionId::generate();
    assert_eq!(
        store.create(&id, &record()).await.unwrap(),
        Created::Created
    );
    let Locked::Acquired { token, .. } = store.lock(&id, Duration::from_secs(30)).await.unwrap()
    else {
        panic!("lock")
    };

    server.stop();

    // Twice each: the first call finds the dead connection, later ones wait
    // for reconnect attempts.
    for round in 0..2 {
        let (r, t) = timed!(store.load(&id, Some(Touch::always())));
        assert_unavailable(r, "load", t);
        let (r, t) = timed!(store.create(&SessionId::generate(), &record()));
        assert_unavailable(r, "create", t);
        let (r, t) = timed!(store.apply(&id, &set("k", b"w"), None));
        assert_unavailable(r, "apply", t);
        let fence = Fence {
            token: &token,
            release: round == 1,
        };
        let (r, t) = timed!(store.apply(&id, &set("k", b"w"), Some(fence)));
        assert_unavailable(r, "apply", t);
        let (r, t) = timed!(store.change_id(&id, &SessionId::generate(), None));
        assert_unavailable(r, "change_id", t);
        let (r, t) = timed!(store.lock(&id, Duration::from_secs(1)));
        assert_unavailable(r, "lock", t);
        let (r, t) = timed!(store.renew_lock(&id, &token, Duration::from_secs(1)));
        assert_unavailable(r, "renew_lock", t);
        let (r, t) = timed!(store.unlock(&id, &token));
        assert_unavailable(r, "unlock", t);
        let (r, t) = timed!(store.destroy(&id));
        assert_unavailable(r, "destroy", t);
    }
    // Many at once, as under load: all fail, none hangs.
    let start = Instant::now();
    let handles: Vec<_> = (0..32)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.load(&SessionId::generate(), None).await })
        })
        .collect();
    for handle in handles {
        let err = handle.await.expect("no panic").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::StoreUnavailable);
    }
    assert!(start.elapsed() < FAIL_WITHIN, "{:?}", start.elapsed());

    server.restart();
    let back = Instant::now();
    let fresh = SessionId::generate();
    let created = loop {
        match store.create(&fresh, &record()).await {
            Ok(created) => break created,
            Err(err) => {
                assert_eq!(err.kind(), ErrorKind::StoreUnavailable);
                assert!(
                    back.elapsed() < Duration::from_secs(2),
                    "the store must work again within 2 s of Redis coming back: {err}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let recovered = back.elapsed();
    assert_eq!(created, Created::Created);
    eprintln!("the store worked again {recovered:?} after Redis was back");
    // Every operation works on the same store (the restarted server has
    // lost its data and its script cache; scripts load again by themselves).
    assert!(store.load(&fresh, None).await.unwrap().is_some());
    assert!(
        store.load(&id, None).await.unwrap().is_none(),
        "no persistence: the old session is gone"
    );
    assert!(matches!(
        store.apply(&fresh, &set("n", b"1"), None).await.unwrap(),
        Applied::Applied(_)
    ));
    let Locked::Acquired { token, .. } = store.lock(&fresh, Duration::from_secs(5)).await.unwrap()
    else {
        panic!("lock after recovery")
    };
    assert!(
        store
            .renew_lock(&fresh, &token, Duration::from_secs(5))
            .await
            .unwrap()
    );
    let moved = SessionId::generate();
    assert!(matches!(
        store.change_id(&fresh, &moved, Some(&token)).await.unwrap(),
        IdChanged::Changed(_)
    ));
    store.unlock(&moved, &token).await.unwrap();
    store.destroy(&moved).await.unwrap();
}

/// Redis restarted while the store was idle: no operation fails. Over RESP3
/// (the default of `connect`) the connection manager hears the socket close
/// and reconnects by itself; a reconnect that was refused meanwhile is
/// retried once by the store, since a refused connection sent nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_while_idle_costs_no_failed_operation() {
    let mut server = RedisServer::start();
    let store = store_on(&server).await;
    let id = SessionId::generate();
    assert_eq!(
        store.create(&id, &record()).await.unwrap(),
        Created::Created
    );
    for outage in [Duration::ZERO, Duration::from_millis(600)] {
        server.stop();
        tokio::time::sleep(outage).await;
        server.restart();
        let fresh = SessionId::generate();
        let (created, took) = timed!(store.create(&fresh, &record()));
        assert_eq!(
            created.unwrap_or_else(|e| panic!(
                "the first operation after a restart ({outage:?} outage) must succeed: {e}"
            )),
            Created::Created
        );
        assert!(took < Duration::from_secs(2), "{took:?}");
    }
}

/// A Redis that keeps the connection open but answers nothing (the process
/// is paused): operations fail after the response timeout instead of
/// hanging, and work again once it answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_redis_times_out() {
    let server = RedisServer::start();
    let store = store_on(&server).await;
    let id = SessionId::generate();
    assert_eq!(
        store.create(&id, &record()).await.unwrap(),
        Created::Created
    );

    server.pause();
    let (r, t) = timed!(store.load(&id, None));
    // (Should an assertion fail, dropping the server still kills it:
    // SIGKILL ends a stopped process too.)
    assert_unavailable(r, "load", t);
    assert!(
        t >= RESPONSE_TIMEOUT / 2,
        "it failed by the response timeout, not at once: {t:?}"
    );
    server.resume();

    // The timed-out connection is replaced; service resumes.
    let start = Instant::now();
    loop {
        match store.load(&id, None).await {
            Ok(loaded) => {
                assert!(loaded.is_some());
                break;
            }
            Err(err) => {
                assert!(start.elapsed() < Duration::from_secs(2), "{err}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    store.destroy(&id).await.unwrap();
}

/// A lock whose holder vanished (its process, its store and its connection
/// are gone without unlocking) blocks others until its TTL runs out, and
/// not longer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vanished_holders_lock_is_taken_over_after_its_ttl() {
    let server = support::shared();
    let id = SessionId::generate();
    let ttl = Duration::from_millis(400);
    let locked_at;
    {
        let holder = RedisStore::connect(&server.url()).await.unwrap();
        assert_eq!(
            holder.create(&id, &record()).await.unwrap(),
            Created::Created
        );
        let Locked::Acquired { .. } = holder.lock(&id, ttl).await.unwrap() else {
            panic!("lock")
        };
        locked_at = Instant::now();
        // The holder goes away without unlocking.
    }
    let other = RedisStore::connect(&server.url()).await.unwrap();
    let taken = loop {
        match other.lock(&id, Duration::from_secs(5)).await.unwrap() {
            Locked::Held => {
                // Generous: a reply can reach a busy test thread late.
                assert!(
                    locked_at.elapsed() < ttl + Duration::from_secs(1),
                    "the lock must be free once its TTL passed"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Locked::Acquired { token, record } => {
                assert_eq!(record.entries.get("k"), Some(&b"v"[..]));
                break (token, locked_at.elapsed());
            }
            Locked::Absent => panic!("the session must still be there"),
        }
    };
    assert!(
        taken.1 >= ttl - Duration::from_millis(20),
        "the lock must be held until its TTL: taken over after {:?}",
        taken.1
    );
    other.unlock(&id, &taken.0).await.unwrap();
    other.destroy(&id).await.unwrap();
}

/// A writer whose lock expired and was taken by another request: its fenced
/// apply (with or without release) answers `LockLost` and writes nothing,
/// and the new owner's lock stays; the new owner's fenced writes go through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fenced_apply_after_losing_the_lock_writes_nothing() {
    let server = support::shared();
    let slow = RedisStore::connect(&server.url()).await.unwrap();
    let fast = RedisStore::connect(&server.url()).await.unwrap();
    let id = SessionId::generate();
    assert_eq!(slow.create(&id, &record()).await.unwrap(), Created::Created);

    let Locked::Acquired { token: old, .. } =
        slow.lock(&id, Duration::from_millis(150)).await.unwrap()
    else {
        panic!("lock")
    };
    tokio::time::sleep(Duration::from_millis(250)).await;
    let Locked::Acquired { token: new, .. } =
        fast.lock(&id, Duration::from_secs(10)).await.unwrap()
    else {
        panic!("the expired lock must be free")
    };

    for release in [false, true] {
        let fence = Fence {
            token: &old,
            release,
        };
        assert_eq!(
            slow.apply(&id, &set("k", b"stale"), Some(fence))
                .await
                .unwrap(),
            Applied::LockLost,
            "release = {release}"
        );
    }
    assert_eq!(
        slow.change_id(&id, &SessionId::generate(), Some(&old))
            .await
            .unwrap(),
        IdChanged::LockLost
    );
    assert!(
        !slow
            .renew_lock(&id, &old, Duration::from_secs(10))
            .await
            .unwrap()
    );
    slow.unlock(&id, &old).await.unwrap();
    let stored = fast.load(&id, None).await.unwrap().unwrap().record;
    assert_eq!(stored.entries.get("k"), Some(&b"v"[..]), "nothing written");
    assert_eq!(
        fast.lock(&id, Duration::from_secs(1)).await.unwrap(),
        Locked::Held,
        "the new owner keeps the lock"
    );
    let fence = Fence {
        token: &new,
        release: true,
    };
    assert!(matches!(
        fast.apply(&id, &set("k", b"fresh"), Some(fence))
            .await
            .unwrap(),
        Applied::Applied(_)
    ));
    assert_eq!(
        fast.load(&id, None)
            .await
            .unwrap()
            .unwrap()
            .record
            .entries
            .get("k"),
        Some(&b"fresh"[..])
    );
    fast.destroy(&id).await.unwrap();
}

/// Nothing reachable fails at connect time with a store error naming the
/// operation "connect", within the connect timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_nothing_fails_in_bounded_time() {
    let mut server = RedisServer::start();
    let url = server.url();
    server.stop();
    let start = Instant::now();
    let err = RedisStore::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .connect(&url)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StoreUnavailable);
    assert_eq!(err.store(), Some("redis"));
    assert_eq!(err.operation(), Some("connect"));
    assert!(start.elapsed() < FAIL_WITHIN, "{:?}", start.elapsed());
}
