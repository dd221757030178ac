//! Deltas: per-key merges, expiry refresh, the lifetime override, and many
//! concurrent writers.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Barrier;

use crate::record::{Delta, Touch};
use crate::store::SessionStore;

use super::SuiteConfig;
use super::support::{
    aged_record, applied, create, decode, destroy_all, entries, join_all, keys, load_live, ms, ok,
    record, set, value,
};

/// `apply` merges per key, on top of what is stored: two deltas that set
/// different keys both persist, whether applied one after the other or
/// concurrently from two tasks; a removal deletes only its key (removing a
/// missing key is fine); a delta that clears and then sets leaves exactly
/// the keys it sets; a delta that only clears leaves a live session with no
/// entries, which later deltas can fill again.
pub async fn apply_merges_per_key<S: SessionStore + Clone>(store: &S, config: &SuiteConfig) {
    let mut expected = entries(&[("a", b"1"), ("b", b"2"), ("keep", b"x")]);
    let id = create(store, &record(config.lifetime, expected.clone())).await;

    async fn step<S: SessionStore>(
        store: &S,
        id: &crate::SessionId,
        expected: &mut crate::record::Entries,
        delta: Delta,
        what: &str,
    ) {
        applied(store, id, &delta, None, what).await;
        expected.apply(&delta);
        let stored = load_live(store, id, what).await.entries;
        assert_eq!(
            stored, *expected,
            "{what}: the stored entries must be the earlier ones with exactly this delta applied"
        );
    }

    step(
        store,
        &id,
        &mut expected,
        set("a", b"10"),
        "a delta that sets an existing key",
    )
    .await;
    step(
        store,
        &id,
        &mut expected,
        set("c", b"3"),
        "a second delta that sets another key",
    )
    .await;

    for round in 0..8 {
        let barrier = Arc::new(Barrier::new(2));
        let deltas = [
            set(&format!("left-{round}"), &value(&round)),
            set(&format!("right-{round}"), &value(&round)),
        ];
        let handles = deltas
            .iter()
            .cloned()
            .map(|delta| {
                let store = store.clone();
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    applied(&store, &id, &delta, None, "one of two concurrent deltas").await;
                })
            })
            .collect();
        join_all(handles).await;
        for delta in &deltas {
            expected.apply(delta);
        }
        assert_eq!(
            load_live(store, &id, "after two concurrent deltas")
                .await
                .entries,
            expected,
            "round {round}: two concurrent deltas that set different keys must both persist"
        );
    }

    let mut remove = Delta::default();
    remove.remove("b");
    step(
        store,
        &id,
        &mut expected,
        remove,
        "a delta that removes one key",
    )
    .await;

    let mut missing = Delta::default();
    missing.remove("never-set");
    step(
        store,
        &id,
        &mut expected,
        missing,
        "a delta that removes a missing key",
    )
    .await;

    let mut mixed = Delta::default();
    mixed.set("f", b"6".to_vec());
    mixed.remove("a");
    mixed.set("c", b"33".to_vec());
    step(
        store,
        &id,
        &mut expected,
        mixed,
        "a delta that sets and removes several keys",
    )
    .await;

    let mut clear_then_set = Delta::default();
    clear_then_set.clear();
    clear_then_set.set("z", b"26".to_vec());
    step(
        store,
        &id,
        &mut expected,
        clear_then_set,
        "a delta that clears, then sets",
    )
    .await;
    assert_eq!(keys(&expected), ["z"]);

    let mut clear = Delta::default();
    clear.clear();
    step(
        store,
        &id,
        &mut expected,
        clear,
        "a delta that only clears (the session must stay live)",
    )
    .await;
    assert!(expected.is_empty());

    step(
        store,
        &id,
        &mut expected,
        set("y", b"25"),
        "a delta on a cleared session",
    )
    .await;

    destroy_all(store, &[id]).await;
}

/// `apply` refreshes the idle expiry and returns the session's metadata as it
/// then is, which is what a later load returns: a record last refreshed
/// 10 seconds ago gets its expiry moved forward, keeps its creation time and
/// lifetime. A delta with [`Delta::set_ttl`] (and no entries) changes the
/// idle lifetime in the metadata, marks the session
/// [remembered](crate::record::Meta::remembered), moves the expiry by the new
/// lifetime and leaves the entries alone; later applies, touches and a
/// `change_id` keep the new lifetime and the mark, and `create` keeps the
/// mark of a record that has it. A delta with [`Delta::reset_ttl`] sets the
/// lifetime it carries and removes the mark.
pub async fn apply_sets_ttl_and_refreshes_expiry<S: SessionStore + Clone>(
    store: &S,
    config: &SuiteConfig,
) {
    let ago = (config.lifetime / 2).min(Duration::from_secs(10));
    let created = aged_record(config.lifetime, ago, entries(&[("k", b"v")]));
    let id = create(store, &created).await;

    let meta = applied(
        store,
        &id,
        &set("k2", b"w"),
        None,
        "apply to a live session",
    )
    .await;
    assert!(
        meta.expires() >= created.meta.expires() + ms(ago) / 2,
        "apply must refresh the idle expiry: a session refreshed {ago:?} ago had expiry {}, after apply {}",
        created.meta.expires(),
        meta.expires()
    );
    assert_eq!(
        meta.created(),
        created.meta.created(),
        "apply must keep the creation time"
    );
    assert_eq!(
        meta.ttl_ms(),
        created.meta.ttl_ms(),
        "apply without set_ttl must keep the idle lifetime"
    );
    assert_eq!(
        meta.deadline(),
        None,
        "apply must not invent an absolute deadline"
    );
    assert!(
        !meta.remembered(),
        "a session without set_ttl must not be remembered"
    );
    assert_eq!(
        load_live(store, &id, "after apply").await.meta,
        meta,
        "the metadata apply returns must be what the store keeps"
    );

    let longer = config.lifetime * 2;
    let mut ttl = Delta::default();
    ttl.set_ttl(longer);
    let with_ttl = applied(store, &id, &ttl, None, "apply of a set_ttl delta").await;
    assert_eq!(
        with_ttl.ttl(),
        longer,
        "Delta::set_ttl must set the idle lifetime in the metadata"
    );
    assert!(
        with_ttl.remembered(),
        "Delta::set_ttl must mark the session remembered"
    );
    assert!(
        with_ttl.expires() >= meta.expires() + ms(config.lifetime) / 2,
        "the expiry must follow the new idle lifetime ({} before, {} after doubling the lifetime)",
        meta.expires(),
        with_ttl.expires()
    );
    let stored = load_live(store, &id, "after set_ttl").await;
    assert_eq!(
        stored.meta, with_ttl,
        "the metadata apply returns must be what the store keeps"
    );
    assert_eq!(
        stored.entries,
        entries(&[("k", b"v"), ("k2", b"w")]),
        "a delta with only set_ttl must leave the entries alone"
    );

    let later = applied(store, &id, &set("k3", b"x"), None, "apply after set_ttl").await;
    assert_eq!(
        later.ttl(),
        longer,
        "a later apply must keep the overridden lifetime"
    );
    let touched =
        ok(store.load(&id, Some(Touch::always())).await, "load").expect("a live session must load");
    assert_eq!(
        touched.record.meta.ttl(),
        longer,
        "a touch must keep the overridden lifetime"
    );
    assert!(
        later.remembered() && touched.record.meta.remembered(),
        "later applies and touches must keep the remembered mark"
    );
    let new = store.new_id_for(&id);
    match ok(store.change_id(&id, &new, None).await, "change_id") {
        crate::store::IdChanged::Changed(meta) => assert!(
            meta.remembered()
                && load_live(store, &new, "after change_id")
                    .await
                    .meta
                    .remembered(),
            "change_id must keep the remembered mark"
        ),
        other => panic!("change_id of a live session: {other:?}"),
    }

    let mut reset = Delta::default();
    reset.reset_ttl(config.lifetime);
    let forgotten = applied(store, &new, &reset, None, "apply of a reset_ttl delta").await;
    assert_eq!(
        (forgotten.ttl(), forgotten.remembered()),
        (config.lifetime, false),
        "Delta::reset_ttl must set the lifetime it carries and remove the remembered mark"
    );
    assert_eq!(
        load_live(store, &new, "after reset_ttl").await.meta,
        forgotten,
        "the metadata apply returns must be what the store keeps"
    );

    let mut remembered = aged_record(config.lifetime, Duration::ZERO, entries(&[("k", b"v")]));
    remembered.meta = remembered.meta.with_remembered(true);
    let born = create(store, &remembered).await;
    assert!(
        load_live(store, &born, "a remembered record")
            .await
            .meta
            .remembered(),
        "create must keep the remembered mark"
    );

    destroy_all(store, &[new, born]).await;
}

/// Lossless concurrent writes: `2 × tasks` tasks each apply, all at once, a
/// delta that sets its own key; afterwards every one of those keys is stored
/// with its value, next to the session's earlier entry. When they all set
/// one shared key at once, the stored value is one of theirs.
pub async fn concurrent_deltas_all_persist<S: SessionStore + Clone>(
    store: &S,
    config: &SuiteConfig,
) {
    let writers = config.tasks.max(1) * 2;
    let id = create(store, &record(config.lifetime, entries(&[("base", b"0")]))).await;

    let barrier = Arc::new(Barrier::new(writers));
    let handles = (0..writers)
        .map(|i| {
            let store = store.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                let own = set(&format!("writer-{i:03}"), &value(&i));
                let shared = set("shared", &value(&i));
                barrier.wait().await;
                applied(
                    &store,
                    &id,
                    &own,
                    None,
                    "a delta of one of many concurrent writers",
                )
                .await;
                barrier.wait().await;
                applied(
                    &store,
                    &id,
                    &shared,
                    None,
                    "a delta of one of many concurrent writers",
                )
                .await;
            })
        })
        .collect();
    join_all(handles).await;

    let stored = load_live(store, &id, "after many concurrent deltas")
        .await
        .entries;
    let missing: Vec<usize> = (0..writers)
        .filter(|i| stored.get(&format!("writer-{i:03}")) != Some(&value(i)[..]))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {writers} concurrent deltas on different keys were lost (writers {missing:?})",
        missing.len()
    );
    assert_eq!(
        stored.get("base"),
        Some(&b"0"[..]),
        "concurrent deltas must keep untouched keys"
    );
    let shared: usize = decode(&stored, "shared");
    assert!(
        shared < writers,
        "the shared key must hold the value of one of the writers, got {shared}"
    );
    assert_eq!(
        stored.len(),
        writers + 2,
        "no other keys may appear: {:?}",
        keys(&stored)
    );

    destroy_all(store, &[id]).await;
}
