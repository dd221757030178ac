//! The shop's HTTP surface, driven through the real binary on 127.0.0.1 by a
//! cookie-keeping client: one source for both shops. The test crate that
//! includes it names the binary (`crate::BIN`) and serves the shop in
//! process over a given store (`crate::serve`): `tests/shop.rs` of `shop`
//! (axum) and of `shop-actix` (actix-web).

use std::io::Read;
use std::process::{Command, Stdio};

use serde_json::{Value, json};
use sessionkit::store::MemoryStore;

use crate::support::shop::{
    Shop, Store, alternate_400_increments, browser, get, log_in, post_form, post_header, state,
    token_of,
};
use crate::{BIN, serve, support};

fn session_cookie(res: &reqwest::Response) -> Option<String> {
    res.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| {
            c.strip_prefix("session=")
                .map(|r| r.split(';').next().unwrap().to_owned())
        })
}

/// Runs each named `async fn(Store)` once per store, as
/// `memory::<name>`, `postgres::<name>` and `sqlite::<name>`.
macro_rules! on_every_store {
    ($($test:ident),* $(,)?) => {
        on_every_store!(@store memory, $($test),*);
        on_every_store!(@store postgres, $($test),*);
        on_every_store!(@store sqlite, $($test),*);
    };
    (@store $store:ident, $($test:ident),*) => {
        mod $store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::Store::$store()).await
                }
            )*
        }
    };
}

on_every_store!(
    the_shop_serves_its_whole_surface,
    bad_form_input_is_rejected_with_422,
    locked_counter_is_exact_under_concurrency,
    remember_me_gives_a_persistent_cookie_and_plain_login_a_browser_session_one,
    api_session_shows_the_csrf_token_that_the_page_embeds,
    cross_site_posts_are_refused_and_change_nothing,
    posts_with_a_session_need_its_token,
    a_first_login_needs_only_same_origin_headers_and_login_rotates_the_token,
    the_basket_takes_quantities_and_gives_items_back,
    a_browsers_form_redirect_is_not_a_visit,
    work_ms_makes_buffered_increments_lose_and_locked_ones_stay_exact,
    with_the_header_transport_the_json_api_works_with_the_header_alone,
);

/// `SESSION_TRANSPORT=header`: an API client without cookies gets the
/// session's token in `x-session-token` and sends it back; no token or
/// cookie is asked for, and no cookie is set.
async fn with_the_header_transport_the_json_api_works_with_the_header_alone(store: Store) {
    let shop = store.shop(&[("SESSION_TRANSPORT", "header")]);
    // Keeps no cookies, follows no redirect.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = client.post(shop.url("/api/counter")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(session_cookie(&res), None, "no cookie in header mode");
    let token = res.headers()["x-session-token"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(!token.is_empty());
    assert_eq!(res.json::<Value>().await.unwrap()["n"], 1);
    for n in 2..=3 {
        let res = post_header(
            &client,
            shop.url("/api/counter/buffered"),
            "x-session-token",
            &token,
        )
        .await;
        assert_eq!(res.status(), 200);
        assert_eq!(
            res.json::<Value>().await.unwrap()["n"],
            n,
            "the same session"
        );
    }
    let v: Value = client
        .get(shop.url("/api/session"))
        .header("x-session-token", &token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["n"], 3);
    // Logout answers an empty token: the session is gone.
    let res = post_header(&client, shop.url("/logout"), "x-session-token", &token).await;
    assert_eq!(res.status(), 303);
    let res = client
        .get(shop.url("/api/session"))
        .header("x-session-token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.json::<Value>().await.unwrap()["n"],
        0,
        "the old token reaches nothing"
    );
}

async fn the_shop_serves_its_whole_surface(store: Store) {
    let shop = store.shop(&[]);
    let client = browser();

    let health = client.get(shop.url("/healthz")).send().await.unwrap();
    assert_eq!(health.text().await.unwrap(), "ok");

    // Without a session the page shows no visits and stores nothing.
    let page = client.get(shop.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(session_cookie(&page), None, "a GET creates no session");
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"<strong id="visits">0</strong>"#), "{html}");

    // The basket, in a locked transaction, with a flash message. The first
    // POST starts the session: it has no token to show yet.
    let res = post_form(&client, shop.url("/basket"), &[("item", "tea")]).await;
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/");
    let token = token_of(&client, &shop).await;
    let res = post_form(
        &client,
        shop.url("/basket"),
        &[("item", "<scones>"), ("csrf_token", &token)],
    )
    .await;
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/");
    let html = get(&client, shop.url("/")).await.text().await.unwrap();
    assert!(
        html.contains(r#"<tr data-item="tea" data-quantity="1">"#)
            && html.contains(r#"<tr data-item="&lt;scones&gt;" data-quantity="1">"#)
            && !html.contains("<scones>"),
        "escaped: {html}"
    );
    assert!(
        html.contains("Added &lt;scones&gt; to your basket."),
        "{html}"
    );
    // The page counts the visits of a session that exists.
    assert!(html.contains(r#"<strong id="visits">1</strong>"#), "{html}");
    let html = get(&client, shop.url("/")).await.text().await.unwrap();
    assert!(!html.contains(r#"id="flash""#), "a flash shows once");
    assert!(html.contains(r#"<strong id="visits">2</strong>"#), "{html}");

    // Login regenerates the id (and the token).
    let before = state(&client, &shop).await;
    assert_eq!(before["basket"], serde_json::json!(["tea", "<scones>"]));
    let res = post_form(
        &client,
        shop.url("/login"),
        &[("user", "ada"), ("csrf_token", &token)],
    )
    .await;
    assert_eq!(res.status(), 303);
    assert!(session_cookie(&res).is_some(), "login sends the new id");
    let after = state(&client, &shop).await;
    assert_eq!(after["user"], "ada");
    assert_eq!(
        after["basket"], before["basket"],
        "the basket survives login"
    );
    let token = token_of(&client, &shop).await;

    // Counters: locked and buffered, the token in the header.
    for expected in 1..=3 {
        let v: Value = post_header(&client, shop.url("/api/counter"), "x-csrf-token", &token)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(v["n"], expected);
    }
    let v: Value = post_header(
        &client,
        shop.url("/api/counter/buffered"),
        "x-csrf-token",
        &token,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(v["n"], 4);

    // Clearing the basket.
    let res = post_form(
        &client,
        shop.url("/basket/clear"),
        &[("csrf_token", &token)],
    )
    .await;
    assert_eq!(res.status(), 303);
    assert_eq!(state(&client, &shop).await["basket"], serde_json::json!([]));

    // Logout ends the session: no user, no basket, no counter.
    let res = post_form(&client, shop.url("/logout"), &[("csrf_token", &token)]).await;
    assert_eq!(res.status(), 303);
    let gone = state(&client, &shop).await;
    assert_eq!(gone["user"], Value::Null);
    assert_eq!(gone["n"], 0);
    let html = get(&client, shop.url("/")).await.text().await.unwrap();
    assert!(html.contains("You are logged out."), "{html}");
    assert!(
        html.contains(r#"<strong id="visits">1</strong>"#),
        "a new session, for the message: {html}"
    );
}

async fn bad_form_input_is_rejected_with_422(store: Store) {
    let shop = store.shop(&[]);
    let client = browser();
    let res = post_form(&client, shop.url("/basket"), &[("item", "   ")]).await;
    assert_eq!(res.status(), 422);
    let res = post_form(&client, shop.url("/login"), &[("user", "x".repeat(65))]).await;
    assert_eq!(res.status(), 422);
}

#[tokio::test]
async fn a_bad_session_variable_stops_the_shop_with_a_clear_error() {
    let out = Command::new(BIN)
        .env("SHOP_ADDR", "127.0.0.1:0")
        .env("SESSION_DRIVER", "mongo")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("SESSION_DRIVER"), "{stderr}");
    assert!(
        stderr.contains("memory"),
        "lists the known drivers: {stderr}"
    );
}

async fn locked_counter_is_exact_under_concurrency(store: Store) {
    let shop = store.shop(&[]);
    let client = browser();
    let token = log_in(&client, &shop).await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let client = client.clone();
        let url = shop.url("/api/counter");
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..25 {
                let res = post_header(&client, &url, "x-csrf-token", &token).await;
                assert_eq!(res.status(), 200);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(state(&client, &shop).await["n"], 200);
}

async fn remember_me_gives_a_persistent_cookie_and_plain_login_a_browser_session_one(store: Store) {
    let shop = store.shop(&[("SESSION_PERSISTENT_COOKIE", "false")]);
    let plain = browser();
    let res = post_form(&plain, shop.url("/login"), &[("user", "ada")]).await;
    let cookie = res.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        !cookie.contains("Max-Age"),
        "browser-session cookie: {cookie}"
    );

    let remembered = browser();
    let res = post_form(
        &remembered,
        shop.url("/login"),
        &[("user", "bob"), ("remember", "on")],
    )
    .await;
    let cookie = res.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("Max-Age=2592000"),
        "30-day cookie: {cookie}"
    );
}

/// Runs 400 locked increments of one session from 16 concurrent clients
/// that alternate between two shop processes on `envs`, and checks that
/// all 400 were kept.
async fn exact_on_two(envs: &[(&str, &str)]) {
    assert_eq!(
        increments_across_two_processes(envs, "/api/counter").await,
        400
    );
}

/// Sends 400 increments to `route` for one session from 16 concurrent
/// clients that alternate between two shop processes; returns the final `n`.
async fn increments_across_two_processes(envs: &[(&str, &str)], route: &str) -> u64 {
    let a = Shop::start(envs);
    let b = Shop::start(envs);
    let client = browser();
    // The session starts on A...
    let token = log_in(&client, &a).await;
    // ...and B reads it.
    let on_b = state(&client, &b).await;
    assert_eq!(
        on_b["user"], "ada",
        "a session made on one process is read on the other"
    );
    let start = std::time::Instant::now();
    alternate_400_increments(&client, &token, [a.url(route), b.url(route)]).await;
    println!(
        "400 increments to {route} across two processes in {:?}",
        start.elapsed()
    );
    state(&client, &a).await["n"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shop_processes_on_one_save_path_count_exactly() {
    let dir = std::env::temp_dir().join(format!("shop-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    exact_on_two(&[
        ("SESSION_DRIVER", "file"),
        ("SESSION_FILE_PATH", dir.to_str().unwrap()),
    ])
    .await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shop_processes_on_two_memcached_servers_count_exactly() {
    let (m1, m2) = (support::memcached(), support::memcached());
    let servers = format!("{},{}", m1.addr(), m2.addr());
    exact_on_two(&[
        ("SESSION_DRIVER", "memcached"),
        ("SESSION_MEMCACHED_SERVERS", &servers),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shop_processes_on_one_redis_count_exactly() {
    let redis = support::redis();
    exact_on_two(&[
        ("SESSION_DRIVER", "redis"),
        ("SESSION_REDIS_URL", &redis.url()),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shop_processes_on_one_postgres_count_exactly() {
    exact_on_two(&Store::postgres().envs(&[])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shop_processes_on_one_sqlite_file_count_exactly() {
    exact_on_two(&Store::sqlite().envs(&[])).await;
}

/// The same race with buffered increments loses updates — by design: each
/// request reads `n`, adds one and writes it back without a lock. This test
/// records how many, so the docs can say honestly when to lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_increments_across_two_processes_lose_updates_and_say_how_many() {
    let redis = support::redis();
    let url = redis.url();
    let envs = [
        ("SESSION_DRIVER", "redis"),
        ("SESSION_REDIS_URL", url.as_str()),
    ];
    let n = increments_across_two_processes(&envs, "/api/counter/buffered").await;
    let lost = 400 - n;
    println!("buffered increments across two processes: {n} of 400 kept, {lost} lost");
    assert!((1..=400).contains(&n));
}

fn set_cookies(res: &reqwest::Response) -> Vec<String> {
    res.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

/// A client logged in as `user` (a first login: no session before it) with
/// `tea` in its basket and `n` = 1; returns it and its token.
async fn logged_in_with_a_basket(shop: &Shop, user: &str) -> (reqwest::Client, String) {
    let client = browser();
    let res = post_form(&client, shop.url("/login"), &[("user", user)]).await;
    assert_eq!(res.status(), 303);
    let token = token_of(&client, shop).await;
    let res = post_form(
        &client,
        shop.url("/basket"),
        &[("item", "tea"), ("csrf_token", &token)],
    )
    .await;
    assert_eq!(res.status(), 303);
    let res = post_header(&client, shop.url("/api/counter"), "x-csrf-token", &token).await;
    assert_eq!(res.status(), 200);
    let v = state(&client, shop).await;
    assert_eq!(v["user"], user);
    assert_eq!(v["basket"], json!(["tea"]));
    assert_eq!(v["n"], 1);
    (client, token)
}

/// Every `POST` route with a form that would change something, carrying
/// `token` (as the field `csrf_token`) when given.
fn every_post(token: Option<&str>) -> Vec<(&'static str, Vec<(&'static str, String)>)> {
    let routes: [(&str, &[(&str, &str)]); 6] = [
        ("/basket", &[("item", "forged")]),
        ("/basket/clear", &[]),
        ("/login", &[("user", "eve")]),
        ("/logout", &[]),
        ("/api/counter", &[]),
        ("/api/counter/buffered", &[]),
    ];
    routes
        .into_iter()
        .map(|(path, fields)| {
            let mut form: Vec<(&str, String)> =
                fields.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
            if let Some(token) = token {
                form.push(("csrf_token", token.to_owned()));
            }
            (path, form)
        })
        .collect()
}

/// Headers of requests a browser sends for another site's page.
const FOREIGN: [(&str, &str); 5] = [
    ("sec-fetch-site", "cross-site"),
    ("sec-fetch-site", "same-site"),
    ("origin", "http://evil.example"),
    ("origin", "http://127.0.0.1:1"),
    ("origin", "null"),
];

#[tokio::test]
async fn fifty_cookieless_gets_store_no_session_and_set_no_cookie() {
    let store = MemoryStore::builder().sweep_interval(None).build();
    let base = serve(store.clone()).await;
    // No cookie store: every request comes without a cookie.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for path in ["/", "/api/session"] {
        for _ in 0..25 {
            let res = client.get(format!("{base}{path}")).send().await.unwrap();
            assert_eq!(res.status(), 200);
            assert_eq!(set_cookies(&res), Vec::<String>::new(), "GET {path}");
        }
    }
    assert_eq!(store.len(), 0, "sessions stored by 50 cookie-less GETs");
    let html = get(&client, format!("{base}/")).await.text().await.unwrap();
    assert!(html.contains(r#"<strong id="visits">0</strong>"#), "{html}");
    assert!(!html.contains("csrf_token"), "no session, no token: {html}");
}

async fn api_session_shows_the_csrf_token_that_the_page_embeds(store: Store) {
    let shop = store.shop(&[]);
    let client = browser();
    let v = state(&client, &shop).await;
    assert!(
        v.as_object().unwrap().contains_key("csrf_token"),
        "csrf_token is part of the surface: {v}"
    );
    assert_eq!(v["csrf_token"], Value::Null, "no session, no token");

    let (client, token) = logged_in_with_a_basket(&shop, "ada").await;
    assert!(
        token.len() == 43
            && token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "256 bits in base64url: {token}"
    );
    assert_eq!(token_of(&client, &shop).await, token, "stable");
    let html = get(&client, shop.url("/")).await.text().await.unwrap();
    let field = format!(r#"<input type="hidden" name="csrf_token" value="{token}">"#);
    assert_eq!(
        html.matches(&field).count(),
        html.matches("<form").count(),
        "every form carries the token: {html}"
    );
}

async fn cross_site_posts_are_refused_and_change_nothing(store: Store) {
    let shop = store.shop(&[]);
    let (client, token) = logged_in_with_a_basket(&shop, "ada").await;
    let before = state(&client, &shop).await;
    for (header, value) in FOREIGN {
        // With the right token, in the form and the header: the origin alone
        // decides.
        for (path, form) in every_post(Some(&token)) {
            let res = client
                .post(shop.url(path))
                .header(header, value)
                .header("x-csrf-token", &token)
                .form(&form)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 403, "{header}: {value} to {path}");
            assert_eq!(set_cookies(&res), Vec::<String>::new(), "{path}");
        }
    }
    assert_eq!(state(&client, &shop).await, before, "nothing changed");

    // A login CSRF (logging the victim in as the attacker) needs no session
    // and no token: the origin check alone refuses it.
    let victim = browser();
    for (header, value) in FOREIGN {
        let res = victim
            .post(shop.url("/login"))
            .header(header, value)
            .form(&[("user", "eve")])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403, "{header}: {value}");
        assert_eq!(set_cookies(&res), Vec::<String>::new());
    }
    assert_eq!(state(&victim, &shop).await["user"], Value::Null);
}

async fn posts_with_a_session_need_its_token(store: Store) {
    let shop = store.shop(&[]);
    let (client, token) = logged_in_with_a_basket(&shop, "ada").await;
    let (_, bobs_token) = logged_in_with_a_basket(&shop, "bob").await;
    let before = state(&client, &shop).await;
    let mut flipped = token.clone().into_bytes();
    flipped[42] = if flipped[42] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    let wrong = [
        None,
        Some(""),
        Some("x"),
        Some(&token[..42]),
        Some(flipped.as_str()),
        Some(bobs_token.as_str()),
    ];
    for bad in wrong {
        for (path, form) in every_post(bad) {
            let res = post_form(&client, shop.url(path), &form).await;
            assert_eq!(res.status(), 403, "field {bad:?} to {path}");
        }
        if let Some(bad) = bad {
            for (path, form) in every_post(None) {
                let res = client
                    .post(shop.url(path))
                    .header("x-csrf-token", bad)
                    .form(&form)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 403, "header {bad:?} to {path}");
            }
        }
    }
    assert_eq!(state(&client, &shop).await, before, "nothing changed");

    // The right token, as a form field and as a header, from a browser's
    // same-origin form and from a client that sends no origin at all.
    let res = client
        .post(shop.url("/basket"))
        .header("sec-fetch-site", "same-origin")
        .header("origin", &shop.base)
        .form(&[("item", "jam"), ("csrf_token", &token)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    for (route, n) in [("/api/counter", 2), ("/api/counter/buffered", 3)] {
        let res = post_header(&client, shop.url(route), "x-csrf-token", &token).await;
        assert_eq!(res.status(), 200, "{route}");
        assert_eq!(res.json::<Value>().await.unwrap()["n"], n);
    }
    assert_eq!(state(&client, &shop).await["basket"], json!(["tea", "jam"]));
    let res = post_header(&client, shop.url("/basket/clear"), "x-csrf-token", &token).await;
    assert_eq!(res.status(), 303);
    assert_eq!(state(&client, &shop).await["basket"], json!([]));
    let res = post_form(&client, shop.url("/logout"), &[("csrf_token", &token)]).await;
    assert_eq!(res.status(), 303);
    assert_eq!(state(&client, &shop).await["user"], Value::Null);
}

async fn a_first_login_needs_only_same_origin_headers_and_login_rotates_the_token(store: Store) {
    let shop = store.shop(&[]);
    let client = browser();
    let res = client
        .post(shop.url("/login"))
        .header("sec-fetch-site", "same-origin")
        .header("origin", &shop.base)
        .form(&[("user", "ada")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    assert!(session_cookie(&res).is_some(), "the login starts a session");
    assert_eq!(state(&client, &shop).await["user"], "ada");
    let first = token_of(&client, &shop).await;

    // Logging in again from the session regenerates the id and the token.
    let res = post_form(
        &client,
        shop.url("/login"),
        &[("user", "bob"), ("csrf_token", &first)],
    )
    .await;
    assert_eq!(res.status(), 303);
    let second = token_of(&client, &shop).await;
    assert_ne!(first, second, "login rotates the token");
    let res = post_header(&client, shop.url("/api/counter"), "x-csrf-token", &first).await;
    assert_eq!(res.status(), 403, "the token from before the login is void");
    let res = post_header(&client, shop.url("/api/counter"), "x-csrf-token", &second).await;
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn shop_max_sessions_bounds_the_memory_store() {
    let shop = Shop::start(&[("SHOP_MAX_SESSIONS", "3")]);
    let clients: Vec<_> = (0..5).map(|_| browser()).collect();
    for (i, client) in clients.iter().enumerate() {
        let res = post_form(client, shop.url("/login"), &[("user", format!("user{i}"))]).await;
        assert_eq!(res.status(), 303);
        // Distinct expiries, so that "closest to expiry" is one session.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let mut users = Vec::new();
    for client in &clients {
        users.push(state(client, &shop).await["user"].clone());
    }
    assert_eq!(
        users,
        [
            Value::Null,
            Value::Null,
            json!("user2"),
            json!("user3"),
            json!("user4")
        ],
        "the two sessions closest to expiry were evicted"
    );
}

#[tokio::test]
async fn a_bad_shop_max_sessions_stops_the_shop_with_a_clear_error() {
    for (envs, says) in [
        (&[("SHOP_MAX_SESSIONS", "lots")][..], "lots"),
        (&[("SHOP_MAX_SESSIONS", "0")][..], "at least 1"),
        (
            &[("SHOP_MAX_SESSIONS", "10"), ("SESSION_DRIVER", "noop")][..],
            "memory",
        ),
    ] {
        let mut child = Command::new(BIN)
            .env("SHOP_ADDR", "127.0.0.1:0")
            .envs(envs.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // A shop that accepts the value serves until killed.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        assert!(
            status.is_some_and(|s| !s.success()),
            "{envs:?}: the shop must refuse to start, got {status:?}"
        );
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        assert!(stderr.contains("SHOP_MAX_SESSIONS"), "{stderr}");
        assert!(stderr.contains(says), "{envs:?}: {stderr}");
    }
}

/// The shop in process over a counting memory store, and a client logged
/// in as `ada` there.
async fn logged_in_over_a_counting_store() -> (
    sessionkit_core::testkit::CountingStore<MemoryStore>,
    String,
    reqwest::Client,
) {
    let store = sessionkit_core::testkit::CountingStore::new(
        MemoryStore::builder().sweep_interval(None).build(),
    );
    let base = serve(store.clone()).await;
    let client = browser();
    let res = post_form(&client, format!("{base}/login"), &[("user", "ada")]).await;
    assert_eq!(res.status(), 303);
    (store, base, client)
}

/// The token check reads the session as the handler's first access would
/// (a load, or a lock that reads in the same call), so it costs no round
/// trip beyond the handler's own; the origin check costs none at all.
#[tokio::test]
async fn the_csrf_check_adds_no_store_round_trip() {
    let (store, base, client) = logged_in_over_a_counting_store().await;
    let v: Value = get(&client, format!("{base}/api/session"))
        .await
        .json()
        .await
        .unwrap();
    let token = v["csrf_token"].as_str().unwrap().to_owned();

    let _ = store.take();
    let post = |path: &str, token: &str| {
        client
            .post(format!("{base}{path}"))
            .header("x-csrf-token", token)
            .send()
    };
    assert_eq!(post("/api/counter", &token).await.unwrap().status(), 200);
    let calls = store.take();
    assert_eq!(
        (calls.lock, calls.apply, calls.total()),
        (1, 1, 2),
        "locked: {calls:?}"
    );
    assert_eq!(
        post("/api/counter/buffered", &token)
            .await
            .unwrap()
            .status(),
        200
    );
    let calls = store.take();
    assert_eq!(
        (calls.load, calls.apply, calls.total()),
        (1, 1, 2),
        "buffered: {calls:?}"
    );

    // Refused by its origin: no store call at all.
    let res = client
        .post(format!("{base}/api/counter"))
        .header("sec-fetch-site", "cross-site")
        .header("x-csrf-token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(store.take().total(), 0);
    // A session that a POST starts is born with its token: reading it
    // afterwards is a read, nothing more.
    let api = browser();
    let res = api
        .post(format!("{base}/api/counter"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let _ = store.take();
    let v: Value = get(&api, format!("{base}/api/session"))
        .await
        .json()
        .await
        .unwrap();
    assert!(v["csrf_token"].is_string(), "{v}");
    let calls = store.take();
    assert_eq!((calls.load, calls.total()), (1, 1), "{calls:?}");

    // Refused by its token: the read that found it wrong, nothing written.
    assert_eq!(
        post("/api/counter/buffered", "nope")
            .await
            .unwrap()
            .status(),
        403
    );
    let calls = store.take();
    assert_eq!((calls.load, calls.total()), (1, 1), "{calls:?}");
}

async fn the_basket_takes_quantities_and_gives_items_back(store: Store) {
    let shop = store.shop(&[]);
    let (client, token) = logged_in_with_a_basket(&shop, "ada").await;
    let post = |path: &'static str, fields: Vec<(&'static str, &'static str)>| {
        let mut form = fields;
        form.push(("csrf_token", token.as_str()));
        client.post(shop.url(path)).form(&form).send()
    };
    let res = post("/basket", vec![("item", "jam"), ("quantity", "3")])
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(
        state(&client, &shop).await["basket"],
        json!(["tea", "jam", "jam", "jam"])
    );
    for bad in ["0", "100", "two", "", "-1"] {
        let res = post("/basket", vec![("item", "jam"), ("quantity", bad)])
            .await
            .unwrap();
        assert_eq!(res.status(), 422, "quantity {bad:?}");
        let res = post("/basket/remove", vec![("item", "jam"), ("quantity", bad)])
            .await
            .unwrap();
        assert_eq!(res.status(), 422, "quantity {bad:?} to remove");
    }
    let html = get(&client, shop.url("/")).await.text().await.unwrap();
    assert!(html.contains("Added 3 × jam to your basket."), "{html}");
    // £6.50 + 3 × £4.20
    assert!(
        html.contains(r#"<td class="num" id="basket-total">£19.10</td>"#),
        "{html}"
    );
    assert!(html.contains(r#"<tr data-item="jam" data-quantity="3">"#));

    let res = post("/basket/remove", vec![("item", "jam")]).await.unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(
        state(&client, &shop).await["basket"],
        json!(["tea", "jam", "jam"])
    );
    let res = post("/basket/remove", vec![("item", "jam"), ("quantity", "9")])
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(state(&client, &shop).await["basket"], json!(["tea"]));
    let res = post("/basket/remove", vec![("item", "jam")]).await.unwrap();
    assert_eq!(res.status(), 303);
    let html = get(&client, shop.url("/")).await.text().await.unwrap();
    assert!(html.contains("There is no jam in your basket."), "{html}");
    let res = post("/basket/remove", vec![("item", "tea")]).await.unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(state(&client, &shop).await["basket"], json!([]));

    // Removing needs the token like every POST.
    let res = post_form(&client, shop.url("/basket/remove"), &[("item", "tea")]).await;
    assert_eq!(res.status(), 403);
}

/// A browser follows the 303 of a form by itself; the page it lands on is
/// the form's answer, not a visit. It sends `Origin` with every `POST`.
async fn a_browsers_form_redirect_is_not_a_visit(store: Store) {
    let shop = store.shop(&[]);
    let client = browser();
    let visits = || async {
        let html = get(&client, shop.url("/")).await.text().await.unwrap();
        let at = html.find(r#"<strong id="visits">"#).unwrap() + 20;
        html[at..at + html[at..].find('<').unwrap()]
            .parse::<u64>()
            .unwrap()
    };
    let res = client
        .post(shop.url("/login"))
        .header("origin", &shop.base)
        .form(&[("user", "ada")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(visits().await, 0, "the landing after the login");
    assert_eq!(visits().await, 1, "a visit");
    let token = token_of(&client, &shop).await;
    for (path, form) in [
        ("/basket", vec![("item", "tea"), ("csrf_token", &token)]),
        (
            "/basket/remove",
            vec![("item", "tea"), ("csrf_token", &token)],
        ),
        ("/basket/clear", vec![("csrf_token", &token)]),
    ] {
        let res = client
            .post(shop.url(path))
            .header("origin", &shop.base)
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 303, "{path}");
        assert_eq!(visits().await, 1, "the landing after {path}");
    }
    assert_eq!(visits().await, 2, "a visit");
    // A client that sends no Origin: its GET is a visit.
    let res = post_form(
        &client,
        shop.url("/basket"),
        &[("item", "tea"), ("csrf_token", &token)],
    )
    .await;
    assert_eq!(res.status(), 303);
    assert_eq!(visits().await, 3);
}

#[tokio::test]
async fn the_page_assets_touch_no_session_and_the_page_has_a_csp() {
    let (store, base, client) = logged_in_over_a_counting_store().await;
    let _ = store.take();
    for (path, content_type, says) in [
        ("/assets/shop.css", "text/css; charset=utf-8", ".race"),
        (
            "/assets/shop.js",
            "text/javascript; charset=utf-8",
            "x-csrf-token",
        ),
    ] {
        let res = client.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        assert_eq!(res.headers()["content-type"], content_type, "{path}");
        assert_eq!(set_cookies(&res), Vec::<String>::new(), "{path}");
        assert!(res.text().await.unwrap().contains(says), "{path}");
    }
    assert_eq!(store.take().total(), 0, "assets make no store call");
    let page = client.get(format!("{base}/")).send().await.unwrap();
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"<script src="/assets/shop.js" defer></script>"#));
    assert!(!html.contains("<script>"), "no inline script under the CSP");
}

/// With a few milliseconds of work between the read and the write,
/// concurrent buffered increments overlap and lose updates even on the
/// memory store; locked ones stay exact. This is what the race panel shows.
async fn work_ms_makes_buffered_increments_lose_and_locked_ones_stay_exact(store: Store) {
    let shop = store.shop(&[]);
    let client = browser();
    let token = log_in(&client, &shop).await;
    let burst = |route: &'static str| {
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let client = client.clone();
            let url = shop.url(route);
            let token = token.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..5 {
                    let res = post_header(&client, &url, "x-csrf-token", &token).await;
                    assert_eq!(res.status(), 200);
                }
            }));
        }
        async move {
            for t in tasks {
                t.await.unwrap();
            }
        }
    };
    burst("/api/counter/buffered?work_ms=20").await;
    let buffered = state(&client, &shop).await["n"].as_u64().unwrap();
    println!("buffered with 20 ms of work: {buffered} of 80 kept");
    assert!(buffered < 80, "buffered increments overlap and lose");
    burst("/api/counter?work_ms=5").await;
    assert_eq!(state(&client, &shop).await["n"], buffered + 80, "locked");

    for (query, status) in [("work_ms=51", 422), ("work_ms=x", 400), ("work_ms=-1", 400)] {
        for route in ["/api/counter", "/api/counter/buffered"] {
            let res = post_header(
                &client,
                shop.url(&format!("{route}?{query}")),
                "x-csrf-token",
                &token,
            )
            .await;
            assert_eq!(res.status(), status, "{route}?{query}");
        }
    }
    assert_eq!(state(&client, &shop).await["n"], buffered + 80, "unchanged");
}

/// Both shops' routers answer alike outside the surface: another method on
/// a known path is 405, an unknown path 404; neither starts a session.
#[tokio::test]
async fn a_known_path_with_another_method_is_405_and_an_unknown_path_404() {
    let shop = Shop::start(&[]);
    let client = browser();
    for (method, path, status) in [
        (reqwest::Method::GET, "/basket", 405),
        (reqwest::Method::GET, "/api/counter", 405),
        (reqwest::Method::POST, "/healthz", 405),
        (reqwest::Method::GET, "/nope", 404),
        (reqwest::Method::POST, "/nope", 404),
    ] {
        let res = client
            .request(method.clone(), shop.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), status, "{method} {path}");
        assert_eq!(session_cookie(&res), None, "{method} {path}");
    }
}

/// A client that keeps cookies and says it is `device`.
fn device(device: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(device)
        .build()
        .unwrap()
}

async fn sessions_of(client: &reqwest::Client, shop: &Shop) -> Vec<Value> {
    let res = get(client, shop.url("/api/sessions")).await;
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.unwrap();
    v["sessions"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_sees_and_signs_out_their_sessions_on_other_devices_in_memory() {
    a_user_sees_and_signs_out_their_sessions_on_other_devices(Store::memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_sees_and_signs_out_their_sessions_on_other_devices_on_sqlite() {
    a_user_sees_and_signs_out_their_sessions_on_other_devices(Store::sqlite()).await;
}

/// `GET /api/sessions`, `POST /api/sessions/revoke`, `POST
/// /api/sessions/revoke-others` and `GET /account` on a store that keeps an
/// owner index: two devices of ada, one of bob.
async fn a_user_sees_and_signs_out_their_sessions_on_other_devices(store: Store) {
    let shop = store.shop(&[]);
    let nobody = browser();
    assert_eq!(get(&nobody, shop.url("/api/sessions")).await.status(), 401);
    let account = get(&nobody, shop.url("/account")).await;
    assert_eq!(account.status(), 200);
    assert!(account.text().await.unwrap().contains("not-logged-in"));

    let (laptop, phone, bobs) = (device("laptop"), device("phone"), device("bob's"));
    let laptop_token = log_in(&laptop, &shop).await;
    let phone_token = log_in(&phone, &shop).await;
    let res = post_form(&bobs, shop.url("/login"), &[("user", "bob")]).await;
    assert_eq!(res.status(), 303);

    let listed = sessions_of(&laptop, &shop).await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    let mine: Vec<_> = listed.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0]["user_agent"], "laptop");
    let on_phone = listed.iter().find(|s| s["user_agent"] == "phone").unwrap();
    let phone_handle = on_phone["handle"].as_str().unwrap().to_owned();
    for s in &listed {
        let created = s["created"].as_u64().unwrap();
        let seen = s["last_seen"].as_u64().unwrap();
        assert!(
            created <= seen && seen < s["expires"].as_u64().unwrap(),
            "{s}"
        );
    }
    let page = get(&laptop, shop.url("/account"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        page.contains(&phone_handle) && page.contains("this-device"),
        "{page}"
    );

    // Bob cannot sign out ada's phone with its handle.
    let bob_token = token_of(&bobs, &shop).await;
    let res = bobs
        .post(shop.url("/api/sessions/revoke"))
        .header("x-csrf-token", &bob_token)
        .form(&[("handle", phone_handle.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(state(&phone, &shop).await["user"], "ada");
    // Nor can a forged request from another site: no token.
    let res = laptop
        .post(shop.url("/api/sessions/revoke"))
        .form(&[("handle", phone_handle.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);

    // The laptop signs the phone out: the phone is logged out at once.
    let res = laptop
        .post(shop.url("/api/sessions/revoke"))
        .header("x-csrf-token", &laptop_token)
        .form(&[("handle", phone_handle.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(state(&phone, &shop).await["user"], Value::Null);
    assert_eq!(sessions_of(&laptop, &shop).await.len(), 1);
    let _ = phone_token;

    // Sign out everywhere else: a second phone login goes, the laptop stays.
    let phone = device("phone");
    log_in(&phone, &shop).await;
    assert_eq!(sessions_of(&laptop, &shop).await.len(), 2);
    let res = post_header(
        &laptop,
        shop.url("/api/sessions/revoke-others"),
        "x-csrf-token",
        &laptop_token,
    )
    .await;
    assert_eq!(res.status(), 204);
    assert_eq!(state(&phone, &shop).await["user"], Value::Null);
    assert_eq!(state(&laptop, &shop).await["user"], "ada");
    assert_eq!(sessions_of(&bobs, &shop).await.len(), 1, "bob's untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_sees_and_signs_out_their_sessions_on_other_devices_on_postgres() {
    a_user_sees_and_signs_out_their_sessions_on_other_devices(Store::postgres()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_sees_and_signs_out_their_sessions_on_other_devices_on_redis() {
    a_user_sees_and_signs_out_their_sessions_on_other_devices(Store::redis()).await;
}

/// A store without an owner index (memcached, which cannot keep a
/// reliable one): logins work, the list of sessions answers 501 with a
/// reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_owner_index_the_sessions_api_says_so() {
    let memcached = support::memcached();
    let shop = Shop::start(&[
        ("SESSION_DRIVER", "memcached"),
        ("SESSION_MEMCACHED_SERVERS", &memcached.addr()),
    ]);
    let client = browser();
    log_in(&client, &shop).await;
    assert_eq!(state(&client, &shop).await["user"], "ada");
    let res = get(&client, shop.url("/api/sessions")).await;
    assert_eq!(res.status(), 501);
    assert!(res.text().await.unwrap().contains("keeps no list"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_sees_and_signs_out_their_sessions_on_other_devices_in_files() {
    a_user_sees_and_signs_out_their_sessions_on_other_devices(Store::files()).await;
}
