//! `MemcachedStore`: the store contract on memcached, one item per session (lock inside), CAS cycles.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use sessionkit_core::record::{Delta, Record, Touch, now_ms};
use sessionkit_core::store::{Applied, Created, Fence, IdChanged, Loaded, Locked, SessionStore};
use sessionkit_core::{LockToken, Result, SessionId};

use crate::client::{Client, Cmd, Reply};
use crate::ring::Ring;
use crate::servers::{Server, ServerList};
use crate::value::{Lock, encode_item};

mod builder;
mod change_id;
mod cycle;

pub use builder::MemcachedStoreBuilder;
use cycle::{Put, Step};

const STORE: &str = "memcached";

/// The key prefix used unless [`MemcachedStoreBuilder::prefix`] sets another.
pub const DEFAULT_PREFIX: &str = "sessionkit:";

/// The item size limit used unless [`MemcachedStoreBuilder::item_size_limit`]
/// sets another: 1 MiB, memcached's default `-I`.
pub const DEFAULT_ITEM_SIZE_LIMIT: usize = 1024 * 1024;

/// What memcached 1.6 adds to key and value in an item (header, CAS, the
/// key's NUL and the value's CRLF): 59 bytes measured on 1.6.18, rounded up.
pub const ITEM_OVERHEAD: usize = 64;

/// Sessions in memcached, spread over weighted servers by consistent hashing.
///
/// Cheap to clone; clones share the connection pools. Building a store does
/// not connect: connections open on first use, so an app can start while a
/// server is down (its sessions fail with
/// [`ErrorKind::StoreUnavailable`](sessionkit_core::ErrorKind::StoreUnavailable) until it is back). See the
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
        MemcachedStoreBuilder::new(servers)
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
    fn keys_follow_the_layout() {
        let store = builder().prefix("app:").build().unwrap();
        let id = SessionId::generate();
        let key = store.inner.key(&id);
        assert_eq!(key.key, format!("app:{}", id.hashed_hex()));
        assert_eq!(store.key_for(&id), key.key);
        let raw = builder().hash_ids(false).build().unwrap();
        assert_eq!(raw.key_for(&id), format!("sessionkit:{}", id.expose()));
    }

    #[test]
    fn debug_shows_settings_not_internals() {
        let text = format!("{:?}", builder().build().unwrap());
        assert!(text.contains("127.0.0.1:1"), "{text}");
    }
}
