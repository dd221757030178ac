//! The shop on the SQL stores when the database misbehaves: a PostgreSQL server crashed and restarted under load, an exhausted pool, hostile rows and a schema from the future.
//!
//! Real parts throughout: the shop binary or the shop's app in this process
//! on a loopback port, a real PostgreSQL server (crashed with `SIGQUIT`, as
//! after a crash of the server process), real SQLite files.

#[path = "support/in_process.rs"]
mod in_process;
mod support;

/// The binary under test.
const BIN: &str = env!("CARGO_BIN_EXE_shop");

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use in_process::serve;
use sessionkit::sql::sqlx;
use sessionkit::sql::{PgStore, SqliteStore};
use support::pg::{self, PgServer};
use support::shop::{Shop, Store, browser, get, log_in, post_form, post_header, state, token_of};

/// What one client saw while it incremented its session's counter.
#[derive(Debug, Default)]
struct Tally {
    /// Increments acknowledged with a 200: each must be in the store after.
    acked: u64,
    /// 503s by when they came: before the crash, during the outage (up to
    /// the restart), after the restart.
    unavailable: [u64; 3],
    /// Any other answer (status or transport error): must not happen.
    other: Vec<String>,
    /// When this client first got a 200 after the restart.
    recovered_at: Option<Instant>,
}

/// Eight clients, each with a session of its own, do locked increments
/// (`POST /api/counter`) against one shop process while its PostgreSQL
/// server is crashed (immediate shutdown: no checkpoint, WAL recovery at
/// the restart) and started again 1.5 s later on the same port. The shop
/// is not restarted. Every answer is a 200 or a 503; every acknowledged
/// increment is in the database after; every client gets 200s again within
/// a bound (a lock taken before the crash and never released expires by
/// its TTL of 2 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_crash_under_load_gives_503s_only_and_loses_no_acknowledged_write() {
    let mut server = PgServer::start_durable();
    let url = server.url();
    let shop = Shop::start(&[
        ("SESSION_DRIVER", "postgres"),
        ("SESSION_DATABASE_URL", &url),
        ("SESSION_LOCK_TTL", "2"),
        // The outage logs every failed request; the assertions say enough.
        ("RUST_LOG", "off"),
    ]);
    let shop = Arc::new(shop);
    let mut clients = Vec::new();
    for _ in 0..8 {
        let client = browser();
        let token = log_in(&client, &shop).await;
        clients.push((client, token));
    }
    // 0 before the crash, 1 during the outage, 2 after the restart.
    let phase = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (client, token) in clients.clone() {
        let (shop, phase, stop) = (shop.clone(), phase.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            while !stop.load(Ordering::Acquire) {
                let began = phase.load(Ordering::Acquire);
                let res = client
                    .post(shop.url("/api/counter"))
                    .header("x-csrf-token", &token)
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await;
                // A request counts in the phase it ended in; it shows
                // recovery only if it began after the restart.
                let now = phase.load(Ordering::Acquire);
                match res.map(|r| r.status().as_u16()) {
                    Ok(200) => {
                        tally.acked += 1;
                        if began == 2 && tally.recovered_at.is_none() {
                            tally.recovered_at = Some(Instant::now());
                        }
                    }
                    Ok(503) => tally.unavailable[now] += 1,
                    Ok(status) => tally.other.push(format!("{status} in phase {now}")),
                    Err(e) => tally.other.push(format!("{e} in phase {now}")),
                }
            }
            tally
        }));
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    phase.store(1, Ordering::Release);
    let crashed_at = Instant::now();
    tokio::task::block_in_place(|| server.crash());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    tokio::task::block_in_place(|| server.restart());
    let restarted_at = Instant::now();
    phase.store(2, Ordering::Release);
    // Run until every client has had a 200 since the restart (or 20 s),
    // then one more second.
    let deadline = restarted_at + Duration::from_secs(20);
    let mut recovered = false;
    while Instant::now() < deadline && !recovered {
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Polled through the clients' own sessions: a read per client.
        recovered = true;
        for (client, _) in &clients {
            let res = client.get(shop.url("/api/session")).send().await;
            recovered &= res.is_ok_and(|r| r.status() == 200);
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Release);
    let mut tallies = Vec::new();
    for t in tasks {
        tallies.push(t.await.unwrap());
    }
    let outage = restarted_at - crashed_at;
    for ((client, _), tally) in clients.iter().zip(&tallies) {
        assert!(tally.other.is_empty(), "only 200 or 503: {tally:?}");
        let n = state(client, &shop).await["n"].as_u64().unwrap();
        let attempts = tally.acked + tally.unavailable.iter().sum::<u64>();
        assert!(
            n >= tally.acked && n <= attempts,
            "every acknowledged increment is kept (and no more than were sent): n = {n}, {tally:?}"
        );
        assert!(
            tally.recovered_at.is_some(),
            "the client gets 200s again after the restart: {tally:?}"
        );
    }
    let acked: u64 = tallies.iter().map(|t| t.acked).sum();
    let unavailable: Vec<u64> = (0..3)
        .map(|p| tallies.iter().map(|t| t.unavailable[p]).sum())
        .collect();
    let slowest = tallies.iter().filter_map(|t| t.recovered_at).max().unwrap() - restarted_at;
    println!(
        "postgres crash under load: {acked} increments acknowledged and kept; 503s before/during/after the outage of {outage:?}: {unavailable:?}; every client served again {slowest:?} after the restart"
    );
    assert_eq!(unavailable[0], 0, "no 503 before the crash");
    assert!(
        slowest < Duration::from_secs(10),
        "recovery took {slowest:?}"
    );
}

/// An exhausted pool makes requests wait at most the acquire timeout, each
/// on its own (not one after another), then answer 503; once a connection
/// is free again the next request is served at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_pool_answers_503_after_a_bounded_wait_without_piling_up() {
    let timeout = Duration::from_millis(300);
    let store = PgStore::builder()
        .table("exhausted")
        .max_connections(2)
        .acquire_timeout(timeout)
        .sweep_interval(None)
        .connect(&pg::shared().url())
        .unwrap();
    store.migrate().await.unwrap();
    let base = serve(store.clone()).await;
    let client = browser();
    let res = post_form(&client, format!("{base}/login"), &[("user", "ada")]).await;
    assert_eq!(res.status(), 303);

    // Every connection taken, as by slow requests elsewhere.
    let held = (
        store.pool().acquire().await.unwrap(),
        store.pool().acquire().await.unwrap(),
    );
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let (client, url) = (client.clone(), format!("{base}/api/session"));
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let res = client.get(url).send().await.unwrap();
            (res.status().as_u16(), started.elapsed())
        }));
    }
    let mut slowest = Duration::ZERO;
    for t in tasks {
        let (status, took) = t.await.unwrap();
        assert_eq!(status, 503);
        slowest = slowest.max(took);
    }
    let burst = start.elapsed();
    println!(
        "40 requests on an exhausted pool: 503 each, the slowest after {slowest:?}, all in {burst:?}"
    );
    assert!(
        slowest >= timeout,
        "each waited for a connection: {slowest:?}"
    );
    assert!(
        burst < timeout * 5,
        "the waits ran side by side, not one after another (40 × {timeout:?}): {burst:?}"
    );

    drop(held);
    let start = Instant::now();
    let v = state_at(&client, &base).await;
    assert_eq!(v["user"], "ada");
    assert!(
        start.elapsed() < timeout,
        "served at once when a connection is free: {:?}",
        start.elapsed()
    );
}

async fn state_at(client: &reqwest::Client, base: &str) -> serde_json::Value {
    let res = get(client, format!("{base}/api/session")).await;
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

/// Rows a request may meet that this code did not write: not JSON, not an
/// object, values of the wrong JSON type, values written in a form a newer
/// version might use (an object).
const HOSTILE: [&str; 5] = [
    r#"[1, 2]"#,
    r#""text""#,
    r#"{"user": 5, "n": "1"}"#,
    r#"{"user": {"v": 2, "value": "ada"}}"#,
    r#"{"user": ["not base64!"]}"#,
];

/// Logs a client in, replaces its row's data with `hostile` through `set`,
/// and checks what the shop makes of it: the session is absent (a fresh one,
/// no user), a write starts a new session and works, no answer is a 500,
/// and the shop's log says why, with the session's short hash and never
/// its id.
async fn a_hostile_row_is_absent(
    store: &Store,
    hostile: &str,
    set: impl AsyncFnOnce(&str),
) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("shop.log");
    let shop = Shop::start_logging_to(&store.envs(&[]), &log);
    let client = browser();
    log_in(&client, &shop).await;
    set(hostile).await;
    for _ in 0..3 {
        let res = client.get(shop.url("/api/session")).send().await.unwrap();
        if res.status() != 200 {
            return Err(format!("GET /api/session: {}", res.status()));
        }
        let v: serde_json::Value = res.json().await.unwrap();
        if v["user"] != serde_json::Value::Null {
            return Err(format!("the hostile session was read: {v}"));
        }
    }
    let res = post_form(&client, shop.url("/login"), &[("user", "bob")]).await;
    if res.status() != 303 {
        return Err(format!("POST /login: {}", res.status()));
    }
    let token = token_of(&client, &shop).await;
    let res = post_header(&client, shop.url("/api/counter"), "x-csrf-token", &token).await;
    if res.status() != 200 {
        return Err(format!("POST /api/counter: {}", res.status()));
    }
    if state(&client, &shop).await["user"] != "bob" {
        return Err("the new session did not keep its user".into());
    }
    drop(shop);
    let log = std::fs::read_to_string(&log).unwrap();
    if !log.contains("a stored session is corrupt") || !log.contains("reason") {
        return Err(format!("no logged reason: {log}"));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_rows_on_postgres_load_as_absent_with_a_logged_reason() {
    for hostile in HOSTILE {
        let store = Store::postgres();
        let url = pg::shared().url();
        let table = store.table().to_owned();
        let result = a_hostile_row_is_absent(&store, hostile, async |data| {
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            let changed = sqlx::query(&format!("UPDATE \"{table}\" SET data = $1::jsonb"))
                .bind(data)
                .execute(&pool)
                .await
                .unwrap()
                .rows_affected();
            assert_eq!(changed, 1);
        })
        .await;
        assert_eq!(result, Ok(()), "{hostile}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_rows_on_sqlite_load_as_absent_with_a_logged_reason() {
    for hostile in HOSTILE.iter().copied().chain(["not json", "{\"user\": "]) {
        let store = Store::sqlite();
        let url = store.database_url().to_owned();
        let result = a_hostile_row_is_absent(&store, hostile, async |data| {
            let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
            let changed = sqlx::query("UPDATE sessions SET data = ?1")
                .bind(data)
                .execute(&pool)
                .await
                .unwrap()
                .rows_affected();
            assert_eq!(changed, 1);
            pool.close().await;
        })
        .await;
        assert_eq!(result, Ok(()), "{hostile}");
    }
}

/// A table that a newer sessionkit-sql migrated (its recorded schema
/// version is higher) stops the shop at start with an error that names the
/// table and both versions: no panic, no requests served on a schema this
/// code does not know.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_from_a_newer_version_stops_the_shop_with_a_clear_error() {
    let store = Store::postgres();
    let pg = PgStore::builder()
        .table(store.table())
        .sweep_interval(None)
        .connect(&pg::shared().url())
        .unwrap();
    pg.migrate().await.unwrap();
    sqlx::query("UPDATE sessionkit_schema SET version = 1000 WHERE table_name = $1")
        .bind(store.table())
        .execute(pg.pool())
        .await
        .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shop"))
        .env("SHOP_ADDR", "127.0.0.1:0")
        .envs(store.envs(&[]))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains(store.table()) && stderr.contains("version 1000"),
        "{stderr}"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.db");
    let url = format!("sqlite://{}", file.display());
    let lite = SqliteStore::connect(&url).unwrap();
    lite.migrate().await.unwrap();
    sqlx::query("UPDATE sessionkit_schema SET version = 1000")
        .execute(lite.pool())
        .await
        .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shop"))
        .env("SHOP_ADDR", "127.0.0.1:0")
        .env("SESSION_DRIVER", "sqlite")
        .env("SESSION_DATABASE_URL", &url)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && !stderr.contains("panicked"),
        "{stderr}"
    );
    assert!(stderr.contains("version 1000"), "{stderr}");
}
