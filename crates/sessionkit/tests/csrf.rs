//! The CSRF layer (`CsrfLayer`, `actix::CsrfMiddleware`) through a real
//! server on 127.0.0.1 driven by a real client, on axum and on actix-web:
//! the matrix of the issue (safe methods, missing, stale and right tokens,
//! cross-site and foreign origins, the allow-list), its store round trips,
//! and what a refused request leaves behind.

#[macro_use]
mod common;

use common::{Server, raw};
use sessionkit::store::MemoryStore;
use sessionkit::{CsrfLayer, Transport};
use sessionkit_core::testkit::{Calls, CountingStore};

fn store() -> CountingStore<MemoryStore> {
    CountingStore::new(MemoryStore::builder().sweep_interval(None).build())
}

/// A server with the CSRF layer of the default settings.
async fn server() -> Server {
    Server::guarded(store(), |b| b, |layer| Some(CsrfLayer::new(layer))).await
}

/// A request to `server`, with the session cookie `id` when given.
fn request(server: &Server, method: &str, path: &str, id: Option<&str>) -> reqwest::RequestBuilder {
    let mut req = raw().request(method.parse().unwrap(), server.url(path));
    if let Some(id) = id {
        req = req.header("cookie", format!("session={id}"));
    }
    req
}

/// A user with a session holding `n = 1` and the session's token; the store
/// counters start from zero after it.
async fn logged_in(server: &Server) -> (String, String) {
    // No session yet: the origin check alone judges it, and it passes.
    let res = request(server, "POST", "/incr", None).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let id = common::cookie_id(&res).expect("a new session");
    let res = request(server, "GET", "/csrf-token", Some(&id))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let token = res.text().await.unwrap();
    assert_eq!(token.len(), 43, "base64url of 256 bits");
    server.store.take();
    (id, token)
}

async fn n_of(server: &Server, id: &str) -> String {
    let res = request(server, "GET", "/get/n", Some(id))
        .send()
        .await
        .unwrap();
    res.text().await.unwrap()
}

http_tests! {
    #[tokio::test]
    async fn safe_methods_are_never_checked() {
        let server = server().await;
        let (id, _) = logged_in(&server).await;
        // Cross-site, no token: a GET is served, and reading the session is
        // its own doing (one load), not the check's.
        let res = request(&server, "GET", "/get/n", Some(&id))
            .header("sec-fetch-site", "cross-site")
            .header("origin", "http://evil.example")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.text().await.unwrap(), "1");
        assert_eq!(server.store.take(), Calls { load: 1, ..Calls::default() });
        let res = request(&server, "GET", "/plain", Some(&id))
            .header("sec-fetch-site", "cross-site")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(server.store.take(), Calls::default(), "no store call for the check");
    }

    #[tokio::test]
    async fn an_unsafe_request_without_the_token_is_refused_and_changes_nothing() {
        let server = server().await;
        let (id, _) = logged_in(&server).await;
        for (method, path) in [("POST", "/incr"), ("POST", "/incr-locked"), ("POST", "/set/n/9")] {
            let res = request(&server, method, path, Some(&id)).send().await.unwrap();
            assert_eq!(res.status(), 403, "{path}");
            assert!(res.text().await.unwrap().contains("CSRF token"));
        }
        // A wrong token, and several copies of the right one, are no token.
        let res = request(&server, "POST", "/incr", Some(&id))
            .header("x-csrf-token", "A".repeat(43))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403);
        assert_eq!(n_of(&server, &id).await, "1", "nothing was written");
    }

    #[tokio::test]
    async fn the_right_token_passes_in_the_header_or_the_form_field() {
        let server = server().await;
        let (id, token) = logged_in(&server).await;
        let res = request(&server, "POST", "/incr", Some(&id))
            .header("x-csrf-token", &token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.text().await.unwrap(), "2");

        // A URL-encoded form: the layer reads the field, and the handler
        // gets the body unchanged.
        let body = format!("item=apple&csrf_token={}&qty=2", token);
        let res = request(&server, "POST", "/echo", Some(&id))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.text().await.unwrap(), format!("2 {body}"));

        // The field twice is no token; the header wins over a wrong field.
        let twice = format!("csrf_token={token}&csrf_token={token}");
        let res = request(&server, "POST", "/echo", Some(&id))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(twice)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403);
        let res = request(&server, "POST", "/echo", Some(&id))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-csrf-token", &token)
            .body("csrf_token=wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }

    #[tokio::test]
    async fn a_token_from_before_a_regenerate_is_refused() {
        let server = server().await;
        let (id, old) = logged_in(&server).await;
        let res = request(&server, "POST", "/regenerate", Some(&id))
            .header("x-csrf-token", &old)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let new_id = common::cookie_id(&res).expect("a new id");
        assert_ne!(new_id, id);
        let res = request(&server, "POST", "/incr", Some(&new_id))
            .header("x-csrf-token", &old)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403, "the token rotated with the id");
        let res = request(&server, "GET", "/csrf-token", Some(&new_id)).send().await.unwrap();
        let new = res.text().await.unwrap();
        assert_ne!(new, old);
        let res = request(&server, "POST", "/incr", Some(&new_id))
            .header("x-csrf-token", &new)
            .send()
            .await
            .unwrap();
        assert_eq!(res.text().await.unwrap(), "2");
    }

    #[tokio::test]
    async fn cross_site_and_foreign_origin_requests_are_refused_before_any_store_call() {
        let server = server().await;
        let (id, token) = logged_in(&server).await;
        let host = server.addr.to_string();
        let refused: [&[(&str, &str)]; 5] = [
            &[("sec-fetch-site", "cross-site")],
            &[("sec-fetch-site", "same-site")],
            &[("origin", "http://evil.example")],
            &[("origin", "null")],
            &[("sec-fetch-site", "same-origin"), ("origin", "http://127.0.0.1:1")],
        ];
        for headers in refused {
            // Even with the right token, and even without a session.
            for id in [Some(id.as_str()), None] {
                let mut req = request(&server, "POST", "/incr", id).header("x-csrf-token", &token);
                for (name, value) in headers {
                    req = req.header(*name, *value);
                }
                let res = req.send().await.unwrap();
                assert_eq!(res.status(), 403, "{headers:?}");
                assert_eq!(server.store.take(), Calls::default(), "{headers:?}");
            }
        }
        // The browser's own same-origin request passes.
        let res = request(&server, "POST", "/incr", Some(&id))
            .header("x-csrf-token", &token)
            .header("sec-fetch-site", "same-origin")
            .header("origin", format!("http://{host}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(n_of(&server, &id).await, "2", "only the genuine request counted");
    }

    #[tokio::test]
    async fn an_allow_listed_origin_passes_but_still_needs_the_token() {
        let server = Server::guarded(store(), |b| b, |layer| {
            Some(CsrfLayer::builder(layer).trust_origin("https://admin.example").build().unwrap())
        })
        .await;
        let (id, token) = logged_in(&server).await;
        let cross = |token: Option<&str>| {
            let mut req = request(&server, "POST", "/incr", Some(&id))
                .header("sec-fetch-site", "cross-site")
                .header("origin", "https://admin.example");
            if let Some(token) = token {
                req = req.header("x-csrf-token", token);
            }
            req
        };
        assert_eq!(cross(Some(&token)).send().await.unwrap().status(), 200);
        assert_eq!(cross(None).send().await.unwrap().status(), 403);
        let res = request(&server, "POST", "/incr", Some(&id))
            .header("x-csrf-token", &token)
            .header("origin", "https://other.example")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403, "only the listed origin");
    }

    #[tokio::test]
    async fn the_check_adds_no_round_trip_to_a_handler_that_reads_or_locks() {
        let server = server().await;
        let (id, token) = logged_in(&server).await;
        let send = |path: &'static str| {
            request(&server, "POST", path, Some(&id)).header("x-csrf-token", &token).send()
        };
        assert_eq!(send("/incr").await.unwrap().status(), 200);
        assert_eq!(server.store.take(), Calls { load: 1, apply: 1, ..Calls::default() });
        assert_eq!(send("/incr-locked").await.unwrap().status(), 200);
        let locked = server.store.take();
        assert_eq!((locked.load, locked.lock, locked.total()), (0, 1, 2), "{locked:?}");
        // A blind write reads first: the one round trip the check costs.
        assert_eq!(send("/set/k/v").await.unwrap().status(), 200);
        assert_eq!(server.store.take(), Calls { load: 1, apply: 1, ..Calls::default() });
        // Refused under a lock: the lock is released, nothing committed.
        let res = request(&server, "POST", "/incr-locked", Some(&id)).send().await.unwrap();
        assert_eq!(res.status(), 403);
        let refused = server.store.take();
        assert_eq!((refused.lock, refused.unlock, refused.apply_and_read), (1, 1, 0), "{refused:?}");
        assert_eq!(n_of(&server, &id).await, "3");
    }

    #[tokio::test]
    async fn a_forged_destroy_or_regenerate_is_refused_and_the_session_lives_on() {
        let server = server().await;
        let (id, _) = logged_in(&server).await;
        for path in ["/destroy", "/regenerate"] {
            let res = request(&server, "POST", path, Some(&id)).send().await.unwrap();
            assert_eq!(res.status(), 403, "{path}");
            assert!(common::set_cookies(&res).is_empty(), "{path}: the cookie stays");
        }
        assert_eq!(n_of(&server, &id).await, "1");
    }

    #[tokio::test]
    async fn a_handler_that_swallows_the_refusal_still_answers_403_and_writes_nothing() {
        let server = server().await;
        let (id, _) = logged_in(&server).await;
        let res = request(&server, "POST", "/swallow", Some(&id)).send().await.unwrap();
        assert_eq!(res.status(), 403);
        let res = request(&server, "GET", "/get/k", Some(&id)).send().await.unwrap();
        assert_eq!(res.text().await.unwrap(), "<none>");
        assert_eq!(n_of(&server, &id).await, "1", "not destroyed either");
    }

    #[tokio::test]
    async fn an_unknown_session_id_passes_as_no_session() {
        let server = server().await;
        let unknown = sessionkit::SessionId::generate().expose();
        let res = request(&server, "POST", "/incr", Some(&unknown)).send().await.unwrap();
        assert_eq!(res.status(), 200, "nothing to forge with: a new session starts");
        let id = common::cookie_id(&res).expect("a new session");
        assert_ne!(id, unknown);
    }

    #[tokio::test]
    async fn an_oversized_form_is_refused_with_413_before_the_handler() {
        let server = Server::guarded(store(), |b| b, |layer| {
            Some(CsrfLayer::builder(layer).form_limit(1024).build().unwrap())
        })
        .await;
        let (id, token) = logged_in(&server).await;
        let big = format!("csrf_token={token}&pad={}", "x".repeat(2000));
        let res = request(&server, "POST", "/echo", Some(&id))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(big.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 413);
        assert_eq!(server.store.take(), Calls::default(), "the handler never ran");
        // Without a session there is no token to look for: the body is not read.
        let res = request(&server, "POST", "/echo", None)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(big)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }

    #[tokio::test]
    async fn a_csrf_layer_outside_its_session_layer_fails_closed() {
        let store = store();
        let layer = sessionkit::SessionLayer::new(store.clone());
        let csrf = CsrfLayer::new(&layer);
        // The CSRF layer outermost: it finds no check to feed.
        let running = common::serve_with_outer_csrf(layer, csrf).await;
        let res = raw().post(running.url("/incr")).send().await.unwrap();
        assert_eq!(res.status(), 500);
        let res = raw().get(running.url("/plain")).send().await.unwrap();
        assert_eq!(res.status(), 200);
    }

    #[tokio::test]
    async fn header_carried_sessions_are_not_checked() {
        let server = Server::guarded(
            store(),
            |b| b.transport(Transport::header("x-session-token")),
            |layer| Some(CsrfLayer::new(layer)),
        )
        .await;
        let res = request(&server, "POST", "/incr", None)
            .header("sec-fetch-site", "cross-site")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let token = res.headers()["x-session-token"].to_str().unwrap().to_owned();
        let res = request(&server, "POST", "/incr", None)
            .header("x-session-token", &token)
            .header("origin", "http://elsewhere.example")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.text().await.unwrap(), "2");
    }
}
