//! Limits and what lands on the server: exptimes over 30 days, key length, item size, hashed ids.

mod common;

use std::time::Duration;

use common::{Memcached, builder};
use sessionkit_core::codec::encode_record;
use sessionkit_core::record::{Delta, Entries, Meta, Record, now_ms};
use sessionkit_core::store::{Applied, Created, Fence, Locked, SessionStore};
use sessionkit_core::{ErrorKind, SessionId};
use sessionkit_memcached::{DEFAULT_ITEM_SIZE_LIMIT, ITEM_OVERHEAD, MemcachedStore};

const DAY: u64 = 24 * 3600;

fn record_with(lifetime: Duration, entries: Entries) -> Record {
    Record {
        entries,
        meta: Meta::new(now_ms(), lifetime, None),
    }
}

fn small(lifetime: Duration) -> Record {
    record_with(
        lifetime,
        [("n", b"1".to_vec())].into_iter().collect::<Entries>(),
    )
}

/// The size of the session item the store writes for `record`: a 28-byte
/// header (magic, lock expiry, lock token) and the core blob.
fn item_value_len(record: &Record) -> usize {
    28 + encode_record(record).len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttls_over_thirty_days_are_sent_as_absolute_times() {
    let a = Memcached::start();
    let store = builder(&[&a]).build().unwrap();

    // 60 days: sent relative, memcached would read it as a time in 1970 and
    // drop the item at once.
    let id = SessionId::generate();
    let long = Duration::from_secs(60 * DAY);
    assert_eq!(
        store.create(&id, &small(long)).await.unwrap(),
        Created::Created
    );
    assert!(
        store.load(&id, None).await.unwrap().is_some(),
        "a 60-day session must be kept"
    );
    let native = a.ttl(&store.key_for(&id)).expect("the item exists") as u64;
    assert!(
        (60 * DAY - 5..=60 * DAY + 2).contains(&native),
        "native TTL {native} s, expected about 60 days ({} s)",
        60 * DAY
    );

    // Applies and touches keep converting.
    let mut delta = Delta::default();
    delta.set_ttl(Duration::from_secs(90 * DAY));
    assert!(matches!(
        store.apply(&id, &delta, None).await.unwrap(),
        Applied::Applied(_)
    ));
    let native = a.ttl(&store.key_for(&id)).unwrap() as u64;
    assert!(
        (90 * DAY - 5..=90 * DAY + 2).contains(&native),
        "native TTL {native}"
    );

    // 29 days stays relative, rounded up plus one second.
    let short = SessionId::generate();
    assert_eq!(
        store
            .create(&short, &small(Duration::from_secs(29 * DAY)))
            .await
            .unwrap(),
        Created::Created
    );
    let native = a.ttl(&store.key_for(&short)).unwrap() as u64;
    assert!(
        (29 * DAY - 5..=29 * DAY + 1).contains(&native),
        "native TTL {native}"
    );

    // A lock, even for 40 days, lives in the session's item: the item keeps
    // the session's native TTL and no other item appears.
    let Locked::Acquired { token, .. } = store
        .lock(&id, Duration::from_secs(40 * DAY))
        .await
        .unwrap()
    else {
        panic!("lock")
    };
    let native = a.ttl(&store.key_for(&id)).unwrap() as u64;
    assert!(
        (90 * DAY - 5..=90 * DAY + 2).contains(&native),
        "native TTL {native} after locking"
    );
    assert!(a.get(&format!("{}:lock", store.key_for(&id))).is_none());
    assert_eq!(
        store.lock(&id, Duration::from_secs(5)).await.unwrap(),
        Locked::Held
    );
    store.unlock(&id, &token).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_longest_prefix_fits_the_key_limit_and_longer_is_refused() {
    let a = Memcached::start();
    let longest = "p".repeat(186);
    let store = builder(&[&a]).prefix(longest.clone()).build().unwrap();
    let id = SessionId::generate();
    assert_eq!(store.key_for(&id).len(), 250);
    assert_eq!(
        store
            .create(&id, &small(Duration::from_secs(60)))
            .await
            .unwrap(),
        Created::Created
    );
    let Locked::Acquired { token, .. } = store.lock(&id, Duration::from_secs(5)).await.unwrap()
    else {
        panic!("lock with a 250-byte key")
    };
    assert!(store.load(&id, None).await.unwrap().is_some());
    // The lock is inside the item: no longer key is ever needed.
    let key = store.key_for(&id);
    assert!(a.get(&key).is_some());
    store.unlock(&id, &token).await.unwrap();
    store.destroy(&id).await.unwrap();
    assert!(a.get(&key).is_none(), "destroy removes the item");
    assert!(a.keys().is_empty(), "nothing else was stored");

    let err = builder(&[&a])
        .prefix(format!("{longest}x"))
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig);
    assert_eq!(err.setting(), Some("prefix"));
    assert!(err.to_string().contains("251 bytes"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_up_to_the_item_size_limit_are_stored_and_beyond_fail_clearly() {
    let a = Memcached::start(); // memcached's default -I: 1 MiB
    let store = builder(&[&a]).build().unwrap();
    let id = SessionId::generate();
    let key_len = store.key_for(&id).len();
    let room = DEFAULT_ITEM_SIZE_LIMIT - key_len - ITEM_OVERHEAD;

    let sized = |value_len: usize| {
        let mut r = small(Duration::from_secs(60));
        r.entries.insert("big", vec![7u8; 0]);
        let base = item_value_len(&r);
        r.entries.insert("big", vec![7u8; value_len - base]);
        assert_eq!(item_value_len(&r), value_len);
        r
    };

    // Exactly at the limit: stored and read back by the real server.
    let fits = sized(room);
    assert_eq!(store.create(&id, &fits).await.unwrap(), Created::Created);
    let loaded = store
        .load(&id, None)
        .await
        .unwrap()
        .expect("the largest session loads");
    assert_eq!(loaded.record.entries, fits.entries);
    // Locking never changes the item's size: the largest session can be
    // locked, written under its lock and released.
    let Locked::Acquired { token, .. } = store.lock(&id, Duration::from_secs(5)).await.unwrap()
    else {
        panic!("the largest session must be lockable")
    };
    let mut same_size = Delta::default();
    same_size.set("n", b"1".to_vec());
    assert!(matches!(
        store
            .apply(
                &id,
                &same_size,
                Some(Fence {
                    token: &token,
                    release: true
                })
            )
            .await
            .unwrap(),
        Applied::Applied(_)
    ));

    // One byte more: refused before sending, with the sizes.
    let other = SessionId::generate();
    let err = store.create(&other, &sized(room + 1)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Codec);
    assert_eq!(err.operation(), Some("create"));
    let text = err.to_string();
    assert!(text.contains("value too large"), "{text}");
    assert!(text.contains(&(room + 1).to_string()), "{text}");
    assert!(
        store.load(&other, None).await.unwrap().is_none(),
        "nothing is written"
    );

    // An apply that would grow the session past the limit changes nothing.
    let mut grow = Delta::default();
    grow.set("more", vec![1u8; 10]);
    let err = store.apply(&id, &grow, None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Codec);
    assert!(err.to_string().contains("value too large"), "{err}");
    let after = store.load(&id, None).await.unwrap().unwrap();
    assert_eq!(
        after.record.entries, fits.entries,
        "a refused apply writes nothing"
    );

    // A smaller configured limit is enforced as well.
    let tight = builder(&[&a]).item_size_limit(8 * 1024).build().unwrap();
    let mut r = small(Duration::from_secs(60));
    r.entries.insert("v", vec![0u8; 9 * 1024]);
    let err = tight.create(&SessionId::generate(), &r).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Codec);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_a_smaller_item_size_refuses_clearly() {
    let a = Memcached::start_with(&["-I", "64k", "-o", "slab_chunk_max=32768"]);
    // Configured for 1 MiB, but the server takes 64 KiB.
    let store = builder(&[&a]).build().unwrap();
    let mut r = small(Duration::from_secs(60));
    r.entries.insert("v", vec![0u8; 100 * 1024]);
    let id = SessionId::generate();
    let err = store.create(&id, &r).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Codec, "{err}");
    let text = err.to_string();
    assert!(text.contains("value too large"), "{text}");
    assert!(text.contains(&a.addr()), "{text}");
    // The connection survives a refused item.
    assert_eq!(
        store
            .create(&id, &small(Duration::from_secs(60)))
            .await
            .unwrap(),
        Created::Created
    );
}

/// `change_id` deletes the old id before it writes the new one; when the
/// new id's server refuses the item as too large (a smaller `-I` than the
/// old one's), nothing was stored there, and the session is put back under
/// the old id, lock included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_refused_as_too_large_keeps_the_session() {
    let a = Memcached::start();
    let b = Memcached::start_with(&["-I", "64k", "-o", "slab_chunk_max=32768"]);
    let store = builder(&[&a, &b]).build().unwrap();
    let mut r = small(Duration::from_secs(60));
    r.entries.insert("v", vec![0u8; 100 * 1024]);
    let old = common::id_on(&store, &a);
    assert_eq!(store.create(&old, &r).await.unwrap(), Created::Created);
    let Locked::Acquired { token, .. } = store.lock(&old, Duration::from_secs(30)).await.unwrap()
    else {
        panic!("lock")
    };
    let new = common::id_on(&store, &b);
    let err = store.change_id(&old, &new, Some(&token)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Codec, "{err}");
    assert!(err.to_string().contains("value too large"), "{err}");
    let back = store.load(&old, None).await.unwrap().expect("put back");
    assert_eq!(back.record.entries, r.entries);
    assert!(store.load(&new, None).await.unwrap().is_none());
    assert_eq!(
        store.lock(&old, Duration::from_secs(5)).await.unwrap(),
        Locked::Held,
        "the lock came back with the session"
    );
    store.unlock(&old, &token).await.unwrap();
    store.destroy(&old).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_ids_never_appear_in_keys_or_values() {
    let a = Memcached::start();
    let b = Memcached::start();
    let store = builder(&[&a, &b]).build().unwrap();
    let ids: Vec<SessionId> = (0..12).map(|_| SessionId::generate()).collect();
    let mut tokens = Vec::new();
    for id in &ids {
        let r = small(Duration::from_secs(60));
        assert_eq!(store.create(id, &r).await.unwrap(), Created::Created);
        let Locked::Acquired { token, .. } = store.lock(id, Duration::from_secs(30)).await.unwrap()
        else {
            panic!("lock")
        };
        let mut delta = Delta::default();
        delta.set("k", b"v".to_vec());
        let fence = Some(Fence {
            token: &token,
            release: false,
        });
        assert!(matches!(
            store.apply(id, &delta, fence).await.unwrap(),
            Applied::Applied(_)
        ));
        tokens.push(token);
    }
    // A fenced move takes the lock along, inside the item, and leaves a
    // tombstone under the old key (which names the new key, hashed): 13
    // items.
    let moved = store.new_id_for(&ids[0]);
    let changed = store
        .change_id(&ids[0], &moved, Some(&tokens[0]))
        .await
        .unwrap();
    assert!(matches!(
        changed,
        sessionkit_core::store::IdChanged::Changed(_)
    ));

    assert_eq!(
        store.lock(&moved, Duration::from_secs(30)).await.unwrap(),
        Locked::Held,
        "the lock moved with the session"
    );

    let dump = dump_settled(&[&a, &b], 13);
    assert_eq!(
        dump.len(),
        13,
        "12 sessions, each with its lock inside, and a tombstone: {:?}",
        dump.iter().map(|(k, _)| k).collect::<Vec<_>>()
    );
    for (server, count) in [(&a, dump_of(&a)), (&b, dump_of(&b))] {
        assert!(
            count > 0,
            "sessions must be spread over both servers ({} has none)",
            server.addr()
        );
    }
    for id in ids.iter().chain([&moved]) {
        let text = id.expose();
        for (key, value) in &dump {
            assert!(!key.contains(&text), "a key holds a raw id: {key}");
            assert!(
                !contains(value, text.as_bytes()) && !contains(value, id.as_bytes()),
                "the value of {key} holds a raw id"
            );
        }
    }

    // The check itself works: without hashing the ids are right there.
    let raw = builder(&[&a])
        .prefix("raw:")
        .hash_ids(false)
        .build()
        .unwrap();
    let id = SessionId::generate();
    let _ = raw
        .create(&id, &small(Duration::from_secs(60)))
        .await
        .unwrap();
    assert!(a.keys().iter().any(|k| k.contains(&id.expose())));
}

fn dump_of(server: &Memcached) -> usize {
    server.keys().len()
}

fn dump(servers: &[&Memcached]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for server in servers {
        for key in server.keys() {
            let value = server.get(&key).expect("a dumped key exists");
            out.push((key, value));
        }
    }
    out
}

/// [`dump`], asked again for a while until it holds `expected` items:
/// `lru_crawler metadump` now and then leaves out an item written a moment
/// before (it missed one of 13 in one run of `scripts/test.sh`).
fn dump_settled(servers: &[&Memcached], expected: usize) -> Vec<(String, Vec<u8>)> {
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        let out = dump(servers);
        if out.len() == expected || std::time::Instant::now() >= deadline {
            return out;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn adding_a_fourth_server_moves_about_a_quarter_of_the_sessions() {
    let three = MemcachedStore::new("10.1.0.1:11211,10.1.0.2:11211,10.1.0.3:11211").unwrap();
    let four =
        MemcachedStore::new("10.1.0.1:11211,10.1.0.2:11211,10.1.0.3:11211,10.1.0.4:11211").unwrap();
    let ids: Vec<SessionId> = (0..20_000).map(|_| SessionId::generate()).collect();
    let mut moved = 0;
    for id in &ids {
        let before = three.server_for(id).addr();
        let after = four.server_for(id).addr();
        if before != after {
            moved += 1;
            assert_eq!(
                after, "10.1.0.4:11211",
                "sessions may only move to the new server"
            );
        }
    }
    let share = moved as f64 / ids.len() as f64;
    assert!(
        (0.17..=0.33).contains(&share),
        "3 → 4 servers must move about 1/4 of the sessions, moved {share:.3}"
    );
}
