//! `MemoryStore`: sessions in the process, sharded, with expiry and fenced
//! locks.
//!
//! The store keeps the same guarantees as the stores outside the process —
//! expiry, strictness, per-key deltas, fenced locks with TTL — so an app
//! behaves the same on it as on Redis, and tests written against it hold
//! there too.
//!
//! Sessions are spread over shards by id, each behind its own mutex, so that
//! requests on several cores rarely wait on each other. Each shard keeps an
//! index of sessions ordered by expiry; a sweep walks only the front of that
//! index, so its cost grows with the number of expired sessions, not with the
//! number of sessions. Expired sessions are also invisible (and removed) the
//! moment they are touched, so the sweep only bounds memory.
//!
//! What is *not* kept: anything across a restart of the process, and anything
//! across processes. Use the file store or Redis for that.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use crate::error::Result;
use crate::id::{LockToken, SessionId};
use crate::record::{Delta, Record, Touch, now_ms};
use crate::store::{
    Applied, AppliedAndRead, Countable, Created, ExpiredDeletion, Fence, IdChanged, Loaded, Locked,
    SessionStore,
};

/// Sessions kept in this process. Cheap to clone; clones share the sessions.
///
/// Built with [`MemoryStore::new`] (defaults) or [`MemoryStore::builder`].
/// When created inside a Tokio runtime, a background task sweeps expired
/// sessions every [`MemoryStoreBuilder::sweep_interval`]; it stops as soon as
/// the last clone of the store is dropped. [`MemoryStore::gc`] sweeps on demand.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::time::Duration;
/// use sessionkit_core::store::{Created, MemoryStore, SessionStore};
/// use sessionkit_core::record::{Entries, Meta, Record, now_ms};
/// use sessionkit_core::SessionId;
///
/// let store = MemoryStore::new();
/// let id = SessionId::generate();
/// let record = Record {
///     entries: [("n", b"1".to_vec())].into_iter().collect::<Entries>(),
///     meta: Meta::new(now_ms(), Duration::from_secs(60), None),
/// };
/// assert_eq!(store.create(&id, &record).await.unwrap(), Created::Created);
/// let loaded = store.load(&id, None).await.unwrap().unwrap();
/// assert_eq!(loaded.record.entries.get("n"), Some(&b"1"[..]));
/// # }
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    shared: Arc<Shared>,
}

struct Shared {
    shards: Box<[Mutex<Shard>]>,
    mask: usize,
    /// Dropped with the last clone of the store, which ends the sweep task
    /// at once instead of at its next tick.
    _stop_sweeping: Option<tokio::sync::oneshot::Sender<()>>,
}

/// Hashes a [`SessionId`] by taking eight of its bytes.
///
/// Ids are 256 random bits from the OS generator, and strict mode never
/// stores an id a client chose, so eight of their bytes are already a good
/// hash; SipHash over all 32 would only cost time on every request. Bytes
/// 8..16, because bytes 0..8 pick the shard: hashing those again would give
/// every id of a shard the same low bits.
#[derive(Default, Clone, Copy)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        match bytes.get(8..16) {
            Some(eight) => self.0 ^= u64::from_le_bytes(eight.try_into().expect("eight bytes")),
            // The length prefix of the id's bytes: the same for every id.
            None => {
                for b in bytes {
                    self.0 = self.0.rotate_left(8) ^ u64::from(*b);
                }
            }
        }
    }
}

type IdMap<V> = HashMap<SessionId, V, BuildHasherDefault<IdHasher>>;

#[derive(Default)]
struct Shard {
    sessions: IdMap<Record>,
    /// `(expires, id)` of every session in `sessions`.
    by_expiry: BTreeSet<(u64, SessionId)>,
    /// Locks are rare next to sessions, so they live apart and cost nothing
    /// for the sessions that have none.
    locks: IdMap<Lock>,
}

#[derive(Clone, Copy)]
struct Lock {
    token: LockToken,
    expires: u64,
}

impl Shard {
    /// The live record of `id`, removing it if it has expired.
    fn live(&mut self, id: &SessionId, now: u64) -> Option<&mut Record> {
        // One lookup: this runs on every request.
        match self.sessions.entry(*id) {
            Entry::Vacant(_) => None,
            Entry::Occupied(entry) if !entry.get().meta.is_expired(now) => Some(entry.into_mut()),
            Entry::Occupied(entry) => {
                let expires = entry.remove().meta.expires();
                self.by_expiry.remove(&(expires, *id));
                self.locks.remove(id);
                tracing::debug!(session = %id.short_hash(), "session expired");
                None
            }
        }
    }

    fn remove(&mut self, id: &SessionId) -> Option<Record> {
        self.locks.remove(id);
        let record = self.sessions.remove(id)?;
        self.by_expiry.remove(&(record.meta.expires(), *id));
        Some(record)
    }

    fn insert(&mut self, id: SessionId, record: Record) {
        let expires = record.meta.expires();
        // The old entry's index goes first: it may hold the same expiry.
        if let Some(old) = self.sessions.insert(id, record) {
            self.by_expiry.remove(&(old.meta.expires(), id));
        }
        self.by_expiry.insert((expires, id));
    }

    /// Re-indexes `id` after its expiry changed from `before`.
    fn reindex(&mut self, id: &SessionId, before: u64) {
        if let Some(record) = self.sessions.get(id) {
            let after = record.meta.expires();
            if after != before {
                self.by_expiry.remove(&(before, *id));
                self.by_expiry.insert((after, *id));
            }
        }
    }

    /// Refreshes the idle expiry of `id` (a use of the session, like a
    /// write) and returns its record.
    fn refresh(&mut self, id: &SessionId, now: u64) -> Option<Record> {
        let record = self.sessions.get_mut(id)?;
        let before = record.meta.expires();
        record.meta.refresh(now);
        let record = record.clone();
        self.reindex(id, before);
        Some(record)
    }

    fn lock_held_by(&self, id: &SessionId, token: &LockToken, now: u64) -> bool {
        matches!(self.locks.get(id), Some(l) if l.token == *token && l.expires > now)
    }

    fn sweep(&mut self, now: u64) -> u64 {
        let mut removed = 0;
        while let Some(&(expires, id)) = self.by_expiry.first() {
            if expires > now {
                break;
            }
            self.by_expiry.pop_first();
            self.sessions.remove(&id);
            self.locks.remove(&id);
            removed += 1;
        }
        removed
    }
}

impl Shared {
    fn shard(&self, id: &SessionId) -> MutexGuard<'_, Shard> {
        let b = id.as_bytes();
        let n = usize::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
        lock(&self.shards[n & self.mask])
    }

    fn index(&self, id: &SessionId) -> usize {
        let b = id.as_bytes();
        usize::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) & self.mask
    }
}

/// Locks a shard, recovering from poisoning: every shard operation leaves the
/// shard consistent before it can panic, so the data is still good.
fn lock(m: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("shards", &self.shared.shards.len())
            .finish_non_exhaustive()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

/// Configures a [`MemoryStore`].
#[derive(Debug, Clone)]
pub struct MemoryStoreBuilder {
    shards: Option<usize>,
    sweep_interval: Option<Duration>,
}

impl MemoryStoreBuilder {
    /// The number of shards, rounded up to a power of two. Default: four per
    /// available core, at least 16.
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = Some(shards.max(1));
        self
    }

    /// How often the background task sweeps expired sessions; `None` turns the
    /// task off (call [`MemoryStore::gc`] yourself). Default one minute.
    pub fn sweep_interval(mut self, interval: Option<Duration>) -> Self {
        self.sweep_interval = interval;
        self
    }

    /// Builds the store, starting the sweep task if a Tokio runtime is
    /// running.
    pub fn build(self) -> MemoryStore {
        let shards = self
            .shards
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get() * 4)
                    .unwrap_or(16)
                    .max(16)
            })
            .next_power_of_two();
        let sweeper = match (self.sweep_interval, tokio::runtime::Handle::try_current()) {
            (Some(every), Ok(rt)) => Some((every, rt)),
            _ => None,
        };
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let shared = Arc::new(Shared {
            shards: (0..shards).map(|_| Mutex::new(Shard::default())).collect(),
            mask: shards - 1,
            _stop_sweeping: sweeper.is_some().then_some(stop),
        });
        if let Some((every, rt)) = sweeper {
            rt.spawn(sweep_task(Arc::downgrade(&shared), every, stopped));
        }
        MemoryStore { shared }
    }
}

async fn sweep_task(
    shared: Weak<Shared>,
    every: Duration,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    loop {
        // The sender is never used: it is dropped with the store, which
        // completes this receiver (with an error) and ends the task.
        if tokio::time::timeout(every, &mut stopped).await.is_ok() {
            return;
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let removed = sweep(&shared);
        if removed > 0 {
            tracing::debug!(removed, "memory store swept expired sessions");
        }
    }
}

fn sweep(shared: &Shared) -> u64 {
    let now = now_ms();
    // One shard at a time, so requests on other shards go on meanwhile.
    shared.shards.iter().map(|s| lock(s).sweep(now)).sum()
}

impl MemoryStore {
    /// A store with the default settings.
    pub fn new() -> Self {
        MemoryStore::builder().build()
    }

    /// A builder for the settings.
    pub fn builder() -> MemoryStoreBuilder {
        MemoryStoreBuilder {
            shards: None,
            sweep_interval: Some(Duration::from_secs(60)),
        }
    }

    /// Removes every expired session now; returns how many. Costs time in
    /// proportion to what expired, not to what is stored.
    pub fn gc(&self) -> u64 {
        sweep(&self.shared)
    }

    /// The number of sessions held, including expired ones not yet swept.
    pub fn len(&self) -> usize {
        self.shared
            .shards
            .iter()
            .map(|s| lock(s).sessions.len())
            .sum()
    }

    /// Whether the store holds no sessions.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl SessionStore for MemoryStore {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn load(&self, id: &SessionId, touch: Option<Touch>) -> Result<Option<Loaded>> {
        let now = now_ms();
        let mut shard = self.shared.shard(id);
        let Some(record) = shard.live(id, now) else {
            return Ok(None);
        };
        let before = record.meta.expires();
        let touched = match touch {
            Some(t) => record.meta.touch_if_due(now, t),
            None => false,
        };
        let record = record.clone();
        if touched {
            shard.reindex(id, before);
        }
        Ok(Some(Loaded { record, touched }))
    }

    async fn create(&self, id: &SessionId, record: &Record) -> Result<Created> {
        let now = now_ms();
        let mut guard = self.shared.shard(id);
        let shard = &mut *guard;
        // One lookup: every new session comes through here.
        let born_expired = record.meta.is_expired(now);
        match shard.sessions.entry(*id) {
            Entry::Occupied(entry) if !entry.get().meta.is_expired(now) => {
                return Ok(Created::IdTaken);
            }
            Entry::Occupied(mut entry) => {
                // An expired session under the id: it and its lock go.
                shard.locks.remove(id);
                shard.by_expiry.remove(&(entry.get().meta.expires(), *id));
                if born_expired {
                    entry.remove();
                } else {
                    *entry.get_mut() = record.clone();
                    shard.by_expiry.insert((record.meta.expires(), *id));
                }
            }
            // Born expired: accepted and gone at once, as in a TTL store.
            Entry::Vacant(_) if born_expired => {}
            Entry::Vacant(entry) => {
                entry.insert(record.clone());
                shard.by_expiry.insert((record.meta.expires(), *id));
            }
        }
        Ok(Created::Created)
    }

    async fn apply(
        &self,
        id: &SessionId,
        delta: &Delta,
        fence: Option<Fence<'_>>,
    ) -> Result<Applied> {
        let now = now_ms();
        let mut shard = self.shared.shard(id);
        if shard.live(id, now).is_none() {
            return Ok(Applied::Gone);
        }
        if let Some(fence) = fence {
            if !shard.lock_held_by(id, fence.token, now) {
                return Ok(Applied::LockLost);
            }
            if fence.release {
                shard.locks.remove(id);
            }
        }
        let record = shard.sessions.get_mut(id).expect("checked live above");
        let before = record.meta.expires();
        delta.apply_to(record, now);
        let meta = record.meta;
        shard.reindex(id, before);
        Ok(Applied::Applied(meta))
    }

    async fn change_id(
        &self,
        old: &SessionId,
        new: &SessionId,
        fence: Option<&LockToken>,
    ) -> Result<IdChanged> {
        let now = now_ms();
        let (a, b) = (self.shared.index(old), self.shared.index(new));
        // Two shards are locked in index order, so two moves in opposite
        // directions cannot deadlock.
        let (mut first, mut second) = match a.cmp(&b) {
            std::cmp::Ordering::Equal => (lock(&self.shared.shards[a]), None),
            std::cmp::Ordering::Less => (
                lock(&self.shared.shards[a]),
                Some(lock(&self.shared.shards[b])),
            ),
            std::cmp::Ordering::Greater => {
                let hi = lock(&self.shared.shards[b]);
                let lo = lock(&self.shared.shards[a]);
                (lo, Some(hi))
            }
        };
        // `first` is always the shard of `old` now.
        if old == new {
            return Ok(if first.live(old, now).is_some() {
                IdChanged::IdTaken
            } else {
                IdChanged::Gone
            });
        }
        if first.live(old, now).is_none() {
            return Ok(IdChanged::Gone);
        }
        let new_taken = match second.as_mut() {
            Some(s) => s.live(new, now).is_some(),
            None => first.live(new, now).is_some(),
        };
        if new_taken {
            return Ok(IdChanged::IdTaken);
        }
        let moved_lock = match fence {
            Some(token) => {
                if !first.lock_held_by(old, token, now) {
                    return Ok(IdChanged::LockLost);
                }
                first.locks.get(old).copied()
            }
            None => None,
        };
        let mut record = first.remove(old).expect("checked live above");
        record.meta.refresh(now);
        let meta = record.meta;
        let target = match second.as_mut() {
            Some(s) => &mut **s,
            None => &mut *first,
        };
        target.insert(*new, record);
        if let Some(l) = moved_lock {
            target.locks.insert(*new, l);
        }
        Ok(IdChanged::Changed(meta))
    }

    async fn destroy(&self, id: &SessionId) -> Result<()> {
        self.shared.shard(id).remove(id);
        Ok(())
    }

    async fn lock(&self, id: &SessionId, ttl: Duration) -> Result<Locked> {
        let now = now_ms();
        let mut shard = self.shared.shard(id);
        if shard.live(id, now).is_none() {
            return Ok(Locked::Absent);
        }
        if matches!(shard.locks.get(id), Some(l) if l.expires > now) {
            return Ok(Locked::Held);
        }
        // A session is not idle while a request holds its lock.
        let record = shard.refresh(id, now).expect("checked live above");
        let token = LockToken::generate();
        shard.locks.insert(
            *id,
            Lock {
                token,
                expires: now.saturating_add(ttl.as_millis() as u64),
            },
        );
        Ok(Locked::Acquired { token, record })
    }

    async fn apply_and_read(
        &self,
        id: &SessionId,
        delta: &Delta,
        token: &LockToken,
    ) -> Result<AppliedAndRead> {
        let now = now_ms();
        let mut shard = self.shared.shard(id);
        if shard.live(id, now).is_none() {
            return Ok(AppliedAndRead::Gone);
        }
        if !shard.lock_held_by(id, token, now) {
            return Ok(AppliedAndRead::LockLost);
        }
        let record = shard.sessions.get_mut(id).expect("checked live above");
        let before = record.meta.expires();
        delta.apply_to(record, now);
        let record = record.clone();
        shard.reindex(id, before);
        Ok(AppliedAndRead::Applied(record))
    }

    async fn renew_lock(&self, id: &SessionId, token: &LockToken, ttl: Duration) -> Result<bool> {
        let now = now_ms();
        let mut shard = self.shared.shard(id);
        if shard.live(id, now).is_none() || !shard.lock_held_by(id, token, now) {
            return Ok(false);
        }
        if let Some(l) = shard.locks.get_mut(id) {
            l.expires = now.saturating_add(ttl.as_millis() as u64);
        }
        shard.refresh(id, now);
        Ok(true)
    }

    async fn unlock(&self, id: &SessionId, token: &LockToken) -> Result<()> {
        let mut shard = self.shared.shard(id);
        if matches!(shard.locks.get(id), Some(l) if l.token == *token) {
            shard.locks.remove(id);
        }
        Ok(())
    }
}

impl ExpiredDeletion for MemoryStore {
    async fn delete_expired(&self) -> Result<u64> {
        Ok(self.gc())
    }
}

impl Countable for MemoryStore {
    async fn count(&self) -> Result<u64> {
        Ok(self.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Entries, Meta};

    fn record(ttl: Duration) -> Record {
        Record {
            entries: [("k", b"1".to_vec())].into_iter().collect::<Entries>(),
            meta: Meta::new(now_ms(), ttl, None),
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_sweep_task_ends_with_the_store_not_at_its_next_tick() {
        let tasks = || {
            tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks()
        };
        let store = MemoryStore::builder()
            .sweep_interval(Some(Duration::from_secs(3600)))
            .build();
        let copy = store.clone();
        tokio::task::yield_now().await;
        assert_eq!(tasks(), 1, "one sweep task per store");
        drop(store);
        tokio::task::yield_now().await;
        assert_eq!(tasks(), 1, "a clone keeps the task");
        drop(copy);
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(tasks(), 0, "the task ends once the last clone is gone");
    }

    #[tokio::test]
    async fn sweep_removes_only_expired_and_scales_with_them() {
        let store = MemoryStore::builder().sweep_interval(None).build();
        for _ in 0..100 {
            let _ = store
                .create(&SessionId::generate(), &record(Duration::from_millis(20)))
                .await
                .unwrap();
        }
        for _ in 0..50 {
            let _ = store
                .create(&SessionId::generate(), &record(Duration::from_secs(60)))
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert_eq!(store.gc(), 100);
        assert_eq!(store.len(), 50);
        assert_eq!(store.gc(), 0);
    }

    #[tokio::test]
    async fn index_follows_touches() {
        let store = MemoryStore::builder().sweep_interval(None).build();
        let id = SessionId::generate();
        let _ = store
            .create(&id, &record(Duration::from_millis(60)))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(40)).await;
        let loaded = store
            .load(&id, Some(Touch::always()))
            .await
            .unwrap()
            .unwrap();
        assert!(loaded.touched);
        tokio::time::sleep(Duration::from_millis(30)).await;
        // Past the original expiry, before the touched one: kept.
        assert_eq!(store.gc(), 0);
        assert!(store.load(&id, None).await.unwrap().is_some());
        let shard = store.shared.shard(&id);
        assert_eq!(shard.by_expiry.len(), shard.sessions.len());
    }

    /// A sweep removes a session by its index entry alone, so `create` over
    /// an expired session must leave exactly the new session's entry.
    #[tokio::test]
    async fn create_over_an_expired_session_reindexes_it() {
        let store = MemoryStore::builder().sweep_interval(None).build();
        let id = SessionId::generate();
        let short = record(Duration::from_millis(20));
        assert_eq!(store.create(&id, &short).await.unwrap(), Created::Created);
        tokio::time::sleep(Duration::from_millis(40)).await;
        let long = record(Duration::from_secs(60));
        assert_eq!(store.create(&id, &long).await.unwrap(), Created::Created);
        {
            let shard = store.shared.shard(&id);
            let entries: Vec<_> = shard.by_expiry.iter().copied().collect();
            assert_eq!(entries, [(long.meta.expires(), id)]);
        }
        // The old expiry has passed: a stale entry would sweep the new session.
        assert_eq!(store.gc(), 0);
        assert_eq!(store.load(&id, None).await.unwrap().unwrap().record, long);

        // Born expired over an expired session: both gone, index too.
        let other = SessionId::generate();
        let _ = store.create(&other, &short).await.unwrap();
        tokio::time::sleep(Duration::from_millis(40)).await;
        let expired = Record {
            meta: Meta::from_parts(now_ms() - 10, 1, None, now_ms() - 5),
            ..short.clone()
        };
        assert_eq!(
            store.create(&other, &expired).await.unwrap(),
            Created::Created
        );
        assert!(store.load(&other, None).await.unwrap().is_none());
        let shard = store.shared.shard(&other);
        assert!(shard.by_expiry.iter().all(|(_, i)| *i != other));
    }

    #[tokio::test]
    async fn background_sweep_runs_and_stops_with_the_store() {
        let store = MemoryStore::builder()
            .sweep_interval(Some(Duration::from_millis(20)))
            .build();
        let _ = store
            .create(&SessionId::generate(), &record(Duration::from_millis(10)))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(store.len(), 0);
        let weak = Arc::downgrade(&store.shared);
        drop(store);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(weak.upgrade().is_none());
    }
}
