//! Round trips per store operation, counted by the client, asserted and printed as a table.
//!
//! The numbers are those of the crate docs' table: every operation on a
//! session reads its one item and, when it changes it, writes it back with
//! a compare-and-swap.

mod common;

use std::time::Duration;

use common::{Memcached, builder, id_on};
use sessionkit_core::record::{Delta, Entries, Meta, Record, Touch, now_ms};
use sessionkit_core::store::{Applied, Created, Fence, IdChanged, Locked, SessionStore};
use sessionkit_core::{LockToken, SessionId};
use sessionkit_memcached::{MemcachedStore, Stats};

fn record(lifetime: Duration) -> Record {
    Record {
        entries: [("n", b"1".to_vec())].into_iter().collect::<Entries>(),
        meta: Meta::new(now_ms(), lifetime, None),
    }
}

fn set(key: &str) -> Delta {
    let mut delta = Delta::default();
    delta.set(key, b"2".to_vec());
    delta
}

struct Table {
    store: MemcachedStore,
    rows: Vec<(String, String, Stats, u64)>,
}

impl Table {
    /// Runs `f`, records what it sent, and checks the round trips.
    async fn row<T, F: Future<Output = T>>(
        &mut self,
        operation: &str,
        case: &str,
        expected: u64,
        f: F,
    ) -> T {
        let before = self.store.stats();
        let out = f.await;
        let used = self.store.stats().since(&before);
        self.rows
            .push((operation.into(), case.into(), used, expected));
        out
    }

    fn finish(self) {
        println!("\n| operation | case | round trips | commands | CAS retries |");
        println!("|---|---|---|---|---|");
        for (op, case, s, _) in &self.rows {
            println!(
                "| `{op}` | {case} | {} | {} | {} |",
                s.round_trips, s.commands, s.cas_conflicts
            );
        }
        let wrong: Vec<String> = self
            .rows
            .iter()
            .filter(|(_, _, s, expected)| s.round_trips != *expected)
            .map(|(op, case, s, expected)| {
                format!(
                    "{op} ({case}): {} round trips, expected {expected}",
                    s.round_trips
                )
            })
            .collect();
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
        assert!(
            self.rows
                .iter()
                .all(|(_, _, s, _)| s.cas_conflicts == 0 && s.failures == 0),
            "the measurements must run without conflicts or failures"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trips_per_operation() {
    let a = Memcached::start();
    let b = Memcached::start();
    let store = builder(&[&a, &b]).build().unwrap();
    store.ping().await.unwrap(); // open a connection to each server first
    let mut t = Table {
        store: store.clone(),
        rows: Vec::new(),
    };
    let life = Duration::from_secs(600);
    let ttl = Duration::from_secs(30);

    let id = id_on(&store, &a);
    let missing = SessionId::generate();
    let got = t
        .row(
            "load",
            "miss",
            1,
            store.load(&missing, Some(Touch::always())),
        )
        .await;
    assert!(got.unwrap().is_none());
    let created = t
        .row("create", "id free", 1, store.create(&id, &record(life)))
        .await;
    assert_eq!(created.unwrap(), Created::Created);
    let taken = t
        .row(
            "create",
            "id taken by a live session",
            2,
            store.create(&id, &record(life)),
        )
        .await;
    assert_eq!(taken.unwrap(), Created::IdTaken);

    let half = Touch::when_remaining_below(0.5).unwrap();
    let got = t
        .row("load", "hit, touch not due", 1, store.load(&id, Some(half)))
        .await;
    assert!(!got.unwrap().unwrap().touched);
    let got = t
        .row("load", "hit, no touch asked", 1, store.load(&id, None))
        .await;
    assert!(!got.unwrap().unwrap().touched);
    let got = t
        .row(
            "load",
            "hit, touch due",
            2,
            store.load(&id, Some(Touch::always())),
        )
        .await;
    assert!(got.unwrap().unwrap().touched);

    let applied = t
        .row("apply", "unfenced", 2, store.apply(&id, &set("a"), None))
        .await;
    assert!(matches!(applied.unwrap(), Applied::Applied(_)));
    let gone = t
        .row(
            "apply",
            "session gone",
            1,
            store.apply(&missing, &set("a"), None),
        )
        .await;
    assert_eq!(gone.unwrap(), Applied::Gone);

    let locked = t
        .row("lock", "free: acquired", 2, store.lock(&id, ttl))
        .await;
    let Locked::Acquired { token, .. } = locked.unwrap() else {
        panic!("lock must be acquired")
    };
    let held = t
        .row("lock", "held by another token", 1, store.lock(&id, ttl))
        .await;
    assert_eq!(held.unwrap(), Locked::Held);
    let renewed = t
        .row("renew_lock", "owner", 2, store.renew_lock(&id, &token, ttl))
        .await;
    assert!(renewed.unwrap());
    let stranger = LockToken::generate();
    let refused = t
        .row(
            "renew_lock",
            "not the owner",
            1,
            store.renew_lock(&id, &stranger, ttl),
        )
        .await;
    assert!(!refused.unwrap());
    let fence = Some(Fence {
        token: &token,
        release: false,
    });
    let applied = t
        .row(
            "apply",
            "fenced, lock kept",
            2,
            store.apply(&id, &set("b"), fence),
        )
        .await;
    assert!(matches!(applied.unwrap(), Applied::Applied(_)));
    let lost = t
        .row(
            "apply",
            "fenced, lock lost",
            1,
            store.apply(
                &id,
                &set("b"),
                Some(Fence {
                    token: &stranger,
                    release: false,
                }),
            ),
        )
        .await;
    assert_eq!(lost.unwrap(), Applied::LockLost);
    let fence = Some(Fence {
        token: &token,
        release: true,
    });
    let applied = t
        .row(
            "apply",
            "fenced, commit + release",
            2,
            store.apply(&id, &set("c"), fence),
        )
        .await;
    assert!(matches!(applied.unwrap(), Applied::Applied(_)));

    let locked = t
        .row("lock", "free again: acquired", 2, store.lock(&id, ttl))
        .await;
    let Locked::Acquired { token, .. } = locked.unwrap() else {
        panic!("lock must be acquired after release")
    };
    t.row("unlock", "owner", 2, store.unlock(&id, &token))
        .await
        .unwrap();
    t.row("unlock", "not the owner", 1, store.unlock(&id, &stranger))
        .await
        .unwrap();

    let short = Duration::from_millis(50);
    let Locked::Acquired { .. } = store.lock(&id, short).await.unwrap() else {
        panic!("lock must be acquired")
    };
    tokio::time::sleep(short * 2).await;
    let locked = t
        .row("lock", "over an expired lock", 2, store.lock(&id, ttl))
        .await;
    let Locked::Acquired { token, .. } = locked.unwrap() else {
        panic!("an expired lock must be taken over")
    };
    store.unlock(&id, &token).await.unwrap();
    let absent = t
        .row("lock", "no session", 1, store.lock(&missing, ttl))
        .await;
    assert_eq!(absent.unwrap(), Locked::Absent);

    let brief = id_on(&store, &a);
    assert_eq!(
        store
            .create(&brief, &record(Duration::from_millis(30)))
            .await
            .unwrap(),
        Created::Created
    );
    tokio::time::sleep(Duration::from_millis(60)).await;
    let replaced = t
        .row(
            "create",
            "over an expired item not yet dropped",
            3,
            store.create(&brief, &record(life)),
        )
        .await;
    assert_eq!(replaced.unwrap(), Created::Created);
    store.destroy(&brief).await.unwrap();

    let same = id_on(&store, &a);
    let moved = t
        .row(
            "change_id",
            "unfenced, same server (read, copy, commit, finish)",
            4,
            store.change_id(&id, &same, None),
        )
        .await;
    assert!(matches!(moved.unwrap(), IdChanged::Changed(_)));
    let other = id_on(&store, &b);
    let moved = t
        .row(
            "change_id",
            "unfenced, other server",
            4,
            store.change_id(&same, &other, None),
        )
        .await;
    assert!(matches!(moved.unwrap(), IdChanged::Changed(_)));
    let id_b_live = id_on(&store, &b);
    assert_eq!(
        store.create(&id_b_live, &record(life)).await.unwrap(),
        Created::Created
    );
    let Locked::Acquired { token, .. } = store.lock(&other, ttl).await.unwrap() else {
        panic!("lock must be acquired")
    };
    let target = id_on(&store, &b);
    let lost = t
        .row(
            "change_id",
            "fenced, lock lost",
            1,
            store.change_id(&other, &target, Some(&stranger)),
        )
        .await;
    assert_eq!(lost.unwrap(), IdChanged::LockLost);
    let taken = t
        .row(
            "change_id",
            "new id taken (read, add refused, read the new id)",
            3,
            store.change_id(&other, &id_b_live, None),
        )
        .await;
    assert_eq!(taken.unwrap(), IdChanged::IdTaken);
    let moved = t
        .row(
            "change_id",
            "fenced, same server",
            4,
            store.change_id(&other, &target, Some(&token)),
        )
        .await;
    assert!(matches!(moved.unwrap(), IdChanged::Changed(_)));

    t.row("destroy", "live session", 1, store.destroy(&target))
        .await
        .unwrap();
    t.row("destroy", "absent id", 1, store.destroy(&missing))
        .await
        .unwrap();
    store.destroy(&id_b_live).await.unwrap();

    t.finish();
}
