//! A real HTTP server on 127.0.0.1 with a session layer over a counting
//! memory store, and the routes the HTTP tests drive.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query};
use axum::routing::{get, post};
use sessionkit::store::MemoryStore;
use sessionkit::{
    CookieConfig, Error, ErrorKind, Session, SessionConfig, SessionLayer, SessionLayerBuilder,
};
use sessionkit_core::testkit::CountingStore;

pub struct Server {
    pub addr: SocketAddr,
    pub store: CountingStore<MemoryStore>,
    pub layer: SessionLayer,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    pub async fn start() -> Server {
        Server::with(SessionConfig::default(), CookieConfig::default()).await
    }

    pub async fn with(config: SessionConfig, cookie: CookieConfig) -> Server {
        let store = CountingStore::new(MemoryStore::builder().sweep_interval(None).build());
        Server::over(store, config, cookie).await
    }

    /// A server over an existing store (to share it between servers).
    pub async fn over(
        store: CountingStore<MemoryStore>,
        config: SessionConfig,
        cookie: CookieConfig,
    ) -> Server {
        Server::built(store, |b| b.config(config).cookie(cookie)).await
    }

    /// A server whose layer `build` sets up.
    pub async fn built(
        store: CountingStore<MemoryStore>,
        build: impl FnOnce(SessionLayerBuilder) -> SessionLayerBuilder,
    ) -> Server {
        let layer = build(SessionLayer::builder(store.clone())).build().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = routes().layer(layer.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Server {
            addr,
            store,
            layer,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

type Res<T> = Result<T, sessionkit::Error>;

pub fn routes() -> Router {
    Router::new()
        .route("/plain", get(|| async { "plain" }))
        .route("/get/{key}", get(get_key))
        .route("/set/{key}/{value}", post(set_key))
        .route("/incr", post(incr_buffered))
        .route("/incr-locked", post(incr_locked))
        .route("/regenerate", post(regenerate))
        .route("/destroy", post(destroy))
        .route("/slow-read-write/{key}", post(slow_read_write))
        .route("/slow-blind-write/{key}", post(slow_blind_write))
        .route("/fail-after-write", post(fail_after_write))
        .route("/remember/{secs}", post(remember))
        .route("/cached-read/{key}", get(cached_read))
        .route("/lock-then-400/{value}", post(lock_then_400))
        .route("/fail/{kind}", post(fail))
}

async fn remember(session: Session, Path(secs): Path<u64>) -> Res<&'static str> {
    session.insert("user", "ada")?;
    session.set_lifetime(Duration::from_secs(secs))?;
    Ok("ok")
}

/// A read whose handler chose its own caching.
async fn cached_read(
    session: Session,
    Path(key): Path<String>,
) -> Res<impl axum::response::IntoResponse> {
    let value = session.get::<String>(&key).await?.unwrap_or_default();
    Ok(([("cache-control", "public, max-age=60")], value))
}

/// An early return with an error status after a locked change.
async fn lock_then_400(
    session: Session,
    Path(value): Path<i64>,
) -> Res<(axum::http::StatusCode, &'static str)> {
    session.lock().await?;
    session.insert("qty", &value)?;
    Ok((axum::http::StatusCode::BAD_REQUEST, "refused"))
}

/// A handler that fails with a session error of `kind`.
async fn fail(session: Session, Path(kind): Path<String>) -> Res<&'static str> {
    let _ = session.get::<String>("k").await?;
    Err(Error::new(match kind.as_str() {
        "gone" => ErrorKind::SessionGone,
        _ => ErrorKind::StoreUnavailable,
    }))
}

async fn get_key(session: Session, Path(key): Path<String>) -> Res<String> {
    Ok(match session.get::<serde_json::Value>(&key).await? {
        Some(serde_json::Value::String(s)) => s,
        Some(other) => other.to_string(),
        None => "<none>".into(),
    })
}

async fn set_key(
    session: Session,
    Path((key, value)): Path<(String, String)>,
) -> Res<&'static str> {
    session.insert(&key, &value)?;
    Ok("ok")
}

async fn incr_buffered(session: Session) -> Res<String> {
    let n = session.get::<u64>("n").await?.unwrap_or(0) + 1;
    session.insert("n", &n)?;
    Ok(n.to_string())
}

async fn incr_locked(session: Session) -> Res<String> {
    session.lock().await?;
    let n = session.get::<u64>("n").await?.unwrap_or(0) + 1;
    session.insert("n", &n)?;
    session.commit().await?;
    Ok(n.to_string())
}

async fn regenerate(session: Session) -> Res<&'static str> {
    session.regenerate().await?;
    Ok("ok")
}

async fn destroy(session: Session) -> Res<&'static str> {
    session.destroy().await?;
    Ok("ok")
}

#[derive(serde::Deserialize)]
pub struct Delay {
    ms: u64,
}

async fn slow_read_write(
    session: Session,
    Path(key): Path<String>,
    Query(d): Query<Delay>,
) -> Res<&'static str> {
    let _ = session.get::<String>(&key).await?;
    tokio::time::sleep(Duration::from_millis(d.ms)).await;
    session.insert(&key, "late")?;
    Ok("ok")
}

async fn slow_blind_write(
    session: Session,
    Path(key): Path<String>,
    Query(d): Query<Delay>,
) -> Res<&'static str> {
    tokio::time::sleep(Duration::from_millis(d.ms)).await;
    session.insert(&key, "late")?;
    Ok("ok")
}

async fn fail_after_write(session: Session) -> Res<(axum::http::StatusCode, &'static str)> {
    session.lock().await?;
    session.insert("failed", "yes")?;
    Ok((axum::http::StatusCode::INTERNAL_SERVER_ERROR, "boom"))
}

/// A client that keeps cookies, like a browser.
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap()
}

/// A client that keeps nothing; tests set `Cookie` by hand.
pub fn raw() -> reqwest::Client {
    reqwest::Client::builder().build().unwrap()
}

/// The `Set-Cookie` headers of a response.
pub fn set_cookies(res: &reqwest::Response) -> Vec<String> {
    res.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

/// The session id a response set, if any.
pub fn cookie_id(res: &reqwest::Response) -> Option<String> {
    set_cookies(res).iter().find_map(|c| {
        let value = c.strip_prefix("session=")?.split(';').next()?;
        (!value.is_empty()).then(|| value.to_owned())
    })
}
