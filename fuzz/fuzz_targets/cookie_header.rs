//! Fuzzes the Cookie header → session id path through the public layer: no panic, no store call for a malformed cookie, no adoption of an unknown id.
//!
//! Input: the first byte picks the cookie configuration (plain `session`,
//! `__Host-sid`, or signed with a fixed key); the rest is split at NUL bytes
//! (which no header value may hold) into `Cookie` header values, each used
//! only when `HeaderValue::from_bytes` accepts it.
//!
//! The oracle is a reference reading of the documented rule
//! (`crates/sessionkit/src/cookie.rs`, RFC 6265 §4.2.1): split every header at
//! `;`, trim spaces and tabs, split each pair at its first `=`; a pair of the
//! session's name whose value (less one pair of double quotes) is a
//! well-formed id — or, when signed, `<id>.<mac>` with the right HMAC-SHA256
//! over `name=id` — gives that id. Of the first 8 such pairs, the distinct
//! ids (at most 4) are tried in order: the request makes one store load per
//! id (the store is empty, so each is unknown) and no other call. The store
//! is empty, so no response may set a cookie to an id (strict mode); it may
//! only expire the cookie, and only when the request sent exactly one.
#![no_main]

use std::convert::Infallible;
use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use http::{HeaderValue, Request, Response};
use libfuzzer_sys::fuzz_target;
use sessionkit::signing::SigningKey;
use sessionkit::store::MemoryStore;
use sessionkit::{CookieConfig, Session, SessionId, SessionLayer};
use sessionkit_core::testkit::CountingStore;
use tower_layer::Layer;
use tower_service::Service;

/// The signing key of the signed configuration (the seed corpus holds
/// cookies signed with it, so the fuzzer starts from valid ones).
const KEY: &[u8; 32] = b"sessionkit-fuzz-key-0123456789ab";

struct Setup {
    name: &'static str,
    signed: bool,
    store: CountingStore<MemoryStore>,
    layer: SessionLayer,
}

fn setups() -> &'static [Setup] {
    static SETUPS: OnceLock<Vec<Setup>> = OnceLock::new();
    SETUPS.get_or_init(|| {
        [("session", false), ("__Host-sid", false), ("session", true)]
            .into_iter()
            .map(|(name, signed)| {
                let store = CountingStore::new(MemoryStore::builder().sweep_interval(None).build());
                let mut cookie = CookieConfig::default().name(name);
                if signed {
                    cookie = cookie.signing_keys(vec![SigningKey::new(*KEY).unwrap()]);
                }
                let layer = SessionLayer::builder(store.clone())
                    .cookie(cookie)
                    .build()
                    .unwrap();
                Setup {
                    name,
                    signed,
                    store,
                    layer,
                }
            })
            .collect()
    })
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    })
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// The reference reading: the ids the request's session cookies carry, in
/// order, and how many cookies of the session's name it sent.
fn expected_ids(headers: &[HeaderValue], setup: &Setup) -> (Vec<SessionId>, usize) {
    let mut values = Vec::new();
    for header in headers {
        for pair in header.as_bytes().split(|b| *b == b';') {
            let pair = trim(pair);
            if let Some(eq) = pair.iter().position(|b| *b == b'=')
                && trim(&pair[..eq]) == setup.name.as_bytes()
            {
                values.push(trim(&pair[eq + 1..]));
            }
        }
    }
    let mut ids = Vec::new();
    for value in values.iter().take(8) {
        if let Some(id) = expected_id(value, setup)
            && ids.len() < 4
            && !ids.contains(&id)
        {
            ids.push(id);
        }
    }
    (ids, values.len())
}

/// The id one cookie value carries, if any.
fn expected_id(value: &[u8], setup: &Setup) -> Option<SessionId> {
    let value = match value {
        [b'"', inner @ .., b'"'] => inner,
        v => v,
    };
    if !setup.signed {
        return SessionId::parse_bytes(value).ok();
    }
    if value.len() != 87 || value[43] != b'.' {
        return None;
    }
    let id = SessionId::parse_bytes(&value[..43]).ok()?;
    let mut tag = [0u8; 32];
    if URL_SAFE_NO_PAD.decode_slice(&value[44..], &mut tag).ok()? != 32 {
        return None;
    }
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(KEY).unwrap();
    mac.update(setup.name.as_bytes());
    mac.update(b"=");
    mac.update(&value[..43]);
    mac.verify_slice(&tag).ok().map(|()| id)
}

/// The handler: reads the session, as most handlers do.
async fn handler(req: Request<()>) -> Result<Response<String>, Infallible> {
    let session = req
        .extensions()
        .get::<Session>()
        .cloned()
        .expect("the layer puts a session into every request");
    let value = session.get::<serde_json::Value>("k").await;
    assert!(
        matches!(value, Ok(None)),
        "the store is empty, so nothing can be read: {value:?}"
    );
    Ok(Response::new(String::new()))
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let setup = &setups()[usize::from(mode) % setups().len()];
    let headers: Vec<HeaderValue> = rest
        .split(|b| *b == 0)
        .take(64)
        .filter_map(|part| HeaderValue::from_bytes(part).ok())
        .collect();
    let mut req = Request::new(());
    for h in &headers {
        req.headers_mut().append(http::header::COOKIE, h.clone());
    }
    let (expected, cookies) = expected_ids(&headers, setup);
    setup.store.take();
    let mut service = setup.layer.layer(tower::service_fn(handler));
    let res = runtime()
        .block_on(service.call(req))
        .expect("the service is infallible");
    let calls = setup.store.take();
    assert_eq!(res.status(), 200);
    assert_eq!(
        (calls.load, calls.total()),
        (expected.len() as u64, expected.len() as u64),
        "each well-formed id costs exactly one load, anything else none: {calls:?}"
    );
    for set in res.headers().get_all(http::header::SET_COOKIE) {
        let set = set.as_bytes();
        let prefix = format!("{}=;", setup.name);
        assert!(
            set.starts_with(prefix.as_bytes()),
            "strict mode: an unknown id is never adopted, a cookie may only be expired: {}",
            String::from_utf8_lossy(set)
        );
        assert_eq!(
            cookies, 1,
            "a request with several session cookies never has its cookie cleared"
        );
    }
});
