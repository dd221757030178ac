//! `MemcachedStore`: the store contract on memcached, one item per session (lock inside), CAS cycles.

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
use crate::value::{Item, Lock, Stored, decode, encode_item, exptime};

mod change_id;

const STORE: &str = "memcached";

/// The key prefix used unless [`MemcachedStoreBuilder::prefix`] sets another.
pub const DEFAULT_PREFIX: &str = "sessionkit:";

/// The item size limit used unless [`MemcachedStoreBuilder::item_size_limit`]
/// sets another: 1 MiB, memcached's default `-I`.
pub const DEFAULT_ITEM_SIZE_LIMIT: usize = 1024 * 1024;

/// What memcached 1.6 adds to key and value in an item (header, CAS, the
/// key's NUL and the value's CRLF): 59 bytes measured on 1.6.18, rounded up.
pub const ITEM_OVERHEAD: usize = 64;

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
}

impl MemcachedStoreBuilder {
    /// The prefix of every key. Default [`DEFAULT_PREFIX`] (`sessionkit:`).
    ///
    /// Apps that share servers keep apart by prefix. The prefix is part of
    /// every key as written and is never stripped or matched on: ids are
    /// looked up by exact key only. It must be printable ASCII without
    /// spaces, and short enough that the longest
    /// key (`<prefix><64 hex digits>`, or 43 id characters with
    /// [`hash_ids(false)`](Self::hash_ids)) fits memcached's 250 bytes: at
    /// most 186 bytes with hashed ids.
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
        let longest = self.prefix.len() + part;
        if longest > MAX_KEY_LEN {
            return Err(Error::invalid_config(
                "prefix",
                format!(
                    "is {} bytes; keys would be {longest} bytes (prefix + {part}-character id part), over memcached's {MAX_KEY_LEN}; use at most {} bytes",
                    self.prefix.len(),
                    MAX_KEY_LEN - part
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
        }
    }

    /// The servers.
    pub fn servers(&self) -> &ServerList {
        &self.inner.servers
    }

    /// The server that holds the session `id` (and its lock, which is part
    /// of the session's item).
    pub fn server_for(&self, id: &SessionId) -> &Server {
        let key = self.inner.key(id);
        &self.inner.servers.as_slice()[key.server]
    }

    /// The key of the session item of `id`: `<prefix><part>`, where the part
    /// is the hex SHA-256 of the id (or the id itself with
    /// [`hash_ids(false)`](MemcachedStoreBuilder::hash_ids)). It is the
    /// session's only item: its lock is kept inside it.
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
        self.inner.key(id).key
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

/// Where a session lives: its one item's key and the server that holds it.
struct Key {
    key: String,
    server: usize,
}

/// A session item as read.
enum Found {
    Missing,
    /// Present but no live session — expired, undecodable, a tombstone, a
    /// pending copy of a move that did not commit: absent for every
    /// purpose, but replacing it needs its CAS.
    Dead {
        cas: u64,
    },
    Live {
        item: Item,
        cas: u64,
    },
}

/// A reply to a `Get` of a session key, classified at a time.
enum Read {
    Found(Found),
    /// A live copy written by `change_id`, live only if the move committed.
    Pending {
        item: Item,
        cas: u64,
        from: String,
    },
}

/// The outcome of [`Inner::put_new`].
enum Put {
    /// Stored; the item's CAS, when the server gave it.
    Stored(Option<u64>),
    /// A live session holds the key; nothing was written.
    Taken,
}

/// What a read-check-write cycle does with the live item it read.
enum Step<T> {
    /// Answer without writing.
    Answer(T),
    /// Write the item back, compare-and-swap against the read; answer once
    /// it is stored.
    Write(Item, T),
}

impl Inner {
    fn key(&self, id: &SessionId) -> Key {
        let part = if self.hash_ids {
            hex(&id.hashed())
        } else {
            id.expose()
        };
        self.key_of_part(&part)
    }

    /// The key whose part (the key without the prefix) is `part`.
    fn key_of_part(&self, part: &str) -> Key {
        let server = self.ring.locate(key_point(part));
        let key = format!("{}{part}", self.prefix);
        debug_assert!(valid_key(&key), "build() checks the key length");
        Key { key, server }
    }

    /// The part of `key`: what pending copies and tombstones name.
    fn part<'k>(&self, key: &'k Key) -> &'k str {
        &key.key[self.prefix.len()..]
    }

    async fn exec<const N: usize>(
        &self,
        op: &'static str,
        server: usize,
        cmds: &[Cmd<'_>],
    ) -> Result<[Reply; N]> {
        debug_assert_eq!(cmds.len(), N);
        let replies = self
            .client
            .exec(server, cmds)
            .await
            .map_err(|e| self.client_error(op, e, largest_value(cmds)))?;
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

    /// Classifies the reply to a `Get` of a session item at `now`.
    fn classify(
        &self,
        op: &'static str,
        server: usize,
        reply: Reply,
        now: u64,
        id: &SessionId,
    ) -> Result<Read> {
        match reply {
            Reply::Miss => Ok(Read::Found(Found::Missing)),
            Reply::Value { data, cas } => match decode(&data) {
                Ok(Stored::Session(item)) if !item.record.meta.is_expired(now) => {
                    Ok(Read::Found(Found::Live { item, cas }))
                }
                Ok(Stored::Pending { item, from }) if !item.record.meta.is_expired(now) => {
                    Ok(Read::Pending { item, cas, from })
                }
                Ok(_) => Ok(Read::Found(Found::Dead { cas })),
                Err(err) => {
                    tracing::warn!(
                        session = %id.short_hash(),
                        error = %err,
                        "memcached holds an undecodable session item; treating it as absent"
                    );
                    Ok(Read::Found(Found::Dead { cas }))
                }
            },
            _ => Err(self.unexpected(op, server)),
        }
    }

    /// Reads the session at `key` with its CAS (`mg … v c`). A pending copy
    /// of a `change_id` is resolved on the way (see [`change_id`]): if the
    /// move committed it is finished — rewritten as the session — and read
    /// again; otherwise it is absent. That costs two more round trips, only
    /// in that rare state.
    async fn read(&self, op: &'static str, id: &SessionId, key: &Key) -> Result<Found> {
        for attempt in 0..self.cas_attempts {
            self.backoff(attempt).await;
            let [reply] = self
                .exec(op, key.server, &[Cmd::Get { key: &key.key }])
                .await?;
            let now = now_ms();
            match self.classify(op, key.server, reply, now, id)? {
                Read::Found(found) => return Ok(found),
                Read::Pending { item, cas, from } => {
                    // A part that makes no valid key is none of ours.
                    let source = valid_key(&format!("{}{from}", self.prefix))
                        .then(|| self.key_of_part(&from));
                    let committed = match source {
                        Some(source) => self.moved(op, &source, self.part(key)).await?,
                        None => false,
                    };
                    if !committed {
                        return Ok(Found::Dead { cas });
                    }
                    if let Some(cas) = self.finish_move(op, key, &item, Some(cas), now).await? {
                        return Ok(Found::Live { item, cas });
                    }
                    self.conflict();
                }
            }
        }
        Err(self.contention(op, key.server))
    }

    /// Stores `value` under `key` unless a live session holds it: `add`,
    /// and when the key holds a dead item (expired but not yet dropped by
    /// memcached, whose TTLs are rounded up; a tombstone; a pending copy
    /// that did not commit) a compare-and-swap over it.
    async fn put_new(
        &self,
        op: &'static str,
        id: &SessionId,
        key: &Key,
        value: &[u8],
        exptime: i64,
    ) -> Result<Put> {
        for attempt in 0..self.cas_attempts {
            self.backoff(attempt).await;
            let [reply] = self
                .exec(
                    op,
                    key.server,
                    &[Cmd::Set {
                        key: &key.key,
                        value,
                        exptime,
                        mode: SetMode::Add,
                        cas: None,
                    }],
                )
                .await?;
            match reply {
                Reply::Stored { cas } => return Ok(Put::Stored(cas)),
                Reply::NotStored => {}
                _ => return Err(self.unexpected(op, key.server)),
            }
            let cas = match self.read(op, id, key).await? {
                Found::Live { .. } => return Ok(Put::Taken),
                Found::Missing => continue,
                Found::Dead { cas } => cas,
            };
            let [reply] = self
                .exec(
                    op,
                    key.server,
                    &[Cmd::Set {
                        key: &key.key,
                        value,
                        exptime,
                        mode: SetMode::Set,
                        cas: Some(cas),
                    }],
                )
                .await?;
            match reply {
                Reply::Stored { cas } => return Ok(Put::Stored(cas)),
                Reply::Exists | Reply::NotFound => self.conflict(),
                _ => return Err(self.unexpected(op, key.server)),
            }
        }
        Err(self.contention(op, key.server))
    }

    /// The exptime for an item that expires at `expires_ms`, at `now` (ms).
    fn exptime_at(&self, expires_ms: u64, now: u64) -> i64 {
        exptime(expires_ms.saturating_sub(now), now / 1000)
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

    /// The read-check-write cycle behind every operation on one existing
    /// session: read the item with its CAS (`mg … v c`); answer `absent` if
    /// the session is missing or expired; otherwise let `step` decide, at
    /// `now`, from the live item — lock included — and write what it
    /// returns with that CAS (`ms … C<cas>`).
    ///
    /// The write lands only if nobody wrote the item since the read, so
    /// `step`'s checks (the lock's owner and expiry, the data it merges
    /// into) and the write are one atomic step. On a conflict (`EX`), or if
    /// the item vanished in between (`NF`), the cycle starts again on what
    /// is stored now.
    async fn cycle<T>(
        &self,
        op: &'static str,
        id: &SessionId,
        key: &Key,
        absent: T,
        mut step: impl FnMut(Item, u64) -> Step<T>,
    ) -> Result<T> {
        for attempt in 0..self.cas_attempts {
            self.backoff(attempt).await;
            let Found::Live { item, cas } = self.read(op, id, key).await? else {
                return Ok(absent);
            };
            let now = now_ms();
            let (item, answer) = match step(item, now) {
                Step::Answer(answer) => return Ok(answer),
                Step::Write(item, answer) => (item, answer),
            };
            let value = encode_item(item.lock.as_ref(), &item.record);
            self.check_size(op, &key.key, &value)?;
            let [reply] = self
                .exec(
                    op,
                    key.server,
                    &[Cmd::Set {
                        key: &key.key,
                        value: &value,
                        exptime: self.exptime_at(item.record.meta.expires(), now),
                        mode: SetMode::Set,
                        cas: Some(cas),
                    }],
                )
                .await?;
            match reply {
                Reply::Stored { .. } => return Ok(answer),
                Reply::Exists | Reply::NotFound => self.conflict(),
                _ => return Err(self.unexpected(op, key.server)),
            }
        }
        Err(self.contention(op, key.server))
    }
}

/// The size of the largest value in `cmds`, for error messages.
fn largest_value(cmds: &[Cmd<'_>]) -> usize {
    cmds.iter()
        .map(|c| match c {
            Cmd::Set { value, .. } => value.len(),
            _ => 0,
        })
        .max()
        .unwrap_or(0)
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
    sessionkit_core::record::duration_ms(d)
}

impl SessionStore for MemcachedStore {
    fn name(&self) -> &'static str {
        STORE
    }

    async fn load(&self, id: &SessionId, touch: Option<Touch>) -> Result<Option<Loaded>> {
        let inner = &*self.inner;
        let key = inner.key(id);
        inner
            .cycle("load", id, &key, None, |mut item, now| {
                let touched = touch.is_some_and(|t| item.record.meta.touch_if_due(now, t));
                if !touched {
                    return Step::Answer(Some(Loaded {
                        record: item.record,
                        touched: false,
                    }));
                }
                // The touch rewrites the item (lock kept as it is): the
                // expiry lives in the record, at millisecond precision, and
                // memcached has no conditional touch.
                let record = item.record.clone();
                Step::Write(
                    item,
                    Some(Loaded {
                        record,
                        touched: true,
                    }),
                )
            })
            .await
    }

    async fn create(&self, id: &SessionId, record: &Record) -> Result<Created> {
        const OP: &str = "create";
        let inner = &*self.inner;
        let key = inner.key(id);
        let value = encode_item(None, record);
        inner.check_size(OP, &key.key, &value)?;
        let exptime = inner.exptime_at(record.meta.expires(), now_ms());
        Ok(match inner.put_new(OP, id, &key, &value, exptime).await? {
            Put::Stored(_) => Created::Created,
            Put::Taken => Created::IdTaken,
        })
    }

    async fn apply(
        &self,
        id: &SessionId,
        delta: &Delta,
        fence: Option<Fence<'_>>,
    ) -> Result<Applied> {
        let inner = &*self.inner;
        let key = inner.key(id);
        inner
            .cycle("apply", id, &key, Applied::Gone, |mut item, now| {
                if let Some(fence) = fence {
                    // Checked on the item this cycle writes with the read's
                    // CAS: a takeover in between makes the write fail, and
                    // the next cycle sees the new owner.
                    if !item.lock.is_some_and(|l| l.held_by(fence.token, now)) {
                        return Step::Answer(Applied::LockLost);
                    }
                    if fence.release {
                        item.lock = None;
                    }
                }
                // Unfenced writes keep the lock fields as they are.
                delta.apply_to(&mut item.record, now);
                let meta = item.record.meta;
                Step::Write(item, Applied::Applied(meta))
            })
            .await
    }

    async fn change_id(
        &self,
        old: &SessionId,
        new: &SessionId,
        fence: Option<&LockToken>,
    ) -> Result<IdChanged> {
        self.inner.change_id(old, new, fence).await
    }

    /// A fresh id whose key lives on the server of `old`'s key, so that
    /// `change_id` touches one server; see the
    /// [crate docs](crate#change_id-across-failures).
    fn new_id_for(&self, old: &SessionId) -> SessionId {
        self.inner.id_on_server_of(old)
    }

    async fn destroy(&self, id: &SessionId) -> Result<()> {
        let inner = &*self.inner;
        let key = inner.key(id);
        // One item: the lock goes with the session.
        let _: [Reply; 1] = inner
            .exec(
                "destroy",
                key.server,
                &[Cmd::Delete {
                    key: &key.key,
                    cas: None,
                }],
            )
            .await?;
        Ok(())
    }

    async fn lock(&self, id: &SessionId, ttl: Duration) -> Result<Locked> {
        let inner = &*self.inner;
        let key = inner.key(id);
        let token = LockToken::generate();
        let ttl = millis(ttl);
        inner
            .cycle("lock", id, &key, Locked::Absent, |mut item, now| {
                if item.lock.is_some_and(|l| l.holds(now)) {
                    return Step::Answer(Locked::Held);
                }
                // Free, or expired: take it. The record returned is the one
                // this write is conditional on, so it is read under the lock.
                item.lock = Some(Lock {
                    token,
                    expires_ms: now.saturating_add(ttl),
                });
                // A session is not idle while a request holds its lock.
                item.record.meta.refresh(now);
                let record = item.record.clone();
                Step::Write(item, Locked::Acquired { token, record })
            })
            .await
    }

    async fn renew_lock(&self, id: &SessionId, token: &LockToken, ttl: Duration) -> Result<bool> {
        let inner = &*self.inner;
        let key = inner.key(id);
        let ttl = millis(ttl);
        inner
            .cycle("renew_lock", id, &key, false, |mut item, now| {
                match item.lock {
                    Some(lock) if lock.held_by(token, now) => {
                        item.lock = Some(Lock {
                            expires_ms: now.saturating_add(ttl),
                            ..lock
                        });
                        item.record.meta.refresh(now);
                        Step::Write(item, true)
                    }
                    _ => Step::Answer(false),
                }
            })
            .await
    }

    async fn unlock(&self, id: &SessionId, token: &LockToken) -> Result<()> {
        let inner = &*self.inner;
        let key = inner.key(id);
        inner
            .cycle("unlock", id, &key, (), |mut item, now| match item.lock {
                // An expired lock is free already: nothing to write.
                Some(lock) if lock.held_by(token, now) => {
                    item.lock = None;
                    Step::Write(item, ())
                }
                _ => Step::Answer(()),
            })
            .await
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
        let max = MAX_KEY_LEN - HASHED_PART_LEN;
        assert_eq!(max, 186);
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
        let key = store.inner.key(&id);
        assert_eq!(key.key, format!("app:{}", hex(&id.hashed())));
        assert_eq!(store.key_for(&id), key.key);
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
