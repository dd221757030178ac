//! `RedisStore` on one `redis-server`: the conformance suite, round trips counted by the server, the data layout, ids at rest, prefixes and corrupt data.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use sessionkit_core::record::{Delta, Entries, Meta, Record, Touch, now_ms};
use sessionkit_core::store::{Applied, Created, Fence, IdChanged, Locked, SessionStore};
use sessionkit_core::testkit::SuiteConfig;
use sessionkit_core::{LockToken, SessionId};
use sessionkit_redis::RedisStore;
use sessionkit_redis::redis::{self, aio::MultiplexedConnection};

use support::RedisServer;

/// Redis expires keys to the millisecond and the scripts read its clock, so
/// the expiry tests can wait less than the memcached-safe defaults (slack
/// 1.1 s). The short lifetime stays long enough that the presence checks
/// (at 30 % of it, before the 50 % touch threshold) keep 200 ms of headroom
/// on a busy two-core machine.
fn timing() -> SuiteConfig {
    SuiteConfig::default()
        .with_short_lifetime(Duration::from_millis(1000))
        .with_short_lock_ttl(Duration::from_millis(250))
        .with_slack(Duration::from_millis(300))
}

/// A store on the server shared by this test binary.
async fn store() -> RedisStore {
    RedisStore::connect(&support::shared().url())
        .await
        .expect("connect to the shared redis-server")
}

/// A store with a prefix of its own, so a test can scan just its keys.
async fn store_with_prefix(prefix: &str) -> RedisStore {
    RedisStore::builder()
        .prefix(prefix)
        .connect(&support::shared().url())
        .await
        .expect("connect to the shared redis-server")
}

/// A plain connection for looking at what the store wrote.
async fn raw(url: &str) -> MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("raw connection")
}

fn unique_prefix(name: &str) -> String {
    format!("test-{name}-{}:", &SessionId::generate().short_hash())
}

fn record(pairs: &[(&str, &[u8])], lifetime: Duration) -> Record {
    Record {
        entries: pairs.iter().map(|(k, v)| (*k, v.to_vec())).collect(),
        meta: Meta::new(now_ms(), lifetime, None),
    }
}

fn set(key: &str, value: &[u8]) -> Delta {
    let mut delta = Delta::default();
    delta.set(key, value.to_vec());
    delta
}

// The whole contract, one test per line of the output.
sessionkit_core::conformance_tests!(conformance, store().await, config = timing());

/// Runs one store operation and returns its result with the commands that
/// clients sent the server meanwhile (see `support::Monitor`).
macro_rules! counted {
    ($monitor:expr, $op:expr) => {{
        let start = $monitor.mark();
        let result = $op.await.expect("store operation");
        let commands = $monitor.since(start);
        (result, support::tally(commands.iter().map(String::as_str)))
    }};
}

fn one(command: &str) -> BTreeMap<String, u64> {
    BTreeMap::from([(command.to_owned(), 1)])
}

/// Every store operation is exactly one command at the server, as the
/// server's `MONITOR` shows (commands run inside scripts excluded). Runs on
/// a server of its own, so that no other client adds to the counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_is_one_round_trip() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let monitor = server.monitor();
    let lifetime = Duration::from_secs(60);
    let ttl = Duration::from_secs(30);

    // Warm up: the first run of each script answers NOSCRIPT and loads it.
    // Run the whole sequence twice; measure the second.
    let mut table = Vec::new();
    let mut first_use = Vec::new();
    for round in 0..2 {
        let mut row = |name: &'static str, commands: BTreeMap<String, u64>| {
            if round == 1 {
                table.push((name, commands));
            } else {
                first_use.push((name, commands));
            }
        };
        let id = SessionId::generate();
        let (created, c) = counted!(
            monitor,
            store.create(&id, &record(&[("n", b"1")], lifetime))
        );
        assert_eq!(created, Created::Created);
        row("create", c);

        let (loaded, c) = counted!(monitor, store.load(&id, None));
        assert!(loaded.is_some());
        row("load", c);

        let (loaded, c) = counted!(monitor, store.load(&id, Some(Touch::always())));
        assert!(loaded.unwrap().touched, "Touch::always must touch");
        row("load + touch (due)", c);

        let not_due = Touch::when_remaining_below(0.01).unwrap();
        let (loaded, c) = counted!(monitor, store.load(&id, Some(not_due)));
        assert!(!loaded.unwrap().touched);
        row("load + touch (not due)", c);

        let (applied, c) = counted!(monitor, store.apply(&id, &set("a", b"2"), None));
        assert!(matches!(applied, Applied::Applied(_)));
        row("apply", c);

        let (locked, c) = counted!(monitor, store.lock(&id, ttl));
        let Locked::Acquired { token, .. } = locked else {
            panic!("lock: {locked:?}")
        };
        row("lock (acquired, record read)", c);

        let (held, c) = counted!(monitor, store.lock(&id, ttl));
        assert_eq!(held, Locked::Held);
        row("lock (held)", c);

        let (renewed, c) = counted!(monitor, store.renew_lock(&id, &token, ttl));
        assert!(renewed);
        row("renew_lock", c);

        let fence = Fence {
            token: &token,
            release: false,
        };
        let (applied, c) = counted!(monitor, store.apply(&id, &set("b", b"3"), Some(fence)));
        assert!(matches!(applied, Applied::Applied(_)));
        row("apply (fenced)", c);

        let fence = Fence {
            token: &token,
            release: true,
        };
        let (applied, c) = counted!(monitor, store.apply(&id, &set("c", b"4"), Some(fence)));
        assert!(matches!(applied, Applied::Applied(_)));
        row("apply (fenced + release)", c);

        let (locked, _) = counted!(monitor, store.lock(&id, ttl));
        let Locked::Acquired { token, .. } = locked else {
            panic!("lock after release: {locked:?}")
        };
        let ((), c) = counted!(monitor, store.unlock(&id, &token));
        row("unlock", c);

        let new = SessionId::generate();
        let (changed, c) = counted!(monitor, store.change_id(&id, &new, None));
        assert!(matches!(changed, IdChanged::Changed(_)));
        row("change_id", c);

        let (locked, _) = counted!(monitor, store.lock(&new, ttl));
        let Locked::Acquired { token, .. } = locked else {
            panic!("lock: {locked:?}")
        };
        let newer = SessionId::generate();
        let (changed, c) = counted!(monitor, store.change_id(&new, &newer, Some(&token)));
        assert!(matches!(changed, IdChanged::Changed(_)));
        row("change_id (fenced, lock moves)", c);

        let ((), c) = counted!(monitor, store.destroy(&newer));
        row("destroy", c);

        let (absent, c) = counted!(monitor, store.load(&newer, Some(Touch::always())));
        assert!(absent.is_none());
        row("load (absent)", c);
    }

    let mut report = String::from("\nround trips per store operation (standalone):\n");
    for (name, commands) in &table {
        report.push_str(&format!("  {name:<32} {commands:?}\n"));
    }
    // Not asserted: the first run of each script after Redis started costs
    // NOSCRIPT + SCRIPT LOAD on top, once per script.
    let mut cold = String::from("first use of each script (cold script cache):\n");
    for (name, commands) in &first_use {
        cold.push_str(&format!("  {name:<32} {commands:?}\n"));
    }
    eprintln!("{report}{cold}");
    for (name, commands) in table {
        let expected = if name == "destroy" {
            one("del")
        } else {
            one("evalsha")
        };
        assert_eq!(
            commands, expected,
            "{name} must be exactly one command at the server{report}"
        );
    }
}

/// The documented layout: a hash of the session's entries (key as is, value
/// as given) plus metadata fields named `\xff…`, native expiry at
/// `expires`; the lock a string holding the token's hex, expiring with its
/// TTL; both keys `{prefix}{<sha-256 base64url>}` and `…:lock`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_layout_is_as_documented() {
    let prefix = unique_prefix("layout");
    let store = store_with_prefix(&prefix).await;
    let mut conn = raw(&support::shared().url()).await;
    let id = SessionId::generate();
    let created = now_ms();
    let record = Record {
        entries: [("user", &b"\"ada\""[..]), ("n", b"1")]
            .into_iter()
            .map(|(k, v)| (k, v.to_vec()))
            .collect::<Entries>(),
        meta: Meta::new(
            created,
            Duration::from_secs(60),
            Some(Duration::from_secs(3600)),
        ),
    };
    assert_eq!(store.create(&id, &record).await.unwrap(), Created::Created);

    let tag = URL_SAFE_NO_PAD.encode(id.hashed());
    assert_eq!(tag.len(), 43);
    let data_key = format!("{prefix}{{{tag}}}");
    let (data, lock) = store.keys_of(&id);
    assert_eq!(data, data_key);
    assert_eq!(lock, format!("{data_key}:lock"));

    let kind: String = redis::cmd("TYPE")
        .arg(&data)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(kind, "hash");
    let fields: BTreeMap<Vec<u8>, Vec<u8>> = redis::cmd("HGETALL")
        .arg(&data)
        .query_async(&mut conn)
        .await
        .unwrap();
    let expected: BTreeMap<Vec<u8>, Vec<u8>> = [
        (&b"user"[..], &b"\"ada\""[..]),
        (b"n", b"1"),
        (b"\xffversion", b"1"),
        (b"\xffcreated", created.to_string().as_bytes()),
        (b"\xffttl", b"60000"),
        (
            b"\xffdeadline",
            (created + 3_600_000).to_string().as_bytes(),
        ),
        (b"\xffexpires", (created + 60_000).to_string().as_bytes()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_vec(), v.to_vec()))
    .collect();
    assert_eq!(fields, expected);
    let pttl: i64 = redis::cmd("PTTL")
        .arg(&data)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        (50_000..=60_000).contains(&pttl),
        "native expiry must follow meta.expires, PTTL = {pttl}"
    );

    let Locked::Acquired { token, .. } = store.lock(&id, Duration::from_secs(20)).await.unwrap()
    else {
        panic!("lock")
    };
    let owner: String = redis::cmd("GET")
        .arg(&lock)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(owner, token.to_hex());
    let pttl: i64 = redis::cmd("PTTL")
        .arg(&lock)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((15_000..=20_000).contains(&pttl), "lock PTTL = {pttl}");

    // A delta changes only its fields.
    let mut delta = Delta::default();
    delta.remove("n");
    delta.set("basket", b"[]".to_vec());
    let Applied::Applied(_) = store
        .apply(
            &id,
            &delta,
            Some(Fence {
                token: &token,
                release: true,
            }),
        )
        .await
        .unwrap()
    else {
        panic!("apply")
    };
    let names: Vec<Vec<u8>> = redis::cmd("HKEYS")
        .arg(&data)
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut users: Vec<&[u8]> = names
        .iter()
        .map(Vec::as_slice)
        .filter(|n| n.first() != Some(&0xff))
        .collect();
    users.sort();
    assert_eq!(users, [&b"basket"[..], b"user"]);
    let exists: i64 = redis::cmd("EXISTS")
        .arg(&lock)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(exists, 0, "a fenced apply with release deletes the lock");

    store.destroy(&id).await.unwrap();
    let exists: i64 = redis::cmd("EXISTS")
        .arg(&data)
        .arg(&lock)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(exists, 0);
}

/// Every key and every value on the server, as bytes.
async fn dump_everything(conn: &mut MultiplexedConnection) -> Vec<Vec<u8>> {
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query_async(conn).await.unwrap();
    let mut out = Vec::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(conn)
            .await
            .unwrap();
        match kind.as_str() {
            "hash" => {
                let all: Vec<Vec<u8>> = redis::cmd("HGETALL")
                    .arg(&key)
                    .query_async(conn)
                    .await
                    .unwrap();
                out.extend(all);
            }
            "string" => {
                let value: Option<Vec<u8>> =
                    redis::cmd("GET").arg(&key).query_async(conn).await.unwrap();
                out.extend(value);
            }
            // Gone meanwhile (another test), or not ours.
            _ => {}
        }
        out.push(key);
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Exercises every operation on a few sessions and returns their ids (the
/// moved-away and destroyed ones too).
async fn exercise(store: &RedisStore) -> Vec<SessionId> {
    let mut ids = Vec::new();
    for _ in 0..3 {
        let id = SessionId::generate();
        ids.push(id);
        let _ = store
            .create(&id, &record(&[("k", b"v")], Duration::from_secs(60)))
            .await
            .unwrap();
        let _ = store.load(&id, Some(Touch::always())).await.unwrap();
        let _ = store.apply(&id, &set("n", b"1"), None).await.unwrap();
        let Locked::Acquired { token, .. } =
            store.lock(&id, Duration::from_secs(30)).await.unwrap()
        else {
            panic!("lock")
        };
        assert!(
            store
                .renew_lock(&id, &token, Duration::from_secs(30))
                .await
                .unwrap()
        );
        let new = SessionId::generate();
        ids.push(new);
        let _ = store.change_id(&id, &new, Some(&token)).await.unwrap();
        let _ = store
            .apply(
                &new,
                &set("m", b"2"),
                Some(Fence {
                    token: &token,
                    release: false,
                }),
            )
            .await
            .unwrap();
    }
    let gone = SessionId::generate();
    let _ = store
        .create(&gone, &record(&[("k", b"v")], Duration::from_secs(60)))
        .await
        .unwrap();
    store.destroy(&gone).await.unwrap();
    ids.push(gone);
    ids
}

/// With hashing at rest on (the default), no session id — as the 43
/// characters of the cookie or as its 32 raw bytes — is anywhere in Redis:
/// not in a key, a field or a value. A store with hashing off, as a
/// control, shows that the scan would find them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_ids_never_reach_redis() {
    let store = store_with_prefix(&unique_prefix("hashed")).await;
    assert!(store.hashes_ids());
    let ids = exercise(&store).await;

    let control = RedisStore::builder()
        .prefix(unique_prefix("plain"))
        .hash_ids(false)
        .connect(&support::shared().url())
        .await
        .unwrap();
    let control_ids = exercise(&control).await;

    let mut conn = raw(&support::shared().url()).await;
    let everything = dump_everything(&mut conn).await;
    let live: Vec<&SessionId> = ids.iter().take(ids.len() - 1).collect();
    for id in &ids {
        let text = id.expose();
        for item in &everything {
            assert!(
                !contains(item, text.as_bytes()),
                "session id {id:?} found in Redis in the clear"
            );
            assert!(
                !contains(item, id.as_bytes()),
                "the raw bytes of session id {id:?} found in Redis"
            );
        }
    }
    // The hashed keys are there (the scan saw the sessions).
    for id in live.iter().skip(1).step_by(2) {
        let (data, _) = store.keys_of(id);
        assert!(
            everything.iter().any(|item| item == data.as_bytes()),
            "the scan should see the live session {id:?}"
        );
    }
    // The control: with hashing off, the ids are in the keys.
    let found = control_ids
        .iter()
        .filter(|id| {
            everything
                .iter()
                .any(|item| contains(item, id.expose().as_bytes()))
        })
        .count();
    assert!(found > 0, "the scan must be able to see ids in the clear");
}

/// Two stores with different prefixes on one Redis never see each other's
/// sessions, for any operation; everything each writes is under its prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefixes_isolate_stores() {
    let (pa, pb) = (unique_prefix("app-a"), unique_prefix("app-b"));
    let a = store_with_prefix(&pa).await;
    let b = store_with_prefix(&pb).await;
    let id = SessionId::generate();
    let lifetime = Duration::from_secs(60);
    assert_eq!(
        a.create(&id, &record(&[("who", b"a")], lifetime))
            .await
            .unwrap(),
        Created::Created
    );

    assert!(b.load(&id, Some(Touch::always())).await.unwrap().is_none());
    assert_eq!(
        b.apply(&id, &set("who", b"b"), None).await.unwrap(),
        Applied::Gone
    );
    assert_eq!(
        b.lock(&id, Duration::from_secs(5)).await.unwrap(),
        Locked::Absent
    );
    assert_eq!(
        b.change_id(&id, &SessionId::generate(), None)
            .await
            .unwrap(),
        IdChanged::Gone
    );
    b.destroy(&id).await.unwrap();
    // Same id, other app: a separate session.
    assert_eq!(
        b.create(&id, &record(&[("who", b"b")], lifetime))
            .await
            .unwrap(),
        Created::Created
    );
    let seen_by_a = a.load(&id, None).await.unwrap().unwrap().record;
    assert_eq!(seen_by_a.entries.get("who"), Some(&b"a"[..]));
    let seen_by_b = b.load(&id, None).await.unwrap().unwrap().record;
    assert_eq!(seen_by_b.entries.get("who"), Some(&b"b"[..]));

    // A lock in one app does not block the other.
    let Locked::Acquired { token, .. } = a.lock(&id, Duration::from_secs(5)).await.unwrap() else {
        panic!("lock in a")
    };
    assert!(matches!(
        b.lock(&id, Duration::from_secs(5)).await.unwrap(),
        Locked::Acquired { .. }
    ));
    // Unlocking in b with a's token leaves a's lock alone.
    b.unlock(&id, &token).await.unwrap();
    assert_eq!(
        a.lock(&id, Duration::from_secs(5)).await.unwrap(),
        Locked::Held
    );

    let mut conn = raw(&support::shared().url()).await;
    for (prefix, store) in [(&pa, &a), (&pb, &b)] {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query_async(&mut conn)
            .await
            .unwrap();
        let (data, lock) = store.keys_of(&id);
        let mut expected = vec![data, lock];
        expected.sort();
        let mut keys = keys;
        keys.sort();
        assert_eq!(keys, expected, "store {prefix} wrote exactly its own keys");
        store.destroy(&id).await.unwrap();
    }
}

/// A hash field and its value, as raw bytes.
type Field<'a> = (&'a [u8], &'a [u8]);

/// Data under a session's key that this crate did not write (another type,
/// a hash of another layout, broken metadata, a non-UTF-8 field) loads as
/// absent without an error, `apply` answers `Gone`, `lock` answers `Absent`
/// and leaves no lock behind, and `create` replaces it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_or_foreign_data_is_absent() {
    let store = store_with_prefix(&unique_prefix("corrupt")).await;
    let mut conn = raw(&support::shared().url()).await;
    let valid_meta: [Field; 5] = [
        (b"\xffversion", b"1"),
        (b"\xffcreated", b"1"),
        (b"\xffttl", b"600000"),
        (b"\xffdeadline", b"0"),
        (b"\xffexpires", b"99999999999999"),
    ];
    let cases: Vec<(&str, Vec<Field>)> = vec![
        ("a string", vec![]),
        ("a foreign hash", vec![(b"session_data", b"php serialized")]),
        ("another layout version", {
            let mut v = valid_meta.to_vec();
            v[0] = (b"\xffversion", b"2");
            v
        }),
        ("a broken expiry", {
            let mut v = valid_meta.to_vec();
            v[4] = (b"\xffexpires", b"soon");
            v
        }),
        ("a non-UTF-8 session key", {
            let mut v = valid_meta.to_vec();
            v.push((b"\xc3\x28", b"1"));
            v
        }),
    ];
    for (what, fields) in cases {
        let id = SessionId::generate();
        let (data, lock) = store.keys_of(&id);
        if fields.is_empty() {
            let _: () = redis::cmd("SET")
                .arg(&data)
                .arg("not a hash")
                .query_async(&mut conn)
                .await
                .unwrap();
        } else {
            let mut hset = redis::cmd("HSET");
            hset.arg(&data);
            for (k, v) in &fields {
                hset.arg(*k).arg(*v);
            }
            let _: i64 = hset.query_async(&mut conn).await.unwrap();
        }

        for touch in [None, Some(Touch::always())] {
            assert!(
                store.load(&id, touch).await.unwrap().is_none(),
                "{what}: load must answer None"
            );
        }
        assert_eq!(
            store.apply(&id, &set("k", b"v"), None).await.unwrap(),
            Applied::Gone,
            "{what}: apply must answer Gone"
        );
        assert_eq!(
            store.lock(&id, Duration::from_secs(5)).await.unwrap(),
            Locked::Absent,
            "{what}: lock must answer Absent"
        );
        let locked: i64 = redis::cmd("EXISTS")
            .arg(&lock)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(locked, 0, "{what}: lock must leave no lock behind");
        assert!(
            !store
                .renew_lock(&id, &LockToken::generate(), Duration::from_secs(5))
                .await
                .unwrap()
        );
        assert_eq!(
            store
                .change_id(&id, &SessionId::generate(), None)
                .await
                .unwrap(),
            IdChanged::Gone,
            "{what}: change_id must answer Gone"
        );

        let fresh = record(&[("k", b"fresh")], Duration::from_secs(60));
        assert_eq!(
            store.create(&id, &fresh).await.unwrap(),
            Created::Created,
            "{what}: create must take the id"
        );
        let loaded = store.load(&id, None).await.unwrap().unwrap().record;
        assert_eq!(loaded, fresh, "{what}: create must replace the data");
        store.destroy(&id).await.unwrap();
    }
}

/// Large sessions go through the scripts' sliced `HSET`/`HDEL` (Lua's
/// `unpack` is bounded): thousands of keys in one create, one delta, one
/// clear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_with_thousands_of_keys() {
    let store = store().await;
    let id = SessionId::generate();
    let n = 5_000;
    let entries: Entries = (0..n)
        .map(|i| (format!("key-{i:05}"), i.to_string().into_bytes()))
        .collect();
    let rec = Record {
        entries,
        meta: Meta::new(now_ms(), Duration::from_secs(60), None),
    };
    assert_eq!(store.create(&id, &rec).await.unwrap(), Created::Created);
    assert_eq!(
        store.load(&id, None).await.unwrap().unwrap().record.entries,
        rec.entries
    );

    let mut delta = Delta::default();
    for i in 0..n {
        if i % 2 == 0 {
            delta.remove(&format!("key-{i:05}"));
        } else {
            delta.set(&format!("new-{i:05}"), b"x".to_vec());
        }
    }
    let Applied::Applied(_) = store.apply(&id, &delta, None).await.unwrap() else {
        panic!("apply")
    };
    let mut expected = rec.entries.clone();
    expected.apply(&delta);
    let stored = store.load(&id, None).await.unwrap().unwrap().record.entries;
    assert_eq!(stored.len(), n);
    assert_eq!(stored, expected);

    let mut clear = Delta::default();
    clear.clear();
    clear.set("only", b"1".to_vec());
    let Applied::Applied(meta) = store.apply(&id, &clear, None).await.unwrap() else {
        panic!("apply clear")
    };
    let after = store.load(&id, None).await.unwrap().unwrap().record;
    assert_eq!(after.entries.keys().collect::<Vec<_>>(), ["only"]);
    assert_eq!(after.meta, meta, "clear keeps the metadata");
    store.destroy(&id).await.unwrap();
}

/// A prefix with braces would break the hash tag; it is refused by name.
#[tokio::test]
async fn braces_in_the_prefix_are_an_invalid_config() {
    let err = RedisStore::builder()
        .prefix("app{1}:")
        .connect(&support::shared().url())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), sessionkit_core::ErrorKind::InvalidConfig);
    assert_eq!(err.setting(), Some("prefix"));

    let err = RedisStore::connect("not a url").await.unwrap_err();
    assert_eq!(err.kind(), sessionkit_core::ErrorKind::InvalidConfig);
    assert_eq!(err.setting(), Some("url"));
}
