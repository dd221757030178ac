//! Redis faults under the shop: killed under load with AOF, paused past the lock TTL, slowed down by a latency proxy.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use reliability::{App, LatencyProxy, client, session_cookie};
use sessionkit::{CookieConfig, ErrorKind, LockConfig, SessionConfig, SessionLayer};
use sessionkit_core::SessionFactory;
use sessionkit_core::store::SessionStore;
use sessionkit_redis::RedisStore;
use sessionkit_test_servers::redis::RedisServer;

const CONNECT_TIMEOUT: Duration = Duration::from_millis(300);
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(300);

/// The longest any request may take while Redis is down, slow or back:
/// a few store calls, each bounded by the connect and response timeouts,
/// plus the lock wait (1 s here).
const REQUEST_BOUND: Duration = Duration::from_secs(3);

async fn store(url: &str) -> RedisStore {
    RedisStore::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .response_timeout(RESPONSE_TIMEOUT)
        .connect(url)
        .await
        .expect("connect to redis")
}

fn layer(store: RedisStore) -> SessionLayer {
    SessionLayer::builder(store)
        .config(
            SessionConfig::builder()
                .lock(
                    LockConfig::default()
                        .with_ttl(Duration::from_secs(1))
                        .with_wait(Duration::from_secs(1)),
                )
                .build()
                .unwrap(),
        )
        .cookie(CookieConfig::default())
        .build()
        .unwrap()
}

fn n_of(body: &serde_json::Value) -> u64 {
    body["n"].as_u64().expect("n")
}

/// What one client saw: its session and every response.
#[derive(Debug, Default)]
struct Seen {
    cookie: String,
    /// The session's CSRF token, sent with every POST.
    token: String,
    /// `n` of every 2xx, in order.
    acked: Vec<u64>,
    attempts: u64,
    unavailable: u64,
    other_status: Vec<u16>,
    transport_errors: u64,
    slowest: Duration,
    /// When the first 2xx after `recovered_after` came.
    first_ok_after: Option<Instant>,
    /// A 2xx that set another session id: the session was lost.
    lost_session: bool,
}

/// Locked increments of one session, back to back, until `stop`.
async fn client_loop(
    app: Arc<App>,
    stop: Arc<AtomicBool>,
    back_at: Arc<std::sync::Mutex<Option<Instant>>>,
) -> Seen {
    let http = client();
    let mut seen = Seen::default();
    // A session to start with.
    loop {
        let res = http.post(app.url("/api/counter")).send().await.unwrap();
        if res.status() == 200 {
            seen.cookie = session_cookie(&res).expect("a new session sets its cookie");
            let body: serde_json::Value = res.json().await.unwrap();
            seen.acked.push(n_of(&body));
            seen.attempts += 1;
            seen.token = app
                .csrf_token(&http, &seen.cookie)
                .await
                .expect("a new session has its token");
            break;
        }
    }
    while !stop.load(Ordering::Relaxed) {
        let start = Instant::now();
        let res = http
            .post(app.url("/api/counter"))
            .header("cookie", format!("session={}", seen.cookie))
            .header("x-csrf-token", &seen.token)
            .send()
            .await;
        seen.attempts += 1;
        seen.slowest = seen.slowest.max(start.elapsed());
        let res = match res {
            Ok(res) => res,
            Err(_) => {
                seen.transport_errors += 1;
                continue;
            }
        };
        match res.status().as_u16() {
            200 => {
                if session_cookie(&res).is_some_and(|c| c != seen.cookie) {
                    seen.lost_session = true;
                }
                let body: serde_json::Value = res.json().await.unwrap();
                seen.acked.push(n_of(&body));
                let back = *back_at.lock().unwrap();
                if seen.first_ok_after.is_none() && back.is_some_and(|b| start >= b) {
                    seen.first_ok_after = Some(Instant::now());
                }
            }
            503 => {
                seen.unavailable += 1;
                assert_eq!(
                    res.headers().get("retry-after").map(|v| v.as_bytes()),
                    Some(&b"1"[..]),
                    "a 503 says when to retry"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => seen.other_status.push(other),
        }
    }
    seen
}

/// Redis with `appendfsync always`, killed with SIGKILL under load and
/// restarted on the same port and directory: every increment the shop
/// acknowledged with a 2xx is there afterwards; during the outage requests
/// get 503 within the timeouts (no panic, no hang); the app recovers by
/// itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_under_load_loses_no_acknowledged_write_and_recovers() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap();
    let mut server = RedisServer::start_with(&[
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--dir",
        dir,
    ]);
    let app = Arc::new(App::serve(layer(store(&server.url()).await)).await);
    let stop = Arc::new(AtomicBool::new(false));
    let back_at = Arc::new(std::sync::Mutex::new(None));
    let clients: Vec<_> = (0..8)
        .map(|_| tokio::spawn(client_loop(app.clone(), stop.clone(), back_at.clone())))
        .collect();

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let killed = Instant::now();
    server.stop(); // SIGKILL
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let server = tokio::task::spawn_blocking(move || {
        server.restart();
        server
    })
    .await
    .unwrap();
    *back_at.lock().unwrap() = Some(Instant::now());
    let restarted = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::Relaxed);

    let http = client();
    let mut acked_total = 0;
    let mut unavailable_total = 0;
    let mut slowest = Duration::ZERO;
    let mut recovery = Duration::ZERO;
    for handle in clients {
        let seen = handle.await.expect("no client panicked");
        assert_eq!(seen.transport_errors, 0, "no dropped connection (panic)");
        assert!(
            seen.other_status.is_empty(),
            "only 200 or 503: {:?}",
            seen.other_status
        );
        assert!(!seen.lost_session, "a session was lost and replaced");
        assert!(
            seen.acked.windows(2).all(|w| w[0] < w[1]),
            "acknowledged counts rise: {:?}",
            seen.acked
        );
        let res = http
            .get(app.url("/api/session"))
            .header("cookie", format!("session={}", seen.cookie))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let body: serde_json::Value = res.json().await.unwrap();
        let stored = n_of(&body);
        let max_acked = *seen.acked.last().unwrap();
        assert!(
            stored >= max_acked,
            "acknowledged increment lost: stored n = {stored}, acknowledged {max_acked}"
        );
        assert!(
            stored <= seen.attempts,
            "more increments stored ({stored}) than attempted ({})",
            seen.attempts
        );
        let first_ok = seen
            .first_ok_after
            .expect("the app recovers by itself after Redis is back");
        recovery = recovery.max(first_ok - restarted);
        slowest = slowest.max(seen.slowest);
        acked_total += seen.acked.len();
        unavailable_total += seen.unavailable;
    }
    assert!(unavailable_total > 0, "the outage was seen as 503s");
    assert!(
        slowest < REQUEST_BOUND,
        "a request took {slowest:?}: the timeouts must bound it"
    );
    assert!(
        recovery < Duration::from_secs(3),
        "recovered after {recovery:?}"
    );
    drop(server);
    eprintln!(
        "AOF kill: {acked_total} acknowledged increments, {unavailable_total} 503s, \
         outage {:?}, slowest request {slowest:?}, recovered {recovery:?} after restart",
        restarted - killed
    );
}

/// Redis paused (SIGSTOP) for longer than the lock TTL while a request holds
/// the lock: the lock is lost, `commit` fails with `LockLost`, nothing is
/// written, and the lock is free for others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_paused_past_the_lock_ttl_loses_the_lock_and_the_commit_writes_nothing() {
    let server = RedisServer::start();
    let store = store(&server.url()).await;
    let config = SessionConfig::builder()
        .lock(
            LockConfig::default()
                .with_ttl(Duration::from_millis(500))
                .with_wait(Duration::from_secs(1)),
        )
        .build()
        .unwrap();
    let factory = SessionFactory::new(store.clone(), config);
    let first = factory.request(None);
    first.insert("n", &0u64).unwrap();
    assert!(
        first
            .finish(sessionkit_core::Outcome::Success)
            .await
            .error
            .is_none()
    );
    let id = first.id().unwrap();

    let holder = factory.request(id);
    holder.lock().await.unwrap();
    let n: u64 = holder.get("n").await.unwrap().unwrap();
    holder.insert("n", &(n + 1)).unwrap();

    server.pause();
    // (If an assertion below fails, dropping the server still kills it:
    // SIGKILL ends a stopped process too.)
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.resume();
    // Let a renewal find out, then commit.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let err = holder.commit().await.expect_err("the lock was lost");
    assert_eq!(err.kind(), ErrorKind::LockLost, "{err}");
    assert!(err.to_string().contains("lock lost"), "{err}");
    assert!(
        holder
            .finish(sessionkit_core::Outcome::Success)
            .await
            .error
            .is_none()
    );

    let stored = store.load(&id, None).await.unwrap().expect("session kept");
    assert_eq!(
        stored.record.entries.get("n"),
        Some(&b"0"[..]),
        "nothing was written"
    );
    let other = factory.request(id);
    other.lock().await.expect("the lost lock is free");
    other.rollback().await.unwrap();
    store.destroy(&id).await.unwrap();
}

/// A slow Redis (2 s added by a proxy to every reply): requests fail with
/// 503 at the configured response timeout instead of piling up; the store
/// error names the operation and the store; service resumes when the
/// latency goes away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_redis_times_out_at_the_deadline_instead_of_piling_up() {
    let server = RedisServer::start();
    let target = format!("127.0.0.1:{}", server.port()).parse().unwrap();
    let proxy = LatencyProxy::start(target).await;
    let url = format!("redis://{}", proxy.addr());
    let store = store(&url).await;
    let app = App::serve(layer(store.clone())).await;
    let http = client();
    let mut cookies = Vec::new();
    for _ in 0..10 {
        let res = http.post(app.url("/api/counter")).send().await.unwrap();
        assert_eq!(res.status(), 200);
        let cookie = session_cookie(&res).unwrap();
        let token = app
            .csrf_token(&http, &cookie)
            .await
            .expect("a new session has its token");
        cookies.push((cookie, token));
    }

    proxy.set_delay(Duration::from_secs(2));
    let start = Instant::now();
    let requests: Vec<_> = (0..50)
        .map(|i| {
            let http = http.clone();
            let (cookie, token) = cookies[i % cookies.len()].clone();
            let url = app.url(if i % 2 == 0 {
                "/api/session"
            } else {
                "/api/counter"
            });
            tokio::spawn(async move {
                let t = Instant::now();
                let req = if i % 2 == 0 {
                    http.get(url)
                } else {
                    http.post(url)
                };
                let res = req
                    .header("cookie", format!("session={cookie}"))
                    .header("x-csrf-token", token)
                    .send()
                    .await
                    .unwrap();
                (res.status().as_u16(), t.elapsed())
            })
        })
        .collect();
    let mut slowest = Duration::ZERO;
    for r in requests {
        let (status, took) = r.await.unwrap();
        assert_eq!(status, 503, "a store call past its deadline is a 503");
        slowest = slowest.max(took);
    }
    let all = start.elapsed();
    assert!(
        slowest < RESPONSE_TIMEOUT * 5,
        "requests must fail at the deadline ({RESPONSE_TIMEOUT:?} per call), slowest took {slowest:?}"
    );
    assert!(
        all < Duration::from_secs(2),
        "50 requests took {all:?}: they piled up"
    );
    let id = sessionkit::SessionId::parse(&cookies[0].0).unwrap();
    let t = Instant::now();
    let err = store.load(&id, None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StoreUnavailable);
    assert!(
        err.to_string().contains("(load on redis)"),
        "the error names operation and store: {err}"
    );
    assert!(t.elapsed() < RESPONSE_TIMEOUT * 3, "{:?}", t.elapsed());

    proxy.set_delay(Duration::ZERO);
    let back = Instant::now();
    loop {
        let res = http
            .get(app.url("/api/session"))
            .header("cookie", format!("session={}", cookies[0].0))
            .send()
            .await
            .unwrap();
        if res.status() == 200 {
            let body: serde_json::Value = res.json().await.unwrap();
            assert!(n_of(&body) >= 1, "the session survived");
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(5),
            "no recovery once the latency is gone"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "slow redis: 50 concurrent requests all 503 in {all:?} (slowest {slowest:?}); recovered {:?} after the latency went",
        back.elapsed()
    );
}
