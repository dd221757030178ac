//! `PgStore` on a real PostgreSQL server: the conformance suite, the schema and its version, ids at rest and corrupt rows.

use sessionkit_test_servers::postgres as support;

use std::time::Duration;

use sessionkit_core::record::{Delta, Meta, Record, Touch, now_ms};
use sessionkit_core::store::{
    Applied, Created, ExpiredDeletion, Fence, IdChanged, Locked, SessionStore,
};
use sessionkit_core::testkit::SuiteConfig;
use sessionkit_core::testkit::fixtures::{
    assert_reads_as_absent, expired_sessions_are_swept_and_not_counted,
};
use sessionkit_core::{ErrorKind, SessionId};
use sessionkit_sql::PgStore;
use sessionkit_sql::sqlx;

/// A migrated store on the server shared by this test binary.
async fn store() -> PgStore {
    let store = PgStore::builder()
        .sweep_interval(None)
        .connect(&support::shared().url())
        .expect("a store on the shared server");
    store.migrate().await.expect("migrate");
    store
}

sessionkit_core::conformance_tests!(
    conformance,
    store().await,
    config = SuiteConfig::millisecond_clock()
);

/// A migrated store on a table of its own, so a test can look at just its
/// rows and statements.
async fn store_on(table: &str) -> PgStore {
    let store = PgStore::builder()
        .table(table)
        .sweep_interval(None)
        .connect(&support::shared().url())
        .expect("a store on the shared server");
    store.migrate().await.expect("migrate");
    store
}

fn unique(name: &str) -> String {
    format!("{name}_{}", SessionId::generate().short_hash())
}

fn session(lifetime: Duration, pairs: &[(&str, &[u8])]) -> Record {
    Record {
        entries: pairs.iter().map(|(k, v)| (*k, v.to_vec())).collect(),
        meta: Meta::new(now_ms(), lifetime, None),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_is_idempotent_and_refuses_a_newer_schema() {
    let table = unique("migrated");
    let store = store_on(&table).await;
    store
        .migrate()
        .await
        .expect("a second migrate changes nothing");
    let version: i32 =
        sqlx::query_scalar("SELECT version FROM sessionkit_schema WHERE table_name = $1")
            .bind(&table)
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(version, 2);
    assert!(store.schema_sql().contains("CREATE INDEX IF NOT EXISTS"));

    // Several processes starting at once take turns.
    let racing = unique("racing");
    let stores: Vec<PgStore> = (0..4)
        .map(|_| {
            PgStore::builder()
                .table(racing.as_str())
                .sweep_interval(None)
                .connect(&support::shared().url())
                .unwrap()
        })
        .collect();
    let results = tokio::join!(
        stores[0].migrate(),
        stores[1].migrate(),
        stores[2].migrate(),
        stores[3].migrate()
    );
    let results = [results.0, results.1, results.2, results.3];
    assert!(results.iter().all(Result::is_ok), "{results:?}");

    sqlx::query("UPDATE sessionkit_schema SET version = 99 WHERE table_name = $1")
        .bind(&table)
        .execute(store.pool())
        .await
        .unwrap();
    let err = store
        .migrate()
        .await
        .expect_err("a newer schema is an error");
    assert_eq!(err.kind(), ErrorKind::StoreUnavailable);
    let detail = err.detail().unwrap_or_default().to_owned();
    assert!(
        detail.contains("99") && detail.contains(&table),
        "{err}: {detail}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_are_hashed_at_rest() {
    let table = unique("hashed");
    let store = store_on(&table).await;
    let id = SessionId::generate();
    assert_eq!(
        store
            .create(&id, &session(Duration::from_secs(60), &[("k", b"\"v\"")]))
            .await
            .unwrap(),
        Created::Created
    );
    let (key, data): (Vec<u8>, String) =
        sqlx::query_as(&format!("SELECT id, data::text FROM \"{table}\""))
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(
        key,
        id.hashed().to_vec(),
        "the key column holds SHA-256 of the id"
    );
    assert_eq!(data, r#"{"k": "\"v\""}"#, "values are kept as JSON strings");

    let raw_table = unique("raw");
    let raw = PgStore::builder()
        .table(raw_table.as_str())
        .hash_ids(false)
        .sweep_interval(None)
        .connect(&support::shared().url())
        .unwrap();
    raw.migrate().await.unwrap();
    let _ = raw
        .create(&id, &session(Duration::from_secs(60), &[]))
        .await
        .unwrap();
    let key: Vec<u8> = sqlx::query_scalar(&format!("SELECT id FROM \"{raw_table}\""))
        .fetch_one(raw.pool())
        .await
        .unwrap();
    assert_eq!(key, id.expose().into_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_rows_load_as_absent() {
    let table = unique("corrupt");
    let store = store_on(&table).await;
    for data in [
        r#"[1, 2]"#,
        r#"{"k": 1}"#,
        r#"{"k": ["not base64!"]}"#,
        r#""text""#,
    ] {
        let id = SessionId::generate();
        sqlx::query(&format!(
            "INSERT INTO \"{table}\" (id, data, created, ttl, remembered, expires)
             VALUES ($1, $2::jsonb, 0, 600000, false, 9000000000000)"
        ))
        .bind(id.hashed().to_vec())
        .bind(data)
        .execute(store.pool())
        .await
        .unwrap();
        assert_reads_as_absent(&store, &id, data).await;
    }
    // The columns' CHECKs keep out-of-range times from being written at all.
    let refused = sqlx::query(&format!(
        "INSERT INTO \"{table}\" (id, data, created, ttl, remembered, expires)
         VALUES ('\\x00', '{{}}', -1, 1, false, 1)"
    ))
    .execute(store.pool())
    .await;
    assert!(refused.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_pool_fails_fast_with_store_unavailable() {
    let store = PgStore::builder()
        .max_connections(1)
        .acquire_timeout(Duration::from_millis(200))
        .sweep_interval(None)
        .connect(&support::shared().url())
        .unwrap();
    store.migrate().await.unwrap();
    let held = store.pool().acquire().await.unwrap();
    let start = std::time::Instant::now();
    let err = store.load(&SessionId::generate(), None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StoreUnavailable);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    drop(held);
    assert!(
        store
            .load(&SessionId::generate(), None)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_rows_are_swept_and_not_counted() {
    let table = unique("swept");
    let store = store_on(&table).await;
    // Counted exactly: the expired rows are not counted even before the sweep.
    assert_eq!(expired_sessions_are_swept_and_not_counted(&store).await, 1);
}

/// Statements as the server counts them (`pg_stat_statements`, top level):
/// one per store operation, so one per read whose touch is not due, one per
/// buffered flush, two per locked read-modify-write; a read whose touch is
/// due (once per part of the lifetime that the threshold leaves) adds the
/// touch's UPDATE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_is_one_statement_and_a_due_touch_one_more() {
    let table = unique("counted");
    let store = store_on(&table).await;
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .execute(store.pool())
        .await
        .unwrap();
    let count = || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements WHERE query LIKE '%' || $1 || '%' AND query NOT LIKE '%pg_stat_statements%'",
        )
        .bind(&table)
        .fetch_one(store.pool())
        .await
        .unwrap();
        n
    };
    let id = SessionId::generate();
    let mut steps = Vec::new();
    let before = count().await;
    let _ = store
        .create(&id, &session(Duration::from_secs(600), &[("n", b"0")]))
        .await
        .unwrap();
    steps.push(("create", count().await - before));

    let before = count().await;
    store
        .load(&id, Some(Touch::when_remaining_below(0.5).unwrap()))
        .await
        .unwrap()
        .unwrap();
    steps.push(("read (touch not due)", count().await - before));

    let before = count().await;
    let loaded = store
        .load(&id, Some(Touch::always()))
        .await
        .unwrap()
        .unwrap();
    assert!(loaded.touched);
    steps.push(("read (touch due)", count().await - before));

    let before = count().await;
    let mut delta = Delta::default();
    delta.set("a", b"1".to_vec());
    let _ = store.apply(&id, &delta, None).await.unwrap();
    steps.push(("buffered flush", count().await - before));

    let before = count().await;
    let Locked::Acquired { token, .. } = store.lock(&id, Duration::from_secs(30)).await.unwrap()
    else {
        panic!("lock");
    };
    let mut delta = Delta::default();
    delta.set("n", b"1".to_vec());
    let applied = store
        .apply(
            &id,
            &delta,
            Some(Fence {
                token: &token,
                release: true,
            }),
        )
        .await
        .unwrap();
    assert!(matches!(applied, Applied::Applied(_)));
    steps.push(("locked read-modify-write", count().await - before));

    let before = count().await;
    let new = store.new_id_for(&id);
    assert!(matches!(
        store.change_id(&id, &new, None).await.unwrap(),
        IdChanged::Changed(_)
    ));
    steps.push(("change_id", count().await - before));

    let expected = [
        ("create", 1),
        ("read (touch not due)", 1),
        ("read (touch due)", 2),
        ("buffered flush", 1),
        ("locked read-modify-write", 2),
        ("change_id", 1),
    ];
    assert_eq!(steps, expected);
}

/// Apps with tables of their own starting at once on a fresh database (or
/// schema) all create the shared version table: they must take turns on
/// it, not only on their own table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_of_different_tables_at_once_all_succeed() {
    let admin = store().await;
    for _ in 0..5 {
        let schema = unique("fresh");
        sqlx::query(&format!("CREATE SCHEMA \"{schema}\""))
            .execute(admin.pool())
            .await
            .unwrap();
        let stores: Vec<PgStore> = (0..4)
            .map(|i| {
                PgStore::builder()
                    .table(format!("{schema}.sessions_{i}"))
                    .sweep_interval(None)
                    .connect(&support::shared().url())
                    .unwrap()
            })
            .collect();
        let results = tokio::join!(
            stores[0].migrate(),
            stores[1].migrate(),
            stores[2].migrate(),
            stores[3].migrate()
        );
        let results = [results.0, results.1, results.2, results.3];
        assert!(results.iter().all(Result::is_ok), "{results:?}");
    }
}

/// The `NOTIFY` channel of a table, as `wake.rs` names it (FNV-1a of
/// `sessionkit:` and the table name), written again here as the oracle.
fn channel_of(table: &str) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    for b in "sessionkit:".bytes().chain(table.bytes()) {
        hash = (hash ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    format!("sessionkit_{hash:08x}")
}

/// A waiter for a lock held by another process (another pool) is woken
/// when the lock is released, by `unlock` or by a commit with release,
/// instead of sleeping its whole pause; a release nobody waits for sends
/// no notification at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_lock_wakes_the_waiters_of_other_processes() {
    let table = unique("woken");
    let holder = store_on(&table).await;
    let waiter = store_on(&table).await;
    let id = SessionId::generate();
    let _ = holder
        .create(&id, &session(Duration::from_secs(60), &[]))
        .await
        .unwrap();
    let mut bystander = sqlx::postgres::PgListener::connect(&support::shared().url())
        .await
        .unwrap();
    bystander.listen(&channel_of(&table)).await.unwrap();
    let pause = Duration::from_secs(3);
    let release_after = Duration::from_millis(200);
    for release in ["unlock", "commit"] {
        let Locked::Acquired { token, .. } =
            holder.lock(&id, Duration::from_secs(30)).await.unwrap()
        else {
            panic!("lock");
        };
        assert_eq!(
            waiter.lock(&id, Duration::from_secs(30)).await.unwrap(),
            Locked::Held
        );
        let releasing = {
            let holder = holder.clone();
            tokio::spawn(async move {
                tokio::time::sleep(release_after).await;
                if release == "unlock" {
                    holder.unlock(&id, &token).await.unwrap();
                } else {
                    let mut delta = Delta::default();
                    delta.set("k", b"1".to_vec());
                    let fence = Fence {
                        token: &token,
                        release: true,
                    };
                    let applied = holder.apply(&id, &delta, Some(fence)).await.unwrap();
                    assert!(matches!(applied, Applied::Applied(_)));
                }
            })
        };
        let start = std::time::Instant::now();
        waiter.wait_for_unlock(&id, pause).await;
        let waited = start.elapsed();
        releasing.await.unwrap();
        assert!(
            waited < release_after + Duration::from_millis(500),
            "{release}: woken {waited:?} after the wait began (release after {release_after:?}, pause {pause:?})"
        );
        let Locked::Acquired { token, .. } =
            waiter.lock(&id, Duration::from_secs(30)).await.unwrap()
        else {
            panic!("{release}: the lock is free after the wake-up");
        };
        waiter.unlock(&id, &token).await.unwrap();
        // The bystander heard this release (a waiter was there)...
        let heard = tokio::time::timeout(Duration::from_secs(1), bystander.recv()).await;
        assert!(heard.is_ok(), "{release}: a notification was sent");
    }
    // ...and nothing else: the waiter's own unlocks above had no waiter,
    // and neither has this one.
    let Locked::Acquired { token, .. } = holder.lock(&id, Duration::from_secs(30)).await.unwrap()
    else {
        panic!("lock");
    };
    holder.unlock(&id, &token).await.unwrap();
    let heard = tokio::time::timeout(Duration::from_millis(300), bystander.recv()).await;
    assert!(
        heard.is_err(),
        "a release nobody waits for notifies nobody: {heard:?}"
    );
}

/// Without a release, a waiter sleeps its pause and no longer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_without_a_release_sleeps_its_pause() {
    let store = store_on(&unique("unwoken")).await;
    let id = SessionId::generate();
    let _ = store
        .create(&id, &session(Duration::from_secs(60), &[]))
        .await
        .unwrap();
    let _held = store.lock(&id, Duration::from_secs(30)).await.unwrap();
    for pause in [Duration::from_millis(5), Duration::from_millis(300)] {
        let start = std::time::Instant::now();
        store.wait_for_unlock(&id, pause).await;
        let waited = start.elapsed();
        assert!(
            waited >= pause && waited < pause + Duration::from_millis(250),
            "{waited:?} for a pause of {pause:?}"
        );
    }
}

/// The sweep costs in proportion to what expired: 10,000 expired rows among
/// 1,000,000 take 11 statements (ten batches of 1,000 from the front of the
/// expiry index, then one that finds none), whatever the table's size.
/// Prints the time, and the time of the peer's sweep
/// (`tower-sessions-sqlx-store` 0.15: one `DELETE … WHERE expiry_date <
/// now()` on a table without an index on it) on the same rows, for
/// BENCHMARKS.md. Ignored by default (it writes 2 million rows): `cargo test
/// -p sessionkit-sql --all-features --test postgres -- --ignored sweep`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes 2 million rows; run by hand for BENCHMARKS.md"]
async fn sweeping_10k_expired_among_1m_rows() {
    let table = unique("sweep");
    let store = store_on(&table).await;
    let pool = store.pool();
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .execute(pool)
        .await
        .unwrap();
    // Rows as `create` writes them: a SHA-256-sized key, one small value.
    sqlx::query(&format!(
        "INSERT INTO \"{table}\" (id, data, created, ttl, remembered, expires)
         SELECT sha256(int8send(i)), '{{\"n\": \"1\"}}', 0, 7200000, false,
                CASE WHEN i % 100 = 0 THEN 1000 ELSE 9000000000000 END
         FROM generate_series(1, 1000000) AS i"
    ))
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(&format!("ANALYZE \"{table}\""))
        .execute(pool)
        .await
        .unwrap();
    let calls = || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements WHERE query LIKE 'DELETE FROM%' || $1 || '%'",
        )
        .bind(&table)
        .fetch_one(pool)
        .await
        .unwrap();
        n
    };
    let before = calls().await;
    let start = std::time::Instant::now();
    let deleted = store.delete_expired().await.unwrap();
    let ours = start.elapsed();
    let statements = calls().await - before;
    assert_eq!(deleted, 10_000);
    assert_eq!(statements, 11);

    // The peer's table and sweep, on the same rows.
    let peer = unique("peer_sweep");
    sqlx::raw_sql(&format!(
        "CREATE TABLE \"{peer}\" (id text PRIMARY KEY NOT NULL, data bytea NOT NULL, expiry_date timestamptz NOT NULL);
         INSERT INTO \"{peer}\"
         SELECT encode(sha256(int8send(i)), 'base64'), '\\x81a16e01'::bytea,
                CASE WHEN i % 100 = 0 THEN now() - interval '1 day' ELSE now() + interval '1 day' END
         FROM generate_series(1, 1000000) AS i;
         ANALYZE \"{peer}\";"
    ))
    .execute(pool)
    .await
    .unwrap();
    let start = std::time::Instant::now();
    let done = sqlx::query(&format!(
        "DELETE FROM \"{peer}\" WHERE expiry_date < (now() AT TIME ZONE 'utc')"
    ))
    .execute(pool)
    .await
    .unwrap();
    let theirs = start.elapsed();
    assert_eq!(done.rows_affected(), 10_000);
    println!(
        "sweep of 10,000 expired among 1,000,000 rows: sessionkit {ours:?} in {statements} statements; tower-sessions-sqlx-store {theirs:?} in 1 statement (a scan of the table)"
    );
    for t in [&table, &peer] {
        sqlx::query(&format!("DROP TABLE \"{t}\""))
            .execute(pool)
            .await
            .unwrap();
    }
}

/// A table of schema version 1 (before the owner columns), with a session
/// in it: `migrate` adds the columns and their index, records version 2,
/// and the session is still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_upgrades_a_version_1_table_and_keeps_its_sessions() {
    let table = unique("v1");
    let pool = sqlx::PgPool::connect(&support::shared().url())
        .await
        .unwrap();
    sqlx::raw_sql(&format!(
        "CREATE TABLE IF NOT EXISTS sessionkit_schema (table_name text PRIMARY KEY, version integer NOT NULL);
         INSERT INTO sessionkit_schema VALUES ('{table}', 1);
         CREATE TABLE \"{table}\" (id bytea PRIMARY KEY, data jsonb NOT NULL, created bigint NOT NULL,
             ttl bigint NOT NULL, remembered boolean NOT NULL, deadline bigint,
             expires bigint NOT NULL, lock_token bytea, lock_expires bigint);
         CREATE INDEX \"{table}_expires\" ON \"{table}\" (expires);"
    ))
    .execute(&pool)
    .await
    .unwrap();
    let id = SessionId::generate();
    sqlx::query(&format!(
        "INSERT INTO \"{table}\" (id, data, created, ttl, remembered, expires)
         VALUES ($1, '{{\"n\": \"1\"}}', 0, 600000, false, 9000000000000)"
    ))
    .bind(id.hashed().to_vec())
    .execute(&pool)
    .await
    .unwrap();

    let store = store_on(&table).await; // migrates
    store.migrate().await.unwrap(); // and again: nothing to do
    let version: i32 =
        sqlx::query_scalar("SELECT version FROM sessionkit_schema WHERE table_name = $1")
            .bind(&table)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(version, 2);
    let empty: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM \"{table}\" WHERE owner IS NULL"
    ))
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(empty, 1, "the column is there, empty");
    let loaded = store
        .load(&id, None)
        .await
        .unwrap()
        .expect("the session survived");
    assert_eq!(loaded.record.entries.get("n"), Some(&b"1"[..]));
}

// The owner index (issue 15): the checks every store with one runs (owners
// are unique per check, so they share the table).
sessionkit_core::owner_index_tests!(owners, store_on("owners").await);

/// What owners cost on PostgreSQL (issue 15; rows for BENCHMARKS.md, not
/// a timed test): `testkit::owners::costs`, which the Redis store runs too.
/// Run with the Redis one, in release: `bench/owner-costs.sh`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, run on demand"]
async fn owner_costs() {
    let store = store_on(&unique("costs")).await;
    for (what, us) in sessionkit_core::testkit::owners::costs(&store, 200).await {
        println!("owner cost\tpostgres\t{what}\t{us}");
    }
}

/// A database whose default isolation is REPEATABLE READ: the capped
/// login still counts the logins that committed while it waited for the
/// owner's lock (its transaction is READ COMMITTED whatever the default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cap_holds_when_the_database_defaults_to_repeatable_read() {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .after_connect(|conn, _| {
            Box::pin(async move {
                sqlx::query("SET default_transaction_isolation = 'repeatable read'")
                    .execute(conn)
                    .await
                    .map(drop)
            })
        })
        .connect(&support::shared().url())
        .await
        .expect("a pool on the shared server");
    let store = PgStore::builder()
        .table("owners_repeatable_read")
        .sweep_interval(None)
        .build(pool)
        .expect("a store on the pool");
    store.migrate().await.expect("migrate");
    sessionkit_core::testkit::owners::two_simultaneous_logins_under_a_cap_of_one_leave_exactly_one(
        &store,
    )
    .await;
}

/// A `change_id` of `old` to `new` held in flight on `table`: a
/// transaction of the test holds an uncommitted row under `new`, so the
/// store's statement has taken the old row and waits on the new id until
/// the returned transaction ends. Returns once the statement waits.
async fn change_id_in_flight(
    store: &PgStore,
    table: &str,
    old: SessionId,
    new: SessionId,
) -> (
    sqlx::Transaction<'static, sqlx::Postgres>,
    tokio::task::JoinHandle<IdChanged>,
) {
    let mut blocker = store.pool().begin().await.unwrap();
    sqlx::query(&format!(
        "INSERT INTO \"{table}\" (id, data, created, ttl, remembered, expires)
         VALUES ($1, '{{}}', 0, 1000, false, 1)"
    ))
    .bind(new.hashed().to_vec())
    .execute(&mut *blocker)
    .await
    .unwrap();
    let changing = {
        let store = store.clone();
        tokio::spawn(async move { store.change_id(&old, &new, None).await.unwrap() })
    };
    wait_for_lock_waiters(store, table, 1).await;
    (blocker, changing)
}

/// Waits until `n` statements on `table` wait for a lock.
async fn wait_for_lock_waiters(store: &PgStore, table: &str, n: i64) {
    for _ in 0..500 {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE wait_event_type = 'Lock' AND query LIKE '%' || $1 || '%'",
        )
        .bind(format!("\"{table}\""))
        .fetch_one(store.pool())
        .await
        .unwrap();
        if waiting >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{n} statements on {table} never waited for a lock");
}

/// A session whose id changes while its owner's sessions are all revoked
/// (the revocation waits on its row) is revoked under its new id: the
/// rotation does not let it survive "sign out everywhere".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_rotated_during_revoke_all_is_revoked() {
    use sessionkit_core::owner::{Owner, OwnerIndex as _, SessionHandle};

    let table = unique("rotated_revoked");
    let store = store_on(&table).await;
    let ada = Owner::new("ada").unwrap();
    let (old, new) = (SessionId::generate(), SessionId::generate());
    let created = store
        .create(&old, &session(Duration::from_secs(60), &[("k", b"v")]))
        .await;
    assert_eq!(created.unwrap(), Created::Created);
    store
        .set_owner(&old, &ada, &SessionHandle::generate(), None, None)
        .await
        .unwrap();

    let (blocker, changing) = change_id_in_flight(&store, &table, old, new).await;
    let revoking = {
        let (store, ada) = (store.clone(), ada.clone());
        tokio::spawn(async move { store.revoke_all(&ada, None).await.unwrap() })
    };
    wait_for_lock_waiters(&store, &table, 2).await;
    blocker.rollback().await.unwrap();

    assert!(matches!(changing.await.unwrap(), IdChanged::Changed(_)));
    assert_eq!(revoking.await.unwrap(), 1, "the revocation ended it");
    assert!(
        store.load(&new, None).await.unwrap().is_none(),
        "alive under its new id"
    );
    assert!(store.sessions_of(&ada).await.unwrap().is_empty());
}

/// A capped login whose victim's id changes while the login ends it ends
/// the victim under its new id: the owner stays within the cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_victim_rotated_during_a_capped_login_is_ended() {
    use std::num::NonZeroU32;

    use sessionkit_core::owner::{
        Owner, OwnerCap, OwnerIndex as _, OwnerSet, SessionHandle, WhenFull,
    };

    let table = unique("rotated_victim");
    let store = store_on(&table).await;
    let ada = Owner::new("ada").unwrap();
    let cap = OwnerCap {
        max: NonZeroU32::new(1).unwrap(),
        when_full: WhenFull::EndLeastRecent,
    };
    let (victim, rotated, login) = (
        SessionId::generate(),
        SessionId::generate(),
        SessionId::generate(),
    );
    for id in [&victim, &login] {
        let created = store
            .create(id, &session(Duration::from_secs(60), &[("k", b"v")]))
            .await;
        assert_eq!(created.unwrap(), Created::Created);
    }
    store
        .set_owner(&victim, &ada, &SessionHandle::generate(), None, Some(cap))
        .await
        .unwrap();

    let (blocker, changing) = change_id_in_flight(&store, &table, victim, rotated).await;
    let logging_in = {
        let (store, ada) = (store.clone(), ada.clone());
        tokio::spawn(async move {
            store
                .set_owner(&login, &ada, &SessionHandle::generate(), None, Some(cap))
                .await
                .unwrap()
        })
    };
    wait_for_lock_waiters(&store, &table, 2).await;
    blocker.rollback().await.unwrap();

    assert!(matches!(changing.await.unwrap(), IdChanged::Changed(_)));
    let set = logging_in.await.unwrap();
    assert!(
        matches!(&set, OwnerSet::Set { ended } if ended.len() == 1),
        "{set:?}"
    );
    assert!(
        store.load(&rotated, None).await.unwrap().is_none(),
        "the victim lives on"
    );
    assert_eq!(
        store.sessions_of(&ada).await.unwrap().len(),
        1,
        "over the cap"
    );
}

/// `change_id` onto the id of an expired row takes it over; onto an id a
/// session is created under while the statement runs, it answers
/// `IdTaken` and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_id_takes_over_an_expired_row_and_yields_to_a_racing_create() {
    let table = unique("change_target");
    let store = store_on(&table).await;
    let live = || session(Duration::from_secs(60), &[("k", b"v")]);
    let (old, expired) = (SessionId::generate(), SessionId::generate());
    assert_eq!(store.create(&old, &live()).await.unwrap(), Created::Created);
    sqlx::query(&format!(
        "INSERT INTO \"{table}\" (id, data, created, ttl, remembered, expires)
         VALUES ($1, '{{\"stale\": \"1\"}}', 0, 1000, false, 1)"
    ))
    .bind(expired.hashed().to_vec())
    .execute(store.pool())
    .await
    .unwrap();
    let changed = store.change_id(&old, &expired, None).await.unwrap();
    assert!(matches!(changed, IdChanged::Changed(_)), "{changed:?}");
    let moved = store.load(&expired, None).await.unwrap().expect("moved");
    assert_eq!(moved.record.entries.get("k"), Some(&b"v"[..]));
    assert_eq!(moved.record.entries.get("stale"), None);

    let raced = SessionId::generate();
    let (blocker, changing) = change_id_in_flight(&store, &table, expired, raced).await;
    blocker.commit().await.unwrap();
    assert_eq!(changing.await.unwrap(), IdChanged::IdTaken);
    assert!(
        store.load(&expired, None).await.unwrap().is_some(),
        "the session stays"
    );
}

/// Two processes that name the same table differently (`sessions`,
/// `public.sessions`) share the owner's lock: their simultaneous logins
/// under a cap of one leave exactly one session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cap_holds_across_spellings_of_the_table_name() {
    use std::num::NonZeroU32;

    use sessionkit_core::owner::{Owner, OwnerCap, OwnerIndex as _, SessionHandle, WhenFull};

    let table = unique("spelled");
    let plain = store_on(&table).await;
    let qualified = store_on(&format!("public.{table}")).await;
    let cap = OwnerCap {
        max: NonZeroU32::new(1).unwrap(),
        when_full: WhenFull::EndLeastRecent,
    };
    for round in 0..20 {
        let ada = Owner::new(format!("ada-{round}")).unwrap();
        let (a, b) = (SessionId::generate(), SessionId::generate());
        for id in [&a, &b] {
            let created = plain
                .create(id, &session(Duration::from_secs(60), &[("k", b"v")]))
                .await;
            assert_eq!(created.unwrap(), Created::Created);
        }
        let (ha, hb) = (SessionHandle::generate(), SessionHandle::generate());
        let (x, y) = tokio::join!(
            plain.set_owner(&a, &ada, &ha, None, Some(cap)),
            qualified.set_owner(&b, &ada, &hb, None, Some(cap)),
        );
        x.unwrap();
        y.unwrap();
        assert_eq!(
            plain.sessions_of(&ada).await.unwrap().len(),
            1,
            "round {round}"
        );
    }
}
