//! `RedisStore` on a real three-master Redis Cluster: the conformance suite, slots, round trips and the cross-slot `change_id`.
#![cfg(feature = "cluster")]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use sessionkit_core::record::{Delta, Meta, Record, Touch, now_ms};
use sessionkit_core::store::{Applied, Created, Fence, IdChanged, Locked, SessionStore};
use sessionkit_core::testkit::SuiteConfig;
use sessionkit_core::{LockToken, SessionId};
use sessionkit_redis::RedisStore;

/// As in `standalone.rs`: Redis expires to the millisecond.
fn timing() -> SuiteConfig {
    SuiteConfig::default()
        .with_short_lifetime(Duration::from_millis(1000))
        .with_short_lock_ttl(Duration::from_millis(250))
        .with_slack(Duration::from_millis(300))
}

async fn store() -> RedisStore {
    RedisStore::builder()
        .connect_cluster(support::shared_cluster().urls())
        .await
        .expect("connect to the shared cluster")
}

fn record() -> Record {
    Record {
        entries: [("k", b"v".to_vec())].into_iter().collect(),
        meta: Meta::new(now_ms(), Duration::from_secs(60), None),
    }
}

fn set(key: &str, value: &[u8]) -> Delta {
    let mut delta = Delta::default();
    delta.set(key, value.to_vec());
    delta
}

// The whole contract on the cluster, one test per line of the output.
sessionkit_core::conformance_tests!(conformance, store().await, config = timing());

/// A session's data and lock keys share one slot (the hash tag), and
/// sessions spread over every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessions_keys_share_a_slot_and_sessions_spread() {
    let cluster = support::shared_cluster();
    let store = store().await;
    assert!(store.is_cluster());
    let node = &cluster.nodes()[0];
    let mut slots = Vec::new();
    for _ in 0..30 {
        let (data, lock) = store.keys_of(&SessionId::generate());
        let a = node.cli(&["CLUSTER", "KEYSLOT", &data]);
        let b = node.cli(&["CLUSTER", "KEYSLOT", &lock]);
        assert_eq!(a, b, "{data} and {lock} must share a slot");
        slots.push(a.trim().parse::<u16>().unwrap());
    }
    // Three masters own a third of the slots each.
    let thirds: std::collections::BTreeSet<u16> = slots.iter().map(|s| s / 5462).collect();
    assert!(
        thirds.len() > 1,
        "30 random sessions all in one third: {slots:?}"
    );
}

/// Runs one store operation and returns its result with the commands that
/// clients sent to any node meanwhile.
macro_rules! counted {
    ($monitor:expr, $op:expr) => {{
        let start = $monitor.mark();
        let result = $op.await.expect("store operation");
        let commands = $monitor.since(&start);
        (
            result,
            support::tally(commands.iter().map(|(_, c)| c.as_str())),
        )
    }};
}

fn commands(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(c, n)| ((*c).to_owned(), *n)).collect()
}

fn evalsha(n: u64) -> BTreeMap<String, u64> {
    commands(&[("evalsha", n)])
}

/// Round trips on the cluster, counted by every node's `MONITOR`: each
/// operation is one command, except a load whose touch is due (`HGETALL`,
/// then the touch script) and `change_id` between two slots: two (take on
/// the old slot, put on the new one), three when the new id is taken (the
/// session is put back), one when it answers `Gone` or `LockLost`. A
/// cluster of its own, so no other test adds to the counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trips_on_a_cluster() {
    let cluster = support::RedisCluster::start();
    let store = RedisStore::builder()
        .connect_cluster(cluster.urls())
        .await
        .unwrap();
    let monitor = cluster.monitor();
    let ttl = Duration::from_secs(30);
    let mut table = Vec::new();

    for round in 0..2 {
        let measure = round == 1;
        let mut row =
            |name: &'static str, got: BTreeMap<String, u64>, want: BTreeMap<String, u64>| {
                if measure {
                    table.push((name, got, want));
                }
            };
        let id = SessionId::generate();
        let (created, c) = counted!(monitor, store.create(&id, &record()));
        assert_eq!(created, Created::Created);
        row("create", c, evalsha(1));
        let (loaded, c) = counted!(monitor, store.load(&id, None));
        assert!(loaded.is_some());
        row("load", c, commands(&[("hgetall", 1)]));
        let (loaded, c) = counted!(monitor, store.load(&id, Some(Touch::always())));
        assert!(loaded.unwrap().touched);
        row(
            "load + touch (due)",
            c,
            commands(&[("hgetall", 1), ("evalsha", 1)]),
        );
        let (applied, c) = counted!(monitor, store.apply(&id, &set("a", b"1"), None));
        assert!(matches!(applied, Applied::Applied(_)));
        row("apply", c, evalsha(1));
        let (locked, c) = counted!(monitor, store.lock(&id, ttl));
        let Locked::Acquired { token, .. } = locked else {
            panic!("lock: {locked:?}")
        };
        row("lock", c, evalsha(1));
        let (renewed, c) = counted!(monitor, store.renew_lock(&id, &token, ttl));
        assert!(renewed);
        row("renew_lock", c, evalsha(1));

        let new = SessionId::generate();
        let (changed, c) = counted!(monitor, store.change_id(&id, &new, Some(&token)));
        assert!(matches!(changed, IdChanged::Changed(_)), "{changed:?}");
        row("change_id (fenced, across slots)", c, evalsha(2));

        let fence = Fence {
            token: &token,
            release: true,
        };
        let (applied, c) = counted!(monitor, store.apply(&new, &set("b", b"2"), Some(fence)));
        assert!(matches!(applied, Applied::Applied(_)));
        row("apply (fenced + release)", c, evalsha(1));

        let newer = SessionId::generate();
        let (changed, c) = counted!(monitor, store.change_id(&new, &newer, None));
        assert!(matches!(changed, IdChanged::Changed(_)));
        row("change_id (across slots)", c, evalsha(2));

        let other = SessionId::generate();
        let _ = store.create(&other, &record()).await.unwrap();
        let (taken, c) = counted!(monitor, store.change_id(&newer, &other, None));
        assert_eq!(taken, IdChanged::IdTaken);
        row("change_id (new id taken: put back)", c, evalsha(3));

        let (gone, c) = counted!(
            monitor,
            store.change_id(&SessionId::generate(), &SessionId::generate(), None)
        );
        assert_eq!(gone, IdChanged::Gone);
        row("change_id (old id gone)", c, evalsha(1));

        let (lost, c) = counted!(
            monitor,
            store.change_id(&newer, &SessionId::generate(), Some(&LockToken::generate()))
        );
        assert_eq!(lost, IdChanged::LockLost);
        row("change_id (lock lost)", c, evalsha(1));

        let (locked, _) = counted!(monitor, store.lock(&newer, ttl));
        let Locked::Acquired { token, .. } = locked else {
            panic!("lock: {locked:?}")
        };
        let ((), c) = counted!(monitor, store.unlock(&newer, &token));
        row("unlock", c, evalsha(1));

        let ((), c) = counted!(monitor, store.destroy(&newer));
        row("destroy", c, commands(&[("del", 1)]));
        store.destroy(&other).await.unwrap();
    }

    let mut report = String::from("\nround trips per store operation (cluster):\n");
    for (name, got, _) in &table {
        report.push_str(&format!("  {name:<38} {got:?}\n"));
    }
    eprintln!("{report}");
    for (name, got, want) in table {
        assert_eq!(got, want, "{name}{report}");
    }
}

/// A `change_id` onto a taken id puts the session back where it was, with
/// its data, its expiry and its lock (same token, still held).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_id_onto_a_taken_id_puts_the_session_back() {
    let store = store().await;
    let a = SessionId::generate();
    let b = SessionId::generate();
    let a_record = record();
    assert_eq!(store.create(&a, &a_record).await.unwrap(), Created::Created);
    assert_eq!(store.create(&b, &record()).await.unwrap(), Created::Created);
    // Taking the lock refreshed the expiry: the record as it is now.
    let Locked::Acquired {
        token,
        record: locked,
    } = store.lock(&a, Duration::from_secs(30)).await.unwrap()
    else {
        panic!("lock")
    };
    assert_eq!(locked.entries, a_record.entries);
    assert_eq!(
        store.change_id(&a, &b, Some(&token)).await.unwrap(),
        IdChanged::IdTaken
    );
    let back = store.load(&a, None).await.unwrap().unwrap().record;
    assert_eq!(back, locked, "data and metadata restored exactly");
    assert_eq!(
        store.lock(&a, Duration::from_secs(1)).await.unwrap(),
        Locked::Held
    );
    assert!(
        store
            .renew_lock(&a, &token, Duration::from_secs(30))
            .await
            .unwrap(),
        "the lock is back with the same token"
    );
    store.destroy(&a).await.unwrap();
    store.destroy(&b).await.unwrap();
}
