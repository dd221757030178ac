//! Configuration from the environment: the whole session stack in one line.
//!
//! [`Config::from_env`] reads the `SESSION_*` variables below and validates
//! every value; [`Config::into_layer`] builds the store and the
//! [`SessionLayer`]. A bad value is an [`ErrorKind::InvalidConfig`]
//! error that names the variable, the value and what is accepted; a value
//! that may carry credentials (`SESSION_REDIS_URL`) is shown with them
//! replaced by `***`, in errors and in `Debug` alike
//! ([`redact_credentials`]).
//!
//! Variables that take one of a set of names (the driver, `SameSite`, the
//! policies, booleans) accept them in any case, with surrounding spaces
//! ignored: `SESSION_DRIVER=Redis` is `redis`.
//!
//! | variable | meaning | default | accepted |
//! |---|---|---|---|
//! | `SESSION_DRIVER` | where sessions live | `memory` | `memory` (alias `local`), `file`, `redis`, `memcached`, `postgres` (alias `pgsql`), `sqlite`, `noop` (any case) |
//! | `SESSION_LIFETIME` | idle lifetime, minutes | `120` | integer ≥ 1 |
//! | `SESSION_ABSOLUTE_LIFETIME` | absolute lifetime from creation, minutes | none | integer ≥ 1, or empty for none |
//! | `SESSION_TOUCH_THRESHOLD` | a read refreshes the expiry when less than this share of the lifetime remains | `0.75` | number in (0, 1] |
//! | `SESSION_COOKIE_NAME` | cookie name | `session` | letters, digits, `_`, `-`; not all digits; `__Host-`/`__Secure-` rules apply |
//! | `SESSION_DOMAIN` | cookie `Domain` | none | host name |
//! | `SESSION_PATH` | cookie `Path` | `/` | path starting with `/` |
//! | `SESSION_SECURE_COOKIE` | cookie `Secure` | `true` | `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`) |
//! | `SESSION_HTTP_ONLY` | cookie `HttpOnly` | `true` | as above |
//! | `SESSION_SAME_SITE` | cookie `SameSite` | `lax` | `lax`, `strict`, `none` (any case) |
//! | `SESSION_PERSISTENT_COOKIE` | send `Max-Age` (else a browser-session cookie; "remember me" sessions always get `Max-Age`) | `true` | boolean |
//! | `SESSION_SIGNING_KEYS` | sign the cookie (or the header token); the first key signs, all verify (rotation) | none (unsigned) | comma-separated secrets of at least 32 bytes each |
//! | `SESSION_TRANSPORT` | how the id travels ([`Transport`]) | `cookie` | `cookie`, `header` (any case) |
//! | `SESSION_HEADER_NAME` | the header of `SESSION_TRANSPORT=header` | `x-session-token` | a header name other than `cookie`/`set-cookie` (any case) |
//! | `SESSION_PREFIX` | key prefix in shared stores (`file`, `redis`, `memcached`), isolating apps; ignored with a logged warning for `memory` and `noop` (see below) | the store's | non-empty text without spaces or control characters; each store adds its own rules |
//! | `SESSION_REDIS_URL` | Redis URL for `redis` | `redis://127.0.0.1:6379` | `redis://[user:password@]host[:port][/db]`, `rediss://…` (TLS, feature `redis-tls`), `valkey://…`, `valkeys://…`, `unix:///path/to/redis.sock` (also `redis+unix://`, `valkey+unix://`; `?db=…&pass=…`); for a cluster, several `redis://`/`rediss://` URLs separated by commas |
//! | `SESSION_REDIS_CLUSTER` | the URLs name a Redis Cluster | `false` | boolean (needs feature `redis-cluster`) |
//! | `SESSION_MEMCACHED_SERVERS` | servers for `memcached` | `127.0.0.1:11211` | `host:port[:weight],…` |
//! | `SESSION_DATABASE_URL` | database for `postgres` and `sqlite` (required for both) | none | `postgres://[user[:password]@]host[:port]/database[?…]` (also `postgresql://`) for `postgres`; `sqlite://path/to/file.db` or `sqlite::memory:` for `sqlite` |
//! | `SESSION_TABLE` | the table of `postgres` and `sqlite`; isolates apps sharing a database | `sessions` | letters, digits and `_`, not starting with a digit, at most 50 characters; for `postgres` optionally `schema.table` |
//! | `SESSION_FILE_PATH` | save path for `file` | a private directory under the system's temporary directory | a writable directory |
//! | `SESSION_LOCK_TTL` | lock lifetime without renewal, seconds | `30` | integer ≥ 1 |
//! | `SESSION_LOCK_WAIT` | longest wait for a lock, milliseconds | `5000` | integer ≥ 0 |
//! | `SESSION_LOCK_POLICY` | when sessions are locked | `on-demand` | `on-demand`, `request` (any case) |
//! | `SESSION_WRITE_POLICY` | whether writes need a lock | `buffered` | `buffered`, `locked-only` (any case) |
//! | `SESSION_MAX_PER_OWNER` | the most sessions one owner has at once (see [`Session::set_owner`](crate::Session::set_owner)) | none | integer ≥ 1, or empty for none |
//! | `SESSION_OWNER_WHEN_FULL` | what a login beyond `SESSION_MAX_PER_OWNER` does | `end-least-recent` | `end-least-recent` (the owner's least recently used other session ends), `refuse` (the login fails with 403) (any case) |
//!
//! # `SESSION_PREFIX` with `memory` or `noop`
//!
//! A prefix isolates applications that share a store. The memory store lives
//! inside one process and the noop store keeps nothing, so neither is shared
//! and a prefix would change nothing. It is not an error — one environment
//! file can serve a Redis deployment and a development run on memory — but
//! it is not silent either: [`Config::into_layer`] logs a warning (target
//! `sessionkit`) naming `SESSION_PREFIX` and the driver.
//!
//! # Errors at start-up
//!
//! [`Config::into_layer`] reports the store's own errors under the variable
//! behind them: a Redis URL that does not parse, or `rediss://` in a build
//! without the `redis-tls` feature, names `SESSION_REDIS_URL`; a prefix the
//! store refuses names `SESSION_PREFIX`. The SQL drivers create their
//! table at start-up when it is missing (`migrate`), and refuse a table
//! whose schema version is newer than the code. A Redis server that cannot be
//! reached is a [`StoreUnavailable`](ErrorKind::StoreUnavailable) error that
//! names its address (`could not connect to host:port`), never its password.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use sessionkit_core::owner::WhenFull;
use sessionkit_core::store::{MemoryStore, NoopStore};
use sessionkit_core::{
    Error, ErrorKind, LockConfig, LockPolicy, SessionConfig, SessionStore, WritePolicy,
    redact_credentials,
};

use crate::cookie::{CookieConfig, SameSite};
use crate::middleware::SessionLayer;
use crate::signing::{MIN_KEY_LEN, SigningKey};
use crate::transport::Transport;

/// The header of `SESSION_TRANSPORT=header` unless `SESSION_HEADER_NAME` names
/// another.
const DEFAULT_HEADER_NAME: &str = "x-session-token";

/// Every driver name `SESSION_DRIVER` accepts.
pub const DRIVERS: &str =
    "memory (alias local), file, redis, memcached, postgres (alias pgsql), sqlite, noop";

/// What `SESSION_DATABASE_URL` accepts for each SQL driver.
const POSTGRES_URLS: &str =
    "a postgres://[user[:password]@]host[:port]/database URL (also postgresql://)";
const SQLITE_URLS: &str = "a sqlite://path/to/file.db URL, or sqlite::memory:";

/// Every form `SESSION_REDIS_URL` accepts, for error messages. Without an
/// `@`: error details pass through `redact_credentials`.
const REDIS_URLS: &str = "a redis://host[:port][/db], rediss://… (TLS), valkey://…, valkeys://… or unix:///path/to/redis.sock URL (also redis+unix://, valkey+unix://), with credentials if needed; for a Redis Cluster, several redis:// or rediss:// URLs separated by commas, with SESSION_REDIS_CLUSTER=true";

/// The URL schemes of a single Redis server, as the Redis store takes them.
const REDIS_SCHEMES: &[&str] = &[
    "redis",
    "rediss",
    "valkey",
    "valkeys",
    "unix",
    "redis+unix",
    "valkey+unix",
];

/// The URL schemes of Redis Cluster nodes: TCP only.
const REDIS_CLUSTER_SCHEMES: &[&str] = &["redis", "rediss", "valkey", "valkeys"];

/// Where sessions live.
///
/// `Debug` shows the Redis URL and the memcached servers with their
/// credentials replaced by `***`; the fields keep the values as given.
///
/// ```
/// use sessionkit::config::Driver;
///
/// let driver = Driver::Redis { url: "redis://app:hunter2@cache:6379".into(), cluster: false };
/// assert_eq!(format!("{driver:?}"), r#"Redis { url: "redis://***@cache:6379", cluster: false }"#);
/// ```
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Driver {
    /// In this process ([`MemoryStore`]).
    Memory,
    /// Nowhere ([`NoopStore`]): every request starts with an empty session.
    Noop,
    /// Files under a save path (crate `sessionkit-file`, feature `file`).
    File {
        /// The save path; `None` lets the store pick its default.
        path: Option<PathBuf>,
    },
    /// Redis or Redis Cluster (crate `sessionkit-redis`, feature `redis`).
    Redis {
        /// The server URL; for a cluster, the URLs of some of its nodes,
        /// separated by commas.
        url: String,
        /// Whether `url` names a Redis Cluster (feature `redis-cluster`).
        cluster: bool,
    },
    /// Memcached servers (crate `sessionkit-memcached`, feature `memcached`).
    Memcached {
        /// `host:port[:weight],…`
        servers: String,
    },
    /// A PostgreSQL table (crate `sessionkit-sql`, feature `postgres`).
    Postgres {
        /// `postgres://…`
        url: String,
        /// The table, optionally schema-qualified.
        table: String,
    },
    /// A SQLite table (crate `sessionkit-sql`, feature `sqlite`).
    Sqlite {
        /// `sqlite://path` or `sqlite::memory:`
        url: String,
        /// The table.
        table: String,
    },
}

impl fmt::Debug for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Driver::Memory => f.write_str("Memory"),
            Driver::Noop => f.write_str("Noop"),
            Driver::File { path } => f.debug_struct("File").field("path", path).finish(),
            Driver::Redis { url, cluster } => f
                .debug_struct("Redis")
                .field("url", &redact_credentials(url))
                .field("cluster", cluster)
                .finish(),
            Driver::Memcached { servers } => f
                .debug_struct("Memcached")
                .field("servers", &redact_credentials(servers))
                .finish(),
            Driver::Postgres { url, table } => f
                .debug_struct("Postgres")
                .field("url", &redact_credentials(url))
                .field("table", table)
                .finish(),
            Driver::Sqlite { url, table } => f
                .debug_struct("Sqlite")
                .field("url", &redact_credentials(url))
                .field("table", table)
                .finish(),
        }
    }
}

impl Driver {
    /// The name `SESSION_DRIVER` uses for this driver.
    pub fn name(&self) -> &'static str {
        match self {
            Driver::Memory => "memory",
            Driver::Noop => "noop",
            Driver::File { .. } => "file",
            Driver::Redis { .. } => "redis",
            Driver::Memcached { .. } => "memcached",
            Driver::Postgres { .. } => "postgres",
            Driver::Sqlite { .. } => "sqlite",
        }
    }
}

/// Everything needed to build the session stack: store, session and cookie
/// settings.
///
/// ```
/// use std::collections::HashMap;
/// use sessionkit::config::{Config, Driver};
///
/// let vars = HashMap::from([
///     ("SESSION_DRIVER", "memory"),
///     ("SESSION_LIFETIME", "30"),
///     ("SESSION_SAME_SITE", "strict"),
/// ]);
/// let config = Config::from_lookup(|name| vars.get(name).map(|v| v.to_string()))?;
/// assert_eq!(config.driver, Driver::Memory);
/// assert_eq!(config.session.lifetime().as_secs(), 30 * 60);
///
/// let bad = Config::from_lookup(|name| (name == "SESSION_LIFETIME").then(|| "soon".to_string()));
/// assert_eq!(bad.unwrap_err().to_string(),
///     "invalid configuration for `SESSION_LIFETIME`: got \"soon\", expected a whole number of minutes, at least 1");
/// # Ok::<(), sessionkit::Error>(())
/// ```
///
/// To override one setting of what the environment says, change its field
/// (the struct is `#[non_exhaustive]`, so it cannot be built by hand, but
/// its fields can be changed): the cookie settings are a builder by value,
/// the session settings give one with
/// [`SessionConfig::to_builder`](sessionkit_core::SessionConfig::to_builder).
///
/// ```
/// use std::time::Duration;
/// use sessionkit::config::Config;
///
/// let mut config = Config::from_lookup(|_| None)?; // or Config::from_env()?
/// config.cookie = config.cookie.name("__Host-sid");
/// config.session = config
///     .session
///     .to_builder()
///     .absolute_lifetime(Some(Duration::from_secs(12 * 3600)))
///     .build()?;
/// assert_eq!(config.cookie.cookie_name(), "__Host-sid");
/// assert_eq!(config.session.lifetime(), Duration::from_secs(120 * 60)); // untouched
/// # Ok::<(), sessionkit::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Config {
    /// The store.
    pub driver: Driver,
    /// The key prefix for shared stores, if set. Ignored, with a logged
    /// warning, by the memory and noop drivers (see the
    /// [module docs](self#session_prefix-with-memory-or-noop)).
    pub prefix: Option<String>,
    /// The session settings.
    pub session: SessionConfig,
    /// The cookie settings.
    pub cookie: CookieConfig,
    /// How the id travels (`SESSION_TRANSPORT`, `SESSION_HEADER_NAME`).
    pub transport: Transport,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            driver: Driver::Memory,
            prefix: None,
            session: SessionConfig::default(),
            cookie: CookieConfig::default(),
            transport: Transport::Cookie,
        }
    }
}

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Config, Error> {
        Config::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup` (a variable name in, its
    /// value out), for tests and for other sources of settings.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, Error> {
        let vars = Vars(&lookup);
        let driver = match vars.name("SESSION_DRIVER").as_deref() {
            None | Some("memory" | "local") => Driver::Memory,
            Some("noop") => Driver::Noop,
            Some("file") => Driver::File {
                path: vars.get("SESSION_FILE_PATH").map(PathBuf::from),
            },
            Some("redis") => Driver::Redis {
                url: vars
                    .get("SESSION_REDIS_URL")
                    .unwrap_or_else(|| "redis://127.0.0.1:6379".into()),
                cluster: vars.boolean("SESSION_REDIS_CLUSTER")?.unwrap_or(false),
            },
            Some("memcached") => Driver::Memcached {
                servers: vars
                    .get("SESSION_MEMCACHED_SERVERS")
                    .unwrap_or_else(|| "127.0.0.1:11211".into()),
            },
            Some("postgres" | "pgsql" | "postgresql") => Driver::Postgres {
                url: vars.database_url(&["postgres://", "postgresql://"], POSTGRES_URLS)?,
                table: vars.table(true)?,
            },
            Some("sqlite") => Driver::Sqlite {
                url: vars.database_url(&["sqlite:"], SQLITE_URLS)?,
                table: vars.table(false)?,
            },
            Some(_) => {
                let raw = vars.get("SESSION_DRIVER").unwrap_or_default();
                return Err(invalid("SESSION_DRIVER", &raw, DRIVERS));
            }
        };
        if let Driver::Redis { url, cluster } = &driver {
            check_redis_urls(url, *cluster)?;
        }

        let prefix = vars.get("SESSION_PREFIX");
        if let Some(p) = &prefix
            && (p.is_empty() || p.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            return Err(invalid(
                "SESSION_PREFIX",
                p,
                "non-empty text without spaces or control characters",
            ));
        }

        let mut session = SessionConfig::builder();
        if let Some(minutes) = vars.minutes("SESSION_LIFETIME")? {
            session = session.lifetime(minutes);
        }
        if let Some(v) = vars.get("SESSION_ABSOLUTE_LIFETIME") {
            let absolute = if v.is_empty() {
                None
            } else {
                Some(parse_minutes("SESSION_ABSOLUTE_LIFETIME", &v)?)
            };
            session = session.absolute_lifetime(absolute);
        }
        if let Some(v) = vars.get("SESSION_TOUCH_THRESHOLD") {
            let share: f64 = v
                .parse()
                .ok()
                .filter(|s: &f64| *s > 0.0 && *s <= 1.0)
                .ok_or_else(|| invalid("SESSION_TOUCH_THRESHOLD", &v, "a number in (0, 1]"))?;
            session = session.touch_threshold(share);
        }
        let mut lock = LockConfig::default();
        if let Some(v) = vars.get("SESSION_LOCK_TTL") {
            let secs: u64 = v.parse().ok().filter(|s| *s >= 1).ok_or_else(|| {
                invalid(
                    "SESSION_LOCK_TTL",
                    &v,
                    "a whole number of seconds, at least 1",
                )
            })?;
            lock = lock.with_ttl(Duration::from_secs(secs));
        }
        if let Some(v) = vars.get("SESSION_LOCK_WAIT") {
            let ms: u64 = v
                .parse()
                .map_err(|_| invalid("SESSION_LOCK_WAIT", &v, "a whole number of milliseconds"))?;
            lock = lock.with_wait(Duration::from_millis(ms));
        }
        session = session.lock(lock);
        match vars.name("SESSION_LOCK_POLICY").as_deref() {
            None | Some("on-demand") => {}
            Some("request") => session = session.lock_policy(LockPolicy::WholeRequest),
            Some(_) => return Err(vars.invalid("SESSION_LOCK_POLICY", "on-demand, request")),
        }
        match vars.name("SESSION_WRITE_POLICY").as_deref() {
            None | Some("buffered") => {}
            Some("locked-only") => session = session.write_policy(WritePolicy::LockedOnly),
            Some(_) => {
                return Err(vars.invalid("SESSION_WRITE_POLICY", "buffered, locked-only"));
            }
        }
        let when_full = match vars.name("SESSION_OWNER_WHEN_FULL").as_deref() {
            None | Some("end-least-recent") => WhenFull::EndLeastRecent,
            Some("refuse") => WhenFull::Refuse,
            Some(_) => {
                return Err(vars.invalid("SESSION_OWNER_WHEN_FULL", "end-least-recent, refuse"));
            }
        };
        if let Some(v) = vars.get("SESSION_MAX_PER_OWNER")
            && !v.is_empty()
        {
            let max: u32 = v.parse().ok().filter(|m| *m >= 1).ok_or_else(|| {
                invalid(
                    "SESSION_MAX_PER_OWNER",
                    &v,
                    "a whole number, at least 1 (empty for no cap)",
                )
            })?;
            session = session.max_sessions_per_owner(max, when_full);
        }
        let session = session.build()?;

        let mut cookie = CookieConfig::default();
        if let Some(name) = vars.get("SESSION_COOKIE_NAME") {
            crate::cookie::validate_name(&name).map_err(|e| {
                Error::invalid_config("SESSION_COOKIE_NAME", e.detail().unwrap_or("").to_owned())
            })?;
            cookie = cookie.name(name);
        }
        if let Some(domain) = vars.get("SESSION_DOMAIN") {
            cookie = cookie.domain((!domain.is_empty()).then_some(domain));
        }
        if let Some(path) = vars.get("SESSION_PATH") {
            cookie = cookie.path(path);
        }
        if let Some(b) = vars.boolean("SESSION_SECURE_COOKIE")? {
            cookie = cookie.secure(b);
        }
        if let Some(b) = vars.boolean("SESSION_HTTP_ONLY")? {
            cookie = cookie.http_only(b);
        }
        if let Some(b) = vars.boolean("SESSION_PERSISTENT_COOKIE")? {
            cookie = cookie.persistent(b);
        }
        if let Some(v) = vars.name("SESSION_SAME_SITE") {
            cookie = cookie.same_site(match v.as_str() {
                "lax" => SameSite::Lax,
                "strict" => SameSite::Strict,
                "none" => SameSite::None,
                _ => return Err(vars.invalid("SESSION_SAME_SITE", "lax, strict, none")),
            });
        }
        if let Some(v) = vars.get("SESSION_SIGNING_KEYS") {
            let mut keys = Vec::new();
            for (n, secret) in v.split(',').enumerate() {
                // Never echo a secret in an error: say which key and its size.
                let key = SigningKey::new(secret.trim().as_bytes().to_vec()).map_err(|_| {
                    Error::invalid_config(
                        "SESSION_SIGNING_KEYS",
                        format!(
                            "key {} of the list has {} bytes; every key needs at least {MIN_KEY_LEN}",
                            n + 1,
                            secret.trim().len()
                        ),
                    )
                })?;
                keys.push(key);
            }
            cookie = cookie.signing_keys(keys);
        }
        cookie.validate().map_err(|e| {
            // Name the variable, not the builder setting behind it.
            let var = match (e.kind(), e.setting()) {
                (ErrorKind::InvalidConfig, Some("cookie.path")) => "SESSION_PATH",
                (ErrorKind::InvalidConfig, Some("cookie.domain")) => "SESSION_DOMAIN",
                (ErrorKind::InvalidConfig, Some("cookie.same_site")) => "SESSION_SAME_SITE",
                _ => "SESSION_COOKIE_NAME",
            };
            Error::invalid_config(
                var,
                e.detail().unwrap_or("invalid cookie settings").to_owned(),
            )
        })?;

        let header_name = vars.get("SESSION_HEADER_NAME");
        let transport = match vars.name("SESSION_TRANSPORT").as_deref() {
            None | Some("cookie") => Transport::Cookie,
            Some("header") => Transport::header(
                header_name
                    .clone()
                    .unwrap_or_else(|| DEFAULT_HEADER_NAME.to_owned()),
            ),
            Some(_) => return Err(vars.invalid("SESSION_TRANSPORT", "cookie, header")),
        };
        if let Some(name) = &header_name {
            Transport::header(name.clone()).validate().map_err(|e| {
                Error::invalid_config(
                    "SESSION_HEADER_NAME",
                    format!(
                        "got {:?}: {}",
                        redact_credentials(name),
                        e.detail().unwrap_or("not a header name")
                    ),
                )
            })?;
        }

        Ok(Config {
            driver,
            prefix,
            session,
            cookie,
            transport,
        })
    }

    /// Builds the store the driver names and the layer over it.
    ///
    /// Checks the save path of the file store and connects to Redis, so that
    /// a misconfiguration fails at start-up rather than at the first request.
    /// Memcached servers that do not answer are logged, not fatal: the others
    /// serve their share of the sessions.
    ///
    /// Errors of the store's builder name the variable behind the setting
    /// (`SESSION_REDIS_URL`, `SESSION_PREFIX`); see the
    /// [module docs](self#errors-at-start-up).
    pub async fn into_layer(self) -> Result<SessionLayer, Error> {
        let prefix = self.prefix.as_deref();
        if let (Some(_), Driver::Postgres { .. } | Driver::Sqlite { .. }) = (prefix, &self.driver) {
            tracing::warn!(
                target: "sessionkit",
                variable = "SESSION_PREFIX",
                driver = self.driver.name(),
                "SESSION_PREFIX is ignored by the {} driver: applications sharing a database are isolated by SESSION_TABLE",
                self.driver.name()
            );
        }
        if let (Some(_), Driver::Memory | Driver::Noop) = (prefix, &self.driver) {
            tracing::warn!(
                target: "sessionkit",
                variable = "SESSION_PREFIX",
                driver = self.driver.name(),
                "SESSION_PREFIX is ignored by the {} driver: it is not shared with other applications, so there is nothing to isolate",
                self.driver.name()
            );
        }
        self.build_layer().await.map_err(|err| for_env(err, prefix))
    }

    async fn build_layer(&self) -> Result<SessionLayer, Error> {
        match &self.driver {
            Driver::Memory => self.layer_over(MemoryStore::new()),
            Driver::Noop => self.layer_over(NoopStore),
            #[cfg(feature = "file")]
            Driver::File { path } => {
                let mut builder = sessionkit_file::FileStore::builder();
                if let Some(path) = path {
                    builder = builder.path(path);
                }
                if let Some(prefix) = &self.prefix {
                    builder = builder.prefix(prefix.clone());
                }
                self.layer_over(builder.build()?)
            }
            #[cfg(not(feature = "file"))]
            Driver::File { .. } => Err(not_compiled("file")),
            #[cfg(feature = "memcached")]
            Driver::Memcached { servers } => {
                let servers = sessionkit_memcached::ServerList::parse(servers)?;
                let mut builder = sessionkit_memcached::MemcachedStore::builder(servers);
                if let Some(prefix) = &self.prefix {
                    builder = builder.prefix(prefix.clone());
                }
                let store = builder.build()?;
                // One server down must not keep the app from starting (the
                // others serve their share), but say so at once.
                if let Err(err) = store.ping().await {
                    tracing::warn!(error = %err, "a memcached server does not answer at start-up");
                }
                self.layer_over(store)
            }
            #[cfg(not(feature = "memcached"))]
            Driver::Memcached { .. } => Err(not_compiled("memcached")),
            #[cfg(feature = "redis")]
            Driver::Redis { url, cluster } => {
                let mut builder = sessionkit_redis::RedisStore::builder();
                if let Some(prefix) = &self.prefix {
                    builder = builder.prefix(prefix.clone());
                }
                let store = if *cluster {
                    #[cfg(feature = "redis-cluster")]
                    {
                        builder
                            .connect_cluster(url.split(',').map(str::trim))
                            .await?
                    }
                    #[cfg(not(feature = "redis-cluster"))]
                    {
                        return Err(not_compiled("redis-cluster"));
                    }
                } else {
                    builder.connect(url).await?
                };
                self.layer_over(store)
            }
            #[cfg(not(feature = "redis"))]
            Driver::Redis { .. } => Err(not_compiled("redis")),
            #[cfg(feature = "postgres")]
            Driver::Postgres { url, table } => {
                let store = sessionkit_sql::PgStore::builder()
                    .table(table.clone())
                    .connect(url)
                    .map_err(sql_setting)?;
                store.migrate().await?;
                self.layer_over(store)
            }
            #[cfg(not(feature = "postgres"))]
            Driver::Postgres { .. } => Err(not_compiled("postgres")),
            #[cfg(feature = "sqlite")]
            Driver::Sqlite { url, table } => {
                let store = sessionkit_sql::SqliteStore::builder()
                    .table(table.clone())
                    .connect(url)
                    .map_err(sql_setting)?;
                store.migrate().await?;
                self.layer_over(store)
            }
            #[cfg(not(feature = "sqlite"))]
            Driver::Sqlite { .. } => Err(not_compiled("sqlite")),
        }
    }

    /// The layer these settings describe, over a store of your own instead
    /// of the one [`Config::driver`](Config#structfield.driver) names: the session, cookie and
    /// transport settings all apply, so nothing read from the environment
    /// is lost (building the layer by hand from the `session` and `cookie`
    /// fields would drop the transport).
    ///
    /// ```
    /// use sessionkit::Config;
    /// use sessionkit::store::MemoryStore;
    ///
    /// let config = Config::from_lookup(|name| match name {
    ///     "SESSION_TRANSPORT" => Some("header".into()),
    ///     _ => None,
    /// })?;
    /// // A memory store with a bound of its own, under the variables' settings.
    /// let layer = config.layer_over(MemoryStore::builder().max_sessions(1_000).build())?;
    /// # let _ = layer;
    /// # Ok::<(), sessionkit::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// The cookie or transport settings are invalid (see
    /// [`SessionLayerBuilder::build`](crate::SessionLayerBuilder::build)).
    pub fn layer_over(&self, store: impl SessionStore) -> Result<SessionLayer, Error> {
        SessionLayer::builder(store)
            .config(self.session.clone())
            .cookie(self.cookie.clone())
            .transport(self.transport.clone())
            .build()
    }
}

#[allow(dead_code)]
fn not_compiled(driver: &'static str) -> Error {
    Error::invalid_config(
        "SESSION_DRIVER",
        format!(
            "the {driver} driver is not compiled into this build; enable the `{driver}` feature of sessionkit"
        ),
    )
}

/// An error naming `var`, its value (credentials redacted) and what is
/// accepted.
fn invalid(var: &'static str, value: &str, accepted: &str) -> Error {
    Error::invalid_config(
        var,
        format!("got {:?}, expected {accepted}", redact_credentials(value)),
    )
}

/// Checks the URL forms of `SESSION_REDIS_URL` (the rest of the URL is left to
/// the store, which checks it when connecting).
fn check_redis_urls(value: &str, cluster: bool) -> Result<(), Error> {
    let urls: Vec<&str> = value.split(',').map(str::trim).collect();
    let scheme_of = |url: &str| {
        url.split_once("://")
            .map(|(scheme, _)| scheme.to_ascii_lowercase())
    };
    let known = |url: &&str, schemes: &[&str]| {
        scheme_of(url).is_some_and(|s| schemes.contains(&s.as_str()))
    };
    if !urls.iter().all(|u| known(u, REDIS_SCHEMES)) {
        return Err(invalid("SESSION_REDIS_URL", value, REDIS_URLS));
    }
    if urls.len() > 1 && !cluster {
        return Err(Error::invalid_config(
            "SESSION_REDIS_URL",
            format!(
                "got {:?}, {} URLs; expected one, or several for a Redis Cluster with SESSION_REDIS_CLUSTER=true",
                redact_credentials(value),
                urls.len()
            ),
        ));
    }
    if cluster && !urls.iter().all(|u| known(u, REDIS_CLUSTER_SCHEMES)) {
        return Err(Error::invalid_config(
            "SESSION_REDIS_URL",
            format!(
                "got {:?}; a Redis Cluster is reached over TCP: expected redis:// or rediss:// URLs of its nodes",
                redact_credentials(value)
            ),
        ));
    }
    Ok(())
}

/// A SQL store builder's error under the name of the variable behind its
/// setting.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
fn sql_setting(err: Error) -> Error {
    match err.setting() {
        Some("url") => err.with_setting("SESSION_DATABASE_URL"),
        Some("table") => err.with_setting("SESSION_TABLE"),
        _ => err,
    }
}

/// A store builder's error under the name of the variable behind its
/// setting.
fn for_env(err: Error, prefix: Option<&str>) -> Error {
    match err.setting() {
        Some("url" | "nodes") => err.with_setting("SESSION_REDIS_URL"),
        Some("prefix") => Error::invalid_config(
            "SESSION_PREFIX",
            format!(
                "got {:?}: {}",
                prefix.unwrap_or_default(),
                err.detail().unwrap_or("refused by the store")
            ),
        ),
        _ => err,
    }
}

fn parse_minutes(var: &'static str, v: &str) -> Result<Duration, Error> {
    v.trim()
        .parse::<u64>()
        .ok()
        .filter(|m| (1..=u64::MAX / 60_000).contains(m))
        .map(|m| Duration::from_secs(m * 60))
        .ok_or_else(|| invalid(var, v, "a whole number of minutes, at least 1"))
}

struct Vars<'a>(&'a dyn Fn(&str) -> Option<String>);

impl Vars<'_> {
    fn get(&self, name: &str) -> Option<String> {
        (self.0)(name)
    }

    /// A variable that takes one of a set of names: trimmed and in lowercase,
    /// so that any case is accepted.
    fn name(&self, name: &str) -> Option<String> {
        self.get(name).map(|v| v.trim().to_ascii_lowercase())
    }

    /// The error for a variable whose value is not one of `accepted`.
    fn invalid(&self, var: &'static str, accepted: &str) -> Error {
        invalid(var, &self.get(var).unwrap_or_default(), accepted)
    }

    /// `SESSION_DATABASE_URL`, required, starting with one of `schemes`.
    fn database_url(&self, schemes: &[&str], accepted: &str) -> Result<String, Error> {
        const VAR: &str = "SESSION_DATABASE_URL";
        let driver = self.name("SESSION_DRIVER").unwrap_or_default();
        let Some(url) = self.get(VAR).map(|u| u.trim().to_owned()) else {
            return Err(Error::invalid_config(
                VAR,
                format!("missing; SESSION_DRIVER={driver} needs {accepted}"),
            ));
        };
        let lower = url.to_ascii_lowercase();
        if !schemes.iter().any(|s| lower.starts_with(s)) {
            return Err(invalid(
                VAR,
                &url,
                &format!("{accepted} for SESSION_DRIVER={driver}"),
            ));
        }
        Ok(url)
    }

    /// `SESSION_TABLE`, default `sessions`, checked as the SQL stores
    /// check it (in a build without them, by the same rule's shape: the
    /// driver then fails as not compiled anyway).
    fn table(&self, schema_qualified: bool) -> Result<String, Error> {
        let Some(table) = self.get("SESSION_TABLE") else {
            return Ok("sessions".to_owned());
        };
        #[cfg(any(feature = "postgres", feature = "sqlite"))]
        sessionkit_sql::check_table_name(&table, schema_qualified).map_err(|e| {
            Error::invalid_config(
                "SESSION_TABLE",
                e.detail().unwrap_or("not a valid table name").to_owned(),
            )
        })?;
        #[cfg(not(any(feature = "postgres", feature = "sqlite")))]
        let _ = schema_qualified;
        Ok(table)
    }

    fn minutes(&self, var: &'static str) -> Result<Option<Duration>, Error> {
        self.get(var).map(|v| parse_minutes(var, &v)).transpose()
    }

    fn boolean(&self, var: &'static str) -> Result<Option<bool>, Error> {
        let Some(v) = self.name(var) else {
            return Ok(None);
        };
        match v.as_str() {
            "true" | "1" | "yes" | "on" => Ok(Some(true)),
            "false" | "0" | "no" | "off" => Ok(Some(false)),
            _ => Err(self.invalid(var, "true or false (also 1/0, yes/no, on/off; any case)")),
        }
    }
}

impl SessionLayer {
    /// The whole session stack from the environment, in one line:
    /// [`Config::from_env`] then [`Config::into_layer`].
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), sessionkit::Error> {
    /// let layer = sessionkit::SessionLayer::from_env().await?;
    /// # let _ = layer; Ok(()) }
    /// ```
    pub async fn from_env() -> Result<SessionLayer, Error> {
        Config::from_env()?.into_layer().await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn from(vars: &[(&str, &str)]) -> Result<Config, Error> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    fn rejected(var: &'static str, value: &str) {
        let err = from(&[(var, value)]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{var}={value}");
        assert_eq!(err.setting(), Some(var), "{var}={value}: {err}");
        let text = err.to_string();
        assert!(text.contains(var), "{text}");
    }

    #[test]
    fn nothing_set_gives_the_defaults() {
        assert_eq!(from(&[]).unwrap(), Config::default());
    }

    #[test]
    fn the_builder_and_the_environment_agree() {
        let env = from(&[
            ("SESSION_DRIVER", "noop"),
            ("SESSION_LIFETIME", "15"),
            ("SESSION_ABSOLUTE_LIFETIME", "600"),
            ("SESSION_TOUCH_THRESHOLD", "0.5"),
            ("SESSION_COOKIE_NAME", "__Host-sid"),
            ("SESSION_PATH", "/"),
            ("SESSION_SECURE_COOKIE", "true"),
            ("SESSION_HTTP_ONLY", "yes"),
            ("SESSION_SAME_SITE", "Strict"),
            ("SESSION_PERSISTENT_COOKIE", "off"),
            ("SESSION_PREFIX", "shop:"),
            ("SESSION_LOCK_TTL", "10"),
            ("SESSION_LOCK_WAIT", "2500"),
            ("SESSION_LOCK_POLICY", "request"),
            ("SESSION_WRITE_POLICY", "locked-only"),
            ("SESSION_MAX_PER_OWNER", "3"),
            ("SESSION_OWNER_WHEN_FULL", "Refuse"),
            (
                "SESSION_SIGNING_KEYS",
                "0123456789abcdef0123456789abcdef, fedcba9876543210fedcba9876543210",
            ),
        ])
        .unwrap();
        let built = Config {
            driver: Driver::Noop,
            prefix: Some("shop:".into()),
            session: SessionConfig::builder()
                .lifetime(Duration::from_secs(15 * 60))
                .absolute_lifetime(Some(Duration::from_secs(600 * 60)))
                .touch_threshold(0.5)
                .lock(
                    LockConfig::default()
                        .with_ttl(Duration::from_secs(10))
                        .with_wait(Duration::from_millis(2500)),
                )
                .lock_policy(LockPolicy::WholeRequest)
                .write_policy(WritePolicy::LockedOnly)
                .max_sessions_per_owner(3, WhenFull::Refuse)
                .build()
                .unwrap(),
            cookie: CookieConfig::default()
                .name("__Host-sid")
                .same_site(SameSite::Strict)
                .persistent(false)
                .signing_keys(vec![
                    SigningKey::new(*b"0123456789abcdef0123456789abcdef").unwrap(),
                    SigningKey::new(*b"fedcba9876543210fedcba9876543210").unwrap(),
                ]),
            transport: Transport::Cookie,
        };
        assert_eq!(env, built);
    }

    #[test]
    fn session_transport_and_header_name_are_read_and_checked() {
        let read = |vars: &[(&str, &str)]| {
            Config::from_lookup(|name| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            })
        };
        assert_eq!(read(&[]).unwrap().transport, Transport::Cookie);
        assert_eq!(
            read(&[("SESSION_TRANSPORT", "Header")]).unwrap().transport,
            Transport::header("x-session-token")
        );
        assert_eq!(
            read(&[
                ("SESSION_TRANSPORT", "header"),
                ("SESSION_HEADER_NAME", "X-Auth-Token")
            ])
            .unwrap()
            .transport,
            Transport::Header("x-auth-token".into())
        );
        let err = read(&[("SESSION_TRANSPORT", "query")]).unwrap_err();
        assert_eq!(err.setting(), Some("SESSION_TRANSPORT"));
        for bad in ["a b", "cookie", "Set-Cookie", "", "x\u{e9}"] {
            let err = read(&[
                ("SESSION_TRANSPORT", "header"),
                ("SESSION_HEADER_NAME", bad),
            ])
            .unwrap_err();
            assert_eq!(err.setting(), Some("SESSION_HEADER_NAME"), "{bad:?}");
        }
    }

    #[test]
    fn drivers_are_parsed_with_their_settings() {
        assert_eq!(
            from(&[("SESSION_DRIVER", "local")]).unwrap().driver,
            Driver::Memory
        );
        assert_eq!(
            from(&[
                ("SESSION_DRIVER", "file"),
                ("SESSION_FILE_PATH", "/var/lib/s")
            ])
            .unwrap()
            .driver,
            Driver::File {
                path: Some("/var/lib/s".into())
            }
        );
        assert_eq!(
            from(&[
                ("SESSION_DRIVER", "redis"),
                ("SESSION_REDIS_URL", "redis://127.0.0.1:7000/2")
            ])
            .unwrap()
            .driver,
            Driver::Redis {
                url: "redis://127.0.0.1:7000/2".into(),
                cluster: false
            }
        );
        assert_eq!(
            from(&[
                ("SESSION_DRIVER", "memcached"),
                ("SESSION_MEMCACHED_SERVERS", "a:1:2,b:3")
            ])
            .unwrap()
            .driver,
            Driver::Memcached {
                servers: "a:1:2,b:3".into()
            }
        );
    }

    #[test]
    fn sql_drivers_take_a_database_url_and_a_table() {
        assert_eq!(
            from(&[
                ("SESSION_DRIVER", "Postgres"),
                ("SESSION_DATABASE_URL", "postgres://app:pw@db:5432/app"),
                ("SESSION_TABLE", "web.sessions"),
            ])
            .unwrap()
            .driver,
            Driver::Postgres {
                url: "postgres://app:pw@db:5432/app".into(),
                table: "web.sessions".into()
            }
        );
        assert_eq!(
            from(&[
                ("SESSION_DRIVER", "sqlite"),
                ("SESSION_DATABASE_URL", "sqlite://data/sessions.db"),
            ])
            .unwrap()
            .driver,
            Driver::Sqlite {
                url: "sqlite://data/sessions.db".into(),
                table: "sessions".into()
            }
        );
        let driver = from(&[
            ("SESSION_DRIVER", "pgsql"),
            ("SESSION_DATABASE_URL", "postgresql://app:hunter2@db/app"),
        ])
        .unwrap()
        .driver;
        assert!(!format!("{driver:?}").contains("hunter2"), "{driver:?}");

        let missing = from(&[("SESSION_DRIVER", "postgres")]).unwrap_err();
        assert_eq!(missing.setting(), Some("SESSION_DATABASE_URL"));
        assert!(missing.to_string().contains("postgres://"), "{missing}");
        let wrong = from(&[
            ("SESSION_DRIVER", "sqlite"),
            ("SESSION_DATABASE_URL", "postgres://u:secret@db/app"),
        ])
        .unwrap_err();
        assert_eq!(wrong.setting(), Some("SESSION_DATABASE_URL"));
        assert!(wrong.to_string().contains("sqlite://"), "{wrong}");
        assert!(!wrong.to_string().contains("secret"), "{wrong}");
    }

    #[cfg(any(feature = "postgres", feature = "sqlite"))]
    #[test]
    fn sql_tables_are_checked() {
        for (driver, url, table) in [
            ("postgres", "postgres://db/app", "a.b.c"),
            (
                "postgres",
                "postgres://db/app",
                "sessions; drop table users",
            ),
            ("sqlite", "sqlite::memory:", "app.sessions"),
            ("sqlite", "sqlite::memory:", "1st"),
        ] {
            let err = from(&[
                ("SESSION_DRIVER", driver),
                ("SESSION_DATABASE_URL", url),
                ("SESSION_TABLE", table),
            ])
            .unwrap_err();
            assert_eq!(err.setting(), Some("SESSION_TABLE"), "{table}: {err}");
            assert!(err.to_string().contains("letters, digits"), "{err}");
        }
    }

    #[cfg(feature = "sqlite")]
    #[tokio::test]
    async fn the_sqlite_driver_builds_a_layer_and_its_table() {
        let config = from(&[
            ("SESSION_DRIVER", "sqlite"),
            ("SESSION_DATABASE_URL", "sqlite::memory:"),
            ("SESSION_TABLE", "web_sessions"),
        ])
        .unwrap();
        config.into_layer().await.expect("a layer on SQLite");
    }

    #[test]
    fn an_unknown_driver_lists_the_known_ones() {
        let err = from(&[("SESSION_DRIVER", "mongo")]).unwrap_err();
        assert_eq!(err.setting(), Some("SESSION_DRIVER"));
        assert!(err.to_string().contains(DRIVERS), "{err}");
        assert!(err.to_string().contains("\"mongo\""), "{err}");
    }

    #[test]
    fn every_variable_rejects_a_bad_value() {
        rejected("SESSION_LIFETIME", "0");
        rejected("SESSION_LIFETIME", "two hours");
        rejected("SESSION_ABSOLUTE_LIFETIME", "-5");
        rejected("SESSION_TOUCH_THRESHOLD", "1.5");
        rejected("SESSION_COOKIE_NAME", "12345");
        rejected("SESSION_COOKIE_NAME", "a;b");
        rejected("SESSION_DOMAIN", "exa mple.com");
        rejected("SESSION_PATH", "no-slash");
        rejected("SESSION_SECURE_COOKIE", "maybe");
        rejected("SESSION_HTTP_ONLY", "2");
        rejected("SESSION_PERSISTENT_COOKIE", "y");
        rejected("SESSION_SAME_SITE", "loose");
        rejected("SESSION_PREFIX", "has space");
        rejected("SESSION_LOCK_TTL", "0");
        rejected("SESSION_LOCK_WAIT", "soon");
        rejected("SESSION_LOCK_POLICY", "always");
        rejected("SESSION_WRITE_POLICY", "strict");
        rejected("SESSION_MAX_PER_OWNER", "0");
        rejected("SESSION_MAX_PER_OWNER", "many");
        rejected("SESSION_OWNER_WHEN_FULL", "evict");
        rejected("SESSION_SIGNING_KEYS", "short");
        let err =
            from(&[("SESSION_SIGNING_KEYS", &format!("{},tiny", "k".repeat(32)))]).unwrap_err();
        assert!(
            err.to_string().contains("key 2 of the list has 4 bytes"),
            "{err}"
        );
        assert!(
            !err.to_string().contains("tiny"),
            "secrets are not echoed: {err}"
        );
        let err = from(&[
            ("SESSION_DRIVER", "redis"),
            ("SESSION_REDIS_URL", "http://x"),
        ])
        .unwrap_err();
        assert_eq!(err.setting(), Some("SESSION_REDIS_URL"));
    }

    #[test]
    fn same_site_none_needs_secure() {
        let err = from(&[
            ("SESSION_SAME_SITE", "none"),
            ("SESSION_SECURE_COOKIE", "false"),
        ])
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig);
    }

    #[cfg(feature = "file")]
    #[tokio::test]
    async fn the_file_driver_builds_a_file_store_and_checks_its_path() {
        let dir = std::env::temp_dir().join(format!(
            "sessionkit-config-test-{}",
            sessionkit_core::SessionId::generate().short_hash()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.to_str().unwrap();
        let config = from(&[("SESSION_DRIVER", "file"), ("SESSION_FILE_PATH", path)]).unwrap();
        assert!(config.into_layer().await.is_ok());
        let not_dir = dir.join("not-a-dir");
        std::fs::write(&not_dir, b"x").unwrap();
        let err = from(&[
            ("SESSION_DRIVER", "file"),
            ("SESSION_FILE_PATH", not_dir.to_str().unwrap()),
        ])
        .unwrap()
        .into_layer()
        .await
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidSavePath, "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn memory_and_noop_build_a_layer() {
        assert!(from(&[]).unwrap().into_layer().await.is_ok());
        assert!(
            from(&[("SESSION_DRIVER", "noop")])
                .unwrap()
                .into_layer()
                .await
                .is_ok()
        );
    }
}
