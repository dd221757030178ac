//! The OWASP Session Management Cheat Sheet as tests, one per item, through a real server on 127.0.0.1.
//!
//! <https://cheatsheetseries.owasp.org/cheatsheets/Session_Management_Cheat_Sheet.html>
//!
//! "Logging: never log session ids" is `tests/logs.rs`
//! (`events_name_sessions_by_short_hash_and_never_by_id`).

#[macro_use]
mod common;

use std::collections::HashSet;

use std::time::Duration;

use common::{Server, cookie_id, raw, set_cookies};

use sessionkit::{CookieConfig, SessionConfig, SessionId};

use sessionkit_core::store::SessionStore;

fn cookie(id: &str) -> String {
    format!("session={id}")
}

async fn new_session(server: &Server) -> String {
    let res = raw().post(server.url("/incr")).send().await.unwrap();
    let id = cookie_id(&res).expect("a new session sets its cookie");
    assert_eq!(res.text().await.unwrap(), "1");
    id
}

async fn n_with(server: &Server, id: &str) -> String {
    raw()
        .get(server.url("/get/n"))
        .header("cookie", cookie(id))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

http_tests! {
    /// Session ID Entropy and Length: at least 64 bits of entropy from a
    /// CSPRNG. Ours: 256 bits as 43 base64url characters. Statistical sanity
    /// checks over 100 000 ids: no duplicate, every byte value about equally
    /// frequent (chi-square), every bit set about half the time; and ids issued
    /// over HTTP have the same form.
    #[tokio::test]
    async fn session_id_entropy_and_length_are_256_bits_in_43_chars() {
        const N: usize = 100_000;
        let mut seen = HashSet::with_capacity(N);
        let mut bytes = [0u64; 256];
        let mut bits = [0u64; 256];
        for _ in 0..N {
            let id = SessionId::generate();
            assert!(seen.insert(*id.as_bytes()), "duplicate id");
            for (i, b) in id.as_bytes().iter().enumerate() {
                bytes[*b as usize] += 1;
                for bit in 0..8 {
                    bits[i * 8 + bit] += u64::from((b >> bit) & 1);
                }
            }
            let text = id.expose();
            assert_eq!(text.len(), 43);
        }
        // 3.2 M bytes over 256 values: chi-square with 255 degrees of freedom
        // has mean 255 and standard deviation 22.6; 400 is p < 1e-9.
        let expected = (N * 32) as f64 / 256.0;
        let chi2: f64 = bytes
            .iter()
            .map(|&c| (c as f64 - expected).powi(2) / expected)
            .sum();
        assert!(
            chi2 < 400.0 && chi2 > 150.0,
            "byte distribution: chi-square {chi2:.1}"
        );
        // Each of the 256 bits is set in half of the ids, within 6 standard
        // deviations (sd = sqrt(N)/2 = 158).
        for (i, &ones) in bits.iter().enumerate() {
            let off = (ones as f64 - N as f64 / 2.0).abs();
            assert!(off < 6.0 * 158.2, "bit {i} set in {ones} of {N} ids");
        }

        let server = Server::start().await;
        let mut issued = HashSet::new();
        for _ in 0..200 {
            let id = new_session(&server).await;
            assert_eq!(id.len(), 43);
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            );
            assert!(SessionId::parse(&id).is_ok());
            assert!(issued.insert(id));
        }
    }

    /// Cookies: Secure, HttpOnly, SameSite, a narrow Path, no Domain, and an
    /// expiry that matches the server's (here Max-Age = the 120-minute idle
    /// lifetime); the `__Host-` prefix is honoured. The name is generic
    /// (`session`), which does not fingerprint the framework.
    #[tokio::test]
    async fn cookie_attributes_are_secure_httponly_samesite_path_without_domain() {
        let server = Server::start().await;
        let res = raw().post(server.url("/incr")).send().await.unwrap();
        let cookies = set_cookies(&res);
        assert_eq!(cookies.len(), 1);
        let attrs: Vec<&str> = cookies[0].split("; ").skip(1).collect();
        for wanted in [
            "Secure",
            "HttpOnly",
            "SameSite=Lax",
            "Path=/",
            "Max-Age=7200",
        ] {
            assert!(attrs.contains(&wanted), "{wanted} missing: {}", cookies[0]);
        }
        assert!(
            !attrs
                .iter()
                .any(|a| a.to_ascii_lowercase().starts_with("domain")),
            "no Domain: {}",
            cookies[0]
        );
        assert!(cookies[0].starts_with("session="));

        let host = Server::with(
            SessionConfig::default(),
            CookieConfig::default().name("__Host-sid"),
        )
        .await;
        let res = raw().post(host.url("/incr")).send().await.unwrap();
        let c = &set_cookies(&res)[0];
        assert!(c.starts_with("__Host-sid=") && c.contains("; Secure") && c.contains("; Path=/"));
        assert!(
            CookieConfig::default()
                .name("__Host-sid")
                .domain(Some("example.com".into()))
                .validate()
                .is_err(),
            "__Host- refuses a Domain"
        );
    }

    /// Session ID exchange mechanism: the id is accepted from the cookie only —
    /// never from the URL query, a form body, `Authorization`, `X-Session-Id`
    /// or another header. A request carrying a live id anywhere but the cookie
    /// gets a fresh session, and the live session is untouched.
    #[tokio::test]
    async fn session_id_exchange_takes_the_id_only_from_the_cookie() {
        let server = Server::start().await;
        let id = new_session(&server).await;
        let client = raw();
        let attempts = [
            client.post(server.url(&format!("/incr?session={id}"))),
            client.post(server.url(&format!("/incr?sid={id}&PHPSESSID={id}"))),
            client
                .post(server.url("/incr"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!("session={id}")),
            client
                .post(server.url("/incr"))
                .header("authorization", format!("Bearer {id}")),
            client.post(server.url("/incr")).header("x-session-id", &id),
            client
                .post(server.url("/incr"))
                .header("cookie2", cookie(&id)),
            client
                .post(server.url("/incr"))
                .header("x-cookie", cookie(&id)),
            client
                .post(server.url(&format!("/incr;session={id}")))
                .header("referer", format!("http://x/?session={id}")),
        ];
        for (i, req) in attempts.into_iter().enumerate() {
            let res = req.send().await.unwrap();
            let status = res.status().as_u16();
            let issued = cookie_id(&res);
            let body = res.text().await.unwrap();
            if status == 200 {
                assert_eq!(body, "1", "attempt {i}: a fresh session, not the live one");
                assert_ne!(issued.as_deref(), Some(id.as_str()), "attempt {i}");
            } else {
                assert_eq!(status, 404, "attempt {i}: {status}");
            }
        }
        assert_eq!(
            n_with(&server, &id).await,
            "1",
            "the live session was not touched"
        );
    }

    /// Session ID generation and verification: permissive and strict session
    /// management. Strict: an id the server did not issue, or that is no longer
    /// live (destroyed, expired), is never adopted; the client gets a new id.
    #[tokio::test]
    async fn strict_session_management_never_adopts_unknown_ids() {
        let server = Server::with(
            SessionConfig::builder()
                .lifetime(Duration::from_secs(1))
                .build()
                .unwrap(),
            CookieConfig::default(),
        )
        .await;
        let forged = SessionId::generate().expose();
        let destroyed = new_session(&server).await;
        raw()
            .post(server.url("/destroy"))
            .header("cookie", cookie(&destroyed))
            .send()
            .await
            .unwrap();
        let expired = new_session(&server).await;
        tokio::time::sleep(Duration::from_millis(1200)).await;
        for (what, id) in [
            ("forged", &forged),
            ("destroyed", &destroyed),
            ("expired", &expired),
        ] {
            let res = raw()
                .post(server.url("/incr"))
                .header("cookie", cookie(id))
                .send()
                .await
                .unwrap();
            let issued = cookie_id(&res).expect("a new session");
            assert_ne!(&issued, id, "{what} id adopted");
            assert_eq!(res.text().await.unwrap(), "1", "{what}: empty session");
        }
        assert_eq!(server.layer.rejections().unknown, 3);
    }

    /// Renew the session ID after any privilege level change: at login and at
    /// every later change the id is regenerated, the data carries over, and the
    /// old id is dead at once (server-side, not just in the cookie).
    #[tokio::test]
    async fn renew_the_id_on_privilege_change_and_kill_the_old_one() {
        let server = Server::start().await;
        let anonymous = new_session(&server).await;
        let mut previous = vec![anonymous.clone()];
        let mut current = anonymous;
        for change in ["login", "elevate to admin"] {
            let res = raw()
                .post(server.url("/regenerate"))
                .header("cookie", cookie(&current))
                .send()
                .await
                .unwrap();
            let new = cookie_id(&res).unwrap_or_else(|| panic!("{change}: a new id is sent"));
            assert!(!previous.contains(&new), "{change}: a new id");
            assert_eq!(
                n_with(&server, &new).await,
                "1",
                "{change}: data carried over"
            );
            for old in &previous {
                assert_eq!(
                    n_with(&server, old).await,
                    "<none>",
                    "{change}: old id dead"
                );
                let parsed = SessionId::parse(old).unwrap();
                assert!(
                    server
                        .store
                        .inner()
                        .load(&parsed, None)
                        .await
                        .unwrap()
                        .is_none()
                );
            }
            previous.push(new.clone());
            current = new;
        }
    }

    /// Manual session expiration (logout): the server-side state is deleted,
    /// not just the cookie; the cookie is expired; the old id leads nowhere.
    #[tokio::test]
    async fn logout_kills_the_server_state() {
        let server = Server::start().await;
        let id = new_session(&server).await;
        let res = raw()
            .post(server.url("/destroy"))
            .header("cookie", cookie(&id))
            .send()
            .await
            .unwrap();
        let cookies = set_cookies(&res);
        assert!(
            cookies
                .iter()
                .any(|c| c.starts_with("session=;") && c.contains("Max-Age=0")),
            "the cookie is expired: {cookies:?}"
        );
        let parsed = SessionId::parse(&id).unwrap();
        assert!(
            server
                .store
                .inner()
                .load(&parsed, None)
                .await
                .unwrap()
                .is_none(),
            "no server state left"
        );
        assert_eq!(n_with(&server, &id).await, "<none>");
    }

    /// Idle timeout: a session not used for its idle lifetime is gone, even
    /// though its cookie would still be sent by a client that ignores Max-Age.
    #[tokio::test]
    async fn idle_timeout_ends_an_unused_session() {
        let server = Server::with(
            SessionConfig::builder()
                .lifetime(Duration::from_secs(1))
                .build()
                .unwrap(),
            CookieConfig::default(),
        )
        .await;
        let id = new_session(&server).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(n_with(&server, &id).await, "1", "alive before the timeout");
        tokio::time::sleep(Duration::from_millis(1300)).await;
        assert_eq!(n_with(&server, &id).await, "<none>", "gone after it");
    }

    /// Absolute timeout: a session ends at its absolute deadline however active
    /// it is; activity only slides the idle expiry.
    #[tokio::test]
    async fn absolute_timeout_ends_even_an_active_session() {
        let server = Server::with(
            SessionConfig::builder()
                .lifetime(Duration::from_secs(1))
                .absolute_lifetime(Some(Duration::from_secs(2)))
                .touch_threshold(1.0)
                .build()
                .unwrap(),
            CookieConfig::default(),
        )
        .await;
        let id = new_session(&server).await;
        let start = std::time::Instant::now();
        // Active every 300 ms: the idle expiry never passes...
        while start.elapsed() < Duration::from_millis(1700) {
            assert_eq!(n_with(&server, &id).await, "1", "alive while active");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        // ...but the absolute deadline does.
        tokio::time::sleep(Duration::from_millis(2300).saturating_sub(start.elapsed())).await;
        assert_eq!(
            n_with(&server, &id).await,
            "<none>",
            "gone at the absolute deadline"
        );
    }

    /// Web content caching: every response that sets (or clears) the session
    /// cookie carries `Cache-Control: private`, so no shared cache stores it.
    #[tokio::test]
    async fn web_content_caching_is_private_when_the_cookie_is_set() {
        let server = Server::start().await;
        let client = raw();
        let res = client.post(server.url("/incr")).send().await.unwrap();
        let id = cookie_id(&res).unwrap();
        let mut checked = vec![res];
        checked.push(
            client
                .post(server.url("/regenerate"))
                .header("cookie", cookie(&id))
                .send()
                .await
                .unwrap(),
        );
        let new = cookie_id(checked.last().unwrap()).unwrap();
        checked.push(
            client
                .post(server.url("/destroy"))
                .header("cookie", cookie(&new))
                .send()
                .await
                .unwrap(),
        );
        checked.push(
            client
                .get(server.url("/get/n"))
                .header("cookie", "session=garbage")
                .send()
                .await
                .unwrap(),
        );
        for res in &checked {
            assert!(!set_cookies(res).is_empty(), "{}: sets a cookie", res.url());
            let cc = res
                .headers()
                .get("cache-control")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            assert!(
                cc.contains("private"),
                "{}: cache-control {cc:?}",
                res.url()
            );
            assert!(!cc.contains("public"), "{cc}");
        }
    }
}
