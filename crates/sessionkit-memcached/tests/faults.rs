//! Faults: a server down and back, a vanished lock holder, silent and garbage-speaking servers (`change_id` across faults: `moves.rs`).

mod common;

use std::time::{Duration, Instant};

use common::{Memcached, builder, id_on};
use sessionkit_core::record::{Delta, Entries, Meta, Record, Touch, now_ms};
use sessionkit_core::store::{Applied, Created, Locked, SessionStore};
use sessionkit_core::{Error, ErrorKind, LockToken, SessionId};
use sessionkit_memcached::{MemcachedStore, ServerList};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn record() -> Record {
    Record {
        entries: [("user", b"\"ada\"".to_vec())]
            .into_iter()
            .collect::<Entries>(),
        meta: Meta::new(now_ms(), Duration::from_secs(600), None),
    }
}

fn set(key: &str) -> Delta {
    let mut delta = Delta::default();
    delta.set(key, b"1".to_vec());
    delta
}

#[track_caller]
fn assert_unavailable(err: Error, operation: &str, server: &str) {
    assert_eq!(err.kind(), ErrorKind::StoreUnavailable, "{err}");
    assert_eq!(err.store(), Some("memcached"));
    assert_eq!(err.operation(), Some(operation));
    let text = err.to_string();
    for part in ["memcached", operation, server] {
        assert!(text.contains(part), "`{text}` must name {part}");
    }
    assert!(
        std::error::Error::source(&err).is_some(),
        "the cause must be kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_server_fails_only_its_sessions_and_serves_again_after_restart() {
    let a = Memcached::start();
    let mut b = Memcached::start();
    let store = builder(&[&a, &b]).build().unwrap();
    let on_a: Vec<SessionId> = (0..8).map(|_| id_on(&store, &a)).collect();
    let on_b: Vec<SessionId> = (0..8).map(|_| id_on(&store, &b)).collect();
    for id in on_a.iter().chain(&on_b) {
        assert_eq!(store.create(id, &record()).await.unwrap(), Created::Created);
    }

    b.stop();
    let down = b.addr();
    let started = Instant::now();
    let id = on_b[0];
    let err = store.load(&id, None).await.unwrap_err();
    println!("a load on the stopped server: {err}");
    // The pooled connection to the dead process is noticed before use.
    assert!(err.to_string().contains("could not connect"), "{err}");
    assert_unavailable(err, "load", &down);
    assert_unavailable(
        store
            .create(&id_on(&store, &b), &record())
            .await
            .unwrap_err(),
        "create",
        &down,
    );
    assert_unavailable(
        store.apply(&id, &set("k"), None).await.unwrap_err(),
        "apply",
        &down,
    );
    assert_unavailable(
        store.lock(&id, Duration::from_secs(5)).await.unwrap_err(),
        "lock",
        &down,
    );
    assert_unavailable(
        store
            .renew_lock(&id, &LockToken::generate(), Duration::from_secs(5))
            .await
            .unwrap_err(),
        "renew_lock",
        &down,
    );
    assert_unavailable(
        store.unlock(&id, &LockToken::generate()).await.unwrap_err(),
        "unlock",
        &down,
    );
    assert_unavailable(store.destroy(&id).await.unwrap_err(), "destroy", &down);
    assert_unavailable(
        store
            .change_id(&on_a[0], &id_on(&store, &b), None)
            .await
            .unwrap_err(),
        "change_id",
        &down,
    );
    assert_unavailable(store.ping().await.unwrap_err(), "ping", &down);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a refused connection must fail fast, took {:?}",
        started.elapsed()
    );

    // The other server goes on serving its sessions.
    for id in &on_a {
        let loaded = store.load(id, Some(Touch::always())).await.unwrap();
        assert!(loaded.is_some(), "a session on the live server must load");
        assert!(matches!(
            store.apply(id, &set("k"), None).await.unwrap(),
            Applied::Applied(_)
        ));
    }
    let Locked::Acquired { token, .. } =
        store.lock(&on_a[1], Duration::from_secs(5)).await.unwrap()
    else {
        panic!("locks on the live server must work")
    };
    store.unlock(&on_a[1], &token).await.unwrap();
    let fresh = id_on(&store, &a);
    assert_eq!(
        store.create(&fresh, &record()).await.unwrap(),
        Created::Created
    );
    assert!(store.stats().failures > 0);

    // Back on the same port, empty: its keys work again, its sessions are gone.
    b.restart();
    for id in &on_b {
        assert!(
            store.load(id, None).await.unwrap().is_none(),
            "memcached keeps nothing across a restart: the session must load as absent"
        );
        assert_eq!(
            store.apply(id, &set("k"), None).await.unwrap(),
            Applied::Gone
        );
    }
    let again = id_on(&store, &b);
    assert_eq!(
        store.create(&again, &record()).await.unwrap(),
        Created::Created
    );
    assert!(store.load(&again, None).await.unwrap().is_some());
    store.ping().await.unwrap();
    for id in &on_a {
        assert_eq!(
            store
                .load(id, None)
                .await
                .unwrap()
                .unwrap()
                .record
                .entries
                .get("k"),
            Some(&b"1"[..]),
            "sessions on the server that stayed up are untouched"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_whose_holder_vanished_is_free_after_its_ttl() {
    let a = Memcached::start();
    let store = builder(&[&a]).build().unwrap();
    let id = SessionId::generate();
    assert_eq!(
        store.create(&id, &record()).await.unwrap(),
        Created::Created
    );

    // Another app server takes the lock and dies without unlocking.
    let ttl = Duration::from_millis(600);
    let taken = Instant::now();
    {
        let holder = builder(&[&a]).build().unwrap();
        let Locked::Acquired { .. } = holder.lock(&id, ttl).await.unwrap() else {
            panic!("the lock must be free")
        };
    }
    assert_eq!(store.lock(&id, ttl).await.unwrap(), Locked::Held);
    // The lock is in the session's item: no item of its own to expire, and
    // the item keeps the session's native TTL (600 s, rounded up + 1 s).
    let key = store.key_for(&id);
    assert!(a.get(&format!("{key}:lock")).is_none());
    let native = a.ttl(&key).expect("the session item exists");
    assert!((599..=601).contains(&native), "native TTL {native}");

    tokio::time::sleep_until((taken + ttl + Duration::from_millis(20)).into()).await;
    let Locked::Acquired { token, record } = store.lock(&id, Duration::from_secs(5)).await.unwrap()
    else {
        panic!("a lock must be free once its TTL has passed")
    };
    assert_eq!(record.entries.get("user"), Some(&b"\"ada\""[..]));
    store.unlock(&id, &token).await.unwrap();
}

/// A fake server: answers every connection with `reply` (then closes, if
/// `close`), or never answers when `reply` is `None`.
async fn fake_server(reply: Option<&'static [u8]>, close: bool) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = socket.read(&mut buf).await;
            if let Some(reply) = reply {
                let _ = socket.write_all(reply).await;
            }
            if close {
                drop(socket);
            } else {
                held.push(socket);
            }
        }
    });
    addr
}

fn store_on(addr: &str) -> MemcachedStore {
    MemcachedStore::builder(ServerList::parse(addr).unwrap())
        .request_timeout(Duration::from_millis(300))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_times_out() {
    let addr = fake_server(None, false).await;
    let store = store_on(&addr);
    let started = Instant::now();
    let err = store.load(&SessionId::generate(), None).await.unwrap_err();
    assert_unavailable(err, "load", &addr);
    let took = started.elapsed();
    assert!(
        (Duration::from_millis(250)..Duration::from_secs(2)).contains(&took),
        "the request timeout must end the wait, took {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_or_truncated_replies_are_errors_not_panics() {
    let cases: [(&'static [u8], &str); 5] = [
        (b"HELLO\r\n", "malformed reply"),
        (b"VA 99999999999 c1\r\n", "malformed reply"),
        (b"VA 10 c1\r\nshort", "connection closed"),
        (b"EN", "connection closed"),
        (
            b"SERVER_ERROR out of memory storing object\r\n",
            "server error",
        ),
    ];
    for (reply, expected) in cases {
        let addr = fake_server(Some(reply), true).await;
        let store = store_on(&addr);
        let err = store.load(&SessionId::generate(), None).await.unwrap_err();
        let text = err.to_string();
        assert!(text.contains(expected), "{reply:?}: {text}");
        assert_unavailable(err, "load", &addr);
    }
}

#[test]
fn the_harness_stops_its_servers_also_when_a_test_panics() {
    let caught = std::panic::catch_unwind(|| {
        let server = Memcached::start();
        assert!(server.answers());
        std::panic::panic_any((server.addr(), server.pid().expect("running")));
    });
    let payload = caught.expect_err("the closure panics");
    let (addr, pid) = payload
        .downcast_ref::<(String, u32)>()
        .expect("the payload is the address and PID")
        .clone();
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "memcached on {addr} must be stopped once the panic unwound"
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "process {pid} must be gone (killed and reaped)"
    );
}
