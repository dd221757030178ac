//! `RedisStoreBuilder`: the settings of a `RedisStore` and the ways to connect it.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, IntoConnectionInfo, ProtocolVersion};
use sessionkit_core::{Error, Result, redact_credentials};

use crate::connection::Connection;
use crate::keys::{DEFAULT_PREFIX, KeySpace};
use crate::store::{NAME, RedisStore};

#[cfg(feature = "cluster")]
use redis::cluster::ClusterClient;
#[cfg(feature = "cluster")]
use redis::cluster_async::ClusterConnection;

/// Default for [`RedisStoreBuilder::connect_timeout`].
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default for [`RedisStoreBuilder::response_timeout`].
const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Settings of a [`RedisStore`], and the ways to connect it.
///
/// Made by [`RedisStore::builder`]. Set what differs from the defaults,
/// then finish with one of the `connect*` or `build_with_*` methods.
///
/// ```no_run
/// # async fn demo() -> sessionkit_core::Result<()> {
/// use std::time::Duration;
/// use sessionkit_redis::RedisStore;
///
/// let store = RedisStore::builder()
///     .prefix("myapp:sess:")
///     .connect_timeout(Duration::from_secs(1))
///     .connect("redis://:secret@redis.internal:6379/2")
///     .await?;
/// # let _ = store;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct RedisStoreBuilder {
    prefix: String,
    hash_ids: bool,
    connect_timeout: Duration,
    response_timeout: Duration,
}

impl Default for RedisStoreBuilder {
    fn default() -> Self {
        RedisStoreBuilder {
            prefix: DEFAULT_PREFIX.to_owned(),
            hash_ids: true,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
        }
    }
}

impl RedisStoreBuilder {
    /// The prefix of every key this store writes. Default `sessionkit:`.
    ///
    /// Give each application that shares a Redis its own prefix: stores
    /// with different prefixes never see each other's sessions. The prefix
    /// is part of the key as stored and is never stripped, so no id can
    /// address a record outside it. It must not contain `{` or `}` (they
    /// would change the Redis Cluster hash tag);
    /// [`connect`](Self::connect) and the other finishing methods then fail
    /// with [`ErrorKind::InvalidConfig`](sessionkit_core::ErrorKind::InvalidConfig)
    /// naming the setting `prefix`.
    ///
    /// ```
    /// let builder = sessionkit_redis::RedisStore::builder().prefix("shop:");
    /// # let _ = builder;
    /// ```
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Whether keys carry the SHA-256 of the id (`{<43 characters of
    /// unpadded base64url>}`) instead of the id itself (`{raw.<id>}`).
    /// Default `true`.
    ///
    /// # Security
    ///
    /// With hashing on, a dump of the Redis database, a `MONITOR` session or
    /// a replica's copy holds no id that a client could present as a cookie
    /// ([OWASP: session ids are bearer secrets](https://cheatsheetseries.owasp.org/cheatsheets/Session_Management_Cheat_Sheet.html#session-id-properties)).
    /// Turn it off only to inspect sessions by id during development: then
    /// every key name is a live cookie. Ids are 256 random bits, so an
    /// unsalted hash cannot be reversed.
    ///
    /// Switching this setting orphans the sessions stored under the other
    /// naming (users are signed out), and exposes none of them, in either
    /// direction. A hashed key's tag has the form of a session id, but a
    /// store with hashing off looks an id up under `raw.<id>`, a tag no
    /// hashed key has (`.` is not in the base64url alphabet), so key names
    /// leaked from hashed sessions are not cookies for it. A hashing store
    /// looks up the hash of what it is given, and no one can find an id
    /// whose hash is a given key.
    ///
    /// ```
    /// let builder = sessionkit_redis::RedisStore::builder().hash_ids(false);
    /// # let _ = builder;
    /// ```
    pub fn hash_ids(mut self, hash_ids: bool) -> Self {
        self.hash_ids = hash_ids;
        self
    }

    /// How long one attempt to open a connection may take. Default 2 s.
    ///
    /// Bounds how long an operation waits while Redis is unreachable before
    /// it fails with [`StoreUnavailable`](sessionkit_core::ErrorKind::StoreUnavailable).
    /// Applies to the connections this builder opens (`connect`,
    /// `connect_client`, `connect_cluster`), not to ones handed to it.
    ///
    /// ```
    /// use std::time::Duration;
    /// let builder = sessionkit_redis::RedisStore::builder().connect_timeout(Duration::from_millis(500));
    /// # let _ = builder;
    /// ```
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long to wait for the reply to one command. Default 2 s.
    ///
    /// Session scripts take microseconds; this bounds how long a request
    /// hangs on a Redis that accepts connections but does not answer (a
    /// stopped process, a network partition). A timed-out operation fails
    /// with [`StoreUnavailable`](sessionkit_core::ErrorKind::StoreUnavailable);
    /// whether its script ran is then unknown. In a cluster this is also the
    /// limit for the whole operation, redirects and retries included.
    ///
    /// ```
    /// use std::time::Duration;
    /// let builder = sessionkit_redis::RedisStore::builder().response_timeout(Duration::from_millis(250));
    /// # let _ = builder;
    /// ```
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    fn key_space(&self) -> Result<KeySpace> {
        if self.connect_timeout.is_zero() {
            return Err(Error::invalid_config(
                "connect_timeout",
                "must be greater than zero",
            ));
        }
        if self.response_timeout.is_zero() {
            return Err(Error::invalid_config(
                "response_timeout",
                "must be greater than zero",
            ));
        }
        KeySpace::new(self.prefix.clone(), self.hash_ids)
    }

    /// Connects to the server at `url` (see [`RedisStore::connect`] for the
    /// URL forms) and waits until the connection is up.
    ///
    /// The connection is a redis-rs [`ConnectionManager`]: one multiplexed
    /// connection shared by all clones of the store, reconnected in the
    /// background after it breaks. Once connected, the store reads Redis's
    /// clock (`TIME`), for deciding in this process when a read's touch is
    /// due (see the [crate docs](crate#clocks)).
    ///
    /// # Errors
    ///
    /// - [`InvalidConfig`](sessionkit_core::ErrorKind::InvalidConfig) naming
    ///   the setting `url` when the URL does not parse, and for a `rediss://`
    ///   URL when the `tls` feature is off (the message says so);
    /// - [`StoreUnavailable`](sessionkit_core::ErrorKind::StoreUnavailable)
    ///   naming the server's address (`could not connect to host:port`) when
    ///   it cannot be reached or refuses the credentials.
    ///
    /// Messages show the URL with its credentials replaced by `***`
    /// ([`redact_credentials`]).
    ///
    /// ```no_run
    /// # async fn demo() -> sessionkit_core::Result<()> {
    /// let store = sessionkit_redis::RedisStore::builder()
    ///     .connect("redis://127.0.0.1:6379")
    ///     .await?;
    /// # let _ = store;
    /// # Ok(()) }
    /// ```
    pub async fn connect(self, url: &str) -> Result<RedisStore> {
        // What the message echoes of the URL, without credentials.
        let shown = redact_credentials(url);
        if uses_tls(url) && !cfg!(feature = "tls") {
            return Err(Error::invalid_config(
                "url",
                format!(
                    "got {shown:?}: `rediss://` needs TLS, which this build lacks; enable the `tls` feature of sessionkit-redis (with the facade: the `redis-tls` feature of sessionkit)"
                ),
            ));
        }
        let invalid = |err| {
            Error::invalid_config("url", format!("got {shown:?}, expected {URL_FORMS}"))
                .with_source(err)
        };
        let mut info = url.into_connection_info().map_err(invalid)?;
        if !sets_protocol(url) {
            // RESP3 lets the connection manager hear the server close the
            // connection and reconnect at once, even while idle; over RESP2
            // the first operation after a server restart would fail.
            let settings = info
                .redis_settings()
                .clone()
                .set_protocol(ProtocolVersion::RESP3);
            info = info.set_redis_settings(settings);
        }
        self.connect_client(Client::open(info).map_err(invalid)?)
            .await
    }

    /// Connects through an existing redis-rs [`Client`], for settings that
    /// a URL cannot carry (a TLS configuration, RESP3, a custom DNS
    /// resolver).
    ///
    /// ```no_run
    /// # async fn demo() -> sessionkit_core::Result<()> {
    /// use sessionkit_redis::redis;
    ///
    /// let client = redis::Client::open("redis://127.0.0.1/?protocol=resp3").unwrap();
    /// let store = sessionkit_redis::RedisStore::builder().connect_client(client).await?;
    /// # let _ = store;
    /// # Ok(()) }
    /// ```
    pub async fn connect_client(self, client: Client) -> Result<RedisStore> {
        let keys = self.key_space()?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.response_timeout))
            // One quick retry per reconnect: while Redis is down, operations
            // fail within about one connect timeout instead of queueing
            // behind a long backoff, and every failed operation starts the
            // next attempt, so service resumes as soon as Redis is back.
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(250));
        // The address only (host:port or socket path): the connection info
        // also holds the password.
        let addr = client.get_connection_info().addr().to_string();
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|err| unreachable(err, &addr))?;
        let store = RedisStore::new(Connection::Single(conn), keys);
        store.sync_clock("connect").await?;
        Ok(store)
    }

    /// Uses an existing [`ConnectionManager`], with its own reconnect and
    /// timeout settings ([`connect_timeout`](Self::connect_timeout) and
    /// [`response_timeout`](Self::response_timeout) do not apply).
    ///
    /// Not async, so the store reads Redis's clock (`TIME`) with its first
    /// read that has a touch, instead of here (see the
    /// [crate docs](crate#clocks)).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use sessionkit_redis::redis;
    ///
    /// let client = redis::Client::open("redis://127.0.0.1")?;
    /// let manager = client.get_connection_manager().await?;
    /// let store = sessionkit_redis::RedisStore::builder().build_with_connection_manager(manager)?;
    /// # let _ = store;
    /// # Ok(()) }
    /// ```
    pub fn build_with_connection_manager(self, conn: ConnectionManager) -> Result<RedisStore> {
        Ok(RedisStore::new(Connection::Single(conn), self.key_space()?))
    }

    /// Connects to a Redis Cluster through any of its nodes (`redis://host:port`
    /// each) and waits until the cluster's slots are known.
    ///
    /// See the [crate docs](crate#redis-cluster) for what differs in a
    /// cluster: the store draws the new id of a `change_id` in the old id's
    /// hash slot, so that the move is one atomic script there too.
    ///
    /// ```no_run
    /// # async fn demo() -> sessionkit_core::Result<()> {
    /// let store = sessionkit_redis::RedisStore::builder()
    ///     .connect_cluster(["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"])
    ///     .await?;
    /// # let _ = store;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "cluster")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cluster")))]
    pub async fn connect_cluster<I, S>(self, nodes: I) -> Result<RedisStore>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let nodes: Vec<String> = nodes.into_iter().map(|n| n.as_ref().to_owned()).collect();
        if nodes.is_empty() {
            return Err(Error::invalid_config(
                "nodes",
                "a cluster needs at least one node URL",
            ));
        }
        let shown = redact_credentials(&nodes.join(",")).into_owned();
        let client = ClusterClient::builder(nodes)
            .connection_timeout(self.connect_timeout)
            .response_timeout(self.response_timeout)
            .build()
            .map_err(|err| {
                Error::invalid_config(
                    "nodes",
                    format!("got {shown:?}, expected the redis:// or rediss:// URLs of some of the cluster's nodes"),
                )
                .with_source(err)
            })?;
        self.cluster_over(client, Some(&shown)).await
    }

    /// Connects through an existing redis-rs [`ClusterClient`], with its own
    /// timeout and retry settings.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use sessionkit_redis::redis::cluster::ClusterClient;
    ///
    /// let client = ClusterClient::builder(["redis://127.0.0.1:7000"]).retries(3).build()?;
    /// let store = sessionkit_redis::RedisStore::builder().connect_cluster_client(client).await?;
    /// # let _ = store;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "cluster")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cluster")))]
    pub async fn connect_cluster_client(self, client: ClusterClient) -> Result<RedisStore> {
        self.cluster_over(client, None).await
    }

    /// Connects through `client`; `nodes` (redacted) names the nodes in an
    /// error, when known (a `ClusterClient` does not tell its nodes).
    #[cfg(feature = "cluster")]
    async fn cluster_over(self, client: ClusterClient, nodes: Option<&str>) -> Result<RedisStore> {
        let keys = self.key_space()?;
        let conn = client
            .get_async_connection()
            .await
            .map_err(|err| match nodes {
                Some(nodes) => unreachable(err, nodes),
                None => Error::store_unavailable(NAME, "connect", err),
            })?;
        let store = RedisStore::new(Connection::Cluster(conn), keys);
        store.sync_clock("connect").await?;
        Ok(store)
    }

    /// Uses an existing cluster connection.
    ///
    /// Not async, so the store reads Redis's clock (`TIME`) with its first
    /// read that has a touch, instead of here (see the
    /// [crate docs](crate#clocks)).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use sessionkit_redis::redis::cluster::ClusterClient;
    ///
    /// let client = ClusterClient::new(["redis://127.0.0.1:7000"])?;
    /// let conn = client.get_async_connection().await?;
    /// let store = sessionkit_redis::RedisStore::builder().build_with_cluster_connection(conn)?;
    /// # let _ = store;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "cluster")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cluster")))]
    pub fn build_with_cluster_connection(self, conn: ClusterConnection) -> Result<RedisStore> {
        Ok(RedisStore::new(
            Connection::Cluster(conn),
            self.key_space()?,
        ))
    }
}

/// The URL forms [`RedisStoreBuilder::connect`] takes, for error messages.
/// Without an `@`: error details pass through `redact_credentials`.
const URL_FORMS: &str = "redis://host[:port][/db], rediss://… (TLS), valkey://…, valkeys://…, or unix:///path/to/redis.sock (also redis+unix://, valkey+unix://), with credentials if needed";

/// Whether `url` asks for TLS (`rediss://`, `valkeys://`).
fn uses_tls(url: &str) -> bool {
    let scheme = url
        .split_once("://")
        .map_or("", |(scheme, _)| scheme.trim());
    scheme.eq_ignore_ascii_case("rediss") || scheme.eq_ignore_ascii_case("valkeys")
}

/// A server that could not be reached at start-up, named by its address
/// (never by its URL, which may carry a password).
fn unreachable(err: redis::RedisError, addr: &str) -> Error {
    Error::store_unavailable(NAME, "connect", err)
        .with_detail(format!("could not connect to {addr}"))
}

/// Whether a URL's query chooses the protocol (`?protocol=resp2`).
fn sets_protocol(url: &str) -> bool {
    url.split_once('?').is_some_and(|(_, query)| {
        query
            .split('&')
            .any(|pair| pair.split('=').next() == Some("protocol"))
    })
}

#[cfg(test)]
mod tests {
    use super::sets_protocol;
    use crate::RedisStore;
    use sessionkit_core::{Error, ErrorKind};

    const PASSWORD: &str = "hunter2-correct-horse";

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

    fn closed_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }

    #[tokio::test]
    async fn an_unreachable_server_is_named_without_its_password() {
        let port = closed_port();
        let url = format!("redis://app:{PASSWORD}@127.0.0.1:{port}/1");
        let err = RedisStore::connect(&url).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::StoreUnavailable, "{err}");
        assert!(
            err.to_string().contains(&format!("127.0.0.1:{port}")),
            "{err}"
        );
        assert!(!printed(&err).contains(PASSWORD), "{}", printed(&err));
    }

    #[tokio::test]
    async fn a_bad_url_is_shown_without_its_password() {
        for url in [
            format!("redis://:{PASSWORD}@"),
            format!("http://:{PASSWORD}@127.0.0.1"),
            format!("redis://:{PASSWORD}@127.0.0.1/not-a-db"),
        ] {
            let err = RedisStore::connect(&url).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{err}");
            assert_eq!(err.setting(), Some("url"), "{err}");
            let text = printed(&err);
            assert!(!text.contains(PASSWORD), "{text}");
            assert!(text.contains("unix://"), "the accepted forms: {text}");
        }
    }

    #[cfg(not(feature = "tls"))]
    #[tokio::test]
    async fn rediss_without_tls_says_which_feature_to_enable() {
        let url = format!("rediss://:{PASSWORD}@redis.internal:6380");
        let err = RedisStore::connect(&url).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{err}");
        let text = err.to_string();
        assert!(text.contains("`tls` feature"), "{text}");
        assert!(text.contains("redis.internal:6380"), "{text}");
        assert!(!printed(&err).contains(PASSWORD), "{}", printed(&err));
    }

    #[test]
    fn protocol_in_the_query_is_respected() {
        assert!(sets_protocol("redis://h/?protocol=resp2"));
        assert!(sets_protocol("redis://h/0?db=1&protocol=2"));
        assert!(!sets_protocol("redis://h/0"));
        assert!(!sets_protocol("redis://h/?myprotocol=x"));
    }
}
