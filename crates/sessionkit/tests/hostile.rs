//! Hostile requests against a real server on 127.0.0.1: each gets a fresh session or a 4xx, malformed ids cost no store call, nothing panics.
//!
//! Every case checks the same things: the status is 200 with an empty
//! (fresh) session, or a 4xx from the HTTP server itself; the counting store
//! saw exactly the calls the case allows (none for anything that is not one
//! well-formed id); no response sets the session cookie to anything the
//! client sent; and the server still serves normally afterwards.

#[macro_use]
mod common;

use std::time::Duration;

use common::{Server, raw, set_cookies};
use sessionkit::CsrfLayer;
use sessionkit::store::MemoryStore;
use sessionkit_core::testkit::CountingStore;

use sessionkit::signing::SigningKey;

use sessionkit::{CookieConfig, SessionConfig, SessionId};

/// Sends `value` as the `Cookie` header (as raw bytes) to `/get/n`; returns
/// the status and the `Set-Cookie` headers, after checking the body of a
/// 200 is the empty session's.
async fn probe(server: &Server, value: &[u8]) -> (u16, Vec<String>) {
    let header = reqwest::header::HeaderValue::from_bytes(value).expect("a valid header value");
    let res = raw()
        .get(server.url("/get/n"))
        .header("cookie", header)
        .send()
        .await
        .expect("the server answers");
    let status = res.status().as_u16();
    let cookies = set_cookies(&res);
    if status == 200 {
        assert_eq!(res.text().await.unwrap(), "<none>", "a fresh session");
    }
    (status, cookies)
}

/// A probe that must cost no store call and give a fresh session or a 4xx.
async fn refused(server: &Server, what: &str, value: &[u8]) {
    let (status, cookies) = probe(server, value).await;
    assert!(
        status == 200 || (400..500).contains(&status),
        "{what}: status {status}"
    );
    assert_eq!(server.store.take().total(), 0, "{what}: no store call");
    assert!(
        cookies.iter().all(|c| c.starts_with("session=;")),
        "{what}: the cookie may only be expired: {cookies:?}"
    );
}

/// The server still serves: a plain route, and a new session end to end.
async fn still_serving(server: &Server) {
    let res = raw().get(server.url("/plain")).send().await.unwrap();
    assert_eq!(res.text().await.unwrap(), "plain");
    let res = raw().post(server.url("/incr")).send().await.unwrap();
    let id = common::cookie_id(&res).expect("a new session");
    assert_eq!(res.text().await.unwrap(), "1");
    let res = raw()
        .post(server.url("/incr"))
        .header("cookie", format!("session={id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.text().await.unwrap(), "2");
    server.store.take();
}

/// The header line of a URL-encoded form body.
fn form() -> Vec<u8> {
    b"Content-Type: application/x-www-form-urlencoded\r\n".to_vec()
}

/// Sends raw bytes as a whole HTTP/1.1 request; returns the status line's
/// code (0 if the server closed without one) and the response head.
async fn raw_http(server: &Server, request: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    let addr = server.addr;
    let request = request.to_vec();
    let out = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        // The server may answer and close before it has read everything (a
        // refused oversized request): a failed write or a reset is fine,
        // what was answered until then counts.
        let _ = stream.write_all(&request);
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) => {
                    assert!(
                        !matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ),
                        "the server neither answered nor closed"
                    );
                    break;
                }
            }
        }
        out
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let head = text.split("\r\n\r\n").next().unwrap_or("").to_owned();
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, head)
}

http_tests! {
    #[tokio::test]
    async fn oversized_cookies_get_a_fresh_session_or_a_4xx_and_no_store_call() {
        let server = Server::start().await;
        let id = SessionId::generate().expose();
        for (what, size) in [("4 KB", 4 * 1024), ("64 KB", 64 * 1024)] {
            refused(
                &server,
                what,
                format!("session={}", "A".repeat(size)).as_bytes(),
            )
            .await;
            // A well-formed id buried in an oversized header of other cookies:
            // either served (one load, strict mode: not adopted) or refused by
            // the HTTP server as too large.
            let big = format!("pad={}; session={id}", "b".repeat(size));
            let (status, cookies) = probe(&server, big.as_bytes()).await;
            eprintln!("{what} of cookies with a well-formed id: status {status}");
            let calls = server.store.take();
            match status {
                200 => assert_eq!((calls.load, calls.total()), (1, 1), "{what}"),
                400..=499 => assert_eq!(calls.total(), 0, "{what}"),
                other => panic!("{what}: status {other}"),
            }
            assert!(
                cookies.iter().all(|c| !c.contains(&id)),
                "{what}: not adopted"
            );
        }
        // Far past any header limit: the HTTP server refuses it.
        let huge = format!(
            "GET /get/n HTTP/1.1\r\nHost: x\r\nCookie: session={}\r\nConnection: close\r\n\r\n",
            "A".repeat(1024 * 1024)
        );
        let (status, _) = raw_http(&server, huge.as_bytes()).await;
        eprintln!("1 MB cookie: status {status} (0: connection closed)");
        assert!(
            status == 0 || (400..500).contains(&status),
            "1 MB cookie: {status}"
        );
        assert_eq!(server.store.take().total(), 0);
        still_serving(&server).await;
    }

    #[tokio::test]
    async fn thousands_of_cookies_cost_a_bounded_number_of_store_calls() {
        let server = Server::start().await;
        let many: String = (0..5000).map(|i| format!("c{i}=v{i}; ")).collect();
        refused(&server, "5000 other cookies", many.as_bytes()).await;
        // Several session cookies are tried in turn (cookie tossing, see
        // `Presented`), but only the first few distinct ids, and the response
        // never clears the cookie.
        let id = SessionId::generate().expose();
        let dup: String = (0..2000).map(|_| format!("session={id}; ")).collect();
        let forged: String = (0..2000)
            .map(|_| format!("session={}; ", SessionId::generate().expose()))
            .collect();
        for (what, header, loads) in [
            ("2000 copies of one id", dup, 1),
            (
                "2000 forged ids",
                forged,
                sessionkit::Presented::MAX_CANDIDATES,
            ),
        ] {
            let (status, cookies) = probe(&server, header.as_bytes()).await;
            assert_eq!(status, 200, "{what}");
            assert!(cookies.is_empty(), "{what}: {cookies:?}");
            let calls = server.store.take();
            assert_eq!(
                (calls.load, calls.total()),
                (loads as u64, loads as u64),
                "{what}"
            );
        }

        // 1000 separate Cookie headers: over hyper's header count limit.
        let mut request = String::from("GET /get/n HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
        for i in 0..1000 {
            request.push_str(&format!("Cookie: c{i}=v\r\n"));
        }
        request.push_str("\r\n");
        let (status, _) = raw_http(&server, request.as_bytes()).await;
        eprintln!("1000 Cookie headers: status {status}");
        assert!(
            status == 200 || (400..500).contains(&status),
            "1000 headers: {status}"
        );
        assert_eq!(server.store.take().total(), 0);
        still_serving(&server).await;
    }

    #[tokio::test]
    async fn invalid_utf8_cookies_cost_no_store_call() {
        let server = Server::start().await;
        let id = SessionId::generate().expose();
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "all high bytes",
                [b"session=".as_slice(), &[0xff; 43]].concat(),
            ),
            (
                "lone continuation bytes",
                [b"session=".as_slice(), &[0x80; 43]].concat(),
            ),
            (
                "id with one high byte",
                [b"session=".as_slice(), &id.as_bytes()[..42], &[0xc3]].concat(),
            ),
            (
                "overlong encoding",
                [b"session=".as_slice(), &[0xc0, 0xaf], &id.as_bytes()[..41]].concat(),
            ),
            (
                "high byte in the name",
                [b"sess\xffion=".as_slice(), id.as_bytes()].concat(),
            ),
        ];
        for (what, value) in cases {
            refused(&server, what, &value).await;
        }
        still_serving(&server).await;
    }

    #[tokio::test]
    async fn crlf_and_semicolon_injection_attempts_are_inert() {
        let server = Server::start().await;
        let forged = SessionId::generate().expose();
        let other = SessionId::generate().expose();
        // `;` splits pairs: none of these carries exactly one well-formed id.
        for (what, value) in [
            (
                "id split by ;",
                format!("session={};{}", &forged[..20], &forged[20..]),
            ),
            ("id in a value", format!("x=session={forged}")),
            ("id as a name", format!("{forged}=session")),
            (
                "percent-encoded CRLF",
                format!("session={forged}%0d%0aSet-Cookie: a=b"),
            ),
            ("encoded ;", format!("session={forged}%3bx")),
            ("quotes around half", format!("session=\"{forged}")),
        ] {
            refused(&server, what, value.as_bytes()).await;
        }
        // Two ids: each tried once (cookie tossing, see `Presented`), neither
        // adopted, and the cookie left alone.
        let (status, cookies) = probe(
            &server,
            format!("session={forged};session={other}").as_bytes(),
        )
        .await;
        assert_eq!((status, cookies.len()), (200, 0), "{cookies:?}");
        let calls = server.store.take();
        assert_eq!((calls.load, calls.total()), (2, 2));
        // A well-formed id with trailing attributes: one load, not adopted.
        for value in [
            format!("session={forged}; Path=/; Domain=evil.example"),
            format!("session=\"{forged}\""),
            format!(" session = {forged} ;;; "),
        ] {
            let (status, cookies) = probe(&server, value.as_bytes()).await;
            assert_eq!(status, 200);
            let calls = server.store.take();
            assert_eq!((calls.load, calls.total()), (1, 1), "{value}");
            assert!(cookies.iter().all(|c| !c.contains(&forged)), "{value}");
        }
        // Raw CR, LF and NUL inside the header, below the client library that
        // would refuse them: the server refuses the request or reads a cut
        // header; it never echoes the injected text.
        for (what, cookie) in [
            ("bare CR", format!("session={forged}\rSet-Cookie: evil=1")),
            ("bare LF", format!("session={forged}\nSet-Cookie: evil=1")),
            ("NUL", format!("session={forged}\0evil")),
            (
                "obs-fold",
                format!("session={forged}\r\n Set-Cookie: evil=1"),
            ),
        ] {
            let request = format!(
                "GET /get/n HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"
            );
            let (status, head) = raw_http(&server, request.as_bytes()).await;
            assert!(
                status == 0 || status == 200 || (400..500).contains(&status),
                "{what}: {status}"
            );
            assert!(
                !head.contains("evil"),
                "{what}: injected text echoed:\n{head}"
            );
            assert!(!head.contains(&forged), "{what}: id adopted:\n{head}");
            assert!(server.store.take().total() <= 1, "{what}");
        }
        still_serving(&server).await;
    }

    #[tokio::test]
    async fn ids_of_every_wrong_length_cost_no_store_call() {
        let server = Server::start().await;
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        for len in (0..=100).filter(|l| *l != 43) {
            let value: String = (0..len)
                .map(|i| alphabet[(i * 7 + len) % alphabet.len()] as char)
                .collect();
            refused(
                &server,
                &format!("length {len}"),
                format!("session={value}").as_bytes(),
            )
            .await;
        }
        // 43 characters, but not an id: outside the alphabet, or not the
        // canonical spelling of 32 bytes (the last character carries 4 bits).
        let good = SessionId::generate().expose();
        for bad in ["+", "/", "=", ".", "~", " ", "é"] {
            let value = format!("{}{bad}", &good[..42]);
            if value.len() == 43 {
                refused(
                    &server,
                    &format!("alphabet {bad:?}"),
                    format!("session={value}").as_bytes(),
                )
                .await;
            }
        }
        let non_canonical = format!("{}B", &good[..42]);
        if SessionId::parse(&non_canonical).is_err() {
            refused(
                &server,
                "non-canonical",
                format!("session={non_canonical}").as_bytes(),
            )
            .await;
        }
        still_serving(&server).await;
    }

    #[tokio::test]
    async fn ids_under_another_cookie_name_or_from_another_app_are_not_adopted() {
        let server = Server::start().await;
        let res = raw().post(server.url("/incr")).send().await.unwrap();
        let id = common::cookie_id(&res).unwrap();
        server.store.take();
        // Our own live id under other names: not the session cookie.
        for name in [
            "Session",
            "SESSION",
            "session_",
            "_session",
            "__Host-session",
            "sessionid",
            "PHPSESSID",
        ] {
            refused(&server, name, format!("{name}={id}").as_bytes()).await;
        }
        // Another app (its own store, same cookie name): its id is well-formed,
        // costs one load here, and is not adopted.
        let other = Server::start().await;
        let res = raw().post(other.url("/incr")).send().await.unwrap();
        let foreign = common::cookie_id(&res).unwrap();
        let (status, cookies) = probe(&server, format!("session={foreign}").as_bytes()).await;
        assert_eq!(status, 200);
        assert_eq!(server.store.take().load, 1);
        assert!(cookies.iter().all(|c| !c.contains(&foreign)));
        assert_eq!(server.layer.rejections().unknown, 1);
        still_serving(&server).await;
    }

    #[tokio::test]
    async fn tampered_signed_cookies_cost_no_store_call() {
        let key = SigningKey::new(*b"hostile-test-key-0123456789abcde").unwrap();
        let server = Server::with(
            SessionConfig::default(),
            CookieConfig::default().signing_keys(vec![key]),
        )
        .await;
        let res = raw().post(server.url("/incr")).send().await.unwrap();
        let signed = common::cookie_id(&res).unwrap();
        server.store.take();
        let (id, mac) = (&signed[..43], &signed[44..]);
        let mut cases = Vec::new();
        // Every character of the MAC changed, in turn.
        for i in 0..mac.len() {
            let mut m = mac.as_bytes().to_vec();
            m[i] = if m[i] == b'A' { b'B' } else { b'A' };
            cases.push(format!("{id}.{}", String::from_utf8(m).unwrap()));
        }
        // Every character of the id changed, keeping the MAC.
        for i in 0..id.len() {
            let mut v = id.as_bytes().to_vec();
            v[i] = if v[i] == b'A' { b'B' } else { b'A' };
            cases.push(format!("{}.{mac}", String::from_utf8(v).unwrap()));
        }
        cases.extend([
            id.to_owned(),
            format!("{id}."),
            format!("{id}.{}", &mac[..42]),
            format!("{id}.{mac}A"),
            format!("{id}:{mac}"),
            format!("{mac}.{id}"),
            format!("{}.{mac}", SessionId::generate().expose()),
            format!("{id}.{}", "A".repeat(43)),
        ]);
        for value in &cases {
            refused(&server, value, format!("session={value}").as_bytes()).await;
        }
        let r = server.layer.rejections();
        assert_eq!(r.bad_signature + r.malformed, cases.len() as u64);
        // The genuine cookie still works.
        let res = raw()
            .get(server.url("/get/n"))
            .header("cookie", format!("session={signed}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.text().await.unwrap(), "1");
        still_serving(&server).await;
    }

    #[tokio::test]
    async fn thousands_of_forged_ids_are_each_refused_by_strict_mode() {
        let server = Server::start().await;
        const FORGED: usize = 2000;
        let mut tasks = tokio::task::JoinSet::new();
        let client = raw();
        let url = server.url("/incr");
        for _ in 0..FORGED {
            let client = client.clone();
            let url = url.clone();
            tasks.spawn(async move {
                let forged = SessionId::generate().expose();
                let res = client
                    .post(url)
                    .header("cookie", format!("session={forged}"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 200);
                let issued = common::cookie_id(&res).expect("the write starts a new session");
                assert_ne!(issued, forged, "a forged id is never adopted");
                assert_eq!(res.text().await.unwrap(), "1", "a forged id holds nothing");
            });
            if tasks.len() >= 32 {
                tasks.join_next().await.unwrap().unwrap();
            }
        }
        while let Some(t) = tasks.join_next().await {
            t.unwrap();
        }
        let calls = server.store.take();
        assert_eq!(calls.load, FORGED as u64, "one load per forged id");
        assert_eq!(calls.create, FORGED as u64, "each write made a new session");
        assert_eq!(server.layer.rejections().unknown, FORGED as u64);
        still_serving(&server).await;
    }

    #[tokio::test]
    async fn hostile_csrf_tokens_and_origins_get_a_403_or_a_4xx_and_never_a_5xx() {
        let store = CountingStore::new(MemoryStore::builder().sweep_interval(None).build());
        let server = Server::guarded(store, |b| b, |layer| Some(CsrfLayer::new(layer))).await;
        let res = raw().post(server.url("/incr")).send().await.unwrap();
        let id = common::cookie_id(&res).unwrap();
        let cookie = format!("Cookie: session={id}\r\n");
        let host = format!("Host: {}\r\n", server.addr);
        let long = "A".repeat(16 * 1024);
        let mut huge_form = b"csrf_token=".to_vec();
        huge_form.extend(std::iter::repeat_n(b'%', 70 * 1024));
        // (extra header lines, body): none of these carries the right token.
        let cases: Vec<(Vec<u8>, Vec<u8>)> = vec![
            (format!("X-CSRF-Token: {long}\r\n").into_bytes(), vec![]),
            (b"X-CSRF-Token: a\r\nX-CSRF-Token: a\r\n".to_vec(), vec![]),
            (b"X-CSRF-Token: \xff\xfe\xc3\xa9t\xc3\xa9\r\n".to_vec(), vec![]),
            (b"X-CSRF-Token: \r\n".to_vec(), vec![]),
            (b"X-CSRF-Token: \x7f\x01\r\n".to_vec(), vec![]),
            (b"Sec-Fetch-Site: \xff\r\n".to_vec(), vec![]),
            (format!("Sec-Fetch-Site: {long}\r\n").into_bytes(), vec![]),
            (b"Origin: \xe2\x98\x83://x\r\n".to_vec(), vec![]),
            (format!("Origin: http://{long}\r\n").into_bytes(), vec![]),
            (b"Origin: http://a\r\nOrigin: http://a\r\n".to_vec(), vec![]),
            (form(), b"csrf_token=%ff%fe%00".to_vec()),
            (form(), b"csrf_token=\xff\xfe&csrf_token".to_vec()),
            (form(), b"%%%&&&===&csrf_token=%zz".to_vec()),
            (form(), huge_form),
            (b"Content-Type: application/x-www-form-urlencoded; charset=\xff\r\n".to_vec(), b"x=1".to_vec()),
        ];
        for (headers, body) in cases {
            let mut request = format!("POST /incr HTTP/1.1\r\n{host}{cookie}Connection: close\r\n")
                .into_bytes();
            request.extend_from_slice(&headers);
            request.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
            request.extend_from_slice(&body);
            let (code, head) = raw_http(&server, &request).await;
            let what = String::from_utf8_lossy(&headers[..headers.len().min(60)]).into_owned();
            assert!((400..500).contains(&code), "{what}: {head}");
        }
        let res = raw()
            .get(server.url("/get/n"))
            .header("cookie", format!("session={id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.text().await.unwrap(), "1", "no hostile request counted");
    }
}
