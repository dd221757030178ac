//! `RedisStore` on one `redis-server`: the conformance suite, round trips counted by the server, the data layout, ids at rest, prefixes and corrupt data.

use sessionkit_test_servers::redis as support;

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use sessionkit_core::owner::{Owner, OwnerCap, OwnerIndex, OwnerSet, SessionHandle, WhenFull};
use sessionkit_core::record::{Delta, Entries, Meta, Record, Touch, now_ms};
use sessionkit_core::store::{
    Applied, AppliedAndRead, Created, Fence, IdChanged, Locked, SessionStore,
};
use sessionkit_core::testkit::SuiteConfig;
use sessionkit_core::testkit::fixtures::{self, set};
use sessionkit_core::{LockToken, SessionId};
use sessionkit_redis::RedisStore;
use sessionkit_redis::redis::{self, aio::MultiplexedConnection};

use support::RedisServer;

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
    fixtures::record(lifetime, fixtures::entries(pairs))
}

// The whole contract, one test per line of the output.
sessionkit_core::conformance_tests!(
    conformance,
    store().await,
    config = SuiteConfig::millisecond_clock()
);

// The owner index: every check of the testkit's.
sessionkit_core::owner_index_tests!(owners, store().await);

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
/// server's `MONITOR` shows (commands run inside scripts excluded), except
/// a load whose touch is due: two (`GET`, then the touch script). Runs
/// on a server of its own, so that no other client adds to the counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_is_one_round_trip_but_a_due_touch() {
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

        let (read, c) = counted!(monitor, store.apply_and_read(&id, &set("h", b"5"), &token));
        let AppliedAndRead::Applied(read_back) = read else {
            panic!("apply_and_read: {read:?}")
        };
        assert_eq!(read_back.entries.get("h"), Some(&b"5"[..]));
        row("apply_and_read (lock kept)", c);

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

        // The owner index: each operation one script, a cap included.
        let ada = Owner::new(format!("ada-{round}")).unwrap();
        let handle = SessionHandle::generate();
        let (set, c) = counted!(
            monitor,
            store.set_owner(&newer, &ada, &handle, Some("laptop"), None)
        );
        assert!(matches!(set, OwnerSet::Set { .. }));
        row("set_owner", c);
        let other = SessionId::generate();
        let created = store
            .create(&other, &record(&[("n", b"1")], lifetime))
            .await
            .unwrap();
        assert_eq!(created, Created::Created);
        let cap = OwnerCap {
            max: 1.try_into().unwrap(),
            when_full: WhenFull::EndLeastRecent,
        };
        let (set, c) = counted!(
            monitor,
            store.set_owner(&other, &ada, &SessionHandle::generate(), None, Some(cap))
        );
        assert!(matches!(set, OwnerSet::Set { ended } if ended == [handle]));
        row("set_owner (cap, one ended)", c);
        let (listed, c) = counted!(monitor, store.sessions_of(&ada));
        assert_eq!(listed.len(), 1);
        row("sessions_of", c);
        let moved = SessionId::generate();
        let (changed, c) = counted!(monitor, store.change_id(&other, &moved, None));
        assert!(matches!(changed, IdChanged::Changed(_)));
        row("change_id (owned)", c);
        let (revoked, c) = counted!(monitor, store.revoke(&ada, &listed[0].handle));
        assert!(revoked);
        row("revoke", c);
        let (none, c) = counted!(monitor, store.revoke_all(&ada, None));
        assert_eq!(none, 0);
        row("revoke_all", c);
        let created = store
            .create(&newer, &record(&[("n", b"1")], lifetime))
            .await
            .unwrap();
        assert_eq!(created, Created::Created);

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
        let expected = match name {
            "destroy" => one("del"),
            "create" => one("set"),
            "load" | "load + touch (not due)" | "load (absent)" => one("get"),
            "load + touch (due)" => {
                BTreeMap::from([("get".to_owned(), 1), ("evalsha".to_owned(), 1)])
            }
            _ => one("evalsha"),
        };
        assert_eq!(
            commands, expected,
            "{name}: wrong commands at the server{report}"
        );
    }
}

/// A read whose touch is not due makes Redis run exactly one command, a
/// plain `GET`, as `INFO commandstats` counts (which, unlike `MONITOR`,
/// also counts what scripts run). On a server of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_without_a_due_touch_is_one_get() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let mut conn = raw(&server.url()).await;
    let ids: Vec<SessionId> = (0..20).map(|_| SessionId::generate()).collect();
    for id in &ids {
        let created = store
            .create(id, &record(&[("n", b"1")], Duration::from_secs(600)))
            .await
            .unwrap();
        assert_eq!(created, Created::Created);
    }
    // The session layer's default: touch when less than 75 % is left.
    let touch = Touch::when_remaining_below(0.75).unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut conn)
        .await
        .unwrap();
    for id in &ids {
        let loaded = store.load(id, Some(touch)).await.unwrap().unwrap();
        assert!(!loaded.touched);
        assert_eq!(loaded.record.entries.get("n"), Some(&b"1"[..]));
    }
    let absent = SessionId::generate();
    assert!(store.load(&absent, Some(touch)).await.unwrap().is_none());
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .unwrap();
    let calls: BTreeMap<String, u64> = info
        .lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        // This test's own commands.
        .filter(|(name, _)| !name.starts_with("config") && name != "info")
        .collect();
    assert_eq!(
        calls,
        BTreeMap::from([("get".to_owned(), ids.len() as u64 + 1)]),
        "{info}"
    );
}

/// A load whose touch is due moves the expiry, in the metadata field and in
/// the key's native expiry (PTTL grows), and says so; one that is not due
/// moves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_due_touch_moves_the_expiry_and_says_so() {
    let store = store_with_prefix(&unique_prefix("touch")).await;
    let mut conn = raw(&support::shared().url()).await;
    let id = SessionId::generate();
    let now = now_ms();
    // 20 s of a 60 s lifetime left: due under the default rule (< 75 %).
    let record = Record {
        entries: [("n", b"1".to_vec())].into_iter().collect(),
        meta: Meta::from_parts(now, 60_000, None, now + 20_000),
    };
    assert_eq!(store.create(&id, &record).await.unwrap(), Created::Created);
    let (data, _) = store.keys_of(&id);
    let pttl = |conn: &mut MultiplexedConnection| {
        let mut conn = conn.clone();
        let data = data.clone();
        async move {
            let pttl: i64 = redis::cmd("PTTL")
                .arg(&data)
                .query_async(&mut conn)
                .await
                .unwrap();
            pttl
        }
    };
    let before = pttl(&mut conn).await;
    assert!((15_000..=20_000).contains(&before), "PTTL = {before}");

    // Not due under a stricter rule (less than 10 % left): nothing moves.
    let strict = Touch::when_remaining_below(0.1).unwrap();
    let loaded = store.load(&id, Some(strict)).await.unwrap().unwrap();
    assert!(!loaded.touched);
    assert_eq!(loaded.record, record);
    assert!(pttl(&mut conn).await <= before);

    let touch = Touch::when_remaining_below(0.75).unwrap();
    let loaded = store.load(&id, Some(touch)).await.unwrap().unwrap();
    assert!(loaded.touched, "a due touch that moves the expiry says so");
    let meta = loaded.record.meta;
    assert_eq!(
        (meta.created(), meta.ttl_ms(), meta.deadline()),
        (now, 60_000, None)
    );
    assert!(
        meta.expires() >= now + 60_000 && meta.expires() < now_ms() + 60_000 + 1_000,
        "refreshed to Redis's now + ttl: {meta:?}"
    );
    assert_eq!(loaded.record.entries, record.entries);
    let after = pttl(&mut conn).await;
    assert!(after > before + 30_000, "PTTL grew: {before} -> {after}");
    // The field and the native expiry agree: the key expires one
    // millisecond before `expires` (Redis deletes once past its time).
    assert_eq!(
        stored_meta(&mut conn, &data).await,
        format!("{now:011x}{:011x}ea60:0", meta.expires())
    );
    assert_eq!(
        pexpiretime(&mut conn, &data).await,
        meta.expires() as i64 - 1
    );
    // What the next load sees is what the touch reported.
    let again = store.load(&id, None).await.unwrap().unwrap();
    assert_eq!(again.record.meta, meta);
    store.destroy(&id).await.unwrap();
}

/// Taking a lock and renewing it refresh the idle expiry, in the metadata
/// field and in the key's native expiry alike (`PEXPIRETIME` one
/// millisecond before `expires`), never past the absolute deadline; a lock
/// that is held, or a renewal by another token, refreshes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_and_renewal_refresh_the_expiry_as_apply_does() {
    let store = store_with_prefix(&unique_prefix("lock-refresh")).await;
    let mut conn = raw(&support::shared().url()).await;
    let ttl = Duration::from_secs(30);
    let id = SessionId::generate();
    let now = now_ms();
    // 20 s of a 60 s idle lifetime left; the deadline an hour away.
    let record = Record {
        entries: [("n", b"1".to_vec())].into_iter().collect(),
        meta: Meta::from_parts(now, 60_000, Some(now + 3_600_000), now + 20_000),
    };
    assert_eq!(store.create(&id, &record).await.unwrap(), Created::Created);
    let (data, _) = store.keys_of(&id);

    let Locked::Acquired {
        token,
        record: locked,
    } = store.lock(&id, ttl).await.unwrap()
    else {
        panic!("lock")
    };
    let meta = locked.meta;
    assert_eq!(locked.entries, record.entries);
    assert_eq!(
        (meta.created(), meta.ttl_ms(), meta.deadline()),
        (now, 60_000, Some(now + 3_600_000))
    );
    assert!(
        meta.expires() >= now + 60_000 && meta.expires() < now_ms() + 60_000 + 1_000,
        "lock refreshes to Redis's now + ttl: {meta:?}"
    );
    assert_eq!(
        store.load(&id, None).await.unwrap().unwrap().record.meta,
        meta
    );
    assert_eq!(
        pexpiretime(&mut conn, &data).await,
        meta.expires() as i64 - 1
    );

    // Held: no refresh. Another token's renewal: none either.
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(store.lock(&id, ttl).await.unwrap(), Locked::Held);
    assert!(
        !store
            .renew_lock(&id, &LockToken::generate(), ttl)
            .await
            .unwrap()
    );
    assert_eq!(
        store.load(&id, None).await.unwrap().unwrap().record.meta,
        meta
    );
    assert_eq!(
        pexpiretime(&mut conn, &data).await,
        meta.expires() as i64 - 1
    );

    assert!(store.renew_lock(&id, &token, ttl).await.unwrap());
    let renewed = store.load(&id, None).await.unwrap().unwrap().record.meta;
    assert!(
        renewed.expires() > meta.expires(),
        "{meta:?} -> {renewed:?}"
    );
    assert_eq!(
        pexpiretime(&mut conn, &data).await,
        renewed.expires() as i64 - 1
    );
    store.unlock(&id, &token).await.unwrap();

    // Near the absolute deadline: both stop at it.
    let capped = SessionId::generate();
    let record = Record {
        entries: [("n", b"1".to_vec())].into_iter().collect(),
        meta: Meta::from_parts(now, 60_000, Some(now + 30_000), now + 20_000),
    };
    assert_eq!(
        store.create(&capped, &record).await.unwrap(),
        Created::Created
    );
    let Locked::Acquired {
        token,
        record: locked,
    } = store.lock(&capped, ttl).await.unwrap()
    else {
        panic!("lock")
    };
    assert_eq!(locked.meta.expires(), now + 30_000);
    assert!(store.renew_lock(&capped, &token, ttl).await.unwrap());
    let (data, _) = store.keys_of(&capped);
    assert_eq!(
        pexpiretime(&mut conn, &data).await,
        (now + 30_000) as i64 - 1
    );
    assert_eq!(
        store
            .load(&capped, None)
            .await
            .unwrap()
            .unwrap()
            .record
            .meta,
        locked.meta
    );
    store.destroy(&id).await.unwrap();
    store.destroy(&capped).await.unwrap();
}

/// The metadata of the session stored at `key`: its value up to the `|`.
async fn stored_meta(conn: &mut MultiplexedConnection, key: &str) -> String {
    let value: Vec<u8> = redis::cmd("GET").arg(key).query_async(conn).await.unwrap();
    let bar = value.iter().position(|&b| b == b'|').expect("a separator");
    String::from_utf8(value[..bar].to_vec()).unwrap()
}

/// The entries of the session stored at `key`: its MessagePack map after
/// the `|` (strings, as Lua's cmsgpack writes them too).
async fn stored_entries(conn: &mut MultiplexedConnection, key: &str) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let value: Vec<u8> = redis::cmd("GET").arg(key).query_async(conn).await.unwrap();
    let bar = value.iter().position(|&b| b == b'|').expect("a separator");
    let mut rd = &value[bar + 1..];
    let n = match rmp::decode::read_marker(&mut rd).unwrap() {
        rmp::Marker::FixArray(0) => 0,
        marker => rmp::decode::marker_to_len(&mut rd, marker).unwrap(),
    };
    let mut out = BTreeMap::new();
    for _ in 0..n {
        let mut string = || {
            let len = rmp::decode::read_str_len(&mut rd).unwrap() as usize;
            let (taken, rest) = rd.split_at(len);
            rd = rest;
            taken.to_vec()
        };
        let key = string();
        out.insert(key, string());
    }
    assert!(rd.is_empty(), "nothing after the map");
    out
}

/// The key's native expiry, Unix ms (`PEXPIRETIME`, Redis 7.0).
async fn pexpiretime(conn: &mut MultiplexedConnection, key: &str) -> i64 {
    redis::cmd("PEXPIRETIME")
        .arg(key)
        .query_async(conn)
        .await
        .unwrap()
}

/// A store built on a connection handed to it has not read Redis's clock
/// yet: its first load that needs it (one with a touch) sends `TIME` once;
/// every later load is one `GET` again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_on_a_given_connection_reads_the_clock_once() {
    let server = RedisServer::start();
    let manager = redis::Client::open(server.url())
        .unwrap()
        .get_connection_manager()
        .await
        .unwrap();
    let store = RedisStore::builder()
        .build_with_connection_manager(manager)
        .unwrap();
    let id = SessionId::generate();
    let _ = store
        .create(&id, &record(&[("n", b"1")], Duration::from_secs(60)))
        .await
        .unwrap();
    let monitor = server.monitor();
    let touch = Touch::when_remaining_below(0.5).unwrap();
    let (loaded, c) = counted!(monitor, store.load(&id, Some(touch)));
    assert!(!loaded.unwrap().touched);
    assert_eq!(
        c,
        BTreeMap::from([("get".to_owned(), 1), ("time".to_owned(), 1)])
    );
    let (loaded, c) = counted!(monitor, store.load(&id, Some(touch)));
    assert!(!loaded.unwrap().touched);
    assert_eq!(c, one("get"));
}

/// The documented layout 3: a string, the metadata, `|`, then the
/// session's entries as a MessagePack map (key as is, value as given),
/// native expiry one millisecond before `expires`; the lock a string holding the token's hex,
/// expiring with its TTL; both keys `{prefix}{<sha-256 base64url>}` and
/// `…:lock`.
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
    assert_eq!(kind, "string");
    let value: Vec<u8> = redis::cmd("GET")
        .arg(&data)
        .query_async(&mut conn)
        .await
        .unwrap();
    // <created><expires><ttl>:<deadline>, in hex: 11, 11, then as short
    // as it goes; `|`; the entries as a MessagePack map of strings (a
    // fixmap of two, fixstr keys and values, in key order as written).
    let meta = format!(
        "{created:011x}{:011x}ea60:{:x}",
        created + 60_000,
        created + 3_600_000
    );
    assert_eq!(meta.len(), 11 + 11 + 4 + 1 + 11);
    let mut expected = meta.clone().into_bytes();
    expected.extend_from_slice(b"|\x82\xa1n\xa11\xa4user\xa5\"ada\"");
    assert_eq!(
        value.escape_ascii().to_string(),
        expected.escape_ascii().to_string()
    );
    let pttl: i64 = redis::cmd("PTTL")
        .arg(&data)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        (50_000..=60_000).contains(&pttl),
        "native expiry must follow meta.expires, PTTL = {pttl}"
    );
    assert_eq!(
        pexpiretime(&mut conn, &data).await,
        (created + 60_000) as i64 - 1,
        "Redis deletes a key once past its expiry time: one ms before `expires`"
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
    let Applied::Applied(applied) = store
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
    assert_eq!(
        stored_meta(&mut conn, &data).await,
        format!(
            "{created:011x}{:011x}ea60:{:x}",
            applied.expires(),
            created + 3_600_000
        )
    );
    assert_eq!(
        pexpiretime(&mut conn, &data).await,
        applied.expires() as i64 - 1
    );
    assert_eq!(
        stored_entries(&mut conn, &data).await,
        BTreeMap::from([
            (b"basket".to_vec(), b"[]".to_vec()),
            (b"user".to_vec(), b"\"ada\"".to_vec()),
        ])
    );
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
        // Owned, so that the owner index (and its move on change_id) is
        // scanned too.
        let owner = Owner::new(format!("owner-{}", id.short_hash())).unwrap();
        let handle = SessionHandle::generate();
        let set_owner = store.set_owner(&id, &owner, &handle, None, None).await;
        assert!(matches!(set_owner.unwrap(), OwnerSet::Set { .. }));
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

/// An owner's index is one hash, `{prefix}{o.<SHA-1 of the owner's JSON>}`,
/// from handle (hex) to the session's data key, and the session carries
/// its owner, handle and device in the reserved entries; `change_id` moves
/// the entry in the same script.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_index_layout_is_as_documented() {
    let prefix = unique_prefix("owners");
    let store = store_with_prefix(&prefix).await;
    let mut conn = raw(&support::shared().url()).await;
    let id = SessionId::generate();
    let lifetime = Duration::from_secs(60);
    let created = store.create(&id, &record(&[("k", b"v")], lifetime)).await;
    assert_eq!(created.unwrap(), Created::Created);
    let owner = Owner::new("ada@example.com").unwrap();
    let handle = SessionHandle::generate();
    let set = store
        .set_owner(&id, &owner, &handle, Some("laptop"), None)
        .await;
    assert!(matches!(set.unwrap(), OwnerSet::Set { .. }));

    let digest = sha1_smol::Sha1::from(&b"\"ada@example.com\""[..]).digest();
    let index = format!("{prefix}{{o.{digest}}}");
    let entries: BTreeMap<String, String> = redis::cmd("HGETALL")
        .arg(&index)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        entries,
        BTreeMap::from([(handle.to_string(), store.keys_of(&id).0)])
    );
    let fields = stored_entries(&mut conn, &store.keys_of(&id).0).await;
    let field = |name: &[u8]| fields.get(name).cloned().unwrap_or_default();
    assert_eq!(field(b"\x01owner"), b"\"ada@example.com\"");
    assert_eq!(field(b"\x01handle"), format!("\"{handle}\"").into_bytes());
    assert_eq!(field(b"\x01device"), b"\"laptop\"");

    let new = SessionId::generate();
    let changed = store.change_id(&id, &new, None).await.unwrap();
    assert!(matches!(changed, IdChanged::Changed(_)));
    let moved: Option<String> = redis::cmd("HGET")
        .arg(&index)
        .arg(handle.to_string())
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(moved, Some(store.keys_of(&new).0));
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

/// An operator turns hashing off on a prefix that still holds hashed
/// sessions, and a dump of the key names leaks. Each key's tag has the
/// form of a session id; presented as a cookie to the raw store it must
/// find nothing, because raw keys are `{raw.<id>}`. The sessions are
/// orphaned (users sign in again), not exposed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaked_hashed_key_names_are_not_cookies_for_a_raw_store() {
    let prefix = unique_prefix("switched");
    let hashed = store_with_prefix(&prefix).await;
    let raw = RedisStore::builder()
        .prefix(&prefix)
        .hash_ids(false)
        .connect(&support::shared().url())
        .await
        .unwrap();
    let victim = SessionId::generate();
    let lifetime = Duration::from_secs(60);
    assert_eq!(
        hashed
            .create(&victim, &record(&[("user", b"\"ada\"")], lifetime))
            .await
            .unwrap(),
        Created::Created
    );
    let (leaked, _) = hashed.keys_of(&victim);
    let tag = &leaked[prefix.len() + 1..leaked.len() - 1];
    let cookie = SessionId::parse(tag).expect("a hashed tag has the form of an id");

    assert!(
        raw.load(&cookie, Some(Touch::always()))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        raw.lock(&cookie, Duration::from_secs(5)).await.unwrap(),
        Locked::Absent
    );
    assert_eq!(
        raw.apply(&cookie, &set("user", b"\"eve\""), None)
            .await
            .unwrap(),
        Applied::Gone
    );
    assert_eq!(
        raw.change_id(&cookie, &SessionId::generate(), None)
            .await
            .unwrap(),
        IdChanged::Gone
    );
    // The raw store's own session under that id lives beside it, apart.
    assert_eq!(
        raw.create(&cookie, &record(&[("user", b"\"eve\"")], lifetime))
            .await
            .unwrap(),
        Created::Created
    );
    let (raw_key, _) = raw.keys_of(&cookie);
    assert_eq!(raw_key, format!("{prefix}{{raw.{tag}}}"));
    let still = hashed.load(&victim, None).await.unwrap().unwrap().record;
    assert_eq!(still.entries.get("user"), Some(&b"\"ada\""[..]));
    hashed.destroy(&victim).await.unwrap();
    raw.destroy(&cookie).await.unwrap();
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

/// What a test plants under a session's key.
enum Planted<'a> {
    /// A string value.
    Value(Vec<u8>),
    /// A hash of these fields.
    Hash(Vec<Field<'a>>),
}

/// Data under a session's key that this crate did not write (another type,
/// the hash of the previous layout, broken metadata, entries that are not
/// a MessagePack map of strings, a non-UTF-8 key) loads as absent without
/// an error, `apply` answers `Gone`, `lock` answers `Absent` and leaves no
/// lock behind, and `create` replaces it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_or_foreign_data_is_absent() {
    let store = store_with_prefix(&unique_prefix("corrupt")).await;
    let mut conn = raw(&support::shared().url()).await;
    // Live until 2527 if it were valid.
    let meta: &[u8] = b"00000000001fffffffffff927c0:0";
    let with_meta = |tail: &[u8]| [meta, b"|", tail].concat();
    let mut cases: Vec<(String, Planted)> = vec![
        (
            "no separator".into(),
            Planted::Value(b"not a session".to_vec()),
        ),
        (
            "a foreign hash".into(),
            Planted::Hash(vec![(b"session_data", b"php serialized")]),
        ),
        (
            "layout 2 (this crate's previous layout: a hash)".into(),
            Planted::Hash(vec![(b"\xff", meta), (b"k", b"v")]),
        ),
        (
            "entries that are not a map".into(),
            Planted::Value(with_meta(b"\x91\xa1k")),
        ),
        ("no entries at all".into(), Planted::Value(with_meta(b""))),
        (
            "a non-UTF-8 session key".into(),
            Planted::Value(with_meta(b"\x81\xa2\xc3\x28\xa11")),
        ),
    ];
    // Metadata that does not parse: the scripts (Lua) and the load (Rust)
    // parse it apart, and must agree (their unit tests parse the same
    // values in Rust alone).
    for (value, why) in GARBAGE_META {
        cases.push((
            format!("metadata {:?} ({why})", value.escape_ascii().to_string()),
            Planted::Value([*value, b"|\x81\xa1k\xa1v"].concat()),
        ));
    }
    for (what, planted) in cases {
        let id = SessionId::generate();
        let (data, lock) = store.keys_of(&id);
        match planted {
            Planted::Value(value) => {
                let _: () = redis::cmd("SET")
                    .arg(&data)
                    .arg(value)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
            }
            Planted::Hash(fields) => {
                let mut hset = redis::cmd("HSET");
                hset.arg(&data);
                for (k, v) in &fields {
                    hset.arg(*k).arg(*v);
                }
                let _: i64 = hset.query_async(&mut conn).await.unwrap();
            }
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

/// `create` of a session whose expiry has already passed is accepted and
/// leaves nothing behind (as on the memory store), whether the id was free
/// (`SET … NX PXAT` of a past time deletes the key) or held an expired
/// session's leftovers (the script).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_born_expired_is_accepted_and_leaves_no_key() {
    let store = store_with_prefix(&unique_prefix("born-expired")).await;
    let mut conn = raw(&support::shared().url()).await;
    let expired = Record {
        entries: [("k", b"v".to_vec())].into_iter().collect(),
        meta: Meta::from_parts(now_ms() - 5_000, 1_000, None, now_ms() - 4_000),
    };
    for leftover in [false, true] {
        let id = SessionId::generate();
        let (data, _) = store.keys_of(&id);
        if leftover {
            let _: () = redis::cmd("SET")
                .arg(&data)
                .arg("left over")
                .query_async(&mut conn)
                .await
                .unwrap();
        }
        assert_eq!(store.create(&id, &expired).await.unwrap(), Created::Created);
        let exists: i64 = redis::cmd("EXISTS")
            .arg(&data)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(exists, 0, "leftover {leftover}: the key must be gone");
        assert!(store.load(&id, None).await.unwrap().is_none());
    }
}

/// A lock never outlives its session, so that a new session under the
/// same id (a plain `SET … NX` of the data key) finds no lock to adopt: a
/// lock taken, renewed or kept by a write near the session's absolute
/// deadline expires with the session, and a write that brings the expiry
/// forward brings the lock's with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_never_outlives_its_session() {
    let store = store_with_prefix(&unique_prefix("lock-bound")).await;
    let mut conn = raw(&support::shared().url()).await;
    let now = now_ms();
    // An hour of idle lifetime, but a deadline 20 s away.
    let capped = Record {
        entries: [("k", b"v".to_vec())].into_iter().collect(),
        meta: Meta::from_parts(now, 3_600_000, Some(now + 20_000), now + 20_000),
    };
    let id = SessionId::generate();
    let (data, lock) = store.keys_of(&id);
    assert_eq!(store.create(&id, &capped).await.unwrap(), Created::Created);
    let Locked::Acquired { token, .. } = store.lock(&id, Duration::from_secs(60)).await.unwrap()
    else {
        panic!("lock")
    };
    let session_ends = pexpiretime(&mut conn, &data).await;
    assert_eq!(session_ends, (now + 20_000) as i64 - 1);
    assert_eq!(pexpiretime(&mut conn, &lock).await, session_ends, "lock");
    assert!(
        store
            .renew_lock(&id, &token, Duration::from_secs(60))
            .await
            .unwrap()
    );
    assert_eq!(pexpiretime(&mut conn, &lock).await, session_ends, "renewed");

    // A shorter lifetime, kept lock: the lock follows the earlier expiry.
    let mut shorter = Delta::default();
    shorter.set_ttl(Duration::from_secs(5));
    let fence = Fence {
        token: &token,
        release: false,
    };
    let Applied::Applied(meta) = store.apply(&id, &shorter, Some(fence)).await.unwrap() else {
        panic!("apply")
    };
    assert!(meta.expires() < now + 20_000);
    let session_ends = pexpiretime(&mut conn, &data).await;
    assert_eq!(session_ends, meta.expires() as i64 - 1);
    assert_eq!(
        pexpiretime(&mut conn, &lock).await,
        session_ends,
        "brought forward"
    );
    store.destroy(&id).await.unwrap();
}

/// A session whose stored expiry is later than Redis's `now + ttl` (as
/// after Redis's clock stepped back) keeps it through a touch and a fenced
/// `change_id`: neither brings the session's expiry forward, which would
/// leave its lock outliving it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_touch_or_change_id_never_brings_the_expiry_forward() {
    let store = store_with_prefix(&unique_prefix("no-earlier")).await;
    let mut conn = raw(&support::shared().url()).await;
    let now = now_ms();
    let ahead = Record {
        entries: [("k", b"v".to_vec())].into_iter().collect(),
        meta: Meta::from_parts(now, 60_000, None, now + 600_000),
    };
    let id = SessionId::generate();
    let (data, lock) = store.keys_of(&id);
    assert_eq!(store.create(&id, &ahead).await.unwrap(), Created::Created);
    let Locked::Acquired { token, .. } = store.lock(&id, Duration::from_secs(300)).await.unwrap()
    else {
        panic!("lock")
    };
    let lock_ends = pexpiretime(&mut conn, &lock).await;
    assert!(lock_ends > (now + 200_000) as i64, "a 300 s lock");

    let loaded = store
        .load(&id, Some(Touch::always()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        loaded.record.meta.expires(),
        now + 600_000,
        "the touch kept it"
    );
    assert!(pexpiretime(&mut conn, &data).await >= lock_ends);

    let new = SessionId::generate();
    let changed = store.change_id(&id, &new, Some(&token)).await.unwrap();
    let IdChanged::Changed(meta) = changed else {
        panic!("{changed:?}")
    };
    assert_eq!(meta.expires(), now + 600_000, "change_id kept it");
    let (new_data, new_lock) = store.keys_of(&new);
    assert!(pexpiretime(&mut conn, &new_data).await >= pexpiretime(&mut conn, &new_lock).await);
    store.destroy(&new).await.unwrap();
}

// GARBAGE_META and VALID_META: metadata values both parsers must judge
// alike, shared with the unit tests of src/reply.rs.
include!("support/meta_cases.rs");

/// The other half of the agreement: metadata the load (Rust) reads is
/// metadata the scripts (Lua) read, as the same numbers. `create` is the
/// probe for the scripts: it answers `IdTaken` exactly when its script
/// finds a live session, and writes nothing then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_metadata_reads_alike_in_the_scripts_and_the_load() {
    let store = store_with_prefix(&unique_prefix("valid-meta")).await;
    let mut conn = raw(&support::shared().url()).await;
    for (value, [created, ttl, deadline, expires]) in VALID_META {
        let what = value.escape_ascii().to_string();
        let id = SessionId::generate();
        let (data, _) = store.keys_of(&id);
        let _: () = redis::cmd("SET")
            .arg(&data)
            .arg([*value, b"|\x81\xa1k\xa1v"].concat())
            .query_async(&mut conn)
            .await
            .unwrap();
        let loaded = store.load(&id, None).await.unwrap();
        let want = Meta::from_parts(*created, *ttl, Some(*deadline), *expires);
        assert_eq!(
            loaded.map(|l| l.record.meta),
            Some(want),
            "{what}: the load reads it"
        );
        assert_eq!(
            store
                .create(&id, &record(&[("k", b"new")], Duration::from_secs(60)))
                .await
                .unwrap(),
            Created::IdTaken,
            "{what}: the scripts read a live session"
        );
        assert_eq!(
            stored_meta(&mut conn, &data).await.as_bytes(),
            *value,
            "{what}: untouched"
        );
        store.destroy(&id).await.unwrap();
    }
}

/// The metadata holds times up to 2^44 - 1 ms (in the year 2527): `create`
/// caps a later expiry there (a lifetime of `Duration::MAX` works), refuses
/// a later creation time by name (store, operation) and writes nothing; an
/// expiry the scripts compute from a longer idle lifetime stops there too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn times_past_2527_are_refused_or_capped() {
    const MAX_TIME: u64 = 0xfff_ffff_ffff;
    let store = store_with_prefix(&unique_prefix("year-2527")).await;
    let mut conn = raw(&support::shared().url()).await;
    let now = now_ms();
    for meta in [
        Meta::from_parts(now, 60_000, None, MAX_TIME + 1),
        // What `Meta::new` makes of a lifetime of `Duration::MAX`.
        Meta::new(now, Duration::MAX, None),
    ] {
        let id = SessionId::generate();
        let record = Record {
            entries: [("n", b"1".to_vec())].into_iter().collect(),
            meta,
        };
        assert_eq!(
            store.create(&id, &record).await.unwrap(),
            Created::Created,
            "{meta:?}"
        );
        let loaded = store.load(&id, None).await.unwrap().expect("stored");
        assert_eq!(loaded.record.meta.expires(), MAX_TIME, "{meta:?}: capped");
        let (data, _) = store.keys_of(&id);
        assert_eq!(pexpiretime(&mut conn, &data).await, MAX_TIME as i64 - 1);
        store.destroy(&id).await.unwrap();
    }

    let id = SessionId::generate();
    let from_2527 = Record {
        entries: [("n", b"1".to_vec())].into_iter().collect(),
        meta: Meta::from_parts(MAX_TIME + 1, 60_000, None, now + 60_000),
    };
    let err = store.create(&id, &from_2527).await.unwrap_err();
    assert_eq!(err.kind(), sessionkit_core::ErrorKind::Codec);
    assert_eq!(
        (err.store(), err.operation()),
        (Some("redis"), Some("create"))
    );
    let (data, _) = store.keys_of(&id);
    let exists: i64 = redis::cmd("EXISTS")
        .arg(&data)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(exists, 0, "nothing written");

    let id = SessionId::generate();
    assert_eq!(
        store
            .create(&id, &record(&[("n", b"1")], Duration::from_secs(60)))
            .await
            .unwrap(),
        Created::Created
    );
    let mut forever = Delta::default();
    forever.set_ttl(Duration::from_secs(1_000 * 366 * 86_400));
    let Applied::Applied(meta) = store.apply(&id, &forever, None).await.unwrap() else {
        panic!("apply")
    };
    assert_eq!(meta.expires(), MAX_TIME);
    assert_eq!(
        store.load(&id, None).await.unwrap().unwrap().record.meta,
        meta
    );
    let (data, _) = store.keys_of(&id);
    assert_eq!(pexpiretime(&mut conn, &data).await, MAX_TIME as i64 - 1);
    store.destroy(&id).await.unwrap();
}

/// Large sessions go through the scripts' merge whole (decoded, merged and
/// encoded by `cmsgpack` in Lua; a map of thousands of keys is a `map16`):
/// thousands of keys in one create, one delta, one clear.
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

/// The commands Redis ran, by name, from `INFO commandstats` (which counts
/// the commands scripts run too), without the test's own.
async fn commands_run(conn: &mut MultiplexedConnection) -> BTreeMap<String, u64> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            (!["info", "config|resetstat", "script|load", "evalsha", "eval"].contains(&name))
                .then(|| (name.to_owned(), calls))
        })
        .collect()
}

/// A new session under a free id — nearly every `create` — makes Redis run
/// one `SET … NX PXAT` and nothing else (no script, no clock, no read of
/// metadata); only an occupied id goes on to the script. Runs on a server
/// of its own, so that no other client adds to the counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_of_a_free_id_is_one_set() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let mut conn = raw(&server.url()).await;
    let warm = SessionId::generate();
    let lifetime = Duration::from_secs(60);
    assert_eq!(
        store
            .create(&warm, &record(&[("n", b"1")], lifetime))
            .await
            .unwrap(),
        Created::Created
    );
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut conn)
        .await
        .unwrap();
    for i in 0..10u8 {
        let id = SessionId::generate();
        let rec = record(&[("n", &[b'0' + i]), ("user", b"\"ada\"")], lifetime);
        assert_eq!(store.create(&id, &rec).await.unwrap(), Created::Created);
        assert_eq!(store.load(&id, None).await.unwrap().unwrap().record, rec);
    }
    assert_eq!(
        commands_run(&mut conn).await,
        BTreeMap::from([("set".to_owned(), 10), ("get".to_owned(), 10)]),
        "a free id: one SET (and the test's GET)"
    );

    // An occupied id goes on to read the clock and the metadata.
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        store
            .create(&warm, &record(&[("n", b"2")], lifetime))
            .await
            .unwrap(),
        Created::IdTaken
    );
    let run = commands_run(&mut conn).await;
    assert_eq!(run.get("set"), Some(&1), "the SET … NX alone: {run:?}");
    assert_eq!(run.get("time"), Some(&1), "{run:?}");
    assert_eq!(run.get("get"), Some(&1), "the metadata, read once: {run:?}");
    assert_eq!(
        run.get("del"),
        None,
        "a refused create writes nothing: {run:?}"
    );
    assert_eq!(
        store
            .load(&warm, None)
            .await
            .unwrap()
            .unwrap()
            .record
            .entries
            .get("n"),
        Some(&b"1"[..]),
        "the live session is untouched"
    );
}

/// A session of this layout whose metadata says it expired, left without a
/// native expiry (by hand, or by a server that lost the TTL), and a lock
/// left by it: `create` under its id takes none of it over. The new
/// session holds exactly its own entries, expires natively, and is not
/// locked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_over_an_expired_record_adopts_none_of_it() {
    let store = store_with_prefix(&unique_prefix("expired-record")).await;
    let mut conn = raw(&support::shared().url()).await;
    for with_lock in [false, true] {
        let id = SessionId::generate();
        let (data, lock) = store.keys_of(&id);
        write_expired_record(&mut conn, &data, &lock, with_lock).await;
        // The scripts judge it by its metadata (a plain read trusts the
        // native expiry, which this key lacks: see the crate docs, "Expiry").
        assert_eq!(
            store.apply(&id, &set("k", b"v"), None).await.unwrap(),
            Applied::Gone
        );

        let fresh = record(&[("k", b"fresh")], Duration::from_secs(60));
        assert_eq!(store.create(&id, &fresh).await.unwrap(), Created::Created);
        let fields = stored_entries(&mut conn, &data).await;
        assert!(
            !fields.contains_key(b"old".as_slice()),
            "lock {with_lock}: the expired record's entries must not be adopted: {fields:?}"
        );
        assert_eq!(store.load(&id, None).await.unwrap().unwrap().record, fresh);
        assert_eq!(
            pexpiretime(&mut conn, &data).await,
            fresh.meta.expires() as i64 - 1
        );
        let locked: i64 = redis::cmd("EXISTS")
            .arg(&lock)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(locked, 0, "lock {with_lock}: the stale lock must be gone");
        store.destroy(&id).await.unwrap();
    }
}

/// Writes, under `data`, a session of this layout that expired five seconds
/// ago with an entry `old` and no native expiry, and under `lock` (if
/// `with_lock`) a lock that outlives it.
async fn write_expired_record(
    conn: &mut MultiplexedConnection,
    data: &str,
    lock: &str,
    with_lock: bool,
) {
    let now = now_ms();
    let meta = format!("{:011x}{:011x}{:x}:0", now - 65_000, now - 5_000, 60_000);
    let _: () = redis::cmd("SET")
        .arg(data)
        .arg([meta.as_bytes(), b"|\x81\xa3old\xa5stale"].concat())
        .query_async(conn)
        .await
        .unwrap();
    if with_lock {
        let _: () = redis::cmd("SET")
            .arg(lock)
            .arg("a token of the expired session")
            .arg("PX")
            .arg(60_000)
            .query_async(conn)
            .await
            .unwrap();
    }
}

/// Tasks racing to create one id over an expired record and its lock:
/// exactly one gets `Created`, its record is the one stored, and nothing of
/// the expired record remains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_creates_over_an_expired_record_have_one_winner() {
    let store = store_with_prefix(&unique_prefix("race-expired")).await;
    let mut conn = raw(&support::shared().url()).await;
    for _ in 0..5 {
        let id = SessionId::generate();
        let (data, lock) = store.keys_of(&id);
        write_expired_record(&mut conn, &data, &lock, true).await;
        let tasks: Vec<_> = (0..8u8)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let mine = record(&[("who", &[b'0' + i])], Duration::from_secs(60));
                    let created = store.create(&id, &mine).await.unwrap();
                    (created, mine)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for task in tasks {
            let (created, mine) = task.await.unwrap();
            if created == Created::Created {
                winners.push(mine);
            } else {
                assert_eq!(created, Created::IdTaken);
            }
        }
        assert_eq!(winners.len(), 1, "exactly one of 8 racing creates wins");
        assert_eq!(
            store.load(&id, None).await.unwrap().unwrap().record,
            winners[0],
            "the stored record is the winner's, with nothing of the expired one"
        );
        assert!(matches!(
            store.lock(&id, Duration::from_secs(5)).await.unwrap(),
            Locked::Acquired { .. }
        ));
        store.destroy(&id).await.unwrap();
    }
}

/// Sessions of every size, and without entries, are written alike: the
/// same entries, metadata and native expiry (and the map's every length
/// format: fixmap up to 15 entries, map16 beyond).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_writes_sessions_of_every_size_alike() {
    let store = store().await;
    let mut conn = raw(&support::shared().url()).await;
    for n in [0, 1, 15, 16, 99, 100, 101, 250] {
        let id = SessionId::generate();
        let entries: Entries = (0..n)
            .map(|i| (format!("key-{i:03}"), i.to_string().into_bytes()))
            .collect();
        let rec = Record {
            entries,
            meta: Meta::new(now_ms(), Duration::from_secs(60), None),
        };
        assert_eq!(store.create(&id, &rec).await.unwrap(), Created::Created);
        assert_eq!(
            store.load(&id, None).await.unwrap().unwrap().record,
            rec,
            "{n} entries"
        );
        let (data, _) = store.keys_of(&id);
        assert_eq!(
            pexpiretime(&mut conn, &data).await,
            rec.meta.expires() as i64 - 1,
            "{n} entries"
        );
        assert_eq!(
            store.create(&id, &rec).await.unwrap(),
            Created::IdTaken,
            "{n} entries"
        );
        store.destroy(&id).await.unwrap();
    }
}

/// What owners cost on one Redis server (issue 15; rows for BENCHMARKS.md,
/// not a timed test): `testkit::owners::costs`, as PostgreSQL runs it. Run
/// them side by side, in release: `bench/owner-costs.sh`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, run on demand"]
async fn owner_costs() {
    let store = store_with_prefix(&unique_prefix("costs")).await;
    for (what, us) in sessionkit_core::testkit::owners::costs(&store, 200).await {
        println!("owner cost\tredis\t{what}\t{us}");
    }
}
