//! The store conformance suite: the [store contract](crate::store) in
//! executable form.
//!
//! Every store runs the same tests — lifecycle, strictness, idle and absolute
//! expiry, the touch rule, per-key delta merges, no resurrection, lock
//! exclusion, lock expiry, renewal, fencing, `change_id`, and many tasks at
//! once. A store is done when it passes all of them.
//!
//! # Running it
//!
//! The [`conformance_tests!`](crate::conformance_tests) macro writes one
//! `#[test]` per contract test in a module of your test file, so each shows
//! (and fails) on its own line of the test output:
//!
//! ```no_run
//! // tests/conformance.rs of a store crate
//! sessionkit_core::conformance_tests!(memory, sessionkit_core::store::MemoryStore::new());
//! # fn main() {}
//! ```
//!
//! The store expression is evaluated inside the test's Tokio runtime and may
//! `.await` (to connect to a server, say). Pass timing knobs with
//! `config = ...` and run a subset with `tests = [...]`:
//!
//! ```no_run
//! use std::time::Duration;
//! use sessionkit_core::store::MemoryStore;
//! use sessionkit_core::testkit::SuiteConfig;
//!
//! sessionkit_core::conformance_tests!(
//!     coarse_clock,
//!     MemoryStore::new(),
//!     config = SuiteConfig::default().with_short_lock_ttl(Duration::from_secs(1)),
//!     tests = [expired_lock_is_free, renew_extends_only_for_the_owner],
//! );
//! # fn main() {}
//! ```
//!
//! Alternatively [`run_all`] runs the whole suite from one test, as
//! concurrently as the timing allows, and reports every failing test by
//! name; and every test is a public `async fn` of this module, taking the
//! store and a [`SuiteConfig`], for stores that run a subset by hand:
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() {
//! use sessionkit_core::store::MemoryStore;
//! use sessionkit_core::testkit::{self, SuiteConfig};
//!
//! let store = MemoryStore::new();
//! let config = SuiteConfig::default();
//! testkit::unknown_id_is_absent(&store, &config).await;
//! testkit::apply_merges_per_key(&store, &config).await;
//! // or everything: testkit::run_all(&store, &config).await;
//! # }
//! ```
//!
//! # What the suite assumes of the store
//!
//! - **Nothing about its contents.** Every test works on fresh
//!   [`SessionId::generate`](crate::SessionId::generate) ids and never
//!   assumes an empty store, so it can run against a shared Redis or
//!   memcached server, and tests can run concurrently on one store. Tests
//!   destroy the sessions they created when they pass (those of a failed test
//!   expire after [`SuiteConfig::lifetime`]).
//! - **Only the public contract.** Nothing inspects the store's internals;
//!   everything is observed through [`SessionStore`] calls.
//! - **Clones share state.** Concurrency tests clone the store into spawned
//!   tasks (`S: Clone`); every clone must see the same sessions. Wrap a store
//!   that is not `Clone` in [`ArcStore`](crate::store::ArcStore).
//! - **Real time.** The expiry tests sleep for real, so the store's clock and
//!   Tokio's timer must both run: don't pause Tokio's clock. Run on a
//!   multi-thread runtime so that concurrency tests race for real.
//!
//! # Timing
//!
//! The slow tests wait for sessions and locks to expire. [`SuiteConfig`] sets
//! how long: a short idle lifetime (default 1.5 s), a short lock TTL
//! (default 300 ms) and a slack (default 1.1 s) that the suite waits beyond
//! each expiry before asserting that something expired, so that stores with
//! one-second expiry granularity (memcached) pass. Presence is asserted well
//! before any expiry. A store with a coarser clock raises the slack or the
//! short lock TTL; an in-process store may lower them to run faster.
//!
//! # The tests
//!
//! | test | asserts |
//! |---|---|
//! | [`create_then_load_returns_the_record`] | create, then load returns entries and metadata exactly |
//! | [`create_never_overwrites_a_live_session`] | `IdTaken` on a live id; one winner among racing creates |
//! | [`destroy_deletes_and_absent_is_ok`] | destroy deletes one session; absent ids are fine |
//! | [`unknown_id_is_absent`] | strictness: never-issued ids are absent for every operation |
//! | [`destroyed_session_stays_gone`] | no resurrection, also under racing applies |
//! | [`idle_expiry_removes_the_session`] | idle expiry, for every operation; `set_ttl` governs it |
//! | [`touch_keeps_a_session_alive`] | touched sessions slide; `touched` reports it |
//! | [`touch_waits_for_the_threshold`] | a touch happens only below the share |
//! | [`absolute_deadline_is_never_extended`] | nothing passes the absolute deadline; `cap_deadline` sets one |
//! | [`apply_merges_per_key`] | deltas merge per key, sequential and concurrent; clear |
//! | [`apply_sets_ttl_and_refreshes_expiry`] | apply refreshes expiry; `set_ttl`/`reset_ttl` set the lifetime |
//! | [`concurrent_deltas_all_persist`] | many concurrent writers lose nothing |
//! | [`lock_is_exclusive`] | one owner at a time; unlock is compare-and-delete |
//! | [`expired_lock_is_free`] | locks expire after their TTL |
//! | [`renew_extends_only_for_the_owner`] | renewal is compare-and-set |
//! | [`locking_keeps_a_session_alive`] | lock and renewal refresh the idle expiry |
//! | [`fenced_apply_requires_the_lock`] | fenced writes need the unexpired lock |
//! | [`fenced_release_commits_and_unlocks`] | commit + unlock in one step |
//! | [`apply_and_read_keeps_the_lock`] | commit + read, keeping the lock, to hand it on |
//! | [`destroy_removes_the_lock`] | destroy takes the lock with it |
//! | [`change_id_moves_the_session`] | change_id moves data and refreshes expiry |
//! | [`change_id_never_overwrites`] | `IdTaken` on a live target |
//! | [`fenced_change_id_moves_the_lock`] | the lock moves with the session, same token and expiry |
//! | [`fenced_change_id_requires_the_lock`] | fenced moves need the unexpired lock |
//! | [`locked_increments_are_never_lost`] | many tasks × locked read-modify-write = exact count |
//!
//! Every `change_id` target in the suite comes from
//! [`SessionStore::new_id_for`],
//! as in the session handle, so a store that moves sessions only between
//! ids it picks (Redis Cluster: one hash slot) runs the same tests.
//!
//! # Stores that forget
//!
//! A store that keeps nothing, such as [`NoopStore`](crate::store::NoopStore),
//! cannot pass the tests that read back what was written. Two tests hold for
//! it and it should run them: [`unknown_id_is_absent`] (unknown ids load as
//! `None`, destroying an absent id is fine, `apply` answers `Gone`, `lock`
//! answers `Absent`) and [`destroyed_session_stays_gone`] (no write brings a
//! destroyed session back). They are listed in [`FORGETFUL_TESTS`].
//!
//! # Counting round trips
//!
//! [`CountingStore`] wraps a store and counts its calls per operation
//! ([`Calls`]), for tests that check how many round trips a request costs.

use std::time::Duration;

use crate::store::SessionStore;

mod change_id;
mod counting;
mod deltas;
mod expiry;
pub mod fixtures;
mod guarded;
mod locks;
pub mod owners;
mod records;
mod support;

pub use change_id::{
    change_id_moves_the_session, change_id_never_overwrites, fenced_change_id_moves_the_lock,
    fenced_change_id_requires_the_lock,
};
pub use counting::{Calls, CountingStore};
pub use deltas::{
    apply_merges_per_key, apply_sets_ttl_and_refreshes_expiry, concurrent_deltas_all_persist,
};
pub use expiry::{
    absolute_deadline_is_never_extended, idle_expiry_removes_the_session,
    touch_keeps_a_session_alive, touch_waits_for_the_threshold,
};
pub use guarded::Guarded;
pub use locks::{
    apply_and_read_keeps_the_lock, destroy_removes_the_lock, expired_lock_is_free,
    fenced_apply_requires_the_lock, fenced_release_commits_and_unlocks, lock_is_exclusive,
    locked_increments_are_never_lost, locking_keeps_a_session_alive,
    renew_extends_only_for_the_owner,
};
pub use records::{
    create_never_overwrites_a_live_session, create_then_load_returns_the_record,
    destroy_deletes_and_absent_is_ok, destroyed_session_stays_gone, unknown_id_is_absent,
};

/// The names of every test of the suite, in the order of the table in the
/// [module docs](self).
pub const ALL_TESTS: &[&str] = &[
    "create_then_load_returns_the_record",
    "create_never_overwrites_a_live_session",
    "destroy_deletes_and_absent_is_ok",
    "unknown_id_is_absent",
    "destroyed_session_stays_gone",
    "idle_expiry_removes_the_session",
    "touch_keeps_a_session_alive",
    "touch_waits_for_the_threshold",
    "absolute_deadline_is_never_extended",
    "apply_merges_per_key",
    "apply_sets_ttl_and_refreshes_expiry",
    "concurrent_deltas_all_persist",
    "lock_is_exclusive",
    "expired_lock_is_free",
    "renew_extends_only_for_the_owner",
    "locking_keeps_a_session_alive",
    "fenced_apply_requires_the_lock",
    "fenced_release_commits_and_unlocks",
    "apply_and_read_keeps_the_lock",
    "destroy_removes_the_lock",
    "change_id_moves_the_session",
    "change_id_never_overwrites",
    "fenced_change_id_moves_the_lock",
    "fenced_change_id_requires_the_lock",
    "locked_increments_are_never_lost",
];

/// The tests that hold for a store that forgets everything it is given,
/// such as [`NoopStore`](crate::store::NoopStore).
pub const FORGETFUL_TESTS: &[&str] = &["unknown_id_is_absent", "destroyed_session_stays_gone"];

/// Timing and load knobs of the suite.
///
/// The defaults suit every store, including memcached with its one-second
/// expiry granularity; the whole suite then takes a few seconds when run
/// with [`run_all`]. Change them with the `with_*` methods:
///
/// ```
/// use std::time::Duration;
/// use sessionkit_core::testkit::SuiteConfig;
///
/// // An in-process store with a millisecond clock can be tested faster.
/// let fast = SuiteConfig::default()
///     .with_short_lifetime(Duration::from_millis(300))
///     .with_slack(Duration::from_millis(100));
/// assert_eq!(fast.slack, Duration::from_millis(100));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SuiteConfig {
    /// Idle (and absolute) lifetime of the sessions in the expiry tests.
    /// Default 1.5 s. Presence is asserted before 70 % of it has passed.
    pub short_lifetime: Duration,
    /// TTL of the locks in the lock expiry tests. Default 300 ms.
    pub short_lock_ttl: Duration,
    /// How long past an expiry the suite waits before asserting that a
    /// session or lock is gone: the store's expiry granularity plus clock
    /// jitter. Default 1.1 s.
    pub slack: Duration,
    /// Idle lifetime of the sessions that must outlive their test. Default
    /// 10 minutes; must be at least four times `short_lifetime + slack`.
    pub lifetime: Duration,
    /// TTL of the locks that must outlive their use. Default 30 s; must be
    /// at least four times `short_lock_ttl + slack`. Also the longest a task
    /// of the concurrency test waits for a lock.
    pub lock_ttl: Duration,
    /// Concurrent tasks in the concurrency tests (twice as many write in
    /// [`concurrent_deltas_all_persist`]). Default 16.
    pub tasks: usize,
    /// Locked increments per task in [`locked_increments_are_never_lost`].
    /// Default 25.
    pub iterations: usize,
    /// How long one test may run before [`run_all`] or
    /// [`conformance_tests!`](crate::conformance_tests) fails it as hung.
    /// Default 60 s.
    pub timeout: Duration,
}

impl Default for SuiteConfig {
    fn default() -> Self {
        SuiteConfig {
            short_lifetime: Duration::from_millis(1500),
            short_lock_ttl: Duration::from_millis(300),
            slack: Duration::from_millis(1100),
            lifetime: Duration::from_secs(600),
            lock_ttl: Duration::from_secs(30),
            tasks: 16,
            iterations: 25,
            timeout: Duration::from_secs(60),
        }
    }
}

impl SuiteConfig {
    /// The timings for a store that expires to the millisecond by one clock
    /// (Redis's, the database's): a short lifetime of 1 s, a short lock TTL
    /// of 250 ms and a slack of 300 ms, so the expiry tests wait far less
    /// than the defaults, which leave room for memcached's whole seconds.
    ///
    /// ```
    /// use std::time::Duration;
    /// use sessionkit_core::testkit::SuiteConfig;
    ///
    /// let config = SuiteConfig::millisecond_clock();
    /// assert_eq!(config.slack, Duration::from_millis(300));
    /// ```
    pub fn millisecond_clock() -> Self {
        SuiteConfig::default()
            .with_short_lifetime(Duration::from_millis(1000))
            .with_short_lock_ttl(Duration::from_millis(250))
            .with_slack(Duration::from_millis(300))
    }

    /// Sets [`SuiteConfig::short_lifetime`].
    pub fn with_short_lifetime(mut self, lifetime: Duration) -> Self {
        self.short_lifetime = lifetime;
        self
    }

    /// Sets [`SuiteConfig::short_lock_ttl`].
    pub fn with_short_lock_ttl(mut self, ttl: Duration) -> Self {
        self.short_lock_ttl = ttl;
        self
    }

    /// Sets [`SuiteConfig::slack`].
    pub fn with_slack(mut self, slack: Duration) -> Self {
        self.slack = slack;
        self
    }

    /// Sets [`SuiteConfig::lifetime`].
    pub fn with_lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// Sets [`SuiteConfig::lock_ttl`].
    pub fn with_lock_ttl(mut self, ttl: Duration) -> Self {
        self.lock_ttl = ttl;
        self
    }

    /// Sets [`SuiteConfig::tasks`] and [`SuiteConfig::iterations`].
    pub fn with_load(mut self, tasks: usize, iterations: usize) -> Self {
        self.tasks = tasks;
        self.iterations = iterations;
        self
    }

    /// Sets [`SuiteConfig::timeout`].
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// Spawns the named tests, each on its own task with its own clone of the
/// store, under the config's timeout.
macro_rules! spawn_tests {
    ($store:expr, $config:expr; $($test:ident),+ $(,)?) => {
        vec![$({
            let store = $store.clone();
            let config = $config.clone();
            (
                stringify!($test),
                tokio::spawn(async move {
                    tokio::time::timeout(config.timeout, $test(&store, &config)).await
                }),
            )
        }),+]
    };
}

/// Runs the whole suite against `store` and panics, naming every failing
/// test with its message, unless all pass.
///
/// The tests run on spawned tasks, all sharing `store` (each with a clone):
/// first the untimed ones, concurrently, then the timed ones (which mostly
/// sleep), concurrently too, so the suite takes little more than its
/// slowest test; with the default [`SuiteConfig`] about three seconds plus
/// the store's round trips. Call it from a multi-thread runtime:
///
/// ```no_run
/// use sessionkit_core::store::MemoryStore;
/// use sessionkit_core::testkit::{run_all, SuiteConfig};
///
/// #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// async fn memory_store_keeps_the_contract() {
///     run_all(&MemoryStore::new(), &SuiteConfig::default()).await;
/// }
/// # fn main() {}
/// ```
pub async fn run_all<S: SessionStore + Clone>(store: &S, config: &SuiteConfig) {
    let untimed = spawn_tests!(store, config;
        create_then_load_returns_the_record,
        create_never_overwrites_a_live_session,
        destroy_deletes_and_absent_is_ok,
        unknown_id_is_absent,
        destroyed_session_stays_gone,
        apply_merges_per_key,
        apply_sets_ttl_and_refreshes_expiry,
        concurrent_deltas_all_persist,
        lock_is_exclusive,
        fenced_release_commits_and_unlocks,
        apply_and_read_keeps_the_lock,
        destroy_removes_the_lock,
        change_id_moves_the_session,
        change_id_never_overwrites,
        locked_increments_are_never_lost,
    );
    let mut failures = collect(untimed, config).await;
    // Timed tests start once the busy ones are done, so a loaded runtime
    // cannot delay their assertions of presence past an expiry.
    let timed = spawn_tests!(store, config;
        idle_expiry_removes_the_session,
        touch_keeps_a_session_alive,
        touch_waits_for_the_threshold,
        absolute_deadline_is_never_extended,
        expired_lock_is_free,
        renew_extends_only_for_the_owner,
        locking_keeps_a_session_alive,
        fenced_apply_requires_the_lock,
        fenced_change_id_moves_the_lock,
        fenced_change_id_requires_the_lock,
    );
    failures.extend(collect(timed, config).await);

    if !failures.is_empty() {
        let mut report = format!(
            "{} of {} conformance tests failed on store `{}`:",
            failures.len(),
            ALL_TESTS.len(),
            store.name()
        );
        for (name, message) in &failures {
            report.push_str(&format!(
                "\n  - {name}: {}",
                message.replace('\n', "\n    ")
            ));
        }
        panic!("{report}");
    }
}

type Running = Vec<(
    &'static str,
    tokio::task::JoinHandle<Result<(), tokio::time::error::Elapsed>>,
)>;

async fn collect(running: Running, config: &SuiteConfig) -> Vec<(&'static str, String)> {
    let mut failures = Vec::new();
    for (name, handle) in running {
        match handle.await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                failures.push((name, format!("did not finish within {:?}", config.timeout)))
            }
            Err(err) if err.is_panic() => {
                failures.push((name, support::panic_message(&*err.into_panic())));
            }
            Err(err) => failures.push((name, format!("cancelled: {err}"))),
        }
    }
    failures
}

/// Writes one `#[test]` per conformance test, in a module.
///
/// ```text
/// conformance_tests!(module_name, store_expression);
/// conformance_tests!(module_name, store_expression, config = suite_config_expression);
/// conformance_tests!(module_name, store_expression, tests = [test_name, ...]);
/// conformance_tests!(module_name, store_expression, config = ..., tests = [...]);
/// ```
///
/// Each test builds a fresh multi-thread Tokio runtime with two workers (as
/// `#[tokio::test(flavor = "multi_thread", worker_threads = 2)]` would, but
/// without needing `tokio` in your dev-dependencies), evaluates the store
/// expression in it (it may `.await`), and runs the
/// [test of the same name](crate::testkit) under
/// [`SuiteConfig::timeout`](crate::testkit::SuiteConfig::timeout). The module
/// imports the enclosing one (`use super::*`), so the expressions may use its
/// names. Test names are those of [`ALL_TESTS`](crate::testkit::ALL_TESTS).
///
/// ```no_run
/// use sessionkit_core::store::NoopStore;
///
/// // A store that forgets runs the tests that hold for it.
/// sessionkit_core::conformance_tests!(
///     noop,
///     NoopStore,
///     tests = [unknown_id_is_absent, destroyed_session_stays_gone],
/// );
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($name:ident, $store:expr $(,)?) => {
        $crate::conformance_tests!(
            $name,
            $store,
            config = $crate::testkit::SuiteConfig::default()
        );
    };
    ($name:ident, $store:expr, tests = [$($test:ident),+ $(,)?] $(,)?) => {
        $crate::conformance_tests!(
            $name,
            $store,
            config = $crate::testkit::SuiteConfig::default(),
            tests = [$($test),+]
        );
    };
    ($name:ident, $store:expr, config = $config:expr $(,)?) => {
        $crate::conformance_tests!(
            $name,
            $store,
            config = $config,
            tests = [
                create_then_load_returns_the_record,
                create_never_overwrites_a_live_session,
                destroy_deletes_and_absent_is_ok,
                unknown_id_is_absent,
                destroyed_session_stays_gone,
                idle_expiry_removes_the_session,
                touch_keeps_a_session_alive,
                touch_waits_for_the_threshold,
                absolute_deadline_is_never_extended,
                apply_merges_per_key,
                apply_sets_ttl_and_refreshes_expiry,
                concurrent_deltas_all_persist,
                lock_is_exclusive,
                expired_lock_is_free,
                renew_extends_only_for_the_owner,
                locking_keeps_a_session_alive,
                fenced_apply_requires_the_lock,
                fenced_release_commits_and_unlocks,
                apply_and_read_keeps_the_lock,
                destroy_removes_the_lock,
                change_id_moves_the_session,
                change_id_never_overwrites,
                fenced_change_id_moves_the_lock,
                fenced_change_id_requires_the_lock,
                locked_increments_are_never_lost,
            ]
        );
    };
    ($name:ident, $store:expr, config = $config:expr, tests = [$($test:ident),+ $(,)?] $(,)?) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            $(
                #[test]
                fn $test() {
                    $crate::testkit::__private::block_on(async {
                        let store = $store;
                        let config: $crate::testkit::SuiteConfig = $config;
                        $crate::testkit::__private::within(
                            stringify!($test),
                            config.timeout,
                            $crate::testkit::$test(&store, &config),
                        )
                        .await;
                    });
                }
            )+
        }
    };
}

/// Support for [`conformance_tests!`](crate::conformance_tests); not a
/// public API.
#[doc(hidden)]
pub mod __private {
    use std::future::Future;
    use std::time::Duration;

    /// Runs `future` to completion on a fresh multi-thread runtime with two
    /// workers.
    pub fn block_on<F: Future<Output = ()>>(future: F) {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("could not build a Tokio runtime for the conformance test")
            .block_on(future);
    }

    /// Runs `test`, failing it when it takes longer than `timeout`.
    pub async fn within<F: Future<Output = ()>>(name: &str, timeout: Duration, test: F) {
        if tokio::time::timeout(timeout, test).await.is_err() {
            panic!("conformance test {name} did not finish within {timeout:?}");
        }
    }
}
