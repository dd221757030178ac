//! Configuration from the environment, as a new user meets it: errors that
//! name the variable and what to do, and never print a secret.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use sessionkit::Error;
#[cfg(feature = "redis")]
use sessionkit::ErrorKind;
use sessionkit::config::{Config, Driver};
use tracing_subscriber::fmt::MakeWriter;

const PASSWORD: &str = "hunter2-correct-horse";

fn from(vars: &[(&str, &str)]) -> Result<Config, Error> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::from_lookup(|name| map.get(name).cloned())
}

/// Everything an error would print: its line, its `Debug` and every source.
fn printed(err: &Error) -> String {
    let mut text = format!("{err}\n{err:?}");
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        text.push_str(&format!("\n{s}\n{s:?}"));
        source = s.source();
    }
    text
}

#[test]
fn a_redis_password_never_appears_in_a_configuration_error() {
    let urls = format!("redis://:{PASSWORD}@10.0.0.1:6379,redis://app:{PASSWORD}@10.0.0.2:6379");
    let err = from(&[("SESSION_DRIVER", "redis"), ("SESSION_REDIS_URL", &urls)]).unwrap_err();
    assert_eq!(err.setting(), Some("SESSION_REDIS_URL"));
    let text = printed(&err);
    assert!(!text.contains(PASSWORD), "{text}");
    assert!(
        text.contains("10.0.0.1:6379"),
        "the address is kept: {text}"
    );
    assert!(text.contains("SESSION_REDIS_CLUSTER"), "{text}");
}

#[test]
fn config_debug_prints_no_credentials() {
    let url = format!("redis://app:{PASSWORD}@10.0.0.1:6379/2");
    let config = from(&[("SESSION_DRIVER", "redis"), ("SESSION_REDIS_URL", &url)]).unwrap();
    let text = format!("{config:?} {:?}", config.driver);
    assert!(!text.contains(PASSWORD), "{text}");
    assert!(text.contains("10.0.0.1:6379/2"), "{text}");
    // The value itself is untouched: only printing redacts.
    assert!(matches!(config.driver, Driver::Redis { url: u, .. } if u == url));
    let sock = format!("unix:///run/redis.sock?pass={PASSWORD}");
    let config = from(&[("SESSION_DRIVER", "redis"), ("SESSION_REDIS_URL", &sock)]).unwrap();
    assert!(!format!("{config:?}").contains(PASSWORD), "{config:?}");
}

#[test]
fn enumerated_variables_accept_any_case() {
    let driver = |v: &str| from(&[("SESSION_DRIVER", v)]).map(|c| c.driver);
    assert!(matches!(driver("Redis").unwrap(), Driver::Redis { .. }));
    assert_eq!(driver("MEMORY").unwrap(), Driver::Memory);
    assert_eq!(driver("Local").unwrap(), Driver::Memory);
    assert_eq!(driver(" noop ").unwrap(), Driver::Noop);
    assert!(from(&[("SESSION_LOCK_POLICY", "Request")]).is_ok());
    assert!(from(&[("SESSION_WRITE_POLICY", "LOCKED-ONLY")]).is_ok());
    assert!(from(&[("SESSION_SAME_SITE", "Strict")]).is_ok());
    assert!(from(&[("SESSION_OWNER_WHEN_FULL", "REFUSE")]).is_ok());
    // Still refused: a value that is not one of the names, in any case.
    assert_eq!(
        driver("Mongo").unwrap_err().setting(),
        Some("SESSION_DRIVER")
    );
}

#[test]
fn every_url_form_the_redis_store_takes_is_accepted() {
    for url in [
        "redis://127.0.0.1:6379",
        "rediss://redis.internal:6380",
        "unix:///run/redis/redis.sock",
        "redis+unix:///run/redis/redis.sock?db=2",
        "valkey://127.0.0.1",
        "valkeys://valkey.internal",
    ] {
        let config = from(&[("SESSION_DRIVER", "redis"), ("SESSION_REDIS_URL", url)]);
        assert!(config.is_ok(), "{url}: {}", config.unwrap_err());
    }
    let err = from(&[
        ("SESSION_DRIVER", "redis"),
        ("SESSION_REDIS_URL", "http://127.0.0.1"),
    ])
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("unix://"),
        "the accepted forms are listed: {text}"
    );
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_prefix_for_the_memory_driver_is_reported_not_silently_ignored() {
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(logs.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let config = from(&[("SESSION_DRIVER", "memory"), ("SESSION_PREFIX", "shop:")]).unwrap();
    assert!(config.into_layer().await.is_ok());
    let text = logs.text();
    assert!(text.contains("WARN"), "{text}");
    assert!(text.contains("SESSION_PREFIX"), "{text}");
    assert!(text.contains("memory"), "{text}");

    // No prefix, no warning.
    let logs_before = logs.text().len();
    assert!(from(&[]).unwrap().into_layer().await.is_ok());
    assert_eq!(logs.text().len(), logs_before, "{}", logs.text());
}

/// A port nothing listens on.
#[cfg(feature = "redis")]
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn redis_down_at_start_up_names_the_address_without_the_password() {
    let port = closed_port();
    let url = format!("redis://app:{PASSWORD}@127.0.0.1:{port}");
    let err = from(&[("SESSION_DRIVER", "redis"), ("SESSION_REDIS_URL", &url)])
        .unwrap()
        .into_layer()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StoreUnavailable, "{err}");
    let text = printed(&err);
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{text}"
    );
    assert!(!text.contains(PASSWORD), "{text}");
}

#[cfg(all(feature = "redis", not(feature = "redis-tls")))]
#[tokio::test]
async fn rediss_without_tls_names_the_variable_and_the_feature() {
    let url = format!("rediss://:{PASSWORD}@redis.internal:6380");
    let err = from(&[("SESSION_DRIVER", "redis"), ("SESSION_REDIS_URL", &url)])
        .unwrap()
        .into_layer()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{err}");
    assert_eq!(err.setting(), Some("SESSION_REDIS_URL"), "{err}");
    let text = err.to_string();
    assert!(text.contains("`redis-tls`"), "{text}");
    assert!(text.contains("redis.internal:6380"), "{text}");
    assert!(!printed(&err).contains(PASSWORD), "{}", printed(&err));
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn a_bad_prefix_for_redis_names_session_prefix() {
    let err = from(&[
        ("SESSION_DRIVER", "redis"),
        (
            "SESSION_REDIS_URL",
            &format!("redis://127.0.0.1:{}", closed_port()),
        ),
        ("SESSION_PREFIX", "{shop}"),
    ])
    .unwrap()
    .into_layer()
    .await
    .unwrap_err();
    assert_eq!(err.setting(), Some("SESSION_PREFIX"), "{err}");
}

#[cfg(feature = "redis-tls")]
#[tokio::test]
async fn with_redis_tls_a_rediss_url_gets_to_the_connection() {
    let port = closed_port();
    let url = format!("rediss://:{PASSWORD}@127.0.0.1:{port}");
    let err = from(&[("SESSION_DRIVER", "redis"), ("SESSION_REDIS_URL", &url)])
        .unwrap()
        .into_layer()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StoreUnavailable, "{err}");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    assert!(!printed(&err).contains(PASSWORD), "{}", printed(&err));
}
