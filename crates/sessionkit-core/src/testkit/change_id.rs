//! `change_id`: moving a session (and its lock) to a new id.

use tokio::time::Instant;

use crate::id::{LockToken, SessionId};
use crate::record::{Entries, Meta};
use crate::store::{Applied, IdChanged, Locked, SessionStore};

use super::SuiteConfig;
use super::support::{
    acquire, aged_record, applied, apply, assert_absent, assert_held, check_timing, create,
    create_at, destroy_all, entries, fence, load_live, lock, ok, record, renew, set, sleep_until,
    unlock,
};

async fn change<S: SessionStore>(
    store: &S,
    old: &SessionId,
    new: &SessionId,
    token: Option<&LockToken>,
) -> IdChanged {
    ok(store.change_id(old, new, token).await, "change_id")
}

async fn changed<S: SessionStore>(
    store: &S,
    old: &SessionId,
    new: &SessionId,
    token: Option<&LockToken>,
    context: &str,
) -> Meta {
    match change(store, old, new, token).await {
        IdChanged::Changed(meta) => meta,
        other => panic!("{context}: change_id should answer Changed, got {other:?}"),
    }
}

/// `change_id` moves a session: it answers `Changed` with the refreshed
/// metadata (expiry moved forward, creation time and lifetime kept), the new
/// id loads the same entries with that metadata, the old id loads as absent,
/// answers `Gone` to `apply`, and is free for a new session.
pub async fn change_id_moves_the_session<S: SessionStore + Clone>(store: &S, config: &SuiteConfig) {
    let ago = (config.lifetime / 2).min(std::time::Duration::from_secs(10));
    let data = entries(&[("user", b"\"ada\""), ("n", b"1")]);
    let created = aged_record(config.lifetime, ago, data.clone());
    let old = create(store, &created).await;
    let new = store.new_id_for(&old);

    let meta = changed(store, &old, &new, None, "change_id of a live session").await;
    assert!(
        meta.expires() > created.meta.expires(),
        "change_id must refresh the expiry ({} before, {} after)",
        created.meta.expires(),
        meta.expires()
    );
    assert_eq!(
        meta.created(),
        created.meta.created(),
        "change_id must keep the creation time"
    );
    assert_eq!(
        meta.ttl_ms(),
        created.meta.ttl_ms(),
        "change_id must keep the idle lifetime"
    );

    let moved = load_live(store, &new, "the new id after change_id").await;
    assert_eq!(
        moved.entries, data,
        "the new id must hold the session's entries"
    );
    assert_eq!(
        moved.meta, meta,
        "the new id must hold the metadata change_id returned"
    );
    assert_absent(store, &old, "the old id after change_id").await;
    assert_eq!(
        apply(store, &old, &set("k", b"v"), None).await,
        Applied::Gone,
        "apply to the old id after change_id must answer Gone"
    );
    let fresh = record(config.lifetime, entries(&[("k", b"fresh")]));
    create_at(store, &old, &fresh).await;
    assert_eq!(
        load_live(store, &new, "the moved session after re-using the old id")
            .await
            .entries,
        data,
        "a new session under the old id must not affect the moved one"
    );
    destroy_all(store, &[old, new]).await;
}

/// `change_id` never overwrites: onto the id of a live session it answers
/// `IdTaken` and both sessions stay as they were, also when fenced by the
/// lock owner (whose lock stays held).
pub async fn change_id_never_overwrites<S: SessionStore + Clone>(store: &S, config: &SuiteConfig) {
    let a_data = entries(&[("who", b"a")]);
    let b_data = entries(&[("who", b"b")]);
    let a = create(store, &record(config.lifetime, a_data.clone())).await;
    // A target the store would pick, so that only its being live refuses
    // the move (a Redis Cluster store refuses a target in another slot).
    let b = store.new_id_for(&a);
    create_at(store, &b, &record(config.lifetime, b_data.clone())).await;

    async fn unchanged<S: SessionStore>(store: &S, id: &SessionId, data: &Entries, context: &str) {
        assert_eq!(
            &load_live(store, id, context).await.entries,
            data,
            "{context}: a change_id that answered IdTaken must change nothing"
        );
    }

    assert_eq!(
        change(store, &a, &b, None).await,
        IdChanged::IdTaken,
        "change_id onto a live session's id must answer IdTaken"
    );
    unchanged(store, &a, &a_data, "the old id").await;
    unchanged(store, &b, &b_data, "the taken id").await;

    let (token, _) = acquire(store, &a, config.lock_ttl, "lock on a live session").await;
    assert_eq!(
        change(store, &a, &b, Some(&token)).await,
        IdChanged::IdTaken,
        "a fenced change_id by the lock owner onto a live session's id must answer IdTaken"
    );
    unchanged(store, &a, &a_data, "the old id, fenced").await;
    unchanged(store, &b, &b_data, "the taken id, fenced").await;
    assert_held(
        store,
        &a,
        config,
        "the owner's lock after a refused change_id",
    )
    .await;
    let (b_token, _) = acquire(
        store,
        &b,
        config.lock_ttl,
        "lock on the taken id (a refused fenced change_id must not move the lock onto it)",
    )
    .await;
    unlock(store, &b, &b_token).await;
    unlock(store, &a, &token).await;
    destroy_all(store, &[a, b]).await;
}

/// A fenced `change_id` by the lock owner moves the lock along with the
/// session, with the same token and the same expiry: the new id is `Held`
/// for others, the owner can write (fenced), renew and unlock there with the
/// same token; the old id answers `Absent` and, created afresh, has no lock;
/// a lock moved with a short ttl still expires on time.
pub async fn fenced_change_id_moves_the_lock<S: SessionStore + Clone>(
    store: &S,
    config: &SuiteConfig,
) {
    check_timing(config);
    let data = entries(&[("k", b"v")]);
    // Both sessions and their new ids exist before either part takes a lock:
    // `new_id_for` may be CPU-bound (a Redis Cluster draws some 16,000 ids,
    // over 100 ms in a debug build), and run inside one part it would stall
    // the other part's short lock past its ttl.
    let (old, new) = create_with_new_id(store, config, &data).await;
    let (short_old, short_new) = create_with_new_id(store, config, &data).await;

    let moved = async {
        let (token, _) = acquire(store, &old, config.lock_ttl, "lock on a live session").await;
        changed(
            store,
            &old,
            &new,
            Some(&token),
            "a fenced change_id by the lock owner",
        )
        .await;
        assert_eq!(
            load_live(store, &new, "the new id after a fenced change_id")
                .await
                .entries,
            data,
            "a fenced change_id must move the data"
        );
        assert_held(
            store,
            &new,
            config,
            "the new id after a fenced change_id (the lock must move along)",
        )
        .await;
        assert_eq!(
            lock(store, &old, config.lock_ttl).await,
            Locked::Absent,
            "lock on the old id after change_id must answer Absent"
        );
        applied(
            store,
            &new,
            &set("k", b"w"),
            fence(&token, false),
            "a fenced apply on the new id with the moved lock's token",
        )
        .await;
        assert!(
            renew(store, &new, &token, config.lock_ttl).await,
            "renew_lock on the new id with the moved lock's token must answer true"
        );
        create_at(
            store,
            &old,
            &record(config.lifetime, entries(&[("k", b"fresh")])),
        )
        .await;
        let (fresh, _) = acquire(
            store,
            &old,
            config.lock_ttl,
            "lock on a new session under the old id (the lock must not stay behind)",
        )
        .await;
        unlock(store, &old, &fresh).await;
        unlock(store, &new, &token).await;
        let (again, _) = acquire(
            store,
            &new,
            config.lock_ttl,
            "lock on the new id after the owner unlocked it",
        )
        .await;
        unlock(store, &new, &again).await;
        destroy_all(store, &[old, new]).await;
    };

    let keeps_expiry = async {
        let (old, new) = (short_old, short_new);
        let start = Instant::now();
        let (token, _) = acquire(store, &old, config.short_lock_ttl, "lock with a short ttl").await;
        changed(
            store,
            &old,
            &new,
            Some(&token),
            "a fenced change_id by the lock owner",
        )
        .await;
        assert_held(
            store,
            &new,
            config,
            "right after moving a lock with a short ttl",
        )
        .await;
        sleep_until(start, config.short_lock_ttl + config.slack).await;
        let (next, _) = acquire(
            store,
            &new,
            config.lock_ttl,
            "lock on the new id after the moved lock's ttl (plus slack) passed (the lock must keep its expiry)",
        )
        .await;
        unlock(store, &new, &next).await;
        destroy_all(store, &[new]).await;
    };

    tokio::join!(moved, keeps_expiry);
}

/// A session created with `data`, and a new id for it.
async fn create_with_new_id<S: SessionStore>(
    store: &S,
    config: &SuiteConfig,
    data: &Entries,
) -> (SessionId, SessionId) {
    let old = create(store, &record(config.lifetime, data.clone())).await;
    let new = store.new_id_for(&old);
    (old, new)
}

/// A fenced `change_id` writes only while its token owns an unexpired lock on
/// the old id: with another token's lock, with no lock, or with an expired
/// lock, it answers `LockLost` and moves nothing (the old id keeps its data,
/// the new id stays absent, a held lock stays held).
pub async fn fenced_change_id_requires_the_lock<S: SessionStore + Clone>(
    store: &S,
    config: &SuiteConfig,
) {
    check_timing(config);
    let data = entries(&[("k", b"v")]);

    async fn nothing_moved<S: SessionStore>(
        store: &S,
        old: &SessionId,
        new: &SessionId,
        data: &Entries,
        context: &str,
    ) {
        assert_eq!(
            &load_live(store, old, context).await.entries,
            data,
            "{context}: the old id must keep its data"
        );
        assert_absent(store, new, context).await;
    }

    let held = async {
        let old = create(store, &record(config.lifetime, data.clone())).await;
        let new = store.new_id_for(&old);
        let (token, _) = acquire(store, &old, config.lock_ttl, "lock on a live session").await;
        assert_eq!(
            change(store, &old, &new, Some(&LockToken::generate())).await,
            IdChanged::LockLost,
            "a fenced change_id with a token that does not own the held lock must answer LockLost"
        );
        nothing_moved(
            store,
            &old,
            &new,
            &data,
            "after a fenced change_id with a wrong token",
        )
        .await;
        assert_held(
            store,
            &old,
            config,
            "the owner's lock after a fenced change_id with a wrong token",
        )
        .await;
        unlock(store, &old, &token).await;
        destroy_all(store, &[old, new]).await;
    };

    let unlocked = async {
        let old = create(store, &record(config.lifetime, data.clone())).await;
        let new = store.new_id_for(&old);
        assert_eq!(
            change(store, &old, &new, Some(&LockToken::generate())).await,
            IdChanged::LockLost,
            "a fenced change_id on a session with no lock must answer LockLost"
        );
        nothing_moved(
            store,
            &old,
            &new,
            &data,
            "after a fenced change_id without a lock",
        )
        .await;
        destroy_all(store, &[old, new]).await;
    };

    let expired = async {
        let old = create(store, &record(config.lifetime, data.clone())).await;
        let new = store.new_id_for(&old);
        let start = Instant::now();
        let (token, _) = acquire(store, &old, config.short_lock_ttl, "lock with a short ttl").await;
        sleep_until(start, config.short_lock_ttl + config.slack).await;
        assert_eq!(
            change(store, &old, &new, Some(&token)).await,
            IdChanged::LockLost,
            "a fenced change_id with an expired lock must answer LockLost"
        );
        nothing_moved(
            store,
            &old,
            &new,
            &data,
            "after a fenced change_id with an expired lock",
        )
        .await;
        destroy_all(store, &[old, new]).await;
    };

    tokio::join!(held, unlocked, expired);
}
