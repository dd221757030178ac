//! `MemcachedStore`: the store contract on memcached, with CAS cycles and a lock item per session.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use sessionkit_core::record::{Delta, Record, Touch, now_ms};
use sessionkit_core::store::{Applied, Created, Fence, IdChanged, Loaded, Locked, SessionStore};
use sessionkit_core::{Error, ErrorKind, LockToken, Result, SessionId};

use crate::client::proto::{MAX_KEY_LEN, valid_key};
use crate::client::{Client, ClientConfig, ClientError, Cmd, Counters, Reply, SetMode};
use crate::ring::{Ring, key_point};
use crate::servers::{Server, ServerList};
use crate::value::{LockItem, decode_session, encode_session, exptime, now_secs, now_us};

const STORE: &str = "memcached";

/// The key prefix used unless [`MemcachedStoreBuilder::prefix`] sets another.
pub const DEFAULT_PREFIX: &str = "sessionkit:";

/// The item size limit used unless [`MemcachedStoreBuilder::item_size_limit`]
/// sets another: 1 MiB, memcached's default `-I`.
pub const DEFAULT_ITEM_SIZE_LIMIT: usize = 1024 * 1024;

/// What memcached 1.6 adds to key and value in an item (header, CAS, the
/// key's NUL and the value's CRLF): 59 bytes measured on 1.6.18, rounded up.
pub const ITEM_OVERHEAD: usize = 64;

/// The suffix of lock keys: `<prefix><session part>:lock`.
pub const LOCK_SUFFIX: &str = ":lock";

const HASHED_PART_LEN: usize = 64;
const RAW_PART_LEN: usize = sessionkit_core::SESSION_ID_LEN;
const MIN_ITEM_SIZE_LIMIT: usize = 4 * 1024;
const MAX_ITEM_SIZE_LIMIT: usize = 1024 * 1024 * 1024;

/// Sessions in memcached, spread over weighted servers by consistent hashing.
///
/// Cheap to clone; clones share the connection pools. Building a store does
/// not connect: connections open on first use, so an app can start while a
/// server is down (its sessions fail with
/// [`ErrorKind::StoreUnavailable`] until it is back). See the
/// [crate docs](crate) for the key layout, the round trips of each
/// operation and what is not guaranteed.
///
/// ```no_run
/// # async fn run() -> sessionkit_core::Result<()> {
/// use sessionkit_memcached::MemcachedStore;
///
/// let store = MemcachedStore::new("10.0.0.1:11211:2,10.0.0.2:11211")?;
/// store.ping().await?; // optional: fail fast if a server is down
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct MemcachedStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    ring: Ring,
    servers: ServerList,
    prefix: String,
    hash_ids: bool,
    item_size_limit: usize,
    cas_attempts: u32,
    fence_margin_ms: u64,
}

impl fmt::Debug for MemcachedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.inner;
        f.debug_struct("MemcachedStore")
            .field("servers", &inner.servers.to_string())
            .field("prefix", &inner.prefix)
            .field("hash_ids", &inner.hash_ids)
            .field("item_size_limit", &inner.item_size_limit)
            .finish_non_exhaustive()
    }
}

/// Counters of what a [`MemcachedStore`] sent, since it was built.
///
/// A round trip is one batch of pipelined commands written to one server and
/// its replies read back; see the [crate docs](crate#round-trips) for what
/// each operation costs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Batches sent (each one round trip to one server).
    pub round_trips: u64,
    /// Commands sent, over all batches.
    pub commands: u64,
    /// Connections opened.
    pub connects: u64,
    /// Batches that failed (connect, timeout, I/O, malformed reply).
    pub failures: u64,
    /// Compare-and-swap cycles retried because another writer came first.
    pub cas_conflicts: u64,
}

impl Stats {
    /// The counts since `earlier`.
    pub fn since(&self, earlier: &Stats) -> Stats {
        Stats {
            round_trips: self.round_trips.saturating_sub(earlier.round_trips),
            commands: self.commands.saturating_sub(earlier.commands),
            connects: self.connects.saturating_sub(earlier.connects),
            failures: self.failures.saturating_sub(earlier.failures),
            cas_conflicts: self.cas_conflicts.saturating_sub(earlier.cas_conflicts),
        }
    }
}

/// Configures a [`MemcachedStore`]; made by [`MemcachedStore::builder`].
#[derive(Debug, Clone)]
pub struct MemcachedStoreBuilder {
    servers: ServerList,
    prefix: String,
    hash_ids: bool,
    item_size_limit: usize,
    connect_timeout: Duration,
    request_timeout: Duration,
    max_connections: usize,
    cas_attempts: u32,
    fence_margin: Duration,
}

impl MemcachedStoreBuilder {
    /// The prefix of every key. Default [`DEFAULT_PREFIX`] (`sessionkit:`).
    ///
    /// Apps that share servers keep apart by prefix (like Phalcon's
    /// `uniqueId`). The prefix is part of every key as written and is never
    /// stripped or matched on: ids are looked up by exact key only. It must
    /// be printable ASCII without spaces, and short enough that the longest
    /// key (`<prefix><64 hex digits>:lock`, or 43 id characters with
    /// [`hash_ids(false)`](Self::hash_ids)) fits memcached's 250 bytes: at
    /// most 181 bytes with hashed ids.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Whether keys carry the SHA-256 of the session id (hex) instead of the
    /// id. Default `true`.
    ///
    /// # Security
    ///
    /// With hashing, a dump of the servers (`lru_crawler metadump`, a core
    /// file, a network capture of memcached traffic) holds no session id an
    /// attacker could replay as a cookie ([OWASP: session ID
    /// protection](https://cheatsheetseries.owasp.org/cheatsheets/Session_Management_Cheat_Sheet.html)).
    /// Turn it off only to share sessions with a system that looks them up by
    /// raw id.
    pub fn hash_ids(mut self, hash: bool) -> Self {
        self.hash_ids = hash;
        self
    }

    /// The servers' item size limit, memcached's `-I`. Default
    /// [`DEFAULT_ITEM_SIZE_LIMIT`] (1 MiB, memcached's default).
    ///
    /// A write whose item (value + key + [`ITEM_OVERHEAD`]) would exceed it
    /// fails before anything is sent, with [`ErrorKind::Codec`] and a message
    /// that starts with "value too large" and gives the sizes; so does a
    /// write the server refuses as too large (when this is set higher than
    /// the server's `-I`). Accepted range: 4 KiB to 1 GiB.
    pub fn item_size_limit(mut self, bytes: usize) -> Self {
        self.item_size_limit = bytes;
        self
    }

    /// How long opening a connection may take. Default 1 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long one round trip may take, including the wait for a free
    /// connection. Default 1 s. On timeout the operation fails with
    /// [`ErrorKind::StoreUnavailable`] and the connection is closed.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Connections per server, at most. Default 16. Requests beyond it wait
    /// (within the request timeout) for a connection to come free.
    pub fn max_connections(mut self, connections: usize) -> Self {
        self.max_connections = connections;
        self
    }

    /// How many compare-and-swap cycles one operation tries before giving up
    /// with [`ErrorKind::StoreUnavailable`]. Default 64. Retries wait a
    /// random, growing pause (up to 8 ms) so that contending writers spread
    /// out; the first retry does not wait.
    pub fn cas_attempts(mut self, attempts: u32) -> Self {
        self.cas_attempts = attempts;
        self
    }

    /// How much time a lock must have left for a fenced write to go ahead.
    /// Default 100 ms.
    ///
    /// Memcached cannot check the lock item and write the session item in
    /// one atomic step (they are two items), so a fenced write reads the lock
    /// in its first round trip and writes in the second. Requiring this
    /// margin makes sure the lock cannot expire in between unless that round
    /// trip itself stalls for longer; a lock closer to expiry answers
    /// `LockLost`. Renewed locks (the session layer renews in the background)
    /// are never that close.
    pub fn fence_margin(mut self, margin: Duration) -> Self {
        self.fence_margin = margin;
        self
    }

    /// Checks the settings and builds the store. Does not connect.
    ///
    /// Errors are [`ErrorKind::InvalidConfig`] naming the setting.
    pub fn build(self) -> Result<MemcachedStore> {
        if !self.prefix.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::invalid_config(
                "prefix",
                "must be printable ASCII without spaces or control characters",
            ));
        }
        let part = if self.hash_ids {
            HASHED_PART_LEN
        } else {
            RAW_PART_LEN
        };
        let longest = self.prefix.len() + part + LOCK_SUFFIX.len();
        if longest > MAX_KEY_LEN {
            return Err(Error::invalid_config(
                "prefix",
                format!(
                    "is {} bytes; keys would be up to {longest} bytes (prefix + {part}-character id part + `{LOCK_SUFFIX}`), over memcached's {MAX_KEY_LEN}; use at most {} bytes",
                    self.prefix.len(),
                    MAX_KEY_LEN - part - LOCK_SUFFIX.len()
                ),
            ));
        }
        if !(MIN_ITEM_SIZE_LIMIT..=MAX_ITEM_SIZE_LIMIT).contains(&self.item_size_limit) {
            return Err(Error::invalid_config(
                "item_size_limit",
                format!(
                    "{} bytes is out of range; use {MIN_ITEM_SIZE_LIMIT} to {MAX_ITEM_SIZE_LIMIT} bytes, matching the servers' -I",
                    self.item_size_limit
                ),
            ));
        }
        for (setting, value) in [
            ("connect_timeout", self.connect_timeout),
            ("request_timeout", self.request_timeout),
        ] {
            if value.is_zero() {
                return Err(Error::invalid_config(setting, "must be greater than zero"));
            }
        }
        if self.max_connections == 0 {
            return Err(Error::invalid_config(
                "max_connections",
                "must be at least 1",
            ));
        }
        if self.cas_attempts == 0 {
            return Err(Error::invalid_config("cas_attempts", "must be at least 1"));
        }
        let client = Client::new(
            self.servers.iter().map(Server::addr).collect(),
            ClientConfig {
                connect_timeout: self.connect_timeout,
                request_timeout: self.request_timeout,
                max_connections: self.max_connections,
                max_value: self.item_size_limit,
            },
        );
        Ok(MemcachedStore {
            inner: Arc::new(Inner {
                client,
                ring: Ring::new(self.servers.as_slice()),
                servers: self.servers,
                prefix: self.prefix,
                hash_ids: self.hash_ids,
                item_size_limit: self.item_size_limit,
                cas_attempts: self.cas_attempts,
                fence_margin_ms: u64::try_from(self.fence_margin.as_millis()).unwrap_or(u64::MAX),
            }),
        })
    }
}

impl MemcachedStore {
    /// A store on the servers `host:port[:weight],…` (see [`ServerList`]),
    /// with the default settings.
    pub fn new(servers: &str) -> Result<MemcachedStore> {
        MemcachedStore::builder(ServerList::parse(servers)?).build()
    }

    /// A builder for a store on `servers`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use sessionkit_memcached::{MemcachedStore, ServerList};
    ///
    /// let servers: ServerList = "127.0.0.1:11211".parse().unwrap();
    /// let store = MemcachedStore::builder(servers)
    ///     .prefix("shop:")
    ///     .request_timeout(Duration::from_millis(500))
    ///     .build()
    ///     .unwrap();
    /// # let _ = store;
    /// ```
    pub fn builder(servers: ServerList) -> MemcachedStoreBuilder {
        MemcachedStoreBuilder {
            servers,
            prefix: DEFAULT_PREFIX.to_owned(),
            hash_ids: true,
            item_size_limit: DEFAULT_ITEM_SIZE_LIMIT,
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            max_connections: 16,
            cas_attempts: 64,
            fence_margin: Duration::from_millis(100),
        }
    }

    /// The servers.
    pub fn servers(&self) -> &ServerList {
        &self.inner.servers
    }

    /// The server that holds the session `id` (and its lock).
    pub fn server_for(&self, id: &SessionId) -> &Server {
        let keys = self.inner.keys(id);
        &self.inner.servers.as_slice()[keys.server]
    }

    /// The key of the session item of `id`: `<prefix><part>`, where the part
    /// is the hex SHA-256 of the id (or the id itself with
    /// [`hash_ids(false)`](MemcachedStoreBuilder::hash_ids)). The lock item's
    /// key is this plus [`LOCK_SUFFIX`].
    ///
    /// ```
    /// use sessionkit_core::SessionId;
    /// use sessionkit_memcached::MemcachedStore;
    ///
    /// let store = MemcachedStore::new("127.0.0.1:11211").unwrap();
    /// let id = SessionId::generate();
    /// let key = store.key_for(&id);
    /// assert!(key.starts_with("sessionkit:"));
    /// assert_eq!(key.len(), "sessionkit:".len() + 64);
    /// assert!(!key.contains(&id.expose()));
    /// ```
    pub fn key_for(&self, id: &SessionId) -> String {
        self.inner.keys(id).data
    }

    /// What the store has sent so far.
    pub fn stats(&self) -> Stats {
        let c = &self.inner.client.counters;
        Stats {
            round_trips: c.round_trips.load(Ordering::Relaxed),
            commands: c.commands.load(Ordering::Relaxed),
            connects: c.connects.load(Ordering::Relaxed),
            failures: c.failures.load(Ordering::Relaxed),
            cas_conflicts: c.cas_conflicts.load(Ordering::Relaxed),
        }
    }

    /// Sends `mn` to every server; fails with the first that does not
    /// answer. For health checks and start-up; the store works without it.
    pub async fn ping(&self) -> Result<()> {
        for server in 0..self.inner.servers.len() {
            self.inner.exec::<1>("ping", server, &[Cmd::Noop]).await?;
        }
        Ok(())
    }
}

/// The keys of one session, and the server that holds both.
struct Keys {
    data: String,
    lock: String,
    server: usize,
}

/// A session item as read.
enum Found {
    Missing,
    /// Present but expired or undecodable: absent for every purpose, but
    /// replacing it needs its CAS.
    Dead {
        cas: u64,
    },
    Live {
        born: u64,
        record: Record,
        cas: u64,
    },
}

/// A lock item as read: `item` is `None` for bytes that are not a lock.
enum LockFound {
    Missing,
    Present { item: Option<LockItem>, cas: u64 },
}

impl Inner {
    fn keys(&self, id: &SessionId) -> Keys {
        let part = if self.hash_ids {
            hex(&id.hashed())
        } else {
            id.expose()
        };
        let server = self.ring.locate(key_point(&part));
        let data = format!("{}{part}", self.prefix);
        let lock = format!("{data}{LOCK_SUFFIX}");
        debug_assert!(valid_key(&lock), "build() checks the key length");
        Keys { data, lock, server }
    }

    async fn exec<const N: usize>(
        &self,
        op: &'static str,
        server: usize,
        cmds: &[Cmd<'_>],
    ) -> Result<[Reply; N]> {
        debug_assert_eq!(cmds.len(), N);
        let replies = self.client.exec(server, cmds).await.map_err(|e| {
            let size = cmds
                .iter()
                .map(|c| match c {
                    Cmd::Set { value, .. } => value.len(),
                    _ => 0,
                })
                .max()
                .unwrap_or(0);
            self.client_error(op, e, size)
        })?;
        replies.try_into().map_err(|_| self.unexpected(op, server))
    }

    fn client_error(&self, op: &'static str, e: ClientError, size: usize) -> Error {
        if e.is_too_large() {
            let addr = e.addr.clone();
            return Error::codec(
                format!(
                    "value too large: {size} bytes refused by memcached server {addr} as over its item size; raise its -I or lower item_size_limit (now {} bytes)",
                    self.item_size_limit
                ),
                Some(Box::new(e)),
            )
            .with_store(STORE)
            .with_operation(op);
        }
        let detail = e.to_string();
        Error::store_unavailable(STORE, op, e).with_detail(detail)
    }

    fn unexpected(&self, op: &'static str, server: usize) -> Error {
        Error::new(ErrorKind::StoreUnavailable)
            .with_store(STORE)
            .with_operation(op)
            .with_detail(format!(
                "server {}: unexpected reply",
                self.client.addr(server)
            ))
    }

    fn contention(&self, op: &'static str, server: usize) -> Error {
        Error::new(ErrorKind::StoreUnavailable)
            .with_store(STORE)
            .with_operation(op)
            .with_detail(format!(
                "server {}: gave up after {} compare-and-swap conflicts",
                self.client.addr(server),
                self.cas_attempts
            ))
    }

    fn conflict(&self) {
        Counters::bump(&self.client.counters.cas_conflicts, 1);
    }

    /// Fails unless `value` fits an item under `key`.
    fn check_size(&self, op: &'static str, key: &str, value: &[u8]) -> Result<()> {
        let room = self
            .item_size_limit
            .saturating_sub(key.len() + ITEM_OVERHEAD);
        if value.len() > room {
            return Err(Error::codec(
                format!(
                    "value too large: the session is {} bytes stored, memcached items of {} bytes leave room for {room} under this key",
                    value.len(),
                    self.item_size_limit
                ),
                None,
            )
            .with_store(STORE)
            .with_operation(op));
        }
        Ok(())
    }

    /// Classifies the reply to a `Get` of a session item.
    fn session(
        &self,
        op: &'static str,
        server: usize,
        reply: Reply,
        now: u64,
        id: &SessionId,
    ) -> Result<Found> {
        match reply {
            Reply::Miss => Ok(Found::Missing),
            Reply::Value { data, cas } => match decode_session(&data) {
                Ok((born, record)) if !record.meta.is_expired(now) => {
                    Ok(Found::Live { born, record, cas })
                }
                Ok(_) => Ok(Found::Dead { cas }),
                Err(err) => {
                    tracing::warn!(
                        session = %id.short_hash(),
                        error = %err,
                        "memcached holds an undecodable session item; treating it as absent"
                    );
                    Ok(Found::Dead { cas })
                }
            },
            _ => Err(self.unexpected(op, server)),
        }
    }

    /// Classifies the reply to a `Get` of a lock item.
    fn lock_found(&self, op: &'static str, server: usize, reply: Reply) -> Result<LockFound> {
        match reply {
            Reply::Miss => Ok(LockFound::Missing),
            Reply::Value { data, cas } => Ok(LockFound::Present {
                item: LockItem::decode(&data),
                cas,
            }),
            _ => Err(self.unexpected(op, server)),
        }
    }

    /// The exptime for an item that expires at `expires_ms`.
    fn exptime_at(&self, expires_ms: u64, now: u64) -> i64 {
        exptime(expires_ms.saturating_sub(now), now_secs())
    }

    /// The pause before CAS attempt `attempt` (none before the first two).
    async fn backoff(&self, attempt: u32) {
        if attempt < 2 {
            return;
        }
        let cap_us = 250u64 << (attempt - 2).min(5);
        let pause = getrandom::u64().unwrap_or(cap_us / 2) % cap_us;
        tokio::time::sleep(Duration::from_micros(pause)).await;
    }

    /// Deletes the lock item if `token` owns it (compare-and-delete), with
    /// a CAS the caller may already know.
    async fn release(
        &self,
        op: &'static str,
        keys: &Keys,
        token: &LockToken,
        mut known_cas: Option<u64>,
    ) -> Result<()> {
        for attempt in 0..self.cas_attempts {
            self.backoff(attempt).await;
            let cas = match known_cas.take() {
                Some(cas) => cas,
                None => {
                    let [reply] = self
                        .exec(op, keys.server, &[Cmd::Get { key: &keys.lock }])
                        .await?;
                    match self.lock_found(op, keys.server, reply)? {
                        LockFound::Present {
                            item: Some(lock),
                            cas,
                        } if lock.token == *token => cas,
                        _ => return Ok(()),
                    }
                }
            };
            let [reply] = self
                .exec(
                    op,
                    keys.server,
                    &[Cmd::Delete {
                        key: &keys.lock,
                        cas: Some(cas),
                    }],
                )
                .await?;
            match reply {
                Reply::Stored { .. } | Reply::NotFound => return Ok(()),
                Reply::Exists => self.conflict(),
                _ => return Err(self.unexpected(op, keys.server)),
            }
        }
        Err(self.contention(op, keys.server))
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl SessionStore for MemcachedStore {
    fn name(&self) -> &'static str {
        STORE
    }

    async fn load(&self, id: &SessionId, touch: Option<Touch>) -> Result<Option<Loaded>> {
        const OP: &str = "load";
        let inner = &*self.inner;
        let keys = inner.keys(id);
        for attempt in 0..inner.cas_attempts {
            inner.backoff(attempt).await;
            let [reply] = inner
                .exec(OP, keys.server, &[Cmd::Get { key: &keys.data }])
                .await?;
            let now = now_ms();
            let Found::Live {
                born,
                mut record,
                cas,
            } = inner.session(OP, keys.server, reply, now, id)?
            else {
                return Ok(None);
            };
            let touched = touch.is_some_and(|t| record.meta.touch_if_due(now, t));
            if !touched {
                return Ok(Some(Loaded {
                    record,
                    touched: false,
                }));
            }
            // The touch rewrites the item: the expiry lives in the blob, at
            // millisecond precision, and memcached has no conditional touch.
            let value = encode_session(born, &record);
            let [reply] = inner
                .exec(
                    OP,
                    keys.server,
                    &[Cmd::Set {
                        key: &keys.data,
                        value: &value,
                        exptime: inner.exptime_at(record.meta.expires(), now),
                        mode: SetMode::Set,
                        cas: Some(cas),
                    }],
                )
                .await?;
            match reply {
                Reply::Stored { .. } => {
                    return Ok(Some(Loaded {
                        record,
                        touched: true,
                    }));
                }
                Reply::NotFound => return Ok(None),
                Reply::Exists => inner.conflict(),
                _ => return Err(inner.unexpected(OP, keys.server)),
            }
        }
        Err(inner.contention(OP, keys.server))
    }

    async fn create(&self, id: &SessionId, record: &Record) -> Result<Created> {
        const OP: &str = "create";
        let inner = &*self.inner;
        let keys = inner.keys(id);
        let exptime = inner.exptime_at(record.meta.expires(), now_ms());
        for attempt in 0..inner.cas_attempts {
            inner.backoff(attempt).await;
            let value = encode_session(now_us(), record);
            inner.check_size(OP, &keys.data, &value)?;
            let [reply] = inner
                .exec(
                    OP,
                    keys.server,
                    &[Cmd::Set {
                        key: &keys.data,
                        value: &value,
                        exptime,
                        mode: SetMode::Add,
                        cas: None,
                    }],
                )
                .await?;
            match reply {
                Reply::Stored { .. } => return Ok(Created::Created),
                Reply::NotStored => {}
                _ => return Err(inner.unexpected(OP, keys.server)),
            }
            // The key is taken; by a live session, or by an expired one that
            // memcached has not dropped yet (its TTL is rounded up).
            let [reply] = inner
                .exec(OP, keys.server, &[Cmd::Get { key: &keys.data }])
                .await?;
            let cas = match inner.session(OP, keys.server, reply, now_ms(), id)? {
                Found::Live { .. } => return Ok(Created::IdTaken),
                Found::Missing => continue,
                Found::Dead { cas } => cas,
            };
            let value = encode_session(now_us(), record);
            let [reply] = inner
                .exec(
                    OP,
                    keys.server,
                    &[Cmd::Set {
                        key: &keys.data,
                        value: &value,
                        exptime,
                        mode: SetMode::Set,
                        cas: Some(cas),
                    }],
                )
                .await?;
            match reply {
                Reply::Stored { .. } => return Ok(Created::Created),
                Reply::Exists | Reply::NotFound => inner.conflict(),
                _ => return Err(inner.unexpected(OP, keys.server)),
            }
        }
        Err(inner.contention(OP, keys.server))
    }

    async fn apply(
        &self,
        id: &SessionId,
        delta: &Delta,
        fence: Option<Fence<'_>>,
    ) -> Result<Applied> {
        const OP: &str = "apply";
        let inner = &*self.inner;
        let keys = inner.keys(id);
        for attempt in 0..inner.cas_attempts {
            inner.backoff(attempt).await;
            let (session, lock) = if fence.is_some() {
                let [session, lock] = inner
                    .exec(
                        OP,
                        keys.server,
                        &[Cmd::Get { key: &keys.data }, Cmd::Get { key: &keys.lock }],
                    )
                    .await?;
                (session, Some(lock))
            } else {
                let [session] = inner
                    .exec(OP, keys.server, &[Cmd::Get { key: &keys.data }])
                    .await?;
                (session, None)
            };
            let now = now_ms();
            let Found::Live {
                born,
                mut record,
                cas,
            } = inner.session(OP, keys.server, session, now, id)?
            else {
                return Ok(Applied::Gone);
            };
            let mut lock_cas = None;
            if let (Some(fence), Some(lock)) = (fence, lock) {
                match inner.lock_found(OP, keys.server, lock)? {
                    LockFound::Present {
                        item: Some(lock),
                        cas,
                    } if lock.token == *fence.token
                        && lock.holds(now.saturating_add(inner.fence_margin_ms), born) =>
                    {
                        lock_cas = Some(cas);
                    }
                    _ => return Ok(Applied::LockLost),
                }
            }
            delta.apply_to(&mut record, now);
            let value = encode_session(born, &record);
            inner.check_size(OP, &keys.data, &value)?;
            let [reply] = inner
                .exec(
                    OP,
                    keys.server,
                    &[Cmd::Set {
                        key: &keys.data,
                        value: &value,
                        exptime: inner.exptime_at(record.meta.expires(), now),
                        mode: SetMode::Set,
                        cas: Some(cas),
                    }],
                )
                .await?;
            match reply {
                Reply::Stored { .. } => {
                    if let Some(fence) = fence.filter(|f| f.release) {
                        // The write is in; a failed release only leaves the
                        // lock to expire by its TTL, so it is logged, not
                        // reported as a failed write.
                        if let Err(err) = inner.release(OP, &keys, fence.token, lock_cas).await {
                            tracing::warn!(
                                session = %id.short_hash(),
                                error = %err,
                                "memcached: committed, but could not release the lock; it expires by its TTL"
                            );
                        }
                    }
                    return Ok(Applied::Applied(record.meta));
                }
                Reply::NotFound => return Ok(Applied::Gone),
                Reply::Exists => inner.conflict(),
                _ => return Err(inner.unexpected(OP, keys.server)),
            }
        }
        Err(inner.contention(OP, keys.server))
    }

    async fn change_id(
        &self,
        old: &SessionId,
        new: &SessionId,
        fence: Option<&LockToken>,
    ) -> Result<IdChanged> {
        const OP: &str = "change_id";
        let inner = &*self.inner;
        let from = inner.keys(old);
        let to = inner.keys(new);
        if old == new {
            let [reply] = inner
                .exec(OP, from.server, &[Cmd::Get { key: &from.data }])
                .await?;
            return Ok(
                match inner.session(OP, from.server, reply, now_ms(), old)? {
                    Found::Live { .. } => IdChanged::IdTaken,
                    _ => IdChanged::Gone,
                },
            );
        }
        for attempt in 0..inner.cas_attempts {
            inner.backoff(attempt).await;

            // 1. Read the old session (and its lock) and the new id.
            let mut reads = vec![Cmd::Get { key: &from.data }];
            if fence.is_some() {
                reads.push(Cmd::Get { key: &from.lock });
            }
            let (old_replies, new_reply) = if from.server == to.server {
                reads.push(Cmd::Get { key: &to.data });
                let mut replies = inner.exec_vec(OP, from.server, &reads).await?;
                let new_reply = replies.pop();
                (replies, new_reply)
            } else {
                let read_new = [Cmd::Get { key: &to.data }];
                let (a, b) = tokio::join!(
                    inner.exec_vec(OP, from.server, &reads),
                    inner.exec::<1>(OP, to.server, &read_new)
                );
                let [new_reply] = b?;
                (a?, Some(new_reply))
            };
            let now = now_ms();
            let mut old_replies = old_replies.into_iter();
            let (Some(old_reply), Some(new_reply)) = (old_replies.next(), new_reply) else {
                return Err(inner.unexpected(OP, from.server));
            };
            let Found::Live {
                born: old_born,
                mut record,
                cas: old_cas,
            } = inner.session(OP, from.server, old_reply, now, old)?
            else {
                return Ok(IdChanged::Gone);
            };
            let (mode, new_cas) = match inner.session(OP, to.server, new_reply, now, new)? {
                Found::Live { .. } => return Ok(IdChanged::IdTaken),
                Found::Missing => (SetMode::Add, None),
                Found::Dead { cas } => (SetMode::Set, Some(cas)),
            };
            let mut held = None;
            if let Some(token) = fence {
                let reply = old_replies
                    .next()
                    .ok_or_else(|| inner.unexpected(OP, from.server))?;
                match inner.lock_found(OP, from.server, reply)? {
                    LockFound::Present {
                        item: Some(lock),
                        cas,
                    } if lock.token == *token
                        && lock.holds(now.saturating_add(inner.fence_margin_ms), old_born) =>
                    {
                        held = Some((lock, cas));
                    }
                    _ => return Ok(IdChanged::LockLost),
                }
            }

            // 2. Write the session (and the moved lock) under the new id.
            record.meta.refresh(now);
            let born = now_us();
            let value = encode_session(born, &record);
            inner.check_size(OP, &to.data, &value)?;
            let moved = held.map(|(lock, _)| LockItem {
                taken_us: born,
                ..lock
            });
            let moved_bytes = moved.map(|l| l.encode());
            let mut writes = vec![Cmd::Set {
                key: &to.data,
                value: &value,
                exptime: inner.exptime_at(record.meta.expires(), now),
                mode,
                cas: new_cas,
            }];
            if let (Some(lock), Some(bytes)) = (moved, moved_bytes.as_ref()) {
                writes.push(Cmd::Set {
                    key: &to.lock,
                    value: bytes,
                    exptime: inner.exptime_at(lock.expires_ms, now),
                    mode: SetMode::Set,
                    cas: None,
                });
            }
            let written = inner.exec_vec(OP, to.server, &writes).await?;
            let written_cas = match written.first() {
                Some(Reply::Stored { cas }) => *cas,
                Some(Reply::NotStored | Reply::Exists | Reply::NotFound) => {
                    // Someone wrote the new id meanwhile; read it again.
                    inner.conflict();
                    continue;
                }
                _ => return Err(inner.unexpected(OP, to.server)),
            };
            let written_lock_cas = match written.get(1) {
                Some(Reply::Stored { cas }) => *cas,
                _ => None,
            };

            // 3. Delete the old session, if it is still as read, and its lock.
            let [deleted, lock_deleted] = inner
                .exec(
                    OP,
                    from.server,
                    &[
                        Cmd::Delete {
                            key: &from.data,
                            cas: Some(old_cas),
                        },
                        Cmd::Delete {
                            key: &from.lock,
                            cas: held.map(|(_, cas)| cas),
                        },
                    ],
                )
                .await?;
            match deleted {
                // NotFound: destroyed meanwhile; the move happened first.
                Reply::Stored { .. } | Reply::NotFound => {
                    return Ok(IdChanged::Changed(record.meta));
                }
                Reply::Exists => {}
                _ => return Err(inner.unexpected(OP, from.server)),
            }
            // A write reached the old id after step 1: undo step 2 and try
            // again with the newer data. If the old lock went with step 3,
            // put it back; if someone took it in that instant, the lock is
            // lost.
            inner.conflict();
            let mut undo = vec![Cmd::Delete {
                key: &to.data,
                cas: written_cas,
            }];
            if moved.is_some() {
                undo.push(Cmd::Delete {
                    key: &to.lock,
                    cas: written_lock_cas,
                });
            }
            inner.exec_vec(OP, to.server, &undo).await?;
            if let (Some((lock, _)), Reply::Stored { .. }) = (held, lock_deleted) {
                let bytes = lock.encode();
                let [restored] = inner
                    .exec(
                        OP,
                        from.server,
                        &[Cmd::Set {
                            key: &from.lock,
                            value: &bytes,
                            exptime: inner.exptime_at(lock.expires_ms, now_ms()),
                            mode: SetMode::Add,
                            cas: None,
                        }],
                    )
                    .await?;
                if !matches!(restored, Reply::Stored { .. }) {
                    return Ok(IdChanged::LockLost);
                }
            }
        }
        Err(inner.contention(OP, from.server))
    }

    async fn destroy(&self, id: &SessionId) -> Result<()> {
        let inner = &*self.inner;
        let keys = inner.keys(id);
        let _: [Reply; 2] = inner
            .exec(
                "destroy",
                keys.server,
                &[
                    Cmd::Delete {
                        key: &keys.data,
                        cas: None,
                    },
                    Cmd::Delete {
                        key: &keys.lock,
                        cas: None,
                    },
                ],
            )
            .await?;
        Ok(())
    }

    async fn lock(&self, id: &SessionId, ttl: Duration) -> Result<Locked> {
        const OP: &str = "lock";
        let inner = &*self.inner;
        let keys = inner.keys(id);
        let token = LockToken::generate();
        let ttl_ms = millis(ttl);
        for attempt in 0..inner.cas_attempts {
            inner.backoff(attempt).await;
            let start = now_ms();
            let mine = LockItem {
                token,
                expires_ms: start.saturating_add(ttl_ms),
                taken_us: now_us(),
            };
            let bytes = mine.encode();
            let exptime = inner.exptime_at(mine.expires_ms, start);
            // Add the lock, then read it and the session: one round trip,
            // and the session is read after the lock was taken.
            let [added, current, session] = inner
                .exec(
                    OP,
                    keys.server,
                    &[
                        Cmd::Set {
                            key: &keys.lock,
                            value: &bytes,
                            exptime,
                            mode: SetMode::Add,
                            cas: None,
                        },
                        Cmd::Get { key: &keys.lock },
                        Cmd::Get { key: &keys.data },
                    ],
                )
                .await?;
            let now = now_ms();
            let session = inner.session(OP, keys.server, session, now, id)?;
            match added {
                Reply::Stored { .. } => {
                    if let Found::Live { record, .. } = session {
                        return Ok(Locked::Acquired { token, record });
                    }
                    // No session: take no lock. Remove ours if it is still ours.
                    if let LockFound::Present {
                        item: Some(lock),
                        cas,
                    } = inner.lock_found(OP, keys.server, current)?
                        && lock.token == token
                    {
                        let _: [Reply; 1] = inner
                            .exec(
                                OP,
                                keys.server,
                                &[Cmd::Delete {
                                    key: &keys.lock,
                                    cas: Some(cas),
                                }],
                            )
                            .await?;
                    }
                    return Ok(Locked::Absent);
                }
                Reply::NotStored => {}
                _ => return Err(inner.unexpected(OP, keys.server)),
            }
            let Found::Live { born, .. } = session else {
                return Ok(Locked::Absent);
            };
            let stale_cas = match inner.lock_found(OP, keys.server, current)? {
                // Gone between the add and the read: add again.
                LockFound::Missing => continue,
                LockFound::Present {
                    item: Some(lock), ..
                } if lock.holds(now, born) => return Ok(Locked::Held),
                LockFound::Present { cas, .. } => cas,
            };
            // The lock item is void (expired, or left by an earlier session
            // under this key): take it over, if nobody else does first.
            let takeover = LockItem {
                token,
                expires_ms: now.saturating_add(ttl_ms),
                taken_us: now_us(),
            };
            let bytes = takeover.encode();
            let [swapped, session] = inner
                .exec(
                    OP,
                    keys.server,
                    &[
                        Cmd::Set {
                            key: &keys.lock,
                            value: &bytes,
                            exptime: inner.exptime_at(takeover.expires_ms, now),
                            mode: SetMode::Set,
                            cas: Some(stale_cas),
                        },
                        Cmd::Get { key: &keys.data },
                    ],
                )
                .await?;
            match swapped {
                Reply::Stored { cas } => {
                    match inner.session(OP, keys.server, session, now_ms(), id)? {
                        Found::Live { record, .. } => {
                            return Ok(Locked::Acquired { token, record });
                        }
                        _ => {
                            inner.release(OP, &keys, &token, cas).await?;
                            return Ok(Locked::Absent);
                        }
                    }
                }
                Reply::Exists | Reply::NotFound => inner.conflict(),
                _ => return Err(inner.unexpected(OP, keys.server)),
            }
        }
        Err(inner.contention(OP, keys.server))
    }

    async fn renew_lock(&self, id: &SessionId, token: &LockToken, ttl: Duration) -> Result<bool> {
        const OP: &str = "renew_lock";
        let inner = &*self.inner;
        let keys = inner.keys(id);
        for attempt in 0..inner.cas_attempts {
            inner.backoff(attempt).await;
            let [lock, session] = inner
                .exec(
                    OP,
                    keys.server,
                    &[Cmd::Get { key: &keys.lock }, Cmd::Get { key: &keys.data }],
                )
                .await?;
            let now = now_ms();
            let Found::Live { born, .. } = inner.session(OP, keys.server, session, now, id)? else {
                return Ok(false);
            };
            let (lock, cas) = match inner.lock_found(OP, keys.server, lock)? {
                LockFound::Present {
                    item: Some(lock),
                    cas,
                } if lock.token == *token && lock.holds(now, born) => (lock, cas),
                _ => return Ok(false),
            };
            let renewed = LockItem {
                expires_ms: now.saturating_add(millis(ttl)),
                ..lock
            };
            let bytes = renewed.encode();
            let [reply] = inner
                .exec(
                    OP,
                    keys.server,
                    &[Cmd::Set {
                        key: &keys.lock,
                        value: &bytes,
                        exptime: inner.exptime_at(renewed.expires_ms, now),
                        mode: SetMode::Set,
                        cas: Some(cas),
                    }],
                )
                .await?;
            match reply {
                Reply::Stored { .. } => return Ok(true),
                Reply::NotFound => return Ok(false),
                Reply::Exists => inner.conflict(),
                _ => return Err(inner.unexpected(OP, keys.server)),
            }
        }
        Err(inner.contention(OP, keys.server))
    }

    async fn unlock(&self, id: &SessionId, token: &LockToken) -> Result<()> {
        let keys = self.inner.keys(id);
        self.inner.release("unlock", &keys, token, None).await
    }
}

impl Inner {
    /// [`Inner::exec`] for batches whose length varies.
    async fn exec_vec(
        &self,
        op: &'static str,
        server: usize,
        cmds: &[Cmd<'_>],
    ) -> Result<Vec<Reply>> {
        let size = cmds
            .iter()
            .map(|c| match c {
                Cmd::Set { value, .. } => value.len(),
                _ => 0,
            })
            .max()
            .unwrap_or(0);
        let replies = self
            .client
            .exec(server, cmds)
            .await
            .map_err(|e| self.client_error(op, e, size))?;
        if replies.len() != cmds.len() {
            return Err(self.unexpected(op, server));
        }
        Ok(replies)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builder() -> MemcachedStoreBuilder {
        MemcachedStore::builder(ServerList::parse("127.0.0.1:1").unwrap())
    }

    #[test]
    fn prefix_must_leave_room_in_the_key() {
        let max = MAX_KEY_LEN - HASHED_PART_LEN - LOCK_SUFFIX.len();
        assert_eq!(max, 181);
        assert!(builder().prefix("p".repeat(max)).build().is_ok());
        let err = builder().prefix("p".repeat(max + 1)).build().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig);
        assert_eq!(err.setting(), Some("prefix"));
        assert!(err.to_string().contains("over memcached's 250"), "{err}");
        // Raw ids are shorter, so a longer prefix fits.
        assert!(
            builder()
                .hash_ids(false)
                .prefix("p".repeat(max + 21))
                .build()
                .is_ok()
        );
        assert!(
            builder()
                .hash_ids(false)
                .prefix("p".repeat(max + 22))
                .build()
                .is_err()
        );
        for bad in ["a b", "a\nb", "ü:", "tab\t"] {
            let err = builder().prefix(bad).build().unwrap_err();
            assert_eq!(err.setting(), Some("prefix"), "{bad:?}");
        }
        assert!(builder().prefix("").build().is_ok());
    }

    #[test]
    fn other_settings_are_checked() {
        let cases = [
            (builder().item_size_limit(100), "item_size_limit"),
            (builder().item_size_limit(usize::MAX), "item_size_limit"),
            (builder().connect_timeout(Duration::ZERO), "connect_timeout"),
            (builder().request_timeout(Duration::ZERO), "request_timeout"),
            (builder().max_connections(0), "max_connections"),
            (builder().cas_attempts(0), "cas_attempts"),
        ];
        for (b, setting) in cases {
            assert_eq!(b.build().unwrap_err().setting(), Some(setting));
        }
    }

    #[test]
    fn keys_follow_the_layout() {
        let store = builder().prefix("app:").build().unwrap();
        let id = SessionId::generate();
        let keys = store.inner.keys(&id);
        assert_eq!(keys.data, format!("app:{}", hex(&id.hashed())));
        assert_eq!(keys.lock, format!("{}:lock", keys.data));
        let raw = builder().hash_ids(false).build().unwrap();
        assert_eq!(raw.key_for(&id), format!("sessionkit:{}", id.expose()));
    }

    #[test]
    fn hex_is_lowercase() {
        assert_eq!(hex(&[0x00, 0xab, 0xff]), "00abff");
    }

    #[test]
    fn debug_shows_settings_not_internals() {
        let text = format!("{:?}", builder().build().unwrap());
        assert!(text.contains("127.0.0.1:1"), "{text}");
    }
}
