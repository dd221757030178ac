//! `RedisStore` on a real three-master Redis Cluster: the conformance suite, slots, round trips, and `change_id` within one slot, also while other nodes refuse writes.
#![cfg(feature = "cluster")]

use sessionkit_test_servers::redis as support;

use std::collections::BTreeMap;
use std::time::Duration;

use sessionkit_core::owner::{Owner, OwnerCap, OwnerIndex, OwnerSet, SessionHandle, WhenFull};
use sessionkit_core::record::{Record, Touch};
use sessionkit_core::store::{Applied, Created, Fence, IdChanged, Locked, SessionStore};
use sessionkit_core::testkit::SuiteConfig;
use sessionkit_core::testkit::fixtures::{self, set};
use sessionkit_core::{LockToken, SessionId};
use sessionkit_redis::RedisStore;

async fn store() -> RedisStore {
    RedisStore::builder()
        .connect_cluster(support::shared_cluster().urls())
        .await
        .expect("connect to the shared cluster")
}

/// A session of one entry, `k = v`, with a minute's idle lifetime.
fn record() -> Record {
    fixtures::record(Duration::from_secs(60), fixtures::entries(&[("k", b"v")]))
}

// The whole contract on the cluster, one test per line of the output.
sessionkit_core::conformance_tests!(
    conformance,
    store().await,
    config = SuiteConfig::millisecond_clock()
);

// The owner index, with the index in its own slot: every check of the
// testkit's.
sessionkit_core::owner_index_tests!(owners, store().await);

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
/// operation is one command, except a load whose touch is due (`GET`,
/// then the touch script); `change_id` too, onto an id from `new_id_for`
/// (one script on the old id's slot); owner operations, one command per
/// step. A cluster of its own, so no other test adds to the counts.
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
        row("create", c, commands(&[("set", 1)]));
        let (loaded, c) = counted!(monitor, store.load(&id, None));
        assert!(loaded.is_some());
        row("load", c, commands(&[("get", 1)]));
        let (loaded, c) = counted!(monitor, store.load(&id, Some(Touch::always())));
        assert!(loaded.unwrap().touched);
        row(
            "load + touch (due)",
            c,
            commands(&[("get", 1), ("evalsha", 1)]),
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

        let new = store.new_id_for(&id);
        let (changed, c) = counted!(monitor, store.change_id(&id, &new, Some(&token)));
        assert!(matches!(changed, IdChanged::Changed(_)), "{changed:?}");
        row("change_id (fenced)", c, evalsha(1));

        let fence = Fence {
            token: &token,
            release: true,
        };
        let (applied, c) = counted!(monitor, store.apply(&new, &set("b", b"2"), Some(fence)));
        assert!(matches!(applied, Applied::Applied(_)));
        row("apply (fenced + release)", c, evalsha(1));

        let newer = store.new_id_for(&new);
        let (changed, c) = counted!(monitor, store.change_id(&new, &newer, None));
        assert!(matches!(changed, IdChanged::Changed(_)));
        row("change_id", c, evalsha(1));

        let other = store.new_id_for(&newer);
        let _ = store.create(&other, &record()).await.unwrap();
        let (taken, c) = counted!(monitor, store.change_id(&newer, &other, None));
        assert_eq!(taken, IdChanged::IdTaken);
        row("change_id (new id taken)", c, evalsha(1));

        let never = SessionId::generate();
        let (gone, c) = counted!(
            monitor,
            store.change_id(&never, &store.new_id_for(&never), None)
        );
        assert_eq!(gone, IdChanged::Gone);
        row("change_id (old id gone)", c, evalsha(1));

        let (lost, c) = counted!(
            monitor,
            store.change_id(
                &newer,
                &store.new_id_for(&newer),
                Some(&LockToken::generate())
            )
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

        // Owners: each step one command on its slot (see the crate docs).
        let ada = Owner::new(format!("ada-{}", SessionId::generate().short_hash())).unwrap();
        let first = SessionId::generate();
        let _ = store.create(&first, &record()).await.unwrap();
        let (set, c) = counted!(
            monitor,
            store.set_owner(&first, &ada, &SessionHandle::generate(), None, None)
        );
        assert!(matches!(set, OwnerSet::Set { .. }), "{set:?}");
        row("set_owner (no cap)", c, evalsha(3));
        let (listed, c) = counted!(monitor, store.sessions_of(&ada));
        assert_eq!(listed.len(), 1);
        row(
            "sessions_of (1 session)",
            c,
            commands(&[("hgetall", 1), ("evalsha", 1)]),
        );
        let second = SessionId::generate();
        let _ = store.create(&second, &record()).await.unwrap();
        let cap = OwnerCap {
            max: std::num::NonZeroU32::MIN,
            when_full: WhenFull::EndLeastRecent,
        };
        let (set, c) = counted!(
            monitor,
            store.set_owner(&second, &ada, &SessionHandle::generate(), None, Some(cap))
        );
        assert!(
            matches!(&set, OwnerSet::Set { ended } if ended.len() == 1),
            "{set:?}"
        );
        row(
            "set_owner (cap of 1, ends 1)",
            c,
            commands(&[("hgetall", 1), ("evalsha", 5)]),
        );
        let (revoked, c) = counted!(monitor, store.revoke_all(&ada, None));
        assert_eq!(revoked, 1);
        // The mark the cap left on the first session is under a minute old:
        // its session is ended again (a no-op here), as a retry would.
        row("revoke_all (1 session + 1 recent mark)", c, evalsha(3));
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

/// `new_id_for` draws ids whose keys hash, by the cluster's own
/// `CLUSTER KEYSLOT`, to the slot of the old id's keys; and `change_id`
/// onto an id of another slot is refused before anything is sent, with
/// nothing changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_ids_share_the_old_ids_slot_and_other_slots_are_refused() {
    let cluster = support::shared_cluster();
    let store = store().await;
    let node = &cluster.nodes()[0];
    let slot = |key: &str| node.cli(&["CLUSTER", "KEYSLOT", key]).trim().to_owned();
    for _ in 0..5 {
        let old = SessionId::generate();
        let new = store.new_id_for(&old);
        assert_ne!(new, old);
        let ((old_data, old_lock), (new_data, new_lock)) =
            (store.keys_of(&old), store.keys_of(&new));
        assert_eq!(
            slot(&old_data),
            slot(&new_data),
            "{old_data} and {new_data}"
        );
        assert_eq!(slot(&old_lock), slot(&new_lock));
    }

    let old = SessionId::generate();
    assert_eq!(
        store.create(&old, &record()).await.unwrap(),
        Created::Created
    );
    let elsewhere = loop {
        let id = SessionId::generate();
        if slot(&store.keys_of(&id).0) != slot(&store.keys_of(&old).0) {
            break id;
        }
    };
    let err = store.change_id(&old, &elsewhere, None).await.unwrap_err();
    assert_eq!(err.kind(), sessionkit_core::ErrorKind::InvalidId, "{err}");
    assert!(
        store.load(&old, None).await.unwrap().is_some(),
        "nothing moved"
    );
    assert!(store.load(&elsewhere, None).await.unwrap().is_none());
    store.destroy(&old).await.unwrap();
}

/// The node that holds `id`'s session (its keys answer `EXISTS` there,
/// `MOVED` elsewhere), by index.
fn owner(cluster: &support::RedisCluster, store: &RedisStore, id: &SessionId) -> usize {
    let (data, _) = store.keys_of(id);
    let owners: Vec<usize> = (0..cluster.nodes().len())
        .filter(|&i| cluster.nodes()[i].cli(&["EXISTS", &data]).trim() == "1")
        .collect();
    assert_eq!(owners.len(), 1, "{data} on nodes {owners:?}");
    owners[0]
}

/// Where a session lives after a regenerate: `(old id live, new id live)`.
async fn live(store: &RedisStore, old: &SessionId, new: &SessionId) -> (bool, bool) {
    (
        store.load(old, None).await.unwrap().is_some(),
        store.load(new, None).await.unwrap().is_some(),
    )
}

/// The outside review's scenario: the nodes that do not hold the session
/// refuse writes (`CLIENT PAUSE 3000 WRITE`), then the user logs in
/// (`regenerate`). Before, `change_id` deleted the old id, then timed out
/// writing the copy on another node: the request failed and the session was
/// under no id the client had. Now the new id is in the old id's slot, so
/// the move is one script on the node that holds the session, which the
/// pause does not touch: the regenerate succeeds at once, and the session
/// is under the new id only. Whatever the outcome, it must be under exactly
/// one id, and the old one if the regenerate failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regenerate_while_other_nodes_refuse_writes_keeps_exactly_one_id() {
    let cluster = support::RedisCluster::start();
    let store = RedisStore::builder()
        .response_timeout(Duration::from_millis(500))
        .connect_cluster(cluster.urls())
        .await
        .unwrap();
    let factory = sessionkit_core::SessionFactory::new(
        store.clone(),
        sessionkit_core::SessionConfig::default(),
    );
    for fenced in [false, true] {
        let old = SessionId::generate();
        assert_eq!(
            store.create(&old, &record()).await.unwrap(),
            Created::Created
        );

        let session = factory.request(old);
        if fenced {
            session.lock().await.unwrap();
        } else {
            assert!(session.has("k").await.unwrap());
        }
        let home = owner(&cluster, &store, &old);
        for (i, node) in cluster.nodes().iter().enumerate() {
            if i != home {
                assert_eq!(node.cli(&["CLIENT", "PAUSE", "3000", "WRITE"]).trim(), "OK");
            }
        }
        let result = session.regenerate().await;
        let new = session.id().expect("an id");
        for node in cluster.nodes() {
            node.cli(&["CLIENT", "UNPAUSE"]);
        }
        // Let a write that was held by the pause land before looking.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let where_ = live(&store, &old, &new).await;
        match &result {
            Ok(()) => assert_eq!(where_, (false, true), "regenerated (fenced: {fenced})"),
            Err(err) => assert_eq!(
                where_,
                (true, false),
                "regenerate failed ({err}), so the client keeps the old id (fenced: {fenced})"
            ),
        }
        assert!(
            result.is_ok(),
            "the move touches only the session's node: {result:?}"
        );
        assert_ne!(new, old);
        if fenced {
            session.commit().await.unwrap();
        }
        store.destroy(&new).await.unwrap();
    }
}

/// When the node that holds the session refuses writes, the regenerate
/// fails (the script times out) and the session stays under the old id,
/// the one the client keeps; the new id holds nothing, also after the pause
/// ends (a script is atomic: it runs whole or not at all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regenerate_that_fails_leaves_the_session_under_the_old_id() {
    let cluster = support::RedisCluster::start();
    let store = RedisStore::builder()
        .response_timeout(Duration::from_millis(300))
        .connect_cluster(cluster.urls())
        .await
        .unwrap();
    let old = SessionId::generate();
    assert_eq!(
        store.create(&old, &record()).await.unwrap(),
        Created::Created
    );
    let home = owner(&cluster, &store, &old);
    let new = store.new_id_for(&old);
    cluster.nodes()[home].cli(&["CLIENT", "PAUSE", "1500", "WRITE"]);
    let result = store.change_id(&old, &new, None).await;
    // The pause ends; a script that was only held runs now, whole.
    tokio::time::sleep(Duration::from_millis(1700)).await;
    let where_ = live(&store, &old, &new).await;
    match result {
        Ok(changed) => panic!("change_id against a paused node answered {changed:?}"),
        Err(_) => assert!(
            // redis-rs may retry the script once the pause ends; then it
            // moved, atomically, and the new id alone holds it.
            where_ == (true, false) || where_ == (false, true),
            "exactly one id must hold the session, got (old, new) = {where_:?}"
        ),
    }
    store.destroy(&old).await.unwrap();
    store.destroy(&new).await.unwrap();
}

/// Runs `redis-cli` with `args` on the node that holds `key`'s slot (the
/// others answer `MOVED`).
fn cli_at(cluster: &support::RedisCluster, key: &str, args: &[&str]) -> String {
    let mut answers = cluster
        .nodes()
        .iter()
        .map(|node| node.cli(args))
        .filter(|out| !out.contains("MOVED"));
    let answer = answers
        .next()
        .unwrap_or_else(|| panic!("no node holds {key}"));
    assert!(answers.next().is_none(), "two nodes hold {key}");
    answer.trim().to_owned()
}

/// In a cluster an owned session's index lives in the owner's slot, so
/// `change_id` moves the index entry in a second step: the entry follows
/// the session even when a repair dropped it in between, and a revocation
/// that marked it in between ends the session under its new id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owned_sessions_entry_follows_change_id_unless_revoked_in_between() {
    let cluster = support::shared_cluster();
    let store = store().await;
    let name = format!("ada-{}", SessionId::generate().short_hash());
    let ada = Owner::new(name.as_str()).unwrap();
    let digest = sha1_smol::Sha1::from(format!("\"{name}\"")).digest();
    let index = format!("sessionkit:{{o.{digest}}}");
    let handle = SessionHandle::generate();
    let hex = handle.to_string();

    let old = SessionId::generate();
    assert_eq!(
        store.create(&old, &record()).await.unwrap(),
        Created::Created
    );
    let set = store.set_owner(&old, &ada, &handle, None, None).await;
    assert!(matches!(set, Ok(OwnerSet::Set { .. })), "{set:?}");
    assert_eq!(
        cli_at(cluster, &index, &["HGET", &index, &hex]),
        store.keys_of(&old).0
    );

    // A repair dropped the entry between the two steps: it comes back.
    cli_at(cluster, &index, &["HDEL", &index, &hex]);
    let new = store.new_id_for(&old);
    assert!(matches!(
        store.change_id(&old, &new, None).await.unwrap(),
        IdChanged::Changed(_)
    ));
    assert_eq!(
        cli_at(cluster, &index, &["HGET", &index, &hex]),
        store.keys_of(&new).0
    );
    let listed = store.sessions_of(&ada).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].handle, handle);

    // A revocation marked the entry before the second step: the session
    // ends under its new id.
    let mark = format!(
        "}}revoked {} {}",
        sessionkit_core::record::now_ms(),
        store.keys_of(&new).0
    );
    cli_at(cluster, &index, &["HSET", &index, &hex, &mark]);
    let newer = store.new_id_for(&new);
    assert_eq!(
        store.change_id(&new, &newer, None).await.unwrap(),
        IdChanged::Gone
    );
    assert!(store.load(&newer, None).await.unwrap().is_none());
    assert!(store.load(&new, None).await.unwrap().is_none());
    assert!(store.sessions_of(&ada).await.unwrap().is_empty());
}
