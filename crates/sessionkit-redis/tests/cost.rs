//! What each store operation costs Redis, measured by Redis itself: commands and CPU time per call (`INFO commandstats`), and memory per session (`used_memory`).
//!
//! Ignored by default: it takes about a minute and its timings depend on
//! the machine. Run it on a quiet machine, in release mode:
//!
//! ```text
//! cargo test --release -p sessionkit-redis --test cost -- --ignored --nocapture
//! ```
//!
//! It prints the figures of the crate docs' "Cost" section and asserts what
//! does not depend on the machine: the commands each operation sends, and
//! that a read without a due touch makes Redis run nothing but one `GET`
//! (`INFO commandstats` counts the commands inside scripts too).

use sessionkit_test_servers::redis as support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sessionkit_core::record::{Delta, Meta, Record, Touch, now_ms};
use sessionkit_core::store::{Applied, Created, Fence, IdChanged, Locked, SessionStore};
use sessionkit_core::{LockToken, SessionId};
use sessionkit_redis::RedisStore;
use sessionkit_redis::redis::{self, aio::MultiplexedConnection};
use tokio::task::JoinSet;

use support::RedisServer;

/// Calls per operation in the CPU measurement.
const CALLS: usize = 20_000;
/// Sessions in the memory measurement.
const SESSIONS: usize = 100_000;
/// Operations in flight at once (the connection is multiplexed).
const IN_FLIGHT: usize = 16;

/// `(calls, usec)` per command name, from `INFO commandstats`.
type Stats = BTreeMap<String, (u64, u64)>;

async fn commandstats(conn: &mut MultiplexedConnection) -> Stats {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .unwrap();
    let mut out = Stats::new();
    for line in info.lines() {
        let Some((name, rest)) = line
            .strip_prefix("cmdstat_")
            .and_then(|l| l.split_once(':'))
        else {
            continue;
        };
        let field = |key: &str| -> u64 {
            rest.split(',')
                .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        out.insert(name.to_owned(), (field("calls"), field("usec")));
    }
    // The measurement's own commands.
    for own in ["info", "config|resetstat", "config"] {
        out.remove(own);
    }
    out
}

async fn reset(conn: &mut MultiplexedConnection) {
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(conn)
        .await
        .unwrap();
}

async fn used_memory(conn: &mut MultiplexedConnection) -> i64 {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory in INFO memory")
}

/// A session as the benchmark's: one small integer `n`, default lifetime.
fn small_record(i: usize) -> Record {
    Record {
        entries: [("n", (i % 1000).to_string().into_bytes())]
            .into_iter()
            .collect(),
        meta: Meta::new(now_ms(), Duration::from_secs(120 * 60), None),
    }
}

fn set_n(n: usize) -> Delta {
    let mut delta = Delta::default();
    delta.set("n", n.to_string().into_bytes());
    delta
}

/// Runs `op(i)` for every `i` in `0..n`, `IN_FLIGHT` at a time.
async fn each<F, Fut>(n: usize, op: F)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let mut tasks = JoinSet::new();
    for worker in 0..IN_FLIGHT {
        let op = op.clone();
        tasks.spawn(async move {
            let mut i = worker;
            while i < n {
                op(i).await;
                i += IN_FLIGHT;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
}

/// What the measured operations share.
struct Ctx {
    store: RedisStore,
    ids: Vec<SessionId>,
    new: Vec<SessionId>,
    tokens: std::sync::Mutex<Vec<Option<LockToken>>>,
}

impl Ctx {
    fn token(&self, i: usize) -> LockToken {
        self.tokens.lock().unwrap()[i].expect("locked")
    }
}

/// One row of the report: the commands Redis ran per call, and the CPU
/// time per call of the commands the client sent.
struct Row {
    name: &'static str,
    sent: Vec<&'static str>,
    per_call: BTreeMap<String, f64>,
    usec_per_call: f64,
}

fn row(name: &'static str, stats: &Stats, sent: &[&'static str], calls: usize) -> Row {
    let per_call = stats
        .iter()
        .map(|(k, (c, _))| (k.clone(), *c as f64 / calls as f64))
        .collect();
    let usec: u64 = sent
        .iter()
        .filter_map(|s| stats.get(*s))
        .map(|(_, u)| *u)
        .sum();
    Row {
        name,
        sent: sent.to_vec(),
        per_call,
        usec_per_call: usec as f64 / calls as f64,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: slow, and its timings depend on the machine"]
async fn cost_per_operation_and_memory_per_session() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let mut conn = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let ctx = Arc::new(Ctx {
        store: store.clone(),
        ids: (0..CALLS).map(|_| SessionId::generate()).collect(),
        new: (0..CALLS).map(|_| SessionId::generate()).collect(),
        tokens: std::sync::Mutex::new(vec![None; CALLS]),
    });
    let ttl = Duration::from_secs(30);
    let mut rows = Vec::new();

    // Load every script once (NOSCRIPT + SCRIPT LOAD), outside the counts.
    let warm = SessionId::generate();
    let _ = store.create(&warm, &small_record(0)).await.unwrap();
    let _ = store.load(&warm, Some(Touch::always())).await.unwrap();
    let _ = store.apply(&warm, &set_n(1), None).await.unwrap();
    if let Locked::Acquired { token, .. } = store.lock(&warm, ttl).await.unwrap() {
        store.renew_lock(&warm, &token, ttl).await.unwrap();
        store.unlock(&warm, &token).await.unwrap();
    }
    let warm2 = SessionId::generate();
    let _ = store.change_id(&warm, &warm2, None).await.unwrap();
    store.destroy(&warm2).await.unwrap();

    macro_rules! measure {
        ($name:expr, $sent:expr, |$c:ident, $i:ident| $body:expr) => {{
            reset(&mut conn).await;
            let ctx = ctx.clone();
            each(CALLS, move |$i| {
                let $c = ctx.clone();
                async move { $body }
            })
            .await;
            let stats = commandstats(&mut conn).await;
            rows.push(row($name, &stats, $sent, CALLS));
        }};
    }

    measure!("create", &["set"], |c, i| {
        assert_eq!(
            c.store.create(&c.ids[i], &small_record(i)).await.unwrap(),
            Created::Created
        );
    });
    // The default touch rule (less than 75 % left): not due right after
    // creation.
    let default_touch = Touch::when_remaining_below(0.75).unwrap();
    measure!("load (touch not due)", &["get"], |c, i| {
        let loaded = c
            .store
            .load(&c.ids[i], Some(default_touch))
            .await
            .unwrap()
            .unwrap();
        assert!(!loaded.touched);
    });
    // The touch script reads the session with a GET of its own, which
    // `commandstats` counts with the read's: only the script is checked
    // and timed here (the read's GET is the row above).
    measure!("load (touch due)", &["evalsha"], |c, i| {
        let loaded = c
            .store
            .load(&c.ids[i], Some(Touch::always()))
            .await
            .unwrap()
            .unwrap();
        assert!(loaded.touched);
    });
    measure!("apply", &["evalsha"], |c, i| {
        assert!(matches!(
            c.store.apply(&c.ids[i], &set_n(i + 1), None).await.unwrap(),
            Applied::Applied(_)
        ));
    });
    measure!("lock (acquired)", &["evalsha"], |c, i| {
        assert!(matches!(
            c.store.lock(&c.ids[i], ttl).await.unwrap(),
            Locked::Acquired { .. }
        ));
    });
    measure!("lock (held)", &["evalsha"], |c, i| {
        assert_eq!(c.store.lock(&c.ids[i], ttl).await.unwrap(), Locked::Held);
    });
    measure!("renew_lock (not owner)", &["evalsha"], |c, i| {
        assert!(
            !c.store
                .renew_lock(&c.ids[i], &LockToken::generate(), ttl)
                .await
                .unwrap()
        );
    });
    measure!("unlock (not owner)", &["evalsha"], |c, i| {
        c.store
            .unlock(&c.ids[i], &LockToken::generate())
            .await
            .unwrap();
    });
    // Unfenced: drops the old lock, so the new ids are free to lock.
    measure!("change_id", &["evalsha"], |c, i| {
        assert!(matches!(
            c.store.change_id(&c.ids[i], &c.new[i], None).await.unwrap(),
            IdChanged::Changed(_)
        ));
    });
    {
        let ctx = ctx.clone();
        each(CALLS, move |i| {
            let c = ctx.clone();
            async move {
                let Locked::Acquired { token, .. } = c.store.lock(&c.new[i], ttl).await.unwrap()
                else {
                    panic!("lock")
                };
                c.tokens.lock().unwrap()[i] = Some(token);
            }
        })
        .await;
    }
    measure!("renew_lock", &["evalsha"], |c, i| {
        assert!(
            c.store
                .renew_lock(&c.new[i], &c.token(i), ttl)
                .await
                .unwrap()
        );
    });
    measure!("apply (fenced)", &["evalsha"], |c, i| {
        let token = c.token(i);
        let fence = Fence {
            token: &token,
            release: false,
        };
        assert!(matches!(
            c.store
                .apply(&c.new[i], &set_n(i), Some(fence))
                .await
                .unwrap(),
            Applied::Applied(_)
        ));
    });
    measure!("unlock", &["evalsha"], |c, i| {
        c.store.unlock(&c.new[i], &c.token(i)).await.unwrap();
    });
    measure!("destroy", &["del"], |c, i| {
        c.store.destroy(&c.new[i]).await.unwrap();
    });

    let mut report = format!(
        "\nRedis cost per store operation ({CALLS} calls each, {IN_FLIGHT} in flight):\n  {:<24} {:>10}  commands Redis ran per call\n",
        "operation", "usec/call"
    );
    for r in &rows {
        let commands: Vec<String> = r
            .per_call
            .iter()
            .map(|(k, v)| format!("{k} {v:.2}"))
            .collect();
        report.push_str(&format!(
            "  {:<24} {:>10.2}  {}\n",
            r.name,
            r.usec_per_call,
            commands.join(", ")
        ));
    }

    // Memory: SESSIONS small sessions created through the store.
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    let before = used_memory(&mut conn).await;
    let mem_ids: Arc<Vec<SessionId>> =
        Arc::new((0..SESSIONS).map(|_| SessionId::generate()).collect());
    {
        let (s, ids) = (store.clone(), mem_ids.clone());
        each(SESSIONS, move |i| {
            let (s, ids) = (s.clone(), ids.clone());
            async move {
                assert_eq!(
                    s.create(&ids[i], &small_record(i)).await.unwrap(),
                    Created::Created
                );
            }
        })
        .await;
    }
    let after = used_memory(&mut conn).await;
    let per_session = (after - before) as f64 / SESSIONS as f64;
    let (data, _) = store.keys_of(&mem_ids[0]);
    let usage: i64 = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(&data)
        .arg("SAMPLES")
        .arg(0)
        .query_async(&mut conn)
        .await
        .unwrap();
    report.push_str(&format!(
        "memory: {per_session:.1} B per session (used_memory over {SESSIONS} sessions holding `n`); MEMORY USAGE of one: {usage} B; key {} B\n",
        data.len()
    ));
    eprintln!("{report}");

    for r in &rows {
        for sent in &r.sent {
            assert_eq!(
                r.per_call.get(*sent),
                Some(&1.0),
                "{}: one {sent} per call{report}",
                r.name
            );
        }
    }
    let read = &rows[1];
    assert_eq!(read.name, "load (touch not due)");
    assert_eq!(
        read.per_call.keys().collect::<Vec<_>>(),
        ["get"],
        "a read without a due touch is one GET and nothing else{report}"
    );
}
