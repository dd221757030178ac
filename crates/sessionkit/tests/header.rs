//! Sessions carried in a header (`Transport::Header`, `SESSION_TRANSPORT=header`),
//! through a real server on 127.0.0.1 driven by a real client, on axum and
//! on actix-web.

#[macro_use]
mod common;

use common::{Server, raw, set_cookies};
use sessionkit::signing::SigningKey;
use sessionkit::store::MemoryStore;
use sessionkit::{CookieConfig, SessionId, Transport};
use sessionkit_core::testkit::CountingStore;

const HEADER: &str = "x-session-token";

async fn server() -> Server {
    Server::built(store(), |b| b.transport(Transport::header(HEADER))).await
}

async fn signed_server() -> Server {
    let key = SigningKey::new(*b"0123456789abcdef0123456789abcdef").unwrap();
    Server::built(store(), |b| {
        b.transport(Transport::header("X-Auth-Token"))
            .cookie(CookieConfig::default().signing_keys(vec![key]))
    })
    .await
}

fn store() -> CountingStore<MemoryStore> {
    CountingStore::new(MemoryStore::builder().sweep_interval(None).build())
}

/// Sends `method path` with `token` in the session header (none if `None`).
async fn send(
    server: &Server,
    method: &str,
    path: &str,
    header: &str,
    token: Option<&str>,
) -> reqwest::Response {
    let mut req = raw().request(method.parse().unwrap(), server.url(path));
    if let Some(token) = token {
        req = req.header(header, token);
    }
    req.send().await.unwrap()
}

/// The session header of a response: `None` if absent.
fn token(res: &reqwest::Response, header: &str) -> Option<String> {
    let mut values = res.headers().get_all(header).iter();
    let value = values.next()?.to_str().unwrap().to_owned();
    assert!(values.next().is_none(), "one {header} header at most");
    Some(value)
}

http_tests! {
    #[tokio::test]
    async fn a_new_session_answers_its_token_in_the_header_and_the_token_reaches_it_again() {
        let server = server().await;
        let res = send(&server, "POST", "/incr", HEADER, None).await;
        assert_eq!(res.status(), 200);
        assert!(set_cookies(&res).is_empty(), "no cookie in header mode");
        let token = token(&res, HEADER).expect("a new session answers its token");
        SessionId::parse(&token).expect("an unsigned token is the id");
        assert_eq!(res.headers()["cache-control"], "private");
        assert_eq!(res.text().await.unwrap(), "1");

        let res = send(&server, "POST", "/incr", HEADER, Some(&token)).await;
        // A write moved the expiry: the same token again, as the cookie would be.
        assert_eq!(super::token(&res, HEADER).as_deref(), Some(token.as_str()));
        assert_eq!(res.text().await.unwrap(), "2");
        let res = send(&server, "GET", "/get/n", HEADER, Some(&token)).await;
        assert_eq!(super::token(&res, HEADER), None, "a read that moves nothing sends nothing");
        assert_eq!(res.text().await.unwrap(), "2");
        // The header name is case-insensitive.
        let res = send(&server, "POST", "/incr", "X-Session-Token", Some(&token)).await;
        assert_eq!(res.text().await.unwrap(), "3");
    }

    #[tokio::test]
    async fn cookies_are_neither_read_nor_set_in_header_mode() {
        let server = server().await;
        let res = send(&server, "POST", "/incr", HEADER, None).await;
        let token = token(&res, HEADER).unwrap();
        let res = raw()
            .post(server.url("/incr"))
            .header("cookie", format!("session={token}"))
            .send()
            .await
            .unwrap();
        assert!(set_cookies(&res).is_empty());
        let fresh = super::token(&res, HEADER).expect("the cookie is ignored: a new session");
        assert_ne!(fresh, token);
        assert_eq!(res.text().await.unwrap(), "1");
    }

    #[tokio::test]
    async fn an_untouched_request_sends_no_header_and_makes_no_store_call() {
        let server = server().await;
        let before = server.store.calls().total();
        let res = send(&server, "GET", "/plain", HEADER, Some(&SessionId::generate().expose())).await;
        assert_eq!(token(&res, HEADER), None);
        assert_eq!(server.store.calls().total(), before);
    }

    #[tokio::test]
    async fn regenerate_answers_the_new_token_and_the_old_one_is_dead() {
        let server = server().await;
        let old = token(&send(&server, "POST", "/incr", HEADER, None).await, HEADER).unwrap();
        let res = send(&server, "POST", "/regenerate", HEADER, Some(&old)).await;
        let new = token(&res, HEADER).expect("a new id is answered");
        assert_ne!(new, old);
        let res = send(&server, "POST", "/incr", HEADER, Some(&new)).await;
        assert_eq!(res.text().await.unwrap(), "2");
        let res = send(&server, "GET", "/get/n", HEADER, Some(&old)).await;
        assert_eq!(res.text().await.unwrap(), "<none>");
    }

    #[tokio::test]
    async fn destroy_and_an_unknown_token_answer_an_empty_header() {
        let server = server().await;
        let t = token(&send(&server, "POST", "/incr", HEADER, None).await, HEADER).unwrap();
        let res = send(&server, "POST", "/destroy", HEADER, Some(&t)).await;
        assert_eq!(token(&res, HEADER).as_deref(), Some(""), "destroy empties the header");
        let res = send(&server, "GET", "/get/n", HEADER, Some(&t)).await;
        assert_eq!(res.text().await.unwrap(), "<none>");
        let res = send(&server, "GET", "/get/n", HEADER, Some(&SessionId::generate().expose())).await;
        assert_eq!(token(&res, HEADER).as_deref(), Some(""), "an unknown token is dropped");
    }

    /// A response that hands out a token is never shared-cacheable, even
    /// when the handler said `public` (as a response that sets a cookie).
    #[tokio::test]
    async fn a_response_carrying_a_token_is_never_publicly_cacheable() {
        let config = sessionkit::SessionConfig::builder().touch_threshold(1.0).build().unwrap();
        let server =
            Server::built(store(), |b| b.config(config).transport(Transport::header(HEADER))).await;
        let t = token(&send(&server, "POST", "/set/k/v", HEADER, None).await, HEADER).unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        // Every read touches here, so the token is sent again.
        let res = send(&server, "GET", "/cached-read/k", HEADER, Some(&t)).await;
        assert_eq!(token(&res, HEADER).as_deref(), Some(t.as_str()));
        let cache = res.headers()["cache-control"].to_str().unwrap().to_owned();
        assert!(cache.contains("private") && !cache.contains("public"), "{cache}");
    }

    #[tokio::test]
    async fn signed_tokens_verify_and_a_tampered_one_is_refused() {
        let server = signed_server().await;
        let res = send(&server, "POST", "/incr", "x-auth-token", None).await;
        let signed = token(&res, "x-auth-token").unwrap();
        let (id, mac) = signed.split_once('.').expect("a signed token is id.mac");
        SessionId::parse(id).unwrap();
        let res = send(&server, "POST", "/incr", "x-auth-token", Some(&signed)).await;
        assert_eq!(res.text().await.unwrap(), "2");
        // The bare id, or another MAC, reach nothing.
        let tampered = format!("{id}.{}", mac.chars().rev().collect::<String>());
        for bad in [id.to_owned(), tampered] {
            let res = send(&server, "GET", "/get/n", "x-auth-token", Some(&bad)).await;
            assert_eq!(res.text().await.unwrap(), "<none>", "{bad}");
        }
    }

    #[tokio::test]
    async fn hostile_headers_never_panic_nor_fail_and_reach_no_session() {
        let server = server().await;
        let t = token(&send(&server, "POST", "/incr", HEADER, None).await, HEADER).unwrap();
        let long = "A".repeat(64 * 1024);
        let cases: Vec<Vec<&[u8]>> = vec![
            vec![long.as_bytes()],
            vec![b"\xff\xfe\x80not ascii"],
            vec![b"  "],
            vec![t.as_bytes(), t.as_bytes()],
            vec![format!("{t}, {t}").leak().as_bytes()],
            vec![format!("{t}x").leak().as_bytes()],
        ];
        for values in cases {
            let mut req = raw().get(server.url("/get/n"));
            for v in &values {
                req = req.header(HEADER, reqwest::header::HeaderValue::from_bytes(v).unwrap());
            }
            let res = req.send().await.unwrap();
            assert!(res.status().is_success(), "{}: {values:?}", res.status());
            assert_eq!(res.text().await.unwrap(), "<none>", "{values:?}");
        }
        // The genuine token still works.
        let res = send(&server, "GET", "/get/n", HEADER, Some(&t)).await;
        assert_eq!(res.text().await.unwrap(), "1");
    }
}
