//! HTTP tests: a real server on 127.0.0.1, real clients, a counting store.

#[macro_use]
mod common;

use std::time::Duration;

use common::{Server, browser, cookie_id, raw, set_cookies};

use sessionkit::{CookieConfig, SessionConfig};

async fn new_session(server: &Server) -> String {
    let res = raw().post(server.url("/incr")).send().await.unwrap();
    let id = cookie_id(&res).expect("a new session sets its cookie");
    assert_eq!(res.text().await.unwrap(), "1");
    server.store.take();
    id
}

fn cookie(id: &str) -> String {
    format!("session={id}")
}

/// Sends `method path` to `server` with the session cookie `id`.
async fn send_as(server: &Server, method: &str, path: &str, id: &str) -> reqwest::Response {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    raw()
        .request(method, server.url(path))
        .header("cookie", cookie(id))
        .send()
        .await
        .unwrap()
}

async fn read_n(server: &Server, id: &str) -> u64 {
    use sessionkit::store::SessionStore;
    let id = sessionkit::SessionId::parse(id).unwrap();
    let loaded = server.store.inner().load(&id, None).await.unwrap().unwrap();
    sessionkit_core::codec::decode_value(loaded.record.entries.get("n").unwrap()).unwrap()
}

async fn read_gone(server: &Server, id: &str) -> bool {
    use sessionkit::store::SessionStore;
    let id = sessionkit::SessionId::parse(id).unwrap();
    server
        .store
        .inner()
        .load(&id, None)
        .await
        .unwrap()
        .is_none()
}

fn signing_key(byte: u8) -> sessionkit::signing::SigningKey {
    sessionkit::signing::SigningKey::new(vec![byte; 32]).unwrap()
}

/// A request that reads session `id`, then writes after another request
/// destroyed it: its flush fails with "session gone" in the layer (409).
async fn write_after_a_destroy(server: &Server, id: &str) -> reqwest::Response {
    let slow = {
        let url = server.url("/slow-read-write/k?ms=300");
        let cookie = cookie(id);
        tokio::spawn(async move {
            raw()
                .post(&url)
                .header("cookie", cookie)
                .send()
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(send_as(server, "POST", "/destroy", id).await.status(), 200);
    slow.await.unwrap()
}

/// [`write_after_a_destroy`] on a new session.
async fn flush_refused_as_gone(server: &Server) -> reqwest::Response {
    let id = new_session(server).await;
    write_after_a_destroy(server, &id).await
}

fn header(res: &reqwest::Response, name: &str) -> Option<String> {
    res.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

#[test]
#[should_panic(expected = "invalid session layer setting")]
fn a_layer_shortcut_with_an_invalid_value_panics_at_start_up() {
    let _ = sessionkit::SessionLayer::new(sessionkit::store::MemoryStore::new())
        .with_cookie_name("no spaces allowed");
}

/// The docs promise "any `http` service": the layer over a plain
/// `tower::service_fn` served by hyper alone (no axum), with a real client.
#[tokio::test]
async fn the_tower_layer_serves_plain_hyper_without_axum() {
    use http_body_util::Full;
    use hyper::body::{Bytes, Incoming};
    use hyper_util::rt::TokioIo;
    use hyper_util::service::TowerToHyperService;
    use sessionkit::{Session, SessionLayer};
    use tower::{Layer, service_fn};

    let store = sessionkit::store::MemoryStore::new();
    let service = SessionLayer::new(store.clone()).layer(service_fn(
        |req: http::Request<Incoming>| async move {
            let session = req.extensions().get::<Session>().unwrap().clone();
            let n = session.get::<u64>("n").await.unwrap().unwrap_or(0) + 1;
            session.insert("n", &n).unwrap();
            Ok::<_, std::convert::Infallible>(http::Response::new(Full::<Bytes>::from(
                n.to_string(),
            )))
        },
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let service = TowerToHyperService::new(service.clone());
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    let client = browser();
    let url = format!("http://{addr}/");
    let first = client.get(&url).send().await.unwrap();
    assert!(
        cookie_id(&first).is_some(),
        "the first write sets the cookie"
    );
    assert_eq!(first.headers()["cache-control"], "private");
    assert_eq!(first.text().await.unwrap(), "1");
    let second = client.get(&url).send().await.unwrap();
    assert_eq!(second.text().await.unwrap(), "2");
    task.abort();
    assert_eq!(store.len(), 1);
}

http_tests! {
    #[tokio::test]
    async fn untouched_request_sets_no_cookie_and_makes_no_store_call() {
        let server = Server::start().await;
        let id = new_session(&server).await;
        let res = send_as(&server, "GET", "/plain", &id).await;
        assert_eq!(res.status(), 200);
        assert!(set_cookies(&res).is_empty());
        assert!(res.headers().get("cache-control").is_none());
        assert_eq!(server.store.take().total(), 0);

        // And without any cookie, or with a malformed one.
        for cookie in [None, Some("session=garbage")] {
            let mut req = raw().get(server.url("/plain"));
            if let Some(c) = cookie {
                req = req.header("cookie", c);
            }
            let res = req.send().await.unwrap();
            assert!(set_cookies(&res).is_empty(), "{cookie:?}");
            assert_eq!(server.store.take().total(), 0);
        }
    }

    #[tokio::test]
    async fn store_calls_per_request_are_as_promised() {
        // Touch on every read, so the read below proves the touch rides in the
        // load's round trip.
        let config = SessionConfig::builder()
            .touch_threshold(1.0)
            .build()
            .unwrap();
        let server = Server::with(config, CookieConfig::default()).await;
        let client = raw();
        let id = new_session(&server).await;
        // A touch re-sends the cookie only when it moves the expiry, which a
        // read in the same millisecond as the session's creation does not.
        tokio::time::sleep(Duration::from_millis(5)).await;

        // Read (touch included): one load.
        let res = send_as(&server, "GET", "/get/n", &id).await;
        assert_eq!(
            cookie_id(&res).as_deref(),
            Some(id.as_str()),
            "touch re-sends the cookie"
        );
        assert_eq!(res.text().await.unwrap(), "1");
        assert_eq!(server.store.take(), calls!(load: 1));

        // Read + buffered write: load, apply.
        let res = send_as(&server, "POST", "/incr", &id).await;
        assert_eq!(res.text().await.unwrap(), "2");
        assert_eq!(server.store.take(), calls!(load: 1, apply: 1));

        // Blind buffered write: one apply.
        let res = send_as(&server, "POST", "/set/k/v", &id).await;
        assert_eq!(res.status(), 200);
        assert_eq!(server.store.take(), calls!(apply: 1));

        // Locked read-modify-write: lock (+ load), apply (+ unlock).
        let res = send_as(&server, "POST", "/incr-locked", &id).await;
        assert_eq!(res.text().await.unwrap(), "3");
        assert_eq!(server.store.take(), calls!(lock: 1, apply: 1));

        // Regenerate: one change_id.
        let res = send_as(&server, "POST", "/regenerate", &id).await;
        let new_id = cookie_id(&res).expect("regenerate sends the new id");
        assert_ne!(new_id, id);
        assert_eq!(server.store.take(), calls!(change_id: 1));

        // Destroy: one destroy.
        let res = send_as(&server, "POST", "/destroy", &new_id).await;
        assert_eq!(res.status(), 200);
        assert_eq!(server.store.take(), calls!(destroy: 1));

        // A new session: one create.
        let res = client.post(server.url("/set/a/b")).send().await.unwrap();
        assert!(cookie_id(&res).is_some());
        assert_eq!(server.store.take(), calls!(create: 1));
    }

    #[tokio::test]
    async fn cookie_has_the_default_attributes_and_is_not_shared_cacheable() {
        let server = Server::start().await;
        let res = raw().post(server.url("/set/a/b")).send().await.unwrap();
        let cookies = set_cookies(&res);
        assert_eq!(cookies.len(), 1);
        let c = &cookies[0];
        let id = cookie_id(&res).unwrap();
        assert_eq!(id.len(), 43);
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(
            c,
            &format!("session={id}; Max-Age=7200; Path=/; HttpOnly; Secure; SameSite=Lax")
        );
        assert_eq!(res.headers()["cache-control"], "private");
    }

    #[tokio::test]
    async fn host_prefixed_cookie_works() {
        let server = Server::with(
            SessionConfig::default(),
            CookieConfig::default().name("__Host-sid"),
        )
        .await;
        let client = browser();
        let res = client.post(server.url("/set/a/b")).send().await.unwrap();
        assert!(set_cookies(&res)[0].starts_with("__Host-sid="));
        let res = client.get(server.url("/get/a")).send().await.unwrap();
        assert_eq!(res.text().await.unwrap(), "b");
    }

    #[tokio::test]
    async fn forged_well_formed_id_is_not_adopted() {
        let server = Server::start().await;
        let forged = sessionkit::SessionId::generate().expose();
        let res = send_as(&server, "POST", "/incr", &forged).await;
        let issued = cookie_id(&res).expect("the write starts a new session");
        assert_eq!(
            res.text().await.unwrap(),
            "1",
            "the forged session is empty"
        );
        assert_ne!(issued, forged, "the forged id is never adopted");
        // The forged id still leads nowhere.
        let res = send_as(&server, "GET", "/get/n", &forged).await;
        assert_eq!(res.text().await.unwrap(), "<none>");
    }

    #[tokio::test]
    async fn malformed_cookies_give_a_fresh_session_and_no_store_call() {
        let server = Server::start().await;
        let good = new_session(&server).await;
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("too long", format!("session={good}A").into_bytes()),
            ("too short", format!("session={}", &good[..42]).into_bytes()),
            (
                "bad alphabet",
                format!("session={}+", &good[..42]).into_bytes(),
            ),
            ("empty", b"session=".to_vec()),
            ("non-utf8", [b"session=".as_slice(), &[0xff; 43]].concat()),
            ("4 KB", format!("session={}", "A".repeat(4096)).into_bytes()),
            (
                "injection",
                format!("session={good}%0d%0aSet-Cookie:x=y").into_bytes(),
            ),
        ];
        for (what, value) in cases {
            let res = raw()
                .get(server.url("/get/n"))
                .header(
                    "cookie",
                    reqwest::header::HeaderValue::from_bytes(&value).unwrap(),
                )
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200, "{what}");
            let cookies = set_cookies(&res);
            assert_eq!(res.text().await.unwrap(), "<none>", "{what}: fresh session");
            assert_eq!(server.store.take().total(), 0, "{what}: no store call");
            // The bad cookie is cleared, not answered with a session.
            assert!(
                cookies.iter().all(|c| c.contains("Max-Age=0")),
                "{what}: {cookies:?}"
            );
        }
    }

    #[tokio::test]
    async fn login_regenerates_the_id_and_the_old_id_no_longer_works() {
        let server = Server::start().await;
        let old = new_session(&server).await;
        let res = send_as(&server, "POST", "/regenerate", &old).await;
        let new = cookie_id(&res).unwrap();
        assert_ne!(new, old);
        let with_new = send_as(&server, "GET", "/get/n", &new).await;
        assert_eq!(
            with_new.text().await.unwrap(),
            "1",
            "data kept under the new id"
        );
        let with_old = send_as(&server, "GET", "/get/n", &old).await;
        assert_eq!(
            with_old.text().await.unwrap(),
            "<none>",
            "the old id is dead"
        );
    }

    #[tokio::test]
    async fn logout_expires_the_cookie_and_the_old_id_no_longer_works() {
        let server = Server::start().await;
        let id = new_session(&server).await;
        let res = send_as(&server, "POST", "/destroy", &id).await;
        let cookies = set_cookies(&res);
        assert_eq!(cookies.len(), 1);
        assert!(cookies[0].starts_with("session=; Max-Age=0"), "{cookies:?}");
        let res = send_as(&server, "GET", "/get/n", &id).await;
        assert_eq!(res.text().await.unwrap(), "<none>");
    }

    #[tokio::test]
    async fn idle_expiry_ends_an_unused_session() {
        let config = SessionConfig::builder()
            .lifetime(Duration::from_secs(1))
            .build()
            .unwrap();
        let server = Server::with(config, CookieConfig::default()).await;
        let id = new_session(&server).await;
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let res = send_as(&server, "GET", "/get/n", &id).await;
        assert!(
            set_cookies(&res)[0].contains("Max-Age=0"),
            "the dead cookie is cleared"
        );
        assert_eq!(res.text().await.unwrap(), "<none>");
    }

    #[tokio::test]
    async fn activity_keeps_a_session_alive_until_its_absolute_expiry() {
        let config = SessionConfig::builder()
            .lifetime(Duration::from_secs(1))
            .absolute_lifetime(Some(Duration::from_secs(2)))
            .touch_threshold(1.0)
            .build()
            .unwrap();
        let server = Server::with(config, CookieConfig::default()).await;
        let id = new_session(&server).await;
        // Reads every 400 ms keep it past its 1 s idle lifetime...
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(400)).await;
            let res = send_as(&server, "GET", "/get/n", &id).await;
            assert_eq!(res.text().await.unwrap(), "1");
        }
        // ...but not past its 2 s absolute lifetime.
        tokio::time::sleep(Duration::from_millis(600)).await;
        let res = send_as(&server, "GET", "/get/n", &id).await;
        assert_eq!(res.text().await.unwrap(), "<none>");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn locked_increments_from_16_concurrent_clients_are_exact() {
        let server = Server::start().await;
        let res = raw().post(server.url("/set/a/b")).send().await.unwrap();
        let id = cookie_id(&res).unwrap();
        let mut tasks = Vec::new();
        for client_no in 0..16 {
            // 200 increments over 16 clients: 8 send 13, 8 send 12.
            let count = if client_no < 8 { 13 } else { 12 };
            let url = server.url("/incr-locked");
            let cookie = cookie(&id);
            tasks.push(tokio::spawn(async move {
                let client = raw();
                for _ in 0..count {
                    let res = client
                        .post(&url)
                        .header("cookie", &cookie)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(res.status(), 200);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(read_n(&server, &id).await, 200);
        let res = send_as(&server, "GET", "/get/n", &id).await;
        assert_eq!(res.text().await.unwrap(), "200");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_buffered_writes_of_different_keys_all_persist() {
        let server = Server::start().await;
        let id = new_session(&server).await;
        let mut tasks = Vec::new();
        for i in 0..32 {
            let url = server.url(&format!("/set/key{i}/v{i}"));
            let cookie = cookie(&id);
            tasks.push(tokio::spawn(async move {
                raw()
                    .post(&url)
                    .header("cookie", cookie)
                    .send()
                    .await
                    .unwrap()
                    .status()
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), 200);
        }
        for i in 0..32 {
            let res = send_as(&server, "GET", &format!("/get/key{i}"), &id).await;
            assert_eq!(res.text().await.unwrap(), format!("v{i}"));
        }
    }

    #[tokio::test]
    async fn buffered_write_racing_a_destroy_does_not_resurrect_the_session() {
        let server = Server::start().await;
        let id = new_session(&server).await;

        // A request that read the session, then writes after a logout happened.
        let slow = write_after_a_destroy(&server, &id).await;
        assert_eq!(slow.status(), 409, "the late write is refused");
        assert!(set_cookies(&slow).iter().all(|c| c.contains("Max-Age=0")));
        assert!(
            read_gone(&server, &id).await,
            "the destroyed session stays gone"
        );
    }

    #[tokio::test]
    async fn blind_write_racing_a_destroy_starts_a_new_session_instead_of_resurrecting() {
        let server = Server::start().await;
        let id = new_session(&server).await;
        let slow = {
            let url = server.url("/slow-blind-write/k?ms=300");
            let cookie = cookie(&id);
            tokio::spawn(async move {
                raw()
                    .post(&url)
                    .header("cookie", cookie)
                    .send()
                    .await
                    .unwrap()
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        send_as(&server, "POST", "/destroy", &id).await;
        let slow = slow.await.unwrap();
        assert_eq!(slow.status(), 200);
        let new = cookie_id(&slow).expect("the late blind write starts a new session");
        assert_ne!(new, id);
        assert!(read_gone(&server, &id).await, "the old id stays dead");
        let res = send_as(&server, "GET", "/get/n", &new).await;
        assert_eq!(
            res.text().await.unwrap(),
            "<none>",
            "none of the old data came back"
        );
    }

    #[tokio::test]
    async fn locked_changes_are_rolled_back_when_the_handler_fails() {
        let server = Server::start().await;
        let id = new_session(&server).await;
        let res = send_as(&server, "POST", "/fail-after-write", &id).await;
        assert_eq!(res.status(), 500);
        let res = send_as(&server, "GET", "/get/failed", &id).await;
        assert_eq!(res.text().await.unwrap(), "<none>");
        // And the lock was released: a locked write goes through at once.
        let res = send_as(&server, "POST", "/incr-locked", &id).await;
        assert_eq!(res.text().await.unwrap(), "2");
    }

    #[tokio::test]
    async fn a_browser_keeps_its_session_across_requests() {
        let server = Server::start().await;
        let client = browser();
        for expected in 1..=3 {
            let res = client.post(server.url("/incr")).send().await.unwrap();
            assert_eq!(res.text().await.unwrap(), expected.to_string());
        }
    }

    #[tokio::test]
    async fn a_handler_without_the_layer_gets_a_clear_error() {
        let server = common::serve(vec![]).await;
        let res = raw().get(server.url("/id")).send().await.unwrap();
        assert_eq!(res.status(), 500);
        assert_eq!(
            res.text().await.unwrap(),
            "internal error: session layer missing"
        );
    }

    #[tokio::test]
    async fn signed_cookies_work_and_survive_key_rotation() {
        let store = sessionkit_core::testkit::CountingStore::new(sessionkit::store::MemoryStore::new());
        let old = Server::over(
            store.clone(),
            SessionConfig::default(),
            CookieConfig::default().signing_keys(vec![signing_key(1)]),
        )
        .await;
        let res = raw().post(old.url("/set/a/b")).send().await.unwrap();
        let signed = cookie_id(&res).unwrap();
        assert_eq!(signed.len(), 43 + 1 + 43, "{signed}");
        assert_eq!(signed.as_bytes()[43], b'.');

        // The rotated server signs with a new key and still accepts the old one.
        let rotated = Server::over(
            store.clone(),
            SessionConfig::default(),
            CookieConfig::default().signing_keys(vec![signing_key(2), signing_key(1)]),
        )
        .await;
        let res = raw()
            .get(rotated.url("/get/a"))
            .header("cookie", cookie(&signed))
            .send()
            .await
            .unwrap();
        assert_eq!(res.text().await.unwrap(), "b");
    }

    #[tokio::test]
    async fn tampered_signed_cookies_are_refused_before_any_store_call() {
        let server = Server::with(
            SessionConfig::default(),
            CookieConfig::default().signing_keys(vec![signing_key(1)]),
        )
        .await;
        let res = raw().post(server.url("/set/a/b")).send().await.unwrap();
        let signed = cookie_id(&res).unwrap();
        server.store.take();
        let (id, mac) = signed.split_at(43);
        let forged_id = sessionkit::SessionId::generate().expose();
        let mut flipped_mac = mac.as_bytes().to_vec();
        flipped_mac[5] = if flipped_mac[5] == b'A' { b'B' } else { b'A' };
        let cases = [
            format!("{forged_id}{mac}"),
            format!("{id}{}", String::from_utf8(flipped_mac).unwrap()),
            id.to_owned(),
        ];
        for value in &cases {
            let res = send_as(&server, "GET", "/get/a", value).await;
            assert_eq!(res.text().await.unwrap(), "<none>", "{value}");
            assert_eq!(server.store.take().total(), 0, "no store call for {value}");
        }
        let r = server.layer.rejections();
        assert_eq!((r.bad_signature, r.malformed), (2, 1));
    }

    #[tokio::test]
    async fn rejections_are_counted_by_reason() {
        let server = Server::start().await;
        let client = raw();
        let forged = sessionkit::SessionId::generate().expose();
        let other = sessionkit::SessionId::generate().expose();
        for header in [
            "session=garbage".to_owned(),
            format!("session={forged}; session={other}"),
            format!("session={forged}"),
        ] {
            client
                .get(server.url("/get/a"))
                .header("cookie", header)
                .send()
                .await
                .unwrap();
        }
        let r = server.layer.rejections();
        // The two ids of the ambiguous request are each tried and unknown.
        assert_eq!(
            (r.malformed, r.ambiguous, r.unknown, r.bad_signature),
            (1, 1, 3, 0)
        );
    }

    /// Review finding 5 (cookie tossing): a sibling subdomain plants a cookie of
    /// the session's name, so the browser sends two. The server used to answer a
    /// plain read with a removal of the cookie, which deletes the victim's
    /// host-only cookie and leaves the planted one. Now the first id the store
    /// knows is the session, whatever the order, and the cookie is never
    /// cleared for a request that sent several.
    #[tokio::test]
    async fn several_session_cookies_pick_the_known_one_and_never_clear_the_cookie() {
        let server = Server::start().await;
        let client = raw();
        let res = client
            .post(server.url("/set/user/alice"))
            .send()
            .await
            .unwrap();
        let victim = cookie_id(&res).unwrap();
        let planted = sessionkit::SessionId::generate().expose();
        for header in [
            format!("session={victim}; session={planted}"),
            format!("session={planted}; session={victim}"),
        ] {
            let res = client
                .get(server.url("/get/user"))
                .header("cookie", &header)
                .send()
                .await
                .unwrap();
            assert!(set_cookies(&res).is_empty(), "{:?}", set_cookies(&res));
            assert_eq!(res.text().await.unwrap(), "alice", "{header}");
        }
        // Neither known: a fresh session, and still no removal.
        let res = client
            .get(server.url("/get/user"))
            .header("cookie", format!("session={planted}; session=junk"))
            .send()
            .await
            .unwrap();
        assert!(set_cookies(&res).is_empty(), "{:?}", set_cookies(&res));
        assert_eq!(res.text().await.unwrap(), "<none>");
        // A write then starts a new session with a host-only cookie.
        let res = client
            .post(server.url("/set/k/v"))
            .header("cookie", format!("session={planted}; session={planted}x"))
            .send()
            .await
            .unwrap();
        assert!(cookie_id(&res).is_some());
    }

    /// Review finding 9: a failure met by the layer (the flush) answered with an
    /// empty body and no content type, a handler's error with a text body. Both
    /// now come from one mapping.
    #[tokio::test]
    async fn a_flush_failure_answers_like_the_same_error_from_a_handler() {
        let server = Server::start().await;
        let from_layer = flush_refused_as_gone(&server).await;
        let id = new_session(&server).await;
        let from_handler = send_as(&server, "POST", "/fail/gone", &id).await;
        for res in [&from_layer, &from_handler] {
            assert_eq!(res.status(), 409);
            assert_eq!(
                header(res, "content-type").as_deref(),
                Some("text/plain; charset=utf-8")
            );
        }
        let (a, b) = (
            from_layer.text().await.unwrap(),
            from_handler.text().await.unwrap(),
        );
        assert_eq!(a, b);
        assert!(a.contains("nothing was saved"), "{a}");

        let unavailable = send_as(&server, "POST", "/fail/unavailable", &id).await;
        assert_eq!(unavailable.status(), 503);
        assert_eq!(header(&unavailable, "retry-after").as_deref(), Some("1"));
    }

    /// The application's `on_error` page replaces both kinds of error response.
    #[tokio::test]
    async fn on_error_replaces_handler_and_flush_errors() {
        let store = sessionkit_core::testkit::CountingStore::new(
            sessionkit::store::MemoryStore::builder()
                .sweep_interval(None)
                .build(),
        );
        let server = Server::built(store, |b| {
            b.on_error(|err| {
                http::Response::builder()
                    .status(err.status_code())
                    .header("content-type", "text/html")
                    .body(format!("<h1>our page: {:?}</h1>", err.kind()))
                    .unwrap()
            })
        })
        .await;
        let from_layer = flush_refused_as_gone(&server).await;
        let id = new_session(&server).await;
        let from_handler = send_as(&server, "POST", "/fail/unavailable", &id).await;
        assert_eq!(from_layer.status(), 409);
        assert_eq!(from_handler.status(), 503);
        for res in [&from_layer, &from_handler] {
            assert_eq!(header(res, "content-type").as_deref(), Some("text/html"));
        }
        assert_eq!(
            from_layer.text().await.unwrap(),
            "<h1>our page: SessionGone</h1>"
        );
        assert_eq!(
            from_handler.text().await.unwrap(),
            "<h1>our page: StoreUnavailable</h1>"
        );
    }

    /// Review finding 6: a response whose body came from the session carried no
    /// cache directive when no cookie was sent. Any response of a request that
    /// used its session is `private`, unless the handler chose its own.
    #[tokio::test]
    async fn responses_that_used_the_session_are_private_unless_the_handler_says_otherwise() {
        let server = Server::start().await;
        let id = new_session(&server).await;
        send_as(&server, "POST", "/set/user/alice", &id).await;
        let res = send_as(&server, "GET", "/get/user", &id).await;
        assert!(set_cookies(&res).is_empty(), "no touch due, no cookie");
        assert_eq!(header(&res, "cache-control").as_deref(), Some("private"));
        assert_eq!(res.text().await.unwrap(), "alice");

        let res = send_as(&server, "GET", "/cached-read/user", &id).await;
        assert_eq!(
            header(&res, "cache-control").as_deref(),
            Some("public, max-age=60")
        );
        // A request that never touches the session is left alone.
        let res = send_as(&server, "GET", "/plain", &id).await;
        assert_eq!(header(&res, "cache-control"), None);
    }

    /// Review finding 8: `lock(); insert(..); return 400` persisted the change.
    /// Locked changes still uncommitted when the response is a 4xx are rolled
    /// back by default.
    #[tokio::test]
    async fn locked_changes_are_rolled_back_on_an_early_4xx() {
        let server = Server::start().await;
        let id = new_session(&server).await;
        send_as(&server, "POST", "/set/qty/3", &id).await;
        let res = send_as(&server, "POST", "/lock-then-400/-5", &id).await;
        assert_eq!(res.status(), 400);
        let res = send_as(&server, "GET", "/get/qty", &id).await;
        assert_eq!(res.text().await.unwrap(), "3");
    }

    /// Review finding 7: with browser-session cookies by default, a session
    /// given a lifetime equal to the configured one lost its persistent cookie
    /// (the layer compared lifetimes). "Remembered" is now recorded with the
    /// session, so every later cookie of it persists too, also after a blind
    /// write that never loaded it.
    #[tokio::test]
    async fn remember_me_keeps_a_persistent_cookie_whatever_the_lifetime() {
        let lifetime = Duration::from_secs(3600);
        let config = SessionConfig::builder()
            .lifetime(lifetime)
            .touch_threshold(1.0)
            .build()
            .unwrap();
        let server = Server::with(config, CookieConfig::default().persistent(false)).await;
        let max_age = |res: &reqwest::Response| {
            set_cookies(res).iter().find_map(|c| {
                c.split("; ")
                    .find_map(|a| a.strip_prefix("Max-Age="))
                    .map(str::to_owned)
            })
        };
        // Not remembered: a browser-session cookie.
        let res = raw().post(server.url("/set/a/1")).send().await.unwrap();
        assert!(cookie_id(&res).is_some());
        assert_eq!(max_age(&res), None);
        // Remembered with exactly the configured lifetime: persistent.
        let res = raw()
            .post(server.url("/remember/3600"))
            .send()
            .await
            .unwrap();
        let id = cookie_id(&res).unwrap();
        assert_eq!(max_age(&res).as_deref(), Some("3600"));
        tokio::time::sleep(Duration::from_millis(5)).await;
        // A later read (touch on every read here) and a blind write re-send it
        // persistent.
        for (method, path) in [("GET", "/get/user"), ("POST", "/set/b/2")] {
            let res = send_as(&server, method, path, &id).await;
            let age: u64 = max_age(&res)
                .unwrap_or_else(|| panic!("{path}: {:?}", set_cookies(&res)))
                .parse()
                .unwrap();
            assert!((3590..=3600).contains(&age), "{path}: {age}");
        }
    }

    /// An absolute lifetime shorter than a remember-me lifetime wins: the
    /// session ends at its absolute deadline, and the cookie says so.
    #[tokio::test]
    async fn an_absolute_lifetime_caps_a_remember_me_cookie() {
        let config = SessionConfig::builder()
            .absolute_lifetime(Some(Duration::from_secs(600)))
            .build()
            .unwrap();
        let server = Server::with(config, CookieConfig::default().persistent(false)).await;
        let res = raw()
            .post(server.url(&format!("/remember/{}", 30 * 24 * 3600)))
            .send()
            .await
            .unwrap();
        let cookies = set_cookies(&res);
        assert!(
            cookies.iter().any(|c| c.contains("Max-Age=600;")),
            "{cookies:?}"
        );
    }

    /// Issue 13: the common settings as shortcuts on the layer.
    #[tokio::test]
    async fn layer_shortcuts_change_the_settings_they_name() {
        let layer = sessionkit::SessionLayer::new(sessionkit::store::MemoryStore::new())
            .with_cookie_name("sid")
            .with_persistent_cookie(false)
            .with_lifetime(Duration::from_secs(600));
        assert_eq!(
            layer.factory().config().lifetime(),
            Duration::from_secs(600)
        );
        let server = common::serve(vec![layer]).await;
        let res = raw().post(server.url("/set/k/v")).send().await.unwrap();
        let cookies = set_cookies(&res);
        assert_eq!(cookies.len(), 1, "{cookies:?}");
        assert!(cookies[0].starts_with("sid="), "{cookies:?}");
        assert!(!cookies[0].contains("Max-Age"), "{cookies:?}");
    }

    /// Issue 13 (amphp's request attribute name): two session layers with their
    /// own cookies and stores in one app, each session with its own extractor
    /// type.
    #[tokio::test]
    async fn two_tagged_layers_keep_two_sessions_apart() {
        use sessionkit::SessionLayer;

        // The route `/both` takes a plain `Session` and a `SessionOf<Admin>`.
        let admin_store = sessionkit::store::MemoryStore::new();
        let admin = SessionLayer::builder(admin_store.clone())
            .cookie(sessionkit::CookieConfig::default().name("admin"))
            .tag::<common::Admin>()
            .build()
            .unwrap();
        let visitor = SessionLayer::new(sessionkit::store::MemoryStore::new());
        let server = common::serve(vec![admin, visitor]).await;
        let client = browser();
        let url = server.url("/both");
        let first = client.post(&url).send().await.unwrap();
        let names: Vec<String> = set_cookies(&first)
            .iter()
            .map(|c| c.split('=').next().unwrap().to_owned())
            .collect();
        assert_eq!(first.text().await.unwrap(), "1 101");
        let second = client
            .post(&url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(second, "2 102", "each session kept its own counter");
        let mut names = names;
        names.sort();
        assert_eq!(names, ["admin", "session"]);
        assert_eq!(admin_store.len(), 1);
    }
}
