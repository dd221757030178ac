//! `RedisStore`: the `SessionStore` operations, each one command or Lua script round trip.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::{ScriptInvocation, Value};
use sessionkit_core::record::{Delta, Record, Touch};
use sessionkit_core::store::{
    Applied, AppliedAndRead, Created, Fence, IdChanged, Loaded, Locked, SessionStore,
};
use sessionkit_core::{Error, ErrorKind, LockToken, Result, SessionId};

use crate::builder::RedisStoreBuilder;
use crate::clock::{self, RedisClock};
use crate::connection::Connection;
use crate::keys::{KeySpace, SessionKeys};
use crate::reply::{self, Corrupt, RawSession};
use crate::scripts::{self, AfterWrite, MAX_MS, Status};

mod owners;

/// The name of this store in errors and logs.
pub(crate) const NAME: &str = "redis";

/// Sessions in Redis or Redis Cluster. Cheap to clone; clones share the
/// connection.
///
/// Build it with [`RedisStore::connect`] (defaults) or
/// [`RedisStore::builder`]. See the [crate docs](crate) for the data
/// layout, the scripts, the round trips and what is not guaranteed.
///
/// ```no_run
/// # async fn demo() -> sessionkit_core::Result<()> {
/// use sessionkit_redis::RedisStore;
///
/// let store = RedisStore::connect("redis://127.0.0.1:6379").await?;
/// # let _ = store;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Connection,
    keys: KeySpace,
    /// Redis's clock, estimated here to decide whether a load's touch is
    /// due without asking Redis.
    clock: RedisClock,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.inner.keys.prefix())
            .field("hash_ids", &self.inner.keys.hash_ids())
            .field(
                "mode",
                &if self.inner.conn.is_cluster() {
                    "cluster"
                } else {
                    "standalone"
                },
            )
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to the Redis server at `url` with the default settings
    /// (prefix `sessionkit:`, ids hashed at rest, 2 s timeouts) and waits
    /// until the connection is up.
    ///
    /// `url` is a redis-rs connection URL: `redis://[user:password@]host[:port][/db]`,
    /// `rediss://…` for TLS (feature `tls`), `unix:///path/to/redis.sock`.
    /// The connection speaks RESP3 (Redis 6.0 or newer) unless the URL asks
    /// for `?protocol=resp2`; see the [crate docs](crate#connecting).
    /// Fails with [`ErrorKind::StoreUnavailable`] if the server cannot be
    /// reached, and [`ErrorKind::InvalidConfig`] (setting `url`) if the URL
    /// does not parse.
    ///
    /// ```no_run
    /// # async fn demo() -> sessionkit_core::Result<()> {
    /// let store = sessionkit_redis::RedisStore::connect("redis://127.0.0.1/0").await?;
    /// # let _ = store;
    /// # Ok(()) }
    /// ```
    pub async fn connect(url: &str) -> Result<RedisStore> {
        RedisStore::builder().connect(url).await
    }

    /// A builder for the settings: prefix, hashing of ids, timeouts, and the
    /// connection (URL, existing client or connection, cluster).
    ///
    /// ```no_run
    /// # async fn demo() -> sessionkit_core::Result<()> {
    /// use std::time::Duration;
    /// use sessionkit_redis::RedisStore;
    ///
    /// let store = RedisStore::builder()
    ///     .prefix("shop:session:")
    ///     .response_timeout(Duration::from_millis(500))
    ///     .connect("redis://127.0.0.1")
    ///     .await?;
    /// # let _ = store;
    /// # Ok(()) }
    /// ```
    pub fn builder() -> RedisStoreBuilder {
        RedisStoreBuilder::default()
    }

    pub(crate) fn new(conn: Connection, keys: KeySpace) -> Self {
        RedisStore {
            inner: Arc::new(Inner {
                conn,
                keys,
                clock: RedisClock::new(),
            }),
        }
    }

    /// Reads Redis's clock (`TIME`) and learns its offset from this
    /// process's; returns Redis's time. Done when the store connects, and by
    /// the first load of a store built on a connection handed to it.
    pub(crate) async fn sync_clock(&self, operation: &'static str) -> Result<u64> {
        let sent = Instant::now();
        let reply = self
            .inner
            .conn
            .query(&redis::cmd("TIME"))
            .await
            .map_err(|err| Error::store_unavailable(NAME, operation, err))?;
        let received = Instant::now();
        let now = clock::time_reply_ms(&reply).ok_or_else(|| unexpected(operation))?;
        self.inner.clock.observe(now, sent, received);
        Ok(now)
    }

    /// The key prefix of this store.
    ///
    /// ```no_run
    /// # async fn demo() -> sessionkit_core::Result<()> {
    /// let store = sessionkit_redis::RedisStore::connect("redis://127.0.0.1").await?;
    /// assert_eq!(store.prefix(), "sessionkit:");
    /// # Ok(()) }
    /// ```
    pub fn prefix(&self) -> &str {
        self.inner.keys.prefix()
    }

    /// Whether ids are kept hashed (SHA-256) in the keys; see
    /// [`RedisStoreBuilder::hash_ids`].
    ///
    /// ```no_run
    /// # async fn demo() -> sessionkit_core::Result<()> {
    /// let store = sessionkit_redis::RedisStore::connect("redis://127.0.0.1").await?;
    /// assert!(store.hashes_ids());
    /// # Ok(()) }
    /// ```
    pub fn hashes_ids(&self) -> bool {
        self.inner.keys.hash_ids()
    }

    /// Whether this store talks to a Redis Cluster (where
    /// [`new_id_for`](SessionStore::new_id_for) draws ids in the old id's
    /// hash slot; see the [crate docs](crate#redis-cluster)).
    ///
    /// ```no_run
    /// # async fn demo() -> sessionkit_core::Result<()> {
    /// let store = sessionkit_redis::RedisStore::connect("redis://127.0.0.1").await?;
    /// assert!(!store.is_cluster());
    /// # Ok(()) }
    /// ```
    pub fn is_cluster(&self) -> bool {
        self.inner.conn.is_cluster()
    }

    /// The Redis keys of a session: its data (a string) and its lock (a
    /// string), as `(data, lock)`.
    ///
    /// For operators and tests; the store computes them itself.
    ///
    /// ```no_run
    /// # async fn demo() -> sessionkit_core::Result<()> {
    /// use sessionkit_core::SessionId;
    ///
    /// let store = sessionkit_redis::RedisStore::connect("redis://127.0.0.1").await?;
    /// let (data, lock) = store.keys_of(&SessionId::generate());
    /// assert!(data.starts_with("sessionkit:{"));
    /// assert_eq!(lock, format!("{data}:lock"));
    /// # Ok(()) }
    /// ```
    pub fn keys_of(&self, id: &SessionId) -> (String, String) {
        let SessionKeys { data, lock } = self.inner.keys.keys(id);
        (data, lock)
    }

    fn keys(&self, id: &SessionId) -> SessionKeys {
        self.inner.keys.keys(id)
    }

    /// Runs a script; every failure is the store being unavailable.
    async fn run(&self, operation: &'static str, script: &ScriptInvocation<'_>) -> Result<Value> {
        self.inner
            .conn
            .invoke(script)
            .await
            .map_err(|err| Error::store_unavailable(NAME, operation, err))
    }

    /// Runs a script whose reply is a [`Status`] word.
    async fn run_status(
        &self,
        operation: &'static str,
        script: &ScriptInvocation<'_>,
    ) -> Result<Status> {
        let reply = self.run(operation, script).await?;
        Status::of(Some(&reply)).ok_or_else(|| unexpected(operation))
    }

    /// Runs a script whose reply is an array with a [`Status`] word first.
    async fn run_array(
        &self,
        operation: &'static str,
        script: &ScriptInvocation<'_>,
    ) -> Result<(Status, Vec<Value>)> {
        let items = reply::array(self.run(operation, script).await?)
            .ok_or_else(|| unexpected(operation))?;
        let status = Status::of(items.first()).ok_or_else(|| unexpected(operation))?;
        Ok((status, items))
    }

    /// Deletes a record whose metadata the scripts accept but whose entries
    /// this process cannot read (not a MessagePack map of strings, or a key
    /// that is not UTF-8: this crate
    /// never writes one). Deleting it makes every later operation agree that
    /// the session is absent; it costs one more round trip, on such data
    /// only.
    async fn discard(
        &self,
        id: &SessionId,
        operation: &'static str,
        why: &'static str,
    ) -> Result<()> {
        corrupt(id, operation, why);
        let keys = self.keys(id);
        let mut del = redis::cmd("DEL");
        del.arg(&keys.data).arg(&keys.lock);
        self.inner
            .conn
            .query(&del)
            .await
            .map_err(|err| Error::store_unavailable(NAME, operation, err))?;
        Ok(())
    }

    /// The second round trip of a load whose touch looks due: Redis checks
    /// again by its own clock and refreshes the expiry if it is due and
    /// moves. Its reply carries Redis's time, which keeps the clock estimate
    /// fresh.
    async fn touch(
        &self,
        id: &SessionId,
        data: &str,
        mut record: Record,
        touch: Touch,
    ) -> Result<Option<Loaded>> {
        const OP: &str = "load";
        let mut script = scripts::TOUCH.prepare_invoke();
        script.key(data).arg(touch.permille());
        let sent = Instant::now();
        let (status, items) = self.run_array(OP, &script).await?;
        if let Some(now) = reply::number(items.get(1)) {
            self.inner.clock.observe(now, sent, Instant::now());
        }
        match status {
            // Expired or destroyed since the GET: absent, as a load a
            // moment later would find it.
            Status::Absent => Ok(None),
            Status::Foreign => {
                corrupt(id, OP, "replaced by data not of this layout");
                Ok(None)
            }
            Status::Live | Status::Touched => {
                record.meta = reply::meta(items.get(2)).ok_or_else(|| unexpected(OP))?;
                Ok(Some(Loaded {
                    record,
                    touched: status == Status::Touched,
                }))
            }
            _ => Err(unexpected(OP)),
        }
    }

    /// The session a script returned (as stored) after writing or locking
    /// it; `None` if it is gone after all: its refresh expired it at once
    /// (an idle lifetime of a millisecond: Redis deletes a key whose expiry
    /// time is not in the future; the script then answers nil), or it
    /// cannot be read — the script accepted its metadata, so its entries
    /// are unreadable, and it is discarded, which drops the lock the script
    /// kept or took.
    async fn read_back(
        &self,
        id: &SessionId,
        operation: &'static str,
        stored: Value,
    ) -> Result<Option<Record>> {
        match RawSession::from_reply(stored) {
            Ok(Some(session)) => Ok(Some(session.into_record())),
            Ok(None) => Ok(None),
            Err(why) => {
                self.discard(id, operation, why.why()).await?;
                Ok(None)
            }
        }
    }
}

/// The `APPLY` script call for `delta` on `keys`: `token` fences it (`""`:
/// no fence), `after` says what becomes of the lock (see `scripts::APPLY`).
fn apply_invocation<'a>(
    keys: &SessionKeys,
    delta: &Delta,
    token: &str,
    after: AfterWrite,
) -> ScriptInvocation<'a> {
    let mut script = scripts::APPLY.prepare_invoke();
    script
        .key(&keys.data)
        .key(&keys.lock)
        .arg(token)
        .arg(after.arg());
    script.arg(if delta.clears() { "clear" } else { "merge" });
    match (delta.ttl_ms(), delta.remembered()) {
        // As the metadata field holds it, marked remembered or not.
        (Some(ttl), remembered) => script.arg(reply::format_ttl(
            ttl.clamp(1, MAX_MS),
            remembered == Some(true),
        )),
        (None, _) => script.arg(""),
    };
    match delta.deadline_cap() {
        Some(at) => script.arg(format!("{:x}", at.clamp(1, reply::MAX_TIME))),
        None => script.arg(""),
    };
    let sets = delta.changes().filter(|(_, v)| v.is_some()).count();
    script.arg(sets);
    for (k, v) in delta.changes() {
        if let Some(v) = v {
            script.arg(k.as_bytes()).arg(v);
        }
    }
    for (k, v) in delta.changes() {
        if v.is_none() {
            script.arg(k.as_bytes());
        }
    }
    script
}

/// A reply Redis or the scripts never give: a bug, a foreign script under
/// our SHA, or not Redis at all.
fn unexpected(operation: &'static str) -> Error {
    Error::new(ErrorKind::StoreUnavailable)
        .with_store(NAME)
        .with_operation(operation)
        .with_detail("unexpected reply from redis")
}

/// A session whose creation time the metadata field cannot hold (past
/// 2^44 - 1 ms, in the year 2527; see `reply::MAX_TIME`): only a clock set
/// that far ahead makes one. Refused rather than stored with another
/// creation time than it was given.
fn past_2527(operation: &'static str) -> Error {
    Error::codec(
        "a creation time after the year 2527 does not fit the metadata field (11 hex digits)",
        None,
    )
    .with_store(NAME)
    .with_operation(operation)
}

/// A session with an entry of 4 GiB or more, which its stored form cannot
/// hold (and Redis, at 512 MB a value, would refuse anyway).
fn too_large(operation: &'static str) -> Error {
    Error::codec("a session entry of 4 GiB or more cannot be stored", None)
        .with_store(NAME)
        .with_operation(operation)
}

/// Logs the foreign data a script found where a session should be (its
/// answer `foreign`); the caller treats the session as absent.
fn note_foreign(id: &SessionId, operation: &'static str, status: Status) {
    if status == Status::Foreign {
        corrupt(id, operation, "not a session of this layout");
    }
}

/// Logs data under a session key that this crate cannot read; the caller
/// treats the session as absent.
fn corrupt(id: &SessionId, operation: &'static str, why: &'static str) {
    tracing::warn!(
        session = %id.short_hash(),
        operation,
        reason = why,
        "redis store found a corrupt or foreign session record; treating it as absent"
    );
}

fn millis(d: Duration) -> u64 {
    sessionkit_core::record::duration_ms(d).clamp(1, MAX_MS)
}

impl SessionStore for RedisStore {
    fn name(&self) -> &'static str {
        NAME
    }

    fn owner_index(self: Arc<Self>) -> Option<Arc<dyn sessionkit_core::owner::DynOwnerIndex>> {
        Some(self)
    }

    async fn load(&self, id: &SessionId, touch: Option<Touch>) -> Result<Option<Loaded>> {
        const OP: &str = "load";
        let data = self.inner.keys.data_key(id);
        // A plain GET, not a script: Redis's native expiry, set to agree
        // with the metadata, has already removed an expired session, so
        // reading is all there is to do, and it costs Redis a fraction of
        // a script.
        let mut get = redis::cmd("GET");
        get.arg(&data);
        let reply = match self.inner.conn.query(&get).await {
            Ok(reply) => reply,
            Err(err) if err.code() == Some("WRONGTYPE") => {
                corrupt(id, OP, "not a string");
                return Ok(None);
            }
            Err(err) => return Err(Error::store_unavailable(NAME, OP, err)),
        };
        let record = match RawSession::from_reply(reply) {
            Ok(Some(session)) => session.into_record(),
            Ok(None) => return Ok(None),
            Err(Corrupt::Foreign(why)) => {
                corrupt(id, OP, why);
                return Ok(None);
            }
            Err(Corrupt::Entry(why)) => {
                Box::pin(self.discard(id, OP, why)).await?;
                return Ok(None);
            }
        };
        let Some(touch) = touch else {
            return Ok(Some(Loaded {
                record,
                touched: false,
            }));
        };
        let now = match self.inner.clock.now() {
            Some(now) => now,
            None => Box::pin(self.sync_clock(OP)).await?,
        };
        if !touch.is_due(&record.meta, now) {
            return Ok(Some(Loaded {
                record,
                touched: false,
            }));
        }
        // The rare branches are boxed so that every read's future (boxed
        // itself by the session handle) is the size of the GET alone.
        Box::pin(self.touch(id, &data, record, touch)).await
    }

    async fn create(&self, id: &SessionId, record: &Record) -> Result<Created> {
        const OP: &str = "create";
        // The data key alone: the lock key only on the rare path below.
        let data = self.inner.keys.data_key(id);
        let meta = &record.meta;
        let field = reply::format_meta(meta).ok_or_else(|| past_2527(OP))?;
        let stored = reply::encode_session(&field, &record.entries).ok_or_else(|| too_large(OP))?;
        // The native expiry one millisecond early, as the scripts' `write`
        // sets it. An expiry already past: Redis deletes the key at once,
        // which is what a session born expired must come to.
        let at = meta.expires().min(reply::MAX_TIME).saturating_sub(1).max(1);
        // A fresh random id has nothing under it: one `SET … NX`, no
        // script. A lock never outlives its session (the scripts cap it
        // there), so a free data key means a free id.
        let mut set = redis::cmd("SET");
        set.arg(&data).arg(&stored).arg("NX").arg("PXAT").arg(at);
        let reply = self
            .inner
            .conn
            .query(&set)
            .await
            .map_err(|err| Error::store_unavailable(NAME, OP, err))?;
        match reply {
            Value::Okay => return Ok(Created::Created),
            Value::SimpleString(ref ok) if ok == "OK" => return Ok(Created::Created),
            Value::Nil => {}
            _ => return Err(unexpected(OP)),
        }
        // Something is under the id: a live session, or what an expired or
        // foreign one left. The script decides, atomically.
        let keys = self.keys(id);
        let mut script = scripts::CREATE.prepare_invoke();
        script.key(&keys.data).key(&keys.lock).arg(stored).arg(at);
        match self.run_status(OP, &script).await? {
            Status::IdTaken => Ok(Created::IdTaken),
            Status::Created => Ok(Created::Created),
            Status::Replaced => {
                corrupt(id, OP, "replaced by the new session");
                Ok(Created::Created)
            }
            _ => Err(unexpected(OP)),
        }
    }

    async fn apply(
        &self,
        id: &SessionId,
        delta: &Delta,
        fence: Option<Fence<'_>>,
    ) -> Result<Applied> {
        const OP: &str = "apply";
        let after = match fence {
            Some(Fence { release: true, .. }) => AfterWrite::Release,
            _ => AfterWrite::Keep,
        };
        let token = fence.map(|f| f.token.to_hex()).unwrap_or_default();
        let script = apply_invocation(&self.keys(id), delta, &token, after);
        let (status, items) = self.run_array(OP, &script).await?;
        match status {
            Status::Absent | Status::Foreign => {
                note_foreign(id, OP, status);
                Ok(Applied::Gone)
            }
            Status::LockLost => Ok(Applied::LockLost),
            Status::Applied => reply::meta(items.get(1))
                .map(Applied::Applied)
                .ok_or_else(|| unexpected(OP)),
            _ => Err(unexpected(OP)),
        }
    }

    /// One script: the fenced write, keeping the lock, and the session as
    /// it is then.
    async fn apply_and_read(
        &self,
        id: &SessionId,
        delta: &Delta,
        token: &LockToken,
    ) -> Result<AppliedAndRead> {
        const OP: &str = "apply_and_read";
        let script = apply_invocation(
            &self.keys(id),
            delta,
            &token.to_hex(),
            AfterWrite::KeepAndRead,
        );
        let (status, mut items) = self.run_array(OP, &script).await?;
        match status {
            Status::Absent | Status::Foreign => {
                note_foreign(id, OP, status);
                Ok(AppliedAndRead::Gone)
            }
            Status::LockLost => Ok(AppliedAndRead::LockLost),
            Status::Applied if items.len() == 3 => {
                let stored = items.pop().expect("three items");
                Ok(match self.read_back(id, OP, stored).await? {
                    Some(record) => AppliedAndRead::Applied(record),
                    None => AppliedAndRead::Gone,
                })
            }
            _ => Err(unexpected(OP)),
        }
    }

    async fn change_id(
        &self,
        old: &SessionId,
        new: &SessionId,
        fence: Option<&LockToken>,
    ) -> Result<IdChanged> {
        const OP: &str = "change_id";
        if self.inner.conn.is_cluster() && self.inner.keys.slot(old) != self.inner.keys.slot(new) {
            // A script may only touch keys of one slot, and a move in two
            // steps can lose the session (see the crate docs, "Redis
            // Cluster"): `new_id_for` never returns such an id.
            return Err(Error::new(ErrorKind::InvalidId)
                .with_store(NAME)
                .with_operation(OP)
                .with_detail(
                    "in a Redis Cluster the new id must hash to the old id's slot: take it from SessionStore::new_id_for",
                ));
        }
        let (from, to) = (self.keys(old), self.keys(new));
        let [mode, prefix] = self.index_mode();
        let mut script = scripts::CHANGE_ID.prepare_invoke();
        script
            .key(&from.data)
            .key(&from.lock)
            .key(&to.data)
            .key(&to.lock)
            .key(owners::moved_key(&from.data))
            .arg(fence.map(LockToken::to_hex).unwrap_or_default())
            .arg(mode)
            .arg(prefix)
            .arg(owners::MOVED_LIFE_MS);
        let (status, items) = self.run_array(OP, &script).await?;
        match status {
            Status::Absent => Ok(IdChanged::Gone),
            Status::IdTaken => Ok(IdChanged::IdTaken),
            Status::LockLost => Ok(IdChanged::LockLost),
            Status::Changed => {
                let meta = reply::meta(items.get(1)).ok_or_else(|| unexpected(OP))?;
                // In a cluster, an owned session's index entry follows in a
                // second step (see store/owners.rs).
                #[cfg(feature = "cluster")]
                if let [_, _, Value::BulkString(owner), Value::BulkString(handle)] = &items[..] {
                    let handle = std::str::from_utf8(handle).map_err(|_| unexpected(OP))?;
                    if !self.entry_moved(owner, handle, &from.data, &to).await? {
                        return Ok(IdChanged::Gone);
                    }
                }
                Ok(IdChanged::Changed(meta))
            }
            _ => Err(unexpected(OP)),
        }
    }

    /// In a cluster, a fresh id whose keys hash to `old`'s slot, so that
    /// `change_id` is one atomic script there too; otherwise
    /// [`SessionId::generate`]. See the [crate docs](crate#redis-cluster).
    fn new_id_for(&self, old: &SessionId) -> SessionId {
        if self.inner.conn.is_cluster() {
            self.inner.keys.id_in_slot_of(old).0
        } else {
            SessionId::generate()
        }
    }

    async fn destroy(&self, id: &SessionId) -> Result<()> {
        let keys = self.keys(id);
        let mut del = redis::cmd("DEL");
        del.arg(&keys.data).arg(&keys.lock);
        self.inner
            .conn
            .query(&del)
            .await
            .map_err(|err| Error::store_unavailable(NAME, "destroy", err))?;
        Ok(())
    }

    async fn lock(&self, id: &SessionId, ttl: Duration) -> Result<Locked> {
        const OP: &str = "lock";
        let keys = self.keys(id);
        let token = LockToken::generate();
        let mut script = scripts::LOCK.prepare_invoke();
        script
            .key(&keys.data)
            .key(&keys.lock)
            .arg(token.to_hex())
            .arg(millis(ttl));
        let (status, mut items) = self.run_array(OP, &script).await?;
        match status {
            Status::Absent | Status::Foreign => {
                note_foreign(id, OP, status);
                Ok(Locked::Absent)
            }
            Status::Held => Ok(Locked::Held),
            Status::Acquired => {
                let stored = items.pop().ok_or_else(|| unexpected(OP))?;
                Ok(match self.read_back(id, OP, stored).await? {
                    Some(record) => Locked::Acquired { token, record },
                    None => Locked::Absent,
                })
            }
            _ => Err(unexpected(OP)),
        }
    }

    async fn renew_lock(&self, id: &SessionId, token: &LockToken, ttl: Duration) -> Result<bool> {
        const OP: &str = "renew_lock";
        let keys = self.keys(id);
        let mut script = scripts::RENEW.prepare_invoke();
        script
            .key(&keys.data)
            .key(&keys.lock)
            .arg(token.to_hex())
            .arg(millis(ttl));
        match self.run_status(OP, &script).await? {
            Status::Renewed => Ok(true),
            Status::NotOwner => Ok(false),
            _ => Err(unexpected(OP)),
        }
    }

    async fn unlock(&self, id: &SessionId, token: &LockToken) -> Result<()> {
        const OP: &str = "unlock";
        let keys = self.keys(id);
        let mut script = scripts::UNLOCK.prepare_invoke();
        script.key(&keys.lock).arg(token.to_hex());
        match self.run_status(OP, &script).await? {
            Status::Released | Status::NotOwner => Ok(()),
            _ => Err(unexpected(OP)),
        }
    }
}
