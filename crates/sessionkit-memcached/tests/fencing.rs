//! Atomic fencing: no write is accepted from a holder whose lock was taken over.
//!
//! The lock lives in the session item, so a fenced write checks the token
//! it read and writes with that read's CAS: if another request took the
//! lock in between, the write fails and the retry sees the new owner. These
//! tests race fenced writes against takeovers over and over, with holders
//! on separate stores (separate connection pools, like separate app
//! servers), and check the outcome through the data: every fenced write
//! sets the whole `log` to what its holder saw when it took the lock plus
//! one entry, so a write from a holder whose lock had been taken over would
//! either drop entries that were accepted or show up where the new holder
//! did not see it.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::{Memcached, builder, id_on};
use sessionkit_core::record::{Delta, Entries, Meta, Record, Touch, now_ms};
use sessionkit_core::store::{Applied, Created, Fence, IdChanged, Locked, SessionStore};
use sessionkit_core::{LockToken, SessionId};
use sessionkit_memcached::{MemcachedStore, ServerList};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

const LIFETIME: Duration = Duration::from_secs(600);
const LONG: Duration = Duration::from_secs(30);

fn new_record(log: &[String]) -> Record {
    Record {
        entries: [("log", encode_log(log))].into_iter().collect::<Entries>(),
        meta: Meta::new(now_ms(), LIFETIME, None),
    }
}

fn encode_log(log: &[String]) -> Vec<u8> {
    log.join(",").into_bytes()
}

fn log_of(record: &Record) -> Vec<String> {
    let bytes = record.entries.get("log").expect("the session has a log");
    if bytes.is_empty() {
        return Vec::new();
    }
    String::from_utf8(bytes.to_vec())
        .unwrap()
        .split(',')
        .map(str::to_owned)
        .collect()
}

/// A delta that sets the log to `log`.
fn set_log(log: &[String]) -> Delta {
    let mut delta = Delta::default();
    delta.set("log", encode_log(log));
    delta
}

fn fence(token: &LockToken, release: bool) -> Option<Fence<'_>> {
    Some(Fence { token, release })
}

async fn lock_until_acquired(
    store: &MemcachedStore,
    id: &SessionId,
    ttl: Duration,
) -> (LockToken, Record) {
    let started = Instant::now();
    loop {
        match store.lock(id, ttl).await.unwrap() {
            Locked::Acquired { token, record } => return (token, record),
            Locked::Held => {
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "the lock must come free"
                );
                tokio::task::yield_now().await;
            }
            Locked::Absent => panic!("lock on a live session answered Absent"),
        }
    }
}

/// A small deterministic generator, so that every run races the same way
/// (the timing still varies).
fn rng(seed: u64) -> impl FnMut() -> u64 {
    let mut state = seed | 1;
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}

/// One pair of app servers, many rounds: A takes the lock with a short TTL
/// and writes under it as fast as it can, until its writes are refused; B
/// starts asking for the lock just before A's TTL runs out and takes it
/// over the moment it expires. Every write of A that was accepted must
/// have landed before B's takeover (B's lock-time record holds all of
/// them), and the write that was refused must have written nothing.
///
/// Returns how many of A's writes were accepted, and in how many rounds
/// A's last write read a valid lock but lost its compare-and-swap to B's
/// takeover: the exact race that a check-then-write design loses.
async fn race_pair(
    a: MemcachedStore,
    b: MemcachedStore,
    pair: usize,
    rounds: usize,
    short: Duration,
) -> (usize, usize) {
    let id = SessionId::generate();
    assert_eq!(
        a.create(&id, &new_record(&[])).await.unwrap(),
        Created::Created
    );
    let (mut accepted_in_all, mut raced) = (0, 0);
    for round in 0..rounds {
        let (a_token, record) = lock_until_acquired(&a, &id, short).await;
        let taken = Instant::now();
        let old_holder = {
            let a = a.clone();
            let mut view = log_of(&record);
            tokio::spawn(async move {
                let mut accepted = 0;
                for i in 0.. {
                    let entry = format!("a{pair}.{round}.{i}");
                    let mut next = view.clone();
                    next.push(entry.clone());
                    let before = a.stats();
                    match a
                        .apply(&id, &set_log(&next), fence(&a_token, false))
                        .await
                        .unwrap()
                    {
                        Applied::Applied(_) => {
                            view = next;
                            accepted += 1;
                        }
                        Applied::LockLost => {
                            let lost_a_race = a.stats().since(&before).cas_conflicts > 0;
                            return (view, accepted, entry, lost_a_race);
                        }
                        Applied::Gone => panic!("the session is live"),
                    }
                }
                unreachable!()
            })
        };
        let new_holder = {
            let b = b.clone();
            tokio::spawn(async move {
                tokio::time::sleep_until(taken + short.saturating_sub(Duration::from_millis(2)))
                    .await;
                lock_until_acquired(&b, &id, LONG).await
            })
        };
        let (a_view, accepted, refused, lost_a_race) = old_holder.await.unwrap();
        let (b_token, b_record) = new_holder.await.unwrap();
        let b_view = log_of(&b_record);
        assert!(
            !b_view.contains(&refused),
            "round {round}: A's refused write {refused} was stored"
        );
        assert_eq!(
            b_view, a_view,
            "pair {pair}, round {round}: B took the lock over and must see exactly the writes A got accepted — \
             a write accepted after the takeover is missing from B's view"
        );
        raced += usize::from(lost_a_race);
        accepted_in_all += accepted;

        // B's own write goes through, and A's token is dead for good.
        let b_log = vec![format!("b{pair}.{round}")];
        assert!(matches!(
            b.apply(&id, &set_log(&b_log), fence(&b_token, true))
                .await
                .unwrap(),
            Applied::Applied(_)
        ));
        assert_eq!(
            a.apply(&id, &set_log(&[]), fence(&a_token, true))
                .await
                .unwrap(),
            Applied::LockLost
        );
        let stored = a.load(&id, None).await.unwrap().expect("live");
        assert_eq!(log_of(&stored.record), b_log);
    }
    a.destroy(&id).await.unwrap();
    (accepted_in_all, raced)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fenced_write_never_lands_after_a_takeover() {
    const PAIRS: usize = 8;
    const ROUNDS: usize = 30;
    let s1 = Memcached::start();
    let s2 = Memcached::start();
    let started = Instant::now();
    let handles: Vec<_> = (0..PAIRS)
        .map(|pair| {
            // Two app servers per pair: each its own store, pool and counters.
            let a = builder(&[&s1, &s2]).build().unwrap();
            let b = builder(&[&s1, &s2]).build().unwrap();
            tokio::spawn(race_pair(a, b, pair, ROUNDS, Duration::from_millis(20)))
        })
        .collect();
    let (mut accepted, mut raced) = (0, 0);
    for handle in handles {
        let (a, r) = handle.await.unwrap();
        accepted += a;
        raced += r;
    }
    // How often the window is hit depends on scheduling; the next test
    // hits it on purpose.
    println!(
        "{} takeovers raced by {accepted} accepted fenced writes in {:?}; in {raced} of them \
         the old holder's last write read a valid lock and lost its compare-and-swap to the takeover",
        PAIRS * ROUNDS,
        started.elapsed()
    );
    assert!(
        accepted > 0,
        "the old holders must get writes in before their locks expire"
    );
}

/// A TCP proxy in front of a memcached server that can hold back every
/// batch starting with `ms` (a write) for a while: a stalled network, or
/// an app server paused between reading and writing.
struct StallingProxy {
    addr: String,
    stall_ms: Arc<AtomicU64>,
}

impl StallingProxy {
    async fn start(upstream: String) -> StallingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stall_ms = Arc::new(AtomicU64::new(0));
        let stall = stall_ms.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                let (mut from_client, mut to_client) = client.into_split();
                let (mut from_server, mut to_server) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
                });
                let stall = stall.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match from_client.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        let ms = stall.load(Ordering::SeqCst);
                        if ms > 0 && buf[..n].starts_with(b"ms ") {
                            tokio::time::sleep(Duration::from_millis(ms)).await;
                        }
                        if to_server.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        StallingProxy { addr, stall_ms }
    }

    fn stall(&self, by: Duration) {
        self.stall_ms.store(by.as_millis() as u64, Ordering::SeqCst);
    }
}

/// The window on purpose: A's fenced write reads the item while its lock
/// still has `left` to run (well above any safety margin a check-then-write
/// design might keep), then its write is held back on the network until
/// well after the lock expired and B took it over. The write must be
/// refused (`LockLost`) and write nothing. Should B be late (a slow
/// machine), A's write may land first — legitimately, as nobody had the
/// lock — and then B must see it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fenced_write_stalled_past_a_takeover_is_refused() {
    const TTL: Duration = Duration::from_millis(200);
    let server = Memcached::start();
    let proxy = StallingProxy::start(server.addr()).await;
    // A reaches the server through the proxy, B directly.
    let a = MemcachedStore::builder(ServerList::parse(&proxy.addr).unwrap())
        .request_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let b = builder(&[&server]).build().unwrap();
    let id = SessionId::generate();
    assert_eq!(
        a.create(&id, &new_record(&[])).await.unwrap(),
        Created::Created
    );

    let mut refused_after_reading_a_valid_lock = 0;
    let lefts = [120, 80, 40, 20];
    for (round, left) in lefts.into_iter().map(Duration::from_millis).enumerate() {
        let (a_token, _) = lock_until_acquired(&a, &id, TTL).await;
        let taken = Instant::now();
        let new_holder = {
            let b = b.clone();
            tokio::spawn(async move {
                tokio::time::sleep_until(taken + TTL - Duration::from_millis(2)).await;
                lock_until_acquired(&b, &id, LONG).await
            })
        };
        tokio::time::sleep_until(taken + TTL - left).await;
        // A's read goes through at once; its write arrives 80 ms after
        // the lock expired.
        proxy.stall(left + Duration::from_millis(80));
        let before = a.stats();
        let entry = format!("a{round}");
        let answer = a
            .apply(
                &id,
                &set_log(std::slice::from_ref(&entry)),
                fence(&a_token, false),
            )
            .await
            .unwrap();
        let conflicts = a.stats().since(&before).cas_conflicts;
        proxy.stall(Duration::ZERO);
        let (b_token, b_record) = new_holder.await.unwrap();
        let b_view = log_of(&b_record);
        match answer {
            Applied::LockLost => {
                assert!(
                    !b_view.contains(&entry),
                    "round {round}: a refused write was stored"
                );
                refused_after_reading_a_valid_lock += usize::from(conflicts > 0);
            }
            Applied::Applied(_) => assert_eq!(
                b_view,
                std::slice::from_ref(&entry),
                "round {round}: A's write was accepted, so it must have landed before B took the lock"
            ),
            Applied::Gone => panic!("the session is live"),
        }
        let after = b.load(&id, None).await.unwrap().expect("live").record;
        assert_eq!(
            log_of(&after),
            b_view,
            "round {round}: B's lock-time view is what is stored"
        );
        assert!(matches!(
            b.apply(&id, &set_log(&[]), fence(&b_token, true))
                .await
                .unwrap(),
            Applied::Applied(_)
        ));
    }
    println!(
        "{refused_after_reading_a_valid_lock} of {} stalled fenced writes read a valid lock, \
         lost their compare-and-swap to the takeover and were refused",
        lefts.len()
    );
    assert!(
        refused_after_reading_a_valid_lock > 0,
        "the stalled writes must hit the window between a fenced write's read and its write"
    );
    b.destroy(&id).await.unwrap();
}

/// Many app servers, one session, locks that expire while held: each task
/// takes the lock (short TTL), holds it for a random time on either side of
/// the TTL, then writes `log = what it saw + its entry`, fenced (releasing
/// or not). Meanwhile another app server writes an unrelated key without a
/// lock. Every accepted fenced write must be in the final log exactly once
/// and no refused one: so no holder ever wrote over a newer holder's data.
/// And no unfenced write is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn holders_of_expiring_locks_never_overwrite_each_other() {
    const TASKS: usize = 8;
    const ITERATIONS: usize = 25;
    const TTL: Duration = Duration::from_millis(10);
    let s1 = Memcached::start();
    let s2 = Memcached::start();
    let first = builder(&[&s1, &s2]).build().unwrap();
    let id = SessionId::generate();
    assert_eq!(
        first.create(&id, &new_record(&[])).await.unwrap(),
        Created::Created
    );
    let started = Instant::now();

    let done = Arc::new(AtomicBool::new(false));
    let noise = {
        let store = builder(&[&s1, &s2]).build().unwrap();
        let done = done.clone();
        tokio::spawn(async move {
            let mut last = None;
            let mut n = 0u64;
            while !done.load(Ordering::Relaxed) {
                let mut delta = Delta::default();
                delta.set("noise", n.to_string().into_bytes());
                match store.apply(&id, &delta, None).await.unwrap() {
                    Applied::Applied(_) => last = Some(n),
                    other => panic!("an unfenced write on a live session answered {other:?}"),
                }
                n += 1;
            }
            last
        })
    };

    let holders: Vec<_> = (0..TASKS)
        .map(|t| {
            let store = builder(&[&s1, &s2]).build().unwrap();
            tokio::spawn(async move {
                let mut next = rng(0x9e37_79b9_7f4a_7c15 ^ t as u64);
                let (mut accepted, mut refused) = (Vec::new(), Vec::new());
                for i in 0..ITERATIONS {
                    let (token, record) = lock_until_acquired(&store, &id, TTL).await;
                    let hold = Duration::from_micros(next() % (2 * TTL.as_micros() as u64));
                    tokio::time::sleep(hold).await;
                    let entry = format!("t{t}.{i}");
                    let mut log = log_of(&record);
                    log.push(entry.clone());
                    let release = i % 2 == 0;
                    match store
                        .apply(&id, &set_log(&log), fence(&token, release))
                        .await
                        .unwrap()
                    {
                        Applied::Applied(_) => {
                            accepted.push(entry);
                            if !release {
                                store.unlock(&id, &token).await.unwrap();
                            }
                        }
                        Applied::LockLost => refused.push(entry),
                        Applied::Gone => panic!("the session is live"),
                    }
                }
                (accepted, refused)
            })
        })
        .collect();
    let (mut accepted, mut refused) = (Vec::new(), Vec::new());
    for handle in holders {
        let (a, r) = handle.await.unwrap();
        accepted.extend(a);
        refused.extend(r);
    }
    done.store(true, Ordering::Relaxed);
    let last_noise = noise.await.unwrap();

    let stored = first.load(&id, None).await.unwrap().expect("live").record;
    let mut log = log_of(&stored);
    println!(
        "{} fenced writes by {TASKS} holders of {TTL:?} locks in {:?}: {} accepted, {} refused",
        accepted.len() + refused.len(),
        started.elapsed(),
        accepted.len(),
        refused.len()
    );
    for entry in &refused {
        assert!(!log.contains(entry), "the refused write {entry} was stored");
    }
    log.sort();
    accepted.sort();
    assert_eq!(
        log, accepted,
        "every accepted fenced write must be in the log exactly once: a holder wrote over a newer holder's data"
    );
    assert!(
        !accepted.is_empty() && !refused.is_empty(),
        "both outcomes must occur"
    );
    assert_eq!(
        stored.entries.get("noise"),
        last_noise.map(|n| n.to_string().into_bytes()).as_deref(),
        "unfenced writes next to the locked ones must not be lost"
    );
    first.destroy(&id).await.unwrap();
}

/// Writes (unfenced) race a `change_id` on the old id, while a reader
/// checks that the session never shows under both ids: every write that
/// was accepted is in the moved session, the old id is gone, and the
/// session never lived under both ids at once. Both placements: old and
/// new id on one server, and on two.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn change_id_racing_writes_loses_none_and_never_shows_twice() {
    let s1 = Memcached::start();
    let s2 = Memcached::start();
    let store = builder(&[&s1, &s2]).build().unwrap();
    for round in 0..20 {
        let old = id_on(&store, &s1);
        let new = if round % 2 == 0 {
            id_on(&store, &s1)
        } else {
            id_on(&store, &s2)
        };
        assert_eq!(
            store.create(&old, &new_record(&[])).await.unwrap(),
            Created::Created
        );
        let writer = {
            let store = builder(&[&s1, &s2]).build().unwrap();
            tokio::spawn(async move {
                let mut accepted = Vec::new();
                for i in 0.. {
                    let key = format!("w{i}");
                    let mut delta = Delta::default();
                    delta.set(&key, b"1".to_vec());
                    match store.apply(&old, &delta, None).await.unwrap() {
                        Applied::Applied(_) => accepted.push(key),
                        Applied::Gone => return accepted,
                        Applied::LockLost => panic!("unfenced"),
                    }
                }
                unreachable!()
            })
        };
        let done = Arc::new(AtomicBool::new(false));
        let reader = {
            let store = builder(&[&s1, &s2]).build().unwrap();
            let done = done.clone();
            tokio::spawn(async move {
                let mut reads = 0;
                while !done.load(Ordering::Relaxed) {
                    // New first: once the new id is live the old one must
                    // be gone for good.
                    let under_new = store.load(&new, None).await.unwrap().is_some();
                    let under_old = store.load(&old, None).await.unwrap().is_some();
                    assert!(
                        !(under_new && under_old),
                        "round {round}: the session showed under both ids"
                    );
                    reads += 1;
                }
                reads
            })
        };
        tokio::time::sleep(Duration::from_millis(3)).await;
        let changed = store.change_id(&old, &new, None).await.unwrap();
        assert!(matches!(changed, IdChanged::Changed(_)), "{changed:?}");
        let accepted = writer.await.unwrap();
        done.store(true, Ordering::Relaxed);
        let reads = reader.await.unwrap();
        assert!(reads > 0);
        let moved = store.load(&new, None).await.unwrap().expect("moved").record;
        for key in &accepted {
            assert!(
                moved.entries.contains(key),
                "round {round}: the accepted write {key} was lost by the move"
            );
        }
        assert!(store.load(&old, None).await.unwrap().is_none());
        store.destroy(&new).await.unwrap();
    }
}

/// Everything that rewrites a locked session without a fence (buffered
/// writes, touches) keeps its lock, and the lock is part of the session's
/// one item: there is no other item on the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfenced_writes_and_touches_keep_the_lock_in_the_one_item() {
    let s1 = Memcached::start();
    let store = builder(&[&s1]).build().unwrap();
    let id = SessionId::generate();
    assert_eq!(
        store.create(&id, &new_record(&[])).await.unwrap(),
        Created::Created
    );
    let Locked::Acquired { token, .. } = store.lock(&id, LONG).await.unwrap() else {
        panic!("lock")
    };
    let key = store.key_for(&id);
    assert!(s1.get(&key).is_some(), "the session item");
    assert!(
        s1.get(&format!("{key}:lock")).is_none(),
        "no lock item: the lock is in the session's item"
    );

    assert!(matches!(
        store
            .apply(&id, &set_log(&["x".into()]), None)
            .await
            .unwrap(),
        Applied::Applied(_)
    ));
    // Let the clock move, so that the touch moves the expiry and rewrites.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let loaded = store
        .load(&id, Some(Touch::always()))
        .await
        .unwrap()
        .unwrap();
    assert!(loaded.touched, "the touch rewrote the item");
    assert_eq!(
        store.lock(&id, LONG).await.unwrap(),
        Locked::Held,
        "buffered writes and touches must keep the lock"
    );
    assert!(store.renew_lock(&id, &token, LONG).await.unwrap());
    assert!(matches!(
        store
            .apply(&id, &set_log(&["y".into()]), fence(&token, true))
            .await
            .unwrap(),
        Applied::Applied(_)
    ));
    let Locked::Acquired { token, record } = store.lock(&id, LONG).await.unwrap() else {
        panic!("the release must have freed the lock")
    };
    assert_eq!(log_of(&record), ["y"]);
    store.unlock(&id, &token).await.unwrap();
    store.destroy(&id).await.unwrap();
    assert!(
        s1.get(&key).is_none(),
        "destroy removes the one item, lock included"
    );
}
