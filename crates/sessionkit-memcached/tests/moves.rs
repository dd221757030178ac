//! `change_id` across failures, on two real servers: a fault injected at each of its steps, and every state a crash between steps leaves, end with the session under exactly one id.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{Memcached, id_on};
use sessionkit_core::codec::encode_record;
use sessionkit_core::record::{Entries, Meta, Record, now_ms};
use sessionkit_core::store::{Created, IdChanged, Locked, SessionStore};
use sessionkit_core::{LockToken, SessionId};
use sessionkit_memcached::{MemcachedStore, ServerList};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn record() -> Record {
    Record {
        entries: [("user", b"\"ada\"".to_vec())]
            .into_iter()
            .collect::<Entries>(),
        meta: Meta::new(now_ms(), Duration::from_secs(600), None),
    }
}

/// What the proxy does to the exchange it was told to break.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Closes the connection without forwarding: not applied, but the
    /// client cannot know (it sent the command).
    Lose,
    /// Forwards, lets the server apply it, and closes without the reply.
    DropReply,
    /// Neither forwards nor answers: the client times out.
    Hang,
}

/// The exchanges (one batch of commands and its reply) counted over every
/// proxy that shares the plan, and the one to break.
#[derive(Debug)]
struct Plan {
    seen: AtomicUsize,
    break_at: AtomicUsize,
    fault: Fault,
}

/// Bytes that complete one reply of the meta protocol: a line, and after a
/// `VA <size>` line the value and its CRLF.
fn complete(reply: &[u8]) -> bool {
    let Some(end) = reply.windows(2).position(|w| w == b"\r\n") else {
        return false;
    };
    let line = String::from_utf8_lossy(&reply[..end]);
    match line.strip_prefix("VA ") {
        Some(rest) => {
            let size: usize = rest.split(' ').next().unwrap().parse().unwrap();
            reply.len() >= end + 2 + size + 2
        }
        None => true,
    }
}

/// A proxy to `upstream` that forwards every exchange but the one `plan`
/// breaks. Each request of the store is a single command, so one read is
/// one exchange.
async fn proxy(upstream: String, plan: Arc<Plan>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let (mut client, _) = listener.accept().await.unwrap();
            let (upstream, plan) = (upstream.clone(), plan.clone());
            tokio::spawn(async move {
                let mut server = TcpStream::connect(&upstream).await.unwrap();
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match client.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    let k = plan.seen.fetch_add(1, Ordering::SeqCst) + 1;
                    let fault = (k == plan.break_at.load(Ordering::SeqCst)).then_some(plan.fault);
                    match fault {
                        Some(Fault::Lose) => return,
                        Some(Fault::Hang) => {
                            tokio::time::sleep(Duration::from_secs(3)).await;
                            return;
                        }
                        _ => {}
                    }
                    server.write_all(&buf[..n]).await.unwrap();
                    let mut reply = Vec::new();
                    while !complete(&reply) {
                        let n = server.read(&mut buf).await.unwrap();
                        assert!(n > 0, "memcached closed");
                        reply.extend_from_slice(&buf[..n]);
                    }
                    if fault == Some(Fault::DropReply) {
                        return;
                    }
                    if client.write_all(&reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Whether `id` holds a live session.
async fn live(store: &MemcachedStore, id: &SessionId) -> bool {
    store.load(id, None).await.unwrap().is_some()
}

/// A fault at each step of `change_id` (1 read, 2 copy, 3 commit, 4
/// finish), of each kind, fenced and not, with the new id on the old id's
/// server (`new_id_for`) and on the other one: afterwards the session is
/// under exactly one id, the old one whenever `change_id` answered an
/// error, with its data (and its lock, when fenced). Before, a lost or
/// dropped reply to the write of the new id left it under neither id, or
/// under the new one while the caller got an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_at_any_step_leaves_the_session_under_exactly_one_id() {
    let (a, b) = (Memcached::start(), Memcached::start());
    let mut outcomes = Vec::new();
    for same_server in [true, false] {
        for break_at in 1..=4 {
            for fault in [Fault::Lose, Fault::DropReply, Fault::Hang] {
                for fenced in [false, true] {
                    let plan = Arc::new(Plan {
                        seen: AtomicUsize::new(0),
                        break_at: AtomicUsize::new(usize::MAX),
                        fault,
                    });
                    let (pa, pb) = (
                        proxy(a.addr(), plan.clone()).await,
                        proxy(b.addr(), plan.clone()).await,
                    );
                    let store =
                        MemcachedStore::builder(ServerList::parse(&format!("{pa},{pb}")).unwrap())
                            .request_timeout(Duration::from_millis(300))
                            .build()
                            .unwrap();
                    let on = |addr: &str| loop {
                        let id = SessionId::generate();
                        if store.server_for(&id).addr() == addr {
                            return id;
                        }
                    };
                    let old = on(&pa);
                    let new = if same_server {
                        store.new_id_for(&old)
                    } else {
                        on(&pb)
                    };
                    assert_eq!(
                        store.create(&old, &record()).await.unwrap(),
                        Created::Created
                    );
                    let token = if fenced {
                        let Locked::Acquired { token, .. } =
                            store.lock(&old, Duration::from_secs(30)).await.unwrap()
                        else {
                            panic!("lock")
                        };
                        Some(token)
                    } else {
                        None
                    };

                    // Arm the fault, counting from the move's first exchange;
                    // every later exchange passes.
                    plan.break_at.store(
                        plan.seen.load(Ordering::SeqCst) + break_at,
                        Ordering::SeqCst,
                    );
                    let result = store.change_id(&old, &new, token.as_ref()).await;
                    // Let a hung exchange end before looking.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let case = format!(
                        "same server {same_server}, fault {fault:?} at step {break_at}, fenced {fenced}: {result:?}"
                    );
                    let (at_old, at_new) = (live(&store, &old).await, live(&store, &new).await);
                    assert!(
                        at_old != at_new,
                        "exactly one id must hold the session; (old, new) = ({at_old}, {at_new}); {case}"
                    );
                    match &result {
                        Ok(IdChanged::Changed(_)) => assert!(at_new, "{case}"),
                        Err(_) => assert!(at_old, "an error must leave the old id: {case}"),
                        Ok(other) => panic!("{other:?}: {case}"),
                    }
                    let (here, elsewhere) = if at_new { (new, old) } else { (old, new) };
                    let loaded = store.load(&here, None).await.unwrap().unwrap().record;
                    assert_eq!(loaded.entries, record().entries, "{case}");
                    if let Some(token) = token {
                        assert!(
                            store
                                .renew_lock(&here, &token, Duration::from_secs(30))
                                .await
                                .unwrap(),
                            "the lock is where the session is: {case}"
                        );
                    }
                    assert!(!live(&store, &elsewhere).await, "{case}");
                    outcomes.push((case, result.is_ok()));
                    store.destroy(&old).await.unwrap();
                    store.destroy(&new).await.unwrap();
                }
            }
        }
    }
    let moved = outcomes.iter().filter(|(_, ok)| *ok).count();
    eprintln!("{moved} of {} faulty moves committed", outcomes.len());
    // A fault at step 4 never undoes a commit; at step 1 nothing is moved.
    for (case, ok) in &outcomes {
        if case.contains("at step 4") {
            assert!(ok, "{case}");
        }
        if case.contains("at step 1") {
            assert!(!ok, "{case}");
        }
    }
}

/// The items a move writes, spelt out (see `src/value.rs`): a pending copy
/// of `record` naming the old key's part `from`.
fn pending_copy(record: &Record, lock: Option<(LockToken, u64)>, from: &str) -> Vec<u8> {
    let mut out = b"SKP\x02".to_vec();
    match lock {
        Some((token, expires)) => {
            out.extend_from_slice(&expires.to_le_bytes());
            out.extend_from_slice(token.as_bytes());
        }
        None => out.extend_from_slice(&[0; 24]),
    }
    out.push(u8::try_from(from.len()).unwrap());
    out.extend_from_slice(from.as_bytes());
    out.extend_from_slice(&encode_record(record));
    out
}

/// A tombstone naming the new key's part `to`.
fn tombstone(to: &str) -> Vec<u8> {
    let mut out = b"SKT\x02".to_vec();
    out.extend_from_slice(to.as_bytes());
    out
}

fn put(server: &Memcached, key: &str, value: &[u8]) {
    let mut request = format!("ms {key} {} T600\r\n", value.len()).into_bytes();
    request.extend_from_slice(value);
    request.extend_from_slice(b"\r\n");
    let reply = server.raw(&request, &["HD", "NS", "EX", "NF"]);
    assert!(
        reply.starts_with(b"HD"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
}

/// Every state a crash between the steps of `change_id` can leave, written
/// directly into a server, reads as the session under exactly one id:
///
/// - after step 2 (copy written, no commit): the old id only;
/// - after step 3 (committed, copy not finished): the new id only, and the
///   read finishes the copy into a plain session item;
/// - a copy whose tombstone is gone (evicted), or names another key, or
///   whose old key's part is garbage: no session, and no panic;
/// - a tombstone alone: no session, and `create` may take its id again.
///
/// Before, a copy or a tombstone was undecodable, so absent: a crash after
/// the commit left the session under neither id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_state_a_crash_between_steps_leaves_has_exactly_one_live_id() {
    let (a, b) = (Memcached::start(), Memcached::start());
    let store = common::builder(&[&a, &b]).build().unwrap();
    let prefix = "sessionkit:";
    let part = |id: &SessionId| store.key_for(id)[prefix.len()..].to_owned();
    let moved = record();
    let token = LockToken::generate();
    let lock = Some((token, now_ms() + 30_000));

    // After step 2: the old session is intact, the copy names it.
    let old = id_on(&store, &a);
    let new = store.new_id_for(&old);
    assert_eq!(
        store.create(&old, &record()).await.unwrap(),
        Created::Created
    );
    put(
        &a,
        &store.key_for(&new),
        &pending_copy(&moved, None, &part(&old)),
    );
    assert!(
        store.load(&old, None).await.unwrap().is_some(),
        "after step 2: old"
    );
    assert!(
        store.load(&new, None).await.unwrap().is_none(),
        "after step 2: new"
    );
    assert!(
        a.get(&store.key_for(&new)).is_some(),
        "a reader never deletes a copy: a move may be between its steps 2 and 3"
    );
    // The session can still move, onto that very id too (the copy is dead).
    let IdChanged::Changed(_) = store.change_id(&old, &new, None).await.unwrap() else {
        panic!("change_id after a crashed move")
    };
    assert!(store.load(&old, None).await.unwrap().is_none());
    assert!(store.load(&new, None).await.unwrap().is_some());
    store.destroy(&new).await.unwrap();

    // After step 3, fenced: the tombstone names the copy, which is the
    // session, lock included; the first read finishes it.
    let old = id_on(&store, &b);
    let new = store.new_id_for(&old);
    put(
        &b,
        &store.key_for(&new),
        &pending_copy(&moved, lock, &part(&old)),
    );
    put(&b, &store.key_for(&old), &tombstone(&part(&new)));
    assert!(
        store.load(&old, None).await.unwrap().is_none(),
        "after step 3: old"
    );
    let loaded = store
        .load(&new, None)
        .await
        .unwrap()
        .expect("after step 3: new");
    assert_eq!(loaded.record.entries, moved.entries);
    assert!(
        b.get(&store.key_for(&new)).unwrap().starts_with(b"SKM\x02"),
        "the read finished the copy"
    );
    assert!(
        store
            .renew_lock(&new, &token, Duration::from_secs(5))
            .await
            .unwrap(),
        "the lock moved with the session"
    );
    // The old id answers absent to every operation, and is free again.
    assert_eq!(
        store.lock(&old, Duration::from_secs(5)).await.unwrap(),
        Locked::Absent
    );
    assert_eq!(
        store.create(&old, &record()).await.unwrap(),
        Created::Created
    );
    store.destroy(&old).await.unwrap();
    store.destroy(&new).await.unwrap();

    // After step 3, but the copy is first touched by a write, not a read.
    let old = id_on(&store, &a);
    let new = store.new_id_for(&old);
    put(
        &a,
        &store.key_for(&new),
        &pending_copy(&moved, None, &part(&old)),
    );
    put(&a, &store.key_for(&old), &tombstone(&part(&new)));
    let mut delta = sessionkit_core::record::Delta::default();
    delta.set("n", b"1".to_vec());
    assert!(matches!(
        store.apply(&new, &delta, None).await.unwrap(),
        sessionkit_core::store::Applied::Applied(_)
    ));
    assert_eq!(
        store
            .load(&new, None)
            .await
            .unwrap()
            .unwrap()
            .record
            .entries
            .get("n"),
        Some(&b"1"[..])
    );
    assert!(store.load(&old, None).await.unwrap().is_none());
    store.destroy(&new).await.unwrap();

    // Copies that are no session: the tombstone evicted, a tombstone that
    // names another key, an old key's part that is no key at all.
    for (case, tomb, from) in [
        ("tombstone evicted", None, None),
        ("tombstone names another key", Some("0".repeat(64)), None),
        ("garbage old key part", None, Some("has space ".repeat(20))),
    ] {
        let old = id_on(&store, &a);
        let new = store.new_id_for(&old);
        let from = from.unwrap_or_else(|| part(&old));
        put(&a, &store.key_for(&new), &pending_copy(&moved, None, &from));
        if let Some(to) = tomb {
            put(&a, &store.key_for(&old), &tombstone(&to));
        }
        assert!(
            store.load(&new, None).await.unwrap().is_none(),
            "{case}: new"
        );
        assert!(
            store.load(&old, None).await.unwrap().is_none(),
            "{case}: old"
        );
        assert_eq!(
            store.create(&new, &record()).await.unwrap(),
            Created::Created,
            "{case}: a dead copy's id is free"
        );
        store.destroy(&new).await.unwrap();
        store.destroy(&old).await.unwrap();
    }
}

/// `new_id_for` draws the new id on the old id's server, so a move touches
/// one server; ids spread over both servers all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_ids_land_on_the_old_ids_server() {
    let (a, b) = (Memcached::start(), Memcached::start());
    let store = common::builder(&[&a, &b]).build().unwrap();
    for server in [&a, &b] {
        for _ in 0..20 {
            let old = id_on(&store, server);
            let new = store.new_id_for(&old);
            assert_ne!(new, old);
            assert_eq!(store.server_for(&new).addr(), server.addr());
        }
    }
    let before = store.stats();
    let old = id_on(&store, &a);
    assert_eq!(
        store.create(&old, &record()).await.unwrap(),
        Created::Created
    );
    let new = store.new_id_for(&old);
    let IdChanged::Changed(_) = store.change_id(&old, &new, None).await.unwrap() else {
        panic!("change_id")
    };
    assert_eq!(
        store.stats().since(&before).round_trips,
        1 + 4,
        "create, then read, copy, commit, finish"
    );
    assert!(a.get(&store.key_for(&new)).unwrap().starts_with(b"SKM\x02"));
    assert!(a.get(&store.key_for(&old)).unwrap().starts_with(b"SKT\x02"));
}
