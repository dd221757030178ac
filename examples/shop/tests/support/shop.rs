//! The shop binary on a free port, the stores it can run on, and the client-side helpers the shop's tests share.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;

use super::pg;

/// The shop binary, started on a free port and killed on drop.
pub(crate) struct Shop {
    pub(crate) child: Child,
    pub(crate) base: String,
}

impl Shop {
    /// The shop under test (`crate::BIN`) with `envs`; its log is dropped.
    pub(crate) fn start(envs: &[(&str, &str)]) -> Shop {
        Shop::spawn(crate::BIN, envs, None)
    }

    /// The shop binary `bin` with `envs`; its log is dropped.
    pub(crate) fn start_bin(bin: &str, envs: &[(&str, &str)]) -> Shop {
        Shop::spawn(bin, envs, None)
    }

    /// The shop with `envs`, its log (`tracing` writes to stdout) copied
    /// to `log`.
    pub(crate) fn start_logging_to(envs: &[(&str, &str)], log: &Path) -> Shop {
        let file = std::fs::File::create(log).expect("create the shop's log file");
        Shop::spawn(crate::BIN, envs, Some(file))
    }

    fn spawn(bin: &str, envs: &[(&str, &str)], log: Option<std::fs::File>) -> Shop {
        let mut child = Command::new(bin)
            .env("SHOP_ADDR", "127.0.0.1:0")
            .env("RUST_LOG", "warn")
            .envs(envs.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start {bin}: {e}"));
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        // The rest is the log: kept when asked for, else read and dropped
        // (a closed pipe would make every log line an error).
        std::thread::spawn(move || match log {
            Some(mut file) => drop(std::io::copy(&mut stdout, &mut file)),
            None => drop(std::io::copy(&mut stdout, &mut std::io::sink())),
        });
        let base = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_owned();
        Shop { child, base }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }
}

impl Drop for Shop {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `POST url` with `form` (urlencoded), from `client`.
pub(crate) async fn post_form<T: serde::Serialize + ?Sized>(
    client: &reqwest::Client,
    url: impl reqwest::IntoUrl,
    form: &T,
) -> reqwest::Response {
    client.post(url).form(form).send().await.unwrap()
}

/// `GET url` from `client`.
pub(crate) async fn get(client: &reqwest::Client, url: impl reqwest::IntoUrl) -> reqwest::Response {
    client.get(url).send().await.unwrap()
}

pub(crate) fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

pub(crate) async fn state(client: &reqwest::Client, shop: &Shop) -> Value {
    client
        .get(shop.url("/api/session"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Where a test's shop keeps its sessions: the `SESSION_*` variables, and
/// what must live as long as the shop (a SQLite file's directory).
pub(crate) struct Store {
    envs: Vec<(&'static str, String)>,
    _dir: Option<tempfile::TempDir>,
}

impl Store {
    /// The default: the memory store of the shop process.
    pub(crate) fn memory() -> Store {
        Store {
            envs: Vec::new(),
            _dir: None,
        }
    }

    /// A table of its own on the PostgreSQL server shared by this binary.
    pub(crate) fn postgres() -> Store {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let table = format!("shop_{}", NEXT.fetch_add(1, Ordering::Relaxed));
        Store {
            envs: vec![
                ("SESSION_DRIVER", "postgres".to_owned()),
                ("SESSION_DATABASE_URL", pg::shared().url()),
                ("SESSION_TABLE", table),
            ],
            _dir: None,
        }
    }

    /// A prefix of its own on the `redis-server` shared by this binary.
    pub(crate) fn redis() -> Store {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let prefix = format!("shop{}:", NEXT.fetch_add(1, Ordering::Relaxed));
        Store {
            envs: vec![
                ("SESSION_DRIVER", "redis".to_owned()),
                (
                    "SESSION_REDIS_URL",
                    sessionkit_test_servers::redis::shared().url(),
                ),
                ("SESSION_PREFIX", prefix),
            ],
            _dir: None,
        }
    }

    /// A save path of its own in a temporary directory.
    pub(crate) fn files() -> Store {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().to_str().expect("a UTF-8 temp dir").to_owned();
        Store {
            envs: vec![
                ("SESSION_DRIVER", "file".to_owned()),
                ("SESSION_FILE_PATH", path),
            ],
            _dir: Some(dir),
        }
    }

    /// A SQLite file of its own in a temporary directory.
    pub(crate) fn sqlite() -> Store {
        let dir = tempfile::tempdir().expect("a temp dir");
        let url = format!("sqlite://{}", dir.path().join("sessions.db").display());
        Store {
            envs: vec![
                ("SESSION_DRIVER", "sqlite".to_owned()),
                ("SESSION_DATABASE_URL", url),
            ],
            _dir: Some(dir),
        }
    }

    /// The variables, with `extra` after them.
    pub(crate) fn envs<'a>(&'a self, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        self.envs
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .chain(extra.iter().copied())
            .collect()
    }

    /// The value of `SESSION_TABLE` (PostgreSQL), else `sessions`.
    pub(crate) fn table(&self) -> &str {
        self.var("SESSION_TABLE").unwrap_or("sessions")
    }

    /// The value of `SESSION_DATABASE_URL`.
    pub(crate) fn database_url(&self) -> &str {
        self.var("SESSION_DATABASE_URL")
            .expect("a SQL store has a database URL")
    }

    fn var(&self, name: &str) -> Option<&str> {
        self.envs
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A shop process on this store.
    pub(crate) fn shop(&self, extra: &[(&str, &str)]) -> Shop {
        Shop::start(&self.envs(extra))
    }
}

/// `POST url` with the header `name: value` (a CSRF or session token).
pub(crate) async fn post_header(
    client: &reqwest::Client,
    url: impl reqwest::IntoUrl,
    name: &str,
    value: &str,
) -> reqwest::Response {
    client.post(url).header(name, value).send().await.unwrap()
}

/// The JSON body of `res`.
pub(crate) async fn json(res: reqwest::Response) -> Value {
    res.json().await.unwrap()
}

/// Logs `client` in as `ada` (a first login, starting the session) and
/// returns the session's CSRF token.
pub(crate) async fn log_in(client: &reqwest::Client, shop: &Shop) -> String {
    let res = client
        .post(shop.url("/login"))
        .form(&[("user", "ada")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    token_of(client, shop).await
}

/// The session's CSRF token, as `GET /api/session` shows it.
pub(crate) async fn token_of(client: &reqwest::Client, shop: &Shop) -> String {
    let v = state(client, shop).await;
    v["csrf_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no csrf_token in {v}"))
        .to_owned()
}

/// Sends 400 increments to `urls` (`POST` with the CSRF header `token`),
/// from 16 concurrent clients sharing `client`'s session, each alternating
/// between the two URLs; every one must answer 200.
pub(crate) async fn alternate_400_increments(
    client: &reqwest::Client,
    token: &str,
    urls: [String; 2],
) {
    let mut tasks = Vec::new();
    for t in 0..16 {
        let (client, urls, token) = (client.clone(), urls.clone(), token.to_owned());
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                let res = post_header(&client, &urls[(t + i) % 2], "x-csrf-token", &token).await;
                assert_eq!(res.status(), 200);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}
