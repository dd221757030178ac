//! Fuzzes `Config::from_lookup` with arbitrary variable values, then uses every accepted configuration: a bad value is an error naming its variable, never a panic, and an accepted one works.
//!
//! Input: pairs of (variable index, value) through `arbitrary`; the index
//! picks one of the `SESSION_*` variables (or an unknown one). The driver is
//! kept to `memory` and `noop` (the others need servers or a disk; their
//! values are still parsed).
//!
//! Asserted: `from_lookup` does not panic; an error is `InvalidConfig` and
//! names, as its setting, a variable that was set; it never repeats a signing
//! secret; an accepted configuration builds its layer, and a request through
//! it that writes under a lock, reads, regenerates and destroys works
//! without a panic.
#![no_main]

use std::collections::HashMap;
use std::convert::Infallible;

use http::{Request, Response};
use libfuzzer_sys::fuzz_target;
use sessionkit::config::{Config, Driver};
use sessionkit::{ErrorKind, Session};
use tower_layer::Layer;
use tower_service::Service;

const VARS: &[&str] = &[
    "SESSION_DRIVER",
    "SESSION_LIFETIME",
    "SESSION_ABSOLUTE_LIFETIME",
    "SESSION_TOUCH_THRESHOLD",
    "SESSION_COOKIE_NAME",
    "SESSION_DOMAIN",
    "SESSION_PATH",
    "SESSION_SECURE_COOKIE",
    "SESSION_HTTP_ONLY",
    "SESSION_SAME_SITE",
    "SESSION_PERSISTENT_COOKIE",
    "SESSION_SIGNING_KEYS",
    "SESSION_PREFIX",
    "SESSION_REDIS_URL",
    "SESSION_MEMCACHED_SERVERS",
    "SESSION_FILE_PATH",
    "SESSION_LOCK_TTL",
    "SESSION_LOCK_WAIT",
    "SESSION_LOCK_POLICY",
    "SESSION_WRITE_POLICY",
    "SESSION_UNKNOWN",
];

/// A runtime per input: the memory store's sweep task outlives its store by
/// up to one sweep interval (60 s), so a runtime shared by every input
/// would pile up hundreds of thousands of them; dropping the runtime drops
/// them.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

async fn handler(req: Request<()>) -> Result<Response<String>, Infallible> {
    let session = req.extensions().get::<Session>().cloned().unwrap();
    // Errors are fine here (a locked-only policy refuses some writes, the
    // noop store forgets); panics are not.
    if session.lock().await.is_ok() {
        let _ = session.insert("n", &1u64);
        let _ = session.commit().await;
    }
    let _ = session.get::<u64>("n").await;
    let _ = session.insert("k", "v");
    let _ = session.regenerate().await;
    let _ = session.put("p", &2u8).await;
    Ok(Response::new(String::new()))
}

fuzz_target!(|input: Vec<(u8, String)>| {
    let mut vars: HashMap<&str, String> = HashMap::new();
    for (index, value) in input {
        let name = VARS[usize::from(index) % VARS.len()];
        vars.insert(name, value);
    }
    if let Some(driver) = vars.get("SESSION_DRIVER")
        && !matches!(driver.as_str(), "memory" | "local" | "noop")
    {
        // Other drivers need a server or a disk; parse them, don't build.
        if let Err(e) = Config::from_lookup(|name| vars.get(name).cloned()) {
            assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e}");
        }
        return;
    }
    let config = match Config::from_lookup(|name| vars.get(name).cloned()) {
        Ok(config) => config,
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e}");
            let setting = e.setting().expect("the error names a setting");
            assert!(
                vars.contains_key(setting),
                "the error names {setting}, which was not set: {e}"
            );
            if let Some(keys) = vars.get("SESSION_SIGNING_KEYS") {
                // The same configuration with every secret replaced by as
                // many bytes of `x` (commas and whitespace, which is trimmed,
                // kept): text that shows up in both errors is
                // the message's own (a variable name, say), not the secret.
                let masked: String = keys
                    .chars()
                    .map(|c| {
                        if c == ',' || c.is_whitespace() {
                            c.to_string()
                        } else {
                            "x".repeat(c.len_utf8())
                        }
                    })
                    .collect();
                let mut other = vars.clone();
                other.insert("SESSION_SIGNING_KEYS", masked);
                let masked_text = Config::from_lookup(|name| other.get(name).cloned())
                    .err()
                    .map(|e| e.to_string())
                    .unwrap_or_default();
                let text = e.to_string();
                for secret in keys.split(',').map(str::trim).filter(|s| s.len() >= 8) {
                    let elsewhere = vars
                        .iter()
                        .any(|(n, v)| *n != "SESSION_SIGNING_KEYS" && v.contains(secret));
                    assert!(
                        elsewhere || masked_text.contains(secret) || !text.contains(secret),
                        "a signing secret leaked into an error: {text}"
                    );
                }
            }
            return;
        }
    };
    assert!(matches!(config.driver, Driver::Memory | Driver::Noop));
    runtime().block_on(async move {
        let layer = config
            .into_layer()
            .await
            .expect("an accepted configuration builds its layer");
        let mut service = layer.layer(tower::service_fn(handler));
        let res = service.call(Request::new(())).await.unwrap();
        assert!(res.status().as_u16() < 600);
    });
});
