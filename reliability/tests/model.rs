//! Model-checked concurrency: random interleavings of session operations from many tasks, on every store, checked against a sequential model.
//!
//! Each proptest case starts a few sessions ("slots"), then runs 2 to 6
//! tasks at once; each task plays a random list of requests through the
//! real `Session` handle (`SessionFactory` over the store, `finish` as the
//! HTTP layer calls it): reads, buffered writes and removals of the task's
//! own key, locked read-modify-write increments of a shared counter `n`
//! (holding the lock for 0 to 150 ms), regenerations with and without the
//! lock, destroys, and (in a quarter of the cases) a short-lived session
//! that must expire. Half of the cases use "lossy" locks — a 100 ms TTL
//! renewed only every 95 ms — so that locks are really lost under load and
//! the fencing is exercised.
//!
//! # The model, and why it is sound under concurrency
//!
//! Only what is decided by a task's own, sequential history, or by the
//! store's atomicity, is asserted — never an order between tasks that the
//! test cannot observe:
//!
//! - **A lineage** is a session from its creation to its end, through every
//!   id that `regenerate` gave it. Every request names the lineage it
//!   targets by the id it sends.
//! - **No acknowledged write lost.** Key `t<i>` is written only by task `i`,
//!   whose requests run one after another, and every buffered write reads
//!   first (so it can never create a session: a flush to an ended session
//!   fails with `SessionGone`). So the last write of `t<i>` that task `i`
//!   saw acknowledged (`finish` without error) is the value the lineage must
//!   hold — in its reads (read your writes) and at the end — unless an
//!   acknowledged `destroy` targeted the lineage, in which case it may also
//!   be gone as a whole. No faults are injected here, so every refusal is
//!   definite (`SessionGone`, `LockLost`, `LockTimeout`: nothing written); a
//!   `StoreUnavailable` fails the test.
//! - **No lost locked increment.** `n` is changed only under the lock; at
//!   the end it equals the number of commits that returned `Ok`.
//! - **No two lock holders.** Each holder logs the interval from when
//!   `lock()` returned to when it called `commit()` (or `regenerate()`).
//!   A successful fenced write proves the store gave that token the lock for
//!   a span containing that interval, so no two *successful* holders of one
//!   lineage may have overlapping intervals. (A plain "holders now" counter
//!   would be unsound: a holder whose lock was lost by expiry, or removed by
//!   an unfenced regenerate or a destroy, rightly overlaps the next one; its
//!   commit is what must fail.)
//! - **No resurrection.** An id that an acknowledged destroy or regenerate
//!   retired, or that expired, never loads again: not in a request that
//!   started after that acknowledgement, and not at the end.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use sessionkit_core::store::{ArcStore, MemoryStore, SessionStore};
use sessionkit_core::{
    ErrorKind, LockConfig, RequestSession, Session, SessionConfig, SessionFactory, SessionId,
};

/// One request of a task.
#[derive(Debug, Clone)]
enum Op {
    /// Reads the task's own key.
    Read(usize),
    /// Reads, then sets the task's own key to a fresh value (buffered).
    Write(usize),
    /// Reads, then removes the task's own key (buffered).
    Remove(usize),
    /// Locks, reads `n`, waits `hold_ms`, writes `n + 1`, commits.
    Incr { slot: usize, hold_ms: u64 },
    /// Reads, then regenerates without a lock (as a login does).
    Regenerate(usize),
    /// Locks, regenerates (the fenced move takes the lock along), commits.
    RegenerateLocked(usize),
    /// Reads, then destroys.
    Destroy(usize),
}

#[derive(Debug, Clone)]
struct Case {
    slots: usize,
    lossy_locks: bool,
    expire: bool,
    tasks: Vec<Vec<Op>>,
}

fn op(slots: usize) -> impl Strategy<Value = Op> {
    let s = 0..slots;
    prop_oneof![
        4 => s.clone().prop_map(Op::Read),
        4 => s.clone().prop_map(Op::Write),
        1 => s.clone().prop_map(Op::Remove),
        5 => (s.clone(), prop::sample::select(vec![0u64, 0, 5, 30, 150]))
            .prop_map(|(slot, hold_ms)| Op::Incr { slot, hold_ms }),
        1 => s.clone().prop_map(Op::Regenerate),
        1 => s.clone().prop_map(Op::RegenerateLocked),
        1 => s.prop_map(Op::Destroy),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (1usize..=3, any::<bool>(), prop::bool::weighted(0.25)).prop_flat_map(
        |(slots, lossy_locks, expire)| {
            prop::collection::vec(prop::collection::vec(op(slots), 1..=10), 2..=6).prop_map(
                move |tasks| Case {
                    slots,
                    lossy_locks,
                    expire,
                    tasks,
                },
            )
        },
    )
}

/// Cases per store: `PROPTEST_CASES`, default 32.
fn runner() -> TestRunner {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 64,
        ..Config::default()
    })
}

// ----- the model ------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Acked,
    Refused,
}

#[derive(Debug)]
struct Hold {
    start: Instant,
    end: Instant,
    task: usize,
}

#[derive(Debug, Default)]
struct Lineage {
    /// Every id it had, in order; the last is the current one.
    ids: Vec<SessionId>,
    /// Per task: its writes of its own key (`None` = removal) and outcomes.
    writes: HashMap<usize, Vec<(Option<u64>, Outcome)>>,
    /// Locked increments whose commit returned `Ok`.
    commits: u64,
    /// An acknowledged destroy targeted one of its ids.
    destroy_acked: bool,
    /// Successful lock holds (commit or fenced regenerate returned `Ok`).
    holds: Vec<Hold>,
}

impl Lineage {
    fn expected(&self, task: usize) -> Option<u64> {
        self.writes
            .get(&task)
            .and_then(|w| w.iter().rev().find(|(_, o)| *o == Outcome::Acked))
            .and_then(|(v, _)| *v)
    }
}

#[derive(Debug, Default)]
struct Model {
    slots: Vec<Option<usize>>,
    lineages: Vec<Lineage>,
    by_id: HashMap<SessionId, usize>,
    /// Ids retired by an acknowledged destroy, regenerate or expiry.
    dead: HashSet<SessionId>,
}

impl Model {
    fn new_lineage(&mut self, id: SessionId, slot: Option<usize>) -> usize {
        let index = self.lineages.len();
        self.lineages.push(Lineage {
            ids: vec![id],
            ..Lineage::default()
        });
        self.by_id.insert(id, index);
        if let Some(slot) = slot
            && self.slots[slot].is_none()
        {
            self.slots[slot] = Some(index);
        }
        index
    }

    /// The current id of the slot's lineage, that lineage, and whether the
    /// id was already known dead.
    fn target(&self, slot: usize) -> Option<(SessionId, usize, bool)> {
        let lineage = self.slots[slot]?;
        let id = *self.lineages[lineage]
            .ids
            .last()
            .expect("a lineage has an id");
        Some((id, lineage, self.dead.contains(&id)))
    }

    fn moved(&mut self, lineage: usize, old: SessionId, new: SessionId) {
        self.lineages[lineage].ids.push(new);
        self.by_id.insert(new, lineage);
        self.dead.insert(old);
    }
}

// ----- running a case -------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Memory,
    File,
    Redis,
    Memcached,
}

/// Where the servers of a store kind are, for stores built per case.
#[derive(Clone)]
struct Backend {
    kind: Kind,
    file_dir: Option<std::path::PathBuf>,
    redis_url: Option<String>,
    memcached: Option<Vec<String>>,
}

impl Backend {
    async fn store(&self) -> ArcStore {
        match self.kind {
            Kind::Memory => ArcStore::new(MemoryStore::new()),
            Kind::File => ArcStore::new(
                sessionkit_file::FileStore::new(self.file_dir.clone().unwrap())
                    .expect("file store"),
            ),
            Kind::Redis => ArcStore::new(
                sessionkit_redis::RedisStore::connect(self.redis_url.as_ref().unwrap())
                    .await
                    .expect("redis store"),
            ),
            Kind::Memcached => {
                let spec = self.memcached.as_ref().unwrap().join(",");
                ArcStore::new(
                    sessionkit_memcached::MemcachedStore::builder(spec.parse().unwrap())
                        .build()
                        .expect("memcached store"),
                )
            }
        }
    }
}

struct Ctx {
    factory: SessionFactory,
    short: SessionFactory,
    model: Mutex<Model>,
    values: AtomicU64,
    slots: usize,
}

type Check = Result<(), TestCaseError>;

macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err(TestCaseError::fail(format!($($arg)+)));
        }
    };
}

fn key(task: usize) -> String {
    format!("t{task}")
}

fn definite(e: &sessionkit_core::Error, allowed: &[ErrorKind], what: &str) -> Check {
    ensure!(
        allowed.contains(&e.kind()),
        "{what}: unexpected error {e} (kind {:?}) with no fault injected",
        e.kind()
    );
    Ok(())
}

fn run_case(backend: &Backend, case: Case) -> Check {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let store = backend.store().await;
        let mut lock = if case.lossy_locks {
            LockConfig::default().with_ttl(Duration::from_millis(100))
        } else {
            LockConfig::default().with_ttl(Duration::from_secs(3))
        };
        if case.lossy_locks {
            lock.renew_every = Duration::from_millis(95);
        }
        let config = SessionConfig::builder()
            .lifetime(Duration::from_secs(60))
            .lock(lock.with_wait(Duration::from_secs(2)))
            .build()
            .unwrap();
        let short = SessionConfig::builder()
            .lifetime(Duration::from_secs(1))
            .build()
            .unwrap();
        let ctx = Arc::new(Ctx {
            factory: SessionFactory::new(store.clone(), config),
            short: SessionFactory::new(store.clone(), short),
            model: Mutex::new(Model {
                slots: vec![None; case.slots],
                ..Model::default()
            }),
            values: AtomicU64::new(1),
            slots: case.slots,
        });
        for slot in 0..case.slots {
            let session = ctx.factory.request(None);
            session.insert("init", &true).unwrap();
            let done = session.finish(sessionkit_core::Outcome::Success).await;
            ensure!(done.error.is_none(), "create: {:?}", done.error);
            let id = session.id().unwrap();
            ctx.model.lock().unwrap().new_lineage(id, Some(slot));
        }

        let mut tasks = tokio::task::JoinSet::new();
        for (task, ops) in case.tasks.into_iter().enumerate() {
            let ctx = ctx.clone();
            tasks.spawn(async move {
                for op in ops {
                    request(&ctx, task, op).await?;
                }
                Ok(())
            });
        }
        if case.expire {
            let ctx = ctx.clone();
            tasks.spawn(async move { expire(&ctx, backend_slack()).await });
        }
        while let Some(result) = tasks.join_next().await {
            result.map_err(|e| TestCaseError::fail(format!("a task panicked: {e}")))??;
        }
        check_end(&ctx, &store).await
    })
}

fn backend_slack() -> Duration {
    Duration::from_millis(250)
}

/// One request of `task`.
async fn request(ctx: &Ctx, task: usize, op: Op) -> Check {
    let slot = match op {
        Op::Read(s)
        | Op::Write(s)
        | Op::Remove(s)
        | Op::Incr { slot: s, .. }
        | Op::Regenerate(s)
        | Op::RegenerateLocked(s)
        | Op::Destroy(s) => s % ctx.slots,
    };
    let target = ctx.model.lock().unwrap().target(slot);
    let Some((id, lineage, dead_at_start)) = target else {
        return create(ctx, task, slot).await;
    };
    let session = ctx.factory.request(id);
    let gone = |session: &Session| session.id() != Some(id);

    match op {
        Op::Read(_) | Op::Write(_) | Op::Remove(_) => {
            let value = session.get::<u64>(&key(task)).await;
            let value = value.map_err(|e| TestCaseError::fail(format!("read: {e}")))?;
            if gone(&session) {
                finish_clean(&session).await?;
                return Ok(());
            }
            ensure!(
                !dead_at_start,
                "resurrection: id of lineage {lineage} was retired before this request, yet it loaded"
            );
            let expected = ctx.model.lock().unwrap().lineages[lineage].expected(task);
            ensure!(
                value == expected,
                "read your writes: task {task} read {value:?} from lineage {lineage}, its last acknowledged write was {expected:?}"
            );
            let new = match op {
                Op::Read(_) => return finish_clean(&session).await,
                Op::Write(_) => Some(ctx.values.fetch_add(1, Ordering::Relaxed)),
                _ => None,
            };
            match new {
                Some(v) => session.insert(&key(task), &v).unwrap(),
                None => session.discard(&key(task)).unwrap(),
            }
            let done = session.finish(sessionkit_core::Outcome::Success).await;
            let outcome = match &done.error {
                None => Outcome::Acked,
                Some(e) => {
                    definite(e, &[ErrorKind::SessionGone], "buffered flush")?;
                    Outcome::Refused
                }
            };
            ctx.model.lock().unwrap().lineages[lineage]
                .writes
                .entry(task)
                .or_default()
                .push((new, outcome));
        }
        Op::Incr { hold_ms, .. } => {
            if let Err(e) = session.lock().await {
                definite(&e, &[ErrorKind::LockTimeout], "lock")?;
                return finish_clean(&session).await;
            }
            if gone(&session) {
                // The session ended before the lock was taken: a local lock
                // on a fresh session; nothing to do.
                session.rollback().await.unwrap();
                return finish_clean(&session).await;
            }
            let start = Instant::now();
            let n = session.get::<u64>("n").await.unwrap().unwrap_or(0);
            if hold_ms > 0 {
                tokio::time::sleep(Duration::from_millis(hold_ms)).await;
            }
            session.insert("n", &(n + 1)).unwrap();
            let end = Instant::now();
            match session.commit().await {
                Ok(()) => {
                    let mut model = ctx.model.lock().unwrap();
                    let l = &mut model.lineages[lineage];
                    l.commits += 1;
                    l.holds.push(Hold { start, end, task });
                }
                Err(e) => definite(&e, &[ErrorKind::LockLost, ErrorKind::SessionGone], "commit")?,
            }
            finish_clean(&session).await?;
        }
        Op::Regenerate(_) => {
            let _ = session.get::<u64>("n").await.unwrap();
            if gone(&session) {
                return finish_clean(&session).await;
            }
            session.regenerate().await.unwrap();
            if let Some(new) = session.id() {
                ensure!(new != id, "regenerate kept the id");
                ctx.model.lock().unwrap().moved(lineage, id, new);
            }
            finish_clean(&session).await?;
        }
        Op::RegenerateLocked(_) => {
            if let Err(e) = session.lock().await {
                definite(&e, &[ErrorKind::LockTimeout], "lock")?;
                return finish_clean(&session).await;
            }
            if gone(&session) {
                session.rollback().await.unwrap();
                return finish_clean(&session).await;
            }
            let start = Instant::now();
            // Before the call: the fenced move proves the lock was held up
            // to the moment the store ran it, not up to its reply.
            let end = Instant::now();
            match session.regenerate().await {
                Ok(()) => {
                    if let Some(new) = session.id() {
                        ensure!(new != id, "regenerate kept the id");
                        let mut model = ctx.model.lock().unwrap();
                        model.moved(lineage, id, new);
                        model.lineages[lineage]
                            .holds
                            .push(Hold { start, end, task });
                    }
                    if session.is_locked() {
                        // Nothing pending: releases the moved lock.
                        session.commit().await.unwrap();
                    }
                }
                Err(e) => definite(&e, &[ErrorKind::LockLost], "fenced regenerate")?,
            }
            finish_clean(&session).await?;
        }
        Op::Destroy(_) => {
            let _ = session.get::<u64>("n").await.unwrap();
            if gone(&session) {
                return finish_clean(&session).await;
            }
            session.destroy().await.unwrap();
            {
                let mut model = ctx.model.lock().unwrap();
                model.lineages[lineage].destroy_acked = true;
                model.dead.insert(id);
                if model.slots[slot] == Some(lineage)
                    && model.lineages[lineage].ids.last() == Some(&id)
                {
                    model.slots[slot] = None;
                }
            }
            finish_clean(&session).await?;
        }
    }
    Ok(())
}

/// A request on an empty slot: a new session with the task's key.
async fn create(ctx: &Ctx, task: usize, slot: usize) -> Check {
    let session = ctx.factory.request(None);
    let v = ctx.values.fetch_add(1, Ordering::Relaxed);
    session.insert(&key(task), &v).unwrap();
    let done = session.finish(sessionkit_core::Outcome::Success).await;
    ensure!(done.error.is_none(), "create: {:?}", done.error);
    let id = session.id().unwrap();
    let mut model = ctx.model.lock().unwrap();
    let lineage = model.new_lineage(id, Some(slot));
    model.lineages[lineage]
        .writes
        .insert(task, vec![(Some(v), Outcome::Acked)]);
    Ok(())
}

/// Finishes a request that has nothing left to write: no error allowed.
async fn finish_clean(session: &RequestSession) -> Check {
    let done = session.finish(sessionkit_core::Outcome::Success).await;
    ensure!(
        done.error.is_none(),
        "finish with nothing pending failed: {:?}",
        done.error
    );
    Ok(())
}

/// A session with a 1 s lifetime: gone after it, for reads and writes.
async fn expire(ctx: &Ctx, slack: Duration) -> Check {
    let session = ctx.short.request(None);
    session.insert("e", &1u8).unwrap();
    ensure!(
        session
            .finish(sessionkit_core::Outcome::Success)
            .await
            .error
            .is_none(),
        "create"
    );
    let id = session.id().unwrap();
    tokio::time::sleep(Duration::from_secs(1) + slack).await;
    let later = ctx.short.request(id);
    ensure!(
        later.get::<u8>("e").await.unwrap().is_none() && later.id().is_none(),
        "an expired session loaded"
    );
    // A write after the expiry starts a new session under a new id.
    later.insert("e", &2u8).unwrap();
    ensure!(
        later
            .finish(sessionkit_core::Outcome::Success)
            .await
            .error
            .is_none(),
        "write after expiry"
    );
    let fresh = later.id().unwrap();
    ensure!(fresh != id, "an expired id was reused");
    let mut model = ctx.model.lock().unwrap();
    model.dead.insert(id);
    Ok(())
}

async fn check_end(ctx: &Ctx, store: &ArcStore) -> Check {
    let (dead, lineages) = {
        let mut model = ctx.model.lock().unwrap();
        (
            model.dead.iter().copied().collect::<Vec<_>>(),
            std::mem::take(&mut model.lineages),
        )
    };
    for id in &dead {
        let loaded = store.load(id, None).await.unwrap();
        ensure!(
            loaded.is_none(),
            "resurrection: a retired id loads at the end"
        );
    }
    for (index, l) in lineages.iter().enumerate() {
        let current = *l.ids.last().unwrap();
        for old in &l.ids[..l.ids.len() - 1] {
            ensure!(
                store.load(old, None).await.unwrap().is_none(),
                "lineage {index}: an id it moved away from still loads"
            );
        }
        let Some(loaded) = store.load(&current, None).await.unwrap() else {
            ensure!(
                l.destroy_acked,
                "lineage {index} is gone without an acknowledged destroy: acknowledged writes lost"
            );
            continue;
        };
        let entries = &loaded.record.entries;
        let n: u64 = entries
            .get("n")
            .map(|v| sessionkit_core::codec::decode_value(v).unwrap())
            .unwrap_or(0);
        ensure!(
            n == l.commits,
            "lineage {index}: n = {n} but {} locked increments were acknowledged",
            l.commits
        );
        for task in l.writes.keys() {
            let stored: Option<u64> = entries
                .get(&key(*task))
                .map(|v| sessionkit_core::codec::decode_value(v).unwrap());
            let expected = l.expected(*task);
            ensure!(
                stored == expected,
                "lineage {index}, task {task}: stored {stored:?}, last acknowledged write {expected:?}"
            );
        }
        let mut holds: Vec<&Hold> = l.holds.iter().collect();
        holds.sort_by_key(|h| h.start);
        for pair in holds.windows(2) {
            ensure!(
                pair[0].end < pair[1].start,
                "lineage {index}: two successful lock holders overlapped (tasks {} and {})",
                pair[0].task,
                pair[1].task
            );
        }
    }
    for l in &lineages {
        store.destroy(l.ids.last().unwrap()).await.unwrap();
    }
    Ok(())
}

fn run(backend: Backend) {
    let mut runner = runner();
    let cases = runner.config().cases;
    let started = Instant::now();
    let result = runner.run(&case(), |case| run_case(&backend, case));
    eprintln!(
        "{:?}: {cases} cases in {:.1} s",
        backend.kind,
        started.elapsed().as_secs_f64()
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}

fn backend(kind: Kind) -> Backend {
    Backend {
        kind,
        file_dir: None,
        redis_url: None,
        memcached: None,
    }
}

#[test]
fn memory_store_matches_the_model_under_random_interleavings() {
    run(backend(Kind::Memory));
}

#[test]
fn file_store_matches_the_model_under_random_interleavings() {
    let dir = tempfile::tempdir().unwrap();
    run(Backend {
        file_dir: Some(dir.path().to_owned()),
        ..backend(Kind::File)
    });
}

#[test]
fn redis_store_matches_the_model_under_random_interleavings() {
    let server = sessionkit_test_servers::redis::RedisServer::start();
    run(Backend {
        redis_url: Some(server.url()),
        ..backend(Kind::Redis)
    });
}

#[test]
fn memcached_store_matches_the_model_under_random_interleavings() {
    let a = sessionkit_test_servers::memcached::Memcached::start();
    let b = sessionkit_test_servers::memcached::Memcached::start();
    run(Backend {
        memcached: Some(vec![a.addr(), b.addr()]),
        ..backend(Kind::Memcached)
    });
}
