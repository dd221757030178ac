//! Lifecycle and strictness: create, load, destroy, unknown and destroyed ids.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Barrier;

use crate::id::{LockToken, SessionId};
use crate::record::{Meta, Record, Touch, now_ms};
use crate::store::{Applied, Created, IdChanged, Locked, SessionStore};

use super::SuiteConfig;
use super::support::{
    apply, assert_absent, create, create_at, decode, destroy_all, entries, fence, join_all, keys,
    load_live, lock, ok, record, renew, set, value,
};

/// `create` stores a record and `load` returns it exactly: every entry byte
/// for byte (JSON values, binary, empty and 64 KiB values, Unicode keys) and
/// the metadata (creation time, idle lifetime, absolute deadline, expiry). A
/// load without a touch reports `touched == false` and changes nothing.
pub async fn create_then_load_returns_the_record<S: SessionStore + Clone>(
    store: &S,
    config: &SuiteConfig,
) {
    let big: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
    let every_byte: Vec<u8> = (0..=255u8).collect();
    let record = record(
        config.lifetime,
        entries(&[
            ("n", &value(&7)),
            ("basket", &value(&["apple", "pear"])),
            (
                "user",
                &value(&serde_json::json!({"name": "ada", "admin": false})),
            ),
            ("ünïcödé ключ 🔑", &value("grüße")),
            (
                "with space:and=punctuation/\"quotes\"",
                b"raw bytes, not JSON",
            ),
            ("binary", &every_byte),
            ("empty", b""),
            ("big", &big),
        ]),
    );
    let id = create(store, &record).await;

    let loaded = ok(store.load(&id, None).await, "load").expect("a session just created must load");
    assert_eq!(
        loaded.record.entries, record.entries,
        "load must return the entries exactly as created"
    );
    assert_eq!(
        loaded.record.meta, record.meta,
        "load must return the metadata exactly as created"
    );
    assert!(
        !loaded.touched,
        "a load without a touch must report touched = false"
    );

    let again = ok(store.load(&id, None).await, "load").expect("a live session must load again");
    assert_eq!(
        again.record, record,
        "a load without a touch must change nothing"
    );

    let with_deadline = Record {
        entries: entries(&[("k", b"v")]),
        meta: Meta::new(now_ms(), config.lifetime, Some(config.lifetime * 2)),
    };
    let id2 = create(store, &with_deadline).await;
    assert_eq!(
        load_live(store, &id2, "a session with an absolute deadline").await,
        with_deadline,
        "load must return a record with an absolute deadline exactly as created"
    );

    destroy_all(store, &[id, id2]).await;
}

/// `create` never overwrites: on a live id it answers `IdTaken` and the
/// stored record stays as it was; of many tasks racing to create one id,
/// exactly one gets `Created` and its record is the one stored.
pub async fn create_never_overwrites_a_live_session<S: SessionStore + Clone>(
    store: &S,
    config: &SuiteConfig,
) {
    let first = record(config.lifetime, entries(&[("who", b"first")]));
    let id = create(store, &first).await;
    let second = Record {
        entries: entries(&[("who", b"second"), ("extra", b"x")]),
        meta: Meta::new(now_ms(), config.lifetime * 2, None),
    };
    assert_eq!(
        ok(store.create(&id, &second).await, "create"),
        Created::IdTaken,
        "create on a live id must answer IdTaken"
    );
    assert_eq!(
        load_live(store, &id, "after a refused create").await,
        first,
        "a refused create must change nothing"
    );

    let raced = SessionId::generate();
    let tasks = config.tasks.max(2);
    let barrier = Arc::new(Barrier::new(tasks));
    let handles = (0..tasks)
        .map(|i| {
            let store = store.clone();
            let barrier = barrier.clone();
            let mine = record(config.lifetime, entries(&[("who", &value(&i))]));
            tokio::spawn(async move {
                barrier.wait().await;
                ok(store.create(&raced, &mine).await, "create") == Created::Created
            })
        })
        .collect();
    let winners: Vec<usize> = join_all(handles)
        .await
        .into_iter()
        .enumerate()
        .filter_map(|(i, won)| won.then_some(i))
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one of {tasks} tasks racing to create one id must get Created; these did: {winners:?}"
    );
    let stored: usize = decode(
        &load_live(store, &raced, "after racing creates")
            .await
            .entries,
        "who",
    );
    assert_eq!(
        stored, winners[0],
        "the stored record must be the one whose create answered Created"
    );

    destroy_all(store, &[id, raced]).await;
}

/// `destroy` deletes a session and nothing else; destroying it again, or
/// destroying an id that was never issued, is `Ok`; the id can be created
/// afresh afterwards.
pub async fn destroy_deletes_and_absent_is_ok<S: SessionStore + Clone>(
    store: &S,
    config: &SuiteConfig,
) {
    let a = create(store, &record(config.lifetime, entries(&[("k", b"a")]))).await;
    let b = create(store, &record(config.lifetime, entries(&[("k", b"b")]))).await;

    ok(store.destroy(&a).await, "destroy");
    assert_absent(store, &a, "after destroy").await;
    assert_eq!(
        load_live(store, &b, "after destroying another session")
            .await
            .entries
            .get("k"),
        Some(&b"b"[..]),
        "destroying one session must not touch another"
    );
    ok(
        store.destroy(&a).await,
        "destroy of an id destroyed already",
    );
    ok(
        store.destroy(&SessionId::generate()).await,
        "destroy of a never-issued id",
    );

    let again = record(config.lifetime, entries(&[("k", b"again")]));
    create_at(store, &a, &again).await;
    assert_eq!(
        load_live(store, &a, "re-created after destroy")
            .await
            .entries,
        again.entries,
        "a destroyed id must be free for a new session"
    );

    destroy_all(store, &[a, b]).await;
}

/// Strictness: an id the store never issued is absent for every operation.
/// `load` answers `Ok(None)` (with or without a touch), `apply` answers
/// `Gone` (a fenced one `Gone` or `LockLost`) and creates nothing, `lock`
/// answers `Absent`, `renew_lock` answers `false`, `unlock` and `destroy`
/// are `Ok`, and `change_id` answers `Gone` without creating the new id.
///
/// Holds for a store that forgets everything, such as
/// [`NoopStore`](crate::store::NoopStore).
pub async fn unknown_id_is_absent<S: SessionStore + Clone>(store: &S, config: &SuiteConfig) {
    let id = SessionId::generate();
    let other = store.new_id_for(&id);
    let token = LockToken::generate();

    assert!(
        ok(store.load(&id, None).await, "load").is_none(),
        "a never-issued id must load as None"
    );
    assert!(
        ok(store.load(&id, Some(Touch::always())).await, "load").is_none(),
        "a never-issued id must load as None, also with a touch"
    );
    assert_eq!(
        apply(store, &id, &set("k", b"v"), None).await,
        Applied::Gone,
        "apply to a never-issued id must answer Gone"
    );
    for release in [false, true] {
        let fenced = apply(store, &id, &set("k", b"v"), fence(&token, release)).await;
        assert!(
            matches!(fenced, Applied::Gone | Applied::LockLost),
            "a fenced apply (release = {release}) to a never-issued id must answer Gone or LockLost, got {fenced:?}"
        );
    }
    assert_absent(store, &id, "apply must never create a session").await;

    assert_eq!(
        lock(store, &id, config.lock_ttl).await,
        Locked::Absent,
        "lock on a never-issued id must answer Absent"
    );
    assert!(
        !renew(store, &id, &token, config.lock_ttl).await,
        "renew_lock on a never-issued id must answer false"
    );
    ok(
        store.unlock(&id, &token).await,
        "unlock of a never-issued id",
    );

    assert_eq!(
        ok(store.change_id(&id, &other, None).await, "change_id"),
        IdChanged::Gone,
        "change_id from a never-issued id must answer Gone"
    );
    let fenced = ok(
        store.change_id(&id, &other, Some(&token)).await,
        "change_id",
    );
    assert!(
        matches!(fenced, IdChanged::Gone | IdChanged::LockLost),
        "a fenced change_id from a never-issued id must answer Gone or LockLost, got {fenced:?}"
    );
    assert_absent(
        store,
        &other,
        "change_id from a never-issued id must create nothing",
    )
    .await;

    ok(store.destroy(&id).await, "destroy of a never-issued id");
    assert_absent(store, &id, "after all of the above").await;
}

/// No resurrection: once `destroy` has returned, no write brings the session
/// back. Afterwards `apply` answers `Gone`, `lock` answers `Absent` and
/// `change_id` answers `Gone`; and when many tasks keep applying deltas while
/// the session is destroyed, every apply that *started* after `destroy`
/// returned answers `Gone`, and the session stays absent once all of them
/// finished.
///
/// Asserts nothing about the session before the destroy, so it holds for a
/// store that forgets everything, such as
/// [`NoopStore`](crate::store::NoopStore).
pub async fn destroyed_session_stays_gone<S: SessionStore + Clone>(
    store: &S,
    config: &SuiteConfig,
) {
    let id = SessionId::generate();
    let _ = ok(
        store
            .create(&id, &record(config.lifetime, entries(&[("k", b"v")])))
            .await,
        "create",
    );
    ok(store.destroy(&id).await, "destroy");
    assert_eq!(
        apply(store, &id, &set("k", b"again"), None).await,
        Applied::Gone,
        "apply after destroy must answer Gone"
    );
    assert_absent(
        store,
        &id,
        "apply after destroy must not bring the session back",
    )
    .await;
    assert_eq!(
        lock(store, &id, config.lock_ttl).await,
        Locked::Absent,
        "lock after destroy must answer Absent"
    );
    let moved = store.new_id_for(&id);
    assert_eq!(
        ok(store.change_id(&id, &moved, None).await, "change_id"),
        IdChanged::Gone,
        "change_id after destroy must answer Gone"
    );
    assert_absent(store, &moved, "change_id after destroy must create nothing").await;

    let writers = config.tasks.max(2);
    for round in 0..4 {
        let id = SessionId::generate();
        let _ = ok(
            store
                .create(&id, &record(config.lifetime, entries(&[("k", b"v")])))
                .await,
            "create",
        );
        let destroyed = Arc::new(AtomicBool::new(false));
        let barrier = Arc::new(Barrier::new(writers + 1));
        let handles = (0..writers)
            .map(|w| {
                let store = store.clone();
                let destroyed = destroyed.clone();
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    let key = format!("writer-{w}");
                    for i in 0..100_000u32 {
                        let after_destroy = destroyed.load(Ordering::SeqCst);
                        match apply(&store, &id, &set(&key, &value(&i)), None).await {
                            Applied::Gone => return,
                            Applied::Applied(_) => assert!(
                                !after_destroy,
                                "round {round}: an apply that started after destroy returned answered Applied: the session was resurrected"
                            ),
                            Applied::LockLost => {
                                panic!("an apply without a fence must never answer LockLost")
                            }
                        }
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        barrier.wait().await;
        for _ in 0..round {
            tokio::task::yield_now().await;
        }
        ok(store.destroy(&id).await, "destroy");
        destroyed.store(true, Ordering::SeqCst);
        join_all(handles).await;

        if let Some(record) = super::support::load(store, &id).await {
            panic!(
                "round {round}: after destroy returned and all racing applies finished, the session loads again with keys {:?}",
                keys(&record.entries)
            );
        }
        assert_eq!(
            lock(store, &id, config.lock_ttl).await,
            Locked::Absent,
            "round {round}: lock after destroy and racing applies must answer Absent"
        );
    }
}
