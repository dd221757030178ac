//! The session layer over a real Redis: round trips per request counted by
//! the server, and the app riding out a Redis outage.

#![cfg(feature = "redis")]

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use common::{Running, cookie_id, raw};
use sessionkit::redis::RedisStore;

use sessionkit::{CookieConfig, SessionConfig, SessionLayer};
use sessionkit_test_servers::redis::RedisServer;

/// The test routes over Redis, on the running test's framework.
struct App {
    running: Running,
}

impl App {
    async fn over(redis: &RedisServer, config: SessionConfig) -> App {
        let store = RedisStore::builder()
            .response_timeout(Duration::from_millis(500))
            .connect_timeout(Duration::from_millis(500))
            .connect(&redis.url())
            .await
            .unwrap();
        let layer = SessionLayer::builder(store)
            .config(config)
            .cookie(CookieConfig::default())
            .build()
            .unwrap();
        App {
            running: common::serve(vec![layer]).await,
        }
    }

    fn url(&self, path: &str) -> String {
        self.running.url(path)
    }
}

async fn send(method: reqwest::Method, url: String, cookie: Option<&str>) -> reqwest::Response {
    let mut req = raw().request(method, url);
    if let Some(id) = cookie {
        req = req.header("cookie", format!("session={id}"));
    }
    req.send().await.unwrap()
}

http_tests! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn round_trips_per_request_are_counted_by_redis() {
        let redis = RedisServer::start();
        // The default touch rule: a read right after a write finds no touch due.
        let app = App::over(&redis, SessionConfig::default()).await;
        // The same sessions through an app that touches on every read, for the
        // read whose touch is due.
        let touching = App::over(
            &redis,
            SessionConfig::builder()
                .touch_threshold(1.0)
                .build()
                .unwrap(),
        )
        .await;
        let monitor = redis.monitor();
        use reqwest::Method;

        // Warm up: the first use of each script loads it (NOSCRIPT, SCRIPT LOAD).
        let res = send(Method::POST, app.url("/incr"), None).await;
        let warm = cookie_id(&res).unwrap();
        let res = send(Method::GET, touching.url("/get/n"), Some(&warm)).await;
        assert_eq!(res.status(), 200);
        for (m, p) in [
            (Method::GET, "/get/n"),
            (Method::POST, "/set/k/v"),
            (Method::POST, "/incr-locked"),
            (Method::POST, "/regenerate"),
        ] {
            let res = send(m, app.url(p), Some(&warm)).await;
            assert_eq!(res.status(), 200, "{p}");
            if p == "/regenerate" {
                let new = cookie_id(&res).unwrap();
                send(Method::POST, app.url("/destroy"), Some(&new)).await;
            }
        }

        let mark = monitor.mark();
        let res = send(Method::POST, app.url("/incr"), None).await;
        let id = cookie_id(&res).unwrap();
        assert_eq!(monitor.since(mark), ["set"], "new session");

        let mark = monitor.mark();
        send(Method::GET, app.url("/plain"), Some(&id)).await;
        assert!(monitor.since(mark).is_empty(), "untouched");

        let mark = monitor.mark();
        let res = send(Method::GET, app.url("/get/n"), Some(&id)).await;
        assert!(cookie_id(&res).is_none(), "the expiry did not move");
        assert_eq!(res.text().await.unwrap(), "1");
        assert_eq!(monitor.since(mark), ["get"], "read, no touch due");

        let mark = monitor.mark();
        let res = send(Method::GET, touching.url("/get/n"), Some(&id)).await;
        assert!(cookie_id(&res).is_some(), "the touch moved the expiry");
        assert_eq!(
            monitor.since(mark),
            ["get", "evalsha"],
            "read with a due touch: the read, then the touch"
        );

        let mark = monitor.mark();
        send(Method::POST, app.url("/incr"), Some(&id)).await;
        assert_eq!(
            monitor.since(mark),
            ["get", "evalsha"],
            "read + buffered write"
        );

        let mark = monitor.mark();
        send(Method::POST, app.url("/set/k/v"), Some(&id)).await;
        assert_eq!(monitor.since(mark), ["evalsha"], "blind buffered write");

        let mark = monitor.mark();
        let res = send(Method::POST, app.url("/incr-locked"), Some(&id)).await;
        assert_eq!(res.text().await.unwrap(), "3");
        assert_eq!(
            monitor.since(mark),
            ["evalsha", "evalsha"],
            "locked read-modify-write: lock + load, commit + unlock"
        );

        let mark = monitor.mark();
        let res = send(Method::POST, app.url("/regenerate"), Some(&id)).await;
        let new = cookie_id(&res).unwrap();
        assert_eq!(monitor.since(mark), ["evalsha"], "regenerate");

        let mark = monitor.mark();
        send(Method::POST, app.url("/destroy"), Some(&new)).await;
        assert_eq!(monitor.since(mark), ["del"], "destroy");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_outage_answers_503_and_the_app_recovers_by_itself() {
        let mut redis = RedisServer::start();
        let app = App::over(&redis, SessionConfig::default()).await;
        let res = send(reqwest::Method::POST, app.url("/incr"), None).await;
        let id = cookie_id(&res).unwrap();

        redis.stop();
        for path in ["/get/n", "/incr", "/incr-locked"] {
            let method = if path == "/get/n" {
                reqwest::Method::GET
            } else {
                reqwest::Method::POST
            };
            let started = Instant::now();
            let res = send(method, app.url(path), Some(&id)).await;
            assert_eq!(res.status(), 503, "{path}");
            assert_eq!(res.headers()["retry-after"], "1");
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "{path} did not hang"
            );
            assert_eq!(
                res.text().await.unwrap(),
                "session store unavailable, try again later",
                "no details leak"
            );
        }
        // Requests that don't use the session are served all along.
        let res = send(reqwest::Method::GET, app.url("/plain"), Some(&id)).await;
        assert_eq!(res.status(), 200);

        redis.restart();
        let restarted = Instant::now();
        loop {
            let res = send(reqwest::Method::POST, app.url("/incr"), None).await;
            if res.status() == 200 {
                break;
            }
            assert!(
                restarted.elapsed() < Duration::from_secs(2),
                "not recovered within 2 s: {}",
                res.status()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
