//! Idle and absolute expiry, and the touch rule.

use std::time::Duration;

use tokio::time::Instant;

use crate::record::{Delta, Meta, Record, Touch, now_ms};
use crate::store::{Applied, IdChanged, Locked, SessionStore};

use super::SuiteConfig;
use super::support::{
    acquire, applied, apply, assert_absent, check_timing, create, create_at, destroy_all, entries,
    load_live, lock, ms, ok, record, renew, set, sleep_until,
};

/// Idle expiry: a session left alone for its idle lifetime is gone, for every
/// operation. After `short_lifetime + slack`: `load` (with or without a touch)
/// answers `None`, `apply` answers `Gone`, `lock` answers `Absent`,
/// `renew_lock` answers `false`, `change_id` from it answers `Gone`, while
/// `create` under its id succeeds and `change_id` onto its id succeeds (an
/// expired id is not live). A lock taken on the session goes with it: after
/// re-creating the id, `lock` acquires. A per-session lifetime set by
/// [`Delta::set_ttl`] governs the real expiry both ways: shortened, the
/// session expires by the new lifetime; lengthened, it outlives the old one.
pub async fn idle_expiry_removes_the_session<S: SessionStore + Clone>(
    store: &S,
    config: &SuiteConfig,
) {
    check_timing(config);
    let short = config.short_lifetime;
    let long = config.lifetime;
    let start = Instant::now();
    let plain = create(store, &record(short, entries(&[("k", b"plain")]))).await;
    let recreated = create(store, &record(short, entries(&[("k", b"old")]))).await;
    let moved_from = create(store, &record(short, entries(&[("k", b"from")]))).await;
    let mover = create(store, &record(long, entries(&[("k", b"mover")]))).await;
    let moved_onto = store.new_id_for(&mover);
    create_at(
        store,
        &moved_onto,
        &record(short, entries(&[("k", b"onto")])),
    )
    .await;
    let locked = create(store, &record(short, entries(&[("k", b"locked")]))).await;
    let shortened = create(store, &record(long, entries(&[("k", b"shortened")]))).await;
    let lengthened = create(store, &record(short, entries(&[("k", b"lengthened")]))).await;

    let mut to_short = Delta::default();
    to_short.set_ttl(short);
    applied(
        store,
        &shortened,
        &to_short,
        None,
        "set_ttl to a short lifetime",
    )
    .await;
    let mut to_long = Delta::default();
    to_long.set_ttl(long);
    applied(
        store,
        &lengthened,
        &to_long,
        None,
        "set_ttl to a long lifetime",
    )
    .await;
    let (token, _) = acquire(store, &locked, config.lock_ttl, "lock on a live session").await;

    for id in [
        &plain,
        &recreated,
        &moved_from,
        &moved_onto,
        &locked,
        &shortened,
        &lengthened,
    ] {
        load_live(store, id, "right after creation, well before expiry").await;
    }

    sleep_until(start, short + config.slack).await;

    assert_absent(store, &plain, "after the idle lifetime (plus slack) passed").await;
    assert!(
        ok(store.load(&plain, Some(Touch::always())).await, "load").is_none(),
        "an expired session must load as None, also with a touch (a touch must not revive it)"
    );
    assert_eq!(
        apply(store, &plain, &set("k", b"late"), None).await,
        Applied::Gone,
        "apply to an expired session must answer Gone"
    );
    assert_absent(store, &plain, "apply must not revive an expired session").await;
    assert_eq!(
        lock(store, &plain, config.lock_ttl).await,
        Locked::Absent,
        "lock on an expired session must answer Absent"
    );

    let fresh = record(long, entries(&[("k", b"new")]));
    create_at(store, &recreated, &fresh).await;
    assert_eq!(
        load_live(store, &recreated, "created under an expired id")
            .await
            .entries,
        fresh.entries,
        "create under an expired id must store the new record"
    );

    let target = store.new_id_for(&moved_from);
    assert_eq!(
        ok(
            store.change_id(&moved_from, &target, None).await,
            "change_id"
        ),
        IdChanged::Gone,
        "change_id from an expired session must answer Gone"
    );
    assert_absent(
        store,
        &target,
        "change_id from an expired session must create nothing",
    )
    .await;

    let changed = ok(
        store.change_id(&mover, &moved_onto, None).await,
        "change_id",
    );
    assert!(
        matches!(changed, IdChanged::Changed(_)),
        "change_id onto the id of an expired session must succeed, got {changed:?}"
    );
    assert_eq!(
        load_live(store, &moved_onto, "moved onto an expired id")
            .await
            .entries
            .get("k"),
        Some(&b"mover"[..]),
        "change_id onto an expired id must carry the moved session's data"
    );
    assert_absent(store, &mover, "the old id after change_id").await;

    assert_absent(store, &locked, "a locked session past its idle lifetime").await;
    assert!(
        !renew(store, &locked, &token, config.lock_ttl).await,
        "renew_lock on an expired session must answer false"
    );
    create_at(store, &locked, &record(long, entries(&[("k", b"again")]))).await;
    let (again, _) = acquire(
        store,
        &locked,
        config.lock_ttl,
        "the lock of an expired session must expire with it; after re-creating the id",
    )
    .await;
    ok(store.unlock(&locked, &again).await, "unlock");

    assert_absent(
        store,
        &shortened,
        "a session whose lifetime Delta::set_ttl shortened must expire by the new lifetime",
    )
    .await;
    load_live(
        store,
        &lengthened,
        "a session whose lifetime Delta::set_ttl lengthened must outlive its original lifetime",
    )
    .await;

    destroy_all(store, &[recreated, moved_onto, locked, lengthened]).await;
}

/// Sliding expiry: a session loaded with [`Touch::always`] every third of its
/// idle lifetime stays alive well past its original expiry; each such load
/// reports `touched == true`, moves [`Meta::expires`] forward and leaves the
/// entries alone. A later load without a touch leaves the expiry where the
/// last touch put it.
pub async fn touch_keeps_a_session_alive<S: SessionStore + Clone>(store: &S, config: &SuiteConfig) {
    check_timing(config);
    let short = config.short_lifetime;
    let start = Instant::now();
    let created = record(short, entries(&[("k", b"v")]));
    let id = create(store, &created).await;
    let mut expires = created.meta.expires();
    let period = short / 3;
    let mut n = 1;
    while period * n < short + config.slack {
        sleep_until(start, period * n).await;
        let loaded = ok(store.load(&id, Some(Touch::always())).await, "load")
            .unwrap_or_else(|| {
                panic!(
                    "a session touched every {period:?} must stay alive; it vanished {:?} after creation (idle lifetime {short:?})",
                    start.elapsed()
                )
            });
        assert!(
            loaded.touched,
            "a load with Touch::always() must refresh the expiry and report touched = true"
        );
        assert!(
            loaded.record.meta.expires() > expires,
            "a touch must move the expiry forward (it went from {expires} to {})",
            loaded.record.meta.expires()
        );
        assert_eq!(
            loaded.record.entries, created.entries,
            "a touch must not change the entries"
        );
        expires = loaded.record.meta.expires();
        n += 1;
    }
    sleep_until(start, short + config.slack).await;
    let record = load_live(store, &id, "past the original expiry, after touches").await;
    assert_eq!(
        record.meta.expires(),
        expires,
        "a load without a touch must leave the expiry where the last touch put it"
    );
    destroy_all(store, &[id]).await;
}

/// The touch threshold: with `Touch::when_remaining_below(0.5)`, loads while
/// more than half the idle lifetime remains (right after creation and at 30 %
/// of it) report `touched == false` and leave [`Meta::expires`] unchanged; a
/// load at 70 % reports `touched == true` and moves the expiry forward; the
/// next load finds the session fresh again and does not touch.
pub async fn touch_waits_for_the_threshold<S: SessionStore + Clone>(
    store: &S,
    config: &SuiteConfig,
) {
    check_timing(config);
    let short = config.short_lifetime;
    let touch = Touch::when_remaining_below(0.5).expect("0.5 is a valid share");
    let start = Instant::now();
    let created = record(short, entries(&[("k", b"v")]));
    let id = create(store, &created).await;
    let first = created.meta.expires();

    for (at, percent) in [(Duration::ZERO, 0), (short * 3 / 10, 30)] {
        sleep_until(start, at).await;
        let loaded = ok(store.load(&id, Some(touch)).await, "load")
            .unwrap_or_else(|| panic!("a session at {percent} % of its idle lifetime must load"));
        assert!(
            !loaded.touched,
            "a load at {percent} % of the idle lifetime, with the touch due below 50 % remaining, must not touch (touched = true)"
        );
        assert_eq!(
            loaded.record.meta.expires(),
            first,
            "a load at {percent} % of the idle lifetime must leave the expiry unchanged"
        );
    }

    sleep_until(start, short * 7 / 10).await;
    let loaded = ok(store.load(&id, Some(touch)).await, "load")
        .expect("a session at 70 % of its idle lifetime must load");
    assert!(
        loaded.touched,
        "a load at 70 % of the idle lifetime, with the touch due below 50 % remaining, must touch (touched = false)"
    );
    let moved = loaded.record.meta.expires();
    assert!(
        moved > first,
        "a due touch must move the expiry forward (it went from {first} to {moved})"
    );

    let again =
        ok(store.load(&id, Some(touch)).await, "load").expect("a touched session must load");
    assert!(
        !again.touched,
        "right after a touch the session has its full lifetime again, so the next load must not touch"
    );
    assert_eq!(
        again.record.meta.expires(),
        moved,
        "the touched expiry must be kept"
    );
    destroy_all(store, &[id]).await;
}

/// Absolute expiry: a session created with a long idle lifetime and a short
/// absolute lifetime has [`Meta::expires`] capped at its deadline; touches
/// (which then report `touched == false`), applies (also with
/// [`Delta::set_ttl`], or with a later [`Delta::cap_deadline`]) and
/// `change_id` never move it past the deadline and keep [`Meta::deadline`];
/// after the deadline (plus slack) the session is gone though it was touched
/// and written in between, also under its new id. A session without a
/// deadline gets one from a delta's `cap_deadline`, which caps its expiry
/// and ends it just the same.
pub async fn absolute_deadline_is_never_extended<S: SessionStore + Clone>(
    store: &S,
    config: &SuiteConfig,
) {
    check_timing(config);
    let short = config.short_lifetime;
    let start = Instant::now();
    let meta = Meta::new(now_ms(), config.lifetime, Some(short));
    let deadline = meta
        .deadline()
        .expect("an absolute lifetime gives a deadline");
    let written = create(
        store,
        &Record {
            entries: entries(&[("k", b"written")]),
            meta,
        },
    )
    .await;
    let moved = create(
        store,
        &Record {
            entries: entries(&[("k", b"moved")]),
            meta,
        },
    )
    .await;

    let uncapped = create(
        store,
        &record(config.lifetime, entries(&[("k", b"capped")])),
    )
    .await;
    let cap = now_ms() + ms(short);
    let mut capping = Delta::default();
    capping.cap_deadline(cap);
    let capped = applied(
        store,
        &uncapped,
        &capping,
        None,
        "apply of a cap_deadline delta",
    )
    .await;
    assert_eq!(
        (capped.deadline(), capped.expires()),
        (Some(cap), cap),
        "Delta::cap_deadline must give a session without one that deadline, and cap its expiry there"
    );
    assert_eq!(
        load_live(store, &uncapped, "after cap_deadline").await.meta,
        capped,
        "the metadata apply returns must be what the store keeps"
    );

    sleep_until(start, short / 5).await;
    let loaded = ok(store.load(&written, Some(Touch::always())).await, "load")
        .expect("a session before its absolute deadline must load");
    assert!(
        !loaded.touched,
        "a touch cannot move an expiry that sits at the absolute deadline, so it must report touched = false"
    );
    assert_eq!(
        loaded.record.meta.expires(),
        deadline,
        "a touch must not pass the absolute deadline"
    );
    assert_eq!(
        loaded.record.meta.deadline(),
        Some(deadline),
        "a touch must keep the deadline"
    );

    let after_set = applied(
        store,
        &written,
        &set("k2", b"v"),
        None,
        "apply before the deadline",
    )
    .await;
    assert_eq!(
        after_set.expires(),
        deadline,
        "apply must not move the expiry past the absolute deadline"
    );
    assert_eq!(
        after_set.deadline(),
        Some(deadline),
        "apply must keep the deadline"
    );
    let mut longer = Delta::default();
    longer.set_ttl(config.lifetime * 2);
    let after_ttl = applied(
        store,
        &written,
        &longer,
        None,
        "apply with set_ttl before the deadline",
    )
    .await;
    assert_eq!(
        after_ttl.expires(),
        deadline,
        "a longer idle lifetime must not move the expiry past the absolute deadline"
    );
    let mut later_cap = Delta::default();
    later_cap.cap_deadline(deadline + ms(config.lifetime));
    let after_cap = applied(
        store,
        &written,
        &later_cap,
        None,
        "apply with a cap_deadline later than the deadline",
    )
    .await;
    assert_eq!(
        (after_cap.deadline(), after_cap.expires()),
        (Some(deadline), deadline),
        "a later cap_deadline must not move the absolute deadline"
    );

    let new_id = store.new_id_for(&moved);
    match ok(store.change_id(&moved, &new_id, None).await, "change_id") {
        IdChanged::Changed(meta) => {
            assert_eq!(
                meta.expires(),
                deadline,
                "change_id must not move the expiry past the absolute deadline"
            );
            assert_eq!(
                meta.deadline(),
                Some(deadline),
                "change_id must keep the deadline"
            );
        }
        other => panic!("change_id of a live session must answer Changed, got {other:?}"),
    }

    sleep_until(start, short + config.slack).await;
    assert_absent(
        store,
        &written,
        "after the absolute deadline (plus slack), though touched and written before it",
    )
    .await;
    assert!(
        ok(store.load(&written, Some(Touch::always())).await, "load").is_none(),
        "a touch must not revive a session past its absolute deadline"
    );
    assert_eq!(
        apply(store, &written, &set("k", b"late"), None).await,
        Applied::Gone,
        "apply after the absolute deadline must answer Gone"
    );
    assert_absent(
        store,
        &new_id,
        "a session moved by change_id must keep its absolute deadline",
    )
    .await;
    assert_absent(
        store,
        &uncapped,
        "after a deadline set by cap_deadline (plus slack)",
    )
    .await;
    destroy_all(store, &[written, moved, new_id, uncapped]).await;
}
