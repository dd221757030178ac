//! Shared pieces of sessionkit's reliability suite: the shop served in-process, a latency-injecting TCP proxy, and process memory readings.
//!
//! The tests live in `tests/` (model-checked concurrency on every store,
//! faults on real servers); the soak driver is the `soak` binary, run by
//! `scripts/soak.sh`. The figures they produce are in `RELIABILITY.md` at
//! the root of the repository.
//!
//! Everything here talks to `127.0.0.1` only.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The shop (`examples/shop`) served on `127.0.0.1:0` by a task of the
/// current runtime; the task is aborted when this is dropped.
#[derive(Debug)]
pub struct App {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl App {
    /// Serves `shop::app(layer)`.
    pub async fn serve(layer: sessionkit::SessionLayer) -> App {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(async move {
            axum::serve(listener, shop::app(layer))
                .await
                .expect("serve the shop");
        });
        App { addr, task }
    }

    /// `http://127.0.0.1:PORT/path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The CSRF token of the session `cookie` names, which the shop wants on
    /// every `POST` of that session (header `x-csrf-token`): read from
    /// `GET /api/session`, a pure read. `None` when the shop knows no such
    /// session (a `POST` without one is judged by its origin alone).
    pub async fn csrf_token(&self, http: &reqwest::Client, cookie: &str) -> Option<String> {
        let body: serde_json::Value = http
            .get(self.url("/api/session"))
            .header("cookie", format!("session={cookie}"))
            .send()
            .await
            .expect("GET /api/session")
            .json()
            .await
            .expect("JSON from /api/session");
        body["csrf_token"].as_str().map(str::to_owned)
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A client that keeps no cookies (tests send `Cookie` themselves) and
/// follows no redirects.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// The value of the `session` cookie a response sets, if it sets one to a
/// value (an expired cookie has none).
pub fn session_cookie(res: &reqwest::Response) -> Option<String> {
    res.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| {
            let value = c.strip_prefix("session=")?.split(';').next()?;
            (!value.is_empty()).then(|| value.to_owned())
        })
}

/// A TCP proxy on `127.0.0.1:0` in front of `target` that delays every
/// chunk it forwards, in both directions, by a delay that can change while
/// it runs. Connections are served by tasks of the current runtime, which
/// are aborted when the proxy is dropped.
#[derive(Debug)]
pub struct LatencyProxy {
    addr: SocketAddr,
    delay_ms: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl LatencyProxy {
    /// Starts forwarding to `target` without delay.
    pub async fn start(target: SocketAddr) -> LatencyProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let delay_ms = Arc::new(AtomicU64::new(0));
        let delay = delay_ms.clone();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let delay = delay.clone();
                connections.spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::join!(pipe(cr, sw, delay.clone()), pipe(sr, cw, delay));
                });
            }
        });
        LatencyProxy {
            addr,
            delay_ms,
            task,
        }
    }

    /// The address to connect to instead of the target.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets the delay added to every forwarded chunk from now on.
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }
}

impl Drop for LatencyProxy {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every
        // connection task.
        self.task.abort();
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay_ms: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let delay = delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// The resident set size of process `pid` in KiB (`VmRSS` in
/// `/proc/PID/status`), if it can be read.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// The README's example, compiled and run as a doc test here (a crate that is
/// not published, so the published crates need no file outside them).
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
