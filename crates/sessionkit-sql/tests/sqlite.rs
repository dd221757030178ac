//! `SqliteStore` on a real SQLite file: the conformance suite, the schema and its version, ids at rest and corrupt rows.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use sessionkit_core::record::{Delta, Meta, Record, now_ms};
use sessionkit_core::store::{Applied, Fence, Locked, SessionStore};
use sessionkit_core::testkit::SuiteConfig;
use sessionkit_core::testkit::fixtures::{
    assert_reads_as_absent, expired_sessions_are_swept_and_not_counted,
};
use sessionkit_core::{ErrorKind, SessionId};
use sessionkit_sql::SqliteStore;
use sessionkit_sql::sqlx;

/// One database file in a temporary directory, shared by the tests of this
/// binary (removed when the binary ends: the directory is kept in a static
/// and cleaned by the OS's temp cleaner otherwise, so it is small).
fn shared_file() -> &'static PathBuf {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        DIR.get_or_init(|| tempfile::tempdir().expect("a temp dir"))
            .path()
            .join("sessions.db")
    })
}

async fn store() -> SqliteStore {
    // Many tests open stores on the brand-new shared file at once: `migrate`
    // waits out the moment the first one switches it to WAL.
    store_on_shared_file().await
}

async fn store_on_shared_file() -> SqliteStore {
    let url = format!("sqlite://{}", shared_file().display());
    let store = SqliteStore::builder()
        .sweep_interval(None)
        .connect(&url)
        .expect("a store on the shared file");
    store.migrate().await.expect("migrate");
    store
}

sessionkit_core::conformance_tests!(
    conformance,
    store().await,
    config = SuiteConfig::millisecond_clock()
);

/// A store on an in-memory database of its own (one connection).
async fn memory_store() -> SqliteStore {
    let store = SqliteStore::builder()
        .sweep_interval(None)
        .connect("sqlite::memory:")
        .expect("an in-memory store");
    store.migrate().await.expect("migrate");
    store
}

sessionkit_core::conformance_tests!(
    in_memory,
    memory_store().await,
    config = SuiteConfig::millisecond_clock()
);

/// A migrated store on a file of its own.
async fn store_in(dir: &tempfile::TempDir, table: &str) -> SqliteStore {
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    let store = SqliteStore::builder()
        .table(table)
        .sweep_interval(None)
        .connect(&url)
        .expect("a store on a file");
    store.migrate().await.expect("migrate");
    store
}

fn session(lifetime: Duration, pairs: &[(&str, &[u8])]) -> Record {
    Record {
        entries: pairs.iter().map(|(k, v)| (*k, v.to_vec())).collect(),
        meta: Meta::new(now_ms(), lifetime, None),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_is_in_wal_mode_and_migrate_refuses_a_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(&dir, "sessions").await;
    store
        .migrate()
        .await
        .expect("a second migrate changes nothing");
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    let version: i64 =
        sqlx::query_scalar("SELECT version FROM sessionkit_schema WHERE table_name = 'sessions'")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(version, 2);

    sqlx::query("UPDATE sessionkit_schema SET version = 7 WHERE table_name = 'sessions'")
        .execute(store.pool())
        .await
        .unwrap();
    let err = store
        .migrate()
        .await
        .expect_err("a newer schema is an error");
    assert_eq!(err.kind(), ErrorKind::StoreUnavailable);
    assert!(
        err.detail().unwrap_or_default().contains("version 7"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_are_hashed_at_rest() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(&dir, "sessions").await;
    let id = SessionId::generate();
    let _ = store
        .create(
            &id,
            &session(Duration::from_secs(60), &[("k", b"\x00\xff")]),
        )
        .await
        .unwrap();
    let (key, data): (Vec<u8>, String) = sqlx::query_as("SELECT id, data FROM sessions")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(key, id.hashed().to_vec());
    assert_eq!(
        data, r#"{"k":["AP8="]}"#,
        "bytes that are not text are base64"
    );
    let file = std::fs::read(dir.path().join("s.db")).unwrap_or_default();
    let wal = std::fs::read(dir.path().join("s.db-wal")).unwrap_or_default();
    let text = id.expose();
    for bytes in [&file, &wal] {
        assert!(
            !bytes.windows(text.len()).any(|w| w == text.as_bytes()),
            "the raw id must not be in the database files"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_rows_load_as_absent() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(&dir, "sessions").await;
    for data in ["not json", "[1]", r#"{"k": 1}"#, r#"{"k": ["%%"]}"#] {
        let id = SessionId::generate();
        sqlx::query(
            "INSERT INTO sessions (id, data, created, ttl, remembered, expires)
             VALUES (?1, ?2, 0, 600000, 0, 9000000000000)",
        )
        .bind(id.hashed().to_vec())
        .bind(data)
        .execute(store.pool())
        .await
        .unwrap();
        assert_reads_as_absent(&store, &id, data).await;
        let mut delta = Delta::default();
        delta.set("k", b"1".to_vec());
        let applied = store.apply(&id, &delta, None).await.unwrap();
        assert!(!matches!(applied, Applied::LockLost), "{data}: {applied:?}");
    }
    // STRICT and the CHECKs refuse wrong types and ranges outright.
    for bad in [
        "INSERT INTO sessions (id, data, created, ttl, remembered, expires) VALUES (x'00', '{}', 'soon', 1, 0, 1)",
        "INSERT INTO sessions (id, data, created, ttl, remembered, expires) VALUES (x'01', '{}', -1, 1, 0, 1)",
        "INSERT INTO sessions (id, data, created, ttl, remembered, expires) VALUES (x'02', '{}', 0, 1, 2, 1)",
    ] {
        assert!(
            sqlx::query(bad).execute(store.pool()).await.is_err(),
            "{bad}"
        );
    }
}

/// Two stores with pools of their own on one file (as two processes would
/// have) do exact locked increments between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pools_on_one_file_lose_no_locked_increment() {
    let dir = tempfile::tempdir().unwrap();
    let a = store_in(&dir, "sessions").await;
    let b = store_in(&dir, "sessions").await;
    let id = SessionId::generate();
    let _ = a
        .create(&id, &session(Duration::from_secs(600), &[("n", b"0")]))
        .await
        .unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                for _ in 0..20 {
                    loop {
                        match store.lock(&id, Duration::from_secs(10)).await.unwrap() {
                            Locked::Acquired { token, record } => {
                                let n: u64 = std::str::from_utf8(record.entries.get("n").unwrap())
                                    .unwrap()
                                    .parse()
                                    .unwrap();
                                let mut delta = Delta::default();
                                delta.set("n", (n + 1).to_string().into_bytes());
                                let fence = Fence {
                                    token: &token,
                                    release: true,
                                };
                                let applied = store.apply(&id, &delta, Some(fence)).await.unwrap();
                                assert!(matches!(applied, Applied::Applied(_)), "{applied:?}");
                                break;
                            }
                            Locked::Held => tokio::time::sleep(Duration::from_millis(1)).await,
                            Locked::Absent => panic!("the session vanished"),
                        }
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let record = b.load(&id, None).await.unwrap().unwrap().record;
    assert_eq!(record.entries.get("n"), Some(&b"160"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_rows_are_swept_and_not_counted() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(&dir, "sessions").await;
    // Counted exactly: the expired rows are not counted even before the sweep.
    assert_eq!(expired_sessions_are_swept_and_not_counted(&store).await, 1);
}

/// A table of schema version 1 (before the owner columns), with a session
/// in it: `migrate` adds the columns and their index, records version 2,
/// and the session is still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_upgrades_a_version_1_table_and_keeps_its_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("v1.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let id = SessionId::generate();
    sqlx::raw_sql(
        "CREATE TABLE sessionkit_schema (table_name TEXT PRIMARY KEY, version INTEGER NOT NULL) STRICT;
         INSERT INTO sessionkit_schema VALUES ('sessions', 1);
         CREATE TABLE sessions (id BLOB PRIMARY KEY, data TEXT NOT NULL, created INTEGER NOT NULL,
             ttl INTEGER NOT NULL, remembered INTEGER NOT NULL, deadline INTEGER,
             expires INTEGER NOT NULL, lock_token BLOB, lock_expires INTEGER) STRICT;
         CREATE INDEX sessions_expires ON sessions (expires);",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO sessions (id, data, created, ttl, remembered, expires)
         VALUES (?1, '{\"n\": \"1\"}', 0, 600000, 0, 9000000000000)",
    )
    .bind(id.hashed().to_vec())
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;

    let store = SqliteStore::builder()
        .sweep_interval(None)
        .connect(&url)
        .unwrap();
    store.migrate().await.unwrap();
    store.migrate().await.unwrap(); // and again: nothing to do
    let version: i64 =
        sqlx::query_scalar("SELECT version FROM sessionkit_schema WHERE table_name = 'sessions'")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(version, 2);
    let owners: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions WHERE owner IS NULL")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(owners, 1, "the column is there, empty");
    let loaded = store
        .load(&id, None)
        .await
        .unwrap()
        .expect("the session survived");
    assert_eq!(loaded.record.entries.get("n"), Some(&b"1"[..]));
}

// The owner index (issue 15): the checks every store with one runs.
// On the conformance suite's shared file (owners are unique per check).
sessionkit_core::owner_index_tests!(owners, store().await);

/// What owners cost on SQLite (issue 15; rows for BENCHMARKS.md, not a
/// timed test): `testkit::owners::costs`. Run side by side with the other
/// stores, in release: `bench/owner-costs.sh`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, run on demand"]
async fn owner_costs() {
    let store = store().await;
    for (what, us) in sessionkit_core::testkit::owners::costs(&store, 200).await {
        println!("owner cost\tsqlite\t{what}\t{us}");
    }
}

/// Several processes starting at once on a database file that does not
/// exist yet (each its own pool, as separate processes have) all open it
/// and migrate: none fails with "database is locked" while the first one
/// creates the file and switches it to WAL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_opening_a_brand_new_file_at_once_all_migrate() {
    for round in 0..50 {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("new.db").display());
        let open = || async {
            let store = SqliteStore::builder()
                .sweep_interval(None)
                .connect(&url)
                .unwrap();
            store.migrate().await.map(|()| store)
        };
        // Concurrent in one task: each pool opens its connections on
        // threads of its own, as separate processes would.
        let (a, b, c, d, e, f, g, h) = tokio::join!(
            open(),
            open(),
            open(),
            open(),
            open(),
            open(),
            open(),
            open()
        );
        let starts = [a, b, c, d, e, f, g, h];
        for started in starts {
            let store = started.unwrap_or_else(|e| {
                panic!("round {round}: {e}: {:?}", std::error::Error::source(&e))
            });
            let record = Record {
                entries: [("k", b"v".to_vec())].into_iter().collect(),
                meta: Meta::new(now_ms(), Duration::from_secs(60), None),
            };
            let created = store.create(&SessionId::generate(), &record).await;
            assert!(created.is_ok(), "round {round}: {:?}", created.err());
        }
    }
}
