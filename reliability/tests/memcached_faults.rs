//! A memcached server stopped under the shop: only the sessions it holds fail, the others are served; after its restart its sessions start afresh.

use std::time::{Duration, Instant};

use reliability::{App, client, session_cookie};
use sessionkit::{SessionId, SessionLayer};
use sessionkit_test_servers::memcached::Memcached;

async fn incr(
    http: &reqwest::Client,
    app: &App,
    (cookie, token): &(String, String),
) -> (u16, Option<u64>, Option<String>) {
    let res = http
        .post(app.url("/api/counter"))
        .header("cookie", format!("session={cookie}"))
        .header("x-csrf-token", token)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let set = session_cookie(&res);
    let n = if status == 200 {
        let body: serde_json::Value = res.json().await.unwrap();
        body["n"].as_u64()
    } else {
        None
    };
    (status, n, set)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_memcached_fails_only_its_share_of_sessions() {
    let a = Memcached::start();
    let mut b = Memcached::start();
    let servers = format!("{},{}", a.addr(), b.addr()).parse().unwrap();
    let store = sessionkit_memcached::MemcachedStore::builder(servers)
        .connect_timeout(Duration::from_millis(500))
        .request_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let app = App::serve(SessionLayer::new(store.clone())).await;
    let http = client();

    let mut sessions = Vec::new();
    for _ in 0..200 {
        let res = http.post(app.url("/api/counter")).send().await.unwrap();
        assert_eq!(res.status(), 200);
        let cookie = session_cookie(&res).unwrap();
        let on_b = store.server_for(&SessionId::parse(&cookie).unwrap()).addr() == b.addr();
        let token = app
            .csrf_token(&http, &cookie)
            .await
            .expect("a new session has its token");
        sessions.push(((cookie, token), on_b));
    }
    let on_b = sessions.iter().filter(|(_, b)| *b).count();
    assert!(
        on_b > 40 && on_b < 160,
        "about half on each server: {on_b} on b"
    );

    b.stop();
    let start = Instant::now();
    for (cookie, on_b) in &sessions {
        let (status, n, _) = incr(&http, &app, cookie).await;
        if *on_b {
            assert_eq!(status, 503, "a session on the stopped server fails");
        } else {
            assert_eq!(
                (status, n),
                (200, Some(2)),
                "a session on the live server works"
            );
        }
    }
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(20),
        "200 requests took {took:?}: failures must be fast"
    );
    // New sessions land on either server by their random id: only those
    // minted for the stopped one fail.
    let mut fresh = (0, 0);
    for _ in 0..100 {
        let res = http.post(app.url("/api/counter")).send().await.unwrap();
        match res.status().as_u16() {
            200 => fresh.0 += 1,
            503 => fresh.1 += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(fresh.0 > 10 && fresh.1 > 10, "{fresh:?}");

    b.restart();
    for (cookie, on_b) in &sessions {
        let (status, n, set) = incr(&http, &app, cookie).await;
        assert_eq!(status, 200, "served again after the restart");
        if *on_b {
            // memcached keeps nothing across a restart: strict mode starts
            // a new session under a new id.
            assert_eq!(n, Some(1));
            assert!(
                set.is_some_and(|c| c != cookie.0),
                "a new id, never the old one"
            );
        } else {
            assert_eq!(n, Some(3));
        }
    }
    eprintln!(
        "memcached: {on_b} of 200 sessions on the stopped server failed with 503, the other {} were served; \
         new sessions {} served / {} refused; 200 requests in {took:?}",
        200 - on_b,
        fresh.0,
        fresh.1
    );
}
