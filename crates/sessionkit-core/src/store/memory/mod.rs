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
//! The store can be bounded ([`MemoryStoreBuilder::max_sessions`]): when a
//! new session takes it over the bound, the sessions closest to expiry are
//! evicted, never one whose lock is held. Unbounded by default.
//!
//! What is *not* kept: anything across a restart of the process, and anything
//! across processes. Use the file store or Redis for that.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

mod owners;

use crate::error::Result;
use crate::id::{LockToken, SessionId};
use crate::record::{Delta, Record, Touch, duration_ms, now_ms};
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
    /// The sessions in all shards, expired ones not yet removed included;
    /// kept in step by [`ShardGuard`].
    held: AtomicUsize,
    /// The bound on `held`, if any.
    max_sessions: Option<usize>,
    /// Live sessions evicted to keep the bound.
    evicted: AtomicU64,
    /// Taken while evicting, so that two creates that both find the store
    /// over the bound evict one session each rather than two each.
    evicting: Mutex<()>,
    /// Dropped with the last clone of the store, which ends the sweep task
    /// at once instead of at its next tick.
    _stop_sweeping: Option<tokio::sync::oneshot::Sender<()>>,
    /// The owner index (see [`owners`]). Taken before any shard lock, never
    /// after one; only owner operations and `change_id` take it.
    owners: Mutex<owners::Index>,
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

    /// The session the bound evicts first in this shard: the front of the
    /// expiry index, passing over live sessions whose lock is held (locks
    /// are few, so the walk is short) and over `spare` (the session being
    /// created, which would otherwise tie with sessions created in the same
    /// millisecond). An expired session goes whatever its lock says.
    fn first_evictable(&self, now: u64, spare: Option<&SessionId>) -> Option<(u64, SessionId)> {
        self.by_expiry
            .iter()
            .find(|(expires, id)| {
                *expires <= now
                    || (Some(id) != spare
                        && !matches!(self.locks.get(id), Some(l) if l.expires > now))
            })
            .copied()
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

/// A locked shard that keeps [`Shared::held`] in step with the shard's size:
/// whatever an operation did to the shard, the difference is added when the
/// guard drops, while the shard is still locked. One place, so that no path
/// that adds or removes a session (expiry on touch, sweep, destroy, a move)
/// can forget it.
struct ShardGuard<'a> {
    shard: MutexGuard<'a, Shard>,
    before: usize,
    held: &'a AtomicUsize,
}

impl Deref for ShardGuard<'_> {
    type Target = Shard;

    fn deref(&self) -> &Shard {
        &self.shard
    }
}

impl DerefMut for ShardGuard<'_> {
    fn deref_mut(&mut self) -> &mut Shard {
        &mut self.shard
    }
}

impl Drop for ShardGuard<'_> {
    fn drop(&mut self) {
        let after = self.shard.sessions.len();
        if after > self.before {
            self.held.fetch_add(after - self.before, Ordering::Relaxed);
        } else if after < self.before {
            self.held.fetch_sub(self.before - after, Ordering::Relaxed);
        }
    }
}

impl Shared {
    fn owners(&self) -> MutexGuard<'_, owners::Index> {
        // Every owner operation leaves the index consistent before it can
        // panic (and a stale entry is only dropped later).
        self.owners.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn shard(&self, id: &SessionId) -> ShardGuard<'_> {
        self.lock_shard(self.index(id))
    }

    fn lock_shard(&self, index: usize) -> ShardGuard<'_> {
        let shard = lock(&self.shards[index]);
        ShardGuard {
            before: shard.sessions.len(),
            shard,
            held: &self.held,
        }
    }

    /// Evicts sessions closest to expiry until at most `max` are held (see
    /// [`MemoryStoreBuilder::max_sessions`]), `created` last: only when every
    /// other session is locked.
    fn evict_over(&self, max: usize, created: &SessionId) {
        if self.held.load(Ordering::Relaxed) <= max {
            return;
        }
        let _one_at_a_time = self.evicting.lock().unwrap_or_else(|p| p.into_inner());
        let now = now_ms();
        while self.held.load(Ordering::Relaxed) > max {
            // One shard locked at a time, as in the sweep: the shards' fronts
            // are compared, then the winner's shard is locked again and its
            // front re-read, since it may have changed meanwhile.
            let front = |spare: Option<&SessionId>| {
                (0..self.shards.len())
                    .filter_map(|i| {
                        let (expires, _) = self.lock_shard(i).first_evictable(now, spare)?;
                        Some((expires, i))
                    })
                    .min()
                    .map(|(_, i)| i)
            };
            let (index, spare) = match front(Some(created)) {
                Some(index) => (index, Some(created)),
                None => match front(None) {
                    Some(index) => (index, None),
                    // Every session is locked: over the bound until one is not.
                    None => return,
                },
            };
            let mut shard = self.lock_shard(index);
            let Some((expires, id)) = shard.first_evictable(now, spare) else {
                continue;
            };
            shard.remove(&id);
            if expires > now {
                let evicted = self.evicted.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::debug!(session = %id.short_hash(), "memory store full: session evicted");
                if evicted.is_power_of_two() {
                    tracing::warn!(
                        evicted,
                        max_sessions = max,
                        "memory store full: live sessions evicted so far (raise max_sessions?)"
                    );
                }
            }
        }
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
            .field("max_sessions", &self.shared.max_sessions)
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
    max_sessions: Option<usize>,
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

    /// Bounds the number of sessions the store holds to `max` (at least 1).
    /// Default: unbounded, as the stores outside the process are bounded by
    /// their own servers' memory settings instead.
    ///
    /// When creating a session takes the store over the bound, the store
    /// evicts, in the same call, the sessions closest to expiry until it
    /// holds `max` again. With one lifetime for every session that is the
    /// least recently active one; a session with a longer lifetime of its
    /// own ("remember me") outlives plain ones idle as long. Precisely:
    ///
    /// - Sessions that have expired but are not swept yet go first; they are
    ///   not counted as evictions.
    /// - A session whose lock is held is never evicted: the request in the
    ///   middle of its locked transaction would find it gone at the commit.
    ///   The next one in expiry order goes instead, which is the new session
    ///   itself when every other session is locked.
    /// - The new session itself is passed over, even when it is the closest
    ///   to expiry (a short lifetime of its own, or the same millisecond as
    ///   others): it is the one a user is using right now. It goes only
    ///   when every other session is locked; `create` then still answers
    ///   `Created`, as a TTL store does for a record that expires at once.
    /// - An evicted session is gone as if destroyed: its user is logged out.
    ///
    /// Evictions are counted ([`MemoryStore::evicted`]), logged at `debug`
    /// each and at `warn` at the 1st, 2nd, 4th, 8th, … eviction. A create
    /// over the bound costs a look at the front of each shard per session
    /// evicted; nothing else costs more than without a bound.
    ///
    /// # Security
    ///
    /// Without a bound, anyone who can make the application create sessions
    /// (often any anonymous request that writes to its session) can fill the
    /// process's memory. With one, they can instead push other users'
    /// sessions out, the least recently active first. Size the bound well
    /// above the sessions the application expects, do not create sessions
    /// for anonymous reads, and limit the rate of requests that create them
    /// ([OWASP: denial of service](https://cheatsheetseries.owasp.org/cheatsheets/Denial_of_Service_Cheat_Sheet.html)).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use std::time::Duration;
    /// use sessionkit_core::store::{MemoryStore, SessionStore};
    /// use sessionkit_core::record::{Entries, Meta, Record, now_ms};
    /// use sessionkit_core::SessionId;
    ///
    /// let store = MemoryStore::builder().max_sessions(2).build();
    /// let ids = [SessionId::generate(), SessionId::generate(), SessionId::generate()];
    /// for (id, minutes) in ids.iter().zip([30, 10, 20]) {
    ///     let meta = Meta::new(now_ms(), Duration::from_secs(minutes * 60), None);
    ///     let record = Record { entries: Entries::default(), meta };
    ///     store.create(id, &record).await.unwrap();
    /// }
    /// assert_eq!(store.len(), 2);
    /// assert_eq!(store.evicted(), 1);
    /// // The one with 10 minutes left went.
    /// assert!(store.load(&ids[1], None).await.unwrap().is_none());
    /// # }
    /// ```
    pub fn max_sessions(mut self, max: usize) -> Self {
        self.max_sessions = Some(max.max(1));
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
            held: AtomicUsize::new(0),
            max_sessions: self.max_sessions,
            evicted: AtomicU64::new(0),
            evicting: Mutex::new(()),
            owners: Mutex::default(),
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
    (0..shared.shards.len())
        .map(|i| shared.lock_shard(i).sweep(now))
        .sum()
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
            max_sessions: None,
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

    /// The bound set with [`MemoryStoreBuilder::max_sessions`], if any.
    pub fn max_sessions(&self) -> Option<usize> {
        self.shared.max_sessions
    }

    /// How many live sessions were evicted to keep the bound since the store
    /// was built (expired ones removed on the way are not counted).
    pub fn evicted(&self) -> u64 {
        self.shared.evicted.load(Ordering::Relaxed)
    }

    /// `create`'s work inside the shard, whose lock (and count) ends here,
    /// before any eviction looks at the other shards.
    fn create_in_shard(&self, id: &SessionId, record: &Record) -> Created {
        let now = now_ms();
        let mut guard = self.shared.shard(id);
        let shard = &mut *guard;
        // One lookup: every new session comes through here.
        let born_expired = record.meta.is_expired(now);
        match shard.sessions.entry(*id) {
            Entry::Occupied(entry) if !entry.get().meta.is_expired(now) => {
                return Created::IdTaken;
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
        Created::Created
    }
}

impl SessionStore for MemoryStore {
    fn owner_index(self: Arc<Self>) -> Option<Arc<dyn crate::owner::DynOwnerIndex>> {
        Some(self)
    }

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
        let created = self.create_in_shard(id, record);
        if let (Created::Created, Some(max)) = (created, self.shared.max_sessions) {
            self.shared.evict_over(max, id);
        }
        Ok(created)
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
        // The owner index first (the lock order), so that an owned session
        // is never seen at neither id by an owner operation.
        let mut owners = self.shared.owners();
        let (a, b) = (self.shared.index(old), self.shared.index(new));
        // Two shards are locked in index order, so two moves in opposite
        // directions cannot deadlock.
        let (mut first, mut second) = match a.cmp(&b) {
            std::cmp::Ordering::Equal => (self.shared.lock_shard(a), None),
            std::cmp::Ordering::Less => {
                (self.shared.lock_shard(a), Some(self.shared.lock_shard(b)))
            }
            std::cmp::Ordering::Greater => {
                let hi = self.shared.lock_shard(b);
                let lo = self.shared.lock_shard(a);
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
        owners.moved(&record, *new);
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
                expires: now.saturating_add(duration_ms(ttl)),
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
            l.expires = now.saturating_add(duration_ms(ttl));
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

    fn record_for(ttl: Duration) -> Record {
        Record {
            entries: Entries::default(),
            meta: Meta::new(now_ms(), ttl, None),
        }
    }

    /// Creates one session per lifetime (in seconds), in order.
    async fn sessions(store: &MemoryStore, lifetimes: &[u64]) -> Vec<SessionId> {
        let mut ids = Vec::new();
        for secs in lifetimes {
            let id = SessionId::generate();
            let created = store
                .create(&id, &record_for(Duration::from_secs(*secs)))
                .await
                .unwrap();
            assert_eq!(created, Created::Created);
            ids.push(id);
        }
        ids
    }

    async fn alive(store: &MemoryStore, ids: &[SessionId]) -> Vec<bool> {
        let mut alive = Vec::new();
        for id in ids {
            alive.push(store.load(id, None).await.unwrap().is_some());
        }
        alive
    }

    fn bounded(max: usize) -> MemoryStore {
        MemoryStore::builder()
            .max_sessions(max)
            .sweep_interval(None)
            .build()
    }

    #[tokio::test]
    async fn a_bounded_store_holds_exactly_max_sessions() {
        let store = bounded(3);
        assert_eq!(store.max_sessions(), Some(3));
        let ids = sessions(&store, &[60, 60, 60]).await;
        assert_eq!((store.len(), store.evicted()), (3, 0), "at the bound");
        assert_eq!(alive(&store, &ids).await, [true; 3]);
        let more = sessions(&store, &[60]).await;
        assert_eq!((store.len(), store.evicted()), (3, 1), "one over");
        assert!(alive(&store, &more).await[0], "the new session stays");
        // Taking an id that is already there adds nothing, evicts nothing.
        let taken = store
            .create(&more[0], &record_for(Duration::from_secs(60)))
            .await
            .unwrap();
        assert_eq!(taken, Created::IdTaken);
        assert_eq!((store.len(), store.evicted()), (3, 1));
        assert_eq!(
            MemoryStore::new().max_sessions(),
            None,
            "unbounded by default"
        );
        assert_eq!(bounded(0).max_sessions(), Some(1), "at least one");
    }

    #[tokio::test]
    async fn the_bound_evicts_the_sessions_closest_to_expiry() {
        let store = bounded(3);
        // Created in this order; the one with the least time left is the
        // second, not the oldest.
        let ids = sessions(&store, &[300, 100, 200]).await;
        let fourth = sessions(&store, &[400]).await;
        assert_eq!(alive(&store, &ids).await, [true, false, true]);
        let fifth = sessions(&store, &[500]).await;
        assert_eq!(alive(&store, &ids).await, [true, false, false]);
        assert_eq!(alive(&store, &fourth).await, [true]);
        assert_eq!(alive(&store, &fifth).await, [true]);
        assert_eq!(store.evicted(), 2);

        // A new session is passed over even when it is the closest to
        // expiry (and ties between sessions of one millisecond never pick
        // it): the next in expiry order goes.
        let brief = sessions(&store, &[1]).await;
        assert_eq!(alive(&store, &brief).await, [true]);
        assert_eq!(alive(&store, &ids).await, [false, false, false]);
        assert_eq!((store.len(), store.evicted()), (3, 3));
    }

    #[tokio::test]
    async fn the_bound_never_evicts_a_locked_session() {
        let store = bounded(2);
        let ids = sessions(&store, &[100, 200]).await;
        let Locked::Acquired { token, .. } =
            store.lock(&ids[0], Duration::from_secs(30)).await.unwrap()
        else {
            panic!("lock the session closest to expiry")
        };
        let third = sessions(&store, &[300]).await;
        assert_eq!(
            alive(&store, &ids).await,
            [true, false],
            "the next one went"
        );
        assert_eq!(alive(&store, &third).await, [true]);

        // Its transaction commits as if nothing had happened.
        let mut delta = Delta::default();
        delta.set("k", b"2".to_vec());
        let fence = Fence {
            token: &token,
            release: true,
        };
        let applied = store.apply(&ids[0], &delta, Some(fence)).await.unwrap();
        assert!(matches!(applied, Applied::Applied(_)), "{applied:?}");

        // Unlocked, it is the first to go again.
        let fourth = sessions(&store, &[400]).await;
        assert_eq!(alive(&store, &ids).await, [false, false]);
        assert_eq!(alive(&store, &third).await, [true]);
        assert_eq!(alive(&store, &fourth).await, [true]);
    }

    #[tokio::test]
    async fn when_every_other_session_is_locked_the_new_one_goes() {
        let store = bounded(2);
        let ids = sessions(&store, &[100, 200]).await;
        for id in &ids {
            let locked = store.lock(id, Duration::from_secs(30)).await.unwrap();
            assert!(matches!(locked, Locked::Acquired { .. }));
        }
        let new = sessions(&store, &[300]).await;
        assert_eq!(alive(&store, &ids).await, [true, true]);
        assert_eq!(alive(&store, &new).await, [false]);
        assert_eq!((store.len(), store.evicted()), (2, 1));
    }

    #[tokio::test]
    async fn expired_sessions_make_room_first_and_are_not_evictions() {
        let store = bounded(2);
        let short = SessionId::generate();
        let _ = store
            .create(&short, &record(Duration::from_millis(10)))
            .await
            .unwrap();
        let ids = sessions(&store, &[100]).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
        let more = sessions(&store, &[200]).await;
        assert_eq!(store.len(), 2);
        assert_eq!(store.evicted(), 0, "an expired session is not an eviction");
        assert_eq!(alive(&store, &ids).await, [true]);
        assert_eq!(alive(&store, &more).await, [true]);
    }

    /// The count the bound relies on follows every path that adds or
    /// removes a session, across shards and under concurrency.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_count_behind_the_bound_stays_exact() {
        let store = MemoryStore::builder()
            .shards(4)
            .max_sessions(50)
            .sweep_interval(None)
            .build();
        let mut tasks = Vec::new();
        for t in 0..8u64 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..40u64 {
                    let id = SessionId::generate();
                    let ttl =
                        Duration::from_millis(if i % 3 == 0 { 5 } else { 60_000 + t * 100 + i });
                    let _ = store.create(&id, &record(ttl)).await.unwrap();
                    match i % 4 {
                        0 => store.destroy(&id).await.unwrap(),
                        1 => {
                            let new = SessionId::generate();
                            let _ = store.change_id(&id, &new, None).await.unwrap();
                        }
                        _ => {}
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert!(store.len() <= 50, "{}", store.len());
        assert_eq!(store.shared.held.load(Ordering::Relaxed), store.len());
        tokio::time::sleep(Duration::from_millis(10)).await;
        store.gc();
        for i in 0..store.shared.shards.len() {
            let shard = store.shared.lock_shard(i);
            assert_eq!(shard.by_expiry.len(), shard.sessions.len());
        }
        assert_eq!(store.shared.held.load(Ordering::Relaxed), store.len());
    }

    /// A bound far above what the suite stores changes nothing of the
    /// contract.
    #[cfg(feature = "testkit")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_bounded_store_passes_the_conformance_suite() {
        let store = MemoryStore::builder()
            .max_sessions(1_000_000)
            .sweep_interval(None)
            .build();
        crate::testkit::run_all(&store, &crate::testkit::SuiteConfig::default()).await;
        assert_eq!(store.evicted(), 0);
        assert_eq!(store.shared.held.load(Ordering::Relaxed), store.len());
    }
}
