//! A state-machine test of the `Session` handle: two to four handles on one session, driven through arbitrary interleavings of every handle operation, on every store.
//!
//! Each proptest case stores a session, opens 2 to 4 handles on it (each
//! one is a request that presented the session's cookie) and runs a list
//! of steps; a step is one operation of one handle: `get`, `insert`,
//! `discard`, `clear_all`, `set_lifetime`, `lock`, `commit`, `rollback`,
//! `unlock`, `reload`, `regenerate`, `destroy`, or `finish` with a success,
//! a client error or a server error (the handle is then replaced by the next
//! request of that client, presenting the cookie the response left it).
//! Steps run one after another, so the order of the store operations is the
//! order of the steps, and the model can say exactly what the store must
//! hold after each one. A handle that asks for a lock another handle holds
//! waits (20 ms here) and times out.
//!
//! After every step it asserts:
//!
//! - **never a panic** (a panic fails the case, and proptest shrinks it);
//! - **no error that a fault-free store cannot explain**: only "lock
//!   timeout", "lock lost", "session gone" and "modification denied" (an
//!   operation out of order, such as a commit without a lock);
//! - **an acknowledged write is visible to the next load**: after a commit
//!   or a finish that returned without error, every key the handle changed
//!   holds, in the store under the handle's id, what the handle wrote (or is
//!   absent if it removed or cleared it), and a lifetime it set is recorded
//!   as remembered;
//! - **read your writes**: a handle's `get` returns its own uncommitted or
//!   unflushed change of that key;
//! - **a dead id stays dead, no resurrection**: an id that an acknowledged
//!   `destroy` or `regenerate` retired never loads again, whatever comes
//!   after (writes of other handles that still hold it, flushes, commits,
//!   finishes);
//! - **exactly one live id after any regenerate**: after a successful
//!   regenerate of a live session the old id is dead and the new one live;
//!   after a failed one the old id is still live;
//! - **a store lock excludes**: two handles never both hold a lock the
//!   store granted on the same live id.
//!
//! "A lock implies an id" is structural since the fix of review finding 1
//! (a held store lock carries the id it was taken on); its consequence —
//! a commit after the session was destroyed under the lock fails as "session
//! gone" instead of panicking — is what the steps above exercise.
//!
//! Cases per store: `PROPTEST_CASES` (default 24). For a long run, set
//! `HANDLES_SECONDS`: cases are then run in batches until that many seconds
//! have passed, and the count is printed (scripts/handles-long.sh).

mod support;

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use sessionkit_core::codec::decode_value;
use sessionkit_core::store::{ArcStore, MemoryStore, SessionStore};
use sessionkit_core::{
    CookieChange, ErrorKind, LockConfig, Outcome, RequestSession, SessionConfig, SessionFactory,
    SessionId,
};

const KEYS: [&str; 3] = ["a", "b", "c"];

/// One operation of one handle.
#[derive(Debug, Clone)]
enum Op {
    Get(usize),
    Insert(usize),
    Remove(usize),
    Clear,
    SetLifetime,
    Lock,
    Commit,
    Rollback,
    Unlock,
    Reload,
    Regenerate,
    Destroy,
    Finish(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..KEYS.len()).prop_map(Op::Get),
        4 => (0..KEYS.len()).prop_map(Op::Insert),
        2 => (0..KEYS.len()).prop_map(Op::Remove),
        1 => Just(Op::Clear),
        1 => Just(Op::SetLifetime),
        4 => Just(Op::Lock),
        3 => Just(Op::Commit),
        1 => Just(Op::Rollback),
        1 => Just(Op::Unlock),
        2 => Just(Op::Reload),
        2 => Just(Op::Regenerate),
        1 => Just(Op::Destroy),
        2 => prop_oneof![Just(200u16), Just(303), Just(400), Just(500)].prop_map(Op::Finish),
    ]
}

#[derive(Debug, Clone)]
struct Case {
    handles: usize,
    steps: Vec<(usize, Op)>,
}

fn case() -> impl Strategy<Value = Case> {
    (2usize..=4).prop_flat_map(|handles| {
        prop::collection::vec((0..handles, op()), 10..40)
            .prop_map(move |steps| Case { handles, steps })
    })
}

// ----- the model ----------------------------------------------------------

/// Changes a handle made and has not seen acknowledged yet.
#[derive(Debug, Clone, Default)]
struct Changes {
    cleared: bool,
    keys: BTreeMap<&'static str, Option<u64>>,
    lifetime: bool,
}

impl Changes {
    fn merge(&mut self, later: &Changes) {
        if later.cleared {
            *self = Changes {
                lifetime: self.lifetime,
                ..Changes::default()
            };
            self.cleared = true;
        }
        self.keys.extend(later.keys.iter().map(|(k, v)| (*k, *v)));
        self.lifetime |= later.lifetime;
    }

    /// What `get(key)` must return because of these changes, if they decide it.
    fn decides(&self, key: &str) -> Option<Option<u64>> {
        match self.keys.get(key) {
            Some(v) => Some(*v),
            None if self.cleared => Some(None),
            None => None,
        }
    }
}

/// One handle (one request) and what the model knows of it.
struct Handle {
    session: RequestSession,
    /// The cookie this client holds: presented by its next request.
    cookie: Option<SessionId>,
    pending: Changes,
    locked: Changes,
    /// The live id the store granted this handle's lock on.
    store_lock: Option<SessionId>,
}

struct Run {
    store: ArcStore,
    factory: SessionFactory,
    handles: Vec<Handle>,
    dead: HashSet<SessionId>,
    next_value: u64,
    log: Vec<String>,
}

type Check = Result<(), TestCaseError>;

macro_rules! ensure {
    ($run:expr, $cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err(TestCaseError::fail(format!(
                "{}\nsteps so far:\n{}",
                format!($($arg)+),
                $run.log.join("\n")
            )));
        }
    };
}

impl Run {
    async fn live(&self, id: &SessionId) -> Option<sessionkit_core::record::Record> {
        self.store
            .load(id, None)
            .await
            .expect("a fault-free store answers")
            .map(|l| l.record)
    }

    fn handle(&self, presented: Option<SessionId>) -> RequestSession {
        self.factory.request(presented)
    }

    /// An error is one a fault-free store can explain.
    fn definite(&self, what: &str, err: &sessionkit_core::Error, allowed: &[ErrorKind]) -> Check {
        ensure!(
            self,
            allowed.contains(&err.kind()),
            "{what}: unexpected error {err} ({:?})",
            err.kind()
        );
        Ok(())
    }

    /// After an acknowledged write of `changes` by handle `h`: the store
    /// holds them under the handle's id.
    async fn check_written(&self, h: usize, changes: &Changes, what: &str) -> Check {
        let id = self.handles[h].session.id();
        let record = match id {
            Some(id) => self.live(&id).await,
            None => None,
        };
        let writes_something = changes.keys.values().any(Option::is_some);
        let Some(record) = record else {
            ensure!(
                self,
                !writes_something,
                "{what}: acknowledged, but no live session under {id:?} holds {changes:?}"
            );
            return Ok(());
        };
        for key in KEYS {
            let stored = record
                .entries
                .get(key)
                .map(|v| decode_value::<u64>(v).unwrap());
            if let Some(expected) = changes.decides(key) {
                ensure!(
                    self,
                    stored == expected,
                    "{what}: key {key} is {stored:?} in the store, the acknowledged write made it {expected:?}"
                );
            }
        }
        if changes.lifetime {
            ensure!(
                self,
                record.meta.remembered(),
                "{what}: a lifetime was set but the session is not remembered"
            );
        }
        Ok(())
    }

    /// The invariants that hold after every step.
    async fn check_always(&self) -> Check {
        for id in &self.dead {
            ensure!(
                self,
                self.live(id).await.is_none(),
                "a dead id ({id:?}) loads again: resurrection"
            );
        }
        let mut granted: HashSet<SessionId> = HashSet::new();
        for h in &self.handles {
            if let Some(id) = h.store_lock
                && h.session.is_locked()
                && !self.dead.contains(&id)
            {
                ensure!(
                    self,
                    granted.insert(id),
                    "two handles hold a store lock on {id:?}"
                );
            }
        }
        Ok(())
    }

    /// Replaces handle `h` by the next request of its client.
    fn next_request(&mut self, h: usize) {
        let cookie = self.handles[h].cookie;
        self.handles[h] = Handle {
            session: self.handle(cookie),
            cookie,
            pending: Changes::default(),
            locked: Changes::default(),
            store_lock: None,
        };
    }

    async fn step(&mut self, h: usize, op: Op) -> Check {
        self.log.push(format!("  handle {h}: {op:?}"));
        let session = self.handles[h].session.session().clone();
        let id_before = session.id();
        match op {
            Op::Get(k) => match session.get::<u64>(KEYS[k]).await {
                Ok(value) => {
                    let hs = &self.handles[h];
                    if let Some(expected) = hs
                        .locked
                        .decides(KEYS[k])
                        .or_else(|| hs.pending.decides(KEYS[k]))
                    {
                        ensure!(
                            self,
                            value == expected,
                            "read your writes: get({}) = {value:?}, the handle wrote {expected:?}",
                            KEYS[k]
                        );
                    }
                }
                Err(e) => self.definite("get", &e, &[ErrorKind::LockTimeout])?,
            },
            Op::Insert(k) | Op::Remove(k) => {
                let value = matches!(op, Op::Insert(_)).then(|| {
                    self.next_value += 1;
                    self.next_value
                });
                let result = match value {
                    Some(v) => session.insert(KEYS[k], &v),
                    None => session.discard(KEYS[k]),
                };
                match result {
                    Ok(()) => {
                        self.changes(h).keys.insert(KEYS[k], value);
                    }
                    Err(e) => self.definite("write", &e, &[ErrorKind::ModificationDenied])?,
                }
            }
            Op::Clear => match session.clear_all() {
                Ok(()) => self.changes(h).merge(&Changes {
                    cleared: true,
                    ..Changes::default()
                }),
                Err(e) => self.definite("clear", &e, &[ErrorKind::ModificationDenied])?,
            },
            Op::SetLifetime => match session.set_lifetime(Duration::from_secs(3 * 3600)) {
                Ok(()) => self.changes(h).lifetime = true,
                Err(e) => self.definite("set_lifetime", &e, &[ErrorKind::ModificationDenied])?,
            },
            Op::Lock => {
                let depth_before = session.is_locked();
                match session.lock().await {
                    Ok(()) => {
                        if !depth_before
                            && let Some(id) = session.id()
                            && self.live(&id).await.is_some()
                        {
                            self.handles[h].store_lock = Some(id);
                        }
                    }
                    Err(e) => self.definite(
                        "lock",
                        &e,
                        &[ErrorKind::LockTimeout, ErrorKind::SessionGone],
                    )?,
                }
            }
            Op::Commit => {
                let mut merged = self.handles[h].pending.clone();
                merged.merge(&self.handles[h].locked);
                match session.commit().await {
                    Ok(()) => {
                        self.check_written(h, &merged, "commit").await?;
                        let hs = &mut self.handles[h];
                        hs.pending = Changes::default();
                        hs.locked = Changes::default();
                    }
                    Err(e) => {
                        self.definite(
                            "commit",
                            &e,
                            &[
                                ErrorKind::ModificationDenied,
                                ErrorKind::LockLost,
                                ErrorKind::SessionGone,
                            ],
                        )?;
                        let hs = &mut self.handles[h];
                        match e.kind() {
                            ErrorKind::SessionGone => {
                                hs.pending = Changes::default();
                                hs.locked = Changes::default();
                            }
                            ErrorKind::LockLost => hs.locked = Changes::default(),
                            _ => {}
                        }
                    }
                }
            }
            Op::Rollback => match session.rollback().await {
                Ok(()) => self.handles[h].locked = Changes::default(),
                Err(e) => self.definite("rollback", &e, &[ErrorKind::ModificationDenied])?,
            },
            Op::Unlock => match session.unlock().await {
                Ok(()) => {
                    if !session.is_locked() {
                        let hs = &mut self.handles[h];
                        let locked = std::mem::take(&mut hs.locked);
                        hs.pending.merge(&locked);
                    }
                }
                Err(e) => self.definite("unlock", &e, &[ErrorKind::ModificationDenied])?,
            },
            Op::Reload => {
                if let Err(e) = session.reload().await {
                    self.definite("reload", &e, &[])?;
                }
            }
            Op::Regenerate => {
                let was_live = match id_before {
                    Some(id) => self.live(&id).await.is_some(),
                    None => false,
                };
                match session.regenerate().await {
                    Ok(()) => {
                        let new = session.id();
                        if was_live && new != id_before {
                            let old = id_before.unwrap();
                            self.dead.insert(old);
                            let new = new.unwrap();
                            let still = self.live(&new).await.is_some();
                            ensure!(self, still, "regenerate: the new id is not live");
                            if self.handles[h].store_lock == Some(old) {
                                self.handles[h].store_lock = Some(new);
                            }
                        }
                    }
                    Err(e) => {
                        self.definite("regenerate", &e, &[ErrorKind::LockLost])?;
                        if let Some(old) = id_before
                            && was_live
                        {
                            let live = self.live(&old).await.is_some();
                            ensure!(self, live, "a failed regenerate lost the session");
                        }
                        self.handles[h].locked = Changes::default();
                    }
                }
            }
            Op::Destroy => {
                let was_live = match id_before {
                    Some(id) => self.live(&id).await.is_some(),
                    None => false,
                };
                match session.destroy().await {
                    Ok(()) => {
                        if was_live {
                            self.dead.insert(id_before.unwrap());
                        }
                        let hs = &mut self.handles[h];
                        hs.pending = Changes::default();
                        hs.locked = Changes::default();
                        hs.store_lock = None;
                    }
                    Err(e) => self.definite("destroy", &e, &[])?,
                }
            }
            Op::Finish(status) => {
                let outcome = Outcome::from_status(status);
                let commits = self.factory.config().release_policy().commits(outcome);
                let mut expected = self.handles[h].pending.clone();
                if commits {
                    expected.merge(&self.handles[h].locked);
                }
                let finished = self.handles[h].session.finish(outcome).await;
                match &finished.error {
                    None => self.check_written(h, &expected, "finish").await?,
                    Some(e) => self.definite(
                        "finish",
                        e,
                        &[
                            ErrorKind::SessionGone,
                            ErrorKind::LockLost,
                            ErrorKind::LockTimeout,
                        ],
                    )?,
                }
                let gone = finished
                    .error
                    .as_ref()
                    .is_some_and(|e| e.kind() == ErrorKind::SessionGone);
                match finished.cookie {
                    CookieChange::Set { id, .. } if !gone => self.handles[h].cookie = Some(id),
                    CookieChange::Remove => self.handles[h].cookie = None,
                    _ if gone => self.handles[h].cookie = None,
                    _ => {}
                }
                self.next_request(h);
            }
        }
        if !self.handles[h].session.is_locked() {
            self.handles[h].store_lock = None;
        }
        self.check_always().await
    }

    /// Where a write of handle `h` goes in the model.
    fn changes(&mut self, h: usize) -> &mut Changes {
        let hs = &mut self.handles[h];
        if hs.session.is_locked() {
            &mut hs.locked
        } else {
            &mut hs.pending
        }
    }
}

// ----- the stores ---------------------------------------------------------

/// Makes a store for a case (on the case's own runtime).
type MakeStore<'a> = &'a (dyn Fn() -> Pin<Box<dyn Future<Output = ArcStore>>> + Sync);

fn run_case(make: MakeStore<'_>, case: Case) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let store = make().await;
        let config = SessionConfig::builder()
            .lock(LockConfig::default().with_wait(Duration::from_millis(20)))
            .build()
            .unwrap();
        let factory = SessionFactory::from_arc_store(store.clone(), config);
        let first = factory.request(None);
        first.insert("a", &0u64).unwrap();
        assert!(first.finish(Outcome::Success).await.error.is_none());
        let id = first.id();
        let mut run = Run {
            store,
            factory,
            handles: Vec::new(),
            dead: HashSet::new(),
            next_value: 0,
            log: Vec::new(),
        };
        for _ in 0..case.handles {
            run.handles.push(Handle {
                session: run.handle(id),
                cookie: id,
                pending: Changes::default(),
                locked: Changes::default(),
                store_lock: None,
            });
        }
        for (h, op) in case.steps {
            run.step(h, op).await?;
        }
        // The end of every request: nothing may panic, and the invariants
        // still hold.
        for h in 0..run.handles.len() {
            run.step(h, Op::Finish(200)).await?;
        }
        Ok(())
    })
}

fn run(name: &str, make: MakeStore<'_>) {
    let cases: u32 = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    let seconds: u64 = std::env::var("HANDLES_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let started = Instant::now();
    let mut total = 0u64;
    loop {
        let mut runner = TestRunner::new(Config {
            cases,
            failure_persistence: None,
            max_shrink_iters: 256,
            ..Config::default()
        });
        if let Err(e) = runner.run(&case(), |case| run_case(make, case)) {
            panic!("{name}: {e}");
        }
        total += u64::from(cases);
        if started.elapsed() >= Duration::from_secs(seconds) {
            break;
        }
    }
    eprintln!(
        "{name}: {total} cases in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn memory_store_handles_keep_every_invariant() {
    run("memory", &|| {
        Box::pin(async { ArcStore::new(MemoryStore::new()) })
    });
}

#[test]
fn file_store_handles_keep_every_invariant() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    run("file", &move || {
        let path = path.clone();
        Box::pin(async move {
            ArcStore::new(sessionkit_file::FileStore::new(path).expect("file store"))
        })
    });
}

#[test]
fn redis_store_handles_keep_every_invariant() {
    let server = sessionkit_test_servers::redis::RedisServer::start();
    let url = server.url();
    run("redis", &move || {
        let url = url.clone();
        Box::pin(async move {
            ArcStore::new(
                sessionkit_redis::RedisStore::connect(&url)
                    .await
                    .expect("redis store"),
            )
        })
    });
}

#[test]
fn redis_cluster_store_handles_keep_every_invariant() {
    let cluster = sessionkit_test_servers::redis::RedisCluster::start();
    let urls = cluster.urls();
    run("redis cluster", &move || {
        let urls = urls.clone();
        Box::pin(async move {
            ArcStore::new(
                sessionkit_redis::RedisStore::builder()
                    .connect_cluster(urls)
                    .await
                    .expect("redis cluster store"),
            )
        })
    });
}

#[test]
fn memcached_store_handles_keep_every_invariant() {
    let a = sessionkit_test_servers::memcached::Memcached::start();
    let b = sessionkit_test_servers::memcached::Memcached::start();
    let spec = format!("{},{}", a.addr(), b.addr());
    run("memcached", &move || {
        let spec = spec.clone();
        Box::pin(async move {
            ArcStore::new(
                sessionkit_memcached::MemcachedStore::builder(spec.parse().unwrap())
                    .build()
                    .expect("memcached store"),
            )
        })
    });
}

#[test]
fn postgres_store_handles_keep_every_invariant() {
    let server = support::postgres::PgServer::start();
    let url = server.url();
    run("postgres", &move || {
        let url = url.clone();
        Box::pin(async move {
            let store = sessionkit_sql::PgStore::builder()
                .sweep_interval(None)
                .connect(&url)
                .expect("postgres store");
            store.migrate().await.expect("migrate");
            ArcStore::new(store)
        })
    });
}

#[test]
fn sqlite_store_handles_keep_every_invariant() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("sessions.db").display());
    run("sqlite", &move || {
        let url = url.clone();
        Box::pin(async move {
            let store = sessionkit_sql::SqliteStore::builder()
                .sweep_interval(None)
                .connect(&url)
                .expect("sqlite store");
            store.migrate().await.expect("migrate");
            ArcStore::new(store)
        })
    });
}
