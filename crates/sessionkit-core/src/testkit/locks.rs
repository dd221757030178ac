//! Locks: exclusion, expiry, renewal, fenced writes and many tasks at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Barrier;
use tokio::time::Instant;

use crate::id::LockToken;
use crate::record::Delta;
use crate::record::now_ms;
use crate::store::{Applied, AppliedAndRead, Locked, SessionStore};

use super::SuiteConfig;
use super::support::{
    acquire, applied, apply, apply_and_read, assert_absent, assert_held, backoff, check_timing,
    create, create_at, decode, destroy_all, entries, fence, join_all, load_live, lock, ok, record,
    renew, set, sleep_until, unlock, value,
};

/// Lock exclusion: `lock` on a missing session answers `Absent` and takes no
/// lock (after creating the id, `lock` acquires). `lock` answers `Acquired`
/// with a token and the session's current record (read in the same step);
/// while it is held, `lock` answers `Held`; `unlock` with another token
/// changes nothing; `unlock` with the owner's token frees it; a new lock has
/// a new token; unlocking twice is fine and does not release a later lock.
/// Of many tasks racing to lock a free session, exactly one gets `Acquired`.
pub async fn lock_is_exclusive<S: SessionStore + Clone>(store: &S, config: &SuiteConfig) {
    let id = crate::SessionId::generate();
    assert_eq!(
        lock(store, &id, config.lock_ttl).await,
        Locked::Absent,
        "lock on a missing session must answer Absent"
    );
    let data = entries(&[("k", b"v"), ("n", &value(&1))]);
    create_at(store, &id, &record(config.lifetime, data.clone())).await;

    let (first, seen) = acquire(
        store,
        &id,
        config.lock_ttl,
        "lock on a live, unlocked session (lock on the missing session must not have taken a lock)",
    )
    .await;
    assert_eq!(
        seen.entries, data,
        "lock must return the session's current entries"
    );
    assert_held(store, &id, config, "a second lock while the first is held").await;
    assert_eq!(
        lock(store, &id, config.short_lock_ttl).await,
        Locked::Held,
        "a lock with another ttl while the first is held must answer Held"
    );

    unlock(store, &id, &LockToken::generate()).await;
    assert_held(
        store,
        &id,
        config,
        "after unlock with a token that does not own the lock",
    )
    .await;

    unlock(store, &id, &first).await;
    applied(
        store,
        &id,
        &set("k", b"changed"),
        None,
        "apply while unlocked",
    )
    .await;
    let (second, seen) = acquire(
        store,
        &id,
        config.lock_ttl,
        "lock after unlock by the owner",
    )
    .await;
    assert_ne!(first, second, "every acquired lock must have a fresh token");
    assert_eq!(
        seen.entries.get("k"),
        Some(&b"changed"[..]),
        "lock must return the record as it is when the lock is taken"
    );
    unlock(store, &id, &second).await;
    unlock(store, &id, &second).await;
    let (third, _) = acquire(store, &id, config.lock_ttl, "lock after a double unlock").await;
    unlock(store, &id, &second).await;
    assert_held(
        store,
        &id,
        config,
        "after unlock with the token of an earlier, released lock",
    )
    .await;
    unlock(store, &id, &third).await;

    let tasks = config.tasks.max(2);
    for round in 0..4 {
        let barrier = Arc::new(Barrier::new(tasks));
        let handles = (0..tasks)
            .map(|_| {
                let store = store.clone();
                let barrier = barrier.clone();
                let ttl = config.lock_ttl;
                tokio::spawn(async move {
                    barrier.wait().await;
                    match lock(&store, &id, ttl).await {
                        Locked::Acquired { token, .. } => Some(token),
                        Locked::Held => None,
                        Locked::Absent => panic!("lock on a live session answered Absent"),
                    }
                })
            })
            .collect();
        let tokens: Vec<LockToken> = join_all(handles).await.into_iter().flatten().collect();
        assert_eq!(
            tokens.len(),
            1,
            "round {round}: exactly one of {tasks} tasks racing for a free lock must get it, {} did",
            tokens.len()
        );
        unlock(store, &id, &tokens[0]).await;
    }

    destroy_all(store, &[id]).await;
}

/// Lock expiry: a lock taken for `short_lock_ttl` is held right away and free
/// once `short_lock_ttl + slack` has passed, with a new token; the expiry
/// leaves the session's data alone; `unlock` with the expired token does not
/// release the lock that replaced it.
pub async fn expired_lock_is_free<S: SessionStore + Clone>(store: &S, config: &SuiteConfig) {
    check_timing(config);
    let data = entries(&[("k", b"v")]);
    let id = create(store, &record(config.lifetime, data.clone())).await;
    let start = Instant::now();
    let (old, _) = acquire(store, &id, config.short_lock_ttl, "lock with a short ttl").await;
    assert_held(store, &id, config, "right after a lock with a short ttl").await;

    sleep_until(start, config.short_lock_ttl + config.slack).await;
    let (new, seen) = acquire(
        store,
        &id,
        config.lock_ttl,
        "lock after the previous lock's ttl (plus slack) passed",
    )
    .await;
    assert_ne!(old, new, "a lock taken after expiry must have a new token");
    assert_eq!(
        seen.entries, data,
        "lock expiry must leave the session's data alone"
    );
    unlock(store, &id, &old).await;
    assert_held(
        store,
        &id,
        config,
        "after unlock with the token of an expired lock that another token has taken since",
    )
    .await;
    unlock(store, &id, &new).await;
    destroy_all(store, &[id]).await;
}

/// Renewal: `renew_lock` by the owner answers `true` and extends the lock, so
/// it is still held after its original ttl (plus slack) passed; with a token
/// that does not own the lock it answers `false`; once the lock expired it
/// answers `false` (and does not revive it), and after another token took it,
/// renewing or unlocking with the old token leaves the new owner's lock
/// alone.
pub async fn renew_extends_only_for_the_owner<S: SessionStore + Clone>(
    store: &S,
    config: &SuiteConfig,
) {
    check_timing(config);
    let renewed = async {
        let id = create(store, &record(config.lifetime, entries(&[("k", b"v")]))).await;
        let start = Instant::now();
        let (token, _) = acquire(store, &id, config.short_lock_ttl, "lock with a short ttl").await;
        assert!(
            !renew(store, &id, &LockToken::generate(), config.lock_ttl).await,
            "renew_lock with a token that does not own the lock must answer false"
        );
        assert!(
            renew(store, &id, &token, config.lock_ttl).await,
            "renew_lock by the owner of a held lock must answer true"
        );
        sleep_until(start, config.short_lock_ttl + config.slack).await;
        assert_held(
            store,
            &id,
            config,
            "a renewed lock after its original ttl (plus slack)",
        )
        .await;
        assert!(
            renew(store, &id, &token, config.lock_ttl).await,
            "renew_lock by the owner of a renewed lock must answer true"
        );
        unlock(store, &id, &token).await;
        let (again, _) =
            acquire(store, &id, config.lock_ttl, "lock after the owner unlocked").await;
        unlock(store, &id, &again).await;
        destroy_all(store, &[id]).await;
    };
    let stale = async {
        let id = create(store, &record(config.lifetime, entries(&[("k", b"v")]))).await;
        let start = Instant::now();
        let (old, _) = acquire(store, &id, config.short_lock_ttl, "lock with a short ttl").await;
        sleep_until(start, config.short_lock_ttl + config.slack).await;
        assert!(
            !renew(store, &id, &old, config.lock_ttl).await,
            "renew_lock of an expired lock must answer false"
        );
        let (new, _) = acquire(
            store,
            &id,
            config.lock_ttl,
            "lock after the previous lock expired and its renewal failed",
        )
        .await;
        assert!(
            !renew(store, &id, &old, config.lock_ttl).await,
            "renew_lock with the token of a lock another token has taken since must answer false"
        );
        assert_held(
            store,
            &id,
            config,
            "after a refused renewal with a stale token",
        )
        .await;
        assert!(
            renew(store, &id, &new, config.lock_ttl).await,
            "renew_lock by the new owner must answer true"
        );
        unlock(store, &id, &old).await;
        assert_held(store, &id, config, "after unlock with a stale token").await;
        unlock(store, &id, &new).await;
        destroy_all(store, &[id]).await;
    };
    tokio::join!(renewed, stale);
}

/// Fencing: a fenced `apply` writes only while its token owns an unexpired
/// lock. With no lock at all, with another token's lock, with an expired
/// lock, and with an expired lock that another token has taken since, it
/// answers `LockLost` and writes nothing (releasing or not), leaving the
/// current owner's lock in place. With the owner's token and
/// `release: false` it answers `Applied`, writes, and the lock stays held.
pub async fn fenced_apply_requires_the_lock<S: SessionStore + Clone>(
    store: &S,
    config: &SuiteConfig,
) {
    check_timing(config);
    let data = entries(&[("k", b"v")]);

    let unlocked = async {
        let id = create(store, &record(config.lifetime, data.clone())).await;
        let stranger = LockToken::generate();
        for release in [false, true] {
            assert_eq!(
                apply(store, &id, &set("k", b"fenced"), fence(&stranger, release)).await,
                Applied::LockLost,
                "a fenced apply (release = {release}) on a session with no lock must answer LockLost"
            );
        }
        assert_eq!(
            load_live(store, &id, "after fenced applies without a lock")
                .await
                .entries,
            data,
            "a fenced apply that answered LockLost must write nothing"
        );
        destroy_all(store, &[id]).await;
    };

    let held = async {
        let id = create(store, &record(config.lifetime, data.clone())).await;
        let (token, _) = acquire(store, &id, config.lock_ttl, "lock on a live session").await;
        for release in [false, true] {
            assert_eq!(
                apply(
                    store,
                    &id,
                    &set("k", b"intruder"),
                    fence(&LockToken::generate(), release)
                )
                .await,
                Applied::LockLost,
                "a fenced apply (release = {release}) with a token that does not own the held lock must answer LockLost"
            );
        }
        assert_eq!(
            load_live(store, &id, "after fenced applies with a wrong token")
                .await
                .entries,
            data,
            "a fenced apply with a wrong token must write nothing"
        );
        assert_held(
            store,
            &id,
            config,
            "after fenced applies with a wrong token",
        )
        .await;

        applied(
            store,
            &id,
            &set("k", b"owner"),
            fence(&token, false),
            "a fenced apply by the owner",
        )
        .await;
        assert_eq!(
            load_live(store, &id, "after a fenced apply by the owner")
                .await
                .entries
                .get("k"),
            Some(&b"owner"[..]),
            "a fenced apply by the owner must write"
        );
        assert_held(
            store,
            &id,
            config,
            "after a fenced apply with release = false",
        )
        .await;
        assert!(
            renew(store, &id, &token, config.lock_ttl).await,
            "the owner must still own the lock after a fenced apply with release = false"
        );
        unlock(store, &id, &token).await;
        destroy_all(store, &[id]).await;
    };

    let expired = async {
        let id = create(store, &record(config.lifetime, data.clone())).await;
        let start = Instant::now();
        let (old, _) = acquire(store, &id, config.short_lock_ttl, "lock with a short ttl").await;
        sleep_until(start, config.short_lock_ttl + config.slack).await;
        assert_eq!(
            apply(store, &id, &set("k", b"late"), fence(&old, false)).await,
            Applied::LockLost,
            "a fenced apply with an expired lock (not yet taken by anyone) must answer LockLost"
        );
        let (new, _) = acquire(
            store,
            &id,
            config.lock_ttl,
            "lock after the previous one expired",
        )
        .await;
        for release in [false, true] {
            assert_eq!(
                apply(store, &id, &set("k", b"stale"), fence(&old, release)).await,
                Applied::LockLost,
                "a fenced apply (release = {release}) with a lock that expired and was taken by another token must answer LockLost"
            );
        }
        assert_eq!(
            load_live(store, &id, "after stale fenced applies")
                .await
                .entries,
            data,
            "a fenced apply with a stale token must write nothing"
        );
        assert_held(
            store,
            &id,
            config,
            "the new owner's lock after stale fenced applies",
        )
        .await;
        applied(
            store,
            &id,
            &set("k", b"new owner"),
            fence(&new, false),
            "a fenced apply by the new owner",
        )
        .await;
        unlock(store, &id, &new).await;
        destroy_all(store, &[id]).await;
    };

    tokio::join!(unlocked, held, expired);
}

/// Commit and unlock in one step: a fenced `apply` with `release: true` by
/// the owner answers `Applied`, writes, and releases the lock, so another
/// `lock` acquires at once and the old token can no longer write.
pub async fn fenced_release_commits_and_unlocks<S: SessionStore + Clone>(
    store: &S,
    config: &SuiteConfig,
) {
    let id = create(store, &record(config.lifetime, entries(&[("k", b"v")]))).await;
    let (token, _) = acquire(store, &id, config.lock_ttl, "lock on a live session").await;
    applied(
        store,
        &id,
        &set("k", b"committed"),
        fence(&token, true),
        "a fenced apply with release",
    )
    .await;
    let (next, seen) = acquire(
        store,
        &id,
        config.lock_ttl,
        "lock after a fenced apply with release = true (it must have released the lock)",
    )
    .await;
    assert_eq!(
        seen.entries.get("k"),
        Some(&b"committed"[..]),
        "a fenced apply with release = true must write"
    );
    assert_eq!(
        apply(
            store,
            &id,
            &set("k", b"after release"),
            fence(&token, false)
        )
        .await,
        Applied::LockLost,
        "the released token must no longer pass the fence"
    );
    unlock(store, &id, &next).await;
    destroy_all(store, &[id]).await;
}

/// `destroy` removes the lock too: after destroying a locked session, `lock`
/// answers `Absent`; after creating the id again, `lock` acquires at once,
/// and the old token can neither renew nor write.
pub async fn destroy_removes_the_lock<S: SessionStore + Clone>(store: &S, config: &SuiteConfig) {
    let id = create(store, &record(config.lifetime, entries(&[("k", b"v")]))).await;
    let (old, _) = acquire(store, &id, config.lock_ttl, "lock on a live session").await;
    ok(store.destroy(&id).await, "destroy");
    assert_absent(store, &id, "after destroying a locked session").await;
    assert_eq!(
        lock(store, &id, config.lock_ttl).await,
        Locked::Absent,
        "lock after destroying a locked session must answer Absent"
    );

    create_at(
        store,
        &id,
        &record(config.lifetime, entries(&[("k", b"new")])),
    )
    .await;
    assert!(
        !renew(store, &id, &old, config.lock_ttl).await,
        "renew_lock with the token of a destroyed session's lock must answer false"
    );
    assert_eq!(
        apply(store, &id, &set("k", b"stale"), fence(&old, false)).await,
        Applied::LockLost,
        "a fenced apply with the token of a destroyed session's lock must answer LockLost"
    );
    let (new, _) = acquire(
        store,
        &id,
        config.lock_ttl,
        "lock on a re-created id whose old session was destroyed while locked",
    )
    .await;
    unlock(store, &id, &new).await;
    destroy_all(store, &[id]).await;
}

/// Many tasks, one counter: `tasks` tasks each do `iterations` locked
/// read-modify-writes (lock, retrying while `Held`; read the counter from the
/// record the lock returned; fenced apply with `release: true` of counter + 1)
/// and, in between, unfenced applies of a key of their own. No two tasks ever
/// hold the lock at once, every fenced apply answers `Applied`, the final
/// counter is exactly `tasks × iterations`, every task's own key holds its
/// last value, and the lock is free at the end.
pub async fn locked_increments_are_never_lost<S: SessionStore + Clone>(
    store: &S,
    config: &SuiteConfig,
) {
    let tasks = config.tasks.max(1);
    let iterations = config.iterations.max(1);
    let id = create(
        store,
        &record(config.lifetime, entries(&[("n", &value(&0u64))])),
    )
    .await;
    let holders = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(tasks));

    let handles = (0..tasks)
        .map(|t| {
            let store = store.clone();
            let holders = holders.clone();
            let barrier = barrier.clone();
            let ttl = config.lock_ttl;
            tokio::spawn(async move {
                let own = format!("task-{t:03}");
                barrier.wait().await;
                for i in 0..iterations {
                    let wait = Instant::now();
                    let (token, record) = loop {
                        match lock(&store, &id, ttl).await {
                            Locked::Acquired { token, record } => break (token, record),
                            Locked::Held => {
                                assert!(
                                    wait.elapsed() < ttl,
                                    "task {t} could not take the lock within {ttl:?}"
                                );
                                backoff().await;
                            }
                            Locked::Absent => panic!("lock on a live session answered Absent"),
                        }
                    };
                    let before = holders.fetch_add(1, Ordering::SeqCst);
                    assert_eq!(before, 0, "two tasks held the session lock at the same time");
                    let n: u64 = decode(&record.entries, "n");
                    tokio::task::yield_now().await;
                    holders.fetch_sub(1, Ordering::SeqCst);
                    match apply(&store, &id, &set("n", &value(&(n + 1))), fence(&token, true)).await {
                        Applied::Applied(_) => {}
                        other => panic!(
                            "a fenced apply by the owner of an unexpired lock must answer Applied, got {other:?}"
                        ),
                    }
                    applied(&store, &id, &set(&own, &value(&i)), None, "an unfenced apply next to locked ones")
                        .await;
                }
            })
        })
        .collect();
    join_all(handles).await;

    let stored = load_live(store, &id, "after the locked increments").await;
    let n: u64 = decode(&stored.entries, "n");
    assert_eq!(
        n,
        (tasks * iterations) as u64,
        "{tasks} tasks × {iterations} locked increments must give exactly {}, some were lost",
        tasks * iterations
    );
    for t in 0..tasks {
        let last: usize = decode(&stored.entries, &format!("task-{t:03}"));
        assert_eq!(last, iterations - 1, "task {t}'s unfenced writes were lost");
    }
    let (token, _) = acquire(
        store,
        &id,
        config.lock_ttl,
        "lock after every task released it",
    )
    .await;
    unlock(store, &id, &token).await;
    destroy_all(store, &[id]).await;
}

/// A held lock keeps its session alive: a session is not idle while a request
/// holds its lock. `lock` refreshes the idle expiry (the record it returns
/// shows the new [`Meta::expires`](crate::record::Meta::expires)), and so does
/// each `renew_lock`, so a transaction that starts near the idle expiry, or
/// runs past it under renewal, still commits. Timeline, in units of
/// `short_lifetime`: created at 0 (expiry 1); locked at 0.5 (expiry 1.5);
/// renewed at 1 (expiry 2); the fenced commit at 1.6 must apply, although
/// the session would have expired at 1 without the lock's refresh, and at
/// 1.5 without the renewal's.
pub async fn locking_keeps_a_session_alive<S: SessionStore + Clone>(
    store: &S,
    config: &SuiteConfig,
) {
    check_timing(config);
    let short = config.short_lifetime;
    let start = Instant::now();
    let created = record(short, entries(&[("n", &value(&1))]));
    let id = create(store, &created).await;

    sleep_until(start, short / 2).await;
    let (token, seen) = acquire(
        store,
        &id,
        config.lock_ttl,
        "lock halfway through the idle lifetime",
    )
    .await;
    assert!(
        seen.meta.expires() > created.meta.expires(),
        "lock must refresh the idle expiry of the session it locks (it stayed at {})",
        created.meta.expires()
    );

    sleep_until(start, short).await;
    assert!(
        renew(store, &id, &token, config.lock_ttl).await,
        "renew_lock at the original expiry must succeed: the lock refreshed the session"
    );

    sleep_until(start, short * 8 / 5).await;
    let meta = applied(
        store,
        &id,
        &set("n", &value(&2)),
        fence(&token, true),
        "a fenced commit after the expiry the lock set, before the one the renewal set",
    )
    .await;
    assert!(
        meta.expires() > now_ms(),
        "the commit must leave the session live"
    );
    let after = load_live(store, &id, "after the commit").await;
    assert_eq!(decode::<u64>(&after.entries, "n"), 2);
    destroy_all(store, &[id]).await;
}

/// Handing a lock on: [`SessionStore::apply_and_read`] with the owner's
/// token applies the delta, keeps the lock (a `lock` still answers `Held`,
/// and the token still fences later writes) and returns the session as it is
/// after the write; with an empty delta it just reads under the lock. With a
/// token that does not own the lock it answers `LockLost` and writes
/// nothing; on a destroyed session, `Gone`.
pub async fn apply_and_read_keeps_the_lock<S: SessionStore + Clone>(
    store: &S,
    config: &SuiteConfig,
) {
    let created = record(config.lifetime, entries(&[("a", &value(&1))]));
    let id = create(store, &created).await;
    let (token, _) = acquire(store, &id, config.lock_ttl, "lock a fresh session").await;

    let after = match apply_and_read(store, &id, &set("b", &value(&2)), &token).await {
        AppliedAndRead::Applied(record) => record,
        other => panic!("apply_and_read by the owner should answer Applied, got {other:?}"),
    };
    assert_eq!(
        after.entries,
        entries(&[("a", &value(&1)), ("b", &value(&2))]),
        "apply_and_read must return the session after the write"
    );
    assert!(
        after.meta.expires() >= created.meta.expires(),
        "apply_and_read must refresh the expiry like apply"
    );
    assert_held(store, &id, config, "after apply_and_read").await;

    match apply_and_read(store, &id, &Delta::default(), &token).await {
        AppliedAndRead::Applied(record) => assert_eq!(
            record.entries, after.entries,
            "an empty apply_and_read must read the session unchanged"
        ),
        other => panic!("an empty apply_and_read should answer Applied, got {other:?}"),
    }
    assert_held(store, &id, config, "after an empty apply_and_read").await;

    let stranger = LockToken::generate();
    assert_eq!(
        apply_and_read(store, &id, &set("c", &value(&3)), &stranger).await,
        AppliedAndRead::LockLost,
        "apply_and_read with a token that does not own the lock"
    );
    applied(
        store,
        &id,
        &set("n", &value(&4)),
        fence(&token, true),
        "the owner's fenced commit after apply_and_read",
    )
    .await;
    let now = load_live(store, &id, "after the commit").await;
    assert!(!now.entries.contains("c"), "a refused apply_and_read wrote");
    assert_eq!(
        apply_and_read(store, &id, &set("c", &value(&3)), &token).await,
        AppliedAndRead::LockLost,
        "apply_and_read with a released lock's token"
    );

    destroy_all(store, &[id]).await;
    assert_eq!(
        apply_and_read(store, &id, &set("c", &value(&3)), &token).await,
        AppliedAndRead::Gone,
        "apply_and_read on a destroyed session"
    );
    assert_absent(store, &id, "apply_and_read must not resurrect a session").await;
}
